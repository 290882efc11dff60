/* Layer-wise LR decay ("optim.layer_decay"): for one model of each family
 * that numbers its layers (vit, beit, swin, convnext), every parameter's
 * lr scale from the model's layer_id through the host's
 * kd_layer_decay_scales equals timm's param_groups_layer_decay on the same
 * timm model, and its no-decay flag equals timm's weight-decay exclusion;
 * AdamW steps with those scales equal torch's AdamW over timm's param
 * groups in float64 (tests/parity/timm_layer_decay.py, one Python process
 * for the file); and the errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/train/layer_decay.h"
#include "harness.h"
#include "model_fixture.h"
#include "plugin_fixture.h"

#define DECAY 0.65
#define WEIGHT_DECAY 0.05
#define LR 1e-3
#define STEPS 3
#define MAX_PARAMS 512

/* A case is a kdengine model and the timm model it ports: the same
 * reduced sizes as parameters here and create_model arguments there. */
static const struct ld_case {
    const char *provider, *params, *timm_kwargs;
} CASES[] = {
    {"deit_tiny_distilled_patch16_224",
     "{\"depth\": 3, \"num_classes\": 5, \"img_size\": 32, \"patch_size\": 8}",
     "{\"depth\": 3, \"num_classes\": 5, \"img_size\": 32, \"patch_size\": 8}"},
    {"beit_base_patch16_224", "{\"depth\": 2, \"num_classes\": 5, \"img_size\": 32, "
                              "\"patch_size\": 8}",
     "{\"depth\": 2, \"num_classes\": 5, \"img_size\": 32, \"patch_size\": 8}"},
    {"swin_tiny_patch4_window7_224", "{\"depths\": [1, 2, 1, 1], \"num_classes\": 5}",
     "{\"depths\": [1, 2, 1, 1], \"num_classes\": 5}"},
    {"convnext_atto", "{\"depths\": [1, 1, 2, 1], \"num_classes\": 5}",
     "{\"depths\": [1, 1, 2, 1], \"num_classes\": 5}"},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])
#define ADAMW_CASE 0

typedef struct ld_run {
    kt_model m;
    bool open;
    double scales[MAX_PARAMS * 4]; /* per tensor of the model's list */
} ld_run;

static ld_run runs[N_CASES];

/* The AdamW case's inputs for the reference: initial parameters and every
 * step's gradients, named as the script reads them. */
typedef struct ld_inputs {
    int n;
    char *names[MAX_PARAMS * (STEPS + 1)];
    kd_tensor *tensors[MAX_PARAMS * (STEPS + 1)];
} ld_inputs;

/* step < 0: the initial value "p.<name>"; else "g<step>.<name>". */
static void add_input(ld_inputs *in, kd_tensor *t, const char *name, int step)
{
    char buf[256];
    if (step < 0)
        snprintf(buf, sizeof buf, "p.%s", name);
    else
        snprintf(buf, sizeof buf, "g%d.%s", step, name);
    in->names[in->n] = strdup(buf);
    in->tensors[in->n++] = t;
}

static bool open_case(int c)
{
    ld_run *r = &runs[c];
    if (!kt_model_open(&r->m, CASES[c].provider, CASES[c].params, KD_F64, 7, NULL)) {
        kt_fail(CASES[c].provider, "%s", kd_last_error());
        return false;
    }
    r->open = true;
    if (r->m.n_tensors > MAX_PARAMS * 4) {
        kt_fail(CASES[c].provider, "%d tensors; the test holds %d", r->m.n_tensors,
                MAX_PARAMS * 4);
        return false;
    }
    if (kd_layer_decay_scales(r->m.vt, r->m.self, CASES[c].provider, r->m.n_tensors,
                              r->m.tensors, DECAY, r->scales) != KD_OK) {
        kt_fail(CASES[c].provider, "scales: %s", kd_last_error());
        return false;
    }
    return true;
}

/* Runs AdamW with the case's scales for STEPS steps on seeded gradients,
 * recording the reference's inputs. */
