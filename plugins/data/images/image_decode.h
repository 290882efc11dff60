/* One JPEG or PNG file to a u8 HWC sample, with the pixels torchvision's
 * default loader gives: PIL's Image.open(path).convert("RGB") (or "L" for
 * one channel). OpenCV decodes (opencv_shim.h, no EXIF rotation, as PIL);
 * the conversion to RGB or gray follows Pillow's rules, written out here:
 *   8-bit gray            RGB: the value three times
 *   8-bit RGB / RGBA      RGB: as is, alpha dropped (not composited)
 *   CMYK JPEG             RGB: OpenCV's CMYK conversion; Pillow's
 *                         rounds differently, and nearly every value is
 *                         1 level apart (measured in test_images)
 *   16-bit gray PNG       Pillow reads mode "I" and converts by clipping:
 *                         min(v, 255), not v >> 8
 *   16-bit RGB(A) / LA    Pillow keeps the high byte: v >> 8
 *   to gray (channels 1)  L = (19595 R + 38470 G + 7471 B + 32768) >> 16,
 *                         Pillow's fixed-point ITU-R 601 luma. */
#ifndef KD_IMAGE_DECODE_H
#define KD_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/plugin.h>

/* Decodes `bytes` (a whole file, named `label` in messages) into out as
 * u8 height x width x channels (channels 1 or 3). KD_ERR_FORMAT when the
 * file is not a JPEG or PNG, its header is broken, it claims more than
 * max_pixels pixels, or OpenCV cannot decode it. */
kd_status kd_img_decode(const unsigned char *bytes, size_t len, const char *label,
                        int channels, int64_t max_pixels, kd_sample *out);

/* The whole file into a malloc'd buffer (*len bytes; free it).
 * KD_ERR_IO naming the path when it cannot be read. */
kd_status kd_img_read_file(const char *path, unsigned char **bytes, size_t *len);

#endif
