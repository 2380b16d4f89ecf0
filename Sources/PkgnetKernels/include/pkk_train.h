/*
 * Training kernels of pkgnet: backward passes, losses and the optimizer, in the
 * forward kernels' channel-major layout x[c][b][h][w] = a [C][B*H*W] matrix
 * (see pkgnet_kernels.h). Internal like the forward kernels (pkk_*, not
 * exported from libpkgnet.so).
 *
 * Conventions shared by every function here:
 *   - Gradients of inputs (dx) are overwritten when `accumulate` is 0 and
 *     added to when it is 1: a tensor read by two layers (a U-Net skip that
 *     feeds both the next encoder stage and a concatenation, a distilled
 *     feature that also feeds the decoder) sums its gradients in place.
 *     A concatenation needs no kernel: its gradient buffer has the same two
 *     adjacent channel ranges as its activation buffer.
 *   - Gradients of parameters (dweight, dbias, dgamma, dbeta) are always
 *     added to (zero them at the start of a step; micro-batches of one step
 *     then accumulate naturally).
 *   - Any gradient output may be NULL to skip computing it.
 *   - The same thread count gives the same bits: every reduction is split
 *     into pieces fixed by the problem, the scratch size and the thread
 *     count, each summed sequentially, and the pieces are combined in index
 *     order. Per-channel and loss sums are in double and split by channel or
 *     fixed-size chunks only; the convolution weight gradients are summed per
 *     thread (tiles of whole images, see train_conv.c), so another thread
 *     count rounds them differently.
 * The convolutions here are ungrouped (groups 1), as in the students.
 */
#ifndef PKK_TRAIN_H
#define PKK_TRAIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution ---- */

/* Floats of scratch pkk_conv2d_backward needs for `cols` output columns per
 * tile (cin*kernel*kernel*cols; a 1x1 stride-1 pad-0 conv needs none). */
size_t pkk_conv2d_backward_scratch_floats(int cin, int kernel, int cols);

/*
 * Backward of y = conv2d(x, weight) + bias (pkk_conv2d with groups 1, no
 * residual, no activation):
 *   x       [cin][batch][h][w]          forward input
 *   weight  [cout][cin][kernel][kernel]
 *   dy      [cout][batch][ho][wo]       gradient of y
 *   dx      [cin][batch][h][w]          = conv2d^T(dy)   (accumulate: see above)
 *   dweight [cout][cin][kernel][kernel] += dy x im2col(x)^T
 *   dbias   [cout]                      += sum of dy over batch*ho*wo
 * Per tile of whole images: im2col(x) -> dweight GEMM, then W^T dy -> col2im
 * into dx, reusing the same scratch. 3x3 same convolutions take Winograd
 * where the scratch holds a chunk: dx with 8 or more output channels,
 * dweight with 8 or more input and output channels
 * (pkk_conv3x3_winograd_dweight). dx must not alias x or dy.
 * Returns 0, or -1 (error slot set, nothing written) when the scratch holds
 * not one image's im2col (cin*kernel*kernel*ho*wo floats; each thread uses
 * such a slice, so threads x that much lets all threads work) or partial
 * sums cannot be allocated.
 */
int pkk_conv2d_backward(const float *x, int cin, int batch, int h, int w,
                        const float *weight, int cout, int kernel, int stride, int pad,
                        const float *dy, float *dx, int accumulate,
                        float *dweight, float *dbias,
                        float *scratch, size_t scratch_floats);

/* Floats of scratch pkk_conv_transpose2d_backward needs for `cols` input
 * columns per tile (cout*kernel*kernel*cols). */
size_t pkk_conv_transpose2d_backward_scratch_floats(int cout, int kernel, int cols);

/*
 * Backward of PyTorch ConvTranspose2d (pkk_conv_transpose2d, groups 1):
 *   x       [cin][batch][h][w]          forward input
 *   weight  [cin][cout][kernel][kernel]
 *   dy      [cout][batch][ho][wo],  ho = (h-1)*stride - 2*pad + kernel + output_padding
 *   dx      [cin][batch][h][w]          = conv2d(dy, weight, stride, pad): the
 *           transposed convolution is the adjoint of that strided convolution
 *   dweight [cin][cout][kernel][kernel] += x im2col(dy)^T
 *   dbias   [cout]                      += sum of dy
 * Per tile of whole images one im2col of dy serves both GEMMs.
 * output_padding must be smaller than stride (as PyTorch requires).
 * Returns 0, or -1 (error slot set, nothing written) when the scratch holds
 * not one image's im2col (cout*kernel*kernel*h*w floats) or partial sums
 * cannot be allocated.
 */
int pkk_conv_transpose2d_backward(const float *x, int cin, int batch, int h, int w,
                                  const float *weight, int cout, int kernel, int stride,
                                  int pad, int output_padding,
                                  const float *dy, float *dx, int accumulate,
                                  float *dweight, float *dbias,
                                  float *scratch, size_t scratch_floats);

/* ---- BatchNorm (over channel-major [c][n], n = batch*h*w) ---- */

/*
 * Fixed statistics (PyTorch eval mode, the published training):
 *   y = gamma * (x - mean) / sqrt(var + eps) + beta, then max(y, 0) if relu
 * mean/var are the running statistics (NULL means 0 / 1). y may alias x.
 */
