/* dataset.c: the training data set (dataset.h): the labels CSV, the feature files, the classes,
 * the train / val / test split and the epoch order.
 *
 * Decisions where dataset.h left a choice (each is also written in dataset.h):
 *
 * - Order of the checks.  Loading runs in passes: (1) the CSV as a whole (syntax, header,
 *   columns, the class list); (2) each row in CSV order: its slide id, duplicates, its label,
 *   its split, the preset's official split, then the presence of its feature file (a stat, no
 *   reading); (3) each remaining row in CSV order: read the bag, check it is not empty, its
 *   values finite, its D, the memory budget.  Without skip_bad the first failure of the first
 *   pass that has one is the error, so a wrong label is reported before any feature is read.
 * - A feature file is read in the format its extension names (S.h5 as HDF5, S.csv as CSV, S.npy
 *   as NumPy), not detected: an S.h5 that is not HDF5 is a mistake the message should name.
 * - Messages: "<labels.csv> line L: slide 'S' (<file>): <what>"; when the reader failed, its
 *   message (which starts with the file's name) follows "slide 'S': ".
 * - The CSV is read by lib/io/csv.h (the one RFC 4180 reader; MEXD_CSV_TRIM): a quoted cell may
 *   hold commas and line breaks; text between a closing quote and the next comma is an error of
 *   the CSV, in csv.h's words.  A row whose cells are all empty (",,,", as
 *   spreadsheets export) counts as a blank line.  "A row with too few cells" is one that lacks a
 *   column this file uses (slide_id, label, split); shorter rows are fine otherwise.  A column
 *   named twice (e.g. two "label" headers) is an error of the CSV.
 * - Classes from the CSV are the distinct non-empty labels of every data row (rows skipped later
 *   for other reasons included), so that the class list does not depend on which feature files
 *   are present.  Two labels that differ only in case, or two numeric labels of the same number
 *   ("1" and "01"), are an error of the CSV as a whole: they would be distinct classes that
 *   surely are one.
 * - Duplicates compare the resolved class and split (so "tumor" and "Tumor" under a class list,
 *   or "val" and "validation", are the same); unresolvable cells compare as text, ignoring ASCII
 *   case.  A duplicate is an error without skip_bad even when its rows agree.
 * - n_skipped counts skipped CSV rows: n_slides + n_skipped is the number of data rows.  Every
 *   skipped row gets its own warning.
 * - max_bytes: the size of a bag is known only once it is read, so the check comes right after
 *   reading it: the bag that would pass the budget is freed at once, nothing further is read,
 *   and the load fails.  The budget counts the bags held at that moment (with skip_bad and no
 *   expected_dim, bags later skipped for their D included).  Always an error, as NO_MEMORY.
 * - skip_bad and D: the most common D among the bags read; a tie goes to the D of the earliest
 *   slide (in CSV order) among the tied ones.
 * - The val carving happens whenever, after loading, no slide is in val and val_fraction > 0 --
 *   also under a preset with an official val (bracs) whose slides the CSV does not list.  Class c's
 *   training slides, in CSV order, are permuted by the Fisher-Yates below with counter
 *   (i, c, attempt, "mval"); the first k_c of the permuted list go to val.
 * - The shuffle: perm = identity; for i = n-1 down to 1: j = draw(i) in [0, i], swap perm[i] and
 *   perm[j].  draw(i) takes word 0 of Philox4x32-10 at counter (i, e, attempt, 0x73687566 "shuf")
 *   for attempt = 0, 1, ...: m = x * (i+1) in 64 bits, rejected while (m mod 2^32) <
 *   2^32 mod (i+1), then j = m >> 32 (Lemire 2019).
 * - "No training slide remains" is MEXD_ERROR_FORMAT.
 * - Files counted in n_unused_files: the directory's and h5_files/' entries that are not
 *   directories, end in ".h5", ".csv" or ".npy", and are not a lookup candidate (S.h5, S.csv,
 *   S.npy, h5_files/S.h5) of any CSV row's slide id; the labels CSV (same device and inode) is
 *   never counted. */
#include "train/dataset.h"

#include "core/error.h"
#include "core/log.h"
#include "io/csv.h"
#include "io/files.h"
#include "nn/philox.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TAG_SHUF 0x73687566u /* "shuf" */
#define TAG_MVAL 0x6d76616cu /* "mval" */

/* ---- small helpers ---- */

const char *mexd_split_name(MexdSplit split)
{
  switch (split) {
  case MEXD_SPLIT_TRAIN: return "train";
  case MEXD_SPLIT_VAL: return "val";
  case MEXD_SPLIT_TEST: return "test";
  }
  return "invalid";
}

void mexd_dataset_options_init(MexdDatasetOptions *options)
{
  if (!options)
    return;
  memset(options, 0, sizeof *options);
  options->preset = NULL;
  options->class_names = NULL;
  options->val_fraction = 0.2;
  options->seed = 0;
  options->skip_bad = FALSE;
  options->expected_dim = 0;
  options->max_bytes = 0;
  options->outputs = NULL;
  options->warn = NULL;
  options->warn_data = NULL;
}

/* A slide id or label for a message: valid UTF-8 (g_free it). */
static char *shown(const char *s)
{
  return g_utf8_make_valid(s ? s : "", -1);
}

/* ---- the shuffle ---- */

/* A uniform integer in [0, bound), bound >= 1, for position i: Lemire's multiply-and-reject on
 * word 0 of counter (i, word1, attempt, tag). */
