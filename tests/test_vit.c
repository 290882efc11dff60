/* The vit model plugin beyond the timm parity table (test_timm_models):
 * taps and their layouts, a distilled model's two heads in training and
 * eval, the pos_embed resize of filter_weight against timm's checkpoint
 * filter (tests/parity/timm_pos_embed.py), stochastic layers, stopping
 * early, initialisation and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model_fixture.h"
#include "plugin_fixture.h"

#define DISTILLED "deit_tiny_distilled_patch16_224"
#define SMALL "{\"depth\": 2, \"num_classes\": 5, \"img_size\": 32, \"patch_size\": 8"

static kd_tensor *images(kd_dtype dt, int64_t n, int64_t c, int64_t hw, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 1, 0);
    return kt_uniform(dt, 4, (int64_t[]){n, c, hw, hw}, &rng, -1, 1);
}

static void test_taps(void)
{
    const char *name = "deit_tiny_distilled taps: names, channels, layouts, prefix tokens";
    kt_model m;
    if (!kt_model_open(&m, DISTILLED, SMALL "}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
#define TOK KD_LAYOUT_TOKENS
#define VEC KD_LAYOUT_NC
    static const kd_tap_info want[] = {
        {"patch_embed", 192, 8, TOK, 0}, {"pos_drop", 192, 8, TOK, 2},
        {"blocks.0", 192, 8, TOK, 2},    {"blocks.1", 192, 8, TOK, 2},
        {"norm", 192, 8, TOK, 2},        {"pre_logits", 192, 1, VEC, 0},
        {"logits_dist", 5, 1, VEC, 0},   {"logits", 5, 1, VEC, 0}};
#undef TOK
#undef VEC
    int n = (int)(sizeof want / sizeof want[0]), i = 0;
    bool ok = m.n_taps == n;
    for (; ok && i < n; i++)
        ok = strcmp(m.taps[i].name, want[i].name) == 0 && m.taps[i].channels == want[i].channels &&
             m.taps[i].reduction == want[i].reduction && m.taps[i].layout == want[i].layout &&
             m.taps[i].prefix_tokens == want[i].prefix_tokens;
    kt_check(ok, name, "%d taps; first difference at tap %d", m.n_taps, i - 1);
    kt_model_close(&m);
}

/* head(x[:, i]) from the final norm's tokens, by the SDK's own ops. */
static kd_tensor *head_of(const kt_model *m, const char *head, kd_tensor *normed, int i)
{
    char w[32], b[32];
    snprintf(w, sizeof w, "%s.weight", head);
    snprintf(b, sizeof b, "%s.bias", head);
    kd_tensor *tok = kd_reshape(kd_slice(normed, 1, i, i + 1, 1), 2,
                                (int64_t[]){normed->shape[0], normed->shape[2]});
    return kd_linear(tok, kt_model_tensor(m, w)->tensor, kt_model_tensor(m, b)->tensor);
}

/* Training with distilled_training: "logits" is the class head alone and
 * "logits_dist" the distillation head; in eval (and in training without
 * it) "logits" is their mean. */
