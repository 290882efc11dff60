/* The jsd loss plugin (SSLD's JS-divergence loss): value and student
 * gradient in float64 against PaddleClas's formula written in PyTorch
 * (tests/parity/torch_jsd.py, one Python process for the file), zero for
 * equal logits, no labels needed, and its errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "plugin_fixture.h"

/* A case is a table row: batch, classes, the logits' spread (large: near
 * one-hot softmaxes, where eps decides the log ratios), the plugin's
 * parameters and the same as the reference's options. */
static const struct jsd_case {
    const char *name;
    int64_t n, classes;
    double spread;
    const char *params, *opts;
} CASES[] = {
    {"jsd defaults", 4, 10, 2, "{}", "{\"eps\": 1e-12, \"sum_classes\": false}"},
    {"jsd sum_classes", 4, 10, 2, "{\"sum_classes\": true}",
     "{\"eps\": 1e-12, \"sum_classes\": true}"},
    {"jsd eps 1e-10, near one-hot", 3, 7, 40, "{\"eps\": 1e-10}",
     "{\"eps\": 1e-10, \"sum_classes\": false}"},
    {"jsd eps 0", 5, 6, 3, "{\"eps\": 0}", "{\"eps\": 0, \"sum_classes\": false}"},
    {"jsd 1000 classes", 2, 1000, 4, "{}", "{\"eps\": 1e-12, \"sum_classes\": false}"},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

/* Every term of the sum is >= 0 and each goes through a dozen float64
 * roundings (softmax, eps, log, the differences, the product), so the
 * value is within about 16 u of the reference's relative to itself; the
 * gradient's elements mix a handful of such terms. */
#define F64_TOLERANCE (1024 * 0x1p-53)

typedef struct jsd_loss {
    const kd_loss_vtable *vt;
    void *self;
} jsd_loss;

static bool jsd_open(const char *params, jsd_loss *l)
{
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_LOSS, "jsd", &h);
    kd_params *p = e ? kt_params(e, params) : NULL;
    if (!p)
        return false;
    kd_create_args args = kt_create_args(e, p, 1);
    args.dtype = KD_F64;
    l->vt = (const kd_loss_vtable *)h;
    kd_status st = l->vt->create(&args, &l->self);
    kd_params_free(p);
    return st == KD_OK;
}

/* The loss (NAN on failure) and, in s->grad, its gradient. Labels: none. */
static double jsd_run(const jsd_loss *l, kd_tensor *s, kd_tensor *t)
{
    kd_tensor_zero_grad(s);
    kd_tensor_set_requires_grad(s, true);
    kd_tensor *st[1] = {s}, *tt[1] = {t};
    const kd_loss_args args = {.size = sizeof args, .student = st, .teacher = tt,
                               .training = true};
    kd_loss_result r = {.size = sizeof r};
    double value = NAN;
    kd_scope_begin();
    if (l->vt->forward(l->self, &args, &r) == KD_OK && kd_backward(r.loss) == KD_OK)
        value = kd_tensor_get(r.loss, 0);
    kd_scope_end();
    return value;
}

static kd_tensor *logits(int64_t n, int64_t c, double spread, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 0, 0);
    return kt_uniform(KD_F64, 2, (int64_t[]){n, c}, &rng, -spread, spread);
}

