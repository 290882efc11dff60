/* The commands that take a job file: validate, plan, run, eval, export. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "../core/train/dist.h"
#include "../core/train/job.h"
#include "../core/train/plan_scaling.h"
#include "../core/train/runner.h"
#include "../core/train/session.h"
#include "job_commands.h"
#include "mpirun_launch.h"

typedef struct job_args {
    const char *file;
    int n_sets;
    const char **sets;
    bool resume, json, teacher, ema, no_measure;
    const char *weights, *out;
    int nproc; /* run --nproc: 0 when not given */
    bool scaling; /* plan --nodes or --gpus-per-node */
    kd_scaling_options cluster;
} job_args;

static const char *const usages[] = {
    "usage: kdengine validate JOB.json [--set KEY=VALUE ...]\n"
    "\n"
    "Checks every key of the job against the host's keys and each plugin's\n"
    "schema, that every file it names can be read, and that the parts fit\n"
    "(taps the losses read exist, a teacher where a loss needs one, class\n"
    "counts agree). Builds the models and reads one sample; trains nothing.\n",

    "usage: kdengine plan JOB.json [--set KEY=VALUE ...] [--no-measure] [--nodes N]\n"
    "                            [--gpus-per-node G] [--interconnect nvlink|pcie|ib]\n"
    "                            [--tflops T]\n"
    "\n"
    "Validates, then prints the teacher and student (parameters, FLOPs per\n"
    "image, taps), the taps each loss reads with their shapes, and an\n"
    "estimate of a training step's memory.\n"
    "\n"
    "  --no-measure  skip the passes behind the memory estimate (a training\n"
    "                step of the student, the teacher's forward): FLOPs come\n"
    "                from the one-image forward validation makes anyway\n"
    "\n"
    "With --nodes or --gpus-per-node, also data parallel on that cluster, one\n"
    "process per GPU, data.train's batch_size the global batch: the gradient\n"
    "bytes each step all-reduces, the ring all-reduce volume per process, its\n"
    "time within and between nodes, the compute per step at the per-process\n"
    "batch and the expected scaling efficiency.\n"
    "\n"
    "  --nodes N           machines (default 1)\n"
    "  --gpus-per-node G   processes per machine (default 1)\n"
    "  --interconnect L    the link among a node's GPUs: nvlink (NVLink 4, the\n"
    "                      default), pcie (PCIe 4.0 x16), or ib (none: through\n"
    "                      the node's InfiniBand HDR adapter, which also joins\n"
    "                      the nodes)\n"
    "  --tflops T          compute from the models' FLOPs at T TFLOP/s per GPU\n"
    "                      (sustained); default: a step measured on this machine\n",

    "usage: kdengine run JOB.json [--set KEY=VALUE ...] [--resume] [--nproc N]\n"
    "\n"
    "Trains the student: supervised when the job has no teacher, distilled\n"
    "when it has one. Writes job.json, metrics.jsonl, checkpoints/ and\n"
    "best.safetensors into the job's output folder. SIGINT or SIGTERM\n"
    "finishes the step, writes a checkpoint and exits with status 3.\n"
    "\n"
    "  --resume   continue from the newest checkpoint in the output folder;\n"
    "             the result equals an uninterrupted run's\n"
    "  --nproc N  data parallel on this machine: runs itself again under\n"
    "             mpirun -np N --oversubscribe --bind-to none (the same as\n"
    "             launching with mpirun or srun yourself); data.train's\n"
    "             batch_size is the global batch, cut among the N processes\n",

    "usage: kdengine eval JOB.json [--weights FILE] [--teacher] [--json] [--set ...]\n"
    "\n"
    "Top-1, top-5 and cross-entropy of the student on data.val.\n"
    "\n"
    "  --weights FILE  a state_dict (.safetensors, timm names) or a kdengine\n"
    "                  checkpoint; default: the student's \"weights\"\n"
    "  --teacher       evaluate the teacher instead (with its weights)\n"
    "  --json          print the result as JSON\n",

    "usage: kdengine export JOB.json --out FILE [--weights CHECKPOINT] [--ema] [--set ...]\n"
    "\n"
    "Writes the student's weights alone, with their state_dict names, as\n"
    "safetensors that PyTorch's load_state_dict accepts.\n"
    "\n"
    "  --weights CHECKPOINT  a kdengine checkpoint or a state_dict; default: the\n"
    "                        student's \"weights\", or without them the student as\n"
    "                        the job's seed initialises it (the start of a run)\n"
    "  --ema                 the checkpoint's moving average of the student (a run\n"
    "                        with \"ema\") instead of the student\n",
};

