/* bench-mexd.c: `mexd bench mexd` — milliseconds per slide for the whole MExD forward.
 *
 *   mexd bench mexd [--n N] [--dim D] [--model M] [--experts E] [--chains S] [--sampler card|ddim]
 *                   [--steps K] [--device DEV] [--reps R] [--json] [--check-cpu]
 *
 * Without --model it builds a model of the paper's sizes (width 512, 8 heads, 256 landmarks,
 * T = 1000, denoiser width 512) with seeded random weights in a temporary file.  The bag is N
 * random instances of D features.  Prints the median over R runs (after one warm-up) of each
 * stage — adapter #1, Dyn-MoE + adapter #2, diffusion — and the process's peak resident memory
 * (which on lavapipe includes the "device" memory).  --check-cpu then runs the same bag once more
 * on the cpu backend (validated against the PyTorch reference by the tests) and compares every
 * output: the way to show a device right at sizes no fixture covers (N = 100,000).
 *
 * Ranges (a usage error, exit 2, names the option and its range): --n 1..10000000, --dim
 * 1..65536, with N × D at most 2^31 features (8 GiB); --experts 2..16; --chains 1..4096; --steps
 * 2..T (the model's T; 1000 without --model); --reps 1..10000; --warmup 0..1000. */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"

#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
  MexdSafetensorsWriter *w;
  GRand *rng;
} Gen;

static gboolean put(Gen *g, const char *name, int ndim, const int64_t *shape, int kind,
                    double scale, GError **error)
{
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  g_autofree float *v = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    v[i] = kind == 0   ? (float)g_rand_double_range(g->rng, -scale, scale)
           : kind == 1 ? 1.0f
           : kind == 2 ? 0.0f
                       : (float)g_rand_double(g->rng);
  return mexd_safetensors_writer_add(g->w, name, MEXD_ST_F32, ndim, shape, v, n * 4, error);
}

#define U(name, s, ...)                                                                            \
  ok = ok &&                                                                                       \
       put(g, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)), (int64_t[])__VA_ARGS__, 0, s, error)
#define ONES(name, ...)                                                                            \
  ok = ok &&                                                                                       \
       put(g, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)), (int64_t[])__VA_ARGS__, 1, 0, error)
#define ZEROS(name, ...)                                                                           \
  ok = ok &&                                                                                       \
       put(g, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)), (int64_t[])__VA_ARGS__, 2, 0, error)
#define UNIT(name, ...)                                                                            \
  ok = ok &&                                                                                       \
       put(g, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)), (int64_t[])__VA_ARGS__, 3, 0, error)

static gboolean gen_transmil(Gen *g, const char *p, int64_t in, int64_t W, int64_t H, int64_t C,
                             GError **error)
{
  gboolean ok = TRUE;
  char nm[128];
#define N(s) (g_snprintf(nm, sizeof nm, "%s.%s", p, s), nm)
  U(N("fc1.weight"), 1 / sqrt((double)in), {W, in});
  U(N("fc1.bias"), 1 / sqrt((double)in), {W});
  U(N("cls_token"), 1, {1, 1, W});
  for (int l = 1; l <= 2; l++) {
    char q[64];
    g_snprintf(q, sizeof q, "layer%d.norm.weight", l);
    ONES(N(q), {W});
    g_snprintf(q, sizeof q, "layer%d.norm.bias", l);
    ZEROS(N(q), {W});
    g_snprintf(q, sizeof q, "layer%d.attn.qkv.weight", l);
    U(N(q), 1 / sqrt((double)W), {3 * W, W});
    g_snprintf(q, sizeof q, "layer%d.attn.out.weight", l);
    U(N(q), 1 / sqrt((double)W), {W, W});
    g_snprintf(q, sizeof q, "layer%d.attn.out.bias", l);
    U(N(q), 1 / sqrt((double)W), {W});
    g_snprintf(q, sizeof q, "layer%d.attn.res_conv.weight", l);
    U(N(q), 1 / sqrt(33.0), {H, 1, 33, 1});
  }
  static const int ks[3] = {7, 5, 3};
  for (int i = 0; i < 3; i++) {
    char q[64];
    int64_t k = ks[i];
    g_snprintf(q, sizeof q, "ppeg.conv%d.weight", ks[i]);
    U(N(q), 1.0 / (double)k, {W, 1, k, k});
    g_snprintf(q, sizeof q, "ppeg.conv%d.bias", ks[i]);
    U(N(q), 1.0 / (double)k, {W});
  }
  ONES(N("norm.weight"), {W});
  ZEROS(N("norm.bias"), {W});
  U(N("head.weight"), 1 / sqrt((double)W), {C, W});
  U(N("head.bias"), 1 / sqrt((double)W), {C});
#undef N
  return ok;
}

