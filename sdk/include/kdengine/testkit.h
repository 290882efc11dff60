/* kdengine test kit: testing a plugin the way the host loads it.
 *
 * libkdtestkit (pkg-config kdengine-testkit) holds the host's registry and
 * parameter schemas: a test opens a plugin folder by path (its manifest is
 * checked as kdengine checks it), creates a provider through the real load
 * checks (ABI, fingerprint, providers, required callbacks) with parameters
 * from a JSON text validated against the manifest's schema, runs a loss on
 * given tensors, and gradient-checks anything in f64:
 *
 *   kd_testkit *kit;
 *   kd_testkit_instance *loss;
 *   kd_testkit_open("path/to/my_loss", &kit);
 *   kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS,
 *                     .provider = "my_loss", .params = "{\"beta\": 2}",
 *                     .dtype = KD_F64}, &loss);
 *   kd_tensor *student[] = {logits}, *teacher[] = {teacher_logits};
 *   kd_testkit_batch batch = {.student = student, .teacher = teacher};
 *   kd_testkit_loss_bind(loss, &batch);
 *   kd_testkit_gradcheck_report r;
 *   if (kd_testkit_loss_gradcheck(loss, &batch, 1e-6, &r) != KD_OK)
 *       puts(kd_last_error());
 *   kd_testkit_close(kit);
 *
 * Every function returns KD_OK or a status with kd_last_error() naming the
 * path, the provider or the tensor. Instances run on the CPU. A plugin
 * itself never links the kit: it is for test programs.
 *
 * Ownership: a kit owns the instances it created (kd_testkit_close destroys
 * any left) and the strings it hands out. Tensors follow tensor.h: results
 * of kd_testkit_loss_forward belong to the open step scope. */
#ifndef KDENGINE_TESTKIT_H
#define KDENGINE_TESTKIT_H

#include <stdint.h>

#include <kdengine/kdengine.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What libkdtestkit exports (KD_API marks libkdcore's). */
#if defined(__GNUC__)
#define KD_TESTKIT_API __attribute__((visibility("default")))
#else
#define KD_TESTKIT_API
#endif

typedef struct kd_testkit kd_testkit;

/* Reads the manifests at `path`: a plugin folder (manifest.json and its
 * library) or a folder of plugin folders. A missing path, a malformed
 * manifest, or no manifest at all is an error naming the path. */
KD_TESTKIT_API kd_status kd_testkit_open(const char *path, kd_testkit **out);
/* Destroys the kit's instances and unloads its libraries. */
KD_TESTKIT_API void kd_testkit_close(kd_testkit *kit);

/* What to create. Zero fields are the defaults. */
typedef struct kd_testkit_spec {
    kd_plugin_kind kind;
    const char *provider; /* its name in the manifest */
    const char *params;   /* a JSON object's text; NULL: {} (the defaults) */
    kd_dtype dtype;       /* kd_create_args.dtype: KD_F32, or KD_F64 */
    uint64_t seed;        /* kd_create_args.seed */
    /* What create() takes besides its args: an optimizer's
     * const kd_tensor_list * of parameters, a scheduler's
     * const kd_schedule_info *; NULL for the other kinds. */
    const void *extra;
} kd_testkit_spec;

/* A provider instance. vtable is the host's copy of the plugin's (as large
 * as this SDK's struct for the kind, callbacks an older plugin lacks NULL):
 * cast it to the kind's vtable and pass self to its callbacks. */
typedef struct kd_testkit_instance {
    kd_plugin_kind kind;
    const char *provider;
    const kd_vtable_header *vtable;
    void *self;
} kd_testkit_instance;

/* Loads the provider's library through the registry's checks, builds its
 * parameters against the manifest's schema and calls create() with the
 * provider's name and user data, the CPU and spec->dtype. */
KD_TESTKIT_API kd_status kd_testkit_create(kd_testkit *kit, const kd_testkit_spec *spec,
                                           kd_testkit_instance **out);
/* Calls destroy() and forgets the instance (before its kit closes). */
KD_TESTKIT_API void kd_testkit_destroy(kd_testkit_instance *instance);

/* The tensors a loss receives; student and teacher in the order of its
 * needs(). */
typedef struct kd_testkit_batch {
    kd_tensor *const *student;
    kd_tensor *const *teacher; /* NULL for a loss that needs no teacher */
    kd_tensor *labels;         /* I64 [N], or NULL */
    kd_tensor *soft_targets;   /* [N, classes], or NULL */
} kd_testkit_batch;

/* Asks needs() and, when the loss has bind(), binds it to the batch's
 * shapes at batch 1 (tap layouts from the rank: NC, tokens, NCHW) with host
 * services for one process: num_classes from the last student tap's dim 1,
 * train_length N, train_labels the batch's labels, identity collectives,
 * no forward_from. Once per instance; later calls return KD_OK. bind()
 * makes the loss's own tensors, so no scope may be open (KD_ERR_STATE). */
KD_TESTKIT_API kd_status kd_testkit_loss_bind(kd_testkit_instance *loss,
                                              const kd_testkit_batch *batch);
/* Runs a loss's forward (training, epoch 0, step 0) and fills *out (its
 * tensors belong to the open scope). Binds first when not yet bound. */
KD_TESTKIT_API kd_status kd_testkit_loss_forward(kd_testkit_instance *loss,
                                                 const kd_testkit_batch *batch,
                                                 kd_loss_result *out);

/* --- gradient checks in f64 --- */

/* A function of tensors, run with grad mode on: returns its output (any
 * shape, f64), or NULL with kd_last_error() set. */
typedef kd_tensor *(*kd_testkit_fn)(void *ctx, kd_tensor *const *inputs);

typedef struct kd_testkit_gradcheck_report {
    double max_abs_error;      /* largest |analytic - numeric| */
    double max_error;          /* largest |analytic - numeric| / max(1, |numeric|):
                                  what tol bounds */
    int input;                 /* where max_error is: input index... */
    int64_t element;           /* ...and element */
    double analytic, numeric;  /* the two values there */
    int64_t probes;            /* elements checked */
} kd_testkit_gradcheck_report;

/* Checks the gradient of fn at `inputs` against central differences
 * (step 1e-6) of sum(w * fn(inputs)) for fixed random weights w, for every
 * input that requires grad (f64, CPU, contiguous; at most 256 elements per
 * input, evenly spaced). Their .grad is zeroed first and holds the analytic
 * gradient afterwards. KD_OK when every probe's error is at most tol;
 * otherwise KD_ERR_INVALID with the worst probe in the message. *report
 * (may be NULL) is filled either way. Opens its own scopes. */
KD_TESTKIT_API kd_status kd_testkit_gradcheck(kd_testkit_fn fn, void *ctx, int n_inputs,
                                              kd_tensor *const *inputs, double tol,
                                              kd_testkit_gradcheck_report *report);
/* The same for a loss: its value on `batch` as a function of the student
 * tensors that require grad (the teacher and labels held fixed), binding
 * the loss first when needed. The loss must have been created in KD_F64. */
KD_TESTKIT_API kd_status kd_testkit_loss_gradcheck(kd_testkit_instance *loss,
                                                   const kd_testkit_batch *batch, double tol,
                                                   kd_testkit_gradcheck_report *report);

#ifdef __cplusplus
}
#endif
#endif
