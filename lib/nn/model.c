/* model.c: the MExD model — configuration, loading, Dyn-MoE routing and the whole forward pass
 * (model.h; MEXD.md §2).
 *
 * Routing on the device: the E routers are one GEMM ([R,W]·[2E,W]ᵀ) and a softmax over pairs;
 * `paper` mode then marks the keep sets (mexd_route_keep), reads back only the E counts (one sync:
 * the block sizes decide the shapes of everything after), and ranks each expert's kept rows with
 * mexd_topk (descending, ties to the lower index, exactly MEXD.md's rule).  `official` mode
 * reproduces the authors' host-side rules (balancing table, ranking by router 0, zero rows for
 * empty experts), so it reads the [R,E,2] probabilities back and selects on the host.
 *
 * Decisions where MEXD.md is silent:
 * - official ranking uses a stable descending order (ties to the lower index): PyTorch's CPU sort
 *   of the authors' code is what the reference uses (tests/reference/README.md);
 * - official: the balancing average is the mean of the w_i in double, rounded to f32, compared in
 *   f32; c_r and Z are computed for every expert as in paper mode (the authors' code has none);
 *   an empty expert's centroid is the zero row's mean, i.e. 0;
 * - the result's spread is the population standard deviation over chains. */
#include "nn/model.h"

#include "core/error.h"
#include "io/safetensors.h"
#include "nn/config-json.h"
#include "nn/module.h"
#include "nn/nn.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

struct _MexdModel {
  MexdModelConfig cfg;
  MexdBackend *be;
  char *path;
  MexdTransMil a1, a2;
  MexdMoe moe;
  gboolean has_diffc;
  MexdDiffc dc;
};

/* ---- configuration ---- */

void mexd_model_config_clear(MexdModelConfig *cfg)
{
  g_clear_pointer(&cfg->classes, g_strfreev);
}

