/* The plugin registry: manifests are read and checked at scan time, a
 * library is dlopen'ed the first time one of its providers is used. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "registry.h"

/* A library claiming more providers than this is reading garbage. */
#define KD_MAX_PROVIDERS 4096

/* A provider as the host reads it: the plugin's entry copied at the
 * host's layout, and its vtable copied into a zeroed buffer of the host's
 * vtable size, so callbacks past an older plugin's vtable read as NULL. */
typedef struct loaded_provider {
    kd_plugin_provider entry;
    kd_vtable_header *vtable;
} loaded_provider;

typedef struct manifest {
    char *path;         /* as found */
    char *real_path;    /* to notice the same file reached twice */
    char *library_path; /* absolute */
    json_t *root;       /* owns every string the entries point to */
    const char *name;
    const char *version;
    void *library;      /* dlopen handle once loaded and verified */
    int n_providers;
    loaded_provider *providers;
} manifest;

/* The public entry first, so a kd_registry_entry pointer leads back here. */
typedef struct registry_entry {
    kd_registry_entry pub;
    manifest *owner;
    int provider_index; /* in the manifest's "provides" */
} registry_entry;

struct kd_registry {
    manifest **manifests;
    int n_manifests;
    registry_entry **entries; /* sorted by kind, then name */
    int n_entries;
    char **scanned_dirs; /* realpaths */
    int n_scanned_dirs;
};

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

/* "a" + "/" + "b" in a new string. */
static char *join_path(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

static bool grow(void *array_ptr, int count, size_t item_size)
{
    void **array = array_ptr;
    /* Capacity is the next power of two at or above count. */
    if (count & (count - 1))
        return true;
    size_t cap = count ? (size_t)count * 2 : 4;
    void *grown = realloc(*array, cap * item_size);
    if (!grown)
        return false;
    *array = grown;
    return true;
}

static void free_providers(manifest *m)
{
    for (int i = 0; i < m->n_providers; i++)
        free(m->providers[i].vtable);
    free(m->providers);
    m->providers = NULL;
    m->n_providers = 0;
}

static void manifest_free(manifest *m)
{
    if (!m)
        return;
    free_providers(m);
    if (m->library)
        dlclose(m->library);
    json_decref(m->root);
    free(m->path);
    free(m->real_path);
    free(m->library_path);
    free(m);
}

kd_status kd_registry_new(kd_registry **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "kd_registry_new: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kd_error(KD_ERR_NOMEM, "kd_registry_new: out of memory");
    return KD_OK;
}

void kd_registry_close(kd_registry *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_entries; i++)
        free(r->entries[i]);
    /* Libraries loaded later may depend on earlier ones: unload in reverse. */
    for (int i = r->n_manifests - 1; i >= 0; i--)
        manifest_free(r->manifests[i]);
    for (int i = 0; i < r->n_scanned_dirs; i++)
        free(r->scanned_dirs[i]);
    free(r->entries);
    free(r->manifests);
    free(r->scanned_dirs);
    free(r);
}

/* --- manifest format --- */

static bool is_identifier(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* Rejects keys of obj outside `allowed`, suggesting the closest one. */
static kd_status check_keys(const json_t *obj, const char *file, const char *where,
                            int n_allowed, const char *const *allowed)
{
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        bool known = false;
        for (int i = 0; i < n_allowed && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (known)
            continue;
        const char *near = kd_closest_word(key, n_allowed, allowed);
        if (near)
            return kd_error(KD_ERR_FORMAT, "%s: %s%s: unknown key (did you mean %s?)",
                            file, where, key, near);
        return kd_error(KD_ERR_FORMAT, "%s: %s%s: unknown key", file, where, key);
    }
    return KD_OK;
}

/* A required string member; NULL (with the error set) when absent or not a
 * non-empty string. */
static const char *required_string(const json_t *obj, const char *key,
                                   const char *file, const char *where)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        kd_error(KD_ERR_FORMAT, "%s: %s%s: missing", file, where, key);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        kd_error(KD_ERR_FORMAT, "%s: %s%s: expected a non-empty string", file, where, key);
        return NULL;
    }
    return json_string_value(v);
}

