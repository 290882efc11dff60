/* kdengine: differentiable tensor ops.
 *
 * Every op returns a new tensor owned like any other (see tensor.h) or NULL
 * with kd_last_error() set; a NULL input yields NULL. When grad mode is on
 * and an input requires grad, the op records its backward. Float ops accept
 * f32 and f64 on the CPU (f64 is what the gradient checks run in); ops
 * marked [cuda] also run on CUDA tensors. Binary elementwise ops broadcast
 * like NumPy. Dims may be negative (counted from the end). */
#ifndef KDENGINE_OPS_H
#define KDENGINE_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/rng.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- elementwise, broadcasting [cuda] --- */
KD_API kd_tensor *kd_add(kd_tensor *a, kd_tensor *b);
KD_API kd_tensor *kd_sub(kd_tensor *a, kd_tensor *b);
KD_API kd_tensor *kd_mul(kd_tensor *a, kd_tensor *b);
KD_API kd_tensor *kd_div(kd_tensor *a, kd_tensor *b);
KD_API kd_tensor *kd_add_scalar(kd_tensor *a, double s);
KD_API kd_tensor *kd_mul_scalar(kd_tensor *a, double s);
KD_API kd_tensor *kd_pow_scalar(kd_tensor *a, double exponent);

/* --- elementwise unary [cuda] --- */
KD_API kd_tensor *kd_neg(kd_tensor *x);
KD_API kd_tensor *kd_exp(kd_tensor *x);
KD_API kd_tensor *kd_log(kd_tensor *x);
KD_API kd_tensor *kd_sqrt(kd_tensor *x);
KD_API kd_tensor *kd_abs(kd_tensor *x);
KD_API kd_tensor *kd_tanh(kd_tensor *x);
/* Pass -INFINITY or INFINITY for an open side. */
KD_API kd_tensor *kd_clamp(kd_tensor *x, double lo, double hi);
KD_API kd_tensor *kd_relu(kd_tensor *x);
KD_API kd_tensor *kd_relu6(kd_tensor *x);
KD_API kd_tensor *kd_gelu(kd_tensor *x);      /* erf form */
KD_API kd_tensor *kd_gelu_tanh(kd_tensor *x); /* tanh approximation */
KD_API kd_tensor *kd_silu(kd_tensor *x);
KD_API kd_tensor *kd_sigmoid(kd_tensor *x);
KD_API kd_tensor *kd_hardsigmoid(kd_tensor *x);
KD_API kd_tensor *kd_hardswish(kd_tensor *x);

/* --- reductions [cuda: sum, mean, max, min] --- */
/* ndims == 0 reduces every dim (torch's empty dim list); a dim listed twice
 * is an error. */
KD_API kd_tensor *kd_sum(kd_tensor *x, int ndims, const int *dims, bool keepdim);
KD_API kd_tensor *kd_mean(kd_tensor *x, int ndims, const int *dims, bool keepdim);
KD_API kd_tensor *kd_sum_all(kd_tensor *x);  /* shape [] */
KD_API kd_tensor *kd_mean_all(kd_tensor *x); /* shape [] */
/* Gradient flows to the (first) arg-extreme element. */
KD_API kd_tensor *kd_max(kd_tensor *x, int dim, bool keepdim);
KD_API kd_tensor *kd_min(kd_tensor *x, int dim, bool keepdim);
/* correction 1 = unbiased (torch's default), 0 = population. */
KD_API kd_tensor *kd_var(kd_tensor *x, int ndims, const int *dims, int correction,
                         bool keepdim);
/* Standardises each row of x [N, C] over its C values:
 * (x - mean) / (std + eps), std unbiased (C - 1 in the divisor), as logit
 * standardisation (Sun et al., CVPR 2024) z-scores logits before a
 * distillation loss; C >= 2. With gradient; a constant row gives zeros and
 * a finite gradient. */
KD_API kd_tensor *kd_zscore(kd_tensor *x, double eps);
/* I64 indices, no gradient. */
KD_API kd_tensor *kd_argmax(kd_tensor *x, int dim, bool keepdim);
KD_API kd_tensor *kd_softmax(kd_tensor *x, int dim);
KD_API kd_tensor *kd_log_softmax(kd_tensor *x, int dim);

/* --- linear algebra [cuda: matmul] --- */
/* a [..., M, K] x b [..., K, N]; batch dims broadcast; a 1-D operand is
 * not accepted (reshape it). */
