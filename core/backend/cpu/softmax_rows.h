/* Row primitives shared by softmax, the cross-entropy losses and attention:
 * the maximum, the sum of exp(x - m) and the in-place softmax of one
 * contiguous row. The f32 versions use their own exp so that their loops
 * vectorise; f64 (what gradient checks run in) uses libm. */
#ifndef KD_CPU_SOFTMAX_ROWS_H
#define KD_CPU_SOFTMAX_ROWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define KD_ROW_LANES 16 /* independent accumulators per row loop */

/* e^(x - m) for x <= m, m finite (m is a row maximum or log-sum-exp):
 * within 2 ulp, and 0 once x - m < -87.3 (the result would be subnormal).
 * d = x - m = n ln2 + r with |r| <= ln2/2; e^r by its degree-7 Taylor
 * polynomial; 2^n written into the exponent bits. x is clamped at m - 88.5
 * (-inf masks included) before subtracting: a clamp against a run-time
 * bound is one that gcc vectorises. */
static inline float kd_exp_shifted_f32(float x, float m)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float lo = m - 88.5f;
    x = x < lo ? lo : x;
    float d = x - m;
    float t = d * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = d - n * 0.693145751953125f; /* ln 2 in two parts, the first exact */
    r = r - n * 1.42860682030941723e-6f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    int32_t biased = bits - 0x4B400000 + 127; /* n + the exponent bias */
    biased = biased > 0 ? biased : 0;         /* 0 makes the scale +0.0 */
    bits = biased << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Put before a loop that calls kd_exp_shifted_f32 or _f64: vectorises it
 * in f32 (clang cannot vectorise the libm call of the f64 version). */
#define KD_SIMD_EXP_f32 _Pragma("omp simd")
#define KD_SIMD_EXP_f64

static inline double kd_exp_shifted_f64(double x, double m) { return exp(x - m); }

static inline float kd_row_max_f32(const float *x, int64_t n)
{
    float m = x[0];
    int64_t j = 0, full = n - n % KD_ROW_LANES;
    if (full > 0) {
        float lane[KD_ROW_LANES];
        memcpy(lane, x, sizeof lane);
        for (j = KD_ROW_LANES; j < full; j += KD_ROW_LANES)
#pragma omp simd
            for (int k = 0; k < KD_ROW_LANES; k++)
                lane[k] = x[j + k] > lane[k] ? x[j + k] : lane[k];
        for (int k = 0; k < KD_ROW_LANES; k++)
            m = lane[k] > m ? lane[k] : m;
    }
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

static inline double kd_row_max_f64(const double *x, int64_t n)
{
    double m = x[0];
    for (int64_t j = 1; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

/* sum_j exp(x_j - m); writes the terms to y unless y is NULL. */
static inline double kd_row_sum_exp_f32(const float *x, float *y, int64_t n, float m)
{
    float lane[KD_ROW_LANES] = {0};
    int64_t j = 0, full = n - n % KD_ROW_LANES;
    if (y) {
        for (; j < full; j += KD_ROW_LANES)
#pragma omp simd
            for (int k = 0; k < KD_ROW_LANES; k++) {
                y[j + k] = kd_exp_shifted_f32(x[j + k], m);
                lane[k] += y[j + k];
            }
    } else {
        for (; j < full; j += KD_ROW_LANES)
#pragma omp simd
            for (int k = 0; k < KD_ROW_LANES; k++)
                lane[k] += kd_exp_shifted_f32(x[j + k], m);
    }
    double s = 0;
    for (int k = 0; k < KD_ROW_LANES; k++)
        s += lane[k];
    for (; j < n; j++) {
        float e = kd_exp_shifted_f32(x[j], m);
        if (y)
            y[j] = e;
        s += e;
    }
    return s;
}

static inline double kd_row_sum_exp_f64(const double *x, double *y, int64_t n, double m)
{
    double s = 0;
    for (int64_t j = 0; j < n; j++) {
        double e = exp(x[j] - m);
        if (y)
            y[j] = e;
        s += e;
    }
    return s;
}

/* y = softmax(x) over one row (y may be x). */
static inline void kd_row_softmax_f32(const float *x, float *y, int64_t n)
{
    float m = kd_row_max_f32(x, n);
    float inv = (float)(1.0 / kd_row_sum_exp_f32(x, y, n, m));
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        y[j] *= inv;
}

static inline void kd_row_softmax_f64(const double *x, double *y, int64_t n)
{
    double m = kd_row_max_f64(x, n);
    double inv = 1.0 / kd_row_sum_exp_f64(x, y, n, m);
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        y[j] *= inv;
}

#endif
