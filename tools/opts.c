/* opts.c (tools): range checks of numeric options (opts.h). */
#include "opts.h"

#include <math.h>
#include <stdio.h>

gboolean mexd_opt_int(const char *cmd, const char *name, gint64 v, gint64 lo, gint64 hi)
{
  if (v >= lo && v <= hi)
    return TRUE;
  fprintf(stderr, "%s: %s %" G_GINT64_FORMAT " is outside %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
                  "\n",
          cmd, name, v, lo, hi);
  return FALSE;
}

gboolean mexd_opt_double(const char *cmd, const char *name, double v, double lo, double hi,
                         gboolean lo_open)
{
  if (isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi)
    return TRUE;
  fprintf(stderr, "%s: %s %g is outside %g..%g%s\n", cmd, name, v, lo, hi,
          lo_open ? " (and must be above it)" : "");
  return FALSE;
}

char *mexd_tool_data_file(const char *installed, const char *in_source)
{
  const char *env = g_getenv("MEXD_DATA_DIR");
  if (env && *env)
    return g_build_filename(env, installed, NULL);
  g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
#if defined(MEXD_BUILD_ROOT) && defined(MEXD_SOURCE_ROOT)
  if (exe && g_str_has_prefix(exe, MEXD_BUILD_ROOT "/"))
    return g_build_filename(MEXD_SOURCE_ROOT, in_source, NULL);
#else
  (void)in_source;
#endif
#ifdef MEXD_REL_DATA_DIR
  /* an installed copy, wherever it was moved: <bindir>/../share/mexd */
  if (exe) {
    g_autofree char *dir = g_path_get_dirname(exe);
    g_autofree char *rel = g_build_filename(dir, MEXD_REL_DATA_DIR, installed, NULL);
    if (g_file_test(rel, G_FILE_TEST_EXISTS))
      return g_steal_pointer(&rel);
  }
#endif
#ifdef MEXD_DATA_DIR
  return g_build_filename(MEXD_DATA_DIR, installed, NULL);
#else
  return g_build_filename(in_source, NULL);
#endif
}