gboolean mexd_model_config_parse(MexdModelConfig *cfg, const char *json, const char *file,
                                 GError **error)
{
  memset(cfg, 0, sizeof *cfg);
  JsonObject *o;
  g_autoptr(JsonNode) parser = mexd_cfg_parse(json, file, &o, error);
  if (!parser)
    return FALSE;
  static const char *const keys[] = {
      "feature_dim",   "width",     "heads",   "landmarks", "pinv_iterations",
      "res_conv_taps", "classes",   "experts", "alpha",     "expert_of_class",
      "mode",          "diffusion", NULL};
  if (!mexd_cfg_check_keys(o, keys, "configuration", file, error))
    return FALSE;
  if (!mexd_cfg_get_int(o, "feature_dim", G_MININT, 1, 1 << 20, &cfg->feature_dim, file, error) ||
      !mexd_cfg_get_int(o, "width", 512, 1, 1 << 16, &cfg->width, file, error) ||
      !mexd_cfg_get_int(o, "heads", 8, 1, 1 << 10, &cfg->heads, file, error) ||
      !mexd_cfg_get_int(o, "landmarks", 256, 1, 1 << 14, &cfg->landmarks, file, error) ||
      !mexd_cfg_get_int(o, "pinv_iterations", 6, 0, 100, &cfg->pinv_iterations, file, error) ||
      !mexd_cfg_get_int(o, "res_conv_taps", 33, 1, 1023, &cfg->res_conv_taps, file, error) ||
      !mexd_cfg_get_int(o, "experts", G_MININT, 2, MEXD_MAX_EXPERTS, &cfg->experts, file, error))
    return FALSE;
  if (cfg->width % cfg->heads)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: width %d is not a multiple of heads %d", file,
                     cfg->width, cfg->heads);
  if (cfg->res_conv_taps % 2 == 0)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: res_conv_taps must be odd, not %d", file,
                     cfg->res_conv_taps);
  JsonArray *cls = mexd_cfg_get_array(o, "classes", 0, file, error);
  if (!cls)
    return FALSE;
  guint C = json_array_get_length(cls);
  if (C < 2 || C > MEXD_MAX_CLASSES)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %u classes; 2 to %d are supported", file, C,
                     MEXD_MAX_CLASSES);
  cfg->n_classes = (int)C;
  cfg->classes = g_new0(char *, C + 1);
  for (guint i = 0; i < C; i++) {
    JsonNode *n = json_array_get_element(cls, i);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING ||
        !*json_node_get_string(n))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: class %u is not a non-empty string", file, i);
    for (guint k = 0; k < i; k++)
      if (g_str_equal(cfg->classes[k], json_node_get_string(n)))
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: classes %u and %u are both named \"%s\" (an answer would be "
                         "ambiguous)",
                         file, k, i, cfg->classes[k]);
    cfg->classes[i] = g_strdup(json_node_get_string(n));
  }
  JsonArray *alpha = mexd_cfg_get_array(o, "alpha", (guint)cfg->experts, file, error);
  if (!alpha)
    return FALSE;
  for (int r = 0; r < cfg->experts; r++) {
    JsonNode *n = json_array_get_element(alpha, r);
    if (!JSON_NODE_HOLDS_VALUE(n) || (json_node_get_value_type(n) != G_TYPE_DOUBLE &&
                                      json_node_get_value_type(n) != G_TYPE_INT64))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: alpha[%d] is not a number", file, r);
    cfg->alpha[r] = json_node_get_double(n);
    if (!(cfg->alpha[r] > 0 && cfg->alpha[r] <= 1))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: alpha[%d] = %g is outside (0, 1]", file, r,
                       cfg->alpha[r]);
  }
  JsonArray *eoc = mexd_cfg_get_array(o, "expert_of_class", C, file, error);
  if (!eoc)
    return FALSE;
  for (guint c = 0; c < C; c++) {
    JsonNode *n = json_array_get_element(eoc, c);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) < 0 || json_node_get_int(n) >= cfg->experts)
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: expert_of_class[%u] must be an expert index 0..%d", file, c,
                       cfg->experts - 1);
    cfg->expert_of_class[c] = (int)json_node_get_int(n);
  }
  const char *mode = json_object_has_member(o, "mode")
                         ? json_object_get_string_member_with_default(o, "mode", "?")
                         : "paper";
  if (g_str_equal(mode, "paper"))
    cfg->mode = MEXD_ROUTE_PAPER;
  else if (g_str_equal(mode, "official"))
    cfg->mode = MEXD_ROUTE_OFFICIAL;
  else
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: mode must be \"paper\" or \"official\", not \"%s\"", file, mode);
  if (cfg->mode == MEXD_ROUTE_OFFICIAL && (cfg->experts < 2 || cfg->experts > 4))
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: official mode exists for 2, 3 or 4 experts (the authors' files), not %d",
                     file, cfg->experts);
  JsonNode *dn = json_object_get_member(o, "diffusion");
  if (dn && !JSON_NODE_HOLDS_NULL(dn)) {
    if (!JSON_NODE_HOLDS_OBJECT(dn))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: \"diffusion\" must be an object", file);
    JsonObject *d = json_node_get_object(dn);
    static const char *const dkeys[] = {"T", "beta_start", "beta_end", "width", "prior", NULL};
    cfg->has_diffusion = TRUE;
    if (!mexd_cfg_check_keys(d, dkeys, "diffusion configuration", file, error) ||
        !mexd_cfg_get_int(d, "T", 1000, 2, 100000, &cfg->T, file, error) ||
        !mexd_cfg_get_int(d, "width", 512, 1, 1 << 16, &cfg->diffusion_width, file, error) ||
        !mexd_cfg_get_num(d, "beta_start", 1e-4, &cfg->beta_start, file, error) ||
        !mexd_cfg_get_num(d, "beta_end", 0.02, &cfg->beta_end, file, error))
      return FALSE;
    const char *prior = json_object_has_member(d, "prior")
                            ? json_object_get_string_member_with_default(d, "prior", "?")
                            : "rho";
    if (!g_str_equal(prior, "rho") && !g_str_equal(prior, "none"))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: diffusion.prior must be \"rho\" or \"none\", not \"%s\"", file,
                       prior);
    cfg->prior_none = g_str_equal(prior, "none");
    if (!(cfg->beta_start > 0 && cfg->beta_start <= cfg->beta_end && cfg->beta_end < 1))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: the β range must satisfy 0 < beta_start ≤ beta_end < 1", file);
  }
  return TRUE;
}

