/* Building a job's plugin instances and wiring them together. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <kdengine/kdengine.h>

#include "checkpoint.h"
#include "label_store.h"
#include "layer_decay.h"
#include "session.h"
#include "unlabeled_mix.h"
#include "dist.h"
#include "teachers.h"
#include "threads.h"

/* Seeds of the instances: the job's seed mixed with a role number, so the
 * student's weights do not depend on how many losses the job has. */
enum { ROLE_STUDENT = 1, ROLE_TEACHER, ROLE_OPTIM, ROLE_SCHED, ROLE_TRAIN, ROLE_VAL,
       ROLE_UNLABELED, ROLE_LOSS = 64, ROLE_TEACHERS = 1024 /* + i: teachers after the first */ };

static uint64_t role_seed(uint64_t seed, uint64_t role)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + role * 0xD1B54A32D192ED03ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static kd_status load_vtable(const kd_job *job, const kd_registry_entry *e,
                             const kd_vtable_header **vt, const void **provider_data)
{
    const kd_plugin_provider *p;
    kd_status st = kd_registry_load(job->registry, e, vt, &p);
    if (st == KD_OK)
        *provider_data = p->user_data;
    return st;
}

static kd_create_args create_args(const kd_job *job, const kd_registry_entry *e,
                                  const void *provider_data, const kd_params *params,
                                  uint64_t role, kd_dtype dtype)
{
    return (kd_create_args){.size = sizeof(kd_create_args),
                            .params = params,
                            .seed = role_seed(job->seed, role),
                            .device = KD_CPU,
                            .dtype = dtype,
                            .provider = e->name,
                            .provider_data = provider_data};
}

/* A plugin's list in the host's layout: element i read with the plugin's
 * stride, fields the plugin's struct lacks zero. Owned by the caller. */
static kd_status copy_elements(const void *items, int n, uint32_t elem_size, size_t host_size,
                               size_t min_size, const char *who, void **out)
{
    *out = NULL;
    if (n < 0 || (n > 0 && !items))
        return kd_error(KD_ERR_FORMAT, "%s: a list of %d items at %p", who, n, items);
    if (n > 0 && elem_size < min_size)
        return kd_error(KD_ERR_FORMAT, "%s: list elements of %u bytes, less than ABI %d's %zu",
                        who, (unsigned)elem_size, KD_PLUGIN_ABI, min_size);
    char *copy = calloc((size_t)n + 1, host_size);
    if (!copy)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", who);
    size_t take = elem_size < host_size ? elem_size : host_size;
    for (int i = 0; i < n; i++)
        memcpy(copy + (size_t)i * host_size, (const char *)items + (size_t)i * elem_size, take);
    *out = copy;
    return KD_OK;
}

kd_status kd_session_copy_tensors(const kd_tensor_list *l, const char *who,
                                  kd_named_tensor **out)
{
    kd_status st = copy_elements(l->items, l->n, l->elem_size, sizeof(kd_named_tensor),
                                 sizeof(kd_named_tensor), who, (void **)out);
    for (int i = 0; st == KD_OK && i < l->n; i++)
        if (!(*out)[i].name || !(*out)[i].tensor)
            st = kd_error(KD_ERR_FORMAT, "%s: tensor %d has no %s", who, i,
                          (*out)[i].name ? "tensor" : "name");
    return st;
}

static kd_status copy_taps(const kd_tap_list *l, const char *who, kd_tap_info **out)
{
    kd_status st = copy_elements(l->items, l->n, l->elem_size, sizeof(kd_tap_info),
                                 sizeof(kd_tap_info), who, (void **)out);
    for (int i = 0; st == KD_OK && i < l->n; i++)
        if (!(*out)[i].name)
            st = kd_error(KD_ERR_FORMAT, "%s: tap %d has no name", who, i);
    return st;
}

static int find_tap(const kd_model_run *m, const char *name)
{
    for (int i = 0; i < m->n_taps; i++)
        if (!strcmp(m->taps[i].name, name))
            return i;
    return -1;
}

