/* Op table rows: ops defined through kd_custom_apply (tests/custom_ops.h),
 * checked like the core's own, and one with a wrong backward that the
 * gradient check must catch. */
#include <stdint.h>

#include "../custom_ops.h"
#include "../op_rows.h"

static kd_tensor *op_softplus(kd_tensor *const *x) { return kt_custom_softplus(x[0]); }
static kd_tensor *op_softplus_t(kd_tensor *const *x) { return kt_custom_softplus(kd_transpose(x[0], 0, 1)); }
static kd_tensor *op_softplus_chain(kd_tensor *const *x) { return kd_mul(kt_custom_softplus(kd_mul_scalar(x[0], 3.0)), x[0]); }
static kd_tensor *op_softplus_wrong(kd_tensor *const *x) { return kt_custom_softplus_wrong(x[0]); }
static kd_tensor *op_mul_square(kd_tensor *const *x) { return kt_custom_scaled_mul_square(x[0], x[1], 0.5); }
static kd_tensor *op_mul_square_const(kd_tensor *const *x) { return kt_custom_scaled_mul_square(x[0], x[1], -1.5); }

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define CONST(...) {KT_CONST, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_custom[] = {
    {"custom.softplus", op_softplus, "F.softplus(x[0])", 1, {F(3, 5)}, 0, 0, 0},
    {"custom.softplus_transposed", op_softplus_t, "F.softplus(x[0].t())", 1, {F(4, 3)}, 0, 0, 0},
    {"custom.softplus_in_a_chain", op_softplus_chain, "F.softplus(3 * x[0]) * x[0]", 1, {F(2, 6)}, 0, 0, 0},
    {"custom.scaled_mul_square", op_mul_square, "0.5 * x[0] * x[1] ** 2", 2, {F(2, 3, 4), F(2, 3, 4)}, 0, 0, 0},
    {"custom.scaled_mul_square_const_b", op_mul_square_const, "-1.5 * x[0] * x[1] ** 2", 2, {F(3, 4), CONST(3, 4)}, 0, 0, 0},
    {"custom.softplus_wrong_backward", op_softplus_wrong, "F.softplus(x[0])", 1, {F(3, 5)}, 0, 0, KT_WRONG_BACKWARD},
    {0},
};
