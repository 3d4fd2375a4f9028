/* json.c: bounded JSON parsing (json.h). */
#include "io/json.h"

#include "core/error.h"
#include "io/files.h"

#include <string.h>

int mexd_json_depth(const char *text, gsize len, int limit)
{
  int depth = 0, deepest = 0;
  gboolean in_string = FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = FALSE;
      continue;
    }
    if (c == '"')
      in_string = TRUE;
    else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit)
        return deepest;
    } else if ((c == ']' || c == '}') && depth > 0)
      depth--;
  }
  return deepest;
}

JsonNode *mexd_json_parse(const char *text, gssize len, const char *display, GError **error)
{
  if (!display)
    display = "<JSON>";
  if (!text)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: no JSON text", display);
  gsize n = len < 0 ? strlen(text) : (gsize)len;
  if (mexd_json_depth(text, n, MEXD_JSON_MAX_DEPTH) > MEXD_JSON_MAX_DEPTH)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: the JSON nests arrays or objects more than %d levels deep (refused)",
                          display, MEXD_JSON_MAX_DEPTH);
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  g_autoptr(GError) jerr = NULL;
  if (!json_parser_load_from_data(parser, text, (gssize)n, &jerr))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: not JSON: %s", display,
                          jerr->message);
  JsonNode *root = json_parser_get_root(parser);
  if (!root)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: empty JSON", display);
  return json_node_ref(root);
}

JsonNode *mexd_json_parse_file(const char *path, gsize max_bytes, GError **error)
{
  gsize len = 0;
  g_autofree char *text = mexd_file_read_small(path, "JSON file", max_bytes, &len, error);
  if (!text)
    return NULL;
  g_autofree char *display = g_filename_display_name(path);
  return mexd_json_parse(text, (gssize)len, display, error);
}
