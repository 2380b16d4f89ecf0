/*
 * 3x3 stride-1 pad-1 convolution (AVX-512) on 32- and 16-wide maps as
 * Winograd F(4, 3) down the columns and direct across them.
 *
 * The 2-D F(4x4, 3x3) kernel (winograd.c) does a quarter of the direct
 * convolution's products, but its transforms gather each tile's 6x6 patch
 * across rows and transpose, and on narrow layers (16 output channels on
 * 32x32 maps: the edge students' outer layers, the CIFAR ResNet teachers'
 * first stage) they cost more than the products they save. In one
 * dimension nothing is gathered. For a fixed column tap kx, output rows
 * 4t..4t+3 of a column are the 1-D convolution of input rows 4t-1..4t+4
 * with the column of weights g[0..2][kx]; F(4, 3) computes them as
 * A^T [(G g) . (B^T d)], 6 products instead of 12. A vector of 16 columns
 * goes through the transforms at once, whole rows in, whole rows out:
 *     y[4t + j][c] = sum_p A^T[j][p] sum_{ci,kx} U[p][ci][kx] V[p][ci][c + kx - 1]
 * with V[p] = (B^T d)[p] over all columns. Since B^T works on each column
 * alone, the column shift kx - 1 moves to the products, which read V one
 * column left or right (masked loads supply the zero padding at the rows'
 * ends): one input transform per input channel, not three.
 *
 * Work items are groups of 4 vectors of output rows (2 tiles of 4 rows of a
 * 32-wide map, 4 tiles of a 16-wide one) of one image, and, where a call
 * has fewer groups than threads, a share of the output channels. Per item:
 * the input transform reads the image's rows straight from x (the rows
 * above and below the map are zeros) into V, in the thread's own buffer
 * (256 bytes per point and input channel: L1 for up to 128); the products,
 * per point p, are a register block of mr = 4 or 6 output channels (the
 * arrangement's blocks) x 4 vectors with the weights U[p] (per input
 * channel and tap, mr weight broadcasts, 4 loads, 4 mr FMAs) into M; the
 * output transform writes y with bias, residual and ReLU. 18 products per
 * output and channel pair against the 2-D kernel's 9 and the direct
 * convolution's 36, at a larger share of the FMA peak than either.
 *
 * U = G g along the kernel's rows comes from the Winograd arrangement the
 * model keeps (pkk_winograd_arrange_weights), transformed per call into
 * the scratch (element-wise over the arrangement's contiguous runs; twice
 * the 3x3 weights, read once per group, while the whole model keeps one
 * copy of its weights).
 *
 * Numerics: the transforms of winograd.c along one axis instead of two, so
 * values grow by their norms once, not twice: each output is within a few
 * ulps of its magnitude of the direct definition. Each output is summed by
 * one thread in a fixed order (tap column, then input channel), whatever
 * the thread count or the share of channels: the same bits on any thread
 * count.
 */
#include "pkgnet_kernels.h"
#include "pkk_internal.h"
#include "pkk_microkernel.h"
#include "pkk_winograd.h"

#include <immintrin.h>
#include <stdint.h>

#define PKK_W1_VECS 4   /* 16-float vectors of output rows per group */
#define PKK_W1_POINTS 6 /* F(4, 3): 6 products for 4 outputs */

/* Measured against the 2-D kernel on the students' shapes, each layer
 * alone on 2 threads: its chunks per thread (16- and 32-wide maps)
 * win from 16 images up, at any width (0.72-0.99x this kernel's time at
 * 32 and 128 images, 0.77-0.91x for 16-wide maps at 16); below 16 images
 * this wins or draws on narrow layers (16 to 64 output channels: 0.9-1.3x
 * at 1 to 4 images) and on a single 16x16 image at any width, which is one
 * block of 16 tiles there (2x at 128 channels); from 64 output channels a
 * 32-wide map goes to the 2-D kernel at any batch (0.92-0.94x at one). */
