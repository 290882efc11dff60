/* The thread budget (core/train/threads.h): its rules as table rows
 * (machine, processes, job, environment -> cores, compute threads,
 * workers), the cgroup CPU quota read from fixture trees, the probe
 * against coreutils' nproc, loader workers kept off OpenMP teams and
 * OpenCV's pool, the budget in `run`'s header and `plan`'s output, and
 * the OpenMP wait policy the header reports (libgomp's own unless the user
 * set one). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"
#include "../core/loader.h"
#include "../core/train/threads.h"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* ---------------------------------------------------------------- rules */

typedef struct budget_row {
    const char *name;
    int online, affinity;
    double quota;
    int ranks;
    const char *omp; /* OMP_NUM_THREADS, NULL: unset */
    int job_threads;
    int cores, compute, workers;
    const char *from; /* compute_from */
} budget_row;

static const budget_row budget_rows[] = {
    {"one process owns the machine", 16, 16, 0, 1, NULL, 0, 16, 16, 4, "cores"},
    {"2 CPUs: one worker", 2, 2, 0, 1, NULL, 0, 2, 2, 1, "cores"},
    {"4 unbound processes share 16 CPUs", 16, 16, 0, 4, NULL, 0, 4, 4, 1, "cores"},
    {"2 processes bound to a core each (mpirun --bind-to core)", 2, 1, 0, 2, NULL, 0, 1, 1,
     1, "cores"},
    {"4 processes bound to a socket of 8 of 16 CPUs", 16, 8, 0, 4, NULL, 0, 4, 4, 1, "cores"},
    {"more processes than CPUs: 1 each", 2, 2, 0, 4, NULL, 0, 1, 1, 1, "cores"},
    {"a mask of 6 CPUs of 32, one process", 32, 6, 0, 1, NULL, 0, 6, 6, 1, "cores"},
    {"cgroup quota 1.5 CPUs of 8: 1 (never above the quota)", 8, 8, 1.5, 1, NULL, 0, 1, 1, 1,
     "cores"},
    {"quota 6 shared by 2 processes of 16 CPUs", 16, 16, 6, 2, NULL, 0, 3, 3, 1, "cores"},
    {"quota 0.5 CPUs: still 1", 8, 8, 0.5, 1, NULL, 0, 1, 1, 1, "cores"},
    {"quota above the mask: the mask", 4, 4, 10, 1, NULL, 0, 4, 4, 1, "cores"},
    {"quota 12 of 32: 12 cores, 3 workers", 32, 32, 12, 1, NULL, 0, 12, 12, 3, "cores"},
    {"OMP_NUM_THREADS sets compute, workers follow cores", 16, 16, 0, 1, "3", 0, 16, 3, 4,
     "OMP_NUM_THREADS"},
    {"OMP_NUM_THREADS list: the outer level", 16, 16, 0, 1, "5,2", 0, 16, 5, 4,
     "OMP_NUM_THREADS"},
    {"OMP_NUM_THREADS with blanks", 8, 8, 0, 1, " 4 ", 0, 8, 4, 2, "OMP_NUM_THREADS"},
    {"job threads win over OMP_NUM_THREADS", 16, 16, 0, 1, "3", 6, 16, 6, 4, "job threads"},
    {"job threads above the cores are the user's choice", 2, 2, 0, 1, NULL, 8, 2, 8, 1,
     "job threads"},
};

typedef struct bad_row {
    const char *name;
    int online, affinity, ranks;
    const char *omp;
    const char *want;
} bad_row;

static const bad_row bad_rows[] = {
    {"OMP_NUM_THREADS=0", 4, 4, 1, "0", "OMP_NUM_THREADS=0: expected a thread count"},
    {"OMP_NUM_THREADS=abc", 4, 4, 1, "abc", "OMP_NUM_THREADS=abc: expected"},
    {"OMP_NUM_THREADS empty", 4, 4, 1, "", "OMP_NUM_THREADS=: expected"},
    {"OMP_NUM_THREADS=4x", 4, 4, 1, "4x", "OMP_NUM_THREADS=4x: expected"},
    {"OMP_NUM_THREADS=-2", 4, 4, 1, "-2", "OMP_NUM_THREADS=-2: expected"},
    {"OMP_NUM_THREADS=2000", 4, 4, 1, "2000", "OMP_NUM_THREADS=2000: expected"},
    {"no CPU online", 0, 4, 1, NULL, "0 CPUs online"},
    {"no local process", 4, 4, 0, NULL, "0 local processes"},
};

