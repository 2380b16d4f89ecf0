/*
 * Training losses and their gradients with respect to the prediction.
 *
 * Every loss is a mean of many terms. The terms are summed in double in
 * pieces fixed by the problem (chunks of TR_LOSS_CHUNK elements for MSE, one
 * image for the gradient and cosine losses), each piece sequentially, and
 * the pieces' sums are added in index order afterwards: the loss and the
 * gradient are the same bits for any thread count.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_train.h"

#include <math.h>
#include <stdlib.h>

/* The same bits on every CPU, whichever clone runs (PKK_CLONES). */
#pragma clang fp contract(off)

#define TR_LOSS_CHUNK 8192

/* Sums partial[0..n) in order. */
static double tr_sum_in_order(const double *partial, long n)
{
    double s = 0.0;
    for (long i = 0; i < n; i++) s += partial[i];
    return s;
}

/* ---- MSE ---- */

typedef struct {
    const float *p, *t;
    size_t n;
    double coef; /* weight * 2 / n */
    float *grad;
    int accumulate;
    double *partial;
} tr_mse_args;

PKK_CLONES static void tr_mse_chunks(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_mse_args *a = args;
    for (long k = lo; k < hi; k++) {
        const size_t i0 = (size_t)k * TR_LOSS_CHUNK;
        const size_t i1 = i0 + TR_LOSS_CHUNK < a->n ? i0 + TR_LOSS_CHUNK : a->n;
        double s = 0.0;
        for (size_t i = i0; i < i1; i++) {
            const double d = (double)a->p[i] - (double)a->t[i];
            s += d * d;
            if (a->grad != NULL) {
                const double g = a->coef * d;
                a->grad[i] = a->accumulate ? (float)((double)a->grad[i] + g) : (float)g;
            }
        }
        a->partial[k] = s;
    }
}

double pkk_mse_loss(const float *pred, const float *target, size_t n,
                    float weight, float *grad, int accumulate)
{
    if (n == 0) return 0.0;
    const long chunks = (long)((n + TR_LOSS_CHUNK - 1) / TR_LOSS_CHUNK);
    double *partial = malloc(sizeof(double) * (size_t)chunks);
    if (partial == NULL) {
        pkk_set_error("mse loss: out of memory");
        return NAN;
    }
    const tr_mse_args a = { pred, target, n, 2.0 * (double)weight / (double)n, grad, accumulate,
                            partial };
    pkk_run(chunks, n, tr_mse_chunks, &a);
    const double loss = tr_sum_in_order(partial, chunks) / (double)n;
    free(partial);
    return loss;
}

/* ---- gradient loss ---- */

typedef struct {
    const float *p, *t;
    int c, batch, h, w, paper;
    double power, coef; /* coef = weight / (batch*h*w) */
    float *grad;
    int accumulate;
    double *partial; /* per image; NaN if its buffer could not be allocated */
} tr_gdl_args;

/* |e|^power and its derivative with respect to e (0 at e = 0, like the
 * subgradient PyTorch uses for abs). */
static inline double tr_pow_abs(double e, double power, double *deriv)
{
    const double m = fabs(e);
    if (m == 0.0) {
        *deriv = 0.0;
        return power == 0.0 ? 1.0 : 0.0;
    }
    double v, d;
    if (power == 2.0) {
        v = m * m;
        d = 2.0 * m;
    } else if (power == 3.0) {
        v = m * m * m;
        d = 3.0 * m * m;
    } else if (power == 1.0) {
        v = m;
        d = 1.0;
    } else {
        v = pow(m, power);
        d = power * v / m;
    }
    *deriv = e > 0.0 ? d : -d;
    return v;
}

static inline double tr_sign(double v) { return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0); }

/* Loss term of one difference pair and its derivative with respect to the
 * prediction's difference dp. */
static inline double tr_gdl_term(double dt, double dp, double power, int paper, double *d_dp)
{
    double de;
    if (paper) { /* e = |dt| - |dp| */
        const double v = tr_pow_abs(fabs(dt) - fabs(dp), power, &de);
        *d_dp = -de * tr_sign(dp);
        return v;
    }
    const double v = tr_pow_abs(dt - dp, power, &de); /* e = dt - dp */
    *d_dp = -de;
    return v;
}

/* Images [lo, hi). Per image: the channel-summed differences of pred and
 * target, their loss terms, the terms' derivatives gx, gy with respect to
 * the prediction's differences, then the chain through the differences:
 *   dL/dpred[c][i][j] = gx[i][j] - gx[i][j+1] + gy[i][j] - gy[i+1][j]
 * (the same for every colour channel). */
