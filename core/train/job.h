/* A job file: parsed, overridden by --set, and checked against the host's
 * own keys and every plugin's schema before anything heavy happens.
 *
 *   {
 *     "seed": 0, "threads": 2, "dtype": "float32", "output": "runs/fmnist-kd",
 *     "plugin_dirs": [],
 *     "data": {
 *       "train": {"dataset": {"name": "idx", ...}, "transforms": [{"name": ...}],
 *                 "batch_transforms": [{"name": "mixup", ...}],
 *                 "batch_size": 128, "workers": 2, "prefetch": 4, "subset": 0,
 *                 "shuffle": true, "drop_last": true,
 *                 "unlabeled": {"name": "images", "list": "pool.txt", ...}},
 *       "val":   {...same keys...}
 *     },
 *     "teacher": {"model": "resnet56", "weights": "t.safetensors", "train_bn": false,
 *                 "input_size": [H, W], "normalize": {"mean": [...], "std": [...]}, ...},
 *     "student": {"model": "resnet20", "weights": null, "sync_bn": false, ...},
 *     "losses":  [{"name": "ce", "weight": 1.0, "weight_warmup_epochs": 0, ...}],
 *     "optim":   {"name": "sgd", "lr": 0.05, "clip_grad_norm": 0, "clip_grad_value": 0,
 *                 "accumulate_steps": 1, "layer_decay": 0, ...},
 *     "schedule": {"name": "cosine", "epochs": 30, ...},
 *     "eval": {"every_epochs": 1}, "checkpoint": {"every_epochs": 1, "keep": 2},
 *     "log": {"every_steps": 50},
 *     "ema": {"decay": 0.9998, "warmup": false, ...}
 *   }
 *
 * "threads" (0 or absent: the budget's) and a split's "workers" (absent:
 * the budget's share) are decided with the machine's cores in threads.h.
 *
 * "dtype" is what the models, losses and optimizer compute and keep their
 * tensors in: "float32", or "float64" for runs checked step by step
 * against a float64 reference (tests/test_recipe_steps). Data comes out of
 * the transforms in float32 and is converted once per batch.
 *
 * optim's host keys: "clip_grad_norm" scales all gradients together so
 * their global L2 norm is at most this (torch's clip_grad_norm_), or
 * "clip_grad_value" clamps each gradient element to +-this
 * (clip_grad_value_); 0 (the default) is off, and a job sets at most one.
 * Either applies to the summed gradients of a whole accumulation cycle,
 * just before the optimizer step, and the train lines of metrics.jsonl then
 * carry "grad_norm" (before clipping). "accumulate_steps" is how many
 * micro-batches of data.train.batch_size make one optimizer step: each
 * micro-batch's loss is divided by the cycle's length, so the gradient is
 * the mean over the cycle, as for one batch that many times larger. A
 * cycle never spans two epochs: the last one of an epoch may be shorter
 * (its losses divided by its own length, as timm does). The schedule,
 * "step" in the logs and checkpoints, and the losses' `step` count
 * optimizer steps; randomness is keyed by micro-batch. A train line's
 * "loss" is the cycle's mean, its "terms" and "loss_terms" the cycle's last
 * micro-batch's. A run stopped inside a cycle (SIGINT) checkpoints the
 * gradients summed so far ("grad.*") and --resume finishes the cycle
 * exactly (runner.c); the job may not change accumulate_steps in between.
 * "layer_decay" (e.g. 0.65; 0, the default, is off) is timm's layer-wise
 * lr decay: the student's parameter in layer k of L steps at
 * lr * layer_decay^(L - 1 - k) (layer_decay.h); a loss's parameters at lr.
 *
 * data.train's "unlabeled" (SSLD's unlabeled data) is a second dataset,
 * given like "dataset": its samples follow data.train's in every epoch
 * (shuffled together, through the same transforms) with the label
 * KD_LABEL_NONE, so losses that need labels skip them and distillation
 * losses use them (unlabeled_mix.h). Not with "subset" or
 * "batch_transforms".
 *
 * Several teachers: "teachers" in place of "teacher" (a job has at most one
 * of the two), a list of teachers as "teacher" describes plus a unique
 * "name", and ensembles {"name": "ens", "ensemble": ["t1", "t2"]}: a
 * teacher whose logits are the mean of the named model teachers' logits
 * (it has no other taps). "teacher" is one teacher named "teacher". A
 * teacher's "input_size" (H or [H, W]) and "normalize" default to what
 * data.train makes; where they differ the host resizes (bilinear, as
 * data/images' resize) and renormalises the student's batch for it (teachers.h).
 * A loss's "teacher" names the teacher it reads (needed with several).
 *
 * "student.sync_bn" (data parallel): every batch norm of the student's
 * training forward takes its statistics over the global batch, all ranks'
 * shares, as torch's SyncBatchNorm (kd_set_batch_norm_sync, from dist.c's
 * kd_dist_batch_norm_sync); with one process it changes nothing. The
 * teacher's batch norm (train_bn) and the losses' own layers stay per rank.
 *
 * "ema" (kd_job_ema below): decay, min_decay, update_after_step, warmup,
 * warmup_gamma, warmup_power, exclude_buffers, as timm's ModelEmaV3.
 *
 * "..." are the plugin's own parameters. Relative paths are relative to the
 * working directory. Every error names the job file and the JSON path.
 *
 * Ownership: a kd_job owns its JSON tree (every string it hands out points
 * into it), its parameters and its registry; kd_job_free releases them. */
