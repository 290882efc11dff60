/* The test kit for plugin authors (kdengine/testkit.h): the host's
 * registry and schemas behind a small API, a loss driver and an f64
 * gradient check. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/testkit.h>

#include "registry.h"

#define GRADCHECK_MAX_PROBES 256
#define FD_STEP 1e-6

/* An instance with what the kit keeps for it; the public part first. */
typedef struct instance {
    kd_testkit_instance pub;
    kd_testkit *kit;
    struct instance *next;
    const kd_registry_entry *entry;
    /* losses, from the first forward */
    bool bound;
    kd_loss_needs needs;
    kd_host_services host;
    int64_t *labels;
} instance;

struct kd_testkit {
    kd_registry *registry;
    char *path;
    instance *instances;
};

kd_status kd_testkit_open(const char *path, kd_testkit **out)
{
    *out = NULL;
    if (!path)
        return kd_error(KD_ERR_INVALID, "testkit: NULL plugin path");
    kd_testkit *kit = calloc(1, sizeof *kit);
    if (!kit || !(kit->path = strdup(path))) {
        free(kit);
        return kd_error(KD_ERR_NOMEM, "testkit: out of host memory");
    }
    kd_status st = kd_registry_new(&kit->registry);
    if (st == KD_OK)
        st = kd_registry_scan(kit->registry, path);
    if (st == KD_OK && kd_registry_count(kit->registry) == 0)
        st = kd_error(KD_ERR_INVALID, "no plugin manifest in '%s' or its folders", path);
    if (st != KD_OK) {
        kd_error_wrap(st, "testkit");
        kd_testkit_close(kit);
        return st;
    }
    *out = kit;
    return KD_OK;
}

void kd_testkit_close(kd_testkit *kit)
{
    if (!kit)
        return;
    while (kit->instances)
        kd_testkit_destroy(&kit->instances->pub);
    kd_registry_close(kit->registry);
    free(kit->path);
    free(kit);
}

/* "loss 'ce', loss 'kd'": what the kit has, for a provider it lacks. */
static void list_providers(const kd_registry *r, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < kd_registry_count(r) && used < size; i++) {
        const kd_registry_entry *e = kd_registry_at(r, i);
        int n = snprintf(buf + used, size - used, "%s%s '%s'", i ? ", " : "",
                         kd_plugin_kind_name(e->kind), e->name);
        used += n > 0 ? (size_t)n : 0;
    }
}

static kd_status build_params(const kd_registry_entry *e, const char *text, kd_params **out)
{
    json_error_t jerr;
    json_t *value = json_loads(text ? text : "{}", 0, &jerr);
    if (!value)
        return kd_error(KD_ERR_INVALID, "%s: %s '%s': params are not JSON: %s (line %d, column %d)",
                        e->manifest_path, kd_plugin_kind_name(e->kind), e->name, jerr.text,
                        jerr.line, jerr.column);
    kd_status st = kd_params_build(e, value, e->name, 0, NULL, out);
    json_decref(value);
    return st == KD_OK ? KD_OK : kd_error_wrap(st, "%s", e->manifest_path);
}

static kd_status call_create(const kd_testkit_spec *spec, const kd_vtable_header *vt,
                             const kd_create_args *args, void **self)
{
    const char *kind = kd_plugin_kind_name(spec->kind);
    if ((spec->kind == KD_KIND_OPTIMIZER || spec->kind == KD_KIND_SCHEDULER) && !spec->extra)
        return kd_error(KD_ERR_INVALID, "%s '%s': spec.extra must point to its %s", kind,
                        spec->provider,
                        spec->kind == KD_KIND_OPTIMIZER ? "kd_tensor_list of parameters"
                                                        : "kd_schedule_info");
    switch (spec->kind) {
    case KD_KIND_MODEL:
        return ((const kd_model_vtable *)vt)->create(args, self);
    case KD_KIND_LOSS:
        return ((const kd_loss_vtable *)vt)->create(args, self);
    case KD_KIND_DATASET:
        return ((const kd_dataset_vtable *)vt)->create(args, self);
    case KD_KIND_TRANSFORM:
        return ((const kd_transform_vtable *)vt)->create(args, self);
    case KD_KIND_BATCH_TRANSFORM:
        return ((const kd_batch_transform_vtable *)vt)->create(args, self);
    case KD_KIND_OPTIMIZER:
        return ((const kd_optimizer_vtable *)vt)->create(args, spec->extra, self);
    case KD_KIND_SCHEDULER:
        return ((const kd_scheduler_vtable *)vt)->create(args, spec->extra, self);
    default:
        return kd_error(KD_ERR_INVALID, "kind %d", (int)spec->kind);
    }
}

