/* classifier.c: loading and running any trained slide classifier (classifier.h).
 *
 * TransMIL runs through lib/nn (the inference code checked against PyTorch); ABMIL, which lib/nn
 * does not have, runs through its training module with no tape (a plain forward pass). */
#include "train/classifier.h"

#include "core/error.h"
#include "nn/config-json.h"

#include <math.h>
#include <string.h>

struct _MexdClassifier {
  MexdClassifierKind kind;
  char *path;
  MexdBackend *be;
  int n_classes;
  char **classes;
  int64_t feature_dim;
  MexdModel *model;    /* MEXD */
  MexdTransMil tm;     /* TRANSMIL */
  MexdParams *ps;      /* ABMIL */
  MexdAbmil ab;
  MexdClassifierCalibration cal;
};

const MexdClassifierCalibration *mexd_classifier_calibration(const MexdClassifier *c)
{
  return &c->cal;
}

/* "mexd.calibration": {"temperature": T in [0.05, 20], "refer_spread": s ≥ 0 or absent,
 * "coverage": (0, 1] with refer_spread, "slides": ≥ 1, "fitted_on": {…} (with refer_spread its
 * "sampler", "chains", "sample_seed" and optional "steps" are read; the rest is not)} */
static gboolean read_fitted_sampler(JsonObject *o, const char *path, const char *where,
                                    MexdClassifierCalibration *cal, GError **error)
{
  JsonNode *fn = json_object_get_member(o, "fitted_on");
  JsonObject *f = fn && JSON_NODE_HOLDS_OBJECT(fn) ? json_node_get_object(fn) : NULL;
  JsonNode *sn = f ? json_object_get_member(f, "sampler") : NULL;
  const char *s = sn && JSON_NODE_HOLDS_VALUE(sn) && json_node_get_value_type(sn) == G_TYPE_STRING
                      ? json_node_get_string(sn)
                      : NULL;
  if (!s || (!g_str_equal(s, "card") && !g_str_equal(s, "ddim")))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: mexd.calibration: a referral threshold needs fitted_on's sampler "
                     "(\"card\" or \"ddim\"), chains and sample_seed, which the spread depends "
                     "on (calibrate again with mexd eval --calibrate)",
                     path);
  cal->sampler = g_str_equal(s, "ddim") ? MEXD_SAMPLER_DDIM : MEXD_SAMPLER_CARD;
  g_autofree char *fwhere = g_strdup_printf("%s.fitted_on", where);
  double seed = 0;
  if (!mexd_cfg_get_int(f, "chains", G_MININT, 1, 4096, &cal->chains, fwhere, error) ||
      !mexd_cfg_get_int(f, "steps", 50, 2, 100000, &cal->steps, fwhere, error) ||
      !mexd_cfg_get_num(f, "sample_seed", NAN, &seed, fwhere, error))
    return FALSE;
  /* an integer 0..2^63-1 (JSON numbers beyond 2^53 are not exact: the writer stores the int) */
  if (!(seed >= 0 && seed <= 9223372036854775807.0 && seed == floor(seed)))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: sample_seed %g is not an integer 0..2^63-1", fwhere, seed);
  JsonNode *sd = json_object_get_member(f, "sample_seed");
  cal->sample_seed = json_node_get_value_type(sd) == G_TYPE_INT64
                         ? (uint64_t)json_node_get_int(sd)
                         : (uint64_t)seed;
  return TRUE;
}