static void test_distilled_heads(void)
{
    const char *modes[2] = {SMALL ", \"distilled_training\": true}",
                            SMALL ", \"distilled_training\": false}"};
    for (int k = 0; k < 2; k++) {
        char name[160];
        snprintf(name, sizeof name, "deit_tiny_distilled heads, distilled_training %s",
                 k == 0 ? "true" : "false");
        kt_model m;
        if (!kt_model_open(&m, DISTILLED, modes[k], KD_F64, 3, NULL)) {
            kt_fail(name, "%s", kd_last_error());
            continue;
        }
        kd_scope_begin();
        bool prev = kd_set_grad_enabled(false);
        kd_tensor *x = images(KD_F64, 3, 3, 32, 4), *taps[KT_MAX_TAPS];
        int norm = kt_model_tap(&m, "norm"), dist = kt_model_tap(&m, "logits_dist");
        int logits = kt_model_tap(&m, "logits"), pre = kt_model_tap(&m, "pre_logits");
        char bad[200] = "";
        for (int training = 0; training < 2 && !bad[0]; training++) {
            if (kt_model_run(&m, -1, x, training, NULL, taps) != KD_OK) {
                snprintf(bad, sizeof bad, "%s", kd_last_error());
                break;
            }
            kd_tensor *cls = head_of(&m, "head", taps[norm], 0);
            kd_tensor *dst = head_of(&m, "head_dist", taps[norm], 1);
            kd_tensor *mean = kd_mul_scalar(kd_add(cls, dst), 0.5);
            kd_tensor *pooled = kd_mul_scalar(
                kd_add(kd_slice(taps[norm], 1, 0, 1, 1), kd_slice(taps[norm], 1, 1, 2, 1)), 0.5);
            bool alone = training && k == 0;
            if (kt_max_abs_diff(taps[dist], dst) > 1e-12)
                snprintf(bad, sizeof bad, "logits_dist is not head_dist(dist token)");
            else if (kt_max_abs_diff(taps[logits], alone ? cls : mean) > 1e-12)
                snprintf(bad, sizeof bad, "%s logits are not %s", training ? "train" : "eval",
                         alone ? "the class head alone" : "the mean of the two heads");
            else if (kt_max_abs_diff(taps[pre], kd_reshape(pooled, 2, taps[pre]->shape)) > 1e-12)
                snprintf(bad, sizeof bad, "pre_logits is not the mean of the prefix tokens");
        }
        kt_check(!bad[0], name, "%s", bad);
        kd_set_grad_enabled(prev);
        kd_scope_end();
        kt_model_close(&m);
    }
}

/* --------------------------------------------------- pos_embed resizing */

typedef struct resize_case {
    const char *provider;
    int src_size, dst_size;
} resize_case;

static const resize_case RESIZE[] = {
    {"deit_tiny_patch16_224", 64, 96},           /* grid 4 -> 6, one prefix token */
    {"deit_tiny_distilled_patch16_224", 80, 48}, /* grid 5 -> 3: shrinking, two */
};
#define N_RESIZE ((int)(sizeof RESIZE / sizeof RESIZE[0]))

