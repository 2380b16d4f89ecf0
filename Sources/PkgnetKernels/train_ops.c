/*
 * Training element-wise layers: BatchNorm (fixed and batch statistics),
 * ReLU, gradient accumulation, max-pool backward.
 *
 * BatchNorm works per channel on a contiguous row of n = batch*h*w values, so
 * one thread owns a channel and every per-channel sum is in double, in a
 * fixed order (pkk_row_sum and kin, pkk_internal.h): the results do not
 * depend on the thread count.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_train.h"

#include <math.h>
#include <string.h>

/* The same bits on every CPU, whichever clone runs (PKK_CLONES). */
#pragma clang fp contract(off)

/* Element-wise loops run over chunks of this many elements (a fixed split,
 * so per-chunk work never depends on the thread count). */
#define TR_CHUNK 8192

/* ---- BatchNorm, fixed statistics ---- */

typedef struct {
    const float *x, *dy, *gamma, *beta, *mean, *var;
    const float *relu_y; /* affine backward: the ReLU's output after the BatchNorm, or NULL */
    float *y, *dx, *dgamma, *dbeta;
    float eps, momentum;
    float *running_mean, *running_var, *save_mean, *save_invstd;
    size_t n;
    int accumulate;
    int relu; /* affine forward: a ReLU after the BatchNorm */
} tr_bn_args;

static double tr_bn_invstd(const tr_bn_args *a, long c)
{
    const double var = a->var ? (double)a->var[c] : 1.0;
    return 1.0 / sqrt(var + (double)a->eps);
}

PKK_CLONES static void tr_bn_affine_fwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_bn_args *a = args;
    for (long c = lo; c < hi; c++) {
        const double mean = a->mean ? (double)a->mean[c] : 0.0;
        const double scale = (double)a->gamma[c] * tr_bn_invstd(a, c);
        const float sf = (float)scale;
        const float shift = (float)((double)a->beta[c] - mean * scale);
        const float *xr = a->x + (size_t)c * a->n; /* y may alias x */
        float *yr = a->y + (size_t)c * a->n;
        if (a->relu) /* pkk_relu_forward's rule, in the same pass */
            for (size_t i = 0; i < a->n; i++) {
                const float v = xr[i] * sf + shift;
                yr[i] = v > 0.0f ? v : 0.0f;
            }
        else
            for (size_t i = 0; i < a->n; i++) yr[i] = xr[i] * sf + shift;
    }
}

void pkk_batchnorm_affine_forward(const float *x, int c, size_t n,
                                  const float *gamma, const float *beta,
                                  const float *mean, const float *var, float eps, int relu, float *y)
{
    if (c <= 0 || n == 0) return;
    const tr_bn_args a = { .x = x, .gamma = gamma, .beta = beta, .mean = mean, .var = var,
                           .y = y, .eps = eps, .n = n, .relu = relu };
    pkk_run(c, (size_t)c * n, tr_bn_affine_fwd, &a);
}

/* Elements [i0, i0 + lanes) of the affine backward's single pass (lanes
 * <= 16, a constant in the main loop): dy masked by the ReLU (yr, or none),
 * its sums into the partials as pkk_row_sum_dot takes them (element i into
 * partial i % 16), and dx (NULL: none). */
static inline __attribute__((always_inline)) void tr_bn_affine_lanes(size_t i0, int lanes, const float *xr,
                                                                      const float *yr, const float *dyr, double mean,
                                                                      double invstd, float k, float *dxr, int accumulate,
                                                                      double *p, double *q)
{
    float g[PKK_SUM_LANES];
    for (int l = 0; l < lanes; l++) {
        const size_t i = i0 + (size_t)l;
        g[l] = yr == NULL || yr[i] > 0.0f ? dyr[i] : 0.0f;
        const double d = (double)g[l];
        p[l] += d;
        q[l] += d * (((double)xr[i] - mean) * invstd);
    }
    if (dxr == NULL) return;
    if (accumulate)
        for (int l = 0; l < lanes; l++) dxr[i0 + l] += g[l] * k;
    else
        for (int l = 0; l < lanes; l++) dxr[i0 + l] = g[l] * k;
}

