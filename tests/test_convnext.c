/* The convnext model plugin beyond timm parity (test_timm_models holds its
 * forward, taps and gradients to timm): initialisation, seeds, depths,
 * drop-path and dropout, errors. */
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

static bool all_equal(const kd_tensor *t, double v)
{
    for (int64_t i = 0, n = kd_tensor_numel(t); i < n; i++)
        if (kd_tensor_get(t, i) != v)
            return false;
    return true;
}

/* timm's _init_weights: conv and Linear weights trunc_normal(std .02),
 * biases 0, LayerNorm 1 / 0, layer scale 1e-6. */
static void test_init(const char *provider)
{
    char name[96], bad[256] = "";
    snprintf(name, sizeof name, "%s init follows timm's", provider);
    kt_model m;
    if (!kt_model_open(&m, provider, "{\"depths\": [1, 1, 2, 1]}", KD_F32, 3, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        const char *tn = m.tensors[i].name;
        const kd_tensor *t = m.tensors[i].tensor;
        if (t->ndim >= 2) {
            double s = 0, s2 = 0;
            int64_t n = kd_tensor_numel(t);
            for (int64_t j = 0; j < n; j++) {
                s += kd_tensor_get(t, j);
                s2 += kd_tensor_get(t, j) * kd_tensor_get(t, j);
            }
            double mean = s / (double)n, std = sqrt(s2 / (double)n - mean * mean);
            if (n >= 4096 && (fabs(std / 0.02 - 1) > 0.1 || fabs(mean) > 0.002))
                snprintf(bad, sizeof bad, "%s: mean %g std %g, want std 0.02", tn, mean, std);
        } else if (ends_with(tn, ".gamma")) {
            if (!all_equal(t, (double)1e-6f))
                snprintf(bad, sizeof bad, "%s is not 1e-6", tn);
        } else if (ends_with(tn, ".bias")) {
            if (!all_equal(t, 0))
                snprintf(bad, sizeof bad, "%s is not zero", tn);
        } else if (!all_equal(t, 1)) { /* LayerNorm weight */
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
    const char *name = "convnext_atto init is a function of the seed";
    kt_model a, b, c;
    bool ok = kt_model_open(&a, "convnext_atto", "{}", KD_F32, 5, NULL) &&
              kt_model_open(&b, "convnext_atto", "{}", KD_F32, 5, NULL) &&
              kt_model_open(&c, "convnext_atto", "{}", KD_F32, 6, NULL);
    kt_check(ok && same_tensors(&a, &b) && !same_tensors(&a, &c), name, "%s",
             ok ? "seed 5 twice differs, or seeds 5 and 6 agree" : kd_last_error());
    kt_model_close(&a);
    kt_model_close(&b);
    kt_model_close(&c);
}

/* depths [1, 2, 1, 1] has the variant's first blocks under their names
 * and nothing past the counts. */
static void test_depths(void)
{
    const char *name = "convnext_tiny depths [1, 2, 1, 1] keeps timm's names";
    kt_model m;
    if (!kt_model_open(&m, "convnext_tiny", "{\"depths\": [1, 2, 1, 1]}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    /* stem 4, per block 9, per downsample 4, head 4 */
    int want = 4 + 5 * 9 + 3 * 4 + 4;
    kt_check(m.n_tensors == want && kt_model_tensor(&m, "stages.1.blocks.1.gamma") &&
                 !kt_model_tensor(&m, "stages.0.blocks.1.gamma") &&
                 kt_model_tensor(&m, "stages.3.downsample.1.weight"),
             name, "%d tensors, want %d, or a block name missing", m.n_tensors, want);
    kt_model_close(&m);
}

static kd_tensor *logits_of(const kt_model *m, kd_tensor *x, bool training, uint64_t key)
{
    kd_tensor *taps[KT_MAX_TAPS];
    bool want[KT_MAX_TAPS] = {0};
    want[m->n_taps - 1] = true;
    kd_forward_args a = {sizeof a, x, training, kd_rng_make(key, 0, 0), want, taps};
    return m->vt->forward(m->self, &a) == KD_OK ? taps[m->n_taps - 1] : NULL;
}

/* Stochastic depth and dropout act in training only, drawing from the
 * forward's rng. ConvNeXt has no batch statistics, so without them the
 * train forward equals eval exactly. */
static void test_stochastic(const char *params)
{
    char name[160];
    snprintf(name, sizeof name, "convnext_atto %s: training drops, drawn from the "
             "step's rng", params);
    kt_model drop;
    if (!kt_model_open(&drop, "convnext_atto", params, KD_F32, 9, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    /* layer scale 1 instead of 1e-6, so dropping a block shows */
    for (int i = 0; i < drop.n_tensors; i++)
        if (ends_with(drop.tensors[i].name, ".gamma"))
            kd_tensor_fill_(drop.tensors[i].tensor, 1.0);
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *x = random_images(4, 3, 32, 2);
    kd_tensor *eval = logits_of(&drop, x, false, 1), *t1 = logits_of(&drop, x, true, 1);
    kd_tensor *t1_again = logits_of(&drop, x, true, 1), *t2 = logits_of(&drop, x, true, 2);
    bool ok = eval && t1 && t1_again && t2 && kt_rel_error(t1, eval) > 1e-3 &&
              kt_max_abs_diff(t1_again, t1) == 0 && kt_rel_error(t2, t1) > 1e-3;
    kt_check(ok, name, "%s", eval && t1 && t2 ? "training did not follow the rng"
                                               : kd_last_error());
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&drop);
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
    kt_model_open(&m, "convnext_pico", "{\"depths\": [1, 1, 1]}", KD_F32, 1, &st);
    expect_error("depths with three counts", st, KD_ERR_INVALID,
                 "convnext_pico: depths has 3 entries");
    kt_model_open(&m, "convnext_pico", "{\"depths\": [1, 0, 1, 1]}", KD_F32, 1, &st);
    expect_error("a stage of no blocks", st, KD_ERR_INVALID, "depths[1] is 0");
    if (!kt_model_open(&m, "convnext_atto", "{\"in_chans\": 1}", KD_F32, 1, NULL)) {
        kt_fail("convnext_atto with in_chans 1", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[KT_MAX_TAPS];
    st = kt_model_run(&m, -1, random_images(2, 1, 28, 1), false, NULL, taps);
    expect_error("a 28x28 image (stage 3 would be empty)", st, KD_ERR_INVALID,
                 "convnext_atto: input [2, 1, 28, 28] is not [N, 1, H, W] images with H, W "
                 ">= 32");
    st = kt_model_run(&m, kt_model_tap(&m, "stages.1"), random_images(2, 40, 8, 1), false, NULL,
                      taps);
    expect_error("forward_from stages.1 with stages.0's channels", st, KD_ERR_INVALID,
                 "forward_from stages.1: input [2, 40, 8, 8] is not [N, 80, H, W]");
    st = kt_model_run(&m, m.n_taps - 1, random_images(2, 1, 32, 1), false, NULL, taps);
    expect_error("forward_from the logits tap", st, KD_ERR_INVALID, "is out of range");
    kd_scope_end();
    kt_model_close(&m);
}

/* DataParallel checkpoints ("module.<name>") load through the filter. */
static void test_filter(void)
{
    const char *name = "convnext_atto's filter drops DataParallel's module. prefix";
    kt_model m;
    if (!kt_model_open(&m, "convnext_atto", "{}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_weight_fix fix = {sizeof fix, "module.stem.0.weight", NULL, false};
    kd_status st = m.vt->filter_weight(m.self, &fix);
    kd_weight_fix plain = {sizeof plain, "stem.0.weight", NULL, false};
    if (st == KD_OK)
        st = m.vt->filter_weight(m.self, &plain);
    kt_check(st == KD_OK && strcmp(fix.name, "stem.0.weight") == 0 && strcmp(plain.name, "stem.0.weight") == 0 &&
                 !fix.drop && !fix.value,
             name, "%s -> %s", "module.stem.0.weight", st == KD_OK ? fix.name : kd_last_error());
    kt_model_close(&m);
}

int main(void)
{
    test_init("convnext_atto");
    test_init("convnext_tiny");
    test_seeds();
    test_depths();
    test_stochastic("{\"drop_path_rate\": 0.5}");
    test_stochastic("{\"drop_rate\": 0.5}");
    test_errors();
    test_filter();
    kt_plugins_close();
    return kt_finish();
}
