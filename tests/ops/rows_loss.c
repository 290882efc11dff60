/* Op table rows: losses, similarities and attention. */
#include <math.h>
#include <stdint.h>

#include "../op_rows.h"

static kd_tensor *op_ce(kd_tensor *const *x) { return kd_cross_entropy(x[0], x[1], 0.0); }
static kd_tensor *op_ce_smooth(kd_tensor *const *x) { return kd_cross_entropy(x[0], x[1], 0.1); }
static kd_tensor *op_ce_large(kd_tensor *const *x) { return kd_cross_entropy(kd_mul_scalar(x[0], 30.0), x[1], 0.1); }
static kd_tensor *op_ce_soft(kd_tensor *const *x) { return kd_cross_entropy_soft(x[0], x[1]); }
/* Logits of about +-500, and a common offset of 3000 (its f32 rounding unit
 * is 2.4e-4): the log-sum-exp must not be rounded as one f32 number. */
static kd_tensor *logits_500(kd_tensor *x) { return kd_mul_scalar(x, 250.0); }
static kd_tensor *logits_offset(kd_tensor *x) { return kd_add_scalar(kd_mul_scalar(x, 4.0), 3000.0); }
static kd_tensor *op_ce_500(kd_tensor *const *x) { return kd_cross_entropy(logits_500(x[0]), x[1], 0.1); }
static kd_tensor *op_ce_offset(kd_tensor *const *x) { return kd_cross_entropy(logits_offset(x[0]), x[1], 0.1); }
static kd_tensor *op_ce_soft_500(kd_tensor *const *x) { return kd_cross_entropy_soft(logits_500(x[0]), x[1]); }
static kd_tensor *op_ce_soft_offset(kd_tensor *const *x) { return kd_cross_entropy_soft(logits_offset(x[0]), x[1]); }
static kd_tensor *op_kl_500(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(logits_500(x[0]), -1), x[1], false, KD_REDUCE_BATCHMEAN); }
static kd_tensor *op_kl_offset(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(logits_offset(x[0]), -1), x[1], false, KD_REDUCE_BATCHMEAN); }
static kd_tensor *op_kl_log_offset(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(logits_offset(x[0]), -1), kd_log_softmax(logits_offset(x[1]), -1), true, KD_REDUCE_BATCHMEAN); }
static kd_tensor *op_kl_mean(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(x[0], -1), x[1], false, KD_REDUCE_MEAN); }
static kd_tensor *op_kl_sum(kd_tensor *const *x) { return kd_kl_div(x[0], x[1], false, KD_REDUCE_SUM); }
static kd_tensor *op_kl_batchmean(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(x[0], -1), x[1], false, KD_REDUCE_BATCHMEAN); }
static kd_tensor *op_kl_none(kd_tensor *const *x) { return kd_kl_div(x[0], x[1], false, KD_REDUCE_NONE); }
static kd_tensor *op_kl_log_mean(kd_tensor *const *x) { return kd_kl_div(x[0], x[1], true, KD_REDUCE_MEAN); }
static kd_tensor *op_kl_log_sum(kd_tensor *const *x) { return kd_kl_div(x[0], x[1], true, KD_REDUCE_SUM); }
static kd_tensor *op_kl_log_batchmean(kd_tensor *const *x) { return kd_kl_div(kd_log_softmax(x[0], -1), kd_log_softmax(x[1], -1), true, KD_REDUCE_BATCHMEAN); }
static kd_tensor *op_kl_log_none(kd_tensor *const *x) { return kd_kl_div(x[0], x[1], true, KD_REDUCE_NONE); }
static kd_tensor *op_cos_d1(kd_tensor *const *x) { return kd_cosine_similarity(x[0], x[1], 1, 1e-8); }
static kd_tensor *op_cos_last(kd_tensor *const *x) { return kd_cosine_similarity(x[0], x[1], -1, 1e-8); }
static kd_tensor *op_cos_d0(kd_tensor *const *x) { return kd_cosine_similarity(x[0], x[1], 0, 1e-6); }
static kd_tensor *op_cdist(kd_tensor *const *x) { return kd_cdist(x[0], x[1]); }
/* Non-contiguous inputs: transposed or permuted views. */
static kd_tensor *op_ce_t(kd_tensor *const *x) { return kd_cross_entropy(kd_transpose(x[0], 0, 1), x[1], 0.1); }
static kd_tensor *op_ce_soft_t(kd_tensor *const *x) { return kd_cross_entropy_soft(kd_transpose(x[0], 0, 1), x[1]); }
static kd_tensor *op_kl_t(kd_tensor *const *x) { return kd_kl_div(kd_transpose(x[0], 0, 1), x[1], false, KD_REDUCE_SUM); }
static kd_tensor *op_cos_perm(kd_tensor *const *x) { return kd_cosine_similarity(kd_permute(x[0], (int[]){0, 3, 1, 2}), x[1], 1, 1e-8); }
static kd_tensor *op_cdist_t(kd_tensor *const *x) { return kd_cdist(kd_transpose(x[0], 0, 1), x[1]); }
static kd_tensor *op_attn_perm(kd_tensor *const *x)
{
    int heads_first[4] = {0, 2, 1, 3}; /* [B, L, H, D] -> [B, H, L, D] */
    return kd_scaled_dot_product_attention(kd_permute(x[0], heads_first), kd_permute(x[1], heads_first),
                                           kd_permute(x[2], heads_first), NULL, 0.5);
}
static kd_tensor *op_attn(kd_tensor *const *x)
{
    return kd_scaled_dot_product_attention(x[0], x[1], x[2], NULL, 0.5);
}
static kd_tensor *op_attn_bias(kd_tensor *const *x)
{
    return kd_scaled_dot_product_attention(x[0], x[1], x[2], x[3], 0.5);
}
/* An additive mask: -inf where the U8 input x[3] is set, except in column 0
 * so that no row is masked whole. */
