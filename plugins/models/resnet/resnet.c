/* ResNet models: mdistiller's CIFAR ResNets (resnet8..resnet110, resnet8x4,
 * resnet32x4) and timm's ImageNet ResNet-18/34/50.
 *
 * Both families are a stem, stages of residual blocks, a global average
 * pool and a linear classifier; they differ in the stem (CIFAR: 3x3 s1
 * conv; ImageNet: 7x7 s2 conv and a 3x3 s2 max pool), the widths and the
 * block (BasicBlock, or timm's Bottleneck with the stride on its 3x3).
 * Tensor names and order are the reference state_dicts'.
 *
 * Taps, in forward order: "stem", then per stage "stageN.preact" and
 * "stageN", then "pre_logits", "logits". "stageN.preact" is the stage's
 * last block before its final ReLU (the residual sum), what ReviewKD and
 * mdistiller's "preact_feats" read from a teacher; "stageN" is its ReLU.
 * Tap t is the output of segment t, so a forward from tap t runs segments
 * t+1.. (from a preact tap, the ReLU first) and stops after the last
 * wanted tap. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5
#define MAX_STAGES 4
#define MAX_TAPS (2 * MAX_STAGES + 3)

typedef enum block_kind { BASIC_BLOCK, BOTTLENECK } block_kind;

typedef struct resnet_arch {
    const char *name;
    bool imagenet; /* timm's 7x7 stem with max pool and zero_init_last */
    block_kind block;
    int n_stages;
    int depths[MAX_STAGES];
    int stem_width;
    int planes[MAX_STAGES]; /* a stage outputs planes * expansion channels */
} resnet_arch;

