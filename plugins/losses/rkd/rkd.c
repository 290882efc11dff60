/* The rkd loss: Relational Knowledge Distillation (Park et al., CVPR 2019)
 * on embeddings x [N, D] (a pooled feature; a feature map is pooled or
 * flattened first), student and teacher D free to differ:
 *
 *   d_ij  = sqrt(max(|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>, 1e-12)), d_ii = 0
 *   d^    = d / mean{d_ij : i != j}
 *   L_d   = mean over all N^2 (i, j) of smoothL1(d^_s - d^_t)
 *   e_ij  = (x_j - x_i) / max(|x_j - x_i|, 1e-12),  e_ii = 0
 *   L_a   = mean over all N^3 (i, j, k) of smoothL1(<e_ij, e_ik>_s - <e_ij, e_ik>_t)
 *   L     = w_d * L_d + w_a * L_a
 *
 * as the authors' and mdistiller's code compute it. The diagonal carries
 * no gradient: d_ii is set to 0, not computed; e_ii = 0 / 1e-12 = 0 is
 * finite, and every angle through it is 0 on both sides, so smooth-L1's
 * slope there is exactly 0 and the 1e12 slope of the division multiplies
 * nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#define DISTANCE_EPS 1e-12    /* on the squared distance */
#define DIRECTION_EPS_SQ 1e-24 /* max(|v|, 1e-12) as a floor on |v|^2 */

typedef struct rkd {
    const char *taps[2]; /* student, teacher: owned copies */
    double distance_weight, angle_weight;
    bool flatten; /* a map tap: flattened (else average-pooled) */
    int spatial[2][2]; /* per side, the dims a map tap pools over */
    kd_loss_term terms[2]; /* distance, angle as the logs show them */
} rkd;

static kd_status rkd_create(const kd_create_args *args, void **self)
{
    const kd_params *p = args->params;
    rkd *r = calloc(1, sizeof *r);
    char *student = strdup(kd_params_string(p, "student_tap"));
    char *teacher = strdup(kd_params_string(p, "teacher_tap"));
    if (!r || !student || !teacher) {
        free(r);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "rkd: out of memory");
    }
    r->taps[0] = student;
    r->taps[1] = teacher;
    r->distance_weight = kd_params_number(p, "distance_weight");
    r->angle_weight = kd_params_number(p, "angle_weight");
    r->flatten = strcmp(kd_params_string(p, "map"), "flatten") == 0;
    for (int side = 0; side < 2; side++) {
        r->spatial[side][0] = 2;
        r->spatial[side][1] = 3;
    }
    r->terms[0].name = "distance";
    r->terms[1].name = "angle";
    *self = r;
    return KD_OK;
}

static void rkd_destroy(void *self)
{
    rkd *r = self;
    if (!r)
        return;
    free((void *)r->taps[0]);
    free((void *)r->taps[1]);
    free(r);
}

static kd_status rkd_needs(void *self, kd_loss_needs *out)
{
    rkd *r = self;
    out->n_student = 1;
    out->student = &r->taps[0];
    out->n_teacher = 1;
    out->teacher = &r->taps[1];
    return KD_OK;
}

/* A tap is usable as [N, D] vectors or as an NCHW / NHWC map. */
static bool usable(const kd_tap_shape *s, const kd_tap_info *info)
{
    if (s->ndim == 2)
        return true;
    return s->ndim == 4 && (!info || info->layout == KD_LAYOUT_NCHW ||
                            info->layout == KD_LAYOUT_NHWC);
}

static kd_status rkd_bind(void *self, const kd_bind_args *args)
{
    rkd *r = self;
    const kd_tap_shape *shapes[2] = {args->student, args->teacher};
    const kd_tap_info *infos[2] = {args->student_info, args->teacher_info};
    if (!usable(shapes[0], infos[0]) || !usable(shapes[1], infos[1])) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "rkd: student tap '%s' %s and teacher tap '%s' %s must each be "
                        "[N, D] embeddings or an NCHW/NHWC feature map",
                        r->taps[0], kd_tap_shape_str(shapes[0], a, sizeof a), r->taps[1],
                        kd_tap_shape_str(shapes[1], b, sizeof b));
    }
    for (int side = 0; side < 2; side++)
        if (infos[side] && infos[side]->layout == KD_LAYOUT_NHWC) {
            r->spatial[side][0] = 1;
            r->spatial[side][1] = 2;
        }
    return KD_OK;
}

/* [N, D] embeddings of one side's tap. */
static kd_tensor *embeddings(const rkd *r, int side, kd_tensor *x)
{
    if (x->ndim == 2)
        return x;
    if (r->flatten)
        return kd_flatten(x, 1, -1);
    return kd_mean(x, 2, r->spatial[side], false);
}

