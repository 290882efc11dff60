/* SGD update: torch.optim.SGD's single-tensor path, mirrored so f32
 * results round the same way. torch computes x.add(y, alpha=a) as one
 * fused multiply-add (its vectorised kernels use fmadd) and x.mul(a) as a
 * rounded product, with Python scalars first rounded to the tensor's type;
 * the kernels below do exactly that with fma()/fmaf(). */
#include "sgd_update.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_NAME_MAX 32

struct kd_sgd {
    kd_sgd_options opt;
    int n;
    kd_tensor **params;
    bool *no_decay;
    double *lr_scale; /* [n] */
    kd_tensor **buffers; /* NULL when momentum is 0 */
    kd_tensor *started;  /* u8 [n]; NULL when momentum is 0 */
    char (*state_names)[STATE_NAME_MAX];
};

/* Small tensors are not worth waking the thread team. */
#define SGD_PARALLEL_MIN 32768

#define DEFINE_SGD_UPDATE(NAME, T, FMA)                                                  \
    void NAME(int64_t n, T *restrict p, const T *restrict g, T *restrict buf,            \
              const kd_sgd_coeffs *c)                                                    \
    {                                                                                    \
        const bool decay = c->weight_decay != 0, nesterov = c->nesterov;                 \
        const T wd = (T)c->weight_decay, m = (T)c->momentum;                             \
        const T keep = (T)(1.0 - c->dampening), step = (T)-c->lr;                        \
        if (!buf) {                                                                      \
            _Pragma("omp parallel for simd if (n > SGD_PARALLEL_MIN) schedule(static)")  \
            for (int64_t i = 0; i < n; i++) {                                            \
                T d = decay ? FMA(p[i], wd, g[i]) : g[i];                                \
                p[i] = FMA(d, step, p[i]);                                               \
            }                                                                            \
        } else if (c->first) {                                                           \
            _Pragma("omp parallel for simd if (n > SGD_PARALLEL_MIN) schedule(static)")  \
            for (int64_t i = 0; i < n; i++) {                                            \
                T d = decay ? FMA(p[i], wd, g[i]) : g[i];                                \
                buf[i] = d;                                                              \
                T u = nesterov ? FMA(d, m, d) : d;                                       \
                p[i] = FMA(u, step, p[i]);                                               \
            }                                                                            \
        } else {                                                                         \
            _Pragma("omp parallel for simd if (n > SGD_PARALLEL_MIN) schedule(static)")  \
            for (int64_t i = 0; i < n; i++) {                                            \
                T d = decay ? FMA(p[i], wd, g[i]) : g[i];                                \
                T b = FMA(d, keep, buf[i] * m);                                          \
                buf[i] = b;                                                              \
                T u = nesterov ? FMA(b, m, d) : b;                                       \
                p[i] = FMA(u, step, p[i]);                                               \
            }                                                                            \
        }                                                                                \
    }

DEFINE_SGD_UPDATE(kd_sgd_update_f32, float, fmaf)
DEFINE_SGD_UPDATE(kd_sgd_update_f64, double, fma)

static kd_status check_options(const kd_sgd_options *o)
{
    if (!(o->momentum >= 0) || !isfinite(o->momentum))
        return kd_error(KD_ERR_INVALID, "sgd: momentum must be a finite value >= 0, got %g",
                        o->momentum);
    if (!(o->dampening >= 0 && o->dampening <= 1))
        return kd_error(KD_ERR_INVALID, "sgd: dampening must be in [0, 1], got %g",
                        o->dampening);
    if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
        return kd_error(KD_ERR_INVALID,
                        "sgd: weight_decay must be a finite value >= 0, got %g",
                        o->weight_decay);
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
        return kd_error(KD_ERR_INVALID,
                        "sgd: nesterov needs momentum > 0 and dampening 0 (got momentum "
                        "%g, dampening %g)",
                        o->momentum, o->dampening);
    return KD_OK;
}

static kd_status check_param(int i, const kd_tensor *p)
{
    if (!p)
        return kd_error(KD_ERR_INVALID, "sgd: parameter %d is NULL", i);
    if (p->dtype != KD_F32 && p->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "sgd: parameter %d is %s; f32 or f64 expected", i,
                        kd_dtype_name(p->dtype));
    if (p->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "sgd: parameter %d is not on the CPU", i);
    if (!kd_tensor_is_contiguous(p))
        return kd_error(KD_ERR_INVALID, "sgd: parameter %d is not contiguous", i);
    return KD_OK;
}

void kd_sgd_free(kd_sgd *s)
{
    if (!s)
        return;
    if (s->buffers)
        for (int i = 0; i < s->n; i++)
            kd_tensor_free(s->buffers[i]);
    kd_tensor_free(s->started);
    free(s->buffers);
    free(s->state_names);
    free(s->no_decay);
    free(s->lr_scale);
    free(s->params);
    free(s);
}

