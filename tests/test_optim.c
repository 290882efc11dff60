/* SGD and learning-rate schedules, as kernels and through the sgd and
 * schedulers plugins: parity with torch.optim (one Python process for the
 * whole file), checkpoint exactness, option errors. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../plugins/optim/schedulers/lr_schedule.h"
#include "../plugins/optim/sgd/sgd_update.h"
#include "harness.h"
#include "plugin_fixture.h"

#define SGD_STEPS 20
#define MAX_PARAMS 6
#define MAX_TENSORS 1024
#define MAX_META 64

/* ------------------------------------------------------------ cases */

/* A case runs the kernel directly, or the "sgd" plugin with the same
 * options as its parameters. decay_all is the plugin's no_decay = false:
 * the no-decay flags the parameters carry are then ignored. */
typedef struct sgd_case {
    const char *name;
    kd_dtype dtype;
    kd_sgd_options opt;
    bool plugin, decay_all;
} sgd_case;

static const sgd_case SGD_CASES[] = {
    {"momentum", KD_F32, {.momentum = 0.9, .weight_decay = 5e-4}, false, false},
    {"nesterov", KD_F32, {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}, false,
     false},
    {"dampening 0.1", KD_F32, {.momentum = 0.9, .dampening = 0.1, .weight_decay = 5e-4}, false,
     false},
    {"no momentum", KD_F32, {.weight_decay = 5e-4}, false, false},
    {"nesterov f64", KD_F64, {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}, false,
     false},
    {"plugin no-decay flags", KD_F32, {.momentum = 0.9, .weight_decay = 5e-4}, true, false},
    {"plugin nesterov decay-all", KD_F32, {.momentum = 0.9, .weight_decay = 1e-3,
                                           .nesterov = true}, true, true},
};
#define N_SGD_CASES (int)(sizeof SGD_CASES / sizeof SGD_CASES[0])

/* The parameters of every case: a conv weight, its bias (no decay), a
 * linear weight that has no gradient on some steps, a BN-like weight (no
 * decay), and one big enough for the threaded loop. */
