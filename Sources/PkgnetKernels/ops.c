/* Pooling, input unpacking, teacher normalisation, finiteness check. */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <math.h>
#include <string.h>

#define PKK_CROP 32
#define PKK_CROP_PLANE (PKK_CROP * PKK_CROP)
#define PKK_FRAMES 5

/* ---- max pooling ---- */

typedef struct {
    const float *x;
    float *y;
    int h, w, kernel, stride, pad, ho, wo;
} pkk_pool_args;

/* 2x2 stride 2, planes [lo, hi). NaN propagates, as in PyTorch. */
static void pkk_maxpool_2x2(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_pool_args *a = args;
    const int w = a->w, ho = a->ho, wo = a->wo;
    const size_t in_plane = (size_t)a->h * w, out_plane = (size_t)ho * wo;
    for (long p = lo; p < hi; p++) {
        const float *restrict xp = a->x + (size_t)p * in_plane;
        float *restrict yp = a->y + (size_t)p * out_plane;
        for (int oy = 0; oy < ho; oy++) {
            const float *restrict r0 = xp + (size_t)(2 * oy) * w;
            const float *restrict r1 = r0 + w;
            float *restrict yr = yp + (size_t)oy * wo;
            for (int ox = 0; ox < wo; ox++) {
                const float v0 = r0[2 * ox], v1 = r0[2 * ox + 1];
                const float v2 = r1[2 * ox], v3 = r1[2 * ox + 1];
                float m = (v1 > v0 || isnan(v1)) ? v1 : v0;
                m = (v2 > m || isnan(v2)) ? v2 : m;
                m = (v3 > m || isnan(v3)) ? v3 : m;
                yr[ox] = m;
            }
        }
    }
}

/* Any window, planes [lo, hi); padding is -inf (never the maximum). */
static void pkk_maxpool_any(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_pool_args *a = args;
    const int h = a->h, w = a->w, ho = a->ho, wo = a->wo;
    const size_t in_plane = (size_t)h * w, out_plane = (size_t)ho * wo;
    for (long p = lo; p < hi; p++) {
        const float *restrict xp = a->x + (size_t)p * in_plane;
        float *restrict yp = a->y + (size_t)p * out_plane;
        for (int oy = 0; oy < ho; oy++) {
            int y0 = oy * a->stride - a->pad, y1 = y0 + a->kernel;
            if (y0 < 0) y0 = 0;
            if (y1 > h) y1 = h;
            for (int ox = 0; ox < wo; ox++) {
                int x0 = ox * a->stride - a->pad, x1 = x0 + a->kernel;
                if (x0 < 0) x0 = 0;
                if (x1 > w) x1 = w;
                float m = -INFINITY;
                for (int iy = y0; iy < y1; iy++) {
                    const float *restrict r = xp + (size_t)iy * w;
                    for (int ix = x0; ix < x1; ix++) {
                        const float v = r[ix];
                        if (v > m || isnan(v)) m = v;
                    }
                }
                yp[(size_t)oy * wo + ox] = m;
            }
        }
    }
}

void pkk_maxpool2d(const float *x, int c, int batch, int h, int w,
                   int kernel, int stride, int pad, float *y)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (c <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return;
    const long planes = (long)c * batch;
    const pkk_pool_args a = { x, y, h, w, kernel, stride, pad, ho, wo };
    const size_t work = (size_t)planes * ho * wo * kernel * kernel;
    if (kernel == 2 && stride == 2 && pad == 0)
        pkk_run(planes, work, pkk_maxpool_2x2, &a);
    else
        pkk_run(planes, work, pkk_maxpool_any, &a);
}

/* ---- cube unpacking ---- */

typedef struct {
    const void *cubes;
    float *dst;
    int n, channels, first_frame, frames;
} pkk_unpack_args;

