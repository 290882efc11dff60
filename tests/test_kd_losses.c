/* The dkd, dist and rkd loss plugins, loaded through the registry: parity
 * in float64 with the papers' formulas and the authors' code in torch (one
 * Python process for the file), f64 finite-difference gradients, DKD in
 * float32 where the authors' form breaks, the warm-up, contracts, errors at
 * bind and forward, and the example jobs for a few steps. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "loss_fixture.h"
#include "plugin_fixture.h"

/* ------------------------------------------------------------ plumbing */

/* ------------------------------------------------------------ inputs */

/* How a case's tensors are drawn. */
typedef enum input_kind {
    UNIFORM,       /* U(-4, 4) */
    LARGE,         /* U(-500, 500) */
    CONSTANT_ROWS, /* even rows constant (exact in binary), odd rows U(-4, 4) */
    NONNEGATIVE,   /* U(0, 1): post-ReLU features */
    OUTLIER,       /* U(0, 1), sample 0 times 20: distances past smooth-L1's knee */
    CONFIDENT,     /* U(-4, 4), the label's column 110 + U(0, 1): exp(-104) is 0 in f32 */
    WIDE,          /* U(0, 1000): RKD's gradient 1000 times smaller, so noise
                      from the i = i directions (slope 1e12) would show */
    SAME           /* the teacher only: the student's values */
} input_kind;

static kd_tensor *make_input(kd_dtype dtype, int ndim, const int64_t *shape, input_kind kind,
                             const kd_tensor *labels, const kd_tensor *student, kd_rng *rng)
{
    kd_tensor *u = kt_uniform(KD_F64, ndim, shape, rng, 0, 1);
    int64_t n = kd_tensor_numel(u), row = n / shape[0];
    const double *r = kd_tensor_data(u);
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        int64_t sample = i / row;
        double x = 2 * r[i] - 1;
        switch (kind) {
        case UNIFORM: v[i] = 4 * x; break;
        case LARGE: v[i] = 500 * x; break;
        case CONSTANT_ROWS: v[i] = sample % 2 ? 4 * x : 0.25 * (double)(sample + 1); break;
        case NONNEGATIVE: v[i] = r[i]; break;
        case OUTLIER: v[i] = sample == 0 ? 20 * r[i] : r[i]; break;
        case WIDE: v[i] = 1000 * r[i]; break;
        case CONFIDENT:
            v[i] = i % row == (int64_t)kd_tensor_get(labels, sample) ? 110 + r[i] : 4 * x;
            break;
        case SAME: v[i] = kd_tensor_get(student, i); break;
        }
    }
    kd_tensor *src = kd_tensor_from_data(KD_F64, ndim, shape, v);
    kd_tensor *t = kd_tensor_empty(dtype, KD_CPU, ndim, shape);
    kd_tensor_copy_(t, src);
    kd_tensor_free(src);
    kd_tensor_free(u);
    free(v);
    return t;
}

static kd_tensor *make_labels(int64_t n, int64_t c, kd_rng *rng)
{
    int64_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int64_t)kd_rng_below(rng, (uint64_t)c);
    kd_tensor *t = kd_tensor_from_data(KD_I64, 1, &n, y);
    free(y);
    return t;
}

/* A case: a loss, its parameters, the taps' shapes and how they are
 * drawn; labels have the student's dim 1 classes. */
typedef struct loss_case {
    const char *name, *provider, *params;
    int ndim_s, ndim_t;
    int64_t shape_s[4], shape_t[4];
    input_kind student, teacher;
    int64_t epoch;
} loss_case;

static void make_batch(const loss_case *lc, kd_dtype dtype, uint64_t seed, kt_loss_batch *b)
{
    kd_rng rng = kd_rng_make(seed, 7, 0);
    memset(b, 0, sizeof *b);
    b->labels = make_labels(lc->shape_s[0], lc->shape_s[1], &rng);
    b->student = make_input(dtype, lc->ndim_s, lc->shape_s, lc->student, b->labels, NULL, &rng);
    b->teacher = make_input(dtype, lc->ndim_t, lc->shape_t, lc->teacher, b->labels, b->student,
                            &rng);
    b->epoch = lc->epoch;
}

#define LOGITS(n, c) 2, 2, {n, c}, {n, c}

/* ------------------------------------------------------------ parity */