static const struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    bool no_decay;
} PARAMS[] = {
    {"conv.weight", 4, {8, 3, 3, 3}, false}, {"conv.bias", 1, {37}, true},
    {"fc.weight", 2, {5, 7}, false},         {"bn.weight", 1, {16}, true},
    {"big.weight", 1, {40001}, false},
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

/* Through the schedulers plugins. "torch_every" is how many steps torch
 * runs between scheduler steps: the steps per epoch for a per-epoch
 * schedule. The warm-up has no torch scheduler (SequentialLR shifts the
 * schedule instead of replacing its first epochs), so its formula is
 * written out; math.floor(t) is the per-epoch granularity. */
#define SCHEDULE(lr, steps_per_epoch, epochs)                                                \
    {sizeof(kd_schedule_info), lr, steps_per_epoch, epochs}

typedef struct plugin_lr_case {
    const char *name;
    const char *provider;
    const char *params;
    kd_schedule_info info;
    int points;
    const char *python;
} plugin_lr_case;

static const plugin_lr_case PLUGIN_LR_CASES[] = {
    {"constant", "constant", "{}", SCHEDULE(0.1, 3, 5), 15,
     "\"torch_every\": 3, \"torch\": \"LambdaLR(opt, lambda e: 1.0)\""},
    {"step", "step", "{\"step_size\": 3, \"gamma\": 0.5}", SCHEDULE(0.1, 2, 10), 20,
     "\"torch_every\": 2, \"torch\": \"StepLR(opt, step_size=3, gamma=0.5)\""},
    {"multistep", "multistep", "{\"milestones\": [2, 5, 7]}", SCHEDULE(0.05, 3, 9), 27,
     "\"torch_every\": 3, \"torch\": \"MultiStepLR(opt, milestones=[2, 5, 7], gamma=0.1)\""},
    {"cosine", "cosine", "{\"eta_min\": 1e-4}", SCHEDULE(0.1, 2, 12), 26,
     "\"torch_every\": 2, \"torch\": \"CosineAnnealingLR(opt, T_max=12, eta_min=1e-4)\""},
    {"cosine per step", "cosine", "{\"per_step\": true}", SCHEDULE(0.2, 5, 6), 30,
     "\"torch\": \"CosineAnnealingLR(opt, T_max=30)\""},
    {"step warm-up per epoch", "step", "{\"step_size\": 4, \"warmup_epochs\": 2}",
     SCHEDULE(0.1, 3, 10), 30,
     "\"steps_per_epoch\": 3, \"formula\": \"0.01 + math.floor(t) * (0.1 - 0.01) / 2 if t < 2 "
     "else 0.1 * 0.1 ** (math.floor(t) // 4)\""},
    {"cosine warm-up per step", "cosine",
     "{\"eta_min\": 1e-5, \"per_step\": true, \"warmup_epochs\": 1.5, "
     "\"warmup_start_factor\": 0.01}",
     SCHEDULE(0.1, 4, 8), 34,
     "\"steps_per_epoch\": 4, \"formula\": \"0.001 + t * (0.1 - 0.001) / 1.5 if t < 1.5 else "
     "1e-5 + (0.1 - 1e-5) * (1 + math.cos(math.pi * t / 8)) / 2 if t < 8 else 1e-5\""},
    /* poly: mmcv's PolyLrUpdaterHook formula, written out (torch 1.13 has
     * no PolynomialLR); the points run past the end of the run. */
    {"poly", "poly", "{\"power\": 0.9, \"eta_min\": 1e-4}", SCHEDULE(0.1, 3, 6), 21,
     "\"steps_per_epoch\": 3, \"formula\": \"(0.1 - 1e-4) * (1 - min(math.floor(t), 6) / 6) "
     "** 0.9 + 1e-4\""},
    {"poly warm-up per step", "poly",
     "{\"power\": 2, \"per_step\": true, \"warmup_epochs\": 1, \"warmup_start_factor\": 0.1}",
     SCHEDULE(0.2, 4, 5), 22,
     "\"steps_per_epoch\": 4, \"formula\": \"0.02 + t * (0.2 - 0.02) / 1 if t < 1 else "
     "0.2 * (1 - min(t, 5) / 5) ** 2\""},
    /* cosine_restarts: timm 0.9.16's CosineLRScheduler itself, per epoch
     * (step(epoch)) or per update (t_in_epochs=False, step_update(s), its
     * lengths in updates); timm has no "no limit", so 100 cycles stand
     * for cycle_limit 0. */
    {"cosine_restarts decay limit", "cosine_restarts",
     "{\"cycle_epochs\": 3, \"cycle_decay\": 0.5, \"cycle_limit\": 3, \"eta_min\": 1e-3}",
     SCHEDULE(0.1, 2, 12), 24,
     "\"steps_per_epoch\": 2, \"timm\": \"CosineLRScheduler(opt, t_initial=3, lr_min=1e-3, "
     "cycle_decay=0.5, cycle_limit=3)\""},
    {"cosine_restarts mul warm-up per step", "cosine_restarts",
     "{\"cycle_epochs\": 2, \"cycle_mul\": 2, \"per_step\": true, \"warmup_epochs\": 1, "
     "\"warmup_start_factor\": 0.01, \"eta_min\": 1e-5}",
     SCHEDULE(0.1, 4, 14), 56,
     "\"steps_per_epoch\": 4, \"per_update\": true, \"timm\": \"CosineLRScheduler(opt, "
     "t_initial=8, cycle_mul=2, lr_min=1e-5, warmup_t=4, warmup_lr_init=0.001, "
     "t_in_epochs=False, cycle_limit=100)\""},
    {"cosine_restarts mul decay limit per epoch", "cosine_restarts",
     "{\"cycle_epochs\": 1, \"cycle_mul\": 2, \"cycle_decay\": 0.7, \"cycle_limit\": 3, "
     "\"warmup_epochs\": 1}",
     SCHEDULE(0.3, 3, 10), 30,
     "\"steps_per_epoch\": 3, \"timm\": \"CosineLRScheduler(opt, t_initial=1, cycle_mul=2, "
     "cycle_decay=0.7, cycle_limit=3, warmup_t=1, warmup_lr_init=0.03)\""},
};
#define N_PLUGIN_LR_CASES (int)(sizeof PLUGIN_LR_CASES / sizeof PLUGIN_LR_CASES[0])

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

/* ------------------------------------------------------------ plugins */

/* The plugin's parameters for case options o. */
static void sgd_params_json(const kd_sgd_options *o, bool decay_all, char *buf, size_t size)
{
    snprintf(buf, size,
             "{\"momentum\": %.17g, \"dampening\": %.17g, \"weight_decay\": %.17g, "
             "\"nesterov\": %s, \"no_decay\": %s}",
             o->momentum, o->dampening, o->weight_decay, o->nesterov ? "true" : "false",
             decay_all ? "false" : "true");
}

/* An sgd plugin instance over params[0..n) named and flagged as PARAMS,
 * and its vtable; on failure NULL with kd_last_error() set. */
static void *sgd_plugin_new(const char *json, int n, kd_tensor *const *params,
                            const kd_optimizer_vtable **vt)
{
    const kd_vtable_header *header = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, "sgd", &header);
    kd_params *p = e ? kt_params(e, json) : NULL;
    if (!p) {
        kd_error(KD_ERR_INVALID, "the sgd plugin does not load or its parameters %s do not "
                                 "build (see above)", json);
        return NULL;
    }
    *vt = (const kd_optimizer_vtable *)header;
    kd_named_tensor named[N_PARAMS];
    for (int k = 0; k < n; k++)
        named[k] = (kd_named_tensor){PARAMS[k].name, params[k],
                                     KD_TENSOR_PARAM |
                                         (PARAMS[k].no_decay ? KD_TENSOR_NO_DECAY : 0)};
    const kd_create_args args = kt_create_args(e, p, 1);
    kd_tensor_list list;
    KD_LIST_SET(&list, named, n);
    void *self = NULL;
    if ((*vt)->create(&args, &list, &self) != KD_OK)
        self = NULL;
    kd_params_free(p);
    return self;
}

