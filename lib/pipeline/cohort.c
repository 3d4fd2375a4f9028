/* cohort.c: slide lists, manifests, shards, per-slide output state and the summary (cohort.h). */
#include "pipeline/cohort.h"

#include "core/error.h"
#include "io/csv.h"
#include "io/files.h"

#include <glib/gstdio.h>
#include <string.h>

static void entry_clear(gpointer p)
{
  MexdSlideEntry *e = p;
  g_free(e->path);
  g_free(e->id);
}

GArray *mexd_slide_list_new(void)
{
  GArray *a = g_array_new(FALSE, TRUE, sizeof(MexdSlideEntry));
  g_array_set_clear_func(a, entry_clear);
  return a;
}

char *mexd_slide_id_of(const char *path)
{
  g_autofree char *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return g_strdup(base);
}

void mexd_slide_list_add(GArray *list, const char *path, const char *id)
{
  MexdSlideEntry e = {g_strdup(path), id ? g_strdup(id) : mexd_slide_id_of(path)};
  g_array_append_val(list, e);
}

GArray *mexd_slide_list_read_manifest(const char *file, GError **error)
{
  if (!mexd_file_check_regular(file, "manifest", error))
    return NULL;
  g_autoptr(MexdCsv) csv = mexd_csv_read_file(file, MEXD_CSV_TRIM | MEXD_CSV_COMMENTS, error);
  if (!csv)
    return NULL;
  g_autofree char *display = g_filename_display_name(file);
  g_autofree char *dir = g_path_get_dirname(file);
  int col_path = mexd_csv_column(csv, "path"), col_id = mexd_csv_column(csv, "slide_id");
  if (col_path < 0 && col_id >= 0)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: the header has a slide_id column but no path column", display);
  GArray *out = mexd_slide_list_new();
  for (guint i = col_path >= 0 ? 1 : 0; i < mexd_csv_n_rows(csv); i++) {
    guint line = mexd_csv_row_line(csv, i);
    const char *path, *id = NULL;
    if (col_path >= 0) {
      path = mexd_csv_field(csv, i, col_path);
      id = col_id >= 0 ? mexd_csv_field(csv, i, col_id) : NULL;
      if (!path || (col_id >= 0 && !id)) {
        g_array_unref(out);
        return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s:%u: too few fields (%u)", display,
                              line, mexd_csv_row_len(csv, i));
      }
    } else {
      if (mexd_csv_row_len(csv, i) != 1) {
        g_array_unref(out);
        return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                              "%s:%u: %u fields in a manifest without a header (one path per "
                              "line): quote a path that holds a comma (\"a,b.svs\"), or give a "
                              "header with a path column",
                              display, line, mexd_csv_row_len(csv, i));
      }
      path = mexd_csv_field(csv, i, 0);
    }
    if (!*path) {
      if (mexd_csv_row_len(csv, i) == 1 || col_path >= 0) {
        gboolean all_empty = TRUE;
        for (const char *const *r = mexd_csv_row(csv, i); *r; r++)
          all_empty = all_empty && !**r;
        if (all_empty)
          continue; /* a line of blanks */
      }
      g_array_unref(out);
      return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s:%u: an empty path", display, line);
    }
    g_autofree char *full =
        g_path_is_absolute(path) ? g_strdup(path) : g_build_filename(dir, path, NULL);
    mexd_slide_list_add(out, full, id && *id ? id : NULL);
  }
  if (out->len == 0) {
    g_array_unref(out);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the manifest lists no slide", display);
  }
  return out;
}

/* An id names a folder: any bytes but '/', not "." or "..", at most 200 bytes (commas, quotes
 * and line breaks are fine: the summary quotes them). */
static gboolean usable_id(const char *id)
{
  return *id && !strchr(id, '/') && !g_str_equal(id, ".") && !g_str_equal(id, "..") &&
         strlen(id) <= 200;
}

gboolean mexd_slide_list_check_ids(GArray *list, GError **error)
{
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < list->len; i++) {
    MexdSlideEntry *e = &g_array_index(list, MexdSlideEntry, i);
    g_autofree char *display = g_filename_display_name(e->path);
    if (!usable_id(e->id)) {
      g_autofree char *shown = g_strescape(e->id, NULL);
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "%s: \"%s\" is not a usable slide id (it names the slide's output folder: "
                       "no '/', not . or .., at most 200 bytes)",
                       display, shown);
    }
    const char *other = g_hash_table_lookup(seen, e->id);
    if (other) {
      g_autofree char *od = g_filename_display_name(other);
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "%s and %s have the same slide id \"%s\" (their outputs would collide; "
                       "give a slide_id column in a manifest)",
                       od, display, e->id);
    }
    g_hash_table_insert(seen, e->id, e->path);
  }
  return TRUE;
}

gboolean mexd_shard_parse(const char *spec, int *index, int *count, GError **error)
{
  int i = -1, n = 0, used = 0;
  if (!spec || sscanf(spec, "%d/%d%n", &i, &n, &used) != 2 || spec[used] != '\0' || n < 1 ||
      i < 0 || i >= n)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "--shard is I/N with 0 ≤ I < N, not \"%s\"", spec ? spec : "");
  *index = i;
  *count = n;
  return TRUE;
}

/* ---- a slide's outputs ---- */

