#version 450
// topk.comp: the passes of mexd_topk — a bitonic sort of (key, index) pairs, then the first k.
//
// Every element of x gets a 32-bit order key, computed from its bits (no float arithmetic, so
// subnormals and NaNs cannot be flushed or canonicalised by the device): larger key = ranks
// earlier.  NaN → 0, ±0 → the key of +0 (they compare equal), otherwise the usual sign-flip map
// that makes the keys of non-NaN floats increase with the value.  -inf gets a key above 0, so NaN
// ranks last.  In the f16 build the key is made from the half's bits the same way; the order is
// that of the values widened to f32, as in the cpu kernel.  Pair (ka, ia) ranks before (kb, ib)
// when ka > kb, or ka == kb and ia < ib: every pair is distinct, so the sorted order is unique.
//
// The sort runs over P = 2^p ≥ max(n, BLOCK) pairs held in `tmp` (keys at [0,P), indices at
// [P,2P)); pairs past n are padding with key 0 and index ≥ n, which rank after every real element
// (NaNs included).  A block of BLOCK pairs is handled by one workgroup in shared memory, each
// invocation taking BLOCK/2/WG compare-exchanges per step.  Modes
// (push constant `mode`, one pipeline for all):
//   MODE_LOCAL_SORT  computes the keys of a block and runs every bitonic step of sizes 2..BLOCK on
//                    it in shared memory (sequences alternate direction by block, as in the
//                    global network);
//   MODE_GLOBAL      one compare-exchange step (sequence size `size`, distance `stride` ≥ BLOCK),
//                    one invocation per pair;
//   MODE_LOCAL_MERGE the remaining steps of size `size` with distances BLOCK/2..1, in shared
//                    memory;
//   MODE_OUTPUT      writes indices[i] (and values[i] = x[indices[i]], copied in the storage
//                    type) for i < k.
// The host records LOCAL_SORT, then for size = 2·BLOCK..P: GLOBAL for each stride ≥ BLOCK and
// one LOCAL_MERGE; then OUTPUT.  Workgroups come from mexd_vk_grid() (MEXD_GROUP_ID); those at or
// past n_groups return at once (the whole workgroup, so the barriers stay uniform).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint WG = 256;     // invocations per workgroup, a power of two
layout(constant_id = 1) const uint BLOCK = 2048; // pairs per shared-memory block: 2·WG·2^m
layout(local_size_x_id = 0) in;

#define MODE_LOCAL_SORT 0u
#define MODE_GLOBAL 1u
#define MODE_LOCAL_MERGE 2u
#define MODE_OUTPUT 3u

// x is read as floats (for the values) and as raw bits (for the keys): two views of binding 0
#ifdef FLOAT16
#define RAW uint16_t
#else
#define RAW uint
#endif
TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(0, XBits, RAW)
#define xbits_ TENSOR(XBits, 0)
TENSOR_RW(1, Tmp, uint)
#define tmp_ TENSOR(Tmp, 1)
TENSOR_WO(2, Indices, int)
#define indices_ TENSOR(Indices, 2)
TENSOR_WO(3, Values, TYPE)
#define values_ TENSOR(Values, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_TOPK } pc; // push.h

shared uint skey[BLOCK];
shared uint sidx[BLOCK];

uint order_key(uint i)
{
#ifdef FLOAT16
  const uint b = uint(xbits_[O0 + i]);
  const uint mag = b & 0x7fffu;
  if (mag > 0x7c00u)
    return 0u; // NaN
  if (mag == 0u)
    return 0x8000u; // ±0: the key of +0
  return (b & 0x8000u) != 0u ? (~b & 0xffffu) : (b | 0x8000u);
#else
  const uint b = xbits_[O0 + i];
  const uint mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u)
    return 0u;
  if (mag == 0u)
    return 0x80000000u;
  return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
#endif
}

// (ka, ia) ranks before (kb, ib)
bool before(uint ka, uint ia, uint kb, uint ib)
{
  return ka > kb || (ka == kb && ia < ib);
}

// The first element of the pair that invocation t handles at distance j (a power of two): t's
// bits below j stay, the bits above move up one to leave room for the partner at +j.
uint pair_low(uint t, uint j)
{
  return ((t & ~(j - 1u)) << 1) | (t & (j - 1u));
}

// Bitonic steps at distances j0, j0/2, ..., 1 for sequence size `size` on the block in shared
// memory whose first pair is global position `base`.  Ascending (rank order) where the global
// position has the `size` bit clear.
void local_steps(uint base, uint size, uint j0)
{
  for (uint j = j0; j > 0u; j >>= 1) {
    barrier();
    for (uint t = gl_LocalInvocationID.x; t < BLOCK / 2; t += WG) {
      const uint i = pair_low(t, j), l = i + j;
      const uint ki = skey[i], ii = sidx[i], kl = skey[l], il = sidx[l];
      const bool asc = ((base + i) & size) == 0u;
      if (asc ? before(kl, il, ki, ii) : before(ki, ii, kl, il)) {
        skey[i] = kl;
        sidx[i] = il;
        skey[l] = ki;
        sidx[l] = ii;
      }
    }
  }
  barrier();
}

void main()
{
  const uint g = MEXD_GROUP_ID;
  if (g >= pc.n_groups)
    return;
  const uint t = gl_LocalInvocationID.x;

  if (pc.mode == MODE_GLOBAL) {
    const uint i = pair_low(g * WG + t, pc.stride), l = i + pc.stride;
    const uint ki = tmp_[O1 + i], kl = tmp_[O1 + l];
    const uint ii = tmp_[O1 + pc.P + i], il = tmp_[O1 + pc.P + l];
    const bool asc = (i & pc.size) == 0u;
    if (asc ? before(kl, il, ki, ii) : before(ki, ii, kl, il)) {
      tmp_[O1 + i] = kl;
      tmp_[O1 + pc.P + i] = il;
      tmp_[O1 + l] = ki;
      tmp_[O1 + pc.P + l] = ii;
    }
    return;
  }

  if (pc.mode == MODE_OUTPUT) {
    // g·WG < k here, so k − g·WG does not wrap
    if (t >= pc.k - g * WG)
      return;
    const uint i = g * WG + t;
    const uint src = tmp_[O1 + pc.P + i];
    indices_[O2 + i] = int(src);
    if (pc.has_values != 0u)
      values_[O3 + i] = x_[O0 + src];
    return;
  }

  // the local modes: block g is pairs [base, base + BLOCK)
  const uint base = g * BLOCK;
  for (uint e = t; e < BLOCK; e += WG) {
    const uint gi = base + e;
    if (pc.mode == MODE_LOCAL_SORT) {
      skey[e] = gi < pc.n ? order_key(gi) : 0u;
      sidx[e] = gi;
    } else {
      skey[e] = tmp_[O1 + gi];
      sidx[e] = tmp_[O1 + pc.P + gi];
    }
  }
  if (pc.mode == MODE_LOCAL_SORT) {
    for (uint size = 2u; size <= BLOCK; size <<= 1)
      local_steps(base, size, size >> 1);
  } else {
    local_steps(base, pc.size, BLOCK >> 1);
  }
  for (uint e = t; e < BLOCK; e += WG) {
    const uint gi = base + e;
    tmp_[O1 + gi] = skey[e];
    tmp_[O1 + pc.P + gi] = sidx[e];
  }
}