static kd_tensor *smooth_l1(kd_tensor *x)
{
    /* m (a - m / 2) with a = |x|, m = min(a, 1): x^2 / 2 below 1, a - 1/2
     * above, and the slope x resp. sign(x) through the clamp */
    kd_tensor *a = kd_abs(x);
    kd_tensor *m = kd_clamp(a, -INFINITY, 1);
    return kd_mul(m, kd_sub(a, kd_mul_scalar(m, 0.5)));
}

/* U8 [n, n] with ones on the diagonal. */
static kd_tensor *diagonal_mask(int64_t n)
{
    const int64_t shape[2] = {n, n};
    kd_tensor *m = kd_tensor_zeros(KD_U8, KD_CPU, 2, shape);
    if (!m)
        return NULL;
    uint8_t *v = kd_tensor_data(m);
    for (int64_t i = 0; i < n; i++)
        v[i * n + i] = 1;
    return m;
}

/* Pairwise distances over their off-diagonal mean, [N, N]. */
static kd_tensor *normalised_distances(kd_tensor *x, kd_tensor *diagonal)
{
    const int dim[1] = {1};
    int64_t n = x->shape[0];
    kd_tensor *sq = kd_sum(kd_mul(x, x), 1, dim, true);
    kd_tensor *gram = kd_matmul(x, kd_transpose(x, 0, 1));
    kd_tensor *d2 = kd_sub(kd_add(sq, kd_transpose(sq, 0, 1)), kd_mul_scalar(gram, 2));
    kd_tensor *d = kd_masked_fill(kd_sqrt(kd_clamp(d2, DISTANCE_EPS, INFINITY)), diagonal, 0);
    kd_tensor *mean = kd_mul_scalar(kd_sum_all(d), 1.0 / (double)(n * (n - 1)));
    return kd_div(d, mean);
}

/* <e_ij, e_ik> for every (i, j, k), [N, N, N]. */
static kd_tensor *angles(kd_tensor *x)
{
    const int dim[1] = {2};
    kd_tensor *v = kd_sub(kd_unsqueeze(x, 0), kd_unsqueeze(x, 1)); /* v[i, j] = x_j - x_i */
    kd_tensor *sq = kd_sum(kd_mul(v, v), 1, dim, true);
    /* the floor also keeps sqrt's infinite slope at v_ii = 0 out */
    kd_tensor *e = kd_div(v, kd_sqrt(kd_clamp(sq, DIRECTION_EPS_SQ, INFINITY)));
    return kd_matmul(e, kd_transpose(e, 1, 2));
}

static kd_status rkd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    rkd *r = self;
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    if (!s)
        return kd_error(KD_ERR_INVALID, "rkd: no student tensor for tap '%s'", r->taps[0]);
    if (!t)
        return kd_error(KD_ERR_INVALID,
                        "rkd: no teacher tensor for tap '%s' (the job needs a teacher)",
                        r->taps[1]);
    if ((s->ndim != 2 && s->ndim != 4) || (t->ndim != 2 && t->ndim != 4) ||
        s->shape[0] != t->shape[0] || s->shape[0] < 2) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "rkd: student features %s (tap '%s') and teacher features %s (tap "
                        "'%s') must be [N, D] or [N, C, H, W] over the same batch of at "
                        "least 2 (relations need pairs)",
                        kd_shape_str(s, a, sizeof a), r->taps[0], kd_shape_str(t, b, sizeof b),
                        r->taps[1]);
    }
    int64_t n = s->shape[0];
    kd_tensor *diagonal = diagonal_mask(n);

    /* The teacher's relations, normaliser included, are constants. */
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *xt = embeddings(r, 1, t->dtype == s->dtype ? t : kd_cast(t, s->dtype));
    kd_tensor *dt = normalised_distances(xt, diagonal), *at = angles(xt);
    kd_set_grad_enabled(grad);
    kd_tensor *xs = embeddings(r, 0, s);

    kd_tensor *distance =
        kd_mean_all(smooth_l1(kd_sub(normalised_distances(xs, diagonal), dt)));
    kd_tensor *angle = kd_mean_all(smooth_l1(kd_sub(angles(xs), at)));
    kd_tensor *loss = kd_add(kd_mul_scalar(distance, r->distance_weight),
                             kd_mul_scalar(angle, r->angle_weight));
    if (!loss)
        return kd_error_wrap(kd_last_status(), "rkd");
    r->terms[0].value = distance;
    r->terms[1].value = angle;
    out->loss = loss;
    out->n_terms = 2;
    out->terms = r->terms;
    return KD_OK;
}

static const kd_loss_vtable rkd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = rkd_create,
    .destroy = rkd_destroy,
    .needs = rkd_needs,
    .forward = rkd_forward,
    .bind = rkd_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "rkd", &rkd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "rkd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