static uint32_t draw_below(const uint32_t key[2], uint32_t i, uint32_t word1, uint32_t tag,
                           uint32_t bound)
{
  const uint32_t threshold = (uint32_t)(0u - bound) % bound; /* 2^32 mod bound */
  for (uint32_t attempt = 0;; attempt++) {
    const uint32_t counter[4] = {i, word1, attempt, tag};
    uint32_t out[4];
    mexd_philox4x32_10(counter, key, out);
    uint64_t m = (uint64_t)out[0] * bound;
    if ((uint32_t)m >= threshold)
      return (uint32_t)(m >> 32);
  }
}

/* Fisher-Yates from the top: see the top of this file. */
static void permute(uint64_t seed, uint32_t word1, uint32_t tag, uint32_t n, uint32_t *perm)
{
  const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  for (uint32_t i = 0; i < n; i++)
    perm[i] = i;
  for (uint32_t i = n; i-- > 1;) {
    uint32_t j = draw_below(key, i, word1, tag, i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

void mexd_shuffle_permutation(uint64_t seed, uint32_t epoch, uint32_t n, uint32_t *perm)
{
  if (!perm || n == 0)
    return;
  permute(seed, epoch, TAG_SHUF, n, perm);
}

/* ---- the labels CSV ---- */

/* A record of the CSV (lib/io/csv.h): its cells point into the MexdCsv, which outlives it. */
typedef struct {
  int line;         /* 1-based line of the row's start */
  GPtrArray *cells; /* const char *, owned by the MexdCsv */
} CsvRow;

static void csv_row_free(gpointer p)
{
  CsvRow *r = p;
  g_ptr_array_unref(r->cells);
  g_free(r);
}

/* The records of `csv` as rows, those whose cells are all empty (",,,") dropped as blank. */
static GPtrArray *csv_rows(const MexdCsv *csv)
{
  GPtrArray *rows = g_ptr_array_new_with_free_func(csv_row_free);
  for (guint i = 0; i < mexd_csv_n_rows(csv); i++) {
    const char *const *cells = mexd_csv_row(csv, i);
    gboolean all_empty = TRUE;
    for (int k = 0; cells[k]; k++)
      all_empty = all_empty && !*cells[k];
    if (all_empty)
      continue;
    CsvRow *row = g_new0(CsvRow, 1);
    row->line = (int)mexd_csv_row_line(csv, i);
    row->cells = g_ptr_array_new();
    for (int k = 0; cells[k]; k++)
      g_ptr_array_add(row->cells, (gpointer)cells[k]);
    g_ptr_array_add(rows, row);
  }
  return rows;
}

/* The labels CSV (at most MAX_CSV_BYTES, a regular file: a FIFO is refused before any open). */
#define MAX_CSV_BYTES ((gsize)1 << 30)

static MexdCsv *read_labels(const char *path, const char *display, GError **error)
{
  GError *e = NULL;
  gsize len = 0;
  g_autofree char *text = mexd_file_read_small(path, "labels CSV", MAX_CSV_BYTES, &len, &e);
  if (!text) {
    int code = e->code == MEXD_ERROR_NO_MEMORY ? MEXD_ERROR_NO_MEMORY : MEXD_ERROR_IO;
    mexd_fail(error, code, "the labels CSV %s cannot be read: %s", display, e->message);
    g_error_free(e);
    return NULL;
  }
  return mexd_csv_parse(text, (gssize)len, display, MEXD_CSV_TRIM, error);
}

/* ---- loading ---- */

typedef struct {
  int line;
  const char *id, *label, *split_cell; /* into the CSV's cells; split_cell NULL without a column */
  int klass;                           /* resolved class, -1 when the label is none */
  int csv_split;                       /* the CSV's split resolved, -1 when it is none */
  int split;                           /* the slide's split, once checked */
  gboolean bad;                        /* skipped */
  gboolean id_ok;
  char *path; /* the feature file, g_malloc'd */
  MexdBag *bag;
} Row;

typedef struct {
  const MexdDatasetOptions *o;
  const char *csv; /* display name of the labels CSV */
  const char *dir; /* the feature directory, as given */
  int n_skipped;
  Row *rows;
  int n_rows;
  const MexdPreset *preset;
  char **classes;
  int n_classes;
} Load;

/* A bad slide: with skip_bad (and a code other than NO_MEMORY) warns, marks the row skipped and
 * returns TRUE; otherwise sets the error and returns FALSE.  `file` (or NULL) is named after the
 * slide; `reader` (or NULL) is an error of the bag reader, whose message and code are used. */
static gboolean row_bad(Load *L, Row *row, const char *file, const GError *reader, int code,
                        GError **error, const char *format, ...) G_GNUC_PRINTF(7, 8);

static gboolean row_bad(Load *L, Row *row, const char *file, const GError *reader, int code,
                        GError **error, const char *format, ...)
{
  g_autofree char *what = NULL;
  if (reader) {
    what = g_strdup(reader->message);
    code = reader->code;
  } else {
    va_list ap;
    va_start(ap, format);
    what = g_strdup_vprintf(format, ap);
    va_end(ap);
  }
  g_autofree char *sid = shown(row->id);
  g_autofree char *sfile = file && !reader ? g_filename_display_name(file) : NULL;
  g_autofree char *message =
      sfile
          ? g_strdup_printf("%s line %d: slide '%s' (%s): %s", L->csv, row->line, sid, sfile, what)
          : g_strdup_printf("%s line %d: slide '%s': %s", L->csv, row->line, sid, what);
  if (!L->o->skip_bad || code == MEXD_ERROR_NO_MEMORY)
    return mexd_fail(error, code, "%s", message);
  if (L->o->warn)
    L->o->warn(row->id, message, L->o->warn_data);
  else
    mexd_warning("%s (skipped)", message);
  row->bad = TRUE;
  L->n_skipped++;
  mexd_bag_free(row->bag);
  row->bag = NULL;
  return TRUE;
}

/* Refuses (always: also with skip_bad) an output of options.outputs that is the same file as
 * `input` (links followed), naming both. */
static gboolean check_outputs(const Load *L, const char *input, GError **error)
{
  const char *const inputs[] = {input, NULL};
  for (int k = 0; L->o->outputs && L->o->outputs[k]; k++)
    if (!mexd_file_check_output(L->o->outputs[k], inputs, error))
      return FALSE;
  return TRUE;
}

static gboolean check_outputs_csv(const Load *L, const char *labels_csv, GError **error)
{
  if (check_outputs(L, labels_csv, error))
    return TRUE;
  g_prefix_error(error, "the labels CSV: ");
  return FALSE;
}

/* "train", "training" ... → the split, or -1. */
static int parse_split(const char *s)
{
  static const struct {
    const char *name;
    MexdSplit split;
  } names[] = {
      {"train", MEXD_SPLIT_TRAIN},  {"training", MEXD_SPLIT_TRAIN}, {"val", MEXD_SPLIT_VAL},
      {"valid", MEXD_SPLIT_VAL},    {"validation", MEXD_SPLIT_VAL}, {"test", MEXD_SPLIT_TEST},
      {"testing", MEXD_SPLIT_TEST},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
    if (g_ascii_strcasecmp(s, names[i].name) == 0)
      return names[i].split;
  return -1;
}

static gboolean is_decimal(const char *s)
{
  if (!*s)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isdigit(*s))
      return FALSE;
  return TRUE;
}

/* Compares two non-negative decimal integers by value (any length). */
static int cmp_decimal_value(const char *a, const char *b)
{
  while (*a == '0' && a[1])
    a++;
  while (*b == '0' && b[1])
    b++;
  size_t la = strlen(a), lb = strlen(b);
  if (la != lb)
    return la < lb ? -1 : 1;
  return strcmp(a, b);
}

static int cmp_numeric(const void *x, const void *y)
{
  const char *a = *(const char *const *)x, *b = *(const char *const *)y;
  int c = cmp_decimal_value(a, b);
  return c ? c : strcmp(a, b);
}

static int cmp_bytes(const void *x, const void *y)
{
  return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The class list from the CSV's labels (see the top). */
static gboolean classes_from_csv(Load *L, GError **error)
{
  g_autoptr(GHashTable) first_line = g_hash_table_new(g_str_hash, g_str_equal); /* label → line */
  g_autoptr(GHashTable) folded = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GPtrArray) labels = g_ptr_array_new();
  gboolean numeric = TRUE;
  for (int r = 0; r < L->n_rows; r++) {
    const char *lab = L->rows[r].label;
    if (!*lab || g_hash_table_contains(first_line, lab))
      continue;
    g_hash_table_insert(first_line, (gpointer)lab, GINT_TO_POINTER(L->rows[r].line));
    g_ptr_array_add(labels, (gpointer)lab);
    numeric = numeric && is_decimal(lab);
  }
  /* labels that surely name one class: the same but for case, or the same number */
  for (guint i = 0; i < labels->len; i++) {
    const char *lab = g_ptr_array_index(labels, i);
    char *key = g_ascii_strdown(lab, -1);
    if (is_decimal(lab)) {
      const char *z = lab;
      while (*z == '0' && z[1])
        z++;
      g_free(key);
      key = g_strconcat("#", z, NULL);
    }
    const char *other = g_hash_table_lookup(folded, key);
    if (other) {
      g_autofree char *a = shown(other), *b = shown(lab);
      int la = GPOINTER_TO_INT(g_hash_table_lookup(first_line, other));
      int lb = GPOINTER_TO_INT(g_hash_table_lookup(first_line, lab));
      g_free(key);
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: the labels '%s' (line %d) and '%s' (line %d) differ only in %s: "
                       "write one class one way (or give the class names)",
                       L->csv, a, la, b, lb, is_decimal(lab) ? "leading zeros" : "case");
    }
    g_hash_table_insert(folded, key, (gpointer)lab);
  }
  g_ptr_array_sort(labels, numeric ? cmp_numeric : cmp_bytes);
  L->n_classes = (int)labels->len;
  L->classes = g_new0(char *, labels->len + 1);
  for (guint i = 0; i < labels->len; i++)
    L->classes[i] = g_strdup(g_ptr_array_index(labels, i));
  return TRUE;
}

/* The class of a label, or -1. */
static int class_of(const Load *L, const char *label)
{
  if (!*label)
    return -1;
  if (L->preset)
    return mexd_preset_class_of_label(L->preset, label);
  for (int c = 0; c < L->n_classes; c++)
    if (L->o->class_names ? g_ascii_strcasecmp(label, L->classes[c]) == 0
                          : strcmp(label, L->classes[c]) == 0)
      return c;
  return -1;
}

static gboolean valid_id(const char *id, const char **why)
{
  if (!*id)
    *why = "the slide id is empty";
  else if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
    *why = "the slide id is '.' or '..', not a file name";
  else if (strchr(id, '/') || strchr(id, '\\'))
    *why = "the slide id contains a '/' or '\\' (it must be a file name, without directories)";
  else
    return TRUE;
  return FALSE;
}

/* Whether two rows of one slide agree on label and split. */
static gboolean rows_agree(const Row *a, const Row *b)
{
  if (a->klass >= 0 || b->klass >= 0) {
    if (a->klass != b->klass)
      return FALSE;
  } else if (g_ascii_strcasecmp(a->label, b->label) != 0) {
    return FALSE;
  }
  if (!a->split_cell)
    return TRUE;
  if (a->csv_split >= 0 || b->csv_split >= 0)
    return a->csv_split == b->csv_split;
  return g_ascii_strcasecmp(a->split_cell, b->split_cell) == 0;
}

static char *class_list(const Load *L)
{
  return g_strjoinv(", ", L->classes);
}

/* Pass 2 on one row: its cells, duplicates, the official split and the file lookup.  FALSE on a
 * fatal error. */
static gboolean check_row(Load *L, Row *row, GHashTable *groups, GError **error)
{
  const char *why = NULL;
  if (!valid_id(row->id, &why))
    return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error, "%s", why);

  GArray *group = g_hash_table_lookup(groups, row->id);
  if (group && group->len > 1) {
    const Row *first = &L->rows[g_array_index(group, int, 0)];
    gboolean agree = TRUE;
    for (guint k = 1; k < group->len; k++)
      agree = agree && rows_agree(first, &L->rows[g_array_index(group, int, k)]);
    GString *lines = g_string_new(NULL);
    for (guint k = 0; k < group->len; k++)
      g_string_append_printf(lines, "%s%d", k ? ", " : "",
                             L->rows[g_array_index(group, int, k)].line);
    g_autofree char *lines_s = g_string_free(lines, FALSE);
    if (!agree)
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                     "is listed %u times (lines %s) with different labels or splits", group->len,
                     lines_s);
    if (row != first)
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                     "is listed %u times (lines %s); this row repeats line %d", group->len, lines_s,
                     first->line);
    if (!L->o->skip_bad)
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error, "is listed %u times (lines %s)",
                     group->len, lines_s);
  }

  if (row->klass < 0) {
    g_autofree char *lab = shown(row->label), *known = class_list(L);
    if (!*row->label)
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error, "the label is empty");
    return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                   "the label '%s' is no class%s%s (classes: %s)", lab,
                   L->preset ? " of the preset " : "", L->preset ? L->preset->name : "", known);
  }
  if (row->split_cell && row->csv_split < 0) {
    g_autofree char *sp = shown(row->split_cell);
    if (!*row->split_cell)
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error, "the split is empty");
    return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                   "the split '%s' is none of train, val, test (training, valid, validation, "
                   "testing)",
                   sp);
  }
  MexdSplit split = row->split_cell ? (MexdSplit)row->csv_split : MEXD_SPLIT_TRAIN;

  if (L->preset && L->preset->official_split) {
    MexdSplit official;
    int official_class;
    GError *why_not = NULL;
    if (!mexd_preset_official_split(L->preset, row->id, &official, &official_class, &why_not)) {
      gboolean ok = row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                            "is not in the official split of the %s preset: %s", L->preset->name,
                            why_not->message);
      g_error_free(why_not);
      return ok;
    }
    if (official_class >= 0 && official_class != row->klass) {
      g_autofree char *lab = shown(row->label);
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                     "the label '%s' (class %s) contradicts the %s preset's official class %s", lab,
                     L->classes[row->klass], L->preset->name, L->classes[official_class]);
    }
    if (row->split_cell && split != official &&
        !(split == MEXD_SPLIT_VAL && official == MEXD_SPLIT_TRAIN && !L->preset->official_val)) {
      g_autofree char *sp = shown(row->split_cell);
      return row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                     "the split '%s' contradicts the %s preset's official split (%s)", sp,
                     L->preset->name, mexd_split_name(official));
    }
    if (!row->split_cell || split != MEXD_SPLIT_VAL)
      split = official;
  }
  row->split = (int)split;

  /* the feature file */
  g_autofree char *h5 = g_strconcat(row->id, ".h5", NULL);
  g_autofree char *csvn = g_strconcat(row->id, ".csv", NULL);
  g_autofree char *npy = g_strconcat(row->id, ".npy", NULL);
  char *cand[4] = {
      g_build_filename(L->dir, h5, NULL),
      g_build_filename(L->dir, csvn, NULL),
      g_build_filename(L->dir, npy, NULL),
      g_build_filename(L->dir, "h5_files", h5, NULL),
  };
  int found[4], n_found = 0;
  for (int k = 0; k < 4; k++) {
    GStatBuf st;
    if (g_lstat(cand[k], &st) == 0)
      found[n_found++] = k;
  }
  gboolean ok = TRUE;
  if (n_found == 1) {
    row->path = cand[found[0]];
    cand[found[0]] = NULL;
    /* an output of this run must not be a file this load reads: refused before any is read */
    if (!check_outputs(L, row->path, error)) {
      g_autofree char *sid = shown(row->id);
      g_prefix_error(error, "%s line %d: slide '%s': ", L->csv, row->line, sid);
      ok = FALSE;
    }
  } else if (n_found == 0) {
    g_autofree char *a = g_filename_display_name(cand[0]), *b = g_filename_display_name(cand[1]),
                    *c = g_filename_display_name(cand[2]), *d = g_filename_display_name(cand[3]);
    ok = row_bad(L, row, NULL, NULL, MEXD_ERROR_NOT_FOUND, error,
                 "has no feature file: none of %s, %s, %s, %s exists", a, b, c, d);
  } else {
    GString *list = g_string_new(NULL);
    for (int k = 0; k < n_found; k++) {
      g_autofree char *f = g_filename_display_name(cand[found[k]]);
      g_string_append_printf(list, "%s%s", k == 0 ? "" : k == n_found - 1 ? " and " : ", ", f);
    }
    g_autofree char *list_s = g_string_free(list, FALSE);
    ok = row_bad(L, row, NULL, NULL, MEXD_ERROR_FORMAT, error,
                 "has %d feature files: %s (keep one)", n_found, list_s);
  }
  for (int k = 0; k < 4; k++)
    g_free(cand[k]);
  return ok;
}

