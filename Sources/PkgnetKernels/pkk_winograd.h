/*
 * The F(4, 3) Winograd transforms (interpolation points 0, +-1, +-2 and
 * infinity), shared by the 2-D F(4x4, 3x3) kernel (winograd.c), which
 * applies each along both axes, and the 1-D F(4, 3) one (winograd_1d.c),
 * which applies them down the columns only. Macros, so that each kernel
 * expands them on its own vector type (8 or 16 floats, or float) and
 * instruction set.
 */
#ifndef PKK_WINOGRAD_H
#define PKK_WINOGRAD_H

/* out[k*so] = (G in)[k*s] for k = 0..5: G's rows (1/4, 0, 0), -(1, 1, 1)/6,
 * -(1, -1, 1)/6, (1/24, 1/12, 1/6), (1/24, -1/12, 1/6), (0, 0, 1), with
 * the shared sums taken once. In float: each constant is rounded once, a
 * relative error below the products' own rounding. */
#define PKK_WG_G(T, in, s, out, so)                                                                          \
    do {                                                                                                     \
        const T i0 = (in)[0], i1 = (in)[s], i2 = (in)[2 * (s)];                                              \
        const T e = i0 + i2, f = i0 * (1.0f / 24) + i2 * (1.0f / 6), h = i1 * (1.0f / 12);                   \
        (out)[0] = i0 * 0.25f;                                                                               \
        (out)[so] = (e + i1) * (-1.0f / 6);                                                                  \
        (out)[2 * (so)] = (e - i1) * (-1.0f / 6);                                                            \
        (out)[3 * (so)] = f + h;                                                                             \
        (out)[4 * (so)] = f - h;                                                                             \
        (out)[5 * (so)] = i2;                                                                                \
    } while (0)

/* out[k*so] = (B^T in)[k*s] for k = 0..5, lane by lane, on vectors of type
 * T (8 or 16 floats). */
#define PKK_WG_BT(T, in, s, out, so)                                                                         \
    do {                                                                                                     \
        const T i0 = (in)[0], i1 = (in)[s], i2 = (in)[2 * (s)], i3 = (in)[3 * (s)], i4 = (in)[4 * (s)],       \
                i5 = (in)[5 * (s)];                                                                          \
        (out)[0] = 4.0f * i0 - 5.0f * i2 + i4;                                                               \
        (out)[so] = -4.0f * (i1 + i2) + (i3 + i4);                                                           \
        (out)[2 * (so)] = 4.0f * (i1 - i2) + (i4 - i3);                                                      \
        (out)[3 * (so)] = 2.0f * (i3 - i1) + (i4 - i2);                                                      \
        (out)[4 * (so)] = 2.0f * (i1 - i3) + (i4 - i2);                                                      \
        (out)[5 * (so)] = 4.0f * i1 - 5.0f * i3 + i5;                                                        \
    } while (0)

/* out[k*so] = (A^T in)[k*s] for k = 0..3, lane by lane, on vectors of type
 * T (8 or 16 floats). */
#define PKK_WG_AT(T, in, s, out, so)                                                                         \
    do {                                                                                                     \
        const T i0 = (in)[0], i1 = (in)[s], i2 = (in)[2 * (s)], i3 = (in)[3 * (s)], i4 = (in)[4 * (s)],       \
                i5 = (in)[5 * (s)];                                                                          \
        const T s12 = i1 + i2, d12 = i1 - i2, s34 = i3 + i4, d34 = i3 - i4;                                  \
        (out)[0] = i0 + s12 + s34;                                                                           \
        (out)[so] = d12 + 2.0f * d34;                                                                        \
        (out)[2 * (so)] = s12 + 4.0f * s34;                                                                  \
        (out)[3 * (so)] = d12 + 8.0f * d34 + i5;                                                             \
    } while (0)

#endif