static const resnet_arch ARCHS[] = {
    {"resnet8", false, BASIC_BLOCK, 3, {1, 1, 1}, 16, {16, 32, 64}},
    {"resnet14", false, BASIC_BLOCK, 3, {2, 2, 2}, 16, {16, 32, 64}},
    {"resnet20", false, BASIC_BLOCK, 3, {3, 3, 3}, 16, {16, 32, 64}},
    {"resnet32", false, BASIC_BLOCK, 3, {5, 5, 5}, 16, {16, 32, 64}},
    {"resnet44", false, BASIC_BLOCK, 3, {7, 7, 7}, 16, {16, 32, 64}},
    {"resnet56", false, BASIC_BLOCK, 3, {9, 9, 9}, 16, {16, 32, 64}},
    {"resnet110", false, BASIC_BLOCK, 3, {18, 18, 18}, 16, {16, 32, 64}},
    {"resnet8x4", false, BASIC_BLOCK, 3, {1, 1, 1}, 32, {64, 128, 256}},
    {"resnet32x4", false, BASIC_BLOCK, 3, {5, 5, 5}, 32, {64, 128, 256}},
    {"resnet18", true, BASIC_BLOCK, 4, {2, 2, 2, 2}, 64, {64, 128, 256, 512}},
    {"resnet34", true, BASIC_BLOCK, 4, {3, 4, 6, 3}, 64, {64, 128, 256, 512}},
    {"resnet50", true, BOTTLENECK, 4, {3, 4, 6, 3}, 64, {64, 128, 256, 512}},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

static const char *const TAP_NAMES[2][MAX_TAPS] = {
    {"stem", "stage1.preact", "stage1", "stage2.preact", "stage2", "stage3.preact", "stage3",
     "pre_logits", "logits"},
    {"stem", "stage1.preact", "stage1", "stage2.preact", "stage2", "stage3.preact", "stage3",
     "stage4.preact", "stage4", "pre_logits", "logits"},
};

/* What the segment ending at a tap computes. */
typedef enum segment_kind {
    SEG_STEM,
    SEG_STAGE_PREACT, /* a stage's blocks, the last one's final ReLU left out */
    SEG_RELU,         /* that ReLU */
    SEG_POOL,
    SEG_FC
} segment_kind;

typedef struct segment {
    segment_kind kind;
    int stage; /* SEG_STAGE_PREACT and SEG_RELU: which, 0-based */
} segment;

typedef struct conv_layer {
    kd_tensor *weight;
    kd_conv2d_params p;
    /* after freeze(): the convolution with its batch norm folded in */
    kd_tensor *folded_weight, *folded_bias;
} conv_layer;

typedef struct bn_layer {
    kd_tensor *weight, *bias, *running_mean, *running_var, *num_batches_tracked;
} bn_layer;

typedef struct res_block {
    int n_convs; /* 2 in a BasicBlock, 3 in a Bottleneck */
    conv_layer conv[3];
    bn_layer bn[3];
    bool has_downsample;
    conv_layer down;
    bn_layer down_bn;
} res_block;

typedef struct resnet {
    const resnet_arch *arch;
    uint64_t seed;
    kd_dtype dtype; /* of parameters and buffers: the job's */
    int in_chans, num_classes;
    conv_layer stem;
    bn_layer stem_bn;
    res_block *blocks;
    int stage_first[MAX_STAGES + 1]; /* stage s holds blocks [first[s], first[s+1]) */
    kd_tensor *fc_weight, *fc_bias;
    kd_named_tensor *named;
    int n_named, cap_named;
    kd_tap_info taps[MAX_TAPS];
    segment segs[MAX_TAPS]; /* segs[t] makes tap t */
    int n_taps;
} resnet;

static int expansion(const resnet_arch *a) { return a->block == BOTTLENECK ? 4 : 1; }

/* ------------------------------------------------------------ parameters */

/* A zero tensor owned by the model, listed under the formatted name. */
static kd_tensor *add_tensor(resnet *r, uint32_t flags, kd_dtype dtype, int ndim,
                             const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static kd_tensor *add_tensor(resnet *r, uint32_t flags, kd_dtype dtype, int ndim,
                             const int64_t *shape, const char *fmt, ...)
{
    if (r->n_named == r->cap_named) {
        int cap = r->cap_named ? 2 * r->cap_named : 64;
        kd_named_tensor *grown = realloc(r->named, (size_t)cap * sizeof *grown);
        if (!grown) {
            kd_error(KD_ERR_NOMEM, "%s: out of host memory", r->arch->name);
            return NULL;
        }
        r->named = grown;
        r->cap_named = cap;
    }
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *owned = strdup(name);
    kd_tensor *t = owned ? kd_tensor_keep(kd_tensor_zeros(dtype, KD_CPU, ndim, shape)) : NULL;
    if (!t) {
        free(owned);
        kd_error(KD_ERR_NOMEM, "%s: out of host memory for %s", r->arch->name, name);
        return NULL;
    }
    kd_tensor_set_requires_grad(t, (flags & KD_TENSOR_PARAM) != 0);
    r->named[r->n_named++] = (kd_named_tensor){owned, t, flags};
    return t;
}

/* Each tensor draws from its own stream (its position in the list), so a
 * weight does not depend on how many draws the ones before it took. */
static kd_rng tensor_rng(const resnet *r) { return kd_rng_make(r->seed, 0, (uint64_t)r->n_named); }

/* w[i] ~ N(0, std) by Box-Muller on pairs of uniform draws from the
 * start of rng's stream, both outputs kept; the draws come a chunk of whole
 * Philox blocks at a time. */
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

/* w[i] uniform in [-bound, bound), from the start of rng's stream. */
static void fill_uniform(float *w, int64_t n, double bound, const kd_rng *rng)
{
    kd_rng_fill_uniformf(rng, 0, w, n);
    for (int64_t i = 0; i < n; i++)
        w[i] = (float)((2.0 * w[i] - 1.0) * bound);
}

/* The draws are float32 whatever the model's dtype, so a float64 model
 * starts from exactly the weights of the float32 one. */
static kd_status init_weight(resnet *r, kd_tensor *t, double scale, const kd_rng *rng,
                             void (*fill)(float *, int64_t, double, const kd_rng *))
{
    int64_t n = kd_tensor_numel(t);
    if (t->dtype == KD_F32) {
        fill(kd_tensor_data(t), n, scale, rng);
        return KD_OK;
    }
    kd_tensor *draws = kd_tensor_empty(KD_F32, KD_CPU, t->ndim, t->shape);
    if (!draws)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", r->arch->name);
    fill(kd_tensor_data(draws), n, scale, rng);
    kd_status st = kd_tensor_copy_(t, draws);
    kd_tensor_free(draws);
    return st;
}

/* Both families: kaiming normal, fan_out, gain sqrt(2). */
static kd_status add_conv(resnet *r, conv_layer *c, const char *name, int cin, int cout, int k,
                          int stride)
{
    kd_rng rng = tensor_rng(r);
    c->weight = add_tensor(r, KD_TENSOR_PARAM, r->dtype, 4, (int64_t[]){cout, cin, k, k}, "%s",
                           name);
    if (!c->weight)
        return KD_ERR_NOMEM;
    c->p = (kd_conv2d_params){{stride, stride}, {k / 2, k / 2}, {1, 1}, 1};
    return init_weight(r, c->weight, sqrt(2.0 / ((double)cout * k * k)), &rng, fill_normal);
}

/* prefix names the BN ("bn1", "layer1.0.downsample.1"); gamma is 1, or 0
 * for the last BN of a timm block. */
static kd_status add_bn(resnet *r, bn_layer *b, const char *prefix, int channels, double gamma)
{
    const int64_t c = channels;
    const uint32_t affine = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
    b->weight = add_tensor(r, affine, r->dtype, 1, &c, "%s.weight", prefix);
    b->bias = add_tensor(r, affine, r->dtype, 1, &c, "%s.bias", prefix);
    b->running_mean = add_tensor(r, KD_TENSOR_BUFFER, r->dtype, 1, &c, "%s.running_mean", prefix);
    b->running_var = add_tensor(r, KD_TENSOR_BUFFER, r->dtype, 1, &c, "%s.running_var", prefix);
    b->num_batches_tracked = add_tensor(r, KD_TENSOR_BUFFER | KD_TENSOR_OPTIONAL, KD_I64, 0, &c,
                                        "%s.num_batches_tracked", prefix);
    if (!b->weight || !b->bias || !b->running_mean || !b->running_var || !b->num_batches_tracked ||
        kd_tensor_fill_(b->weight, gamma) != KD_OK || kd_tensor_fill_(b->running_var, 1.0) != KD_OK)
        return KD_ERR_NOMEM;
    return KD_OK;
}

static kd_status add_conv_bn(resnet *r, conv_layer *c, bn_layer *b, const char *conv_name,
                             const char *bn_name, int cin, int cout, int k, int stride,
                             double gamma)
{
    kd_status st = add_conv(r, c, conv_name, cin, cout, k, stride);
    return st == KD_OK ? add_bn(r, b, bn_name, cout, gamma) : st;
}

static kd_status add_block(resnet *r, res_block *blk, const char *prefix, int cin, int planes,
                           int stride)
{
    const resnet_arch *a = r->arch;
    int cout = planes * expansion(a);
    /* timm's zero_init_last starts each block as the identity; mdistiller
     * leaves every BN gamma at 1. */
    double last_gamma = a->imagenet ? 0.0 : 1.0;
    char conv[64], bn[64];
    kd_status st;
    if (a->block == BASIC_BLOCK) {
        blk->n_convs = 2;
        const int k[2] = {3, 3}, in[2] = {cin, planes}, s[2] = {stride, 1};
        for (int i = 0; i < 2; i++) {
            snprintf(conv, sizeof conv, "%s.conv%d.weight", prefix, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", prefix, i + 1);
            st = add_conv_bn(r, &blk->conv[i], &blk->bn[i], conv, bn, in[i], planes, k[i], s[i],
                             i == 1 ? last_gamma : 1.0);
            if (st != KD_OK)
                return st;
        }
    } else {
        blk->n_convs = 3;
        const int k[3] = {1, 3, 1}, in[3] = {cin, planes, planes}, out[3] = {planes, planes, cout};
        const int s[3] = {1, stride, 1}; /* v1.5: the stride sits on the 3x3 */
        for (int i = 0; i < 3; i++) {
            snprintf(conv, sizeof conv, "%s.conv%d.weight", prefix, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", prefix, i + 1);
            st = add_conv_bn(r, &blk->conv[i], &blk->bn[i], conv, bn, in[i], out[i], k[i], s[i],
                             i == 2 ? last_gamma : 1.0);
            if (st != KD_OK)
                return st;
        }
    }
    blk->has_downsample = stride != 1 || cin != cout;
    if (!blk->has_downsample)
        return KD_OK;
    snprintf(conv, sizeof conv, "%s.downsample.0.weight", prefix);
    snprintf(bn, sizeof bn, "%s.downsample.1", prefix);
    return add_conv_bn(r, &blk->down, &blk->down_bn, conv, bn, cin, cout, 1, stride, 1.0);
}

/* nn.Linear's default for both families: weight and bias uniform in
 * +-1/sqrt(fan_in). */
static kd_status add_fc(resnet *r, int fan_in)
{
    double bound = 1.0 / sqrt((double)fan_in);
    const int64_t wshape[2] = {r->num_classes, fan_in}, bshape = r->num_classes;
    kd_rng wrng = tensor_rng(r);
    r->fc_weight = add_tensor(r, KD_TENSOR_PARAM, r->dtype, 2, wshape, "fc.weight");
    kd_rng brng = tensor_rng(r);
    r->fc_bias = add_tensor(r, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY, r->dtype, 1, &bshape,
                            "fc.bias");
    if (!r->fc_weight || !r->fc_bias)
        return KD_ERR_NOMEM;
    kd_status st = init_weight(r, r->fc_weight, bound, &wrng, fill_uniform);
    return st == KD_OK ? init_weight(r, r->fc_bias, bound, &brng, fill_uniform) : st;
}

static kd_status build(resnet *r)
{
    const resnet_arch *a = r->arch;
    int stem_k = a->imagenet ? 7 : 3, stem_stride = a->imagenet ? 2 : 1;
    kd_status st = add_conv_bn(r, &r->stem, &r->stem_bn, "conv1.weight", "bn1", r->in_chans,
                               a->stem_width, stem_k, stem_stride, 1.0);
    int n_blocks = 0;
    for (int s = 0; s < a->n_stages; s++)
        n_blocks += a->depths[s];
    r->blocks = st == KD_OK ? calloc((size_t)n_blocks, sizeof *r->blocks) : NULL;
    if (!r->blocks)
        return st == KD_OK ? kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name) : st;
    int cin = a->stem_width, reduction = a->imagenet ? 4 : 1, b = 0, t = 0;
    const char *const *names = TAP_NAMES[a->imagenet];
    r->segs[t] = (segment){SEG_STEM, 0};
    r->taps[t] = (kd_tap_info){names[t], cin, reduction, KD_LAYOUT_NCHW, 0};
    t++;
    for (int s = 0; s < a->n_stages; s++) {
        r->stage_first[s] = b;
        int stride = s == 0 ? 1 : 2;
        reduction *= stride;
        for (int i = 0; i < a->depths[s]; i++, b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", s + 1, i);
            st = add_block(r, &r->blocks[b], prefix, cin, a->planes[s], i == 0 ? stride : 1);
            if (st != KD_OK)
                return st;
            cin = a->planes[s] * expansion(a);
        }
        r->segs[t] = (segment){SEG_STAGE_PREACT, s};
        r->taps[t] = (kd_tap_info){names[t], cin, reduction, KD_LAYOUT_NCHW, 0};
        t++;
        r->segs[t] = (segment){SEG_RELU, s};
        r->taps[t] = (kd_tap_info){names[t], cin, reduction, KD_LAYOUT_NCHW, 0};
        t++;
    }
    r->stage_first[a->n_stages] = b;
    r->segs[t] = (segment){SEG_POOL, 0};
    r->taps[t] = (kd_tap_info){names[t], cin, 1, KD_LAYOUT_NC, 0};
    t++;
    r->segs[t] = (segment){SEG_FC, 0};
    r->taps[t] = (kd_tap_info){names[t], r->num_classes, 1, KD_LAYOUT_NC, 0};
    r->n_taps = t + 1;
    return add_fc(r, cin);
}

static void free_folded(conv_layer *c)
{
    kd_tensor_free(c->folded_weight);
    kd_tensor_free(c->folded_bias);
}

static void resnet_destroy(void *self)
{
    resnet *r = self;
    if (!r)
        return;
    free_folded(&r->stem);
    for (int i = 0; r->blocks && i < r->stage_first[r->arch->n_stages]; i++) {
        for (int k = 0; k < r->blocks[i].n_convs; k++)
            free_folded(&r->blocks[i].conv[k]);
        free_folded(&r->blocks[i].down);
    }
    for (int i = 0; i < r->n_named; i++) {
        kd_tensor_free(r->named[i].tensor);
        free((char *)r->named[i].name);
    }
    free(r->named);
    free(r->blocks);
    free(r);
}

static kd_status resnet_create(const resnet_arch *a, const kd_create_args *args, void **self)
{
    *self = NULL;
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only the CPU device is supported for now, got "
                        "device %d", a->name, (int)args->device);
    int64_t in_chans = kd_params_integer(args->params, "in_chans");
    int64_t num_classes = kd_params_integer(args->params, "num_classes");
    if (in_chans < 1 || in_chans > 4)
        return kd_error(KD_ERR_INVALID, "%s: in_chans must be 1..4, got %lld", a->name,
                        (long long)in_chans);
    if (num_classes < 1 || num_classes > (1 << 24))
        return kd_error(KD_ERR_INVALID, "%s: num_classes must be 1..%d, got %lld", a->name,
                        1 << 24, (long long)num_classes);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: computes in float32 or float64, not %s",
                        a->name, kd_dtype_name(args->dtype));
    resnet *r = calloc(1, sizeof *r);
    if (!r)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", a->name);
    r->arch = a;
    r->seed = args->seed;
    r->dtype = args->dtype;
    r->in_chans = (int)in_chans;
    r->num_classes = (int)num_classes;
    kd_status st = build(r);
    if (st != KD_OK) {
        resnet_destroy(r);
        return st;
    }
    *self = r;
    return KD_OK;
}

static kd_status resnet_tensors(void *self, kd_tensor_list *out)
{
    resnet *r = self;
    KD_LIST_SET(out, r->named, r->n_named);
    return KD_OK;
}

static kd_status resnet_taps(void *self, kd_tap_list *out)
{
    resnet *r = self;
    KD_LIST_SET(out, r->taps, r->n_taps);
    return KD_OK;
}

/* --------------------------------------------------------------- forward */

/* torch counts every training-mode BN call, grad mode or not. */
static kd_tensor *batch_norm(kd_tensor *x, const bn_layer *b, bool training)
{
    kd_tensor *y = kd_batch_norm(x, b->weight, b->bias, b->running_mean, b->running_var,
                                 training, BN_MOMENTUM, BN_EPS);
    if (y && training)
        (*(int64_t *)kd_tensor_data(b->num_batches_tracked))++;
    return y;
}

static kd_tensor *conv_bn(kd_tensor *x, const conv_layer *c, const bn_layer *b, bool training)
{
    if (!training && c->folded_weight)
        return kd_conv2d(x, c->folded_weight, c->folded_bias, &c->p);
    return batch_norm(kd_conv2d(x, c->weight, NULL, &c->p), b, training);
}

/* A block up to its final ReLU: the residual branch plus the shortcut. */
static kd_tensor *block_preact(const res_block *blk, kd_tensor *x, bool training)
{
    kd_tensor *y = x;
    for (int i = 0; i < blk->n_convs; i++) {
        y = conv_bn(y, &blk->conv[i], &blk->bn[i], training);
        if (i + 1 < blk->n_convs)
            y = kd_relu(y);
    }
    if (!y)
        return NULL;
    kd_tensor *shortcut = blk->has_downsample ? conv_bn(x, &blk->down, &blk->down_bn, training)
                                              : x;
    return kd_add(y, shortcut);
}

/* A stage's blocks, the last one left before its final ReLU. */
static kd_tensor *stage_preact(const resnet *r, int s, kd_tensor *x, bool training)
{
    kd_tensor *y = x;
    for (int b = r->stage_first[s]; b < r->stage_first[s + 1]; b++) {
        y = block_preact(&r->blocks[b], y, training);
        if (y && b + 1 < r->stage_first[s + 1])
            y = kd_relu(y);
        if (!y) {
            kd_error_wrap(kd_last_status(), "layer%d.%d", s + 1, b - r->stage_first[s]);
            return NULL;
        }
    }
    return y;
}

/* Segment t turns tap t-1 (the image for t = 0) into tap t. */
static kd_tensor *run_segment(resnet *r, int t, kd_tensor *x, bool training)
{
    const segment *seg = &r->segs[t];
    kd_tensor *y = NULL;
    switch (seg->kind) {
    case SEG_STEM:
        y = kd_relu(conv_bn(x, &r->stem, &r->stem_bn, training));
        if (r->arch->imagenet)
            y = kd_max_pool2d(y, (const int[]){3, 3}, (const int[]){2, 2}, (const int[]){1, 1});
        if (!y)
            kd_error_wrap(kd_last_status(), "stem");
        return y;
    case SEG_STAGE_PREACT:
        return stage_preact(r, seg->stage, x, training);
    case SEG_RELU:
        y = kd_relu(x);
        if (!y)
            kd_error_wrap(kd_last_status(), "layer%d: final ReLU", seg->stage + 1);
        return y;
    case SEG_POOL:
        y = kd_adaptive_avg_pool2d(x, 1, 1);
        y = y ? kd_reshape(y, 2, (const int64_t[]){y->shape[0], y->shape[1]}) : NULL;
        if (!y)
            kd_error_wrap(kd_last_status(), "global pool");
        return y;
    case SEG_FC:
        y = kd_linear(x, r->fc_weight, r->fc_bias);
        if (!y)
            kd_error_wrap(kd_last_status(), "fc");
        return y;
    }
    return y;
}

/* Runs the segments after tap `from` (-1: the image) up to the last
 * wanted tap, storing every tap it passes. */
static kd_status run_from(resnet *r, int from, const kd_forward_args *args)
{
    int last = -1;
    for (int t = from + 1; t < r->n_taps; t++)
        if (args->want[t])
            last = t;
    kd_tensor *x = args->input;
    for (int t = from + 1; t <= last; t++) {
        x = run_segment(r, t, x, args->training);
        if (!x)
            return kd_error_wrap(kd_last_status(), "%s", r->arch->name);
        args->taps[t] = x;
    }
    return KD_OK;
}

static kd_status check_args(const resnet *r, const kd_forward_args *args, const char *what)
{
    if (!args || !args->input || !args->want || !args->taps)
        return kd_error(KD_ERR_INVALID, "%s: %s needs an input, want and taps", r->arch->name,
                        what);
    const kd_tensor *x = args->input;
    if (x->dtype != r->dtype || x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: %s takes %s CPU tensors, got %s on device %d",
                        r->arch->name, what, kd_dtype_name(r->dtype), kd_dtype_name(x->dtype),
                        (int)x->device);
    return KD_OK;
}

static kd_status resnet_forward(void *self, const kd_forward_args *args)
{
    resnet *r = self;
    kd_status st = check_args(r, args, "forward");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    if (x->ndim != 4 || x->shape[1] != r->in_chans || x->shape[0] < 1 || x->shape[2] < 1 ||
        x->shape[3] < 1) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s is not [N, %d, H, W] images",
                        r->arch->name, kd_shape_str(x, s, sizeof s), r->in_chans);
    }
    return run_from(r, -1, args);
}

