/* The training loop, evaluation and export. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../loader.h"
#include <kdengine/kdengine.h>

#include "checkpoint.h"
#include "dirs.h"
#include "dist.h"
#include "ema.h"
#include "grad_clip.h"
#include "runner.h"
#include "run_record.h"
#include "session.h"
#include "streams.h"
#include "teachers.h"
#include "threads.h"

static volatile sig_atomic_t stop_requested;

/* Per-rank random streams: rank 0's are a single process's, rank r's
 * differ by r in the stream word's top bits, so a run is reproducible for
 * a given world size. */
static uint64_t rank_stream(uint64_t stream)
{
    return stream | (uint64_t)kd_dist().rank << 48;
}

void kd_run_request_stop(void) { stop_requested = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kd_status open_loader(const kd_data_run *d, uint64_t seed, kd_loader **out)
{
    kd_loader_config c = {
        .dataset = d->vt,
        .dataset_self = d->self,
        .label = d->spec->path,
        .n_transforms = d->spec->n_transforms,
        .transforms = d->tvt,
        .transform_selves = d->tself,
        .batch_size = d->spec->batch_size,
        .shuffle = d->spec->shuffle,
        .drop_last = d->spec->drop_last,
        .subset = d->spec->subset,
        .workers = kd_threads_workers(d->spec),
        .prefetch = d->spec->prefetch,
        .seed = seed,
        .shard = kd_dist().rank,
        .shards = kd_dist().world,
    };
    return kd_loader_new(&c, out);
}

/* ---------------------------------------------------------------- evaluation */

/* Batches leave the loader in float32; a float64 job computes on a copy. */
static kd_tensor *in_model_dtype(kd_tensor *images, kd_dtype dtype)
{
    return images->dtype == dtype ? images : kd_cast(images, dtype);
}

/* Counts, for each row, the classes scored above the label's; logits are
 * contiguous float64 (exact for float32 ones). */
static void score_batch(const kd_tensor *logits, const kd_tensor *labels, int64_t *top1,
                        int64_t *top5)
{
    int64_t n = logits->shape[0], c = logits->shape[1];
    const double *z = kd_tensor_data(logits);
    const int64_t *y = kd_tensor_data(labels);
    for (int64_t i = 0; i < n; i++) {
        double mine = z[i * c + y[i]];
        int64_t above = 0;
        for (int64_t k = 0; k < c; k++)
            above += z[i * c + k] > mine;
        *top1 += above == 0;
        *top5 += above < 5;
    }
}

/* Each rank scored its shard of the evaluation set: the sums over every
 * rank, so all of them report the same top-1 (exact: counts are integers
 * well inside a double's). */
static kd_status reduce_eval_counts(int64_t *top1, int64_t *top5, double *loss_sum,
                                    int64_t *samples)
{
    if (kd_dist().world == 1)
        return KD_OK;
    double v[4] = {(double)*top1, (double)*top5, *loss_sum, (double)*samples};
    kd_status st = kd_dist_all_reduce_f64(v, 4, KD_DIST_SUM);
    if (st != KD_OK)
        return kd_error_wrap(st, "evaluation");
    *top1 = (int64_t)v[0];
    *top5 = (int64_t)v[1];
    *loss_sum = v[2];
    *samples = (int64_t)v[3];
    return KD_OK;
}

/* `teacher`: the teacher run whose input the batches become (eval
 * --teacher), or NULL. */
static kd_status evaluate_model(kd_model_run *m, const kd_teacher_run *teacher,
                                kd_loader *loader, kd_eval_result *r)
{
    memset(r, 0, sizeof *r);
    kd_status st = kd_loader_start(loader, 0, 0);
    int64_t top1 = 0, top5 = 0;
    double loss_sum = 0;
    bool saved = kd_set_grad_enabled(false);
    bool *want = calloc((size_t)m->n_taps, sizeof *want);
    if (!want)
        st = kd_error(KD_ERR_NOMEM, "evaluation: out of memory");
    else
        want[m->logits] = true;
    while (st == KD_OK) {
        kd_batch b;
        bool done;
        st = kd_loader_next(loader, &b, &done);
        if (st != KD_OK || done)
            break;
        kd_scope_begin();
        memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
        kd_tensor *images = in_model_dtype(b.images, m->dtype);
        kd_forward_args args = {sizeof args, teacher && images ? kd_teacher_input(teacher, images)
                                                               : images,
                                false, kd_rng_make(0, 0, 0), want, m->out};
        st = args.input ? m->vt->forward(m->self, &args)
                        : kd_error_wrap(kd_last_status(), "evaluation input");
        kd_tensor *logits = m->out[m->logits];
        kd_tensor *ce = st == KD_OK ? kd_cross_entropy(logits, b.labels, 0.0) : NULL;
        kd_tensor *scores = ce ? kd_contiguous(kd_cast(logits, KD_F64)) : NULL;
        if (st == KD_OK && !scores)
            st = kd_error_wrap(kd_last_status(), "evaluation");
        if (st == KD_OK) {
            score_batch(scores, b.labels, &top1, &top5);
            loss_sum += kd_tensor_get(ce, 0) * (double)b.labels->shape[0];
            r->samples += b.labels->shape[0];
        }
        kd_scope_end();
    }
    free(want);
    kd_set_grad_enabled(saved);
    if (st == KD_OK)
        st = reduce_eval_counts(&top1, &top5, &loss_sum, &r->samples);
    if (st == KD_OK && r->samples) {
        r->top1 = 100.0 * (double)top1 / (double)r->samples;
        r->top5 = 100.0 * (double)top5 / (double)r->samples;
        r->loss = loss_sum / (double)r->samples;
    }
    return st;
}

kd_status kd_evaluate(const kd_job *job, bool teacher, const char *weights, kd_eval_result *out)
{
    kd_session *s;
    kd_status st = kd_threads_apply(job, NULL);
    if (st == KD_OK)
        st = kd_session_open(job, teacher ? KD_SESSION_TEACHER : KD_SESSION_STUDENT, &s);
    if (st != KD_OK)
        return st;
    if (weights)
        st = kd_weights_load(weights, teacher ? "teacher" : "student", s->student.n_tensors,
                             s->student.tensors, s->student.vt->filter_weight, s->student.self);
    kd_loader *loader = NULL;
    if (st == KD_OK)
        st = open_loader(&s->val, job->seed, &loader);
    if (st == KD_OK)
        st = evaluate_model(&s->student, teacher ? &s->teachers[0] : NULL, loader, out);
    kd_loader_free(loader);
    kd_session_close(s);
    return st;
}

kd_status kd_export(const kd_job *job, const char *weights, bool ema, const char *out_path)
{
    if (ema && !weights)
        return kd_error(KD_ERR_INVALID, "export --ema: needs --weights, a checkpoint of a run "
                        "with \"ema\"");
    kd_session *s;
    kd_status st = kd_session_open(job, KD_SESSION_WEIGHTS, &s);
    if (st != KD_OK)
        return st;
    if (weights)
        st = kd_weights_load_group(weights, ema ? "ema." : "student.", ema ? "ema" : "student",
                                   s->student.n_tensors, s->student.tensors,
                                   s->student.vt->filter_weight, s->student.self);
    /* the class names travel from the run's checkpoint to the export */
    char *classes = NULL;
    if (st == KD_OK && weights)
        st = kd_checkpoint_classes(weights, &classes);
    if (st == KD_OK) {
        kd_tensor_group g = {"", s->student.n_tensors, s->student.tensors};
        st = kd_checkpoint_save(out_path, 1, &g, NULL, classes);
    }
    free(classes);
    kd_session_close(s);
    return st;
}

/* ---------------------------------------------------------------- run state */

/* Where the run stands. `batch` counts the epoch's (micro-)batches and
 * `step` the run's optimizer steps; with accumulation a step takes
 * `accumulate_steps` batches, and `micro` (the run's batches, which key
 * the per-batch random streams) and `cycle` (batches summed into the
 * gradients since the last step) say where inside a cycle the run is. */
typedef struct run_state {
    int64_t epoch, batch, step; /* where the next batch starts */
    int64_t micro, cycle;
    double cycle_loss; /* the cycle's batch losses, summed */
    double best_top1;
    int64_t best_epoch;
    double elapsed_s; /* training time before this process */
    double loss_sum;  /* over the current epoch so far */
    int64_t loss_count;
} run_state;

static char *state_json(const run_state *r)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:f, s:I, s:f, s:f, s:I, s:I, s:I, s:f}", "epoch",
                          (json_int_t)r->epoch, "batch", (json_int_t)r->batch, "step",
                          (json_int_t)r->step, "best_top1", r->best_top1, "best_epoch",
                          (json_int_t)r->best_epoch, "elapsed_s", r->elapsed_s, "loss_sum",
                          r->loss_sum, "loss_count", (json_int_t)r->loss_count, "micro",
                          (json_int_t)r->micro, "cycle", (json_int_t)r->cycle, "cycle_loss",
                          r->cycle_loss);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static kd_status parse_state(const char *path, const char *text, run_state *r)
{
    json_error_t jerr;
    json_t *o = text ? json_loads(text, 0, &jerr) : NULL;
    json_int_t epoch, batch, step, best_epoch, loss_count, micro = -1, cycle = 0;
    double best, elapsed, loss_sum, cycle_loss = 0;
    /* micro, cycle and cycle_loss came with accumulation: a checkpoint
     * from before it was taken between steps, one batch each. */
    int bad = !o || json_unpack(o, "{s:I, s:I, s:I, s:F, s:I, s:F, s:F, s:I, s?I, s?I, s?F}",
                                "epoch", &epoch, "batch", &batch, "step", &step, "best_top1",
                                &best, "best_epoch", &best_epoch, "elapsed_s", &elapsed,
                                "loss_sum", &loss_sum, "loss_count", &loss_count, "micro",
                                &micro, "cycle", &cycle, "cycle_loss", &cycle_loss);
    json_decref(o);
    if (bad)
        return kd_error(KD_ERR_FORMAT, "%s: no readable kdengine state (not a checkpoint of a "
                        "run?)", path);
    *r = (run_state){epoch, batch, step, micro < 0 ? step : micro, cycle, cycle_loss, best,
                     best_epoch, elapsed, loss_sum, loss_count};
    return KD_OK;
}

