#version 450
// conv2d.comp: y[n,o,oh,ow] = bias[o] + Σ_{ic,kh,kw} x[n, g·cpg+ic, ih, iw] · w[o, ic, kh, kw]
// with ih = oh·stride_h − pad_h + kh·dil_h (likewise iw) and g = o / opg; taps outside x are the
// zero padding.  A direct convolution: one invocation per output element, accumulating in f32,
// on a 1-D grid of workgroups spread over x and y (MEXD_GROUP_ID).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { TYPE x[]; };
layout(std430, binding = 1) readonly buffer Wt { TYPE w[]; };
layout(std430, binding = 2) readonly buffer Bias { TYPE bias[]; };
layout(std430, binding = 3) writeonly buffer Y { TYPE y[]; };

layout(push_constant) uniform PC {
  PC_HEADER
  uint total; // elements of y
  uint C, H, W;
  uint O, OH, OW;
  uint KH, KW;
  uint cpg, opg; // input / output channels per group
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  uint has_bias;
} pc;

void main()
{
  const uint gid = MEXD_GROUP_ID * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (gid >= pc.total)
    return;
  const uint ow = gid % pc.OW;
  uint t = gid / pc.OW;
  const uint oh = t % pc.OH;
  t /= pc.OH;
  const uint o = t % pc.O;
  const uint n = t / pc.O;
  const uint c0 = (o / pc.opg) * pc.cpg;

  const int ih0 = int(oh) * pc.stride_h - pc.pad_h;
  const int iw0 = int(ow) * pc.stride_w - pc.pad_w;
  // the taps that land inside x: kh in [kh0, kh1), kw in [kw0, kw1)
  const int H = int(pc.H), W = int(pc.W);
  const int kh0 = ih0 >= 0 ? 0 : (-ih0 + pc.dil_h - 1) / pc.dil_h;
  const int kh1 = min(int(pc.KH), H - ih0 <= 0 ? 0 : (H - ih0 + pc.dil_h - 1) / pc.dil_h);
  const int kw0 = iw0 >= 0 ? 0 : (-iw0 + pc.dil_w - 1) / pc.dil_w;
  const int kw1 = min(int(pc.KW), W - iw0 <= 0 ? 0 : (W - iw0 + pc.dil_w - 1) / pc.dil_w);

  float acc = 0.0;
  const uint ksize = pc.KH * pc.KW;
  uint xc = pc.o0 + (n * pc.C + c0) * pc.H * pc.W; // channel plane of x
  uint wc = pc.o1 + o * pc.cpg * ksize;             // weights of (o, ic)
  for (uint ic = 0; ic < pc.cpg; ic++) {
    for (int kh = kh0; kh < kh1; kh++) {
      const uint xr = xc + uint(ih0 + kh * pc.dil_h) * pc.W;
      const uint wr = wc + uint(kh) * pc.KW;
      for (int kw = kw0; kw < kw1; kw++)
        acc = fma(LOAD(x[xr + uint(iw0 + kw * pc.dil_w)]), LOAD(w[wr + uint(kw)]), acc);
    }
    xc += pc.H * pc.W;
    wc += ksize;
  }
  if (pc.has_bias != 0)
    acc += LOAD(bias[pc.o2 + o]);
  y[pc.o3 + gid] = STORE(acc);
}