#ifndef KD_CORE_JOB_H
#define KD_CORE_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "../registry.h"

typedef struct kd_job_data {
    bool present;
    const char *path; /* "data.train" */
    const kd_registry_entry *dataset;
    kd_params *dataset_params;
    int n_transforms;
    const kd_registry_entry **transforms;
    kd_params **transform_params;
    int n_batch_transforms; /* data.train only: mixup, cutmix */
    const kd_registry_entry **batch_transforms;
    kd_params **batch_transform_params;
    int64_t batch_size, subset;
    int workers; /* -1: unset, the thread budget decides (threads.h) */
    int prefetch;
    bool shuffle, drop_last;
    /* data.train.unlabeled (SSLD), or NULL: a dataset whose samples follow
     * data.train's in the epoch with the label KD_LABEL_NONE
     * (unlabeled_mix.h) */
    const kd_registry_entry *unlabeled;
    kd_params *unlabeled_params;
} kd_job_data;

typedef struct kd_job_model {
    bool present;
    const char *path; /* "student", "teacher" or "teachers[1]" */
    const kd_registry_entry *entry;
    kd_params *params;
    const char *weights; /* NULL: initialise from the seed */
    bool train_bn;       /* teacher: batch statistics in its forward */
    bool sync_bn;        /* student: batch statistics over every rank's share */
} kd_job_model;

/* Teachers a job may have, and channels a teacher's "normalize" may list. */
#define KD_JOB_MAX_TEACHERS 16
#define KD_JOB_MAX_CHANNELS 16

/* One of the job's teachers: a model, or an ensemble of model teachers. */
typedef struct kd_job_teacher {
    char path[24];        /* "teachers[1]", or "teacher" */
    const char *name;     /* unique; "teacher" for the one-teacher form */
    kd_job_model model;   /* model.present false for an ensemble */
    int input_h, input_w; /* 0: data.train's size */
    int n_norm;           /* channels of mean/std; 0: data.train's normalisation */
    double mean[KD_JOB_MAX_CHANNELS], std[KD_JOB_MAX_CHANNELS];
    int n_members;        /* an ensemble: the teachers whose logits it averages */
    int members[KD_JOB_MAX_TEACHERS]; /* indices into kd_job.teachers */
} kd_job_teacher;

/* Losses a job may have: each loss's random stream carries its index in 8
 * bits (runner.c). */
#define KD_JOB_MAX_LOSSES 256

typedef struct kd_job_loss {
    char path[24]; /* "losses[1]" */
    const kd_registry_entry *entry;
    kd_params *params;
    double weight;
    double weight_warmup_epochs; /* weight ramps linearly from 0 over these */
    int teacher; /* index into kd_job.teachers of its "teacher", -1 when unnamed */
} kd_job_loss;

