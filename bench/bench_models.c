/* The model zoo against timm: one model per family, loaded the way a job
 * loads it (the test kit on the staged plugins), f32 on the CPU, timm's
 * default parameters (1000 classes). bench/models.py runs it next to
 * bench/torch_models.py, one model at a time.
 *
 *   "<model> train step b8 224": zero the gradients, a training-mode
 *     forward (batch statistics, drop-path), cross-entropy against random
 *     labels, backward, and a plain SGD update (p -= lr * grad) of every
 *     parameter;
 *   "<model> inference b8 224": an eval-mode forward under no-grad of the
 *     frozen model, as a job runs its teacher (freeze() folds batch norms
 *     into the convolutions where the plugin has it).
 *
 * usage: bench_models PLUGIN_DIR [--threads N] [--reps N] [--warmup N]
 *                     [--warmup-s S] [--batch N] [--size N] [--only SUBSTRING]
 *
 * One JSON line per workload: {"side": "kdengine", "workload", "median_ms",
 * "min_ms", "reps"}; "# " lines say what it ran on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/testkit.h>

#include "bench.h"

/* The families of issue 11 at the sizes the benchmark compares. */
static const char *const MODELS[] = {
    "resnet50",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "deit_small_patch16_224",
    "mixer_s16_224",
    "swin_tiny_patch4_window7_224",
    "beit_base_patch16_224",
};

#define SGD_LR 0.01

typedef struct model_run {
    const kd_model_vtable *vt;
    void *self;
    int n_taps, logits;
    bool *want;
    kd_tensor **out;
    int n_params;
    kd_tensor **params;
    kd_tensor *images, *labels;
    uint64_t step;
} model_run;

static kd_status forward_logits(model_run *r, bool training, kd_tensor **logits)
{
    memset(r->out, 0, (size_t)r->n_taps * sizeof *r->out);
    kd_forward_args args = {sizeof args, r->images, training, kd_rng_make(7, r->step++, 0),
                            r->want, r->out};
    kd_status st = r->vt->forward(r->self, &args);
    *logits = r->out[r->logits];
    return st == KD_OK && !*logits ? kd_error(KD_ERR_FORMAT, "no logits") : st;
}

static kd_status train_rep(void *ctx, double *phase_s)
{
    model_run *r = ctx;
    double t0 = bench_now_s();
    for (int i = 0; i < r->n_params; i++)
        kd_tensor_zero_grad(r->params[i]);
    kd_status st = kd_scope_begin();
    kd_tensor *logits = NULL;
    if (st == KD_OK)
        st = forward_logits(r, true, &logits);
    kd_tensor *loss = st == KD_OK ? kd_cross_entropy(logits, r->labels, 0.0) : NULL;
    if (st == KD_OK)
        st = loss ? kd_backward(loss) : kd_last_status();
    for (int i = 0; st == KD_OK && i < r->n_params; i++) {
        kd_tensor *p = r->params[i];
        if (!p->grad)
            continue;
        float *w = kd_tensor_data(p);
        const float *g = kd_tensor_data(p->grad);
        int64_t n = kd_tensor_numel(p);
        for (int64_t k = 0; k < n; k++)
            w[k] -= (float)SGD_LR * g[k];
    }
    kd_scope_end();
    phase_s[0] = bench_now_s() - t0;
    return st;
}

static kd_status inference_rep(void *ctx, double *phase_s)
{
    model_run *r = ctx;
    double t0 = bench_now_s();
    bool saved = kd_set_grad_enabled(false);
    kd_status st = kd_scope_begin();
    kd_tensor *logits;
    if (st == KD_OK)
        st = forward_logits(r, false, &logits);
    kd_scope_end();
    kd_set_grad_enabled(saved);
    phase_s[0] = bench_now_s() - t0;
    return st;
}

/* The model's taps (logits wanted alone) and trainable parameters. */
static kd_status prepare(model_run *r)
{
    kd_tap_list taps;
    kd_tensor_list tensors;
    kd_status st = r->vt->taps(r->self, &taps);
    if (st == KD_OK)
        st = r->vt->tensors(r->self, &tensors);
    if (st != KD_OK)
        return st;
    r->n_taps = taps.n;
    r->logits = taps.n - 1; /* "logits" is last (plugin.h) */
    r->want = calloc((size_t)taps.n, sizeof *r->want);
    r->out = calloc((size_t)taps.n, sizeof *r->out);
    r->params = calloc((size_t)tensors.n + 1, sizeof *r->params);
    if (!r->want || !r->out || !r->params)
        return kd_error(KD_ERR_NOMEM, "bench: out of memory");
    r->want[r->logits] = true;
    for (int i = 0; i < tensors.n; i++) {
        const kd_named_tensor *t = kd_tensor_list_at(&tensors, i);
        if (t->flags & KD_TENSOR_PARAM) {
            kd_tensor_set_requires_grad(t->tensor, true);
            r->params[r->n_params++] = t->tensor;
        }
    }
    return KD_OK;
}

