#version 450
// concat.comp: copies x into a slice of y along one axis (lib/ops/concat.c; also mexd_copy).
// x is viewed as [outer, xrow] and y as [outer, yrow] (a row = the concat axis × the dims after
// it); x's row o lands in y's row o at element yoff.  One invocation per element of x over a
// grid from mexd_vk_grid().
// The data is moved as raw words, never as floats, so the copy is bit-exact (NaN payloads,
// denormals) and also moves i32 tensors: the f32 build copies 32-bit words (f32 and i32
// tensors), the f16 build 16-bit ones.
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

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_CONCAT } pc; // push.h

void main()
{
  uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  uint o = i / pc.xrow, r = i % pc.xrow;
  y_[O1 + o * pc.yrow + pc.yoff + r] = x_[O0 + i];
}
