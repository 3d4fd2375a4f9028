/* op-mexd.c: the ops made for the MExD model — lincomb, scale_eye, abs_sum_max, route_keep —
 * against naive double references (cpu) and against cpu (other backends). */
#include "harness.h"

#include <math.h>

/* ---- lincomb ---- */

/* A random suffix of y's shape (possibly all of it, possibly one dim). */
static int suffix_of(int ndim, const int64_t *shape, int64_t out[4])
{
  int k = g_test_rand_int_range(1, ndim + 1);
  for (int i = 0; i < k; i++)
    out[i] = shape[ndim - k + i];
  return k;
}

static float *run_lincomb(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape, float **xd,
                          int *xnd, int64_t (*xsh)[4], const float *a, float beta, const float *y0,
                          int alias)
{
  g_autoptr(GError) error = NULL;
  MexdTensor *ty = harness_view_tensor(be, dt, ndim, shape, y0, g_test_rand_int_range(0, 3));
  MexdTensor *tx[3] = {NULL, NULL, NULL};
  for (int k = 0; k < 3; k++)
    if (xd[k])
      tx[k] = k == alias
                  ? mexd_tensor_ref(ty)
                  : harness_view_tensor(be, dt, xnd[k], xsh[k], xd[k], g_test_rand_int_range(0, 3));
  gboolean ok = mexd_lincomb(ty, a[0], tx[0], a[1], tx[1], a[2], tx[2], beta, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  float *out = harness_read(ty);
  for (int k = 0; k < 3; k++)
    if (tx[k])
      mexd_tensor_unref(tx[k]);
  mexd_tensor_unref(ty);
  return out;
}

static void test_lincomb(const HarnessCase *hc)
{
  for (int iter = 0; iter < 24; iter++) {
    int64_t shape[4];
    int ndim = g_test_rand_int_range(1, 4);
    for (int i = 0; i < ndim; i++)
      shape[i] = harness_size(ndim == 1 ? 5000 : 60);
    int64_t n = harness_numel(ndim, shape);
    float *xd[3] = {NULL, NULL, NULL};
    int xnd[3] = {0, 0, 0};
    int64_t xsh[3][4];
    float a[3];
    /* alias: x_k is y itself (then x_k has y's shape and values) */
    int alias = g_test_rand_int_range(-1, 3);
    g_autofree float *y0 = harness_random(n, -2, 2, hc->dtype);
    if (iter % 5 == 0) /* beta = 0 must ignore NaN in y */
      for (int64_t i = 0; i < n; i += 3)
        y0[i] = NAN;
    float beta = iter % 5 == 0 ? 0.0f : (float)g_test_rand_double_range(-2, 2);
    if (alias >= 0 && iter % 5 == 0)
      alias = -1;
    for (int k = 0; k < 3; k++) {
      a[k] = (float)g_test_rand_double_range(-2, 2);
      if (k != alias && g_test_rand_int_range(0, 4) == 0)
        continue; /* an absent term */
      if (k == alias) {
        xnd[k] = ndim;
        for (int i = 0; i < ndim; i++)
          xsh[k][i] = shape[i];
        xd[k] = g_memdup2(y0, n * sizeof(float));
      } else {
        xnd[k] = suffix_of(ndim, shape, xsh[k]);
        xd[k] = harness_random(harness_numel(xnd[k], xsh[k]), -2, 2, hc->dtype);
      }
    }
    g_autofree double *ref = g_new(double, n);
    for (int64_t i = 0; i < n; i++) {
      double acc = 0;
      for (int k = 0; k < 3; k++)
        if (xd[k])
          acc += a[k] * (double)xd[k][i % harness_numel(xnd[k], xsh[k])];
      if (beta != 0.0f)
        acc += beta * (double)y0[i];
      ref[i] = acc;
    }
    g_autofree char *ss = harness_shape_str(ndim, shape);
    g_autofree char *what = g_strdup_printf("lincomb %s %s y %s beta %g alias %d", hc->spec,
                                            mexd_dtype_name(hc->dtype), ss, beta, alias);
    g_autofree float *out =
        run_lincomb(hc->be, hc->dtype, ndim, shape, xd, xnd, xsh, a, beta, y0, alias);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
    for (int k = 0; k < 3; k++)
      g_free(xd[k]);
  }
}

static void test_lincomb_errors(const HarnessCase *hc)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) y = mexd_tensor_new_2d(hc->be, hc->dtype, 4, 3, &error);
  g_autoptr(MexdTensor) bad = mexd_tensor_new_1d(hc->be, hc->dtype, 4, &error);
  g_assert_no_error(error);
  g_assert_false(mexd_lincomb(y, 1, bad, 0, NULL, 0, NULL, 0, &error));
  harness_assert_error(g_steal_pointer(&error), MEXD_ERROR_SHAPE, "lincomb x0 [4] vs y [4,3]");
}