KD_API kd_tensor *kd_matmul(kd_tensor *a, kd_tensor *b);
/* x [..., in], weight [out, in], bias [out] or NULL. */
KD_API kd_tensor *kd_linear(kd_tensor *x, kd_tensor *weight, kd_tensor *bias);

/* --- convolution and pooling (NCHW) --- */
typedef struct kd_conv2d_params {
    int stride[2], padding[2], dilation[2];
    int groups;
} kd_conv2d_params;
/* x [N, Cin, H, W], weight [Cout, Cin/groups, kH, kW], bias [Cout] or NULL. */
KD_API kd_tensor *kd_conv2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                            const kd_conv2d_params *p);
/* stride NULL = the kernel size; padding NULL = 0. */
KD_API kd_tensor *kd_max_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                                const int padding[2]);
KD_API kd_tensor *kd_avg_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                                const int padding[2], bool count_include_pad);
KD_API kd_tensor *kd_adaptive_avg_pool2d(kd_tensor *x, int out_h, int out_w);
/* Resizes x [N, C, H, W] to [N, C, out_h, out_w] as torch's F.interpolate
 * with size given and align_corners false: nearest (torch's "nearest",
 * index floor(o * H / out_h)), bilinear, bicubic (a = -0.75, borders
 * replicated). antialias (bilinear and bicubic only) is torch's
 * antialias=True: the filter widens by the scale when shrinking, bicubic
 * uses a = -0.5, and the window is cut at the border and renormalised, so
 * it differs from the plain modes even when enlarging (timm resizes ViT
 * position embeddings with it). */
typedef enum kd_interp_mode {
    KD_INTERP_NEAREST = 0,
    KD_INTERP_BILINEAR,
    KD_INTERP_BICUBIC
} kd_interp_mode;
KD_API kd_tensor *kd_interpolate(kd_tensor *x, int out_h, int out_w, kd_interp_mode mode,
                                 bool antialias);

/* --- normalisation --- */
/* x [N, C] or [N, C, H, W]. In training, batch statistics normalise and
 * running_mean/var (may be NULL) are updated in place with momentum
 * (new = (1-m)*old + m*batch, var unbiased), as torch does. In eval, the
 * running statistics normalise. weight/bias may be NULL. */
KD_API kd_tensor *kd_batch_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                                kd_tensor *running_mean, kd_tensor *running_var,
                                bool training, double momentum, double eps);
/* Synchronised batch norm (data parallel, as torch's SyncBatchNorm): while
 * a reducer is set on this thread, kd_batch_norm in training mode takes its
 * statistics over every process's batch. reduce(values, n, ctx) must sum
 * values[0..n) over the processes in place; each process calls it in the
 * same order (they run the same layers): twice in the forward (the counts
 * and per-channel sums, then the squared deviations from the global mean),
 * once in the backward (the per-channel sums of g and g * xhat). Running
 * statistics take the global mean and unbiased variance; weight and bias
 * gradients stay this process's share (the host averages them with the
 * other parameters'). A recorded node keeps the reducer it ran with.
 * {NULL, NULL} (the start) is one process. Returns the previous reducer. */
typedef struct kd_batch_norm_sync {
    kd_status (*reduce)(double *values, int64_t n, void *ctx);
    void *ctx;
} kd_batch_norm_sync;
KD_API kd_batch_norm_sync kd_set_batch_norm_sync(kd_batch_norm_sync sync);
/* Over the last dim; weight/bias [C] or NULL. */
KD_API kd_tensor *kd_layer_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                                double eps);
/* Over the channels of NCHW (ConvNeXt's LayerNorm2d). */
KD_API kd_tensor *kd_layer_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                                  double eps);
KD_API kd_tensor *kd_group_norm(kd_tensor *x, int groups, kd_tensor *weight,
                                kd_tensor *bias, double eps);

/* --- randomness (identity when !training or p == 0) --- */
/* Zeroes elements with probability p, scales the rest by 1/(1-p). The mask
 * is drawn from rng, which advances. */
KD_API kd_tensor *kd_dropout(kd_tensor *x, double p, bool training, kd_rng *rng);
/* Drops whole samples (dim 0) with probability p (stochastic depth). */
KD_API kd_tensor *kd_drop_path(kd_tensor *x, double p, bool training, kd_rng *rng);

