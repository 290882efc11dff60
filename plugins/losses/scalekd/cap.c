/* The cross-attention projector of ScaleKD (see cap.h). */
#include "cap.h"

#include <math.h>
#include <stdlib.h>

#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5
#define LN_EPS 1e-5
#define EMBED_BOUND 0.02
#define FFN_RATIO 4

const char *const scalekd_cap_part_names[CAP_TENSORS] = {
    "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
    "pos_embed", "query", "query_proj.weight", "query_proj.bias", "q.weight", "q.bias",
    "k.weight", "k.bias", "v.weight", "v.bias", "proj.weight", "proj.bias", "norm.weight",
    "norm.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};

/* A tensor of `shape`, uniform in [-bound, bound) from stream `which` of
 * `seed` (bound 0: all `fill`). */
static kd_tensor *init_tensor(kd_dtype dtype, kd_device device, int ndim, const int64_t *shape,
                              double bound, double fill, uint64_t seed, uint64_t which)
{
    if (bound == 0)
        return kd_tensor_full(dtype, device, ndim, shape, fill);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    kd_tensor *t = kd_tensor_empty(dtype, device, ndim, shape), *src = NULL;
    if (v && t) {
        kd_rng rng = kd_rng_make(seed, which, 0);
        for (int64_t i = 0; i < n; i++)
            v[i] = bound * (2 * kd_rng_uniform(&rng) - 1);
        src = kd_tensor_from_data(KD_F64, ndim, shape, v);
    }
    if (!src || kd_tensor_copy_(t, src) != KD_OK) {
        kd_tensor_free(t);
        t = NULL;
    }
    kd_tensor_free(src);
    free(v);
    return t;
}

kd_status scalekd_cap_init(scalekd_cap *cap, const scalekd_cap_shape *s, kd_dtype dtype,
                           kd_device device, uint64_t seed, uint64_t stream)
{
    cap->shape = *s;
    int64_t cs = s->cs, ct = s->ct, hid = FFN_RATIO * s->ct, len = s->qh * s->qw;
    struct {
        int ndim;
        int64_t shape[4];
        double bound, fill;
    } spec[CAP_TENSORS] = {
        [CAP_CONV_W] = {4, {cs, cs, 3, 3}, 1 / sqrt(9.0 * (double)cs), 0},
        [CAP_CONV_B] = {1, {cs}, 1 / sqrt(9.0 * (double)cs), 0},
        [CAP_BN_W] = {1, {cs}, 0, 1},
        [CAP_BN_B] = {1, {cs}, 0, 0},
        [CAP_BN_MEAN] = {1, {cs}, 0, 0},
        [CAP_BN_VAR] = {1, {cs}, 0, 1},
        [CAP_POS] = {4, {1, cs, s->h, s->w}, EMBED_BOUND, 0},
        [CAP_QUERY] = {2, {len, ct}, EMBED_BOUND, 0},
        [CAP_QPROJ_W] = {2, {ct, ct}, 1 / sqrt((double)ct), 0},
        [CAP_QPROJ_B] = {1, {ct}, 1 / sqrt((double)ct), 0},
        [CAP_Q_W] = {2, {ct, ct}, 1 / sqrt((double)ct), 0},
        [CAP_Q_B] = {1, {ct}, 1 / sqrt((double)ct), 0},
        [CAP_K_W] = {2, {ct, cs}, 1 / sqrt((double)cs), 0},
        [CAP_K_B] = {1, {ct}, 1 / sqrt((double)cs), 0},
        [CAP_V_W] = {2, {ct, cs}, 1 / sqrt((double)cs), 0},
        [CAP_V_B] = {1, {ct}, 1 / sqrt((double)cs), 0},
        [CAP_PROJ_W] = {2, {ct, ct}, 1 / sqrt((double)ct), 0},
        [CAP_PROJ_B] = {1, {ct}, 1 / sqrt((double)ct), 0},
        [CAP_NORM_W] = {1, {ct}, 0, 1},
        [CAP_NORM_B] = {1, {ct}, 0, 0},
        [CAP_FC1_W] = {2, {hid, ct}, 1 / sqrt((double)ct), 0},
        [CAP_FC1_B] = {1, {hid}, 1 / sqrt((double)ct), 0},
        [CAP_FC2_W] = {2, {ct, hid}, 1 / sqrt((double)hid), 0},
        [CAP_FC2_B] = {1, {ct}, 1 / sqrt((double)hid), 0},
    };
    for (int p = 0; p < CAP_TENSORS; p++) {
        if (p == CAP_QUERY && s->input_queries)
            continue;
        cap->t[p] = init_tensor(dtype, device, spec[p].ndim, spec[p].shape, spec[p].bound,
                                spec[p].fill, seed, stream + (uint64_t)p);
        if (!cap->t[p])
            return kd_error_wrap(kd_last_status(), "making %s", scalekd_cap_part_names[p]);
    }
    return KD_OK;
}

void scalekd_cap_free(scalekd_cap *cap)
{
    for (int p = 0; p < CAP_TENSORS; p++) {
        kd_tensor_free(cap->t[p]);
        cap->t[p] = NULL;
    }
}

/* [B, L, heads * d] -> [B, heads, L, d] */
static kd_tensor *split_heads(kd_tensor *x, int heads)
{
    if (!x)
        return NULL; /* shape is read below */
    int64_t b = x->shape[0], l = x->shape[1], d = x->shape[2] / heads;
    static const int swap[4] = {0, 2, 1, 3};
    return kd_permute(kd_reshape(x, 4, (const int64_t[]){b, l, heads, d}), swap);
}

kd_tensor *scalekd_cap_forward(const scalekd_cap *cap, kd_tensor *x, kd_tensor *queries,
                               bool training)
{
    kd_tensor *const *t = cap->t;
    const scalekd_cap_shape *s = &cap->shape;
    const kd_conv2d_params three = {{1, 1}, {1, 1}, {1, 1}, 1};
    int64_t b = x->shape[0], len = s->qh * s->qw, ct = s->ct;
    kd_tensor *kv = kd_relu(kd_batch_norm(kd_conv2d(x, t[CAP_CONV_W], t[CAP_CONV_B], &three),
                                          t[CAP_BN_W], t[CAP_BN_B], t[CAP_BN_MEAN],
                                          t[CAP_BN_VAR], training, BN_MOMENTUM, BN_EPS));
    kv = kd_transpose(kd_flatten(kd_add(kv, t[CAP_POS]), 2, 3), 1, 2); /* [B, HW, Cs] */
    kd_tensor *table = s->input_queries ? queries : t[CAP_QUERY];
    kd_tensor *q = kd_linear(kd_relu(kd_linear(table, t[CAP_QPROJ_W], t[CAP_QPROJ_B])),
                             t[CAP_Q_W], t[CAP_Q_B]);
    if (!s->input_queries) /* one table for the batch */
        q = kd_expand(kd_unsqueeze(q, 0), 3, (const int64_t[]){b, len, ct});
    kd_tensor *k = kd_linear(kv, t[CAP_K_W], t[CAP_K_B]);
    kd_tensor *v = kd_linear(kv, t[CAP_V_W], t[CAP_V_B]);
    double scale = s->softmax_scale / sqrt((double)ct / s->heads);
    kd_tensor *a = kd_scaled_dot_product_attention(split_heads(q, s->heads),
                                                   split_heads(k, s->heads),
                                                   split_heads(v, s->heads), NULL, scale);
    static const int merge[4] = {0, 2, 1, 3};
    a = kd_reshape(kd_permute(a, merge), 3, (const int64_t[]){b, len, ct});
    kd_tensor *o = kd_layer_norm(kd_linear(a, t[CAP_PROJ_W], t[CAP_PROJ_B]), t[CAP_NORM_W],
                                 t[CAP_NORM_B], LN_EPS);
    kd_tensor *ffn = kd_linear(kd_relu(kd_linear(o, t[CAP_FC1_W], t[CAP_FC1_B])),
                               t[CAP_FC2_W], t[CAP_FC2_B]);
    return kd_add(o, ffn);
}
