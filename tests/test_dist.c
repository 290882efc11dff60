/* Data parallel over MPI (core/train/dist.c). The collectives, with this
 * binary run as 2 ranks under mpirun: sum, mean and max of float32 and
 * float64 tensors, all_gather in rank order, the per-batch decision.
 * `kdengine run --nproc 2`
 * (mpirun, two processes on this machine) against one process on the same
 * global batch, in float64 on a model without batch norm
 * (tests/plugins/mlp): the logged loss and gradient norm of every step,
 * the final weights and the evaluation's top-1 agree to rounding; each
 * rank prints the same top-1; rank 0 alone writes the metrics.
 *
 * With batch norm (a ResNet-8 student, float64, 3 steps with a checkpoint
 * each): student.sync_bn on 2 processes equals 1 process on the same
 * global batch, step by step (loss, grad_norm, weights, running
 * statistics), and without it the runs part; CRD (its memory banks, heads
 * and Z) on 2 processes equals 1 process too.
 *
 * Shards of unequal size are part of the case: the global batch of 63
 * splits 31 + 32, the epoch's last batch of 61 30 + 31, and the
 * evaluation's last batch of 5 2 + 3.
 *
 * A SIGTERM to rank 1 alone stops both ranks after the same step with
 * rank 0's checkpoint (exit 3), and one process resuming it ends where an
 * uninterrupted one-process run does. A SIGKILL to rank 1 ends rank 0 too
 * (Open MPI's mpirun), with a message naming rank 1. A SIGSTOP to rank 1
 * (alive to MPI, silent) with a 3 s deadline on the collectives
 * (KDENGINE_DIST_TIMEOUT=3) ends the job within 30 s, rank 0 naming rank 1
 * as silent.
 *
 * `kdengine label` over 2 and then (resumed) 3 processes writes the store
 * one process writes, byte for byte.
 *
 * `kdengine plan --nodes N --gpus-per-node G`: the gradient bytes, ring
 * volume, all-reduce time and efficiency equal plan_scaling.h's formulas
 * computed here; bad flags are refused.
 *
 * Data: the first Fashion-MNIST images (scripts/setup installs them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "../core/train/dist.h"
#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char dir[64], mlp_dir[256];

/* Open MPI allowed to run as root (containers, CI), on shared memory. */
#define OMPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader"


/* Slots: output, the plugin dirs, the train subset, epochs. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 5, \"threads\": 1, \"dtype\": \"float64\", \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\", \"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"random_crop\", \"size\": 28, \"padding\": 2},\n"
    "                   {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 63, \"drop_last\": false, \"subset\": %d, \"workers\": 0},\n"
    "   \"val\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/t10k-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/t10k-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 32, \"subset\": 101, \"workers\": 0}},\n"
    "  \"student\": {\"model\": \"mlp\", \"in_features\": 784, \"num_classes\": 10},\n"
    "  \"losses\": [{\"name\": \"ce\"}],\n"
    "  \"optim\": {\"name\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.05,\n"
    "            \"clip_grad_norm\": 0.5},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": %d, \"per_step\": true},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 4},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

/* 2 epochs over the first 250 images, 4 batches an epoch */
#define SUBSET 250
#define EPOCHS 2
#define STEPS 8

static void write_job(const char *name, int subset, int epochs)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dir, name, kt_plugin_dir(), mlp_dir, subset,
             epochs);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
}

/* `kdengine run NAME.json EXTRA` from a shell with Open MPI allowed to run
 * as root (containers, CI); stderr folded into *out. */
static int run_job(const char *name, const char *extra, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s/kdengine run %s.json %s 2>&1", dir,
             KD_BUILDDIR, name, extra);
    return kt_run_command(cmd, out);
}

static char *read_text(const char *path)
{
    size_t len;
    unsigned char *bytes = kt_read_file(path, &len);
    char *text = bytes ? realloc(bytes, len + 1) : NULL;
    if (text)
        text[len] = '\0';
    else
        free(bytes);
    return text;
}

/* A number of the train line of `step` in a run's metrics.jsonl; NAN
 * when absent. *lines counts the train lines of that step. */
static double logged(const char *run, int step, const char *field, int *lines)
{
    char path[256], key[64];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    char *text = read_text(path);
    double v = NAN;
    *lines = 0;
    for (const char *line = text; line && (line = strstr(line, "\"type\":\"train\"")); line++) {
        const char *s = strstr(line, "\"step\":");
        if (!s || atoi(s + 7) != step)
            continue;
        ++*lines;
        snprintf(key, sizeof key, "\"%s\":", field);
        const char *f = strstr(line, key);
        const char *end = strchr(line, '\n');
        if (f && (!end || f < end))
            v = atof(f + strlen(key));
    }
    free(text);
    return v;
}

/* Largest norm-wise relative error over the floating tensors of two
 * checkpoints (others: bit for bit); -1 when they do not open or match. */
