/* csv.c: RFC 4180 tables (csv.h). */
#include "io/csv.h"

#include "core/error.h"
#include "io/files.h"

#include <string.h>

struct _MexdCsv {
  GPtrArray *rows; /* char ** (NULL-terminated) */
  GArray *lines;   /* guint: the line each row starts on */
};

void mexd_csv_free(MexdCsv *csv)
{
  if (!csv)
    return;
  g_ptr_array_unref(csv->rows);
  g_array_unref(csv->lines);
  g_free(csv);
}

static gboolean is_blank(char c)
{
  return c == ' ' || c == '\t';
}

/* The fields of the record being read: their texts one after another, each ending in a NUL, in
 * `text`, and where each starts in `starts`; `ptrs` is handed to the callback. */
typedef struct {
  GString *text;
  GArray *starts; /* gsize */
  GPtrArray *ptrs;
} Record;

static void record_clear(Record *r)
{
  g_string_free(r->text, TRUE);
  g_array_unref(r->starts);
  g_ptr_array_unref(r->ptrs);
}

/* Begins a field at r->text's current end. */
static void record_field_begin(Record *r)
{
  gsize at = r->text->len;
  g_array_append_val(r->starts, at);
}

static const char *const *record_fields(Record *r)
{
  g_ptr_array_set_size(r->ptrs, 0);
  for (guint k = 0; k < r->starts->len; k++)
    g_ptr_array_add(r->ptrs, r->text->str + g_array_index(r->starts, gsize, k));
  g_ptr_array_add(r->ptrs, NULL);
  return (const char *const *)r->ptrs->pdata;
}

gboolean mexd_csv_each(const char *text, gssize len, const char *display, MexdCsvFlags flags,
                       MexdCsvRecordFunc fn, gpointer user, GError **error)
{
  if (!display)
    display = "<CSV>";
  if (!text)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: no text", display);
  const gsize n = len < 0 ? strlen(text) : (gsize)len;
  gsize i = 0;
  if (n >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
    i = 3;
  Record r = {g_string_new(NULL), g_array_new(FALSE, FALSE, sizeof(gsize)), g_ptr_array_new()};
  gboolean ok = TRUE;
  guint line = 1;
  while (ok && i < n) {
    /* a record */
    const guint start_line = line;
    if (text[i] == '\n' || (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
      i += text[i] == '\r' ? 2 : 1; /* a blank line */
      line++;
      continue;
    }
    if ((flags & MEXD_CSV_COMMENTS) && text[i] == '#') {
      while (i < n && text[i] != '\n')
        i++;
      i++;
      line++;
      continue;
    }
    g_string_truncate(r.text, 0);
    g_array_set_size(r.starts, 0);
    gboolean end_of_record = FALSE;
    while (ok && !end_of_record) {
      record_field_begin(&r);
      const gsize f0 = r.text->len;
      gsize j = i;
      if (flags & MEXD_CSV_TRIM)
        while (j < n && is_blank(text[j]))
          j++;
      if (j < n && text[j] == '"') {
        /* quoted */
        const guint qline = line;
        for (j++;; j++) {
          if (j >= n) {
            ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                           "%s:%u: a quoted field is not closed (it runs to the end of the file)",
                           display, qline);
            break;
          }
          if (text[j] == '"') {
            if (j + 1 < n && text[j + 1] == '"') {
              g_string_append_c(r.text, '"');
              j++;
              continue;
            }
            j++;
            break;
          }
          if (text[j] == '\n')
            line++;
          g_string_append_c(r.text, text[j]);
        }
        if (!ok)
          break;
        if (flags & MEXD_CSV_TRIM)
          while (j < n && is_blank(text[j]))
            j++;
        if (j < n && text[j] != ',' && text[j] != '\n' &&
            !(text[j] == '\r' && (j + 1 == n || text[j + 1] == '\n'))) {
          ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s:%u: text after a quoted field's closing quote (a quote inside a "
                         "quoted field is written \"\")",
                         display, line);
          break;
        }
      } else {
        gsize k = i;
        while (k < n && text[k] != ',' && text[k] != '\n' &&
               !(text[k] == '\r' && (k + 1 == n || text[k + 1] == '\n')))
          k++;
        gsize a = i, b = k;
        if (flags & MEXD_CSV_TRIM) {
          while (a < b && is_blank(text[a]))
            a++;
          while (b > a && is_blank(text[b - 1]))
            b--;
        }
        g_string_append_len(r.text, text + a, (gssize)(b - a));
        j = k;
      }
      if (memchr(r.text->str + f0, '\0', r.text->len - f0)) {
        ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s:%u: a field holds a NUL byte (is this a text file?)", display, line);
        break;
      }
      g_string_append_c(r.text, '\0');
      if (j >= n) {
        end_of_record = TRUE;
        i = n;
      } else if (text[j] == ',') {
        i = j + 1;
        if (i >= n) { /* "a," at the very end: a last, empty field */
          record_field_begin(&r);
          g_string_append_c(r.text, '\0');
          end_of_record = TRUE;
        }
      } else {
        i = j + (text[j] == '\r' ? 2 : 1);
        line++;
        end_of_record = TRUE;
      }
    }
    if (ok)
      ok = fn(record_fields(&r), r.starts->len, start_line, user, error);
  }
  record_clear(&r);
  return ok;
}

