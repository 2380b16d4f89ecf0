/*
 * Teacher-network kernels beyond the convolutions of pkgnet_kernels.h: the
 * pieces the CIFAR ResNets and EfficientNet-Lite need. Same channel-major
 * layout x[c][b][h][w]; internal (pkk_*), not exported from libpkgnet.so.
 */
#ifndef PKK_TEACHER_H
#define PKK_TEACHER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Zero padding with possibly unequal sides, for TensorFlow "same" padding
 * (a stride-2 conv on an even side pads one more row below than above):
 *   x [c][batch][h][w] -> y [c][batch][h + top + bottom][w + left + right]
 * y must not alias x.
 */
void pkk_pad2d(const float *x, int c, int batch, int h, int w,
               int top, int bottom, int left, int right, float *y);

/* x = min(max(x, lo), hi) in place, element-wise over n floats (ReLU6 is
 * lo 0, hi 6). NaN stays NaN. */
void pkk_clamp(float *x, size_t n, float lo, float hi);

/*
 * The "option A" shortcut of the CIFAR ResNets: every second row and column,
 * zero-padded with pad_channels channels on each side of the channel axis:
 *   x [cin][batch][h][w] -> y [cin + 2*pad_channels][batch][(h+1)/2][(w+1)/2]
 *   y[pad_channels + c][b][i][j] = x[c][b][2i][2j], the other channels 0.
 * y must not alias x.
 */
void pkk_option_a_shortcut(const float *x, int cin, int batch, int h, int w,
                           int pad_channels, float *y);

#ifdef __cplusplus
}
#endif

#endif /* PKK_TEACHER_H */