/* The plugin state tensor called name, or NULL. */
static kd_tensor *sgd_plugin_state(const kd_optimizer_vtable *vt, void *self, const char *name)
{
    kd_tensor_list list = {0};
    if (vt->state(self, &list) != KD_OK)
        return NULL;
    for (int i = 0; i < list.n; i++)
        if (strcmp(kd_tensor_list_at(&list, i)->name, name) == 0)
            return kd_tensor_list_at(&list, i)->tensor;
    return NULL;
}

/* A schedulers plugin instance and its vtable; NULL with kd_last_error()
 * set on failure. */
static void *scheduler_new(const char *provider, const char *json, const kd_schedule_info *info,
                           const kd_scheduler_vtable **vt)
{
    const kd_vtable_header *header = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_SCHEDULER, provider, &header);
    kd_params *p = e ? kt_params(e, json) : NULL;
    if (!p) {
        kd_error(KD_ERR_INVALID, "scheduler '%s' does not load or its parameters %s do not "
                                 "build (see above)", provider, json);
        return NULL;
    }
    *vt = (const kd_scheduler_vtable *)header;
    const kd_create_args args = kt_create_args(e, p, 1);
    kd_schedule_info sized = *info;
    sized.size = sizeof sized;
    void *self = NULL;
    if ((*vt)->create(&args, &sized, &self) != KD_OK)
        self = NULL;
    kd_params_free(p);
    return self;
}

/* ------------------------------------------------------------ parity */

typedef struct sgd_run {
    kd_tensor *params[N_PARAMS];
    kd_sgd *opt;
    const kd_optimizer_vtable *vt; /* plugin cases */
    void *plugin;
    bool failed;
} sgd_run;

