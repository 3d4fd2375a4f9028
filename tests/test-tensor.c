/* test-tensor.c: MexdTensor bookkeeping, views, host copies, bad arguments, and the f16
 * conversions (checked exhaustively against the compiler's own _Float16 where it has one). */
#include "mexd.h"

#include <math.h>
#include <string.h>

static MexdBackend *cpu;

static void expect_error(GError *error, int code, const char *what)
{
  if (!error)
    g_error("%s: expected an error", what);
  g_assert_true(error->domain == MEXD_ERROR);
  if (code >= 0 && error->code != code)
    g_error("%s: expected code %d, got %d: %s", what, code, error->code, error->message);
  g_test_message("%s: %s", what, error->message);
  g_error_free(error);
}

static void test_new_and_views(void)
{
  GError *error = NULL;
  int64_t shape[3] = {4, 3, 2};
  float data[24];
  for (int i = 0; i < 24; i++)
    data[i] = (float)i;
  g_autoptr(MexdTensor) t = mexd_tensor_new_from_f32(cpu, MEXD_DTYPE_F32, 3, shape, data, &error);
  g_assert_no_error(error);
  g_assert_cmpint(mexd_tensor_numel(t), ==, 24);
  g_assert_cmpuint(mexd_tensor_nbytes(t), ==, 96);
  g_assert_cmpint(mexd_tensor_rows_count(t), ==, 12);
  g_assert_cmpint(mexd_tensor_row_len(t), ==, 2);
  g_autofree char *d = mexd_tensor_describe(t);
  g_assert_cmpstr(d, ==, "f32[4,3,2]");

  g_autoptr(MexdTensor) rows = mexd_tensor_rows(t, 1, 2, &error);
  g_assert_no_error(error);
  float got[12];
  g_assert_true(mexd_tensor_read_f32(rows, got, 12, &error));
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat(got[i], ==, (float)(6 + i));

  int64_t flat[1] = {24};
  g_autoptr(MexdTensor) r = mexd_tensor_reshape(t, 1, flat, &error);
  g_assert_no_error(error);
  /* a write through the view shows in the parent */
  float v = 100.0f;
  g_autoptr(MexdTensor) one = mexd_tensor_rows(r, 23, 1, &error);
  g_assert_true(mexd_tensor_write_f32(one, &v, 1, &error));
  float all[24];
  g_assert_true(mexd_tensor_read_f32(t, all, 24, &error));
  g_assert_cmpfloat(all[23], ==, 100.0f);

  g_autoptr(MexdTensor) z = mexd_tensor_new_zeros(cpu, MEXD_DTYPE_F16, 3, shape, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_tensor_read_f32(z, all, 24, &error));
  for (int i = 0; i < 24; i++)
    g_assert_cmpfloat(all[i], ==, 0.0f);
}

