#include "color.h"

#include <math.h>
#include <stdbool.h>

/* Pillow's ImagingBlend of one value: a + f (b - a) in float; within
 * [0, 1] a truncation, outside it clipped first. */
static uint8_t blend(int a, int b, float f)
{
    float v = (float)a + f * (float)(b - a);
    if (f >= 0.0f && f <= 1.0f)
        return (uint8_t)v;
    if (v <= 0.0f)
        return 0;
    if (v >= 255.0f)
        return 255;
    return (uint8_t)v;
}

/* Pillow's RGB to L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16. */
static int luma(const uint8_t *p)
{
    return (int)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
}

void kd_color_brightness(uint8_t *px, size_t pixels, int channels, float factor)
{
    size_t n = pixels * (size_t)channels;
    for (size_t i = 0; i < n; i++)
        px[i] = blend(0, px[i], factor);
}

void kd_color_contrast(uint8_t *px, size_t pixels, int channels, float factor)
{
    /* ImageStat's mean of the L image, rounded as int(mean + 0.5) */
    uint64_t sum = 0;
    for (size_t p = 0; p < pixels; p++)
        sum += channels == 3 ? (uint64_t)luma(px + 3 * p) : px[p];
    int mean = pixels ? (int)((double)sum / (double)pixels + 0.5) : 0;
    size_t n = pixels * (size_t)channels;
    for (size_t i = 0; i < n; i++)
        px[i] = blend(mean, px[i], factor);
}

void kd_color_saturation(uint8_t *px, size_t pixels, int channels, float factor)
{
    if (channels != 3)
        return; /* the gray image is its own degenerate: blending is exact */
    for (size_t p = 0; p < pixels; p++) {
        uint8_t *q = px + 3 * p;
        int l = luma(q);
        for (int k = 0; k < 3; k++)
            q[k] = blend(l, q[k], factor);
    }
}

static uint8_t clip8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Pillow's rgb2hsv (after colorsys): h and s scaled to 0..255. */
static void rgb_to_hsv(const uint8_t *in, uint8_t *h_out, uint8_t *s_out, uint8_t *v_out)
{
    int r = in[0], g = in[1], b = in[2];
    int maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    *v_out = (uint8_t)maxc;
    if (maxc == minc) {
        *h_out = 0;
        *s_out = 0;
        return;
    }
    float cr = (float)(maxc - minc);
    float s = cr / (float)maxc;
    float rc = (float)(maxc - r) / cr, gc = (float)(maxc - g) / cr, bc = (float)(maxc - b) / cr;
    float h;
    if (r == maxc)
        h = bc - gc;
    else if (g == maxc)
        h = (float)(2.0 + rc - bc);
    else
        h = (float)(4.0 + gc - rc);
    h = (float)fmod(h / 6.0 + 1.0, 1.0);
    *h_out = clip8((int)(h * 255.0));
    *s_out = clip8((int)(s * 255.0));
}

/* Pillow's hsv2rgb. */
static void hsv_to_rgb(int h, int s, int v, uint8_t *out)
{
    if (s == 0) {
        out[0] = out[1] = out[2] = (uint8_t)v;
        return;
    }
    int i = (int)floor((float)h * 6.0 / 255.0);
    float f = (float)((float)h * 6.0 / 255.0 - (float)i);
    float fs = (float)((float)s / 255.0);
    uint8_t p = clip8((int)round((float)v * (1.0 - fs)));
    uint8_t q = clip8((int)round((float)v * (1.0 - fs * f)));
    uint8_t t = clip8((int)round((float)v * (1.0 - fs * (1.0 - f))));
    uint8_t uv = (uint8_t)v;
    uint8_t rgb[6][3] = {{uv, t, p}, {q, uv, p}, {p, uv, t}, {p, q, uv}, {t, p, uv}, {uv, p, q}};
    for (int k = 0; k < 3; k++)
        out[k] = rgb[i % 6][k];
}

void kd_color_hue(uint8_t *px, size_t pixels, int channels, float factor)
{
    if (channels != 3)
        return; /* torchvision returns gray images unchanged */
    /* np.uint8(factor * 255): toward zero, then modulo 256 */
    uint8_t shift = (uint8_t)(int)((double)factor * 255.0);
    for (size_t p = 0; p < pixels; p++) {
        uint8_t *q = px + 3 * p, h, s, v;
        rgb_to_hsv(q, &h, &s, &v);
        hsv_to_rgb((uint8_t)(h + shift), s, v, q);
    }
}

static bool enabled(const float range[2], float neutral)
{
    return !(range[0] == neutral && range[1] == neutral);
}

kd_jitter_draw kd_jitter_sample(kd_rng *rng, const kd_jitter_config *cfg)
{
    kd_jitter_draw d = {{0, 1, 2, 3}, {1, 1, 1, 0}, {false, false, false, false}};
    for (int i = 3; i > 0; i--) {
        int j = (int)kd_rng_below(rng, (uint64_t)i + 1);
        int t = d.order[i];
        d.order[i] = d.order[j];
        d.order[j] = t;
    }
    const float *ranges[4] = {cfg->brightness, cfg->contrast, cfg->saturation, cfg->hue};
    for (int k = 0; k < 4; k++) {
        d.enabled[k] = enabled(ranges[k], k == 3 ? 0.0f : 1.0f);
        if (d.enabled[k])
            d.factor[k] = kd_rng_uniformf(rng) * (ranges[k][1] - ranges[k][0]) + ranges[k][0];
    }
    return d;
}

void kd_jitter_apply(uint8_t *px, size_t pixels, int channels, const kd_jitter_draw *d)
{
    for (int k = 0; k < 4; k++) {
        int op = d->order[k];
        if (!d->enabled[op])
            continue;
        float f = d->factor[op];
        if (op == 0)
            kd_color_brightness(px, pixels, channels, f);
        else if (op == 1)
            kd_color_contrast(px, pixels, channels, f);
        else if (op == 2)
            kd_color_saturation(px, pixels, channels, f);
        else
            kd_color_hue(px, pixels, channels, f);
    }
}