static kd_status sgd_run_step(sgd_run *run, double lr)
{
    return run->vt ? run->vt->step(run->plugin, lr) : kd_sgd_step(run->opt, lr);
}

static kd_tensor *sgd_run_buffer(const sgd_run *run, int k)
{
    if (!run->vt)
        return kd_sgd_state_tensor(run->opt, k);
    char name[96];
    snprintf(name, sizeof name, "momentum_buffer.%s", PARAMS[k].name);
    return sgd_plugin_state(run->vt, run->plugin, name);
}

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
    if (sc->plugin) {
        char json[256];
        sgd_params_json(&sc->opt, sc->decay_all, json, sizeof json);
        run->plugin = sgd_plugin_new(json, N_PARAMS, run->params, &run->vt);
        if (!run->plugin) {
            kt_fail(sc->name, "sgd plugin: %s", kd_last_error());
            run->failed = true;
            return;
        }
    } else if (kd_sgd_new(&sc->opt, N_PARAMS, run->params, no_decay, &run->opt) != KD_OK) {
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
        if (sgd_run_step(run, lr_at(step)) != KD_OK) {
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
                 PARAMS[k].no_decay && !sc->decay_all ? "true" : "false");
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
                mine = sgd_run_buffer(run, k);
                if (!mine) {
                    kt_fail(name, "no momentum buffer for %s", PARAMS[k].name);
                    return;
                }
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

static void compare_plugin_lr_case(int c, const kd_safetensors *ref)
{
    const plugin_lr_case *lc = &PLUGIN_LR_CASES[c];
    char name[96], key[64];
    snprintf(name, sizeof name, "lr plugin parity %s", lc->name);
    snprintf(key, sizeof key, "lr%d.error", N_LR_CASES + c);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "python: %s", err);
        return;
    }
    snprintf(key, sizeof key, "lr%d.lr", N_LR_CASES + c);
    kd_tensor *theirs = kd_safetensors_load(ref, key, KD_F64);
    if (!theirs || kd_tensor_numel(theirs) != lc->points) {
        kt_fail(name, "python result: %s", theirs ? "wrong length" : kd_last_error());
        return;
    }
    const kd_scheduler_vtable *vt = NULL;
    void *sched = scheduler_new(lc->provider, lc->params, &lc->info, &vt);
    if (!sched) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    double worst = 0;
    int at = 0;
    for (int s = 0; s < lc->points; s++) {
        double lr;
        if (vt->lr_at(sched, s, &lr) != KD_OK) {
            kt_fail(name, "step %d: %s", s, kd_last_error());
            vt->destroy(sched);
            return;
        }
        double e = fabs(lr - kd_tensor_get(theirs, s)) / lc->info.base_lr;
        if (e > worst) {
            worst = e;
            at = s;
        }
    }
    vt->destroy(sched);
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
    for (int c = 0; c < N_PLUGIN_LR_CASES; c++) {
        const plugin_lr_case *lc = &PLUGIN_LR_CASES[c];
        b.meta[2 * b.nm] = bag_str(&b, "lr%d.options", N_LR_CASES + c);
        b.meta[2 * b.nm + 1] = bag_str(&b, "{\"base\": %.17g, \"points\": %d, %s}",
                                       lc->info.base_lr, lc->points, lc->python);
        b.nm++;
    }
    b.meta[2 * b.nm] = "sgd_cases";
    b.meta[2 * b.nm + 1] = bag_str(&b, "%d", N_SGD_CASES);
    b.nm++;
    b.meta[2 * b.nm] = "lr_cases";
    b.meta[2 * b.nm + 1] = bag_str(&b, "%d", N_LR_CASES + N_PLUGIN_LR_CASES);
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
    for (int c = 0; c < N_PLUGIN_LR_CASES; c++)
        compare_plugin_lr_case(c, ref);
