/* The report as one self-contained HTML page. */
#include <stdlib.h>
#include <string.h>

#include "report_html.h"
#include "report_svg.h"

static const char style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}"
    "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:32px}"
    "table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;"
    "border-bottom:1px solid #eee;vertical-align:top}"
    ".swatch{display:inline-block;width:14px;height:14px;border-radius:2px}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}"
    "svg.chart{border:1px solid #ddd;background:#fff}"
    "svg .plot{fill:#fafafa;stroke:#999}svg .grid{stroke:#e4e4e4}"
    "svg .curve{fill:none;stroke-width:1.6}"
    "svg text{font:11px system-ui,sans-serif;fill:#444}"
    "svg .heading{font-size:13px;font-weight:600;fill:#222}"
    "pre{background:#f6f6f6;padding:10px;overflow:auto;max-height:480px}"
    ".warnings li{font-family:monospace}";

/* The chart sections, in page order; a series goes to the first section
 * whose test its name passes. */
typedef enum section { ACCURACY, LOSSES, LEARNING_RATE, THROUGHPUT, N_SECTIONS } section;
static const char *const section_titles[N_SECTIONS] = {"Accuracy", "Losses", "Learning rate",
                                                       "Throughput"};

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

static section section_of(const char *series)
{
    if (strstr(series, "top1") || strstr(series, "top5"))
        return ACCURACY;
    if (ends_with(series, ".lr"))
        return LEARNING_RATE;
    if (strstr(series, "img_per_s"))
        return THROUGHPUT;
    return LOSSES;
}

static void runs_table(report_text *out, int n_runs, const report_run_view *runs)
{
    report_text_append(out, "<h2>Runs</h2>\n<table>\n<tr><th></th><th>run</th><th>folder</th>"
                            "<th>losses</th><th>lines plotted</th><th>last step</th>"
                            "<th>skipped lines</th>"
                            "</tr>\n");
    for (int r = 0; r < n_runs; r++) {
        const report_metrics *m = runs[r].metrics;
        long long last = -1;
        for (int i = 0; i < m->n_series; i++)
            if (m->series[i].n > 0 && m->series[i].steps[m->series[i].n - 1] > last)
                last = m->series[i].steps[m->series[i].n - 1];
        report_text_printf(out, "<tr><td><span class=\"swatch\" style=\"background:%s\">"
                           "</span></td><td>", report_run_colour(r));
        report_text_escaped(out, runs[r].label);
        report_text_append(out, "</td><td>");
        report_text_escaped(out, runs[r].folder);
        report_text_append(out, "</td><td>");
        report_text_escaped(out, runs[r].losses);
        report_text_printf(out, "</td><td>%lld</td><td>", (long long)m->lines_used);
        if (last >= 0)
            report_text_printf(out, "%lld", last);
        report_text_printf(out, "</td><td>%d</td></tr>\n", m->n_warnings);
    }
    report_text_append(out, "</table>\n");
}

static void warnings_list(report_text *out, int n_runs, const report_run_view *runs)
{
    int total = 0;
    for (int r = 0; r < n_runs; r++)
        total += runs[r].metrics->n_warnings;
    if (total == 0)
        return;
    report_text_printf(out, "<h2>Skipped metrics lines (%d)</h2>\n<ul class=\"warnings\">\n",
                       total);
    for (int r = 0; r < n_runs; r++)
        for (int i = 0; i < runs[r].metrics->n_warnings; i++) {
            report_text_append(out, "<li>");
            report_text_escaped(out, runs[r].metrics->warnings[i]);
            report_text_append(out, "</li>\n");
        }
    report_text_append(out, "</ul>\n");
}

/* Whether an earlier run than r has the series `name`: each series gets
 * one chart, placed where it first appears. */
static bool seen_before(const report_run_view *runs, int r, const char *name)
{
    for (int q = 0; q < r; q++)
        if (report_metrics_find(runs[q].metrics, name))
            return true;
    return false;
}

