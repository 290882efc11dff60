/* libFuzzer target for the safetensors reader: parse arbitrary bytes, and
 * when they validate, read every entry and load each one that maps to a
 * kdengine dtype. Built and run by scripts/fuzz. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <kdengine/kdengine.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kd_safetensors *f;
    if (kd_safetensors_parse(data, size, "fuzz", &f) != KD_OK)
        return 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < kd_safetensors_count(f); i++) {
        const kd_safetensors_entry *e = kd_safetensors_at(f, i);
        if (kd_safetensors_find(f, e->name) != e)
            __builtin_trap();
        /* Touch the first and last byte so ASan sees any bad pointer. */
        if (e->nbytes > 0)
            sink ^= ((const uint8_t *)e->data)[0] ^
                    ((const uint8_t *)e->data)[e->nbytes - 1];
        if (e->nbytes > ((size_t)1 << 20))
            continue;
        if (e->dtype >= 0) {
            kd_tensor *t = kd_safetensors_load(f, e->name, (kd_dtype)e->dtype);
            if (!t || memcmp(kd_tensor_data(t), e->data, e->nbytes) != 0)
                __builtin_trap();
            kd_tensor_free(t);
        }
        /* Widening loads: one of them is refused unless the type has no
         * kdengine counterpart at all, in which case both are. */
        kd_tensor_free(kd_safetensors_load(f, e->name, KD_F64));
        kd_tensor_free(kd_safetensors_load(f, e->name, KD_I64));
    }
    kd_safetensors_metadata(f, "format");
    kd_safetensors_close(f);
    (void)sink;
    return 0;
}
