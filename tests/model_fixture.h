/* A model plugin instance in tests: created through the real registry
 * with JSON parameters, its tensor and tap lists at hand, and forward /
 * forward_from with every tap or a chosen set wanted. */
#ifndef KD_TEST_MODEL_FIXTURE_H
#define KD_TEST_MODEL_FIXTURE_H

#include "plugin_fixture.h"

#define KT_MAX_TAPS 80

typedef struct kt_model {
    const kd_model_vtable *vt;
    void *self;
    int n_tensors, n_taps;
    const kd_named_tensor *tensors;
    const kd_tap_info *taps;
} kt_model;

/* Creates `provider` with params_json in `dtype` on the CPU; false with
 * the message in kd_last_error() (and the status in *st when given). */
bool kt_model_open(kt_model *m, const char *provider, const char *params_json, kd_dtype dtype,
                   uint64_t seed, kd_status *st);
void kt_model_close(kt_model *m);
/* -1 when the model has no such tap. */
int kt_model_tap(const kt_model *m, const char *name);
const kd_named_tensor *kt_model_tensor(const kt_model *m, const char *name);
/* forward (from < 0) or forward_from(from); want NULL wants every tap.
 * taps[] receives the outputs (scope-owned). */
kd_status kt_model_run(const kt_model *m, int from, kd_tensor *input, bool training,
                       const bool *want, kd_tensor **taps);
/* Trainable parameters' element count. */
int64_t kt_model_params(const kt_model *m);

#endif
