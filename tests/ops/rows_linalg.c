/* Op table rows: matmul and linear. */
#include "../op_rows.h"

static kd_tensor *op_matmul(kd_tensor *const *x) { return kd_matmul(x[0], x[1]); }
/* b given as a transposed view: BLAS reads it without a copy. */
static kd_tensor *op_matmul_bt(kd_tensor *const *x)
{
    return kd_matmul(x[0], kd_transpose(x[1], -1, -2));
}
/* a given as a non-contiguous slice along its rows. */
static kd_tensor *op_matmul_strided(kd_tensor *const *x)
{
    return kd_matmul(kd_slice(x[0], 1, 0, 6, 2), x[1]);
}
/* weight given as a transposed view of [in, out]. */
static kd_tensor *op_linear_wt(kd_tensor *const *x)
{
    return kd_linear(x[0], kd_transpose(x[1], 0, 1), x[2]);
}
static kd_tensor *op_linear(kd_tensor *const *x) { return kd_linear(x[0], x[1], x[2]); }
static kd_tensor *op_linear_nobias(kd_tensor *const *x) { return kd_linear(x[0], x[1], NULL); }

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_linalg[] = {
    {"matmul.2d", op_matmul, "x[0] @ x[1]", 2, {F(5, 7), F(7, 4)}, 0, 0, 0},
    {"matmul.batched", op_matmul, "x[0] @ x[1]", 2, {F(3, 4, 5), F(3, 5, 6)}, 0, 0, 0},
    {"matmul.bcast_b2d", op_matmul, "x[0] @ x[1]", 2, {F(2, 3, 4, 5), F(5, 3)}, 0, 0, 0},
    {"matmul.bcast_batch1", op_matmul, "x[0] @ x[1]", 2, {F(1, 4, 5), F(3, 5, 2)}, 0, 0, 0},
    {"matmul.bcast_both", op_matmul, "x[0] @ x[1]", 2, {F(2, 1, 3, 4), F(3, 4, 5)}, 0, 0, 0},
    {"matmul.b_transposed", op_matmul_bt, "x[0] @ x[1].transpose(-1, -2)", 2,
     {F(2, 4, 6), F(2, 5, 6)}, 0, 0, 0},
    {"matmul.a_strided", op_matmul_strided, "x[0][:, 0:6:2] @ x[1]", 2,
     {F(2, 6, 4), F(4, 3)}, 0, 0, 0},
    {"linear.bias", op_linear, "F.linear(x[0], x[1], x[2])", 3, {F(6, 5), F(4, 5), F(4)},
     0, 0, 0},
    {"linear.nobias", op_linear_nobias, "F.linear(x[0], x[1])", 2, {F(6, 5), F(4, 5)}, 0, 0,
     0},
    {"linear.3d", op_linear, "F.linear(x[0], x[1], x[2])", 3, {F(2, 3, 5), F(4, 5), F(4)},
     0, 0, 0},
    {"linear.weight_transposed", op_linear_wt, "F.linear(x[0], x[1].t(), x[2])", 3,
     {F(3, 5), F(5, 4), F(4)}, 0, 0, 0},
    {0},
};