/* A paper-sized model with random weights, written to `path`. */
static gboolean make_model(const char *path, int64_t D, int64_t E, GError **error)
{
  const int64_t W = 512, H = 8, F = 512, T = 1000;
  int64_t C = E == 2 ? 2 : E - 1;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  Gen gg = {w, g_rand_new_with_seed(7)}, *g = &gg;
  gboolean ok = gen_transmil(g, "adapter1", D, W, H, C, error) &&
                gen_transmil(g, "adapter2", W, W, H, C, error);
  for (int r = 0; r < E; r++) {
    char nm[64];
    g_snprintf(nm, sizeof nm, "moe.router.%d.weight", r);
    U(nm, 1 / sqrt((double)W), {2, W});
    g_snprintf(nm, sizeof nm, "moe.classifier.%d.weight", r);
    U(nm, 1 / sqrt((double)W), {E, W});
    g_snprintf(nm, sizeof nm, "moe.classifier.%d.bias", r);
    U(nm, 1 / sqrt((double)W), {E});
  }
  U("diffc.cl1.weight", 1 / sqrt(2.0 * C), {F, 2 * C});
  U("diffc.cl1.bias", 1 / sqrt(2.0 * C), {F});
  for (int l = 1; l <= 3; l++) {
    char nm[64];
    if (l > 1) {
      g_snprintf(nm, sizeof nm, "diffc.cl%d.weight", l);
      U(nm, 1 / sqrt((double)F), {F, F});
      g_snprintf(nm, sizeof nm, "diffc.cl%d.bias", l);
      U(nm, 1 / sqrt((double)F), {F});
    }
    g_snprintf(nm, sizeof nm, "diffc.cl%d.embed", l);
    UNIT(nm, {T + 1, F});
    g_snprintf(nm, sizeof nm, "diffc.norm%d.weight", l);
    ONES(nm, {F});
    g_snprintf(nm, sizeof nm, "diffc.norm%d.bias", l);
    ZEROS(nm, {F});
  }
  U("diffc.z.weight", 1 / sqrt((double)W), {F, W});
  U("diffc.z.bias", 1 / sqrt((double)W), {F});
  ONES("diffc.norm_z.weight", {F});
  ZEROS("diffc.norm_z.bias", {F});
  U("diffc.out.weight", 1 / sqrt((double)F), {C, F});
  U("diffc.out.bias", 1 / sqrt((double)F), {C});
  g_rand_free(gg.rng);
  if (!ok)
    return FALSE;
  GString *cfg = g_string_new(NULL);
  g_string_append_printf(cfg, "{\"feature_dim\": %" G_GINT64_FORMAT ", \"classes\": [", D);
  for (int64_t c = 0; c < C; c++)
    g_string_append_printf(cfg, "%s\"class%" G_GINT64_FORMAT "\"", c ? ", " : "", c);
  g_string_append_printf(cfg, "], \"experts\": %" G_GINT64_FORMAT ", \"alpha\": [", E);
  for (int64_t r = 0; r < E; r++)
    g_string_append_printf(cfg, "%s%s", r ? ", " : "", r == 0 || r == E - 1 ? "0.25" : "0.5");
  g_string_append(cfg, "], \"expert_of_class\": [");
  for (int64_t c = 0; c < C; c++)
    g_string_append_printf(cfg, "%s%" G_GINT64_FORMAT, c ? ", " : "",
                           E == 2 ? c : MIN(c + 1, E - 1));
  g_string_append(cfg, "], \"diffusion\": {\"T\": 1000, \"width\": 512}}");
  mexd_safetensors_writer_set_metadata(w, "mexd.format", "mexd-model/1");
  mexd_safetensors_writer_set_metadata(w, "mexd.config", cfg->str);
  g_string_free(cfg, TRUE);
  return mexd_safetensors_writer_write(w, path, error);
}