static const loss_case PARITY[] = {
    /* dkd: the CIFAR-100 default, first epoch of the warm-up (0.05) */
    {"dkd defaults, epoch 1 of 20", "dkd", "{}", LOGITS(8, 10), UNIFORM, UNIFORM, 0},
    {"dkd beta 2 (res56->res20), 100 classes, epoch 20", "dkd", "{\"beta\": 2}",
     LOGITS(16, 100), UNIFORM, UNIFORM, 19},
    {"dkd ImageNet R34->R18 (beta 0.5, T 1, warmup 1)", "dkd",
     "{\"beta\": 0.5, \"temperature\": 1, \"warmup\": 1}", LOGITS(6, 1000), UNIFORM, UNIFORM,
     0},
    {"dkd alpha 2 beta 6 T 3 no warm-up", "dkd",
     "{\"alpha\": 2, \"beta\": 6, \"temperature\": 3, \"warmup\": 0}", LOGITS(5, 7), UNIFORM,
     UNIFORM, 3},
    {"dkd warm-up mid-ramp (epoch 7 of 10)", "dkd", "{\"warmup\": 10}", LOGITS(4, 10), UNIFORM,
     UNIFORM, 6},
    {"dkd large logits T 4", "dkd", "{\"warmup\": 0}", LOGITS(8, 10), LARGE, LARGE, 0},
    {"dkd large logits T 1", "dkd", "{\"temperature\": 1, \"warmup\": 0}", LOGITS(8, 10), LARGE,
     LARGE, 0},
    {"dkd confident student T 1", "dkd", "{\"temperature\": 1, \"warmup\": 1}", LOGITS(4, 10),
     CONFIDENT, UNIFORM, 0},
    {"dkd two classes (NCKD is 0)", "dkd", "{\"warmup\": 0}", LOGITS(6, 2), UNIFORM, UNIFORM,
     0},
    {"dkd batch 1", "dkd", "{\"warmup\": 0}", LOGITS(1, 10), UNIFORM, UNIFORM, 0},
    {"dkd logit_stand (res32x4->res8x4: T 2)", "dkd",
     "{\"logit_stand\": true, \"temperature\": 2}", LOGITS(8, 10), UNIFORM, UNIFORM, 30},
    {"dkd logit_stand T 3, beta 2, large logits", "dkd",
     "{\"logit_stand\": true, \"temperature\": 3, \"beta\": 2, \"warmup\": 0}",
     LOGITS(4, 100), LARGE, LARGE, 0},
    /* dist */
    {"dist defaults (CIFAR-100 tau 4)", "dist", "{}", LOGITS(8, 10), UNIFORM, UNIFORM, 0},
    {"dist ImageNet tau 1, 100 classes", "dist", "{\"tau\": 1}", LOGITS(16, 100), UNIFORM,
     UNIFORM, 0},
    {"dist beta 2 gamma 0.5 tau 2", "dist", "{\"beta\": 2, \"gamma\": 0.5, \"tau\": 2}",
     LOGITS(5, 7), UNIFORM, UNIFORM, 0},
    {"dist batch 2", "dist", "{}", LOGITS(2, 10), UNIFORM, UNIFORM, 0},
    {"dist large logits tau 1", "dist", "{\"tau\": 1}", LOGITS(8, 10), LARGE, LARGE, 0},
    {"dist constant student rows", "dist", "{}", LOGITS(6, 10), CONSTANT_ROWS, UNIFORM, 0},
    {"dist logit_stand tau 2", "dist", "{\"logit_stand\": true, \"tau\": 2}", LOGITS(8, 10),
     UNIFORM, UNIFORM, 0},
    {"dist logit_stand tau 1, gamma 0", "dist",
     "{\"logit_stand\": true, \"tau\": 1, \"gamma\": 0}", LOGITS(6, 100), LARGE, UNIFORM, 0},
    /* rkd */
    {"rkd defaults, D 16 vs 32", "rkd", "{}", 2, 2, {8, 16}, {8, 32}, NONNEGATIVE, NONNEGATIVE,
     0},
    {"rkd weights 1 and 2, signed features", "rkd",
     "{\"distance_weight\": 1, \"angle_weight\": 2}", 2, 2, {5, 7}, {5, 7}, UNIFORM, UNIFORM,
     0},
    {"rkd an outlier sample", "rkd", "{}", 2, 2, {6, 8}, {6, 8}, OUTLIER, NONNEGATIVE, 0},
    /* at a batch of 2 every relation is fixed (d^ = 1, angles 0 or 1): 3 is the least */
    {"rkd batch 3", "rkd", "{}", 2, 2, {3, 5}, {3, 9}, NONNEGATIVE, NONNEGATIVE, 0},
    {"rkd maps pooled", "rkd", "{}", 4, 4, {6, 4, 3, 3}, {6, 8, 2, 2}, NONNEGATIVE,
     NONNEGATIVE, 0},
    {"rkd maps flattened", "rkd", "{\"map\": \"flatten\"}", 4, 4, {5, 3, 2, 2}, {5, 2, 3, 3},
     UNIFORM, NONNEGATIVE, 0},
    {"rkd student map, teacher vector", "rkd", "{}", 4, 2, {4, 6, 2, 2}, {4, 12}, NONNEGATIVE,
     NONNEGATIVE, 0},
    {"rkd features in the thousands", "rkd", "{}", 2, 2, {8, 16}, {8, 16}, WIDE, NONNEGATIVE, 0},
};
#define N_PARITY (int)(sizeof PARITY / sizeof PARITY[0])
/* The float32 case: the authors' DKD form must fail on it, ours not. */
#define CONFIDENT_CASE 7