/* --- shape (views where the layout allows) --- */
/* One entry of shape may be -1. */
KD_API kd_tensor *kd_reshape(kd_tensor *x, int ndim, const int64_t *shape);
KD_API kd_tensor *kd_flatten(kd_tensor *x, int start_dim, int end_dim);
KD_API kd_tensor *kd_unsqueeze(kd_tensor *x, int dim);
KD_API kd_tensor *kd_squeeze(kd_tensor *x, int dim);
KD_API kd_tensor *kd_permute(kd_tensor *x, const int *dims);
KD_API kd_tensor *kd_transpose(kd_tensor *x, int dim0, int dim1);
KD_API kd_tensor *kd_contiguous(kd_tensor *x);
/* Elements start, start+step, ... < end along dim (a view). */
KD_API kd_tensor *kd_slice(kd_tensor *x, int dim, int64_t start, int64_t end,
                           int64_t step);
KD_API kd_tensor *kd_concat(int n, kd_tensor *const *xs, int dim);
/* x read as `shape` without copying (torch's expand, NumPy's broadcast_to):
 * shape may have more dims than x (new ones in front); a dim of x of size 1
 * repeats to any size (stride 0), -1 keeps x's size. The gradient sums
 * over the repeats. A view: consumers copy it as they need (a ViT's class
 * token expanded over the batch, then concatenated). */
KD_API kd_tensor *kd_expand(kd_tensor *x, int ndim, const int64_t *shape);
/* Splits dim into n parts of the given sizes; writes n tensors to out. */
KD_API kd_status kd_split(kd_tensor *x, int dim, int n, const int64_t *sizes,
                          kd_tensor **out);
/* Cyclic shift by shifts[i] along dims[i] (Swin's shifted windows). */
KD_API kd_tensor *kd_roll(kd_tensor *x, int n, const int64_t *shifts, const int *dims);
/* pads holds (before, after) pairs from the last dim backwards, as F.pad. */
KD_API kd_tensor *kd_pad(kd_tensor *x, int npairs, const int64_t *pads, double value);
/* index: I64, 1-D. */
KD_API kd_tensor *kd_index_select(kd_tensor *x, int dim, kd_tensor *index);
/* index: I64, same ndim as x, as torch.gather. */
KD_API kd_tensor *kd_gather(kd_tensor *x, int dim, kd_tensor *index);
/* mask: U8, broadcastable to x; where mask != 0 the output is value. */
KD_API kd_tensor *kd_masked_fill(kd_tensor *x, kd_tensor *mask, double value);
/* Float conversion f32 <-> f64 (and to/from f16/bf16 storage), with grad. */
KD_API kd_tensor *kd_cast(kd_tensor *x, kd_dtype dtype);

/* --- losses and distances --- */
typedef enum kd_reduction {
    KD_REDUCE_MEAN = 0,
    KD_REDUCE_SUM,
    KD_REDUCE_BATCHMEAN, /* sum / N, for KL divergence */
    KD_REDUCE_NONE
} kd_reduction;
/* logits [N, C], labels I64 [N]; mean over N. label_smoothing in [0, 1]
 * as torch: (1 - s) * nll + s * mean over classes of -log p. */
KD_API kd_tensor *kd_cross_entropy(kd_tensor *logits, kd_tensor *labels,
                                   double label_smoothing);
/* logits [N, C], target probabilities [N, C]; mean over N. */
KD_API kd_tensor *kd_cross_entropy_soft(kd_tensor *logits, kd_tensor *target);
/* torch's F.kl_div: input holds log-probabilities; target probabilities
 * (or log-probabilities with log_target), same shape as input. */
KD_API kd_tensor *kd_kl_div(kd_tensor *input, kd_tensor *target, bool log_target,
                            kd_reduction reduction);
/* As torch 1.13: each norm is clamped to eps separately. a and b
 * broadcast. */
KD_API kd_tensor *kd_cosine_similarity(kd_tensor *a, kd_tensor *b, int dim,
                                       double eps);
/* a [N, D], b [M, D] -> [N, M] Euclidean distances; the gradient at a zero
 * distance is zero. */
KD_API kd_tensor *kd_cdist(kd_tensor *a, kd_tensor *b);
/* q [..., L, D], k [..., S, D], v [..., S, Dv] with the same batch dims;
 * bias broadcastable to [..., L, S] or NULL (-inf entries mask);
 * softmax(q k^T * scale + bias) v. */
KD_API kd_tensor *kd_scaled_dot_product_attention(kd_tensor *q, kd_tensor *k,
                                                  kd_tensor *v, kd_tensor *bias,
                                                  double scale);

#ifdef __cplusplus
}
#endif
#endif
