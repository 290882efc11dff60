/* Swin Transformer v1 as timm 0.9+ builds it (swin_tiny/small/base/large
 * _patch4_window7_224), with timm's state_dict names.
 *
 * Activations flow as NHWC maps [B, H, W, C]. A 4x4 stride-4 patch
 * embedding with LayerNorm feeds four stages; stages 1..3 open with patch
 * merging (2x2 neighbours concatenated in timm's order, LayerNorm, a linear
 * map to twice the width); each block is pre-norm window attention with a
 * relative position bias, then a GELU MLP, both residual. Odd blocks shift
 * the map by half a window first and mask attention between the regions
 * the shift wrapped together; a stage whose map fits in one window clamps
 * the window to the map and never shifts. All LayerNorms use eps 1e-5.
 * The model is built for one input size (img_size), as timm's is: the
 * windows, padding and masks follow from it.
 *
 * Taps, in forward order: "patch_embed", every block
 * "layers.<i>.blocks.<j>", each stage's output "layers.<i>" (its last
 * block's; the taps timm's features_only returns), all NHWC; "norm" (the
 * final LayerNorm, NHWC), "pre_logits", "logits". Tap t is the output of
 * segment t, so forward_from(t) runs segments t+1... */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/model_chain.h"
#include "../common/model_parts.h"
#include "../common/model_layers.h"

#define LN_EPS 1e-5
#define PATCH 4
#define STAGES 4
#define MASK_VALUE (-100.0) /* timm's, not -inf */

typedef struct swin_arch {
    const char *name;
    int embed_dim;
    int depths[STAGES];
    int heads[STAGES];
} swin_arch;

static const swin_arch ARCHS[] = {
    {"swin_tiny_patch4_window7_224", 96, {2, 2, 6, 2}, {3, 6, 12, 24}},
    {"swin_small_patch4_window7_224", 96, {2, 2, 18, 2}, {3, 6, 12, 24}},
    {"swin_base_patch4_window7_224", 128, {2, 2, 18, 2}, {4, 8, 16, 32}},
    {"swin_large_patch4_window7_224", 192, {2, 2, 18, 2}, {6, 12, 24, 48}},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

typedef struct swin_block {
    int dim, heads, res;   /* the map is res x res */
    int window, shift;     /* after clamping to the map */
    int padded;            /* res rounded up to whole windows */
    double drop_path;
    mp_norm norm1, norm2;
    mp_linear qkv, proj;
    mp_mlp mlp;
    kd_tensor *bias_table; /* [(2w-1)^2, heads] */
    kd_tensor *bias_index; /* I64 [w^4]: table row of (query, key); not a weight */
    kd_tensor *mask;       /* [windows, 1, w^2, w^2] for shifted blocks, else NULL */
} swin_block;

typedef enum segment_kind { SEG_EMBED, SEG_BLOCK, SEG_STAGE, SEG_NORM, SEG_POOL, SEG_HEAD } segment_kind;

typedef struct segment {
    segment_kind kind;
    int stage, block; /* SEG_BLOCK: the block (index into blocks) */
    bool merge;       /* SEG_BLOCK: patch merging first (it opens stage > 0) */
} segment;

typedef struct swin {
    const swin_arch *arch;
    int in_chans, num_classes, img_size, window;
    int embed_dim; /* stage 0's width: the variant's, or the embed_dim parameter */
    double drop_rate, drop_path_rate;
    int depths[STAGES];
    model_tensors tensors;
    mp_patch_embed embed;
    mp_norm embed_norm, merge_norm[STAGES], final_norm;
    kd_tensor *merge_reduction[STAGES]; /* stages 1..3, no bias */
    mp_linear head;
    swin_block *blocks;
    int n_blocks;
    segment *segments;
    kd_tap_info *taps;
    char **tap_names;
    int n_taps;
    char renamed[128]; /* filter_weight's new name, until its next call */
} swin;

/* ------------------------------------------------------------ parameters */

/* timm's ViT init: Linear weights N(0, 0.02) truncated at +-2 std, biases 0;
 * the relative position tables N(0, 0.02) too. */
static kd_status add_linear(swin *m, mp_linear *l, const char *prefix, int in, int out)
{
    return mp_add_linear(&m->tensors, l, prefix, in, out, MP_TRUNC_NORMAL, 0.02, MP_ZEROS, 0);
}

/* The table row of each (query, key) pair of a w x w window:
 * (dy + w - 1) * (2w - 1) + (dx + w - 1). */
static kd_tensor *relative_index(int w)
{
    int n = w * w;
    int64_t shape = (int64_t)n * n;
    kd_tensor *t = kd_tensor_keep(kd_tensor_empty(KD_I64, KD_CPU, 1, &shape));
    if (!t)
        return NULL;
    int64_t *idx = kd_tensor_data(t);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            idx[i * n + j] = (int64_t)(i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);
    return t;
}

/* Region of row (or column) p of a padded map after the shift: the map
 * minus its last window, that window minus the shift, the shift. */
static int region(int p, int padded, int w, int s)
{
    return p < padded - w ? 0 : p < padded - s ? 1 : 2;
}

/* mask[win, 0, i, j] = -100 where tokens i and j of window win came from
 * different regions of the shifted map, else 0. */
static kd_tensor *shift_mask(const swin_block *b, kd_dtype dtype)
{
    int w = b->window, n = w * w, per_side = b->padded / w;
    int64_t shape[4] = {(int64_t)per_side * per_side, 1, n, n};
    kd_tensor *t = kd_tensor_keep(kd_tensor_zeros(KD_F64, KD_CPU, 4, shape));
    if (!t)
        return NULL;
    double *mask = kd_tensor_data(t);
    for (int wy = 0; wy < per_side; wy++)
        for (int wx = 0; wx < per_side; wx++) {
            double *m = mask + (int64_t)(wy * per_side + wx) * n * n;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    int ri = 3 * region(wy * w + i / w, b->padded, w, b->shift) +
                             region(wx * w + i % w, b->padded, w, b->shift);
                    int rj = 3 * region(wy * w + j / w, b->padded, w, b->shift) +
                             region(wx * w + j % w, b->padded, w, b->shift);
                    m[i * n + j] = ri == rj ? 0.0 : MASK_VALUE;
                }
        }
    if (dtype == KD_F64)
        return t;
    kd_tensor *cast = kd_tensor_keep(kd_cast(t, dtype));
    kd_tensor_free(t);
    return cast;
}