typedef struct parity_run {
    kt_loss_batch b;
    double value;
    char error[256];
} parity_run;

/* Names, tensors and metadata of the Python input. */
typedef struct inputs {
    int n;
    char names[4 * (N_PARITY + 1)][32];
    const char *name_ptrs[4 * (N_PARITY + 1)];
    kd_tensor *tensors[4 * (N_PARITY + 1)];
    char meta_text[8 * (N_PARITY + 1)][64];
    const char *meta[8 * (N_PARITY + 1)];
    int nmeta;
} inputs;

static void add_tensor(inputs *in, int c, const char *what, kd_tensor *t)
{
    snprintf(in->names[in->n], sizeof in->names[in->n], "c%d.%s", c, what);
    in->name_ptrs[in->n] = in->names[in->n];
    in->tensors[in->n++] = t;
}

static void add_meta(inputs *in, int c, const char *what, const char *value)
{
    int k = 2 * in->nmeta;
    snprintf(in->meta_text[k], sizeof in->meta_text[k], "c%d.%s", c, what);
    snprintf(in->meta_text[k + 1], sizeof in->meta_text[k + 1], "%s", value);
    in->meta[k] = in->meta_text[k];
    in->meta[k + 1] = strlen(value) < sizeof in->meta_text[k + 1] ? in->meta_text[k + 1] : value;
    in->nmeta++;
}

static void add_case(inputs *in, int c, const loss_case *lc, const kt_loss_batch *b, bool naive32)
{
    char epoch[24];
    snprintf(epoch, sizeof epoch, "%lld", (long long)lc->epoch);
    add_tensor(in, c, "s", b->student);
    add_tensor(in, c, "t", b->teacher);
    add_tensor(in, c, "y", b->labels);
    add_meta(in, c, "provider", lc->provider);
    add_meta(in, c, "params", lc->params);
    add_meta(in, c, "epoch", epoch);
    if (naive32)
        add_meta(in, c, "naive32", "1");
}

static void run_case(const loss_case *lc, kd_dtype dtype, uint64_t seed, parity_run *run)
{
    make_batch(lc, dtype, seed, &run->b);
    kt_loss l;
    if (!kt_loss_open(lc->name, lc->provider, lc->params, dtype, 1, &l)) {
        snprintf(run->error, sizeof run->error, "did not load");
        return;
    }
    run->value = kt_loss_step(&l, &run->b, true);
    if (isnan(run->value))
        snprintf(run->error, sizeof run->error, "%s", kd_last_error());
    kt_loss_close(&l);
}

/* The torch value and gradient of case c; false (case failed) when missing. */
static bool reference(const char *name, int c, const parity_run *run, const kd_safetensors *ref,
                      double *value, kd_tensor **grad)
{
    char key[64];
    *grad = NULL;
    if (run->error[0]) {
        kt_fail(name, "kdengine: %s", run->error);
        return false;
    }
    snprintf(key, sizeof key, "c%d.error", c);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "torch: %s", err);
        return false;
    }
    snprintf(key, sizeof key, "c%d.value", c);
    kd_tensor *v = kd_safetensors_load(ref, key, KD_F64);
    snprintf(key, sizeof key, "c%d.grad", c);
    *grad = kd_safetensors_load(ref, key, KD_F64);
    if (!v || !*grad || !run->b.student->grad) {
        kt_fail(name, "missing result: %s", kd_last_error());
        kd_tensor_free(v);
        kd_tensor_free(*grad);
        *grad = NULL;
        return false;
    }
    *value = kd_tensor_get(v, 0);
    kd_tensor_free(v);
    return true;
}

static void compare_f64(int c, const parity_run *run, const kd_safetensors *ref)
{
    char name[160];
    snprintf(name, sizeof name, "f64 parity with torch: %s", PARITY[c].name);
    double want;
    kd_tensor *grad;
    if (!reference(name, c, run, ref, &want, &grad))
        return;
    double ev = fabs(run->value - want) / fmax(fabs(want), 1e-300);
    double eg = kt_rel_error(run->b.student->grad, grad);
    kt_check(ev <= 1e-6 && eg <= 1e-6, name,
             "value %.12g vs torch %.12g (rel %.3g), gradient rel error %.3g (limit 1e-6)",
             run->value, want, ev, eg);
    kd_tensor_free(grad);
}

/* DKD in float32 on a student whose target logit leads the rest by more
 * than 104 at T 1: the authors' form takes log(sum of probabilities that
 * underflowed to 0) and is not finite; ours must match the f64 reference
 * within float32 rounding. Bound: every log-probability comes out of a
 * log-softmax of values at most M = max|z| / T, so each carries at most a
 * few ulps of M (8 * FLT_EPSILON * M, generously); a KL row weighs them
 * with probabilities summing to 1 on each side, so the loss moves by at
 * most 2 * 8 * FLT_EPSILON * M * T^2 * (alpha + beta) * warm. Gradients
 * are probability differences times T / N * weight, each probability off
 * by at most 8 * C * FLT_EPSILON relative. */
