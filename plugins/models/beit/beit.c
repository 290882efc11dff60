/* BEiT as timm 0.9.16 builds beit_base_patch16_224 and
 * beitv2_base_patch16_224 (one architecture; v1 starts its layer scales at
 * 0.1, v2 at 1e-5).
 *
 * A ViT-style patch embedding with the class token in front and no
 * absolute position embedding; pre-norm blocks (LayerNorm eps 1e-6, exact
 * GELU) whose residual branches are scaled per channel (gamma_1, gamma_2),
 * whose attention has a query and a value bias but no key bias, and adds
 * each block's own relative position bias: a table of (2G-1)^2 patch
 * offsets plus three rows for class-to-patch, patch-to-class and
 * class-to-class. The head averages the patch tokens (the class token
 * left out), normalises them (fc_norm) and classifies.
 *
 * Taps by timm module name, in forward order: "patch_embed" (patch tokens),
 * "pos_drop" (the class token joined), "blocks.0".., "pre_logits" (after
 * fc_norm), "logits". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/model_chain.h"
#include "../common/model_parts.h"
#include "../common/model_layers.h"

#define LN_EPS 1e-6
#define MAX_DEPTH 64
#define MAX_TAPS (MAX_DEPTH + 4)

typedef struct beit_arch {
    const char *name;
    int dim, heads;
    double init_values; /* the layer scales' start */
} beit_arch;

