/* op-norm.c: layernorm and softmax_rows against naive double-precision references (cpu) and
 * against cpu (others): random shapes, in place, rows with a large mean, −inf and large logits,
 * views at an offset, a grid of more than 65535 rows, and the argument checks. */
#include "harness.h"

#include <math.h>
#include <string.h>

/* A random shape of 1..4 dimensions whose last is D and whose leading ones multiply to rows. */
static int random_dims(int64_t rows, int64_t D, int64_t shape[4])
{
  int ndim = g_test_rand_int_range(1, 5);
  if (ndim == 1 && rows > 1)
    ndim = 2;
  for (int i = 0; i < ndim - 1; i++)
    shape[i] = 1;
  shape[ndim - 1] = D;
  /* split rows over the leading dimensions: shape[0] takes what the others leave */
  int64_t left = rows;
  for (int i = ndim - 2; i > 0; i--) {
    int64_t f = 1;
    for (int64_t d = 2; d <= 7; d++)
      if (left % d == 0 && g_test_rand_bit()) {
        f = d;
        break;
      }
    shape[i] = f;
    left /= f;
  }
  if (ndim > 1)
    shape[0] = left;
  return ndim;
}

static char *describe_shape(const char *op, const HarnessCase *hc, int ndim, const int64_t *shape)
{
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s %s %s [", op, hc->spec, mexd_dtype_name(hc->dtype));
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

/* ---- layernorm ---- */

static void ref_layernorm(int64_t rows, int64_t D, const float *x, const float *gamma,
                          const float *beta, float eps, double *out)
{
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * D;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < D; i++)
      mean += xr[i];
    mean /= (double)D;
    for (int64_t i = 0; i < D; i++)
      var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    var /= (double)D;
    double rstd = 1.0 / sqrt(var + (double)eps);
    for (int64_t i = 0; i < D; i++)
      out[r * D + i] =
          ((double)xr[i] - mean) * rstd * (gamma ? gamma[i] : 1.0) + (beta ? beta[i] : 0.0);
  }
}

typedef struct {
  int ndim;
  int64_t shape[4];
  float eps;
  gboolean in_place; /* y is x */
  gboolean views;    /* x and y are row views at an offset into larger tensors */
} NormRun;

/* Copies `x` into a tensor for `r` on `be`; sets *y to the output tensor (x itself in place). */
static MexdTensor *norm_tensors(MexdBackend *be, MexdDType dt, const NormRun *r, const float *x,
                                MexdTensor **y)
{
  g_autoptr(GError) error = NULL;
  int64_t n = 1;
  for (int i = 0; i < r->ndim; i++)
    n *= r->shape[i];
  MexdTensor *tx;
  if (r->views) {
    /* [1 + n] flat storage holding a junk element, then x; views reshaped to the shape */
    int64_t big = 2 * n + 1;
    g_autofree float *buf = harness_random(big, -1, 1, dt);
    memcpy(buf + 1, x, sizeof(float) * (size_t)n);
    g_autoptr(MexdTensor) flat = harness_tensor(be, dt, 1, &big, buf);
    g_autoptr(MexdTensor) xv = mexd_tensor_rows(flat, 1, n, &error);
    g_assert_no_error(error);
    tx = mexd_tensor_reshape(xv, r->ndim, r->shape, &error);
    g_assert_no_error(error);
    if (r->in_place) {
      *y = mexd_tensor_ref(tx);
    } else {
      g_autoptr(MexdTensor) yv = mexd_tensor_rows(flat, n + 1, n, &error);
      g_assert_no_error(error);
      *y = mexd_tensor_reshape(yv, r->ndim, r->shape, &error);
      g_assert_no_error(error);
    }
  } else {
    tx = harness_tensor(be, dt, r->ndim, r->shape, x);
    if (r->in_place) {
      *y = mexd_tensor_ref(tx);
    } else {
      *y = mexd_tensor_new(be, dt, r->ndim, r->shape, &error);
      g_assert_no_error(error);
    }
  }
  return tx;
}

