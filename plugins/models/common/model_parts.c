/* Shared parts of the token-based model plugins (model_parts.h). */
#include "model_parts.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- weights */

/* Redraws every value of t beyond +-bound from a second stream of the
 * tensor's, one normal draw at a time, rounded to float32 as the first
 * draws are. */
static void redraw_beyond(const model_tensors *l, kd_tensor *t, int index, double std,
                          double bound)
{
    kd_rng rng = kd_rng_make(l->seed, 1, (uint64_t)index);
    int64_t n = kd_tensor_numel(t);
    float *f = t->dtype == KD_F32 ? kd_tensor_data(t) : NULL;
    double *d = t->dtype == KD_F64 ? kd_tensor_data(t) : NULL;
    for (int64_t i = 0; i < n; i++) {
        double v = f ? f[i] : d[i];
        while (fabs(v) > bound)
            v = (float)(kd_rng_normal(&rng) * std);
        if (f)
            f[i] = (float)v;
        else
            d[i] = v;
    }
}

kd_tensor *mp_add(model_tensors *l, uint32_t flags, mp_init init, double scale, int ndim,
                  const int64_t *shape, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int index = l->n;
    kd_tensor *t = mt_add(l, flags, l->dtype, ndim, shape, "%s", name);
    if (!t)
        return NULL;
    kd_status st = KD_OK;
    switch (init) {
    case MP_ZEROS:
        break;
    case MP_ONES:
        st = kd_tensor_fill_(t, 1.0);
        break;
    case MP_UNIFORM:
        st = mt_init_uniform(l, t, index, scale);
        break;
    case MP_NORMAL:
    case MP_TRUNC_NORMAL:
        st = mt_init_normal(l, t, index, scale);
        if (st == KD_OK && init == MP_TRUNC_NORMAL)
            redraw_beyond(l, t, index, scale, 2 * scale);
        break;
    }
    if (st != KD_OK) {
        kd_error_wrap(st, "%s: initialising %s", l->owner, name);
        return NULL;
    }
    return t;
}

kd_status mp_add_linear(model_tensors *l, mp_linear *lin, const char *prefix, int in, int out,
                        mp_init w_init, double w_scale, mp_init b_init, double b_scale)
{
    const int64_t w_shape[2] = {out, in}, b_shape = out;
    lin->weight = mp_add(l, KD_TENSOR_PARAM, w_init, w_scale, 2, w_shape, "%s.weight", prefix);
    lin->bias = lin->weight ? mp_add(l, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, b_init, b_scale,
                                     1, &b_shape, "%s.bias", prefix)
                            : NULL;
    return lin->bias ? KD_OK : kd_last_status();
}

kd_status mp_add_norm(model_tensors *l, mp_norm *norm, const char *prefix, int dim)
{
    const int64_t shape = dim;
    const uint32_t flags = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
    norm->weight = mp_add(l, flags, MP_ONES, 0, 1, &shape, "%s.weight", prefix);
    norm->bias = norm->weight ? mp_add(l, flags, MP_ZEROS, 0, 1, &shape, "%s.bias", prefix)
                              : NULL;
    return norm->bias ? KD_OK : kd_last_status();
}

/* -------------------------------------------------------------- layers */

kd_tensor *mp_linear_forward(const mp_linear *lin, kd_tensor *x)
{
    return kd_linear(x, lin->weight, lin->bias);
}

kd_tensor *mp_norm_forward(const mp_norm *norm, kd_tensor *x, double eps)
{
    return kd_layer_norm(x, norm->weight, norm->bias, eps);
}

kd_tensor *mp_mlp_forward(const mp_mlp *mlp, kd_tensor *x)
{
    return mp_linear_forward(&mlp->fc2, kd_gelu(mp_linear_forward(&mlp->fc1, x)));
}

kd_tensor *mp_patch_embed_forward(const mp_patch_embed *pe, kd_tensor *x)
{
    kd_conv2d_params p = {{pe->patch, pe->patch}, {0, 0}, {1, 1}, 1};
    kd_tensor *map = kd_conv2d(x, pe->weight, pe->bias, &p);
    return kd_transpose(kd_flatten(map, 2, 3), 1, 2);
}

