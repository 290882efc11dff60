/* Op table rows: conv2d, the 2-D pools and resizing (interpolate). */
#include "../op_rows.h"

/* One row function per parameter set; BIAS is x[2] or NULL. */
#define CONV(NAME, SH, SW, PH, PW, DH, DW, G, BIAS)                                  \
    static kd_tensor *NAME(kd_tensor *const *x)                                     \
    {                                                                               \
        kd_conv2d_params p = {{SH, SW}, {PH, PW}, {DH, DW}, G};                     \
        return kd_conv2d(x[0], x[1], BIAS, &p);                                     \
    }

CONV(conv_3x3_p1, 1, 1, 1, 1, 1, 1, 1, x[2])
CONV(conv_3x3_p1_nobias, 1, 1, 1, 1, 1, 1, 1, NULL)
CONV(conv_3x3_s2_p1, 2, 2, 1, 1, 1, 1, 1, x[2])
CONV(conv_1x1, 1, 1, 0, 0, 1, 1, 1, x[2])
/* x given as a channel slice: a non-contiguous input. */
static kd_tensor *conv_sliced(kd_tensor *const *x)
{
    kd_conv2d_params p = {{1, 1}, {1, 1}, {1, 1}, 1};
    return kd_conv2d(kd_slice(x[0], 1, 1, 4, 1), x[1], x[2], &p);
}
CONV(conv_1x1_s2_nobias, 2, 2, 0, 0, 1, 1, 1, NULL)
CONV(conv_dil2, 1, 1, 2, 2, 2, 2, 1, x[2])
CONV(conv_groups2, 1, 1, 1, 1, 1, 1, 2, x[2])
CONV(conv_dw7_p3, 1, 1, 3, 3, 1, 1, 4, x[2])
CONV(conv_dw3_s2_p1, 2, 2, 1, 1, 1, 1, 3, x[2])
CONV(conv_dw3_dil2_nobias, 1, 1, 2, 1, 2, 1, 3, NULL)
CONV(conv_rect_nobias, 2, 1, 1, 2, 1, 2, 1, NULL)

static kd_tensor *max_3x3_s2_p1(kd_tensor *const *x)
{
    return kd_max_pool2d(x[0], (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1});
}
static kd_tensor *max_2x2(kd_tensor *const *x)
{
    return kd_max_pool2d(x[0], (int[]){2, 2}, (int[]){2, 2}, (int[]){0, 0});
}
static kd_tensor *max_rect(kd_tensor *const *x)
{
    return kd_max_pool2d(x[0], (int[]){3, 2}, (int[]){2, 1}, (int[]){1, 0});
}
static kd_tensor *avg_3x3_s2_p1_incl(kd_tensor *const *x)
{
    return kd_avg_pool2d(x[0], (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1}, true);
}
static kd_tensor *avg_3x3_s2_p1_excl(kd_tensor *const *x)
{
    return kd_avg_pool2d(x[0], (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1}, false);
}
static kd_tensor *avg_2x2(kd_tensor *const *x)
{
    return kd_avg_pool2d(x[0], (int[]){2, 2}, (int[]){2, 2}, (int[]){0, 0}, true);
}
static kd_tensor *adaptive_1x1(kd_tensor *const *x) { return kd_adaptive_avg_pool2d(x[0], 1, 1); }
static kd_tensor *adaptive_3x2(kd_tensor *const *x) { return kd_adaptive_avg_pool2d(x[0], 3, 2); }
static kd_tensor *adaptive_same(kd_tensor *const *x) { return kd_adaptive_avg_pool2d(x[0], 4, 4); }

/* One row function per resize; the mode and antialias flag in the name. */
#define RESIZE(NAME, OH, OW, MODE, AA)                                              \
    static kd_tensor *NAME(kd_tensor *const *x)                                     \
    {                                                                               \
        return kd_interpolate(x[0], OH, OW, MODE, AA);                              \
    }
RESIZE(nearest_7x9, 7, 9, KD_INTERP_NEAREST, false)
RESIZE(nearest_3x4, 3, 4, KD_INTERP_NEAREST, false)
RESIZE(nearest_6x8, 6, 8, KD_INTERP_NEAREST, false)
RESIZE(bilinear_7x11, 7, 11, KD_INTERP_BILINEAR, false)
RESIZE(bilinear_4x3, 4, 3, KD_INTERP_BILINEAR, false)
RESIZE(bicubic_9x7, 9, 7, KD_INTERP_BICUBIC, false)
RESIZE(bicubic_4x6, 4, 6, KD_INTERP_BICUBIC, false)
RESIZE(bilinear_aa_4x3, 4, 3, KD_INTERP_BILINEAR, true)
RESIZE(bilinear_aa_7x6, 7, 6, KD_INTERP_BILINEAR, true)
RESIZE(bicubic_aa_7x7, 7, 7, KD_INTERP_BICUBIC, true)
RESIZE(bicubic_aa_4x5, 4, 5, KD_INTERP_BICUBIC, true)
RESIZE(bicubic_same, 5, 4, KD_INTERP_BICUBIC, false)
/* A grid of tokens [1, G, G, D] resized as channels, as timm resizes a ViT
 * position embedding: a permuted (non-contiguous) input. */