static MexdBagFormat format_of_path(const char *path)
{
  if (g_str_has_suffix(path, ".h5"))
    return MEXD_BAG_H5;
  if (g_str_has_suffix(path, ".csv"))
    return MEXD_BAG_CSV;
  return MEXD_BAG_NPY;
}

/* Pass 3 on one row: reads and checks its bag.  *d_ref / *d_row: the D of the first slide read
 * (without skip_bad) and its row.  FALSE on a fatal error. */
static gboolean read_row(Load *L, Row *row, int64_t *d_ref, const Row **d_row, size_t *held,
                         GError **error)
{
  GError *rerr = NULL;
  row->bag = mexd_bag_read(row->path, format_of_path(row->path), &rerr);
  if (!row->bag) {
    gboolean ok = row_bad(L, row, row->path, rerr, 0, error, "%s", "");
    g_error_free(rerr);
    return ok;
  }
  g_free(row->bag->coords);
  row->bag->coords = NULL;
  MexdBag *bag = row->bag;
  if (bag->n < 1 || bag->d < 1 || !bag->features)
    return row_bad(L, row, row->path, NULL, MEXD_ERROR_FORMAT, error,
                   "the bag is empty (%" G_GINT64_FORMAT " instances)", bag->n);
  GError *ferr = NULL;
  if (!mexd_bag_check_finite(bag, &ferr)) {
    gboolean ok = row_bad(L, row, row->path, NULL, MEXD_ERROR_INVALID_ARGUMENT, error,
                          "the features are not all finite: %s", ferr->message);
    g_error_free(ferr);
    return ok;
  }
  if (L->o->expected_dim > 0 && bag->d != L->o->expected_dim)
    return row_bad(L, row, row->path, NULL, MEXD_ERROR_SHAPE, error,
                   "has D = %" G_GINT64_FORMAT " features per instance, expected %" G_GINT64_FORMAT,
                   bag->d, L->o->expected_dim);
  if (!L->o->skip_bad && L->o->expected_dim <= 0) {
    if (*d_ref < 0) {
      *d_ref = bag->d;
      *d_row = row;
    } else if (bag->d != *d_ref) {
      g_autofree char *other = shown((*d_row)->id);
      return row_bad(L, row, row->path, NULL, MEXD_ERROR_SHAPE, error,
                     "has D = %" G_GINT64_FORMAT " features per instance, but slide '%s' (line "
                     "%d) has %" G_GINT64_FORMAT,
                     bag->d, other, (*d_row)->line, *d_ref);
    }
  }
  /* the reader allocated n*d floats, so this cannot overflow */
  size_t bytes = (size_t)bag->n * (size_t)bag->d * sizeof(float);
  if (L->o->max_bytes && (bytes > L->o->max_bytes || *held > L->o->max_bytes - bytes)) {
    g_autofree char *b = g_format_size(bytes), *h = g_format_size(*held),
                    *m = g_format_size(L->o->max_bytes);
    return row_bad(L, row, row->path, NULL, MEXD_ERROR_NO_MEMORY, error,
                   "its %s of features would bring the cohort's %s over the budget "
                   "(max_bytes %zu, %s)",
                   b, h, L->o->max_bytes, m);
  }
  *held += bytes;
  return TRUE;
}

