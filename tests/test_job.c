/* Job files and the runner through the real CLI: `validate` refuses each
 * class of bad job with a message naming the JSON path; `run` trains, a
 * resumed run equals an uninterrupted one bit for bit; `eval` and `export`
 * read what `run` wrote.
 *
 * Data: a tiny synthetic IDX set (8x8 images whose class decides which
 * quadrant is bright) written to a temp dir, so a run takes a second. */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"
#include "../core/train/job.h"
#include "../core/train/session.h"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* A supervised job (no teacher) on the synthetic data. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 3, \"threads\": 1, \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                            \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "              \"transforms\": [{\"name\": \"random_crop\", \"size\": [8], \"padding\": 1},\n"
    "                             {\"name\": \"hflip\"},\n"
    "                             {\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "              \"batch_size\": 16, \"workers\": %d},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/val-images.idx\",\n"
    "                          \"labels\": \"%s/val-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "            \"batch_size\": 32, \"workers\": 0}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9, \"weight_decay\": 5e-4},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 3},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 5},\n"
    "  \"log\": {\"every_steps\": 4}\n"
    "}\n";

static void write_job(const char *file, const char *output, int workers, const char *teacher,
                      const char *losses)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dir, output, kt_plugin_dir(), dir, dir, workers,
             dir, dir, teacher, losses);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    kt_write_file(path, text, strlen(text));
}

static void expect_invalid(const char *name, const char *args, const char *want)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "validate %s", args);
    kt_check(rc == 1 && has(out, want), name, "exit %d, want \"%s\" in: %s", rc, want,
             out ? out : "(none)");
    free(out);
}

