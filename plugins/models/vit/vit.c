/* Vision Transformers as timm 0.9.16 builds them: vit_base_patch16_224,
 * deit_{tiny,small,base}_patch16_224 (one VisionTransformer class, the
 * same keys) and their distilled variants (a second prefix token and
 * head, DeiT's VisionTransformerDistilled).
 *
 * A patch embedding (a convolution of kernel and stride patch_size,
 * flattened to tokens), the class token (and the distillation token) in
 * front, a learned position embedding added to all of them, pre-norm
 * blocks (x + attn(norm1(x)), x + mlp(norm2(x)), LayerNorm eps 1e-6,
 * exact GELU), a final norm, and the class token's features (the mean of
 * the two prefix tokens' for distilled models) into the head.
 *
 * Taps by timm module name, in forward order: "patch_embed" (tokens
 * without prefix), "pos_drop" (prefix tokens joined, position embedding
 * added), "blocks.0".., "norm", "pre_logits", then for distilled models
 * "logits_dist" (head_dist on the distillation token), and "logits".
 * Distilled models average the two heads into "logits" in eval, and in
 * training with distilled_training (timm's set_distilled_training) give
 * the class head alone, so a loss can train "logits" on the labels and
 * distil the teacher into "logits_dist", as DeiT does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/model_chain.h"
#include "../common/model_parts.h"
#include "../common/model_layers.h"

#define LN_EPS 1e-6
#define MAX_DEPTH 64
#define MAX_TAPS (MAX_DEPTH + 6)

typedef struct vit_arch {
    const char *name;
    int dim, heads;
    bool distilled;
} vit_arch;

static const vit_arch ARCHS[] = {
    {"vit_base_patch16_224", 768, 12, false},
    {"deit_tiny_patch16_224", 192, 3, false},
    {"deit_small_patch16_224", 384, 6, false},
    {"deit_base_patch16_224", 768, 12, false},
    {"deit_tiny_distilled_patch16_224", 192, 3, true},
    {"deit_small_distilled_patch16_224", 384, 6, true},
    {"deit_base_distilled_patch16_224", 768, 12, true},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

typedef enum tap_kind {
    TAP_PATCH_EMBED,
    TAP_POS_DROP,
    TAP_BLOCK,
    TAP_NORM,
    TAP_PRE_LOGITS,
    TAP_LOGITS_DIST,
    TAP_LOGITS,
} tap_kind;

typedef struct vit_block {
    mp_norm norm1, norm2;
    mp_linear qkv, proj;
    mp_mlp mlp;
    double drop_path;
} vit_block;

typedef struct vit {
    const vit_arch *arch;
    mp_config cfg;
    bool distilled_training;
    int n_prefix, n_tokens; /* prefix tokens, and all tokens */
    model_tensors params;
    kd_tensor *cls_token, *pos_embed, *dist_token;
    mp_patch_embed patch_embed;
    vit_block *blocks;
    mp_norm norm;
    mp_linear head, head_dist;
    kd_tap_info taps[MAX_TAPS];
    tap_kind kinds[MAX_TAPS];
    int n_taps;
    char block_names[MAX_DEPTH][24];
} vit;

/* ------------------------------------------------------------- building */

static void add_tap(vit *v, tap_kind kind, const char *name, int channels, int reduction,
                    kd_tap_layout layout, int prefix)
{
    v->kinds[v->n_taps] = kind;
    v->taps[v->n_taps++] = (kd_tap_info){name, channels, reduction, layout, prefix};
}

/* timm's init_weights_vit_timm: every Linear trunc_normal(std .02, cut at
 * +-2, which a float32 draw at that std never reaches) with zero bias. */
static kd_status add_vit_linear(vit *v, mp_linear *lin, const char *prefix, int in, int out)
{
    return mp_add_linear(&v->params, lin, prefix, in, out, MP_NORMAL, 0.02, MP_ZEROS, 0);
}

