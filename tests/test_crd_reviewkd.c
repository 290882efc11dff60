/* The crd and reviewkd loss plugins, loaded through the registry:
 * - parity in f64 with tests/parity/torch_crd_reviewkd.py (one Python
 *   process for the file): loss values, gradients with respect to the
 *   student features and to every parameter the loss owns, and the state
 *   a step leaves (CRD's banks and Z over several steps, ReviewKD's running
 *   statistics). For CRD the Python side scores the negatives the plugin
 *   drew, which this test learns from the sampler the plugin is built from;
 *   ReviewKD also as examples/fashion-mnist/reviewkd.json binds it, its
 *   teacher levels the frozen teacher's pre-ReLU taps (stageN.preact),
 *   which the Python side recomputes with its own ResNet;
 * - f64 central differences through each plugin's forward;
 * - the sampler's contract, the tensors' flags, errors naming taps and
 *   shapes, refused parameters;
 * - the example jobs run a few steps, and a CRD run stopped by SIGTERM
 *   mid-epoch and resumed ends with the same tensors (banks and Z
 *   included) as an uninterrupted one. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "loss_fixture.h"
#include "tensor_bag.h"
#include "plugin_fixture.h"
#include "../core/loader.h"
#include "../core/params.h"
#include "../core/train/job.h"
#include "../core/train/session.h"
#include "../plugins/losses/crd/crd_negatives.h"

#define PARITY_TOL 1e-6
#define FMNIST_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
#define FD_TOL 1e-6
/* Relative errors are taken against at least this norm: a value that is 0
 * in exact arithmetic (a batch norm's batch mean of a 1x1 map) comes out of
 * cancelling f64 sums as ~1e-17 on both sides, with no relative meaning. */
#define NORM_FLOOR 1e-9

/* ------------------------------------------------------------ plumbing */

/* The training set a loss sees through the host services. */
typedef struct fake_host {
    int64_t n;
    int64_t *labels;
    kd_host_services services;
} fake_host;

static kd_status host_labels(void *host, const int64_t **labels)
{
    *labels = ((fake_host *)host)->labels;
    return KD_OK;
}

/* n samples of `classes` classes, in turn. */
static void host_init(fake_host *h, int64_t n, int64_t classes)
{
    h->n = n;
    h->labels = malloc((size_t)n * sizeof *h->labels);
    for (int64_t i = 0; i < n; i++)
        h->labels[i] = i % classes;
    h->services = (kd_host_services){.size = sizeof(kd_host_services),
                                     .host = h,
                                     .num_classes = (int)classes,
                                     .train_length = n,
                                     .world_size = 1,
                                     .train_labels = host_labels};
}

/* A tap: its shape without the batch, [C] (pooled) or [C, H, W]. */
typedef struct tap {
    int ndim;
    int64_t dims[3];
} tap;

static kd_tap_shape tap_shape(const tap *t)
{
    kd_tap_shape s = {.ndim = t->ndim + 1};
    s.shape[0] = 1;
    for (int d = 0; d < t->ndim; d++)
        s.shape[d + 1] = t->dims[d];
    return s;
}

static kd_tap_info tap_info(const tap *t)
{
    return (kd_tap_info){"tap", (int)t->dims[0], 1, t->ndim == 1 ? KD_LAYOUT_NC : KD_LAYOUT_NCHW,
                         0};
}

/* A caller-owned f64 [batch, dims...] feature, uniform in [lo, hi). */
static kd_tensor *feature(const tap *t, int64_t batch, kd_rng *rng, double lo, double hi)
{
    kd_tap_shape s = tap_shape(t);
    s.shape[0] = batch;
    return kt_uniform(KD_F64, s.ndim, s.shape, rng, lo, hi);
}

static kd_status bind(const kt_loss *l, int n, const tap *student, const tap *teacher,
                      const kd_host_services *host)
{
    kd_tap_shape ss[8], ts[8];
    kd_tap_info si[8], ti[8];
    for (int i = 0; i < n; i++) {
        ss[i] = tap_shape(&student[i]);
        ts[i] = tap_shape(&teacher[i]);
        si[i] = tap_info(&student[i]);
        ti[i] = tap_info(&teacher[i]);
    }
    const kd_bind_args args = {sizeof args, ss, ts, si, ti, host};
    return l->vt->bind(l->self, &args);
}

static kd_tensor_list loss_tensors(const kt_loss *l)
{
    kd_tensor_list list = {0};
    if (l->vt->tensors(l->self, &list) != KD_OK)
        list.n = 0;
    return list;
}

static void zero_param_grads(const kd_tensor_list *list)
{
    for (int i = 0; i < list->n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(list, i);
        kd_tensor_zero_grad(nt->tensor);
        kd_tensor_set_requires_grad(nt->tensor, (nt->flags & KD_TENSOR_PARAM) != 0);
    }
}

/* The loss on these inputs, with backward when want_grad; NAN with the
 * message in kd_last_error() on failure. */
static double run_loss(const kt_loss *l, kd_tensor *const *student, kd_tensor *const *teacher,
                       kd_tensor *labels, kd_tensor *indices, int64_t epoch, int64_t step,
                       bool training, kd_rng rng, bool want_grad)
{
    const kd_loss_args args = {sizeof args, student, teacher, labels, NULL, indices, epoch,
                               step, training, rng};
    kd_scope_begin();
    kd_loss_result r = {.size = sizeof r};
    double v = NAN;
    if (l->vt->forward(l->self, &args, &r) == KD_OK &&
        (!want_grad || kd_backward(r.loss) == KD_OK))
        v = kd_tensor_get(r.loss, 0);
    kd_scope_end();
    return v;
}

/* B distinct dataset indices of [0, n) (the loader never repeats one in a
 * batch) and their labels. */
static void draw_indices(int64_t batch, const fake_host *h, kd_rng *rng, kd_tensor **indices,
                         kd_tensor **labels)
{
    int64_t *all = malloc((size_t)h->n * sizeof *all), *y = malloc((size_t)batch * sizeof *y);
    for (int64_t i = 0; i < h->n; i++)
        all[i] = i;
    for (int64_t i = 0; i < batch; i++) {
        int64_t j = i + (int64_t)kd_rng_below(rng, (uint64_t)(h->n - i));
        int64_t v = all[j];
        all[j] = all[i];
        all[i] = v;
        y[i] = h->labels[v];
    }
    *indices = kd_tensor_from_data(KD_I64, 1, &batch, all);
    *labels = kd_tensor_from_data(KD_I64, 1, &batch, y);
    free(all);
    free(y);
}

