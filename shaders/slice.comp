#version 450
// slice.comp: y = x[..., start:start + len, ...] along one axis (+ y when accumulating)
// (mexd_slice, lib/ops/concat.c; the backward of concat).  x is viewed as [outer, xrow] and y as
// [outer, yrow] with xrow = x_axis·inner, yrow = len·inner; y[o, k] = x[o, xoff + k] with
// xoff = start·inner.  One invocation per element of y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SLICE } pc; // push.h

void main()
{
  const uint e = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (e >= pc.n)
    return;
  const uint o = e / pc.yrow, k = e - o * pc.yrow;
  float v = LOAD(x_[O0 + o * pc.xrow + pc.xoff + k]);
  if (pc.acc != 0u)
    v += LOAD(y_[O1 + e]);
  y_[O1 + e] = STORE(v);
}