static kd_status check_provider(const json_t *p, int index, const char *file)
{
    static const char *const keys[] = {"kind", "name", "summary", "params"};
    char where[64];
    snprintf(where, sizeof where, "provides[%d].", index);
    if (!json_is_object(p))
        return kd_error(KD_ERR_FORMAT, "%s: provides[%d]: expected an object", file, index);
    kd_status st = check_keys(p, file, where, 4, keys);
    if (st != KD_OK)
        return st;
    const char *kind = required_string(p, "kind", file, where);
    if (!kind)
        return KD_ERR_FORMAT;
    if (kd_plugin_kind_from_name(kind) < 0) {
        const char *known[KD_KIND_COUNT];
        for (int k = 0; k < KD_KIND_COUNT; k++)
            known[k] = kd_plugin_kind_name((kd_plugin_kind)k);
        const char *near = kd_closest_word(kind, KD_KIND_COUNT, known);
        if (near)
            return kd_error(KD_ERR_FORMAT, "%s: %skind: unknown kind '%s' (did you mean %s?)",
                            file, where, kind, near);
        return kd_error(KD_ERR_FORMAT,
                        "%s: %skind: unknown kind '%s' (known: model, loss, dataset, "
                        "transform, batch_transform, optimizer, scheduler)",
                        file, where, kind);
    }
    const char *name = required_string(p, "name", file, where);
    if (!name)
        return KD_ERR_FORMAT;
    if (!is_identifier(name))
        return kd_error(KD_ERR_FORMAT,
                        "%s: %sname: '%s' is not a provider name (use a-z, 0-9 and _)",
                        file, where, name);
    if (!required_string(p, "summary", file, where))
        return KD_ERR_FORMAT;
    const json_t *params = json_object_get(p, "params");
    if (!params)
        return kd_error(KD_ERR_FORMAT, "%s: %sparams: missing (use {} for none)", file, where);
    if (!json_is_object(params))
        return kd_error(KD_ERR_FORMAT, "%s: %sparams: expected an object", file, where);
    /* kd_params_check_schema appends ".params.<key>" to the label. */
    char label[PATH_MAX + 64];
    snprintf(label, sizeof label, "%s: provides[%d]", file, index);
    return kd_params_check_schema(params, label);
}

/* Checks everything a manifest can be checked for on its own. */
static kd_status check_manifest(const json_t *root, const char *file)
{
    static const char *const keys[] = {"abi", "name", "version", "library", "provides"};
    if (!json_is_object(root))
        return kd_error(KD_ERR_FORMAT, "%s: expected a JSON object", file);
    /* The ABI first: a manifest for another ABI may legitimately differ in
     * every other key. */
    const json_t *abi = json_object_get(root, "abi");
    const json_t *name_value = json_object_get(root, "name");
    const char *name = json_is_string(name_value) ? json_string_value(name_value) : "?";
    if (!abi)
        return kd_error(KD_ERR_FORMAT, "%s: abi: missing", file);
    if (!json_is_integer(abi))
        return kd_error(KD_ERR_FORMAT, "%s: abi: expected an integer", file);
    if (json_integer_value(abi) != KD_PLUGIN_ABI)
        return kd_error(KD_ERR_UNSUPPORTED,
                        "plugin '%s' (%s) was built for plugin ABI %lld; this kdengine "
                        "speaks %d: rebuild the plugin against this kdengine's SDK",
                        name, file, (long long)json_integer_value(abi), KD_PLUGIN_ABI);
    kd_status st = check_keys(root, file, "", 5, keys);
    if (st != KD_OK)
        return st;
    if (!(name = required_string(root, "name", file, "")))
        return KD_ERR_FORMAT;
    if (!is_identifier(name))
        return kd_error(KD_ERR_FORMAT,
                        "%s: name: '%s' is not a plugin name (use a-z, 0-9 and _)", file, name);
    if (!required_string(root, "version", file, ""))
        return KD_ERR_FORMAT;
    const char *library = required_string(root, "library", file, "");
    if (!library)
        return KD_ERR_FORMAT;
    if (strchr(library, '/') || strcmp(library, ".") == 0 || strcmp(library, "..") == 0)
        return kd_error(KD_ERR_FORMAT,
                        "%s: library: '%s' must be a file name in the manifest's folder",
                        file, library);
    const json_t *provides = json_object_get(root, "provides");
    if (!provides)
        return kd_error(KD_ERR_FORMAT, "%s: provides: missing", file);
    if (!json_is_array(provides) || json_array_size(provides) == 0)
        return kd_error(KD_ERR_FORMAT, "%s: provides: expected a non-empty array", file);
    size_t i;
    const json_t *p;
    json_array_foreach(provides, i, p) {
        if ((st = check_provider(p, (int)i, file)) != KD_OK)
            return st;
    }
    for (size_t a = 0; a < json_array_size(provides); a++) {
        const json_t *pa = json_array_get(provides, a);
        for (size_t b = 0; b < a; b++) {
            const json_t *pb = json_array_get(provides, b);
            if (json_equal(json_object_get(pa, "kind"), json_object_get(pb, "kind")) &&
                json_equal(json_object_get(pa, "name"), json_object_get(pb, "name")))
                return kd_error(KD_ERR_FORMAT, "%s: provides[%zu]: %s '%s' repeats provides[%zu]",
                                file, a, json_string_value(json_object_get(pa, "kind")),
                                json_string_value(json_object_get(pa, "name")), b);
        }
    }
    return KD_OK;
}