static float *run_layernorm(MexdBackend *be, MexdDType dt, const NormRun *r, const float *x,
                            const float *gamma, const float *beta)
{
  int64_t D = r->shape[r->ndim - 1];
  MexdTensor *ty = NULL;
  g_autoptr(MexdTensor) tx = norm_tensors(be, dt, r, x, &ty);
  g_autoptr(MexdTensor) tyy = ty;
  g_autoptr(MexdTensor) tg = gamma ? harness_tensor(be, dt, 1, &D, gamma) : NULL;
  g_autoptr(MexdTensor) tb = beta ? harness_tensor(be, dt, 1, &D, beta) : NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_layernorm(tyy, tx, tg, tb, r->eps, &error));
  g_assert_no_error(error);
  return harness_read(tyy);
}

/* Runs `r` on the case's backend and compares with the reference. */
static void check_layernorm(const HarnessCase *hc, const NormRun *r, const float *x,
                            const float *gamma, const float *beta)
{
  int64_t D = r->shape[r->ndim - 1], n = 1;
  for (int i = 0; i < r->ndim; i++)
    n *= r->shape[i];
  g_autofree char *shape = describe_shape("layernorm", hc, r->ndim, r->shape);
  g_autofree char *what =
      g_strdup_printf("%s eps %g gamma %d beta %d in-place %d views %d", shape, (double)r->eps,
                      gamma != NULL, beta != NULL, r->in_place, r->views);
  g_test_message("%s", what);
  g_autofree float *out = run_layernorm(hc->be, hc->dtype, r, x, gamma, beta);
  if (hc->be == hc->cpu) {
    g_autofree double *ref = g_new(double, n);
    ref_layernorm(n / D, D, x, gamma, beta, r->eps, ref);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  } else {
    NormRun rc = *r;
    rc.in_place = rc.views = FALSE;
    g_autofree float *ref = run_layernorm(hc->cpu, hc->dtype, &rc, x, gamma, beta);
    harness_assert_close(what, out, ref, n, harness_thr(hc, NMSE_F32));
  }
}

static void test_layernorm_random(const HarnessCase *hc)
{
  static const float eps_values[] = {1e-5f, 1e-6f, 1e-3f, 0.1f};
  for (int iter = 0; iter < 12; iter++) {
    int64_t D = harness_size(hc->be == hc->cpu ? 600 : 2000);
    int64_t rows = harness_size(MAX(1, 60000 / D));
    NormRun r = {0};
    r.ndim = random_dims(rows, D, r.shape);
    r.eps = eps_values[g_test_rand_int_range(0, G_N_ELEMENTS(eps_values))];
    r.in_place = g_test_rand_int_range(0, 3) == 0;
    r.views = g_test_rand_int_range(0, 4) == 0;
    int64_t n = rows * D;
    /* a per-case offset and scale, so rows are not all centred on 0 */
    float off = (float)g_test_rand_double_range(-20, 20);
    float sc = (float)g_test_rand_double_range(0.1, 5);
    g_autofree float *x = harness_random(n, off - sc, off + sc, hc->dtype);
    g_autofree float *gamma = harness_random(D, -2, 2, hc->dtype);
    g_autofree float *beta = harness_random(D, -1, 1, hc->dtype);
    check_layernorm(hc, &r, x, g_test_rand_bit() ? gamma : NULL, g_test_rand_bit() ? beta : NULL);
  }
}

/* Rows with a large mean against their spread (around 1000 ± 1), and long rows (D = 5000). */
static void test_layernorm_large_mean(const HarnessCase *hc)
{
  NormRun r = {.ndim = 2, .shape = {3, 5000}, .eps = 1e-5f};
  g_autofree float *x = harness_random(3 * 5000, 999, 1001, hc->dtype);
  g_autofree float *gamma = harness_random(5000, 0.5f, 1.5f, hc->dtype);
  check_layernorm(hc, &r, x, gamma, NULL);
  NormRun s = {.ndim = 3, .shape = {2, 5, 300}, .eps = 1e-6f, .in_place = TRUE};
  g_autofree float *x2 = harness_random(3000, -1001, -999, hc->dtype);
  check_layernorm(hc, &s, x2, NULL, NULL);
}

