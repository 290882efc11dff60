/* The "lamb" optimizer plugin: lamb_update.h behind the optimizer vtable.
 *
 * State: "exp_avg.<name>" and "exp_avg_sq.<name>" per parameter (named
 * after the parameters, so a checkpoint survives a change in their order)
 * and "step", an i64 [1]: timm counts steps per parameter group and every
 * group steps on every call, so one count serves all parameters, and it
 * advances even on a step where no parameter has a gradient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "lamb_update.h"

typedef struct lamb_param {
    kd_tensor *tensor;
    bool decay;
    double lr_scale; /* layer-wise decay: steps at lr * lr_scale */
    kd_tensor *exp_avg, *exp_avg_sq;
} lamb_param;

typedef struct lamb_plugin {
    double beta1, beta2, eps, weight_decay, max_grad_norm;
    bool bias_correction, grad_averaging, trust_clip, always_adapt;
    int n;
    lamb_param *params;
    kd_tensor *step; /* i64 [1] */
    void *update;    /* scratch for the largest parameter's update */
    double *partials;
    int n_state;
    kd_named_tensor *state;
} lamb_plugin;

static void lamb_destroy(void *self)
{
    lamb_plugin *s = self;
    if (!s)
        return;
    for (int i = 0; i < s->n_state; i++)
        if (s->state[i].tensor != s->step)
            free((char *)s->state[i].name);
    free(s->state);
    for (int i = 0; s->params && i < s->n; i++) {
        kd_tensor_free(s->params[i].exp_avg);
        kd_tensor_free(s->params[i].exp_avg_sq);
    }
    free(s->params);
    kd_tensor_free(s->step);
    free(s->update);
    free(s->partials);
    free(s);
}

static kd_status check_param(int i, const kd_named_tensor *p, const kd_tensor_list *all)
{
    if (!p->name || !p->name[0])
        return kd_error(KD_ERR_INVALID, "lamb: parameter %d has no name", i);
    for (int j = 0; j < i; j++)
        if (strcmp(p->name, kd_tensor_list_at(all, j)->name) == 0)
            return kd_error(KD_ERR_INVALID, "lamb: parameters %d and %d are both named '%s'", j,
                            i, p->name);
    const kd_tensor *t = p->tensor, *first = kd_tensor_list_at(all, 0)->tensor;
    if (!t)
        return kd_error(KD_ERR_INVALID, "lamb: parameter '%s' is NULL", p->name);
    if (t->dtype != KD_F32 && t->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "lamb: parameter '%s' is %s; f32 or f64 expected",
                        p->name, kd_dtype_name(t->dtype));
    /* One scratch buffer serves every parameter. */
    if (first && t->dtype != first->dtype)
        return kd_error(KD_ERR_INVALID, "lamb: parameter '%s' is %s but the first is %s",
                        p->name, kd_dtype_name(t->dtype), kd_dtype_name(first->dtype));
    if (t->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "lamb: parameter '%s' is not on the CPU", p->name);
    if (!kd_tensor_is_contiguous(t))
        return kd_error(KD_ERR_INVALID, "lamb: parameter '%s' is not contiguous", p->name);
    return KD_OK;
}

static kd_status add_state(lamb_plugin *s, const char *prefix, const char *name, kd_tensor *t)
{
    size_t len = strlen(prefix) + strlen(name) + 2;
    char *full = malloc(len);
    if (!full)
        return kd_error(KD_ERR_NOMEM, "lamb: out of memory for state names");
    snprintf(full, len, "%s.%s", prefix, name);
    s->state[s->n_state++] = (kd_named_tensor){full, t, KD_TENSOR_BUFFER};
    return KD_OK;
}

/* Zeroed moments of parameter i, ours even if a scope is open. */
static kd_status make_state(lamb_plugin *s, int i, const char *name)
{
    lamb_param *l = &s->params[i];
    l->exp_avg = kd_tensor_keep(kd_tensor_zeros_like(l->tensor));
    l->exp_avg_sq = kd_tensor_keep(kd_tensor_zeros_like(l->tensor));
    if (!l->exp_avg || !l->exp_avg_sq)
        return kd_error(KD_ERR_NOMEM, "lamb: out of memory for the state of '%s'", name);
    kd_status st = add_state(s, "exp_avg", name, l->exp_avg);
    return st == KD_OK ? add_state(s, "exp_avg_sq", name, l->exp_avg_sq) : st;
}

