#version 450
// abs_sum_max.comp: y[0] = max over batches b and lines l of Σ_j |x[b, line l, element j]|
// (lib/ops/abs_sum_max.c).  x is [B,R,C]; pc.axis 0: lines are rows (sum over the C columns),
// 1: lines are columns (sum over the R rows).  One workgroup: each invocation sums whole lines
// (strided over B·lines), keeps its maximum, and a tree reduction takes the maximum of those.
// A NaN anywhere makes the result NaN (like torch.max).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_ABS_SUM_MAX } pc; // push.h

shared float part[256];
shared uint has_nan[1];

void main()
{
  uint lid = gl_LocalInvocationID.x;
  if (lid == 0u)
    has_nan[0] = 0u;
  barrier();
  uint lines = pc.axis == 0u ? pc.R : pc.C;
  uint len = pc.axis == 0u ? pc.C : pc.R;
  uint stride = pc.axis == 0u ? 1u : pc.C;
  float best = 0.0;
  bool nan_seen = false;
  for (uint t = lid; t < pc.B * lines; t += 256u) {
    uint b = t / lines, l = t % lines;
    uint base = O0 + b * pc.R * pc.C + (pc.axis == 0u ? l * pc.C : l);
    float s = 0.0;
    for (uint j = 0u; j < len; j++)
      s += abs(LOAD(x_[base + j * stride]));
    if (isnan(s))
      nan_seen = true;
    best = max(best, s);
  }
  if (nan_seen)
    atomicOr(has_nan[0], 1u);
  part[lid] = best;
  barrier();
  for (uint w = 128u; w > 0u; w >>= 1) {
    if (lid < w)
      part[lid] = max(part[lid], part[lid + w]);
    barrier();
  }
  if (lid == 0u)
    y_[O1] = STORE(has_nan[0] != 0u ? uintBitsToFloat(0x7fc00000u) : part[0]);
}
