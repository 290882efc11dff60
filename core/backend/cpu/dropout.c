/* Dropout and drop-path kernels (cpu.h). Element i of a mask is kept when
 * draw number rng->counter + i is >= p; tasks fill disjoint slices, so the
 * mask does not depend on the thread count. */
#include "cpu.h"

/* Draws per task: each task fills its own slice of the mask. */
#define MASK_CHUNK 1024

#define T float
#define FN(name) name##_f32
#include "dropout_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "dropout_kernels.h"
#undef T
#undef FN

void kd_cpu_dropout(kd_dtype dt, const void *x, void *y, uint8_t *mask, int64_t n,
                    const kd_rng *rng, float p, double scale)
{
    if (dt == KD_F32)
        dropout_f32(x, y, mask, n, rng, p, (float)scale);
    else
        dropout_f64(x, y, mask, n, rng, p, scale);
}

void kd_cpu_dropout_backward(kd_dtype dt, const void *g, void *gx, const uint8_t *mask,
                             int64_t n, double scale)
{
    if (dt == KD_F32)
        dropout_grad_f32(g, gx, mask, n, (float)scale);
    else
        dropout_grad_f64(g, gx, mask, n, scale);
}

void kd_cpu_scale_samples(kd_dtype dt, const void *x, void *y, const void *factor,
                          int64_t samples, int64_t per)
{
    if (dt == KD_F32)
        scale_samples_f32(x, y, factor, samples, per);
    else
        scale_samples_f64(x, y, factor, samples, per);
}
