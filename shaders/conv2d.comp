#version 450
// conv2d.comp: y[n,o,oh,ow] = bias[o] + Σ_{ic,kh,kw} x[n, g·cpg+ic, ih, iw] · w[o, ic, kh, kw]
// with ih = oh·stride_h − pad_h + kh·dil_h (likewise iw) and g = o / opg; taps outside x are the
// zero padding.  Accumulation is f32.  Two paths, chosen by specialization constant MODE:
//
// MODE 0, direct: one invocation per output element (depthwise and other thin convolutions).
// MODE 1, implicit GEMM: per group, Y_g[opg, N·OH·OW] = W_g[opg, K] · X_g[K, N·OH·OW] with
//   K = cpg·KH·KW, W_g the group's weights as stored and X_g the im2col matrix of the group's
//   input channels, gathered on the fly into shared memory (never materialised).  Tiled as
//   gemm.comp: a workgroup computes a BM×BN tile of Y_g stepping through K by BK, each thread a
//   TM×TN block (rows tr + i·(BM/TM), columns tc + j·(BN/TN)); columns vary fastest across
//   threads so that the gathers from x and the stores to y run along output pixels.
//
// Both run on a 1-D grid of workgroups spread over x and y (MEXD_GROUP_ID), bounds-checked.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint MODE = 0;
layout(constant_id = 1) const uint BM = 1; // MODE 1 tile sizes (1 in MODE 0: no shared memory)
layout(constant_id = 2) const uint BN = 1;
layout(constant_id = 3) const uint BK = 1;
layout(constant_id = 4) const uint TM = 1;
layout(constant_id = 5) const uint TN = 1;
layout(local_size_x_id = 6) in; // MODE 1: (BM/TM)·(BN/TN), a multiple of BN

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RO(1, Wt, TYPE)
#define w_ TENSOR(Wt, 1)
TENSOR_RO(2, Bias, TYPE)
#define bias_ TENSOR(Bias, 2)
TENSOR_WO(3, Y, TYPE)
#define y_ TENSOR(Y, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_CONV2D } pc; // push.h
#define CK (pc.cpg * pc.KH * pc.KW) // the GEMM depth
#define CP (pc.OH * pc.OW)           // output pixels per image


shared float As[BK * BM]; // [k][m]
shared float Bs[BK * BN]; // [k][n]

void conv_direct()
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
  uint xc = O0 + (n * pc.C + c0) * pc.H * pc.W; // channel plane of x
  uint wc = O1 + o * pc.cpg * ksize;             // weights of (o, ic)
  for (uint ic = 0; ic < pc.cpg; ic++) {
    for (int kh = kh0; kh < kh1; kh++) {
      const uint xr = xc + uint(ih0 + kh * pc.dil_h) * pc.W;
      const uint wr = wc + uint(kh) * pc.KW;
      for (int kw = kw0; kw < kw1; kw++)
        acc = fma(LOAD(x_[xr + uint(iw0 + kw * pc.dil_w)]), LOAD(w_[wr + uint(kw)]), acc);
    }
    xc += pc.H * pc.W;
    wc += ksize;
  }
  if (pc.has_bias != 0)
    acc += LOAD(bias_[O2 + o]);
  y_[O3 + gid] = STORE(acc);
}

void conv_gemm()
{
  const uint WM = BM / TM, WN = BN / TN;
  const uint nthreads = WM * WN;
  const uint tile = MEXD_GROUP_ID;
  if (tile >= pc.total) // uniform over the workgroup: no thread reaches a barrier
    return;
  const uint tid = gl_LocalInvocationID.x;
  const uint tc = tid % WN, tr = tid / WN;
  const uint mt = tile % pc.mtiles;
  const uint t2 = tile / pc.mtiles;
  const uint n0 = (t2 % pc.ntiles) * BN;
  const uint grp = t2 / pc.ntiles;
  const uint m0 = mt * BM;      // row of the tile within the group's opg output channels
  const uint o0 = grp * pc.opg; // the group's first output channel
  const uint ksize = pc.KH * pc.KW;

  // The im2col column this thread gathers is fixed (nthreads is a multiple of BN): decompose it
  // once into (n, oh, ow) and the x plane of the group's first input channel.
  const uint bcol = tid % BN, bk0 = tid / BN, bkstep = nthreads / BN;
  const uint j = n0 + bcol;
  const bool jvalid = j < pc.ncols;
  const uint jn = jvalid ? j / CP : 0, pix = jvalid ? j % CP : 0;
  const int ih0 = int(pix / pc.OW) * pc.stride_h - pc.pad_h;
  const int iw0 = int(pix % pc.OW) * pc.stride_w - pc.pad_w;
  const uint xbase = O0 + (jn * pc.C + grp * pc.cpg) * pc.H * pc.W;
  const uint wbase = O1 + o0 * CK;

  float acc[TM * TN];
  for (uint i = 0; i < TM * TN; i++)
    acc[i] = 0.0;

  for (uint k0 = 0; k0 < CK; k0 += BK) {
    // weights: row m of W_g is contiguous along k
    for (uint idx = tid; idx < BM * BK; idx += nthreads) {
      const uint kk = idx % BK, mm = idx / BK;
      const uint m = m0 + mm, k = k0 + kk;
      As[kk * BM + mm] = (m < pc.opg && k < CK) ? LOAD(w_[wbase + m * CK + k]) : 0.0;
    }
    // im2col: k → (ic, kh, kw); taps in the padding (and columns past the end) are 0
    for (uint kk = bk0; kk < BK; kk += bkstep) {
      const uint k = k0 + kk;
      float v = 0.0;
      if (jvalid && k < CK) {
        const uint ic = k / ksize, r = k - ic * ksize;
        const uint kh = r / pc.KW, kw = r - kh * pc.KW;
        const int ih = ih0 + int(kh) * pc.dil_h, iw = iw0 + int(kw) * pc.dil_w;
        if (ih >= 0 && ih < int(pc.H) && iw >= 0 && iw < int(pc.W))
          v = LOAD(x_[xbase + (ic * pc.H + uint(ih)) * pc.W + uint(iw)]);
      }
      Bs[kk * BN + bcol] = v;
    }
    barrier();
    for (uint kk = 0; kk < BK; kk++) {
      float ar[TM], br[TN];
      for (uint i = 0; i < TM; i++)
        ar[i] = As[kk * BM + tr + i * WM];
      for (uint jj = 0; jj < TN; jj++)
        br[jj] = Bs[kk * BN + tc + jj * WN];
      for (uint i = 0; i < TM; i++)
        for (uint jj = 0; jj < TN; jj++)
          acc[i * TN + jj] = fma(ar[i], br[jj], acc[i * TN + jj]);
    }
    barrier();
  }

  for (uint i = 0; i < TM; i++) {
    const uint m = m0 + tr + i * WM;
    if (m >= pc.opg)
      continue;
    const uint o = o0 + m;
    const float b = pc.has_bias != 0 ? LOAD(bias_[O2 + o]) : 0.0;
    for (uint jj = 0; jj < TN; jj++) {
      const uint col = n0 + tc + jj * WN;
      if (col >= pc.ncols)
        continue;
      const uint cn = col / CP, cp = col - cn * CP;
      y_[O3 + (cn * pc.O + o) * CP + cp] = STORE(acc[i * TN + jj] + b);
    }
  }
}

void main()
{
  if (MODE == 0)
    conv_direct();
  else
    conv_gemm();
}
