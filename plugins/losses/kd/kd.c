/* The kd plugin: two providers on one code path (logit_kd.h).
 * - "kd": Hinton's knowledge distillation at temperature T, optionally on
 *   Z-scored logits (logit_stand: true);
 * - "logit_stand": KD on Z-scored logits at a base temperature, as Sun et
 *   al. (CVPR 2024) define it, logged as "kd_ls".
 * kd with logit_stand on and logit_stand at the same temperature give the
 * same bits. */
#include <kdengine/plugin.h>

#include "logit_kd.h"

/* How a provider reads its parameters. */
typedef struct kd_variant {
    const char *term;            /* the log term */
    const char *temperature_key; /* its temperature parameter */
    bool always_standardize;     /* else the "logit_stand" parameter says */
} kd_variant;

static const kd_variant KD = {"kd", "temperature", false};
static const kd_variant LOGIT_STAND = {"kd_ls", "base_temperature", true};

static kd_status kd_create(const kd_create_args *args, void **self)
{
    const kd_variant *v = args->provider_data;
    const logit_kd_options o = {
        .provider = args->provider,
        .term = v->term,
        .student_tap = kd_params_string(args->params, "student_tap"),
        .teacher_tap = kd_params_string(args->params, "teacher_tap"),
        .temperature = kd_params_number(args->params, v->temperature_key),
        .standardize = v->always_standardize || kd_params_boolean(args->params, "logit_stand"),
    };
    return logit_kd_create(&o, self);
}

static const kd_loss_vtable kd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = kd_create,
    .destroy = logit_kd_destroy,
    .needs = logit_kd_needs,
    .forward = logit_kd_forward,
    .bind = logit_kd_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "kd", &kd_vtable.header, &KD},
    {KD_KIND_LOSS, "logit_stand", &kd_vtable.header, &LOGIT_STAND},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "kd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 2);
    return KD_OK;
}