char *mexd_model_config_to_json(const MexdModelConfig *cfg)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
#define INT(k, v)                                                                                  \
  json_builder_set_member_name(b, k);                                                              \
  json_builder_add_int_value(b, v)
  INT("feature_dim", cfg->feature_dim);
  INT("width", cfg->width);
  INT("heads", cfg->heads);
  INT("landmarks", cfg->landmarks);
  INT("pinv_iterations", cfg->pinv_iterations);
  INT("res_conv_taps", cfg->res_conv_taps);
  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (int c = 0; c < cfg->n_classes; c++)
    json_builder_add_string_value(b, cfg->classes[c]);
  json_builder_end_array(b);
  INT("experts", cfg->experts);
  json_builder_set_member_name(b, "alpha");
  json_builder_begin_array(b);
  for (int r = 0; r < cfg->experts; r++)
    json_builder_add_double_value(b, cfg->alpha[r]);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "expert_of_class");
  json_builder_begin_array(b);
  for (int c = 0; c < cfg->n_classes; c++)
    json_builder_add_int_value(b, cfg->expert_of_class[c]);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "mode");
  json_builder_add_string_value(b, cfg->mode == MEXD_ROUTE_OFFICIAL ? "official" : "paper");
  if (cfg->has_diffusion) {
    json_builder_set_member_name(b, "diffusion");
    json_builder_begin_object(b);
    INT("T", cfg->T);
    json_builder_set_member_name(b, "beta_start");
    json_builder_add_double_value(b, cfg->beta_start);
    json_builder_set_member_name(b, "beta_end");
    json_builder_add_double_value(b, cfg->beta_end);
    if (cfg->prior_none) {
      json_builder_set_member_name(b, "prior");
      json_builder_add_string_value(b, "none");
    }
    INT("width", cfg->diffusion_width);
    json_builder_end_object(b);
  }
#undef INT
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return json_to_string(root, FALSE);
}

/* ---- loading ---- */

void mexd_model_free(MexdModel *m)
{
  if (!m)
    return;
  mexd_transmil_clear(&m->a1);
  mexd_transmil_clear(&m->a2);
  mexd_moe_clear(&m->moe);
  if (m->has_diffc)
    mexd_diffc_clear(&m->dc);
  mexd_model_config_clear(&m->cfg);
  g_clear_pointer(&m->be, mexd_backend_unref);
  g_free(m->path);
  g_free(m);
}

MexdModel *mexd_model_load(const char *path, MexdBackend *be, GError **error)
{
  if (!path || !be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_model_load: NULL %s",
                          path ? "backend" : "path");
  const char *json;
  g_autoptr(MexdSafetensors) st = mexd_cfg_open(path, "mexd-model/1", "model", &json, error);
  if (!st)
    return NULL;
  MexdModel *m = g_new0(MexdModel, 1);
  m->be = mexd_backend_ref(be);
  m->path = g_strdup(path);
  if (!mexd_model_config_parse(&m->cfg, json, path, error)) {
    mexd_model_free(m);
    return NULL;
  }
  const MexdModelConfig *c = &m->cfg;
  MexdAttnShape s = {c->width, c->heads, c->landmarks, c->pinv_iterations, c->res_conv_taps};
  MexdWeights w;
  mexd_weights_init(&w, st, be);
  int W = c->width;
  MexdParamSource src = mexd_param_source_weights(&w);
  gboolean ok =
      mexd_transmil_init(&m->a1, &src, "adapter1", c->feature_dim, c->n_classes, &s, error) &&
      mexd_transmil_init(&m->a2, &src, "adapter2", W, c->n_classes, &s, error) &&
      mexd_moe_init(&m->moe, &src, c->experts, W, error);
  if (ok && c->has_diffusion) {
    ok = mexd_diffc_load(&m->dc, &w, c->n_classes, W, c->diffusion_width, c->T, c->beta_start,
                         c->beta_end, error);
    m->has_diffc = ok;
  }
  ok = ok && mexd_weights_check_all_taken(&w, error);
  mexd_weights_clear(&w);
  if (!ok) {
    mexd_model_free(m);
    return NULL;
  }
  return m;
}

const MexdModelConfig *mexd_model_config(const MexdModel *m)
{
  return &m->cfg;
}

MexdBackend *mexd_model_backend(const MexdModel *m)
{
  return m->be;
}

gboolean mexd_model_set_mode(MexdModel *m, MexdRouteMode mode, GError **error)
{
  if (mode == MEXD_ROUTE_OFFICIAL && (m->cfg.experts < 2 || m->cfg.experts > 4))
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: official mode exists for 2, 3 or 4 experts (the authors' files), not %d",
                     m->path, m->cfg.experts);
  m->cfg.mode = mode;
  return TRUE;
}

