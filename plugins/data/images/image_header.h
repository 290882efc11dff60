/* The format and size of a JPEG or PNG file from its first bytes, read
 * before any decoder runs: a header claiming a huge image is refused
 * before OpenCV allocates for it, and a file that is neither format is
 * named as such. A plain parser of untrusted bytes: no allocation, every
 * read bounds-checked (fuzzed through tests/fuzz/corpus/images). */
#ifndef KD_IMAGE_HEADER_H
#define KD_IMAGE_HEADER_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/status.h>

typedef enum kd_img_format { KD_IMG_JPEG = 1, KD_IMG_PNG } kd_img_format;

typedef struct kd_img_header {
    kd_img_format format;
    int64_t height, width; /* both >= 1 */
} kd_img_header;

/* JPEG: the SOI marker, then marker segments up to the first frame header
 * (SOF0..SOF15 but DHT, JPG, DAC), whose height and width it reads; then
 * the rest of the segments and scans up to the EOI marker, since libjpeg
 * would decode a truncated file where PIL refuses it.
 * PNG: the signature and the IHDR chunk's width and height.
 * KD_ERR_FORMAT naming `label` when the magic is neither, the header ends
 * early, or a side is 0 (a JPEG height given later by DNL is refused). */
kd_status kd_img_read_header(const unsigned char *bytes, size_t len, const char *label,
                             kd_img_header *out);

/* "JPEG" or "PNG". */
const char *kd_img_format_name(kd_img_format format);

#endif
