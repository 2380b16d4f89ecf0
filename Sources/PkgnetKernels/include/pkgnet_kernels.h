/*
 * Internal numeric kernels of pkgnet (not part of the public C API: the
 * linker script exports only pkgnet_* symbols, so everything here is pkk_*).
 *
 * Activation layout: channel-major over a micro-batch of B cubes,
 * x[c][b][h][w], i.e. a [C][B*H*W] matrix. A convolution is then one GEMM
 * per column tile for the whole micro-batch (weights [Cout][Cin*k*k] times
 * im2col [Cin*k*k][B*Ho*Wo]), small 4x4 maps batch into wide GEMMs, and a
 * channel concatenation is two adjacent channel ranges of one buffer.
 */
#ifndef PKGNET_KERNELS_H
#define PKGNET_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error slot: the message of the last failure on this thread ---- */
void pkk_set_error(const char *message);
const char *pkk_last_error(void);

/* ---- runtime: BLAS, OpenMP, threads ---- */

/* Loads the BLAS once per process (thread-safe). Picks the OpenBLAS core type
 * from cpuid before loading, routes OpenBLAS's OpenMP calls to the LLVM libomp
 * that pkgnet uses. Returns 0, or -1 with the error slot set. */
int pkk_runtime_init(void);

/* Human-readable description of the CPU features, BLAS library and core type,
 * OpenMP runtime and default thread count. Static string. */
const char *pkk_system_info(void);

/* Whether the kernels may use their AVX-512 paths (the default, where the CPU
 * has them) or must keep to AVX2, which tests use to check both paths on one
 * machine. Process-wide. Returns 1 if the CPU and OS support AVX-512. */
int pkk_allow_avx512(int allow);

/* Number of threads used when the caller asks for 0 (CPUs available to the process). */
int pkk_default_threads(void);

/* Applies a thread count to the calling thread's OpenMP ICV, which the
 * kernels and (through pkk_sgemm's gate) the BLAS follow. Must be called by
 * every scoring call (omp_set_num_threads is per thread). */
void pkk_set_threads(int threads);

/* Runs fn(i, worker, ctx) for every i in [0, n) on up to `workers` OpenMP
 * threads, each taking the next i when it is free, worker = its index; the
 * kernels a task calls run on that one thread. Batch parallelism: each
 * worker owns its buffers, and no sum depends on how tasks are shared. */
typedef void (*pkk_task_fn)(long i, int worker, void *ctx);
void pkk_parallel_tasks(long n, int workers, pkk_task_fn fn, void *ctx);

/* Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C.
 * op(A) is M x K, op(B) is K x N. pkk_runtime_init must have succeeded. */
void pkk_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta,
               float *c, int ldc);

/* ---- convolution layers ---- */

/*
 * Weights rearranged once per layer and kept (weight_cache.c): a Winograd
 * transform, or a packing for pkk_gemm_packed. Made on a layer's first call
 * and shared by every thread that runs the layer; freeing NULL is a no-op.
 * One cache belongs to one weight array; it keeps up to two arrangements
 * of it (the GEMM's packing and a 3x3 convolution's transposed weights,
 * pkk_conv3x3_packed), each made on its first use.
 */
/*
 * A weight tensor as a model file stores it, read in place (weight_source.c):
 * `data` holds unaligned elements of `dtype`; element e of row r reads as
 * fp32, times row_scale[r] in double rounded once when row_scale is set (a
 * BatchNorm folded into the rows, one per output channel; NULL: unscaled).
 * The layers' weight arrangements read through it, so that converting,
 * folding and arranging a tensor is one pass from the file to the layout
 * the kernels read. A read that meets a stored NaN or infinity sets
 * `nonfinite` (any thread may set it).
 */
enum { PKK_DTYPE_F32 = 0, PKK_DTYPE_F16 = 1, PKK_DTYPE_BF16 = 2 };
typedef struct {
    const void *data;
    int dtype;
    const double *row_scale;
    int nonfinite;
} pkk_weight_source;
/* out[r * row_len + j] = row r's element j, for `rows` rows of row_len. */
void pkk_weight_source_read(pkk_weight_source *source, size_t rows, size_t row_len, float *out);

typedef struct pkk_weight_cache pkk_weight_cache;
pkk_weight_cache *pkk_weight_cache_new(void);
void pkk_weight_cache_free(pkk_weight_cache *cache);

