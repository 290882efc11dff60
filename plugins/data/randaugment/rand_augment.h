/* timm 0.9.16's RandAugment (timm.data.auto_augment.rand_augment_transform)
 * on u8 HWC images, on the Pillow operations of pil_ops.h.
 *
 * A config string "rand-<section>-<section>..." sets: m (magnitude, an
 * integer), n (ops per image), p (chance each chosen op runs), mstd
 * (magnitude noise: a normal's std, or uniform in [0, m] when inf or above
 * 100), mmax (magnitude ceiling, 10 by default), inc (the "increasing"
 * op set; as in timm any value turns it on, inc0 included), t<set> (the
 * first one counts: "tweights" and "t3aw" pick distinct ops with timm's
 * weights, "t3a" from SolarizeIncreasing, Desaturate and GaussianBlur;
 * any other name leaves the default sets, as in timm). Other
 * sections without a digit are ignored, as timm ignores them; an unknown
 * key is refused.
 *
 * Draws per image (each maps to one Python call timm makes, so a test can
 * drive timm's code with the same numbers):
 *   n x kd_rng_below(ops)                  np.random.choice(ops, n)
 *   or, weighted: numpy's choice without replacement, rounds of
 *   kd_rng_uniform (one per op still missing) against the cumulative
 *   weights of the ops not yet picked        np.random.choice(ops, n,
 *                                              replace=False, p=weights)
 *   for each chosen op, in order:
 *     when p < 1: kd_rng_uniform, skip the op when it is above p
 *     when mstd > 0: uniform(0, m) or m + mstd * kd_rng_normal
 *     a signed op: kd_rng_uniform, negated when above 0.5
 *     a geometric op with random interpolation: kd_rng_below(2),
 *       0 bilinear, 1 bicubic                random.choice
 */
#ifndef KD_RAND_AUGMENT_H
#define KD_RAND_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/rng.h>
#include <kdengine/status.h>

#include "pil_ops.h"

typedef enum kd_ra_op {
    KD_RA_AUTOCONTRAST = 0,
    KD_RA_EQUALIZE,
    KD_RA_INVERT,
    KD_RA_ROTATE,
    KD_RA_POSTERIZE,
    KD_RA_POSTERIZE_INC,
    KD_RA_SOLARIZE,
    KD_RA_SOLARIZE_INC,
    KD_RA_SOLARIZE_ADD,
    KD_RA_COLOR,
    KD_RA_COLOR_INC,
    KD_RA_CONTRAST,
    KD_RA_CONTRAST_INC,
    KD_RA_BRIGHTNESS,
    KD_RA_BRIGHTNESS_INC,
    KD_RA_SHARPNESS,
    KD_RA_SHARPNESS_INC,
    KD_RA_SHEAR_X,
    KD_RA_SHEAR_Y,
    KD_RA_TRANSLATE_X_REL,
    KD_RA_TRANSLATE_Y_REL,
    KD_RA_DESATURATE,
    KD_RA_GAUSSIAN_BLUR,
    KD_RA_OP_COUNT
} kd_ra_op;

#define KD_RA_MAX_LAYERS 16
#define KD_RA_RANDOM_FILTER (-1)

typedef struct kd_ra_config {
    /* from the config string */
    double magnitude;
    int num_layers;
    double prob;
    double magnitude_std; /* 0: fixed; INFINITY: uniform in [0, magnitude] */
    double magnitude_max; /* 0: timm's 10 */
    bool increasing;
    int n_ops;
    kd_ra_op ops[KD_RA_OP_COUNT]; /* the set choices are made from */
    bool weighted;                /* distinct ops drawn with these weights */
    double weights[KD_RA_OP_COUNT]; /* normalized as numpy normalizes them */
    /* timm's hparams */
    double translate_pct;
    uint8_t fill[KD_PIL_MAX_CHANNELS]; /* img_mean, per channel */
    int filter;                        /* a kd_pil_filter or KD_RA_RANDOM_FILTER */
} kd_ra_config;

/* One chosen op of an image. */
typedef struct kd_ra_step {
    kd_ra_op op;
    bool applied;
    double magnitude; /* after noise and clamping */
    double level;     /* the op's argument (degrees, factor, bits, ...) */
    kd_pil_filter filter;
} kd_ra_step;

typedef struct kd_ra_plan {
    int n;
    kd_ra_step steps[KD_RA_MAX_LAYERS];
} kd_ra_plan;

/* timm's op name ("ShearX", "PosterizeIncreasing"); NULL out of range. */
const char *kd_ra_op_name(kd_ra_op op);

/* Parses config_str into cfg's string fields (the hparams are left as they
 * are); KD_ERR_INVALID naming the bad section. */
kd_status kd_ra_parse(const char *config_str, kd_ra_config *cfg);

/* The argument timm's level function gives op at magnitude m; draws the
 * sign of a signed op. */
double kd_ra_level(const kd_ra_config *cfg, kd_ra_op op, double m, kd_rng *rng);

/* Whether op resamples (and so draws an interpolation when it is random). */
bool kd_ra_is_geometric(kd_ra_op op);

/* A chosen op that runs at `magnitude` (after noise and clamping): its
 * level (drawing the sign of a signed op), then its interpolation. */
void kd_ra_draw_step(const kd_ra_config *cfg, kd_ra_op op, double magnitude, kd_rng *rng,
                     kd_ra_step *s);

/* Draws one image's plan (see the order above). */
void kd_ra_draw(const kd_ra_config *cfg, kd_rng *rng, kd_ra_plan *plan);

/* dst = step applied to src (same size); scratch holds an image. Only 1-
 * and 3-channel images (KD_ERR_INVALID otherwise). */
kd_status kd_ra_apply_step(const kd_ra_config *cfg, const kd_ra_step *step,
                           const kd_pil_image *src, uint8_t *dst, uint8_t *scratch);

#endif
