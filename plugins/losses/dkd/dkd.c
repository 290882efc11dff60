/* The dkd loss: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022).
 *
 * With x = z / T (or Z(z) / T under logit_stand, Sun et al. CVPR 2024), g
 * the label, and LSE the log-sum-exp over a row:
 *
 *   log b   = log_softmax([x_g, LSE_{c != g} x_c])     target vs the rest
 *   log p^  = log_softmax(x_c for c != g)             the rest among itself
 *   TCKD    = T^2 * (1/N) * sum_n KL(b_teacher  || b_student)
 *   NCKD    = T^2 * (1/N) * sum_n KL(p^_teacher || p^_student)
 *   L       = min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)
 *
 * epoch 1-based, as the authors' trainer counts. Rows without a label
 * (KD_LABEL_NONE: unlabeled samples) are left out, so 1/N counts the
 * labeled rows; a batch with none gives 0 and zero gradients. Everything stays in log
 * space: the reference code takes the log of summed probabilities, which
 * is log(0) in float32 once the student is confident enough (exp(-104)
 * underflows), and it gets p^ by subtracting 1000 from the target logit
 * where excluding the column is exact. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "../common/labeled_rows.h"

/* Added to the standard deviation, not the variance, as the paper's code. */
#define ZSCORE_EPS 1e-7

typedef struct dkd {
    const char *taps[2]; /* student, teacher: owned copies */
    double alpha, beta, temperature;
    int64_t warmup; /* epochs; 0: none */
    bool standardize;
    kd_loss_term terms[2]; /* tckd, nckd as the logs show them */
} dkd;

static kd_status dkd_create(const kd_create_args *args, void **self)
{
    const kd_params *p = args->params;
    double t = kd_params_number(p, "temperature");
    if (!(t > 0) || !isfinite(t))
        return kd_error(KD_ERR_INVALID, "dkd: temperature must be a finite number > 0, got %g",
                        t);
    dkd *d = calloc(1, sizeof *d);
    char *student = strdup(kd_params_string(p, "student_tap"));
    char *teacher = strdup(kd_params_string(p, "teacher_tap"));
    if (!d || !student || !teacher) {
        free(d);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "dkd: out of memory");
    }
    d->taps[0] = student;
    d->taps[1] = teacher;
    d->alpha = kd_params_number(p, "alpha");
    d->beta = kd_params_number(p, "beta");
    d->temperature = t;
    d->warmup = kd_params_integer(p, "warmup");
    d->standardize = kd_params_boolean(p, "logit_stand");
    d->terms[0].name = "tckd";
    d->terms[1].name = "nckd";
    *self = d;
    return KD_OK;
}

static void dkd_destroy(void *self)
{
    dkd *d = self;
    if (!d)
        return;
    free((void *)d->taps[0]);
    free((void *)d->taps[1]);
    free(d);
}

static kd_status dkd_needs(void *self, kd_loss_needs *out)
{
    dkd *d = self;
    out->n_student = 1;
    out->student = &d->taps[0];
    out->n_teacher = 1;
    out->teacher = &d->taps[1];
    return KD_OK;
}

/* The split needs a target and at least one other class. */
static kd_status dkd_bind(void *self, const kd_bind_args *args)
{
    dkd *d = self;
    const kd_tap_shape *s = args->student, *t = args->teacher;
    char a[96], b[96];
    if (s->ndim != 2 || t->ndim != 2 || s->shape[1] != t->shape[1] || s->shape[1] < 2)
        return kd_error(KD_ERR_INVALID,
                        "dkd: student tap '%s' %s and teacher tap '%s' %s must both be "
                        "[N, classes] logits with the same classes (at least 2)",
                        d->taps[0], kd_tap_shape_str(s, a, sizeof a), d->taps[1],
                        kd_tap_shape_str(t, b, sizeof b));
    if (args->host && args->host->num_classes > 0 && s->shape[1] != args->host->num_classes)
        return kd_error(KD_ERR_INVALID,
                        "dkd: student tap '%s' %s has %lld classes but the labels have %d",
                        d->taps[0], kd_tap_shape_str(s, a, sizeof a), (long long)s->shape[1],
                        args->host->num_classes);
    return KD_OK;
}

/* Column indices of each row's target [N, 1] and of its other classes
 * [N, C - 1], from the labels; every label must name a class. */
static kd_status split_indices(const kd_tensor *labels, int64_t n, int64_t c,
                               kd_tensor **target, kd_tensor **others)
{
    if (!labels)
        return kd_error(KD_ERR_INVALID, "dkd: the batch has no labels (DKD splits on them)");
    if (labels->dtype != KD_I64 || labels->ndim != 1 || labels->shape[0] != n) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "dkd: labels %s are not i64 [%lld]",
                        kd_shape_str(labels, s, sizeof s), (long long)n);
    }
    if (labels->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED,
                        "dkd: the labels are not on the CPU; the target/non-target split "
                        "(kd_gather) runs on the CPU only for now");
    const int64_t ts[2] = {n, 1}, os[2] = {n, c - 1};
    *target = kd_tensor_empty(KD_I64, KD_CPU, 2, ts);
    *others = kd_tensor_empty(KD_I64, KD_CPU, 2, os);
    if (!*target || !*others)
        return kd_last_status();
    int64_t *tg = kd_tensor_data(*target), *ot = kd_tensor_data(*others);
    for (int64_t i = 0; i < n; i++) {
        int64_t y = (int64_t)kd_tensor_get(labels, i);
        if (y < 0 || y >= c)
            return kd_error(KD_ERR_INVALID, "dkd: label %lld of sample %lld is not a class of "
                            "%lld", (long long)y, (long long)i, (long long)c);
        tg[i] = y;
        for (int64_t k = 0, j = 0; k < c; k++)
            if (k != y)
                ot[i * (c - 1) + j++] = k;
    }
    return KD_OK;
}

