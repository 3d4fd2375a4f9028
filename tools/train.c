/* train.c: `mexd train STAGE` and `mexd eval` (lib/train; docs/TRAINING.md).
 *
 *   mexd train adapter|transmil|moe|diffusion|abmil --data DIR --labels CSV --out DIR
 *        [--preset camelyon16|tcga-nsclc|bracs] [--val-fraction 0.2] [--seed S] [--epochs N]
 *        [--patience N] [--lr X] [--device D] [--resume] [--skip-bad] [--json] [--quiet]
 *        moe: --adapter FILE [--experts E] [--alpha A,…] [--expert-of-class E,…] [--no-routing]
 *        diffusion: --moe FILE [--prior rho|none] [--val-steps K] [--val-chains S]
 *        TransMIL shape: [--width 512] [--heads 8] [--landmarks 256] [--pinv-iterations 6]
 *                        [--res-conv-taps 33] [--dropout 0.1]
 *        abmil: [--abmil-width 512] [--abmil-attn 256]
 *   mexd eval --model M --data DIR --labels CSV [--split test|val|train|all] [--preset P]
 *        [--val-fraction F --seed S (to rebuild a carved val split)] [--out predictions.csv]
 *        [--prior-only] [--sampler card|ddim] [--steps K] [--chains N] [--sample-seed S]
 *        [--device D] [--skip-bad] [--json]
 *
 * Progress: one line per epoch on stderr (and, on a terminal, a line rewritten per bag);
 * --json prints each epoch's report as a JSON line on stdout instead.  Exit 0 done, 1 a failure
 * (bad data, a file that cannot be read or written, a device error), 2 bad usage. */
#include "mexd.h"

#include "../lib/mexd.h"
#include "../lib/train/classifier.h"
#include "../lib/train/dataset.h"
#include "../lib/train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  gboolean json, quiet, tty;
  gint64 t0;
} Progress;

static char *hms(double s)
{
  if (!isfinite(s) || s < 0)
    return g_strdup("?");
  int64_t v = (int64_t)(s + 0.5);
  return v >= 3600 ? g_strdup_printf("%" G_GINT64_FORMAT ":%02d:%02d", v / 3600,
                                     (int)(v / 60 % 60), (int)(v % 60))
                   : g_strdup_printf("%d:%02d", (int)(v / 60), (int)(v % 60));
}

static void on_progress(MexdTrainStage stage, int epoch, int done, int n,
                        const MexdEpochReport *r, gpointer data)
{
  Progress *p = data;
  if (!r) {
    if (p->tty && !p->quiet && !p->json)
      fprintf(stderr, "\r%s epoch %d: bag %d/%d", mexd_train_stage_name(stage), epoch, done, n);
    return;
  }
  if (p->json) {
    printf("{\"stage\": \"%s\", \"epoch\": %d, \"epochs\": %d, \"train_loss\": %.6g, "
           "\"val_loss\": %.6g, \"val_auc\": %.6g, \"val_acc\": %.6g, \"seconds\": %.3f, "
           "\"best\": %s}\n",
           mexd_train_stage_name(stage), r->epoch, r->epochs, r->train_loss, r->val_loss,
           r->val_auc, r->val_acc, r->seconds, r->best ? "true" : "false");
    fflush(stdout);
    return;
  }
  if (p->quiet)
    return;
  g_autofree char *eta = hms(r->eta_seconds);
  fprintf(stderr,
          "%s%s epoch %d/%d  loss %.4f  val loss %.4f  val AUC %.4f  ACC %.3f  %.1f s  ETA %s%s%s\n",
          p->tty ? "\r\033[K" : "", mexd_train_stage_name(stage), r->epoch, r->epochs,
          r->train_loss, r->val_loss, r->val_auc, r->val_acc, r->seconds, eta,
          r->best ? "  *" : "",
          r->skipped_steps ? "  (steps skipped: gradient not finite)" : "");
}

static void warn_slide(const char *slide, const char *message, gpointer data)
{
  fprintf(stderr, "%s: skipped slide %s: %s\n", (const char *)data, slide, message);
}

