/* Mixup / CutMix plans and their pixel and target work: see mix_plan.h. */
#include "mix_plan.h"

#include <math.h>
#include <string.h>

/* log of a Gamma(k, 1) draw. Marsaglia and Tsang's squeeze for k >= 1; for
 * k < 1, Gamma(k) = Gamma(k + 1) * U^(1/k), kept as a sum of logs. */
static double log_gamma_draw(kd_rng *rng, double k)
{
    double boost = 0;
    if (k < 1) {
        boost = log(1.0 - kd_rng_uniform(rng)) / k; /* U in (0, 1] */
        k += 1;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = kd_rng_normal(rng), v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = 1.0 - kd_rng_uniform(rng);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return log(d * v) + boost;
    }
}

double kd_mix_beta(kd_rng *rng, double a)
{
    double lx = log_gamma_draw(rng, a), ly = log_gamma_draw(rng, a);
    /* x / (x + y) = 1 / (1 + y / x) */
    return 1.0 / (1.0 + exp(ly - lx));
}

kd_mix_draw kd_mix_draw_unit(const kd_mix_config *cfg, kd_rng *rng)
{
    kd_mix_draw d = {false, false, 1.0};
    d.apply = kd_rng_uniform(rng) < cfg->prob;
    bool mixup = cfg->mixup_alpha > 0, cutmix = cfg->cutmix_alpha > 0;
    if (mixup && cutmix)
        d.cutmix = kd_rng_uniform(rng) < cfg->switch_prob;
    else
        d.cutmix = cutmix;
    d.lam = kd_mix_beta(rng, d.cutmix ? cfg->cutmix_alpha : cfg->mixup_alpha);
    return d;
}

