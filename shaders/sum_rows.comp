#version 450
// sum_rows.comp: y[j] = Σ_rows x[r,j] (+ y[j] when accumulating) for x [M,N] (mexd_sum_rows,
// lib/ops/reduce.c), in one or two dispatches chosen by pc.mode:
// - 0: the rows are cut into kpc chunks of `chunk` rows; a workgroup of 64 columns × 4 row lanes
//   sums one chunk for 64 columns (coalesced) and reduces its lanes in shared memory; with kpc = 1
//   the sum goes straight to y, otherwise to part [kpc, N] (f32);
// - 1: one invocation per column adds the kpc partial sums in chunk order (deterministic) into y.
// Sums are f32.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 64, local_size_y = 4) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)
TENSOR_RW(2, Part, float)
#define part_ TENSOR(Part, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_SUM_ROWS } pc; // push.h

shared float lanes[4][64];

void store(uint j, float v)
{
  if (pc.acc != 0u)
    v += LOAD(y_[O1 + j]);
  y_[O1 + j] = STORE(v);
}

void main()
{
  const uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
  const uint g = MEXD_GROUP_ID;
  if (pc.mode == 1u) {
    uint j = g * 256u + ly * 64u + lx;
    if (j >= pc.N)
      return;
    float s = 0.0;
    for (uint k = 0; k < pc.kpc; k++)
      s += part_[O2 + k * pc.N + j];
    store(j, s);
    return;
  }

  if (g >= pc.n_colblk * pc.kpc) // uniform across the workgroup: no barrier skipped
    return;
  const uint cb = g % pc.n_colblk, k = g / pc.n_colblk;
  const uint j = cb * 64u + lx;
  const uint r0 = k * pc.chunk, r1 = min(r0 + pc.chunk, pc.M);
  float s = 0.0;
  if (j < pc.N)
    for (uint r = r0 + ly; r < r1; r += 4u)
      s += LOAD(x_[O0 + r * pc.N + j]);
  lanes[ly][lx] = s;
  barrier();
  if (ly != 0u || j >= pc.N)
    return;
  float sum = (lanes[0][lx] + lanes[1][lx]) + (lanes[2][lx] + lanes[3][lx]);
  if (pc.kpc == 1u)
    store(j, sum);
  else
    part_[O2 + k * pc.N + j] = sum;
}