enum { VALIDATE, PLAN, RUN, EVAL, EXPORT };

/* The first ^C asks the run to stop after its step (with a checkpoint); a
 * second one kills at once. */
static void on_stop_signal(int sig)
{
    kd_run_request_stop();
    signal(sig, SIG_DFL);
}

static kd_status run_with_signals(const kd_job *job, const kd_run_options *o, bool *stopped)
{
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    kd_status st = kd_run(job, o, stopped);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return st;
}
static const char *const names[] = {"validate", "plan", "run", "eval", "export"};

static int parse_args(int which, int argc, char **argv, job_args *a)
{
    memset(a, 0, sizeof *a);
    bool interconnect = false; /* --interconnect or --tflops */
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    if (!a->sets) {
        fprintf(stderr, "kdengine %s: out of memory\n", names[which]);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(usages[which], stdout);
            return -1;
        } else if (!strcmp(o, "--set") && has_value) {
            a->sets[a->n_sets++] = argv[++i];
        } else if (!strncmp(o, "--set=", 6)) {
            a->sets[a->n_sets++] = o + 6;
        } else if (!strcmp(o, "--nproc") && has_value && which == RUN) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 1 || n > 4096) {
                fprintf(stderr, "kdengine run: --nproc '%s' is not a process count (1 to "
                        "4096)\n", argv[i]);
                return 2;
            }
            a->nproc = (int)n;
        } else if ((!strcmp(o, "--nodes") || !strcmp(o, "--gpus-per-node")) && has_value &&
                   which == PLAN) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 1 || n > 100000) {
                fprintf(stderr, "kdengine plan: %s '%s' is not a count (1 to 100000)\n", o,
                        argv[i]);
                return 2;
            }
            *(o[2] == 'n' ? &a->cluster.nodes : &a->cluster.gpus_per_node) = (int)n;
            a->scaling = true;
        } else if (!strcmp(o, "--interconnect") && has_value && which == PLAN) {
            if (!kd_link_parse(argv[++i], &a->cluster.intra_node)) {
                fprintf(stderr, "kdengine plan: --interconnect '%s' is not one of nvlink, pcie, "
                        "ib\n", argv[i]);
                return 2;
            }
            interconnect = true;
        } else if (!strcmp(o, "--tflops") && has_value && which == PLAN) {
            char *end;
            a->cluster.tflops = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(a->cluster.tflops > 0 && a->cluster.tflops < 1e9)) {
                fprintf(stderr, "kdengine plan: --tflops '%s' is not a positive number of "
                        "TFLOP/s\n", argv[i]);
                return 2;
            }
            interconnect = true;
        } else if (!strcmp(o, "--no-measure") && which == PLAN) {
            a->no_measure = true;
        } else if (!strcmp(o, "--resume") && which == RUN) {
            a->resume = true;
        } else if (!strcmp(o, "--json") && which == EVAL) {
            a->json = true;
        } else if (!strcmp(o, "--teacher") && which == EVAL) {
            a->teacher = true;
        } else if (!strcmp(o, "--ema") && which == EXPORT) {
            a->ema = true;
        } else if (!strcmp(o, "--weights") && has_value && (which == EVAL || which == EXPORT)) {
            a->weights = argv[++i];
        } else if (!strcmp(o, "--out") && has_value && which == EXPORT) {
            a->out = argv[++i];
        } else if (o[0] != '-' && !a->file) {
            a->file = o;
        } else {
            fprintf(stderr, "kdengine %s: %s '%s'\n\n", names[which],
                    o[0] == '-' ? "unknown option or missing value for" : "unexpected argument",
                    o);
            fputs(usages[which], stderr);
            return 2;
        }
    }
    if (interconnect && !a->scaling) {
        fprintf(stderr, "kdengine plan: --interconnect and --tflops describe a cluster: give "
                "--nodes or --gpus-per-node\n\n");
        fputs(usages[which], stderr);
        return 2;
    }
    if (!a->cluster.nodes)
        a->cluster.nodes = 1;
    if (!a->cluster.gpus_per_node)
        a->cluster.gpus_per_node = 1;
    if (!a->file) {
        fprintf(stderr, "kdengine %s: no job file\n\n", names[which]);
        fputs(usages[which], stderr);
        return 2;
    }
    if (which == EXPORT && !a->out) {
        fprintf(stderr, "kdengine export: --out is required\n\n");
        fputs(usages[which], stderr);
        return 2;
    }
    return 0;
}