static double checkpoint_error(const char *a_path, const char *b_path, char *where, size_t size)
{
    kd_safetensors *a = NULL, *b = NULL;
    double worst = -1;
    if (kd_safetensors_open(a_path, &a) != KD_OK || kd_safetensors_open(b_path, &b) != KD_OK) {
        snprintf(where, size, "%s", kd_last_error());
        goto done;
    }
    worst = 0;
    kd_scope_begin();
    for (int i = 0; i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        const kd_safetensors_entry *eb = kd_safetensors_find(b, ea->name);
        if (!eb || eb->nbytes != ea->nbytes) {
            snprintf(where, size, "%s is missing or differs in size", ea->name);
            worst = -1;
            break;
        }
        double e;
        if (ea->dtype != KD_F32 && ea->dtype != KD_F64)
            e = memcmp(ea->data, eb->data, ea->nbytes) != 0 ? INFINITY : 0;
        else
            e = kt_rel_error(kd_safetensors_load(a, ea->name, KD_F64),
                             kd_safetensors_load(b, ea->name, KD_F64));
        if (e > worst) {
            worst = e;
            snprintf(where, size, "%s", ea->name);
        }
    }
    kd_scope_end();
done:
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return worst;
}

/* The text after "eval epoch N: " up to the comma after top-1, found
 * `which` times (0: the first) in out; "" when absent. */
static void eval_top1(const char *out, int epoch, int which, char *buf, size_t size)
{
    char want[64];
    snprintf(want, sizeof want, "eval epoch %d: top-1 ", epoch);
    const char *at = out;
    for (int i = 0; at && i <= which; i++)
        if ((at = strstr(at, want)))
            at += strlen(want);
    buf[0] = '\0';
    if (at)
        snprintf(buf, size, "%.*s", (int)strcspn(at, ","), at);
}

static void test_two_processes(void)
{
    write_job("one", SUBSET, EPOCHS);
    write_job("two", SUBSET, EPOCHS);
    char *one = NULL, *two = NULL;
    int rc1 = run_job("one", "", &one), rc2 = run_job("two", "--nproc 2", &two);
    if (!kt_check(rc1 == 0 && rc2 == 0, "the 1- and 2-process runs finish",
                  "exit %d, %d:\n%s\n%s", rc1, rc2, one ? one : "", two ? two : "")) {
        free(one);
        free(two);
        return;
    }
    /* Sums grouped differently (the ranks' shares, MPI's sum): rounding
     * in float64 only, through 8 AdamW steps. */
    double worst = 0;
    int missing = 0, doubled = 0;
    for (int step = 1; step <= STEPS; step++) {
        const char *fields[] = {"lr", "loss", "grad_norm"};
        for (int f = 0; f < 3; f++) {
            int n1, n2;
            double x = logged("one", step, fields[f], &n1), y = logged("two", step, fields[f], &n2);
            missing += isnan(x) || isnan(y);
            doubled += n1 != 1 || n2 != 1;
            double d = fabs(x - y) / fmax(fabs(x), 1e-300);
            worst = d > worst ? d : worst;
        }
    }
    kt_check(missing == 0 && doubled == 0 && worst <= 1e-10,
             "2 processes: each step's loss, grad_norm and lr equal 1 process's (float64)",
             "%d values missing, %d steps not logged once, largest relative difference %.3g",
             missing, doubled, worst);

    char a[512], b[512], where[128] = "";
    snprintf(a, sizeof a, "%s/one/checkpoints/step-%09d.safetensors", dir, STEPS);
    snprintf(b, sizeof b, "%s/two/checkpoints/step-%09d.safetensors", dir, STEPS);
    double e = checkpoint_error(a, b, where, sizeof where);
    kt_check(e >= 0 && e <= 1e-10, "2 processes: the weights after 8 steps equal 1 process's",
             "relative error %.3g (%s)", e, where);

    char t1[32], r0[32], r1[32];
    eval_top1(one, 2, 0, t1, sizeof t1);
    eval_top1(two, 2, 0, r0, sizeof r0);
    eval_top1(two, 2, 1, r1, sizeof r1);
    kt_check(t1[0] && !strcmp(t1, r0) && !strcmp(t1, r1),
             "2 processes: both ranks print 1 process's top-1 on the sharded evaluation",
             "1 process '%s', ranks '%s' and '%s':\n%s", t1, r0, r1, two);
    free(one);
    free(two);
}

/* ------------------------------------- batch norm models: sync_bn and CRD */

/* A ResNet-8 (batch norm after every convolution) with student.sync_bn, 3
 * epochs of 1 step on the first 63 images, so a checkpoint per step. Slots:
 * output, the plugin dir, a teacher line ("" or ending in a comma), the
 * losses. */
static const char *const bn_template =
    "{\n"
    "  \"seed\": 3, \"threads\": 1, \"dtype\": \"float64\", \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"random_crop\", \"size\": 28, \"padding\": 2},\n"
    "                   {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 63, \"subset\": 63, \"workers\": 0},\n"
    "   \"val\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/t10k-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/t10k-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_size\": 32, \"subset\": 40, \"workers\": 0}},\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1,\n"
    "              \"sync_bn\": true},\n"
    "  \"losses\": %s,\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9, \"weight_decay\": 0.0005,\n"
    "            \"clip_grad_norm\": 100},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 3, \"per_step\": true},\n"
    "  \"eval\": {\"every_epochs\": 3}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 3},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";