cleanup:
    kd_safetensors_close(ref);
    kd_scope_end();
    for (int c = 0; c < N_SGD_CASES; c++) {
        kd_sgd_free(runs[c].opt);
        if (runs[c].plugin)
            runs[c].vt->destroy(runs[c].plugin);
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

/* The same through the sgd plugin, its state found by name: STEPS steps
 * in one instance against SAVE_AT steps, a save of parameters and state,
 * a fresh instance over the saved parameters with the saved state copied
 * in, and the remaining steps. Parameter 2 starts its buffer late (see
 * has_grad), so the started flags matter. */
static void test_plugin_resume(void)
{
    const char *name = "sgd plugin resume is bit-identical";
    const char *json = "{\"dampening\": 0.1}";
    enum { STEPS = 10, SAVE_AT = 4 };
    kd_rng rng = kd_rng_make(91, 4, 0);
    kd_tensor *p[N_PARAMS], *q[N_PARAMS] = {0};
    for (int k = 0; k < N_PARAMS; k++)
        p[k] = make_param(KD_F32, k, &rng);
    kd_scope_begin();
    kd_tensor *g[STEPS][N_PARAMS];
    for (int s = 0; s < STEPS; s++)
        for (int k = 0; k < N_PARAMS; k++)
            g[s][k] = has_grad(k, s) ? kt_uniform(KD_F32, PARAMS[k].ndim, PARAMS[k].shape,
                                                  &rng, -1, 1)
                                     : NULL;
    const kd_optimizer_vtable *vt = NULL;
    void *a = NULL, *r = NULL;
    kd_safetensors *f = NULL;
    char path[] = "/tmp/kdoptim-resume.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        kt_fail(name, "cannot make a temporary file");
        goto done;
    }
    close(fd);
    if (!(a = sgd_plugin_new(json, N_PARAMS, p, &vt)))
        goto fail;
    for (int s = 0; s < STEPS; s++) {
        if (s == SAVE_AT) {
            kd_tensor_list state_list = {0};
            vt->state(a, &state_list);
            const kd_named_tensor *state = state_list.items;
            int ns = state_list.n;
            const char *names[2 * N_PARAMS + 1];
            kd_tensor *tensors[2 * N_PARAMS + 1];
            int n = 0;
            for (int k = 0; k < N_PARAMS; k++, n++) {
                names[n] = PARAMS[k].name;
                tensors[n] = p[k];
            }
            for (int i = 0; i < ns; i++, n++) {
                names[n] = state[i].name;
                tensors[n] = state[i].tensor;
            }
            kt_check(ns == N_PARAMS + 1 &&
                         strcmp(state[0].name, "momentum_buffer.conv.weight") == 0 &&
                         strcmp(state[ns - 1].name, "momentum_started") == 0,
                     "sgd plugin state names", "%d tensors, first '%s'", ns,
                     ns ? state[0].name : "");
            if (kd_safetensors_save(path, n, names, tensors, 0, NULL) != KD_OK)
                goto fail;
        }
        for (int k = 0; k < N_PARAMS; k++)
            set_grad(p[k], g[s][k]);
        if (vt->step(a, 0.1 - 0.005 * s) != KD_OK)
            goto fail;
    }
    if (kd_safetensors_open(path, &f) != KD_OK)
        goto fail;
    for (int k = 0; k < N_PARAMS; k++)
        if (!(q[k] = kd_tensor_keep(kd_safetensors_load(f, PARAMS[k].name, KD_F32))))
            goto fail;
    if (!(r = sgd_plugin_new(json, N_PARAMS, q, &vt)))
        goto fail;
    kd_tensor_list state_list = {0};
    vt->state(r, &state_list);
    const kd_named_tensor *state = state_list.items;
    int ns = state_list.n;
    for (int i = 0; i < ns; i++) {
        kd_tensor *saved = kd_safetensors_load(f, state[i].name, state[i].tensor->dtype);
        if (!saved || kd_tensor_copy_(state[i].tensor, saved) != KD_OK)
            goto fail;
    }
    for (int s = SAVE_AT; s < STEPS; s++) {
        for (int k = 0; k < N_PARAMS; k++)
            set_grad(q[k], g[s][k]);
        if (vt->step(r, 0.1 - 0.005 * s) != KD_OK)
            goto fail;
    }
    kd_tensor_list expected_list = {0};
    vt->state(a, &expected_list);
    const kd_named_tensor *expected = expected_list.items;
    int64_t differ = 0;
    for (int k = 0; k < N_PARAMS; k++)
        differ += bits_differ(p[k], q[k]);
    for (int i = 0; i < ns; i++)
        differ += bits_differ(expected[i].tensor, state[i].tensor);
    kt_check(differ == 0, name, "%lld elements differ after the restore", (long long)differ);
    goto done;
fail:
    kt_fail(name, "%s", kd_last_error());
done:
    kd_safetensors_close(f);
    if (a)
        vt->destroy(a);
    if (r)
        vt->destroy(r);
    for (int k = 0; k < N_PARAMS; k++) {
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
    const kd_lr_schedule poly = {.kind = KD_LR_POLY, .base_lr = 0.1, .steps_per_epoch = 1,
                                 .total_epochs = 10, .power = 0};
    expect_error("lr error poly power", kd_lr_validate(&poly),
                 "lr schedule poly: power must be finite and > 0, got 0");
    const kd_lr_schedule sgdr = {.kind = KD_LR_COSINE_RESTARTS, .base_lr = 0.1,
                                 .steps_per_epoch = 1, .cycle_epochs = 2, .cycle_mul = 1,
                                 .cycle_decay = 1};
    kd_lr_schedule r = sgdr;
    r.cycle_epochs = 0;
    expect_error("lr error restarts cycle", kd_lr_validate(&r), "cycle_epochs must be finite");
    r = sgdr;
    r.cycle_mul = 0.5;
    expect_error("lr error restarts mul", kd_lr_validate(&r), "cycle_mul must be finite and >= 1");
    r = sgdr;
    r.cycle_decay = 0;
    expect_error("lr error restarts decay", kd_lr_validate(&r), "cycle_decay must be finite");
    r = sgdr;
    r.cycle_limit = -1;
    expect_error("lr error restarts limit", kd_lr_validate(&r), "cycle_limit must be >= 0");
    /* A growing cycle's first epoch lies in it: cycles of 1, 3, 9 epochs
     * start at 0, 1, 4, 13 (a closed form through log() may round an
     * exact start into the cycle before). */
    r = sgdr;
    r.cycle_epochs = 1;
    r.cycle_mul = 3;
    double at[4];
    for (int i = 0; i < 4; i++)
        kd_lr_at_epoch(&r, (double[]){0, 1, 4, 13}[i], &at[i]);
    kt_check(at[0] == 0.1 && at[1] == 0.1 && at[2] == 0.1 && at[3] == 0.1,
             "lr restarts start every cycle at the peak", "lr %g %g %g %g", at[0], at[1], at[2],
             at[3]);
}

/* The manifest's schema refuses json for the provider with a message
 * holding needle. */
static void expect_schema_error(const char *name, kd_plugin_kind kind, const char *provider,
                                const char *json, const char *needle)
{
    const kd_vtable_header *vt;
    const kd_registry_entry *e = kt_provider(kind, provider, &vt);
    json_t *value = json_loads(json, 0, NULL);
    kd_params *p = NULL;
    kd_status st = e && value ? kd_params_build(e, value, provider, 0, NULL, &p)
                              : kd_error(KD_ERR_INVALID, "no provider or bad JSON %s", json);
    json_decref(value);
    kd_params_free(p);
    expect_error(name, st, needle);
}

static void test_sgd_plugin_errors(void)
{
    kd_tensor *p[2] = {kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){3}),
                       kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){4})};
    const kd_optimizer_vtable *vt = NULL;
    void *s = sgd_plugin_new("{\"nesterov\": true, \"momentum\": 0}", 2, p, &vt);
    expect_error("sgd plugin error nesterov without momentum", s ? KD_OK : KD_ERR_INVALID,
                 "sgd: nesterov needs momentum > 0 and dampening 0 (got momentum 0,");
    if (s)
        vt->destroy(s);
    s = sgd_plugin_new("{}", 0, p, &vt);
    expect_error("sgd plugin error no parameters", s ? KD_OK : KD_ERR_INVALID,
                 "sgd: no parameters to optimise (n = 0)");
    if (s)
        vt->destroy(s);
    if (vt) {
        const kd_named_tensor twins[2] = {{"fc.weight", p[0], KD_TENSOR_PARAM},
                                          {"fc.weight", p[1], KD_TENSOR_PARAM}};
        const kd_vtable_header *header;
        const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, "sgd", &header);
        kd_params *params = kt_params(e, "{}");
        const kd_create_args args = kt_create_args(e, params, 0);
        kd_tensor_list list;
        KD_LIST_SET(&list, twins, 2);
        s = NULL;
        expect_error("sgd plugin error duplicate names", vt->create(&args, &list, &s),
                     "sgd: parameters 0 and 1 are both named 'fc.weight'");
        if (s)
            vt->destroy(s);
        kd_params_free(params);
    }
    s = sgd_plugin_new("{\"momentum\": 0}", 2, p, &vt);
    kd_tensor_list list = {0};
    kt_check(s && vt->state(s, &list) == KD_OK && list.n == 0,
             "sgd plugin without momentum has no state", "%s",
             s ? "state is not empty" : kd_last_error());
    if (s)
        vt->destroy(s);
    expect_schema_error("sgd plugin schema momentum", KD_KIND_OPTIMIZER, "sgd",
                        "{\"momentum\": -0.5}", "momentum: -0.5 is below min 0");
    expect_schema_error("sgd plugin schema dampening", KD_KIND_OPTIMIZER, "sgd",
                        "{\"dampening\": 2}", "dampening: 2 is above max 1");
    kd_tensor_free(p[0]);
    kd_tensor_free(p[1]);
}

