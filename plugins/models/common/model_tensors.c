/* Named tensors, initialisers and conv + batch-norm layers for the model
 * plugins (see model_tensors.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_tensors.h"

#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5

kd_tensor *mt_add(model_tensors *mt, uint32_t flags, kd_dtype dtype, int ndim,
                  const int64_t *shape, const char *fmt, ...)
{
    if (mt->n == mt->cap) {
        int cap = mt->cap ? 2 * mt->cap : 128;
        kd_named_tensor *grown = realloc(mt->items, (size_t)cap * sizeof *grown);
        if (!grown) {
            kd_error(KD_ERR_NOMEM, "%s: out of host memory", mt->owner);
            return NULL;
        }
        mt->items = grown;
        mt->cap = cap;
    }
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *owned = strdup(name);
    kd_tensor *t = owned ? kd_tensor_keep(kd_tensor_zeros(dtype, KD_CPU, ndim, shape)) : NULL;
    if (!t) {
        free(owned);
        kd_error(KD_ERR_NOMEM, "%s: out of host memory for %s", mt->owner, name);
        return NULL;
    }
    kd_tensor_set_requires_grad(t, (flags & KD_TENSOR_PARAM) != 0);
    mt->items[mt->n++] = (kd_named_tensor){owned, t, flags};
    return t;
}

void mt_free(model_tensors *mt)
{
    for (int i = 0; i < mt->n; i++) {
        kd_tensor_free(mt->items[i].tensor);
        free((char *)mt->items[i].name);
    }
    free(mt->items);
    mt->items = NULL;
    mt->n = mt->cap = 0;
}

/* w[i] ~ N(0, std) by Box-Muller on pairs of uniform draws, both outputs
 * kept, a chunk of whole Philox blocks at a time. */
static void fill_normal(float *w, int64_t n, double std, const kd_rng *rng)
{
    enum { CHUNK = 1024 };
    float u[CHUNK];
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        kd_rng_fill_uniformf(rng, (uint64_t)i, u, (m + 1) & ~(int64_t)1);
        for (int64_t j = 0; j < m; j += 2) {
            float radius = (float)std * sqrtf(-2.0f * logf(1.0f - u[j]));
            float angle = 6.2831853f * u[j + 1];
            w[i + j] = radius * cosf(angle);
            if (j + 1 < m)
                w[i + j + 1] = radius * sinf(angle);
        }
    }
}

static void fill_uniform(float *w, int64_t n, double bound, const kd_rng *rng)
{
    kd_rng_fill_uniformf(rng, 0, w, n);
    for (int64_t i = 0; i < n; i++)
        w[i] = (float)((2.0 * w[i] - 1.0) * bound);
}

static kd_status init_with(const model_tensors *mt, kd_tensor *t, int index, double scale,
                           void (*fill)(float *, int64_t, double, const kd_rng *))
{
    kd_rng rng = kd_rng_make(mt->seed, 0, (uint64_t)index);
    int64_t n = kd_tensor_numel(t);
    if (t->dtype == KD_F32) {
        fill(kd_tensor_data(t), n, scale, &rng);
        return KD_OK;
    }
    kd_tensor *draws = kd_tensor_empty(KD_F32, KD_CPU, t->ndim, t->shape);
    if (!draws)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", mt->owner);
    fill(kd_tensor_data(draws), n, scale, &rng);
    kd_status st = kd_tensor_copy_(t, draws);
    kd_tensor_free(draws);
    return st;
}

kd_status mt_init_normal(const model_tensors *mt, kd_tensor *t, int index, double std)
{
    return init_with(mt, t, index, std, fill_normal);
}

kd_status mt_init_uniform(const model_tensors *mt, kd_tensor *t, int index, double bound)
{
    return init_with(mt, t, index, bound, fill_uniform);
}

