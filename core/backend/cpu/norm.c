/* Normalisation kernels (cpu.h). The statistics take two passes over the
 * data with double accumulators, so a large mean does not cancel the
 * variance away; `omp simd` reductions let those sums vectorise. */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"

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

#define T float
#define FN(name) name##_f32
#include "norm_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "norm_kernels.h"
#undef T
#undef FN

void kd_cpu_group_norm_forward(kd_dtype dt, const void *x, void *y, double *stats,
                               const void *w, const void *b, int64_t N, int64_t G, int64_t Cg,
                               int64_t S, double eps)
{
    if (dt == KD_F32)
        group_forward_f32(x, y, stats, w, b, N, G, Cg, S, eps);
    else
        group_forward_f64(x, y, stats, w, b, N, G, Cg, S, eps);
}

void kd_cpu_channel_norm_forward(kd_dtype dt, const void *x, void *y, double *stats,
                                 const void *w, const void *b, int64_t N, int64_t C, int64_t S,
                                 double eps)
{
    if (dt == KD_F32)
        channels_forward_f32(x, y, stats, w, b, N, C, S, eps);
    else
        channels_forward_f64(x, y, stats, w, b, N, C, S, eps);
}

/* The backward kernels add affine sums into one [2C] slice per thread;
 * they are added up here, in thread order, so the result does not depend
 * on timing. */
static kd_status instance_backward(bool channels, kd_dtype dt, const void *x, const void *g,
                                   const double *stats, const void *w, void *gx,
                                   double *affine_sums, int64_t N, int64_t G, int64_t Cg,
                                   int64_t S)
{
    int64_t C = G * Cg;
    int threads = max_threads();
    double *part = NULL;
    if (affine_sums) {
        part = calloc((size_t)threads * 2 * (size_t)C, sizeof *part);
        if (!part)
            return kd_error(KD_ERR_NOMEM, "norm backward: out of host memory");
    }
    if (channels && dt == KD_F32)
        channels_backward_f32(x, g, stats, w, gx, part, N, C, S);
    else if (channels)
        channels_backward_f64(x, g, stats, w, gx, part, N, C, S);
    else if (dt == KD_F32)
        group_backward_f32(x, g, stats, w, gx, part, N, G, Cg, S);
    else
        group_backward_f64(x, g, stats, w, gx, part, N, G, Cg, S);
    if (part) {
        for (int64_t i = 0; i < 2 * C; i++) {
            double s = 0;
            for (int t = 0; t < threads; t++)
                s += part[(int64_t)t * 2 * C + i];
            affine_sums[i] = s;
        }
    }
    free(part);
    return KD_OK;
}

kd_status kd_cpu_group_norm_backward(kd_dtype dt, const void *x, const void *g,
                                     const double *stats, const void *w, void *gx,
                                     double *affine_sums, int64_t N, int64_t G, int64_t Cg,
                                     int64_t S)
{
    return instance_backward(false, dt, x, g, stats, w, gx, affine_sums, N, G, Cg, S);
}

kd_status kd_cpu_channel_norm_backward(kd_dtype dt, const void *x, const void *g,
                                       const double *stats, const void *w, void *gx,
                                       double *affine_sums, int64_t N, int64_t C, int64_t S)
{
    return instance_backward(true, dt, x, g, stats, w, gx, affine_sums, N, 1, C, S);
}

void kd_cpu_batch_norm_stats(kd_dtype dt, const void *x, double *mean, double *var, int64_t N,
                             int64_t C, int64_t S)
{
    if (dt == KD_F32)
        batch_stats_f32(x, mean, var, N, C, S);
    else
        batch_stats_f64(x, mean, var, N, C, S);
}

void kd_cpu_batch_norm_apply(kd_dtype dt, const void *x, const void *g, void *y,
                             const void *shift, const void *scale, const void *bias,
                             const void *k1, const void *k2, int64_t N, int64_t C, int64_t S)
{
    if (dt == KD_F32)
        batch_apply_f32(x, g, y, shift, scale, bias, k1, k2, N, C, S);
    else
        batch_apply_f64(x, g, y, shift, scale, bias, k1, k2, N, C, S);
}

void kd_cpu_batch_norm_grad_sums(kd_dtype dt, const void *x, const void *g, const double *mean,
                                 const double *rstd, double *gsum, double *gxhat_sum, int64_t N,
                                 int64_t C, int64_t S)
{
    if (dt == KD_F32)
        batch_grad_sums_f32(x, g, mean, rstd, gsum, gxhat_sum, N, C, S);
    else
        batch_grad_sums_f64(x, g, mean, rstd, gsum, gxhat_sum, N, C, S);
}
