/* MobileNetV2 and MobileNetV3 (large, small) as timm 0.9 builds them
 * (mobilenetv2_100, mobilenetv3_large_100, mobilenetv3_small_100), with
 * timm's state_dict names, so its weights load by name.
 *
 * Both are a stem (3x3 s2 conv, BN, activation), stages of blocks built
 * from timm's arch strings (depthwise-separable "ds", inverted residual
 * "ir", conv-bn-act "cn"; widths through make_divisible), and a head:
 * V2 runs a 1x1 conv_head with BN and ReLU6 before pooling; V3 pools
 * first, then a 1x1 conv_head with bias and hard-swish.
 *
 * Taps, in forward order: "bn1" (the stem), "blocks.0".."blocks.<S-1>"
 * (timm's module names; NCHW), then V2's "bn2" (the head map), then
 * "pre_logits" (the vector the classifier reads) and "logits". Tap t is
 * the output of segment t, so a forward from tap t runs segments t+1.. and
 * stops after the last wanted tap. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "../common/model_chain.h"
#include "../common/model_tensors.h"

#define MAX_STAGES 7
#define MAX_TAPS (MAX_STAGES + 4)

typedef enum block_type { DS, IR, CN } block_type;
typedef enum act_kind { ACT_NONE, ACT_RELU, ACT_RELU6, ACT_HSWISH } act_kind;

#define MAX_REPEATS 4

/* A stage: one of timm's arch strings, "ir_r3_k5_s2_e3_c40_se0.25_nre" =
 * {IR, 3, 5, 2, {3, 3, 3}, 40, true, ACT_RELU}, or several strings of one
 * block type, kernel and width whose expansion ratios differ
 * ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"): hence a ratio per
 * block. The stride is the first block's. */
typedef struct stage_def {
    block_type type;
    int repeats, kernel, stride;
    double exp[MAX_REPEATS]; /* IR: each block's expansion ratio */
    int out;
    bool se;                 /* squeeze-excite with ratio 0.25 */
    act_kind act;
} stage_def;

typedef struct mobilenet_arch {
    const char *name;
    bool v3;        /* V3 head: pool, conv_head with bias, act; V2: conv_head, bn2, act, pool */
    act_kind act;   /* stem and head activation */
    int stem_width, num_features;
    int n_stages;
    stage_def stages[MAX_STAGES];
} mobilenet_arch;

#define R ACT_RELU
#define R6 ACT_RELU6
#define HS ACT_HSWISH
static const mobilenet_arch ARCHS[] = {
    {"mobilenetv2_100", false, R6, 32, 1280, 7,
     {{DS, 1, 3, 1, {1}, 16, false, R6},
      {IR, 2, 3, 2, {6, 6}, 24, false, R6},
      {IR, 3, 3, 2, {6, 6, 6}, 32, false, R6},
      {IR, 4, 3, 2, {6, 6, 6, 6}, 64, false, R6},
      {IR, 3, 3, 1, {6, 6, 6}, 96, false, R6},
      {IR, 3, 3, 2, {6, 6, 6}, 160, false, R6},
      {IR, 1, 3, 1, {6}, 320, false, R6}}},
    {"mobilenetv3_large_100", true, HS, 16, 1280, 7,
     {{DS, 1, 3, 1, {1}, 16, false, R},
      {IR, 2, 3, 2, {4, 3}, 24, false, R},
      {IR, 3, 5, 2, {3, 3, 3}, 40, true, R},
      {IR, 4, 3, 2, {6, 2.5, 2.3, 2.3}, 80, false, HS},
      {IR, 2, 3, 1, {6, 6}, 112, true, HS},
      {IR, 3, 5, 2, {6, 6, 6}, 160, true, HS},
      {CN, 1, 1, 1, {1}, 960, false, HS}}},
    {"mobilenetv3_small_100", true, HS, 16, 1024, 6,
     {{DS, 1, 3, 2, {1}, 16, true, R},
      {IR, 2, 3, 2, {4.5, 3.67}, 24, false, R},
      {IR, 3, 5, 2, {4, 6, 6}, 40, true, HS},
      {IR, 2, 5, 1, {3, 3}, 48, true, HS},
      {IR, 3, 5, 2, {6, 6, 6}, 96, true, HS},
      {CN, 1, 1, 1, {1}, 576, false, HS}}},
};
#undef R
#undef R6
#undef HS
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

