/* Dataset provider "idx": an image classification set stored as a pair of
 * IDX files (images, labels), plain or gzip. Both files are decoded into
 * memory once at create(), so get() is a copy of one item and any number
 * of loader threads can call it at once. */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "idx_reader.h"

typedef struct idx_dataset {
    kd_idx *images, *labels;
    int height, width, channels;
    int num_classes;
    size_t item_bytes;
} idx_dataset;

static void idx_destroy(void *self)
{
    idx_dataset *d = self;
    if (!d)
        return;
    kd_idx_close(d->images);
    kd_idx_close(d->labels);
    free(d);
}

static kd_status open_file(const kd_params *params, const char *key, kd_idx **out)
{
    const char *path = kd_params_string(params, key);
    if (!path || !*path)
        return kd_error(KD_ERR_INVALID, "idx: %s: an empty path", key);
    kd_status st = kd_idx_open(path, out);
    if (st != KD_OK)
        return kd_error_wrap(st, "idx: %s", key);
    return KD_OK;
}

static kd_status idx_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    idx_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return kd_error(KD_ERR_NOMEM, "idx: out of memory");
    kd_status st = open_file(args->params, "images", &d->images);
    if (st == KD_OK)
        st = open_file(args->params, "labels", &d->labels);
    int64_t classes = kd_params_integer(args->params, "num_classes");
    if (st == KD_OK) {
        st = kd_idx_check_pair(d->images, d->labels, (int)classes);
        if (st != KD_OK)
            kd_error_wrap(st, "idx");
    }
    if (st != KD_OK) {
        idx_destroy(d);
        return st;
    }
    int64_t h = kd_idx_dim(d->images, 1), w = kd_idx_dim(d->images, 2);
    int64_t c = kd_idx_ndims(d->images) == 4 ? kd_idx_dim(d->images, 3) : 1;
    if (h < 1 || w < 1 || h > INT32_MAX || w > INT32_MAX || c < 1 || c > 4) {
        st = kd_error(KD_ERR_FORMAT,
                      "idx: %s: images of %" PRId64 "x%" PRId64 " pixels with %" PRId64
                      " channels; both sides must be at least 1 and channels 1 to 4",
                      kd_idx_label(d->images), h, w, c);
        idx_destroy(d);
        return st;
    }
    d->height = (int)h;
    d->width = (int)w;
    d->channels = (int)c;
    d->num_classes = (int)classes;
    d->item_bytes = kd_idx_item_bytes(d->images);
    *self = d;
    return KD_OK;
}

static kd_status idx_info(void *self, kd_dataset_info *out)
{
    const idx_dataset *d = self;
    out->length = kd_idx_count(d->images);
    out->height = d->height;
    out->width = d->width;
    out->channels = d->channels;
    out->num_classes = d->num_classes;
    return KD_OK;
}

static kd_status idx_get(void *self, int64_t index, kd_sample *out, int64_t *label)
{
    const idx_dataset *d = self;
    int64_t count = kd_idx_count(d->images);
    if (index < 0 || index >= count)
        return kd_error(KD_ERR_INVALID, "idx: %s: index %" PRId64 " is outside 0..%" PRId64,
                        kd_idx_label(d->images), index, count - 1);
    kd_status st = kd_sample_reserve(out, d->item_bytes);
    if (st != KD_OK)
        return kd_error_wrap(st, "idx: %s: sample %" PRId64, kd_idx_label(d->images), index);
    memcpy(out->data, kd_idx_item(d->images, index), d->item_bytes);
    out->height = d->height;
    out->width = d->width;
    out->channels = d->channels;
    out->dtype = KD_U8;
    *label = kd_idx_item(d->labels, index)[0];
    return KD_OK;
}

static kd_status idx_labels(void *self, int64_t *labels)
{
    const idx_dataset *d = self;
    int64_t count = kd_idx_count(d->images);
    for (int64_t i = 0; i < count; i++)
        labels[i] = kd_idx_item(d->labels, i)[0];
    return KD_OK;
}

static const kd_dataset_vtable idx_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = idx_create,
    .destroy = idx_destroy,
    .info = idx_info,
    .get = idx_get,
    .labels = idx_labels,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_DATASET, "idx", &idx_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "idx", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
