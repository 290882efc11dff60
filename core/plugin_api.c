/* What plugin.h declares and libkdcore defines for plugins: kind names,
 * the sample buffers datasets and transforms resize, and the parameter
 * accessors. The host builds what these read (params.c, loader.c), but
 * plugins link libkdcore only, so the definitions live here. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "params.h"

const char *kd_tap_shape_str(const kd_tap_shape *s, char *buf, int size)
{
    return kd_dims_str(s->ndim, s->shape, buf, size);
}

static const char *const kind_names[KD_KIND_COUNT] = {
    [KD_KIND_MODEL] = "model",
    [KD_KIND_LOSS] = "loss",
    [KD_KIND_DATASET] = "dataset",
    [KD_KIND_TRANSFORM] = "transform",
    [KD_KIND_BATCH_TRANSFORM] = "batch_transform",
    [KD_KIND_OPTIMIZER] = "optimizer",
    [KD_KIND_SCHEDULER] = "scheduler",
};

const char *kd_plugin_kind_name(kd_plugin_kind kind)
{
    if ((int)kind < 0 || kind >= KD_KIND_COUNT)
        return NULL;
    return kind_names[kind];
}

int kd_plugin_kind_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int k = 0; k < KD_KIND_COUNT; k++)
        if (strcmp(kind_names[k], name) == 0)
            return k;
    return -1;
}

/* ---------------------------------------------------------------- samples */

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

/* ---------------------------------------------------------------- parameters */

static const json_t *lookup(const kd_params *p, const char *key)
{
    return p && key ? json_object_get(p->values, key) : NULL;
}

double kd_params_number(const kd_params *p, const char *key)
{
    const json_t *v = lookup(p, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

int64_t kd_params_integer(const kd_params *p, const char *key)
{
    const json_t *v = lookup(p, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

bool kd_params_boolean(const kd_params *p, const char *key)
{
    return json_is_true(lookup(p, key));
}

const char *kd_params_string(const kd_params *p, const char *key)
{
    return json_string_value(lookup(p, key));
}

int kd_params_array_length(const kd_params *p, const char *key)
{
    const json_t *v = lookup(p, key);
    return json_is_array(v) ? (int)json_array_size(v) : 0;
}

double kd_params_array_number(const kd_params *p, const char *key, int i)
{
    const json_t *v = lookup(p, key);
    const json_t *e = json_is_array(v) && i >= 0 ? json_array_get(v, (size_t)i) : NULL;
    return json_is_number(e) ? json_number_value(e) : 0.0;
}

const char *kd_params_array_string(const kd_params *p, const char *key, int i)
{
    const json_t *v = lookup(p, key);
    return json_is_array(v) && i >= 0 ? json_string_value(json_array_get(v, (size_t)i)) : NULL;
}
