/*
 * GEMMs against weights packed once, for the inference convolutions that do
 * not go through Winograd (1x1, strided, 3x3 on maps with few tiles, the
 * transposed convolutions).
 *
 * Why not the BLAS: a BLAS packs both operands on every call. With a scoring
 * batch of one cube, the products are thin (16 to 256 columns) and packing
 * the weights costs as much as multiplying them (perf: OpenBLAS's weight
 * packing took 15% of a batch-1 call, its kernel 16%). Here the weights are
 * packed on a layer's first call and kept (pkk_weight_cache); the other
 * operand is read in place.
 *
 * C [m][n] = A [m][k] x B [k][n], B row-major with any row stride ldb (read
 * in place: each column block's slice is copied into a panel, below).
 * The register block is pkk_block_6x16: per k, six broadcast weights and
 * two 8-float rows of B; on AVX-512 CPUs pkk_block_zmm's 6 x 64, four
 * 16-float rows, so column blocks are 64 wide there. k is cut in chunks of
 * PKK_PG_KC, and A is packed chunk by chunk, row block by row block
 * [chunk][row block][kc][6], so the weights of one chunk are one contiguous
 * stream (a batch-1 product is bound by reading them), and each block
 * prefetches the next block's weights while it runs. In a chunk, the
 * blocks of C are walked GotoBLAS-style: per group of row blocks (their
 * weights, PKK_PG_A_BLOCK floats, stay in L2), per column block (its
 * kc x 64 slice of B, 32 KiB, stays in L1), every row block of the group.
 * Chunks of 128, not 256: the 6 x 64 block's four B loads per k then come
 * from L1 instead of L2; the w=64 model scored 1.034x as fast at 17 and
 * 128 cubes per call (its transposed convolutions, a sixth of the time,
 * are such products), 0.99x at 1 (benchmarks/ab.py, 30 rounds); 96 was
 * slower than 128 at all three.
 *
 * A B laid out in such panels, whole columns of 64 ([vector][k][16]), is
 * read in place: a convolution's weights where the roles are swapped
 * (pkk_gemm_panels).
 *
 * Each thread owns a contiguous range of C's blocks (in that walk's order)
 * for the whole product and accumulates in C chunk after chunk: every
 * element is summed by one thread in one order, whatever the thread count.
 * Bias, residual and ReLU are applied as the last chunk is stored.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_microkernel.h"

#include <string.h>

#define PKK_PG_MR 6  /* rows per register block */
#define PKK_PG_KC 128
/* Weights per group of row blocks: 256 KiB, a quarter of L2. */
#define PKK_PG_A_BLOCK 65536

static inline int pkk_pg_row_blocks(int m) { return (m + PKK_PG_MR - 1) / PKK_PG_MR; }

size_t pkk_packed_weight_floats(int m, int k)
{
    return (size_t)pkk_pg_row_blocks(m) * PKK_PG_MR * (size_t)k;
}

void pkk_packed_row_blocks(const float *a, int m, int k, float *dst)
{
    const size_t rows = (size_t)pkk_pg_row_blocks(m) * PKK_PG_MR;
    for (int cb = 0; cb < pkk_pg_row_blocks(m); cb++)
        for (int k0 = 0; k0 < k; k0 += PKK_PG_KC) {
            const int kc = k - k0 < PKK_PG_KC ? k - k0 : PKK_PG_KC;
            memcpy(dst + ((size_t)cb * k + k0) * PKK_PG_MR, a + (size_t)k0 * rows + (size_t)cb * kc * PKK_PG_MR,
                   sizeof(float) * (size_t)kc * PKK_PG_MR);
        }
}

/* Where A [m][k] comes from: element row * row_stride + i * col_stride of
 * the source w (read in runs along rows when col_stride is 1, along a row
 * block's column when row_stride is 1 and nothing is scaled), or, with winograd_rows set, a 3x3
 * convolution's weights as pkk_winograd_arrange_weights leaves them in
 * `arranged` (i = 9 ci + tap, the im2col order; blocks of `winograd_rows`
 * rows). */
