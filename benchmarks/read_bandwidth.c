/*
 * How fast this machine reads a model's weights: every OpenMP thread sums
 * its own contiguous part of a buffer of the given size with 16-float loads
 * (8-float ones without AVX-512), four independent sums so that the adds
 * never wait; median of 21 passes, after one that brings the buffer in.
 * A batch-1 convolution reads each weight once, so its GB/s against this
 * figure says whether it is bound by memory or by its own kernel. Buffers
 * that fit the last-level cache stay in it from pass to pass (as a model's
 * weights can from call to call): a size well above it (200 MB) reads DRAM.
 *
 *   cc -O2 -fopenmp benchmarks/read_bandwidth.c -o /tmp/read_bandwidth
 *   /tmp/read_bandwidth [threads] [MB ...]      (default: 2 threads; 9.4 and 36 MB,
 *                                               the w=64 model's 512 -> 512 layer and all its weights)
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define PASSES 21

/* One thread's part summed with vectors of type V (LANES floats): four
 * independent sums, every lane in the checksum returned so that no load is
 * optimised away. */
#define READ_SUMS(V, ZERO, LOAD, ADD, STORE, LANES)                                                            \
    V s0 = ZERO(), s1 = s0, s2 = s0, s3 = s0;                                                                \
    for (size_t i = 0; i < n; i += 4 * (LANES)) {                                                            \
        s0 = ADD(s0, LOAD(p + i));                                                                           \
        s1 = ADD(s1, LOAD(p + i + (LANES)));                                                                 \
        s2 = ADD(s2, LOAD(p + i + 2 * (LANES)));                                                             \
        s3 = ADD(s3, LOAD(p + i + 3 * (LANES)));                                                             \
    }                                                                                                        \
    float lanes[LANES], sum = 0.0f;                                                                          \
    STORE(lanes, ADD(ADD(s0, s1), ADD(s2, s3)));                                                             \
    for (int l = 0; l < (LANES); l++) sum += lanes[l];                                                       \
    return sum;

__attribute__((target("avx512f"))) static float sum16(const float *p, size_t n)
{
    READ_SUMS(__m512, _mm512_setzero_ps, _mm512_load_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
}

__attribute__((target("avx2"))) static float sum8(const float *p, size_t n)
{
    READ_SUMS(__m256, _mm256_setzero_ps, _mm256_load_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void measure(double megabytes, int threads, int wide)
{
    /* Each thread's part a whole number of 64-float steps. */
    const size_t part = (size_t)(megabytes * 1e6 / sizeof(float) / threads) / 64 * 64;
    const size_t n = part * (size_t)threads;
    float *buffer = aligned_alloc(64, n * sizeof(float));
    if (buffer == NULL || part == 0) {
        fprintf(stderr, "%.1f MB: cannot allocate, or too small for %d threads\n", megabytes, threads);
        free(buffer);
        return;
    }
    for (size_t i = 0; i < n; i++) buffer[i] = 1.0f;
    double seconds[PASSES];
    float sink = 0.0f;
    for (int pass = -1; pass < PASSES; pass++) {
        const double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            const float *mine = buffer + part * (size_t)omp_get_thread_num();
            sink += wide ? sum16(mine, part) : sum8(mine, part);
        }
        if (pass >= 0) seconds[pass] = omp_get_wtime() - start;
    }
    qsort(seconds, PASSES, sizeof seconds[0], by_value);
    printf("%.1f MB, %d thread%s: %.1f GB/s (median of %d; checksum %g)\n", n * sizeof(float) / 1e6, threads,
           threads == 1 ? "" : "s", n * sizeof(float) / seconds[PASSES / 2] * 1e-9, PASSES, sink);
    free(buffer);
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1) {
        fprintf(stderr, "usage: %s [threads] [MB ...]\n", argv[0]);
        return 1;
    }
    __builtin_cpu_init();
    const int wide = __builtin_cpu_supports("avx512f");
    if (argc > 2)
        for (int i = 2; i < argc; i++) measure(atof(argv[i]), threads, wide);
    else {
        measure(9.4, threads, wide);
        measure(36.0, threads, wide);
    }
    return 0;
}
