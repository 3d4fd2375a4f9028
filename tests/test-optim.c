/* test-optim.c: lib/train/optim.c against PyTorch (tests/reference/gen_optim.py, torch 1.13 →
 * tests/fixtures/optim/).
 *
 * Each optimizer runs the fixtures' 14 gradient sets from the same initial parameters and is
 * compared after every step with torch's parameters, two ways:
 *   - the parameters, normwise relative error ≤ 1e-6;
 *   - the displacement from the initial values (p_t − p_0 against torch's), normwise relative
 *     ≤ 2e-5, because with a small lr the parameters hardly move and a 1e-6 on them alone would
 *     not see a wrong update.  Each float32 parameter carries a rounding of half an ulp of |p|
 *     ~ 6e-8 (|p| ~ 1) per step, so a displacement of ~1e-2 after one step already has ~6e-6 of
 *     rounding in it when torch rounds one operation differently (its vectorised kernels use FMA
 *     where the C rounds twice); the lr 2e-4 case moves ~2e-4 per step and gets 1e-3.
 * clip_grad_norm against torch's norm (float32, 1e-6) and an exact double norm (1e-12), and the
 * scaled gradients (1e-6).  Resume: for every split point, stepping s times, saving the state to a
 * safetensors file in memory and restoring it into a fresh optimizer (params copied) continues
 * bit-identically to an uninterrupted run; so does state_foreach/state_set.  Errors last. */
#include "mexd.h"
#include "fixture-dir.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#define STEPS_MAX 64

static char *fixtures;

typedef struct {
  int n_params;
  char **names;
  int64_t *sizes;
  int64_t total;
  float *init;         /* total */
  int steps;
  float *grads[STEPS_MAX]; /* each total */
} Inputs;

static Inputs in;

