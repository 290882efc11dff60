/* EMA of the student's weights (ema.h), with the SDK's ops so it runs
 * wherever the tensors live. */
#include "ema.h"

#include <math.h>
#include <string.h>

#include <kdengine/ops.h>

double kd_ema_decay(const kd_job_ema *e, int64_t step)
{
    int64_t t = step - e->update_after_step - 1;
    if (t <= 0)
        return 0.0;
    if (!e->warmup)
        return e->decay;
    double d = 1.0 - pow(1.0 + (double)t / e->warmup_gamma, -e->warmup_power);
    d = d < e->decay ? d : e->decay;
    return d > e->min_decay ? d : e->min_decay;
}

/* torch.lerp's two forms: from the start for small weights, from the end
 * for large ones (so weight 1 gives the end exactly). */
static kd_tensor *lerp(kd_tensor *start, kd_tensor *end, double weight)
{
    kd_tensor *diff = kd_sub(end, start);
    return weight < 0.5 ? kd_add(start, kd_mul_scalar(diff, weight))
                        : kd_sub(end, kd_mul_scalar(diff, 1.0 - weight));
}

kd_status kd_ema_update(const kd_job_ema *e, int n, const kd_named_tensor *ema,
                        const kd_named_tensor *model, double decay)
{
    for (int i = 0; i < n; i++) {
        kd_tensor *a = ema[i].tensor, *b = model[i].tensor;
        bool floating = a->dtype == KD_F32 || a->dtype == KD_F64;
        bool average = floating && !(e->exclude_buffers && !(model[i].flags & KD_TENSOR_PARAM));
        kd_tensor *next = average ? lerp(a, b, 1.0 - decay) : b;
        kd_status st = next ? kd_tensor_copy_(a, next) : kd_last_status();
        if (st != KD_OK)
            return kd_error_wrap(st, "ema: %s", ema[i].name);
    }
    return KD_OK;
}
