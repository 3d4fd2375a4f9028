/* csv.h: one RFC 4180 CSV reader and writer for every table mexd reads or writes (labels,
 * manifests, predictions, summaries, and the DSMIL/IBMIL feature files of io/features.h).
 *
 * Reading: fields separated by ',', records by LF or CRLF; a field that starts with '"' is
 * quoted and may hold commas, quotes (doubled: "") and line breaks; text after a quoted field's
 * closing quote other than ',' or the end of the record is an error naming the line.  A UTF-8
 * byte-order mark at the start is skipped; records with no characters at all (blank lines) are
 * skipped.  Options: MEXD_CSV_TRIM trims spaces and tabs around *unquoted* fields (a quoted field
 * is kept byte for byte); MEXD_CSV_COMMENTS skips records whose first character is '#'.
 * Writing: a field is quoted when it holds ',', '"', CR, LF, or leading/trailing spaces, or
 * starts with '#'; records end with LF. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_CSV_TRIM = 1 << 0,
  MEXD_CSV_COMMENTS = 1 << 1,
} MexdCsvFlags;

typedef struct _MexdCsv MexdCsv;

/* One record of mexd_csv_each: its n fields (NULL-terminated; valid during the call only), the
 * line of the source it starts on.  Returns FALSE, with `error` set, to stop the reading. */
typedef gboolean (*MexdCsvRecordFunc)(const char *const *fields, guint n, guint line,
                                      gpointer user, GError **error);
/* Reads `text` (len < 0: NUL-terminated) record by record without keeping them (the tokenizer
 * every CSV of mexd goes through, tables and feature files alike); `display` names the source in
 * errors.  FALSE on a malformed text or when `fn` stops. */
gboolean mexd_csv_each(const char *text, gssize len, const char *display, MexdCsvFlags flags,
                       MexdCsvRecordFunc fn, gpointer user, GError **error);
/* Parses `text` (len < 0: NUL-terminated) into a table; `display` names the source in errors. */
MexdCsv *mexd_csv_parse(const char *text, gssize len, const char *display, MexdCsvFlags flags,
                        GError **error);
/* Reads and parses a regular file of at most 1 GiB. */
MexdCsv *mexd_csv_read_file(const char *path, MexdCsvFlags flags, GError **error);
void mexd_csv_free(MexdCsv *csv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdCsv, mexd_csv_free)

guint mexd_csv_n_rows(const MexdCsv *csv);
/* Row i's fields (NULL-terminated; owned by csv) and their count. */
const char *const *mexd_csv_row(const MexdCsv *csv, guint i);
guint mexd_csv_row_len(const MexdCsv *csv, guint i);
/* The line of the source on which row i starts (1-based), for messages. */
guint mexd_csv_row_line(const MexdCsv *csv, guint i);
/* The column of row 0 whose text equals `name` (ASCII case-insensitive, surrounding spaces
 * ignored), or -1. */
int mexd_csv_column(const MexdCsv *csv, const char *name);
/* Row i's field at `col`, or NULL when the row is shorter. */
const char *mexd_csv_field(const MexdCsv *csv, guint i, int col);

/* Appends one field, quoted when needed. */
void mexd_csv_append_field(GString *s, const char *field);
/* Appends a record: n fields (n < 0: fields is NULL-terminated) separated by ',' and a LF. */
void mexd_csv_append_row(GString *s, const char *const *fields, int n);

G_END_DECLS
