/* The "sgd" optimizer plugin: kd_sgd (sgd_update.h) behind the optimizer
 * vtable. Its state is named after the parameters it was given
 * ("momentum_buffer.<parameter name>", then "momentum_started"), so a
 * checkpoint stays readable and survives a change in parameter order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "sgd_update.h"

typedef struct sgd_plugin {
    kd_sgd *sgd;
    int n_state;
    kd_named_tensor *state;
} sgd_plugin;

static void sgd_destroy(void *self)
{
    sgd_plugin *s = self;
    if (!s)
        return;
    for (int i = 0; i < s->n_state; i++)
        free((char *)s->state[i].name);
    free(s->state);
    kd_sgd_free(s->sgd);
    free(s);
}

/* Two parameters of one name would share a checkpoint entry. */
static kd_status check_names(const kd_tensor_list *params)
{
    for (int i = 0; i < params->n; i++) {
        const char *name = kd_tensor_list_at(params, i)->name;
        if (!name || !name[0])
            return kd_error(KD_ERR_INVALID, "sgd: parameter %d has no name", i);
        for (int j = 0; j < i; j++)
            if (strcmp(name, kd_tensor_list_at(params, j)->name) == 0)
                return kd_error(KD_ERR_INVALID,
                                "sgd: parameters %d and %d are both named '%s'", j, i, name);
    }
    return KD_OK;
}

static char *state_name(const char *prefix, const char *name)
{
    size_t len = strlen(prefix) + strlen(name) + 1;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "%s%s", prefix, name);
    return s;
}

/* The kernel's state in its order (a buffer per parameter, then the
 * started flags), renamed. */
static kd_status name_state(sgd_plugin *s, const kd_tensor_list *params)
{
    int n = kd_sgd_state_count(s->sgd);
    if (n == 0)
        return KD_OK;
    s->state = calloc((size_t)n, sizeof *s->state);
    if (!s->state)
        return kd_error(KD_ERR_NOMEM, "sgd: out of memory for %d state tensors", n);
    for (int i = 0; i < n; i++) {
        bool buffer = i < n - 1;
        s->state[i].name = buffer ? state_name("momentum_buffer.",
                                               kd_tensor_list_at(params, i)->name)
                                  : state_name("", "momentum_started");
        if (!s->state[i].name)
            return kd_error(KD_ERR_NOMEM, "sgd: out of memory for state names");
        s->state[i].tensor = kd_sgd_state_tensor(s->sgd, i);
        s->state[i].flags = KD_TENSOR_BUFFER;
        s->n_state = i + 1;
    }
    return KD_OK;
}

static kd_status sgd_create(const kd_create_args *args, const kd_tensor_list *params,
                            void **self)
{
    if (!self)
        return kd_error(KD_ERR_INVALID, "sgd: self is NULL");
    *self = NULL;
    int n = params ? params->n : 0;
    if (n < 1 || !params->items)
        return kd_error(KD_ERR_INVALID, "sgd: no parameters to optimise (n = %d)", n);
    kd_status st = check_names(params);
    if (st != KD_OK)
        return st;
    const kd_params *p = args->params;
    kd_sgd_options opt = {
        .momentum = kd_params_number(p, "momentum"),
        .dampening = kd_params_number(p, "dampening"),
        .weight_decay = kd_params_number(p, "weight_decay"),
        .nesterov = kd_params_boolean(p, "nesterov"),
    };
    const bool honour_flags = kd_params_boolean(p, "no_decay");

    sgd_plugin *s = calloc(1, sizeof *s);
    kd_tensor **tensors = malloc((size_t)n * sizeof *tensors);
    bool *no_decay = malloc((size_t)n * sizeof *no_decay);
    double *lr_scale = malloc((size_t)n * sizeof *lr_scale);
    if (!s || !tensors || !no_decay || !lr_scale) {
        st = kd_error(KD_ERR_NOMEM, "sgd: out of memory for %d parameters", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const kd_named_tensor *p = kd_tensor_list_at(params, i);
        tensors[i] = p->tensor;
        no_decay[i] = honour_flags && (p->flags & KD_TENSOR_NO_DECAY);
        lr_scale[i] = kd_create_args_lr_scale(args, i);
    }
    opt.lr_scale = lr_scale;
    st = kd_sgd_new(&opt, n, tensors, no_decay, &s->sgd);
    if (st == KD_OK)
        st = name_state(s, params);
done:
    free(tensors);
    free(no_decay);
    free(lr_scale);
    if (st != KD_OK) {
        sgd_destroy(s);
        return st;
    }
    *self = s;
    return KD_OK;
}

static kd_status sgd_step(void *self, double lr)
{
    return kd_sgd_step(((sgd_plugin *)self)->sgd, lr);
}

static kd_status sgd_state(void *self, kd_tensor_list *out)
{
    sgd_plugin *s = self;
    KD_LIST_SET(out, s->state, s->n_state);
    return KD_OK;
}

static const kd_optimizer_vtable sgd_vtable = {
    .header = {sizeof(kd_optimizer_vtable), KD_KIND_OPTIMIZER},
    .create = sgd_create,
    .destroy = sgd_destroy,
    .step = sgd_step,
    .state = sgd_state,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_OPTIMIZER, "sgd", &sgd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "sgd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
