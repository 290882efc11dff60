/* Checkpoints and weight files in safetensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "checkpoint.h"
#include <kdengine/safetensors.h>

#define STATE_KEY "kdengine.state"
#define CLASSES_KEY "kdengine.classes"

static char *join(const char *prefix, const char *name)
{
    size_t lp = strlen(prefix), ln = strlen(name);
    char *s = malloc(lp + ln + 1);
    if (s) {
        memcpy(s, prefix, lp);
        memcpy(s + lp, name, ln + 1);
    }
    return s;
}

kd_status kd_checkpoint_save(const char *path, int n_groups, const kd_tensor_group *groups,
                             const char *state_json, const char *classes_json)
{
    int total = 0;
    for (int g = 0; g < n_groups; g++)
        total += groups[g].n;
    char **names = calloc((size_t)total + 1, sizeof *names);
    kd_tensor **tensors = calloc((size_t)total + 1, sizeof *tensors);
    kd_status st = names && tensors ? KD_OK : kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    int k = 0;
    for (int g = 0; g < n_groups && st == KD_OK; g++)
        for (int i = 0; i < groups[g].n && st == KD_OK; i++, k++) {
            names[k] = join(groups[g].prefix, groups[g].list[i].name);
            tensors[k] = groups[g].list[i].tensor;
            if (!names[k])
                st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        }
    if (st == KD_OK) {
        const char *meta[4];
        int n_meta = 0;
        if (state_json) {
            meta[2 * n_meta] = STATE_KEY;
            meta[2 * n_meta++ + 1] = state_json;
        }
        if (classes_json) {
            meta[2 * n_meta] = CLASSES_KEY;
            meta[2 * n_meta++ + 1] = classes_json;
        }
        st = kd_safetensors_save(path, total, (const char *const *)names, tensors, n_meta,
                                 meta);
    }
    for (int i = 0; names && i < total; i++)
        free(names[i]);
    free(names);
    free(tensors);
    return st;
}

static bool same_shape(const kd_safetensors_entry *e, const kd_tensor *t)
{
    if (e->ndim != t->ndim)
        return false;
    for (int d = 0; d < e->ndim; d++)
        if (e->shape[d] != t->shape[d])
            return false;
    return true;
}

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t size)
{
    int used = snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < (int)size; d++)
        used += snprintf(buf + used, size - (size_t)used, d ? ", %lld" : "%lld",
                         (long long)shape[d]);
    if (used < (int)size)
        snprintf(buf + used, size - (size_t)used, "]");
}

/* "PATH: 'NAME' has shape [..], the model's 'X' is [..]". */
static kd_status shape_error(const char *path, const char *name, int ndim,
                             const int64_t *shape, const kd_named_tensor *nt)
{
    char want[128], got[128];
    shape_text(nt->tensor->ndim, nt->tensor->shape, want, sizeof want);
    shape_text(ndim, shape, got, sizeof got);
    return kd_error(KD_ERR_FORMAT, "%s: '%s' has shape %s, the model's '%s' is %s", path, name,
                    got, nt->name, want);
}

/* Copies entry `full` of f into t. */
static kd_status load_one(const kd_safetensors *f, const char *path, const char *full,
                          const kd_named_tensor *nt, bool *found)
{
    const kd_safetensors_entry *e = kd_safetensors_find(f, full);
    *found = e != NULL;
    if (!e)
        return KD_OK;
    if (!same_shape(e, nt->tensor))
        return shape_error(path, full, e->ndim, e->shape, nt);
    kd_tensor *loaded = kd_safetensors_load(f, full, nt->tensor->dtype);
    if (!loaded)
        return kd_error_wrap(KD_ERR_FORMAT, "%s: '%s'", path, full);
    kd_status st = kd_tensor_copy_(nt->tensor, loaded);
    kd_tensor_free(loaded);
    return st;
}

static bool group_has(const kd_tensor_group *g, const char *full)
{
    size_t lp = strlen(g->prefix);
    for (int i = 0; i < g->n; i++)
        if (!strcmp(full + lp, g->list[i].name))
            return true;
    return false;
}

static kd_status load_groups(const kd_safetensors *f, const char *path, int n_groups,
                             const kd_tensor_group *groups)
{
    for (int g = 0; g < n_groups; g++) {
        int missing = 0;
        const char *first_missing = NULL;
        for (int i = 0; i < groups[g].n; i++) {
            char *full = join(groups[g].prefix, groups[g].list[i].name);
            if (!full)
                return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
            bool found;
            kd_status st = load_one(f, path, full, &groups[g].list[i], &found);
            free(full);
            if (st != KD_OK)
                return st;
            if (!found && !(groups[g].list[i].flags & KD_TENSOR_OPTIONAL) && missing++ == 0)
                first_missing = groups[g].list[i].name;
        }
        if (missing)
            return kd_error(KD_ERR_FORMAT, "%s: %d tensor%s missing, the first '%s%s'", path,
                            missing, missing == 1 ? " is" : "s are", groups[g].prefix,
                            first_missing);
    }
    for (int i = 0; i < kd_safetensors_count(f); i++) {
        const char *name = kd_safetensors_at(f, i)->name;
        for (int g = 0; g < n_groups; g++) {
            size_t lp = strlen(groups[g].prefix);
            if (strncmp(name, groups[g].prefix, lp) != 0)
                continue;
            if (!group_has(&groups[g], name))
                return kd_error(KD_ERR_FORMAT, "%s: unexpected tensor '%s' (not in this model "
                                "or job)", path, name);
            break;
        }
    }
    return KD_OK;
}