static kd_tensor *bicubic_aa_tokens(kd_tensor *const *x)
{
    return kd_interpolate(kd_permute(x[0], (int[]){0, 3, 1, 2}), 6, 6, KD_INTERP_BICUBIC, true);
}

#define F(...) {KT_FLOAT, KD_NARGS(__VA_ARGS__), {__VA_ARGS__}, 0}
#define KD_NARGS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

const kt_op_row kt_rows_conv[] = {
    {"conv2d.3x3_pad1", conv_3x3_p1, "F.conv2d(x[0], x[1], x[2], padding=1)", 3,
     {F(2, 3, 5, 5), F(4, 3, 3, 3), F(4)}, 0, 0, 0},
    {"conv2d.3x3_s2_pad1", conv_3x3_s2_p1, "F.conv2d(x[0], x[1], x[2], stride=2, padding=1)",
     3, {F(2, 3, 7, 6), F(4, 3, 3, 3), F(4)}, 0, 0, 0},
    {"conv2d.1x1", conv_1x1, "F.conv2d(x[0], x[1], x[2])", 3,
     {F(2, 5, 4, 3), F(6, 5, 1, 1), F(6)}, 0, 0, 0},
    {"conv2d.1x1_large_plane", conv_1x1, "F.conv2d(x[0], x[1], x[2])", 3,
     {F(2, 3, 12, 12), F(2, 3, 1, 1), F(2)}, 0, 0, 0},
    {"conv2d.1x1_s2_nobias", conv_1x1_s2_nobias, "F.conv2d(x[0], x[1], None, stride=2)", 2,
     {F(2, 4, 5, 5), F(3, 4, 1, 1)}, 0, 0, 0},
    {"conv2d.dilation2", conv_dil2, "F.conv2d(x[0], x[1], x[2], padding=2, dilation=2)", 3,
     {F(1, 2, 7, 7), F(3, 2, 3, 3), F(3)}, 0, 0, 0},
    {"conv2d.groups2", conv_groups2, "F.conv2d(x[0], x[1], x[2], padding=1, groups=2)", 3,
     {F(2, 4, 5, 5), F(6, 2, 3, 3), F(6)}, 0, 0, 0},
    {"conv2d.depthwise_7x7_pad3", conv_dw7_p3,
     "F.conv2d(x[0], x[1], x[2], padding=3, groups=4)", 3,
     {F(2, 4, 6, 6), F(4, 1, 7, 7), F(4)}, 0, 0, 0},
    {"conv2d.depthwise_3x3_s2_pad1", conv_dw3_s2_p1,
     "F.conv2d(x[0], x[1], x[2], stride=2, padding=1, groups=3)", 3,
     {F(2, 3, 7, 6), F(3, 1, 3, 3), F(3)}, 0, 0, 0},
    {"conv2d.depthwise_dilation2_nobias", conv_dw3_dil2_nobias,
     "F.conv2d(x[0], x[1], None, padding=(2, 1), dilation=(2, 1), groups=3)", 2,
     {F(2, 3, 6, 5), F(3, 1, 3, 3)}, 0, 0, 0},
    {"conv2d.rect_nobias", conv_rect_nobias,
     "F.conv2d(x[0], x[1], None, stride=(2, 1), padding=(1, 2), dilation=(1, 2))", 2,
     {F(2, 3, 7, 5), F(2, 3, 3, 2)}, 0, 0, 0},
    {"conv2d.sliced_input", conv_sliced, "F.conv2d(x[0][:, 1:4], x[1], x[2], padding=1)", 3,
     {F(2, 5, 4, 4), F(2, 3, 3, 3), F(2)}, 0, 0, 0},
    {"conv2d.3x3_nobias", conv_3x3_p1_nobias, "F.conv2d(x[0], x[1], None, padding=1)", 2,
     {F(1, 2, 4, 6), F(3, 2, 3, 3)}, 0, 0, 0},
    {"max_pool2d.3x3_s2_p1", max_3x3_s2_p1, "F.max_pool2d(x[0], 3, 2, 1)", 1,
     {F(2, 3, 7, 6)}, 0, 0, 0},
    {"max_pool2d.2x2", max_2x2, "F.max_pool2d(x[0], 2)", 1, {F(2, 3, 6, 5)}, 0, 0, 0},
    {"max_pool2d.rect", max_rect, "F.max_pool2d(x[0], (3, 2), (2, 1), (1, 0))", 1,
     {F(1, 2, 7, 5)}, 0, 0, 0},
    {"avg_pool2d.3x3_s2_p1_include_pad", avg_3x3_s2_p1_incl,
     "F.avg_pool2d(x[0], 3, 2, 1, count_include_pad=True)", 1, {F(2, 3, 7, 6)}, 0, 0, 0},
    {"avg_pool2d.3x3_s2_p1_exclude_pad", avg_3x3_s2_p1_excl,
     "F.avg_pool2d(x[0], 3, 2, 1, count_include_pad=False)", 1, {F(2, 3, 7, 6)}, 0, 0, 0},
    {"avg_pool2d.2x2", avg_2x2, "F.avg_pool2d(x[0], 2)", 1, {F(2, 3, 6, 5)}, 0, 0, 0},
    {"adaptive_avg_pool2d.1x1", adaptive_1x1, "F.adaptive_avg_pool2d(x[0], 1)", 1,
     {F(2, 3, 5, 4)}, 0, 0, 0},
    {"adaptive_avg_pool2d.5x7_to_3x2", adaptive_3x2, "F.adaptive_avg_pool2d(x[0], (3, 2))", 1,
     {F(2, 3, 5, 7)}, 0, 0, 0},
    {"adaptive_avg_pool2d.same", adaptive_same, "F.adaptive_avg_pool2d(x[0], 4)", 1,
     {F(1, 2, 4, 4)}, 0, 0, 0},
    {"interpolate.nearest_up", nearest_7x9, "F.interpolate(x[0], size=(7, 9))", 1,
     {F(2, 3, 4, 5)}, 0, 0, 0},
    {"interpolate.nearest_down", nearest_3x4, "F.interpolate(x[0], size=(3, 4))", 1,
     {F(2, 2, 7, 9)}, 0, 0, 0},
    {"interpolate.nearest_double", nearest_6x8, "F.interpolate(x[0], size=(6, 8))", 1,
     {F(1, 2, 3, 4)}, 0, 0, 0},
    {"interpolate.bilinear_up", bilinear_7x11,
     "F.interpolate(x[0], size=(7, 11), mode='bilinear', align_corners=False)", 1,
     {F(2, 3, 4, 5)}, 0, 0, 0},
    {"interpolate.bilinear_down", bilinear_4x3,
     "F.interpolate(x[0], size=(4, 3), mode='bilinear', align_corners=False)", 1,
     {F(2, 2, 9, 8)}, 0, 0, 0},
    {"interpolate.bicubic_up", bicubic_9x7,
     "F.interpolate(x[0], size=(9, 7), mode='bicubic', align_corners=False)", 1,
     {F(2, 3, 4, 5)}, 0, 0, 0},
    {"interpolate.bicubic_down", bicubic_4x6,
     "F.interpolate(x[0], size=(4, 6), mode='bicubic', align_corners=False)", 1,
     {F(2, 2, 9, 10)}, 0, 0, 0},
    {"interpolate.bicubic_same_size", bicubic_same,
     "F.interpolate(x[0], size=(5, 4), mode='bicubic', align_corners=False)", 1,
     {F(1, 2, 5, 4)}, 0, 0, 0},
    {"interpolate.bilinear_antialias_down", bilinear_aa_4x3,
     "F.interpolate(x[0], size=(4, 3), mode='bilinear', align_corners=False, antialias=True)",
     1, {F(2, 2, 9, 8)}, 0, 0, 0},
    {"interpolate.bilinear_antialias_up", bilinear_aa_7x6,
     "F.interpolate(x[0], size=(7, 6), mode='bilinear', align_corners=False, antialias=True)",
     1, {F(2, 2, 4, 5)}, 0, 0, 0},
    {"interpolate.bicubic_antialias_up", bicubic_aa_7x7,
     "F.interpolate(x[0], size=(7, 7), mode='bicubic', align_corners=False, antialias=True)",
     1, {F(2, 3, 4, 4)}, 0, 0, 0},
    {"interpolate.bicubic_antialias_down", bicubic_aa_4x5,
     "F.interpolate(x[0], size=(4, 5), mode='bicubic', align_corners=False, antialias=True)",
     1, {F(2, 2, 11, 9)}, 0, 0, 0},
    {"interpolate.bicubic_antialias_token_grid", bicubic_aa_tokens,
     "F.interpolate(x[0].permute(0, 3, 1, 2), size=(6, 6), mode='bicubic', "
     "align_corners=False, antialias=True)", 1, {F(1, 4, 4, 5)}, 0, 0, 0},
    {0},
};
