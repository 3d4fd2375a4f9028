/* synth-bags.c: `mexd synth-bags` — a synthetic MIL benchmark (lib/train/synth.h documents the
 * generative model and the files).
 *
 *   mexd synth-bags --out DIR [--preset camelyon16-like|bracs-like] [--classes 2|3]
 *                   [--slides N] [--test-fraction F] [--dim D] [--min-instances N]
 *                   [--max-instances N] [--min-fraction F] [--max-fraction F]
 *                   [--lesion-distance D] [--noise S] [--class-ratio A:B[:C]] [--seed S]
 *                   [--force] [--quiet]
 *
 * A progress line per slide on stderr (unless --quiet), a summary on stdout.  Exit 0 done,
 * 1 a failure while writing (a non-empty DIR without --force among them), 2 bad usage (an option
 * outside its range among them, named with its range in tools/opts.h's words: --classes 2..3,
 * --slides C..1000000, --test-fraction 0 or more and below 1, --dim 2..65536, --min-instances
 * and --max-instances 1..1000000 (min ≤ max), --min-fraction and --max-fraction above 0 and at
 * most 1 (min ≤ max), --lesion-distance above 0 and at most 12, --noise 0 or more and below
 * 1e6, --class-ratio 1..1000 per class, --seed 0..2^64−1).  A preset sets every option but the
 * seed; the options given beside it override it.  Every file is written atomically (lib/train/synth.c):
 * with --force, a file of the same name that is a link is replaced, never written through. */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void progress_line(const MexdSynthSlide *sl, int done, int n, gpointer user_data)
{
  const int *n_classes = user_data;
  fprintf(stderr,
          "mexd synth-bags: %d/%d %s %-9s %-5s %6" G_GINT64_FORMAT " instances, %4" G_GINT64_FORMAT
          " lesion (%.2f %%)\n",
          done, n, sl->id, mexd_synth_class_name(*n_classes, sl->label),
          sl->test ? "test" : "train", sl->n_instances, sl->n_lesion,
          100.0 * (double)sl->n_lesion / (double)sl->n_instances);
}

/* Every option that a preset sets is parsed by one callback that also notes that it was given:
 * the preset (or the defaults of --classes) fills what was not, and what was given overrides it. */
typedef struct {
  const char *name;
  char type; /* 'i' int, 'd' double, 'r' class ratio */
  gboolean given;
  gint64 i;
  double d;
  int ratio[3], n_ratio;
} Opt;

enum { O_CLASSES, O_SLIDES, O_TEST, O_DIM, O_MIN_N, O_MAX_N, O_MIN_F, O_MAX_F, O_DIST, O_NOISE,
       O_RATIO, O_N };

static Opt opts[O_N] = {
    {"--classes", 'i'},       {"--slides", 'i'},        {"--test-fraction", 'd'},
    {"--dim", 'i'},           {"--min-instances", 'i'}, {"--max-instances", 'i'},
    {"--min-fraction", 'd'},  {"--max-fraction", 'd'},  {"--lesion-distance", 'd'},
    {"--noise", 'd'},         {"--class-ratio", 'r'},
};

static gboolean parse_opt(const char *name, const char *value, gpointer data, GError **error)
{
  static const char *const shorts[][2] = {{"-c", "--classes"}, {"-n", "--slides"}, {"-d", "--dim"}};
  for (size_t k = 0; k < G_N_ELEMENTS(shorts); k++)
    if (strcmp(name, shorts[k][0]) == 0)
      name = shorts[k][1];
  Opt *o = NULL;
  for (int k = 0; k < O_N; k++)
    if (strcmp(name, opts[k].name) == 0)
      o = &opts[k];
  (void)data;
  if (!o)
    return FALSE;
  gboolean ok = TRUE;
  if (o->type == 'i') {
    ok = g_ascii_string_to_signed(value, 10, G_MININT, G_MAXINT, &o->i, NULL);
  } else if (o->type == 'd') {
    char *end = NULL;
    o->d = g_ascii_strtod(value, &end);
    ok = end != value && *end == '\0' && isfinite(o->d);
  } else { /* A:B or A:B:C */
    g_auto(GStrv) parts = g_strsplit(value, ":", -1);
    o->n_ratio = (int)g_strv_length(parts);
    ok = o->n_ratio >= 2 && o->n_ratio <= 3;
    for (int c = 0; ok && c < o->n_ratio; c++) {
      gint64 v;
      ok = g_ascii_string_to_signed(parts[c], 10, 1, 1000, &v, NULL);
      o->ratio[c] = (int)v;
    }
    if (!ok) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "%s \"%s\" is not a ratio of whole numbers 1..1000, one per class (3:2 or "
                  "3:1:2)",
                  o->name, value);
      return FALSE;
    }
  }
  if (!ok) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "Cannot parse %s value \"%s\" for %s",
                o->type == 'i' ? "integer" : "number", value, o->name);
    return FALSE;
  }
  o->given = TRUE;
  return TRUE;
}

