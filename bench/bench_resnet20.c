/* The ResNet-20 training step of the benchmark, built from public ops:
 * forward, cross-entropy, backward and an SGD update written as a loop over
 * the parameters (the optimizer plugins come later). Matches ResNet20 and
 * bench_resnet20 in torch_bench.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define RESNET_MAX_PARAMS 80
#define RESNET_BLOCKS 9
#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5
#define SGD_LR 0.01
#define SGD_MOMENTUM 0.9
#define SGD_WEIGHT_DECAY 5e-4

typedef struct batch_norm_layer {
    kd_tensor *weight, *bias, *running_mean, *running_var;
} batch_norm_layer;

typedef struct basic_block {
    kd_tensor *conv1;
    batch_norm_layer bn1;
    kd_tensor *conv2;
    batch_norm_layer bn2;
    kd_tensor *downsample_conv; /* NULL when the shortcut is the identity */
    batch_norm_layer downsample_bn;
    int stride;
} basic_block;

/* mdistiller's resnet20 on 1x28x28, with global average pooling (28x28 input
 * leaves 7x7 maps, so AvgPool2d(8) does not apply). All tensors here are
 * caller-owned; every parameter has a momentum buffer. */
typedef struct resnet20 {
    kd_tensor *conv1;
    batch_norm_layer bn1;
    basic_block blocks[RESNET_BLOCKS];
    kd_tensor *fc_weight, *fc_bias;
    kd_tensor *params[RESNET_MAX_PARAMS];
    kd_tensor *momentum[RESNET_MAX_PARAMS];
    int n_params;
    kd_tensor *buffers[RESNET_MAX_PARAMS];
    int n_buffers;
    bool failed;
} resnet20;

static kd_tensor *add_param(resnet20 *m, int ndim, const int64_t *shape, double value)
{
    if (m->n_params == RESNET_MAX_PARAMS) {
        kd_error(KD_ERR_INVALID, "bench: more than %d parameters", RESNET_MAX_PARAMS);
        m->failed = true;
        return NULL;
    }
    kd_tensor *p = kd_tensor_full(KD_F32, KD_CPU, ndim, shape, value);
    kd_tensor *v = kd_tensor_zeros(KD_F32, KD_CPU, ndim, shape);
    if (!p || !v) {
        kd_tensor_free(p);
        kd_tensor_free(v);
        m->failed = true;
        return NULL;
    }
    kd_tensor_set_requires_grad(p, true);
    m->params[m->n_params] = p;
    m->momentum[m->n_params++] = v;
    return p;
}

static kd_tensor *add_buffer(resnet20 *m, int64_t channels, double value)
{
    if (m->n_buffers == RESNET_MAX_PARAMS) {
        kd_error(KD_ERR_INVALID, "bench: more than %d buffers", RESNET_MAX_PARAMS);
        m->failed = true;
        return NULL;
    }
    kd_tensor *b = kd_tensor_full(KD_F32, KD_CPU, 1, &channels, value);
    if (!b) {
        m->failed = true;
        return NULL;
    }
    return m->buffers[m->n_buffers++] = b;
}

/* Kaiming normal, fan_out, gain sqrt(2): mdistiller's conv init. */
static kd_tensor *add_conv(resnet20 *m, kd_rng *rng, int64_t cin, int64_t cout, int k)
{
    const int64_t shape[4] = {cout, cin, k, k};
    kd_tensor *w = add_param(m, 4, shape, 0.0);
    if (w)
        bench_fill_normal(w, rng, sqrt(2.0 / (double)(cout * k * k)));
    return w;
}

static batch_norm_layer add_batch_norm(resnet20 *m, int64_t channels)
{
    return (batch_norm_layer){
        .weight = add_param(m, 1, &channels, 1.0),
        .bias = add_param(m, 1, &channels, 0.0),
        .running_mean = add_buffer(m, channels, 0.0),
        .running_var = add_buffer(m, channels, 1.0),
    };
}

static void resnet20_free(resnet20 *m)
{
    for (int i = 0; i < m->n_params; i++) {
        kd_tensor_free(m->params[i]);
        kd_tensor_free(m->momentum[i]);
    }
    for (int i = 0; i < m->n_buffers; i++)
        kd_tensor_free(m->buffers[i]);
}

