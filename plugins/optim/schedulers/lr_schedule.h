/* Learning-rate schedules as pure functions of the step, so resuming a run
 * needs nothing but the step count.
 *
 * At epoch t (whole, or fractional with KD_LR_PER_STEP):
 *   step       base * gamma^floor(t / step_size)            (torch StepLR)
 *   multistep  base * gamma^(number of milestones <= t)     (torch MultiStepLR)
 *   cosine     eta_min + (base - eta_min) * (1 + cos(pi * t / total)) / 2
 *              for t <= total, eta_min after it      (torch CosineAnnealingLR)
 *   poly       eta_min + (base - eta_min) * (1 - t / total)^power
 *              for t <= total, eta_min after it (PaddleClas Polynomial,
 *              mmcv PolyLrUpdaterHook)
 *   cosine_restarts  cycles of cosine annealing (SGDR; timm's
 *              CosineLRScheduler): cycle i starts at epoch
 *              start_i = cycle_epochs * (1 + mul + ... + mul^(i-1)) and lasts
 *              T_i = cycle_epochs * mul^i; within it, at u = t - start_i,
 *                eta_min + (base * decay^i - eta_min) * (1 + cos(pi u / T_i)) / 2
 *              and eta_min once cycle_limit cycles have run (0: no limit)
 *   constant   base
 * Linear warm-up (timm's, with warmup_prefix off): for t < warmup_epochs,
 *   start = warmup_start_factor * base
 *   lr    = start + t * (base - start) / warmup_epochs
 * and from warmup_epochs on, the schedule above at the same t (the warm-up
 * replaces the schedule's first epochs; it does not shift it).
 *
 * Granularity: the optimizer step s (0-based, counted over the whole run)
 * is at epoch t = floor(s / steps_per_epoch) with KD_LR_PER_EPOCH, the
 * fraction s / steps_per_epoch with KD_LR_PER_STEP. */
#ifndef KD_LR_SCHEDULE_H
#define KD_LR_SCHEDULE_H

#include <stdint.h>

#include <kdengine/status.h>

#define KD_LR_MAX_MILESTONES 16

typedef enum kd_lr_kind {
    KD_LR_CONSTANT = 0,
    KD_LR_STEP,
    KD_LR_MULTISTEP,
    KD_LR_COSINE,
    KD_LR_POLY,
    KD_LR_COSINE_RESTARTS
} kd_lr_kind;

typedef enum kd_lr_granularity { KD_LR_PER_EPOCH = 0, KD_LR_PER_STEP } kd_lr_granularity;

typedef struct kd_lr_schedule {
    kd_lr_kind kind;
    kd_lr_granularity granularity;
    double base_lr;          /* > 0 */
    int64_t steps_per_epoch; /* >= 1 */
    double gamma;            /* step, multistep: > 0 */
    int64_t step_size;       /* step: epochs between decays, >= 1 */
    int n_milestones;        /* multistep: 1..KD_LR_MAX_MILESTONES */
    int64_t milestones[KD_LR_MAX_MILESTONES]; /* epochs, >= 1, increasing */
    double total_epochs;     /* cosine, poly: > 0 */
    double eta_min;          /* cosine, poly, cosine_restarts: in [0, base_lr] */
    double power;            /* poly: > 0 */
    double cycle_epochs;     /* cosine_restarts: the first cycle's length, > 0 */
    double cycle_mul;        /* cosine_restarts: >= 1, each cycle's length
                                over the previous one's */
    double cycle_decay;      /* cosine_restarts: > 0, each cycle's peak over
                                the previous one's */
    int64_t cycle_limit;     /* cosine_restarts: cycles run, >= 0 (0: no limit) */
    double warmup_epochs;    /* >= 0; 0 = no warm-up */
    double warmup_start_factor; /* in [0, 1] */
} kd_lr_schedule;

/* KD_ERR_INVALID naming the first bad field, else KD_OK. */
kd_status kd_lr_validate(const kd_lr_schedule *s);

/* The learning rate at epoch t >= 0 (fractional allowed). */
kd_status kd_lr_at_epoch(const kd_lr_schedule *s, double t, double *lr);

/* The learning rate for optimizer step `step` >= 0 (see granularity). */
kd_status kd_lr_at_step(const kd_lr_schedule *s, int64_t step, double *lr);

#endif
