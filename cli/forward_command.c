/* kdengine forward: one model, one input, its taps into a safetensors file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../core/train/forward.h"
#include "forward_command.h"

static const char usage_text[] =
    "usage: kdengine forward MODEL|JOB.json --input FILE --out FILE [options]\n"
    "\n"
    "Runs one model once on an input and writes the taps asked for (default:\n"
    "the logits) to a safetensors file, each under its tap name.\n"
    "\n"
    "  MODEL              a model provider (`kdengine plugins` lists them)\n"
    "  JOB.json           a job file: its student (or --teacher) with its weights\n"
    "  --input FILE       safetensors holding the input, [N, C, H, W] or [C, H, W],\n"
    "                     or an image (.jpg, .jpeg, .png); several images (repeat\n"
    "                     --input) make a batch in that order\n"
    "  --input-key NAME   which tensor of it (default: \"input\", or the only one)\n"
    "  --out FILE         the safetensors file to write\n"
    "  --taps LIST        comma-separated tap names, or \"all\"\n"
    "  --weights FILE     MODEL: a state_dict (.safetensors, timm names) or a\n"
    "                     kdengine checkpoint; default: initialised from --seed\n"
    "  --params JSON      MODEL: its parameters, e.g. '{\"num_classes\": 10}'\n"
    "  --dtype TYPE       MODEL: float32 (default) or float64\n"
    "  --seed N           MODEL: the initialisation's seed (default 0)\n"
    "  --plugin-dir DIR   MODEL: also scan DIR for plugins (repeatable)\n"
    "  --teacher          JOB: the teacher instead of the student\n"
    "  --train            training mode: batch statistics, dropout, drop-path\n"
    "  --set KEY=VALUE    JOB: override a key, as for `kdengine run`\n"
    "\n"
    "Images go through the data plugins: a JOB's data.val transforms (at its\n"
    "data set's channels); for a MODEL, timm's evaluation crop: the shorter side\n"
    "resized to floor(size / crop-pct), the centre size x size, normalized:\n"
    "  --size N           MODEL: the crop (default: its img_size parameter, else 224)\n"
    "  --crop-pct F       MODEL: default 0.875\n"
    "  --interpolation M  MODEL: bilinear (default), bicubic, nearest or area\n"
    "  --mean A,B,C       MODEL: default ImageNet's 0.485,0.456,0.406; one value\n"
    "                     makes the image gray (1 channel)\n"
    "  --std A,B,C        MODEL: default ImageNet's 0.229,0.224,0.225\n"
    "The top-5 classes of each input are printed (named when the JOB's data.val\n"
    "or the weights' kdengine.classes name them).\n";

/* The most values --mean and --std take: RGB. */
#define MAX_CHANNELS 3

typedef struct forward_args {
    const char *target, *weights, *params, *dtype;
    unsigned long long seed;
    int n_dirs, n_sets, n_taps, n_inputs;
    const char **dirs, **sets, **taps, **inputs;
    char *taps_text;
    double mean[MAX_CHANNELS], std[MAX_CHANNELS];
    bool image_options; /* one of --size .. --std was given */
    kd_forward_options o;
} forward_args;

