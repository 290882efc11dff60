/* What a teacher sees and what losses read from it, step by step.
 *
 * A teacher whose input_size or normalize differ from the pipeline's gets
 * the student's batch as the pipeline would have made it for it: resized
 * (torch's bilinear, align_corners false, no antialiasing: what OpenCV's
 * INTER_LINEAR in data/images' resize computes, borders replicated) and
 * renormalised: the pipeline's last "normalize" transform undone, the
 * teacher's applied. Both are affine per channel and a resize's weights
 * sum to one, so resizing the normalised batch and then renormalising
 * equals normalising the resized image. Where nothing differs the teacher
 * reads the student's batch itself (no copy).
 *
 * An ensemble teacher's logits are the mean of its members' logits; it
 * has no other taps. */
#ifndef KD_CORE_TEACHERS_H
#define KD_CORE_TEACHERS_H

#include "session.h"

/* Sets t's input size and renormalisation for images from `split` (whose
 * samples `d` describes), in `dtype`. t->spec is set; t->scale/shift are
 * the caller's to free (kd_tensor_free). */
kd_status kd_teacher_prepare(kd_teacher_run *t, const kd_job_data *split, const kd_data_run *d,
                             kd_dtype dtype);

/* The batch t reads: `images` itself, or its resized and renormalised
 * copy (owned by the open scope); NULL with the error set. */
kd_tensor *kd_teacher_input(const kd_teacher_run *t, kd_tensor *images);

/* Every ensemble's logits from its members' (run before), in the open
 * scope, under the caller's grad mode. */
kd_status kd_teachers_ensemble(kd_session *s);

/* The tensor of loss l's k-th teacher tap in the current step. */
kd_tensor *kd_teacher_tap(const kd_session *s, const kd_loss_run *l, int k);

#endif
