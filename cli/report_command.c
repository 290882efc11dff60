/* kdengine report: run folders (job.json, metrics.jsonl, checkpoints/,
 * best.safetensors, classes.json) into one self-contained HTML page. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "report_command.h"
#include "report_html.h"
#include "report_json.h"
#include "report_metrics.h"
#include "report_text.h"

static const char usage_text[] =
    "usage: kdengine report RUN_DIR [RUN_DIR...] [--out FILE] [--open]\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG; no script, nothing\n"
    "fetched) with the curves of each run's metrics.jsonl over the steps:\n"
    "top-1/top-5, every loss term, lr, images per second; each run's job and\n"
    "what its folder records. Several runs are drawn side by side, one colour\n"
    "per run. Metrics lines that cannot be used (a killed run's truncated last\n"
    "line, not JSON, NaN, no step) are reported as FILE:LINE and skipped.\n"
    "\n"
    "  --out FILE   the page to write (default: RUN_DIR/report.html for one\n"
    "               run, report.html in the current folder for several)\n"
    "  --open       print the page's absolute path on stdout (for a browser)\n";

enum { MAX_FACTS = 24 };

typedef struct loaded_run {
    char *folder; /* absolute */
    report_metrics metrics;
    report_text job_json;
    char job_problem[600];
    report_text losses;
    report_fact facts[MAX_FACTS];
    int n_facts;
} loaded_run;

static kd_status add_fact(loaded_run *run, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kd_status add_fact(loaded_run *run, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *value = n >= 0 && run->n_facts < MAX_FACTS ? malloc((size_t)n + 1) : NULL;
    if (!value)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
    va_start(ap, fmt);
    vsnprintf(value, (size_t)n + 1, fmt, ap);
    va_end(ap);
    run->facts[run->n_facts++] = (report_fact){.key = key, .value = value};
    return KD_OK;
}

static char *path_in(const char *folder, const char *name)
{
    size_t size = strlen(folder) + strlen(name) + 2;
    char *path = malloc(size);
    if (path)
        snprintf(path, size, "%s/%s", folder, name);
    return path;
}

/* job.json for people, or why there is none in job_problem. */
static kd_status load_job(loaded_run *run, json_t **job)
{
    *job = NULL;
    char *path = path_in(run->folder, "job.json");
    if (!path)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
    json_error_t jerr;
    *job = json_load_file(path, 0, &jerr);
    if (*job) {
        report_json_pretty(&run->job_json, *job);
        free(path);
        return !run->job_json.failed ? KD_OK
                                     : kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
    }
    struct stat sb;
    if (stat(path, &sb) != 0)
        snprintf(run->job_problem, sizeof run->job_problem, "This folder has no job.json.");
    else
        snprintf(run->job_problem, sizeof run->job_problem,
                 "job.json is not valid JSON: line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
    fprintf(stderr, "warning: %s: %s\n", path, run->job_problem);
    free(path);
    return KD_OK;
}

/* Which loss each "losses[i]" of the metrics is: its name and weight. */
static kd_status loss_names(loaded_run *run, json_t *job)
{
    json_t *losses = json_object_get(job, "losses");
    size_t i;
    json_t *loss;
    json_array_foreach(losses, i, loss) {
        const char *name = json_string_value(json_object_get(loss, "name"));
        json_t *weight = json_object_get(loss, "weight");
        report_text_printf(&run->losses, "%slosses[%zu] %s", i ? ", " : "", i,
                           name ? name : "(unnamed)");
        if (json_is_number(weight))
            report_text_printf(&run->losses, " x%g", json_number_value(weight));
    }
    if (!run->losses.data)
        report_text_append(&run->losses, job ? "none in job.json" : "(no job.json)");
    return run->losses.failed ? kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder) : KD_OK;
}

static double file_mib(const char *folder, const char *name)
{
    char *path = path_in(folder, name);
    struct stat sb;
    double mib = path && stat(path, &sb) == 0 ? (double)sb.st_size / (1024.0 * 1024.0) : -1;
    free(path);
    return mib;
}

/* The checkpoints the run kept: how many, and the last step's file. */
static kd_status checkpoint_fact(loaded_run *run)
{
    char *path = path_in(run->folder, "checkpoints");
    DIR *d = path ? opendir(path) : NULL;
    free(path);
    if (!d)
        return add_fact(run, "checkpoints", "none");
    int count = 0;
    long long last = -1;
    static const char suffix[] = ".safetensors";
    for (struct dirent *e; (e = readdir(d));) {
        char *end;
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "step-", 5) != 0 || len <= 5 + strlen(suffix))
            continue;
        long long step = strtoll(e->d_name + 5, &end, 10);
        if (end != e->d_name + 5 && !strcmp(end, suffix)) {
            count++;
            last = step > last ? step : last;
        }
    }
    closedir(d);
    if (count == 0)
        return add_fact(run, "checkpoints", "none");
    return add_fact(run, "checkpoints", "%d kept, the last at step %lld", count, last);
}