/* skip_bad without expected_dim: keeps the most common D. */
static gboolean keep_common_d(Load *L, size_t *held, GError **error)
{
  g_autoptr(GHashTable) count = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
  int64_t best = -1;
  int best_n = 0;
  for (int r = 0; r < L->n_rows; r++) {
    const Row *row = &L->rows[r];
    if (row->bad)
      continue;
    int64_t d = row->bag->d;
    int n = GPOINTER_TO_INT(g_hash_table_lookup(count, &d)) + 1;
    g_hash_table_replace(count, g_memdup2(&d, sizeof d), GINT_TO_POINTER(n));
  }
  /* the largest count; among ties the D met first in CSV order */
  for (int r = 0; r < L->n_rows; r++) {
    const Row *row = &L->rows[r];
    if (row->bad)
      continue;
    int64_t d = row->bag->d;
    int n = GPOINTER_TO_INT(g_hash_table_lookup(count, &d));
    if (n > best_n) {
      best_n = n;
      best = d;
    }
  }
  for (int r = 0; r < L->n_rows; r++) {
    Row *row = &L->rows[r];
    if (row->bad || row->bag->d == best)
      continue;
    *held -= (size_t)row->bag->n * (size_t)row->bag->d * sizeof(float);
    if (!row_bad(L, row, row->path, NULL, MEXD_ERROR_SHAPE, error,
                 "has D = %" G_GINT64_FORMAT
                 " features per instance, the cohort's D is %" G_GINT64_FORMAT
                 " (the most common, %d slides)",
                 row->bag->d, best, best_n))
      return FALSE;
  }
  return TRUE;
}

