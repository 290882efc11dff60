/* The parts of ABI 2 a job exercises end to end, for tests/test_job.c:
 * - loss "owned_scale" owns a parameter "proj.weight" ([1], starting at
 *   1): loss = mean((w * student - teacher)^2) over the logits. Two of them
 *   in one job must train apart (loss.0.proj.weight, loss.1.proj.weight);
 * - loss "through_teacher" uses the host services: it runs the teacher
 *   from "stage3" on the student's stage3 features up to "logits" with
 *   gradients on, checks every label of the batch against train_labels at
 *   its dataset index, and passes the result through the collectives:
 *   loss = mean((that - teacher logits)^2), terms "through" and "labels";
 * - batch transform "blend": images = lam * x + (1 - lam) * (x with the
 *   batch reversed), soft targets likewise from the labels; with
 *   "forget_soft" it leaves no soft targets, which the host must refuse. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

/* ------------------------------------------------------------ owned_scale */

typedef struct owned_scale {
    kd_tensor *weight;
    kd_named_tensor list[1];
    kd_loss_term term;
} owned_scale;

static const char *const logits[] = {"logits"};

static kd_status scale_create(const kd_create_args *args, void **self)
{
    owned_scale *o = calloc(1, sizeof *o);
    if (!o)
        return kd_error(KD_ERR_NOMEM, "owned_scale: out of memory");
    const int64_t one = 1;
    o->weight = kd_tensor_full(args->dtype, KD_CPU, 1, &one, 1.0);
    o->list[0] = (kd_named_tensor){"proj.weight", o->weight, KD_TENSOR_PARAM};
    o->term.name = "scaled_mse";
    *self = o;
    return o->weight ? KD_OK : kd_error(KD_ERR_NOMEM, "owned_scale: out of memory");
}

static void scale_destroy(void *self)
{
    owned_scale *o = self;
    if (o)
        kd_tensor_free(o->weight);
    free(o);
}

static kd_status logits_needs(void *self, kd_loss_needs *out)
{
    (void)self;
    *out = (kd_loss_needs){1, logits, 1, logits};
    return KD_OK;
}

static kd_status scale_tensors(void *self, kd_tensor_list *out)
{
    owned_scale *o = self;
    KD_LIST_SET(out, o->list, 1);
    return KD_OK;
}

static kd_status scale_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    owned_scale *o = self;
    kd_tensor *d = kd_sub(kd_mul(args->student[0], o->weight), args->teacher[0]);
    o->term.value = kd_mean_all(kd_mul(d, d));
    out->loss = o->term.value;
    out->n_terms = 1;
    out->terms = &o->term;
    return out->loss ? KD_OK : kd_error_wrap(kd_last_status(), "owned_scale");
}

static const kd_loss_vtable scale_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = scale_create,
    .destroy = scale_destroy,
    .needs = logits_needs,
    .forward = scale_forward,
    .tensors = scale_tensors,
};

/* -------------------------------------------------------- through_teacher */

typedef struct through {
    const kd_host_services *host;
    kd_loss_term terms[2];
} through;

static const char *const student_taps[] = {"stage3", "logits"};

static kd_status through_create(const kd_create_args *args, void **self)
{
    (void)args;
    through *t = calloc(1, sizeof *t);
    if (!t)
        return kd_error(KD_ERR_NOMEM, "through_teacher: out of memory");
    t->terms[0].name = "through";
    t->terms[1].name = "labels";
    *self = t;
    return KD_OK;
}

static void through_destroy(void *self) { free(self); }

static kd_status through_needs(void *self, kd_loss_needs *out)
{
    (void)self;
    *out = (kd_loss_needs){2, student_taps, 1, logits};
    return KD_OK;
}

static kd_status through_bind(void *self, const kd_bind_args *args)
{
    through *t = self;
    if (!KD_HAS_FIELD(args, kd_bind_args, host) || !args->host)
        return kd_error(KD_ERR_STATE, "through_teacher: no host services");
    if (args->student_info[0].layout != KD_LAYOUT_NCHW ||
        args->student_info[1].layout != KD_LAYOUT_NC)
        return kd_error(KD_ERR_INVALID, "through_teacher: stage3 is not NCHW or logits not NC");
    t->host = args->host;
    return KD_OK;
}