typedef struct run {
    const kd_job *job;
    kd_eval_result last_eval; /* samples 0 until an evaluation ran */
    kd_eval_result last_ema;  /* the EMA's, with the job's "ema" */
    kd_session *s;
    kd_loader *train, *val;
    run_state st;
    char ckpt_dir[4096];
    FILE *metrics;
    bool tty;
    int64_t batches_per_epoch, steps_per_epoch;
    int64_t stop_at_batch; /* kd_run_options.stop_at_batch */
    double grad_norm;      /* of the last step, when the job clips */
    char *classes;                     /* JSON array of class names, or NULL */
    int64_t train_skipped, val_skipped; /* the datasets' skipped() so far */
    bool stop_agreed; /* data parallel: some rank asked to stop */
} run;

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Checkpoint files of the run, oldest first (names sort by step). */
static int list_checkpoints(const char *dir, char ***out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0, cap = 0;
    char **names = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "step-", 5) != 0 || len < 17 ||
            strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, (size_t)cap * sizeof *names);
            if (!grown)
                break;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, compare_names);
    *out = names;
    return n;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* A checkpoint taken inside an accumulation cycle also holds the
 * gradients summed so far, as "grad.<parameter>" (parameters without one
 * have none), so a resume continues the cycle exactly: the batches already
 * summed changed the model's buffers (BN statistics), so replaying them
 * could not. */
