/* op-layout.c: mexd_concat, mexd_permute, mexd_transpose and mexd_copy.
 *
 * These ops move data without arithmetic and promise bit-exact copies, so the tests fill tensors
 * with random raw bits (NaN payloads and denormals included) and compare raw bytes exactly: on
 * cpu against a naive reference, elsewhere against both the reference and the cpu backend.
 * i32 tensors are moved too; they run inside the f32 cases. */
#include "harness.h"

#include <string.h>

/* ---- helpers ---- */

/* n random raw elements of `es` bytes */
static void *random_bits(int64_t n, size_t es)
{
  uint8_t *v = g_malloc((size_t)n * es);
  for (size_t i = 0; i < (size_t)n * es; i += 4) {
    uint32_t r = g_test_rand_int();
    memcpy(v + i, &r, MIN(4, (size_t)n * es - i));
  }
  return v;
}

/* A tensor holding raw `data`, as a view `pad` elements into a larger 1-D tensor (or plain). */
static MexdTensor *raw_tensor(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape,
                              const void *data, int64_t pad)
{
  g_autoptr(GError) error = NULL;
  size_t es = mexd_dtype_size(dt);
  int64_t n = harness_numel(ndim, shape), total = n + pad;
  g_autoptr(MexdTensor) base = mexd_tensor_new(be, dt, 1, &total, &error);
  g_assert_no_error(error);
  g_autofree uint8_t *buf = g_malloc0((size_t)total * es);
  memset(buf, 0x7f, (size_t)pad * es);
  memcpy(buf + (size_t)pad * es, data, (size_t)n * es);
  g_assert_true(mexd_tensor_write(base, buf, (size_t)total * es, &error));
  g_assert_no_error(error);
  g_autoptr(MexdTensor) rows = mexd_tensor_rows(base, pad, n, &error);
  g_assert_no_error(error);
  MexdTensor *t = mexd_tensor_reshape(rows, ndim, shape, &error);
  g_assert_no_error(error);
  return t;
}

static void *read_raw(MexdTensor *t)
{
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_backend_sync(t->backend, &error));
  g_assert_no_error(error);
  void *v = g_malloc(mexd_tensor_nbytes(t));
  g_assert_true(mexd_tensor_read(t, v, mexd_tensor_nbytes(t), &error));
  g_assert_no_error(error);
  return v;
}

static void assert_same_bytes(const char *what, const void *out, const void *ref, int64_t n,
                              size_t es)
{
  if (memcmp(out, ref, (size_t)n * es) == 0)
    return;
  for (int64_t i = 0; i < n; i++)
    if (memcmp((const uint8_t *)out + i * es, (const uint8_t *)ref + i * es, es) != 0) {
      uint32_t o = 0, r = 0;
      memcpy(&o, (const uint8_t *)out + i * es, es);
      memcpy(&r, (const uint8_t *)ref + i * es, es);
      g_error("%s: element %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " is 0x%x, want 0x%x", what,
              i, n, o, r);
    }
}

/* The dtypes a case covers: its own, and i32 with f32. */
static int case_dtypes(const HarnessCase *hc, MexdDType dts[2])
{
  dts[0] = hc->dtype;
  if (hc->dtype != MEXD_DTYPE_F32)
    return 1;
  dts[1] = MEXD_DTYPE_I32;
  return 2;
}

/* ---- concat ---- */

typedef struct {
  int ndim, n, axis; /* axis as passed (may be negative) */
  int64_t yshape[4];
  int64_t xshape[4][4];
} ConcatShape;

static void ref_concat(const ConcatShape *s, size_t es, void *const *xs, uint8_t *y)
{
  int ax = s->axis < 0 ? s->axis + s->ndim : s->axis;
  int64_t ny = harness_numel(s->ndim, s->yshape);
  /* per y element: find the input and its coordinates */
  for (int64_t i = 0; i < ny; i++) {
    int64_t c[4] = {0}, r = i;
    for (int k = s->ndim - 1; k >= 0; k--) {
      c[k] = r % s->yshape[k];
      r /= s->yshape[k];
    }
    int j = 0;
    while (c[ax] >= s->xshape[j][ax]) {
      c[ax] -= s->xshape[j][ax];
      j++;
    }
    int64_t xi = 0;
    for (int k = 0; k < s->ndim; k++)
      xi = xi * s->xshape[j][k] + c[k];
    memcpy(y + i * es, (const uint8_t *)xs[j] + xi * es, es);
  }
}

