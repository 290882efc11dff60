#include "image_index.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <kdengine/plugin.h>

#include "image_decode.h"

/* A growable array of malloc'd strings. */
typedef struct strvec {
    char **items;
    size_t n, cap;
} strvec;

static kd_status strvec_push(strvec *v, char *s, const char *context)
{
    if (!s)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", context);
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        char **items = realloc(v->items, cap * sizeof *items);
        if (!items) {
            free(s);
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", context);
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->n++] = s;
    return KD_OK;
}

static void strvec_free(strvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->items[i]);
    free(v->items);
    *v = (strvec){0};
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join_path(const char *dir, const char *name)
{
    size_t ld = strlen(dir), ln = strlen(name);
    char *s = malloc(ld + ln + 2);
    if (!s)
        return NULL;
    memcpy(s, dir, ld);
    s[ld] = '/';
    memcpy(s + ld + 1, name, ln + 1);
    return s;
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

static bool ends_with_ignoring_case(const char *name, const char *suffix)
{
    size_t ln = strlen(name), ls = strlen(suffix);
    if (ln < ls)
        return false;
    for (size_t i = 0; i < ls; i++)
        if (tolower((unsigned char)name[ln - ls + i]) != suffix[i])
            return false;
    return true;
}

typedef enum file_kind { FILE_OTHER, FILE_IMAGE, FILE_UNSUPPORTED_IMAGE } file_kind;

/* torchvision's IMG_EXTENSIONS, split into what this plugin decodes and
 * what it refuses. */
static file_kind kind_of(const char *name)
{
    static const char *const decoded[] = {".jpg", ".jpeg", ".png"};
    static const char *const refused[] = {".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};
    for (size_t i = 0; i < sizeof decoded / sizeof *decoded; i++)
        if (ends_with_ignoring_case(name, decoded[i]))
            return FILE_IMAGE;
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (ends_with_ignoring_case(name, refused[i]))
            return FILE_UNSUPPORTED_IMAGE;
    return FILE_OTHER;
}

/* The names in dir (without . and ..), unsorted. */
static kd_status list_dir(const char *dir, strvec *names)
{
    DIR *d = opendir(dir);
    if (!d)
        return kd_error(KD_ERR_IO, "%s: cannot list the folder: %s", dir, strerror(errno));
    kd_status st = KD_OK;
    struct dirent *e;
    errno = 0;
    while (st == KD_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        st = strvec_push(names, copy_string(e->d_name), dir);
        errno = 0;
    }
    if (st == KD_OK && errno != 0)
        st = kd_error(KD_ERR_IO, "%s: cannot list the folder: %s", dir, strerror(errno));
    closedir(d);
    return st;
}

/* stat() following links; a broken link counts as a file, as os.walk's
 * is_dir() says False for it. */
static bool is_dir(const char *path, struct stat *s)
{
    return stat(path, s) == 0 && S_ISDIR(s->st_mode);
}

/* One folder under a class: its path and its image files' names. */
typedef struct walked_dir {
    char *path;
    strvec files;
} walked_dir;

typedef struct walk {
    walked_dir *dirs;
    size_t n, cap;
    /* the folders from the class folder down to the current one, to
     * refuse a cycle made by links (os.walk would loop forever) */
    dev_t devs[64];
    ino_t inos[64];
    int depth;
} walk;

static void walk_free(walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->dirs[i].path);
        strvec_free(&w->dirs[i].files);
    }
    free(w->dirs);
}