kd_status mt_add_bn(model_tensors *mt, bn_layer *b, const char *prefix, int channels)
{
    const int64_t c = channels;
    const uint32_t affine = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
    b->weight = mt_add(mt, affine, mt->dtype, 1, &c, "%s.weight", prefix);
    b->bias = mt_add(mt, affine, mt->dtype, 1, &c, "%s.bias", prefix);
    b->running_mean = mt_add(mt, KD_TENSOR_BUFFER, mt->dtype, 1, &c, "%s.running_mean", prefix);
    b->running_var = mt_add(mt, KD_TENSOR_BUFFER, mt->dtype, 1, &c, "%s.running_var", prefix);
    b->num_batches_tracked = mt_add(mt, KD_TENSOR_BUFFER | KD_TENSOR_OPTIONAL, KD_I64, 0, &c,
                                    "%s.num_batches_tracked", prefix);
    if (!b->weight || !b->bias || !b->running_mean || !b->running_var || !b->num_batches_tracked)
        return KD_ERR_NOMEM;
    kd_status st = kd_tensor_fill_(b->weight, 1.0);
    return st == KD_OK ? kd_tensor_fill_(b->running_var, 1.0) : st;
}

kd_tensor *bn_forward(kd_tensor *x, const bn_layer *b, bool training)
{
    kd_tensor *y = kd_batch_norm(x, b->weight, b->bias, b->running_mean, b->running_var,
                                 training, BN_MOMENTUM, BN_EPS);
    if (y && training)
        (*(int64_t *)kd_tensor_data(b->num_batches_tracked))++;
    return y;
}

kd_status mt_add_conv(model_tensors *mt, conv_layer *c, const char *prefix, int cin, int cout,
                      int k, int stride, int padding, int groups, bool bias, double std)
{
    int index = mt->n;
    c->weight = mt_add(mt, KD_TENSOR_PARAM, mt->dtype, 4,
                       (const int64_t[]){cout, cin / groups, k, k}, "%s.weight", prefix);
    if (!c->weight)
        return KD_ERR_NOMEM;
    const int64_t b = cout;
    c->bias = bias ? mt_add(mt, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, mt->dtype, 1, &b,
                            "%s.bias", prefix)
                   : NULL;
    if (bias && !c->bias)
        return KD_ERR_NOMEM;
    c->p = (kd_conv2d_params){{stride, stride}, {padding, padding}, {1, 1}, groups};
    return mt_init_normal(mt, c->weight, index, std);
}

kd_tensor *conv_forward(kd_tensor *x, const conv_layer *c)
{
    return kd_conv2d(x, c->weight, c->bias, &c->p);
}

kd_tensor *conv_bn_forward(kd_tensor *x, const conv_layer *c, const bn_layer *b, bool training)
{
    if (!training && c->folded_weight)
        return kd_conv2d(x, c->folded_weight, c->folded_bias, &c->p);
    return bn_forward(conv_forward(x, c), b, training);
}

kd_status conv_fold(conv_layer *c, const bn_layer *b)
{
    int64_t cout = c->weight->shape[0];
    kd_tensor *s = kd_mul(b->weight, kd_pow_scalar(kd_add_scalar(b->running_var, BN_EPS), -0.5));
    kd_tensor *w = kd_mul(c->weight, kd_reshape(s, 4, (const int64_t[]){cout, 1, 1, 1}));
    kd_tensor *shift = c->bias ? kd_sub(c->bias, b->running_mean) : kd_neg(b->running_mean);
    kd_tensor *bias = kd_add(b->bias, kd_mul(shift, s));
    c->folded_weight = kd_tensor_keep(kd_contiguous(w));
    c->folded_bias = kd_tensor_keep(kd_contiguous(bias));
    return c->folded_weight && c->folded_bias ? KD_OK : kd_last_status();
}

void conv_free_folded(conv_layer *c)
{
    kd_tensor_free(c->folded_weight);
    kd_tensor_free(c->folded_bias);
    c->folded_weight = c->folded_bias = NULL;
}
