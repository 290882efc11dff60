/* kdengine's training step is PyTorch's: short runs on the first Fashion-MNIST
 * images from the same starting weights, replayed in PyTorch by
 * bench/fmnist_recipe.py's own functions (tests/parity/torch_recipe_steps.py),
 * which draw the shuffle order, crops and flips as kdengine's loader does,
 * so both sides see the same batches.
 *
 * Every case runs twice. In float64 (the job's "dtype") kdengine and the
 * float64 replay must agree at every step: each loss term, every lr, and
 * after the checkpointed steps the parameters and BN running statistics.
 * In float32 only what rounding cannot flip is compared: the first step's
 * loss and terms, and the lr of every step. (After one SGD step through
 * train-mode BN and ReLU masks float32 rounding has become update
 * differences of ~1e-2, and how much depends on the CPU's kernels.)
 * This is what makes the README's kdengine-vs-PyTorch accuracy table a
 * comparison of one recipe: the script that trains the PyTorch column is
 * checked here against the engine.
 *
 * Data: Debian's dataset-fashion-mnist (scripts/setup installs it); the
 * teacher: the shipped examples/fashion-mnist/teacher.safetensors. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "plugin_fixture.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char dir[64];
static char teacher[512];

/* Six steps: three epochs of two batches of 32, a per-step cosine lr with a
 * half-epoch warm-up, Nesterov momentum and weight decay. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 5, \"threads\": 1, \"dtype\": \"%s\", \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [%s{\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 32, \"subset\": 64, \"shuffle\": %s, \"workers\": 0}},\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1%s},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9, \"weight_decay\": 5e-4,\n"
    "            \"nesterov\": true},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 3, \"per_step\": true,\n"
    "               \"warmup_epochs\": 0.5},\n"
    "  \"eval\": {\"every_epochs\": 0}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 3},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

typedef struct replay_case {
    const char *name;
    const char *teacher_bn; /* NULL: no teacher */
    const char *losses;
    bool augment; /* shuffle, random crop and flip */
} replay_case;

#define AUGMENT_TRANSFORMS                                                                   \
    "{\"name\": \"random_crop\", \"size\": 28, \"padding\": 4}, {\"name\": \"hflip\"}, "

static const replay_case cases[] = {
    {"ce", NULL, "{\"name\": \"ce\", \"label_smoothing\": 0.1}", false},
    {"kd", "", "{\"name\": \"ce\", \"weight\": 0.1}, "
               "{\"name\": \"kd\", \"weight\": 0.9, \"temperature\": 4, "
               "\"weight_warmup_epochs\": 1}",
     false},
    {"kd_ls", "", "{\"name\": \"ce\", \"weight\": 0.1}, "
                  "{\"name\": \"kd\", \"weight\": 9, \"temperature\": 2, \"logit_stand\": true}",
     false},
    {"logit_stand", "", "{\"name\": \"ce\", \"weight\": 0.5}, "
                        "{\"name\": \"logit_stand\", \"weight\": 2, \"base_temperature\": 3}",
     false},
    {"kd_train_bn", ", \"train_bn\": true", "{\"name\": \"ce\", \"weight\": 0.1}, "
                                             "{\"name\": \"kd\", \"weight\": 0.9}",
     false},
    {"kd_augment", "", "{\"name\": \"ce\", \"weight\": 0.5}, "
                       "{\"name\": \"kd\", \"weight\": 0.5, \"temperature\": 4}",
     true},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

static bool write_job(const char *name, const char *dtype, const char *teacher_bn,
                      const char *student_weights, const char *losses, bool augment)
{
    char teacher_spec[1024] = "", weights[600] = "", text[8192], path[256];
    if (teacher_bn)
        snprintf(teacher_spec, sizeof teacher_spec,
                 "\"teacher\": {\"model\": \"resnet20\", \"num_classes\": 10, \"in_chans\": 1, "
                 "\"weights\": \"%s\"%s},",
                 teacher, teacher_bn);
    if (student_weights)
        snprintf(weights, sizeof weights, ", \"weights\": \"%s\"", student_weights);
    snprintf(text, sizeof text, job_template, dtype, dir, name, kt_plugin_dir(),
             augment ? AUGMENT_TRANSFORMS : "", augment ? "true" : "false", teacher_spec, weights,
             losses);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    return kt_write_file(path, text, strlen(text));
}

static int kdengine_run(const char *name, char **out)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine run %s.json 2>&1", dir, KD_BUILDDIR, name);
    return kt_run_command(cmd, out);
}

static double number(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 1e30;
}

/* Limits. Float32, first step: the same arithmetic up to summation order
 * and kernel choice, a few float32 roundings through two ResNets.
 * Float64: the whole trajectory; one step amplifies an input difference
 * ~1e2 (more where BN divides by a small batch variance), so six steps of
 * 1e-16 roundings stay far below 1e-9, while a wrong momentum, Nesterov
 * term, loss weight, temperature or gradient is off by 1e-4 or more. */