static const beit_arch ARCHS[] = {
    {"beit_base_patch16_224", 768, 12, 0.1},
    {"beitv2_base_patch16_224", 768, 12, 1e-5},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

typedef enum tap_kind { TAP_PATCH_EMBED, TAP_POS_DROP, TAP_BLOCK, TAP_PRE_LOGITS, TAP_LOGITS } tap_kind;

typedef struct beit_block {
    kd_tensor *gamma_1, *gamma_2;
    mp_norm norm1, norm2;
    kd_tensor *q_bias, *v_bias, *bias_table;
    kd_tensor *qkv_weight;
    mp_linear proj;
    mp_mlp mlp;
    double drop_path;
} beit_block;

typedef struct beit {
    const beit_arch *arch;
    mp_config cfg;
    model_tensors tensors;
    kd_tensor *cls_token;
    mp_patch_embed patch_embed;
    beit_block blocks[MAX_DEPTH];
    mp_norm fc_norm;
    mp_linear head;
    kd_tensor *bias_index; /* I64 [T * T], T = patches + 1: table row of (query, key) */
    kd_tensor *zero_bias;  /* [dim]: the key bias, always zero */
    int n_tokens;
    tap_kind kinds[MAX_TAPS];
    int block_of[MAX_TAPS];
    char names[MAX_TAPS][24]; /* "blocks." and any int */
    kd_tap_info taps[MAX_TAPS];
    int n_taps;
} beit;

/* ------------------------------------------------------------ parameters */

/* Row of the bias table for (query i, key j) over [cls, patches] on a G x G
 * grid: patch pairs by their offset, then the three class-token rows. */
static kd_tensor *relative_index(int grid)
{
    int p = grid * grid, t = p + 1, span = 2 * grid - 1, rows = span * span;
    int64_t n = (int64_t)t * t;
    kd_tensor *index = kd_tensor_keep(kd_tensor_empty(KD_I64, KD_CPU, 1, &n));
    if (!index)
        return NULL;
    int64_t *idx = kd_tensor_data(index);
    for (int i = 0; i < t; i++)
        for (int j = 0; j < t; j++) {
            int64_t v;
            if (i == 0 && j == 0)
                v = rows + 2; /* class to class */
            else if (i == 0)
                v = rows; /* class query to a patch */
            else if (j == 0)
                v = rows + 1; /* patch query to the class token */
            else
                v = (int64_t)((i - 1) / grid - (j - 1) / grid + grid - 1) * span +
                    ((i - 1) % grid - (j - 1) % grid + grid - 1);
            idx[(int64_t)i * t + j] = v;
        }
    return index;
}

static void add_tap(beit *m, tap_kind kind, int block, int channels, kd_tap_layout layout,
                    int prefix)
{
    int i = m->n_taps++;
    static const char *const fixed[] = {"patch_embed", "pos_drop", NULL, "pre_logits", "logits"};
    if (kind == TAP_BLOCK)
        snprintf(m->names[i], sizeof m->names[i], "blocks.%d", block);
    else
        snprintf(m->names[i], sizeof m->names[i], "%s", fixed[kind]);
    m->kinds[i] = kind;
    m->block_of[i] = block;
    int reduction = layout == KD_LAYOUT_NC ? 1 : m->cfg.patch_size;
    m->taps[i] = (kd_tap_info){m->names[i], channels, reduction, layout, prefix};
}

/* timm's init: Linear weights trunc_normal(0.02) with block l's attn.proj
 * and mlp.fc2 divided by sqrt(2(l+1)), biases 0, the relative position
 * tables and q/v biases 0, the class token trunc_normal(0.02), the head
 * scaled by 0.001; the patch embedding keeps torch's Conv2d default. */
static kd_status add_block(beit *m, beit_block *b, int l, int d, int table_rows)
{
    model_tensors *t = &m->tensors;
    const uint32_t no_decay = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
    double rescaled = 0.02 / sqrt(2.0 * (l + 1));
    char p[64];
    snprintf(p, sizeof p, "blocks.%d", l);
    b->gamma_1 = mp_add(t, no_decay, MP_ONES, 0, 1, (int64_t[]){d}, "%s.gamma_1", p);
    b->gamma_2 = b->gamma_1 ? mp_add(t, no_decay, MP_ONES, 0, 1, (int64_t[]){d}, "%s.gamma_2", p)
                            : NULL;
    if (!b->gamma_2 || kd_tensor_fill_(b->gamma_1, m->arch->init_values) != KD_OK ||
        kd_tensor_fill_(b->gamma_2, m->arch->init_values) != KD_OK)
        return kd_last_status();
    char name[80];
    snprintf(name, sizeof name, "%s.norm1", p);
    kd_status st = mp_add_norm(t, &b->norm1, name, d);
    if (st != KD_OK)
        return st;
    b->q_bias = mp_add(t, no_decay, MP_ZEROS, 0, 1, (int64_t[]){d}, "%s.attn.q_bias", p);
    b->v_bias = b->q_bias ? mp_add(t, no_decay, MP_ZEROS, 0, 1, (int64_t[]){d}, "%s.attn.v_bias",
                                   p)
                          : NULL;
    b->bias_table = b->v_bias ? mp_add(t, no_decay, MP_ZEROS, 0, 2,
                                       (int64_t[]){table_rows, m->arch->heads},
                                       "%s.attn.relative_position_bias_table", p)
                              : NULL;
    b->qkv_weight = b->bias_table ? mp_add(t, KD_TENSOR_PARAM, MP_TRUNC_NORMAL, 0.02, 2,
                                           (int64_t[]){3 * d, d}, "%s.attn.qkv.weight", p)
                                  : NULL;
    if (!b->qkv_weight)
        return kd_last_status();
    snprintf(name, sizeof name, "%s.attn.proj", p);
    if ((st = mp_add_linear(t, &b->proj, name, d, d, MP_TRUNC_NORMAL, rescaled, MP_ZEROS, 0)))
        return st;
    snprintf(name, sizeof name, "%s.norm2", p);
    if ((st = mp_add_norm(t, &b->norm2, name, d)))
        return st;
    snprintf(name, sizeof name, "%s.mlp.fc1", p);
    if ((st = mp_add_linear(t, &b->mlp.fc1, name, d, 4 * d, MP_TRUNC_NORMAL, 0.02, MP_ZEROS, 0)))
        return st;
    snprintf(name, sizeof name, "%s.mlp.fc2", p);
    return mp_add_linear(t, &b->mlp.fc2, name, 4 * d, d, MP_TRUNC_NORMAL, rescaled, MP_ZEROS, 0);
}

static kd_status build(beit *m)
{
    const mp_config *c = &m->cfg;
    model_tensors *t = &m->tensors;
    int d = m->arch->dim, grid = c->grid;
    m->n_tokens = grid * grid + 1;
    m->cls_token = mp_add(t, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_TRUNC_NORMAL, 0.02, 3,
                          (int64_t[]){1, 1, d}, "cls_token");
    double bound = 1.0 / sqrt((double)c->in_chans * c->patch_size * c->patch_size);
    m->patch_embed.patch = c->patch_size;
    m->patch_embed.weight = m->cls_token
                                ? mp_add(t, KD_TENSOR_PARAM, MP_UNIFORM, bound, 4,
                                         (int64_t[]){d, c->in_chans, c->patch_size,
                                                     c->patch_size},
                                         "patch_embed.proj.weight")
                                : NULL;
    m->patch_embed.bias = m->patch_embed.weight
                              ? mp_add(t, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_UNIFORM,
                                       bound, 1, (int64_t[]){d}, "patch_embed.proj.bias")
                              : NULL;
    if (!m->patch_embed.bias)
        return kd_last_status();
    add_tap(m, TAP_PATCH_EMBED, 0, d, KD_LAYOUT_TOKENS, 0);
    add_tap(m, TAP_POS_DROP, 0, d, KD_LAYOUT_TOKENS, 1);
    int table_rows = (2 * grid - 1) * (2 * grid - 1) + 3;
    kd_status st = KD_OK;
    for (int l = 0; st == KD_OK && l < c->depth; l++) {
        st = add_block(m, &m->blocks[l], l, d, table_rows);
        m->blocks[l].drop_path = c->depth > 1 ? c->drop_path_rate * l / (c->depth - 1) : 0;
        add_tap(m, TAP_BLOCK, l, d, KD_LAYOUT_TOKENS, 1);
    }
    if (st == KD_OK)
        st = mp_add_norm(t, &m->fc_norm, "fc_norm", d);
    if (st == KD_OK)
        st = mp_add_linear(t, &m->head, "head", d, c->num_classes, MP_TRUNC_NORMAL, 0.02 * 0.001,
                           MP_ZEROS, 0);
    if (st != KD_OK)
        return st;
    add_tap(m, TAP_PRE_LOGITS, 0, d, KD_LAYOUT_NC, 0);
    add_tap(m, TAP_LOGITS, 0, c->num_classes, KD_LAYOUT_NC, 0);
    m->bias_index = relative_index(grid);
    m->zero_bias = kd_tensor_keep(kd_tensor_zeros(t->dtype, KD_CPU, 1, (int64_t[]){d}));
    if (!m->bias_index || !m->zero_bias)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", m->arch->name);
    return KD_OK;
}

static void beit_destroy(void *self)
{
    beit *m = self;
    if (!m)
        return;
    kd_tensor_free(m->bias_index);
    kd_tensor_free(m->zero_bias);
    mt_free(&m->tensors);
    free(m);
}

static kd_status beit_create(const beit_arch *a, const kd_create_args *args, void **self)
{
    *self = NULL;
    beit *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    m->arch = a;
    m->tensors = (model_tensors){a->name, args->seed, args->dtype, NULL, 0, 0};
    kd_status st = mp_read_config(a->name, args, &m->cfg);
    if (st == KD_OK && m->cfg.depth > MAX_DEPTH)
        st = kd_error(KD_ERR_INVALID, "%s: depth %d is more than %d", a->name, m->cfg.depth,
                      MAX_DEPTH);
    if (st == KD_OK && m->cfg.img_size % m->cfg.patch_size != 0)
        st = kd_error(KD_ERR_INVALID, "%s: img_size %d is not a multiple of patch_size %d",
                      a->name, m->cfg.img_size, m->cfg.patch_size);
    if (st == KD_OK)
        st = build(m);
    if (st != KD_OK) {
        beit_destroy(m);
        return st;
    }
    *self = m;
    return KD_OK;
}

static kd_status beit_tensors(void *self, kd_tensor_list *out)
{
    beit *m = self;
    KD_LIST_SET(out, m->tensors.items, m->tensors.n);
    return KD_OK;
}

static kd_status beit_taps(void *self, kd_tap_list *out)
{
    beit *m = self;
    KD_LIST_SET(out, m->taps, m->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

/* The block's relative position bias [heads, T, T]. */
static kd_tensor *position_bias(const beit *m, const beit_block *b)
{
    int64_t t = m->n_tokens;
    kd_tensor *bias = kd_index_select(b->bias_table, 0, m->bias_index);
    bias = kd_reshape(bias, 3, (int64_t[]){t, t, m->arch->heads});
    return kd_permute(bias, (int[]){2, 0, 1});
}

static kd_tensor *attention(const beit *m, const beit_block *b, kd_tensor *x)
{
    int64_t n = x->shape[0], t = x->shape[1], d = m->arch->dim, h = m->arch->heads;
    kd_tensor *bias[3] = {b->q_bias, m->zero_bias, b->v_bias};
    kd_tensor *qkv = kd_linear(x, b->qkv_weight, kd_concat(3, bias, 0));
    qkv = kd_permute(kd_reshape(qkv, 5, (int64_t[]){n, t, 3, h, d / h}), (int[]){2, 0, 3, 1, 4});
    kd_tensor *part[3];
    if (!qkv || kd_split(qkv, 0, 3, (int64_t[]){1, 1, 1}, part) != KD_OK)
        return NULL;
    for (int i = 0; i < 3; i++)
        part[i] = kd_squeeze(part[i], 0);
    kd_tensor *o = kd_scaled_dot_product_attention(part[0], part[1], part[2],
                                                   position_bias(m, b),
                                                   1.0 / sqrt((double)(d / h)));
    o = kd_reshape(kd_transpose(o, 1, 2), 3, (int64_t[]){n, t, d});
    return mp_linear_forward(&b->proj, o);
}

static kd_tensor *block_forward(const beit *m, const beit_block *b, kd_tensor *x, bool training,
                                kd_rng *rng)
{
    kd_tensor *y = kd_mul(b->gamma_1, attention(m, b, mp_norm_forward(&b->norm1, x, LN_EPS)));
    x = kd_add(x, kd_drop_path(y, b->drop_path, training, rng));
    y = kd_mul(b->gamma_2, mp_mlp_forward(&b->mlp, mp_norm_forward(&b->norm2, x, LN_EPS)));
    return kd_add(x, kd_drop_path(y, b->drop_path, training, rng));
}

static kd_tensor *run_segment(void *self, int t, kd_tensor *x, bool training, kd_rng *rng)
{
    const beit *m = self;
    switch (m->kinds[t]) {
    case TAP_PATCH_EMBED:
        return mp_patch_embed_forward(&m->patch_embed, x);
    case TAP_POS_DROP: {
        kd_tensor *parts[2] = {
            kd_expand(m->cls_token, 3, (int64_t[]){x->shape[0], 1, m->arch->dim}), x};
        return kd_concat(2, parts, 1);
    }
    case TAP_BLOCK:
        return block_forward(m, &m->blocks[m->block_of[t]], x, training, rng);
    case TAP_PRE_LOGITS: {
        kd_tensor *patches = kd_slice(x, 1, 1, x->shape[1], 1);
        return mp_norm_forward(&m->fc_norm, kd_mean(patches, 1, (int[]){1}, false), LN_EPS);
    }
    case TAP_LOGITS:
        return mp_linear_forward(&m->head, kd_dropout(x, m->cfg.drop_rate, training, rng));
    }
    return NULL;
}

static model_chain chain_of(const beit *m)
{
    return (model_chain){m->arch->name, m->taps, m->n_taps, (void *)m, run_segment};
}

static kd_status beit_forward(void *self, const kd_forward_args *args)
{
    beit *m = self;
    kd_status st = mc_check_args(m->arch->name, m->tensors.dtype, args, "forward");
    if (st == KD_OK)
        st = mp_check_images(m->arch->name, &m->cfg, args->input);
    return st == KD_OK ? mc_run(chain_of(m), -1, args) : st;
}

static kd_status beit_forward_from(void *self, int from, const kd_forward_args *args)
{
    beit *m = self;
    kd_status st = mc_check_from(chain_of(m), from);
    if (st != KD_OK)
        return st;
    st = mc_check_args(m->arch->name, m->tensors.dtype, args, "forward_from");
    int64_t tokens = m->kinds[from] == TAP_PRE_LOGITS ? 0
                     : m->kinds[from] == TAP_PATCH_EMBED ? m->n_tokens - 1
                                                          : m->n_tokens;
    if (st == KD_OK)
        st = mp_check_tap_input(m->arch->name, &m->taps[from], tokens, args->input);
    if (st != KD_OK)
        return st;
    args->taps[from] = args->input;
    return mc_run(chain_of(m), from, args);
}

/* DataParallel's "module." goes; timm <= 0.9.5 saved each block's
 * relative_position_index, which the model computes itself. */
static kd_status beit_filter_weight(void *self, kd_weight_fix *fix)
{
    (void)self;
    mp_strip_module_prefix(fix);
    size_t n = strlen(fix->name);
    static const char index[] = "relative_position_index";
    if (n >= sizeof index - 1 && !strcmp(fix->name + n - (sizeof index - 1), index))
        fix->drop = true;
    return KD_OK;
}

/* timm's Beit.group_matcher: the embeddings, the blocks, then the pooled
 * norm and the head. */
static kd_status beit_layer_id(void *self, int index, int *id, int *num_layers)
{
    beit *m = self;
    if (index < 0 || index >= m->tensors.n)
        return kd_error(KD_ERR_INVALID, "%s: tensor %d of %d has no layer", m->arch->name, index, m->tensors.n);
    static const char *const stem[] = {"cls_token", "pos_embed", "patch_embed", "rel_pos_bias",
                                       NULL};
    static const char *const head[] = {"norm", "fc_norm", "head", NULL};
    const ml_layers l = {m->arch->name, NULL, 1, &m->cfg.depth, stem, NULL, head};
    return ml_layer_id(&l, m->tensors.items[index].name, id, num_layers);
}

/* ------------------------------------------------------------ providers */

static kd_status beit_create_provider(const kd_create_args *args, void **self)
{
    return beit_create(args->provider_data, args, self);
}

static const kd_model_vtable beit_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = beit_create_provider,
    .destroy = beit_destroy,
    .tensors = beit_tensors,
    .taps = beit_taps,
    .forward = beit_forward,
    .forward_from = beit_forward_from,
    .filter_weight = beit_filter_weight,
    .layer_id = beit_layer_id,
};

static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name, &beit_vtable.header,
                                            &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "beit", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
