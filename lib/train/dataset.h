/* dataset.h: the training data set — a directory of bags of features and a CSV of labels, loaded
 * once into memory, split into train / val / test, with a reproducible bag order per epoch.
 *
 * Input.  A labels CSV with a header line naming at least the columns `slide_id` and `label`, and
 * optionally `split` (names matched without regard to ASCII case; other columns are ignored, so
 * CLAM's and TANGLE's CSVs with extra columns load).  It is read by the one RFC 4180 reader,
 * lib/io/csv.h (MEXD_CSV_TRIM), after a regular-file check (a FIFO or a device is refused before
 * any open) and at most 1 GiB.  Cells may be surrounded by spaces and by double quotes ("" inside
 * quotes is a quote); a UTF-8 byte order mark, "\r\n" line ends and blank lines are accepted.
 * `split` is one of train / val / test (also training, valid, validation, testing; any ASCII
 * case).  Without a split column every slide is a training slide (a test split then only comes
 * from a preset's official split).
 * Decisions: the header is the first line that is not blank; a quoted cell may hold commas and
 * line breaks (RFC 4180; spaces inside the quotes are kept), and text between its closing quote
 * and the next comma is an error of the CSV (csv.h's message, "<labels CSV>:L: ..."); a row
 * whose cells are all empty (",,,", as spreadsheets export) counts as blank; a column named
 * twice is an error; "too few cells" means a row lacks a column used here (slide_id, label,
 * split); a row may have more cells than the header.  A slide's `line` is the line its row
 * starts on.
 *
 * Feature files.  Slide `S` is looked up in the feature directory as S.h5, S.csv and S.npy, and
 * as h5_files/S.h5 (CLAM's extract_features_fp.py writes FEAT_DIR/h5_files/S.h5).  Exactly one
 * must exist; two (e.g. S.h5 and S.csv) are an error naming both.  The files are read by
 * mexd_bag_read() (io/features.h), converted to float32, and kept in memory until
 * mexd_dataset_free() (coords are dropped: training does not use them).  Files of those
 * extensions in the directory (and h5_files/) that name no slide of the CSV are ignored and
 * counted (n_unused_files); the labels CSV itself is never counted.
 * Decisions: each file is read in the format its extension names (S.h5 as HDF5, S.csv as CSV,
 * S.npy as NumPy), not detected, so that an S.h5 that is not HDF5 is reported as such.  A name
 * exists when lstat() finds it (a dangling link then fails to read, with a message, rather than
 * being "no file").  n_unused_files counts the entries, directories excepted, of the directory
 * and of h5_files/ that end in .h5, .csv or .npy and are no lookup candidate of any CSV row's
 * slide id (so h5_files/S.csv is unused), the labels CSV (same device and inode) excepted.
 *
 * Classes.  With a preset (below), the preset's class list, in its order.  Else with
 * options.class_names, that list.  Else the distinct labels of the CSV sorted: numerically when
 * every label is a non-negative decimal integer ("2" before "10"), else by bytes (strcmp).
 * Sorted rather than in order of appearance so that a class's index, which a checkpoint's
 * output depends on, does not change when the CSV's rows are reordered or filtered.  Labels are
 * matched to a given list (preset or class_names) without regard to ASCII case, and to a
 * preset's aliases (e.g. BRACS's subtypes "PB" or group codes "BT" for benign); the classes
 * taken from the CSV are matched exactly, and two labels that differ only in case are an error.
 * Decisions: the classes from the CSV are the distinct non-empty labels of all its data rows
 * (rows later skipped included: the list does not depend on which feature files exist); two
 * numeric labels of the same number ("1" and "01") are an error like two that differ in case;
 * both are errors of the CSV as a whole (no skip_bad).  Numeric classes of equal value cannot
 * then occur; the sort is by value.  An empty label is never a class (it is a bad label).
 *
 * Bad data.  Each of these is a GError (MEXD_ERROR_FORMAT unless said) whose message names the
 * slide and, where there is one, its feature file and the CSV line: no feature file
 * (MEXD_ERROR_NOT_FOUND), two feature files, a file that cannot be read (the reader's code: IO,
 * FORMAT, UNSUPPORTED, NO_MEMORY), an empty bag (0 instances), NaN or ±Inf features
 * (MEXD_ERROR_INVALID_ARGUMENT), a feature size D different from the other slides' (or from
 * options.expected_dim) (MEXD_ERROR_SHAPE), a label that is no class, an empty or unknown split,
 * a slide id that is empty or contains '/' or '\\' or is "." or "..", a slide listed twice, a
 * slide absent from a preset's official split or whose label contradicts it.  With
 * options.skip_bad each of these instead skips the slide with a warning (options.warn, else
 * g_warning in the "mexd" domain) and counts it in n_skipped.  For D, skip_bad keeps the most
 * common D (ties: the first slide's) and skips the others.  A slide listed twice with the same
 * label and split keeps its first row; with different ones all its rows are skipped.  Errors
 * of the CSV as a whole (unreadable, no header, no slide_id or label column, a row with too few
 * cells) and NO_MEMORY are always errors.  Loading fails when no training slide remains.
 * Decisions: the messages read "<labels CSV> line L: slide 'S' (<feature file>): <what>", or
 * "<labels CSV> line L: slide 'S': <the reader's message, which starts with the file>"; the same
 * message goes to the warning.  Checks run in passes: the CSV as a whole (syntax, header, the
 * class list); then each row in CSV order (slide id, duplicates, label, split, official split,
 * the feature file's presence, by stat only); then each remaining row's bag in CSV order (read,
 * empty, finite, D, budget).  Without skip_bad the first failure of the first pass that has one
 * is the error (a wrong label is reported before any feature is read).  A duplicate is an error
 * without skip_bad even when its rows agree; rows agree when their classes and splits resolve
 * the same ("val" = "validation"), unresolvable cells comparing as text without regard to ASCII
 * case.  n_skipped counts skipped CSV rows (n_slides + n_skipped = the data rows), one warning
 * each.  For D with skip_bad (and no expected_dim) every bag is read first; the D of the
 * largest count wins, a tie going to the D of the earliest slide among the tied ones.  With
 * expected_dim the check is per slide.  "No training slide remains" is MEXD_ERROR_FORMAT.
 *
 * Memory.  All bags stay in memory as float32: N×D×4 bytes each (400 slides × 10,000 × 768 is
 * 12 GB).  total_bytes gives the sum; options.max_bytes refuses (MEXD_ERROR_NO_MEMORY, also
 * with skip_bad) a cohort above a budget, and a failed allocation is
 * MEXD_ERROR_NO_MEMORY naming the slide, never a crash.  (With Linux's overcommit a too large
 * cohort may still be killed later when touched: set max_bytes below the machine's memory.)
 * Decision (this said "before reading the file that would pass it", which cannot be done: a
 * bag's N is known only once its file is read, and lib/io has no shape-only reader): the check
 * comes right after each bag is read; the bag that would pass the budget is freed at once and
 * no further file is read, so at most max_bytes plus one bag is ever held.  The budget counts
 * the bags held at that moment (with skip_bad and no expected_dim, bags later skipped for their
 * D included).
 *
 * Validation split.  When no slide is in val (no split column, or none marked val, and no
 * official val), val is carved from train: per class, round(val_fraction × n_c) of its n_c
 * training slides (at least 1 when n_c >= 2 and val_fraction > 0; at most n_c - 1, so train
 * keeps every class it had), chosen by a seeded shuffle of that class's slides in CSV order
 * (Philox, see below; key = seed, counter tag "mval").  Same CSV + same seed → same split.
 * Decisions: the carving happens whenever val is empty after loading (skipped slides gone) and
 * val_fraction > 0 -- also under a preset with an official val (bracs) when the CSV lists none
 * of its val slides; val_fraction must be in [0, 1] (MEXD_ERROR_INVALID_ARGUMENT otherwise);
 * round() is half away from zero (n_c = 5 at 0.5 gives 3).  Class c's training slides in CSV
 * order are permuted as in mexd_shuffle_permutation() with the epoch word replaced by c and
 * the tag "mval" = 0x6d76616c, i.e. counter (i, c, attempt, 0x6d76616c); the first k_c of the
 * permuted list go to val.  val_carved is TRUE when at least one slide was moved.
 *
 * Bag order.  mexd_shuffle_permutation() gives epoch e's permutation of n items from (seed, e)
 * alone: a Fisher–Yates shuffle whose draw for position i is Philox4x32-10 (lib/nn/philox.h) of
 * counter (i, e, attempt, "shuf") under key (seed low, seed high), reduced to [0, i] without
 * bias (Lemire's multiply-and-reject).  A run resumed at epoch e gets the order it would have
 * had, with no generator state to save.
 * Exactly: perm = identity; for i = n-1 down to 1: j = draw(i), swap perm[i] and perm[j].
 * draw(i) takes word 0 of the output at counter (i, e, attempt, 0x73687566 = "shuf") for
 * attempt = 0, 1, ...: m = x·(i+1) in 64 bits, rejected while (m mod 2^32) < 2^32 mod (i+1);
 * then j = m >> 32.
 *
 * Presets (the paper's cohorts, MEXD.md §2; docs in presets.c):
 *   camelyon16: classes (normal, tumor), E = 2, α = (0.25, 0.5), expert_of_class {0, 1};
 *     official split by name: train = normal_001..160 without normal_086 + tumor_001..111
 *     (270), test = test_001..130 without test_049 (129), as the CAMELYON16 release's readme
 *     says; val carved from train.
 *   tcga-nsclc: classes (LUAD, LUSC), E = 3, α = (0.25, 0.5, 0.25), expert_of_class {1, 2}; no
 *     official split: the CSV's split column.
 *   bracs: classes (benign, atypical, malignant) = BRACS's groups BT, AT, MT, E = 4,
 *     α = (0.5, 0.5, 0.5, 0.25), expert_of_class {1, 2, 3}; official split of the BRACS release
 *     (395 train / 65 val / 87 test WSIs) by slide name.
 * With an official split, a CSV split column must agree with it, except that a CSV "val" is
 * accepted for an official train slide when the preset has no official val (camelyon16). */
