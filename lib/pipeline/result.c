/* result.c: slide results in one schema, and their identity (result.h). */
#include "pipeline/result.h"

#include "core/error.h"
#include "io/files.h"
#include "io/json.h"

#include <math.h>
#include <string.h>

/* ---- identity ---- */

struct _MexdIdentity {
  GPtrArray *keys, *values; /* in insertion order */
};

MexdIdentity *mexd_identity_new(void)
{
  MexdIdentity *id = g_new0(MexdIdentity, 1);
  id->keys = g_ptr_array_new_with_free_func(g_free);
  id->values = g_ptr_array_new_with_free_func(g_free);
  return id;
}

void mexd_identity_free(MexdIdentity *id)
{
  if (!id)
    return;
  g_ptr_array_unref(id->keys);
  g_ptr_array_unref(id->values);
  g_free(id);
}

static int find_key(const MexdIdentity *id, const char *key)
{
  for (guint i = 0; id && i < id->keys->len; i++)
    if (g_str_equal(id->keys->pdata[i], key))
      return (int)i;
  return -1;
}

static void set_value(MexdIdentity *id, const char *key, char *value)
{
  int i = find_key(id, key);
  if (i >= 0) {
    g_free(id->values->pdata[i]);
    id->values->pdata[i] = value;
    return;
  }
  g_ptr_array_add(id->keys, g_strdup(key));
  g_ptr_array_add(id->values, value);
}

void mexd_identity_set(MexdIdentity *id, const char *key, const char *format, ...)
{
  va_list ap;
  va_start(ap, format);
  char *v = g_strdup_vprintf(format, ap);
  va_end(ap);
  set_value(id, key, v);
}

MexdIdentity *mexd_identity_copy(const MexdIdentity *id)
{
  MexdIdentity *c = mexd_identity_new();
  for (guint i = 0; id && i < id->keys->len; i++)
    set_value(c, id->keys->pdata[i], g_strdup(id->values->pdata[i]));
  return c;
}

const char *mexd_identity_get(const MexdIdentity *id, const char *key)
{
  int i = find_key(id, key);
  return i >= 0 ? id->values->pdata[i] : NULL;
}

guint mexd_identity_n_keys(const MexdIdentity *id)
{
  return id ? id->keys->len : 0;
}

const char *mexd_identity_key(const MexdIdentity *id, guint i)
{
  return id && i < id->keys->len ? id->keys->pdata[i] : NULL;
}

void mexd_identity_remove(MexdIdentity *id, const char *key)
{
  int i = find_key(id, key);
  if (i < 0)
    return;
  g_ptr_array_remove_index(id->keys, (guint)i);
  g_ptr_array_remove_index(id->values, (guint)i);
}

/* A value shortened for messages: hashes to their first 8 hex digits. */
static char *short_value(const char *v)
{
  if (!v)
    return g_strdup("(none)");
  const char *colon = strchr(v, ':');
  if (colon && strlen(colon + 1) > 16 && g_str_has_prefix(v, "sha256:"))
    return g_strdup_printf("%.*s%.8s…", (int)(colon + 1 - v), v, colon + 1);
  if (strlen(v) > 48)
    return g_strdup_printf("%.40s…", v);
  return g_strdup(v);
}

char *mexd_identity_diff(const MexdIdentity *was, const MexdIdentity *now)
{
  GString *s = g_string_new(NULL);
  for (guint i = 0; now && i < now->keys->len; i++) {
    const char *k = now->keys->pdata[i];
    const char *a = mexd_identity_get(was, k), *b = now->values->pdata[i];
    if (a && g_str_equal(a, b))
      continue;
    g_autofree char *sa = short_value(a), *sb = short_value(b);
    g_string_append_printf(s, "%s%s %s → %s", s->len ? "; " : "", k, sa, sb);
  }
  for (guint i = 0; was && i < was->keys->len; i++) {
    const char *k = was->keys->pdata[i];
    if (find_key(now, k) >= 0)
      continue;
    g_autofree char *sa = short_value(was->values->pdata[i]);
    g_string_append_printf(s, "%s%s %s → (none)", s->len ? "; " : "", k, sa);
  }
  if (!s->len) {
    g_string_free(s, TRUE);
    return NULL;
  }
  return g_string_free(s, FALSE);
}