static kd_status add_block(vit *v, int i)
{
    vit_block *b = &v->blocks[i];
    int d = v->arch->dim;
    char n1[48], qkv[48], proj[48], n2[48], fc1[48], fc2[48];
    snprintf(n1, sizeof n1, "blocks.%d.norm1", i);
    snprintf(qkv, sizeof qkv, "blocks.%d.attn.qkv", i);
    snprintf(proj, sizeof proj, "blocks.%d.attn.proj", i);
    snprintf(n2, sizeof n2, "blocks.%d.norm2", i);
    snprintf(fc1, sizeof fc1, "blocks.%d.mlp.fc1", i);
    snprintf(fc2, sizeof fc2, "blocks.%d.mlp.fc2", i);
    kd_status st = mp_add_norm(&v->params, &b->norm1, n1, d);
    if (st == KD_OK)
        st = add_vit_linear(v, &b->qkv, qkv, d, 3 * d);
    if (st == KD_OK)
        st = add_vit_linear(v, &b->proj, proj, d, d);
    if (st == KD_OK)
        st = mp_add_norm(&v->params, &b->norm2, n2, d);
    if (st == KD_OK)
        st = add_vit_linear(v, &b->mlp.fc1, fc1, d, 4 * d);
    if (st == KD_OK)
        st = add_vit_linear(v, &b->mlp.fc2, fc2, 4 * d, d);
    if (st != KD_OK)
        return st;
    /* stochastic depth grows linearly over the blocks, from 0 */
    int n = v->cfg.depth;
    b->drop_path = n > 1 ? v->cfg.drop_path_rate * i / (n - 1) : 0.0;
    return KD_OK;
}

/* Tensors in timm's state_dict order: cls_token, pos_embed, dist_token,
 * patch_embed, blocks, norm, head, head_dist. */
static kd_status build(vit *v)
{
    const vit_arch *a = v->arch;
    const mp_config *c = &v->cfg;
    model_tensors *l = &v->params;
    const int64_t d = a->dim;
    const uint32_t token = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY; /* timm's no_weight_decay */
    v->cls_token = mp_add(l, token, MP_NORMAL, 1e-6, 3, (int64_t[]){1, 1, d}, "cls_token");
    v->pos_embed = v->cls_token ? mp_add(l, token, MP_NORMAL, 0.02, 3,
                                         (int64_t[]){1, v->n_tokens, d}, "pos_embed")
                                : NULL;
    if (v->pos_embed && a->distilled)
        v->dist_token = mp_add(l, token, MP_NORMAL, 0.02, 3, (int64_t[]){1, 1, d}, "dist_token");
    if (!v->pos_embed || (a->distilled && !v->dist_token))
        return kd_last_status();
    /* the patch convolution keeps torch's default init: U(+-1/sqrt(fan_in)) */
    int p = c->patch_size;
    double bound = 1.0 / sqrt((double)c->in_chans * p * p);
    v->patch_embed.patch = p;
    v->patch_embed.weight = mp_add(l, KD_TENSOR_PARAM, MP_UNIFORM, bound, 4,
                                   (int64_t[]){d, c->in_chans, p, p}, "patch_embed.proj.weight");
    v->patch_embed.bias = v->patch_embed.weight
                              ? mp_add(l, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_UNIFORM,
                                       bound, 1, &d, "patch_embed.proj.bias")
                              : NULL;
    v->blocks = calloc((size_t)c->depth, sizeof *v->blocks);
    if (!v->patch_embed.bias || !v->blocks)
        return v->patch_embed.bias ? kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name)
                                   : kd_last_status();
    kd_status st = KD_OK;
    for (int i = 0; st == KD_OK && i < c->depth; i++)
        st = add_block(v, i);
    if (st == KD_OK)
        st = mp_add_norm(l, &v->norm, "norm", a->dim);
    if (st == KD_OK)
        st = add_vit_linear(v, &v->head, "head", a->dim, c->num_classes);
    if (st == KD_OK && a->distilled)
        st = add_vit_linear(v, &v->head_dist, "head_dist", a->dim, c->num_classes);
    if (st != KD_OK)
        return st;

    add_tap(v, TAP_PATCH_EMBED, "patch_embed", a->dim, p, KD_LAYOUT_TOKENS, 0);
    add_tap(v, TAP_POS_DROP, "pos_drop", a->dim, p, KD_LAYOUT_TOKENS, v->n_prefix);
    for (int i = 0; i < c->depth; i++) {
        snprintf(v->block_names[i], sizeof v->block_names[i], "blocks.%d", i);
        add_tap(v, TAP_BLOCK, v->block_names[i], a->dim, p, KD_LAYOUT_TOKENS, v->n_prefix);
    }
    add_tap(v, TAP_NORM, "norm", a->dim, p, KD_LAYOUT_TOKENS, v->n_prefix);
    add_tap(v, TAP_PRE_LOGITS, "pre_logits", a->dim, 1, KD_LAYOUT_NC, 0);
    if (a->distilled)
        add_tap(v, TAP_LOGITS_DIST, "logits_dist", c->num_classes, 1, KD_LAYOUT_NC, 0);
    add_tap(v, TAP_LOGITS, "logits", c->num_classes, 1, KD_LAYOUT_NC, 0);
    return KD_OK;
}

