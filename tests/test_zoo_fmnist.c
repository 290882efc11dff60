/* The model zoo in real jobs: examples/fashion-mnist/convnext-teacher.json
 * trains a ConvNeXt-Atto teacher and convnext-mobilenet.json distils it
 * into MobileNetV3-Small; swin-teacher.json trains a narrow, shallow
 * Swin-T and swin-resnet18.json distils it into ResNet-18; all on
 * one-channel Fashion-MNIST padded to 32x32, cut to a few steps with --set.
 * Every step must log finite ce and kd terms, the teacher's
 * best.safetensors must load into the kd job by timm name, and both runs
 * must evaluate. plan runs on both kd jobs (--no-measure on the Swin one). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "plugin_fixture.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"
#define STEPS 4

/* A few steps of 32 images, one epoch, evaluated on 200 images. */
#define SHORT                                                                                  \
    "--set data.train.subset=128 --set data.train.batch_size=32 "                              \
    "--set data.train.workers=0 --set data.val.subset=200 --set data.val.workers=0 "          \
    "--set schedule.epochs=1 --set schedule.warmup_epochs=0 --set eval.every_epochs=1 "       \
    "--set log.every_steps=1"

static char dir[64];

static int run_job(const char *example, const char *output, const char *extra, char **out)
{
    char job[512], cmd[2048];
    kt_source_path(example, job, sizeof job);
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine run %s " SHORT " --set output='\"%s\"' "
             "--set plugin_dirs='[\"%s\"]' %s 2>&1", dir, KD_BUILDDIR, job, output,
             kt_plugin_dir(), extra);
    return kt_run_command(cmd, out);
}

/* The logged value of term `term` of loss `loss` ("losses[1]"), or NAN. */
static double term(json_t *line, const char *loss, const char *term)
{
    json_t *v = json_object_get(json_object_get(json_object_get(line, "loss_terms"), loss), term);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* metrics.jsonl: STEPS train lines whose named terms are finite, and an
 * eval line; the first problem goes to bad. */
static void check_metrics(const char *output, const char *const *terms, int n_terms, char *bad,
                          size_t size)
{
    char path[256], line[8192];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, output);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(bad, size, "no %s", path);
        return;
    }
    int steps = 0, evals = 0;
    while (!bad[0] && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && strcmp(type, "train") == 0) {
            steps++;
            for (int i = 0; i < n_terms; i++) {
                char loss[32];
                snprintf(loss, sizeof loss, "losses[%d]", i);
                double v = term(j, loss, terms[i]);
                if (!isfinite(v) || v <= 0)
                    snprintf(bad, size, "step %d: %s %s is %g", steps, loss, terms[i], v);
            }
        } else if (type && strcmp(type, "eval") == 0) {
            double top1 = json_number_value(json_object_get(j, "top1"));
            evals += top1 >= 0 && top1 <= 100;
        }
        json_decref(j);
    }
    fclose(f);
    if (!bad[0] && (steps != STEPS || evals != 1))
        snprintf(bad, size, "%d train steps and %d evaluations logged, want %d and 1", steps,
                 evals, STEPS);
}

/* Trains the teacher job, then distils it with the student job; returns
 * whether the teacher trained (its best.safetensors is then in
 * dir/<teacher_out>). */
static bool teach_and_distil(const char *teacher_job, const char *teacher_out,
                             const char *teacher_name, const char *student_job,
                             const char *student_out, const char *student_name)
{
    char *out = NULL, bad[512] = "", name[256];
    snprintf(name, sizeof name, "%s trains on Fashion-MNIST at 32x32 (%s)", teacher_name,
             teacher_job);
    char job[512];
    snprintf(job, sizeof job, "examples/fashion-mnist/%s", teacher_job);
    int rc = run_job(job, teacher_out, "", &out);
    const char *ce[] = {"ce"};
    if (rc == 0)
        check_metrics(teacher_out, ce, 1, bad, sizeof bad);
    bool teacher = kt_check(rc == 0 && !bad[0], name, "%s", rc ? out : bad);
    free(out);
    snprintf(name, sizeof name, "%s teaches %s (%s)", teacher_name, student_name, student_job);
    if (!teacher) {
        kt_skip(name, "no teacher: its job failed");
        return false;
    }
    char extra[256];
    snprintf(extra, sizeof extra, "--set teacher.weights='\"%s/%s/best.safetensors\"'", dir,
             teacher_out);
    snprintf(job, sizeof job, "examples/fashion-mnist/%s", student_job);
    rc = run_job(job, student_out, extra, &out);
    const char *ce_kd[] = {"ce", "kd"};
    if (rc == 0)
        check_metrics(student_out, ce_kd, 2, bad, sizeof bad);
    kt_check(rc == 0 && !bad[0], name, "%s", rc ? out : bad);
    free(out);
    return true;
}