/* D = 1 and constant rows: the variance is 0, so y = beta exactly. */
static void test_layernorm_constant(const HarnessCase *hc)
{
  float x[12], beta[4] = {0.5f, -1.0f, 2.0f, 0.0f}, gamma[4] = {3.0f, 3.0f, -1.0f, 2.0f};
  for (int i = 0; i < 12; i++)
    x[i] = (float)(i % 3) * 7.0f - 4.0f;
  NormRun r1 = {.ndim = 2, .shape = {12, 1}, .eps = 1e-5f};
  g_autofree float *o1 = run_layernorm(hc->be, hc->dtype, &r1, x, gamma, beta);
  /* the shader's division by D need not be exact: allow a rounding's worth */
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat_with_epsilon(o1[i], beta[0], 1e-3);
  float c[12];
  for (int i = 0; i < 12; i++)
    c[i] = (float)(i / 4) * 10.0f - 3.0f; /* three rows of four equal values */
  NormRun r2 = {.ndim = 2, .shape = {3, 4}, .eps = 1e-5f};
  g_autofree float *o2 = run_layernorm(hc->be, hc->dtype, &r2, c, gamma, beta);
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat_with_epsilon(o2[i], beta[i % 4], 1e-3);
}

/* More rows than one dimension of workgroups holds (65535 on most devices). */
static void test_layernorm_grid(const HarnessCase *hc)
{
  NormRun r = {.ndim = 2, .shape = {70001, 3}, .eps = 1e-5f};
  g_autofree float *x = harness_random(70001 * 3, -2, 2, hc->dtype);
  g_autofree float *beta = harness_random(3, -1, 1, hc->dtype);
  check_layernorm(hc, &r, x, NULL, beta);
}

