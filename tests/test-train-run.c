/* test-train-run.c: whole training runs against PyTorch (tests/reference/gen_train_run.py).
 *
 * /train/run/<stage>/<backend>: mexd_train_run() — the trainer `mexd train` runs — trains the
 * stage for two epochs on the fixture cohort (tests/fixtures/train-run/cohort: 10 bags, all in
 * train, no validation), from mexd's own initial weights and in its own bag order, dropout 0;
 * every trained parameter of the model file it writes must be within 1e-5 of PyTorch's float64
 * run from the same initial weights and bag order (Lookahead(RAdam) for TransMIL, the Dyn-MoE
 * stage and ABMIL; Adam with gradient clipping for Diff-C), and each epoch's mean training loss
 * (log.jsonl) within 1e-5 relative.  The run must also have moved every compared tensor, so
 * that a trainer that does nothing cannot pass. */
#include "fixture-dir.h"
#include "mexd.h"

#include "backend/vulkan.h"
#include "io/safetensors.h"
#include "train/dataset.h"
#include "train/trainer.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#define WEIGHT_TOL 1e-5
#define LOSS_TOL 1e-5

typedef struct {
  const char *stage;
  const char *init; /* the frozen upstream file of the fixture folder, or NULL */
} RunCase;

static const RunCase cases[] = {
    {"adapter", NULL}, {"abmil", NULL}, {"moe", "moe-init"}, {"diffusion", "diffusion-init"}};

typedef struct {
  const RunCase *c;
  char *spec;
} RunData;

static void run_data_free(gpointer p)
{
  RunData *d = p;
  g_free(d->spec);
  g_free(d);
}

static int meta_int(MexdSafetensors *st, const char *key)
{
  const char *v = mexd_safetensors_metadata(st, key);
  g_assert_nonnull(v);
  return atoi(v);
}

static double meta_num(MexdSafetensors *st, const char *key)
{
  const char *v = mexd_safetensors_metadata(st, key);
  g_assert_nonnull(v);
  return g_ascii_strtod(v, NULL);
}

/* A JSON array of numbers or strings from the fixture's metadata. */
static JsonArray *meta_array(MexdSafetensors *st, const char *key, JsonParser **parser)
{
  const char *v = mexd_safetensors_metadata(st, key);
  g_assert_nonnull(v);
  *parser = json_parser_new();
  g_assert_true(json_parser_load_from_data(*parser, v, -1, NULL));
  return json_node_get_array(json_parser_get_root(*parser));
}

static void rm_tree(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    g_remove(p);
  }
  g_rmdir(dir);
}

/* The train_loss of each line of log.jsonl, in order. */
static GArray *log_losses(const char *path)
{
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GArray *out = g_array_new(FALSE, FALSE, sizeof(double));
  for (int i = 0; lines[i]; i++) {
    if (!*lines[i])
      continue;
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, lines[i], -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    double v = json_object_get_double_member(o, "train_loss");
    g_array_append_val(out, v);
  }
  return out;
}

