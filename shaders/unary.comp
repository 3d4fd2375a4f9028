#version 450
// unary.comp: y[i] = f(x[i]) for the ops of MexdUnaryOp (lib/ops/unary.c), chosen by pc.op.
// One invocation per element over a grid from mexd_vk_grid(); y may be x (each invocation reads
// its element before writing it).  Arithmetic is f32 in both variants.  erf, log1p, tanh and
// sigmoid come from mathfn.glsl (see there).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "mathfn.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_UNARY } pc; // push.h

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
  case 4u: // a·x + b·I
    return pc.a * v + ((i / pc.m) % pc.m == i % pc.m ? pc.b : 0.0);
  case 5u:
    return tanh_f32(v);
  default: // 6
    return sigmoid_f32(v);
  }
}

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  y_[O1 + i] = STORE(apply(LOAD(x_[O0 + i]), i));
}
