/* Job files: parsing, --set overrides and checking every key. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "job.h"

/* ---------------------------------------------------------------- host keys */

static const char *const top_keys[] = {"seed",   "threads", "dtype",    "output",
                                       "plugin_dirs", "data", "teacher", "teachers",
                                       "student",
                                       "losses", "optim",   "schedule", "eval",
                                       "checkpoint", "log", "ema", "comment"};
static const char *const data_keys[] = {"train", "val"};
static const char *const split_keys[] = {"dataset",  "transforms", "batch_transforms",
                                         "batch_size", "workers",  "prefetch",
                                         "subset",   "shuffle",    "drop_last",
                                         "unlabeled"};
static const char *const teacher_keys[] = {"model", "weights", "train_bn", "input_size",
                                           "normalize"};
static const char *const teachers_keys[] = {"name",       "model",    "weights",
                                            "train_bn",   "input_size", "normalize"};
static const char *const ensemble_keys[] = {"name", "ensemble"};
static const char *const normalize_keys[] = {"mean", "std"};
static const char *const student_keys[] = {"model", "weights", "sync_bn"};
static const char *const loss_keys[] = {"name", "weight", "weight_warmup_epochs", "teacher"};
static const char *const optim_keys[] = {"name", "lr", "clip_grad_norm", "clip_grad_value",
                                         "accumulate_steps", "layer_decay"};
static const char *const schedule_keys[] = {"name", "epochs"};
static const char *const name_keys[] = {"name"};
static const char *const eval_keys[] = {"every_epochs"};
static const char *const checkpoint_keys[] = {"every_epochs", "keep"};
static const char *const log_keys[] = {"every_steps"};
static const char *const ema_keys[] = {"decay",        "min_decay",    "update_after_step",
                                       "warmup",       "warmup_gamma", "warmup_power",
                                       "exclude_buffers"};
#define COUNT(a) ((int)(sizeof(a) / sizeof(a)[0]))

static void join_path(char *buf, size_t size, const char *path, const char *key)
{
    snprintf(buf, size, "%s%s%s", path, *path ? "." : "", key);
}

/* An object that holds only host keys. */
static kd_status check_keys(const json_t *obj, const char *path, int n,
                            const char *const *known)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        (void)v;
        bool ok = false;
        for (int i = 0; i < n && !ok; i++)
            ok = !strcmp(key, known[i]);
        if (ok)
            continue;
        char where[256];
        join_path(where, sizeof where, path, key);
        const char *near = kd_closest_word(key, n, known);
        if (near)
            return kd_error(KD_ERR_INVALID, "%s: unknown key; did you mean %s?", where, near);
        char list[512];
        size_t used = 0;
        list[0] = '\0';
        for (int i = 0; i < n && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                                     known[i]);
        return kd_error(KD_ERR_INVALID, "%s: unknown key; %s takes: %s", where,
                        *path ? path : "a job", list);
    }
    return KD_OK;
}

static kd_status need_object(const json_t *v, const char *path)
{
    if (!json_is_object(v))
        return kd_error(KD_ERR_INVALID, "%s: expected an object", path);
    return KD_OK;
}

static kd_status get_integer(const json_t *obj, const char *key, const char *path,
                             int64_t fallback, int64_t lo, int64_t hi, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    char where[256];
    join_path(where, sizeof where, path, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return KD_OK;
    }
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
    if (!json_is_number(v) || d != floor(d))
        return kd_error(KD_ERR_INVALID, "%s: expected an integer", where);
    if (d < (double)lo || d > (double)hi)
        return kd_error(KD_ERR_INVALID, "%s: %.0f is out of range [%lld, %lld]", where, d,
                        (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return KD_OK;
}

static kd_status get_number(const json_t *obj, const char *key, const char *path,
                            double fallback, double lo, double *out)
{
    const json_t *v = json_object_get(obj, key);
    char where[256];
    join_path(where, sizeof where, path, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return KD_OK;
    }
    if (!json_is_number(v))
        return kd_error(KD_ERR_INVALID, "%s: expected a number", where);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo)
        return kd_error(KD_ERR_INVALID, "%s: %g must be at least %g", where, d, lo);
    *out = d;
    return KD_OK;
}

static kd_status get_bool(const json_t *obj, const char *key, const char *path, bool fallback,
                          bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return KD_OK;
    }
    if (!json_is_boolean(v)) {
        char where[256];
        join_path(where, sizeof where, path, key);
        return kd_error(KD_ERR_INVALID, "%s: expected true or false", where);
    }
    *out = json_is_true(v);
    return KD_OK;
}

/* A string; NULL when absent or null. */
static kd_status get_string(const json_t *obj, const char *key, const char *path,
                            const char **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return KD_OK;
    if (!json_is_string(v) || json_string_length(v) == 0) {
        char where[256];
        join_path(where, sizeof where, path, key);
        return kd_error(KD_ERR_INVALID, "%s: expected a non-empty string", where);
    }
    *out = json_string_value(v);
    return KD_OK;
}

