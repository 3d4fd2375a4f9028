#version 450
// unary.comp: y[i] = f(x[i]) for the ops of MexdUnaryOp (lib/ops/unary.c), chosen by pc.op.
// One invocation per element over a grid from mexd_vk_grid(); y may be x (each invocation reads
// its element before writing it).  Arithmetic is f32 in both variants.
//
// GLSL has no erf, and log(1 + z) loses z when z is tiny, so both are written out here:
// - erf: for |x| < 1, x·P(x²) with P a degree-7 Chebyshev interpolant of erf(√t)/√t on [0, 1];
//   for 1 ≤ |x| < 4, 1 − exp(−x²)·Q(u) with Q a degree-11 Chebyshev interpolant of
//   erfc(x)·exp(x²) in u = (2|x| − 5)/3 ∈ [−1, 1]; ±1 beyond (erfc(4) < 2e-8).  Coefficients
//   fitted for this file; evaluated in f32 the absolute error stays below 2e-7.
// - log1p(z) for z = exp(−|x|) ∈ (0, 1]: 2·atanh(s) with s = z/(2 + z) ≤ 1/3, as its odd series
//   to s^17 (relative error below 1e-8); no log() call, whose absolute (not relative) error
//   bound near 1 would swamp small results.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC {
  PC_HEADER
  uint n;
  uint op; // 0 relu, 1 gelu, 2 softplus, 3 scale, 4 scale_eye (MexdUnaryOp)
  float a, b;
  uint m; // scale_eye: the size of the square matrices
} pc;

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

float apply(float v, uint i)
{
  switch (pc.op) {
  case 0u:
    return v < 0.0 ? 0.0 : v; // NaN passes through, as in PyTorch
  case 1u:
    return 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752));
  case 2u:
    // PyTorch (beta 1, threshold 20): x above 20, else log(1 + e^x) = max(x, 0) + log1p(e^−|x|)
    if (v > 20.0)
      return v;
    return max(v, 0.0) + log1p_unit(exp(-abs(v)));
  case 3u:
    return pc.a * v + pc.b;
  default: // 4: a·x + b·I
    return pc.a * v + ((i / pc.m) % pc.m == i % pc.m ? pc.b : 0.0);
  }
}

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  y_[O1 + i] = STORE(apply(LOAD(x_[O0 + i]), i));
}
