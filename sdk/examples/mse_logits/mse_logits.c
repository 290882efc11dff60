/* mse_logits: a loss plugin built outside the kdengine tree, against the
 * installed SDK only.
 *
 * Logit matching (Kim et al. 2021, "Comparing Kullback-Leibler Divergence
 * and Mean Squared Error Loss in Knowledge Distillation"): the mean over
 * every element of (student logits - teacher logits)^2, the reduction
 * torch's F.mse_loss uses. It has no temperature: the paper shows this is
 * what KL divergence tends to as the temperature grows. The host runs the
 * teacher with gradients off, so only the student receives a gradient. */
#include <kdengine/kdengine.h>

/* The loss keeps nothing between calls, so every instance is this one. */
static int instance;

static kd_status mse_create(const kd_create_args *args, void **self)
{
    (void)args;
    *self = &instance;
    return KD_OK;
}

static void mse_destroy(void *self) { (void)self; }

static const char *const logits[] = {"logits"};

static kd_status mse_needs(void *self, kd_loss_needs *out)
{
    (void)self;
    out->n_student = 1;
    out->student = logits;
    out->n_teacher = 1;
    out->teacher = logits;
    return KD_OK;
}

static kd_status mse_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    (void)self;
    kd_tensor *s = args->student[0], *t = args->teacher[0];
    if (!kd_tensor_same_shape(s, t)) {
        char a[64], b[64];
        return kd_error(KD_ERR_INVALID,
                        "mse_logits: student logits %s and teacher logits %s differ in shape",
                        kd_shape_str(s, a, sizeof a), kd_shape_str(t, b, sizeof b));
    }
    kd_tensor *d = kd_sub(s, t);
    out->loss = kd_mean_all(kd_mul(d, d));
    out->n_terms = 0;
    return out->loss ? KD_OK : kd_error_wrap(kd_last_status(), "mse_logits");
}

static const kd_loss_vtable mse_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = mse_create,
    .destroy = mse_destroy,
    .needs = mse_needs,
    .forward = mse_forward,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "mse_logits", &mse_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "mse_logits", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