/* The provider an object names, with a suggestion when it is unknown. */
static kd_status find_provider(const kd_registry *reg, kd_plugin_kind kind, const json_t *obj,
                               const char *key, const char *path,
                               const kd_registry_entry **out)
{
    const char *name;
    char where[256];
    join_path(where, sizeof where, path, key);
    kd_status st = get_string(obj, key, path, &name);
    if (st != KD_OK)
        return st;
    if (!name)
        return kd_error(KD_ERR_INVALID, "%s: missing (which %s to use)", where,
                        kd_plugin_kind_name(kind));
    *out = kd_registry_find(reg, kind, name);
    if (*out)
        return KD_OK;
    int n = kd_registry_count(reg), k = 0;
    const char **known = malloc(((size_t)n + 1) * sizeof *known);
    if (!known)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
    char list[512];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < n; i++) {
        const kd_registry_entry *e = kd_registry_at(reg, i);
        if (e->kind != kind)
            continue;
        known[k++] = e->name;
        if (used < sizeof list)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k > 1 ? ", " : "",
                                     e->name);
    }
    const char *near = kd_closest_word(name, k, known);
    if (near)
        st = kd_error(KD_ERR_INVALID, "%s: no %s named '%s'; did you mean %s?", where,
                      kd_plugin_kind_name(kind), name, near);
    else
        st = kd_error(KD_ERR_INVALID, "%s: no %s named '%s'; installed: %s", where,
                      kd_plugin_kind_name(kind), name, k ? list : "none");
    free(known);
    return st;
}

static kd_status provider_params(const kd_registry *reg, kd_plugin_kind kind, const json_t *obj,
                                 const char *key, const char *path, int n_host,
                                 const char *const *host, const kd_registry_entry **entry,
                                 kd_params **params)
{
    kd_status st = need_object(obj, path);
    if (st == KD_OK)
        st = find_provider(reg, kind, obj, key, path, entry);
    if (st == KD_OK)
        st = kd_params_build(*entry, obj, path, n_host, host, params);
    return st;
}

/* ---------------------------------------------------------------- sections */

/* split.key: an array of {"name": provider, ...params} of one kind. */
static kd_status parse_transforms(const kd_job *job, const json_t *split, const char *path,
                                  const char *key, kd_plugin_kind kind, int *n_out,
                                  const kd_registry_entry ***entries, kd_params ***params)
{
    const json_t *tr = json_object_get(split, key);
    if (!tr || json_is_null(tr))
        return KD_OK;
    if (!json_is_array(tr))
        return kd_error(KD_ERR_INVALID, "%s.%s: expected an array", path, key);
    size_t n = json_array_size(tr);
    *entries = calloc(n + 1, sizeof **entries);
    *params = calloc(n + 1, sizeof **params);
    if (!*entries || !*params)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    *n_out = (int)n;
    kd_status st = KD_OK;
    for (size_t i = 0; i < n && st == KD_OK; i++) {
        char where[96];
        snprintf(where, sizeof where, "%s.%s[%zu]", path, key, i);
        st = provider_params(job->registry, kind, json_array_get(tr, i), "name", where,
                             COUNT(name_keys), name_keys, &(*entries)[i], &(*params)[i]);
    }
    return st;
}

/* data.train.unlabeled: a dataset object like data.train.dataset, whose
 * samples join the epoch without labels (SSLD). */
static kd_status parse_unlabeled(const kd_job *job, const json_t *split, const char *path,
                                 kd_job_data *out)
{
    const json_t *pool = json_object_get(split, "unlabeled");
    if (!pool || json_is_null(pool))
        return KD_OK;
    char where[64];
    snprintf(where, sizeof where, "%s.unlabeled", path);
    if (strcmp(path, "data.train") != 0)
        return kd_error(KD_ERR_INVALID, "%s: only data.train takes unlabeled samples", where);
    if (out->subset)
        return kd_error(KD_ERR_INVALID, "%s: cannot be combined with %s.subset (the subset "
                        "would cut the pool off; list the samples wanted instead)", where, path);
    if (out->n_batch_transforms)
        return kd_error(KD_ERR_INVALID, "%s: cannot be combined with %s.batch_transforms "
                        "(mixup and cutmix mix labels; unlabeled samples have none)", where,
                        path);
    return provider_params(job->registry, KD_KIND_DATASET, pool, "name", where,
                           COUNT(name_keys), name_keys, &out->unlabeled,
                           &out->unlabeled_params);
}

/* A data split at `path` (a static string); train: it may mix batches and
 * its defaults are training's. */