/* Files of the feature directory (and h5_files/) that no CSV row looks up. */
static int count_unused(const Load *L, const char *labels_csv)
{
  g_autoptr(GHashTable) ids = g_hash_table_new(g_str_hash, g_str_equal);
  for (int r = 0; r < L->n_rows; r++)
    if (L->rows[r].id_ok)
      g_hash_table_add(ids, (gpointer)L->rows[r].id);
  GStatBuf csv_st;
  gboolean have_csv = g_stat(labels_csv, &csv_st) == 0;
  int unused = 0;
  for (int sub = 0; sub < 2; sub++) {
    g_autofree char *dirpath = sub ? g_build_filename(L->dir, "h5_files", NULL) : g_strdup(L->dir);
    g_autoptr(GDir) dir = g_dir_open(dirpath, 0, NULL);
    if (!dir)
      continue;
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
      const char *ext = NULL;
      static const char *const exts[] = {".h5", ".csv", ".npy"};
      for (size_t k = 0; k < G_N_ELEMENTS(exts); k++)
        if (g_str_has_suffix(name, exts[k]))
          ext = exts[k];
      if (!ext)
        continue;
      g_autofree char *path = g_build_filename(dirpath, name, NULL);
      GStatBuf st;
      if (g_stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        continue;
      if (have_csv && g_stat(path, &st) == 0 && st.st_dev == csv_st.st_dev &&
          st.st_ino == csv_st.st_ino)
        continue;
      g_autofree char *stem = g_strndup(name, strlen(name) - strlen(ext));
      gboolean candidate = (!sub || strcmp(ext, ".h5") == 0) && g_hash_table_contains(ids, stem);
      if (!candidate)
        unused++;
    }
  }
  return unused;
}