/* --- scanning --- */

static registry_entry *find_entry(const kd_registry *r, kd_plugin_kind kind, const char *name)
{
    int lo = 0, hi = r->n_entries;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const kd_registry_entry *e = &r->entries[mid]->pub;
        int c = e->kind != kind ? (e->kind < kind ? -1 : 1) : strcmp(e->name, name);
        if (c == 0)
            return r->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int compare_entries(const void *a, const void *b)
{
    const kd_registry_entry *x = &(*(registry_entry *const *)a)->pub;
    const kd_registry_entry *y = &(*(registry_entry *const *)b)->pub;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Conflicts with what is registered already. */
static kd_status check_conflicts(const kd_registry *r, const manifest *m)
{
    for (int i = 0; i < r->n_manifests; i++)
        if (strcmp(r->manifests[i]->name, m->name) == 0)
            return kd_error(KD_ERR_INVALID, "plugin '%s' is declared by both %s and %s",
                            m->name, r->manifests[i]->path, m->path);
    const json_t *provides = json_object_get(m->root, "provides");
    for (size_t i = 0; i < json_array_size(provides); i++) {
        const json_t *p = json_array_get(provides, i);
        const char *kind = json_string_value(json_object_get(p, "kind"));
        const char *name = json_string_value(json_object_get(p, "name"));
        const registry_entry *other =
            find_entry(r, (kd_plugin_kind)kd_plugin_kind_from_name(kind), name);
        if (other)
            return kd_error(KD_ERR_INVALID,
                            "%s '%s' is provided by both %s (plugin '%s') and %s (plugin '%s')",
                            kind, name, other->owner->path, other->owner->name, m->path,
                            m->name);
    }
    return KD_OK;
}

/* Adds m and its entries; on failure nothing of it stays registered. */
static kd_status register_manifest(kd_registry *r, manifest *m)
{
    kd_status st = check_conflicts(r, m);
    if (st != KD_OK)
        return st;
    const json_t *provides = json_object_get(m->root, "provides");
    int n = (int)json_array_size(provides);
    registry_entry **added = calloc((size_t)n, sizeof *added);
    if (!added)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", m->path);
    for (int i = 0; i < n; i++) {
        const json_t *p = json_array_get(provides, (size_t)i);
        registry_entry *e = calloc(1, sizeof *e);
        if (!e) {
            for (int j = 0; j < i; j++)
                free(added[j]);
            free(added);
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", m->path);
        }
        e->pub.kind = (kd_plugin_kind)kd_plugin_kind_from_name(
            json_string_value(json_object_get(p, "kind")));
        e->pub.name = json_string_value(json_object_get(p, "name"));
        e->pub.summary = json_string_value(json_object_get(p, "summary"));
        e->pub.plugin = m->name;
        e->pub.version = m->version;
        e->pub.manifest_path = m->path;
        e->pub.library_path = m->library_path;
        e->pub.params = json_object_get(p, "params");
        e->owner = m;
        e->provider_index = i;
        added[i] = e;
    }
    bool ok = grow(&r->manifests, r->n_manifests, sizeof *r->manifests);
    for (int i = 0; ok && i < n; i++)
        ok = grow(&r->entries, r->n_entries + i, sizeof *r->entries);
    if (!ok) {
        for (int j = 0; j < n; j++)
            free(added[j]);
        free(added);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", m->path);
    }
    r->manifests[r->n_manifests++] = m;
    for (int i = 0; i < n; i++)
        r->entries[r->n_entries++] = added[i];
    free(added);
    qsort(r->entries, (size_t)r->n_entries, sizeof *r->entries, compare_entries);
    return KD_OK;
}

static bool manifest_known(const kd_registry *r, const char *real_path)
{
    for (int i = 0; i < r->n_manifests; i++)
        if (strcmp(r->manifests[i]->real_path, real_path) == 0)
            return true;
    return false;
}

/* Reads, checks and registers dir/manifest.json; a folder without one is
 * not a plugin and is skipped. */
static kd_status scan_plugin_folder(kd_registry *r, const char *dir)
{
    char *path = join_path(dir, "manifest.json");
    if (!path)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", dir);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        free(path);
        return KD_OK;
    }
    char real_path[PATH_MAX], real_dir[PATH_MAX];
    if (!realpath(path, real_path) || !realpath(dir, real_dir)) {
        kd_status st = kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
        free(path);
        return st;
    }
    if (manifest_known(r, real_path)) {
        free(path);
        return KD_OK;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        kd_status st = jerr.line > 0
                           ? kd_error(KD_ERR_FORMAT, "%s:%d:%d: %s", path, jerr.line,
                                      jerr.column, jerr.text)
                           : kd_error(KD_ERR_IO, "%s: %s", path, jerr.text);
        free(path);
        return st;
    }
    kd_status st = check_manifest(root, path);
    if (st != KD_OK) {
        json_decref(root);
        free(path);
        return st;
    }
    manifest *m = calloc(1, sizeof *m);
    if (!m) {
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        json_decref(root);
        free(path);
        return st;
    }
    m->path = path;
    m->root = root;
    m->name = json_string_value(json_object_get(root, "name"));
    m->version = json_string_value(json_object_get(root, "version"));
    m->real_path = copy_string(real_path);
    m->library_path = join_path(real_dir, json_string_value(json_object_get(root, "library")));
    if (!m->real_path || !m->library_path) {
        manifest_free(m);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", dir);
    }
    if ((st = register_manifest(r, m)) != KD_OK)
        manifest_free(m);
    return st;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

kd_status kd_registry_scan(kd_registry *r, const char *dir)
{
    if (!r || !dir)
        return kd_error(KD_ERR_INVALID, "kd_registry_scan: NULL argument");
    char real_dir[PATH_MAX];
    if (!realpath(dir, real_dir))
        return kd_error(KD_ERR_IO, "plugin dir '%s': %s", dir, strerror(errno));
    for (int i = 0; i < r->n_scanned_dirs; i++)
        if (strcmp(r->scanned_dirs[i], real_dir) == 0)
            return KD_OK;
    DIR *d = opendir(dir);
    if (!d)
        return kd_error(KD_ERR_IO, "plugin dir '%s': %s", dir, strerror(errno));
    /* Sorted, so that which of two clashing manifests is reported first
     * does not depend on the file system. */
    char **names = NULL;
    int n_names = 0;
    kd_status st = KD_OK;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char *name = copy_string(de->d_name);
        if (!name || !grow(&names, n_names, sizeof *names)) {
            free(name);
            st = kd_error(KD_ERR_NOMEM, "plugin dir '%s': out of memory", dir);
            break;
        }
        names[n_names++] = name;
    }
    closedir(d);
    if (st == KD_OK) {
        qsort(names, (size_t)n_names, sizeof *names, compare_names);
        st = scan_plugin_folder(r, dir);
    }
    for (int i = 0; i < n_names && st == KD_OK; i++) {
        char *sub = join_path(dir, names[i]);
        struct stat sb;
        if (!sub)
            st = kd_error(KD_ERR_NOMEM, "plugin dir '%s': out of memory", dir);
        else if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = scan_plugin_folder(r, sub);
        free(sub);
    }
    for (int i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    if (st != KD_OK)
        return st;
    char *copy = copy_string(real_dir);
    if (!copy || !grow(&r->scanned_dirs, r->n_scanned_dirs, sizeof *r->scanned_dirs)) {
        free(copy);
        return kd_error(KD_ERR_NOMEM, "plugin dir '%s': out of memory", dir);
    }
    r->scanned_dirs[r->n_scanned_dirs++] = copy;
    return KD_OK;
}

/* A dir the user named must exist; origin says where the name came from. */
static kd_status scan_user_dir(kd_registry *r, const char *dir, const char *origin)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return kd_error(KD_ERR_IO, "%splugin dir '%s' does not exist", origin, dir);
    if (!S_ISDIR(sb.st_mode))
        return kd_error(KD_ERR_IO, "%splugin dir '%s' is not a directory", origin, dir);
    return kd_registry_scan(r, dir);
}

kd_status kd_registry_scan_default(kd_registry *r, int n_extra,
                                   const char *const *extra_dirs)
{
    if (!r || n_extra < 0 || (n_extra > 0 && !extra_dirs))
        return kd_error(KD_ERR_INVALID, "kd_registry_scan_default: bad arguments");
    struct stat sb;
    kd_status st;
    if (stat(KD_PLUGIN_DIR, &sb) == 0 && S_ISDIR(sb.st_mode) &&
        (st = kd_registry_scan(r, KD_PLUGIN_DIR)) != KD_OK)
        return st;
    const char *env = getenv("KDENGINE_PLUGIN_PATH");
    if (env) {
        char *list = copy_string(env);
        if (!list)
            return kd_error(KD_ERR_NOMEM, "KDENGINE_PLUGIN_PATH: out of memory");
        st = KD_OK;
        for (char *dir = list, *next; dir && st == KD_OK; dir = next) {
            next = strchr(dir, ':');
            if (next)
                *next++ = '\0';
            if (*dir)
                st = scan_user_dir(r, dir, "KDENGINE_PLUGIN_PATH: ");
        }
        free(list);
        if (st != KD_OK)
            return st;
    }
    for (int i = 0; i < n_extra; i++)
        if ((st = scan_user_dir(r, extra_dirs[i], "")) != KD_OK)
            return st;
    return KD_OK;
}

int kd_registry_count(const kd_registry *r) { return r ? r->n_entries : 0; }

const kd_registry_entry *kd_registry_at(const kd_registry *r, int i)
{
    if (!r || i < 0 || i >= r->n_entries)
        return NULL;
    return &r->entries[i]->pub;
}

const kd_registry_entry *kd_registry_find(const kd_registry *r, kd_plugin_kind kind,
                                          const char *name)
{
    if (!r || !name)
        return NULL;
    registry_entry *e = find_entry(r, kind, name);
    return e ? &e->pub : NULL;
}

/* --- loading --- */

/* Per kind: the host's vtable size and the callbacks a plugin must set.
 * ABI 2.0's vtables end with their required callbacks' block, so a vtable
 * must be at least long enough to hold the last of them. */
typedef struct callback_rule {
    const char *name;
    size_t offset;
} callback_rule;

#define RULE(type, field) {#field, offsetof(type, field)}
#define MAX_REQUIRED 5

static const struct kind_layout {
    size_t host_size;
    int n_required;
    callback_rule required[MAX_REQUIRED];
} layouts[KD_KIND_COUNT] = {
    /* optional: forward_from, filter_weight, freeze, layer_id (the last
     * appended within ABI 2; past an older plugin's size it reads NULL) */
    [KD_KIND_MODEL] = {sizeof(kd_model_vtable), 5,
                       {RULE(kd_model_vtable, create), RULE(kd_model_vtable, destroy),
                        RULE(kd_model_vtable, tensors), RULE(kd_model_vtable, taps),
                        RULE(kd_model_vtable, forward)}},
    [KD_KIND_LOSS] = {sizeof(kd_loss_vtable), 4,
                      {RULE(kd_loss_vtable, create), RULE(kd_loss_vtable, destroy),
                       RULE(kd_loss_vtable, needs), RULE(kd_loss_vtable, forward)}},
    /* optional: labels, class_name, skipped, sample_name (the last three
     * appended within ABI 2; past an older plugin's size they read NULL
     * from the copy) */
    [KD_KIND_DATASET] = {sizeof(kd_dataset_vtable), 4,
                         {RULE(kd_dataset_vtable, create), RULE(kd_dataset_vtable, destroy),
                          RULE(kd_dataset_vtable, info), RULE(kd_dataset_vtable, get)}},
    [KD_KIND_TRANSFORM] = {sizeof(kd_transform_vtable), 3,
                           {RULE(kd_transform_vtable, create),
                            RULE(kd_transform_vtable, destroy),
                            RULE(kd_transform_vtable, apply)}},
    [KD_KIND_BATCH_TRANSFORM] = {sizeof(kd_batch_transform_vtable), 3,
                                 {RULE(kd_batch_transform_vtable, create),
                                  RULE(kd_batch_transform_vtable, destroy),
                                  RULE(kd_batch_transform_vtable, apply)}},
    [KD_KIND_OPTIMIZER] = {sizeof(kd_optimizer_vtable), 4,
                           {RULE(kd_optimizer_vtable, create),
                            RULE(kd_optimizer_vtable, destroy),
                            RULE(kd_optimizer_vtable, step), RULE(kd_optimizer_vtable, state)}},
    [KD_KIND_SCHEDULER] = {sizeof(kd_scheduler_vtable), 3,
                           {RULE(kd_scheduler_vtable, create),
                            RULE(kd_scheduler_vtable, destroy),
                            RULE(kd_scheduler_vtable, lr_at)}},
};

static size_t min_vtable_size(const struct kind_layout *k)
{
    return k->required[k->n_required - 1].offset + sizeof(void (*)(void));
}

/* The vtable's size, kind and required callbacks; then the host's copy. */
static kd_status copy_vtable(const manifest *m, const kd_plugin_provider *p,
                             kd_vtable_header **out)
{
    const char *lib = m->library_path, *kind = kd_plugin_kind_name(p->kind);
    const struct kind_layout *k = &layouts[p->kind];
    if (!p->vtable)
        return kd_error(KD_ERR_FORMAT, "%s: %s '%s' has no vtable", lib, kind, p->name);
    if (p->vtable->kind != (uint32_t)p->kind) {
        const char *vkind = kd_plugin_kind_name((kd_plugin_kind)p->vtable->kind);
        return kd_error(KD_ERR_FORMAT, "%s: the vtable of %s '%s' is a %s vtable", lib, kind,
                        p->name, vkind ? vkind : "unknown kind's");
    }
    if (p->vtable->size < min_vtable_size(k))
        return kd_error(KD_ERR_FORMAT, "%s: the vtable of %s '%s' is %u bytes, too small to "
                        "hold its required callbacks (%zu bytes)", lib, kind, p->name,
                        (unsigned)p->vtable->size, min_vtable_size(k));
    for (int i = 0; i < k->n_required; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)p->vtable + k->required[i].offset, sizeof fn);
        if (!fn)
            return kd_error(KD_ERR_FORMAT, "%s: %s '%s' has no %s callback (required)", lib,
                            kind, p->name, k->required[i].name);
    }
    kd_vtable_header *copy = calloc(1, k->host_size);
    if (!copy)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", lib);
    size_t n = p->vtable->size < k->host_size ? p->vtable->size : k->host_size;
    memcpy(copy, p->vtable, n);
    *out = copy;
    return KD_OK;
}

