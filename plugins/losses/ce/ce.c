/* The ce loss: cross-entropy of the student's logits with the labels, or
 * with the soft targets when mixup/cutmix made them. Label smoothing s
 * mixes the target with the uniform distribution, (1 - s) * y + s / C, for
 * hard and soft targets alike (torch's CrossEntropyLoss). Rows labeled
 * KD_LABEL_NONE (unlabeled samples, data.train.unlabeled) are left out: the
 * mean runs over the labeled rows only (torch's ignore_index=-1), and a
 * batch without a labeled row gives 0 with a zero gradient, so its step
 * comes from the job's other losses alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "../common/labeled_rows.h"

typedef struct ce_loss {
    const char *tap; /* owned copy */
    double smoothing;
    kd_loss_term term; /* "ce": the loss itself */
} ce_loss;

static kd_status ce_create(const kd_create_args *args, void **self)
{
    ce_loss *c = calloc(1, sizeof *c);
    char *tap = strdup(kd_params_string(args->params, "tap"));
    if (!c || !tap) {
        free(c);
        free(tap);
        return kd_error(KD_ERR_NOMEM, "ce: out of memory");
    }
    c->tap = tap;
    c->smoothing = kd_params_number(args->params, "label_smoothing");
    c->term.name = "ce";
    *self = c;
    return KD_OK;
}

static void ce_destroy(void *self)
{
    ce_loss *c = self;
    if (!c)
        return;
    free((void *)c->tap);
    free(c);
}

static kd_status ce_needs(void *self, kd_loss_needs *out)
{
    ce_loss *c = self;
    out->n_student = 1;
    out->student = &c->tap;
    out->n_teacher = 0;
    out->teacher = NULL;
    return KD_OK;
}

static kd_status ce_bind(void *self, const kd_bind_args *args)
{
    ce_loss *c = self;
    const kd_tap_shape *student = args->student;
    if (student->ndim != 2)
        return kd_error(KD_ERR_INVALID,
                        "ce: tap '%s' has %d dims; cross-entropy needs [N, classes] logits",
                        c->tap, student->ndim);
    return KD_OK;
}

/* (1 - s) * soft + s / C in the logits' dtype; no gradient. */
static kd_tensor *smoothed_target(const ce_loss *c, kd_tensor *soft, kd_tensor *logits)
{
    kd_tensor *target = soft->dtype == logits->dtype ? soft : kd_cast(soft, logits->dtype);
    if (c->smoothing == 0)
        return target;
    return kd_add_scalar(kd_mul_scalar(target, 1 - c->smoothing),
                         c->smoothing / (double)logits->shape[1]);
}

/* Cross-entropy with the hard labels over the labeled rows. */
static kd_tensor *hard_label_loss(const ce_loss *c, kd_tensor *x, kd_tensor *labels)
{
    kd_tensor *rows;
    int64_t n;
    if (kd_labeled_rows(labels, &rows, &n) != KD_OK)
        return NULL;
    if (!rows)
        return kd_cross_entropy(x, labels, c->smoothing);
    if (n == 0)
        return kd_mul_scalar(kd_sum_all(x), 0.0);
    return kd_cross_entropy(kd_index_select(x, 0, rows), kd_index_select(labels, 0, rows),
                            c->smoothing);
}

static kd_status ce_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    ce_loss *c = self;
    kd_tensor *x = args->student ? args->student[0] : NULL;
    char a[96], b[96];
    if (!x)
        return kd_error(KD_ERR_INVALID, "ce: no student tensor for tap '%s'", c->tap);
    if (x->ndim != 2)
        return kd_error(KD_ERR_INVALID, "ce: logits %s from tap '%s' are not [N, classes]",
                        kd_shape_str(x, a, sizeof a), c->tap);
    kd_tensor *loss;
    if (args->soft_targets) {
        if (!kd_tensor_same_shape(args->soft_targets, x))
            return kd_error(KD_ERR_INVALID,
                            "ce: soft targets %s do not match the logits %s from tap '%s'",
                            kd_shape_str(args->soft_targets, a, sizeof a),
                            kd_shape_str(x, b, sizeof b), c->tap);
        bool grad = kd_set_grad_enabled(false);
        kd_tensor *target = smoothed_target(c, args->soft_targets, x);
        kd_set_grad_enabled(grad);
        loss = kd_cross_entropy_soft(x, target);
    } else {
        if (!args->labels)
            return kd_error(KD_ERR_INVALID, "ce: the batch has neither labels nor soft targets");
        loss = hard_label_loss(c, x, args->labels);
    }
    if (!loss)
        return kd_error_wrap(kd_last_status(), "ce (tap '%s')", c->tap);
    c->term.value = loss;
    out->loss = loss;
    out->n_terms = 1;
    out->terms = &c->term;
    return KD_OK;
}

static const kd_loss_vtable ce_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = ce_create,
    .destroy = ce_destroy,
    .needs = ce_needs,
    .forward = ce_forward,
    .bind = ce_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "ce", &ce_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "ce", "1.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