/* ---- scale_eye ---- */

static void test_scale_eye(const HarnessCase *hc)
{
  for (int iter = 0; iter < 8; iter++) {
    int64_t B = harness_size(9), m = harness_size(iter % 2 ? 300 : 20);
    int64_t shape[3] = {B, m, m};
    int ndim = g_test_rand_bit() ? 3 : 2;
    const int64_t *sh = ndim == 3 ? shape : shape + 1;
    int64_t n = harness_numel(ndim, sh);
    g_autofree float *x = harness_random(n, -2, 2, hc->dtype);
    float a = (float)g_test_rand_double_range(-2, 2), b = (float)g_test_rand_double_range(-20, 20);
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdTensor) tx = harness_view_tensor(hc->be, hc->dtype, ndim, sh, x, 1);
    gboolean inplace = g_test_rand_bit();
    g_autoptr(MexdTensor) ty =
        inplace ? mexd_tensor_ref(tx) : mexd_tensor_new(hc->be, hc->dtype, ndim, sh, &error);
    g_assert_no_error(error);
    g_assert_true(mexd_scale_eye(ty, tx, a, b, &error));
    g_assert_no_error(error);
    g_autofree float *out = harness_read(ty);
    g_autofree double *ref = g_new(double, n);
    for (int64_t i = 0; i < n; i++)
      ref[i] = a * (double)x[i] + ((i / m) % m == i % m ? b : 0.0);
    g_autofree char *ss = harness_shape_str(ndim, sh);
    g_autofree char *what =
        g_strdup_printf("scale_eye %s %s %s", hc->spec, mexd_dtype_name(hc->dtype), ss);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) r = mexd_tensor_new_2d(hc->be, hc->dtype, 3, 4, &error);
  g_assert_false(mexd_scale_eye(r, r, 1, 1, &error));
  harness_assert_error(g_steal_pointer(&error), MEXD_ERROR_SHAPE, "scale_eye on [3,4]");
}

/* ---- abs_sum_max ---- */

static void test_abs_sum_max(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    int64_t B = harness_size(8), R = harness_size(300), C = harness_size(300);
    int64_t shape[3] = {B, R, C};
    int64_t n = B * R * C;
    g_autofree float *x = harness_random(n, -1, 1, hc->dtype);
    int axis = iter % 2 ? -1 : -2;
    double best = 0;
    for (int64_t b = 0; b < B; b++)
      for (int64_t l = 0; l < (axis == -1 ? R : C); l++) {
        double s = 0;
        for (int64_t j = 0; j < (axis == -1 ? C : R); j++)
          s += fabs(x[b * R * C + (axis == -1 ? l * C + j : j * C + l)]);
        best = MAX(best, s);
      }
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdTensor) tx = harness_view_tensor(hc->be, hc->dtype, 3, shape, x, iter % 3);
    g_autoptr(MexdTensor) ty = mexd_tensor_new_1d(hc->be, hc->dtype, 1, &error);
    g_assert_true(mexd_abs_sum_max(ty, tx, axis, &error));
    g_assert_no_error(error);
    g_autofree float *out = harness_read(ty);
    g_autofree char *what = g_strdup_printf("abs_sum_max %s %s [%" G_GINT64_FORMAT
                                            ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "] axis %d",
                                            hc->spec, mexd_dtype_name(hc->dtype), B, R, C, axis);
    /* f16 output rounds the sum itself */
    harness_assert_close_d(what, out, &best, 1, harness_thr(hc, NMSE_F32));
  }
  /* NaN propagates */
  float x[6] = {1, 2, NAN, 4, 5, 6};
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tx = harness_tensor(hc->be, hc->dtype, 2, (int64_t[]){2, 3}, x);
  g_autoptr(MexdTensor) ty = mexd_tensor_new_1d(hc->be, hc->dtype, 1, &error);
  g_assert_true(mexd_abs_sum_max(ty, tx, -1, &error));
  g_autofree float *out = harness_read(ty);
  g_assert_true(isnan(out[0]));
  g_assert_false(mexd_abs_sum_max(ty, tx, 0, &error));
  harness_assert_error(g_steal_pointer(&error), MEXD_ERROR_INVALID_ARGUMENT, "axis 0");
}

