/* op-reduce.c: mexd_mean_rows and mexd_segment_mean against a naive double-precision reference
 * (cpu) and against cpu (others).  Row counts cover both vulkan paths: short segments (one
 * invocation per output) and long ones (chunked partial sums, one or two passes). */
#include "harness.h"

#include <string.h>

/* x is [M,N] split as `ndim` dims (leading ones multiply to M). */
typedef struct {
  int ndim;
  int64_t shape[4];
  int64_t M, N;
} RShape;

static void rshape_init(RShape *s, int64_t M, int64_t N)
{
  s->M = M;
  s->N = N;
  s->ndim = 2;
  s->shape[0] = M;
  s->shape[1] = N;
  int r = g_test_rand_int_range(0, 4);
  if (r == 0 && g_test_rand_int_range(0, 3) == 0) { /* 1-D x: a single row of N */
    s->ndim = 1;
    s->M = 1;
    s->shape[0] = N;
  } else if (r == 1) { /* 3-D with M split as a·(M/a) when it divides */
    int64_t a = M % 3 == 0 ? 3 : M % 2 == 0 ? 2 : 1;
    s->ndim = 3;
    s->shape[0] = a;
    s->shape[1] = M / a;
    s->shape[2] = N;
  } else if (r == 2) {
    s->ndim = 4;
    s->shape[0] = 1;
    s->shape[1] = M;
    s->shape[2] = 1;
    s->shape[3] = N;
  }
}

/* seg_len 0: mean_rows */
static void ref_means(const RShape *s, int64_t seg_len, const float *x, double *out)
{
  int64_t L = seg_len ? seg_len : s->M;
  int64_t nseg = (s->M + L - 1) / L;
  for (int64_t g = 0; g < nseg; g++)
    for (int64_t j = 0; j < s->N; j++) {
      double acc = 0;
      int64_t cnt = 0;
      for (int64_t r = g * L; r < s->M && r < (g + 1) * L; r++, cnt++)
        acc += x[r * s->N + j];
      out[g * s->N + j] = acc / (double)cnt;
    }
}

static float *run_means(MexdBackend *be, MexdDType dt, const RShape *s, int64_t seg_len,
                        const float *x, int64_t pad)
{
  g_autoptr(MexdTensor) tx = harness_view_tensor(be, dt, s->ndim, s->shape, x, pad);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) ty = NULL;
  gboolean ok;
  if (seg_len == 0) {
    ty = mexd_tensor_new_1d(be, dt, s->N, &error);
    g_assert_no_error(error);
    ok = mexd_mean_rows(ty, tx, &error);
  } else {
    ty = mexd_tensor_new_2d(be, dt, (s->M + seg_len - 1) / seg_len, s->N, &error);
    g_assert_no_error(error);
    ok = mexd_segment_mean(ty, tx, seg_len, &error);
  }
  g_assert_no_error(error);
  g_assert_true(ok);
  return harness_read(ty);
}

static void check_means(const HarnessCase *hc, int64_t M, int64_t N, int64_t seg_len)
{
  RShape s;
  rshape_init(&s, M, N);
  int64_t L = seg_len ? seg_len : s.M;
  int64_t ny = (s.M + L - 1) / L * s.N;
  int64_t pad = g_test_rand_bit() ? 0 : g_test_rand_int_range(1, 4);
  g_autofree float *x = harness_random(s.M * s.N, -1, 3, hc->dtype);
  g_autofree char *what =
      g_strdup_printf("%s %s %s: x [%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                      "] as %d-D, seg_len %" G_GINT64_FORMAT ", pad %" G_GINT64_FORMAT,
                      seg_len ? "segment_mean" : "mean_rows", hc->spec, mexd_dtype_name(hc->dtype),
                      s.M, s.N, s.ndim, seg_len, pad);
  g_autofree float *out = run_means(hc->be, hc->dtype, &s, seg_len, x, pad);
  if (hc->be == hc->cpu) {
    g_autofree double *ref = g_new(double, ny);
    ref_means(&s, seg_len, x, ref);
    harness_assert_close_d(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  } else {
    g_autofree float *ref = run_means(hc->cpu, hc->dtype, &s, seg_len, x, 0);
    harness_assert_close(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  }
}

static void test_mean_rows_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 10; iter++) {
    /* up to 3000 rows: up to ~47 chunks of 64 on vulkan */
    int64_t M = g_test_rand_bit() ? harness_size(300) : harness_size(3000);
    int64_t N = harness_size(M > 300 ? 40 : 300);
    check_means(hc, M, N, 0);
  }
}