static kd_status lamb_create(const kd_create_args *args, const kd_tensor_list *params,
                             void **self)
{
    if (!self)
        return kd_error(KD_ERR_INVALID, "lamb: self is NULL");
    *self = NULL;
    int n = params ? params->n : 0;
    if (n < 1 || !params->items)
        return kd_error(KD_ERR_INVALID, "lamb: no parameters to optimise (n = %d)", n);
    int64_t largest = 1; /* scratch of at least one element */
    for (int i = 0; i < n; i++) {
        kd_status st = check_param(i, kd_tensor_list_at(params, i), params);
        if (st != KD_OK)
            return st;
        int64_t numel = kd_tensor_numel(kd_tensor_list_at(params, i)->tensor);
        largest = numel > largest ? numel : largest;
    }
    const kd_params *p = args->params;
    lamb_plugin *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "lamb: out of memory");
    s->beta1 = kd_params_number(p, "beta1");
    s->beta2 = kd_params_number(p, "beta2");
    s->eps = kd_params_number(p, "eps");
    s->weight_decay = kd_params_number(p, "weight_decay");
    s->max_grad_norm = kd_params_number(p, "max_grad_norm");
    s->bias_correction = kd_params_boolean(p, "bias_correction");
    s->grad_averaging = kd_params_boolean(p, "grad_averaging");
    s->trust_clip = kd_params_boolean(p, "trust_clip");
    s->always_adapt = kd_params_boolean(p, "always_adapt");
    const bool honour_flags = kd_params_boolean(p, "no_decay");
    int64_t one = 1;
    s->n = n;
    s->params = calloc((size_t)n, sizeof *s->params);
    s->state = calloc((size_t)n * 2 + 1, sizeof *s->state);
    s->step = kd_tensor_keep(kd_tensor_zeros(KD_I64, KD_CPU, 1, &one));
    s->update = malloc((size_t)largest * kd_dtype_size(kd_tensor_list_at(params, 0)->tensor->dtype));
    s->partials = malloc((size_t)kd_lamb_blocks(largest) * sizeof *s->partials);
    kd_status st = s->params && s->state && s->step && s->update && s->partials
                       ? KD_OK
                       : kd_error(KD_ERR_NOMEM, "lamb: out of memory for %d parameters", n);
    for (int i = 0; st == KD_OK && i < n; i++) {
        const kd_named_tensor *named = kd_tensor_list_at(params, i);
        s->params[i].tensor = named->tensor;
        s->params[i].decay = !(honour_flags && (named->flags & KD_TENSOR_NO_DECAY));
        s->params[i].lr_scale = kd_create_args_lr_scale(args, i);
        if (!(s->params[i].lr_scale >= 0) || !isfinite(s->params[i].lr_scale))
            st = kd_error(KD_ERR_INVALID, "lamb: parameter '%s' has lr scale %g; a finite "
                          "value >= 0 expected", named->name, s->params[i].lr_scale);
        if (st == KD_OK)
            st = make_state(s, i, named->name);
    }
    if (st == KD_OK)
        s->state[s->n_state++] = (kd_named_tensor){"step", s->step, KD_TENSOR_BUFFER};
    if (st != KD_OK) {
        lamb_destroy(s);
        return st;
    }
    *self = s;
    return KD_OK;
}

static kd_status check_grad(int i, const kd_tensor *p)
{
    const kd_tensor *g = p->grad;
    if (g->dtype != p->dtype || g->device != p->device || !kd_tensor_same_shape(g, p) ||
        !kd_tensor_is_contiguous(g)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "lamb: the gradient of parameter %d (%s %s) does not match it (%s %s)",
                        i, kd_dtype_name(g->dtype), kd_shape_str(g, a, sizeof a),
                        kd_dtype_name(p->dtype), kd_shape_str(p, b, sizeof b));
    }
    return KD_OK;
}

