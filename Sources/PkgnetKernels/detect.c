/*
 * Kernels of the darknet (YOLO) detector: the network input, activations,
 * depthwise convolutions, shortcut sums, upsampling and the decoding of
 * [yolo] heads. Other convolutions and max pooling are pkk_conv2d and
 * pkk_maxpool2d.
 *
 * The input reproduces cv2.dnn.blobFromImage(frame, 1/255, size, swapRB,
 * crop=False), the way OpenCV's darknet importer is fed: cv2.resize 8-bit
 * INTER_LINEAR to the network size (no letterbox, unlike darknet's own
 * `letterbox_image`), then bytes times (float)(1/255). The resize arithmetic
 * is the one crop.c documents (source coordinate (d + 0.5) * scale - 0.5 with
 * scale = 1 / (dst / src) in double; columns clamp their weights at the
 * edges, rows only clip their indices; weights rint(w * 2048)); the vertical
 * pass of OpenCV 4.x computes every byte of a row, tail included, as
 *   v = ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), out = sat((v + 2) >> 2),
 * which was checked against cv2.resize for row lengths that are and are not
 * multiples of the SIMD width.
 */
#include "pkk_detect.h"
#include "pkk_internal.h"

#include <math.h>
#include <stdlib.h>

#define COEF_SCALE 2048 /* OpenCV INTER_RESIZE_COEF_SCALE */

/* ---- network input ---- */

/* Sample positions and fixed-point weights along one axis of the resize. */
typedef struct {
    int *i0, *i1, *w0, *w1;
} resize_axis;

static void make_resize_axis(resize_axis t, int n, int d, int clamp_weights)
{
    pkk_linear_resize_axis(n, d, clamp_weights, t.i0, t.i1, t.w0, t.w1);
}

typedef struct {
    const uint8_t *src;
    size_t stride;
    int src_channels, map[3], dst_width, dst_height;
    resize_axis x, y;
    int *rows; /* per thread: two horizontally resized rows of dst_width * 3 ints */
    float *dst;
} input_args;

/* Horizontal pass of one source row for the 3 output planes. */
static void horizontal(const input_args *a, const uint8_t *row, int *out)
{
    const int sc = a->src_channels;
    for (int dx = 0; dx < a->dst_width; dx++) {
        const uint8_t *p0 = row + (size_t)a->x.i0[dx] * sc, *p1 = row + (size_t)a->x.i1[dx] * sc;
        const int w0 = a->x.w0[dx], w1 = a->x.w1[dx];
        for (int c = 0; c < 3; c++) out[3 * dx + c] = p0[a->map[c]] * w0 + p1[a->map[c]] * w1;
    }
}

static void input_rows(long lo, long hi, int thread, const void *args)
{
    const input_args *a = args;
    const int dw = a->dst_width;
    const size_t plane = (size_t)dw * a->dst_height;
    const float unit = (float)(1.0 / 255.0);
    int *h0 = a->rows + (size_t)thread * 6 * dw, *h1 = h0 + 3 * dw;
    for (long dy = lo; dy < hi; dy++) {
        horizontal(a, a->src + (size_t)a->y.i0[dy] * a->stride, h0);
        horizontal(a, a->src + (size_t)a->y.i1[dy] * a->stride, h1);
        const int b0 = a->y.w0[dy], b1 = a->y.w1[dy];
        float *out = a->dst + (size_t)dy * dw;
        for (int dx = 0; dx < dw; dx++) {
            for (int c = 0; c < 3; c++) {
                const int v = (((h0[3 * dx + c] >> 4) * b0) >> 16) + (((h1[3 * dx + c] >> 4) * b1) >> 16);
                int o = (v + 2) >> 2;
                o = o < 0 ? 0 : (o > 255 ? 255 : o);
                out[(size_t)c * plane + dx] = (float)o * unit;
            }
        }
    }
}

int pkk_detector_input(const uint8_t *src, size_t stride, int width, int height, int src_channels,
                       const int channel_map[3], int dst_width, int dst_height, float *dst)
{
    const size_t work = (size_t)dst_width * dst_height * 3 * 8;
    const int threads = pkk_run_threads(dst_height, work);
    const size_t tables = 4 * ((size_t)dst_width + dst_height);
    int *memory = malloc(sizeof(int) * (tables + (size_t)threads * 6 * dst_width));
    if (memory == NULL) {
        pkk_set_errorf("cannot allocate scratch for resizing a %dx%d frame to %dx%d", width, height,
                       dst_width, dst_height);
        return -1;
    }
    int *p = memory;
    resize_axis x = {p, p + dst_width, p + 2 * dst_width, p + 3 * dst_width};
    p += 4 * dst_width;
    resize_axis y = {p, p + dst_height, p + 2 * dst_height, p + 3 * dst_height};
    p += 4 * dst_height;
    make_resize_axis(x, width, dst_width, 1);
    make_resize_axis(y, height, dst_height, 0);
    input_args a = {
        .src = src, .stride = stride, .src_channels = src_channels,
        .map = {channel_map[0], channel_map[1], channel_map[2]},
        .dst_width = dst_width, .dst_height = dst_height, .x = x, .y = y, .rows = p, .dst = dst,
    };
    pkk_run(dst_height, work, input_rows, &a);
    free(memory);
    return 0;
}