/* ------------------------------------------------------------ CRD cases */

/* A CRD case: its parameters, and what the sampler must be told of them
 * (K, relax) to draw what the plugin draws. */
typedef struct crd_case {
    const char *name, *params;
    int64_t batch, n, classes, k;
    bool relax;
    int steps;
    tap s, t;
} crd_case;

static const crd_case CRD[] = {
    {"crd K within the pool", "{\"nce_k\": 20, \"feat_dim\": 8}", 4, 40, 4, 20, false, 2,
     {1, {12}}, {1, {16}}},
    {"crd K beyond the pool, T 0.2, m 0.9",
     "{\"nce_k\": 50, \"feat_dim\": 6, \"nce_t\": 0.2, \"nce_momentum\": 0.9}", 5, 30, 3, 50,
     false, 2, {1, {10}}, {1, {7}}},
    {"crd map taps flattened, T 0.5, m 0", "{\"nce_k\": 8, \"feat_dim\": 5, \"nce_t\": 0.5, "
     "\"nce_momentum\": 0}", 3, 24, 2, 8, false, 3, {3, {3, 2, 2}}, {3, {4, 2, 2}}},
    {"crd defaults but K 64", "{\"nce_k\": 64}", 8, 200, 10, 64, false, 2, {1, {32}},
     {1, {64}}},
    {"crd relax mode", "{\"nce_k\": 12, \"feat_dim\": 7, \"mode\": \"relax\"}", 6, 36, 3, 12,
     true, 2, {1, {9}}, {1, {11}}},
};
#define N_CRD (int)(sizeof CRD / sizeof CRD[0])

static void run_crd_case(int c, kt_bag *in, kt_bag *mine, char *error, size_t error_size)
{
    const crd_case *cc = &CRD[c];
    kt_loss l;
    fake_host h;
    host_init(&h, cc->n, cc->classes);
    crd_negatives neg = {0};
    if (!kt_loss_open(cc->name, "crd", cc->params, KD_F64, 100 + (uint64_t)c, &l)) {
        snprintf(error, error_size, "did not load");
        free(h.labels);
        return;
    }
    if (bind(&l, 1, &cc->s, &cc->t, &h.services) != KD_OK ||
        crd_negatives_init(&neg, h.labels, h.n, "test") != KD_OK) {
        snprintf(error, error_size, "bind: %s", kd_last_error());
        goto done;
    }
    kd_tensor_list list = loss_tensors(&l);
    for (int i = 0; i < list.n; i++)
        kt_bag_add(in, kd_tensor_list_at(&list, i)->tensor, "c%d.init.%s", c,
                kd_tensor_list_at(&list, i)->name);
    kd_tensor *all_labels = kd_tensor_from_data(KD_I64, 1, &h.n, h.labels);
    kt_bag_add(in, all_labels, "c%d.labels", c);
    kd_tensor_free(all_labels);
    kd_rng data = kd_rng_make(900 + (uint64_t)c, 1, 0);
    for (int step = 0; step < cc->steps; step++) {
        kd_tensor *indices, *labels;
        draw_indices(cc->batch, &h, &data, &indices, &labels);
        kd_tensor *fs = feature(&cc->s, cc->batch, &data, 0, 2);
        kd_tensor *ft = feature(&cc->t, cc->batch, &data, 0, 2);
        kd_rng rng = kd_rng_make(31, 7, (uint64_t)(c * 16 + step)), drawn = rng;
        const int64_t idx_shape[2] = {cc->batch, cc->k + 1};
        kd_tensor *idx = kd_tensor_empty(KD_I64, KD_CPU, 2, idx_shape);
        crd_negatives_draw(&neg, kd_tensor_data(indices), cc->batch, cc->k, cc->relax, &drawn,
                           kd_tensor_data(idx), "test");
        kt_bag_add(in, fs, "c%d.s%d.fs", c, step);
        kt_bag_add(in, ft, "c%d.s%d.ft", c, step);
        kt_bag_add(in, indices, "c%d.s%d.indices", c, step);
        kt_bag_add(in, idx, "c%d.s%d.idx", c, step);
        zero_param_grads(&list);
        kd_tensor_set_requires_grad(fs, true);
        double v = run_loss(&l, &fs, &ft, labels, indices, 0, step, true, rng, true);
        if (isnan(v))
            snprintf(error, error_size, "step %d: %s", step, kd_last_error());
        char key[64];
        snprintf(key, sizeof key, "c%d.s%d.value", c, step);
        kt_bag_add_value(mine, v, key);
        kt_bag_add(mine, fs->grad, "c%d.s%d.grad.fs", c, step);
        for (int i = 0; i < list.n; i++) {
            const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
            if (nt->flags & KD_TENSOR_PARAM)
                kt_bag_add(mine, nt->tensor->grad, "c%d.s%d.grad.%s", c, step, nt->name);
        }
        kd_tensor_free(fs);
        kd_tensor_free(ft);
        kd_tensor_free(indices);
        kd_tensor_free(labels);
        kd_tensor_free(idx);
        if (isnan(v))
            goto done;
    }
    for (int i = 0; i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        if (nt->flags & KD_TENSOR_BUFFER)
            kt_bag_add(mine, nt->tensor, "c%d.final.%s", c, nt->name);
    }
done:
    crd_negatives_free(&neg);
    kt_loss_close(&l);
    free(h.labels);
}

/* ------------------------------------------------------- ReviewKD cases */

typedef struct review_case {
    const char *name, *params;
    int64_t batch, epoch;
    int levels;
    tap s[4], t[4];
} review_case;