static void test_layernorm_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  GError *error = NULL;
  int64_t sh[2] = {4, 6}, D = 6, five = 5, big = 30, flat = 24;
  g_autoptr(MexdTensor) x = mexd_tensor_new_zeros(be, dt, 2, sh, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new(be, dt, 2, sh, NULL);
  g_autoptr(MexdTensor) gamma = mexd_tensor_new_zeros(be, dt, 1, &D, NULL);
  g_autoptr(MexdTensor) beta = mexd_tensor_new_zeros(be, dt, 1, &D, NULL);
  /* the valid calls succeed (y = x included), so each failure below is down to one change */
  g_assert_true(mexd_layernorm(y, x, gamma, beta, 1e-5f, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_layernorm(x, x, NULL, NULL, 1e-5f, &error));
  g_assert_no_error(error);

  g_assert_false(mexd_layernorm(NULL, x, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm y NULL");
  error = NULL;
  g_assert_false(mexd_layernorm(y, NULL, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm x NULL");

  g_autoptr(MexdTensor) xi = mexd_tensor_new(be, MEXD_DTYPE_I32, 2, sh, NULL);
  error = NULL;
  g_assert_false(mexd_layernorm(y, xi, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "layernorm i32 x");
  error = NULL;
  g_assert_false(mexd_layernorm(xi, x, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "layernorm i32 y");
  if (mexd_backend_has_f16(be)) {
    MexdDType other = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
    g_autoptr(MexdTensor) xo = mexd_tensor_new_zeros(be, other, 2, sh, NULL);
    g_autoptr(MexdTensor) go = mexd_tensor_new_zeros(be, other, 1, &D, NULL);
    error = NULL;
    g_assert_false(mexd_layernorm(y, xo, gamma, beta, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "layernorm mixed float x");
    error = NULL;
    g_assert_false(mexd_layernorm(y, x, go, beta, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "layernorm mixed float gamma");
    error = NULL;
    g_assert_false(mexd_layernorm(y, x, gamma, go, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "layernorm mixed float beta");
  }

  int64_t sh_bad[2] = {4, 5}, sh3[3] = {2, 2, 6};
  g_autoptr(MexdTensor) xb = mexd_tensor_new_zeros(be, dt, 2, sh_bad, NULL);
  g_autoptr(MexdTensor) x3 = mexd_tensor_new_zeros(be, dt, 3, sh3, NULL);
  g_autoptr(MexdTensor) g5 = mexd_tensor_new_zeros(be, dt, 1, &five, NULL);
  g_autoptr(MexdTensor) g2d = mexd_tensor_new_zeros(be, dt, 2, (int64_t[]){1, 6}, NULL);
  error = NULL;
  g_assert_false(mexd_layernorm(y, xb, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "layernorm x shape");
  error = NULL;
  g_assert_false(mexd_layernorm(y, x3, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "layernorm x rank");
  error = NULL;
  g_assert_false(mexd_layernorm(y, x, g5, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "layernorm gamma length");
  error = NULL;
  g_assert_false(mexd_layernorm(y, x, gamma, g2d, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "layernorm beta 2-D");

  const float bad_eps[] = {-1e-5f, NAN, INFINITY};
  for (guint i = 0; i < G_N_ELEMENTS(bad_eps); i++) {
    error = NULL;
    g_assert_false(mexd_layernorm(y, x, gamma, beta, bad_eps[i], &error));
    harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm bad eps");
  }

  /* partial overlaps: y one element past x in the same storage; gamma/beta inside y */
  g_autoptr(MexdTensor) store = mexd_tensor_new_zeros(be, dt, 1, &big, NULL);
  g_autoptr(MexdTensor) a1 = mexd_tensor_rows(store, 0, flat, NULL);
  g_autoptr(MexdTensor) b1 = mexd_tensor_rows(store, 1, flat, NULL);
  g_autoptr(MexdTensor) xa = mexd_tensor_reshape(a1, 2, sh, NULL);
  g_autoptr(MexdTensor) yb = mexd_tensor_reshape(b1, 2, sh, NULL);
  g_autoptr(MexdTensor) y1 = mexd_tensor_reshape(y, 1, &flat, NULL);
  g_autoptr(MexdTensor) gin = mexd_tensor_rows(y1, 6, 6, NULL);
  g_assert_nonnull(xa);
  g_assert_nonnull(yb);
  g_assert_nonnull(gin);
  error = NULL;
  g_assert_false(mexd_layernorm(yb, xa, gamma, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm y partly over x");
  error = NULL;
  g_assert_false(mexd_layernorm(y, x, gin, beta, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm y over gamma");
  error = NULL;
  g_assert_false(mexd_layernorm(y, x, gamma, gin, 1e-5f, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "layernorm y over beta");

  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) xc = mexd_tensor_new_zeros(hc->cpu, dt, 2, sh, NULL);
    g_autoptr(MexdTensor) gc = mexd_tensor_new_zeros(hc->cpu, dt, 1, &D, NULL);
    error = NULL;
    g_assert_false(mexd_layernorm(y, xc, gamma, beta, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "layernorm x on another backend");
    error = NULL;
    g_assert_false(mexd_layernorm(y, x, gc, beta, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "layernorm gamma on another backend");
    error = NULL;
    g_assert_false(mexd_layernorm(y, x, gamma, gc, 1e-5f, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "layernorm beta on another backend");
  }
}

/* ---- softmax ---- */

/* The reference; a row of all −inf gives zeros (softmax.c's documented choice). */
static void ref_softmax(int64_t rows, int64_t D, const float *x, double *out)
{
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * D;
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < D; i++)
      m = fmax(m, xr[i]);
    for (int64_t i = 0; i < D; i++)
      s += m == -INFINITY ? 0.0 : exp((double)xr[i] - m);
    for (int64_t i = 0; i < D; i++)
      out[r * D + i] = m == -INFINITY ? 0.0 : exp((double)xr[i] - m) / s;
  }
}

static float *run_softmax(MexdBackend *be, MexdDType dt, const NormRun *r, const float *x)
{
  MexdTensor *ty = NULL;
  g_autoptr(MexdTensor) tx = norm_tensors(be, dt, r, x, &ty);
  g_autoptr(MexdTensor) tyy = ty;
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_softmax_rows(tyy, tx, &error));
  g_assert_no_error(error);
  return harness_read(tyy);
}

static void check_softmax(const HarnessCase *hc, const NormRun *r, const float *x, const char *note)
{
  int64_t D = r->shape[r->ndim - 1], n = 1;
  for (int i = 0; i < r->ndim; i++)
    n *= r->shape[i];
  g_autofree char *shape = describe_shape("softmax_rows", hc, r->ndim, r->shape);
  g_autofree char *what =
      g_strdup_printf("%s %s in-place %d views %d", shape, note, r->in_place, r->views);
  g_test_message("%s", what);
  g_autofree float *out = run_softmax(hc->be, hc->dtype, r, x);
  if (hc->be == hc->cpu) {
    g_autofree double *ref = g_new(double, n);
    ref_softmax(n / D, D, x, ref);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  } else {
    NormRun rc = *r;
    rc.in_place = rc.views = FALSE;
    g_autofree float *ref = run_softmax(hc->cpu, hc->dtype, &rc, x);
    harness_assert_close(what, out, ref, n, harness_thr(hc, NMSE_F32));
  }
}

static void test_softmax_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    int64_t D = harness_size(hc->be == hc->cpu ? 600 : 2000);
    int64_t rows = harness_size(MAX(1, 60000 / D));
    NormRun r = {0};
    r.ndim = random_dims(rows, D, r.shape);
    r.in_place = g_test_rand_int_range(0, 3) == 0;
    r.views = g_test_rand_int_range(0, 4) == 0;
    int64_t n = rows * D;
    /* logits of spread up to ±2000 (exp overflows without the max subtraction) */
    float sc = g_test_rand_bit() ? 4.0f : (float)g_test_rand_double_range(1, 2000);
    float off = (float)g_test_rand_double_range(-sc, sc);
    g_autofree float *x = harness_random(n, off - sc, off + sc, hc->dtype);
    /* some −inf entries (masking), never a whole row */
    gboolean masked = D > 1 && g_test_rand_bit();
    if (masked)
      for (int64_t i = 0; i < n; i++)
        if (i % D != 0 && g_test_rand_int_range(0, 4) == 0)
          x[i] = -INFINITY;
    g_autofree char *note = g_strdup_printf("scale %g masked %d", (double)sc, masked);
    check_softmax(hc, &r, x, note);
  }
}

/* Hand-made rows: large logits, −inf entries, a row of all −inf (zeros), D = 1 (ones), a long
 * row; checked against the reference in double on every backend. */
static void test_softmax_special(const HarnessCase *hc)
{
  const float ninf = -INFINITY;
  const float rows[][6] = {
      {1000, 1000, 999, -1000, 0, 1000},
      {ninf, 2, ninf, 1, ninf, ninf},
      {ninf, ninf, ninf, ninf, ninf, ninf},
      {-1000, -1001, -1002, -999, -1000, -1000},
      {88, 89, 90, 91, -88, 0},
      {0, 0, 0, 0, 0, 0},
  };
  int64_t n = G_N_ELEMENTS(rows) * 6;
  NormRun r = {.ndim = 2, .shape = {G_N_ELEMENTS(rows), 6}};
  g_autofree float *out = run_softmax(hc->be, hc->dtype, &r, &rows[0][0]);
  g_autofree double *ref = g_new(double, n);
  ref_softmax(G_N_ELEMENTS(rows), 6, &rows[0][0], ref);
  for (int64_t i = 0; i < n; i++) /* finite everywhere, the all −inf row included */
    g_assert_true(isfinite(out[i]));
  for (int64_t i = 12; i < 18; i++)
    g_assert_cmpfloat(out[i], ==, 0.0f);
  harness_assert_close_d("softmax special rows", out, ref, n, harness_thr(hc, NMSE_F32));

  float one[5] = {-3, 0, 1000, ninf, 7};
  NormRun r1 = {.ndim = 2, .shape = {5, 1}};
  g_autofree float *o1 = run_softmax(hc->be, hc->dtype, &r1, one);
  const float want1[5] = {1, 1, 1, 0, 1};
  for (int i = 0; i < 5; i++)
    g_assert_cmpfloat_with_epsilon(o1[i], want1[i], 1e-6);

  NormRun rl = {.ndim = 1, .shape = {5000}, .in_place = TRUE};
  g_autofree float *xl = harness_random(5000, -30, 30, hc->dtype);
  check_softmax(hc, &rl, xl, "long row");
}

static void test_softmax_grid(const HarnessCase *hc)
{
  NormRun r = {.ndim = 3, .shape = {10, 7001, 2}};
  g_autofree float *x = harness_random(140020, -5, 5, hc->dtype);
  check_softmax(hc, &r, x, "grid");
}

static void test_softmax_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  GError *error = NULL;
  int64_t sh[2] = {4, 6}, big = 30, flat = 24;
  g_autoptr(MexdTensor) x = mexd_tensor_new_zeros(be, dt, 2, sh, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new(be, dt, 2, sh, NULL);
  g_assert_true(mexd_softmax_rows(y, x, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_softmax_rows(x, x, &error));
  g_assert_no_error(error);

  g_assert_false(mexd_softmax_rows(NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "softmax y NULL");
  error = NULL;
  g_assert_false(mexd_softmax_rows(y, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "softmax x NULL");

  g_autoptr(MexdTensor) xi = mexd_tensor_new(be, MEXD_DTYPE_I32, 2, sh, NULL);
  error = NULL;
  g_assert_false(mexd_softmax_rows(y, xi, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "softmax i32 x");
  error = NULL;
  g_assert_false(mexd_softmax_rows(xi, x, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "softmax i32 y");
  if (mexd_backend_has_f16(be)) {
    MexdDType other = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
    g_autoptr(MexdTensor) xo = mexd_tensor_new_zeros(be, other, 2, sh, NULL);
    error = NULL;
    g_assert_false(mexd_softmax_rows(y, xo, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "softmax mixed float x");
  }

  int64_t sh_bad[2] = {6, 4}, sh3[3] = {2, 2, 6};
  g_autoptr(MexdTensor) xb = mexd_tensor_new_zeros(be, dt, 2, sh_bad, NULL);
  g_autoptr(MexdTensor) x3 = mexd_tensor_new_zeros(be, dt, 3, sh3, NULL);
  error = NULL;
  g_assert_false(mexd_softmax_rows(y, xb, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "softmax x shape");
  error = NULL;
  g_assert_false(mexd_softmax_rows(y, x3, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "softmax x rank");

  g_autoptr(MexdTensor) store = mexd_tensor_new_zeros(be, dt, 1, &big, NULL);
  g_autoptr(MexdTensor) a1 = mexd_tensor_rows(store, 0, flat, NULL);
  g_autoptr(MexdTensor) b1 = mexd_tensor_rows(store, 6, flat, NULL);
  g_autoptr(MexdTensor) xa = mexd_tensor_reshape(a1, 2, sh, NULL);
  g_autoptr(MexdTensor) yb = mexd_tensor_reshape(b1, 2, sh, NULL);
  g_assert_nonnull(xa);
  g_assert_nonnull(yb);
  error = NULL;
  g_assert_false(mexd_softmax_rows(yb, xa, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "softmax y partly over x");

  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) xc = mexd_tensor_new_zeros(hc->cpu, dt, 2, sh, NULL);
    g_autoptr(MexdTensor) yc = mexd_tensor_new(hc->cpu, dt, 2, sh, NULL);
    error = NULL;
    g_assert_false(mexd_softmax_rows(y, xc, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "softmax x on another backend");
    error = NULL;
    g_assert_false(mexd_softmax_rows(yc, x, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "softmax y on another backend");
  }
}

void register_norm_tests(void)
{
  harness_add("layernorm/random", HARNESS_BOTH, test_layernorm_random);
  harness_add("layernorm/large-mean", HARNESS_BOTH, test_layernorm_large_mean);
  harness_add("layernorm/constant", HARNESS_BOTH, test_layernorm_constant);
  harness_add("layernorm/grid", HARNESS_F32, test_layernorm_grid);
  harness_add("layernorm/errors", HARNESS_BOTH, test_layernorm_errors);
  harness_add("softmax/random", HARNESS_BOTH, test_softmax_random);
  harness_add("softmax/special", HARNESS_BOTH, test_softmax_special);
  harness_add("softmax/grid", HARNESS_F32, test_softmax_grid);
  harness_add("softmax/errors", HARNESS_BOTH, test_softmax_errors);
}
