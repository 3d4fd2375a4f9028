/* op-index.c: tests of the indexing ops, gather_rows and topk.
 *
 * Both ops only move values, so every comparison is exact (bit for bit; NaN matches NaN):
 * - cpu against naive references written here (a row-copy loop; qsort by the documented order);
 * - other backends against the cpu backend, with identical index lists.
 * Inputs include views at odd element offsets (the shaders' binding offsets), many ties, ±0, ±inf
 * and NaN.  The error tests cover every argument check, and the out-of-range gather index on both
 * the cpu (an error at once, nothing written) and vulkan (an error at the next sync, zero rows,
 * later syncs clean). */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static gboolean same_float(float a, float b)
{
  if (isnan(a) || isnan(b))
    return isnan(a) && isnan(b);
  uint32_t ua, ub;
  memcpy(&ua, &a, 4);
  memcpy(&ub, &b, 4);
  return ua == ub; /* −0 and +0 differ: the ops copy values, they do not compute them */
}

static void assert_same_floats(const char *what, const float *out, const float *ref, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    if (!same_float(out[i], ref[i]))
      g_error("%s: element %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " is %.9g, want %.9g", what,
              i, n, out[i], ref[i]);
}

static void assert_same_ints(const char *what, const int32_t *out, const int32_t *ref, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    if (out[i] != ref[i])
      g_error("%s: index %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " is %d, want %d", what, i, n,
              out[i], ref[i]);
}

static int32_t *read_i32(MexdTensor *t)
{
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_backend_sync(t->backend, &error));
  g_assert_no_error(error);
  int32_t *v = g_new(int32_t, mexd_tensor_numel(t));
  g_assert_true(mexd_tensor_read(t, v, mexd_tensor_nbytes(t), &error));
  g_assert_no_error(error);
  return v;
}

/* A tensor of the given shape holding `data`; with `view`, a view at an odd element offset into a
 * larger tensor (rows 1.. of a tensor with one more row), so the op sees a nonzero offset. */
static MexdTensor *make_tensor(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape,
                               const void *data, gboolean view)
{
  if (!view) {
    if (dt == MEXD_DTYPE_I32)
      return harness_tensor_i32(be, ndim, shape, data);
    return harness_tensor(be, dt, ndim, shape, data);
  }
  int64_t big[MEXD_MAX_DIMS];
  memcpy(big, shape, sizeof(int64_t) * (size_t)ndim);
  big[0] += 1;
  int64_t row = 1;
  for (int i = 1; i < ndim; i++)
    row *= shape[i];
  int64_t n = row * shape[0];
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) parent = NULL;
  if (dt == MEXD_DTYPE_I32) {
    g_autofree int32_t *buf = g_new0(int32_t, n + row);
    memcpy(buf + row, data, sizeof(int32_t) * (size_t)n);
    parent = harness_tensor_i32(be, ndim, big, buf);
  } else {
    g_autofree float *buf = g_new0(float, n + row);
    memcpy(buf + row, data, sizeof(float) * (size_t)n);
    parent = harness_tensor(be, dt, ndim, big, buf);
  }
  MexdTensor *t = mexd_tensor_rows(parent, 1, shape[0], &error);
  g_assert_no_error(error);
  return t;
}

/* Values for ties and specials: a small set, rounded to the dtype.  `kind`: 0 a few integers
 * (many ties, ±0), 1 the same with ±inf and NaN, 2 uniform, 3 all equal, 4 uniform with some
 * specials. */