static const review_case REVIEW[] = {
    {"reviewkd CIFAR-like levels, first epoch (1/20)", "{}", 3, 0, 4,
     {{3, {4, 8, 8}}, {3, {6, 4, 4}}, {3, {8, 2, 2}}, {1, {8}}},
     {{3, {5, 8, 8}}, {3, {7, 4, 4}}, {3, {9, 2, 2}}, {1, {9}}}},
    {"reviewkd teacher maps twice the size, mid 5, original warm-up at epoch 2",
     "{\"student_taps\": [\"a\", \"b\", \"c\"], \"teacher_taps\": [\"x\", \"y\", \"z\"], "
     "\"mid_channels\": 5, \"warmup_epochs\": 4, \"first_epoch\": 0}", 2, 2, 3,
     {{3, {4, 4, 4}}, {3, {6, 2, 2}}, {1, {6}}},
     {{3, {3, 8, 8}}, {3, {5, 4, 4}}, {1, {5}}}},
    {"reviewkd 14 and 7 maps (overlapping bins), no warm-up",
     "{\"student_taps\": [\"a\", \"b\", \"c\"], \"teacher_taps\": [\"x\", \"y\", \"z\"], "
     "\"warmup_epochs\": 0}", 2, 5, 3,
     {{3, {3, 14, 14}}, {3, {4, 7, 7}}, {1, {4}}},
     {{3, {5, 14, 14}}, {3, {6, 7, 7}}, {1, {6}}}},
    {"reviewkd 3x3 onto 5x5 (uneven nearest), warm-up done",
     "{\"student_taps\": [\"a\", \"b\"], \"teacher_taps\": [\"x\", \"y\"], "
     "\"warmup_epochs\": 2}", 3, 7, 2, {{3, {4, 3, 3}}, {1, {4}}}, {{3, {4, 5, 5}}, {1, {4}}}},
    {"reviewkd one 3x3 level", "{\"student_taps\": [\"a\"], \"teacher_taps\": [\"x\"], "
     "\"warmup_epochs\": 1}", 4, 0, 1, {{3, {3, 3, 3}}}, {{3, {4, 3, 3}}}},
};
#define N_REVIEW (int)(sizeof REVIEW / sizeof REVIEW[0])

static void run_review_case(int c, kt_bag *in, kt_bag *mine, char *error, size_t error_size)
{
    const review_case *rc = &REVIEW[c];
    kt_loss l;
    if (!kt_loss_open(rc->name, "reviewkd", rc->params, KD_F64, 200 + (uint64_t)c, &l)) {
        snprintf(error, error_size, "did not load");
        return;
    }
    if (bind(&l, rc->levels, rc->s, rc->t, NULL) != KD_OK) {
        snprintf(error, error_size, "bind: %s", kd_last_error());
        kt_loss_close(&l);
        return;
    }
    kd_tensor_list list = loss_tensors(&l);
    for (int i = 0; i < list.n; i++)
        kt_bag_add(in, kd_tensor_list_at(&list, i)->tensor, "r%d.init.%s", c,
                kd_tensor_list_at(&list, i)->name);
    kd_rng data = kd_rng_make(700 + (uint64_t)c, 1, 0);
    kd_tensor *fs[4], *ft[4];
    for (int i = 0; i < rc->levels; i++) {
        fs[i] = feature(&rc->s[i], rc->batch, &data, -1, 2);
        ft[i] = feature(&rc->t[i], rc->batch, &data, -1, 2);
        kt_bag_add(in, fs[i], "r%d.s%d", c, i);
        kt_bag_add(in, ft[i], "r%d.t%d", c, i);
        kd_tensor_set_requires_grad(fs[i], true);
    }
    zero_param_grads(&list);
    double v = run_loss(&l, fs, ft, NULL, NULL, rc->epoch, 0, true, kd_rng_make(0, 0, 0), true);
    if (isnan(v))
        snprintf(error, error_size, "%s", kd_last_error());
    char key[64];
    snprintf(key, sizeof key, "r%d.value", c);
    kt_bag_add_value(mine, v, key);
    for (int i = 0; i < rc->levels; i++) {
        kt_bag_add(mine, fs[i]->grad, "r%d.grad.s%d", c, i);
        kd_tensor_free(fs[i]);
        kd_tensor_free(ft[i]);
    }
    for (int i = 0; i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        if (nt->flags & KD_TENSOR_PARAM)
            kt_bag_add(mine, nt->tensor->grad, "r%d.grad.%s", c, nt->name);
        else
            kt_bag_add(mine, nt->tensor, "r%d.final.%s", c, nt->name);
    }
    kt_loss_close(&l);
}

/* ------------------------------------------------------- ReviewKD in a job */

static char jobdir[64];

/* The job's loss parameters and teacher, for the Python side. */
typedef struct review_job_meta {
    char *params;  /* the reviewkd entry's parameters, every key (JSON) */
    char teacher[32], teacher_params[128];
    int64_t epoch;
} review_job_meta;

static int tap_named(const kd_model_run *m, const char *name)
{
    for (int i = 0; i < m->n_taps; i++)
        if (strcmp(m->taps[i].name, name) == 0)
            return i;
    return -1;
}

/* Runs `m` on x, filling the taps `names` into out (scope-owned). */
static kd_status model_taps(kd_model_run *m, kd_tensor *x, bool training, int n,
                            const char *const *names, kd_tensor **out)
{
    bool want[32] = {false};
    kd_tensor *all[32] = {NULL};
    if (m->n_taps > 32)
        return kd_error(KD_ERR_INVALID, "%d taps: more than the test holds", m->n_taps);
    for (int i = 0; i < n; i++) {
        int t = tap_named(m, names[i]);
        if (t < 0)
            return kd_error(KD_ERR_INVALID, "no tap '%s'", names[i]);
        want[t] = true;
    }
    kd_forward_args a = {sizeof a, x, training, kd_rng_make(0, 0, 0), want, all};
    kd_status st = m->vt->forward(m->self, &a);
    for (int i = 0; st == KD_OK && i < n; i++)
        out[i] = all[tap_named(m, names[i])];
    return st;
}

/* ReviewKD as examples/fashion-mnist/reviewkd.json runs it (its default
 * style teacher taps stage1.preact..stage3.preact and pre_logits), in
 * float64: a session of the job gives the frozen resnet20 teacher (batch
 * norms folded) and the resnet8 student; on a batch of the job's training
 * views the teacher's taps and the student's (train mode, as leaves) go
 * through the bound loss and its backward. The Python side runs its own
 * teacher on the same weights and batch to make the teacher levels, so
 * the pre-ReLU taps, the loss, and its gradients are all held to torch. */
