/* oneDNN's engine and stream, shared by the oneDNN kernels (convolution,
 * batched matrix products), and its errors as kd statuses. */
#ifndef KD_CPU_DNNL_CONTEXT_H
#define KD_CPU_DNNL_CONTEXT_H

#include <dnnl.h>

#include "cpu.h"

/* The engine and stream, made on first use; `who` names the caller in the
 * error when oneDNN cannot make them. */
kd_status kd_dnnl_context(const char *who, dnnl_engine_t *engine, dnnl_stream_t *stream);

/* "WHO: oneDNN WHAT failed: reason", KD_ERR_NOMEM for out of memory, else
 * KD_ERR_UNSUPPORTED (callers may fall back to another kernel). */
kd_status kd_dnnl_fail(const char *who, const char *what, dnnl_status_t s);

#endif
