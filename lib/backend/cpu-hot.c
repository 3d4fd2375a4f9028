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

HOT void mexd_cpu_softmax_row(float *y, const float *x, int64_t D)
{
  /* the max as fmaxf from −inf: a NaN never replaces it, and x > m is false for NaN too */
  float m = -INFINITY;
  for (int64_t i = 0; i < D; i++)
    m = x[i] > m ? x[i] : m;
  if (m == -INFINITY) { /* all −inf (the documented choice: zeros) */
    for (int64_t i = 0; i < D; i++)
      y[i] = 0.0f;
    return;
  }
  /* e^(x − m) with x − m ≤ 0 rounded in f32 first, as expf(x[i] − m) was; a NaN stays NaN */
  for (int64_t i = 0; i < D; i++) {
    float d = x[i] - m;
    float e = (float)mexd_exp_neg(-(double)d);
    y[i] = d != d ? d : e;
  }
  double s = 0;
  for (int64_t i = 0; i < D; i++)
    s += y[i];
  float inv = (float)(1.0 / s);
  for (int64_t i = 0; i < D; i++)
    y[i] *= inv;
}
