/* Pooling, input unpacking, teacher normalisation, finiteness check. */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <math.h>
#include <string.h>

#define PKK_CROP 32
#define PKK_CROP_PLANE (PKK_CROP * PKK_CROP)
#define PKK_FRAMES 5

void pkk_maxpool2d(const float *x, int c, int batch, int h, int w,
                   int kernel, int stride, int pad, float *y)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (c <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return;
    const long planes = (long)c * batch;
    const size_t in_plane = (size_t)h * w;
    const size_t out_plane = (size_t)ho * wo;

    if (kernel == 2 && stride == 2 && pad == 0) {
#pragma omp parallel for schedule(static) if ((size_t)planes * in_plane >= PKK_PAR_MIN)
        for (long p = 0; p < planes; p++) {
            const float *restrict xp = x + (size_t)p * in_plane;
            float *restrict yp = y + (size_t)p * out_plane;
            for (int oy = 0; oy < ho; oy++) {
                const float *restrict r0 = xp + (size_t)(2 * oy) * w;
                const float *restrict r1 = r0 + w;
                float *restrict yr = yp + (size_t)oy * wo;
                for (int ox = 0; ox < wo; ox++) {
                    float a = r0[2 * ox], b = r0[2 * ox + 1];
                    float cc = r1[2 * ox], d = r1[2 * ox + 1];
                    /* NaN propagates, as in PyTorch */
                    float m = (b > a || isnan(b)) ? b : a;
                    m = (cc > m || isnan(cc)) ? cc : m;
                    m = (d > m || isnan(d)) ? d : m;
                    yr[ox] = m;
                }
            }
        }
        return;
    }

#pragma omp parallel for schedule(static) if ((size_t)planes * out_plane * kernel * kernel >= PKK_PAR_MIN)
    for (long p = 0; p < planes; p++) {
        const float *restrict xp = x + (size_t)p * in_plane;
        float *restrict yp = y + (size_t)p * out_plane;
        for (int oy = 0; oy < ho; oy++) {
            int y0 = oy * stride - pad, y1 = y0 + kernel;
            if (y0 < 0) y0 = 0;
            if (y1 > h) y1 = h;
            for (int ox = 0; ox < wo; ox++) {
                int x0 = ox * stride - pad, x1 = x0 + kernel;
                if (x0 < 0) x0 = 0;
                if (x1 > w) x1 = w;
                float m = -INFINITY;
                for (int iy = y0; iy < y1; iy++) {
                    const float *restrict r = xp + (size_t)iy * w;
                    for (int ix = x0; ix < x1; ix++) {
                        float v = r[ix];
                        if (v > m || isnan(v)) m = v;
                    }
                }
                yp[(size_t)oy * wo + ox] = m;
            }
        }
    }
}

void pkk_unpack_u8_cubes(const uint8_t *cubes, int n, int channels,
                         int first_frame, int frames, float *dst)
{
    if (n <= 0 || channels <= 0 || frames <= 0) return;
    const size_t cube = (size_t)PKK_FRAMES * PKK_CROP_PLANE * channels;
    const size_t dst_ch = (size_t)n * PKK_CROP_PLANE;
    const long jobs = (long)n * frames;

#pragma omp parallel for schedule(static) if ((size_t)jobs * PKK_CROP_PLANE * channels >= PKK_PAR_MIN)
    for (long job = 0; job < jobs; job++) {
        const int i = (int)(job / frames);
        const int f = (int)(job % frames);
        const uint8_t *restrict src =
            cubes + (size_t)i * cube + (size_t)(first_frame + f) * PKK_CROP_PLANE * channels;
        if (channels == 3) {
            float *restrict d0 = dst + (size_t)(f * 3 + 0) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            float *restrict d1 = dst + (size_t)(f * 3 + 1) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            float *restrict d2 = dst + (size_t)(f * 3 + 2) * dst_ch + (size_t)i * PKK_CROP_PLANE;
            for (int p = 0; p < PKK_CROP_PLANE; p++) {
                d0[p] = (float)src[3 * p + 0] / 255.0f;
                d1[p] = (float)src[3 * p + 1] / 255.0f;
                d2[p] = (float)src[3 * p + 2] / 255.0f;
            }
        } else {
            for (int c = 0; c < channels; c++) {
                float *restrict d = dst + (size_t)(f * channels + c) * dst_ch + (size_t)i * PKK_CROP_PLANE;
                for (int p = 0; p < PKK_CROP_PLANE; p++)
                    d[p] = (float)src[(size_t)p * channels + c] / 255.0f;
            }
        }
    }
}

void pkk_unpack_f32_cubes(const float *cubes, int n, int channels,
                          int first_frame, int frames, float *dst)
{
    if (n <= 0 || channels <= 0 || frames <= 0) return;
    const size_t cube = (size_t)PKK_FRAMES * channels * PKK_CROP_PLANE;
    const size_t dst_ch = (size_t)n * PKK_CROP_PLANE;
    const long jobs = (long)n * frames * channels;

#pragma omp parallel for schedule(static) if ((size_t)jobs * PKK_CROP_PLANE >= 4 * PKK_PAR_MIN)
    for (long job = 0; job < jobs; job++) {
        const int i = (int)(job / ((long)frames * channels));
        const int fc = (int)(job % ((long)frames * channels)); /* f*channels + c */
        memcpy(dst + (size_t)fc * dst_ch + (size_t)i * PKK_CROP_PLANE,
               cubes + (size_t)i * cube + ((size_t)first_frame * channels + fc) * PKK_CROP_PLANE,
               sizeof(float) * PKK_CROP_PLANE);
    }
}

long pkk_first_nonfinite(const float *x, size_t n)
{
    const uint32_t *bits = (const uint32_t *)(const void *)x;
    enum { BLOCK = 256 };
    size_t i = 0;
    while (i < n) {
        size_t end = n - i < BLOCK ? n : i + BLOCK;
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

void pkk_teacher_input(const float *src, size_t plane, const int source_channel[3],
                       const float mean[3], const float std[3], float *dst)
{
    for (int i = 0; i < 3; i++) {
        const float *restrict s = src + (size_t)source_channel[i] * plane;
        float *restrict d = dst + (size_t)i * plane;
        const float m = mean[i], sd = std[i];
#pragma omp parallel for schedule(static) if (plane >= 4 * PKK_PAR_MIN)
        for (size_t p = 0; p < plane; p++) d[p] = (s[p] - m) / sd;
    }
}
