/* The "adamw" and "adam" optimizer providers: adam_update.h behind the
 * optimizer vtable. One vtable serves both; the provider's user_data says
 * whether weight decay is decoupled (AdamW) or L2 in the gradient (Adam).
 *
 * State, named after the parameters so a checkpoint survives a change in
 * their order: "exp_avg.<name>", "exp_avg_sq.<name>",
 * "max_exp_avg_sq.<name>" (amsgrad only) and "step.<name>", an i64 [1]
 * counting the parameter's own updates, as torch keeps one step per
 * parameter: a parameter without a gradient on a step is not updated and
 * its count stays. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "adam_update.h"

typedef struct adam_param {
    kd_tensor *tensor;
    bool decay;
    double lr_scale; /* layer-wise decay: steps at lr * lr_scale */
    kd_tensor *exp_avg, *exp_avg_sq, *max_exp_avg_sq; /* the last NULL without amsgrad */
    kd_tensor *step;                                  /* i64 [1] */
} adam_param;

typedef struct adam_plugin {
    const char *provider;
    bool decoupled, amsgrad;
    double beta1, beta2, eps, weight_decay;
    int n;
    adam_param *params;
    int n_state;
    kd_named_tensor *state;
} adam_plugin;

static const bool DECOUPLED = true, L2 = false;

static void adam_destroy(void *self)
{
    adam_plugin *s = self;
    if (!s)
        return;
    for (int i = 0; i < s->n_state; i++)
        free((char *)s->state[i].name);
    free(s->state);
    for (int i = 0; s->params && i < s->n; i++) {
        kd_tensor_free(s->params[i].exp_avg);
        kd_tensor_free(s->params[i].exp_avg_sq);
        kd_tensor_free(s->params[i].max_exp_avg_sq);
        kd_tensor_free(s->params[i].step);
    }
    free(s->params);
    free(s);
}

static kd_status check_param(const char *provider, int i, const kd_named_tensor *p,
                             const kd_tensor_list *all)
{
    if (!p->name || !p->name[0])
        return kd_error(KD_ERR_INVALID, "%s: parameter %d has no name", provider, i);
    for (int j = 0; j < i; j++)
        if (strcmp(p->name, kd_tensor_list_at(all, j)->name) == 0)
            return kd_error(KD_ERR_INVALID, "%s: parameters %d and %d are both named '%s'",
                            provider, j, i, p->name);
    const kd_tensor *t = p->tensor;
    if (!t)
        return kd_error(KD_ERR_INVALID, "%s: parameter '%s' is NULL", provider, p->name);
    if (t->dtype != KD_F32 && t->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: parameter '%s' is %s; f32 or f64 expected",
                        provider, p->name, kd_dtype_name(t->dtype));
    if (t->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: parameter '%s' is not on the CPU", provider,
                        p->name);
    if (!kd_tensor_is_contiguous(t))
        return kd_error(KD_ERR_INVALID, "%s: parameter '%s' is not contiguous", provider,
                        p->name);
    return KD_OK;
}

/* Appends state tensor t as "<prefix>.<name>". */
static kd_status add_state(adam_plugin *s, const char *prefix, const char *name, kd_tensor *t)
{
    size_t len = strlen(prefix) + strlen(name) + 2;
    char *full = malloc(len);
    if (!full)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for state names", s->provider);
    snprintf(full, len, "%s.%s", prefix, name);
    s->state[s->n_state++] = (kd_named_tensor){full, t, KD_TENSOR_BUFFER};
    return KD_OK;
}

/* Zeroed moments and step count of parameter i. kd_tensor_keep: they are
 * ours even if a scope is open. */
static kd_status make_state(adam_plugin *s, int i, const char *name)
{
    adam_param *a = &s->params[i];
    int64_t one = 1;
    a->exp_avg = kd_tensor_keep(kd_tensor_zeros_like(a->tensor));
    a->exp_avg_sq = kd_tensor_keep(kd_tensor_zeros_like(a->tensor));
    a->step = kd_tensor_keep(kd_tensor_zeros(KD_I64, KD_CPU, 1, &one));
    if (s->amsgrad)
        a->max_exp_avg_sq = kd_tensor_keep(kd_tensor_zeros_like(a->tensor));
    if (!a->exp_avg || !a->exp_avg_sq || !a->step || (s->amsgrad && !a->max_exp_avg_sq))
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for the state of '%s'", s->provider,
                        name);
    kd_status st = add_state(s, "exp_avg", name, a->exp_avg);
    if (st == KD_OK)
        st = add_state(s, "exp_avg_sq", name, a->exp_avg_sq);
    if (st == KD_OK && s->amsgrad)
        st = add_state(s, "max_exp_avg_sq", name, a->max_exp_avg_sq);
    if (st == KD_OK)
        st = add_state(s, "step", name, a->step);
    return st;
}

