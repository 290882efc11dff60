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
    kd_named_tensor *tensors; /* the host's copy of the model's list */
    int n_taps;
    kd_tap_info *taps;        /* the host's copy */
    bool *want;        /* [n_taps]: what the losses read */
    kd_tensor **out;   /* [n_taps] */
    int logits;        /* index of the "logits" tap */
    int64_t probe_macs; /* of the probe forward at open: one image */
} kd_model_run;

typedef struct kd_loss_run {
    const kd_job_loss *spec;
    const kd_loss_vtable *vt;
    void *self;
    kd_loss_needs needs;
    int *student_taps; /* [needs.n_student] tap indices */
    int *teacher_taps; /* [needs.n_teacher] */
    kd_tensor **student_in, **teacher_in;
    char prefix[24];          /* "loss.<i>.": its tensors in checkpoints and
                                 its parameters in the optimizer */
    int n_tensors;
    kd_named_tensor *tensors; /* the host's copy of the loss's list */
    char **param_names;       /* [n_tensors]: prefixed names of parameters */
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
    kd_model_run ema;              /* the student's average (job "ema"), or vt NULL */
    int n_losses;
    kd_loss_run *losses;
    kd_data_run train, val; /* val.vt NULL without data.val */
    int n_batch_transforms;
    const kd_batch_transform_vtable **btvt;
    void **btself;
    /* every tap's shape at batch 1, from one probe forward at open */
    kd_tap_shape *student_shapes, *teacher_shapes;
    int num_classes;
    /* trainable tensors: the student's, then the losses' */
    int n_params;
    kd_named_tensor *params;
    double *lr_scales; /* [n_params] with optim.layer_decay, else NULL */
    const kd_optimizer_vtable *optim_vt;
    void *optim;
    int n_optim_state;
    kd_named_tensor *optim_state; /* the host's copy */
    const kd_scheduler_vtable *sched_vt;
    void *sched;
    kd_host_services services; /* what losses get at bind */
    int64_t *train_labels;     /* filled on the first train_labels call */
    char *fingerprint;         /* made on the first kd_session_fingerprint */
    int64_t view_epochs;       /* > 0: epoch e replays epoch e % view_epochs's
                                  views (a loss asked, replay_views) */
} kd_session;

typedef enum kd_session_mode {
    KD_SESSION_TRAIN,   /* everything */
    KD_SESSION_STUDENT, /* the student and data.val only (eval, export) */
    KD_SESSION_TEACHER, /* the teacher as the model, data.val (eval) */
    KD_SESSION_WEIGHTS, /* the student alone, no data (export, forward) */
    KD_SESSION_TEACHER_WEIGHTS /* the teacher alone as the model, no data */
} kd_session_mode;

kd_status kd_session_open(const kd_job *job, kd_session_mode mode, kd_session **out);
void kd_session_close(kd_session *s);

/* A split outside the job's data (kd_job_parse_split: forward's image
 * inputs) opened as data.val is: its dataset and transforms seeded like
 * data.val's, one sample pushed through for the shape. On failure *d may
 * be partly open: kd_session_close_data releases it either way. */
kd_status kd_session_open_data(const kd_job *job, const kd_job_data *spec, kd_data_run *d);
void kd_session_close_data(kd_data_run *d);

/* The class names of data.train (else data.val) as a compact JSON array in
 * class order, malloc'd, when its dataset has the optional class_name
 * callback; *json is NULL when it has not. */
kd_status kd_session_classes_json(const kd_session *s, char **json);

/* Batches per training epoch of data.train (micro-batches when the job
 * accumulates), and optimizer steps per epoch: accumulation cycles, the
 * last one of an epoch possibly shorter. */
int64_t kd_session_batches_per_epoch(const kd_session *s);
int64_t kd_session_steps_per_epoch(const kd_session *s);

/* The whole training state for checkpoints: the student, each loss that
 * owns tensors, the optimizer, the EMA; *groups is malloc'd (the caller
 * frees it). */
typedef struct kd_tensor_group kd_tensor_group;
kd_status kd_session_groups(const kd_session *s, kd_tensor_group **groups, int *n);

/* A plugin's tensor list in the host's layout (malloc'd, the caller frees
 * it); `who` names the plugin in messages. */
kd_status kd_session_copy_tensors(const kd_tensor_list *l, const char *who,
                                  kd_named_tensor **out);

/* The fingerprint of what decides data.train's views and the teacher's
 * outputs on them (kd_host_services.pipeline_fingerprint documents its
 * keys), as compact JSON text the session owns; made on the first call
 * (fingerprint.c). */
kd_status kd_session_fingerprint(kd_session *s, const char **json);

/* The epoch whose views (order, augmentations) the loader makes in
 * training epoch `epoch`: itself, or epoch % view_epochs once a loss asked
 * for replay. */
int64_t kd_session_view_epoch(const kd_session *s, int64_t epoch);

/* Prints `kdengine plan`: models, parameters, MACs, taps per loss, memory.
 * measure false (`plan --no-measure`) skips the passes that estimate
 * memory (a training step of the student, the teacher's and the
 * evaluation's forwards) and takes the MACs from the probe at open. */
kd_status kd_session_plan(kd_session *s, bool measure, FILE *out);

#endif
