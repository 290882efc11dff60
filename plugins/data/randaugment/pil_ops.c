/* Pillow 9.4's image operations on u8 HWC buffers: see pil_ops.h. */
#include "pil_ops.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t pixels(const kd_pil_image *im) { return (size_t)im->height * (size_t)im->width; }

void kd_pil_apply_lut(const kd_pil_image *src, uint8_t lut[][256], uint8_t *dst)
{
    size_t n = pixels(src);
    int c = src->channels;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < c; k++)
            dst[i * (size_t)c + (size_t)k] = lut[k][src->data[i * (size_t)c + (size_t)k]];
}

static void histogram(const kd_pil_image *src, int channel, uint64_t h[256])
{
    memset(h, 0, 256 * sizeof *h);
    size_t n = pixels(src);
    for (size_t i = 0; i < n; i++)
        h[src->data[i * (size_t)src->channels + (size_t)channel]]++;
}

static void identity(uint8_t lut[256])
{
    for (int i = 0; i < 256; i++)
        lut[i] = (uint8_t)i;
}

void kd_pil_autocontrast_lut(const kd_pil_image *src, uint8_t lut[][256])
{
    for (int k = 0; k < src->channels; k++) {
        uint64_t h[256];
        histogram(src, k, h);
        int lo = 0, hi = 255; /* Python's loop variables when nothing is found */
        while (lo < 255 && !h[lo])
            lo++;
        while (hi > 0 && !h[hi])
            hi--;
        if (hi <= lo) {
            identity(lut[k]);
            continue;
        }
        double scale = 255.0 / (double)(hi - lo), offset = -(double)lo * scale;
        for (int i = 0; i < 256; i++) {
            double v = (double)i * scale + offset;
            int ix = (int)v; /* int() truncates toward zero */
            lut[k][i] = (uint8_t)(ix < 0 ? 0 : ix > 255 ? 255 : ix);
        }
    }
}

void kd_pil_equalize_lut(const kd_pil_image *src, uint8_t lut[][256])
{
    for (int k = 0; k < src->channels; k++) {
        uint64_t h[256], total = 0, last = 0;
        int used = 0;
        histogram(src, k, h);
        for (int i = 0; i < 256; i++)
            if (h[i]) {
                used++;
                total += h[i];
                last = h[i];
            }
        uint64_t step = used > 1 ? (total - last) / 255 : 0;
        if (!step) {
            identity(lut[k]);
            continue;
        }
        uint64_t n = step / 2;
        for (int i = 0; i < 256; i++) {
            uint64_t v = n / step;
            lut[k][i] = (uint8_t)(v > 255 ? 255 : v); /* Image.point clips */
            n += h[i];
        }
    }
}

void kd_pil_blend(const uint8_t *degenerate, const uint8_t *image, size_t n, float alpha,
                  uint8_t *dst)
{
    if (alpha == 0.0f) {
        memcpy(dst, degenerate, n);
        return;
    }
    if (alpha == 1.0f) {
        memcpy(dst, image, n);
        return;
    }
    bool inside = alpha >= 0 && alpha <= 1.0f;
    for (size_t i = 0; i < n; i++) {
        int a = degenerate[i], b = image[i];
        float t = (float)a + alpha * (float)(b - a);
        if (inside)
            dst[i] = (uint8_t)t;
        else
            dst[i] = t <= 0.0f ? 0 : t >= 255.0f ? 255 : (uint8_t)t;
    }
}

