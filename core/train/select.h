/* `kdengine select`: SSLD's data selection (PaddleClas). The job's teacher
 * scores an unlabeled pool, and for each class c the K images whose
 * teacher probability of c is highest, among the images the teacher puts
 * in c (its argmax), are kept, written as a list file of "path c" lines
 * the images plugin's image_list reads (and data.train.unlabeled's
 * image_pool: its labels are then ignored).
 *
 * The images: the images plugin's image_pool over a folder (every .jpg,
 * .jpeg, .png at any depth) or a list of paths, through data.val's
 * transforms (the job's evaluation view), in the pool's order, the teacher
 * in eval mode under no-grad, its softmax computed in float64 from its
 * logits.
 *
 * Ties: a row's argmax is the lowest of its most probable classes; among
 * equal probabilities of a class, the image earlier in the pool wins. A
 * class the teacher gives fewer than K images keeps all it has (the
 * progress output names those classes and their counts), and a class it
 * gives none is absent from the list. Lines are grouped by class, in class
 * order, most probable first. A path holding whitespace cannot be written
 * as a list line and is an error naming it, as is an unreadable image (a
 * replacement would lend its path another image's scores). The list is
 * written to a temp file and renamed. */
#ifndef KD_CORE_SELECT_H
#define KD_CORE_SELECT_H

#include <stdint.h>
#include <stdio.h>

#include "job.h"

typedef struct kd_select_options {
    const char *pool;   /* a folder, or a list file of paths */
    int64_t top_k;      /* K >= 1 images per class */
    const char *out;    /* the list file to write */
    const char *scores; /* or NULL: also write every image's probabilities,
                           a safetensors file with "probs" f64 [N, classes]
                           and the paths in metadata "kdengine.pool" (a JSON
                           array); holds N x classes doubles in memory */
} kd_select_options;

/* Progress and the per-class counts go to `progress` (NULL: quiet). */
kd_status kd_select(const kd_job *job, const kd_select_options *options, FILE *progress);

#endif
