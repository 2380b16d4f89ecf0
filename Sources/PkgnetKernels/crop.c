/*
 * Object cubes: the same box cropped from 5 frames, each crop resized to 32x32.
 *
 * The resize reproduces OpenCV's 8-bit INTER_LINEAR (cv::resize, resizeGeneric_
 * with HResizeLinear / VResizeLinear and the SIMD vertical pass), because the
 * published models were trained on crops made by cv2.resize:
 *   - source coordinate fx = (float)((dx + 0.5) * scale - 0.5), scale = in/32
 *     computed in double as 1 / (32 / in); sx = floor(fx), fx -= sx;
 *   - columns: fx < 0 clamps to sx = 0, fx = 0; sx >= in-1 clamps to
 *     sx = in-1, fx = 0 (weight 2048 on the last pixel);
 *   - rows are NOT clamped in the weights: rows sy and sy+1 are clipped to the
 *     image but keep the weights of the unclamped fy (OpenCV does this; it
 *     changes the rounding at the top and bottom rows);
 *   - weights w0 = rint((1 - f) * 2048), w1 = rint(f * 2048) (round half even);
 *   - horizontal: h = p[sx] * w0 + p[sx+1] * w1 (exact int, scale 2^11);
 *   - vertical as OpenCV's VResizeLinearVec_32s8u (the path taken for rows
 *     of 32 or 96 bytes): v = ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16),
 *     out = saturate_u8((v + 2) >> 2).
 * This is bilinear interpolation with half-pixel centres, rounded to nearest
 * up to the fixed-point quantisation (|out - exact bilinear| < 1). cv2.resize
 * turns an exact 2x downscale (64x64 crop) into INTER_AREA's (sum + 2) >> 2
 * and a 32x32 crop into a copy; the formulas above give the same numbers.
 */
#include "pkk_video.h"
#include "pkk_internal.h"

#include <math.h>
#include <string.h>

#define CROP 32
#define FRAMES 5
#define COEF_SCALE 2048 /* OpenCV INTER_RESIZE_COEF_SCALE */

/* Sample positions and weights of one axis. */
typedef struct {
    int i0[CROP], i1[CROP]; /* source indices (both inside [0, n)) */
    int w0[CROP], w1[CROP]; /* fixed-point weights, scale 2048 */
} axis_table;