static kd_status resnet_forward_from(void *self, int from, const kd_forward_args *args)
{
    resnet *r = self;
    if (from < 0 || from >= r->n_taps - 1)
        return kd_error(KD_ERR_INVALID, "%s: forward_from tap %d is out of range: it starts "
                        "from taps 0..%d (%s..%s)", r->arch->name, from, r->n_taps - 2,
                        r->taps[0].name, r->taps[r->n_taps - 2].name);
    kd_status st = check_args(r, args, "forward_from");
    if (st != KD_OK)
        return st;
    const kd_tensor *x = args->input;
    const kd_tap_info *tap = &r->taps[from];
    bool vector = from == r->n_taps - 2;
    if (x->ndim != (vector ? 2 : 4) || x->shape[1] != tap->channels || x->shape[0] < 1 ||
        (!vector && (x->shape[2] < 1 || x->shape[3] < 1))) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: forward_from %s: input %s is not [N, %d%s]",
                        r->arch->name, tap->name, kd_shape_str(x, s, sizeof s), tap->channels,
                        vector ? "" : ", H, W");
    }
    args->taps[from] = args->input;
    return run_from(r, from, args);
}

/* Eval-mode BN after a convolution is a per-channel affine map, so it
 * folds into the convolution: W' = W * s, b' = beta - mean * s with
 * s = gamma / sqrt(var + eps). One pass over each activation less. */
