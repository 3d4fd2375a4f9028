/* error.c: the libmexd GError domain and the debug switch. */
#include "core/error.h"
#include "core/log.h"

#include <stdarg.h>
#include <string.h>

G_DEFINE_QUARK(mexd - error - quark, mexd_error)

gboolean mexd_debug_enabled(void)
{
  static gsize once = 0;
  static gboolean enabled = FALSE;
  if (g_once_init_enter(&once)) {
    const char *v = g_getenv("MEXD_DEBUG");
    const char *m = g_getenv("G_MESSAGES_DEBUG");
    enabled = (v && *v && strcmp(v, "0") != 0) ||
              (m && (strstr(m, "mexd") != NULL || strcmp(m, "all") == 0));
    g_once_init_leave(&once, 1);
  }
  return enabled;
}

gboolean mexd_fail(GError **error, int code, const char *format, ...)
{
  va_list ap;
  va_start(ap, format);
  if (error)
    g_propagate_error(error, g_error_new_valist(MEXD_ERROR, code, format, ap));
  va_end(ap);
  return FALSE;
}

gpointer mexd_fail_null(GError **error, int code, const char *format, ...)
{
  va_list ap;
  va_start(ap, format);
  if (error)
    g_propagate_error(error, g_error_new_valist(MEXD_ERROR, code, format, ap));
  va_end(ap);
  return NULL;
}