void pkk_linear_resize_axis(int n, int d, int clamp_weights, int *i0, int *i1, int *w0, int *w1)
{
    const double scale = 1.0 / ((double)d / (double)n);
    for (int k = 0; k < d; k++) {
        float f = (float)((k + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        if (clamp_weights) {
            if (s < 0) {
                s = 0;
                f = 0.0f;
            }
            if (s >= n - 1) {
                s = n - 1;
                f = 0.0f;
            }
        }
        i0[k] = s < 0 ? 0 : (s > n - 1 ? n - 1 : s);
        i1[k] = s + 1 < 0 ? 0 : (s + 1 > n - 1 ? n - 1 : s + 1);
        /* saturate_cast<short>(float) rounds half to even, as lrintf does. */
        w0[k] = (int)lrintf((1.0f - f) * (float)COEF_SCALE);
        w1[k] = (int)lrintf(f * (float)COEF_SCALE);
    }
}

/* clamp_weights: the horizontal axis (OpenCV clamps fx there), not the vertical. */
static void make_axis(axis_table *t, int n, int clamp_weights)
{
    pkk_linear_resize_axis(n, CROP, clamp_weights, t->i0, t->i1, t->w0, t->w1);
}

typedef struct {
    const uint8_t *const *frames;
    const size_t *strides;
    int src_channels;
    const int32_t *bounds;
    int out_channels;
    int map[3];
    int grey_blue;
    uint8_t *out;
} cube_args;

/* OpenCV BGR2GRAY for 8 bits: (B*1868 + G*9617 + R*4899 + 2^13) >> 14. */
static inline int grey_of(const uint8_t *p, int blue)
{
    const int b = p[blue], g = p[1], r = p[2 - blue];
    return (b * 1868 + g * 9617 + r * 4899 + (1 << 13)) >> 14;
}

/* Final vertical step of OpenCV's SIMD path (see the file comment). */
static inline uint8_t vertical(int h0, int h1, int b0, int b1)
{
    const int v = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16);
    const int o = (v + 2) >> 2;
    return (uint8_t)(o < 0 ? 0 : (o > 255 ? 255 : o));
}

/* Tasks [lo, hi): task = box * 5 + frame. */
static void cube_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const cube_args *a = args;
    const int sc = a->src_channels, oc = a->out_channels;
    const size_t slot = (size_t)CROP * CROP * oc;
    axis_table tx, ty;
    long table_box = -1;
    for (long task = lo; task < hi; task++) {
        const long box = task / FRAMES;
        const int f = (int)(task % FRAMES);
        const int32_t *bd = a->bounds + 4 * box;
        uint8_t *dst = a->out + (size_t)task * slot;
        const int xa = bd[0], ya = bd[1], xb = bd[2], yb = bd[3];
        if (xb <= xa || yb <= ya) {
            memset(dst, 0, slot);
            continue;
        }
        if (table_box != box) { /* the 5 frames of a box share its tables */
            make_axis(&tx, xb - xa, 1);
            make_axis(&ty, yb - ya, 0);
            table_box = box;
        }
        const uint8_t *base = a->frames[f] + (size_t)ya * a->strides[f] + (size_t)xa * sc;
        const size_t stride = a->strides[f];
        for (int dy = 0; dy < CROP; dy++) {
            const uint8_t *r0 = base + (size_t)ty.i0[dy] * stride;
            const uint8_t *r1 = base + (size_t)ty.i1[dy] * stride;
            const int b0 = ty.w0[dy], b1 = ty.w1[dy];
            uint8_t *o = dst + (size_t)dy * CROP * oc;
            if (a->grey_blue >= 0) {
                const int blue = a->grey_blue;
                for (int dx = 0; dx < CROP; dx++) {
                    const int x0 = tx.i0[dx] * sc, x1 = tx.i1[dx] * sc;
                    const int w0 = tx.w0[dx], w1 = tx.w1[dx];
                    const int h0 = grey_of(r0 + x0, blue) * w0 + grey_of(r0 + x1, blue) * w1;
                    const int h1 = grey_of(r1 + x0, blue) * w0 + grey_of(r1 + x1, blue) * w1;
                    o[dx] = vertical(h0, h1, b0, b1);
                }
            } else {
                for (int dx = 0; dx < CROP; dx++) {
                    const int x0 = tx.i0[dx] * sc, x1 = tx.i1[dx] * sc;
                    const int w0 = tx.w0[dx], w1 = tx.w1[dx];
                    for (int c = 0; c < oc; c++) {
                        const int s = a->map[c];
                        const int h0 = r0[x0 + s] * w0 + r0[x1 + s] * w1;
                        const int h1 = r1[x0 + s] * w0 + r1[x1 + s] * w1;
                        o[dx * oc + c] = vertical(h0, h1, b0, b1);
                    }
                }
            }
        }
    }
}

void pkk_make_cubes(const uint8_t *const frames[5], const size_t strides[5],
                    int width, int height, int src_channels,
                    const int32_t *bounds, long m,
                    int out_channels, const int channel_map[3], int grey_blue,
                    uint8_t *out)
{
    (void)width;
    (void)height;
    cube_args a = {
        .frames = frames, .strides = strides, .src_channels = src_channels,
        .bounds = bounds, .out_channels = out_channels,
        .map = {channel_map[0], out_channels > 1 ? channel_map[1] : 0, out_channels > 2 ? channel_map[2] : 0},
        .grey_blue = grey_blue, .out = out,
    };
    const long tasks = m * FRAMES;
    /* About 4 reads and a few multiplies per output byte. */
    pkk_run(tasks, (size_t)tasks * CROP * CROP * (size_t)out_channels * 4, cube_range, &a);
}
