#include "image_header.h"

#include <string.h>

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static kd_status truncated(const char *label, const char *what)
{
    return kd_error(KD_ERR_FORMAT, "%s: the file ends inside its %s header", label, what);
}

/* Markers that carry a frame header: SOF0..SOF15 without DHT (C4), JPG
 * (C8) and DAC (CC). */
static int is_frame_marker(unsigned m)
{
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/* Markers without a length field: TEM and RST0..7 (SOI/EOI end the walk). */
static int is_standalone(unsigned m) { return m == 0x01 || (m >= 0xD0 && m <= 0xD7); }

static kd_status read_jpeg(const unsigned char *b, size_t len, const char *label,
                           kd_img_header *out)
{
    size_t p = 2; /* after SOI */
    for (;;) {
        if (p >= len)
            return truncated(label, "JPEG");
        if (b[p] != 0xFF)
            return kd_error(KD_ERR_FORMAT,
                            "%s: JPEG: byte %zu is 0x%02X where a marker (0xFF) should start",
                            label, p, b[p]);
        while (p < len && b[p] == 0xFF) /* fill bytes */
            p++;
        if (p >= len)
            return truncated(label, "JPEG");
        unsigned marker = b[p++];
        if (marker == 0xD8 || marker == 0xD9 || marker == 0xDA)
            return kd_error(KD_ERR_FORMAT, "%s: JPEG: marker 0x%02X before any frame header",
                            label, marker);
        if (is_standalone(marker))
            continue;
        if (len - p < 2)
            return truncated(label, "JPEG");
        size_t seg = be16(b + p);
        if (seg < 2)
            return kd_error(KD_ERR_FORMAT, "%s: JPEG: segment 0x%02X has length %zu", label,
                            marker, seg);
        if (is_frame_marker(marker)) {
            /* length, precision, height, width */
            if (seg < 8 || len - p < 7)
                return truncated(label, "JPEG frame");
            out->format = KD_IMG_JPEG;
            out->height = be16(b + p + 3);
            out->width = be16(b + p + 5);
            return KD_OK;
        }
        if (len - p < seg)
            return truncated(label, "JPEG");
        p += seg;
    }
}

/* p past a scan's entropy-coded data: to the next marker that is neither
 * a stuffed 0xFF00 nor a restart marker RST0..7. */
static size_t skip_entropy_data(const unsigned char *b, size_t len, size_t p)
{
    while (p + 1 < len) {
        if (b[p] != 0xFF) {
            p++;
            continue;
        }
        unsigned next = b[p + 1];
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7))
            p += 2;
        else if (next == 0xFF)
            p++; /* fill byte before a marker */
        else
            return p;
    }
    return len;
}

/* libjpeg (so OpenCV) decodes a truncated JPEG with a warning and fills
 * the missing rows with gray; PIL refuses it ("image file is truncated").
 * So the segments are walked to the EOI marker, scans included. */
static kd_status check_jpeg_complete(const unsigned char *b, size_t len, const char *label)
{
    size_t p = 2;
    for (;;) {
        if (p >= len || b[p] != 0xFF)
            break;
        while (p < len && b[p] == 0xFF)
            p++;
        if (p >= len)
            break;
        unsigned marker = b[p++];
        if (marker == 0xD9)
            return KD_OK;
        if (is_standalone(marker))
            continue;
        if (len - p < 2 || be16(b + p) < 2 || len - p < be16(b + p))
            break;
        p += be16(b + p);
        if (marker == 0xDA)
            p = skip_entropy_data(b, len, p);
    }
    return kd_error(KD_ERR_FORMAT, "%s: JPEG: truncated or damaged: no end-of-image marker "
                    "after its segments and scans (PIL refuses it too)", label);
}

static kd_status read_png(const unsigned char *b, size_t len, const char *label,
                          kd_img_header *out)
{
    /* signature (8), IHDR length (4) and type (4), width (4), height (4) */
    if (len < 24)
        return truncated(label, "PNG");
    if (be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return kd_error(KD_ERR_FORMAT, "%s: PNG: the first chunk is not a 13-byte IHDR",
                        label);
    uint32_t w = be32(b + 16), h = be32(b + 20);
    if (w > INT32_MAX || h > INT32_MAX)
        return kd_error(KD_ERR_FORMAT, "%s: PNG: a side of %u x %u is over 2^31 - 1", label,
                        (unsigned)w, (unsigned)h);
    out->format = KD_IMG_PNG;
    out->width = w;
    out->height = h;
    return KD_OK;
}

kd_status kd_img_read_header(const unsigned char *bytes, size_t len, const char *label,
                             kd_img_header *out)
{
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    kd_status st;
    if (len >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
        st = read_jpeg(bytes, len, label, out);
        if (st == KD_OK)
            st = check_jpeg_complete(bytes, len, label);
    }
    else if (len >= 8 && memcmp(bytes, png_magic, 8) == 0)
        st = read_png(bytes, len, label, out);
    else
        return kd_error(KD_ERR_FORMAT, "%s: neither JPEG nor PNG (%zu bytes%s)", label, len,
                        len ? ", unknown magic" : ": an empty file");
    if (st == KD_OK && (out->height < 1 || out->width < 1))
        return kd_error(KD_ERR_FORMAT, "%s: %s: the header says %lld x %lld pixels", label,
                        kd_img_format_name(out->format), (long long)out->width,
                        (long long)out->height);
    return st;
}

const char *kd_img_format_name(kd_img_format format)
{
    return format == KD_IMG_JPEG ? "JPEG" : "PNG";
}