static void test_budget_rows(void)
{
    for (size_t i = 0; i < sizeof budget_rows / sizeof *budget_rows; i++) {
        const budget_row *r = &budget_rows[i];
        kd_thread_env env = {r->online, r->affinity, r->quota, r->ranks, r->omp};
        kd_thread_budget b;
        kd_status st = kd_thread_budget_make(&env, r->job_threads, &b);
        char name[160];
        snprintf(name, sizeof name, "budget: %s", r->name);
        kt_check(st == KD_OK && b.cores == r->cores && b.compute == r->compute &&
                     b.workers == r->workers && !strcmp(b.compute_from, r->from),
                 name, "want cores %d compute %d (%s) workers %d, got %s: %d %d (%s) %d",
                 r->cores, r->compute, r->from, r->workers,
                 st == KD_OK ? "ok" : kd_last_error(), b.cores, b.compute,
                 st == KD_OK ? b.compute_from : "-", b.workers);
    }
    for (size_t i = 0; i < sizeof bad_rows / sizeof *bad_rows; i++) {
        const bad_row *r = &bad_rows[i];
        kd_thread_env env = {r->online, r->affinity, 0, r->ranks, r->omp};
        kd_thread_budget b;
        kd_status st = kd_thread_budget_make(&env, 0, &b);
        char name[160];
        snprintf(name, sizeof name, "budget refuses: %s", r->name);
        kt_check(st == KD_ERR_INVALID && has(kd_last_error(), r->want), name,
                 "status %d, want \"%s\" in: %s", st, r->want,
                 st == KD_OK ? "(accepted)" : kd_last_error());
    }
}

/* ---------------------------------------------------------------- cgroups */

typedef struct cgroup_file {
    const char *path; /* under the fixture's root; NULL ends the list */
    const char *text;
} cgroup_file;

typedef struct cgroup_row {
    const char *name;
    const char *proc_cgroup; /* NULL: no such file */
    cgroup_file files[5];
    double cores;      /* when want is NULL */
    const char *want;  /* an error naming this */
} cgroup_row;

static const cgroup_row cgroup_rows[] = {
    {"v2: no limit anywhere", "0::/\n", {{"cpu.max", "max 100000\n"}}, 0, NULL},
    {"v2: a pod's 2.5 CPUs",
     "0::/kubepods/pod1\n",
     {{"cpu.max", "max 100000\n"},
      {"kubepods/cpu.max", "max 100000\n"},
      {"kubepods/pod1/cpu.max", "250000 100000\n"}},
     2.5, NULL},
    {"v2: a parent's limit below the child's",
     "0::/a/b\n",
     {{"a/cpu.max", "100000 100000\n"}, {"a/b/cpu.max", "300000 100000\n"}},
     1.0, NULL},
    {"v2: a path the container does not see, its root limited",
     "0::/system.slice/docker-1.scope\n",
     {{"cpu.max", "200000 50000\n"}},
     4.0, NULL},
    {"v1: cpu,cpuacct quota 1.5",
     "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
     {{"cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "150000\n"},
      {"cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"}},
     1.5, NULL},
    {"v1: the container's root under the host's path",
     "4:cpu,cpuacct:/docker/abc\n",
     {{"cpu/cpu.cfs_quota_us", "200000\n"}, {"cpu/cpu.cfs_period_us", "100000\n"}},
     2.0, NULL},
    {"v1: quota -1 is no limit",
     "2:cpu:/\n",
     {{"cpu/cpu.cfs_quota_us", "-1\n"}, {"cpu/cpu.cfs_period_us", "100000\n"}},
     0, NULL},
    {"v1: cpuset is not cpu",
     "3:cpuset:/x\n",
     {{"cpu/x/cpu.cfs_quota_us", "50000\n"}, {"cpu/x/cpu.cfs_period_us", "100000\n"}},
     0, NULL},
    {"no /proc/self/cgroup: no limit", NULL, {{NULL, NULL}}, 0, NULL},
    {"v2: a cpu.max that does not parse", "0::/\n", {{"cpu.max", "fast 100000\n"}}, 0,
     "cpu.max: 'fast 100000' is not 'max PERIOD' or 'QUOTA PERIOD'"},
    {"v2: a cpu.max without its period", "0::/\n", {{"cpu.max", "50000\n"}}, 0,
     "cpu.max: '50000' is not"},
    {"v1: a quota without a period file", "2:cpu:/\n", {{"cpu/cpu.cfs_quota_us", "50000\n"}},
     0, "cpu.cfs_period_us is missing"},
    {"v1: a quota of 1.5e5", "2:cpu:/\n",
     {{"cpu/cpu.cfs_quota_us", "1.5e5\n"}, {"cpu/cpu.cfs_period_us", "100000\n"}},
     0, "cpu.cfs_quota_us: '1.5e5' is not -1 or a positive count"},
    {"a /proc/self/cgroup line without its fields", "garbage\n", {{NULL, NULL}}, 0,
     "'garbage' is not ID:CONTROLLERS:/PATH"},
};

/* mkdir -p of path's folder. */
static bool make_parents(const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && access(buf, F_OK) != 0)
            return false;
        *p = '/';
    }
    return true;
}

