/* kdengine select JOB.json --pool LIST_OR_DIR --top-k K --out LIST [--scores FILE]
 * [--set ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "../core/train/job.h"
#include "../core/train/select.h"
#include "select_command.h"

static const char usage[] =
    "usage: kdengine select JOB.json --pool DIR_OR_LIST --top-k K --out LIST\n"
    "                       [--scores FILE] [--set KEY=VALUE ...]\n"
    "\n"
    "SSLD's data selection (PaddleClas): the job's teacher scores every image of\n"
    "an unlabeled pool (eval mode, data.val's transforms), and for each class\n"
    "the K images it gives that class (its argmax) with the highest probability\n"
    "are kept. LIST gets one 'path class' line each, grouped by class, most\n"
    "probable first: the images plugin's image_list reads it, and\n"
    "data.train.unlabeled's image_pool too (ignoring the classes). Ties go to\n"
    "the lower class and to the image earlier in the pool; a class given fewer\n"
    "than K images keeps what it has (the counts are printed).\n"
    "\n"
    "  --pool P     a folder (every .jpg, .jpeg, .png at any depth) or a list\n"
    "               file of image paths, one per line\n"
    "  --top-k K    images kept per class\n"
    "  --out LIST   the list file to write\n"
    "  --scores F   also write every image's probabilities (safetensors: probs\n"
    "               f64 [images, classes], the paths in metadata kdengine.pool)\n";

int kd_command_select(int argc, char **argv)
{
    const char *file = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0;
    kd_select_options o = {0};
    if (!sets) {
        fprintf(stderr, "kdengine select: out of memory\n");
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
        } else if (!strcmp(a, "--pool") && has_value) {
            o.pool = argv[++i];
        } else if (!strcmp(a, "--out") && has_value) {
            o.out = argv[++i];
        } else if (!strcmp(a, "--scores") && has_value) {
            o.scores = argv[++i];
        } else if (!strcmp(a, "--top-k") && has_value) {
            char *end;
            const char *v = argv[++i];
            long long k = strtoll(v, &end, 10);
            if (!*v || *end || k < 1 || k > 1000000000) {
                fprintf(stderr, "kdengine select: --top-k: '%s' is not a positive integer\n",
                        v);
                rc = 2;
            }
            o.top_k = k;
        } else if (a[0] != '-' && !file) {
            file = a;
        } else {
            fprintf(stderr, "kdengine select: %s '%s'\n\n",
                    a[0] == '-' ? "unknown option or missing value for" : "unexpected argument",
                    a);
            rc = 2;
        }
    }
    if (rc == 0 && (!file || !o.pool || !o.out || !o.top_k)) {
        fprintf(stderr, "kdengine select: %s is required\n\n",
                !file ? "a job file" : !o.pool ? "--pool" : !o.out ? "--out" : "--top-k");
        rc = 2;
    }
    if (rc != 0) {
        fputs(usage, stderr);
        free(sets);
        return rc;
    }
    kd_job *job = NULL;
    kd_status st = kd_job_load(file, n_sets, sets, &job);
    if (st == KD_OK)
        st = kd_select(job, &o, stderr);
    if (st != KD_OK)
        fprintf(stderr, "kdengine select: %s\n", kd_last_error());
    kd_job_free(job);
    free(sets);
    return st == KD_OK ? 0 : 1;
}
