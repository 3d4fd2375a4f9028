#version 450
// layernorm_bwd.comp: dx of layernorm over rows of D elements (mexd_layernorm_backward,
// lib/ops/layernorm.c): with x̂ = (x − mean)·rstd and g = dy·gamma,
//   dx = rstd·(g − Σg/D − x̂·Σ(g·x̂)/D)   (+ dx when accumulating).
// One workgroup per row (MEXD_GROUP_ID).  The statistics are recomputed exactly as layernorm.comp
// takes them (corrected two-pass, f32), then Σg and Σg·x̂ are reduced together through shared
// memory.  The parameter gradients are layernorm_bwd_param.comp's.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, Gamma, TYPE)
#define gamma_ TENSOR(Gamma, 1)
TENSOR_RO(2, DY, TYPE)
#define dy_ TENSOR(DY, 2)
TENSOR_RW(3, DX, TYPE)
#define dx_ TENSOR(DX, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_LAYERNORM_BWD } pc; // push.h

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
  const uint xb = O0 + row * pc.D, gb = O2 + row * pc.D, ob = O3 + row * pc.D;
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
  const float rstd = inversesqrt(max(sd.y / D - dm * dm, 0.0) + pc.eps);

  vec2 sg = vec2(0.0); // Σg, Σg·x̂
  for (uint i = t; i < pc.D; i += nt) {
    float xh = ((LOAD(x_[xb + i]) - m1) - dm) * rstd;
    float g = LOAD(dy_[gb + i]);
    if (pc.has_gamma != 0u)
      g *= LOAD(gamma_[O1 + i]);
    sg += vec2(g, g * xh);
  }
  sg = reduce_sum(sg) / D;

  for (uint i = t; i < pc.D; i += nt) {
    float xh = ((LOAD(x_[xb + i]) - m1) - dm) * rstd;
    float g = LOAD(dy_[gb + i]);
    if (pc.has_gamma != 0u)
      g *= LOAD(gamma_[O1 + i]);
    float v = rstd * (g - sg.x - xh * sg.y);
    if (pc.acc != 0u)
      v += LOAD(dx_[ob + i]);
    dx_[ob + i] = STORE(v);
  }
}
