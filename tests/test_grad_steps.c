/* The runner's gradient steps (core/train): clipping by norm and by value
 * against torch.nn.utils (one Python process), accumulation of 4 batches
 * of 32 against one batch of 128 in float64 on a model without batch norm
 * (tests/plugins/mlp), a stop and resume inside an accumulation cycle
 * ending bit for bit where an uninterrupted run does (with and without
 * batch norm), and the example LAMB job for a few steps.
 *
 * Data: the first Fashion-MNIST images (scripts/setup installs them). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/train/grad_clip.h"
#include "../core/train/job.h"
#include "../core/train/runner.h"
#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char dir[64];

/* ------------------------------------------------------------ clipping */

typedef struct clip_case {
    const char *name;
    kd_dtype dtype;
    bool by_norm;
    double limit;
} clip_case;

/* The gradients' global norm is about 0.5 * sqrt(4000 / 3) = 18. */
static const clip_case CLIP_CASES[] = {
    {"clip norm 1 f64", KD_F64, true, 1.0},
    {"clip norm 1e6 (no change) f64", KD_F64, true, 1e6},
    {"clip value 0.1 f64", KD_F64, false, 0.1},
    {"clip norm 2.5 f32", KD_F32, true, 2.5},
    {"clip value 0.25 f32", KD_F32, false, 0.25},
};
#define N_CLIP (int)(sizeof CLIP_CASES / sizeof CLIP_CASES[0])

/* Parameter 2 has no gradient: clipping skips it. */
static const int64_t CLIP_SHAPES[4][2] = {{40, 50}, {37, 1}, {3, 3}, {1963, 1}};
#define N_CLIP_PARAMS 4
#define CLIP_ELEMENTS (2000 + 37 + 1963)

typedef struct clip_run {
    kd_tensor *params[N_CLIP_PARAMS];
    kd_named_tensor named[N_CLIP_PARAMS];
    double norm;
} clip_run;

