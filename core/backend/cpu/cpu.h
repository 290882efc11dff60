/* The CPU kernels behind the ops: plain functions on raw contiguous
 * buffers with explicit dims. A dtype argument is KD_F32 or KD_F64 and
 * says what the void pointers hold; statistics are always double. The
 * fronts in core/ops/ have checked shapes and made inputs contiguous. */
#ifndef KD_CPU_BACKEND_H
#define KD_CPU_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "../../internal.h"
#include "../backend.h"

/* --- norm.c: x is read as [N, C, S] (S = product of the dims after C) --- */

/* Group norm over each (n, group) of G groups of Cg channels; layer norm
 * over the last dim is G = 1, S = 1. stats gets (mean, 1/std) per (n, g);
 * w and b hold C = G * Cg values. */
void kd_cpu_group_norm_forward(kd_dtype dt, const void *x, void *y, double *stats,
                               const void *w, const void *b, int64_t N, int64_t G, int64_t Cg,
                               int64_t S, double eps);
/* gx may be NULL. affine_sums, when not NULL, gets per channel the sums
 * of g * xhat (weight gradient) in [0, C) and of g (bias) in [C, 2C). */
kd_status kd_cpu_group_norm_backward(kd_dtype dt, const void *x, const void *g,
                                     const double *stats, const void *w, void *gx,
                                     double *affine_sums, int64_t N, int64_t G, int64_t Cg,
                                     int64_t S);
/* Channel norm (ConvNeXt's LayerNorm2d): statistics over C for each
 * (n, s); stats gets (mean, 1/std) per (n, s). */
void kd_cpu_channel_norm_forward(kd_dtype dt, const void *x, void *y, double *stats,
                                 const void *w, const void *b, int64_t N, int64_t C, int64_t S,
                                 double eps);
kd_status kd_cpu_channel_norm_backward(kd_dtype dt, const void *x, const void *g,
                                       const double *stats, const void *w, void *gx,
                                       double *affine_sums, int64_t N, int64_t C, int64_t S);
/* Batch norm: per channel mean and biased variance over N and S. */
void kd_cpu_batch_norm_stats(kd_dtype dt, const void *x, double *mean, double *var, int64_t N,
                             int64_t C, int64_t S);
/* y = (x - shift[c]) * scale[c] + bias[c] when g is NULL; else the input
 * gradient y = (g - k1[c] - (x - shift[c]) * k2[c]) * scale[c]. The
 * per-channel arrays are of dtype dt. */
void kd_cpu_batch_norm_apply(kd_dtype dt, const void *x, const void *g, void *y,
                             const void *shift, const void *scale, const void *bias,
                             const void *k1, const void *k2, int64_t N, int64_t C, int64_t S);
/* Per channel: sum of g (bias gradient) and of g * xhat (weight). */
void kd_cpu_batch_norm_grad_sums(kd_dtype dt, const void *x, const void *g, const double *mean,
                                 const double *rstd, double *gsum, double *gxhat_sum, int64_t N,
                                 int64_t C, int64_t S);

/* --- softmax.c: x is read as [outer, reduce, inner] --- */

/* y = softmax (or log_softmax) of x over `reduce`. */
void kd_cpu_softmax_forward(kd_dtype dt, const void *x, void *y, int64_t outer, int64_t reduce,
                            int64_t inner, bool log_out);
/* gx from the saved output y and its gradient g: softmax gx = y (g - sum
 * g y); log_softmax gx = g - exp(y) sum g. */
void kd_cpu_softmax_backward(kd_dtype dt, const void *y, const void *g, void *gx, int64_t outer,
                             int64_t reduce, int64_t inner, bool log_out);

/* --- reduce.c: x is read as [outer, reduce, inner], out as [outer, inner] --- */

/* out = scale * sum over reduce (1 for sum, 1/reduce for mean). */
void kd_cpu_reduce_sum(kd_dtype dt, const void *x, void *out, int64_t outer, int64_t reduce,
                       int64_t inner, double scale);
/* Rows of `reduce` (inner 1): var = sum of squared deviations / divisor,
 * and each row's mean. */
void kd_cpu_var_rows(kd_dtype dt, const void *x, void *var, void *mean, int64_t outer,
                     int64_t reduce, double divisor);
/* Max (min when is_min) and its first index; out or arg may be NULL. A
 * NaN beats any number, like torch. */
void kd_cpu_reduce_max(kd_dtype dt, const void *x, void *out, int64_t *arg, int64_t outer,
                       int64_t reduce, int64_t inner, bool is_min);
/* gx[o, arg[o, i], i] += g[o, i]; gx [outer, reduce, inner] zeroed before. */
void kd_cpu_extreme_backward(kd_dtype dt, void *gx, const void *g, const int64_t *arg,
                             int64_t outer, int64_t reduce, int64_t inner);

/* --- pool.c: x is [planes, h, w], y [planes, oh, ow] --- */

/* argmax (max pool; NULL when no gradient is needed) gets each output's
 * offset in its plane. */
