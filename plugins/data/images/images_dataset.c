/* Dataset providers "image_folder", "image_list", "image_pool" (an
 * unlabeled pool for SSLD, every label KD_LABEL_NONE) and "image_files"
 * (the files named, for kdengine forward): JPEG and PNG files
 * listed once at create() (image_index.h), each decoded in get() on the
 * loader thread that asks for it (image_decode.h).
 *
 * An unreadable file (missing, corrupt, truncated, over max_pixels):
 *   on_error "skip"  (default): get() prints the error with the path on
 *     stderr, counts it (the skipped() callback; the host prints the count
 *     at each epoch's end) and returns the next readable sample after it
 *     (index + 1, + 2, ... wrapping), with that sample's label, so the
 *     replacement depends only on the index, never on timing;
 *   on_error "error": get() fails with the message, which stops the run. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "image_decode.h"
#include "image_index.h"
#include "images_plugin.h"
#include "opencv_shim.h"

typedef struct image_dataset {
    const char *provider;
    kd_img_index index;
    int channels;
    int64_t max_pixels;
    bool skip_unreadable;
    _Atomic int64_t skipped;
} image_dataset;

static void images_destroy(void *self)
{
    image_dataset *d = self;
    if (!d)
        return;
    kd_img_index_free(&d->index);
    free(d);
}

static kd_status read_common(const kd_create_args *args, const char *provider,
                             image_dataset *d)
{
    const kd_params *p = args->params;
    d->provider = provider;
    d->channels = (int)kd_params_integer(p, "channels");
    d->max_pixels = kd_params_integer(p, "max_pixels");
    const char *policy = kd_params_string(p, "on_error");
    d->skip_unreadable = strcmp(policy, "skip") == 0;
    atomic_init(&d->skipped, 0);
    char msg[256];
    if (!kd_cv_use_calling_thread_only(msg, sizeof msg))
        return kd_error(KD_ERR_INVALID, "OpenCV's threads: %s", msg);
    if (d->channels == 2)
        return kd_error(KD_ERR_INVALID, "channels 2: images come as 1 (gray) or 3 (RGB)");
    return KD_OK;
}

static kd_status folder_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    image_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return kd_error(KD_ERR_NOMEM, "image_folder: out of memory");
    kd_status st = read_common(args, "image_folder", d);
    if (st == KD_OK)
        st = kd_img_index_folder(kd_params_string(args->params, "root"), &d->index);
    if (st != KD_OK) {
        images_destroy(d);
        return kd_error_wrap(st, "image_folder");
    }
    *self = d;
    return KD_OK;
}

static kd_status list_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    image_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return kd_error(KD_ERR_NOMEM, "image_list: out of memory");
    kd_status st = read_common(args, "image_list", d);
    int classes = (int)kd_params_integer(p, "num_classes");
    if (st == KD_OK)
        st = kd_img_index_list(kd_params_string(p, "list"), kd_params_string(p, "root"),
                               classes, &d->index);
    const char *names = kd_params_string(p, "class_names");
    if (st == KD_OK && *names) {
        char **read = NULL;
        st = kd_img_read_names(names, classes, &read);
        if (st == KD_OK) {
            kd_img_free_names(d->index.class_names, classes);
            d->index.class_names = read;
        }
    }
    if (st != KD_OK) {
        images_destroy(d);
        return kd_error_wrap(st, "image_list");
    }
    *self = d;
    return KD_OK;
}

static kd_status pool_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    image_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return kd_error(KD_ERR_NOMEM, "image_pool: out of memory");
    kd_status st = read_common(args, "image_pool", d);
    if (st == KD_OK)
        st = kd_img_index_pool(kd_params_string(p, "list"), kd_params_string(p, "root"),
                               &d->index);
    if (st != KD_OK) {
        images_destroy(d);
        return kd_error_wrap(st, "image_pool");
    }
    *self = d;
    return KD_OK;
}

static kd_status files_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    image_dataset *d = calloc(1, sizeof *d);
    int n = kd_params_array_length(p, "paths");
    const char **paths = calloc((size_t)n + 1, sizeof *paths);
    if (!d || !paths) {
        free(d);
        free(paths);
        return kd_error(KD_ERR_NOMEM, "image_files: out of memory");
    }
    for (int i = 0; i < n; i++)
        paths[i] = kd_params_array_string(p, "paths", i);
    kd_status st = read_common(args, "image_files", d);
    if (st == KD_OK)
        st = kd_img_index_files(n, paths, &d->index);
    free(paths);
    if (st != KD_OK) {
        images_destroy(d);
        return kd_error_wrap(st, "image_files");
    }
    *self = d;
    return KD_OK;
}

static kd_status images_info(void *self, kd_dataset_info *out)
{
    const image_dataset *d = self;
    out->length = d->index.count;
    out->height = 0; /* known per file only when decoded: sizes may vary */
    out->width = 0;
    out->channels = d->channels;
    out->num_classes = d->index.num_classes;
    return KD_OK;
}

