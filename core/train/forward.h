/* `kdengine forward`: one model run once on one input, its taps written as
 * safetensors. How a user checks a port against timm by hand, and how a
 * test gets a model's outputs without a training job. */
#ifndef KD_CORE_FORWARD_H
#define KD_CORE_FORWARD_H

#include <stdio.h>

#include "job.h"

typedef struct kd_forward_options {
    const char *input;     /* a safetensors file */
    const char *input_key; /* its tensor to use; NULL: "input", or the only one */
    int n_taps;            /* 0: logits alone */
    const char *const *taps; /* tap names; "all" selects every tap */
    bool teacher;          /* the job's teacher instead of its student */
    bool training;         /* batch statistics, dropout and drop-path on */
    const char *out;       /* the safetensors file written */
} kd_forward_options;

/* Runs the job's student (or teacher) with its weights on the input
 * ([N, C, H, W], or [C, H, W] as a batch of one, any float dtype,
 * converted to the job's) and writes each chosen tap under its name, in
 * the job's dtype, with the model and input named in the metadata. Prints
 * a line per tap to `log`. */
kd_status kd_forward(const kd_job *job, const kd_forward_options *o, FILE *log);

#endif
