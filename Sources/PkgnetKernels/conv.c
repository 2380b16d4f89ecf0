/*
 * Convolution layers over channel-major activations [C][B*H*W].
 *
 * conv2d: per column tile (flat output index over b, oy, ox) and group,
 * im2col into scratch, one GEMM weight_g [Cout/g][K] x col [K][T] into y
 * (ldc = B*Ho*Wo), then one fused pass (bias, residual, ReLU) over the tile.
 * 1x1 stride-1 pad-0 convolutions use x directly as the GEMM's B matrix.
 *
 * conv_transpose2d: per input column tile, col [Cout*k*k][T] = W^T x X_tile,
 * then a col2im scatter-add into y, parallel over output channels (no races,
 * and a summation order that does not depend on the thread count).
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <string.h>

/* First output coordinate o (in [0, out)) whose input coordinate o*stride + off
 * is >= 0, and one past the last whose input coordinate is < in. Empty range
 * if lo >= hi. */
static inline void pkk_valid_range(int out, int stride, int off, int in, int *lo, int *hi)
{
    /* o*stride + off >= 0  <=>  o >= ceil(-off / stride) */
    int l = 0;
    if (off < 0) l = (-off + stride - 1) / stride;
    /* o*stride + off <= in - 1  <=>  o <= floor((in - 1 - off) / stride) */
    int h;
    if (in - 1 - off < 0) h = 0;
    else h = (in - 1 - off) / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

size_t pkk_conv2d_scratch_floats(int cin, int groups, int kernel, int cols)
{
    if (groups < 1) groups = 1;
    return (size_t)(cin / groups) * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

/*
 * im2col of one group over output columns [c0, c0 + tn):
 *   col[r][j], r = (ci, ky, kx) over the group's cin_g channels, j < tn.
 */
static void pkk_im2col(const float *restrict xg, int cin_g, int batch, int h, int w,
                       int kernel, int stride, int pad, int ho, int wo,
                       size_t c0, int tn, float *restrict col)
{
    const int kk = kernel * kernel;
    const int rows = cin_g * kk;
    const size_t plane = (size_t)h * w;
    const size_t in_ch = (size_t)batch * plane;
    const size_t out_plane = (size_t)ho * wo;
    (void)batch;

#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)tn >= PKK_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const int ci = r / kk;
        const int ky = (r % kk) / kernel;
        const int kx = r % kernel;
        const float *restrict xc = xg + (size_t)ci * in_ch;
        float *restrict dst = col + (size_t)r * tn;
        int lo, hi;
        pkk_valid_range(wo, stride, kx - pad, w, &lo, &hi);

        size_t n = c0;
        int j = 0;
        while (j < tn) {
            const size_t b = n / out_plane;
            const size_t rem = n - b * out_plane;
            const int oy = (int)(rem / wo);
            const int ox0 = (int)(rem - (size_t)oy * wo);
            int len = wo - ox0;
            if (len > tn - j) len = tn - j;
            const int ox1 = ox0 + len;
            float *restrict d = dst + j; /* d[t] is column ox0 + t */
            const int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= h) {
                memset(d, 0, sizeof(float) * (size_t)len);
            } else {
                const float *restrict src = xc + b * plane + (size_t)iy * w;
                /* in-bounds columns: ox in [a, e), reading src[ox*stride + kx - pad] */
                int a = lo > ox0 ? lo : ox0;
                if (a > ox1) a = ox1;
                int e = hi < ox1 ? hi : ox1;
                if (e < a) e = a;
                const int ta = a - ox0, te = e - ox0;
                for (int t = 0; t < ta; t++) d[t] = 0.0f;
                if (te > ta) {
                    const float *restrict s = src + ((size_t)a * stride + kx - pad);
                    if (stride == 1) {
                        memcpy(d + ta, s, sizeof(float) * (size_t)(te - ta));
                    } else {
                        for (int t = ta; t < te; t++) d[t] = s[(size_t)(t - ta) * stride];
                    }
                }
                for (int t = te; t < len; t++) d[t] = 0.0f;
            }
            j += len;
            n += (size_t)len;
        }
    }
}