/* classes.json: how many classes the dataset named, first and last. */
static kd_status classes_fact(loaded_run *run)
{
    char *path = path_in(run->folder, "classes.json");
    if (!path)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
    struct stat sb;
    bool present = stat(path, &sb) == 0;
    json_error_t jerr;
    json_t *doc = present ? json_load_file(path, 0, &jerr) : NULL;
    free(path);
    json_t *names = json_object_get(doc, "classes");
    size_t n = json_array_size(names);
    const char *first = json_string_value(json_array_get(names, 0));
    const char *last = n ? json_string_value(json_array_get(names, n - 1)) : NULL;
    kd_status st;
    if (!present)
        st = add_fact(run, "classes.json", "none (the dataset names no classes)");
    else if (!first || !last)
        st = add_fact(run, "classes.json", "unreadable or without a \"classes\" list of names");
    else
        st = add_fact(run, "classes.json", "%zu classes, \"%s\" to \"%s\"", n, first, last);
    json_decref(doc);
    return st;
}

/* A string field of the run record, or `absent` (a field of another type
 * counts as absent: the record may come from another version). */
static const char *record_text(json_t *record, const char *key, const char *absent)
{
    const char *s = json_string_value(json_object_get(record, key));
    return s ? s : absent;
}

/* The set ISA-capping variables of the record's "env", "NAME=value, ...". */
static kd_status isa_caps_fact(loaded_run *run, json_t *env)
{
    report_text caps = {0};
    const char *name;
    json_t *value;
    json_object_foreach(env, name, value) {
        if (json_is_string(value))
            report_text_printf(&caps, "%s%s=%s", caps.data ? ", " : "", name,
                               json_string_value(value));
    }
    if (caps.failed) {
        report_text_free(&caps);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
    }
    kd_status st = add_fact(run, "CPU ISA caps", "%s",
                            caps.data ? caps.data : "none set (the libraries chose by the CPU)");
    report_text_free(&caps);
    return st;
}

/* The build and machine of the run's first start, from metrics.jsonl's
 * "run" record; a run written before the records says so. */
static kd_status run_record_facts(loaded_run *run)
{
    json_t *record = run->metrics.run;
    if (!record)
        return add_fact(run, "build", "not recorded (metrics.jsonl from before run records)");
    const char *commit = record_text(record, "git_commit", NULL);
    kd_status st = add_fact(run, "kdengine", "%s, %s%s", record_text(record, "kdengine", "?"),
                            commit ? "commit " : "commit unknown", commit ? commit : "");
    if (st == KD_OK)
        st = add_fact(run, "compiler", "%s", record_text(record, "compiler", "unknown"));
    if (st == KD_OK)
        st = add_fact(run, "BLAS", "%s; core %s", record_text(record, "blas", "unknown"),
                      record_text(record, "blas_core", "unknown"));
    const char *onednn = record_text(record, "onednn", NULL);
    if (st == KD_OK)
        st = onednn ? add_fact(run, "oneDNN", "%s, ISA %s", onednn,
                               record_text(record, "onednn_isa", "unknown"))
                    : add_fact(run, "oneDNN", "not in this build");
    if (st == KD_OK)
        st = isa_caps_fact(run, json_object_get(record, "env"));
    json_t *threads = json_object_get(record, "threads");
    json_t *world = json_object_get(record, "world_size");
    if (st == KD_OK)
        st = add_fact(run, "machine", "%s: %lld thread%s, %lld process%s",
                      record_text(record, "hostname", "unknown host"),
                      (long long)json_integer_value(threads),
                      json_integer_value(threads) == 1 ? "" : "s",
                      (long long)json_integer_value(world),
                      json_integer_value(world) == 1 ? "" : "es");
    if (st == KD_OK && run->metrics.n_starts > 1)
        st = add_fact(run, "starts", "%d (resumed; the first start's build is shown)",
                      run->metrics.n_starts);
    return st;
}

