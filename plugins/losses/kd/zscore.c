#include "zscore.h"

#include <math.h>

#include <kdengine/ops.h>

/* sqrt's slope is infinite at a constant row (variance 0) and would turn
 * the gradient into NaN; flooring the variance here stops it. The floor's
 * root (1e-15) is 1e-8 of ZSCORE_EPS, so no value moves. */
#define VARIANCE_FLOOR 1e-30

kd_tensor *zscore_rows(kd_tensor *x, double temperature)
{
    const int dim[1] = {1};
    kd_tensor *centred = kd_sub(x, kd_mean(x, 1, dim, true));
    kd_tensor *var = kd_var(x, 1, dim, 1, true);
    kd_tensor *std = kd_sqrt(kd_clamp(var, VARIANCE_FLOOR, INFINITY));
    /* One [N, 1] factor: a broadcast multiply is the cheapest row op. */
    kd_tensor *scale =
        kd_pow_scalar(kd_mul_scalar(kd_add_scalar(std, ZSCORE_EPS), temperature), -1);
    return kd_mul(centred, scale);
}
