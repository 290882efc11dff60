/* Synchronised batch norm (kd_set_batch_norm_sync) with two threads
 * standing in for two processes: each runs kd_batch_norm in training mode
 * on its share of one batch (3 and 4 of 7 samples, float64), its reducer
 * summing both threads' values through a barrier. Each share's output,
 * the input gradients of the summed loss, the summed weight and bias
 * gradients and every share's running statistics must equal one batch
 * norm over the whole batch. No MPI here, so builds without it test the
 * op too; tests/test_dist runs it across real processes. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "harness.h"

enum { N = 7, C = 3, H = 2, W = 2, SHARES = 2 };
static const int64_t split[SHARES + 1] = {0, 3, N};

/* The threads' meeting point: each puts its values in its slot, then both
 * read the sum, in share order so both get the same bits. */
typedef struct meeting {
    pthread_barrier_t barrier;
    double *slot[SHARES];
    int calls[SHARES];
} meeting;

typedef struct share {
    meeting *m;
    int index;
    kd_tensor *x, *weight, *bias, *running_mean, *running_var, *probe; /* probe: dL/dy */
    kd_tensor *y;                                                      /* kept */
    kd_status st;
    char error[512];
} share;

typedef struct reducer_ctx {
    meeting *m;
    int index;
} reducer_ctx;

static kd_status sum_over_threads(double *values, int64_t n, void *p)
{
    reducer_ctx *r = p;
    meeting *m = r->m;
    m->slot[r->index] = values;
    m->calls[r->index]++;
    pthread_barrier_wait(&m->barrier);
    double sum[64];
    if (n > 64)
        return kd_error(KD_ERR_INVALID, "test reducer: %lld values (at most 64)", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        sum[i] = 0;
        for (int s = 0; s < SHARES; s++)
            sum[i] += m->slot[s][i];
    }
    pthread_barrier_wait(&m->barrier); /* both have read before either writes */
    memcpy(values, sum, (size_t)n * sizeof *sum);
    return KD_OK;
}

/* A caller-owned copy of rows [from, to) of t (all of it: 0, 0), a leaf
 * that requires grad or not. */
static kd_tensor *rows(kd_tensor *t, int64_t from, int64_t to, bool grad)
{
    kd_scope_begin();
    kd_tensor *v = to > from ? kd_slice(t, 0, from, to, 1) : t;
    kd_tensor *c = v ? kd_tensor_empty(v->dtype, KD_CPU, v->ndim, v->shape) : NULL;
    c = c && kd_tensor_copy_(c, v) == KD_OK ? kd_tensor_keep(c) : NULL;
    kd_scope_end();
    if (c)
        kd_tensor_set_requires_grad(c, grad);
    return c;
}

/* sum(y * probe) over this share, backward, as one process of the job. */
static void *run_share(void *p)
{
    share *s = p;
    reducer_ctx ctx = {s->m, s->index};
    kd_set_batch_norm_sync((kd_batch_norm_sync){sum_over_threads, &ctx});
    kd_scope_begin();
    kd_tensor *y = kd_batch_norm(s->x, s->weight, s->bias, s->running_mean, s->running_var, true,
                                 0.1, 1e-5);
    kd_tensor *loss = y ? kd_sum_all(kd_mul(y, s->probe)) : NULL;
    s->st = loss ? kd_backward(loss) : kd_last_status();
    if (s->st == KD_OK && !(s->y = rows(y, 0, 0, false)))
        s->st = kd_last_status();
    if (s->st != KD_OK)
        snprintf(s->error, sizeof s->error, "%s", kd_last_error());
    kd_scope_end();
    kd_set_batch_norm_sync((kd_batch_norm_sync){NULL, NULL});
    return NULL;
}