static float *special_values(int64_t n, int kind, MexdDType dt)
{
  static const float few[] = {-2.0f, -1.0f, -0.0f, 0.0f, 0.5f, 1.0f, 3.0f};
  static const float specials[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f};
  float *v = harness_random(n, -100, 100, dt);
  float c = (float)g_test_rand_int_range(-3, 4);
  for (int64_t i = 0; i < n; i++) {
    switch (kind) {
    case 0: v[i] = few[g_test_rand_int_range(0, G_N_ELEMENTS(few))]; break;
    case 1:
      v[i] = g_test_rand_int_range(0, 4) == 0
                 ? specials[g_test_rand_int_range(0, G_N_ELEMENTS(specials))]
                 : few[g_test_rand_int_range(0, G_N_ELEMENTS(few))];
      break;
    case 3: v[i] = c; break;
    case 4:
      if (g_test_rand_int_range(0, 10) == 0)
        v[i] = specials[g_test_rand_int_range(0, G_N_ELEMENTS(specials))];
      break;
    default: break;
    }
  }
  return v;
}

/* ---- gather_rows ---- */

static void ref_gather(const float *x, int64_t N, const int32_t *idx, int64_t K, float *y)
{
  for (int64_t i = 0; i < K; i++)
    for (int64_t j = 0; j < N; j++)
      y[i * N + j] = x[idx[i] * N + j];
}

/* Runs gather_rows on `be` (views when `view`) and returns y as f32. */
static float *run_gather(MexdBackend *be, MexdDType dt, int64_t M, int64_t N, int64_t K,
                         const float *x, const int32_t *idx, gboolean view)
{
  int64_t xs[2] = {M, N}, is[1] = {K}, ys[2] = {K, N};
  g_autofree float *y0 = g_new0(float, K *N);
  g_autoptr(MexdTensor) tx = make_tensor(be, dt, 2, xs, x, view);
  g_autoptr(MexdTensor) ti = make_tensor(be, MEXD_DTYPE_I32, 1, is, idx, view);
  g_autoptr(MexdTensor) ty = make_tensor(be, dt, 2, ys, y0, view);
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_gather_rows(ty, tx, ti, &error));
  g_assert_no_error(error);
  return harness_read(ty);
}

static void test_gather_random(const HarnessCase *hc)
{
  static const int64_t edges[] = {1, 7, 255, 256, 257, 1023, 1024, 1025};
  for (int iter = 0; iter < 10; iter++) {
    int64_t M = harness_size(300), N = harness_size(100), K = harness_size(300);
    if (iter < 3) { /* an edge for each of K, M, N in turn, the others small */
      int64_t e = edges[g_test_rand_int_range(0, G_N_ELEMENTS(edges))];
      K = iter == 0 ? e : K;
      M = iter == 1 ? e : M;
      N = iter == 2 ? e : MIN(N, 9);
    }
    gboolean view = g_test_rand_bit();
    g_autofree float *x = special_values(M * N, g_test_rand_bit() ? 2 : 4, hc->dtype);
    g_autofree int32_t *idx = g_new(int32_t, K);
    for (int64_t i = 0; i < K; i++)
      idx[i] = g_test_rand_int_range(0, (gint32)M);
    g_autofree char *what =
        g_strdup_printf("gather_rows %s M %" G_GINT64_FORMAT " N %" G_GINT64_FORMAT
                        " K %" G_GINT64_FORMAT " view %d",
                        hc->spec, M, N, K, view);
    g_autofree float *out = run_gather(hc->be, hc->dtype, M, N, K, x, idx, view);
    g_autofree float *ref = NULL;
    if (hc->be == hc->cpu) {
      ref = g_new(float, K *N);
      ref_gather(x, N, idx, K, ref);
    } else {
      ref = run_gather(hc->cpu, hc->dtype, M, N, K, x, idx, FALSE);
    }
    assert_same_floats(what, out, ref, K * N);
  }
}

/* More elements than 65535 workgroups of 256 hold: the grid spreads over x and y
 * (mexd_vk_grid); every element must still be written once. */