static kd_status open_model(const kd_job *job, const kd_job_model *spec, uint64_t role,
                            kd_model_run *m)
{
    const kd_vtable_header *h;
    const void *data;
    kd_status st = load_vtable(job, spec->entry, &h, &data);
    if (st != KD_OK)
        return st;
    m->spec = spec;
    m->vt = (const kd_model_vtable *)h;
    m->dtype = job->dtype;
    kd_create_args args = create_args(job, spec->entry, data, spec->params, role, job->dtype);
    st = m->vt->create(&args, &m->self);
    kd_tensor_list tl = {0};
    kd_tap_list taps = {0};
    if (st == KD_OK)
        st = m->vt->tensors(m->self, &tl);
    if (st == KD_OK)
        st = m->vt->taps(m->self, &taps);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s (model '%s')", spec->path, spec->entry->name);
    char who[128];
    snprintf(who, sizeof who, "%s (model '%s')", spec->path, spec->entry->name);
    if ((st = kd_session_copy_tensors(&tl, who, &m->tensors)) != KD_OK ||
        (st = copy_taps(&taps, who, &m->taps)) != KD_OK)
        return st;
    m->n_tensors = tl.n;
    m->n_taps = taps.n;
    m->logits = find_tap(m, "logits");
    if (m->n_taps < 1 || m->logits < 0)
        return kd_error(KD_ERR_FORMAT, "%s: model '%s' has no \"logits\" tap", spec->path,
                        spec->entry->name);
    m->want = calloc((size_t)m->n_taps, sizeof *m->want);
    m->out = calloc((size_t)m->n_taps, sizeof *m->out);
    if (!m->want || !m->out)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", spec->path);
    m->want[m->logits] = true;
    if (spec->weights) {
        st = kd_weights_load(spec->weights, spec->path, m->n_tensors, m->tensors,
                             m->vt->filter_weight, m->self);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

static void close_model(kd_model_run *m)
{
    if (m->vt && m->self)
        m->vt->destroy(m->self);
    free(m->tensors);
    free(m->taps);
    free(m->want);
    free(m->out);
    memset(m, 0, sizeof *m);
}

/* data.train.unlabeled: the pool's instance, and d's dataset replaced by
 * the mix of both (unlabeled_mix.h), d->info by the mix's. */
static kd_status open_unlabeled(const kd_job *job, const kd_job_data *spec, kd_data_run *d)
{
    char where[64];
    snprintf(where, sizeof where, "%s.unlabeled", spec->path);
    const kd_vtable_header *h;
    const void *data;
    kd_status st = load_vtable(job, spec->unlabeled, &h, &data);
    if (st != KD_OK)
        return st;
    const kd_dataset_vtable *pool_vt = (const kd_dataset_vtable *)h;
    kd_create_args args = create_args(job, spec->unlabeled, data, spec->unlabeled_params,
                                      ROLE_UNLABELED, KD_F32);
    void *pool = NULL;
    st = pool_vt->create(&args, &pool);
    if (st != KD_OK) {
        if (pool)
            pool_vt->destroy(pool);
        return kd_error_wrap(st, "%s", where);
    }
    const kd_dataset_vtable *mix_vt;
    kd_unlabeled_mix *mix;
    /* the mix takes both instances over, also when it fails */
    st = kd_unlabeled_mix_open(d->vt, d->self, pool_vt, pool, "data.train.unlabeled", &mix_vt,
                               &mix);
    d->vt = mix_vt;
    d->self = mix;
    if (st == KD_OK)
        st = d->vt->info(d->self, &d->info);
    return st;
}

static kd_status open_data(const kd_job *job, const kd_job_data *spec, uint64_t role,
                           kd_data_run *d)
{
    const kd_vtable_header *h;
    const void *data;
    d->spec = spec;
    kd_status st = load_vtable(job, spec->dataset, &h, &data);
    if (st != KD_OK)
        return st;
    d->vt = (const kd_dataset_vtable *)h;
    kd_create_args args = create_args(job, spec->dataset, data, spec->dataset_params, role,
                                      KD_F32);
    st = d->vt->create(&args, &d->self);
    if (st == KD_OK)
        st = d->vt->info(d->self, &d->info);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s.dataset", spec->path);
    if (d->info.length < 1)
        return kd_error(KD_ERR_INVALID, "%s.dataset: it is empty", spec->path);
    if (spec->unlabeled && (st = open_unlabeled(job, spec, d)) != KD_OK)
        return st;
    if (spec->subset > d->info.length)
        return kd_error(KD_ERR_INVALID, "%s.subset: %lld, but the dataset has %lld samples",
                        spec->path, (long long)spec->subset, (long long)d->info.length);
    d->tvt = calloc((size_t)spec->n_transforms + 1, sizeof *d->tvt);
    d->tself = calloc((size_t)spec->n_transforms + 1, sizeof *d->tself);
    if (!d->tvt || !d->tself)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", spec->path);
    for (int i = 0; i < spec->n_transforms; i++) {
        st = load_vtable(job, spec->transforms[i], &h, &data);
        if (st != KD_OK)
            return st;
        d->tvt[i] = (const kd_transform_vtable *)h;
        kd_create_args targs = create_args(job, spec->transforms[i], data,
                                           spec->transform_params[i], role, KD_F32);
        st = d->tvt[i]->create(&targs, &d->tself[i]);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s.transforms[%d]", spec->path, i);
    }
    /* one sample through the pipeline gives the shape batches will have */
    kd_sample a = {0}, b = {0};
    int64_t label;
    st = d->vt->get(d->self, 0, &a, &label);
    if (st == KD_OK && label == KD_LABEL_NONE)
        st = kd_error(KD_ERR_INVALID, "the dataset's samples have no labels (an unlabeled pool "
                      "belongs in data.train.unlabeled)");
    kd_rng rng = kd_rng_make(job->seed, 0, 0);
    for (int i = 0; st == KD_OK && i < spec->n_transforms; i++) {
        st = d->tvt[i]->apply(d->tself[i], &a, &b, &rng);
        kd_sample t = a;
        a = b;
        b = t;
    }
    if (st == KD_OK && a.dtype != KD_F32)
        st = kd_error(KD_ERR_INVALID, "%s.transforms: the last transform must produce a "
                      "tensor (to_tensor or normalize)", spec->path);
    d->channels = a.channels;
    d->height = a.height;
    d->width = a.width;
    free(a.data);
    free(b.data);
    return st == KD_OK ? st : kd_error_wrap(st, "%s: sample 0", spec->path);
}

static void close_data(kd_data_run *d)
{
    for (int i = 0; d->spec && i < d->spec->n_transforms; i++)
        if (d->tvt && d->tvt[i] && d->tself[i])
            d->tvt[i]->destroy(d->tself[i]);
    if (d->vt && d->self)
        d->vt->destroy(d->self);
    free(d->tvt);
    free(d->tself);
    memset(d, 0, sizeof *d);
}

kd_status kd_session_open_data(const kd_job *job, const kd_job_data *spec, kd_data_run *d)
{
    return open_data(job, spec, ROLE_VAL, d);
}

void kd_session_close_data(kd_data_run *d)
{
    close_data(d);
}

/* Runs a batch of one zero image through m under no grad: the tap shapes,
 * and (with counters reset around it) MACs per image. */
static kd_status probe_taps(kd_model_run *m, const kd_data_run *d, kd_tap_shape *shapes)
{
    int64_t in_shape[4] = {1, d->channels, d->height, d->width};
    bool saved = kd_set_grad_enabled(false);
    kd_scope_begin();
    kd_tensor *x = kd_tensor_zeros(m->dtype, KD_CPU, 4, in_shape);
    bool *all = calloc((size_t)m->n_taps, sizeof *all);
    kd_status st = x && all ? KD_OK : kd_error(KD_ERR_NOMEM, "probe: out of memory");
    for (int i = 0; all && i < m->n_taps; i++)
        all[i] = true;
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args args = {sizeof args, x, false, kd_rng_make(0, 0, 0), all, m->out};
    kd_macs_take();
    if (st == KD_OK)
        st = m->vt->forward(m->self, &args);
    m->probe_macs = kd_macs_take();
    for (int i = 0; st == KD_OK && i < m->n_taps; i++) {
        if (!m->out[i]) {
            st = kd_error(KD_ERR_FORMAT, "%s: model '%s' did not fill tap '%s'", m->spec->path,
                          m->spec->entry->name, m->taps[i].name);
            break;
        }
        shapes[i].ndim = m->out[i]->ndim;
        memcpy(shapes[i].shape, m->out[i]->shape, sizeof shapes[i].shape);
    }
    if (st != KD_OK && m->out)
        st = kd_error_wrap(st, "%s: a %dx%dx%d input", m->spec->path, d->channels, d->height,
                           d->width);
    free(all);
    kd_scope_end();
    kd_set_grad_enabled(saved);
    return st;
}

static kd_status resolve_taps(const kd_model_run *m, const char *loss_path, const char *who,
                              int n, const char *const *names, int *idx)
{
    for (int i = 0; i < n; i++) {
        idx[i] = find_tap(m, names[i]);
        if (idx[i] >= 0)
            continue;
        char list[512];
        size_t used = 0;
        list[0] = '\0';
        for (int t = 0; t < m->n_taps && used < sizeof list; t++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", t ? ", " : "",
                                     m->taps[t].name);
        return kd_error(KD_ERR_INVALID, "%s: reads the %s's tap '%s', which model '%s' does "
                        "not have (it has: %s)", loss_path, who, names[i],
                        m->spec->entry->name, list);
    }
    return KD_OK;
}

/* The teacher a loss reads: the one it names, else the job's only one. */
static kd_status loss_teacher(const kd_session *s, kd_loss_run *l)
{
    l->teacher = l->spec->teacher;
    if (l->needs.n_teacher == 0 && l->teacher >= 0)
        return kd_error(KD_ERR_INVALID, "%s.teacher: loss '%s' reads no teacher", l->spec->path,
                        l->spec->entry->name);
    if (l->needs.n_teacher == 0 || l->teacher >= 0)
        return KD_OK;
    if (s->n_teachers == 0)
        return kd_error(KD_ERR_INVALID, "%s: loss '%s' distils from a teacher, but the job has "
                        "none (add \"teacher\", or drop this loss to train alone)",
                        l->spec->path, l->spec->entry->name);
    if (s->n_teachers > 1)
        return kd_error(KD_ERR_INVALID, "%s: loss '%s' reads a teacher and the job has %d: name "
                        "one with \"teacher\" (e.g. \"%s\")", l->spec->path,
                        l->spec->entry->name, s->n_teachers, s->teachers[0].spec->name);
    l->teacher = 0;
    return KD_OK;
}

/* An ensemble has logits only: every tap the loss reads must be them. */
static kd_status ensemble_taps(const kd_teacher_run *t, const kd_loss_run *l)
{
    for (int k = 0; k < l->needs.n_teacher; k++)
        if (strcmp(l->needs.teacher[k], "logits") != 0)
            return kd_error(KD_ERR_INVALID, "%s: reads the teacher's tap '%s', but teacher '%s' "
                            "is an ensemble (it has logits only)", l->spec->path,
                            l->needs.teacher[k], t->spec->name);
    return KD_OK;
}

static kd_status open_loss(kd_session *s, int i, const kd_tap_shape *student_shapes)
{
    const kd_job *job = s->job;
    kd_loss_run *l = &s->losses[i];
    l->spec = &job->losses[i];
    snprintf(l->prefix, sizeof l->prefix, "loss.%d.", i);
    const kd_vtable_header *h;
    const void *data;
    kd_status st = load_vtable(job, l->spec->entry, &h, &data);
    if (st != KD_OK)
        return st;
    l->vt = (const kd_loss_vtable *)h;
    kd_create_args args = create_args(job, l->spec->entry, data, l->spec->params,
                                      ROLE_LOSS + (uint64_t)i, job->dtype);
    st = l->vt->create(&args, &l->self);
    if (st == KD_OK)
        st = l->vt->needs(l->self, &l->needs);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s (loss '%s')", l->spec->path, l->spec->entry->name);
    if ((st = loss_teacher(s, l)) != KD_OK)
        return st;
    const kd_teacher_run *t = l->teacher >= 0 ? &s->teachers[l->teacher] : NULL;
    const kd_model_run *tm = t && t->model ? t->model
                                           : t ? s->teachers[t->spec->members[0]].model : NULL;
    int ns = l->needs.n_student, nt = l->needs.n_teacher;
    l->student_taps = calloc((size_t)ns + 1, sizeof(int));
    l->teacher_taps = calloc((size_t)nt + 1, sizeof(int));
    l->student_in = calloc((size_t)ns + 1, sizeof(kd_tensor *));
    l->teacher_in = calloc((size_t)nt + 1, sizeof(kd_tensor *));
    kd_tap_shape *shapes = calloc((size_t)(ns + nt) + 1, sizeof *shapes);
    kd_tap_info *infos = calloc((size_t)(ns + nt) + 1, sizeof *infos);
    if (!l->student_taps || !l->teacher_taps || !l->student_in || !l->teacher_in || !shapes ||
        !infos) {
        free(shapes);
        free(infos);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", l->spec->path);
    }
    st = resolve_taps(&s->student, l->spec->path, "student", ns, l->needs.student,
                      l->student_taps);
    if (st == KD_OK && t && t->model)
        st = resolve_taps(t->model, l->spec->path, "teacher", nt, l->needs.teacher,
                          l->teacher_taps);
    else if (st == KD_OK && t && (st = ensemble_taps(t, l)) == KD_OK)
        for (int k = 0; k < nt; k++) /* its first member's logits tap describes them */
            l->teacher_taps[k] = tm->logits;
    for (int k = 0; st == KD_OK && k < ns; k++) {
        s->student.want[l->student_taps[k]] = true;
        shapes[k] = student_shapes[l->student_taps[k]];
        infos[k] = s->student.taps[l->student_taps[k]];
    }
    for (int k = 0; st == KD_OK && k < nt; k++) {
        if (t->model)
            t->model->want[l->teacher_taps[k]] = true;
        shapes[ns + k] = t->model ? t->shapes[l->teacher_taps[k]] : t->shapes[0];
        infos[ns + k] = tm->taps[l->teacher_taps[k]];
    }
    s->active_teacher = l->teacher;
    if (st == KD_OK && l->vt->bind) {
        kd_bind_args bind = {sizeof bind, shapes, shapes + ns, infos, infos + ns, &s->services};
        st = l->vt->bind(l->self, &bind);
        if (st != KD_OK)
            st = kd_error_wrap(st, "%s (loss '%s')", l->spec->path, l->spec->entry->name);
    }
    free(shapes);
    free(infos);
    if (st == KD_OK && l->vt->tensors) {
        kd_tensor_list tl = {0};
        char who[64];
        snprintf(who, sizeof who, "%s (loss '%s')", l->spec->path, l->spec->entry->name);
        st = l->vt->tensors(l->self, &tl);
        if (st == KD_OK)
            st = kd_session_copy_tensors(&tl, who, &l->tensors);
        else
            st = kd_error_wrap(st, "%s", who);
        l->n_tensors = st == KD_OK ? tl.n : 0;
    }
    return st;
}

static void close_loss(kd_loss_run *l)
{
    if (l->vt && l->self)
        l->vt->destroy(l->self);
    free(l->student_taps);
    free(l->teacher_taps);
    free(l->student_in);
    free(l->teacher_in);
    free(l->tensors);
    for (int i = 0; l->param_names && i < l->n_tensors; i++)
        free(l->param_names[i]);
    free(l->param_names);
}

/* Samples an epoch of data.train draws from (its subset), 0 without it. */
static int64_t train_samples(const kd_session *s)
{
    if (!s->train.vt)
        return 0;
    return s->job->train.subset ? s->job->train.subset : s->train.info.length;
}

int64_t kd_session_batches_per_epoch(const kd_session *s)
{
    int64_t n = train_samples(s);
    int64_t b = s->job->train.batch_size;
    int64_t batches = s->job->train.drop_last ? n / b : (n + b - 1) / b;
    return batches > 0 ? batches : 1;
}

int64_t kd_session_steps_per_epoch(const kd_session *s)
{
    int64_t a = s->job->accumulate_steps;
    return (kd_session_batches_per_epoch(s) + a - 1) / a;
}

static kd_status check_logits(const kd_session *s, const kd_tap_shape *student)
{
    const kd_tap_shape *ls = &student[s->student.logits];
    if (ls->ndim != 2)
        return kd_error(KD_ERR_FORMAT, "student: the logits tap of '%s' is not [N, classes]",
                        s->job->student.entry->name);
    int classes = s->train.vt ? s->train.info.num_classes : s->val.info.num_classes;
    if (classes > 0 && ls->shape[1] != classes)
        return kd_error(KD_ERR_INVALID, "student: '%s' predicts %lld classes, the data has %d: "
                        "set num_classes to %d", s->job->student.entry->name,
                        (long long)ls->shape[1], classes, classes);
    return KD_OK;
}

/* The trainable tensors: the student's under their own names, each
 * loss's under "loss.<i>.", so two losses that both own "proj.weight" have
 * distinct optimizer state. */
static kd_status collect_params(kd_session *s)
{
    int n = 0;
    for (int i = 0; i < s->student.n_tensors; i++)
        n += (s->student.tensors[i].flags & KD_TENSOR_PARAM) != 0;
    for (int l = 0; l < s->n_losses; l++)
        for (int i = 0; i < s->losses[l].n_tensors; i++)
            n += (s->losses[l].tensors[i].flags & KD_TENSOR_PARAM) != 0;
    s->params = calloc((size_t)n + 1, sizeof *s->params);
    if (!s->params)
        return kd_error(KD_ERR_NOMEM, "optim: out of memory");
    for (int i = 0; i < s->student.n_tensors; i++)
        if (s->student.tensors[i].flags & KD_TENSOR_PARAM)
            s->params[s->n_params++] = s->student.tensors[i];
    for (int l = 0; l < s->n_losses; l++) {
        kd_loss_run *lr = &s->losses[l];
        lr->param_names = calloc((size_t)lr->n_tensors + 1, sizeof *lr->param_names);
        if (!lr->param_names)
            return kd_error(KD_ERR_NOMEM, "optim: out of memory");
        for (int i = 0; i < lr->n_tensors; i++) {
            if (!(lr->tensors[i].flags & KD_TENSOR_PARAM))
                continue;
            size_t len = strlen(lr->tensors[i].name) + 32;
            if (!(lr->param_names[i] = malloc(len)))
                return kd_error(KD_ERR_NOMEM, "optim: out of memory");
            snprintf(lr->param_names[i], len, "loss.%d.%s", l, lr->tensors[i].name);
            s->params[s->n_params] = lr->tensors[i];
            s->params[s->n_params++].name = lr->param_names[i];
        }
    }
    for (int i = 0; i < s->n_params; i++)
        kd_tensor_set_requires_grad(s->params[i].tensor, true);
    return KD_OK;
}

/* With optim.layer_decay, each parameter's lr multiplier in s->params
 * order: the student's from its layers, the losses' 1. */
static kd_status collect_lr_scales(kd_session *s)
{
    const kd_model_run *m = &s->student;
    double *all = malloc((size_t)m->n_tensors * sizeof *all);
    s->lr_scales = calloc((size_t)s->n_params + 1, sizeof *s->lr_scales);
    kd_status st = all && s->lr_scales ? KD_OK : kd_error(KD_ERR_NOMEM, "optim: out of memory");
    if (st == KD_OK)
        st = kd_layer_decay_scales(m->vt, m->self, s->job->student.entry->name, m->n_tensors,
                                   m->tensors, s->job->layer_decay, all);
    int k = 0;
    for (int i = 0; st == KD_OK && i < m->n_tensors; i++)
        if (m->tensors[i].flags & KD_TENSOR_PARAM)
            s->lr_scales[k++] = all[i];
    while (st == KD_OK && k < s->n_params)
        s->lr_scales[k++] = 1.0;
    free(all);
    return st;
}

static kd_status open_optimizer(kd_session *s)
{
    const kd_job *job = s->job;
    kd_status st = collect_params(s);
    const kd_vtable_header *h;
    const void *data;
    if (st == KD_OK && job->layer_decay > 0)
        st = collect_lr_scales(s);
    if (st == KD_OK)
        st = load_vtable(job, job->optim, &h, &data);
    if (st != KD_OK)
        return st;
    s->optim_vt = (const kd_optimizer_vtable *)h;
    kd_create_args args = create_args(job, job->optim, data, job->optim_params, ROLE_OPTIM,
                                      job->dtype);
    args.lr_scales = s->lr_scales;
    kd_tensor_list params;
    KD_LIST_SET(&params, s->params, s->n_params);
    st = s->optim_vt->create(&args, &params, &s->optim);
    kd_tensor_list state = {0};
    if (st == KD_OK)
        st = s->optim_vt->state(s->optim, &state);
    if (st == KD_OK)
        st = kd_session_copy_tensors(&state, "optim", &s->optim_state);
    if (st != KD_OK)
        return kd_error_wrap(st, "optim (optimizer '%s')", job->optim->name);
    s->n_optim_state = state.n;

    st = load_vtable(job, job->schedule, &h, &data);
    if (st != KD_OK)
        return st;
    s->sched_vt = (const kd_scheduler_vtable *)h;
    kd_schedule_info info = {sizeof info, job->lr, kd_session_steps_per_epoch(s), job->epochs};
    kd_create_args sargs = create_args(job, job->schedule, data, job->schedule_params,
                                       ROLE_SCHED, job->dtype);
    st = s->sched_vt->create(&sargs, &info, &s->sched);
    return st == KD_OK ? st : kd_error_wrap(st, "schedule (scheduler '%s')", job->schedule->name);
}

/* ---------------------------------------------------------------- host services */

static kd_status service_train_labels(void *host, const int64_t **labels)
{
    kd_session *s = host;
    *labels = NULL;
    if (!s->train.vt)
        return kd_error(KD_ERR_STATE, "train_labels: the job has no data.train");
    if (!s->train_labels) {
        /* labels() fills the whole dataset; get() is asked only for the subset */
        int64_t n = s->train.vt->labels ? s->train.info.length : s->services.train_length;
        int64_t *y = malloc(((size_t)n + 1) * sizeof *y);
        if (!y)
            return kd_error(KD_ERR_NOMEM, "train_labels: out of memory for %lld labels",
                            (long long)n);
        kd_status st = KD_OK;
        if (s->train.vt->labels) {
            st = s->train.vt->labels(s->train.self, y);
        } else {
            kd_sample sample = {0};
            for (int64_t i = 0; st == KD_OK && i < n; i++)
                st = s->train.vt->get(s->train.self, i, &sample, &y[i]);
            free(sample.data);
        }
        if (st != KD_OK) {
            free(y);
            return kd_error_wrap(st, "data.train: labels");
        }
        s->train_labels = y;
    }
    *labels = s->train_labels;
    return KD_OK;
}

static kd_status service_forward_from(void *host, kd_model_role role, const char *from,
                                      kd_tensor *input, const char *to, bool training,
                                      kd_tensor **out)
{
    kd_session *s = host;
    *out = NULL;
    kd_model_run *m = &s->student;
    const char *who = role == KD_ROLE_TEACHER ? "teacher" : "student";
    if (role == KD_ROLE_TEACHER) {
        /* the teacher of the loss asking (session.active_teacher) */
        int t = s->active_teacher >= 0 ? s->active_teacher : s->n_teachers == 1 ? 0 : -1;
        if (t < 0)
            return kd_error(KD_ERR_STATE, "forward_from: %s", s->n_teachers
                            ? "the loss reads none of the job's teachers"
                            : "the job has no teacher");
        if (!s->teachers[t].model)
            return kd_error(KD_ERR_UNSUPPORTED, "forward_from: teacher '%s' is an ensemble "
                            "(it has logits only)", s->teachers[t].spec->name);
        m = s->teachers[t].model;
    }
    if (!m->vt)
        return kd_error(KD_ERR_STATE, "forward_from: the job has no %s", who);
    int a = find_tap(m, from), b = find_tap(m, to);
    if (a < 0 || b < 0)
        return kd_error(KD_ERR_INVALID, "forward_from: the %s '%s' has no tap '%s'", who,
                        m->spec->entry->name, a < 0 ? from : to);
    if (b <= a)
        return kd_error(KD_ERR_INVALID, "forward_from: tap '%s' does not come after '%s' in "
                        "the %s '%s'", to, from, who, m->spec->entry->name);
    if (!m->vt->forward_from)
        return kd_error(KD_ERR_UNSUPPORTED, "forward_from: the %s '%s' cannot start from a tap",
                        who, m->spec->entry->name);
    bool *want = calloc((size_t)m->n_taps, sizeof *want);
    kd_tensor **taps = calloc((size_t)m->n_taps, sizeof *taps);
    kd_status st = want && taps ? KD_OK : kd_error(KD_ERR_NOMEM, "forward_from: out of memory");
    if (st == KD_OK) {
        want[b] = true;
        kd_forward_args args = {sizeof args, input, training, kd_rng_make(s->job->seed, 0, 0),
                                want, taps};
        st = m->vt->forward_from(m->self, a, &args);
        if (st == KD_OK && !taps[b])
            st = kd_error(KD_ERR_FORMAT, "forward_from: the %s '%s' did not fill tap '%s'", who,
                          m->spec->entry->name, to);
        if (st == KD_OK)
            *out = taps[b];
    }
    free(want);
    free(taps);
    return st;
}

/* The job's processes (dist.h); one process returns at once. */
static kd_status service_all_reduce(void *host, kd_tensor *t, kd_reduce_op op)
{
    (void)host;
    if (op != KD_REDUCE_OP_SUM && op != KD_REDUCE_OP_MEAN)
        return kd_error(KD_ERR_INVALID, "all_reduce: unknown operation %d", (int)op);
    return kd_dist_all_reduce(t, op == KD_REDUCE_OP_SUM ? KD_DIST_SUM : KD_DIST_MEAN);
}

static kd_status service_all_gather(void *host, kd_tensor *t, kd_tensor **out)
{
    (void)host;
    return kd_dist_all_gather(t, out);
}

/* A label store holds one process's batches (label on several ranks
 * splits whole batches); a job on W ranks mixes each rank's share of a
 * batch, so where batches mix its views are not the stored ones. */
static kd_status service_pipeline_fingerprint(void *host, const char **json)
{
    kd_session *s = host;
    int world = kd_dist().world;
    if (world > 1 && kd_job_batches_mix(s->job))
        return kd_error(KD_ERR_UNSUPPORTED,
                        "pipeline_fingerprint: this run has %d processes and its batches mix "
                        "samples (data.train.batch_transforms, or a teacher's train_bn), so "
                        "each process mixes only its share of a batch and the views differ "
                        "from the stored ones (made from whole batches); train from stored "
                        "labels in one process, or without mixing",
                        world);
    return kd_session_fingerprint(s, json);
}

static kd_status service_replay_views(void *host, int64_t epochs)
{
    kd_session *s = host;
    if (epochs < 1)
        return kd_error(KD_ERR_INVALID, "replay_views: %lld epochs", (long long)epochs);
    if (s->view_epochs && s->view_epochs != epochs)
        return kd_error(KD_ERR_INVALID, "replay_views: one loss asked for views cycling over "
                        "%lld epochs, another over %lld", (long long)s->view_epochs,
                        (long long)epochs);
    s->view_epochs = epochs;
    return KD_OK;
}

int64_t kd_session_view_epoch(const kd_session *s, int64_t epoch)
{
    return s->view_epochs > 0 ? epoch % s->view_epochs : epoch;
}

int64_t kd_session_view_batch(const kd_session *s, int64_t epoch, int64_t micro,
                              int64_t batches_per_epoch)
{
    return micro - (epoch - kd_session_view_epoch(s, epoch)) * batches_per_epoch;
}

static void init_services(kd_session *s)
{
    s->services = (kd_host_services){
        .size = sizeof(kd_host_services),
        .host = s,
        .num_classes = s->num_classes,
        .train_length = train_samples(s),
        .rank = kd_dist().rank,
        .world_size = kd_dist().world,
        .train_labels = service_train_labels,
        .forward_from = service_forward_from,
        .all_reduce = service_all_reduce,
        .all_gather = service_all_gather,
        .pipeline_fingerprint = service_pipeline_fingerprint,
        .replay_views = service_replay_views,
    };
}

static kd_status open_batch_transforms(kd_session *s)
{
    const kd_job_data *spec = &s->job->train;
    int n = spec->n_batch_transforms;
    s->btvt = calloc((size_t)n + 1, sizeof *s->btvt);
    s->btself = calloc((size_t)n + 1, sizeof *s->btself);
    if (!s->btvt || !s->btself)
        return kd_error(KD_ERR_NOMEM, "data.train: out of memory");
    for (int i = 0; i < n; i++, s->n_batch_transforms++) {
        const kd_vtable_header *h;
        const void *data;
        kd_status st = load_vtable(s->job, spec->batch_transforms[i], &h, &data);
        if (st != KD_OK)
            return st;
        s->btvt[i] = (const kd_batch_transform_vtable *)h;
        kd_create_args args = create_args(s->job, spec->batch_transforms[i], data,
                                          spec->batch_transform_params[i], ROLE_TRAIN, KD_F32);
        st = s->btvt[i]->create(&args, &s->btself[i]);
        if (st != KD_OK)
            return kd_error_wrap(st, "data.train.batch_transforms[%d] (%s)", i,
                                 spec->batch_transforms[i]->name);
    }
    return KD_OK;
}

/* The teacher is never trained: a loss that backpropagates through it
 * (forward_from on the teacher) must not pile gradients into it. A teacher
 * in eval mode is also told its tensors are final, so it may fold. */
static kd_status freeze(kd_model_run *m, bool eval_only)
{
    for (int i = 0; i < m->n_tensors; i++)
        kd_tensor_set_requires_grad(m->tensors[i].tensor, false);
    if (!eval_only || !m->vt->freeze)
        return KD_OK;
    kd_status st = m->vt->freeze(m->self);
    return st == KD_OK ? st : kd_error_wrap(st, "%s (model '%s')", m->spec->path,
                                            m->spec->entry->name);
}

/* A second instance of the student holding its average, starting as a
 * copy of the student (weights loaded): timm's ModelEmaV3 deep-copies the
 * model. */
static kd_status open_ema(kd_session *s)
{
    kd_status st = open_model(s->job, &s->job->student, ROLE_STUDENT, &s->ema);
    for (int i = 0; st == KD_OK && i < s->ema.n_tensors; i++) {
        kd_tensor *t = s->ema.tensors[i].tensor;
        kd_tensor_set_requires_grad(t, false);
        st = kd_tensor_copy_(t, s->student.tensors[i].tensor);
    }
    return st == KD_OK ? st : kd_error_wrap(st, "ema");
}

/* d with the size of the images teacher t reads. */
static kd_data_run teacher_view(const kd_data_run *d, const kd_teacher_run *t)
{
    kd_data_run v = *d;
    v.height = t->height;
    v.width = t->width;
    return v;
}

/* A teacher's logits must be [N, classes] with the student's classes. */
static kd_status check_teacher_logits(const kd_session *s, const kd_teacher_run *t,
                                      const kd_tap_shape *student_logits)
{
    const kd_tap_shape *lt = &t->shapes[t->model ? t->model->logits : 0];
    if (student_logits->ndim != 2) /* check_logits names the student */
        return KD_OK;
    if (lt->ndim == 2 && lt->shape[1] == student_logits->shape[1])
        return KD_OK;
    return kd_error(KD_ERR_INVALID, "%s: '%s' predicts %lld classes, the student '%s' %lld: "
                    "set num_classes alike", t->spec->path,
                    t->model ? t->spec->model.entry->name : t->spec->name,
                    (long long)(lt->ndim == 2 ? lt->shape[1] : -1),
                    s->job->student.entry->name, (long long)student_logits->shape[1]);
}

/* One model teacher: opened (the first as the session's teacher), its
 * input prepared, probed at its input size, frozen. */
static kd_status open_model_teacher(kd_session *s, int i, const kd_data_run *d)
{
    const kd_job *job = s->job;
    kd_teacher_run *t = &s->teachers[i];
    bool first = !s->teacher.vt;
    t->model = first ? &s->teacher : calloc(1, sizeof *t->model);
    if (!t->model)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", t->spec->path);
    kd_status st = open_model(job, &t->spec->model,
                              first ? ROLE_TEACHER : ROLE_TEACHERS + (uint64_t)i, t->model);
    if (st == KD_OK)
        st = kd_teacher_prepare(t, d->spec, d, job->dtype);
    if (st == KD_OK && !(t->shapes = calloc((size_t)t->model->n_taps, sizeof *t->shapes)))
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", t->spec->path);
    if (st == KD_OK && first)
        s->teacher_shapes = t->shapes;
    kd_data_run view = teacher_view(d, t);
    if (st == KD_OK)
        st = probe_taps(t->model, &view, t->shapes);
    if (st == KD_OK)
        st = freeze(t->model, !t->spec->model.train_bn);
    return st;
}

/* The job's teachers, in its order: model teachers, then each ensemble's
 * logits shape from its members (which must agree with the student). */
static kd_status open_teachers(kd_session *s, const kd_data_run *d,
                               const kd_tap_shape *student_logits)
{
    const kd_job *job = s->job;
    s->teachers = calloc((size_t)job->n_teachers + 1, sizeof *s->teachers);
    kd_status st = s->teachers ? KD_OK : kd_error(KD_ERR_NOMEM, "teachers: out of memory");
    for (int i = 0; st == KD_OK && i < job->n_teachers; i++, s->n_teachers++) {
        s->teachers[i].spec = &job->teachers[i];
        if (job->teachers[i].model.present)
            st = open_model_teacher(s, i, d);
        if (st == KD_OK && job->teachers[i].model.present)
            st = check_teacher_logits(s, &s->teachers[i], student_logits);
    }
    for (int i = 0; st == KD_OK && i < s->n_teachers; i++) {
        kd_teacher_run *t = &s->teachers[i];
        if (t->model)
            continue;
        const kd_teacher_run *m = &s->teachers[t->spec->members[0]];
        if (!(t->shapes = calloc(1, sizeof *t->shapes)))
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", t->spec->path);
        t->shapes[0] = m->shapes[m->model->logits];
        st = check_teacher_logits(s, t, student_logits);
    }
    return st;
}

static void close_teachers(kd_session *s)
{
    for (int i = 0; i < s->n_teachers; i++) {
        kd_teacher_run *t = &s->teachers[i];
        /* the session's teacher and student close with the session */
        if (t->model && t->model != &s->teacher && t->model != &s->student) {
            close_model(t->model);
            free(t->model);
        }
        if (t->shapes != s->teacher_shapes)
            free(t->shapes);
        kd_tensor_free(t->scale);
        kd_tensor_free(t->shift);
    }
    free(s->teachers);
}

/* eval --teacher: the job's one model teacher as the session's model,
 * reading data.val as it would read data.train. */
static kd_status open_teacher_as_model(kd_session *s)
{
    const kd_job *job = s->job;
    kd_status st = kd_job_one_teacher(job, "eval --teacher");
    if (st == KD_OK && !job->teacher.present)
        st = kd_error(KD_ERR_INVALID, "teacher: missing (nothing to evaluate)");
    if (st == KD_OK && !(s->teachers = calloc(1, sizeof *s->teachers)))
        st = kd_error(KD_ERR_NOMEM, "teacher: out of memory");
    if (st != KD_OK)
        return st;
    kd_teacher_run *t = &s->teachers[0];
    for (int i = 0; i < job->n_teachers && !t->spec; i++)
        if (job->teachers[i].model.present)
            t->spec = &job->teachers[i];
    t->model = &s->student;
    s->n_teachers = 1;
    st = open_model(job, &job->teacher, ROLE_TEACHER, &s->student);
    return st == KD_OK ? kd_teacher_prepare(t, &job->val, &s->val, job->dtype) : st;
}

kd_status kd_session_open(const kd_job *job, kd_session_mode mode, kd_session **out)
{
    *out = NULL;
    kd_session *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "session: out of memory");
    s->job = job;
    s->active_teacher = -1;
    kd_status st = KD_OK;
    if (mode == KD_SESSION_WEIGHTS || mode == KD_SESSION_TEACHER_WEIGHTS) {
        bool teacher = mode == KD_SESSION_TEACHER_WEIGHTS;
        if (teacher && !job->teacher.present)
            st = kd_error(KD_ERR_INVALID, "teacher: missing (the job has no teacher)");
        else if (teacher)
            st = kd_job_one_teacher(job, "forward --teacher");
        if (st == KD_OK)
            st = open_model(job, teacher ? &job->teacher : &job->student,
                            teacher ? ROLE_TEACHER : ROLE_STUDENT, &s->student);
        if (st == KD_OK && teacher)
            st = freeze(&s->student, false);
        if (st != KD_OK) {
            kd_session_close(s);
            return st;
        }
        *out = s;
        return KD_OK;
    }
    if (mode != KD_SESSION_TRAIN && !job->val.present)
        st = kd_error(KD_ERR_INVALID, "data.val: missing (what to evaluate on)");
    if (mode == KD_SESSION_TRAIN)
        st = kd_job_check_output(job);
    if (st == KD_OK && mode == KD_SESSION_TRAIN)
        st = open_data(job, &job->train, ROLE_TRAIN, &s->train);
    if (st == KD_OK && job->val.present)
        st = open_data(job, &job->val, ROLE_VAL, &s->val);
    const kd_data_run *shape_src = s->train.vt ? &s->train : &s->val;
    if (st == KD_OK && s->val.vt && s->train.vt &&
        (s->val.channels != s->train.channels || s->val.height != s->train.height ||
         s->val.width != s->train.width))
        st = kd_error(KD_ERR_INVALID, "data.val: samples are %dx%dx%d, data.train's %dx%dx%d",
                      s->val.channels, s->val.height, s->val.width, s->train.channels,
                      s->train.height, s->train.width);
    kd_data_run model_view = *shape_src; /* what the session's model reads */
    if (st == KD_OK && mode == KD_SESSION_TEACHER) {
        st = open_teacher_as_model(s);
        if (st == KD_OK)
            model_view = teacher_view(&s->val, &s->teachers[0]);
    } else if (st == KD_OK) {
        st = open_model(job, &job->student, ROLE_STUDENT, &s->student);
    }
    kd_tap_shape *ss = NULL;
    if (st == KD_OK) {
        ss = s->student_shapes = calloc((size_t)s->student.n_taps, sizeof *ss);
        st = ss ? probe_taps(&s->student, &model_view, ss)
                : kd_error(KD_ERR_NOMEM, "session: out of memory");
    }
    /* teachers first: a teacher that disagrees with the student on the
     * classes is the likelier mistake than the data */
    if (st == KD_OK && mode == KD_SESSION_TRAIN)
        st = open_teachers(s, shape_src, &ss[s->student.logits]);
    if (st == KD_OK && mode != KD_SESSION_TEACHER)
        st = check_logits(s, ss);
    s->num_classes = ss && st == KD_OK ? (int)ss[s->student.logits].shape[1] : 0;
    if (st == KD_OK && mode == KD_SESSION_TEACHER)
        st = freeze(&s->student, false); /* eval --weights loads after this */
    init_services(s);
    if (st == KD_OK && mode == KD_SESSION_TRAIN) {
        s->losses = calloc((size_t)job->n_losses, sizeof *s->losses);
        if (!s->losses)
            st = kd_error(KD_ERR_NOMEM, "session: out of memory");
        for (int i = 0; st == KD_OK && i < job->n_losses; i++, s->n_losses++)
            st = open_loss(s, i, ss);
        if (st == KD_OK)
            st = open_batch_transforms(s);
        if (st == KD_OK)
            st = open_optimizer(s);
        if (st == KD_OK && job->ema.present)
            st = open_ema(s);
    }
    if (st != KD_OK) {
        kd_session_close(s);
        return st;
    }
    *out = s;
    return KD_OK;
}

void kd_session_close(kd_session *s)
{
    if (!s)
        return;
    if (s->sched_vt && s->sched)
        s->sched_vt->destroy(s->sched);
    if (s->optim_vt && s->optim)
        s->optim_vt->destroy(s->optim);
    for (int i = 0; i < s->n_batch_transforms; i++)
        s->btvt[i]->destroy(s->btself[i]);
    free(s->btvt);
    free(s->btself);
    free(s->params);
    free(s->lr_scales);
    for (int i = 0; i < s->n_losses; i++)
        close_loss(&s->losses[i]);
    free(s->losses);
    close_teachers(s);
    close_model(&s->teacher);
    close_model(&s->student);
    close_model(&s->ema);
    close_data(&s->train);
    close_data(&s->val);
    free(s->student_shapes);
    free(s->teacher_shapes);
    free(s->optim_state);
    free(s->train_labels);
    free(s->fingerprint);
    free(s);
}

kd_status kd_session_groups(const kd_session *s, kd_tensor_group **out, int *n_out)
{
    kd_tensor_group *g = calloc((size_t)s->n_losses + 3, sizeof *g);
    *out = g;
    *n_out = 0;
    if (!g)
        return kd_error(KD_ERR_NOMEM, "checkpoint: out of memory");
    int n = 0;
    g[n++] = (kd_tensor_group){"student.", s->student.n_tensors, s->student.tensors};
    for (int i = 0; i < s->n_losses; i++)
        if (s->losses[i].n_tensors)
            g[n++] = (kd_tensor_group){s->losses[i].prefix, s->losses[i].n_tensors,
                                       s->losses[i].tensors};
    if (s->n_optim_state)
        g[n++] = (kd_tensor_group){"optim.", s->n_optim_state, s->optim_state};
    if (s->ema.vt)
        g[n++] = (kd_tensor_group){"ema.", s->ema.n_tensors, s->ema.tensors};
    *n_out = n;
    return KD_OK;
}

/* ---------------------------------------------------------------- plan */

static int64_t count_params(const kd_model_run *m, int64_t *buffers)
{
    int64_t n = 0;
    *buffers = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        int64_t k = kd_tensor_numel(m->tensors[i].tensor);
        if (m->tensors[i].flags & KD_TENSOR_PARAM)
            n += k;
        else
            *buffers += k;
    }
    return n;
}