static kd_status parse_split_object(const kd_job *job, const json_t *split, const char *path,
                                    bool train, kd_job_data *out)
{
    out->path = path;
    if (!split || json_is_null(split))
        return KD_OK;
    out->present = true;
    kd_status st = need_object(split, path);
    if (st == KD_OK)
        st = check_keys(split, path, COUNT(split_keys), split_keys);
    char where[64];
    snprintf(where, sizeof where, "%s.dataset", path);
    const json_t *ds = json_object_get(split, "dataset");
    if (st == KD_OK && !ds)
        st = kd_error(KD_ERR_INVALID, "%s: missing", where);
    if (st == KD_OK)
        st = provider_params(job->registry, KD_KIND_DATASET, ds, "name", where,
                             COUNT(name_keys), name_keys, &out->dataset, &out->dataset_params);
    if (st == KD_OK)
        st = parse_transforms(job, split, path, "transforms", KD_KIND_TRANSFORM,
                              &out->n_transforms, &out->transforms, &out->transform_params);
    if (st == KD_OK && !train && json_object_get(split, "batch_transforms"))
        st = kd_error(KD_ERR_INVALID, "%s.batch_transforms: only data.train mixes batches",
                      path);
    if (st == KD_OK)
        st = parse_transforms(job, split, path, "batch_transforms", KD_KIND_BATCH_TRANSFORM,
                              &out->n_batch_transforms, &out->batch_transforms,
                              &out->batch_transform_params);
    if (st == KD_OK)
        st = get_integer(split, "batch_size", path, train ? 128 : 256, 1, 1 << 20,
                         &out->batch_size);
    int64_t v;
    if (st == KD_OK && (st = get_integer(split, "workers", path, -1, 0, 64, &v)) == KD_OK)
        out->workers = (int)v;
    if (st == KD_OK && (st = get_integer(split, "prefetch", path, 4, 1, 64, &v)) == KD_OK)
        out->prefetch = (int)v;
    if (st == KD_OK)
        st = get_integer(split, "subset", path, 0, 0, INT64_MAX / 2, &out->subset);
    if (st == KD_OK)
        st = get_bool(split, "shuffle", path, train, &out->shuffle);
    if (st == KD_OK)
        st = get_bool(split, "drop_last", path, train, &out->drop_last);
    if (st == KD_OK)
        st = parse_unlabeled(job, split, path, out);
    return st;
}

static kd_status parse_split(kd_job *job, const json_t *data, const char *name,
                             kd_job_data *out)
{
    bool train = name[0] == 't';
    return parse_split_object(job, json_object_get(data, name),
                              train ? "data.train" : "data.val", train, out);
}

kd_status kd_job_parse_split(const kd_job *job, const json_t *split, const char *path,
                             kd_job_data *out)
{
    *out = (kd_job_data){0};
    kd_status st = parse_split_object(job, split, path, false, out);
    if (st == KD_OK && !out->present)
        st = kd_error(KD_ERR_INVALID, "%s: missing", path);
    if (st != KD_OK)
        kd_job_free_split(out);
    return st;
}

/* A model object at `path`: its provider and parameters, "weights", and
 * for a teacher "train_bn" (n_host/host: the object's host keys). */
static kd_status parse_model_object(kd_job *job, const json_t *obj, const char *path,
                                    bool teacher, int n_host, const char *const *host,
                                    kd_job_model *out)
{
    out->path = path;
    out->present = true;
    kd_status st = provider_params(job->registry, KD_KIND_MODEL, obj, "model", out->path,
                                   n_host, host, &out->entry, &out->params);
    if (st == KD_OK)
        st = get_string(obj, "weights", out->path, &out->weights);
    if (st == KD_OK) {
        char where[64];
        snprintf(where, sizeof where, "%s.weights", out->path);
        st = out->weights ? kd_check_readable(where, out->weights) : KD_OK;
    }
    if (st == KD_OK && teacher)
        st = get_bool(obj, "train_bn", out->path, false, &out->train_bn);
    if (st == KD_OK && !teacher)
        st = get_bool(obj, "sync_bn", out->path, false, &out->sync_bn);
    if (st == KD_OK && teacher && !out->weights)
        st = kd_error(KD_ERR_INVALID, "%s.weights: missing (a teacher must be trained: "
                      "run a job without a teacher to make one)", out->path);
    return st;
}

static kd_status parse_model(kd_job *job, const char *path, bool teacher, kd_job_model *out)
{
    const json_t *obj = json_object_get(job->root, path);
    out->path = path;
    if (!obj || json_is_null(obj))
        return teacher ? KD_OK : kd_error(KD_ERR_INVALID, "student: missing (the model to train)");
    return parse_model_object(job, obj, path, teacher,
                              teacher ? COUNT(teacher_keys) : COUNT(student_keys),
                              teacher ? teacher_keys : student_keys, out);
}

/* ---------------------------------------------------------------- teachers */

/* "input_size": H (square) or [H, W]; absent or null: 0 x 0 (the data's). */
static kd_status parse_input_size(const json_t *obj, const char *path, int *h, int *w)
{
    const json_t *v = json_object_get(obj, "input_size");
    *h = *w = 0;
    if (!v || json_is_null(v))
        return KD_OK;
    json_int_t hw[2];
    bool ok = false;
    if (json_is_integer(v)) {
        hw[0] = hw[1] = json_integer_value(v);
        ok = true;
    } else if (json_is_array(v) && json_array_size(v) == 2 &&
               json_is_integer(json_array_get(v, 0)) && json_is_integer(json_array_get(v, 1))) {
        hw[0] = json_integer_value(json_array_get(v, 0));
        hw[1] = json_integer_value(json_array_get(v, 1));
        ok = true;
    }
    if (!ok || hw[0] < 1 || hw[1] < 1 || hw[0] > 65536 || hw[1] > 65536)
        return kd_error(KD_ERR_INVALID, "%s.input_size: expected a size (e.g. 224) or [H, W] of "
                        "integers in [1, 65536]", path);
    *h = (int)hw[0];
    *w = (int)hw[1];
    return KD_OK;
}