static void test_parity(void)
{
    char check[256];
    snprintf(check, sizeof check, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    if (system(check) != 0) {
        kt_skip("jsd parity", "torch is not importable by %s", KD_TORCH_PYTHON);
        return;
    }
    char names[N_CASES * 2][32], keys[N_CASES][32], count[16];
    const char *tnames[N_CASES * 2], *meta[2 * (N_CASES + 1)];
    kd_tensor *tensors[N_CASES * 2], *grads[N_CASES];
    double values[N_CASES];
    for (int c = 0; c < N_CASES; c++) {
        const struct jsd_case *k = &CASES[c];
        kd_tensor *s = logits(k->n, k->classes, k->spread, 100 + (uint64_t)c);
        kd_tensor *t = logits(k->n, k->classes, k->spread, 200 + (uint64_t)c);
        jsd_loss l = {0};
        values[c] = jsd_open(k->params, &l) ? jsd_run(&l, s, t) : NAN;
        if (l.self)
            l.vt->destroy(l.self);
        grads[c] = s->grad ? kd_tensor_empty_like(s->grad) : NULL;
        if (grads[c])
            kd_tensor_copy_(grads[c], s->grad);
        snprintf(names[2 * c], sizeof names[0], "case%d.s", c);
        snprintf(names[2 * c + 1], sizeof names[0], "case%d.t", c);
        tnames[2 * c] = names[2 * c];
        tnames[2 * c + 1] = names[2 * c + 1];
        tensors[2 * c] = s;
        tensors[2 * c + 1] = t;
        snprintf(keys[c], sizeof keys[0], "case%d.opts", c);
        meta[2 * c] = keys[c];
        meta[2 * c + 1] = k->opts;
    }
    snprintf(count, sizeof count, "%d", N_CASES);
    meta[2 * N_CASES] = "cases";
    meta[2 * N_CASES + 1] = count;
    char dir[] = "/tmp/kdjsd.XXXXXX", in_path[128], out_path[128], script[512], cmd[2048];
    kd_safetensors *ref = NULL;
    if (!mkdtemp(dir)) {
        kt_fail("jsd parity", "cannot make a temporary directory");
        goto done;
    }
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    kt_source_path("tests/parity/torch_jsd.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (kd_safetensors_save(in_path, 2 * N_CASES, tnames, tensors, N_CASES + 1, meta) !=
            KD_OK ||
        system(cmd) != 0 || kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("jsd parity", "the reference did not run: %s (%s)", cmd, kd_last_error());
        goto cleanup;
    }
    for (int c = 0; c < N_CASES; c++) {
        char key[32];
        snprintf(key, sizeof key, "case%d.loss", c);
        kd_tensor *want = kd_safetensors_load(ref, key, KD_F64);
        snprintf(key, sizeof key, "case%d.grad", c);
        kd_tensor *want_grad = kd_safetensors_load(ref, key, KD_F64);
        double w = want ? kd_tensor_get(want, 0) : NAN;
        double ev = fabs(values[c] - w) / fabs(w);
        double eg = grads[c] && want_grad ? kt_rel_error(grads[c], want_grad) : INFINITY;
        kt_check(ev <= F64_TOLERANCE && eg <= F64_TOLERANCE && w > 0, CASES[c].name,
                 "loss %.17g vs torch %.17g (relative %.3g), gradient relative error %.3g "
                 "(bound %.3g)", values[c], w, ev, eg, F64_TOLERANCE);
        kd_tensor_free(want);
        kd_tensor_free(want_grad);
    }
cleanup:
    kd_safetensors_close(ref);
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
done:
    for (int c = 0; c < N_CASES; c++) {
        kd_tensor_free(tensors[2 * c]);
        kd_tensor_free(tensors[2 * c + 1]);
        kd_tensor_free(grads[c]);
    }
}

/* Equal logits: every term (p - q) (log(p + eps) - log(q + eps)) is an
 * exact zero, and so is the gradient. */
static void test_equal_logits(void)
{
    kd_tensor *s = logits(3, 5, 2, 7), *t = logits(3, 5, 2, 7);
    jsd_loss l = {0};
    double v = jsd_open("{}", &l) ? jsd_run(&l, s, t) : NAN;
    double gmax = s->grad ? 0 : NAN;
    for (int64_t i = 0; s->grad && i < kd_tensor_numel(s->grad); i++)
        gmax = fmax(gmax, fabs(kd_tensor_get(s->grad, i)));
    kt_check(v == 0 && gmax == 0, "jsd equal logits: exactly 0, zero gradient",
             "loss %g, largest gradient %g", v, gmax);
    if (l.self)
        l.vt->destroy(l.self);
    kd_tensor_free(s);
    kd_tensor_free(t);
}

static void test_errors(void)
{
    jsd_loss l = {0};
    if (!kt_check(jsd_open("{}", &l), "jsd create", "%s", kd_last_error()))
        return;
    kd_tensor *s = logits(2, 5, 1, 1), *t = logits(2, 4, 1, 2);
    double v = jsd_run(&l, s, t);
    kt_check(isnan(v) && strstr(kd_last_error(), "jsd: student logits [2, 5] (tap 'logits') "
                                                 "and teacher logits [2, 4]"),
             "jsd error: shapes differ", "%g: %s", v, kd_last_error());
    kd_tensor *st[1] = {s};
    const kd_loss_args args = {.size = sizeof args, .student = st, .training = true};
    kd_loss_result r = {.size = sizeof r};
    kd_status status = l.vt->forward(l.self, &args, &r);
    kt_check(status != KD_OK && strstr(kd_last_error(), "the job needs a teacher"),
             "jsd error: no teacher", "%s", kd_last_error());
    kd_tap_shape ss = {2, {1, 5}}, ts = {2, {1, 4}};
    const kd_bind_args bind = {.size = sizeof bind, .student = &ss, .teacher = &ts};
    kt_check(l.vt->bind(l.self, &bind) != KD_OK &&
                 strstr(kd_last_error(), "must both be [N, classes] logits"),
             "jsd error: bind with different classes", "%s", kd_last_error());
    l.vt->destroy(l.self);
    kd_tensor_free(s);
    kd_tensor_free(t);
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_LOSS, "jsd", &h);
    kd_params *p = e ? kt_params(e, "{\"eps\": -1}") : NULL;
    kt_check(e && !p, "jsd schema refuses eps < 0", "the parameters built");
    kd_params_free(p);
}

int main(void)
{
    test_parity();
    test_equal_logits();
    test_errors();
    kt_plugins_close();
    return kt_finish();
}