static kd_status save_checkpoint(run *r, const char *path)
{
    kd_tensor_group *groups, *all = NULL;
    kd_named_tensor *grads = NULL;
    int n;
    kd_status st = kd_session_groups(r->s, &groups, &n);
    if (st == KD_OK && r->st.cycle > 0) {
        const kd_session *s = r->s;
        all = malloc(((size_t)n + 1) * sizeof *all);
        grads = malloc(((size_t)s->n_params + 1) * sizeof *grads);
        int k = 0;
        for (int i = 0; grads && i < s->n_params; i++)
            if (s->params[i].tensor->grad)
                grads[k++] = (kd_named_tensor){s->params[i].name, s->params[i].tensor->grad,
                                               KD_TENSOR_BUFFER};
        if (all && grads) {
            memcpy(all, groups, (size_t)n * sizeof *all);
            all[n++] = (kd_tensor_group){"grad.", k, grads};
            free(groups);
            groups = all;
            all = NULL;
        } else {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    char *state = st == KD_OK ? state_json(&r->st) : NULL;
    if (st == KD_OK)
        st = state ? kd_checkpoint_save(path, n, groups, state, r->classes)
                   : kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    free(state);
    free(groups);
    free(all);
    free(grads);
    return st;
}

/* The gradients a checkpoint taken inside a cycle holds: every
 * "grad.<name>" must be a parameter's, with its shape. */
static kd_status load_gradients(const run *r, const char *path)
{
    kd_safetensors *f = NULL;
    kd_status st = kd_safetensors_open(path, &f);
    int expected = 0, found = 0;
    for (int i = 0; st == KD_OK && i < kd_safetensors_count(f); i++)
        expected += strncmp(kd_safetensors_at(f, i)->name, "grad.", 5) == 0;
    for (int i = 0; st == KD_OK && i < r->s->n_params; i++) {
        kd_tensor *p = r->s->params[i].tensor;
        char name[1024];
        snprintf(name, sizeof name, "grad.%s", r->s->params[i].name);
        kd_tensor_zero_grad(p);
        if (!kd_safetensors_find(f, name))
            continue;
        kd_tensor *g = kd_tensor_keep(kd_safetensors_load(f, name, p->dtype));
        if (!g || !kd_tensor_same_shape(g, p)) {
            kd_tensor_free(g);
            st = kd_error(g ? KD_ERR_FORMAT : kd_last_status(), "%s: %s does not match the "
                          "parameter's shape", path, name);
            break;
        }
        p->grad = g;
        found++;
    }
    if (st == KD_OK && found != expected)
        st = kd_error(KD_ERR_FORMAT, "%s: %d gradients name no parameter of this job", path,
                      expected - found);
    kd_safetensors_close(f);
    return st;
}

/* Writes step-N.safetensors and drops the oldest beyond `keep`. */
static kd_status checkpoint_step(run *r, char *written, size_t size)
{
    snprintf(written, size, "%s/step-%09lld.safetensors", r->ckpt_dir, (long long)r->st.step);
    if (kd_dist().rank != 0)
        return KD_OK; /* rank 0 writes for every rank */
    kd_status st = save_checkpoint(r, written);
    if (st != KD_OK)
        return st;
    char **names;
    int n = list_checkpoints(r->ckpt_dir, &names);
    for (int i = 0; i < n - (int)r->job->checkpoint_keep; i++) {
        char old[4200];
        snprintf(old, sizeof old, "%s/%s", r->ckpt_dir, names[i]);
        if (unlink(old) != 0)
            fprintf(stderr, "warning: cannot remove old checkpoint %s: %s\n", old,
                    strerror(errno));
    }
    free_names(names, n);
    return KD_OK;
}

/* Keeps the metrics lines of steps up to `step` (the checkpoint being
 * resumed): lines a killed run wrote after it would be written again. */
static kd_status trim_metrics(const char *path, int64_t step)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return KD_OK;
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        return kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        if (s && json_integer_value(s) <= step)
            fputs(line, o);
        json_decref(j);
    }
    fclose(f);
    if (fclose(o) != 0 || rename(tmp, path) != 0)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    return KD_OK;
}

static void write_metrics(run *r, json_t *line)
{
    if (r->metrics && line) {
        json_dumpf(line, r->metrics, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', r->metrics);
        fflush(r->metrics);
    }
    json_decref(line);
}

static void format_eta(double s, char *buf, size_t size)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, size, "?");
    else if (s >= 3600)
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* ---------------------------------------------------------------- one step */

/* What one step's losses left in its scope: read on the steps that log or
 * draw progress (a read waits for the device), and to name a loss that
 * went non-finite. */
typedef struct step_losses {
    double total;            /* read every step */
    kd_tensor **weighted;    /* [n_losses] weight * loss */
    kd_loss_result *results; /* [n_losses] */
    double *value;           /* [n_losses] weighted, as last read */
} step_losses;

static kd_status step_losses_init(step_losses *t, int n)
{
    t->weighted = calloc((size_t)n + 1, sizeof *t->weighted);
    t->results = calloc((size_t)n + 1, sizeof *t->results);
    t->value = calloc((size_t)n + 1, sizeof *t->value);
    if (!t->weighted || !t->results || !t->value)
        return kd_error(KD_ERR_NOMEM, "run: out of memory");
    return KD_OK;
}

static void step_losses_free(step_losses *t)
{
    free(t->weighted);
    free(t->results);
    free(t->value);
}

static void read_values(const kd_session *s, step_losses *t)
{
    for (int i = 0; i < s->n_losses; i++)
        t->value[i] = kd_tensor_get(t->weighted[i], 0);
}

static kd_status non_finite(const run *r, step_losses *t)
{
    read_values(r->s, t);
    for (int i = 0; i < r->s->n_losses; i++) {
        double v = t->value[i];
        const kd_loss_run *l = &r->s->losses[i];
        if (!isfinite(v))
            return kd_error(KD_ERR_INVALID, "step %lld (epoch %lld): %s (%s) is %s; stopping",
                            (long long)r->st.step, (long long)r->st.epoch + 1, l->spec->path,
                            l->spec->entry->name, isnan(v) ? "NaN" : "infinite");
    }
    return kd_error(KD_ERR_INVALID, "step %lld: the total loss is not finite; stopping",
                    (long long)r->st.step);
}

/* The job's batch transforms, in order: each replaces the images and sets
 * soft targets (scope-owned). They draw per batch of the views' epoch, so
 * an epoch that replays stored views (fkd) mixes them as it was labelled. */