#define BN_STEPS 3

static void write_bn_job(const char *name, const char *teacher, const char *losses)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, bn_template, dir, name, kt_plugin_dir(), teacher, losses);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
}

/* The largest relative difference between two runs over every step's
 * loss and grad_norm and every step's checkpoint (weights, BN running
 * statistics, optimizer state, loss buffers); -1 when something is
 * missing, named in `where`. */
static double runs_differ(const char *a, const char *b, char *where, size_t size)
{
    double worst = 0;
    for (int step = 1; step <= BN_STEPS; step++) {
        const char *fields[] = {"loss", "grad_norm"};
        for (int f = 0; f < 2; f++) {
            int n1, n2;
            double x = logged(a, step, fields[f], &n1), y = logged(b, step, fields[f], &n2);
            if (isnan(x) || isnan(y) || n1 != 1 || n2 != 1) {
                snprintf(where, size, "step %d's %s is not logged once", step, fields[f]);
                return -1;
            }
            double d = fabs(x - y) / fmax(fabs(x), 1e-300);
            if (d > worst) {
                worst = d;
                snprintf(where, size, "step %d's %s", step, fields[f]);
            }
        }
        char pa[512], pb[512], tensor[128] = "";
        snprintf(pa, sizeof pa, "%s/%s/checkpoints/step-%09d.safetensors", dir, a, step);
        snprintf(pb, sizeof pb, "%s/%s/checkpoints/step-%09d.safetensors", dir, b, step);
        double e = checkpoint_error(pa, pb, tensor, sizeof tensor);
        if (e < 0) {
            snprintf(where, size, "step %d's checkpoint: %s", step, tensor);
            return -1;
        }
        if (e > worst) {
            worst = e;
            snprintf(where, size, "step %d: %s", step, tensor);
        }
    }
    return worst;
}

/* Runs NAME.json with EXTRA; false (a failed check) when it fails. */
static bool run_ok(const char *name, const char *extra)
{
    char *out = NULL;
    int rc = run_job(name, extra, &out);
    bool ok = kt_check(rc == 0, name, "`kdengine run %s.json %s`: exit %d:\n%s", name, extra, rc,
                       out ? out : "");
    free(out);
    return ok;
}

/* student.sync_bn: 2 processes (shares of 31 and 32 images) equal 1 process
 * on the same global batch, step by step; without it the ranks' batch
 * statistics are their shares' and the runs part. */
static void test_sync_bn(void)
{
    const char *ce = "[{\"name\": \"ce\"}]";
    write_bn_job("bn_one", "", ce);
    write_bn_job("bn_two", "", ce);
    write_bn_job("bn_apart", "", ce);
    if (!run_ok("bn_one", "") || !run_ok("bn_two", "--nproc 2") ||
        !run_ok("bn_apart", "--nproc 2 --set student.sync_bn=false"))
        return;
    /* float64 rounding through 3 SGD steps (sums grouped by rank) */
    char where[256] = "";
    double e = runs_differ("bn_one", "bn_two", where, sizeof where);
    kt_check(e >= 0 && e <= 1e-9,
             "sync_bn on 2 processes: each step's loss, weights and BN running statistics "
             "equal 1 process's (float64, ResNet-8)", "relative error %.3g (%s)", e, where);
    e = runs_differ("bn_one", "bn_apart", where, sizeof where);
    kt_check(e > 1e-6, "without sync_bn the 2 processes' batch norm sees only each share",
             "relative difference %.3g (%s)", e, where);
}

/* CRD (with a frozen ResNet-20 teacher and a sync_bn student): the memory
 * banks, heads and losses of 2 processes equal 1 process's. */
static void test_crd(void)
{
    char teacher[1024], weights[512];
    kt_source_path("examples/fashion-mnist/teacher.safetensors", weights, sizeof weights);
    snprintf(teacher, sizeof teacher, "\"teacher\": {\"model\": \"resnet20\", "
             "\"num_classes\": 10, \"in_chans\": 1, \"weights\": \"%s\"},", weights);
    const char *losses = "[{\"name\": \"ce\"}, {\"name\": \"crd\", \"weight\": 0.8, "
                         "\"nce_k\": 24, \"feat_dim\": 16}]";
    write_bn_job("crd_one", teacher, losses);
    write_bn_job("crd_two", teacher, losses);
    if (!run_ok("crd_one", "") || !run_ok("crd_two", "--nproc 2"))
        return;
    char where[256] = "";
    double e = runs_differ("crd_one", "crd_two", where, sizeof where);
    kt_check(e >= 0 && e <= 1e-9,
             "CRD on 2 processes: each step's loss, heads and memory banks equal 1 process's "
             "(float64)", "relative error %.3g (%s)", e, where);
}

