/* The mixer model plugin beyond the timm parity table (test_timm_models):
 * taps and their layouts, timm's initialisation, drop-path, forward_from
 * from a vector tap, and errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "model_fixture.h"
#include "plugin_fixture.h"

#define SMALL "{\"depth\": 2, \"num_classes\": 4, \"img_size\": 32, \"patch_size\": 8"

static kd_tensor *images(int64_t n, int64_t c, int64_t hw, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 1, 0);
    return kt_uniform(KD_F32, 4, (int64_t[]){n, c, hw, hw}, &rng, -1, 1);
}

static void test_taps(void)
{
    const char *name = "mixer_s16 taps: names, channels, layouts";
    kt_model m;
    if (!kt_model_open(&m, "mixer_s16_224", SMALL "}", 1, KD_F32, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    static const kd_tap_info want[] = {
        {"stem", 512, 8, KD_LAYOUT_TOKENS, 0},     {"blocks.0", 512, 8, KD_LAYOUT_TOKENS, 0},
        {"blocks.1", 512, 8, KD_LAYOUT_TOKENS, 0}, {"norm", 512, 8, KD_LAYOUT_TOKENS, 0},
        {"pre_logits", 512, 1, KD_LAYOUT_NC, 0},   {"logits", 4, 1, KD_LAYOUT_NC, 0}};
    int n = (int)(sizeof want / sizeof want[0]), i = 0;
    bool ok = m.n_taps == n;
    for (; ok && i < n; i++)
        ok = strcmp(m.taps[i].name, want[i].name) == 0 && m.taps[i].channels == want[i].channels &&
             m.taps[i].reduction == want[i].reduction && m.taps[i].layout == want[i].layout &&
             m.taps[i].prefix_tokens == want[i].prefix_tokens;
    kt_check(ok, name, "%d taps; first difference at tap %d", m.n_taps, i - 1);
    kt_model_close(&m);
}

/* timm's _init_weights: block Linears xavier uniform with N(0, 1e-6)
 * biases, the head zero, the stem lecun normal (truncated at 2 std) with
 * a zero bias, LayerNorms 1 and 0. */