static void test_two_shares(void)
{
    kd_rng rng = kd_rng_make(21, 0, 0);
    const int64_t shape[4] = {N, C, H, W}, cs = C;
    kd_tensor *x = kt_uniform(KD_F64, 4, shape, &rng, -2, 3);
    kd_tensor *probe = kt_uniform(KD_F64, 4, shape, &rng, -1, 1);
    kd_tensor *weight = kt_uniform(KD_F64, 1, &cs, &rng, 0.5, 2);
    kd_tensor *bias = kt_uniform(KD_F64, 1, &cs, &rng, -1, 1);
    kd_tensor *rm = kt_uniform(KD_F64, 1, &cs, &rng, -1, 1);
    kd_tensor *rv = kt_uniform(KD_F64, 1, &cs, &rng, 0.5, 2);

    /* the whole batch in one call, no reducer */
    share whole = {.x = rows(x, 0, 0, true), .weight = rows(weight, 0, 0, true),
                   .bias = rows(bias, 0, 0, true), .running_mean = rows(rm, 0, 0, false),
                   .running_var = rows(rv, 0, 0, false), .probe = probe};
    kd_scope_begin();
    kd_tensor *y = kd_batch_norm(whole.x, whole.weight, whole.bias, whole.running_mean,
                                 whole.running_var, true, 0.1, 1e-5);
    kd_status st = y ? kd_backward(kd_sum_all(kd_mul(y, probe))) : kd_last_status();
    whole.y = st == KD_OK ? rows(y, 0, 0, false) : NULL;
    kd_scope_end();
    if (!kt_check(whole.y != NULL, "one batch norm over the whole batch", "%s", kd_last_error()))
        return;

    meeting m = {0};
    pthread_barrier_init(&m.barrier, NULL, SHARES);
    share part[SHARES];
    pthread_t threads[SHARES];
    for (int s = 0; s < SHARES; s++) {
        part[s] = (share){.m = &m, .index = s, .x = rows(x, split[s], split[s + 1], true),
                          .weight = rows(weight, 0, 0, true), .bias = rows(bias, 0, 0, true),
                          .running_mean = rows(rm, 0, 0, false),
                          .running_var = rows(rv, 0, 0, false),
                          .probe = rows(probe, split[s], split[s + 1], false)};
        pthread_create(&threads[s], NULL, run_share, &part[s]);
    }
    for (int s = 0; s < SHARES; s++)
        pthread_join(threads[s], NULL);
    pthread_barrier_destroy(&m.barrier);
    bool ran = true;
    for (int s = 0; s < SHARES; s++)
        ran &= kt_check(part[s].st == KD_OK, "a share's forward and backward", "share %d: %s", s,
                        part[s].error);
    if (!ran)
        return;
    kt_check(m.calls[0] == 3 && m.calls[1] == 3,
             "each share reduces twice in the forward, once in the backward",
             "calls %d and %d", m.calls[0], m.calls[1]);

    double worst = 0;
    const char *what = "";
    kd_scope_begin();
    for (int s = 0; s < SHARES; s++) {
        kd_tensor *want_y = kd_slice(whole.y, 0, split[s], split[s + 1], 1);
        kd_tensor *want_gx = kd_slice(whole.x->grad, 0, split[s], split[s + 1], 1);
        const kd_tensor *got[4] = {part[s].y, part[s].x->grad, part[s].running_mean,
                                   part[s].running_var};
        const kd_tensor *want[4] = {want_y, want_gx, whole.running_mean, whole.running_var};
        const char *names[4] = {"output", "input gradient", "running_mean", "running_var"};
        for (int k = 0; k < 4; k++) {
            double e = kt_rel_error(got[k], want[k]);
            if (e > worst) {
                worst = e;
                what = names[k];
            }
        }
    }
    /* the host averages (here: sums) the shares' affine gradients */
    kd_tensor *gw = kd_add(part[0].weight->grad, part[1].weight->grad);
    kd_tensor *gb = kd_add(part[0].bias->grad, part[1].bias->grad);
    double ew = kt_rel_error(gw, whole.weight->grad), eb = kt_rel_error(gb, whole.bias->grad);
    if (ew > worst || eb > worst) {
        worst = ew > eb ? ew : eb;
        what = ew > eb ? "weight gradient" : "bias gradient";
    }
    kd_scope_end();
    kt_check(worst <= 1e-12,
             "2 synchronised shares (3 + 4 samples) equal one batch norm over all 7 (float64): "
             "outputs, input and affine gradients, running statistics",
             "relative error %.3g (%s)", worst, what);

    kd_tensor *all[] = {x, probe, weight, bias, rm, rv, whole.x, whole.weight, whole.bias,
                        whole.running_mean, whole.running_var, whole.y};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        kd_tensor_free(all[i]);
    for (int s = 0; s < SHARES; s++) {
        kd_tensor *mine[] = {part[s].x, part[s].weight, part[s].bias, part[s].running_mean,
                             part[s].running_var, part[s].probe, part[s].y};
        for (size_t i = 0; i < sizeof mine / sizeof *mine; i++)
            kd_tensor_free(mine[i]);
    }
}

/* A share whose reducer fails: the op says so and returns NULL. */
static kd_status failing(double *values, int64_t n, void *ctx)
{
    (void)values, (void)n, (void)ctx;
    return kd_error(KD_ERR_IO, "the other process went away");
}

static void test_reducer_error(void)
{
    kd_rng rng = kd_rng_make(4, 0, 0);
    const int64_t shape[2] = {5, 3};
    kd_scope_begin();
    kd_tensor *x = kt_uniform(KD_F64, 2, shape, &rng, -1, 1);
    kd_batch_norm_sync before = kd_set_batch_norm_sync((kd_batch_norm_sync){failing, NULL});
    kd_tensor *y = kd_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
    kd_set_batch_norm_sync(before);
    kt_check(!y && strstr(kd_last_error(), "batch_norm: synchronising the statistics") &&
                 strstr(kd_last_error(), "went away"),
             "a failing reducer fails the op with both messages", "%s",
             y ? "it returned a tensor" : kd_last_error());
    kd_scope_end();
}

int main(void)
{
    test_two_shares();
    test_reducer_error();
    return kt_finish();
}
