/* The EMA of the student's weights (core/train/ema.c, the job's "ema"):
 * the update step for step against timm's ModelEmaV3 (one Python
 * process), f64 and f32; then through runs: the EMA evaluated alongside
 * the student, checkpointed, written by `export --ema`, resumed to the bit,
 * and at decay 0 equal to the student.
 *
 * Data: the first Fashion-MNIST images (scripts/setup installs them). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/train/ema.h"
#include "../core/train/runner.h"
#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define EMA_STEPS 10
#define N_TENSORS 4

static char dir[64];

typedef struct ema_case {
    const char *name;
    kd_dtype dtype;
    kd_job_ema opt;
} ema_case;

static const ema_case CASES[] = {
    {"ema decay 0.9 f64", KD_F64, {.decay = 0.9}},
    {"ema warm-up f64", KD_F64,
     {.decay = 0.999, .warmup = true, .warmup_gamma = 2, .warmup_power = 0.75}},
    {"ema after step 3, min_decay 0.5 f64", KD_F64,
     {.decay = 0.99, .update_after_step = 3, .warmup = true, .warmup_gamma = 1,
      .warmup_power = 2.0 / 3.0, .min_decay = 0.5}},
    {"ema exclude_buffers f64", KD_F64, {.decay = 0.8, .exclude_buffers = true}},
    {"ema decay 0.9 f32", KD_F32, {.decay = 0.9}},
    {"ema warm-up f32", KD_F32,
     {.decay = 0.999, .warmup = true, .warmup_gamma = 2, .warmup_power = 0.75}},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

/* Two parameters, a floating buffer (running_mean) and an integer one
 * (num_batches_tracked), which is copied. */
static const struct {
    int64_t shape;
    bool param, integer;
} TENSORS[N_TENSORS] = {{30, true, false}, {7, true, false}, {7, false, false}, {1, false, true}};

/* f32: the update is a lerp, three roundings (u = 2^-24) of values of
 * the size of the inputs per step, and the average contracts earlier
 * errors; so 8 u per step bounds the norm-wise difference to the exact
 * result, against which both sides round alike. */
#define F32_TOLERANCE (EMA_STEPS * 8.0 * 0x1p-24)

typedef struct ema_run {
    kd_tensor *ema[N_TENSORS], *model[N_TENSORS];
    bool failed;
} ema_run;

