#version 450
// layernorm.comp: y = (x − mean)/sqrt(var + eps)·gamma + beta over rows of D elements.
// One workgroup per row (MEXD_GROUP_ID), its threads striding along the row; sums are reduced
// through shared memory in f32.  Corrected two-pass statistics: pass 1 gives a first mean m1;
// pass 2 sums d = x − m1 and d², and mean = m1 + Σd/D, var = (Σd² − (Σd)²/D)/D, which stays
// accurate for rows whose mean is large against their spread.  The row is read completely
// before it is written, so y may be x.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, Gamma, TYPE)
#define gamma_ TENSOR(Gamma, 1)
TENSOR_RO(2, Beta, TYPE)
#define beta_ TENSOR(Beta, 2)
TENSOR_WO(3, Y, TYPE)
#define y_ TENSOR(Y, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_LAYERNORM } pc; // push.h

shared vec2 red[gl_WorkGroupSize.x];

// The workgroup-wide sum of v; every thread gets it.
vec2 reduce_sum(vec2 v)
{
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (t < s)
      red[t] += red[t + s];
    barrier();
  }
  vec2 r = red[0];
  barrier(); // red is reused by the next reduction
  return r;
}

void main()
{
  const uint row = MEXD_GROUP_ID;
  if (row >= pc.rows) // uniform over the workgroup: no thread reaches a barrier
    return;
  const uint t = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  const uint xb = O0 + row * pc.D, yb = O3 + row * pc.D;
  const float D = float(pc.D);

  float s = 0.0;
  for (uint i = t; i < pc.D; i += nt)
    s += LOAD(x_[xb + i]);
  const float m1 = reduce_sum(vec2(s, 0.0)).x / D;

  vec2 sd = vec2(0.0);
  for (uint i = t; i < pc.D; i += nt) {
    float d = LOAD(x_[xb + i]) - m1;
    sd += vec2(d, d * d);
  }
  sd = reduce_sum(sd);
  const float dm = sd.x / D;
  const float var = max(sd.y / D - dm * dm, 0.0);
  const float rstd = inversesqrt(var + pc.eps);

  for (uint i = t; i < pc.D; i += nt) {
    float v = ((LOAD(x_[xb + i]) - m1) - dm) * rstd; // x − mean, without rounding m1 + dm
    if (pc.has_gamma != 0)
      v *= LOAD(gamma_[O1 + i]);
    if (pc.has_beta != 0)
      v += LOAD(beta_[O2 + i]);
    y_[yb + i] = STORE(v);
  }
}