/* timm's make_divisible(v, 8): the nearest multiple of 8 (at least 8),
 * one step up when rounding lost more than 10%. */
static int make_divisible(double v)
{
    int r = (int)(v + 4) / 8 * 8;
    if (r < 8)
        r = 8;
    if (r < 0.9 * v)
        r += 8;
    return r;
}

/* A conv, its BN and the activation after the BN. */
typedef struct conv_step {
    conv_layer conv;
    bn_layer bn;
    act_kind act;
} conv_step;

typedef struct mb_block {
    int n_steps;      /* DS: dw, pw; IR: pw, dw, pwl; CN: conv */
    conv_step step[3];
    int se_after;     /* the step the squeeze-excite follows; -1: none */
    conv_layer se_reduce, se_expand;
    bool skip;        /* stride 1 and in == out (never for CN) */
    double drop_path; /* timm's rate * block index / block count */
} mb_block;

typedef struct mobilenet {
    const mobilenet_arch *arch;
    model_tensors mt;
    int in_chans, num_classes;
    double drop_rate;
    conv_step stem;
    mb_block *blocks;
    int stage_first[MAX_STAGES + 1]; /* stage s holds blocks [first[s], first[s+1]) */
    conv_layer head;
    bn_layer head_bn; /* V2 only */
    kd_tensor *fc_weight, *fc_bias;
    kd_tap_info taps[MAX_TAPS];
    int n_taps;
    char tap_names[MAX_STAGES][24];
} mobilenet;

/* ------------------------------------------------------------ building */

/* timm's _init_weight_goog: conv weights N(0, sqrt(2 / fan_out)) with
 * fan_out = k * k * out / groups, biases 0; padding (k - 1) / 2 as timm's
 * symmetric padding for odd k. */
static kd_status add_conv(mobilenet *m, conv_layer *c, const char *name, int cin, int cout,
                          int k, int stride, int groups, bool bias)
{
    double std = sqrt(2.0 / ((double)k * k * cout / groups));
    return mt_add_conv(&m->mt, c, name, cin, cout, k, stride, (k - 1) / 2, groups, bias, std);
}

static kd_status add_step(mobilenet *m, conv_step *s, const char *prefix, const char *conv,
                          const char *bn, int cin, int cout, int k, int stride, int groups,
                          act_kind act)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", prefix, conv);
    s->act = act;
    kd_status st = add_conv(m, &s->conv, name, cin, cout, k, stride, groups, false);
    snprintf(name, sizeof name, "%s%s", prefix, bn);
    return st == KD_OK ? mt_add_bn(&m->mt, &s->bn, name, cout) : st;
}

/* Squeeze-excite on `width` channels: reduce to make_divisible(width / 4),
 * ReLU, expand, hard-sigmoid gate. */
static kd_status add_se(mobilenet *m, mb_block *b, const char *prefix, int width)
{
    char name[96];
    int rd = make_divisible(width * 0.25);
    snprintf(name, sizeof name, "%sse.conv_reduce", prefix);
    kd_status st = add_conv(m, &b->se_reduce, name, width, rd, 1, 1, 1, true);
    snprintf(name, sizeof name, "%sse.conv_expand", prefix);
    return st == KD_OK ? add_conv(m, &b->se_expand, name, rd, width, 1, 1, 1, true) : st;
}

