/*
 * Anomaly scores. Sums are in double and each cube is reduced sequentially in
 * a fixed order (parallel only over cubes), so results do not depend on the
 * thread count.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <math.h>
#include <stdlib.h>

/* Per-thread double accumulators of n elements: on the stack when small. */
#define PKK_STACK_DOUBLES 4096

void pkk_prediction_error(const float *pred, const float *target, int c, int batch, int hw,
                          float *error, float *map)
{
    if (c <= 0 || batch <= 0 || hw <= 0) return;
    const size_t ch = (size_t)batch * hw;
    const double inv_c = 1.0 / (double)c;
    const double inv_all = 1.0 / ((double)c * (double)hw);

#pragma omp parallel if ((size_t)c * ch >= PKK_PAR_MIN)
    {
        double stack_acc[PKK_STACK_DOUBLES];
        double *acc = hw <= PKK_STACK_DOUBLES ? stack_acc : malloc(sizeof(double) * (size_t)hw);
#pragma omp for schedule(static)
        for (int b = 0; b < batch; b++) {
            if (acc == NULL) { /* out of memory: a slower path without the per-position buffer */
                double total = 0.0;
                for (int p = 0; p < hw; p++) {
                    double s = 0.0;
                    for (int k = 0; k < c; k++) {
                        size_t at = (size_t)k * ch + (size_t)b * hw + p;
                        double d = (double)pred[at] - (double)target[at];
                        s += d * d;
                    }
                    if (map) map[(size_t)b * hw + p] = (float)(s * inv_c);
                    total += s;
                }
                error[b] = (float)(total * inv_all);
                continue;
            }
            for (int p = 0; p < hw; p++) acc[p] = 0.0;
            for (int k = 0; k < c; k++) {
                const float *restrict pr = pred + (size_t)k * ch + (size_t)b * hw;
                const float *restrict tr = target + (size_t)k * ch + (size_t)b * hw;
                for (int p = 0; p < hw; p++) {
                    double d = (double)pr[p] - (double)tr[p];
                    acc[p] += d * d;
                }
            }
            double total = 0.0;
            for (int p = 0; p < hw; p++) total += acc[p];
            if (map != NULL) {
                float *restrict mr = map + (size_t)b * hw;
                for (int p = 0; p < hw; p++) mr[p] = (float)(acc[p] * inv_c);
            }
            error[b] = (float)(total * inv_all);
        }
        if (acc != stack_acc) free(acc);
    }
}

void pkk_inconsistency(const float *s, const float *t, int c, int batch, int hw,
                       float *score, float *map)
{
    if (c <= 0 || batch <= 0 || hw <= 0) return;
    const size_t ch = (size_t)batch * hw;
    const double eps = 1e-8;

#pragma omp parallel if ((size_t)c * ch >= PKK_PAR_MIN)
    {
        double stack_acc[3 * (PKK_STACK_DOUBLES / 3)];
        const int on_stack = (size_t)hw * 3 <= sizeof stack_acc / sizeof stack_acc[0];
        double *acc = on_stack ? stack_acc : malloc(sizeof(double) * 3 * (size_t)hw);
#pragma omp for schedule(static)
        for (int b = 0; b < batch; b++) {
            double total = 0.0;
            if (acc == NULL) { /* out of memory: position by position */
                for (int p = 0; p < hw; p++) {
                    double dot = 0.0, ss = 0.0, tt = 0.0;
                    for (int k = 0; k < c; k++) {
                        size_t at = (size_t)k * ch + (size_t)b * hw + p;
                        double sv = s[at], tv = t[at];
                        dot += sv * tv;
                        ss += sv * sv;
                        tt += tv * tv;
                    }
                    double ns = sqrt(ss), nt = sqrt(tt);
                    double v = 1.0 - dot / ((ns > eps ? ns : eps) * (nt > eps ? nt : eps));
                    if (map) map[(size_t)b * hw + p] = (float)v;
                    total += v;
                }
                score[b] = (float)(total / (double)hw);
                continue;
            }
            double *restrict dot = acc, *restrict ss = acc + hw, *restrict tt = acc + 2 * (size_t)hw;
            for (int p = 0; p < hw; p++) dot[p] = ss[p] = tt[p] = 0.0;
            for (int k = 0; k < c; k++) {
                const float *restrict sr = s + (size_t)k * ch + (size_t)b * hw;
                const float *restrict tr = t + (size_t)k * ch + (size_t)b * hw;
                for (int p = 0; p < hw; p++) {
                    double sv = sr[p], tv = tr[p];
                    dot[p] += sv * tv;
                    ss[p] += sv * sv;
                    tt[p] += tv * tv;
                }
            }
            for (int p = 0; p < hw; p++) {
                double ns = sqrt(ss[p]), nt = sqrt(tt[p]);
                double v = 1.0 - dot[p] / ((ns > eps ? ns : eps) * (nt > eps ? nt : eps));
                if (map) map[(size_t)b * hw + p] = (float)v;
                total += v;
            }
            score[b] = (float)(total / (double)hw);
        }
        if (acc != stack_acc) free(acc);
    }
}