MexdDiffc *mexd_model_get_diffc(MexdModel *m)
{
  return m->has_diffc ? &m->dc : NULL;
}

/* ---- routing ---- */

typedef struct {
  int64_t n;      /* selected rows */
  int32_t *idx;   /* host copy */
  MexdTensor *ti; /* i32 [n] on the device */
  gboolean zero_row;
} Block;

static void block_clear(Block *b)
{
  g_clear_pointer(&b->idx, g_free);
  g_clear_pointer(&b->ti, mexd_tensor_unref);
}

/* k = floor(n·α) in double, like Python's int(); 0 → all n */
static int64_t top_count(int64_t n, double alpha)
{
  int64_t k = (int64_t)floor((double)n * alpha);
  return k == 0 ? n : k;
}

gboolean mexd_moe_route_paper(MexdTensor *probs, int E, const double *alpha, int64_t *n_sel,
                              int32_t **sel, MexdTensor **ti, GError **error)
{
  if (!probs || probs->ndim != 3 || probs->shape[1] != E || probs->shape[2] != 2 || E < 1 ||
      E > MEXD_MAX_EXPERTS)
    return mexd_fail(error, MEXD_ERROR_SHAPE, "Dyn-MoE routing: the probabilities must be [R, %d, 2]",
                     E);
  MexdBackend *be = probs->backend;
  int64_t R = probs->shape[0];
  g_autoptr(MexdTensor) gate = mexd_tensor_new_2d(be, MEXD_DTYPE_F32, E, R, error);
  g_autoptr(MexdTensor) masked = gate ? mexd_tensor_new_2d(be, MEXD_DTYPE_F32, E, R, error) : NULL;
  g_autoptr(MexdTensor) counts = masked ? mexd_tensor_new_1d(be, MEXD_DTYPE_I32, E, error) : NULL;
  int32_t cnt[MEXD_MAX_EXPERTS];
  if (!counts || !mexd_route_keep(gate, masked, counts, probs, error) ||
      !mexd_tensor_read(counts, cnt, sizeof(int32_t) * E, error))
    return FALSE;
  for (int r = 0; r < E; r++) {
    int64_t k = cnt[r] == 0 ? 1 : top_count(cnt[r], alpha[r]);
    g_autoptr(MexdTensor) row = mexd_tensor_rows(cnt[r] == 0 ? gate : masked, r, 1, error);
    g_autoptr(MexdTensor) row1 = row ? mexd_tensor_reshape(row, 1, (int64_t[]){R}, error) : NULL;
    g_autoptr(MexdTensor) i1 = row1 ? mexd_tensor_new_1d(be, MEXD_DTYPE_I32, k, error) : NULL;
    g_autoptr(MexdTensor) v1 = i1 ? mexd_tensor_new_1d(be, MEXD_DTYPE_F32, k, error) : NULL;
    if (!v1 || !mexd_topk(v1, i1, row1, error))
      return FALSE;
    n_sel[r] = k;
    sel[r] = g_new(int32_t, k);
    if (!mexd_tensor_read(i1, sel[r], sizeof(int32_t) * k, error))
      return FALSE;
    if (ti)
      ti[r] = g_steal_pointer(&i1);
  }
  return TRUE;
}

static gboolean route_paper(MexdModel *m, MexdTensor *probs, Block *blk, GError **error)
{
  int E = m->cfg.experts;
  int64_t n[MEXD_MAX_EXPERTS];
  int32_t *sel[MEXD_MAX_EXPERTS] = {NULL};
  MexdTensor *ti[MEXD_MAX_EXPERTS] = {NULL};
  gboolean ok = mexd_moe_route_paper(probs, E, m->cfg.alpha, n, sel, ti, error);
  for (int r = 0; r < E; r++) { /* the blocks own what was made, also after a failure */
    blk[r].n = sel[r] ? n[r] : 0;
    blk[r].idx = sel[r];
    blk[r].ti = ti[r];
  }
  return ok;
}

/* The authors' per-file balancing rules (MEXD.md §2 table).  rule: 0 none, 1 "w < avg",
 * 2 "w ≤ avg". */
typedef struct {
  int if_empty_keep, if_full_drop;
} Balance;

