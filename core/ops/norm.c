/* Normalisation: batch norm, layer norm over the last dim, layer norm over
 * the channels of NCHW (ConvNeXt's LayerNorm2d) and group norm.
 *
 * Every input is read as [N, C, S] (S = the product of the dims after C;
 * layer norm over the last dim is N rows of C channels with S = 1). The
 * statistics take two passes over the data with double accumulators, so a
 * large mean does not cancel the variance away; `omp simd` reductions let
 * those sums vectorise. Mean and 1/std are kept per normalised group (f64)
 * for the backward pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../internal.h"

typedef enum norm_kind { NORM_GROUP, NORM_CHANNELS, NORM_BATCH } norm_kind;

/* Spatial positions per task in the channel-norm kernels, and channels
 * per task in batch norm over [N, C]. */
#define SPATIAL_BLOCK 128
#define CHANNEL_BLOCK 64

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#define DEFINE_NORM_KERNELS(T, SUFFIX)                                                       \
    /* Statistics and affine of each (n, group) block of Cg*S contiguous            \
     * elements; w and b hold C values. */                                             \
    static void group_forward_##SUFFIX(const T *x, T *y, double *stats, const T *w,       \
                                       const T *b, int64_t N, int64_t G, int64_t Cg,      \
                                       int64_t S, double eps)                              \
    {                                                                                  \
        int64_t blocks = N * G, M = Cg * S;                                            \
        _Pragma("omp parallel for if (blocks * M > 32768 && blocks > 1) schedule(static)") \
        for (int64_t blk = 0; blk < blocks; blk++) {                                   \
            const T *xb = x + blk * M;                                                 \
            T *yb = y + blk * M;                                                       \
            const T *wg = w + (blk % G) * Cg, *bg = b + (blk % G) * Cg;                \
            double sum = 0, sq = 0;                                                    \
            _Pragma("omp simd reduction(+ : sum)")                                     \
            for (int64_t i = 0; i < M; i++)                                            \
                sum += xb[i];                                                          \
            double mean = sum / (double)M;                                             \
            _Pragma("omp simd reduction(+ : sq)")                                      \
            for (int64_t i = 0; i < M; i++) {                                          \
                double d = xb[i] - mean;                                               \
                sq += d * d;                                                           \
            }                                                                          \
            double rstd = 1.0 / sqrt(sq / (double)M + eps);                            \
            stats[2 * blk] = mean;                                                     \
            stats[2 * blk + 1] = rstd;                                                 \
            T m = (T)mean, r = (T)rstd;                                                \
            if (S == 1) {                                                              \
                _Pragma("omp simd")                                                     \
                for (int64_t c = 0; c < Cg; c++)                                       \
                    yb[c] = (xb[c] - m) * r * wg[c] + bg[c];                           \
            } else {                                                                   \
                for (int64_t c = 0; c < Cg; c++) {                                     \
                    const T *xc = xb + c * S;                                          \
                    T *yc = yb + c * S, a = r * wg[c], bc = bg[c];                     \
                    _Pragma("omp simd")                                                 \
                    for (int64_t s = 0; s < S; s++)                                    \
                        yc[s] = (xc[s] - m) * a + bc;                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* gx (may be NULL) and, into part[thread][2][C] (may be NULL), the sums of  \
     * g * xhat (weight) and g (bias) per channel. */                              \
    static void group_backward_##SUFFIX(const T *x, const T *g, const double *stats,     \
                                        const T *w, T *gx, double *part, int64_t N,       \
                                        int64_t G, int64_t Cg, int64_t S)                 \
    {                                                                                  \
        int64_t blocks = N * G, M = Cg * S, C = G * Cg;                                \
        _Pragma("omp parallel for if (blocks * M > 32768 && blocks > 1) schedule(static)") \
        for (int64_t blk = 0; blk < blocks; blk++) {                                   \
            const T *xb = x + blk * M, *gb = g + blk * M;                              \
            int64_t c0 = (blk % G) * Cg;                                               \
            const T *wg = w + c0;                                                      \
            double mean = stats[2 * blk], rstd = stats[2 * blk + 1];                   \
            double *pw = part ? part + (int64_t)thread_id() * 2 * C + c0 : NULL;       \
            double s1 = 0, s2 = 0; /* sums of dxhat and dxhat * xhat */                \
            if (S == 1) {                                                              \
                _Pragma("omp simd reduction(+ : s1, s2)")                              \
                for (int64_t c = 0; c < Cg; c++) {                                     \
                    double dxh = (double)gb[c] * wg[c];                                \
                    s1 += dxh;                                                         \
                    s2 += dxh * ((xb[c] - mean) * rstd);                               \
                }                                                                      \
                if (pw)                                                                \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < Cg; c++) {                                 \
                        pw[c] += gb[c] * ((xb[c] - mean) * rstd);                      \
                        pw[C + c] += gb[c];                                            \
                    }                                                                  \
            } else {                                                                   \
                for (int64_t c = 0; c < Cg; c++) {                                     \
                    const T *xc = xb + c * S, *gc = gb + c * S;                        \
                    double cg = 0, cgx = 0;                                            \
                    _Pragma("omp simd reduction(+ : cg, cgx)")                         \
                    for (int64_t s = 0; s < S; s++) {                                  \
                        cg += gc[s];                                                   \
                        cgx += gc[s] * (xc[s] - mean);                                 \
                    }                                                                  \
                    cgx *= rstd;                                                       \
                    s1 += wg[c] * cg;                                                  \
                    s2 += wg[c] * cgx;                                                 \
                    if (pw) {                                                          \
                        pw[c] += cgx;                                                  \
                        pw[C + c] += cg;                                               \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
            if (!gx)                                                                   \
                continue;                                                              \
            T *gxb = gx + blk * M, m = (T)mean, r = (T)rstd;                           \
            T k1 = (T)(s1 / (double)M), k2 = (T)(s2 / (double)M * rstd);               \
            if (S == 1) {                                                              \
                _Pragma("omp simd")                                                     \
                for (int64_t c = 0; c < Cg; c++)                                       \
                    gxb[c] = r * (gb[c] * wg[c] - k1 - (xb[c] - m) * k2);              \
            } else {                                                                   \
                for (int64_t c = 0; c < Cg; c++) {                                     \
                    const T *xc = xb + c * S, *gc = gb + c * S;                        \
                    T *gxc = gxb + c * S, wc = wg[c];                                  \
                    _Pragma("omp simd")                                                 \
                    for (int64_t s = 0; s < S; s++)                                    \
                        gxc[s] = r * (gc[s] * wc - k1 - (xc[s] - m) * k2);             \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* Channel norm: statistics over C for each (n, s), in tasks of one n and   \
     * a block of spatial positions, so the inner loops run along s. */         \
    static void channels_forward_##SUFFIX(const T *x, T *y, double *stats, const T *w,    \
                                          const T *b, int64_t N, int64_t C, int64_t S,    \
                                          double eps)                                      \
    {                                                                                  \
        int64_t nsb = (S + SPATIAL_BLOCK - 1) / SPATIAL_BLOCK, tasks = N * nsb;        \
        _Pragma("omp parallel for if (N * C * S > 32768) schedule(static)")            \
        for (int64_t task = 0; task < tasks; task++) {                                 \
            int64_t n = task / nsb, s0 = (task % nsb) * SPATIAL_BLOCK;                 \
            int64_t len = S - s0 < SPATIAL_BLOCK ? S - s0 : SPATIAL_BLOCK;             \
            const T *xb = x + n * C * S + s0;                                          \
            T *yb = y + n * C * S + s0;                                                \
            double acc[SPATIAL_BLOCK] = {0}, mean[SPATIAL_BLOCK];                      \
            T mt[SPATIAL_BLOCK], rt[SPATIAL_BLOCK];                                    \
            for (int64_t c = 0; c < C; c++)                                            \
                _Pragma("omp simd")                                                     \
                for (int64_t s = 0; s < len; s++)                                      \
                    acc[s] += xb[c * S + s];                                           \
            for (int64_t s = 0; s < len; s++) {                                        \
                mean[s] = acc[s] / (double)C;                                          \
                acc[s] = 0;                                                            \
            }                                                                          \
            for (int64_t c = 0; c < C; c++)                                            \
                _Pragma("omp simd")                                                     \
                for (int64_t s = 0; s < len; s++) {                                    \
                    double d = xb[c * S + s] - mean[s];                                \
                    acc[s] += d * d;                                                   \
                }                                                                      \
            double *st = stats + 2 * (n * S + s0);                                     \
            for (int64_t s = 0; s < len; s++) {                                        \
                double rstd = 1.0 / sqrt(acc[s] / (double)C + eps);                    \
                st[2 * s] = mean[s];                                                   \
                st[2 * s + 1] = rstd;                                                  \
                mt[s] = (T)mean[s];                                                    \
                rt[s] = (T)rstd;                                                       \
            }                                                                          \
            for (int64_t c = 0; c < C; c++) {                                          \
                T wc = w[c], bc = b[c];                                                \
                _Pragma("omp simd")                                                     \
                for (int64_t s = 0; s < len; s++)                                      \
                    yb[c * S + s] = (xb[c * S + s] - mt[s]) * rt[s] * wc + bc;         \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    static void channels_backward_##SUFFIX(const T *x, const T *g, const double *stats,  \
                                           const T *w, T *gx, double *part, int64_t N,    \
                                           int64_t C, int64_t S)                          \
    {                                                                                  \
        int64_t nsb = (S + SPATIAL_BLOCK - 1) / SPATIAL_BLOCK, tasks = N * nsb;        \
        _Pragma("omp parallel for if (N * C * S > 32768) schedule(static)")            \
        for (int64_t task = 0; task < tasks; task++) {                                 \
            int64_t n = task / nsb, s0 = (task % nsb) * SPATIAL_BLOCK;                 \
            int64_t len = S - s0 < SPATIAL_BLOCK ? S - s0 : SPATIAL_BLOCK;             \
            const T *xb = x + n * C * S + s0, *gb = g + n * C * S + s0;                \
            const double *st = stats + 2 * (n * S + s0);                               \
            double *pw = part ? part + (int64_t)thread_id() * 2 * C : NULL;            \
            double s1[SPATIAL_BLOCK] = {0}, s2[SPATIAL_BLOCK] = {0};                   \
            T mt[SPATIAL_BLOCK], rt[SPATIAL_BLOCK];                                    \
            for (int64_t s = 0; s < len; s++) {                                        \
                mt[s] = (T)st[2 * s];                                                  \
                rt[s] = (T)st[2 * s + 1];                                              \
            }                                                                          \
            for (int64_t c = 0; c < C; c++) {                                          \
                const T *xc = xb + c * S, *gc = gb + c * S;                            \
                T wc = w[c];                                                           \
                double cg = 0, cgx = 0;                                                \
                _Pragma("omp simd reduction(+ : cg, cgx)")                             \
                for (int64_t s = 0; s < len; s++) {                                    \
                    T xh = (xc[s] - mt[s]) * rt[s];                                    \
                    s1[s] += gc[s] * wc;                                               \
                    s2[s] += gc[s] * wc * xh;                                          \
                    cg += gc[s];                                                       \
                    cgx += gc[s] * xh;                                                 \
                }                                                                      \
                if (pw) {                                                              \
                    pw[c] += cgx;                                                      \
                    pw[C + c] += cg;                                                   \
                }                                                                      \
            }                                                                          \
            if (!gx)                                                                   \
                continue;                                                              \
            T *gxb = gx + n * C * S + s0, k1[SPATIAL_BLOCK], k2[SPATIAL_BLOCK];        \
            for (int64_t s = 0; s < len; s++) {                                        \
                k1[s] = (T)(s1[s] / (double)C);                                        \
                k2[s] = (T)(s2[s] / (double)C);                                        \
            }                                                                          \
            for (int64_t c = 0; c < C; c++) {                                          \
                const T *xc = xb + c * S, *gc = gb + c * S;                            \
                T *gxc = gxb + c * S, wc = w[c];                                       \
                _Pragma("omp simd")                                                     \
                for (int64_t s = 0; s < len; s++)                                      \
                    gxc[s] = rt[s] * (gc[s] * wc - k1[s] -                             \
                                      (xc[s] - mt[s]) * rt[s] * k2[s]);                \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* Batch norm: mean and biased variance of each channel over N and S. */   \
    static void batch_stats_##SUFFIX(const T *x, double *mean, double *var, int64_t N,    \
                                     int64_t C, int64_t S)                                \
    {                                                                                  \
        double count = (double)(N * S);                                                 \
        if (S == 1) { /* [N, C]: walk rows, a block of channels per task */             \
            int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;                   \
            _Pragma("omp parallel for if (N * C > 32768) schedule(static)")             \
            for (int64_t blk = 0; blk < blocks; blk++) {                                \
                int64_t c0 = blk * CHANNEL_BLOCK;                                       \
                int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;          \
                double sum[CHANNEL_BLOCK] = {0}, sq[CHANNEL_BLOCK] = {0};               \
                for (int64_t n = 0; n < N; n++) {                                       \
                    const T *row = x + n * C + c0;                                      \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < len; c++)                                   \
                        sum[c] += row[c];                                               \
                }                                                                       \
                for (int64_t c = 0; c < len; c++)                                       \
                    mean[c0 + c] = sum[c] / count;                                      \
                for (int64_t n = 0; n < N; n++) {                                       \
                    const T *row = x + n * C + c0;                                      \
                    const double *m = mean + c0;                                        \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < len; c++) {                                 \
                        double d = row[c] - m[c];                                       \
                        sq[c] += d * d;                                                 \
                    }                                                                   \
                }                                                                       \
                for (int64_t c = 0; c < len; c++)                                       \
                    var[c0 + c] = sq[c] / count;                                        \
            }                                                                           \
            return;                                                                     \
        }                                                                               \
        _Pragma("omp parallel for if (N * C * S > 32768) schedule(static)")             \
        for (int64_t c = 0; c < C; c++) {                                               \
            double sum = 0, sq = 0;                                                     \
            for (int64_t n = 0; n < N; n++) {                                          \
                const T *p = x + (n * C + c) * S;                                      \
                _Pragma("omp simd reduction(+ : sum)")                                 \
                for (int64_t s = 0; s < S; s++)                                        \
                    sum += p[s];                                                       \
            }                                                                          \
            double m = sum / count;                                                    \
            for (int64_t n = 0; n < N; n++) {                                          \
                const T *p = x + (n * C + c) * S;                                      \
                _Pragma("omp simd reduction(+ : sq)")                                  \
                for (int64_t s = 0; s < S; s++) {                                      \
                    double d = p[s] - m;                                               \
                    sq += d * d;                                                       \
                }                                                                      \
            }                                                                          \
            mean[c] = m;                                                               \
            var[c] = sq / count;                                                       \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* y = (x - shift[c]) * scale[c] + bias[c]; also the shape of the batch     \
     * norm input gradient, (g - k1[c] - (x - shift[c]) * k2[c]) * scale[c]. */  \
    static void batch_apply_##SUFFIX(const T *x, const T *g, T *y, const T *shift,        \
                                     const T *scale, const T *bias, const T *k1,          \
                                     const T *k2, int64_t N, int64_t C, int64_t S)        \
    {                                                                                  \
        if (S == 1) {                                                                  \
            _Pragma("omp parallel for if (N * C > 32768) schedule(static)")            \
            for (int64_t n = 0; n < N; n++) {                                          \
                const T *xr = x + n * C;                                               \
                T *yr = y + n * C;                                                     \
                if (g) {                                                               \
                    const T *gr = g + n * C;                                           \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < C; c++)                                    \
                        yr[c] = (gr[c] - k1[c] - (xr[c] - shift[c]) * k2[c]) * scale[c]; \
                } else {                                                               \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < C; c++)                                    \
                        yr[c] = (xr[c] - shift[c]) * scale[c] + bias[c];               \
                }                                                                      \
            }                                                                          \
            return;                                                                    \
        }                                                                              \
        _Pragma("omp parallel for collapse(2) if (N * C * S > 32768) schedule(static)") \
        for (int64_t n = 0; n < N; n++) {                                              \
            for (int64_t c = 0; c < C; c++) {                                          \
                const T *xc = x + (n * C + c) * S;                                     \
                T *yc = y + (n * C + c) * S, m = shift[c], a = scale[c];               \
                if (g) {                                                               \
                    const T *gc = g + (n * C + c) * S;                                 \
                    T q1 = k1[c], q2 = k2[c];                                          \
                    _Pragma("omp simd")                                                 \
                    for (int64_t s = 0; s < S; s++)                                    \
                        yc[s] = (gc[s] - q1 - (xc[s] - m) * q2) * a;                   \
                } else {                                                               \
                    T bc = bias[c];                                                    \
                    _Pragma("omp simd")                                                 \
                    for (int64_t s = 0; s < S; s++)                                    \
                        yc[s] = (xc[s] - m) * a + bc;                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* Per channel: sum of g (bias grad) and of g * xhat (weight grad). */        \
    static void batch_grad_sums_##SUFFIX(const T *x, const T *g, const double *mean,      \
                                         const double *rstd, double *gsum,               \
                                         double *gxhat_sum, int64_t N, int64_t C,        \
                                         int64_t S)                                       \
    {                                                                                   \
        if (S == 1) {                                                                   \
            int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;                   \
            _Pragma("omp parallel for if (N * C > 32768) schedule(static)")             \
            for (int64_t blk = 0; blk < blocks; blk++) {                                \
                int64_t c0 = blk * CHANNEL_BLOCK;                                       \
                int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;          \
                double cg[CHANNEL_BLOCK] = {0}, cgx[CHANNEL_BLOCK] = {0};               \
                const double *m = mean + c0;                                            \
                for (int64_t n = 0; n < N; n++) {                                       \
                    const T *xr = x + n * C + c0, *gr = g + n * C + c0;                 \
                    _Pragma("omp simd")                                                 \
                    for (int64_t c = 0; c < len; c++) {                                 \
                        cg[c] += gr[c];                                                 \
                        cgx[c] += gr[c] * (xr[c] - m[c]);                               \
                    }                                                                   \
                }                                                                       \
                for (int64_t c = 0; c < len; c++) {                                     \
                    gsum[c0 + c] = cg[c];                                               \
                    gxhat_sum[c0 + c] = cgx[c] * rstd[c0 + c];                          \
                }                                                                       \
            }                                                                           \
            return;                                                                     \
        }                                                                               \
        _Pragma("omp parallel for if (N * C * S > 32768) schedule(static)")             \
        for (int64_t c = 0; c < C; c++) {                                               \
            double cg = 0, cgx = 0, m = mean[c];                                        \
            for (int64_t n = 0; n < N; n++) {                                          \
                const T *xc = x + (n * C + c) * S, *gc = g + (n * C + c) * S;          \
                _Pragma("omp simd reduction(+ : cg, cgx)")                             \
                for (int64_t s = 0; s < S; s++) {                                      \
                    cg += gc[s];                                                       \
                    cgx += gc[s] * (xc[s] - m);                                        \
                }                                                                      \
            }                                                                          \
            gsum[c] = cg;                                                              \
            gxhat_sum[c] = cgx * rstd[c];                                              \
        }                                                                              \
    }

DEFINE_NORM_KERNELS(float, f32)
DEFINE_NORM_KERNELS(double, f64)

/* ------------------------------------------------------------ shared */

/* An affine parameter as a contiguous [C] array of x's dtype: the given
 * tensor, or `fill` everywhere when it is NULL. */
static kd_tensor *affine_param(const char *op, const char *what, kd_tensor *p,
                               const kd_tensor *x, int64_t C, double fill)
{
    if (!p)
        return kd_tensor_full(x->dtype, KD_CPU, 1, &C, fill);
    if (kd_check_same(op, x, p) != KD_OK)
        return NULL;
    if (kd_tensor_numel(p) != C || p->ndim != 1) {
        char s[96], xs[96];
        kd_error(KD_ERR_INVALID, "%s: %s %s for input %s (expected [%lld])", op, what,
                 kd_shape_str(p, s, sizeof s), kd_shape_str(x, xs, sizeof xs), (long long)C);
        return NULL;
    }
    return kd_contiguous_raw(p);
}

static kd_status check_input(const char *op, const kd_tensor *x, int min_ndim)
{
    if (kd_check_float(op, x) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only CPU tensors are supported", op);
    if (x->ndim < min_ndim) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s needs at least %d dims", op,
                        kd_shape_str(x, s, sizeof s), min_ndim);
    }
    return KD_OK;
}

/* Weight and bias gradients from per-thread partial sums (weight sums in
 * the first C of each thread's 2C, bias sums in the second). */
static kd_status affine_grads(kd_tensor *weight, kd_tensor *bias, const double *part,
                              int threads, int64_t C)
{
    kd_tensor *params[2] = {weight, bias};
    for (int k = 0; k < 2; k++) {
        kd_tensor *p = params[k];
        if (!p || !p->requires_grad)
            continue;
        kd_tensor *gp = kd_tensor_empty_like(p);
        if (!gp)
            return KD_ERR_NOMEM;
        for (int64_t c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < threads; t++)
                s += part[(int64_t)t * 2 * C + k * C + c];
            if (p->dtype == KD_F32)
                ((float *)kd_tensor_data(gp))[c] = (float)s;
            else
                ((double *)kd_tensor_data(gp))[c] = s;
        }
        kd_status st = kd_grad_accumulate_take(p, gp);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

/* ------------------------------------------------------------ group, layer, channel norms */

/* node: inputs x, weight, bias; saved x (contiguous), stats, weight
 * array; iarg kind, N, G, C/G, S. */
static kd_status instance_norm_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *weight = node->inputs[1], *bias = node->inputs[2];
    kd_tensor *xc = node->saved[0], *stats = node->saved[1], *w = node->saved[2];
    norm_kind kind = (norm_kind)node->iarg[0];
    int64_t N = node->iarg[1], G = node->iarg[2], Cg = node->iarg[3], S = node->iarg[4];
    int64_t C = G * Cg;
    bool want_affine = (weight && weight->requires_grad) || (bias && bias->requires_grad);
    int threads = max_threads();
    double *part = want_affine ? calloc((size_t)threads * 2 * (size_t)C, sizeof *part) : NULL;
    if (want_affine && !part)
        return kd_error(KD_ERR_NOMEM, "%s backward: out of host memory", node->op);
    kd_tensor *gx = x->requires_grad ? kd_tensor_empty_like(x) : NULL;
    kd_status st = KD_OK;
    if (x->requires_grad && !gx) {
        st = KD_ERR_NOMEM;
    } else if (x->dtype == KD_F32) {
        float *gxd = gx ? kd_tensor_data(gx) : NULL;
        if (kind == NORM_CHANNELS)
            channels_backward_f32(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(stats),
                                  kd_tensor_data(w), gxd, part, N, C, S);
        else
            group_backward_f32(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(stats),
                               kd_tensor_data(w), gxd, part, N, G, Cg, S);
    } else {
        double *gxd = gx ? kd_tensor_data(gx) : NULL;
        if (kind == NORM_CHANNELS)
            channels_backward_f64(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(stats),
                                  kd_tensor_data(w), gxd, part, N, C, S);
        else
            group_backward_f64(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(stats),
                               kd_tensor_data(w), gxd, part, N, G, Cg, S);
    }
    if (st == KD_OK && gx)
        st = kd_grad_accumulate_take(x, gx);
    if (st == KD_OK && part)
        st = affine_grads(weight, bias, part, threads, C);
    free(part);
    return st;
}

/* x read as [N, G groups of Cg channels, S]; NORM_GROUP normalises each
 * (n, group), NORM_CHANNELS each (n, s) over all C (G is 1 then). */
static kd_tensor *instance_norm(const char *op, norm_kind kind, kd_tensor *x,
                                kd_tensor *weight, kd_tensor *bias, int64_t N, int64_t G,
                                int64_t C, int64_t S, double eps)
{
    kd_tensor *w = affine_param(op, "weight", weight, x, C, 1.0);
    kd_tensor *b = w ? affine_param(op, "bias", bias, x, C, 0.0) : NULL;
    kd_tensor *xc = b ? kd_contiguous_raw(x) : NULL;
    kd_tensor *out = xc ? kd_tensor_empty_like(x) : NULL;
    int64_t nstats = kind == NORM_CHANNELS ? N * S : N * G;
    kd_tensor *stats = out ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){nstats, 2}) : NULL;
    if (!stats)
        return NULL;
    int64_t Cg = C / G;
    double *sd = kd_tensor_data(stats);
    if (x->dtype == KD_F32) {
        if (kind == NORM_CHANNELS)
            channels_forward_f32(kd_tensor_data(xc), kd_tensor_data(out), sd, kd_tensor_data(w),
                                 kd_tensor_data(b), N, C, S, eps);
        else
            group_forward_f32(kd_tensor_data(xc), kd_tensor_data(out), sd, kd_tensor_data(w),
                              kd_tensor_data(b), N, G, Cg, S, eps);
    } else {
        if (kind == NORM_CHANNELS)
            channels_forward_f64(kd_tensor_data(xc), kd_tensor_data(out), sd, kd_tensor_data(w),
                                 kd_tensor_data(b), N, C, S, eps);
        else
            group_forward_f64(kd_tensor_data(xc), kd_tensor_data(out), sd, kd_tensor_data(w),
                              kd_tensor_data(b), N, G, Cg, S, eps);
    }
    kd_tensor *inputs[3] = {x, weight, bias};
    kd_node *node;
    if (kd_record(op, instance_norm_backward, out, 3, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = stats;
        node->saved[2] = w;
        node->iarg[0] = kind;
        node->iarg[1] = N;
        node->iarg[2] = G;
        node->iarg[3] = Cg;
        node->iarg[4] = S;
    }
    return out;
}

kd_tensor *kd_layer_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, double eps)
{
    if (!x || check_input("layer_norm", x, 1) != KD_OK)
        return NULL;
    int64_t C = x->shape[x->ndim - 1];
    int64_t rows = kd_shape_numel(x->ndim - 1, x->shape);
    return instance_norm("layer_norm", NORM_GROUP, x, weight, bias, rows, 1, C, 1, eps);
}

kd_tensor *kd_layer_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, double eps)
{
    if (!x || check_input("layer_norm2d", x, 2) != KD_OK)
        return NULL;
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    return instance_norm("layer_norm2d", NORM_CHANNELS, x, weight, bias, x->shape[0], 1,
                         x->shape[1], S, eps);
}

kd_tensor *kd_group_norm(kd_tensor *x, int groups, kd_tensor *weight, kd_tensor *bias,
                         double eps)
{
    if (!x || check_input("group_norm", x, 2) != KD_OK)
        return NULL;
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        char s[96];
        kd_error(KD_ERR_INVALID, "group_norm: %d groups do not divide the %lld channels of %s",
                 groups, (long long)C, kd_shape_str(x, s, sizeof s));
        return NULL;
    }
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    return instance_norm("group_norm", NORM_GROUP, x, weight, bias, x->shape[0], groups, C, S,
                         eps);
}

/* ------------------------------------------------------------ batch norm */

/* Per-channel values as x's dtype, for the elementwise passes. */
static kd_tensor *channel_values(const kd_tensor *x, int64_t C, const double *v)
{
    kd_tensor *t = kd_tensor_empty(x->dtype, KD_CPU, 1, &C);
    if (!t)
        return NULL;
    for (int64_t c = 0; c < C; c++) {
        if (x->dtype == KD_F32)
            ((float *)kd_tensor_data(t))[c] = (float)v[c];
        else
            ((double *)kd_tensor_data(t))[c] = v[c];
    }
    return t;
}

static kd_status check_running(const kd_tensor *x, const kd_tensor *r, const char *what, int64_t C)
{
    if (kd_check_float("batch_norm", r) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (r->device != KD_CPU || r->ndim != 1 || r->shape[0] != C || !kd_tensor_is_contiguous(r)) {
        char s[96], xs[96];
        return kd_error(KD_ERR_INVALID,
                        "batch_norm: %s %s for input %s (a contiguous CPU [%lld] expected)",
                        what, kd_shape_str(r, s, sizeof s), kd_shape_str(x, xs, sizeof xs),
                        (long long)C);
    }
    return KD_OK;
}

/* new = (1 - momentum) * old + momentum * batch, in place. */
static void update_running(kd_tensor *r, const double *batch, double scale, double momentum)
{
    int64_t C = r->shape[0];
    for (int64_t c = 0; c < C; c++) {
        double v = batch[c] * scale;
        if (r->dtype == KD_F32) {
            float *p = (float *)kd_tensor_data(r) + c;
            *p = (float)((1 - momentum) * *p + momentum * v);
        } else {
            double *p = (double *)kd_tensor_data(r) + c;
            *p = (1 - momentum) * *p + momentum * v;
        }
    }
}

/* node: inputs x, weight, bias; saved x (contiguous), stats [4, C] (mean
 * and 1/std first), weight array; iarg N, C, S, training. */
static kd_status batch_norm_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *weight = node->inputs[1], *bias = node->inputs[2];
    kd_tensor *xc = node->saved[0], *stats = node->saved[1], *w = node->saved[2];
    int64_t N = node->iarg[0], C = node->iarg[1], S = node->iarg[2];
    bool training = node->iarg[3] != 0;
    const double *mean = kd_tensor_data(stats), *rstd = mean + C;
    double *sums = malloc((size_t)C * 2 * sizeof *sums); /* g * xhat, then g */
    double *k = malloc((size_t)C * 3 * sizeof *k);
    kd_status st = sums && k ? KD_OK : kd_error(KD_ERR_NOMEM, "batch_norm backward: out of memory");
    if (st == KD_OK) {
        if (x->dtype == KD_F32)
            batch_grad_sums_f32(kd_tensor_data(xc), kd_tensor_data(g), mean, rstd, sums + C,
                                sums, N, C, S);
        else
            batch_grad_sums_f64(kd_tensor_data(xc), kd_tensor_data(g), mean, rstd, sums + C,
                                sums, N, C, S);
    }
    if (st == KD_OK && x->requires_grad) {
        /* gx = w rstd (g - mean(g) - xhat mean(g xhat)); in eval the batch
         * statistics are constants and only the first term is left. */
        double count = (double)(N * S);
        for (int64_t c = 0; c < C; c++) {
            double wc = kd_tensor_get(w, c);
            k[c] = wc * rstd[c];
            k[C + c] = training ? sums[C + c] / count : 0;
            k[2 * C + c] = training ? sums[c] / count * rstd[c] : 0;
        }
        kd_tensor *scale = channel_values(x, C, k), *k1 = channel_values(x, C, k + C);
        kd_tensor *k2 = channel_values(x, C, k + 2 * C), *shift = channel_values(x, C, mean);
        kd_tensor *gx = k2 && shift ? kd_tensor_empty_like(x) : NULL;
        if (!gx || !scale || !k1) {
            st = KD_ERR_NOMEM;
        } else {
            if (x->dtype == KD_F32)
                batch_apply_f32(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(gx),
                                kd_tensor_data(shift), kd_tensor_data(scale), NULL,
                                kd_tensor_data(k1), kd_tensor_data(k2), N, C, S);
            else
                batch_apply_f64(kd_tensor_data(xc), kd_tensor_data(g), kd_tensor_data(gx),
                                kd_tensor_data(shift), kd_tensor_data(scale), NULL,
                                kd_tensor_data(k1), kd_tensor_data(k2), N, C, S);
            st = kd_grad_accumulate_take(x, gx);
        }
    }
    if (st == KD_OK)
        st = affine_grads(weight, bias, sums, 1, C);
    free(sums);
    free(k);
    return st;
}

kd_tensor *kd_batch_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                         kd_tensor *running_mean, kd_tensor *running_var, bool training,
                         double momentum, double eps)
{
    if (!x || check_input("batch_norm", x, 2) != KD_OK)
        return NULL;
    int64_t N = x->shape[0], C = x->shape[1];
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    if ((running_mean && check_running(x, running_mean, "running_mean", C) != KD_OK) ||
        (running_var && check_running(x, running_var, "running_var", C) != KD_OK))
        return NULL;
    char xs[96];
    if (!training && (!running_mean || !running_var)) {
        kd_error(KD_ERR_INVALID, "batch_norm: eval mode needs running_mean and running_var");
        return NULL;
    }
    if (training && N * S < 2) {
        kd_error(KD_ERR_INVALID, "batch_norm: training needs more than 1 value per channel, "
                 "got input %s", kd_shape_str(x, xs, sizeof xs));
        return NULL;
    }
    kd_tensor *w = affine_param("batch_norm", "weight", weight, x, C, 1.0);
    kd_tensor *b = w ? affine_param("batch_norm", "bias", bias, x, C, 0.0) : NULL;
    kd_tensor *xc = b ? kd_contiguous_raw(x) : NULL;
    /* rows: mean, 1/std (kept for backward), variance, w/std */
    kd_tensor *stats = xc ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){4, C}) : NULL;
    if (!stats)
        return NULL;
    double *mean = kd_tensor_data(stats), *rstd = mean + C, *var = rstd + C, *scale = var + C;
    if (training) {
        if (x->dtype == KD_F32)
            batch_stats_f32(kd_tensor_data(xc), mean, var, N, C, S);
        else
            batch_stats_f64(kd_tensor_data(xc), mean, var, N, C, S);
        double count = (double)(N * S);
        if (running_mean)
            update_running(running_mean, mean, 1.0, momentum);
        if (running_var)
            update_running(running_var, var, count / (count - 1), momentum);
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = kd_tensor_get(running_mean, c);
            var[c] = kd_tensor_get(running_var, c);
        }
    }
    for (int64_t c = 0; c < C; c++) {
        rstd[c] = 1.0 / sqrt(var[c] + eps);
        scale[c] = rstd[c] * kd_tensor_get(w, c);
    }
    kd_tensor *shift_t = channel_values(x, C, mean), *scale_t = channel_values(x, C, scale);
    kd_tensor *out = shift_t && scale_t ? kd_tensor_empty_like(x) : NULL;
    if (!out)
        return NULL;
    if (x->dtype == KD_F32)
        batch_apply_f32(kd_tensor_data(xc), NULL, kd_tensor_data(out), kd_tensor_data(shift_t),
                        kd_tensor_data(scale_t), kd_tensor_data(b), NULL, NULL, N, C, S);
    else
        batch_apply_f64(kd_tensor_data(xc), NULL, kd_tensor_data(out), kd_tensor_data(shift_t),
                        kd_tensor_data(scale_t), kd_tensor_data(b), NULL, NULL, N, C, S);
    kd_tensor *inputs[3] = {x, weight, bias};
    kd_node *node;
    if (kd_record("batch_norm", batch_norm_backward, out, 3, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = stats;
        node->saved[2] = w;
        node->iarg[0] = N;
        node->iarg[1] = C;
        node->iarg[2] = S;
        node->iarg[3] = training;
    }
    return out;
}