/* `kdengine plan` on an example job with the teacher's weights; *out is
 * malloc'd. */
static int plan(const char *example, const char *teacher_out, const char *options, char **out)
{
    char job[512], cmd[2048];
    kt_source_path(example, job, sizeof job);
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine plan %s --set plugin_dirs='[\"%s\"]' "
             "--set teacher.weights='\"%s/%s/best.safetensors\"' %s 2>&1", dir, KD_BUILDDIR,
             job, kt_plugin_dir(), dir, teacher_out, options);
    return kt_run_command(cmd, out);
}

/* The multiply-adds plan printed for `role` ("teacher: "), or -1. */
static long long plan_macs(const char *text, const char *role)
{
    const char *at = text ? strstr(text, role) : NULL;
    const char *macs = at ? strstr(at, " MFLOPs per image (") : NULL;
    return macs ? strtoll(macs + strlen(" MFLOPs per image ("), NULL, 10) : -1;
}

int main(void)
{
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_fail("setup", "%s is missing: scripts/setup installs dataset-fashion-mnist", FMNIST);
        return kt_finish();
    }
    snprintf(dir, sizeof dir, "/tmp/kdzoo.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    char *out = NULL;
    if (teach_and_distil("convnext-teacher.json", "teacher", "convnext_atto",
                         "convnext-mobilenet.json", "student", "mobilenetv3_small_100")) {
        /* plan measures a training step of the student: train-mode batch
         * norm on MobileNetV3's 1x1 maps needs more than one image */
        int rc = plan("examples/fashion-mnist/convnext-mobilenet.json", "teacher", "", &out);
        kt_check(rc == 0 && out && strstr(out, "student: mobilenetv3_small_100") &&
                     strstr(out, "peak about"),
                 "plan on convnext-mobilenet.json (a MobileNetV3 student at 32x32)", "exit %d: %s",
                 rc, out ? out : "(none)");
        free(out);
    }
    if (teach_and_distil("swin-teacher.json", "swin", "swin_tiny (embed 48, depths 2/2/2/2)",
                         "swin-resnet18.json", "swin-resnet18", "resnet18")) {
        /* --no-measure takes the MACs from the probe forward at open: the
         * same counts as the measured passes, no memory estimate */
        char *measured = NULL;
        int rc = plan("examples/fashion-mnist/swin-resnet18.json", "swin", "--no-measure", &out);
        int rc2 = plan("examples/fashion-mnist/swin-resnet18.json", "swin", "", &measured);
        long long t = plan_macs(out, "teacher: "), s = plan_macs(out, "student: ");
        kt_check(rc == 0 && rc2 == 0 && strstr(out, "teacher: swin_tiny_patch4_window7_224") &&
                     strstr(out, "student: resnet18") &&
                     strstr(out, "layers.3 (NHWC, 384 ch, /32)") &&
                     strstr(out, "stage4 (NCHW, 512 ch, /32)") &&
                     strstr(out, "memory: not estimated (--no-measure)") &&
                     !strstr(out, "peak about") && strstr(measured, "peak about") && t > 0 &&
                     s > 0 && t == plan_macs(measured, "teacher: ") &&
                     s == plan_macs(measured, "student: "),
                 "plan --no-measure on swin-resnet18.json: both models, taps with layouts, the "
                 "measured plan's MACs", "exit %d/%d: %s\n---\n%s", rc, rc2, out ? out : "",
                 measured ? measured : "");
        free(out);
        free(measured);
    }
    kt_remove_tree(dir);
    return kt_finish();
}