static void resize_case_run(int c, const char *dir)
{
    const resize_case *rc = &RESIZE[c];
    char name[200], path[256], params[128];
    snprintf(name, sizeof name, "%s: a pos_embed for img_size %d loads at %d as timm resizes it",
             rc->provider, rc->src_size, rc->dst_size);
    snprintf(path, sizeof path, "%s/%d.safetensors", dir, c);
    snprintf(params, sizeof params, "{\"depth\": 1, \"num_classes\": 3, \"img_size\": %d}",
             rc->dst_size);
    kd_safetensors *f = NULL;
    kt_model m;
    if (kd_safetensors_open(path, &f) != KD_OK ||
        !kt_model_open(&m, rc->provider, params, KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kd_safetensors_close(f);
        return;
    }
    kd_scope_begin();
    kd_tensor *src = kd_safetensors_load(f, "src", KD_F32);
    kd_tensor *want = kd_safetensors_load(f, "want", KD_F32);
    kd_weight_fix fix = {sizeof fix, "module.pos_embed", src, false};
    kd_status st = m.vt->filter_weight(m.self, &fix);
    kd_tensor *mine = kt_model_tensor(&m, "pos_embed")->tensor;
    char bad[200] = "";
    if (st != KD_OK)
        snprintf(bad, sizeof bad, "%s", kd_last_error());
    else if (strcmp(fix.name, "pos_embed") != 0 || fix.drop)
        snprintf(bad, sizeof bad, "renamed to %s (drop %d)", fix.name, fix.drop);
    else if (!kd_tensor_same_shape(fix.value, mine) || !kd_tensor_same_shape(fix.value, want))
        snprintf(bad, sizeof bad, "the resized pos_embed has another shape");
    else if (!(kt_rel_error(fix.value, want) <= 1e-6)) /* both float32 */
        snprintf(bad, sizeof bad, "relative error %.3g against timm",
                 kt_rel_error(fix.value, want));
    kt_check(!bad[0], name, "%s", bad);

    /* a file pos_embed of the model's own size passes untouched */
    kd_weight_fix same = {sizeof same, "pos_embed", want, false};
    st = m.vt->filter_weight(m.self, &same);
    kt_check(st == KD_OK && same.value == want, "a pos_embed of the model's grid is kept as is",
             "%s", st != KD_OK ? kd_last_error() : "replaced");
    kd_scope_end();
    kt_model_close(&m);
    kd_safetensors_close(f);
}

static bool timm_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import timm' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

static void test_resize(void)
{
    if (!timm_available()) {
        kt_skip("pos_embed resize against timm", "timm is not importable by %s",
                KD_TORCH_PYTHON);
        return;
    }
    char dir[] = "/tmp/kdvit.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("pos_embed resize", "cannot make a temporary directory");
        return;
    }
    char script[512], cmd[2048];
    kt_source_path("tests/parity/timm_pos_embed.py", script, sizeof script);
    int used = snprintf(cmd, sizeof cmd, "%s %s %s", KD_TORCH_PYTHON, script, dir);
    for (int c = 0; c < N_RESIZE; c++)
        used += snprintf(cmd + used, sizeof cmd - (size_t)used, " %s,%d,%d", RESIZE[c].provider,
                         RESIZE[c].src_size, RESIZE[c].dst_size);
    if (system(cmd) != 0)
        kt_fail("pos_embed resize", "the timm reference failed: %s", cmd);
    else
        for (int c = 0; c < N_RESIZE; c++)
            resize_case_run(c, dir);
    kt_remove_tree(dir);
}

/* ---------------------------------------- stochastic layers, stopping */

/* forward with every tap wanted and the rng of step `step`. */
static kd_status run_rng(const kt_model *m, int from, kd_tensor *input, bool training,
                         uint64_t step, const bool *want, kd_tensor **taps)
{
    bool all[KT_MAX_TAPS];
    for (int i = 0; i < m->n_taps; i++) {
        all[i] = true;
        taps[i] = NULL;
    }
    kd_forward_args a = {sizeof a, input, training, kd_rng_make(0, 0, step), want ? want : all,
                         taps};
    return from < 0 ? m->vt->forward(m->self, &a) : m->vt->forward_from(m->self, from, &a);
}

/* Without dropout and drop-path a ViT has nothing that differs in
 * training; with them, a step's draws come from its rng alone. */