int pkk_conv3x3_winograd_1d_takes(int cin, int cout, int batch, int h, int w)
{
    if (!pkk_use_avx512() || cin <= 0 || cout <= 0 || batch <= 0 || h <= 0) return 0;
    if (w == 16 && h % 16 == 0 && batch == 1) return 1;
    return batch < 16 && ((w == 32 && h % 8 == 0 && cout < 64) || (w == 16 && h % 16 == 0 && cout <= 64));
}

/* Floats of V, [6][cin][4][16] (a group's 4 vectors per point and input
 * channel), and of M, [6][cout rows][4][16]. */
static size_t pkk_w1_v_floats(int cin) { return (size_t)PKK_W1_POINTS * (size_t)cin * PKK_W1_VECS * 16; }
/* Output channels rounded up to whole register blocks of the arrangement's
 * 4 or 6 rows (pkk_winograd_block_rows). */
static size_t pkk_w1_rows(int cout)
{
    const int mr = pkk_winograd_block_rows(cout);
    return (size_t)(cout + mr - 1) / mr * mr;
}
static size_t pkk_w1_m_floats(int cout) { return PKK_W1_POINTS * pkk_w1_rows(cout) * PKK_W1_VECS * 16; }
static size_t pkk_w1_u_floats(int cin, int cout)
{
    return (PKK_W1_POINTS * pkk_w1_rows(cout) * 3 * (size_t)cin + 15) / 16 * 16;
}

size_t pkk_conv3x3_winograd_1d_scratch_floats(int cin, int cout, int h, int w, int threads)
{
    (void)h;
    return pkk_w1_u_floats(cin, cout) + (size_t)threads * (pkk_w1_v_floats(cin) + pkk_w1_m_floats(cout)) + 15;
}

typedef struct {
    const float *x, *s, *bias, *residual; /* s: the weights as pkk_winograd_arrange_weights leaves them */
    float *u; /* [6][cout / mr][3][cin][mr]: per point and channel block, kx, then input channel */
    float *y, *buffers;
    int cin, cout, batch, h, w, relu, mr; /* mr: output channels per block, 4 or 6 */
    int groups, parts; /* groups per image; output-channel shares per group */
    long items, slots;
} pkk_w1_args;

/* Item (image b, group g, channel blocks [cb0, cb1)), with `per_row`
 * vectors per row and blocks of `mr` output channels (constants where
 * inlined, and with them the row lengths and the register block). */
