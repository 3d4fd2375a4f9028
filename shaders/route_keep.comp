#version 450
// route_keep.comp: the keep sets of the Dyn-MoE routers (lib/ops/route.c).  probs is [R,E,2]
// (each router's softmax over its two outputs, per routed row); for expert r (one workgroup):
//   gate[r,i]   = probs[i,r,1]
//   masked[r,i] = probs[i,r,1] if probs[i,r,1] > probs[i,r,0] (kept) else −inf
//   count[r]    = the number of kept rows.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, P, TYPE)
#define probs_ TENSOR(P, 0)
TENSOR_RW(1, G, TYPE)
#define gate_ TENSOR(G, 1)
TENSOR_RW(2, M, TYPE)
#define masked_ TENSOR(M, 2)
TENSOR_RW(3, N, int)
#define counts_ TENSOR(N, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_ROUTE_KEEP } pc; // push.h

shared uint total[1];

void main()
{
  uint r = gl_WorkGroupID.x;
  uint lid = gl_LocalInvocationID.x;
  if (lid == 0u)
    total[0] = 0u;
  barrier();
  uint mine = 0u;
  for (uint i = lid; i < pc.R; i += 256u) {
    float p0 = LOAD(probs_[O0 + (i * pc.E + r) * 2u]);
    float p1 = LOAD(probs_[O0 + (i * pc.E + r) * 2u + 1u]);
    bool keep = p1 > p0;
    gate_[O1 + r * pc.R + i] = STORE(p1);
    masked_[O2 + r * pc.R + i] = STORE(keep ? p1 : uintBitsToFloat(0xff800000u));
    if (keep)
      mine++;
  }
  atomicAdd(total[0], mine);
  barrier();
  if (lid == 0u)
    counts_[O3 + r] = int(total[0]);
}