kd_status kd_cpu_pool_forward(kd_dtype dt, const kd_pool_params *p, const void *x, void *y,
                              int32_t *argmax);
kd_status kd_cpu_pool_backward(kd_dtype dt, const kd_pool_params *p, const void *gy,
                               const int32_t *argmax, void *gx);

/* --- interpolate.c: x is [planes, h, w], y [planes, oh, ow] --- */

kd_status kd_cpu_interpolate_forward(kd_dtype dt, const kd_interp_params *p, const void *x,
                                     void *y);
/* gx = the gradient of the input, overwritten. */
kd_status kd_cpu_interpolate_backward(kd_dtype dt, const kd_interp_params *p, const void *gy,
                                      void *gx);

/* --- conv2d.c: x [N, Cin, H, W], weight [Cout, Cin/groups, kH, kW],
 * y [N, Cout, oH, oW]; the kernel family is chosen per problem --- */

/* y = conv(x, w) + bias (bias NULL: none); `training` tells oneDNN whether
 * a backward pass follows. */
kd_status kd_cpu_conv2d_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                const void *w, const void *bias, void *y, bool training);
/* gx = the gradient of the input, overwritten. */
kd_status kd_cpu_conv2d_backward_data(kd_dtype dt, const kd_conv2d_geom *g, const void *gy,
                                      const void *w, void *gx);
/* gw (and gbias unless NULL) = the gradients of weight and bias, overwritten. */
kd_status kd_cpu_conv2d_backward_weights(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                         const void *gy, void *gw, void *gbias);

/* --- dropout.c --- */

/* y = x * scale where draw i of rng (from its counter) is >= p, else 0;
 * mask (NULL when no gradient is needed) gets 1 for a kept element. */
void kd_cpu_dropout(kd_dtype dt, const void *x, void *y, uint8_t *mask, int64_t n,
                    const kd_rng *rng, float p, double scale);
/* gx = g * scale where mask is set, else 0. */
void kd_cpu_dropout_backward(kd_dtype dt, const void *g, void *gx, const uint8_t *mask,
                             int64_t n, double scale);
/* y[s, :] = x[s, :] * factor[s] over samples rows of `per` elements. */
void kd_cpu_scale_samples(kd_dtype dt, const void *x, void *y, const void *factor,
                          int64_t samples, int64_t per);

/* --- index.c --- */

/* index_select: out [outer, k, inner] = x [outer, size, inner] at rows
 * idx[k], copied a row of inner elements at a time. */
void kd_cpu_select_rows(void *out, const void *x, const int64_t *idx, int64_t outer,
                        int64_t size, int64_t k, int64_t inner, size_t elem_size);

/* gx[o, idx[i], :] += g[o, i, :], x read as [outer, size, inner] and g as
 * [outer, k, inner]. */
void kd_cpu_scatter_rows(kd_dtype dt, void *gx, const void *g, const int64_t *idx, int64_t outer,
                         int64_t size, int64_t k, int64_t inner);
/* out[i] = x[off[i]]. */
void kd_cpu_gather(kd_dtype dt, void *out, const void *x, const int64_t *off, int64_t n);
/* gx[off[i]] += g[i]; repeated offsets accumulate. */
void kd_cpu_scatter_add(kd_dtype dt, void *gx, const void *g, const int64_t *off, int64_t n);
/* out = mask ? value : a over shape[ndim]; a and out contiguous, the U8
 * mask read through broadcast strides ms. */
void kd_cpu_select(kd_dtype dt, void *out, const void *a, const uint8_t *mask, const int64_t *ms,
                   int ndim, const int64_t *shape, double value);

/* --- loss.c: logits and targets [n, c]; stats [n, 2] (row maximum m and
 * log sum exp(x - m)) --- */

/* Sum over rows of the label-smoothed (eps) cross-entropy. */
double kd_cpu_cross_entropy_forward(kd_dtype dt, const void *x, const int64_t *labels,
                                    double *stats, int64_t n, int64_t c, double eps);
/* gx = (softmax - smoothed one-hot) * scale. */
void kd_cpu_cross_entropy_backward(kd_dtype dt, const void *x, const int64_t *labels,
                                   const double *stats, void *gx, int64_t n, int64_t c,
                                   double eps, double scale);
/* Sum over rows of sum_j t_ij (lse_i - x_ij). */
double kd_cpu_soft_ce_forward(kd_dtype dt, const void *x, const void *t, double *stats,
                              int64_t n, int64_t c);
/* gx and gt (either may be NULL), times scale. */
void kd_cpu_soft_ce_backward(kd_dtype dt, const void *x, const void *t, const double *stats,
                             void *gx, void *gt, int64_t n, int64_t c, double scale);
/* Sum of t (log t - x) (exp(t) (t - x) for log targets) over n elements;
 * the pointwise values go to out unless it is NULL. */
double kd_cpu_kl_div_forward(kd_dtype dt, const void *x, const void *t, void *out, int64_t n,
                             bool log_target);