static void vit_destroy(void *self)
{
    vit *v = self;
    if (!v)
        return;
    mt_free(&v->params);
    free(v->blocks);
    free(v);
}

static kd_status vit_create(const kd_create_args *args, void **self)
{
    const vit_arch *a = args->provider_data;
    *self = NULL;
    mp_config cfg;
    kd_status st = mp_read_config(a->name, args, &cfg);
    if (st != KD_OK)
        return st;
    vit *v = calloc(1, sizeof *v);
    if (!v)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    v->arch = a;
    v->cfg = cfg;
    v->distilled_training = a->distilled && kd_params_boolean(args->params, "distilled_training");
    v->n_prefix = a->distilled ? 2 : 1;
    v->n_tokens = v->n_prefix + cfg.grid * cfg.grid;
    v->params = (model_tensors){a->name, args->seed, args->dtype, NULL, 0, 0};
    st = build(v);
    if (st != KD_OK) {
        vit_destroy(v);
        return st;
    }
    *self = v;
    return KD_OK;
}

static kd_status vit_tensors(void *self, kd_tensor_list *out)
{
    vit *v = self;
    KD_LIST_SET(out, v->params.items, v->params.n);
    return KD_OK;
}

static kd_status vit_taps(void *self, kd_tap_list *out)
{
    vit *v = self;
    KD_LIST_SET(out, v->taps, v->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

/* Multi-head self-attention: qkv rows are Q, K, V blocks of dim rows,
 * each split head-major into heads of dim / heads. */
static kd_tensor *attention(const vit *v, const vit_block *b, kd_tensor *x)
{
    int64_t n = x->shape[0], t = x->shape[1], d = v->arch->dim, h = v->arch->heads;
    kd_tensor *qkv = kd_reshape(mp_linear_forward(&b->qkv, x), 5, (int64_t[]){n, t, 3, h, d / h});
    qkv = kd_permute(qkv, (int[]){2, 0, 3, 1, 4}); /* [3, N, heads, T, head_dim] */
    kd_tensor *part[3];
    if (!qkv || kd_split(qkv, 0, 3, (int64_t[]){1, 1, 1}, part) != KD_OK)
        return NULL;
    for (int i = 0; i < 3; i++)
        part[i] = kd_squeeze(part[i], 0);
    kd_tensor *o = kd_scaled_dot_product_attention(part[0], part[1], part[2], NULL,
                                                   1.0 / sqrt((double)(d / h)));
    o = kd_reshape(kd_transpose(o, 1, 2), 3, (int64_t[]){n, t, d});
    return mp_linear_forward(&b->proj, o);
}

static kd_tensor *block_forward(const vit *v, const vit_block *b, kd_tensor *x, bool training,
                                kd_rng *rng)
{
    kd_tensor *y = attention(v, b, mp_norm_forward(&b->norm1, x, LN_EPS));
    x = kd_add(x, kd_drop_path(y, b->drop_path, training, rng));
    y = mp_mlp_forward(&b->mlp, mp_norm_forward(&b->norm2, x, LN_EPS));
    return kd_add(x, kd_drop_path(y, b->drop_path, training, rng));
}

/* [cls, (dist,) patches] + pos_embed */
static kd_tensor *join_tokens(const vit *v, kd_tensor *x)
{
    int64_t shape[3] = {x->shape[0], 1, v->arch->dim};
    kd_tensor *parts[3] = {kd_expand(v->cls_token, 3, shape), NULL, NULL};
    int n = 1;
    if (v->arch->distilled)
        parts[n++] = kd_expand(v->dist_token, 3, shape);
    parts[n++] = x;
    return kd_add(kd_concat(n, parts, 1), v->pos_embed);
}

/* Token i of x [N, T, D] as [N, D]. */
static kd_tensor *token(kd_tensor *x, int i)
{
    return kd_reshape(kd_slice(x, 1, i, i + 1, 1), 2, (int64_t[]){x->shape[0], x->shape[2]});
}

/* What the head segments read: the final norm's tokens (for distilled
 * models) or the pooled features, and the distillation head's logits. */
typedef struct head_state {
    kd_tensor *normed, *pooled, *logits_dist;
} head_state;

static kd_tensor *run_segment(const vit *v, int t, kd_tensor *x, head_state *hs, bool training,
                              kd_rng *rng)
{
    switch (v->kinds[t]) {
    case TAP_PATCH_EMBED:
        return mp_patch_embed_forward(&v->patch_embed, x);
    case TAP_POS_DROP:
        return join_tokens(v, x);
    case TAP_BLOCK:
        return block_forward(v, &v->blocks[t - 2], x, training, rng);
    case TAP_NORM:
        return hs->normed = mp_norm_forward(&v->norm, x, LN_EPS);
    case TAP_PRE_LOGITS:
        hs->pooled = v->arch->distilled
                         ? kd_mul_scalar(kd_add(token(hs->normed, 0), token(hs->normed, 1)), 0.5)
                         : token(x, 0);
        return hs->pooled;
    case TAP_LOGITS_DIST:
        return hs->logits_dist = mp_linear_forward(&v->head_dist, token(hs->normed, 1));
    case TAP_LOGITS:
        if (!v->arch->distilled)
            return mp_linear_forward(&v->head,
                                     kd_dropout(hs->pooled, v->cfg.drop_rate, training, rng));
        kd_tensor *cls = mp_linear_forward(&v->head, token(hs->normed, 0));
        if (training && v->distilled_training)
            return cls;
        return kd_mul_scalar(kd_add(cls, hs->logits_dist), 0.5);
    }
    return NULL;
}

/* Runs the segments after tap `from` (-1: the image) up to the last
 * wanted tap, storing every tap it passes. */
static kd_status run_from(vit *v, int from, const kd_forward_args *args)
{
    int last = -1;
    for (int t = from + 1; t < v->n_taps; t++)
        if (args->want[t])
            last = t;
    kd_rng rng = args->rng;
    head_state hs = {NULL, NULL, NULL};
    kd_tensor *x = args->input;
    if (from >= 0 && v->kinds[from] == TAP_NORM)
        hs.normed = x;
    if (from >= 0 && v->kinds[from] == TAP_PRE_LOGITS)
        hs.pooled = x;
    for (int t = from + 1; t <= last; t++) {
        kd_tensor *y = run_segment(v, t, x, &hs, args->training, &rng);
        if (!y)
            return kd_error_wrap(kd_last_status(), "%s: %s", v->arch->name, v->taps[t].name);
        args->taps[t] = y;
        if (v->kinds[t] <= TAP_NORM)
            x = y;
    }
    return KD_OK;
}

static kd_status vit_forward(void *self, const kd_forward_args *args)
{
    vit *v = self;
    kd_status st = mc_check_args(v->arch->name, v->params.dtype, args, "forward");
    if (st == KD_OK)
        st = mp_check_images(v->arch->name, &v->cfg, args->input);
    return st == KD_OK ? run_from(v, -1, args) : st;
}

static kd_status vit_forward_from(void *self, int from, const kd_forward_args *args)
{
    vit *v = self;
    const char *name = v->arch->name;
    kd_status st = mc_check_from((model_chain){name, v->taps, v->n_taps, v, NULL}, from);
    if (st != KD_OK)
        return st;
    if (v->arch->distilled && v->kinds[from] > TAP_NORM)
        return kd_error(KD_ERR_INVALID, "%s: forward_from %s: the heads of a distilled model "
                        "read the class and distillation tokens apart, which %s does not "
                        "hold; start from \"norm\"", name, v->taps[from].name,
                        v->taps[from].name);
    st = mc_check_args(name, v->params.dtype, args, "forward_from");
    if (st != KD_OK)
        return st;
    int64_t tokens = v->kinds[from] == TAP_PATCH_EMBED ? v->n_tokens - v->n_prefix
                     : v->kinds[from] == TAP_PRE_LOGITS ? 0
                                                         : v->n_tokens;
    st = mp_check_tap_input(name, &v->taps[from], tokens, args->input);
    if (st != KD_OK)
        return st;
    args->taps[from] = args->input;
    return run_from(v, from, args);
}

/* ------------------------------------------------------- weights files */

/* timm's resample_abs_pos_embed as its checkpoint filter calls it: the
 * prefix tokens' entries kept, the grid's resized as a [1, D, g, g] image
 * by antialiased bicubic interpolation in float32. */
static kd_tensor *resample_pos_embed(const vit *v, kd_tensor *pe, int64_t old_grid)
{
    int64_t d = pe->shape[2], len = pe->shape[1], g = v->cfg.grid;
    kd_tensor *prefix = kd_slice(pe, 1, 0, v->n_prefix, 1);
    kd_tensor *grid = kd_reshape(kd_slice(pe, 1, v->n_prefix, len, 1), 4,
                                 (int64_t[]){1, old_grid, old_grid, d});
    grid = kd_permute(kd_cast(grid, KD_F32), (int[]){0, 3, 1, 2});
    grid = kd_interpolate(grid, (int)g, (int)g, KD_INTERP_BICUBIC, true);
    grid = kd_reshape(kd_permute(grid, (int[]){0, 2, 3, 1}), 3, (int64_t[]){1, g * g, d});
    kd_tensor *parts[2] = {prefix, kd_cast(grid, pe->dtype)};
    return kd_concat(2, parts, 1);
}

/* DataParallel's "module." goes; a pos_embed made for another image or
 * patch size is resized to this model's grid, as timm does on load. */
static kd_status vit_filter_weight(void *self, kd_weight_fix *fix)
{
    vit *v = self;
    mp_strip_module_prefix(fix);
    kd_tensor *pe = fix->value;
    if (strcmp(fix->name, "pos_embed") != 0 || pe->ndim != 3 || pe->shape[0] != 1 ||
        pe->shape[2] != v->arch->dim || pe->shape[1] == v->n_tokens)
        return KD_OK; /* matched (or refused by name and shape) as it is */
    int64_t cells = pe->shape[1] - v->n_prefix;
    int64_t old_grid = (int64_t)llround(sqrt((double)(cells > 0 ? cells : 0)));
    if (cells < 1 || old_grid * old_grid != cells)
        return kd_error(KD_ERR_INVALID, "%s: pos_embed of %lld tokens is not %d prefix tokens "
                        "and a square grid", v->arch->name, (long long)pe->shape[1],
                        v->n_prefix);
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *resized = resample_pos_embed(v, pe, old_grid);
    kd_set_grad_enabled(grad);
    if (!resized)
        return kd_error_wrap(kd_last_status(), "%s: resizing pos_embed from a %lldx%lld grid",
                             v->arch->name, (long long)old_grid, (long long)old_grid);
    fix->value = resized;
    return KD_OK;
}

/* timm's VisionTransformer.group_matcher: the embeddings, then the blocks
 * (the final norm with the last), then the heads. */
static kd_status vit_layer_id(void *self, int index, int *id, int *num_layers)
{
    vit *v = self;
    if (index < 0 || index >= v->params.n)
        return kd_error(KD_ERR_INVALID, "%s: tensor %d of %d has no layer", v->arch->name, index, v->params.n);
    static const char *const stem[] = {"cls_token", "dist_token", "pos_embed", "patch_embed",
                                       NULL};
    static const char *const last_block[] = {"norm", NULL};
    static const char *const head[] = {"fc_norm", "head", "head_dist", NULL};
    const ml_layers l = {v->arch->name, NULL, 1, &v->cfg.depth, stem, last_block, head};
    return ml_layer_id(&l, v->params.items[index].name, id, num_layers);
}

/* ------------------------------------------------------------ providers */

static const kd_model_vtable vit_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = vit_create,
    .destroy = vit_destroy,
    .tensors = vit_tensors,
    .taps = vit_taps,
    .forward = vit_forward,
    .forward_from = vit_forward_from,
    .filter_weight = vit_filter_weight,
    .layer_id = vit_layer_id,
};

/* One provider per row of ARCHS, all on one vtable. */
static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name, &vit_vtable.header,
                                            &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "vit", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
