/* The model zoo in real jobs: examples/fashion-mnist/convnext-teacher.json
 * trains a ConvNeXt-Atto teacher and convnext-mobilenet.json distils it
 * into MobileNetV3-Small, both on one-channel Fashion-MNIST padded to
 * 32x32, cut to a few steps with --set. Every step must log finite ce and
 * kd terms, the teacher's best.safetensors must load into the kd job by
 * timm name, and both runs must evaluate. */
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
    char *out = NULL, bad[512] = "";
    const char *name = "convnext_atto trains on Fashion-MNIST at 32x32 (convnext-teacher.json)";
    int rc = run_job("examples/fashion-mnist/convnext-teacher.json", "teacher", "", &out);
    const char *ce[] = {"ce"};
    if (rc == 0)
        check_metrics("teacher", ce, 1, bad, sizeof bad);
    bool teacher = kt_check(rc == 0 && !bad[0], name, "%s", rc ? out : bad);
    free(out);

    name = "convnext_atto teaches mobilenetv3_small_100 (convnext-mobilenet.json)";
    if (!teacher) {
        kt_skip(name, "no teacher: its job failed");
    } else {
        char extra[256];
        snprintf(extra, sizeof extra, "--set teacher.weights='\"%s/teacher/best.safetensors\"'",
                 dir);
        rc = run_job("examples/fashion-mnist/convnext-mobilenet.json", "student", extra, &out);
        const char *ce_kd[] = {"ce", "kd"};
        if (rc == 0)
            check_metrics("student", ce_kd, 2, bad, sizeof bad);
        kt_check(rc == 0 && !bad[0], name, "%s", rc ? out : bad);
        free(out);

        /* plan measures a training step of the student: train-mode batch
         * norm on MobileNetV3's 1x1 maps needs more than one image */
        char job[512], cmd[2048];
        kt_source_path("examples/fashion-mnist/convnext-mobilenet.json", job, sizeof job);
        snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine plan %s --set plugin_dirs='[\"%s\"]' %s "
                 "2>&1", dir, KD_BUILDDIR, job, kt_plugin_dir(), extra);
        rc = kt_run_command(cmd, &out);
        kt_check(rc == 0 && out && strstr(out, "student: mobilenetv3_small_100") &&
                     strstr(out, "peak about"),
                 "plan on convnext-mobilenet.json (a MobileNetV3 student at 32x32)", "exit %d: %s",
                 rc, out ? out : "(none)");
        free(out);
    }
    kt_remove_tree(dir);
    return kt_finish();
}
