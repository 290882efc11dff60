/* kdengine's side of the benchmark: the workloads of bench/torch_bench.py,
 * with the same shapes, threads, warm-up and repetitions, through the public
 * API only. Prints one JSON line per workload (median and min in ms) and
 * "# " lines that say what the timings ran on; bench/run joins it with the
 * PyTorch side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kdengine/kdengine.h>

typedef struct bench_options {
    int threads;
    int warmup;       /* at least this many untimed runs... */
    double warmup_s;  /* ...and at least this long */
    int reps;         /* timed runs of a micro benchmark */
    int steps;        /* timed ResNet-20 steps */
    const char *only; /* run the workloads whose name contains this */
} bench_options;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts times in place. */
static double median(double *times, int n)
{
    qsort(times, (size_t)n, sizeof *times, compare_doubles);
    return n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void emit_times(const char *workload, double *times_s, int n,
                       const char *extra_json)
{
    double med = median(times_s, n);
    printf("{\"side\": \"kdengine\", \"workload\": ");
    print_json_string(workload);
    printf(", \"median_ms\": %.4f, \"min_ms\": %.4f, \"reps\": %d%s}\n",
           1e3 * med, 1e3 * times_s[0], n, extra_json ? extra_json : "");
    fflush(stdout);
}

static void emit_error(const char *workload)
{
    printf("{\"side\": \"kdengine\", \"workload\": ");
    print_json_string(workload);
    printf(", \"error\": ");
    print_json_string(kd_last_error());
    printf("}\n");
    fflush(stdout);
}

static bool selected(const bench_options *o, const char *workload)
{
    return !o->only || strstr(workload, o->only);
}

static void fill_normal(kd_tensor *t, kd_rng *rng, double std)
{
    float *p = kd_tensor_data(t);
    int64_t n = kd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(std * kd_rng_normal(rng));
}

static kd_tensor *new_normal(kd_rng *rng, int ndim, const int64_t *shape, double std)
{
    kd_tensor *t = kd_tensor_empty(KD_F32, KD_CPU, ndim, shape);
    if (t)
        fill_normal(t, rng, std);
    return t;
}

/* One repetition of a micro benchmark; ctx holds its caller-owned inputs. */
typedef kd_status (*rep_fn)(void *ctx);

/* Warm-up, then o->reps timed runs; each run is its own step scope. */
static void time_reps(const bench_options *o, const char *workload, rep_fn rep,
                      void *ctx)
{
    double *times = calloc((size_t)o->reps, sizeof *times);
    if (!times) {
        kd_error(KD_ERR_NOMEM, "bench: no memory for %d timings", o->reps);
        emit_error(workload);
        return;
    }
    double warm_start = now_s();
    for (int i = 0; i < o->warmup || now_s() - warm_start < o->warmup_s; i++) {
        if (rep(ctx) != KD_OK) {
            emit_error(workload);
            free(times);
            return;
        }
    }
    for (int i = 0; i < o->reps; i++) {
        double start = now_s();
        kd_status st = rep(ctx);
        times[i] = now_s() - start;
        if (st != KD_OK) {
            emit_error(workload);
            free(times);
            return;
        }
    }
    emit_times(workload, times, o->reps, NULL);
    free(times);
}

/* ------------------------------------------------------------ sgemm */

typedef struct sgemm_case {
    kd_tensor *a, *b;
} sgemm_case;

static kd_status sgemm_rep(void *ctx)
{
    sgemm_case *c = ctx;
    kd_scope_begin();
    kd_status st = kd_matmul(c->a, c->b) ? KD_OK : KD_ERR_INVALID;
    kd_scope_end();
    return st;
}

static void bench_sgemm(const bench_options *o)
{
    const char *name = "sgemm 1024x1024x1024";
    if (!selected(o, name))
        return;
    kd_rng rng = kd_rng_make(1, 0, 0);
    const int64_t shape[2] = {1024, 1024};
    sgemm_case c = {new_normal(&rng, 2, shape, 1.0), new_normal(&rng, 2, shape, 1.0)};
    if (c.a && c.b)
        time_reps(o, name, sgemm_rep, &c);
    else
        emit_error(name);
    kd_tensor_free(c.a);
    kd_tensor_free(c.b);
}

/* ------------------------------------------------------------ conv2d */

typedef struct conv_case {
    const char *name;
    int64_t n, cin, h, w, cout;
    int kernel, padding, groups;
} conv_case;

/* Names and shapes match CONV_WORKLOADS in torch_bench.py. */
static const conv_case conv_cases[] = {
    {"conv3x3 128x16x28x28->16 fwd+bwd", 128, 16, 28, 28, 16, 3, 1, 1},
    {"conv1x1 32x256x14x14->256 fwd+bwd", 32, 256, 14, 14, 256, 1, 0, 1},
    {"dwconv7x7 32x96x28x28 g96 fwd+bwd", 32, 96, 28, 28, 96, 7, 3, 96},
};

typedef struct conv_run {
    kd_tensor *x, *weight, *grad_out;
    kd_conv2d_params params;
} conv_run;

/* Forward, then backward to the input and weight gradients. */
static kd_status conv_rep(void *ctx)
{
    conv_run *r = ctx;
    kd_tensor_zero_grad(r->x);
    kd_tensor_zero_grad(r->weight);
    kd_scope_begin();
    kd_tensor *y = kd_conv2d(r->x, r->weight, NULL, &r->params);
    kd_status st = y ? kd_backward_with(y, r->grad_out) : KD_ERR_INVALID;
    kd_scope_end();
    return st;
}

static void bench_conv(const bench_options *o, const conv_case *cc)
{
    if (!selected(o, cc->name))
        return;
    kd_rng rng = kd_rng_make(2, 0, 0);
    const int64_t x_shape[4] = {cc->n, cc->cin, cc->h, cc->w};
    const int64_t w_shape[4] = {cc->cout, cc->cin / cc->groups, cc->kernel, cc->kernel};
    const int64_t y_shape[4] = {cc->n, cc->cout, cc->h, cc->w};
    conv_run r = {
        .x = new_normal(&rng, 4, x_shape, 1.0),
        .weight = new_normal(&rng, 4, w_shape, 0.1),
        .grad_out = new_normal(&rng, 4, y_shape, 1.0),
        .params = {.stride = {1, 1},
                   .padding = {cc->padding, cc->padding},
                   .dilation = {1, 1},
                   .groups = cc->groups},
    };
    if (r.x && r.weight && r.grad_out) {
        kd_tensor_set_requires_grad(r.x, true);
        kd_tensor_set_requires_grad(r.weight, true);
        time_reps(o, cc->name, conv_rep, &r);
    } else {
        emit_error(cc->name);
    }
    kd_tensor_free(r.x);
    kd_tensor_free(r.weight);
    kd_tensor_free(r.grad_out);
}

/* ------------------------------------------------------------ ResNet-20 */

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
        fill_normal(w, rng, sqrt(2.0 / (double)(cout * k * k)));
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
    double t = now_s();
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
    c->start = now_s();
    kd_tensor *y = clocked(c, OP_CONV, kd_conv2d(x, weight, NULL, &p));
    return clocked(c, OP_BATCH_NORM,
                   kd_batch_norm(y, bn->weight, bn->bias, bn->running_mean,
                                 bn->running_var, true, BN_MOMENTUM, BN_EPS));
}