static kd_status batch_transforms(run *r, kd_batch_args *ba)
{
    const kd_session *s = r->s;
    int64_t key = kd_session_view_batch(s, r->st.epoch, r->st.micro, r->batches_per_epoch);
    for (int i = 0; i < s->n_batch_transforms; i++) {
        ba->rng = kd_rng_make(r->job->seed, rank_stream(KD_STREAM_BATCH << 8 | (uint64_t)i),
                              (uint64_t)key);
        kd_status st = s->btvt[i]->apply(s->btself[i], ba);
        if (st != KD_OK)
            return kd_error_wrap(st, "data.train.batch_transforms[%d]", i);
        if (!ba->images || !ba->soft_targets)
            return kd_error(KD_ERR_FORMAT, "data.train.batch_transforms[%d] (%s) left no %s", i,
                            r->job->train.batch_transforms[i]->name,
                            ba->images ? "soft targets" : "images");
    }
    return KD_OK;
}

/* A teacher runs in a scope of its own under no-grad: only the taps the
 * losses read move out to the step's scope, the rest of its activations
 * (and its resized input) are freed before the next model starts. The
 * session's teacher (the first model teacher) draws from the teacher
 * stream as `label` does, teachers[index] after it from one of its own. */
static kd_status teacher_forward(run *r, int index, kd_tensor *images)
{
    const kd_teacher_run *t = &r->s->teachers[index];
    kd_model_run *m = t->model;
    uint64_t stream = m == &r->s->teacher ? KD_STREAM_TEACHER
                                          : KD_STREAM_TEACHER << 8 | (uint64_t)index;
    bool saved = kd_set_grad_enabled(false);
    kd_status st = kd_scope_begin();
    if (st != KD_OK) {
        kd_set_grad_enabled(saved);
        return st;
    }
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args ta = {sizeof ta, kd_teacher_input(t, images), t->spec->model.train_bn,
                          kd_rng_make(r->job->seed, rank_stream(stream), (uint64_t)r->st.micro),
                          m->want, m->out};
    st = ta.input ? m->vt->forward(m->self, &ta)
                  : kd_error_wrap(kd_last_status(), "%s: its input", t->spec->path);
    for (int i = 0; st == KD_OK && i < m->n_taps; i++) {
        if (!m->want[i])
            m->out[i] = NULL;
        else if (!m->out[i])
            st = kd_error(KD_ERR_FORMAT, "model '%s' did not fill tap '%s'",
                          m->spec->entry->name, m->taps[i].name);
        else
            st = kd_scope_promote(m->out[i]);
    }
    kd_scope_end();
    kd_set_grad_enabled(saved);
    if (st != KD_OK && r->s->n_teachers > 1)
        return kd_error_wrap(st, "%s (%s) forward", t->spec->path, t->spec->name);
    return st == KD_OK ? st : kd_error_wrap(st, "teacher forward");
}

/* Every model teacher, then the ensembles' means (no-grad). */
static kd_status teachers_forward(run *r, kd_tensor *images)
{
    kd_status st = KD_OK;
    for (int i = 0; st == KD_OK && i < r->s->n_teachers; i++)
        if (r->s->teachers[i].model)
            st = teacher_forward(r, i, images);
    bool saved = kd_set_grad_enabled(false);
    if (st == KD_OK)
        st = kd_teachers_ensemble(r->s);
    kd_set_grad_enabled(saved);
    return st;
}

/* Data parallel: this rank's loss is the mean over its n samples of a
 * global batch of N; times n * world / N, the ranks' mean gradient
 * (kd_dist_all_reduce_grads) is the global batch's, shards of unequal
 * size included. */
static double rank_share(const kd_batch *b)
{
    return (double)b->labels->shape[0] * (double)kd_dist().world / (double)b->global_size;
}

/* The forward and backward of one batch: its gradients are added to
 * those of the cycle's earlier batches (zeroed when a cycle starts), its
 * loss divided by the cycle's length `cycle`. */
static kd_status train_batch(run *r, const kd_batch *b, int64_t cycle, step_losses *t)
{
    kd_session *s = r->s;
    const kd_job *job = r->job;
    double epoch_pos = (double)r->st.epoch + (double)r->st.batch / (double)r->batches_per_epoch;
    kd_batch_args ba = {.size = sizeof ba, .images = b->images, .labels = b->labels,
                        .num_classes = s->num_classes};
    kd_status st = batch_transforms(r, &ba);
    if (st != KD_OK)
        return st;
    kd_tensor *images = in_model_dtype(ba.images, job->dtype);
    if (!images)
        return kd_error_wrap(kd_last_status(), "step input");

    if ((st = teachers_forward(r, images)) != KD_OK)
        return st;
    memset(s->student.out, 0, (size_t)s->student.n_taps * sizeof *s->student.out);
    kd_forward_args sa = {sizeof sa, images, true,
                          kd_rng_make(job->seed, rank_stream(KD_STREAM_STUDENT),
                                      (uint64_t)r->st.micro),
                          s->student.want, s->student.out};
    /* student.sync_bn: its batch norms' statistics over all ranks (the
     * nodes keep the reducer for the backward) */
    kd_batch_norm_sync was = kd_set_batch_norm_sync(
        job->student.sync_bn ? kd_dist_batch_norm_sync() : (kd_batch_norm_sync){NULL, NULL});
    st = s->student.vt->forward(s->student.self, &sa);
    kd_set_batch_norm_sync(was);
    if (st != KD_OK)
        return kd_error_wrap(st, "student forward");

    kd_tensor *total = NULL;
    for (int i = 0; i < s->n_losses; i++) {
        kd_loss_run *l = &s->losses[i];
        for (int k = 0; k < l->needs.n_student; k++)
            l->student_in[k] = s->student.out[l->student_taps[k]];
        for (int k = 0; k < l->needs.n_teacher; k++)
            l->teacher_in[k] = kd_teacher_tap(s, l, k);
        s->active_teacher = l->teacher; /* forward_from's teacher */
        kd_loss_args la = {sizeof la, l->student_in, l->needs.n_teacher ? l->teacher_in : NULL,
                           b->labels, ba.soft_targets, b->indices, r->st.epoch, r->st.step, true,
                           kd_rng_make(job->seed, rank_stream(KD_STREAM_LOSS << 8 | (uint64_t)i),
                                       (uint64_t)r->st.micro)};
        kd_loss_result *res = &t->results[i];
        *res = (kd_loss_result){.size = sizeof *res};
        st = l->vt->forward(l->self, &la, res);
        if (st == KD_OK && (!res->loss || kd_tensor_numel(res->loss) != 1))
            st = kd_error(KD_ERR_FORMAT, "loss '%s' returned no scalar", l->spec->entry->name);
        if (st == KD_OK && res->n_terms > 0 && !res->terms)
            st = kd_error(KD_ERR_FORMAT, "loss '%s' returned %d terms but no array",
                          l->spec->entry->name, res->n_terms);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s", l->spec->path);
        double w = l->spec->weight;
        if (l->spec->weight_warmup_epochs > 0 && epoch_pos < l->spec->weight_warmup_epochs)
            w *= epoch_pos / l->spec->weight_warmup_epochs;
        t->weighted[i] = kd_mul_scalar(res->loss, w);
        total = total ? kd_add(total, t->weighted[i]) : t->weighted[i];
    }
    if (!total)
        return kd_error_wrap(kd_last_status(), "summing the losses");
    t->total = kd_tensor_get(total, 0);
    if (!isfinite(t->total))
        return non_finite(r, t);
    if (r->st.cycle == 0)
        for (int i = 0; i < s->n_params; i++)
            kd_tensor_zero_grad(s->params[i].tensor);
    if (cycle > 1 && !(total = kd_mul_scalar(total, 1.0 / (double)cycle)))
        return kd_error_wrap(kd_last_status(), "scaling the loss for accumulation");
    if (kd_dist().world > 1 && !(total = kd_mul_scalar(total, rank_share(b))))
        return kd_error_wrap(kd_last_status(), "scaling the loss to this rank's share");
    return kd_backward(total);
}