#pragma once

#include "io/features.h"

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_SPLIT_TRAIN,
  MEXD_SPLIT_VAL,
  MEXD_SPLIT_TEST,
} MexdSplit;
#define MEXD_N_SPLITS 3

/* "train", "val", "test" ("invalid" outside the enum). */
const char *mexd_split_name(MexdSplit split);

/* ---- presets ---- */

#define MEXD_PRESET_MAX_CLASSES 4
#define MEXD_PRESET_MAX_EXPERTS 4

typedef struct {
  const char *name;
  int n_classes;
  const char *classes[MEXD_PRESET_MAX_CLASSES + 1]; /* NULL-terminated */
  int experts;                                      /* E */
  double alpha[MEXD_PRESET_MAX_EXPERTS];
  int expert_of_class[MEXD_PRESET_MAX_CLASSES];
  gboolean official_split; /* the split comes from the slide's name, not from the CSV */
  gboolean official_val;   /* the official split has a val part */
} MexdPreset;

/* The preset called `name` ("camelyon16", "tcga-nsclc", "bracs"; ASCII case ignored), or NULL
 * with MEXD_ERROR_NOT_FOUND listing the known names. */
const MexdPreset *mexd_preset_lookup(const char *name, GError **error);
/* The known presets' names, NULL-terminated (static). */
const char *const *mexd_preset_names(void);
/* The class index of `label` under the preset (a class name or an alias, ASCII case ignored),
 * or -1. */
