/* opts.h (tools): the range checks of numeric options, one message for all commands:
 * "mexd CMD: --NAME VALUE is outside LO..HI" (a usage error: the caller exits 2).  NaN and the
 * infinities are outside every range. */
#pragma once

#include <glib.h>

/* TRUE when lo ≤ v ≤ hi; otherwise prints the message and returns FALSE. */
gboolean mexd_opt_int(const char *cmd, const char *name, gint64 v, gint64 lo, gint64 hi);
/* TRUE when v is finite and lo ≤ v ≤ hi (lo < v when lo_open); otherwise prints and FALSE. */
gboolean mexd_opt_double(const char *cmd, const char *name, double v, double lo, double hi,
                         gboolean lo_open);

/* A file `mexd` needs at run time (a script, an image): `installed` under the installed data
 * folder (<prefix>/<datadir>/mexd), or `in_source` under the source tree when this program is
 * the build tree's (its path is inside the build folder); MEXD_DATA_DIR=DIR overrides both
 * (DIR/`installed`: a staged install's test).  g_free the result. */
char *mexd_tool_data_file(const char *installed, const char *in_source);
