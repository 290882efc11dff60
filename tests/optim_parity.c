/* See optim_parity.h. */
#include "optim_parity.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/train/checkpoint.h"
#include "harness.h"
#include "plugin_fixture.h"

#define MAX_CASES 16
#define MAX_TENSORS 2048
#define MAX_META 24

/* test_optim's parameters: a conv weight, its bias (no decay), a linear
 * weight without a gradient on some steps, a BN-like weight (no decay),
 * one large enough for the threaded loops. */
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

/* Parameter 2 has no gradient on steps 0 and 5: its state starts late and
 * (AdamW) its step count lags. */
static bool has_grad(int k, int step)
{
    return !(k == 2 && (step == 0 || step == 5));
}

static double lr_at(int step)
{
    return 0.01 * (1.0 - step / 20.0);
}

/* Tensors and strings kept until the parity run ends. */
typedef struct bag {
    int nt, nm, ns;
    const char *names[MAX_TENSORS];
    kd_tensor *tensors[MAX_TENSORS];
    const char *meta[2 * MAX_META];
    char *strings[MAX_TENSORS + 2 * MAX_META];
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

static void bag_add(bag *b, kd_tensor *t, char *name)
{
    b->names[b->nt] = name;
    b->tensors[b->nt++] = t;
}

void *kt_optim_new(const char *provider, const char *json, kd_dtype dtype, int n,
                   kd_tensor *const *params, const kd_optimizer_vtable **vt)
{
    const kd_vtable_header *header = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, provider, &header);
    kd_params *p = e ? kt_params(e, json) : NULL;
    if (!p) {
        kd_error(KD_ERR_INVALID, "optimizer '%s' does not load or its parameters %s do not "
                                 "build (see above)", provider, json);
        return NULL;
    }
    *vt = (const kd_optimizer_vtable *)header;
    kd_named_tensor named[N_PARAMS];
    char names[N_PARAMS][8];
    for (int k = 0; k < n && k < N_PARAMS; k++) {
        snprintf(names[k], sizeof names[k], "p%d", k);
        named[k] = (kd_named_tensor){names[k], params[k],
                                     KD_TENSOR_PARAM | (k % 2 ? KD_TENSOR_NO_DECAY : 0)};
    }
    kd_create_args args = kt_create_args(e, p, 1);
    args.dtype = dtype;
    kd_tensor_list list;
    KD_LIST_SET(&list, named, n < N_PARAMS ? n : N_PARAMS);
    void *self = NULL;
    if ((*vt)->create(&args, &list, &self) != KD_OK)
        self = NULL;
    kd_params_free(p);
    return self;
}

/* An instance over the case's parameters named and flagged as PARAMS. */
static void *optim_new(const kt_optim_case *c, kd_tensor *const *params,
                       const kd_optimizer_vtable **vt)
{
    const kd_vtable_header *header = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, c->provider, &header);
    kd_params *p = e ? kt_params(e, c->params) : NULL;
    if (!p) {
        kd_error(KD_ERR_INVALID, "optimizer '%s' does not load or its parameters %s do not "
                                 "build (see above)", c->provider, c->params);
        return NULL;
    }
    *vt = (const kd_optimizer_vtable *)header;
    kd_named_tensor named[N_PARAMS];
    for (int k = 0; k < N_PARAMS; k++)
        named[k] = (kd_named_tensor){PARAMS[k].name, params[k],
                                     KD_TENSOR_PARAM |
                                         (PARAMS[k].no_decay ? KD_TENSOR_NO_DECAY : 0)};
    kd_create_args args = kt_create_args(e, p, 1);
    args.dtype = c->dtype;
    kd_tensor_list list;
    KD_LIST_SET(&list, named, N_PARAMS);
    void *self = NULL;
    if ((*vt)->create(&args, &list, &self) != KD_OK)
        self = NULL;
    kd_params_free(p);
    return self;
}

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

static int64_t bits_differ(const kd_tensor *a, const kd_tensor *b)
{
    int64_t n = kd_tensor_numel(a), diff = 0;
    size_t size = kd_dtype_size(a->dtype);
    const char *x = kd_tensor_data(a), *y = kd_tensor_data(b);
    for (int64_t i = 0; i < n; i++)
        diff += memcmp(x + i * (int64_t)size, y + i * (int64_t)size, size) != 0;
    return diff;
}

/* One case's two runs: straight through, and saved after
 * KT_OPTIM_RESTORE_AT steps then continued by a fresh instance. */
