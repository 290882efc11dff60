/* Timing, medians and the JSON lines of the benchmark's C side. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *times, int n)
{
    qsort(times, (size_t)n, sizeof *times, compare_doubles);
    return n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
}

bool bench_selected(const bench_options *o, const char *workload)
{
    return !o->only || strstr(workload, o->only);
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

void bench_emit_summary(const char *workload, double median_s, double min_s, int reps,
                        const char *extra_json)
{
    printf("{\"side\": \"kdengine\", \"workload\": ");
    print_json_string(workload);
    printf(", \"median_ms\": %.4f, \"min_ms\": %.4f, \"reps\": %d%s}\n", 1e3 * median_s,
           1e3 * min_s, reps, extra_json ? extra_json : "");
    fflush(stdout);
}

void bench_emit_times(const char *workload, double *times_s, int n,
                      const char *extra_json)
{
    double median = bench_median(times_s, n);
    bench_emit_summary(workload, median, times_s[0], n, extra_json);
}

void bench_emit_error(const char *workload)
{
    printf("{\"side\": \"kdengine\", \"workload\": ");
    print_json_string(workload);
    printf(", \"error\": ");
    print_json_string(kd_last_error());
    printf("}\n");
    fflush(stdout);
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

void bench_fill_normal(kd_tensor *t, kd_rng *rng, double std)
{
    float *p = kd_tensor_data(t);
    int64_t n = kd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(std * kd_rng_normal(rng));
}

kd_tensor *bench_new_normal(kd_rng *rng, int ndim, const int64_t *shape, double std)
{
    kd_tensor *t = kd_tensor_empty(KD_F32, KD_CPU, ndim, shape);
    if (t)
        bench_fill_normal(t, rng, std);
    return t;
}

kd_status bench_run_reps(const bench_options *o, int reps, bench_rep_fn rep, void *ctx,
                         int n_phases, double *times)
{
    double phase_s[8];
    if (n_phases > (int)(sizeof phase_s / sizeof phase_s[0]))
        return kd_error(KD_ERR_INVALID, "bench: %d phases, at most 8", n_phases);
    double warm_start = bench_now_s();
    for (int i = 0; i < o->warmup || bench_now_s() - warm_start < o->warmup_s; i++) {
        kd_status st = rep(ctx, phase_s);
        if (st != KD_OK)
            return st;
    }
    for (int i = 0; i < reps; i++) {
        kd_status st = rep(ctx, phase_s);
        if (st != KD_OK)
            return st;
        for (int p = 0; p < n_phases; p++)
            times[p * reps + i] = phase_s[p];
    }
    return KD_OK;
}
