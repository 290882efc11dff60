/* Transform providers resize, center_crop and random_resized_crop (u8 HWC
 * in and out), torchvision 0.14's geometry (geometry.h) with OpenCV's
 * resize (opencv_shim.h).
 *
 * Interpolation: OpenCV's INTER_LINEAR / INTER_CUBIC (bicubic a = -0.75)
 * sample at pixel centres without antialiasing, as torchvision's tensor
 * path with antialias=False (torch's interpolate) does, within 1 level
 * (OpenCV's 11-bit fixed-point weights); PIL's resize, which torchvision
 * uses on PIL images, widens its filter when it shrinks (antialiasing) and
 * its bicubic uses a = -0.5, so it differs more: test_images measures both.
 *
 * Randomness: random_resized_crop draws as kd_rrc_draw documents (two
 * kd_rng_uniformf per try, then two kd_rng_below); resize and center_crop
 * draw nothing. Instances are read-only after create(). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "geometry.h"
#include "images_plugin.h"
#include "opencv_shim.h"

typedef struct geometry {
    const char *provider;
    int height, width; /* the output size; 0 x 0 for resize's shorter side */
    int shorter, max_size;
    kd_cv_interp interp;
    kd_rrc_config rrc;
} geometry;

static void geometry_destroy(void *self) { free(self); }

/* size as [side] (*count 1) or [height, width] (*count 2). */
static kd_status read_size(const kd_params *p, const char *provider, const char *key, int *h,
                           int *w, int *count)
{
    int n = kd_params_array_length(p, key);
    if (n != 1 && n != 2)
        return kd_error(KD_ERR_INVALID, "%s: %s must be [side] or [height, width], got %d values",
                        provider, key, n);
    double hv = kd_params_array_number(p, key, 0), wv = kd_params_array_number(p, key, n - 1);
    if (!(hv >= 1 && wv >= 1 && hv <= 65536 && wv <= 65536) || hv != (int)hv || wv != (int)wv)
        return kd_error(KD_ERR_INVALID, "%s: %s [%g, %g] must be whole numbers in 1..65536",
                        provider, key, hv, wv);
    *h = (int)hv;
    *w = (int)wv;
    *count = n;
    return KD_OK;
}

static kd_status read_interp(const kd_params *p, const char *provider, kd_cv_interp *out)
{
    static const struct {
        const char *name;
        kd_cv_interp interp;
    } table[] = {{"nearest", KD_CV_NEAREST}, {"bilinear", KD_CV_BILINEAR},
                 {"bicubic", KD_CV_BICUBIC}, {"area", KD_CV_AREA}};
    const char *name = kd_params_string(p, "interpolation");
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(name, table[i].name) == 0) {
            *out = table[i].interp;
            return KD_OK;
        }
    return kd_error(KD_ERR_INVALID, "%s: unknown interpolation '%s'", provider, name);
}

static kd_status make(const char *provider, geometry **out)
{
    char msg[256];
    *out = NULL;
    if (!kd_cv_use_calling_thread_only(msg, sizeof msg))
        return kd_error(KD_ERR_INVALID, "%s: OpenCV's threads: %s", provider, msg);
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", provider);
    (*out)->provider = provider;
    return KD_OK;
}

static kd_status finish(geometry *g, kd_status st, void **self)
{
    if (st != KD_OK) {
        free(g);
        return st;
    }
    *self = g;
    return KD_OK;
}

static kd_status need_u8(const geometry *g, const kd_sample *in)
{
    if (in->dtype != KD_U8 || in->channels < 1 || in->channels > 4)
        return kd_error(KD_ERR_INVALID,
                        "%s: needs a u8 HWC image with 1 to 4 channels, got %s with %d; put it "
                        "before to_tensor and normalize",
                        g->provider, kd_dtype_name(in->dtype), in->channels);
    return KD_OK;
}

static kd_status shape_out(kd_sample *out, int h, int w, int c)
{
    out->height = h;
    out->width = w;
    out->channels = c;
    out->dtype = KD_U8;
    return kd_sample_reserve(out, (size_t)h * (size_t)w * (size_t)c);
}

/* out = the window of in (zero outside the image) resized to out_h x
 * out_w; a window of the output size is a plain copy. */
static kd_status crop_resize(const geometry *g, const kd_sample *in, kd_geo_window win,
                             int out_h, int out_w, kd_sample *out)
{
    int c = in->channels;
    kd_status st = shape_out(out, out_h, out_w, c);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", g->provider);
    const uint8_t *src = in->data;
    uint8_t *dst = out->data;
    size_t row = (size_t)in->width * (size_t)c;
    bool inside = win.top >= 0 && win.left >= 0 && win.top + win.height <= in->height &&
                  win.left + win.width <= in->width;
    const uint8_t *corner = src + (size_t)win.top * row + (size_t)win.left * (size_t)c;
    if (inside && (win.height != out_h || win.width != out_w)) {
        char msg[256];
        if (!kd_cv_resize(corner, win.height, win.width, c, row, dst, out_h, out_w, g->interp,
                          msg, sizeof msg))
            return kd_error(KD_ERR_INVALID, "%s: %dx%d to %dx%d: %s", g->provider, win.height,
                            win.width, out_h, out_w, msg);
        return KD_OK;
    }
    if (win.height != out_h || win.width != out_w)
        return kd_error(KD_ERR_INVALID, "%s: a %dx%d window at (%d, %d) leaves the %dx%d image",
                        g->provider, win.height, win.width, win.top, win.left, in->height,
                        in->width);
    for (int y = 0; y < out_h; y++) {
        uint8_t *d = dst + (size_t)y * (size_t)out_w * (size_t)c;
        int sy = win.top + y;
        memset(d, 0, (size_t)out_w * (size_t)c);
        if (sy < 0 || sy >= in->height)
            continue;
        int x0 = win.left < 0 ? -win.left : 0;
        int x1 = win.left + out_w > in->width ? in->width - win.left : out_w;
        if (x1 > x0)
            memcpy(d + (size_t)x0 * (size_t)c,
                   src + (size_t)sy * row + (size_t)(win.left + x0) * (size_t)c,
                   (size_t)(x1 - x0) * (size_t)c);
    }
    return KD_OK;
}