kd_status kd_testkit_create(kd_testkit *kit, const kd_testkit_spec *spec,
                            kd_testkit_instance **out)
{
    *out = NULL;
    if (!kit || !spec || !spec->provider)
        return kd_error(KD_ERR_INVALID, "testkit: create needs a kit, a spec and a provider");
    const char *kind = kd_plugin_kind_name(spec->kind);
    if (!kind)
        return kd_error(KD_ERR_INVALID, "testkit: '%s': unknown kind %d", spec->provider,
                        (int)spec->kind);
    const kd_registry_entry *e = kd_registry_find(kit->registry, spec->kind, spec->provider);
    if (!e) {
        char have[512];
        list_providers(kit->registry, have, sizeof have);
        return kd_error(KD_ERR_INVALID, "testkit: no %s '%s' in '%s' (it has %s)", kind,
                        spec->provider, kit->path, have);
    }
    const kd_vtable_header *vt;
    const kd_plugin_provider *provider;
    kd_status st = kd_registry_load(kit->registry, e, &vt, &provider);
    kd_params *params = NULL;
    if (st == KD_OK)
        st = build_params(e, spec->params, &params);
    instance *in = NULL;
    if (st == KD_OK && !(in = calloc(1, sizeof *in)))
        st = kd_error(KD_ERR_NOMEM, "out of host memory");
    if (st == KD_OK) {
        const kd_create_args args = {.size = sizeof args,
                                     .params = params,
                                     .seed = spec->seed,
                                     .device = KD_CPU,
                                     .dtype = spec->dtype,
                                     .provider = e->name,
                                     .provider_data = provider->user_data};
        st = call_create(spec, vt, &args, &in->pub.self);
        if (st != KD_OK)
            kd_error_wrap(st, "%s '%s': create", kind, e->name);
    }
    kd_params_free(params);
    if (st != KD_OK) {
        free(in);
        return kd_error_wrap(st, "testkit");
    }
    in->pub = (kd_testkit_instance){spec->kind, e->name, vt, in->pub.self};
    in->kit = kit;
    in->entry = e;
    in->next = kit->instances;
    kit->instances = in;
    *out = &in->pub;
    return KD_OK;
}

static void call_destroy(const kd_testkit_instance *p)
{
    /* destroy() sits right after create() in every kind's vtable, but the
     * kinds' structs are distinct types: go through each. */
    switch (p->kind) {
    case KD_KIND_MODEL: ((const kd_model_vtable *)p->vtable)->destroy(p->self); break;
    case KD_KIND_LOSS: ((const kd_loss_vtable *)p->vtable)->destroy(p->self); break;
    case KD_KIND_DATASET: ((const kd_dataset_vtable *)p->vtable)->destroy(p->self); break;
    case KD_KIND_TRANSFORM: ((const kd_transform_vtable *)p->vtable)->destroy(p->self); break;
    case KD_KIND_BATCH_TRANSFORM:
        ((const kd_batch_transform_vtable *)p->vtable)->destroy(p->self);
        break;
    case KD_KIND_OPTIMIZER: ((const kd_optimizer_vtable *)p->vtable)->destroy(p->self); break;
    case KD_KIND_SCHEDULER: ((const kd_scheduler_vtable *)p->vtable)->destroy(p->self); break;
    default: break;
    }
}

