/* Op table rows: reductions (sum, mean, var, max, min, argmax), row z-scores and
 * softmax. */
#include "../op_rows.h"


static kd_tensor *op_sum_d0(kd_tensor *const *x) { return kd_sum(x[0], 1, (int[]){0}, false); }
static kd_tensor *op_sum_d1_keep(kd_tensor *const *x) { return kd_sum(x[0], 1, (int[]){1}, true); }
static kd_tensor *op_sum_last(kd_tensor *const *x) { return kd_sum(x[0], 1, (int[]){-1}, false); }
static kd_tensor *op_sum_d02(kd_tensor *const *x) { return kd_sum(x[0], 2, (int[]){0, 2}, false); }
static kd_tensor *op_sum_d23_keep(kd_tensor *const *x) { return kd_sum(x[0], 2, (int[]){-1, 2}, true); }
static kd_tensor *op_sum_d013(kd_tensor *const *x) { return kd_sum(x[0], 3, (int[]){3, 0, 1}, false); }
static kd_tensor *op_sum_one(kd_tensor *const *x) { return kd_sum(x[0], 1, (int[]){1}, false); }
static kd_tensor *op_sum_all(kd_tensor *const *x) { return kd_sum_all(x[0]); }
static kd_tensor *op_mean_d0(kd_tensor *const *x) { return kd_mean(x[0], 1, (int[]){0}, false); }
static kd_tensor *op_mean_d1(kd_tensor *const *x) { return kd_mean(x[0], 1, (int[]){1}, false); }
static kd_tensor *op_mean_hw_keep(kd_tensor *const *x) { return kd_mean(x[0], 2, (int[]){2, 3}, true); }
static kd_tensor *op_mean_nhw(kd_tensor *const *x) { return kd_mean(x[0], 3, (int[]){0, 2, 3}, false); }
static kd_tensor *op_mean_all(kd_tensor *const *x) { return kd_mean_all(x[0]); }
static kd_tensor *op_max_d0(kd_tensor *const *x) { return kd_max(x[0], 0, false); }
static kd_tensor *op_max_d1_keep(kd_tensor *const *x) { return kd_max(x[0], 1, true); }
static kd_tensor *op_max_last(kd_tensor *const *x) { return kd_max(x[0], -1, false); }
static kd_tensor *op_min_d1(kd_tensor *const *x) { return kd_min(x[0], 1, false); }
static kd_tensor *op_min_last_keep(kd_tensor *const *x) { return kd_min(x[0], -1, true); }
static kd_tensor *op_var_last(kd_tensor *const *x) { return kd_var(x[0], 1, (int[]){-1}, 1, false); }
static kd_tensor *op_var_d0_pop(kd_tensor *const *x) { return kd_var(x[0], 1, (int[]){0}, 0, false); }
static kd_tensor *op_var_d1_keep(kd_tensor *const *x) { return kd_var(x[0], 1, (int[]){1}, 1, true); }
static kd_tensor *op_var_nhw(kd_tensor *const *x) { return kd_var(x[0], 3, (int[]){0, 2, 3}, 0, false); }
static kd_tensor *op_var_hw_keep(kd_tensor *const *x) { return kd_var(x[0], 2, (int[]){2, -1}, 1, true); }
static kd_tensor *op_zscore(kd_tensor *const *x) { return kd_zscore(x[0], 1e-7); }
static kd_tensor *op_zscore_plain(kd_tensor *const *x) { return kd_zscore(x[0], 0); }
static kd_tensor *op_argmax_d1(kd_tensor *const *x) { return kd_argmax(x[0], 1, false); }
static kd_tensor *op_argmax_last_keep(kd_tensor *const *x) { return kd_argmax(x[0], -1, true); }
static kd_tensor *op_softmax_last(kd_tensor *const *x) { return kd_softmax(x[0], -1); }
static kd_tensor *op_softmax_d0(kd_tensor *const *x) { return kd_softmax(x[0], 0); }
static kd_tensor *op_softmax_d1(kd_tensor *const *x) { return kd_softmax(x[0], 1); }
static kd_tensor *op_log_softmax_last(kd_tensor *const *x) { return kd_log_softmax(x[0], -1); }
static kd_tensor *op_log_softmax_d1(kd_tensor *const *x) { return kd_log_softmax(x[0], 1); }
static kd_tensor *op_softmax_large(kd_tensor *const *x) { return kd_softmax(kd_mul_scalar(x[0], 40.0), -1); }
static kd_tensor *op_log_softmax_large(kd_tensor *const *x) { return kd_log_softmax(kd_mul_scalar(x[0], 40.0), 1); }
/* Logits of about +-500, and a common offset of 3000 (its f32 rounding unit
 * is 2.4e-4): the log-sum-exp must not be rounded as one f32 number. */