typedef struct {
    pkk_weight_source *w;
    const float *arranged;
    int m, k;
    size_t row_stride, col_stride;
    int winograd_rows;
} pkk_pack_source;

typedef struct {
    pkk_pack_source source;
    float *a;
} pkk_pack_args;

/* dst[i][r] = A[cb * 6 + r][k0 + i] for i < kc (0 past row m). */
static void pkk_pack_block(const pkk_pack_source *s, long cb, int k0, int kc, float *dst)
{
    const long row0 = cb * PKK_PG_MR;
    const int live = s->m - row0 < PKK_PG_MR ? (int)(s->m - row0) : PKK_PG_MR;
    if (s->winograd_rows) {
        const int mr = s->winograd_rows, cin = s->k / 9;
        const size_t rows = (size_t)(s->m + mr - 1) / mr * mr;
        for (int i = 0; i < kc; i++)
            for (int r = 0; r < PKK_PG_MR; r++) {
                const long row = row0 + r;
                const int ci = (k0 + i) / 9, tap = (k0 + i) % 9;
                dst[(size_t)i * PKK_PG_MR + r] =
                    r < live ? s->arranged[(size_t)tap * rows * cin + ((size_t)(row / mr) * cin + ci) * mr + row % mr] : 0.0f;
            }
    } else if (s->col_stride == 1) {
        float run[PKK_PG_MR][PKK_PG_KC];
        for (int r = 0; r < live; r++)
            pkk_weight_source_span(s->w, (size_t)(row0 + r) * s->row_stride + (size_t)k0, (size_t)kc, (size_t)(row0 + r), run[r]);
        for (int i = 0; i < kc; i++)
            for (int r = 0; r < PKK_PG_MR; r++) dst[(size_t)i * PKK_PG_MR + r] = r < live ? run[r][i] : 0.0f;
    } else {
        for (int i = 0; i < kc; i++) {
            float *column = dst + (size_t)i * PKK_PG_MR;
            const size_t e = (size_t)row0 * s->row_stride + (size_t)(k0 + i) * s->col_stride;
            if (s->row_stride == 1 && s->w->row_scale == NULL)
                pkk_weight_source_span(s->w, e, (size_t)live, 0, column);
            else
                for (int r = 0; r < live; r++) pkk_weight_source_span(s->w, e + (size_t)r * s->row_stride, 1, (size_t)(row0 + r), column + r);
            for (int r = live; r < PKK_PG_MR; r++) column[r] = 0.0f;
        }
    }
}

/* Row blocks [lo, hi): A[row][i] at [chunk][row block][i - chunk start][6]. */
static void pkk_pack_rows(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_pack_args *p = args;
    const int k = p->source.k;
    const size_t rows = (size_t)pkk_pg_row_blocks(p->source.m) * PKK_PG_MR;
    for (int k0 = 0; k0 < k; k0 += PKK_PG_KC) {
        const int kc = k - k0 < PKK_PG_KC ? k - k0 : PKK_PG_KC;
        for (long cb = lo; cb < hi; cb++) pkk_pack_block(&p->source, cb, k0, kc, p->a + (size_t)k0 * rows + (size_t)cb * kc * PKK_PG_MR);
    }
}

static void pkk_pack(const pkk_pack_source *source, float *a)
{
    const pkk_pack_args p = { *source, a };
    pkk_run(pkk_pg_row_blocks(source->m), pkk_packed_weight_floats(source->m, source->k), pkk_pack_rows, &p);
}

void pkk_pack_weights(const float *w, int m, int k, size_t row_stride, size_t col_stride, float *a)
{
    pkk_weight_source source = { w, PKK_DTYPE_F32, NULL, 0 };
    const pkk_pack_source s = { &source, NULL, m, k, row_stride, col_stride, 0 };
    pkk_pack(&s, a);
}

static void pkk_pack_fill(float *a, const void *args) { pkk_pack(args, a); }

