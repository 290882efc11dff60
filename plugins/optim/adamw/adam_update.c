/* Adam and AdamW kernels: adam_kernels.h for float and double. */
#include "adam_update.h"

#include <math.h>

/* Small tensors are not worth waking the thread team. */
#define ADAM_PARALLEL_MIN 32768

#define T float
#define FN(name) name##_f32
#define FMA fmaf
#define SQRT sqrtf
#include "adam_kernels.h"
#undef T
#undef FN
#undef FMA
#undef SQRT

#define T double
#define FN(name) name##_f64
#define FMA fma
#define SQRT sqrt
#include "adam_kernels.h"