/* ---- route_keep ---- */

static void test_route_keep(const HarnessCase *hc)
{
  for (int iter = 0; iter < 8; iter++) {
    int64_t R = iter == 0 ? 1 : harness_size(iter % 2 ? 5000 : 300),
            E = g_test_rand_int_range(2, 5);
    int64_t n = R * E * 2;
    g_autofree float *p = g_new(float, n);
    for (int64_t i = 0; i < R * E; i++) {
      float p1 = (float)g_test_rand_double();
      if (g_test_rand_int_range(0, 10) == 0)
        p1 = 0.5f; /* ties are not kept */
      p[2 * i] = 1.0f - p1;
      p[2 * i + 1] = p1;
    }
    if (hc->dtype == MEXD_DTYPE_F16)
      for (int64_t i = 0; i < n; i++)
        p[i] = harness_f16_round(p[i]);
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdTensor) tp =
        harness_view_tensor(hc->be, hc->dtype, 3, (int64_t[]){R, E, 2}, p, 2);
    g_autoptr(MexdTensor) tg = mexd_tensor_new_2d(hc->be, hc->dtype, E, R, &error);
    g_autoptr(MexdTensor) tm = mexd_tensor_new_2d(hc->be, hc->dtype, E, R, &error);
    g_autoptr(MexdTensor) tc = mexd_tensor_new_1d(hc->be, MEXD_DTYPE_I32, E, &error);
    g_assert_true(mexd_route_keep(tg, tm, tc, tp, &error));
    g_assert_no_error(error);
    g_autofree float *g = harness_read(tg);
    g_autofree float *m = harness_read(tm);
    int32_t counts[4];
    g_assert_true(mexd_tensor_read(tc, counts, E * 4, &error));
    for (int64_t r = 0; r < E; r++) {
      int32_t kept = 0;
      for (int64_t i = 0; i < R; i++) {
        float p0 = p[(i * E + r) * 2], p1 = p[(i * E + r) * 2 + 1];
        g_assert_cmpfloat(g[r * R + i], ==, p1);
        if (p1 > p0) {
          kept++;
          g_assert_cmpfloat(m[r * R + i], ==, p1);
        } else {
          g_assert_true(isinf(m[r * R + i]) && m[r * R + i] < 0);
        }
      }
      g_assert_cmpint(counts[r], ==, kept);
    }
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tp = mexd_tensor_new_2d(hc->be, hc->dtype, 3, 2, &error);
  g_autoptr(MexdTensor) tg = mexd_tensor_new_2d(hc->be, hc->dtype, 1, 3, &error);
  g_autoptr(MexdTensor) tc = mexd_tensor_new_1d(hc->be, MEXD_DTYPE_I32, 1, &error);
  g_assert_false(mexd_route_keep(tg, tg, tc, tp, &error));
  harness_assert_error(g_steal_pointer(&error), MEXD_ERROR_SHAPE, "route_keep probs 2-D");
}

void register_mexd_tests(void)
{
  harness_add("lincomb", HARNESS_BOTH, test_lincomb);
  harness_add("lincomb-errors", HARNESS_F32, test_lincomb_errors);
  harness_add("scale_eye", HARNESS_BOTH, test_scale_eye);
  harness_add("abs_sum_max", HARNESS_BOTH, test_abs_sum_max);
  harness_add("route_keep", HARNESS_BOTH, test_route_keep);
}