static void test_stochastic(void)
{
    const char *name = "deit_tiny: training equals eval at rate 0; drop-path draws follow the rng";
    kt_model plain, dropping;
    if (!kt_model_open(&plain, "deit_tiny_patch16_224", SMALL "}", KD_F32, 5, NULL) ||
        !kt_model_open(&dropping, "deit_tiny_patch16_224",
                       SMALL ", \"drop_path_rate\": 0.5, \"drop_rate\": 0.3}", KD_F32, 5, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kt_model_close(&plain);
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *x = images(KD_F32, 4, 3, 32, 6), *e[KT_MAX_TAPS], *t[KT_MAX_TAPS];
    kd_tensor *a[KT_MAX_TAPS], *b[KT_MAX_TAPS], *c[KT_MAX_TAPS];
    int last = plain.n_taps - 1;
    kd_status st = kt_model_run(&plain, -1, x, false, NULL, e);
    if (st == KD_OK)
        st = kt_model_run(&plain, -1, x, true, NULL, t);
    if (st == KD_OK)
        st = run_rng(&dropping, -1, x, true, 1, NULL, a);
    if (st == KD_OK)
        st = run_rng(&dropping, -1, x, true, 1, NULL, b);
    if (st == KD_OK)
        st = run_rng(&dropping, -1, x, true, 2, NULL, c);
    char bad[160] = "";
    if (st != KD_OK)
        snprintf(bad, sizeof bad, "%s", kd_last_error());
    else if (kt_max_abs_diff(e[last], t[last]) != 0)
        snprintf(bad, sizeof bad, "training differs from eval without stochastic layers");
    else if (kt_max_abs_diff(a[last], b[last]) != 0)
        snprintf(bad, sizeof bad, "two steps with the same rng differ");
    else if (kt_max_abs_diff(a[last], c[last]) == 0 || kt_max_abs_diff(a[last], e[last]) == 0)
        snprintf(bad, sizeof bad, "drop-path and dropout changed nothing");
    kt_check(!bad[0], name, "%s", bad);
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&plain);
    kt_model_close(&dropping);
}

static void test_early_stop(void)
{
    const char *name = "deit_tiny stops after the last wanted tap";
    kt_model m;
    if (!kt_model_open(&m, "deit_tiny_patch16_224", SMALL "}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool want[KT_MAX_TAPS] = {false};
    int b0 = kt_model_tap(&m, "blocks.0");
    want[b0] = true;
    kd_tensor *taps[KT_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, images(KD_F32, 2, 3, 32, 1), false, want, taps);
    bool ok = st == KD_OK && taps[b0] && taps[b0]->ndim == 3 && taps[b0]->shape[1] == 17 &&
              taps[b0]->shape[2] == 192 && !taps[b0 + 1] && !taps[m.n_taps - 1];
    kt_check(ok, name, "%s", st != KD_OK ? kd_last_error() : "later taps were filled");
    kd_scope_end();
    kt_model_close(&m);
}

/* ---------------------------------------------------------------- init */

static void moments(const kd_tensor *t, double *mean, double *std)
{
    int64_t n = kd_tensor_numel(t);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = kd_tensor_get(t, i);
        s += v;
        s2 += v * v;
    }
    *mean = s / (double)n;
    *std = sqrt(fmax(s2 / (double)n - *mean * *mean, 0));
}

/* timm's init: Linear N(0, .02) with zero bias, pos_embed and dist_token
 * N(0, .02), cls_token N(0, 1e-6), LayerNorm 1 and 0, the patch
 * convolution torch's default U(+-1/sqrt(fan_in)); the same weights for
 * the same seed, others for another. */
static void test_init(void)
{
    const char *name = "deit_small_distilled init follows timm's";
    kt_model m, same, other;
    const char *p = "{\"depth\": 2}";
    if (!kt_model_open(&m, "deit_small_distilled_patch16_224", p, KD_F32, 8, NULL) ||
        !kt_model_open(&same, "deit_small_distilled_patch16_224", p, KD_F32, 8, NULL) ||
        !kt_model_open(&other, "deit_small_distilled_patch16_224", p, KD_F32, 9, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kt_model_close(&m);
        kt_model_close(&same);
        return;
    }
    char bad[200] = "";
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        const char *n = m.tensors[i].name;
        const kd_tensor *t = m.tensors[i].tensor;
        size_t len = strlen(n);
        bool is_bias = len > 5 && strcmp(n + len - 5, ".bias") == 0;
        bool is_norm = strstr(n, "norm") != NULL;
        double mean, std, want;
        moments(t, &mean, &std);
        if (strcmp(n, "cls_token") == 0)
            want = 1e-6;
        else if (strncmp(n, "patch_embed", 11) == 0)
            want = 1 / sqrt(3.0 * 16 * 16) / sqrt(3.0); /* uniform's std */
        else if (is_norm)
            want = 0;
        else
            want = is_bias ? 0 : 0.02;
        bool same_values = kt_max_abs_diff(t, same.tensors[i].tensor) == 0;
        bool differs = kt_max_abs_diff(t, other.tensors[i].tensor) != 0 || want == 0;
        if (is_norm && !is_bias ? mean != 1 || std != 0 : fabs(std - want) > 0.1 * want + 1e-12)
            snprintf(bad, sizeof bad, "%s: mean %g std %g, want std %g", n, mean, std, want);
        else if (!same_values || !differs)
            snprintf(bad, sizeof bad, "%s: %s", n, same_values ? "the same for another seed"
                                                                : "differs for the same seed");
    }
    kt_check(!bad[0], name, "%s", bad);
    kt_model_close(&m);
    kt_model_close(&same);
    kt_model_close(&other);
}

/* ---------------------------------------------------------------- errors */

static void expect_error(const char *name, kd_status st, const char *needle)
{
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), needle), name,
             "status %s, message '%s'", kd_status_name(st), kd_last_error());
}

