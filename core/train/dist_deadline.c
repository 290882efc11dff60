/* A deadline on the collectives (dist_deadline.h). */
#include "config.h"

#include "dist_deadline.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { TAG_ASK = 1, TAG_ANSWER = 2 };

static MPI_Comm questions = MPI_COMM_NULL;
static int my_rank, world_size;
static double timeout_s = KD_DIST_DEFAULT_TIMEOUT_S;
static uint64_t entered; /* collectives this process has started */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

kd_status kd_dist_deadline_init(int rank, int world)
{
    my_rank = rank;
    world_size = world;
    const char *v = getenv("KDENGINE_DIST_TIMEOUT");
    if (v) {
        char *end;
        double s = strtod(v, &end);
        if (end == v || *end || !isfinite(s) || s <= 0)
            return kd_error(KD_ERR_INVALID, "KDENGINE_DIST_TIMEOUT=%s is not a positive number "
                            "of seconds", v);
        timeout_s = s;
    }
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &questions);
    if (rc != MPI_SUCCESS)
        return kd_error(KD_ERR_IO, "MPI: cannot open the communicator of the collectives' "
                        "deadline (rank %d of %d, error %d)", rank, world, rc);
    MPI_Comm_set_errhandler(questions, MPI_ERRORS_RETURN);
    return KD_OK;
}

void kd_dist_deadline_free(void)
{
    if (questions != MPI_COMM_NULL)
        MPI_Comm_free(&questions);
}

/* Tells every rank that asked how many collectives this one started: it is
 * alive and polling. */
static void answer_questions(void)
{
    for (;;) {
        int asked = 0;
        MPI_Status status;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ASK, questions, &asked, &status) != MPI_SUCCESS ||
            !asked)
            return;
        uint64_t theirs, mine = entered;
        MPI_Recv(&theirs, 1, MPI_UINT64_T, status.MPI_SOURCE, TAG_ASK, questions,
                 MPI_STATUS_IGNORE);
        /* 8 bytes go eagerly: the asker is waiting for them */
        MPI_Send(&mine, 1, MPI_UINT64_T, status.MPI_SOURCE, TAG_ANSWER, questions);
    }
}

/* 50 us between polls of a long wait: a blocked rank should not hold a
 * core the others need. */
static void nap(void)
{
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

/* Asks every other rank and names the ones that do not answer within the
 * grace; then ends the job. */
static void report_silent_and_abort(const char *what, double since)
{
    int n = world_size;
    uint64_t *answers = calloc((size_t)n, sizeof *answers), mine = entered;
    MPI_Request *recvs = malloc((size_t)n * sizeof *recvs);
    MPI_Request *sends = malloc((size_t)n * sizeof *sends);
    int silent = 0;
    if (answers && recvs && sends) {
        for (int r = 0; r < n; r++) {
            recvs[r] = sends[r] = MPI_REQUEST_NULL;
            if (r == my_rank)
                continue;
            MPI_Irecv(&answers[r], 1, MPI_UINT64_T, r, TAG_ANSWER, questions, &recvs[r]);
            MPI_Isend(&mine, 1, MPI_UINT64_T, r, TAG_ASK, questions, &sends[r]);
        }
        double grace = timeout_s < KD_DIST_GRACE_S ? timeout_s : KD_DIST_GRACE_S;
        double t0 = now_s();
        int all = 0;
        while (!all && now_s() - t0 < grace) {
            answer_questions();
            MPI_Testall(n, recvs, &all, MPI_STATUSES_IGNORE);
            nap();
        }
        for (int r = 0; r < n; r++) {
            int answered = recvs[r] == MPI_REQUEST_NULL;
            if (!answered)
                MPI_Test(&recvs[r], &answered, MPI_STATUS_IGNORE);
            if (r == my_rank) {
                continue;
            } else if (!answered) {
                fprintf(stderr, "kdengine (rank %d of %d): rank %d went silent (no answer for "
                        "%.0f s in %s); stopping every rank\n", my_rank, n, r, now_s() - since,
                        what);
                silent++;
            } else if (answers[r] != mine) {
                /* the collectives were called in another order on the ranks */
                fprintf(stderr, "kdengine (rank %d of %d): rank %d waits in its collective "
                        "#%llu, this rank in its #%llu (%s)\n", my_rank, n, r,
                        (unsigned long long)answers[r], (unsigned long long)mine, what);
            }
        }
    }
    if (!silent)
        fprintf(stderr, "kdengine (rank %d of %d): %s did not complete in %.0f s%s; stopping "
                "every rank\n", my_rank, n, what, now_s() - since,
                answers && recvs && sends ? " though every rank answers (a collective called "
                                            "on some ranks only?)"
                                          : "");
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int kd_dist_deadline_wait(MPI_Request *request, const char *what)
{
    double limit = timeout_s + (entered == 0 ? KD_DIST_STARTUP_S : 0);
    entered++;
    double t0 = now_s();
    for (;;) {
        int done = 0;
        int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done)
            return rc;
        answer_questions();
        double waited = now_s() - t0;
        if (waited > limit)
            report_silent_and_abort(what, t0);
        if (waited > 1e-3)
            nap();
    }
}