static kd_status add_block(mobilenet *m, mb_block *b, const char *prefix, const stage_def *d,
                           int cin, double exp_ratio, int stride)
{
    int k = d->kernel, out = d->out;
    kd_status st;
    b->se_after = -1;
    if (d->type == CN) {
        b->n_steps = 1;
        return add_step(m, &b->step[0], prefix, "conv", "bn1", cin, out, 1, stride, 1, d->act);
    }
    if (d->type == DS) {
        b->n_steps = 2;
        st = add_step(m, &b->step[0], prefix, "conv_dw", "bn1", cin, cin, k, stride, cin, d->act);
        if (st == KD_OK && d->se) {
            b->se_after = 0;
            st = add_se(m, b, prefix, cin);
        }
        if (st == KD_OK)
            st = add_step(m, &b->step[1], prefix, "conv_pw", "bn2", cin, out, 1, 1, 1, ACT_NONE);
    } else {
        int mid = make_divisible(cin * exp_ratio);
        b->n_steps = 3;
        st = add_step(m, &b->step[0], prefix, "conv_pw", "bn1", cin, mid, 1, 1, 1, d->act);
        if (st == KD_OK)
            st = add_step(m, &b->step[1], prefix, "conv_dw", "bn2", mid, mid, k, stride, mid,
                          d->act);
        if (st == KD_OK && d->se) {
            b->se_after = 1;
            st = add_se(m, b, prefix, mid);
        }
        if (st == KD_OK)
            st = add_step(m, &b->step[2], prefix, "conv_pwl", "bn3", mid, out, 1, 1, 1,
                          ACT_NONE);
    }
    b->skip = stride == 1 && cin == out;
    return st;
}

/* timm's Linear init here: weight uniform in +-1/sqrt(out_features),
 * bias 0. */
static kd_status add_classifier(mobilenet *m, int fan_in)
{
    int index = m->mt.n;
    const int64_t wshape[2] = {m->num_classes, fan_in}, bshape = m->num_classes;
    m->fc_weight = mt_add(&m->mt, KD_TENSOR_PARAM, m->mt.dtype, 2, wshape, "classifier.weight");
    m->fc_bias = mt_add(&m->mt, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, m->mt.dtype, 1, &bshape,
                        "classifier.bias");
    if (!m->fc_weight || !m->fc_bias)
        return KD_ERR_NOMEM;
    return mt_init_uniform(&m->mt, m->fc_weight, index, 1.0 / sqrt((double)m->num_classes));
}

static void set_tap(mobilenet *m, const char *name, int channels, int reduction,
                    kd_tap_layout layout)
{
    m->taps[m->n_taps++] = (kd_tap_info){name, channels, reduction, layout, 0};
}

static kd_status build(mobilenet *m, double drop_path_rate)
{
    const mobilenet_arch *a = m->arch;
    kd_status st = add_step(m, &m->stem, "", "conv_stem", "bn1", m->in_chans, a->stem_width, 3,
                            2, 1, a->act);
    int n_blocks = 0;
    for (int s = 0; s < a->n_stages; s++)
        n_blocks += a->stages[s].repeats;
    m->blocks = st == KD_OK ? calloc((size_t)n_blocks, sizeof *m->blocks) : NULL;
    if (!m->blocks)
        return st == KD_OK ? kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name) : st;
    int cin = a->stem_width, reduction = 2, b = 0;
    set_tap(m, "bn1", cin, reduction, KD_LAYOUT_NCHW);
    for (int s = 0; s < a->n_stages; s++) {
        const stage_def *d = &a->stages[s];
        m->stage_first[s] = b;
        reduction *= d->stride;
        for (int i = 0; i < d->repeats; i++, b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "blocks.%d.%d.", s, i);
            st = add_block(m, &m->blocks[b], prefix, d, cin, d->exp[i],
                           i == 0 ? d->stride : 1);
            if (st != KD_OK)
                return st;
            m->blocks[b].drop_path = drop_path_rate * b / n_blocks;
            cin = d->out;
        }
        snprintf(m->tap_names[s], sizeof m->tap_names[s], "blocks.%d", s);
        set_tap(m, m->tap_names[s], cin, reduction, KD_LAYOUT_NCHW);
    }
    m->stage_first[a->n_stages] = b;
    st = add_conv(m, &m->head, "conv_head", cin, a->num_features, 1, 1, 1, a->v3);
    if (st == KD_OK && !a->v3) {
        st = mt_add_bn(&m->mt, &m->head_bn, "bn2", a->num_features);
        set_tap(m, "bn2", a->num_features, reduction, KD_LAYOUT_NCHW);
    }
    set_tap(m, "pre_logits", a->num_features, 1, KD_LAYOUT_NC);
    set_tap(m, "logits", m->num_classes, 1, KD_LAYOUT_NC);
    return st == KD_OK ? add_classifier(m, a->num_features) : st;
}

