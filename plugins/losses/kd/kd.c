/* The kd loss: Hinton's knowledge distillation, optionally on Z-scored
 * logits (see logit_kd.h). */
#include <kdengine/plugin.h>

#include "logit_kd.h"

static kd_status kd_create(const kd_create_args *args, void **self)
{
    const logit_kd_options o = {
        .provider = "kd",
        .term = "kd",
        .student_tap = kd_params_string(args->params, "student_tap"),
        .teacher_tap = kd_params_string(args->params, "teacher_tap"),
        .temperature = kd_params_number(args->params, "temperature"),
        .standardize = kd_params_boolean(args->params, "logit_stand"),
    };
    return logit_kd_create(&o, self);
}

static const kd_loss_vtable kd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = kd_create,
    .destroy = logit_kd_destroy,
    .needs = logit_kd_needs,
    .bind = logit_kd_bind,
    .forward = logit_kd_forward,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "kd", &kd_vtable.header},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "kd", "1.0.0");
    info->n_providers = 1;
    info->providers = providers;
    return KD_OK;
}