static kd_tensor *relu(forward_clock *c, kd_tensor *x)
{
    c->start = now_s();
    return clocked(c, OP_RELU, kd_relu(x));
}

static kd_tensor *basic_block_forward(forward_clock *c, const basic_block *b, kd_tensor *x)
{
    kd_tensor *out = relu(c, conv_bn(c, x, b->conv1, &b->bn1, b->stride));
    out = conv_bn(c, out, b->conv2, &b->bn2, 1);
    kd_tensor *shortcut =
        b->downsample_conv ? conv_bn(c, x, b->downsample_conv, &b->downsample_bn, b->stride)
                           : x;
    c->start = now_s();
    return relu(c, clocked(c, OP_ADD, kd_add(out, shortcut)));
}

/* Logits -> mean cross-entropy against labels. */
static kd_tensor *resnet20_loss(forward_clock *c, const resnet20 *m, kd_tensor *x,
                                kd_tensor *labels)
{
    x = relu(c, conv_bn(c, x, m->conv1, &m->bn1, 1));
    for (int i = 0; i < RESNET_BLOCKS; i++)
        x = basic_block_forward(c, &m->blocks[i], x);
    c->start = now_s();
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
    double start = now_s();
    for (int i = 0; i < m->n_params; i++)
        kd_tensor_zero_grad(m->params[i]);
    kd_scope_begin();
    kd_tensor *loss = resnet20_loss(c, m, x, labels);
    double t_forward = now_s();
    kd_status st = loss ? kd_backward(loss) : KD_ERR_INVALID;
    double t_backward = now_s();
    if (st == KD_OK)
        sgd_update(m);
    double t_sgd = now_s();
    t->loss = st == KD_OK ? kd_tensor_get(loss, 0) : NAN;
    kd_scope_end();
    double end = now_s();
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
    double warm_start = now_s();
    for (int i = 0; i < o->warmup || now_s() - warm_start < o->warmup_s; i++) {
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
    emit_times(name, total, o->steps, extra);
    emit_times("  resnet20 forward+loss", forward, o->steps, NULL);
    emit_times("  resnet20 backward", backward, o->steps, NULL);
    emit_times("  resnet20 sgd update", sgd, o->steps, NULL);
    printf("# kdengine resnet20 forward per op (ms per step, mean of %d):\n", o->steps);
    for (int k = 0; k < OP_KINDS; k++)
        printf("#   %-30s %9.3f\n", op_kind_names[k], 1e3 * clock.seconds[k] / o->steps);
    return KD_OK;
}

static void bench_resnet20(const bench_options *o)
{
    const char *name = "resnet20 train step b128 1x28x28";
    if (!selected(o, name))
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
        emit_error(name);
    free(times);
    kd_tensor_free(x);
    kd_tensor_free(labels);
    resnet20_free(&m);
}

/* ------------------------------------------------------------ main */

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--threads N] [--warmup N] [--warmup-s S] [--reps N] "
            "[--steps N] [--only SUBSTRING]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv)
{
    bench_options o = {.threads = 2, .warmup = 3, .warmup_s = 2.0, .reps = 20, .steps = 10};
    for (int i = 1; i < argc; i += 2) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return usage(argv[0]);
        if (!strcmp(arg, "--threads"))
            o.threads = atoi(val);
        else if (!strcmp(arg, "--warmup"))
            o.warmup = atoi(val);
        else if (!strcmp(arg, "--warmup-s"))
            o.warmup_s = atof(val);
        else if (!strcmp(arg, "--reps"))
            o.reps = atoi(val);
        else if (!strcmp(arg, "--steps"))
            o.steps = atoi(val);
        else if (!strcmp(arg, "--only"))
            o.only = val;
        else
            return usage(argv[0]);
    }
    if (o.threads < 1 || o.reps < 1 || o.steps < 1 || o.warmup < 0)
        return usage(argv[0]);
    kd_set_num_threads(o.threads);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("# kdengine: %s\n", kd_build_info());
    printf("# OPENBLAS_CORETYPE=%s\n", coretype ? coretype : "(unset)");
    bench_sgemm(&o);
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        bench_conv(&o, &conv_cases[i]);
    bench_resnet20(&o);
    return 0;
}