/* "normalize": {"mean": [...], "std": [...]}, one number per channel each. */
static kd_status parse_normalize(const json_t *obj, const char *path, kd_job_teacher *t)
{
    const json_t *v = json_object_get(obj, "normalize");
    t->n_norm = 0;
    if (!v || json_is_null(v))
        return KD_OK;
    char where[64];
    snprintf(where, sizeof where, "%s.normalize", path);
    kd_status st = need_object(v, where);
    if (st == KD_OK)
        st = check_keys(v, where, COUNT(normalize_keys), normalize_keys);
    const json_t *mean = json_object_get(v, "mean"), *std = json_object_get(v, "std");
    size_t n = json_array_size(mean);
    if (st == KD_OK && (!json_is_array(mean) || n < 1 || n > KD_JOB_MAX_CHANNELS))
        st = kd_error(KD_ERR_INVALID, "%s.mean: expected 1 to %d numbers, one per channel", where,
                      KD_JOB_MAX_CHANNELS);
    if (st == KD_OK && (!json_is_array(std) || json_array_size(std) != n))
        st = kd_error(KD_ERR_INVALID, "%s.std: expected %zu numbers, as many as mean", where, n);
    for (size_t c = 0; st == KD_OK && c < n; c++) {
        const json_t *m = json_array_get(mean, c), *s = json_array_get(std, c);
        if (!json_is_number(m) || !isfinite(json_number_value(m)))
            st = kd_error(KD_ERR_INVALID, "%s.mean[%zu]: expected a number", where, c);
        else if (!json_is_number(s) || !isfinite(json_number_value(s)) ||
                 json_number_value(s) == 0)
            st = kd_error(KD_ERR_INVALID, "%s.std[%zu]: expected a nonzero number", where, c);
        else {
            t->mean[c] = json_number_value(m);
            t->std[c] = json_number_value(s);
        }
    }
    if (st == KD_OK)
        t->n_norm = (int)n;
    return st;
}

static int find_teacher(const kd_job *job, const char *name)
{
    for (int i = 0; i < job->n_teachers; i++)
        if (job->teachers[i].name && !strcmp(job->teachers[i].name, name))
            return i;
    return -1;
}

/* "a, b, c": the teachers' names, for messages. */
static void teacher_names(const kd_job *job, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < job->n_teachers && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                 job->teachers[i].name);
}

/* An ensemble's members: names of model teachers of the list, each once. */
static kd_status parse_ensemble(kd_job *job, const json_t *list, kd_job_teacher *t)
{
    const json_t *names = json_object_get(json_array_get(list, (size_t)(t - job->teachers)),
                                          "ensemble");
    size_t n = json_array_size(names);
    if (!json_is_array(names) || n < 2 || n > KD_JOB_MAX_TEACHERS)
        return kd_error(KD_ERR_INVALID, "%s.ensemble: expected the names of 2 to %d teachers "
                        "whose logits it averages", t->path, KD_JOB_MAX_TEACHERS);
    char all[512];
    teacher_names(job, all, sizeof all);
    for (size_t k = 0; k < n; k++) {
        const char *name = json_string_value(json_array_get(names, k));
        if (!name)
            return kd_error(KD_ERR_INVALID, "%s.ensemble[%zu]: expected a teacher's name",
                            t->path, k);
        int m = find_teacher(job, name);
        if (m < 0)
            return kd_error(KD_ERR_INVALID, "%s.ensemble[%zu]: no teacher named '%s' (the job's "
                            "teachers: %s)", t->path, k, name, all);
        if (!job->teachers[m].model.present)
            return kd_error(KD_ERR_INVALID, "%s.ensemble[%zu]: '%s' is an ensemble itself (an "
                            "ensemble averages model teachers)", t->path, k, name);
        for (int j = 0; j < t->n_members; j++)
            if (t->members[j] == m)
                return kd_error(KD_ERR_INVALID, "%s.ensemble[%zu]: '%s' is listed twice",
                                t->path, k, name);
        t->members[t->n_members++] = m;
    }
    return KD_OK;
}

/* One entry of "teachers": its name (unique), then a model or an ensemble
 * (whose members are resolved once every name is known). */
static kd_status parse_teacher_entry(kd_job *job, const json_t *obj, kd_job_teacher *t)
{
    kd_status st = need_object(obj, t->path);
    const char *name = NULL;
    if (st == KD_OK)
        st = get_string(obj, "name", t->path, &name);
    if (st == KD_OK && !name)
        st = kd_error(KD_ERR_INVALID, "%s.name: missing (losses name the teacher they read)",
                      t->path);
    int other = st == KD_OK ? find_teacher(job, name) : -1;
    if (other >= 0)
        st = kd_error(KD_ERR_INVALID, "%s.name: '%s' is %s's name too (names must differ)",
                      t->path, name, job->teachers[other].path);
    t->name = name;
    if (st == KD_OK && json_object_get(obj, "ensemble"))
        return check_keys(obj, t->path, COUNT(ensemble_keys), ensemble_keys);
    if (st == KD_OK)
        st = parse_model_object(job, obj, t->path, true, COUNT(teachers_keys), teachers_keys,
                                &t->model);
    return st;
}

/* "teacher" (one, named "teacher") or "teachers" (several), then
 * job->teacher: the first model teacher. */
