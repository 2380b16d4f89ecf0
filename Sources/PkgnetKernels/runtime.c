/*
 * Runtime: CPU features, run-time loading of OpenBLAS, thread counts, system info.
 *
 * libpkgnet does not link OpenBLAS: Debian's DYNAMIC_ARCH build picks its SSE3
 * kernels on AVX-512 CPUs unless OPENBLAS_CORETYPE is set before it loads, so
 * pkk_runtime_init chooses the core type from cpuid, sets the variable (only if
 * the user has not), dlopen()s OpenBLAS and restores the environment.
 *
 * One OpenMP runtime: the kernels use LLVM libomp. The OpenMP build of OpenBLAS
 * calls GOMP_* / omp_*, which libomp implements too; promoting libomp to the
 * global symbol scope before the dlopen makes those calls bind to libomp
 * instead of to the libgomp that OpenBLAS lists as NEEDED (a second pool).
 */
#define _GNU_SOURCE
#include "pkgnet_kernels.h"
#include "pkk_internal.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- CPU features ---- */

typedef struct {
    int sse42, avx, avx2, fma, avx512f, avx512bw, avx512vl, avx512dq;
    int os_ymm, os_zmm;
} pkk_cpu;

static unsigned long long pkk_xgetbv0(void)
{
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static pkk_cpu pkk_detect_cpu(void)
{
    pkk_cpu cpu;
    memset(&cpu, 0, sizeof cpu);
    unsigned int eax, ebx, ecx, edx;
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1 || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return cpu;
    cpu.sse42 = (ecx >> 20) & 1;
    cpu.fma = (ecx >> 12) & 1;
    cpu.avx = (ecx >> 28) & 1;
    int osxsave = (ecx >> 27) & 1;
    if (osxsave) {
        unsigned long long xcr0 = pkk_xgetbv0();
        cpu.os_ymm = (xcr0 & 0x6) == 0x6;            /* SSE + AVX state */
        cpu.os_zmm = cpu.os_ymm && (xcr0 & 0xE0) == 0xE0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    }
    if (max_leaf >= 7 && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        cpu.avx2 = (ebx >> 5) & 1;
        cpu.avx512f = (ebx >> 16) & 1;
        cpu.avx512dq = (ebx >> 17) & 1;
        cpu.avx512bw = (ebx >> 30) & 1;
        cpu.avx512vl = (ebx >> 31) & 1;
    }
    return cpu;
}

/* The OpenBLAS core type for this CPU, or NULL to let OpenBLAS decide. */
static const char *pkk_core_for_cpu(const pkk_cpu *cpu)
{
    if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq && cpu->os_zmm)
        return "SkylakeX";
    if (cpu->avx && cpu->avx2 && cpu->fma && cpu->os_ymm)
        return "Haswell";
    return NULL;
}

/* The kernels' own instruction-set test. The target_clones resolvers test
 * the same way, and a kernel may be called before pkk_runtime_init. */
static int pkk_cpu_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4");
}

static atomic_int pkk_avx512_allowed = 1;

int pkk_allow_avx512(int allow)
{
    atomic_store_explicit(&pkk_avx512_allowed, allow != 0, memory_order_relaxed);
    return pkk_cpu_avx512();
}

int pkk_use_avx512(void)
{
    return atomic_load_explicit(&pkk_avx512_allowed, memory_order_relaxed) && pkk_cpu_avx512();
}

/* ---- OpenBLAS ---- */

typedef void (*pkk_cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k,
                                   float alpha, const float *a, int lda, const float *b, int ldb,
                                   float beta, float *c, int ldc);
typedef void (*pkk_set_threads_fn)(int);
typedef char *(*pkk_get_string_fn)(void);
typedef int (*pkk_get_int_fn)(void);

enum { PKK_ROW_MAJOR = 101, PKK_NO_TRANS = 111, PKK_TRANS = 112 };

static const char *const pkk_blas_candidates[] = {
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
    "libopenblas.so.0",
};
#define PKK_BLAS_CANDIDATES (sizeof pkk_blas_candidates / sizeof pkk_blas_candidates[0])

