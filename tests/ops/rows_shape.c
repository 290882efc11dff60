/* Op table rows: shape, indexing and cast ops, and non-contiguous inputs
 * (views) fed into elementwise ops and norms to exercise strided paths. */
#include "../op_rows.h"

static kd_tensor *reshape_view(kd_tensor *const *x)
{
    return kd_reshape(x[0], 3, (int64_t[]){4, -1, 3});
}
static kd_tensor *reshape_copy(kd_tensor *const *x)
{
    return kd_reshape(kd_transpose(x[0], 0, 1), 1, (int64_t[]){-1});
}
static kd_tensor *reshape_strided_view(kd_tensor *const *x)
{
    return kd_reshape(kd_transpose(x[0], 1, 2), 4, (int64_t[]){3, 5, 2, 2});
}
static kd_tensor *flatten_mid(kd_tensor *const *x) { return kd_flatten(x[0], 1, 2); }
static kd_tensor *flatten_all(kd_tensor *const *x) { return kd_flatten(kd_permute(x[0], (int[]){2, 0, 1}), 0, -1); }
static kd_tensor *unsqueeze_mid(kd_tensor *const *x) { return kd_unsqueeze(x[0], 1); }
static kd_tensor *unsqueeze_last(kd_tensor *const *x) { return kd_unsqueeze(kd_transpose(x[0], 0, 1), -1); }
static kd_tensor *squeeze_one(kd_tensor *const *x) { return kd_squeeze(x[0], 1); }
static kd_tensor *squeeze_noop(kd_tensor *const *x) { return kd_squeeze(x[0], 0); }
static kd_tensor *permute_nhwc(kd_tensor *const *x) { return kd_permute(x[0], (int[]){0, 2, 3, 1}); }
static kd_tensor *permute_contiguous(kd_tensor *const *x)
{
    return kd_contiguous(kd_permute(x[0], (int[]){2, 0, 1}));
}
static kd_tensor *transpose_outer(kd_tensor *const *x) { return kd_transpose(x[0], 0, -1); }
static kd_tensor *slice_step(kd_tensor *const *x) { return kd_slice(x[0], 1, 1, 8, 3); }
static kd_tensor *slice_negative(kd_tensor *const *x) { return kd_slice(x[0], 0, -3, -1, 1); }
static kd_tensor *slice_of_slice(kd_tensor *const *x)
{
    return kd_slice(kd_slice(x[0], -1, 1, 100, 2), 0, 1, 3, 1);
}
static kd_tensor *concat_dim0(kd_tensor *const *x) { return kd_concat(3, x, 0); }
static kd_tensor *concat_dim1(kd_tensor *const *x) { return kd_concat(2, x, 1); }
static kd_tensor *concat_last(kd_tensor *const *x) { return kd_concat(3, x, -1); }
static kd_tensor *concat_many(kd_tensor *const *x)
{
    kd_tensor *xs[7] = {x[0], x[1], x[2], x[0], x[1], x[2], x[0]};
    return kd_concat(7, xs, 1);
}
static kd_tensor *concat_views(kd_tensor *const *x)
{
    kd_tensor *xs[2] = {kd_transpose(x[0], 0, 1), kd_slice(x[1], 0, 0, 6, 2)};
    return kd_concat(2, xs, 1);
}
static kd_tensor *split_combined(kd_tensor *const *x)
{
    kd_tensor *p[3];
    if (kd_split(x[0], 1, 3, (int64_t[]){3, 3, 1}, p) != KD_OK)
        return NULL;
    return kd_add(kd_mul(p[0], p[1]), p[2]);
}
static kd_tensor *split_last(kd_tensor *const *x)
{
    kd_tensor *p[2];
    if (kd_split(x[0], -1, 2, (int64_t[]){2, 3}, p) != KD_OK)
        return NULL;
    return p[1];
}
static kd_tensor *roll_swin(kd_tensor *const *x)
{
    return kd_roll(x[0], 2, (int64_t[]){-1, 2}, (int[]){1, 2});
}
static kd_tensor *roll_last(kd_tensor *const *x)
{
    return kd_roll(x[0], 2, (int64_t[]){7, -1}, (int[]){-1, 0});
}
static kd_tensor *pad_2d(kd_tensor *const *x) { return kd_pad(x[0], 2, (int64_t[]){1, 2, 0, 1}, 0.0); }
static kd_tensor *pad_value(kd_tensor *const *x) { return kd_pad(x[0], 1, (int64_t[]){2, 0}, 0.5); }
static kd_tensor *pad_crop(kd_tensor *const *x) { return kd_pad(x[0], 2, (int64_t[]){-1, 1, 2, -2}, 0.0); }
static kd_tensor *pad_transposed(kd_tensor *const *x)
{
    return kd_pad(kd_transpose(x[0], 0, 1), 2, (int64_t[]){1, 1, 1, 0}, -1.0);
}
static kd_tensor *index_select_rows(kd_tensor *const *x) { return kd_index_select(x[0], 0, x[1]); }
static kd_tensor *index_select_mid(kd_tensor *const *x) { return kd_index_select(x[0], 1, x[1]); }
static kd_tensor *index_select_last(kd_tensor *const *x)
{
    return kd_index_select(kd_transpose(x[0], 0, 1), -1, x[1]);
}
static kd_tensor *gather_last(kd_tensor *const *x) { return kd_gather(x[0], 1, x[1]); }
static kd_tensor *gather_first(kd_tensor *const *x) { return kd_gather(x[0], 0, x[1]); }
static kd_tensor *gather_mid(kd_tensor *const *x) { return kd_gather(x[0], 1, x[1]); }
static kd_tensor *masked_fill_bcast(kd_tensor *const *x) { return kd_masked_fill(x[0], x[1], -1.5); }
static kd_tensor *masked_fill_full(kd_tensor *const *x) { return kd_masked_fill(x[0], x[1], 0.0); }
static kd_tensor *masked_fill_view(kd_tensor *const *x)
{
    return kd_masked_fill(kd_transpose(x[0], 0, 1), x[1], 2.0);
}
/* f32 -> f64 -> f32 in the parity run; f64 stays f64 in the gradcheck
 * (finite differences through f32 rounding would be noise). */