static kd_status parse_teachers(kd_job *job)
{
    const json_t *one = json_object_get(job->root, "teacher");
    const json_t *list = json_object_get(job->root, "teachers");
    bool has_one = one && !json_is_null(one), has_list = list && !json_is_null(list);
    if (has_one && has_list)
        return kd_error(KD_ERR_INVALID, "teachers: the job has \"teacher\" too (give one "
                        "teacher as \"teacher\" or several as \"teachers\", not both)");
    if (!has_one && !has_list)
        return KD_OK;
    size_t n = has_one ? 1 : json_array_size(list);
    if (has_list && (!json_is_array(list) || n < 1 || n > KD_JOB_MAX_TEACHERS))
        return kd_error(KD_ERR_INVALID, "teachers: expected an array of 1 to %d teachers "
                        "({\"name\": ..., \"model\": ...})", KD_JOB_MAX_TEACHERS);
    job->teachers = calloc(n, sizeof *job->teachers);
    if (!job->teachers)
        return kd_error(KD_ERR_NOMEM, "teachers: out of memory");
    kd_status st = KD_OK;
    for (size_t i = 0; st == KD_OK && i < n; i++, job->n_teachers++) {
        kd_job_teacher *t = &job->teachers[i];
        const json_t *obj = has_one ? one : json_array_get(list, i);
        if (has_one) {
            snprintf(t->path, sizeof t->path, "teacher");
            t->name = "teacher";
            st = parse_model(job, "teacher", true, &t->model);
            t->model.path = t->path;
        } else {
            snprintf(t->path, sizeof t->path, "teachers[%d]", (int)i);
            st = parse_teacher_entry(job, obj, t);
        }
        if (st == KD_OK && t->model.present)
            st = parse_input_size(obj, t->path, &t->input_h, &t->input_w);
        if (st == KD_OK && t->model.present)
            st = parse_normalize(obj, t->path, t);
    }
    for (int i = 0; st == KD_OK && i < job->n_teachers; i++)
        if (!job->teachers[i].model.present)
            st = parse_ensemble(job, list, &job->teachers[i]);
    for (int i = 0; st == KD_OK && i < job->n_teachers && !job->teacher.present; i++)
        if (job->teachers[i].model.present)
            job->teacher = job->teachers[i].model;
    return st;
}

/* A loss's "teacher": the name of one of the job's teachers. */
static kd_status parse_loss_teacher(const kd_job *job, const json_t *obj, kd_job_loss *l)
{
    const char *name;
    l->teacher = -1;
    kd_status st = get_string(obj, "teacher", l->path, &name);
    if (st != KD_OK || !name)
        return st;
    if (job->n_teachers == 0)
        return kd_error(KD_ERR_INVALID, "%s.teacher: '%s', but the job has no teacher",
                        l->path, name);
    l->teacher = find_teacher(job, name);
    if (l->teacher >= 0)
        return KD_OK;
    char all[512];
    teacher_names(job, all, sizeof all);
    return kd_error(KD_ERR_INVALID, "%s.teacher: no teacher named '%s' (the job's teachers: "
                    "%s)", l->path, name, all);
}

kd_status kd_job_one_teacher(const kd_job *job, const char *command)
{
    if (job->n_teachers <= 1)
        return KD_OK;
    char all[512];
    teacher_names(job, all, sizeof all);
    return kd_error(KD_ERR_INVALID, "teachers: %s takes one teacher, and the job has %d (%s); "
                    "keep the one to use, as \"teacher\"", command, job->n_teachers, all);
}

