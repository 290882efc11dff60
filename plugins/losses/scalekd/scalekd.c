/* ScaleKD (Fan et al., NeurIPS 2024): a transformer teacher's knowledge
 * for any student, its feature terms for one or two student stages. Two
 * cross-attention projectors (cap.h) map the student's map into the
 * teacher's token space at tap `teacher_tap`:
 *
 *   spatial:   D_spat(P0(x), F_t) = Σ (n(S) − n(T))² / B
 *   frequency: D_freq(P1(x), F_t) = Σ (n(S − mean_hw S) − n(T − mean_hw T))² / B
 *
 * n: L2 normalisation over the channels at each position (eps 1e-12).
 * Removing each channel's spatial mean is exactly "2-D DCT, zero the DC
 * coefficient, inverse DCT", so no transform is computed. With teacher
 * parameter perception (the default) each projection first runs through
 * the frozen teacher from `teacher_tap` to `target_tap` (host
 * forward_from; gradients reach the projectors and the student), and F_t
 * is the teacher's own `target_tap`; without it F_t is `teacher_tap`.
 *
 * With `final_student_tap` (the paper's last stage, s4, after s3) two more
 * projectors read that map and take the perceived projections of the first
 * two as their queries, the spatial one's for the spatial view, and their
 * outputs are compared with F_t directly; each view's term sums both
 * stages:
 *
 *   L = spatial_weight · spatial + frequency_weight · frequency
 *
 * The logit term of the paper is a separate loss of the job (ce + kd). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cap.h"

#define NORM_EPS 1e-12

enum { VIEW_SPATIAL, VIEW_FREQUENCY, VIEWS };
/* projectors: first stage's views, then the final stage's */
#define PROJECTORS (2 * VIEWS)

/* How a tap's tensor reads as tokens [B, L, C]. */
typedef struct token_space {
    kd_tap_layout layout;
    int prefix; /* tokens before the grid (KD_LAYOUT_TOKENS) */
    int64_t c, h, w;
} token_space;

typedef struct scalekd {
    const char *provider;
    char *student_tap, *final_tap, *teacher_tap, *target_tap;
    const char *needs_student[2], *needs_teacher[2];
    bool final; /* a final stage */
    bool perception;
    int heads;
    double softmax_scale, weight[VIEWS];
    uint64_t seed;
    kd_device device;
    kd_dtype dtype;
    const kd_host_services *host;
    token_space space, target;
    scalekd_cap cap[PROJECTORS];
    char names[PROJECTORS * CAP_TENSORS][48];
    kd_named_tensor list[PROJECTORS * CAP_TENSORS];
    int n_list;
    kd_loss_term terms[VIEWS];
} scalekd;

static void scalekd_destroy(void *self)
{
    scalekd *r = self;
    if (!r)
        return;
    for (int v = 0; v < PROJECTORS; v++)
        scalekd_cap_free(&r->cap[v]);
    free(r->student_tap);
    free(r->final_tap);
    free(r->teacher_tap);
    free(r->target_tap);
    free(r);
}

static kd_status scalekd_create(const kd_create_args *args, void **self)
{
    scalekd *r = calloc(1, sizeof *r);
    if (!r)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", args->provider);
    r->provider = args->provider;
    r->student_tap = strdup(kd_params_string(args->params, "student_tap"));
    r->teacher_tap = strdup(kd_params_string(args->params, "teacher_tap"));
    r->target_tap = strdup(kd_params_string(args->params, "target_tap"));
    r->final_tap = strdup(kd_params_string(args->params, "final_student_tap"));
    if (!r->student_tap || !r->teacher_tap || !r->target_tap || !r->final_tap) {
        scalekd_destroy(r);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", args->provider);
    }
    r->perception = kd_params_boolean(args->params, "perception");
    r->final = r->final_tap[0] != 0;
    if (r->final && !r->perception) {
        scalekd_destroy(r);
        return kd_error(KD_ERR_INVALID, "%s: final_student_tap '%s' takes its queries from the "
                        "perceived projections: it needs perception", args->provider,
                        kd_params_string(args->params, "final_student_tap"));
    }
    r->needs_student[0] = r->student_tap;
    r->needs_student[1] = r->final_tap;
    r->heads = (int)kd_params_integer(args->params, "heads");
    r->softmax_scale = kd_params_number(args->params, "softmax_scale");
    r->weight[VIEW_SPATIAL] = kd_params_number(args->params, "spatial_weight");
    r->weight[VIEW_FREQUENCY] = kd_params_number(args->params, "frequency_weight");
    r->needs_teacher[0] = r->teacher_tap;
    r->needs_teacher[1] = r->target_tap;
    r->seed = args->seed;
    r->device = args->device;
    r->dtype = args->dtype;
    r->terms[VIEW_SPATIAL].name = "spatial";
    r->terms[VIEW_FREQUENCY].name = "frequency";
    *self = r;
    return KD_OK;
}