static void compare_confident(int c, const parity_run *run, const kd_safetensors *ref)
{
    const char *name = "dkd float32, confident student: the authors' form is not finite, "
                       "the log-space one matches f64";
    double want;
    kd_tensor *grad;
    if (!reference(name, c, run, ref, &want, &grad))
        return;
    char key[64];
    snprintf(key, sizeof key, "c%d.naive32_value", c);
    kd_tensor *naive = kd_safetensors_load(ref, key, KD_F64);
    double naive_value = naive ? kd_tensor_get(naive, 0) : 0;
    const kd_tensor *s = run->b.student;
    double m = 0;
    for (int64_t i = 0; i < kd_tensor_numel(s); i++)
        m = fmax(m, fabs(kd_tensor_get(s, i)));
    m = fmax(m, 4); /* the teacher's U(-4, 4) */
    const double alpha = 1, beta = 8, t = 1, warm = 1; /* the case's parameters */
    double c_classes = (double)s->shape[1], n = (double)s->shape[0];
    double value_bound = 16 * FLT_EPSILON * m * t * t * (alpha + beta) * warm;
    double grad_bound = 8 * c_classes * FLT_EPSILON * 2 * t / n * (alpha + beta) * warm;
    kd_tensor *g64 = kd_tensor_empty(KD_F64, KD_CPU, 2, s->shape);
    kd_tensor_copy_(g64, s->grad);
    double eg = kt_max_abs_diff(g64, grad);
    kt_check(naive && !isfinite(naive_value) && isfinite(run->value) &&
                 fabs(run->value - want) <= value_bound && eg <= grad_bound,
             name,
             "authors' form %g, ours %.9g vs f64 %.9g (|diff| %.3g, bound %.3g), gradient "
             "max |diff| %.3g (bound %.3g)",
             naive_value, run->value, want, fabs(run->value - want), value_bound, eg,
             grad_bound);
    kd_tensor_free(g64);
    kd_tensor_free(naive);
    kd_tensor_free(grad);
}

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

static void test_parity(void)
{
    /* rows 0..N-1 in f64; row N is the confident case again in f32 */
    static parity_run runs[N_PARITY + 1];
    static inputs in;
    memset(runs, 0, sizeof runs);
    memset(&in, 0, sizeof in);
    for (int c = 0; c <= N_PARITY; c++) {
        const loss_case *lc = &PARITY[c < N_PARITY ? c : CONFIDENT_CASE];
        run_case(lc, c < N_PARITY ? KD_F64 : KD_F32, 4200 + (uint64_t)c, &runs[c]);
        add_case(&in, c, lc, &runs[c].b, c == N_PARITY);
    }

    char dir[] = "/tmp/kdkdlosses.XXXXXX", in_path[128] = "", out_path[128] = "";
    kd_safetensors *ref = NULL;
    if (!torch_available()) {
        kt_skip("dkd/dist/rkd parity", "torch is not importable by %s (install python3-torch)",
                KD_TORCH_PYTHON);
        goto cleanup;
    }
    if (!mkdtemp(dir)) {
        kt_fail("dkd/dist/rkd parity", "cannot make a temporary directory");
        goto cleanup;
    }
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    char cases[16];
    snprintf(cases, sizeof cases, "%d", N_PARITY + 1);
    in.meta[2 * in.nmeta] = "cases";
    in.meta[2 * in.nmeta + 1] = cases;
    in.nmeta++;
    if (kd_safetensors_save(in_path, in.n, in.name_ptrs, in.tensors, in.nmeta, in.meta) !=
        KD_OK) {
        kt_fail("dkd/dist/rkd parity", "writing %s: %s", in_path, kd_last_error());
        goto cleanup;
    }
    char script[512], cmd[1536];
    kt_source_path("tests/parity/torch_kd_losses.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (system(cmd) != 0) {
        kt_fail("dkd/dist/rkd parity", "the torch reference failed: %s", cmd);
        goto cleanup;
    }
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("dkd/dist/rkd parity", "reading the torch results: %s", kd_last_error());
        goto cleanup;
    }
    for (int c = 0; c < N_PARITY; c++)
        compare_f64(c, &runs[c], ref);
    compare_confident(N_PARITY, &runs[N_PARITY], ref);
cleanup:
    kd_safetensors_close(ref);
    for (int c = 0; c <= N_PARITY; c++)
        kt_loss_batch_free(&runs[c].b);
    if (in_path[0]) {
        unlink(in_path);
        unlink(out_path);
        rmdir(dir);
    }
}

/* ------------------------------------------------------------ gradients */

