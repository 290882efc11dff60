/* The dist loss: DIST, knowledge distillation from a stronger teacher
 * (Huang et al., NeurIPS 2022). It matches relations, not values:
 *
 *   Y = softmax(z / tau)  (or softmax(Z(z) / tau) under logit_stand)
 *   rho(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8)
 *   inter = 1 - mean over samples of rho(Y_s[n, :], Y_t[n, :])
 *   intra = 1 - mean over classes of rho(Y_s[:, c], Y_t[:, c])
 *   L     = tau^2 * (beta * inter + gamma * intra)
 *
 * The eps sits on the product of the norms, as the authors' code has it.
 * intra couples the samples of a batch: it needs two of them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#define ZSCORE_EPS 1e-7
#define PEARSON_EPS 1e-8
/* sqrt's slope is infinite at a zero norm (a constant row) and would turn
 * the gradient into NaN; flooring the squared norm there gives the zero
 * gradient torch's norm has. Its root, 1e-15, moves no value past eps. */
#define SQUARED_NORM_FLOOR 1e-30

typedef struct dist {
    const char *taps[2]; /* student, teacher: owned copies */
    double beta, gamma, tau;
    bool standardize;
    kd_loss_term terms[2]; /* inter, intra as the logs show them */
} dist;

static kd_status dist_create(const kd_create_args *args, void **self)
{
    const kd_params *p = args->params;
    double tau = kd_params_number(p, "tau");
    if (!(tau > 0) || !isfinite(tau))
        return kd_error(KD_ERR_INVALID, "dist: tau must be a finite number > 0, got %g", tau);
    dist *d = calloc(1, sizeof *d);
    char *student = strdup(kd_params_string(p, "student_tap"));
    char *teacher = strdup(kd_params_string(p, "teacher_tap"));
    if (!d || !student || !teacher) {
        free(d);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "dist: out of memory");
    }
    d->taps[0] = student;
    d->taps[1] = teacher;
    d->beta = kd_params_number(p, "beta");
    d->gamma = kd_params_number(p, "gamma");
    d->tau = tau;
    d->standardize = kd_params_boolean(p, "logit_stand");
    d->terms[0].name = "inter";
    d->terms[1].name = "intra";
    *self = d;
    return KD_OK;
}

static void dist_destroy(void *self)
{
    dist *d = self;
    if (!d)
        return;
    free((void *)d->taps[0]);
    free((void *)d->taps[1]);
    free(d);
}

static kd_status dist_needs(void *self, kd_loss_needs *out)
{
    dist *d = self;
    out->n_student = 1;
    out->student = &d->taps[0];
    out->n_teacher = 1;
    out->teacher = &d->taps[1];
    return KD_OK;
}

/* A Pearson correlation over one class needs two classes; z-scoring too. */
static kd_status dist_bind(void *self, const kd_bind_args *args)
{
    dist *d = self;
    const kd_tap_shape *s = args->student, *t = args->teacher;
    if (s->ndim != 2 || t->ndim != 2 || s->shape[1] != t->shape[1] || s->shape[1] < 2) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "dist: student tap '%s' %s and teacher tap '%s' %s must both be "
                        "[N, classes] logits with the same classes (at least 2)",
                        d->taps[0], kd_tap_shape_str(s, a, sizeof a), d->taps[1],
                        kd_tap_shape_str(t, b, sizeof b));
    }
    return KD_OK;
}

static kd_tensor *probabilities(const dist *d, kd_tensor *z)
{
    kd_tensor *x = d->standardize ? kd_zscore(z, ZSCORE_EPS) : z;
    return kd_softmax(d->tau == 1 ? x : kd_mul_scalar(x, 1 / d->tau), 1);
}

/* |v| over dim 1 of centred rows, [R, 1]. */
static kd_tensor *row_norm(kd_tensor *centred)
{
    const int dim[1] = {1};
    kd_tensor *squares = kd_sum(kd_mul(centred, centred), 1, dim, true);
    return kd_sqrt(kd_clamp(squares, SQUARED_NORM_FLOOR, INFINITY));
}

/* 1 - mean over rows of rho(a[r, :], b[r, :]); b a constant. */
static kd_tensor *one_minus_pearson(kd_tensor *a, kd_tensor *b)
{
    const int dim[1] = {1};
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *bc = kd_sub(b, kd_mean(b, 1, dim, true));
    kd_tensor *b_norm = row_norm(bc);
    kd_set_grad_enabled(grad);
    kd_tensor *ac = kd_sub(a, kd_mean(a, 1, dim, true));
    kd_tensor *den = kd_add_scalar(kd_mul(row_norm(ac), b_norm), PEARSON_EPS);
    kd_tensor *rho = kd_div(kd_sum(kd_mul(ac, bc), 1, dim, true), den);
    return kd_add_scalar(kd_neg(kd_mean_all(rho)), 1);
}

static kd_status dist_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    dist *d = self;
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    if (!s)
        return kd_error(KD_ERR_INVALID, "dist: no student tensor for tap '%s'", d->taps[0]);
    if (!t)
        return kd_error(KD_ERR_INVALID,
                        "dist: no teacher tensor for tap '%s' (the job needs a teacher)",
                        d->taps[1]);
    if (s->ndim != 2 || !kd_tensor_same_shape(s, t) || s->shape[1] < 2) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "dist: student logits %s (tap '%s') and teacher logits %s (tap '%s') "
                        "must be the same [N, classes], classes >= 2",
                        kd_shape_str(s, a, sizeof a), d->taps[0], kd_shape_str(t, b, sizeof b),
                        d->taps[1]);
    }
    if (s->shape[0] < 2)
        return kd_error(KD_ERR_INVALID,
                        "dist: a batch of %lld sample; the intra-class term correlates each "
                        "class across the batch and needs at least 2",
                        (long long)s->shape[0]);

    bool grad = kd_set_grad_enabled(false);
    kd_tensor *yt = probabilities(d, t->dtype == s->dtype ? t : kd_cast(t, s->dtype));
    kd_set_grad_enabled(grad);
    kd_tensor *ys = probabilities(d, s);

    kd_tensor *inter = one_minus_pearson(ys, yt);
    kd_tensor *intra = one_minus_pearson(kd_transpose(ys, 0, 1), kd_transpose(yt, 0, 1));
    double t2 = d->tau * d->tau;
    kd_tensor *loss = kd_mul_scalar(
        kd_add(kd_mul_scalar(inter, d->beta), kd_mul_scalar(intra, d->gamma)), t2);
    if (!loss)
        return kd_error_wrap(kd_last_status(), "dist");
    d->terms[0].value = inter;
    d->terms[1].value = intra;
    out->loss = loss;
    out->n_terms = 2;
    out->terms = d->terms;
    return KD_OK;
}

static const kd_loss_vtable dist_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = dist_create,
    .destroy = dist_destroy,
    .needs = dist_needs,
    .forward = dist_forward,
    .bind = dist_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "dist", &dist_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "dist", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