MexdSlideState mexd_slide_outputs_state(const char *slide_dir, const char *const *files,
                                        const MexdIdentity *want, char **why)
{
  g_autofree char *rp = g_build_filename(slide_dir, "result.json", NULL);
  char *reason = NULL;
  MexdSlideState st;
  GStatBuf sb;
  if (g_lstat(rp, &sb) != 0) {
    st = MEXD_SLIDE_TODO;
    reason = g_strdup("not classified yet");
  } else {
    g_autoptr(GError) e = NULL;
    g_autoptr(MexdSlideResult) r = mexd_slide_result_read(rp, &e);
    if (!r) {
      st = MEXD_SLIDE_BROKEN;
      reason = g_strdup_printf("its result cannot be used (%s)", e->message);
    } else if (!r->identity) {
      st = MEXD_SLIDE_STALE;
      reason = g_strdup("its result does not record what produced it");
    } else {
      g_autofree char *diff = mexd_identity_diff(r->identity, want);
      if (diff) {
        st = MEXD_SLIDE_STALE;
        reason = g_strdup_printf("its result was made otherwise: %s", diff);
      } else {
        st = MEXD_SLIDE_DONE;
        for (int i = 0; files && files[i]; i++) {
          g_autofree char *p = g_build_filename(slide_dir, files[i], NULL);
          if (!g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
            st = MEXD_SLIDE_BROKEN;
            reason = g_strdup_printf("%s is missing", files[i]);
            break;
          }
        }
      }
    }
  }
  if (why)
    *why = reason;
  else
    g_free(reason);
  return st;
}

void mexd_slide_outputs_remove(const char *slide_dir, const char *const *files)
{
  g_autofree char *rp = g_build_filename(slide_dir, "result.json", NULL);
  g_unlink(rp);
  for (int i = 0; files && files[i]; i++) {
    g_autofree char *p = g_build_filename(slide_dir, files[i], NULL);
    g_unlink(p);
  }
  mexd_file_remove_stale_temps(slide_dir);
}

/* ---- the summary ---- */

static gboolean same_classes(const MexdSlideResult *r, const char *const *classes)
{
  guint n = g_strv_length((char **)classes);
  if ((guint)r->n_classes != n)
    return FALSE;
  for (guint c = 0; c < n; c++)
    if (!g_str_equal(r->classes[c], classes[c]))
      return FALSE;
  return TRUE;
}

gboolean mexd_summary_write(const char *out_dir, GArray *list, const char *const *classes,
                            const MexdIdentity *run, int *rows, GError **error)
{
  GString *s = g_string_new(NULL);
  g_autoptr(GPtrArray) head = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(head, g_strdup("slide_id"));
  g_ptr_array_add(head, g_strdup("path"));
  g_ptr_array_add(head, g_strdup("class"));
  for (int c = 0; classes[c]; c++)
    g_ptr_array_add(head, g_strdup_printf("p_%s", classes[c]));
  g_ptr_array_add(head, g_strdup("tiles"));
  mexd_csv_append_row(s, (const char *const *)head->pdata, (int)head->len);
  int missing = 0, other = 0, n_rows = 0;
  const char *first_missing = NULL;
  g_autofree char *first_other = NULL;
  g_autoptr(MexdIdentity) ref = NULL;
  for (guint i = 0; i < list->len; i++) {
    MexdSlideEntry *e = &g_array_index(list, MexdSlideEntry, i);
    g_autofree char *rp = g_build_filename(out_dir, e->id, "result.json", NULL);
    g_autoptr(MexdSlideResult) r = g_file_test(rp, G_FILE_TEST_EXISTS)
                                       ? mexd_slide_result_read(rp, NULL)
                                       : NULL;
    if (!r || !r->identity || !same_classes(r, classes)) {
      if (!missing++)
        first_missing = e->id;
      continue;
    }
    g_autoptr(MexdIdentity) id = mexd_identity_copy(r->identity);
    mexd_identity_remove(id, "slide");
    /* the keys the caller gives must match; all results must agree among themselves */
    g_autoptr(MexdIdentity) part = mexd_identity_new();
    for (guint k = 0; run && k < mexd_identity_n_keys(run); k++) {
      const char *key = mexd_identity_key(run, k), *v = mexd_identity_get(id, key);
      mexd_identity_set(part, key, "%s", v ? v : "(none)");
    }
    g_autofree char *diff = run ? mexd_identity_diff(part, run) : NULL;
    const char *how = "its result → this run";
    if (!diff) {
      if (!ref)
        ref = mexd_identity_copy(id);
      diff = mexd_identity_diff(ref, id);
      how = "the first result → this one";
    }
    if (diff) {
      if (!other++)
        first_other = g_strdup_printf("%s: %s (%s)", e->id, diff, how);
      continue;
    }
    g_autoptr(GPtrArray) row = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(row, g_strdup(e->id));
    g_ptr_array_add(row, g_strdup(e->path));
    g_ptr_array_add(row, g_strdup(r->classes[r->class_index]));
    const double *p = r->probabilities ? r->probabilities : r->prior;
    for (int c = 0; c < r->n_classes; c++)
      g_ptr_array_add(row, g_strdup_printf("%.6f", p[c]));
    g_ptr_array_add(row, g_strdup_printf("%" G_GINT64_FORMAT, r->tiles));
    mexd_csv_append_row(s, (const char *const *)row->pdata, (int)row->len);
    n_rows++;
  }
  g_autofree char *path = g_build_filename(out_dir, "summary.csv", NULL);
  gboolean ok = mexd_file_write_atomic(path, s->str, (gssize)s->len, error);
  g_string_free(s, TRUE);
  if (rows)
    *rows = n_rows;
  g_autofree char *display = g_filename_display_name(path);
  if (ok && other)
    ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                   "%s: %d of %u slides have results made with other inputs or settings, left "
                   "out (%s); rerun them with the same settings",
                   display, other, list->len, first_other);
  else if (ok && missing)
    ok = mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                   "%s: %d of %u slides have no result yet (%s…): the summary lists the others",
                   display, missing, list->len, first_missing);
  return ok;
}