PKK_CLONES static void tr_gdl_images(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_gdl_args *a = args;
    const int h = a->h, w = a->w;
    const size_t plane = (size_t)h * w, ch = (size_t)a->batch * plane;
    double *gx = malloc(sizeof(double) * 2 * plane);
    if (gx == NULL) {
        for (long b = lo; b < hi; b++) a->partial[b] = NAN;
        return;
    }
    double *gy = gx + plane;
    for (long b = lo; b < hi; b++) {
        double s = 0.0;
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) {
                const size_t q = (size_t)b * plane + (size_t)i * w + j;
                double dxp = 0.0, dxt = 0.0, dyp = 0.0, dyt = 0.0;
                for (int k = 0; k < a->c; k++) {
                    const float *pk = a->p + (size_t)k * ch + q, *tk = a->t + (size_t)k * ch + q;
                    dxp += (double)pk[0] - (j > 0 ? (double)pk[-1] : 0.0);
                    dxt += (double)tk[0] - (j > 0 ? (double)tk[-1] : 0.0);
                    dyp += (double)pk[0] - (i > 0 ? (double)pk[-w] : 0.0);
                    dyt += (double)tk[0] - (i > 0 ? (double)tk[-w] : 0.0);
                }
                double ddx, ddy;
                s += tr_gdl_term(dxt, dxp, a->power, a->paper, &ddx);
                s += tr_gdl_term(dyt, dyp, a->power, a->paper, &ddy);
                gx[(size_t)i * w + j] = ddx * a->coef;
                gy[(size_t)i * w + j] = ddy * a->coef;
            }
        }
        a->partial[b] = s;
        if (a->grad == NULL) continue;
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) {
                const size_t r = (size_t)i * w + j;
                double g = gx[r] + gy[r];
                if (j + 1 < w) g -= gx[r + 1];
                if (i + 1 < h) g -= gy[r + (size_t)w];
                for (int k = 0; k < a->c; k++) {
                    float *d = a->grad + (size_t)k * ch + (size_t)b * plane + r;
                    *d = a->accumulate ? (float)((double)*d + g) : (float)g;
                }
            }
        }
    }
    free(gx);
}

double pkk_gradient_loss(const float *pred, const float *target, int c, int batch,
                         int h, int w, double power, int paper_form,
                         float weight, float *grad, int accumulate)
{
    if (c <= 0 || batch <= 0 || h <= 0 || w <= 0) return 0.0;
    double *partial = malloc(sizeof(double) * (size_t)batch);
    if (partial == NULL) {
        pkk_set_error("gradient loss: out of memory");
        return NAN;
    }
    const double pixels = (double)batch * h * w;
    const tr_gdl_args a = { pred, target, c, batch, h, w, paper_form != 0, power,
                            (double)weight / pixels, grad, accumulate, partial };
    pkk_run(batch, (size_t)c * batch * h * w * 4, tr_gdl_images, &a);
    const double loss = tr_sum_in_order(partial, batch) / pixels;
    free(partial);
    return loss;
}

/* ---- cosine (distillation) loss ---- */

typedef struct {
    const float *s, *t;
    int c, batch, hw;
    double coef; /* weight / (batch*hw) */
    float *grad;
    int accumulate;
    double *partial;
} tr_cos_args;

/* Images [lo, hi). With ns = |s|, nt = |t|, ns' = max(ns, eps), nt' likewise,
 * the term 1 - <s,t>/(ns' nt') has the derivative
 *   -t/(ns' nt') + [ns > eps] <s,t> s / (ns^3 nt')
 * (the clamp is constant below eps, so the norm's derivative drops there). */
PKK_CLONES static void tr_cos_images(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_cos_args *a = args;
    const double eps = 1e-8; /* pkk_inconsistency's clamp */
    const int hw = a->hw;
    const size_t ch = (size_t)a->batch * hw;
    double *acc = malloc(sizeof(double) * 3 * (size_t)hw);
    if (acc == NULL) {
        for (long b = lo; b < hi; b++) a->partial[b] = NAN;
        return;
    }
    double *dot = acc, *ss = acc + hw, *tt = acc + 2 * (size_t)hw;
    for (long b = lo; b < hi; b++) {
        for (int p = 0; p < hw; p++) dot[p] = ss[p] = tt[p] = 0.0;
        for (int k = 0; k < a->c; k++) {
            const float *sr = a->s + (size_t)k * ch + (size_t)b * hw;
            const float *tr = a->t + (size_t)k * ch + (size_t)b * hw;
            for (int p = 0; p < hw; p++) {
                const double sv = sr[p], tv = tr[p];
                dot[p] += sv * tv;
                ss[p] += sv * sv;
                tt[p] += tv * tv;
            }
        }
        double total = 0.0;
        for (int p = 0; p < hw; p++) {
            const double ns = sqrt(ss[p]), nt = sqrt(tt[p]);
            const double nsc = ns > eps ? ns : eps, ntc = nt > eps ? nt : eps;
            total += 1.0 - dot[p] / (nsc * ntc);
            /* reuse the accumulators: coefficient of t, coefficient of s */
            const double ct = -a->coef / (nsc * ntc);
            const double cs = ns > eps ? a->coef * dot[p] / (ns * ns * ns * ntc) : 0.0;
            ss[p] = ct;
            tt[p] = cs;
        }
        a->partial[b] = total;
        if (a->grad == NULL) continue;
        for (int k = 0; k < a->c; k++) {
            const size_t off = (size_t)k * ch + (size_t)b * hw;
            const float *sr = a->s + off, *tr = a->t + off;
            float *gr = a->grad + off;
            for (int p = 0; p < hw; p++) {
                const double g = ss[p] * (double)tr[p] + tt[p] * (double)sr[p];
                gr[p] = a->accumulate ? (float)((double)gr[p] + g) : (float)g;
            }
        }
    }
    free(acc);
}

double pkk_cosine_loss(const float *s, const float *t, int c, int batch, int hw,
                       float weight, float *grad, int accumulate)
{
    if (c <= 0 || batch <= 0 || hw <= 0) return 0.0;
    double *partial = malloc(sizeof(double) * (size_t)batch);
    if (partial == NULL) {
        pkk_set_error("cosine loss: out of memory");
        return NAN;
    }
    const double positions = (double)batch * hw;
    const tr_cos_args a = { s, t, c, batch, hw, (double)weight / positions, grad, accumulate,
                            partial };
    pkk_run(batch, (size_t)c * batch * hw * 2, tr_cos_images, &a);
    const double loss = tr_sum_in_order(partial, batch) / positions;
    free(partial);
    return loss;
}