static JsonNode *load_json(const char *name)
{
  g_autofree char *path = g_build_filename(fixtures, name, NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = NULL;
  if (!json_parser_load_from_file(parser, path, &error))
    g_error("%s: %s", path, error->message);
  return json_node_copy(json_parser_get_root(parser));
}

/* A base64 float32 array of `n` values. */
static float *b64_floats(const char *s, int64_t n)
{
  gsize len;
  guchar *raw = g_base64_decode(s, &len);
  g_assert_cmpuint(len, ==, (gsize)n * 4);
  float *f = g_new(float, n);
  memcpy(f, raw, len);
  g_free(raw);
  return f;
}

static void load_inputs(void)
{
  JsonNode *root = load_json("inputs.json");
  JsonObject *o = json_node_get_object(root);
  JsonArray *ps = json_object_get_array_member(o, "params");
  in.n_params = (int)json_array_get_length(ps);
  in.names = g_new0(char *, in.n_params + 1);
  in.sizes = g_new(int64_t, in.n_params);
  in.init = NULL;
  GByteArray *init = g_byte_array_new();
  for (int i = 0; i < in.n_params; i++) {
    JsonObject *p = json_array_get_object_element(ps, i);
    in.names[i] = g_strdup(json_object_get_string_member(p, "name"));
    JsonArray *shape = json_object_get_array_member(p, "shape");
    int64_t n = 1;
    for (guint d = 0; d < json_array_get_length(shape); d++)
      n *= json_array_get_int_element(shape, d);
    in.sizes[i] = n;
    g_autofree float *v = b64_floats(json_object_get_string_member(p, "init"), n);
    g_byte_array_append(init, (guint8 *)v, (guint)(n * 4));
    in.total += n;
  }
  in.init = (float *)g_byte_array_free(init, FALSE);
  in.steps = (int)json_object_get_int_member(o, "steps");
  g_assert_cmpint(in.steps, <=, STEPS_MAX);
  JsonArray *gs = json_object_get_array_member(o, "grads");
  g_assert_cmpint((int)json_array_get_length(gs), ==, in.steps);
  for (int s = 0; s < in.steps; s++)
    in.grads[s] = b64_floats(json_array_get_string_element(gs, s), in.total);
  json_node_unref(root);
}

/* A run: the parameters and gradients as one buffer each, one group per input parameter. */
typedef struct {
  float *params, *grads;
} Run;

static void run_init(Run *r, const float *from)
{
  r->params = g_memdup2(from ? from : in.init, (gsize)in.total * sizeof(float));
  r->grads = g_new0(float, in.total);
}

static void run_clear(Run *r)
{
  g_free(r->params);
  g_free(r->grads);
}

/* The optimizer a case's "optimizer" object describes, with the run's parameters registered. */
static MexdOptim *make_optim(JsonObject *c, Run *r)
{
  MexdAdamConfig cfg;
  mexd_adam_config_init(&cfg);
  cfg.lr = json_object_get_double_member(c, "lr");
  cfg.beta1 = json_object_get_double_member(c, "beta1");
  cfg.beta2 = json_object_get_double_member(c, "beta2");
  cfg.eps = json_object_get_double_member(c, "eps");
  cfg.weight_decay = json_object_get_double_member(c, "weight_decay");
  cfg.decoupled_weight_decay = json_object_get_boolean_member(c, "decoupled");
  const char *kind = json_object_get_string_member(c, "kind");
  g_autoptr(GError) error = NULL;
  MexdOptim *o = !strcmp(kind, "adam") ? mexd_optim_adam_new(&cfg, &error)
                                       : mexd_optim_radam_new(&cfg, &error);
  g_assert_no_error(error);
  /* half of the parameters before wrapping, half through the wrapper */
  int before = json_object_has_member(c, "lookahead_k") ? in.n_params / 2 : in.n_params;
  int64_t off = 0;
  for (int i = 0; i < before; i++) {
    g_assert_true(mexd_optim_add_param(o, in.names[i], r->params + off, r->grads + off,
                                       in.sizes[i], &error));
    off += in.sizes[i];
  }
  if (json_object_has_member(c, "lookahead_k")) {
    const char *init = json_object_get_string_member(c, "lookahead_init");
    o = mexd_optim_lookahead_new(o, json_object_get_double_member(c, "lookahead_alpha"),
                                 (int)json_object_get_int_member(c, "lookahead_k"),
                                 !strcmp(init, "timm") ? MEXD_LOOKAHEAD_TIMM
                                                       : MEXD_LOOKAHEAD_INIT_AT_CREATION,
                                 &error);
    g_assert_no_error(error);
    g_assert_cmpint(mexd_optim_kind(o), ==, MEXD_OPTIM_LOOKAHEAD);
    for (int i = before; i < in.n_params; i++) {
      g_assert_true(mexd_optim_add_param(o, in.names[i], r->params + off, r->grads + off,
                                         in.sizes[i], &error));
      off += in.sizes[i];
    }
  }
  g_assert_cmpint(mexd_optim_n_params(o), ==, in.n_params);
  g_assert_cmpint(off, ==, in.total);
  return o;
}

/* Step `s` (0-based): the gradients in, clipped when the case says so, one step. */
static void do_step(JsonObject *c, MexdOptim *o, Run *r, int s)
{
  memcpy(r->grads, in.grads[s], (size_t)in.total * sizeof(float));
  if (json_object_has_member(c, "clip")) {
    float *gp[64];
    int64_t off = 0;
    for (int i = 0; i < in.n_params; i++) {
      gp[i] = r->grads + off;
      off += in.sizes[i];
    }
    mexd_clip_grad_norm(gp, in.sizes, in.n_params, json_object_get_double_member(c, "clip"));
  }
  mexd_optim_step(o);
}

static const char *const CASES[] = {
  "adam", "adam-wd", "adamw", "clip-adam", "radam", "radam-l2", "radam-dwd", "lookahead-radam",
  "lookahead-radam-mexd", "lookahead-init-adam",
};

static void test_vs_torch(gconstpointer data)
{
  const char *name = data;
  g_autofree char *file = g_strdup_printf("%s.json", name);
  JsonNode *root = load_json(file);
  JsonObject *o = json_node_get_object(root);
  JsonObject *c = json_object_get_object_member(o, "optimizer");
  JsonArray *after = json_object_get_array_member(o, "after");
  g_assert_cmpint((int)json_array_get_length(after), ==, in.steps);
  Run r;
  run_init(&r, NULL);
  g_autoptr(MexdOptim) opt = make_optim(c, &r);
  g_autofree float *disp = g_new(float, in.total);
  g_autofree float *ref_disp = g_new(float, in.total);
  double disp_tol = json_object_get_double_member(c, "lr") < 1e-3 ? 1e-3 : 2e-5;
  double worst_p = 0, worst_d = 0;
  for (int s = 0; s < in.steps; s++) {
    do_step(c, opt, &r, s);
    g_assert_cmpint(mexd_optim_get_step(opt), ==, s + 1);
    g_autofree float *ref = b64_floats(json_array_get_string_element(after, s), in.total);
    g_autofree char *what = g_strdup_printf("%s step %d", name, s + 1);
    int64_t w;
    double e = mexd_test_rel_err(r.params, ref, in.total, &w);
    if (!(e <= 1e-6))
      g_error("%s: parameters: relative error %.3g > 1e-6 (element %" G_GINT64_FORMAT
              ": %.9g vs %.9g)", what, e, w, r.params[w], ref[w]);
    for (int64_t i = 0; i < in.total; i++) {
      disp[i] = r.params[i] - in.init[i];
      ref_disp[i] = ref[i] - in.init[i];
    }
    double ed = mexd_test_rel_err(disp, ref_disp, in.total, &w);
    if (!(ed <= disp_tol))
      g_error("%s: displacement: relative error %.3g > %.1g (element %" G_GINT64_FORMAT
              ": %.9g vs %.9g)", what, ed, disp_tol, w, disp[w], ref_disp[w]);
    worst_p = MAX(worst_p, e);
    worst_d = MAX(worst_d, ed);
  }
  g_test_message("%s: worst relative error: parameters %.3g, displacement %.3g", name, worst_p,
                 worst_d);
  run_clear(&r);
  json_node_unref(root);
}

static void test_clip(void)
{
  JsonNode *root = load_json("clip.json");
  JsonArray *cases = json_object_get_array_member(json_node_get_object(root), "cases");
  g_assert_cmpint((int)json_array_get_length(cases), >=, in.steps * 2);
  int scaled = 0, kept = 0;
  for (guint k = 0; k < json_array_get_length(cases); k++) {
    JsonObject *c = json_array_get_object_element(cases, k);
    int s = (int)json_object_get_int_member(c, "step");
    double max_norm = json_object_get_double_member(c, "max_norm");
    g_autofree float *g = g_memdup2(in.grads[s], (gsize)in.total * sizeof(float));
    float *gp[64];
    int64_t off = 0;
    for (int i = 0; i < in.n_params; i++) {
      gp[i] = g + off;
      off += in.sizes[i];
    }
    double norm = mexd_clip_grad_norm(gp, in.sizes, in.n_params, max_norm);
    double tnorm = json_object_get_double_member(c, "norm");
    double norm64 = json_object_get_double_member(c, "norm64");
    g_assert_cmpfloat(fabs(norm - norm64), <=, 1e-12 * norm64);
    g_assert_cmpfloat(fabs(norm - tnorm), <=, 1e-6 * tnorm);
    g_autofree float *ref = b64_floats(json_object_get_string_member(c, "grads"), in.total);
    g_autofree char *what = g_strdup_printf("clip step %d max_norm %g", s, max_norm);
    mexd_test_assert_close(what, g, in.total, ref, in.total, 1e-6);
    if (memcmp(g, in.grads[s], (size_t)in.total * sizeof(float)))
      scaled++;
    else
      kept++;
  }
  g_assert_cmpint(scaled, >, 5);
  g_assert_cmpint(kept, >, 5);
  /* nothing to clip, and a non-finite norm leaves the gradients alone */
  g_assert_cmpfloat(mexd_clip_grad_norm(NULL, NULL, 0, 1.0), ==, 0.0);
  float bad[3] = {1, INFINITY, 2};
  float *bp[1] = {bad};
  int64_t bn[1] = {3};
  g_assert_true(isinf(mexd_clip_grad_norm(bp, bn, 1, 1.0)));
  g_assert_cmpfloat(bad[0], ==, 1);
  json_node_unref(root);
}

/* ---- resume ---- */

typedef struct {
  GHashTable *arrays; /* name -> GBytes */
} Snapshot;

static gboolean snap_one(const char *name, MexdStDType dtype, const void *data, int64_t n,
                         gpointer user_data, GError **error)
{
  Snapshot *sn = user_data;
  g_assert_false(g_hash_table_contains(sn->arrays, name));
  g_hash_table_insert(sn->arrays, g_strdup(name),
                      g_bytes_new(data, (gsize)n * mexd_st_dtype_size(dtype)));
  return TRUE;
}

static void snapshot(MexdOptim *o, Snapshot *sn)
{
  sn->arrays = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     (GDestroyNotify)g_bytes_unref);
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_optim_state_foreach(o, snap_one, sn, &error));
}

