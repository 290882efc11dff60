/* What a distillation loss itself costs: forward + backward of each loss
 * alone on a training step's shapes, loaded the way a job loads it (the
 * test kit on the staged plugins), f32 on the CPU. bench/loss_step.py runs
 * it next to the whole steps; the minimum over the runs is the number to
 * read on a busy machine (preemption only ever adds).
 *
 * usage: bench_losses PLUGIN_DIR [--threads N] [--reps N] [--batch N]
 *                     [--classes N] [--features N]
 *
 * One JSON line per loss: {"side": "kdengine", "workload": "loss kd ...",
 * "median_ms", "min_ms", "reps"}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/testkit.h>

#include "bench.h"

typedef struct loss_bench {
    const char *provider, *params;
    bool features; /* pooled features, else logits */
} loss_bench;

/* The losses at their defaults; dkd's warm-up off so it pays its full cost. */
static const loss_bench LOSSES[] = {
    {"kd", "{}", false},
    {"dkd", "{\"warmup\": 0}", false},
    {"dist", "{}", false},
    {"rkd", "{}", true},
};

typedef struct rep_ctx {
    kd_testkit_instance *loss;
    kd_testkit_batch batch;
    kd_tensor *student;
} rep_ctx;

static kd_status one_rep(void *ctx, double *phase_s)
{
    rep_ctx *c = ctx;
    kd_tensor_zero_grad(c->student);
    double t0 = bench_now_s();
    kd_status st = kd_scope_begin();
    kd_loss_result r;
    if (st == KD_OK && (st = kd_testkit_loss_forward(c->loss, &c->batch, &r)) == KD_OK)
        st = kd_backward(r.loss);
    kd_scope_end();
    phase_s[0] = bench_now_s() - t0;
    return st;
}

static void bench_loss(kd_testkit *kit, const loss_bench *lb, const bench_options *o,
                       int64_t batch, int64_t classes, int64_t features)
{
    char workload[128];
    snprintf(workload, sizeof workload, "loss %s fwd+bwd b%lld %s %lld", lb->provider,
             (long long)batch, lb->features ? "features" : "classes",
             (long long)(lb->features ? features : classes));
    if (!bench_selected(o, workload))
        return;
    kd_rng rng = kd_rng_make(1, 2, 0);
    const int64_t shape[2] = {batch, lb->features ? features : classes};
    kd_tensor *s = bench_new_normal(&rng, 2, shape, 1), *t = bench_new_normal(&rng, 2, shape, 1);
    int64_t *y = malloc((size_t)batch * sizeof *y);
    for (int64_t i = 0; y && i < batch; i++)
        y[i] = (int64_t)kd_rng_below(&rng, (uint64_t)classes);
    kd_tensor *labels = y ? kd_tensor_from_data(KD_I64, 1, &batch, y) : NULL;
    free(y);
    kd_testkit_instance *loss = NULL;
    kd_tensor *student[1] = {s}, *teacher[1] = {t};
    rep_ctx ctx = {NULL, {.student = student, .teacher = teacher, .labels = labels}, s};
    double *times = malloc((size_t)o->reps * sizeof *times);
    kd_status st = s && t && labels && times ? KD_OK : KD_ERR_NOMEM;
    if (st == KD_OK)
        st = kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS,
                                                      .provider = lb->provider,
                                                      .params = lb->params,
                                                      .dtype = KD_F32},
                               &loss);
    if (st == KD_OK) {
        ctx.loss = loss;
        kd_tensor_set_requires_grad(s, true);
        st = kd_testkit_loss_bind(loss, &ctx.batch);
    }
    if (st == KD_OK)
        st = bench_run_reps(o, o->reps, one_rep, &ctx, 1, times);
    if (st == KD_OK)
        bench_emit_times(workload, times, o->reps, NULL);
    else
        bench_emit_error(workload);
    if (loss)
        kd_testkit_destroy(loss);
    free(times);
    kd_tensor_free(s);
    kd_tensor_free(t);
    kd_tensor_free(labels);
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s PLUGIN_DIR [--threads N] [--reps N] [--batch N] [--classes N] "
            "[--features N]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv)
{
    bench_options o = {.threads = 2, .warmup = 3, .warmup_s = 0.5, .reps = 50};
    long batch = 128, classes = 10, features = 64;
    if (argc < 2)
        return usage(argv[0]);
    for (int i = 2; i < argc; i += 2) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long v = val ? strtol(val, NULL, 10) : 0;
        if (!val || v <= 0)
            return usage(argv[0]);
        if (strcmp(arg, "--threads") == 0)
            o.threads = (int)v;
        else if (strcmp(arg, "--reps") == 0)
            o.reps = (int)v;
        else if (strcmp(arg, "--batch") == 0)
            batch = v;
        else if (strcmp(arg, "--classes") == 0)
            classes = v;
        else if (strcmp(arg, "--features") == 0)
            features = v;
        else
            return usage(argv[0]);
    }
    kd_set_num_threads(o.threads);
    kd_testkit *kit;
    if (kd_testkit_open(argv[1], &kit) != KD_OK) {
        fprintf(stderr, "bench_losses: %s\n", kd_last_error());
        return 1;
    }
    bench_note("losses alone: f32, CPU, %d threads, %d timed runs each", o.threads, o.reps);
    for (size_t k = 0; k < sizeof LOSSES / sizeof LOSSES[0]; k++)
        bench_loss(kit, &LOSSES[k], &o, batch, classes, features);
    kd_testkit_close(kit);
    return 0;
}
