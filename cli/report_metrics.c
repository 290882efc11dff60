/* A run's metrics.jsonl read into named series for the report. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_metrics.h"

static kd_status out_of_memory(const char *path)
{
    return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
}

/* items with room for `need` of them, or NULL (items untouched) when
 * memory runs out. */
static void *room_for(void *items, int *cap, int need, size_t item_size)
{
    if (need <= *cap)
        return items;
    int cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need)
        cap2 *= 2;
    void *grown = realloc(items, (size_t)cap2 * item_size);
    if (grown)
        *cap = cap2;
    return grown;
}

static bool warn(report_metrics *m, const char *path, int64_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool warn(report_metrics *m, const char *path, int64_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int what = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    int head = snprintf(NULL, 0, "%s:%lld: ", path, (long long)line);
    char *text = what >= 0 && head >= 0 ? malloc((size_t)head + (size_t)what + 1) : NULL;
    char **warnings = text ? room_for(m->warnings, &m->cap_warnings, m->n_warnings + 1,
                                      sizeof *warnings) : NULL;
    if (!warnings) {
        free(text);
        return false;
    }
    m->warnings = warnings;
    snprintf(text, (size_t)head + 1, "%s:%lld: ", path, (long long)line);
    va_start(ap, fmt);
    vsnprintf(text + head, (size_t)what + 1, fmt, ap);
    va_end(ap);
    m->warnings[m->n_warnings++] = text;
    return true;
}

/* "prefix.key" in a malloc'd string, or NULL. */
static char *join(const char *prefix, const char *key)
{
    size_t size = strlen(prefix) + strlen(key) + 2;
    char *name = malloc(size);
    if (name)
        snprintf(name, size, "%s.%s", prefix, key);
    return name;
}

static report_series *series_named(report_metrics *m, const char *name)
{
    report_series *found = (report_series *)report_metrics_find(m, name);
    if (found)
        return found;
    report_series *all = room_for(m->series, &m->cap_series, m->n_series + 1, sizeof *all);
    if (!all)
        return NULL;
    m->series = all;
    report_series *s = &m->series[m->n_series];
    *s = (report_series){.name = strdup(name)};
    if (!s->name)
        return NULL;
    m->n_series++;
    return s;
}

static bool add_point(report_metrics *m, const char *name, int64_t step, double value)
{
    report_series *s = series_named(m, name);
    if (!s)
        return false;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        int64_t *steps = realloc(s->steps, (size_t)cap * sizeof *steps);
        if (steps)
            s->steps = steps;
        double *values = steps ? realloc(s->values, (size_t)cap * sizeof *values) : NULL;
        if (!values)
            return false;
        s->values = values;
        s->cap = cap;
    }
    s->steps[s->n] = step;
    s->values[s->n] = value;
    s->n++;
    return true;
}

/* The path (prefix.key...) of the first value under `value` that is not a
 * number, in a malloc'd string, with *why saying what it is; NULL when all
 * are numbers. Checked before any point is added, so a skipped line adds
 * nothing to any series. *oom is set when memory runs out. */
static char *first_unplottable(json_t *value, const char *prefix, const char **why, bool *oom)
{
    if (json_is_number(value))
        return NULL;
    if (!json_is_object(value)) {
        *why = json_is_string(value) ? "a string" : json_is_null(value) ? "null"
               : json_is_array(value) ? "an array" : "a boolean";
        char *where = strdup(prefix);
        *oom = !where;
        return where;
    }
    const char *key;
    json_t *item;
    json_object_foreach(value, key, item) {
        char *path = join(prefix, key);
        char *where = path ? first_unplottable(item, path, why, oom) : NULL;
        *oom = *oom || !path;
        free(path);
        if (where || *oom)
            return where;
    }
    return NULL;
}

static bool add_points(report_metrics *m, json_t *value, const char *name, int64_t step)
{
    if (json_is_number(value))
        return add_point(m, name, step, json_number_value(value));
    const char *key;
    json_t *item;
    json_object_foreach(value, key, item) {
        char *path = join(name, key);
        bool ok = path && add_points(m, item, path, step);
        free(path);
        if (!ok)
            return false;
    }
    return true;
}