static void test_cgroup_rows(void)
{
    for (size_t i = 0; i < sizeof cgroup_rows / sizeof *cgroup_rows; i++) {
        const cgroup_row *r = &cgroup_rows[i];
        char here[96], root[128], proc[160], path[512], name[160];
        snprintf(here, sizeof here, "%s/cgroup%zu/", dir, i);
        snprintf(root, sizeof root, "%sfs", here);
        snprintf(proc, sizeof proc, "%sproc-self-cgroup", here);
        snprintf(name, sizeof name, "cgroup quota: %s", r->name);
        bool written = make_parents(proc) && mkdir(root, 0700) == 0;
        if (r->proc_cgroup)
            written = written && kt_write_file(proc, r->proc_cgroup, strlen(r->proc_cgroup));
        for (int f = 0; f < 5 && r->files[f].path; f++) {
            snprintf(path, sizeof path, "%s/%s", root, r->files[f].path);
            written = written && make_parents(path) &&
                      kt_write_file(path, r->files[f].text, strlen(r->files[f].text));
        }
        if (!written) {
            kt_fail(name, "cannot write the fixture under %s", root);
            continue;
        }
        double cores = -1;
        kd_status st = kd_cgroup_cpu_quota(root, proc, &cores);
        if (r->want)
            kt_check(st != KD_OK && has(kd_last_error(), r->want) && has(kd_last_error(), here),
                     name, "want an error naming \"%s\" and the file, got %s", r->want,
                     st == KD_OK ? "ok" : kd_last_error());
        else
            kt_check(st == KD_OK && cores == r->cores, name, "want %g cores, got %s %g",
                     r->cores, st == KD_OK ? "ok" : kd_last_error(), cores);
    }
}

/* ---------------------------------------------------------------- probe */

static void test_probe(void)
{
    kd_thread_env env;
    kd_status st = kd_thread_env_probe(&env);
    char *out = NULL;
    /* coreutils' nproc counts the affinity mask too, unless OMP_* say otherwise */
    int rc = kt_run_command("env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc", &out);
    int nproc = rc == 0 && out ? atoi(out) : -1;
    kt_check(st == KD_OK && env.affinity == nproc && env.affinity <= env.online &&
                 env.local_ranks == 1,
             "probe: the affinity mask counts as nproc does, one local process",
             "%s: affinity %d, nproc %d, online %d, local %d",
             st == KD_OK ? "ok" : kd_last_error(), env.affinity, nproc, env.online,
             env.local_ranks);
    free(out);
}