const float *pkk_packed_weights_from(pkk_weight_cache *cache, pkk_weight_source *w, int m, int k,
                                     size_t row_stride, size_t col_stride)
{
    const pkk_pack_source s = { w, NULL, m, k, row_stride, col_stride, 0 };
    return pkk_weight_cache_get(cache, PKK_CACHE_PACKED, pkk_packed_weight_floats(m, k), w != NULL ? pkk_pack_fill : NULL,
                                &s);
}

const float *pkk_packed_weights(pkk_weight_cache *cache, const float *w, int m, int k, size_t row_stride,
                                size_t col_stride)
{
    pkk_weight_source source = { w, PKK_DTYPE_F32, NULL, 0 };
    return pkk_packed_weights_from(cache, w != NULL ? &source : NULL, m, k, row_stride, col_stride);
}

const float *pkk_packed_winograd_weights(pkk_weight_cache *cache, const float *s, int cout, int cin)
{
    const pkk_pack_source source = { NULL, s, cout, 9 * cin, 0, 0, pkk_winograd_block_rows(cout) };
    return pkk_weight_cache_get(cache, PKK_CACHE_PACKED, pkk_packed_weight_floats(cout, 9 * cin), pkk_pack_fill, &source);
}

/* Columns per panel of a B operand kept in panels (pkk_gemm_panels): the
 * AVX-512 register block's four 16-float vectors. */
#define PKK_PANEL_COLS (16 * PKK_ZMM_NB)

static size_t pkk_panel_floats(int n, int k)
{
    return (size_t)(n + PKK_PANEL_COLS - 1) / PKK_PANEL_COLS * PKK_PANEL_COLS * (size_t)k;
}

typedef struct {
    const float *s;
    int cout, cin;
} pkk_transpose_source;

/* B = W^T [9 cin][cout] in panels: B[kk][co], kk = tap cin + ci (the tap
 * order of the Winograd arrangement's segments), is the weight of output
 * channel co, input channel ci and tap, read from S ([tap][cout / mr][cin]
 * [mr]); 0 past cout. */
static void pkk_transpose_fill(float *panels, const void *args)
{
    const pkk_transpose_source *t = args;
    const int cin = t->cin, cout = t->cout, mr = pkk_winograd_block_rows(cout), k = 9 * cin;
    const size_t rows = (size_t)(cout + mr - 1) / mr * mr;
    const int cols = (int)(pkk_panel_floats(cout, k) / (size_t)k); /* cout rounded up to whole panels */
    for (int co = 0; co < cols; co++) {
        float *dst = panels + ((size_t)(co / 16) * k) * 16 + co % 16; /* vector co / 16 of the panels, lane co % 16 */
        if (co >= cout) {
            for (int kk = 0; kk < k; kk++) dst[(size_t)kk * 16] = 0.0f;
            continue;
        }
        for (int tap = 0; tap < 9; tap++) {
            const float *src = t->s + (size_t)tap * rows * cin + (size_t)(co / mr) * cin * mr + co % mr;
            for (int ci = 0; ci < cin; ci++) dst[((size_t)tap * cin + ci) * 16] = src[(size_t)ci * mr];
        }
    }
}

const float *pkk_transposed_winograd_weights(pkk_weight_cache *cache, const float *s, int cout, int cin)
{
    const pkk_transpose_source t = { s, cout, cin };
    return pkk_weight_cache_get(cache, PKK_CACHE_TRANSPOSED, pkk_panel_floats(cout, 9 * cin), pkk_transpose_fill, &t);
}