/* Provider i of the library's array, read with the library's stride. */
static const kd_plugin_provider *provider_at(const kd_plugin_info *info, int i)
{
    return (const kd_plugin_provider *)(const void *)((const char *)info->providers +
                                                      (size_t)i * info->provider_size);
}

/* The library's providers against its manifest, both ways, then their
 * vtables; on success m->providers holds the host's copies. */
static kd_status take_providers(manifest *m, const kd_plugin_info *info)
{
    const char *lib = m->library_path;
    if (info->n_providers < 0 || info->n_providers > KD_MAX_PROVIDERS)
        return kd_error(KD_ERR_FORMAT, "%s: n_providers is %d", lib, info->n_providers);
    if (info->n_providers > 0 && !info->providers)
        return kd_error(KD_ERR_FORMAT, "%s: n_providers is %d but providers is NULL", lib,
                        info->n_providers);
    if (info->provider_size < sizeof(kd_plugin_provider))
        return kd_error(KD_ERR_FORMAT, "%s: provider_size is %u, less than ABI %d's %zu "
                        "(use KD_PLUGIN_PROVIDERS)", lib, (unsigned)info->provider_size,
                        KD_PLUGIN_ABI, sizeof(kd_plugin_provider));
    m->providers = calloc((size_t)info->n_providers + 1, sizeof *m->providers);
    if (!m->providers)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", lib);
    const json_t *provides = json_object_get(m->root, "provides");
    for (int i = 0; i < info->n_providers; i++) {
        const kd_plugin_provider *p = provider_at(info, i);
        const char *kind = kd_plugin_kind_name(p->kind);
        if (!kind || !p->name)
            return kd_error(KD_ERR_FORMAT, "%s: providers[%d] has %s", lib, i,
                            kind ? "no name" : "an unknown kind");
        bool declared = false;
        for (size_t j = 0; j < json_array_size(provides) && !declared; j++) {
            const json_t *q = json_array_get(provides, j);
            declared = strcmp(json_string_value(json_object_get(q, "kind")), kind) == 0 &&
                       strcmp(json_string_value(json_object_get(q, "name")), p->name) == 0;
        }
        if (!declared)
            return kd_error(KD_ERR_FORMAT, "%s provides %s '%s', which its manifest %s does not "
                            "declare", lib, kind, p->name, m->path);
        for (int j = 0; j < i; j++) {
            const kd_plugin_provider *q = provider_at(info, j);
            if (q->kind == p->kind && strcmp(q->name, p->name) == 0)
                return kd_error(KD_ERR_FORMAT, "%s provides %s '%s' twice", lib, kind, p->name);
        }
    }
    for (size_t j = 0; j < json_array_size(provides); j++) {
        const json_t *q = json_array_get(provides, j);
        const char *kind = json_string_value(json_object_get(q, "kind"));
        const char *name = json_string_value(json_object_get(q, "name"));
        bool found = false;
        for (int i = 0; i < info->n_providers && !found; i++)
            found = strcmp(kd_plugin_kind_name(provider_at(info, i)->kind), kind) == 0 &&
                    strcmp(provider_at(info, i)->name, name) == 0;
        if (!found)
            return kd_error(KD_ERR_FORMAT, "%s: the manifest %s declares %s '%s' "
                            "(provides[%zu]) but the library does not provide it",
                            lib, m->path, kind, name, j);
    }
    for (int i = 0; i < info->n_providers; i++) {
        const kd_plugin_provider *p = provider_at(info, i);
        loaded_provider *lp = &m->providers[m->n_providers];
        kd_status st = copy_vtable(m, p, &lp->vtable);
        if (st != KD_OK)
            return st;
        lp->entry = *p;
        lp->entry.vtable = lp->vtable;
        m->n_providers++;
    }
    return KD_OK;
}