static int64_t clip(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

kd_mix_box kd_mix_box_centred(int64_t h, int64_t w, double lam, int64_t cy, int64_t cx)
{
    double ratio = sqrt(1.0 - lam);
    int64_t half_h = (int64_t)((double)h * ratio) / 2, half_w = (int64_t)((double)w * ratio) / 2;
    return (kd_mix_box){clip(cy - half_h, 0, h), clip(cy + half_h, 0, h), clip(cx - half_w, 0, w),
                        clip(cx + half_w, 0, w)};
}

double kd_mix_box_lam(int64_t h, int64_t w, kd_mix_box box)
{
    int64_t area = (box.bottom - box.top) * (box.right - box.left);
    return 1.0 - (double)area / (double)(h * w);
}

kd_status kd_mix_draw_box(const kd_mix_config *cfg, kd_rng *rng, int64_t h, int64_t w,
                          double lam, kd_mix_box *box)
{
    if (!cfg->has_minmax) {
        int64_t cy = (int64_t)kd_rng_below(rng, (uint64_t)h);
        int64_t cx = (int64_t)kd_rng_below(rng, (uint64_t)w);
        *box = kd_mix_box_centred(h, w, lam, cy, cx);
        return KD_OK;
    }
    /* timm: cut = randint(int(side * min), int(side * max)), origin =
     * randint(0, side - cut); numpy's high bound is exclusive. */
    int64_t lo_h = (int64_t)((double)h * cfg->minmax[0]);
    int64_t hi_h = (int64_t)((double)h * cfg->minmax[1]);
    int64_t lo_w = (int64_t)((double)w * cfg->minmax[0]);
    int64_t hi_w = (int64_t)((double)w * cfg->minmax[1]);
    if (lo_h >= hi_h || lo_w >= hi_w || hi_h > h || hi_w > w)
        return kd_error(KD_ERR_INVALID,
                        "mixup: cutmix_minmax [%g, %g] gives no box side for a %lldx%lld image "
                        "(int(side * min) must be below int(side * max) <= side)",
                        cfg->minmax[0], cfg->minmax[1], (long long)h, (long long)w);
    int64_t cut_h = lo_h + (int64_t)kd_rng_below(rng, (uint64_t)(hi_h - lo_h));
    int64_t cut_w = lo_w + (int64_t)kd_rng_below(rng, (uint64_t)(hi_w - lo_w));
    if (cut_h == h || cut_w == w)
        return kd_error(KD_ERR_INVALID,
                        "mixup: cutmix_minmax [%g, %g] allows a box as large as the %lldx%lld "
                        "image, leaving no place for it (timm fails the same way)",
                        cfg->minmax[0], cfg->minmax[1], (long long)h, (long long)w);
    int64_t top = (int64_t)kd_rng_below(rng, (uint64_t)(h - cut_h));
    int64_t left = (int64_t)kd_rng_below(rng, (uint64_t)(w - cut_w));
    *box = (kd_mix_box){top, top + cut_h, left, left + cut_w};
    return KD_OK;
}

/* timm keeps per-element lambdas in a float32 array. */
static double mode_round(const kd_mix_config *cfg, double lam)
{
    return cfg->mode == KD_MIX_BATCH ? lam : (double)(float)lam;
}

void kd_mix_elem_from(const kd_mix_config *cfg, kd_mix_draw d, kd_mix_box box, int64_t h,
                      int64_t w, kd_mix_elem *e)
{
    double lam = mode_round(cfg, d.lam);
    *e = (kd_mix_elem){false, false, 1.0, {0, 0, 0, 0}};
    if (!d.apply || lam == 1.0)
        return;
    e->mixed = true;
    e->cutmix = d.cutmix;
    e->lam = lam;
    if (d.cutmix) {
        e->box = box;
        if (cfg->correct_lam || cfg->has_minmax)
            e->lam = mode_round(cfg, kd_mix_box_lam(h, w, box));
    }
}

kd_status kd_mix_plan_draw(const kd_mix_config *cfg, kd_rng *rng, int64_t n, int64_t h,
                           int64_t w, kd_mix_elem *plan)
{
    int64_t units = kd_mix_units(cfg, n);
    for (int64_t u = 0; u < units; u++) {
        kd_mix_draw d = kd_mix_draw_unit(cfg, rng);
        kd_mix_box box = {0, 0, 0, 0};
        if (d.apply && d.cutmix && mode_round(cfg, d.lam) != 1.0) {
            kd_status st = kd_mix_draw_box(cfg, rng, h, w, mode_round(cfg, d.lam), &box);
            if (st != KD_OK)
                return st;
        }
        kd_mix_elem_from(cfg, d, box, h, w, &plan[u]);
    }
    kd_mix_plan_expand(cfg, n, plan);
    return KD_OK;
}

int64_t kd_mix_units(const kd_mix_config *cfg, int64_t n)
{
    return cfg->mode == KD_MIX_BATCH ? 1 : cfg->mode == KD_MIX_PAIR ? n / 2 : n;
}

void kd_mix_plan_expand(const kd_mix_config *cfg, int64_t n, kd_mix_elem *plan)
{
    if (cfg->mode == KD_MIX_BATCH)
        for (int64_t i = 1; i < n; i++)
            plan[i] = plan[0];
    if (cfg->mode == KD_MIX_PAIR) {
        for (int64_t i = 0; i < n / 2; i++)
            plan[n - 1 - i] = plan[i];
        if (n % 2)
            plan[n / 2] = (kd_mix_elem){false, false, 1.0, {0, 0, 0, 0}};
    }
}

void kd_mix_images(const kd_mix_elem *plan, int64_t n, int64_t c, int64_t h, int64_t w,
                   const float *x, float *out)
{
    int64_t plane = h * w, image = c * plane;
    for (int64_t i = 0; i < n; i++) {
        const kd_mix_elem *e = &plan[i];
        const float *own = x + i * image, *other = x + (n - 1 - i) * image;
        float *dst = out + i * image;
        memcpy(dst, own, (size_t)image * sizeof *dst);
        if (!e->mixed)
            continue;
        if (e->cutmix) {
            int64_t cols = e->box.right - e->box.left;
            for (int64_t k = 0; k < c; k++)
                for (int64_t y = e->box.top; y < e->box.bottom && cols > 0; y++) {
                    int64_t at = k * plane + y * w + e->box.left;
                    memcpy(dst + at, other + at, (size_t)cols * sizeof *dst);
                }
            continue;
        }
        float a = (float)e->lam, b = (float)(1.0 - e->lam);
        for (int64_t k = 0; k < image; k++) {
            float mine = own[k] * a, theirs = other[k] * b;
            dst[k] = mine + theirs;
        }
    }
}

kd_status kd_mix_targets(const kd_mix_config *cfg, const kd_mix_elem *plan, int64_t n,
                         int64_t classes, const int64_t *labels, const float *soft_in,
                         float *targets)
{
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return kd_error(KD_ERR_INVALID, "mixup: label %lld of batch element %lld is "
                            "outside [0, %lld)", (long long)labels[i], (long long)i,
                            (long long)classes);
    /* timm's one_hot: off = s / K and on = 1 - s + s / K in float64, then
     * stored as float32. */
    double s = cfg->label_smoothing;
    float off = (float)(s / (double)classes), on = (float)(1.0 - s + s / (double)classes);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = n - 1 - i;
        float a = (float)plan[i].lam, b = (float)(1.0 - plan[i].lam);
        float *t = targets + i * classes;
        for (int64_t k = 0; k < classes; k++) {
            float mine = soft_in ? soft_in[i * classes + k] : k == labels[i] ? on : off;
            float theirs = soft_in ? soft_in[j * classes + k] : k == labels[j] ? on : off;
            float p = mine * a, q = theirs * b;
            t[k] = p + q;
        }
    }
    return KD_OK;
}