void pkk_pack_pixels3x3(const float *x, int cin, int batch, int h, int w, float *a)
{
    const int m = batch * h * w, k = 9 * cin, row_blocks = pkk_pg_row_blocks(m);
    const size_t rows = (size_t)row_blocks * PKK_PG_MR;
    /* at[tap][p]: where pixel p's tap reads in a channel's plane, or -1 (the
     * zero padding, and the rows past m) */
    int at[9][PKK_FEW_PIXELS + PKK_PG_MR];
    for (int tap = 0; tap < 9; tap++)
        for (int p = 0; p < (int)rows; p++) {
            const int b = p / (h * w), py = p / w % h + tap / 3 - 1, px = p % w + tap % 3 - 1;
            at[tap][p] = p < m && py >= 0 && py < h && px >= 0 && px < w ? (b * h + py) * w + px : -1;
        }
    for (int k0 = 0; k0 < k; k0 += PKK_PG_KC) {
        const int kc = k - k0 < PKK_PG_KC ? k - k0 : PKK_PG_KC;
        for (int rb = 0; rb < row_blocks; rb++) {
            float *dst = a + (size_t)k0 * rows + (size_t)rb * kc * PKK_PG_MR;
            for (int i = 0; i < kc; i++) {
                const int tap = (k0 + i) / cin;
                const float *plane = x + (size_t)(k0 + i - tap * cin) * m;
                const int *from = at[tap] + rb * PKK_PG_MR;
                for (int r = 0; r < PKK_PG_MR; r++) dst[(size_t)i * PKK_PG_MR + r] = from[r] >= 0 ? plane[from[r]] : 0.0f;
            }
        }
    }
}

/* ---- kernel ---- */

typedef struct {
    const float *a, *b, *bias, *residual;
    float *c;
    size_t ldb, ldc;
    int m, n, k, relu;
    int seg; /* 0: A packed in chunks of PKK_PG_KC; else A = [k / seg][row block][seg][6] (Winograd arrangement) */
    const float *panels; /* B kept in panels (AVX-512 only): b and ldb unused */
    int col_blocks, group; /* column blocks (16 columns, 64 on the AVX-512 path); group: row blocks per L2 group */
} pkk_pg_args;

/* What a block's row of C becomes: v (the sum over this chunk) plus the
 * earlier chunks' sum held in C, then on the last chunk bias, residual and
 * ReLU. One element. */
static inline float pkk_pg_finish(const pkk_pg_args *g, float v, const float *crow, const float *res, float bias,
                                  int first, int last, int j)
{
    if (!first) v += crow[j];
    if (last) {
        v += bias;
        if (res) v += res[j];
        if (g->relu && v < 0.0f) v = 0.0f;
    }
    return v;
}

/* A block's accumulators into C (acc[NB r + h]: row r, columns [h LANES,
 * (h + 1) LANES) of the block, vectors of type V), the first `cols`
 * columns: whole vectors, and a last partial one element by element. */
#define PKK_PG_STORE(NAME, V, VU, LANES, NB)                                                                  \
    static inline __attribute__((always_inline)) void NAME(const pkk_pg_args *g, const V acc[6 * (NB)],       \
                                                           int rows, int cols, int r0, int c0, int first,      \
                                                           int last)                                           \
    {                                                                                                         \
        for (int r = 0; r < rows; r++) {                                                                      \
            float *crow = g->c + (size_t)(r0 + r) * g->ldc + c0;                                              \
            const float *res = last && g->residual ? g->residual + (size_t)(r0 + r) * g->ldc + c0 : NULL;    \
            const float bias = last && g->bias ? g->bias[r0 + r] : 0.0f;                                     \
            for (int h = 0; h < (NB) && h * (LANES) < cols; h++) {                                            \
                float *ch = crow + (LANES) * h;                                                               \
                const float *rh = res ? res + (LANES) * h : NULL;                                             \
                V v = acc[(NB) * r + h];                                                                      \
                if (cols - (LANES) * h < (LANES)) {                                                           \
                    float lane[LANES];                                                                        \
                    memcpy(lane, &v, sizeof lane);                                                            \
                    for (int j = 0; j < cols - (LANES) * h; j++)                                              \
                        ch[j] = pkk_pg_finish(g, lane[j], ch, rh, bias, first, last, j);                      \
                    continue;                                                                                 \
                }                                                                                             \
                if (!first) v += *(const VU *)ch;                                                             \
                if (last) {                                                                                   \
                    v += bias;                                                                                \
                    if (rh) v += *(const VU *)rh;                                                             \
                    if (g->relu) v = __builtin_elementwise_max(v, (V){ 0 });                                  \
                }                                                                                             \
                *(VU *)ch = v;                                                                                \
            }                                                                                                 \
        }                                                                                                     \
    }