void mexd_identity_to_json(const MexdIdentity *id, JsonBuilder *b)
{
  json_builder_begin_object(b);
  for (guint i = 0; id && i < id->keys->len; i++) {
    json_builder_set_member_name(b, id->keys->pdata[i]);
    json_builder_add_string_value(b, id->values->pdata[i]);
  }
  json_builder_end_object(b);
}

MexdIdentity *mexd_identity_from_json(JsonNode *node, const char *display, GError **error)
{
  if (!node || !JSON_NODE_HOLDS_OBJECT(node))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: \"identity\" is not an object", display);
  JsonObject *o = json_node_get_object(node);
  g_autoptr(MexdIdentity) id = mexd_identity_new();
  g_autoptr(GList) members = json_object_get_members(o);
  for (GList *l = members; l; l = l->next) {
    JsonNode *v = json_object_get_member(o, l->data);
    if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING)
      return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                            "%s: identity key \"%s\" is not a string", display,
                            (const char *)l->data);
    set_value(id, l->data, g_strdup(json_node_get_string(v)));
  }
  return g_steal_pointer(&id);
}

/* ---- results ---- */

void mexd_slide_result_free(MexdSlideResult *r)
{
  if (!r)
    return;
  g_free(r->slide_id);
  g_free(r->path);
  g_strfreev(r->classes);
  g_free(r->probabilities);
  g_free(r->spread);
  g_free(r->prior);
  g_free(r->calibrated);
  g_free(r->sampler);
  g_free(r->mode);
  g_free(r->device);
  mexd_identity_free(r->identity);
  if (r->detail)
    json_node_unref(r->detail);
  g_free(r);
}

static double *to_doubles(const float *v, int n)
{
  double *d = g_new(double, MAX(n, 1));
  for (int i = 0; i < n; i++)
    d[i] = v[i];
  return d;
}

static const char *what_of(const MexdSlideResult *r)
{
  return r->slide_id ? r->slide_id : r->path ? r->path : "the result";
}

static gboolean check_finite(const MexdSlideResult *r, const char *name, const double *v,
                             GError **error)
{
  for (int c = 0; v && c < r->n_classes; c++)
    if (!isfinite(v[c]))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: the %s is not finite (%s[%d] = %g): no answer (the model's weights or "
                       "the features hold NaN or Inf, or overflow)",
                       what_of(r), name, name, c, v[c]);
  return TRUE;
}

void mexd_slide_result_set_calibration(MexdSlideResult *r, double temperature,
                                       const double *calibrated, double refer_spread)
{
  g_free(r->calibrated);
  r->calibrated = g_memdup2(calibrated, sizeof(double) * r->n_classes);
  r->temperature = temperature;
  r->refer_spread = refer_spread;
  r->refer = -1;
  if (isfinite(refer_spread) && r->spread)
    r->refer = r->spread[r->class_index] > refer_spread;
}

gboolean mexd_slide_result_check(const MexdSlideResult *r, GError **error)
{
  if (!r || r->n_classes < 1 || !r->classes || !r->prior)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: an incomplete result",
                     r ? what_of(r) : "(null)");
  if (g_strv_length(r->classes) != (guint)r->n_classes)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %u class names for %d classes", what_of(r),
                     g_strv_length(r->classes), r->n_classes);
  if (r->class_index < 0 || r->class_index >= r->n_classes)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: class index %d outside 0..%d", what_of(r),
                     r->class_index, r->n_classes - 1);
  if (r->calibrated && !(isfinite(r->temperature) && r->temperature > 0))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the calibration's temperature is %g",
                     what_of(r), r->temperature);
  return check_finite(r, "prior", r->prior, error) &&
         check_finite(r, "probabilities", r->probabilities, error) &&
         check_finite(r, "spread", r->spread, error) &&
         check_finite(r, "calibrated probabilities", r->calibrated, error);
}

