#version 450
// gemm.comp: C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] + bias, tiled through shared memory.
// A workgroup computes a BM×BN tile of C, stepping through K by BK; each thread holds a TM×TN
// block of accumulators (rows tr + i·(BM/TM), columns tc + j·(BN/TN): strided, so neighbouring
// threads read neighbouring shared-memory words).  Operands are addressed by strides, which
// covers the transposes and 2-D operands shared by every batch (batch stride 0).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint BM = 64;
layout(constant_id = 1) const uint BN = 64;
layout(constant_id = 2) const uint BK = 16;
layout(constant_id = 3) const uint TM = 4;
layout(constant_id = 4) const uint TN = 4;
layout(local_size_x_id = 5) in;

TENSOR_RO(0, A, TYPE)
#define a_ TENSOR(A, 0)
TENSOR_RO(1, B, TYPE)
#define b_ TENSOR(B, 1)
TENSOR_RO(2, Bias, TYPE)
#define bias_ TENSOR(Bias, 2)
TENSOR_RW(3, C, TYPE)
#define c_ TENSOR(C, 3)

layout(push_constant) uniform PC { PC_HEADER MEXD_PUSH_GEMM } pc; // push.h

shared float As[BK * BM]; // [k][m]
shared float Bs[BK * BN]; // [k][n]

void main()
{
  const uint WM = BM / TM, WN = BN / TN;
  const uint nthreads = WM * WN;
  const uint tid = gl_LocalInvocationID.x;
  const uint tr = tid % WM, tc = tid / WM;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  const uint batch = gl_WorkGroupID.z;
  const uint abase = O0 + batch * pc.sab;
  const uint bbase = O1 + batch * pc.sbb;

  float acc[TM * TN];
  for (uint i = 0; i < TM * TN; i++)
    acc[i] = 0.0;

  // load order: along whichever of m/k is contiguous in A (and k/n in B), for coalescing
  const bool a_k_fast = pc.sak == 1;
  const bool b_n_fast = pc.sbn == 1;

  for (uint k0 = pc.kb; k0 < pc.ke; k0 += BK) {
    for (uint idx = tid; idx < BM * BK; idx += nthreads) {
      uint mm, kk;
      if (a_k_fast) { kk = idx % BK; mm = idx / BK; } else { mm = idx % BM; kk = idx / BM; }
      uint m = m0 + mm, k = k0 + kk;
      As[kk * BM + mm] = (m < pc.M && k < pc.ke) ? LOAD(a_[abase + m * pc.sam + k * pc.sak]) : 0.0;
    }
    for (uint idx = tid; idx < BN * BK; idx += nthreads) {
      uint nn, kk;
      if (b_n_fast) { nn = idx % BN; kk = idx / BN; } else { kk = idx % BK; nn = idx / BK; }
      uint n = n0 + nn, k = k0 + kk;
      Bs[kk * BN + nn] = (n < pc.N && k < pc.ke) ? LOAD(b_[bbase + k * pc.sbk + n * pc.sbn]) : 0.0;
    }
    barrier();
    for (uint kk = 0; kk < BK; kk++) {
      float ar[TM], br[TN];
      for (uint i = 0; i < TM; i++)
        ar[i] = As[kk * BM + tr + i * WM];
      for (uint j = 0; j < TN; j++)
        br[j] = Bs[kk * BN + tc + j * WN];
      for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++)
          acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]);
    }
    barrier();
  }

  const uint cbase = O3 + batch * pc.scb;
  for (uint i = 0; i < TM; i++) {
    uint m = m0 + tr + i * WM;
    if (m >= pc.M)
      continue;
    for (uint j = 0; j < TN; j++) {
      uint n = n0 + tc + j * WN;
      if (n >= pc.N)
        continue;
      float v = pc.alpha * acc[i * TN + j];
      uint ci = cbase + m * pc.N + n;
      if (pc.beta != 0.0)
        v += pc.beta * LOAD(c_[ci]);
      if (pc.has_bias != 0)
        v += LOAD(bias_[O2 + n]);
      c_[ci] = STORE(v);
    }
  }
}
