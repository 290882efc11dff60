/* The scheduler plugins "constant", "step", "multistep", "cosine", "poly"
 * and "cosine_restarts": one
 * kd_lr_schedule (lr_schedule.h) per instance, filled from the job's
 * parameters and the run's shape, checked once at create(). */
#include <stdlib.h>

#include <kdengine/plugin.h>

#include "lr_schedule.h"

static void schedule_destroy(void *self) { free(self); }

static kd_status schedule_create(kd_lr_kind kind, const char *provider,
                                 const kd_create_args *args, const kd_schedule_info *info,
                                 void **self)
{
    if (!self)
        return kd_error(KD_ERR_INVALID, "%s: self is NULL", provider);
    *self = NULL;
    if (!info)
        return kd_error(KD_ERR_INVALID, "%s: no schedule info", provider);
    const kd_params *p = args->params;
    kd_lr_schedule s = {
        .kind = kind,
        .granularity = kd_params_boolean(p, "per_step") ? KD_LR_PER_STEP : KD_LR_PER_EPOCH,
        .base_lr = info->base_lr,
        .steps_per_epoch = info->steps_per_epoch,
        .warmup_epochs = kd_params_number(p, "warmup_epochs"),
        .warmup_start_factor = kd_params_number(p, "warmup_start_factor"),
    };
    switch (kind) {
    case KD_LR_CONSTANT:
        break;
    case KD_LR_STEP:
        s.step_size = kd_params_integer(p, "step_size");
        s.gamma = kd_params_number(p, "gamma");
        break;
    case KD_LR_MULTISTEP:
        s.gamma = kd_params_number(p, "gamma");
        s.n_milestones = kd_params_array_length(p, "milestones");
        if (s.n_milestones > KD_LR_MAX_MILESTONES)
            return kd_error(KD_ERR_INVALID, "multistep: at most %d milestones, got %d",
                            KD_LR_MAX_MILESTONES, s.n_milestones);
        for (int i = 0; i < s.n_milestones; i++)
            s.milestones[i] = (int64_t)kd_params_array_number(p, "milestones", i);
        break;
    case KD_LR_COSINE:
        if (info->epochs < 1)
            return kd_error(KD_ERR_INVALID,
                            "cosine: the run must last at least 1 epoch, got %lld",
                            (long long)info->epochs);
        s.total_epochs = (double)info->epochs;
        s.eta_min = kd_params_number(p, "eta_min");
        break;
    case KD_LR_POLY:
        if (info->epochs < 1)
            return kd_error(KD_ERR_INVALID,
                            "poly: the run must last at least 1 epoch, got %lld",
                            (long long)info->epochs);
        s.total_epochs = (double)info->epochs;
        s.eta_min = kd_params_number(p, "eta_min");
        s.power = kd_params_number(p, "power");
        break;
    case KD_LR_COSINE_RESTARTS:
        s.eta_min = kd_params_number(p, "eta_min");
        s.cycle_epochs = kd_params_number(p, "cycle_epochs");
        s.cycle_mul = kd_params_number(p, "cycle_mul");
        s.cycle_decay = kd_params_number(p, "cycle_decay");
        s.cycle_limit = kd_params_integer(p, "cycle_limit");
        break;
    }
    kd_status st = kd_lr_validate(&s);
    if (st != KD_OK)
        return st;
    kd_lr_schedule *copy = malloc(sizeof *copy);
    if (!copy)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", provider);
    *copy = s;
    *self = copy;
    return KD_OK;
}

static kd_status schedule_lr_at(void *self, int64_t step, double *lr)
{
    return kd_lr_at_step(self, step, lr);
}

static kd_status schedule_create_provider(const kd_create_args *args,
                                          const kd_schedule_info *info, void **self)
{
    const kd_lr_kind *kind = args->provider_data;
    return schedule_create(*kind, args->provider, args, info, self);
}

static const kd_scheduler_vtable schedule_vtable = {
    .header = {sizeof(kd_scheduler_vtable), KD_KIND_SCHEDULER},
    .create = schedule_create_provider,
    .destroy = schedule_destroy,
    .lr_at = schedule_lr_at,
};

static const kd_lr_kind CONSTANT = KD_LR_CONSTANT, STEP = KD_LR_STEP,
                        MULTISTEP = KD_LR_MULTISTEP, COSINE = KD_LR_COSINE,
                        POLY = KD_LR_POLY, COSINE_RESTARTS = KD_LR_COSINE_RESTARTS;

static const kd_plugin_provider providers[] = {
    {KD_KIND_SCHEDULER, "constant", &schedule_vtable.header, &CONSTANT},
    {KD_KIND_SCHEDULER, "step", &schedule_vtable.header, &STEP},
    {KD_KIND_SCHEDULER, "multistep", &schedule_vtable.header, &MULTISTEP},
    {KD_KIND_SCHEDULER, "cosine", &schedule_vtable.header, &COSINE},
    {KD_KIND_SCHEDULER, "poly", &schedule_vtable.header, &POLY},
    {KD_KIND_SCHEDULER, "cosine_restarts", &schedule_vtable.header, &COSINE_RESTARTS},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "schedulers", "1.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, (int)(sizeof providers / sizeof providers[0]));
    return KD_OK;
}
