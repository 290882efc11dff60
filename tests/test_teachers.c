/* Several teachers in one job (job "teachers", a loss's "teacher",
 * ensembles), on tiny synthetic IDX data (job_fixture's 8x8 quadrants) in
 * float64 jobs with a resnet8 teacher trained here for a moment.
 *
 * - Inputs: a teacher with the pipeline's size and normalisation reads the
 *   student's batch itself; one with input_size 12 and its own normalize
 *   reads what normalising the image resized by torch's bilinear
 *   interpolate (OpenCV's INTER_LINEAR, as data/images resizes) would
 *   give, computed here from the [0, 1] images (the pipeline's order:
 *   resize, then normalise).
 * - Ensembles: the mean of the members' logits, recomputed here.
 * - Routing: a job whose kd loss reads teacher t2 of two takes the same
 *   steps (every logged loss, to 1e-9) as a job with t2 alone; reading
 *   t1 instead differs; kd on an ensemble of t1 and its copy takes t1's
 *   steps (the mean, not the sum, reaches the loss).
 * - Resume: a three-teacher run resumed from its epoch-1 checkpoint ends
 *   as the uninterrupted run, whose checkpoints hold no teacher tensor.
 * - eval --teacher renormalises data.val for a teacher's own normalize.
 * - plan prints every teacher; validate refuses, naming the JSON path: an
 *   unknown teacher, an ambiguous loss, "teacher" with "teachers", a
 *   repeated or missing name, a bad ensemble, an ensemble's non-logits tap;
 *   label, eval --teacher, forward --teacher and an FKD store's fingerprint
 *   refuse several teachers.
 * - examples/fashion-mnist/two-teachers.json runs a few steps. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"
#include "../core/train/job.h"
#include "../core/train/session.h"
#include "../core/train/teachers.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* Pipeline: normalize with mean 0.4, std 0.25; no random transforms, so
 * two jobs that share the data see the same batches. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 3, \"threads\": 1, \"dtype\": \"%s\", \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                            \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "              \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "              \"batch_size\": 16, \"workers\": 0},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/val-images.idx\",\n"
    "                          \"labels\": \"%s/val-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "            \"batch_size\": 32, \"workers\": 0}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": %d},\n"
    "  \"eval\": {\"every_epochs\": %d}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 1},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

static void write_job(const char *name, const char *dtype, const char *teachers,
                      const char *losses, int epochs, int eval_every)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dtype, dir, name, kt_plugin_dir(), dir, dir, dir,
             dir, teachers, losses, epochs, eval_every);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
}

/* The teacher models: t1 as the pipeline makes images, t2 at 12x12 with
 * its own normalisation, t1b a copy of t1. */
#define T_MODEL "\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, " \
                "\"weights\": \"teacher/best.safetensors\""
#define T1 "{\"name\": \"t1\", " T_MODEL "}"
#define T1B "{\"name\": \"t1b\", " T_MODEL "}"
#define T2_INPUT "\"input_size\": 12, \"normalize\": {\"mean\": [0.5], \"std\": [0.5]}"
#define T2 "{\"name\": \"t2\", " T_MODEL ", " T2_INPUT "}"
#define ENS "{\"name\": \"ens\", \"ensemble\": [\"t1\", \"t2\"]}"
#define TEACHERS(list) "\"teachers\": [" list "],"

/* ---------------------------------------------------------------- inputs */

/* (x - mean) / std, elementwise on a contiguous f64 tensor (a new one). */
static kd_tensor *normalized(kd_tensor *x, double mean, double std)
{
    kd_tensor *y = kd_tensor_empty_like(x);
    const double *a = kd_tensor_data(x);
    double *b = y ? kd_tensor_data(y) : NULL;
    for (int64_t i = 0; b && i < kd_tensor_numel(x); i++)
        b[i] = (a[i] - mean) / std;
    return y;
}

/* Runs model teacher t on the student's batch as the runner does. */
static kd_status run_teacher(kd_teacher_run *t, kd_tensor *batch)
{
    kd_model_run *m = t->model;
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args a = {sizeof a, kd_teacher_input(t, batch), false, kd_rng_make(0, 0, 0),
                         m->want, m->out};
    return a.input ? m->vt->forward(m->self, &a) : kd_last_status();
}