static void run_review_job(kt_bag *in, kt_bag *mine, review_job_meta *meta, char *error,
                           size_t error_size)
{
    char job_path[512], weights[512], dirs[600], weights_set[600], output[128];
    kt_source_path("examples/fashion-mnist/reviewkd.json", job_path, sizeof job_path);
    kt_source_path("examples/fashion-mnist/teacher.safetensors", weights, sizeof weights);
    snprintf(dirs, sizeof dirs, "plugin_dirs=[\"%s\"]", kt_plugin_dir());
    snprintf(weights_set, sizeof weights_set, "teacher.weights=%s", weights);
    snprintf(output, sizeof output, "output=%s/review-job", jobdir);
    const char *sets[] = {dirs, weights_set, output, "dtype=float64", "data.train.subset=64",
                          "data.train.batch_size=4", "data.train.workers=0"};
    kd_job *job = NULL;
    kd_session *s = NULL;
    kd_loader *loader = NULL;
    kd_status st = kd_job_load(job_path, 7, sets, &job);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TRAIN, &s);
    kd_loss_run *l = NULL;
    for (int i = 0; st == KD_OK && i < s->n_losses; i++)
        if (strcmp(s->losses[i].spec->entry->name, "reviewkd") == 0)
            l = &s->losses[i];
    if (st == KD_OK && !l)
        st = kd_error(KD_ERR_INVALID, "the job has no reviewkd loss");
    if (st == KD_OK) {
        kd_loader_config c = {s->train.vt, s->train.self, "data.train",
                              job->train.n_transforms, s->train.tvt, s->train.tself,
                              job->train.batch_size, job->train.shuffle, job->train.drop_last,
                              job->train.subset, 0, 1, job->seed, 0, 0};
        st = kd_loader_new(&c, &loader);
    }
    kd_batch b;
    bool done = false;
    if (st == KD_OK)
        st = kd_loader_start(loader, 0, 0);
    if (st == KD_OK)
        st = kd_loader_next(loader, &b, &done);
    kd_scope_begin();
    bool grad = kd_set_grad_enabled(false);
    int n = l ? l->needs.n_student : 0;
    kd_tensor *x = st == KD_OK && !done ? kd_cast(b.images, KD_F64) : NULL, *fs[8], *ft[8];
    if (st == KD_OK && (!x || n > 8 || l->needs.n_teacher != n))
        st = kd_error(KD_ERR_INVALID, "no batch, or %d levels", n);
    if (st == KD_OK)
        st = model_taps(&s->teacher, x, false, n, l->needs.teacher, ft);
    if (st == KD_OK)
        st = model_taps(&s->student, x, true, n, l->needs.student, fs);
    kd_set_grad_enabled(grad);
    kd_tensor_list list = {0};
    if (st == KD_OK)
        st = l->vt->tensors(l->self, &list);
    if (st == KD_OK) {
        kt_bag_add(in, x, "j.input");
        for (int i = 0; i < s->teacher.n_tensors; i++)
            kt_bag_add(in, s->teacher.tensors[i].tensor, "j.teacher.%s",
                       s->teacher.tensors[i].name);
        for (int i = 0; i < list.n; i++)
            kt_bag_add(in, kd_tensor_list_at(&list, i)->tensor, "j.init.%s",
                       kd_tensor_list_at(&list, i)->name);
        for (int i = 0; i < n; i++) {
            kt_bag_add(in, fs[i], "j.s%d", i);
            kt_bag_add(mine, ft[i], "j.tap.%s", l->needs.teacher[i]);
            kd_tensor_set_requires_grad(fs[i], true);
        }
        zero_param_grads(&list);
        meta->epoch = 0;
        double v = run_loss(&(kt_loss){l->vt, l->self}, fs, ft, NULL, NULL, meta->epoch, 0, true,
                            kd_rng_make(0, 0, 0), true);
        if (isnan(v))
            st = kd_error_wrap(kd_last_status(), "reviewkd forward");
        kt_bag_add_value(mine, v, "j.value");
        for (int i = 0; i < n; i++)
            kt_bag_add(mine, fs[i]->grad, "j.grad.s%d", i);
        for (int i = 0; i < list.n; i++) {
            const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
            if (nt->flags & KD_TENSOR_PARAM)
                kt_bag_add(mine, nt->tensor->grad, "j.grad.%s", nt->name);
            else
                kt_bag_add(mine, nt->tensor, "j.final.%s", nt->name);
        }
        meta->params = json_dumps(l->spec->params->values, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(meta->teacher, sizeof meta->teacher, "%s", job->teacher.entry->name);
        char *tp = json_dumps(job->teacher.params->values, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(meta->teacher_params, sizeof meta->teacher_params, "%s", tp ? tp : "{}");
        free(tp);
    }
    if (st != KD_OK)
        snprintf(error, error_size, "%s", kd_last_error());
    kd_scope_end();
    kd_loader_free(loader);
    kd_session_close(s);
    kd_job_free(job);
}

/* ------------------------------------------------------------ parity */

/* ||a - b|| / max(||b||, NORM_FLOOR). */
static double rel_error(const kd_tensor *a, const kd_tensor *b)
{
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < kd_tensor_numel(b); i++) {
        double x = kd_tensor_get(a, i), y = kd_tensor_get(b, i);
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    return sqrt(diff) / fmax(sqrt(norm), NORM_FLOOR);
}

/* Every tensor of `mine` whose name starts with prefix against the
 * reference's: one result per case, its worst relative error. */
static void compare_case(const char *name, const char *prefix, const char *error,
                         const kt_bag *mine, const kd_safetensors *ref)
{
    if (error[0]) {
        kt_fail(name, "kdengine: %s", error);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, "%serror", prefix);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "torch: %s", err);
        return;
    }
    double worst = 0;
    const char *where = "";
    int compared = 0;
    for (int i = 0; i < mine->n; i++) {
        if (strncmp(mine->names[i], prefix, strlen(prefix)) != 0)
            continue;
        kd_tensor *want = kd_safetensors_find(ref, mine->names[i])
                              ? kd_safetensors_load(ref, mine->names[i], KD_F64)
                              : NULL;
        double e = want && mine->t[i] && kd_tensor_same_shape(want, mine->t[i])
                       ? rel_error(mine->t[i], want)
                       : INFINITY;
        if (!(e <= worst)) {
            worst = e;
            where = mine->names[i];
        }
        compared++;
        kd_tensor_free(want);
    }
    kt_check(compared > 0 && worst <= PARITY_TOL, name,
             "%d tensors compared, worst relative error %.3g at %s (limit %g)", compared, worst,
             where, PARITY_TOL);
}