static kd_status fold(conv_layer *c, const bn_layer *b)
{
    int64_t cout = c->weight->shape[0];
    kd_tensor *s = kd_mul(b->weight, kd_pow_scalar(kd_add_scalar(b->running_var, BN_EPS), -0.5));
    kd_tensor *w = kd_mul(c->weight, kd_reshape(s, 4, (const int64_t[]){cout, 1, 1, 1}));
    kd_tensor *bias = kd_sub(b->bias, kd_mul(b->running_mean, s));
    c->folded_weight = kd_tensor_keep(kd_contiguous(w));
    c->folded_bias = kd_tensor_keep(kd_contiguous(bias));
    return c->folded_weight && c->folded_bias ? KD_OK : kd_last_status();
}

static kd_status resnet_freeze(void *self)
{
    resnet *r = self;
    if (r->stem.folded_weight)
        return KD_OK;
    bool grad = kd_set_grad_enabled(false);
    kd_status st = kd_scope_begin();
    if (st == KD_OK)
        st = fold(&r->stem, &r->stem_bn);
    for (int i = 0; st == KD_OK && i < r->stage_first[r->arch->n_stages]; i++) {
        res_block *blk = &r->blocks[i];
        for (int k = 0; st == KD_OK && k < blk->n_convs; k++)
            st = fold(&blk->conv[k], &blk->bn[k]);
        if (st == KD_OK && blk->has_downsample)
            st = fold(&blk->down, &blk->down_bn);
    }
    kd_scope_end();
    kd_set_grad_enabled(grad);
    return st == KD_OK ? st : kd_error_wrap(st, "%s: folding batch norms", r->arch->name);
}