PKK_PG_STORE(pkk_pg_store_v8, pkk_v8, pkk_v8u, 8, 2)
PKK_PG_STORE(pkk_pg_store_v16, pkk_v16, pkk_v16u, 16, PKK_ZMM_NB)

/* The kc x nr slice of B the current column block reads, copied into
 * contiguous, aligned panels of 16 columns each ([nr / 16][kc][16]): B's
 * rows are ldb apart, up to a page each, and a kernel walking them directly
 * loses a fifth to TLB misses. One per thread, not on the stack: 64 KiB
 * there would overflow a host thread made with a small stack. */
static _Thread_local float pkk_pg_panel[PKK_PG_KC * 16 * PKK_ZMM_NB] __attribute__((aligned(64)));

/* The column and row block of C that is item `item` of the walk (group of
 * row blocks, column block, row block). */
typedef struct {
    int col_block, row_block;
} pkk_pg_block;

static inline pkk_pg_block pkk_pg_item(const pkk_pg_args *g, long item, int row_blocks)
{
    const size_t group_items = (size_t)g->group * g->col_blocks;
    const int g0 = (int)((size_t)item / group_items) * g->group;
    const int in_group = row_blocks - g0 < g->group ? row_blocks - g0 : g->group;
    const size_t r = (size_t)item % group_items;
    return (pkk_pg_block){ (int)(r / (size_t)in_group), g0 + (int)(r % (size_t)in_group) };
}

/* Blocks [lo, hi) of C in the walk's order (group of row blocks, column
 * block, row block), k chunk by k chunk; wide: the AVX-512 register block,
 * 6 x 64. */
