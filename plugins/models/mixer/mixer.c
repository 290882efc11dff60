/* MLP-Mixer as timm 0.9.16 builds it: mixer_s16_224 and mixer_b16_224.
 *
 * A patch embedding ("stem": a convolution of kernel and stride
 * patch_size, flattened to tokens; no class token, no position
 * embedding), blocks that mix across tokens and then across channels
 *
 *   x = x + mlp_tokens(norm1(x)^T)^T    (Linear over the token axis)
 *   x = x + mlp_channels(norm2(x))
 *
 * with LayerNorm eps 1e-6 and exact GELU, a final norm, the mean over
 * tokens, and the head. The token MLP's fc1 weight is [dim / 2, grid^2],
 * so a model is tied to its img_size / patch_size grid.
 *
 * Taps by timm module name, in forward order: "stem", "blocks.0"..,
 * "norm" (tokens [N, grid^2, D]), "pre_logits" (the pooled [N, D]),
 * "logits". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/model_chain.h"
#include "../common/model_parts.h"

#define LN_EPS 1e-6
#define MAX_DEPTH 64
#define MAX_TAPS (MAX_DEPTH + 4)

typedef struct mixer_arch {
    const char *name;
    int dim;
} mixer_arch;

static const mixer_arch ARCHS[] = {
    {"mixer_s16_224", 512},
    {"mixer_b16_224", 768},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

typedef enum tap_kind { TAP_STEM, TAP_BLOCK, TAP_NORM, TAP_PRE_LOGITS, TAP_LOGITS } tap_kind;

typedef struct mixer_block {
    mp_norm norm1, norm2;
    mp_mlp mlp_tokens, mlp_channels;
} mixer_block;

typedef struct mixer {
    const mixer_arch *arch;
    mp_config cfg;
    int n_tokens;
    model_tensors params;
    mp_patch_embed stem;
    mixer_block *blocks;
    mp_norm norm;
    mp_linear head;
    kd_tap_info taps[MAX_TAPS];
    tap_kind kinds[MAX_TAPS];
    int n_taps;
    char block_names[MAX_DEPTH][24];
} mixer;

/* ------------------------------------------------------------- building */

static void add_tap(mixer *m, tap_kind kind, const char *name, int channels, int reduction,
                    kd_tap_layout layout)
{
    m->kinds[m->n_taps] = kind;
    m->taps[m->n_taps++] = (kd_tap_info){name, channels, reduction, layout, 0};
}

/* timm's _init_weights for a block's Linear: xavier uniform, bias N(0,
 * 1e-6). */
static kd_status add_mlp(mixer *m, mp_mlp *mlp, const char *prefix, int in, int hidden)
{
    char p[64];
    snprintf(p, sizeof p, "%s.fc1", prefix);
    kd_status st = mp_add_linear(&m->params, &mlp->fc1, p, in, hidden, MP_UNIFORM,
                                 sqrt(6.0 / (in + hidden)), MP_NORMAL, 1e-6);
    snprintf(p, sizeof p, "%s.fc2", prefix);
    return st == KD_OK ? mp_add_linear(&m->params, &mlp->fc2, p, hidden, in, MP_UNIFORM,
                                       sqrt(6.0 / (in + hidden)), MP_NORMAL, 1e-6)
                       : st;
}

static kd_status add_block(mixer *m, int i)
{
    mixer_block *b = &m->blocks[i];
    int d = m->arch->dim;
    char p[64];
    kd_status st;
    snprintf(p, sizeof p, "blocks.%d.norm1", i);
    if ((st = mp_add_norm(&m->params, &b->norm1, p, d)) != KD_OK)
        return st;
    snprintf(p, sizeof p, "blocks.%d.mlp_tokens", i);
    if ((st = add_mlp(m, &b->mlp_tokens, p, m->n_tokens, d / 2)) != KD_OK)
        return st;
    snprintf(p, sizeof p, "blocks.%d.norm2", i);
    if ((st = mp_add_norm(&m->params, &b->norm2, p, d)) != KD_OK)
        return st;
    snprintf(p, sizeof p, "blocks.%d.mlp_channels", i);
    return add_mlp(m, &b->mlp_channels, p, d, 4 * d);
}

/* Tensors in timm's state_dict order: stem, blocks, norm, head. */
static kd_status build(mixer *m)
{
    const mp_config *c = &m->cfg;
    model_tensors *l = &m->params;
    const int64_t d = m->arch->dim;
    int p = c->patch_size;
    /* lecun normal: truncated at 2 std, scaled so the kept part has std
     * sqrt(1 / fan_in) */
    double std = sqrt(1.0 / ((double)c->in_chans * p * p)) / 0.87962566103423978;
    m->stem.patch = p;
    m->stem.weight = mp_add(l, KD_TENSOR_PARAM, MP_TRUNC_NORMAL, std, 4,
                            (int64_t[]){d, c->in_chans, p, p}, "stem.proj.weight");
    m->stem.bias = m->stem.weight ? mp_add(l, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_ZEROS, 0,
                                           1, &d, "stem.proj.bias")
                                  : NULL;
    m->blocks = calloc((size_t)c->depth, sizeof *m->blocks);
    if (!m->stem.bias || !m->blocks)
        return m->stem.bias ? kd_error(KD_ERR_NOMEM, "%s: out of host memory", m->arch->name)
                            : kd_last_status();
    kd_status st = KD_OK;
    for (int i = 0; st == KD_OK && i < c->depth; i++)
        st = add_block(m, i);
    if (st == KD_OK)
        st = mp_add_norm(l, &m->norm, "norm", m->arch->dim);
    /* timm zeroes the head */
    if (st == KD_OK)
        st = mp_add_linear(l, &m->head, "head", m->arch->dim, c->num_classes, MP_ZEROS, 0,
                           MP_ZEROS, 0);
    if (st != KD_OK)
        return st;
    add_tap(m, TAP_STEM, "stem", m->arch->dim, p, KD_LAYOUT_TOKENS);
    for (int i = 0; i < c->depth; i++) {
        snprintf(m->block_names[i], sizeof m->block_names[i], "blocks.%d", i);
        add_tap(m, TAP_BLOCK, m->block_names[i], m->arch->dim, p, KD_LAYOUT_TOKENS);
    }
    add_tap(m, TAP_NORM, "norm", m->arch->dim, p, KD_LAYOUT_TOKENS);
    add_tap(m, TAP_PRE_LOGITS, "pre_logits", m->arch->dim, 1, KD_LAYOUT_NC);
    add_tap(m, TAP_LOGITS, "logits", c->num_classes, 1, KD_LAYOUT_NC);
    return KD_OK;
}

