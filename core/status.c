/* Thread-local error messages. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define KD_ERROR_MAX 1024

static _Thread_local char error_message[KD_ERROR_MAX];
static _Thread_local kd_status error_code;

const char *kd_last_error(void) { return error_message; }

kd_status kd_last_status(void) { return error_code; }

void kd_clear_error(void)
{
    error_message[0] = '\0';
    error_code = KD_OK;
}

kd_status kd_error(kd_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    error_code = code;
    return code;
}

kd_status kd_error_wrap(kd_status code, const char *fmt, ...)
{
    char old[KD_ERROR_MAX];
    memcpy(old, error_message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int used = vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    /* ": old" after the new context, cut to fit (by hand: gcc at -O1 warns
     * that a snprintf here may truncate, which is what it is for) */
    if (used >= 0 && (size_t)used + 3 < sizeof error_message) {
        size_t at = (size_t)used;
        error_message[at++] = ':';
        error_message[at++] = ' ';
        size_t n = strnlen(old, sizeof old);
        if (n > sizeof error_message - 1 - at)
            n = sizeof error_message - 1 - at;
        memcpy(error_message + at, old, n);
        error_message[at + n] = '\0';
    }
    error_code = code;
    return code;
}

const char *kd_status_name(kd_status code)
{
    switch (code) {
    case KD_OK: return "ok";
    case KD_ERR_INVALID: return "invalid argument";
    case KD_ERR_NOMEM: return "out of memory";
    case KD_ERR_IO: return "i/o error";
    case KD_ERR_FORMAT: return "malformed file";
    case KD_ERR_UNSUPPORTED: return "unsupported";
    case KD_ERR_DEVICE: return "device error";
    case KD_ERR_STATE: return "wrong state";
    }
    return "unknown status";
}
