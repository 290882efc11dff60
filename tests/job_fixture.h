/* Real jobs in tests: a tiny synthetic IDX data set and the build's
 * kdengine binary, so a test runs `validate`, `run`, `label`... as a user
 * does, in a second or two. */
#ifndef KD_TEST_JOB_FIXTURE_H
#define KD_TEST_JOB_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An IDX file of unsigned bytes with the given dimensions. */
bool kt_write_idx(const char *path, int ndims, const uint32_t *dims, const uint8_t *data,
                  size_t n);
/* DIR/NAME-images.idx and DIR/NAME-labels.idx: `count` 8x8 images of 4
 * classes (sample i is class i % 4), the class's quadrant bright, noise
 * drawn from `seed`. */
bool kt_write_quadrants(const char *dir, const char *name, uint32_t count, uint64_t seed);
/* Runs `kdengine ARGS` (printf-style) in `dir` with stderr folded into
 * *out (malloc'd); the exit status. */
int kt_kdengine(const char *dir, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* tests/plugins/mlp (its manifest and a link to the built library) in a
 * plugin dir of its own, DIR/extra, whose path goes to plugin_dir. */
void kt_stage_mlp(const char *dir, char *plugin_dir, size_t size);

#endif
