/* Logit distillation at a temperature, the loss behind both the kd and the
 * logit_stand providers:
 *
 *   L = T^2 * (1/N) * sum_n KL(softmax(f(t_n)/T) || softmax(f(s_n)/T))
 *
 * with f the identity (Hinton et al. 2015) or the row Z-score (Sun et al.,
 * CVPR 2024). Both providers run this one code path, so kd with
 * logit_stand on and logit_stand at the same temperature give the same
 * bits. */
#ifndef KD_PLUGIN_LOGIT_KD_H
#define KD_PLUGIN_LOGIT_KD_H

#include <stdbool.h>

#include <kdengine/plugin.h>

#define LOGIT_KD_HIDDEN __attribute__((visibility("hidden")))

typedef struct logit_kd_options {
    const char *provider; /* static (the host's entry): names the loss in messages */
    const char *term;     /* static: the log term's name */
    const char *student_tap, *teacher_tap; /* copied */
    double temperature;
    bool standardize;
} logit_kd_options;

/* The loss vtable callbacks, shared by both providers. */
LOGIT_KD_HIDDEN kd_status logit_kd_create(const logit_kd_options *o, void **self);
LOGIT_KD_HIDDEN void logit_kd_destroy(void *self);
LOGIT_KD_HIDDEN kd_status logit_kd_needs(void *self, kd_loss_needs *out);
LOGIT_KD_HIDDEN kd_status logit_kd_bind(void *self, const kd_bind_args *args);
LOGIT_KD_HIDDEN kd_status logit_kd_forward(void *self, const kd_loss_args *args,
                                           kd_loss_result *out);

#endif
