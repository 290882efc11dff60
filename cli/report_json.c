/* A JSON value as indented text for people. */
#include <stdio.h>
#include <stdlib.h>

#include "report_json.h"

static void quoted(report_text *out, const char *s)
{
    report_text_append(out, "\"");
    for (const char *run = s;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c != '\0' && c != '"' && c != '\\' && c >= 0x20)
            continue;
        report_text_printf(out, "%.*s", (int)(s - run), run);
        if (c == '\0')
            break;
        if (c == '"' || c == '\\')
            report_text_printf(out, "\\%c", c);
        else
            report_text_printf(out, "\\u%04x", c);
        run = s + 1;
    }
    report_text_append(out, "\"");
}

/* 15 significant digits say what people write; 17 always read back. */
static void real(report_text *out, double v)
{
    char text[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, v);
        if (strtod(text, NULL) == v)
            break;
    }
    report_text_append(out, text);
}

static bool is_container(const json_t *v) { return json_is_object(v) || json_is_array(v); }

static void indent(report_text *out, int depth)
{
    report_text_printf(out, "%*s", 2 * depth, "");
}

static void pretty(report_text *out, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (json_object_size(v) == 0) {
            report_text_append(out, "{}");
            return;
        }
        report_text_append(out, "{\n");
        size_t left = json_object_size(v);
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item) {
            indent(out, depth + 1);
            quoted(out, key);
            report_text_append(out, ": ");
            pretty(out, item, depth + 1);
            report_text_append(out, --left ? ",\n" : "\n");
        }
        indent(out, depth);
        report_text_append(out, "}");
        return;
    }
    case JSON_ARRAY: {
        bool flat = true;
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) flat = flat && !is_container(item);
        report_text_append(out, flat || json_array_size(v) == 0 ? "[" : "[\n");
        json_array_foreach(v, i, item) {
            if (!flat)
                indent(out, depth + 1);
            pretty(out, item, depth + 1);
            bool last = i + 1 == json_array_size(v);
            report_text_append(out, last ? (flat ? "" : "\n") : (flat ? ", " : ",\n"));
        }
        if (!flat && json_array_size(v) > 0)
            indent(out, depth);
        report_text_append(out, "]");
        return;
    }
    case JSON_STRING:
        quoted(out, json_string_value(v));
        return;
    case JSON_INTEGER:
        report_text_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    case JSON_REAL:
        real(out, json_real_value(v));
        return;
    case JSON_TRUE:
        report_text_append(out, "true");
        return;
    case JSON_FALSE:
        report_text_append(out, "false");
        return;
    case JSON_NULL:
        report_text_append(out, "null");
        return;
    }
}

void report_json_pretty(report_text *out, const json_t *value) { pretty(out, value, 0); }
