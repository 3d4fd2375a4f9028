#version 450
// softmax.comp: y = exp(x − max)/Σexp(x − max) over rows of D elements.
// One workgroup per row (MEXD_GROUP_ID), its threads striding along the row; the max and the sum
// are reduced through shared memory in f32.  A row of all −inf is written as zeros (softmax.c).
// The row is read completely before it is written, so y may be x.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_WO(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SOFTMAX } pc; // push.h

shared float red[gl_WorkGroupSize.x];

// The workgroup-wide max (is_max) or sum of v; every thread gets it.
float reduce(float v, bool is_max)
{
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (t < s)
      red[t] = is_max ? max(red[t], red[t + s]) : red[t] + red[t + s];
    barrier();
  }
  float r = red[0];
  barrier(); // red is reused by the next reduction
  return r;
}

void main()
{
  const uint row = MEXD_GROUP_ID;
  if (row >= pc.rows) // uniform over the workgroup: no thread reaches a barrier
    return;
  const uint t = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  const uint xb = O0 + row * pc.D, yb = O1 + row * pc.D;
  const float NEG_INF = uintBitsToFloat(0xff800000u);

  float m = NEG_INF;
  for (uint i = t; i < pc.D; i += nt)
    m = max(m, LOAD(x_[xb + i]));
  m = reduce(m, true);

  if (m == NEG_INF) { // all −inf: zeros (uniform: m is the same in every thread)
    for (uint i = t; i < pc.D; i += nt)
      y_[yb + i] = STORE(0.0);
    return;
  }

  float s = 0.0;
  for (uint i = t; i < pc.D; i += nt)
    s += exp(LOAD(x_[xb + i]) - m);
  const float inv = 1.0 / reduce(s, false);

  for (uint i = t; i < pc.D; i += nt)
    y_[yb + i] = STORE(exp(LOAD(x_[xb + i]) - m) * inv);
}
