/* ConvNeXt as timm 0.9 builds it (convnext_atto, femto, pico, nano, tiny,
 * small, base), with timm's state_dict names, so its weights load by name.
 *
 * A 4x4 stride-4 patchify stem with LayerNorm, four stages (each after the
 * first opens with LayerNorm + a 2x2 stride-2 conv), and blocks of: 7x7
 * depthwise conv, LayerNorm over channels, Linear C -> 4C, GELU (erf),
 * Linear 4C -> C, a per-channel layer scale (gamma), drop-path, plus the
 * input. The head pools, then LayerNorms, then classifies. Every LayerNorm
 * has eps 1e-6.
 *
 * timm's small variants (atto..nano, conv_mlp) keep the block in NCHW with
 * 1x1 convs; the others run it channels-last with Linear layers. The math
 * is the same; only the MLP weights' shapes differ ([4C, C, 1, 1] against
 * [4C, C]), so both run channels-last here, on the weight viewed as
 * [4C, C].
 *
 * Taps, in forward order: "stem", "stages.0".."stages.3" (timm's module
 * names; NCHW), "pre_logits" (the normalised pooled vector), "logits". Tap
 * t is the output of segment t; a forward from tap t runs segments t+1..
 * and stops after the last wanted tap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "../common/model_chain.h"
#include "../common/model_tensors.h"
#include "../common/model_layers.h"

#define N_STAGES 4
#define N_TAPS (N_STAGES + 3)
#define LN_EPS 1e-6
#define INIT_STD 0.02     /* timm's trunc_normal_(std=.02): its cut at +-2 is
                             100 std out, beyond any draw, so a normal */
#define LAYER_SCALE 1e-6  /* timm's ls_init_value */

typedef struct convnext_arch {
    const char *name;
    int depths[N_STAGES], dims[N_STAGES];
    bool conv_mlp; /* MLP weights stored as 1x1 convs */
} convnext_arch;