gboolean mexd_calibration_sampler(const MexdClassifierCalibration *cal, const char *path,
                                  const char *seed_option, MexdSampler *sampler,
                                  gboolean sampler_given, int *chains, gboolean chains_given,
                                  int *steps, gboolean steps_given, uint64_t *seed,
                                  gboolean seed_given, GError **error)
{
  if (!cal->present || !isfinite(cal->refer_spread))
    return TRUE;
  const char *names[2] = {"card", "ddim"};
  const char *why = "the referral threshold of its calibration was fitted with";
  const char *fix = "leave the option out, or calibrate again with these settings (mexd eval "
                    "--calibrate)";
  if (sampler_given && *sampler != cal->sampler)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--sampler %s: %s: %s --sampler %s; %s",
                     names[*sampler == MEXD_SAMPLER_DDIM], path, why,
                     names[cal->sampler == MEXD_SAMPLER_DDIM], fix);
  if (chains_given && *chains != cal->chains)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--chains %d: %s: %s --chains %d; %s",
                     *chains, path, why, cal->chains, fix);
  if (seed_given && *seed != cal->sample_seed)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s %" G_GUINT64_FORMAT ": %s: %s %s %" G_GUINT64_FORMAT "; %s", seed_option,
                     *seed, path, why, seed_option, cal->sample_seed, fix);
  if (cal->sampler == MEXD_SAMPLER_DDIM && steps_given && *steps != cal->steps)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--steps %d: %s: %s --steps %d; %s",
                     *steps, path, why, cal->steps, fix);
  *sampler = cal->sampler;
  *chains = cal->chains;
  *seed = cal->sample_seed;
  if (cal->sampler == MEXD_SAMPLER_DDIM)
    *steps = cal->steps;
  return TRUE;
}
gboolean mexd_classifier_read_calibration(MexdSafetensors *st, const char *path,
                                          MexdClassifierCalibration *cal, GError **error)
{
  *cal = (MexdClassifierCalibration){FALSE, 1.0, NAN, NAN, 0, MEXD_SAMPLER_CARD, 0, 50, 0};
  const char *json = mexd_safetensors_metadata(st, "mexd.calibration");
  if (!json)
    return TRUE;
  JsonObject *o;
  g_autoptr(JsonNode) root = mexd_cfg_parse_entry(json, path, "mexd.calibration", &o, error);
  /* the errors of the key readers name "<file>: mexd.calibration" as their file */
  g_autofree char *where = g_strdup_printf("%s: mexd.calibration", path);
  static const char *const keys[] = {"temperature", "refer_spread", "coverage", "slides",
                                     "fitted_on", "nll", "ece", NULL};
  int slides;
  const gboolean refer = root && json_object_has_member(o, "refer_spread");
  if (!root || !mexd_cfg_check_keys(o, keys, "mexd.calibration", where, error) ||
      !mexd_cfg_get_num(o, "temperature", NAN, &cal->temperature, where, error) ||
      (refer && !mexd_cfg_get_num(o, "refer_spread", NAN, &cal->refer_spread, where, error)) ||
      !mexd_cfg_get_int(o, "slides", G_MININT, 1, G_MAXINT, &slides, where, error))
    return FALSE;
  cal->slides = slides;
  if (!(cal->temperature >= 0.05 && cal->temperature <= 20.0))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: mexd.calibration: temperature %g is outside 0.05..20", path,
                     cal->temperature);
  if (refer) {
    if (!mexd_cfg_get_num(o, "coverage", NAN, &cal->coverage, where, error))
      return FALSE;
    if (!(cal->refer_spread >= 0.0 && cal->refer_spread < 1e30) ||
        !(cal->coverage > 0.0 && cal->coverage <= 1.0))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: mexd.calibration: refer_spread %g must be 0 or more and coverage %g "
                       "in (0, 1]",
                       path, cal->refer_spread, cal->coverage);
    if (!read_fitted_sampler(o, path, where, cal, error))
      return FALSE;
  }
  cal->present = TRUE;
  return TRUE;
}

gboolean mexd_classifier_write_calibrated(const char *in, const char *out, const char *json,
                                          GError **error)
{
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(in, error);
  if (!st)
    return FALSE;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  for (guint i = 0; i < mexd_safetensors_n_tensors(st); i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    if (!mexd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                     error))
      return FALSE;
  }
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
  for (int k = 0; keys && keys[k]; k++)
    mexd_safetensors_writer_set_metadata(w, keys[k], mexd_safetensors_metadata(st, keys[k]));
  mexd_safetensors_writer_set_metadata(w, "mexd.calibration", json);
  return mexd_safetensors_writer_write(w, out, error);
}

const char *mexd_classifier_kind_name(MexdClassifierKind kind)
{
  switch (kind) {
  case MEXD_CLASSIFIER_MEXD: return "mexd";
  case MEXD_CLASSIFIER_TRANSMIL: return "transmil";
  case MEXD_CLASSIFIER_ABMIL: return "abmil";
  }
  return "invalid";
}