static void chart(report_text *out, const char *name, int n_runs, const report_run_view *runs,
                  report_curve *curves)
{
    for (int r = 0; r < n_runs; r++) {
        const report_series *s = report_metrics_find(runs[r].metrics, name);
        curves[r] = (report_curve){.run_label = runs[r].label};
        if (s) {
            curves[r].steps = s->steps;
            curves[r].values = s->values;
            curves[r].n = s->n;
        }
    }
    report_svg_chart(out, name, n_runs, curves);
}

static void charts(report_text *out, int n_runs, const report_run_view *runs)
{
    report_curve *curves = calloc((size_t)n_runs, sizeof *curves);
    if (!curves) {
        out->failed = true;
        return;
    }
    for (int sec = 0; sec < N_SECTIONS; sec++) {
        bool opened = false;
        for (int r = 0; r < n_runs; r++)
            for (int i = 0; i < runs[r].metrics->n_series; i++) {
                const char *name = runs[r].metrics->series[i].name;
                if ((int)section_of(name) != sec || seen_before(runs, r, name))
                    continue;
                if (!opened)
                    report_text_printf(out, "<h2>%s</h2>\n<div class=\"charts\">\n",
                                       section_titles[sec]);
                opened = true;
                chart(out, name, n_runs, runs, curves);
            }
        if (opened)
            report_text_append(out, "</div>\n");
    }
    free(curves);
}

static void jobs(report_text *out, int n_runs, const report_run_view *runs)
{
    report_text_append(out, "<h2>Jobs</h2>\n");
    for (int r = 0; r < n_runs; r++) {
        report_text_printf(out, "<h3><span class=\"swatch\" style=\"background:%s\"></span> ",
                           report_run_colour(r));
        report_text_escaped(out, runs[r].label);
        report_text_append(out, "/job.json</h3>\n");
        if (runs[r].job_json) {
            report_text_append(out, "<pre>");
            report_text_escaped(out, runs[r].job_json);
            report_text_append(out, "</pre>\n");
        } else {
            report_text_append(out, "<p>");
            report_text_escaped(out, runs[r].job_problem);
            report_text_append(out, "</p>\n");
        }
    }
}

static void environments(report_text *out, int n_runs, const report_run_view *runs)
{
    report_text_append(out, "<h2>Environment</h2>\n");
    for (int r = 0; r < n_runs; r++) {
        report_text_printf(out, "<h3><span class=\"swatch\" style=\"background:%s\"></span> ",
                           report_run_colour(r));
        report_text_escaped(out, runs[r].label);
        report_text_append(out, "</h3>\n<table>\n");
        for (int i = 0; i < runs[r].n_facts; i++) {
            report_text_append(out, "<tr><th>");
            report_text_escaped(out, runs[r].facts[i].key);
            report_text_append(out, "</th><td>");
            report_text_escaped(out, runs[r].facts[i].value);
            report_text_append(out, "</td></tr>\n");
        }
        report_text_append(out, "</table>\n");
    }
}

void report_html_document(report_text *out, const char *made_by, int n_runs,
                          const report_run_view *runs)
{
    report_text_append(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                            "<meta charset=\"utf-8\"/>\n<title>kdengine report: ");
    for (int r = 0; r < n_runs; r++) {
        report_text_append(out, r ? ", " : "");
        report_text_escaped(out, runs[r].label);
    }
    report_text_printf(out, "</title>\n<style>%s</style>\n</head>\n<body>\n"
                            "<h1>kdengine report</h1>\n", style);
    runs_table(out, n_runs, runs);
    warnings_list(out, n_runs, runs);
    charts(out, n_runs, runs);
    jobs(out, n_runs, runs);
    environments(out, n_runs, runs);
    report_text_append(out, "<p>Written by ");
    report_text_escaped(out, made_by);
    report_text_append(out, ".</p>\n</body>\n</html>\n");
}
