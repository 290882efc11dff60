/* A run's metrics.jsonl read into named series for the report.
 *
 * The runner writes one JSON object per line (core/train/runner.c): "train"
 * lines (lr, loss, loss_avg, img_per_s, each loss's weighted value under
 * "terms" and every named term under "loss_terms"), "eval" lines (top1,
 * top5, loss), a closing "summary", and a "run" record (run_record.h:
 * build and machine) each time the run started or resumed; a file from
 * before the run records has none. Every number of a train or eval
 * line becomes a point (step, value) of the series named by its path,
 * "train.loss", "train.loss_terms.losses[1].tckd", "eval.top1", so a field
 * a later runner adds (a teacher's top-1) is plotted without a change here.
 *
 * A line that cannot be used (a killed run's truncated last line, text
 * that is not JSON, NaN or inf, no "type" or "step") is skipped with a
 * warning naming file:line; only an unreadable file is an error. */
#ifndef KD_CLI_REPORT_METRICS_H
#define KD_CLI_REPORT_METRICS_H

#include <stdint.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

typedef struct report_series {
    char *name;     /* "train.loss", "eval.top1", ... */
    int64_t *steps; /* the optimizer step of each point, in file order */
    double *values;
    int n, cap;
} report_series;

typedef struct report_metrics {
    report_series *series; /* in order of first appearance */
    int n_series, cap_series;
    json_t *summary; /* the last "summary" line, or NULL */
    json_t *run;     /* the first "run" record, or NULL */
    int n_starts;    /* "run" records: the start and each resume */
    char **warnings; /* "PATH:LINE: what; line skipped", one per problem */
    int n_warnings, cap_warnings;
    int64_t lines_used; /* train and eval lines plotted */
} report_metrics;

/* Reads the metrics file at path into *m (zeroed first); the series and
 * warnings are m's, freed with report_metrics_free (also after an error).
 * Fails only when the file cannot be read or memory runs out. */
kd_status report_metrics_read(const char *path, report_metrics *m);
/* The series called name, or NULL. */
const report_series *report_metrics_find(const report_metrics *m, const char *name);
void report_metrics_free(report_metrics *m);

#endif
