#version 450
// image_prep.comp: 8-bit RGB tiles → normalised float planes (lib/ops/vision.c).
// y[b,c,oy,ox] = ((Σ_j Σ_i wy[oy,j]·wx[ox,i]·p[b, y0(oy)+j, x0(ox)+i, c]) / 255 − mean[c]) / std[c]
// where p are the bytes of the tiles (B·H·W·3, packed four to a word, little-endian) and the
// taps (first index and count per output row/column, bounds) and their weights (host-computed,
// PyTorch's antialiased bilinear) come in `taps` and `wts`.  One invocation per output element.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, Px, uint)
#define px_ TENSOR(Px, 0)
TENSOR_RO(1, Taps, int)
#define taps_ TENSOR(Taps, 1)
TENSOR_RO(2, Wts, float)
#define wts_ TENSOR(Wts, 2)
TENSOR_WO(3, Y, TYPE)
#define y_ TENSOR(Y, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_IMAGE_PREP } pc; // push.h

float byte_at(uint k)
{
  return float((px_[O0 + (k >> 2)] >> ((k & 3u) * 8u)) & 0xffu);
}

void main()
{
  const uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.total)
    return;
  const uint ox = i % pc.OW, oy = (i / pc.OW) % pc.OH;
  const uint c = (i / (pc.OW * pc.OH)) % 3u, b = i / (pc.OW * pc.OH * 3u);
  // taps: [OH + OW, 2]: (first, count) for each output row, then each output column
  const uint ty0 = uint(taps_[O1 + 2u * oy]), tyn = uint(taps_[O1 + 2u * oy + 1u]);
  const uint tx0 = uint(taps_[O1 + 2u * (pc.OH + ox)]), txn = uint(taps_[O1 + 2u * (pc.OH + ox) + 1u]);
  // wts: [OH·KY] row weights, then [OW·KX] column weights
  const uint wy = O2 + oy * pc.KY, wx = O2 + pc.OH * pc.KY + ox * pc.KX;
  float acc = 0.0;
  for (uint j = 0u; j < tyn; j++) {
    const uint rowbase = ((b * pc.H + ty0 + j) * pc.W + tx0) * 3u + c;
    float r = 0.0;
    for (uint k = 0u; k < txn; k++)
      r += wts_[wx + k] * byte_at(rowbase + 3u * k);
    acc += wts_[wy + j] * r;
  }
  const float mean = c == 0u ? pc.mean[0] : (c == 1u ? pc.mean[1] : pc.mean[2]);
  const float inv_std = c == 0u ? pc.inv_std[0] : (c == 1u ? pc.inv_std[1] : pc.inv_std[2]);
  y_[O3 + i] = STORE((acc * (1.0 / 255.0) - mean) * inv_std);
}
