/* The jsd loss plugin: the JS-divergence loss PaddleClas's SSLD distils
 * with (its JSDivLoss, now DMLLoss with act softmax). With p the student's
 * softmax, q the teacher's and C classes, PaddleClas averages over the
 * [N, C] elements
 *
 *   C / 2 * (q log((q + eps) / (p + eps)) + p log((p + eps) / (q + eps)))
 *
 * which is (1 / 2N) sum (p - q) (log(p + eps) - log(q + eps)): every term
 * is >= 0, so the sum loses nothing to cancellation. sum_classes (its
 * sum_across_class_dim) multiplies by C. The teacher is a constant; no
 * label is read, so unlabeled samples train the student too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

typedef struct jsd {
    const char *provider;
    const char *taps[2]; /* student, teacher: owned copies */
    double eps;
    bool sum_classes;
    kd_loss_term term;
} jsd;

static void jsd_destroy(void *self)
{
    jsd *j = self;
    if (!j)
        return;
    free((void *)j->taps[0]);
    free((void *)j->taps[1]);
    free(j);
}

static kd_status jsd_create(const kd_create_args *args, void **self)
{
    const char *provider = args->provider ? args->provider : "jsd";
    double eps = kd_params_number(args->params, "eps");
    if (!(eps >= 0) || !isfinite(eps))
        return kd_error(KD_ERR_INVALID, "%s: eps must be a finite number >= 0, got %g", provider,
                        eps);
    jsd *j = calloc(1, sizeof *j);
    char *student = strdup(kd_params_string(args->params, "student_tap"));
    char *teacher = strdup(kd_params_string(args->params, "teacher_tap"));
    if (!j || !student || !teacher) {
        free(j);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", provider);
    }
    j->provider = provider;
    j->taps[0] = student;
    j->taps[1] = teacher;
    j->eps = eps;
    j->sum_classes = kd_params_boolean(args->params, "sum_classes");
    j->term.name = "jsd";
    *self = j;
    return KD_OK;
}

static kd_status jsd_needs(void *self, kd_loss_needs *out)
{
    jsd *j = self;
    out->n_student = 1;
    out->student = &j->taps[0];
    out->n_teacher = 1;
    out->teacher = &j->taps[1];
    return KD_OK;
}

static kd_status jsd_bind(void *self, const kd_bind_args *args)
{
    jsd *j = self;
    const kd_tap_shape *s = args->student, *t = args->teacher;
    if (s->ndim != 2 || t->ndim != 2 || s->shape[1] != t->shape[1])
        return kd_error(KD_ERR_INVALID, "%s: student tap '%s' (%d dims) and teacher tap '%s' "
                        "(%d dims) must both be [N, classes] logits with the same classes",
                        j->provider, j->taps[0], s->ndim, j->taps[1], t->ndim);
    return KD_OK;
}

static kd_status jsd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    jsd *j = self;
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    if (!s)
        return kd_error(KD_ERR_INVALID, "%s: no student tensor for tap '%s'", j->provider,
                        j->taps[0]);
    if (!t)
        return kd_error(KD_ERR_INVALID, "%s: no teacher tensor for tap '%s' (the job needs a "
                        "teacher)", j->provider, j->taps[1]);
    if (s->ndim != 2 || !kd_tensor_same_shape(s, t)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID, "%s: student logits %s (tap '%s') and teacher logits %s "
                        "(tap '%s') must be the same [N, classes]", j->provider,
                        kd_shape_str(s, a, sizeof a), j->taps[0], kd_shape_str(t, b, sizeof b),
                        j->taps[1]);
    }
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *q = kd_softmax(t->dtype == s->dtype ? t : kd_cast(t, s->dtype), 1);
    kd_tensor *log_q = kd_log(kd_add_scalar(q, j->eps));
    kd_set_grad_enabled(grad);

    kd_tensor *p = kd_softmax(s, 1);
    kd_tensor *terms = kd_mul(kd_sub(p, q), kd_sub(kd_log(kd_add_scalar(p, j->eps)), log_q));
    double scale = (j->sum_classes ? (double)s->shape[1] : 1.0) / (2.0 * (double)s->shape[0]);
    kd_tensor *loss = kd_mul_scalar(kd_sum_all(terms), scale);
    if (!loss)
        return kd_error_wrap(kd_last_status(), "%s", j->provider);
    j->term.value = loss;
    out->loss = loss;
    out->n_terms = 1;
    out->terms = &j->term;
    return KD_OK;
}

static const kd_loss_vtable jsd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = jsd_create,
    .destroy = jsd_destroy,
    .needs = jsd_needs,
    .forward = jsd_forward,
    .bind = jsd_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "jsd", &jsd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "jsd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