/* ‖a − b‖ / max(‖b‖, tiny) */
static double rel_err(const float *a, const float *b, int64_t n)
{
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num) / MAX(sqrt(den), 1e-30);
}

/* The device's result `a` against the cpu's `b`, with the tolerances of the tests against the
 * reference (1e-4 on every float output, 1e-3 on the sampled probabilities).  Selections must be
 * the same sets of rows; their order may differ where two rows' ranking keys are closer than
 * the two backends' rounding (a big bag has thousands of keys within 1e-7 of another): the
 * outputs that depend on that order (adapter #2's logits, ρ and the sampled probabilities) are
 * then reported but not judged, as in tests/test-mexd.c. */
static gboolean compare_results(const MexdResult *a, const MexdResult *b, FILE *out)
{
  const int C = a->n_classes, E = a->experts, W = a->width;
  gboolean ok = TRUE, reordered = FALSE;
  for (int r = 0; r < E; r++) {
    if (a->n_selected[r] != b->n_selected[r]) {
      fprintf(out, "check-cpu: expert %d selected %" G_GINT64_FORMAT " rows, cpu %" G_GINT64_FORMAT
                   "  FAILED\n", r, a->n_selected[r], b->n_selected[r]);
      ok = FALSE;
      continue;
    }
    int64_t moved = 0, missing = 0;
    g_autoptr(GHashTable) set = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (int64_t i = 0; i < b->n_selected[r]; i++)
      g_hash_table_add(set, GINT_TO_POINTER(b->selected[r][i]));
    for (int64_t i = 0; i < a->n_selected[r]; i++) {
      moved += a->selected[r][i] != b->selected[r][i];
      missing += !g_hash_table_contains(set, GINT_TO_POINTER(a->selected[r][i]));
    }
    fprintf(out, "check-cpu: expert %d: %" G_GINT64_FORMAT " selected, %" G_GINT64_FORMAT
                 " not selected by the cpu%s, %" G_GINT64_FORMAT " in another place (near ties)\n",
            r, a->n_selected[r], missing, missing ? "  FAILED" : "", moved);
    ok = ok && missing == 0;
    reordered = reordered || moved > 0;
  }
  struct {
    const char *name;
    const float *x, *y;
    int n;
    double tol;
    gboolean order_dependent;
  } v[] = {
      {"adapter-1 logits", a->logits1, b->logits1, C, 1e-4, FALSE},
      {"c_r", a->c, b->c, E, 1e-4, FALSE},
      {"Z", a->z, b->z, W, 1e-4, FALSE},
      {"adapter-2 logits", a->logits2, b->logits2, C, 1e-4, TRUE},
      {"rho", a->rho, b->rho, C, 1e-4, TRUE},
      {"probabilities", a->has_probs ? a->probs : NULL, b->has_probs ? b->probs : NULL, C, 1e-3,
       TRUE},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(v); i++) {
    if (!v[i].x || !v[i].y)
      continue;
    double e = rel_err(v[i].x, v[i].y, v[i].n);
    gboolean judged = !(v[i].order_dependent && reordered);
    fprintf(out, "check-cpu: %-17s relative error %.2e (limit %.0e)%s\n", v[i].name, e, v[i].tol,
            !judged ? "  (not judged: the rows came in another order)"
            : e <= v[i].tol ? "" : "  FAILED");
    ok = ok && (!judged || e <= v[i].tol);
  }
  fprintf(out, "check-cpu: %s\n", ok ? "the device matches the cpu backend" : "MISMATCH");
  return ok;
}