/* Checkpoints saved from torch's DataParallel or DistributedDataParallel
 * (mdistiller's, many papers' teachers) name every tensor "module.<name>". */
static kd_status resnet_filter_weight(void *self, kd_weight_fix *fix)
{
    (void)self;
    static const char prefix[] = "module.";
    if (strncmp(fix->name, prefix, sizeof prefix - 1) == 0)
        fix->name += sizeof prefix - 1;
    return KD_OK;
}

/* ------------------------------------------------------------ providers */

static kd_status resnet_create_provider(const kd_create_args *args, void **self)
{
    return resnet_create(args->provider_data, args, self);
}

static const kd_model_vtable resnet_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = resnet_create_provider,
    .destroy = resnet_destroy,
    .tensors = resnet_tensors,
    .taps = resnet_taps,
    .forward = resnet_forward,
    .forward_from = resnet_forward_from,
    .filter_weight = resnet_filter_weight,
    .freeze = resnet_freeze,
};

/* One provider per row of ARCHS, all on one vtable. */
static kd_plugin_provider providers[N_ARCHS];

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    for (int i = 0; i < N_ARCHS; i++)
        providers[i] = (kd_plugin_provider){KD_KIND_MODEL, ARCHS[i].name, &resnet_vtable.header,
                                            &ARCHS[i]};
    KD_PLUGIN_INFO_INIT(info, "resnet", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, N_ARCHS);
    return KD_OK;
}