static bool run_adamw(ld_run *r, ld_inputs *in)
{
    const char *name = "adamw with layer decay";
    kd_named_tensor params[MAX_PARAMS];
    double scales[MAX_PARAMS];
    int n = 0;
    for (int i = 0; i < r->m.n_tensors && n < MAX_PARAMS; i++) {
        const kd_named_tensor *t = &r->m.tensors[i];
        if (!(t->flags & KD_TENSOR_PARAM))
            continue;
        scales[n] = r->scales[i];
        params[n++] = *t;
        kd_tensor *p0 = kd_tensor_empty_like(t->tensor);
        kd_tensor_copy_(p0, t->tensor);
        add_input(in, p0, t->name, -1);
    }
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, "adamw", &h);
    kd_params *p = e ? kt_params(e, "{\"weight_decay\": 0.05, \"beta1\": 0.9, \"beta2\": "
                                    "0.999, \"eps\": 1e-8, \"no_decay\": true}")
                     : NULL;
    if (!p) {
        kt_fail(name, "adamw does not load: %s", kd_last_error());
        return false;
    }
    const kd_optimizer_vtable *vt = (const kd_optimizer_vtable *)h;
    kd_create_args args = kt_create_args(e, p, 1);
    args.dtype = KD_F64;
    args.lr_scales = scales;
    kd_tensor_list list;
    KD_LIST_SET(&list, params, n);
    void *opt = NULL;
    kd_status st = vt->create(&args, &list, &opt);
    kd_params_free(p);
    for (int step = 0; st == KD_OK && step < STEPS; step++) {
        for (int k = 0; k < n; k++) {
            kd_tensor *w = params[k].tensor;
            kd_rng rng = kd_rng_make(11, (uint64_t)step, (uint64_t)k);
            kd_tensor *g = kt_uniform(KD_F64, w->ndim, w->shape, &rng, -1, 1);
            if (!w->grad)
                w->grad = kd_tensor_keep(kd_tensor_empty_like(w));
            kd_tensor_copy_(w->grad, g);
            add_input(in, g, params[k].name, step);
        }
        st = vt->step(opt, LR);
    }
    if (opt)
        vt->destroy(opt);
    return kt_check(st == KD_OK, name, "%s", kd_last_error());
}

static void compare_case(int c, const kd_safetensors *ref)
{
    const ld_run *r = &runs[c];
    char name[160];
    snprintf(name, sizeof name, "%s: lr scales and no-decay flags equal timm's",
             CASES[c].provider);
    int params = 0, bad = 0;
    char first[256] = "";
    for (int i = 0; i < r->m.n_tensors; i++) {
        const kd_named_tensor *t = &r->m.tensors[i];
        if (!(t->flags & KD_TENSOR_PARAM))
            continue;
        params++;
        char key[256];
        snprintf(key, sizeof key, "scale.%d.%s", c, t->name);
        kd_tensor *s = kd_safetensors_load(ref, key, KD_F64);
        snprintf(key, sizeof key, "wd.%d.%s", c, t->name);
        kd_tensor *w = kd_safetensors_load(ref, key, KD_F64);
        bool ok = s && w && *(double *)kd_tensor_data(s) == r->scales[i] &&
                  (*(double *)kd_tensor_data(w) == 0) == ((t->flags & KD_TENSOR_NO_DECAY) != 0);
        if (!ok && !bad++)
            snprintf(first, sizeof first, "%s: scale %.17g vs timm's %.17g, no_decay %d vs "
                     "timm's weight decay %g", t->name, r->scales[i],
                     s ? *(double *)kd_tensor_data(s) : NAN,
                     (t->flags & KD_TENSOR_NO_DECAY) != 0,
                     w ? *(double *)kd_tensor_data(w) : NAN);
        kd_tensor_free(s);
        kd_tensor_free(w);
    }
    /* timm's model has exactly these parameters: count its entries */
    char prefix[32];
    int theirs = 0, plen = snprintf(prefix, sizeof prefix, "scale.%d.", c);
    for (int i = 0; i < kd_safetensors_count(ref); i++)
        theirs += strncmp(kd_safetensors_at(ref, i)->name, prefix, (size_t)plen) == 0;
    kt_check(bad == 0 && theirs == params, name, "%d of %d parameters differ (first %s); timm "
             "has %d parameters", bad, params, first, theirs);
}