static void *run_concat(MexdBackend *be, MexdDType dt, const ConcatShape *s, void *const *xs,
                        gboolean pad)
{
  MexdTensor *tx[4];
  for (int j = 0; j < s->n; j++)
    tx[j] = raw_tensor(be, dt, s->ndim, s->xshape[j], xs[j], pad ? j + 1 : 0);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) ty = mexd_tensor_new(be, dt, s->ndim, s->yshape, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_concat(ty, tx, s->n, s->axis, &error));
  g_assert_no_error(error);
  for (int j = 0; j < s->n; j++)
    mexd_tensor_unref(tx[j]);
  return read_raw(ty);
}

static void check_concat(const HarnessCase *hc, MexdDType dt, const ConcatShape *s)
{
  size_t es = mexd_dtype_size(dt);
  void *xs[4] = {NULL};
  for (int j = 0; j < s->n; j++)
    xs[j] = random_bits(harness_numel(s->ndim, s->xshape[j]), es);
  int64_t ny = harness_numel(s->ndim, s->yshape);
  gboolean pad = g_test_rand_bit();
  g_autofree char *ys = harness_shape_str(s->ndim, s->yshape);
  g_autofree char *what =
      g_strdup_printf("concat %s %s: %d inputs along axis %d -> %s%s", hc->spec,
                      mexd_dtype_name(dt), s->n, s->axis, ys, pad ? " (views)" : "");
  g_autofree uint8_t *ref = g_malloc((size_t)ny * es);
  ref_concat(s, es, xs, ref);
  g_autofree void *out = run_concat(hc->be, dt, s, xs, pad);
  assert_same_bytes(what, out, ref, ny, es);
  if (hc->be != hc->cpu) {
    g_autofree void *cpu = run_concat(hc->cpu, dt, s, xs, FALSE);
    assert_same_bytes(what, out, cpu, ny, es);
  }
  for (int j = 0; j < s->n; j++)
    g_free(xs[j]);
}

/* Every axis of 1-D … 4-D tensors, 1 … 4 inputs, positive and negative axis numbers. */
static void test_concat_random(const HarnessCase *hc)
{
  static const int64_t max_dim[5] = {0, 1000, 100, 24, 10};
  MexdDType dts[2];
  int ndt = case_dtypes(hc, dts);
  for (int d = 0; d < ndt; d++)
    for (int ndim = 1; ndim <= 4; ndim++)
      for (int ax = 0; ax < ndim; ax++) {
        ConcatShape s = {.ndim = ndim, .n = g_test_rand_int_range(1, 5)};
        s.axis = g_test_rand_bit() ? ax : ax - ndim;
        for (int k = 0; k < ndim; k++)
          s.yshape[k] = harness_size(max_dim[ndim]);
        s.yshape[ax] = 0;
        for (int j = 0; j < s.n; j++) {
          memcpy(s.xshape[j], s.yshape, sizeof s.yshape);
          s.xshape[j][ax] = harness_size(max_dim[ndim]);
          s.yshape[ax] += s.xshape[j][ax];
        }
        check_concat(hc, dts[d], &s);
      }
}

