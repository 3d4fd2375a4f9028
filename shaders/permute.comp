#version 450
// permute.comp: y = x with its dimensions permuted (lib/ops/permute.c: permute, transpose, copy).
// y is addressed as 4-D [d0,d1,d2,d3] (padded with leading 1s); one invocation per element of y
// (writes are contiguous) reads x at Σ y_index[i]·s[i], s[i] being x's stride along the x
// dimension that y's dimension i comes from.  Moved as raw words like concat.comp: bit-exact,
// and the f32 build also moves i32 tensors.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#ifdef FLOAT16
#define WORD uint16_t
#else
#define WORD uint
#endif

layout(local_size_x = 256) in;

TENSOR_RO(0, X, WORD)
#define x_ TENSOR(X, 0)
TENSOR_WO(1, Y, WORD)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_PERMUTE } pc; // push.h

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  uint i3 = i % pc.d3;
  uint r = i / pc.d3;
  uint i2 = r % pc.d2;
  r /= pc.d2;
  uint i1 = r % pc.d1;
  uint i0 = r / pc.d1;
  y_[O1 + i] = x_[O0 + i0 * pc.s[0] + i1 * pc.s[1] + i2 * pc.s[2] + i3 * pc.s[3]];
}