static kd_tensor *op_attn_mask(kd_tensor *const *x)
{
    kd_tensor *m = x[3];
    kd_tensor *bias = kd_tensor_zeros(x[0]->dtype, KD_CPU, m->ndim, m->shape);
    if (!bias)
        return NULL;
    const uint8_t *md = kd_tensor_data(m);
    int64_t s = m->shape[m->ndim - 1];
    for (int64_t i = 0, n = kd_tensor_numel(m); i < n; i++) {
        if (!md[i] || i % s == 0)
            continue;
        if (bias->dtype == KD_F32)
            ((float *)kd_tensor_data(bias))[i] = -INFINITY;
        else
            ((double *)kd_tensor_data(bias))[i] = -INFINITY;
    }
    return kd_scaled_dot_product_attention(x[0], x[1], x[2], bias, 0.5);
}

#define ATTN(bias) "torch.softmax(x[0] @ x[1].transpose(-2, -1) * 0.5" bias ", -1) @ x[2]"
#define MASK(s) " + torch.zeros(x[3].shape).masked_fill(x[3] & (torch.arange(" #s ") > 0), float('-inf'))"

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define PROB(...) {KT_PROB, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define PROB_GRAD(...) {KT_PROB_GRAD, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define CONST(...) {KT_CONST, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define MASKIN(...) {KT_MASK, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define LABELS(n, c) {KT_LABELS, 1, {n}, c}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_loss[] = {
    {"cross_entropy", op_ce, "F.cross_entropy(x[0], x[1])", 2, {F(6, 5), LABELS(6, 5)}, 0, 0, 0},
    {"cross_entropy.smooth", op_ce_smooth, "F.cross_entropy(x[0], x[1], label_smoothing=0.1)", 2, {F(7, 9), LABELS(7, 9)}, 0, 0, 0},
    {"cross_entropy.smooth_large_logits", op_ce_large, "F.cross_entropy(x[0] * 30.0, x[1], label_smoothing=0.1)", 2, {F(4, 6), LABELS(4, 6)}, 0, 0, 0},
    {"cross_entropy.soft", op_ce_soft, "F.cross_entropy(x[0], x[1])", 2, {F(5, 7), PROB(5, 7)}, 0, 0, 0},
    {"cross_entropy.soft_target_grad", op_ce_soft, "F.cross_entropy(x[0], x[1])", 2, {F(4, 6), PROB_GRAD(4, 6)}, 0, 0, 0},
    {"cross_entropy.logits_500", op_ce_500, "F.cross_entropy(x[0] * 250.0, x[1], label_smoothing=0.1)", 2, {F(6, 10), LABELS(6, 10)}, 0, 0, 0},
    {"cross_entropy.offset_3000", op_ce_offset, "F.cross_entropy(x[0] * 4.0 + 3000.0, x[1], label_smoothing=0.1)", 2, {F(6, 10), LABELS(6, 10)}, 0, 0, 0},
    {"cross_entropy.soft_logits_500", op_ce_soft_500, "F.cross_entropy(x[0] * 250.0, x[1])", 2, {F(6, 10), PROB_GRAD(6, 10)}, 0, 0, 0},
    {"cross_entropy.soft_offset_3000", op_ce_soft_offset, "F.cross_entropy(x[0] * 4.0 + 3000.0, x[1])", 2, {F(6, 10), PROB_GRAD(6, 10)}, 0, 0, 0},
    {"kl_div.mean", op_kl_mean, "F.kl_div(torch.log_softmax(x[0], -1), x[1], reduction='sum') / x[0].numel()", 2, {F(4, 6), PROB(4, 6)}, 0, 0, 0},
    {"kl_div.sum", op_kl_sum, "F.kl_div(x[0], x[1], reduction='sum')", 2, {F(3, 5), PROB_GRAD(3, 5)}, 0, 0, 0},
    {"kl_div.batchmean", op_kl_batchmean, "F.kl_div(torch.log_softmax(x[0], -1), x[1], reduction='batchmean')", 2, {F(5, 8), PROB_GRAD(5, 8)}, 0, 0, 0},
    {"kl_div.none", op_kl_none, "F.kl_div(x[0], x[1], reduction='none')", 2, {F(2, 3, 4), PROB_GRAD(2, 3, 4)}, 0, 0, 0},
    {"kl_div.log_target_mean", op_kl_log_mean, "F.kl_div(x[0], x[1], reduction='sum', log_target=True) / x[0].numel()", 2, {F(4, 5), F(4, 5)}, 0, 0, 0},
    {"kl_div.log_target_sum", op_kl_log_sum, "F.kl_div(x[0], x[1], reduction='sum', log_target=True)", 2, {F(3, 6), F(3, 6)}, 0, 0, 0},
    {"kl_div.log_target_batchmean", op_kl_log_batchmean, "F.kl_div(torch.log_softmax(x[0], -1), torch.log_softmax(x[1], -1), reduction='batchmean', log_target=True)", 2, {F(5, 7), F(5, 7)}, 0, 0, 0},
    {"kl_div.logits_500", op_kl_500, "F.kl_div(torch.log_softmax(x[0] * 250.0, -1), x[1], reduction='batchmean')", 2, {F(6, 10), PROB(6, 10)}, 0, 0, 0},
    {"kl_div.offset_3000", op_kl_offset, "F.kl_div(torch.log_softmax(x[0] * 4.0 + 3000.0, -1), x[1], reduction='batchmean')", 2, {F(6, 10), PROB(6, 10)}, 0, 0, 0},
    {"kl_div.log_target_offset_3000", op_kl_log_offset, "F.kl_div(torch.log_softmax(x[0] * 4.0 + 3000.0, -1), torch.log_softmax(x[1] * 4.0 + 3000.0, -1), reduction='batchmean', log_target=True)", 2, {F(6, 10), F(6, 10)}, 0, 0, 0},
    {"kl_div.log_target_none", op_kl_log_none, "F.kl_div(x[0], x[1], reduction='none', log_target=True)", 2, {F(3, 4), F(3, 4)}, 0, 0, 0},
    {"cosine_similarity.dim1", op_cos_d1, "F.cosine_similarity(x[0], x[1], dim=1, eps=1e-8)", 2, {F(6, 10), F(6, 10)}, 0, 0, 0},
    {"cosine_similarity.channels", op_cos_d1, "F.cosine_similarity(x[0], x[1], dim=1, eps=1e-8)", 2, {F(2, 5, 3, 4), F(2, 5, 3, 4)}, 0, 0, 0},
    {"cosine_similarity.bcast_batch", op_cos_d1, "F.cosine_similarity(x[0], x[1], dim=1, eps=1e-8)", 2, {F(5, 7), F(1, 7)}, 0, 0, 0},
    {"cosine_similarity.bcast_rank", op_cos_last, "F.cosine_similarity(x[0], x[1], dim=-1, eps=1e-8)", 2, {F(3, 4, 6), F(4, 6)}, 0, 0, 0},
    {"cosine_similarity.dim0", op_cos_d0, "F.cosine_similarity(x[0], x[1], dim=0, eps=1e-6)", 2, {F(8, 3), F(8, 3)}, 0, 0, 0},
    {"cdist", op_cdist, "torch.cdist(x[0], x[1])", 2, {F(5, 3), F(4, 3)}, 0, 0, 0},
    {"cdist.wide", op_cdist, "torch.cdist(x[0], x[1])", 2, {F(7, 16), F(9, 16)}, 0, 0, 0},
    {"cdist.self", op_cdist, "torch.cdist(x[0], x[1])", 2, {F(1, 6), F(8, 6)}, 0, 0, 0},
    {"attention", op_attn, ATTN(""), 3, {F(2, 2, 5, 4), F(2, 2, 6, 4), F(2, 2, 6, 3)}, 0, 0, 0},
    {"attention.square", op_attn, ATTN(""), 3, {F(3, 4, 5), F(3, 4, 5), F(3, 4, 5)}, 0, 0, 0},
    {"attention.rel_bias", op_attn_bias, ATTN(" + x[3]"), 4, {F(2, 2, 5, 4), F(2, 2, 6, 4), F(2, 2, 6, 3), F(2, 5, 6)}, 0, 0, 0},
    {"attention.bias_full", op_attn_bias, ATTN(" + x[3]"), 4, {F(3, 4, 5), F(3, 7, 5), F(3, 7, 2), F(3, 4, 7)}, 0, 0, 0},
    {"attention.const_bias_row", op_attn_bias, ATTN(" + x[3]"), 4, {F(2, 3, 4), F(2, 5, 4), F(2, 5, 6), CONST(5)}, 0, 0, 0},
    {"attention.mask", op_attn_mask, ATTN(MASK(6)), 4, {F(2, 2, 5, 4), F(2, 2, 6, 4), F(2, 2, 6, 3), MASKIN(2, 1, 5, 6)}, 0, 0, 0},
    {"cross_entropy.transposed", op_ce_t, "F.cross_entropy(x[0].transpose(0, 1), x[1], label_smoothing=0.1)", 2, {F(5, 4), LABELS(4, 5)}, 0, 0, 0},
    {"cross_entropy.soft_transposed", op_ce_soft_t, "F.cross_entropy(x[0].transpose(0, 1), x[1])", 2, {F(6, 3), PROB_GRAD(3, 6)}, 0, 0, 0},
    {"kl_div.transposed", op_kl_t, "F.kl_div(x[0].transpose(0, 1), x[1], reduction='sum')", 2, {F(5, 3), PROB(3, 5)}, 0, 0, 0},
    {"cosine_similarity.permuted", op_cos_perm, "F.cosine_similarity(x[0].permute(0, 3, 1, 2), x[1], dim=1, eps=1e-8)", 2, {F(2, 3, 4, 5), F(2, 5, 3, 4)}, 0, 0, 0},
    {"cdist.transposed", op_cdist_t, "torch.cdist(x[0].transpose(0, 1), x[1])", 2, {F(4, 6), F(5, 4)}, 0, 0, 0},
    {"attention.permuted", op_attn_perm, "torch.softmax(x[0].permute(0, 2, 1, 3) @ x[1].permute(0, 2, 3, 1) * 0.5, -1) @ x[2].permute(0, 2, 1, 3)", 3, {F(2, 5, 2, 4), F(2, 6, 2, 4), F(2, 6, 2, 3)}, 0, 0, 0},
    {0},
};
