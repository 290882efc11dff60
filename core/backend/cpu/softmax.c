/* softmax and log_softmax kernels (cpu.h). The row maximum is subtracted
 * before exponentiating; log_softmax is (x - m) - log(sum): m + log(sum)
 * rounded to f32 would lose a rounding unit of m, large next to small
 * outputs. */
#include <math.h>
#include <stdbool.h>

#include "cpu.h"
#include "softmax_rows.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */
#define TILE 128      /* inner elements a thread handles at once */

#define T float
#define FN(name) name##_f32
#define SIMD_EXP KD_SIMD_EXP_f32
#include "softmax_kernels.h"
#undef T
#undef FN
#undef SIMD_EXP
#define T double
#define FN(name) name##_f64
#define SIMD_EXP KD_SIMD_EXP_f64
#include "softmax_kernels.h"
#undef T
#undef FN
#undef SIMD_EXP

void kd_cpu_softmax_forward(kd_dtype dt, const void *x, void *y, int64_t outer, int64_t reduce,
                            int64_t inner, bool log_out)
{
    if (inner == 1 && dt == KD_F32)
        softmax_rows_f32(x, y, outer, reduce, log_out);
    else if (inner == 1)
        softmax_rows_f64(x, y, outer, reduce, log_out);
    else if (dt == KD_F32)
        softmax_tiles_f32(x, y, outer, reduce, inner, log_out);
    else
        softmax_tiles_f64(x, y, outer, reduce, inner, log_out);
}

void kd_cpu_softmax_backward(kd_dtype dt, const void *y, const void *g, void *gx, int64_t outer,
                             int64_t reduce, int64_t inner, bool log_out)
{
    if (dt == KD_F32)
        softmax_backward_f32(y, g, gx, outer, reduce, inner, log_out);
    else
        softmax_backward_f64(y, g, gx, outer, reduce, inner, log_out);
}
