/* Learning-rate schedules: closed forms, validated on every query (a few
 * comparisons once per step) so a bad schedule can never yield a value. */
#include "lr_schedule.h"

#include <math.h>

static const char *kind_name(kd_lr_kind kind)
{
    switch (kind) {
    case KD_LR_CONSTANT:
        return "constant";
    case KD_LR_STEP:
        return "step";
    case KD_LR_MULTISTEP:
        return "multistep";
    case KD_LR_COSINE:
        return "cosine";
    case KD_LR_POLY:
        return "poly";
    case KD_LR_COSINE_RESTARTS:
        return "cosine_restarts";
    }
    return "?";
}

kd_status kd_lr_validate(const kd_lr_schedule *s)
{
    if (!s)
        return kd_error(KD_ERR_INVALID, "lr schedule: NULL");
    if (s->kind < KD_LR_CONSTANT || s->kind > KD_LR_COSINE_RESTARTS)
        return kd_error(KD_ERR_INVALID, "lr schedule: unknown kind %d", (int)s->kind);
    const char *k = kind_name(s->kind);
    if (s->granularity != KD_LR_PER_EPOCH && s->granularity != KD_LR_PER_STEP)
        return kd_error(KD_ERR_INVALID, "lr schedule %s: unknown granularity %d", k,
                        (int)s->granularity);
    if (!(s->base_lr > 0) || !isfinite(s->base_lr))
        return kd_error(KD_ERR_INVALID, "lr schedule %s: base_lr must be finite and > 0, got %g",
                        k, s->base_lr);
    if (s->steps_per_epoch < 1)
        return kd_error(KD_ERR_INVALID, "lr schedule %s: steps_per_epoch must be >= 1, got %lld",
                        k, (long long)s->steps_per_epoch);
    if ((s->kind == KD_LR_STEP || s->kind == KD_LR_MULTISTEP) &&
        (!(s->gamma > 0) || !isfinite(s->gamma)))
        return kd_error(KD_ERR_INVALID, "lr schedule %s: gamma must be finite and > 0, got %g",
                        k, s->gamma);
    if (s->kind == KD_LR_STEP && s->step_size < 1)
        return kd_error(KD_ERR_INVALID, "lr schedule step: step_size must be >= 1 epoch, got %lld",
                        (long long)s->step_size);
    if (s->kind == KD_LR_MULTISTEP) {
        if (s->n_milestones < 1 || s->n_milestones > KD_LR_MAX_MILESTONES)
            return kd_error(KD_ERR_INVALID,
                            "lr schedule multistep: needs 1 to %d milestones, got %d",
                            KD_LR_MAX_MILESTONES, s->n_milestones);
        for (int i = 0; i < s->n_milestones; i++) {
            if (s->milestones[i] < 1)
                return kd_error(KD_ERR_INVALID,
                                "lr schedule multistep: milestone %d is %lld; epochs >= 1 "
                                "expected",
                                i, (long long)s->milestones[i]);
            if (i > 0 && s->milestones[i] <= s->milestones[i - 1])
                return kd_error(KD_ERR_INVALID,
                                "lr schedule multistep: milestones must increase, but %lld "
                                "follows %lld",
                                (long long)s->milestones[i], (long long)s->milestones[i - 1]);
        }
    }
    if ((s->kind == KD_LR_COSINE || s->kind == KD_LR_POLY) &&
        (!(s->total_epochs > 0) || !isfinite(s->total_epochs)))
        return kd_error(KD_ERR_INVALID,
                        "lr schedule %s: total_epochs must be finite and > 0, got %g", k,
                        s->total_epochs);
    if ((s->kind == KD_LR_COSINE || s->kind == KD_LR_POLY || s->kind == KD_LR_COSINE_RESTARTS) &&
        !(s->eta_min >= 0 && s->eta_min <= s->base_lr))
        return kd_error(KD_ERR_INVALID,
                        "lr schedule %s: eta_min must be in [0, base_lr = %g], got %g", k,
                        s->base_lr, s->eta_min);
    if (s->kind == KD_LR_POLY && (!(s->power > 0) || !isfinite(s->power)))
        return kd_error(KD_ERR_INVALID, "lr schedule poly: power must be finite and > 0, got %g",
                        s->power);
    if (s->kind == KD_LR_COSINE_RESTARTS) {
        if (!(s->cycle_epochs > 0) || !isfinite(s->cycle_epochs))
            return kd_error(KD_ERR_INVALID,
                            "lr schedule cosine_restarts: cycle_epochs must be finite and > 0, "
                            "got %g",
                            s->cycle_epochs);
        if (!(s->cycle_mul >= 1) || !isfinite(s->cycle_mul))
            return kd_error(KD_ERR_INVALID,
                            "lr schedule cosine_restarts: cycle_mul must be finite and >= 1, "
                            "got %g",
                            s->cycle_mul);
        if (!(s->cycle_decay > 0) || !isfinite(s->cycle_decay))
            return kd_error(KD_ERR_INVALID,
                            "lr schedule cosine_restarts: cycle_decay must be finite and > 0, "
                            "got %g",
                            s->cycle_decay);
        if (s->cycle_limit < 0)
            return kd_error(KD_ERR_INVALID,
                            "lr schedule cosine_restarts: cycle_limit must be >= 0 (0: no "
                            "limit), got %lld",
                            (long long)s->cycle_limit);
    }
    if (!(s->warmup_epochs >= 0) || !isfinite(s->warmup_epochs))
        return kd_error(KD_ERR_INVALID,
                        "lr schedule %s: warmup_epochs must be finite and >= 0, got %g", k,
                        s->warmup_epochs);
    if (s->warmup_epochs > 0 && !(s->warmup_start_factor >= 0 && s->warmup_start_factor <= 1))
        return kd_error(KD_ERR_INVALID,
                        "lr schedule %s: warmup_start_factor must be in [0, 1], got %g", k,
                        s->warmup_start_factor);
    return KD_OK;
}