static const convnext_arch ARCHS[] = {
    {"convnext_atto", {2, 2, 6, 2}, {40, 80, 160, 320}, true},
    {"convnext_femto", {2, 2, 6, 2}, {48, 96, 192, 384}, true},
    {"convnext_pico", {2, 2, 6, 2}, {64, 128, 256, 512}, true},
    {"convnext_nano", {2, 2, 8, 2}, {80, 160, 320, 640}, true},
    {"convnext_tiny", {3, 3, 9, 3}, {96, 192, 384, 768}, false},
    {"convnext_small", {3, 3, 27, 3}, {96, 192, 384, 768}, false},
    {"convnext_base", {3, 3, 27, 3}, {128, 256, 512, 1024}, false},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

static const char *const TAP_NAMES[N_TAPS] = {"stem",     "stages.0", "stages.1",  "stages.2",
                                              "stages.3", "pre_logits", "logits"};

typedef struct layer_norm {
    kd_tensor *weight, *bias;
} layer_norm;

typedef struct linear {
    kd_tensor *weight, *bias; /* weight [out, in] or, conv_mlp, [out, in, 1, 1] */
} linear;

typedef struct cn_block {
    kd_tensor *gamma;
    conv_layer conv_dw;
    layer_norm norm;
    linear fc1, fc2;
    double drop_path;
} cn_block;

typedef struct convnext {
    const convnext_arch *arch;
    int depths[N_STAGES]; /* the arch's, or the "depths" parameter's */
    model_tensors mt;
    int in_chans, num_classes;
    double drop_rate;
    conv_layer stem;
    layer_norm stem_norm;
    layer_norm down_norm[N_STAGES]; /* stages 1..3 */
    conv_layer down[N_STAGES];
    cn_block *blocks;
    int stage_first[N_STAGES + 1]; /* stage s holds blocks [first[s], first[s+1]) */
    layer_norm head_norm;
    linear head_fc;
    kd_tap_info taps[N_TAPS];
} convnext;

/* ------------------------------------------------------------ building */

static kd_status add_layer_norm(convnext *m, layer_norm *ln, const char *prefix, int channels)
{
    const int64_t c = channels;
    const uint32_t flags = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
    ln->weight = mt_add(&m->mt, flags, m->mt.dtype, 1, &c, "%s.weight", prefix);
    ln->bias = mt_add(&m->mt, flags, m->mt.dtype, 1, &c, "%s.bias", prefix);
    if (!ln->weight || !ln->bias)
        return KD_ERR_NOMEM;
    return kd_tensor_fill_(ln->weight, 1.0);
}

/* Weight N(0, 0.02) in [out, in] (or [out, in, 1, 1]), bias 0. */
static kd_status add_linear(convnext *m, linear *l, const char *prefix, int in, int out,
                            bool as_conv)
{
    int index = m->mt.n;
    const int64_t shape[4] = {out, in, 1, 1}, b = out;
    l->weight = mt_add(&m->mt, KD_TENSOR_PARAM, m->mt.dtype, as_conv ? 4 : 2, shape,
                       "%s.weight", prefix);
    l->bias = mt_add(&m->mt, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, m->mt.dtype, 1, &b,
                     "%s.bias", prefix);
    if (!l->weight || !l->bias)
        return KD_ERR_NOMEM;
    return mt_init_normal(&m->mt, l->weight, index, INIT_STD);
}

static kd_status add_block(convnext *m, cn_block *b, const char *prefix, int dim)
{
    const int64_t c = dim;
    char name[96];
    b->gamma = mt_add(&m->mt, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, m->mt.dtype, 1, &c,
                      "%s.gamma", prefix);
    if (!b->gamma || kd_tensor_fill_(b->gamma, LAYER_SCALE) != KD_OK)
        return KD_ERR_NOMEM;
    snprintf(name, sizeof name, "%s.conv_dw", prefix);
    kd_status st = mt_add_conv(&m->mt, &b->conv_dw, name, dim, dim, 7, 1, 3, dim, true, INIT_STD);
    snprintf(name, sizeof name, "%s.norm", prefix);
    if (st == KD_OK)
        st = add_layer_norm(m, &b->norm, name, dim);
    snprintf(name, sizeof name, "%s.mlp.fc1", prefix);
    if (st == KD_OK)
        st = add_linear(m, &b->fc1, name, dim, 4 * dim, m->arch->conv_mlp);
    snprintf(name, sizeof name, "%s.mlp.fc2", prefix);
    if (st == KD_OK)
        st = add_linear(m, &b->fc2, name, 4 * dim, dim, m->arch->conv_mlp);
    return st;
}

static kd_status build(convnext *m, double drop_path_rate)
{
    const convnext_arch *a = m->arch;
    int n_blocks = 0;
    for (int s = 0; s < N_STAGES; s++)
        n_blocks += m->depths[s];
    m->blocks = calloc((size_t)n_blocks, sizeof *m->blocks);
    if (!m->blocks)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    kd_status st = mt_add_conv(&m->mt, &m->stem, "stem.0", m->in_chans, a->dims[0], 4, 4, 0, 1,
                               true, INIT_STD);
    if (st == KD_OK)
        st = add_layer_norm(m, &m->stem_norm, "stem.1", a->dims[0]);
    m->taps[0] = (kd_tap_info){TAP_NAMES[0], a->dims[0], 4, KD_LAYOUT_NCHW, 0};
    int b = 0, reduction = 4;
    for (int s = 0; st == KD_OK && s < N_STAGES; s++) {
        char prefix[64];
        if (s > 0) {
            snprintf(prefix, sizeof prefix, "stages.%d.downsample.0", s);
            st = add_layer_norm(m, &m->down_norm[s], prefix, a->dims[s - 1]);
            snprintf(prefix, sizeof prefix, "stages.%d.downsample.1", s);
            if (st == KD_OK)
                st = mt_add_conv(&m->mt, &m->down[s], prefix, a->dims[s - 1], a->dims[s], 2, 2,
                                 0, 1, true, INIT_STD);
            reduction *= 2;
        }
        m->stage_first[s] = b;
        for (int i = 0; st == KD_OK && i < m->depths[s]; i++, b++) {
            snprintf(prefix, sizeof prefix, "stages.%d.blocks.%d", s, i);
            st = add_block(m, &m->blocks[b], prefix, a->dims[s]);
            /* timm: linspace(0, rate, all blocks) */
            m->blocks[b].drop_path = n_blocks > 1 ? drop_path_rate * b / (n_blocks - 1) : 0;
        }
        m->taps[s + 1] = (kd_tap_info){TAP_NAMES[s + 1], a->dims[s], reduction,
                                       KD_LAYOUT_NCHW, 0};
    }
    m->stage_first[N_STAGES] = b;
    int width = a->dims[N_STAGES - 1];
    if (st == KD_OK)
        st = add_layer_norm(m, &m->head_norm, "head.norm", width);
    if (st == KD_OK)
        st = add_linear(m, &m->head_fc, "head.fc", width, m->num_classes, false);
    m->taps[N_STAGES + 1] = (kd_tap_info){TAP_NAMES[N_STAGES + 1], width, 1, KD_LAYOUT_NC, 0};
    m->taps[N_STAGES + 2] = (kd_tap_info){TAP_NAMES[N_STAGES + 2], m->num_classes, 1,
                                          KD_LAYOUT_NC, 0};
    return st;
}

static void convnext_destroy(void *self)
{
    convnext *m = self;
    if (!m)
        return;
    mt_free(&m->mt);
    free(m->blocks);
    free(m);
}

/* "depths": [] keeps the variant's; four counts replace them (a
 * reduced-depth model keeps timm's key names). */
static kd_status read_depths(convnext *m, const kd_params *p)
{
    int n = kd_params_array_length(p, "depths");
    if (n != 0 && n != N_STAGES)
        return kd_error(KD_ERR_INVALID, "%s: depths has %d entries; give 4 (one per stage) or "
                        "none", m->arch->name, n);
    for (int s = 0; s < N_STAGES; s++) {
        double d = n ? kd_params_array_number(p, "depths", s) : m->arch->depths[s];
        if (d < 1 || d > 64)
            return kd_error(KD_ERR_INVALID, "%s: depths[%d] is %g; a stage holds 1..64 blocks",
                            m->arch->name, s, d);
        m->depths[s] = (int)d;
    }
    return KD_OK;
}

static kd_status convnext_create(const convnext_arch *a, const kd_create_args *args, void **self)
{
    *self = NULL;
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only the CPU device is supported for now, got "
                        "device %d", a->name, (int)args->device);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: computes in float32 or float64, not %s",
                        a->name, kd_dtype_name(args->dtype));
    convnext *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    m->arch = a;
    m->mt = (model_tensors){.owner = a->name, .seed = args->seed, .dtype = args->dtype};
    m->in_chans = (int)kd_params_integer(args->params, "in_chans");
    m->num_classes = (int)kd_params_integer(args->params, "num_classes");
    m->drop_rate = kd_params_number(args->params, "drop_rate");
    kd_status st = read_depths(m, args->params);
    if (st == KD_OK)
        st = build(m, kd_params_number(args->params, "drop_path_rate"));
    if (st != KD_OK) {
        convnext_destroy(m);
        return st;
    }
    *self = m;
    return KD_OK;
}