static gboolean collect_record(const char *const *fields, guint n, guint line, gpointer user,
                               GError **error)
{
  (void)n;
  (void)error;
  MexdCsv *csv = user;
  g_ptr_array_add(csv->rows, g_strdupv((char **)fields));
  g_array_append_val(csv->lines, line);
  return TRUE;
}

MexdCsv *mexd_csv_parse(const char *text, gssize len, const char *display, MexdCsvFlags flags,
                        GError **error)
{
  MexdCsv *csv = g_new0(MexdCsv, 1);
  csv->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  csv->lines = g_array_new(FALSE, FALSE, sizeof(guint));
  if (!mexd_csv_each(text, len, display, flags, collect_record, csv, error)) {
    mexd_csv_free(csv);
    return NULL;
  }
  return csv;
}

MexdCsv *mexd_csv_read_file(const char *path, MexdCsvFlags flags, GError **error)
{
  gsize len = 0;
  g_autofree char *text = mexd_file_read_small(path, "CSV file", (gsize)1 << 30, &len, error);
  if (!text)
    return NULL;
  g_autofree char *display = g_filename_display_name(path);
  return mexd_csv_parse(text, (gssize)len, display, flags, error);
}

guint mexd_csv_n_rows(const MexdCsv *csv)
{
  return csv ? csv->rows->len : 0;
}

const char *const *mexd_csv_row(const MexdCsv *csv, guint i)
{
  return csv && i < csv->rows->len ? (const char *const *)csv->rows->pdata[i] : NULL;
}

guint mexd_csv_row_len(const MexdCsv *csv, guint i)
{
  const char *const *r = mexd_csv_row(csv, i);
  return r ? g_strv_length((char **)r) : 0;
}

guint mexd_csv_row_line(const MexdCsv *csv, guint i)
{
  return csv && i < csv->lines->len ? g_array_index(csv->lines, guint, i) : 0;
}

int mexd_csv_column(const MexdCsv *csv, const char *name)
{
  const char *const *h = mexd_csv_row(csv, 0);
  for (int c = 0; h && name && h[c]; c++) {
    g_autofree char *t = g_strstrip(g_strdup(h[c]));
    if (!g_ascii_strcasecmp(t, name))
      return c;
  }
  return -1;
}

const char *mexd_csv_field(const MexdCsv *csv, guint i, int col)
{
  const char *const *r = mexd_csv_row(csv, i);
  if (!r || col < 0)
    return NULL;
  for (int c = 0; r[c]; c++)
    if (c == col)
      return r[c];
  return NULL;
}

void mexd_csv_append_field(GString *s, const char *field)
{
  if (!field)
    field = "";
  size_t n = strlen(field);
  gboolean quote = n > 0 && (strpbrk(field, ",\"\r\n") != NULL || is_blank(field[0]) ||
                             is_blank(field[n - 1]) || field[0] == '#');
  if (!quote) {
    g_string_append(s, field);
    return;
  }
  g_string_append_c(s, '"');
  for (const char *p = field; *p; p++) {
    if (*p == '"')
      g_string_append_c(s, '"');
    g_string_append_c(s, *p);
  }
  g_string_append_c(s, '"');
}

void mexd_csv_append_row(GString *s, const char *const *fields, int n)
{
  for (int i = 0; n < 0 ? fields[i] != NULL : i < n; i++) {
    if (i)
      g_string_append_c(s, ',');
    mexd_csv_append_field(s, fields[i]);
  }
  g_string_append_c(s, '\n');
}
