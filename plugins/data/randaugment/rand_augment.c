/* RandAugment: config strings, timm's op sets and level functions, the
 * per-image draws and the ops on pil_ops.h. See rand_augment.h. */
#include "rand_augment.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const OP_NAMES[KD_RA_OP_COUNT] = {
    "AutoContrast",       "Equalize",        "Invert",
    "Rotate",             "Posterize",       "PosterizeIncreasing",
    "Solarize",           "SolarizeIncreasing", "SolarizeAdd",
    "Color",              "ColorIncreasing", "Contrast",
    "ContrastIncreasing", "Brightness",      "BrightnessIncreasing",
    "Sharpness",          "SharpnessIncreasing", "ShearX",
    "ShearY",             "TranslateXRel",   "TranslateYRel",
    "Desaturate",         "GaussianBlur",
};

/* timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in order (the
 * order np.random.choice indexes). */
static const kd_ra_op RAND_OPS[] = {
    KD_RA_AUTOCONTRAST, KD_RA_EQUALIZE, KD_RA_INVERT,   KD_RA_ROTATE,  KD_RA_POSTERIZE,
    KD_RA_SOLARIZE,     KD_RA_SOLARIZE_ADD, KD_RA_COLOR, KD_RA_CONTRAST, KD_RA_BRIGHTNESS,
    KD_RA_SHARPNESS,    KD_RA_SHEAR_X,  KD_RA_SHEAR_Y,  KD_RA_TRANSLATE_X_REL,
    KD_RA_TRANSLATE_Y_REL};
static const kd_ra_op RAND_INCREASING_OPS[] = {
    KD_RA_AUTOCONTRAST,    KD_RA_EQUALIZE,        KD_RA_INVERT,       KD_RA_ROTATE,
    KD_RA_POSTERIZE_INC,   KD_RA_SOLARIZE_INC,    KD_RA_SOLARIZE_ADD, KD_RA_COLOR_INC,
    KD_RA_CONTRAST_INC,    KD_RA_BRIGHTNESS_INC,  KD_RA_SHARPNESS_INC, KD_RA_SHEAR_X,
    KD_RA_SHEAR_Y,         KD_RA_TRANSLATE_X_REL, KD_RA_TRANSLATE_Y_REL};
#define N_RAND_OPS ((int)(sizeof RAND_OPS / sizeof RAND_OPS[0]))

/* timm's _RAND_WEIGHTED_0 ("tweights"), _RAND_3A and _RAND_WEIGHTED_3A
 * ("t3aw"), in their order. */
static const kd_ra_op WEIGHTED_OPS[] = {
    KD_RA_ROTATE,          KD_RA_SHEAR_X,         KD_RA_SHEAR_Y,
    KD_RA_TRANSLATE_X_REL, KD_RA_TRANSLATE_Y_REL, KD_RA_COLOR_INC,
    KD_RA_SHARPNESS_INC,   KD_RA_AUTOCONTRAST,    KD_RA_SOLARIZE_INC,
    KD_RA_SOLARIZE_ADD,    KD_RA_CONTRAST_INC,    KD_RA_BRIGHTNESS_INC,
    KD_RA_EQUALIZE,        KD_RA_POSTERIZE_INC,   KD_RA_INVERT};
static const double WEIGHTS[] = {3, 2, 2, 1, 1, .25, .25, .25, .05, .05, .05, .05, .05, .05, .05};
static const kd_ra_op THREE_A_OPS[] = {KD_RA_SOLARIZE_INC, KD_RA_DESATURATE, KD_RA_GAUSSIAN_BLUR};
static const kd_ra_op THREE_AW_OPS[] = {
    KD_RA_SOLARIZE_INC,   KD_RA_DESATURATE,    KD_RA_GAUSSIAN_BLUR, KD_RA_ROTATE,
    KD_RA_SHEAR_X,        KD_RA_SHEAR_Y,       KD_RA_POSTERIZE_INC, KD_RA_AUTOCONTRAST,
    KD_RA_COLOR_INC,      KD_RA_SHARPNESS_INC, KD_RA_CONTRAST_INC,  KD_RA_BRIGHTNESS_INC,
    KD_RA_EQUALIZE,       KD_RA_INVERT};
static const double THREE_AW_WEIGHTS[] = {6, 6, 6, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1};

typedef struct op_set {
    const char *name; /* after the 't' */
    const kd_ra_op *ops;
    const double *weights; /* NULL: uniform, with replacement */
    int n;
} op_set;