static void test_init(void)
{
    const char *name = "mixer_b16 init follows timm's";
    kt_model m;
    if (!kt_model_open(&m, "mixer_b16_224", "{\"depth\": 1}", 2, KD_F32, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    char bad[200] = "";
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        const char *n = m.tensors[i].name;
        const kd_tensor *t = m.tensors[i].tensor;
        int64_t count = kd_tensor_numel(t);
        double s = 0, s2 = 0, peak = 0;
        for (int64_t j = 0; j < count; j++) {
            double v = kd_tensor_get(t, j);
            s += v;
            s2 += v * v;
            peak = fmax(peak, fabs(v));
        }
        double std = sqrt(s2 / (double)count - (s / (double)count) * (s / (double)count));
        bool bias = strstr(n, ".bias") != NULL;
        if (strcmp(n, "stem.proj.weight") == 0) {
            double want = 1 / sqrt(3.0 * 16 * 16); /* the kept part's std */
            if (fabs(std / want - 1) > 0.05 || peak > 2 * want / 0.87962566103423978)
                snprintf(bad, sizeof bad, "%s: std %g (want %g), peak %g", n, std, want, peak);
        } else if (strncmp(n, "head.", 5) == 0 || strcmp(n, "stem.proj.bias") == 0 ||
                   (strstr(n, "norm") && bias)) {
            if (peak != 0)
                snprintf(bad, sizeof bad, "%s is not zero", n);
        } else if (strstr(n, "norm")) {
            if (s != (double)count || std != 0)
                snprintf(bad, sizeof bad, "%s is not one", n);
        } else if (bias) {
            if (fabs(std / 1e-6 - 1) > 0.2)
                snprintf(bad, sizeof bad, "%s: std %g, want 1e-6", n, std);
        } else {
            double bound = sqrt(6.0 / (double)(t->shape[0] + t->shape[1]));
            if (peak > bound || fabs(std / (bound / sqrt(3.0)) - 1) > 0.05)
                snprintf(bad, sizeof bad, "%s: std %g peak %g for xavier bound %g", n, std,
                         peak, bound);
        }
    }
    kt_check(!bad[0], name, "%s", bad);
    kt_model_close(&m);
}

/* Drop-path in every block at the same rate: training differs from eval,
 * and the same rng gives the same step; forward_from pre_logits gives the
 * logits. */
static void test_forward_paths(void)
{
    const char *name = "mixer_s16 drop-path follows the rng; forward_from pre_logits";
    kt_model m;
    if (!kt_model_open(&m, "mixer_s16_224", SMALL ", \"drop_path_rate\": 0.4}", 3, KD_F32,
                       NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    /* the zero head would hide every difference in the logits */
    kd_tensor_fill_(kt_model_tensor(&m, "head.weight"), 0.25);
    kd_tensor *x = images(4, 3, 32, 7), *e[KT_MODEL_MAX_TAPS], *a[KT_MODEL_MAX_TAPS];
    kd_tensor *b[KT_MODEL_MAX_TAPS], *from[KT_MODEL_MAX_TAPS];
    int last = m.n_taps - 1, pre = kt_model_tap(&m, "pre_logits");
    kd_status st = kt_model_run(&m, -1, x, false, 0, NULL, e);
    if (st == KD_OK)
        st = kt_model_run(&m, -1, x, true, 1, NULL, a);
    if (st == KD_OK)
        st = kt_model_run(&m, -1, x, true, 1, NULL, b);
    if (st == KD_OK)
        st = kt_model_run(&m, pre, e[pre], false, 0, NULL, from);
    char bad[160] = "";
    if (st != KD_OK)
        snprintf(bad, sizeof bad, "%s", kd_last_error());
    else if (kt_max_abs_diff(a[last], b[last]) != 0)
        snprintf(bad, sizeof bad, "two steps with the same rng differ");
    else if (kt_max_abs_diff(a[last], e[last]) == 0)
        snprintf(bad, sizeof bad, "drop-path changed nothing");
    else if (kt_max_abs_diff(from[last], e[last]) != 0)
        snprintf(bad, sizeof bad, "forward_from pre_logits differs");
    kt_check(!bad[0], name, "%s", bad);
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&m);
}

static void expect_error(const char *name, kd_status st, const char *needle)
{
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), needle), name,
             "status %s, message '%s'", kd_status_name(st), kd_last_error());
}

static void test_errors(void)
{
    kt_model m;
    if (!kt_model_open(&m, "mixer_s16_224", SMALL ", \"in_chans\": 1}", 1, KD_F32, NULL)) {
        kt_fail("mixer errors", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[KT_MODEL_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, images(2, 1, 28, 1), false, 0, NULL, taps);
    expect_error("an image of another size is refused", st,
                 "mixer_s16_224: input [2, 1, 28, 28] is not [N, 1, 32, 32] images");
    st = kt_model_run(&m, kt_model_tap(&m, "stem"),
                      kd_tensor_zeros(KD_F32, KD_CPU, 3, (int64_t[]){2, 17, 512}), false, 0,
                      NULL, taps);
    expect_error("forward_from stem with another token count", st,
                 "forward_from stem: input [2, 17, 512] is not [N, 16, 512]");
    st = kt_model_run(&m, m.n_taps - 1, images(2, 1, 32, 1), false, 0, NULL, taps);
    expect_error("forward_from the logits", st, "forward_from tap 5 is out of range");
    kd_scope_end();
    kt_model_close(&m);
    kd_status s;
    kt_model_open(&m, "mixer_b16_224", "{\"drop_path_rate\": 1.0}", 1, KD_F32, &s);
    kt_check(s == KD_ERR_INVALID, "drop_path_rate 1 fails the schema", "status %s",
             kd_status_name(s));
}

int main(void)
{
    test_taps();
    test_init();
    test_forward_paths();
    test_errors();
    kt_plugins_close();
    return kt_finish();
}
