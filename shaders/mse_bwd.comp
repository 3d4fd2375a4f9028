#version 450
// mse_bwd.comp: dy = dloss·(2/n)·(y − target) (+ dy when accumulating) (mexd_mse_backward,
// lib/ops/loss.c).  One invocation per element.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, Yv, TYPE)
#define y_ TENSOR(Yv, 0)
TENSOR_RO(1, T, TYPE)
#define t_ TENSOR(T, 1)
TENSOR_RO(2, DLoss, TYPE)
#define dloss_ TENSOR(DLoss, 2)
TENSOR_RW(3, DY, TYPE)
#define dy_ TENSOR(DY, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_MSE_BWD } pc; // push.h

void main()
{
  const uint e = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (e >= pc.n)
    return;
  const float scale = (pc.has_dloss != 0u ? LOAD(dloss_[O2]) : 1.0) * pc.two_over_n;
  float v = scale * (LOAD(y_[O0 + e]) - LOAD(t_[O1 + e]));
  if (pc.acc != 0u)
    v += LOAD(dy_[O3 + e]);
  dy_[O3 + e] = STORE(v);
}