static kd_status adam_create(const kd_create_args *args, const kd_tensor_list *params,
                             void **self)
{
    const char *provider = args->provider ? args->provider : "adam";
    if (!self)
        return kd_error(KD_ERR_INVALID, "%s: self is NULL", provider);
    *self = NULL;
    int n = params ? params->n : 0;
    if (n < 1 || !params->items)
        return kd_error(KD_ERR_INVALID, "%s: no parameters to optimise (n = %d)", provider, n);
    for (int i = 0; i < n; i++) {
        kd_status st = check_param(provider, i, kd_tensor_list_at(params, i), params);
        if (st != KD_OK)
            return st;
    }
    const kd_params *p = args->params;
    adam_plugin *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", provider);
    s->provider = provider;
    s->decoupled = args->provider_data && *(const bool *)args->provider_data;
    s->amsgrad = kd_params_boolean(p, "amsgrad");
    s->beta1 = kd_params_number(p, "beta1");
    s->beta2 = kd_params_number(p, "beta2");
    s->eps = kd_params_number(p, "eps");
    s->weight_decay = kd_params_number(p, "weight_decay");
    const bool honour_flags = kd_params_boolean(p, "no_decay");
    s->n = n;
    s->params = calloc((size_t)n, sizeof *s->params);
    s->state = calloc((size_t)n * 4, sizeof *s->state);
    kd_status st = s->params && s->state
                       ? KD_OK
                       : kd_error(KD_ERR_NOMEM, "%s: out of memory for %d parameters",
                                  provider, n);
    for (int i = 0; st == KD_OK && i < n; i++) {
        const kd_named_tensor *named = kd_tensor_list_at(params, i);
        s->params[i].tensor = named->tensor;
        s->params[i].decay = !(honour_flags && (named->flags & KD_TENSOR_NO_DECAY));
        s->params[i].lr_scale = kd_create_args_lr_scale(args, i);
        if (!(s->params[i].lr_scale >= 0) || !isfinite(s->params[i].lr_scale))
            st = kd_error(KD_ERR_INVALID, "%s: parameter '%s' has lr scale %g; a finite "
                          "value >= 0 expected", provider, named->name, s->params[i].lr_scale);
        if (st == KD_OK)
            st = make_state(s, i, named->name);
    }
    if (st != KD_OK) {
        adam_destroy(s);
        return st;
    }
    *self = s;
    return KD_OK;
}

static kd_status check_grad(const adam_plugin *s, int i)
{
    const kd_tensor *p = s->params[i].tensor, *g = p->grad;
    if (g->dtype != p->dtype || g->device != p->device || !kd_tensor_same_shape(g, p) ||
        !kd_tensor_is_contiguous(g)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "%s: the gradient of parameter %d (%s %s) does not match it (%s %s)",
                        s->provider, i, kd_dtype_name(g->dtype), kd_shape_str(g, a, sizeof a),
                        kd_dtype_name(p->dtype), kd_shape_str(p, b, sizeof b));
    }
    return KD_OK;
}

static kd_status adam_step(void *self, double lr)
{
    adam_plugin *s = self;
    if (!(lr >= 0) || !isfinite(lr))
        return kd_error(KD_ERR_INVALID, "%s: learning rate must be a finite value >= 0, got %g",
                        s->provider, lr);
    /* Every gradient is checked before any parameter moves. */
    for (int i = 0; i < s->n; i++) {
        if (!s->params[i].tensor->grad)
            continue;
        kd_status st = check_grad(s, i);
        if (st != KD_OK)
            return st;
    }
    for (int i = 0; i < s->n; i++) {
        adam_param *a = &s->params[i];
        kd_tensor *p = a->tensor;
        if (!p->grad)
            continue;
        int64_t *step = kd_tensor_data(a->step);
        *step += 1;
        kd_adam_coeffs c = {
            .lr = lr * a->lr_scale,
            .beta1 = s->beta1,
            .beta2 = s->beta2,
            .eps = s->eps,
            .weight_decay = a->decay ? s->weight_decay : 0.0,
            .decoupled = s->decoupled,
            .amsgrad = s->amsgrad,
            .step = *step,
        };
        int64_t n = kd_tensor_numel(p);
        void *vmax = s->amsgrad ? kd_tensor_data(a->max_exp_avg_sq) : NULL;
        if (p->dtype == KD_F32)
            kd_adam_update_f32(n, kd_tensor_data(p), kd_tensor_data(p->grad),
                               kd_tensor_data(a->exp_avg), kd_tensor_data(a->exp_avg_sq), vmax,
                               &c);
        else
            kd_adam_update_f64(n, kd_tensor_data(p), kd_tensor_data(p->grad),
                               kd_tensor_data(a->exp_avg), kd_tensor_data(a->exp_avg_sq), vmax,
                               &c);
    }
    return KD_OK;
}

static kd_status adam_state(void *self, kd_tensor_list *out)
{
    adam_plugin *s = self;
    KD_LIST_SET(out, s->state, s->n_state);
    return KD_OK;
}

static const kd_optimizer_vtable adam_vtable = {
    .header = {sizeof(kd_optimizer_vtable), KD_KIND_OPTIMIZER},
    .create = adam_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .state = adam_state,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_OPTIMIZER, "adamw", &adam_vtable.header, &DECOUPLED},
    {KD_KIND_OPTIMIZER, "adam", &adam_vtable.header, &L2},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "adamw", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 2);
    return KD_OK;
}
