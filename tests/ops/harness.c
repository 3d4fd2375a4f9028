/* harness.c: the op test harness (harness.h) and its main(). */
#include "harness.h"

#include "backend/vulkan.h"

#include <math.h>
#include <string.h>

typedef struct {
  HarnessCase hc;
  HarnessFunc fn;
} Registered;

static GPtrArray *backends;   /* MexdBackend*, [0] is cpu */
static GPtrArray *specs;      /* char*, owned */
static GPtrArray *registered; /* Registered*, owned: GLib frees its test cases, not their data */

static gboolean backend_wanted(const char *spec)
{
  const char *only = g_getenv("MEXD_TEST_BACKENDS");
  if (!only || !*only)
    return TRUE;
  g_auto(GStrv) parts = g_strsplit(only, ",", -1);
  for (int i = 0; parts[i]; i++)
    if (strcmp(g_strstrip(parts[i]), spec) == 0)
      return TRUE;
  return FALSE;
}

static void open_backends(void)
{
  backends = g_ptr_array_new();
  specs = g_ptr_array_new_with_free_func(g_free);
  g_auto(GStrv) list = mexd_backend_list();
  for (int i = 0; list[i]; i++) {
    if (i > 0 && !backend_wanted(list[i])) /* cpu always opens: it is the reference */
      continue;
    g_autoptr(GError) error = NULL;
    MexdBackend *be = mexd_backend_new(list[i], &error);
    if (!be) {
      g_printerr("# %s does not open here (%s): its cases are skipped\n", list[i], error->message);
      continue;
    }
    g_printerr("# backend %s: %s\n", list[i], mexd_backend_name(be));
    g_ptr_array_add(backends, be);
    g_ptr_array_add(specs, g_strdup(list[i]));
  }
}

static void run_case(gconstpointer data)
{
  const Registered *r = data;
  r->fn(&r->hc);
}

void harness_add(const char *name, unsigned dtypes, HarnessFunc fn)
{
  for (guint i = 0; i < backends->len; i++) {
    for (int dt = MEXD_DTYPE_F32; dt <= MEXD_DTYPE_F16; dt++) {
      if (!(dtypes & (1u << dt)))
        continue;
      MexdBackend *be = g_ptr_array_index(backends, i);
      if (i == 0 && !backend_wanted("cpu"))
        continue; /* the cpu backend stays open as the reference */
      if (dt == MEXD_DTYPE_F16 && !mexd_backend_has_f16(be))
        continue;
      Registered *r = g_new0(Registered, 1);
      if (!registered)
        registered = g_ptr_array_new_with_free_func(g_free);
      g_ptr_array_add(registered, r);
      r->hc.be = be;
      r->hc.cpu = g_ptr_array_index(backends, 0);
      r->hc.dtype = (MexdDType)dt;
      r->hc.spec = g_ptr_array_index(specs, i);
      r->fn = fn;
      g_autofree char *path =
          g_strdup_printf("/ops/%s/%s/%s", name, r->hc.spec, mexd_dtype_name((MexdDType)dt));
      g_test_add_data_func(path, r, run_case);
    }
  }
}

int64_t harness_size(int64_t max)
{
  static const int64_t edges[] = {1, 7, 255, 257, 64, 3, 129};
  int64_t v;
  if (g_test_rand_int_range(0, 2) == 0)
    v = edges[g_test_rand_int_range(0, G_N_ELEMENTS(edges))];
  else
    v = g_test_rand_int_range(1, (gint32)MIN(max, G_MAXINT32 - 1) + 1);
  return MIN(MAX(v, 1), max);
}

float harness_f16_round(float x)
{
  return mexd_f16_to_f32(mexd_f32_to_f16(x));
}

float *harness_random(int64_t n, float lo, float hi, MexdDType dtype)
{
  float *v = g_new(float, n);
  for (int64_t i = 0; i < n; i++) {
    v[i] = (float)g_test_rand_double_range(lo, hi);
    if (dtype == MEXD_DTYPE_F16)
      v[i] = harness_f16_round(v[i]);
  }
  return v;
}

MexdTensor *harness_tensor(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                           const float *data)
{
  g_autoptr(GError) error = NULL;
  MexdTensor *t = mexd_tensor_new_from_f32(be, dtype, ndim, shape, data, &error);
  g_assert_no_error(error);
  return t;
}

MexdTensor *harness_tensor_i32(MexdBackend *be, int ndim, const int64_t *shape, const int32_t *data)
{
  g_autoptr(GError) error = NULL;
  MexdTensor *t = mexd_tensor_new(be, MEXD_DTYPE_I32, ndim, shape, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_tensor_write(t, data, mexd_tensor_nbytes(t), &error));
  g_assert_no_error(error);
  return t;
}

