/* What a model plugin owns, listed by state_dict name: a growable list of
 * named tensors (parameters and buffers, in state_dict order) with the
 * seeded initialisers the ports share, and conv + batch-norm layers that
 * fold for a frozen teacher. Compiled into each model plugin that uses it
 * (mobilenet, convnext, swin, beit); nothing here is part of the SDK. */
#ifndef KD_MODELS_MODEL_TENSORS_H
#define KD_MODELS_MODEL_TENSORS_H

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

typedef struct model_tensors {
    const char *owner; /* the model's name, for messages */
    uint64_t seed;     /* create()'s seed: every initialiser keys on it */
    kd_dtype dtype;    /* of parameters and buffers: the job's */
    kd_named_tensor *items;
    int n, cap;
} model_tensors;

/* A zero tensor owned by the list, named by the format (a timm state_dict
 * name), requiring grad when flags has KD_TENSOR_PARAM. NULL with an
 * error set when out of memory. */
kd_tensor *mt_add(model_tensors *mt, uint32_t flags, kd_dtype dtype, int ndim,
                  const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Frees every tensor and name. */
void mt_free(model_tensors *mt);

/* Initialisers. Each tensor draws from its own Philox stream, keyed by
 * its position in the list, so a weight does not depend on how many draws
 * the tensors before it took; the draws are float32 whatever the dtype, so
 * a float64 model starts from exactly the float32 one's weights. */
kd_status mt_init_normal(const model_tensors *mt, kd_tensor *t, int index, double std);
kd_status mt_init_uniform(const model_tensors *mt, kd_tensor *t, int index, double bound);

/* Batch norm with its five state_dict entries (prefix.weight, .bias,
 * .running_mean, .running_var, .num_batches_tracked), eps 1e-5, momentum
 * 0.1, as torch's defaults. */
typedef struct bn_layer {
    kd_tensor *weight, *bias, *running_mean, *running_var, *num_batches_tracked;
} bn_layer;

/* Weight 1, bias 0, statistics 0/1. */
kd_status mt_add_bn(model_tensors *mt, bn_layer *b, const char *prefix, int channels);
/* Counts the call in num_batches_tracked in training, as torch does. */
kd_tensor *bn_forward(kd_tensor *x, const bn_layer *b, bool training);

/* A convolution, optionally with its bias, whose eval-mode batch norm can
 * be folded in once the model is frozen. */
typedef struct conv_layer {
    kd_tensor *weight, *bias; /* bias may be NULL */
    kd_conv2d_params p;
    kd_tensor *folded_weight, *folded_bias; /* after conv_fold */
} conv_layer;

/* weight [cout, cin/groups, k, k] (name "<prefix>.weight") drawn from
 * N(0, std), and a zero bias "<prefix>.bias" when `bias`; symmetric
 * padding on both sides. */
kd_status mt_add_conv(model_tensors *mt, conv_layer *c, const char *prefix, int cin, int cout,
                      int k, int stride, int padding, int groups, bool bias, double std);
kd_tensor *conv_forward(kd_tensor *x, const conv_layer *c);
/* conv then batch norm; the folded convolution when frozen and in eval. */
kd_tensor *conv_bn_forward(kd_tensor *x, const conv_layer *c, const bn_layer *b,
                           bool training);
/* Folds the eval-mode batch norm into the convolution (W s, beta - mean s
 * with s = gamma / sqrt(var + eps)); run with grad mode off, in a scope. */
kd_status conv_fold(conv_layer *c, const bn_layer *b);
void conv_free_folded(conv_layer *c);

#endif