PKK_CLONES static void tr_bn_affine_bwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_bn_args *a = args;
    for (long c = lo; c < hi; c++) {
        const double mean = a->mean ? (double)a->mean[c] : 0.0;
        const double invstd = tr_bn_invstd(a, c);
        const size_t n = a->n, row = (size_t)c * n;
        const float *yr = a->relu_y ? a->relu_y + row : NULL;
        const float k = (float)((double)a->gamma[c] * invstd);
        float *dxr = a->dx ? a->dx + row : NULL; /* may alias dy: each element is read first */
        double p[PKK_SUM_LANES] = { 0 }, q[PKK_SUM_LANES] = { 0 };
        size_t i = 0;
        for (; i + PKK_SUM_LANES <= n; i += PKK_SUM_LANES)
            tr_bn_affine_lanes(i, PKK_SUM_LANES, a->x + row, yr, a->dy + row, mean, invstd, k, dxr, a->accumulate, p, q);
        if (i < n) tr_bn_affine_lanes(i, (int)(n - i), a->x + row, yr, a->dy + row, mean, invstd, k, dxr, a->accumulate, p, q);
        if (a->dgamma) a->dgamma[c] = (float)((double)a->dgamma[c] + pkk_fold_lanes(q));
        if (a->dbeta) a->dbeta[c] = (float)((double)a->dbeta[c] + pkk_fold_lanes(p));
    }
}

void pkk_batchnorm_affine_backward(const float *x, const float *relu_y, const float *dy, int c, size_t n,
                                   const float *gamma, const float *mean, const float *var,
                                   float eps, float *dx, int accumulate,
                                   float *dgamma, float *dbeta)
{
    if (c <= 0 || n == 0) return;
    const tr_bn_args a = { .x = x, .relu_y = relu_y, .dy = dy, .gamma = gamma, .mean = mean, .var = var,
                           .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .eps = eps, .n = n,
                           .accumulate = accumulate };
    pkk_run(c, (size_t)c * n * 3, tr_bn_affine_bwd, &a);
}

/* ---- BatchNorm, batch statistics ---- */

PKK_CLONES static void tr_bn_batch_fwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_bn_args *a = args;
    const double n = (double)a->n;
    for (long c = lo; c < hi; c++) {
        const float *xr = a->x + (size_t)c * a->n;
        /* two passes: the mean, then squares about it (no cancellation) */
        const double mean = pkk_row_sum(xr, a->n) / n;
        const double q = pkk_row_sum_sq_dev(xr, mean, a->n);
        const double var = q / n; /* biased: what normalises */
        const double invstd = 1.0 / sqrt(var + (double)a->eps);
        const double m = (double)a->momentum;
        if (a->running_mean)
            a->running_mean[c] = (float)((1.0 - m) * (double)a->running_mean[c] + m * mean);
        if (a->running_var && a->n > 1) /* unbiased, as PyTorch records it */
            a->running_var[c] = (float)((1.0 - m) * (double)a->running_var[c] + m * (q / (n - 1.0)));
        if (a->save_mean) a->save_mean[c] = (float)mean;
        if (a->save_invstd) a->save_invstd[c] = (float)invstd;
        const double scale = (double)a->gamma[c] * invstd;
        const float sf = (float)scale;
        const float shift = (float)((double)a->beta[c] - mean * scale);
        float *yr = a->y + (size_t)c * a->n; /* may alias x: x is read before */
        for (size_t i = 0; i < a->n; i++) yr[i] = xr[i] * sf + shift;
    }
}

void pkk_batchnorm_batch_forward(const float *x, int c, size_t n,
                                 const float *gamma, const float *beta, float eps,
                                 float momentum, float *running_mean, float *running_var,
                                 float *save_mean, float *save_invstd, float *y)
{
    if (c <= 0 || n == 0) return;
    const tr_bn_args a = { .x = x, .gamma = gamma, .beta = beta, .y = y, .eps = eps,
                           .momentum = momentum, .running_mean = running_mean,
                           .running_var = running_var, .save_mean = save_mean,
                           .save_invstd = save_invstd, .n = n };
    pkk_run(c, (size_t)c * n * 3, tr_bn_batch_fwd, &a);
}

