/* test-backend.c: backend choice, the vulkan allocator and recorder (views at unaligned offsets,
 * ordering of writes against recorded ops, many live tensors), and device limits. */
#include "mexd.h"

#include "backend/backend-private.h"
#include "backend/vulkan.h"

#include <math.h>
#include <string.h>

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

static MexdBackend *open_vulkan(void)
{
  g_autoptr(GError) error = NULL;
  MexdBackend *be = mexd_backend_new("vulkan", &error);
  if (!be)
    g_test_skip_printf("no Vulkan device: %s", error->message);
  return be;
}

static void test_choice(void)
{
  GError *error = NULL;
  g_assert_null(mexd_backend_new("tpu", &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "unknown device");
  error = NULL;
  g_assert_null(mexd_backend_new("vulkan:x", &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "bad index");
  error = NULL;
  g_assert_null(mexd_backend_new("vulkan:999", &error));
  expect_error(error, -1, "missing device");
  error = NULL;
  g_setenv("MEXD_DEVICE", "bogus", TRUE);
  g_assert_null(mexd_backend_new(NULL, &error));
  g_assert_nonnull(strstr(error->message, "MEXD_DEVICE"));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "bad MEXD_DEVICE");
  error = NULL;
  g_setenv("MEXD_DEVICE", "cpu", TRUE);
  g_autoptr(MexdBackend) be = mexd_backend_new(NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpint(mexd_backend_kind(be), ==, MEXD_BACKEND_CPU);
  g_unsetenv("MEXD_DEVICE");
  g_autoptr(MexdBackend) def = mexd_backend_new(NULL, &error);
  g_assert_no_error(error);
  /* the default is a hardware GPU when Vulkan shows one, else the cpu backend (never lavapipe) */
  int hw = mexd_vulkan_hardware_device();
  g_test_message("default: %s (hardware Vulkan device: %d)", mexd_backend_name(def), hw);
  if (hw < 0) {
    g_assert_cmpint(mexd_backend_kind(def), ==, MEXD_BACKEND_CPU);
  } else {
    g_assert_cmpint(mexd_backend_kind(def), ==, MEXD_BACKEND_VULKAN);
    g_autofree char *prefix = g_strdup_printf("vulkan:%d ", hw);
    g_assert_true(g_str_has_prefix(mexd_backend_name(def), prefix));
  }
  /* a software Vulkan device still opens when asked for */
  if (mexd_vulkan_device_count() > 0 && hw < 0) {
    g_autoptr(MexdBackend) sw = mexd_backend_new("vulkan", &error);
    g_assert_no_error(error);
    g_assert_cmpint(mexd_backend_kind(sw), ==, MEXD_BACKEND_VULKAN);
  }
  g_assert_true(mexd_backend_sync(def, &error));
  g_assert_false(mexd_backend_sync(NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "sync NULL");
  g_auto(GStrv) list = mexd_backend_list();
  g_assert_cmpstr(list[0], ==, "cpu");
}

/* gemm on row views whose offsets are not multiples of the descriptor alignment. */
static void test_unaligned_views(void)
{
  g_autoptr(MexdBackend) vk = open_vulkan();
  if (!vk)
    return;
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", NULL);
  GError *error = NULL;
  enum { M = 9, K = 5, N = 3 };
  float a[M * K], b[K * N];
  for (int i = 0; i < M * K; i++)
    a[i] = (float)((i * 7) % 11) - 5;
  for (int i = 0; i < K * N; i++)
    b[i] = (float)((i * 5) % 7) - 3;
  float out[2][4 * N];
  MexdBackend *bes[2] = {cpu, vk};
  for (int k = 0; k < 2; k++) {
    int64_t sa[2] = {M, K}, sb[2] = {K, N}, sc[2] = {7, N};
    g_autoptr(MexdTensor) ta = mexd_tensor_new_from_f32(bes[k], MEXD_DTYPE_F32, 2, sa, a, &error);
    g_autoptr(MexdTensor) tb = mexd_tensor_new_from_f32(bes[k], MEXD_DTYPE_F32, 2, sb, b, &error);
    g_autoptr(MexdTensor) tc = mexd_tensor_new_zeros(bes[k], MEXD_DTYPE_F32, 2, sc, &error);
    g_assert_no_error(error);
    /* rows 3..6 of A (offset 60 bytes) times rows 1..5 of B viewed as... B whole; into rows 1..4 of
     * C */
    g_autoptr(MexdTensor) av = mexd_tensor_rows(ta, 3, 4, &error);
    g_autoptr(MexdTensor) cv = mexd_tensor_rows(tc, 1, 4, &error);
    g_assert_no_error(error);
    g_assert_true(mexd_gemm(cv, av, tb, NULL, NULL, &error));
    g_assert_no_error(error);
    g_assert_true(mexd_tensor_read_f32(cv, out[k], 4 * N, &error));
    g_assert_no_error(error);
    float whole[7 * N];
    g_assert_true(mexd_tensor_read_f32(tc, whole, 7 * N, &error));
    for (int j = 0; j < N; j++) { /* rows outside the view untouched */
      g_assert_cmpfloat(whole[j], ==, 0.0f);
      g_assert_cmpfloat(whole[5 * N + j], ==, 0.0f);
    }
  }
  for (int i = 0; i < 4 * N; i++)
    g_assert_cmpfloat(out[0][i], ==, out[1][i]);
}

/* A write after a recorded op must not change what the op computed. */
static void test_write_after_record(void)
{
  g_autoptr(MexdBackend) vk = open_vulkan();
  if (!vk)
    return;
  GError *error = NULL;
  float one[4] = {1, 1, 1, 1}, two[4] = {2, 2, 2, 2}, eye[4] = {1, 0, 0, 1};
  int64_t s[2] = {2, 2};
  g_autoptr(MexdTensor) a = mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, s, one, &error);
  g_autoptr(MexdTensor) i = mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, s, eye, &error);
  g_autoptr(MexdTensor) c = mexd_tensor_new_2d(vk, MEXD_DTYPE_F32, 2, 2, &error);
  g_assert_true(mexd_gemm(c, a, i, NULL, NULL, &error));
  g_assert_true(mexd_tensor_write_f32(a, two, 4, &error)); /* after recording, before sync */
  float got[4];
  g_assert_true(mexd_tensor_read_f32(c, got, 4, &error));
  g_assert_no_error(error);
  for (int k = 0; k < 4; k++)
    g_assert_cmpfloat(got[k], ==, 1.0f);
}

/* Two submissions in flight (mexd_backend_flush): results are right when read in any order, a
 * read waits for the work that wrote the tensor, a write to a tensor that pending work reads
 * (mapped or not) does not change what that work computes, a tensor the caller drops while the
 * device still uses it is kept until the work is done, and a third flush waits for the oldest. */
static void test_in_flight(void)
{
  g_autoptr(MexdBackend) vk = open_vulkan();
  if (!vk)
    return;
  GError *error = NULL;
  enum { N = 64 };
  g_autofree float *a = g_new(float, N * N), *eye2 = g_new0(float, N * N);
  for (int i = 0; i < N * N; i++)
    a[i] = (float)((i * 13) % 17) - 8;
  for (int i = 0; i < N; i++)
    eye2[i * N + i] = 2;
  int64_t s[2] = {N, N};
  g_autoptr(MexdTensor) e = mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, s, eye2, &error);
  MexdTensor *c[4];
  MexdTensor *ta = mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, s, a, &error);
  g_assert_no_error(error);
  guint subs = mexd_vk_submissions();
  for (int k = 0; k < 4; k++) {
    /* c[k] = ta · 2^(k+1), each a GEMM of its own submission; ta is dropped (by the caller)
     * after the first, rewritten after the second */
    c[k] = mexd_tensor_new_host(vk, MEXD_DTYPE_F32, 2, s, &error);
    g_assert_true(mexd_gemm(c[k], k == 0 ? ta : c[k - 1], e, NULL, NULL, &error));
    g_assert_true(mexd_backend_flush(vk, &error));
    g_assert_no_error(error);
    if (k == 0)
      g_clear_pointer(&ta, mexd_tensor_unref);
    if (k == 1) {
      /* a fresh tensor may get ta's memory only once the first submission is done */
      g_autofree float *junk = g_new(float, N * N);
      for (int i = 0; i < N * N; i++)
        junk[i] = 1e6f;
      g_autoptr(MexdTensor) t = mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, s, junk, &error);
      g_assert_no_error(error);
      /* c[1] is read by the next GEMM, still to be recorded; c[0] by the pending one */
      g_assert_true(mexd_tensor_write_f32(c[0], junk, N * N, &error));
      g_assert_true(mexd_tensor_fill_zero(t, &error));
    }
  }
  g_assert_cmpuint(mexd_vk_submissions() - subs, >=, 4);
  for (int k = 3; k >= 0; k--) {
    g_autofree float *got = g_new(float, N * N);
    g_assert_true(mexd_tensor_read_f32(c[k], got, N * N, &error));
    g_assert_no_error(error);
    for (int i = 0; i < N * N; i++)
      if (k > 0 && got[i] != a[i] * (float)(2 << k))
        g_error("c[%d][%d] = %g, want %g", k, i, got[i], a[i] * (float)(2 << k));
      else if (k == 0 && got[i] != 1e6f)
        g_error("c[0][%d] = %g: the write after the work was lost", i, got[i]);
  }
  for (int k = 0; k < 4; k++)
    mexd_tensor_unref(c[k]);
  g_assert_true(mexd_backend_flush(vk, &error));
  g_assert_true(mexd_backend_sync(vk, &error));
  g_assert_no_error(error);
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", NULL);
  g_assert_true(mexd_backend_flush(cpu, &error));
  g_assert_false(mexd_backend_flush(NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "flush NULL");
}

