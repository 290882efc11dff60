/* The job's processes: who this one is among them and the collectives
 * that join them, on MPI.
 *
 * A process launched by mpirun (OMPI_COMM_WORLD_SIZE), srun
 * (SLURM_STEP_NUM_TASKS) or another PMI launcher (PMI_SIZE, PMIX_SIZE)
 * joins MPI's world, which must hold as many processes as announced,
 * in kd_dist_init; any other process is rank 0 of a world of 1, never
 * touches MPI, and every collective returns at once. A launched process in
 * a build without MPI is an error saying so.
 *
 * Collectives are called by every rank in the same order (the training
 * thread only). They work in place on host memory. None waits forever: a
 * collective that does not complete within KDENGINE_DIST_TIMEOUT seconds
 * (default 300; the first one 600 more) names the rank that went silent
 * and ends the job (dist_deadline.h). */
#ifndef KD_CORE_TRAIN_DIST_H
#define KD_CORE_TRAIN_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

typedef struct kd_dist_info {
    int rank, world;             /* among all the job's processes */
    int local_rank, local_world; /* among those on this machine */
} kd_dist_info;

/* Joins the launcher's world once (later calls return what the first
 * found). */
kd_status kd_dist_init(void);
/* Leaves MPI if kd_dist_init joined it; call once, before main returns. */
void kd_dist_finalize(void);
/* Ends every process of the job at once (MPI_Abort) after an error on
 * this one, so none is left waiting in a collective; nothing when MPI was
 * not joined. */
void kd_dist_abort(int code);
/* Whether a launcher (mpirun, srun) started this process. */
bool kd_dist_launched(void);
/* World 1 before kd_dist_init. */
kd_dist_info kd_dist(void);
/* Whether this build can run more than one process (MPI was found). */
bool kd_dist_available(void);

typedef enum kd_dist_op { KD_DIST_SUM = 0, KD_DIST_MEAN, KD_DIST_MAX } kd_dist_op;

/* x[0..n) over every rank, in place. */
kd_status kd_dist_all_reduce_f64(double *x, int64_t n, kd_dist_op op);
/* A contiguous CPU float32 or float64 tensor over every rank, in place
 * (world 1: any tensor, unchanged). */
kd_status kd_dist_all_reduce(kd_tensor *t, kd_dist_op op);
/* [world * N, ...]: every rank's t ([N, ...], same shape on every rank) in
 * rank order, scope-owned (world 1: t itself, any tensor). */
kd_status kd_dist_all_gather(kd_tensor *t, kd_tensor **out);

/* Every gradient of params (float32 and float64, contiguous CPU) averaged
 * over the ranks, packed per dtype into one buffer for one call; call it
 * inside a scope (the buffers are scope-owned). */
kd_status kd_dist_all_reduce_grads(int n, const kd_named_tensor *params);
/* A collective decision, taken by every rank after each batch: if any
 * rank failed, the others return an error naming the lowest failed rank
 * (a failed rank keeps its own error); *any_stop says whether any rank
 * asked to stop (a signal reaches one rank of an mpirun job or all).
 * `what` names the moment in the message. */
kd_status kd_dist_agree(const char *what, bool failed, bool stop, bool *any_stop);

/* Synchronised batch norm's reducer (ops.h): a sum over the ranks, or
 * {NULL, NULL} (nothing to synchronise) in a world of 1. */
kd_batch_norm_sync kd_dist_batch_norm_sync(void);

#endif
