#version 450
// segment_mean.comp: y[s,j] = mean of x[r,j] over the rows r of segment s, for short segments
// (lib/ops/reduce.c sends segments of at most a few dozen rows here and longer ones through
// mean_rows.comp's chunked passes).  x is [M,N], segment s holds rows s·seg_len …
// min((s+1)·seg_len, M)−1.  One invocation per output element over a grid from mexd_vk_grid();
// neighbouring invocations read neighbouring columns.  Sums are f32.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_WO(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SEGMENT_MEAN } pc; // push.h

void main()
{
  uint idx = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (idx >= pc.n_out)
    return;
  uint s = idx / pc.N, j = idx % pc.N;
  uint r0 = s * pc.seg_len;
  uint r1 = r0 + min(pc.seg_len, pc.M - r0); // no uint overflow
  float acc = 0.0;
  for (uint r = r0; r < r1; r++)
    acc += LOAD(x_[O0 + r * pc.N + j]);
  y_[O1 + idx] = STORE(acc / float(r1 - r0));
}
