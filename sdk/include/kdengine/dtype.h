/* kdengine: element types and the half-precision conversions. */
#ifndef KDENGINE_DTYPE_H
#define KDENGINE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* f64 exists for gradient checks on the CPU; f16 and bf16 are storage
 * formats now (conversion on the CPU), compute types on the GPU later. */
typedef enum kd_dtype {
    KD_F32 = 0,
    KD_F64,
    KD_F16,
    KD_BF16,
    KD_I32,
    KD_I64,
    KD_U8,
    KD_DTYPE_COUNT
} kd_dtype;

KD_API size_t kd_dtype_size(kd_dtype dtype);
/* "f32", "f64", ...; NULL for a value outside the enum. */
KD_API const char *kd_dtype_name(kd_dtype dtype);
/* Returns -1 for an unknown name. */
KD_API int kd_dtype_from_name(const char *name);
KD_API int kd_dtype_is_float(kd_dtype dtype);

/* IEEE binary16 and bfloat16, round to nearest even, NaN kept NaN. */
KD_API float kd_f16_to_f32(uint16_t h);
KD_API uint16_t kd_f32_to_f16(float f);
KD_API float kd_bf16_to_f32(uint16_t b);
KD_API uint16_t kd_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