/* The gradient is gs everywhere, or pointwise gp when gp is not NULL; gx
 * and gt may be NULL. */
void kd_cpu_kl_div_backward(kd_dtype dt, const void *x, const void *t, const void *gp, double gs,
                            void *gx, void *gt, int64_t n, bool log_target);

/* --- similarity.c --- */

/* Cosine similarity of a and b ([outer, reduce, inner]) over reduce; inv
 * [2, outer * inner] gets 1 / the clamped norms of a, then of b. */
void kd_cpu_cosine_forward(kd_dtype dt, const void *a, const void *b, void *out, double *inv,
                           int64_t outer, int64_t reduce, int64_t inner, double eps);
/* ga and gb (either may be NULL) from the output cos and its gradient g. */
void kd_cpu_cosine_backward(kd_dtype dt, const void *a, const void *b, const void *cos,
                            const double *inv, const void *g, void *ga, void *gb, int64_t outer,
                            int64_t reduce, int64_t inner);
/* out [n, m] = Euclidean distances between the rows of a [n, d], b [m, d]. */
void kd_cpu_cdist_forward(kd_dtype dt, const void *a, const void *b, void *out, int64_t n,
                          int64_t m, int64_t d);
/* w = g / dist (0 where dist is 0), with its row sums [n] and column sums
 * [m]. */
void kd_cpu_cdist_weights(kd_dtype dt, const void *g, const void *dist, void *w, void *rowsum,
                          void *colsum, int64_t n, int64_t m);
/* From w and its sums: ga = rowsum a - W b, or with for_b gb = colsum b -
 * W^T a, written to out. */
void kd_cpu_cdist_input_grad(kd_dtype dt, bool for_b, const void *w, const void *a,
                             const void *b, const void *sums, void *out, int64_t n, int64_t m,
                             int64_t d);

/* --- attention.c: contiguous q, k, v, p (the probabilities [..., L, S])
 * and out [..., L, Dv] --- */

/* p = softmax(q k^T * scale + bias), out = p v. bias (may be NULL) is read
 * through broadcast strides over p's shape. */
kd_status kd_cpu_attention_forward(kd_dtype dt, const kd_attn_dims *ad, const void *q,
                                   const void *k, const void *v, const void *bias,
                                   const int64_t *bias_strides, double scale, void *p, void *out);
/* From p and the output gradient g: ds (the scores' gradient, always) and
 * gq, gk, gv (each may be NULL). */
kd_status kd_cpu_attention_backward(kd_dtype dt, const kd_attn_dims *ad, const void *q,
                                    const void *k, const void *v, const void *p, const void *g,
                                    double scale, void *ds, void *gq, void *gk, void *gv);

/* --- unary.c: n contiguous elements --- */

/* out = f(in); lo and hi are the op's scalars (kd_unary_op). */
void kd_cpu_unary_forward(kd_dtype dt, kd_unary_op op, void *out, const void *in, int64_t n,
                          double lo, double hi);
/* gx = gy * f'(x), with y = f(x) for the ops whose derivative uses it. */
void kd_cpu_unary_backward(kd_dtype dt, kd_unary_op op, void *gx, const void *gy, const void *x,
                           const void *y, int64_t n, double lo, double hi);

/* --- elementwise.c --- */

/* out = a op b over n elements of equal shapes. */
void kd_cpu_binary_same(kd_dtype dt, kd_binary_op op, void *out, const void *a, const void *b,
                        int64_t n);
/* out (contiguous, shape[ndim]) = a op b, a and b read through broadcast
 * strides sa and sb (0 on broadcast dims). */
void kd_cpu_binary_bcast(kd_dtype dt, kd_binary_op op, void *out, const void *a,
                         const int64_t *sa, const void *b, const int64_t *sb, int ndim,
                         const int64_t *shape);

/* --- matmul.c --- */

/* Row-major C = alpha op(A) op(B) + beta C on BLAS; ld* are row lengths
 * and every size fits an int (the caller checks). */
void kd_cpu_gemm(kd_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 double alpha, const void *a, int64_t lda, const void *b, int64_t ldb,
                 double beta, void *c, int64_t ldc);
/* out[j] += sum over rows of g[r, j] (linear's bias gradient). */
void kd_cpu_column_sums(kd_dtype dt, void *out, const void *g, int64_t rows, int64_t cols);
/* Every one of `rows` rows of out becomes a copy of row. */
void kd_cpu_repeat_row(void *out, const void *row, int64_t rows, size_t row_bytes);

/* --- copy.c --- */

/* dst = src elementwise; same shape and dtype, any strides, both CPU. */
void kd_cpu_copy_strided(const kd_tensor *dst, const kd_tensor *src);

/* --- cast.c --- */

/* d = s converted, n contiguous elements, for f32 <-> f64 and f32 <->
 * f16/bf16; false (nothing written) for other pairs. */
bool kd_cpu_convert(kd_dtype dst_dt, void *d, kd_dtype src_dt, const void *s, int64_t n);

#endif