static void test_concat_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype, other_dt = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) a = mexd_tensor_new_2d(be, dt, 2, 3, NULL);
  g_autoptr(MexdTensor) b = mexd_tensor_new_2d(be, dt, 4, 3, NULL);
  g_autoptr(MexdTensor) c = mexd_tensor_new_2d(be, dt, 2, 5, NULL);
  g_autoptr(MexdTensor) b_dt = mexd_tensor_new_2d(be, other_dt, 4, 3, NULL);
  g_autoptr(MexdTensor) b_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 4, 3, NULL);
  g_autoptr(MexdTensor) b_1d = mexd_tensor_new_1d(be, dt, 12, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new_2d(be, dt, 6, 3, NULL);
  g_autoptr(MexdTensor) y7 = mexd_tensor_new_2d(be, dt, 7, 3, NULL);
  g_autoptr(MexdTensor) y_yx = mexd_tensor_new_2d(be, dt, 3, 6, NULL);
  g_autoptr(MexdTensor) y_top = mexd_tensor_rows(y, 0, 2, NULL); /* a view inside y */
  MexdTensor *ab[2] = {a, b};

  g_assert_false(mexd_concat(NULL, ab, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat y NULL");
  error = NULL;
  g_assert_false(mexd_concat(y, NULL, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat xs NULL");
  error = NULL;
  g_assert_false(mexd_concat(y, ab, 0, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat n 0");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){a, NULL}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat xs[1] NULL");
  error = NULL;
  g_assert_false(mexd_concat(y, ab, 2, 2, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat axis 2 of 2-D");
  error = NULL;
  g_assert_false(mexd_concat(y, ab, 2, -3, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat axis -3 of 2-D");
  error = NULL;
  g_assert_false(mexd_concat(y, ab, 2, 1, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "concat along the wrong axis");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){a, c}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "concat other dim differs");
  error = NULL;
  g_assert_false(mexd_concat(y7, ab, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "concat sizes add up to 6, y has 7");
  error = NULL;
  g_assert_false(mexd_concat(y_yx, ab, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "concat y transposed");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){a, b_1d}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "concat 1-D input");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){a, b_dt}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "concat dtype mismatch");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){a, b_i32}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "concat f with i32");
  error = NULL;
  g_assert_false(mexd_concat(y, (MexdTensor *[]){y_top, b}, 2, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "concat input inside y");
  error = NULL;
  g_assert_true(mexd_concat(y, ab, 2, -2, &error));
  g_assert_no_error(error);
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) other = mexd_tensor_new_2d(hc->cpu, dt, 4, 3, NULL);
    error = NULL;
    g_assert_false(mexd_concat(y, (MexdTensor *[]){a, other}, 2, 0, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "concat mixed backends");
  }
}

/* ---- permute / transpose / copy ---- */

typedef enum { P_PERMUTE, P_TRANSPOSE, P_COPY } PKind;

static void ref_permute(int ndim, const int64_t *xshape, const int *perm, size_t es,
                        const uint8_t *x, uint8_t *y)
{
  int64_t yshape[4], xstride[4], n = harness_numel(ndim, xshape);
  int64_t st = 1;
  for (int k = ndim - 1; k >= 0; k--) {
    xstride[k] = st;
    st *= xshape[k];
  }
  for (int k = 0; k < ndim; k++)
    yshape[k] = xshape[perm[k]];
  for (int64_t i = 0; i < n; i++) {
    int64_t r = i, xi = 0;
    for (int k = ndim - 1; k >= 0; k--) {
      xi += (r % yshape[k]) * xstride[perm[k]];
      r /= yshape[k];
    }
    memcpy(y + i * es, x + xi * es, es);
  }
}

static void *run_permute(MexdBackend *be, MexdDType dt, PKind kind, int ndim, const int64_t *xshape,
                         const int *perm, const void *x, int64_t pad)
{
  int64_t yshape[4];
  for (int k = 0; k < ndim; k++)
    yshape[k] = xshape[perm[k]];
  g_autoptr(MexdTensor) tx = raw_tensor(be, dt, ndim, xshape, x, pad);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) ty = mexd_tensor_new(be, dt, ndim, yshape, &error);
  g_assert_no_error(error);
  gboolean ok = kind == P_PERMUTE     ? mexd_permute(ty, tx, perm, &error)
                : kind == P_TRANSPOSE ? mexd_transpose(ty, tx, &error)
                                      : mexd_copy(ty, tx, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  return read_raw(ty);
}

static void check_permute(const HarnessCase *hc, MexdDType dt, PKind kind, int ndim,
                          const int64_t *xshape, const int *perm)
{
  static const char *const names[] = {"permute", "transpose", "copy"};
  size_t es = mexd_dtype_size(dt);
  int64_t n = harness_numel(ndim, xshape);
  int64_t pad = g_test_rand_bit() ? 0 : g_test_rand_int_range(1, 4);
  g_autofree void *x = random_bits(n, es);
  g_autofree uint8_t *ref = g_malloc((size_t)n * es);
  ref_permute(ndim, xshape, perm, es, x, ref);
  g_autofree char *xs = harness_shape_str(ndim, xshape);
  g_autofree char *what =
      g_strdup_printf("%s %s %s: x %s perm (%d,%d,%d,%d)[:%d] pad %" G_GINT64_FORMAT, names[kind],
                      hc->spec, mexd_dtype_name(dt), xs, perm[0], ndim > 1 ? perm[1] : -1,
                      ndim > 2 ? perm[2] : -1, ndim > 3 ? perm[3] : -1, ndim, pad);
  g_autofree void *out = run_permute(hc->be, dt, kind, ndim, xshape, perm, x, pad);
  assert_same_bytes(what, out, ref, n, es);
  if (hc->be != hc->cpu) {
    g_autofree void *cpu = run_permute(hc->cpu, dt, kind, ndim, xshape, perm, x, 0);
    assert_same_bytes(what, out, cpu, n, es);
  }
}

/* Every permutation of 3-D (all 6) and of 2-D, 12 random ones of 4-D plus the 4-D reversal. */
static void test_permute_all(const HarnessCase *hc)
{
  static const int p3[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  MexdDType dts[2];
  int ndt = case_dtypes(hc, dts);
  for (int d = 0; d < ndt; d++) {
    for (int p = 0; p < 6; p++) {
      int64_t xs[3] = {harness_size(30), harness_size(40), harness_size(50)};
      check_permute(hc, dts[d], P_PERMUTE, 3, xs, p3[p]);
    }
    for (int p = 0; p < 2; p++) {
      int64_t xs[2] = {harness_size(300), harness_size(300)};
      int perm[2] = {p, 1 - p};
      check_permute(hc, dts[d], P_PERMUTE, 2, xs, perm);
    }
    int64_t x1 = harness_size(1000);
    check_permute(hc, dts[d], P_PERMUTE, 1, &x1, (int[]){0});
    for (int it = 0; it < 13; it++) {
      int perm[4] = {0, 1, 2, 3};
      if (it == 12) {
        for (int k = 0; k < 4; k++)
          perm[k] = 3 - k;
      } else {
        for (int k = 3; k > 0; k--) { /* Fisher–Yates */
          int r = g_test_rand_int_range(0, k + 1), t = perm[k];
          perm[k] = perm[r];
          perm[r] = t;
        }
      }
      int64_t xs[4] = {harness_size(9), harness_size(10), harness_size(11), harness_size(12)};
      check_permute(hc, dts[d], P_PERMUTE, 4, xs, perm);
    }
  }
}

static void test_transpose_copy(const HarnessCase *hc)
{
  static const int64_t max_dim[5] = {0, 3000, 300, 40, 12};
  MexdDType dts[2];
  int ndt = case_dtypes(hc, dts);
  for (int d = 0; d < ndt; d++)
    for (int ndim = 1; ndim <= 4; ndim++)
      for (int it = 0; it < 2; it++) {
        int64_t xs[4];
        int id[4] = {0, 1, 2, 3};
        for (int k = 0; k < ndim; k++)
          xs[k] = harness_size(max_dim[ndim]);
        check_permute(hc, dts[d], P_COPY, ndim, xs, id);
        if (ndim >= 2) {
          int tp[4] = {0, 1, 2, 3};
          tp[ndim - 2] = ndim - 1;
          tp[ndim - 1] = ndim - 2;
          check_permute(hc, dts[d], P_TRANSPOSE, ndim, xs, tp);
        }
      }
}

/* More than 65535 workgroups of 256, so that the grid spreads over y on vulkan: the concat and
 * permute shaders (on cpu the same checks run without a grid).  Deterministic data, checked
 * against the reference alone, to keep it quick. */
static void test_layout_large(const HarnessCase *hc)
{
  int64_t xshape[2] = {2, 65536 * 128 + 77}, n = xshape[0] * xshape[1];
  g_autofree uint32_t *x = g_new(uint32_t, n);
  for (int64_t i = 0; i < n; i++)
    x[i] = (uint32_t)i * 2654435761u;
  g_autofree uint32_t *ref = g_new(uint32_t, n);
  for (int64_t i = 0; i < xshape[0]; i++)
    for (int64_t j = 0; j < xshape[1]; j++)
      ref[j * xshape[0] + i] = x[i * xshape[1] + j];
  g_autofree void *out =
      run_permute(hc->be, MEXD_DTYPE_I32, P_TRANSPOSE, 2, xshape, (int[]){1, 0}, x, 1);
  assert_same_bytes("large transpose", out, ref, n, 4);

  ConcatShape s = {.ndim = 1, .n = 2, .axis = 0};
  s.xshape[0][0] = 3;
  s.xshape[1][0] = n - 3;
  s.yshape[0] = n;
  void *xs[2] = {x, x + 3};
  g_autofree void *cat = run_concat(hc->be, MEXD_DTYPE_I32, &s, xs, TRUE);
  assert_same_bytes("large concat", cat, x, n, 4);
}

static void test_permute_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype, other_dt = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new(be, dt, 3, (int64_t[]){2, 3, 4}, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new(be, dt, 3, (int64_t[]){4, 2, 3}, NULL); /* (2,0,1) */
  g_autoptr(MexdTensor) y_t = mexd_tensor_new(be, dt, 3, (int64_t[]){2, 4, 3}, NULL);
  g_autoptr(MexdTensor) y_same = mexd_tensor_new(be, dt, 3, (int64_t[]){2, 3, 4}, NULL);
  g_autoptr(MexdTensor) y_flat = mexd_tensor_new_1d(be, dt, 24, NULL);
  g_autoptr(MexdTensor) y_dt = mexd_tensor_new(be, other_dt, 3, (int64_t[]){4, 2, 3}, NULL);
  g_autoptr(MexdTensor) y_i32 = mexd_tensor_new(be, MEXD_DTYPE_I32, 3, (int64_t[]){4, 2, 3}, NULL);
  g_autoptr(MexdTensor) v1 = mexd_tensor_new_1d(be, dt, 5, NULL);
  g_autoptr(MexdTensor) v1b = mexd_tensor_new_1d(be, dt, 5, NULL);
  g_autoptr(MexdTensor) base = mexd_tensor_new_1d(be, dt, 30, NULL);
  g_autoptr(MexdTensor) lo0 = mexd_tensor_rows(base, 0, 24, NULL);
  g_autoptr(MexdTensor) hi0 = mexd_tensor_rows(base, 6, 24, NULL);
  g_autoptr(MexdTensor) lo = mexd_tensor_reshape(lo0, 3, (int64_t[]){2, 3, 4}, NULL);
  g_autoptr(MexdTensor) hi = mexd_tensor_reshape(hi0, 3, (int64_t[]){2, 4, 3}, NULL);
  g_autoptr(MexdTensor) hi_same = mexd_tensor_reshape(hi0, 3, (int64_t[]){2, 3, 4}, NULL);
  const int good[3] = {2, 0, 1};

  g_assert_false(mexd_permute(NULL, x, good, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute y NULL");
  error = NULL;
  g_assert_false(mexd_permute(y, NULL, good, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute x NULL");
  error = NULL;
  g_assert_false(mexd_permute(y, x, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute perm NULL");
  error = NULL;
  g_assert_false(mexd_permute(y, x, (int[]){2, 0, 0}, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute repeated dim");
  error = NULL;
  g_assert_false(mexd_permute(y, x, (int[]){2, 0, 3}, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute dim 3 of 3-D");
  error = NULL;
  g_assert_false(mexd_permute(y, x, (int[]){2, -1, 1}, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute negative dim");
  error = NULL;
  g_assert_false(mexd_permute(y_t, x, good, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "permute y of another permutation");
  error = NULL;
  g_assert_false(mexd_permute(y_flat, x, good, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "permute y flat");
  error = NULL;
  g_assert_false(mexd_permute(y_dt, x, good, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "permute dtype mismatch");
  error = NULL;
  g_assert_false(mexd_permute(y_i32, x, good, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "permute float to i32");
  error = NULL;
  g_assert_false(mexd_permute(hi, lo, (int[]){0, 2, 1}, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute partial overlap");
  error = NULL;
  g_assert_false(mexd_permute(x, x, (int[]){0, 1, 2}, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "permute y = x");

  error = NULL;
  g_assert_false(mexd_transpose(NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "transpose y NULL");
  error = NULL;
  g_assert_false(mexd_transpose(y_t, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "transpose x NULL");
  error = NULL;
  g_assert_false(mexd_transpose(v1b, v1, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "transpose 1-D");
  error = NULL;
  g_assert_false(mexd_transpose(y, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "transpose y shape");
  error = NULL;
  g_assert_false(mexd_transpose(y_same, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "transpose y untransposed");
  error = NULL;
  g_assert_false(mexd_transpose(hi, lo, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "transpose partial overlap");

  error = NULL;
  g_assert_false(mexd_copy(NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "copy y NULL");
  error = NULL;
  g_assert_false(mexd_copy(y_same, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "copy x NULL");
  error = NULL;
  g_assert_false(mexd_copy(y_flat, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "copy other shape, same count");
  error = NULL;
  g_assert_false(mexd_copy(y, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "copy permuted shape");
  error = NULL;
  g_assert_false(mexd_copy(y_same, y_i32, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "copy i32 into float");
  error = NULL;
  g_assert_false(mexd_copy(hi_same, lo, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "copy partial overlap");
  error = NULL;
  g_assert_false(mexd_copy(x, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "copy y = x");
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) other = mexd_tensor_new(hc->cpu, dt, 3, (int64_t[]){2, 3, 4}, NULL);
    error = NULL;
    g_assert_false(mexd_permute(y, other, good, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "permute mixed backends");
    error = NULL;
    g_assert_false(mexd_transpose(y_t, other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "transpose mixed backends");
    error = NULL;
    g_assert_false(mexd_copy(other, x, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "copy mixed backends");
  }
}

void register_layout_tests(void)
{
  harness_add("concat/random", HARNESS_BOTH, test_concat_random);
  harness_add("concat/errors", HARNESS_BOTH, test_concat_errors);
  harness_add("permute/all", HARNESS_BOTH, test_permute_all);
  harness_add("permute/transpose-copy", HARNESS_BOTH, test_transpose_copy);
  harness_add("layout/large", HARNESS_F32, test_layout_large);
  harness_add("permute/errors", HARNESS_BOTH, test_permute_errors);
}