int mexd_bench_mexd(int argc, char **argv)
{
  gint64 n = 10000, dim = 768, experts = 2;
  int reps = 3, chains = 32, steps = G_MININT, warmup = 1; /* steps G_MININT: not given (50) */
  g_autofree char *model = NULL, *device = NULL, *sampler = NULL;
  gboolean json = FALSE, check_cpu = FALSE;
  GOptionEntry entries[] = {
      {"n", 0, 0, G_OPTION_ARG_INT64, &n, "instances in the bag (10000; 1..10000000)", "N"},
      {"dim", 0, 0, G_OPTION_ARG_INT64, &dim, "feature size without --model (768; 1..65536)",
       "D"},
      {"experts", 0, 0, G_OPTION_ARG_INT64, &experts, "experts without --model (2; 2..16)", "E"},
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "a model file instead", "M"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &chains, "diffusion chains (32; 1..4096)", "S"},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &sampler, "card (default) or ddim", "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM steps (50; 2..T, the model's T)", "K"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "DEV"},
      {"reps", 0, 0, G_OPTION_ARG_INT, &reps, "timed runs after the warm-up (3; 1..10000)", "R"},
      {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed runs first (1; 0..1000)", "W"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON line", NULL},
      {"check-cpu", 0, 0, G_OPTION_ARG_NONE, &check_cpu,
       "compare one run's outputs with the cpu backend's", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- time the MExD forward per slide");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd bench mexd: %s\n", error->message);
    return 2;
  }
  const char *cmd = "mexd bench mexd";
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  if (!mexd_opt_int(cmd, "--n", n, 1, 10000000) || !mexd_opt_int(cmd, "--dim", dim, 1, 65536) ||
      !mexd_opt_int(cmd, "--experts", experts, 2, 16) ||
      !mexd_opt_int(cmd, "--chains", chains, 1, 4096) ||
      (steps != G_MININT && !mexd_opt_int(cmd, "--steps", steps, 2, 100000)) ||
      !mexd_opt_int(cmd, "--reps", reps, 1, 10000) ||
      !mexd_opt_int(cmd, "--warmup", warmup, 0, 1000))
    return 2;
  if (sampler && !g_str_equal(sampler, "card") && !g_str_equal(sampler, "ddim")) {
    fprintf(stderr, "%s: --sampler is card or ddim, not \"%s\"\n", cmd, sampler);
    return 2;
  }
  if (model && !mexd_file_check_regular(model, "model file", &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "mexd bench mexd: %s\n", error->message);
    return 1;
  }
  g_autofree char *tmpdir = NULL, *tmpfile = NULL;
  if (!model) {
    tmpdir = g_dir_make_tmp("mexd-bench-XXXXXX", &error);
    tmpfile = tmpdir ? g_build_filename(tmpdir, "model.safetensors", NULL) : NULL;
    if (!tmpfile || !make_model(tmpfile, dim, experts, &error)) {
      fprintf(stderr, "mexd bench mexd: %s\n", error->message);
      return 1;
    }
  }
  g_autoptr(MexdModel) m = mexd_model_load(model ? model : tmpfile, be, &error);
  g_autoptr(MexdBackend) cpu = NULL;
  g_autoptr(MexdModel) mcpu = NULL;
  if (m && check_cpu) {
    cpu = mexd_backend_new("cpu", &error);
    mcpu = cpu ? mexd_model_load(model ? model : tmpfile, cpu, &error) : NULL;
    if (!mcpu)
      g_clear_pointer(&m, mexd_model_free);
  }
  if (tmpfile) {
    g_unlink(tmpfile);
    g_rmdir(tmpdir);
  }
  if (!m) {
    fprintf(stderr, "mexd bench mexd: %s\n", error->message);
    return 1;
  }
  const MexdModelConfig *cfg = mexd_model_config(m);
  int64_t D = cfg->feature_dim;
  const gboolean steps_given = steps != G_MININT;
  if (!steps_given)
    steps = 50;
  if (((sampler && g_str_equal(sampler, "ddim")) || steps_given) && cfg->has_diffusion &&
      !mexd_opt_int(cmd, "--steps", steps, 2, cfg->T))
    return 2;
  if (n * D > ((int64_t)1 << 31)) {
    fprintf(stderr, "%s: a bag of %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " features is more "
                    "than 2^31 (8 GiB): give a smaller --n\n", cmd, n, D);
    return 2;
  }
  g_autofree float *x = g_try_new(float, n * D);
  if (!x) {
    fprintf(stderr,
            "mexd bench mexd: no memory for %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " features\n",
            n, D);
    return 1;
  }
  GRand *rng = g_rand_new_with_seed(11);
  for (int64_t i = 0; i < n * D; i++)
    x[i] = (float)g_rand_double_range(rng, -1, 1);
  g_rand_free(rng);
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
  opt.chains = chains;
  opt.steps = steps;
  opt.sampler = sampler && g_str_equal(sampler, "ddim") ? MEXD_SAMPLER_DDIM : MEXD_SAMPLER_CARD;
  g_autofree double *t1 = g_new(double, reps), *t2 = g_new(double, reps), *t3 = g_new(double, reps);
  g_autofree double *tt = g_new(double, reps);
  for (int r = -warmup; r < reps; r++) {
    opt.seed = (uint64_t)(r + 100);
    g_autoptr(MexdResult) res = mexd_model_forward(m, x, n, D, &opt, NULL, &error);
    if (!res) {
      fprintf(stderr, "mexd bench mexd: %s\n", error->message);
      return 1;
    }
    if (r >= 0) {
      t1[r] = res->ms_adapter1;
      t2[r] = res->ms_moe;
      t3[r] = res->ms_diffusion;
      tt[r] = t1[r] + t2[r] + t3[r];
    }
    if (!json)
      fprintf(stderr, "%s run: %.1f + %.1f + %.1f ms\n", r < 0 ? "warm-up" : "timed",
              res->ms_adapter1, res->ms_moe, res->ms_diffusion);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  gboolean check_ok = TRUE;
  if (check_cpu) {
    opt.seed = 100;
    g_autoptr(MexdResult) a = mexd_model_forward(m, x, n, D, &opt, NULL, &error);
    g_autoptr(MexdResult) b = a ? mexd_model_forward(mcpu, x, n, D, &opt, NULL, &error) : NULL;
    if (!b) {
      fprintf(stderr, "mexd bench mexd: %s\n", error->message);
      return 1;
    }
    check_ok = compare_results(a, b, stderr);
  }
  double peak_mib = (double)ru.ru_maxrss / 1024.0;
  double a1 = mexd_median(t1, reps), moe = mexd_median(t2, reps), dif = mexd_median(t3, reps),
         tot = mexd_median(tt, reps);
  if (json)
    printf("{\"bench\": \"mexd\", \"device\": \"%s\", \"n\": %" G_GINT64_FORMAT
           ", \"dim\": %" G_GINT64_FORMAT ", \"experts\": %d, \"chains\": %d, \"sampler\": \"%s\", "
           "\"steps\": %d, \"ms_adapter1\": %.2f, \"ms_moe\": %.2f, \"ms_diffusion\": %.2f, "
           "\"ms_total\": %.2f, \"peak_rss_mib\": %.0f, \"reps\": %d%s}\n",
           mexd_backend_name(be), n, D, cfg->experts, chains,
           opt.sampler == MEXD_SAMPLER_DDIM ? "ddim" : "card",
           opt.sampler == MEXD_SAMPLER_DDIM ? steps : cfg->T, a1, moe, dif, tot, peak_mib, reps,
           !check_cpu ? "" : check_ok ? ", \"check_cpu\": \"ok\"" : ", \"check_cpu\": \"failed\"");
  else
    printf("mexd bench mexd on %s: N = %" G_GINT64_FORMAT ", D = %" G_GINT64_FORMAT
           ", E = %d: adapter #1 %.1f ms, Dyn-MoE + adapter #2 %.1f ms, diffusion (%s, %d chains) "
           "%.1f ms, total %.1f ms per slide (median of %d); peak RSS %.0f MiB\n",
           mexd_backend_name(be), n, D, cfg->experts, a1, moe,
           opt.sampler == MEXD_SAMPLER_DDIM ? "ddim" : "card", chains, dif, tot, reps, peak_mib);
  return check_ok ? 0 : 1;
}
