#version 450
// unary_bwd.comp: dx[i] = f'(x[i])·dy[i] (+ dx[i] when accumulating) for the unary ops of
// mexd_unary_backward (lib/ops/unary.c), chosen by pc.op (MexdUnaryOp numbering).  One invocation
// per element; dx may be dy (each invocation reads its elements before writing).  Arithmetic is
// f32 in both variants; erf, tanh and sigmoid come from mathfn.glsl.  GELU's x·φ(x) is taken as 0
// where φ(x) underflows (|x| ≳ 14), so f'(±inf) is 1 and 0 rather than inf·0 = NaN (unary.c).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "mathfn.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, DY, TYPE)
#define dy_ TENSOR(DY, 1)
TENSOR_RW(2, DX, TYPE)
#define dx_ TENSOR(DX, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_UNARY_BWD } pc; // push.h

float dfdx(float v)
{
  switch (pc.op) {
  case 0u:
    return v > 0.0 ? 1.0 : 0.0;
  case 1u: { // Φ(x) + x·φ(x)
    float pdf = 0.39894228040143268 * exp(-0.5 * v * v);
    return 0.5 * (1.0 + erf_f32(v * 0.70710678118654752)) + (pdf == 0.0 ? 0.0 : v * pdf);
  }
  case 2u: // PyTorch: 1 above the threshold 20, else e^x/(1 + e^x)
    return v > 20.0 ? 1.0 : sigmoid_f32(v);
  case 5u: {
    float t = tanh_f32(v);
    return 1.0 - t * t;
  }
  default: { // 6
    float s = sigmoid_f32(v);
    return s * (1.0 - s);
  }
  }
}

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  float g = LOAD(dy_[O1 + i]);
  float v = LOAD(x_[O0 + i]);
  // relu: dy where x > 0 and exactly 0 elsewhere (not 0·dy, which is NaN for an infinite dy)
  g = pc.op == 0u ? (v > 0.0 ? g : 0.0) : g * dfdx(v);
  if (pc.acc != 0u)
    g += LOAD(dx_[O2 + i]);
  dx_[O2 + i] = STORE(g);
}