static kd_status walk_dir(walk *w, const char *dir, const struct stat *dir_stat)
{
    for (int i = 0; i < w->depth; i++)
        if (w->devs[i] == dir_stat->st_dev && w->inos[i] == dir_stat->st_ino)
            return kd_error(KD_ERR_INVALID, "%s: a link loops back to a folder above it", dir);
    if (w->depth == (int)(sizeof w->devs / sizeof *w->devs))
        return kd_error(KD_ERR_INVALID, "%s: folders nested over %d deep", dir, w->depth);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 8;
        walked_dir *dirs = realloc(w->dirs, cap * sizeof *dirs);
        if (!dirs)
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", dir);
        w->dirs = dirs;
        w->cap = cap;
    }
    size_t me = w->n++;
    w->dirs[me] = (walked_dir){copy_string(dir), {0}};
    if (!w->dirs[me].path)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", dir);
    strvec names = {0};
    kd_status st = list_dir(dir, &names);
    w->devs[w->depth] = dir_stat->st_dev;
    w->inos[w->depth] = dir_stat->st_ino;
    w->depth++;
    for (size_t i = 0; i < names.n && st == KD_OK; i++) {
        char *path = join_path(dir, names.items[i]);
        struct stat s;
        if (!path) {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", dir);
        } else if (is_dir(path, &s)) {
            st = walk_dir(w, path, &s);
        } else {
            file_kind k = kind_of(names.items[i]);
            if (k == FILE_UNSUPPORTED_IMAGE)
                st = kd_error(KD_ERR_UNSUPPORTED,
                              "%s: only JPEG and PNG files are read (torchvision would also "
                              "load this one); convert it or move it out of the folder",
                              path);
            else if (k == FILE_IMAGE)
                st = strvec_push(&w->dirs[me].files, copy_string(names.items[i]), dir);
        }
        free(path);
    }
    w->depth--;
    strvec_free(&names);
    return st;
}

static int compare_dirs(const void *a, const void *b)
{
    return strcmp(((const walked_dir *)a)->path, ((const walked_dir *)b)->path);
}

/* Appends the class folder's files, in torchvision's order, to paths. */
static kd_status add_class(const char *class_dir, strvec *paths, int64_t *found)
{
    walk w = {0};
    struct stat s;
    kd_status st = is_dir(class_dir, &s)
                       ? walk_dir(&w, class_dir, &s)
                       : kd_error(KD_ERR_IO, "%s: not a folder any more", class_dir);
    if (st == KD_OK)
        qsort(w.dirs, w.n, sizeof *w.dirs, compare_dirs);
    size_t before = paths->n;
    for (size_t i = 0; i < w.n && st == KD_OK; i++) {
        strvec *files = &w.dirs[i].files;
        if (files->n > 1) /* an empty folder has no array at all */
            qsort(files->items, files->n, sizeof *files->items, compare_strings);
        for (size_t k = 0; k < files->n && st == KD_OK; k++)
            st = strvec_push(paths, join_path(w.dirs[i].path, files->items[k]), class_dir);
    }
    walk_free(&w);
    *found = (int64_t)(paths->n - before);
    return st;
}

static kd_status take_names(strvec *v, kd_img_index *out)
{
    if (v->n > INT32_MAX)
        return kd_error(KD_ERR_INVALID, "over 2^31 classes");
    out->class_names = v->items;
    out->num_classes = (int)v->n;
    *v = (strvec){0};
    return KD_OK;
}