/* The end of a cycle: the gradients averaged over the ranks (data
 * parallel), clipping, then the optimizer. */
static kd_status optimizer_step(run *r, double lr)
{
    const kd_job *job = r->job;
    kd_session *s = r->s;
    kd_status st = kd_dist_all_reduce_grads(s->n_params, s->params);
    if (st == KD_OK && job->clip_grad_norm > 0)
        st = kd_clip_grad_norm(s->n_params, s->params, job->clip_grad_norm, &r->grad_norm);
    else if (st == KD_OK && job->clip_grad_value > 0 &&
             (st = kd_grad_norm(s->n_params, s->params, &r->grad_norm)) == KD_OK)
        st = kd_clip_grad_value(s->n_params, s->params, job->clip_grad_value);
    if (st == KD_OK)
        st = s->optim_vt->step(s->optim, lr);
    if (st == KD_OK && s->ema.vt)
        st = kd_ema_update(&job->ema, s->ema.n_tensors, s->ema.tensors, s->student.tensors,
                           kd_ema_decay(&job->ema, r->st.step + 1));
    return st == KD_OK ? st : kd_error_wrap(st, "step %lld", (long long)r->st.step);
}

/* Every term of every loss, as the losses named them:
 * {"losses[1]": {"tckd": .., "nckd": ..}}; read while the step's scope is
 * open. */
static json_t *loss_terms_json(const kd_session *s, const step_losses *t)
{
    json_t *all = json_object();
    for (int i = 0; all && i < s->n_losses; i++) {
        const kd_loss_result *res = &t->results[i];
        if (res->n_terms < 1)
            continue;
        json_t *one = json_object();
        for (int k = 0; one && k < res->n_terms; k++)
            if (res->terms[k].name && res->terms[k].value)
                json_object_set_new(one, res->terms[k].name,
                                    json_real(kd_tensor_get(res->terms[k].value, 0)));
        json_object_set_new(all, s->losses[i].spec->path, one);
    }
    return all;
}

/* ---------------------------------------------------------------- progress */

static void print_progress(run *r, const step_losses *t, double lr, double ips, double eta_s,
                           bool final_line)
{
    if (kd_dist().rank != 0)
        return; /* one progress line for the job */
    char eta[32];
    format_eta(eta_s, eta, sizeof eta);
    char terms[512];
    size_t used = 0;
    terms[0] = '\0';
    for (int i = 0; i < r->s->n_losses && r->s->n_losses > 1 && used < sizeof terms; i++)
        used += (size_t)snprintf(terms + used, sizeof terms - used, "%s%s %.4f",
                                 i ? ", " : " (", r->s->losses[i].spec->entry->name,
                                 t->value[i]);
    if (used && used < sizeof terms)
        snprintf(terms + used, sizeof terms - used, ")");
    double avg = r->st.loss_count ? r->st.loss_sum / (double)r->st.loss_count : t->total;
    fprintf(stderr, "%sepoch %lld/%lld step %lld/%lld loss %.4f%s lr %.5g %.0f img/s ETA %s%s",
            r->tty ? "\r\033[K" : "", (long long)r->st.epoch + 1, (long long)r->job->epochs,
            (long long)r->st.batch, (long long)r->batches_per_epoch, avg, terms, lr, ips, eta,
            r->tty && !final_line ? "" : "\n");
    fflush(stderr);
}

/* Says how many unreadable samples a dataset replaced since *seen (its
 * skip policy), when any. */
static void report_skipped(const kd_data_run *d, int64_t *seen, const char *when)
{
    if (!d->vt || !d->vt->skipped)
        return;
    int64_t now = d->vt->skipped(d->self);
    if (now > *seen)
        fprintf(stderr, "%s: %s: %lld unreadable sample%s skipped (replaced by the next "
                "readable one; see the messages above)\n",
                when, d->spec->path, (long long)(now - *seen), now - *seen == 1 ? "" : "s");
    *seen = now;
}