static void test_bad_arguments(void)
{
  GError *error = NULL;
  int64_t shape[5] = {2, 2, 2, 2, 2};
  g_assert_null(mexd_tensor_new(NULL, MEXD_DTYPE_F32, 2, shape, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL backend");
  error = NULL;
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 0, shape, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "0-D");
  error = NULL;
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 5, shape, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "5-D");
  error = NULL;
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 2, NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL shape");
  error = NULL;
  int64_t neg[2] = {3, -1};
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 2, neg, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "negative dim");
  error = NULL;
  int64_t huge[3] = {1ll << 30, 1ll << 30, 1ll << 30};
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 3, huge, &error));
  expect_error(error, MEXD_ERROR_NO_MEMORY, "overflowing shape");
  error = NULL;
  g_assert_null(mexd_tensor_new(cpu, (MexdDType)7, 2, shape, &error));
  expect_error(error, MEXD_ERROR_DTYPE, "unknown dtype");
  error = NULL;

  g_autoptr(MexdTensor) t = mexd_tensor_new_2d(cpu, MEXD_DTYPE_F32, 4, 3, &error);
  g_assert_no_error(error);
  g_assert_null(mexd_tensor_rows(t, 3, 2, &error));
  expect_error(error, MEXD_ERROR_INDEX, "rows past the end");
  error = NULL;
  g_assert_null(mexd_tensor_rows(t, -1, 1, &error));
  expect_error(error, MEXD_ERROR_INDEX, "negative row");
  error = NULL;
  g_assert_null(mexd_tensor_rows(NULL, 0, 1, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "rows of NULL");
  error = NULL;
  int64_t s5[1] = {5};
  g_assert_null(mexd_tensor_reshape(t, 1, s5, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "reshape to another count");
  error = NULL;
  float buf[12] = {0};
  g_assert_false(mexd_tensor_write(t, buf, 44, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "short write");
  error = NULL;
  g_assert_false(mexd_tensor_write(t, NULL, 48, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL source");
  error = NULL;
  g_assert_false(mexd_tensor_read_f32(t, buf, 11, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "short read");
  error = NULL;
  g_assert_false(mexd_tensor_read(NULL, buf, 48, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "read of NULL");
  error = NULL;
  g_autoptr(MexdTensor) ti = mexd_tensor_new_1d(cpu, MEXD_DTYPE_I32, 4, &error);
  g_assert_false(mexd_tensor_read_f32(ti, buf, 4, &error));
  expect_error(error, MEXD_ERROR_DTYPE, "f32 read of i32");
  error = NULL;
  g_assert_null(mexd_tensor_new_from_f32(cpu, MEXD_DTYPE_I32, 1, s5, buf, &error));
  expect_error(error, MEXD_ERROR_DTYPE, "from_f32 to i32");
  error = NULL;
  g_assert_null(mexd_tensor_dup_f32(NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "dup of NULL");
  /* a NULL error pointer is allowed everywhere */
  g_assert_null(mexd_tensor_new(cpu, MEXD_DTYPE_F32, 0, shape, NULL));
}

/* f16 -> f32 -> f16 is the identity for every non-NaN half; NaN stays NaN. */
static void test_f16_exhaustive_roundtrip(void)
{
  for (uint32_t h = 0; h < 65536; h++) {
    float f = mexd_f16_to_f32((uint16_t)h);
    uint16_t back = mexd_f32_to_f16(f);
    if (isnan(f)) {
      g_assert_true((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu) != 0);
      continue;
    }
    if (back != h)
      g_error("half 0x%04x -> %.9g -> 0x%04x", h, f, back);
  }
}

/* f32 -> f16 rounding against the compiler's _Float16 (libgcc's conversion) where available,
 * else against a double-precision nearest-even search. */
static uint16_t ref_f32_to_f16(float f)
{
#if defined(__FLT16_MAX__)
  _Float16 h = (_Float16)f;
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
#else
  /* nearest of all finite halves (ties to even mantissa); overflow to inf */
  if (isnan(f))
    return 0x7e00;
  uint16_t sign = signbit(f) ? 0x8000 : 0;
  double a = fabs((double)f);
  if (a >= 65520.0)
    return sign | 0x7c00;
  uint16_t best = 0;
  double bd = INFINITY;
  for (uint32_t h = 0; h < 0x7c00; h++) {
    double v = mexd_f16_to_f32((uint16_t)h);
    double d = fabs(v - a);
    if (d < bd || (d == bd && !(h & 1))) {
      bd = d;
      best = (uint16_t)h;
    }
  }
  return sign | best;
#endif
}

static void test_f32_to_f16_rounding(void)
{
  GRand *r = g_rand_new_with_seed(42);
  int n = 0;
  for (int i = 0; i < 200000; i++) {
    uint32_t bits = g_rand_int(r);
    /* concentrate on the half range: exponents around 2^-26 .. 2^17 */
    if (i % 2)
      bits = (bits & 0x807fffffu) | ((uint32_t)g_rand_int_range(r, 100, 144) << 23);
    float f;
    memcpy(&f, &bits, 4);
    if (isnan(f))
      continue;
#if !defined(__FLT16_MAX__)
    if (i > 3000)
      break; /* the search reference is slow */
#endif
    uint16_t got = mexd_f32_to_f16(f), want = ref_f32_to_f16(f);
    if (got != want)
      g_error("f32 %.9g (0x%08x): got half 0x%04x, want 0x%04x", f, bits, got, want);
    n++;
  }
  /* the edges: ties, overflow threshold, subnormals, signed zero */
  const float edges[] = {65504.0f,       65519.99f,      65520.0f,       -65520.0f,
                         5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 8.940697e-08f,
                         6.1035156e-05f, 6.1035152e-05f, -0.0f,          1.0009766f,
                         1.00048828125f, 1.00146484375f, INFINITY,       -INFINITY};
  for (size_t i = 0; i < G_N_ELEMENTS(edges); i++) {
    uint16_t got = mexd_f32_to_f16(edges[i]), want = ref_f32_to_f16(edges[i]);
    if (got != want)
      g_error("f32 %.9g: got half 0x%04x, want 0x%04x", edges[i], got, want);
  }
  g_rand_free(r);
  g_test_message("%d random conversions checked", n);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  cpu = mexd_backend_new("cpu", NULL);
  g_test_add_func("/tensor/new-and-views", test_new_and_views);
  g_test_add_func("/tensor/bad-arguments", test_bad_arguments);
  g_test_add_func("/tensor/f16-roundtrip", test_f16_exhaustive_roundtrip);
  g_test_add_func("/tensor/f32-to-f16-rounding", test_f32_to_f16_rounding);
  int rc = g_test_run();
  mexd_backend_unref(cpu);
  return rc;
}