kd_status kd_img_index_folder(const char *root, kd_img_index *out)
{
    *out = (kd_img_index){0};
    strvec entries = {0}, classes = {0}, paths = {0};
    kd_status st = list_dir(root, &entries);
    for (size_t i = 0; i < entries.n && st == KD_OK; i++) {
        char *path = join_path(root, entries.items[i]);
        struct stat s;
        if (!path)
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", root);
        else if (is_dir(path, &s))
            st = strvec_push(&classes, copy_string(entries.items[i]), root);
        free(path);
    }
    strvec_free(&entries);
    if (st == KD_OK && classes.n == 0)
        st = kd_error(KD_ERR_INVALID,
                      "%s: no class folders (an image folder holds one sub-folder per class)",
                      root);
    if (st == KD_OK)
        qsort(classes.items, classes.n, sizeof *classes.items, compare_strings);
    int64_t *labels = NULL;
    size_t labels_cap = 0;
    for (size_t c = 0; c < classes.n && st == KD_OK; c++) {
        char *class_dir = join_path(root, classes.items[c]);
        int64_t found = 0;
        st = class_dir ? add_class(class_dir, &paths, &found)
                       : kd_error(KD_ERR_NOMEM, "%s: out of memory", root);
        if (st == KD_OK && found == 0)
            st = kd_error(KD_ERR_INVALID,
                          "%s: class folder '%s' holds no .jpg, .jpeg or .png file", class_dir,
                          classes.items[c]);
        free(class_dir);
        if (st == KD_OK && paths.n > labels_cap) {
            size_t cap = paths.cap;
            int64_t *grown = realloc(labels, cap * sizeof *grown);
            if (!grown)
                st = kd_error(KD_ERR_NOMEM, "%s: out of memory", root);
            else {
                labels = grown;
                labels_cap = cap;
            }
        }
        for (size_t i = paths.n - (size_t)found; st == KD_OK && i < paths.n; i++)
            labels[i] = (int64_t)c;
    }
    if (st == KD_OK)
        st = take_names(&classes, out);
    if (st != KD_OK) {
        strvec_free(&classes);
        strvec_free(&paths);
        free(labels);
        kd_img_index_free(out);
        return st;
    }
    out->count = (int64_t)paths.n;
    out->paths = paths.items;
    out->labels = labels;
    return KD_OK;
}

/* ------------------------------------------------------------- list file */

/* The next whitespace-separated token of [*p, end): its start and length. */
static size_t next_token(const char **p, const char *end, const char **start)
{
    while (*p < end && isspace((unsigned char)**p))
        (*p)++;
    *start = *p;
    while (*p < end && !isspace((unsigned char)**p))
        (*p)++;
    return (size_t)(*p - *start);
}

static kd_status parse_list_line(const char *line, const char *end, const char *list_path,
                                 int64_t line_no, const char *root, int num_classes,
                                 strvec *paths, int64_t *label)
{
    const char *path, *num, *extra;
    size_t path_len = next_token(&line, end, &path);
    size_t num_len = next_token(&line, end, &num);
    size_t extra_len = next_token(&line, end, &extra);
    if (path_len == 0 || num_len == 0 || extra_len != 0)
        return kd_error(KD_ERR_FORMAT,
                        "%s:%" PRId64 ": expected 'path label' (two fields, no spaces in the "
                        "path)", list_path, line_no);
    char digits[32];
    if (num_len >= sizeof digits)
        return kd_error(KD_ERR_FORMAT, "%s:%" PRId64 ": the label '%.*s...' is too long",
                        list_path, line_no, 20, num);
    memcpy(digits, num, num_len);
    digits[num_len] = '\0';
    char *stop;
    errno = 0;
    long long v = strtoll(digits, &stop, 10);
    if (*stop != '\0' || errno != 0)
        return kd_error(KD_ERR_FORMAT, "%s:%" PRId64 ": the label '%s' is not an integer",
                        list_path, line_no, digits);
    if (v < 0 || v >= num_classes)
        return kd_error(KD_ERR_INVALID,
                        "%s:%" PRId64 ": label %lld is outside 0..%d (num_classes %d)",
                        list_path, line_no, v, num_classes - 1, num_classes);
    *label = v;
    char *rel = malloc(path_len + 1);
    if (!rel)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", list_path);
    memcpy(rel, path, path_len);
    rel[path_len] = '\0';
    /* os.path.join: an absolute path ignores the root */
    char *full = rel[0] == '/' || !*root ? copy_string(rel) : join_path(root, rel);
    free(rel);
    return strvec_push(paths, full, list_path);
}

