/* Element types and half-precision conversion. */
#include <string.h>

#include "internal.h"

static const struct {
    const char *name;
    size_t size;
    int is_float;
} dtype_info[KD_DTYPE_COUNT] = {
    [KD_F32] = {"f32", 4, 1}, [KD_F64] = {"f64", 8, 1},
    [KD_F16] = {"f16", 2, 1}, [KD_BF16] = {"bf16", 2, 1},
    [KD_I32] = {"i32", 4, 0}, [KD_I64] = {"i64", 8, 0},
    [KD_U8] = {"u8", 1, 0},
};

size_t kd_dtype_size(kd_dtype dtype)
{
    return (unsigned)dtype < KD_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

const char *kd_dtype_name(kd_dtype dtype)
{
    return (unsigned)dtype < KD_DTYPE_COUNT ? dtype_info[dtype].name : NULL;
}

int kd_dtype_from_name(const char *name)
{
    for (int i = 0; i < KD_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_info[i].name) == 0)
            return i;
    return -1;
}

int kd_dtype_is_float(kd_dtype dtype)
{
    return (unsigned)dtype < KD_DTYPE_COUNT && dtype_info[dtype].is_float;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kd_bf16_to_f32(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t kd_f32_to_bf16(float f)
{
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and NaN */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float kd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf or NaN */
        return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return bits_float(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t kd_f32_to_f16(float f)
{
    uint32_t u = float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((absu >> 13) & 0x3ffu));
    if (absu >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) { /* below the smallest normal half, 2^-14 */
        /* scale so the subnormal unit 2^-24 becomes 1 and round to even */
        float a = bits_float(absu) * 16777216.0f;
        uint32_t m = (uint32_t)a;
        float rem = a - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t mant = absu & 0x7fffffu;
    uint32_t exp = (absu >> 23) - 112u;
    uint32_t half = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        half++; /* may carry into the exponent, which is still correct */
    return (uint16_t)(sign | half);
}
