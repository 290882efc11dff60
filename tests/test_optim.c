/* SGD and learning-rate schedules: parity with torch.optim (one Python
 * process for the whole file), checkpoint exactness, option errors. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../plugins/optim/schedulers/lr_schedule.h"
#include "../plugins/optim/sgd/sgd_update.h"
#include "harness.h"

#define SGD_STEPS 20
#define MAX_PARAMS 6
#define MAX_TENSORS 1024
#define MAX_META 64

/* ------------------------------------------------------------ cases */

typedef struct sgd_case {
    const char *name;
    kd_dtype dtype;
    kd_sgd_options opt;
} sgd_case;

static const sgd_case SGD_CASES[] = {
    {"momentum", KD_F32, {.momentum = 0.9, .weight_decay = 5e-4}},
    {"nesterov", KD_F32, {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}},
    {"dampening 0.1", KD_F32, {.momentum = 0.9, .dampening = 0.1, .weight_decay = 5e-4}},
    {"no momentum", KD_F32, {.weight_decay = 5e-4}},
    {"nesterov f64", KD_F64, {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}},
};
#define N_SGD_CASES (int)(sizeof SGD_CASES / sizeof SGD_CASES[0])

/* The parameters of every case: a conv weight, its bias (no decay), a
 * linear weight that has no gradient on some steps, a BN-like weight (no
 * decay), and one big enough for the threaded loop. */
static const struct {
    int ndim;
    int64_t shape[4];
    bool no_decay;
} PARAMS[] = {
    {4, {8, 3, 3, 3}, false}, {1, {37}, true},   {2, {5, 7}, false},
    {1, {16}, true},          {1, {40001}, false},
};
#define N_PARAMS (int)(sizeof PARAMS / sizeof PARAMS[0])

/* Parameter 2 has no gradient on steps 0 and 7: its buffer starts late. */
static bool has_grad(int k, int step)
{
    return !(k == 2 && (step == 0 || step == 7));
}

static double lr_at(int step)
{
    return 0.1 * (1.0 - step / 40.0);
}

typedef struct lr_case {
    const char *name;
    kd_lr_schedule s;
    int points;
    const char *python; /* "torch" or "formula" option, as JSON */
} lr_case;

static const lr_case LR_CASES[] = {
    {"step", {.kind = KD_LR_STEP, .base_lr = 0.1, .steps_per_epoch = 1, .gamma = 0.1,
              .step_size = 7},
     30, "\"torch\": \"StepLR(opt, step_size=7, gamma=0.1)\""},
    {"multistep", {.kind = KD_LR_MULTISTEP, .base_lr = 0.05, .steps_per_epoch = 1,
                   .gamma = 0.2, .n_milestones = 3, .milestones = {8, 15, 22}},
     30, "\"torch\": \"MultiStepLR(opt, milestones=[8, 15, 22], gamma=0.2)\""},
    {"cosine", {.kind = KD_LR_COSINE, .base_lr = 0.1, .steps_per_epoch = 1,
                .total_epochs = 30, .eta_min = 1e-4},
     30, "\"torch\": \"CosineAnnealingLR(opt, T_max=30, eta_min=1e-4)\""},
    {"cosine to 0", {.kind = KD_LR_COSINE, .base_lr = 0.4, .steps_per_epoch = 1,
                     .total_epochs = 30},
     30, "\"torch\": \"CosineAnnealingLR(opt, T_max=30)\""},
    {"cosine warm-up per step",
     {.kind = KD_LR_COSINE, .granularity = KD_LR_PER_STEP, .base_lr = 0.1, .steps_per_epoch = 4,
      .total_epochs = 30, .eta_min = 1e-5, .warmup_epochs = 5, .warmup_start_factor = 0.01},
     120,
     "\"steps_per_epoch\": 4, \"formula\": \"0.001 + t * (0.1 - 0.001) / 5 if t < 5 else "
     "1e-5 + (0.1 - 1e-5) * (1 + math.cos(math.pi * t / 30)) / 2\""},
    {"multistep warm-up per epoch",
     {.kind = KD_LR_MULTISTEP, .base_lr = 0.05, .steps_per_epoch = 1, .gamma = 0.1,
      .n_milestones = 2, .milestones = {10, 20}, .warmup_epochs = 3,
      .warmup_start_factor = 0.1},
     30,
     "\"steps_per_epoch\": 1, \"formula\": \"0.005 + t * (0.05 - 0.005) / 3 if t < 3 else "
     "0.05 * 0.1 ** ((t >= 10) + (t >= 20))\""},
};
#define N_LR_CASES (int)(sizeof LR_CASES / sizeof LR_CASES[0])

