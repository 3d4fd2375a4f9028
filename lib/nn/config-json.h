/* config-json.h: reading the JSON configuration stored in a model file's metadata (`mexd.config`
 * of MExD models and backbones).  Every error names the file and the key. */
#pragma once

#include "io/safetensors.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* `len` integers in lo..hi under `key` into out; absent: a copy of def. */
gboolean mexd_cfg_get_int_array(JsonObject *o, const char *key, guint len, const int *def, int lo,
                                int hi, int *out, const char *file, GError **error);
/* Parses a configuration that must be a JSON object (*obj, owned by the returned node:
 * json_node_unref it when done), nesting at most MEXD_JSON_MAX_DEPTH deep (io/json.h), or NULL
 * with an error naming the file. */
JsonNode *mexd_cfg_parse(const char *json, const char *file, JsonObject **obj, GError **error);
/* The same for another metadata entry (named in the errors: "mexd.calibration"). */
JsonNode *mexd_cfg_parse_entry(const char *json, const char *file, const char *entry,
                               JsonObject **obj, GError **error);
/* An integer in lo..hi; absent: `def`, or an error when def is G_MININT. */
gboolean mexd_cfg_get_int(JsonObject *o, const char *key, int def, int lo, int hi, int *out,
                          const char *file, GError **error);
/* A number; absent: `def`, or an error when def is NaN. */
gboolean mexd_cfg_get_num(JsonObject *o, const char *key, double def, double *out,
                          const char *file, GError **error);
/* FALSE naming the first key of `o` that is not in the NULL-terminated `allowed`. */
gboolean mexd_cfg_check_keys(JsonObject *o, const char *const *allowed, const char *where,
                             const char *file, GError **error);
/* The array under `key`, which must exist and (when len > 0) have `len` entries. */
JsonArray *mexd_cfg_get_array(JsonObject *o, const char *key, guint len, const char *file,
                              GError **error);
/* Opens the mexd file at `path`, whose metadata must hold mexd.format = `format` and a
 * mexd.config (returned in *config, owned by the file); `kind` ("model", "backbone") names it in
 * the errors, which say what the file is when it is another mexd format. */
MexdSafetensors *mexd_cfg_open(const char *path, const char *format, const char *kind,
                               const char **config, GError **error);

G_END_DECLS