static Balance official_rule(int E, int r)
{
  static const Balance e2[2] = {{0, 0}, {2, 1}};
  static const Balance e3[3] = {{1, 2}, {1, 1}, {0, 1}};
  static const Balance e4[4] = {{1, 2}, {1, 1}, {1, 1}, {0, 0}};
  return E == 2 ? e2[r] : E == 3 ? e3[r] : e4[r];
}

static gboolean cmp_rule(int rule, float w, float avg)
{
  return rule == 1 ? w < avg : w <= avg;
}

typedef struct {
  float key;
  int32_t i;
} Ranked;

static int ranked_desc(const void *a, const void *b)
{
  const Ranked *x = a, *y = b;
  if (x->key != y->key)
    return x->key > y->key ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

static gboolean route_official(MexdModel *m, MexdTensor *probs, int64_t R, Block *blk,
                               GError **error)
{
  int E = m->cfg.experts;
  g_autofree float *p = mexd_tensor_dup_f32(probs, error); /* [R,E,2] */
  if (!p)
    return FALSE;
  g_autofree gboolean *keep = g_new(gboolean, R);
  g_autofree float *w = g_new(float, R);
  g_autofree Ranked *rk = g_new(Ranked, R);
  for (int r = 0; r < E; r++) {
    int64_t n = 0;
    double sum = 0;
    for (int64_t i = 0; i < R; i++) {
      float p0 = p[(i * E + r) * 2], p1 = p[(i * E + r) * 2 + 1];
      keep[i] = p1 > p0;
      n += keep[i];
      w[i] = fmaxf(p0, p1);
      sum += w[i];
    }
    float avg = (float)(sum / (double)R);
    Balance bal = official_rule(E, r);
    if (n == 0 && bal.if_empty_keep) {
      for (int64_t i = 0; i < R; i++)
        n += keep[i] = cmp_rule(bal.if_empty_keep, w[i], avg);
    } else if (n == R && bal.if_full_drop) {
      for (int64_t i = 0; i < R; i++)
        if (cmp_rule(bal.if_full_drop, w[i], avg)) {
          keep[i] = FALSE;
          n--;
        }
    }
    if (E == 2 && r == 1 && !(n > 0 && n < R))
      return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                       "official mode: the authors' 2-expert code requires 0 < n_1 < Np "
                       "instances kept by router 1 after balancing; here n_1 = %" G_GINT64_FORMAT
                       " of Np = %" G_GINT64_FORMAT " (it aborts on such a bag; use paper mode)",
                       n, R);
    if (n == 0) {
      blk[r].zero_row = TRUE;
      blk[r].n = 0;
      blk[r].idx = g_new(int32_t, 1);
      continue;
    }
    int64_t k = top_count(n, m->cfg.alpha[r]);
    blk[r].n = k;
    blk[r].idx = g_new(int32_t, k);
    if ((int64_t)floor((double)n * m->cfg.alpha[r]) == 0) { /* all, ascending instance order */
      for (int64_t i = 0, j = 0; i < R; i++)
        if (keep[i])
          blk[r].idx[j++] = (int32_t)i;
      continue;
    }
    int64_t j = 0;
    for (int64_t i = 0; i < R; i++)
      if (keep[i]) {
        /* ranked by router 0's max probability */
        rk[j].key = fmaxf(p[(i * E) * 2], p[(i * E) * 2 + 1]);
        rk[j].i = (int32_t)i;
        j++;
      }
    qsort(rk, (size_t)n, sizeof *rk, ranked_desc);
    for (int64_t q = 0; q < k; q++)
      blk[r].idx[q] = rk[q].i;
  }
  for (int r = 0; r < E; r++)
    if (!blk[r].zero_row &&
        (!(blk[r].ti = mexd_tensor_new_1d(m->be, MEXD_DTYPE_I32, blk[r].n, error)) ||
         !mexd_tensor_write(blk[r].ti, blk[r].idx, sizeof(int32_t) * blk[r].n, error)))
      return FALSE;
  return TRUE;
}

/* ---- forward ---- */

void mexd_result_free(MexdResult *r)
{
  if (!r)
    return;
  g_free(r->gates);
  g_free(r->attention);
  g_free(r->logits1);
  if (r->selected)
    for (int e = 0; e < r->experts; e++)
      g_free(r->selected[e]);
  g_free(r->selected);
  g_free(r->n_selected);
  g_free(r->zero_row);
  g_free(r->c);
  g_free(r->z);
  g_free(r->logits2);
  g_free(r->rho);
  g_free(r->probs);
  g_free(r->spread);
  g_free(r->f0);
  g_free(r);
}

