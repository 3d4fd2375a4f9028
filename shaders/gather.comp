#version 450
// gather.comp: y[i,:] = x[idx[i],:] (mexd_gather_rows).
// One invocation per element of y [K,N], over a 1-D grid of workgroups that mexd_vk_grid() may
// spread over x and y (MEXD_GROUP_ID).  Elements are copied in their storage type, so f16 and f32
// pass through unchanged.  An index outside [0,M) makes the row zero and sets STATUS_INDEX_RANGE
// in the status word (once per row, from its first element); mexd_backend_sync() reports it.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, Idx, int)
#define idx_ TENSOR(Idx, 1)
TENSOR_WO(2, Y, TYPE)
#define y_ TENSOR(Y, 2)
STATUS_BUFFER

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_GATHER } pc; // push.h

void main()
{
  const uint g = MEXD_GROUP_ID;
  if (g >= pc.n_groups)
    return;
  // g·size < total here, so this test cannot wrap around even when total is near 2^32
  if (gl_LocalInvocationID.x >= pc.total - g * gl_WorkGroupSize.x)
    return;
  const uint e = g * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  const uint row = e / pc.N, col = e - row * pc.N;
  const int r = idx_[O1 + row];
  if (r < 0 || uint(r) >= pc.M) {
    y_[O2 + e] = STORE(0.0);
    if (col == 0)
      atomicOr(status_word, STATUS_INDEX_RANGE);
    return;
  }
  y_[O2 + e] = x_[O0 + uint(r) * pc.N + col];
}