static void test_segment_mean_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 16; iter++) {
    int64_t M = harness_size(iter % 2 ? 3000 : 300);
    int64_t N = harness_size(M > 300 ? 40 : 200);
    int64_t seg_len;
    switch (iter % 6) {
    case 0: seg_len = 1; break;
    case 1:
      seg_len = g_test_rand_int_range(1, 65); /* short segments */
      break;
    case 2: /* chunked, several segments, the last one shorter */
      M = 700 + harness_size(2300);
      N = harness_size(40);
      seg_len = g_test_rand_int_range(65, 700);
      break;
    case 3:
      seg_len = M + g_test_rand_int_range(1, 100); /* longer than x */
      break;
    case 4:
      seg_len = MAX(1, M - 1); /* a last segment of one row */
      break;
    default: seg_len = M; break;
    }
    check_means(hc, M, N, seg_len);
  }
}

/* Many rows, as in a slide's tile features: the chunked passes with hundreds of chunks, a last
 * segment with fewer chunks than the others, and (in mean_rows) the second pass. */
static void test_means_long(const HarnessCase *hc)
{
  int64_t M = 30011, N = 33;
  check_means(hc, M, N, 0);
  check_means(hc, M, N, 7000);
  check_means(hc, M, N, 64);
  check_means(hc, M, N, 65);
}

/* More than 65535 workgroups, so that the grid spreads over y on vulkan: segment_mean.comp with
 * one-row segments (y = x exactly) and mean_rows.comp's first pass with 2-chunk segments (on cpu
 * the same checks run without a grid). */
static void test_reduce_large(const HarnessCase *hc)
{
  RShape s = {.ndim = 2, .shape = {65536 * 256 + 33, 1}, .M = 65536 * 256 + 33, .N = 1};
  g_autofree float *x = g_new(float, s.M);
  for (int64_t i = 0; i < s.M; i++)
    x[i] = (float)(i % 1001);
  g_autofree float *out = run_means(hc->be, hc->dtype, &s, 1, x, 0);
  for (int64_t i = 0; i < s.M; i++)
    if (out[i] != x[i])
      g_error("segment_mean %s seg_len 1: y[%" G_GINT64_FORMAT "] = %g, want %g", hc->spec, i,
              out[i], x[i]);

  RShape s2 = {.ndim = 2, .shape = {65536 * 33 + 17, 1}, .M = 65536 * 33 + 17, .N = 1};
  int64_t seg = 65, ny = (s2.M + seg - 1) / seg;
  g_autofree float *out2 = run_means(hc->be, hc->dtype, &s2, seg, x, 0);
  g_autofree double *ref = g_new(double, ny);
  ref_means(&s2, seg, x, ref);
  harness_assert_close_d("segment_mean seg_len 65, 65536·33 + 17 rows", out2, ref, ny,
                         harness_thr(hc, NMSE_F32));
}