static kd_status parse_losses(kd_job *job)
{
    const json_t *list = json_object_get(job->root, "losses");
    if (!list || json_is_null(list))
        return kd_error(KD_ERR_INVALID, "losses: missing (e.g. [{\"name\": \"ce\"}])");
    if (!json_is_array(list) || json_array_size(list) == 0)
        return kd_error(KD_ERR_INVALID, "losses: expected a non-empty array");
    if (json_array_size(list) > KD_JOB_MAX_LOSSES)
        return kd_error(KD_ERR_INVALID, "losses: %zu losses; a job takes at most %d",
                        json_array_size(list), KD_JOB_MAX_LOSSES);
    size_t n = json_array_size(list);
    job->losses = calloc(n, sizeof *job->losses);
    if (!job->losses)
        return kd_error(KD_ERR_NOMEM, "losses: out of memory");
    job->n_losses = (int)n;
    for (size_t i = 0; i < n; i++) {
        kd_job_loss *l = &job->losses[i];
        snprintf(l->path, sizeof l->path, "losses[%zu]", i);
        const json_t *obj = json_array_get(list, i);
        kd_status st = provider_params(job->registry, KD_KIND_LOSS, obj, "name", l->path,
                                       COUNT(loss_keys), loss_keys, &l->entry, &l->params);
        if (st == KD_OK)
            st = get_number(obj, "weight", l->path, 1.0, 0.0, &l->weight);
        if (st == KD_OK)
            st = get_number(obj, "weight_warmup_epochs", l->path, 0.0, 0.0,
                            &l->weight_warmup_epochs);
        if (st == KD_OK)
            st = parse_loss_teacher(job, obj, l);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

static kd_status parse_section(const json_t *root, const char *key, int n,
                               const char *const *known, const json_t **out)
{
    *out = json_object_get(root, key);
    if (!*out || json_is_null(*out)) {
        *out = NULL;
        return KD_OK;
    }
    kd_status st = need_object(*out, key);
    return st == KD_OK ? check_keys(*out, key, n, known) : st;
}

/* "ema": timm's ModelEmaV3 options; absent or null: no EMA. */
static kd_status parse_ema(const json_t *root, kd_job_ema *e)
{
    const json_t *obj;
    kd_status st = parse_section(root, "ema", COUNT(ema_keys), ema_keys, &obj);
    e->present = obj != NULL;
    if (st == KD_OK)
        st = get_number(obj, "decay", "ema", 0.9998, 0.0, &e->decay);
    if (st == KD_OK)
        st = get_number(obj, "min_decay", "ema", 0.0, 0.0, &e->min_decay);
    if (st == KD_OK && (e->decay > 1 || e->min_decay > e->decay))
        st = kd_error(KD_ERR_INVALID, "ema: decay %g and min_decay %g must satisfy "
                      "0 <= min_decay <= decay <= 1", e->decay, e->min_decay);
    if (st == KD_OK)
        st = get_integer(obj, "update_after_step", "ema", 0, 0, INT64_MAX,
                         &e->update_after_step);
    if (st == KD_OK)
        st = get_bool(obj, "warmup", "ema", false, &e->warmup);
    if (st == KD_OK)
        st = get_number(obj, "warmup_gamma", "ema", 1.0, 1e-12, &e->warmup_gamma);
    if (st == KD_OK)
        st = get_number(obj, "warmup_power", "ema", 2.0 / 3.0, 1e-12, &e->warmup_power);
    if (st == KD_OK)
        st = get_bool(obj, "exclude_buffers", "ema", false, &e->exclude_buffers);
    return st;
}

static kd_status parse_job(kd_job *job)
{
    const json_t *root = job->root;
    kd_status st = need_object(root, "the job");
    if (st == KD_OK)
        st = check_keys(root, "", COUNT(top_keys), top_keys);
    int64_t v;
    if (st == KD_OK && (st = get_integer(root, "seed", "", 0, 0, INT64_MAX, &v)) == KD_OK)
        job->seed = (uint64_t)v;
    if (st == KD_OK && (st = get_integer(root, "threads", "", 0, 0, 1024, &v)) == KD_OK)
        job->threads = (int)v;
    const char *dtype = NULL;
    if (st == KD_OK)
        st = get_string(root, "dtype", "", &dtype);
    job->dtype = KD_F32;
    if (st == KD_OK && dtype && !strcmp(dtype, "float64"))
        job->dtype = KD_F64;
    else if (st == KD_OK && dtype && strcmp(dtype, "float32") != 0)
        st = kd_error(KD_ERR_INVALID, "dtype: '%s' is not float32 or float64", dtype);
    if (st == KD_OK)
        st = get_string(root, "output", "", &job->output);
    if (st == KD_OK && !job->output)
        job->output = "runs/latest";

    const json_t *data = NULL;
    if (st == KD_OK)
        st = parse_section(root, "data", COUNT(data_keys), data_keys, &data);
    if (st == KD_OK && !data)
        st = kd_error(KD_ERR_INVALID, "data: missing (data.train and data.val)");
    if (st == KD_OK)
        st = parse_split(job, data, "train", &job->train);
    if (st == KD_OK && !job->train.present)
        st = kd_error(KD_ERR_INVALID, "data.train: missing");
    if (st == KD_OK)
        st = parse_split(job, data, "val", &job->val);
    if (st == KD_OK)
        st = parse_teachers(job);
    if (st == KD_OK)
        st = parse_model(job, "student", false, &job->student);
    if (st == KD_OK)
        st = parse_losses(job);

    const json_t *obj = json_object_get(root, "optim");
    if (st == KD_OK && !obj)
        st = kd_error(KD_ERR_INVALID, "optim: missing (e.g. {\"name\": \"sgd\", \"lr\": 0.1})");
    if (st == KD_OK)
        st = provider_params(job->registry, KD_KIND_OPTIMIZER, obj, "name", "optim",
                             COUNT(optim_keys), optim_keys, &job->optim, &job->optim_params);
    if (st == KD_OK && !json_object_get(obj, "lr"))
        st = kd_error(KD_ERR_INVALID, "optim.lr: missing (the base learning rate)");
    if (st == KD_OK)
        st = get_number(obj, "lr", "optim", 0.0, 0.0, &job->lr);
    if (st == KD_OK)
        st = get_number(obj, "clip_grad_norm", "optim", 0.0, 0.0, &job->clip_grad_norm);
    if (st == KD_OK)
        st = get_number(obj, "clip_grad_value", "optim", 0.0, 0.0, &job->clip_grad_value);
    if (st == KD_OK && job->clip_grad_norm > 0 && job->clip_grad_value > 0)
        st = kd_error(KD_ERR_INVALID, "optim.clip_grad_value: %g, but optim.clip_grad_norm is "
                      "%g too (clip by one of them)", job->clip_grad_value, job->clip_grad_norm);
    if (st == KD_OK)
        st = get_integer(obj, "accumulate_steps", "optim", 1, 1, 1000000, &job->accumulate_steps);
    if (st == KD_OK)
        st = get_number(obj, "layer_decay", "optim", 0.0, 0.0, &job->layer_decay);
    if (st == KD_OK && job->layer_decay > 1)
        st = kd_error(KD_ERR_INVALID, "optim.layer_decay: %g is more than 1 (timm's layer "
                      "decay shrinks the lr of lower layers; 0 turns it off)", job->layer_decay);

    obj = json_object_get(root, "schedule");
    if (st == KD_OK && !obj)
        st = kd_error(KD_ERR_INVALID,
                      "schedule: missing (e.g. {\"name\": \"cosine\", \"epochs\": 30})");
    if (st == KD_OK)
        st = provider_params(job->registry, KD_KIND_SCHEDULER, obj, "name", "schedule",
                             COUNT(schedule_keys), schedule_keys, &job->schedule,
                             &job->schedule_params);
    if (st == KD_OK && !json_object_get(obj, "epochs"))
        st = kd_error(KD_ERR_INVALID, "schedule.epochs: missing (how long to train)");
    if (st == KD_OK)
        st = get_integer(obj, "epochs", "schedule", 0, 1, 1000000, &job->epochs);

    if (st == KD_OK)
        st = parse_section(root, "eval", COUNT(eval_keys), eval_keys, &obj);
    if (st == KD_OK)
        st = get_integer(obj, "every_epochs", "eval", 1, 0, 1000000, &job->eval_every);
    if (st == KD_OK)
        st = parse_section(root, "checkpoint", COUNT(checkpoint_keys), checkpoint_keys, &obj);
    if (st == KD_OK)
        st = get_integer(obj, "every_epochs", "checkpoint", 1, 1, 1000000,
                         &job->checkpoint_every);
    if (st == KD_OK)
        st = get_integer(obj, "keep", "checkpoint", 2, 1, 1000, &job->checkpoint_keep);
    if (st == KD_OK)
        st = parse_section(root, "log", COUNT(log_keys), log_keys, &obj);
    if (st == KD_OK)
        st = get_integer(obj, "every_steps", "log", 50, 1, 1000000000, &job->log_every);
    if (st == KD_OK)
        st = parse_ema(root, &job->ema);
    if (st == KD_OK && job->eval_every > 0 && !job->val.present)
        st = kd_error(KD_ERR_INVALID, "eval.every_epochs: %lld, but there is no data.val "
                      "(add one, or set eval.every_epochs to 0)",
                      (long long)job->eval_every);
    return st;
}

/* ---------------------------------------------------------------- output */

kd_status kd_job_check_output(const kd_job *job)
{
    char path[4096], probe[4200];
    if (snprintf(path, sizeof path, "%s", job->output) >= (int)sizeof path)
        return kd_error(KD_ERR_INVALID, "output: path too long");
    /* the deepest part of the path that exists must be a folder we can
     * write into: probe it with a file (or folder) made and removed */
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    while (!exists) {
        char *slash = strrchr(path, '/');
        if (!slash) {
            snprintf(path, sizeof path, ".");
        } else if (slash == path) {
            path[1] = '\0';
        } else {
            *slash = '\0';
        }
        exists = stat(path, &sb) == 0;
    }
    if (!S_ISDIR(sb.st_mode))
        return kd_error(KD_ERR_INVALID, "output: '%s' cannot hold the run's folder: '%s' is not "
                        "a folder", job->output, path);
    snprintf(probe, sizeof probe, "%s/.kdengine-probe-XXXXXX", path);
    if (!mkdtemp(probe))
        return kd_error(KD_ERR_INVALID, "output: cannot write the run's folder '%s': %s: %s",
                        job->output, path, strerror(errno));
    rmdir(probe);
    return KD_OK;
}

/* ---------------------------------------------------------------- --set */

/* Splits "losses[1].weight" into segments; an index segment is "[1]". */
static kd_status apply_set(json_t *root, const char *set)
{
    const char *eq = strchr(set, '=');
    if (!eq || eq == set)
        return kd_error(KD_ERR_INVALID, "--set %s: expected KEY=VALUE (e.g. "
                        "losses[1].temperature=2)", set);
    char key[512];
    size_t klen = (size_t)(eq - set);
    if (klen >= sizeof key)
        return kd_error(KD_ERR_INVALID, "--set: key too long");
    memcpy(key, set, klen);
    key[klen] = '\0';
    json_error_t jerr;
    json_t *value = json_loads(eq + 1, JSON_DECODE_ANY, &jerr);
    if (!value)
        value = json_string(eq + 1);
    if (!value)
        return kd_error(KD_ERR_NOMEM, "--set %s: out of memory", set);

    json_t *cur = root;
    char *p = key;
    kd_status st = KD_OK;
    while (st == KD_OK) {
        size_t n = strcspn(p, ".[");
        bool index = false;
        long idx = 0;
        char seg[256];
        if (n == 0 && *p == '[') {
            char *end;
            idx = strtol(p + 1, &end, 10);
            if (end == p + 1 || *end != ']' || idx < 0) {
                st = kd_error(KD_ERR_INVALID, "--set %s: bad index in '%s'", set, key);
                break;
            }
            index = true;
            n = (size_t)(end - p + 1);
        } else if (n == 0 || n >= sizeof seg) {
            st = kd_error(KD_ERR_INVALID, "--set %s: bad key '%s'", set, key);
            break;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        p += n;
        if (*p == '.')
            p++;
        bool last = *p == '\0';
        if (index) {
            if (!json_is_array(cur) || (size_t)idx >= json_array_size(cur)) {
                st = kd_error(KD_ERR_INVALID, "--set %s: '%s' has no element %ld", set, key, idx);
                break;
            }
            if (last) {
                json_array_set(cur, (size_t)idx, value);
                break;
            }
            cur = json_array_get(cur, (size_t)idx);
        } else {
            if (!json_is_object(cur)) {
                st = kd_error(KD_ERR_INVALID, "--set %s: '%s' is not an object", set, seg);
                break;
            }
            if (last) {
                json_object_set(cur, seg, value);
                break;
            }
            json_t *next = json_object_get(cur, seg);
            if (!next) {
                next = json_object();
                json_object_set_new(cur, seg, next);
            }
            cur = next;
        }
    }
    json_decref(value);
    return st;
}

/* ---------------------------------------------------------------- load */

static kd_status scan_plugins(kd_job *job)
{
    const json_t *dirs = json_object_get(job->root, "plugin_dirs");
    int n = 0;
    const char *list[64];
    if (dirs && !json_is_null(dirs)) {
        if (!json_is_array(dirs) || json_array_size(dirs) > 64)
            return kd_error(KD_ERR_INVALID, "plugin_dirs: expected an array of up to 64 paths");
        for (size_t i = 0; i < json_array_size(dirs); i++) {
            list[n] = json_string_value(json_array_get(dirs, i));
            if (!list[n])
                return kd_error(KD_ERR_INVALID, "plugin_dirs[%zu]: expected a path", i);
            n++;
        }
    }
    kd_status st = kd_registry_new(&job->registry);
    return st == KD_OK ? kd_registry_scan_default(job->registry, n, list) : st;
}

kd_status kd_job_load(const char *file, int n_sets, const char *const *sets, kd_job **out)
{
    *out = NULL;
    kd_job *job = calloc(1, sizeof *job);
    if (!job || !(job->file = strdup(file))) {
        free(job);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", file);
    }
    json_error_t jerr;
    kd_status st = KD_OK;
    job->root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!job->root) {
        if (access(file, R_OK) != 0)
            st = kd_error(KD_ERR_IO, "%s: %s", file, strerror(errno));
        else
            st = kd_error(KD_ERR_FORMAT, "%s:%d:%d: %s", file, jerr.line, jerr.column, jerr.text);
    }
    for (int i = 0; st == KD_OK && i < n_sets; i++)
        st = apply_set(job->root, sets[i]);
    if (st == KD_OK)
        st = scan_plugins(job);
    if (st == KD_OK)
        st = parse_job(job);
    if (st != KD_OK) {
        if (job->root)
            kd_error_wrap(st, "%s", file);
        kd_job_free(job);
        return st;
    }
    *out = job;
    return KD_OK;
}

kd_status kd_job_one_model(const char *label, json_t *model, kd_dtype dtype, uint64_t seed,
                           int n_dirs, const char *const *dirs, kd_job **out)
{
    *out = NULL;
    kd_job *job = calloc(1, sizeof *job);
    if (!job || !(job->file = strdup(label)) || !(job->root = json_object())) {
        json_decref(model);
        kd_job_free(job);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    }
    job->dtype = dtype;
    job->seed = seed;
    job->output = "";
    kd_status st = json_object_set_new(job->root, "model", model) == 0
                       ? kd_registry_new(&job->registry)
                       : kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    if (st == KD_OK)
        st = kd_registry_scan_default(job->registry, n_dirs, dirs);
    if (st == KD_OK)
        st = parse_model(job, "model", false, &job->student);
    if (st != KD_OK) {
        kd_job_free(job);
        return st;
    }
    *out = job;
    return KD_OK;
}

void kd_job_free_split(kd_job_data *d)
{
    kd_params_free(d->dataset_params);
    kd_params_free(d->unlabeled_params);
    for (int i = 0; i < d->n_transforms; i++)
        kd_params_free(d->transform_params[i]);
    free(d->transforms);
    free(d->transform_params);
    for (int i = 0; i < d->n_batch_transforms; i++)
        kd_params_free(d->batch_transform_params[i]);
    free(d->batch_transforms);
    free(d->batch_transform_params);
    *d = (kd_job_data){0};
}

void kd_job_free(kd_job *job)
{
    if (!job)
        return;
    kd_job_free_split(&job->train);
    kd_job_free_split(&job->val);
    for (int i = 0; i < job->n_teachers; i++)
        kd_params_free(job->teachers[i].model.params);
    free(job->teachers);
    kd_params_free(job->student.params);
    for (int i = 0; i < job->n_losses; i++)
        kd_params_free(job->losses[i].params);
    free(job->losses);
    kd_params_free(job->optim_params);
    kd_params_free(job->schedule_params);
    kd_registry_close(job->registry);
    json_decref(job->root);
    free(job->file);
    free(job);
}

char *kd_job_dump(const kd_job *job)
{
    return json_dumps(job->root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}