/* Many tensors of random sizes live at once, written and read back, freed in random order:
 * any overlap between sub-allocations shows as a wrong pattern. */
static void test_allocator_stress(void)
{
  g_autoptr(MexdBackend) vk = open_vulkan();
  if (!vk)
    return;
  GRand *r = g_rand_new_with_seed(3);
  GPtrArray *live = g_ptr_array_new();
  GError *error = NULL;
  for (int step = 0; step < 400; step++) {
    if (live->len > 0 && g_rand_int_range(r, 0, 3) == 0) {
      guint k = (guint)g_rand_int_range(r, 0, (gint32)live->len);
      MexdTensor *t = g_ptr_array_index(live, k);
      int64_t n = mexd_tensor_numel(t);
      int32_t *v = g_new(int32_t, n);
      g_assert_true(mexd_tensor_read(t, v, (size_t)n * 4, &error));
      int32_t tag = v[0];
      for (int64_t j = 0; j < n; j++)
        if (v[j] != tag + (int32_t)j)
          g_error("tensor %d element %" G_GINT64_FORMAT " was overwritten", tag, j);
      g_free(v);
      mexd_tensor_unref(t);
      g_ptr_array_remove_index_fast(live, k);
      continue;
    }
    int64_t n = g_rand_int_range(r, 1, 4) == 1 ? g_rand_int_range(r, 1 << 18, 1 << 22)
                                               : g_rand_int_range(r, 1, 5000);
    MexdTensor *t = mexd_tensor_new_1d(vk, MEXD_DTYPE_I32, n, &error);
    g_assert_no_error(error);
    int32_t *v = g_new(int32_t, n);
    for (int64_t j = 0; j < n; j++)
      v[j] = step * 1000003 + (int32_t)j;
    g_assert_true(mexd_tensor_write(t, v, (size_t)n * 4, &error));
    g_free(v);
    g_ptr_array_add(live, t);
  }
  g_ptr_array_set_free_func(live, (GDestroyNotify)mexd_tensor_unref);
  g_ptr_array_free(live, TRUE);
  g_rand_free(r);
}