int mexd_cmd_synth_bags(int argc, char **argv)
{
  MexdSynthOptions o;
  g_autofree char *seed_str = NULL, *out = NULL, *preset = NULL;
  gboolean force = FALSE, quiet = FALSE;
  for (int k = 0; k < O_N; k++)
    opts[k].given = FALSE;
#define CB(long_, short_, help, arg)                                                               \
  {long_, short_, 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_opt, help, arg}
  GOptionEntry entries[] = {
      {"preset", 'p', 0, G_OPTION_ARG_STRING, &preset,
       "a cohort at the scale of the paper's data sets: camelyon16-like (400 slides, normal : "
       "tumor 3 : 2) or bracs-like (450 slides, benign : atypical : malignant 3 : 1 : 2); the "
       "options below override it",
       "NAME"},
      CB("classes", 'c',
         "2 (normal/tumor, Camelyon16-like) or 3 (benign/atypical/malignant, BRACS-like)", "C"),
      CB("slides", 'n', "slides (60 for 2 classes, 90 for 3; C..1000000)", "N"),
      CB("test-fraction", 0, "fraction of each class in the test split (0.3; 0 or more, below 1)",
         "F"),
      CB("dim", 'd', "feature size (384; 2..65536)", "D"),
      CB("min-instances", 0, "smallest bag (200; 1..1000000)", "N"),
      CB("max-instances", 0, "largest bag (5000; 1..1000000, at least --min-instances)", "N"),
      CB("min-fraction", 0,
         "smallest lesion fraction of a lesion bag (0.005 = 0.5 %; above 0, at most 1)", "F"),
      CB("max-fraction", 0,
         "largest lesion fraction (0.10 = 10 %; above 0, at most 1, at least --min-fraction)", "F"),
      CB("lesion-distance", 0,
         "distance Δ of a lesion cluster from its background cluster, in units of the noise σ = "
         "1: the separation (3.5; above 0, at most 12)",
         "D"),
      CB("noise", 0, "the instances' noise σ around their cluster's centre (1; 0 or more)", "S"),
      CB("class-ratio", 0, "slides per class as whole numbers, 3:2 or 3:1:2 (1:1 or 1:1:1)",
         "A:B[:C]"),
      {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_str, "the seed, 0..2^64-1 (0)", "S"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "the directory to write", "DIR"},
      {"force", 'f', 0, G_OPTION_ARG_NONE, &force,
       "write into a non-empty directory (files of the same names are replaced)", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines, no summary", NULL},
      {NULL},
  };
#undef CB
  g_autoptr(GOptionContext) ctx = g_option_context_new("- a synthetic MIL benchmark");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_description(
      ctx, "Writes DIR/h5_files/<slide>.h5 (CLAM features and coords, plus the ground truth\n"
           "instance_label and instance_cluster), DIR/labels.csv (slide_id,label,split) and\n"
           "DIR/synth.json.  The same options give the same bytes on any machine.\n"
           "The generative model and the presets are documented in lib/train/synth.h and .c.");
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd synth-bags: %s\n", error->message);
    return 2;
  }
  if (argc > 1) {
    fprintf(stderr, "mexd synth-bags: unexpected argument \"%s\" (mexd synth-bags --help)\n",
            argv[1]);
    return 2;
  }
  if (!out) {
    fprintf(stderr, "mexd synth-bags: give --out DIR (mexd synth-bags --help)\n");
    return 2;
  }
  const char *cmd = "mexd synth-bags";
  if (opts[O_CLASSES].given && !mexd_opt_int(cmd, "--classes", opts[O_CLASSES].i, 2, 3))
    return 2;
  if (preset) {
    if (!mexd_synth_options_preset(&o, preset, &error)) {
      fprintf(stderr, "%s: %s\n", cmd, error->message + strlen("synthetic bags: "));
      return 2;
    }
    if (opts[O_CLASSES].given && opts[O_CLASSES].i != o.n_classes) {
      fprintf(stderr, "%s: --classes %d disagrees with --preset %s (%d classes)\n", cmd,
              (int)opts[O_CLASSES].i, preset, o.n_classes);
      return 2;
    }
  } else {
    mexd_synth_options_init(&o, opts[O_CLASSES].given ? (int)opts[O_CLASSES].i : 2);
  }
  if (opts[O_RATIO].given && opts[O_RATIO].n_ratio != o.n_classes) {
    fprintf(stderr, "%s: --class-ratio needs one number per class (%d classes, %d given)\n", cmd,
            o.n_classes, opts[O_RATIO].n_ratio);
    return 2;
  }
  /* the ranges of the integer options are checked before they are narrowed to int */
  if ((opts[O_SLIDES].given &&
       !mexd_opt_int(cmd, "--slides", opts[O_SLIDES].i, o.n_classes, MEXD_SYNTH_MAX_SLIDES)) ||
      (opts[O_DIM].given && !mexd_opt_int(cmd, "--dim", opts[O_DIM].i, 2, MEXD_SYNTH_MAX_DIM)) ||
      (opts[O_MIN_N].given &&
       !mexd_opt_int(cmd, "--min-instances", opts[O_MIN_N].i, 1, MEXD_SYNTH_MAX_INSTANCES)) ||
      (opts[O_MAX_N].given &&
       !mexd_opt_int(cmd, "--max-instances", opts[O_MAX_N].i, 1, MEXD_SYNTH_MAX_INSTANCES)))
    return 2;
  int *ints[] = {[O_SLIDES] = &o.n_slides, [O_DIM] = &o.dim, [O_MIN_N] = &o.min_instances,
                 [O_MAX_N] = &o.max_instances};
  double *dbls[] = {[O_TEST] = &o.test_fraction, [O_MIN_F] = &o.min_fraction,
                    [O_MAX_F] = &o.max_fraction, [O_DIST] = &o.lesion_distance,
                    [O_NOISE] = &o.noise};
  for (int k = O_SLIDES; k < O_RATIO; k++) {
    if (!opts[k].given)
      continue;
    if (opts[k].type == 'i')
      *ints[k] = (int)opts[k].i;
    else
      *dbls[k] = opts[k].d;
  }
  if (opts[O_RATIO].given)
    memcpy(o.class_ratio, opts[O_RATIO].ratio, sizeof o.class_ratio);
  if (!mexd_opt_double(cmd, "--test-fraction", o.test_fraction, 0, 1, FALSE) ||
      !mexd_opt_double(cmd, "--min-fraction", o.min_fraction, 0, 1, TRUE) ||
      !mexd_opt_double(cmd, "--max-fraction", o.max_fraction, o.min_fraction, 1, FALSE) ||
      !mexd_opt_double(cmd, "--lesion-distance", o.lesion_distance, 0, 2 * o.radius, TRUE) ||
      !mexd_opt_double(cmd, "--noise", o.noise, 0, 1e6, FALSE))
    return 2;
  if (o.min_instances > o.max_instances) {
    fprintf(stderr,
            "%s: --min-instances %d is above --max-instances %d (--max-instances must be at least "
            "--min-instances)\n",
            cmd, o.min_instances, o.max_instances);
    return 2;
  }
  if (o.test_fraction >= 1) {
    fprintf(stderr, "%s: --test-fraction %g is outside 0..1 (and must be below it)\n", cmd,
            o.test_fraction);
    return 2;
  }
  if (seed_str) {
    guint64 v;
    if (!g_ascii_string_to_unsigned(seed_str, 10, 0, G_MAXUINT64, &v, NULL)) {
      fprintf(stderr, "mexd synth-bags: --seed %s is outside 0..18446744073709551615\n", seed_str);
      return 2;
    }
    o.seed = v;
  }
  if (!mexd_synth_options_check(&o, &error)) {
    /* "synthetic bags: --dim must be …": the flag's name is what the user needs */
    const char *msg = error->message;
    if (g_str_has_prefix(msg, "synthetic bags: "))
      msg += strlen("synthetic bags: ");
    fprintf(stderr, "mexd synth-bags: %s\n", msg);
    return 2;
  }
  if (!mexd_synth_write(&o, out, force, quiet ? NULL : progress_line, &o.n_classes, &error)) {
    fprintf(stderr, "mexd synth-bags: %s\n", error->message);
    return 1;
  }
  if (!quiet)
    printf("%s: %d slides of %d classes, %d features each (labels.csv, h5_files/, seed "
           "%" G_GUINT64_FORMAT ")\n",
           out, o.n_slides, o.n_classes, o.dim, o.seed);
  return 0;
}