PKK_CLONES static void tr_bn_batch_bwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_bn_args *a = args;
    const double n = (double)a->n;
    for (long c = lo; c < hi; c++) {
        const double mean = a->save_mean[c], invstd = a->save_invstd[c];
        const float *xr = a->x + (size_t)c * a->n;
        const float *dyr = a->dy + (size_t)c * a->n;
        double sdy, sdyx;
        pkk_row_sum_dot(dyr, xr, mean, invstd, a->n, &sdy, &sdyx);
        if (a->dgamma) a->dgamma[c] = (float)((double)a->dgamma[c] + sdyx);
        if (a->dbeta) a->dbeta[c] = (float)((double)a->dbeta[c] + sdy);
        if (a->dx == NULL) continue;
        /* dx = k * (dy - mean(dy) - xhat * mean(dy xhat)), k = gamma * invstd,
         * expanded into dx = k*dy + u*x + v per element */
        const double k = (double)a->gamma[c] * invstd;
        const double mdy = sdy / n, mdyx = sdyx / n;
        const double u = -k * mdyx * invstd;
        const double v = -k * mdy + k * mdyx * invstd * mean;
        float *dxr = a->dx + (size_t)c * a->n; /* may alias dy: dy is read first */
        for (size_t i = 0; i < a->n; i++) {
            const double g = k * (double)dyr[i] + u * (double)xr[i] + v;
            dxr[i] = a->accumulate ? (float)((double)dxr[i] + g) : (float)g;
        }
    }
}

void pkk_batchnorm_batch_backward(const float *x, const float *dy, int c, size_t n,
                                  const float *gamma, const float *save_mean,
                                  const float *save_invstd, float *dx, int accumulate,
                                  float *dgamma, float *dbeta)
{
    if (c <= 0 || n == 0) return;
    const tr_bn_args a = { .x = x, .dy = dy, .gamma = gamma, .save_mean = (float *)save_mean,
                           .save_invstd = (float *)save_invstd, .dx = dx, .dgamma = dgamma,
                           .dbeta = dbeta, .n = n, .accumulate = accumulate };
    pkk_run(c, (size_t)c * n * 2, tr_bn_batch_bwd, &a);
}

/* ---- ReLU and accumulation ---- */

typedef struct {
    const float *a, *b;
    float *out;
    size_t n;
    int accumulate;
} tr_ew_args;

PKK_CLONES static void tr_relu_fwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_ew_args *a = args;
    const size_t i0 = (size_t)lo * TR_CHUNK;
    const size_t i1 = (size_t)hi * TR_CHUNK < a->n ? (size_t)hi * TR_CHUNK : a->n;
    for (size_t i = i0; i < i1; i++) {
        const float v = a->a[i];
        a->out[i] = v > 0.0f ? v : 0.0f;
    }
}

void pkk_relu_forward(const float *x, size_t n, float *y)
{
    const tr_ew_args a = { x, NULL, y, n, 0 };
    pkk_run((long)((n + TR_CHUNK - 1) / TR_CHUNK), n, tr_relu_fwd, &a);
}

PKK_CLONES static void tr_relu_bwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_ew_args *a = args;
    const size_t i0 = (size_t)lo * TR_CHUNK;
    const size_t i1 = (size_t)hi * TR_CHUNK < a->n ? (size_t)hi * TR_CHUNK : a->n;
    if (a->accumulate) {
        for (size_t i = i0; i < i1; i++)
            if (a->a[i] > 0.0f) a->out[i] += a->b[i];
    } else {
        for (size_t i = i0; i < i1; i++) a->out[i] = a->a[i] > 0.0f ? a->b[i] : 0.0f;
    }
}

void pkk_relu_backward(const float *y, const float *dy, size_t n, float *dx, int accumulate)
{
    const tr_ew_args a = { y, dy, dx, n, accumulate };
    pkk_run((long)((n + TR_CHUNK - 1) / TR_CHUNK), n, tr_relu_bwd, &a);
}

PKK_CLONES static void tr_add(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_ew_args *a = args;
    const size_t i0 = (size_t)lo * TR_CHUNK;
    const size_t i1 = (size_t)hi * TR_CHUNK < a->n ? (size_t)hi * TR_CHUNK : a->n;
    for (size_t i = i0; i < i1; i++) a->out[i] += a->a[i];
}

void pkk_add_inplace(float *dst, const float *src, size_t n)
{
    const tr_ew_args a = { src, NULL, dst, n, 1 };
    pkk_run((long)((n + TR_CHUNK - 1) / TR_CHUNK), n, tr_add, &a);
}

/* ---- max pooling ---- */

typedef struct {
    const float *x, *dy;
    float *dx;
    int h, w, kernel, stride, pad, ho, wo, accumulate;
} tr_pool_args;

/* The argmax of a 2x2 window (v0 v1 / v2 v3) by the general scan's rule
 * below: the last NaN if there is one, else the first strictly largest. */