PKK_AVX512 static inline __attribute__((always_inline)) void
pkk_w1_item(const pkk_w1_args *a, float *v, float *m, int b, int g, int cb0, int cb1, int per_row, int mr)
{
    const int w = 16 * per_row, h = a->h, cin = a->cin, tiles = PKK_W1_VECS / per_row;
    const size_t vpoint = (size_t)cin * PKK_W1_VECS * 16;
    const size_t in_plane = (size_t)h * w;
    const int top = 4 * tiles * g - 1; /* input row of the group's first tap row */
    for (int ci = 0; ci < cin; ci++) {
        const float *plane = a->x + ((size_t)ci * a->batch + b) * in_plane;
        for (int q = 0; q < PKK_W1_VECS; q++) {
            const int row = top + 4 * (q / per_row), col = 16 * (q % per_row);
            pkk_v16 d[6];
            for (int j = 0; j < 6; j++)
                d[j] = row + j >= 0 && row + j < h ? *(const pkk_v16u *)(plane + (size_t)(row + j) * w + col)
                                                   : (pkk_v16){ 0 };
            float *out = v + ((size_t)ci * PKK_W1_VECS + q) * 16;
            pkk_v16 t[6];
            PKK_WG_BT(pkk_v16, d, 1, t, 1);
            for (int p = 0; p < PKK_W1_POINTS; p++) *(pkk_v16 *)(out + p * vpoint) = t[p];
        }
    }
    const int cblocks = (a->cout + mr - 1) / mr;
    const size_t mpoint = (size_t)cblocks * mr * PKK_W1_VECS * 16;
    for (int p = 0; p < PKK_W1_POINTS; p++)
        for (int cb = cb0; cb < cb1; cb++) {
            pkk_v16 acc[6][PKK_W1_VECS];
            for (int r = 0; r < mr; r++)
                for (int q = 0; q < PKK_W1_VECS; q++) acc[r][q] = (pkk_v16){ 0 };
            const float *uc = a->u + ((size_t)p * cblocks + cb) * 3 * cin * mr;
            for (int kx = 0; kx < 3; kx++) {
                /* Columns kx - 1 of the vectors; the columns left of a row's
                 * first one and right of its last are the zero padding:
                 * lanes the masked loads leave zero. */
                __mmask16 mask[PKK_W1_VECS];
                for (int q = 0; q < PKK_W1_VECS; q++)
                    mask[q] = kx == 0 && q % per_row == 0               ? 0xfffe
                              : kx == 2 && q % per_row == per_row - 1 ? 0x7fff
                                                                      : 0xffff;
                const float *vc = v + p * vpoint + kx - 1;
                for (int ci = 0; ci < cin; ci++, vc += PKK_W1_VECS * 16, uc += mr) {
                    pkk_v16 xv[PKK_W1_VECS];
                    for (int q = 0; q < PKK_W1_VECS; q++) xv[q] = (pkk_v16)_mm512_maskz_loadu_ps(mask[q], vc + 16 * q);
                    for (int r = 0; r < mr; r++) {
                        const float ur = uc[r];
                        for (int q = 0; q < PKK_W1_VECS; q++) acc[r][q] += ur * xv[q];
                    }
                }
            }
            float *mc = m + p * mpoint + (size_t)cb * mr * PKK_W1_VECS * 16;
            for (int r = 0; r < mr; r++)
                for (int q = 0; q < PKK_W1_VECS; q++) *(pkk_v16 *)(mc + (r * PKK_W1_VECS + q) * 16) = acc[r][q];
        }
    const size_t out_plane = (size_t)h * w;
    const int co1 = mr * cb1 < a->cout ? mr * cb1 : a->cout;
    for (int co = mr * cb0; co < co1; co++) {
        const float bias = a->bias ? a->bias[co] : 0.0f;
        for (int q = 0; q < PKK_W1_VECS; q++) {
            pkk_v16 o[4];
            const pkk_v16 *points = (const pkk_v16 *)(m + ((size_t)co * PKK_W1_VECS + q) * 16);
            PKK_WG_AT(pkk_v16, points, (ptrdiff_t)(mpoint / 16), o, 1);
            const size_t at = ((size_t)co * a->batch + b) * out_plane + (size_t)(4 * (tiles * g + q / per_row)) * w +
                              16 * (q % per_row);
            for (int j = 0; j < 4; j++) {
                pkk_v16 value = o[j] + bias;
                if (a->residual) value += *(const pkk_v16u *)(a->residual + at + (size_t)j * w);
                if (a->relu) value = __builtin_elementwise_max(value, (pkk_v16){ 0 });
                *(pkk_v16u *)(a->y + at + (size_t)j * w) = value;
            }
        }
    }
}

/* Slots [lo, hi): slot j takes items [j items / slots, (j + 1) items /
 * slots) in order (image, group, share), through slot lo's buffers (a
 * thread runs its slots one after another). */