static void test_validate(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "validate sup.json");
    kt_check(rc == 0 && has(out, "sup.json: ok"), "validate: a good job", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "validate kd.json");
    kt_check(rc == 0 && has(out, "resnet8 -> resnet8"), "validate: a good KD job", "exit %d: %s",
             rc, out ? out : "(none)");
    free(out);

    char path[256];
    snprintf(path, sizeof path, "%s/broken.json", dir);
    kt_write_file(path, "{\"seed\": 1,\n \"data\": }", 23);
    expect_invalid("validate: JSON syntax names file, line, column", "broken.json",
                   "broken.json:2:");
    expect_invalid("validate: missing job file", "nothing.json", "nothing.json: No such file");
    expect_invalid("validate: unknown top-level key", "sup.json --set optimm.lr=1",
                   "optimm: unknown key; did you mean optim?");
    expect_invalid("validate: unknown host key in a section", "sup.json --set eval.evry_epochs=2",
                   "eval.evry_epochs: unknown key; did you mean every_epochs?");
    expect_invalid("validate: unknown plugin parameter", "kd.json --set losses[1].temprature=2",
                   "losses[1].temprature: unknown parameter of loss 'kd'; did you mean "
                   "temperature?");
    expect_invalid("validate: unknown plugin name", "sup.json --set student.model=resnet9",
                   "student.model: no model named 'resnet9'; did you mean resnet8?");
    expect_invalid("validate: unknown loss", "sup.json --set losses[0].name=kdd",
                   "losses[0].name: no loss named 'kdd'");
    expect_invalid("validate: wrong type", "sup.json --set optim.lr='\"fast\"'",
                   "optim.lr: expected a number");
    expect_invalid("validate: out of range", "kd.json --set losses[1].temperature=-1",
                   "losses[1].temperature");
    expect_invalid("validate: host integer out of range", "sup.json --set data.train.batch_size=0",
                   "data.train.batch_size: 0 is out of range");
    expect_invalid("validate: an output folder that cannot be made", "sup.json --set "
                   "output=/proc/x/run", "output: cannot write the run's folder '/proc/x/run'");
    expect_invalid("validate: an output below a file", "sup.json --set output=sup.json/run",
                   "output: 'sup.json/run' cannot hold the run's folder: 'sup.json' is not a "
                   "folder");
    expect_invalid("validate: an unknown dtype", "sup.json --set dtype=float16",
                   "dtype: 'float16' is not float32 or float64");
    expect_invalid("validate: missing student", "sup.json --set student=null",
                   "student: missing");
    expect_invalid("validate: missing required plugin parameter",
                   "sup.json --set data.train.dataset='{\"name\": \"idx\"}'",
                   "data.train.dataset: missing required parameter");
    expect_invalid("validate: missing teacher weights file",
                   "kd.json --set teacher.weights=/no/such.safetensors",
                   "teacher.weights: cannot read file '/no/such.safetensors'");
    expect_invalid("validate: missing dataset file",
                   "sup.json --set data.train.dataset.images=/no/such.idx",
                   "data.train.dataset.images: cannot read file '/no/such.idx'");
    expect_invalid("validate: a KD loss without a teacher", "kd.json --set teacher=null",
                   "losses[1]: loss 'kd' distils from a teacher, but the job has none");
    expect_invalid("validate: a tap the model lacks", "sup.json --set losses[0].tap=stage9",
                   "reads the student's tap 'stage9', which model 'resnet8' does not have");
    expect_invalid("validate: teacher and student class counts differ",
                   "kd.json --set student.num_classes=5",
                   "predicts 4 classes, the student 'resnet8' 5");
    expect_invalid("validate: class count against the data", "sup.json --set student.num_classes=5",
                   "the data has 4: set num_classes to 4");
    expect_invalid("validate: transforms that end in bytes",
                   "sup.json --set data.train.transforms='[{\"name\": \"hflip\"}]'",
                   "data.train.transforms: the last transform must produce a tensor");
    expect_invalid("validate: eval without data.val", "sup.json --set data.val=null",
                   "there is no data.val");
    expect_invalid("validate: subset larger than the data", "sup.json --set data.train.subset=999",
                   "data.train.subset: 999, but the dataset has 96 samples");
    char many[8192] = "sup.json --set losses='[";
    for (int i = 0; i < KD_JOB_MAX_LOSSES + 1; i++)
        strcat(many, i ? ", {\"name\": \"ce\"}" : "{\"name\": \"ce\"}");
    strcat(many, "]'");
    expect_invalid("validate: more losses than a job takes", many,
                   "losses: 257 losses; a job takes at most 256");
    snprintf(path, sizeof path, "%s/corrupt.safetensors", dir);
    kt_write_file(path, "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}       ", 24);
    expect_invalid("validate: a corrupt teacher weights file",
                   "kd.json --set teacher.weights=corrupt.safetensors", "corrupt.safetensors");
    rc = kt_kdengine(dir, &out, "validate sup.json --set nokey");
    kt_check(rc == 1 && has(out, "--set nokey: expected KEY=VALUE"), "validate: bad --set",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "validate");
    kt_check(rc == 2 && has(out, "no job file"), "validate: no job file is a usage error",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    expect_invalid("validate: optim.layer_decay above 1", "sup.json --set optim.layer_decay=1.5",
                   "optim.layer_decay: 1.5 is more than 1");
    rc = kt_kdengine(dir, &out, "plan sup.json --set optim.layer_decay=0.65");
    kt_check(rc == 1 && has(out, "does not number its layers (no layer_id callback)"),
             "plan: optim.layer_decay on a student without layer ids", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
}

/* Every tensor of two safetensors files, bit for bit. */
static bool same_tensors(const char *a_path, const char *b_path, char *why, size_t size)
{
    kd_safetensors *a = NULL, *b = NULL;
    bool same = kd_safetensors_open(a_path, &a) == KD_OK && kd_safetensors_open(b_path, &b) == KD_OK;
    if (!same)
        snprintf(why, size, "%s", kd_last_error());
    same = same && kd_safetensors_count(a) == kd_safetensors_count(b);
    for (int i = 0; same && i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        const kd_safetensors_entry *eb = kd_safetensors_find(b, ea->name);
        same = eb && ea->nbytes == eb->nbytes && !memcmp(ea->data, eb->data, ea->nbytes);
        if (!same)
            snprintf(why, size, "tensor %s differs", ea->name);
    }
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return same;
}

static void ckpt_path(char *buf, size_t size, const char *run, int step)
{
    snprintf(buf, size, "%s/%s/checkpoints/step-%09d.safetensors", dir, run, step);
}

static void test_run(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run sup.json");
    bool trained = rc == 0 && has(out, "done: 18 steps") && has(out, "eval epoch 3");
    kt_check(trained, "run: supervised training finishes", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    char path[512], other[512], why[256] = "";
    snprintf(path, sizeof path, "%s/sup/metrics.jsonl", dir);
    size_t len;
    char *metrics = (char *)kt_read_file(path, &len);
    char *text = metrics ? realloc(metrics, len + 1) : NULL;
    if (text)
        text[len] = '\0';
    else
        free(metrics);
    metrics = text;
    kt_check(metrics && has(metrics, "\"type\":\"eval\"") && has(metrics, "\"type\":\"summary\""),
             "run: metrics.jsonl has eval and summary lines", "%s", metrics ? metrics : "none");
    free(metrics);

    /* the learnt task is easy: the student must do better than chance */
    rc = kt_kdengine(dir, &out, "eval sup.json --weights sup/best.safetensors --json");
    double top1 = -1;
    const char *p = out ? strstr(out, "\"top1\": ") : NULL;
    if (p)
        top1 = atof(p + 8);
    kt_check(rc == 0 && top1 > 50, "eval: the trained student beats chance (25%)",
             "exit %d, top1 %.2f: %s", rc, top1, out ? out : "(none)");
    free(out);

    /* same job, same seed, same threads: the same bits, with any workers */
    write_job("sup2.json", "sup2", 3, "", "{\"name\": \"ce\"}");
    rc = kt_kdengine(dir, &out, "run sup2.json");
    free(out);
    ckpt_path(path, sizeof path, "sup", 18);
    ckpt_path(other, sizeof other, "sup2", 18);
    kt_check(rc == 0 && same_tensors(path, other, why, sizeof why),
             "run: reproducible to the bit (0 vs 3 loader workers)", "exit %d: %s", rc, why);

    /* export without weights writes the seed's initial student: a run
     * started from that file ends where the run that drew it ends */
    rc = kt_kdengine(dir, &out, "export sup.json --out init.safetensors");
    free(out);
    int rc2 = rc == 0 ? kt_kdengine(dir, &out, "run sup.json --set output=sup4 "
                                       "--set student.weights=init.safetensors")
                      : -1;
    if (rc == 0)
        free(out);
    ckpt_path(other, sizeof other, "sup4", 18);
    kt_check(rc == 0 && rc2 == 0 && same_tensors(path, other, why, sizeof why),
             "export: without --weights, the student a run starts from", "exit %d, %d: %s", rc,
             rc2, why);

    /* resume from the epoch-1 checkpoint: the same end */
    write_job("sup3.json", "sup3", 1, "", "{\"name\": \"ce\"}");
    rc = kt_kdengine(dir, &out, "run sup3.json");
    free(out);
    for (int step = 12; step <= 18; step += 6) {
        ckpt_path(other, sizeof other, "sup3", step);
        unlink(other);
    }
    rc = kt_kdengine(dir, &out, "run sup3.json --resume");
    bool resumed = rc == 0 && has(out, "resuming from") && has(out, "step 6");
    free(out);
    ckpt_path(other, sizeof other, "sup3", 18);
    kt_check(resumed && same_tensors(path, other, why, sizeof why),
             "run: resumed at an epoch boundary equals uninterrupted", "exit %d: %s", rc, why);

    /* export: bare state_dict names, loadable as teacher weights */
    rc = kt_kdengine(dir, &out, "export sup.json --weights sup/best.safetensors --out teacher.safetensors");
    free(out);
    snprintf(path, sizeof path, "%s/teacher.safetensors", dir);
    kd_safetensors *f = NULL;
    bool bare = rc == 0 && kd_safetensors_open(path, &f) == KD_OK &&
                kd_safetensors_find(f, "conv1.weight") && kd_safetensors_find(f, "fc.bias") &&
                !kd_safetensors_metadata(f, "kdengine.state");
    kd_safetensors_close(f);
    kt_check(bare, "export: student weights with state_dict names", "exit %d", rc);

    /* PyTorch's strict load_state_dict takes the file, and the reference
     * model scores the val set as kdengine does with the same weights */
    rc = kt_kdengine(dir, &out, "eval sup.json --weights teacher.safetensors --json");
    p = out ? strstr(out, "\"top1\": ") : NULL;
    double ours = p ? atof(p + 8) : -1;
    free(out);
    char script[512], cmd[2048];
    kt_source_path("tests/parity/torch_load_export.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s/teacher.safetensors resnet8 4 1 %s/val-images.idx "
             "%s/val-labels.idx 0.4 0.25 2>&1", KD_TORCH_PYTHON, script, dir, dir, dir);
    rc = kt_run_command(cmd, &out);
    p = out ? strstr(out, "\"top1\": ") : NULL;
    double theirs = p ? atof(p + 8) : -2;
    if (rc != 0 && out && has(out, "No module named 'torch'"))
        kt_skip("export: PyTorch loads it strictly and agrees", "no torch in %s",
                KD_TORCH_PYTHON);
    else
        kt_check(rc == 0 && ours >= 0 && theirs == ours,
                 "export: PyTorch loads it strictly and agrees",
                 "kdengine top-1 %.4f, torch top-1 %.4f (exit %d): %s", ours, theirs, rc,
                 out ? out : "(none)");
    free(out);
}

static void test_distill(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "eval kd.json --teacher");
    kt_check(rc == 0 && has(out, "teacher: top-1"), "eval: the teacher from its weights",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "plan kd.json");
    kt_check(rc == 0 && has(out, "reads teacher.logits [16, 4]") && has(out, "MFLOPs per image") &&
                 has(out, "stage2 (NCHW, 32 ch, /2)") && has(out, "pre_logits (NC, 64 ch, /1)"),
             "plan: taps with layouts, shapes and FLOPs", "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "run kd.json");
    kt_check(rc == 0 && has(out, "resnet8 teaches resnet8") && has(out, "done: 18 steps"),
             "run: distillation finishes", "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "run kd.json --set optim.lr=1e30");
    kt_check(rc == 1 && (has(out, "is NaN") || has(out, "is infinite") || has(out, "not finite")),
             "run: a diverging loss stops with the term and step", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
}

/* kdengine forward: a job's teacher and the same model named on the command
 * line give the same logits; bad requests are named. */
static void test_forward(void)
{
    char path[256], *out = NULL;
    kd_scope_begin();
    kd_rng rng = kd_rng_make(5, 0, 0);
    int64_t shape[4] = {2, 1, 8, 8}, flat[2] = {2, 64};
    kd_tensor *x = kt_uniform(KD_F32, 4, shape, &rng, -1, 1);
    kd_tensor *x2 = kt_uniform(KD_F32, 2, flat, &rng, -1, 1);
    const char *input = "input", *other = "other";
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    bool ok = kd_safetensors_save(path, 1, &input, &x, 0, NULL) == KD_OK;
    snprintf(path, sizeof path, "%s/x2.safetensors", dir);
    ok = ok && kd_safetensors_save(path, 1, &other, &x2, 0, NULL) == KD_OK;
    kd_scope_end();
    int rc = kt_kdengine(dir, &out, "forward kd.json --teacher --input x.safetensors --taps all "
                            "--out t.safetensors");
    kt_check(ok && rc == 0 && has(out, "stage2") && has(out, "logits                   f32    "
                                                                "[2, 4]"),
             "forward: a job's teacher, every tap", "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "forward resnet8 --params '{\"num_classes\": 4, \"in_chans\": 1}' "
                        "--weights teacher.safetensors --input x.safetensors --out m.safetensors "
                        "--plugin-dir %s", kt_plugin_dir());
    free(out);
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/t.safetensors", dir);
    snprintf(b, sizeof b, "%s/m.safetensors", dir);
    kd_safetensors *ft = NULL, *fm = NULL;
    kd_scope_begin();
    bool same = rc == 0 && kd_safetensors_open(a, &ft) == KD_OK &&
                kd_safetensors_open(b, &fm) == KD_OK && kd_safetensors_count(fm) == 1;
    kd_tensor *lt = same ? kd_safetensors_load(ft, "logits", KD_F32) : NULL;
    kd_tensor *lm = same ? kd_safetensors_load(fm, "logits", KD_F32) : NULL;
    same = lt && lm && kt_max_abs_diff(lt, lm) == 0;
    kd_scope_end();
    kd_safetensors_close(ft);
    kd_safetensors_close(fm);
    kt_check(same, "forward: MODEL --weights equals the job's teacher", "exit %d", rc);

    static const struct {
        const char *name, *args, *want;
        int rc;
    } bad[] = {
        {"forward: an unknown tap lists the model's", "kd.json --taps stage9",
         "no tap 'stage9' (it has: stem, stage1", 1},
        {"forward: no tensor of that name", "kd.json --input-key nope", "no tensor named 'nope'",
         1},
        {"forward: an input of the wrong rank", "kd.json --input x2.safetensors",
         "has 2 dimensions", 1},
        {"forward: --teacher needs a job", "resnet8 --teacher", "--teacher goes with a JOB.json",
         2},
        {"forward: a misspelt model parameter", "resnet8 --params '{\"num_clases\": 4}'",
         "did you mean num_classes?", 1},
        {"forward: no teacher in the job", "sup.json --teacher", "the job has no teacher", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool job = strstr(bad[i].args, ".json") != NULL;
        rc = kt_kdengine(dir, &out, "forward %s %s --out bad.safetensors %s %s", bad[i].args,
                      strstr(bad[i].args, "--input ") ? "" : "--input x.safetensors",
                      job ? "" : "--plugin-dir", job ? "" : kt_plugin_dir());
        kt_check(rc == bad[i].rc && has(out, bad[i].want), bad[i].name,
                 "exit %d, want %d and \"%s\" in: %s", rc, bad[i].rc, bad[i].want,
                 out ? out : "(none)");
        free(out);
    }
}

/* SIGINT mid-run writes a checkpoint; --resume ends where an uninterrupted
 * run ends. */
static void test_interrupt(void)
{
    write_job("long.json", "long", 0, "", "{\"name\": \"ce\"}");
    write_job("long2.json", "long2", 0, "", "{\"name\": \"ce\"}");
    char *out = NULL;
    const char *longer = "--set schedule.epochs=60";
    int rc = kt_kdengine(dir, &out, "run long.json %s", longer);
    free(out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && exec %s/kdengine run long2.json %s >long2.log 2>&1", dir,
             KD_BUILDDIR, longer);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* signal once the first epoch's checkpoint exists: mid-run */
    char first[512];
    ckpt_path(first, sizeof first, "long2", 6);
    for (int i = 0; i < 1000 && access(first, F_OK) != 0; i++)
        usleep(10 * 1000);
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 0) {
        kt_skip("run: SIGINT writes a checkpoint and --resume continues exactly",
                "the run finished before the signal (machine too fast for this case)");
        return;
    }
    int rc2 = kt_kdengine(dir, &out, "run long2.json %s --resume", longer);
    free(out);
    char a[512], b[512], why[256] = "";
    ckpt_path(a, sizeof a, "long", 360);
    ckpt_path(b, sizeof b, "long2", 360);
    kt_check(rc == 0 && code == 3 && rc2 == 0 && same_tensors(a, b, why, sizeof why),
             "run: SIGINT writes a checkpoint and --resume continues exactly",
             "uninterrupted exit %d, interrupted exit %d, resumed exit %d: %s", rc, code, rc2,
             why);
}

/* The value of tensor `name` in a safetensors file; NAN when absent. */
static double tensor_value(const char *path, const char *name)
{
    kd_safetensors *f = NULL;
    double v = NAN;
    if (kd_safetensors_open(path, &f) == KD_OK && kd_safetensors_find(f, name)) {
        kd_tensor *t = kd_safetensors_load(f, name, KD_F64);
        v = t ? kd_tensor_get(t, 0) : NAN;
        kd_tensor_free(t);
    }
    kd_safetensors_close(f);
    return v;
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

/* The "loss" of the train line of `step` in a run's metrics.jsonl. */
static double logged_loss(const char *run, int step)
{
    char path[256], want[64];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    snprintf(want, sizeof want, "\"step\":%d,", step);
    char *text = read_text(path);
    const char *line = text ? strstr(text, want) : NULL;
    const char *loss = line ? strstr(line, "\"loss\":") : NULL;
    double v = loss ? atof(loss + 7) : NAN;
    free(text);
    return v;
}

/* tests/plugins/abi2_parts in a plugin dir of its own, for --set
 * plugin_dirs. */
static void stage_test_plugin(char *folder, size_t size)
{
    char from[1024], to[1024];
    snprintf(folder, size, "%s/extra", dir);
    mkdir(folder, 0777);
    snprintf(to, sizeof to, "%s/abi2_parts", folder);
    mkdir(to, 0777);
    char *manifest = read_text(kt_source_path("tests/plugins/abi2_parts/manifest.json", from,
                                              sizeof from));
    snprintf(to, sizeof to, "%s/abi2_parts/manifest.json", folder);
    if (manifest)
        kt_write_file(to, manifest, strlen(manifest));
    free(manifest);
    snprintf(from, sizeof from, "%s/tests/plugins/abi2_parts/.libs/abi2_parts.so", KD_BUILDDIR);
    snprintf(to, sizeof to, "%s/abi2_parts/abi2_parts.so", folder);
    if (symlink(from, to) != 0)
        perror(to);
}

/* Loss parameters, host services and batch transforms through real runs. */
static void test_abi2_parts(void)
{
    char extra[128], dirs[512], *out = NULL;
    stage_test_plugin(extra, sizeof extra);
    snprintf(dirs, sizeof dirs, "--set plugin_dirs='[\"%s\", \"%s\"]'", kt_plugin_dir(), extra);

    int rc = kt_kdengine(dir, &out, "run kd.json %s --set output=owned --set losses='[{\"name\": "
                      "\"ce\"}, {\"name\": \"owned_scale\"}, {\"name\": \"owned_scale\", "
                      "\"weight\": 3}]'", dirs);
    char ckpt[512];
    ckpt_path(ckpt, sizeof ckpt, "owned", 18);
    double w1 = tensor_value(ckpt, "loss.1.proj.weight");
    double w2 = tensor_value(ckpt, "loss.2.proj.weight");
    double m2 = tensor_value(ckpt, "optim.momentum_buffer.loss.2.proj.weight");
    kt_check(rc == 0 && w1 != 1 && w2 != 1 && w1 != w2 && !isnan(m2),
             "run: two losses that own proj.weight train apart (loss.<i>. names)",
             "exit %d, loss.1 %g, loss.2 %g, momentum %g: %s", rc, w1, w2, m2,
             out ? out : "(none)");
    free(out);

    rc = kt_kdengine(dir, &out, "run kd.json %s --set output=through --set losses='[{\"name\": "
                  "\"ce\"}, {\"name\": \"through_teacher\"}]'", dirs);
    char path[256];
    snprintf(path, sizeof path, "%s/through/metrics.jsonl", dir);
    char *metrics = read_text(path);
    kt_check(rc == 0 && has(metrics, "\"loss_terms\":{\"losses[0]\":{\"ce\":") &&
                 has(metrics, "\"losses[1]\":{\"through\":") && has(metrics, "\"labels\":16"),
             "run: a loss runs the teacher from a tap, reads train_labels; every term is logged",
             "exit %d: %s\n%s", rc, out ? out : "(none)", metrics ? metrics : "(no metrics)");
    free(metrics);
    free(out);

    /* blend at lambda 1 is the identity with one-hot soft targets: in
     * float64 the run equals the plain one; at 0.5 it does not */
    const char *f64 = "--set dtype=float64 --set eval.every_epochs=0";
    rc = kt_kdengine(dir, &out, "run sup.json %s %s --set output=plain", dirs, f64);
    free(out);
    int rc1 = kt_kdengine(dir, &out, "run sup.json %s %s --set output=blend1 "
                       "--set data.train.batch_transforms='[{\"name\": \"blend\", "
                       "\"lambda\": 1}]'", dirs, f64);
    free(out);
    int rc2 = kt_kdengine(dir, &out, "run sup.json %s %s --set output=blend5 "
                       "--set data.train.batch_transforms='[{\"name\": \"blend\", "
                       "\"lambda\": 0.5}]'", dirs, f64);
    free(out);
    double plain = logged_loss("plain", 8), same = logged_loss("blend1", 8),
           mixed = logged_loss("blend5", 8);
    kt_check(rc == 0 && rc1 == 0 && rc2 == 0 && fabs(same - plain) <= 1e-9 * fabs(plain) &&
                 fabs(mixed - plain) > 1e-3,
             "run: batch transforms replace the images and hand soft targets to the losses",
             "exit %d %d %d; loss at step 8: plain %.12g, blend 1 %.12g, blend 0.5 %.12g", rc,
             rc1, rc2, plain, same, mixed);
    rc = kt_kdengine(dir, &out, "run sup.json %s --set output=forget --set data.train."
                  "batch_transforms='[{\"name\": \"blend\", \"forget_soft\": true}]'", dirs);
    kt_check(rc == 1 && has(out, "data.train.batch_transforms[0] (blend) left no soft targets"),
             "run: a batch transform that sets no soft targets is an error naming it",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    char args[1024];
    snprintf(args, sizeof args, "sup.json %s --set data.val.batch_transforms='[{\"name\": "
             "\"blend\"}]'", dirs);
    expect_invalid("validate: batch transforms on data.val", args,
                   "data.val.batch_transforms: only data.train mixes batches");
    snprintf(args, sizeof args, "sup.json %s --set data.train.batch_transforms='[{\"name\": "
             "\"blnd\"}]'", dirs);
    expect_invalid("validate: an unknown batch transform", args,
                   "data.train.batch_transforms[0].name: no batch_transform named 'blnd'; did "
                   "you mean blend?");
}

/* The teacher collects no gradient when a loss backpropagates through it
 * with forward_from; the student, run the same way, does. */
static void test_frozen_teacher(void)
{
    char cwd[1024];
    kd_job *job = NULL;
    kd_session *s = NULL;
    /* the job's paths are relative to its folder */
    bool opened = getcwd(cwd, sizeof cwd) && chdir(dir) == 0 &&
                  kd_job_load("kd.json", 0, NULL, &job) == KD_OK &&
                  kd_session_open(job, KD_SESSION_TRAIN, &s) == KD_OK;
    if (chdir(cwd) != 0 || !kt_check(opened, "forward_from: session", "%s", kd_last_error())) {
        kd_job_free(job);
        return;
    }
    const kd_host_services *h = &s->services;
    int tap = 0;
    while (strcmp(s->student.taps[tap].name, "stage3") != 0)
        tap++;
    kd_tap_shape shape = s->student_shapes[tap];
    shape.shape[0] = 2;
    kd_rng rng = kd_rng_make(9, 0, 0);
    kd_tensor *x = kt_uniform(KD_F32, shape.ndim, shape.shape, &rng, -1, 1);
    kd_tensor_set_requires_grad(x, true);
    int grads[2] = {0, 0};
    kd_status st = KD_OK;
    for (int role = 0; role < 2 && st == KD_OK; role++) {
        kd_model_run *m = role == KD_ROLE_TEACHER ? &s->teacher : &s->student;
        kd_scope_begin();
        kd_tensor *z = NULL;
        st = h->forward_from(h->host, (kd_model_role)role, "stage3", x, "logits", false, &z);
        if (st == KD_OK)
            st = kd_backward(kd_sum_all(z));
        kd_scope_end();
        for (int i = 0; i < m->n_tensors; i++)
            grads[role] += m->tensors[i].tensor->grad != NULL;
    }
    kt_check(st == KD_OK && x->grad && grads[KD_ROLE_TEACHER] == 0 &&
                 grads[KD_ROLE_STUDENT] > 0,
             "forward_from: gradients reach the input and the student, never the teacher",
             "%s; input grad %s, teacher tensors with grad %d, student %d",
             st == KD_OK ? "ok" : kd_last_error(), x->grad ? "set" : "none",
             grads[KD_ROLE_TEACHER], grads[KD_ROLE_STUDENT]);
    kd_tensor_free(x);
    kd_session_close(s);
    kd_job_free(job);
}

/* A DataParallel checkpoint ("module." on every name) loads through the
 * model's filter; a stray tensor is still refused. */
static void test_weight_filter(void)
{
    char path[256], renamed[256];
    snprintf(path, sizeof path, "%s/teacher.safetensors", dir);
    snprintf(renamed, sizeof renamed, "%s/module.safetensors", dir);
    kd_safetensors *f = NULL;
    bool ok = kd_safetensors_open(path, &f) == KD_OK;
    int n = ok ? kd_safetensors_count(f) : 0;
    char **names = calloc((size_t)n + 2, sizeof *names);
    kd_tensor **tensors = calloc((size_t)n + 2, sizeof *tensors);
    for (int i = 0; ok && i < n; i++) {
        const kd_safetensors_entry *e = kd_safetensors_at(f, i);
        names[i] = malloc(strlen(e->name) + 8);
        sprintf(names[i], "module.%s", e->name);
        tensors[i] = kd_safetensors_load(f, e->name, (kd_dtype)e->dtype);
        ok = tensors[i] != NULL;
    }
    ok = ok && kd_safetensors_save(renamed, n, (const char *const *)names, tensors, 0, NULL) == KD_OK;
    char *a = NULL, *b = NULL;
    int ra = kt_kdengine(dir, &a, "eval kd.json --teacher --json");
    int rb = kt_kdengine(dir, &b, "eval kd.json --teacher --json --weights module.safetensors");
    kt_check(ok && ra == 0 && rb == 0 && a && b && strcmp(a, b) == 0,
             "weights: a DataParallel checkpoint (module.*) loads through resnet's filter",
             "exit %d %d: %s / %s", ra, rb, a ? a : "(none)", b ? b : "(none)");
    free(a);
    free(b);
    names[n] = strdup("module.extra.weight");
    tensors[n] = tensors[0];
    ok = ok && kd_safetensors_save(renamed, n + 1, (const char *const *)names, tensors, 0,
                                   NULL) == KD_OK;
    int rc = kt_kdengine(dir, &a, "eval kd.json --teacher --weights module.safetensors");
    kt_check(ok && rc == 1 && has(a, "unexpected tensor 'module.extra.weight' -> extra.weight"),
             "weights: after the filter, loading is still strict", "exit %d: %s", rc,
             a ? a : "(none)");
    free(a);
    for (int i = 0; i < n + 1; i++)
        free(names[i]);
    for (int i = 0; i < n; i++)
        kd_tensor_free(tensors[i]);
    free(names);
    free(tensors);
    kd_safetensors_close(f);
}

/* `plan`'s memory estimate against the peak `run` reports, on the example
 * jobs shortened (evaluation included: on these its batch of 500 is the
 * peak). */
static void test_plan_memory(void)
{
    static const char *const jobs[] = {"teacher", "student", "kd", "kd-logit-stand"};
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip("plan: memory estimate", "no Fashion-MNIST (scripts/setup installs it)");
        return;
    }
    char root[512];
    kt_source_path("", root, sizeof root);
    for (int i = 0; i < 4; i++) {
        char cmd[2048], name[96], *out = NULL, *run = NULL;
        snprintf(name, sizeof name, "plan: memory estimate within 25%% of the run's peak (%s)",
                 jobs[i]);
        const char *shorter = "--set schedule.epochs=1 --set data.train.subset=256 "
                              "--set data.val.subset=1000";
        snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine plan "
                 "examples/fashion-mnist/%s.json %s 2>&1", root, kt_plugin_dir(), KD_BUILDDIR,
                 jobs[i], shorter);
        int rc = kt_run_command(cmd, &out);
        snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine run "
                 "examples/fashion-mnist/%s.json %s --set output=%s/plan-%s 2>&1", root,
                 kt_plugin_dir(), KD_BUILDDIR, jobs[i], shorter, dir, jobs[i]);
        int rc2 = kt_run_command(cmd, &run);
        const char *est = out ? strstr(out, "peak about ") : NULL;
        const char *got = run ? strstr(run, "peak tensor memory ") : NULL;
        double estimate = est ? atof(est + 11) : NAN, peak = got ? atof(got + 19) : NAN;
        kt_check(rc == 0 && rc2 == 0 && fabs(estimate - peak) <= 0.25 * peak, name,
                 "exit %d %d, estimate %.1f MiB, peak %.1f MiB: %s%s", rc, rc2, estimate, peak,
                 est ? "" : out ? out : "(no plan)", got ? "" : run ? run : "(no run)");
        free(out);
        free(run);
    }
}

/* optim.layer_decay in real one-epoch runs with a ViT student: decay 1
 * (every scale 1) trains as a run without it, to the bit; decay 0.5 moves
 * the patch embedding (layer 0 of 4: lr / 8) elsewhere. */
static void test_layer_decay_run(void)
{
    static const char *const runs[] = {"ld_off", "ld_one", "ld_half"};
    static const char *const decays[] = {"0", "1", "0.5"};
    double embed[3], loss[3];
    int rc[3];
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        rc[i] = kt_kdengine(dir, &out, "run sup.json --set output=%s --set student='{\"model\": "
                         "\"deit_tiny_patch16_224\", \"num_classes\": 4, \"in_chans\": 1, "
                         "\"img_size\": 8, \"patch_size\": 4, \"depth\": 2}' --set "
                         "optim='{\"name\": \"adamw\", \"lr\": 0.001, \"layer_decay\": "
                         "%s}' --set schedule.epochs=1", runs[i], decays[i]);
        if (rc[i] != 0)
            fprintf(stderr, "%s: %s\n", runs[i], out ? out : "(none)");
        free(out);
        char ckpt[512];
        ckpt_path(ckpt, sizeof ckpt, runs[i], 6);
        embed[i] = tensor_value(ckpt, "student.patch_embed.proj.weight");
        loss[i] = logged_loss(runs[i], 4);
    }
    kt_check(rc[0] == 0 && rc[1] == 0 && rc[2] == 0 && embed[0] == embed[1] &&
                 loss[0] == loss[1] && embed[2] != embed[0] && !isnan(embed[0]),
             "run: optim.layer_decay 1 trains as none, 0.5 otherwise (deit student, adamw)",
             "exit %d %d %d; patch_embed.proj.weight[0] %.17g %.17g %.17g; loss at step 4 "
             "%.17g %.17g %.17g", rc[0], rc[1], rc[2], embed[0], embed[1], embed[2], loss[0],
             loss[1], loss[2]);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kdjob.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    if (!kt_write_quadrants(dir, "train", 96, 1) || !kt_write_quadrants(dir, "val", 64, 2)) {
        kt_fail("setup", "cannot write the synthetic data");
        return kt_finish();
    }
    write_job("sup.json", "sup", 0, "", "{\"name\": \"ce\"}");
    write_job("kd.json", "kd", 2,
              "\"teacher\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, "
              "\"weights\": \"teacher.safetensors\"},",
              "{\"name\": \"ce\", \"weight\": 0.5}, {\"name\": \"kd\", \"temperature\": 4}");
    test_run();
    test_validate();
    test_layer_decay_run();
    test_distill();
    test_forward();
    test_abi2_parts();
    test_frozen_teacher();
    test_weight_filter();
    test_plan_memory();
    test_interrupt();
    kt_remove_tree(dir);
    return kt_finish();
}