/* The child of `parent` that MPI made rank `rank`, or -1. */
static pid_t find_rank(pid_t parent, int rank)
{
    DIR *proc = opendir("/proc");
    pid_t found = -1;
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    for (struct dirent *e; proc && found < 0 && (e = readdir(proc));) {
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *stat = read_text(path);
        const char *close_paren = stat ? strrchr(stat, ')') : NULL;
        int ppid = 0;
        char state;
        if (close_paren && sscanf(close_paren + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == parent) {
            size_t len;
            snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
            unsigned char *env = kt_read_file(path, &len);
            for (size_t at = 0; env && at < len; at += strlen((char *)env + at) + 1)
                if (!strcmp((char *)env + at, want))
                    found = (pid_t)atoi(e->d_name);
            free(env);
        }
        free(stat);
    }
    if (proc)
        closedir(proc);
    return found;
}

/* Starts NAME.json on 2 processes (--nproc 2, `env` before the command)
 * with its output in DIR/NAME.log and waits until training runs (the
 * first train line in the metrics); returns the launcher's pid (-1: it
 * did not start) and rank 1's in *rank1 (-1: not found). */
static pid_t start_two(const char *name, const char *env, pid_t *rank1)
{
    char metrics[256], cmd[1024];
    snprintf(metrics, sizeof metrics, "%s/%s/metrics.jsonl", dir, name);
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s exec %s/kdengine run %s.json --nproc 2 "
             ">%s.log 2>&1", dir, env, KD_BUILDDIR, name, name);
    pid_t launcher = fork();
    if (launcher == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    *rank1 = -1;
    bool training = false;
    for (int i = 0; launcher > 0 && i < 6000 && !training; i++) {
        char *text = read_text(metrics);
        training = text && strstr(text, "\"type\":\"train\"");
        free(text);
        if (!training)
            usleep(10000);
    }
    if (training)
        *rank1 = find_rank(launcher, 1);
    return launcher;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* Runs NAME.json on 2 processes (--nproc 2) and, once training runs,
 * sends `sig` to rank 1 alone; returns whether rank 1 was found and
 * signalled, the launcher's wait status in *status and its output in *log
 * (seconds from the signal to the end in *seconds). */
static bool signal_rank1(const char *name, int sig, int *status, char **log, double *seconds)
{
    char log_path[256];
    snprintf(log_path, sizeof log_path, "%s/%s.log", dir, name);
    *status = 0;
    pid_t rank1, launcher = start_two(name, "", &rank1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rank1 > 0)
        kill(rank1, sig);
    if (launcher > 0)
        waitpid(launcher, status, 0);
    *seconds = seconds_since(&t0);
    *log = read_text(log_path);
    return rank1 > 0;
}

/* SIGTERM to rank 1 alone: both ranks stop after the same step with rank
 * 0's checkpoint; resumed by one process, the run ends where an
 * uninterrupted one-process run does. */
static void test_stop_one_rank(void)
{
    enum { BIG = 6000, LAST = 96 }; /* 96 batches, the last of 15 */
    write_job("ref", BIG, 1);
    write_job("stop", BIG, 1);
    char *out = NULL, *text = NULL;
    int rc = run_job("ref", "", &out), status = 0;
    free(out);
    double seconds = 0;
    bool signalled = rc == 0 && signal_rank1("stop", SIGTERM, &status, &text, &seconds);
    const char *first = text ? strstr(text, "stopped at step") : NULL;
    bool both = first && strstr(first + 1, "stopped at step");
    int stop_step = first ? atoi(first + strlen("stopped at step")) : 0;
    if (!kt_check(signalled && WIFEXITED(status) && WEXITSTATUS(status) == 3 && both &&
                      stop_step > 0 && stop_step < LAST,
                  "SIGTERM to rank 1 stops both ranks after the same step, exit 3",
                  "reference exit %d, rank 1 signalled %d, launcher status %d, log:\n%s", rc,
                  signalled, status, text ? text : "(none)")) {
        free(text);
        return;
    }
    free(text);
    rc = run_job("stop", "--resume", &out);
    char a[512], b[512], where[128] = "";
    snprintf(a, sizeof a, "%s/ref/checkpoints/step-%09d.safetensors", dir, LAST);
    snprintf(b, sizeof b, "%s/stop/checkpoints/step-%09d.safetensors", dir, LAST);
    double e = rc == 0 ? checkpoint_error(a, b, where, sizeof where) : -1;
    kt_check(e >= 0 && e <= 1e-10,
             "stopped on 2 processes, resumed on 1: the weights equal an uninterrupted run's",
             "resume exit %d, relative error %.3g (%s): %s", rc, e, where, out ? out : "");
    free(out);
}

/* SIGKILL to rank 1: mpirun ends rank 0 too, naming rank 1, well within
 * the bound (it takes about 2 s here). */
static void test_kill_one_rank(void)
{
    write_job("kill", 6000, 5);
    char *text = NULL;
    int status = 0;
    double seconds = 0;
    bool signalled = signal_rank1("kill", SIGKILL, &status, &text, &seconds);
    kt_check(signalled && WIFEXITED(status) && WEXITSTATUS(status) != 0 && seconds < 60 &&
                 text && strstr(text, "rank 1"),
             "SIGKILL to rank 1 ends the job within 60 s with a message naming rank 1",
             "signalled %d, launcher status %d after %.1f s, log:\n%s", signalled, status,
             seconds, text ? text : "(none)");
    free(text);
}

/* SIGSTOP to rank 1 (alive to MPI, answering nothing) under a 3 s
 * deadline: rank 0 names it and ends the job: 3 s of waiting, at most 3
 * s of asking the ranks, then MPI_Abort; 30 s is the bound. The stopped
 * rank is killed afterwards. */
static void test_silent_rank(void)
{
    write_job("silent", 6000, 5);
    char log_path[256];
    snprintf(log_path, sizeof log_path, "%s/silent.log", dir);
    pid_t rank1, launcher = start_two("silent", "KDENGINE_DIST_TIMEOUT=3", &rank1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rank1 > 0)
        kill(rank1, SIGSTOP);
    char *text = NULL;
    bool named = false;
    while (rank1 > 0 && !named && seconds_since(&t0) < 60) {
        free(text);
        text = read_text(log_path);
        named = text && strstr(text, "rank 1 went silent (no answer for ");
        if (!named)
            usleep(20000);
    }
    double seconds = seconds_since(&t0);
    if (rank1 > 0)
        kill(rank1, SIGKILL);
    int status = 0;
    for (int i = 0; launcher > 0 && i < 3000 && waitpid(launcher, &status, WNOHANG) == 0; i++)
        usleep(10000);
    if (launcher > 0 && waitpid(launcher, &status, WNOHANG) == 0) {
        kill(launcher, SIGKILL);
        waitpid(launcher, &status, 0);
    }
    free(text);
    text = read_text(log_path);
    kt_check(rank1 > 0 && named && seconds < 30 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
             "SIGSTOP to rank 1 (KDENGINE_DIST_TIMEOUT=3): rank 0 names it as silent within 30 s "
             "and the job fails",
             "rank 1 found %d, named %d after %.1f s, launcher status %d, log:\n%s", rank1 > 0,
             named, seconds, status, text ? text : "(none)");
    free(text);
}

/* A loss that turns NaN (an absurd learning rate; the ranks' weights are
 * equal, so on every rank at once) stops the job with the loss named. */
static void test_nan(void)
{
    write_job("nan", SUBSET, EPOCHS);
    char *out = NULL;
    int rc = run_job("nan", "--nproc 2 --set optim.lr=1e300", &out);
    kt_check(rc != 0 && out && strstr(out, "losses[0] (ce) is") && strstr(out, "; stopping") &&
                 !strstr(out, "done:"),
             "a non-finite loss on the ranks stops the job naming the loss", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
}

/* A launcher's count MPI's world does not match (here: srun's variable
 * in a process MPI sees alone) is an error, not a lone run. */
static void test_world_mismatch(void)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && SLURM_STEP_NUM_TASKS=2 " OMPI_ENV " %s/kdengine run "
             "one.json 2>&1", dir, KD_BUILDDIR);
    int rc = kt_run_command(cmd, &out);
    kt_check(rc == 1 && out && strstr(out, "the launcher announced 2 processes "
                                          "(SLURM_STEP_NUM_TASKS) but MPI's world has 1"),
             "a launcher's process count MPI does not see is an error", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
}

/* A deadline that is not a number of seconds stops every rank at init. */
static void test_bad_timeout(void)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_DIST_TIMEOUT=3x " OMPI_ENV " %s/kdengine run "
             "one.json --nproc 2 2>&1", dir, KD_BUILDDIR);
    int rc = kt_run_command(cmd, &out);
    kt_check(rc != 0 && out && strstr(out, "KDENGINE_DIST_TIMEOUT=3x is not a positive number "
                                          "of seconds"),
             "a bad KDENGINE_DIST_TIMEOUT is refused", "exit %d: %s", rc, out ? out : "(none)");
    free(out);
}