/*
 * GEMM against packed weights (packed_gemm.c), for layers whose weights do
 * not change: C [m][n] (rows ldc apart) = act(A x B + bias [+ residual])
 *   A        [m][k], packed: pkk_packed_weights or pkk_pack_weights
 *   B        [k][n], rows ldb >= n apart
 *   bias     [m] or NULL; residual [m][n] (rows ldc apart) or NULL
 * OpenMP-parallel over 6 x 16 blocks of C (6 x 64 with AVX-512); every
 * element is summed in the same order whatever the thread count.
 */
size_t pkk_packed_weight_floats(int m, int k);
/* a = A packed, with A[i][j] = w[i * row_stride + j * col_stride]. */
void pkk_pack_weights(const float *w, int m, int k, size_t row_stride, size_t col_stride, float *a);
/* The packing of w kept in `cache` (made on first use); NULL if memory is
 * short, or if w is NULL and nothing is kept yet (w NULL: only look). */
const float *pkk_packed_weights(pkk_weight_cache *cache, const float *w, int m, int k, size_t row_stride,
                                size_t col_stride);
/* The same from a model file's tensor, A[i][j] = element i * row_stride +
 * j * col_stride (its row_scale, if set, scales A's row i). */
const float *pkk_packed_weights_from(pkk_weight_cache *cache, pkk_weight_source *w, int m, int k,
                                     size_t row_stride, size_t col_stride);
/* The same for a 3x3 convolution's weights arranged for Winograd (s, as
 * pkk_winograd_arrange_weights leaves them): A [cout][9 cin] in im2col
 * order. */
const float *pkk_packed_winograd_weights(pkk_weight_cache *cache, const float *s, int cout, int cin);
void pkk_gemm_packed(const float *a, int m, int n, int k, const float *b, size_t ldb, float *c, size_t ldc,
                     const float *bias, const float *residual, int relu);
/* The same with A [cout][9 cin] (columns in tap order: 9 segments of cin)
 * read from 3x3 weights as pkk_winograd_arrange_weights leaves them, which
 * in blocks of 6 rows (pkk_winograd_block_rows(cout) == 6) is the packed
 * layout segment by segment. */
void pkk_gemm_winograd_weights(const float *s, int cout, int n, int cin, const float *b, size_t ldb, float *c,
                               size_t ldc, const float *bias, const float *residual, int relu);

/* Floats of scratch a conv2d needs to process `cols` output columns per tile. */
size_t pkk_conv2d_scratch_floats(int cin, int groups, int kernel, int cols);

/*
 * y = act(conv(x, weight) + bias [+ residual])
 *   x        [cin][batch][h][w]
 *   weight   [cout][cin/groups][kernel][kernel] (BatchNorm already folded in)
 *   bias     [cout] or NULL
 *   residual [cout][batch][ho][wo] or NULL (added before the activation)
 *   y        [cout][batch][ho][wo], ho = (h + 2*pad - kernel)/stride + 1
 *   relu     nonzero: max(0, .)
 * scratch holds the im2col tile: the kernel processes as many output columns
 * per GEMM as fit into scratch_floats (at least one column must fit; a 1x1
 * stride-1 ungrouped conv needs none). OpenMP-parallel. `packed` (or NULL):
 * for ungrouped convolutions whose weights stay fixed, the cache of their
 * packing for pkk_gemm_packed, used instead of the BLAS. weight may be NULL
 * once `packed` holds the packing (models pack at load and keep only that).
 * Returns 1, or 0 (y untouched) when weight is NULL and the packed path
 * cannot run (no packing in `packed`, or scratch below one column).
 */
int pkk_conv2d(const float *x, int cin, int batch, int h, int w,
                const float *weight, pkk_weight_cache *packed, const float *bias, int cout,
                int kernel, int stride, int pad, int groups,
                const float *residual, int relu,
                float *y, float *scratch, size_t scratch_floats);

