/* Mixup and CutMix on plain buffers, with timm 0.9.16's semantics
 * (timm.data.mixup.Mixup): the random part (a plan) is drawn apart from
 * the pixel work, so a test can drive the pixel work with timm's own draws
 * and check the draws' distributions on their own.
 *
 * Every element i of a batch of n mixes with its partner n - 1 - i (the
 * batch flipped), as timm does. A plan says, per element, whether it is
 * mixed, how (a blend or a pasted box) and its lambda: the weight of its
 * own image and label. Targets are timm's mixup_target: the smoothed
 * one-hot of the element's label times lambda plus the smoothed one-hot of
 * the partner's label times 1 - lambda.
 *
 * Arithmetic, for bit-equality with timm on PyTorch's CPU kernels: images
 * and targets are f32, mixed as x * (float)lam + y * (float)(1 - lam), two
 * roundings and an add, never fused (the plugin is built with
 * -ffp-contract=off). In "batch" mode lambda is timm's float64; in "elem"
 * and "pair" modes timm keeps it in a float32 array, so the plan rounds it
 * to float32 first. */
#ifndef KD_MIX_PLAN_H
#define KD_MIX_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/rng.h>
#include <kdengine/status.h>

typedef enum kd_mix_mode {
    KD_MIX_BATCH = 0, /* one draw for the whole batch */
    KD_MIX_PAIR,      /* one draw per pair (i, n - 1 - i), applied to both */
    KD_MIX_ELEM       /* one draw per element */
} kd_mix_mode;

typedef struct kd_mix_config {
    double mixup_alpha;  /* Beta(a, a) for a blend; 0: no mixup */
    double cutmix_alpha; /* Beta(a, a) for a box; 0: no cutmix (forced to 1
                            with a min/max box, as timm does) */
    bool has_minmax;     /* box sides uniform in [min, max) of the image */
    double minmax[2];
    double prob;        /* chance that a batch / pair / element is mixed */
    double switch_prob; /* chance of cutmix when both are on */
    kd_mix_mode mode;
    bool correct_lam; /* lambda from the clipped box's area (always with
                         min/max boxes) */
    double label_smoothing;
} kd_mix_config;

/* A box [top, bottom) x [left, right) of an image. */
typedef struct kd_mix_box {
    int64_t top, bottom, left, right;
} kd_mix_box;

/* One element's mixing. */
typedef struct kd_mix_elem {
    bool mixed;     /* false: image and target as they are (lam 1) */
    bool cutmix;    /* a box of the partner's pixels pasted in, else a blend */
    double lam;     /* the weight of the element's own image and label */
    kd_mix_box box; /* cutmix only */
} kd_mix_elem;

/* What the draws of one batch / pair / element are, before the box. */
typedef struct kd_mix_draw {
    bool apply;
    bool cutmix;
    double lam; /* Beta draw (the box's lambda for a centred box) */
} kd_mix_draw;

/* Beta(a, a) from two Gamma(a) draws (Marsaglia and Tsang), in log space so
 * that small alphas neither underflow nor divide 0 by 0. a > 0. */
double kd_mix_beta(kd_rng *rng, double a);

/* Draws for one batch / pair / element, in this order: one kd_rng_uniform
 * against prob; when both alphas are on, one against switch_prob; one Beta
 * (two Gammas). All of them are taken even when the first says "not
 * applied", so later units draw from the same positions. */
kd_mix_draw kd_mix_draw_unit(const kd_mix_config *cfg, kd_rng *rng);

/* timm's rand_bbox for a box of lambda `lam` centred at (cy, cx) of an
 * h x w image: sides int(h * sqrt(1 - lam)), int(w * sqrt(1 - lam)) in
 * float64, half of each side either way of the centre, clipped. */
kd_mix_box kd_mix_box_centred(int64_t h, int64_t w, double lam, int64_t cy, int64_t cx);

/* The box's lambda as timm corrects it: 1 - area / (h * w), float64. */
double kd_mix_box_lam(int64_t h, int64_t w, kd_mix_box box);

/* Draws a box: for a centred box cy = kd_rng_below(h), then cx =
 * kd_rng_below(w); for min/max, cut_h, cut_w, top, left each by
 * kd_rng_below over timm's ranges. KD_ERR_INVALID when a min/max range is
 * empty for this image size. */
kd_status kd_mix_draw_box(const kd_mix_config *cfg, kd_rng *rng, int64_t h, int64_t w,
                          double lam, kd_mix_box *box);

/* The plan for a batch of n h x w images: plan[n]. Pair mode leaves the
 * middle element of an odd batch unmixed (timm refuses odd batches). */
kd_status kd_mix_plan_draw(const kd_mix_config *cfg, kd_rng *rng, int64_t n, int64_t h,
                           int64_t w, kd_mix_elem *plan);

/* How many draws a batch of n takes: batch 1, pair n / 2, elem n. */
int64_t kd_mix_units(const kd_mix_config *cfg, int64_t n);

/* Spreads the units' mixings, plan[0 .. units), over the batch: batch mode
 * copies plan[0] to all, pair mode mirrors plan[i] to n - 1 - i. */
void kd_mix_plan_expand(const kd_mix_config *cfg, int64_t n, kd_mix_elem *plan);

/* Completes a unit's draw into an element's mixing: rounds lambda as the
 * mode does, and for cutmix sets the box and the corrected lambda. Used by
 * kd_mix_plan_draw and by tests driving timm's draws. */
void kd_mix_elem_from(const kd_mix_config *cfg, kd_mix_draw d, kd_mix_box box, int64_t h,
                      int64_t w, kd_mix_elem *e);

/* out[n, c, h, w] = the plan applied to x (f32, contiguous); x and out
 * must not overlap. */
void kd_mix_images(const kd_mix_elem *plan, int64_t n, int64_t c, int64_t h, int64_t w,
                   const float *x, float *out);

/* targets[n, classes]: timm's mixup_target. With soft_in (an earlier
 * transform's targets, [n, classes]) those rows are mixed as they are;
 * otherwise labels' one-hots, smoothed by cfg->label_smoothing.
 * KD_ERR_INVALID for a label outside [0, classes). */
kd_status kd_mix_targets(const kd_mix_config *cfg, const kd_mix_elem *plan, int64_t n,
                         int64_t classes, const int64_t *labels, const float *soft_in,
                         float *targets);

#endif