kd_status kd_sgd_new(const kd_sgd_options *o, int n, kd_tensor *const *params,
                     const bool *no_decay, kd_sgd **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "sgd: out is NULL");
    *out = NULL;
    if (!o)
        return kd_error(KD_ERR_INVALID, "sgd: options are NULL");
    if (n < 1 || !params)
        return kd_error(KD_ERR_INVALID, "sgd: no parameters to optimise (n = %d)", n);
    kd_status st = check_options(o);
    if (st != KD_OK)
        return st;
    for (int i = 0; i < n; i++)
        if ((st = check_param(i, params[i])) != KD_OK)
            return st;
    for (int i = 0; o->lr_scale && i < n; i++)
        if (!(o->lr_scale[i] >= 0) || !isfinite(o->lr_scale[i]))
            return kd_error(KD_ERR_INVALID, "sgd: parameter %d has lr scale %g; a finite value "
                            ">= 0 expected", i, o->lr_scale[i]);

    kd_sgd *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "sgd: out of memory");
    s->opt = *o;
    s->n = n;
    s->params = malloc((size_t)n * sizeof *s->params);
    s->no_decay = calloc((size_t)n, sizeof *s->no_decay);
    s->lr_scale = malloc((size_t)n * sizeof *s->lr_scale);
    if (!s->params || !s->no_decay || !s->lr_scale)
        goto nomem;
    for (int i = 0; i < n; i++)
        s->lr_scale[i] = o->lr_scale ? o->lr_scale[i] : 1.0;
    s->opt.lr_scale = NULL; /* the caller's array: read through s->lr_scale */
    memcpy(s->params, params, (size_t)n * sizeof *s->params);
    if (no_decay)
        memcpy(s->no_decay, no_decay, (size_t)n * sizeof *s->no_decay);
    /* kd_tensor_keep: the buffers are ours even if a scope is open. */
    if (o->momentum != 0) {
        s->buffers = calloc((size_t)n, sizeof *s->buffers);
        s->state_names = calloc((size_t)n + 1, sizeof *s->state_names);
        int64_t len = n;
        s->started = kd_tensor_keep(kd_tensor_zeros(KD_U8, KD_CPU, 1, &len));
        if (!s->buffers || !s->state_names || !s->started)
            goto nomem;
        for (int i = 0; i < n; i++) {
            s->buffers[i] = kd_tensor_keep(kd_tensor_zeros_like(params[i]));
            if (!s->buffers[i])
                goto nomem;
            snprintf(s->state_names[i], STATE_NAME_MAX, "momentum_buffer.%d", i);
        }
        snprintf(s->state_names[n], STATE_NAME_MAX, "momentum_started");
    }
    *out = s;
    return KD_OK;
nomem:
    kd_sgd_free(s);
    return kd_error(KD_ERR_NOMEM, "sgd: out of memory for %d parameters", n);
}

static kd_status check_grad(int i, const kd_tensor *p)
{
    const kd_tensor *g = p->grad;
    if (g->dtype != p->dtype || g->device != p->device || !kd_tensor_same_shape(g, p) ||
        !kd_tensor_is_contiguous(g)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "sgd: the gradient of parameter %d (%s %s) does not match it (%s %s)",
                        i, kd_dtype_name(g->dtype), kd_shape_str(g, a, sizeof a),
                        kd_dtype_name(p->dtype), kd_shape_str(p, b, sizeof b));
    }
    return KD_OK;
}

kd_status kd_sgd_step(kd_sgd *s, double lr)
{
    if (!s)
        return kd_error(KD_ERR_INVALID, "sgd: step on a NULL optimizer");
    if (!(lr >= 0) || !isfinite(lr))
        return kd_error(KD_ERR_INVALID, "sgd: learning rate must be a finite value >= 0, got %g",
                        lr);
    /* Every gradient is checked before any parameter moves. */
    for (int i = 0; i < s->n; i++) {
        if (!s->params[i]->grad)
            continue;
        kd_status st = check_grad(i, s->params[i]);
        if (st != KD_OK)
            return st;
    }
    uint8_t *started = s->started ? kd_tensor_data(s->started) : NULL;
    for (int i = 0; i < s->n; i++) {
        kd_tensor *p = s->params[i];
        if (!p->grad)
            continue;
        kd_sgd_coeffs c = {
            .lr = lr * s->lr_scale[i],
            .weight_decay = s->no_decay[i] ? 0.0 : s->opt.weight_decay,
            .momentum = s->opt.momentum,
            .dampening = s->opt.dampening,
            .nesterov = s->opt.nesterov,
            .first = started && !started[i],
        };
        int64_t n = kd_tensor_numel(p);
        void *buf = s->buffers ? kd_tensor_data(s->buffers[i]) : NULL;
        if (p->dtype == KD_F32)
            kd_sgd_update_f32(n, kd_tensor_data(p), kd_tensor_data(p->grad), buf, &c);
        else
            kd_sgd_update_f64(n, kd_tensor_data(p), kd_tensor_data(p->grad), buf, &c);
        if (started)
            started[i] = 1;
    }
    return KD_OK;
}

int kd_sgd_state_count(const kd_sgd *s)
{
    return s && s->buffers ? s->n + 1 : 0;
}

const char *kd_sgd_state_name(const kd_sgd *s, int i)
{
    if (i < 0 || i >= kd_sgd_state_count(s))
        return NULL;
    return s->state_names[i];
}

kd_tensor *kd_sgd_state_tensor(const kd_sgd *s, int i)
{
    if (i < 0 || i >= kd_sgd_state_count(s))
        return NULL;
    return i < s->n ? s->buffers[i] : s->started;
}
