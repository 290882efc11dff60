/* The job's processes on MPI (dist.h). */
#include "config.h"

#include "dist.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KD_HAVE_MPI
#include <mpi.h>

#include "dist_deadline.h"
#endif

static kd_dist_info info = {0, 1, 0, 1};
static bool joined, initialized;

/* A positive int from the environment variable `name`, or 0 when unset. */
static kd_status env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    *out = 0;
    if (!v)
        return KD_OK;
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 0 || x > INT_MAX)
        return kd_error(KD_ERR_INVALID, "the launcher's %s=%s is not a process count or rank",
                        name, v);
    *out = (int)x;
    return KD_OK;
}

/* The world size the launcher announced (0: not launched), and by what. */
static kd_status launcher_world(int *world, const char **by)
{
    /* srun sets SLURM_STEP_NUM_TASKS in a job step only, not in the batch
     * script around it */
    static const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                        "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        kd_status st = env_int(names[i], world);
        if (st != KD_OK || *world > 0) {
            *by = names[i];
            return st;
        }
    }
    return KD_OK;
}

bool kd_dist_available(void)
{
#ifdef KD_HAVE_MPI
    return true;
#else
    return false;
#endif
}

kd_dist_info kd_dist(void) { return info; }

#ifdef KD_HAVE_MPI
static kd_status mpi_error(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", rc);
    return kd_error(KD_ERR_IO, "MPI %s (rank %d of %d): %s", what, info.rank, info.world, text);
}

static kd_status join_mpi(int announced, const char *by)
{
    int rc = MPI_Init(NULL, NULL);
    if (rc != MPI_SUCCESS)
        return mpi_error(rc, "init");
    joined = true;
    /* errors come back as codes, to be reported with the rank */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &info.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &info.world);
    /* e.g. srun with an MPI lacking Slurm's PMI: each task alone, all
     * writing one output folder */
    if (info.world != announced)
        return kd_error(KD_ERR_STATE, "the launcher announced %d processes (%s) but MPI's world "
                        "has %d: this MPI cannot reach the launcher's processes (srun: try "
                        "--mpi=pmix, or mpirun)", announced, by, info.world);
    kd_status st = kd_dist_deadline_init(info.rank, info.world);
    if (st != KD_OK)
        return st;
    MPI_Comm local;
    rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL,
                             &local);
    if (rc != MPI_SUCCESS)
        return mpi_error(rc, "splitting the processes by machine");
    MPI_Comm_rank(local, &info.local_rank);
    MPI_Comm_size(local, &info.local_world);
    MPI_Comm_free(&local);
    return KD_OK;
}
#endif

kd_status kd_dist_init(void)
{
    if (initialized)
        return KD_OK;
    int world = 0;
    const char *by = NULL;
    kd_status st = launcher_world(&world, &by);
    if (st != KD_OK)
        return st;
    initialized = true;
    if (world <= 1)
        return KD_OK;
#ifdef KD_HAVE_MPI
    return join_mpi(world, by);
#else
    return kd_error(KD_ERR_UNSUPPORTED, "launched as one of %d processes (%s) but this kdengine "
                    "was built without MPI: install libopenmpi-dev (scripts/setup) and "
                    "reconfigure", world, by);
#endif
}

void kd_dist_finalize(void)
{
#ifdef KD_HAVE_MPI
    if (joined) {
        kd_dist_deadline_free();
        MPI_Finalize();
    }
#endif
    joined = false;
}

#ifdef KD_HAVE_MPI
/* `what` names the collective should a rank go silent in it. */
static kd_status reduce(void *x, int64_t n, MPI_Datatype type, kd_dist_op op, const char *what)
{
    /* Pieces of 4M values: Open MPI's non-blocking all-reduce takes 1.7x
     * the blocking one's time on one 44 MB buffer (2 ranks, shared memory),
     * and as long or less in pieces of 16 MB (float32). */
    const int64_t piece = (int64_t)1 << 22;
    size_t elem = type == MPI_DOUBLE ? sizeof(double) : sizeof(float);
    for (int64_t at = 0; at < n; at += piece) {
        int count = (int)(n - at < piece ? n - at : piece);
        MPI_Request request;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)x + (size_t)at * elem, count, type,
                                op == KD_DIST_MAX ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD, &request);
        if (rc == MPI_SUCCESS)
            rc = kd_dist_deadline_wait(&request, what);
        if (rc != MPI_SUCCESS)
            return mpi_error(rc, "all_reduce");
    }
    return KD_OK;
}
#endif