static const loss_case FD[] = {
    {"dkd defaults", "dkd", "{}", LOGITS(3, 5), UNIFORM, UNIFORM, 0},
    {"dkd T 1 no warm-up", "dkd", "{\"temperature\": 1, \"warmup\": 0}", LOGITS(3, 6), UNIFORM,
     UNIFORM, 0},
    {"dkd logit_stand T 2", "dkd", "{\"logit_stand\": true, \"temperature\": 2}", LOGITS(3, 5),
     UNIFORM, UNIFORM, 25},
    {"dist defaults", "dist", "{}", LOGITS(3, 5), UNIFORM, UNIFORM, 0},
    {"dist logit_stand tau 1", "dist", "{\"logit_stand\": true, \"tau\": 1}", LOGITS(4, 5),
     UNIFORM, UNIFORM, 0},
    {"rkd vectors", "rkd", "{}", 2, 2, {4, 5}, {4, 3}, NONNEGATIVE, NONNEGATIVE, 0},
    {"rkd an outlier", "rkd", "{\"distance_weight\": 1, \"angle_weight\": 1}", 2, 2, {4, 3},
     {4, 3}, OUTLIER, NONNEGATIVE, 0},
    {"rkd map pooled", "rkd", "{}", 4, 4, {3, 2, 2, 2}, {3, 4, 1, 1}, UNIFORM, NONNEGATIVE, 0},
    {"rkd map flattened", "rkd", "{\"map\": \"flatten\"}", 4, 2, {3, 2, 2, 2}, {3, 6}, UNIFORM,
     UNIFORM, 0},
};

/* Central differences through the plugin's forward, in f64, every element
 * of the student's tensor. */
