/* A loss plugin instance in the loss tests: made through the registry from
 * the build's staged plugins (plugin_fixture.h), run on one batch of
 * student and teacher tensors the test owns. */
#ifndef KD_TEST_LOSS_FIXTURE_H
#define KD_TEST_LOSS_FIXTURE_H

#include <stdbool.h>

#include <kdengine/kdengine.h>

typedef struct kt_loss {
    const kd_loss_vtable *vt;
    void *self;
} kt_loss;

/* An instance of `provider` computing in `dtype`, from `seed`, with params
 * from a JSON text; fails case `name` and returns false when it cannot be
 * made. */
bool kt_loss_open(const char *name, const char *provider, const char *json, kd_dtype dtype,
                  uint64_t seed, kt_loss *out);
void kt_loss_close(kt_loss *l);

/* One batch as a single-tap loss sees it; the tensors are the test's (any
 * may be NULL), freed by kt_loss_batch_free. */
typedef struct kt_loss_batch {
    kd_tensor *student, *teacher, *labels, *soft;
    int64_t epoch; /* 0-based, as the host passes it */
} kt_loss_batch;

/* The loss's forward on b in training mode; r's tensors live in the
 * caller's scope. */
kd_status kt_loss_forward(const kt_loss *l, const kt_loss_batch *b, kd_loss_result *r);
/* The loss value, and the student's gradient (left in b->student->grad)
 * when want_grad; NAN with the message in kd_last_error() on failure. */
double kt_loss_step(const kt_loss *l, kt_loss_batch *b, bool want_grad);
void kt_loss_batch_free(kt_loss_batch *b);

/* Fails case `name` unless st is an error whose message holds w1 and, when
 * not NULL, w2. */
void kt_expect_error(const char *name, kd_status st, const char *w1, const char *w2);

#endif