/* Scheduler create() refusing json with info, with a message holding needle. */
static void expect_scheduler_error(const char *name, const char *provider, const char *json,
                                   kd_schedule_info info, const char *needle)
{
    const kd_scheduler_vtable *vt = NULL;
    void *s = scheduler_new(provider, json, &info, &vt);
    expect_error(name, s ? KD_OK : KD_ERR_INVALID, needle);
    if (s)
        vt->destroy(s);
}

static void test_scheduler_errors(void)
{
    const kd_schedule_info run = {.base_lr = 0.1, .steps_per_epoch = 10, .epochs = 20};
    expect_schema_error("scheduler schema step_size required", KD_KIND_SCHEDULER, "step", "{}",
                        "missing required parameter 'step_size' of scheduler 'step'");
    expect_schema_error("scheduler schema step_size 0", KD_KIND_SCHEDULER, "step",
                        "{\"step_size\": 0}", "step_size: 0 is below min 1");
    expect_schema_error("scheduler schema gamma 0", KD_KIND_SCHEDULER, "multistep",
                        "{\"milestones\": [3], \"gamma\": 0}", "gamma: 0 is below min 0");
    expect_schema_error("scheduler schema milestones type", KD_KIND_SCHEDULER, "multistep",
                        "{\"milestones\": [3.5]}", "milestones[0]: expected an integer");
    expect_schema_error("scheduler schema warm-up factor", KD_KIND_SCHEDULER, "cosine",
                        "{\"warmup_start_factor\": 2}", "warmup_start_factor: 2 is above max 1");
    expect_scheduler_error("scheduler error milestones order", "multistep",
                           "{\"milestones\": [5, 3]}", run,
                           "lr schedule multistep: milestones must increase, but 3 follows 5");
    expect_scheduler_error("scheduler error no milestones", "multistep", "{\"milestones\": []}",
                           run, "lr schedule multistep: needs 1 to 16 milestones, got 0");
    expect_scheduler_error("scheduler error too many milestones", "multistep",
                           "{\"milestones\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
                           run, "multistep: at most 16 milestones, got 17");
    expect_scheduler_error("scheduler error eta_min", "cosine", "{\"eta_min\": 0.5}", run,
                           "lr schedule cosine: eta_min must be in [0, base_lr = 0.1], got 0.5");
    expect_scheduler_error("scheduler error poly epochs", "poly", "{}",
                           (kd_schedule_info){.base_lr = 0.1, .steps_per_epoch = 10},
                           "poly: the run must last at least 1 epoch, got 0");
    expect_schema_error("scheduler schema restarts cycle required", KD_KIND_SCHEDULER,
                        "cosine_restarts", "{}",
                        "missing required parameter 'cycle_epochs' of scheduler "
                        "'cosine_restarts'");
    expect_schema_error("scheduler schema restarts mul", KD_KIND_SCHEDULER, "cosine_restarts",
                        "{\"cycle_epochs\": 2, \"cycle_mul\": 0.5}",
                        "cycle_mul: 0.5 is below min 1");
    expect_scheduler_error("scheduler error restarts eta_min", "cosine_restarts",
                           "{\"cycle_epochs\": 2, \"eta_min\": 0.5}", run,
                           "lr schedule cosine_restarts: eta_min must be in [0, base_lr = 0.1]");
    expect_scheduler_error("scheduler error cosine epochs", "cosine", "{}",
                           (kd_schedule_info){.base_lr = 0.1, .steps_per_epoch = 10},
                           "cosine: the run must last at least 1 epoch, got 0");
    expect_scheduler_error("scheduler error base lr", "constant", "{}",
                           (kd_schedule_info){.steps_per_epoch = 10, .epochs = 5},
                           "lr schedule constant: base_lr must be finite and > 0, got 0");
    expect_scheduler_error("scheduler error steps per epoch", "step", "{\"step_size\": 2}",
                           (kd_schedule_info){.base_lr = 0.1, .epochs = 5},
                           "lr schedule step: steps_per_epoch must be >= 1, got 0");
    const kd_scheduler_vtable *vt = NULL;
    void *s = scheduler_new("constant", "{}", &run, &vt);
    double lr;
    if (s) {
        expect_error("scheduler error negative step", vt->lr_at(s, -1, &lr),
                     "lr schedule constant: step must be >= 0, got -1");
        vt->destroy(s);
    } else {
        kt_fail("scheduler error negative step", "%s", kd_last_error());
    }
}