static kd_tensor *cast_roundtrip(kd_tensor *const *x)
{
    return kd_cast(kd_mul_scalar(kd_cast(x[0], KD_F64), 2.0), x[0]->dtype);
}
static kd_tensor *cast_f16(kd_tensor *const *x) { return kd_cast(kd_cast(x[0], KD_F16), x[0]->dtype); }
static kd_tensor *cast_bf16(kd_tensor *const *x) { return kd_cast(kd_cast(x[0], KD_BF16), x[0]->dtype); }
static kd_tensor *cast_to_int(kd_tensor *const *x)
{
    return kd_cast(kd_cast(kd_mul_scalar(x[0], 10.0), KD_I64), x[0]->dtype);
}
static kd_tensor *relu_of_transposed(kd_tensor *const *x) { return kd_relu(kd_transpose(x[0], 0, 1)); }
static kd_tensor *add_of_transposed(kd_tensor *const *x) { return kd_add(kd_transpose(x[0], 1, 2), x[1]); }
static kd_tensor *mul_of_sliced(kd_tensor *const *x) { return kd_mul(kd_slice(x[0], 1, 0, 6, 2), x[1]); }
static kd_tensor *exp_of_permuted(kd_tensor *const *x)
{
    return kd_exp(kd_permute(x[0], (int[]){2, 0, 1}));
}
static kd_tensor *layer_norm_of_permuted(kd_tensor *const *x)
{
    return kd_layer_norm(kd_permute(x[0], (int[]){0, 2, 3, 1}), x[1], x[2], 1e-5);
}
static kd_tensor *batch_norm_of_transposed(kd_tensor *const *x)
{
    return kd_batch_norm(kd_transpose(x[0], 0, 1), x[1], x[2], NULL, NULL, true, 0.1, 1e-5);
}
static kd_tensor *group_norm_of_sliced(kd_tensor *const *x)
{
    return kd_group_norm(kd_slice(x[0], 1, 0, 8, 2), 2, x[1], x[2], 1e-5);
}
static kd_tensor *layer_norm2d_of_nhwc(kd_tensor *const *x)
{
    return kd_layer_norm2d(kd_permute(x[0], (int[]){0, 3, 1, 2}), x[1], x[2], 1e-6);
}