static void compare_adamw(const ld_run *r, const kd_safetensors *ref)
{
    double worst = 0;
    const char *where = "none";
    int missing = 0;
    for (int i = 0; i < r->m.n_tensors; i++) {
        const kd_named_tensor *t = &r->m.tensors[i];
        if (!(t->flags & KD_TENSOR_PARAM))
            continue;
        char key[256];
        snprintf(key, sizeof key, "adamw.%s", t->name);
        kd_tensor *want = kd_safetensors_load(ref, key, KD_F64);
        if (!want) {
            missing++;
            continue;
        }
        double e = kt_rel_error(t->tensor, want);
        if (!(e <= worst)) {
            worst = e;
            where = t->name;
        }
        kd_tensor_free(want);
    }
    kt_check(missing == 0 && worst <= 1e-12, "adamw with layer decay equals torch's AdamW over "
             "timm's param groups (f64)", "relative error %.3g at %s; %d missing", worst,
             where, missing);
}

static void test_parity(void)
{
    char check[256];
    snprintf(check, sizeof check, "%s -c 'import torch, timm' >/dev/null 2>&1",
             KD_TORCH_PYTHON);
    if (system(check) != 0) {
        kt_skip("layer decay parity", "torch or timm is not importable by %s", KD_TORCH_PYTHON);
        return;
    }
    static ld_inputs in;
    bool ok = true;
    for (int c = 0; c < N_CASES; c++)
        ok = open_case(c) && ok;
    if (!ok || !run_adamw(&runs[ADAMW_CASE], &in))
        return;
    char cases[1024] = "[", meta_adamw[256];
    for (int c = 0; c < N_CASES; c++)
        snprintf(cases + strlen(cases), sizeof cases - strlen(cases),
                 "%s{\"model\": \"%s\", \"kwargs\": %s}", c ? ", " : "", CASES[c].provider,
                 CASES[c].timm_kwargs);
    strcat(cases, "]");
    snprintf(meta_adamw, sizeof meta_adamw, "{\"case\": %d, \"lr\": %.17g, \"beta1\": 0.9, "
             "\"beta2\": 0.999, \"eps\": 1e-8, \"steps\": %d}", ADAMW_CASE, LR, STEPS);
    char decay[32], wd[32];
    snprintf(decay, sizeof decay, "%.17g", DECAY);
    snprintf(wd, sizeof wd, "%.17g", WEIGHT_DECAY);
    const char *meta[] = {"cases", cases, "decay", decay, "weight_decay", wd,
                          "adamw", meta_adamw};
    char dir[] = "/tmp/kdlayerdecay.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("layer decay parity", "cannot make a temporary directory");
        return;
    }
    char in_path[128], out_path[128], script[512], cmd[2048];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    kd_safetensors *ref = NULL;
    if (kd_safetensors_save(in_path, in.n, (const char *const *)in.names, in.tensors, 4,
                            meta) != KD_OK) {
        kt_fail("layer decay parity", "writing %s: %s", in_path, kd_last_error());
        goto done;
    }
    kt_source_path("tests/parity/timm_layer_decay.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (system(cmd) != 0) {
        kt_fail("layer decay parity", "the reference failed: %s", cmd);
        goto done;
    }
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("layer decay parity", "reading the reference: %s", kd_last_error());
        goto done;
    }
    for (int c = 0; c < N_CASES; c++)
        compare_case(c, ref);
    compare_adamw(&runs[ADAMW_CASE], ref);
done:
    kd_safetensors_close(ref);
    for (int i = 0; i < in.n; i++) {
        free(in.names[i]);
        kd_tensor_free(in.tensors[i]);
    }
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
}

