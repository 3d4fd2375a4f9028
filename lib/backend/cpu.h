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

/* softplus (beta 1, threshold 20) as PyTorch's: x above 20, else log(1 + e^x), written as
 * max(x, 0) + log1p(e^−|x|) and evaluated in double with polynomials instead of libm's expf and
 * log1pf (those were 15% of a whole MExD run, the diffusion sampler calls it 50 million times).
 * e^−a: a = k·ln2 − r, |r| ≤ ln2/2, degree-10 Taylor (relative error < 1e-12), 2^−k from the
 * exponent bits; a is clamped to 150, where the result is below f32's range anyway.
 * log1p(u), 0 < u ≤ 1: 2·atanh(s), s = u/(2 + u) ≤ 1/3, odd series to s^21 (relative error
 * < 1e-11).  The double result is rounded once, so it is within 1 ulp of the exact value (libm's
 * f32 composition was within a few); NaN stays NaN, −inf gives 0. */
static inline float mexd_softplus_f32(float v)
{
  if (v > 20.0f || v != v)
    return v;
  double x = v, a = fmin(fabs(x), 150.0);
  double kf = nearbyint(a * 1.4426950408889634);
  double r = kf * 0.6931471805599453 - a; /* e^−a = 2^−k·e^r */
  double p = 1.0 / 3628800;
  static const double inv_fact[10] = {1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120,
                                      1.0 / 24,     1.0 / 6,     0.5,         1.0,       1.0};
  for (int i = 0; i < 10; i++)
    p = p * r + inv_fact[i];
  uint64_t bits = (uint64_t)(1023 - (int64_t)kf) << 52;
  double two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  double u = p * two_k;
  double s = u / (2.0 + u), s2 = s * s;
  double q = 1.0 / 21;
  for (int k = 19; k >= 1; k -= 2)
    q = q * s2 + 1.0 / k;
  return (float)(fmax(x, 0.0) + 2.0 * s * q);
}

G_END_DECLS
