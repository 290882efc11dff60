/* The images plugin's bridge to OpenCV, whose API is C++ only. This header
 * is C; opencv_shim.cpp implements it and catches every C++ exception, so
 * nothing throws across the boundary: a failure returns false with a
 * message in msg (msg_size bytes, always terminated). */
#ifndef KD_OPENCV_SHIM_H
#define KD_OPENCV_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A decoded image as OpenCV holds it: rows contiguous, channels 1 (gray),
 * 3 (BGR) or 4 (BGRA), 8 or 16 bits per value. */
typedef struct kd_cv_pixels {
    int height, width, channels;
    int bits; /* 8 or 16 */
    const void *data;
    void *handle; /* OpenCV's matrix; kd_cv_pixels_free releases it */
} kd_cv_pixels;

/* Decodes a JPEG or PNG held in memory with cv::imdecode(IMREAD_UNCHANGED):
 * the file's own channels and depth, and no EXIF rotation, as PIL's
 * Image.open (which torchvision's loaders use) does not rotate either.
 * False with a message when OpenCV cannot decode it. */
bool kd_cv_decode(const unsigned char *bytes, size_t len, kd_cv_pixels *out, char *msg,
                  size_t msg_size);
void kd_cv_pixels_free(kd_cv_pixels *p);

typedef enum kd_cv_interp {
    KD_CV_NEAREST = 0,
    KD_CV_BILINEAR,
    KD_CV_BICUBIC,
    KD_CV_AREA
} kd_cv_interp;

/* cv::resize of a u8 window (h x w x c, rows src_stride bytes apart) into
 * dst (out_h x out_w x c, contiguous). c is 1 to 4. */
bool kd_cv_resize(const uint8_t *src, int h, int w, int c, size_t src_stride, uint8_t *dst,
                  int out_h, int out_w, kd_cv_interp interp, char *msg, size_t msg_size);

/* OpenCV's own worker threads off for the process: loader threads already
 * decode and resize one sample each, and a parallel resize inside each of
 * them would oversubscribe the cores. Every provider's create() calls it. */
bool kd_cv_use_calling_thread_only(char *msg, size_t msg_size);

#ifdef __cplusplus
}
#endif
#endif
