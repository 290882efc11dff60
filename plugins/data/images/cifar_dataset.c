/* Dataset provider "cifar": CIFAR-10 or CIFAR-100 in the binary version's
 * files (data_batch_1.bin... / train.bin, test.bin), read whole at
 * create(). A CIFAR-10 record is 1 label byte then 3072 pixel bytes, a
 * CIFAR-100 record a coarse and a fine label byte then the pixels; the
 * pixels are the red plane, then green, then blue, each 32 rows of 32,
 * which get() writes out as u8 HWC. Several files are concatenated in the
 * order given. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "image_decode.h"
#include "image_index.h"
#include "images_plugin.h"

enum { CIFAR_SIDE = 32, CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE };

typedef struct cifar {
    unsigned char *records; /* count records of record_bytes */
    int64_t count;
    size_t record_bytes;
    int label_offset; /* 0: CIFAR-10's label or CIFAR-100's coarse one, 1: fine */
    int num_classes;
    char **class_names;
} cifar;

static void cifar_destroy(void *self)
{
    cifar *c = self;
    if (!c)
        return;
    free(c->records);
    kd_img_free_names(c->class_names, c->num_classes);
    free(c);
}

/* Appends one file's records, checking its length and labels. */
static kd_status append_file(cifar *c, const char *path, const char *variant, int label_bytes)
{
    unsigned char *bytes;
    size_t len;
    kd_status st = kd_img_read_file(path, &bytes, &len);
    if (st != KD_OK)
        return st;
    if (len == 0 || len % c->record_bytes != 0) {
        free(bytes);
        return kd_error(KD_ERR_FORMAT,
                        "%s: %zu bytes, not a whole number of %s records (%zu bytes each)", path,
                        len, variant, c->record_bytes);
    }
    int64_t n = (int64_t)(len / c->record_bytes);
    /* every label byte of the file, coarse and fine, must be in range */
    static const int limits[2][2] = {{10, 0}, {20, 100}};
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < label_bytes; b++) {
            int v = bytes[(size_t)i * c->record_bytes + (size_t)b];
            int limit = limits[label_bytes - 1][b];
            if (v >= limit) {
                free(bytes);
                return kd_error(KD_ERR_FORMAT,
                                "%s: record %" PRId64 " has %s label %d; %s labels are "
                                "0..%d (is this a %s file?)",
                                path, i, label_bytes == 1 ? "a" : b ? "fine" : "coarse", v,
                                variant, limit - 1, variant);
            }
        }
    unsigned char *grown = realloc(c->records, (size_t)(c->count + n) * c->record_bytes);
    if (!grown) {
        free(bytes);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(grown + (size_t)c->count * c->record_bytes, bytes, len);
    c->records = grown;
    c->count += n;
    free(bytes);
    return KD_OK;
}

static kd_status cifar_open(const kd_params *p, cifar *c)
{
    const char *variant = kd_params_string(p, "variant");
    const char *labels = kd_params_string(p, "labels");
    bool hundred = strcmp(variant, "cifar100") == 0;
    int label_bytes = hundred ? 2 : 1;
    if (!hundred && strcmp(labels, "fine") != 0)
        return kd_error(KD_ERR_INVALID,
                        "labels \"%s\": CIFAR-10 has one label per image (\"fine\")", labels);
    c->record_bytes = (size_t)label_bytes + CIFAR_PIXELS;
    c->label_offset = hundred && strcmp(labels, "fine") == 0 ? 1 : 0;
    c->num_classes = !hundred ? 10 : c->label_offset ? 100 : 20;
    int files = kd_params_array_length(p, "files");
    if (files < 1)
        return kd_error(KD_ERR_INVALID, "files: at least one file is needed");
    for (int f = 0; f < files; f++) {
        kd_status st = append_file(c, kd_params_array_string(p, "files", f), variant,
                                   label_bytes);
        if (st != KD_OK)
            return st;
    }
    const char *names = kd_params_string(p, "class_names");
    return *names ? kd_img_read_names(names, c->num_classes, &c->class_names)
                  : kd_img_number_names(c->num_classes, &c->class_names);
}

static kd_status cifar_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    cifar *c = calloc(1, sizeof *c);
    if (!c)
        return kd_error(KD_ERR_NOMEM, "cifar: out of memory");
    kd_status st = cifar_open(args->params, c);
    if (st != KD_OK) {
        cifar_destroy(c);
        return kd_error_wrap(st, "cifar");
    }
    *self = c;
    return KD_OK;
}

static kd_status cifar_info(void *self, kd_dataset_info *out)
{
    const cifar *c = self;
    out->length = c->count;
    out->height = CIFAR_SIDE;
    out->width = CIFAR_SIDE;
    out->channels = 3;
    out->num_classes = c->num_classes;
    return KD_OK;
}

static kd_status cifar_get(void *self, int64_t index, kd_sample *out, int64_t *label)
{
    const cifar *c = self;
    if (index < 0 || index >= c->count)
        return kd_error(KD_ERR_INVALID, "cifar: index %" PRId64 " is outside 0..%" PRId64, index,
                        c->count - 1);
    kd_status st = kd_sample_reserve(out, CIFAR_PIXELS);
    if (st != KD_OK)
        return kd_error_wrap(st, "cifar: sample %" PRId64, index);
    const unsigned char *rec = c->records + (size_t)index * c->record_bytes;
    const unsigned char *planes = rec + c->record_bytes - CIFAR_PIXELS;
    uint8_t *dst = out->data;
    enum { PLANE = CIFAR_SIDE * CIFAR_SIDE };
    for (int p = 0; p < PLANE; p++)
        for (int k = 0; k < 3; k++)
            dst[3 * p + k] = planes[k * PLANE + p];
    out->height = CIFAR_SIDE;
    out->width = CIFAR_SIDE;
    out->channels = 3;
    out->dtype = KD_U8;
    *label = rec[c->label_offset];
    return KD_OK;
}

static kd_status cifar_labels(void *self, int64_t *labels)
{
    const cifar *c = self;
    for (int64_t i = 0; i < c->count; i++)
        labels[i] = c->records[(size_t)i * c->record_bytes + (size_t)c->label_offset];
    return KD_OK;
}

static const char *cifar_class_name(void *self, int index)
{
    const cifar *c = self;
    return index >= 0 && index < c->num_classes ? c->class_names[index] : NULL;
}

const kd_dataset_vtable kd_images_cifar_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .create = cifar_create,
    .destroy = cifar_destroy,
    .info = cifar_info,
    .get = cifar_get,
    .labels = cifar_labels,
    .class_name = cifar_class_name,
};