static kd_status run_eval(run *r, json_t **line)
{
    kd_eval_result e;
    double t0 = now_s();
    kd_status st = evaluate_model(&r->s->student, NULL, r->val, &e);
    if (st != KD_OK)
        return kd_error_wrap(st, "evaluation after epoch %lld", (long long)r->st.epoch);
    char when[64];
    snprintf(when, sizeof when, "eval epoch %lld", (long long)r->st.epoch);
    report_skipped(&r->s->val, &r->val_skipped, when);
    r->last_eval = e;
    bool best = e.top1 > r->st.best_top1;
    if (best) {
        r->st.best_top1 = e.top1;
        r->st.best_epoch = r->st.epoch;
    }
    fprintf(stderr, "eval epoch %lld: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %lld images "
            "(%.1f s)%s\n", (long long)r->st.epoch, e.top1, e.top5, e.loss,
            (long long)e.samples, now_s() - t0, best ? ", best so far" : "");
    *line = json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:I}", "type", "eval", "epoch",
                      (json_int_t)r->st.epoch, "step", (json_int_t)r->st.step, "top1", e.top1,
                      "top5", e.top5, "loss", e.loss, "samples", (json_int_t)e.samples);
    if (r->s->ema.vt) {
        kd_eval_result a;
        st = evaluate_model(&r->s->ema, NULL, r->val, &a);
        if (st != KD_OK)
            return kd_error_wrap(st, "evaluation of the EMA after epoch %lld",
                                 (long long)r->st.epoch);
        r->last_ema = a;
        fprintf(stderr, "eval epoch %lld (EMA): top-1 %.2f%%, top-5 %.2f%%, loss %.4f\n",
                (long long)r->st.epoch, a.top1, a.top5, a.loss);
        json_object_set_new(*line, "ema_top1", json_real(a.top1));
        json_object_set_new(*line, "ema_top5", json_real(a.top5));
        json_object_set_new(*line, "ema_loss", json_real(a.loss));
    }
    if (best && kd_dist().rank == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/best.safetensors", r->job->output);
        st = save_checkpoint(r, path);
    }
    return st;
}

/* ---------------------------------------------------------------- the loop */

/* The length of the accumulation cycle the next batch belongs to: cycles
 * start at the epoch's start and every accumulate_steps batches, and the
 * last one ends with the epoch. */
static int64_t cycle_length(const run *r)
{
    int64_t start = r->st.batch - r->st.cycle;
    int64_t left = r->batches_per_epoch - start;
    return left < r->job->accumulate_steps ? left : r->job->accumulate_steps;
}

static kd_status resume(run *r)
{
    char **names;
    int n = list_checkpoints(r->ckpt_dir, &names);
    if (n == 0) {
        free_names(names, n);
        return kd_error(KD_ERR_INVALID, "--resume: no checkpoint in %s", r->ckpt_dir);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", r->ckpt_dir, names[n - 1]);
    free_names(names, n);
    kd_tensor_group *groups;
    int ng;
    char *state = NULL;
    kd_status st = kd_session_groups(r->s, &groups, &ng);
    if (st == KD_OK)
        st = kd_checkpoint_load(path, ng, groups, &state);
    free(groups);
    if (st == KD_OK)
        st = parse_state(path, state, &r->st);
    free(state);
    /* a job that changed accumulate_steps cannot finish the saved cycle */
    if (st == KD_OK && r->st.cycle > 0 && r->st.cycle >= cycle_length(r))
        st = kd_error(KD_ERR_INVALID, "%s: taken after batch %lld of an accumulation cycle, "
                      "but optim.accumulate_steps is %lld", path, (long long)r->st.cycle,
                      (long long)r->job->accumulate_steps);
    if (st == KD_OK && r->st.cycle > 0)
        st = load_gradients(r, path);
    if (st == KD_OK) {
        char metrics[4200];
        snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", r->job->output);
        if (kd_dist().rank == 0)
            st = trim_metrics(metrics, r->st.step);
        fprintf(stderr, "resuming from %s: epoch %lld, batch %lld, step %lld%s\n", path,
                (long long)r->st.epoch + 1, (long long)r->st.batch, (long long)r->st.step,
                r->st.cycle > 0 ? " (inside an accumulation cycle)" : "");
    }
    return st;
}

static kd_status write_job_copy(const kd_job *job)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/job.json", job->output);
    char *text = kd_job_dump(job);
    FILE *f = text ? fopen(path, "w") : NULL;
    kd_status st = KD_OK;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) == EOF)
        st = kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && st == KD_OK)
        st = kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    free(text);
    return st;
}

/* classes.json in the output folder: the class names in index order and
 * the class-to-index mapping (torchvision's class_to_idx). */
static kd_status write_classes(const kd_job *job, const char *classes)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/classes.json", job->output);
    json_t *names = json_loads(classes, 0, NULL);
    json_t *to_index = json_object();
    for (size_t i = 0; names && to_index && i < json_array_size(names); i++)
        json_object_set_new(to_index, json_string_value(json_array_get(names, i)),
                            json_integer((json_int_t)i));
    json_t *doc = names && to_index ? json_pack("{s:O, s:O}", "classes", names,
                                                "class_to_idx", to_index) : NULL;
    kd_status st = KD_OK;
    if (!doc || json_dump_file(doc, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0)
        st = kd_error(KD_ERR_IO, "%s: cannot write the class names", path);
    json_decref(doc);
    json_decref(to_index);
    json_decref(names);
    return st;
}

/* Timing for the progress line and the logs: the run's start, and a
 * window of images since the last logged step. */
typedef struct progress {
    double t_start;
    int64_t steps_at_start, total_steps;
    double window_t, last_draw, ips;
    int64_t window_images;
} progress;

static double window_rate(const progress *p, double now)
{
    double dt = now - p->window_t;
    return (double)p->window_images / (dt > 1e-9 ? dt : 1e-9);
}

/* Data parallel, after each batch's backward: every rank learns whether
 * one failed (a NaN loss, a broken sample) or was asked to stop, so none is
 * left waiting in the gradients' all-reduce; the batch's loss becomes the
 * global batch's (the ranks' losses weighted by their shares). */
static kd_status agree_on_batch(run *r, const kd_batch *b, kd_status batch_st, step_losses *t)
{
    if (kd_dist().world == 1)
        return batch_st;
    bool any_stop;
    char what[64];
    snprintf(what, sizeof what, "batch %lld of epoch %lld", (long long)r->st.batch,
             (long long)r->st.epoch + 1);
    kd_status st = kd_dist_agree(what, batch_st != KD_OK, stop_requested, &any_stop);
    r->stop_agreed = any_stop;
    if (batch_st != KD_OK || st != KD_OK)
        return batch_st != KD_OK ? batch_st : st;
    double loss = t->total * rank_share(b);
    st = kd_dist_all_reduce_f64(&loss, 1, KD_DIST_MEAN);
    t->total = loss;
    return st;
}