/* lr_at depends on the step alone: any query order gives the same bits. */
static void test_scheduler_pure(void)
{
    const char *name = "scheduler lr_at is a pure function of the step";
    const plugin_lr_case *lc = &PLUGIN_LR_CASES[N_PLUGIN_LR_CASES - 1];
    const kd_scheduler_vtable *vt = NULL;
    void *fwd = scheduler_new(lc->provider, lc->params, &lc->info, &vt);
    void *rev = fwd ? scheduler_new(lc->provider, lc->params, &lc->info, &vt) : NULL;
    if (!rev) {
        kt_fail(name, "%s", kd_last_error());
        if (fwd)
            vt->destroy(fwd);
        return;
    }
    int differ = 0;
    double a[64], b[64];
    for (int i = 0; i < lc->points; i++)
        differ += vt->lr_at(fwd, i, &a[i]) != KD_OK;
    for (int i = lc->points - 1; i >= 0; i--)
        differ += vt->lr_at(rev, i, &b[i]) != KD_OK || memcmp(&a[i], &b[i], sizeof a[i]) != 0;
    kt_check(differ == 0, name, "%d of %d steps differ in reverse order", differ, lc->points);
    vt->destroy(fwd);
    vt->destroy(rev);
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
    test_skip_and_scope();
    test_sgd_errors();
    test_lr_errors();
    test_lr_behaviour();
    test_checkpoint();
    test_plugin_resume();
    test_sgd_plugin_errors();
    test_scheduler_errors();
    test_scheduler_pure();
    if (no_parity)
        kt_skip("optim parity", "--no-parity");
    else
        parity();
    kt_plugins_close();
    return kt_finish();
}
