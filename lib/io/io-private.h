/* io-private.h: helpers shared by the file writers of lib/io. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Creates an empty temporary file beside `path` (same directory, ".<name>.XXXXXX"), for writing a
 * file atomically (write, flush, rename over `path`).  Returns its descriptor and sets *tmp_out to
 * its name (g_free it); on failure -1 with MEXD_ERROR_IO naming `display`. */
int mexd_io_temp_beside(const char *path, const char *display, char **tmp_out, GError **error);

G_END_DECLS
