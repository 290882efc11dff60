/* LAMB kernels: lamb_kernels.h for float and double. */
#include "lamb_update.h"

#include <math.h>

/* Elements per partial sum of a norm: fixed, so sums do not depend on the
 * thread count. */
#define LAMB_BLOCK 8192
/* Small tensors are not worth waking the thread team. */
#define LAMB_PARALLEL_MIN 32768

int64_t kd_lamb_blocks(int64_t n)
{
    return (n + LAMB_BLOCK - 1) / LAMB_BLOCK;
}

#define T float
#define FN(name) name##_f32
#define FMA fmaf
#define SQRT sqrtf
#include "lamb_kernels.h"
#undef T
#undef FN
#undef FMA
#undef SQRT

#define T double
#define FN(name) name##_f64
#define FMA fma
#define SQRT sqrt
#include "lamb_kernels.h"
