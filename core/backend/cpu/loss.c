/* Loss kernels (cpu.h): cross-entropy with hard labels (label smoothing)
 * or soft targets, and KL divergence as torch's F.kl_div. Each is one fused
 * kernel forward and one backward. */
#include <stdbool.h>
/* type-generic: log and exp of a float are logf and expf */
#include <tgmath.h>

#include "cpu.h"
#include "softmax_rows.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */

#define T float
#define FN(name) name##_f32
#define SIMD_EXP KD_SIMD_EXP_f32
#include "loss_kernels.h"
#undef T
#undef FN
#undef SIMD_EXP
#define T double
#define FN(name) name##_f64
#define SIMD_EXP KD_SIMD_EXP_f64
#include "loss_kernels.h"
#undef T
#undef FN
#undef SIMD_EXP

double kd_cpu_cross_entropy_forward(kd_dtype dt, const void *x, const int64_t *labels,
                                    double *stats, int64_t n, int64_t c, double eps)
{
    if (dt == KD_F32)
        return ce_forward_f32(x, labels, stats, n, c, eps);
    return ce_forward_f64(x, labels, stats, n, c, eps);
}

void kd_cpu_cross_entropy_backward(kd_dtype dt, const void *x, const int64_t *labels,
                                   const double *stats, void *gx, int64_t n, int64_t c,
                                   double eps, double scale)
{
    if (dt == KD_F32)
        ce_backward_f32(x, labels, stats, gx, n, c, eps, scale);
    else
        ce_backward_f64(x, labels, stats, gx, n, c, eps, scale);
}

double kd_cpu_soft_ce_forward(kd_dtype dt, const void *x, const void *t, double *stats,
                              int64_t n, int64_t c)
{
    if (dt == KD_F32)
        return soft_ce_forward_f32(x, t, stats, n, c);
    return soft_ce_forward_f64(x, t, stats, n, c);
}

void kd_cpu_soft_ce_backward(kd_dtype dt, const void *x, const void *t, const double *stats,
                             void *gx, void *gt, int64_t n, int64_t c, double scale)
{
    if (dt == KD_F32)
        soft_ce_backward_f32(x, t, stats, gx, gt, n, c, scale);
    else
        soft_ce_backward_f64(x, t, stats, gx, gt, n, c, scale);
}

double kd_cpu_kl_div_forward(kd_dtype dt, const void *x, const void *t, void *out, int64_t n,
                             bool log_target)
{
    if (dt == KD_F32)
        return kl_forward_f32(x, t, out, n, log_target);
    return kl_forward_f64(x, t, out, n, log_target);
}

void kd_cpu_kl_div_backward(kd_dtype dt, const void *x, const void *t, const void *gp, double gs,
                            void *gx, void *gt, int64_t n, bool log_target)
{
    if (dt == KD_F32)
        kl_backward_f32(x, t, gp, gs, gx, gt, n, log_target);
    else
        kl_backward_f64(x, t, gp, gs, gx, gt, n, log_target);
}
