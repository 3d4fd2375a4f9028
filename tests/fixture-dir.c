/* fixture-dir.c: see fixture-dir.h. */
#include "fixture-dir.h"

#include <math.h>
#include <string.h>

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

/* The values of tensor `name` as f32 (I32 cast), or NULL when absent. */
float *mexd_test_st_floats(MexdSafetensors *st, const char *name, int64_t *n_out)
{
  const MexdStTensor *t = mexd_safetensors_find(st, name);
  if (!t)
    return NULL;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  float *v = g_new(float, MAX(n, 1));
  const uint8_t *p = t->data;
  for (int64_t i = 0; i < n; i++) {
    if (t->dtype == MEXD_ST_F32) {
      memcpy(&v[i], p + 4 * i, 4);
    } else if (t->dtype == MEXD_ST_I32) {
      int32_t x;
      memcpy(&x, p + 4 * i, 4);
      v[i] = (float)x;
    } else if (t->dtype == MEXD_ST_I64) {
      int64_t x;
      memcpy(&x, p + 8 * i, 8);
      v[i] = (float)x;
    } else {
      g_error("fixture tensor %s has dtype %s", name, mexd_st_dtype_name(t->dtype));
    }
  }
  *n_out = n;
  return v;
}

double mexd_test_rel_err(const float *out, const float *ref, int64_t n, int64_t *worst)
{
  double md = 0, mr = 0;
  *worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)out[i] - ref[i]);
    if (!(d <= md)) {
      md = d;
      *worst = i;
    }
    mr = MAX(mr, fabs((double)ref[i]));
  }
  return mr > 0 ? md / mr : md;
}

void mexd_test_assert_close(const char *what, const float *out, int64_t n_out, const float *ref,
                         int64_t n_ref, double tol)
{
  if (n_out != n_ref)
    g_error("%s: %" G_GINT64_FORMAT " values, the reference has %" G_GINT64_FORMAT, what, n_out,
            n_ref);
  int64_t w;
  double e = mexd_test_rel_err(out, ref, n_out, &w);
  if (!(e <= tol))
    g_error("%s: relative error %.3g > %.1g (element %" G_GINT64_FORMAT ": %.9g vs %.9g)", what, e,
            tol, w, out[w], ref[w]);
  g_test_message("%s: relative error %.3g", what, e);
}

char **mexd_test_backends(void)
{
  const char *env = g_getenv("MEXD_TEST_BACKENDS");
  if (env)
    return g_strsplit(env, ",", -1);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) vk = mexd_backend_new("vulkan:0", &error);
  return g_strsplit(vk ? "cpu,vulkan:0" : "cpu", ",", -1);
}
