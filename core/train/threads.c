/* The thread budget (threads.h). */
#define _GNU_SOURCE /* sched_getaffinity and the CPU_* macros */
#include "threads.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kdengine/runtime.h>

#include "dist.h"

#define CGROUP_FILE_MAX 256 /* cpu.max and cpu.cfs_*_us hold a line of numbers */
#define CGROUP_PATH_MAX 4096

static kd_thread_budget current = {.env = {1, 1, 0, 1, NULL},
                                   .cores = 1, .compute = 1, .workers = 1,
                                   .compute_from = "cores"};

/* OMP_NUM_THREADS as libgomp reads it: a count, or a comma list of counts
 * per nesting level whose first is the outer team's. */
static kd_status parse_omp_num_threads(const char *v, int *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == v || errno || (*end && *end != ',') || n < 1 || n > 1024)
        return kd_error(KD_ERR_INVALID, "OMP_NUM_THREADS=%s: expected a thread count from 1 "
                        "to 1024 (or a comma list whose first is one)", v);
    *out = (int)n;
    return KD_OK;
}

kd_status kd_thread_budget_make(const kd_thread_env *env, int job_threads,
                                kd_thread_budget *out)
{
    if (env->online < 1 || env->affinity < 1 || env->local_ranks < 1 || env->quota < 0)
        return kd_error(KD_ERR_INVALID, "thread budget: %d CPUs online, %d in the affinity "
                        "mask, quota %g, %d local processes", env->online, env->affinity,
                        env->quota, env->local_ranks);
    kd_thread_budget b = {.env = *env};
    /* how many of the local processes run on this mask, if evenly spread */
    long sharing = ((long)env->local_ranks * env->affinity + env->online - 1) / env->online;
    if (sharing > env->local_ranks)
        sharing = env->local_ranks;
    b.cores = (int)(env->affinity / sharing);
    if (env->quota > 0 && floor(env->quota / env->local_ranks) < b.cores)
        b.cores = (int)floor(env->quota / env->local_ranks);
    if (b.cores < 1)
        b.cores = 1;
    if (job_threads > 0) {
        b.compute = job_threads;
        b.compute_from = "job threads";
    } else if (env->omp_num_threads) {
        kd_status st = parse_omp_num_threads(env->omp_num_threads, &b.compute);
        if (st != KD_OK)
            return st;
        b.compute_from = "OMP_NUM_THREADS";
    } else {
        b.compute = b.cores;
        b.compute_from = "cores";
    }
    b.workers = b.cores / 4 > 1 ? b.cores / 4 : 1;
    *out = b;
    return KD_OK;
}

/* ---------------------------------------------------------------- cgroups */

/* path's first line into buf; *present false when there is no such file. */
static kd_status read_small_file(const char *path, char *buf, size_t size, bool *present)
{
    FILE *f = fopen(path, "r");
    *present = f != NULL;
    if (!f)
        return errno == ENOENT || errno == ENOTDIR
                   ? KD_OK
                   : kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    if (!ok)
        return kd_error(KD_ERR_FORMAT, "%s: empty", path);
    buf[strcspn(buf, "\n")] = '\0';
    return KD_OK;
}

static bool parse_positive(const char *s, char **end, long long *out)
{
    errno = 0;
    *out = strtoll(s, end, 10);
    return *end != s && !errno && *out > 0;
}

/* v2's cpu.max in dir: "max PERIOD" (no limit) or "QUOTA PERIOD". */
static kd_status read_cpu_max(const char *dir, double *cores)
{
    char path[CGROUP_PATH_MAX + 32], line[CGROUP_FILE_MAX];
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    bool present;
    kd_status st = read_small_file(path, line, sizeof line, &present);
    *cores = 0;
    if (st != KD_OK || !present)
        return st;
    char *end;
    long long quota = 0, period;
    bool unlimited = !strncmp(line, "max ", 4);
    if (unlimited)
        end = line + 3;
    else if (!parse_positive(line, &end, &quota))
        end = line; /* fails below */
    if (end == line || *end != ' ' || !parse_positive(end + 1, &end, &period) || *end)
        return kd_error(KD_ERR_FORMAT, "%s: '%s' is not 'max PERIOD' or 'QUOTA PERIOD'", path,
                        line);
    if (!unlimited)
        *cores = (double)quota / (double)period;
    return KD_OK;
}

