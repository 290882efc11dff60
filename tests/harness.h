/* Test harness: counting, random inputs, tensor comparison.
 *
 * Every test binary reports each case as one line ("ok", "FAIL", "skip")
 * and ends with "RESULT <passed> <failed> <skipped>", which tests/run adds
 * up into the suite's closing line. */
#ifndef KD_TEST_HARNESS_H
#define KD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include <kdengine/kdengine.h>

void kt_pass(const char *name);
void kt_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kt_skip(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Pass when cond holds, else fail with the formatted reason. */
bool kt_check(bool cond, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints the RESULT line; returns the process exit code. */
int kt_finish(void);

/* Uniform in [lo, hi), from rng. */
kd_tensor *kt_uniform(kd_dtype dtype, int ndim, const int64_t *shape, kd_rng *rng,
                      double lo, double hi);
/* ||a - b|| / max(||b||, 1e-30), both read as doubles (CPU tensors). */
double kt_rel_error(const kd_tensor *a, const kd_tensor *b);
/* Largest |a - b|. */
double kt_max_abs_diff(const kd_tensor *a, const kd_tensor *b);

/* Writes len bytes to path (replacing it); false on any failure. */
bool kt_write_file(const char *path, const void *data, size_t len);
/* The whole file in a malloc'd buffer the caller frees; NULL if unreadable. */
unsigned char *kt_read_file(const char *path, size_t *len);

/* Replays every file of a fuzz corpus (a folder in the source tree): each
 * must parse (KD_OK) or be refused with KD_ERR_FORMAT and a message naming
 * the file. `parse` parses one file labelled `label`, runs its own checks
 * on a valid one (clearing *consistent when they fail) and frees it. */
typedef kd_status (*kt_corpus_parse_fn)(const unsigned char *bytes, size_t len,
                                        const char *label, bool *consistent);
void kt_replay_corpus(const char *relative_dir, kt_corpus_parse_fn parse);

/* Runs a shell command; returns its exit status (-1 if it did not exit)
 * and, when out is not NULL, its stdout in a malloc'd string. */
int kt_run_command(const char *cmd, char **out);

/* Removes a test's temporary folder and everything in it; says so on
 * stderr when it cannot (a leftover folder is not a test failure). */
void kt_remove_tree(const char *dir);

/* Path of a file in the source tree (tests/, bench/). */
const char *kt_source_path(const char *relative, char *buf, int size);

#endif
