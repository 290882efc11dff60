/* Test plugin "mlp": flatten, linear, ReLU, linear. A model without batch
 * norm, so a batch split into micro-batches has the same mean gradient
 * (tests/test_grad_steps: accumulation against one large batch). Weights
 * uniform in +-1/sqrt(fan_in) from the seed; biases no-decay. */
#include <math.h>
#include <stdlib.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

typedef struct mlp {
    kd_tensor *w1, *b1, *w2, *b2;
    kd_named_tensor list[4];
    kd_tap_info taps[2];
} mlp;

static void mlp_destroy(void *self)
{
    mlp *m = self;
    if (!m)
        return;
    kd_tensor_free(m->w1);
    kd_tensor_free(m->b1);
    kd_tensor_free(m->w2);
    kd_tensor_free(m->b2);
    free(m);
}

/* A caller-owned tensor of `dtype`, uniform in [-bound, bound). */
static kd_tensor *uniform(kd_dtype dtype, int ndim, const int64_t *shape, double bound,
                          kd_rng *rng)
{
    kd_tensor *t = kd_tensor_keep(kd_tensor_empty(dtype, KD_CPU, ndim, shape));
    if (!t)
        return NULL;
    int64_t n = kd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = (2.0 * kd_rng_uniform(rng) - 1.0) * bound;
        if (dtype == KD_F64)
            ((double *)kd_tensor_data(t))[i] = v;
        else
            ((float *)kd_tensor_data(t))[i] = (float)v;
    }
    kd_tensor_set_requires_grad(t, true);
    return t;
}

static kd_status mlp_create(const kd_create_args *args, void **self)
{
    int64_t in = kd_params_integer(args->params, "in_features");
    int64_t hidden = kd_params_integer(args->params, "hidden");
    int64_t classes = kd_params_integer(args->params, "num_classes");
    mlp *m = calloc(1, sizeof *m);
    if (!m)
        return kd_error(KD_ERR_NOMEM, "mlp: out of memory");
    kd_rng rng = kd_rng_make(args->seed, 0, 0);
    double b1 = 1.0 / sqrt((double)in), b2 = 1.0 / sqrt((double)hidden);
    m->w1 = uniform(args->dtype, 2, (int64_t[]){hidden, in}, b1, &rng);
    m->b1 = uniform(args->dtype, 1, &hidden, b1, &rng);
    m->w2 = uniform(args->dtype, 2, (int64_t[]){classes, hidden}, b2, &rng);
    m->b2 = uniform(args->dtype, 1, &classes, b2, &rng);
    if (!m->w1 || !m->b1 || !m->w2 || !m->b2) {
        mlp_destroy(m);
        return kd_error(KD_ERR_NOMEM, "mlp: out of memory for its weights");
    }
    m->list[0] = (kd_named_tensor){"fc1.weight", m->w1, KD_TENSOR_PARAM};
    m->list[1] = (kd_named_tensor){"fc1.bias", m->b1, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY};
    m->list[2] = (kd_named_tensor){"fc2.weight", m->w2, KD_TENSOR_PARAM};
    m->list[3] = (kd_named_tensor){"fc2.bias", m->b2, KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY};
    m->taps[0] = (kd_tap_info){"pre_logits", (int)hidden, 1, KD_LAYOUT_NC, 0};
    m->taps[1] = (kd_tap_info){"logits", (int)classes, 1, KD_LAYOUT_NC, 0};
    *self = m;
    return KD_OK;
}

static kd_status mlp_tensors(void *self, kd_tensor_list *out)
{
    mlp *m = self;
    KD_LIST_SET(out, m->list, 4);
    return KD_OK;
}

static kd_status mlp_taps(void *self, kd_tap_list *out)
{
    mlp *m = self;
    KD_LIST_SET(out, m->taps, 2);
    return KD_OK;
}

static kd_status mlp_forward(void *self, const kd_forward_args *args)
{
    mlp *m = self;
    kd_tensor *h = kd_relu(kd_linear(kd_flatten(args->input, 1, -1), m->w1, m->b1));
    kd_tensor *logits = kd_linear(h, m->w2, m->b2);
    if (!logits)
        return kd_error_wrap(kd_last_status(), "mlp forward");
    args->taps[0] = h;
    args->taps[1] = logits;
    return KD_OK;
}

static const kd_model_vtable mlp_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = mlp_create,
    .destroy = mlp_destroy,
    .tensors = mlp_tensors,
    .taps = mlp_taps,
    .forward = mlp_forward,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_MODEL, "mlp", &mlp_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "mlp", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
