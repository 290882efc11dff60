/* kdengine label JOB.json --epochs E --out DIR [--top-k K] [--nproc N] [--set ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "../core/train/dist.h"
#include "../core/train/job.h"
#include "../core/train/label.h"
#include "../core/train/label_store.h"
#include "label_command.h"
#include "mpirun_launch.h"

static const char usage[] =
    "usage: kdengine label JOB.json --epochs E --out DIR [--top-k K] [--nproc N]\n"
    "                      [--set KEY=VALUE ...]\n"
    "\n"
    "Runs the job's teacher (eval mode, as `run` does) over E epochs of its\n"
    "training pipeline, every view made exactly as `run` makes it, and stores\n"
    "the top-K probabilities of each (epoch, sample) in DIR: one shard per\n"
    "epoch and index.json, with a fingerprint of the data, transforms, seed\n"
    "and teacher. The fkd loss trains a student from DIR without a teacher.\n"
    "Rerun to continue after the last complete shard.\n"
    "\n"
    "  --epochs E   epochs of views to label (a run longer than E cycles)\n"
    "  --out DIR    the store's folder\n"
    "  --top-k K    probabilities kept per view (default 10; at most the classes)\n"
    "  --nproc N    in parallel on this machine: runs itself again under mpirun\n"
    "               -np N (the same as launching with mpirun or srun yourself);\n"
    "               each process labels a block of every epoch's batches, rank 0\n"
    "               merges the blocks: the store equals one process's, byte for byte\n";

/* A positive integer option value. */
static bool parse_count(const char *text, long long *out)
{
    char *end;
    *out = strtoll(text, &end, 10);
    return *text && !*end && *out >= 1 && *out <= 1000000000;
}

int kd_command_label(int argc, char **argv)
{
    const char *file = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0;
    long long epochs = 0, top_k = KD_LABEL_DEFAULT_TOP_K, nproc = 0;
    kd_label_options o = {0};
    if (!sets) {
        fprintf(stderr, "kdengine label: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            free(sets);
            return 0;
        } else if (!strcmp(a, "--set") && has_value) {
            sets[n_sets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            sets[n_sets++] = a + 6;
        } else if (!strcmp(a, "--out") && has_value) {
            o.out = argv[++i];
        } else if ((!strcmp(a, "--epochs") || !strcmp(a, "--top-k") || !strcmp(a, "--nproc")) &&
                   has_value) {
            long long *v = a[2] == 'e' ? &epochs : a[2] == 't' ? &top_k : &nproc;
            if (!parse_count(argv[++i], v)) {
                fprintf(stderr, "kdengine label: %s: '%s' is not a positive integer\n", a,
                        argv[i]);
                rc = 2;
            }
        } else if (a[0] != '-' && !file) {
            file = a;
        } else {
            fprintf(stderr, "kdengine label: %s '%s'\n\n",
                    a[0] == '-' ? "unknown option or missing value for" : "unexpected argument",
                    a);
            rc = 2;
        }
    }
    if (rc == 0 && nproc > 4096) {
        fprintf(stderr, "kdengine label: --nproc: %lld processes (at most 4096)\n", nproc);
        rc = 2;
    }
    if (rc == 0 && (!file || !o.out || !epochs)) {
        fprintf(stderr, "kdengine label: %s is required\n\n",
                !file ? "a job file" : !o.out ? "--out" : "--epochs");
        rc = 2;
    }
    if (rc != 0) {
        fputs(usage, stderr);
        free(sets);
        return rc;
    }
    if (nproc > 0) {
        kd_launch_under_mpirun("label", (int)nproc, argc, argv);
        fprintf(stderr, "kdengine label: %s\n", kd_last_error()); /* it returns on failure */
        free(sets);
        return 1;
    }
    o.epochs = epochs;
    o.top_k = (int)(top_k < 1 << 30 ? top_k : 1 << 30);
    kd_job *job = NULL;
    kd_status st = kd_job_load(file, n_sets, sets, &job);
    if (st == KD_OK)
        st = kd_label(job, &o, stderr);
    if (st != KD_OK && kd_dist().world > 1) {
        fprintf(stderr, "kdengine label (rank %d of %d): %s\n", kd_dist().rank, kd_dist().world,
                kd_last_error());
        kd_dist_abort(1); /* no other rank waits for this one */
    } else if (st != KD_OK) {
        fprintf(stderr, "kdengine label: %s\n", kd_last_error());
    }
    kd_dist_finalize();
    kd_job_free(job);
    free(sets);
    return st == KD_OK ? 0 : 1;
}
