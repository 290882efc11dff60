/* Where a ResNet-20 step's time goes: each distinct layer of the step (batch
 * 128, 1x28x28) run alone, forward then backward, and summed per kind of op
 * with the number of times the step uses it. Matches RESNET20_LAYERS in
 * torch_bench.py, so each total has a PyTorch counterpart. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

#define BATCH 128
#define CLASSES 10

typedef enum layer_kind { CONV, BATCH_NORM, RELU, ADD, HEAD, LAYER_KINDS } layer_kind;

static const char *const kind_names[LAYER_KINDS] = {
    "conv2d", "batch_norm", "relu", "add", "head (avgpool+flatten+linear+cross_entropy)"};

typedef struct layer_case {
    layer_kind kind;
    int count;        /* uses in one step */
    int64_t channels; /* input channels */
    int64_t size;     /* input height = width */
    int64_t out_channels;
    int kernel, stride;
    bool input_grad; /* false for the stem conv, whose input is the data */
} layer_case;

static const layer_case cases[] = {
    {CONV, 1, 1, 28, 16, 3, 1, false},
    {CONV, 6, 16, 28, 16, 3, 1, true},
    {CONV, 1, 16, 28, 32, 3, 2, true},
    {CONV, 5, 32, 14, 32, 3, 1, true},
    {CONV, 1, 32, 14, 64, 3, 2, true},
    {CONV, 5, 64, 7, 64, 3, 1, true},
    {CONV, 1, 16, 28, 32, 1, 2, true},
    {CONV, 1, 32, 14, 64, 1, 2, true},
    {BATCH_NORM, 7, 16, 28, 16, 0, 1, true},
    {BATCH_NORM, 7, 32, 14, 32, 0, 1, true},
    {BATCH_NORM, 7, 64, 7, 64, 0, 1, true},
    {RELU, 7, 16, 28, 16, 0, 1, true},
    {RELU, 6, 32, 14, 32, 0, 1, true},
    {RELU, 6, 64, 7, 64, 0, 1, true},
    {ADD, 3, 16, 28, 16, 0, 1, true},
    {ADD, 3, 32, 14, 32, 0, 1, true},
    {ADD, 3, 64, 7, 64, 0, 1, true},
    {HEAD, 1, 64, 7, CLASSES, 0, 1, true},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* The caller-owned tensors of one layer; leaves[] are those that get grads. */
typedef struct layer_run {
    const layer_case *lc;
    kd_tensor *x, *other, *weight, *bias, *running_mean, *running_var, *labels;
    kd_tensor *grad_out;
    kd_tensor *leaves[4];
    int n_leaves;
    bool incomplete; /* an allocation failed */
} layer_run;

static void layer_run_free(layer_run *r)
{
    kd_tensor *all[] = {r->x,           r->other,       r->weight,  r->bias,
                        r->running_mean, r->running_var, r->labels, r->grad_out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        kd_tensor_free(all[i]);
}

static kd_tensor *need(layer_run *r, kd_tensor *t)
{
    if (!t)
        r->incomplete = true;
    return t;
}

static kd_tensor *leaf(layer_run *r, kd_tensor *t)
{
    if (need(r, t)) {
        kd_tensor_set_requires_grad(t, true);
        r->leaves[r->n_leaves++] = t;
    }
    return t;
}

static bool layer_run_init(layer_run *r, const layer_case *lc, kd_rng *rng)
{
    *r = (layer_run){.lc = lc};
    const int64_t x_shape[4] = {BATCH, lc->channels, lc->size, lc->size};
    int64_t out_size = (lc->size - 1) / lc->stride + 1;
    const int64_t y_shape[4] = {BATCH, lc->out_channels, out_size, out_size};
    r->x = need(r, bench_new_normal(rng, 4, x_shape, 1.0));
    if (lc->input_grad)
        leaf(r, r->x);
    if (lc->kind != HEAD)
        r->grad_out = need(r, bench_new_normal(rng, 4, y_shape, 1.0));
    switch (lc->kind) {
    case CONV: {
        const int64_t w_shape[4] = {lc->out_channels, lc->channels, lc->kernel, lc->kernel};
        r->weight = leaf(r, bench_new_normal(rng, 4, w_shape, 0.1));
        break;
    }
    case BATCH_NORM:
        r->weight = leaf(r, kd_tensor_full(KD_F32, KD_CPU, 1, &lc->channels, 1.0));
        r->bias = leaf(r, kd_tensor_zeros(KD_F32, KD_CPU, 1, &lc->channels));
        r->running_mean = need(r, kd_tensor_zeros(KD_F32, KD_CPU, 1, &lc->channels));
        r->running_var = need(r, kd_tensor_full(KD_F32, KD_CPU, 1, &lc->channels, 1.0));
        break;
    case ADD:
        r->other = leaf(r, bench_new_normal(rng, 4, x_shape, 1.0));
        break;
    case HEAD: {
        const int64_t w_shape[2] = {CLASSES, lc->channels};
        const int64_t b_shape[1] = {CLASSES};
        const int64_t label_shape[1] = {BATCH};
        int64_t label_data[BATCH];
        for (int i = 0; i < BATCH; i++)
            label_data[i] = (int64_t)kd_rng_below(rng, CLASSES);
        r->weight = leaf(r, bench_new_normal(rng, 2, w_shape, 0.1));
        r->bias = leaf(r, kd_tensor_zeros(KD_F32, KD_CPU, 1, b_shape));
        r->labels = need(r, kd_tensor_from_data(KD_I64, 1, label_shape, label_data));
        break;
    }
    case RELU:
    case LAYER_KINDS:
        break;
    }
    return !r->incomplete;
}

static kd_tensor *layer_forward(layer_run *r)
{
    const layer_case *lc = r->lc;
    switch (lc->kind) {
    case CONV: {
        int pad = lc->kernel / 2;
        kd_conv2d_params p = {.stride = {lc->stride, lc->stride}, .padding = {pad, pad},
                              .dilation = {1, 1}, .groups = 1};
        return kd_conv2d(r->x, r->weight, NULL, &p);
    }
    case BATCH_NORM:
        return kd_batch_norm(r->x, r->weight, r->bias, r->running_mean, r->running_var, true,
                             0.1, 1e-5);
    case RELU:
        return kd_relu(r->x);
    case ADD:
        return kd_add(r->x, r->other);
    case HEAD: {
        kd_tensor *pooled = kd_flatten(kd_adaptive_avg_pool2d(r->x, 1, 1), 1, -1);
        return kd_cross_entropy(kd_linear(pooled, r->weight, r->bias), r->labels, 0.0);
    }
    case LAYER_KINDS:
        break;
    }
    return NULL;
}

/* Phase 0: forward; phase 1: backward, with the scope's freeing. */
static kd_status layer_rep(void *ctx, double *phase_s)
{
    layer_run *r = ctx;
    double start = bench_now_s();
    for (int i = 0; i < r->n_leaves; i++)
        kd_tensor_zero_grad(r->leaves[i]);
    kd_scope_begin();
    kd_tensor *y = layer_forward(r);
    double t_forward = bench_now_s();
    kd_status st = !y                ? KD_ERR_INVALID
                   : r->lc->kind == HEAD ? kd_backward(y)
                                       : kd_backward_with(y, r->grad_out);
    kd_scope_end();
    double end = bench_now_s();
    phase_s[0] = t_forward - start;
    phase_s[1] = end - t_forward;
    return st;
}

static void case_name(const layer_case *lc, char *buf, size_t size)
{
    if (lc->kind == CONV)
        snprintf(buf, size, "    conv %lld->%lld k%d s%d %lldx%lld (x%d) fwd+bwd",
                 (long long)lc->channels, (long long)lc->out_channels, lc->kernel, lc->stride,
                 (long long)lc->size, (long long)lc->size, lc->count);
    else
        snprintf(buf, size, "    %s %lldx%lldx%lld (x%d) fwd+bwd",
                 lc->kind == HEAD ? "head" : kind_names[lc->kind], (long long)lc->channels,
                 (long long)lc->size, (long long)lc->size, lc->count);
}

void bench_resnet20_ops(const bench_options *o)
{
    const char *prefix = "resnet20 ops: ";
    if (!bench_selected(o, "resnet20 ops: "))
        return;
    /* Per case: median forward, median backward, min forward, min backward. */
    double(*stats)[4] = calloc(N_CASES, sizeof *stats);
    double *times = calloc(2 * (size_t)o->reps, sizeof *times);
    bool failed[LAYER_KINDS] = {false};
    char name[160];
    if (!stats || !times) {
        snprintf(name, sizeof name, "%sall", prefix);
        kd_error(KD_ERR_NOMEM, "bench: no memory for timings");
        bench_emit_error(name);
        free(stats);
        free(times);
        return;
    }
    kd_rng rng = kd_rng_make(4, 0, 0);
    for (size_t c = 0; c < N_CASES; c++) {
        layer_run r;
        kd_status st = layer_run_init(&r, &cases[c], &rng)
                           ? bench_run_reps(o, o->reps, layer_rep, &r, 2, times)
                           : KD_ERR_NOMEM;
        layer_run_free(&r);
        if (st != KD_OK) {
            layer_kind k = cases[c].kind;
            if (!failed[k]) {
                snprintf(name, sizeof name, "%s%s forward", prefix, kind_names[k]);
                bench_emit_error(name);
            }
            failed[k] = true;
            continue;
        }
        stats[c][0] = bench_median(times, o->reps);
        stats[c][2] = times[0];
        stats[c][1] = bench_median(times + o->reps, o->reps);
        stats[c][3] = times[o->reps];
    }
    for (int k = 0; k < LAYER_KINDS; k++) {
        if (failed[k])
            continue;
        double sum[4] = {0};
        for (size_t c = 0; c < N_CASES; c++) {
            for (int s = 0; s < 4 && cases[c].kind == (layer_kind)k; s++)
                sum[s] += cases[c].count * stats[c][s];
        }
        snprintf(name, sizeof name, "%s%s forward", prefix, kind_names[k]);
        bench_emit_summary(name, sum[0], sum[2], o->reps, NULL);
        snprintf(name, sizeof name, "%s%s backward", prefix, kind_names[k]);
        bench_emit_summary(name, sum[1], sum[3], o->reps, NULL);
        for (size_t c = 0; c < N_CASES; c++) {
            if (cases[c].kind != (layer_kind)k)
                continue;
            case_name(&cases[c], name, sizeof name);
            bench_emit_summary(name, stats[c][0] + stats[c][1], stats[c][2] + stats[c][3],
                               o->reps, NULL);
        }
    }
    free(stats);
    free(times);
}
