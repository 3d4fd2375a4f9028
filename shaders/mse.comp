#version 450
// mse.comp: loss = mean of (y − target)² over n elements (mexd_mse, lib/ops/loss.c), in two
// dispatches chosen by pc.mode:
// - 0: workgroup g sums the squares of elements [g·per_group, (g+1)·per_group) (strided over its
//   256 threads, then a tree) into part[g] (f32);
// - 1: one workgroup adds the n_groups partial sums (deterministic order) → loss = Σ/n.
// Bindings: 0 y, 1 target, 2 part (f32 scratch), 3 loss [1].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, Yv, TYPE)
#define y_ TENSOR(Yv, 0)
TENSOR_RO(1, T, TYPE)
#define t_ TENSOR(T, 1)
TENSOR_RW(2, Part, float)
#define part_ TENSOR(Part, 2)
TENSOR_RW(3, Loss, TYPE)
#define loss_ TENSOR(Loss, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_MSE } pc; // push.h

shared float red[256];

float reduce_sum(float v)
{
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = 128; s > 0; s >>= 1) {
    if (t < s)
      red[t] += red[t + s];
    barrier();
  }
  return red[0];
}

void main()
{
  const uint t = gl_LocalInvocationID.x;
  const uint g = MEXD_GROUP_ID;
  if (pc.mode == 1u) {
    if (g != 0u)
      return;
    float s = 0.0;
    for (uint k = t; k < pc.n_groups; k += 256u)
      s += part_[O2 + k];
    s = reduce_sum(s);
    if (t == 0u)
      loss_[O3] = STORE(s / float(pc.n));
    return;
  }
  if (g >= pc.n_groups) // uniform
    return;
  const uint e0 = g * pc.per_group, e1 = min(e0 + pc.per_group, pc.n);
  float s = 0.0;
  for (uint e = e0 + t; e < e1; e += 256u) {
    float d = LOAD(y_[O0 + e]) - LOAD(t_[O1 + e]);
    s += d * d;
  }
  s = reduce_sum(s);
  if (t == 0u)
    part_[O2 + g] = s;
}
