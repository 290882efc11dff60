/* Shared parts of the token-based model plugins (model_parts.h). */
#include "model_parts.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- weights */

/* w[i] ~ N(0, 1) by Box-Muller on pairs of uniform draws from the start
 * of rng's stream, both outputs kept, a chunk of whole Philox blocks at a
 * time. */
static void fill_std_normal(float *w, int64_t n, const kd_rng *rng)
{
    enum { CHUNK = 1024 };
    float u[CHUNK];
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        kd_rng_fill_uniformf(rng, (uint64_t)i, u, (m + 1) & ~(int64_t)1);
        for (int64_t j = 0; j < m; j += 2) {
            float radius = sqrtf(-2.0f * logf(1.0f - u[j]));
            float angle = 6.2831853f * u[j + 1];
            w[i + j] = radius * cosf(angle);
            if (j + 1 < m)
                w[i + j + 1] = radius * sinf(angle);
        }
    }
}

/* Fills n float32 draws of `init` from the stream keyed by `index`. */
static void fill(float *w, int64_t n, mp_init init, double scale, uint64_t seed, uint64_t index)
{
    kd_rng rng = kd_rng_make(seed, 0, index);
    switch (init) {
    case MP_ZEROS:
    case MP_ONES:
        for (int64_t i = 0; i < n; i++)
            w[i] = init == MP_ONES ? 1.0f : 0.0f;
        return;
    case MP_UNIFORM:
        kd_rng_fill_uniformf(&rng, 0, w, n);
        for (int64_t i = 0; i < n; i++)
            w[i] = (float)((2.0 * w[i] - 1.0) * scale);
        return;
    case MP_NORMAL:
    case MP_TRUNC_NORMAL:
        fill_std_normal(w, n, &rng);
        if (init == MP_TRUNC_NORMAL) {
            /* redraws come from a second stream, one value at a time */
            kd_rng redraw = kd_rng_make(seed, 1, index);
            for (int64_t i = 0; i < n; i++)
                while (fabsf(w[i]) > 2.0f)
                    w[i] = (float)kd_rng_normal(&redraw);
        }
        for (int64_t i = 0; i < n; i++)
            w[i] = (float)(w[i] * scale);
        return;
    }
}

kd_tensor *mp_add(mp_tensors *l, uint32_t flags, mp_init init, double scale, int ndim,
                  const int64_t *shape, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        kd_named_tensor *grown = realloc(l->items, (size_t)cap * sizeof *grown);
        if (!grown) {
            kd_error(KD_ERR_NOMEM, "%s: out of host memory for %s", l->model, name);
            return NULL;
        }
        l->items = grown;
        l->cap = cap;
    }
    char *owned = strdup(name);
    kd_tensor *t = owned ? kd_tensor_empty(l->dtype, KD_CPU, ndim, shape) : NULL;
    kd_tensor *draws = t && l->dtype != KD_F32 ? kd_tensor_empty(KD_F32, KD_CPU, ndim, shape) : t;
    if (!draws) {
        kd_tensor_free(t);
        free(owned);
        kd_error(KD_ERR_NOMEM, "%s: out of host memory for %s", l->model, name);
        return NULL;
    }
    fill(kd_tensor_data(draws), kd_tensor_numel(t), init, scale, l->seed, (uint64_t)l->n);
    if (draws != t) {
        kd_status st = kd_tensor_copy_(t, draws);
        kd_tensor_free(draws);
        if (st != KD_OK) {
            kd_tensor_free(t);
            free(owned);
            kd_error_wrap(st, "%s: %s", l->model, name);
            return NULL;
        }
    }
    kd_tensor_set_requires_grad(t, (flags & KD_TENSOR_PARAM) != 0);
    l->items[l->n++] = (kd_named_tensor){owned, t, flags};
    return t;
}

void mp_tensors_free(mp_tensors *l)
{
    for (int i = 0; i < l->n; i++) {
        kd_tensor_free(l->items[i].tensor);
        free((char *)l->items[i].name);
    }
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

kd_status mp_add_linear(mp_tensors *l, mp_linear *lin, const char *prefix, int in, int out,
                        mp_init w_init, double w_scale, mp_init b_init, double b_scale)
{
    const int64_t w_shape[2] = {out, in}, b_shape = out;
    lin->weight = mp_add(l, KD_TENSOR_PARAM, w_init, w_scale, 2, w_shape, "%s.weight", prefix);
    lin->bias = lin->weight ? mp_add(l, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, b_init, b_scale,
                                     1, &b_shape, "%s.bias", prefix)
                            : NULL;
    return lin->bias ? KD_OK : kd_last_status();
}

kd_status mp_add_norm(mp_tensors *l, mp_norm *norm, const char *prefix, int dim)
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

kd_status mp_check_args(const char *model, kd_dtype dtype, const kd_forward_args *args,
                        const char *what)
{
    if (!args || !args->input || !args->want || !args->taps)
        return kd_error(KD_ERR_INVALID, "%s: %s needs an input, want and taps", model, what);
    const kd_tensor *x = args->input;
    if (x->dtype != dtype || x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: %s takes %s CPU tensors, got %s on device %d",
                        model, what, kd_dtype_name(dtype), kd_dtype_name(x->dtype),
                        (int)x->device);
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
