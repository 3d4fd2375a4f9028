#version 450
// route_keep.comp: the keep sets of the Dyn-MoE routers (lib/ops/route.c).  probs is [R,E,2]
// (each router's softmax over its two outputs, per routed row); for expert r (one workgroup):
//   gate[r,i]   = probs[i,r,1]
//   masked[r,i] = probs[i,r,1] if probs[i,r,1] > probs[i,r,0] (kept) else −inf
//   count[r]    = the number of kept rows.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer P { TYPE probs[]; };
layout(std430, binding = 1) buffer G { TYPE gate[]; };
layout(std430, binding = 2) buffer M { TYPE masked[]; };
layout(std430, binding = 3) buffer N { int counts[]; };

layout(push_constant) uniform PC {
  PC_HEADER
  uint R, E;
} pc;

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
    float p0 = LOAD(probs[pc.o0 + (i * pc.E + r) * 2u]);
    float p1 = LOAD(probs[pc.o0 + (i * pc.E + r) * 2u + 1u]);
    bool keep = p1 > p0;
    gate[pc.o1 + r * pc.R + i] = STORE(p1);
    masked[pc.o2 + r * pc.R + i] = STORE(keep ? p1 : uintBitsToFloat(0xff800000u));
    if (keep)
      mine++;
  }
  atomicAdd(total[0], mine);
  barrier();
  if (lid == 0u)
    counts[pc.o3 + r] = int(total[0]);
}