#define SET(name, ops, weights) {name, ops, weights, (int)(sizeof ops / sizeof ops[0])}
static const op_set NAMED_SETS[] = {
    SET("weights", WEIGHTED_OPS, WEIGHTS),
    SET("3a", THREE_A_OPS, NULL),
    SET("3aw", THREE_AW_OPS, THREE_AW_WEIGHTS),
};
#undef SET

/* numpy's float64 sum of n <= 128 values: eight running sums added as a
 * tree, then the tail one by one. */
static double numpy_sum(const double *a, int n)
{
    double res = 0;
    if (n < 8) {
        for (int i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    double r[8];
    memcpy(r, a, sizeof r);
    int i = 8;
    for (; i < n - n % 8; i += 8)
        for (int j = 0; j < 8; j++)
            r[j] += a[i + j];
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        res += a[i];
    return res;
}

const char *kd_ra_op_name(kd_ra_op op)
{
    return (int)op >= 0 && op < KD_RA_OP_COUNT ? OP_NAMES[op] : NULL;
}

/* One "<key><value>" section: the key is what precedes the first digit
 * (timm's re.split(r'(\d.*)')). */
static kd_status parse_section(const char *config, const char *section, size_t len,
                               kd_ra_config *cfg, bool *seen_mstd, bool *seen_mmax)
{
    size_t k = 0;
    while (k < len && !isdigit((unsigned char)section[k]))
        k++;
    if (k == len)
        return KD_OK; /* no value: timm skips the section */
    char key[16], value[48];
    if (k >= sizeof key || len - k >= sizeof value)
        return kd_error(KD_ERR_INVALID, "randaugment: config '%s': section '%.*s' is too long",
                        config, (int)len, section);
    memcpy(key, section, k);
    key[k] = '\0';
    memcpy(value, section + k, len - k);
    value[len - k] = '\0';
    char *end;
    errno = 0;
    if (strcmp(key, "mstd") == 0 || strcmp(key, "p") == 0) {
        double v = strtod(value, &end);
        if (*end || errno)
            return kd_error(KD_ERR_INVALID, "randaugment: config '%s': '%s' is not a number",
                            config, value);
        if (key[0] == 'p') {
            cfg->prob = v;
        } else if (!*seen_mstd) { /* timm's hparams.setdefault: the first counts */
            cfg->magnitude_std = v > 100 ? INFINITY : v;
            *seen_mstd = true;
        }
        return KD_OK;
    }
    if (strcmp(key, "inc") == 0) {
        cfg->increasing = true; /* timm: bool(val) of a non-empty string */
        return KD_OK;
    }
    long v = strtol(value, &end, 10);
    if (*end || errno || v < 0 || v > 1000)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: config '%s': '%s' (for %s) is not an integer in [0, 1000]",
                        config, value, key);
    if (strcmp(key, "m") == 0) {
        cfg->magnitude = (double)v;
    } else if (strcmp(key, "n") == 0) {
        cfg->num_layers = (int)v;
    } else if (strcmp(key, "mmax") == 0) {
        if (!*seen_mmax) /* setdefault, as mstd */
            cfg->magnitude_max = (double)v;
        *seen_mmax = true;
    } else {
        return kd_error(KD_ERR_INVALID,
                        "randaugment: config '%s': unknown section '%.*s' (known: m, n, p, "
                        "mstd, mmax, inc, t<set>)",
                        config, (int)len, section);
    }
    return KD_OK;
}

kd_status kd_ra_parse(const char *config_str, kd_ra_config *cfg)
{
    cfg->magnitude = 10;
    cfg->num_layers = 2;
    cfg->prob = 0.5;
    cfg->magnitude_std = 0;
    cfg->magnitude_max = 0;
    cfg->increasing = false;
    if (strncmp(config_str, "rand", 4) != 0 || (config_str[4] && config_str[4] != '-'))
        return kd_error(KD_ERR_INVALID,
                        "randaugment: config '%s' must start with 'rand' (e.g. "
                        "'rand-m9-mstd0.5-inc1')",
                        config_str);
    const char *s = config_str + 4, *set_name = NULL;
    size_t set_len = 0;
    bool seen_mstd = false, seen_mmax = false;
    while (*s == '-') {
        const char *section = ++s;
        while (*s && *s != '-')
            s++;
        size_t len = (size_t)(s - section);
        if (len > 0 && section[0] == 't') {
            if (!set_name) {
                set_name = section + 1;
                set_len = len - 1;
            }
            continue;
        }
        kd_status st = parse_section(config_str, section, len, cfg, &seen_mstd, &seen_mmax);
        if (st != KD_OK)
            return st;
    }
    if (cfg->num_layers > KD_RA_MAX_LAYERS) /* n0: no op, as in timm */
        return kd_error(KD_ERR_INVALID, "randaugment: config '%s': n %d is outside [0, %d]",
                        config_str, cfg->num_layers, KD_RA_MAX_LAYERS);
    const op_set *named = NULL;
    for (size_t i = 0; set_name && i < sizeof NAMED_SETS / sizeof NAMED_SETS[0]; i++)
        if (strlen(NAMED_SETS[i].name) == set_len &&
            memcmp(NAMED_SETS[i].name, set_name, set_len) == 0)
            named = &NAMED_SETS[i];
    cfg->weighted = named && named->weights;
    if (named) {
        if (cfg->weighted && cfg->num_layers > named->n)
            return kd_error(KD_ERR_INVALID,
                            "randaugment: config '%s': n %d distinct ops from the %d of set "
                            "'%s'", config_str, cfg->num_layers, named->n, named->name);
        cfg->n_ops = named->n;
        memcpy(cfg->ops, named->ops, (size_t)named->n * sizeof *named->ops);
        if (cfg->weighted) {
            double total = numpy_sum(named->weights, named->n);
            for (int i = 0; i < named->n; i++)
                cfg->weights[i] = named->weights[i] / total;
        }
        return KD_OK;
    }
    const kd_ra_op *set = cfg->increasing ? RAND_INCREASING_OPS : RAND_OPS;
    cfg->n_ops = N_RAND_OPS;
    memcpy(cfg->ops, set, sizeof RAND_OPS);
    return KD_OK;
}

static double randomly_negate(double v, kd_rng *rng) { return kd_rng_uniform(rng) > 0.5 ? -v : v; }

/* timm's _minmax_level_to_arg: lo + (hi - lo) * f, clamped. */
static double minmax_level(double f, double lo, double hi)
{
    double step = (hi - lo) * f;
    return fmax(lo, fmin(hi, lo + step));
}

double kd_ra_level(const kd_ra_config *cfg, kd_ra_op op, double m, kd_rng *rng)
{
    double f = m / 10.0; /* timm's _LEVEL_DENOM */
    switch (op) {
    case KD_RA_ROTATE:
        return randomly_negate(f * 30.0, rng);
    case KD_RA_POSTERIZE:
        return (double)(int)(f * 4);
    case KD_RA_POSTERIZE_INC:
        return (double)(4 - (int)(f * 4));
    case KD_RA_SOLARIZE:
        return fmin(256, (double)(int)(f * 256));
    case KD_RA_SOLARIZE_INC:
        return 256 - fmin(256, (double)(int)(f * 256));
    case KD_RA_SOLARIZE_ADD:
        return fmin(128, (double)(int)(f * 110));
    case KD_RA_COLOR:
    case KD_RA_CONTRAST:
    case KD_RA_BRIGHTNESS:
    case KD_RA_SHARPNESS: {
        double scaled = f * 1.8;
        return scaled + 0.1;
    }
    case KD_RA_COLOR_INC:
    case KD_RA_CONTRAST_INC:
    case KD_RA_BRIGHTNESS_INC:
    case KD_RA_SHARPNESS_INC:
        return fmax(0.1, 1.0 + randomly_negate(f * 0.9, rng));
    case KD_RA_SHEAR_X:
    case KD_RA_SHEAR_Y:
        return randomly_negate(f * 0.3, rng);
    case KD_RA_TRANSLATE_X_REL:
    case KD_RA_TRANSLATE_Y_REL:
        return randomly_negate(f * cfg->translate_pct, rng);
    case KD_RA_DESATURATE:
        return minmax_level(f, 0.5, 1.0);
    case KD_RA_GAUSSIAN_BLUR:
        return minmax_level(f, 0.1, 2.0);
    default:
        return 0; /* AutoContrast, Equalize, Invert take none */
    }
}

bool kd_ra_is_geometric(kd_ra_op op)
{
    return op == KD_RA_ROTATE || op == KD_RA_SHEAR_X || op == KD_RA_SHEAR_Y ||
           op == KD_RA_TRANSLATE_X_REL || op == KD_RA_TRANSLATE_Y_REL;
}

/* numpy's RandomState.choice(n_ops, n, replace=False, p): rounds of one
 * uniform per op still missing, each mapped through the cumulative
 * weights of the ops not yet chosen (float64, renormalized by the last
 * sum); repeats within a round count once, in order of first appearance. */
static void choose_weighted(const kd_ra_config *cfg, kd_rng *rng, int n, int *chosen)
{
    double p[KD_RA_OP_COUNT], cdf[KD_RA_OP_COUNT], x[KD_RA_MAX_LAYERS];
    memcpy(p, cfg->weights, sizeof p);
    int found = 0;
    while (found < n) {
        int want = n - found;
        for (int k = 0; k < want; k++)
            x[k] = kd_rng_uniform(rng);
        for (int k = 0; k < found; k++)
            p[chosen[k]] = 0;
        double run = 0;
        for (int i = 0; i < cfg->n_ops; i++) {
            run += p[i];
            cdf[i] = run;
        }
        double last = cdf[cfg->n_ops - 1];
        for (int i = 0; i < cfg->n_ops; i++)
            cdf[i] /= last;
        int round_start = found;
        for (int k = 0; k < want; k++) {
            int index = 0; /* searchsorted(side='right'): the first cdf above x */
            while (index < cfg->n_ops - 1 && !(cdf[index] > x[k]))
                index++;
            bool seen = false;
            for (int j = round_start; j < found; j++)
                seen = seen || chosen[j] == index;
            if (!seen)
                chosen[found++] = index;
        }
    }
}

void kd_ra_draw(const kd_ra_config *cfg, kd_rng *rng, kd_ra_plan *plan)
{
    plan->n = cfg->num_layers;
    int chosen[KD_RA_MAX_LAYERS];
    if (cfg->weighted)
        choose_weighted(cfg, rng, plan->n, chosen);
    else
        for (int i = 0; i < plan->n; i++)
            chosen[i] = (int)kd_rng_below(rng, (uint64_t)cfg->n_ops);
    for (int i = 0; i < plan->n; i++)
        plan->steps[i] = (kd_ra_step){cfg->ops[chosen[i]], false, 0, 0, KD_PIL_NEAREST};
    for (int i = 0; i < plan->n; i++) {
        kd_ra_step *s = &plan->steps[i];
        if (cfg->prob < 1.0 && kd_rng_uniform(rng) > cfg->prob)
            continue;
        double m = cfg->magnitude;
        if (cfg->magnitude_std > 0) {
            if (isinf(cfg->magnitude_std))
                m = 0 + (m - 0) * kd_rng_uniform(rng);
            else
                m = m + cfg->magnitude_std * kd_rng_normal(rng);
        }
        double upper = cfg->magnitude_max > 0 ? cfg->magnitude_max : 10.0;
        kd_ra_draw_step(cfg, s->op, fmax(0.0, fmin(m, upper)), rng, s);
    }
}

void kd_ra_draw_step(const kd_ra_config *cfg, kd_ra_op op, double magnitude, kd_rng *rng,
                     kd_ra_step *s)
{
    s->op = op;
    s->applied = true;
    s->magnitude = magnitude;
    s->level = kd_ra_level(cfg, op, magnitude, rng);
    s->filter = KD_PIL_NEAREST;
    if (kd_ra_is_geometric(op))
        s->filter = cfg->filter != KD_RA_RANDOM_FILTER ? (kd_pil_filter)cfg->filter
                    : kd_rng_below(rng, 2)             ? KD_PIL_BICUBIC
                                                       : KD_PIL_BILINEAR;
}

/* ---------------------------------------------------------------- ops */

static void posterize_lut(int bits, uint8_t lut[256])
{
    for (int i = 0; i < 256; i++)
        lut[i] = bits >= 8 ? (uint8_t)i : bits <= 0 ? 0 : (uint8_t)(i & ~((1 << (8 - bits)) - 1));
}

static kd_status lut_op(const kd_ra_step *s, const kd_pil_image *src, uint8_t *dst)
{
    uint8_t lut[KD_PIL_MAX_CHANNELS][256];
    int arg = (int)s->level;
    for (int i = 0; i < 256; i++) {
        switch (s->op) {
        case KD_RA_INVERT:
            lut[0][i] = (uint8_t)(255 - i);
            break;
        case KD_RA_SOLARIZE:
        case KD_RA_SOLARIZE_INC:
            lut[0][i] = (uint8_t)(i < arg ? i : 255 - i);
            break;
        case KD_RA_SOLARIZE_ADD:
            lut[0][i] = (uint8_t)(i < 128 ? (i + arg > 255 ? 255 : i + arg) : i);
            break;
        default:
            break;
        }
    }
    if (s->op == KD_RA_POSTERIZE || s->op == KD_RA_POSTERIZE_INC)
        posterize_lut(arg, lut[0]);
    if (s->op == KD_RA_AUTOCONTRAST)
        kd_pil_autocontrast_lut(src, lut);
    else if (s->op == KD_RA_EQUALIZE)
        kd_pil_equalize_lut(src, lut);
    else
        for (int k = 1; k < src->channels; k++)
            memcpy(lut[k], lut[0], 256);
    kd_pil_apply_lut(src, lut, dst);
    return KD_OK;
}

/* ImageEnhance: blend(degenerate, image, factor). */
static kd_status enhance_op(const kd_ra_step *s, const kd_pil_image *src, uint8_t *dst,
                            uint8_t *degenerate)
{
    size_t n = (size_t)src->height * (size_t)src->width, c = (size_t)src->channels;
    /* timm's Desaturate is Color at min(1, max(0, 1 - level)) */
    float factor = s->op == KD_RA_DESATURATE ? (float)fmin(1.0, fmax(0.0, 1.0 - s->level))
                                             : (float)s->level;
    switch (s->op) {
    case KD_RA_DESATURATE:
    case KD_RA_COLOR:
    case KD_RA_COLOR_INC: {
        kd_pil_gray(src, dst); /* dst as scratch for the gray plane */
        for (size_t i = n; i-- > 0;)
            for (size_t k = 0; k < c; k++)
                degenerate[i * c + k] = dst[i];
        break;
    }
    case KD_RA_CONTRAST:
    case KD_RA_CONTRAST_INC:
        memset(degenerate, kd_pil_gray_mean(src), n * c);
        break;
    case KD_RA_BRIGHTNESS:
    case KD_RA_BRIGHTNESS_INC:
        memset(degenerate, 0, n * c);
        break;
    default:
        kd_pil_smooth(src, degenerate);
        break;
    }
    kd_pil_blend(degenerate, src->data, n * c, factor, dst);
    return KD_OK;
}

static kd_status geometric_op(const kd_ra_config *cfg, const kd_ra_step *s,
                              const kd_pil_image *src, uint8_t *dst)
{
    const uint8_t *fill = cfg->fill;
    if (s->op == KD_RA_ROTATE)
        return kd_pil_rotate(src, s->level, s->filter, fill, dst);
    double a[6] = {1, 0, 0, 0, 1, 0};
    if (s->op == KD_RA_SHEAR_X)
        a[1] = s->level;
    else if (s->op == KD_RA_SHEAR_Y)
        a[3] = s->level;
    else if (s->op == KD_RA_TRANSLATE_X_REL)
        a[2] = s->level * src->width; /* timm: pct * img.size[0] */
    else
        a[5] = s->level * src->height;
    return kd_pil_affine(src, a, s->filter, fill, dst);
}

kd_status kd_ra_apply_step(const kd_ra_config *cfg, const kd_ra_step *step,
                           const kd_pil_image *src, uint8_t *dst, uint8_t *scratch)
{
    if (src->channels != 1 && src->channels != 3)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: %s needs a 1- or 3-channel image (PIL L or RGB), got %d "
                        "channels", OP_NAMES[step->op], src->channels);
    switch (step->op) {
    case KD_RA_AUTOCONTRAST:
    case KD_RA_EQUALIZE:
    case KD_RA_INVERT:
    case KD_RA_POSTERIZE:
    case KD_RA_POSTERIZE_INC:
    case KD_RA_SOLARIZE:
    case KD_RA_SOLARIZE_INC:
    case KD_RA_SOLARIZE_ADD:
        return lut_op(step, src, dst);
    case KD_RA_COLOR:
    case KD_RA_COLOR_INC:
    case KD_RA_CONTRAST:
    case KD_RA_CONTRAST_INC:
    case KD_RA_BRIGHTNESS:
    case KD_RA_BRIGHTNESS_INC:
    case KD_RA_SHARPNESS:
    case KD_RA_SHARPNESS_INC:
    case KD_RA_DESATURATE:
        return enhance_op(step, src, dst, scratch);
    case KD_RA_GAUSSIAN_BLUR:
        return kd_pil_gaussian_blur(src, (float)step->level, dst);
    default:
        return geometric_op(cfg, step, src, dst);
    }
}
