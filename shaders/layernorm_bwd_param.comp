#version 450
// layernorm_bwd_param.comp: dgamma += Σ_rows dy·x̂, dbeta += Σ_rows dy for layernorm over rows of
// D elements (mexd_layernorm_backward, lib/ops/layernorm.c), in three dispatches chosen by pc.mode:
// - 0: one workgroup per row takes the row's statistics as layernorm.comp does (m1, the mean's
//   correction dm, rstd; x̂ = ((x − m1) − dm)·rstd without rounding m1 + dm) into stats [rows,3];
// - 1: the rows are cut into kpc chunks of `chunk` rows; a workgroup of 64 columns × 4 row lanes
//   sums (dy·x̂, dy) over one chunk for 64 columns (coalesced) and reduces its lanes in shared
//   memory into part [kpc, 2, D] (f32);
// - 2: one invocation per column adds its kpc partial sums (in chunk order: deterministic) to
//   dgamma and dbeta.
// Bindings by mode: 0: x → stats; 1: x, dy, stats → part; 2: part → dgamma (binding 0), dbeta
// (binding 1).  Sums are f32.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RW(0, X, TYPE) // x (modes 0, 1) or dgamma (mode 2)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, DY, TYPE) // dy (mode 1) or dbeta (mode 2)
#define dy_ TENSOR(DY, 1)
TENSOR_RW(2, Stats, float)
#define stats_ TENSOR(Stats, 2)
TENSOR_RW(3, Part, float)
#define part_ TENSOR(Part, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_LAYERNORM_BWD_PARAM } pc; // push.h

shared vec2 red[256];

vec2 reduce_sum(vec2 v)
{
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = 128; s > 0; s >>= 1) {
    if (t < s)
      red[t] += red[t + s];
    barrier();
  }
  vec2 r = red[0];
  barrier();
  return r;
}

void main()
{
  const uint t = gl_LocalInvocationID.x;
  const uint g = MEXD_GROUP_ID;
  if (pc.mode == 0u) {
    const uint row = g;
    if (row >= pc.rows) // uniform over the workgroup
      return;
    const uint xb = O0 + row * pc.D;
    const float D = float(pc.D);
    float s = 0.0;
    for (uint i = t; i < pc.D; i += 256u)
      s += LOAD(x_[xb + i]);
    const float m1 = reduce_sum(vec2(s, 0.0)).x / D;
    vec2 sd = vec2(0.0);
    for (uint i = t; i < pc.D; i += 256u) {
      float d = LOAD(x_[xb + i]) - m1;
      sd += vec2(d, d * d);
    }
    sd = reduce_sum(sd);
    const float dm = sd.x / D;
    if (t == 0u) {
      stats_[O2 + row * 3u] = m1;
      stats_[O2 + row * 3u + 1u] = dm;
      stats_[O2 + row * 3u + 2u] = inversesqrt(max(sd.y / D - dm * dm, 0.0) + pc.eps);
    }
    return;
  }
  if (pc.mode == 2u) {
    const uint j = g * 256u + t;
    if (j >= pc.D)
      return;
    vec2 acc = vec2(0.0);
    for (uint k = 0; k < pc.kpc; k++)
      acc += vec2(part_[O3 + k * 2u * pc.D + j], part_[O3 + k * 2u * pc.D + pc.D + j]);
    if (pc.has_dgamma != 0u)
      x_[O0 + j] = STORE(LOAD(x_[O0 + j]) + acc.x);
    if (pc.has_dbeta != 0u)
      dy_[O1 + j] = STORE(LOAD(dy_[O1 + j]) + acc.y);
    return;
  }

  // mode 1
  if (g >= pc.n_colblk * pc.kpc) // uniform across the workgroup: no barrier skipped
    return;
  const uint lx = t % 64u, ly = t / 64u;
  const uint cb = g % pc.n_colblk, k = g / pc.n_colblk;
  const uint j = cb * 64u + lx;
  const uint r0 = k * pc.chunk, r1 = min(r0 + pc.chunk, pc.rows);
  vec2 acc = vec2(0.0);
  if (j < pc.D)
    for (uint r = r0 + ly; r < r1; r += 4u) {
      float xh = ((LOAD(x_[O0 + r * pc.D + j]) - stats_[O2 + r * 3u]) - stats_[O2 + r * 3u + 1u]) *
                 stats_[O2 + r * 3u + 2u];
      float d = LOAD(dy_[O1 + r * pc.D + j]);
      acc += vec2(d * xh, d);
    }
  red[t] = acc;
  barrier();
  if (ly != 0u || j >= pc.D)
    return;
  vec2 sum = (red[lx] + red[64u + lx]) + (red[128u + lx] + red[192u + lx]);
  part_[O3 + k * 2u * pc.D + j] = sum.x;
  part_[O3 + k * 2u * pc.D + pc.D + j] = sum.y;
}