/* What the entry function filled, against this build and the manifest. A
 * kd_plugin_info from a newer header (larger) is read up to this host's
 * fields; one smaller than ABI 2.0's is refused. */
static kd_status check_info(const manifest *m, const kd_plugin_info *info)
{
    const char *lib = m->library_path;
    if (info->abi != KD_PLUGIN_ABI)
        return kd_error(KD_ERR_UNSUPPORTED, "%s was built for plugin ABI %u; this kdengine "
                        "speaks %d: rebuild the plugin against this kdengine's SDK", lib,
                        (unsigned)info->abi, KD_PLUGIN_ABI);
    if (info->info_size < sizeof(kd_plugin_info))
        return kd_error(KD_ERR_UNSUPPORTED, "%s was built against a different kdengine "
                        "(kd_plugin_info is %u bytes there, %zu here): rebuild the plugin",
                        lib, (unsigned)info->info_size, sizeof(kd_plugin_info));
    if (info->tensor_size != sizeof(kd_tensor))
        return kd_error(KD_ERR_UNSUPPORTED, "%s was built against a different kdengine "
                        "(kd_tensor is %u bytes there, %zu here): rebuild the plugin",
                        lib, (unsigned)info->tensor_size, sizeof(kd_tensor));
    if (info->max_dims != KD_MAX_DIMS)
        return kd_error(KD_ERR_UNSUPPORTED, "%s was built against a different kdengine "
                        "(KD_MAX_DIMS is %u there, %d here): rebuild the plugin",
                        lib, (unsigned)info->max_dims, KD_MAX_DIMS);
    if (!info->name || strcmp(info->name, m->name) != 0)
        return kd_error(KD_ERR_FORMAT, "%s calls itself '%s' but its manifest %s says '%s'",
                        lib, info->name ? info->name : "(null)", m->path, m->name);
    if (!info->version || strcmp(info->version, m->version) != 0)
        return kd_error(KD_ERR_FORMAT, "%s is version '%s' but its manifest %s says '%s'",
                        lib, info->version ? info->version : "(null)", m->path, m->version);
    return KD_OK;
}