static void add_classes(JsonBuilder *b, const char *const *classes, int n)
{
  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (int c = 0; c < n; c++)
    json_builder_add_string_value(b, classes[c]);
  json_builder_end_array(b);
}

static char *finish(JsonBuilder *b)
{
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  char *s = json_to_string(root, FALSE);
  g_object_unref(b);
  return s;
}

static void add_int(JsonBuilder *b, const char *k, int64_t v)
{
  json_builder_set_member_name(b, k);
  json_builder_add_int_value(b, v);
}

char *mexd_transmil_config_json(int feature_dim, const MexdAttnShape *s,
                                const char *const *classes, int n_classes)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  add_int(b, "feature_dim", feature_dim);
  add_int(b, "width", s->width);
  add_int(b, "heads", s->heads);
  add_int(b, "landmarks", s->landmarks);
  add_int(b, "pinv_iterations", s->iterations);
  add_int(b, "res_conv_taps", s->taps);
  add_classes(b, classes, n_classes);
  return finish(b);
}

char *mexd_abmil_config_json(int feature_dim, int width, int attn_dim, const char *const *classes,
                             int n_classes)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "arch");
  json_builder_add_string_value(b, "abmil");
  add_int(b, "feature_dim", feature_dim);
  add_int(b, "width", width);
  add_int(b, "attn_dim", attn_dim);
  add_classes(b, classes, n_classes);
  return finish(b);
}

static gboolean parse_classes(JsonObject *o, const char *file, char ***classes, GError **error)
{
  JsonArray *a = mexd_cfg_get_array(o, "classes", 0, file, error);
  if (!a)
    return FALSE;
  guint n = json_array_get_length(a);
  if (n < 2 || n > MEXD_MAX_CLASSES)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %u classes; 2 to %d are supported", file, n,
                     MEXD_MAX_CLASSES);
  char **cl = g_new0(char *, n + 1);
  for (guint i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element(a, i);
    const char *s = JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING
                        ? json_node_get_string(e)
                        : NULL;
    if (!s || !*s) {
      g_strfreev(cl);
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: class %u is not a non-empty string", file,
                       i);
    }
    cl[i] = g_strdup(s);
  }
  *classes = cl;
  return TRUE;
}

gboolean mexd_transmil_config_parse(const char *json, const char *file, int *feature_dim,
                                    MexdAttnShape *s, char ***classes, GError **error)
{
  JsonObject *o;
  g_autoptr(JsonNode) p = mexd_cfg_parse(json, file, &o, error);
  if (!p)
    return FALSE;
  static const char *const keys[] = {"feature_dim",     "width",         "heads",  "landmarks",
                                     "pinv_iterations", "res_conv_taps", "classes", NULL};
  if (!mexd_cfg_check_keys(o, keys, "configuration", file, error) ||
      !mexd_cfg_get_int(o, "feature_dim", G_MININT, 1, 1 << 20, feature_dim, file, error) ||
      !mexd_cfg_get_int(o, "width", 512, 1, 1 << 16, &s->width, file, error) ||
      !mexd_cfg_get_int(o, "heads", 8, 1, 1 << 10, &s->heads, file, error) ||
      !mexd_cfg_get_int(o, "landmarks", 256, 1, 1 << 14, &s->landmarks, file, error) ||
      !mexd_cfg_get_int(o, "pinv_iterations", 6, 0, 100, &s->iterations, file, error) ||
      !mexd_cfg_get_int(o, "res_conv_taps", 33, 1, 1023, &s->taps, file, error))
    return FALSE;
  if (s->width % s->heads || s->taps % 2 == 0)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: width must be a multiple of heads and res_conv_taps odd", file);
  return parse_classes(o, file, classes, error);
}

void mexd_classifier_free(MexdClassifier *c)
{
  if (!c)
    return;
  if (c->model)
    mexd_model_free(c->model);
  if (c->kind == MEXD_CLASSIFIER_TRANSMIL)
    mexd_transmil_clear(&c->tm);
  mexd_abmil_clear(&c->ab);
  if (c->ps)
    mexd_params_free(c->ps);
  g_strfreev(c->classes);
  g_free(c->path);
  if (c->be)
    mexd_backend_unref(c->be);
  g_free(c);
}