void kd_testkit_destroy(kd_testkit_instance *p)
{
    if (!p)
        return;
    instance *in = (instance *)p;
    for (instance **at = &in->kit->instances; *at; at = &(*at)->next) {
        if (*at == in) {
            *at = in->next;
            break;
        }
    }
    call_destroy(p);
    free(in->labels);
    free(in);
}

/* ------------------------------------------------------------- losses */

static kd_status host_train_labels(void *host, const int64_t **labels)
{
    instance *in = host;
    if (!in->labels)
        return kd_error(KD_ERR_INVALID, "testkit: loss '%s' asked for train_labels, and the "
                                        "batch has no labels", in->pub.provider);
    *labels = in->labels;
    return KD_OK;
}

static kd_status host_forward_from(void *host, kd_model_role role, const char *from,
                                   kd_tensor *input, const char *to, bool training,
                                   kd_tensor **out)
{
    (void)role, (void)input, (void)training;
    instance *in = host;
    *out = NULL;
    return kd_error(KD_ERR_UNSUPPORTED,
                    "testkit: loss '%s' asked for forward_from(%s -> %s): the kit runs no models",
                    in->pub.provider, from, to);
}

static kd_status host_all_reduce(void *host, kd_tensor *t, kd_reduce_op op)
{
    (void)host, (void)t, (void)op;
    return KD_OK;
}

static kd_status host_all_gather(void *host, kd_tensor *t, kd_tensor **out)
{
    (void)host;
    *out = t;
    return KD_OK;
}

/* Tap info for a tensor the test hands in, guessed from its rank. */
static kd_tap_info tap_info(const char *name, const kd_tensor *t)
{
    kd_tap_layout layout = t->ndim == 2 ? KD_LAYOUT_NC
                         : t->ndim == 3 ? KD_LAYOUT_TOKENS
                                        : KD_LAYOUT_NCHW;
    int channels = (int)(layout == KD_LAYOUT_TOKENS ? t->shape[2] : t->shape[1]);
    return (kd_tap_info){name, channels, 1, layout, 0};
}

/* The taps' tensors exist and are at least [N, C]; names the first bad. */
static kd_status check_taps(const instance *in, const char *who, int n, const char *const *names,
                            kd_tensor *const *taps)
{
    if (n > 0 && !taps)
        return kd_error(KD_ERR_INVALID, "testkit: loss '%s' needs %d %s tap(s) (first: %s); "
                                        "the batch has none", in->pub.provider, n, who, names[0]);
    for (int i = 0; i < n; i++)
        if (!taps[i] || taps[i]->ndim < 2)
            return kd_error(KD_ERR_INVALID, "testkit: loss '%s': %s tap %d (%s) is %s",
                            in->pub.provider, who, i, names[i],
                            taps[i] ? "not [N, C, ...]" : "NULL");
    return KD_OK;
}