static kd_status add_block(swin *m, swin_block *b, int stage, int j, int dim, int heads, int res)
{
    char p[64];
    snprintf(p, sizeof p, "layers.%d.blocks.%d", stage, j);
    b->dim = dim;
    b->heads = heads;
    b->res = res;
    b->window = res <= m->window ? res : m->window;
    b->shift = res <= m->window || j % 2 == 0 ? 0 : m->window / 2;
    b->padded = (res + b->window - 1) / b->window * b->window;
    int table_rows = (2 * b->window - 1) * (2 * b->window - 1);
    char name[96];
    kd_status st;
    snprintf(name, sizeof name, "%s.norm1", p);
    if ((st = mp_add_norm(&m->tensors, &b->norm1, name, dim)) != KD_OK)
        return st;
    b->bias_table = mp_add(&m->tensors, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_TRUNC_NORMAL,
                           0.02, 2, (int64_t[]){table_rows, heads},
                           "%s.attn.relative_position_bias_table", p);
    if (!b->bias_table)
        return kd_last_status();
    snprintf(name, sizeof name, "%s.attn.qkv", p);
    if ((st = add_linear(m, &b->qkv, name, dim, 3 * dim)) != KD_OK)
        return st;
    snprintf(name, sizeof name, "%s.attn.proj", p);
    if ((st = add_linear(m, &b->proj, name, dim, dim)) != KD_OK)
        return st;
    snprintf(name, sizeof name, "%s.norm2", p);
    if ((st = mp_add_norm(&m->tensors, &b->norm2, name, dim)) != KD_OK)
        return st;
    snprintf(name, sizeof name, "%s.mlp.fc1", p);
    if ((st = add_linear(m, &b->mlp.fc1, name, dim, 4 * dim)) != KD_OK)
        return st;
    snprintf(name, sizeof name, "%s.mlp.fc2", p);
    if ((st = add_linear(m, &b->mlp.fc2, name, 4 * dim, dim)) != KD_OK)
        return st;
    b->bias_index = relative_index(b->window);
    if (!b->bias_index)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", m->arch->name);
    if (b->shift && !(b->mask = shift_mask(b, m->tensors.dtype)))
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", m->arch->name);
    return KD_OK;
}