/* Tensors beyond maxStorageBufferRange (lavapipe: 128 MiB) run through the shaders' buffer device
 * address builds: an elementwise op over a whole one, a GEMM whose rows lie past the range, and a
 * small view far inside one, each checked against the host; without bufferDeviceAddress
 * (MEXD_VK_NO_BDA=1) such a tensor is refused when it is created. */
static void test_limits(void)
{
  g_setenv("MEXD_VK_NO_BDA", "1", TRUE);
  g_autoptr(MexdBackend) plain = open_vulkan();
  g_unsetenv("MEXD_VK_NO_BDA");
  if (!plain)
    return;
  const MexdVkLimits *l = mexd_vk_limits(plain);
  GError *error = NULL;
  enum { K = 64, COLS = 4 };
  /* rows of K floats: one more row than the range holds, plus a few */
  int64_t rows = (int64_t)(l->max_storage_range / (4 * K)) + 3;
  int64_t n = rows * K;
  g_assert_null(mexd_tensor_new_1d(plain, MEXD_DTYPE_F32, n, &error));
  expect_error(error, MEXD_ERROR_NO_MEMORY, "tensor over maxStorageBufferRange without BDA");
  error = NULL;

  g_autoptr(MexdBackend) vk = open_vulkan();
  if ((size_t)n * 4 > vk->max_tensor_bytes) {
    g_assert_null(mexd_tensor_new_1d(vk, MEXD_DTYPE_F32, n, &error));
    expect_error(error, MEXD_ERROR_NO_MEMORY, "tensor over the backend's limit");
    g_test_skip("the device has no bufferDeviceAddress (or binds more than 2 GiB)");
    return;
  }
  g_autofree float *h = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    h[i] = (float)(i % 1001) * 0.001f - 0.5f;
  g_autoptr(MexdTensor) x = mexd_tensor_new_1d(vk, MEXD_DTYPE_F32, n, &error);
  g_autoptr(MexdTensor) y = mexd_tensor_new_1d(vk, MEXD_DTYPE_F32, n, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_tensor_write_f32(x, h, n, &error));
  g_assert_true(mexd_lincomb(y, 2.0f, x, 0, NULL, 0, NULL, 0.0f, &error));
  g_assert_no_error(error);
  /* C [rows, COLS] = X [rows, K] · B [K, COLS], B[k][c] = (k == c) + 0.5 (c == 3) */
  float hb[K * COLS] = {0};
  for (int k = 0; k < K; k++)
    for (int c = 0; c < COLS; c++)
      hb[k * COLS + c] = (k == c ? 1.0f : 0.0f) + (c == 3 ? 0.5f : 0.0f);
  g_autoptr(MexdTensor) b =
      mexd_tensor_new_from_f32(vk, MEXD_DTYPE_F32, 2, (int64_t[]){K, COLS}, hb, &error);
  g_autoptr(MexdTensor) x2 = mexd_tensor_reshape(x, 2, (int64_t[]){rows, K}, &error);
  g_autoptr(MexdTensor) c = mexd_tensor_new_2d(vk, MEXD_DTYPE_F32, rows, COLS, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_gemm(c, x2, b, NULL, NULL, &error));
  /* a small view at an unaligned offset past the range: bound through a descriptor */
  g_autoptr(MexdTensor) tail = mexd_tensor_rows(x, n - 1003, 1001, &error);
  g_autoptr(MexdTensor) t2 = mexd_tensor_new_1d(vk, MEXD_DTYPE_F32, 1001, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_lincomb(t2, 1.0f, tail, 0, NULL, 0, NULL, 0.0f, &error));
  g_assert_no_error(error);

  g_autofree float *hy = mexd_tensor_dup_f32(y, &error);
  g_autofree float *hc = mexd_tensor_dup_f32(c, &error);
  g_autofree float *ht = mexd_tensor_dup_f32(t2, &error);
  g_assert_no_error(error);
  for (int64_t i = 0; i < n; i++)
    if (hy[i] != 2.0f * h[i])
      g_error("y[%" G_GINT64_FORMAT "] = %g, expected %g", i, hy[i], 2.0f * h[i]);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = h + r * K;
    double sum = 0;
    for (int k = 0; k < K; k++)
      sum += xr[k];
    for (int cc = 0; cc < COLS; cc++) {
      double want = (cc < K ? xr[cc] : 0) + (cc == 3 ? 0.5 * sum : 0);
      if (fabs(hc[r * COLS + cc] - want) > 1e-5 * (1 + fabs(want)))
        g_error("C[%" G_GINT64_FORMAT ",%d] = %g, expected %g", r, cc, hc[r * COLS + cc], want);
    }
  }
  g_assert_cmpmem(ht, 1001 * sizeof(float), h + n - 1003, 1001 * sizeof(float));
}

