#version 450
// abs_sum_max_bwd.comp: the backward of mexd_abs_sum_max (lib/ops/route.c): for y = max over the
// lines of x [B,R,C] of Σ|x| along the line,
//   dx = dy·sign(x)/n_max on the n_max lines whose sum equals the maximum, 0 elsewhere
// (+ dx when accumulating); sign(0) = 0, sign(NaN) = NaN; when the maximum is NaN (a NaN in x)
// the lines whose sum is NaN are the ones that attain it.  Three dispatches chosen by pc.mode:
// - 0: one invocation per (line, segment of `seg` elements) sums |x| along it, in element order,
//   into part[line·nseg + segment].  A line of at most `seg` elements is one segment, summed
//   exactly as abs_sum_max.comp sums it, so the maximum found here is the forward's bit for bit;
//   longer lines are split so that no invocation loops past lavapipe's limit (lib/ops/gemm.c).
// - 1: one workgroup: each thread adds the segments of its lines in order into sums[line], keeps
//   its largest (NaN noted apart), a tree takes the maximum, then the lines equal to it are
//   counted (a second tree) → stats = (maximum, count).
// - 2: one invocation per element of x writes dx.
// pc.axis 0: lines are rows (sums along C); 1: lines are columns (sums along R).
// Bindings: 0 x, 1 dy [1], 2 dx, 3 scratch (f32): part [L·nseg], sums [L], stats [2]
// (L = B·lines).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, DY, TYPE)
#define dy_ TENSOR(DY, 1)
TENSOR_RW(2, DX, TYPE)
#define dx_ TENSOR(DX, 2)
TENSOR_RW(3, Scratch, float)
#define scr_ TENSOR(Scratch, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_ABS_SUM_MAX_BWD } pc; // push.h

shared float red[256];
shared uint cnt[256];
shared uint has_nan;

uint n_lines() { return pc.B * (pc.axis == 0u ? pc.R : pc.C); }

bool attains(float s, float mx) { return isnan(mx) ? isnan(s) : s == mx; }

void main()
{
  const uint t = gl_LocalInvocationID.x;
  const uint L = n_lines();
  const uint sums = L * pc.nseg, stats = sums + L; // offsets into the scratch
  if (pc.mode == 0u) {
    const uint q = MEXD_GROUP_ID * 256u + t;
    if (q >= L * pc.nseg)
      return;
    const uint line = q / pc.nseg, sg = q - line * pc.nseg;
    const uint lines = pc.axis == 0u ? pc.R : pc.C, len = pc.axis == 0u ? pc.C : pc.R;
    const uint b = line / lines, l = line - b * lines;
    const uint base = O0 + b * pc.R * pc.C + (pc.axis == 0u ? l * pc.C : l);
    const uint stride = pc.axis == 0u ? 1u : pc.C;
    const uint j1 = min(len, (sg + 1u) * pc.seg);
    float s = 0.0;
    for (uint j = sg * pc.seg; j < j1; j++)
      s += abs(LOAD(x_[base + j * stride]));
    scr_[O3 + q] = s;
    return;
  }
  if (pc.mode == 1u) {
    if (MEXD_GROUP_ID != 0u) // uniform
      return;
    if (t == 0u)
      has_nan = 0u;
    float best = 0.0; // sums are ≥ 0
    bool nan_seen = false;
    for (uint line = t; line < L; line += 256u) {
      float s = 0.0; // 0 + the one segment's sum is that sum exactly
      for (uint k = 0u; k < pc.nseg; k++)
        s += scr_[O3 + line * pc.nseg + k];
      scr_[O3 + sums + line] = s;
      if (isnan(s))
        nan_seen = true;
      else
        best = max(best, s);
    }
    barrier(); // has_nan's reset is seen before the atomics below
    if (nan_seen)
      atomicOr(has_nan, 1u);
    red[t] = best;
    barrier();
    for (uint w = 128u; w > 0u; w >>= 1) {
      if (t < w)
        red[t] = max(red[t], red[t + w]);
      barrier();
    }
    const float mx = has_nan != 0u ? uintBitsToFloat(0x7fc00000u) : red[0];
    uint c = 0u;
    for (uint line = t; line < L; line += 256u)
      if (attains(scr_[O3 + sums + line], mx))
        c++;
    cnt[t] = c;
    barrier();
    for (uint w = 128u; w > 0u; w >>= 1) {
      if (t < w)
        cnt[t] += cnt[t + w];
      barrier();
    }
    if (t == 0u) {
      scr_[O3 + stats] = mx;
      scr_[O3 + stats + 1u] = float(cnt[0]);
    }
    return;
  }
  // mode 2
  const uint e = MEXD_GROUP_ID * 256u + t;
  if (e >= pc.n)
    return;
  const uint rc = pc.R * pc.C;
  const uint b = e / rc, r = (e - b * rc) / pc.C, c = e - b * rc - r * pc.C;
  const uint line = b * (pc.axis == 0u ? pc.R : pc.C) + (pc.axis == 0u ? r : c);
  float v = 0.0;
  if (attains(scr_[O3 + sums + line], scr_[O3 + stats])) {
    const float xv = LOAD(x_[O0 + e]);
    const float sg = xv > 0.0 ? 1.0 : (xv < 0.0 ? -1.0 : (isnan(xv) ? xv : 0.0));
    v = LOAD(dy_[O1]) * sg / scr_[O3 + stats + 1u];
  }
  if (pc.acc != 0u)
    v += LOAD(dx_[O2 + e]);
  dx_[O2 + e] = STORE(v);
}
