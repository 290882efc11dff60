/* The mobilenet model plugin beyond timm parity (test_timm_models holds
 * its forward, taps and gradients to timm): initialisation, seeds,
 * drop-path and dropout, freeze, stopping early, errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "model_fixture.h"

static kd_tensor *random_images(int64_t n, int64_t c, int64_t hw, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 1, 0);
    return kt_uniform(KD_F32, 4, (int64_t[]){n, c, hw, hw}, &rng, -1, 1);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static void moments(const kd_tensor *t, double *mean, double *std)
{
    double s = 0, s2 = 0;
    int64_t n = kd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = kd_tensor_get(t, i);
        s += v;
        s2 += v * v;
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
}

static bool all_equal(const kd_tensor *t, double v)
{
    for (int64_t i = 0, n = kd_tensor_numel(t); i < n; i++)
        if (kd_tensor_get(t, i) != v)
            return false;
    return true;
}

/* timm's _init_weight_goog: convs N(0, sqrt(2 / (k*k*out/groups))),
 * the classifier uniform in +-1/sqrt(out_features), biases and BN shift
 * 0, BN scale 1, running statistics 0 / 1. */
static void test_init(const char *provider)
{
    char name[96], bad[256] = "";
    snprintf(name, sizeof name, "%s init follows timm's _init_weight_goog", provider);
    kt_model m;
    if (!kt_model_open(&m, provider, "{}", KD_F32, 3, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        const char *tn = m.tensors[i].name;
        const kd_tensor *t = m.tensors[i].tensor;
        double mean, std;
        if (t->ndim == 4) {
            /* depthwise (one input channel per group): fan_out = k*k */
            double fan_out = (double)(t->shape[1] == 1 ? 1 : t->shape[0]) *
                             (double)(t->shape[2] * t->shape[3]);
            double want = sqrt(2.0 / fan_out);
            moments(t, &mean, &std);
            if (kd_tensor_numel(t) >= 4096 &&
                (fabs(std / want - 1) > 0.1 || fabs(mean) > 0.1 * want))
                snprintf(bad, sizeof bad, "%s: mean %g std %g, want std %g", tn, mean, std, want);
        } else if (strcmp(tn, "classifier.weight") == 0) {
            double bound = 1 / sqrt((double)t->shape[0]);
            moments(t, &mean, &std);
            for (int64_t j = 0; j < kd_tensor_numel(t) && !bad[0]; j++)
                if (fabs(kd_tensor_get(t, j)) > bound)
                    snprintf(bad, sizeof bad, "%s beyond +-%g", tn, bound);
            if (!bad[0] && fabs(std / (bound / sqrt(3.0)) - 1) > 0.05)
                snprintf(bad, sizeof bad, "%s std %g for uniform +-%g", tn, std, bound);
        } else if (ends_with(tn, "num_batches_tracked") || ends_with(tn, "running_mean") ||
                   ends_with(tn, ".bias")) {
            if (!all_equal(t, 0))
                snprintf(bad, sizeof bad, "%s is not zero", tn);
        } else if (!all_equal(t, 1)) { /* BN weight, running_var */
            snprintf(bad, sizeof bad, "%s is not one", tn);
        }
    }
    kt_check(!bad[0], name, "%s", bad);
    kt_model_close(&m);
}

static bool same_tensors(const kt_model *a, const kt_model *b)
{
    if (a->n_tensors != b->n_tensors)
        return false;
    for (int i = 0; i < a->n_tensors; i++)
        if (!kd_tensor_same_shape(a->tensors[i].tensor, b->tensors[i].tensor) ||
            kt_max_abs_diff(a->tensors[i].tensor, b->tensors[i].tensor) != 0)
            return false;
    return true;
}

static void test_seeds(void)
{
    const char *name = "mobilenetv3_small_100 init is a function of the seed";
    kt_model a, b, c;
    bool ok = kt_model_open(&a, "mobilenetv3_small_100", "{}", KD_F32, 5, NULL) &&
              kt_model_open(&b, "mobilenetv3_small_100", "{}", KD_F32, 5, NULL) &&
              kt_model_open(&c, "mobilenetv3_small_100", "{}", KD_F32, 6, NULL);
    kt_check(ok && same_tensors(&a, &b) && !same_tensors(&a, &c), name, "%s",
             ok ? "seed 5 twice differs, or seeds 5 and 6 agree" : kd_last_error());
    kt_model_close(&a);
    kt_model_close(&b);
    kt_model_close(&c);
}

/* The logits of a train-mode (or eval) forward on x, rng key `key`. */
static kd_tensor *logits_of(const kt_model *m, kd_tensor *x, bool training, uint64_t key)
{
    kd_tensor *taps[KT_MAX_TAPS];
    bool want[KT_MAX_TAPS] = {0};
    want[m->n_taps - 1] = true;
    kd_forward_args a = {sizeof a, x, training, kd_rng_make(key, 0, 0), want, taps};
    return m->vt->forward(m->self, &a) == KD_OK ? taps[m->n_taps - 1] : NULL;
}

/* Stochastic depth and dropout act in training only, drawing from the
 * forward's rng: eval equals the rate-0 model's, training does not, and
 * one rng key gives one answer. */
static void test_stochastic(const char *params)
{
    char name[160];
    snprintf(name, sizeof name, "mobilenetv3_large_100 %s: eval unchanged, training drawn "
             "from the step's rng", params);
    kt_model plain, drop;
    if (!kt_model_open(&plain, "mobilenetv3_large_100", "{}", KD_F32, 9, NULL) ||
        !kt_model_open(&drop, "mobilenetv3_large_100", params, KD_F32, 9, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kt_model_close(&plain);
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *x = random_images(4, 3, 32, 2);
    kd_tensor *e0 = logits_of(&plain, x, false, 1), *e1 = logits_of(&drop, x, false, 1);
    kd_tensor *t0 = logits_of(&plain, x, true, 1), *t1 = logits_of(&drop, x, true, 1);
    kd_tensor *t1_again = logits_of(&drop, x, true, 1), *t1_other = logits_of(&drop, x, true, 2);
    bool ok = e0 && e1 && t0 && t1 && t1_again && t1_other && kt_max_abs_diff(e0, e1) == 0 &&
              kt_rel_error(t1, t0) > 1e-3 && kt_rel_error(t1_again, t1) < 1e-6 &&
              kt_rel_error(t1_other, t1) > 1e-3;
    kt_check(ok, name, "%s", e0 && e1 && t0 && t1 ? "eval moved, or training did not "
             "follow the rng" : kd_last_error());
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&plain);
    kt_model_close(&drop);
}

/* freeze() folds each BN into its conv: the same eval answer to f32
 * rounding, and gradients still reach the input of forward_from. */
static void test_freeze(const char *provider)
{
    char name[128];
    snprintf(name, sizeof name, "%s frozen (folded BN) gives the eval answer", provider);
    kt_model m;
    if (!kt_model_open(&m, provider, "{\"num_classes\": 10}", KD_F32, 4, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    /* running statistics away from 0 / 1, so the fold has work to do */
    for (int i = 0; i < m.n_tensors; i++) {
        kd_tensor *t = m.tensors[i].tensor;
        kd_rng rng = kd_rng_make(7, 3, (uint64_t)i);
        if (ends_with(m.tensors[i].name, "running_var"))
            kd_tensor_copy_(t, kt_uniform(KD_F32, t->ndim, t->shape, &rng, 0.5, 1.5));
        else if (ends_with(m.tensors[i].name, "running_mean") || ends_with(m.tensors[i].name,
                                                                           "bn1.bias"))
            kd_tensor_copy_(t, kt_uniform(KD_F32, t->ndim, t->shape, &rng, -0.2, 0.2));
    }
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *x = random_images(2, 3, 64, 3);
    kd_tensor *before[KT_MAX_TAPS], *after[KT_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, x, false, NULL, before);
    if (st == KD_OK)
        st = m.vt->freeze(m.self);
    if (st == KD_OK)
        st = kt_model_run(&m, -1, x, false, NULL, after);
    char bad[200] = "";
    for (int t = 0; st == KD_OK && t < m.n_taps && !bad[0]; t++)
        if (kt_rel_error(after[t], before[t]) > 1e-5)
            snprintf(bad, sizeof bad, "%s moved by %.3g", m.taps[t].name,
                     kt_rel_error(after[t], before[t]));
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);

    snprintf(name, sizeof name, "%s frozen: gradients reach forward_from's input", provider);
    kd_set_grad_enabled(true);
    int from = kt_model_tap(&m, "blocks.1");
    kd_tensor *feature = kd_tensor_to_device(before[from], KD_CPU);
    kd_tensor_set_requires_grad(feature, true);
    kd_tensor *taps[KT_MAX_TAPS];
    st = kt_model_run(&m, from, feature, false, NULL, taps);
    if (st == KD_OK)
        st = kd_backward(kd_sum_all(taps[m.n_taps - 1]));
    const kd_named_tensor *w = kt_model_tensor(&m, "blocks.2.0.conv_pw.weight");
    kt_check(st == KD_OK && feature->grad && kd_tensor_numel(feature->grad) > 0 && w &&
                 !w->tensor->grad,
             name, "%s", st != KD_OK ? kd_last_error() : "no input gradient, or a weight got one");
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&m);
}

/* Wanting blocks.1 alone runs nothing after it: later BN counters stay. */
static void test_early_stop(void)
{
    const char *name = "mobilenetv2_100 stops after the last wanted tap";
    kt_model m;
    if (!kt_model_open(&m, "mobilenetv2_100", "{}", KD_F32, 3, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool want[KT_MAX_TAPS] = {0};
    int t = kt_model_tap(&m, "blocks.1");
    want[t] = true;
    kd_tensor *taps[KT_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, random_images(2, 3, 32, 6), true, want, taps);
    const kd_named_tensor *ran = kt_model_tensor(&m, "blocks.1.1.bn3.num_batches_tracked");
    const kd_named_tensor *later = kt_model_tensor(&m, "blocks.2.0.bn1.num_batches_tracked");
    bool ok = st == KD_OK && taps[t] && taps[t]->shape[1] == 24 && taps[t]->shape[2] == 8 &&
              !taps[t + 1] && !taps[m.n_taps - 1] && ran && later &&
              kd_tensor_get(ran->tensor, 0) == 1 && kd_tensor_get(later->tensor, 0) == 0;
    kt_check(ok, name, "%s", st != KD_OK ? kd_last_error() : "later layers ran or taps missing");
    kd_scope_end();
    kt_model_close(&m);
}

static void expect_error(const char *name, kd_status st, kd_status want, const char *needle)
{
    kt_check(st == want && strstr(kd_last_error(), needle), name, "status %s, message '%s'",
             kd_status_name(st), kd_last_error());
}

static void test_errors(void)
{
    kt_model m;
    kd_status st;
    kt_model_open(&m, "mobilenetv2_100", "{\"drop_rate\": 1.0}", KD_F32, 1, &st);
    expect_error("drop_rate 1 fails the schema", st, KD_ERR_INVALID, "do not validate");
    if (!kt_model_open(&m, "mobilenetv3_small_100", "{\"in_chans\": 1}", KD_F32, 1, NULL)) {
        kt_fail("mobilenetv3_small_100 with in_chans 1", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[KT_MAX_TAPS];
    st = kt_model_run(&m, -1, random_images(2, 3, 32, 1), false, NULL, taps);
    expect_error("forward on 3 channels for in_chans 1", st, KD_ERR_INVALID,
                 "mobilenetv3_small_100: input [2, 3, 32, 32] is not [N, 1, H, W]");
    st = kt_model_run(&m, m.n_taps - 1, random_images(2, 1, 8, 1), false, NULL, taps);
    expect_error("forward_from the logits tap", st, KD_ERR_INVALID, "is out of range");
    st = kt_model_run(&m, kt_model_tap(&m, "blocks.2"), random_images(2, 24, 4, 1), false, NULL,
                      taps);
    expect_error("forward_from blocks.2 with blocks.1's channels", st, KD_ERR_INVALID,
                 "forward_from blocks.2: input [2, 24, 4, 4] is not [N, 40, H, W]");
    st = kt_model_run(&m, kt_model_tap(&m, "pre_logits"), random_images(2, 1024, 1, 1), false,
                      NULL, taps);
    expect_error("forward_from pre_logits with a map", st, KD_ERR_INVALID, "is not [N, 1024]");
    kd_tensor *f64 = kd_tensor_zeros(KD_F64, KD_CPU, 4, (int64_t[]){1, 1, 32, 32});
    st = kt_model_run(&m, -1, f64, false, NULL, taps);
    expect_error("forward on f64 input to an f32 model", st, KD_ERR_UNSUPPORTED,
                 "takes f32 CPU tensors");
    /* one value per channel in the last stages: batch statistics undefined */
    st = kt_model_run(&m, -1, random_images(1, 1, 16, 1), true, NULL, taps);
    expect_error("training on a 16x16 image with batch 1", st, KD_ERR_INVALID,
                 "mobilenetv3_small_100: blocks.");
    kd_scope_end();
    kt_model_close(&m);
}

/* DataParallel checkpoints ("module.<name>") load through the filter. */
static void test_filter(void)
{
    const char *name = "mobilenetv3_small_100's filter drops DataParallel's module. prefix";
    kt_model m;
    if (!kt_model_open(&m, "mobilenetv3_small_100", "{}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_weight_fix fix = {sizeof fix, "module.conv_stem.weight", NULL, false};
    kd_status st = m.vt->filter_weight(m.self, &fix);
    kd_weight_fix plain = {sizeof plain, "conv_stem.weight", NULL, false};
    if (st == KD_OK)
        st = m.vt->filter_weight(m.self, &plain);
    kt_check(st == KD_OK && strcmp(fix.name, "conv_stem.weight") == 0 && strcmp(plain.name, "conv_stem.weight") == 0 &&
                 !fix.drop && !fix.value,
             name, "%s -> %s", "module.conv_stem.weight", st == KD_OK ? fix.name : kd_last_error());
    kt_model_close(&m);
}

int main(void)
{
    test_init("mobilenetv2_100");
    test_init("mobilenetv3_large_100");
    test_init("mobilenetv3_small_100");
    test_seeds();
    test_stochastic("{\"drop_path_rate\": 0.5}");
    test_stochastic("{\"drop_rate\": 0.5}");
    test_freeze("mobilenetv2_100");
    test_freeze("mobilenetv3_large_100");
    test_early_stop();
    test_errors();
    test_filter();
    kt_plugins_close();
    return kt_finish();
}