/* One image through m: its MACs, and the most tensor memory the pass had
 * alive beyond what was alive before it, less the input. With grad, a
 * training step's forward and backward (from the sum of the logits; the
 * parameter gradients it makes are counted with the parameters and freed
 * again); without, a forward under no-grad in its own scope, as the
 * teacher and evaluation run. Memory of a batch is about the batch size
 * times this. */
/* One image's multiply-adds and peak bytes. A training step is measured on
 * two images and halved: train-mode batch norm needs more than one value
 * per channel, and a MobileNet's last maps are 1x1 at 32x32 inputs. */
static kd_status measure(kd_model_run *m, const kd_data_run *d, bool grad, int64_t *macs,
                         int64_t *bytes)
{
    const int64_t images = grad ? 2 : 1;
    int64_t in_shape[4] = {images, d->channels, d->height, d->width};
    bool saved = kd_set_grad_enabled(grad);
    kd_scope_begin();
    kd_tensor *x = kd_tensor_zeros(m->dtype, KD_CPU, 4, in_shape);
    int64_t before = kd_memory_stats_of(KD_CPU).live_bytes;
    kd_memory_peak_reset(KD_CPU);
    kd_macs_take();
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args args = {sizeof args, x, grad, kd_rng_make(0, 0, 0), m->want, m->out};
    kd_status st = x ? m->vt->forward(m->self, &args) : KD_ERR_NOMEM;
    *macs = kd_macs_take() / images;
    int64_t grads = 0;
    if (st == KD_OK && grad) {
        st = kd_backward(kd_sum_all(m->out[m->logits]));
        for (int i = 0; i < m->n_tensors; i++) {
            kd_tensor *t = m->tensors[i].tensor;
            if (t->grad)
                grads += (int64_t)kd_dtype_size(t->dtype) * kd_tensor_numel(t);
            kd_tensor_zero_grad(t);
        }
    }
    *bytes = (kd_memory_stats_of(KD_CPU).peak_bytes - before - grads) / images;
    kd_scope_end();
    kd_set_grad_enabled(saved);
    return st;
}