/* ---- activations ---- */

static void activate_span(float *restrict x, long lo, long hi, int kind)
{
    switch (kind) {
    case PKK_ACT_RELU:
        for (long i = lo; i < hi; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case PKK_ACT_LEAKY:
        for (long i = lo; i < hi; i++) x[i] = x[i] > 0.0f ? x[i] : 0.1f * x[i];
        break;
    case PKK_ACT_RELU6:
        for (long i = lo; i < hi; i++) x[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
        break;
    case PKK_ACT_LOGISTIC:
        for (long i = lo; i < hi; i++) x[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    default:
        break;
    }
}

typedef struct {
    float *x;
    int kind;
} activate_args;

static void activate_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const activate_args *a = args;
    activate_span(a->x, lo, hi, a->kind);
}

void pkk_activate(float *x, size_t n, int kind)
{
    const activate_args a = {x, kind};
    pkk_run((long)n, n, activate_range, &a);
}

/* ---- depthwise convolution ---- */

typedef struct {
    const float *x, *weight, *bias;
    float *y;
    int h, w, kernel, stride, pad, ho, wo, act;
} depthwise_args;

/* Columns per register block of the interior (every tap inside the row). */
#define DW_BLOCK 16

/* acc[t] (t < N) += the taps of interior output columns ox + t, for an
 * input stride S; constant N and S keep acc in registers and loads contiguous. */
#define DW_TAPS(N, S)                                                                   \
    for (int ky = ky0; ky < ky1; ky++) {                                                \
        const float *restrict in = xc + (size_t)(y0 + ky) * w + (size_t)ox * (S) - pad; \
        for (int kx = 0; kx < k; kx++) {                                                \
            const float wv = wc[ky * k + kx];                                           \
            for (int t = 0; t < (N); t++) acc[t] += wv * in[(S) * t + kx];              \
        }                                                                               \
    }

/*
 * One output row of one channel: bias, then the taps in (ky, kx) order for
 * every column. Interior columns run in register blocks (one store per
 * output instead of one per tap), with the stride a constant for strides 1
 * and 2 so that the loads stay contiguous; border columns skip the taps
 * that fall in the zero padding. Compiled for AVX-512, AVX2 and the baseline.
 */
PKK_CLONES
static void depthwise_row(const depthwise_args *a, const float *restrict xc, const float *restrict wc, float b,
                          int oy, float *restrict row)
{
    const int k = a->kernel, s = a->stride, pad = a->pad, w = a->w, wo = a->wo;
    const int y0 = oy * s - pad;
    const int ky0 = y0 < 0 ? -y0 : 0, ky1 = a->h - y0 < k ? a->h - y0 : k;
    /* Interior: 0 <= ox*s - pad and ox*s - pad + k - 1 < w. */
    int lo = (pad + s - 1) / s, hi = w - k + pad < 0 ? 0 : (w - k + pad) / s + 1;
    if (hi > wo) hi = wo;
    if (lo > hi) lo = hi;
    for (int ox = lo; ox < hi; ox += DW_BLOCK) {
        const int n = hi - ox < DW_BLOCK ? hi - ox : DW_BLOCK;
        float acc[DW_BLOCK];
        for (int t = 0; t < n; t++) acc[t] = b;
        if (n == DW_BLOCK && s == 1) {
            DW_TAPS(DW_BLOCK, 1)
        } else if (n == DW_BLOCK && s == 2) {
            DW_TAPS(DW_BLOCK, 2)
        } else {
            DW_TAPS(n, s)
        }
        for (int t = 0; t < n; t++) row[ox + t] = acc[t];
    }
    /* Border columns, one at a time. */
    for (int c = 0; c < wo; c++) {
        if (c == lo && hi > lo) c = hi;
        if (c >= wo) break;
        const int x0 = c * s - pad;
        const int kx0 = x0 < 0 ? -x0 : 0, kx1 = w - x0 < k ? w - x0 : k;
        float acc = b;
        for (int ky = ky0; ky < ky1; ky++) {
            const float *restrict in = xc + (size_t)(y0 + ky) * w + x0;
            for (int kx = kx0; kx < kx1; kx++) acc += wc[ky * k + kx] * in[kx];
        }
        row[c] = acc;
    }
}

static void depthwise_channels(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const depthwise_args *a = args;
    const int k = a->kernel;
    for (long ch = lo; ch < hi; ch++) {
        const float *xc = a->x + (size_t)ch * a->h * a->w;
        const float *wc = a->weight + (size_t)ch * k * k;
        float *yc = a->y + (size_t)ch * a->ho * a->wo;
        for (int oy = 0; oy < a->ho; oy++) depthwise_row(a, xc, wc, a->bias[ch], oy, yc + (size_t)oy * a->wo);
        activate_span(yc, 0, (long)a->ho * a->wo, a->act);
    }
}

void pkk_depthwise_conv2d(const float *x, int c, int h, int w, const float *weight, const float *bias,
                          int kernel, int stride, int pad, int act, float *y)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (c <= 0 || ho <= 0 || wo <= 0) return;
    const depthwise_args a = {x, weight, bias, y, h, w, kernel, stride, pad, ho, wo, act};
    pkk_run(c, (size_t)c * ho * wo * kernel * kernel, depthwise_channels, &a);
}

/* ---- sums, upsampling ---- */

typedef struct {
    const float *a, *b;
    float *y;
} add_args;

static void add_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const add_args *p = args;
    for (long i = lo; i < hi; i++) p->y[i] = p->a[i] + p->b[i];
}

