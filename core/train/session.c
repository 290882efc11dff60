/* Building a job's plugin instances and wiring them together. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "checkpoint.h"
#include "session.h"

/* Seeds of the instances: the job's seed mixed with a role number, so the
 * student's weights do not depend on how many losses the job has. */
enum { ROLE_STUDENT = 1, ROLE_TEACHER, ROLE_OPTIM, ROLE_SCHED, ROLE_TRAIN, ROLE_VAL,
       ROLE_LOSS = 64 };

static uint64_t role_seed(uint64_t seed, uint64_t role)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + role * 0xD1B54A32D192ED03ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static kd_status load_vtable(const kd_job *job, const kd_registry_entry *e, size_t min_size,
                             const kd_vtable_header **vt)
{
    kd_status st = kd_registry_load(job->registry, e, vt);
    if (st != KD_OK)
        return st;
    if ((*vt)->size < min_size)
        return kd_error(KD_ERR_FORMAT, "%s: the %s vtable of '%s' is %u bytes, older than this "
                        "host's %zu", e->library_path, kd_plugin_kind_name(e->kind), e->name,
                        (unsigned)(*vt)->size, min_size);
    return KD_OK;
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
    kd_status st = load_vtable(job, spec->entry, sizeof(kd_model_vtable), &h);
    if (st != KD_OK)
        return st;
    m->spec = spec;
    m->vt = (const kd_model_vtable *)h;
    m->dtype = job->dtype;
    kd_create_args args = {spec->params, role_seed(job->seed, role), KD_CPU, job->dtype};
    st = m->vt->create(&args, &m->self);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s (model '%s')", spec->path, spec->entry->name);
    m->n_tensors = m->vt->tensors(m->self, &m->tensors);
    m->n_taps = m->vt->taps(m->self, &m->taps);
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
        st = kd_weights_load(spec->weights, spec->path, m->n_tensors, m->tensors);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

static void close_model(kd_model_run *m)
{
    if (m->vt && m->self)
        m->vt->destroy(m->self);
    free(m->want);
    free(m->out);
    memset(m, 0, sizeof *m);
}

static kd_status open_data(const kd_job *job, const kd_job_data *spec, uint64_t role,
                           kd_data_run *d)
{
    const kd_vtable_header *h;
    d->spec = spec;
    kd_status st = load_vtable(job, spec->dataset, sizeof(kd_dataset_vtable), &h);
    if (st != KD_OK)
        return st;
    d->vt = (const kd_dataset_vtable *)h;
    kd_create_args args = {spec->dataset_params, role_seed(job->seed, role), KD_CPU, KD_F32};
    st = d->vt->create(&args, &d->self);
    if (st == KD_OK)
        st = d->vt->info(d->self, &d->info);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s.dataset", spec->path);
    if (d->info.length < 1)
        return kd_error(KD_ERR_INVALID, "%s.dataset: it is empty", spec->path);
    if (spec->subset > d->info.length)
        return kd_error(KD_ERR_INVALID, "%s.subset: %lld, but the dataset has %lld samples",
                        spec->path, (long long)spec->subset, (long long)d->info.length);
    d->tvt = calloc((size_t)spec->n_transforms + 1, sizeof *d->tvt);
    d->tself = calloc((size_t)spec->n_transforms + 1, sizeof *d->tself);
    if (!d->tvt || !d->tself)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", spec->path);
    for (int i = 0; i < spec->n_transforms; i++) {
        st = load_vtable(job, spec->transforms[i], sizeof(kd_transform_vtable), &h);
        if (st != KD_OK)
            return st;
        d->tvt[i] = (const kd_transform_vtable *)h;
        kd_create_args targs = {spec->transform_params[i], args.seed, KD_CPU, KD_F32};
        st = d->tvt[i]->create(&targs, &d->tself[i]);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s.transforms[%d]", spec->path, i);
    }
    /* one sample through the pipeline gives the shape batches will have */
    kd_sample a = {0}, b = {0};
    int64_t label;
    st = d->vt->get(d->self, 0, &a, &label);
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
    kd_forward_args args = {x, false, kd_rng_make(0, 0, 0), all, m->out};
    if (st == KD_OK)
        st = m->vt->forward(m->self, &args);
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

static kd_status open_loss(kd_session *s, int i, const kd_tap_shape *student_shapes,
                           const kd_tap_shape *teacher_shapes)
{
    const kd_job *job = s->job;
    kd_loss_run *l = &s->losses[i];
    l->spec = &job->losses[i];
    const kd_vtable_header *h;
    kd_status st = load_vtable(job, l->spec->entry, sizeof(kd_loss_vtable), &h);
    if (st != KD_OK)
        return st;
    l->vt = (const kd_loss_vtable *)h;
    kd_create_args args = {l->spec->params, role_seed(job->seed, ROLE_LOSS + (uint64_t)i),
                           KD_CPU, job->dtype};
    st = l->vt->create(&args, &l->self);
    if (st == KD_OK)
        st = l->vt->needs(l->self, &l->needs);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s (loss '%s')", l->spec->path, l->spec->entry->name);
    if (l->needs.n_teacher > 0 && !s->teacher.vt)
        return kd_error(KD_ERR_INVALID, "%s: loss '%s' distils from a teacher, but the job has "
                        "none (add \"teacher\", or drop this loss to train alone)",
                        l->spec->path, l->spec->entry->name);
    l->student_taps = calloc((size_t)l->needs.n_student + 1, sizeof(int));
    l->teacher_taps = calloc((size_t)l->needs.n_teacher + 1, sizeof(int));
    l->student_in = calloc((size_t)l->needs.n_student + 1, sizeof(kd_tensor *));
    l->teacher_in = calloc((size_t)l->needs.n_teacher + 1, sizeof(kd_tensor *));
    kd_tap_shape *shapes = calloc((size_t)(l->needs.n_student + l->needs.n_teacher) + 1,
                                  sizeof *shapes);
    if (!l->student_taps || !l->teacher_taps || !l->student_in || !l->teacher_in || !shapes) {
        free(shapes);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", l->spec->path);
    }
    st = resolve_taps(&s->student, l->spec->path, "student", l->needs.n_student,
                      l->needs.student, l->student_taps);
    if (st == KD_OK)
        st = resolve_taps(&s->teacher, l->spec->path, "teacher", l->needs.n_teacher,
                          l->needs.teacher, l->teacher_taps);
    for (int k = 0; st == KD_OK && k < l->needs.n_student; k++) {
        s->student.want[l->student_taps[k]] = true;
        shapes[k] = student_shapes[l->student_taps[k]];
    }
    for (int k = 0; st == KD_OK && k < l->needs.n_teacher; k++) {
        s->teacher.want[l->teacher_taps[k]] = true;
        shapes[l->needs.n_student + k] = teacher_shapes[l->teacher_taps[k]];
    }
    if (st == KD_OK && l->vt->bind) {
        st = l->vt->bind(l->self, shapes, shapes + l->needs.n_student);
        if (st != KD_OK)
            st = kd_error_wrap(st, "%s (loss '%s')", l->spec->path, l->spec->entry->name);
    }
    free(shapes);
    if (st == KD_OK && l->vt->tensors)
        l->n_tensors = l->vt->tensors(l->self, &l->tensors);
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
}

int64_t kd_session_steps_per_epoch(const kd_session *s)
{
    int64_t n = s->job->train.subset ? s->job->train.subset : s->train.info.length;
    int64_t b = s->job->train.batch_size;
    int64_t steps = s->job->train.drop_last ? n / b : (n + b - 1) / b;
    return steps > 0 ? steps : 1;
}

static kd_status check_logits(const kd_session *s, const kd_tap_shape *student,
                              const kd_tap_shape *teacher)
{
    const kd_tap_shape *ls = &student[s->student.logits];
    if (ls->ndim != 2)
        return kd_error(KD_ERR_FORMAT, "student: the logits tap of '%s' is not [N, classes]",
                        s->job->student.entry->name);
    if (teacher) {
        const kd_tap_shape *lt = &teacher[s->teacher.logits];
        if (lt->ndim != 2 || lt->shape[1] != ls->shape[1])
            return kd_error(KD_ERR_INVALID, "teacher: '%s' predicts %lld classes, the student "
                            "'%s' %lld: set num_classes alike", s->job->teacher.entry->name,
                            (long long)(lt->ndim == 2 ? lt->shape[1] : -1),
                            s->job->student.entry->name, (long long)ls->shape[1]);
    }
    int classes = s->train.vt ? s->train.info.num_classes : s->val.info.num_classes;
    if (classes > 0 && ls->shape[1] != classes)
        return kd_error(KD_ERR_INVALID, "student: '%s' predicts %lld classes, the data has %d: "
                        "set num_classes to %d", s->job->student.entry->name,
                        (long long)ls->shape[1], classes, classes);
    return KD_OK;
}

static kd_status open_optimizer(kd_session *s)
{
    const kd_job *job = s->job;
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
    for (int l = 0; l < s->n_losses; l++)
        for (int i = 0; i < s->losses[l].n_tensors; i++)
            if (s->losses[l].tensors[i].flags & KD_TENSOR_PARAM)
                s->params[s->n_params++] = s->losses[l].tensors[i];
    for (int i = 0; i < s->n_params; i++)
        kd_tensor_set_requires_grad(s->params[i].tensor, true);

    const kd_vtable_header *h;
    kd_status st = load_vtable(job, job->optim, sizeof(kd_optimizer_vtable), &h);
    if (st != KD_OK)
        return st;
    s->optim_vt = (const kd_optimizer_vtable *)h;
    kd_create_args args = {job->optim_params, role_seed(job->seed, ROLE_OPTIM), KD_CPU,
                           job->dtype};
    st = s->optim_vt->create(&args, s->n_params, s->params, &s->optim);
    if (st != KD_OK)
        return kd_error_wrap(st, "optim (optimizer '%s')", job->optim->name);
    s->n_optim_state = s->optim_vt->state(s->optim, &s->optim_state);

    st = load_vtable(job, job->schedule, sizeof(kd_scheduler_vtable), &h);
    if (st != KD_OK)
        return st;
    s->sched_vt = (const kd_scheduler_vtable *)h;
    kd_schedule_info info = {job->lr, kd_session_steps_per_epoch(s), job->epochs};
    kd_create_args sargs = {job->schedule_params, role_seed(job->seed, ROLE_SCHED), KD_CPU,
                            job->dtype};
    st = s->sched_vt->create(&sargs, &info, &s->sched);
    return st == KD_OK ? st : kd_error_wrap(st, "schedule (scheduler '%s')", job->schedule->name);
}

kd_status kd_session_open(const kd_job *job, kd_session_mode mode, kd_session **out)
{
    *out = NULL;
    kd_session *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "session: out of memory");
    s->job = job;
    kd_status st = KD_OK;
    if (mode == KD_SESSION_WEIGHTS) {
        st = open_model(job, &job->student, ROLE_STUDENT, &s->student);
        if (st != KD_OK) {
            kd_session_close(s);
            return st;
        }
        *out = s;
        return KD_OK;
    }
    if (mode != KD_SESSION_TRAIN && !job->val.present)
        st = kd_error(KD_ERR_INVALID, "data.val: missing (what to evaluate on)");
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
    if (st == KD_OK && mode == KD_SESSION_TEACHER) {
        if (!job->teacher.present)
            st = kd_error(KD_ERR_INVALID, "teacher: missing (nothing to evaluate)");
        else
            st = open_model(job, &job->teacher, ROLE_TEACHER, &s->student);
    } else if (st == KD_OK) {
        st = open_model(job, &job->student, ROLE_STUDENT, &s->student);
        if (st == KD_OK && mode == KD_SESSION_TRAIN && job->teacher.present)
            st = open_model(job, &job->teacher, ROLE_TEACHER, &s->teacher);
    }
    kd_tap_shape *ss = NULL, *ts = NULL;
    if (st == KD_OK) {
        ss = s->student_shapes = calloc((size_t)s->student.n_taps, sizeof *ss);
        ts = s->teacher_shapes = calloc((size_t)s->teacher.n_taps + 1, sizeof *ts);
        st = ss && ts ? probe_taps(&s->student, shape_src, ss)
                      : kd_error(KD_ERR_NOMEM, "session: out of memory");
    }
    if (st == KD_OK && s->teacher.vt)
        st = probe_taps(&s->teacher, shape_src, ts);
    if (st == KD_OK && mode != KD_SESSION_TEACHER)
        st = check_logits(s, ss, s->teacher.vt ? ts : NULL);
    s->num_classes = ss && st == KD_OK ? (int)ss[s->student.logits].shape[1] : 0;
    if (st == KD_OK && mode == KD_SESSION_TRAIN) {
        s->losses = calloc((size_t)job->n_losses, sizeof *s->losses);
        if (!s->losses)
            st = kd_error(KD_ERR_NOMEM, "session: out of memory");
        for (int i = 0; st == KD_OK && i < job->n_losses; i++, s->n_losses++)
            st = open_loss(s, i, ss, ts);
        if (st == KD_OK)
            st = open_optimizer(s);
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
    free(s->params);
    for (int i = 0; i < s->n_losses; i++)
        close_loss(&s->losses[i]);
    free(s->losses);
    close_model(&s->teacher);
    close_model(&s->student);
    close_data(&s->train);
    close_data(&s->val);
    free(s->student_shapes);
    free(s->teacher_shapes);
    free(s);
}

int kd_session_groups(const kd_session *s, kd_tensor_group *groups, int max,
                      char (*prefixes)[24])
{
    int n = 0;
    if (n < max)
        groups[n++] = (kd_tensor_group){"student.", s->student.n_tensors, s->student.tensors};
    for (int i = 0; i < s->n_losses && n < max; i++) {
        if (!s->losses[i].n_tensors)
            continue;
        snprintf(prefixes[i], sizeof prefixes[i], "loss.%d.", i);
        groups[n++] = (kd_tensor_group){prefixes[i], s->losses[i].n_tensors, s->losses[i].tensors};
    }
    if (n < max && s->n_optim_state)
        groups[n++] = (kd_tensor_group){"optim.", s->n_optim_state, s->optim_state};
    return n;
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

/* One forward at batch 1: MACs, and the bytes a forward with autograd on
 * keeps per image (activations saved for backward). */
static kd_status measure(kd_model_run *m, const kd_data_run *d, bool grad, int64_t *macs,
                         int64_t *bytes)
{
    int64_t in_shape[4] = {1, d->channels, d->height, d->width};
    bool saved = kd_set_grad_enabled(grad);
    kd_scope_begin();
    kd_tensor *x = kd_tensor_zeros(m->dtype, KD_CPU, 4, in_shape);
    kd_macs_take();
    kd_alloc_bytes_take();
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args args = {x, grad, kd_rng_make(0, 0, 0), m->want, m->out};
    kd_status st = x ? m->vt->forward(m->self, &args) : KD_ERR_NOMEM;
    *macs = kd_macs_take();
    *bytes = kd_alloc_bytes_take();
    kd_scope_end();
    kd_set_grad_enabled(saved);
    return st;
}

/* The student is measured with autograd on (what a training step keeps),
 * the teacher under no-grad, as they run; MACs do not depend on it. */
static kd_status print_model(FILE *out, const char *role, kd_model_run *m,
                             const kd_data_run *d, bool grad, int64_t batch, int64_t *act_bytes)
{
    int64_t buffers, params = count_params(m, &buffers);
    int64_t macs = 0, bytes = 0;
    kd_status st = measure(m, d, grad, &macs, &bytes);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", m->spec->path);
    fprintf(out, "%s: %s (%s)\n", role, m->spec->entry->name,
            m->spec->weights ? m->spec->weights : "initialised from the seed");
    fprintf(out, "  parameters %lld (%.2f M), buffers %lld\n", (long long)params, params / 1e6,
            (long long)buffers);
    fprintf(out, "  %.2f MFLOPs per image (%lld multiply-adds, %dx%dx%d input)\n",
            2.0 * (double)macs / 1e6, (long long)macs, d->channels, d->height, d->width);
    fprintf(out, "  taps:");
    for (int i = 0; i < m->n_taps; i++)
        fprintf(out, "%s %s (%d ch, /%d)", i ? "," : "", m->taps[i].name, m->taps[i].channels,
                m->taps[i].reduction);
    fprintf(out, "\n");
    *act_bytes = bytes * batch;
    return KD_OK;
}

kd_status kd_session_plan(kd_session *s, FILE *out)
{
    const kd_job *job = s->job;
    const kd_data_run *d = s->train.vt ? &s->train : &s->val;
    int64_t batch = job->train.batch_size;
    fprintf(out, "job: %s\n", job->file);
    if (s->train.vt)
        fprintf(out, "data.train: %s, %lld of %lld samples, %dx%dx%d after %d transforms, batch "
                "%lld, %lld steps per epoch, %lld epochs\n", job->train.dataset->name,
                (long long)(job->train.subset ? job->train.subset : s->train.info.length),
                (long long)s->train.info.length, d->channels, d->height, d->width,
                job->train.n_transforms, (long long)batch,
                (long long)kd_session_steps_per_epoch(s), (long long)job->epochs);
    if (s->val.vt)
        fprintf(out, "data.val: %s, %lld samples\n", job->val.dataset->name,
                (long long)s->val.info.length);
    int64_t teacher_act = 0, student_act = 0;
    kd_status st = KD_OK;
    if (s->teacher.vt)
        st = print_model(out, "teacher", &s->teacher, d, false, batch, &teacher_act);
    if (st == KD_OK)
        st = print_model(out, "student", &s->student, d, true, batch, &student_act);
    if (st != KD_OK)
        return st;

    const kd_tap_shape *ss = s->student_shapes, *ts = s->teacher_shapes;
    for (int i = 0; i < s->n_losses; i++) {
        const kd_loss_run *l = &s->losses[i];
        fprintf(out, "%s: %s, weight %g%s\n", l->spec->path, l->spec->entry->name,
                l->spec->weight, l->spec->weight_warmup_epochs > 0 ? " (warm-up)" : "");
        for (int k = 0; k < l->needs.n_student + l->needs.n_teacher; k++) {
            bool st_side = k < l->needs.n_student;
            int tap = st_side ? l->student_taps[k] : l->teacher_taps[k - l->needs.n_student];
            const kd_tap_shape *sh = st_side ? &ss[tap] : &ts[tap];
            fprintf(out, "  reads %s.%s [%lld", st_side ? "student" : "teacher",
                    st_side ? s->student.taps[tap].name : s->teacher.taps[tap].name,
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
    int64_t input_bytes = (int64_t)kd_dtype_size(job->dtype) * batch * d->channels * d->height *
                          d->width;
    double mib = 1024.0 * 1024.0;
    fprintf(out, "memory per step (batch %lld, estimate): parameters + gradients %.1f MiB, "
            "optimizer state %.1f MiB, student activations %.1f MiB, teacher forward %.1f MiB, "
            "input %.1f MiB\n", (long long)batch, 2.0 * (double)param_bytes / mib,
            (double)state_bytes / mib, (double)student_act / mib, (double)teacher_act / mib,
            (double)input_bytes / mib);
    fprintf(out, "optim: %s, lr %g; schedule: %s over %lld epochs\n", job->optim->name, job->lr,
            job->schedule->name, (long long)job->epochs);
    return KD_OK;
}
