/* op-gemm.c: gemm against a naive double-precision reference (cpu) and against cpu (others). */
#include "harness.h"

#include <math.h>
#include <string.h>

typedef struct {
  int64_t batch, M, N, K;
  gboolean a3, b3; /* operand has its own batch (else shared 2-D) */
  MexdGemmParams p;
  gboolean bias;
} GemmShape;

static void ref_gemm(const GemmShape *s, const float *a, const float *b, const float *bias,
                     const float *c0, double *out)
{
  for (int64_t bt = 0; bt < s->batch; bt++)
    for (int64_t i = 0; i < s->M; i++)
      for (int64_t j = 0; j < s->N; j++) {
        double acc = 0;
        for (int64_t k = 0; k < s->K; k++) {
          const float *ab = a + (s->a3 ? bt * s->M * s->K : 0);
          const float *bb = b + (s->b3 ? bt * s->K * s->N : 0);
          double av = s->p.trans_a ? ab[k * s->M + i] : ab[i * s->K + k];
          double bv = s->p.trans_b ? bb[j * s->K + k] : bb[k * s->N + j];
          acc += av * bv;
        }
        int64_t ci = (bt * s->M + i) * s->N + j;
        double v = s->p.alpha * acc;
        if (s->p.beta != 0)
          v += s->p.beta * (double)c0[ci];
        if (bias)
          v += bias[j];
        out[ci] = v;
      }
}

/* Runs one gemm on `be` and returns C as f32. */
static float *run_gemm(MexdBackend *be, MexdDType dt, const GemmShape *s, const float *a,
                       const float *b, const float *bias, const float *c0)
{
  int64_t ash[3] = {s->batch, s->p.trans_a ? s->K : s->M, s->p.trans_a ? s->M : s->K};
  int64_t bsh[3] = {s->batch, s->p.trans_b ? s->N : s->K, s->p.trans_b ? s->K : s->N};
  int64_t csh[3] = {s->batch, s->M, s->N};
  gboolean c3 = s->a3 || s->b3 || s->batch > 1;
  g_autoptr(MexdTensor) ta = harness_tensor(be, dt, s->a3 ? 3 : 2, s->a3 ? ash : ash + 1, a);
  g_autoptr(MexdTensor) tb = harness_tensor(be, dt, s->b3 ? 3 : 2, s->b3 ? bsh : bsh + 1, b);
  g_autoptr(MexdTensor) tc = harness_tensor(be, dt, c3 ? 3 : 2, c3 ? csh : csh + 1, c0);
  g_autoptr(MexdTensor) tbias = NULL;
  if (bias) {
    int64_t n = s->N;
    tbias = harness_tensor(be, dt, 1, &n, bias);
  }
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_gemm(tc, ta, tb, tbias, &s->p, &error));
  g_assert_no_error(error);
  return harness_read(tc);
}

static void random_shape(GemmShape *s, int64_t max_dim)
{
  s->M = harness_size(max_dim);
  s->N = harness_size(max_dim);
  s->K = harness_size(max_dim);
  s->batch = g_test_rand_int_range(0, 3) == 0 ? g_test_rand_int_range(2, 4) : 1;
  s->a3 = s->batch > 1 && g_test_rand_bit();
  s->b3 = s->batch > 1 && (g_test_rand_bit() || !s->a3);
  s->p.trans_a = g_test_rand_bit();
  s->p.trans_b = g_test_rand_bit();
  s->p.alpha = g_test_rand_bit() ? 1.0f : (float)g_test_rand_double_range(-2, 2);
  s->p.beta = g_test_rand_bit() ? 0.0f : (float)g_test_rand_double_range(-1, 1);
  s->bias = g_test_rand_bit();
}

static void test_gemm_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    GemmShape s = {0};
    random_shape(&s, hc->be == hc->cpu ? 96 : 300);
    int64_t na = (s.a3 ? s.batch : 1) * s.M * s.K, nb = (s.b3 ? s.batch : 1) * s.K * s.N;
    int64_t nc = s.batch * s.M * s.N;
    g_autofree float *a = harness_random(na, -1, 1, hc->dtype);
    g_autofree float *b = harness_random(nb, -1, 1, hc->dtype);
    g_autofree float *bias = harness_random(s.N, -1, 1, hc->dtype);
    g_autofree float *c0 = harness_random(nc, -1, 1, hc->dtype);
    g_autofree char *what = g_strdup_printf(
        "gemm %s batch %" G_GINT64_FORMAT " M %" G_GINT64_FORMAT " N %" G_GINT64_FORMAT
        " K %" G_GINT64_FORMAT " ta %d tb %d alpha %g beta %g bias %d",
        hc->spec, s.batch, s.M, s.N, s.K, s.p.trans_a, s.p.trans_b, s.p.alpha, s.p.beta, s.bias);
    g_autofree float *out = run_gemm(hc->be, hc->dtype, &s, a, b, s.bias ? bias : NULL, c0);
    if (hc->be == hc->cpu) {
      g_autofree double *ref = g_new(double, nc);
      ref_gemm(&s, a, b, s.bias ? bias : NULL, c0, ref);
      harness_assert_close_d(what, out, ref, nc, harness_thr(hc, NMSE_F32_GEMM));
    } else {
      g_autofree float *ref = run_gemm(hc->cpu, hc->dtype, &s, a, b, s.bias ? bias : NULL, c0);
      harness_assert_close(what, out, ref, nc, harness_thr(hc, NMSE_F32_GEMM));
    }
  }
}