/* Taps and segments are built together: tap i is segment i's output. */
static kd_status add_tap(swin *m, segment seg, int channels, int reduction, kd_tap_layout layout,
                         const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static kd_status add_tap(swin *m, segment seg, int channels, int reduction, kd_tap_layout layout,
                         const char *fmt, ...)
{
    char name[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *owned = strdup(name);
    if (!owned)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", m->arch->name);
    m->tap_names[m->n_taps] = owned;
    m->taps[m->n_taps] = (kd_tap_info){owned, channels, reduction, layout, 0};
    m->segments[m->n_taps++] = seg;
    return KD_OK;
}

static kd_status build(swin *m)
{
    const swin_arch *a = m->arch;
    int total = 0;
    for (int s = 0; s < STAGES; s++)
        total += m->depths[s];
    int max_taps = total + STAGES + 4;
    m->blocks = calloc((size_t)total, sizeof *m->blocks);
    m->segments = calloc((size_t)max_taps, sizeof *m->segments);
    m->taps = calloc((size_t)max_taps, sizeof *m->taps);
    m->tap_names = calloc((size_t)max_taps, sizeof *m->tap_names);
    if (!m->blocks || !m->segments || !m->taps || !m->tap_names)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);

    int c = m->embed_dim;
    /* torch's Conv2d default (timm leaves the patch embedding to it):
     * uniform in +-1/sqrt(fan_in) for weight and bias. */
    double bound = 1.0 / sqrt((double)m->in_chans * PATCH * PATCH);
    m->embed.patch = PATCH;
    m->embed.weight = mp_add(&m->tensors, KD_TENSOR_PARAM, MP_UNIFORM, bound, 4,
                             (int64_t[]){c, m->in_chans, PATCH, PATCH}, "patch_embed.proj.weight");
    m->embed.bias = m->embed.weight
                        ? mp_add(&m->tensors, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, MP_UNIFORM,
                                 bound, 1, (int64_t[]){c}, "patch_embed.proj.bias")
                        : NULL;
    kd_status st = m->embed.bias ? KD_OK : kd_last_status();
    if (st == KD_OK)
        st = mp_add_norm(&m->tensors, &m->embed_norm, "patch_embed.norm", c);
    int res = m->img_size / PATCH, reduction = PATCH;
    if (st == KD_OK)
        st = add_tap(m, (segment){SEG_EMBED, 0, 0, false}, c, reduction, KD_LAYOUT_NHWC, "patch_embed");
    int k = 0;
    for (int s = 0; st == KD_OK && s < STAGES; s++) {
        if (s > 0) {
            char name[64];
            snprintf(name, sizeof name, "layers.%d.downsample.norm", s);
            if ((st = mp_add_norm(&m->tensors, &m->merge_norm[s], name, 4 * c)) != KD_OK)
                break;
            m->merge_reduction[s] = mp_add(&m->tensors, KD_TENSOR_PARAM, MP_TRUNC_NORMAL, 0.02, 2,
                                           (int64_t[]){2 * c, 4 * c},
                                           "layers.%d.downsample.reduction.weight", s);
            if (!m->merge_reduction[s]) {
                st = kd_last_status();
                break;
            }
            c *= 2;
            res /= 2;
            reduction *= 2;
        }
        for (int j = 0; st == KD_OK && j < m->depths[s]; j++, k++) {
            swin_block *b = &m->blocks[k];
            st = add_block(m, b, s, j, c, a->heads[s], res);
            /* timm: linspace(0, rate, all blocks) */
            b->drop_path = total > 1 ? m->drop_path_rate * k / (total - 1) : 0;
            if (st == KD_OK)
                st = add_tap(m, (segment){SEG_BLOCK, s, k, s > 0 && j == 0}, c, reduction, KD_LAYOUT_NHWC,
                             "layers.%d.blocks.%d", s, j);
        }
        if (st == KD_OK)
            st = add_tap(m, (segment){SEG_STAGE, s, 0, false}, c, reduction, KD_LAYOUT_NHWC,
                         "layers.%d", s);
    }
    m->n_blocks = k;
    if (st == KD_OK)
        st = mp_add_norm(&m->tensors, &m->final_norm, "norm", c);
    if (st == KD_OK)
        st = add_linear(m, &m->head, "head.fc", c, m->num_classes);
    if (st == KD_OK)
        st = add_tap(m, (segment){SEG_NORM, 0, 0, false}, c, reduction, KD_LAYOUT_NHWC, "norm");
    if (st == KD_OK)
        st = add_tap(m, (segment){SEG_POOL, 0, 0, false}, c, 1, KD_LAYOUT_NC, "pre_logits");
    if (st == KD_OK)
        st = add_tap(m, (segment){SEG_HEAD, 0, 0, false}, m->num_classes, 1, KD_LAYOUT_NC, "logits");
    return st;
}

static void swin_destroy(void *self)
{
    swin *m = self;
    if (!m)
        return;
    for (int i = 0; m->blocks && i < m->n_blocks; i++) {
        kd_tensor_free(m->blocks[i].bias_index);
        kd_tensor_free(m->blocks[i].mask);
    }
    mt_free(&m->tensors);
    for (int i = 0; i < m->n_taps; i++)
        free(m->tap_names[i]);
    free(m->blocks);
    free(m->segments);
    free(m->taps);
    free(m->tap_names);
    free(m);
}

static kd_status swin_create(const swin_arch *a, const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only the CPU device is supported for now, got "
                        "device %d", a->name, (int)args->device);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: computes in float32 or float64, not %s",
                        a->name, kd_dtype_name(args->dtype));
    swin *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    m->arch = a;
    m->tensors = (model_tensors){a->name, args->seed, args->dtype, NULL, 0, 0};
    m->in_chans = (int)kd_params_integer(p, "in_chans");
    m->num_classes = (int)kd_params_integer(p, "num_classes");
    m->img_size = (int)kd_params_integer(p, "img_size");
    m->window = (int)kd_params_integer(p, "window_size");
    m->drop_rate = kd_params_number(p, "drop_rate");
    m->drop_path_rate = kd_params_number(p, "drop_path_rate");
    int64_t embed_dim = kd_params_integer(p, "embed_dim");
    m->embed_dim = embed_dim ? (int)embed_dim : a->embed_dim;
    kd_status st = KD_OK;
    /* each stage doubles width and heads, so stage 0 fixes the head size */
    if (m->embed_dim % a->heads[0] != 0)
        st = kd_error(KD_ERR_INVALID, "%s: embed_dim %d is not a multiple of stage 0's %d "
                      "heads", a->name, m->embed_dim, a->heads[0]);
    int n_depths = kd_params_array_length(p, "depths");
    if (n_depths != 0 && n_depths != STAGES)
        st = kd_error(KD_ERR_INVALID, "%s: depths has %d entries; give %d (one per stage) or "
                      "none for the variant's", a->name, n_depths, STAGES);
    for (int s = 0; s < STAGES; s++) {
        m->depths[s] = n_depths == STAGES ? (int)kd_params_array_number(p, "depths", s)
                                          : a->depths[s];
        if (st == KD_OK && m->depths[s] < 1)
            st = kd_error(KD_ERR_INVALID, "%s: depths[%d] is %d; every stage needs a block",
                          a->name, s, m->depths[s]);
    }
    /* Patch merging halves the map three times and needs it even each time. */
    int grid = m->img_size / PATCH;
    if (st == KD_OK && (m->img_size % PATCH != 0 || grid % 8 != 0))
        st = kd_error(KD_ERR_INVALID, "%s: img_size %d: the %dx%d patch grid must halve evenly "
                      "three times (img_size a multiple of 32)", a->name, m->img_size, grid,
                      grid);
    if (st == KD_OK)
        st = build(m);
    if (st != KD_OK) {
        kd_error_wrap(st, "%s", a->name);
        swin_destroy(m);
        return st;
    }
    *self = m;
    return KD_OK;
}