/* One batch in its scope, and the optimizer step when it ends a cycle;
 * what the logs and progress line show is read before the scope ends, and
 * only on the steps that show it. */
static kd_status run_batch(run *r, const kd_batch *b, double lr, step_losses *t, progress *p)
{
    const kd_job *job = r->job;
    kd_scope_begin();
    int64_t cycle = cycle_length(r);
    bool cycle_end = r->st.cycle + 1 == cycle;
    kd_status st = agree_on_batch(r, b, train_batch(r, b, cycle, t), t);
    if (st == KD_OK && cycle_end)
        st = optimizer_step(r, lr);
    if (st != KD_OK) {
        kd_scope_end();
        return st;
    }
    r->st.micro++;
    r->st.batch++;
    r->st.cycle++;
    r->st.cycle_loss += t->total;
    r->st.loss_sum += t->total;
    r->st.loss_count++;
    p->window_images += b->labels->shape[0];
    if (!cycle_end) {
        kd_scope_end();
        return KD_OK;
    }
    double cycle_loss = r->st.cycle_loss / (double)r->st.cycle;
    r->st.step++;
    r->st.cycle = 0;
    r->st.cycle_loss = 0;
    double now = now_s();
    bool log_now = r->st.step % job->log_every == 0;
    bool draw_now = log_now || (r->tty && now - p->last_draw > 0.25);
    bool epoch_end = r->st.batch == r->batches_per_epoch;
    if (draw_now || epoch_end)
        read_values(r->s, t);
    if (draw_now) {
        p->ips = window_rate(p, now);
        double per_step = (now - p->t_start) / (double)(r->st.step - p->steps_at_start);
        print_progress(r, t, lr, p->ips, per_step * (double)(p->total_steps - r->st.step),
                       false);
        p->last_draw = now;
    }
    if (log_now) {
        json_t *line = json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f}", "type", "train",
                                 "epoch", (json_int_t)r->st.epoch, "step",
                                 (json_int_t)r->st.step, "lr", lr, "loss", cycle_loss,
                                 "loss_avg", r->st.loss_sum / (double)r->st.loss_count,
                                 "img_per_s", p->ips);
        if (job->clip_grad_norm > 0 || job->clip_grad_value > 0)
            json_object_set_new(line, "grad_norm", json_real(r->grad_norm));
        json_t *weighted = json_object();
        for (int i = 0; i < r->s->n_losses; i++)
            json_object_set_new(weighted, r->s->losses[i].spec->path, json_real(t->value[i]));
        json_object_set_new(line, "terms", weighted);
        json_object_set_new(line, "loss_terms", loss_terms_json(r->s, t));
        write_metrics(r, line);
        p->window_t = now;
        p->window_images = 0;
    }
    kd_scope_end();
    return KD_OK;
}

/* A stop the CLI's signal handler asked for (data parallel: on any rank,
 * as the ranks agreed after the last batch), or the caller's
 * stop_at_batch. */
static bool should_stop(const run *r)
{
    /* data parallel: at a cycle's end, where the gradients were reduced
     * (rank 0's checkpoint cannot hold the other ranks' partial sums) */
    bool asked = kd_dist().world > 1 ? r->stop_agreed && r->st.cycle == 0 : stop_requested;
    return asked || (r->stop_at_batch > 0 && r->st.micro >= r->stop_at_batch);
}

/* Data parallel: a rank that fails before its batch's backward still
 * takes part in the batch's decision, so the others stop too (its own
 * error is what it reports). */
static void fail_with_others(const run *r)
{
    bool any_stop;
    if (kd_dist().world > 1)
        kd_dist_agree(r->s->train.spec->path, true, stop_requested, &any_stop);
}

static kd_status train_epochs(run *r, bool *stopped)
{
    const kd_job *job = r->job;
    kd_session *s = r->s;
    double elapsed_before = r->st.elapsed_s;
    progress p = {.t_start = now_s(),
                  .steps_at_start = r->st.step,
                  .total_steps = r->steps_per_epoch * job->epochs};
    step_losses terms = {0};
    kd_status st = step_losses_init(&terms, s->n_losses);
    while (st == KD_OK && r->st.epoch < job->epochs) {
        st = kd_loader_start(r->train, kd_session_view_epoch(s, r->st.epoch), r->st.batch);
        p.window_t = now_s();
        p.last_draw = 0;
        p.window_images = 0;
        p.ips = 0;
        double lr = 0;
        while (st == KD_OK && !should_stop(r)) {
            kd_batch b;
            bool done;
            st = kd_loader_next(r->train, &b, &done);
            if (st == KD_OK && !done)
                st = s->sched_vt->lr_at(s->sched, r->st.step, &lr);
            if (st != KD_OK) {
                fail_with_others(r);
                break;
            }
            if (done)
                break;
            st = run_batch(r, &b, lr, &terms, &p);
        }
        r->st.elapsed_s = elapsed_before + (now_s() - p.t_start);
        if (st != KD_OK)
            break;
        if (should_stop(r)) {
            char path[4200];
            st = checkpoint_step(r, path, sizeof path);
            if (st == KD_OK)
                fprintf(stderr, "%sstopped at step %lld; checkpoint %s (continue with "
                        "--resume)\n", r->tty ? "\n" : "", (long long)r->st.step, path);
            *stopped = st == KD_OK;
            break;
        }
        if (p.window_images > 0)
            p.ips = window_rate(&p, now_s());
        print_progress(r, &terms, lr, p.ips, 0, true);
        char when[64];
        snprintf(when, sizeof when, "epoch %lld", (long long)r->st.epoch + 1);
        report_skipped(&s->train, &r->train_skipped, when);
        /* the epoch is done: the state now points at the next one */
        r->st.epoch++;
        r->st.batch = 0;
        r->st.loss_sum = 0;
        r->st.loss_count = 0;
        json_t *eval_line = NULL;
        if (r->val && job->eval_every > 0 &&
            (r->st.epoch % job->eval_every == 0 || r->st.epoch == job->epochs)) {
            st = run_eval(r, &eval_line);
            write_metrics(r, eval_line);
            if (st != KD_OK)
                break;
        }
        if (r->st.epoch % job->checkpoint_every == 0 || r->st.epoch == job->epochs) {
            char path[4200];
            st = checkpoint_step(r, path, sizeof path);
        }
    }
    step_losses_free(&terms);
    return st;
}

