/* How many threads this process runs, decided in one place: the compute
 * team (OpenMP, which oneDNN uses, and OpenBLAS's pool) and the loader's
 * workers, from the cores the process may use and the job.
 *
 *   cores    the CPUs of this process's affinity mask, shared with the
 *            job's other processes on this machine: ranks are taken to be
 *            spread evenly over the online CPUs, so
 *            ceil(local_ranks * mask / online) of them share this mask
 *            (all of them when no launcher narrowed it, one when each was
 *            bound to its own cores); then capped by a cgroup CPU quota,
 *            floor(quota / local_ranks), since a team wider than its quota
 *            is throttled in the middle of its barriers. At least 1.
 *   compute  the job's "threads" when above 0, else OMP_NUM_THREADS when
 *            the user set it (its first value), else cores.
 *   workers  for a data split whose "workers" is unset: cores / 4, at
 *            least 1. Workers build batches ahead while the compute team
 *            runs on the same cores; on the CPU a step costs far more than
 *            building its batch (bench/README.md), so a quarter keeps the
 *            ring full without taking cores from the step. (Training on a
 *            GPU, when it comes, turns this around: the loader then wants
 *            most of the cores.)
 * OpenCV's own pool is off (the images providers that call OpenCV run
 * cv::setNumThreads(0) at create, which holds for the whole process) and
 * each loader worker runs OpenMP regions on its own thread only
 * (loader.c), so at most compute + workers threads are busy at once (the
 * training thread leads the compute team). */
#ifndef KD_CORE_TRAIN_THREADS_H
#define KD_CORE_TRAIN_THREADS_H

#include <kdengine/plugin.h>

#include "job.h"

/* What the budget is made from. */
typedef struct kd_thread_env {
    int online;                  /* CPUs online on the machine */
    int affinity;                /* CPUs in this process's affinity mask */
    double quota;                /* cgroup CPU quota in cores; 0: none */
    int local_ranks;             /* the job's processes on this machine */
    const char *omp_num_threads; /* the environment's value; NULL: unset */
} kd_thread_env;

typedef struct kd_thread_budget {
    kd_thread_env env; /* what it was made from */
    int cores;         /* this process's share of the machine */
    int compute; /* OpenMP, oneDNN and OpenBLAS threads */
    int workers; /* loader workers of a split that leaves them unset */
    const char *compute_from; /* "job threads", "OMP_NUM_THREADS" or "cores" */
} kd_thread_budget;

/* The budget from env and the job's "threads" (0: unset); an
 * OMP_NUM_THREADS that is not a positive count is an error. */
kd_status kd_thread_budget_make(const kd_thread_env *env, int job_threads,
                                kd_thread_budget *out);

/* The cgroup CPU quota of the process whose /proc/PID/cgroup is
 * proc_cgroup, with cgroup file systems mounted under fs_root
 * (/sys/fs/cgroup): v2's cpu.max, or v1's cpu.cfs_quota_us over
 * cpu.cfs_period_us under fs_root/cpu or fs_root/cpu,cpuacct, read in the
 * process's cgroup and each parent; the smallest in cores, 0 when none
 * sets one. A file that exists but does not parse is an error. */
kd_status kd_cgroup_cpu_quota(const char *fs_root, const char *proc_cgroup, double *cores);

/* This process's kd_thread_env: sysconf, sched_getaffinity, the cgroup
 * quota, kd_dist().local_world and getenv. */
kd_status kd_thread_env_probe(kd_thread_env *out);

/* Probes, makes the budget for job, sets the compute threads
 * (kd_set_num_threads) and keeps the budget for kd_threads_budget(). */
kd_status kd_threads_apply(const kd_job *job, kd_thread_budget *out);

/* The budget kd_threads_apply set last (before it: 1 core, 1 thread,
 * 1 worker). */
kd_thread_budget kd_threads_budget(void);

/* The loader workers of split: its "workers" when set, else the budget's. */
int kd_threads_workers(const kd_job_data *split);

/* One line for the run header and plan: the budget, what it came from,
 * the loader workers of the job's splits and OpenMP's wait policy. */
void kd_threads_describe(const kd_thread_budget *b, const kd_job *job, char *buf, size_t size);

#endif