static void test_reduce_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype, other_dt = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new_2d(be, dt, 10, 4, NULL);
  g_autoptr(MexdTensor) x3 = mexd_tensor_new(be, dt, 3, (int64_t[]){2, 5, 4}, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new_1d(be, dt, 4, NULL);
  g_autoptr(MexdTensor) y5 = mexd_tensor_new_1d(be, dt, 5, NULL);
  g_autoptr(MexdTensor) y2d = mexd_tensor_new_2d(be, dt, 1, 4, NULL);
  g_autoptr(MexdTensor) y_dt = mexd_tensor_new_1d(be, other_dt, 4, NULL);
  g_autoptr(MexdTensor) y_i32 = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 4, NULL);
  g_autoptr(MexdTensor) x_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 10, 4, NULL);
  g_autoptr(MexdTensor) s3 = mexd_tensor_new_2d(be, dt, 3, 4, NULL); /* ceil(10/4) = 3 */
  g_autoptr(MexdTensor) s2 = mexd_tensor_new_2d(be, dt, 2, 4, NULL);
  g_autoptr(MexdTensor) s1 = mexd_tensor_new_2d(be, dt, 1, 4, NULL);
  g_autoptr(MexdTensor) x_head = mexd_tensor_rows(x, 0, 1, NULL);
  g_autoptr(MexdTensor) x_row = mexd_tensor_reshape(x_head, 1, (int64_t[]){4}, NULL);
  g_autoptr(MexdTensor) x_head3 = mexd_tensor_rows(x, 7, 3, NULL);

  g_assert_false(mexd_mean_rows(NULL, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "mean_rows y NULL");
  error = NULL;
  g_assert_false(mexd_mean_rows(y, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "mean_rows x NULL");
  error = NULL;
  g_assert_false(mexd_mean_rows(y5, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "mean_rows y [5] for N 4");
  error = NULL;
  g_assert_false(mexd_mean_rows(y2d, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "mean_rows y [1,4]");
  error = NULL;
  g_assert_false(mexd_mean_rows(y_dt, x, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "mean_rows dtype mismatch");
  error = NULL;
  g_assert_false(mexd_mean_rows(y_i32, x_i32, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "mean_rows i32");
  error = NULL;
  g_assert_false(mexd_mean_rows(x_row, x, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "mean_rows y overlaps x");

  error = NULL;
  g_assert_false(mexd_segment_mean(NULL, x, 4, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "segment_mean y NULL");
  error = NULL;
  g_assert_false(mexd_segment_mean(s3, NULL, 4, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "segment_mean x NULL");
  error = NULL;
  g_assert_false(mexd_segment_mean(s3, x, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "segment_mean seg_len 0");
  error = NULL;
  g_assert_false(mexd_segment_mean(s3, x, -4, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "segment_mean seg_len -4");
  error = NULL;
  g_assert_false(mexd_segment_mean(s2, x, 4, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "segment_mean 2 rows for ceil(10/4)");
  error = NULL;
  g_assert_false(mexd_segment_mean(s3, x, 5, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "segment_mean 3 rows for 10/5");
  error = NULL;
  g_assert_false(mexd_segment_mean(y, x, 20, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "segment_mean y 1-D");
  error = NULL;
  g_assert_false(mexd_segment_mean(s2, x3, 4, &error)); /* x3 has 10 rows as well */
  harness_assert_error(error, MEXD_ERROR_SHAPE, "segment_mean 3-D x, 2 rows for ceil(10/4)");
  error = NULL;
  g_assert_false(mexd_segment_mean(s3, x_i32, 4, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "segment_mean x i32");
  error = NULL;
  g_assert_false(mexd_segment_mean(x_head3, x, 4, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "segment_mean y overlaps x");
  /* these fit */
  error = NULL;
  g_assert_true(mexd_segment_mean(s1, x, 20, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_segment_mean(s3, x3, 4, &error));
  g_assert_no_error(error);
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) other = mexd_tensor_new_2d(hc->cpu, dt, 10, 4, NULL);
    error = NULL;
    g_assert_false(mexd_mean_rows(y, other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "mean_rows mixed backends");
    error = NULL;
    g_assert_false(mexd_segment_mean(s3, other, 4, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "segment_mean mixed backends");
  }
}

void register_reduce_tests(void)
{
  harness_add("mean_rows/random", HARNESS_BOTH, test_mean_rows_random);
  harness_add("segment_mean/random", HARNESS_BOTH, test_segment_mean_random);
  harness_add("reduce/long", HARNESS_BOTH, test_means_long);
  harness_add("reduce/large", HARNESS_F32, test_reduce_large);
  harness_add("reduce/errors", HARNESS_BOTH, test_reduce_errors);
}