/* Where and how the run ran, as far as its folder says: the job's threads,
 * seed and dtype, the summary line the runner writes at the end, the
 * files it left. */
static kd_status environment_facts(loaded_run *run, json_t *job)
{
    kd_status st = KD_OK;
    static const char *const job_keys[] = {"threads", "seed", "dtype"};
    for (size_t i = 0; st == KD_OK && job && i < sizeof job_keys / sizeof *job_keys; i++) {
        json_t *v = json_object_get(job, job_keys[i]);
        char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
        if (v && !text)
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", run->folder);
        if (text)
            st = add_fact(run, job_keys[i], "%s%s", text,
                          !strcmp(job_keys[i], "threads") && !strcmp(text, "0")
                              ? " (the thread budget: OMP_NUM_THREADS or the cores)" : "");
        free(text);
    }
    json_t *summary = run->metrics.summary;
    if (st == KD_OK && !summary)
        st = add_fact(run, "summary", "none: the run has not finished (or was stopped)");
    if (st == KD_OK && summary) {
        double elapsed = json_number_value(json_object_get(summary, "elapsed_s"));
        json_int_t steps = json_integer_value(json_object_get(summary, "step"));
        json_t *train = json_object_get(json_object_get(job, "data"), "train");
        json_t *batch = json_object_get(train, "batch_size");
        st = add_fact(run, "training", "%lld steps in %.3g s", (long long)steps, elapsed);
        if (st == KD_OK && json_is_integer(batch) && elapsed > 0)
            st = add_fact(run, "images per second", "%.0f (mean over the run)",
                          (double)steps * (double)json_integer_value(batch) / elapsed);
        json_t *peak = json_object_get(summary, "peak_bytes");
        if (st == KD_OK && json_is_integer(peak))
            st = add_fact(run, "peak tensor memory", "%.1f MiB",
                          (double)json_integer_value(peak) / (1024.0 * 1024.0));
        json_t *best = json_object_get(summary, "best_top1");
        if (st == KD_OK && json_is_number(best) && json_number_value(best) >= 0)
            st = add_fact(run, "best top-1", "%.2f%% after epoch %lld", json_number_value(best),
                          (long long)json_integer_value(json_object_get(summary, "best_epoch")));
    }
    double best_mib = file_mib(run->folder, "best.safetensors");
    if (st == KD_OK)
        st = best_mib >= 0 ? add_fact(run, "best.safetensors", "%.2f MiB", best_mib)
                           : add_fact(run, "best.safetensors", "none");
    if (st == KD_OK)
        st = checkpoint_fact(run);
    if (st == KD_OK)
        st = classes_fact(run);
    if (st == KD_OK)
        st = run_record_facts(run);
    return st;
}

