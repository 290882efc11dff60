/* The runner: training (supervised or distillation), evaluation and
 * export, on a session built from a job.
 *
 * The output folder of a run holds job.json (the job after --set),
 * metrics.jsonl (one JSON object per line: "train" every log interval,
 * "eval" after each evaluation, "summary" at the end), checkpoints/
 * (step-NNNNNNNNN.safetensors, the last `checkpoint.keep`) and
 * best.safetensors (the best top-1 so far). */
#ifndef KD_CORE_RUNNER_H
#define KD_CORE_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"

typedef struct kd_run_options {
    bool resume; /* continue from the newest checkpoint of the output folder */
    /* > 0: stop as if asked to (checkpoint, *stopped) once the run has
     * trained this many batches in all, counted from its start across
     * resumes: a stop at a chosen batch, inside an accumulation cycle or
     * not (tests/test_grad_steps). */
    int64_t stop_at_batch;
} kd_run_options;

/* Trains the job's student. After kd_run_request_stop() it finishes the
 * step, writes a checkpoint, says so on stderr and returns KD_OK with
 * *stopped true (continue with options->resume). */
kd_status kd_run(const kd_job *job, const kd_run_options *options, bool *stopped);

/* Asks a running kd_run to stop after its current step. Async-signal-safe:
 * the CLI calls it from its SIGINT and SIGTERM handlers (the library
 * installs none). */
void kd_run_request_stop(void);

typedef struct kd_eval_result {
    double top1, top5; /* percent */
    double loss;       /* mean cross-entropy */
    int64_t samples;
} kd_eval_result;

/* Evaluates the student (or the teacher) on data.val with `weights` (a
 * state_dict file or a checkpoint; NULL: the job's own weights). */
kd_status kd_evaluate(const kd_job *job, bool teacher, const char *weights, kd_eval_result *out);

/* Writes the student's tensors from `weights` (NULL: the job's student
 * weights, or the student as the job's seed initialises it) under their
 * state_dict names to out_path (safetensors, atomic). With ema, the
 * checkpoint `weights`' EMA of the student instead. */
kd_status kd_export(const kd_job *job, const char *weights, bool ema, const char *out_path);

#endif