static gboolean check_input(MexdModel *m, const float *x, int64_t n, int64_t d, GError **error)
{
  if (n <= 0)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "the bag has %" G_GINT64_FORMAT " instances; at least one is needed", n);
  if (d != m->cfg.feature_dim)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "the bag's features are %" G_GINT64_FORMAT "-dimensional but %s expects %d", d,
                     m->path, m->cfg.feature_dim);
  if (!x)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the bag's features are NULL");
  for (int64_t i = 0; i < n * d; i++)
    if (!isfinite(x[i]))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "instance %" G_GINT64_FORMAT ", feature %" G_GINT64_FORMAT
                       " is %s: features must be finite",
                       i / d, i % d, isnan(x[i]) ? "NaN" : "infinite");
  return TRUE;
}

/* A NaN or Inf in the prior or the probabilities is not an answer: finite features and weights
 * can still overflow float32 on the way (features of 1e30). */
static gboolean check_output(const MexdResult *r, const float *x, int64_t nx, GError **error)
{
  for (int c = 0; c < r->n_classes; c++) {
    float v = r->rho[c], p = r->has_probs ? r->probs[c] : 0.0f;
    if (isfinite(v) && isfinite(p))
      continue;
    double big = 0;
    for (int64_t i = 0; x && i < nx; i++)
      big = MAX(big, fabs((double)x[i]));
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "the model's output is not finite (%s[%d] = %g): the computation overflowed "
                     "float32 (the largest |feature| is %g)",
                     isfinite(v) ? "probability" : "prior", c, isfinite(v) ? (double)p : (double)v,
                     big);
  }
  return TRUE;
}

static double now_ms(void)
{
  return (double)g_get_monotonic_time() / 1000.0;
}

/* Diff-C over S chains conditioned on z [1, W] and rho [1, C] (device tensors): fills f0, probs,
 * spread, chains and predicted of res. */
static gboolean run_diffusion(MexdModel *m, MexdTensor *z, MexdTensor *rho,
                              const MexdForwardOptions *opt, MexdResult *res, GError **error)
{
  const int C = m->cfg.n_classes;
  MexdBackend *be = m->be;
  MexdDiffcCond cond;
  int S = opt->chains;
  g_autoptr(MexdTensor) f0 = NULL;
  if (S < 1 || S > 4096)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "chains must be 1 to 4096, not %d", S);
  /* the pure-noise ablation (docs/TRAINING.md): the chains start at pure noise, the denoiser
   * sees ρ = 0 */
  g_autoptr(MexdTensor) zero_rho =
      m->cfg.prior_none ? mexd_tensor_new_zeros(be, MEXD_DTYPE_F32, 2, (int64_t[]){1, C}, error)
                        : NULL;
  if (m->cfg.prior_none && !zero_rho)
    return FALSE;
  if (!mexd_diffc_condition(&m->dc, &cond, z, zero_rho ? zero_rho : rho, error))
    return FALSE;
  gboolean dok =
      (f0 = mexd_tensor_new_2d(be, MEXD_DTYPE_F32, S, C, error)) &&
      mexd_diffc_sample(&m->dc, &cond, opt->sampler == MEXD_SAMPLER_CARD ? 0 : opt->steps,
                        opt->eta, S, opt->seed, f0, error) &&
      (res->f0 = mexd_tensor_dup_f32(f0, error));
  mexd_diffc_cond_clear(&cond);
  if (!dok)
    return FALSE;
  res->chains = S;
  res->has_probs = TRUE;
  res->probs = g_new(float, C);
  res->spread = g_new(float, C);
  mexd_diffc_readout(res->f0, S, C, res->probs, res->spread);
  res->predicted = 0;
  for (int k = 1; k < C; k++)
    if (res->probs[k] > res->probs[res->predicted])
      res->predicted = k;
  return TRUE;
}