static void mobilenet_destroy(void *self)
{
    mobilenet *m = self;
    if (!m)
        return;
    conv_free_folded(&m->stem.conv);
    for (int i = 0; m->blocks && i < m->stage_first[m->arch->n_stages]; i++)
        for (int k = 0; k < m->blocks[i].n_steps; k++)
            conv_free_folded(&m->blocks[i].step[k].conv);
    conv_free_folded(&m->head);
    mt_free(&m->mt);
    free(m->blocks);
    free(m);
}

static kd_status mobilenet_create(const mobilenet_arch *a, const kd_create_args *args,
                                  void **self)
{
    *self = NULL;
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only the CPU device is supported for now, got "
                        "device %d", a->name, (int)args->device);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: computes in float32 or float64, not %s",
                        a->name, kd_dtype_name(args->dtype));
    mobilenet *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    m->arch = a;
    m->mt = (model_tensors){.owner = a->name, .seed = args->seed, .dtype = args->dtype};
    m->in_chans = (int)kd_params_integer(args->params, "in_chans");
    m->num_classes = (int)kd_params_integer(args->params, "num_classes");
    m->drop_rate = kd_params_number(args->params, "drop_rate");
    kd_status st = build(m, kd_params_number(args->params, "drop_path_rate"));
    if (st != KD_OK) {
        mobilenet_destroy(m);
        return st;
    }
    *self = m;
    return KD_OK;
}

static kd_status mobilenet_tensors(void *self, kd_tensor_list *out)
{
    mobilenet *m = self;
    KD_LIST_SET(out, m->mt.items, m->mt.n);
    return KD_OK;
}

static kd_status mobilenet_taps(void *self, kd_tap_list *out)
{
    mobilenet *m = self;
    KD_LIST_SET(out, m->taps, m->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

static kd_tensor *activation(kd_tensor *x, act_kind act)
{
    switch (act) {
    case ACT_RELU:
        return kd_relu(x);
    case ACT_RELU6:
        return kd_relu6(x);
    case ACT_HSWISH:
        return kd_hardswish(x);
    case ACT_NONE:
        break;
    }
    return x;
}

static kd_tensor *step_forward(const conv_step *s, kd_tensor *x, bool training)
{
    return activation(conv_bn_forward(x, &s->conv, &s->bn, training), s->act);
}

static kd_tensor *squeeze_excite(const mb_block *b, kd_tensor *x)
{
    kd_tensor *s = kd_mean(x, 2, (const int[]){2, 3}, true);
    s = kd_relu(conv_forward(s, &b->se_reduce));
    s = kd_hardsigmoid(conv_forward(s, &b->se_expand));
    return kd_mul(x, s);
}

static kd_tensor *block_forward(const mb_block *b, kd_tensor *x, bool training, kd_rng *rng)
{
    kd_tensor *y = x;
    for (int i = 0; i < b->n_steps; i++) {
        y = step_forward(&b->step[i], y, training);
        if (i == b->se_after)
            y = squeeze_excite(b, y);
    }
    if (!b->skip || !y)
        return y;
    return kd_add(kd_drop_path(y, b->drop_path, training, rng), x);
}

/* Segment t turns tap t-1 (the image for t = 0) into tap t. */
static kd_tensor *run_segment(void *self, int t, kd_tensor *x, bool training, kd_rng *rng)
{
    mobilenet *m = self;
    const mobilenet_arch *a = m->arch;
    const char *name = m->taps[t].name;
    kd_tensor *y = NULL;
    if (t == 0) {
        y = step_forward(&m->stem, x, training);
    } else if (t <= a->n_stages) {
        y = x;
        for (int b = m->stage_first[t - 1]; y && b < m->stage_first[t]; b++) {
            y = block_forward(&m->blocks[b], y, training, rng);
            if (!y)
                kd_error_wrap(kd_last_status(), "blocks.%d.%d", t - 1, b - m->stage_first[t - 1]);
        }
        return y;
    } else if (strcmp(name, "bn2") == 0) {
        y = kd_relu6(conv_bn_forward(x, &m->head, &m->head_bn, training));
    } else if (strcmp(name, "pre_logits") == 0) {
        y = kd_mean(x, 2, (const int[]){2, 3}, a->v3);
        if (a->v3) {
            y = kd_hardswish(conv_forward(y, &m->head));
            y = y ? kd_reshape(y, 2, (const int64_t[]){y->shape[0], y->shape[1]}) : NULL;
        }
    } else {
        y = kd_linear(kd_dropout(x, m->drop_rate, training, rng), m->fc_weight, m->fc_bias);
    }
    if (!y)
        kd_error_wrap(kd_last_status(), "%s", name);
    return y;
}

static model_chain chain_of(mobilenet *m)
{
    return (model_chain){m->arch->name, m->taps, m->n_taps, (void *)m, run_segment};
}

static kd_status mobilenet_forward(void *self, const kd_forward_args *args)
{
    mobilenet *m = self;
    kd_status st = mc_check_args(m->arch->name, m->mt.dtype, args, "forward");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    if (x->ndim != 4 || x->shape[1] != m->in_chans || x->shape[0] < 1 || x->shape[2] < 1 ||
        x->shape[3] < 1) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s is not [N, %d, H, W] images",
                        m->arch->name, kd_shape_str(x, s, sizeof s), m->in_chans);
    }
    return mc_run(chain_of(m), -1, args);
}