/* ------------------------------------------------------------ helpers */

/* Tensors and strings the parity run keeps until it ends. */
typedef struct bag {
    int nt, nm;
    const char *names[MAX_TENSORS];
    kd_tensor *tensors[MAX_TENSORS];
    const char *meta[2 * MAX_META];
    char *strings[MAX_TENSORS + 2 * MAX_META];
    int ns;
} bag;

static char *bag_str(bag *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *bag_str(bag *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = malloc((size_t)len + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->strings[b->ns++] = s;
    return s;
}

static void bag_free(bag *b)
{
    for (int i = 0; i < b->ns; i++)
        free(b->strings[i]);
}

static kd_tensor *make_param(kd_dtype dtype, int k, kd_rng *rng)
{
    return kd_tensor_keep(kt_uniform(dtype, PARAMS[k].ndim, PARAMS[k].shape, rng, -1, 1));
}

/* Gives p a gradient equal to g (or none when g is NULL). */
static void set_grad(kd_tensor *p, const kd_tensor *g)
{
    if (!g) {
        kd_tensor_zero_grad(p);
        return;
    }
    if (!p->grad)
        p->grad = kd_tensor_keep(kd_tensor_empty_like(p));
    kd_tensor_copy_(p->grad, g);
}

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

/* Number of elements that differ in their bits. */
static int64_t bits_differ(const kd_tensor *a, const kd_tensor *b)
{
    int64_t n = kd_tensor_numel(a), diff = 0;
    size_t size = kd_dtype_size(a->dtype);
    const char *x = kd_tensor_data(a), *y = kd_tensor_data(b);
    for (int64_t i = 0; i < n; i++)
        diff += memcmp(x + i * (int64_t)size, y + i * (int64_t)size, size) != 0;
    return diff;
}

/* ------------------------------------------------------------ parity */

typedef struct sgd_run {
    kd_tensor *params[N_PARAMS];
    kd_sgd *opt;
    bool failed;
} sgd_run;

/* Runs case c in kdengine, adding its inputs to the bag. */
static void run_sgd_case(int c, sgd_run *run, bag *b)
{
    const sgd_case *sc = &SGD_CASES[c];
    kd_rng rng = kd_rng_make(1000 + (uint64_t)c, 1, 0);
    bool no_decay[N_PARAMS];
    for (int k = 0; k < N_PARAMS; k++) {
        run->params[k] = make_param(sc->dtype, k, &rng);
        no_decay[k] = PARAMS[k].no_decay;
        b->names[b->nt] = bag_str(b, "sgd%d.p%d", c, k);
        b->tensors[b->nt++] = kd_tensor_to_device(run->params[k], KD_CPU);
    }
    if (kd_sgd_new(&sc->opt, N_PARAMS, run->params, no_decay, &run->opt) != KD_OK) {
        kt_fail(sc->name, "kd_sgd_new: %s", kd_last_error());
        run->failed = true;
        return;
    }
    char lrs[1024] = "", flags[64] = "";
    for (int step = 0; step < SGD_STEPS; step++) {
        for (int k = 0; k < N_PARAMS; k++) {
            kd_tensor *g = NULL;
            if (has_grad(k, step)) {
                g = kt_uniform(sc->dtype, PARAMS[k].ndim, PARAMS[k].shape, &rng, -1, 1);
                b->names[b->nt] = bag_str(b, "sgd%d.g%d.%d", c, k, step);
                b->tensors[b->nt++] = g;
            }
            set_grad(run->params[k], g);
        }
        if (kd_sgd_step(run->opt, lr_at(step)) != KD_OK) {
            kt_fail(sc->name, "step %d: %s", step, kd_last_error());
            run->failed = true;
            return;
        }
        size_t len = strlen(lrs);
        snprintf(lrs + len, sizeof lrs - len, "%s%.17g", step ? ", " : "", lr_at(step));
    }
    for (int k = 0; k < N_PARAMS; k++) {
        size_t len = strlen(flags);
        snprintf(flags + len, sizeof flags - len, "%s%s", k ? ", " : "",
                 PARAMS[k].no_decay ? "true" : "false");
    }
    b->meta[2 * b->nm] = bag_str(b, "sgd%d.options", c);
    b->meta[2 * b->nm + 1] =
        bag_str(b,
                "{\"momentum\": %.17g, \"dampening\": %.17g, \"weight_decay\": %.17g, "
                "\"nesterov\": %s, \"no_decay\": [%s], \"lrs\": [%s]}",
                sc->opt.momentum, sc->opt.dampening, sc->opt.weight_decay,
                sc->opt.nesterov ? "true" : "false", flags, lrs);
    b->nm++;
}

static void compare_sgd_case(int c, sgd_run *run, const kd_safetensors *ref)
{
    const sgd_case *sc = &SGD_CASES[c];
    char name[96], key[64];
    snprintf(name, sizeof name, "sgd parity %s", sc->name);
    snprintf(key, sizeof key, "sgd%d.error", c);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "torch: %s", err);
        return;
    }
    double worst = 0;
    int64_t differ = 0, total = 0;
    char where[64] = "";
    for (int k = 0; k < N_PARAMS; k++) {
        for (int which = 0; which < 2; which++) {
            kd_tensor *mine = run->params[k];
            if (which == 1) {
                if (sc->opt.momentum == 0)
                    continue;
                mine = kd_sgd_state_tensor(run->opt, k);
            }
            snprintf(key, sizeof key, "sgd%d.%c%d", c, which ? 'b' : 'p', k);
            kd_tensor *theirs = kd_safetensors_load(ref, key, sc->dtype);
            if (!theirs) {
                kt_fail(name, "torch result %s: %s", key, kd_last_error());
                return;
            }
            double e = kt_rel_error(mine, theirs);
            differ += bits_differ(mine, theirs);
            total += kd_tensor_numel(mine);
            if (e > worst || !where[0]) {
                worst = e > worst ? e : worst;
                snprintf(where, sizeof where, "%s", key);
            }
        }
    }
    /* Same operations in the same order: rounding differences only. */
    double tol = sc->dtype == KD_F32 ? 1e-6 : 1e-14;
    kt_check(worst <= tol, name, "relative error %.3g > %.3g (%s)", worst, tol, where);
    snprintf(name, sizeof name, "sgd bit-identical %s", sc->name);
    const char *fma = kd_safetensors_metadata(ref, "torch_fma");
    if (!fma || strcmp(fma, "1") != 0) {
        kt_skip(name, "torch does not fuse multiply-adds on this CPU, so only the "
                      "tolerance applies");
        return;
    }
    kt_check(differ == 0, name, "%lld of %lld elements differ from torch in their bits",
             (long long)differ, (long long)total);
}