/* Milestones passed at epoch t. */
static int milestones_passed(const kd_lr_schedule *s, double t)
{
    int i = 0;
    while (i < s->n_milestones && (double)s->milestones[i] <= t)
        i++;
    return i;
}

/* SGDR's cycles: which cycle holds epoch t, where it starts and how long it
 * lasts. Equal lengths divide; growing ones (mul > 1) are walked, a number
 * of cycles logarithmic in t. Summing the starts, rather than timm's
 * closed form through a logarithm, keeps a cycle's first epoch in that
 * cycle whatever the rounding. */
static double cosine_restarts_at(const kd_lr_schedule *s, double t)
{
    double start = 0, length = s->cycle_epochs;
    int64_t cycle = 0;
    if (s->cycle_mul == 1) {
        cycle = (int64_t)floor(t / length);
        start = (double)cycle * length;
    } else {
        while (t >= start + length && (s->cycle_limit == 0 || cycle < s->cycle_limit)) {
            start += length;
            length *= s->cycle_mul;
            cycle++;
        }
    }
    if (s->cycle_limit > 0 && cycle >= s->cycle_limit)
        return s->eta_min;
    double peak = s->base_lr * pow(s->cycle_decay, (double)cycle);
    return s->eta_min + (peak - s->eta_min) * (1 + cos(M_PI * (t - start) / length)) / 2;
}

static double schedule_at(const kd_lr_schedule *s, double t)
{
    switch (s->kind) {
    case KD_LR_CONSTANT:
        break;
    case KD_LR_STEP:
        return s->base_lr * pow(s->gamma, floor(t / (double)s->step_size));
    case KD_LR_MULTISTEP:
        return s->base_lr * pow(s->gamma, milestones_passed(s, t));
    case KD_LR_COSINE:
        if (t >= s->total_epochs)
            return s->eta_min;
        return s->eta_min +
               (s->base_lr - s->eta_min) * (1 + cos(M_PI * t / s->total_epochs)) / 2;
    case KD_LR_POLY:
        if (t >= s->total_epochs)
            return s->eta_min;
        return s->eta_min + (s->base_lr - s->eta_min) * pow(1 - t / s->total_epochs, s->power);
    case KD_LR_COSINE_RESTARTS:
        return cosine_restarts_at(s, t);
    }
    return s->base_lr;
}

kd_status kd_lr_at_epoch(const kd_lr_schedule *s, double t, double *lr)
{
    kd_status st = kd_lr_validate(s);
    if (st != KD_OK)
        return st;
    if (!lr)
        return kd_error(KD_ERR_INVALID, "lr schedule: lr is NULL");
    if (!(t >= 0) || !isfinite(t))
        return kd_error(KD_ERR_INVALID, "lr schedule %s: epoch must be finite and >= 0, got %g",
                        kind_name(s->kind), t);
    if (t < s->warmup_epochs) {
        double start = s->warmup_start_factor * s->base_lr;
        *lr = start + t * (s->base_lr - start) / s->warmup_epochs;
    } else {
        *lr = schedule_at(s, t);
    }
    return KD_OK;
}

kd_status kd_lr_at_step(const kd_lr_schedule *s, int64_t step, double *lr)
{
    kd_status st = kd_lr_validate(s);
    if (st != KD_OK)
        return st;
    if (step < 0)
        return kd_error(KD_ERR_INVALID, "lr schedule %s: step must be >= 0, got %lld",
                        kind_name(s->kind), (long long)step);
    double t = s->granularity == KD_LR_PER_STEP
                   ? (double)step / (double)s->steps_per_epoch
                   : (double)(step / s->steps_per_epoch);
    return kd_lr_at_epoch(s, t, lr);
}