static void test_parity(void)
{
    char in[128], out[128], script[512], cmd[1400];
    snprintf(in, sizeof in, "%s/ema-in.safetensors", dir);
    snprintf(out, sizeof out, "%s/ema-out.safetensors", dir);
    static ema_run runs[N_CASES];
    static const char *names[N_CASES * N_TENSORS * (EMA_STEPS + 1)];
    static char name_text[N_CASES * N_TENSORS * (EMA_STEPS + 1)][32];
    static kd_tensor *saved[N_CASES * N_TENSORS * (EMA_STEPS + 1)];
    const char *meta[2 * N_CASES + 2];
    char meta_text[2 * N_CASES][400], count[8];
    int nt = 0;
    kd_scope_begin();
    for (int c = 0; c < N_CASES; c++) {
        const ema_case *ec = &CASES[c];
        ema_run *r = &runs[c];
        kd_rng rng = kd_rng_make(500 + (uint64_t)c, 0, 0);
        kd_named_tensor ema[N_TENSORS], model[N_TENSORS];
        for (int k = 0; k < N_TENSORS; k++) {
            kd_dtype dt = TENSORS[k].integer ? KD_I64 : ec->dtype;
            r->ema[k] = kd_tensor_keep(TENSORS[k].integer
                                           ? kd_tensor_zeros(dt, KD_CPU, 1, &TENSORS[k].shape)
                                           : kt_uniform(dt, 1, &TENSORS[k].shape, &rng, -1, 1));
            r->model[k] = kd_tensor_keep(kd_tensor_to_device(r->ema[k], KD_CPU));
            uint32_t flags = TENSORS[k].param ? KD_TENSOR_PARAM : KD_TENSOR_BUFFER;
            ema[k] = (kd_named_tensor){"t", r->ema[k], flags};
            model[k] = (kd_named_tensor){"t", r->model[k], flags};
            snprintf(name_text[nt], sizeof name_text[nt], "case%d.t%d", c, k);
            names[nt] = name_text[nt];
            saved[nt++] = kd_tensor_to_device(r->ema[k], KD_CPU);
        }
        for (int s = 0; s < EMA_STEPS && !r->failed; s++) {
            /* the student after step s: drifting weights, a counter */
            for (int k = 0; k < N_TENSORS; k++) {
                kd_tensor *v;
                if (TENSORS[k].integer) {
                    v = kd_tensor_zeros(KD_I64, KD_CPU, 1, &TENSORS[k].shape);
                    ((int64_t *)kd_tensor_data(v))[0] = s + 1;
                } else {
                    v = kd_add(r->model[k], kt_uniform(ec->dtype, 1, &TENSORS[k].shape, &rng,
                                                       -0.2, 0.2));
                }
                kd_tensor_copy_(r->model[k], v);
                snprintf(name_text[nt], sizeof name_text[nt], "case%d.t%d.%d", c, k, s);
                names[nt] = name_text[nt];
                saved[nt++] = kd_tensor_to_device(v, KD_CPU);
            }
            if (kd_ema_update(&ec->opt, N_TENSORS, ema, model,
                              kd_ema_decay(&ec->opt, s + 1)) != KD_OK) {
                kt_fail(ec->name, "%s", kd_last_error());
                r->failed = true;
            }
        }
        snprintf(meta_text[2 * c], sizeof meta_text[2 * c], "case%d.options", c);
        snprintf(meta_text[2 * c + 1], sizeof meta_text[2 * c + 1],
                 "{\"decay\": %.17g, \"min_decay\": %.17g, \"update_after_step\": %lld, "
                 "\"use_warmup\": %s, \"warmup_gamma\": %.17g, \"warmup_power\": %.17g, "
                 "\"exclude_buffers\": %s, \"kinds\": [\"p\", \"p\", \"b\", \"b\"], "
                 "\"steps\": %d}",
                 ec->opt.decay, ec->opt.min_decay, (long long)ec->opt.update_after_step,
                 ec->opt.warmup ? "true" : "false",
                 ec->opt.warmup ? ec->opt.warmup_gamma : 1.0,
                 ec->opt.warmup ? ec->opt.warmup_power : 2.0 / 3.0,
                 ec->opt.exclude_buffers ? "true" : "false", EMA_STEPS);
        meta[2 * c] = meta_text[2 * c];
        meta[2 * c + 1] = meta_text[2 * c + 1];
    }
    snprintf(count, sizeof count, "%d", N_CASES);
    meta[2 * N_CASES] = "cases";
    meta[2 * N_CASES + 1] = count;
    kd_safetensors *ref = NULL;
    kt_source_path("tests/parity/timm_ema.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in, out);
    if (kd_safetensors_save(in, nt, names, saved, N_CASES + 1, meta) != KD_OK ||
        system(cmd) != 0 || kd_safetensors_open(out, &ref) != KD_OK) {
        kt_fail("ema parity", "the reference did not run: %s (%s)", cmd, kd_last_error());
        goto done;
    }
    for (int c = 0; c < N_CASES; c++) {
        const ema_case *ec = &CASES[c];
        char key[64];
        snprintf(key, sizeof key, "case%d.error", c);
        if (kd_safetensors_metadata(ref, key)) {
            kt_fail(ec->name, "timm: %s", kd_safetensors_metadata(ref, key));
            continue;
        }
        if (runs[c].failed)
            continue;
        double worst = 0;
        for (int k = 0; k < N_TENSORS; k++) {
            snprintf(key, sizeof key, "case%d.t%d", c, k);
            kd_tensor *theirs = kd_safetensors_load(ref, key, runs[c].ema[k]->dtype);
            double e = theirs ? kt_rel_error(runs[c].ema[k], theirs) : INFINITY;
            worst = e > worst ? e : worst;
        }
        double tol = ec->dtype == KD_F64 ? 1e-12 : F32_TOLERANCE;
        kt_check(worst <= tol, ec->name, "relative error %.3g > %.3g", worst, tol);
    }
done:
    kd_safetensors_close(ref);
    kd_scope_end();
    for (int c = 0; c < N_CASES; c++)
        for (int k = 0; k < N_TENSORS; k++) {
            kd_tensor_free(runs[c].ema[k]);
            kd_tensor_free(runs[c].model[k]);
        }
    unlink(in);
    unlink(out);
}

/* ------------------------------------------------------------ runs */

/* 2 epochs of 4 batches of 32 with evaluation; "%s": output, ema. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 4, \"threads\": 1, \"output\": \"%s/%s\", \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 32, \"subset\": 128, \"workers\": 0},\n"
    "    \"val\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/t10k-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/t10k-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 64, \"subset\": 128, \"workers\": 0}},\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1},\n"
    "  \"losses\": [{\"name\": \"ce\"}],\n"
    "  \"optim\": {\"name\": \"adamw\", \"lr\": 0.003},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 2},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 4},\n"
    "  \"log\": {\"every_steps\": 2},\n"
    "  \"ema\": %s\n"
    "}\n";

static void write_job(const char *name, const char *ema)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dir, name, kt_plugin_dir(), ema);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
}

/* Whether every tensor of file a under prefix pa equals, to the bit, the
 * tensor of b under prefix pb with the same rest of the name. */
static bool same_group(const char *a_path, const char *pa, const char *b_path, const char *pb,
                       char *why, size_t size)
{
    kd_safetensors *a = NULL, *b = NULL;
    bool same = kd_safetensors_open(a_path, &a) == KD_OK && kd_safetensors_open(b_path, &b) == KD_OK;
    int compared = 0;
    if (!same)
        snprintf(why, size, "%s", kd_last_error());
    for (int i = 0; same && i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        if (strncmp(ea->name, pa, strlen(pa)) != 0)
            continue;
        char name[512];
        snprintf(name, sizeof name, "%s%s", pb, ea->name + strlen(pa));
        const kd_safetensors_entry *eb = kd_safetensors_find(b, name);
        same = eb && eb->nbytes == ea->nbytes && !memcmp(ea->data, eb->data, ea->nbytes);
        if (!same)
            snprintf(why, size, "%.100s differs from %.100s", ea->name, name);
        compared++;
    }
    if (same && compared == 0) {
        snprintf(why, size, "no %s tensors", pa);
        same = false;
    }
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return same;
}

static void test_runs(void)
{
    char *out = NULL, a[512], b[512], why[256] = "";
    write_job("ema", "{\"decay\": 0.9, \"warmup\": true}");
    int rc = kt_kdengine(dir, &out, "run ema.json");
    kt_check(rc == 0 && strstr(out, "(EMA): top-1"), "ema: evaluated alongside the student",
             "exit %d: %s", rc, out ? out : "");
    free(out);
    snprintf(a, sizeof a, "%s/ema/metrics.jsonl", dir);
    size_t len;
    unsigned char *bytes = kt_read_file(a, &len);
    char *metrics = bytes ? realloc(bytes, len + 1) : NULL;
    if (metrics)
        metrics[len] = '\0';
    else
        free(bytes);
    bool logged = metrics && strstr(metrics, "\"ema_top1\"");
    free(metrics);
    kt_check(logged, "ema: eval lines carry ema_top1", "not in %s", a);

    snprintf(a, sizeof a, "%s/ema/checkpoints/step-000000008.safetensors", dir);
    snprintf(b, sizeof b, "%s/ema-export.safetensors", dir);
    rc = kt_kdengine(dir, &out, "export ema.json --weights %s --ema --out %s", a, b);
    free(out);
    kt_check(rc == 0 && same_group(a, "ema.", b, "", why, sizeof why),
             "ema: export --ema writes the checkpoint's EMA", "exit %d: %s", rc, why);
    rc = kt_kdengine(dir, &out, "export ema.json --ema --out %s", b);
    kt_check(rc != 0 && out && strstr(out, "--ema: needs --weights"),
             "ema: export --ema without a checkpoint is refused", "exit %d: %s", rc,
             out ? out : "");
    free(out);

    /* A stop after batch 3, resumed, ends where the straight run did. */
    write_job("ema2", "{\"decay\": 0.9, \"warmup\": true}");
    char path[256];
    snprintf(path, sizeof path, "%s/ema2.json", dir);
    kd_job *job = NULL;
    bool stopped = false, again = true;
    kd_status st = kd_job_load(path, 0, NULL, &job);
    if (st == KD_OK)
        st = kd_run(job, &(kd_run_options){.stop_at_batch = 3}, &stopped);
    if (st == KD_OK)
        st = kd_run(job, &(kd_run_options){.resume = true}, &again);
    kd_job_free(job);
    snprintf(b, sizeof b, "%s/ema2/checkpoints/step-000000008.safetensors", dir);
    kt_check(st == KD_OK && stopped && !again && same_group(a, "ema.", b, "ema.", why, sizeof why) &&
                 same_group(a, "student.", b, "student.", why, sizeof why),
             "ema: stopped after batch 3 and resumed, ends where the straight run did",
             "%s %s", kd_last_error(), why);

    /* Decay 0 copies the student on every step. */
    write_job("copy", "{\"decay\": 0}");
    rc = kt_kdengine(dir, &out, "run copy.json");
    free(out);
    snprintf(a, sizeof a, "%s/copy/checkpoints/step-000000008.safetensors", dir);
    kt_check(rc == 0 && same_group(a, "ema.", a, "student.", why, sizeof why),
             "ema: decay 0 equals the student", "exit %d: %s", rc, why);
    write_job("bad", "{\"decay\": 1.5}");
    rc = kt_kdengine(dir, &out, "validate bad.json");
    kt_check(rc != 0 && out && strstr(out, "ema: decay 1.5 and min_decay 0 must satisfy"),
             "ema: a decay above 1 is refused", "exit %d: %s", rc, out ? out : "");
    free(out);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kdema.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "cannot make a temporary directory");
        return kt_finish();
    }
    char check[256];
    snprintf(check, sizeof check, "%s -c 'import timm' >/dev/null 2>&1", KD_TORCH_PYTHON);
    if (system(check) == 0)
        test_parity();
    else
        kt_skip("ema parity", "timm is not importable by %s", KD_TORCH_PYTHON);
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0)
        kt_fail("setup", "%s is missing: scripts/setup installs dataset-fashion-mnist", FMNIST);
    else
        test_runs();
    kt_plugins_close();
    kt_remove_tree(dir);
    return kt_finish();
}
