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

/* Lanes for the row reductions of the softmax: one sequential chain of compares (the max) and
 * one of double adds (the sum) held a row at ~8 cycles an element (a fifth of a 10,000-instance
 * Nyström forward), so both run in independent lanes that vectorize.  The max is the same in
 * any order (NaN never replaces it; a −0/+0 tie gives the same x − m); the double sum of f32
 * terms, regrouped, moves by a few double ulps, far below the one f32 rounding of 1/s. */
#define SOFTMAX_LANES 16

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
    float e = (float)mexd_exp_neg(-(double)d);
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
