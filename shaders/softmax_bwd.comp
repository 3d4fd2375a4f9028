#version 450
// softmax_bwd.comp: dx = y ⊙ (dy − Σ dy ⊙ y) over rows of D elements (+ dx when accumulating),
// y the forward output (mexd_softmax_rows_backward, lib/ops/softmax.c).  One workgroup per row
// (MEXD_GROUP_ID), the dot product reduced through shared memory in f32.  Every thread writes only
// elements it has read itself before the reduction's barriers, so dx may be dy.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, Yv, TYPE)
#define y_ TENSOR(Yv, 0)
TENSOR_RO(1, DY, TYPE)
#define dy_ TENSOR(DY, 1)
TENSOR_RW(2, DX, TYPE)
#define dx_ TENSOR(DX, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SOFTMAX_BWD } pc; // push.h

shared float red[gl_WorkGroupSize.x];

void main()
{
  const uint row = MEXD_GROUP_ID;
  if (row >= pc.rows) // uniform over the workgroup: no thread reaches a barrier
    return;
  const uint t = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  const uint yb = O0 + row * pc.D, gb = O1 + row * pc.D, xb = O2 + row * pc.D;

  float s = 0.0;
  for (uint i = t; i < pc.D; i += nt)
    s += LOAD(y_[yb + i]) * LOAD(dy_[gb + i]);
  red[t] = s;
  barrier();
  for (uint k = nt / 2; k > 0; k >>= 1) {
    if (t < k)
      red[t] += red[t + k];
    barrier();
  }
  const float dot = red[0];

  for (uint i = t; i < pc.D; i += nt) {
    float v = LOAD(y_[yb + i]) * (LOAD(dy_[gb + i]) - dot);
    if (pc.acc != 0u)
      v += LOAD(dx_[xb + i]);
    dx_[xb + i] = STORE(v);
  }
}
