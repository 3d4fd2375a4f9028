#version 450
// binary.comp: y = a ∘ b with NumPy broadcasting (lib/ops/binary.c), ∘ chosen by pc.op.
// One invocation per element of y over a grid from mexd_vk_grid().  y is addressed as 4-D
// [d0,d1,d2,d3] (shapes padded with leading 1s); each input has one element stride per output
// dimension, 0 where it is broadcast.  An input with y's element count is not broadcast at all
// and is read at y's linear index (flag bits), which also makes y == a / y == b safe.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, A, TYPE)
#define a_ TENSOR(A, 0)
TENSOR_RO(1, B, TYPE)
#define b_ TENSOR(B, 1)
TENSOR_RW(2, Y, TYPE)
#define y_ TENSOR(Y, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_BINARY } pc; // push.h

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  uint ia = i, ib = i;
  if ((pc.flags & 3u) != 3u) {
    uint i3 = i % pc.d3;
    uint r = i / pc.d3;
    uint i2 = r % pc.d2;
    r /= pc.d2;
    uint i1 = r % pc.d1;
    uint i0 = r / pc.d1;
    if ((pc.flags & 1u) == 0u)
      ia = i0 * pc.sa[0] + i1 * pc.sa[1] + i2 * pc.sa[2] + i3 * pc.sa[3];
    if ((pc.flags & 2u) == 0u)
      ib = i0 * pc.sb[0] + i1 * pc.sb[1] + i2 * pc.sb[2] + i3 * pc.sb[3];
  }
  float va = LOAD(a_[O0 + ia]);
  float vb = LOAD(b_[O1 + ib]);
  float r;
  switch (pc.op) {
  case 0u: r = va + vb; break;
  case 1u: r = va - vb; break;
  case 2u: r = va * vb; break;
  default: r = va / vb; break;
  }
  y_[O2 + i] = STORE(r);
}
