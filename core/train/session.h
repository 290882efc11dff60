/* A session: the plugin instances a job describes, built and wired
 * together (models with their taps resolved, losses bound to tap shapes,
 * the optimizer over the trainable tensors, the scheduler, datasets and
 * their transforms), ready for the runner, `plan`, `eval` and `export`.
 *
 * Ownership: the session owns every instance and frees them in
 * kd_session_close; it borrows the job, which must outlive it. */
#ifndef KD_CORE_SESSION_H
#define KD_CORE_SESSION_H

#include <stdio.h>

#include "job.h"

typedef struct kd_model_run {
    const kd_job_model *spec;
    const kd_model_vtable *vt;
    void *self;
    kd_dtype dtype; /* of its tensors and inputs: the job's */
    int n_tensors;
    const kd_named_tensor *tensors;
    int n_taps;
    const kd_tap_info *taps;
    bool *want;        /* [n_taps]: what the losses read */
    kd_tensor **out;   /* [n_taps] */
    int logits;        /* index of the "logits" tap */
} kd_model_run;

typedef struct kd_loss_run {
    const kd_job_loss *spec;
    const kd_loss_vtable *vt;
    void *self;
    kd_loss_needs needs;
    int *student_taps; /* [needs.n_student] tap indices */
    int *teacher_taps; /* [needs.n_teacher] */
    kd_tensor **student_in, **teacher_in;
    int n_tensors;
    const kd_named_tensor *tensors;
} kd_loss_run;

typedef struct kd_data_run {
    const kd_job_data *spec;
    const kd_dataset_vtable *vt;
    void *self;
    kd_dataset_info info;
    const kd_transform_vtable **tvt;
    void **tself;
    int channels, height, width; /* of a sample after the transforms */
} kd_data_run;

typedef struct kd_session {
    const kd_job *job;
    kd_model_run teacher, student; /* teacher.vt NULL without a teacher */
    int n_losses;
    kd_loss_run *losses;
    kd_data_run train, val; /* val.vt NULL without data.val */
    /* every tap's shape at batch 1, from one probe forward at open */
    kd_tap_shape *student_shapes, *teacher_shapes;
    int num_classes;
    /* trainable tensors: the student's, then the losses' */
    int n_params;
    kd_named_tensor *params;
    const kd_optimizer_vtable *optim_vt;
    void *optim;
    int n_optim_state;
    const kd_named_tensor *optim_state;
    const kd_scheduler_vtable *sched_vt;
    void *sched;
} kd_session;

typedef enum kd_session_mode {
    KD_SESSION_TRAIN,   /* everything */
    KD_SESSION_STUDENT, /* the student and data.val only (eval, export) */
    KD_SESSION_TEACHER, /* the teacher as the model, data.val (eval) */
    KD_SESSION_WEIGHTS  /* the student alone, no data (export) */
} kd_session_mode;

kd_status kd_session_open(const kd_job *job, kd_session_mode mode, kd_session **out);
void kd_session_close(kd_session *s);

/* Batches per training epoch of data.train. */
int64_t kd_session_steps_per_epoch(const kd_session *s);

/* The named tensor list of the whole training state for checkpoints. */
typedef struct kd_tensor_group kd_tensor_group;
int kd_session_groups(const kd_session *s, kd_tensor_group *groups, int max, char (*prefixes)[24]);

/* Prints `kdengine plan`: models, parameters, MACs, taps per loss, memory. */
kd_status kd_session_plan(kd_session *s, FILE *out);

#endif