static void test_clipping(void)
{
    char script[512], in[128], out[128], cmd[1200];
    snprintf(in, sizeof in, "%s/clip-in.safetensors", dir);
    snprintf(out, sizeof out, "%s/clip-out.safetensors", dir);
    kd_scope_begin();
    static clip_run runs[N_CLIP];
    const char *names[N_CLIP * N_CLIP_PARAMS], *meta[2 * N_CLIP + 2];
    char name_text[N_CLIP * N_CLIP_PARAMS][32], meta_text[2 * N_CLIP][96], count[8];
    kd_tensor *saved[N_CLIP * N_CLIP_PARAMS];
    int nt = 0;
    for (int c = 0; c < N_CLIP; c++) {
        const clip_case *cc = &CLIP_CASES[c];
        kd_rng rng = kd_rng_make(77 + (uint64_t)c, 0, 0);
        for (int k = 0; k < N_CLIP_PARAMS; k++) {
            clip_run *r = &runs[c];
            r->params[k] = kd_tensor_keep(kd_tensor_zeros(cc->dtype, KD_CPU, 2, CLIP_SHAPES[k]));
            snprintf(name_text[nt], sizeof name_text[nt], "case%d.g%d", c, k);
            r->named[k] = (kd_named_tensor){name_text[nt], r->params[k], KD_TENSOR_PARAM};
            if (k == 2)
                continue;
            r->params[k]->grad = kd_tensor_keep(kt_uniform(cc->dtype, 2, CLIP_SHAPES[k], &rng,
                                                           -0.5, 0.5));
            saved[nt] = kd_tensor_to_device(r->params[k]->grad, KD_CPU);
            names[nt] = name_text[nt];
            nt++;
        }
        snprintf(meta_text[2 * c], sizeof meta_text[2 * c], "case%d.options", c);
        snprintf(meta_text[2 * c + 1], sizeof meta_text[2 * c + 1],
                 "{\"mode\": \"%s\", \"limit\": %.17g, \"params\": %d}",
                 cc->by_norm ? "norm" : "value", cc->limit, N_CLIP_PARAMS);
        meta[2 * c] = meta_text[2 * c];
        meta[2 * c + 1] = meta_text[2 * c + 1];
        kd_status st = cc->by_norm ? kd_clip_grad_norm(N_CLIP_PARAMS, runs[c].named, cc->limit,
                                                       &runs[c].norm)
                                   : kd_clip_grad_value(N_CLIP_PARAMS, runs[c].named, cc->limit);
        if (st != KD_OK)
            kt_fail(cc->name, "%s", kd_last_error());
    }
    snprintf(count, sizeof count, "%d", N_CLIP);
    meta[2 * N_CLIP] = "cases";
    meta[2 * N_CLIP + 1] = count;
    kd_safetensors *ref = NULL;
    kt_source_path("tests/parity/torch_grad_clip.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in, out);
    if (kd_safetensors_save(in, nt, names, saved, N_CLIP + 1, meta) != KD_OK ||
        system(cmd) != 0 || kd_safetensors_open(out, &ref) != KD_OK) {
        kt_fail("clip parity", "the reference did not run: %s (%s)", cmd, kd_last_error());
        goto done;
    }
    for (int c = 0; c < N_CLIP; c++) {
        const clip_case *cc = &CLIP_CASES[c];
        char key[64];
        snprintf(key, sizeof key, "case%d.error", c);
        if (kd_safetensors_metadata(ref, key)) {
            kt_fail(cc->name, "torch: %s", kd_safetensors_metadata(ref, key));
            continue;
        }
        /* float64: the same sums in another order. float32: torch sums
         * squares in float32, which any order keeps within n u of the
         * exact sum (kdengine's is nearer), so the norm and the
         * coefficient it scales by may differ by that much; clamping and
         * unclipped gradients are exact. */
        double tol = cc->dtype == KD_F64 ? 1e-12 : CLIP_ELEMENTS * 0x1p-24;
        double worst = 0;
        bool missing = false;
        for (int k = 0; k < N_CLIP_PARAMS; k++) {
            snprintf(key, sizeof key, "case%d.g%d", c, k);
            kd_tensor *g = runs[c].params[k]->grad;
            kd_tensor *theirs = kd_safetensors_find(ref, key)
                                    ? kd_safetensors_load(ref, key, cc->dtype)
                                    : NULL;
            if (!g != !theirs) {
                missing = true;
                continue;
            }
            if (g) {
                double e = kt_rel_error(g, theirs);
                worst = e > worst ? e : worst;
            }
        }
        if (!cc->by_norm)
            tol = 0;
        double norm_error = 0;
        snprintf(key, sizeof key, "case%d.norm", c);
        if (cc->by_norm) {
            kd_tensor *n = kd_safetensors_load(ref, key, KD_F64);
            norm_error = n ? fabs(runs[c].norm - kd_tensor_get(n, 0)) / kd_tensor_get(n, 0)
                           : INFINITY;
        }
        kt_check(!missing && worst <= tol && norm_error <= tol, cc->name,
                 "gradients off by %.3g, norm by %.3g (bound %.3g)%s", worst, norm_error, tol,
                 missing ? "; a gradient is missing on one side" : "");
    }
done:
    kd_safetensors_close(ref);
    kd_scope_end();
    for (int c = 0; c < N_CLIP; c++)
        for (int k = 0; k < N_CLIP_PARAMS; k++)
            kd_tensor_free(runs[c].params[k]);
    unlink(in);
    unlink(out);
}

/* ------------------------------------------------------------ runs */

/* 2 epochs over the first 256 images; "%s" slots: dtype, output, the
 * plugin dirs, batch size, student, optim extras, accumulate_steps. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 11, \"threads\": 1, \"dtype\": \"%s\", \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\", \"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"random_crop\", \"size\": 28, \"padding\": 2},\n"
    "                   {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": %d, \"subset\": 256, \"workers\": 0}},\n"
    "  \"student\": %s,\n"
    "  \"losses\": [{\"name\": \"ce\"}],\n"
    "  \"optim\": {%s, \"accumulate_steps\": %d},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 2, \"per_step\": true,\n"
    "               \"warmup_epochs\": 0.5},\n"
    "  \"eval\": {\"every_epochs\": 0}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 4},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

static const char *const MLP = "{\"model\": \"mlp\", \"in_features\": 784, \"num_classes\": 10}";
static const char *const ADAMW_CLIP =
    "\"name\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.05, \"clip_grad_norm\": 0.5";

static char mlp_dir[256];

/* Writes job NAME.json and runs it in this process (resume, stop at a
 * batch); returns the status and whether it stopped. */
static kd_status run_job(const char *name, const char *dtype, int batch, const char *student,
                         const char *optim, int accumulate, bool resume, int64_t stop_at,
                         bool *stopped)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dtype, dir, name, kt_plugin_dir(), mlp_dir, batch,
             student, optim, accumulate);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
    kd_job *job = NULL;
    kd_status st = kd_job_load(path, 0, NULL, &job);
    kd_run_options o = {.resume = resume, .stop_at_batch = stop_at};
    *stopped = false;
    if (st == KD_OK)
        st = kd_run(job, &o, stopped);
    kd_job_free(job);
    return st;
}