/*
 * Winograd F(4x4, 3x3) for 3x3 stride-1 pad-1 ungrouped convolutions
 * (winograd.c): same inputs and output as pkk_conv2d with kernel 3, stride 1,
 * pad 1, groups 1, but the weights arranged by pkk_winograd_arrange_weights
 * (s: pkk_winograd_weight_floats, the 3x3 weights' size and a few zero rows);
 * a quarter of the multiplications. The weights' transform (36 x cout x cin
 * floats, four times as much) is made per call, by each thread for its
 * transform points in chunks of output channels, in the scratch. The tiles
 * (4x4 outputs) go in chunks as large as the scratch holds;
 * pkk_winograd_scratch_floats is the scratch for chunks of `tiles` tiles
 * (rounded up to 16; 0: the whole batch) on the calling thread's OpenMP
 * thread count. With AVX-512, 32-wide maps of a height divisible by 8 and
 * 16-wide ones of a height divisible by 16 run whole chunks of 16 to 64
 * tiles per thread instead, where the scratch holds the weights' whole
 * transform and each thread's chunk (else the chunks above). Returns 1 when y is written, 0 when it declined (scratch
 * below one chunk of 16 tiles). The scratch needs no alignment beyond a
 * float's. y may be the residual itself (each element is read before it is
 * written: y += conv).
 */
size_t pkk_winograd_weight_floats(int cin, int cout);
/* Output channels per block of the arranged weights (4 or 6). */
int pkk_winograd_block_rows(int cout);
/* s[k][cb][ci][r] = weight[cb * block rows + r][ci][k] for the taps
 * k = 3 * row + column (0 past cout). */
void pkk_winograd_arrange_weights(const float *weight, int cin, int cout, float *s);
/* The same from a model file's tensor [cout][cin][3][3]. */
void pkk_winograd_arrange_source(pkk_weight_source *weight, int cin, int cout, float *s);
/* u[p][cb - row0 / block rows][ci][r] = (G g G^T)[p] for output channel
 * cb * block rows + r in [row0, row1) (whole blocks), from s, with p =
 * 6 * row + column of the 6x6 transform; points (row1 - row0) * cin apart. */
void pkk_winograd_transform_weights(const float *s, int cin, int cout, int row0, int row1, float *u);
size_t pkk_winograd_scratch_floats(int cin, int cout, int batch, int h, int w, int tiles);
/* Fewest 4x4 output tiles per call for which Winograd beats pkk_conv3x3_packed
 * on this CPU (callers choose; the kernel takes any count). */
int pkk_winograd_min_tiles(void);
int pkk_conv3x3_winograd(const float *x, int cin, int batch, int h, int w, const float *s, const float *bias,
                         int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats);
/* The gradient of that convolution with respect to its weights, for
 * training: dweight [cout][cin][3][3] += the sum over the batch of dy's
 * 4x4 tiles against x's 6x6 patches, as G^T [sum of (A dy A^T) . (B^T x B)] G
 * (the three transforms' adjoints); x [cin][batch][h][w], dy the same with
 * cout channels. Scratch as pkk_winograd_dweight_scratch_floats says for
 * chunks of `tiles` tiles; the 36 x cout x cin sums are allocated. Returns 1
 * when dweight is updated, 0 when it declined (fewer than 5 input or 4
 * output channels, scratch below one chunk of 16 tiles, or no memory). */
size_t pkk_winograd_dweight_scratch_floats(int cin, int cout, int batch, int h, int w, int tiles);
int pkk_conv3x3_winograd_dweight(const float *x, int cin, int batch, int h, int w, const float *dy, int cout,
                                 float *dweight, float *scratch, size_t scratch_floats);
/* The same convolution from the same arranged weights as an im2col GEMM
 * (for the few tiles where Winograd is slower): on s itself where its
 * blocks are 6 rows, the GEMM's own layout; blocks of 4 (16 and 32 output
 * channels) are packed again, once, into `packed`. With AVX-512, at most 16
 * pixels in all and weights of at most 1 MiB, the GEMM with the roles
 * swapped (output channels in the vectors) against the weights transposed
 * once into `packed`, where the scratch holds its packed pixels and output.
 * Returns 0 (y untouched) if memory for a packing is short or the scratch
 * holds less than one column (9 cin floats). */
int pkk_conv3x3_packed(const float *x, int cin, int batch, int h, int w, const float *s, pkk_weight_cache *packed,
                       const float *bias, int cout, const float *residual, int relu, float *y, float *scratch,
                       size_t scratch_floats);