static void add_float_array(JsonBuilder *b, const char *name, const float *v, int64_t n)
{
  json_builder_set_member_name(b, name);
  json_builder_begin_array(b);
  for (int64_t i = 0; i < n; i++)
    json_builder_add_double_value(b, v[i]);
  json_builder_end_array(b);
}

static JsonNode *detail_of(const MexdResult *r)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  add_float_array(b, "adapter1_logits", r->logits1, r->n_classes);
  json_builder_set_member_name(b, "experts");
  json_builder_begin_array(b);
  for (int e = 0; e < r->experts; e++) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "selected");
    json_builder_begin_array(b);
    for (int64_t i = 0; i < r->n_selected[e]; i++)
      json_builder_add_int_value(b, r->selected[e][i]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "zero_row");
    json_builder_add_boolean_value(b, r->zero_row[e]);
    json_builder_set_member_name(b, "c");
    json_builder_add_double_value(b, r->c[e]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  add_float_array(b, "Z", r->z, r->width);
  add_float_array(b, "adapter2_logits", r->logits2, r->n_classes);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

MexdSlideResult *mexd_slide_result_new_from_model(const MexdResult *r, const MexdModelConfig *cfg,
                                                  const MexdForwardOptions *opt,
                                                  const char *slide_id, const char *path,
                                                  gboolean with_detail, GError **error)
{
  MexdForwardOptions defaults = MEXD_FORWARD_OPTIONS_DEFAULT;
  if (!opt)
    opt = &defaults;
  if (!r || !cfg)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_slide_result_new_from_model: NULL");
  g_autoptr(MexdSlideResult) s = g_new0(MexdSlideResult, 1);
  s->slide_id = g_strdup(slide_id);
  s->path = g_strdup(path);
  s->n_classes = r->n_classes;
  s->classes = g_strdupv(cfg->classes);
  s->class_index = r->predicted;
  s->prior = to_doubles(r->rho, r->n_classes);
  if (r->has_probs) {
    s->probabilities = to_doubles(r->probs, r->n_classes);
    s->spread = to_doubles(r->spread, r->n_classes);
    s->sampler = g_strdup(opt->sampler == MEXD_SAMPLER_DDIM ? "ddim" : "card");
    s->steps = opt->sampler == MEXD_SAMPLER_DDIM ? opt->steps : cfg->T;
    s->chains = r->chains;
    s->seed = opt->seed;
    s->eta = opt->sampler == MEXD_SAMPLER_DDIM ? opt->eta : 0;
  }
  s->tiles = r->n_instances;
  s->mode = g_strdup(cfg->mode == MEXD_ROUTE_OFFICIAL ? "official" : "paper");
  s->ms_adapter1 = r->ms_adapter1;
  s->ms_moe = r->ms_moe;
  s->ms_diffusion = r->ms_diffusion;
  if (with_detail && r->logits1)
    s->detail = detail_of(r);
  if (!mexd_slide_result_check(s, error))
    return NULL;
  return g_steal_pointer(&s);
}

static void add_doubles(JsonBuilder *b, const char *name, const double *v, int n)
{
  json_builder_set_member_name(b, name);
  if (!v) {
    json_builder_add_null_value(b);
    return;
  }
  json_builder_begin_array(b);
  for (int i = 0; i < n; i++)
    json_builder_add_double_value(b, v[i]);
  json_builder_end_array(b);
}

static void add_string(JsonBuilder *b, const char *name, const char *v)
{
  json_builder_set_member_name(b, name);
  if (v)
    json_builder_add_string_value(b, v);
  else
    json_builder_add_null_value(b);
}

char *mexd_slide_result_to_json(const MexdSlideResult *r, gboolean pretty)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  add_string(b, "schema", MEXD_RESULT_SCHEMA);
  add_string(b, "slide_id", r->slide_id);
  add_string(b, "path", r->path);
  add_string(b, "class", r->classes[r->class_index]);
  json_builder_set_member_name(b, "class_index");
  json_builder_add_int_value(b, r->class_index);
  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (int c = 0; c < r->n_classes; c++)
    json_builder_add_string_value(b, r->classes[c]);
  json_builder_end_array(b);
  add_doubles(b, "probabilities", r->probabilities, r->n_classes);
  add_doubles(b, "spread", r->spread, r->n_classes);
  add_doubles(b, "prior", r->prior, r->n_classes);
  json_builder_set_member_name(b, "tiles");
  json_builder_add_int_value(b, r->tiles);
  add_string(b, "sampler", r->sampler);
  json_builder_set_member_name(b, "steps");
  json_builder_add_int_value(b, r->steps);
  json_builder_set_member_name(b, "chains");
  json_builder_add_int_value(b, r->chains);
  json_builder_set_member_name(b, "seed");
  json_builder_add_int_value(b, (gint64)r->seed);
  json_builder_set_member_name(b, "eta");
  json_builder_add_double_value(b, r->eta);
  add_string(b, "mode", r->mode);
  json_builder_set_member_name(b, "ms");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "adapter1");
  json_builder_add_double_value(b, r->ms_adapter1);
  json_builder_set_member_name(b, "moe");
  json_builder_add_double_value(b, r->ms_moe);
  json_builder_set_member_name(b, "diffusion");
  json_builder_add_double_value(b, r->ms_diffusion);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "seconds");
  json_builder_add_double_value(b, r->seconds);
  add_string(b, "device", r->device);
  if (r->calibrated) {
    json_builder_set_member_name(b, "calibration");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "temperature");
    json_builder_add_double_value(b, r->temperature);
    add_doubles(b, "probabilities", r->calibrated, r->n_classes);
    json_builder_set_member_name(b, "refer");
    if (r->refer < 0)
      json_builder_add_null_value(b);
    else
      json_builder_add_boolean_value(b, r->refer == 1);
    json_builder_set_member_name(b, "refer_spread");
    if (isfinite(r->refer_spread))
      json_builder_add_double_value(b, r->refer_spread);
    else
      json_builder_add_null_value(b);
    json_builder_end_object(b);
  }
  if (r->identity) {
    json_builder_set_member_name(b, "identity");
    mexd_identity_to_json(r->identity, b);
  }
  if (r->detail) {
    json_builder_set_member_name(b, "detail");
    json_builder_add_value(b, json_node_copy(r->detail));
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, pretty);
  return json_generator_to_data(gen, NULL);
}

