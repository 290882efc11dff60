/* Dtype conversions on the CPU (cpu.h). */
#include <stdbool.h>

#include "cpu.h"

bool kd_cpu_convert(kd_dtype dst_dt, void *d, kd_dtype src_dt, const void *s, int64_t n)
{
    if (src_dt == KD_F32 && dst_dt == KD_F64) {
        const float *a = s;
        double *b = d;
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            b[i] = a[i];
    } else if (src_dt == KD_F64 && dst_dt == KD_F32) {
        const double *a = s;
        float *b = d;
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            b[i] = (float)a[i];
    } else if (src_dt == KD_F32 && (dst_dt == KD_F16 || dst_dt == KD_BF16)) {
        const float *a = s;
        uint16_t *b = d;
        uint16_t (*to16)(float) = dst_dt == KD_F16 ? kd_f32_to_f16 : kd_f32_to_bf16;
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            b[i] = to16(a[i]);
    } else if ((src_dt == KD_F16 || src_dt == KD_BF16) && dst_dt == KD_F32) {
        const uint16_t *a = s;
        float *b = d;
        float (*from16)(uint16_t) = src_dt == KD_F16 ? kd_f16_to_f32 : kd_bf16_to_f32;
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++)
            b[i] = from16(a[i]);
    } else {
        return false;
    }
    return true;
}
