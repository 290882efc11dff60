/* kdengine's side of the benchmark: the workloads of bench/torch_bench.py,
 * with the same shapes, threads, warm-up and repetitions, through the public
 * API only. Prints one JSON line per workload (median and min in ms) and
 * "# " lines that say what the timings ran on; bench/run joins it with the
 * PyTorch side. This file holds the micro benchmarks and main. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Times a one-phase rep and emits its line, or the error. */
static void time_micro(const bench_options *o, const char *workload, bench_rep_fn rep,
                       void *ctx)
{
    double *times = calloc((size_t)o->reps, sizeof *times);
    kd_status st = times ? bench_run_reps(o, o->reps, rep, ctx, 1, times)
                         : kd_error(KD_ERR_NOMEM, "bench: no memory for timings");
    if (st == KD_OK)
        bench_emit_times(workload, times, o->reps, NULL);
    else
        bench_emit_error(workload);
    free(times);
}

/* ------------------------------------------------------------ sgemm */

typedef struct sgemm_run {
    kd_tensor *a, *b;
} sgemm_run;

static kd_status sgemm_rep(void *ctx, double *phase_s)
{
    sgemm_run *r = ctx;
    double start = bench_now_s();
    kd_scope_begin();
    kd_status st = kd_matmul(r->a, r->b) ? KD_OK : KD_ERR_INVALID;
    kd_scope_end();
    phase_s[0] = bench_now_s() - start;
    return st;
}

static void bench_sgemm(const bench_options *o)
{
    const char *name = "sgemm 1024x1024x1024";
    if (!bench_selected(o, name))
        return;
    kd_rng rng = kd_rng_make(1, 0, 0);
    const int64_t shape[2] = {1024, 1024};
    sgemm_run r = {bench_new_normal(&rng, 2, shape, 1.0),
                   bench_new_normal(&rng, 2, shape, 1.0)};
    if (r.a && r.b)
        time_micro(o, name, sgemm_rep, &r);
    else
        bench_emit_error(name);
    kd_tensor_free(r.a);
    kd_tensor_free(r.b);
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
static kd_status conv_rep(void *ctx, double *phase_s)
{
    conv_run *r = ctx;
    double start = bench_now_s();
    kd_tensor_zero_grad(r->x);
    kd_tensor_zero_grad(r->weight);
    kd_scope_begin();
    kd_tensor *y = kd_conv2d(r->x, r->weight, NULL, &r->params);
    kd_status st = y ? kd_backward_with(y, r->grad_out) : KD_ERR_INVALID;
    kd_scope_end();
    phase_s[0] = bench_now_s() - start;
    return st;
}

static void bench_conv(const bench_options *o, const conv_case *cc)
{
    if (!bench_selected(o, cc->name))
        return;
    kd_rng rng = kd_rng_make(2, 0, 0);
    const int64_t x_shape[4] = {cc->n, cc->cin, cc->h, cc->w};
    const int64_t w_shape[4] = {cc->cout, cc->cin / cc->groups, cc->kernel, cc->kernel};
    const int64_t y_shape[4] = {cc->n, cc->cout, cc->h, cc->w};
    conv_run r = {
        .x = bench_new_normal(&rng, 4, x_shape, 1.0),
        .weight = bench_new_normal(&rng, 4, w_shape, 0.1),
        .grad_out = bench_new_normal(&rng, 4, y_shape, 1.0),
        .params = {.stride = {1, 1},
                   .padding = {cc->padding, cc->padding},
                   .dilation = {1, 1},
                   .groups = cc->groups},
    };
    if (r.x && r.weight && r.grad_out) {
        kd_tensor_set_requires_grad(r.x, true);
        kd_tensor_set_requires_grad(r.weight, true);
        time_micro(o, cc->name, conv_rep, &r);
    } else {
        bench_emit_error(cc->name);
    }
    kd_tensor_free(r.x);
    kd_tensor_free(r.weight);
    kd_tensor_free(r.grad_out);
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
    bench_note("kdengine: %s", kd_build_info());
    bench_note("OPENBLAS_CORETYPE=%s", coretype ? coretype : "(unset)");
    bench_sgemm(&o);
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        bench_conv(&o, &conv_cases[i]);
    bench_resnet20_step(&o);
    bench_resnet20_ops(&o);
    return 0;
}