PKK_AVX512 static void pkk_w1_slots(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_w1_args *a = args;
    const size_t v_floats = pkk_w1_v_floats(a->cin);
    float *v = a->buffers + (size_t)lo * (v_floats + pkk_w1_m_floats(a->cout)), *m = v + v_floats;
    const int cblocks = (a->cout + a->mr - 1) / a->mr;
    for (long i = lo * a->items / a->slots; i < hi * a->items / a->slots; i++) {
        const int part = (int)(i % a->parts), g = (int)(i / a->parts % a->groups), b = (int)(i / a->parts / a->groups);
        const int cb0 = part * cblocks / a->parts, cb1 = (part + 1) * cblocks / a->parts;
        if (a->mr == 4) {
            if (a->w == 32) pkk_w1_item(a, v, m, b, g, cb0, cb1, 2, 4);
            else pkk_w1_item(a, v, m, b, g, cb0, cb1, 1, 4);
        } else {
            if (a->w == 32) pkk_w1_item(a, v, m, b, g, cb0, cb1, 2, 6);
            else pkk_w1_item(a, v, m, b, g, cb0, cb1, 1, 6);
        }
    }
}

/* U[p][cb][kx][ci][r] = (G g)[p] for the column of weights g[ky] =
 * S[3 ky + kx][cb][ci][r], for the channel blocks cb in [lo, hi): per
 * (cb, kx), element-wise over S's contiguous run of mr cin weights. */
PKK_AVX512 static void pkk_w1_weight_blocks(long lo, long hi, int thread, const void *args)
{
    (void)thread;
    const pkk_w1_args *a = args;
    const int cblocks = (a->cout + a->mr - 1) / a->mr;
    const size_t run = (size_t)a->cin * a->mr, tap_stride = (size_t)cblocks * run;
    const size_t point_stride = (size_t)cblocks * 3 * run;
    for (long cb = lo; cb < hi; cb++)
        for (int kx = 0; kx < 3; kx++) {
            const float *g = a->s + (size_t)kx * tap_stride + (size_t)cb * run;
            float *out = a->u + ((size_t)cb * 3 + kx) * run;
            for (size_t n = 0; n < run; n++) PKK_WG_G(float, g + n, 3 * tap_stride, out + n, point_stride);
        }
}

int pkk_conv3x3_winograd_1d(const float *x, int cin, int batch, int h, int w, const float *s, const float *bias,
                            int cout, const float *residual, int relu, float *y, float *scratch, size_t scratch_floats)
{
    if (!pkk_conv3x3_winograd_1d_takes(cin, cout, batch, h, w)) return 0;
    if (((uintptr_t)scratch & 3) != 0 || scratch_floats < pkk_conv3x3_winograd_1d_scratch_floats(cin, cout, h, w, 1))
        return 0;
    const int mr = pkk_winograd_block_rows(cout), groups = h / (4 * (PKK_W1_VECS / (w / 16)));
    const int cblocks = (cout + mr - 1) / mr;
    /* Shares of the output channels where the groups are fewer than the
     * threads (a single 16x16 image is one group). */
    const size_t work = (size_t)batch * h * w * 9 * (size_t)cin * cblocks; /* direct multiply-adds / mr */
    const int threads = pkk_run_threads((long)batch * groups * cblocks, work);
    int parts = (threads + batch * groups - 1) / (batch * groups);
    if (parts > cblocks) parts = cblocks;
    const long items = (long)batch * groups * parts;
    long slots = pkk_run_threads(items, work);
    const size_t u_floats = pkk_w1_u_floats(cin, cout), per_slot = pkk_w1_v_floats(cin) + pkk_w1_m_floats(cout);
    const size_t fit = (scratch_floats - 15 - u_floats) / per_slot;
    if ((size_t)slots > fit) slots = (long)fit;
    float *u = scratch + ((64 - ((uintptr_t)scratch & 63)) & 63) / sizeof(float);
    const pkk_w1_args a = { x, s, bias, residual, u, y, u + u_floats, cin, cout, batch, h, w, relu, mr, groups, parts,
                            items, slots };
    pkk_run(cblocks, (size_t)cblocks * 3 * cin * mr * 16, pkk_w1_weight_blocks, &a);
    pkk_run(slots, work, pkk_w1_slots, &a);
    return 1;
}