/* "resnet20 -> " for one teacher, "t1 resnet20, t2 vit_small, ens -> " for
 * several, "" for none: what validate says the job distils. */
static void teachers_line(const kd_job *job, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < job->n_teachers && used < size; i++) {
        const kd_job_teacher *t = &job->teachers[i];
        if (job->n_teachers == 1)
            used += (size_t)snprintf(buf + used, size - used, "%s", t->model.entry->name);
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%s%s%s", i ? ", " : "",
                                     t->name, t->model.present ? " " : "",
                                     t->model.present ? t->model.entry->name : "");
    }
    if (job->n_teachers && used < size)
        snprintf(buf + used, size - used, " -> ");
}

int kd_command_job(const char *command, int argc, char **argv)
{
    int which = -1;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(command, names[i]))
            which = i;
    if (which < 0)
        return -1;
    job_args a;
    int rc = parse_args(which, argc, argv, &a);
    if (rc != 0) {
        free(a.sets);
        return rc < 0 ? 0 : rc;
    }
    if (a.nproc > 0) {
        kd_launch_under_mpirun("run", a.nproc, argc, argv); /* returns on failure only */
        fprintf(stderr, "kdengine run: %s\n", kd_last_error());
        free(a.sets);
        return 1;
    }
    kd_job *job = NULL;
    bool stopped = false;
    kd_status st = kd_job_load(a.file, a.n_sets, a.sets, &job);
    if (st == KD_OK && (which == VALIDATE || which == PLAN)) {
        kd_session *s = NULL;
        st = kd_session_open(job, KD_SESSION_TRAIN, &s);
        if (st == KD_OK && which == PLAN)
            st = kd_session_plan(s, !a.no_measure, stdout);
        if (st == KD_OK && which == PLAN && a.scaling)
            st = kd_plan_scaling(s, &a.cluster, stdout);
        else if (st == KD_OK) {
            char teachers[512];
            teachers_line(job, teachers, sizeof teachers);
            printf("%s: ok (%s%s, %d loss%s, %lld epochs)\n", a.file, teachers,
                   job->student.entry->name, job->n_losses, job->n_losses == 1 ? "" : "es",
                   (long long)job->epochs);
        }
        kd_session_close(s);
    } else if (st == KD_OK && which == RUN) {
        kd_run_options o = {.resume = a.resume};
        st = run_with_signals(job, &o, &stopped);
    } else if (st == KD_OK && which == EVAL) {
        kd_eval_result r;
        st = kd_evaluate(job, a.teacher, a.weights, &r);
        if (st == KD_OK && a.json)
            printf("{\"model\": \"%s\", \"top1\": %.4f, \"top5\": %.4f, \"loss\": %.6f, "
                   "\"samples\": %lld}\n", a.teacher ? "teacher" : "student", r.top1, r.top5,
                   r.loss, (long long)r.samples);
        else if (st == KD_OK)
            printf("%s: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %lld images\n",
                   a.teacher ? "teacher" : "student", r.top1, r.top5, r.loss,
                   (long long)r.samples);
    } else if (st == KD_OK && which == EXPORT) {
        st = kd_export(job, a.weights, a.ema, a.out);
        if (st == KD_OK)
            printf("wrote %s\n", a.out);
    }
    if (st != KD_OK && kd_dist().world > 1) {
        fprintf(stderr, "kdengine %s (rank %d of %d): %s\n", names[which], kd_dist().rank,
                kd_dist().world, kd_last_error());
        kd_dist_abort(1); /* no other rank waits for this one */
    } else if (st != KD_OK) {
        fprintf(stderr, "kdengine %s: %s\n", names[which], kd_last_error());
    }
    kd_dist_finalize();
    kd_job_free(job);
    free(a.sets);
    if (st != KD_OK)
        return 1;
    return stopped ? 3 : 0;
}