static void test_parity(void)
{
    static char crd_errors[N_CRD][256], review_errors[N_REVIEW][256], job_error[512];
    kt_bag in = {0}, mine = {0};
    char meta_text[2 * (N_CRD + N_REVIEW)][64], counts[2][16], epochs[N_REVIEW][24];
    char job_epoch[24];
    const char *meta[4 * (N_CRD + N_REVIEW) + 16];
    int nmeta = 0;
    for (int c = 0; c < N_CRD; c++) {
        run_crd_case(c, &in, &mine, crd_errors[c], sizeof crd_errors[c]);
        snprintf(meta_text[nmeta], sizeof meta_text[0], "c%d.params", c);
        meta[2 * nmeta] = meta_text[nmeta];
        meta[2 * nmeta + 1] = CRD[c].params;
        nmeta++;
    }
    for (int c = 0; c < N_REVIEW; c++) {
        run_review_case(c, &in, &mine, review_errors[c], sizeof review_errors[c]);
        snprintf(meta_text[nmeta], sizeof meta_text[0], "r%d.params", c);
        meta[2 * nmeta] = meta_text[nmeta];
        meta[2 * nmeta + 1] = REVIEW[c].params;
        nmeta++;
        snprintf(meta_text[nmeta], sizeof meta_text[0], "r%d.epoch", c);
        meta[2 * nmeta] = meta_text[nmeta];
        snprintf(epochs[c], sizeof epochs[c], "%lld", (long long)REVIEW[c].epoch);
        meta[2 * nmeta + 1] = epochs[c];
        nmeta++;
    }
    snprintf(counts[0], sizeof counts[0], "%d", N_CRD);
    snprintf(counts[1], sizeof counts[1], "%d", N_REVIEW);
    meta[2 * nmeta] = "crd_cases";
    meta[2 * nmeta + 1] = counts[0];
    nmeta++;
    meta[2 * nmeta] = "review_cases";
    meta[2 * nmeta + 1] = counts[1];
    nmeta++;
    bool fmnist = access(FMNIST_TRAIN, R_OK) == 0;
    review_job_meta jm = {0};
    if (fmnist)
        run_review_job(&in, &mine, &jm, job_error, sizeof job_error);
    snprintf(job_epoch, sizeof job_epoch, "%lld", (long long)jm.epoch);
    const char *job_keys[] = {"job_case", "j.params", "j.teacher", "j.teacher_params", "j.epoch"};
    const char *job_values[] = {fmnist && !job_error[0] ? "1" : "0", jm.params ? jm.params : "{}",
                                jm.teacher, jm.teacher_params, job_epoch};
    for (int i = 0; i < 5; i++, nmeta++) {
        meta[2 * nmeta] = job_keys[i];
        meta[2 * nmeta + 1] = job_values[i];
    }

    kd_safetensors *ref = NULL;
    if (!kt_bag_run_reference("crd/reviewkd parity", "tests/parity/torch_crd_reviewkd.py", &in, nmeta, meta, &ref))
        goto cleanup;
    for (int c = 0; c < N_CRD; c++) {
        char name[160], prefix[16];
        snprintf(name, sizeof name, "parity %s (%d steps)", CRD[c].name, CRD[c].steps);
        snprintf(prefix, sizeof prefix, "c%d.", c);
        compare_case(name, prefix, crd_errors[c], &mine, ref);
    }
    for (int c = 0; c < N_REVIEW; c++) {
        char name[160], prefix[16];
        snprintf(name, sizeof name, "parity %s", REVIEW[c].name);
        snprintf(prefix, sizeof prefix, "r%d.", c);
        compare_case(name, prefix, review_errors[c], &mine, ref);
    }
    if (fmnist)
        compare_case("parity reviewkd as examples/fashion-mnist/reviewkd.json binds it (f64): the "
                     "frozen teacher's stage1.preact..stage3.preact and pre_logits, the loss, its "
                     "gradients", "j.", job_error, &mine, ref);
    else
        kt_skip("parity reviewkd in the example job", "no Fashion-MNIST (scripts/setup "
                "installs it)");
cleanup:
    free(jm.params);
    kd_safetensors_close(ref);
    kt_bag_free(&in);
    kt_bag_free(&mine);
}

/* ------------------------------------------------------------ gradients */

/* What a finite-difference probe evaluates: the loss on fixed inputs. */
typedef struct fd_target {
    const kt_loss *l;
    kd_tensor **student, **teacher, *labels, *indices;
    int64_t epoch;
    bool training;
    kd_rng rng;
} fd_target;

static double fd_value(const fd_target *f, bool want_grad)
{
    return run_loss(f->l, f->student, f->teacher, f->labels, f->indices, f->epoch, 1,
                    f->training, f->rng, want_grad);
}

/* Central differences (step 1e-6) at up to 16 evenly spaced elements of
 * each of the n f64 tensors, against the gradient backward left in them. */
static void fd_check(const char *name, const fd_target *f, int n, kd_tensor *const *probe,
                     const char *const *labels)
{
    const double h = 1e-6;
    double worst = 0;
    char where[96] = "";
    for (int i = 0; i < n; i++) {
        kd_tensor *t = probe[i];
        int64_t numel = kd_tensor_numel(t), stride = numel > 16 ? numel / 16 : 1;
        double *x = kd_tensor_data(t);
        for (int64_t e = 0; e < numel; e += stride) {
            double analytic = t->grad ? kd_tensor_get(t->grad, e) : NAN, keep = x[e];
            x[e] = keep + h;
            double up = fd_value(f, false);
            x[e] = keep - h;
            double down = fd_value(f, false);
            x[e] = keep;
            double numeric = (up - down) / (2 * h);
            double err = fabs(analytic - numeric) / fmax(1, fabs(numeric));
            if (!(err <= worst)) {
                worst = err;
                snprintf(where, sizeof where, "%s[%lld]: %.9g vs %.9g", labels[i], (long long)e,
                         analytic, numeric);
            }
        }
    }
    kt_check(worst <= FD_TOL, name, "worst error %.3g at %s (limit %g)", worst, where, FD_TOL);
}

/* The loss's parameters, as probes. */
static int param_probes(const kt_loss *l, kd_tensor **probe, const char **labels, int max)
{
    kd_tensor_list list = loss_tensors(l);
    int n = 0;
    for (int i = 0; i < list.n && n < max; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        if (nt->flags & KD_TENSOR_PARAM) {
            probe[n] = nt->tensor;
            labels[n++] = nt->name;
        }
    }
    return n;
}