kd_status kd_run(const kd_job *job, const kd_run_options *options, bool *stopped)
{
    *stopped = false;
    stop_requested = 0; /* a request from before this run is not for it */
    run r = {0};
    r.job = job;
    r.st.best_top1 = -1;
    r.st.best_epoch = -1;
    r.tty = isatty(2);
    kd_status st = kd_dist_init();
    if (st != KD_OK)
        return st;
    kd_thread_budget budget;
    if ((st = kd_threads_apply(job, &budget)) != KD_OK)
        return st;
    snprintf(r.ckpt_dir, sizeof r.ckpt_dir, "%s/checkpoints", job->output);

    double t0 = now_s();
    st = kd_session_open(job, KD_SESSION_TRAIN, &r.s);
    if (st == KD_OK)
        st = kd_make_dirs(r.ckpt_dir);
    if (st == KD_OK)
        st = open_loader(&r.s->train, job->seed, &r.train);
    if (st == KD_OK && r.s->val.vt)
        st = open_loader(&r.s->val, job->seed, &r.val);
    if (st == KD_OK) {
        r.batches_per_epoch = kd_loader_batches_per_epoch(r.train);
        r.steps_per_epoch = kd_session_steps_per_epoch(r.s);
        r.stop_at_batch = options ? options->stop_at_batch : 0;
    }
    if (st == KD_OK && options && options->resume)
        st = resume(&r);
    bool writer = kd_dist().rank == 0; /* of metrics, job.json and checkpoints */
    if (st == KD_OK && writer)
        st = write_job_copy(job);
    if (st == KD_OK)
        st = kd_session_classes_json(r.s, &r.classes);
    if (st == KD_OK && r.classes && writer)
        st = write_classes(job, r.classes);
    if (st == KD_OK) {
        /* what the session's probe of sample 0 skipped is not an epoch's */
        if (r.s->train.vt->skipped)
            r.train_skipped = r.s->train.vt->skipped(r.s->train.self);
        if (r.s->val.vt && r.s->val.vt->skipped)
            r.val_skipped = r.s->val.vt->skipped(r.s->val.self);
    }
    char metrics_path[4200];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", job->output);
    if (st == KD_OK && writer) {
        r.metrics = fopen(metrics_path, options && options->resume ? "a" : "w");
        if (!r.metrics)
            st = kd_error(KD_ERR_IO, "%s: %s", metrics_path, strerror(errno));
    }
    if (st == KD_OK && r.metrics) {
        json_t *record;
        st = kd_run_record(r.st.step, &record);
        if (st == KD_OK)
            write_metrics(&r, record);
    }
    if (st == KD_OK) {
        char accumulated[64] = "";
        if (job->accumulate_steps > 1)
            snprintf(accumulated, sizeof accumulated, " x %lld accumulated",
                     (long long)job->accumulate_steps);
        char several[32] = "";
        if (job->n_teachers > 1)
            snprintf(several, sizeof several, " and %d more", job->n_teachers - 1);
        fprintf(stderr, "%s: %s%s%s%s -> %s, %lld epochs x %lld steps, batch %lld%s, %d threads "
                "(ready in %.1f s)\n", job->file,
                job->teacher.present ? job->teacher.entry->name : "", several,
                job->teacher.present ? (job->n_teachers > 1 ? " teach " : " teaches ")
                                     : "training ", job->student.entry->name,
                job->output, (long long)job->epochs, (long long)r.steps_per_epoch,
                (long long)job->train.batch_size, accumulated, kd_num_threads(), now_s() - t0);
        char threads[512];
        kd_threads_describe(&budget, job, threads, sizeof threads);
        fprintf(stderr, "%s\n", threads);
        kd_memory_peak_reset(KD_CPU);
        st = train_epochs(&r, stopped);
    }
    int64_t peak = kd_memory_stats_of(KD_CPU).peak_bytes;
    if (st == KD_OK && !*stopped) {
        double img = (double)r.st.micro * (double)job->train.batch_size;
        fprintf(stderr, "done: %lld steps in %.1f s (%.0f img/s)", (long long)r.st.step,
                r.st.elapsed_s, r.st.elapsed_s > 0 ? img / r.st.elapsed_s : 0.0);
        if (r.st.best_epoch >= 0)
            fprintf(stderr, "; best top-1 %.2f%% after epoch %lld (%s/best.safetensors)",
                    r.st.best_top1, (long long)r.st.best_epoch, job->output);
        fprintf(stderr, "; peak tensor memory %.1f MiB\n", (double)peak / (1024.0 * 1024.0));
        json_t *summary = json_pack("{s:s, s:I, s:I, s:f, s:f, s:I, s:I}", "type", "summary",
                                    "epoch", (json_int_t)r.st.epoch, "step",
                                    (json_int_t)r.st.step, "elapsed_s", r.st.elapsed_s,
                                    "best_top1", r.st.best_top1, "best_epoch",
                                    (json_int_t)r.st.best_epoch, "peak_bytes",
                                    (json_int_t)peak);
        if (summary && r.last_eval.samples) {
            json_object_set_new(summary, "top1", json_real(r.last_eval.top1));
            json_object_set_new(summary, "top5", json_real(r.last_eval.top5));
        }
        if (summary && r.last_ema.samples)
            json_object_set_new(summary, "ema_top1", json_real(r.last_ema.top1));
        write_metrics(&r, summary);
    }
    if (r.metrics)
        fclose(r.metrics);
    kd_loader_free(r.train);
    kd_loader_free(r.val);
    kd_session_close(r.s);
    free(r.classes);
    return st;
}