static void test_inputs(void)
{
    write_job("inputs", "float64", TEACHERS(T1 ", " T2 ", " ENS),
              "{\"name\": \"kd\", \"teacher\": \"ens\"}", 1, 0);
    char path[256];
    snprintf(path, sizeof path, "%s/inputs.json", dir);
    kd_job *job = NULL;
    kd_session *s = NULL;
    kd_status st = kd_job_load(path, 0, NULL, &job);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TRAIN, &s);
    if (!kt_check(st == KD_OK && s->n_teachers == 3, "inputs: a job with t1, t2 and ens opens",
                  "%s", kd_last_error())) {
        kd_session_close(s);
        kd_job_free(job);
        return;
    }
    bool saved = kd_set_grad_enabled(false);
    kd_scope_begin();
    kd_rng rng = kd_rng_make(11, 0, 0);
    int64_t shape[4] = {3, 1, 8, 8};
    kd_tensor *x01 = kt_uniform(KD_F64, 4, shape, &rng, 0.0, 1.0); /* images in [0, 1] */
    kd_tensor *batch = normalized(x01, 0.4, 0.25);                 /* the student's */
    kd_tensor *in1 = kd_teacher_input(&s->teachers[0], batch);
    kd_tensor *in2 = kd_teacher_input(&s->teachers[1], batch);
    kd_tensor *want2 = normalized(kd_interpolate(x01, 12, 12, KD_INTERP_BILINEAR, false), 0.5,
                                  0.5);
    kt_check(in1 == batch, "inputs: a teacher with the pipeline's size and normalisation "
             "reads the student's batch itself", "a copy was made");
    /* in2 is the student's batch resized, then scaled and shifted, where
     * want2 resizes the image and normalises it: values of size ~2 after a
     * few roundings each, so differences stay within ~1e-15 */
    bool shaped = in2 && want2 && in2->ndim == 4 && in2->shape[2] == 12 && in2->shape[3] == 12;
    double d2 = shaped ? kt_max_abs_diff(in2, want2) : INFINITY;
    kt_check(d2 < 1e-13, "inputs: t2 (12x12, mean 0.5, std 0.5) reads the normalised "
             "bilinear resize of the images",
             "%s, max |difference| %.3g", shaped ? "12x12" : "wrong shape", d2);

    st = run_teacher(&s->teachers[0], batch);
    if (st == KD_OK)
        st = run_teacher(&s->teachers[1], batch);
    if (st == KD_OK)
        st = kd_teachers_ensemble(s);
    bool ok = st == KD_OK && s->teachers[2].logits;
    double worst = ok ? 0 : INFINITY;
    if (ok) {
        const kd_model_run *m1 = s->teachers[0].model, *m2 = s->teachers[1].model;
        kd_tensor *a = m1->out[m1->logits], *b = m2->out[m2->logits], *e = s->teachers[2].logits;
        ok = kd_tensor_numel(e) == 12 && kt_max_abs_diff(a, b) > 1e-6; /* they differ */
        for (int64_t i = 0; ok && i < kd_tensor_numel(e); i++) {
            double want = (kd_tensor_get(a, i) + kd_tensor_get(b, i)) / 2;
            worst = fmax(worst, fabs(kd_tensor_get(e, i) - want));
        }
    }
    /* one sum and one halving, exactly as here: equal to the last bit */
    kt_check(ok && worst == 0, "inputs: ensemble logits are the mean of t1's and t2's",
             "%s, max |difference| %.3g", st == KD_OK ? "" : kd_last_error(), worst);
    kd_scope_end();
    kd_set_grad_enabled(saved);
    kd_session_close(s);
    kd_job_free(job);
}

/* ---------------------------------------------------------------- routing */

/* The "loss" of OUTPUT/metrics.jsonl's train lines (the first max); how
 * many there are. */
static int read_losses(const char *output, double *loss, int max)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, output);
    size_t len = 0;
    unsigned char *text = kt_read_file(path, &len);
    int n = 0;
    for (size_t at = 0; text && at < len;) {
        const unsigned char *end = memchr(text + at, '\n', len - at);
        size_t line = end ? (size_t)(end - text) - at : len - at;
        json_t *j = json_loadb((const char *)text + at, line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && !strcmp(type, "train") && n < max)
            loss[n] = json_number_value(json_object_get(j, "loss"));
        n += type && !strcmp(type, "train");
        json_decref(j);
        at += line + 1;
    }
    free(text);
    return n;
}