/* ---- reading ---- */

typedef struct {
  JsonObject *o;
  const char *display;
  GError **error;
  gboolean ok;
} Reader;

static JsonNode *member(Reader *rd, const char *key, gboolean required)
{
  if (!rd->ok)
    return NULL;
  JsonNode *n = json_object_get_member(rd->o, key);
  if (!n && required) {
    rd->ok = mexd_fail(rd->error, MEXD_ERROR_FORMAT, "%s: no \"%s\" in the result", rd->display,
                       key);
  }
  return n;
}

static gboolean bad_type(Reader *rd, const char *key, const char *want)
{
  rd->ok = mexd_fail(rd->error, MEXD_ERROR_FORMAT, "%s: \"%s\" is not %s", rd->display, key,
                     want);
  return FALSE;
}

static char *get_string(Reader *rd, const char *key, gboolean required)
{
  JsonNode *n = member(rd, key, required);
  if (!n || JSON_NODE_HOLDS_NULL(n))
    return NULL;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    bad_type(rd, key, "a string");
    return NULL;
  }
  return g_strdup(json_node_get_string(n));
}

static gint64 get_int(Reader *rd, const char *key, gint64 lo, gint64 hi)
{
  JsonNode *n = member(rd, key, TRUE);
  if (!n)
    return 0;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
    bad_type(rd, key, "an integer");
    return 0;
  }
  gint64 v = json_node_get_int(n);
  if (v < lo || v > hi) {
    rd->ok = mexd_fail(rd->error, MEXD_ERROR_FORMAT,
                       "%s: \"%s\" is %" G_GINT64_FORMAT ", outside %" G_GINT64_FORMAT
                       "..%" G_GINT64_FORMAT,
                       rd->display, key, v, lo, hi);
    return 0;
  }
  return v;
}

