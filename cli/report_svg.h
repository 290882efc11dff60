/* One line chart as inline SVG: a series of every run over the steps, one
 * colour per run, axes with round ticks, a legend when runs are compared. */
#ifndef KD_CLI_REPORT_SVG_H
#define KD_CLI_REPORT_SVG_H

#include <stdint.h>

#include "report_text.h"

/* One run's points of the chart's series; n == 0 when the run did not log
 * it. Points are drawn in the order given (the file's). */
typedef struct report_curve {
    const char *run_label;
    const int64_t *steps;
    const double *values;
    int n;
} report_curve;

/* The colour of run i (#rrggbb), the same in every chart and the legend. */
const char *report_run_colour(int run);

/* Appends an <svg> element titled `series` with one <polyline
 * class="curve" data-series=SERIES data-run=I> of n points per run that
 * has points; runs with n == 0 appear only in the legend. */
void report_svg_chart(report_text *out, const char *series, int n_runs,
                      const report_curve *curves);

#endif