/* The val carving (see the top). */
static gboolean carve_val(MexdDataset *ds, double fraction)
{
  gboolean carved = FALSE;
  int *members = g_new(int, ds->n_slides);
  uint32_t *perm = g_new(uint32_t, ds->n_slides);
  for (int c = 0; c < ds->n_classes; c++) {
    int n_c = 0;
    for (int i = 0; i < ds->n_slides; i++)
      if (ds->slides[i].split == MEXD_SPLIT_TRAIN && ds->slides[i].label == c)
        members[n_c++] = i;
    if (n_c < 2)
      continue;
    double want = round(fraction * n_c);
    int k = want >= n_c ? n_c : (int)want;
    k = MAX(k, 1);
    k = MIN(k, n_c - 1);
    permute(ds->seed, (uint32_t)c, TAG_MVAL, (uint32_t)n_c, perm);
    for (int t = 0; t < k; t++)
      ds->slides[members[perm[t]]].split = MEXD_SPLIT_VAL;
    carved = TRUE;
  }
  g_free(members);
  g_free(perm);
  return carved;
}

static void load_clear(Load *L)
{
  for (int r = 0; r < L->n_rows; r++) {
    g_free(L->rows[r].path);
    mexd_bag_free(L->rows[r].bag);
  }
  g_free(L->rows);
  g_strfreev(L->classes);
}

static gboolean check_options(const MexdDatasetOptions *o, GError **error)
{
  if (!(o->val_fraction >= 0.0 && o->val_fraction <= 1.0))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "the data set's val_fraction %g is not in [0, 1]", o->val_fraction);
  if (o->expected_dim < 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "the data set's expected_dim %" G_GINT64_FORMAT " is negative",
                     o->expected_dim);
  if (o->preset && o->class_names)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "give the data set either a preset or class names, not both");
  if (o->class_names) {
    if (!o->class_names[0])
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the list of class names is empty");
    for (int i = 0; o->class_names[i]; i++) {
      if (!*o->class_names[i])
        return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "class name %d is empty", i);
      for (int j = 0; j < i; j++)
        if (g_ascii_strcasecmp(o->class_names[i], o->class_names[j]) == 0)
          return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                           "the class names '%s' and '%s' are the same (ASCII case ignored)",
                           o->class_names[j], o->class_names[i]);
    }
  }
  return TRUE;
}

