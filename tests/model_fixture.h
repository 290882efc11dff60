/* A model plugin instance in a test: created through the real registry
 * (plugin_fixture.h) with JSON parameters, its tensors and taps at hand,
 * and forward / forward_from with any set of wanted taps. */
#ifndef KD_TEST_MODEL_FIXTURE_H
#define KD_TEST_MODEL_FIXTURE_H

#include <kdengine/kdengine.h>

#define KT_MODEL_MAX_TAPS 80

typedef struct kt_model {
    const kd_model_vtable *vt;
    void *self;
    int n_tensors, n_taps;
    const kd_named_tensor *tensors;
    const kd_tap_info *taps;
} kt_model;

/* Creates `provider` with params_json (validated against its manifest),
 * the seed and dtype, on the CPU; false with the message in
 * kd_last_error() and the status in *st (when given). */
bool kt_model_open(kt_model *m, const char *provider, const char *params_json, uint64_t seed,
                   kd_dtype dtype, kd_status *st);
void kt_model_close(kt_model *m);
/* -1 when the model has no such tap / tensor. */
int kt_model_tap(const kt_model *m, const char *name);
kd_tensor *kt_model_tensor(const kt_model *m, const char *name);
/* forward (from < 0) or forward_from(from) with the rng keyed (0, 0,
 * rng_step); want NULL wants every tap. taps[] gets KT_MODEL_MAX_TAPS
 * entries, NULL where not filled. */
kd_status kt_model_run(const kt_model *m, int from, kd_tensor *input, bool training,
                       uint64_t rng_step, const bool *want, kd_tensor **taps);

#endif