/* The student is measured as a training step, the teacher under no-grad,
 * as they run; MACs do not depend on it. bytes_per_image NULL: not
 * measured, the probe's MACs. */
static kd_status print_model(FILE *out, const char *role, kd_model_run *m,
                             const kd_data_run *d, bool grad, int64_t *bytes_per_image)
{
    int64_t buffers, params = count_params(m, &buffers);
    int64_t macs = m->probe_macs;
    kd_status st = bytes_per_image ? measure(m, d, grad, &macs, bytes_per_image) : KD_OK;
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", m->spec->path);
    fprintf(out, "%s: %s (%s)\n", role, m->spec->entry->name,
            m->spec->weights ? m->spec->weights : "initialised from the seed");
    fprintf(out, "  parameters %lld (%.2f M), buffers %lld\n", (long long)params, params / 1e6,
            (long long)buffers);
    fprintf(out, "  %.2f MFLOPs per image (%lld multiply-adds, %dx%dx%d input)\n",
            2.0 * (double)macs / 1e6, (long long)macs, d->channels, d->height, d->width);
    static const char *const layouts[] = {"NCHW", "NHWC", "tokens", "NC"};
    fprintf(out, "  taps:");
    for (int i = 0; i < m->n_taps; i++) {
        const kd_tap_info *t = &m->taps[i];
        bool known = t->layout >= KD_LAYOUT_NCHW && t->layout <= KD_LAYOUT_NC;
        fprintf(out, "%s %s (%s, %d ch, /%d", i ? "," : "", t->name,
                known ? layouts[t->layout] : "layout ?", t->channels, t->reduction);
        if (t->layout == KD_LAYOUT_TOKENS && t->prefix_tokens)
            fprintf(out, ", %d prefix", t->prefix_tokens);
        fprintf(out, ")");
    }
    fprintf(out, "\n");
    return KD_OK;
}