static kd_tensor *expand_prepend(kd_tensor *const *x)
{
    return kd_expand(x[0], 3, (int64_t[]){4, 3, 5});
}
static kd_tensor *expand_keep(kd_tensor *const *x)
{
    return kd_expand(x[0], 3, (int64_t[]){2, -1, 4});
}
/* A ViT's class token: [1, 1, D] over the batch, then concatenated. */
static kd_tensor *expand_into_concat(kd_tensor *const *x)
{
    kd_tensor *xs[2] = {kd_expand(x[0], 3, (int64_t[]){2, 1, 4}), x[1]};
    return kd_concat(2, xs, 1);
}
static kd_tensor *expand_into_mul(kd_tensor *const *x)
{
    return kd_mul(kd_expand(kd_transpose(x[0], 0, 1), 3, (int64_t[]){3, 4, 2}), x[1]);
}
static kd_tensor *expand_reshaped(kd_tensor *const *x)
{
    return kd_reshape(kd_expand(x[0], 2, (int64_t[]){3, 4}), 1, (int64_t[]){12});
}

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define L(range, ...) {KT_LABELS, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, range}
#define M(...) {KT_MASK, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_shape[] = {
    {"reshape.view", reshape_view, "x[0].reshape(4, -1, 3)", 1, {F(3, 4, 5)}, 0, 0, 0},
    {"reshape.copy", reshape_copy, "x[0].transpose(0, 1).reshape(-1)", 1, {F(3, 4, 5)}, 0, 0, 0},
    {"reshape.strided_view", reshape_strided_view, "x[0].transpose(1, 2).reshape(3, 5, 2, 2)",
     1, {F(3, 4, 5)}, 0, 0, 0},
    {"reshape.flatten_mid", flatten_mid, "x[0].flatten(1, 2)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"reshape.flatten_all_permuted", flatten_all, "x[0].permute(2, 0, 1).flatten()", 1,
     {F(2, 3, 4)}, 0, 0, 0},
    {"reshape.unsqueeze_mid", unsqueeze_mid, "x[0].unsqueeze(1)", 1, {F(3, 4)}, 0, 0, 0},
    {"reshape.unsqueeze_last_transposed", unsqueeze_last, "x[0].transpose(0, 1).unsqueeze(-1)",
     1, {F(3, 4)}, 0, 0, 0},
    {"reshape.squeeze", squeeze_one, "x[0].squeeze(1)", 1, {F(3, 1, 4)}, 0, 0, 0},
    {"reshape.squeeze_noop", squeeze_noop, "x[0].squeeze(0)", 1, {F(3, 1, 4)}, 0, 0, 0},
    {"permute.nhwc", permute_nhwc, "x[0].permute(0, 2, 3, 1)", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"permute.contiguous", permute_contiguous, "x[0].permute(2, 0, 1).contiguous()", 1,
     {F(3, 4, 5)}, 0, 0, 0},
    {"transpose.outer", transpose_outer, "x[0].transpose(0, -1)", 1, {F(3, 4, 5)}, 0, 0, 0},
    {"slice.step", slice_step, "x[0][:, 1:8:3]", 1, {F(4, 9)}, 0, 0, 0},
    {"slice.negative", slice_negative, "x[0][-3:-1]", 1, {F(5, 4)}, 0, 0, 0},
    {"slice.of_slice", slice_of_slice, "x[0][:, :, 1::2][1:3]", 1, {F(4, 3, 7)}, 0, 0, 0},
    {"concat.dim0", concat_dim0, "torch.cat(x, 0)", 3, {F(2, 3), F(1, 3), F(4, 3)}, 0, 0, 0},
    {"concat.dim1", concat_dim1, "torch.cat(x, 1)", 2, {F(2, 3, 4), F(2, 2, 4)}, 0, 0, 0},
    {"concat.last", concat_last, "torch.cat(x, -1)", 3, {F(2, 3, 1), F(2, 3, 4), F(2, 3, 2)},
     0, 0, 0},
    {"concat.many", concat_many, "torch.cat([x[0], x[1], x[2], x[0], x[1], x[2], x[0]], 1)",
     3, {F(2, 1, 3), F(2, 2, 3), F(2, 3, 3)}, 0, 0, 0},
    {"concat.views", concat_views, "torch.cat([x[0].transpose(0, 1), x[1][0:6:2]], 1)", 2,
     {F(2, 3), F(6, 3)}, 0, 0, 0},
    {"split.combined", split_combined,
     "(lambda p: p[0] * p[1] + p[2])(torch.split(x[0], [3, 3, 1], 1))", 1, {F(2, 7, 4)}, 0, 0, 0},
    {"split.last", split_last, "torch.split(x[0], [2, 3], -1)[1]", 1, {F(3, 5)}, 0, 0, 0},
    {"roll.swin", roll_swin, "torch.roll(x[0], (-1, 2), (1, 2))", 1, {F(2, 4, 4, 3)}, 0, 0, 0},
    {"roll.last", roll_last, "torch.roll(x[0], (7, -1), (-1, 0))", 1, {F(3, 5)}, 0, 0, 0},
    {"pad.2d", pad_2d, "F.pad(x[0], (1, 2, 0, 1))", 1, {F(2, 3, 4, 5)}, 0, 0, 0},
    {"pad.value", pad_value, "F.pad(x[0], (2, 0), value=0.5)", 1, {F(3, 4)}, 0, 0, 0},
    {"pad.crop", pad_crop, "F.pad(x[0], (-1, 1, 2, -2))", 1, {F(2, 5, 4)}, 0, 0, 0},
    {"pad.transposed", pad_transposed, "F.pad(x[0].transpose(0, 1), (1, 1, 1, 0), value=-1.0)",
     1, {F(3, 4)}, 0, 0, 0},
    {"index_select.repeated", index_select_rows, "torch.index_select(x[0], 0, x[1])", 2,
     {F(4, 5), L(4, 9)}, 0, 0, 0},
    {"index_select.mid", index_select_mid, "torch.index_select(x[0], 1, x[1])", 2,
     {F(2, 5, 3), L(5, 7)}, 0, 0, 0},
    {"index_select.last_of_view", index_select_last,
     "torch.index_select(x[0].transpose(0, 1), -1, x[1])", 2, {F(3, 4), L(3, 5)}, 0, 0, 0},
    {"gather.last", gather_last, "torch.gather(x[0], 1, x[1])", 2, {F(3, 5), L(5, 3, 4)}, 0, 0, 0},
    {"gather.first_smaller", gather_first, "torch.gather(x[0], 0, x[1])", 2,
     {F(4, 3, 2), L(4, 6, 2, 2)}, 0, 0, 0},
    {"gather.mid", gather_mid, "torch.gather(x[0], 1, x[1])", 2, {F(2, 3, 4), L(3, 2, 5, 4)},
     0, 0, 0},
    {"masked_fill.bcast", masked_fill_bcast, "x[0].masked_fill(x[1], -1.5)", 2,
     {F(3, 4, 5), M(4, 1)}, 0, 0, 0},
    {"masked_fill.full", masked_fill_full, "x[0].masked_fill(x[1], 0.0)", 2,
     {F(3, 4), M(3, 4)}, 0, 0, 0},
    {"masked_fill.of_view", masked_fill_view, "x[0].transpose(0, 1).masked_fill(x[1], 2.0)", 2,
     {F(3, 4), M(4, 3)}, 0, 0, 0},
    {"cast.f32_f64_roundtrip", cast_roundtrip, "x[0].double().mul(2.0).to(x[0].dtype)", 1,
     {F(4, 5)}, 0, 0, 0},
    {"cast.f16", cast_f16, "x[0].half().to(x[0].dtype)", 1, {F(4, 5)}, 0, 0, KT_NO_GRADCHECK},
    {"cast.bf16", cast_bf16, "x[0].bfloat16().to(x[0].dtype)", 1, {F(4, 5)}, 0, 0,
     KT_NO_GRADCHECK},
    {"cast.int_truncates", cast_to_int, "(x[0] * 10.0).long().to(x[0].dtype)", 1, {F(4, 5)},
     0, 0, KT_NO_GRADCHECK},
    {"transpose.into_relu", relu_of_transposed, "F.relu(x[0].transpose(0, 1))", 1, {F(4, 6)},
     0, 0, 0},
    {"transpose.into_add", add_of_transposed, "x[0].transpose(1, 2) + x[1]", 2,
     {F(2, 5, 3), F(2, 3, 5)}, 0, 0, 0},
    {"slice.into_mul", mul_of_sliced, "x[0][:, 0:6:2] * x[1]", 2, {F(3, 6), F(3, 3)}, 0, 0, 0},
    {"permute.into_exp", exp_of_permuted, "torch.exp(x[0].permute(2, 0, 1))", 1, {F(2, 3, 4)},
     0, 0, 0},
    {"permute.into_layer_norm", layer_norm_of_permuted,
     "F.layer_norm(x[0].permute(0, 2, 3, 1), (5,), x[1], x[2], 1e-5)", 3,
     {F(2, 5, 3, 4), F(5), F(5)}, 0, 0, 0},
    {"transpose.into_batch_norm", batch_norm_of_transposed,
     "F.batch_norm(x[0].transpose(0, 1), None, None, x[1], x[2], training=True)", 3,
     {F(5, 6), F(5), F(5)}, 0, 0, 0},
    {"slice.into_group_norm", group_norm_of_sliced,
     "F.group_norm(x[0][:, 0:8:2], 2, x[1], x[2], 1e-5)", 3, {F(2, 8, 3, 3), F(4), F(4)}, 0, 0, 0},
    {"permute.into_layer_norm2d", layer_norm2d_of_nhwc,
     "F.layer_norm(x[0], (5,), x[1], x[2], 1e-6).permute(0, 3, 1, 2)", 3,
     {F(2, 3, 4, 5), F(5), F(5)}, 0, 0, 0},
    {"expand.prepend", expand_prepend, "x[0].expand(4, 3, 5)", 1, {F(3, 1)}, 0, 0, 0},
    {"expand.keep_size", expand_keep, "x[0].expand(2, -1, 4)", 1, {F(1, 3, 1)}, 0, 0, 0},
    {"expand.into_concat", expand_into_concat, "torch.cat([x[0].expand(2, -1, -1), x[1]], 1)",
     2, {F(1, 1, 4), F(2, 3, 4)}, 0, 0, 0},
    {"expand.transposed_into_mul", expand_into_mul,
     "x[0].transpose(0, 1).expand(3, 4, 2) * x[1]", 2, {F(2, 4), F(3, 4, 2)}, 0, 0, 0},
    {"expand.reshaped", expand_reshaped, "x[0].expand(3, 4).reshape(12)", 1, {F(3, 1)}, 0, 0, 0},
    {0},
};