static kd_status bind_loss(instance *in, const kd_loss_vtable *vt, const kd_testkit_batch *b)
{
    int ns = in->needs.n_student, nt = in->needs.n_teacher, n = ns + nt;
    kd_tap_shape *shapes = calloc((size_t)(n ? n : 1), sizeof *shapes);
    kd_tap_info *infos = calloc((size_t)(n ? n : 1), sizeof *infos);
    kd_status st = shapes && infos ? KD_OK : kd_error(KD_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < n && st == KD_OK; i++) {
        const kd_tensor *t = i < ns ? b->student[i] : b->teacher[i - ns];
        shapes[i].ndim = t->ndim;
        memcpy(shapes[i].shape, t->shape, sizeof t->shape);
        shapes[i].shape[0] = 1;
        infos[i] = tap_info(i < ns ? in->needs.student[i] : in->needs.teacher[i - ns], t);
    }
    kd_tensor *labels = b->labels;
    int64_t length = b->student[0]->shape[0];
    if (st == KD_OK && labels) {
        if (labels->dtype != KD_I64 || kd_tensor_numel(labels) != length)
            st = kd_error(KD_ERR_INVALID, "testkit: loss '%s': labels must be I64 [%lld]",
                          in->pub.provider, (long long)length);
        else if (!(in->labels = malloc((size_t)length * sizeof *in->labels)))
            st = kd_error(KD_ERR_NOMEM, "out of host memory");
        for (int64_t i = 0; st == KD_OK && i < length; i++)
            in->labels[i] = (int64_t)kd_tensor_get(labels, i);
    }
    in->host = (kd_host_services){.size = sizeof in->host,
                                  .host = in,
                                  .num_classes = (int)b->student[ns - 1]->shape[1],
                                  .train_length = length,
                                  .rank = 0,
                                  .world_size = 1,
                                  .train_labels = host_train_labels,
                                  .forward_from = host_forward_from,
                                  .all_reduce = host_all_reduce,
                                  .all_gather = host_all_gather};
    if (st == KD_OK && vt->bind) {
        const kd_bind_args args = {.size = sizeof args,
                                   .student = shapes,
                                   .teacher = nt ? shapes + ns : NULL,
                                   .student_info = infos,
                                   .teacher_info = nt ? infos + ns : NULL,
                                   .host = &in->host};
        st = vt->bind(in->pub.self, &args);
        if (st != KD_OK)
            kd_error_wrap(st, "testkit: loss '%s': bind", in->pub.provider);
    }
    free(shapes);
    free(infos);
    return st;
}

/* needs() once, the taps checked against it on every call. */
static kd_status check_batch(instance *in, const kd_testkit_batch *batch)
{
    kd_testkit_instance *loss = &in->pub;
    if (!in->bound) {
        kd_status st = ((const kd_loss_vtable *)loss->vtable)->needs(loss->self, &in->needs);
        if (st != KD_OK)
            return kd_error_wrap(st, "testkit: loss '%s': needs", loss->provider);
        if (in->needs.n_student < 1)
            return kd_error(KD_ERR_INVALID, "testkit: loss '%s' needs no student tap",
                            loss->provider);
    }
    kd_status st = check_taps(in, "student", in->needs.n_student, in->needs.student,
                              batch->student);
    return st == KD_OK ? check_taps(in, "teacher", in->needs.n_teacher, in->needs.teacher,
                                    batch->teacher)
                       : st;
}

static bool is_loss(const kd_testkit_instance *p) { return p && p->kind == KD_KIND_LOSS; }

kd_status kd_testkit_loss_bind(kd_testkit_instance *loss, const kd_testkit_batch *batch)
{
    if (!is_loss(loss) || !batch)
        return kd_error(KD_ERR_INVALID, "testkit: loss_bind needs a loss and a batch");
    instance *in = (instance *)loss;
    const kd_loss_vtable *vt = (const kd_loss_vtable *)loss->vtable;
    if (in->bound)
        return KD_OK;
    kd_status st = check_batch(in, batch);
    /* bind() makes the loss's own tensors, which must outlive every step */
    if (st == KD_OK && vt->bind && kd_scope_depth() > 0)
        st = kd_error(KD_ERR_STATE, "testkit: loss '%s' has bind(), which must run outside any "
                                    "scope: call kd_testkit_loss_bind before kd_scope_begin",
                      loss->provider);
    if (st == KD_OK)
        st = bind_loss(in, vt, batch);
    in->bound = st == KD_OK;
    return st;
}

kd_status kd_testkit_loss_forward(kd_testkit_instance *loss, const kd_testkit_batch *batch,
                                  kd_loss_result *out)
{
    if (!is_loss(loss) || !batch || !out)
        return kd_error(KD_ERR_INVALID, "testkit: loss_forward needs a loss, a batch and a result");
    instance *in = (instance *)loss;
    kd_status st = in->bound ? check_batch(in, batch) : kd_testkit_loss_bind(loss, batch);
    if (st != KD_OK)
        return st;
    const kd_loss_args args = {.size = sizeof args,
                               .student = batch->student,
                               .teacher = in->needs.n_teacher ? batch->teacher : NULL,
                               .labels = batch->labels,
                               .soft_targets = batch->soft_targets,
                               .training = true,
                               .rng = kd_rng_make(0, 0, 0)};
    *out = (kd_loss_result){.size = sizeof *out};
    st = ((const kd_loss_vtable *)loss->vtable)->forward(loss->self, &args, out);
    return st == KD_OK ? KD_OK : kd_error_wrap(st, "loss '%s'", loss->provider);
}

