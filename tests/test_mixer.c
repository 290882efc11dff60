/* The mixer model plugin beyond the timm parity table (test_timm_models):
 * taps and their layouts, timm's initialisation, drop-path, forward_from
 * from a vector tap, errors, and a distillation on Fashion-MNIST through
 * the CLI: a reduced deit_tiny trained for a few steps teaches a reduced
 * Mixer (in_chans 1, 28x28 in patches of 7). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    if (!kt_model_open(&m, "mixer_s16_224", SMALL "}", KD_F32, 1, NULL)) {
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
    if (!kt_model_open(&m, "mixer_b16_224", "{\"depth\": 1}", KD_F32, 2, NULL)) {
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
    if (!kt_model_open(&m, "mixer_s16_224", SMALL ", \"drop_path_rate\": 0.4}", KD_F32, 3,
                       NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    /* the zero head would hide every difference in the logits */
    kd_tensor_fill_(kt_model_tensor(&m, "head.weight")->tensor, 0.25);
    kd_tensor *x = images(4, 3, 32, 7), *e[KT_MAX_TAPS], *a[KT_MAX_TAPS];
    kd_tensor *b[KT_MAX_TAPS], *from[KT_MAX_TAPS];
    int last = m.n_taps - 1, pre = kt_model_tap(&m, "pre_logits");
    kd_status st = kt_model_run(&m, -1, x, false, NULL, e);
    if (st == KD_OK)
        st = kt_model_run(&m, -1, x, true, NULL, a);
    if (st == KD_OK)
        st = kt_model_run(&m, -1, x, true, NULL, b);
    if (st == KD_OK)
        st = kt_model_run(&m, pre, e[pre], false, NULL, from);
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
    if (!kt_model_open(&m, "mixer_s16_224", SMALL ", \"in_chans\": 1}", KD_F32, 1, NULL)) {
        kt_fail("mixer errors", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[KT_MAX_TAPS];
    kd_status st = kt_model_run(&m, -1, images(2, 1, 28, 1), false, NULL, taps);
    expect_error("an image of another size is refused", st,
                 "mixer_s16_224: input [2, 1, 28, 28] is not [N, 1, 32, 32] images");
    st = kt_model_run(&m, kt_model_tap(&m, "stem"),
                      kd_tensor_zeros(KD_F32, KD_CPU, 3, (int64_t[]){2, 17, 512}), false,
                      NULL, taps);
    expect_error("forward_from stem with another token count", st,
                 "forward_from stem: input [2, 17, 512] is not [N, 16, 512]");
    st = kt_model_run(&m, m.n_taps - 1, images(2, 1, 32, 1), false, NULL, taps);
    expect_error("forward_from the logits", st, "forward_from tap 5 is out of range");
    kd_scope_end();
    kt_model_close(&m);
    kd_status s;
    kt_model_open(&m, "mixer_b16_224", "{\"drop_path_rate\": 1.0}", KD_F32, 1, &s);
    kt_check(s == KD_ERR_INVALID, "drop_path_rate 1 fails the schema", "status %s",
             kd_status_name(s));
}

/* ------------------------------------------- distillation, Fashion-MNIST */

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* A job on the first `subset` Fashion-MNIST training images (validation:
 * the first 500 test images), 2 epochs of batch 32, one thread (the
 * fastest on a loaded machine). */
static const char *const fmnist_job =
    "{\n"
    "  \"seed\": 1, \"threads\": 1, \"output\": \"%s/%s\", \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST
    "/train-images-idx3-ubyte.gz\",\n"
    "              \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "              \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], "
    "\"std\": [0.353]}],\n"
    "              \"batch_size\": 32, \"workers\": 0, \"subset\": %d},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST
    "/t10k-images-idx3-ubyte.gz\",\n"
    "            \"labels\": \"" FMNIST "/t10k-labels-idx1-ubyte.gz\"},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], "
    "\"std\": [0.353]}],\n"
    "            \"batch_size\": 500, \"workers\": 0, \"subset\": 500}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": %s,\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": %g, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 2},\n"
    "  \"eval\": {\"every_epochs\": 2}, \"checkpoint\": {\"every_epochs\": 2, \"keep\": 1},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

#define DEIT "{\"model\": \"deit_tiny_patch16_224\", \"num_classes\": 10, \"in_chans\": 1, " \
             "\"img_size\": 28, \"patch_size\": 7, \"depth\": 2"