MexdDataset *mexd_dataset_load(const char *feature_dir, const char *labels_csv,
                               const MexdDatasetOptions *options, GError **error)
{
  MexdDatasetOptions defaults;
  mexd_dataset_options_init(&defaults);
  const MexdDatasetOptions *o = options ? options : &defaults;
  if (!feature_dir || !labels_csv)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_dataset_load: the feature directory or the labels CSV is NULL");
  if (!check_options(o, error))
    return NULL;
  Load L = {.o = o, .dir = feature_dir};
  if (o->preset && !(L.preset = mexd_preset_lookup(o->preset, error)))
    return NULL;

  g_autofree char *csv = g_filename_display_name(labels_csv);
  g_autofree char *dir_shown = g_filename_display_name(feature_dir);
  L.csv = csv;
  if (!g_file_test(feature_dir, G_FILE_TEST_IS_DIR))
    return mexd_fail_null(error, MEXD_ERROR_IO, "the feature directory %s %s", dir_shown,
                          g_file_test(feature_dir, G_FILE_TEST_EXISTS) ? "is not a directory"
                                                                       : "does not exist");

  /* pass 1: the CSV as a whole (lib/io/csv.h: RFC 4180, spaces around unquoted cells trimmed) */
  g_autoptr(MexdCsv) table = read_labels(labels_csv, csv, error);
  if (!table)
    return NULL;
  if (!check_outputs_csv(&L, labels_csv, error))
    return NULL;
  g_autoptr(GPtrArray) rows = csv_rows(table);
  if (rows->len == 0)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: has no header line (the file is empty or blank)", csv);
  const CsvRow *header = g_ptr_array_index(rows, 0);
  static const char *const column_names[3] = {"slide_id", "label", "split"};
  int col[3] = {-1, -1, -1};
  for (guint k = 0; k < header->cells->len; k++)
    for (int c = 0; c < 3; c++)
      if (g_ascii_strcasecmp(g_ptr_array_index(header->cells, k), column_names[c]) == 0) {
        if (col[c] >= 0)
          return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                                "%s: line %d: two columns are named '%s' (columns %d and %u)", csv,
                                header->line, column_names[c], col[c] + 1, k + 1);
        col[c] = (int)k;
      }
  for (int c = 0; c < 2; c++)
    if (col[c] < 0) {
      g_autofree char *names = NULL;
      GString *s = g_string_new(NULL);
      for (guint k = 0; k < header->cells->len; k++)
        g_string_append_printf(s, "%s%s", k ? ", " : "",
                               (const char *)g_ptr_array_index(header->cells, k));
      names = g_utf8_make_valid(s->str, -1);
      g_string_free(s, TRUE);
      return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                            "%s: line %d: the header has no '%s' column (it names: %s)", csv,
                            header->line, column_names[c], names);
    }
  if (rows->len - 1 > (guint)(G_MAXINT / 2))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: has too many rows", csv);
  int needed = MAX(col[0], MAX(col[1], col[2])) + 1;
  L.n_rows = (int)rows->len - 1;
  L.rows = g_new0(Row, L.n_rows);
  for (int r = 0; r < L.n_rows; r++) {
    const CsvRow *cr = g_ptr_array_index(rows, r + 1);
    if ((int)cr->cells->len < needed) {
      int missing = (int)cr->cells->len <= col[0] ? 0 : (int)cr->cells->len <= col[1] ? 1 : 2;
      load_clear(&L);
      return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                            "%s: line %d has %u cell%s, too few for its '%s' column (column %d)",
                            csv, cr->line, cr->cells->len, cr->cells->len == 1 ? "" : "s",
                            column_names[missing], col[missing] + 1);
    }
    Row *row = &L.rows[r];
    row->line = cr->line;
    row->id = g_ptr_array_index(cr->cells, col[0]);
    row->label = g_ptr_array_index(cr->cells, col[1]);
    row->split_cell = col[2] >= 0 ? g_ptr_array_index(cr->cells, col[2]) : NULL;
    row->csv_split = row->split_cell ? parse_split(row->split_cell) : MEXD_SPLIT_TRAIN;
    const char *why;
    row->id_ok = valid_id(row->id, &why);
  }

  /* the classes */
  if (L.preset) {
    L.n_classes = L.preset->n_classes;
    L.classes = g_new0(char *, L.n_classes + 1);
    for (int c = 0; c < L.n_classes; c++)
      L.classes[c] = g_strdup(L.preset->classes[c]);
  } else if (o->class_names) {
    L.classes = g_strdupv((char **)o->class_names);
    L.n_classes = (int)g_strv_length(L.classes);
  } else if (!classes_from_csv(&L, error)) {
    load_clear(&L);
    return NULL;
  }
  for (int r = 0; r < L.n_rows; r++)
    L.rows[r].klass = class_of(&L, L.rows[r].label);

  /* pass 2: each row's cells and its file */
  g_autoptr(GHashTable) groups =
      g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)g_array_unref);
  for (int r = 0; r < L.n_rows; r++) {
    if (!L.rows[r].id_ok)
      continue;
    GArray *g = g_hash_table_lookup(groups, L.rows[r].id);
    if (!g) {
      g = g_array_new(FALSE, FALSE, sizeof(int));
      g_hash_table_insert(groups, (gpointer)L.rows[r].id, g);
    }
    g_array_append_val(g, r);
  }
  for (int r = 0; r < L.n_rows; r++)
    if (!check_row(&L, &L.rows[r], groups, error)) {
      load_clear(&L);
      return NULL;
    }

  /* pass 3: the bags */
  int64_t d_ref = -1;
  const Row *d_row = NULL;
  size_t held = 0;
  for (int r = 0; r < L.n_rows; r++)
    if (!L.rows[r].bad && !read_row(&L, &L.rows[r], &d_ref, &d_row, &held, error)) {
      load_clear(&L);
      return NULL;
    }
  if (o->skip_bad && o->expected_dim <= 0 && !keep_common_d(&L, &held, error)) {
    load_clear(&L);
    return NULL;
  }

  /* the data set */
  int n_good = 0, n_train = 0;
  for (int r = 0; r < L.n_rows; r++)
    if (!L.rows[r].bad) {
      n_good++;
      n_train += L.rows[r].split == MEXD_SPLIT_TRAIN;
    }
  if (n_train == 0) {
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: no training slide remains (%d data row%s: %d loaded, %d skipped)", csv, L.n_rows,
              L.n_rows == 1 ? "" : "s", n_good, L.n_skipped);
    load_clear(&L);
    return NULL;
  }
  MexdDataset *ds = g_new0(MexdDataset, 1);
  ds->preset = L.preset;
  ds->n_classes = L.n_classes;
  ds->classes = g_steal_pointer(&L.classes);
  ds->seed = o->seed;
  ds->n_skipped = L.n_skipped;
  ds->n_unused_files = count_unused(&L, labels_csv);
  ds->n_slides = n_good;
  ds->slides = g_new0(MexdDatasetSlide, n_good);
  ds->d = -1;
  for (int r = 0, i = 0; r < L.n_rows; r++) {
    Row *row = &L.rows[r];
    if (row->bad)
      continue;
    MexdDatasetSlide *s = &ds->slides[i++];
    s->slide_id = g_strdup(row->id);
    s->path = g_steal_pointer(&row->path);
    s->line = row->line;
    s->label = row->klass;
    s->split = (MexdSplit)row->split;
    s->bag = g_steal_pointer(&row->bag);
    ds->d = s->bag->d;
    ds->total_instances += s->bag->n;
  }
  ds->total_bytes = (size_t)ds->total_instances * (size_t)ds->d * sizeof(float);
  load_clear(&L);

  int n_val = 0;
  for (int i = 0; i < ds->n_slides; i++)
    n_val += ds->slides[i].split == MEXD_SPLIT_VAL;
  if (n_val == 0 && o->val_fraction > 0)
    ds->val_carved = carve_val(ds, o->val_fraction);

  for (int s = 0; s < MEXD_N_SPLITS; s++) {
    ds->split_slides[s] = g_new(int, MAX(ds->n_slides, 1));
    for (int i = 0; i < ds->n_slides; i++)
      if ((int)ds->slides[i].split == s)
        ds->split_slides[s][ds->n_split[s]++] = i;
  }
  return ds;
}

