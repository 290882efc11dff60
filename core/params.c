/* Parameter schemas (sdk/include/kdengine/plugin.h) and the values a job
 * gives a provider: checking both and filling defaults. Host code: the
 * accessors plugins read a built kd_params through are in plugin_api.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "params.h"
#include "registry.h"

/* Above 2^53 a real no longer holds every integer (9007199254740993.0
 * reads as ...992), so an integer parameter takes a real only up to here. */
#define EXACT_INTEGER_LIMIT 9007199254740992.0

/* 2^63: reals from here up do not fit an int64_t. */
#define INT64_REAL_LIMIT 9223372036854775808.0

static const char *const spec_keys[] = {"type",          "default", "min",   "max",
                                        "exclusive_min", "exclusive_max",
                                        "choices",       "items",   "doc",
                                        "file"};
#define N_SPEC_KEYS ((int)(sizeof spec_keys / sizeof spec_keys[0]))

static const char *const type_names[] = {"number", "integer", "boolean", "string",
                                         "array"};
#define N_TYPE_NAMES ((int)(sizeof type_names / sizeof type_names[0]))

/* The kind's word for messages, even for a kind outside the enum. */
static const char *kind_word(kd_plugin_kind kind)
{
    const char *name = kd_plugin_kind_name(kind);
    return name ? name : "provider";
}

/* ---------------------------------------------------------------- closest word */

/* Optimal string alignment distance, case-insensitive, stopping early
 * once every cell of a row exceeds `limit`. */
static int osa_distance(const char *a, const char *b, int limit)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (abs(la - lb) > limit)
        return limit + 1;
    int *rows = malloc(3 * (size_t)(lb + 1) * sizeof *rows);
    if (!rows)
        return limit + 1;
    int *before = rows, *prev = rows + lb + 1, *cur = rows + 2 * (lb + 1);
    for (int j = 0; j <= lb; j++)
        prev[j] = j;
    for (int i = 1; i <= la; i++) {
        int ca = tolower((unsigned char)a[i - 1]);
        int row_min = cur[0] = i;
        for (int j = 1; j <= lb; j++) {
            int cb = tolower((unsigned char)b[j - 1]);
            int best = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && before[j - 2] + 1 < best)
                best = before[j - 2] + 1;
            cur[j] = best;
            if (best < row_min)
                row_min = best;
        }
        if (row_min > limit) {
            free(rows);
            return limit + 1;
        }
        int *spare = before;
        before = prev;
        prev = cur;
        cur = spare;
    }
    int distance = prev[lb];
    free(rows);
    return distance;
}

const char *kd_closest_word(const char *word, int n, const char *const *known)
{
    if (!word || !known)
        return NULL;
    int limit = (int)strlen(word) / 3;
    if (limit < 1)
        limit = 1;
    const char *best = NULL;
    int best_distance = limit + 1;
    for (int i = 0; i < n; i++) {
        if (!known[i])
            continue;
        int d = osa_distance(word, known[i], best_distance - 1);
        if (d < best_distance) {
            best_distance = d;
            best = known[i];
        }
    }
    return best;
}

/* ---------------------------------------------------------------- describing values */

/* Shortest of %.15g / %.17g that reads back as the same double. */
static void format_double(double x, char *buf, size_t size)
{
    snprintf(buf, size, "%.15g", x);
    if (strtod(buf, NULL) != x)
        snprintf(buf, size, "%.17g", x);
}

static void format_number(const json_t *v, char *buf, size_t size)
{
    if (json_is_integer(v))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        format_double(json_number_value(v), buf, size);
}

/* "a string (\"4\")", "an integer (4)", "an array", "null". */
static void describe_value(const json_t *v, char *buf, size_t size)
{
    char shown[48];
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        int cut = (int)json_string_length(v) > 40;
        snprintf(buf, size, "a string (\"%.40s%s\")", s, cut ? "..." : "");
        return;
    }
    case JSON_INTEGER:
        format_number(v, shown, sizeof shown);
        snprintf(buf, size, "an integer (%s)", shown);
        return;
    case JSON_REAL:
        format_number(v, shown, sizeof shown);
        snprintf(buf, size, "a number (%s)", shown);
        return;
    case JSON_TRUE: snprintf(buf, size, "a boolean (true)"); return;
    case JSON_FALSE: snprintf(buf, size, "a boolean (false)"); return;
    case JSON_ARRAY: snprintf(buf, size, "an array"); return;
    case JSON_OBJECT: snprintf(buf, size, "an object"); return;
    case JSON_NULL: snprintf(buf, size, "null"); return;
    }
    snprintf(buf, size, "a JSON value");
}