static struct {
    pthread_once_t once;
    int status;                      /* 0 loaded, -1 failed */
    char error[1024];                /* failure message (copied to each caller's slot) */
    void *handle;
    pkk_cblas_sgemm_fn sgemm;
    pkk_set_threads_fn set_threads;  /* may be NULL */
    pkk_get_string_fn get_config;    /* may be NULL */
    pkk_get_string_fn get_corename;  /* may be NULL */
    int parallel;                    /* openblas_get_parallel(): 0 seq, 1 pthread, 2 openmp, -1 unknown */
    char path[512];                  /* the file actually loaded */
    const char *core_source;         /* how the core type was chosen */
    pkk_cpu cpu;
} pkk_rt = { .once = PTHREAD_ONCE_INIT, .status = -1, .parallel = -1 };

static void pkk_load_blas(void)
{
    pkk_rt.cpu = pkk_detect_cpu();

    /* Route OpenBLAS's GOMP_* / omp_* references to libomp (already loaded as our
     * NEEDED; this only adds it to the global scope when we were loaded RTLD_LOCAL,
     * as Python's ctypes does). The reference is kept: libomp stays global. */
    void *omp = NULL;
    Dl_info omp_info;
    if (dladdr((void *)omp_get_max_threads, &omp_info) != 0 && omp_info.dli_fname != NULL)
        omp = dlopen(omp_info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    if (omp == NULL) omp = dlopen("libomp.so.5", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    (void)omp;

    /* The user's OPENBLAS_CORETYPE (even an empty one) is left alone; otherwise
     * the core type from cpuid is set for the dlopen only. (setenv is not safe
     * against a concurrent getenv in another thread; this runs once, early.) */
    const char *user_core = getenv("OPENBLAS_CORETYPE");
    const char *chosen = NULL;
    if (user_core != NULL) {
        pkk_rt.core_source = user_core[0] ? "from OPENBLAS_CORETYPE"
                                          : "OpenBLAS's own choice, OPENBLAS_CORETYPE is empty";
    } else if ((chosen = pkk_core_for_cpu(&pkk_rt.cpu)) != NULL) {
        pkk_rt.core_source = "chosen from cpuid";
        setenv("OPENBLAS_CORETYPE", chosen, 1);
    } else {
        pkk_rt.core_source = "OpenBLAS's own choice";
    }

    char tried[768];
    size_t used = 0;
    tried[0] = '\0';
    void *handle = NULL;
    for (size_t i = 0; i < PKK_BLAS_CANDIDATES && handle == NULL; i++) {
        handle = dlopen(pkk_blas_candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            const char *why = dlerror();
            int r = snprintf(tried + used, sizeof tried - used, "%s%s (%s)", used ? "; " : "",
                             pkk_blas_candidates[i], why ? why : "unknown error");
            if (r > 0) used += (size_t)r < sizeof tried - used ? (size_t)r : sizeof tried - used - 1;
        }
    }
    if (chosen != NULL) unsetenv("OPENBLAS_CORETYPE");

    if (handle == NULL) {
        snprintf(pkk_rt.error, sizeof pkk_rt.error,
                 "cannot load OpenBLAS: tried %s; install it with `apt-get install libopenblas0-openmp`",
                 tried);
        return;
    }
    pkk_cblas_sgemm_fn sgemm = (pkk_cblas_sgemm_fn)dlsym(handle, "cblas_sgemm");
    if (sgemm == NULL) {
        const char *why = dlerror();
        snprintf(pkk_rt.error, sizeof pkk_rt.error,
                 "the loaded OpenBLAS has no cblas_sgemm (%s); install it with "
                 "`apt-get install libopenblas0-openmp`", why ? why : "unknown error");
        dlclose(handle);
        return;
    }
    pkk_rt.handle = handle;
    pkk_rt.set_threads = (pkk_set_threads_fn)dlsym(handle, "openblas_set_num_threads");
    pkk_rt.get_config = (pkk_get_string_fn)dlsym(handle, "openblas_get_config");
    pkk_rt.get_corename = (pkk_get_string_fn)dlsym(handle, "openblas_get_corename");
    pkk_get_int_fn get_parallel = (pkk_get_int_fn)dlsym(handle, "openblas_get_parallel");
    pkk_rt.parallel = get_parallel ? get_parallel() : -1;
    Dl_info info;
    if (dladdr((void *)sgemm, &info) != 0 && info.dli_fname != NULL)
        snprintf(pkk_rt.path, sizeof pkk_rt.path, "%s", info.dli_fname);
    else
        snprintf(pkk_rt.path, sizeof pkk_rt.path, "%s", "unknown path");
    pkk_rt.sgemm = sgemm;
    pkk_rt.status = 0;
}

int pkk_runtime_init(void)
{
    pthread_once(&pkk_rt.once, pkk_load_blas);
    if (pkk_rt.status != 0) {
        pkk_set_error(pkk_rt.error);
        return -1;
    }
    return 0;
}

/* ---- threads ---- */

int pkk_default_threads(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n >= 1) return n;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online >= 1 ? (int)online : 1;
}

/* Only the calling thread's OpenMP setting: OpenBLAS's thread count is a
 * process-wide global, which pkk_sgemm below changes only while no GEMM runs. */
void pkk_set_threads(int threads)
{
    if (threads <= 0) threads = pkk_default_threads();
    omp_set_num_threads(threads);
}

/* ---- parallel ranges ---- */

int pkk_run_threads(long n, size_t work)
{
    if (n <= 1 || work < PKK_PAR_MIN) return 1;
    int threads = omp_get_max_threads();
    if (threads > n) threads = (int)n;
    return threads > 1 ? threads : 1;
}

void pkk_run(long n, size_t work, pkk_range_fn fn, const void *args)
{
    if (n <= 0) return;
    const int threads = pkk_run_threads(n, work);
    if (threads <= 1) {
        fn(0, n, 0, args);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const long t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long q = n / nt, r = n % nt;
        const long lo = t * q + (t < r ? t : r);
        const long hi = lo + q + (t < r ? 1 : 0);
        if (lo < hi) fn(lo, hi, (int)t, args);
    }
}

void pkk_parallel_tasks(long n, int workers, pkk_task_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (workers > n) workers = (int)n;
    if (workers <= 1) {
        for (long i = 0; i < n; i++) fn(i, 0, ctx);
        return;
    }
    /* Tasks go to whichever worker is free, in order of i: on a shared host
     * one vCPU is often slowed for a while, and a fixed half of the tasks
     * then left the other worker waiting at the end. */
    atomic_long next = 0;
#pragma omp parallel num_threads(workers)
    {
        /* This implicit task's own ICV: the kernels a task calls open
         * one-thread regions (the enclosing thread's count is untouched). */
        omp_set_num_threads(1);
        const int t = omp_get_thread_num();
        for (long i; (i = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed)) < n;) fn(i, t, ctx);
    }
}

