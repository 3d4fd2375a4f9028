/* cpu.h: helpers for the cpu kernels in lib/ops/.  The kernels compute in f32 (accumulating in
 * f32 or double); f16 tensors are converted on the way in and rounded once on the way out, which is
 * what the shaders do too. */
#pragma once

#include "core/parallel.h"
#include "core/tensor.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

G_BEGIN_DECLS

/* The tensor's values as f32: its own data when it is f32 (*owned = FALSE), else a converted copy
 * (*owned = TRUE, g_free it). */
float *mexd_cpu_f32_in(const MexdTensor *t, gboolean *owned);
/* A f32 buffer to write the tensor's values into; `load` fills it with the current values (for
 * accumulating ops).  Hand it to mexd_cpu_f32_done() with store = TRUE to write it back. */
float *mexd_cpu_f32_out(MexdTensor *t, gboolean load, gboolean *owned);
void mexd_cpu_f32_done(MexdTensor *t, float *f, gboolean owned, gboolean store);

/* e^−a for a ≥ 0 (+inf and NaN included: a is clamped to 150, where e^−a is below f32's range),
 * in double without libm and without branches, so that loops over it vectorize: a = k·ln2 − r,
 * |r| ≤ ln2/2, degree-10 Taylor for e^r (relative error < 1e-12), 2^−k from the exponent bits
 * (k rounded with the 1.5·2^52 trick).  Rounded to f32 it is within 1 ulp of the exact value. */
static inline double mexd_exp_neg(double a)
{
  a = a < 150.0 ? a : 150.0;
  const double magic = 6755399441055744.0;
  double kd = a * 1.4426950408889634 + magic;
  int64_t kbits, mbits;
  memcpy(&kbits, &kd, sizeof kbits);
  memcpy(&mbits, &magic, sizeof mbits);
  kd -= magic;
  double r = kd * 0.6931471805599453 - a; /* e^−a = 2^−k·e^r */
  double p = 1.0 / 3628800;
  p = p * r + 1.0 / 362880;
  p = p * r + 1.0 / 40320;
  p = p * r + 1.0 / 5040;
  p = p * r + 1.0 / 720;
  p = p * r + 1.0 / 120;
  p = p * r + 1.0 / 24;
  p = p * r + 1.0 / 6;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  uint64_t bits = (uint64_t)(1023 - (kbits - mbits)) << 52;
  double two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}

/* softplus (beta 1, threshold 20) as PyTorch's: x above 20, else log(1 + e^x), written as
 * max(x, 0) + log1p(e^−|x|) and evaluated in double with polynomials instead of libm's expf and
 * log1pf (those were 15% of a whole MExD run: the diffusion sampler calls it 50 million times),
 * branch-free so that a loop over it vectorizes.  e^−|x|: mexd_exp_neg; log1p(u), 0 < u ≤ 1:
 * 2·atanh(s), s = u/(2 + u) ≤ 1/3, odd series to s^21 (relative error < 1e-11).  The double
 * result is rounded once, so it is within 1 ulp of the exact value (libm's f32 composition was
 * within a few); NaN stays NaN, −inf gives 0. */
static inline float mexd_softplus_f32(float v)
{
  double x = v;
  double u = mexd_exp_neg(fabs(x));
  double s = u / (2.0 + u), s2 = s * s;
  double q = 1.0 / 21;
  q = q * s2 + 1.0 / 19;
  q = q * s2 + 1.0 / 17;
  q = q * s2 + 1.0 / 15;
  q = q * s2 + 1.0 / 13;
  q = q * s2 + 1.0 / 11;
  q = q * s2 + 1.0 / 9;
  q = q * s2 + 1.0 / 7;
  q = q * s2 + 1.0 / 5;
  q = q * s2 + 1.0 / 3;
  q = q * s2 + 1.0;
  float res = (float)((x > 0 ? x : 0.0) + 2.0 * s * q);
  int keep = (v > 20.0f) | (v != v); /* not ||: no branch in a vectorized loop */
  return keep ? v : res;
}

/* Hot loops (lib/backend/cpu-hot.c: built at -O3 without trapping math, one clone per vector ISA
 * picked at load time, since the build's baseline x86-64 flags leave them scalar; every clone
 * does the same IEEE operations in the same order, so results do not depend on the clone). */

/* y[i] = mexd_softplus_f32(x[i]), i < n (y may be x). */
void mexd_cpu_softplus_n(float *y, const float *x, int64_t n);

/* One row of the diffusion denoiser after its GEMM, in place: x ← softplus(LN(x ⊙ e)) ⊙ hz, with
 * mexd_mul's f32 products, layernorm's double statistics (eps 1e-5, gamma, beta), then
 * mexd_softplus_f32 and (hz not NULL) one more f32 product: the op path's numbers. */
void mexd_cpu_diffc_row(float *x, const float *e, const float *gamma, const float *beta,
                        const float *hz, int64_t F);

/* y[i] += a·x[i], i < n (the direct convolution's inner loop). */
void mexd_cpu_axpy(float *y, const float *x, float a, int64_t n);
/* y[0, n) += w[t]·x[t·xstride + (0, n)] for t = 0 .. taps−1 in that order: a column of taps of a
 * direct convolution in one call (bitwise the same as `taps` calls of mexd_cpu_axpy). */
void mexd_cpu_axpy_taps(float *y, const float *x, int64_t xstride, const float *w, int64_t taps,
                        int64_t n);

/* C = alpha·op(A)·op(B) + beta·C, row-major, `batch` matrices (element strides sab, sbb, scb)
 * with leading dimensions lda, ldb, ldc, as cblas_sgemm: split in tiles of C that depend on the
 * shape alone and run over the thread pool, each tile one single-threaded cblas_sgemm
 * (gemm.c says why).  Only with a CBLAS. */
void mexd_cpu_sgemm(gboolean trans_a, gboolean trans_b, int64_t batch, int64_t M, int64_t N,
                    int64_t K, float alpha, const float *A, int64_t lda, int64_t sab,
                    const float *B, int64_t ldb, int64_t sbb, float beta, float *C, int64_t ldc,
                    int64_t scb);

/* One softmax row (softmax.c says how; y may be x). */
void mexd_cpu_softmax_row(float *y, const float *x, int64_t D);

G_END_DECLS
