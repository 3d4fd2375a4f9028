/* cpu-hot.c: the few cpu loops that dominate a run, built with their own flags (lib/meson.build:
 * -O3 -fno-trapping-math, so the softplus polynomial's selects if-convert and the loops
 * vectorize) and, with GCC on x86-64 Linux, cloned per vector ISA (target_clones, resolved once
 * at load).  Neither changes a result: no reassociation and no FMA contraction (-std=c11 keeps
 * -ffp-contract off), so each clone does the scalar code's operations in its order; the double
 * sums of the LayerNorm stay sequential. */
#include "backend/cpu.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

HOT void mexd_cpu_softplus_n(float *y, const float *x, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    y[i] = mexd_softplus_f32(x[i]);
}

HOT void mexd_cpu_diffc_row(float *x, const float *e, const float *gamma, const float *beta,
                            const float *hz, int64_t F)
{
  for (int64_t i = 0; i < F; i++)
    x[i] = x[i] * e[i];
  double s = 0;
  for (int64_t i = 0; i < F; i++)
    s += x[i];
  double mean = s / (double)F;
  double ss = 0;
  for (int64_t i = 0; i < F; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  double rstd = 1.0 / sqrt(ss / (double)F + (double)1e-5f);
  for (int64_t i = 0; i < F; i++) {
    double v = (x[i] - mean) * rstd;
    v *= gamma[i];
    v += beta[i];
    x[i] = (float)v;
  }
  for (int64_t i = 0; i < F; i++)
    x[i] = mexd_softplus_f32(x[i]);
  if (hz)
    for (int64_t i = 0; i < F; i++)
      x[i] = x[i] * hz[i];
}

HOT void mexd_cpu_axpy(float *y, const float *x, float a, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    y[i] += a * x[i];
}

HOT void mexd_cpu_axpy_taps(float *y, const float *x, int64_t xstride, const float *w,
                            int64_t taps, int64_t n)
{
  for (int64_t t = 0; t < taps; t++) {
    const float *xr = x + t * xstride;
    const float a = w[t];
    for (int64_t i = 0; i < n; i++)
      y[i] += a * xr[i];
  }
}

/* Lanes for the row reductions of the softmax: one sequential chain of compares (the max) and
 * one of double adds (the sum) held a row at ~8 cycles an element (a fifth of a 10,000-instance
 * Nyström forward), so both run in independent lanes that vectorize.  The max is the same in
 * any order (NaN never replaces it; a −0/+0 tie gives the same x − m); the double sum of f32
 * terms, regrouped, moves by a few double ulps, far below the one f32 rounding of 1/s. */
#define SOFTMAX_LANES 16

/* e^−a for a ≥ 0 in f32 (+inf and NaN included: a is clamped to 104, where e^−a is 0 in f32),
 * for the softmax: a = k·ln2 − r with ln2 in two parts (Cody–Waite: k·ln2_hi is exact), |r| ≤
 * ln2/2, degree-7 Taylor for e^r (truncation < 1e-9 relative), 2^−k as two factors so that
 * results below FLT_MIN round into the subnormals as the exact value does.  Within 2 ulp of the
 * exact value (a two-element softmax against the exact one over a in [0, 110]: 2.5 ulp in all,
 * with the rounding of 1/s; subnormal results within one step); twice the lanes of mexd_exp_neg's double
 * and fewer terms (measured 2026-12-03: the softmax was a tenth of MExD's stage 1). */
static inline float expf_neg(float a)
{
  a = a < 104.0f ? a : 104.0f;
  const float magic = 12582912.0f; /* 1.5·2^23 */
  float kd = a * 1.44269504f + magic;
  int32_t kbits, mbits;
  memcpy(&kbits, &kd, sizeof kbits);
  memcpy(&mbits, &magic, sizeof mbits);
  kd -= magic;
  float r = (kd * 0.693145751953125f - a) + kd * 1.428606765330187e-6f; /* e^−a = 2^−k·e^r */
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t k = kbits - mbits, k1 = k >> 1, k2 = k - k1;
  uint32_t b1 = (uint32_t)(127 - k1) << 23, b2 = (uint32_t)(127 - k2) << 23;
  float f1, f2;
  memcpy(&f1, &b1, sizeof f1);
  memcpy(&f2, &b2, sizeof f2);
  return p * f1 * f2;
}

HOT void mexd_cpu_softmax_row(float *y, const float *x, int64_t D)
{
  /* the max as fmaxf from −inf: a NaN never replaces it, and x > m is false for NaN too */
  float ml[SOFTMAX_LANES];
  for (int k = 0; k < SOFTMAX_LANES; k++)
    ml[k] = -INFINITY;
  int64_t i = 0;
  for (; i + SOFTMAX_LANES <= D; i += SOFTMAX_LANES)
    for (int k = 0; k < SOFTMAX_LANES; k++)
      ml[k] = x[i + k] > ml[k] ? x[i + k] : ml[k];
  float m = -INFINITY;
  for (; i < D; i++)
    m = x[i] > m ? x[i] : m;
  for (int k = 0; k < SOFTMAX_LANES; k++)
    m = ml[k] > m ? ml[k] : m;
  if (m == -INFINITY) { /* all −inf (the documented choice: zeros) */
    for (i = 0; i < D; i++)
      y[i] = 0.0f;
    return;
  }
  /* e^(x − m) with x − m ≤ 0 rounded in f32 first, as expf(x[i] − m) was; a NaN stays NaN */
  for (i = 0; i < D; i++) {
    float d = x[i] - m;
    float e = expf_neg(-d);
    y[i] = d != d ? d : e;
  }
  double sl[SOFTMAX_LANES];
  for (int k = 0; k < SOFTMAX_LANES; k++)
    sl[k] = 0.0;
  for (i = 0; i + SOFTMAX_LANES <= D; i += SOFTMAX_LANES)
    for (int k = 0; k < SOFTMAX_LANES; k++)
      sl[k] += y[i + k];
  double s = 0;
  for (int k = 0; k < SOFTMAX_LANES; k++)
    s += sl[k];
  for (; i < D; i++)
    s += y[i];
  float inv = (float)(1.0 / s);
  for (i = 0; i < D; i++)
    y[i] *= inv;
}