/* ------------------------------------------------ kdengine label over ranks */

/* One process's run ("one") as the teacher of an mlp student, with mixup
 * after the crops (keyed by step: whole batches must stay whole). Slots:
 * the plugin dirs, the teacher's weights. */
static const char *const label_job_template =
    "{\n"
    "  \"seed\": 9, \"threads\": 1, \"dtype\": \"float64\", \"output\": \"unused\",\n"
    "  \"plugin_dirs\": [\"%s\", \"%s\"],\n"
    "  \"data\": {\"train\": {\n"
    "    \"dataset\": {\"name\": \"idx\", \"images\": \"" FMNIST "/train-images-idx3-ubyte.gz\",\n"
    "                \"labels\": \"" FMNIST "/train-labels-idx1-ubyte.gz\"},\n"
    "    \"transforms\": [{\"name\": \"random_crop\", \"size\": 28, \"padding\": 2},\n"
    "                   {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "    \"batch_transforms\": [{\"name\": \"mixup\"}],\n"
    "    \"batch_size\": 63, \"drop_last\": false, \"subset\": 250, \"workers\": 0}},\n"
    "  \"teacher\": {\"model\": \"mlp\", \"in_features\": 784, \"num_classes\": 10,\n"
    "              \"weights\": \"%s\"},\n"
    "  \"student\": {\"model\": \"mlp\", \"in_features\": 784, \"num_classes\": 10},\n"
    "  \"losses\": [{\"name\": \"kd\"}],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.01},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 2}, \"eval\": {\"every_epochs\": 0}\n"
    "}\n";

