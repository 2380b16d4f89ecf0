/*
 * Internal video kernels of pkgnet: object-cube crops and motion proposals
 * (not part of the public C API; every symbol is pkk_*). The Swift layer
 * (Sources/PkgnetCore/Video) validates arguments before calling these.
 *
 * Frames are 8-bit, channels interleaved, rows `stride` bytes apart.
 */
#ifndef PKK_VIDEO_H
#define PKK_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- object cubes (crop.c) ---- */

/*
 * Crops m boxes from 5 frames and resizes each crop to 32x32 with OpenCV's
 * 8-bit INTER_LINEAR arithmetic (bit-exact with cv2.resize on x86: 11-bit
 * fixed-point weights, the vertical pass as OpenCV's SIMD path computes it).
 *
 *   frames[f]   frame f (oldest first), rows strides[f] bytes apart,
 *               width x height pixels of src_channels (1 or 3) bytes
 *   bounds      int32 [m][4] = xa, ya, xb, yb: the crop is rows ya..yb-1,
 *               columns xa..xb-1, already clipped to the frame; a box with
 *               xb <= xa or yb <= ya is skipped and its slot zero-filled
 *   out_channels  C of the output (1 or 3)
 *   channel_map   out channel c reads source channel channel_map[c]
 *                 (used when grey_blue < 0)
 *   grey_blue     >= 0: the source has 3 channels and the output is their
 *                 grey value (OpenCV BGR2GRAY fixed point), the blue channel
 *                 at index grey_blue (0 for BGR, 2 for RGB)
 *   out         uint8 [m][5][32][32][out_channels]
 * OpenMP-parallel over boxes x frames.
 */
void pkk_make_cubes(const uint8_t *const frames[5], const size_t strides[5],
                    int width, int height, int src_channels,
                    const int32_t *bounds, long m,
                    int out_channels, const int channel_map[3], int grey_blue,
                    uint8_t *out);

/* ---- motion proposals (motion.c) ---- */

/*
 * cv2.GaussianBlur(src, (ksize, ksize), 0) for 8-bit images, bit-exact:
 * OpenCV's sigma-0 kernels for ksize 1, 3, 5, 7 ([1], [1,2,1]/4,
 * [1,4,6,4,1]/16, [8,28,56,72,56,28,8]/256), BORDER_REFLECT_101, the exact
 * dyadic sum rounded half up. Returns 0, or -1 (error slot set) for an
 * unsupported ksize or a failed allocation.
 */
int pkk_gaussian_blur_u8(const uint8_t *src, size_t src_stride, int width, int height,
                         int channels, int ksize, uint8_t *dst, size_t dst_stride);

/*
 * The foreground mask of the motion proposals, mask uint8 [height][width],
 * 1 = foreground, for frames of 1 or 3 channels:
 *   d = |blur(f0) - blur(f1)| + |blur(f1) - blur(f2)|   per channel, in int
 *   foreground where d > threshold in any channel,
 * then every rect of `rects` (int32 [n_rects][4] = x0, y0, x1, y1, inclusive,
 * already clipped; skipped if x1 < x0 or y1 < y0) is cleared.
 * Returns 0, or -1 (error slot set) for an unsupported ksize or a failed
 * allocation. OpenMP-parallel over rows.
 */
int pkk_motion_mask(const uint8_t *const frames[3], const size_t strides[3],
                    int width, int height, int channels, int ksize, int threshold,
                    const int32_t *rects, long n_rects, uint8_t *mask);

/*
 * Bounding rectangles of the external 8-connected foreground components of
 * mask (nonzero = foreground), as cv2.findContours(RETR_EXTERNAL) followed by
 * cv2.boundingRect: a component is external unless it lies inside a hole of
 * another component; the image is surrounded by background.
 * On success returns 0 with *rects = malloc'ed int32 [*count][4] (x, y, w, h;
 * w = xmax - xmin + 1), ordered by each component's first pixel in raster
 * order; the caller frees it with free() (NULL when *count is 0).
 * Returns -1 (error slot set) for a failed allocation or a mask of more than
 * INT32_MAX - 1 runs (row segments of equal value).
 */
int pkk_external_components(const uint8_t *mask, int width, int height,
                            int32_t **rects, long *count);

#ifdef __cplusplus
}
#endif

#endif /* PKK_VIDEO_H */