static void compare_lr_case(int c, const kd_safetensors *ref)
{
    const lr_case *lc = &LR_CASES[c];
    char name[96], key[64];
    snprintf(name, sizeof name, "lr parity %s", lc->name);
    snprintf(key, sizeof key, "lr%d.error", c);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "python: %s", err);
        return;
    }
    snprintf(key, sizeof key, "lr%d.lr", c);
    kd_tensor *theirs = kd_safetensors_load(ref, key, KD_F64);
    if (!theirs || kd_tensor_numel(theirs) != lc->points) {
        kt_fail(name, "python result: %s", theirs ? "wrong length" : kd_last_error());
        return;
    }
    double worst = 0;
    int at = 0;
    for (int s = 0; s < lc->points; s++) {
        double lr;
        if (kd_lr_at_step(&lc->s, s, &lr) != KD_OK) {
            kt_fail(name, "step %d: %s", s, kd_last_error());
            return;
        }
        /* torch steps StepLR and CosineAnnealingLR recursively: a few ulps. */
        double e = fabs(lr - kd_tensor_get(theirs, s)) / lc->s.base_lr;
        if (e > worst) {
            worst = e;
            at = s;
        }
    }
    kt_check(worst <= 1e-12, name, "error %.3g (relative to base) at step %d", worst, at);
}

