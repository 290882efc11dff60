/* Op table rows: batch, layer, channel and group norms; dropout and
 * drop-path. */
#include "../op_rows.h"

/* Running mean and variance arrive as the two rows of one input (a row
 * has at most 4 inputs). Batch norm updates them in place, so the adapters
 * work on copies: the inputs written for torch stay the ones the op saw. */
static kd_tensor *stat_row(kd_tensor *stats, int i)
{
    kd_tensor *row = kd_reshape(kd_slice(stats, 0, i, i + 1, 1), 1, (int64_t[]){-1});
    kd_tensor *c = row ? kd_tensor_empty_like(row) : NULL;
    return c && kd_tensor_copy_(c, row) == KD_OK ? c : NULL;
}

static kd_tensor *bn_train(kd_tensor *const *x)
{
    return kd_batch_norm(x[0], x[1], x[2], stat_row(x[3], 0), stat_row(x[3], 1), true, 0.1,
                         1e-5);
}
static kd_tensor *bn_train_plain(kd_tensor *const *x)
{
    return kd_batch_norm(x[0], NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
}
static kd_tensor *bn_eval(kd_tensor *const *x)
{
    return kd_batch_norm(x[0], x[1], x[2], stat_row(x[3], 0), stat_row(x[3], 1), false, 0.1,
                         1e-5);
}
static kd_tensor *bn_eval_plain(kd_tensor *const *x)
{
    return kd_batch_norm(x[0], NULL, NULL, stat_row(x[1], 0), stat_row(x[1], 1), false, 0.1,
                         1e-3);
}
static kd_tensor *bn_running_mean(kd_tensor *const *x)
{
    kd_tensor *rm = stat_row(x[1], 0), *rv = stat_row(x[1], 1);
    return kd_batch_norm(x[0], NULL, NULL, rm, rv, true, 0.1, 1e-5) ? rm : NULL;
}
static kd_tensor *bn_running_var(kd_tensor *const *x)
{
    kd_tensor *rm = stat_row(x[1], 0), *rv = stat_row(x[1], 1);
    return kd_batch_norm(x[0], NULL, NULL, rm, rv, true, 0.3, 1e-5) ? rv : NULL;
}
/* Synchronised batch norm's reducers: one process (the sums are already
 * the global ones), and a mirror, as if a second process held the same
 * batch (every sum doubles: torch sees the batch twice). */
static kd_status one_process(double *values, int64_t n, void *ctx)
{
    (void)values, (void)n, (void)ctx;
    return KD_OK;
}
static kd_status mirrored(double *values, int64_t n, void *ctx)
{
    (void)ctx;
    for (int64_t i = 0; i < n; i++)
        values[i] *= 2;
    return KD_OK;
}
static kd_tensor *synced(kd_tensor *(*bn)(kd_tensor *const *), kd_tensor *const *x,
                         kd_status (*reduce)(double *, int64_t, void *))
{
    kd_batch_norm_sync before = kd_set_batch_norm_sync((kd_batch_norm_sync){reduce, NULL});
    kd_tensor *y = bn(x);
    kd_set_batch_norm_sync(before);
    return y;
}
static kd_tensor *bn_sync_train(kd_tensor *const *x) { return synced(bn_train, x, one_process); }
static kd_tensor *bn_sync_eval(kd_tensor *const *x) { return synced(bn_eval, x, mirrored); }
static kd_tensor *bn_sync_mirrored(kd_tensor *const *x) { return synced(bn_train, x, mirrored); }
static kd_tensor *bn_sync_mirrored_var(kd_tensor *const *x)
{
    return synced(bn_running_var, x, mirrored);
}
static kd_tensor *bn_sync_mirrored_mean(kd_tensor *const *x)
{
    return synced(bn_running_mean, x, mirrored);
}
static kd_tensor *ln(kd_tensor *const *x) { return kd_layer_norm(x[0], x[1], x[2], 1e-5); }
static kd_tensor *ln_plain(kd_tensor *const *x) { return kd_layer_norm(x[0], NULL, NULL, 1e-5); }
static kd_tensor *ln_offset(kd_tensor *const *x)
{
    return kd_layer_norm(kd_add_scalar(x[0], 100.0), x[1], x[2], 1e-5);
}
static kd_tensor *ln2d(kd_tensor *const *x) { return kd_layer_norm2d(x[0], x[1], x[2], 1e-6); }
static kd_tensor *ln2d_plain(kd_tensor *const *x) { return kd_layer_norm2d(x[0], NULL, NULL, 1e-6); }
static kd_tensor *gn1(kd_tensor *const *x) { return kd_group_norm(x[0], 1, x[1], x[2], 1e-5); }
static kd_tensor *gn2(kd_tensor *const *x) { return kd_group_norm(x[0], 2, x[1], x[2], 1e-5); }
static kd_tensor *gn_c(kd_tensor *const *x) { return kd_group_norm(x[0], 6, x[1], x[2], 1e-5); }
static kd_tensor *gn_plain(kd_tensor *const *x) { return kd_group_norm(x[0], 3, NULL, NULL, 1e-5); }

/* A fresh rng with a constant seed per call, so every call draws the same
 * mask; torch recovers the mask from our output (ykd). */
static kd_tensor *dropout_train(kd_tensor *const *x)
{
    kd_rng rng = kd_rng_make(7, 1, 2);
    return kd_dropout(x[0], 0.3, true, &rng);
}
static kd_tensor *dropout_eval(kd_tensor *const *x)
{
    kd_rng rng = kd_rng_make(7, 1, 2);
    return kd_mul_scalar(kd_dropout(x[0], 0.3, false, &rng), 1.0);
}
static kd_tensor *dropout_twice(kd_tensor *const *x)
{
    kd_rng rng = kd_rng_make(11, 0, 0);
    return kd_dropout(kd_dropout(x[0], 0.2, true, &rng), 0.5, true, &rng);
}
static kd_tensor *drop_path_train(kd_tensor *const *x)
{
    kd_rng rng = kd_rng_make(3, 0, 5);
    return kd_drop_path(x[0], 0.4, true, &rng);
}

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define CP(...) {KT_CONST_POS, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

#define BN_TRAIN                                                                           \
    "F.batch_norm(x[0], x[3][0].clone(), x[3][1].clone(), x[1], x[2], training=True, "     \
    "momentum=0.1, eps=1e-5)"
#define BN_EVAL "F.batch_norm(x[0], x[3][0], x[3][1], x[1], x[2], training=False, eps=1e-5)"
#define BN_STATS(mom, i)                                                                   \
    "(lambda rm, rv: [F.batch_norm(x[0], rm, rv, training=True, momentum=" #mom "), "      \
    "(rm, rv)[" #i "]][1])(x[1][0].clone(), x[1][1].clone())"
#define LN2D(C) "F.layer_norm(x[0].permute(0, 2, 3, 1), (" #C ",), x[1], x[2], 1e-6).permute(0, 3, 1, 2)"

const kt_op_row kt_rows_norm[] = {
    {"batch_norm.train_2d", bn_train, BN_TRAIN, 4, {F(6, 4), F(4), F(4), CP(2, 4)}, 0, 0, 0},
    {"batch_norm.train_4d", bn_train, BN_TRAIN, 4, {F(3, 4, 3, 5), F(4), F(4), CP(2, 4)},
     0, 0, 0},
    {"batch_norm.train_4d_plain", bn_train_plain, "F.batch_norm(x[0], None, None, training=True)",
     1, {F(2, 3, 4, 3)}, 0, 0, 0},
    {"batch_norm.train_2d_plain", bn_train_plain, "F.batch_norm(x[0], None, None, training=True)",
     1, {F(5, 3)}, 0, 0, 0},
    {"batch_norm.eval_2d", bn_eval, BN_EVAL, 4, {F(6, 4), F(4), F(4), CP(2, 4)}, 0, 0, 0},
    {"batch_norm.eval_4d", bn_eval, BN_EVAL, 4, {F(2, 3, 4, 5), F(3), F(3), CP(2, 3)}, 0, 0, 0},
    {"batch_norm.eval_4d_plain", bn_eval_plain,
     "F.batch_norm(x[0], x[1][0], x[1][1], training=False, eps=1e-3)", 2, {F(2, 3, 2, 2), CP(2, 3)},
     0, 0, 0},
    {"batch_norm.running_mean", bn_running_mean,
     BN_STATS(0.1, 0), 2, {F(4, 3, 2, 2), CP(2, 3)}, 0, 0, KT_NO_BACKWARD},
    {"batch_norm.running_var", bn_running_var,
     BN_STATS(0.3, 1), 2, {F(4, 3, 2, 2), CP(2, 3)}, 0, 0, KT_NO_BACKWARD},
    {"batch_norm.running_var_2d", bn_running_var,
     BN_STATS(0.3, 1), 2, {F(5, 4), CP(2, 4)}, 0, 0, KT_NO_BACKWARD},
    {"batch_norm.sync_one_process_2d", bn_sync_train, BN_TRAIN, 4,
     {F(6, 4), F(4), F(4), CP(2, 4)}, 0, 0, 0},
    {"batch_norm.sync_one_process_4d", bn_sync_train, BN_TRAIN, 4,
     {F(3, 4, 3, 5), F(4), F(4), CP(2, 4)}, 0, 0, 0},
    /* eval mode takes the running statistics: the reducer is not called */
    {"batch_norm.sync_eval", bn_sync_eval, BN_EVAL, 4, {F(2, 3, 4, 5), F(3), F(3), CP(2, 3)},
     0, 0, 0},
    {"batch_norm.sync_mirrored", bn_sync_mirrored,
     "F.batch_norm(torch.cat((x[0], x[0])), x[3][0].clone(), x[3][1].clone(), x[1], x[2], "
     "training=True, momentum=0.1, eps=1e-5)[:x[0].shape[0]]", 4,
     {F(3, 4, 3, 5), F(4), F(4), CP(2, 4)}, 0, 0, KT_NO_BACKWARD},
    {"batch_norm.sync_mirrored_running_mean", bn_sync_mirrored_mean,
     "(lambda rm, rv: [F.batch_norm(torch.cat((x[0], x[0])), rm, rv, training=True, "
     "momentum=0.1), rm][1])(x[1][0].clone(), x[1][1].clone())", 2, {F(4, 3, 2, 2), CP(2, 3)},
     0, 0, KT_NO_BACKWARD},
    /* the unbiased variance takes the global count: 2 N S - 1 */
    {"batch_norm.sync_mirrored_running_var", bn_sync_mirrored_var,
     "(lambda rm, rv: [F.batch_norm(torch.cat((x[0], x[0])), rm, rv, training=True, "
     "momentum=0.3), rv][1])(x[1][0].clone(), x[1][1].clone())", 2, {F(2, 3, 2, 2), CP(2, 3)},
     0, 0, KT_NO_BACKWARD},
    {"layer_norm.2d", ln, "F.layer_norm(x[0], (7,), x[1], x[2], 1e-5)", 3, {F(4, 7), F(7), F(7)},
     0, 0, 0},
    {"layer_norm.3d", ln, "F.layer_norm(x[0], (8,), x[1], x[2], 1e-5)", 3,
     {F(2, 3, 8), F(8), F(8)}, 0, 0, 0},
    {"layer_norm.3d_plain", ln_plain, "F.layer_norm(x[0], (8,), eps=1e-5)", 1, {F(2, 3, 8)},
     0, 0, 0},
    {"layer_norm.2d_plain", ln_plain, "F.layer_norm(x[0], (5,), eps=1e-5)", 1, {F(6, 5)}, 0, 0, 0},
    {"layer_norm.offset_mean", ln_offset, "F.layer_norm(x[0] + 100.0, (16,), x[1], x[2], 1e-5)",
     3, {F(3, 16), F(16), F(16)}, 0, 0, 0},
    {"layer_norm2d.affine", ln2d, LN2D(5), 3, {F(2, 5, 3, 4), F(5), F(5)}, 0, 0, 0},
    {"layer_norm2d.wide", ln2d, LN2D(3), 3, {F(1, 3, 12, 12), F(3), F(3)}, 0, 0, 0},
    {"layer_norm2d.plain", ln2d_plain,
     "F.layer_norm(x[0].permute(0, 2, 3, 1), (4,), eps=1e-6).permute(0, 3, 1, 2)", 1,
     {F(2, 4, 3, 3)}, 0, 0, 0},
    {"group_norm.g1", gn1, "F.group_norm(x[0], 1, x[1], x[2], 1e-5)", 3,
     {F(2, 6, 3, 3), F(6), F(6)}, 0, 0, 0},
    {"group_norm.g2", gn2, "F.group_norm(x[0], 2, x[1], x[2], 1e-5)", 3,
     {F(2, 6, 3, 3), F(6), F(6)}, 0, 0, 0},
    {"group_norm.gC", gn_c, "F.group_norm(x[0], 6, x[1], x[2], 1e-5)", 3,
     {F(2, 6, 2, 3), F(6), F(6)}, 0, 0, 0},
    {"group_norm.plain_3d", gn_plain, "F.group_norm(x[0], 3, eps=1e-5)", 1, {F(2, 6, 5)}, 0, 0, 0},
    {"group_norm.g2_2d", gn2, "F.group_norm(x[0], 2, x[1], x[2], 1e-5)", 3,
     {F(3, 6), F(6), F(6)}, 0, 0, 0},
    {"dropout.train", dropout_train, "x[0] * (ykd != 0) / (1 - 0.3)", 1, {F(6, 7)}, 0, 0, 0},
    {"dropout.eval", dropout_eval, "x[0] * 1.0", 1, {F(6, 7)}, 0, 0, 0},
    {"dropout.twice", dropout_twice, "x[0] * (ykd != 0) / ((1 - 0.2) * (1 - 0.5))", 1,
     {F(5, 8)}, 0, 0, 0},
    {"drop_path.train", drop_path_train, "x[0] * (ykd[:, :1, :1] != 0) / (1 - 0.4)", 1,
     {F(10, 3, 4)}, 0, 0, 0},
    {0},
};
