/* Transform "random_erasing": timm 0.9.16's RandomErasing on one sample, a
 * normalized f32 CHW image (timm applies it after Normalize, per sample).
 *
 * Draws, in order, from the sample's rng (each maps to the Python call
 * timm makes, so a test can drive timm with the same numbers):
 *   u = kd_rng_uniform                            random.random(); erase when u <= p
 *   count = min + kd_rng_below(max - min + 1)     random.randint (only when min < max)
 *   per box, up to 10 tries:
 *     area = min_area + (max_area - min_area) * kd_rng_uniform   random.uniform
 *     log aspect = lo + (hi - lo) * kd_rng_uniform                random.uniform
 *     when the box fits: top = kd_rng_below(H - h + 1), left = kd_rng_below(W - w + 1)
 *     fill: "rand" one kd_rng_normal per channel, "pixel" one per value in
 *     C, H, W order; "const" none.
 * Box sides are int(round(sqrt(area * aspect))), int(round(sqrt(area /
 * aspect))), round-half-even as Python's round. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

typedef enum erase_fill { FILL_CONST = 0, FILL_RAND, FILL_PIXEL } erase_fill;

typedef struct random_erasing {
    double probability, min_area, max_area, log_aspect[2];
    erase_fill fill;
    int min_count, max_count;
} random_erasing;

static kd_status erasing_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    random_erasing e = {
        .probability = kd_params_number(p, "probability"),
        .min_area = kd_params_number(p, "min_area"),
        .max_area = kd_params_number(p, "max_area"),
        .min_count = (int)kd_params_integer(p, "min_count"),
        .max_count = (int)kd_params_integer(p, "max_count"),
    };
    double min_aspect = kd_params_number(p, "min_aspect");
    double max_aspect = kd_params_number(p, "max_aspect");
    if (max_aspect == 0)
        max_aspect = 1 / min_aspect;
    if (e.max_count == 0)
        e.max_count = e.min_count;
    if (e.min_area > e.max_area)
        return kd_error(KD_ERR_INVALID, "random_erasing: min_area %g is above max_area %g",
                        e.min_area, e.max_area);
    if (min_aspect > max_aspect)
        return kd_error(KD_ERR_INVALID, "random_erasing: min_aspect %g is above max_aspect %g",
                        min_aspect, max_aspect);
    if (e.min_count > e.max_count)
        return kd_error(KD_ERR_INVALID, "random_erasing: min_count %d is above max_count %d",
                        e.min_count, e.max_count);
    e.log_aspect[0] = log(min_aspect);
    e.log_aspect[1] = log(max_aspect);
    const char *mode = kd_params_string(p, "mode");
    e.fill = strcmp(mode, "rand") == 0 ? FILL_RAND : strcmp(mode, "pixel") == 0 ? FILL_PIXEL
                                                                              : FILL_CONST;
    random_erasing *r = malloc(sizeof *r);
    if (!r)
        return kd_error(KD_ERR_NOMEM, "random_erasing: out of memory");
    *r = e;
    *self = r;
    return KD_OK;
}

static void erasing_destroy(void *self) { free(self); }

static double uniform_between(kd_rng *rng, double a, double b)
{
    return a + (b - a) * kd_rng_uniform(rng);
}

/* Fills the box [top, top + h) x [left, left + w) of every channel. */
static void fill_box(const random_erasing *e, kd_rng *rng, float *x, int channels, int height,
                     int width, int top, int left, int h, int w)
{
    for (int c = 0; c < channels; c++) {
        float value = e->fill == FILL_RAND ? (float)kd_rng_normal(rng) : 0.0f;
        for (int y = top; y < top + h; y++) {
            float *row = x + ((size_t)c * (size_t)height + (size_t)y) * (size_t)width + left;
            for (int k = 0; k < w; k++)
                row[k] = e->fill == FILL_PIXEL ? (float)kd_rng_normal(rng) : value;
        }
    }
}

static kd_status erasing_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const random_erasing *e = self;
    if (in->dtype != KD_F32)
        return kd_error(KD_ERR_INVALID,
                        "random_erasing: needs a normalized f32 CHW image but got %s; put it "
                        "after normalize (timm erases normalized tensors)",
                        kd_dtype_name(in->dtype));
    size_t n = (size_t)in->channels * (size_t)in->height * (size_t)in->width;
    out->height = in->height;
    out->width = in->width;
    out->channels = in->channels;
    out->dtype = KD_F32;
    kd_status st = kd_sample_reserve(out, n * sizeof(float));
    if (st != KD_OK)
        return st;
    memcpy(out->data, in->data, n * sizeof(float));
    if (kd_rng_uniform(rng) > e->probability)
        return KD_OK;
    int count = e->min_count;
    if (e->max_count > e->min_count)
        count += (int)kd_rng_below(rng, (uint64_t)(e->max_count - e->min_count + 1));
    double area = (double)in->height * (double)in->width;
    for (int box = 0; box < count; box++) {
        for (int attempt = 0; attempt < 10; attempt++) {
            double target = uniform_between(rng, e->min_area, e->max_area) * area / count;
            double aspect = exp(uniform_between(rng, e->log_aspect[0], e->log_aspect[1]));
            double h = nearbyint(sqrt(target * aspect)), w = nearbyint(sqrt(target / aspect));
            if (w < in->width && h < in->height) {
                int top = (int)kd_rng_below(rng, (uint64_t)(in->height - (int)h + 1));
                int left = (int)kd_rng_below(rng, (uint64_t)(in->width - (int)w + 1));
                fill_box(e, rng, out->data, in->channels, in->height, in->width, top, left,
                         (int)h, (int)w);
                break;
            }
        }
    }
    return KD_OK;
}

static const kd_transform_vtable erasing_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, erasing_create, erasing_destroy,
    erasing_apply};

static const kd_plugin_provider providers[] = {
    {KD_KIND_TRANSFORM, "random_erasing", &erasing_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "random_erasing", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