static void test_crd_gradients(void)
{
    const char *name = "f64 gradient vs finite differences: crd (features and heads)";
    const crd_case *cc = &CRD[1];
    kt_loss l;
    fake_host h;
    host_init(&h, cc->n, cc->classes);
    if (!kt_loss_open(name, "crd", cc->params, KD_F64, 5, &l)) {
        free(h.labels);
        return;
    }
    kd_rng data = kd_rng_make(41, 1, 0);
    kd_tensor *indices, *labels;
    draw_indices(cc->batch, &h, &data, &indices, &labels);
    kd_tensor *fs = feature(&cc->s, cc->batch, &data, 0, 2);
    kd_tensor *ft = feature(&cc->t, cc->batch, &data, 0, 2);
    if (bind(&l, 1, &cc->s, &cc->t, &h.services) != KD_OK) {
        kt_fail(name, "bind: %s", kd_last_error());
        goto done;
    }
    /* A training step sets Z and moves the banks; the probes then run the
     * same forward without updating them, so every probe sees one
     * function. */
    fd_target f = {&l, &fs, &ft, labels, indices, 0, true, kd_rng_make(8, 8, 8)};
    fd_value(&f, false);
    f.training = false;
    kd_tensor *probe[8] = {fs};
    const char *probe_names[8] = {"student feature"};
    int n = 1 + param_probes(&l, probe + 1, probe_names + 1, 7);
    kd_tensor_list list = loss_tensors(&l);
    zero_param_grads(&list);
    kd_tensor_set_requires_grad(fs, true);
    if (isnan(fd_value(&f, true)))
        kt_fail(name, "%s", kd_last_error());
    else
        fd_check(name, &f, n, probe, probe_names);
done:
    kd_tensor_free(fs);
    kd_tensor_free(ft);
    kd_tensor_free(indices);
    kd_tensor_free(labels);
    kt_loss_close(&l);
    free(h.labels);
}

static void test_review_gradients(void)
{
    for (int c = 0; c < 2; c++) {
        const review_case *rc = &REVIEW[c == 0 ? 1 : 3];
        char name[160];
        snprintf(name, sizeof name, "f64 gradient vs finite differences: %s", rc->name);
        kt_loss l;
        if (!kt_loss_open(name, "reviewkd", rc->params, KD_F64, 9, &l))
            continue;
        kd_rng data = kd_rng_make(43 + (uint64_t)c, 1, 0);
        kd_tensor *fs[4] = {0}, *ft[4] = {0}, *probe[64];
        const char *probe_names[64];
        int n = 0;
        for (int i = 0; i < rc->levels; i++) {
            fs[i] = feature(&rc->s[i], rc->batch, &data, -1, 2);
            ft[i] = feature(&rc->t[i], rc->batch, &data, -1, 2);
            kd_tensor_set_requires_grad(fs[i], true);
            probe[n] = fs[i];
            probe_names[n++] = "student level";
        }
        if (bind(&l, rc->levels, rc->s, rc->t, NULL) != KD_OK) {
            kt_fail(name, "bind: %s", kd_last_error());
        } else {
            n += param_probes(&l, probe + n, probe_names + n, 64 - n);
            kd_tensor_list list = loss_tensors(&l);
            zero_param_grads(&list);
            /* Training-mode BN normalises by the batch; the running
             * statistics it moves are not read. */
            fd_target f = {&l, fs, ft, NULL, NULL, rc->epoch, true, kd_rng_make(0, 0, 0)};
            if (isnan(fd_value(&f, true)))
                kt_fail(name, "%s", kd_last_error());
            else
                fd_check(name, &f, n, probe, probe_names);
        }
        for (int i = 0; i < rc->levels; i++) {
            kd_tensor_free(fs[i]);
            kd_tensor_free(ft[i]);
        }
        kt_loss_close(&l);
    }
}

/* ------------------------------------------------------------ contracts */

static void test_sampler(void)
{
    fake_host h;
    host_init(&h, 50, 5);
    crd_negatives s;
    bool ok = crd_negatives_init(&s, h.labels, h.n, "test") == KD_OK;
    const int64_t index[3] = {0, 17, 49};
    int64_t a[3 * 41], b[3 * 41], c[3 * 61];
    kd_rng r1 = kd_rng_make(1, 2, 3), r2 = r1, r3 = r1;
    ok = ok && crd_negatives_draw(&s, index, 3, 40, false, &r1, a, "test") == KD_OK &&
         crd_negatives_draw(&s, index, 3, 40, false, &r2, b, "test") == KD_OK &&
         crd_negatives_draw(&s, index, 3, 60, false, &r3, c, "test") == KD_OK;
    bool positive = true, other_class = true, distinct = true, all_drawn = true;
    for (int r = 0; ok && r < 3; r++) {
        const int64_t *row = a + r * 41;
        positive = positive && row[0] == index[r] && c[r * 61] == index[r];
        bool seen[50] = {false};
        for (int j = 1; j <= 40; j++) {
            other_class = other_class && h.labels[row[j]] != h.labels[index[r]];
            distinct = distinct && !seen[row[j]];
            seen[row[j]] = true;
        }
        for (int j = 1; j <= 60; j++)
            other_class = other_class && h.labels[c[r * 61 + j]] != h.labels[index[r]];
        /* K equal to the pool (40 of the 4 other classes) takes all of it */
        for (int i = 0; i < 50; i++)
            all_drawn = all_drawn && (seen[i] || h.labels[i] == h.labels[index[r]]);
    }
    kt_check(ok && positive && other_class && distinct && all_drawn &&
                 !memcmp(a, b, sizeof a),
             "crd sampler: positive first, other classes only, without replacement when K fits "
             "the pool, with it beyond, the same draws from the same rng",
             "ok %d positive %d other-class %d distinct %d whole pool %d: %s", ok, positive,
             other_class, distinct, all_drawn, kd_last_error());
    /* relax: the positive is any image of the class, itself included */
    bool same_class = true, varied = false;
    for (int t = 0; t < 40; t++) {
        int64_t row[3 * 5];
        kd_rng rr = kd_rng_make(5, 6, (uint64_t)t);
        same_class = same_class &&
                     crd_negatives_draw(&s, index, 3, 4, true, &rr, row, "test") == KD_OK;
        for (int r = 0; same_class && r < 3; r++) {
            same_class = h.labels[row[r * 5]] == h.labels[index[r]];
            varied = varied || row[r * 5] != index[r];
        }
    }
    kt_check(same_class && varied, "crd sampler: relax draws positives of the sample's class",
             "same class %d, any other than the sample %d: %s", same_class, varied,
             kd_last_error());
    const int64_t bad = 50;
    kt_check(crd_negatives_draw(&s, &bad, 1, 4, false, &r1, a, "crd") == KD_ERR_INVALID &&
                 strstr(kd_last_error(), "crd: dataset index 50"),
             "crd sampler: an index outside the training set is an error", "%s",
             kd_last_error());
    crd_negatives_free(&s);
    free(h.labels);
}

