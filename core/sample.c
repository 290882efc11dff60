/* The loader's per-thread sample buffer, which datasets and transforms
 * resize through kd_sample_reserve. */
#include <stdlib.h>

#include "internal.h"
#include <kdengine/plugin.h>

kd_status kd_sample_reserve(kd_sample *s, size_t bytes)
{
    if (!s)
        return kd_error(KD_ERR_INVALID, "kd_sample_reserve: no sample");
    if (bytes <= s->capacity)
        return KD_OK;
    void *grown = realloc(s->data, bytes);
    if (!grown)
        return kd_error(KD_ERR_NOMEM, "kd_sample_reserve: out of memory for %zu bytes", bytes);
    s->data = grown;
    s->capacity = bytes;
    return KD_OK;
}