kd_status kd_img_index_list(const char *list_path, const char *root, int num_classes,
                            kd_img_index *out)
{
    *out = (kd_img_index){0};
    unsigned char *text;
    size_t len;
    kd_status st = kd_img_read_file(list_path, &text, &len);
    if (st != KD_OK)
        return st;
    strvec paths = {0};
    int64_t *labels = NULL;
    size_t labels_cap = 0;
    const char *p = (const char *)text, *end = p + len;
    for (int64_t line_no = 1; p < end && st == KD_OK; line_no++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *q = p;
        while (q < eol && isspace((unsigned char)*q))
            q++;
        if (q < eol) {
            int64_t label = 0;
            st = parse_list_line(p, eol, list_path, line_no, root, num_classes, &paths, &label);
            if (st == KD_OK && paths.n > labels_cap) {
                int64_t *grown = realloc(labels, paths.cap * sizeof *grown);
                if (!grown)
                    st = kd_error(KD_ERR_NOMEM, "%s: out of memory", list_path);
                else {
                    labels = grown;
                    labels_cap = paths.cap;
                }
            }
            if (st == KD_OK)
                labels[paths.n - 1] = label;
        }
        p = eol + 1;
    }
    free(text);
    if (st == KD_OK && paths.n == 0)
        st = kd_error(KD_ERR_INVALID, "%s: no samples (every line is blank)", list_path);
    if (st == KD_OK)
        st = kd_img_number_names(num_classes, &out->class_names);
    if (st != KD_OK) {
        strvec_free(&paths);
        free(labels);
        return st;
    }
    out->num_classes = num_classes;
    out->count = (int64_t)paths.n;
    out->paths = paths.items;
    out->labels = labels;
    return KD_OK;
}

/* ------------------------------------------------------------ unlabeled pool */

/* One pool list line: a path, perhaps a label after it (ignored). */
static kd_status parse_pool_line(const char *line, const char *end, const char *list_path,
                                 int64_t line_no, const char *root, strvec *paths)
{
    const char *path, *label, *extra;
    size_t path_len = next_token(&line, end, &path);
    next_token(&line, end, &label);
    if (next_token(&line, end, &extra) != 0)
        return kd_error(KD_ERR_FORMAT,
                        "%s:%" PRId64 ": expected 'path' or 'path label' (no spaces in the "
                        "path)", list_path, line_no);
    char *rel = malloc(path_len + 1);
    if (!rel)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", list_path);
    memcpy(rel, path, path_len);
    rel[path_len] = '\0';
    char *full = rel[0] == '/' || !*root ? copy_string(rel) : join_path(root, rel);
    free(rel);
    return strvec_push(paths, full, list_path);
}

static kd_status pool_list(const char *list_path, const char *root, strvec *paths)
{
    unsigned char *text;
    size_t len;
    kd_status st = kd_img_read_file(list_path, &text, &len);
    if (st != KD_OK)
        return st;
    const char *p = (const char *)text, *end = p + len;
    for (int64_t line_no = 1; st == KD_OK && p < end; line_no++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *q = p;
        while (q < eol && isspace((unsigned char)*q))
            q++;
        if (q < eol)
            st = parse_pool_line(p, eol, list_path, line_no, root, paths);
        p = eol + 1;
    }
    free(text);
    if (st == KD_OK && paths->n == 0)
        st = kd_error(KD_ERR_INVALID, "%s: no images (every line is blank)", list_path);
    return st;
}

kd_status kd_img_index_pool(const char *list_path, const char *root, kd_img_index *out)
{
    *out = (kd_img_index){0};
    strvec paths = {0};
    int64_t found = 0;
    kd_status st;
    if (*list_path) {
        st = pool_list(list_path, root, &paths);
    } else if (!*root) {
        st = kd_error(KD_ERR_INVALID, "an image pool needs a list file or a root folder");
    } else {
        struct stat sb;
        st = is_dir(root, &sb) ? add_class(root, &paths, &found)
                               : kd_error(KD_ERR_IO, "%s: not a folder", root);
        if (st == KD_OK && found == 0)
            st = kd_error(KD_ERR_INVALID, "%s: holds no .jpg, .jpeg or .png file", root);
    }
    int64_t *labels = st == KD_OK ? malloc((paths.n + 1) * sizeof *labels) : NULL;
    if (st == KD_OK && !labels)
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", *list_path ? list_path : root);
    if (st != KD_OK) {
        strvec_free(&paths);
        return st;
    }
    for (size_t i = 0; i < paths.n; i++)
        labels[i] = KD_LABEL_NONE;
    out->count = (int64_t)paths.n;
    out->paths = paths.items;
    out->labels = labels;
    return KD_OK;
}

