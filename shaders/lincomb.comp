#version 450
// lincomb.comp: y[i] = a0·x0[i % n0] + a1·x1[i % n1] + a2·x2[i % n2] + beta·y[i] (lib/ops/lincomb.c).
// Each input's shape is a suffix of y's, so i % n_k is its element under broadcasting.  A term is
// skipped when its bit in pc.mask is clear (an absent input; also beta = 0, so that old NaNs in y
// do not leak).  The sum is formed left to right in f32, as the cpu code does.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X0, TYPE)
#define x0_ TENSOR(X0, 0)
TENSOR_RO(1, X1, TYPE)
#define x1_ TENSOR(X1, 1)
TENSOR_RO(2, X2, TYPE)
#define x2_ TENSOR(X2, 2)
TENSOR_RW(3, Y, TYPE)
#define y_ TENSOR(Y, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_LINCOMB } pc; // push.h

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  float acc = 0.0;
  if ((pc.mask & 1u) != 0u)
    acc = pc.a[0] * LOAD(x0_[O0 + i % pc.nk[0]]);
  if ((pc.mask & 2u) != 0u)
    acc += pc.a[1] * LOAD(x1_[O1 + i % pc.nk[1]]);
  if ((pc.mask & 4u) != 0u)
    acc += pc.a[2] * LOAD(x2_[O2 + i % pc.nk[2]]);
  if ((pc.mask & 8u) != 0u)
    acc += pc.beta * LOAD(y_[O3 + i]);
  y_[O3 + i] = STORE(acc);
}