static void test_gather_big_grid(const HarnessCase *hc)
{
  if (hc->be == hc->cpu)
    return; /* the grid is a vulkan matter; gather/random covers the cpu kernel */
  const int64_t M = 7, N = 256, K = 65601; /* 65601 groups: a 32801 x 2 grid, one spare */
  g_autofree float *x = harness_random(M * N, -1, 1, hc->dtype);
  g_autofree int32_t *idx = g_new(int32_t, K);
  for (int64_t i = 0; i < K; i++)
    idx[i] = g_test_rand_int_range(0, (gint32)M);
  int64_t xs[2] = {M, N}, is[1] = {K}, ys[2] = {K, N};
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tx = make_tensor(hc->be, hc->dtype, 2, xs, x, TRUE);
  g_autoptr(MexdTensor) ti = harness_tensor_i32(hc->be, 1, is, idx);
  g_autoptr(MexdTensor) ty = mexd_tensor_new(hc->be, hc->dtype, 2, ys, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_gather_rows(ty, tx, ti, &error));
  g_assert_no_error(error);
  g_autofree float *out = harness_read(ty);
  g_autofree float *ref = g_new(float, K *N);
  ref_gather(x, N, idx, K, ref);
  assert_same_floats("gather_rows big grid", out, ref, K * N);
}

/* An index outside [0,M): cpu fails at once and writes nothing; vulkan records, zeroes the row
 * and fails at the next sync; the sync after that succeeds. */
static void test_gather_bad_index(const HarnessCase *hc)
{
  const int64_t M = 5, N = 3, K = 4;
  float x[15], y0[12];
  for (int i = 0; i < 15; i++)
    x[i] = (float)(i + 1);
  for (int i = 0; i < 12; i++)
    y0[i] = 7.0f;
  int64_t xs[2] = {M, N}, is[1] = {K}, ys[2] = {K, N};
  static const int32_t bad[2][4] = {{2, 5, 0, 1}, {2, 0, 4, -1}};
  for (int c = 0; c < 2; c++) {
    g_autoptr(MexdTensor) tx = harness_tensor(hc->be, hc->dtype, 2, xs, x);
    g_autoptr(MexdTensor) ti = harness_tensor_i32(hc->be, 1, is, bad[c]);
    g_autoptr(MexdTensor) ty = harness_tensor(hc->be, hc->dtype, 2, ys, y0);
    GError *error = NULL;
    if (hc->be == hc->cpu) {
      g_assert_false(mexd_gather_rows(ty, tx, ti, &error));
      g_assert_nonnull(error);
      g_autofree char *want = g_strdup_printf("idx[%d] = %d", c == 0 ? 1 : 3, c == 0 ? 5 : -1);
      if (!strstr(error->message, want))
        g_error("gather_rows bad index: \"%s\" does not name %s", error->message, want);
      harness_assert_error(error, MEXD_ERROR_INDEX, "gather_rows bad index (cpu)");
      g_autofree float *out = harness_read(ty);
      assert_same_floats("gather_rows bad index leaves y alone", out, y0, K * N);
      continue;
    }
    g_assert_true(mexd_gather_rows(ty, tx, ti, &error));
    g_assert_no_error(error);
    g_assert_false(mexd_backend_sync(hc->be, &error));
    harness_assert_error(error, MEXD_ERROR_INDEX, "gather_rows bad index (sync)");
    error = NULL;
    g_autofree float *out = harness_read(ty); /* the status was cleared: this sync succeeds */
    float ref[12];
    for (int i = 0; i < K; i++)
      for (int j = 0; j < N; j++)
        ref[i * N + j] = bad[c][i] >= 0 && bad[c][i] < M ? x[bad[c][i] * N + j] : 0.0f;
    assert_same_floats("gather_rows bad index: good rows copied, bad rows zero", out, ref, K * N);
    /* a good gather afterwards runs and syncs cleanly */
    static const int32_t good[4] = {4, 3, 2, 1};
    g_autoptr(MexdTensor) tg = harness_tensor_i32(hc->be, 1, is, good);
    g_assert_true(mexd_gather_rows(ty, tx, tg, &error));
    g_assert_no_error(error);
    g_assert_true(mexd_backend_sync(hc->be, &error));
    g_assert_no_error(error);
    g_autofree float *out2 = harness_read(ty);
    ref_gather(x, N, good, K, ref);
    assert_same_floats("gather_rows after a bad index", out2, ref, K * N);
  }
}