kd_status kd_checkpoint_load(const char *path, int n_groups, const kd_tensor_group *groups,
                             char **state_json)
{
    if (state_json)
        *state_json = NULL;
    kd_safetensors *f;
    kd_status st = kd_safetensors_open(path, &f);
    if (st != KD_OK)
        return st;
    st = load_groups(f, path, n_groups, groups);
    const char *state = kd_safetensors_metadata(f, STATE_KEY);
    if (st == KD_OK && state_json && state) {
        *state_json = strdup(state);
        if (!*state_json)
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    }
    kd_safetensors_close(f);
    return st;
}

/* A weights file through the model's filter: every tensor of the file
 * (under prefix) is offered to the filter, then matched by its new name;
 * a model tensor left without a value or a file tensor left without a
 * model tensor is an error, as in load_groups. */
static kd_status load_filtered(const kd_safetensors *f, const char *path, const char *prefix,
                               int n, const kd_named_tensor *list, kd_weight_filter_fn filter,
                               void *model)
{
    bool *seen = calloc((size_t)n + 1, sizeof *seen);
    if (!seen)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    size_t lp = strlen(prefix);
    kd_status st = KD_OK;
    kd_scope_begin();
    for (int i = 0; st == KD_OK && i < kd_safetensors_count(f); i++) {
        const kd_safetensors_entry *e = kd_safetensors_at(f, i);
        if (strncmp(e->name, prefix, lp) != 0)
            continue;
        kd_dtype dtype = e->dtype >= 0 ? (kd_dtype)e->dtype : KD_F32;
        kd_weight_fix fix = {sizeof fix, e->name + lp, kd_safetensors_load(f, e->name, dtype),
                             false};
        if (!fix.value) {
            st = kd_error_wrap(kd_last_status(), "%s: '%s'", path, e->name);
            break;
        }
        st = filter(model, &fix);
        if (st != KD_OK) {
            st = kd_error_wrap(st, "%s: '%s'", path, e->name);
            break;
        }
        if (fix.drop)
            continue;
        int k = 0;
        while (k < n && (!fix.name || strcmp(list[k].name, fix.name) != 0))
            k++;
        bool renamed = fix.name && strcmp(fix.name, e->name + lp) != 0;
        if (k == n) {
            st = kd_error(KD_ERR_FORMAT, "%s: unexpected tensor '%s'%s%s (not in this model)",
                          path, e->name, renamed ? " -> " : "", renamed ? fix.name : "");
            break;
        }
        if (!kd_tensor_same_shape(fix.value, list[k].tensor)) {
            st = shape_error(path, e->name, fix.value->ndim, fix.value->shape, &list[k]);
            break;
        }
        st = kd_tensor_copy_(list[k].tensor, fix.value);
        seen[k] = true;
    }
    kd_scope_end();
    for (int k = 0; st == KD_OK && k < n; k++)
        if (!seen[k] && !(list[k].flags & KD_TENSOR_OPTIONAL))
            st = kd_error(KD_ERR_FORMAT, "%s: no tensor for the model's '%s'", path,
                          list[k].name);
    free(seen);
    return st;
}

kd_status kd_weights_load(const char *path, const char *what, int n,
                          const kd_named_tensor *list, kd_weight_filter_fn filter, void *model)
{
    kd_safetensors *f;
    kd_status st = kd_safetensors_open(path, &f);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s weights", what);
    /* a kdengine checkpoint keeps the student under "student." */
    bool checkpoint = kd_safetensors_metadata(f, STATE_KEY) != NULL;
    kd_tensor_group g = {checkpoint ? "student." : "", n, list};
    st = filter ? load_filtered(f, path, g.prefix, n, list, filter, model)
                : load_groups(f, path, 1, &g);
    kd_safetensors_close(f);
    return st == KD_OK ? st : kd_error_wrap(st, "%s weights", what);
}

kd_status kd_checkpoint_classes(const char *path, char **classes_json)
{
    *classes_json = NULL;
    kd_safetensors *f;
    kd_status st = kd_safetensors_open(path, &f);
    if (st != KD_OK)
        return st;
    const char *classes = kd_safetensors_metadata(f, CLASSES_KEY);
    if (classes && !(*classes_json = strdup(classes)))
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    kd_safetensors_close(f);
    return st;
}
