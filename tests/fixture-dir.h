/* fixture-dir.h: finding tests/fixtures/<sub>/ from a test program. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* tests/fixtures/<sub>/, looked for through G_TEST_SRCDIR (meson sets it), the directory of the
 * test sources, and the directories above the test program (a build directory inside the source
 * tree), so a test also runs by hand.  NULL when not found; g_free it. */
char *mexd_test_fixture_dir(const char *sub);

G_END_DECLS