static kd_status decode_index(const image_dataset *d, int64_t index, kd_sample *out)
{
    const char *path = d->index.paths[index];
    unsigned char *bytes;
    size_t len;
    kd_status st = kd_img_read_file(path, &bytes, &len);
    if (st == KD_OK) {
        st = kd_img_decode(bytes, len, path, d->channels, d->max_pixels, out);
        free(bytes);
    }
    return st;
}

static kd_status images_get(void *self, int64_t index, kd_sample *out, int64_t *label)
{
    image_dataset *d = self;
    int64_t n = d->index.count;
    if (index < 0 || index >= n)
        return kd_error(KD_ERR_INVALID, "%s: index %" PRId64 " is outside 0..%" PRId64,
                        d->provider, index, n - 1);
    kd_status st = decode_index(d, index, out);
    if (st == KD_OK || st == KD_ERR_NOMEM || !d->skip_unreadable) {
        *label = d->index.labels[index];
        return st == KD_OK ? KD_OK : kd_error_wrap(st, "%s: sample %" PRId64, d->provider, index);
    }
    fprintf(stderr, "%s: sample %" PRId64 " skipped: %s\n", d->provider, index, kd_last_error());
    atomic_fetch_add(&d->skipped, 1);
    for (int64_t k = 1; k < n; k++) {
        int64_t other = (index + k) % n;
        if (decode_index(d, other, out) == KD_OK) {
            *label = d->index.labels[other];
            return KD_OK;
        }
    }
    return kd_error(KD_ERR_FORMAT, "%s: sample %" PRId64 " is unreadable and so is every other "
                    "one (on_error \"skip\" found none to use instead)", d->provider, index);
}

static kd_status images_labels(void *self, int64_t *labels)
{
    const image_dataset *d = self;
    memcpy(labels, d->index.labels, (size_t)d->index.count * sizeof *labels);
    return KD_OK;
}

static const char *images_class_name(void *self, int index)
{
    const image_dataset *d = self;
    return index >= 0 && index < d->index.num_classes ? d->index.class_names[index] : NULL;
}

static const char *images_sample_name(void *self, int64_t index)
{
    const image_dataset *d = self;
    return index >= 0 && index < d->index.count ? d->index.paths[index] : NULL;
}

static int64_t images_skipped(void *self)
{
    image_dataset *d = self;
    return atomic_load(&d->skipped);
}

const kd_dataset_vtable kd_images_folder_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = folder_create,
    .destroy = images_destroy,
    .info = images_info,
    .get = images_get,
    .labels = images_labels,
    .class_name = images_class_name,
    .skipped = images_skipped,
    .sample_name = images_sample_name,
};

const kd_dataset_vtable kd_images_list_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = list_create,
    .destroy = images_destroy,
    .info = images_info,
    .get = images_get,
    .labels = images_labels,
    .class_name = images_class_name,
    .skipped = images_skipped,
    .sample_name = images_sample_name,
};

/* No classes to name: the pool's samples have none. */
const kd_dataset_vtable kd_images_pool_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = pool_create,
    .destroy = images_destroy,
    .info = images_info,
    .get = images_get,
    .labels = images_labels,
    .skipped = images_skipped,
    .sample_name = images_sample_name,
};

const kd_dataset_vtable kd_images_files_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = files_create,
    .destroy = images_destroy,
    .info = images_info,
    .get = images_get,
    .labels = images_labels,
    .skipped = images_skipped,
};