static kd_status through_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    through *t = self;
    const kd_host_services *h = t->host;
    const int64_t *labels;
    kd_status st = h->train_labels(h->host, &labels);
    if (st != KD_OK)
        return st;
    int64_t n = args->labels->shape[0], mismatches = 0;
    const int64_t *y = kd_tensor_data(args->labels), *index = kd_tensor_data(args->indices);
    for (int64_t i = 0; i < n; i++)
        mismatches += index[i] < 0 || index[i] >= h->train_length || labels[index[i]] != y[i];
    if (mismatches)
        return kd_error(KD_ERR_INVALID, "through_teacher: %lld labels differ from "
                        "train_labels", (long long)mismatches);
    kd_tensor *z, *gathered;
    st = h->forward_from(h->host, KD_ROLE_TEACHER, "stage3", args->student[0], "logits", false,
                         &z);
    if (st == KD_OK)
        st = h->all_gather(h->host, z, &gathered);
    kd_tensor *d = st == KD_OK ? kd_sub(gathered, args->teacher[0]) : NULL;
    t->terms[0].value = d ? kd_mean_all(kd_mul(d, d)) : NULL;
    if (st == KD_OK && !t->terms[0].value)
        st = kd_error_wrap(kd_last_status(), "through_teacher");
    if (st == KD_OK)
        st = h->all_reduce(h->host, t->terms[0].value, KD_REDUCE_OP_MEAN);
    const int64_t one = 1;
    t->terms[1].value = kd_tensor_full(KD_F64, KD_CPU, 0, &one, (double)n);
    out->loss = t->terms[0].value;
    out->n_terms = 2;
    out->terms = t->terms;
    return st;
}

static const kd_loss_vtable through_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = through_create,
    .destroy = through_destroy,
    .needs = through_needs,
    .forward = through_forward,
    .bind = through_bind,
};

/* ------------------------------------------------------------------ blend */

typedef struct blend {
    double lam;
    bool forget_soft;
} blend;

static kd_status blend_create(const kd_create_args *args, void **self)
{
    blend *b = malloc(sizeof *b);
    if (!b)
        return kd_error(KD_ERR_NOMEM, "blend: out of memory");
    b->lam = kd_params_number(args->params, "lambda");
    b->forget_soft = kd_params_boolean(args->params, "forget_soft");
    *self = b;
    return KD_OK;
}

static void blend_destroy(void *self) { free(self); }

static kd_status blend_apply(void *self, kd_batch_args *args)
{
    const blend *b = self;
    int64_t n = args->images->shape[0], classes = args->num_classes;
    kd_tensor *reversed = kd_tensor_empty(KD_I64, KD_CPU, 1, &n);
    kd_tensor *soft = kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){n, classes});
    if (!reversed || !soft)
        return kd_error(KD_ERR_NOMEM, "blend: out of memory");
    int64_t *r = kd_tensor_data(reversed);
    const int64_t *y = kd_tensor_data(args->labels);
    float *s = kd_tensor_data(soft);
    for (int64_t i = 0; i < n; i++) {
        r[i] = n - 1 - i;
        s[i * classes + y[i]] += (float)b->lam;
        s[i * classes + y[n - 1 - i]] += (float)(1 - b->lam);
    }
    kd_tensor *other = kd_index_select(args->images, 0, reversed);
    args->images = kd_add(kd_mul_scalar(args->images, b->lam), kd_mul_scalar(other, 1 - b->lam));
    args->soft_targets = b->forget_soft ? NULL : soft;
    return args->images ? KD_OK : kd_error_wrap(kd_last_status(), "blend");
}

static const kd_batch_transform_vtable blend_vtable = {
    .header = {sizeof(kd_batch_transform_vtable), KD_KIND_BATCH_TRANSFORM},
    .create = blend_create,
    .destroy = blend_destroy,
    .apply = blend_apply,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "owned_scale", &scale_vtable.header, NULL},
    {KD_KIND_LOSS, "through_teacher", &through_vtable.header, NULL},
    {KD_KIND_BATCH_TRANSFORM, "blend", &blend_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "abi2_parts", "0.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 3);
    return KD_OK;
}
