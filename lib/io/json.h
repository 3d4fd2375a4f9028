/* json.h: JSON from files, parsed with bounds: json-glib recurses once per nesting level, so a
 * file of 100,000 '[' overflows the stack; every JSON text that comes from a file goes through
 * mexd_json_parse, which refuses text that nests deeper than MEXD_JSON_MAX_DEPTH before
 * json-glib sees it. */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define MEXD_JSON_MAX_DEPTH 64

/* Parses `text` (len < 0: NUL-terminated) into a new node (json_node_unref it); `display`
 * names the source in errors (MEXD_ERROR_FORMAT). */
JsonNode *mexd_json_parse(const char *text, gssize len, const char *display, GError **error);
/* The same for a small regular file (at most max_bytes; see files.h). */
JsonNode *mexd_json_parse_file(const char *path, gsize max_bytes, GError **error);
/* The deepest nesting of arrays and objects in `text` (strings skipped), stopping early once
 * past `limit`. */
int mexd_json_depth(const char *text, gsize len, int limit);

G_END_DECLS