/* ---------------------------------------------------------------- workers */

/* Each sample is one float: the OpenMP team size its builder would start. */
static kd_status team_info(void *self, kd_dataset_info *out)
{
    (void)self;
    *out = (kd_dataset_info){64, 1, 1, 1, 2};
    return KD_OK;
}

static kd_status team_get(void *self, int64_t i, kd_sample *s, int64_t *label)
{
    (void)self;
    kd_status st = kd_sample_reserve(s, sizeof(float));
    if (st != KD_OK)
        return st;
    s->height = s->width = s->channels = 1;
    s->dtype = KD_F32;
#ifdef _OPENMP
    *(float *)s->data = (float)omp_get_max_threads();
#else
    *(float *)s->data = 1;
#endif
    *label = i % 2;
    return KD_OK;
}

static const kd_dataset_vtable team_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .info = team_info,
    .get = team_get,
};

static void test_worker_teams(void)
{
#ifndef _OPENMP
    kt_skip("loader: workers start no OpenMP team", "built without OpenMP");
#else
    kd_set_num_threads(3); /* the compute team, on this thread */
    int self = 1;
    kd_loader_config c = {.dataset = &team_vtable, .dataset_self = &self, .label = "teams",
                          .batch_size = 8, .workers = 2, .prefetch = 2, .seed = 1};
    kd_loader *l = NULL;
    kd_status st = kd_loader_new(&c, &l);
    if (st == KD_OK)
        st = kd_loader_start(l, 0, 0);
    float worst = 0;
    int64_t samples = 0;
    bool done = false;
    while (st == KD_OK && !done) {
        kd_batch b;
        st = kd_loader_next(l, &b, &done);
        for (int64_t i = 0; st == KD_OK && !done && i < b.images->shape[0]; i++, samples++) {
            float team = ((const float *)kd_tensor_data(b.images))[i];
            worst = team > worst ? team : worst;
        }
    }
    kd_loader_free(l);
    /* without the loader's care a worker's team is OpenMP's default: every CPU */
    kt_check(st == KD_OK && samples == 64 && worst == 1 && omp_get_max_threads() == 3,
             "loader: workers start no OpenMP team beside the compute team's 3 threads",
             "%s: %lld samples, largest team a worker would start %g, this thread's %d",
             st == KD_OK ? "ok" : kd_last_error(), (long long)samples, worst,
             omp_get_max_threads());
    kd_set_num_threads(1);
#endif
}

/* Large u8 RGB images, so OpenCV's resize would split its rows into
 * stripes for its own pool if it had one. */
static kd_status photo_info(void *self, kd_dataset_info *out)
{
    (void)self;
    *out = (kd_dataset_info){4, 1500, 2000, 3, 2};
    return KD_OK;
}

static kd_status photo_get(void *self, int64_t i, kd_sample *s, int64_t *label)
{
    (void)self;
    size_t n = (size_t)1500 * 2000 * 3;
    kd_status st = kd_sample_reserve(s, n);
    if (st != KD_OK)
        return st;
    s->height = 1500;
    s->width = 2000;
    s->channels = 3;
    s->dtype = KD_U8;
    for (size_t k = 0; k < n; k++)
        ((uint8_t *)s->data)[k] = (uint8_t)(k * 7 + (size_t)i);
    *label = i % 2;
    return KD_OK;
}

static const kd_dataset_vtable photo_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .info = photo_info,
    .get = photo_get,
};

static int live_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Creates transform `name` from the build's plugins; false when it cannot. */
static bool make_transform(const char *name, const char *json, const kd_transform_vtable **vt,
                           void **self)
{
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_TRANSFORM, name, &h);
    kd_params *p = e ? kt_params(e, json) : NULL;
    if (!p)
        return false;
    kd_create_args args = kt_create_args(e, p, 1);
    *vt = (const kd_transform_vtable *)h;
    kd_status st = (*vt)->create(&args, self);
    kd_params_free(p);
    return st == KD_OK;
}

/* OpenCV's pool stays off inside loader workers: its resize would start
 * pool threads that outlive the loader (TBB keeps them); none appear. */
