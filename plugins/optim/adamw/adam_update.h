/* The Adam and AdamW update of one parameter: torch.optim.Adam and
 * torch.optim.AdamW (1.13, single-tensor path), operation for operation.
 *
 * For a parameter p with gradient g, at optimizer step t of this parameter
 * (t counts its updates, from 1):
 *   p = p * (1 - lr * weight_decay)          AdamW (decoupled decay)
 *   g = g + weight_decay * p                 Adam (L2 in the gradient)
 *   m = beta1 * m + (1 - beta1) * g
 *   v = beta2 * v + (1 - beta2) * g * g
 *   vmax = max(vmax, v), read instead of v   amsgrad
 *   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * The scalar coefficients are computed in double and rounded to the
 * array's type once, as torch does with Python scalars. */
#ifndef KD_ADAM_UPDATE_H
#define KD_ADAM_UPDATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kd_adam_coeffs {
    double lr, beta1, beta2, eps;
    double weight_decay; /* 0 for a no-decay parameter */
    bool decoupled;      /* AdamW's decay on the weights, else Adam's L2 */
    bool amsgrad;        /* vmax is non-NULL */
    int64_t step;        /* t, >= 1 */
} kd_adam_coeffs;

/* The update on contiguous arrays of n elements: p, m, v (and vmax with
 * amsgrad) in place, g read only. */
void kd_adam_update_f32(int64_t n, float *p, const float *g, float *m, float *v, float *vmax,
                        const kd_adam_coeffs *c);
void kd_adam_update_f64(int64_t n, double *p, const double *g, double *m, double *v,
                        double *vmax, const kd_adam_coeffs *c);

#endif
