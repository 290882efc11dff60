/* Batch transforms "mixup", "cutmix" and "mixup_cutmix": timm's Mixup
 * (mixup, cutmix, or both with a switch; the three differ only in their
 * defaults) on the training batch, on the kernels of mix_plan.h.
 *
 * The host hands f32 [N, C, H, W] images on the CPU and an rng keyed by
 * (seed, step); the plan is drawn from it (mix_plan.h says in which order),
 * so a resumed run mixes its batches as the uninterrupted one did. The
 * mixed images replace the batch for the student and the teacher alike. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "mix_plan.h"

static kd_status mixup_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    kd_mix_config cfg = {
        .mixup_alpha = kd_params_number(p, "mixup_alpha"),
        .cutmix_alpha = kd_params_number(p, "cutmix_alpha"),
        .prob = kd_params_number(p, "prob"),
        .switch_prob = kd_params_number(p, "switch_prob"),
        .correct_lam = kd_params_boolean(p, "correct_lam"),
        .label_smoothing = kd_params_number(p, "label_smoothing"),
    };
    const char *mode = kd_params_string(p, "mode");
    cfg.mode = strcmp(mode, "elem") == 0 ? KD_MIX_ELEM
               : strcmp(mode, "pair") == 0 ? KD_MIX_PAIR : KD_MIX_BATCH;
    int n_minmax = kd_params_array_length(p, "cutmix_minmax");
    if (n_minmax != 0 && n_minmax != 2)
        return kd_error(KD_ERR_INVALID, "mixup: cutmix_minmax takes [] or [min, max], got %d "
                        "values", n_minmax);
    if (n_minmax == 2) {
        cfg.has_minmax = true;
        cfg.minmax[0] = kd_params_array_number(p, "cutmix_minmax", 0);
        cfg.minmax[1] = kd_params_array_number(p, "cutmix_minmax", 1);
        if (!(cfg.minmax[0] >= 0 && cfg.minmax[0] < cfg.minmax[1] && cfg.minmax[1] <= 1))
            return kd_error(KD_ERR_INVALID,
                            "mixup: cutmix_minmax [%g, %g] must satisfy 0 <= min < max <= 1",
                            cfg.minmax[0], cfg.minmax[1]);
        cfg.cutmix_alpha = 1.0; /* timm: the Beta draw only picks the switch */
    }
    if (cfg.mixup_alpha <= 0 && cfg.cutmix_alpha <= 0)
        return kd_error(KD_ERR_INVALID, "mixup: mixup_alpha and cutmix_alpha are both 0 and "
                        "no cutmix_minmax is set: nothing would be mixed");
    kd_mix_config *c = malloc(sizeof *c);
    if (!c)
        return kd_error(KD_ERR_NOMEM, "mixup: out of memory");
    *c = cfg;
    *self = c;
    return KD_OK;
}

static void mixup_destroy(void *self) { free(self); }

static kd_status check_batch(const kd_batch_args *args, int64_t n, int64_t classes)
{
    const kd_tensor *x = args->images;
    if (x->dtype != KD_F32 || x->ndim != 4 || kd_device_kind(x->device) != KD_CPU)
        return kd_error(KD_ERR_INVALID,
                        "mixup: needs f32 [N, C, H, W] images on the CPU, got %s with %d "
                        "dimensions", kd_dtype_name(x->dtype), x->ndim);
    if (args->labels->dtype != KD_I64 || args->labels->ndim != 1 ||
        args->labels->shape[0] != n)
        return kd_error(KD_ERR_INVALID, "mixup: needs I64 labels [%lld]", (long long)n);
    if (classes < 1)
        return kd_error(KD_ERR_INVALID, "mixup: the job has %lld classes", (long long)classes);
    const kd_tensor *s = args->soft_targets;
    if (s && (s->dtype != KD_F32 || s->ndim != 2 || s->shape[0] != n || s->shape[1] != classes))
        return kd_error(KD_ERR_INVALID,
                        "mixup: an earlier batch transform's soft targets are not f32 [%lld, "
                        "%lld]", (long long)n, (long long)classes);
    return KD_OK;
}

static kd_status mixup_apply(void *self, kd_batch_args *args)
{
    const kd_mix_config *cfg = self;
    int64_t n = args->images->shape[0], classes = args->num_classes;
    kd_status st = check_batch(args, n, classes);
    if (st != KD_OK)
        return st;
    int64_t c = args->images->shape[1], h = args->images->shape[2], w = args->images->shape[3];
    kd_tensor *x = kd_contiguous(args->images);
    kd_tensor *soft_in = args->soft_targets ? kd_contiguous(args->soft_targets) : NULL;
    kd_tensor *mixed = kd_tensor_empty(KD_F32, KD_CPU, 4, (int64_t[]){n, c, h, w});
    kd_tensor *targets = kd_tensor_empty(KD_F32, KD_CPU, 2, (int64_t[]){n, classes});
    kd_mix_elem *plan = malloc((size_t)(n > 0 ? n : 1) * sizeof *plan);
    if (!x || !mixed || !targets || (args->soft_targets && !soft_in) || !plan) {
        free(plan);
        return kd_error(KD_ERR_NOMEM, "mixup: out of memory for a batch of %lld", (long long)n);
    }
    st = kd_mix_plan_draw(cfg, &args->rng, n, h, w, plan);
    if (st == KD_OK)
        st = kd_mix_targets(cfg, plan, n, classes, kd_tensor_data(args->labels),
                            soft_in ? kd_tensor_data(soft_in) : NULL, kd_tensor_data(targets));
    if (st == KD_OK) {
        kd_mix_images(plan, n, c, h, w, kd_tensor_data(x), kd_tensor_data(mixed));
        args->images = mixed;
        args->soft_targets = targets;
    }
    free(plan);
    return st;
}

static const kd_batch_transform_vtable mixup_vtable = {
    .header = {sizeof(kd_batch_transform_vtable), KD_KIND_BATCH_TRANSFORM},
    .create = mixup_create,
    .destroy = mixup_destroy,
    .apply = mixup_apply,
};

/* One vtable; the providers differ only in their manifest defaults. */
static const kd_plugin_provider providers[] = {
    {KD_KIND_BATCH_TRANSFORM, "mixup", &mixup_vtable.header, NULL},
    {KD_KIND_BATCH_TRANSFORM, "cutmix", &mixup_vtable.header, NULL},
    {KD_KIND_BATCH_TRANSFORM, "mixup_cutmix", &mixup_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "mixup", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 3);
    return KD_OK;
}