static void test_opencv_in_workers(void)
{
    const char *name = "loader: OpenCV starts no threads of its own in the workers";
    const kd_transform_vtable *vt[2] = {NULL, NULL};
    void *self[2] = {NULL, NULL};
    if (!make_transform("resize", "{\"size\": [750, 1000]}", &vt[0], &self[0]) ||
        !make_transform("normalize", "{\"mean\": [0.5, 0.5, 0.5], \"std\": [0.25, 0.25, "
                        "0.25]}", &vt[1], &self[1])) {
        kt_fail(name, "cannot create resize and normalize: %s", kd_last_error());
        return;
    }
    int before = live_threads(), during = 0;
    int dataset = 1;
    kd_loader_config c = {.dataset = &photo_vtable, .dataset_self = &dataset,
                          .label = "photos", .n_transforms = 2,
                          .transforms = vt, .transform_selves = self,
                          .batch_size = 2, .workers = 2, .prefetch = 1, .seed = 1};
    kd_loader *l = NULL;
    kd_status st = kd_loader_new(&c, &l);
    if (st == KD_OK)
        st = kd_loader_start(l, 0, 0);
    int64_t samples = 0;
    bool done = false;
    while (st == KD_OK && !done) {
        kd_batch b;
        st = kd_loader_next(l, &b, &done);
        if (st == KD_OK && !done)
            samples += b.images->shape[0];
        during = live_threads() > during ? live_threads() : during;
    }
    kd_loader_free(l);
    int after = live_threads();
    for (int t = 0; t < 2; t++)
        vt[t]->destroy(self[t]);
    kt_check(st == KD_OK && samples == 4 && after == before, name,
             "%s: %lld samples; threads %d before, up to %d during, %d after",
             st == KD_OK ? "ok" : kd_last_error(), (long long)samples, before, during, after);
}

/* ---------------------------------------------------------------- run and plan */

/* A supervised job on the synthetic data; threads and train workers
 * unset, val workers 0. */
static void write_job(const char *file, const char *threads)
{
    char text[4096], path[256];
    snprintf(text, sizeof text,
             "{\"seed\": 1, %s \"output\": \"%s/run-%s\", \"plugin_dirs\": [\"%s\"],\n"
             " \"data\": {\n"
             "  \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
             "             \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
             "             \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], "
             "\"std\": [0.25]}], \"batch_size\": 16},\n"
             "  \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
             "           \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
             "           \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], "
             "\"std\": [0.25]}], \"batch_size\": 32, \"workers\": 0}},\n"
             " \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
             " \"losses\": [{\"name\": \"ce\"}],\n"
             " \"optim\": {\"name\": \"sgd\", \"lr\": 0.05},\n"
             " \"schedule\": {\"name\": \"constant\", \"epochs\": 1},\n"
             " \"eval\": {\"every_epochs\": 0}, \"log\": {\"every_steps\": 2}}\n",
             threads, dir, file, kt_plugin_dir(), dir, dir, dir, dir);
    snprintf(path, sizeof path, "%s/%s.json", dir, file);
    kt_write_file(path, text, strlen(text));
}