int mexd_preset_class_of_label(const MexdPreset *preset, const char *label);
/* The official split of `slide_id` and the class its name or the release gives it (-1 when the
 * name does not tell, e.g. Camelyon16's test slides).  FALSE with MEXD_ERROR_NOT_FOUND saying
 * why when the slide is not in the official split, MEXD_ERROR_INVALID_ARGUMENT when the preset
 * has none. */
gboolean mexd_preset_official_split(const MexdPreset *preset, const char *slide_id,
                                    MexdSplit *split, int *klass, GError **error);

/* ---- the data set ---- */

/* Called for each skipped slide (skip_bad): `slide` is its id, `message` the error's. */
typedef void (*MexdDatasetWarnFunc)(const char *slide, const char *message, gpointer user_data);

typedef struct {
  const char *preset;             /* NULL or a preset's name */
  const char *const *class_names; /* NULL-terminated, or NULL; not with a preset */
  double val_fraction;            /* of train carved into val when there is no val; 0: none */
  uint64_t seed;                  /* of the val carving and of the epoch order */
  gboolean skip_bad;              /* skip bad slides with a warning instead of failing */
  int64_t expected_dim;           /* D every bag must have; 0: any (all equal) */
  size_t max_bytes;               /* budget for the features in memory; 0: none */
  /* The files the caller will write (NULL-terminated, or NULL).  An output that is the same
   * file (device and inode: links count) as the labels CSV or as a feature file the load would
   * read, or that is an existing directory, is refused -- MEXD_ERROR_INVALID_ARGUMENT naming
   * both, also with skip_bad -- before any feature file is read. */
  const char *const *outputs;
  MexdDatasetWarnFunc warn;       /* NULL: g_warning */
  gpointer warn_data;
} MexdDatasetOptions;