/* Jobs [lo, hi) over (cube, frame). */
static void pkk_unpack_u8_jobs(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_unpack_args *a = args;
    const int channels = a->channels;
    const size_t cube = (size_t)PKK_FRAMES * PKK_CROP_PLANE * channels;
    const size_t dst_ch = (size_t)a->n * PKK_CROP_PLANE;
    for (long job = lo; job < hi; job++) {
        const int i = (int)(job / a->frames);
        const int f = (int)(job % a->frames);
        const uint8_t *restrict src = (const uint8_t *)a->cubes + (size_t)i * cube
                                    + (size_t)(a->first_frame + f) * PKK_CROP_PLANE * channels;
        if (channels == 3) {
            float *restrict d0 = a->dst + (size_t)(f * 3 + 0) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            float *restrict d1 = a->dst + (size_t)(f * 3 + 1) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            float *restrict d2 = a->dst + (size_t)(f * 3 + 2) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            for (int p = 0; p < PKK_CROP_PLANE; p++) {
                /* division (not a reciprocal multiply): the same rounding as x / 255 */
                d0[p] = (float)src[3 * p + 0] / 255.0f;
                d1[p] = (float)src[3 * p + 1] / 255.0f;
                d2[p] = (float)src[3 * p + 2] / 255.0f;
            }
        } else {
            for (int c = 0; c < channels; c++) {
                float *restrict d = a->dst + (size_t)(f * channels + c) * dst_ch + (size_t)i * PKK_CROP_PLANE;
                for (int p = 0; p < PKK_CROP_PLANE; p++)
                    d[p] = (float)src[(size_t)p * channels + c] / 255.0f;
            }
        }
    }
}

void pkk_unpack_u8_cubes(const uint8_t *cubes, int n, int channels,
                         int first_frame, int frames, float *dst)
{
    if (n <= 0 || channels <= 0 || frames <= 0) return;
    const pkk_unpack_args a = { cubes, dst, n, channels, first_frame, frames };
    const long jobs = (long)n * frames;
    pkk_run(jobs, (size_t)jobs * PKK_CROP_PLANE * channels, pkk_unpack_u8_jobs, &a);
}

/* Jobs [lo, hi) over (cube, frame*channels + channel): one plane copy each. */
static void pkk_unpack_f32_jobs(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_unpack_args *a = args;
    const long per_cube = (long)a->frames * a->channels;
    const size_t cube = (size_t)PKK_FRAMES * a->channels * PKK_CROP_PLANE;
    const size_t dst_ch = (size_t)a->n * PKK_CROP_PLANE;
    for (long job = lo; job < hi; job++) {
        const int i = (int)(job / per_cube);
        const int fc = (int)(job % per_cube); /* f*channels + c */
        memcpy(a->dst + (size_t)fc * dst_ch + (size_t)i * PKK_CROP_PLANE,
               (const float *)a->cubes + (size_t)i * cube
                   + ((size_t)a->first_frame * a->channels + fc) * PKK_CROP_PLANE,
               sizeof(float) * PKK_CROP_PLANE);
    }
}

void pkk_unpack_f32_cubes(const float *cubes, int n, int channels,
                          int first_frame, int frames, float *dst)
{
    if (n <= 0 || channels <= 0 || frames <= 0) return;
    const pkk_unpack_args a = { cubes, dst, n, channels, first_frame, frames };
    const long jobs = (long)n * frames * channels;
    /* plain copies: only worth threads when large */
    pkk_run(jobs, (size_t)jobs * PKK_CROP_PLANE / 4, pkk_unpack_f32_jobs, &a);
}

/* ---- checks and normalisation ---- */

long pkk_first_nonfinite(const float *x, size_t n)
{
    const uint32_t *bits = (const uint32_t *)(const void *)x;
    enum { BLOCK = 256 };
    size_t i = 0;
    while (i < n) {
        const size_t end = n - i < BLOCK ? n : i + BLOCK;
        /* branch-free test of the block (vectorises), then locate */
        uint32_t any = 0;
        for (size_t j = i; j < end; j++)
            any |= (uint32_t)((bits[j] & 0x7f800000u) == 0x7f800000u);
        if (any) {
            for (size_t j = i; j < end; j++)
                if ((bits[j] & 0x7f800000u) == 0x7f800000u) return (long)j;
        }
        i = end;
    }
    return -1;
}

typedef struct {
    const float *src;
    float *dst;
    size_t plane;
    const int *source_channel;
    const float *mean, *std;
} pkk_teacher_args;

/* Elements [lo, hi) of each of the 3 planes. */
static void pkk_teacher_range(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_teacher_args *a = args;
    for (int i = 0; i < 3; i++) {
        const float *restrict s = a->src + (size_t)a->source_channel[i] * a->plane;
        float *restrict d = a->dst + (size_t)i * a->plane;
        const float m = a->mean[i], sd = a->std[i];
        /* (x - mean) / std as torchvision's Normalize computes it */
        for (long p = lo; p < hi; p++) d[p] = (s[p] - m) / sd;
    }
}

void pkk_teacher_input(const float *src, size_t plane, const int source_channel[3],
                       const float mean[3], const float std[3], float *dst)
{
    const pkk_teacher_args a = { src, dst, plane, source_channel, mean, std };
    pkk_run((long)plane, plane * 3 / 4, pkk_teacher_range, &a);
}