static void test_flags_and_errors(void)
{
    fake_host h;
    host_init(&h, 30, 3);
    kt_loss crd, rev, rev2;
    bool ok = kt_loss_open("crd opens", "crd", "{\"nce_k\": 4}", KD_F64, 1, &crd);
    ok = kt_loss_open("reviewkd opens", "reviewkd", "{\"student_taps\": [\"stage3\", \"pre_logits\"], "
                   "\"teacher_taps\": [\"stage3\", \"pre_logits\"]}", KD_F64, 1, &rev) && ok;
    ok = kt_loss_open("reviewkd opens again", "reviewkd", "{\"student_taps\": [\"stage3\"], "
                   "\"teacher_taps\": [\"stage3\"]}", KD_F64, 1, &rev2) && ok;
    if (!ok)
        goto close;
    const tap v8 = {1, {8}}, map = {3, {4, 2, 2}};
    kd_host_services no_labels = h.services;
    no_labels.train_labels = NULL;
    kt_expect_error("crd bind: no training labels is an error",
                 bind(&crd, 1, &v8, &v8, &no_labels), "crd:", "training labels");
    kd_host_services two = h.services;
    two.world_size = 2;
    /* over several processes the banks take the global batch (test_dist) */
    kt_check(bind(&crd, 1, &v8, &v8, &two) == KD_OK, "crd bind: 2 processes are accepted", "%s",
             kd_last_error());
    kd_host_services one = h.services;
    one.train_length = 1;
    kt_expect_error("crd bind: a one-sample training set is an error",
                 bind(&crd, 1, &v8, &v8, &one), "crd:", "at least 2 samples");
    kt_check(bind(&crd, 1, &v8, &map, &h.services) == KD_OK, "crd bind: a map is flattened",
             "%s", kd_last_error());
    kd_tensor_list list = loss_tensors(&crd);
    bool flags = list.n == 7;
    for (int i = 0; flags && i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        bool bank = strstr(nt->name, "memory_") || !strcmp(nt->name, "nce_z");
        flags = bank ? nt->flags == KD_TENSOR_BUFFER : nt->flags == KD_TENSOR_PARAM;
        if (!strcmp(nt->name, "memory_s"))
            flags = flags && nt->tensor->shape[0] == 30 && nt->tensor->shape[1] == 128;
        if (!strcmp(nt->name, "embed_t.weight"))
            flags = flags && nt->tensor->shape[0] == 128 && nt->tensor->shape[1] == 16;
    }
    kt_check(flags, "crd tensors: heads are parameters, banks and Z buffers, sized from the "
             "taps and the training set", "%d tensors", list.n);

    kd_rng rng = kd_rng_make(1, 1, 1);
    kd_tensor *indices, *labels;
    draw_indices(2, &h, &rng, &indices, &labels);
    kd_tensor *fs = feature(&v8, 2, &rng, 0, 1), *ft = feature(&map, 2, &rng, 0, 1);
    double v = run_loss(&crd, &fs, &ft, labels, NULL, 0, 0, true, rng, false);
    kt_expect_error("crd forward: no dataset indices is an error",
                 isnan(v) ? kd_last_status() : KD_OK, "crd:", "dataset indices");
    v = run_loss(&crd, &fs, &ft, labels, indices, 0, 0, false, rng, false);
    kt_expect_error("crd forward: Z unset outside training is an error",
                 isnan(v) ? kd_last_status() : KD_OK, "crd:", "first training step");
    kd_tensor_free(fs);
    kd_tensor_free(ft);
    kd_tensor_free(indices);
    kd_tensor_free(labels);

    const tap tokens[2] = {{2, {5, 4}}, {1, {4}}}, maps[2] = {{3, {4, 2, 2}}, {1, {4}}};
    kt_expect_error("reviewkd bind: a token tap names both taps and shapes",
                 bind(&rev, 2, tokens, maps, NULL), "tap 'stage3' [1, 5, 4]",
                 "tap 'stage3' [1, 4, 2, 2]");
    kt_check(bind(&rev2, 1, maps, maps, NULL) == KD_OK, "reviewkd bind: one map level", "%s",
             kd_last_error());
    kd_tensor_list rl = loss_tensors(&rev2);
    bool names = rl.n == 10;
    for (int i = 0; names && i < rl.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&rl, i);
        bool stat = strstr(nt->name, "running_") != NULL;
        names = !strncmp(nt->name, "abfs.0.", 7) &&
                nt->flags == (stat ? KD_TENSOR_BUFFER : KD_TENSOR_PARAM);
    }
    kt_check(names, "reviewkd tensors: one unfused block, BN statistics as buffers",
             "%d tensors", rl.n);
close:
    kt_loss_close(&crd);
    kt_loss_close(&rev);
    kt_loss_close(&rev2);
    free(h.labels);
}