static kd_status scalekd_needs(void *self, kd_loss_needs *out)
{
    scalekd *r = self;
    *out = (kd_loss_needs){r->final ? 2 : 1, r->needs_student, r->perception ? 2 : 1,
                           r->needs_teacher};
    return KD_OK;
}

/* A teacher tap as a token grid: an NHWC or NCHW map, or tokens whose
 * patch part is a square grid. */
static bool token_space_of(const kd_tap_shape *s, const kd_tap_info *info, token_space *out)
{
    *out = (token_space){info->layout, 0, 0, 0, 0};
    if (s->ndim == 4 && info->layout == KD_LAYOUT_NHWC) {
        out->h = s->shape[1], out->w = s->shape[2], out->c = s->shape[3];
        return true;
    }
    if (s->ndim == 4 && info->layout == KD_LAYOUT_NCHW) {
        out->c = s->shape[1], out->h = s->shape[2], out->w = s->shape[3];
        return true;
    }
    if (s->ndim == 3 && info->layout == KD_LAYOUT_TOKENS) {
        int64_t len = s->shape[1] - info->prefix_tokens, side = (int64_t)llround(sqrt((double)len));
        out->prefix = info->prefix_tokens;
        out->c = s->shape[2], out->h = out->w = side;
        return len > 0 && side * side == len;
    }
    return false;
}

static kd_status scalekd_bind(void *self, const kd_bind_args *args)
{
    scalekd *r = self;
    if (r->n_list)
        return kd_error(KD_ERR_STATE, "%s: bound twice", r->provider);
    const kd_tap_shape *s = &args->student[0];
    bool ok = s->ndim == 4 && args->student_info[0].layout == KD_LAYOUT_NCHW &&
              token_space_of(&args->teacher[0], &args->teacher_info[0], &r->space);
    int ti = r->perception ? 1 : 0;
    ok = ok && token_space_of(&args->teacher[ti], &args->teacher_info[ti], &r->target);
    const kd_tap_shape *f = r->final ? &args->student[1] : NULL;
    if (ok && f && (f->ndim != 4 || args->student_info[1].layout != KD_LAYOUT_NCHW)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID, "%s: cannot project student tap '%s' %s onto teacher "
                        "tap '%s' %s: the student's must be an NCHW map", r->provider,
                        r->final_tap, kd_tap_shape_str(f, a, sizeof a), r->target_tap,
                        kd_tap_shape_str(&args->teacher[ti], b, sizeof b));
    }
    if (!ok) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID, "%s: cannot project student tap '%s' %s onto teacher "
                        "tap '%s' %s: the student's must be an NCHW map, the teacher's an NHWC "
                        "or NCHW map or tokens on a square grid", r->provider, r->student_tap,
                        kd_tap_shape_str(s, a, sizeof a), r->teacher_tap,
                        kd_tap_shape_str(&args->teacher[0], b, sizeof b));
    }
    /* the final projectors attend in the target's channels */
    const token_space *attended[2] = {&r->space, r->final ? &r->target : &r->space};
    const char *pairs[2][2] = {{r->teacher_tap, r->student_tap}, {r->target_tap, r->final_tap}};
    for (int k = 0; k < 2; k++)
        if (attended[k]->c % r->heads)
            return kd_error(KD_ERR_INVALID, "%s: heads %d does not divide the %lld channels of "
                            "teacher tap '%s' (student tap '%s')", r->provider, r->heads,
                            (long long)attended[k]->c, pairs[k][0], pairs[k][1]);
    if (r->perception) {
        if (!KD_HAS_FIELD(args, kd_bind_args, host) || !args->host ||
            !KD_HAS_FIELD(args->host, kd_host_services, forward_from) ||
            !args->host->forward_from)
            return kd_error(KD_ERR_STATE, "%s: teacher parameter perception needs the host's "
                            "forward_from; set perception false to compare with tap '%s' "
                            "directly", r->provider, r->teacher_tap);
        r->host = args->host;
    }
    const scalekd_cap_shape shape[2] = {
        {s->shape[1], s->shape[2], s->shape[3], r->space.c, r->space.h, r->space.w, r->heads,
         r->softmax_scale, false},
        {f ? f->shape[1] : 0, f ? f->shape[2] : 0, f ? f->shape[3] : 0, r->target.c,
         r->target.h, r->target.w, r->heads, r->softmax_scale, true}};
    static const char *const prefix[PROJECTORS] = {"spatial", "frequency", "final_spatial",
                                                   "final_frequency"};
    for (int v = 0; v < (r->final ? PROJECTORS : VIEWS); v++) {
        kd_status st = scalekd_cap_init(&r->cap[v], &shape[v / VIEWS], r->dtype, r->device,
                                        r->seed, (uint64_t)v * CAP_TENSORS);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s: the %s projector", r->provider, prefix[v]);
        for (int p = 0; p < CAP_TENSORS; p++) {
            if (!r->cap[v].t[p])
                continue; /* an input-queries projector's table */
            char *name = r->names[r->n_list];
            snprintf(name, sizeof r->names[0], "%s.%s", prefix[v], scalekd_cap_part_names[p]);
            bool stat = p == CAP_BN_MEAN || p == CAP_BN_VAR;
            r->list[r->n_list++] = (kd_named_tensor){name, r->cap[v].t[p],
                                                     stat ? KD_TENSOR_BUFFER : KD_TENSOR_PARAM};
        }
    }
    return KD_OK;
}