static gboolean load_transmil(MexdClassifier *c, MexdSafetensors *st, const char *json,
                              GError **error)
{
  int D;
  MexdAttnShape s;
  if (!mexd_transmil_config_parse(json, c->path, &D, &s, &c->classes, error))
    return FALSE;
  c->feature_dim = D;
  c->n_classes = (int)g_strv_length(c->classes);
  MexdWeights w;
  mexd_weights_init(&w, st, c->be);
  MexdParamSource src = mexd_param_source_weights(&w);
  gboolean ok = mexd_transmil_init(&c->tm, &src, "adapter1", D, c->n_classes, &s, error) &&
                mexd_weights_check_all_taken(&w, error);
  mexd_weights_clear(&w);
  return ok;
}

static gboolean load_abmil(MexdClassifier *c, MexdSafetensors *st, const char *json,
                           GError **error)
{
  JsonObject *o;
  g_autoptr(JsonNode) p = mexd_cfg_parse(json, c->path, &o, error);
  if (!p)
    return FALSE;
  static const char *const keys[] = {"arch", "feature_dim", "width", "attn_dim", "classes", NULL};
  int D, L, A;
  if (!mexd_cfg_check_keys(o, keys, "configuration", c->path, error) ||
      !mexd_cfg_get_int(o, "feature_dim", G_MININT, 1, 1 << 20, &D, c->path, error) ||
      !mexd_cfg_get_int(o, "width", 512, 1, 1 << 16, &L, c->path, error) ||
      !mexd_cfg_get_int(o, "attn_dim", 256, 1, 1 << 16, &A, c->path, error) ||
      !parse_classes(o, c->path, &c->classes, error))
    return FALSE;
  const char *arch = json_object_get_string_member_with_default(o, "arch", "abmil");
  if (!g_str_equal(arch, "abmil"))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: arch \"%s\" is not abmil", c->path, arch);
  c->feature_dim = D;
  c->n_classes = (int)g_strv_length(c->classes);
  c->ps = mexd_params_new(c->be, 0);
  if (!mexd_abmil_init(&c->ab, MEXD_PARAMS_SOURCE(c->ps), D, L, A, c->n_classes, error) ||
      !mexd_params_load(c->ps, st, NULL, error))
    return FALSE;
  /* the file must hold nothing else */
  if (mexd_safetensors_n_tensors(st) != mexd_params_count(c->ps))
    for (guint i = 0; i < mexd_safetensors_n_tensors(st); i++) {
      const char *nm = mexd_safetensors_index(st, i)->name;
      if (!mexd_params_find(c->ps, nm))
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: tensor %s is not part of the ABMIL model", c->path, nm);
    }
  return TRUE;
}

MexdClassifier *mexd_classifier_load(const char *path, MexdBackend *be, GError **error)
{
  if (!path || !be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_classifier_load: NULL %s",
                          path ? "backend" : "path");
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(path, error);
  if (!st)
    return NULL;
  const char *fmt = mexd_safetensors_metadata(st, "mexd.format");
  const char *json = mexd_safetensors_metadata(st, "mexd.config");
  if (!fmt)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: not a mexd model file (no mexd.format in its metadata)", path);
  g_autoptr(MexdClassifier) c = g_new0(MexdClassifier, 1);
  c->path = g_strdup(path);
  c->be = mexd_backend_ref(be);
  if (!mexd_classifier_read_calibration(st, path, &c->cal, error))
    return NULL;
  if (g_str_equal(fmt, "mexd-model/1")) {
    c->kind = MEXD_CLASSIFIER_MEXD;
    if (!(c->model = mexd_model_load(path, be, error)))
      return NULL;
    const MexdModelConfig *cfg = mexd_model_config(c->model);
    c->n_classes = cfg->n_classes;
    c->classes = g_strdupv(cfg->classes);
    c->feature_dim = cfg->feature_dim;
    return g_steal_pointer(&c);
  }
  if (g_str_has_prefix(fmt, "mexd-checkpoint/"))
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s is a training checkpoint: evaluate the model.safetensors beside it",
                          path);
  if (!json)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: no mexd.config in its metadata", path);
  if (g_str_equal(fmt, "mexd-transmil/1")) {
    c->kind = MEXD_CLASSIFIER_TRANSMIL;
    if (!load_transmil(c, st, json, error))
      return NULL;
    return g_steal_pointer(&c);
  }
  if (g_str_equal(fmt, "mexd-abmil/1")) {
    c->kind = MEXD_CLASSIFIER_ABMIL;
    if (!load_abmil(c, st, json, error))
      return NULL;
    return g_steal_pointer(&c);
  }
  return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                        "%s: format \"%s\" is not a slide classifier (mexd-model/1, "
                        "mexd-transmil/1 or mexd-abmil/1)%s",
                        path, fmt,
                        g_str_has_prefix(fmt, "mexd-checkpoint/")
                            ? "; this is a training checkpoint: use the model.safetensors beside it"
                            : "");
}