static gboolean is_number(JsonNode *n)
{
  return JSON_NODE_HOLDS_VALUE(n) && (json_node_get_value_type(n) == G_TYPE_DOUBLE ||
                                      json_node_get_value_type(n) == G_TYPE_INT64);
}

static double get_double(Reader *rd, JsonObject *o, const char *key)
{
  if (!rd->ok)
    return 0;
  JsonNode *n = json_object_get_member(o, key);
  if (!n) {
    rd->ok = mexd_fail(rd->error, MEXD_ERROR_FORMAT, "%s: no \"%s\" in the result", rd->display,
                       key);
    return 0;
  }
  if (!is_number(n)) {
    bad_type(rd, key, "a number");
    return 0;
  }
  double v = json_node_get_double(n);
  if (!isfinite(v)) {
    bad_type(rd, key, "finite");
    return 0;
  }
  return v;
}

static double *get_doubles(Reader *rd, const char *key, int n_classes, gboolean nullable)
{
  JsonNode *n = member(rd, key, TRUE);
  if (!n || (nullable && JSON_NODE_HOLDS_NULL(n)))
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    bad_type(rd, key, "an array of numbers");
    return NULL;
  }
  JsonArray *a = json_node_get_array(n);
  if ((int)json_array_get_length(a) != n_classes) {
    rd->ok = mexd_fail(rd->error, MEXD_ERROR_FORMAT, "%s: \"%s\" has %u entries for %d classes",
                       rd->display, key, json_array_get_length(a), n_classes);
    return NULL;
  }
  double *v = g_new(double, MAX(n_classes, 1));
  for (int c = 0; c < n_classes; c++) {
    JsonNode *e = json_array_get_element(a, (guint)c);
    if (!is_number(e)) {
      g_free(v);
      bad_type(rd, key, "an array of numbers");
      return NULL;
    }
    v[c] = json_node_get_double(e);
  }
  return v;
}