static kd_status load_library(manifest *m)
{
    const char *lib = m->library_path;
    dlerror();
    void *handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        return kd_error(KD_ERR_IO, "plugin '%s' (%s): cannot load %s: %s", m->name, m->path,
                        lib, why ? why : "unknown error");
    }
    dlerror();
    void *symbol = dlsym(handle, KD_PLUGIN_ENTRY_SYMBOL);
    if (!symbol) {
        dlclose(handle);
        return kd_error(KD_ERR_FORMAT, "%s does not export %s (plugin '%s', %s)", lib,
                        KD_PLUGIN_ENTRY_SYMBOL, m->name, m->path);
    }
    kd_plugin_entry_fn entry = (kd_plugin_entry_fn)symbol;
    /* Room past our kd_plugin_info, so a plugin built with a larger one
     * writes into slack, not over the stack. */
    union {
        kd_plugin_info info;
        unsigned char bytes[sizeof(kd_plugin_info) + 256];
    } filled;
    memset(&filled, 0, sizeof filled);
    kd_clear_error();
    kd_status st = entry(&filled.info);
    if (st != KD_OK) {
        if (kd_last_error()[0])
            kd_error_wrap(st, "%s: %s failed", lib, KD_PLUGIN_ENTRY_SYMBOL);
        else
            kd_error(st, "%s: %s failed: %s", lib, KD_PLUGIN_ENTRY_SYMBOL, kd_status_name(st));
        dlclose(handle);
        return st;
    }
    if (filled.info.info_size > sizeof filled.bytes)
        st = kd_error(KD_ERR_UNSUPPORTED, "%s: kd_plugin_info is %u bytes there; this kdengine "
                      "reads at most %zu: use a newer kdengine", lib,
                      (unsigned)filled.info.info_size, sizeof filled.bytes);
    if (st == KD_OK)
        st = check_info(m, &filled.info);
    if (st == KD_OK)
        st = take_providers(m, &filled.info);
    if (st != KD_OK) {
        free_providers(m);
        dlclose(handle);
        return st;
    }
    m->library = handle;
    return KD_OK;
}

