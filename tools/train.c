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
#include "uncertainty.h"
#include "opts.h"

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
          r->skipped_steps ? "  (steps skipped: a loss or gradient not finite)" : "");
}

static void warn_slide(const char *slide, const char *message, gpointer data)
{
  fprintf(stderr, "%s: skipped slide %s: %s\n", (const char *)data, slide, message);
}

/* ---- option values ---- */

/* A whole number of a string option ("--seed 7"); prints the usage line and FALSE otherwise. */
static gboolean opt_parse_int(const char *cmd, const char *name, const char *text, gint64 *v)
{
  if (g_ascii_string_to_signed(text, 10, G_MININT64, G_MAXINT64, v, NULL))
    return TRUE;
  fprintf(stderr, "%s: %s takes an integer, not \"%s\"\n", cmd, name, text);
  return FALSE;
}

/* A number of a string option ("--lr 1e-3"; "nan" parses, and is then outside every range). */
static gboolean opt_parse_double(const char *cmd, const char *name, const char *text, double *v)
{
  char *end = NULL;
  *v = g_ascii_strtod(text, &end);
  if (*text && end && !*end)
    return TRUE;
  fprintf(stderr, "%s: %s takes a number, not \"%s\"\n", cmd, name, text);
  return FALSE;
}

/* lo ≤ v < hi, in tools/opts.h's words. */
static gboolean opt_double_below(const char *cmd, const char *name, double v, double lo, double hi)
{
  if (isfinite(v) && v >= lo && v < hi)
    return TRUE;
  fprintf(stderr, "%s: %s %g is outside %g..%g (and must be below it)\n", cmd, name, v, lo, hi);
  return FALSE;
}

/* --seed: 0..2^64−1 */
static gboolean opt_seed(const char *cmd, const char *text, guint64 *seed)
{
  if (!text || g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64, seed, NULL))
    return TRUE;
  fprintf(stderr, "%s: --seed %s is outside 0..18446744073709551615\n", cmd, text);
  return FALSE;
}

/* "0.25,0.5" → out[] (at most max values); FALSE on a malformed list or too many values */
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
    if (!isfinite(v[i]) || v[i] != floor(v[i]) || fabs(v[i]) > G_MAXINT)
      return FALSE;
    out[i] = (int)v[i];
  }
  return TRUE;
}

