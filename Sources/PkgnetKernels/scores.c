/*
 * Anomaly scores. Sums are in double and each cube is reduced sequentially in
 * a fixed order (parallel only over cubes), so results do not depend on the
 * thread count.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <math.h>
#include <stdlib.h>

/* Per-call double accumulators: on the stack when small. */
#define PKK_STACK_DOUBLES 3072

typedef struct {
    const float *a, *b;
    int c, batch, hw;
    float *score, *map;
} pkk_score_args;

/* Cubes [lo, hi): error[b] = mean (pred - target)^2, map = mean over channels. */
static void pkk_prediction_error_cubes(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_score_args *a = args;
    const int c = a->c, hw = a->hw;
    const size_t ch = (size_t)a->batch * hw;
    const double inv_c = 1.0 / (double)c;
    const double inv_all = 1.0 / ((double)c * (double)hw);
    double stack_acc[PKK_STACK_DOUBLES];
    double *acc = hw <= PKK_STACK_DOUBLES ? stack_acc : malloc(sizeof(double) * (size_t)hw);

    for (long b = lo; b < hi; b++) {
        double total = 0.0;
        if (acc == NULL) { /* out of memory: position by position, same order */
            for (int p = 0; p < hw; p++) {
                double s = 0.0;
                for (int k = 0; k < c; k++) {
                    const size_t at = (size_t)k * ch + (size_t)b * hw + p;
                    const double d = (double)a->a[at] - (double)a->b[at];
                    s += d * d;
                }
                if (a->map) a->map[(size_t)b * hw + p] = (float)(s * inv_c);
                total += s;
            }
            a->score[b] = (float)(total * inv_all);
            continue;
        }
        for (int p = 0; p < hw; p++) acc[p] = 0.0;
        for (int k = 0; k < c; k++) {
            const float *restrict pr = a->a + (size_t)k * ch + (size_t)b * hw;
            const float *restrict tr = a->b + (size_t)k * ch + (size_t)b * hw;
            for (int p = 0; p < hw; p++) {
                const double d = (double)pr[p] - (double)tr[p];
                acc[p] += d * d;
            }
        }
        for (int p = 0; p < hw; p++) total += acc[p];
        if (a->map != NULL) {
            float *restrict mr = a->map + (size_t)b * hw;
            for (int p = 0; p < hw; p++) mr[p] = (float)(acc[p] * inv_c);
        }
        a->score[b] = (float)(total * inv_all);
    }
    if (acc != stack_acc) free(acc);
}

void pkk_prediction_error(const float *pred, const float *target, int c, int batch, int hw,
                          float *error, float *map)
{
    if (c <= 0 || batch <= 0 || hw <= 0) return;
    const pkk_score_args a = { pred, target, c, batch, hw, error, map };
    pkk_run(batch, (size_t)c * batch * hw, pkk_prediction_error_cubes, &a);
}

static double pkk_one_minus_cos(double dot, double ss, double tt)
{
    const double eps = 1e-8;
    const double ns = sqrt(ss), nt = sqrt(tt);
    return 1.0 - dot / ((ns > eps ? ns : eps) * (nt > eps ? nt : eps));
}

/* Cubes [lo, hi): 1 - cosine along channels per position, and its mean. */
static void pkk_inconsistency_cubes(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_score_args *a = args;
    const int c = a->c, hw = a->hw;
    const size_t ch = (size_t)a->batch * hw;
    double stack_acc[PKK_STACK_DOUBLES];
    double *acc = (size_t)hw * 3 <= PKK_STACK_DOUBLES ? stack_acc : malloc(sizeof(double) * 3 * (size_t)hw);

    for (long b = lo; b < hi; b++) {
        double total = 0.0;
        if (acc == NULL) { /* out of memory: position by position, same order */
            for (int p = 0; p < hw; p++) {
                double dot = 0.0, ss = 0.0, tt = 0.0;
                for (int k = 0; k < c; k++) {
                    const size_t at = (size_t)k * ch + (size_t)b * hw + p;
                    const double sv = a->a[at], tv = a->b[at];
                    dot += sv * tv;
                    ss += sv * sv;
                    tt += tv * tv;
                }
                const double v = pkk_one_minus_cos(dot, ss, tt);
                if (a->map) a->map[(size_t)b * hw + p] = (float)v;
                total += v;
            }
            a->score[b] = (float)(total / (double)hw);
            continue;
        }
        double *restrict dot = acc, *restrict ss = acc + hw, *restrict tt = acc + 2 * (size_t)hw;
        for (int p = 0; p < hw; p++) dot[p] = ss[p] = tt[p] = 0.0;
        for (int k = 0; k < c; k++) {
            const float *restrict sr = a->a + (size_t)k * ch + (size_t)b * hw;
            const float *restrict tr = a->b + (size_t)k * ch + (size_t)b * hw;
            for (int p = 0; p < hw; p++) {
                const double sv = sr[p], tv = tr[p];
                dot[p] += sv * tv;
                ss[p] += sv * sv;
                tt[p] += tv * tv;
            }
        }
        for (int p = 0; p < hw; p++) {
            const double v = pkk_one_minus_cos(dot[p], ss[p], tt[p]);
            if (a->map) a->map[(size_t)b * hw + p] = (float)v;
            total += v;
        }
        a->score[b] = (float)(total / (double)hw);
    }
    if (acc != stack_acc) free(acc);
}

void pkk_inconsistency(const float *s, const float *t, int c, int batch, int hw,
                       float *score, float *map)
{
    if (c <= 0 || batch <= 0 || hw <= 0) return;
    const pkk_score_args a = { s, t, c, batch, hw, score, map };
    pkk_run(batch, (size_t)c * batch * hw, pkk_inconsistency_cubes, &a);
}
