/* Dropout and drop-path (stochastic depth, timm's drop_path with
 * scale_by_keep). Element (or sample) i is kept when draw number
 * rng->counter + i is >= p, so a mask depends on the seed, stream and
 * counter only, never on the thread count; the rng then advances by the
 * number of draws. With !training or p == 0 the input itself is returned
 * and nothing is recorded. The kernels are in core/backend/cpu/dropout.c. */
#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

/* Returns true when the op has work to do, false for the identity or an
 * error (then kd_last_error says which). */
static bool check_args(const char *op, kd_tensor *x, double p, bool training,
                       const kd_rng *rng, kd_status *st)
{
    *st = KD_OK;
    if (kd_check_float(op, x) != KD_OK) {
        *st = KD_ERR_UNSUPPORTED;
        return false;
    }
    if (!(p >= 0 && p < 1)) {
        *st = kd_error(KD_ERR_INVALID, "%s: p = %g (must be in [0, 1))", op, p);
        return false;
    }
    if (!training || p == 0)
        return false;
    if (!rng) {
        *st = kd_error(KD_ERR_INVALID, "%s: training with p = %g needs an rng", op, p);
        return false;
    }
    if (kd_backend_check(op, x) != KD_OK) {
        *st = KD_ERR_UNSUPPORTED;
        return false;
    }
    return true;
}

static kd_status dropout_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *mask = node->saved[0];
    kd_tensor *gx = kd_tensor_empty_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t n = kd_tensor_numel(x);
    kd_cpu_dropout_backward(x->dtype, kd_tensor_data(g), kd_tensor_data(gx),
                            kd_tensor_data(mask), n, node->farg[0]);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_dropout(kd_tensor *x, double p, bool training, kd_rng *rng)
{
    if (!x)
        return NULL;
    kd_status st;
    if (!check_args("dropout", x, p, training, rng, &st))
        return st == KD_OK ? x : NULL;
    int64_t n = kd_tensor_numel(x);
    bool grad = kd_needs_grad(1, &x);
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *out = xc ? kd_tensor_empty_like(x) : NULL;
    kd_tensor *mask = out && grad ? kd_tensor_empty(KD_U8, KD_CPU, x->ndim, x->shape) : NULL;
    if (!out || (grad && !mask))
        return NULL;
    double scale = 1.0 / (1.0 - p);
    kd_cpu_dropout(x->dtype, kd_tensor_data(xc), kd_tensor_data(out),
                   mask ? kd_tensor_data(mask) : NULL, n, rng, (float)p, scale);
    rng->counter += (uint64_t)n;
    kd_node *node;
    if (kd_record("dropout", dropout_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = mask;
        node->farg[0] = scale;
    }
    return out;
}

static kd_status drop_path_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *factor = node->saved[0];
    kd_tensor *gx = kd_tensor_empty_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t samples = x->shape[0], per = samples ? kd_tensor_numel(x) / samples : 0;
    kd_cpu_scale_samples(x->dtype, kd_tensor_data(g), kd_tensor_data(gx), kd_tensor_data(factor),
                         samples, per);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_drop_path(kd_tensor *x, double p, bool training, kd_rng *rng)
{
    if (!x)
        return NULL;
    kd_status st;
    if (!check_args("drop_path", x, p, training, rng, &st))
        return st == KD_OK ? x : NULL;
    if (x->ndim == 0) {
        kd_error(KD_ERR_INVALID, "drop_path: a 0-dim tensor has no sample dim");
        return NULL;
    }
    int64_t samples = x->shape[0], per = samples ? kd_tensor_numel(x) / samples : 0;
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *out = xc ? kd_tensor_empty_like(x) : NULL;
    kd_tensor *draws = out ? kd_tensor_empty(KD_F32, KD_CPU, 1, &samples) : NULL;
    kd_tensor *factor = draws ? kd_tensor_empty(x->dtype, KD_CPU, 1, &samples) : NULL;
    if (!factor)
        return NULL;
    const float *u = kd_tensor_data(draws);
    kd_rng_fill_uniformf(rng, 0, kd_tensor_data(draws), samples);
    rng->counter += (uint64_t)samples;
    double scale = 1.0 / (1.0 - p);
    for (int64_t s = 0; s < samples; s++) {
        double f = u[s] >= (float)p ? scale : 0.0;
        if (x->dtype == KD_F32)
            ((float *)kd_tensor_data(factor))[s] = (float)f;
        else
            ((double *)kd_tensor_data(factor))[s] = f;
    }
    kd_cpu_scale_samples(x->dtype, kd_tensor_data(xc), kd_tensor_data(out),
                         kd_tensor_data(factor), samples, per);
    kd_node *node;
    if (kd_record("drop_path", drop_path_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        node->saved[0] = factor;
    return out;
}
