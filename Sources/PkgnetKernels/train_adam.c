/*
 * Adam as torch.optim.Adam (single-tensor path, no weight decay, no amsgrad,
 * not maximising). The bias corrections are computed once per step in
 * double, as PyTorch does in Python; the per-element update is in float,
 * in PyTorch's order of operations:
 *   m = lerp(m, g, 1 - beta1)            (m + (1-beta1)*(g - m))
 *   v = v*beta2 + (1-beta2)*g*g
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *   p = p - (lr / (1 - beta1^t)) * m / denom
 * Element-wise: any split over threads gives the same bits.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_train.h"

#include <math.h>

/* The same bits on every CPU, whichever clone runs (PKK_CLONES). */
#pragma clang fp contract(off)

#define TR_ADAM_CHUNK 8192

typedef struct {
    float *p, *m, *v;
    const float *g;
    size_t n;
    float beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps;
} tr_adam_args;

PKK_CLONES static void tr_adam_chunks(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const tr_adam_args *a = args;
    const size_t i0 = (size_t)lo * TR_ADAM_CHUNK;
    const size_t i1 = (size_t)hi * TR_ADAM_CHUNK < a->n ? (size_t)hi * TR_ADAM_CHUNK : a->n;
    for (size_t i = i0; i < i1; i++) {
        const float g = a->g[i];
        const float m = a->m[i] + a->one_minus_beta1 * (g - a->m[i]);
        const float v = a->v[i] * a->beta2 + a->one_minus_beta2 * g * g;
        const float denom = sqrtf(v) / a->bc2_sqrt + a->eps;
        a->m[i] = m;
        a->v[i] = v;
        a->p[i] = a->p[i] - a->step_size * (m / denom);
    }
}

void pkk_adam_step(float *param, const float *grad, float *m, float *v, size_t n,
                   long step, double lr, double beta1, double beta2, double eps)
{
    if (n == 0 || step < 1) return;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    /* scalars rounded to float once, as PyTorch passes them to its fp32 ops */
    const tr_adam_args a = { param, m, v, grad, n, (float)beta1, (float)beta2,
                             (float)(1.0 - beta1), (float)(1.0 - beta2), (float)(lr / bc1),
                             (float)sqrt(bc2), (float)eps };
    pkk_run((long)((n + TR_ADAM_CHUNK - 1) / TR_ADAM_CHUNK), n * 4, tr_adam_chunks, &a);
}