typedef struct case_run {
    kd_tensor *params[N_PARAMS], *restored[N_PARAMS];
    const kd_optimizer_vtable *vt;
    void *opt, *opt2;
    kd_tensor *grads[KT_OPTIM_STEPS][N_PARAMS];
    bool failed;
} case_run;

static kd_status step_all(const kt_optim_case *c, case_run *r, kd_tensor **params, void *opt,
                          int from, int to)
{
    for (int step = from; step < to; step++) {
        for (int k = 0; k < N_PARAMS; k++)
            set_grad(params[k], r->grads[step][k]);
        kd_status st = r->vt->step(opt, lr_at(step));
        if (st != KD_OK)
            return kd_error_wrap(st, "%s step %d", c->name, step);
    }
    return KD_OK;
}

/* Saves opt's state through the checkpoint writer, makes a fresh instance
 * and loads the file into it. */
static kd_status save_and_restore(const kt_optim_case *c, case_run *r, const char *path)
{
    kd_tensor_list state = {0};
    kd_status st = r->vt->state(r->opt2, &state);
    if (st != KD_OK)
        return st;
    kd_named_tensor *copy = malloc((size_t)state.n * sizeof *copy);
    for (int i = 0; copy && i < state.n; i++)
        copy[i] = *kd_tensor_list_at(&state, i);
    kd_tensor_group g = {"optim.", state.n, copy};
    st = copy ? kd_checkpoint_save(path, 1, &g, NULL, NULL)
              : kd_error(KD_ERR_NOMEM, "out of memory");
    free(copy);
    if (st != KD_OK)
        return st;
    r->vt->destroy(r->opt2);
    r->opt2 = optim_new(c, r->restored, &r->vt);
    if (!r->opt2)
        return kd_last_status();
    if ((st = r->vt->state(r->opt2, &state)) != KD_OK)
        return st;
    copy = malloc((size_t)state.n * sizeof *copy);
    for (int i = 0; copy && i < state.n; i++)
        copy[i] = *kd_tensor_list_at(&state, i);
    g = (kd_tensor_group){"optim.", state.n, copy};
    st = copy ? kd_checkpoint_load(path, 1, &g, NULL) : kd_error(KD_ERR_NOMEM, "out of memory");
    free(copy);
    return st;
}

/* The restored run must end where the straight one did, to the bit. */
static void check_restore(const kt_optim_case *c, case_run *r)
{
    char name[128];
    snprintf(name, sizeof name, "%s restored after step %d continues bit for bit", c->name,
             KT_OPTIM_RESTORE_AT);
    kd_tensor_list a = {0}, b = {0};
    if (r->vt->state(r->opt, &a) != KD_OK || r->vt->state(r->opt2, &b) != KD_OK ||
        a.n != b.n) {
        kt_fail(name, "the two runs' states differ in length (%d, %d)", a.n, b.n);
        return;
    }
    int64_t differ = 0;
    for (int k = 0; k < N_PARAMS; k++)
        differ += bits_differ(r->params[k], r->restored[k]);
    for (int i = 0; i < a.n; i++)
        differ += bits_differ(kd_tensor_list_at(&a, i)->tensor, kd_tensor_list_at(&b, i)->tensor);
    kt_check(differ == 0, name, "%lld elements differ", (long long)differ);
}