static void parity(void)
{
    if (!torch_available()) {
        kt_skip("optim parity", "torch is not importable by %s (install python3-torch)",
                KD_TORCH_PYTHON);
        return;
    }
    char dir[] = "/tmp/kdoptim.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("optim parity", "cannot make a temporary directory");
        return;
    }
    char in_path[128], out_path[128];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);

    kd_scope_begin();
    static bag b;
    memset(&b, 0, sizeof b);
    sgd_run runs[N_SGD_CASES];
    memset(runs, 0, sizeof runs);
    for (int c = 0; c < N_SGD_CASES; c++)
        run_sgd_case(c, &runs[c], &b);
    for (int c = 0; c < N_LR_CASES; c++) {
        const lr_case *lc = &LR_CASES[c];
        b.meta[2 * b.nm] = bag_str(&b, "lr%d.options", c);
        b.meta[2 * b.nm + 1] = bag_str(&b, "{\"base\": %.17g, \"points\": %d, %s}",
                                       lc->s.base_lr, lc->points, lc->python);
        b.nm++;
    }
    b.meta[2 * b.nm] = "sgd_cases";
    b.meta[2 * b.nm + 1] = bag_str(&b, "%d", N_SGD_CASES);
    b.nm++;
    b.meta[2 * b.nm] = "lr_cases";
    b.meta[2 * b.nm + 1] = bag_str(&b, "%d", N_LR_CASES);
    b.nm++;

    char script[512], cmd[1536];
    kd_safetensors *ref = NULL;
    if (kd_safetensors_save(in_path, b.nt, b.names, b.tensors, b.nm, b.meta) != KD_OK) {
        kt_fail("optim parity", "writing %s: %s", in_path, kd_last_error());
        goto cleanup;
    }
    kt_source_path("tests/parity/torch_optim.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (system(cmd) != 0) {
        kt_fail("optim parity", "the torch reference failed: %s", cmd);
        goto cleanup;
    }
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("optim parity", "reading the torch results: %s", kd_last_error());
        goto cleanup;
    }
    for (int c = 0; c < N_SGD_CASES; c++)
        if (!runs[c].failed)
            compare_sgd_case(c, &runs[c], ref);
    for (int c = 0; c < N_LR_CASES; c++)
        compare_lr_case(c, ref);
cleanup:
    kd_safetensors_close(ref);
    kd_scope_end();
    for (int c = 0; c < N_SGD_CASES; c++) {
        kd_sgd_free(runs[c].opt);
        for (int k = 0; k < N_PARAMS; k++)
            kd_tensor_free(runs[c].params[k]);
    }
    bag_free(&b);
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
}

/* ------------------------------------------------------------ checkpoint */

/* Steps 4 times (parameter 1 gets no gradient until the last), saves
 * parameters and optimizer state to a file, steps 6 more; restores the
 * file into a fresh optimizer and steps the same 6: the bits must match. */
