/* The ce, kd and logit_stand loss plugins, loaded through the registry:
 * parity with the papers' formulas in torch (one Python process for the
 * file), f64 finite-difference gradients, kd/logit_stand agreement,
 * soft/hard cross-entropy agreement, the teacher as a constant, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "loss_fixture.h"
#include "plugin_fixture.h"

/* ------------------------------------------------------------ plumbing */

/* How a case's logits are drawn. */
typedef enum logits_kind {
    UNIFORM,        /* U(-4, 4) */
    LARGE,          /* U(-500, 500) */
    NEAR_CONSTANT,  /* U(-1e-5, 1e-5): std ~ 6e-6, so eps = 1e-7 shows */
    CONSTANT_ROWS,  /* even rows constant (exact in binary), odd rows U(-4, 4) */
    SCALED_STUDENT, /* the teacher only: 3 x the student */
    SAME_AS_STUDENT /* the teacher only */
} logits_kind;

static kd_tensor *make_logits(kd_dtype dtype, int64_t n, int64_t c, logits_kind kind,
                              const kd_tensor *student, kd_rng *rng)
{
    const int64_t shape[2] = {n, c};
    kd_tensor *x = kd_tensor_empty(dtype, KD_CPU, 2, shape);
    kd_tensor *u = kt_uniform(KD_F64, 2, shape, rng, -1, 1);
    const double *r = kd_tensor_data(u);
    double *v = malloc((size_t)(n * c) * sizeof *v);
    for (int64_t i = 0; i < n * c; i++) {
        int64_t row = i / c;
        switch (kind) {
        case UNIFORM: v[i] = 4 * r[i]; break;
        case LARGE: v[i] = 500 * r[i]; break;
        case NEAR_CONSTANT: v[i] = 1e-5 * r[i]; break;
        case CONSTANT_ROWS: v[i] = row % 2 ? 4 * r[i] : 0.25 * (double)(row + 1); break;
        case SCALED_STUDENT: v[i] = 3 * kd_tensor_get(student, i); break;
        case SAME_AS_STUDENT: v[i] = kd_tensor_get(student, i); break;
        }
    }
    kd_tensor *src = kd_tensor_from_data(KD_F64, 2, shape, v);
    kd_tensor_copy_(x, src);
    kd_tensor_free(src);
    kd_tensor_free(u);
    free(v);
    return x;
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

/* Mixup-style targets: lambda on the label, 1 - lambda on a random class;
 * lambda = 1 gives the one-hot labels. */
static kd_tensor *make_soft(kd_dtype dtype, const kd_tensor *labels, int64_t c, bool one_hot,
                            kd_rng *rng)
{
    int64_t n = labels->shape[0];
    const int64_t shape[2] = {n, c};
    double *v = calloc((size_t)(n * c), sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        double lambda = one_hot ? 1 : kd_rng_uniform(rng);
        v[i * c + (int64_t)kd_tensor_get(labels, i)] += lambda;
        v[i * c + (int64_t)kd_rng_below(rng, (uint64_t)c)] += 1 - lambda;
    }
    kd_tensor *f = kd_tensor_from_data(KD_F64, 2, shape, v);
    kd_tensor *t = kd_tensor_empty(dtype, KD_CPU, 2, shape);
    kd_tensor_copy_(t, f);
    kd_tensor_free(f);
    free(v);
    return t;
}

/* ------------------------------------------------------------ parity */

typedef struct parity_case {
    const char *name;
    const char *provider, *params;
    int64_t n, c;
    logits_kind student, teacher; /* teacher unused by ce */
    bool soft;
} parity_case;

static const parity_case PARITY[] = {
    {"ce labels", "ce", "{}", 8, 10, UNIFORM, UNIFORM, false},
    {"ce labels smoothing 0.1", "ce", "{\"label_smoothing\": 0.1}", 16, 100, UNIFORM, UNIFORM,
     false},
    {"ce soft targets", "ce", "{}", 8, 10, UNIFORM, UNIFORM, true},
    {"ce soft targets smoothing 0.2", "ce", "{\"label_smoothing\": 0.2}", 12, 10, UNIFORM,
     UNIFORM, true},
    {"ce batch 1", "ce", "{\"label_smoothing\": 0.1}", 1, 10, UNIFORM, UNIFORM, false},
    {"ce large logits", "ce", "{\"label_smoothing\": 0.1}", 8, 10, LARGE, UNIFORM, false},
    {"ce large logits soft", "ce", "{\"label_smoothing\": 0.1}", 8, 10, LARGE, UNIFORM, true},
    {"kd default T", "kd", "{}", 8, 10, UNIFORM, UNIFORM, false},
    {"kd T 1", "kd", "{\"temperature\": 1}", 16, 100, UNIFORM, UNIFORM, false},
    {"kd T 3", "kd", "{\"temperature\": 3}", 5, 7, UNIFORM, UNIFORM, false},
    {"kd T 0.5", "kd", "{\"temperature\": 0.5}", 6, 10, UNIFORM, UNIFORM, false},
    {"kd batch 1", "kd", "{\"temperature\": 4}", 1, 10, UNIFORM, UNIFORM, false},
    {"kd large logits T 1", "kd", "{\"temperature\": 1}", 8, 10, LARGE, LARGE, false},
    {"kd large logits T 3", "kd", "{\"temperature\": 3}", 8, 10, LARGE, LARGE, false},
    {"kd logit_stand T 2", "kd", "{\"temperature\": 2, \"logit_stand\": true}", 8, 10, UNIFORM,
     UNIFORM, false},
    {"kd logit_stand T 3 large", "kd", "{\"temperature\": 3, \"logit_stand\": true}", 4, 100,
     LARGE, LARGE, false},
    {"kd logit_stand near-constant", "kd", "{\"temperature\": 2, \"logit_stand\": true}", 6,
     10, NEAR_CONSTANT, UNIFORM, false},
    {"kd logit_stand constant rows", "kd", "{\"temperature\": 2, \"logit_stand\": true}", 6,
     10, CONSTANT_ROWS, UNIFORM, false},
    {"kd logit_stand batch 1", "kd", "{\"logit_stand\": true}", 1, 10, UNIFORM, UNIFORM,
     false},
    {"logit_stand defaults", "logit_stand", "{}", 8, 10, UNIFORM, UNIFORM, false},
    {"logit_stand T 1 near-constant teacher", "logit_stand", "{\"base_temperature\": 1}", 8,
     10, UNIFORM, NEAR_CONSTANT, false},
    {"logit_stand constant teacher rows", "logit_stand", "{}", 6, 10, UNIFORM, CONSTANT_ROWS,
     false},
};
#define N_PARITY (int)(sizeof PARITY / sizeof PARITY[0])

typedef struct parity_run {
    kt_loss_batch b;
    double value;
    char error[256];
} parity_run;

/* Names and tensors of the Python input. */
typedef struct inputs {
    int n;
    char names[4 * N_PARITY][32];
    const char *name_ptrs[4 * N_PARITY];
    kd_tensor *tensors[4 * N_PARITY];
    char meta_text[2 * N_PARITY][128];
    const char *meta[4 * N_PARITY + 2];
    int nmeta;
} inputs;

static void add_input(inputs *in, int c, const char *what, kd_tensor *t)
{
    snprintf(in->names[in->n], sizeof in->names[in->n], "c%d.%s", c, what);
    in->name_ptrs[in->n] = in->names[in->n];
    in->tensors[in->n++] = t;
}

static void run_parity_case(int c, parity_run *run, inputs *in)
{
    const parity_case *pc = &PARITY[c];
    kd_rng rng = kd_rng_make(4200 + (uint64_t)c, 7, 0);
    kt_loss_batch *b = &run->b;
    bool ce = strcmp(pc->provider, "ce") == 0;
    b->student = make_logits(KD_F32, pc->n, pc->c, pc->student, NULL, &rng);
    b->labels = make_labels(pc->n, pc->c, &rng);
    if (!ce)
        b->teacher = make_logits(KD_F32, pc->n, pc->c, pc->teacher, b->student, &rng);
    if (pc->soft)
        b->soft = make_soft(KD_F32, b->labels, pc->c, false, &rng);
    add_input(in, c, "s", b->student);
    add_input(in, c, "y", b->labels);
    if (b->teacher)
        add_input(in, c, "t", b->teacher);
    if (b->soft)
        add_input(in, c, "soft", b->soft);
    snprintf(in->meta_text[2 * c], sizeof in->meta_text[0], "c%d.provider", c);
    snprintf(in->meta_text[2 * c + 1], sizeof in->meta_text[0], "c%d.params", c);
    in->meta[2 * in->nmeta] = in->meta_text[2 * c];
    in->meta[2 * in->nmeta + 1] = pc->provider;
    in->nmeta++;
    in->meta[2 * in->nmeta] = in->meta_text[2 * c + 1];
    in->meta[2 * in->nmeta + 1] = pc->params;
    in->nmeta++;

    kt_loss l;
    if (!kt_loss_open(pc->name, pc->provider, pc->params, KD_F32, 1, &l)) {
        snprintf(run->error, sizeof run->error, "did not load");
        return;
    }
    run->value = kt_loss_step(&l, b, true);
    if (isnan(run->value))
        snprintf(run->error, sizeof run->error, "%s", kd_last_error());
    kt_loss_close(&l);
}

static void compare_parity_case(int c, const parity_run *run, const kd_safetensors *ref)
{
    const parity_case *pc = &PARITY[c];
    char name[128], key[64];
    snprintf(name, sizeof name, "parity %s", pc->name);
    if (run->error[0]) {
        kt_fail(name, "kdengine: %s", run->error);
        return;
    }
    snprintf(key, sizeof key, "c%d.error", c);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "torch: %s", err);
        return;
    }
    snprintf(key, sizeof key, "c%d.value", c);
    kd_tensor *value = kd_safetensors_load(ref, key, KD_F64);
    snprintf(key, sizeof key, "c%d.grad", c);
    kd_tensor *grad = kd_safetensors_load(ref, key, KD_F64);
    if (!value || !grad || !run->b.student->grad) {
        kt_fail(name, "missing result: %s", kd_last_error());
    } else {
        double want = kd_tensor_get(value, 0);
        double ev = fabs(run->value - want) / fmax(fabs(want), 1e-30);
        double eg = kt_rel_error(run->b.student->grad, grad);
        kt_check(ev <= 1e-5 && eg <= 1e-5, name,
                 "value %.9g vs torch %.9g (rel %.3g), gradient rel error %.3g (limit 1e-5)",
                 run->value, want, ev, eg);
    }
    kd_tensor_free(value);
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
    static parity_run runs[N_PARITY];
    static inputs in;
    memset(runs, 0, sizeof runs);
    memset(&in, 0, sizeof in);
    for (int c = 0; c < N_PARITY; c++)
        run_parity_case(c, &runs[c], &in);

    char dir[] = "/tmp/kdlosses.XXXXXX", in_path[128] = "", out_path[128] = "";
    kd_safetensors *ref = NULL;
    if (!torch_available()) {
        kt_skip("loss parity", "torch is not importable by %s (install python3-torch)",
                KD_TORCH_PYTHON);
        goto cleanup;
    }
    if (!mkdtemp(dir)) {
        kt_fail("loss parity", "cannot make a temporary directory");
        goto cleanup;
    }
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    char cases[16];
    snprintf(cases, sizeof cases, "%d", N_PARITY);
    in.meta[2 * in.nmeta] = "cases";
    in.meta[2 * in.nmeta + 1] = cases;
    in.nmeta++;
    if (kd_safetensors_save(in_path, in.n, in.name_ptrs, in.tensors, in.nmeta, in.meta) !=
        KD_OK) {
        kt_fail("loss parity", "writing %s: %s", in_path, kd_last_error());
        goto cleanup;
    }
    char script[512], cmd[1536];
    kt_source_path("tests/parity/torch_losses.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (system(cmd) != 0) {
        kt_fail("loss parity", "the torch reference failed: %s", cmd);
        goto cleanup;
    }
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("loss parity", "reading the torch results: %s", kd_last_error());
        goto cleanup;
    }
    for (int c = 0; c < N_PARITY; c++)
        compare_parity_case(c, &runs[c], ref);