/* Defaults: no preset, no class list, val_fraction 0.2, seed 0, no skip_bad, any D, no budget,
 * no outputs, g_warning. */
void mexd_dataset_options_init(MexdDatasetOptions *options);

typedef struct {
  char *slide_id;
  char *path;     /* its feature file */
  int line;       /* 1-based line of the labels CSV */
  int label;      /* class index */
  MexdSplit split;
  MexdBag *bag;   /* n x d float32 features; coords NULL */
} MexdDatasetSlide; /* not "MexdSlide": wsi/slide.h has that name (an OpenSlide slide) */

/* Read-only after loading; everything is owned by the struct, freed by mexd_dataset_free(). */
typedef struct {
  const MexdPreset *preset; /* or NULL */
  int n_classes;
  char **classes;           /* NULL-terminated */
  int64_t d;                /* feature size of every bag */
  int n_slides;
  MexdDatasetSlide *slides; /* in CSV order */
  int n_split[MEXD_N_SPLITS];
  int *split_slides[MEXD_N_SPLITS]; /* slide indices of each split, ascending (CSV order) */
  gboolean val_carved;      /* val was carved from train */
  uint64_t seed;
  int n_unused_files;       /* feature files of the directory that name no CSV slide */
  int n_skipped;            /* slides skipped (skip_bad) */
  int64_t total_instances;
  size_t total_bytes;       /* features in memory: total_instances * d * 4 */
} MexdDataset;

/* Loads the data set (see the top of this file).  NULL with the error set on failure.  options
 * NULL: the defaults.  MEXD_ERROR_INVALID_ARGUMENT for a NULL path or a bad option (a preset
 * and class_names both, an empty or repeated class name, val_fraction outside [0, 1],
 * expected_dim < 0; an output that is an input, see options.outputs); MEXD_ERROR_NOT_FOUND for
 * an unknown preset; MEXD_ERROR_IO when the feature directory is not one or the CSV cannot be
 * read (missing, not a regular file, over 1 GiB). */
MexdDataset *mexd_dataset_load(const char *feature_dir, const char *labels_csv,
                               const MexdDatasetOptions *options, GError **error);
void mexd_dataset_free(MexdDataset *ds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdDataset, mexd_dataset_free)

/* The number of slides of class `klass` in `split` (klass -1: of every class; 0 for a split or
 * class out of range, or a NULL ds). */
int mexd_dataset_count(const MexdDataset *ds, MexdSplit split, int klass);

/* One paragraph for a log: slides per split and class, D, instances, memory, files ignored and
 * slides skipped.  g_free it. */
char *mexd_dataset_summary(const MexdDataset *ds);

/* Writes a permutation of 0..n-1 to perm[n]: epoch `epoch`'s order under `seed` (above). */
void mexd_shuffle_permutation(uint64_t seed, uint32_t epoch, uint32_t n, uint32_t *perm);

/* The training slides (indices into ds->slides) in epoch `epoch`'s order: the permutation of
 * ds->split_slides[MEXD_SPLIT_TRAIN] by mexd_shuffle_permutation(ds->seed, epoch, ...).
 * ds->n_split[MEXD_SPLIT_TRAIN] entries; g_free it. */
int *mexd_dataset_epoch_order(const MexdDataset *ds, uint32_t epoch);

G_END_DECLS