/* An exponential moving average of the student's weights, as timm's
 * ModelEmaV3: after optimizer step t (from 1), every floating tensor of
 * the student (parameters and, unless exclude_buffers, buffers; other
 * tensors are copied) moves toward the student's by 1 - d, where d is 0
 * for t <= update_after_step + 1 (a copy), else decay, or with warmup
 * 1 - (1 + t'/warmup_gamma)^-warmup_power clamped to [min_decay, decay],
 * t' = t - update_after_step - 1. Evaluated alongside the student,
 * checkpointed as "ema.*", written by `export --ema`. */
typedef struct kd_job_ema {
    bool present;
    double decay, min_decay;
    int64_t update_after_step;
    bool warmup;
    double warmup_gamma, warmup_power;
    bool exclude_buffers; /* buffers copied, not averaged */
} kd_job_ema;

typedef struct kd_job {
    char *file;
    json_t *root;
    kd_registry *registry;
    uint64_t seed;
    int threads;
    kd_dtype dtype; /* KD_F32 or KD_F64 */
    const char *output;
    kd_job_data train, val;
    /* teacher: the first model teacher (teachers[i].model, params shared),
     * which commands that run one teacher (label, eval --teacher, forward
     * --teacher) use after kd_job_one_teacher */
    kd_job_model teacher, student;
    int n_teachers;
    kd_job_teacher *teachers;
    int n_losses;
    kd_job_loss *losses;
    const kd_registry_entry *optim;
    kd_params *optim_params;
    double lr;
    double clip_grad_norm, clip_grad_value; /* 0: off */
    int64_t accumulate_steps;               /* micro-batches per optimizer step */
    double layer_decay;                     /* (0, 1], or 0: off (layer_decay.h) */
    const kd_registry_entry *schedule;
    kd_params *schedule_params;
    int64_t epochs;
    int64_t eval_every, checkpoint_every, checkpoint_keep, log_every;
    kd_job_ema ema;
} kd_job;

/* Reads `file`, applies the overrides ("a.b=v", "losses[1].weight=2"; v
 * is JSON when it parses as JSON, else a string), scans the plugin dirs
 * (built-in, $KDENGINE_PLUGIN_PATH, the job's plugin_dirs) and checks
 * every key. */
kd_status kd_job_load(const char *file, int n_sets, const char *const *sets, kd_job **out);
void kd_job_free(kd_job *job);

/* A job holding only a student: `model` is what a job's "student" object
 * holds ({"model": NAME, "weights": FILE, ...its parameters}), checked the
 * same way (messages call it "model"); it runs in `dtype`, seeded by
 * `seed`, with the built-in plugin dirs, $KDENGINE_PLUGIN_PATH and `dirs`.
 * For commands that run one model without a job file (kdengine forward);
 * `label` stands for the job file. Takes ownership of `model`. */
kd_status kd_job_one_model(const char *label, json_t *model, kd_dtype dtype, uint64_t seed,
                           int n_dirs, const char *const *dirs, kd_job **out);

/* Fails, naming `command`, when the job has more than one teacher. */
kd_status kd_job_one_teacher(const kd_job *job, const char *command);

/* A data split outside the job's "data" (`kdengine forward`'s image
 * inputs): `split` is an object as data.val holds ({"dataset": {...},
 * "transforms": [...], ...}), checked against the job's registry with
 * errors naming `path` (a static string). `split` must outlive *out (its
 * parameters point into it); kd_job_free_split releases *out. */
kd_status kd_job_parse_split(const kd_job *job, const json_t *split, const char *path,
                             kd_job_data *out);
void kd_job_free_split(kd_job_data *d);

/* Whether the output folder can be made (or exists) and written: a probe
 * folder is made and removed in it, or in its deepest existing parent. */
kd_status kd_job_check_output(const kd_job *job);

/* The job after overrides, as JSON text (malloc'd): saved in the output
 * folder and in checkpoints so a run says what made it. */
char *kd_job_dump(const kd_job *job);

#endif
