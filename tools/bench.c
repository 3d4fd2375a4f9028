/* bench.c: `mexd bench` — throughput figures for docs/PERFORMANCE.md.
 *
 *   mexd bench gemm M N K [--device D] [--dtype f32|f16] [--reps R] [--json]
 *
 * Times C = A·B (A [M,K], B [K,N], row-major, no transposes) from recording to the end of the
 * device's work (one sync per run), after one warm-up run; prints the median of R runs.  On the
 * cpu backend it also times OpenBLAS's own cblas_sgemm on the same matrices in the same run, so the
 * backend's overhead over the library is visible.  M, N, K 1..1048576 with each matrix at most
 * 2^29 elements (2 GiB of f32, a device tensor's limit); --reps 1..10000 (default: 5 to 30 by
 * size). */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef MEXD_HAVE_CBLAS
#include <cblas.h>
#endif

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double mexd_median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* An integer argument (a dimension); *out is left alone otherwise. */
static gboolean parse_dim(const char *s, int64_t *out)
{
  gint64 v;
  if (!g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64, &v, NULL))
    return FALSE;
  *out = v;
  return TRUE;
}

static int bench_gemm(int argc, char **argv)
{
  const char *device = NULL, *dtype_s = "f32";
  int reps = 0;
  gboolean json = FALSE, reps_given = FALSE;
  int64_t dims[3];
  int nd = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
      device = argv[++i];
    else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
      dtype_s = argv[++i];
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      gint64 v;
      if (!g_ascii_string_to_signed(argv[++i], 10, G_MININT64, G_MAXINT64, &v, NULL)) {
        fprintf(stderr, "mexd bench gemm: --reps takes an integer, not \"%s\"\n", argv[i]);
        return 2;
      }
      if (!mexd_opt_int("mexd bench gemm", "--reps", v, 1, 10000))
        return 2;
      reps = (int)v;
      reps_given = TRUE;
    } else if (strcmp(argv[i], "--device") == 0 || strcmp(argv[i], "--dtype") == 0 ||
               strcmp(argv[i], "--reps") == 0) {
      fprintf(stderr, "mexd bench gemm: %s needs a value\n", argv[i]);
      return 2;
    } else if (strcmp(argv[i], "--json") == 0)
      json = TRUE;
    else if (strcmp(argv[i], "--help") == 0) {
      printf("usage: mexd bench gemm M N K [--device D] [--dtype f32|f16] [--reps R] [--json]\n"
             "  M, N, K 1..1048576 (each matrix at most 2^29 elements); --reps 1..10000\n");
      return 0;
    } else if (nd < 3 && parse_dim(argv[i], &dims[nd]))
      nd++;
    else {
      fprintf(stderr, "mexd bench gemm: bad argument \"%s\"%s (give M N K, 1..1048576)\n",
              argv[i], nd < 3 ? (nd == 0 ? " for M" : nd == 1 ? " for N" : " for K") : "");
      return 2;
    }
  }
  if (nd != 3) {
    fprintf(stderr, "mexd bench gemm: give M N K (positive integers)\n");
    return 2;
  }
  static const char *const dim_names[3] = {"M", "N", "K"};
  for (int k = 0; k < 3; k++)
    if (!mexd_opt_int("mexd bench gemm", dim_names[k], dims[k], 1, 1 << 20))
      return 2;
  MexdDType dt;
  if (strcmp(dtype_s, "f32") == 0)
    dt = MEXD_DTYPE_F32;
  else if (strcmp(dtype_s, "f16") == 0)
    dt = MEXD_DTYPE_F16;
  else {
    fprintf(stderr, "mexd bench gemm: --dtype is f32 or f16, not \"%s\"\n", dtype_s);
    return 2;
  }
  int64_t M = dims[0], N = dims[1], K = dims[2];
  const struct {
    const char *name;
    int64_t r, c;
  } mats[] = {{"A [M, K]", M, K}, {"B [K, N]", K, N}, {"C [M, N]", M, N}};
  for (size_t k = 0; k < G_N_ELEMENTS(mats); k++)
    if (mats[k].r * mats[k].c > ((int64_t)1 << 29)) {
      fprintf(stderr, "mexd bench gemm: %s has %" G_GINT64_FORMAT " elements, more than 2^29 "
                      "(2 GiB of f32, a device tensor's limit)\n",
              mats[k].name, mats[k].r * mats[k].c);
      return 2;
    }
  double flop = 2.0 * (double)M * (double)N * (double)K;
  if (!reps_given)
    reps = flop > 1e11 ? 5 : flop > 1e9 ? 10 : 30;

  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "mexd bench gemm: %s\n", error->message);
    return 1;
  }
  float *a = g_try_new(float, M * K), *b = g_try_new(float, K * N);
  if (!a || !b) {
    fprintf(stderr, "mexd bench gemm: no memory for the %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                    " and %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " inputs\n", M, K, K, N);
    g_free(a);
    g_free(b);
    return 1;
  }
  GRand *rng = g_rand_new_with_seed(1);
  for (int64_t i = 0; i < M * K; i++)
    a[i] = (float)g_rand_double_range(rng, -1, 1);
  for (int64_t i = 0; i < K * N; i++)
    b[i] = (float)g_rand_double_range(rng, -1, 1);
  g_rand_free(rng);
  int64_t sa[2] = {M, K}, sb[2] = {K, N};
  g_autoptr(MexdTensor) ta = mexd_tensor_new_from_f32(be, dt, 2, sa, a, &error);
  g_autoptr(MexdTensor) tb = ta ? mexd_tensor_new_from_f32(be, dt, 2, sb, b, &error) : NULL;
  g_autoptr(MexdTensor) tc = tb ? mexd_tensor_new_2d(be, dt, M, N, &error) : NULL;
  if (!tc) {
    fprintf(stderr, "mexd bench gemm: %s\n", error->message);
    g_free(a);
    g_free(b);
    return 1;
  }
  double *t = g_new(double, reps);
  for (int r = -1; r < reps; r++) {
    gint64 t0 = g_get_monotonic_time();
    if (!mexd_gemm(tc, ta, tb, NULL, NULL, &error) || !mexd_backend_sync(be, &error)) {
      fprintf(stderr, "mexd bench gemm: %s\n", error->message);
      g_free(t);
      g_free(a);
      g_free(b);
      return 1;
    }
    if (r >= 0)
      t[r] = (double)(g_get_monotonic_time() - t0) / 1e6;
  }
  double med = mexd_median(t, reps);
  double blas_med = 0;