/* "0.5,0.25" into v[]; the count, or -1 when it is not such a list. */
static int parse_numbers(const char *text, double *v, int max)
{
    int n = 0;
    const char *p = text;
    while (n < max) {
        char *end;
        v[n++] = strtod(p, &end);
        if (end == p)
            return -1;
        if (!*end)
            return n;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
    return -1;
}

static bool is_job_file(const char *target)
{
    size_t n = strlen(target);
    return n > 5 && !strcmp(target + n - 5, ".json");
}

/* Splits --taps on commas (the last --taps wins). */
static int split_taps(forward_args *a, const char *list)
{
    free(a->taps_text);
    free(a->taps);
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    a->taps_text = strdup(list);
    a->taps = calloc(n, sizeof *a->taps);
    if (!a->taps_text || !a->taps)
        return 1;
    a->n_taps = 0;
    for (char *save = NULL, *t = strtok_r(a->taps_text, ",", &save); t;
         t = strtok_r(NULL, ",", &save))
        a->taps[a->n_taps++] = t;
    return 0;
}

/* 0 ok, -1 --help printed, 2 bad command line. */
static int parse_args(int argc, char **argv, forward_args *a)
{
    a->dirs = calloc((size_t)argc + 1, sizeof *a->dirs);
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    a->inputs = calloc((size_t)argc + 1, sizeof *a->inputs);
    if (!a->dirs || !a->sets || !a->inputs) {
        fprintf(stderr, "kdengine forward: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool took = v != NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(usage_text, stdout);
            return -1;
        } else if (!strcmp(o, "--teacher")) {
            a->o.teacher = true;
            took = false;
        } else if (!strcmp(o, "--train")) {
            a->o.training = true;
            took = false;
        } else if (v && !strcmp(o, "--input")) {
            a->inputs[a->n_inputs++] = v;
        } else if (v && !strcmp(o, "--size")) {
            char *end;
            long size = strtol(v, &end, 10);
            if (*end || !*v || size < 1 || size > 65536) {
                fprintf(stderr, "kdengine forward: --size '%s' is not a side in 1..65536\n", v);
                return 2;
            }
            a->o.size = (int)size;
            a->image_options = true;
        } else if (v && !strcmp(o, "--crop-pct")) {
            char *end;
            a->o.crop_pct = strtod(v, &end);
            if (*end || !*v || !(a->o.crop_pct > 0 && a->o.crop_pct <= 4)) {
                fprintf(stderr, "kdengine forward: --crop-pct '%s' is not in (0, 4]\n", v);
                return 2;
            }
            a->image_options = true;
        } else if (v && !strcmp(o, "--interpolation")) {
            a->o.interpolation = v;
            a->image_options = true;
        } else if (v && (!strcmp(o, "--mean") || !strcmp(o, "--std"))) {
            bool mean = !strcmp(o, "--mean");
            int n = parse_numbers(v, mean ? a->mean : a->std, MAX_CHANNELS);
            if (n < 1) {
                fprintf(stderr, "kdengine forward: %s '%s' is not a comma-separated list of "
                        "up to %d numbers\n", o, v, MAX_CHANNELS);
                return 2;
            }
            *(mean ? &a->o.n_mean : &a->o.n_std) = n;
            a->image_options = true;
        } else if (v && !strcmp(o, "--input-key")) {
            a->o.input_key = v;
        } else if (v && !strcmp(o, "--out")) {
            a->o.out = v;
        } else if (v && !strcmp(o, "--taps")) {
            if (split_taps(a, v)) {
                fprintf(stderr, "kdengine forward: out of memory\n");
                return 1;
            }
        } else if (v && !strcmp(o, "--weights")) {
            a->weights = v;
        } else if (v && !strcmp(o, "--params")) {
            a->params = v;
        } else if (v && !strcmp(o, "--dtype")) {
            a->dtype = v;
        } else if (v && !strcmp(o, "--seed")) {
            char *end;
            a->seed = strtoull(v, &end, 10);
            if (*end || !*v) {
                fprintf(stderr, "kdengine forward: --seed '%s' is not a number\n", v);
                return 2;
            }
        } else if (v && !strcmp(o, "--plugin-dir")) {
            a->dirs[a->n_dirs++] = v;
        } else if (v && !strcmp(o, "--set")) {
            a->sets[a->n_sets++] = v;
        } else if (o[0] != '-' && !a->target) {
            a->target = o;
            took = false;
        } else {
            fprintf(stderr, "kdengine forward: %s '%s'\n\n",
                    o[0] == '-' ? "unknown option or missing value for" : "unexpected argument",
                    o);
            fputs(usage_text, stderr);
            return 2;
        }
        i += took;
    }
    const char *missing = !a->target ? "a MODEL or JOB.json" : !a->n_inputs ? "--input"
                          : !a->o.out ? "--out" : NULL;
    bool job = a->target && is_job_file(a->target);
    const char *misplaced = job && a->weights ? "--weights" : job && a->params ? "--params"
                            : job && a->dtype ? "--dtype" : job && a->n_dirs ? "--plugin-dir"
                            : job && a->image_options ? "--size, --crop-pct, --interpolation, "
                                                        "--mean or --std"
                            : !job && a->o.teacher ? "--teacher" : !job && a->n_sets ? "--set"
                            : NULL;
    if (missing || misplaced) {
        if (missing)
            fprintf(stderr, "kdengine forward: %s is required\n\n", missing);
        else
            fprintf(stderr, "kdengine forward: %s goes with a %s\n\n", misplaced,
                    job ? "MODEL (a job names its own)" : "JOB.json");
        fputs(usage_text, stderr);
        return 2;
    }
    return 0;
}

/* The one-model job of MODEL [--params] [--weights] [--dtype] [--seed]. */
static kd_status model_job(const forward_args *a, kd_job **out)
{
    kd_dtype dtype = KD_F32;
    if (a->dtype && !strcmp(a->dtype, "float64"))
        dtype = KD_F64;
    else if (a->dtype && strcmp(a->dtype, "float32") != 0)
        return kd_error(KD_ERR_INVALID, "--dtype: '%s' is not float32 or float64", a->dtype);
    json_error_t jerr;
    json_t *model = a->params ? json_loads(a->params, 0, &jerr) : json_object();
    if (!model)
        return kd_error(KD_ERR_INVALID, "--params: %s (at character %d)", jerr.text,
                        jerr.position);
    if (!json_is_object(model)) {
        json_decref(model);
        return kd_error(KD_ERR_INVALID, "--params: expected a JSON object");
    }
    if (json_object_get(model, "model") || json_object_get(model, "weights")) {
        json_decref(model);
        return kd_error(KD_ERR_INVALID, "--params: 'model' and 'weights' are given as MODEL "
                        "and --weights");
    }
    if (json_object_set_new(model, "model", json_string(a->target)) != 0 ||
        (a->weights && json_object_set_new(model, "weights", json_string(a->weights)) != 0)) {
        json_decref(model);
        return kd_error(KD_ERR_NOMEM, "forward: out of memory");
    }
    return kd_job_one_model("kdengine forward", model, dtype, a->seed, a->n_dirs, a->dirs, out);
}

int kd_command_forward(int argc, char **argv)
{
    forward_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    if (rc == 0) {
        a.o.n_taps = a.n_taps;
        a.o.taps = a.taps;
        a.o.n_inputs = a.n_inputs;
        a.o.inputs = a.inputs;
        a.o.mean = a.mean;
        a.o.std = a.std;
        a.o.model_only = !is_job_file(a.target);
        kd_job *job = NULL;
        kd_status st = is_job_file(a.target) ? kd_job_load(a.target, a.n_sets, a.sets, &job)
                                             : model_job(&a, &job);
        if (st == KD_OK)
            st = kd_forward(job, &a.o, stdout);
        if (st == KD_OK)
            printf("wrote %s\n", a.o.out);
        else
            fprintf(stderr, "kdengine forward: %s\n", kd_last_error());
        kd_job_free(job);
        rc = st == KD_OK ? 0 : 1;
    }
    free(a.dirs);
    free(a.sets);
    free(a.inputs);
    free(a.taps);
    free(a.taps_text);
    return rc < 0 ? 0 : rc;
}
