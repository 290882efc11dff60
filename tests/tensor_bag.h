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

#endif