/* beta = 0 must ignore C's old contents, NaN included (BLAS semantics). */
static void test_gemm_beta0_nan(const HarnessCase *hc)
{
  GemmShape s = {.batch = 1, .M = 5, .N = 3, .K = 4, .p = MEXD_GEMM_PARAMS_DEFAULT};
  float a[20], b[12], c0[15];
  for (int i = 0; i < 20; i++)
    a[i] = (float)(i % 5) - 2;
  for (int i = 0; i < 12; i++)
    b[i] = (float)(i % 3);
  for (int i = 0; i < 15; i++)
    c0[i] = NAN;
  g_autofree float *out = run_gemm(hc->be, hc->dtype, &s, a, b, NULL, c0);
  double ref[15];
  ref_gemm(&s, a, b, NULL, c0, ref);
  harness_assert_close_d("gemm beta 0 over NaN", out, ref, 15, 0);
}

/* A long K (lavapipe stops an invocation's loops after 65,535 iterations: gemm.c splits K there):
 * batched, with beta, alpha and bias, against the double reference on every backend. */
static void test_gemm_long_k(const HarnessCase *hc)
{
  GemmShape s = {.batch = 2, .M = 9, .N = 5, .K = 70001, .a3 = TRUE, .b3 = TRUE,
                 .p = {FALSE, FALSE, 0.5f, -0.75f}, .bias = TRUE};
  int64_t na = s.batch * s.M * s.K, nb = s.batch * s.K * s.N, nc = s.batch * s.M * s.N;
  g_autofree float *a = harness_random(na, -1, 1, hc->dtype);
  g_autofree float *b = harness_random(nb, -1, 1, hc->dtype);
  g_autofree float *bias = harness_random(s.N, -1, 1, hc->dtype);
  g_autofree float *c0 = harness_random(nc, -1, 1, hc->dtype);
  g_autofree float *out = run_gemm(hc->be, hc->dtype, &s, a, b, bias, c0);
  g_autofree double *ref = g_new(double, nc);
  ref_gemm(&s, a, b, bias, c0, ref);
  harness_assert_close_d("gemm K 70001", out, ref, nc, harness_thr(hc, NMSE_F32_GEMM));
}

/* The plain-C cpu kernel (used where there is no BLAS) against the reference. */
static void test_gemm_plain_c(const HarnessCase *hc)
{
  if (hc->be != hc->cpu)
    return;
  g_setenv("MEXD_CPU_NO_BLAS", "1", TRUE);
  test_gemm_random(hc);
  g_unsetenv("MEXD_CPU_NO_BLAS");
}

static void test_gemm_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  GError *error = NULL;
  g_autoptr(MexdTensor) a = mexd_tensor_new_2d(be, hc->dtype, 4, 3, NULL);
  g_autoptr(MexdTensor) b = mexd_tensor_new_2d(be, hc->dtype, 3, 5, NULL);
  g_autoptr(MexdTensor) c = mexd_tensor_new_2d(be, hc->dtype, 4, 5, NULL);
  g_autoptr(MexdTensor) wrong = mexd_tensor_new_2d(be, hc->dtype, 4, 6, NULL);
  g_autoptr(MexdTensor) i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 5, NULL);
  g_autoptr(MexdTensor) bias_bad = mexd_tensor_new_1d(be, hc->dtype, 4, NULL);
  g_autoptr(MexdTensor) other =
      mexd_tensor_new_2d(hc->be == hc->cpu ? hc->be : hc->cpu, hc->dtype, 3, 5, NULL);
  g_assert_false(mexd_gemm(NULL, a, b, NULL, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gemm c NULL");
  error = NULL;
  g_assert_false(mexd_gemm(c, NULL, b, NULL, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "gemm a NULL");
  error = NULL;
  g_assert_false(mexd_gemm(wrong, a, b, NULL, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gemm wrong c");
  error = NULL;
  g_assert_false(mexd_gemm(c, a, i32, NULL, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "gemm i32 b");
  error = NULL;
  g_assert_false(mexd_gemm(c, a, b, bias_bad, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gemm bias shape");
  error = NULL;
  g_assert_false(mexd_gemm(c, c, b, NULL, NULL, &error));
  harness_assert_error(error, -1, "gemm aliasing or shape");
  if (hc->be != hc->cpu) {
    error = NULL;
    g_assert_false(mexd_gemm(c, a, other, NULL, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "gemm mixed backends");
  }
}

void register_gemm_tests(void)
{
  harness_add("gemm/random", HARNESS_BOTH, test_gemm_random);
  harness_add("gemm/beta0-nan", HARNESS_F32, test_gemm_beta0_nan);
  harness_add("gemm/plain-c", HARNESS_F32, test_gemm_plain_c);
  harness_add("gemm/long-k", HARNESS_BOTH, test_gemm_long_k);
  harness_add("gemm/errors", HARNESS_BOTH, test_gemm_errors);
}
