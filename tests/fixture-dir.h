/* fixture-dir.h: finding tests/fixtures/<sub>/ from a test program, and comparing with the
 * reference values stored there. */
#pragma once

#include "mexd.h"

#include <glib.h>

G_BEGIN_DECLS

/* tests/fixtures/<sub>/, looked for through G_TEST_SRCDIR (meson sets it), the directory of the
 * test sources, and the directories above the test program (a build directory inside the source
 * tree), so a test also runs by hand.  NULL when not found; g_free it. */
char *mexd_test_fixture_dir(const char *sub);

/* The values of tensor `name` of a fixture file as f32 (I32/I64 cast), or NULL when absent;
 * g_free them. */
float *mexd_test_st_floats(MexdSafetensors *st, const char *name, int64_t *n_out);
/* Normwise relative error max|out − ref| / max|ref| (the absolute error when ref is all 0);
 * *worst gets the index of the largest difference. */
double mexd_test_rel_err(const float *out, const float *ref, int64_t n, int64_t *worst);
/* Aborts the test when the counts differ or the relative error exceeds tol; logs it otherwise. */
void mexd_test_assert_close(const char *what, const float *out, int64_t n_out, const float *ref,
                            int64_t n_ref, double tol);
/* The backends a model test runs on: MEXD_TEST_BACKENDS (comma-separated), else cpu and
 * vulkan:0 when it opens.  g_strfreev it. */
char **mexd_test_backends(void);

G_END_DECLS