/* ---------------------------------------------------------- gradcheck */

/* sum(w * fn(inputs)) with grad mode off, in its own scope. */
static kd_status weighted_output(kd_testkit_fn fn, void *ctx, kd_tensor *const *inputs,
                                 const kd_tensor *w, double *out)
{
    bool was = kd_set_grad_enabled(false);
    kd_scope_begin();
    kd_tensor *y = fn(ctx, inputs);
    kd_status st = KD_OK;
    if (!y)
        st = kd_error_wrap(kd_last_status(), "gradcheck: the function while probing");
    else if (kd_tensor_numel(y) != kd_tensor_numel(w))
        st = kd_error(KD_ERR_INVALID, "gradcheck: the output changed size while probing");
    double s = 0;
    for (int64_t i = 0, n = st == KD_OK ? kd_tensor_numel(w) : 0; i < n; i++)
        s += kd_tensor_get(y, i) * kd_tensor_get(w, i);
    kd_scope_end();
    kd_set_grad_enabled(was);
    *out = s;
    return st;
}

static kd_status check_inputs(int n, kd_tensor *const *inputs)
{
    for (int k = 0; k < n; k++) {
        const kd_tensor *x = inputs ? inputs[k] : NULL;
        if (!x)
            return kd_error(KD_ERR_INVALID, "gradcheck: input %d is NULL", k);
        if (x->requires_grad && (x->dtype != KD_F64 || x->device != KD_CPU ||
                                 !kd_tensor_is_contiguous(x) || x->grad_fn))
            return kd_error(KD_ERR_INVALID,
                            "gradcheck: input %d must be a contiguous f64 CPU leaf (it is %s)", k,
                            kd_dtype_name(x->dtype));
    }
    return KD_OK;
}

/* Compares the analytic gradients in inputs[k]->grad with central
 * differences; fills *r. */
static kd_status probe(kd_testkit_fn fn, void *ctx, int n, kd_tensor *const *inputs,
                       const kd_tensor *w, kd_testkit_gradcheck_report *r)
{
    r->max_error = -1;
    for (int k = 0; k < n; k++) {
        kd_tensor *x = inputs[k];
        if (!x->requires_grad)
            continue;
        int64_t count = kd_tensor_numel(x);
        int64_t step = count > GRADCHECK_MAX_PROBES ? count / GRADCHECK_MAX_PROBES : 1;
        double *d = kd_tensor_data(x);
        for (int64_t j = 0; j < count; j += step) {
            double v = d[j], plus, minus;
            d[j] = v + FD_STEP;
            kd_status st = weighted_output(fn, ctx, inputs, w, &plus);
            d[j] = v - FD_STEP;
            if (st == KD_OK)
                st = weighted_output(fn, ctx, inputs, w, &minus);
            d[j] = v;
            if (st != KD_OK)
                return st;
            double numeric = (plus - minus) / (2 * FD_STEP);
            double analytic = x->grad ? kd_tensor_get(x->grad, j) : 0.0;
            double abs_error = fabs(analytic - numeric);
            double error = abs_error / fmax(1.0, fabs(numeric));
            r->probes++;
            r->max_abs_error = fmax(r->max_abs_error, abs_error);
            if (!(error <= r->max_error)) { /* a NaN is the worst */
                *r = (kd_testkit_gradcheck_report){r->max_abs_error, error, k, j, analytic,
                                                   numeric, r->probes};
            }
        }
    }
    if (r->max_error < 0)
        r->max_error = 0;
    return KD_OK;
}

