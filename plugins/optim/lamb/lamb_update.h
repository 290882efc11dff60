/* LAMB as timm 0.9.16 defines it (timm.optim.Lamb, the NVIDIA FusedLAMB
 * variant), in three passes over each parameter so the norms the update
 * needs are read between them.
 *
 * Once per step, over every parameter that has a gradient:
 *   clip = ||g_all|| / max_grad_norm when that norm exceeds max_grad_norm,
 *          else 1                                  (max_grad_norm 0: 1)
 * Then for each parameter p, at step t (one count for the optimizer):
 *   g = g / clip
 *   m = beta1 * m + beta3 * g      beta3 = 1 - beta1 with grad_averaging, else 1
 *   v = beta2 * v + (1 - beta2) * g * g
 *   u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)   bc = 1 - beta^t with
 *                                                  bias_correction, else 1
 *   u = u + weight_decay * p
 *   if weight_decay != 0 or always_adapt:
 *     r = ||p|| / ||u|| when both are > 0, else 1; min(r, 1) with trust_clip
 *     u = u * r
 *   p = p - lr * u
 * Norms are accumulated in double over fixed blocks, so the result does
 * not depend on the number of threads. */
#ifndef KD_LAMB_UPDATE_H
#define KD_LAMB_UPDATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kd_lamb_coeffs {
    double beta1, beta2, eps;
    double weight_decay; /* 0 for a no-decay parameter */
    bool bias_correction, grad_averaging;
    int64_t step; /* t, >= 1 */
    double clip;  /* the global clipping divisor, >= 1 */
} kd_lamb_coeffs;

/* Partial sums live in `partials`, kd_lamb_blocks(n) doubles. */
int64_t kd_lamb_blocks(int64_t n);

/* Sum of x[i]^2 over n elements. */
double kd_lamb_sum_squares_f32(int64_t n, const float *x, double *partials);
double kd_lamb_sum_squares_f64(int64_t n, const double *x, double *partials);

/* Moments m, v in place and the update u (n elements), from p and g. */
void kd_lamb_moments_f32(int64_t n, const float *p, const float *g, float *m, float *v,
                         float *u, const kd_lamb_coeffs *c);
void kd_lamb_moments_f64(int64_t n, const double *p, const double *g, double *m, double *v,
                         double *u, const kd_lamb_coeffs *c);

/* p = p - lr * (u * ratio), ratio being the trust ratio (1 when not
 * adapting). */
void kd_lamb_apply_f32(int64_t n, float *p, const float *u, double ratio, double lr);
void kd_lamb_apply_f64(int64_t n, double *p, const double *u, double ratio, double lr);

#endif