/*
 * The same convolution, from the same arranged weights, as Winograd F(4, 3)
 * down the columns and direct across them (winograd_1d.c): twice the 2-D
 * kernel's products, but light transforms and no per-call transform of
 * the weights, which makes it the faster choice below 16 images on 32-wide
 * maps with fewer than 64 output channels and on 16-wide ones with up to
 * 64, and on a single 16x16 image.
 * pkk_conv3x3_winograd_1d_takes: whether it runs the shape on this CPU
 * (AVX-512; those batches, 32-wide maps of a height divisible by 8,
 * 16-wide ones of a height divisible by 16). The scratch holds the transformed weights and, per thread, the
 * transformed rows of a group of tiles and their products:
 * pkk_conv3x3_winograd_1d_scratch_floats for `threads` threads (1: the
 * least it runs with). Returns 1 when y is written, 0 when it declined
 * (shape not taken, or scratch below one thread's). y may be the residual.
 */
int pkk_conv3x3_winograd_1d_takes(int cin, int cout, int batch, int h, int w);
size_t pkk_conv3x3_winograd_1d_scratch_floats(int cin, int cout, int h, int w, int threads);
int pkk_conv3x3_winograd_1d(const float *x, int cin, int batch, int h, int w, const float *s, const float *bias,
                            int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats);

/* Floats of scratch a conv_transpose2d needs for `cols` input columns per tile. */
size_t pkk_conv_transpose2d_scratch_floats(int cout, int kernel, int cols);

/*
 * PyTorch ConvTranspose2d (groups 1, dilation 1):
 *   x      [cin][batch][h][w]
 *   weight [cin][cout][kernel][kernel] (PyTorch layout)
 *   bias   [cout] or NULL
 *   y      [cout][batch][ho][wo], ho = (h-1)*stride - 2*pad + kernel + output_padding
 * Computed as a GEMM (weight^T times x) then a col2im scatter-add; the GEMM
 * uses the packed weights in `packed` when it is not NULL (fixed weights),
 * and weight may then be NULL once `packed` holds them. Returns 1, or 0 (y
 * untouched) when weight is NULL and `packed` holds no packing.
 */
int pkk_conv_transpose2d(const float *x, int cin, int batch, int h, int w,
                          const float *weight, pkk_weight_cache *packed, const float *bias, int cout,
                          int kernel, int stride, int pad, int output_padding,
                          float *y, float *scratch, size_t scratch_floats);

/* Max pooling with implicit -inf padding (PyTorch MaxPool2d, floor mode):
 *   x [c][batch][h][w] -> y [c][batch][ho][wo], ho = (h + 2*pad - kernel)/stride + 1 */
void pkk_maxpool2d(const float *x, int c, int batch, int h, int w,
                   int kernel, int stride, int pad, float *y);

/* ---- inputs ---- */

/*
 * Cube frames to the channel-major layout, scaled to [0,1]:
 *   cubes uint8 [n][5][32][32][channels] (HWC)
 *   dst   [frames*channels][n][32][32], channel index f*channels + c holds
 *         frame first_frame + f, colour c.
 */
void pkk_unpack_u8_cubes(const uint8_t *cubes, int n, int channels,
                         int first_frame, int frames, float *dst);

/* As pkk_unpack_u8_cubes for float cubes [n][5*channels][32][32] (already in [0,1]). */
void pkk_unpack_f32_cubes(const float *cubes, int n, int channels,
                          int first_frame, int frames, float *dst);

/* Index of the first non-finite value among n floats, or -1. */
long pkk_first_nonfinite(const float *x, size_t n);

/*
 * Teacher input from the target frame:
 *   src [src_channels][plane]           (plane = batch*32*32)
 *   dst [3][plane], dst[i] = (src[source_channel[i]] - mean[i]) / std[i]
 */
void pkk_teacher_input(const float *src, size_t plane, const int source_channel[3],
                       const float mean[3], const float std[3], float *dst);

/* ---- scores ---- */

/*
 * Prediction error per cube:
 *   pred, target [c][batch][hw]
 *   error[b] = mean over c and hw of (pred - target)^2
 *   map[b][hw] (optional, may be NULL) = mean over c of (pred - target)^2
 */
void pkk_prediction_error(const float *pred, const float *target, int c, int batch, int hw,
                          float *error, float *map);

/*
 * Feature inconsistency per cube:
 *   s, t [c][batch][hw] (student and teacher features)
 *   cos at a position = <s,t> / (max(|s|, 1e-8) * max(|t|, 1e-8)) along channels
 *   score[b] = mean over hw of (1 - cos); map[b][hw] (optional) = 1 - cos
 */
void pkk_inconsistency(const float *s, const float *t, int c, int batch, int hw,
                       float *score, float *map);

#ifdef __cplusplus
}
#endif

#endif /* PKGNET_KERNELS_H */