static void run_case(int ci, const kt_optim_case *c, case_run *r, bag *b, const char *dir)
{
    kd_rng rng = kd_rng_make(3000 + (uint64_t)ci, 1, 0);
    char flags[128] = "", lrs[512] = "";
    for (int k = 0; k < N_PARAMS; k++) {
        r->params[k] = kd_tensor_keep(kt_uniform(c->dtype, PARAMS[k].ndim, PARAMS[k].shape,
                                                 &rng, -1, 1));
        r->restored[k] = kd_tensor_keep(kd_tensor_to_device(r->params[k], KD_CPU));
        bag_add(b, kd_tensor_to_device(r->params[k], KD_CPU), bag_str(b, "case%d.p%d", ci, k));
    }
    for (int step = 0; step < KT_OPTIM_STEPS; step++) {
        for (int k = 0; k < N_PARAMS; k++) {
            if (!has_grad(k, step))
                continue;
            /* Gradients grow over the steps so LAMB's global clipping
             * both applies and, with a large max_grad_norm, does not. */
            kd_tensor *g = kt_uniform(c->dtype, PARAMS[k].ndim, PARAMS[k].shape, &rng,
                                      -0.05 * (step + 1), 0.05 * (step + 1));
            r->grads[step][k] = g;
            bag_add(b, g, bag_str(b, "case%d.g%d.%d", ci, k, step));
        }
        size_t len = strlen(lrs);
        snprintf(lrs + len, sizeof lrs - len, "%s%.17g", step ? ", " : "", lr_at(step));
    }
    r->opt = optim_new(c, r->params, &r->vt);
    r->opt2 = r->opt ? optim_new(c, r->restored, &r->vt) : NULL;
    char path[256];
    snprintf(path, sizeof path, "%s/restore%d.safetensors", dir, ci);
    kd_status st = r->opt2 ? step_all(c, r, r->params, r->opt, 0, KT_OPTIM_STEPS)
                           : kd_last_status();
    if (st == KD_OK)
        st = step_all(c, r, r->restored, r->opt2, 0, KT_OPTIM_RESTORE_AT);
    if (st == KD_OK)
        st = save_and_restore(c, r, path);
    if (st == KD_OK)
        st = step_all(c, r, r->restored, r->opt2, KT_OPTIM_RESTORE_AT, KT_OPTIM_STEPS);
    unlink(path);
    if (st != KD_OK) {
        kt_fail(c->name, "%s", kd_last_error());
        r->failed = true;
        return;
    }
    check_restore(c, r);
    /* The reference applies the params' no_decay switch itself only
     * through the flags: a row that turns it off sends no flags. */
    bool honour = !strstr(c->params, "\"no_decay\": false");
    for (int k = 0; k < N_PARAMS; k++) {
        size_t len = strlen(flags);
        snprintf(flags + len, sizeof flags - len, "%s%s", k ? ", " : "",
                 honour && PARAMS[k].no_decay ? "true" : "false");
    }
    const char *plugin = strcmp(c->provider, "adam") == 0 ? "adamw" : c->provider;
    b->meta[2 * b->nm] = bag_str(b, "case%d.options", ci);
    b->meta[2 * b->nm + 1] =
        bag_str(b, "{\"plugin\": \"%s\", \"provider\": \"%s\", \"params\": %s, "
                   "\"no_decay\": [%s], \"lrs\": [%s]}",
                plugin, c->provider, c->params, flags, lrs);
    b->nm++;
}

/* The state tensor "<prefix>.<parameter name>" (or the bare "step"). */
static kd_tensor *state_of(const case_run *r, const char *prefix, int k)
{
    kd_tensor_list list = {0};
    if (r->vt->state(r->opt, &list) != KD_OK)
        return NULL;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", prefix, PARAMS[k].name);
    for (int i = 0; i < list.n; i++) {
        const char *n = kd_tensor_list_at(&list, i)->name;
        if (strcmp(n, name) == 0 || (strcmp(prefix, "step") == 0 && strcmp(n, "step") == 0))
            return kd_tensor_list_at(&list, i)->tensor;
    }
    return NULL;
}

/* Worst norm-wise relative error of the parameters and moments against
 * the reference under key prefix `ref_prefix`, and whether step counts
 * agree. */
static double compare_with(const case_run *r, const kt_optim_case *c, const kd_safetensors *ref,
                           const char *ref_prefix, char *where, size_t size, int *bad_steps)
{
    static const struct {
        char key;
        const char *state;
    } parts[] = {{'p', NULL}, {'m', "exp_avg"}, {'v', "exp_avg_sq"}, {'w', "max_exp_avg_sq"}};
    double worst = 0;
    *bad_steps = 0;
    for (int k = 0; k < N_PARAMS; k++) {
        for (int j = 0; j < 4; j++) {
            char key[64];
            snprintf(key, sizeof key, "%s%c%d", ref_prefix, parts[j].key, k);
            kd_tensor *mine = parts[j].state ? state_of(r, parts[j].state, k) : r->params[k];
            bool in_ref = kd_safetensors_find(ref, key) != NULL;
            if (!mine && !in_ref)
                continue;
            if (!mine || !in_ref) {
                snprintf(where, size, "%s is %s", key, mine ? "missing in the reference"
                                                           : "not in kdengine's state");
                return INFINITY;
            }
            kd_tensor *theirs = kd_safetensors_load(ref, key, c->dtype);
            double e = theirs ? kt_rel_error(mine, theirs) : INFINITY;
            if (e > worst || !where[0]) {
                worst = e > worst ? e : worst;
                snprintf(where, size, "%s", key);
            }
        }
        char key[64];
        snprintf(key, sizeof key, "%ss%d", ref_prefix, k);
        kd_tensor *steps = state_of(r, "step", k);
        kd_tensor *theirs = kd_safetensors_load(ref, key, KD_F64);
        if (!steps || !theirs ||
            (double)((int64_t *)kd_tensor_data(steps))[0] != kd_tensor_get(theirs, 0))
            (*bad_steps)++;
    }
    return worst;
}