static void checkpoint_path(char *buf, size_t size, const char *run, int step)
{
    snprintf(buf, size, "%s/%s/checkpoints/step-%09d.safetensors", dir, run, step);
}

/* Largest norm-wise relative error over the tensors of two checkpoints
 * (every tensor of a must be in b); -1 when they do not open or match. */
static double checkpoint_error(const char *a_path, const char *b_path, bool bits, char *where,
                               size_t size)
{
    kd_safetensors *a = NULL, *b = NULL;
    double worst = -1;
    if (kd_safetensors_open(a_path, &a) != KD_OK || kd_safetensors_open(b_path, &b) != KD_OK) {
        snprintf(where, size, "%s", kd_last_error());
        goto done;
    }
    worst = 0;
    kd_scope_begin();
    for (int i = 0; i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        const kd_safetensors_entry *eb = kd_safetensors_find(b, ea->name);
        if (!eb || eb->nbytes != ea->nbytes) {
            snprintf(where, size, "%s is missing or differs in size", ea->name);
            worst = -1;
            break;
        }
        double e;
        bool floating = ea->dtype == KD_F32 || ea->dtype == KD_F64;
        if (bits || !floating) /* step counts: exact */
            e = memcmp(ea->data, eb->data, ea->nbytes) != 0 ? INFINITY : 0;
        else
            e = kt_rel_error(kd_safetensors_load(a, ea->name, KD_F64),
                             kd_safetensors_load(b, ea->name, KD_F64));
        if (e > worst) {
            worst = e;
            snprintf(where, size, "%s", ea->name);
        }
    }
    kd_scope_end();
    if (worst >= 0 && kd_safetensors_count(a) != kd_safetensors_count(b)) {
        snprintf(where, size, "%d tensors against %d", kd_safetensors_count(a),
                 kd_safetensors_count(b));
        worst = -1;
    }
done:
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return worst;
}

static char *read_text(const char *path)
{
    size_t len;
    unsigned char *bytes = kt_read_file(path, &len);
    char *text = bytes ? realloc(bytes, len + 1) : NULL;
    if (text)
        text[len] = '\0';
    else
        free(bytes);
    return text;
}

/* A number of the train line of `step` in a run's metrics.jsonl; NAN
 * when absent. */
static double logged(const char *run, int step, const char *field)
{
    char path[256], want[64], key[64];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    snprintf(want, sizeof want, "\"type\":\"train\",\"epoch\":");
    char *text = read_text(path);
    double v = NAN;
    for (const char *line = text; line && (line = strstr(line, want)); line++) {
        const char *s = strstr(line, "\"step\":");
        if (!s || atoi(s + 7) != step)
            continue;
        snprintf(key, sizeof key, "\"%s\":", field);
        const char *f = strstr(line, key);
        const char *end = strchr(line, '\n');
        if (f && (!end || f < end))
            v = atof(f + strlen(key));
        break;
    }
    free(text);
    return v;
}

/* 4 batches of 32 against 1 of 128, float64, no batch norm, AdamW with
 * clipping by norm on the summed gradients. */