static kd_tensor *op_log_softmax_500(kd_tensor *const *x) { return kd_log_softmax(kd_mul_scalar(x[0], 250.0), -1); }
static kd_tensor *op_log_softmax_500_d1(kd_tensor *const *x) { return kd_log_softmax(kd_mul_scalar(x[0], 250.0), 1); }
static kd_tensor *op_softmax_offset(kd_tensor *const *x) { return kd_softmax(kd_add_scalar(kd_mul_scalar(x[0], 4.0), 3000.0), -1); }
static kd_tensor *op_log_softmax_offset(kd_tensor *const *x) { return kd_log_softmax(kd_add_scalar(kd_mul_scalar(x[0], 4.0), 3000.0), -1); }
static kd_tensor *op_log_softmax_offset_d1(kd_tensor *const *x) { return kd_log_softmax(kd_add_scalar(kd_mul_scalar(x[0], 4.0), 3000.0), 1); }
/* Non-contiguous inputs: transposed or permuted views. */
static kd_tensor *op_sum_t(kd_tensor *const *x) { return kd_sum(kd_transpose(x[0], 0, 1), 1, (int[]){1}, false); }
static kd_tensor *op_mean_perm(kd_tensor *const *x) { return kd_mean(kd_permute(x[0], (int[]){0, 2, 3, 1}), 2, (int[]){1, 2}, true); }
static kd_tensor *op_max_t(kd_tensor *const *x) { return kd_max(kd_transpose(x[0], 0, 1), -1, false); }
static kd_tensor *op_var_t(kd_tensor *const *x) { return kd_var(kd_transpose(x[0], 1, 2), 1, (int[]){1}, 1, false); }
static kd_tensor *op_softmax_t(kd_tensor *const *x) { return kd_softmax(kd_transpose(x[0], 0, 1), -1); }
static kd_tensor *op_log_softmax_perm(kd_tensor *const *x) { return kd_log_softmax(kd_permute(x[0], (int[]){0, 2, 3, 1}), -1); }

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_reduce[] = {
    {"sum.dim0", op_sum_d0, "x[0].sum(dim=0)", 1, {F(4, 5, 3)}, 0, 0, 0},
    {"sum.dim1_keepdim", op_sum_d1_keep, "x[0].sum(dim=1, keepdim=True)", 1, {F(4, 5, 3)}, 0, 0, 0},
    {"sum.last", op_sum_last, "x[0].sum(dim=-1)", 1, {F(4, 5, 7)}, 0, 0, 0},
    {"sum.dims02", op_sum_d02, "x[0].sum(dim=(0, 2))", 1, {F(3, 4, 5)}, 0, 0, 0},
    {"sum.dims23_neg_keepdim", op_sum_d23_keep, "x[0].sum(dim=(-1, 2), keepdim=True)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"sum.dims013", op_sum_d013, "x[0].sum(dim=(3, 0, 1))", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"sum.size1_dim", op_sum_one, "x[0].sum(dim=1)", 1, {F(4, 1, 6)}, 0, 0, 0},
    {"sum_all", op_sum_all, "x[0].sum()", 1, {F(3, 4, 5)}, 0, 0, 0},
    {"mean.dim0", op_mean_d0, "x[0].mean(dim=0)", 1, {F(6, 5)}, 0, 0, 0},
    {"mean.dim1", op_mean_d1, "x[0].mean(dim=1)", 1, {F(3, 7, 4)}, 0, 0, 0},
    {"mean.hw_keepdim", op_mean_hw_keep, "x[0].mean(dim=(2, 3), keepdim=True)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"mean.nhw", op_mean_nhw, "x[0].mean(dim=(0, 2, 3))", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"mean_all", op_mean_all, "x[0].mean()", 1, {F(4, 3, 5)}, 0, 0, 0},
    {"max.dim0", op_max_d0, "x[0].max(dim=0)[0]", 1, {F(5, 6)}, 0, 0, 0},
    {"max.dim1_keepdim", op_max_d1_keep, "x[0].max(dim=1, keepdim=True)[0]", 1, {F(3, 7, 4)}, 0, 0, 0},
    {"max.last", op_max_last, "x[0].max(dim=-1)[0]", 1, {F(3, 4, 9)}, 0, 0, 0},
    {"min.dim1", op_min_d1, "x[0].min(dim=1)[0]", 1, {F(3, 7, 4)}, 0, 0, 0},
    {"min.last_keepdim", op_min_last_keep, "x[0].min(dim=-1, keepdim=True)[0]", 1, {F(4, 6)}, 0, 0, 0},
    {"var.last", op_var_last, "x[0].var(dim=-1)", 1, {F(4, 9)}, 0, 0, 0},
    {"zscore.rows", op_zscore,
     "(x[0] - x[0].mean(1, keepdim=True)) / (x[0].std(1, keepdim=True) + 1e-7)", 1,
     {F(5, 10)}, 0, 0, 0},
    {"zscore.no_eps", op_zscore_plain,
     "(x[0] - x[0].mean(1, keepdim=True)) / x[0].std(1, keepdim=True)", 1, {F(4, 3)}, 0, 0, 0},
    {"var.dim0_population", op_var_d0_pop, "torch.var(x[0], dim=0, correction=0)", 1, {F(6, 5)}, 0, 0, 0},
    {"var.dim1_keepdim", op_var_d1_keep, "torch.var(x[0], dim=1, correction=1, keepdim=True)", 1, {F(3, 7, 4)}, 0, 0, 0},
    {"var.nhw", op_var_nhw, "torch.var(x[0], dim=(0, 2, 3), correction=0)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"var.hw_keepdim", op_var_hw_keep, "torch.var(x[0], dim=(2, -1), keepdim=True)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"argmax.dim1", op_argmax_d1, "x[0].argmax(dim=1)", 1, {F(3, 7, 4)}, 0, 0, KT_NO_GRADCHECK},
    {"argmax.last_keepdim", op_argmax_last_keep, "x[0].argmax(dim=-1, keepdim=True)", 1, {F(5, 8)}, 0, 0, KT_NO_GRADCHECK},
    {"softmax.last", op_softmax_last, "torch.softmax(x[0], -1)", 1, {F(4, 7)}, 0, 0, 0},
    {"softmax.dim0", op_softmax_d0, "torch.softmax(x[0], 0)", 1, {F(5, 3, 2)}, 0, 0, 0},
    {"softmax.channels", op_softmax_d1, "torch.softmax(x[0], 1)", 1, {F(2, 5, 3, 3)}, 0, 0, 0},
    {"softmax.large_logits", op_softmax_large, "torch.softmax(x[0] * 40.0, -1)", 1, {F(3, 10)}, 0, 0, 0},
    {"log_softmax.last", op_log_softmax_last, "torch.log_softmax(x[0], -1)", 1, {F(4, 7)}, 0, 0, 0},
    {"log_softmax.channels", op_log_softmax_d1, "torch.log_softmax(x[0], 1)", 1, {F(2, 5, 3, 3)}, 0, 0, 0},
    {"log_softmax.large_logits", op_log_softmax_large, "torch.log_softmax(x[0] * 40.0, 1)", 1, {F(3, 6, 4)}, 0, 0, 0},
    {"log_softmax.logits_500", op_log_softmax_500, "torch.log_softmax(x[0] * 250.0, -1)", 1, {F(6, 10)}, 0, 0, 0},
    {"log_softmax.logits_500_channels", op_log_softmax_500_d1, "torch.log_softmax(x[0] * 250.0, 1)", 1, {F(2, 6, 3, 3)}, 0, 0, 0},
    {"softmax.offset_3000", op_softmax_offset, "torch.softmax(x[0] * 4.0 + 3000.0, -1)", 1, {F(6, 10)}, 0, 0, 0},
    {"log_softmax.offset_3000", op_log_softmax_offset, "torch.log_softmax(x[0] * 4.0 + 3000.0, -1)", 1, {F(6, 10)}, 0, 0, 0},
    {"log_softmax.offset_3000_channels", op_log_softmax_offset_d1, "torch.log_softmax(x[0] * 4.0 + 3000.0, 1)", 1, {F(2, 6, 3, 3)}, 0, 0, 0},
    {"sum.transposed", op_sum_t, "x[0].transpose(0, 1).sum(dim=1)", 1, {F(5, 4, 3)}, 0, 0, 0},
    {"mean.permuted_keepdim", op_mean_perm, "x[0].permute(0, 2, 3, 1).mean(dim=(1, 2), keepdim=True)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"max.transposed", op_max_t, "x[0].transpose(0, 1).max(dim=-1)[0]", 1, {F(6, 4)}, 0, 0, 0},
    {"var.transposed", op_var_t, "x[0].transpose(1, 2).var(dim=1)", 1, {F(2, 3, 5)}, 0, 0, 0},
    {"softmax.transposed", op_softmax_t, "torch.softmax(x[0].transpose(0, 1), -1)", 1, {F(5, 4)}, 0, 0, 0},
    {"log_softmax.permuted", op_log_softmax_perm, "torch.log_softmax(x[0].permute(0, 2, 3, 1), -1)", 1, {F(2, 4, 3, 3)}, 0, 0, 0},
    {0},
};