/* ------------------------------------------------------------- checks */

kd_status mp_read_config(const char *model, const kd_create_args *args, mp_config *out)
{
    const kd_params *p = args->params;
    int64_t num_classes = kd_params_integer(p, "num_classes");
    int64_t in_chans = kd_params_integer(p, "in_chans");
    int64_t img_size = kd_params_integer(p, "img_size");
    int64_t patch = kd_params_integer(p, "patch_size");
    int64_t depth = kd_params_integer(p, "depth");
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only the CPU device is supported for now, got "
                        "device %d", model, (int)args->device);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: computes in float32 or float64, not %s", model,
                        kd_dtype_name(args->dtype));
    if (num_classes < 1 || num_classes > (1 << 24))
        return kd_error(KD_ERR_INVALID, "%s: num_classes must be 1..%d, got %lld", model,
                        1 << 24, (long long)num_classes);
    if (in_chans < 1 || in_chans > 4)
        return kd_error(KD_ERR_INVALID, "%s: in_chans must be 1..4, got %lld", model,
                        (long long)in_chans);
    if (patch < 1 || img_size < patch || img_size > 4096)
        return kd_error(KD_ERR_INVALID, "%s: img_size %lld must be at least patch_size %lld "
                        "(and at most 4096)", model, (long long)img_size, (long long)patch);
    if (depth < 1 || depth > 64)
        return kd_error(KD_ERR_INVALID, "%s: depth must be 1..64, got %lld", model,
                        (long long)depth);
    *out = (mp_config){(int)num_classes, (int)in_chans, (int)img_size, (int)patch, (int)depth,
                       kd_params_number(p, "drop_rate"), kd_params_number(p, "drop_path_rate"),
                       (int)(img_size / patch)};
    if (!(out->drop_rate >= 0 && out->drop_rate < 1) ||
        !(out->drop_path_rate >= 0 && out->drop_path_rate < 1))
        return kd_error(KD_ERR_INVALID, "%s: drop_rate %g and drop_path_rate %g must be in "
                        "[0, 1)", model, out->drop_rate, out->drop_path_rate);
    return KD_OK;
}

kd_status mp_check_images(const char *model, const mp_config *c, const kd_tensor *x)
{
    if (x->ndim == 4 && x->shape[0] >= 1 && x->shape[1] == c->in_chans &&
        x->shape[2] == c->img_size && x->shape[3] == c->img_size)
        return KD_OK;
    char s[96];
    return kd_error(KD_ERR_INVALID, "%s: input %s is not [N, %d, %d, %d] images (img_size %d: "
                    "the position embedding or token MLPs are fixed to it)", model,
                    kd_shape_str(x, s, sizeof s), c->in_chans, c->img_size, c->img_size,
                    c->img_size);
}

kd_status mp_check_tap_input(const char *model, const kd_tap_info *tap, int64_t tokens,
                             const kd_tensor *x)
{
    bool ok = tokens > 0 ? x->ndim == 3 && x->shape[1] == tokens : x->ndim == 2;
    if (ok && x->shape[0] >= 1 && x->shape[x->ndim - 1] == tap->channels)
        return KD_OK;
    char s[96], want[64];
    if (tokens > 0)
        snprintf(want, sizeof want, "[N, %lld, %d]", (long long)tokens, tap->channels);
    else
        snprintf(want, sizeof want, "[N, %d]", tap->channels);
    return kd_error(KD_ERR_INVALID, "%s: forward_from %s: input %s is not %s", model, tap->name,
                    kd_shape_str(x, s, sizeof s), want);
}

void mp_strip_module_prefix(kd_weight_fix *fix)
{
    static const char prefix[] = "module.";
    if (strncmp(fix->name, prefix, sizeof prefix - 1) == 0)
        fix->name += sizeof prefix - 1;
}