static void test_checkpoint(void)
{
    const char *name = "sgd state save/restore is exact";
    const kd_sgd_options o = {.momentum = 0.9, .dampening = 0.1, .weight_decay = 5e-4};
    enum { NP = 3, BEFORE = 4, AFTER = 6 };
    kd_rng rng = kd_rng_make(77, 3, 0);
    kd_tensor *p[NP], *q[NP] = {0}, *first[NP];
    for (int k = 0; k < NP; k++)
        p[k] = make_param(KD_F32, k, &rng);
    kd_scope_begin();
    kd_tensor *g[BEFORE + AFTER][NP];
    for (int s = 0; s < BEFORE + AFTER; s++)
        for (int k = 0; k < NP; k++)
            g[s][k] = kt_uniform(KD_F32, PARAMS[k].ndim, PARAMS[k].shape, &rng, -1, 1);
    kd_sgd *a = NULL, *r = NULL;
    char path[] = "/tmp/kdoptim-ckpt.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        kt_fail(name, "cannot make a temporary file");
        goto done;
    }
    close(fd);
    if (kd_sgd_new(&o, NP, p, NULL, &a) != KD_OK)
        goto fail;
    for (int s = 0; s < BEFORE; s++) {
        for (int k = 0; k < NP; k++)
            set_grad(p[k], k == 1 && s < BEFORE - 1 ? NULL : g[s][k]);
        if (kd_sgd_step(a, 0.1) != KD_OK)
            goto fail;
    }
    const char *names[NP + 2 * NP + 1];
    kd_tensor *tensors[NP + 2 * NP + 1];
    int n = 0;
    for (int k = 0; k < NP; k++) {
        names[n] = k == 0 ? "p0" : k == 1 ? "p1" : "p2";
        tensors[n++] = p[k];
    }
    for (int i = 0; i < kd_sgd_state_count(a); i++) {
        names[n] = kd_sgd_state_name(a, i);
        tensors[n++] = kd_sgd_state_tensor(a, i);
    }
    if (kd_safetensors_save(path, n, names, tensors, 0, NULL) != KD_OK)
        goto fail;
    for (int s = BEFORE; s < BEFORE + AFTER; s++) {
        for (int k = 0; k < NP; k++)
            set_grad(p[k], g[s][k]);
        if (kd_sgd_step(a, 0.05) != KD_OK)
            goto fail;
    }
    for (int k = 0; k < NP; k++)
        first[k] = kd_tensor_to_device(p[k], KD_CPU);

    kd_safetensors *f;
    if (kd_safetensors_open(path, &f) != KD_OK)
        goto fail;
    for (int k = 0; k < NP; k++)
        q[k] = kd_tensor_keep(kd_safetensors_load(f, names[k], KD_F32));
    bool ok = kd_sgd_new(&o, NP, q, NULL, &r) == KD_OK;
    for (int i = 0; ok && i < kd_sgd_state_count(r); i++) {
        kd_tensor *dst = kd_sgd_state_tensor(r, i);
        kd_tensor *src = kd_safetensors_load(f, kd_sgd_state_name(r, i), dst->dtype);
        ok = src && kd_tensor_copy_(dst, src) == KD_OK;
    }
    kd_safetensors_close(f);
    for (int s = BEFORE; ok && s < BEFORE + AFTER; s++) {
        for (int k = 0; k < NP; k++)
            set_grad(q[k], g[s][k]);
        ok = kd_sgd_step(r, 0.05) == KD_OK;
    }
    if (!ok)
        goto fail;
    int64_t differ = 0;
    for (int k = 0; k < NP; k++)
        differ += bits_differ(first[k], q[k]) + bits_differ(kd_sgd_state_tensor(a, k),
                                                            kd_sgd_state_tensor(r, k));
    kt_check(differ == 0, name, "%lld elements differ after the restore", (long long)differ);
    goto done;
fail:
    kt_fail(name, "%s", kd_last_error());
done:
    kd_sgd_free(a);
    kd_sgd_free(r);
    for (int k = 0; k < NP; k++) {
        kd_tensor_free(p[k]);
        kd_tensor_free(q[k]);
    }
    kd_scope_end();
    unlink(path);
}

/* ------------------------------------------------------------ behaviour */

static void test_skip_and_scope(void)
{
    kd_rng rng = kd_rng_make(5, 0, 0);
    kd_tensor *p = make_param(KD_F32, 1, &rng);
    kd_tensor *before = kd_tensor_keep(kd_tensor_to_device(p, KD_CPU));
    kd_sgd *s = NULL;
    /* Made inside a scope, the buffers must outlive it. */
    kd_scope_begin();
    const kd_sgd_options o = {.momentum = 0.9};
    kd_status st = kd_sgd_new(&o, 1, &p, NULL, &s);
    kd_scope_end();
    if (kt_check(st == KD_OK, "sgd new inside a scope", "%s", kd_last_error())) {
        st = kd_sgd_step(s, 0.1);
        kt_check(st == KD_OK && bits_differ(p, before) == 0 &&
                     ((uint8_t *)kd_tensor_data(kd_sgd_state_tensor(s, 1)))[0] == 0,
                 "sgd skips a parameter without grad", "status %s", kd_status_name(st));
        set_grad(p, before);
        st = kd_sgd_step(s, 0.1);
        kt_check(st == KD_OK && bits_differ(kd_sgd_state_tensor(s, 0), before) == 0,
                 "sgd first buffer is the gradient", "status %s", kd_status_name(st));
    }
    kd_sgd_free(s);
    kd_tensor_free(p);
    kd_tensor_free(before);
}