static void test_accumulation(void)
{
    bool stopped;
    kd_status a = run_job("big", "float64", 128, MLP, ADAMW_CLIP, 1, false, 0, &stopped);
    kd_status b = run_job("acc", "float64", 32, MLP, ADAMW_CLIP, 4, false, 0, &stopped);
    const char *name = "accumulate 4 x 32 equals one batch of 128 (float64)";
    if (!kt_check(a == KD_OK && b == KD_OK, "accumulate: both runs finish", "%s",
                  kd_last_error()))
        return;
    char pa[256], pb[256], where[128] = "";
    checkpoint_path(pa, sizeof pa, "big", 4);
    checkpoint_path(pb, sizeof pb, "acc", 4);
    double e = checkpoint_error(pa, pb, false, where, sizeof where);
    /* The same sums grouped differently: rounding only. */
    kt_check(e >= 0 && e <= 1e-12, name, "relative error %.3g (%s)", e, where);
    double worst = 0;
    int missing = 0;
    for (int step = 1; step <= 4; step++) {
        const char *fields[] = {"lr", "loss", "grad_norm"};
        for (int f = 0; f < 3; f++) {
            double x = logged("big", step, fields[f]), y = logged("acc", step, fields[f]);
            missing += isnan(x) || isnan(y);
            double d = fabs(x - y) / fmax(fabs(x), 1e-300);
            worst = d > worst ? d : worst;
        }
    }
    kt_check(missing == 0 && worst <= 1e-12, "accumulate: the logs count optimizer steps",
             "%d values missing, lr/loss/grad_norm differ by %.3g", missing, worst);
}

/* Stops after `stop_at` batches (inside the cycle of step `stop_step`),
 * resumes, and must end where `reference` (the same job uninterrupted)
 * did, to the bit. */
static void test_resume(const char *name, const char *run, const char *reference,
                        const char *dtype, int batch, const char *student, const char *optim,
                        int accumulate, int stop_at, int stop_step, int last_step)
{
    bool stopped = false, again = false;
    kd_status st = run_job(run, dtype, batch, student, optim, accumulate, false, stop_at,
                           &stopped);
    char path[512], where[128] = "";
    /* The stop's checkpoint holds the cycle's gradients so far. */
    checkpoint_path(path, sizeof path, run, stop_step);
    kd_safetensors *f = NULL;
    bool has_grads = false;
    if (kd_safetensors_open(path, &f) == KD_OK)
        for (int i = 0; i < kd_safetensors_count(f); i++)
            has_grads |= strncmp(kd_safetensors_at(f, i)->name, "grad.", 5) == 0;
    kd_safetensors_close(f);
    if (st == KD_OK)
        st = run_job(run, dtype, batch, student, optim, accumulate, true, 0, &again);
    if (!kt_check(st == KD_OK && stopped && !again && has_grads,
                  "resume inside a cycle: stop, checkpoint with gradients, resume",
                  "status %s, stopped %d, resumed run stopped %d, stop checkpoint %s "
                  "gradients: %s",
                  kd_status_name(st), stopped, again, has_grads ? "with" : "without",
                  kd_last_error()))
        return;
    char a[512], b[512];
    checkpoint_path(a, sizeof a, reference, last_step);
    checkpoint_path(b, sizeof b, run, last_step);
    double e = checkpoint_error(a, b, true, where, sizeof where);
    kt_check(e == 0, name, "%s", e < 0 ? where : "tensors differ");
}

/* ------------------------------------------------------------ example */

static void test_lamb_example(void)
{
    char cmd[2048], job[512], *out = NULL;
    kt_source_path("examples/fashion-mnist/kd-lamb.json", job, sizeof job);
    snprintf(cmd, sizeof cmd,
             "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine run %s --set output=%s/lamb --set data.train.subset=256 "
             "--set data.train.workers=0 --set data.val.workers=0 --set schedule.epochs=1 "
             "--set eval.every_epochs=0 --set log.every_steps=1 --set threads=1 2>&1",
             KD_SRCDIR, kt_plugin_dir(), KD_BUILDDIR, job, dir);
    int rc = kt_run_command(cmd, &out);
    const char *name = "example kd-lamb.json runs a few steps";
    bool ok = rc == 0 && out && strstr(out, "done: 2 steps");
    double loss1 = logged("lamb", 1, "loss"), loss2 = logged("lamb", 2, "loss");
    double lr1 = logged("lamb", 1, "lr"), lr2 = logged("lamb", 2, "lr");
    kt_check(ok && isfinite(loss1) && isfinite(loss2) && lr1 > 0 && lr2 > lr1, name,
             "exit %d, losses %g %g, lrs %g %g (warm-up rising): %s", rc, loss1, loss2, lr1, lr2,
             out ? out : "(no output)");
    free(out);
}

