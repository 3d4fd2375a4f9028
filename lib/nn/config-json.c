/* config-json.c: reading the JSON configurations of model files (config-json.h). */
#include "nn/config-json.h"

#include "core/error.h"
#include "io/json.h"

#include <string.h>

#include <math.h>

gboolean mexd_cfg_get_int(JsonObject *o, const char *key, int def, int lo, int hi, int *out,
                        const char *file, GError **error)
{
  if (!json_object_has_member(o, key)) {
    if (def == G_MININT)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the configuration has no \"%s\"", file, key);
    *out = def;
    return TRUE;
  }
  JsonNode *n = json_object_get_member(o, key);
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: configuration key \"%s\" must be an integer",
                     file, key);
  gint64 v = json_node_get_int(n);
  if (v < lo || v > hi)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: configuration key \"%s\" is %" G_GINT64_FORMAT ", outside %d..%d", file,
                     key, v, lo, hi);
  *out = (int)v;
  return TRUE;
}

gboolean mexd_cfg_get_num(JsonObject *o, const char *key, double def, double *out, const char *file,
                        GError **error)
{
  if (!json_object_has_member(o, key)) {
    if (isnan(def))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the configuration has no \"%s\"", file, key);
    *out = def;
    return TRUE;
  }
  JsonNode *n = json_object_get_member(o, key);
  if (!JSON_NODE_HOLDS_VALUE(n) ||
      (json_node_get_value_type(n) != G_TYPE_INT64 && json_node_get_value_type(n) != G_TYPE_DOUBLE))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: configuration key \"%s\" must be a number",
                     file, key);
  *out = json_node_get_double(n);
  return TRUE;
}

gboolean mexd_cfg_check_keys(JsonObject *o, const char *const *allowed, const char *where,
                           const char *file, GError **error)
{
  g_autoptr(GList) members = json_object_get_members(o);
  for (GList *l = members; l; l = l->next)
    if (!g_strv_contains(allowed, l->data))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: unknown key \"%s\" in the %s", file,
                       (const char *)l->data, where);
  return TRUE;
}

JsonArray *mexd_cfg_get_array(JsonObject *o, const char *key, guint len, const char *file,
                            GError **error)
{
  JsonNode *n = json_object_get_member(o, key);
  if (!n)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the configuration has no \"%s\"", file,
                          key);
  if (!JSON_NODE_HOLDS_ARRAY(n))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: configuration key \"%s\" must be an array",
                          file, key);
  JsonArray *a = json_node_get_array(n);
  if (len && json_array_get_length(a) != len)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: configuration key \"%s\" has %u entries, expected %u", file, key,
                          json_array_get_length(a), len);
  return a;
}

MexdSafetensors *mexd_cfg_open(const char *path, const char *format, const char *kind,
                               const char **config, GError **error)
{
  MexdSafetensors *st = mexd_safetensors_open(path, error);
  if (!st)
    return NULL;
  const char *fmt = mexd_safetensors_metadata(st, "mexd.format");
  *config = mexd_safetensors_metadata(st, "mexd.config");
  if (!fmt || !*config) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_FORMAT,
                "%s: not a mexd %s file (no \"%s\" in its metadata; convert checkpoints with "
                "tools/convert.py)",
                path, kind, fmt ? "mexd.config" : "mexd.format");
  } else if (!g_str_equal(fmt, format)) {
    const char *other = g_str_has_prefix(fmt, "mexd-model/")      ? "a MExD model file"
                        : g_str_has_prefix(fmt, "mexd-backbone/") ? "a backbone file"
                        : g_str_has_prefix(fmt, "mexd-transmil/") ? "a TransMIL-only file"
                        : g_str_has_prefix(fmt, "mexd-abmil/")    ? "an ABMIL model file"
                        : g_str_has_prefix(fmt, "mexd-checkpoint/")
                            ? "a training checkpoint (use the model.safetensors beside it)"
                            : NULL;
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED,
                "%s: format \"%s\" is not supported as a %s (this build reads %s)%s%s", path, fmt,
                kind, format, other ? "; this is " : "", other ? other : "");
  } else {
    return st;
  }
  mexd_safetensors_free(st);
  *config = NULL;
  return NULL;
}

/* Parses `json`, which must be a JSON object; the errors say "<file>: <what>". */
static JsonNode *parse_object(const char *json, const char *file, const char *what,
                              JsonObject **obj, GError **error)
{
  g_autoptr(GError) jerr = NULL;
  g_autofree char *where = g_strdup_printf("%s: %s", file, what);
  JsonNode *root = mexd_json_parse(json, -1, where, &jerr);
  if (!root) {
    g_propagate_error(error, g_steal_pointer(&jerr));
    return NULL;
  }
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    json_node_unref(root);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: %s is not a JSON object", file, what);
  }
  *obj = json_node_get_object(root);
  return root;
}

JsonNode *mexd_cfg_parse(const char *json, const char *file, JsonObject **obj, GError **error)
{
  return parse_object(json, file, "the configuration (mexd.config)", obj, error);
}

JsonNode *mexd_cfg_parse_entry(const char *json, const char *file, const char *entry,
                               JsonObject **obj, GError **error)
{
  g_autofree char *what = g_strdup_printf("the %s entry", entry);
  return parse_object(json, file, what, obj, error);
}

gboolean mexd_cfg_get_int_array(JsonObject *o, const char *key, guint len, const int *def, int lo,
                                int hi, int *out, const char *file, GError **error)
{
  if (!json_object_has_member(o, key)) {
    memcpy(out, def, sizeof(int) * len);
    return TRUE;
  }
  JsonArray *a = mexd_cfg_get_array(o, key, len, file, error);
  if (!a)
    return FALSE;
  for (guint i = 0; i < len; i++) {
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) < lo || json_node_get_int(n) > hi)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %s[%u] must be an integer %d..%d", file, key,
                       i, lo, hi);
    out[i] = (int)json_node_get_int(n);
  }
  return TRUE;
}