void pkk_batchnorm_affine_forward(const float *x, int c, size_t n,
                                  const float *gamma, const float *beta,
                                  const float *mean, const float *var, float eps, int relu, float *y);

/* Backward of the above: dx = dy * gamma / sqrt(var + eps);
 * dgamma += sum dy * (x - mean)/sqrt(var + eps); dbeta += sum dy.
 * With relu_y (the output of a ReLU after the BatchNorm; NULL: none), dy is
 * first masked by relu_y > 0, in the same pass (pkk_relu_backward's rule).
 * dx may alias dy. */
void pkk_batchnorm_affine_backward(const float *x, const float *relu_y, const float *dy, int c, size_t n,
                                   const float *gamma, const float *mean, const float *var,
                                   float eps, float *dx, int accumulate,
                                   float *dgamma, float *dbeta);

/*
 * Batch statistics (PyTorch train mode): per channel the mean and biased
 * variance over the n values normalise x; the running statistics (either may
 * be NULL) move by `momentum` toward the batch mean and the unbiased variance
 * (var * n / (n - 1)), as PyTorch does:
 *   running = (1 - momentum) * running + momentum * batch_stat
 * save_mean / save_invstd [c] keep mean and 1/sqrt(var + eps) for the
 * backward. y may alias x (then the backward needs a copy of x).
 */
void pkk_batchnorm_batch_forward(const float *x, int c, size_t n,
                                 const float *gamma, const float *beta, float eps,
                                 float momentum, float *running_mean, float *running_var,
                                 float *save_mean, float *save_invstd, float *y);

/* Backward through the batch statistics, with xhat = (x - mean) * invstd:
 *   dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
 *   dgamma += sum dy * xhat; dbeta += sum dy.  dx may alias dy. */
void pkk_batchnorm_batch_backward(const float *x, const float *dy, int c, size_t n,
                                  const float *gamma, const float *save_mean,
                                  const float *save_invstd, float *dx, int accumulate,
                                  float *dgamma, float *dbeta);

/* ---- element-wise and pooling ---- */

/* y = max(x, 0); y may alias x. */
void pkk_relu_forward(const float *x, size_t n, float *y);

/* dx = y > 0 ? dy : 0 (y is the ReLU output, PyTorch's threshold_backward);
 * dx may alias dy. */
void pkk_relu_backward(const float *y, const float *dy, size_t n, float *dx, int accumulate);

/* dst += src (a gradient reaching a tensor along a second path). */
void pkk_add_inplace(float *dst, const float *src, size_t n);

/*
 * Backward of pkk_maxpool2d: each output's gradient goes to its window's
 * argmax, found again from x with PyTorch's rule: windows are scanned in
 * row-major order, the first strict maximum wins (ties keep the earliest),
 * a NaN takes over; a window of only -inf picks its first element.
 *   x  [c][batch][h][w], dy [c][batch][ho][wo], dx [c][batch][h][w]
 */
void pkk_maxpool2d_backward(const float *x, int c, int batch, int h, int w,
                            int kernel, int stride, int pad, const float *dy,
                            float *dx, int accumulate);

/* ---- losses ---- each returns the (unweighted) loss and, if grad is not
 * NULL, writes or adds `weight` * dloss/dpred into it. ---- */

/* mean over n elements of (pred - target)^2. */
double pkk_mse_loss(const float *pred, const float *target, size_t n,
                    float weight, float *grad, int accumulate);

/*
 * The gradient loss, pred and target [c][batch][h][w] (c colour channels):
 *   dX[b][i][j] = sum_c X[c][b][i][j] - X[c][b][i][j-1], X[..][-1] = 0
 *   dY[b][i][j] likewise along rows
 *   published (paper_form 0): mean over batch*h*w of
 *       |dX(t) - dX(p)|^power + |dY(t) - dY(p)|^power
 *   paper     (paper_form 1): the same with | |dX(t)| - |dX(p)| | and
 *       | |dY(t)| - |dY(p)| |
 * The subgradient of |.| at 0 is 0, as in PyTorch.
 */
double pkk_gradient_loss(const float *pred, const float *target, int c, int batch,
                         int h, int w, double power, int paper_form,
                         float weight, float *grad, int accumulate);

/*
 * The distillation loss of one feature pair, s (student) and t (teacher)
 * [c][batch][hw]: mean over batch*hw positions of 1 - cos(s, t) along
 * channels, with the cosine of pkk_inconsistency:
 *   cos = <s,t> / (max(|s|, 1e-8) * max(|t|, 1e-8))
 * grad is with respect to s only (the teacher is frozen).
 */
double pkk_cosine_loss(const float *s, const float *t, int c, int batch, int hw,
                       float weight, float *grad, int accumulate);

/* ---- optimizer ---- */

/*
 * One Adam step as torch.optim.Adam (no weight decay, no amsgrad), step t
 * counted from 1:
 *   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
 *   p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)
 * The hyperparameters are doubles, like PyTorch's Python floats: 1 - beta2
 * rounded to float is 0.001f, while 1 - (float)0.999 is off by 1.3e-5.
 */
void pkk_adam_step(float *param, const float *grad, float *m, float *v, size_t n,
                   long step, double lr, double beta1, double beta2, double eps);

#ifdef __cplusplus
}
#endif

#endif /* PKK_TRAIN_H */