/* ---- GEMM ---- */

/* Plain reference GEMM, only used if the BLAS is missing (callers must have
 * checked pkk_runtime_init; this keeps a broken caller slow instead of crashing). */
static void pkk_sgemm_fallback(int trans_a, int trans_b, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float sum = 0.0f;
            for (int p = 0; p < k; p++) {
                float av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                float bv = trans_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                sum += av * bv;
            }
            float *cij = &c[(size_t)i * ldc + j];
            *cij = alpha * sum + (beta == 0.0f ? 0.0f : beta * *cij);
        }
    }
}

/*
 * The OpenMP build of OpenBLAS keeps its thread count in a global
 * (blas_cpu_number) and, when it changes, frees the per-thread GEMM buffers
 * of the threads no longer used (adjust_thread_buffers). It changes it on
 * openblas_set_num_threads and also inside every GEMM whose caller's
 * omp_get_max_threads() differs from it (num_cpu_avail, 0.3.21). So two
 * sessions with different thread counts scoring at once free each other's
 * buffers in mid-GEMM: scores came out different from a lone run (found by
 * ConcurrencyTests.testEightStreamsOnEightThreadsMatchSequential, sessions
 * with 1 and 2 threads).
 *
 * The gate: GEMMs asking for the thread count OpenBLAS has run concurrently;
 * a GEMM asking for another count waits until none runs, then switches the
 * count. Calls from inside a parallel region run single-threaded in OpenBLAS
 * and never switch, so they take any count but still hold off a switch.
 * pkk_sgemm below only ever asks for 1 (and makes its caller's OpenMP
 * setting 1 for the call, so OpenBLAS does not switch on its own): the
 * switch happens once, at the first GEMM.
 */