/* y[co][c0 + j] = act(y + bias[co] + residual[co][c0 + j]) for rows [0, cout), j < tn. */
static void pkk_epilogue(float *restrict y, size_t ldy, int cout, size_t c0, int tn,
                         const float *restrict bias, const float *restrict residual, int relu)
{
    if (bias == NULL && residual == NULL && !relu) return;
#pragma omp parallel for schedule(static) if ((size_t)cout * (size_t)tn >= PKK_PAR_MIN)
    for (int co = 0; co < cout; co++) {
        float *restrict yr = y + (size_t)co * ldy + c0;
        const float bv = bias ? bias[co] : 0.0f;
        if (residual != NULL) {
            const float *restrict rr = residual + (size_t)co * ldy + c0;
            if (relu) {
                for (int j = 0; j < tn; j++) {
                    float v = yr[j] + bv + rr[j];
                    yr[j] = v > 0.0f ? v : 0.0f;
                }
            } else {
                for (int j = 0; j < tn; j++) yr[j] = yr[j] + bv + rr[j];
            }
        } else if (relu) {
            for (int j = 0; j < tn; j++) {
                float v = yr[j] + bv;
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < tn; j++) yr[j] += bv;
        }
    }
}

void pkk_conv2d(const float *x, int cin, int batch, int h, int w,
                const float *weight, const float *bias, int cout,
                int kernel, int stride, int pad, int groups,
                const float *residual, int relu,
                float *y, float *scratch, size_t scratch_floats)
{
    if (groups < 1) groups = 1;
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (cout <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return;
    const int cin_g = cin / groups;
    const int cout_g = cout / groups;
    const int kdim = cin_g * kernel * kernel;
    const size_t ncols = (size_t)batch * ho * wo;
    const size_t in_ch = (size_t)batch * h * w;

    if (kernel == 1 && stride == 1 && pad == 0) {
        /* x is already the B matrix [Cin/g][B*H*W] of each group. */
        for (int g = 0; g < groups; g++)
            pkk_sgemm(0, 0, cout_g, (int)ncols, kdim, 1.0f,
                      weight + (size_t)g * cout_g * kdim, kdim,
                      x + (size_t)g * cin_g * in_ch, (int)ncols, 0.0f,
                      y + (size_t)g * cout_g * ncols, (int)ncols);
        pkk_epilogue(y, ncols, cout, 0, (int)ncols, bias, residual, relu);
        return;
    }

    size_t tile = scratch_floats / (size_t)kdim;
    if (tile > ncols) tile = ncols;
    if (tile < 1) tile = 1; /* caller bug: scratch must hold at least one column */

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        for (int g = 0; g < groups; g++) {
            pkk_im2col(x + (size_t)g * cin_g * in_ch, cin_g, batch, h, w, kernel, stride, pad,
                       ho, wo, c0, tn, scratch);
            pkk_sgemm(0, 0, cout_g, tn, kdim, 1.0f,
                      weight + (size_t)g * cout_g * kdim, kdim,
                      scratch, tn, 0.0f,
                      y + (size_t)g * cout_g * ncols + c0, (int)ncols);
        }
        pkk_epilogue(y, ncols, cout, c0, tn, bias, residual, relu);
    }
}

size_t pkk_conv_transpose2d_scratch_floats(int cout, int kernel, int cols)
{
    return (size_t)cout * (size_t)kernel * (size_t)kernel * (size_t)cols;
}

/*
 * col2im scatter-add of input columns [c0, c0 + tn):
 *   y[co][b][iy*stride - pad + ky][ix*stride - pad + kx] += col[(co, ky, kx)][j]
 */
