#version 450
// xent_bwd.comp: dlogits = dloss·(softmax(logits) − onehot(label))/R (+ dlogits when
// accumulating) for logits [R,C] (mexd_cross_entropy_backward, lib/ops/loss.c).  One workgroup
// per row; the max and the sum of exponentials reduced through shared memory in f32.  A label
// outside [0,C) sets STATUS_INDEX_RANGE and leaves out the one-hot term.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, L, TYPE)
#define logits_ TENSOR(L, 0)
TENSOR_RO(1, Lab, int)
#define labels_ TENSOR(Lab, 1)
TENSOR_RO(2, DLoss, TYPE)
#define dloss_ TENSOR(DLoss, 2)
TENSOR_RW(3, DL, TYPE)
#define dlogits_ TENSOR(DL, 3)
STATUS_BUFFER

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_XENT_BWD } pc; // push.h

shared float red[gl_WorkGroupSize.x];

float reduce(float v, bool is_max)
{
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (t < s)
      red[t] = is_max ? max(red[t], red[t + s]) : red[t] + red[t + s];
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

void main()
{
  const uint row = MEXD_GROUP_ID;
  if (row >= pc.R) // uniform over the workgroup
    return;
  const uint t = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  const uint b = O0 + row * pc.C, ob = O3 + row * pc.C;
  float m = uintBitsToFloat(0xff800000u);
  for (uint i = t; i < pc.C; i += nt)
    m = max(m, LOAD(logits_[b + i]));
  m = reduce(m, true);
  float s = 0.0;
  for (uint i = t; i < pc.C; i += nt)
    s += exp(LOAD(logits_[b + i]) - m);
  s = reduce(s, false);
  const float scale = (pc.has_dloss != 0u ? LOAD(dloss_[O2]) : 1.0) / float(pc.R);
  const int lab = labels_[O1 + row];
  if (t == 0u && (lab < 0 || uint(lab) >= pc.C))
    atomicOr(status_word, STATUS_INDEX_RANGE);
  const float inv = 1.0 / s;
  for (uint i = t; i < pc.C; i += nt) {
    float p = exp(LOAD(logits_[b + i]) - m) * inv;
    float v = scale * (int(i) == lab ? p - 1.0 : p);
    if (pc.acc != 0u)
      v += LOAD(dlogits_[ob + i]);
    dlogits_[ob + i] = STORE(v);
  }
}