MexdTensor *harness_view_tensor(MexdBackend *be, MexdDType dtype, int ndim, const int64_t *shape,
                                const float *data, int64_t pad)
{
  int64_t n = harness_numel(ndim, shape);
  if (pad == 0)
    return harness_tensor(be, dtype, ndim, shape, data);
  int64_t total = n + pad;
  g_autofree float *buf = g_new(float, total);
  for (int64_t i = 0; i < pad; i++)
    buf[i] = 1e4f + (float)i;
  memcpy(buf + pad, data, sizeof(float) * (size_t)n);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) base = harness_tensor(be, dtype, 1, &total, buf);
  g_autoptr(MexdTensor) rows = mexd_tensor_rows(base, pad, n, &error);
  g_assert_no_error(error);
  MexdTensor *t = mexd_tensor_reshape(rows, ndim, shape, &error);
  g_assert_no_error(error);
  return t;
}

int64_t harness_numel(int ndim, const int64_t *shape)
{
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  return n;
}

char *harness_shape_str(int ndim, const int64_t *shape)
{
  GString *s = g_string_new("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

float *harness_read(MexdTensor *t)
{
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_backend_sync(t->backend, &error));
  g_assert_no_error(error);
  float *v = mexd_tensor_dup_f32(t, &error);
  g_assert_no_error(error);
  return v;
}

double harness_nmse(const float *out, const double *ref, int64_t n)
{
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)out[i] - ref[i];
    if (isnan(out[i]) != isnan(ref[i]))
      return INFINITY;
    if (isnan(ref[i]))
      continue;
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0)
    return num == 0 ? 0 : num / (double)n;
  return num / den;
}

double harness_nmse_f(const float *out, const float *ref, int64_t n)
{
  double *r = g_new(double, n);
  for (int64_t i = 0; i < n; i++)
    r[i] = ref[i];
  double e = harness_nmse(out, r, n);
  g_free(r);
  return e;
}

void harness_assert_close_d(const char *what, const float *out, const double *ref, int64_t n,
                            double thr)
{
  double e = harness_nmse(out, ref, n);
  if (!(e <= thr)) {
    int64_t worst = 0;
    double wd = -1;
    for (int64_t i = 0; i < n; i++) {
      double d = fabs((double)out[i] - ref[i]);
      if (isnan(d) || d > wd) {
        wd = isnan(d) ? INFINITY : d;
        worst = i;
      }
    }
    g_error("%s: NMSE %.3g exceeds %.3g (n = %" G_GINT64_FORMAT "; worst at %" G_GINT64_FORMAT
            ": got %.9g, want %.9g)",
            what, e, thr, n, worst, out[worst], ref[worst]);
  }
}

void harness_assert_close(const char *what, const float *out, const float *ref, int64_t n,
                          double thr)
{
  double *r = g_new(double, n);
  for (int64_t i = 0; i < n; i++)
    r[i] = ref[i];
  harness_assert_close_d(what, out, r, n, thr);
  g_free(r);
}

void harness_assert_error(GError *error, int code, const char *what)
{
  if (!error)
    g_error("%s: expected an error, the call succeeded", what);
  if (error->domain != MEXD_ERROR || (code >= 0 && error->code != code))
    g_error("%s: expected MEXD_ERROR code %d, got %s code %d: %s", what, code,
            g_quark_to_string(error->domain), error->code, error->message);
  g_test_message("%s: %s", what, error->message);
  g_error_free(error);
}

double harness_thr(const HarnessCase *hc, double f32_thr)
{
  return hc->dtype == MEXD_DTYPE_F16 ? NMSE_F16 : f32_thr;
}

static void test_validation_clean(void)
{
  g_assert_cmpuint(mexd_vk_validation_messages(), ==, 0);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  open_backends();
  register_gemm_tests();
  register_conv2d_tests();
  register_norm_tests();
  register_elementwise_tests();
  register_reduce_tests();
  register_index_tests();
  register_layout_tests();
  register_mexd_tests();
  register_vision_tests();
  register_grad_tests();
  const char *v = g_getenv("MEXD_VK_VALIDATION");
  if (v && *v && strcmp(v, "0") != 0)
    g_test_add_func("/validation/layer-silent", test_validation_clean);
  int rc = g_test_run();
  for (guint i = 0; i < backends->len; i++)
    mexd_backend_unref(g_ptr_array_index(backends, i));
  g_ptr_array_free(backends, TRUE);
  g_ptr_array_free(specs, TRUE);
  if (registered)
    g_ptr_array_free(registered, TRUE);
  return rc;
}