static void pkk_col2im(const float *restrict col, int cout, int kernel, int stride, int pad,
                       int batch, int h, int w, int ho, int wo, size_t c0, int tn,
                       float *restrict y)
{
    const int kk = kernel * kernel;
    const size_t in_plane = (size_t)h * w;
    const size_t out_plane = (size_t)ho * wo;
    const size_t out_ch = (size_t)batch * out_plane;

#pragma omp parallel for schedule(static) if ((size_t)cout * kk * (size_t)tn >= PKK_PAR_MIN)
    for (int co = 0; co < cout; co++) {
        float *restrict yc = y + (size_t)co * out_ch;
        for (int ky = 0; ky < kernel; ky++) {
            for (int kx = 0; kx < kernel; kx++) {
                const float *restrict src = col + ((size_t)co * kk + (size_t)ky * kernel + kx) * tn;
                int lo, hi; /* input ix whose ox = ix*stride - pad + kx lies in [0, wo) */
                pkk_valid_range(w, stride, kx - pad, wo, &lo, &hi);
                size_t n = c0;
                int j = 0;
                while (j < tn) {
                    const size_t b = n / in_plane;
                    const size_t rem = n - b * in_plane;
                    const int iy = (int)(rem / w);
                    const int ix0 = (int)(rem - (size_t)iy * w);
                    int len = w - ix0;
                    if (len > tn - j) len = tn - j;
                    const int ix1 = ix0 + len;
                    const int oy = iy * stride - pad + ky;
                    if (oy >= 0 && oy < ho) {
                        int a = lo > ix0 ? lo : ix0;
                        int e = hi < ix1 ? hi : ix1;
                        if (e > a) {
                            const float *restrict s = src + j + (a - ix0);
                            float *restrict d = yc + b * out_plane + (size_t)oy * wo
                                              + ((size_t)a * stride + kx - pad);
                            const int m = e - a;
                            if (stride == 1) {
                                for (int t = 0; t < m; t++) d[t] += s[t];
                            } else {
                                for (int t = 0; t < m; t++) d[(size_t)t * stride] += s[t];
                            }
                        }
                    }
                    j += len;
                    n += (size_t)len;
                }
            }
        }
    }
}

void pkk_conv_transpose2d(const float *x, int cin, int batch, int h, int w,
                          const float *weight, const float *bias, int cout,
                          int kernel, int stride, int pad, int output_padding,
                          float *y, float *scratch, size_t scratch_floats)
{
    const int ho = (h - 1) * stride - 2 * pad + kernel + output_padding;
    const int wo = (w - 1) * stride - 2 * pad + kernel + output_padding;
    if (cout <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return;
    const size_t out_ch = (size_t)batch * ho * wo;
    const size_t ncols = (size_t)batch * h * w;
    const int rows = cout * kernel * kernel;

#pragma omp parallel for schedule(static) if ((size_t)cout * out_ch >= PKK_PAR_MIN)
    for (int co = 0; co < cout; co++) {
        float *restrict yc = y + (size_t)co * out_ch;
        const float bv = bias ? bias[co] : 0.0f;
        for (size_t i = 0; i < out_ch; i++) yc[i] = bv;
    }
    if (ncols == 0) return;

    size_t tile = scratch_floats / (size_t)rows;
    if (tile > ncols) tile = ncols;
    if (tile < 1) tile = 1;

    for (size_t c0 = 0; c0 < ncols; c0 += tile) {
        const int tn = (int)(ncols - c0 < tile ? ncols - c0 : tile);
        /* col [Cout*k*k][tn] = W^T [Cout*k*k][Cin] x X[:, c0:c0+tn] */
        pkk_sgemm(1, 0, rows, tn, cin, 1.0f, weight, rows, x + c0, (int)ncols, 0.0f, scratch, tn);
        pkk_col2im(scratch, cout, kernel, stride, pad, batch, h, w, ho, wo, c0, tn, y);
    }
}
