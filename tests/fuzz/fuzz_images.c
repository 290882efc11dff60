/* libFuzzer target for the images plugin's file path: the JPEG/PNG header
 * reader and OpenCV's decoding through the shim, on arbitrary bytes; a
 * decoded image must match its header and is then cropped and resized
 * with a window and size taken from the input. Built and run by
 * scripts/fuzz-images. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/data/images/geometry.h"
#include "../../plugins/data/images/image_decode.h"
#include "../../plugins/data/images/image_header.h"
#include "../../plugins/data/images/opencv_shim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
    /* 4 Mpixels at most, so a fuzzed header cannot make OpenCV allocate
     * more than the run's memory limit */
    if (kd_img_decode(data, size, "fuzz", 3, INT64_C(1) << 22, &s) != KD_OK) {
        free(s.data);
        return 0;
    }
    kd_img_header h;
    if (kd_img_read_header(data, size, "fuzz", &h) != KD_OK || h.height != s.height ||
        h.width != s.width || s.channels != 3)
        __builtin_trap();
    kd_rng rng = kd_rng_make(size, 0, 0);
    kd_rrc_config cfg = {{0.08, 1.0}, {0.75, 4.0 / 3.0}};
    kd_geo_window w = kd_rrc_draw(&rng, s.height, s.width, &cfg);
    if (w.top < 0 || w.left < 0 || w.height < 1 || w.width < 1 ||
        w.top + w.height > s.height || w.left + w.width > s.width)
        __builtin_trap();
    uint8_t out[24 * 24 * 3];
    size_t row = (size_t)s.width * 3;
    char msg[256];
    const uint8_t *corner = (const uint8_t *)s.data + (size_t)w.top * row + (size_t)w.left * 3;
    if (!kd_cv_resize(corner, w.height, w.width, 3, row, out, 1 + data[0] % 24,
                      1 + data[size - 1] % 24, (kd_cv_interp)(size % 4), msg, sizeof msg))
        __builtin_trap();
    free(s.data);
    return 0;
}