static bool resnet20_init(resnet20 *m, kd_rng *rng)
{
    memset(m, 0, sizeof *m);
    m->conv1 = add_conv(m, rng, 1, 16, 3);
    m->bn1 = add_batch_norm(m, 16);
    const int64_t widths[3] = {16, 32, 64};
    int64_t cin = 16;
    for (int stage = 0; stage < 3; stage++) {
        for (int i = 0; i < 3; i++) {
            basic_block *b = &m->blocks[3 * stage + i];
            int64_t cout = widths[stage];
            b->stride = (stage > 0 && i == 0) ? 2 : 1;
            b->conv1 = add_conv(m, rng, cin, cout, 3);
            b->bn1 = add_batch_norm(m, cout);
            b->conv2 = add_conv(m, rng, cout, cout, 3);
            b->bn2 = add_batch_norm(m, cout);
            if (b->stride != 1 || cin != cout) {
                b->downsample_conv = add_conv(m, rng, cin, cout, 1);
                b->downsample_bn = add_batch_norm(m, cout);
            }
            cin = cout;
        }
    }
    /* nn.Linear's default: uniform in +-1/sqrt(in_features). */
    const int64_t fc_shape[2] = {10, 64};
    const int64_t fc_bias_shape[1] = {10};
    m->fc_weight = add_param(m, 2, fc_shape, 0.0);
    m->fc_bias = add_param(m, 1, fc_bias_shape, 0.0);
    if (m->failed)
        return false;
    float *w = kd_tensor_data(m->fc_weight);
    for (int i = 0; i < 10 * 64; i++)
        w[i] = (2.0f * kd_rng_uniformf(rng) - 1.0f) / 8.0f;
    return true;
}

/* Forward time per kind of op, summed over a step. */
enum { OP_CONV, OP_BATCH_NORM, OP_RELU, OP_ADD, OP_POOL, OP_LINEAR, OP_LOSS, OP_KINDS };
static const char *const op_kind_names[OP_KINDS] = {
    "conv2d", "batch_norm", "relu", "add", "adaptive_avg_pool2d+flatten", "linear",
    "cross_entropy"};

typedef struct forward_clock {
    double start;
    double seconds[OP_KINDS];
} forward_clock;

static kd_tensor *clocked(forward_clock *c, int kind, kd_tensor *out)
{
    double t = bench_now_s();
    c->seconds[kind] += t - c->start;
    c->start = t;
    return out;
}

static kd_tensor *conv_bn(forward_clock *c, kd_tensor *x, kd_tensor *weight,
                          const batch_norm_layer *bn, int stride)
{
    int pad = (int)weight->shape[2] / 2;
    kd_conv2d_params p = {.stride = {stride, stride}, .padding = {pad, pad},
                          .dilation = {1, 1}, .groups = 1};
    c->start = bench_now_s();
    kd_tensor *y = clocked(c, OP_CONV, kd_conv2d(x, weight, NULL, &p));
    return clocked(c, OP_BATCH_NORM,
                   kd_batch_norm(y, bn->weight, bn->bias, bn->running_mean,
                                 bn->running_var, true, BN_MOMENTUM, BN_EPS));
}

static kd_tensor *relu(forward_clock *c, kd_tensor *x)
{
    c->start = bench_now_s();
    return clocked(c, OP_RELU, kd_relu(x));
}

static kd_tensor *basic_block_forward(forward_clock *c, const basic_block *b, kd_tensor *x)
{
    kd_tensor *out = relu(c, conv_bn(c, x, b->conv1, &b->bn1, b->stride));
    out = conv_bn(c, out, b->conv2, &b->bn2, 1);
    kd_tensor *shortcut =
        b->downsample_conv ? conv_bn(c, x, b->downsample_conv, &b->downsample_bn, b->stride)
                           : x;
    c->start = bench_now_s();
    return relu(c, clocked(c, OP_ADD, kd_add(out, shortcut)));
}

/* Logits -> mean cross-entropy against labels. */
static kd_tensor *resnet20_loss(forward_clock *c, const resnet20 *m, kd_tensor *x,
                                kd_tensor *labels)
{
    x = relu(c, conv_bn(c, x, m->conv1, &m->bn1, 1));
    for (int i = 0; i < RESNET_BLOCKS; i++)
        x = basic_block_forward(c, &m->blocks[i], x);
    c->start = bench_now_s();
    x = clocked(c, OP_POOL, kd_flatten(kd_adaptive_avg_pool2d(x, 1, 1), 1, -1));
    x = clocked(c, OP_LINEAR, kd_linear(x, m->fc_weight, m->fc_bias));
    return clocked(c, OP_LOSS, kd_cross_entropy(x, labels, 0.0));
}