static gboolean forward_body(MexdModel *m, const float *x, int64_t n, int64_t d,
                             const MexdForwardOptions *opt, MexdTrace *trace, MexdResult *res,
                             Block *blk, GError **error)
{
  const MexdModelConfig *c = &m->cfg;
  MexdBackend *be = m->be;
  int E = c->experts, C = c->n_classes;
  gboolean paper = c->mode == MEXD_ROUTE_PAPER;
  double t0 = now_ms();

  g_autoptr(MexdTensor) tx =
      mexd_tensor_new_from_f32(be, MEXD_DTYPE_F32, 2, (int64_t[]){n, d}, x, error);
  g_autoptr(MexdTensor) logits1 = NULL, out1 = NULL, att1 = NULL;
  if (!tx ||
      !mexd_transmil_run(&m->a1, tx, &logits1, &out1, &att1, trace, "a1", error))
    return FALSE;
  if (!(res->attention = mexd_tensor_dup_f32(att1, error)))
    return FALSE;
  g_clear_pointer(&tx, mexd_tensor_unref);
  res->logits1 = mexd_tensor_dup_f32(logits1, error);
  if (!res->logits1)
    return FALSE;
  double t1 = now_ms();
  res->ms_adapter1 = t1 - t0;

  int64_t Np = out1->shape[0] - 1, R = paper ? n : Np;
  g_autoptr(MexdTensor) PR = mexd_tensor_rows(out1, 1, R, error);
  g_autoptr(MexdVar) P = PR ? mexd_var_new(PR, FALSE) : NULL;
  g_autoptr(MexdVar) gates = P ? mexd_moe_gates(&m->moe, NULL, P, error) : NULL;
  if (!gates)
    return FALSE;
  MexdTensor *probs = mexd_var_value(gates);
  if (trace) {
    g_autoptr(MexdTensor) pt = mexd_tensor_new(be, MEXD_DTYPE_F32, 3, (int64_t[]){E, R, 2}, error);
    if (!pt || !mexd_permute(pt, probs, (int[]){1, 0, 2}, error) ||
        !mexd_trace_put(trace, NULL, "moe.probs", pt, error))
      return FALSE;
  }
  if (!(paper ? route_paper(m, probs, blk, error) : route_official(m, probs, R, blk, error)))
    return FALSE;
  /* the gates of every routed row, for heatmaps (one read of [R, E, 2] after the routing) */
  {
    g_autofree float *ph = mexd_tensor_dup_f32(probs, error);
    if (!ph)
      return FALSE;
    res->n_routed = R;
    res->gates = g_new(float, (size_t)E * R);
    for (int r = 0; r < E; r++)
      for (int64_t i = 0; i < R; i++)
        res->gates[(size_t)r * R + i] = ph[(i * E + r) * 2 + 1];
  }

  /* blocks (gated in paper mode), centroids, classifier confidences, insight Z */
  {
    MexdMoeBlock mb[MEXD_MAX_EXPERTS];
    for (int r = 0; r < E; r++)
      mb[r] = (MexdMoeBlock){blk[r].ti, blk[r].n, blk[r].zero_row};
    MexdMoeHead head;
    if (!mexd_moe_head(&m->moe, NULL, P, gates, mb, paper, TRUE, &head, error))
      return FALSE;
    g_autoptr(MexdTensor) a2in = mexd_tensor_ref(mexd_var_value(head.rows));
    g_autoptr(MexdTensor) cvec = mexd_tensor_ref(mexd_var_value(head.c));
    g_autoptr(MexdTensor) z = mexd_tensor_ref(mexd_var_value(head.z));
    gboolean bok = mexd_trace_put(trace, NULL, "moe.centroid", mexd_var_value(head.cent), error) &&
                   mexd_trace_put(trace, NULL, "moe.c", cvec, error) &&
                   mexd_trace_put(trace, NULL, "moe.z", z, error) &&
                   mexd_trace_put(trace, NULL, "moe.rows", a2in, error);
    mexd_moe_head_clear(&head);
    if (!bok)
      return FALSE;
    g_clear_pointer(&gates, mexd_var_unref);
    g_clear_pointer(&P, mexd_var_unref);
    g_clear_pointer(&PR, mexd_tensor_unref);
    g_clear_pointer(&out1, mexd_tensor_unref);
    double t2 = now_ms();
    g_autoptr(MexdTensor) logits2 = NULL;
    g_autoptr(MexdTensor) rho = NULL;
    if (!mexd_transmil_run(&m->a2, a2in, &logits2, NULL, NULL, trace, "a2", error))
      return FALSE;
    if (!(rho = mexd_tensor_new_2d(be, MEXD_DTYPE_F32, 1, C, error)) ||
        !mexd_softmax_rows(rho, logits2, error) || !mexd_trace_put(trace, NULL, "rho", rho, error))
      return FALSE;
    if (!(res->c = mexd_tensor_dup_f32(cvec, error)) || !(res->z = mexd_tensor_dup_f32(z, error)) ||
        !(res->logits2 = mexd_tensor_dup_f32(logits2, error)) ||
        !(res->rho = mexd_tensor_dup_f32(rho, error)))
      return FALSE;
    double t3 = now_ms();
    res->ms_moe = t3 - t1;
    (void)t2;
    res->predicted = 0;
    for (int k = 1; k < C; k++)
      if (res->rho[k] > res->rho[res->predicted])
        res->predicted = k;

    if (opt->diffusion && m->has_diffc) {
      if (!run_diffusion(m, z, rho, opt, res, error))
        return FALSE;
      res->ms_diffusion = now_ms() - t3;
    }
  }
  return TRUE;
}

