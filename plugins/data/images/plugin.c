/* The images plugin's entry: image files and CIFAR as data sets, and the
 * transforms that resize with OpenCV, and ColorJitter. */
#include <kdengine/plugin.h>

#include "images_plugin.h"

static const kd_plugin_provider providers[] = {
    {KD_KIND_DATASET, "image_folder", &kd_images_folder_vtable.header, NULL},
    {KD_KIND_DATASET, "image_list", &kd_images_list_vtable.header, NULL},
    {KD_KIND_DATASET, "image_pool", &kd_images_pool_vtable.header, NULL},
    {KD_KIND_DATASET, "image_files", &kd_images_files_vtable.header, NULL},
    {KD_KIND_DATASET, "cifar", &kd_images_cifar_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "resize", &kd_images_resize_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "center_crop", &kd_images_center_crop_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "random_resized_crop", &kd_images_random_resized_crop_vtable.header,
     NULL},
    {KD_KIND_TRANSFORM, "color_jitter", &kd_images_color_jitter_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "images", "1.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, (int)(sizeof providers / sizeof *providers));
    return KD_OK;
}