static kd_status mobilenet_forward_from(void *self, int from, const kd_forward_args *args)
{
    mobilenet *m = self;
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

/* Folds every eval-mode BN into the convolution before it. */
static kd_status mobilenet_freeze(void *self)
{
    mobilenet *m = self;
    if (m->stem.conv.folded_weight)
        return KD_OK;
    bool grad = kd_set_grad_enabled(false);
    kd_status st = kd_scope_begin();
    if (st == KD_OK)
        st = conv_fold(&m->stem.conv, &m->stem.bn);
    for (int i = 0; st == KD_OK && i < m->stage_first[m->arch->n_stages]; i++)
        for (int k = 0; st == KD_OK && k < m->blocks[i].n_steps; k++)
            st = conv_fold(&m->blocks[i].step[k].conv, &m->blocks[i].step[k].bn);
    if (st == KD_OK && !m->arch->v3)
        st = conv_fold(&m->head, &m->head_bn);
    kd_scope_end();
    kd_set_grad_enabled(grad);
    return st == KD_OK ? st : kd_error_wrap(st, "%s: folding batch norms", m->arch->name);
}

/* Checkpoints saved from torch's DataParallel name every tensor
 * "module.<name>". */
static kd_status mobilenet_filter_weight(void *self, kd_weight_fix *fix)
{
    (void)self;
    static const char prefix[] = "module.";
    if (strncmp(fix->name, prefix, sizeof prefix - 1) == 0)
        fix->name += sizeof prefix - 1;
    return KD_OK;
}

/* ------------------------------------------------------------ providers */

static kd_status mobilenet_create_provider(const kd_create_args *args, void **self)
{
    return mobilenet_create(args->provider_data, args, self);
}

static const kd_model_vtable mobilenet_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = mobilenet_create_provider,
    .destroy = mobilenet_destroy,
    .tensors = mobilenet_tensors,
    .taps = mobilenet_taps,
    .forward = mobilenet_forward,
    .forward_from = mobilenet_forward_from,
    .filter_weight = mobilenet_filter_weight,
    .freeze = mobilenet_freeze,
};

static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name,
                                            &mobilenet_vtable.header, &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "mobilenet", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