void mexd_dataset_free(MexdDataset *ds)
{
  if (!ds)
    return;
  for (int i = 0; i < ds->n_slides; i++) {
    g_free(ds->slides[i].slide_id);
    g_free(ds->slides[i].path);
    mexd_bag_free(ds->slides[i].bag);
  }
  g_free(ds->slides);
  g_strfreev(ds->classes);
  for (int s = 0; s < MEXD_N_SPLITS; s++)
    g_free(ds->split_slides[s]);
  g_free(ds);
}

int mexd_dataset_count(const MexdDataset *ds, MexdSplit split, int klass)
{
  if (!ds || (int)split < 0 || (int)split >= MEXD_N_SPLITS || klass >= ds->n_classes || klass < -1)
    return 0;
  int n = 0;
  for (int k = 0; k < ds->n_split[split]; k++)
    n += klass < 0 || ds->slides[ds->split_slides[split][k]].label == klass;
  return n;
}

char *mexd_dataset_summary(const MexdDataset *ds)
{
  if (!ds)
    return g_strdup("(no data set)");
  GString *s = g_string_new(NULL);
  if (ds->preset)
    g_string_append_printf(s, "%s: ", ds->preset->name);
  g_string_append_printf(s, "%d slides, %d classes, D = %" G_GINT64_FORMAT ":", ds->n_slides,
                         ds->n_classes, ds->d);
  for (int sp = 0; sp < MEXD_N_SPLITS; sp++) {
    g_string_append_printf(s, "%s %s %d", sp ? ";" : "", mexd_split_name((MexdSplit)sp),
                           ds->n_split[sp]);
    if (sp == MEXD_SPLIT_VAL && ds->val_carved)
      g_string_append(s, " carved from train");
    g_string_append(s, " (");
    for (int c = 0; c < ds->n_classes; c++) {
      g_autofree char *name = shown(ds->classes[c]);
      g_string_append_printf(s, "%s%s %d", c ? ", " : "", name,
                             mexd_dataset_count(ds, (MexdSplit)sp, c));
    }
    g_string_append(s, ")");
  }
  g_autofree char *bytes = g_format_size(ds->total_bytes);
  g_string_append_printf(s, "; %" G_GINT64_FORMAT " instances, %s of features in memory",
                         ds->total_instances, bytes);
  g_string_append_printf(s, "; %d feature file%s not in the CSV; %d row%s skipped.",
                         ds->n_unused_files, ds->n_unused_files == 1 ? "" : "s", ds->n_skipped,
                         ds->n_skipped == 1 ? "" : "s");
  return g_string_free(s, FALSE);
}

int *mexd_dataset_epoch_order(const MexdDataset *ds, uint32_t epoch)
{
  if (!ds)
    return NULL;
  int n = ds->n_split[MEXD_SPLIT_TRAIN];
  int *order = g_new(int, MAX(n, 1));
  uint32_t *perm = g_new(uint32_t, MAX(n, 1));
  mexd_shuffle_permutation(ds->seed, epoch, (uint32_t)n, perm);
  for (int k = 0; k < n; k++)
    order[k] = ds->split_slides[MEXD_SPLIT_TRAIN][perm[k]];
  g_free(perm);
  return order;
}
