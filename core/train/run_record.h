/* The "run" record: the first line a run (and each resume) writes to
 * metrics.jsonl, saying what ran where, so runs compared later can be told
 * apart by more than their numbers:
 *
 *   {"type": "run", "step": 0, "kdengine": "0.9.0", "git_commit":
 *    "1a2b3c4... (modified)", "compiler": "gcc 12.2.0", "blas": "OpenBLAS
 *    0.3.21 ...", "blas_core": "Haswell", "onednn": "3.0.0", "onednn_isa":
 *    "avx2", "openmp": true, "cuda": false, "threads": 2, "env":
 *    {"ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": null, ...},
 *    "hostname": "node7", "world_size": 1}
 *
 * "step" is where the run starts (a resume's checkpoint step), so a resume
 * keeps the first run's record and adds its own. git_commit is the
 * source tree's commit when the build ran ("(modified)" with uncommitted
 * changes), null outside a git checkout; onednn and onednn_isa are null in
 * a build without oneDNN, an unset variable of env null. */
#ifndef KD_TRAIN_RUN_RECORD_H
#define KD_TRAIN_RUN_RECORD_H

#include <stdint.h>

#include <jansson.h>
#include <kdengine/status.h>

/* The record of a run starting at `step`, in *out (the caller's). */
kd_status kd_run_record(int64_t step, json_t **out);

#endif
