/* A built kd_params, shared by the host that builds it (params.c) and the
 * accessors in libkdcore that plugins read it through (plugin_api.c).
 *
 * It is normalised so the JSON type of each value says its schema type:
 * "number" values are reals, "integer" values are integers (4.0 given for
 * an integer becomes 4), and array elements follow their "items" type the
 * same way. The accessors then need no schema. */
#ifndef KD_CORE_PARAMS_H
#define KD_CORE_PARAMS_H

#include <jansson.h>
#include <kdengine/plugin.h>

struct kd_params {
    json_t *values; /* every schema key, normalised as above */
};

#endif