/* ------------------------------------------------------------ file paths */

kd_status kd_img_index_files(int n, const char *const *paths, kd_img_index *out)
{
    *out = (kd_img_index){0};
    if (n < 1)
        return kd_error(KD_ERR_INVALID, "paths: empty (no image to read)");
    out->paths = calloc((size_t)n, sizeof *out->paths);
    out->labels = calloc((size_t)n, sizeof *out->labels);
    kd_status st = out->paths && out->labels ? kd_img_number_names(1, &out->class_names)
                                             : kd_error(KD_ERR_NOMEM, "paths: out of memory");
    out->num_classes = out->class_names ? 1 : 0;
    for (int i = 0; st == KD_OK && i < n; i++, out->count++)
        if (!(out->paths[i] = copy_string(paths[i])))
            st = kd_error(KD_ERR_NOMEM, "paths: out of memory");
    if (st != KD_OK)
        kd_img_index_free(out);
    return st;
}

/* ------------------------------------------------------------ class names */

kd_status kd_img_number_names(int num_classes, char ***names)
{
    *names = calloc((size_t)num_classes, sizeof **names);
    if (!*names)
        return kd_error(KD_ERR_NOMEM, "out of memory for %d class names", num_classes);
    for (int c = 0; c < num_classes; c++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", c);
        if (!((*names)[c] = copy_string(buf))) {
            kd_img_free_names(*names, num_classes);
            *names = NULL;
            return kd_error(KD_ERR_NOMEM, "out of memory for %d class names", num_classes);
        }
    }
    return KD_OK;
}

kd_status kd_img_read_names(const char *path, int num_classes, char ***names)
{
    *names = NULL;
    unsigned char *text;
    size_t len;
    kd_status st = kd_img_read_file(path, &text, &len);
    if (st != KD_OK)
        return st;
    strvec v = {0};
    const char *p = (const char *)text, *end = p + len;
    /* blank lines at the end (CIFAR-10's batches.meta.txt has them) */
    while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    while (p < end && st == KD_OK) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *stop = eol;
        if (stop > p && stop[-1] == '\r')
            stop--;
        if (stop == p) {
            st = kd_error(KD_ERR_FORMAT, "%s:%zu: an empty class name", path, v.n + 1);
            break;
        }
        char *name = malloc((size_t)(stop - p) + 1);
        if (name) {
            memcpy(name, p, (size_t)(stop - p));
            name[stop - p] = '\0';
        }
        st = strvec_push(&v, name, path);
        p = eol + 1;
    }
    free(text);
    if (st == KD_OK && v.n != (size_t)num_classes)
        st = kd_error(KD_ERR_INVALID, "%s: %zu class names for %d classes", path, v.n,
                      num_classes);
    if (st != KD_OK) {
        strvec_free(&v);
        return st;
    }
    *names = v.items;
    return KD_OK;
}

void kd_img_free_names(char **names, int num_classes)
{
    for (int c = 0; names && c < num_classes; c++)
        free(names[c]);
    free(names);
}

void kd_img_index_free(kd_img_index *index)
{
    for (int64_t i = 0; i < index->count; i++)
        free(index->paths[i]);
    free(index->paths);
    free(index->labels);
    kd_img_free_names(index->class_names, index->num_classes);
    *index = (kd_img_index){0};
}