static kd_status convnext_tensors(void *self, kd_tensor_list *out)
{
    convnext *m = self;
    KD_LIST_SET(out, m->mt.items, m->mt.n);
    return KD_OK;
}

static kd_status convnext_taps(void *self, kd_tap_list *out)
{
    convnext *m = self;
    KD_LIST_SET(out, m->taps, N_TAPS);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

static kd_tensor *norm_channels(kd_tensor *x, const layer_norm *ln)
{
    return kd_layer_norm2d(x, ln->weight, ln->bias, LN_EPS);
}

/* x [..., in] -> [..., out], on a conv_mlp weight viewed as [out, in]. */
static kd_tensor *apply_linear(kd_tensor *x, const linear *l)
{
    kd_tensor *w = l->weight;
    if (w->ndim == 4)
        w = kd_reshape(w, 2, (const int64_t[]){w->shape[0], w->shape[1]});
    return kd_linear(x, w, l->bias);
}

static kd_tensor *block_forward(const cn_block *b, kd_tensor *x, bool training, kd_rng *rng)
{
    kd_tensor *y = conv_forward(x, &b->conv_dw);
    y = kd_permute(y, (const int[]){0, 2, 3, 1}); /* NHWC: channels last */
    y = kd_layer_norm(y, b->norm.weight, b->norm.bias, LN_EPS);
    y = kd_gelu(apply_linear(y, &b->fc1));
    y = kd_mul(apply_linear(y, &b->fc2), b->gamma);
    y = kd_permute(y, (const int[]){0, 3, 1, 2});
    return kd_add(kd_drop_path(y, b->drop_path, training, rng), x);
}

/* Segment t turns tap t-1 (the image for t = 0) into tap t. */
static kd_tensor *run_segment(void *self, int t, kd_tensor *x, bool training, kd_rng *rng)
{
    convnext *m = self;
    kd_tensor *y;
    if (t == 0) {
        y = norm_channels(conv_forward(x, &m->stem), &m->stem_norm);
    } else if (t <= N_STAGES) {
        int s = t - 1;
        y = s > 0 ? conv_forward(norm_channels(x, &m->down_norm[s]), &m->down[s]) : x;
        if (!y) {
            kd_error_wrap(kd_last_status(), "stages.%d.downsample", s);
            return NULL;
        }
        for (int b = m->stage_first[s]; b < m->stage_first[s + 1]; b++) {
            y = block_forward(&m->blocks[b], y, training, rng);
            if (!y) {
                kd_error_wrap(kd_last_status(), "stages.%d.blocks.%d", s, b - m->stage_first[s]);
                return NULL;
            }
        }
        return y;
    } else if (t == N_STAGES + 1) {
        y = kd_mean(x, 2, (const int[]){2, 3}, false); /* pool first, then norm */
        y = kd_layer_norm(y, m->head_norm.weight, m->head_norm.bias, LN_EPS);
    } else {
        y = kd_linear(kd_dropout(x, m->drop_rate, training, rng), m->head_fc.weight,
                      m->head_fc.bias);
    }
    if (!y)
        kd_error_wrap(kd_last_status(), "%s", t == 0 ? "stem" : t == N_STAGES + 1 ? "head.norm"
                                                                                 : "head.fc");
    return y;
}

static model_chain chain_of(convnext *m)
{
    return (model_chain){m->arch->name, m->taps, N_TAPS, (void *)m, run_segment};
}

/* The stem and each downsample need a map at least as large as their
 * stride: an image of at least 32 x 32. */
static kd_status convnext_forward(void *self, const kd_forward_args *args)
{
    convnext *m = self;
    kd_status st = mc_check_args(m->arch->name, m->mt.dtype, args, "forward");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    if (x->ndim != 4 || x->shape[1] != m->in_chans || x->shape[0] < 1 || x->shape[2] < 32 ||
        x->shape[3] < 32) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s is not [N, %d, H, W] images with H, W "
                        ">= 32", m->arch->name, kd_shape_str(x, s, sizeof s), m->in_chans);
    }
    return mc_run(chain_of(m), -1, args);
}

