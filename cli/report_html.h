/* The report as one self-contained HTML page: inline CSS and SVG, no
 * script, nothing fetched. Sections: the runs (one colour each), the
 * metrics lines that were skipped, the curves (accuracy, losses, learning
 * rate, throughput; one chart per series, every run in it), each run's
 * job and what its folder records about where and how it ran. */
#ifndef KD_CLI_REPORT_HTML_H
#define KD_CLI_REPORT_HTML_H

#include "report_metrics.h"
#include "report_text.h"

/* One line of a run's environment table. */
typedef struct report_fact {
    const char *key;
    char *value; /* owned by whoever made the fact */
} report_fact;

/* What the page shows of one run. */
typedef struct report_run_view {
    const char *label;  /* the folder as given on the command line */
    const char *folder; /* its absolute path */
    const report_metrics *metrics;
    const char *job_json;    /* job.json pretty-printed, or NULL */
    const char *job_problem; /* why job_json is NULL */
    const char *losses;      /* "losses[0] ce, losses[1] kd x0.5": the series' names */
    const report_fact *facts;
    int n_facts;
} report_run_view;

/* Appends the whole page; `made_by` names the kdengine build writing it. */
void report_html_document(report_text *out, const char *made_by, int n_runs,
                          const report_run_view *runs);

#endif
