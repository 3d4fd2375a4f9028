/* synth-bags.c: `mexd synth-bags` — a synthetic MIL benchmark (lib/train/synth.h documents the
 * generative model and the files).
 *
 *   mexd synth-bags --out DIR [--classes 2|3] [--slides N] [--test-fraction F] [--dim D]
 *                   [--min-instances N] [--max-instances N] [--min-fraction F]
 *                   [--max-fraction F] [--seed S] [--force] [--quiet]
 *
 * A progress line per slide on stderr (unless --quiet), a summary on stdout.  Exit 0 done,
 * 1 a failure while writing (a non-empty DIR without --force among them), 2 bad usage (an option
 * outside its range among them, named with its range in tools/opts.h's words: --classes 2..3,
 * --slides C..1000000, --test-fraction 0 or more and below 1, --dim 2..65536, --min-instances
 * and --max-instances 1..1000000 (min ≤ max), --min-fraction and --max-fraction above 0 and at
 * most 1 (min ≤ max), --seed 0..2^64−1).  Every file is written atomically (lib/train/synth.c):
 * with --force, a file of the same name that is a link is replaced, never written through. */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"

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

/* --slides: its default depends on --classes, so whether it was given is kept apart */
typedef struct {
  gboolean given;
  int value;
} SlidesArg;

static gboolean parse_slides(const char *name, const char *value, gpointer data, GError **error)
{
  SlidesArg *a = data;
  gint64 v;
  if (!g_ascii_string_to_signed(value, 10, G_MININT, G_MAXINT, &v, NULL)) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "Cannot parse integer value \"%s\" for %s", value, name);
    return FALSE;
  }
  a->given = TRUE;
  a->value = (int)v;
  return TRUE;
}

int mexd_cmd_synth_bags(int argc, char **argv)
{
  /* the options are parsed into the 2-class defaults; --classes 3 changes only the slide count */
  MexdSynthOptions o;
  mexd_synth_options_init(&o, 2);
  SlidesArg slides = {FALSE, 0};
  g_autofree char *seed_str = NULL, *out = NULL;
  gboolean force = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
      {"classes", 'c', 0, G_OPTION_ARG_INT, &o.n_classes,
       "2 (normal/tumor, Camelyon16-like) or 3 (benign/atypical/malignant, BRACS-like)", "C"},
      {"slides", 'n', 0, G_OPTION_ARG_CALLBACK, (gpointer)parse_slides,
       "slides (60 for 2 classes, 90 for 3; C..1000000)", "N"},
      {"test-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &o.test_fraction,
       "fraction of each class in the test split (0.3; 0 or more, below 1)", "F"},
      {"dim", 'd', 0, G_OPTION_ARG_INT, &o.dim, "feature size (384; 2..65536)", "D"},
      {"min-instances", 0, 0, G_OPTION_ARG_INT, &o.min_instances, "smallest bag (200; 1..1000000)",
       "N"},
      {"max-instances", 0, 0, G_OPTION_ARG_INT, &o.max_instances,
       "largest bag (5000; 1..1000000, at least --min-instances)", "N"},
      {"min-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &o.min_fraction,
       "smallest lesion fraction of a lesion bag (0.005 = 0.5 %; above 0, at most 1)", "F"},
      {"max-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &o.max_fraction,
       "largest lesion fraction (0.10 = 10 %; above 0, at most 1, at least --min-fraction)", "F"},
      {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_str, "the seed, 0..2^64-1 (0)", "S"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "the directory to write", "DIR"},
      {"force", 'f', 0, G_OPTION_ARG_NONE, &force,
       "write into a non-empty directory (files of the same names are replaced)", NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines, no summary", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- a synthetic MIL benchmark");
  GOptionGroup *main_group = g_option_group_new(NULL, NULL, NULL, &slides, NULL);
  g_option_group_add_entries(main_group, entries);
  g_option_context_set_main_group(ctx, main_group);
  g_option_context_set_description(
      ctx, "Writes DIR/h5_files/<slide>.h5 (CLAM features and coords, plus the ground truth\n"
           "instance_label and instance_cluster), DIR/labels.csv (slide_id,label,split) and\n"
           "DIR/synth.json.  The same options give the same bytes on any machine.\n"
           "The generative model is documented in lib/train/synth.h.");
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
  if (!mexd_opt_int(cmd, "--classes", o.n_classes, 2, 3))
    return 2;
  if (slides.given) {
    o.n_slides = slides.value;
  } else {
    MexdSynthOptions d;
    mexd_synth_options_init(&d, o.n_classes);
    o.n_slides = d.n_slides;
  }
  if (!mexd_opt_int(cmd, "--slides", o.n_slides, o.n_classes, MEXD_SYNTH_MAX_SLIDES) ||
      !mexd_opt_double(cmd, "--test-fraction", o.test_fraction, 0, 1, FALSE) ||
      !mexd_opt_int(cmd, "--dim", o.dim, 2, MEXD_SYNTH_MAX_DIM) ||
      !mexd_opt_int(cmd, "--min-instances", o.min_instances, 1, MEXD_SYNTH_MAX_INSTANCES) ||
      !mexd_opt_int(cmd, "--max-instances", o.max_instances, 1, MEXD_SYNTH_MAX_INSTANCES) ||
      !mexd_opt_double(cmd, "--min-fraction", o.min_fraction, 0, 1, TRUE) ||
      !mexd_opt_double(cmd, "--max-fraction", o.max_fraction, o.min_fraction, 1, FALSE))
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
