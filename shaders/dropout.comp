#version 450
// dropout.comp: y = x·keep·scale (+ y when accumulating) with the keep mask drawn from
// Philox4x32-10 exactly as lib/ops/grad.h documents (mexd_dropout): key = seed, element i uses
// counter (i/4, stream lo, stream hi, "drop") and output word i%4, kept when (w >> 8) ≥ thr.
// One invocation per element (the four of a block each run the ten rounds: cheaper than sharing).
// y may be x.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_RW(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_DROPOUT } pc; // push.h

const uint DROPOUT_TAG = 0x64726f70u;

uvec4 philox4x32_10(uvec4 c, uvec2 k)
{
  for (int r = 0; r < 10; r++) {
    if (r > 0)
      k += uvec2(0x9E3779B9u, 0xBB67AE85u);
    uint hi0, lo0, hi1, lo1;
    umulExtended(0xD2511F53u, c.x, hi0, lo0);
    umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
    c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

void main()
{
  const uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.n)
    return;
  uvec4 w = philox4x32_10(uvec4(i >> 2, pc.stream0, pc.stream1, DROPOUT_TAG),
                          uvec2(pc.key0, pc.key1));
  const uint word = w[i & 3u];
  float v = (word >> 8) >= pc.thr ? LOAD(x_[O0 + i]) * pc.scale : 0.0;
  if (pc.acc != 0u)
    v += LOAD(y_[O1 + i]);
  y_[O1 + i] = STORE(v);
}
