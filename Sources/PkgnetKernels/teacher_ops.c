/* Padding, clamping and subsampled shortcuts for the teacher networks
 * (pkk_teacher.h). Memory-bound: one pass over the data each. */
#include "pkk_teacher.h"
#include "pkk_internal.h"

#include <math.h>
#include <string.h>

/* ---- asymmetric zero padding ---- */

typedef struct {
    const float *x;
    float *y;
    int h, w, top, bottom, left, right;
} pkk_pad_args;

static void pkk_pad_planes(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_pad_args *a = args;
    const int h = a->h, w = a->w;
    const int wo = w + a->left + a->right, ho = h + a->top + a->bottom;
    for (long p = lo; p < hi; p++) {
        const float *restrict xp = a->x + (size_t)p * h * w;
        float *restrict yp = a->y + (size_t)p * ho * wo;
        memset(yp, 0, (size_t)a->top * wo * sizeof(float));
        for (int i = 0; i < h; i++) {
            float *restrict row = yp + (size_t)(a->top + i) * wo;
            memset(row, 0, (size_t)a->left * sizeof(float));
            memcpy(row + a->left, xp + (size_t)i * w, (size_t)w * sizeof(float));
            memset(row + a->left + w, 0, (size_t)a->right * sizeof(float));
        }
        memset(yp + (size_t)(a->top + h) * wo, 0, (size_t)a->bottom * wo * sizeof(float));
    }
}

void pkk_pad2d(const float *x, int c, int batch, int h, int w,
               int top, int bottom, int left, int right, float *y)
{
    const long planes = (long)c * batch;
    const pkk_pad_args a = {x, y, h, w, top, bottom, left, right};
    pkk_run(planes, (size_t)planes * (size_t)(h + top + bottom) * (size_t)(w + left + right),
            pkk_pad_planes, &a);
}

/* ---- clamp ---- */

typedef struct {
    float *x;
    float lo, hi;
} pkk_clamp_args;

/* Comparisons rather than fminf/fmaxf, which would turn NaN into a bound. */
static void pkk_clamp_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_clamp_args *a = args;
    float *restrict x = a->x;
    const float low = a->lo, high = a->hi;
    for (long i = lo; i < hi; i++) {
        const float v = x[i];
        x[i] = v < low ? low : (v > high ? high : v);
    }
}

void pkk_clamp(float *x, size_t n, float lo, float hi)
{
    const pkk_clamp_args a = {x, lo, hi};
    pkk_run((long)n, n, pkk_clamp_range, &a);
}

/* ---- option-A shortcut ---- */

typedef struct {
    const float *x;
    float *y;
    int cin, batch, h, w, pad;
} pkk_shortcut_args;

/* Output channels [lo, hi), all of the batch. */
static void pkk_shortcut_channels(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_shortcut_args *a = args;
    const int h = a->h, w = a->w, ho = (h + 1) / 2, wo = (w + 1) / 2;
    const size_t out_plane = (size_t)ho * wo;
    for (long oc = lo; oc < hi; oc++) {
        float *restrict yc = a->y + (size_t)oc * a->batch * out_plane;
        const long c = oc - a->pad;
        if (c < 0 || c >= a->cin) {
            memset(yc, 0, (size_t)a->batch * out_plane * sizeof(float));
            continue;
        }
        for (int b = 0; b < a->batch; b++) {
            const float *restrict xp = a->x + ((size_t)c * a->batch + b) * h * w;
            float *restrict yp = yc + (size_t)b * out_plane;
            for (int i = 0; i < ho; i++)
                for (int j = 0; j < wo; j++)
                    yp[i * wo + j] = xp[(size_t)(2 * i) * w + 2 * j];
        }
    }
}

void pkk_option_a_shortcut(const float *x, int cin, int batch, int h, int w,
                           int pad_channels, float *y)
{
    const long cout = (long)cin + 2L * pad_channels;
    const pkk_shortcut_args a = {x, y, cin, batch, h, w, pad_channels};
    pkk_run(cout, (size_t)cout * batch * ((h + 1) / 2) * ((w + 1) / 2), pkk_shortcut_channels, &a);
}
