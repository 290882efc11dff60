/* Custom ops for the tests: see custom_ops.h. */
#include <math.h>
#include <stdlib.h>

#include "custom_ops.h"

/* log1p(exp(x)) without overflow for large x. */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* The forward by hand, as a plugin's own kernel would be: a new contiguous
 * tensor, nothing recorded. */
static kd_tensor *softplus_forward(kd_tensor *x)
{
    bool was = kd_set_grad_enabled(false);
    kd_tensor *c = kd_contiguous(x);
    kd_set_grad_enabled(was);
    kd_tensor *y = c ? kd_tensor_empty(c->dtype, c->device, c->ndim, c->shape) : NULL;
    if (!y)
        return NULL;
    int64_t n = kd_tensor_numel(c);
    if (c->dtype == KD_F32) {
        const float *xd = kd_tensor_data(c);
        float *yd = kd_tensor_data(y);
        for (int64_t i = 0; i < n; i++)
            yd[i] = (float)softplus(xd[i]);
    } else if (c->dtype == KD_F64) {
        const double *xd = kd_tensor_data(c);
        double *yd = kd_tensor_data(y);
        for (int64_t i = 0; i < n; i++)
            yd[i] = softplus(xd[i]);
    } else {
        kd_error(KD_ERR_UNSUPPORTED, "softplus: dtype %s", kd_dtype_name(c->dtype));
        return NULL;
    }
    return y;
}

static kd_status softplus_backward(void *ctx, const kd_tensor *grad_output, int n_inputs,
                                   kd_tensor *const *inputs, const kd_tensor *output,
                                   kd_tensor **grad_inputs)
{
    (void)ctx, (void)n_inputs, (void)output;
    grad_inputs[0] = kd_mul((kd_tensor *)grad_output, kd_sigmoid(inputs[0]));
    return grad_inputs[0] ? KD_OK : kd_last_status();
}

static kd_status softplus_wrong_backward(void *ctx, const kd_tensor *grad_output, int n_inputs,
                                         kd_tensor *const *inputs, const kd_tensor *output,
                                         kd_tensor **grad_inputs)
{
    (void)ctx, (void)grad_output, (void)n_inputs, (void)output;
    grad_inputs[0] = kd_sigmoid(inputs[0]);
    return grad_inputs[0] ? KD_OK : kd_last_status();
}

kd_tensor *kt_custom_softplus(kd_tensor *x)
{
    static const kd_custom_op op = {sizeof op, "softplus", softplus_backward, NULL};
    return kd_custom_apply(&op, 1, &x, softplus_forward(x), NULL);
}

kd_tensor *kt_custom_softplus_wrong(kd_tensor *x)
{
    static const kd_custom_op op = {sizeof op, "softplus_wrong", softplus_wrong_backward, NULL};
    return kd_custom_apply(&op, 1, &x, softplus_forward(x), NULL);
}

/* d(s a b^2)/da = s b^2, d/db = 2 s a b; only for the inputs that need it. */
static kd_status scaled_mul_square_backward(void *ctx, const kd_tensor *grad_output,
                                            int n_inputs, kd_tensor *const *inputs,
                                            const kd_tensor *output, kd_tensor **grad_inputs)
{
    (void)n_inputs, (void)output;
    double s = *(const double *)ctx;
    kd_tensor *g = (kd_tensor *)grad_output, *a = inputs[0], *b = inputs[1];
    if (a->requires_grad && !(grad_inputs[0] = kd_mul_scalar(kd_mul(g, kd_mul(b, b)), s)))
        return kd_last_status();
    if (b->requires_grad && !(grad_inputs[1] = kd_mul_scalar(kd_mul(g, kd_mul(a, b)), 2 * s)))
        return kd_last_status();
    return KD_OK;
}

kd_tensor *kt_custom_scaled_mul_square(kd_tensor *a, kd_tensor *b, double scale)
{
    static const kd_custom_op op = {sizeof op, "scaled_mul_square", scaled_mul_square_backward,
                                    free};
    double *ctx = malloc(sizeof *ctx);
    if (!ctx) {
        kd_error(KD_ERR_NOMEM, "scaled_mul_square: out of host memory");
        return NULL;
    }
    *ctx = scale;
    /* The forward through SDK ops with grad mode off: any kernel will do. */
    bool was = kd_set_grad_enabled(false);
    kd_tensor *y = kd_mul_scalar(kd_mul(a, kd_mul(b, b)), scale);
    kd_set_grad_enabled(was);
    kd_tensor *in[2] = {a, b};
    return kd_custom_apply(&op, 2, in, y, ctx);
}
