/* The logit_stand loss: KD on Z-scored logits at a base temperature, as
 * Sun et al. (CVPR 2024) define it; the same code as kd with logit_stand
 * on (see ../kd/logit_kd.h). */
#include <kdengine/plugin.h>

#include "../kd/logit_kd.h"

static kd_status logit_stand_create(const kd_create_args *args, void **self)
{
    const logit_kd_options o = {
        .provider = "logit_stand",
        .term = "kd_ls",
        .student_tap = kd_params_string(args->params, "student_tap"),
        .teacher_tap = kd_params_string(args->params, "teacher_tap"),
        .temperature = kd_params_number(args->params, "base_temperature"),
        .standardize = true,
    };
    return logit_kd_create(&o, self);
}

static const kd_loss_vtable logit_stand_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = logit_stand_create,
    .destroy = logit_kd_destroy,
    .needs = logit_kd_needs,
    .bind = logit_kd_bind,
    .forward = logit_kd_forward,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "logit_stand", &logit_stand_vtable.header},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "logit_stand", "1.0.0");
    info->n_providers = 1;
    info->providers = providers;
    return KD_OK;
}
