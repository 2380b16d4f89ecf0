/*
 * Internal kernels of pkgnet's darknet (YOLO) detector (detect.c; not part of
 * the public C API, every symbol is pkk_*). The Swift layer
 * (Sources/PkgnetCore/Detection) validates arguments before calling these.
 *
 * Activations are channel-major planes, x[c][h][w] (the layout of
 * pkgnet_kernels.h with a batch of one frame).
 */
#ifndef PKK_DETECT_H
#define PKK_DETECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The network input of a frame, as cv2.dnn.blobFromImage(frame, 1/255,
 * (dst_width, dst_height), swapRB, crop=False) makes it: cv2.resize with
 * 8-bit INTER_LINEAR (bit-exact: OpenCV's 11-bit fixed-point weights and its
 * vertical pass, SIMD part and scalar tail as on x86), no letterbox, then
 * each byte times (float)(1/255).
 *
 *   src          rows `stride` bytes apart, width x height pixels of
 *                src_channels (1 or 3) bytes
 *   channel_map  plane c of dst reads source channel channel_map[c] (a grey
 *                frame is read as its BGR conversion: every map entry 0)
 *   dst          float [3][dst_height][dst_width]
 * Returns 0, or -1 (error slot set) when scratch memory cannot be had.
 * OpenMP-parallel over output rows.
 */
int pkk_detector_input(const uint8_t *src, size_t stride, int width, int height, int src_channels,
                       const int channel_map[3], int dst_width, int dst_height, float *dst);

/* Activations of darknet layers, applied in place. */
enum {
    PKK_ACT_RELU = 1,     /* max(0, x) */
    PKK_ACT_LEAKY = 2,    /* x > 0 ? x : 0.1 x */
    PKK_ACT_RELU6 = 3,    /* min(max(0, x), 6) */
    PKK_ACT_LOGISTIC = 4  /* 1 / (1 + exp(-x)) */
};

/*
 * Depthwise convolution (darknet groups = channels = filters), bias and
 * activation fused:
 *   x      [c][h][w]
 *   weight [c][kernel][kernel] (BatchNorm folded in), bias [c]
 *   y      [c][ho][wo], ho = (h + 2*pad - kernel)/stride + 1, zero padding
 *   act    a PKK_ACT_* kind, 0 = linear
 * pkk_conv2d would run it as one 1-row GEMM per channel over an im2col copy;
 * this reads x in place. OpenMP-parallel over channels.
 */
void pkk_depthwise_conv2d(const float *x, int c, int h, int w, const float *weight, const float *bias,
                          int kernel, int stride, int pad, int act, float *y);

/* x[i] = act(x[i]) for i < n; `kind` is a PKK_ACT_* value (others: no-op). */
void pkk_activate(float *x, size_t n, int kind);

/* y[i] = a[i] + b[i] for i < n (y may alias a or b). */
void pkk_add(const float *a, const float *b, size_t n, float *y);

/* Nearest-neighbour upsampling by an integer factor:
 *   x [planes][h][w] -> y [planes][h*stride][w*stride], y[p][i][j] = x[p][i/stride][j/stride] */
void pkk_upsample_nearest(const float *x, long planes, int h, int w, int stride, float *y);

/*
 * Candidates of one [yolo] head, in OpenCV's Region-layer arithmetic:
 *   x        float [anchors * (5 + classes)][h][w]: the head's raw input,
 *            anchor a's channels a*(5+classes) + (tx, ty, tw, th, to, class 0, ...)
 *   anchor_wh  float [anchors][2]: anchor width and height in input pixels
 *   net_w, net_h  the network input size the anchors are measured in
 *   scale_x_y  darknet's centre scaling (1 = plain logistic)
 *   keep     uint8 [classes]: nonzero for the classes that may be reported
 * For each cell (row y, column x) and anchor a, in the order (y, x, a):
 *   objectness o = logistic(to); class c's confidence = o * logistic(t_c);
 *   the best kept class (first on ties) makes a candidate when its
 *   confidence > threshold. A candidate is 6 floats:
 *   centre x = (x + (logistic(tx) - 0.5) * scale_x_y + 0.5) / w,
 *   centre y likewise over h, width = exp(tw) * anchor_w / net_w,
 *   height = exp(th) * anchor_h / net_h (all relative to the input),
 *   confidence, class index.
 * out must hold anchors * h * w candidates. Returns the number written.
 */
long pkk_yolo_decode(const float *x, int anchors, int classes, int h, int w,
                     const float *anchor_wh, int net_w, int net_h, float scale_x_y,
                     float threshold, const uint8_t *keep, float *out);

#ifdef __cplusplus
}
#endif

#endif /* PKK_DETECT_H */
