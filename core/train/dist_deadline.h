/* A deadline on the collectives of dist.c: no rank waits forever for one
 * that stopped answering (stuck, SIGSTOPped, or dead without MPI
 * noticing).
 *
 * dist.c starts each collective non-blocking and hands its request to
 * kd_dist_deadline_wait, which polls it until it completes or its deadline
 * passes: KDENGINE_DIST_TIMEOUT seconds (default 300), plus
 * KD_DIST_STARTUP_S for a process's first collective, which waits for
 * every rank to load its models and data. While polling, a rank answers
 * the others' questions on a communicator of its own.
 *
 * On expiry the rank asks every other rank for its count of collectives
 * and waits a grace (at most KD_DIST_GRACE_S) for the answers: a rank that
 * answers is polling a collective too; one that does not never reached it.
 * Each of those is printed as "rank R went silent (no answer for S s in
 * WHAT)" on stderr, and MPI_Abort ends the whole job.
 *
 * Only dist.c includes this header (it needs mpi.h). */
#ifndef KD_CORE_TRAIN_DIST_DEADLINE_H
#define KD_CORE_TRAIN_DIST_DEADLINE_H

#include <mpi.h>

#include <kdengine/status.h>

#define KD_DIST_DEFAULT_TIMEOUT_S 300.0
#define KD_DIST_STARTUP_S 600.0
#define KD_DIST_GRACE_S 10.0

/* Reads KDENGINE_DIST_TIMEOUT (a positive number of seconds) and opens the
 * question-and-answer communicator; call once, after MPI_Init. rank and
 * world name this process in messages. */
kd_status kd_dist_deadline_init(int rank, int world);
/* Closes that communicator; call before MPI_Finalize. */
void kd_dist_deadline_free(void);
/* Waits for one collective's request; `what` names it in the message.
 * Returns MPI's code when it completes; does not return when it does not
 * complete in time (MPI_Abort). */
int kd_dist_deadline_wait(MPI_Request *request, const char *what);

#endif