static void time_workload(const bench_options *o, const char *workload, bench_rep_fn rep,
                          model_run *r)
{
    double *times = calloc((size_t)o->reps, sizeof *times);
    kd_status st = times ? bench_run_reps(o, o->reps, rep, r, 1, times)
                         : kd_error(KD_ERR_NOMEM, "bench: no memory for timings");
    if (st == KD_OK)
        bench_emit_times(workload, times, o->reps, NULL);
    else
        bench_emit_error(workload);
    free(times);
}

static void bench_model(kd_testkit *kit, const char *model, const bench_options *o,
                        int64_t batch, int64_t size)
{
    char train[160], infer[160];
    snprintf(train, sizeof train, "%s train step b%lld %lld", model, (long long)batch,
             (long long)size);
    snprintf(infer, sizeof infer, "%s inference b%lld %lld", model, (long long)batch,
             (long long)size);
    bool do_train = bench_selected(o, train), do_infer = bench_selected(o, infer);
    if (!do_train && !do_infer)
        return;
    kd_testkit_instance *inst = NULL;
    model_run r = {0};
    kd_rng rng = kd_rng_make(3, 0, 0);
    const int64_t shape[4] = {batch, 3, size, size};
    r.images = bench_new_normal(&rng, 4, shape, 1.0);
    int64_t *y = malloc((size_t)batch * sizeof *y);
    for (int64_t i = 0; y && i < batch; i++)
        y[i] = (int64_t)kd_rng_below(&rng, 1000);
    r.labels = y ? kd_tensor_from_data(KD_I64, 1, &batch, y) : NULL;
    free(y);
    kd_status st = r.images && r.labels ? KD_OK : kd_error(KD_ERR_NOMEM, "bench: out of memory");
    if (st == KD_OK)
        st = kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_MODEL,
                                                      .provider = model,
                                                      .params = "{\"num_classes\": 1000}",
                                                      .dtype = KD_F32},
                               &inst);
    if (st == KD_OK) {
        r.vt = (const kd_model_vtable *)inst->vtable;
        r.self = inst->self;
        st = prepare(&r);
    }
    if (st != KD_OK) {
        fprintf(stderr, "bench_models: %s: %s\n", model, kd_last_error());
        if (do_train)
            bench_emit_error(train);
        if (do_infer)
            bench_emit_error(infer);
    } else {
        if (do_train)
            time_workload(o, train, train_rep, &r);
        /* a teacher's weights are final: the plugin may fold them now */
        if (do_infer && r.vt->freeze && r.vt->freeze(r.self) != KD_OK)
            bench_emit_error(infer);
        else if (do_infer)
            time_workload(o, infer, inference_rep, &r);
    }
    if (inst)
        kd_testkit_destroy(inst);
    free(r.want);
    free(r.out);
    free(r.params);
    kd_tensor_free(r.images);
    kd_tensor_free(r.labels);
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s PLUGIN_DIR [--threads N] [--reps N] [--warmup N] [--warmup-s S] "
            "[--batch N] [--size N] [--only SUBSTRING]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv)
{
    bench_options o = {.threads = 2, .warmup = 2, .warmup_s = 0.0, .reps = 5};
    long batch = 8, size = 224;
    if (argc < 2 || argv[1][0] == '-')
        return usage(argv[0]);
    for (int i = 2; i < argc; i += 2) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return usage(argv[0]);
        if (!strcmp(arg, "--threads"))
            o.threads = atoi(val);
        else if (!strcmp(arg, "--reps"))
            o.reps = atoi(val);
        else if (!strcmp(arg, "--warmup"))
            o.warmup = atoi(val);
        else if (!strcmp(arg, "--warmup-s"))
            o.warmup_s = atof(val);
        else if (!strcmp(arg, "--batch"))
            batch = atol(val);
        else if (!strcmp(arg, "--size"))
            size = atol(val);
        else if (!strcmp(arg, "--only"))
            o.only = val;
        else
            return usage(argv[0]);
    }
    if (o.threads < 1 || o.reps < 1 || o.warmup < 0 || batch < 1 || size < 32)
        return usage(argv[0]);
    kd_set_num_threads(o.threads);
    kd_testkit *kit;
    if (kd_testkit_open(argv[1], &kit) != KD_OK) {
        fprintf(stderr, "bench_models: %s\n", kd_last_error());
        return 1;
    }
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    bench_note("kdengine: %s", kd_build_info());
    bench_note("kdengine threads %d; OPENBLAS_CORETYPE=%s", o.threads,
               coretype ? coretype : "(unset)");
    for (size_t k = 0; k < sizeof MODELS / sizeof MODELS[0]; k++)
        bench_model(kit, MODELS[k], &o, batch, size);
    kd_testkit_close(kit);
    return 0;
}