/* Whether two files hold the same bytes (both readable). */
static bool same_file(const char *a, const char *b)
{
    size_t la, lb;
    unsigned char *x = kt_read_file(a, &la), *y = kt_read_file(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return d ? n : -1;
}

/* `kdengine label` over ranks: 4 batches an epoch; epoch 1 on 2 processes
 * (2 + 2 batches), then resumed to 2 epochs on 3 (1 + 1 + 2) over a part
 * a crash left: the store equals one process's byte for byte (index and
 * both shards), with no part left behind. */
static void test_label_ranks(void)
{
    char text[8192], path[256], teacher[256];
    snprintf(teacher, sizeof teacher, "%s/one/best.safetensors", dir);
    snprintf(text, sizeof text, label_job_template, kt_plugin_dir(), mlp_dir, teacher);
    snprintf(path, sizeof path, "%s/label.json", dir);
    kt_write_file(path, text, strlen(text));
    char cmd[1024], *one = NULL, *two = NULL, *three = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s/kdengine label label.json --epochs 2 "
             "--out store1 --top-k 4 2>&1", dir, KD_BUILDDIR);
    int rc1 = kt_run_command(cmd, &one);
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s/kdengine label label.json --epochs 1 "
             "--out store2 --top-k 4 --nproc 2 2>&1", dir, KD_BUILDDIR);
    int rc2 = kt_run_command(cmd, &two);
    /* what a crash of a 2-process run in epoch 2 would leave */
    snprintf(path, sizeof path, "%s/store2/epoch-00001.part-0-of-2", dir);
    kt_write_file(path, "stale", 5);
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s/kdengine label label.json --epochs 2 "
             "--out store2 --top-k 4 --nproc 3 2>&1", dir, KD_BUILDDIR);
    int rc3 = kt_run_command(cmd, &three);
    const char *files[] = {"index.json", "epoch-00000.labels", "epoch-00001.labels"};
    int same = 0;
    for (int i = 0; i < 3; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/store1/%s", dir, files[i]);
        snprintf(b, sizeof b, "%s/store2/%s", dir, files[i]);
        same += same_file(a, b);
    }
    snprintf(path, sizeof path, "%s/store2", dir);
    int entries = count_entries(path);
    kt_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && same == 3 && entries == 3 &&
                 three && strstr(three, "label epoch 2: 63 views on rank 0 of 3") &&
                 !strstr(three, "label epoch 1:"),
             "label on 2 processes, resumed on 3: the store equals 1 process's byte for byte",
             "exit %d, %d, %d; %d of 3 files equal, %d entries in store2:\n%s\n%s\n%s", rc1, rc2,
             rc3, same, entries, one ? one : "", two ? two : "", three ? three : "");
    free(one);
    free(two);
    free(three);
}

/* Training from store1 (mixup: whole batches of one process) on 2
 * processes would mix each rank's half-batch: refused at bind, naming why. */
static void test_fkd_ranks_refused(void)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && " OMPI_ENV " %s/kdengine run label.json --nproc 2 "
             "--set output=fkd2 --set 'losses=[{\"name\": \"fkd\", \"labels\": \"store1\"}]' "
             "2>&1", dir, KD_BUILDDIR);
    int rc = kt_run_command(cmd, &out);
    kt_check(rc != 0 && out && strstr(out, "fkd") && strstr(out, "2 processes") &&
                 strstr(out, "batch_transforms"),
             "fkd on 2 processes with mixup is refused: each rank would mix half a batch",
             "exit %d:\n%s", rc, out ? out : "");
    free(out);
}

/* ------------------------------------------------ plan --nodes */

/* The number after `key` in text; NAN when absent. */
static double number_after(const char *text, const char *key)
{
    const char *at = text ? strstr(text, key) : NULL;
    return at ? atof(at + strlen(key)) : NAN;
}

static bool near(double x, double want) { return fabs(x - want) <= 1e-5 * fabs(want); }

/* The mlp student (784 -> 32 -> 10, float64): 25450 values, 203600 bytes
 * of gradients. Batch 63 over 2 nodes x 4 GPUs: 8 per process. The
 * formulas of plan_scaling.h computed here from the printed compute. */