#define KD_F32_FIRST_STEP 1e-5
#define KD_F64_TRAJECTORY 1e-9

static void check_replay(const char *name, json_t *r)
{
    char label[128];
    double first = number(r, "loss_err_first"), lr = number(r, "lr_err");
    const char *dtype = json_string_value(json_object_get(r, "dtype"));
    if (dtype && !strcmp(dtype, "float32")) {
        snprintf(label, sizeof label, "%s: first step's loss and terms, every lr follow PyTorch's",
                 name);
        kt_check(number(r, "steps") == 6 && first < KD_F32_FIRST_STEP && lr < 1e-12, label,
                 "steps %g, first step %.2e, lr %.2e", number(r, "steps"), first, lr);
        return;
    }
    snprintf(label, sizeof label, "%s: every step's loss, terms and lr follow PyTorch's", name);
    double loss = number(r, "loss_err");
    kt_check(number(r, "steps") == 6 && loss < KD_F64_TRAJECTORY && lr < 1e-12, label,
             "steps %g, all steps %.2e, lr %.2e", number(r, "steps"), loss, lr);

    snprintf(label, sizeof label, "%s: weights and BN statistics follow PyTorch's", name);
    json_t *list = json_object_get(r, "checkpoints");
    char why[1024] = "";
    size_t used = 0;
    bool ok = json_array_size(list) == 3;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *c = json_array_get(list, i);
        double update = number(c, "update"), stats = number(c, "stats");
        ok = ok && update < KD_F64_TRAJECTORY && stats < KD_F64_TRAJECTORY;
        if (used < sizeof why)
            used += (size_t)snprintf(why + used, sizeof why - used,
                                     "step %g: update %.2e, BN stats %.2e; ", number(c, "step"),
                                     update, stats);
    }
    kt_check(ok, label, "%s", why);
}

/* Finds the case's line in the replay's output (stderr is folded in, so
 * a warning may come between the lines) and checks it. */
static void check_case(const char *name, const char *out, int rc)
{
    char want[128];
    snprintf(want, sizeof want, "%s/%s", dir, name);
    for (const char *line = out; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        json_t *r = line[0] == '{' ? json_loadb(line, len, 0, NULL) : NULL;
        const char *run = json_string_value(json_object_get(r, "run"));
        bool mine = run && strcmp(run, want) == 0;
        if (mine)
            check_replay(name, r);
        json_decref(r);
        if (mine)
            return;
        line = end ? end + 1 : NULL;
    }
    kt_fail(name, "no replay line from PyTorch (exit %d): %s", rc, out ? out : "(none)");
}

static void test_replays(void)
{
    /* starting weights: the checkpoint of a first short run, so the
     * replays start from trained, not freshly initialised, weights */
    char *out = NULL;
    write_job("start", "float32", NULL, NULL, "{\"name\": \"ce\"}", false);
    int rc = kdengine_run("start", &out);
    char start[256];
    snprintf(start, sizeof start, "%s/start/checkpoints/step-000000006.safetensors", dir);
    if (!kt_check(rc == 0 && access(start, R_OK) == 0, "a short run writes its checkpoint",
                  "exit %d: %s", rc, out ? out : "(none)")) {
        free(out);
        return;
    }
    free(out);

    static const char *const dtypes[2] = {"float32", "float64"};
    char runs[4096] = "", names[2 * N_CASES][64];
    size_t used = 0;
    bool ran[2 * N_CASES];
    for (int i = 0; i < 2 * N_CASES; i++) {
        const replay_case *c = &cases[i / 2];
        snprintf(names[i], sizeof names[i], "%s_%s", c->name, dtypes[i % 2]);
        write_job(names[i], dtypes[i % 2], c->teacher_bn, start, c->losses, c->augment);
        rc = kdengine_run(names[i], &out);
        ran[i] = kt_check(rc == 0, names[i], "kdengine run exit %d: %s", rc,
                          out ? out : "(none)");
        free(out);
        if (ran[i])
            used += (size_t)snprintf(runs + used, sizeof runs - used, " %s/%s", dir, names[i]);
    }

    char script[512], cmd[4096];
    kt_source_path("tests/parity/torch_recipe_steps.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s%s 2>&1", KD_TORCH_PYTHON, script, runs);
    rc = kt_run_command(cmd, &out);
    if (rc != 0 && out && strstr(out, "No module named 'torch'")) {
        kt_skip("PyTorch replays", "no torch in %s", KD_TORCH_PYTHON);
        free(out);
        return;
    }
    for (int i = 0; i < 2 * N_CASES; i++)
        if (ran[i])
            check_case(names[i], out, rc);
    free(out);
}

int main(void)
{
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_fail("setup", "%s is missing: scripts/setup installs dataset-fashion-mnist", FMNIST);
        return kt_finish();
    }
    kt_source_path("examples/fashion-mnist/teacher.safetensors", teacher, sizeof teacher);
    snprintf(dir, sizeof dir, "/tmp/kdsteps.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    test_replays();
    kt_remove_tree(dir);
    return kt_finish();
}
