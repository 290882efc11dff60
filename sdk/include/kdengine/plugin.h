/* kdengine: the plugin boundary.
 *
 * A plugin is a folder with a manifest.json and a shared library. The
 * manifest says what the library provides (kind, name, one-line summary,
 * parameter schema) so the host can list and validate without loading
 * code; the library is dlopen'ed only when a job uses one of its
 * providers. The library exports exactly one symbol, kd_plugin_entry,
 * which fills a kd_plugin_info: the ABI it was built against, a build
 * fingerprint, and a vtable per provider.
 *
 *   manifest.json
 *   {
 *     "abi": 1, "name": "kd", "version": "1.0.0", "library": "kd.so",
 *     "provides": [
 *       { "kind": "loss", "name": "kd",
 *         "summary": "Hinton KD: KL(teacher || student) at temperature T, times T^2",
 *         "params": {
 *           "temperature": {"type": "number", "default": 4.0, "min": 0,
 *                           "exclusive_min": true, "doc": "softening temperature"},
 *           "logit_stand": {"type": "boolean", "default": false,
 *                           "doc": "z-score both logits first"} } } ]
 *   }
 *
 * Parameter types: "number", "integer", "boolean", "string" (with optional
 * "choices"), "array" (with "items": one of the scalar types). "min" and
 * "max" bound numbers and integers ("exclusive_min"/"exclusive_max" make a
 * bound strict). A parameter without "default" is required.
 *
 * Ownership: everything a plugin returns through kd_plugin_info (names,
 * vtables, provider arrays) is static data of the library and lives until
 * the host unloads it. Instances a vtable creates belong to the plugin and
 * are released through the same vtable. */
#ifndef KDENGINE_PLUGIN_H
#define KDENGINE_PLUGIN_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/status.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change that breaks a built plugin: a struct's layout, a
 * vtable's meaning. Appending fields to the end of a vtable does not bump
 * it (the vtable's size field tells the host what the plugin has). */
#define KD_PLUGIN_ABI 1
#define KD_PLUGIN_ENTRY_SYMBOL "kd_plugin_entry"

typedef enum kd_plugin_kind {
    KD_KIND_MODEL = 0,
    KD_KIND_LOSS,
    KD_KIND_DATASET,
    KD_KIND_TRANSFORM,       /* per sample */
    KD_KIND_BATCH_TRANSFORM, /* per batch (mixup, cutmix) */
    KD_KIND_OPTIMIZER,
    KD_KIND_SCHEDULER,
    KD_KIND_COUNT
} kd_plugin_kind;

/* "model", "loss", "dataset", "transform", "batch_transform", "optimizer",
 * "scheduler"; NULL outside the enum. */
const char *kd_plugin_kind_name(kd_plugin_kind kind);
/* -1 for an unknown name. */
int kd_plugin_kind_from_name(const char *name);

/* Every vtable starts with this header: the host checks the kind, and the
 * size says which trailing callbacks the plugin was built with. */
typedef struct kd_vtable_header {
    uint32_t size; /* sizeof the plugin's vtable struct */
    uint32_t kind; /* a kd_plugin_kind */
} kd_vtable_header;

typedef struct kd_plugin_provider {
    kd_plugin_kind kind;
    const char *name;              /* as in the manifest */
    const kd_vtable_header *vtable; /* the kind's vtable */
} kd_plugin_provider;

/* Filled by the plugin's entry function. */
typedef struct kd_plugin_info {
    uint32_t abi;         /* KD_PLUGIN_ABI it was built against */
    uint32_t info_size;   /* sizeof(kd_plugin_info) it was built with */
    uint32_t tensor_size; /* sizeof(kd_tensor): the build fingerprint */
    uint32_t max_dims;    /* KD_MAX_DIMS */
    const char *name;     /* must equal the manifest's "name" */
    const char *version;  /* must equal the manifest's "version" */
    int n_providers;
    const kd_plugin_provider *providers;
} kd_plugin_info;

typedef kd_status (*kd_plugin_entry_fn)(kd_plugin_info *info);

/* Fills the fingerprint fields; a plugin's entry starts with it:
 *
 *   kd_status kd_plugin_entry(kd_plugin_info *info)
 *   {
 *       KD_PLUGIN_INFO_INIT(info, "kd", "1.0.0");
 *       info->n_providers = 1;
 *       info->providers = providers;
 *       return KD_OK;
 *   }
 */
#define KD_PLUGIN_INFO_INIT(info, plugin_name, plugin_version)                 \
    do {                                                                       \
        (info)->abi = KD_PLUGIN_ABI;                                           \
        (info)->info_size = (uint32_t)sizeof(kd_plugin_info);                  \
        (info)->tensor_size = (uint32_t)sizeof(kd_tensor);                     \
        (info)->max_dims = KD_MAX_DIMS;                                        \
        (info)->name = (plugin_name);                                          \
        (info)->version = (plugin_version);                                    \
    } while (0)

/* The exported entry; declared here so a plugin's definition is checked
 * against it. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
kd_status kd_plugin_entry(kd_plugin_info *info);

/* --- parameters a provider instance receives ---
 * Validated against the manifest schema before plugin code runs; defaults
 * are filled in, so every declared key is present. Lookups of a key the
 * schema does not declare are programming errors and return 0/false/NULL.
 * Owned by the host; valid for the instance's creation call only (copy what
 * you keep). */
typedef struct kd_params kd_params;

double kd_params_number(const kd_params *p, const char *key);
int64_t kd_params_integer(const kd_params *p, const char *key);
bool kd_params_boolean(const kd_params *p, const char *key);
const char *kd_params_string(const kd_params *p, const char *key);
/* Arrays: length, then element i as a number or a string. */
int kd_params_array_length(const kd_params *p, const char *key);
double kd_params_array_number(const kd_params *p, const char *key, int i);
const char *kd_params_array_string(const kd_params *p, const char *key, int i);

#ifdef __cplusplus
}
#endif
#endif
