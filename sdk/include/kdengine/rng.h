/* kdengine: counter-based random numbers (Philox4x32-10).
 *
 * A draw depends only on (seed, stream, counter), never on thread timing:
 * dropout, drop-path, augmentation and sampler order key their streams by
 * purpose, epoch, step or sample index, so a resumed run replays exactly and
 * the worker count does not change results. */
#ifndef KDENGINE_RNG_H
#define KDENGINE_RNG_H

#include <stdint.h>

#include <kdengine/api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_rng {
    uint32_t key[2];   /* from the seed */
    uint32_t stream[2]; /* from the purpose: (epoch, step), (sample, op), ... */
    uint64_t counter;   /* 32-bit draws consumed so far */
} kd_rng;

KD_API kd_rng kd_rng_make(uint64_t seed, uint64_t stream_hi, uint64_t stream_lo);
/* One Philox block for (key, stream, counter): pure, no state. */
KD_API void kd_philox4x32(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4]);
/* Sequential draws; each call advances the counter. */
KD_API uint32_t kd_rng_u32(kd_rng *rng);
KD_API double kd_rng_uniform(kd_rng *rng);           /* [0, 1) with 53 bits */
KD_API float kd_rng_uniformf(kd_rng *rng);           /* [0, 1) with 24 bits */
KD_API double kd_rng_normal(kd_rng *rng);            /* mean 0, std 1 */
/* Uniform in [0, n) without modulo bias. */
KD_API uint64_t kd_rng_below(kd_rng *rng, uint64_t n);
/* out[i] = the float in [0,1) that draw number rng->counter + first + i
 * would give; lets threads fill disjoint parts of one mask. The caller
 * advances rng->counter by the total afterwards. */
KD_API void kd_rng_fill_uniformf(const kd_rng *rng, uint64_t first, float *out,
                                 int64_t n);

#ifdef __cplusplus
}
#endif
#endif