static void test_finite_differences(void)
{
    const double h = 1e-6;
    for (size_t k = 0; k < sizeof FD / sizeof FD[0]; k++) {
        const loss_case *fc = &FD[k];
        char name[128];
        snprintf(name, sizeof name, "f64 gradient vs finite differences: %s", fc->name);
        kt_loss l;
        if (!kt_loss_open(name, fc->provider, fc->params, KD_F64, 1, &l))
            continue;
        kt_loss_batch b;
        make_batch(fc, KD_F64, 99 + k, &b);
        double value = kt_loss_step(&l, &b, true);
        kd_tensor *analytic =
            b.student->grad ? kd_tensor_to_device(b.student->grad, KD_CPU) : NULL;
        kd_tensor *fd = kd_tensor_zeros(KD_F64, KD_CPU, b.student->ndim, b.student->shape);
        double *x = kd_tensor_data(b.student), *g = kd_tensor_data(fd);
        bool ok = !isnan(value) && analytic;
        for (int64_t i = 0; ok && i < kd_tensor_numel(b.student); i++) {
            double keep = x[i];
            x[i] = keep + h;
            double up = kt_loss_step(&l, &b, false);
            x[i] = keep - h;
            double down = kt_loss_step(&l, &b, false);
            x[i] = keep;
            g[i] = (up - down) / (2 * h);
        }
        if (!ok)
            kt_fail(name, "%s", kd_last_error());
        else {
            double e = kt_rel_error(analytic, fd);
            kt_check(e <= 1e-7, name, "relative error %.3g (limit 1e-7)", e);
        }
        kd_tensor_free(analytic);
        kd_tensor_free(fd);
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}


/* ------------------------------------------------------------ warm-up */

/* The ramp is per epoch, counted from 1: with warmup 20 the first epoch
 * weighs 1/20, the twentieth and later 1; the terms are not ramped. */
static void test_warmup(void)
{
    const char *name = "dkd warm-up: min(epoch / 20, 1), epochs from 1";
    kt_loss l;
    if (!kt_loss_open(name, "dkd", "{}", KD_F64, 1, &l))
        return;
    const loss_case lc = {"", "dkd", "{}", LOGITS(8, 10), UNIFORM, UNIFORM, 0};
    kt_loss_batch b;
    make_batch(&lc, KD_F64, 5, &b);
    static const int64_t epochs[] = {0, 1, 9, 18, 19, 20, 239};
    double v[7];
    for (int k = 0; k < 7; k++) {
        b.epoch = epochs[k];
        v[k] = kt_loss_step(&l, &b, false);
    }
    double full = v[6];
    bool ok = full > 0 && v[5] == full && v[4] == full;
    for (int k = 0; k < 4; k++)
        ok = ok && fabs(v[k] - full * (double)(epochs[k] + 1) / 20) <= 1e-14 * full;
    kt_check(ok, name, "epoch 1: %.9g, 2: %.9g, 10: %.9g, 19: %.9g, 20: %.9g, 21: %.9g, "
             "240: %.9g", v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    kt_loss_batch_free(&b);
    kt_loss_close(&l);
}

/* ------------------------------------------------------------ contract */

typedef struct terms_case {
    const char *provider, *params;
    const char *term[2];
    double weight[2]; /* loss = w0 * term0 + w1 * term1 */
    loss_case shape;
} terms_case;

static const terms_case TERMS[] = {
    {"dkd", "{\"alpha\": 2, \"beta\": 3, \"temperature\": 2, \"warmup\": 0}", {"tckd", "nckd"},
     {2, 3}, {"", "dkd", "", LOGITS(6, 10), UNIFORM, UNIFORM, 0}},
    {"dist", "{\"beta\": 2, \"gamma\": 3, \"tau\": 2}", {"inter", "intra"}, {8, 12},
     {"", "dist", "", LOGITS(6, 10), UNIFORM, UNIFORM, 0}},
    {"rkd", "{\"distance_weight\": 2, \"angle_weight\": 3}", {"distance", "angle"}, {2, 3},
     {"", "rkd", "", 2, 2, {6, 4}, {6, 8}, NONNEGATIVE, NONNEGATIVE, 0}},
};

/* Each loss reports its two terms, and the loss is their weighted sum. */
static void test_terms(void)
{
    for (size_t k = 0; k < sizeof TERMS / sizeof TERMS[0]; k++) {
        const terms_case *tc = &TERMS[k];
        char name[128];
        snprintf(name, sizeof name, "%s reports terms '%s' and '%s' that make up its value",
                 tc->provider, tc->term[0], tc->term[1]);
        kt_loss l;
        if (!kt_loss_open(name, tc->provider, tc->params, KD_F64, 1, &l))
            continue;
        kt_loss_batch b;
        make_batch(&tc->shape, KD_F64, 3 + k, &b);
        kd_scope_begin();
        kd_loss_result r;
        kd_status st = kt_loss_forward(&l, &b, &r);
        bool ok = st == KD_OK && r.loss && r.loss->ndim == 0 && r.n_terms == 2 && r.terms &&
                  strcmp(r.terms[0].name, tc->term[0]) == 0 &&
                  strcmp(r.terms[1].name, tc->term[1]) == 0;
        double v = ok ? kd_tensor_get(r.loss, 0) : NAN;
        double sum = ok ? tc->weight[0] * kd_tensor_get(r.terms[0].value, 0) +
                              tc->weight[1] * kd_tensor_get(r.terms[1].value, 0)
                        : NAN;
        kt_check(ok && v > 0 && fabs(v - sum) <= 1e-12 * v, name,
                 "status %d (%s), loss %.12g, weighted terms %.12g", (int)st,
                 st == KD_OK ? "" : kd_last_error(), v, sum);
        kd_scope_end();
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}

/* The teacher is a constant: a teacher tensor that requires grad gets
 * none; and the same tensors on both sides cost exactly 0 where the
 * formula allows it (dkd's log-space KL, rkd's relations). */
static void test_teacher(void)
{
    static const loss_case cases[] = {
        {"dkd", "dkd", "{\"logit_stand\": true}", LOGITS(4, 10), UNIFORM, UNIFORM, 0},
        {"dist", "dist", "{\"logit_stand\": true}", LOGITS(4, 10), UNIFORM, UNIFORM, 0},
        {"rkd", "rkd", "{}", 2, 2, {4, 6}, {4, 6}, NONNEGATIVE, NONNEGATIVE, 0},
    };
    for (int k = 0; k < 3; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s leaves a teacher that requires grad without a gradient",
                 cases[k].provider);
        kt_loss l;
        if (!kt_loss_open(name, cases[k].provider, cases[k].params, KD_F32, 1, &l))
            continue;
        kt_loss_batch b;
        make_batch(&cases[k], KD_F32, 8 + k, &b);
        kd_tensor_set_requires_grad(b.teacher, true);
        double v = kt_loss_step(&l, &b, true);
        kt_check(!isnan(v) && b.student->grad && !b.teacher->grad, name,
                 "value %g, student grad %s, teacher grad %s", v,
                 b.student->grad ? "set" : "missing", b.teacher->grad ? "set" : "absent");
        kt_loss_batch_free(&b);
        if (k == 1) {
            kt_loss_close(&l);
            continue;
        }
        loss_case same = cases[k];
        same.teacher = SAME;
        snprintf(name, sizeof name, "%s: teacher == student costs exactly 0", cases[k].provider);
        make_batch(&same, KD_F32, 8 + k, &b);
        v = kt_loss_step(&l, &b, false);
        kt_check(v == 0, name, "loss %.3g", v);
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}

/* ------------------------------------------------------------ errors */

#define bind_args(student_shape, teacher_shape)                                              \
    ((kd_bind_args){.size = sizeof(kd_bind_args), .student = (student_shape),               \
                    .teacher = (teacher_shape)})

static kd_status forward_error(const kt_loss *l, kt_loss_batch *b)
{
    kd_scope_begin();
    kd_loss_result r;
    kd_status st = kt_loss_forward(l, b, &r);
    kd_scope_end();
    return st;
}

/* What bind() refuses before training, naming both taps and shapes. */
static void test_bind_errors(void)
{
    kt_loss dkd, dist, rkd, dkd2;
    bool ok = kt_loss_open("bind", "dkd", "{\"student_tap\": \"head\"}", KD_F32, 1, &dkd);
    ok = kt_loss_open("bind", "dist", "{}", KD_F32, 1, &dist) && ok;
    ok = kt_loss_open("bind", "rkd", "{\"teacher_tap\": \"tokens\"}", KD_F32, 1, &rkd) && ok;
    ok = kt_loss_open("bind", "dkd", "{}", KD_F32, 1, &dkd2) && ok;
    if (!ok)
        goto close;
    const kd_tap_shape v10 = {2, {1, 10}}, v100 = {2, {1, 100}}, v1 = {2, {1, 1}},
                       map = {4, {1, 64, 8, 8}}, tokens = {3, {1, 197, 384}};
    kt_expect_error("dkd bind: classes differ", dkd.vt->bind(dkd.self, &bind_args(&v10, &v100)),
                 "student tap 'head' [1, 10]", "teacher tap 'logits' [1, 100]");
    kt_expect_error("dkd bind: a feature map is not logits",
                 dkd.vt->bind(dkd.self, &bind_args(&map, &v10)), "[1, 64, 8, 8]", "[1, 10]");
    kt_expect_error("dkd bind: one class has nothing to decouple",
                 dkd.vt->bind(dkd.self, &bind_args(&v1, &v1)), "dkd:", "at least 2");
    kd_host_services host = {.size = sizeof host, .num_classes = 100};
    kd_bind_args with_host = bind_args(&v10, &v10);
    with_host.host = &host;
    kt_expect_error("dkd bind: logits and labels disagree on the classes",
                 dkd2.vt->bind(dkd2.self, &with_host), "10 classes", "labels have 100");
    kt_check(dkd.vt->bind(dkd.self, &bind_args(&v10, &v10)) == KD_OK, "dkd bind: logits",
             "%s", kd_last_error());
    kt_expect_error("dist bind: classes differ", dist.vt->bind(dist.self, &bind_args(&v100, &v10)),
                 "student tap 'logits' [1, 100]", "teacher tap 'logits' [1, 10]");
    kt_check(dist.vt->bind(dist.self, &bind_args(&v10, &v10)) == KD_OK, "dist bind: logits",
             "%s", kd_last_error());
    kt_expect_error("rkd bind: tokens are neither embeddings nor a map",
                 rkd.vt->bind(rkd.self, &bind_args(&map, &tokens)), "student tap 'pre_logits'",
                 "teacher tap 'tokens' [1, 197, 384]");
    kt_check(rkd.vt->bind(rkd.self, &bind_args(&map, &v100)) == KD_OK,
             "rkd bind: a map and embeddings of another width", "%s", kd_last_error());
close:
    kt_loss_close(&dkd);
    kt_loss_close(&dist);
    kt_loss_close(&rkd);
    kt_loss_close(&dkd2);
}

static void test_forward_errors(void)
{
    kt_loss dkd, dist, rkd;
    bool ok = kt_loss_open("errors", "dkd", "{}", KD_F32, 1, &dkd);
    ok = kt_loss_open("errors", "dist", "{}", KD_F32, 1, &dist) && ok;
    ok = kt_loss_open("errors", "rkd", "{}", KD_F32, 1, &rkd) && ok;
    if (!ok)
        goto close;
    const loss_case lc = {"", "dkd", "{}", LOGITS(4, 10), UNIFORM, UNIFORM, 0};
    kt_loss_batch b;
    make_batch(&lc, KD_F32, 77, &b);
    kd_tensor *labels = b.labels;
    const int64_t n = 4, shape[2] = {4, 10};
    const int64_t bad[4] = {0, 10, 3, 2};
    b.labels = kd_tensor_from_data(KD_I64, 1, &n, bad);
    kt_expect_error("dkd: label 10 of 10 classes", forward_error(&dkd, &b), "dkd:", "label 10");
    kd_tensor_free(b.labels);
    b.labels = NULL;
    kt_expect_error("dkd: no labels", forward_error(&dkd, &b), "dkd:", "no labels");
    b.labels = labels;
    b.soft = kd_tensor_full(KD_F32, KD_CPU, 2, shape, 0.1);
    kt_expect_error("dkd: mixup/cutmix soft targets are refused", forward_error(&dkd, &b), "dkd:",
                 "soft targets");
    kd_tensor_free(b.soft);
    b.soft = NULL;
    kd_tensor *teacher = b.teacher;
    b.teacher = NULL;
    kt_expect_error("dkd: no teacher tensor", forward_error(&dkd, &b), "dkd:", "teacher");
    kt_expect_error("dist: no teacher tensor", forward_error(&dist, &b), "dist:", "teacher");
    b.teacher = teacher;
    kt_loss_batch_free(&b);

    const loss_case one = {"", "dist", "{}", LOGITS(1, 10), UNIFORM, UNIFORM, 0};
    make_batch(&one, KD_F32, 78, &b);
    kt_expect_error("dist: a batch of 1 has no intra-class relation", forward_error(&dist, &b),
                 "dist:", "at least 2");
    kt_expect_error("rkd: a batch of 1 has no relations", forward_error(&rkd, &b), "rkd:",
                 "at least 2");
    kt_loss_batch_free(&b);

    const loss_case mismatch = {"", "rkd", "{}", 2, 2, {4, 6}, {5, 6}, UNIFORM, UNIFORM, 0};
    make_batch(&mismatch, KD_F32, 79, &b);
    kt_expect_error("rkd: student and teacher batches differ", forward_error(&rkd, &b), "[4, 6]",
                 "[5, 6]");
    kt_loss_batch_free(&b);
close:
    kt_loss_close(&dkd);
    kt_loss_close(&dist);
    kt_loss_close(&rkd);
}

/* The schemas refuse what the losses cannot take. */
static void test_param_errors(void)
{
    static const struct {
        const char *provider, *json;
    } bad[] = {
        {"dkd", "{\"temperature\": 0}"}, {"dkd", "{\"warmup\": -1}"},
        {"dkd", "{\"warmup\": 1.5}"},    {"dkd", "{\"beta\": -1}"},
        {"dist", "{\"tau\": 0}"},        {"dist", "{\"gamma\": -0.5}"},
        {"rkd", "{\"map\": \"max\"}"},   {"rkd", "{\"angle_weight\": -1}"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s refuses %s", bad[k].provider, bad[k].json);
        const kd_vtable_header *vt;
        const kd_registry_entry *entry = kt_provider(KD_KIND_LOSS, bad[k].provider, &vt);
        kd_params *p = entry ? kt_params(entry, bad[k].json) : NULL;
        kt_check(entry && !p, name, "%s", entry ? "accepted" : "provider missing");
        kd_params_free(p);
    }
}

/* ------------------------------------------------------------ example jobs */

/* Runs kdengine from the source tree with this build's plugins; its exit
 * status, the output in *out (caller frees). */
static int kdengine(char **out, const char *args)
{
    char root[512], cmd[2048];
    kt_source_path("", root, sizeof root);
    snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine %s 2>&1", root,
             kt_plugin_dir(), KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

/* Each example job, two steps of 32 images and a short evaluation: it
 * trains, and the log holds the loss's own terms. */
static void test_example_jobs(void)
{
    static const struct {
        const char *job, *terms[2];
    } jobs[] = {{"dkd", {"\"tckd\":", "\"nckd\":"}},
                {"dist", {"\"inter\":", "\"intra\":"}},
                {"rkd", {"\"distance\":", "\"angle\":"}}};
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip("example jobs", "no Fashion-MNIST (scripts/setup installs it)");
        return;
    }
    char dir[] = "/tmp/kdkdjobs.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("example jobs", "cannot make a temporary directory");
        return;
    }
    for (int k = 0; k < 3; k++) {
        char name[128], args[1024], path[512], *out = NULL;
        snprintf(name, sizeof name, "examples/fashion-mnist/%s.json runs two steps",
                 jobs[k].job);
        snprintf(args, sizeof args,
                 "run examples/fashion-mnist/%s.json --set schedule.epochs=1 "
                 "--set data.train.subset=64 --set data.train.batch_size=32 "
                 "--set data.val.subset=100 --set log.every_steps=1 --set output=%s/%s",
                 jobs[k].job, dir, jobs[k].job);
        int rc = kdengine(&out, args);
        snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, jobs[k].job);
        size_t len = 0;
        char *log = (char *)kt_read_file(path, &len);
        char *text = log ? realloc(log, len + 1) : NULL;
        if (text)
            text[len] = 0;
        else
            free(log);
        kt_check(rc == 0 && out && strstr(out, "done: 2 steps") && text &&
                     strstr(text, jobs[k].terms[0]) && strstr(text, jobs[k].terms[1]),
                 name, "exit %d, log %s: %s", rc, text ? "read" : "missing",
                 out ? out : "(no output)");
        free(text);
        free(out);
    }
    kt_remove_tree(dir);

    /* validate binds the losses: a tap they cannot use is named with both shapes */
    static const struct {
        const char *job, *set, *want[2];
    } bad[] = {
        {"dkd", "'losses[1].student_tap=\"stage3\"'",
         {"student tap 'stage3' [1, 64, 7, 7]", "teacher tap 'logits' [1, 10]"}},
        {"dist", "'losses[1].teacher_tap=\"pre_logits\"'",
         {"student tap 'logits' [1, 10]", "teacher tap 'pre_logits' [1, 64]"}},
    };
    for (int k = 0; k < 2; k++) {
        char name[128], args[512], *out = NULL;
        snprintf(name, sizeof name, "validate %s.json with %s names both taps and shapes",
                 bad[k].job, bad[k].set);
        snprintf(args, sizeof args, "validate examples/fashion-mnist/%s.json --set %s",
                 bad[k].job, bad[k].set);
        int rc = kdengine(&out, args);
        kt_check(rc == 1 && out && strstr(out, bad[k].want[0]) && strstr(out, bad[k].want[1]),
                 name, "exit %d: %s", rc, out ? out : "(none)");
        free(out);
    }
}

int main(void)
{
    test_parity();
    test_finite_differences();
    test_warmup();
    test_terms();
    test_teacher();
    test_bind_errors();
    test_forward_errors();
    test_param_errors();
    test_example_jobs();
    kt_plugins_close();
    return kt_finish();
}
