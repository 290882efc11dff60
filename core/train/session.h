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

/* One of the job's teachers as a session runs it. Its input is the
 * student's batch, resized and renormalised where the teacher's
 * input_size / normalize differ from the pipeline's (teachers.h). */
typedef struct kd_teacher_run {
    const kd_job_teacher *spec;
    kd_model_run *model;      /* NULL for an ensemble; the first is the session's teacher */
    kd_tap_shape *shapes;     /* its taps at batch 1 (an ensemble: its logits) */
    int height, width;        /* of its input */
    bool resize;              /* height x width differs from the pipeline's images */
    kd_tensor *scale, *shift; /* x * scale + shift per channel, [1, C, 1, 1] in the
                                 job's dtype, or NULL: the pipeline's normalisation */
    kd_tensor *logits;        /* an ensemble's mean in the current step (scope-owned) */
} kd_teacher_run;

typedef struct kd_loss_run {
    const kd_job_loss *spec;
    int teacher; /* index into kd_session.teachers, -1: it reads none */
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
    kd_model_run teacher, student; /* teacher.vt NULL without a teacher; with
                                      several, the first model teacher */
    int n_teachers;
    kd_teacher_run *teachers; /* the job's teachers, in its order */
    int active_teacher;       /* the teacher of the loss being bound or run: the
                                 one forward_from(KD_ROLE_TEACHER) reaches */
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
/* Whether a sample's view depends on the batch it came in: a batch
 * transform mixes samples, a teacher with train-mode BN normalizes over
 * the batch (fingerprint.c). */
bool kd_job_batches_mix(const kd_job *job);

/* The epoch whose views (order, augmentations) the loader makes in
 * training epoch `epoch`: itself, or epoch % view_epochs once a loss asked
 * for replay. */
int64_t kd_session_view_epoch(const kd_session *s, int64_t epoch);

/* The batch count that keys the batch transforms' draws (mixup, cutmix)
 * for the run's batch `micro` of training epoch `epoch`: micro itself, or,
 * when the epoch replays view epoch v, the count the same batch had in
 * epoch v (micro moved back by whole epochs of `batches_per_epoch`), so a
 * replayed epoch mixes exactly as the stored one did. */
int64_t kd_session_view_batch(const kd_session *s, int64_t epoch, int64_t micro,
                              int64_t batches_per_epoch);

/* Prints `kdengine plan`: models, parameters, MACs, taps per loss, memory.
 * measure false (`plan --no-measure`) skips the passes that estimate
 * memory (a training step of the student, the teacher's and the
 * evaluation's forwards) and takes the MACs from the probe at open. */
kd_status kd_session_plan(kd_session *s, bool measure, FILE *out);

#endif