static void mixer_destroy(void *self)
{
    mixer *m = self;
    if (!m)
        return;
    mt_free(&m->params);
    free(m->blocks);
    free(m);
}

static kd_status mixer_create(const kd_create_args *args, void **self)
{
    const mixer_arch *a = args->provider_data;
    *self = NULL;
    mp_config cfg;
    kd_status st = mp_read_config(a->name, args, &cfg);
    if (st != KD_OK)
        return st;
    mixer *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    m->arch = a;
    m->cfg = cfg;
    m->n_tokens = cfg.grid * cfg.grid;
    m->params = (model_tensors){a->name, args->seed, args->dtype, NULL, 0, 0};
    st = build(m);
    if (st != KD_OK) {
        mixer_destroy(m);
        return st;
    }
    *self = m;
    return KD_OK;
}

static kd_status mixer_tensors(void *self, kd_tensor_list *out)
{
    mixer *m = self;
    KD_LIST_SET(out, m->params.items, m->params.n);
    return KD_OK;
}

static kd_status mixer_taps(void *self, kd_tap_list *out)
{
    mixer *m = self;
    KD_LIST_SET(out, m->taps, m->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

static kd_tensor *block_forward(const mixer *m, const mixer_block *b, kd_tensor *x,
                                bool training, kd_rng *rng)
{
    double p = m->cfg.drop_path_rate; /* the same in every block */
    kd_tensor *y = kd_transpose(mp_norm_forward(&b->norm1, x, LN_EPS), 1, 2);
    y = kd_transpose(mp_mlp_forward(&b->mlp_tokens, y), 1, 2);
    x = kd_add(x, kd_drop_path(y, p, training, rng));
    y = mp_mlp_forward(&b->mlp_channels, mp_norm_forward(&b->norm2, x, LN_EPS));
    return kd_add(x, kd_drop_path(y, p, training, rng));
}

static kd_tensor *run_segment(void *self, int t, kd_tensor *x, bool training, kd_rng *rng)
{
    const mixer *m = self;
    switch (m->kinds[t]) {
    case TAP_STEM:
        return mp_patch_embed_forward(&m->stem, x);
    case TAP_BLOCK:
        return block_forward(m, &m->blocks[t - 1], x, training, rng);
    case TAP_NORM:
        return mp_norm_forward(&m->norm, x, LN_EPS);
    case TAP_PRE_LOGITS:
        return kd_mean(x, 1, (int[]){1}, false);
    case TAP_LOGITS:
        return mp_linear_forward(&m->head, kd_dropout(x, m->cfg.drop_rate, training, rng));
    }
    return NULL;
}

static model_chain chain_of(const mixer *m)
{
    return (model_chain){m->arch->name, m->taps, m->n_taps, (void *)m, run_segment};
}

static kd_status mixer_forward(void *self, const kd_forward_args *args)
{
    mixer *m = self;
    kd_status st = mc_check_args(m->arch->name, m->params.dtype, args, "forward");
    if (st == KD_OK)
        st = mp_check_images(m->arch->name, &m->cfg, args->input);
    return st == KD_OK ? mc_run(chain_of(m), -1, args) : st;
}

static kd_status mixer_forward_from(void *self, int from, const kd_forward_args *args)
{
    mixer *m = self;
    const char *name = m->arch->name;
    kd_status st = mc_check_from(chain_of(m), from);
    if (st != KD_OK)
        return st;
    st = mc_check_args(name, m->params.dtype, args, "forward_from");
    if (st == KD_OK)
        st = mp_check_tap_input(name, &m->taps[from],
                                m->kinds[from] == TAP_PRE_LOGITS ? 0 : m->n_tokens, args->input);
    if (st != KD_OK)
        return st;
    args->taps[from] = args->input;
    return mc_run(chain_of(m), from, args);
}

/* DataParallel's "module." goes; nothing is resized: the token MLPs are
 * tied to the grid (a file for another grid fails by name and shape). */
static kd_status mixer_filter_weight(void *self, kd_weight_fix *fix)
{
    (void)self;
    mp_strip_module_prefix(fix);
    return KD_OK;
}

/* ------------------------------------------------------------ providers */

static const kd_model_vtable mixer_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = mixer_create,
    .destroy = mixer_destroy,
    .tensors = mixer_tensors,
    .taps = mixer_taps,
    .forward = mixer_forward,
    .forward_from = mixer_forward_from,
    .filter_weight = mixer_filter_weight,
};

/* One provider per row of ARCHS, all on one vtable. */
static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name, &mixer_vtable.header,
                                            &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "mixer", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