/* log-sum-exp over dim 1, keeping it: the max is a constant shift, so the
 * gradient is exactly the softmax. */
static kd_tensor *logsumexp_rows(kd_tensor *x)
{
    const int dim[1] = {1};
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *m = kd_max(x, 1, true);
    kd_set_grad_enabled(grad);
    return kd_add(m, kd_log(kd_sum(kd_exp(kd_sub(x, m)), 1, dim, true)));
}

/* The two log distributions DKD compares, for one side. */
typedef struct split {
    kd_tensor *log_b;     /* [N, 2]: target, the rest */
    kd_tensor *log_other; /* [N, C - 1] */
} split;

static split split_logits(const dkd *d, kd_tensor *z, kd_tensor *target, kd_tensor *others)
{
    kd_tensor *x = d->standardize ? kd_zscore(z, ZSCORE_EPS) : z;
    if (d->temperature != 1)
        x = kd_mul_scalar(x, 1 / d->temperature);
    kd_tensor *rest = kd_gather(x, 1, others);
    kd_tensor *pair[2] = {kd_gather(x, 1, target), logsumexp_rows(rest)};
    return (split){kd_log_softmax(pair[0] && pair[1] ? kd_concat(2, pair, 1) : NULL, 1),
                   kd_log_softmax(rest, 1)};
}

static kd_status dkd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    dkd *d = self;
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    if (!s)
        return kd_error(KD_ERR_INVALID, "dkd: no student tensor for tap '%s'", d->taps[0]);
    if (!t)
        return kd_error(KD_ERR_INVALID,
                        "dkd: no teacher tensor for tap '%s' (the job needs a teacher)",
                        d->taps[1]);
    if (s->ndim != 2 || !kd_tensor_same_shape(s, t) || s->shape[1] < 2) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "dkd: student logits %s (tap '%s') and teacher logits %s (tap '%s') "
                        "must be the same [N, classes], classes >= 2",
                        kd_shape_str(s, a, sizeof a), d->taps[0], kd_shape_str(t, b, sizeof b),
                        d->taps[1]);
    }
    if (args->soft_targets)
        return kd_error(KD_ERR_INVALID,
                        "dkd: the batch has mixup/cutmix soft targets; DKD splits on one "
                        "ground-truth class per sample, so it cannot run with a batch "
                        "transform that mixes labels");
    kd_tensor *labels = args->labels, *rows = NULL;
    int64_t labeled = 0;
    if (labels && labels->dtype == KD_I64 && kd_labeled_rows(labels, &rows, &labeled) != KD_OK)
        return kd_error_wrap(kd_last_status(), "dkd: labels");
    if (rows && labeled == 0) {
        kd_tensor *zero = kd_mul_scalar(kd_sum_all(s), 0.0);
        if (!zero)
            return kd_error_wrap(kd_last_status(), "dkd");
        d->terms[0].value = d->terms[1].value = zero;
        out->loss = zero;
        out->n_terms = 2;
        out->terms = d->terms;
        return KD_OK;
    }
    if (rows) {
        s = kd_index_select(s, 0, rows);
        t = kd_index_select(t, 0, rows);
        labels = kd_index_select(labels, 0, rows);
        if (!s || !t || !labels)
            return kd_error_wrap(kd_last_status(), "dkd: the labeled rows");
    }
    kd_tensor *target = NULL, *others = NULL;
    kd_status st = split_indices(labels, s->shape[0], s->shape[1], &target, &others);
    if (st != KD_OK)
        return st;

    /* The teacher is a constant: nothing on its side is recorded. */
    bool grad = kd_set_grad_enabled(false);
    split teacher = split_logits(d, t->dtype == s->dtype ? t : kd_cast(t, s->dtype), target,
                                 others);
    kd_set_grad_enabled(grad);
    split student = split_logits(d, s, target, others);

    double t2 = d->temperature * d->temperature;
    kd_tensor *tckd =
        kd_mul_scalar(kd_kl_div(student.log_b, teacher.log_b, true, KD_REDUCE_BATCHMEAN), t2);
    kd_tensor *nckd = kd_mul_scalar(
        kd_kl_div(student.log_other, teacher.log_other, true, KD_REDUCE_BATCHMEAN), t2);
    /* args->epoch is 0-based; the authors' ramp counts from 1 */
    double ramp = d->warmup > 0 ? fmin((double)(args->epoch + 1) / (double)d->warmup, 1) : 1;
    kd_tensor *loss = kd_mul_scalar(
        kd_add(kd_mul_scalar(tckd, d->alpha), kd_mul_scalar(nckd, d->beta)), ramp);
    if (!loss)
        return kd_error_wrap(kd_last_status(), "dkd");
    d->terms[0].value = tckd;
    d->terms[1].value = nckd;
    out->loss = loss;
    out->n_terms = 2;
    out->terms = d->terms;
    return KD_OK;
}

static const kd_loss_vtable dkd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = dkd_create,
    .destroy = dkd_destroy,
    .needs = dkd_needs,
    .forward = dkd_forward,
    .bind = dkd_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "dkd", &dkd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "dkd", "1.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
