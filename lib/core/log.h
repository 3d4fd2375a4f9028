/* log.h: logging through GLib.
 *
 * libmexd logs under the GLib domain "mexd".  Debug lines (device choice, limits, features,
 * pipeline creation) are shown when MEXD_DEBUG is set to anything but "0", or when G_MESSAGES_DEBUG
 * names "mexd" or "all". */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MEXD_LOG_DOMAIN "mexd"

gboolean mexd_debug_enabled(void);

#define mexd_debug(...)                                                                            \
  G_STMT_START                                                                                     \
  {                                                                                                \
    if (mexd_debug_enabled())                                                                      \
      g_log(MEXD_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, __VA_ARGS__);                                    \
  }                                                                                                \
  G_STMT_END
#define mexd_warning(...) g_log(MEXD_LOG_DOMAIN, G_LOG_LEVEL_WARNING, __VA_ARGS__)

G_END_DECLS