/* Runs job NAME (teachers, losses; two epochs of 4 steps) and reads its
 * losses; false with a failed check when it does not run. */
static bool run_steps(const char *name, const char *teachers, const char *losses,
                      double *loss)
{
    write_job(name, "float64", teachers, losses, 2, 0);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run %s.json", name);
    int n = rc == 0 ? read_losses(name, loss, 8) : 0;
    bool ok = kt_check(n == 8, name, "exit %d, %d steps logged: %s", rc, n, out);
    free(out);
    return ok;
}

/* The same float64 arithmetic in the same order, so equal to the bit on
 * one machine; 1e-9 relative (test_recipe_steps' bound for float64
 * trajectories against PyTorch's other kernels) leaves room for a BLAS
 * that rounds by alignment, while reading the wrong teacher moves the loss
 * by 1e-3 or more. */
static bool same_steps(const double *a, const double *b)
{
    for (int i = 0; i < 8; i++)
        if (!(fabs(a[i] - b[i]) <= 1e-9 * fabs(b[i])))
            return false;
    return true;
}

#define KD_LOSS(teacher) \
    "{\"name\": \"ce\", \"weight\": 0.5}, {\"name\": \"kd\", \"temperature\": 2" teacher "}"

static void test_routing(void)
{
    double one[8], t2[8], t1[8], ens[8], only_t1[8];
    bool ran = run_steps("one_t2", "\"teacher\": {" T_MODEL ", " T2_INPUT "},", KD_LOSS(""), one);
    ran = run_steps("route_t2", TEACHERS(T1 ", " T2), KD_LOSS(", \"teacher\": \"t2\""), t2) &&
          ran;
    ran = run_steps("route_t1", TEACHERS(T1 ", " T2), KD_LOSS(", \"teacher\": \"t1\""), t1) &&
          ran;
    ran = run_steps("only_t1", "\"teacher\": {" T_MODEL "},", KD_LOSS(""), only_t1) && ran;
    ran = run_steps("ens_copy", TEACHERS(T1 ", " T1B ", {\"name\": \"e\", \"ensemble\": "
                                         "[\"t1\", \"t1b\"]}"),
                    KD_LOSS(", \"teacher\": \"e\""), ens) && ran;
    if (!ran)
        return;
    kt_check(same_steps(t2, one), "routing: kd on t2 of two teachers takes the steps of a job "
             "with t2 alone (8 losses)", "step 1 %.17g vs %.17g, step 8 %.17g vs "
             "%.17g", t2[0], one[0], t2[7], one[7]);
    kt_check(same_steps(t1, only_t1), "routing: kd on t1 takes the steps of a job with t1 alone",
             "step 1 %.17g vs %.17g", t1[0], only_t1[0]);
    kt_check(fabs(t1[0] - t2[0]) > 1e-6, "routing: t1 and t2 give different kd losses",
             "step 1: %.17g and %.17g", t1[0], t2[0]);
    kt_check(same_steps(ens, only_t1), "routing: kd on an ensemble of t1 and its copy takes t1's "
             "steps (the mean of equal logits is them)", "step 1 %.17g vs %.17g", ens[0],
             only_t1[0]);
}

/* ---------------------------------------------------------------- resume */

/* Whether two safetensors files hold the same tensors, byte for byte, and
 * every name starts with one of the training state's groups (no teacher). */
static bool same_state(const char *a_path, const char *b_path, char *why, size_t size)
{
    static const char *const groups[] = {"student.", "optim.", "loss."};
    kd_safetensors *a = NULL, *b = NULL;
    bool same = kd_safetensors_open(a_path, &a) == KD_OK &&
                kd_safetensors_open(b_path, &b) == KD_OK;
    if (!same)
        snprintf(why, size, "%s", kd_last_error());
    same = same && kd_safetensors_count(a) == kd_safetensors_count(b);
    for (int i = 0; same && i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        const kd_safetensors_entry *eb = kd_safetensors_find(b, ea->name);
        bool grouped = false;
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            grouped = grouped || !strncmp(ea->name, groups[g], strlen(groups[g]));
        same = grouped && eb && ea->nbytes == eb->nbytes && !memcmp(ea->data, eb->data, ea->nbytes);
        if (!same)
            snprintf(why, size, "tensor %s %s", ea->name, grouped ? "differs" : "is no state");
    }
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return same;
}