void pkk_add(const float *a, const float *b, size_t n, float *y)
{
    const add_args p = {a, b, y};
    pkk_run((long)n, 2 * n, add_range, &p);
}

typedef struct {
    const float *x;
    float *y;
    int h, w, stride;
} upsample_args;

/* Output rows [lo, hi) over all planes: row r is plane r / (h*stride). */
static void upsample_rows(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const upsample_args *a = args;
    const int s = a->stride, wo = a->w * s;
    const long rows_per_plane = (long)a->h * s;
    for (long r = lo; r < hi; r++) {
        const long p = r / rows_per_plane;
        const int oy = (int)(r % rows_per_plane);
        const float *restrict in = a->x + ((size_t)p * a->h + oy / s) * a->w;
        float *restrict out = a->y + (size_t)r * wo;
        for (int ox = 0; ox < wo; ox++) out[ox] = in[ox / s];
    }
}

void pkk_upsample_nearest(const float *x, long planes, int h, int w, int stride, float *y)
{
    const upsample_args a = {x, y, h, w, stride};
    const long rows = planes * h * stride;
    pkk_run(rows, (size_t)rows * w * stride, upsample_rows, &a);
}

/* ---- [yolo] heads ---- */

static inline float logistic(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

long pkk_yolo_decode(const float *x, int anchors, int classes, int h, int w,
                     const float *anchor_wh, int net_w, int net_h, float scale_x_y,
                     float threshold, const uint8_t *keep, float *out)
{
    const size_t plane = (size_t)h * w;
    const int cell = 5 + classes;
    long n = 0;
    for (int gy = 0; gy < h; gy++) {
        for (int gx = 0; gx < w; gx++) {
            const size_t at = (size_t)gy * w + gx;
            for (int a = 0; a < anchors; a++) {
                const float *t = x + (size_t)a * cell * plane + at;
                const float objectness = logistic(t[4 * plane]);
                /* No class probability exceeds 1: nothing can pass. */
                if (!(objectness > threshold)) continue;
                int best = -1;
                float best_confidence = 0.0f;
                for (int c = 0; c < classes; c++) {
                    if (!keep[c]) continue;
                    const float confidence = objectness * logistic(t[(size_t)(5 + c) * plane]);
                    if (best < 0 || confidence > best_confidence) {
                        best = c;
                        best_confidence = confidence;
                    }
                }
                if (best < 0 || !(best_confidence > threshold)) continue;
                float *o = out + 6 * n++;
                const float cx = (logistic(t[0]) - 0.5f) * scale_x_y + 0.5f;
                const float cy = (logistic(t[plane]) - 0.5f) * scale_x_y + 0.5f;
                o[0] = ((float)gx + cx) / (float)w;
                o[1] = ((float)gy + cy) / (float)h;
                o[2] = expf(t[2 * plane]) * anchor_wh[2 * a] / (float)net_w;
                o[3] = expf(t[3 * plane]) * anchor_wh[2 * a + 1] / (float)net_h;
                o[4] = best_confidence;
                o[5] = (float)best;
            }
        }
    }
    return n;
}