static void test_errors(void)
{
    kt_model m;
    if (!kt_model_open(&m, DISTILLED, SMALL "}", KD_F32, 1, NULL)) {
        kt_fail("vit errors", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[KT_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, images(KD_F32, 2, 3, 48, 1), false, NULL, taps);
    expect_error("an image of another size is refused", st,
                 DISTILLED ": input [2, 3, 48, 48] is not [N, 3, 32, 32] images");
    int pre = kt_model_tap(&m, "pre_logits");
    st = kt_model_run(&m, pre, kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){2, 192}), false,
                      NULL, taps);
    expect_error("a distilled model refuses forward_from pre_logits", st,
                 "forward_from pre_logits: the heads of a distilled model");
    int b1 = kt_model_tap(&m, "blocks.1");
    st = kt_model_run(&m, b1, kd_tensor_zeros(KD_F32, KD_CPU, 3, (int64_t[]){2, 16, 192}), false,
                      NULL, taps);
    expect_error("forward_from blocks.1 without the prefix tokens", st,
                 "forward_from blocks.1: input [2, 16, 192] is not [N, 18, 192]");
    kd_tensor *pe = kd_tensor_zeros(KD_F32, KD_CPU, 3, (int64_t[]){1, 12, 192});
    kd_weight_fix fix = {sizeof fix, "pos_embed", pe, false};
    expect_error("a pos_embed that is no square grid", m.vt->filter_weight(m.self, &fix),
                 "pos_embed of 12 tokens is not 2 prefix tokens and a square grid");
    kd_scope_end();
    kt_model_close(&m);
    kd_status s;
    kt_model_open(&m, "deit_tiny_patch16_224", "{\"img_size\": 8}", KD_F32, 1, &s);
    expect_error("img_size below patch_size", s, "img_size 8 must be at least patch_size 16");
}

/* timm's published count for deit_tiny_patch16_224 is 1.26 GMACs
 * (fvcore, which adds a little for norms); the products of one image at
 * 224 are the patch convolution, per block qkv, q k^T and p v over 3
 * heads, proj and the MLP, and the head. */
static void test_macs(void)
{
    const char *name = "deit_tiny counts timm's multiply-adds at 224 (attention included)";
    kt_model m;
    if (!kt_model_open(&m, "deit_tiny_patch16_224", "{}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    const int64_t t = 197, d = 192, p = 196;
    int64_t block = t * d * 3 * d + 3 * t * t * (64 + 64) + t * d * d + 2 * t * d * 4 * d;
    int64_t want = p * d * 3 * 16 * 16 + 12 * block + d * 1000;
    kd_tensor *taps[KT_MAX_TAPS];
    kd_macs_take();
    kd_status st = kt_model_run(&m, -1, images(KD_F32, 1, 3, 224, 2), false, NULL, taps);
    int64_t macs = kd_macs_take();
    kt_check(st == KD_OK && macs == want && fabs((double)macs / 1.26e9 - 1) < 0.01, name,
             "%s: %lld multiply-adds, want %lld (timm 1.26e9)",
             st == KD_OK ? "counted" : kd_last_error(), (long long)macs, (long long)want);
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&m);
}

int main(void)
{
    test_macs();
    test_taps();
    test_distilled_heads();
    test_stochastic();
    test_early_stop();
    test_init();
    test_errors();
    test_resize();
    kt_plugins_close();
    return kt_finish();
}
