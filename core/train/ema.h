/* The student's exponential moving average (kd_job_ema, job.h), updated
 * after each optimizer step as timm's ModelEmaV3 does. */
#ifndef KD_CORE_EMA_H
#define KD_CORE_EMA_H

#include <kdengine/plugin.h>

#include "job.h"

/* The decay of update `step` (the optimizer steps done, from 1):
 * ModelEmaV3.get_decay. */
double kd_ema_decay(const kd_job_ema *e, int64_t step);

/* ema[i] = lerp(ema[i], model[i], 1 - decay) for the floating tensors
 * (parameters only with exclude_buffers), a copy for the rest. The two
 * lists are the same model's, in the same order. Intermediates belong to
 * the caller's scope. */
kd_status kd_ema_update(const kd_job_ema *e, int n, const kd_named_tensor *ema,
                        const kd_named_tensor *model, double decay);

#endif
