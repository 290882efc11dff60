/* SGD with momentum, weight decay and Nesterov: torch.optim.SGD (1.13)
 * semantics, operation for operation, so f32 results match PyTorch's.
 *
 * For each parameter p with a gradient g, in this order:
 *   g = g + weight_decay * p            (skipped for no-decay parameters)
 *   b = g on the parameter's first step with a gradient, else
 *   b = momentum * b + (1 - dampening) * g
 *   g = g + momentum * b  (nesterov)  or  g = b
 *   p = p - lr * g
 * With momentum 0 there are no buffers and g is applied directly. A
 * parameter without .grad is skipped and its buffer left untouched.
 *
 * Ownership: the optimizer keeps pointers to the caller's parameters (they
 * must outlive it) and owns its momentum buffers, caller-owned tensors that
 * kd_sgd_free releases. */
#ifndef KD_SGD_UPDATE_H
#define KD_SGD_UPDATE_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/tensor.h>

typedef struct kd_sgd_options {
    double momentum;     /* >= 0; 0 keeps no buffers */
    double dampening;    /* in [0, 1] */
    double weight_decay; /* >= 0 */
    bool nesterov;       /* needs momentum > 0 and dampening 0, as torch */
    /* [n]: parameter i steps at lr * lr_scale[i] (layer-wise decay; each
     * finite and >= 0, copied by kd_sgd_new); NULL: all at lr */
    const double *lr_scale;
} kd_sgd_options;

typedef struct kd_sgd kd_sgd;

/* Builds an optimizer over n parameters (f32 or f64, contiguous, on the
 * CPU). no_decay[i] exempts parameter i from weight decay; NULL decays all.
 * Options are checked here: a bad value is KD_ERR_INVALID naming it. */
kd_status kd_sgd_new(const kd_sgd_options *o, int n, kd_tensor *const *params,
                     const bool *no_decay, kd_sgd **out);
void kd_sgd_free(kd_sgd *s);

/* One update of every parameter that has a .grad (same dtype and shape as
 * the parameter), at learning rate lr (>= 0). */
kd_status kd_sgd_step(kd_sgd *s, double lr);

/* The optimizer's state for checkpoints: "momentum_buffer.<i>" for each
 * parameter i (same shape and dtype) and "momentum_started", a u8 [n] that
 * is 1 once parameter i's buffer holds a value. Saving these tensors and
 * copying them back (kd_tensor_copy_) restores the optimizer exactly. With
 * momentum 0 the state is empty. i is in [0, kd_sgd_state_count()). */
int kd_sgd_state_count(const kd_sgd *s);
const char *kd_sgd_state_name(const kd_sgd *s, int i);
kd_tensor *kd_sgd_state_tensor(const kd_sgd *s, int i);

/* The update of one parameter on contiguous arrays: the CPU kernel, with
 * the arguments a device kernel takes. buf is NULL when momentum is 0;
 * first says buf holds no value yet. Coefficients are rounded to the
 * array's type before use, as torch does with Python scalars. */
typedef struct kd_sgd_coeffs {
    double lr, weight_decay, momentum, dampening;
    bool nesterov, first;
} kd_sgd_coeffs;
void kd_sgd_update_f32(int64_t n, float *p, const float *g, float *buf,
                       const kd_sgd_coeffs *c);
void kd_sgd_update_f64(int64_t n, double *p, const double *g, double *buf,
                       const kd_sgd_coeffs *c);

#endif
