/* Gradient clipping between backward and the optimizer step, as
 * torch.nn.utils (1.13) does it, on the .grad of a list of parameters
 * (those without one are skipped). */
#ifndef KD_CORE_GRAD_CLIP_H
#define KD_CORE_GRAD_CLIP_H

#include <kdengine/plugin.h>

/* The L2 norm of all the gradients together (the norm of the per-tensor
 * norms), accumulated in double. */
kd_status kd_grad_norm(int n, const kd_named_tensor *params, double *norm);

/* clip_grad_norm_(max_norm): when the global norm exceeds max_norm, every
 * gradient is multiplied by max_norm / (norm + 1e-6) (the coefficient
 * rounded to the gradient's dtype, as torch's scalar tensor is). *norm
 * gets the norm before clipping. */
kd_status kd_clip_grad_norm(int n, const kd_named_tensor *params, double max_norm, double *norm);

/* clip_grad_value_(value): every gradient element clamped to
 * [-value, value]. */
kd_status kd_clip_grad_value(int n, const kd_named_tensor *params, double value);

#endif