static void test_default_no_decay(void)
{
    kd_tensor *w = kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){4, 3});
    kd_tensor *v = kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){4});
    kd_tensor *s = kd_tensor_zeros(KD_F32, KD_CPU, 0, NULL);
    kt_check(!kd_sgd_default_no_decay("fc.weight", w) && kd_sgd_default_no_decay("fc.bias", v) &&
                 kd_sgd_default_no_decay("bn1.weight", v) &&
                 kd_sgd_default_no_decay("logit_scale", s) &&
                 kd_sgd_default_no_decay("odd.bias", w) && !kd_sgd_default_no_decay("bias", w) &&
                 !kd_sgd_default_no_decay(NULL, w),
             "sgd default no-decay rule", "ndim <= 1 or a name ending in .bias");
    kd_tensor_free(w);
    kd_tensor_free(v);
    kd_tensor_free(s);
}

static void expect_error(const char *name, kd_status st, const char *needle)
{
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), needle), name,
             "status %s, message \"%s\" (expected \"%s\")", kd_status_name(st), kd_last_error(),
             needle);
}

static void test_sgd_errors(void)
{
    kd_tensor *p = kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){2, 3});
    kd_sgd *s = NULL;
    expect_error("sgd error momentum", kd_sgd_new(&(kd_sgd_options){.momentum = -0.1}, 1, &p,
                                                  NULL, &s),
                 "momentum must be");
    expect_error("sgd error dampening",
                 kd_sgd_new(&(kd_sgd_options){.momentum = 0.9, .dampening = 1.5}, 1, &p, NULL,
                            &s),
                 "dampening must be in [0, 1], got 1.5");
    expect_error("sgd error weight decay",
                 kd_sgd_new(&(kd_sgd_options){.weight_decay = -1}, 1, &p, NULL, &s),
                 "weight_decay must be");
    expect_error("sgd error nesterov dampening",
                 kd_sgd_new(&(kd_sgd_options){.momentum = 0.9, .dampening = 0.1,
                                              .nesterov = true},
                            1, &p, NULL, &s),
                 "nesterov needs momentum > 0 and dampening 0");
    expect_error("sgd error nesterov momentum",
                 kd_sgd_new(&(kd_sgd_options){.nesterov = true}, 1, &p, NULL, &s),
                 "nesterov needs");
    expect_error("sgd error no params", kd_sgd_new(&(kd_sgd_options){0}, 0, &p, NULL, &s),
                 "no parameters");
    kd_tensor *h = kd_tensor_zeros(KD_F16, KD_CPU, 1, (int64_t[]){3});
    kd_tensor *both[2] = {p, h};
    kd_status st = kd_sgd_new(&(kd_sgd_options){0}, 2, both, NULL, &s);
    kt_check(st == KD_ERR_UNSUPPORTED && strstr(kd_last_error(), "parameter 1 is f16"),
             "sgd error dtype", "status %s, message \"%s\"", kd_status_name(st),
             kd_last_error());
    if (kd_sgd_new(&(kd_sgd_options){.momentum = 0.5}, 1, &p, NULL, &s) == KD_OK) {
        expect_error("sgd error lr", kd_sgd_step(s, -0.1), "learning rate must be");
        p->grad = kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){3, 2});
        expect_error("sgd error grad shape", kd_sgd_step(s, 0.1),
                     "gradient of parameter 0 (f32 [3, 2]) does not match it (f32 [2, 3])");
        kd_sgd_free(s);
    } else {
        kt_fail("sgd error lr", "kd_sgd_new: %s", kd_last_error());
    }
    kd_tensor_free(p);
    kd_tensor_free(h);
}