kd_status kd_testkit_gradcheck(kd_testkit_fn fn, void *ctx, int n_inputs,
                               kd_tensor *const *inputs, double tol,
                               kd_testkit_gradcheck_report *report)
{
    kd_testkit_gradcheck_report r = {0};
    kd_status st = fn ? check_inputs(n_inputs, inputs)
                      : kd_error(KD_ERR_INVALID, "gradcheck: NULL function");
    bool any = false;
    for (int k = 0; st == KD_OK && k < n_inputs; k++) {
        any = any || inputs[k]->requires_grad;
        kd_tensor_zero_grad(inputs[k]);
    }
    if (st == KD_OK && !any)
        st = kd_error(KD_ERR_INVALID, "gradcheck: no input requires grad");
    if (st == KD_OK) {
        bool was = kd_set_grad_enabled(true);
        kd_scope_begin();
        kd_tensor *y = fn(ctx, inputs), *w = NULL;
        if (!y)
            st = kd_error_wrap(kd_last_status(), "gradcheck: the function");
        else if (y->dtype != KD_F64)
            st = kd_error(KD_ERR_INVALID, "gradcheck: the function returned %s, not f64",
                          kd_dtype_name(y->dtype));
        else if (!y->requires_grad)
            st = kd_error(KD_ERR_INVALID, "gradcheck: the output does not require grad "
                                          "(nothing recorded)");
        if (st == KD_OK) {
            kd_rng rng = kd_rng_make(0x6b64746b, 0, 0); /* fixed: runs compare */
            w = kd_tensor_empty(KD_F64, KD_CPU, y->ndim, y->shape);
            if (!w)
                st = kd_error_wrap(kd_last_status(), "gradcheck: weights");
            for (int64_t i = 0, n = w ? kd_tensor_numel(w) : 0; i < n; i++)
                ((double *)kd_tensor_data(w))[i] = 2 * kd_rng_uniform(&rng) - 1;
        }
        if (st == KD_OK && (st = kd_backward_with(y, w)) != KD_OK)
            kd_error_wrap(st, "gradcheck: backward");
        if (st == KD_OK)
            st = probe(fn, ctx, n_inputs, inputs, w, &r);
        kd_scope_end();
        kd_set_grad_enabled(was);
    }
    if (st == KD_OK && !(r.max_error <= tol))
        st = kd_error(KD_ERR_INVALID,
                      "gradcheck: input %d element %lld: analytic %.9g, numeric %.9g "
                      "(error %.3g > %.3g)",
                      r.input, (long long)r.element, r.analytic, r.numeric, r.max_error, tol);
    if (report)
        *report = r;
    return st;
}

typedef struct loss_call {
    kd_testkit_instance *loss;
    const kd_testkit_batch *batch;
} loss_call;

/* The loss value as a function of the student taps. */
static kd_tensor *loss_value(void *ctx, kd_tensor *const *student)
{
    const loss_call *c = ctx;
    kd_testkit_batch b = *c->batch;
    b.student = student;
    kd_loss_result r;
    return kd_testkit_loss_forward(c->loss, &b, &r) == KD_OK ? r.loss : NULL;
}

kd_status kd_testkit_loss_gradcheck(kd_testkit_instance *loss, const kd_testkit_batch *batch,
                                    double tol, kd_testkit_gradcheck_report *report)
{
    if (!is_loss(loss) || !batch)
        return kd_error(KD_ERR_INVALID, "testkit: loss_gradcheck needs a loss and a batch");
    instance *in = (instance *)loss;
    kd_status st = kd_testkit_loss_bind(loss, batch); /* so the student count is known */
    if (st != KD_OK)
        return st;
    loss_call call = {loss, batch};
    st = kd_testkit_gradcheck(loss_value, &call, in->needs.n_student, batch->student, tol,
                              report);
    return st == KD_OK ? KD_OK : kd_error_wrap(st, "loss '%s'", loss->provider);
}