/* Teachers are frozen and not in checkpoints: a run with three teachers
 * resumed from its epoch-1 checkpoint ends where it ended uninterrupted. */
static void test_resume(void)
{
    write_job("resume", "float64", TEACHERS(T1 ", " T2 ", " ENS),
              KD_LOSS(", \"teacher\": \"ens\"") ", {\"name\": \"rkd\", \"teacher\": \"t2\", "
              "\"student_tap\": \"pre_logits\", \"teacher_tap\": \"pre_logits\"}", 2, 0);
    char *out = NULL, last[256], ref[256], why[512] = "not run";
    snprintf(last, sizeof last, "%s/resume/checkpoints/step-000000008.safetensors", dir);
    snprintf(ref, sizeof ref, "%s/resume-end.safetensors", dir);
    int rc = kt_kdengine(dir, &out, "run resume.json --set checkpoint.keep=2");
    free(out);
    int rc2 = rc == 0 && rename(last, ref) == 0
                  ? kt_kdengine(dir, &out, "run resume.json --set checkpoint.keep=2 --resume")
                  : -1;
    bool resumed = rc2 == 0 && has(out, "resuming from");
    if (rc2 != -1)
        free(out);
    kt_check(resumed && same_state(last, ref, why, sizeof why),
             "resume: a run with three teachers resumes bit for bit (no teacher in checkpoints)",
             "exit %d, %d: %s", rc, rc2, why);
}

/* ---------------------------------------------------------------- eval --teacher */

/* `kdengine eval NAME.json --teacher --json EXTRA`'s cross-entropy; NAN
 * with a failed check when it does not run. */
static double eval_teacher_loss(const char *name, const char *extra)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "eval %s.json --teacher --json %s", name, extra);
    const char *line = out ? strstr(out, "{\"model\": \"teacher\"") : NULL;
    json_t *j = line ? json_loadb(line, strcspn(line, "\n"), 0, NULL) : NULL;
    double loss = json_is_number(json_object_get(j, "loss"))
                      ? json_number_value(json_object_get(j, "loss"))
                      : NAN;
    kt_check(rc == 0 && !isnan(loss), name, "eval --teacher exit %d: %s", rc, out);
    json_decref(j);
    free(out);
    return loss;
}

/* eval --teacher renormalises data.val's images for a teacher with its own
 * normalize: the same as a pipeline that normalises for it. The pipeline
 * computes in float32 (inputs rounded to ~6e-8 relative), the host in
 * float64, so the losses agree to far better than 1e-4; an input left as
 * the pipeline made it moves the loss by more than 1e-2. */
static void test_eval_teacher(void)
{
    write_job("eval_own", "float64", "\"teacher\": {" T_MODEL ", \"normalize\": "
              "{\"mean\": [0.5], \"std\": [0.5]}},", KD_LOSS(""), 1, 1);
    write_job("eval_plain", "float64", "\"teacher\": {" T_MODEL "},", KD_LOSS(""), 1, 1);
    double own = eval_teacher_loss("eval_own", "");
    double pipeline = eval_teacher_loss("eval_plain", "--set data.val.transforms[0].mean=[0.5] "
                                        "--set data.val.transforms[0].std=[0.5]");
    double plain = eval_teacher_loss("eval_plain", "");
    kt_check(fabs(own - pipeline) < 1e-4 && fabs(own - plain) > 1e-2,
             "eval --teacher: a teacher's normalize applies to data.val",
             "own %.6f, pipeline-normalised %.6f, unrenormalised %.6f", own, pipeline, plain);
}

/* ---------------------------------------------------------------- plan, errors */

static void test_plan(void)
{
    write_job("plan", "float64", TEACHERS(T1 ", " T2 ", " ENS),
              KD_LOSS(", \"teacher\": \"ens\"") ", {\"name\": \"rkd\", \"teacher\": \"t2\", "
              "\"student_tap\": \"pre_logits\", \"teacher_tap\": \"pre_logits\"}", 1, 1);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "plan plan.json");
    kt_check(rc == 0 && has(out, "teacher 't1': resnet8 (teacher/best.safetensors)") &&
             has(out, "teacher 't2': resnet8") && has(out, "1x12x12 input") &&
             has(out, "1x8x8 input") &&
             has(out, "input: the student's 8x8 batch, resized (bilinear), "
                      "renormalised") &&
             has(out, "teacher 'ens': ensemble, the mean of the logits of 't1', 't2'") &&
             has(out, "reads ens.logits [16, 4]") && has(out, "reads t2.pre_logits [16, 64]"),
             "plan: every teacher (model, input, MACs, taps) and each loss's teacher",
             "exit %d: %s", rc, out);
    free(out);
    rc = kt_kdengine(dir, &out, "validate plan.json");
    kt_check(rc == 0 && has(out, "ok (t1 resnet8, t2 resnet8, ens -> resnet8, 3 losses"),
             "validate: names every teacher", "exit %d: %s", rc, out);
    free(out);
}

