#version 450
// maxpool.comp: y[n,c,oy,ox] = max of x[n,c,oy·s − p + i, ox·s − p + j] over the k×k window
// inside the image (lib/ops/vision.c); NaN wins, as in PyTorch.  One invocation per output.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

TENSOR_RO(0, X, TYPE)
#define x_ TENSOR(X, 0)
TENSOR_WO(1, Y, TYPE)
#define y_ TENSOR(Y, 1)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_MAXPOOL } pc; // push.h

void main()
{
  const uint i = MEXD_GROUP_ID * 256u + gl_LocalInvocationID.x;
  if (i >= pc.total)
    return;
  const uint ox = i % pc.OW, oy = (i / pc.OW) % pc.OH, plane = i / (pc.OW * pc.OH);
  const uint base = O0 + plane * pc.H * pc.W;
  const int y0 = int(oy * pc.stride) - pc.pad, x0 = int(ox * pc.stride) - pc.pad;
  float m = uintBitsToFloat(0xff800000u);
  for (int dy = 0; dy < int(pc.k); dy++) {
    const int yy = y0 + dy;
    if (yy < 0 || yy >= int(pc.H))
      continue;
    for (int dx = 0; dx < int(pc.k); dx++) {
      const int xx = x0 + dx;
      if (xx < 0 || xx >= int(pc.W))
        continue;
      const float v = LOAD(x_[base + uint(yy) * pc.W + uint(xx)]);
      if (v > m || isnan(v))
        m = v;
    }
  }
  y_[O1 + i] = STORE(m);
}
