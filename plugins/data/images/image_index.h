/* Which image files a data set holds and their classes, found once at
 * create(): an ImageFolder scanned as torchvision 0.14 scans it, or a
 * PaddleClas-style list file. Nothing is decoded here. */
#ifndef KD_IMAGE_INDEX_H
#define KD_IMAGE_INDEX_H

#include <stdint.h>

#include <kdengine/status.h>

typedef struct kd_img_index {
    int64_t count;
    char **paths;      /* [count] file paths */
    int64_t *labels;   /* [count] classes, 0 <= label < num_classes */
    int num_classes;
    char **class_names; /* [num_classes] */
} kd_img_index;

/* torchvision.datasets.ImageFolder(root): the classes are root's
 * sub-folders sorted by name (byte order, as Python sorts str); a class's
 * files are those under its folder at any depth (symbolic links followed)
 * whose name ends, ignoring case, in .jpg, .jpeg or .png, ordered as
 * sorted(os.walk(class_folder)) lists them: folders by path, then files
 * by name. A file with another of torchvision's image extensions (.bmp,
 * .ppm, .pgm, .tif, .tiff, .webp) is an error: torchvision would load it,
 * this plugin decodes JPEG and PNG only. Errors name the path: root
 * unreadable or without sub-folders, a class folder with no image (as
 * torchvision's "Found no valid file for the classes"), a folder cycle. */
kd_status kd_img_index_folder(const char *root, kd_img_index *out);

/* A list file, one sample per line: "relative/path label" (the path
 * joined to root; PaddleClas's train_list.txt). Blank lines are skipped;
 * any other line must be a path and an integer label in [0, num_classes),
 * else an error naming the file and line. Class names are the numbers
 * "0".."num_classes-1" unless kd_img_index_set_names replaces them. */
kd_status kd_img_index_list(const char *list_path, const char *root, int num_classes,
                            kd_img_index *out);

/* An unlabeled pool (SSLD): with a list file (list_path not empty), one
 * image path per line, joined to root as kd_img_index_list does, a second
 * field (a label, as in a PaddleClas list) allowed and ignored, blank
 * lines skipped; else every .jpg, .jpeg and .png under the folder root at
 * any depth, in the order kd_img_index_folder lists one class's files.
 * Every label is KD_LABEL_NONE and there are no classes. An empty pool is
 * an error naming the list or the folder. */
kd_status kd_img_index_pool(const char *list_path, const char *root, kd_img_index *out);
/* The files named, in order, all of class 0 ("0"): the inputs of
 * `kdengine forward`. Nothing is read here; get() names a bad file. */
kd_status kd_img_index_files(int n, const char *const *paths, kd_img_index *out);

/* Class names from a text file, one per line in class order, exactly
 * num_classes non-empty lines (blank lines at the end are ignored). */
kd_status kd_img_read_names(const char *path, int num_classes, char ***names);
/* Names "0".."n-1". */
kd_status kd_img_number_names(int num_classes, char ***names);
void kd_img_free_names(char **names, int num_classes);

void kd_img_index_free(kd_img_index *index);

#endif