static kd_status load_run(const char *arg, loaded_run *run)
{
    struct stat sb;
    if (stat(arg, &sb) != 0)
        return kd_error(KD_ERR_IO, "%s: %s", arg, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kd_error(KD_ERR_INVALID, "%s: not a folder (give the run's output folder)", arg);
    run->folder = realpath(arg, NULL);
    if (!run->folder)
        return kd_error(KD_ERR_IO, "%s: %s", arg, strerror(errno));
    char *metrics = path_in(run->folder, "metrics.jsonl");
    if (!metrics)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", arg);
    kd_status st = KD_OK;
    if (stat(metrics, &sb) != 0)
        st = kd_error(KD_ERR_IO, "%s: no metrics.jsonl in it: not a kdengine run folder, or a "
                      "run that has not started", arg);
    if (st == KD_OK)
        st = report_metrics_read(metrics, &run->metrics);
    free(metrics);
    for (int i = 0; i < run->metrics.n_warnings; i++)
        fprintf(stderr, "warning: %s\n", run->metrics.warnings[i]);
    json_t *job = NULL;
    if (st == KD_OK)
        st = load_job(run, &job);
    if (st == KD_OK)
        st = loss_names(run, job);
    if (st == KD_OK)
        st = environment_facts(run, job);
    json_decref(job);
    return st;
}

static void free_run(loaded_run *run)
{
    free(run->folder);
    report_metrics_free(&run->metrics);
    report_text_free(&run->job_json);
    report_text_free(&run->losses);
    for (int i = 0; i < run->n_facts; i++)
        free(run->facts[i].value);
}

/* Written to PATH.tmp and renamed, so a reader never sees half a page. */
static kd_status write_page(const char *path, const report_text *page)
{
    size_t size = strlen(path) + 5;
    char *tmp = malloc(size);
    if (!tmp)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, size, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    kd_status st = KD_OK;
    if (!f || fwrite(page->data, 1, page->len, f) != page->len)
        st = kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (f && fclose(f) != 0 && st == KD_OK)
        st = kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (st == KD_OK && rename(tmp, path) != 0)
        st = kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    if (st != KD_OK)
        remove(tmp);
    free(tmp);
    return st;
}

/* The folder as the user named it, without trailing slashes; "." and
 * ".." say nothing in a legend, so those are named by the folder's own
 * name (absolute: the run is loaded). */
static char *label_of(const char *arg, const char *absolute)
{
    char *label = strdup(arg);
    for (size_t n = label ? strlen(label) : 0; n > 1 && label[n - 1] == '/'; n--)
        label[n - 1] = '\0';
    if (label && (!strcmp(label, ".") || !strcmp(label, ".."))) {
        free(label);
        const char *slash = strrchr(absolute, '/');
        label = strdup(slash && slash[1] ? slash + 1 : absolute);
    }
    return label;
}

static kd_status make_report(int n_runs, char **args, const char *out_path, bool print_path)
{
    loaded_run *runs = calloc((size_t)n_runs, sizeof *runs);
    report_run_view *views = calloc((size_t)n_runs, sizeof *views);
    char **labels = calloc((size_t)n_runs, sizeof *labels);
    kd_status st = runs && views && labels ? KD_OK
                                           : kd_error(KD_ERR_NOMEM, "report: out of memory");
    for (int r = 0; st == KD_OK && r < n_runs; r++) {
        st = load_run(args[r], &runs[r]);
        labels[r] = st == KD_OK ? label_of(args[r], runs[r].folder) : NULL;
        if (st == KD_OK && !labels[r])
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", args[r]);
        views[r] = (report_run_view){.label = labels[r],
                                     .folder = runs[r].folder,
                                     .metrics = &runs[r].metrics,
                                     .job_json = runs[r].job_json.data,
                                     .job_problem = runs[r].job_problem,
                                     .losses = runs[r].losses.data,
                                     .facts = runs[r].facts,
                                     .n_facts = runs[r].n_facts};
    }
    report_text page = {0};
    if (st == KD_OK) {
        report_html_document(&page, kd_build_info(), n_runs, views);
        if (page.failed)
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory while writing the page", out_path);
    }
    if (st == KD_OK)
        st = write_page(out_path, &page);
    report_text_free(&page);
    char *absolute = st == KD_OK ? realpath(out_path, NULL) : NULL;
    if (st == KD_OK && !absolute)
        st = kd_error(KD_ERR_IO, "%s: %s", out_path, strerror(errno));
    if (st == KD_OK && print_path)
        printf("%s\n", absolute);
    else if (st == KD_OK)
        fprintf(stderr, "wrote %s\n", absolute);
    free(absolute);
    for (int r = 0; runs && labels && r < n_runs; r++) {
        free_run(&runs[r]);
        free(labels[r]);
    }
    free(runs);
    free(views);
    free(labels);
    return st;
}

int kd_command_report(int argc, char **argv)
{
    char **folders = calloc((size_t)argc + 1, sizeof *folders);
    if (!folders) {
        fprintf(stderr, "kdengine report: out of memory\n");
        return 1;
    }
    int n = 0;
    const char *out = NULL;
    bool print_path = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            free(folders);
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--open")) {
            print_path = true;
        } else if (argv[i][0] == '-') {
            if (!strcmp(argv[i], "--out"))
                fprintf(stderr, "kdengine report: --out needs a file\n%s", usage_text);
            else
                fprintf(stderr, "kdengine report: unknown option '%s'\n%s", argv[i], usage_text);
            free(folders);
            return 2;
        } else {
            folders[n++] = argv[i];
        }
    }
    if (n == 0) {
        fprintf(stderr, "kdengine report: no run folder given\n%s", usage_text);
        free(folders);
        return 2;
    }
    char *default_out = n == 1 ? path_in(folders[0], "report.html") : strdup("report.html");
    kd_status st = default_out || out ? KD_OK : kd_error(KD_ERR_NOMEM, "out of memory");
    if (st == KD_OK)
        st = make_report(n, folders, out ? out : default_out, print_path);
    if (st != KD_OK)
        fprintf(stderr, "kdengine report: %s\n", kd_last_error());
    free(default_out);
    free(folders);
    return st == KD_OK ? 0 : 1;
}