cleanup:
    kd_safetensors_close(ref);
    for (int c = 0; c < N_PARITY; c++)
        kt_loss_batch_free(&runs[c].b);
    if (in_path[0]) {
        unlink(in_path);
        unlink(out_path);
        rmdir(dir);
    }
}

/* ------------------------------------------------------------ gradients */

typedef struct fd_case {
    const char *name, *provider, *params;
    bool soft;
    kd_dtype teacher_dtype;
} fd_case;

static const fd_case FD[] = {
    {"ce labels smoothing 0.1", "ce", "{\"label_smoothing\": 0.1}", false, KD_F64},
    {"ce soft targets smoothing 0.2", "ce", "{\"label_smoothing\": 0.2}", true, KD_F64},
    {"kd T 3", "kd", "{\"temperature\": 3}", false, KD_F64},
    {"kd T 2 f32 teacher", "kd", "{\"temperature\": 2}", false, KD_F32},
    {"kd logit_stand T 2", "kd", "{\"temperature\": 2, \"logit_stand\": true}", false, KD_F64},
    {"logit_stand T 0.7", "logit_stand", "{\"base_temperature\": 0.7}", false, KD_F64},
};

/* Central differences through the plugin's forward, in f64. */
static void test_finite_differences(void)
{
    const double h = 1e-6;
    for (size_t k = 0; k < sizeof FD / sizeof FD[0]; k++) {
        const fd_case *fc = &FD[k];
        char name[128];
        snprintf(name, sizeof name, "f64 gradient vs finite differences: %s", fc->name);
        kt_loss l;
        if (!kt_loss_open(name, fc->provider, fc->params, KD_F32, 1, &l))
            continue;
        kd_rng rng = kd_rng_make(99 + k, 3, 0);
        kt_loss_batch b = {0};
        b.student = make_logits(KD_F64, 3, 5, UNIFORM, NULL, &rng);
        b.labels = make_labels(3, 5, &rng);
        if (strcmp(fc->provider, "ce") != 0)
            b.teacher = make_logits(fc->teacher_dtype, 3, 5, UNIFORM, NULL, &rng);
        if (fc->soft)
            b.soft = make_soft(KD_F32, b.labels, 5, false, &rng);
        double value = kt_loss_step(&l, &b, true);
        kd_tensor *analytic =
            b.student->grad ? kd_tensor_to_device(b.student->grad, KD_CPU) : NULL;
        kd_tensor *fd = kd_tensor_zeros(KD_F64, KD_CPU, 2, b.student->shape);
        double *x = kd_tensor_data(b.student), *g = kd_tensor_data(fd);
        bool ok = !isnan(value) && analytic;
        for (int64_t i = 0; ok && i < 15; i++) {
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

/* ------------------------------------------------------------ agreement */

static bool same_bits(const kd_tensor *a, const kd_tensor *b)
{
    return a && b && kd_tensor_same_shape(a, b) && a->dtype == b->dtype &&
           memcmp(kd_tensor_data(a), kd_tensor_data(b),
                  (size_t)kd_tensor_numel(a) * kd_dtype_size(a->dtype)) == 0;
}

/* kd with logit_stand on and logit_stand at the same temperature run one
 * code path: the same bits. */
static void test_kd_matches_logit_stand(void)
{
    static const struct {
        const char *kd, *ls;
    } pairs[] = {
        {"{\"temperature\": 2, \"logit_stand\": true}", "{}"},
        {"{\"temperature\": 3.5, \"logit_stand\": true}", "{\"base_temperature\": 3.5}"},
    };
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        char name[160];
        snprintf(name, sizeof name, "kd %s equals logit_stand %s", pairs[k].kd, pairs[k].ls);
        kt_loss a, b;
        bool opened = kt_loss_open(name, "kd", pairs[k].kd, KD_F32, 1, &a);
        if (opened && !kt_loss_open(name, "logit_stand", pairs[k].ls, KD_F32, 1, &b)) {
            kt_loss_close(&a);
            opened = false;
        }
        if (!opened)
            continue;
        kd_rng rng = kd_rng_make(11 + k, 1, 0);
        kt_loss_batch x = {0};
        x.student = make_logits(KD_F32, 16, 10, UNIFORM, NULL, &rng);
        x.teacher = make_logits(KD_F32, 16, 10, LARGE, NULL, &rng);
        double va = kt_loss_step(&a, &x, true);
        kd_tensor *ga = x.student->grad ? kd_tensor_to_device(x.student->grad, KD_CPU) : NULL;
        double vb = kt_loss_step(&b, &x, true);
        kt_check(!isnan(va) && va == vb && same_bits(ga, x.student->grad), name,
                 "values %.9g and %.9g, gradients %s", va, vb,
                 same_bits(ga, x.student->grad) ? "equal" : "differ");
        kd_tensor_free(ga);
        kt_loss_batch_free(&x);
        kt_loss_close(&a);
        kt_loss_close(&b);
    }
}

/* The standardization is the difference: a teacher 3x the student costs
 * nothing under logit_stand and something under plain kd. */
static void test_scale_invariance(void)
{
    const char *name = "logit_stand ignores the teacher's logit scale, kd does not";
    kt_loss kd, ls;
    if (!kt_loss_open(name, "kd", "{\"temperature\": 2}", KD_F32, 1, &kd))
        return;
    if (!kt_loss_open(name, "logit_stand", "{}", KD_F32, 1, &ls)) {
        kt_loss_close(&kd);
        return;
    }
    kd_rng rng = kd_rng_make(5, 5, 0);
    kt_loss_batch b = {0};
    b.student = make_logits(KD_F32, 8, 10, UNIFORM, NULL, &rng);
    b.teacher = make_logits(KD_F32, 8, 10, SCALED_STUDENT, b.student, &rng);
    double vk = kt_loss_step(&kd, &b, false), vl = kt_loss_step(&ls, &b, false);
    kt_check(fabs(vl) < 1e-6 && vk > 0.1, name, "logit_stand %.3g, kd %.3g", vl, vk);
    kt_loss_batch_free(&b);
    kt_loss_close(&kd);
    kt_loss_close(&ls);
}

/* Teacher == student: the two sides are the same bits in log space, so the
 * loss is exactly 0; the gradient, p - q with p and q rounded apart, is at
 * rounding level (its scale is T / N = 0.5 here). */
static void test_identical_logits(void)
{
    static const struct {
        const char *provider, *params;
    } cases[] = {{"kd", "{}"}, {"kd", "{\"temperature\": 1}"},
                 {"kd", "{\"logit_stand\": true}"}, {"logit_stand", "{}"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s %s: teacher == student gives 0",
                 cases[k].provider, cases[k].params);
        kt_loss l;
        if (!kt_loss_open(name, cases[k].provider, cases[k].params, KD_F32, 1, &l))
            continue;
        kd_rng rng = kd_rng_make(21 + k, 2, 0);
        kt_loss_batch b = {0};
        b.student = make_logits(KD_F32, 8, 10, UNIFORM, NULL, &rng);
        b.teacher = make_logits(KD_F32, 8, 10, SAME_AS_STUDENT, b.student, &rng);
        double v = kt_loss_step(&l, &b, true);
        double gmax = INFINITY;
        if (b.student->grad) {
            kd_tensor *zero = kd_tensor_zeros(KD_F32, KD_CPU, 2, b.student->shape);
            gmax = kt_max_abs_diff(b.student->grad, zero);
            kd_tensor_free(zero);
        }
        kt_check(v == 0 && gmax <= 1e-7, name, "loss %.3g, largest gradient %.3g (%s)", v, gmax,
                 isnan(v) ? kd_last_error() : "");
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}

/* One-hot soft targets are the labels: the same loss and gradient. */
static void test_ce_one_hot(void)
{
    const char *params[] = {"{}", "{\"label_smoothing\": 0.1}"};
    for (int k = 0; k < 2; k++) {
        char name[128];
        snprintf(name, sizeof name, "ce %s: one-hot soft targets equal the labels", params[k]);
        kt_loss l;
        if (!kt_loss_open(name, "ce", params[k], KD_F32, 1, &l))
            continue;
        kd_rng rng = kd_rng_make(31 + (uint64_t)k, 4, 0);
        kt_loss_batch b = {0};
        b.student = make_logits(KD_F32, 16, 10, UNIFORM, NULL, &rng);
        b.labels = make_labels(16, 10, &rng);
        double hard = kt_loss_step(&l, &b, true);
        kd_tensor *g = b.student->grad ? kd_tensor_to_device(b.student->grad, KD_CPU) : NULL;
        b.soft = make_soft(KD_F32, b.labels, 10, true, &rng);
        double soft = kt_loss_step(&l, &b, true);
        double ev = fabs(hard - soft) / fabs(hard);
        double eg = g && b.student->grad ? kt_rel_error(b.student->grad, g) : INFINITY;
        kt_check(ev <= 1e-6 && eg <= 1e-6, name, "values %.9g / %.9g, gradient rel error %.3g",
                 hard, soft, eg);
        kd_tensor_free(g);
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}

/* ------------------------------------------------------------ contract */

static void test_teacher_constant(void)
{
    const char *name = "kd leaves a teacher that requires grad without a gradient";
    kt_loss l;
    if (!kt_loss_open(name, "kd", "{\"logit_stand\": true}", KD_F32, 1, &l))
        return;
    kd_rng rng = kd_rng_make(8, 8, 0);
    kt_loss_batch b = {0};
    b.student = make_logits(KD_F32, 4, 10, UNIFORM, NULL, &rng);
    b.teacher = make_logits(KD_F32, 4, 10, UNIFORM, NULL, &rng);
    kd_tensor_set_requires_grad(b.teacher, true);
    double v = kt_loss_step(&l, &b, true);
    kt_check(!isnan(v) && b.student->grad && !b.teacher->grad, name,
             "student grad %s, teacher grad %s", b.student->grad ? "set" : "missing",
             b.teacher->grad ? "set" : "absent");
    kt_loss_batch_free(&b);
    kt_loss_close(&l);
}

static void test_needs_and_terms(void)
{
    kt_loss l;
    kd_loss_needs needs;
    if (kt_loss_open("ce needs", "ce", "{\"tap\": \"aux_logits\"}", KD_F32, 1, &l)) {
        kd_status st = l.vt->needs(l.self, &needs);
        kt_check(st == KD_OK && needs.n_student == 1 &&
                     strcmp(needs.student[0], "aux_logits") == 0 && needs.n_teacher == 0,
                 "ce needs its tap and no teacher", "n_student %d, n_teacher %d",
                 needs.n_student, needs.n_teacher);
        kt_loss_close(&l);
    }
    if (kt_loss_open("kd needs", "kd", "{\"student_tap\": \"head\", \"teacher_tap\": \"fc\"}", KD_F32, 1, &l)) {
        kd_status st = l.vt->needs(l.self, &needs);
        kt_check(st == KD_OK && needs.n_student == 1 && strcmp(needs.student[0], "head") == 0 &&
                     needs.n_teacher == 1 && strcmp(needs.teacher[0], "fc") == 0,
                 "kd needs its student and teacher taps", "got %d/%d taps", needs.n_student,
                 needs.n_teacher);
        kt_loss_close(&l);
    }
    if (kt_loss_open("logit_stand needs", "logit_stand", "{}", KD_F32, 1, &l)) {
        kd_status st = l.vt->needs(l.self, &needs);
        kt_check(st == KD_OK && strcmp(needs.student[0], "logits") == 0 &&
                     needs.n_teacher == 1 && strcmp(needs.teacher[0], "logits") == 0,
                 "logit_stand needs both logits taps by default", "status %d", (int)st);
        kt_loss_close(&l);
    }

    static const struct {
        const char *provider, *term;
    } terms[] = {{"ce", "ce"}, {"kd", "kd"}, {"logit_stand", "kd_ls"}};
    for (size_t k = 0; k < sizeof terms / sizeof terms[0]; k++) {
        char name[96];
        snprintf(name, sizeof name, "%s reports its value as term '%s'", terms[k].provider,
                 terms[k].term);
        if (!kt_loss_open(name, terms[k].provider, "{}", KD_F32, 1, &l))
            continue;
        kd_rng rng = kd_rng_make(3, k, 0);
        kt_loss_batch b = {0};
        b.student = make_logits(KD_F32, 4, 10, UNIFORM, NULL, &rng);
        b.labels = make_labels(4, 10, &rng);
        if (k > 0)
            b.teacher = make_logits(KD_F32, 4, 10, UNIFORM, NULL, &rng);
        kd_scope_begin();
        kd_loss_result r;
        kd_status st = kt_loss_forward(&l, &b, &r);
        kt_check(st == KD_OK && r.loss && r.loss->ndim == 0 && r.n_terms >= 1 && r.terms &&
                     strcmp(r.terms[0].name, terms[k].term) == 0 &&
                     kd_tensor_get(r.terms[0].value, 0) == kd_tensor_get(r.loss, 0),
                 name, "status %d, %d terms", (int)st, r.n_terms);
        kd_scope_end();
        kt_loss_batch_free(&b);
        kt_loss_close(&l);
    }
}

/* ------------------------------------------------------------ errors */

/* bind() arguments for one student and one teacher tap. */
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

static void test_forward_errors(void)
{
    kd_rng rng = kd_rng_make(77, 0, 0);
    kt_loss ce, kd, ls, ls_bind;
    bool ok = kt_loss_open("errors", "ce", "{}", KD_F32, 1, &ce);
    ok = kt_loss_open("errors", "kd", "{}", KD_F32, 1, &kd) && ok;
    ok = kt_loss_open("errors", "logit_stand", "{}", KD_F32, 1, &ls) && ok;
    ok = kt_loss_open("errors", "logit_stand", "{}", KD_F32, 1, &ls_bind) && ok;
    if (!ok)
        goto close;
    kt_loss_batch b = {0};
    b.student = make_logits(KD_F32, 4, 10, UNIFORM, NULL, &rng);

    b.teacher = make_logits(KD_F32, 4, 12, UNIFORM, NULL, &rng);
    kt_expect_error("kd: student and teacher classes differ", forward_error(&kd, &b), "kd:",
                 "[4, 12]");
    kd_tensor_free(b.teacher);
    b.teacher = make_logits(KD_F32, 3, 10, UNIFORM, NULL, &rng);
    kt_expect_error("kd: student and teacher batches differ", forward_error(&kd, &b), "kd:",
                 "[3, 10]");
    kd_tensor_free(b.teacher);
    b.teacher = NULL;
    kt_expect_error("kd: no teacher tensor", forward_error(&kd, &b), "kd:", "teacher");
    kt_expect_error("logit_stand: no teacher tensor", forward_error(&ls, &b), "logit_stand:",
                 "teacher");

    kt_loss_batch one = {0};
    one.student = make_logits(KD_F32, 4, 1, UNIFORM, NULL, &rng);
    one.teacher = make_logits(KD_F32, 4, 1, UNIFORM, NULL, &rng);
    kt_expect_error("logit_stand: one class cannot be z-scored", forward_error(&ls, &one),
                 "logit_stand:", "at least 2 classes");
    kt_loss_batch_free(&one);

    const int64_t n = 4;
    const int64_t bad_high[4] = {0, 10, 3, 2}, bad_low[4] = {0, 1, -2, 2};
    b.labels = kd_tensor_from_data(KD_I64, 1, &n, bad_high);
    kt_expect_error("ce: label 10 of 10 classes", forward_error(&ce, &b), "ce", "label 10");
    kd_tensor_free(b.labels);
    b.labels = kd_tensor_from_data(KD_I64, 1, &n, bad_low);
    /* -1 is KD_LABEL_NONE, an unlabeled row ce leaves out (test_ssld) */
    kt_expect_error("ce: label -2", forward_error(&ce, &b), "ce", "label -2");
    kd_tensor_free(b.labels);
    b.labels = NULL;
    kt_expect_error("ce: neither labels nor soft targets", forward_error(&ce, &b), "ce:",
                 "labels");
    b.labels = make_labels(4, 10, &rng);
    kd_tensor *nine = make_labels(4, 9, &rng);
    b.soft = make_soft(KD_F32, nine, 9, false, &rng);
    kt_expect_error("ce: soft targets of the wrong shape", forward_error(&ce, &b), "ce:",
                 "[4, 9]");
    kd_tensor_free(nine);
    kt_loss_batch_free(&b);

    const int64_t flat[1] = {10};
    b.student = kd_tensor_zeros(KD_F32, KD_CPU, 1, flat);
    b.labels = make_labels(1, 10, &rng);
    kt_expect_error("ce: 1-D logits", forward_error(&ce, &b), "ce:", "[10]");
    kt_loss_batch_free(&b);

    /* bind() sees the shapes before training: the pre-flight check. */
    const kd_tap_shape v10 = {2, {1, 10}}, v100 = {2, {1, 100}}, v1 = {2, {1, 1}},
                       map = {4, {1, 10, 4, 4}};
    kt_expect_error("kd bind: classes differ", kd.vt->bind(kd.self, &bind_args(&v10, &v100)),
                 "kd:", "[1, 100]");
    kt_check(kd.vt->bind(kd.self, &bind_args(&v10, &v10)) == KD_OK, "kd bind: matching logits",
             "%s", kd_last_error());
    kt_expect_error("logit_stand bind: one class",
                 ls_bind.vt->bind(ls_bind.self, &bind_args(&v1, &v1)), "logit_stand:",
                 "at least 2 classes");
    kt_expect_error("ce bind: a feature map is not logits",
                 ce.vt->bind(ce.self, &bind_args(&map, NULL)), "ce:", "4 dims");
    kt_check(ce.vt->bind(ce.self, &bind_args(&v10, NULL)) == KD_OK, "ce bind: logits", "%s",
             kd_last_error());
close:
    kt_loss_close(&ce);
    kt_loss_close(&kd);
    kt_loss_close(&ls);
    kt_loss_close(&ls_bind);
}

/* The schemas refuse what the losses cannot take. */
static void test_param_errors(void)
{
    static const struct {
        const char *provider, *json;
    } bad[] = {
        {"kd", "{\"temperature\": 0}"},
        {"kd", "{\"temperature\": -1}"},
        {"ce", "{\"label_smoothing\": 1}"},
        {"ce", "{\"label_smoothing\": -0.1}"},
        {"logit_stand", "{\"base_temperature\": 0}"},
        {"logit_stand", "{\"temperature\": 2}"},
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

int main(void)
{
    test_parity();
    test_finite_differences();
    test_kd_matches_logit_stand();
    test_scale_invariance();
    test_identical_logits();
    test_ce_one_hot();
    test_teacher_constant();
    test_needs_and_terms();
    test_forward_errors();
    test_param_errors();
    kt_plugins_close();
    return kt_finish();
}