static void test_lr_errors(void)
{
    const kd_lr_schedule ok = {.kind = KD_LR_MULTISTEP, .base_lr = 0.1, .steps_per_epoch = 10,
                               .gamma = 0.1, .n_milestones = 2, .milestones = {5, 8},
                               .warmup_epochs = 1, .warmup_start_factor = 0.1};
    double lr;
    kt_check(kd_lr_at_step(&ok, 0, &lr) == KD_OK && lr == 0.1 * 0.1, "lr valid schedule", "%s",
             kd_last_error());
    kd_lr_schedule s = ok;
    s.milestones[1] = 5;
    expect_error("lr error milestones", kd_lr_validate(&s),
                 "milestones must increase, but 5 follows 5");
    s = ok;
    s.milestones[0] = 0;
    expect_error("lr error milestone 0", kd_lr_validate(&s), "milestone 0 is 0");
    s = ok;
    s.gamma = 0;
    expect_error("lr error gamma", kd_lr_validate(&s), "gamma must be finite and > 0, got 0");
    s = ok;
    s.warmup_epochs = -1;
    expect_error("lr error warm-up", kd_lr_validate(&s), "warmup_epochs must be");
    s = ok;
    s.warmup_start_factor = 2;
    expect_error("lr error warm-up factor", kd_lr_validate(&s), "warmup_start_factor");
    s = ok;
    s.steps_per_epoch = 0;
    expect_error("lr error steps per epoch", kd_lr_validate(&s), "steps_per_epoch must be >= 1");
    s = ok;
    s.base_lr = -0.1;
    expect_error("lr error base", kd_lr_validate(&s), "base_lr must be");
    expect_error("lr error negative step", kd_lr_at_step(&ok, -1, &lr), "step must be >= 0");
    expect_error("lr error negative epoch", kd_lr_at_epoch(&ok, -0.5, &lr),
                 "epoch must be finite and >= 0");
    const kd_lr_schedule step = {.kind = KD_LR_STEP, .base_lr = 0.1, .steps_per_epoch = 1,
                                 .gamma = 0.5};
    expect_error("lr error step size", kd_lr_validate(&step), "step_size must be >= 1");
    const kd_lr_schedule cos = {.kind = KD_LR_COSINE, .base_lr = 0.1, .steps_per_epoch = 1,
                                .total_epochs = 10, .eta_min = 0.2};
    expect_error("lr error eta_min", kd_lr_validate(&cos), "eta_min must be in [0, base_lr");
    kd_lr_schedule cos0 = cos;
    cos0.eta_min = 0;
    cos0.total_epochs = 0;
    expect_error("lr error cosine total", kd_lr_validate(&cos0), "total_epochs must be");
}

static void test_lr_behaviour(void)
{
    const kd_lr_schedule cos = {.kind = KD_LR_COSINE, .base_lr = 0.1, .steps_per_epoch = 3,
                                .total_epochs = 10, .eta_min = 0.001};
    double a, b;
    kd_lr_at_step(&cos, 3 * 10, &a);
    kd_lr_at_step(&cos, 3 * 12 + 1, &b);
    kt_check(a == 0.001 && b == 0.001, "lr cosine stays at eta_min past the total",
             "%g, %g", a, b);
    kd_lr_at_step(&cos, 4, &a);
    kd_lr_at_epoch(&cos, 1, &b);
    kt_check(a == b, "lr per-epoch granularity holds within an epoch", "%g != %g", a, b);
    kd_lr_schedule ps = cos;
    ps.granularity = KD_LR_PER_STEP;
    kd_lr_at_step(&ps, 4, &a);
    kd_lr_at_epoch(&cos, 4.0 / 3.0, &b);
    kt_check(a == b, "lr per-step granularity uses the epoch fraction", "%g != %g", a, b);
}

int main(int argc, char **argv)
{
    bool no_parity = argc > 1 && strcmp(argv[1], "--no-parity") == 0;
    test_default_no_decay();
    test_skip_and_scope();
    test_sgd_errors();
    test_lr_errors();
    test_lr_behaviour();
    test_checkpoint();
    if (no_parity)
        kt_skip("optim parity", "--no-parity");
    else
        parity();
    return kt_finish();
}
