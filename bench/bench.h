/* Shared by the C side of the benchmark: options, timing and the JSON lines
 * that bench/run joins with bench/torch_bench.py's. */
#ifndef KD_BENCH_H
#define KD_BENCH_H

#include <stdbool.h>

#include <kdengine/kdengine.h>

typedef struct bench_options {
    int threads;
    int warmup;       /* at least this many untimed runs... */
    double warmup_s;  /* ...and at least this long */
    int reps;         /* timed runs of a micro benchmark */
    int steps;        /* timed ResNet-20 steps */
    const char *only; /* run the workloads whose name contains this */
} bench_options;

double bench_now_s(void);
/* Sorts times in place. */
double bench_median(double *times, int n);
bool bench_selected(const bench_options *o, const char *workload);

/* {"side": "kdengine", "workload": ..., "median_ms": ..., "min_ms": ...,
 * "reps": n<extra_json>}; extra_json may be NULL. */
void bench_emit_summary(const char *workload, double median_s, double min_s, int reps,
                        const char *extra_json);
/* The same from the timings themselves; sorts times_s. */
void bench_emit_times(const char *workload, double *times_s, int n,
                      const char *extra_json);
/* The same line with "error": kd_last_error(). */
void bench_emit_error(const char *workload);
/* A "# " line; "\n" is added. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Caller-owned f32 tensors with N(0, std^2) elements. */
void bench_fill_normal(kd_tensor *t, kd_rng *rng, double std);
kd_tensor *bench_new_normal(kd_rng *rng, int ndim, const int64_t *shape, double std);

/* One repetition: runs the work and writes the seconds of each of its
 * phases (forward, backward, ...) to phase_s. */
typedef kd_status (*bench_rep_fn)(void *ctx, double *phase_s);
/* Warm-up (o->warmup runs and o->warmup_s seconds at least), then `reps`
 * timed runs: times[p * reps + i] is phase p of run i. */
kd_status bench_run_reps(const bench_options *o, int reps, bench_rep_fn rep, void *ctx,
                         int n_phases, double *times);

/* The ResNet-20 training step, whole and in parts (bench_resnet20.c). */
void bench_resnet20_step(const bench_options *o);
/* Each op of a ResNet-20 step alone, forward and backward, summed per kind
 * over the layers that use it (bench_resnet20_ops.c). */
void bench_resnet20_ops(const bench_options *o);

#endif