static void test_header(void)
{
    write_job("auto", "");
    write_job("two", "\"threads\": 2,");
    kd_thread_env env;
    kd_thread_budget b;
    kd_status st = kd_thread_env_probe(&env);
    env.omp_num_threads = NULL;
    if (st == KD_OK)
        st = kd_thread_budget_make(&env, 0, &b);
    if (st != KD_OK) {
        kt_fail("run: the header shows the budget", "probe: %s", kd_last_error());
        return;
    }
    char want[256], *out = NULL;
    snprintf(want, sizeof want, "threads: 3 compute (OMP_NUM_THREADS), loader workers "
             "data.train %d (cores / 4), data.val 0 (job); %d cores of %d CPUs",
             b.workers, b.cores, env.affinity);
    setenv("OMP_NUM_THREADS", "3", 1);
    int rc = kt_kdengine(dir, &out, "run auto.json");
    kt_check(rc == 0 && has(out, want) && has(out, ", 3 threads (ready in"),
             "run: the header shows the budget (OMP_NUM_THREADS, default workers)",
             "exit %d, want \"%s\" in: %s", rc, want, out ? out : "(none)");
    free(out);
    out = NULL;
    rc = kt_kdengine(dir, &out, "run two.json");
    kt_check(rc == 0 && has(out, "threads: 2 compute (job threads)"),
             "run: the job's threads win over OMP_NUM_THREADS", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    out = NULL;
    setenv("OMP_NUM_THREADS", "lots", 1);
    rc = kt_kdengine(dir, &out, "run auto.json --set output=run-bad");
    kt_check(rc == 1 && has(out, "threads: OMP_NUM_THREADS=lots: expected a thread count"),
             "run: an OMP_NUM_THREADS that is no count is an error naming it", "exit %d: %s",
             rc, out ? out : "(none)");
    free(out);
    out = NULL;
    unsetenv("OMP_NUM_THREADS");
    snprintf(want, sizeof want, "threads: %d compute (cores), loader workers data.train 5 "
             "(job), data.val 0 (job)", b.cores);
    rc = kt_kdengine(dir, &out, "plan auto.json --set data.train.workers=5");
    kt_check(rc == 0 && has(out, want), "plan: shows the budget and the job's workers",
             "exit %d, want \"%s\" in: %s", rc, want, out ? out : "(none)");
    free(out);
}

/* OMP_DISPLAY_ENV=verbose makes libgomp print what it read when it loaded,
 * so the output shows the policy the computing process actually runs. */
static void test_wait_policy(void)
{
    typedef struct row {
        const char *name, *policy, *spincount; /* NULL: unset */
        const char *header, *libgomp;
    } row;
    static const row rows[] = {
        {"wait policy: libgomp's default when the user set none", NULL, NULL,
         "; OMP_WAIT_POLICY unset", "GOMP_SPINCOUNT = '300000'"},
        {"wait policy: the user's OMP_WAIT_POLICY=passive stands", "passive", NULL,
         "; OMP_WAIT_POLICY passive", "GOMP_SPINCOUNT = '0'"},
        {"wait policy: the user's OMP_WAIT_POLICY=active stands", "active", NULL,
         "; OMP_WAIT_POLICY active", "GOMP_SPINCOUNT = '30000000000'"},
        {"wait policy: the user's GOMP_SPINCOUNT stands", NULL, "1000",
         "; OMP_WAIT_POLICY unset", "GOMP_SPINCOUNT = '1000'"},
    };
    setenv("OMP_DISPLAY_ENV", "verbose", 1);
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        const row *r = &rows[i];
        if (r->policy)
            setenv("OMP_WAIT_POLICY", r->policy, 1);
        else
            unsetenv("OMP_WAIT_POLICY");
        if (r->spincount)
            setenv("GOMP_SPINCOUNT", r->spincount, 1);
        else
            unsetenv("GOMP_SPINCOUNT");
        char *out = NULL;
        int rc = kt_kdengine(dir, &out, "run two.json --set output=run-wait%zu", i);
        /* the last display is the computing image's */
        const char *last = out, *next;
        while (last && (next = strstr(last + 1, "OPENMP DISPLAY ENVIRONMENT BEGIN")))
            last = next;
        kt_check(rc == 0 && has(out, r->header) && has(last, r->libgomp), r->name,
                 "exit %d, want \"%s\" and libgomp's \"%s\" in: %s", rc, r->header,
                 r->libgomp, out ? out : "(none)");
        free(out);
    }
    unsetenv("OMP_DISPLAY_ENV");
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
}

int main(void)
{
    test_budget_rows();
    snprintf(dir, sizeof dir, "/tmp/kdthreads.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    test_cgroup_rows();
    test_probe();
    test_worker_teams();
    test_opencv_in_workers();
    if (kt_write_quadrants(dir, "train", 64, 1)) {
        test_header();
        test_wait_policy();
    } else {
        kt_fail("setup", "cannot write the synthetic data");
    }
    kt_remove_tree(dir);
    return kt_finish();
}