static void test_gather_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType other_dt = hc->dtype == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new_2d(be, hc->dtype, 5, 3, NULL);
  g_autoptr(MexdTensor) idx = mexd_tensor_new_zeros(be, MEXD_DTYPE_I32, 1, (int64_t[]){4}, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new_2d(be, hc->dtype, 4, 3, NULL);
  g_autoptr(MexdTensor) idx_f = mexd_tensor_new_1d(be, hc->dtype, 4, NULL);
  g_autoptr(MexdTensor) idx_2d = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 4, 1, NULL);
  g_autoptr(MexdTensor) x_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 5, 3, NULL);
  g_autoptr(MexdTensor) y_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 4, 3, NULL);
  g_autoptr(MexdTensor) x_1d = mexd_tensor_new_1d(be, hc->dtype, 15, NULL);
  g_autoptr(MexdTensor) y_rows = mexd_tensor_new_2d(be, hc->dtype, 5, 3, NULL);
  g_autoptr(MexdTensor) y_cols = mexd_tensor_new_2d(be, hc->dtype, 4, 2, NULL);
  g_autoptr(MexdTensor) x_mixed =
      mexd_backend_has_f16(be) ? mexd_tensor_new_2d(be, other_dt, 5, 3, NULL) : NULL;
  g_autoptr(MexdTensor) x_big = mexd_tensor_new_2d(be, hc->dtype, 8, 3, NULL);
  g_autoptr(MexdTensor) y_alias = mexd_tensor_rows(x_big, 2, 4, NULL);
  g_autoptr(MexdTensor) x_other =
      mexd_tensor_new_2d(be == hc->cpu ? be : hc->cpu, hc->dtype, 5, 3, NULL);
  g_autoptr(MexdTensor) idx_other =
      mexd_tensor_new_zeros(be == hc->cpu ? be : hc->cpu, MEXD_DTYPE_I32, 1, (int64_t[]){4}, NULL);
  g_assert_nonnull(x_i32);
  g_assert_nonnull(y_alias);

  g_assert_false(mexd_gather_rows(NULL, x, idx, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gather_rows y NULL");
  error = NULL;
  g_assert_false(mexd_gather_rows(y, NULL, idx, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gather_rows x NULL");
  error = NULL;
  g_assert_false(mexd_gather_rows(y, x, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gather_rows idx NULL");
  error = NULL;
  g_assert_false(mexd_gather_rows(y, x, idx_f, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "gather_rows float idx");
  error = NULL;
  g_assert_false(mexd_gather_rows(y, x_i32, idx, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "gather_rows i32 x");
  error = NULL;
  g_assert_false(mexd_gather_rows(y_i32, x_i32, idx, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "gather_rows i32 y");
  if (x_mixed) {
    error = NULL;
    g_assert_false(mexd_gather_rows(y, x_mixed, idx, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "gather_rows mixed f32/f16");
  }
  error = NULL;
  g_assert_false(mexd_gather_rows(y, x_1d, idx, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gather_rows 1-D x");
  error = NULL;
  g_assert_false(mexd_gather_rows(y, x, idx_2d, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gather_rows 2-D idx");
  error = NULL;
  g_assert_false(mexd_gather_rows(y_rows, x, idx, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gather_rows y rows != K");
  error = NULL;
  g_assert_false(mexd_gather_rows(y_cols, x, idx, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gather_rows y cols != N");
  error = NULL;
  g_assert_false(mexd_gather_rows(y_alias, x_big, idx, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gather_rows y overlaps x");
  if (be != hc->cpu) {
    error = NULL;
    g_assert_false(mexd_gather_rows(y, x_other, idx, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "gather_rows x on another backend");
    error = NULL;
    g_assert_false(mexd_gather_rows(y, x, idx_other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "gather_rows idx on another backend");
  }
  /* nothing above may have recorded work that fails later */
  error = NULL;
  g_assert_true(mexd_backend_sync(be, &error));
  g_assert_no_error(error);
}

/* ---- topk ---- */

static const float *ref_x; /* for ref_cmp (qsort has no user data) */

/* The documented order: larger first, NaN last, ties (and NaNs) by ascending index. */
static int ref_cmp(const void *pa, const void *pb)
{
  int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
  float va = ref_x[a], vb = ref_x[b];
  gboolean na = isnan(va), nb = isnan(vb);
  if (na != nb)
    return na ? 1 : -1;
  if (!na && va != vb)
    return va > vb ? -1 : 1;
  return (a > b) - (a < b);
}

static int32_t *ref_topk(const float *x, int64_t n)
{
  int32_t *order = g_new(int32_t, n);
  for (int64_t i = 0; i < n; i++)
    order[i] = (int32_t)i;
  ref_x = x;
  qsort(order, (size_t)n, sizeof(int32_t), ref_cmp);
  ref_x = NULL;
  return order;
}

/* Runs topk on `be`; returns the indices, and the values in *vals when `with_values`. */
static int32_t *run_topk(MexdBackend *be, MexdDType dt, int64_t n, int64_t k, const float *x,
                         gboolean with_values, gboolean view, float **vals)
{
  int64_t xs[1] = {n}, ks[1] = {k};
  g_autofree float *v0 = g_new0(float, k);
  g_autofree int32_t *i0 = g_new0(int32_t, k);
  g_autoptr(MexdTensor) tx = make_tensor(be, dt, 1, xs, x, view);
  g_autoptr(MexdTensor) ti = make_tensor(be, MEXD_DTYPE_I32, 1, ks, i0, view);
  g_autoptr(MexdTensor) tv = with_values ? make_tensor(be, dt, 1, ks, v0, view) : NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_topk(tv, ti, tx, &error));
  g_assert_no_error(error);
  *vals = with_values ? harness_read(tv) : NULL;
  return read_i32(ti);
}

/* One topk on the case's backend, checked against the reference (cpu) or the cpu backend. */
static void check_topk(const HarnessCase *hc, const char *label, const float *x, int64_t n,
                       int64_t k, gboolean with_values, gboolean view)
{
  if (k < 1 || k > n)
    g_error("check_topk: bad k %" G_GINT64_FORMAT, k);
  g_autofree char *what =
      g_strdup_printf("topk %s %s n %" G_GINT64_FORMAT " k %" G_GINT64_FORMAT " values %d view %d",
                      hc->spec, label, n, k, with_values, view);
  float *vals_raw = NULL;
  g_autofree int32_t *out = run_topk(hc->be, hc->dtype, n, k, x, with_values, view, &vals_raw);
  g_autofree float *vals = vals_raw;
  g_autofree int32_t *ref = NULL;
  if (hc->be == hc->cpu) {
    ref = ref_topk(x, n);
  } else {
    float *unused = NULL;
    ref = run_topk(hc->cpu, hc->dtype, n, k, x, FALSE, FALSE, &unused);
  }
  assert_same_ints(what, out, ref, k);
  if (with_values) {
    g_autofree float *want = g_new(float, k);
    for (int64_t i = 0; i < k; i++)
      want[i] = x[ref[i]];
    assert_same_floats(what, vals, want, k);
  }
}

static int64_t random_k(int64_t n)
{
  switch (g_test_rand_int_range(0, 4)) {
  case 0: return 1;
  case 1: return n;
  default: return g_test_rand_int_range(1, (gint32)n + 1);
  }
}

static void test_topk_random(const HarnessCase *hc)
{
  /* around powers of two, and the vulkan kernel's shared-memory block (2048) and its multiples */
  static const int64_t edges[] = {1, 7, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049, 8193};
  static const char *kinds[] = {"ties", "ties+inf+nan", "uniform", "all-equal", "uniform+specials"};
  for (int iter = 0; iter < (int)G_N_ELEMENTS(edges) + 8; iter++) {
    int64_t n = iter < (int)G_N_ELEMENTS(edges) ? edges[iter] : harness_size(5000);
    int64_t k = random_k(n);
    int kind = g_test_rand_int_range(0, G_N_ELEMENTS(kinds));
    g_autofree float *x = special_values(n, kind, hc->dtype);
    check_topk(hc, kinds[kind], x, n, k, g_test_rand_int_range(0, 4) != 0, g_test_rand_bit());
  }
}

/* Fixed inputs: every special value in every position class. */
static void test_topk_special(const HarnessCase *hc)
{
  /* n = 1 */
  float one[1] = {NAN};
  check_topk(hc, "n=1 NaN", one, 1, 1, TRUE, FALSE);
  one[0] = -INFINITY;
  check_topk(hc, "n=1 -inf", one, 1, 1, TRUE, TRUE);
  /* ±inf, NaN, ±0, subnormals (f16 subnormals too), repeated, k = n */
  float mix[] = {NAN,      1.0f,      -INFINITY, 0.0f,   -0.0f,    INFINITY,  NAN,
                 1.0f,     -1.0f,     1e-6f,     -1e-6f, 1e-40f,   -1e-40f,   -0.0f,
                 INFINITY, -INFINITY, 6e-8f,     NAN,    65504.0f, -65504.0f, 3.0f};
  int64_t n = G_N_ELEMENTS(mix);
  for (int64_t i = 0; i < n; i++)
    if (hc->dtype == MEXD_DTYPE_F16)
      mix[i] = harness_f16_round(mix[i]);
  for (int64_t k = 1; k <= n; k += 4)
    check_topk(hc, "specials", mix, n, k, TRUE, k % 2 == 1);
  check_topk(hc, "specials", mix, n, n, TRUE, FALSE);
  /* all NaN, all equal, all -inf, alternating ±0 */
  const int64_t m = 600;
  g_autofree float *x = g_new(float, m);
  for (int c = 0; c < 4; c++) {
    for (int64_t i = 0; i < m; i++)
      x[i] = c == 0 ? NAN : c == 1 ? 2.5f : c == 2 ? -INFINITY : (i % 2 ? -0.0f : 0.0f);
    check_topk(hc, "uniform specials", x, m, c == 1 ? 77 : m, TRUE, FALSE);
  }
}

/* n around 100,000 (the patches of a slide); ties and some NaN / inf. */
static void test_topk_large(const HarnessCase *hc)
{
  const int64_t n = 100003;
  g_autofree float *x = harness_random(n, -1, 1, hc->dtype);
  for (int64_t i = 0; i < n; i++) {
    int r = g_test_rand_int_range(0, 1000);
    if (r < 500)
      x[i] = (float)g_test_rand_int_range(-50, 50) / 8.0f; /* many ties */
    else if (r < 505)
      x[i] = NAN;
    else if (r < 508)
      x[i] = r % 2 ? INFINITY : -INFINITY;
  }
  check_topk(hc, "large", x, n, g_test_rand_int_range(1, 2000), TRUE, TRUE);
  check_topk(hc, "large", x, n, n, FALSE, FALSE);
}

static void test_topk_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType other_dt = hc->dtype == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new_zeros(be, hc->dtype, 1, (int64_t[]){10}, NULL);
  g_autoptr(MexdTensor) ind = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 3, NULL);
  g_autoptr(MexdTensor) val = mexd_tensor_new_1d(be, hc->dtype, 3, NULL);
  g_autoptr(MexdTensor) x_i32 = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 10, NULL);
  g_autoptr(MexdTensor) x_2d = mexd_tensor_new_2d(be, hc->dtype, 2, 5, NULL);
  g_autoptr(MexdTensor) ind_f = mexd_tensor_new_1d(be, hc->dtype, 3, NULL);
  g_autoptr(MexdTensor) ind_2d = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 1, NULL);
  g_autoptr(MexdTensor) ind_big = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 11, NULL);
  g_autoptr(MexdTensor) val_i32 = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 3, NULL);
  g_autoptr(MexdTensor) val_4 = mexd_tensor_new_1d(be, hc->dtype, 4, NULL);
  g_autoptr(MexdTensor) val_mixed =
      mexd_backend_has_f16(be) ? mexd_tensor_new_1d(be, other_dt, 3, NULL) : NULL;
  g_autoptr(MexdTensor) val_alias = mexd_tensor_rows(x, 2, 3, NULL);
  g_autoptr(MexdTensor) x_other =
      mexd_tensor_new_zeros(be == hc->cpu ? be : hc->cpu, hc->dtype, 1, (int64_t[]){10}, NULL);
  g_autoptr(MexdTensor) ind_other =
      mexd_tensor_new_1d(be == hc->cpu ? be : hc->cpu, MEXD_DTYPE_I32, 3, NULL);
  g_autoptr(MexdTensor) val_other =
      mexd_tensor_new_1d(be == hc->cpu ? be : hc->cpu, hc->dtype, 3, NULL);
  g_assert_nonnull(val_alias);

  g_assert_false(mexd_topk(val, ind, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "topk x NULL");
  error = NULL;
  g_assert_false(mexd_topk(val, NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "topk indices NULL");
  error = NULL;
  g_assert_false(mexd_topk(NULL, NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "topk indices NULL, values NULL");
  error = NULL;
  g_assert_false(mexd_topk(val, ind, x_i32, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "topk i32 x");
  error = NULL;
  g_assert_false(mexd_topk(val, ind_f, x, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "topk float indices");
  error = NULL;
  g_assert_false(mexd_topk(val_i32, ind, x, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "topk i32 values");
  if (val_mixed) {
    error = NULL;
    g_assert_false(mexd_topk(val_mixed, ind, x, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "topk mixed f32/f16");
  }
  error = NULL;
  g_assert_false(mexd_topk(val, ind, x_2d, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "topk 2-D x");
  error = NULL;
  g_assert_false(mexd_topk(val, ind_2d, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "topk 2-D indices");
  error = NULL;
  g_assert_false(mexd_topk(NULL, ind_big, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "topk k > n");
  error = NULL;
  g_assert_false(mexd_topk(val_4, ind, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "topk values not [k]");
  error = NULL;
  g_assert_false(mexd_topk(val_alias, ind, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "topk values overlap x");
  if (be != hc->cpu) {
    error = NULL;
    g_assert_false(mexd_topk(val, ind, x_other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "topk x on another backend");
    error = NULL;
    g_assert_false(mexd_topk(val, ind_other, x, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "topk indices on another backend");
    error = NULL;
    g_assert_false(mexd_topk(val_other, ind, x, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "topk values on another backend");
  }
  error = NULL;
  g_assert_true(mexd_backend_sync(be, &error));
  g_assert_no_error(error);
}

void register_index_tests(void)
{
  harness_add("gather/random", HARNESS_BOTH, test_gather_random);
  harness_add("gather/big-grid", HARNESS_F32, test_gather_big_grid);
  harness_add("gather/bad-index", HARNESS_BOTH, test_gather_bad_index);
  harness_add("gather/errors", HARNESS_BOTH, test_gather_errors);
  harness_add("topk/random", HARNESS_BOTH, test_topk_random);
  harness_add("topk/special", HARNESS_BOTH, test_topk_special);
  harness_add("topk/large", HARNESS_BOTH, test_topk_large);
  harness_add("topk/errors", HARNESS_BOTH, test_topk_errors);
}