/* v1's cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us in dir. */
static kd_status read_cfs_quota(const char *dir, double *cores)
{
    char qpath[CGROUP_PATH_MAX + 32], ppath[CGROUP_PATH_MAX + 32];
    char qline[CGROUP_FILE_MAX], pline[CGROUP_FILE_MAX];
    snprintf(qpath, sizeof qpath, "%s/cpu.cfs_quota_us", dir);
    snprintf(ppath, sizeof ppath, "%s/cpu.cfs_period_us", dir);
    bool present;
    kd_status st = read_small_file(qpath, qline, sizeof qline, &present);
    *cores = 0;
    if (st != KD_OK || !present || !strcmp(qline, "-1"))
        return st;
    char *end;
    long long quota, period;
    if (!parse_positive(qline, &end, &quota) || *end)
        return kd_error(KD_ERR_FORMAT, "%s: '%s' is not -1 or a positive count of "
                        "microseconds", qpath, qline);
    if ((st = read_small_file(ppath, pline, sizeof pline, &present)) != KD_OK)
        return st;
    if (!present)
        return kd_error(KD_ERR_FORMAT, "%s sets a quota but %s is missing", qpath, ppath);
    if (!parse_positive(pline, &end, &period) || *end)
        return kd_error(KD_ERR_FORMAT, "%s: '%s' is not a positive count of microseconds",
                        ppath, pline);
    *cores = (double)quota / (double)period;
    return KD_OK;
}

/* The smallest quota set in mount + cgroup or any of its parents; levels
 * without the file are skipped (a container sees its own cgroup at the
 * mount's root while /proc names the host's path). */
static kd_status quota_up_the_tree(const char *mount, const char *cgroup, bool v2,
                                   double *cores)
{
    char dir[CGROUP_PATH_MAX];
    int n = snprintf(dir, sizeof dir, "%s%s", mount, cgroup);
    if (n < 0 || (size_t)n >= sizeof dir)
        return kd_error(KD_ERR_INVALID, "cgroup path %s%s is too long", mount, cgroup);
    size_t root = strlen(mount);
    for (;;) {
        size_t len = strlen(dir);
        while (len > root && dir[len - 1] == '/')
            dir[--len] = '\0';
        double q;
        kd_status st = v2 ? read_cpu_max(dir, &q) : read_cfs_quota(dir, &q);
        if (st != KD_OK)
            return st;
        if (q > 0 && (*cores == 0 || q < *cores))
            *cores = q;
        if (len <= root)
            return KD_OK;
        char *slash = strrchr(dir + root, '/');
        if (!slash)
            return KD_OK;
        *slash = '\0';
    }
}

/* Whether the comma list of v1 controllers names cpu. */
static bool names_cpu(const char *controllers, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && controllers[j] != ',')
            j++;
        if (j - i == 3 && !strncmp(controllers + i, "cpu", 3))
            return true;
        i = j + 1;
    }
    return false;
}

kd_status kd_cgroup_cpu_quota(const char *fs_root, const char *proc_cgroup, double *cores)
{
    *cores = 0;
    FILE *f = fopen(proc_cgroup, "r");
    if (!f)
        return errno == ENOENT ? KD_OK
                               : kd_error(KD_ERR_IO, "%s: %s", proc_cgroup, strerror(errno));
    char line[CGROUP_PATH_MAX + 128];
    kd_status st = KD_OK;
    while (st == KD_OK && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        /* ID:CONTROLLERS:PATH; v2's line has no controllers */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/') {
            st = kd_error(KD_ERR_FORMAT, "%s: '%s' is not ID:CONTROLLERS:/PATH", proc_cgroup,
                          line);
            break;
        }
        const char *path = c2 + 1;
        char mount[CGROUP_PATH_MAX];
        if (c2 == c1 + 1) {
            st = quota_up_the_tree(fs_root, path, true, cores);
        } else if (names_cpu(c1 + 1, (size_t)(c2 - c1 - 1))) {
            static const char *const mounts[] = {"cpu", "cpu,cpuacct"};
            for (int m = 0; m < 2 && st == KD_OK; m++) {
                snprintf(mount, sizeof mount, "%s/%s", fs_root, mounts[m]);
                st = quota_up_the_tree(mount, path, false, cores);
            }
        }
    }
    fclose(f);
    return st;
}