/* kd_dist_all_reduce_f64, `what` naming it should a rank go silent. */
static kd_status all_reduce_f64(double *x, int64_t n, kd_dist_op op, const char *what)
{
    if (info.world == 1)
        return KD_OK;
#ifdef KD_HAVE_MPI
    kd_status st = reduce(x, n, MPI_DOUBLE, op, what);
    if (st == KD_OK && op == KD_DIST_MEAN)
        for (int64_t i = 0; i < n; i++)
            x[i] /= info.world;
    return st;
#else
    (void)x, (void)n, (void)op, (void)what;
    return kd_error(KD_ERR_UNSUPPORTED, "all_reduce: built without MPI");
#endif
}

kd_status kd_dist_all_reduce_f64(double *x, int64_t n, kd_dist_op op)
{
    return all_reduce_f64(x, n, op, "an all_reduce of float64 values");
}

static kd_status check_tensor(const char *what, const kd_tensor *t)
{
    if (!t)
        return kd_error(KD_ERR_INVALID, "%s: NULL tensor", what);
    if (t->device != KD_CPU || !kd_tensor_is_contiguous(t) ||
        (t->dtype != KD_F32 && t->dtype != KD_F64))
        return kd_error(KD_ERR_UNSUPPORTED, "%s: needs a contiguous float32 or float64 CPU "
                        "tensor, got %s on %s", what, kd_dtype_name(t->dtype),
                        t->device == KD_CPU ? "the CPU" : "a GPU");
    return KD_OK;
}

/* kd_dist_all_reduce, `what` naming it should a rank go silent. */
static kd_status all_reduce_tensor(kd_tensor *t, kd_dist_op op, const char *what)
{
    if (info.world == 1) /* nothing to exchange, whatever t holds */
        return t ? KD_OK : kd_error(KD_ERR_INVALID, "all_reduce: NULL tensor");
    kd_status st = check_tensor("all_reduce", t);
    if (st != KD_OK)
        return st;
#ifdef KD_HAVE_MPI
    int64_t n = kd_tensor_numel(t);
    bool f64 = t->dtype == KD_F64;
    st = reduce(kd_tensor_data(t), n, f64 ? MPI_DOUBLE : MPI_FLOAT, op, what);
    if (st == KD_OK && op == KD_DIST_MEAN) {
        if (f64)
            for (double *x = kd_tensor_data(t), *e = x + n; x < e; x++)
                *x /= info.world;
        else
            for (float *x = kd_tensor_data(t), *e = x + n; x < e; x++)
                *x /= (float)info.world;
    }
    return st;
#else
    (void)op, (void)what;
    return kd_error(KD_ERR_UNSUPPORTED, "all_reduce: built without MPI");
#endif
}

kd_status kd_dist_all_reduce(kd_tensor *t, kd_dist_op op)
{
    return all_reduce_tensor(t, op, "an all_reduce");
}

kd_status kd_dist_all_gather(kd_tensor *t, kd_tensor **out)
{
    if (info.world == 1) { /* nothing to exchange, whatever t holds */
        *out = t;
        return t ? KD_OK : kd_error(KD_ERR_INVALID, "all_gather: NULL tensor");
    }
    *out = NULL;
    kd_status st = check_tensor("all_gather", t);
    if (st != KD_OK)
        return st;
#ifdef KD_HAVE_MPI
    if (t->ndim < 1)
        return kd_error(KD_ERR_INVALID, "all_gather: a scalar has no rows to gather");
    int64_t shape[KD_MAX_DIMS];
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
    shape[0] *= info.world;
    int64_t n = kd_tensor_numel(t);
    if (n > INT_MAX)
        return kd_error(KD_ERR_UNSUPPORTED, "all_gather: %" PRId64 " elements per rank (at most "
                        "%d)", n, INT_MAX);
    kd_tensor *g = kd_tensor_empty(t->dtype, KD_CPU, t->ndim, shape);
    if (!g)
        return kd_error_wrap(kd_last_status(), "all_gather");
    MPI_Datatype type = t->dtype == KD_F64 ? MPI_DOUBLE : MPI_FLOAT;
    MPI_Request request;
    int rc = MPI_Iallgather(kd_tensor_data(t), (int)n, type, kd_tensor_data(g), (int)n, type,
                            MPI_COMM_WORLD, &request);
    if (rc == MPI_SUCCESS)
        rc = kd_dist_deadline_wait(&request, "an all_gather");
    if (rc != MPI_SUCCESS)
        return mpi_error(rc, "all_gather");
    *out = g;
    return KD_OK;
#else
    return kd_error(KD_ERR_UNSUPPORTED, "all_gather: built without MPI");
#endif
}

