/* Reduction kernels (cpu.h). f32 sums add blocks of at most 4096 elements
 * in f32 (16 partial sums) and the blocks in f64. */
#include <stdbool.h>

#include "cpu.h"

#define PAR_MIN 32768 /* elements below which a kernel stays on one thread */
#define TILE 256      /* inner elements a thread accumulates at once */
#define BLOCK 4096    /* elements added in the input's type before going to double */
#define LANES 16      /* independent partial sums in a contiguous run */

#define T float
#define FN(name) name##_f32
#include "reduce_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "reduce_kernels.h"
#undef T
#undef FN

void kd_cpu_reduce_sum(kd_dtype dt, const void *x, void *out, int64_t outer, int64_t reduce,
                       int64_t inner, double scale)
{
    if (dt == KD_F32)
        sum_f32(x, out, outer, reduce, inner, scale);
    else
        sum_f64(x, out, outer, reduce, inner, scale);
}

void kd_cpu_var_rows(kd_dtype dt, const void *x, void *var, void *mean, int64_t outer,
                     int64_t reduce, double divisor)
{
    if (dt == KD_F32)
        var_f32(x, var, mean, outer, reduce, divisor);
    else
        var_f64(x, var, mean, outer, reduce, divisor);
}

void kd_cpu_reduce_max(kd_dtype dt, const void *x, void *out, int64_t *arg, int64_t outer,
                       int64_t reduce, int64_t inner, bool is_min)
{
    if (dt == KD_F32)
        extreme_f32(x, out, arg, outer, reduce, inner, is_min);
    else
        extreme_f64(x, out, arg, outer, reduce, inner, is_min);
}

void kd_cpu_extreme_backward(kd_dtype dt, void *gx, const void *g, const int64_t *arg,
                             int64_t outer, int64_t reduce, int64_t inner)
{
    if (dt == KD_F32)
        extreme_backward_f32(gx, g, arg, outer, reduce, inner);
    else
        extreme_backward_f64(gx, g, arg, outer, reduce, inner);
}