static void test_param_errors(void)
{
    static const struct {
        const char *provider, *json;
    } bad[] = {
        {"crd", "{\"nce_t\": 0}"},
        {"crd", "{\"nce_momentum\": 1.5}"},
        {"crd", "{\"feat_dim\": 0}"},
        {"crd", "{\"nce_k\": 0}"},
        {"reviewkd", "{\"first_epoch\": 2}"},
        {"reviewkd", "{\"warmup_epochs\": -1}"},
        {"reviewkd", "{\"mid_channels\": -4}"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s refuses %s", bad[k].provider, bad[k].json);
        const kd_vtable_header *vt;
        const kd_registry_entry *entry = kt_provider(KD_KIND_LOSS, bad[k].provider, &vt);
        kd_params *p = entry ? kt_params(entry, bad[k].json) : NULL;
        kt_check(entry && !p, name, "%s", entry ? "accepted" : "provider missing");
        kd_params_free(p);
    }
    kt_loss l;
    const kd_vtable_header *vt;
    const kd_registry_entry *entry = kt_provider(KD_KIND_LOSS, "reviewkd", &vt);
    kd_params *p = entry ? kt_params(entry, "{\"teacher_taps\": [\"stage3\"]}") : NULL;
    kd_status st = KD_OK;
    if (p) {
        kd_create_args args = kt_create_args(entry, p, 1);
        st = ((const kd_loss_vtable *)vt)->create(&args, &l.self);
        if (st == KD_OK)
            ((const kd_loss_vtable *)vt)->destroy(l.self);
    }
    kd_params_free(p);
    kt_expect_error("reviewkd create: 4 student taps, 1 teacher tap", p ? st : KD_OK,
                 "reviewkd:", "same number of levels");
}

/* ------------------------------------------------------------ jobs */

static int kdengine(char **out, const char *args)
{
    char root[512], cmd[4096];
    kt_source_path("", root, sizeof root);
    snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine %s 2>&1", root,
             kt_plugin_dir(), KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

static bool same_files(const char *a_path, const char *b_path, char *why, size_t size)
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

/* The banks are in the checkpoint, their values moved from the start, and
 * no optimizer state belongs to them. */
static bool banks_saved(const char *path, char *why, size_t size)
{
    kd_safetensors *f = NULL;
    if (kd_safetensors_open(path, &f) != KD_OK) {
        snprintf(why, size, "%s", kd_last_error());
        return false;
    }
    bool ok = kd_safetensors_find(f, "loss.1.memory_s") && kd_safetensors_find(f, "loss.1.memory_t") &&
              kd_safetensors_find(f, "loss.1.nce_z") && kd_safetensors_find(f, "loss.1.embed_s.weight");
    for (int i = 0; ok && i < kd_safetensors_count(f); i++) {
        const char *name = kd_safetensors_at(f, i)->name;
        if (!strncmp(name, "optim.", 6) && (strstr(name, "memory_") || strstr(name, "nce_z"))) {
            snprintf(why, size, "optimizer state %s", name);
            ok = false;
        }
    }
    kd_tensor *z = ok ? kd_safetensors_load(f, "loss.1.nce_z", KD_F64) : NULL;
    ok = ok && z && kd_tensor_get(z, 0) > 0 && kd_tensor_get(z, 1) > 0;
    kd_tensor_free(z);
    if (!ok && !why[0])
        snprintf(why, size, "banks, Z or heads missing or Z unset");
    kd_safetensors_close(f);
    return ok;
}

/* The example jobs, shortened to 2 steps an epoch on 128 images. */
static const char *const SHORT = "--set data.train.subset=128 --set data.train.batch_size=64 "
                                 "--set data.val.subset=100";

static void example_args(char *buf, size_t size, const char *job, int epochs, const char *out)
{
    snprintf(buf, size, "run examples/fashion-mnist/%s.json %s --set schedule.epochs=%d "
             "--set output=%s/%s", job, SHORT, epochs, jobdir, out);
}

/* `export` of a CRD run's checkpoint writes the student alone: no head,
 * bank or Z. */
static void test_crd_export(const char *ckpt)
{
    char args[2048], path[128], *out = NULL;
    snprintf(path, sizeof path, "%s/crd-student.safetensors", jobdir);
    snprintf(args, sizeof args, "export examples/fashion-mnist/crd.json --weights %s --out %s",
             ckpt, path);
    int rc = kdengine(&out, args);
    kd_safetensors *f = NULL;
    bool student_only = rc == 0 && kd_safetensors_open(path, &f) == KD_OK &&
                        kd_safetensors_find(f, "conv1.weight") && kd_safetensors_find(f, "fc.bias");
    for (int i = 0; student_only && i < kd_safetensors_count(f); i++) {
        const char *name = kd_safetensors_at(f, i)->name;
        student_only = !strstr(name, "memory_") && !strstr(name, "embed_") &&
                       !strstr(name, "nce_z") && strncmp(name, "loss.", 5) != 0;
    }
    kd_safetensors_close(f);
    kt_check(student_only, "crd: export leaves the heads, banks and Z out", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
}

/* A CRD run stopped by SIGTERM once its first checkpoint exists (the
 * runner finishes the step it is in, mid-epoch, and saves), then resumed,
 * against the uninterrupted run at ckpt. */
static void test_crd_resume(const char *ckpt)
{
    const char *name = "crd: a run stopped by SIGTERM mid-epoch and resumed ends with the same "
                       "tensors, banks and Z included, as an uninterrupted one";
    char args[1024], root[512], cmd[2048], first[512], end[512], why[256] = "";
    kt_source_path("", root, sizeof root);
    example_args(args, sizeof args, "crd", 2, "crd-stopped");
    snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s exec %s/kdengine %s "
             ">%s/stopped.log 2>&1", root, kt_plugin_dir(), KD_BUILDDIR, args, jobdir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    snprintf(first, sizeof first, "%s/crd-stopped/checkpoints/step-000000002.safetensors",
             jobdir);
    for (int i = 0; i < 6000 && access(first, F_OK) != 0; i++)
        usleep(10 * 1000);
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 0) {
        kt_skip(name, "the run finished before the signal (machine too fast for this case)");
        return;
    }
    char *out = NULL;
    strcat(args, " --resume");
    int rc = kdengine(&out, args);
    bool resumed = rc == 0 && out && strstr(out, "resuming from") && strstr(out, "done: 4 steps");
    snprintf(end, sizeof end, "%s/crd-stopped/checkpoints/step-000000004.safetensors", jobdir);
    kt_check(code == 3 && resumed && same_files(ckpt, end, why, sizeof why) &&
                 banks_saved(end, why, sizeof why),
             name, "stopped with exit %d (want 3), resumed exit %d: %s; %s", code, rc, why,
             out ? out : "(none)");
    free(out);
}

static void test_examples(void)
{
    if (access(FMNIST_TRAIN, R_OK) != 0) {
        kt_skip("example jobs", "no Fashion-MNIST (scripts/setup installs it)");
        return;
    }
    static const struct {
        const char *job;
        int epochs;
    } runs[] = {{"crd", 2}, {"reviewkd", 1}};
    for (int i = 0; i < 2; i++) {
        char args[1024], name[128], want[32], *out = NULL;
        example_args(args, sizeof args, runs[i].job, runs[i].epochs, runs[i].job);
        int rc = kdengine(&out, args);
        snprintf(want, sizeof want, "done: %d steps", 2 * runs[i].epochs);
        snprintf(name, sizeof name, "examples/fashion-mnist/%s.json runs %d steps", runs[i].job,
                 2 * runs[i].epochs);
        kt_check(rc == 0 && out && strstr(out, want), name, "exit %d: %s", rc,
                 out ? out : "(none)");
        free(out);
    }
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/crd/checkpoints/step-000000004.safetensors", jobdir);
    test_crd_export(ckpt);
    test_crd_resume(ckpt);
}

int main(void)
{
    snprintf(jobdir, sizeof jobdir, "/tmp/kdcrdjob.XXXXXX");
    if (!mkdtemp(jobdir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    test_parity();
    test_crd_gradients();
    test_review_gradients();
    test_sampler();
    test_flags_and_errors();
    test_param_errors();
    test_examples();
    kt_remove_tree(jobdir);
    kt_plugins_close();
    return kt_finish();
}
