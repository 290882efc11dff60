/* erf for float32 loops that the compiler vectorises: branch-free,
 * polynomials and integer bit operations only, no libm call (libm's erff
 * is a scalar call, and was ~19% of a ConvNeXt step through GELU).
 *
 * Two pieces, both evaluated and one selected:
 *  |x| < 0.921875:  erf(x) = x + x * A(x^2 - 0.4249...), A degree 6;
 *  |x| >= 0.921875: erf(x) = sign(x) * (1 - exp(B(z - 2.4296875) - z^2)),
 *                   z = |x| clamped to [0.921875, 3.9375] (erfc(3.9375)
 *                   < 2^-25: float's erf is 1 beyond), B degree 10
 *                   fitting log(erfc(z)) + z^2 (its terms stay below 1.6,
 *                   where log(erfc(z)) alone sums terms of 8 to -1.7);
 *                   exp by 2^n * E(r), E degree 6.
 * Coefficients: Chebyshev interpolants (mpmath, 40 digits) rounded to
 * float; interpolation error at most 3.6e-10 (A, absolute in erf),
 * 5.7e-10 (B, absolute in erf: erfc times the error in log(erfc)) and
 * 1.8e-8 relative in exp (at most 0.19 * 1.8e-8 = 3.4e-9 in erf).
 *
 * Bound: the rest is float rounding, measured exhaustively on every
 * float against double erf (tests/erf_sweep.c), with FMA contraction
 * (x86-64-v3) and without (the --disable-simd build):
 *   kd_erf_f32:     |error| <= 8.2e-8 and at most 1.4 ulps of the float
 *                   result (measured: 1.32 in the x86-64-v3 build, 1.37
 *                   without FMA; glibc's erff: about 1 ulp), odd exactly,
 *                   NaN -> NaN, +-inf -> +-1;
 *   kd_exp_neg_f32: at most 1.4 ulps on [-86, 0] (measured 1.08 and
 *                   1.37; glibc's expf: 0.5), 0 below -86 (exp(-86) =
 *                   4.5e-38: the absolute error stays below that), NaN ->
 *                   NaN.
 * In GELU, 0.5 * x * (1 + erf(x / sqrt 2)), erf's error is then at most
 * 0.69 ulp of 1 + erf for x >= 0, within the rounding that sum gets
 * anyway; for x < 0, 1 + erf is erfc(|x|) and any float erf (erff's
 * 0.5-ulp rounding included) carries an absolute error of that order. */
#ifndef KD_CPU_ERF_F32_H
#define KD_CPU_ERF_F32_H

#include <stdint.h>
#include <string.h>

#define KD_ERF_SPLIT 0.921875f
#define KD_ERF_ZMAX 3.9375f

static inline uint32_t kd_erf_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float kd_erf_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(q) for q <= 0 (GELU's backward takes it too): q = n ln 2 + r,
 * |r| <= ln 2 / 2, 2^n from the exponent bits, valid while the result is
 * normal: q below -86 gives 0 (the clamp keeps the discarded lane's bits
 * in range); NaN stays NaN. */
static inline float kd_exp_neg_f32(float q)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float qc = q < -86.0f ? -86.0f : q;
    float t = qc * 1.44269504f + shifter;
    int32_t n = (int32_t)(kd_erf_bits(t) - kd_erf_bits(shifter));
    float k = t - shifter;
    float r = qc - k * 0.693145752f; /* ln 2 split: k * hi is exact for |k| < 2^9 */
    r = r - k * 1.42860677e-6f;
    float e = 1.394110843e-03f;
    e = e * r + 8.375126398e-03f;
    e = e * r + 4.166635290e-02f;
    e = e * r + 1.666641551e-01f;
    e = e * r + 5.000000047e-01f;
    e = e * r + 1.000000038e+00f;
    e = e * r + 1.000000000e+00f;
    float y = kd_erf_float(kd_erf_bits(e) + ((uint32_t)n << 23));
    y = q < -86.0f ? 0.0f : y;
    return q == q ? y : q;
}

static inline float kd_erf_f32(float x)
{
    /* both pieces of |x|, the sign put back last: odd by construction */
    float z = x < 0 ? -x : x;
    float v = z * z - 0.4249267578125f;
    float a = 8.387591046e-05f;
    a = a * v - 6.008734971e-04f;
    a = a * v + 3.697657759e-03f;
    a = a * v - 1.936099454e-02f;
    a = a * v + 8.364797999e-02f;
    a = a * v - 2.933104389e-01f;
    a = a * v - 1.297485957e-02f;
    float small = z + z * a;
    float zc = z < KD_ERF_SPLIT ? KD_ERF_SPLIT : (z < KD_ERF_ZMAX ? z : KD_ERF_ZMAX);
    float w = zc - 2.4296875f;
    float b = -5.417631506e-08f;
    b = b * w - 2.786616629e-08f;
    b = b * w + 1.940026946e-06f;
    b = b * w - 1.406194238e-05f;
    b = b * w + 8.348148979e-05f;
    b = b * w - 4.544973844e-04f;
    b = b * w + 2.319363225e-03f;
    b = b * w - 1.148859037e-02f;
    b = b * w + 5.846236425e-02f;
    b = b * w - 3.607347862e-01f;
    b = b * w - 1.531736199e+00f;
    float large = 1.0f - kd_exp_neg_f32(b - zc * zc);
    /* NaN fails the comparison and takes the small piece, which keeps it */
    float r = z >= KD_ERF_SPLIT ? large : small;
    return x < 0 ? -r : r;
}

#endif