static const char *type_with_article(const char *type)
{
    if (!strcmp(type, "integer"))
        return "an integer";
    if (!strcmp(type, "array"))
        return "an array";
    if (!strcmp(type, "number"))
        return "a number";
    if (!strcmp(type, "boolean"))
        return "a boolean";
    return "a string";
}

/* ---------------------------------------------------------------- checking one value */

/* -1, 0, 1 as a < b, for two JSON numbers, exact when both are integers
 * and when an integer meets a real beyond 2^53. */
static int compare_numbers(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        return (x > y) - (x < y);
    }
    int sign = json_is_integer(a) ? 1 : -1;
    json_int_t i = json_integer_value(json_is_integer(a) ? a : b);
    double r = json_real_value(json_is_real(a) ? a : b);
    double ri = (double)i;
    int order;
    if (ri != r) {
        order = (ri > r) - (ri < r); /* rounding is monotonic */
    } else {
        /* equal as doubles: r is integral and, being a rounded int64, in range
         * unless it is exactly 2^63 */
        if (r >= INT64_REAL_LIMIT)
            order = -1;
        else {
            json_int_t ir = (json_int_t)r;
            order = (i > ir) - (i < ir);
        }
    }
    return sign * order;
}

static bool choices_contain(const json_t *choices, const json_t *v)
{
    size_t i;
    const json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (json_is_string(v) && json_is_string(c) &&
            !strcmp(json_string_value(v), json_string_value(c)))
            return true;
        if (json_is_number(v) && json_is_number(c) && compare_numbers(v, c) == 0)
            return true;
    }
    return false;
}