static void check_scaling(const char *flags, int nodes, int gpus, double intra_bw, bool shared)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine plan one.json %s 2>&1", dir, KD_BUILDDIR,
             flags);
    int rc = kt_run_command(cmd, &out);
    double bytes = 8 * (784.0 * 32 + 32 + 32 * 10 + 10), p = nodes * gpus;
    double ring = 2 * (p - 1) / p * bytes;
    double intra = 2.0 * (gpus - 1) / gpus * bytes, inter = 2.0 * (nodes - 1) / nodes * bytes;
    double comm_ms = 1e3 * (intra * (shared ? gpus : 1) / intra_bw + inter / 25e9);
    double compute = number_after(out, "compute per step per process: ");
    double backward = number_after(out, "overlapping the backward (");
    double no_overlap = 100 * compute / (compute + comm_ms);
    double exposed = comm_ms > backward ? comm_ms - backward : 0;
    double overlap = 100 * compute / (compute + exposed);
    char want[256];
    snprintf(want, sizeof want, "scaling efficiency: %.1f%% with no overlap", no_overlap);
    bool ok = rc == 0 && near(number_after(out, "processes, batch "), 8) &&
              near(number_after(out, "gradients per step: "), bytes / 8) &&
              near(number_after(out, "(0 of them the losses'), "), bytes) &&
              near(number_after(out, "volume per process: 2(P-1)/P x 203600 = "), ring) &&
              near(number_after(out, "all-reduce time: within nodes "), intra) &&
              near(number_after(out, "ms, between nodes "), inter) &&
              near(number_after(out, " ms; "), comm_ms) && compute > 0 &&
              fabs(number_after(out, "scaling efficiency: ") - no_overlap) <= 0.051 &&
              fabs(number_after(out, "no overlap (all-reduce after the backward, kdengine's CPU "
                                     "path); ") - overlap) <= 0.051;
    char name[256];
    snprintf(name, sizeof name, "plan %s: gradient bytes, ring volume, all-reduce time and "
             "efficiency equal the formulas", flags);
    kt_check(ok, name, "exit %d; want %.0f bytes, ring %.0f, intra %.0f, inter %.0f, %.6g ms, "
             "%s, overlapped %.1f%%:\n%s", rc, bytes, ring, intra, inter, comm_ms, want, overlap,
             out ? out : "");
    free(out);
}

static void test_plan_scaling(void)
{
    check_scaling("--nodes 2 --gpus-per-node 4", 2, 4, 450e9, false);
    check_scaling("--nodes 2 --gpus-per-node 4 --interconnect pcie", 2, 4, 25e9, false);
    check_scaling("--gpus-per-node 4 --nodes 2 --interconnect ib", 2, 4, 25e9, true);

    /* --tflops: the student's 3 x 2 x MACs per image over the rate */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine plan one.json --nodes 3 --tflops 0.5 2>&1",
             dir, KD_BUILDDIR);
    int rc = kt_run_command(cmd, &out);
    double macs = number_after(out, "MFLOPs per image (");
    double want_ms = 1e3 * 21 * 6 * macs / 0.5e12; /* batch ceil(63 / 3) = 21 */
    kt_check(rc == 0 && macs == 784 * 32 + 32 * 10 &&
                 near(number_after(out, "compute per step per process: "), want_ms),
             "plan --tflops: compute from the student's FLOPs at the per-process batch",
             "exit %d, %g multiply-adds, want %.6g ms:\n%s", rc, macs, want_ms, out ? out : "");
    free(out);

    static const struct { const char *flags, *message; int rc; } bad[] = {
        {"--nodes 0", "--nodes '0' is not a count (1 to 100000)", 2},
        {"--gpus-per-node 8x", "--gpus-per-node '8x' is not a count", 2},
        {"--nodes 2 --interconnect eth", "--interconnect 'eth' is not one of nvlink, pcie, ib", 2},
        {"--tflops 10", "--interconnect and --tflops describe a cluster: give --nodes", 2},
        {"--nodes 1 --tflops -1", "--tflops '-1' is not a positive number", 2},
        {"--nodes 16 --gpus-per-node 8",
         "128 processes, but data.train.batch_size 63 gives each at most one sample", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine plan one.json %s 2>&1", dir, KD_BUILDDIR,
                 bad[i].flags);
        rc = kt_run_command(cmd, &out);
        char name[128];
        snprintf(name, sizeof name, "plan %s is refused", bad[i].flags);
        kt_check(rc == bad[i].rc && out && strstr(out, bad[i].message), name, "exit %d: %s", rc,
                 out ? out : "");
        free(out);
    }
}

/* ------------------------------------------------ the collectives, per rank */

/* Rank r's value i: (r + 1)(i + 1) + r / 4, exact in float32. */
static double value_of(int rank, int64_t i) { return (rank + 1.0) * ((double)i + 1) + rank / 4.0; }

static kd_tensor *rank_tensor(kd_dtype dtype, int rank)
{
    int64_t shape[2] = {3, 2};
    kd_tensor *t = kd_tensor_empty(dtype, KD_CPU, 2, shape);
    for (int64_t i = 0; t && i < 6; i++) {
        if (dtype == KD_F64)
            ((double *)kd_tensor_data(t))[i] = value_of(rank, i);
        else
            ((float *)kd_tensor_data(t))[i] = (float)value_of(rank, i);
    }
    return t;
}

/* Run by each rank of `mpirun -np W test_dist collectives`: sum, mean and
 * max of float32 and float64 tensors, all_gather in rank order, a dtype
 * MPI is not asked to reduce, and the per-batch decision. */