/* A job with `teachers` and `losses` as bad.json; `command` (kdengine's
 * arguments) must fail saying `want`. */
typedef struct error_row {
    const char *name, *teachers, *losses, *command, *want;
} error_row;

static const error_row error_rows[] = {
    {"errors: a loss naming an unknown teacher", TEACHERS(T1 ", " T2),
     KD_LOSS(", \"teacher\": \"t9\""), "validate bad.json",
     "losses[1].teacher: no teacher named 't9' (the job's teachers: t1, t2)"},
    {"errors: a loss reading one of several teachers must name it", TEACHERS(T1 ", " T2),
     KD_LOSS(""), "validate bad.json",
     "losses[1]: loss 'kd' reads a teacher and the job has 2: name one with \"teacher\""},
    {"errors: \"teacher\" and \"teachers\" together",
     "\"teacher\": {" T_MODEL "}, " TEACHERS(T2), KD_LOSS(""), "validate bad.json",
     "teachers: the job has \"teacher\" too"},
    {"errors: two teachers of one name", TEACHERS(T1 ", " T1), KD_LOSS(", \"teacher\": \"t1\""),
     "validate bad.json", "teachers[1].name: 't1' is teachers[0]'s name too"},
    {"errors: a teacher without a name", TEACHERS(T1 ", {" T_MODEL "}"),
     KD_LOSS(", \"teacher\": \"t1\""), "validate bad.json", "teachers[1].name: missing"},
    {"errors: an ensemble of an unknown teacher",
     TEACHERS(T1 ", {\"name\": \"e\", \"ensemble\": [\"t1\", \"t3\"]}"),
     KD_LOSS(", \"teacher\": \"e\""), "validate bad.json",
     "teachers[1].ensemble[1]: no teacher named 't3'"},
    {"errors: an ensemble of one teacher",
     TEACHERS(T1 ", {\"name\": \"e\", \"ensemble\": [\"t1\"]}"),
     KD_LOSS(", \"teacher\": \"e\""), "validate bad.json",
     "teachers[1].ensemble: expected the names of 2"},
    {"errors: an ensemble has logits only", TEACHERS(T1 ", " T2 ", " ENS),
     "{\"name\": \"rkd\", \"teacher\": \"ens\", \"student_tap\": \"pre_logits\", "
     "\"teacher_tap\": \"pre_logits\"}", "validate bad.json",
     "losses[0]: reads the teacher's tap 'pre_logits', but teacher 'ens' is an ensemble"},
    {"errors: a loss that reads no teacher names one", TEACHERS(T1),
     "{\"name\": \"ce\", \"teacher\": \"t1\"}", "validate bad.json",
     "losses[0].teacher: loss 'ce' reads no teacher"},
    {"errors: a teacher's normalize has one value per channel",
     TEACHERS("{\"name\": \"t1\", " T_MODEL ", \"normalize\": {\"mean\": [0.5, 0.5, 0.5], "
              "\"std\": [0.5, 0.5, 0.5]}}"),
     KD_LOSS(""), "validate bad.json",
     "teachers[0].normalize: 3 values per list, but data.train's images have 1 channel"},
    {"errors: a bad input_size",
     TEACHERS("{\"name\": \"t1\", " T_MODEL ", \"input_size\": [0, 8]}"), KD_LOSS(""),
     "validate bad.json", "teachers[0].input_size: expected a size"},
    {"errors: label runs one teacher", TEACHERS(T1 ", " T2), KD_LOSS(", \"teacher\": \"t1\""),
     "label bad.json --epochs 1 --out store",
     "teachers: label takes one teacher, and the job has 2 (t1, t2)"},
    {"errors: eval --teacher runs one teacher", TEACHERS(T1 ", " T2),
     KD_LOSS(", \"teacher\": \"t1\""), "eval bad.json --teacher",
     "teachers: eval --teacher takes one teacher, and the job has 2 (t1, t2)"},
    {"errors: forward --teacher runs one teacher", TEACHERS(T1 ", " T2),
     KD_LOSS(", \"teacher\": \"t1\""),
     "forward bad.json --teacher --input x.safetensors --taps logits --out y.safetensors",
     "teachers: forward --teacher takes one teacher, and the job has 2 (t1, t2)"},
};

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof error_rows / sizeof error_rows[0]; i++) {
        const error_row *e = &error_rows[i];
        write_job("bad", "float64", e->teachers, e->losses, 1, 1);
        char *out = NULL;
        int rc = kt_kdengine(dir, &out, "%s", e->command);
        kt_check(rc != 0 && has(out, e->want), e->name, "exit %d, want \"%s\": %s", rc, e->want,
                 out);
        free(out);
    }
}

