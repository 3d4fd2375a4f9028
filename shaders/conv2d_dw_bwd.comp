#version 450
// conv2d_dw_bwd.comp: the backward of a depthwise conv2d (groups = C, stride 1, dilation 1;
// mexd_conv2d_backward_input / _weight, lib/ops/conv2d.c), in three modes chosen by pc.mode.
// x [N,C,H,W], w [C,1,KH,KW], dy [N,C,OH,OW] with OH = H + 2·pad_h − KH + 1 (likewise OW).
// - 0 (input): one invocation per element of dx:
//     dx[n,c,i,j] = Σ_{u,v} dy[n,c, i−u+pad_h, j−v+pad_w]·w[c,0,u,v]   (+ dx when accumulating),
//   over the taps whose dy position lies inside [0,OH)×[0,OW) (at most KH·KW iterations).
// - 1 (weight, partial sums): the "taps" are the C·KH·KW weights, then (with db) C biases; the
//   P = N·OH·OW output positions are cut into nchunks chunks of `chunk` positions (a multiple of
//   256, at most nchunks ≤ 1024, so each invocation loops chunk/256 times: well inside lavapipe's
//   65,535-iteration limit, lib/ops/gemm.c).  A workgroup per (tap, chunk) sums
//     dy[n,c,a,b]·x[n,c,a+u−pad_h, b+v−pad_w]   (or dy alone for a bias)
//   over its chunk, strided over its 256 threads, then a shared-memory tree → part[chunk·taps + tap]
//   (f32).  Consecutive workgroups are the taps of one chunk, which read the same planes.
// - 2 (weight, final): one invocation per tap adds its nchunks partial sums in chunk order to dw
//   (or db).  No float atomics anywhere: the result is the same bits run to run.
// Bindings: 0 dy (modes 0, 1) / db (mode 2); 1 w (mode 0) / x (mode 1); 2 dx (mode 0) / dw
// (mode 2); 3 part (f32 scratch, modes 1, 2).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RW(0, A, TYPE)
#define a_ TENSOR(A, 0)
TENSOR_RW(1, B, TYPE)
#define b_ TENSOR(B, 1)
TENSOR_RW(2, Cv, TYPE)
#define c_ TENSOR(Cv, 2)
TENSOR_RW(3, Part, float)
#define part_ TENSOR(Part, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_CONV2D_DW_BWD } pc; // push.h

shared float red[256];

void input_grad()
{
  const uint e = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (e >= pc.total)
    return;
  const uint j = e % pc.W, r1 = e / pc.W;
  const uint i = r1 % pc.H, nc = r1 / pc.H; // nc = n·C + c
  const uint c = nc % pc.C;
  // dy row a = i − u + pad_h ∈ [0, OH)  ⇔  u ∈ [i + pad_h − OH + 1, i + pad_h]
  const int ai = int(i) + pc.pad_h, bj = int(j) + pc.pad_w;
  const int u0 = max(0, ai - int(pc.OH) + 1), u1 = min(int(pc.KH), ai + 1);
  const int v0 = max(0, bj - int(pc.OW) + 1), v1 = min(int(pc.KW), bj + 1);
  const uint dyp = O0 + nc * pc.OH * pc.OW, wp = O1 + c * pc.KH * pc.KW;
  float s = 0.0;
  for (int u = u0; u < u1; u++) {
    const uint dr = dyp + uint(ai - u) * pc.OW, wr = wp + uint(u) * pc.KW;
    for (int v = v0; v < v1; v++)
      s = fma(LOAD(a_[dr + uint(bj - v)]), LOAD(b_[wr + uint(v)]), s);
  }
  if (pc.acc != 0u)
    s += LOAD(c_[O2 + e]);
  c_[O2 + e] = STORE(s);
}

void weight_partial()
{
  const uint g = MEXD_GROUP_ID;
  if (g >= pc.total) // uniform over the workgroup: no thread reaches a barrier
    return;
  const uint t = gl_LocalInvocationID.x;
  const uint tap = g % pc.taps, k = g / pc.taps;
  const uint kk = pc.KH * pc.KW, nw = pc.C * kk;
  const bool bias = tap >= nw;
  const uint c = bias ? tap - nw : tap / kk;
  const uint uv = bias ? 0u : tap - c * kk;
  const int du = int(uv / pc.KW) - pc.pad_h, dv = int(uv % pc.KW) - pc.pad_w;
  const uint plane = pc.OH * pc.OW, P = pc.N * plane;
  const uint p1 = min(P, (k + 1u) * pc.chunk);
  float s = 0.0;
  for (uint p = k * pc.chunk + t; p < p1; p += 256u) {
    const uint n = p / plane, q = p - n * plane;
    const uint a = q / pc.OW, b = q - a * pc.OW;
    const float d = LOAD(a_[O0 + (n * pc.C + c) * plane + q]);
    if (bias) {
      s += d;
      continue;
    }
    const int xi = int(a) + du, xj = int(b) + dv;
    if (xi >= 0 && xi < int(pc.H) && xj >= 0 && xj < int(pc.W))
      s = fma(d, LOAD(b_[O1 + ((n * pc.C + c) * pc.H + uint(xi)) * pc.W + uint(xj)]), s);
  }
  red[t] = s;
  barrier();
  for (uint w = 128u; w > 0u; w >>= 1) {
    if (t < w)
      red[t] += red[t + w];
    barrier();
  }
  if (t == 0u)
    part_[O3 + k * pc.taps + tap] = red[0];
}

void weight_final()
{
  const uint tap = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (tap >= pc.total)
    return;
  float s = 0.0;
  for (uint k = 0u; k < pc.nchunks; k++)
    s += part_[O3 + k * pc.taps + tap];
  const uint nw = pc.C * pc.KH * pc.KW;
  if (tap < nw)
    c_[O2 + tap] = STORE(LOAD(c_[O2 + tap]) + s);
  else
    a_[O0 + tap - nw] = STORE(LOAD(a_[O0 + tap - nw]) + s);
}

void main()
{
  if (pc.mode == 0u)
    input_grad();
  else if (pc.mode == 1u)
    weight_partial();
  else
    weight_final();
}
