/* fixture-dir.c: see fixture-dir.h. */
#include "fixture-dir.h"

char *mexd_test_fixture_dir(const char *sub)
{
  const char *srcdir = g_getenv("G_TEST_SRCDIR");
  if (srcdir) {
    char *d = g_build_filename(srcdir, "fixtures", sub, NULL);
    if (g_file_test(d, G_FILE_TEST_IS_DIR))
      return d;
    g_free(d);
  }
  g_autofree char *here = g_path_get_dirname(__FILE__);
  char *d = g_build_filename(here, "fixtures", sub, NULL);
  if (g_file_test(d, G_FILE_TEST_IS_DIR))
    return d;
  g_free(d);
  g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
  if (!exe)
    return NULL;
  char *dir = g_path_get_dirname(exe);
  for (int up = 0; up < 6; up++) {
    d = g_build_filename(dir, "tests", "fixtures", sub, NULL);
    if (g_file_test(d, G_FILE_TEST_IS_DIR)) {
      g_free(dir);
      return d;
    }
    g_free(d);
    char *parent = g_path_get_dirname(dir);
    g_free(dir);
    dir = parent;
  }
  g_free(dir);
  return NULL;
}
