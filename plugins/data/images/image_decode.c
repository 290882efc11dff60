#include "image_decode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_header.h"
#include "opencv_shim.h"

kd_status kd_img_read_file(const char *path, unsigned char **bytes, size_t *len)
{
    *bytes = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    kd_status st = KD_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        st = kd_error(KD_ERR_IO, "%s: cannot find its size: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    if (st == KD_OK) {
        buf = malloc(size > 0 ? (size_t)size : 1);
        if (!buf)
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory for %ld bytes", path, size);
    }
    if (st == KD_OK && size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size)
        st = kd_error(KD_ERR_IO, "%s: a short read (%s)", path,
                      ferror(f) ? strerror(errno) : "the file shrank");
    fclose(f);
    if (st != KD_OK) {
        free(buf);
        return st;
    }
    *bytes = buf;
    *len = (size_t)size;
    return KD_OK;
}

/* Pillow's luma: L24 of its Convert.c, then >> 16. */
static uint8_t luma(unsigned r, unsigned g, unsigned b)
{
    return (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

/* One source value as Pillow's 8-bit one: 16-bit gray is clipped (mode
 * "I" to "L"), 16-bit colour keeps its high byte. */
static unsigned value_at(const kd_cv_pixels *px, size_t i)
{
    if (px->bits == 8)
        return ((const uint8_t *)px->data)[i];
    unsigned v = ((const uint16_t *)px->data)[i];
    if (px->channels == 1)
        return v > 255 ? 255 : v;
    return v >> 8;
}

static void convert(const kd_cv_pixels *px, int channels, uint8_t *dst)
{
    size_t n = (size_t)px->height * (size_t)px->width;
    int c = px->channels;
    if (px->bits == 8 && c == 3 && channels == 3) {
        /* the common case, a colour JPEG: BGR to RGB without the per-value
         * dispatch below */
        const uint8_t *src = px->data;
        for (size_t p = 0; p < n; p++) {
            dst[3 * p] = src[3 * p + 2];
            dst[3 * p + 1] = src[3 * p + 1];
            dst[3 * p + 2] = src[3 * p];
        }
        return;
    }
    for (size_t p = 0; p < n; p++) {
        uint8_t *d = dst + p * (size_t)channels;
        if (c == 1) {
            uint8_t v = (uint8_t)value_at(px, p);
            d[0] = v;
            if (channels == 3)
                d[1] = d[2] = v;
            continue;
        }
        /* OpenCV's order is BGR(A) */
        unsigned b = value_at(px, p * c), g = value_at(px, p * c + 1),
                 r = value_at(px, p * c + 2);
        if (channels == 1) {
            d[0] = luma(r, g, b);
        } else {
            d[0] = (uint8_t)r;
            d[1] = (uint8_t)g;
            d[2] = (uint8_t)b;
        }
    }
}

kd_status kd_img_decode(const unsigned char *bytes, size_t len, const char *label,
                        int channels, int64_t max_pixels, kd_sample *out)
{
    if (channels != 1 && channels != 3)
        return kd_error(KD_ERR_INVALID, "%s: %d output channels; 1 or 3 are supported", label,
                        channels);
    kd_img_header h;
    kd_status st = kd_img_read_header(bytes, len, label, &h);
    if (st != KD_OK)
        return st;
    if (h.height > max_pixels / h.width)
        return kd_error(KD_ERR_FORMAT,
                        "%s: %s of %lld x %lld pixels, over max_pixels (%lld)", label,
                        kd_img_format_name(h.format), (long long)h.width, (long long)h.height,
                        (long long)max_pixels);
    kd_cv_pixels px;
    char msg[256];
    if (!kd_cv_decode(bytes, len, &px, msg, sizeof msg))
        return kd_error(KD_ERR_FORMAT, "%s: %s: %s", label, kd_img_format_name(h.format), msg);
    if (px.height != h.height || px.width != h.width) {
        st = kd_error(KD_ERR_FORMAT, "%s: %s: the header says %lld x %lld but OpenCV decoded "
                      "%d x %d", label, kd_img_format_name(h.format), (long long)h.width,
                      (long long)h.height, px.width, px.height);
        kd_cv_pixels_free(&px);
        return st;
    }
    st = kd_sample_reserve(out, (size_t)px.height * (size_t)px.width * (size_t)channels);
    if (st != KD_OK) {
        kd_cv_pixels_free(&px);
        return kd_error_wrap(st, "%s", label);
    }
    convert(&px, channels, out->data);
    out->height = px.height;
    out->width = px.width;
    out->channels = channels;
    out->dtype = KD_U8;
    kd_cv_pixels_free(&px);
    return KD_OK;
}