static double sum_squares(const kd_tensor *t, double *partials)
{
    int64_t n = kd_tensor_numel(t);
    return t->dtype == KD_F32 ? kd_lamb_sum_squares_f32(n, kd_tensor_data(t), partials)
                              : kd_lamb_sum_squares_f64(n, kd_tensor_data(t), partials);
}

/* The divisor that brings the gradients' global norm down to
 * max_grad_norm (1 when it is below, or when clipping is off). */
static double global_clip(const lamb_plugin *s)
{
    if (s->max_grad_norm == 0)
        return 1.0;
    double squares = 0;
    for (int i = 0; i < s->n; i++) {
        const kd_tensor *g = s->params[i].tensor->grad;
        if (g)
            squares += sum_squares(g, s->partials);
    }
    double norm = sqrt(squares);
    return norm > s->max_grad_norm ? norm / s->max_grad_norm : 1.0;
}

/* timm's trust ratio: ||p|| / ||u||, 1 when either norm is 0. */
static double trust_ratio(const lamb_plugin *s, const kd_tensor *p, int64_t n)
{
    double w = sqrt(sum_squares(p, s->partials));
    double u = sqrt(p->dtype == KD_F32 ? kd_lamb_sum_squares_f32(n, s->update, s->partials)
                                       : kd_lamb_sum_squares_f64(n, s->update, s->partials));
    double r = w > 0 && u > 0 ? w / u : 1.0;
    return s->trust_clip && r > 1.0 ? 1.0 : r;
}

static kd_status lamb_step(void *self, double lr)
{
    lamb_plugin *s = self;
    if (!(lr >= 0) || !isfinite(lr))
        return kd_error(KD_ERR_INVALID, "lamb: learning rate must be a finite value >= 0, got %g",
                        lr);
    /* Every gradient is checked before any parameter moves. */
    for (int i = 0; i < s->n; i++) {
        if (!s->params[i].tensor->grad)
            continue;
        kd_status st = check_grad(i, s->params[i].tensor);
        if (st != KD_OK)
            return st;
    }
    int64_t *step = kd_tensor_data(s->step);
    *step += 1;
    const double clip = global_clip(s);
    for (int i = 0; i < s->n; i++) {
        lamb_param *l = &s->params[i];
        kd_tensor *p = l->tensor;
        if (!p->grad)
            continue;
        const double wd = l->decay ? s->weight_decay : 0.0;
        const kd_lamb_coeffs c = {
            .beta1 = s->beta1,
            .beta2 = s->beta2,
            .eps = s->eps,
            .weight_decay = wd,
            .bias_correction = s->bias_correction,
            .grad_averaging = s->grad_averaging,
            .step = *step,
            .clip = clip,
        };
        int64_t n = kd_tensor_numel(p);
        if (p->dtype == KD_F32)
            kd_lamb_moments_f32(n, kd_tensor_data(p), kd_tensor_data(p->grad),
                                kd_tensor_data(l->exp_avg), kd_tensor_data(l->exp_avg_sq),
                                s->update, &c);
        else
            kd_lamb_moments_f64(n, kd_tensor_data(p), kd_tensor_data(p->grad),
                                kd_tensor_data(l->exp_avg), kd_tensor_data(l->exp_avg_sq),
                                s->update, &c);
        /* timm adapts only decayed parameters unless always_adapt. */
        double ratio = wd != 0 || s->always_adapt ? trust_ratio(s, p, n) : 1.0;
        if (p->dtype == KD_F32)
            kd_lamb_apply_f32(n, kd_tensor_data(p), s->update, ratio, lr * l->lr_scale);
        else
            kd_lamb_apply_f64(n, kd_tensor_data(p), s->update, ratio, lr * l->lr_scale);
    }
    return KD_OK;
}

static kd_status lamb_state(void *self, kd_tensor_list *out)
{
    lamb_plugin *s = self;
    KD_LIST_SET(out, s->state, s->n_state);
    return KD_OK;
}

static const kd_optimizer_vtable lamb_vtable = {
    .header = {sizeof(kd_optimizer_vtable), KD_KIND_OPTIMIZER},
    .create = lamb_create,
    .destroy = lamb_destroy,
    .step = lamb_step,
    .state = lamb_state,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_OPTIMIZER, "lamb", &lamb_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "lamb", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