MexdSlideResult *mexd_slide_result_from_json(const char *text, gssize len, const char *display,
                                             GError **error)
{
  g_autoptr(JsonNode) root = mexd_json_parse(text, len, display, error);
  if (!root)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(root))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: not a JSON object", display);
  Reader rd = {json_node_get_object(root), display, error, TRUE};
  g_autofree char *schema = get_string(&rd, "schema", TRUE);
  if (rd.ok && !g_str_equal(schema, MEXD_RESULT_SCHEMA))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: schema \"%s\", not %s", display, schema,
                          MEXD_RESULT_SCHEMA);
  g_autoptr(MexdSlideResult) r = g_new0(MexdSlideResult, 1);
  r->slide_id = get_string(&rd, "slide_id", FALSE);
  r->path = get_string(&rd, "path", FALSE);
  JsonNode *cn = member(&rd, "classes", TRUE);
  if (cn && (!JSON_NODE_HOLDS_ARRAY(cn) || json_array_get_length(json_node_get_array(cn)) < 1 ||
             json_array_get_length(json_node_get_array(cn)) > MEXD_MAX_CLASSES))
    bad_type(&rd, "classes", "an array of 1 to 256 names");
  if (!rd.ok)
    return NULL;
  JsonArray *ca = json_node_get_array(cn);
  r->n_classes = (int)json_array_get_length(ca);
  r->classes = g_new0(char *, r->n_classes + 1);
  for (int c = 0; c < r->n_classes; c++) {
    JsonNode *e = json_array_get_element(ca, (guint)c);
    if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING)
      return bad_type(&rd, "classes", "an array of strings"), NULL;
    r->classes[c] = g_strdup(json_node_get_string(e));
  }
  r->class_index = (int)get_int(&rd, "class_index", 0, r->n_classes - 1);
  g_autofree char *cls = get_string(&rd, "class", TRUE);
  if (rd.ok && !g_str_equal(cls, r->classes[r->class_index]))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: \"class\" %s is not classes[class_index] (%s)", display, cls,
                          r->classes[r->class_index]);
  r->probabilities = get_doubles(&rd, "probabilities", r->n_classes, TRUE);
  r->spread = get_doubles(&rd, "spread", r->n_classes, TRUE);
  r->prior = get_doubles(&rd, "prior", r->n_classes, FALSE);
  r->tiles = get_int(&rd, "tiles", 0, G_MAXINT64);
  r->sampler = get_string(&rd, "sampler", FALSE);
  r->steps = (int)get_int(&rd, "steps", 0, G_MAXINT32);
  r->chains = (int)get_int(&rd, "chains", 0, G_MAXINT32);
  r->seed = (guint64)get_int(&rd, "seed", G_MININT64, G_MAXINT64);
  r->eta = get_double(&rd, rd.o, "eta");
  r->mode = get_string(&rd, "mode", FALSE);
  JsonNode *ms = member(&rd, "ms", TRUE);
  if (ms && !JSON_NODE_HOLDS_OBJECT(ms))
    bad_type(&rd, "ms", "an object");
  if (rd.ok) {
    JsonObject *mo = json_node_get_object(ms);
    r->ms_adapter1 = get_double(&rd, mo, "adapter1");
    r->ms_moe = get_double(&rd, mo, "moe");
    r->ms_diffusion = get_double(&rd, mo, "diffusion");
  }
  r->seconds = get_double(&rd, rd.o, "seconds");
  r->device = get_string(&rd, "device", FALSE);
  JsonNode *caln = member(&rd, "calibration", FALSE);
  if (caln && !JSON_NODE_HOLDS_NULL(caln)) {
    if (!JSON_NODE_HOLDS_OBJECT(caln))
      return bad_type(&rd, "calibration", "an object"), NULL;
    Reader cr = {json_node_get_object(caln), display, error, rd.ok};
    r->temperature = get_double(&cr, cr.o, "temperature");
    r->calibrated = get_doubles(&cr, "probabilities", r->n_classes, FALSE);
    JsonNode *rf = member(&cr, "refer", TRUE), *rs = member(&cr, "refer_spread", TRUE);
    r->refer = -1;
    r->refer_spread = NAN;
    if (cr.ok && !JSON_NODE_HOLDS_NULL(rf)) {
      if (!JSON_NODE_HOLDS_VALUE(rf) || json_node_get_value_type(rf) != G_TYPE_BOOLEAN)
        return bad_type(&cr, "refer", "true, false or null"), NULL;
      r->refer = json_node_get_boolean(rf);
    }
    if (cr.ok && !JSON_NODE_HOLDS_NULL(rs))
      r->refer_spread = get_double(&cr, cr.o, "refer_spread");
    if (!cr.ok)
      return NULL;
  }
  JsonNode *idn = member(&rd, "identity", FALSE);
  if (rd.ok && idn && !(r->identity = mexd_identity_from_json(idn, display, error)))
    return NULL;
  JsonNode *dn = member(&rd, "detail", FALSE);
  if (dn)
    r->detail = json_node_copy(dn);
  if (!rd.ok)
    return NULL;
  g_autoptr(GError) ce = NULL;
  if (!mexd_slide_result_check(r, &ce))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: %s", display, ce->message);
  return g_steal_pointer(&r);
}

MexdSlideResult *mexd_slide_result_read(const char *path, GError **error)
{
  gsize len = 0;
  g_autofree char *text = mexd_file_read_small(path, "result", 64 << 20, &len, error);
  if (!text)
    return NULL;
  g_autofree char *display = g_filename_display_name(path);
  return mexd_slide_result_from_json(text, (gssize)len, display, error);
}

gboolean mexd_slide_result_write(const MexdSlideResult *r, const char *path, GError **error)
{
  if (!mexd_slide_result_check(r, error))
    return FALSE;
  g_autofree char *js = mexd_slide_result_to_json(r, TRUE);
  g_autofree char *text = g_strconcat(js, "\n", NULL);
  return mexd_file_write_atomic(path, text, -1, error);
}