/* "0.25,0.5" → out[]; FALSE on a malformed list */
static gboolean parse_doubles(const char *s, double *out, int max, int *n)
{
  g_auto(GStrv) parts = g_strsplit(s, ",", -1);
  *n = 0;
  for (int i = 0; parts[i]; i++) {
    char *end;
    double v = g_ascii_strtod(g_strstrip(parts[i]), &end);
    if (!*parts[i] || *end || i >= max)
      return FALSE;
    out[(*n)++] = v;
  }
  return *n > 0;
}

static gboolean parse_ints(const char *s, int *out, int max, int *n)
{
  double v[256];
  if (!parse_doubles(s, v, MIN(max, 256), n))
    return FALSE;
  for (int i = 0; i < *n; i++) {
    if (v[i] != floor(v[i]))
      return FALSE;
    out[i] = (int)v[i];
  }
  return TRUE;
}

int mexd_cmd_train(int argc, char **argv)
{
  const char *cmd = "mexd train";
  if (argc < 2 || argv[1][0] == '-') {
    if (argc >= 2 && (g_str_equal(argv[1], "--help") || g_str_equal(argv[1], "-h"))) {
      printf("Usage: mexd train adapter|transmil|moe|diffusion|abmil --data DIR --labels CSV "
             "--out DIR [OPTION…]\n(mexd train STAGE --help lists the options)\n");
      return 0;
    }
    fprintf(stderr, "%s: give the stage first: adapter, transmil, moe, diffusion or abmil\n", cmd);
    return 2;
  }
  MexdTrainStage stage;
  g_autoptr(GError) error = NULL;
  if (!mexd_train_stage_parse(argv[1], &stage, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 2;
  }
  MexdTrainOptions o;
  mexd_train_options_init(&o, stage);
  g_autofree char *data = NULL, *labels = NULL, *out = NULL, *preset = NULL, *device = NULL;
  g_autofree char *adapter = NULL, *moe = NULL, *alpha = NULL, *eoc = NULL, *prior = NULL;
  g_autofree char *seed_s = NULL, *classes_s = NULL;
  double val_fraction = 0.2, dropout = o.dropout;
  gboolean json = FALSE, quiet = FALSE, skip_bad = FALSE;
  GOptionEntry entries[] = {
      {"data", 0, 0, G_OPTION_ARG_FILENAME, &data,
       "directory of feature files (S.h5, S.csv, S.npy or h5_files/S.h5)", "DIR"},
      {"labels", 0, 0, G_OPTION_ARG_FILENAME, &labels, "CSV: slide_id,label[,split]", "CSV"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
       "output directory (model.safetensors, checkpoint.safetensors, log.jsonl)", "DIR"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &preset,
       "camelyon16, tcga-nsclc or bracs: classes, experts, alpha and official split", "P"},
      {"val-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &val_fraction,
       "of train carved into val when the CSV has none (0.2)", "F"},
      {"classes", 0, 0, G_OPTION_ARG_STRING, &classes_s,
       "the class names in the model's order (default: the preset's, else the CSV's labels "
       "sorted)",
       "A,B,…"},
      {"seed", 0, 0, G_OPTION_ARG_STRING, &seed_s, "seed of everything random (0)", "S"},
      {"epochs", 0, 0, G_OPTION_ARG_INT, &o.epochs, "epochs (200; diffusion 100)", "N"},
      {"patience", 0, 0, G_OPTION_ARG_INT, &o.patience,
       "stop after N epochs without a better validation (0: never)", "N"},
      {"lr", 0, 0, G_OPTION_ARG_DOUBLE, &o.lr, "learning rate (2e-4; diffusion 1e-3)", "X"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"resume", 0, 0, G_OPTION_ARG_NONE, &o.resume, "continue from OUT/checkpoint.safetensors",
       NULL},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &skip_bad,
       "skip slides with bad data (with a warning) instead of stopping", NULL},
      {"adapter", 0, 0, G_OPTION_ARG_FILENAME, &adapter, "moe: the adapter (stage adapter's model)",
       "FILE"},
      {"moe", 0, 0, G_OPTION_ARG_FILENAME, &moe, "diffusion: the Dyn-MoE model (stage moe's)",
       "FILE"},
      {"experts", 0, 0, G_OPTION_ARG_INT, &o.experts, "moe: experts E (preset's, else C + 1)", "E"},
      {"alpha", 0, 0, G_OPTION_ARG_STRING, &alpha, "moe: α per expert (0.25,0.5,…)", "A,…"},
      {"expert-of-class", 0, 0, G_OPTION_ARG_STRING, &eoc,
       "moe: the expert of each class (class c → c + 1, or c when E = C)", "E,…"},
      {"no-routing", 0, 0, G_OPTION_ARG_NONE, &o.no_routing,
       "moe: the ablation — adapter #2 sees every instance, ungated", NULL},
      {"prior", 0, 0, G_OPTION_ARG_STRING, &prior,
       "diffusion: rho (CARD's prior, default) or none (the pure-noise ablation)", "P"},
      {"val-steps", 0, 0, G_OPTION_ARG_INT, &o.val_steps, "diffusion: DDIM steps of validation (50)",
       "K"},
      {"val-chains", 0, 0, G_OPTION_ARG_INT, &o.val_chains, "diffusion: chains of validation (8)",
       "S"},
      {"width", 0, 0, G_OPTION_ARG_INT, &o.width, "TransMIL width (512)", "W"},
      {"heads", 0, 0, G_OPTION_ARG_INT, &o.heads, "TransMIL heads (8)", "H"},
      {"landmarks", 0, 0, G_OPTION_ARG_INT, &o.landmarks, "Nyström landmarks (256)", "M"},
      {"pinv-iterations", 0, 0, G_OPTION_ARG_INT, &o.pinv_iterations, "pinv iterations (6)", "N"},
      {"res-conv-taps", 0, 0, G_OPTION_ARG_INT, &o.res_conv_taps, "residual conv taps (33)", "K"},
      {"dropout", 0, 0, G_OPTION_ARG_DOUBLE, &dropout, "attention dropout (0.1)", "P"},
      {"diffusion-width", 0, 0, G_OPTION_ARG_INT, &o.diffusion_width, "denoiser width (512)", "F"},
      {"abmil-width", 0, 0, G_OPTION_ARG_INT, &o.abmil_width, "abmil: hidden width (512)", "L"},
      {"abmil-attn", 0, 0, G_OPTION_ARG_INT, &o.abmil_attn, "abmil: attention width (256)", "A"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "each epoch's report as a JSON line on stdout",
       NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines", NULL},
      {NULL},
  };
  g_autofree char *param = g_strdup_printf("%s - train a model", argv[1]);
  g_autoptr(GOptionContext) ctx = g_option_context_new(param);
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "Stages (docs/TRAINING.md): adapter (= transmil: TransMIL on the slide labels, MExD's\n"
           "adapter #1 and the TransMIL baseline), moe (the Dyn-MoE and adapter #2 over a frozen\n"
           "adapter), diffusion (the Diff-C denoiser over a frozen Dyn-MoE), abmil (the\n"
           "gated-attention baseline).  Selection on the validation split; a checkpoint every\n"
           "epoch (--resume continues an interrupted run and ends with the same weights).");
  argc--;
  argv++;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 2;
  }
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  if (!data || !labels || !out) {
    fprintf(stderr, "%s: give --data DIR, --labels CSV and --out DIR (mexd train %s --help)\n", cmd,
            mexd_train_stage_name(stage));
    return 2;
  }
  if (seed_s && !g_ascii_string_to_unsigned(seed_s, 10, 0, G_MAXUINT64, &o.seed, NULL)) {
    fprintf(stderr, "%s: --seed must be a non-negative integer, not \"%s\"\n", cmd, seed_s);
    return 2;
  }
  o.dropout = (float)dropout;
  int n;
  if (alpha && !parse_doubles(alpha, o.alpha, 16, &n)) {
    fprintf(stderr, "%s: --alpha takes numbers separated by commas, not \"%s\"\n", cmd, alpha);
    return 2;
  }
  if (alpha && o.experts && n != o.experts) {
    fprintf(stderr, "%s: --alpha has %d values for %d experts\n", cmd, n, o.experts);
    return 2;
  }
  if (alpha && !o.experts)
    o.experts = n;
  if (eoc && !parse_ints(eoc, o.expert_of_class, 256, &n)) {
    fprintf(stderr, "%s: --expert-of-class takes integers separated by commas\n", cmd);
    return 2;
  }
  int n_eoc = eoc ? n : 0;
  if (prior && !g_str_equal(prior, "rho") && !g_str_equal(prior, "none")) {
    fprintf(stderr, "%s: --prior is rho or none, not \"%s\"\n", cmd, prior);
    return 2;
  }
  o.prior_none = prior && g_str_equal(prior, "none");
  if (stage == MEXD_TRAIN_MOE && !adapter) {
    fprintf(stderr, "%s: stage moe needs --adapter FILE (the model of stage adapter)\n", cmd);
    return 2;
  }
  if (stage == MEXD_TRAIN_DIFFUSION && !moe) {
    fprintf(stderr, "%s: stage diffusion needs --moe FILE (the model of stage moe)\n", cmd);
    return 2;
  }
  o.init = stage == MEXD_TRAIN_MOE ? adapter : stage == MEXD_TRAIN_DIFFUSION ? moe : NULL;
  o.out_dir = out;

  MexdDatasetOptions dopt;
  mexd_dataset_options_init(&dopt);
  dopt.preset = preset;
  dopt.val_fraction = val_fraction;
  dopt.seed = o.seed;
  dopt.skip_bad = skip_bad;
  dopt.warn = warn_slide;
  dopt.warn_data = (gpointer)cmd;
  g_auto(GStrv) class_names = classes_s ? g_strsplit(classes_s, ",", -1) : NULL;
  if (class_names && preset) {
    fprintf(stderr, "%s: --classes and --preset exclude each other (the preset names them)\n",
            cmd);
    return 2;
  }
  dopt.class_names = (const char *const *)class_names;
  g_autoptr(MexdDataset) ds = mexd_dataset_load(data, labels, &dopt, &error);
  if (!ds) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (eoc && n_eoc != ds->n_classes) {
    fprintf(stderr, "%s: --expert-of-class has %d values for %d classes\n", cmd, n_eoc,
            ds->n_classes);
    return 2;
  }
  if (!quiet && !json) {
    g_autofree char *sum = mexd_dataset_summary(ds);
    fprintf(stderr, "%s\n", sum);
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  Progress pr = {json, quiet, isatty(2), g_get_monotonic_time()};
  o.progress = on_progress;
  o.progress_data = &pr;
  if (!mexd_train_run(&o, ds, be, &error)) {
    if (pr.tty && !quiet && !json)
      fprintf(stderr, "\n");
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (!quiet && !json)
    fprintf(stderr, "%s: done in %.1f s; model: %s/model.safetensors\n", cmd,
            (double)(g_get_monotonic_time() - pr.t0) / 1e6, out);
  return 0;
}

/* ---- eval ---- */

static gboolean split_parse(const char *s, int *split)
{
  static const char *names[] = {"train", "val", "test", "all"};
  for (int i = 0; i < 4; i++)
    if (g_str_equal(s, names[i])) {
      *split = i;
      return TRUE;
    }
  return FALSE;
}

static void csv_cell(GString *s, const char *v)
{
  if (strpbrk(v, ",\"\n\r")) {
    g_string_append_c(s, '"');
    for (const char *p = v; *p; p++) {
      if (*p == '"')
        g_string_append_c(s, '"');
      g_string_append_c(s, *p);
    }
    g_string_append_c(s, '"');
  } else {
    g_string_append(s, v);
  }
}

int mexd_cmd_eval(int argc, char **argv)
{
  const char *cmd = "mexd eval";
  g_autofree char *model = NULL, *data = NULL, *labels = NULL, *split_s = NULL, *preset = NULL;
  g_autofree char *outp = NULL, *device = NULL, *sampler = NULL, *seed_s = NULL;
  double val_fraction = 0;
  gint64 sample_seed = 0;
  int steps = 50, chains = 32;
  gboolean json = FALSE, prior_only = FALSE, skip_bad = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
       "a model file from mexd train (MExD, TransMIL or ABMIL)", "M"},
      {"data", 0, 0, G_OPTION_ARG_FILENAME, &data, "directory of feature files", "DIR"},
      {"labels", 0, 0, G_OPTION_ARG_FILENAME, &labels, "CSV: slide_id,label[,split]", "CSV"},
      {"split", 0, 0, G_OPTION_ARG_STRING, &split_s, "test (default), val, train or all", "S"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &preset, "the cohort preset (official split)", "P"},
      {"val-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &val_fraction,
       "rebuild the val split training carved (with the training --seed)", "F"},
      {"seed", 0, 0, G_OPTION_ARG_STRING, &seed_s, "the training seed (for --val-fraction)", "S"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &outp, "per-slide predictions as CSV", "FILE"},
      {"prior-only", 0, 0, G_OPTION_ARG_NONE, &prior_only,
       "MExD: report the Dyn-MoE prior ρ, not the diffusion's probabilities", NULL},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &sampler, "card (default) or ddim", "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM steps (50)", "K"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &chains, "diffusion chains (32)", "N"},
      {"sample-seed", 0, 0, G_OPTION_ARG_INT64, &sample_seed, "noise seed of the chains (0)", "S"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &skip_bad, "skip slides with bad data", NULL},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "the metrics as JSON", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- evaluate a trained model");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "ACC, AUC (one-vs-rest per class, macro mean; binary: the positive class), macro-F1,\n"
           "the per-class table and the confusion matrix of a split, as scikit-learn computes\n"
           "them; --out writes each slide's probabilities.");
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 2;
  }
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  if (!model || !data || !labels) {
    fprintf(stderr, "%s: give --model M, --data DIR and --labels CSV (mexd eval --help)\n", cmd);
    return 2;
  }
  int split = MEXD_SPLIT_TEST;
  if (split_s && !split_parse(split_s, &split)) {
    fprintf(stderr, "%s: --split is test, val, train or all, not \"%s\"\n", cmd, split_s);
    return 2;
  }
  guint64 seed = 0;
  if (seed_s && !g_ascii_string_to_unsigned(seed_s, 10, 0, G_MAXUINT64, &seed, NULL)) {
    fprintf(stderr, "%s: --seed must be a non-negative integer\n", cmd);
    return 2;
  }
  MexdForwardOptions fo = MEXD_FORWARD_OPTIONS_DEFAULT;
  fo.seed = (uint64_t)sample_seed;
  fo.steps = steps;
  fo.chains = chains;
  if (sampler && g_str_equal(sampler, "ddim"))
    fo.sampler = MEXD_SAMPLER_DDIM;
  else if (sampler && !g_str_equal(sampler, "card")) {
    fprintf(stderr, "%s: --sampler is card or ddim, not \"%s\"\n", cmd, sampler);
    return 2;
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  g_autoptr(MexdClassifier) clf = be ? mexd_classifier_load(model, be, &error) : NULL;
  if (!clf) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  MexdDatasetOptions dopt;
  mexd_dataset_options_init(&dopt);
  dopt.preset = preset;
  dopt.class_names = preset ? NULL : mexd_classifier_classes(clf);
  dopt.val_fraction = val_fraction;
  dopt.seed = seed;
  dopt.skip_bad = skip_bad;
  dopt.expected_dim = mexd_classifier_feature_dim(clf);
  dopt.warn = warn_slide;
  dopt.warn_data = (gpointer)cmd;
  g_autoptr(MexdDataset) ds = mexd_dataset_load(data, labels, &dopt, &error);
  if (!ds) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  const int C = mexd_classifier_n_classes(clf);
  if (ds->n_classes != C) {
    fprintf(stderr, "%s: the model has %d classes, the labels %d\n", cmd, C, ds->n_classes);
    return 1;
  }
  for (int c = 0; c < C; c++)
    if (g_ascii_strcasecmp(ds->classes[c], mexd_classifier_classes(clf)[c])) {
      fprintf(stderr, "%s: class %d is \"%s\" in the model but \"%s\" in the data set\n", cmd, c,
              mexd_classifier_classes(clf)[c], ds->classes[c]);
      return 1;
    }
  g_autoptr(GArray) idx = g_array_new(FALSE, FALSE, sizeof(int));
  for (int i = 0; i < ds->n_slides; i++)
    if (split == 3 || (int)ds->slides[i].split == split)
      g_array_append_val(idx, i);
  if (idx->len == 0) {
    fprintf(stderr, "%s: no slide is in the %s split (the CSV's split column%s); try --split all\n",
            cmd, split_s ? split_s : "test",
            split == MEXD_SPLIT_VAL ? ", or --val-fraction with the training --seed" : "");
    return 1;
  }
  const int n = (int)idx->len;
  g_autofree double *probs = g_new(double, (size_t)n * C);
  g_autofree int *lab = g_new(int, n);
  float p[MEXD_MAX_CLASSES];
  gboolean tty = isatty(2);
  for (int j = 0; j < n; j++) {
    const MexdDatasetSlide *sl = &ds->slides[g_array_index(idx, int, j)];
    if (!mexd_classifier_predict(clf, sl->bag->features, sl->bag->n, sl->bag->d, &fo, prior_only,
                                 p, &error)) {
      fprintf(stderr, "%s: slide %s: %s\n", cmd, sl->slide_id, error->message);
      return 1;
    }
    for (int c = 0; c < C; c++)
      probs[(size_t)j * C + c] = p[c];
    lab[j] = sl->label;
    if (tty && !quiet)
      fprintf(stderr, "\r%s: %d/%d slides", cmd, j + 1, n);
  }
  if (tty && !quiet)
    fprintf(stderr, "\r\033[K");
  g_autoptr(MexdMetrics) m = mexd_metrics_compute(probs, lab, n, C, &error);
  if (!m) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (outp) {
    GString *s = g_string_new("slide_id,label,predicted");
    for (int c = 0; c < C; c++) {
      g_autofree char *h = g_strdup_printf("p_%s", ds->classes[c]);
      g_string_append_c(s, ',');
      csv_cell(s, h);
    }
    g_string_append_c(s, '\n');
    for (int j = 0; j < n; j++) {
      const MexdDatasetSlide *sl = &ds->slides[g_array_index(idx, int, j)];
      csv_cell(s, sl->slide_id);
      g_string_append_c(s, ',');
      csv_cell(s, ds->classes[sl->label]);
      g_string_append_c(s, ',');
      csv_cell(s, ds->classes[mexd_metrics_argmax(probs + (size_t)j * C, C)]);
      for (int c = 0; c < C; c++)
        g_string_append_printf(s, ",%.8g", probs[(size_t)j * C + c]);
      g_string_append_c(s, '\n');
    }
    gboolean ok = g_file_set_contents(outp, s->str, (gssize)s->len, &error);
    g_string_free(s, TRUE);
    if (!ok) {
      fprintf(stderr, "%s: %s\n", cmd, error->message);
      return 1;
    }
  }
  if (json) {
    g_autoptr(JsonNode) node = mexd_metrics_to_json(m, (const char *const *)ds->classes);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_root(gen, node);
    json_generator_set_pretty(gen, TRUE);
    g_autofree char *txt = json_generator_to_data(gen, NULL);
    printf("%s\n", txt);
  } else {
    g_autofree char *txt = mexd_metrics_format(m, (const char *const *)ds->classes);
    printf("%s: %s (%s) on the %s split\n%s", cmd, model,
           mexd_classifier_kind_name(mexd_classifier_kind(clf)), split_s ? split_s : "test", txt);
  }
  return 0;
}
