/* `kdengine label`: the job's teacher over E epochs of its training
 * pipeline, written as a label store (label_store.h) for the fkd loss.
 *
 * Each view is made exactly as `run` makes it: the same loader (order and
 * augmentations keyed by seed, epoch and sample), the batch transforms
 * keyed by (seed, step) with step = epoch * batches per epoch + batch, the
 * teacher in eval mode (or train-BN when the job says so) under no-grad.
 * The stored row is the top-k of the softmax of the teacher's logits.
 *
 * Resumable: a rerun into the same folder checks the index's fingerprint
 * against the job (refusing another pipeline or teacher, naming what
 * differs), verifies the listed shards, and continues from the first epoch
 * without a whole shard (a truncated or corrupt one is said and redone).
 *
 * Distributed (launched by mpirun or srun, or `label --nproc N`): rank r of
 * W labels batches [B r / W, B (r + 1) / W) of every epoch of B batches,
 * whole batches so that batch transforms see what one process's do, and
 * writes its rows as a part file (epoch-EEEEE.part-R-of-W, the shard
 * format with the other rows -1). After every rank has written its part
 * (a collective decision, which also stops every rank when one fails),
 * rank 0 merges the parts into the epoch's shard, writes the index and
 * removes the parts: the store is byte for byte the one a single process
 * writes. Rank 0 alone reads the index on a rerun; parts of an epoch
 * left by a crash are made again. */
#ifndef KD_CORE_LABEL_H
#define KD_CORE_LABEL_H

#include <stdio.h>

#include "job.h"

typedef struct kd_label_options {
    int64_t epochs;  /* E >= 1 */
    const char *out; /* the store's folder */
    int top_k;       /* clipped to the class count */
} kd_label_options;

/* Progress goes to `progress` (NULL: quiet). */
kd_status kd_label(const kd_job *job, const kd_label_options *options, FILE *progress);

#endif