static int collectives_rank(void)
{
    if (!kt_check(kd_dist_init() == KD_OK, "init", "%s", kd_last_error()))
        return kt_finish();
    kd_dist_info d = kd_dist();
    int w = d.world;
    kt_check(w > 1 && d.rank >= 0 && d.rank < w && d.local_world == w && d.local_rank == d.rank,
             "rank, world and local rank from the launcher", "rank %d of %d, local %d of %d",
             d.rank, w, d.local_rank, d.local_world);
    const kd_dtype dtypes[2] = {KD_F32, KD_F64};
    kd_scope_begin();
    for (int k = 0; k < 2; k++) {
        const char *dn = kd_dtype_name(dtypes[k]);
        const kd_dist_op ops[3] = {KD_DIST_SUM, KD_DIST_MEAN, KD_DIST_MAX};
        const char *op_names[3] = {"sum", "mean", "max"};
        for (int o = 0; o < 3; o++) {
            kd_tensor *t = rank_tensor(dtypes[k], d.rank);
            kd_status st = kd_dist_all_reduce(t, ops[o]);
            double worst = 0;
            for (int64_t i = 0; st == KD_OK && i < 6; i++) {
                double sum = 0;
                for (int r = 0; r < w; r++)
                    sum += value_of(r, i);
                double want = o == 0 ? sum : o == 1 ? sum / w : value_of(w - 1, i);
                worst = fmax(worst, fabs(kd_tensor_get(t, i) - want));
            }
            kt_check(st == KD_OK && worst == 0, op_names[o], "%s: %s, off by %g", dn,
                     st == KD_OK ? "ok" : kd_last_error(), worst);
        }
        kd_tensor *g = NULL;
        kd_status st = kd_dist_all_gather(rank_tensor(dtypes[k], d.rank), &g);
        bool right = st == KD_OK && g && g->ndim == 2 && g->shape[0] == 3 * w && g->shape[1] == 2;
        for (int r = 0; right && r < w; r++)
            for (int64_t i = 0; i < 6; i++)
                right &= kd_tensor_get(g, r * 6 + i) == value_of(r, i);
        kt_check(right, "all_gather in rank order", "%s: %s", dn,
                 st == KD_OK ? "wrong rows" : kd_last_error());
    }
    int64_t n = 4;
    kd_tensor *ints = kd_tensor_zeros(KD_I64, KD_CPU, 1, &n);
    kd_status st = kd_dist_all_reduce(ints, KD_DIST_SUM);
    kt_check(st == KD_ERR_UNSUPPORTED && strstr(kd_last_error(), "float32 or float64"),
             "an int64 tensor is refused before MPI sees it", "%s", kd_last_error());
    kd_scope_end();
    bool any_stop = false;
    st = kd_dist_agree("batch 7", d.rank == 1, d.rank == 0, &any_stop);
    bool want = d.rank == 1 ? st == KD_OK
                            : st == KD_ERR_STATE &&
                                  strstr(kd_last_error(), "batch 7: rank 1 failed");
    kt_check(want && any_stop, "a failure on rank 1 and a stop on rank 0 reach every rank",
             "status %s, stop %d: %s", kd_status_name(st), any_stop, kd_last_error());
    kd_dist_finalize();
    return kt_finish();
}

/* The collectives on 2 processes under mpirun: every rank passes. */
static void test_collectives(void)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, OMPI_ENV " mpirun -np 2 --oversubscribe --bind-to none "
             "--output-filename %s/coll %s/tests/test_dist collectives >/dev/null 2>&1; "
             "cat %s/coll/1/rank.*/stdout", dir, KD_BUILDDIR, dir);
    int rc = kt_run_command(cmd, &out);
    const char *a = out ? strstr(out, "RESULT ") : NULL, *b = a ? strstr(a + 1, "RESULT ") : NULL;
    kt_check(rc == 0 && a && b && !strstr(out, "FAIL") && !strncmp(a, "RESULT 12 0 0", 13) &&
                 !strncmp(b, "RESULT 12 0 0", 13),
             "collectives on 2 ranks: sum, mean, max, all_gather (f32, f64), refusals, agreement",
             "exit %d:\n%s", rc, out ? out : "(none)");
    free(out);
}

static void test_bad_nproc(void)
{
    char *out = NULL;
    int rc = run_job("one", "--nproc 0", &out);
    kt_check(rc == 2 && strstr(out, "--nproc '0' is not a process count"),
             "--nproc 0 is refused", "exit %d: %s", rc, out ? out : "");
    free(out);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "collectives"))
        return collectives_rank();
    snprintf(dir, sizeof dir, "/tmp/kddist.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "cannot make a temporary directory");
        return kt_finish();
    }
    kt_stage_mlp(dir, mlp_dir, sizeof mlp_dir);
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_fail("setup", "%s is missing: scripts/setup installs dataset-fashion-mnist", FMNIST);
    } else if (!kd_dist_available()) {
        write_job("one", SUBSET, EPOCHS);
        test_plan_scaling();
        test_bad_nproc();
        char *out = NULL;
        int rc = run_job("one", "--nproc 2", &out);
        kt_check(rc == 1 && strstr(out, "built without MPI"),
                 "--nproc without MPI says what is missing", "exit %d: %s", rc, out ? out : "");
        free(out);
        kt_skip("2 processes", "this build has no MPI (libopenmpi-dev)");
    } else {
        test_bad_nproc();
        test_collectives();
        test_two_processes();
        test_plan_scaling();
        test_label_ranks();
        test_fkd_ranks_refused();
        test_sync_bn();
        test_crd();
        test_world_mismatch();
        test_bad_timeout();
        test_stop_one_rank();
        test_kill_one_rank();
        test_silent_rank();
        test_nan();
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return kt_finish();
}