/* ------------------------------------------------------------------ resize */

static kd_status resize_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    geometry *g;
    kd_status st = make("resize", &g);
    if (st != KD_OK)
        return st;
    int h = 0, w = 0, n = 0;
    st = read_size(args->params, "resize", "size", &h, &w, &n);
    if (st == KD_OK && n == 1) {
        g->shorter = h;
        g->max_size = (int)kd_params_integer(args->params, "max_size");
        if (g->max_size > 0 && g->max_size <= g->shorter)
            st = kd_error(KD_ERR_INVALID, "resize: max_size %d must be above size %d",
                          g->max_size, g->shorter);
    } else if (st == KD_OK) {
        g->height = h;
        g->width = w;
        if (kd_params_integer(args->params, "max_size") > 0)
            st = kd_error(KD_ERR_INVALID,
                          "resize: max_size applies to a single size, not [height, width]");
    }
    if (st == KD_OK)
        st = read_interp(args->params, "resize", &g->interp);
    return finish(g, st, self);
}

static kd_status resize_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    (void)rng;
    const geometry *g = self;
    kd_status st = need_u8(g, in);
    if (st != KD_OK)
        return st;
    int out_h = g->height, out_w = g->width;
    if (g->shorter &&
        !kd_geo_resize_shorter(in->height, in->width, g->shorter, g->max_size, &out_h, &out_w))
        return kd_error(KD_ERR_INVALID, "resize: a %dx%d image to shorter side %d leaves a side "
                        "below 1 pixel", in->height, in->width, g->shorter);
    kd_geo_window all = {0, 0, in->height, in->width};
    return crop_resize(g, in, all, out_h, out_w, out);
}

/* ------------------------------------------------------------- center_crop */

static kd_status center_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    geometry *g;
    kd_status st = make("center_crop", &g);
    if (st != KD_OK)
        return st;
    int n;
    st = read_size(args->params, "center_crop", "size", &g->height, &g->width, &n);
    return finish(g, st, self);
}

static kd_status center_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    (void)rng;
    const geometry *g = self;
    kd_status st = need_u8(g, in);
    if (st != KD_OK)
        return st;
    kd_geo_window win = kd_geo_center_crop(in->height, in->width, g->height, g->width);
    return crop_resize(g, in, win, g->height, g->width, out);
}

/* ------------------------------------------------------ random_resized_crop */

static kd_status rrc_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    geometry *g;
    kd_status st = make("random_resized_crop", &g);
    if (st != KD_OK)
        return st;
    int n;
    st = read_size(p, "random_resized_crop", "size", &g->height, &g->width, &n);
    if (st == KD_OK && (kd_params_array_length(p, "scale") != 2 ||
                        kd_params_array_length(p, "ratio") != 2))
        st = kd_error(KD_ERR_INVALID, "random_resized_crop: scale and ratio take two numbers");
    if (st == KD_OK) {
        for (int i = 0; i < 2; i++) {
            g->rrc.scale[i] = kd_params_array_number(p, "scale", i);
            g->rrc.ratio[i] = kd_params_array_number(p, "ratio", i);
        }
        if (!(g->rrc.scale[0] > 0 && g->rrc.scale[0] <= g->rrc.scale[1]) ||
            !(g->rrc.ratio[0] > 0 && g->rrc.ratio[0] <= g->rrc.ratio[1]))
            st = kd_error(KD_ERR_INVALID,
                          "random_resized_crop: scale [%g, %g] and ratio [%g, %g] must be "
                          "positive and in increasing order",
                          g->rrc.scale[0], g->rrc.scale[1], g->rrc.ratio[0], g->rrc.ratio[1]);
    }
    if (st == KD_OK)
        st = read_interp(p, "random_resized_crop", &g->interp);
    return finish(g, st, self);
}

static kd_status rrc_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const geometry *g = self;
    kd_status st = need_u8(g, in);
    if (st != KD_OK)
        return st;
    kd_geo_window win = kd_rrc_draw(rng, in->height, in->width, &g->rrc);
    return crop_resize(g, in, win, g->height, g->width, out);
}

const kd_transform_vtable kd_images_resize_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, resize_create, geometry_destroy,
    resize_apply};
const kd_transform_vtable kd_images_center_crop_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, center_create, geometry_destroy,
    center_apply};
const kd_transform_vtable kd_images_random_resized_crop_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, rrc_create, geometry_destroy, rrc_apply};