static void assert_same_state(MexdOptim *a, MexdOptim *b)
{
  Snapshot sa, sb;
  snapshot(a, &sa);
  snapshot(b, &sb);
  g_assert_cmpuint(g_hash_table_size(sa.arrays), ==, g_hash_table_size(sb.arrays));
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, sa.arrays);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    GBytes *o = g_hash_table_lookup(sb.arrays, k);
    g_assert_nonnull(o);
    if (!g_bytes_equal(v, o))
      g_error("state '%s' differs after resuming", (char *)k);
  }
  g_hash_table_destroy(sa.arrays);
  g_hash_table_destroy(sb.arrays);
}

static void test_resume(gconstpointer data)
{
  const char *name = data;
  g_autofree char *file = g_strdup_printf("%s.json", name);
  JsonNode *root = load_json(file);
  JsonObject *c = json_object_get_object_member(json_node_get_object(root), "optimizer");
  /* the uninterrupted run */
  Run full;
  run_init(&full, NULL);
  g_autoptr(MexdOptim) ofull = make_optim(c, &full);
  for (int s = 0; s < in.steps; s++)
    do_step(c, ofull, &full, s);

  for (int split = 1; split < in.steps; split++) {
    for (int via_file = 0; via_file < 2; via_file++) {
      Run a;
      run_init(&a, NULL);
      g_autoptr(MexdOptim) oa = make_optim(c, &a);
      for (int s = 0; s < split; s++)
        do_step(c, oa, &a, s);
      /* a new optimizer over a copy of the parameters (the trainer checkpoints those itself) */
      Run b;
      run_init(&b, a.params);
      g_autoptr(MexdOptim) ob = make_optim(c, &b);
      g_autoptr(GError) error = NULL;
      if (via_file) {
        g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
        g_assert_true(mexd_optim_state_save(oa, w, &error));
        g_assert_no_error(error);
        /* another tensor of the checkpoint (the model's) is left alone */
        float x = 1;
        int64_t one = 1;
        g_assert_true(mexd_safetensors_writer_add(w, "model.w", MEXD_ST_F32, 1, &one, &x, 4,
                                                  &error));
        g_autoptr(GBytes) bytes = mexd_safetensors_writer_to_bytes(w, &error);
        g_assert_no_error(error);
        g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(bytes, "ckpt", &error);
        g_assert_no_error(error);
        g_assert_nonnull(mexd_safetensors_find(st, "optim.step"));
        g_assert_true(mexd_optim_state_load(ob, st, &error));
        g_assert_no_error(error);
      } else {
        Snapshot sn;
        snapshot(oa, &sn);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, sn.arrays);
        while (g_hash_table_iter_next(&it, &k, &v)) {
          gsize len;
          const void *d = g_bytes_get_data(v, &len);
          gboolean step = g_str_has_suffix(k, ".step");
          g_assert_true(mexd_optim_state_set(ob, k, step ? MEXD_ST_I64 : MEXD_ST_F32, d,
                                             (int64_t)(len / (step ? 8 : 4)), &error));
          g_assert_no_error(error);
        }
        g_hash_table_destroy(sn.arrays);
      }
      g_assert_cmpint(mexd_optim_get_step(ob), ==, split);
      assert_same_state(oa, ob);
      for (int s = split; s < in.steps; s++)
        do_step(c, ob, &b, s);
      if (memcmp(b.params, full.params, (size_t)in.total * sizeof(float)))
        g_error("%s: resumed after step %d (%s), the parameters differ from an uninterrupted run",
                name, split, via_file ? "safetensors" : "state_set");
      assert_same_state(ob, ofull);
      run_clear(&a);
      run_clear(&b);
    }
  }
  run_clear(&full);
  json_node_unref(root);
}

