#version 450
// scatter_add.comp: y[m,:] = Σ_{i: idx[i] = m} x[i,:] (+ y[m,:] when accumulating), for x [K,N],
// idx [K], y [M,N] (mexd_scatter_add_rows, lib/ops/gather.c; the backward of gather_rows).
//
// No atomics on floats: a workgroup owns one destination row m and 256 of its columns, and scans
// the indices [k0, k1) 256 at a time.  Each thread tests one index of the tile; a shared counter
// (an integer, so its value does not depend on the order of the increments) tells the whole
// workgroup whether the tile has any match.  Only then is the tile compacted — an inclusive
// prefix sum of the match flags in shared memory lists the matching positions in index order —
// and every thread adds those rows of x for its column.  So the sums are taken in index order,
// as the cpu kernel takes them, and are the same bits run to run.  Cost: (k1 − k0)/256 tiles of
// two barriers per workgroup, plus the prefix sum for tiles that hold a match.
//
// Chunks: lavapipe ends an invocation's loops after 65,535 iterations in all (lib/ops/gemm.c), so
// on a CPU device gather.c cuts the index list into dispatches of at most 16,384 indices.  pc.flags
// bit 0 (FIRST): start from 0, else from the running sum in acc [M,N] (f32 scratch); bit 1 (LAST):
// write y, else the running sum to acc; bit 2 (ACC): add y's old contents when writing y.  One
// dispatch over all indices has FIRST|LAST and never touches acc.
// Index check: the workgroup of (row 0, column block 0) tests every index of its dispatch; one
// outside [0,M) sets STATUS_INDEX_RANGE (the next sync reports it) and is otherwise ignored.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, Idx, int)
#define idx_ TENSOR(Idx, 1)
TENSOR_RW(2, Y, TYPE)
#define y_ TENSOR(Y, 2)
TENSOR_RW(3, Acc, float)
#define acc_ TENSOR(Acc, 3)
STATUS_BUFFER

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SCATTER_ADD } pc; // push.h

shared uint hits; // matches seen so far by the workgroup (only ever incremented)
shared uint scan[256];
shared uint list[256];

void main()
{
  const uint t = gl_LocalInvocationID.x;
  const uint g = MEXD_GROUP_ID;
  if (g >= pc.M * pc.n_colblk) // uniform across the workgroup
    return;
  const uint m = g / pc.n_colblk, cb = g - m * pc.n_colblk;
  const uint j = cb * 256u + t;
  const bool check = g == 0u;
  float s = 0.0;
  if ((pc.flags & 1u) == 0u && j < pc.N)
    s = acc_[O3 + m * pc.N + j];
  if (t == 0u)
    hits = 0u;
  barrier();
  uint seen = 0u; // the same in every thread: read from `hits` between the same barriers
  for (uint i0 = pc.k0; i0 < pc.k1; i0 += 256u) {
    const uint n = min(256u, pc.k1 - i0);
    bool hit = false;
    if (t < n) {
      const int v = idx_[O1 + i0 + t];
      hit = v == int(m);
      if (check && (v < 0 || uint(v) >= pc.M))
        atomicOr(status_word, STATUS_INDEX_RANGE);
    }
    if (hit)
      atomicAdd(hits, 1u);
    barrier();
    const uint nh = hits - seen; // uniform: no thread increments again before the last barrier
    seen += nh;
    if (nh != 0u) {
      scan[t] = hit ? 1u : 0u;
      barrier();
      for (uint off = 1u; off < 256u; off <<= 1) {
        const uint a = t >= off ? scan[t - off] : 0u;
        barrier();
        scan[t] += a;
        barrier();
      }
      if (hit)
        list[scan[t] - 1u] = t;
      barrier();
      if (j < pc.N)
        for (uint q = 0u; q < nh; q++)
          s += LOAD(x_[O0 + (i0 + list[q]) * pc.N + j]);
    }
    barrier(); // every read of hits, scan and list above happens before the next tile's writes
  }
  if (j >= pc.N)
    return;
  const uint o = m * pc.N + j;
  if ((pc.flags & 2u) == 0u) {
    acc_[O3 + o] = s;
    return;
  }
  if ((pc.flags & 4u) != 0u)
    s += LOAD(y_[O2 + o]);
  y_[O2 + o] = STORE(s);
}