static kd_status convnext_forward_from(void *self, int from, const kd_forward_args *args)
{
    convnext *m = self;
    kd_status st = mc_check_from(chain_of(m), from);
    if (st != KD_OK)
        return st;
    st = mc_check_args(m->arch->name, m->mt.dtype, args, "forward_from");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    const kd_tap_info *tap = &m->taps[from];
    bool vector = tap->layout == KD_LAYOUT_NC;
    if (x->ndim != (vector ? 2 : 4) || x->shape[1] != tap->channels || x->shape[0] < 1 ||
        (!vector && (x->shape[2] < 1 || x->shape[3] < 1))) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: forward_from %s: input %s is not [N, %d%s]",
                        m->arch->name, tap->name, kd_shape_str(x, s, sizeof s), tap->channels,
                        vector ? "" : ", H, W");
    }
    args->taps[from] = args->input;
    return mc_run(chain_of(m), from, args);
}

/* Checkpoints saved from torch's DataParallel name every tensor
 * "module.<name>". */
static kd_status convnext_filter_weight(void *self, kd_weight_fix *fix)
{
    (void)self;
    static const char prefix[] = "module.";
    if (strncmp(fix->name, prefix, sizeof prefix - 1) == 0)
        fix->name += sizeof prefix - 1;
    return KD_OK;
}

/* timm's ConvNeXt.group_matcher: the stem, the blocks stage by stage (a
 * stage's downsample with its first block), then the head (norm, fc). */
static kd_status convnext_layer_id(void *self, int index, int *id, int *num_layers)
{
    convnext *m = self;
    if (index < 0 || index >= m->mt.n)
        return kd_error(KD_ERR_INVALID, "%s: tensor %d of %d has no layer", m->arch->name, index, m->mt.n);
    static const char *const stem[] = {"stem", NULL};
    static const char *const head[] = {"norm_pre", "head", NULL};
    const ml_layers l = {m->arch->name, "stages", N_STAGES, m->depths, stem, NULL, head};
    return ml_layer_id(&l, m->mt.items[index].name, id, num_layers);
}

/* ------------------------------------------------------------ providers */

static kd_status convnext_create_provider(const kd_create_args *args, void **self)
{
    return convnext_create(args->provider_data, args, self);
}

static const kd_model_vtable convnext_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = convnext_create_provider,
    .destroy = convnext_destroy,
    .tensors = convnext_tensors,
    .taps = convnext_taps,
    .forward = convnext_forward,
    .forward_from = convnext_forward_from,
    .filter_weight = convnext_filter_weight,
    .layer_id = convnext_layer_id,
};

static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name,
                                            &convnext_vtable.header, &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "convnext", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
