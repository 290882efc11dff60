/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC'11): a pure function of (key, counter), so any draw can be
 * recomputed from its position alone. */
#include <math.h>

#include "internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void kd_philox4x32(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Mixes a 64-bit value (splitmix64 finaliser) so nearby seeds and streams
 * give unrelated keys. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

kd_rng kd_rng_make(uint64_t seed, uint64_t stream_hi, uint64_t stream_lo)
{
    kd_rng r;
    uint64_t k = mix64(seed);
    uint64_t s = mix64(stream_hi ^ mix64(stream_lo));
    r.key[0] = (uint32_t)k;
    r.key[1] = (uint32_t)(k >> 32);
    r.stream[0] = (uint32_t)s;
    r.stream[1] = (uint32_t)(s >> 32);
    r.counter = 0;
    return r;
}

static uint32_t draw_at(const kd_rng *rng, uint64_t index)
{
    uint64_t block = index >> 2;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), rng->stream[0],
                       rng->stream[1]};
    uint32_t out[4];
    kd_philox4x32(rng->key, ctr, out);
    return out[index & 3];
}

uint32_t kd_rng_u32(kd_rng *rng) { return draw_at(rng, rng->counter++); }

double kd_rng_uniform(kd_rng *rng)
{
    uint64_t hi = kd_rng_u32(rng) >> 5, lo = kd_rng_u32(rng) >> 6;
    return (double)(hi * 67108864u + lo) * (1.0 / 9007199254740992.0);
}

float kd_rng_uniformf(kd_rng *rng)
{
    return (float)(kd_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

double kd_rng_normal(kd_rng *rng)
{
    /* Box-Muller; 1 - u keeps the log argument in (0, 1]. */
    double u1 = 1.0 - kd_rng_uniform(rng), u2 = kd_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t kd_rng_below(kd_rng *rng, uint64_t n)
{
    if (n <= 1)
        return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t v = ((uint64_t)kd_rng_u32(rng) << 32) | kd_rng_u32(rng);
        if (v < limit)
            return v % n;
    }
}

void kd_rng_fill_uniformf(const kd_rng *rng, uint64_t first, float *out, int64_t n)
{
    uint64_t base = rng->counter + first;
    int64_t i = 0;
    /* Head up to a block boundary, then whole blocks, then the tail. */
    while (i < n && ((base + (uint64_t)i) & 3) != 0) {
        out[i] = (float)(draw_at(rng, base + (uint64_t)i) >> 8) * (1.0f / 16777216.0f);
        i++;
    }
    for (; i + 4 <= n; i += 4) {
        uint64_t block = (base + (uint64_t)i) >> 2;
        uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), rng->stream[0],
                           rng->stream[1]};
        uint32_t r[4];
        kd_philox4x32(rng->key, ctr, r);
        for (int j = 0; j < 4; j++)
            out[i + j] = (float)(r[j] >> 8) * (1.0f / 16777216.0f);
    }
    for (; i < n; i++)
        out[i] = (float)(draw_at(rng, base + (uint64_t)i) >> 8) * (1.0f / 16777216.0f);
}
