/* A JSON value as indented text for people, for the report's job section:
 * two-space indent, keys in file order, arrays of plain values on one line,
 * each real in the fewest digits that read back as the same double (0.4,
 * where jansson's dump writes 0.40000000000000002). */
#ifndef KD_CLI_REPORT_JSON_H
#define KD_CLI_REPORT_JSON_H

#include <jansson.h>

#include "report_text.h"

void report_json_pretty(report_text *out, const json_t *value);

#endif