static kd_status scalekd_tensors(void *self, kd_tensor_list *out)
{
    scalekd *r = self;
    if (!r->n_list)
        return kd_error(KD_ERR_STATE, "%s: tensors() before bind()", r->provider);
    KD_LIST_SET(out, r->list, r->n_list);
    return KD_OK;
}

/* A tap's tensor as its grid tokens [B, h·w, C], row-major positions. */
static kd_tensor *to_tokens(kd_tensor *x, const token_space *sp)
{
    if (!x)
        return NULL;
    int64_t b = x->shape[0];
    switch (sp->layout) {
    case KD_LAYOUT_NHWC:
        return kd_reshape(x, 3, (const int64_t[]){b, sp->h * sp->w, sp->c});
    case KD_LAYOUT_NCHW:
        return kd_transpose(kd_flatten(x, 2, 3), 1, 2);
    default:
        return kd_slice(x, 1, sp->prefix, x->shape[1], 1);
    }
}

/* Tokens [B, h·w, C] in the layout of the teacher's tap; a token tap's
 * prefix tokens (cls, dist) are the teacher's own, constants. */
static kd_tensor *from_tokens(kd_tensor *y, const token_space *sp, kd_tensor *teacher)
{
    int64_t b = y->shape[0];
    switch (sp->layout) {
    case KD_LAYOUT_NHWC:
        return kd_reshape(y, 4, (const int64_t[]){b, sp->h, sp->w, sp->c});
    case KD_LAYOUT_NCHW:
        return kd_reshape(kd_transpose(y, 1, 2), 4, (const int64_t[]){b, sp->c, sp->h, sp->w});
    default:
        if (!sp->prefix)
            return y;
        kd_tensor *pair[2] = {kd_slice(teacher, 1, 0, sp->prefix, 1), y};
        return pair[0] ? kd_concat(2, pair, 1) : NULL;
    }
}

/* x / max(‖x‖, eps) over the last dim, as torch's F.normalize. */
static kd_tensor *l2_normalize(kd_tensor *x)
{
    const int last = 2;
    kd_tensor *norm = kd_sqrt(kd_sum(kd_mul(x, x), 1, &last, true));
    return kd_div(x, kd_clamp(norm, NORM_EPS, INFINITY));
}

static kd_tensor *without_dc(kd_tensor *x)
{
    const int positions = 1;
    return kd_sub(x, kd_mean(x, 1, &positions, true));
}

/* Σ (n(s) − n(t))² / B over tokens [B, L, C]. */
static kd_tensor *mimic(kd_tensor *s, kd_tensor *t)
{
    kd_tensor *d = kd_sub(l2_normalize(s), l2_normalize(t));
    return d ? kd_mul_scalar(kd_sum_all(kd_mul(d, d)), 1.0 / (double)s->shape[0]) : NULL;
}

static kd_tensor *view_term(int v, kd_tensor *y, kd_tensor *ft)
{
    return v == VIEW_SPATIAL ? mimic(y, ft) : mimic(without_dc(y), without_dc(ft));
}

