/* One line chart as inline SVG. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "report_svg.h"

enum {
    WIDTH = 560,
    PLOT_HEIGHT = 300, /* without the legend */
    LEFT = 72,
    RIGHT = 20,
    TOP = 34,
    BOTTOM = 46,
    LEGEND_ROW = 18,
    MAX_MARKERS = 40 /* points get a dot (and a tooltip) up to this many */
};

/* Tableau's ten colours: distinct, and readable on white. */
static const char *const palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                      "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

const char *report_run_colour(int run)
{
    return palette[run % (int)(sizeof palette / sizeof palette[0])];
}

typedef struct range {
    double lo, hi;
} range;

/* A 1, 2 or 5 times a power of ten, giving about `target` intervals. */
static double tick_step(double span, int target)
{
    double raw = span / target;
    double magnitude = pow(10, floor(log10(raw)));
    double f = raw / magnitude;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * magnitude;
}

/* A flat range is widened so the line sits in the middle of the chart. */
static range widened(range r, double pad_fraction)
{
    double span = r.hi - r.lo;
    if (span <= 1e-12 * fmax(fabs(r.lo), fabs(r.hi))) {
        double pad = r.lo != 0 ? fabs(r.lo) * 0.1 : 1;
        return (range){r.lo - pad, r.hi + pad};
    }
    return (range){r.lo - span * pad_fraction, r.hi + span * pad_fraction};
}

static void data_ranges(int n_runs, const report_curve *curves, range *x, range *y)
{
    bool first = true;
    for (int r = 0; r < n_runs; r++)
        for (int i = 0; i < curves[r].n; i++) {
            double sx = (double)curves[r].steps[i], vy = curves[r].values[i];
            if (first) {
                *x = (range){sx, sx};
                *y = (range){vy, vy};
                first = false;
            }
            x->lo = fmin(x->lo, sx);
            x->hi = fmax(x->hi, sx);
            y->lo = fmin(y->lo, vy);
            y->hi = fmax(y->hi, vy);
        }
    *x = widened(*x, 0);
    *y = widened(*y, 0.05);
}

static double to_px(double v, range r, double from, double length)
{
    return from + (v - r.lo) / (r.hi - r.lo) * length;
}

static void tick_label(char *buf, size_t size, double v, double step)
{
    snprintf(buf, size, "%.6g", fabs(v) < step * 1e-9 ? 0.0 : v);
}

static void axes(report_text *out, range x, range y, int plot_w, int plot_h)
{
    report_text_printf(out, "<rect class=\"plot\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/>\n",
                       LEFT, TOP, plot_w, plot_h);
    double step = tick_step(y.hi - y.lo, 5);
    for (double k = ceil(y.lo / step); k * step <= y.hi; k++) {
        double v = k * step, py = to_px(v, y, TOP + plot_h, -plot_h);
        char label[32];
        tick_label(label, sizeof label, v, step);
        report_text_printf(out, "<line class=\"grid\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" "
                           "y2=\"%.2f\"/><text class=\"tick\" x=\"%d\" y=\"%.2f\" "
                           "text-anchor=\"end\">%s</text>\n", LEFT, py, LEFT + plot_w, py,
                           LEFT - 6, py + 4, label);
    }
    step = fmax(1, tick_step(x.hi - x.lo, 6)); /* steps are whole */
    for (double k = ceil(x.lo / step); k * step <= x.hi; k++) {
        double v = k * step, px = to_px(v, x, LEFT, plot_w);
        char label[32];
        tick_label(label, sizeof label, v, step);
        report_text_printf(out, "<line class=\"grid\" x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" "
                           "y2=\"%d\"/><text class=\"tick\" x=\"%.2f\" y=\"%d\" "
                           "text-anchor=\"middle\">%s</text>\n", px, TOP, px, TOP + plot_h,
                           px, TOP + plot_h + 16, label);
    }
    report_text_printf(out, "<text class=\"axis\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">"
                       "step</text>\n", LEFT + plot_w / 2, TOP + plot_h + 34);
}

static void curve(report_text *out, const char *series, int run, const report_curve *c,
                  range x, range y, int plot_w, int plot_h)
{
    const char *colour = report_run_colour(run);
    report_text_append(out, "<polyline class=\"curve\" data-series=\"");
    report_text_escaped(out, series);
    report_text_printf(out, "\" data-run=\"%d\" stroke=\"%s\" points=\"", run, colour);
    for (int i = 0; i < c->n; i++)
        report_text_printf(out, "%s%.2f,%.2f", i ? " " : "",
                           to_px((double)c->steps[i], x, LEFT, plot_w),
                           to_px(c->values[i], y, TOP + plot_h, -plot_h));
    report_text_append(out, "\"/>\n");
    for (int i = 0; c->n <= MAX_MARKERS && i < c->n; i++) {
        report_text_printf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"><title>",
                           to_px((double)c->steps[i], x, LEFT, plot_w),
                           to_px(c->values[i], y, TOP + plot_h, -plot_h), colour);
        report_text_escaped(out, c->run_label);
        report_text_printf(out, ": step %lld, %.6g</title></circle>\n", (long long)c->steps[i],
                           c->values[i]);
    }
}

static void legend(report_text *out, int n_runs, const report_curve *curves, int plot_h)
{
    for (int r = 0; r < n_runs; r++) {
        int row_y = TOP + plot_h + BOTTOM + r * LEGEND_ROW;
        report_text_printf(out, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" "
                           "fill=\"%s\"/><text class=\"legend\" x=\"%d\" y=\"%d\">",
                           LEFT, row_y + 4, report_run_colour(r), LEFT + 20, row_y + 9);
        report_text_escaped(out, curves[r].run_label);
        if (curves[r].n == 0)
            report_text_append(out, " (not logged)");
        report_text_append(out, "</text>\n");
    }
}

void report_svg_chart(report_text *out, const char *series, int n_runs,
                      const report_curve *curves)
{
    int plot_w = WIDTH - LEFT - RIGHT, plot_h = PLOT_HEIGHT - TOP - BOTTOM;
    int height = PLOT_HEIGHT + (n_runs > 1 ? n_runs * LEGEND_ROW + 4 : 0);
    range x = {0, 1}, y = {0, 1};
    data_ranges(n_runs, curves, &x, &y);
    report_text_printf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" "
                       "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n<title>",
                       WIDTH, height, WIDTH, height);
    report_text_escaped(out, series);
    report_text_printf(out, "</title>\n<text class=\"heading\" x=\"%d\" y=\"20\">", LEFT);
    report_text_escaped(out, series);
    report_text_append(out, "</text>\n");
    axes(out, x, y, plot_w, plot_h);
    for (int r = 0; r < n_runs; r++)
        if (curves[r].n > 0)
            curve(out, series, r, &curves[r], x, y, plot_w, plot_h);
    if (n_runs > 1)
        legend(out, n_runs, curves, plot_h);
    report_text_append(out, "</svg>\n");
}