static void compare_case(int ci, const kt_optim_case *c, const case_run *r,
                         const kd_safetensors *ref, double f32_tolerance)
{
    char name[128], key[64], where[96] = "";
    snprintf(name, sizeof name, "%s parity", c->name);
    snprintf(key, sizeof key, "case%d.error", ci);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "reference: %s", err);
        return;
    }
    int bad_steps;
    if (c->dtype == KD_F64) {
        snprintf(key, sizeof key, "case%d.", ci);
        double e = compare_with(r, c, ref, key, where, sizeof where, &bad_steps);
        /* Same operations in double: rounding differences only. */
        kt_check(e <= 1e-12 && bad_steps == 0, name,
                 "relative error %.3g > 1e-12 (%s) or %d step counts differ", e, where,
                 bad_steps);
        return;
    }
    snprintf(key, sizeof key, "case%d.x.", ci);
    double e = compare_with(r, c, ref, key, where, sizeof where, &bad_steps);
    char ref32[64], where32[96] = "";
    snprintf(ref32, sizeof ref32, "case%d.", ci);
    int bad32;
    double e32 = compare_with(r, c, ref, ref32, where32, sizeof where32, &bad32);
    printf("# %s: float32 against the float64 reference %.3g, against the float32 "
           "reference %.3g (bound %.3g)\n", c->name, e, e32, f32_tolerance);
    kt_check(e <= f32_tolerance && bad_steps == 0, name,
             "relative error %.3g > %.3g (%s) or %d step counts differ", e, f32_tolerance,
             where, bad_steps);
}

void kt_optim_parity(const char *plugin, int n, const kt_optim_case *cases,
                     double f32_tolerance)
{
    if (n > MAX_CASES) {
        kt_fail(plugin, "%d cases; at most %d", n, MAX_CASES);
        return;
    }
    char dir[] = "/tmp/kdoptim.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail(plugin, "cannot make a temporary directory");
        return;
    }
    char in_path[128], out_path[128];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    kd_scope_begin();
    static bag b;
    memset(&b, 0, sizeof b);
    static case_run runs[MAX_CASES];
    memset(runs, 0, sizeof runs);
    for (int c = 0; c < n; c++)
        run_case(c, &cases[c], &runs[c], &b, dir);
    b.meta[2 * b.nm] = "cases";
    b.meta[2 * b.nm + 1] = bag_str(&b, "%d", n);
    b.nm++;

    char script[512], root[512], cmd[2048];
    kd_safetensors *ref = NULL;
    char check[128];
    snprintf(check, sizeof check, "%s -c 'import torch, timm' >/dev/null 2>&1",
             KD_TORCH_PYTHON);
    if (system(check) != 0) {
        kt_skip("optim parity", "torch or timm is not importable by %s", KD_TORCH_PYTHON);
        goto cleanup;
    }
    if (kd_safetensors_save(in_path, b.nt, b.names, b.tensors, b.nm, b.meta) != KD_OK) {
        kt_fail("optim parity", "writing %s: %s", in_path, kd_last_error());
        goto cleanup;
    }
    kt_source_path("tests/parity/torch_adaptive_optim.py", script, sizeof script);
    kt_source_path(".", root, sizeof root);
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s", KD_TORCH_PYTHON, script, root, in_path,
             out_path);
    if (system(cmd) != 0) {
        kt_fail("optim parity", "the reference failed: %s", cmd);
        goto cleanup;
    }
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("optim parity", "reading the reference: %s", kd_last_error());
        goto cleanup;
    }
    for (int c = 0; c < n; c++)
        if (!runs[c].failed)
            compare_case(c, &cases[c], &runs[c], ref, f32_tolerance);
cleanup:
    kd_safetensors_close(ref);
    kd_scope_end();
    for (int c = 0; c < n; c++) {
        if (runs[c].opt)
            runs[c].vt->destroy(runs[c].opt);
        if (runs[c].opt2)
            runs[c].vt->destroy(runs[c].opt2);
        for (int k = 0; k < N_PARAMS; k++) {
            kd_tensor_free(runs[c].params[k]);
            kd_tensor_free(runs[c].restored[k]);
        }
    }
    for (int i = 0; i < b.ns; i++)
        free(b.strings[i]);
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
}