/* The projection of one view, as the target's tokens. */
static kd_status project(scalekd *r, int v, kd_tensor *s, kd_tensor *teacher_space,
                         bool training, kd_tensor **out)
{
    kd_tensor *y = scalekd_cap_forward(&r->cap[v], s, NULL, training);
    if (y && r->perception) {
        kd_tensor *in = from_tokens(y, &r->space, teacher_space);
        if (in && in->dtype != teacher_space->dtype)
            in = kd_cast(in, teacher_space->dtype);
        if (!in)
            return kd_error_wrap(kd_last_status(), "%s", r->provider);
        kd_tensor *z = NULL;
        kd_status st = r->host->forward_from(r->host->host, KD_ROLE_TEACHER, r->teacher_tap, in,
                                             r->target_tap, false, &z);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s: the teacher from tap '%s' to '%s'", r->provider,
                                 r->teacher_tap, r->target_tap);
        y = to_tokens(z->dtype != r->dtype ? kd_cast(z, r->dtype) : z, &r->target);
    }
    if (!y)
        return kd_error_wrap(kd_last_status(), "%s: the %s projector", r->provider,
                             r->terms[v].name);
    *out = y;
    return KD_OK;
}

static bool shape_is(const kd_tensor *x, int64_t b, int64_t d1, int64_t d2, int64_t d3)
{
    return x && x->ndim == 4 && x->shape[0] == b && x->shape[1] == d1 && x->shape[2] == d2 &&
           x->shape[3] == d3;
}

/* The student's map and the teacher's taps have the shapes bind() saw. */
static kd_status check_inputs(const scalekd *r, kd_tensor *s, kd_tensor *fin, kd_tensor *t,
                              kd_tensor *target)
{
    const scalekd_cap_shape *c = &r->cap[0].shape, *cf = &r->cap[VIEWS].shape;
    int64_t b = s ? s->shape[0] : 0;
    bool ok = shape_is(s, b, c->cs, c->h, c->w) && t && target && t->shape[0] == b &&
              target->shape[0] == b && (!r->final || shape_is(fin, b, cf->cs, cf->h, cf->w));
    if (ok)
        return KD_OK;
    char a[96], m[96];
    return kd_error(KD_ERR_INVALID, "%s: student tap '%s' %s%s%s and teacher tap '%s' %s "
                    "differ from the shapes bind() sized the projectors for", r->provider,
                    r->student_tap, s ? kd_shape_str(s, a, sizeof a) : "(none)",
                    r->final ? " with " : "", r->final_tap, r->teacher_tap,
                    t ? kd_shape_str(t, m, sizeof m) : "(none)");
}

static kd_status scalekd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    scalekd *r = self;
    if (!r->n_list)
        return kd_error(KD_ERR_STATE, "%s: forward() before bind()", r->provider);
    if (!args->student || !args->teacher)
        return kd_error(KD_ERR_INVALID, "%s: needs student and teacher features", r->provider);
    kd_tensor *s = args->student[0], *fin = r->final ? args->student[1] : NULL;
    kd_tensor *t = args->teacher[0], *target = args->teacher[r->perception ? 1 : 0];
    kd_status st = check_inputs(r, s, fin, t, target);
    if (st != KD_OK)
        return st;
    if (s->dtype != r->dtype)
        s = kd_cast(s, r->dtype);
    if (fin && fin->dtype != r->dtype)
        fin = kd_cast(fin, r->dtype);
    if (target->dtype != r->dtype)
        target = kd_cast(target, r->dtype);
    kd_tensor *ft = to_tokens(target, &r->target), *total = NULL;
    for (int v = 0; v < VIEWS; v++) {
        kd_tensor *y = NULL;
        st = project(r, v, s, t, args->training, &y);
        if (st != KD_OK)
            return st;
        kd_tensor *d = view_term(v, y, ft);
        if (fin) {
            kd_tensor *y4 = scalekd_cap_forward(&r->cap[VIEWS + v], fin, y, args->training);
            d = kd_add(d, view_term(v, y4, ft));
        }
        kd_tensor *term = kd_mul_scalar(d, r->weight[v]);
        total = total ? kd_add(total, term) : term;
        r->terms[v].value = d;
    }
    if (!total)
        return kd_error_wrap(kd_last_status(), "%s: taps '%s', '%s'", r->provider,
                             r->student_tap, r->teacher_tap);
    out->loss = total;
    out->n_terms = VIEWS;
    out->terms = r->terms;
    return KD_OK;
}

static const kd_loss_vtable scalekd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = scalekd_create,
    .destroy = scalekd_destroy,
    .needs = scalekd_needs,
    .forward = scalekd_forward,
    .bind = scalekd_bind,
    .tensors = scalekd_tensors,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "scalekd", &scalekd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "scalekd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
