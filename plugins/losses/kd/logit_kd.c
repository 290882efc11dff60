#include "logit_kd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>

/* Added to the standard deviation, not the variance, as the paper's code. */
#define ZSCORE_EPS 1e-7


typedef struct logit_kd {
    const char *provider;
    kd_loss_term term; /* the loss itself, under the provider's term name */
    const char *taps[2]; /* student, teacher: owned copies */
    double temperature;
    bool standardize;
} logit_kd;

kd_status logit_kd_create(const logit_kd_options *o, void **self)
{
    if (!(o->temperature > 0) || !isfinite(o->temperature))
        return kd_error(KD_ERR_INVALID, "%s: temperature must be a finite number > 0, got %g",
                        o->provider, o->temperature);
    logit_kd *k = calloc(1, sizeof *k);
    char *student = strdup(o->student_tap), *teacher = strdup(o->teacher_tap);
    if (!k || !student || !teacher) {
        free(k);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", o->provider);
    }
    k->provider = o->provider;
    k->term.name = o->term;
    k->taps[0] = student;
    k->taps[1] = teacher;
    k->temperature = o->temperature;
    k->standardize = o->standardize;
    *self = k;
    return KD_OK;
}

void logit_kd_destroy(void *self)
{
    logit_kd *k = self;
    if (!k)
        return;
    free((void *)k->taps[0]);
    free((void *)k->taps[1]);
    free(k);
}

kd_status logit_kd_needs(void *self, kd_loss_needs *out)
{
    logit_kd *k = self;
    out->n_student = 1;
    out->student = &k->taps[0];
    out->n_teacher = 1;
    out->teacher = &k->taps[1];
    return KD_OK;
}

/* Z-scoring divides by an unbiased std: one class leaves nothing to divide. */
static kd_status check_classes(const logit_kd *k, int64_t classes)
{
    if (k->standardize && classes < 2)
        return kd_error(KD_ERR_INVALID,
                        "%s: logit standardization needs at least 2 classes, got %lld",
                        k->provider, (long long)classes);
    return KD_OK;
}

kd_status logit_kd_bind(void *self, const kd_bind_args *args)
{
    logit_kd *k = self;
    const kd_tap_shape *student = args->student, *teacher = args->teacher;
    if (student->ndim != 2 || teacher->ndim != 2 || student->shape[1] != teacher->shape[1]) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "%s: student tap '%s' %s and teacher tap '%s' %s must both be "
                        "[N, classes] logits with the same classes",
                        k->provider, k->taps[0], kd_tap_shape_str(student, a, sizeof a),
                        k->taps[1], kd_tap_shape_str(teacher, b, sizeof b));
    }
    return check_classes(k, student->shape[1]);
}

/* log softmax(f(x) / T) over the classes. */
static kd_tensor *log_probs(const logit_kd *k, kd_tensor *x)
{
    if (k->standardize)
        return kd_log_softmax(kd_mul_scalar(kd_zscore(x, ZSCORE_EPS), 1 / k->temperature), 1);
    if (k->temperature == 1)
        return kd_log_softmax(x, 1);
    return kd_log_softmax(kd_mul_scalar(x, 1 / k->temperature), 1);
}

kd_status logit_kd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    logit_kd *k = self;
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    if (!s)
        return kd_error(KD_ERR_INVALID, "%s: no student tensor for tap '%s'", k->provider,
                        k->taps[0]);
    if (!t)
        return kd_error(KD_ERR_INVALID,
                        "%s: no teacher tensor for tap '%s' (the job needs a teacher)",
                        k->provider, k->taps[1]);
    if (s->ndim != 2 || !kd_tensor_same_shape(s, t)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "%s: student logits %s (tap '%s') and teacher logits %s (tap '%s') "
                        "must be the same [N, classes]",
                        k->provider, kd_shape_str(s, a, sizeof a), k->taps[0],
                        kd_shape_str(t, b, sizeof b), k->taps[1]);
    }
    kd_status st = check_classes(k, s->shape[1]);
    if (st != KD_OK)
        return st;

    /* The teacher is a constant: nothing on its side is recorded. */
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *teacher = t->dtype == s->dtype ? t : kd_cast(t, s->dtype);
    kd_tensor *log_q = log_probs(k, teacher);
    kd_set_grad_enabled(grad);

    /* Both sides in log space: identical logits give exactly 0. */
    kd_tensor *kl = kd_kl_div(log_probs(k, s), log_q, true, KD_REDUCE_BATCHMEAN);
    double t2 = k->temperature * k->temperature;
    kd_tensor *loss = t2 == 1 ? kl : kd_mul_scalar(kl, t2);
    if (!loss)
        return kd_error_wrap(kd_last_status(), "%s", k->provider);
    k->term.value = loss;
    out->loss = loss;
    out->n_terms = 1;
    out->terms = &k->term;
    return KD_OK;
}