/* Each teacher: a model as print_model shows it, with the input it reads
 * when that is not the pipeline's images; an ensemble's members. The
 * largest teacher forward per image goes to *bytes_per_image when it is
 * not NULL (they run one after the other; NULL: nothing measured). */
static kd_status print_teachers(kd_session *s, FILE *out, const kd_data_run *d,
                                int64_t *bytes_per_image)
{
    if (bytes_per_image)
        *bytes_per_image = 0;
    for (int i = 0; i < s->n_teachers; i++) {
        const kd_teacher_run *t = &s->teachers[i];
        char role[96];
        if (!strcmp(t->spec->path, "teacher"))
            snprintf(role, sizeof role, "teacher");
        else
            snprintf(role, sizeof role, "teacher '%s'", t->spec->name);
        if (!t->model) {
            fprintf(out, "%s: ensemble, the mean of the logits of", role);
            for (int k = 0; k < t->spec->n_members; k++)
                fprintf(out, "%s '%s'", k ? "," : "", s->teachers[t->spec->members[k]].spec->name);
            fprintf(out, "\n");
            continue;
        }
        kd_data_run view = teacher_view(d, t);
        int64_t bytes = 0;
        kd_status st = print_model(out, role, t->model, &view, false,
                                   bytes_per_image ? &bytes : NULL);
        if (st != KD_OK)
            return st;
        if (bytes_per_image && bytes > *bytes_per_image)
            *bytes_per_image = bytes;
        if (t->resize || t->scale)
            fprintf(out, "  input: the student's %dx%d batch%s%s\n", d->height, d->width,
                    t->resize ? ", resized (bilinear)" : "",
                    t->scale ? ", renormalised (its normalize)" : "");
    }
    return KD_OK;
}