/* torch.optim.SGD's update with momentum and (coupled) weight decay. */
static void sgd_update(resnet20 *m)
{
    for (int i = 0; i < m->n_params; i++) {
        kd_tensor *p = m->params[i];
        if (!p->grad)
            continue;
        float *w = kd_tensor_data(p);
        const float *g = kd_tensor_data(p->grad);
        float *v = kd_tensor_data(m->momentum[i]);
        int64_t n = kd_tensor_numel(p);
        for (int64_t j = 0; j < n; j++) {
            float d = g[j] + (float)SGD_WEIGHT_DECAY * w[j];
            v[j] = (float)SGD_MOMENTUM * v[j] + d;
            w[j] -= (float)SGD_LR * v[j];
        }
    }
}

typedef struct step_times {
    double forward, backward, sgd, total;
    double loss;
} step_times;

static kd_status resnet20_step(resnet20 *m, kd_tensor *x, kd_tensor *labels,
                               forward_clock *c, step_times *t)
{
    double start = bench_now_s();
    for (int i = 0; i < m->n_params; i++)
        kd_tensor_zero_grad(m->params[i]);
    kd_scope_begin();
    kd_tensor *loss = resnet20_loss(c, m, x, labels);
    double t_forward = bench_now_s();
    kd_status st = loss ? kd_backward(loss) : KD_ERR_INVALID;
    double t_backward = bench_now_s();
    if (st == KD_OK)
        sgd_update(m);
    double t_sgd = bench_now_s();
    t->loss = st == KD_OK ? kd_tensor_get(loss, 0) : NAN;
    kd_scope_end();
    double end = bench_now_s();
    t->forward = t_forward - start;
    t->backward = t_backward - t_forward;
    t->sgd = t_sgd - t_backward;
    t->total = end - start;
    return st;
}

/* Warm-up and timed steps; emits the step, its parts and the forward per op. */
static kd_status time_resnet20(const bench_options *o, const char *name, resnet20 *m,
                               kd_tensor *x, kd_tensor *labels, double *times)
{
    forward_clock clock = {0};
    step_times t;
    double warm_start = bench_now_s();
    for (int i = 0; i < o->warmup || bench_now_s() - warm_start < o->warmup_s; i++) {
        if (resnet20_step(m, x, labels, &clock, &t) != KD_OK)
            return KD_ERR_INVALID;
    }
    memset(&clock, 0, sizeof clock);
    double *forward = times, *backward = times + o->steps, *sgd = times + 2 * o->steps,
           *total = times + 3 * o->steps;
    for (int i = 0; i < o->steps; i++) {
        if (resnet20_step(m, x, labels, &clock, &t) != KD_OK)
            return KD_ERR_INVALID;
        forward[i] = t.forward;
        backward[i] = t.backward;
        sgd[i] = t.sgd;
        total[i] = t.total;
    }
    char extra[96];
    snprintf(extra, sizeof extra, ", \"loss\": %.4f, \"finite\": %s", t.loss,
             isfinite(t.loss) ? "true" : "false");
    bench_emit_times(name, total, o->steps, extra);
    bench_emit_times("  resnet20 forward+loss", forward, o->steps, NULL);
    bench_emit_times("  resnet20 backward", backward, o->steps, NULL);
    bench_emit_times("  resnet20 sgd update", sgd, o->steps, NULL);
    bench_note("kdengine resnet20 forward per op inside the step (ms per step, mean of %d):",
               o->steps);
    for (int k = 0; k < OP_KINDS; k++)
        bench_note("  %-30s %9.3f", op_kind_names[k], 1e3 * clock.seconds[k] / o->steps);
    return KD_OK;
}

void bench_resnet20_step(const bench_options *o)
{
    const char *name = "resnet20 train step b128 1x28x28";
    if (!bench_selected(o, name))
        return;
    kd_rng rng = kd_rng_make(3, 0, 0);
    resnet20 m;
    bool ok = resnet20_init(&m, &rng);
    const int64_t x_shape[4] = {128, 1, 28, 28};
    const int64_t label_shape[1] = {128};
    int64_t label_data[128];
    for (int i = 0; i < 128; i++)
        label_data[i] = (int64_t)kd_rng_below(&rng, 10);
    kd_tensor *x = kd_tensor_empty(KD_F32, KD_CPU, 4, x_shape);
    kd_tensor *labels = kd_tensor_from_data(KD_I64, 1, label_shape, label_data);
    double *times = calloc(4 * (size_t)o->steps, sizeof *times);
    if (ok && x && labels && times) {
        float *xp = kd_tensor_data(x);
        for (int64_t i = 0; i < kd_tensor_numel(x); i++)
            xp[i] = kd_rng_uniformf(&rng);
        ok = time_resnet20(o, name, &m, x, labels, times) == KD_OK;
    } else {
        ok = false;
    }
    if (!ok)
        bench_emit_error(name);
    free(times);
    kd_tensor_free(x);
    kd_tensor_free(labels);
    resnet20_free(&m);
}
