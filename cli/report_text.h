/* A growing text buffer for the report's HTML and SVG.
 *
 * Appends never fail loudly: a failed allocation marks the buffer as
 * failed and later appends do nothing, so the writer checks once, at the
 * end (like ferror on a FILE). */
#ifndef KD_CLI_REPORT_TEXT_H
#define KD_CLI_REPORT_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct report_text {
    char *data; /* NUL-terminated; owned, free with report_text_free */
    size_t len, cap;
    bool failed; /* an allocation failed: the text is incomplete */
} report_text;

void report_text_append(report_text *t, const char *s);
void report_text_printf(report_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* s with &, <, >, " and ' written as HTML entities (for text and
 * attribute values alike). */
void report_text_escaped(report_text *t, const char *s);
void report_text_free(report_text *t);

#endif