/* The files a training run writes into DIR (lib/train/trainer.h). */
static char **train_outputs(const char *dir)
{
  char **o = g_new0(char *, 4);
  o[0] = g_build_filename(dir, "model.safetensors", NULL);
  o[1] = g_build_filename(dir, "checkpoint.safetensors", NULL);
  o[2] = g_build_filename(dir, "log.jsonl", NULL);
  return o;
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
  g_autofree char *seed_s = NULL, *classes_s = NULL, *lr_s = NULL, *experts_s = NULL;
  double val_fraction = 0.2, dropout = o.dropout;
  gboolean json = FALSE, quiet = FALSE, skip_bad = FALSE;
  GOptionEntry entries[] = {
      {"data", 0, 0, G_OPTION_ARG_FILENAME, &data,
       "directory of feature files (S.h5, S.csv, S.npy or h5_files/S.h5)", "DIR"},
      {"labels", 0, 0, G_OPTION_ARG_FILENAME, &labels, "CSV: slide_id,label[,split]", "CSV"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
       "output directory (model.safetensors, checkpoint.safetensors, log.jsonl; none of them may "
       "be an input)",
       "DIR"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &preset,
       "camelyon16, tcga-nsclc or bracs: classes, experts, alpha and official split", "P"},
      {"val-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &val_fraction,
       "of train carved into val when the CSV has none (0.2; 0..1)", "F"},
      {"classes", 0, 0, G_OPTION_ARG_STRING, &classes_s,
       "the class names in the model's order (default: the preset's, else the CSV's labels "
       "sorted)",
       "A,B,…"},
      {"seed", 0, 0, G_OPTION_ARG_STRING, &seed_s,
       "seed of everything random (0; 0..18446744073709551615)", "S"},
      {"epochs", 0, 0, G_OPTION_ARG_INT, &o.epochs, "epochs (200; diffusion 100; 1..1000000)",
       "N"},
      {"patience", 0, 0, G_OPTION_ARG_INT, &o.patience,
       "stop after N epochs without a better validation (0: never; 0..1000000)", "N"},
      {"lr", 0, 0, G_OPTION_ARG_STRING, &lr_s,
       "learning rate (2e-4; diffusion 1e-3; above 0, at most 1)", "X"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"resume", 0, 0, G_OPTION_ARG_NONE, &o.resume, "continue from OUT/checkpoint.safetensors",
       NULL},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &skip_bad,
       "skip slides with bad data or numbers that are not finite (with a warning naming each) "
       "instead of stopping",
       NULL},
      {"adapter", 0, 0, G_OPTION_ARG_FILENAME, &adapter, "moe: the adapter (stage adapter's model)",
       "FILE"},
      {"moe", 0, 0, G_OPTION_ARG_FILENAME, &moe, "diffusion: the Dyn-MoE model (stage moe's)",
       "FILE"},
      {"experts", 0, 0, G_OPTION_ARG_STRING, &experts_s,
       "moe: experts E (preset's, else C + 1; 2..16)", "E"},
      {"alpha", 0, 0, G_OPTION_ARG_STRING, &alpha,
       "moe: α per expert (0.25,0.5,…; each above 0, at most 1)", "A,…"},
      {"expert-of-class", 0, 0, G_OPTION_ARG_STRING, &eoc,
       "moe: the expert of each class (class c → c + 1, or c when E = C; each 0..E−1)", "E,…"},
      {"no-routing", 0, 0, G_OPTION_ARG_NONE, &o.no_routing,
       "moe: the ablation — adapter #2 sees every instance, ungated", NULL},
      {"prior", 0, 0, G_OPTION_ARG_STRING, &prior,
       "diffusion: rho (CARD's prior, default) or none (the pure-noise ablation)", "P"},
      {"val-steps", 0, 0, G_OPTION_ARG_INT, &o.val_steps,
       "diffusion: DDIM steps of validation (50; 2..1000, the T of training)", "K"},
      {"val-chains", 0, 0, G_OPTION_ARG_INT, &o.val_chains,
       "diffusion: chains of validation (8; 1..4096)", "S"},
      {"width", 0, 0, G_OPTION_ARG_INT, &o.width,
       "TransMIL width (512; 1..65536, a multiple of --heads)", "W"},
      {"heads", 0, 0, G_OPTION_ARG_INT, &o.heads, "TransMIL heads (8; 1..1024)", "H"},
      {"landmarks", 0, 0, G_OPTION_ARG_INT, &o.landmarks, "Nyström landmarks (256; 1..16384)",
       "M"},
      {"pinv-iterations", 0, 0, G_OPTION_ARG_INT, &o.pinv_iterations,
       "pinv iterations (6; 0..100)", "N"},
      {"res-conv-taps", 0, 0, G_OPTION_ARG_INT, &o.res_conv_taps,
       "residual conv taps (33; odd, 1..1023)", "K"},
      {"dropout", 0, 0, G_OPTION_ARG_DOUBLE, &dropout,
       "attention dropout (0.1; 0 or more, below 1)", "P"},
      {"diffusion-width", 0, 0, G_OPTION_ARG_INT, &o.diffusion_width,
       "denoiser width (512; 1..65536)", "F"},
      {"abmil-width", 0, 0, G_OPTION_ARG_INT, &o.abmil_width,
       "abmil: hidden width (512; 1..65536)", "L"},
      {"abmil-attn", 0, 0, G_OPTION_ARG_INT, &o.abmil_attn,
       "abmil: attention width (256; 1..65536)", "A"},
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
           "epoch (--resume continues an interrupted run and ends with the same weights).\n"
           "Exit 0 done, 1 a failure (bad data, a slide whose numbers are not finite, an output\n"
           "that is an input), 2 bad usage (an option outside its range among them).");
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
  /* every numeric option within its range (the model file's own limits, lib/nn/model.c) */
  if (!opt_seed(cmd, seed_s, &o.seed) ||
      !mexd_opt_double(cmd, "--val-fraction", val_fraction, 0, 1, FALSE) ||
      !mexd_opt_int(cmd, "--epochs", o.epochs, 1, 1000000) ||
      !mexd_opt_int(cmd, "--patience", o.patience, 0, 1000000) ||
      !mexd_opt_int(cmd, "--val-steps", o.val_steps, 2, o.T) ||
      !mexd_opt_int(cmd, "--val-chains", o.val_chains, 1, 4096) ||
      !mexd_opt_int(cmd, "--width", o.width, 1, 65536) ||
      !mexd_opt_int(cmd, "--heads", o.heads, 1, 1024) ||
      !mexd_opt_int(cmd, "--landmarks", o.landmarks, 1, 16384) ||
      !mexd_opt_int(cmd, "--pinv-iterations", o.pinv_iterations, 0, 100) ||
      !mexd_opt_int(cmd, "--res-conv-taps", o.res_conv_taps, 1, 1023) ||
      !opt_double_below(cmd, "--dropout", dropout, 0, 1) ||
      !mexd_opt_int(cmd, "--diffusion-width", o.diffusion_width, 1, 65536) ||
      !mexd_opt_int(cmd, "--abmil-width", o.abmil_width, 1, 65536) ||
      !mexd_opt_int(cmd, "--abmil-attn", o.abmil_attn, 1, 65536))
    return 2;
  if (o.width % o.heads) {
    fprintf(stderr, "%s: --width %d is not a multiple of --heads %d\n", cmd, o.width, o.heads);
    return 2;
  }
  if (o.res_conv_taps % 2 == 0) {
    fprintf(stderr, "%s: --res-conv-taps %d must be odd (1..1023)\n", cmd, o.res_conv_taps);
    return 2;
  }
  if (lr_s && (!opt_parse_double(cmd, "--lr", lr_s, &o.lr) ||
               !mexd_opt_double(cmd, "--lr", o.lr, 0, 1, TRUE)))
    return 2;
  gint64 experts = 0;
  if (experts_s && (!opt_parse_int(cmd, "--experts", experts_s, &experts) ||
                    !mexd_opt_int(cmd, "--experts", experts, 2, MEXD_MAX_EXPERTS)))
    return 2;
  o.experts = (int)experts;
  o.dropout = (float)dropout;
  int n;
  if (alpha && !parse_doubles(alpha, o.alpha, MEXD_MAX_EXPERTS, &n)) {
    fprintf(stderr, "%s: --alpha takes 1 to %d numbers separated by commas, not \"%s\"\n", cmd,
            MEXD_MAX_EXPERTS, alpha);
    return 2;
  }
  for (int r = 0; alpha && r < n; r++)
    if (!mexd_opt_double(cmd, "--alpha", o.alpha[r], 0, 1, TRUE))
      return 2;
  if (alpha && o.experts && n != o.experts) {
    fprintf(stderr, "%s: --alpha has %d values for %d experts\n", cmd, n, o.experts);
    return 2;
  }
  if (alpha && !o.experts) {
    if (n < 2) {
      fprintf(stderr, "%s: --alpha has 1 value: the Dyn-MoE has 2 to %d experts, one α each\n",
              cmd, MEXD_MAX_EXPERTS);
      return 2;
    }
    o.experts = n;
  }
  if (eoc && !parse_ints(eoc, o.expert_of_class, MEXD_MAX_CLASSES, &n)) {
    fprintf(stderr, "%s: --expert-of-class takes integers separated by commas (one per class)\n",
            cmd);
    return 2;
  }
  int n_eoc = eoc ? n : 0;
  for (int k = 0; k < n_eoc; k++)
    if (!mexd_opt_int(cmd, "--expert-of-class", o.expert_of_class[k], 0,
                      (o.experts ? o.experts : MEXD_MAX_EXPERTS) - 1))
      return 2;
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
  g_auto(GStrv) class_names = classes_s ? g_strsplit(classes_s, ",", -1) : NULL;
  if (class_names && preset) {
    fprintf(stderr, "%s: --classes and --preset exclude each other (the preset names them)\n",
            cmd);
    return 2;
  }
  for (int c = 0; class_names && (c < 2 || class_names[c]); c++)
    if (!class_names[c] || !*class_names[c] || c >= MEXD_MAX_CLASSES) {
      fprintf(stderr, "%s: --classes takes 2 to %d names separated by commas, none empty\n", cmd,
              MEXD_MAX_CLASSES);
      return 2;
    }
  if (preset && !mexd_preset_lookup(preset, &error)) {
    fprintf(stderr, "%s: --preset: %s\n", cmd, error->message);
    return 2;
  }

  /* the inputs are files (a FIFO is refused before any open), and no output is an input: the
   * labels and the init file here, every feature file read in the data set's load, before any
   * of them is read */
  g_auto(GStrv) outputs = train_outputs(out);
  const char *inputs[] = {labels, o.init, NULL};
  gboolean inputs_ok = mexd_file_check_regular(labels, "labels CSV", &error) &&
                       (!o.init || mexd_file_check_regular(o.init, "model file", &error));
  /* --out names a folder: not a file (an input among them), not the data folder itself */
  if (inputs_ok && g_file_test(out, G_FILE_TEST_EXISTS) && !g_file_test(out, G_FILE_TEST_IS_DIR))
    inputs_ok = mexd_file_check_output(out, inputs, &error) &&
                mexd_fail(&error, MEXD_ERROR_INVALID_ARGUMENT, "%s: --out names a file, not a "
                          "folder", out);
  if (inputs_ok && mexd_file_same(out, data))
    inputs_ok = mexd_fail(&error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: --out is the data folder %s: the model and checkpoints would be "
                          "mixed with the slides' files; choose another folder",
                          out, data);
  for (int k = 0; inputs_ok && outputs[k]; k++)
    inputs_ok = mexd_file_check_output(outputs[k], inputs, &error);
  if (!inputs_ok) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }

  MexdDatasetOptions dopt;
  mexd_dataset_options_init(&dopt);
  dopt.preset = preset;
  dopt.val_fraction = val_fraction;
  dopt.seed = o.seed;
  dopt.skip_bad = skip_bad;
  dopt.outputs = (const char *const *)outputs;
  dopt.warn = warn_slide;
  dopt.warn_data = (gpointer)cmd;
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
  if (eoc && !o.experts) {
    /* the experts the run will have: the preset's, else C + 1 */
    const int E = ds->preset ? ds->preset->experts : ds->n_classes + 1;
    for (int k = 0; k < n_eoc; k++)
      if (!mexd_opt_int(cmd, "--expert-of-class", o.expert_of_class[k], 0, E - 1))
        return 2;
  }
  o.skip_bad = skip_bad;
  o.warn = warn_slide;
  o.warn_data = (gpointer)cmd;
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