static void test_run(gconstpointer data)
{
  const RunData *rd = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new(rd->spec, &error);
  if (!be) {
    g_test_skip(error->message);
    return;
  }
  g_autofree char *dir = mexd_test_fixture_dir("train-run");
  g_assert_nonnull(dir);
  g_autofree char *file = g_strdup_printf("%s.safetensors", rd->c->stage);
  g_autofree char *path = g_build_filename(dir, file, NULL);
  g_autoptr(MexdSafetensors) fx = mexd_safetensors_open(path, &error);
  g_assert_no_error(error);

  /* the cohort: every slide in train, no validation carved */
  g_autofree char *cohort = g_build_filename(dir, "cohort", NULL);
  g_autofree char *labels = g_build_filename(cohort, "labels.csv", NULL);
  const uint64_t seed = (uint64_t)meta_int(fx, "seed");
  MexdDatasetOptions dso;
  mexd_dataset_options_init(&dso);
  dso.val_fraction = 0;
  dso.seed = seed;
  g_autoptr(MexdDataset) ds = mexd_dataset_load(cohort, labels, &dso, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_TRAIN], ==, meta_int(fx, "slides"));
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_VAL], ==, 0);

  MexdTrainOptions o;
  MexdTrainStage stage;
  g_assert_true(mexd_train_stage_parse(rd->c->stage, &stage, NULL));
  mexd_train_options_init(&o, stage);
  g_autofree char *out = g_dir_make_tmp("mexd-train-run-XXXXXX", &error);
  g_assert_no_error(error);
  g_autofree char *init = NULL;
  if (rd->c->init) {
    g_autofree char *f = g_strdup_printf("%s.safetensors", rd->c->init);
    init = g_build_filename(dir, f, NULL);
  }
  o.out_dir = out;
  o.init = init;
  o.epochs = meta_int(fx, "epochs");
  o.patience = 0;
  o.seed = seed;
  o.lr = meta_num(fx, "lr");
  o.width = meta_int(fx, "width");
  o.heads = meta_int(fx, "heads");
  o.landmarks = meta_int(fx, "landmarks");
  o.pinv_iterations = meta_int(fx, "pinv_iterations");
  o.res_conv_taps = meta_int(fx, "res_conv_taps");
  o.dropout = 0;
  o.abmil_dropout = 0;
  if (stage == MEXD_TRAIN_ABMIL) {
    o.abmil_width = meta_int(fx, "abmil_width");
    o.abmil_attn = meta_int(fx, "abmil_attn");
  }
  if (stage == MEXD_TRAIN_MOE) {
    g_autoptr(JsonParser) pa = NULL, pe = NULL;
    JsonArray *alpha = meta_array(fx, "alpha", &pa), *eoc = meta_array(fx, "expert_of_class", &pe);
    o.experts = meta_int(fx, "experts");
    for (guint r = 0; r < json_array_get_length(alpha); r++)
      o.alpha[r] = json_array_get_double_element(alpha, r);
    for (guint k = 0; k < json_array_get_length(eoc); k++)
      o.expert_of_class[k] = (int)json_array_get_int_element(eoc, k);
  }
  if (stage == MEXD_TRAIN_DIFFUSION) {
    o.T = meta_int(fx, "T");
    o.diffusion_width = meta_int(fx, "diffusion_width");
  }
  gboolean ok = mexd_train_run(&o, ds, be, &error);
  g_assert_no_error(error);
  g_assert_true(ok);

  /* the weights after the last epoch (no validation: the model file is the last epoch's) */
  g_autofree char *model = g_build_filename(out, "model.safetensors", NULL);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(model, &error);
  g_assert_no_error(error);
  g_autoptr(JsonParser) pn = NULL;
  JsonArray *noise = meta_array(fx, "noise_params", &pn);
  int compared = 0;
  double worst = 0;
  const char *worst_name = "";
  for (guint i = 0; i < mexd_safetensors_n_tensors(fx); i++) {
    const char *name = mexd_safetensors_index(fx, i)->name;
    if (!g_str_has_prefix(name, "final."))
      continue;
    const char *pname = name + strlen("final.");
    g_autofree char *iname = g_strdup_printf("init.%s", pname);
    int64_t n_ref = 0, n_out = 0, n_init = 0;
    g_autofree float *ref = mexd_test_st_floats(fx, name, &n_ref);
    g_autofree float *ini = mexd_test_st_floats(fx, iname, &n_init);
    g_autofree float *got = mexd_test_st_floats(st, pname, &n_out);
    if (!got)
      g_error("%s: the trained model has no tensor %s", rd->c->stage, pname);
    g_assert_cmpint(n_out, ==, n_ref);
    g_assert_cmpint(n_init, ==, n_ref);
    gboolean is_noise = FALSE;
    for (guint k = 0; k < json_array_get_length(noise); k++)
      is_noise = is_noise || g_str_equal(json_array_get_string_element(noise, k), pname);
    double err = 0, moved = 0;
    for (int64_t k = 0; k < n_ref; k++) {
      g_assert_true(isfinite(got[k]));
      err = MAX(err, fabs((double)got[k] - ref[k]));
      moved = MAX(moved, fabs((double)got[k] - ini[k]));
    }
    if (is_noise)
      continue; /* its exact gradient is 0: see gen_train_run.py */
    if (err > WEIGHT_TOL)
      g_error("%s on %s: %s differs from PyTorch's by %.3g (tolerance %g)", rd->c->stage,
              rd->spec, pname, err, WEIGHT_TOL);
    /* a tensor the run did not move would pass whatever the trainer did */
    if (moved < 10 * WEIGHT_TOL)
      g_error("%s: %s moved by %.3g only: the fixture cannot tell", rd->c->stage, pname, moved);
    if (err > worst) {
      worst = err;
      worst_name = pname;
    }
    compared++;
  }
  g_assert_cmpint(compared, >, 0);
  g_test_message("%s on %s: %d tensors, largest difference %.3g (%s)", rd->c->stage, rd->spec,
                 compared, worst, worst_name);

  g_autofree char *log = g_build_filename(out, "log.jsonl", NULL);
  g_autoptr(GArray) losses = log_losses(log);
  g_assert_cmpint((int)losses->len, ==, o.epochs);
  for (int e = 0; e < o.epochs; e++) {
    g_autofree char *key = g_strdup_printf("loss_epoch%d", e + 1);
    double want = meta_num(fx, key), have = g_array_index(losses, double, e);
    if (!(fabs(have - want) <= LOSS_TOL * fabs(want)))
      g_error("%s on %s: epoch %d's training loss %.9g, PyTorch's %.9g", rd->c->stage, rd->spec,
              e + 1, have, want);
  }
  rm_tree(out);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_auto(GStrv) specs = mexd_test_backends();
  for (int b = 0; specs[b]; b++)
    for (guint k = 0; k < G_N_ELEMENTS(cases); k++) {
      RunData *d = g_new0(RunData, 1);
      d->c = &cases[k];
      d->spec = g_strdup(specs[b]);
      g_autofree char *p = g_strdup_printf("/train/run/%s/%s", cases[k].stage, specs[b]);
      g_test_add_data_func_full(p, d, test_run, run_data_free);
    }
  int rc = g_test_run();
  if (g_getenv("MEXD_VK_VALIDATION") && mexd_vk_validation_messages() > 0) {
    g_printerr("the Vulkan validation layer reported %u messages\n", mexd_vk_validation_messages());
    return 1;
  }
  return rc;
}
