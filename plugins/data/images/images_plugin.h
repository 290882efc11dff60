/* The images plugin's providers, one file each, and what they share.
 *   image_folder, image_list,
 *   image_pool                 images_dataset.c  (JPEG/PNG through OpenCV)
 *   image_files                images_dataset.c  (JPEG/PNG through OpenCV)
 *   cifar                      cifar_dataset.c   (CIFAR-10/100 binary)
 *   resize, center_crop,
 *   random_resized_crop        geometry_transforms.c
 *   color_jitter               color_jitter.c
 * plugin.c lists them for kd_plugin_entry. */
#ifndef KD_IMAGES_PLUGIN_H
#define KD_IMAGES_PLUGIN_H

#include <kdengine/plugin.h>

extern const kd_dataset_vtable kd_images_folder_vtable;
extern const kd_dataset_vtable kd_images_list_vtable;
extern const kd_dataset_vtable kd_images_pool_vtable;
extern const kd_dataset_vtable kd_images_files_vtable;
extern const kd_dataset_vtable kd_images_cifar_vtable;
extern const kd_transform_vtable kd_images_resize_vtable;
extern const kd_transform_vtable kd_images_center_crop_vtable;
extern const kd_transform_vtable kd_images_random_resized_crop_vtable;
extern const kd_transform_vtable kd_images_color_jitter_vtable;

#endif