static kd_status swin_tensors(void *self, kd_tensor_list *out)
{
    swin *m = self;
    KD_LIST_SET(out, m->tensors.items, m->tensors.n);
    return KD_OK;
}

static kd_status swin_taps(void *self, kd_tap_list *out)
{
    swin *m = self;
    KD_LIST_SET(out, m->taps, m->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

static kd_tensor *linear(kd_tensor *x, const mp_linear *l) { return mp_linear_forward(l, x); }

static kd_tensor *layer_norm(kd_tensor *x, const mp_norm *n)
{
    return mp_norm_forward(n, x, LN_EPS);
}

/* [B, P, P, C] (P whole windows of w) -> [B, nW, w*w, C], windows row-major. */
static kd_tensor *to_windows(kd_tensor *x, int w)
{
    int64_t b = x->shape[0], per = x->shape[1] / w, c = x->shape[3];
    x = kd_reshape(x, 6, (const int64_t[]){b, per, w, per, w, c});
    x = kd_permute(x, (const int[]){0, 1, 3, 2, 4, 5});
    return kd_reshape(x, 4, (const int64_t[]){b, per * per, (int64_t)w * w, c});
}

/* The inverse of to_windows for a P x P map. */
static kd_tensor *from_windows(kd_tensor *x, int w, int p)
{
    int64_t b = x->shape[0], per = p / w, c = x->shape[3];
    x = kd_reshape(x, 6, (const int64_t[]){b, per, per, w, w, c});
    x = kd_permute(x, (const int[]){0, 1, 3, 2, 4, 5});
    return kd_reshape(x, 4, (const int64_t[]){b, p, p, c});
}

/* The attention bias: the relative position bias [heads, n, n], plus the
 * shift mask [nW, 1, n, n] -> [nW, heads, n, n] in shifted blocks. */
static kd_tensor *attention_bias(const swin_block *b)
{
    int64_t n = (int64_t)b->window * b->window;
    kd_tensor *bias = kd_index_select(b->bias_table, 0, b->bias_index);
    bias = kd_reshape(bias, 3, (const int64_t[]){n, n, b->heads});
    bias = kd_permute(bias, (const int[]){2, 0, 1});
    return b->mask ? kd_add(bias, b->mask) : bias;
}

/* Window attention on h = norm1(x), [B, R, R, C] -> [B, R, R, C]. */
static kd_tensor *window_attention(const swin_block *b, kd_tensor *h)
{
    int w = b->window, s = b->shift, pad = b->padded - b->res;
    int64_t batch = h->shape[0], c = b->dim, hd = c / b->heads, n = (int64_t)w * w;
    if (s)
        h = kd_roll(h, 2, (const int64_t[]){-s, -s}, (const int[]){1, 2});
    if (pad)
        h = kd_pad(h, 3, (const int64_t[]){0, 0, 0, pad, 0, pad}, 0.0);
    kd_tensor *win = to_windows(h, w);
    if (!win)
        return NULL;
    int64_t nw = win->shape[1];
    kd_tensor *qkv = linear(win, &b->qkv); /* [B, nW, n, 3C] */
    qkv = kd_reshape(qkv, 6, (const int64_t[]){batch, nw, n, 3, b->heads, hd});
    qkv = kd_permute(qkv, (const int[]){3, 0, 1, 4, 2, 5}); /* [3, B, nW, heads, n, hd] */
    kd_tensor *parts[3];
    if (!qkv || kd_split(qkv, 0, 3, (const int64_t[]){1, 1, 1}, parts) != KD_OK)
        return NULL;
    for (int i = 0; i < 3; i++)
        parts[i] = kd_squeeze(parts[i], 0);
    kd_tensor *o = kd_scaled_dot_product_attention(parts[0], parts[1], parts[2],
                                                   attention_bias(b), 1.0 / sqrt((double)hd));
    o = kd_permute(o, (const int[]){0, 1, 3, 2, 4}); /* [B, nW, n, heads, hd] */
    o = kd_reshape(o, 4, (const int64_t[]){batch, nw, n, c});
    o = from_windows(linear(o, &b->proj), w, b->padded);
    if (o && pad) {
        o = kd_slice(o, 1, 0, b->res, 1);
        o = kd_slice(o, 2, 0, b->res, 1);
    }
    if (o && s)
        o = kd_roll(o, 2, (const int64_t[]){s, s}, (const int[]){1, 2});
    return o;
}

static kd_tensor *block_forward(const swin_block *b, kd_tensor *x, bool training, kd_rng *rng)
{
    kd_tensor *a = window_attention(b, layer_norm(x, &b->norm1));
    x = kd_add(x, kd_drop_path(a, b->drop_path, training, rng));
    kd_tensor *mlp = mp_mlp_forward(&b->mlp, layer_norm(x, &b->norm2));
    return kd_add(x, kd_drop_path(mlp, b->drop_path, training, rng));
}

/* 2x2 neighbours -> channels in timm's order (row 0 col 0, row 1 col 0,
 * row 0 col 1, row 1 col 1), LayerNorm, linear to twice the width. */
static kd_tensor *patch_merging(const swin *m, int s, kd_tensor *x)
{
    int64_t b = x->shape[0], r = x->shape[1], c = x->shape[3];
    x = kd_reshape(x, 6, (const int64_t[]){b, r / 2, 2, r / 2, 2, c});
    x = kd_permute(x, (const int[]){0, 1, 3, 4, 2, 5});
    x = kd_reshape(x, 4, (const int64_t[]){b, r / 2, r / 2, 4 * c});
    return kd_linear(layer_norm(x, &m->merge_norm[s]), m->merge_reduction[s], NULL);
}

static kd_tensor *run_segment(void *self, int t, kd_tensor *x, bool training, kd_rng *rng)
{
    swin *m = self;
    const segment *seg = &m->segments[t];
    kd_tensor *y = NULL;
    switch (seg->kind) {
    case SEG_EMBED: {
        kd_conv2d_params p = {{PATCH, PATCH}, {0, 0}, {1, 1}, 1};
        y = kd_conv2d(x, m->embed.weight, m->embed.bias, &p); /* NHWC, not tokens */
        y = layer_norm(kd_permute(y, (const int[]){0, 2, 3, 1}), &m->embed_norm);
        break;
    }
    case SEG_BLOCK: {
        const swin_block *b = &m->blocks[seg->block];
        y = block_forward(b, seg->merge ? patch_merging(m, seg->stage, x) : x, training, rng);
        break;
    }
    case SEG_STAGE:
        y = x;
        break;
    case SEG_NORM:
        y = layer_norm(x, &m->final_norm);
        break;
    case SEG_POOL:
        y = kd_mean(x, 2, (const int[]){1, 2}, false);
        break;
    case SEG_HEAD:
        y = linear(kd_dropout(x, m->drop_rate, training, rng), &m->head);
        break;
    }
    if (!y)
        kd_error_wrap(kd_last_status(), "%s", m->taps[t].name);
    return y;
}

static model_chain chain_of(swin *m)
{
    return (model_chain){m->arch->name, m->taps, m->n_taps, (void *)m, run_segment};
}

static kd_status swin_forward(void *self, const kd_forward_args *args)
{
    swin *m = self;
    kd_status st = mc_check_args(m->arch->name, m->tensors.dtype, args, "forward");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    if (x->ndim != 4 || x->shape[0] < 1 || x->shape[1] != m->in_chans ||
        x->shape[2] != m->img_size || x->shape[3] != m->img_size) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s is not [N, %d, %d, %d] images (the model "
                        "is built for img_size %d)", m->arch->name, kd_shape_str(x, s, sizeof s),
                        m->in_chans, m->img_size, m->img_size, m->img_size);
    }
    return mc_run(chain_of(m), -1, args);
}

static kd_status swin_forward_from(void *self, int from, const kd_forward_args *args)
{
    swin *m = self;
    kd_status st = mc_check_from(chain_of(m), from);
    if (st != KD_OK)
        return st;
    st = mc_check_args(m->arch->name, m->tensors.dtype, args, "forward_from");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    const kd_tap_info *tap = &m->taps[from];
    int side = m->img_size / tap->reduction;
    bool vector = tap->layout == KD_LAYOUT_NC;
    if (x->ndim != (vector ? 2 : 4) || x->shape[0] < 1 ||
        x->shape[x->ndim - 1] != tap->channels ||
        (!vector && (x->shape[1] != side || x->shape[2] != side))) {
        char s[96];
        return kd_error(KD_ERR_INVALID, vector ? "%s: forward_from %s: input %s is not [N, %d]"
                                               : "%s: forward_from %s: input %s is not [N, %d, "
                                                 "%d, %d]",
                        m->arch->name, tap->name, kd_shape_str(x, s, sizeof s),
                        vector ? tap->channels : side, side, tap->channels);
    }
    args->taps[from] = args->input;
    return mc_run(chain_of(m), from, args);
}

/* ----------------------------------------------------------- checkpoints */

static const kd_named_tensor *find_tensor(const swin *m, const char *name)
{
    for (int i = 0; i < m->tensors.n; i++)
        if (!strcmp(m->tensors.items[i].name, name))
            return &m->tensors.items[i];
    return NULL;
}

static bool same_shape(const kd_tensor *a, const kd_tensor *b)
{
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

/* Older and foreign layouts of the same weights:
 * - "module." from DataParallel;
 * - relative_position_index and attn_mask, persistent buffers before timm
 *   0.9.6: dropped (the model computes them);
 * - Microsoft's original checkpoints: "head.*" is "head.fc.*", and each
 *   stage's patch merging sits at the end of the stage before, so
 *   "layers.N.downsample.*" is "layers.(N+1).downsample.*" when it has that
 *   tensor's shape rather than the one of its own name. */
static kd_status swin_filter_weight(void *self, kd_weight_fix *fix)
{
    swin *m = self;
    char *renamed = m->renamed;
    mp_strip_module_prefix(fix);
    if (ends_with(fix->name, "relative_position_index") || ends_with(fix->name, ".attn_mask")) {
        fix->drop = true;
        return KD_OK;
    }
    if (!strcmp(fix->name, "head.weight") || !strcmp(fix->name, "head.bias")) {
        snprintf(renamed, sizeof m->renamed, "head.fc.%s", fix->name + 5);
        fix->name = renamed;
        return KD_OK;
    }
    int stage, used = 0;
    if (sscanf(fix->name, "layers.%d.downsample.%n", &stage, &used) == 1 && used > 0 &&
        stage >= 0 && stage < STAGES - 1) {
        const kd_named_tensor *own = find_tensor(m, fix->name);
        if (own && same_shape(own->tensor, fix->value))
            return KD_OK;
        snprintf(renamed, sizeof m->renamed, "layers.%d.downsample.%s", stage + 1, fix->name + used);
        const kd_named_tensor *next = find_tensor(m, renamed);
        if (next && same_shape(next->tensor, fix->value))
            fix->name = renamed;
    }
    return KD_OK;
}

/* timm's SwinTransformer.group_matcher: the patch embedding, the blocks
 * stage by stage (a stage's patch merging with its first block; the final
 * norm with the last), then the head. */
static kd_status swin_layer_id(void *self, int index, int *id, int *num_layers)
{
    swin *m = self;
    if (index < 0 || index >= m->tensors.n)
        return kd_error(KD_ERR_INVALID, "%s: tensor %d of %d has no layer", m->arch->name, index, m->tensors.n);
    static const char *const stem[] = {"patch_embed", "absolute_pos_embed", NULL};
    static const char *const last_block[] = {"norm", NULL};
    static const char *const head[] = {"head", NULL};
    const ml_layers l = {m->arch->name, "layers", STAGES, m->depths, stem, last_block, head};
    return ml_layer_id(&l, m->tensors.items[index].name, id, num_layers);
}

/* ------------------------------------------------------------ providers */

static kd_status swin_create_provider(const kd_create_args *args, void **self)
{
    return swin_create(args->provider_data, args, self);
}

static const kd_model_vtable swin_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = swin_create_provider,
    .destroy = swin_destroy,
    .tensors = swin_tensors,
    .taps = swin_taps,
    .forward = swin_forward,
    .forward_from = swin_forward_from,
    .filter_weight = swin_filter_weight,
    .layer_id = swin_layer_id,
};

static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name, &swin_vtable.header,
                                            &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "swin", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
