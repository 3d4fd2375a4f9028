// mathfn.glsl: f32 special functions GLSL lacks or gives too loosely, shared by unary.comp and
// unary_bwd.comp (include after common.glsl).
// - erf: for |x| < 1, x·P(x²) with P a degree-7 Chebyshev interpolant of erf(√t)/√t on [0, 1];
//   for 1 ≤ |x| < 4, 1 − exp(−x²)·Q(u) with Q a degree-11 Chebyshev interpolant of
//   erfc(x)·exp(x²) in u = (2|x| − 5)/3 ∈ [−1, 1]; ±1 beyond (erfc(4) < 2e-8).  Evaluated in f32
//   the absolute error stays below 2e-7.
// - log1p(z) for z ∈ [0, 1]: 2·atanh(s) with s = z/(2 + z) ≤ 1/3, as its odd series to s^17
//   (relative error below 1e-8); no log() call, whose absolute (not relative) error bound near 1
//   would swamp small results.
// - expm1(z) for z ∈ [−1, 0]: its Taylor series to z^11 (relative error below 1e-8).
// - tanh: −expm1(−2|x|)/(2 + expm1(−2|x|)) for |x| < 0.5 (no cancellation near 0), else
//   (1 − e)/(1 + e) with e = exp(−2|x|) (no overflow for large |x|); odd.
// - sigmoid: 1/(1 + e) for x ≥ 0, e/(1 + e) below, e = exp(−|x|) (no overflow, accurate tails).
// NaN propagates through all of them.
#ifndef MEXD_MATHFN_GLSL
#define MEXD_MATHFN_GLSL

const float ERF_P[8] = float[8](
  1.128379167e+00, -3.761263847e-01, 1.128378250e-01, -2.686543073e-02,
  5.221031809e-03, -8.484080445e-04, 1.126595940e-04, -9.667045788e-06);
const float ERFC_Q[12] = float[12](
  2.108063577e-01, -1.115210179e-01, 5.611094756e-02, -2.700545821e-02,
  1.248412315e-02, -5.568837645e-03, 2.425638938e-03, -1.013662598e-03,
  3.681510978e-04, -1.474161427e-04, 9.629120198e-05, -3.566417882e-05);

float erf_f32(float v)
{
  float av = abs(v);
  if (av < 1.0) {
    float t = v * v;
    float p = ERF_P[7];
    for (int i = 6; i >= 0; i--)
      p = p * t + ERF_P[i];
    return v * p;
  }
  float r;
  if (av >= 4.0) {
    r = 1.0;
  } else {
    float u = av * (2.0 / 3.0) - 5.0 / 3.0;
    float q = ERFC_Q[11];
    for (int i = 10; i >= 0; i--)
      q = q * u + ERFC_Q[i];
    r = 1.0 - exp(-av * av) * q;
  }
  return v < 0.0 ? -r : r; // NaN falls through both branches above and stays NaN
}

// log(1 + z) for 0 ≤ z ≤ 1
float log1p_unit(float z)
{
  float s = z / (2.0 + z);
  float s2 = s * s;
  float p = 1.0 / 17.0;
  for (int k = 7; k >= 0; k--)
    p = p * s2 + 1.0 / float(2 * k + 1);
  return 2.0 * s * p;
}

// exp(z) − 1 for −1 ≤ z ≤ 0
const float INV_FACT[12] = float[12](1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0,
  1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0);
float expm1_unit(float z)
{
  float p = INV_FACT[11];
  for (int k = 10; k >= 1; k--)
    p = p * z + INV_FACT[k];
  return p * z;
}

float tanh_f32(float v)
{
  float av = abs(v), r;
  if (av < 0.5) {
    float em = expm1_unit(-2.0 * av);
    r = -em / (2.0 + em);
  } else {
    float e = exp(-2.0 * av);
    r = (1.0 - e) / (1.0 + e);
  }
  return v < 0.0 ? -r : r;
}

float sigmoid_f32(float v)
{
  float e = exp(-abs(v));
  float r = 1.0 / (1.0 + e);
  return v >= 0.0 ? r : e * r;
}

#endif