MexdClassifierKind mexd_classifier_kind(const MexdClassifier *c)
{
  return c->kind;
}

int mexd_classifier_n_classes(const MexdClassifier *c)
{
  return c->n_classes;
}

const char *const *mexd_classifier_classes(const MexdClassifier *c)
{
  return (const char *const *)c->classes;
}

int64_t mexd_classifier_feature_dim(const MexdClassifier *c)
{
  return c->feature_dim;
}

gboolean mexd_classifier_has_diffusion(const MexdClassifier *c)
{
  return c->model && mexd_model_config(c->model)->has_diffusion;
}

MexdModel *mexd_classifier_model(MexdClassifier *c)
{
  return c->model;
}

static gboolean softmax_host(MexdTensor *logits, int C, float *probs, GError **error)
{
  float lg[MEXD_MAX_CLASSES];
  if (!mexd_tensor_read_f32(logits, lg, C, error))
    return FALSE;
  double m = lg[0], s = 0;
  for (int k = 1; k < C; k++)
    m = MAX(m, lg[k]);
  for (int k = 0; k < C; k++)
    s += exp(lg[k] - m);
  for (int k = 0; k < C; k++) {
    probs[k] = (float)(exp(lg[k] - m) / s);
    if (!isfinite(probs[k])) /* a NaN is never an answer */
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "the probability of class %d is not finite (logit %g): the computation "
                       "overflowed float32",
                       k, (double)lg[k]);
  }
  return TRUE;
}

gboolean mexd_classifier_predict(MexdClassifier *c, const float *x, int64_t n, int64_t d,
                                 const MexdForwardOptions *opt, gboolean prior_only, float *probs,
                                 float *spread, GError **error)
{
  for (int k = 0; spread && k < c->n_classes; k++)
    spread[k] = NAN;
  if (n < 1 || d != c->feature_dim)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "%s: a bag of %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                     " features; the model takes %" G_GINT64_FORMAT "-d features",
                     c->path, n, d, c->feature_dim);
  const int C = c->n_classes;
  if (c->kind == MEXD_CLASSIFIER_MEXD) {
    MexdForwardOptions o = opt ? *opt : MEXD_FORWARD_OPTIONS_DEFAULT;
    o.diffusion = !prior_only;
    g_autoptr(MexdResult) r = mexd_model_forward(c->model, x, n, d, &o, NULL, error);
    if (!r)
      return FALSE;
    memcpy(probs, r->has_probs ? r->probs : r->rho, sizeof(float) * C);
    if (spread && r->has_probs)
      memcpy(spread, r->spread, sizeof(float) * C);
    return TRUE;
  }
  g_autoptr(MexdTensor) tx =
      mexd_tensor_new_from_f32(c->be, MEXD_DTYPE_F32, 2, (int64_t[]){n, d}, x, error);
  if (!tx)
    return FALSE;
  if (c->kind == MEXD_CLASSIFIER_TRANSMIL) {
    g_autoptr(MexdTensor) logits = NULL;
    return mexd_transmil_run(&c->tm, tx, &logits, NULL, NULL, NULL, "a1", error) &&
           softmax_host(logits, C, probs, error);
  }
  g_autoptr(MexdVar) xv = mexd_var_take(g_steal_pointer(&tx), FALSE);
  g_autoptr(MexdVar) logits = NULL;
  return mexd_abmil_forward(&c->ab, NULL, xv, &logits, NULL, error) &&
         softmax_host(mexd_var_value(logits), C, probs, error);
}