void kd_pil_gray(const kd_pil_image *src, uint8_t *gray)
{
    size_t n = pixels(src);
    if (src->channels == 1) {
        memcpy(gray, src->data, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src->data + 3 * i;
        gray[i] = (uint8_t)(((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u +
                             (uint32_t)p[2] * 7471u + 0x8000u) >> 16);
    }
}

int kd_pil_gray_mean(const kd_pil_image *src)
{
    size_t n = pixels(src);
    uint64_t h[256] = {0};
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src->data + (size_t)src->channels * i;
        h[src->channels == 1 ? p[0]
                             : ((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u +
                                (uint32_t)p[2] * 7471u + 0x8000u) >> 16]++;
    }
    /* ImageStat: sum of j * h[j] in float64, over the pixel count. */
    double sum = 0;
    for (int j = 0; j < 256; j++)
        sum += (double)j * (double)h[j];
    return (int)(sum / (double)n + 0.5);
}

void kd_pil_smooth(const kd_pil_image *src, uint8_t *dst)
{
    int h = src->height, w = src->width, c = src->channels;
    memcpy(dst, src->data, pixels(src) * (size_t)c);
    if (h < 3 || w < 3)
        return;
    /* Pillow divides the kernel by its scale in float32 and starts each sum
     * at offset + 0.5 (its rounding); rows are summed y + 1, y, y - 1. */
    const float side = 1.0f / 13.0f, centre = 5.0f / 13.0f;
    for (int y = 1; y < h - 1; y++)
        for (int x = 1; x < w - 1; x++)
            for (int k = 0; k < c; k++) {
                float ss = 0.5f;
                for (int dy = 1; dy >= -1; dy--) {
                    const uint8_t *row = src->data + ((size_t)(y + dy) * (size_t)w) * (size_t)c;
                    float mid = dy == 0 ? centre : side;
                    float l = (float)row[(size_t)(x - 1) * (size_t)c + (size_t)k] * side;
                    float m = (float)row[(size_t)x * (size_t)c + (size_t)k] * mid;
                    float r = (float)row[(size_t)(x + 1) * (size_t)c + (size_t)k] * side;
                    float lm = l + m;
                    float three = lm + r;
                    ss += three;
                }
                dst[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    ss <= 0.0f ? 0 : ss >= 255.0f ? 255 : (uint8_t)ss;
            }
}

/* ----------------------------------------------------------- box blur */

/* Pillow's ImagingLineBoxBlur8 on one line of n values: a running sum
 * over the box of whole pixels, the two fractional end pixels weighted by
 * fw, all in 8.24 fixed point (uint32 arithmetic, as Pillow's). Pixels
 * beyond the ends repeat the end pixels. */
static void box_blur_line(const uint8_t *in, int n, int radius, uint32_t ww, uint32_t fw,
                          uint8_t *out)
{
    int last = n - 1, edge_a = radius + 1 < n ? radius + 1 : n;
    int edge_b = n - radius - 1 > 0 ? n - radius - 1 : 0;
    uint32_t acc = (uint32_t)in[0] * (uint32_t)(radius + 1);
    for (int x = 0; x < edge_a - 1; x++)
        acc += in[x];
    acc += (uint32_t)in[last] * (uint32_t)(radius - edge_a + 1);
#define STEP(x, sub, add, far_left, far_right)                                             \
    do {                                                                                   \
        acc += (uint32_t)((int)in[add] - (int)in[sub]);                                    \
        uint32_t bulk = acc * ww + (uint32_t)(in[far_left] + in[far_right]) * fw;          \
        out[x] = (uint8_t)((bulk + (1u << 23)) >> 24);                                     \
    } while (0)
    if (edge_a <= edge_b) {
        for (int x = 0; x < edge_a; x++)
            STEP(x, 0, x + radius, 0, x + radius + 1);
        for (int x = edge_a; x < edge_b; x++)
            STEP(x, x - radius - 1, x + radius, x - radius - 1, x + radius + 1);
        for (int x = edge_b; x <= last; x++)
            STEP(x, x - radius - 1, last, x - radius - 1, last);
    } else {
        for (int x = 0; x < edge_b; x++)
            STEP(x, 0, x + radius, 0, x + radius + 1);
        for (int x = edge_b; x < edge_a; x++)
            STEP(x, 0, last, 0, last);
        for (int x = edge_a; x <= last; x++)
            STEP(x, x - radius - 1, last, x - radius - 1, last);
    }
#undef STEP
}

kd_status kd_pil_gaussian_blur(const kd_pil_image *src, float radius, uint8_t *dst)
{
    const int passes = 3;
    /* Pillow's ImagingGaussianBlur: the box radius l + a of Gwosdek et al.,
     * float32 except the square root */
    float sigma2 = radius * radius / passes;
    float big_l = (float)sqrt(12.0 * sigma2 + 1.0);
    float l = (float)floor((big_l - 1.0) / 2.0);
    float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    float box = l + a;
    int whole = (int)box;
    uint32_t ww = (uint32_t)((float)(1u << 24) / (box * 2 + 1));
    uint32_t fw = ((1u << 24) - (uint32_t)(whole * 2 + 1) * ww) / 2;

    int h = src->height, w = src->width, c = src->channels;
    int longest = h > w ? h : w;
    uint8_t *line = malloc(2 * (size_t)longest);
    if (!line)
        return kd_error(KD_ERR_NOMEM, "randaugment: out of memory for a blur line");
    uint8_t *other = line + longest;
    memcpy(dst, src->data, pixels(src) * (size_t)c);
    /* rows, then columns; each line gathered once, blurred passes times
     * back and forth between two buffers, scattered once */
    for (int dir = 0; dir < 2; dir++) {
        int lines = dir == 0 ? h : w, n = dir == 0 ? w : h;
        size_t step = (dir == 0 ? 1 : (size_t)w) * (size_t)c;
        for (int i = 0; i < lines; i++)
            for (int k = 0; k < c; k++) {
                uint8_t *at = dst + (dir == 0 ? (size_t)i * (size_t)w : (size_t)i) * (size_t)c +
                              (size_t)k;
                for (int x = 0; x < n; x++)
                    line[x] = at[(size_t)x * step];
                uint8_t *from = line, *to = other;
                for (int p = 0; p < passes; p++) {
                    box_blur_line(from, n, whole, ww, fw, to);
                    uint8_t *t = from;
                    from = to;
                    to = t;
                }
                for (int x = 0; x < n; x++)
                    at[(size_t)x * step] = from[x];
            }
    }
    free(line);
    return KD_OK;
}

/* ----------------------------------------------------------- geometry */

static int floor_int(double v) { return v < 0.0 ? (int)floor(v) : (int)v; }
static int coord(double v) { return v < 0.0 ? -1 : (int)v; }
static int clamp_index(int v, int n) { return v < 0 ? 0 : v < n ? v : n - 1; }

static void fill_image(const kd_pil_image *src, const uint8_t *fill, uint8_t *dst)
{
    size_t n = pixels(src);
    for (size_t i = 0; i < n; i++)
        memcpy(dst + i * (size_t)src->channels, fill, (size_t)src->channels);
}

static const uint8_t *pixel_at(const kd_pil_image *im, int x, int y)
{
    return im->data + ((size_t)y * (size_t)im->width + (size_t)x) * (size_t)im->channels;
}

static void copy_pixel(const kd_pil_image *im, uint8_t *dst, int x, int y, int xin, int yin)
{
    memcpy(dst + ((size_t)y * (size_t)im->width + (size_t)x) * (size_t)im->channels,
           pixel_at(im, xin, yin), (size_t)im->channels);
}

/* Nearest, a[1] == a[3] == 0: Pillow's ImagingScaleAffine, a table of
 * source columns accumulated in float64. */
static kd_status nearest_scale(const kd_pil_image *im, const double a[6], uint8_t *dst)
{
    int w = im->width, h = im->height;
    int *column = calloc((size_t)w, sizeof *column);
    if (!column)
        return kd_error(KD_ERR_NOMEM, "randaugment: out of memory for an affine table");
    double xo = a[2] + a[0] * 0.5, yo = a[5] + a[4] * 0.5;
    int xmin = w, xmax = 0;
    for (int x = 0; x < w; x++) {
        int xin = coord(xo);
        if (xin >= 0 && xin < w) {
            xmax = x + 1;
            if (x < xmin)
                xmin = x;
            column[x] = xin;
        }
        xo += a[0];
    }
    for (int y = 0; y < h; y++) {
        int yi = coord(yo);
        if (yi >= 0 && yi < h)
            for (int x = xmin; x < xmax; x++)
                copy_pixel(im, dst, x, y, column[x], yi);
        yo += a[4];
    }
    free(column);
    return KD_OK;
}

static bool fits_fixed(const double a[6], int x, int y)
{
    double u = (double)x * a[0] + (double)y * a[1] + a[2];
    double v = (double)x * a[3] + (double)y * a[4] + a[5];
    return fabs(u) < 32768.0 && fabs(v) < 32768.0;
}

/* Nearest, general: Pillow's 16.16 fixed-point walk, or its float64 walk
 * when a corner maps beyond 32768. */
static void nearest_general(const kd_pil_image *im, const double a[6], uint8_t *dst)
{
    int w = im->width, h = im->height;
    if (fits_fixed(a, 0, 0) && fits_fixed(a, w, h) && fits_fixed(a, 0, h) &&
        fits_fixed(a, w, 0)) {
#define FIX(v) floor_int((v) * 65536.0 + 0.5)
        int a0 = FIX(a[0]), a1 = FIX(a[1]), a3 = FIX(a[3]), a4 = FIX(a[4]);
        int a2 = FIX(a[2] + a[0] * 0.5 + a[1] * 0.5), a5 = FIX(a[5] + a[3] * 0.5 + a[4] * 0.5);
#undef FIX
        for (int y = 0; y < h; y++) {
            int xx = a2, yy = a5;
            for (int x = 0; x < w; x++) {
                int xin = xx >> 16; /* arithmetic shift, as Pillow relies on */
                if (xin >= 0 && xin < w) {
                    int yin = yy >> 16;
                    if (yin >= 0 && yin < h)
                        copy_pixel(im, dst, x, y, xin, yin);
                }
                xx += a0;
                yy += a3;
            }
            a2 += a1;
            a5 += a4;
        }
        return;
    }
    double xo = a[2] + a[1] * 0.5 + a[0] * 0.5, yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
    for (int y = 0; y < h; y++) {
        double xx = xo, yy = yo;
        for (int x = 0; x < w; x++) {
            int xin = coord(xx);
            if (xin >= 0 && xin < w) {
                int yin = coord(yy);
                if (yin >= 0 && yin < h)
                    copy_pixel(im, dst, x, y, xin, yin);
            }
            xx += a[0];
            yy += a[3];
        }
        xo += a[1];
        yo += a[4];
    }
}

static double lerp(double a, double b, double d)
{
    double step = (b - a) * d;
    return a + step;
}

/* Pillow's bilinear_filter8/32RGB at input point (xin, yin); false
 * outside the image (the output keeps the fill). */
static bool bilinear_at(const kd_pil_image *im, double xin, double yin, uint8_t *out)
{
    if (xin < 0.0 || xin >= im->width || yin < 0.0 || yin >= im->height)
        return false;
    xin -= 0.5;
    yin -= 0.5;
    int x = floor_int(xin), y = floor_int(yin);
    double dx = xin - x, dy = yin - y;
    int x0 = clamp_index(x, im->width), x1 = clamp_index(x + 1, im->width);
    int y0 = clamp_index(y, im->height);
    bool below = y + 1 >= 0 && y + 1 < im->height;
    for (int k = 0; k < im->channels && k < KD_PIL_MAX_CHANNELS; k++) {
        double v1 = lerp(pixel_at(im, x0, y0)[k], pixel_at(im, x1, y0)[k], dx), v2 = v1;
        if (below)
            v2 = lerp(pixel_at(im, x0, y + 1)[k], pixel_at(im, x1, y + 1)[k], dx);
        out[k] = (uint8_t)lerp(v1, v2, dy);
    }
    return true;
}

/* Pillow's cubic (a = -1) through four taps at fraction d. */
static double cubic(double v1, double v2, double v3, double v4, double d)
{
    double p1 = v2, p2 = -v1 + v3;
    double p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
    double inner = p3 + d * p4;
    inner = p2 + d * inner;
    return p1 + d * inner;
}

static bool bicubic_at(const kd_pil_image *im, double xin, double yin, uint8_t *out)
{
    if (xin < 0.0 || xin >= im->width || yin < 0.0 || yin >= im->height)
        return false;
    xin -= 0.5;
    yin -= 0.5;
    int x = floor_int(xin), y = floor_int(yin);
    double dx = xin - x, dy = yin - y;
    x--;
    y--;
    int xs[4];
    for (int i = 0; i < 4; i++)
        xs[i] = clamp_index(x + i, im->width);
    for (int k = 0; k < im->channels && k < KD_PIL_MAX_CHANNELS; k++) {
        double rows[4];
        for (int r = 0; r < 4; r++) {
            int yr = y + r;
            if (r > 0 && !(yr >= 0 && yr < im->height)) {
                rows[r] = rows[r - 1]; /* Pillow repeats the previous row */
                continue;
            }
            int row = r == 0 ? clamp_index(yr, im->height) : yr;
            rows[r] = cubic(pixel_at(im, xs[0], row)[k], pixel_at(im, xs[1], row)[k],
                            pixel_at(im, xs[2], row)[k], pixel_at(im, xs[3], row)[k], dx);
        }
        double v = cubic(rows[0], rows[1], rows[2], rows[3], dy);
        out[k] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : (uint8_t)v;
    }
    return true;
}

kd_status kd_pil_affine(const kd_pil_image *src, const double a[6], kd_pil_filter filter,
                        const uint8_t *fill, uint8_t *dst)
{
    if (src->channels < 1 || src->channels > KD_PIL_MAX_CHANNELS)
        return kd_error(KD_ERR_INVALID, "randaugment: an affine transform of a %d-channel image",
                        src->channels);
    fill_image(src, fill, dst);
    if (filter == KD_PIL_NEAREST) {
        if (a[1] == 0 && a[3] == 0)
            return nearest_scale(src, a, dst);
        nearest_general(src, a, dst);
        return KD_OK;
    }
    for (int y = 0; y < src->height; y++)
        for (int x = 0; x < src->width; x++) {
            double xc = x + 0.5, yc = y + 0.5;
            double u0 = a[0] * xc, u1 = a[1] * yc, v0 = a[3] * xc, v1 = a[4] * yc;
            double u = u0 + u1, v = v0 + v1;
            u = u + a[2];
            v = v + a[5];
            uint8_t *out =
                dst + ((size_t)y * (size_t)src->width + (size_t)x) * (size_t)src->channels;
            uint8_t value[KD_PIL_MAX_CHANNELS];
            bool inside = filter == KD_PIL_BILINEAR ? bilinear_at(src, u, v, value)
                                                    : bicubic_at(src, u, v, value);
            if (inside)
                memcpy(out, value, (size_t)src->channels);
        }
    return KD_OK;
}

/* round(v, 15) as Python does it: correctly rounded to 15 decimals, which
 * glibc's printf and strtod also are. */
static double round15(double v)
{
    char text[64];
    snprintf(text, sizeof text, "%.15f", v);
    return strtod(text, NULL);
}

kd_status kd_pil_rotate(const kd_pil_image *src, double degrees, kd_pil_filter filter,
                        const uint8_t *fill, uint8_t *dst)
{
    int h = src->height, w = src->width, c = src->channels;
    /* Python's angle % 360.0: the sign of the divisor, +0 for zero. */
    double angle = fmod(degrees, 360.0);
    if (angle != 0 && angle < 0)
        angle += 360.0;
    if (angle == 0) {
        memcpy(dst, src->data, pixels(src) * (size_t)c);
        return KD_OK;
    }
    if (angle == 180 || ((angle == 90 || angle == 270) && w == h)) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                /* Pillow's transposes: 180 mirrors both ways; 90
                 * (counter-clockwise) sends (x, y) to row w-1-x, column y;
                 * 270 to row x, column h-1-y. */
                int ox = angle == 180 ? w - 1 - x : angle == 90 ? y : h - 1 - y;
                int oy = angle == 180 ? h - 1 - y : angle == 90 ? w - 1 - x : x;
                memcpy(dst + ((size_t)oy * (size_t)w + (size_t)ox) * (size_t)c,
                       pixel_at(src, x, y), (size_t)c);
            }
        return KD_OK;
    }
    double cx = w / 2.0, cy = h / 2.0;
    double r = -(angle * (3.141592653589793 / 180.0));
    double m[6] = {round15(cos(r)), round15(sin(r)), 0.0, round15(-sin(r)), round15(cos(r)), 0.0};
    /* Pillow maps the centre through the matrix and moves it back. */
    double px = m[0] * -cx, qx = m[1] * -cy, py = m[3] * -cx, qy = m[4] * -cy;
    double tx = px + qx, ty = py + qy;
    m[2] = tx + m[2];
    m[5] = ty + m[5];
    m[2] += cx;
    m[5] += cy;
    return kd_pil_affine(src, m, filter, fill, dst);
}