/* An FKD label store comes from one teacher: its fingerprint refuses a job
 * with several rather than compare the store with one of them. */
static void test_fkd_refuses(void)
{
    write_job("labelled", "float64", "\"teacher\": {" T_MODEL "},", KD_LOSS(""), 1, 1);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "label labelled.json --epochs 1 --out store1");
    free(out);
    write_job("bad", "float64", TEACHERS(T1 ", " T2),
              "{\"name\": \"fkd\", \"labels\": \"store1\"}, "
              "{\"name\": \"kd\", \"teacher\": \"t2\"}", 1, 1);
    int rc2 = rc == 0 ? kt_kdengine(dir, &out, "validate bad.json") : -1;
    const char *want = "teachers: an FKD label store takes one teacher, and the job has 2";
    kt_check(rc == 0 && rc2 != 0 && has(out, want), "errors: an FKD store's fingerprint refuses "
             "several teachers", "label exit %d, validate exit %d: %s", rc, rc2, out);
    if (rc2 != -1)
        free(out);
}

/* ---------------------------------------------------------------- the example */

static void test_example(void)
{
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_fail("example: two-teachers.json", "%s is missing: scripts/setup installs "
                "dataset-fashion-mnist", FMNIST);
        return;
    }
    char src[512], cmd[4096];
    kt_source_path("", src, sizeof src);
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine run examples/fashion-mnist/two-teachers.json "
             "--set data.train.subset=48 --set data.train.batch_size=16 --set data.train.workers=0 "
             "--set schedule.epochs=1 --set eval.every_epochs=0 --set log.every_steps=1 "
             "--set output='\"%s/example\"' --set plugin_dirs='[\"%s\"]' 2>&1", src, KD_BUILDDIR,
             dir, kt_plugin_dir());
    char *out = NULL;
    int rc = kt_run_command(cmd, &out);
    double loss[8];
    int n = rc == 0 ? read_losses("example", loss, 8) : 0;
    bool finite = n == 3;
    for (int i = 0; i < n; i++)
        finite = finite && isfinite(loss[i]);
    kt_check(rc == 0 && finite && has(out, "resnet20 and 2 more teach resnet8"),
             "example: two-teachers.json runs 3 steps with finite losses", "exit %d, %d steps: %s",
             rc, n, out);
    free(out);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kdteachers.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    kd_set_num_threads(1);
    if (chdir(dir) != 0) { /* job files name the teacher's weights relative to it */
        kt_fail("setup", "cannot enter %s", dir);
        return kt_finish();
    }
    char *out = NULL;
    bool ok = kt_write_quadrants(dir, "train", 64, 1) && kt_write_quadrants(dir, "val", 32, 2);
    if (ok) {
        /* a teacher that learnt something, so teachers' logits differ */
        write_job("teacher", "float32", "", "{\"name\": \"ce\"}", 2, 1);
        int rc = kt_kdengine(dir, &out, "run teacher.json");
        ok = kt_check(rc == 0, "setup: a resnet8 teacher trains", "exit %d: %s", rc, out);
        free(out);
    }
    if (ok) {
        test_inputs();
        test_routing();
        test_resume();
        test_eval_teacher();
        test_plan();
        test_errors();
        test_fkd_refuses();
    }
    test_example();
    kt_remove_tree(dir);
    return kt_finish();
}
