#version 450
// mean_rows.comp: column means of groups of rows, in up to two passes (lib/ops/reduce.c).
// x is [M,N]; its rows are cut into n_seg segments of seg_len rows (the last one may be shorter;
// mexd_mean_rows uses a single segment of all M rows), and each segment into kpc chunks of
// `chunk` rows.
// - mode 0: a workgroup of 64 columns × 4 row lanes sums one chunk of one segment for 64 columns
//   (coalesced: neighbouring invocations read neighbouring columns), then reduces the 4 lanes in
//   shared memory.  With kpc = 1 the chunk is the whole segment and the mean goes straight to y;
//   otherwise the sum goes to part[(segment·kpc + chunk)·N + column] (f32).
// - mode 1: one invocation per output (segment, column) adds the kpc partial sums and divides.
// Workgroups are spread over x and y by mexd_vk_grid() (MEXD_GROUP_ID); all sums are f32.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 64, local_size_y = 4) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)
TENSOR_RW(2, Part, float)
#define part_ TENSOR(Part, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_MEAN_ROWS } pc; // push.h

shared float lanes[4][64];

uint seg_rows(uint s)
{
  return min(pc.seg_len, pc.M - s * pc.seg_len);
}

void main()
{
  const uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
  const uint g = MEXD_GROUP_ID;
  if (pc.mode == 1u) {
    uint idx = g * 256u + ly * 64u + lx;
    if (idx >= pc.n_seg * pc.N)
      return;
    uint s = idx / pc.N, j = idx % pc.N;
    float acc = 0.0;
    for (uint k = 0; k < pc.kpc; k++)
      acc += part_[O2 + (s * pc.kpc + k) * pc.N + j];
    y_[O1 + idx] = STORE(acc / float(seg_rows(s)));
    return;
  }

  if (g >= pc.n_colblk * pc.n_seg * pc.kpc) // uniform across the workgroup: no barrier skipped
    return;
  const uint cb = g % pc.n_colblk;
  const uint sk = g / pc.n_colblk; // segment·kpc + chunk
  const uint s = sk / pc.kpc, k = sk % pc.kpc;
  const uint j = cb * 64u + lx;
  const uint seg0 = s * pc.seg_len;
  const uint seg1 = seg0 + seg_rows(s);
  const uint r0 = seg0 + k * pc.chunk;
  // a short last segment may have fewer chunks than kpc: its extra chunks are empty (sum 0)
  const uint r1 = r0 < seg1 ? r0 + min(pc.chunk, seg1 - r0) : r0;
  float acc = 0.0;
  if (j < pc.N)
    for (uint r = r0 + ly; r < r1; r += 4u)
      acc += LOAD(x_[O0 + r * pc.N + j]);
  lanes[ly][lx] = acc;
  barrier();
  if (ly != 0u || j >= pc.N)
    return;
  float sum = (lanes[0][lx] + lanes[1][lx]) + (lanes[2][lx] + lanes[3][lx]);
  if (pc.kpc == 1u)
    y_[O1 + s * pc.N + j] = STORE(sum / float(seg1 - seg0));
  else
    part_[O2 + sk * pc.N + j] = sum;
}
