/* Op table rows: binary and unary elementwise ops. */
#include <math.h>

#include "../op_rows.h"

static kd_tensor *op_add(kd_tensor *const *x) { return kd_add(x[0], x[1]); }
static kd_tensor *op_sub(kd_tensor *const *x) { return kd_sub(x[0], x[1]); }
static kd_tensor *op_mul(kd_tensor *const *x) { return kd_mul(x[0], x[1]); }
static kd_tensor *op_div(kd_tensor *const *x) { return kd_div(x[0], x[1]); }
static kd_tensor *op_add_scalar(kd_tensor *const *x) { return kd_add_scalar(x[0], 0.75); }
static kd_tensor *op_mul_scalar(kd_tensor *const *x) { return kd_mul_scalar(x[0], -1.5); }
static kd_tensor *op_pow_scalar(kd_tensor *const *x) { return kd_pow_scalar(x[0], 2.5); }
static kd_tensor *op_neg(kd_tensor *const *x) { return kd_neg(x[0]); }
static kd_tensor *op_exp(kd_tensor *const *x) { return kd_exp(x[0]); }
static kd_tensor *op_log(kd_tensor *const *x) { return kd_log(x[0]); }
static kd_tensor *op_sqrt(kd_tensor *const *x) { return kd_sqrt(x[0]); }
static kd_tensor *op_abs(kd_tensor *const *x) { return kd_abs(x[0]); }
static kd_tensor *op_tanh(kd_tensor *const *x) { return kd_tanh(x[0]); }
static kd_tensor *op_clamp(kd_tensor *const *x) { return kd_clamp(x[0], -0.5, 1.0); }
static kd_tensor *op_clamp_min(kd_tensor *const *x) { return kd_clamp(x[0], 0.1, INFINITY); }
static kd_tensor *op_relu(kd_tensor *const *x) { return kd_relu(x[0]); }
static kd_tensor *op_relu6(kd_tensor *const *x) { return kd_relu6(kd_mul_scalar(x[0], 4.0)); }
static kd_tensor *op_gelu(kd_tensor *const *x) { return kd_gelu(x[0]); }
static kd_tensor *op_gelu_tanh(kd_tensor *const *x) { return kd_gelu_tanh(x[0]); }
/* x in [-6, 6): erf's argument past its float saturation (3.92) */
static kd_tensor *op_gelu_wide(kd_tensor *const *x) { return kd_gelu(kd_mul_scalar(x[0], 3.0)); }
static kd_tensor *op_silu(kd_tensor *const *x) { return kd_silu(x[0]); }
static kd_tensor *op_sigmoid(kd_tensor *const *x) { return kd_sigmoid(x[0]); }
static kd_tensor *op_hardsigmoid(kd_tensor *const *x) { return kd_hardsigmoid(kd_mul_scalar(x[0], 2.0)); }
static kd_tensor *op_hardswish(kd_tensor *const *x) { return kd_hardswish(kd_mul_scalar(x[0], 2.0)); }

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define P(...) {KT_POSITIVE, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_elementwise[] = {
    {"add.same", op_add, "x[0] + x[1]", 2, {F(3, 4, 5), F(3, 4, 5)}, 0, 0, 0},
    {"add.bcast_row", op_add, "x[0] + x[1]", 2, {F(3, 4, 5), F(5)}, 0, 0, 0},
    {"add.bcast_both", op_add, "x[0] + x[1]", 2, {F(3, 1, 5), F(4, 1)}, 0, 0, 0},
    {"sub.bcast", op_sub, "x[0] - x[1]", 2, {F(2, 3, 4), F(3, 1)}, 0, 0, 0},
    {"mul.same", op_mul, "x[0] * x[1]", 2, {F(6, 7), F(6, 7)}, 0, 0, 0},
    {"mul.bcast_chan", op_mul, "x[0] * x[1]", 2, {F(2, 3, 4, 4), F(1, 3, 1, 1)}, 0, 0, 0},
    {"div.same", op_div, "x[0] / x[1]", 2, {F(4, 5), P(4, 5)}, 0, 0, 0},
    {"div.bcast", op_div, "x[0] / x[1]", 2, {F(2, 4, 5), P(4, 1)}, 0, 0, 0},
    {"sub.bcast_col_row", op_sub, "x[0] - x[1]", 2, {F(4, 1), F(5)}, 0, 0, 0},
    {"div.bcast_col_row", op_div, "x[0] / x[1]", 2, {F(3, 1), P(6)}, 0, 0, 0},
    {"sub.bcast_logits_col", op_sub, "x[0] - x[1]", 2, {F(128, 10), F(128, 1)}, 0, 0, 0},
    {"div.bcast_logits_col", op_div, "x[0] / x[1]", 2, {F(128, 10), P(128, 1)}, 0, 0, 0},
    {"mul.bcast_unit_last", op_mul, "x[0] * x[1]", 2, {F(3, 1), F(1, 1)}, 0, 0, 0},
    /* sizes for the device rows: many blocks of a GPU grid, and rank-4
     * broadcasting on both sides */
    {"add.large", op_add, "x[0] + x[1]", 2, {F(100003), F(100003)}, 0, 0, 0},
    {"mul.bcast_rank4", op_mul, "x[0] * x[1]", 2, {F(2, 1, 3, 5), F(1, 4, 3, 1)}, 0, 0, 0},
    {"add_scalar", op_add_scalar, "x[0] + 0.75", 1, {F(4, 5)}, 0, 0, 0},
    {"mul_scalar", op_mul_scalar, "x[0] * -1.5", 1, {F(4, 5)}, 0, 0, 0},
    {"pow_scalar", op_pow_scalar, "x[0] ** 2.5", 1, {P(4, 5)}, 0, 0, 0},
    {"neg", op_neg, "-x[0]", 1, {F(3, 5)}, 0, 0, 0},
    {"exp", op_exp, "torch.exp(x[0])", 1, {F(3, 5)}, 0, 0, 0},
    {"log", op_log, "torch.log(x[0])", 1, {P(3, 5)}, 0, 0, 0},
    {"sqrt", op_sqrt, "torch.sqrt(x[0])", 1, {P(3, 5)}, 0, 0, 0},
    {"abs", op_abs, "torch.abs(x[0])", 1, {F(3, 5)}, 0, 0, 0},
    {"tanh", op_tanh, "torch.tanh(x[0])", 1, {F(3, 5)}, 0, 0, 0},
    {"clamp", op_clamp, "torch.clamp(x[0], -0.5, 1.0)", 1, {F(4, 6)}, 0, 0, 0},
    {"clamp.min_only", op_clamp_min, "torch.clamp(x[0], min=0.1)", 1, {F(4, 6)}, 0, 0, 0},
    {"relu", op_relu, "F.relu(x[0])", 1, {F(4, 6)}, 0, 0, 0},
    {"relu6", op_relu6, "F.relu6(x[0] * 4.0)", 1, {F(4, 6)}, 0, 0, 0},
    {"gelu", op_gelu, "F.gelu(x[0])", 1, {F(4, 6)}, 0, 0, 0},
    {"gelu.odd_size", op_gelu, "F.gelu(x[0])", 1, {F(37, 29)}, 0, 0, 0}, /* vector body + tail */
    {"gelu.wide", op_gelu_wide, "F.gelu(x[0] * 3)", 1, {F(64, 40)}, 0, 0, 0}, /* both erf pieces */
    {"gelu_tanh", op_gelu_tanh, "F.gelu(x[0], approximate='tanh')", 1, {F(4, 6)}, 0, 0, 0},
    {"silu", op_silu, "F.silu(x[0])", 1, {F(4, 6)}, 0, 0, 0},
    {"sigmoid", op_sigmoid, "torch.sigmoid(x[0])", 1, {F(4, 6)}, 0, 0, 0},
    {"hardsigmoid", op_hardsigmoid, "F.hardsigmoid(x[0] * 2.0)", 1, {F(4, 6)}, 0, 0, 0},
    {"hardswish", op_hardswish, "F.hardswish(x[0] * 2.0)", 1, {F(4, 6)}, 0, 0, 0},
    {0},
};