#define MIXER "{\"model\": \"mixer_s16_224\", \"num_classes\": 10, \"in_chans\": 1, " \
              "\"img_size\": 28, \"patch_size\": 7, \"depth\": 1}"

static int kdengine(const char *dir, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int kdengine(const char *dir, char **out, const char *fmt, ...)
{
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine %s 2>&1", dir, KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

/* top-1 from `kdengine eval ... --json`, -1 when absent. */
static double top1_of(const char *out)
{
    const char *p = out ? strstr(out, "\"top1\": ") : NULL;
    return p ? atof(p + 8) : -1;
}

/* The kd term of every train line of metrics.jsonl, in order. */
static int kd_terms(const char *path, double *terms, int cap)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && n < cap && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"type\":\"train\"") ? strstr(line, "\"kd\":") : NULL;
        if (p)
            terms[n++] = atof(p + 5);
    }
    if (f)
        fclose(f);
    return n;
}

static void test_distill_fashion_mnist(void)
{
    const char *name = "Fashion-MNIST: a reduced deit_tiny teaches a reduced mixer_s16";
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip(name, "no Fashion-MNIST in " FMNIST);
        return;
    }
    char dir[] = "/tmp/kdmixer.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail(name, "cannot make a temporary directory");
        return;
    }
    char text[4096], path[256], *out = NULL, bad[600] = "";
    /* the teacher: deit_tiny on 1,024 images for 64 steps, exported */
    snprintf(text, sizeof text, fmnist_job, dir, "teacher", kt_plugin_dir(), 1024, "",
             DEIT "}", "{\"name\": \"ce\"}", 0.01);
    snprintf(path, sizeof path, "%s/teacher.json", dir);
    kt_write_file(path, text, strlen(text));
    int rc = kdengine(dir, &out, "run teacher.json");
    if (rc != 0)
        snprintf(bad, sizeof bad, "teacher run: exit %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;
    if (!bad[0] && (rc = kdengine(dir, &out, "export teacher.json --weights "
                                  "teacher/best.safetensors --out deit.safetensors")) != 0)
        snprintf(bad, sizeof bad, "export: exit %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;
    /* the student: distilled on 512 images for 32 steps */
    snprintf(text, sizeof text, fmnist_job, dir, "student", kt_plugin_dir(), 512,
             "\"teacher\": " DEIT ", \"weights\": \"deit.safetensors\"},", MIXER,
             "{\"name\": \"ce\", \"weight\": 0.5}, {\"name\": \"kd\", \"weight\": 0.5}",
             0.02);
    snprintf(path, sizeof path, "%s/student.json", dir);
    kt_write_file(path, text, strlen(text));
    double teacher = -1, student = -1, terms[64];
    if (!bad[0]) {
        rc = kdengine(dir, &out, "eval student.json --teacher --json");
        teacher = top1_of(out);
        free(out);
        out = NULL;
        rc = kdengine(dir, &out, "run student.json");
        if (rc != 0 || !strstr(out ? out : "", "deit_tiny_patch16_224 teaches mixer_s16_224"))
            snprintf(bad, sizeof bad, "student run: exit %d: %s", rc, out ? out : "");
        free(out);
        out = NULL;
    }
    if (!bad[0]) {
        rc = kdengine(dir, &out, "eval student.json --weights student/best.safetensors --json");
        student = top1_of(out);
        free(out);
        snprintf(path, sizeof path, "%s/student/metrics.jsonl", dir);
        int n = kd_terms(path, terms, 64);
        /* chance is 10%; the kd term falls as the student follows */
        if (teacher < 40 || student < 30 || n != 32 || !(terms[n - 1] < 0.5 * terms[0]))
            snprintf(bad, sizeof bad, "teacher top-1 %.1f, student top-1 %.1f, %d kd terms "
                     "from %g to %g", teacher, student, n, n ? terms[0] : 0,
                     n ? terms[n - 1] : 0);
    }
    kt_check(!bad[0], name, "%s", bad[0] ? bad : "");
    if (!bad[0])
        printf("#    teacher top-1 %.1f, student top-1 %.1f, kd %g -> %g\n", teacher, student,
               terms[0], terms[31]);
    kt_remove_tree(dir);
}

int main(void)
{
    test_taps();
    test_init();
    test_forward_paths();
    test_errors();
    test_distill_fashion_mnist();
    kt_plugins_close();
    return kt_finish();
}
