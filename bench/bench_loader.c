/* The images loader's throughput: an image folder of JPEGs decoded by the
 * images plugin, random_resized_crop 224, hflip, normalize, batched by the
 * host loader with N workers. Run by bench/loader_images.py, which times
 * torchvision's DataLoader on the same folder.
 *
 * usage: bench_loader ROOT WORKERS BATCH EPOCHS
 * Prints one JSON line: workers, images, seconds, img_per_s (after one
 * warm-up epoch). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <kdengine/kdengine.h>

#include "../core/loader.h"
#include "../tests/plugin_fixture.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Creates provider (kind, name) with params json; false with a message. */
static bool create(kd_plugin_kind kind, const char *name, const char *json,
                   const kd_vtable_header **vt, void **self)
{
    const kd_registry_entry *e = kt_provider(kind, name, vt);
    kd_params *p = e ? kt_params(e, json) : NULL;
    if (!p)
        return false;
    kd_create_args args = kt_create_args(e, p, 1);
    kd_status st = kind == KD_KIND_DATASET
                       ? ((const kd_dataset_vtable *)*vt)->create(&args, self)
                       : ((const kd_transform_vtable *)*vt)->create(&args, self);
    kd_params_free(p);
    if (st != KD_OK)
        fprintf(stderr, "bench_loader: %s: %s\n", name, kd_last_error());
    return st == KD_OK;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench_loader ROOT WORKERS BATCH EPOCHS\n");
        return 2;
    }
    int workers = atoi(argv[2]), batch = atoi(argv[3]), epochs = atoi(argv[4]);
    char json[4096];
    snprintf(json, sizeof json, "{\"root\": \"%s\"}", argv[1]);
    const kd_vtable_header *dvt, *tvt[3];
    void *dself, *tself[3];
    const char *names[3] = {"random_resized_crop", "hflip", "normalize"};
    const char *params[3] = {"{\"size\": [224]}", "{}",
                             "{\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}"};
    if (!create(KD_KIND_DATASET, "image_folder", json, &dvt, &dself))
        return 1;
    for (int i = 0; i < 3; i++)
        if (!create(KD_KIND_TRANSFORM, names[i], params[i], &tvt[i], &tself[i]))
            return 1;
    kd_loader_config cfg = {.dataset = (const kd_dataset_vtable *)dvt,
                            .dataset_self = dself,
                            .label = "bench",
                            .n_transforms = 3,
                            .transforms = (const kd_transform_vtable *const *)tvt,
                            .transform_selves = tself,
                            .batch_size = batch,
                            .shuffle = true,
                            .drop_last = true,
                            .workers = workers,
                            .prefetch = 2 * (workers > 0 ? workers : 1),
                            .seed = 7};
    kd_loader *l;
    kd_status st = kd_loader_new(&cfg, &l);
    int64_t images = 0;
    double t0 = 0;
    for (int e = 0; st == KD_OK && e <= epochs; e++) {
        if (e == 1)
            t0 = now(); /* epoch 0 warms the page cache and the workers */
        st = kd_loader_start(l, e, 0);
        bool done = false;
        while (st == KD_OK && !done) {
            kd_batch b;
            st = kd_loader_next(l, &b, &done);
            if (st == KD_OK && !done && e > 0)
                images += b.images->shape[0];
        }
    }
    double secs = now() - t0;
    kd_loader_free(l);
    if (st != KD_OK) {
        fprintf(stderr, "bench_loader: %s\n", kd_last_error());
        return 1;
    }
    printf("{\"workers\": %d, \"images\": %lld, \"seconds\": %.3f, \"img_per_s\": %.1f}\n",
           workers, (long long)images, secs, (double)images / secs);
    for (int i = 0; i < 3; i++)
        ((const kd_transform_vtable *)tvt[i])->destroy(tself[i]);
    ((const kd_dataset_vtable *)dvt)->destroy(dself);
    kt_plugins_close();
    return 0;
}
