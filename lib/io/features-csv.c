/* features-csv.c: DSMIL/IBMIL CSV feature files (features.h), read with the project's one CSV
 * tokenizer (io/csv.h, mexd_csv_each with MEXD_CSV_TRIM: a quoted cell is unquoted, spaces around
 * cells are dropped).  One record per instance, D numbers; the first record is a header when a
 * cell is not a number or the cells are 0, 1, ... D-1 (pandas' to_csv); a first header cell that
 * is empty or "Unnamed: 0" marks a pandas index column, skipped.  A record of one empty cell (a
 * line of spaces) is blank. */
#include "io/features-private.h"
#include "io/csv.h"

#include "core/error.h"

#include <string.h>

typedef struct {
  const char *fname;
  int64_t max_rows; /* records are at most the lines: the allocation's bound */
  float *feat;
  int64_t n, d;     /* d < 0 before the first record */
  guint skip;       /* 1 when the first column is a pandas index */
} CsvBag;

static gboolean csv_number(const char *s, double *out)
{
  if (!*s)
    return FALSE;
  char *end = NULL;
  double v = g_ascii_strtod(s, &end);
  if (end == s || *end)
    return FALSE;
  *out = v;
  return TRUE;
}

/* Whether the first record's cells are a header (see above). */
static gboolean csv_is_header(const char *const *cells, guint n)
{
  for (guint i = 0; i < n; i++) {
    double v;
    if (!csv_number(cells[i], &v))
      return TRUE;
  }
  for (guint i = 0; i < n; i++) {
    char want[16];
    g_snprintf(want, sizeof want, "%u", i);
    if (strcmp(cells[i], want) != 0)
      return FALSE;
  }
  return TRUE;
}

static gboolean csv_bad_cell(const char *fname, guint line, guint col, const char *cell,
                             GError **error)
{
  if (!*cell)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: line %u, column %u is empty (write a missing value as nan)", fname, line,
                     col);
  g_autofree char *head = g_strndup(cell, 40);
  g_autofree char *shown = g_utf8_make_valid(head, -1);
  return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: line %u, column %u is not a number: \"%s%s\"",
                   fname, line, col, shown, strlen(cell) > 40 ? "..." : "");
}

static gboolean csv_record(const char *const *cells, guint n, guint line, gpointer user,
                           GError **error)
{
  CsvBag *b = user;
  if (n == 1 && !*cells[0])
    return TRUE; /* a blank line */
  if (b->d < 0) {
    /* the first record: header or data; it fixes D */
    gboolean header = csv_is_header(cells, n);
    if (header && n > 1 && (!*cells[0] || strcmp(cells[0], "Unnamed: 0") == 0))
      b->skip = 1;
    b->d = (int64_t)n - b->skip;
    if ((uint64_t)b->max_rows > SIZE_MAX / sizeof(float) / (uint64_t)b->d)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: too many values", b->fname);
    b->feat = g_try_malloc((size_t)b->max_rows * (size_t)b->d * sizeof(float));
    if (!b->feat)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "%s: cannot allocate memory for up to %" G_GINT64_FORMAT
                       " x %" G_GINT64_FORMAT " features",
                       b->fname, b->max_rows, b->d);
    if (header)
      return TRUE;
  }
  if ((int64_t)n != b->d + b->skip)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: line %u has %" G_GINT64_FORMAT " values, expected %" G_GINT64_FORMAT,
                     b->fname, line, (int64_t)n - b->skip, b->d);
  g_assert(b->n < b->max_rows);
  float *row = b->feat + (size_t)b->n * (size_t)b->d;
  for (guint j = b->skip; j < n; j++) {
    double v;
    if (!csv_number(cells[j], &v))
      return csv_bad_cell(b->fname, line, j + 1, cells[j], error);
    row[j - b->skip] = (float)v;
  }
  b->n++;
  return TRUE;
}

MexdBag *mexd_bag_read_csv(const char *p, size_t len, const char *fname, GError **error)
{
  CsvBag b = {.fname = fname, .max_rows = 1, .d = -1};
  for (const char *q = p, *end = p + len; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
    b.max_rows++;
  gboolean ok = mexd_csv_each(p, (gssize)len, fname, MEXD_CSV_TRIM, csv_record, &b, error);
  if (ok && b.d < 0)
    ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: has no lines but blank ones", fname);
  else if (ok && b.n == 0)
    ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: has a header line but no data lines", fname);
  if (!ok) {
    g_free(b.feat);
    return NULL;
  }
  MexdBag *bag = g_new0(MexdBag, 1);
  bag->n = b.n;
  bag->d = b.d;
  bag->features =
      b.n < b.max_rows ? g_realloc(b.feat, (size_t)b.n * (size_t)b.d * sizeof(float)) : b.feat;
  bag->patch_level = -1;
  bag->patch_size = -1;
  return bag;
}