#ifdef MEXD_HAVE_CBLAS
  if (mexd_backend_kind(be) == MEXD_BACKEND_CPU && dt == MEXD_DTYPE_F32) {
    float *c = g_try_new(float, M * N);
    for (int r = -1; c && r < reps; r++) {
      gint64 t0 = g_get_monotonic_time();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, a,
                  (int)K, b, (int)N, 0.0f, c, (int)N);
      if (r >= 0)
        t[r] = (double)(g_get_monotonic_time() - t0) / 1e6;
    }
    blas_med = c ? mexd_median(t, reps) : 0;
    g_free(c);
  }
#endif
  if (json) {
    printf("{\"op\":\"gemm\",\"device\":\"%s\",\"dtype\":\"%s\",\"M\":%" G_GINT64_FORMAT
           ",\"N\":%" G_GINT64_FORMAT ",\"K\":%" G_GINT64_FORMAT
           ",\"reps\":%d,\"median_s\":%.6g,\"gflops\":%.2f",
           mexd_backend_name(be), dtype_s, M, N, K, reps, med, flop / med / 1e9);
    if (blas_med > 0)
      printf(",\"openblas_gflops\":%.2f,\"ratio_to_openblas\":%.3f", flop / blas_med / 1e9,
             blas_med / med);
    printf("}\n");
  } else {
    printf("device: %s\n", mexd_backend_name(be));
    printf("gemm %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
           " %s: median %.3f ms over %d runs, %.1f GFLOP/s\n",
           M, N, K, dtype_s, med * 1e3, reps, flop / med / 1e9);
    if (blas_med > 0)
      printf("openblas cblas_sgemm, same matrices, same run: median %.3f ms, %.1f GFLOP/s; "
             "backend/openblas = %.3f\n",
             blas_med * 1e3, flop / blas_med / 1e9, blas_med / med);
  }
  g_free(t);
  g_free(a);
  g_free(b);
  return 0;
}

int mexd_cmd_bench(int argc, char **argv)
{
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    printf("usage: mexd bench gemm M N K [--device D] [--dtype f32|f16] [--reps R] [--json]\n"
           "       mexd bench mexd [--n N] [--dim D] [--model M] [--chains S] [--device D] "
           "[--json]\n"
           "       mexd bench backbone --backbone B [--batch N] [--precision fp32|fp16] "
           "[--device D] [--json]\n"
           "       mexd bench read SLIDE [--threads 1,2] [--max-tiles N] [--mag M] [--json]\n"
           "       mexd bench train [--stage adapter|moe|diffusion|abmil] [--bags B] [--n N] "
           "[--dim D] [--device D] [--json]\n");
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "gemm") == 0)
    return bench_gemm(argc - 1, argv + 1);
  if (strcmp(argv[1], "mexd") == 0)
    return mexd_bench_mexd(argc - 1, argv + 1);
  if (strcmp(argv[1], "backbone") == 0)
    return mexd_bench_backbone(argc - 1, argv + 1);
  if (strcmp(argv[1], "read") == 0)
    return mexd_bench_read(argc - 1, argv + 1);
  if (strcmp(argv[1], "train") == 0)
    return mexd_bench_train(argc - 1, argv + 1);
  fprintf(stderr, "mexd bench: unknown benchmark \"%s\" (available: gemm, mexd, backbone, read, train)\n",
          argv[1]);
  return 2;
}