/* Jobs whose gradient keys make no sense are refused at load, by path. */
static void test_refused(void)
{
    static const struct {
        const char *optim, *want;
    } cases[] = {
        {"\"name\": \"sgd\", \"lr\": 0.1, \"clip_grad_norm\": 1, \"clip_grad_value\": 0.5",
         "optim.clip_grad_value: 0.5, but optim.clip_grad_norm is 1 too"},
        {"\"name\": \"sgd\", \"lr\": 0.1, \"clip_grad_norm\": -1",
         "optim.clip_grad_norm: -1 must be at least 0"},
    };
    for (int i = 0; i < 2; i++) {
        char text[8192], path[256];
        snprintf(text, sizeof text, job_template, "float32", dir, "refused", kt_plugin_dir(),
                 mlp_dir, 32, MLP, cases[i].optim, 1);
        snprintf(path, sizeof path, "%s/refused.json", dir);
        kt_write_file(path, text, strlen(text));
        kd_job *job = NULL;
        kd_status st = kd_job_load(path, 0, NULL, &job);
        kd_job_free(job);
        kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), cases[i].want),
                 cases[i].want, "status %s: %s", kd_status_name(st), kd_last_error());
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kdgrad.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "cannot make a temporary directory");
        return kt_finish();
    }
    kt_stage_mlp(dir, mlp_dir, sizeof mlp_dir);
    char check[256];
    snprintf(check, sizeof check, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    if (system(check) == 0)
        test_clipping();
    else
        kt_skip("clip parity", "torch is not importable by %s", KD_TORCH_PYTHON);
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_fail("setup", "%s is missing: scripts/setup installs dataset-fashion-mnist", FMNIST);
    } else {
        test_accumulation();
        test_resume("resume inside a cycle (mlp, float64, batch 6 of 8) ends bit for bit",
                    "acc-resume", "acc", "float64", 32, MLP, ADAMW_CLIP, 4, 6, 1, 4);
        bool stopped, again;
        /* 3 batches into a cycle of 4, then resumed accumulating 2 */
        kd_status st = run_job("changed", "float64", 32, MLP, ADAMW_CLIP, 4, false, 7, &stopped);
        if (st == KD_OK)
            st = run_job("changed", "float64", 32, MLP, ADAMW_CLIP, 2, true, 0, &again);
        kt_check(stopped && st == KD_ERR_INVALID &&
                     strstr(kd_last_error(), "taken after batch 3 of an accumulation cycle, "
                                             "but optim.accumulate_steps is 2"),
                 "resume refuses a cycle the job's accumulate_steps cannot finish",
                 "stopped %d, status %s: %s", stopped, kd_status_name(st), kd_last_error());
        const char *resnet = "{\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1}";
        const char *sgd_value = "\"name\": \"sgd\", \"lr\": 0.05, \"clip_grad_value\": 0.01";
        st = run_job("bn", "float32", 16, resnet, sgd_value, 3, false, 0, &stopped);
        kt_check(st == KD_OK, "accumulate 3 x 16 with batch norm and clipping by value", "%s",
                 kd_last_error());
        /* 16 batches an epoch: cycles of 3, the last of 1, 6 steps an
         * epoch; batch 20 is the second of step 8's cycle. */
        test_resume("resume inside a cycle (resnet8 with BN, float32, batch 20) ends bit for bit",
                    "bn-resume", "bn", "float32", 16, resnet, sgd_value, 3, 20, 7, 12);
        test_lamb_example();
        test_refused();
    }
    kt_plugins_close();
    kt_remove_tree(dir);
    return kt_finish();
}
