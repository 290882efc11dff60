/* Teachers in a step: their inputs, ensembles, the taps losses read. */
#include <string.h>

#include <kdengine/kdengine.h>

#include "teachers.h"

/* The per-channel affine of split's last "normalize" transform: images
 * are (x - mean) / std of x in [0, 1]; without one, mean 0 and std 1. */
static void pipeline_normalize(const kd_job_data *split, int channels, double *mean,
                               double *std)
{
    for (int c = 0; c < channels; c++) {
        mean[c] = 0;
        std[c] = 1;
    }
    for (int i = split->n_transforms - 1; i >= 0; i--) {
        if (strcmp(split->transforms[i]->name, "normalize") != 0)
            continue;
        const kd_params *p = split->transform_params[i];
        for (int c = 0; c < channels && c < kd_params_array_length(p, "mean"); c++) {
            mean[c] = kd_params_array_number(p, "mean", c);
            std[c] = kd_params_array_number(p, "std", c);
        }
        return;
    }
}

static kd_tensor *channel_tensor(kd_dtype dtype, int channels, const double *v)
{
    int64_t shape[4] = {1, channels, 1, 1};
    float f[KD_JOB_MAX_CHANNELS];
    for (int c = 0; c < channels; c++)
        f[c] = (float)v[c];
    return kd_tensor_from_data(dtype, 4, shape, dtype == KD_F64 ? (const void *)v : f);
}

kd_status kd_teacher_prepare(kd_teacher_run *t, const kd_job_data *split, const kd_data_run *d,
                             kd_dtype dtype)
{
    const kd_job_teacher *spec = t->spec;
    t->height = spec->input_h ? spec->input_h : d->height;
    t->width = spec->input_w ? spec->input_w : d->width;
    t->resize = t->height != d->height || t->width != d->width;
    if (spec->n_norm == 0)
        return KD_OK;
    if (spec->n_norm != d->channels)
        return kd_error(KD_ERR_INVALID, "%s.normalize: %d values per list, but %s's images have "
                        "%d channel%s", spec->path, spec->n_norm, split->path, d->channels,
                        d->channels == 1 ? "" : "s");
    double mean[KD_JOB_MAX_CHANNELS], std[KD_JOB_MAX_CHANNELS];
    double scale[KD_JOB_MAX_CHANNELS], shift[KD_JOB_MAX_CHANNELS];
    pipeline_normalize(split, d->channels, mean, std);
    bool same = true;
    /* x01 = x * std + mean, then (x01 - mean_t) / std_t */
    for (int c = 0; c < d->channels; c++) {
        scale[c] = std[c] / spec->std[c];
        shift[c] = (mean[c] - spec->mean[c]) / spec->std[c];
        same = same && mean[c] == spec->mean[c] && std[c] == spec->std[c];
    }
    if (same)
        return KD_OK;
    t->scale = channel_tensor(dtype, d->channels, scale);
    t->shift = channel_tensor(dtype, d->channels, shift);
    if (!t->scale || !t->shift)
        return kd_error_wrap(kd_last_status(), "%s.normalize", spec->path);
    return KD_OK;
}

kd_tensor *kd_teacher_input(const kd_teacher_run *t, kd_tensor *images)
{
    kd_tensor *x = images;
    if (t->resize)
        x = kd_interpolate(x, t->height, t->width, KD_INTERP_BILINEAR, false);
    if (t->scale)
        x = kd_add(kd_mul(x, t->scale), t->shift);
    return x;
}

kd_status kd_teachers_ensemble(kd_session *s)
{
    for (int i = 0; i < s->n_teachers; i++) {
        kd_teacher_run *t = &s->teachers[i];
        if (t->model)
            continue;
        kd_tensor *sum = NULL;
        for (int k = 0; k < t->spec->n_members; k++) {
            const kd_model_run *m = s->teachers[t->spec->members[k]].model;
            kd_tensor *logits = m->out[m->logits];
            sum = sum ? kd_add(sum, logits) : logits;
        }
        t->logits = kd_mul_scalar(sum, 1.0 / (double)t->spec->n_members);
        if (!t->logits)
            return kd_error_wrap(kd_last_status(), "%s (ensemble '%s')", t->spec->path,
                                 t->spec->name);
    }
    return KD_OK;
}

kd_tensor *kd_teacher_tap(const kd_session *s, const kd_loss_run *l, int k)
{
    const kd_teacher_run *t = &s->teachers[l->teacher];
    return t->model ? t->model->out[l->teacher_taps[k]] : t->logits;
}