static inline __attribute__((always_inline)) int tr_argmax4(const float v[4])
{
    int best = 0;
    float m = v[0];
    for (int i = 1; i < 4; i++)
        if (v[i] > m || isnan(v[i])) {
            m = v[i];
            best = i;
        }
    return best;
}

/* The students' 2x2 stride-2 pooling of even planes: windows tile the plane,
 * so each input gets one write, the gradient or 0 (no zeroing pass), or one
 * add. The general scan took 4% of a w=16 training step (perf). */
static inline __attribute__((always_inline)) void tr_maxpool2x2_bwd_plane(const float *restrict xp,
                                                                          const float *restrict dyp,
                                                                          float *restrict dxp, int h, int w,
                                                                          int accumulate)
{
    for (int oy = 0; oy < h / 2; oy++) {
        const float *x0 = xp + (size_t)(2 * oy) * w, *x1 = x0 + w;
        float *d0 = dxp + (size_t)(2 * oy) * w, *d1 = d0 + w;
        for (int ox = 0; ox < w / 2; ox++) {
            const int c = 2 * ox;
            const float v[4] = { x0[c], x0[c + 1], x1[c], x1[c + 1] };
            const int best = tr_argmax4(v);
            const float g = dyp[(size_t)oy * (w / 2) + ox];
            float *at[4] = { d0 + c, d0 + c + 1, d1 + c, d1 + c + 1 };
            if (accumulate)
                *at[best] += g;
            else
                for (int i = 0; i < 4; i++) *at[i] = i == best ? g : 0.0f;
        }
    }
}

/* Planes [lo, hi): each output's gradient to its window's argmax. Windows may
 * overlap (stride < kernel), so a plane belongs to one thread and its adds
 * happen in output order. */
PKK_CLONES static void tr_maxpool_bwd(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_pool_args *a = args;
    const int h = a->h, w = a->w;
    const size_t in_plane = (size_t)h * w, out_plane = (size_t)a->ho * a->wo;
    const int tiled = a->kernel == 2 && a->stride == 2 && a->pad == 0 && h % 2 == 0 && w % 2 == 0;
    for (long p = lo; p < hi; p++) {
        const float *restrict xp = a->x + (size_t)p * in_plane;
        const float *restrict dyp = a->dy + (size_t)p * out_plane;
        float *restrict dxp = a->dx + (size_t)p * in_plane;
        if (tiled) {
            tr_maxpool2x2_bwd_plane(xp, dyp, dxp, h, w, a->accumulate);
            continue;
        }
        if (!a->accumulate) memset(dxp, 0, sizeof(float) * in_plane);
        for (int oy = 0; oy < a->ho; oy++) {
            int y0 = oy * a->stride - a->pad, y1 = y0 + a->kernel;
            if (y0 < 0) y0 = 0;
            if (y1 > h) y1 = h;
            for (int ox = 0; ox < a->wo; ox++) {
                int x0 = ox * a->stride - a->pad, x1 = x0 + a->kernel;
                if (x0 < 0) x0 = 0;
                if (x1 > w) x1 = w;
                /* PyTorch's scan: start at the window's first element with
                 * -inf, take strictly larger values or NaN */
                size_t best = (size_t)y0 * w + x0;
                float m = -INFINITY;
                for (int iy = y0; iy < y1; iy++) {
                    for (int ix = x0; ix < x1; ix++) {
                        const float v = xp[(size_t)iy * w + ix];
                        if (v > m || isnan(v)) {
                            m = v;
                            best = (size_t)iy * w + ix;
                        }
                    }
                }
                dxp[best] += dyp[(size_t)oy * a->wo + ox];
            }
        }
    }
}

void pkk_maxpool2d_backward(const float *x, int c, int batch, int h, int w,
                            int kernel, int stride, int pad, const float *dy,
                            float *dx, int accumulate)
{
    const int ho = (h + 2 * pad - kernel) / stride + 1;
    const int wo = (w + 2 * pad - kernel) / stride + 1;
    if (c <= 0 || batch <= 0 || ho <= 0 || wo <= 0) return;
    const long planes = (long)c * batch;
    const tr_pool_args a = { x, dy, dx, h, w, kernel, stride, pad, ho, wo, accumulate };
    pkk_run(planes, (size_t)planes * ((size_t)h * w + (size_t)ho * wo * kernel * kernel),
            tr_maxpool_bwd, &a);
}