/* Whether a prediction's failure is the slide's (its numbers) rather than the run's (a device,
 * memory): only those are skipped by --skip-bad. */
static gboolean slide_error(const GError *e)
{
  return e->domain == MEXD_ERROR &&
         (e->code == MEXD_ERROR_FORMAT || e->code == MEXD_ERROR_INVALID_ARGUMENT);
}

/* The predictions CSV (lib/io/csv.h: slide ids with commas, quotes or line breaks survive):
 * slide_id,label,predicted,p_<class>…[,spread] (spread: the predicted class's spread of the
 * chains, for MExD with Diff-C) */
static char *predictions_csv(const MexdDataset *ds, const int *slides, int n, const double *probs,
                             const double *spread)
{
  const int C = ds->n_classes;
  GString *s = g_string_new(NULL);
  g_autoptr(GPtrArray) row = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(row, g_strdup("slide_id"));
  g_ptr_array_add(row, g_strdup("label"));
  g_ptr_array_add(row, g_strdup("predicted"));
  for (int c = 0; c < C; c++)
    g_ptr_array_add(row, g_strdup_printf("p_%s", ds->classes[c]));
  if (spread)
    g_ptr_array_add(row, g_strdup("spread"));
  mexd_csv_append_row(s, (const char *const *)row->pdata, (int)row->len);
  for (int j = 0; j < n; j++) {
    const MexdDatasetSlide *sl = &ds->slides[slides[j]];
    g_ptr_array_set_size(row, 0);
    g_ptr_array_add(row, g_strdup(sl->slide_id));
    g_ptr_array_add(row, g_strdup(ds->classes[sl->label]));
    g_ptr_array_add(row, g_strdup(ds->classes[mexd_metrics_argmax(probs + (size_t)j * C, C)]));
    for (int c = 0; c < C; c++)
      g_ptr_array_add(row, g_strdup_printf("%.8g", probs[(size_t)j * C + c]));
    if (spread)
      g_ptr_array_add(row, g_strdup_printf("%.9g", spread[j]));
    mexd_csv_append_row(s, (const char *const *)row->pdata, (int)row->len);
  }
  return g_string_free(s, FALSE);
}