MexdResult *mexd_model_forward(MexdModel *m, const float *x, int64_t n, int64_t d,
                               const MexdForwardOptions *opt, MexdTrace *trace, GError **error)
{
  MexdForwardOptions defaults = MEXD_FORWARD_OPTIONS_DEFAULT;
  if (!opt)
    opt = &defaults;
  if (!m)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_model_forward: NULL model");
  if (!check_input(m, x, n, d, error))
    return NULL;
  int E = m->cfg.experts;
  g_autoptr(MexdResult) res = g_new0(MexdResult, 1);
  res->n_classes = m->cfg.n_classes;
  res->experts = E;
  res->width = m->cfg.width;
  res->n_instances = n;
  Block blk[MEXD_MAX_EXPERTS];
  memset(blk, 0, sizeof blk);
  gboolean ok = forward_body(m, x, n, d, opt, trace, res, blk, error);
  if (ok) {
    res->n_selected = g_new(int64_t, E);
    res->selected = g_new0(int32_t *, E);
    res->zero_row = g_new(gboolean, E);
    for (int r = 0; r < E; r++) {
      res->n_selected[r] = blk[r].n;
      res->zero_row[r] = blk[r].zero_row;
      res->selected[r] = g_steal_pointer(&blk[r].idx);
    }
  }
  for (int r = 0; r < E; r++)
    block_clear(&blk[r]);
  if (ok)
    ok = check_output(res, x, n * d, error);
  return ok ? g_steal_pointer(&res) : NULL;
}

MexdResult *mexd_model_diffuse(MexdModel *m, const float *z, const float *rho,
                               const MexdForwardOptions *opt, GError **error)
{
  MexdForwardOptions defaults = MEXD_FORWARD_OPTIONS_DEFAULT;
  if (!opt)
    opt = &defaults;
  if (!m || !z || !rho)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_model_diffuse: NULL %s",
                          !m ? "model" : !z ? "z" : "rho");
  if (!m->has_diffc)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "the model has no diffusion classifier (Diff-C weights)");
  const int C = m->cfg.n_classes, W = m->cfg.width;
  for (int k = 0; k < C; k++)
    if (!isfinite(rho[k]))
      return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "rho[%d] is not finite", k);
  for (int k = 0; k < W; k++)
    if (!isfinite(z[k]))
      return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "z[%d] is not finite", k);
  g_autoptr(MexdResult) res = g_new0(MexdResult, 1);
  res->n_classes = C;
  res->experts = 0; /* no routing in this result */
  res->width = W;
  res->rho = g_memdup2(rho, sizeof(float) * C);
  res->z = g_memdup2(z, sizeof(float) * W);
  g_autoptr(MexdTensor) tz =
      mexd_tensor_new_from_f32(m->be, MEXD_DTYPE_F32, 2, (int64_t[]){1, W}, z, error);
  g_autoptr(MexdTensor) tr =
      tz ? mexd_tensor_new_from_f32(m->be, MEXD_DTYPE_F32, 2, (int64_t[]){1, C}, rho, error)
         : NULL;
  double t0 = now_ms();
  if (!tr || !run_diffusion(m, tz, tr, opt, res, error))
    return NULL;
  res->ms_diffusion = now_ms() - t0;
  return g_steal_pointer(&res);
}