/* ---------------------------------------------------------------- probing */

/* CPUs in the affinity mask, with a set as large as the kernel's. */
static kd_status affinity_cpus(int *out)
{
    for (int n = 1024; n <= 1 << 20; n *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)n);
        if (!set)
            return kd_error(KD_ERR_NOMEM, "thread budget: out of memory");
        size_t size = CPU_ALLOC_SIZE((size_t)n);
        int rc = sched_getaffinity(0, size, set);
        int e = errno;
        if (rc == 0)
            *out = CPU_COUNT_S(size, set);
        CPU_FREE(set);
        if (rc == 0)
            return KD_OK;
        if (e != EINVAL)
            return kd_error(KD_ERR_IO, "sched_getaffinity: %s", strerror(e));
    }
    return kd_error(KD_ERR_IO, "sched_getaffinity: more than 2^20 CPUs");
}

kd_status kd_thread_env_probe(kd_thread_env *out)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1 || online > INT_MAX)
        return kd_error(KD_ERR_IO, "sysconf(_SC_NPROCESSORS_ONLN): %ld", online);
    kd_thread_env e = {.online = (int)online, .local_ranks = kd_dist().local_world,
                       .omp_num_threads = getenv("OMP_NUM_THREADS")};
    kd_status st = affinity_cpus(&e.affinity);
    if (st == KD_OK)
        st = kd_cgroup_cpu_quota("/sys/fs/cgroup", "/proc/self/cgroup", &e.quota);
    if (st == KD_OK)
        *out = e;
    return st;
}

kd_status kd_threads_apply(const kd_job *job, kd_thread_budget *out)
{
    kd_thread_env env;
    kd_thread_budget b;
    kd_status st = kd_thread_env_probe(&env);
    if (st == KD_OK)
        st = kd_thread_budget_make(&env, job->threads, &b);
    if (st != KD_OK)
        return kd_error_wrap(st, "threads");
    kd_set_num_threads(b.compute);
    current = b;
    if (out)
        *out = b;
    return KD_OK;
}

kd_thread_budget kd_threads_budget(void) { return current; }

int kd_threads_workers(const kd_job_data *split)
{
    return split->workers >= 0 ? split->workers : current.workers;
}

/* "data.train 1 (cores / 4)", after sep; nothing for an absent split. */
static int describe_workers(const kd_job_data *split, const kd_thread_budget *b,
                            const char *sep, char *buf, size_t size)
{
    if (!split->present)
        return 0;
    return snprintf(buf, size, "%s%s %d (%s)", sep, split->path,
                    split->workers >= 0 ? split->workers : b->workers,
                    split->workers >= 0 ? "job" : "cores / 4");
}

void kd_threads_describe(const kd_thread_budget *b, const kd_job *job, char *buf, size_t size)
{
    char quota[64] = "no cgroup quota", workers[192] = "";
    if (b->env.quota > 0)
        snprintf(quota, sizeof quota, "cgroup quota %.2f CPUs", b->env.quota);
    int n = describe_workers(&job->train, b, "", workers, sizeof workers);
    describe_workers(&job->val, b, n ? ", " : "", workers + n, sizeof workers - (size_t)n);
    const char *wait = getenv("OMP_WAIT_POLICY");
    snprintf(buf, size, "threads: %d compute (%s), loader workers %s; %d cores of %d CPUs in "
             "the affinity mask (%d online), %s, %d process%s on this machine; "
             "OMP_WAIT_POLICY %s", b->compute, b->compute_from, workers, b->cores,
             b->env.affinity, b->env.online, quota, b->env.local_ranks,
             b->env.local_ranks == 1 ? "" : "es", wait ? wait : "unset");
}