kd_status kd_registry_load(kd_registry *r, const kd_registry_entry *entry,
                           const kd_vtable_header **vtable, const kd_plugin_provider **provider)
{
    if (!r || !entry || !vtable)
        return kd_error(KD_ERR_INVALID, "kd_registry_load: NULL argument");
    *vtable = NULL;
    registry_entry *e = entry->name ? find_entry(r, entry->kind, entry->name) : NULL;
    if (!e || &e->pub != entry)
        return kd_error(KD_ERR_INVALID,
                        "kd_registry_load: provider '%s' is not an entry of this registry",
                        entry->name ? entry->name : "(null)");
    manifest *m = e->owner;
    if (!m->library) {
        kd_status st = load_library(m);
        if (st != KD_OK)
            return st;
    }
    for (int i = 0; i < m->n_providers; i++) {
        const kd_plugin_provider *p = &m->providers[i].entry;
        if (p->kind == entry->kind && strcmp(p->name, entry->name) == 0) {
            *vtable = p->vtable;
            if (provider)
                *provider = p;
            return KD_OK;
        }
    }
    /* take_providers made sure every declared provider is there. */
    return kd_error(KD_ERR_STATE, "%s: %s '%s' vanished", m->library_path,
                    kd_plugin_kind_name(entry->kind), entry->name);
}
