/* kd_zscore: row standardisation, composed of the reductions and
 * element-wise ops, so its gradient is theirs and it runs wherever they
 * run. */
#include <math.h>

#include "../internal.h"

/* sqrt's slope is infinite at a constant row (variance 0) and would turn
 * the gradient into NaN; flooring the variance stops it. Its root (1e-15)
 * is far below any eps a caller adds, so no value moves. */
#define VARIANCE_FLOOR 1e-30

kd_tensor *kd_zscore(kd_tensor *x, double eps)
{
    if (!x)
        return NULL;
    if (x->ndim != 2 || x->shape[1] < 2) {
        char s[96];
        kd_error(KD_ERR_INVALID, "zscore: %s is not [N, C] rows with C >= 2",
                 kd_shape_str(x, s, sizeof s));
        return NULL;
    }
    if (!(eps >= 0) || !isfinite(eps)) {
        kd_error(KD_ERR_INVALID, "zscore: eps must be finite and >= 0, got %g", eps);
        return NULL;
    }
    const int dim[1] = {1};
    kd_tensor *centred = kd_sub(x, kd_mean(x, 1, dim, true));
    kd_tensor *var = kd_var(x, 1, dim, 1, true);
    kd_tensor *std = kd_sqrt(kd_clamp(var, VARIANCE_FLOOR, INFINITY));
    /* one [N, 1] factor: a broadcast multiply is the cheapest row op */
    return kd_mul(centred, kd_pow_scalar(kd_add_scalar(std, eps), -1));
}