static void test_errors(void)
{
    const char *name = "layer decay: a model without layer_id is refused";
    kt_model m;
    if (!kt_model_open(&m, "resnet20", "{}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    double *scales = calloc((size_t)m.n_tensors, sizeof *scales);
    kd_status st = kd_layer_decay_scales(m.vt, m.self, "resnet20", m.n_tensors, m.tensors,
                                         DECAY, scales);
    kt_check(st != KD_OK && strstr(kd_last_error(), "the student 'resnet20' does not number "
                                                    "its layers"),
             name, "status %d, message %s", st, kd_last_error());
    st = kd_layer_decay_scales(m.vt, m.self, "resnet20", m.n_tensors, m.tensors, 1.5, scales);
    kt_check(st != KD_OK && strstr(kd_last_error(), "optim.layer_decay: 1.5 is outside (0, 1]"),
             "layer decay: a decay above 1 is refused", "%s", kd_last_error());
    free(scales);
    kt_model_close(&m);

    kd_tensor *p = kd_tensor_zeros(KD_F64, KD_CPU, 1, (int64_t[]){3});
    kd_named_tensor named = {"w", p, KD_TENSOR_PARAM};
    const char *providers[] = {"sgd", "adamw", "lamb"};
    for (int i = 0; i < 3; i++) {
        const kd_vtable_header *h = NULL;
        const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, providers[i], &h);
        kd_params *kp = e ? kt_params(e, "{}") : NULL;
        char what[96];
        snprintf(what, sizeof what, "%s refuses a negative lr scale", providers[i]);
        if (!kp) {
            kt_fail(what, "does not load: %s", kd_last_error());
            continue;
        }
        kd_create_args args = kt_create_args(e, kp, 1);
        args.dtype = KD_F64;
        args.lr_scales = (const double[]){-0.5};
        kd_tensor_list list;
        KD_LIST_SET(&list, &named, 1);
        void *opt = NULL;
        st = ((const kd_optimizer_vtable *)h)->create(&args, &list, &opt);
        kt_check(st != KD_OK && strstr(kd_last_error(), "lr scale -0.5"), what, "%s",
                 st == KD_OK ? "created" : kd_last_error());
        if (opt)
            ((const kd_optimizer_vtable *)h)->destroy(opt);
        kd_params_free(kp);
    }
    kd_tensor_free(p);
}

/* SGD and LAMB take the scale as a factor on lr: one step at lr with
 * scale s moves a parameter exactly as one at lr * s without. */
static void test_scaled_step(void)
{
    const char *providers[] = {"sgd", "adamw", "lamb"};
    for (int i = 0; i < 3; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s: scale 0.25 at lr 0.4 steps as lr 0.1", providers[i]);
        kd_tensor *w[2];
        void *opt[2] = {NULL, NULL};
        const kd_vtable_header *h = NULL;
        const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, providers[i], &h);
        kd_params *kp = e ? kt_params(e, "{\"weight_decay\": 0.1}") : NULL;
        if (!kp) {
            kt_fail(what, "does not load: %s", kd_last_error());
            continue;
        }
        const kd_optimizer_vtable *vt = (const kd_optimizer_vtable *)h;
        kd_status st = KD_OK;
        for (int k = 0; k < 2; k++) {
            kd_rng rng = kd_rng_make(3, 0, 0);
            w[k] = kt_uniform(KD_F64, 1, (int64_t[]){7}, &rng, -1, 1);
            kd_tensor_keep(w[k]);
            rng = kd_rng_make(3, 1, 0);
            w[k]->grad = kd_tensor_keep(kt_uniform(KD_F64, 1, (int64_t[]){7}, &rng, -1, 1));
            kd_named_tensor named = {"w", w[k], KD_TENSOR_PARAM};
            kd_create_args args = kt_create_args(e, kp, 1);
            args.dtype = KD_F64;
            args.lr_scales = k == 0 ? (const double[]){0.25} : NULL;
            kd_tensor_list list;
            KD_LIST_SET(&list, &named, 1);
            if (st == KD_OK)
                st = vt->create(&args, &list, &opt[k]);
            if (st == KD_OK)
                st = vt->step(opt[k], k == 0 ? 0.4 : 0.1);
        }
        kt_check(st == KD_OK && kt_max_abs_diff(w[0], w[1]) == 0, what, "%s, difference %g",
                 st == KD_OK ? "stepped" : kd_last_error(),
                 st == KD_OK ? kt_max_abs_diff(w[0], w[1]) : NAN);
        for (int k = 0; k < 2; k++) {
            if (opt[k])
                vt->destroy(opt[k]);
            kd_tensor_free(w[k]);
        }
        kd_params_free(kp);
    }
}

int main(void)
{
    kd_scope_begin();
    test_parity();
    kd_scope_end();
    test_errors();
    test_scaled_step();
    for (int c = 0; c < N_CASES; c++)
        if (runs[c].open)
            kt_model_close(&runs[c].m);
    kt_plugins_close();
    return kt_finish();
}