static pthread_mutex_t pkk_gemm_gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pkk_gemm_idle = PTHREAD_COND_INITIALIZER;
static int pkk_gemm_active;   /* GEMMs running */
static int pkk_gemm_threads;  /* the count OpenBLAS was last set to, 0 = not yet */

/* One BLAS call through the gate; want = 0 inside a parallel region. */
static void pkk_sgemm_gated(int want, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float *a, int lda, const float *b, int ldb, float beta,
                            float *c, int ldc)
{
    /* Read before the switch: openblas_set_num_threads (OpenMP build) also
     * sets the calling thread's OpenMP count. Read after it, the first GEMM
     * of a process left its caller at 1 thread for good: that caller's
     * first training epoch ran single-threaded and rounded as one does. */
    const int caller_threads = omp_get_max_threads();
    pthread_mutex_lock(&pkk_gemm_gate);
    while (want != 0 && pkk_gemm_active > 0 && pkk_gemm_threads != want)
        pthread_cond_wait(&pkk_gemm_idle, &pkk_gemm_gate);
    if (want != 0 && pkk_gemm_threads != want) {
        if (pkk_rt.set_threads != NULL) pkk_rt.set_threads(want);
        pkk_gemm_threads = want;
    }
    pkk_gemm_active++;
    pthread_mutex_unlock(&pkk_gemm_gate);

    /* OpenBLAS's OpenMP build threads whenever the caller's
     * omp_get_max_threads() exceeds 1: a single-threaded call sets it to 1
     * for the call (a per-thread setting), then restores the caller's. */
    if (want == 1) omp_set_num_threads(1);
    pkk_rt.sgemm(PKK_ROW_MAJOR, trans_a ? PKK_TRANS : PKK_NO_TRANS, trans_b ? PKK_TRANS : PKK_NO_TRANS,
                 m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (want == 1 && omp_get_max_threads() != caller_threads) omp_set_num_threads(caller_threads);

    pthread_mutex_lock(&pkk_gemm_gate);
    if (--pkk_gemm_active == 0) pthread_cond_broadcast(&pkk_gemm_idle);
    pthread_mutex_unlock(&pkk_gemm_gate);
}

/* Parts of a GEMM: columns in runs of PKK_PART_N when there are more, else
 * rows in runs of PKK_PART_M. */
#define PKK_PART_N 256
#define PKK_PART_M 96

typedef struct {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc, by_columns;
    float alpha, beta;
    const float *a, *b;
    float *c;
} pkk_gemm_parts;

static void pkk_gemm_run_parts(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_gemm_parts *g = args;
    const int want = omp_in_parallel() ? 0 : 1;
    for (long part = lo; part < hi; part++) {
        if (g->by_columns) {
            const int j0 = (int)part * PKK_PART_N, j1 = j0 + PKK_PART_N < g->n ? j0 + PKK_PART_N : g->n;
            pkk_sgemm_gated(want, g->trans_a, g->trans_b, g->m, j1 - j0, g->k, g->alpha, g->a, g->lda,
                            g->trans_b ? g->b + (size_t)j0 * g->ldb : g->b + j0, g->ldb, g->beta, g->c + j0, g->ldc);
        } else {
            const int i0 = (int)part * PKK_PART_M, i1 = i0 + PKK_PART_M < g->m ? i0 + PKK_PART_M : g->m;
            pkk_sgemm_gated(want, g->trans_a, g->trans_b, i1 - i0, g->n, g->k, g->alpha,
                            g->trans_a ? g->a + i0 : g->a + (size_t)i0 * g->lda, g->lda, g->b, g->ldb, g->beta,
                            g->c + (size_t)i0 * g->ldc, g->ldc);
        }
    }
}

/*
 * OpenBLAS's result for an element depends on the shape of the call, not only
 * on the element's own row and column: its threaded driver cuts the
 * reduction into other blocks than the single-threaded one, and even
 * single-threaded calls on a column range round differently from the whole
 * (Zen/Haswell kernels: a 64 x 256 product split into two 128-column calls
 * differs in 423 of its elements). So OpenBLAS never threads here and a GEMM
 * is always cut the same way, whatever the thread count: into parts of
 * PKK_PART_N columns (or PKK_PART_M rows), single-threaded BLAS calls that
 * the OpenMP threads share. Scores are then the same bits on any number of
 * threads.
 */
void pkk_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta,
               float *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    if (pkk_rt.sgemm == NULL) {
        pkk_sgemm_fallback(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const int by_columns = n > PKK_PART_N;
    const long parts = by_columns ? (n + PKK_PART_N - 1) / PKK_PART_N : (m + PKK_PART_M - 1) / PKK_PART_M;
    const pkk_gemm_parts g = { trans_a, trans_b, m, n, k, lda, ldb, ldc, by_columns, alpha, beta, a, b, c };
    const size_t work = (size_t)m * (size_t)n * (size_t)(k > 0 ? k : 1);
    /* a part's share of the work must pay for a fork */
    pkk_run(parts, work / 64, pkk_gemm_run_parts, &g);
}

/* ---- system info ---- */

static pthread_once_t pkk_info_once = PTHREAD_ONCE_INIT;
static char pkk_info[2048];

static void pkk_build_info(void)
{
    int ok = pkk_runtime_init() == 0;
    const pkk_cpu *cpu = &pkk_rt.cpu;
    char features[128];
    snprintf(features, sizeof features, "%s%s%s%s%s",
             cpu->avx512f && cpu->os_zmm ? " avx512f" : "",
             cpu->avx2 && cpu->os_ymm ? " avx2" : "",
             cpu->fma && cpu->os_ymm ? " fma" : "",
             cpu->avx && cpu->os_ymm ? " avx" : "",
             cpu->sse42 ? " sse4.2" : "");

    char blas[1200];
    if (ok) {
        char version[96] = "OpenBLAS";
        if (pkk_rt.get_config != NULL) {
            /* "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64" */
            const char *config = pkk_rt.get_config();
            if (config != NULL && strncmp(config, "OpenBLAS ", 9) == 0) {
                size_t len = strcspn(config + 9, " ");
                snprintf(version, sizeof version, "OpenBLAS %.*s", (int)len, config + 9);
            }
        }
        const char *build = pkk_rt.parallel == 2 ? "openmp build"
                          : pkk_rt.parallel == 1 ? "pthread build"
                          : pkk_rt.parallel == 0 ? "sequential build" : "unknown build";
        const char *core = pkk_rt.get_corename ? pkk_rt.get_corename() : NULL;
        snprintf(blas, sizeof blas, "%s (%s, %s), core %s (%s)", version, build, pkk_rt.path,
                 core ? core : "unknown", pkk_rt.core_source ? pkk_rt.core_source : "unknown");
    } else {
        snprintf(blas, sizeof blas, "not loaded: %s", pkk_rt.error);
    }

    char omp[600] = "LLVM libomp";
    Dl_info info;
    if (dladdr((void *)omp_get_max_threads, &info) != 0 && info.dli_fname != NULL)
        snprintf(omp, sizeof omp, "LLVM libomp (%s)", info.dli_fname);

    const char *kernels = pkk_cpu_avx512() ? "AVX-512" : __builtin_cpu_supports("x86-64-v3") ? "AVX2" : "SSE4.2";
    snprintf(pkk_info, sizeof pkk_info, "cpu:%s; kernels: %s; blas: %s; openmp: %s; default threads: %d",
             features[0] ? features : " baseline x86-64", kernels, blas, omp, pkk_default_threads());
}

const char *pkk_system_info(void)
{
    pthread_once(&pkk_info_once, pkk_build_info);
    return pkk_info;
}