/* Fields that place a point rather than being one. */
static bool is_position(const char *key)
{
    return !strcmp(key, "type") || !strcmp(key, "step") || !strcmp(key, "epoch") ||
           !strcmp(key, "samples");
}

/* One parsed line: false only when memory runs out. */
static bool use_line(report_metrics *m, const char *path, int64_t no, json_t *line)
{
    if (!json_is_object(line))
        return warn(m, path, no, "not a JSON object; line skipped");
    const char *type = json_string_value(json_object_get(line, "type"));
    if (!type)
        return warn(m, path, no, "no \"type\" string; line skipped");
    if (!strcmp(type, "summary")) {
        json_decref(m->summary);
        m->summary = json_incref(line);
        return true;
    }
    if (!strcmp(type, "run")) {
        if (!m->run)
            m->run = json_incref(line);
        m->n_starts++;
        return true;
    }
    if (strcmp(type, "train") && strcmp(type, "eval"))
        return warn(m, path, no, "unknown line type \"%s\"; line skipped", type);
    json_t *step = json_object_get(line, "step");
    if (!step)
        return warn(m, path, no, "%s line without \"step\"; line skipped", type);
    if (!json_is_integer(step) || json_integer_value(step) < 0)
        return warn(m, path, no, "\"step\" is not a non-negative integer; line skipped");
    const char *key;
    json_t *value;
    json_object_foreach(line, key, value) {
        const char *why = NULL;
        bool oom = false;
        char *where = is_position(key) ? NULL : first_unplottable(value, key, &why, &oom);
        bool ok = !oom && (!where || warn(m, path, no, "\"%s\" is %s, not a number; line "
                                          "skipped", where, why));
        bool skip = where != NULL;
        free(where);
        if (!ok || skip)
            return ok;
    }
    json_object_foreach(line, key, value) {
        char *name = join(type, key);
        bool ok = name && (is_position(key) || add_points(m, value, name,
                                                          json_integer_value(step)));
        free(name);
        if (!ok)
            return false;
    }
    m->lines_used++;
    return true;
}

kd_status report_metrics_read(const char *path, report_metrics *m)
{
    *m = (report_metrics){0};
    FILE *f = fopen(path, "r");
    if (!f)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t size = 0;
    ssize_t len;
    int64_t no = 0;
    bool ok = true;
    while (ok && (len = getline(&text, &size, f)) >= 0) {
        no++;
        bool complete = len > 0 && text[len - 1] == '\n';
        if (complete)
            text[--len] = '\0';
        if (len == 0) {
            ok = warn(m, path, no, "empty line; skipped");
            continue;
        }
        json_error_t jerr;
        /* a NUL inside the line (a crash's garbage) is an error, not an end */
        json_t *line = json_loadb(text, (size_t)len, 0, &jerr);
        if (!line)
            ok = warn(m, path, no, "not valid JSON (%s at column %d)%s; line skipped", jerr.text,
                      jerr.column, complete ? "" : ", the file's truncated last line");
        else
            ok = use_line(m, path, no, line);
        json_decref(line);
    }
    bool read_error = ferror(f);
    free(text);
    fclose(f);
    if (!ok)
        return out_of_memory(path);
    if (read_error)
        return kd_error(KD_ERR_IO, "%s: read error after line %lld", path, (long long)no);
    return KD_OK;
}

const report_series *report_metrics_find(const report_metrics *m, const char *name)
{
    for (int i = 0; i < m->n_series; i++)
        if (!strcmp(m->series[i].name, name))
            return &m->series[i];
    return NULL;
}

void report_metrics_free(report_metrics *m)
{
    for (int i = 0; i < m->n_series; i++) {
        free(m->series[i].name);
        free(m->series[i].steps);
        free(m->series[i].values);
    }
    free(m->series);
    for (int i = 0; i < m->n_warnings; i++)
        free(m->warnings[i]);
    free(m->warnings);
    json_decref(m->summary);
    json_decref(m->run);
    *m = (report_metrics){0};
}
