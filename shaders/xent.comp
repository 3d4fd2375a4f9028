#version 450
// xent.comp: the cross-entropy loss of logits [R,C] against labels [R] (mexd_cross_entropy,
// lib/ops/loss.c), mean over rows, in two dispatches chosen by pc.mode:
// - 0: one workgroup per row: rowloss[r] = max + log Σ exp(x − max) − x[label] (f32, reduced
//   through shared memory); a label outside [0,C) gives NaN and sets STATUS_INDEX_RANGE;
// - 1: one workgroup adds the R row losses (strided, then a tree: deterministic) → loss = Σ/R.
// Bindings: 0 logits, 1 labels, 2 rowloss [R] (f32 scratch), 3 loss [1].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in; // a power of two

TENSOR_RO(0, L, TYPE)
#define logits_ TENSOR(L, 0)
TENSOR_RO(1, Lab, int)
#define labels_ TENSOR(Lab, 1)
TENSOR_RW(2, RowLoss, float)
#define rowloss_ TENSOR(RowLoss, 2)
TENSOR_RW(3, Loss, TYPE)
#define loss_ TENSOR(Loss, 3)
STATUS_BUFFER

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_XENT } pc; // push.h

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
  const uint t = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  if (pc.mode == 1u) {
    if (MEXD_GROUP_ID != 0u)
      return;
    float s = 0.0;
    for (uint r = t; r < pc.R; r += nt)
      s += rowloss_[O2 + r];
    s = reduce(s, false);
    if (t == 0u)
      loss_[O3] = STORE(s / float(pc.R));
    return;
  }
  const uint row = MEXD_GROUP_ID;
  if (row >= pc.R) // uniform over the workgroup
    return;
  const uint b = O0 + row * pc.C;
  float m = uintBitsToFloat(0xff800000u);
  for (uint i = t; i < pc.C; i += nt)
    m = max(m, LOAD(logits_[b + i]));
  m = reduce(m, true);
  float s = 0.0;
  for (uint i = t; i < pc.C; i += nt)
    s += exp(LOAD(logits_[b + i]) - m);
  s = reduce(s, false);
  if (t != 0u)
    return;
  const int lab = labels_[O1 + row];
  if (lab < 0 || uint(lab) >= pc.C) {
    rowloss_[O2 + row] = uintBitsToFloat(0x7fc00000u); // NaN
    atomicOr(status_word, STATUS_INDEX_RANGE);
    return;
  }
  rowloss_[O2 + row] = (m + log(s)) - LOAD(logits_[b + uint(lab)]);
}
