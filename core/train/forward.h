/* `kdengine forward`: one model run once on one input, its taps written as
 * safetensors. How a user checks a port against timm by hand, and how a
 * test gets a model's outputs without a training job. */
#ifndef KD_CORE_FORWARD_H
#define KD_CORE_FORWARD_H

#include <stdio.h>

#include "job.h"

typedef struct kd_forward_options {
    int n_inputs;              /* one safetensors file, or image files */
    const char *const *inputs; /* a name ending in .jpg, .jpeg or .png
                                  (any case) is an image, else safetensors */
    const char *input_key; /* its tensor to use; NULL: "input", or the only one */
    int n_taps;            /* 0: logits alone */
    const char *const *taps; /* tap names; "all" selects every tap */
    bool teacher;          /* the job's teacher instead of its student */
    bool training;         /* batch statistics, dropout and drop-path on */
    const char *out;       /* the safetensors file written */
    bool model_only;       /* a kd_job_one_model job: images take the
                              pipeline below, not data.val's */
    /* Images without a job file (a job uses its data.val transforms): resize the
     * shorter side to floor(size / crop_pct) with `interpolation`, center
     * crop size x size, normalize by mean and std (one per channel, as
     * many channels as mean has values). */
    int size;                  /* 0: the model's img_size parameter, else 224 */
    double crop_pct;           /* 0: 0.875 */
    const char *interpolation; /* NULL: "bilinear" */
    int n_mean, n_std;         /* 0: ImageNet's (3 channels) */
    const double *mean, *std;
} kd_forward_options;

/* Runs the job's student (or teacher) with its weights on the input and
 * writes each chosen tap under its name, in the job's dtype, with the model
 * and inputs named in the metadata. A safetensors input is [N, C, H, W],
 * or [C, H, W] as a batch of one, any float dtype, converted to the job's.
 * Image files make a batch in the order given, decoded and transformed by
 * the data plugins (images' image_files dataset): with a job file, through
 * its data.val transforms at data.val's channels; else through the
 * options' default pipeline. Prints a line per tap and each input's top-5
 * classes (named from data.val's dataset or the weights' kdengine.classes
 * when they carry names) to `log`. */
kd_status kd_forward(const kd_job *job, const kd_forward_options *o, FILE *log);

#endif