/* The gradients of one dtype packed into one buffer (scope-owned),
 * averaged in one call and unpacked: one bucket, not a call per tensor. */
static kd_status reduce_grads_of(int n, const kd_named_tensor *params, kd_dtype dtype)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (!g || g->dtype != dtype)
            continue;
        kd_status st = check_tensor(params[i].name, g);
        if (st != KD_OK)
            return kd_error_wrap(st, "the gradient of %s", params[i].name);
        total += kd_tensor_numel(g);
    }
    if (total == 0)
        return KD_OK;
    kd_tensor *flat = kd_tensor_empty(dtype, KD_CPU, 1, &total);
    if (!flat)
        return kd_error_wrap(kd_last_status(), "all_reduce of the gradients (%" PRId64
                             " values)", total);
    size_t elem = kd_dtype_size(dtype), at = 0;
    char *bytes = kd_tensor_data(flat);
    for (int i = 0; i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (g && g->dtype == dtype) {
            size_t size = (size_t)kd_tensor_numel(g) * elem;
            memcpy(bytes + at, kd_tensor_data(g), size);
            at += size;
        }
    }
    kd_status st = all_reduce_tensor(flat, KD_DIST_MEAN, "the all_reduce of the gradients");
    at = 0;
    for (int i = 0; st == KD_OK && i < n; i++) {
        kd_tensor *g = params[i].tensor->grad;
        if (g && g->dtype == dtype) {
            size_t size = (size_t)kd_tensor_numel(g) * elem;
            memcpy(kd_tensor_data(g), bytes + at, size);
            at += size;
        }
    }
    return st == KD_OK ? st : kd_error_wrap(st, "the gradients");
}

kd_status kd_dist_all_reduce_grads(int n, const kd_named_tensor *params)
{
    if (info.world == 1)
        return KD_OK;
    kd_status st = reduce_grads_of(n, params, KD_F32);
    return st == KD_OK ? reduce_grads_of(n, params, KD_F64) : st;
}

kd_status kd_dist_agree(const char *what, bool failed, bool stop, bool *any_stop)
{
    *any_stop = stop;
    if (info.world == 1)
        return KD_OK;
    /* the lowest failed rank (world: none) and whether any asked to stop */
    double v[2] = {-(double)(failed ? info.rank : info.world), stop};
    char decision[256];
    snprintf(decision, sizeof decision, "the decision after %s", what);
    kd_status st = all_reduce_f64(v, 2, KD_DIST_MAX, decision);
    if (st != KD_OK)
        return st;
    *any_stop = v[1] > 0;
    int first_failed = (int)-v[0];
    if (first_failed < info.world && !failed)
        return kd_error(KD_ERR_STATE, "%s: rank %d failed (its message is above); rank %d stops "
                        "with it", what, first_failed, info.rank);
    return KD_OK;
}

void kd_dist_abort(int code)
{
#ifdef KD_HAVE_MPI
    if (joined)
        MPI_Abort(MPI_COMM_WORLD, code);
#endif
    (void)code;
}

bool kd_dist_launched(void)
{
    int world = 0;
    const char *by = NULL;
    return launcher_world(&world, &by) == KD_OK && world > 0;
}

static kd_status sum_over_ranks(double *values, int64_t n, void *ctx)
{
    (void)ctx;
    return kd_dist_all_reduce_f64(values, n, KD_DIST_SUM);
}

kd_batch_norm_sync kd_dist_batch_norm_sync(void)
{
    return info.world > 1 ? (kd_batch_norm_sync){sum_over_ranks, NULL}
                          : (kd_batch_norm_sync){NULL, NULL};
}