static double mean_nll(const double *probs, const int *lab, int n, int C)
{
  double s = 0;
  for (int i = 0; i < n; i++)
    s -= log(MAX(probs[(size_t)i * C + lab[i]], 1e-12));
  return s / n;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* --calibrate: fits the temperature (and, with spreads, the referral spread that keeps
 * `coverage` of the slides) on these n slides and writes the model with them to `out`
 * (docs/MODEL-FORMAT.md, "mexd.calibration"); *note is the line eval prints. */
static gboolean write_calibration(const char *model, const char *out, const double *probs,
                                  const int *lab, const double *spread, int n, int C,
                                  double coverage, const char *split, const char *labels,
                                  const MexdForwardOptions *fo, char **note, GError **error)
{
  const double T = mexd_fit_temperature(probs, lab, n, C);
  g_autofree double *pt = g_new(double, (size_t)n * C);
  mexd_probs_temperature(probs, n, C, T, pt);
  g_autoptr(MexdCalibration) before = mexd_calibration_compute(probs, lab, n, C, 15, error);
  g_autoptr(MexdCalibration) after = before ? mexd_calibration_compute(pt, lab, n, C, 15, error)
                                            : NULL;
  if (!after)
    return FALSE;
  double refer = NAN;
  if (spread) { /* the ⌈coverage·n⌉-th smallest spread: that many slides are kept */
    g_autofree double *s = g_memdup2(spread, sizeof(double) * n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    int k = (int)ceil(coverage * n - 1e-9);
    refer = s[CLAMP(k, 1, n) - 1];
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "temperature");
  json_builder_add_double_value(b, T);
  if (spread) {
    json_builder_set_member_name(b, "refer_spread");
    json_builder_add_double_value(b, refer);
    json_builder_set_member_name(b, "coverage");
    json_builder_add_double_value(b, coverage);
  }
  json_builder_set_member_name(b, "slides");
  json_builder_add_int_value(b, n);
  json_builder_set_member_name(b, "nll");
  json_builder_begin_array(b);
  json_builder_add_double_value(b, mean_nll(probs, lab, n, C));
  json_builder_add_double_value(b, mean_nll(pt, lab, n, C));
  json_builder_end_array(b);
  json_builder_set_member_name(b, "ece");
  json_builder_begin_array(b);
  json_builder_add_double_value(b, before->ece);
  json_builder_add_double_value(b, after->ece);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "fitted_on");
  json_builder_begin_object(b);
  g_autofree char *mb = g_path_get_basename(model), *lb = g_path_get_basename(labels);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, mb);
  json_builder_set_member_name(b, "labels");
  json_builder_add_string_value(b, lb);
  json_builder_set_member_name(b, "split");
  json_builder_add_string_value(b, split);
  json_builder_set_member_name(b, "sampler");
  json_builder_add_string_value(b, fo->sampler == MEXD_SAMPLER_DDIM ? "ddim" : "card");
  json_builder_set_member_name(b, "chains");
  json_builder_add_int_value(b, fo->chains);
  json_builder_set_member_name(b, "sample_seed");
  json_builder_add_int_value(b, (gint64)fo->seed);
  if (fo->sampler == MEXD_SAMPLER_DDIM) {
    json_builder_set_member_name(b, "steps");
    json_builder_add_int_value(b, fo->steps);
  }
  json_builder_end_object(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *json = json_to_string(root, FALSE);
  if (!mexd_classifier_write_calibrated(model, out, json, error))
    return FALSE;
  g_autofree char *rs = spread ? g_strdup_printf("; referral above spread %.4g (keeps %.0f %%)",
                                                 refer, 100 * coverage)
                               : g_strdup("");
  /* a temperature at the search's bound: the likelihood wants the probabilities flattened
   * (or sharpened) without limit — the model's confidence does not rank its errors on this split */
  const char *bound = T > 19.99 ? "; the temperature is at its upper bound (20): on this split the "
                                  "model's confidence carries no information about its errors, and "
                                  "the calibrated probabilities are close to uniform"
                      : T < 0.0501 ? "; the temperature is at its lower bound (0.05): the "
                                     "calibrated probabilities are close to 0 and 1"
                                   : "";
  *note = g_strdup_printf("calibration fitted on %d slides of the %s split: temperature %.4f "
                          "(NLL %.4f → %.4f, ECE %.4f → %.4f)%s%s; written to %s\n",
                          n, split, T, mean_nll(probs, lab, n, C), mean_nll(pt, lab, n, C),
                          before->ece, after->ece, rs, bound, out);
  return TRUE;
}

int mexd_cmd_eval(int argc, char **argv)
{
  const char *cmd = "mexd eval";
  g_autofree char *model = NULL, *data = NULL, *labels = NULL, *split_s = NULL, *preset = NULL;
  g_autofree char *outp = NULL, *device = NULL, *sampler = NULL, *seed_s = NULL, *png = NULL;
  g_autofree char *calibrate = NULL;
  double coverage = 0.9;
  double val_fraction = 0;
  gint64 sample_seed = G_MININT64;   /* not given: 0, or a calibrated model's own */
  int steps = G_MININT, chains = G_MININT; /* not given: 50 and 32, or the calibration's */
  gboolean json = FALSE, prior_only = FALSE, skip_bad = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
       "a model file from mexd train (MExD, TransMIL or ABMIL)", "M"},
      {"data", 0, 0, G_OPTION_ARG_FILENAME, &data, "directory of feature files", "DIR"},
      {"labels", 0, 0, G_OPTION_ARG_FILENAME, &labels, "CSV: slide_id,label[,split]", "CSV"},
      {"split", 0, 0, G_OPTION_ARG_STRING, &split_s, "test (default), val, train or all", "S"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &preset, "the cohort preset (official split)", "P"},
      {"val-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &val_fraction,
       "rebuild the val split training carved (with the training --seed; 0..1)", "F"},
      {"seed", 0, 0, G_OPTION_ARG_STRING, &seed_s,
       "the training seed (for --val-fraction; 0..18446744073709551615)", "S"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &outp,
       "per-slide predictions as CSV (written atomically; never one of the inputs)", "FILE"},
      {"reliability", 0, 0, G_OPTION_ARG_FILENAME, &png,
       "the reliability diagram as PNG (per confidence bin the accuracy as a blue bar, its gap "
       "to the bin's mean confidence hatched red, the diagonal in grey, slides per bin at the "
       "bottom; a calibrated model: the raw probabilities left, the calibrated right)",
       "FILE"},
      {"calibrate", 0, 0, G_OPTION_ARG_FILENAME, &calibrate,
       "fit the calibration on this split (use the validation split) and write the model with "
       "it to FILE: a temperature for the probabilities and, for MExD with Diff-C, the spread "
       "above which a slide is referred (never one of the inputs)",
       "FILE"},
      {"coverage", 0, 0, G_OPTION_ARG_DOUBLE, &coverage,
       "with --calibrate: the share of the split's slides the referral keeps (0.9; 0.5..1)", "C"},
      {"prior-only", 0, 0, G_OPTION_ARG_NONE, &prior_only,
       "MExD: report the Dyn-MoE prior rho, not the diffusion's probabilities", NULL},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &sampler,
       "card (default) or ddim (a model calibrated with a referral: its own)", "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &steps,
       "DDIM steps (50; 2..T, the model's T; calibrated: its own)", "K"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &chains,
       "diffusion chains (32; 1..4096; calibrated: its own)", "N"},
      {"sample-seed", 0, 0, G_OPTION_ARG_INT64, &sample_seed,
       "noise seed of the chains (0; 0..9223372036854775807; calibrated: its own)", "S"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"skip-bad", 0, 0, G_OPTION_ARG_NONE, &skip_bad,
       "skip slides with bad data or numbers that are not finite (a warning names each)", NULL},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "the metrics as JSON", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- evaluate a trained model");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "ACC, AUC (one-vs-rest per class, macro mean; binary: the positive class), macro-F1,\n"
           "the per-class table and the confusion matrix of a split, as scikit-learn computes\n"
           "them; --out writes each slide's probabilities.  Then selective classification (the\n"
           "risk-coverage of the slides ranked by the top-class probability and, for MExD with\n"
           "Diff-C, by the spread of its chains: AURC, accuracy at 80 % and 90 % coverage) and\n"
           "calibration (ECE), with 95 % bootstrap intervals.  A model calibrated by --calibrate\n"
           "is evaluated with its calibration too, and a referral threshold only with the\n"
           "sampler, chains and noise seed it was fitted with (a different one given is refused).\n"
           "A slide whose features or probabilities are not finite is an error naming it\n"
           "(--skip-bad: a warning, and the slide is left out).  Exit 0 done, 1 a failure, 2 bad\n"
           "usage.");
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
  if (preset && !mexd_preset_lookup(preset, &error)) {
    fprintf(stderr, "%s: --preset: %s\n", cmd, error->message);
    return 2;
  }
  guint64 seed = 0;
  if (!opt_seed(cmd, seed_s, &seed) ||
      !mexd_opt_double(cmd, "--val-fraction", val_fraction, 0, 1, FALSE) ||
      (steps != G_MININT && !mexd_opt_int(cmd, "--steps", steps, 2, 100000)) ||
      (chains != G_MININT && !mexd_opt_int(cmd, "--chains", chains, 1, 4096)) ||
      !mexd_opt_double(cmd, "--coverage", coverage, 0.5, 1, FALSE) ||
      (sample_seed != G_MININT64 && !mexd_opt_int(cmd, "--sample-seed", sample_seed, 0, G_MAXINT64)))
    return 2;
  const gboolean chains_given = chains != G_MININT, seed_given = sample_seed != G_MININT64;
  if (!chains_given)
    chains = 32;
  MexdForwardOptions fo = MEXD_FORWARD_OPTIONS_DEFAULT;
  fo.seed = seed_given ? (uint64_t)sample_seed : 0;
  const gboolean steps_given = steps != G_MININT;
  if (!steps_given)
    steps = 50;
  fo.steps = steps;
  fo.chains = chains;
  if (sampler && g_str_equal(sampler, "ddim"))
    fo.sampler = MEXD_SAMPLER_DDIM;
  else if (sampler && !g_str_equal(sampler, "card")) {
    fprintf(stderr, "%s: --sampler is card or ddim, not \"%s\"\n", cmd, sampler);
    return 2;
  }
  /* the inputs are files (a FIFO is refused before any open) and --out is none of them: the
   * model and the labels here, the feature files in the data set's load (before it reads any) */
  const char *inputs[] = {model, labels, NULL};
  if (!mexd_file_check_regular(model, "model file", &error) ||
      !mexd_file_check_regular(labels, "labels CSV", &error) ||
      (outp && !mexd_file_check_output(outp, inputs, &error)) ||
      (png && !mexd_file_check_output(png, inputs, &error)) ||
      (calibrate && !mexd_file_check_output(calibrate, inputs, &error))) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  g_autoptr(MexdClassifier) clf = be ? mexd_classifier_load(model, be, &error) : NULL;
  if (!clf) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  /* a referral threshold holds for the sampler settings it was fitted with only (lib/train/
   * classifier.h): those are the defaults, and another one given is refused (not when fitting a
   * new calibration, nor for the prior, which takes no chains) */
  if (mexd_classifier_has_diffusion(clf) && !prior_only && !calibrate &&
      !mexd_calibration_sampler(mexd_classifier_calibration(clf), model, "--sample-seed",
                                &fo.sampler, sampler != NULL, &fo.chains, chains_given, &fo.steps,
                                steps_given, &fo.seed, seed_given, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 2;
  }
  /* a --steps given is checked against the model's T even for CARD (which takes all T) */
  if (mexd_classifier_has_diffusion(clf) && (steps_given || fo.sampler == MEXD_SAMPLER_DDIM) &&
      !mexd_opt_int(cmd, "--steps", fo.steps, 2, mexd_model_config(mexd_classifier_model(clf))->T))
    return 2;
  MexdDatasetOptions dopt;
  mexd_dataset_options_init(&dopt);
  dopt.preset = preset;
  dopt.class_names = preset ? NULL : mexd_classifier_classes(clf);
  dopt.val_fraction = val_fraction;
  dopt.seed = seed;
  dopt.skip_bad = skip_bad;
  dopt.expected_dim = mexd_classifier_feature_dim(clf);
  const char *outs[3] = {outp, png, calibrate}, *out_names[3] = {"--out", "--reliability",
                                                                  "--calibrate"};
  for (int a = 0; a < 3; a++)
    for (int b = a + 1; b < 3; b++)
      if (outs[a] && outs[b] && g_str_equal(outs[a], outs[b])) {
        fprintf(stderr, "%s: %s and %s are the same file (%s)\n", cmd, out_names[a],
                out_names[b], outs[a]);
        return 2;
      }
  const char *outputs[4] = {NULL};
  for (int a = 0, k = 0; a < 3; a++)
    if (outs[a])
      outputs[k++] = outs[a];
  dopt.outputs = outputs;
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
  const int n_all = (int)idx->len;
  g_autofree double *probs = g_new(double, (size_t)n_all * C);
  g_autofree int *lab = g_new(int, n_all);
  g_autofree int *kept = g_new(int, n_all);
  g_autofree double *spread_pred = g_new(double, n_all);
  gboolean have_spread = TRUE; /* every slide's chains ran (MExD with Diff-C, not --prior-only) */
  float p[MEXD_MAX_CLASSES], sp[MEXD_MAX_CLASSES];
  gboolean tty = isatty(2);
  int n = 0, skipped = 0;
  for (int j = 0; j < n_all; j++) {
    const int i = g_array_index(idx, int, j);
    const MexdDatasetSlide *sl = &ds->slides[i];
    GError *perr = NULL;
    gboolean ok = mexd_classifier_predict(clf, sl->bag->features, sl->bag->n, sl->bag->d, &fo,
                                          prior_only, p, sp, &perr);
    for (int c = 0; ok && c < C; c++)
      if (!isfinite(p[c]))
        ok = mexd_fail(&perr, MEXD_ERROR_FORMAT,
                       "the model's probability of class %s is %s: the computation overflowed "
                       "float32 on this bag",
                       ds->classes[c], isnan(p[c]) ? "NaN" : "infinite");
    if (!ok) {
      g_autofree char *sid = g_utf8_make_valid(sl->slide_id, -1);
      g_autofree char *file = g_filename_display_name(sl->path);
      g_autofree char *csv = g_filename_display_name(labels);
      g_autofree char *msg = g_strdup_printf("%s line %d: slide '%s' (%s): %s", csv, sl->line,
                                             sid, file, perr->message);
      gboolean skip = skip_bad && slide_error(perr);
      g_error_free(perr);
      if (tty && !quiet)
        fprintf(stderr, "\r\033[K");
      if (!skip) {
        fprintf(stderr, "%s: %s%s\n", cmd, msg,
                skip_bad ? "" : " (--skip-bad leaves such slides out)");
        return 1;
      }
      warn_slide(sl->slide_id, msg, (gpointer)cmd);
      skipped++;
      continue;
    }
    for (int c = 0; c < C; c++)
      probs[(size_t)n * C + c] = p[c];
    spread_pred[n] = sp[mexd_metrics_argmax(probs + (size_t)n * C, C)];
    have_spread = have_spread && isfinite(spread_pred[n]);
    lab[n] = sl->label;
    kept[n++] = i;
    if (tty && !quiet)
      fprintf(stderr, "\r%s: %d/%d slides", cmd, j + 1, n_all);
  }
  if (tty && !quiet)
    fprintf(stderr, "\r\033[K");
  if (n == 0) {
    fprintf(stderr, "%s: every slide of the %s split was skipped (%d)\n", cmd,
            split_s ? split_s : "test", skipped);
    return 1;
  }
  g_autoptr(MexdMetrics) m = mexd_metrics_compute(probs, lab, n, C, &error);
  if (!m) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (outp) {
    g_autofree char *text = predictions_csv(ds, kept, n, probs, have_spread ? spread_pred : NULL);
    if (!mexd_file_write_atomic(outp, text, -1, &error)) {
      fprintf(stderr, "%s: %s\n", cmd, error->message);
      return 1;
    }
  }
  g_autoptr(JsonBuilder) ub = json ? json_builder_new() : NULL;
  g_autoptr(GString) utext = json ? NULL : g_string_new(NULL);
  if (ub)
    json_builder_begin_object(ub);
  const MexdClassifierCalibration *mc = mexd_classifier_calibration(clf);
  if (!mexd_eval_uncertainty(probs, lab, have_spread ? spread_pred : NULL, n, C,
                             mc->present ? mc->temperature : NAN,
                             mc->present ? mc->refer_spread : NAN, ub, utext, png, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  g_autofree char *cal_note = NULL;
  if (calibrate && !write_calibration(model, calibrate, probs, lab, have_spread ? spread_pred : NULL,
                                      n, C, coverage, split_s ? split_s : "test", labels, &fo,
                                      &cal_note, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (cal_note && !quiet)
    fprintf(stderr, "%s: %s", cmd, cal_note);
  if (json) {
    g_autoptr(JsonNode) node = mexd_metrics_to_json(m, (const char *const *)ds->classes);
    json_builder_end_object(ub);
    g_autoptr(JsonNode) un = json_builder_get_root(ub);
    JsonObject *uo = json_node_get_object(un);
    g_autoptr(GList) members = json_object_get_members(uo);
    for (GList *l = members; l; l = l->next)
      json_object_set_member(json_node_get_object(node), l->data,
                             json_node_copy(json_object_get_member(uo, l->data)));
    if (have_spread) { /* the settings the chains ran with (a calibration's referral needs them) */
      JsonObject *so = json_object_new();
      json_object_set_string_member(so, "sampler", fo.sampler == MEXD_SAMPLER_DDIM ? "ddim" : "card");
      json_object_set_int_member(so, "chains", fo.chains);
      if (fo.sampler == MEXD_SAMPLER_DDIM)
        json_object_set_int_member(so, "steps", fo.steps);
      json_object_set_int_member(so, "sample_seed", (gint64)fo.seed);
      json_object_set_object_member(json_node_get_object(node), "sampling", so);
    }
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_root(gen, node);
    json_generator_set_pretty(gen, TRUE);
    g_autofree char *txt = json_generator_to_data(gen, NULL);
    printf("%s\n", txt);
  } else {
    g_autofree char *txt = mexd_metrics_format(m, (const char *const *)ds->classes);
    printf("%s: %s (%s) on the %s split\n%s", cmd, model,
           mexd_classifier_kind_name(mexd_classifier_kind(clf)), split_s ? split_s : "test", txt);
    if (have_spread) {
      g_autofree char *st = fo.sampler == MEXD_SAMPLER_DDIM
                                ? g_strdup_printf("DDIM, %d steps", fo.steps)
                                : g_strdup("CARD");
      printf("sampling: %s, %d chains, noise seed %" G_GUINT64_FORMAT "%s\n", st, fo.chains,
             (guint64)fo.seed,
             isfinite(mexd_classifier_calibration(clf)->refer_spread) && !calibrate
                 ? " (those the calibration's referral was fitted with)"
                 : "");
    }
    printf("%s", utext->str);
  }
  if (skipped || ds->n_skipped)
    fprintf(stderr, "%s: %d slide%s skipped (--skip-bad): %d while loading, %d while predicting\n",
            cmd, skipped + ds->n_skipped, skipped + ds->n_skipped == 1 ? "" : "s", ds->n_skipped,
            skipped);
  return 0;
}
