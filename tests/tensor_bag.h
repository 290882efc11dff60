/* A growable list of named tensors a parity test hands to its Python
 * reference (inputs) or compares with it (answers).
 *
 * Ownership: the bag owns copies of what is added (kept, on the CPU) and
 * their names; kt_bag_free releases them. */
#ifndef KD_TEST_TENSOR_BAG_H
#define KD_TEST_TENSOR_BAG_H

#include <kdengine/kdengine.h>

typedef struct kt_bag {
    int n, cap;
    char **names;
    kd_tensor **t; /* NULL where a NULL tensor was added */
} kt_bag;

/* Adds a copy of t (NULL stays NULL) under the formatted name; false when
 * out of memory. */
bool kt_bag_add(kt_bag *b, const kd_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A one-element f64 tensor holding v. */
bool kt_bag_add_value(kt_bag *b, double v, const char *name);
void kt_bag_free(kt_bag *b);

/* Runs the Python reference `script` (a path under the source tree, run
 * by KD_TORCH_PYTHON as `script IN OUT`) on `in` saved with the metadata
 * pairs meta[2 * nmeta], in a temporary folder it removes, and opens its
 * answers as *ref (the caller closes it). Case `what` is skipped when
 * torch is not importable and fails on any other problem; false then. */
bool kt_bag_run_reference(const char *what, const char *script, const kt_bag *in, int nmeta,
                          const char **meta, kd_safetensors **ref);

#endif