static kd_status choices_error(const json_t *choices, const json_t *v, const char *where,
                               const char *what)
{
    char list[512], shown[96];
    size_t used = 0;
    const char *strings[64];
    int n_strings = 0;
    size_t i;
    const json_t *c;
    list[0] = '\0';
    json_array_foreach(choices, i, c)
    {
        char one[64];
        if (json_is_string(c)) {
            snprintf(one, sizeof one, "\"%s\"", json_string_value(c));
            if (n_strings < 64)
                strings[n_strings++] = json_string_value(c);
        } else {
            format_number(c, one, sizeof one);
        }
        if (used < sizeof list) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", one);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    const char *near =
        json_is_string(v) ? kd_closest_word(json_string_value(v), n_strings, strings) : NULL;
    if (json_is_string(v))
        snprintf(shown, sizeof shown, "\"%.80s\"", json_string_value(v));
    else
        format_number(v, shown, sizeof shown);
    if (near)
        return kd_error(KD_ERR_INVALID, "%s: %s%s is not one of %s; did you mean %s?", where,
                        what, shown, list, near);
    return kd_error(KD_ERR_INVALID, "%s: %s%s is not one of %s", where, what, shown, list);
}

/* Checks a scalar against `type` and sets *out to a new reference of the
 * normalised value. `what` is "" or "default " for messages. */
static kd_status check_scalar(const char *type, const json_t *v, const char *where,
                              const char *what, json_t **out)
{
    char got[96];
    const char *lead = *what ? "default: " : "";
    *out = NULL;
    if (!strcmp(type, "number")) {
        if (json_is_number(v)) {
            *out = json_real(json_number_value(v));
            return *out ? KD_OK : kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
        }
    } else if (!strcmp(type, "integer")) {
        if (json_is_integer(v)) {
            *out = json_incref((json_t *)v);
            return KD_OK;
        }
        if (json_is_real(v)) {
            double r = json_real_value(v);
            char shown[48];
            format_double(r, shown, sizeof shown);
            if (r != floor(r))
                return kd_error(KD_ERR_INVALID, "%s: %sexpected an integer, got %s", where,
                                lead, shown);
            if (fabs(r) > EXACT_INTEGER_LIMIT)
                return kd_error(KD_ERR_INVALID,
                                "%s: %sexpected an integer, got %s (a real beyond 2^53 "
                                "is not exact; write it without a fraction or exponent)",
                                where, lead, shown);
            *out = json_integer((json_int_t)r);
            return *out ? KD_OK : kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
        }
    } else if (!strcmp(type, "boolean")) {
        if (json_is_boolean(v)) {
            *out = json_incref((json_t *)v);
            return KD_OK;
        }
    } else if (json_is_string(v)) {
        *out = json_incref((json_t *)v);
        return KD_OK;
    }
    describe_value(v, got, sizeof got);
    return kd_error(KD_ERR_INVALID, "%s: %sexpected %s, got %s", where, lead,
                    type_with_article(type), got);
}

/* The bound checks of a (checked) spec on a normalised number. */
static kd_status check_range(const json_t *spec, const json_t *v, const char *where,
                             const char *what)
{
    const json_t *lo = json_object_get(spec, "min"), *hi = json_object_get(spec, "max");
    bool lo_strict = json_is_true(json_object_get(spec, "exclusive_min"));
    bool hi_strict = json_is_true(json_object_get(spec, "exclusive_max"));
    char shown[48], bound[48];
    format_number(v, shown, sizeof shown);
    if (lo) {
        int c = compare_numbers(v, lo);
        if (c < 0 || (c == 0 && lo_strict)) {
            format_number(lo, bound, sizeof bound);
            return kd_error(KD_ERR_INVALID, "%s: %s%s is below min %s%s", where, what, shown,
                            bound, lo_strict ? " (exclusive)" : "");
        }
    }
    if (hi) {
        int c = compare_numbers(v, hi);
        if (c > 0 || (c == 0 && hi_strict)) {
            format_number(hi, bound, sizeof bound);
            return kd_error(KD_ERR_INVALID, "%s: %s%s is above max %s%s", where, what, shown,
                            bound, hi_strict ? " (exclusive)" : "");
        }
    }
    return KD_OK;
}

/* Checks v against a spec whose own shape is already known good and sets
 * *out to a new reference of the normalised value. */
static kd_status check_value(const json_t *spec, const json_t *v, const char *where,
                             const char *what, json_t **out)
{
    const char *type = json_string_value(json_object_get(spec, "type"));
    *out = NULL;
    if (strcmp(type, "array") != 0) {
        json_t *norm;
        kd_status st = check_scalar(type, v, where, what, &norm);
        if (st != KD_OK)
            return st;
        if (json_is_number(norm))
            st = check_range(spec, norm, where, what);
        const json_t *choices = json_object_get(spec, "choices");
        if (st == KD_OK && choices && !choices_contain(choices, norm))
            st = choices_error(choices, norm, where, what);
        /* a default is not checked here: it may name a file of the
         * machine the job runs on, not the one that reads the manifest */
        if (st == KD_OK && !*what && json_is_true(json_object_get(spec, "file")))
            st = kd_check_readable(where, json_string_value(norm));
        if (st != KD_OK) {
            json_decref(norm);
            return st;
        }
        *out = norm;
        return KD_OK;
    }
    const char *items = json_string_value(json_object_get(spec, "items"));
    if (!json_is_array(v)) {
        /* a lone scalar stands for a one-element array ("size": 28) */
        json_t *norm = NULL;
        if (!json_is_object(v) && !json_is_null(v) &&
            check_scalar(items, v, where, what, &norm) == KD_OK) {
            json_t *one = json_array();
            if (!one || json_array_append_new(one, norm) != 0) {
                json_decref(one);
                return kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
            }
            *out = one;
            return KD_OK;
        }
        char got[96];
        describe_value(v, got, sizeof got);
        return kd_error(KD_ERR_INVALID, "%s: %sexpected an array (or one %s), got %s", where,
                        *what ? "default: " : "", items, got);
    }
    json_t *array = json_array();
    if (!array)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
    size_t i;
    const json_t *element;
    json_array_foreach(v, i, element)
    {
        char element_where[512];
        snprintf(element_where, sizeof element_where, "%s[%zu]", where, i);
        json_t *norm;
        kd_status st = check_scalar(items, element, element_where, what, &norm);
        if (st == KD_OK && json_array_append_new(array, norm) != 0)
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
        if (st != KD_OK) {
            json_decref(array);
            return st;
        }
    }
    *out = array;
    return KD_OK;
}

/* ---------------------------------------------------------------- schemas */

static bool is_type_name(const char *s, bool scalar_only)
{
    for (int i = 0; i < N_TYPE_NAMES; i++)
        if (s && !strcmp(s, type_names[i]))
            return !(scalar_only && !strcmp(s, "array"));
    return false;
}

static kd_status check_spec(const char *key, const json_t *spec, const char *label)
{
    char where[512];
    snprintf(where, sizeof where, "%s.params.%s", label, key);
    if (!*key)
        return kd_error(KD_ERR_FORMAT, "%s.params: a parameter name is empty", label);
    if (!json_is_object(spec))
        return kd_error(KD_ERR_FORMAT, "%s: expected an object (the parameter's spec)", where);

    const char *spec_key;
    const json_t *field;
    json_object_foreach((json_t *)spec, spec_key, field)
    {
        bool known = false;
        for (int i = 0; i < N_SPEC_KEYS && !known; i++)
            known = !strcmp(spec_key, spec_keys[i]);
        if (known)
            continue;
        const char *near = kd_closest_word(spec_key, N_SPEC_KEYS, spec_keys);
        if (near)
            return kd_error(KD_ERR_FORMAT, "%s: unknown spec key '%s'; did you mean %s?", where,
                            spec_key, near);
        return kd_error(KD_ERR_FORMAT,
                        "%s: unknown spec key '%s'; a spec takes: type, default, min, max, "
                        "exclusive_min, exclusive_max, choices, items, doc, file",
                        where, spec_key);
    }

    const json_t *type_value = json_object_get(spec, "type");
    if (!type_value)
        return kd_error(KD_ERR_FORMAT, "%s: missing \"type\"", where);
    const char *type = json_string_value(type_value);
    if (!is_type_name(type, false))
        return kd_error(KD_ERR_FORMAT,
                        "%s: \"type\" must be one of \"number\", \"integer\", \"boolean\", "
                        "\"string\", \"array\"",
                        where);
    bool numeric = !strcmp(type, "number") || !strcmp(type, "integer");

    const json_t *doc = json_object_get(spec, "doc");
    if (!doc)
        return kd_error(KD_ERR_FORMAT, "%s: missing \"doc\" (one line saying what it does)",
                        where);
    if (!json_is_string(doc) || json_string_length(doc) == 0 ||
        strchr(json_string_value(doc), '\n'))
        return kd_error(KD_ERR_FORMAT, "%s: \"doc\" must be one non-empty line", where);

    const json_t *items = json_object_get(spec, "items");
    if (!strcmp(type, "array")) {
        if (!items)
            return kd_error(KD_ERR_FORMAT, "%s: an array needs \"items\" (its element type)",
                            where);
        if (!is_type_name(json_string_value(items), true))
            return kd_error(KD_ERR_FORMAT,
                            "%s: \"items\" must be one of \"number\", \"integer\", "
                            "\"boolean\", \"string\"",
                            where);
    } else if (items) {
        return kd_error(KD_ERR_FORMAT, "%s: \"items\" applies only to type array", where);
    }

    static const char *const bounds[] = {"min", "max"};
    static const char *const stricts[] = {"exclusive_min", "exclusive_max"};
    for (int b = 0; b < 2; b++) {
        const json_t *bound = json_object_get(spec, bounds[b]);
        const json_t *strict = json_object_get(spec, stricts[b]);
        if ((bound || strict) && !numeric)
            return kd_error(KD_ERR_FORMAT, "%s: \"%s\" applies only to types number and integer",
                            where, bound ? bounds[b] : stricts[b]);
        if (bound && !json_is_number(bound))
            return kd_error(KD_ERR_FORMAT, "%s: \"%s\" must be a number", where, bounds[b]);
        if (strict && !json_is_boolean(strict))
            return kd_error(KD_ERR_FORMAT, "%s: \"%s\" must be true or false", where, stricts[b]);
        if (strict && !bound)
            return kd_error(KD_ERR_FORMAT, "%s: \"%s\" without \"%s\"", where, stricts[b],
                            bounds[b]);
    }
    const json_t *lo = json_object_get(spec, "min"), *hi = json_object_get(spec, "max");
    if (lo && hi) {
        int c = compare_numbers(lo, hi);
        bool strict = json_is_true(json_object_get(spec, "exclusive_min")) ||
                      json_is_true(json_object_get(spec, "exclusive_max"));
        if (c > 0 || (c == 0 && strict))
            return kd_error(KD_ERR_FORMAT, "%s: no value fits between \"min\" and \"max\"", where);
    }

    const json_t *file = json_object_get(spec, "file");
    if (file && (!json_is_boolean(file) || strcmp(type, "string") != 0))
        return kd_error(KD_ERR_FORMAT, "%s: \"file\" must be true or false, on a string", where);

    const json_t *choices = json_object_get(spec, "choices");
    if (choices) {
        if (!numeric && strcmp(type, "string") != 0)
            return kd_error(KD_ERR_FORMAT,
                            "%s: \"choices\" applies only to types string, number and integer",
                            where);
        if (!json_is_array(choices) || json_array_size(choices) == 0)
            return kd_error(KD_ERR_FORMAT, "%s: \"choices\" must be a non-empty array", where);
        size_t i;
        const json_t *c;
        json_array_foreach(choices, i, c)
        {
            char choice_where[560];
            snprintf(choice_where, sizeof choice_where, "%s.choices[%zu]", where, i);
            json_t *norm;
            kd_status st = check_scalar(type, c, choice_where, "", &norm);
            if (st != KD_OK)
                return st == KD_ERR_NOMEM ? st : KD_ERR_FORMAT;
            json_decref(norm);
        }
    }

    const json_t *def = json_object_get(spec, "default");
    if (def) {
        json_t *norm;
        kd_status st = check_value(spec, def, where, "default ", &norm);
        if (st != KD_OK)
            return st == KD_ERR_NOMEM ? st : KD_ERR_FORMAT;
        json_decref(norm);
    }
    return KD_OK;
}

kd_status kd_params_check_schema(const json_t *schema, const char *label)
{
    if (!label)
        label = "params";
    if (!schema)
        return KD_OK;
    if (!json_is_object(schema))
        return kd_error(KD_ERR_FORMAT, "%s.params: expected an object of parameter specs", label);
    const char *key;
    const json_t *spec;
    json_object_foreach((json_t *)schema, key, spec)
    {
        kd_status st = check_spec(key, spec, label);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

kd_status kd_check_readable(const char *where, const char *path)
{
    if (access(path, R_OK) != 0)
        return kd_error(KD_ERR_INVALID, "%s: cannot read file '%s': %s", where, path,
                        strerror(errno));
    return KD_OK;
}

/* ---------------------------------------------------------------- building */

static bool in_list(const char *key, int n, const char *const *list)
{
    for (int i = 0; i < n; i++)
        if (list[i] && !strcmp(key, list[i]))
            return true;
    return false;
}

static kd_status unknown_key_error(const kd_registry_entry *entry, const char *where,
                                   const char *key, int n_ignore, const char *const *ignore)
{
    const json_t *schema = entry->params;
    size_t n_known = json_object_size(schema);
    const char **known = malloc((n_known + (size_t)n_ignore + 1) * sizeof *known);
    if (!known)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
    int n = 0;
    const char *k;
    const json_t *spec;
    json_object_foreach((json_t *)schema, k, spec)
    {
        (void)spec;
        known[n++] = k;
    }
    /* a misspelt job key ("wieght") is worth suggesting too */
    for (int i = 0; i < n_ignore; i++)
        known[n + i] = ignore[i];
    const char *near = kd_closest_word(key, n + n_ignore, known);
    const char *kind = kind_word(entry->kind);
    kd_status st;
    if (near) {
        st = kd_error(KD_ERR_INVALID, "%s: unknown parameter of %s '%s'; did you mean %s?", where,
                      kind, entry->name, near);
    } else if (n == 0) {
        st = kd_error(KD_ERR_INVALID, "%s: unknown parameter of %s '%s'; it takes none", where,
                      kind, entry->name);
    } else {
        char list[512];
        size_t used = 0;
        list[0] = '\0';
        for (int i = 0; i < n && used < sizeof list; i++) {
            int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", known[i]);
            used += w > 0 ? (size_t)w : 0;
        }
        st = kd_error(KD_ERR_INVALID, "%s: unknown parameter of %s '%s'; it takes: %s", where,
                      kind, entry->name, list);
    }
    free(known);
    return st;
}

static void key_path(const char *path, const char *key, char *buf, size_t size)
{
    if (path && *path)
        snprintf(buf, size, "%s.%s", path, key);
    else
        snprintf(buf, size, "%s", key);
}

kd_status kd_params_build(const kd_registry_entry *entry, const json_t *value,
                          const char *path, int n_ignore, const char *const *ignore,
                          kd_params **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "kd_params_build: NULL out");
    *out = NULL;
    if (!entry)
        return kd_error(KD_ERR_INVALID, "kd_params_build: NULL entry");
    if (n_ignore < 0 || (n_ignore > 0 && !ignore))
        return kd_error(KD_ERR_INVALID, "kd_params_build: bad ignore list");
    const char *name = entry->name ? entry->name : "?";
    const char *kind = kind_word(entry->kind);
    const char *shown_path = path && *path ? path : "parameters";
    if (value && !json_is_object(value)) {
        char got[96];
        describe_value(value, got, sizeof got);
        return kd_error(KD_ERR_INVALID, "%s: expected an object (the %s '%s'), got %s",
                        shown_path, kind, name, got);
    }
    if (entry->params && !json_is_object(entry->params))
        return kd_error(KD_ERR_FORMAT, "%s '%s': its schema is not an object", kind, name);

    json_t *values = json_object();
    if (!values)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", shown_path);
    kd_status st = KD_OK;
    const char *key;
    const json_t *given;
    if (value) {
        json_object_foreach((json_t *)value, key, given)
        {
            if (in_list(key, n_ignore, ignore))
                continue;
            char where[512];
            key_path(path, key, where, sizeof where);
            const json_t *spec = json_object_get(entry->params, key);
            if (!spec) {
                st = unknown_key_error(entry, where, key, n_ignore, ignore);
                break;
            }
            json_t *norm;
            st = check_value(spec, given, where, "", &norm);
            if (st != KD_OK)
                break;
            if (json_object_set_new(values, key, norm) != 0) {
                st = kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
                break;
            }
        }
    }
    const json_t *spec;
    if (st == KD_OK && entry->params) {
        json_object_foreach((json_t *)entry->params, key, spec)
        {
            if (json_object_get(values, key))
                continue;
            const json_t *def = json_object_get(spec, "default");
            if (!def) {
                st = path && *path
                         ? kd_error(KD_ERR_INVALID,
                                    "%s: missing required parameter '%s' of %s '%s'", path, key,
                                    kind, name)
                         : kd_error(KD_ERR_INVALID, "missing required parameter '%s' of %s '%s'",
                                    key, kind, name);
                break;
            }
            char where[512];
            key_path(path, key, where, sizeof where);
            json_t *norm;
            /* schemas are checked when read, so a default always fits; this
             * only normalises it */
            st = check_value(spec, def, where, "default ", &norm);
            if (st != KD_OK)
                break;
            if (json_object_set_new(values, key, norm) != 0) {
                st = kd_error(KD_ERR_NOMEM, "%s: out of memory", where);
                break;
            }
        }
    }
    if (st != KD_OK) {
        json_decref(values);
        return st;
    }
    kd_params *p = malloc(sizeof *p);
    if (!p) {
        json_decref(values);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", shown_path);
    }
    p->values = values;
    *out = p;
    return KD_OK;
}

void kd_params_free(kd_params *p)
{
    if (!p)
        return;
    json_decref(p->values);
    free(p);
}