/* Work that outlives MEXD_VK_TIMEOUT is reported as a device failure, and the backend then refuses
 * more work with a clear error instead of reusing memory the device may still be using. */
static void test_timeout(void)
{
  g_setenv("MEXD_VK_TIMEOUT", "1", TRUE);
  g_autoptr(MexdBackend) vk = open_vulkan();
  g_unsetenv("MEXD_VK_TIMEOUT");
  if (!vk)
    return;
  GError *error = NULL;
  enum { N = 2048 };
  g_autoptr(MexdTensor) a = mexd_tensor_new_zeros(vk, MEXD_DTYPE_F32, 2, (int64_t[]){N, N}, &error);
  g_autoptr(MexdTensor) c = mexd_tensor_new_2d(vk, MEXD_DTYPE_F32, N, N, &error);
  g_assert_no_error(error);
  gint64 t0 = g_get_monotonic_time();
  g_assert_true(mexd_gemm(c, a, a, NULL, NULL, &error));
  g_assert_true(mexd_gemm(a, c, c, NULL, NULL, &error));
  g_assert_no_error(error);
  if (mexd_backend_sync(vk, &error)) {
    g_test_skip_printf("the device ran 2 GEMMs of 2048³ in %.2f s, within the 1 s limit",
                       (double)(g_get_monotonic_time() - t0) / 1e6);
    return;
  }
  g_assert_nonnull(strstr(error->message, "MEXD_VK_TIMEOUT"));
  expect_error(error, MEXD_ERROR_DEVICE, "timeout");
  error = NULL;
  g_assert_false(mexd_gemm(c, a, a, NULL, NULL, &error));
  g_assert_nonnull(strstr(error->message, "failed earlier"));
  expect_error(error, MEXD_ERROR_DEVICE, "work after a timeout");
  error = NULL;
  float v[4];
  g_autoptr(MexdTensor) four = mexd_tensor_new_1d(vk, MEXD_DTYPE_F32, 4, &error);
  g_assert_false(mexd_tensor_read_f32(four, v, 4, &error));
  expect_error(error, MEXD_ERROR_DEVICE, "read after a timeout");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/backend/choice", test_choice);
  g_test_add_func("/backend/vulkan/unaligned-views", test_unaligned_views);
  g_test_add_func("/backend/vulkan/write-after-record", test_write_after_record);
  g_test_add_func("/backend/vulkan/in-flight", test_in_flight);
  g_test_add_func("/backend/vulkan/allocator-stress", test_allocator_stress);
  g_test_add_func("/backend/vulkan/limits", test_limits);
  g_test_add_func("/backend/vulkan/timeout", test_timeout);
  return g_test_run();
}