static inline __attribute__((always_inline)) void pkk_pg_range(long lo, long hi, const pkk_pg_args *g, int wide)
{
    const int nr = wide ? 16 * PKK_ZMM_NB : 16;
    const int row_blocks = pkk_pg_row_blocks(g->m);
    float *panel = pkk_pg_panel;
    for (int k0 = 0, kc; k0 < g->k; k0 += kc) {
        /* Chunks of PKK_PG_KC at most, never across a segment's end. */
        const int end = g->seg ? (k0 / g->seg + 1) * g->seg : g->k;
        kc = end - k0 < PKK_PG_KC ? end - k0 : PKK_PG_KC;
        const int first = k0 == 0, last = k0 + kc == g->k;
        const size_t rb_stride = (size_t)(g->seg ? g->seg : kc) * PKK_PG_MR;
        const float *a_chunk = g->seg ? g->a + (size_t)(k0 / g->seg) * row_blocks * rb_stride + (size_t)(k0 % g->seg) * PKK_PG_MR
                                      : g->a + (size_t)k0 * row_blocks * PKK_PG_MR;
        int panel_of = -1; /* the column block whose slice of this chunk the panel holds */
        for (long item = lo; item < hi; item++) {
            const pkk_pg_block block = pkk_pg_item(g, item, row_blocks);
            const int cb = block.col_block, rb = block.row_block;
            const int r0 = rb * PKK_PG_MR, c0 = cb * nr;
            const int rows = g->m - r0 < PKK_PG_MR ? g->m - r0 : PKK_PG_MR;
            const int cols = g->n - c0 < nr ? g->n - c0 : nr;
            const float *a = a_chunk + (size_t)rb * rb_stride;
            /* The next block's weights stream in while this one runs (the
             * range's last block prefetches its own, in cache already). */
            const float *next_a = a_chunk + (size_t)pkk_pg_item(g, item + 1 < hi ? item + 1 : item, row_blocks).row_block * rb_stride;
            if (wide && g->panels) { /* kept in panels, read in place: the weights
                                       * (swapped in as B, not prefetched; next_a is
                                       * then the pixels), or an im2col made so. */
                pkk_v16 acc[6 * PKK_ZMM_NB];
                pkk_block_zmm_any(kc, 6, (cols + 15) / 16, a, g->panels + ((size_t)cb * PKK_ZMM_NB * g->k + k0) * 16,
                                  (size_t)g->k * 16, next_a, acc);
                pkk_pg_store_v16(g, acc, rows, cols, r0, c0, first, last);
                continue;
            }
            if (panel_of != cb) { /* columns past n are zeros: B is never read past them */
                const float *b = g->b + (size_t)k0 * g->ldb + c0;
                for (int i = 0; i < kc; i++) {
                    const float *row = b + (size_t)i * g->ldb;
                    for (int h = 0; 16 * h < cols; h++) {
                        float *dst = panel + ((size_t)h * kc + i) * 16;
                        if (cols == nr) {
                            *(pkk_v8 *)dst = *(const pkk_v8u *)(row + 16 * h);
                            *(pkk_v8 *)(dst + 8) = *(const pkk_v8u *)(row + 16 * h + 8);
                        } else {
                            for (int j = 0; j < 16; j++) dst[j] = 16 * h + j < cols ? row[16 * h + j] : 0.0f;
                        }
                    }
                }
                panel_of = cb;
            }
            if (wide) {
                pkk_v16 acc[6 * PKK_ZMM_NB];
                pkk_block_zmm_any(kc, 6, (cols + 15) / 16, a, panel, (size_t)kc * 16, next_a, acc);
                pkk_pg_store_v16(g, acc, rows, cols, r0, c0, first, last);
                continue;
            }
            pkk_v8 acc[12];
            if (cols <= 8) pkk_block_6x8(kc, a, panel, next_a, acc);
            else pkk_block_6x16(kc, a, panel, next_a, acc);
            pkk_pg_store_v8(g, acc, rows, cols, r0, c0, first, last);
        }
    }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
static void pkk_pg_blocks(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    pkk_pg_range(lo, hi, args, 0);
}

PKK_AVX512 static void pkk_pg_blocks_avx512(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    pkk_pg_range(lo, hi, args, 1);
}

static void pkk_gemm_run(const float *a, int seg, int m, int n, int k, const float *b, size_t ldb,
                         const float *panels, float *c, size_t ldc, const float *bias, const float *residual, int relu)
{
    if (m <= 0 || n <= 0) return;
    const int wide = pkk_use_avx512(), nr = wide ? 16 * PKK_ZMM_NB : 16;
    const int row_blocks = pkk_pg_row_blocks(m), col_blocks = (n + nr - 1) / nr;
    int group = PKK_PG_A_BLOCK / (PKK_PG_KC * PKK_PG_MR);
    if (group > row_blocks) group = row_blocks;
    const pkk_pg_args g = { a, b, bias, residual, c, ldb, ldc, m, n, k, relu, seg, panels, col_blocks, group };
    if (k <= 0) { /* an empty sum: the epilogue alone */
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) {
                float v = bias ? bias[r] : 0.0f;
                if (residual) v += residual[(size_t)r * ldc + j];
                c[(size_t)r * ldc + j] = relu && v < 0.0f ? 0.0f : v;
            }
        return;
    }
    pkk_run((long)row_blocks * col_blocks, (size_t)m * n * k, wide ? pkk_pg_blocks_avx512 : pkk_pg_blocks, &g);
}

void pkk_gemm_packed(const float *a, int m, int n, int k, const float *b, size_t ldb, float *c, size_t ldc,
                     const float *bias, const float *residual, int relu)
{
    pkk_gemm_run(a, 0, m, n, k, b, ldb, NULL, c, ldc, bias, residual, relu);
}

void pkk_gemm_panels(const float *a, int m, int n, int k, const float *panels, float *c, size_t ldc)
{
    pkk_gemm_run(a, 0, m, n, k, NULL, 0, panels, c, ldc, NULL, NULL, 0);
}

void pkk_gemm_winograd_weights(const float *s, int cout, int n, int cin, const float *b, size_t ldb, float *c,
                               size_t ldc, const float *bias, const float *residual, int relu)
{
    pkk_gemm_run(s, cin, cout, n, 9 * cin, b, ldb, NULL, c, ldc, bias, residual, relu);
}