static int64_t max3(int64_t a, int64_t b, int64_t c)
{
    int64_t m = a > b ? a : b;
    return m > c ? m : c;
}

kd_status kd_session_plan(kd_session *s, bool measure_memory, FILE *out)
{
    const kd_job *job = s->job;
    const kd_data_run *d = s->train.vt ? &s->train : &s->val;
    int64_t batch = job->train.batch_size;
    fprintf(out, "job: %s\n", job->file);
    kd_thread_budget budget;
    kd_status st = kd_threads_apply(job, &budget); /* the step measured below runs on it */
    if (st != KD_OK)
        return st;
    char threads[512];
    kd_threads_describe(&budget, job, threads, sizeof threads);
    fprintf(out, "%s\n", threads);
    char accumulated[64] = "";
    if (job->accumulate_steps > 1)
        snprintf(accumulated, sizeof accumulated, " x %lld accumulated",
                 (long long)job->accumulate_steps);
    if (s->train.vt)
        fprintf(out, "data.train: %s, %lld of %lld samples, %dx%dx%d after %d transforms, batch "
                "%lld%s, %lld steps per epoch, %lld epochs\n", job->train.dataset->name,
                (long long)(job->train.subset ? job->train.subset : s->train.info.length),
                (long long)s->train.info.length, d->channels, d->height, d->width,
                job->train.n_transforms, (long long)batch, accumulated,
                (long long)kd_session_steps_per_epoch(s), (long long)job->epochs);
    if (s->train.vt && job->train.unlabeled)
        fprintf(out, "data.train.unlabeled: %s, part of those samples, without labels (losses "
                "that need labels skip them)\n", job->train.unlabeled->name);
    if (s->val.vt)
        fprintf(out, "data.val: %s, %lld samples\n", job->val.dataset->name,
                (long long)s->val.info.length);
    int64_t teacher_image = 0, student_image = 0, eval_image = 0, macs;
    st = print_teachers(s, out, d, measure_memory ? &teacher_image : NULL);
    if (st == KD_OK && s->n_teachers == 1 && s->train.vt) {
        /* what `kdengine label` would store, at its default top-k */
        int k = s->num_classes < KD_LABEL_DEFAULT_TOP_K ? s->num_classes
                                                        : KD_LABEL_DEFAULT_TOP_K;
        kd_label_layout l = {train_samples(s), k,
                             s->num_classes, kd_label_index_bytes(s->num_classes)};
        fprintf(out, "  label store (kdengine label, top-%d): %d bytes per view, %.2f MiB per "
                "epoch of %lld samples\n", l.top_k, l.top_k * (2 + l.index_bytes),
                (double)kd_label_shard_size(&l) / (1024.0 * 1024.0), (long long)l.samples);
    }
    if (st == KD_OK)
        st = print_model(out, "student", &s->student, d, true,
                         measure_memory ? &student_image : NULL);
    if (st == KD_OK && measure_memory && s->val.vt && job->eval_every > 0)
        st = measure(&s->student, d, false, &macs, &eval_image);
    if (st != KD_OK)
        return st;

    const kd_tap_shape *ss = s->student_shapes;
    for (int i = 0; i < s->n_losses; i++) {
        const kd_loss_run *l = &s->losses[i];
        fprintf(out, "%s: %s, weight %g%s\n", l->spec->path, l->spec->entry->name,
                l->spec->weight, l->spec->weight_warmup_epochs > 0 ? " (warm-up)" : "");
        const kd_teacher_run *t = l->teacher >= 0 ? &s->teachers[l->teacher] : NULL;
        for (int k = 0; k < l->needs.n_student + l->needs.n_teacher; k++) {
            bool st_side = k < l->needs.n_student;
            int tap = st_side ? l->student_taps[k] : l->teacher_taps[k - l->needs.n_student];
            const kd_tap_shape *sh = st_side ? &ss[tap] : &t->shapes[t->model ? tap : 0];
            fprintf(out, "  reads %s.%s [%lld", st_side ? "student" : t->spec->name,
                    st_side ? s->student.taps[tap].name
                            : l->needs.teacher[k - l->needs.n_student],
                    (long long)batch);
            for (int dd = 1; dd < sh->ndim; dd++)
                fprintf(out, ", %lld", (long long)sh->shape[dd]);
            fprintf(out, "]\n");
        }
        int64_t lp = 0;
        for (int k = 0; k < l->n_tensors; k++)
            lp += kd_tensor_numel(l->tensors[k].tensor);
        if (lp)
            fprintf(out, "  owns %lld parameters and state values\n", (long long)lp);
    }
    int64_t param_bytes = 0, state_bytes = 0;
    for (int i = 0; i < s->n_params; i++)
        param_bytes += (int64_t)kd_dtype_size(s->params[i].tensor->dtype) *
                       kd_tensor_numel(s->params[i].tensor);
    for (int i = 0; i < s->n_optim_state; i++)
        state_bytes += (int64_t)kd_dtype_size(s->optim_state[i].tensor->dtype) *
                       kd_tensor_numel(s->optim_state[i].tensor);
    /* batches in flight: the prefetch ring, the loader's own, the step's */
    int64_t image_bytes = (int64_t)sizeof(float) * d->channels * d->height * d->width;
    int64_t input_bytes = image_bytes * batch * (job->train.prefetch + 2);
    int64_t val_batch = job->val.batch_size;
    int64_t student = student_image * batch, teacher = teacher_image * batch,
            evaluation = eval_image * val_batch;
    /* the EMA: a second copy of the student's tensors */
    int64_t ema_bytes = 0;
    for (int i = 0; i < s->ema.n_tensors; i++)
        ema_bytes += (int64_t)kd_dtype_size(s->ema.tensors[i].tensor->dtype) *
                     kd_tensor_numel(s->ema.tensors[i].tensor);
    int64_t total = 2 * param_bytes + state_bytes + ema_bytes + input_bytes +
                    max3(student, teacher, evaluation);
    double mib = 1024.0 * 1024.0;
    if (ema_bytes)
        fprintf(out, "ema: decay %g%s, %.1f MiB\n", job->ema.decay,
                job->ema.warmup ? " with warm-up" : "", (double)ema_bytes / mib);
    if (!measure_memory)
        fprintf(out, "memory: not estimated (--no-measure); parameters + gradients %.1f MiB, "
                "optimizer state %.1f MiB, batches %.1f MiB\n", 2.0 * (double)param_bytes / mib,
                (double)state_bytes / mib, (double)input_bytes / mib);
    else
        fprintf(out, "memory (estimate; tensors alive at once): parameters + gradients %.1f MiB, "
            "optimizer state %.1f MiB, batches %.1f MiB, then the largest of: student step "
            "%.1f MiB (batch %lld), teacher forward %.1f MiB, evaluation %.1f MiB (batch %lld); "
            "peak about %.1f MiB\n", 2.0 * (double)param_bytes / mib, (double)state_bytes / mib,
            (double)input_bytes / mib, (double)student / mib, (long long)batch,
            (double)teacher / mib, (double)evaluation / mib, (long long)val_batch,
            (double)total / mib);
    char clip[64] = "";
    if (job->clip_grad_norm > 0 || job->clip_grad_value > 0)
        snprintf(clip, sizeof clip, ", gradients clipped by %s %g",
                 job->clip_grad_norm > 0 ? "norm" : "value",
                 job->clip_grad_norm > 0 ? job->clip_grad_norm : job->clip_grad_value);
    fprintf(out, "optim: %s, lr %g%s; schedule: %s over %lld epochs\n", job->optim->name,
            job->lr, clip, job->schedule->name, (long long)job->epochs);
    return KD_OK;
}

kd_status kd_session_classes_json(const kd_session *s, char **json)
{
    *json = NULL;
    const kd_data_run *d = s->train.vt ? &s->train : &s->val;
    if (!d->vt || !d->vt->class_name)
        return KD_OK;
    json_t *names = json_array();
    kd_status st = names ? KD_OK : kd_error(KD_ERR_NOMEM, "class names: out of memory");
    for (int c = 0; st == KD_OK && c < d->info.num_classes; c++) {
        const char *name = d->vt->class_name(d->self, c);
        if (!name)
            st = kd_error(KD_ERR_INVALID, "%s.dataset: class %d has no name (class_name "
                          "returned NULL)", d->spec->path, c);
        else if (json_array_append_new(names, json_string(name)) != 0)
            st = kd_error(KD_ERR_INVALID, "%s.dataset: the name of class %d is not UTF-8 text",
                          d->spec->path, c);
    }
    if (st == KD_OK && !(*json = json_dumps(names, JSON_COMPACT)))
        st = kd_error(KD_ERR_NOMEM, "class names: out of memory");
    json_decref(names);
    return st;
}
