/* CRD over several processes: what every rank must see of the global batch
 * so that the memory banks stay equal on all of them and the run equals a
 * single process's on the same global batch.
 *
 * Each rank holds a contiguous share of the global batch (the host cuts it
 * in rank order, shares may differ by a sample). Through the host's
 * collectives every rank learns the whole batch's dataset indices and
 * embeddings (the banks are updated with all of them, in batch order),
 * draws the whole batch's negatives from rank 0's rng (which is the single
 * process's) and keeps its own rows, and sums the first step's Z estimate
 * over the ranks. */
#ifndef KD_PLUGIN_CRD_RANKS_H
#define KD_PLUGIN_CRD_RANKS_H

#include <stdint.h>

#include <kdengine/plugin.h>

#include "crd_negatives.h" /* CRD_HIDDEN */

typedef struct crd_batch {
    int64_t total;  /* samples in the global batch */
    int64_t offset; /* this rank's first sample in it */
    int64_t most;   /* the largest share: the rows every rank sends */
    int64_t *shares; /* [world] samples of each rank (malloc'd) */
    int64_t *index;  /* [total] dataset indices in batch order (malloc'd) */
} crd_batch;

/* The global batch around this rank's `n` dataset indices. */
CRD_HIDDEN kd_status crd_batch_gather(const kd_host_services *host, const int64_t *index,
                                      int64_t n, crd_batch *out, const char *who);
CRD_HIDDEN void crd_batch_free(crd_batch *b);

/* [total, d]: every rank's rows of v ([n, d], this rank's share) in batch
 * order, scope-owned and without gradient. */
CRD_HIDDEN kd_tensor *crd_batch_rows(const kd_host_services *host, const crd_batch *b,
                                     kd_tensor *v, const char *who);

/* *rng becomes rank 0's on every rank. */
CRD_HIDDEN kd_status crd_rng_from_rank0(const kd_host_services *host, kd_rng *rng,
                                        const char *who);

/* values[0..n) summed over the ranks, in place. */
CRD_HIDDEN kd_status crd_sum_over_ranks(const kd_host_services *host, double *values, int n,
                                        const char *who);

#endif
