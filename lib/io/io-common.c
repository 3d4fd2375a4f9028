/* io-common.c: helpers shared by the file writers of lib/io (io-private.h). */
#include "io/io-private.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>

int mexd_io_temp_beside(const char *path, const char *display, char **tmp_out, GError **error)
{
  g_autofree char *dir = g_path_get_dirname(path);
  g_autofree char *base = g_path_get_basename(path);
  g_autofree char *tmpl_base = g_strdup_printf(".%s.XXXXXX", base);
  char *tmp = g_build_filename(dir, tmpl_base, NULL);
  int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666);
  if (fd < 0) {
    int err_no = errno;
    g_free(tmp);
    mexd_fail(error, MEXD_ERROR_IO, "%s: cannot create a temporary file beside it: %s", display,
              g_strerror(err_no));
    return -1;
  }
  *tmp_out = tmp;
  return fd;
}