/* The names of the state arrays, documented in optim.h. */
static gboolean collect_name(const char *name, MexdStDType dtype, const void *data, int64_t n,
                             gpointer user_data, GError **error)
{
  g_string_append_printf(user_data, "%s:%s:%" G_GINT64_FORMAT " ", name,
                         mexd_st_dtype_name(dtype), n);
  return TRUE;
}

static gboolean fail_cb(const char *name, MexdStDType dtype, const void *data, int64_t n,
                        gpointer user_data, GError **error)
{
  int *count = user_data;
  if (++*count == 2)
    return mexd_fail(error, MEXD_ERROR_IO, "disk full at %s", name);
  return TRUE;
}

static void test_names_and_errors(void)
{
  g_autoptr(GError) error = NULL;
  float p[3] = {1, 2, 3}, g[3] = {0.1f, 0.2f, 0.3f}, q[2] = {4, 5}, h[2] = {1, 1};
  MexdAdamConfig cfg;
  mexd_adam_config_init(&cfg);
  g_assert_cmpfloat(cfg.lr, ==, 1e-3);
  g_assert_cmpfloat(cfg.beta2, ==, 0.999);

  /* names */
  MexdOptim *inner = mexd_optim_radam_new(&cfg, &error);
  g_assert_true(mexd_optim_add_param(inner, "a.weight", p, g, 3, &error));
  g_autoptr(MexdOptim) la = mexd_optim_lookahead_new(inner, 0.5, 6, MEXD_LOOKAHEAD_TIMM, &error);
  g_assert_true(mexd_optim_add_param_wd(la, "a.bias", q, h, 2, 0.0, &error));
  g_autoptr(GString) names = g_string_new(NULL);
  g_assert_true(mexd_optim_state_foreach(la, collect_name, names, &error));
  g_assert_cmpstr(names->str, ==,
                  "optim.step:I64:1 optim.a.weight.exp_avg:F32:3 optim.a.weight.exp_avg_sq:F32:3 "
                  "optim.a.bias.exp_avg:F32:2 optim.a.bias.exp_avg_sq:F32:2 "
                  "optim.lookahead.step:I64:1 optim.a.weight.lookahead_slow:F32:3 "
                  "optim.a.bias.lookahead_slow:F32:2 ");
  int count = 0;
  g_assert_false(mexd_optim_state_foreach(la, fail_cb, &count, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_IO);
  g_clear_error(&error);

  /* registration */
  g_assert_false(mexd_optim_add_param(la, "a.bias", q, h, 2, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(error->message, "'a.bias' is registered twice"));
  g_clear_error(&error);
  g_assert_false(mexd_optim_add_param(la, "", q, h, 2, &error));
  g_clear_error(&error);
  g_assert_false(mexd_optim_add_param(la, "x", NULL, h, 2, &error));
  g_clear_error(&error);
  g_assert_false(mexd_optim_add_param(la, "x", q, h, 0, &error));
  g_clear_error(&error);
  g_assert_false(mexd_optim_add_param_wd(la, "x", q, h, 2, -1, &error));
  g_clear_error(&error);
  g_assert_cmpint(mexd_optim_n_params(la), ==, 2);

  /* state_set */
  int64_t seven = 7, neg = -1;
  float three[3] = {1, 2, 3};
  g_assert_true(mexd_optim_state_set(la, "optim.step", MEXD_ST_I64, &seven, 1, &error));
  g_assert_cmpint(mexd_optim_get_step(la), ==, 7);
  g_assert_true(mexd_optim_state_set(la, "optim.a.weight.lookahead_slow", MEXD_ST_F32, three, 3,
                                     &error));
  g_assert_false(mexd_optim_state_set(la, "optim.nope.exp_avg", MEXD_ST_F32, three, 3, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND);
  g_clear_error(&error);
  g_assert_false(mexd_optim_state_set(la, "optim.a.weight.exp_avg", MEXD_ST_I64, &seven, 1,
                                      &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_DTYPE);
  g_clear_error(&error);
  g_assert_false(mexd_optim_state_set(la, "optim.a.bias.exp_avg", MEXD_ST_F32, three, 3, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_SHAPE);
  g_clear_error(&error);
  g_assert_false(mexd_optim_state_set(la, "optim.lookahead.step", MEXD_ST_I64, &neg, 1, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);
  /* after a step (here a restored one) no parameter can be added */
  g_assert_false(mexd_optim_add_param(la, "late", q, h, 2, &error));
  g_assert_nonnull(strstr(error->message, "after the first step"));
  g_clear_error(&error);

  /* state_load: missing, wrong, foreign tensors; nothing changes on failure */
  {
    g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
    g_assert_true(mexd_optim_state_save(la, w, &error));
    g_autoptr(GBytes) good = mexd_safetensors_writer_to_bytes(w, &error);
    float junk[3] = {0};
    int64_t three_shape = 3;
    g_assert_true(mexd_safetensors_writer_add(w, "optim.other.exp_avg", MEXD_ST_F32, 1,
                                              &three_shape, junk, 12, &error));
    g_autoptr(GBytes) extra = mexd_safetensors_writer_to_bytes(w, &error);
    g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(extra, "ck.safetensors",
                                                                    &error);
    g_assert_false(mexd_optim_state_load(la, st, &error));
    g_assert_error(error, MEXD_ERROR, MEXD_ERROR_FORMAT);
    g_assert_true(g_str_has_prefix(error->message, "ck.safetensors: 'optim.other.exp_avg'"));
    g_clear_error(&error);

    /* a plain RAdam with the same parameters lacks the lookahead state in the file */
    g_autoptr(MexdOptim) plain = mexd_optim_radam_new(&cfg, &error);
    g_assert_true(mexd_optim_add_param(plain, "a.weight", p, g, 3, &error));
    g_assert_true(mexd_optim_add_param(plain, "a.bias", q, h, 2, &error));
    g_autoptr(MexdSafetensors) gst = mexd_safetensors_new_from_bytes(good, "ck2", &error);
    g_assert_false(mexd_optim_state_load(plain, gst, &error));
    g_assert_error(error, MEXD_ERROR, MEXD_ERROR_FORMAT);
    g_assert_nonnull(strstr(error->message, "lookahead"));
    g_clear_error(&error);
    g_assert_cmpint(mexd_optim_get_step(plain), ==, 0);
    /* ...and the Lookahead wants it */
    g_autoptr(MexdSafetensorsWriter) w2 = mexd_safetensors_writer_new();
    g_assert_true(mexd_optim_state_save(plain, w2, &error));
    g_autoptr(GBytes) pb = mexd_safetensors_writer_to_bytes(w2, &error);
    g_autoptr(MexdSafetensors) pst = mexd_safetensors_new_from_bytes(pb, "ck3", &error);
    g_assert_false(mexd_optim_state_load(la, pst, &error));
    g_assert_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND);
    g_assert_cmpstr(error->message, ==, "ck3: optimizer state 'optim.lookahead.step' is missing");
    g_clear_error(&error);
    g_assert_cmpint(mexd_optim_get_step(la), ==, 7); /* untouched */
    /* wrong dtype and count */
    g_autoptr(MexdSafetensorsWriter) w3 = mexd_safetensors_writer_new();
    float fstep = 3;
    g_assert_true(mexd_safetensors_writer_add(w3, "optim.step", MEXD_ST_F32, 0, NULL, &fstep, 4,
                                              &error));
    g_autoptr(GBytes) b3 = mexd_safetensors_writer_to_bytes(w3, &error);
    g_autoptr(MexdSafetensors) st3 = mexd_safetensors_new_from_bytes(b3, "ck4", &error);
    g_assert_false(mexd_optim_state_load(plain, st3, &error));
    g_assert_error(error, MEXD_ERROR, MEXD_ERROR_DTYPE);
    g_clear_error(&error);
  }

  /* constructors */
  MexdAdamConfig bad = cfg;
  bad.lr = -1;
  g_assert_null(mexd_optim_adam_new(&bad, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);
  bad = cfg;
  bad.beta2 = 1.0;
  g_assert_null(mexd_optim_radam_new(&bad, &error));
  g_assert_nonnull(strstr(error->message, "beta2"));
  g_clear_error(&error);
  bad = cfg;
  bad.eps = NAN;
  g_assert_null(mexd_optim_radam_new(&bad, &error));
  g_clear_error(&error);
  g_assert_null(mexd_optim_lookahead_new(mexd_optim_adam_new(&cfg, NULL), 1.5, 6,
                                         MEXD_LOOKAHEAD_TIMM, &error));
  g_clear_error(&error);
  g_assert_null(mexd_optim_lookahead_new(mexd_optim_adam_new(&cfg, NULL), 0.5, 0,
                                         MEXD_LOOKAHEAD_TIMM, &error));
  g_clear_error(&error);
  MexdOptim *la2 = mexd_optim_lookahead_new(mexd_optim_adam_new(&cfg, NULL), 0.5, 2,
                                            MEXD_LOOKAHEAD_TIMM, NULL);
  g_assert_null(mexd_optim_lookahead_new(la2, 0.5, 2, MEXD_LOOKAHEAD_TIMM, &error));
  g_assert_nonnull(strstr(error->message, "already a Lookahead"));
  g_clear_error(&error);

  /* MEXD.md §4's presets */
  for (int stage = 0; stage <= 2; stage++) {
    g_autoptr(MexdOptim) o = mexd_optim_new_for_stage(stage, &error);
    g_assert_no_error(error);
    g_assert_cmpint(mexd_optim_kind(o), ==, stage < 2 ? MEXD_OPTIM_LOOKAHEAD : MEXD_OPTIM_ADAM);
    g_assert_cmpfloat(mexd_optim_get_lr(o), ==, stage < 2 ? 2e-4 : 1e-3);
    mexd_optim_set_lr(o, 5e-5);
    g_assert_cmpfloat(mexd_optim_get_lr(o), ==, 5e-5);
  }
  g_assert_null(mexd_optim_new_for_stage(3, &error));
  g_clear_error(&error);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  fixtures = mexd_test_fixture_dir("optim");
  if (!fixtures)
    g_error("tests/fixtures/optim not found (set G_TEST_SRCDIR to the tests directory)");
  load_inputs();
  for (size_t i = 0; i < G_N_ELEMENTS(CASES); i++) {
    g_autofree char *p = g_strdup_printf("/optim/torch/%s", CASES[i]);
    g_test_add_data_func(p, CASES[i], test_vs_torch);
    g_autofree char *r = g_strdup_printf("/optim/resume/%s", CASES[i]);
    g_test_add_data_func(r, CASES[i], test_resume);
  }
  g_test_add_func("/optim/clip", test_clip);
  g_test_add_func("/optim/names-errors", test_names_and_errors);
  int ret = g_test_run();
  g_free(fixtures);
  g_strfreev(in.names);
  g_free(in.sizes);
  g_free(in.init);
  for (int s = 0; s < in.steps; s++)
    g_free(in.grads[s]);
  return ret;
}
