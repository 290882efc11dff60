/* Unary elementwise kernels (cpu.h): math functions, activations and
 * scalar ops. */
/* type-generic: exp, log, erf... of a float are expf, logf, erff */
#include <tgmath.h>

#include "cpu.h"
#include "erf_f32.h"

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794
#define GELU_K 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_C 0.044715

/* ERF, EXP_NEG (exp of a number <= 0): float's loops take erf_f32.h's
 * vectorisable ones (it states their bounds), double's libm's */
#define T float
#define FN(name) name##_f32
#define ERF kd_erf_f32
#define EXP_NEG kd_exp_neg_f32
#include "unary_kernels.h"
#undef T
#undef FN
#undef ERF
#undef EXP_NEG
#define T double
#define FN(name) name##_f64
#define ERF erf
#define EXP_NEG exp
#include "unary_kernels.h"
#undef T
#undef FN
#undef ERF
#undef EXP_NEG

void kd_cpu_unary_forward(kd_dtype dt, kd_unary_op op, void *out, const void *in, int64_t n,
                          double lo, double hi)
{
    if (dt == KD_F32)
        unary_forward_f32(op, out, in, n, (float)lo, (float)hi);
    else
        unary_forward_f64(op, out, in, n, lo, hi);
}

void kd_cpu_unary_backward(kd_dtype dt, kd_unary_op op, void *gx, const void *gy, const void *x,
                           const void *y, int64_t n, double lo, double hi)
{
    if (dt == KD_F32)
        unary_backward_f32(op, gx, gy, x, y, n, (float)lo, (float)hi);
    else
        unary_backward_f64(op, gx, gy, x, y, n, lo, hi);
}
