/* Binary elementwise kernels with NumPy broadcasting (cpu.h). */
#include "cpu.h"

/* Where output row r (of the dims before the last) reads a and b. */
static inline void bcast_row_offsets(int64_t r, int ndim, const int64_t *shape,
                                     const int64_t *sa, const int64_t *sb, int64_t *oa,
                                     int64_t *ob)
{
    int64_t rem = r;
    *oa = *ob = 0;
    for (int d = ndim - 2; d >= 0; d--) {
        int64_t i = rem % shape[d];
        rem /= shape[d];
        *oa += i * sa[d];
        *ob += i * sb[d];
    }
}

#define T float
#define FN(name) name##_f32
#include "elementwise_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "elementwise_kernels.h"
#undef T
#undef FN

void kd_cpu_binary_same(kd_dtype dt, kd_binary_op op, void *out, const void *a, const void *b,
                        int64_t n)
{
    if (dt == KD_F32)
        binary_same_f32(op, out, a, b, n);
    else
        binary_same_f64(op, out, a, b, n);
}

void kd_cpu_binary_bcast(kd_dtype dt, kd_binary_op op, void *out, const void *a,
                         const int64_t *sa, const void *b, const int64_t *sb, int ndim,
                         const int64_t *shape)
{
    if (dt == KD_F32)
        binary_bcast_f32(op, out, a, sa, b, sb, ndim, shape);
    else
        binary_bcast_f64(op, out, a, sa, b, sb, ndim, shape);
}
