/* kdengine: status codes and the thread-local error message.
 *
 * Every function that can fail returns a kd_status (or NULL for functions
 * that return a pointer) and leaves a message for the caller in
 * kd_last_error(). The message names what went wrong: the file, the tensor,
 * the op, the JSON path. It stays valid until the next failure on the same
 * thread. */
#ifndef KDENGINE_STATUS_H
#define KDENGINE_STATUS_H

#include <kdengine/api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kd_status {
    KD_OK = 0,
    KD_ERR_INVALID,     /* bad argument: shape, dtype, range */
    KD_ERR_NOMEM,       /* an allocation failed */
    KD_ERR_IO,          /* open, read, write, fsync, rename, mmap */
    KD_ERR_FORMAT,      /* a malformed file */
    KD_ERR_UNSUPPORTED, /* a dtype or device an op does not implement */
    KD_ERR_DEVICE,      /* the CUDA runtime or a library on it failed */
    KD_ERR_STATE        /* an API called at the wrong time */
} kd_status;

/* The message of the most recent failure on this thread ("" if none). */
KD_API const char *kd_last_error(void);

/* The code of that failure (KD_OK if none since kd_clear_error): what a
 * caller passes to kd_error_wrap when a call that returns NULL failed, so
 * that out-of-memory or a device error is not reported as a bad argument. */
KD_API kd_status kd_last_status(void);

/* Sets the thread's message and returns code, so a failing path reads
 * `return kd_error(KD_ERR_INVALID, "conv2d: ...", ...);`. */
KD_API kd_status kd_error(kd_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with more context ("loading x.safetensors: "). */
KD_API kd_status kd_error_wrap(kd_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

KD_API void kd_clear_error(void);
KD_API const char *kd_status_name(kd_status code);

#ifdef __cplusplus
}
#endif
#endif
