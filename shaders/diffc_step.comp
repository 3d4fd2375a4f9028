#version 450
// diffc_step.comp: one whole Diff-C sampler step for S chains in one dispatch (lib/nn/diffc.c):
// the denoiser ε̂ = ε_θ(Z, f, ρ, t) (MEXD.md §3) and the state update, one workgroup per chain.
//
//   h1 = softplus(LN1(emb1[t] ⊙ (W1f·f + b1eff))) ⊙ hz      (b1eff = W1ρ·ρ + b1, hz = LN_z(...))
//   h2 = softplus(LN2(emb2[t] ⊙ (W2·h1 + b2)));  h3 = softplus(LN3(emb3[t] ⊙ (W3·h2 + b3)))
//   ε̂  = Wo·h3 + bo
//   f̂0 = c0·f + c1·ρ + c2·ε̂;   f ← a0·f̂0 + a1·ρ + a2·ε̂ + a3·z + a4·f     (mode bits below)
//
// Buffers are f32 in both builds.  P: the model's denoiser weights packed by diffc.c (W1f, W2, W3
// transposed to [in][out] so that the invocations of a workgroup read consecutive addresses);
// COND: b1eff [F], hz [F], ρ [C]; ST: f [S·C], then f̂0 [S·C], then noise rows [·, S·C].
// LayerNorm: two-pass mean / variance over F in f32 through shared memory, eps 1e-5.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint FMAX = 512; // ≥ F
layout(constant_id = 1) const uint CMAX = 4;   // ≥ C

TENSOR_RO(0, P, float)
#define p_ TENSOR(P, 0)
TENSOR_RO(1, COND, float)
#define cond_ TENSOR(COND, 1)
TENSOR_RW(2, ST, float)
#define st_ TENSOR(ST, 2)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_DIFFC_STEP } pc; // push.h

shared float h[2][FMAX];
shared float red[256];
shared float fs[CMAX];
shared float es[CMAX];

// offsets into P, in the order diffc.c packs them
uint off_w1() { return 0u; }
uint off_w2() { return pc.C * pc.F; }
uint off_b2() { return off_w2() + pc.F * pc.F; }
uint off_w3() { return off_b2() + pc.F; }
uint off_b3() { return off_w3() + pc.F * pc.F; }
uint off_emb(uint k) { return off_b3() + pc.F + k * (pc.T + 1u) * pc.F; }
uint off_ln(uint k) { return off_emb(3u) + k * pc.F; } // k: 0 w1, 1 b1, 2 w2, 3 b2, 4 w3, 5 b3
uint off_wo() { return off_ln(6u); }
uint off_bo() { return off_wo() + pc.C * pc.F; }

float sum_all(float v)
{
  uint lid = gl_LocalInvocationID.x;
  red[lid] = v;
  barrier();
  for (uint w = 128u; w > 0u; w >>= 1) {
    if (lid < w)
      red[lid] += red[lid + w];
    barrier();
  }
  float s = red[0];
  barrier();
  return s;
}

float log1p_unit(float z)
{
  float s = z / (2.0 + z);
  float s2 = s * s;
  float q = 1.0 / 17.0;
  for (int k = 7; k >= 0; k--)
    q = q * s2 + 1.0 / float(2 * k + 1);
  return 2.0 * s * q;
}

float softplus(float v)
{
  return v > 20.0 ? v : max(v, 0.0) + log1p_unit(exp(-abs(v)));
}

// h[b] ← softplus(LN_k(h[b])) in place, k = 0, 1, 2
void norm_softplus(uint b, uint k)
{
  uint lid = gl_LocalInvocationID.x;
  float s = 0.0;
  for (uint i = lid; i < pc.F; i += 256u)
    s += h[b][i];
  float mean = sum_all(s) / float(pc.F);
  float ss = 0.0;
  for (uint i = lid; i < pc.F; i += 256u) {
    float d = h[b][i] - mean;
    ss += d * d;
  }
  float rstd = inversesqrt(sum_all(ss) / float(pc.F) + 1e-5);
  uint ow = off_ln(2u * k), ob = off_ln(2u * k + 1u);
  for (uint i = lid; i < pc.F; i += 256u)
    h[b][i] = softplus((h[b][i] - mean) * rstd * p_[ow + i] + p_[ob + i]);
  barrier();
}

// h[dst][o] = emb_k[t][o] · (bias[o] + Σ_i W[i][o] · h[src][i])
void dense(uint src, uint dst, uint ow, uint obias, uint k)
{
  uint lid = gl_LocalInvocationID.x;
  uint oe = off_emb(k) + pc.t * pc.F;
  for (uint o = lid; o < pc.F; o += 256u) {
    float acc = 0.0;
    for (uint i = 0u; i < pc.F; i++)
      acc += p_[ow + i * pc.F + o] * h[src][i];
    h[dst][o] = (acc + p_[obias + o]) * p_[oe + o];
  }
  barrier();
}

void main()
{
  uint s = gl_WorkGroupID.x;
  uint lid = gl_LocalInvocationID.x;
  uint F = pc.F, C = pc.C;
  uint base = O2 + s * C;        // f of chain s
  uint base0 = base + pc.S * C;     // f̂0
  uint basez = O2 + (2u + pc.noise_row) * pc.S * C + s * C;
  for (uint c = lid; c < C; c += 256u)
    fs[c] = st_[base + c];
  barrier();
  // layer 1: C inputs
  uint oe = off_emb(0u) + pc.t * F;
  for (uint o = lid; o < F; o += 256u) {
    float acc = 0.0;
    for (uint c = 0u; c < C; c++)
      acc += p_[off_w1() + c * F + o] * fs[c];
    h[0][o] = (acc + cond_[O1 + o]) * p_[oe + o];
  }
  barrier();
  norm_softplus(0u, 0u);
  for (uint o = lid; o < F; o += 256u)
    h[0][o] *= cond_[O1 + F + o];
  barrier();
  dense(0u, 1u, off_w2(), off_b2(), 1u);
  norm_softplus(1u, 1u);
  dense(1u, 0u, off_w3(), off_b3(), 2u);
  norm_softplus(0u, 2u);
  for (uint c = 0u; c < C; c++) {
    float part = 0.0;
    for (uint i = lid; i < F; i += 256u)
      part += p_[off_wo() + c * F + i] * h[0][i];
    float e = sum_all(part);
    if (lid == 0u)
      es[c] = e + p_[off_bo() + c];
  }
  barrier();
  for (uint c = lid; c < C; c += 256u) {
    float f = fs[c], rho = cond_[O1 + 2u * F + c], eps = es[c];
    float f0 = pc.c[0] * f + pc.c[1] * rho + pc.c[2] * eps;
    if ((pc.mode & 4u) != 0u)
      st_[base0 + c] = eps;
    else if ((pc.mode & 1u) != 0u)
      st_[base0 + c] = f0;
    if ((pc.mode & 2u) != 0u) {
      float nf = pc.a[0] * f0 + pc.a[1] * rho + pc.a[2] * eps;
      if (pc.a[3] != 0.0)
        nf += pc.a[3] * st_[basez + c];
      st_[base + c] = nf + pc.a[4] * f;
    }
  }
}
