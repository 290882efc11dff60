/* Gradient clipping (grad_clip.h), with the SDK's ops so it runs wherever
 * the gradients live. Intermediates belong to the caller's step scope. */
#include "grad_clip.h"

#include <math.h>

#include <kdengine/ops.h>

kd_status kd_grad_norm(int n, const kd_named_tensor *params, double *norm)
{
    double squares = 0;
    for (int i = 0; i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (!g)
            continue;
        kd_tensor *sum = kd_sum_all(kd_mul(g, g));
        if (!sum)
            return kd_error_wrap(kd_last_status(), "the gradient norm of %s", params[i].name);
        squares += kd_tensor_get(sum, 0);
    }
    *norm = sqrt(squares);
    return KD_OK;
}

kd_status kd_clip_grad_norm(int n, const kd_named_tensor *params, double max_norm, double *norm)
{
    kd_status st = kd_grad_norm(n, params, norm);
    if (st != KD_OK)
        return st;
    double coef = max_norm / (*norm + 1e-6);
    if (!(coef < 1.0))
        return KD_OK; /* torch multiplies by the clamped 1.0: no change */
    for (int i = 0; i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (!g)
            continue;
        double c = g->dtype == KD_F32 ? (double)(float)coef : coef;
        kd_tensor *scaled = kd_mul_scalar(g, c);
        st = scaled ? kd_tensor_copy_(g, scaled) : kd_last_status();
        if (st != KD_OK)
            return kd_error_wrap(st, "clipping the gradient of %s", params[i].name);
    }
    return KD_OK;
}

kd_status kd_clip_grad_value(int n, const kd_named_tensor *params, double value)
{
    for (int i = 0; i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (!g)
            continue;
        kd_tensor *clamped = kd_clamp(g, -value, value);
        kd_status st = clamped ? kd_tensor_copy_(g, clamped) : kd_last_status();
        if (st != KD_OK)
            return kd_error_wrap(st, "clipping the gradient of %s", params[i].name);
    }
    return KD_OK;
}
