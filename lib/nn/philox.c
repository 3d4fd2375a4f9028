/* philox.c: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
 * and the sampler's normals; the layout is in philox.h. */
#include "nn/philox.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void mexd_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static double uniform(uint32_t x)
{
  return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0);
}

void mexd_philox_normal4(uint64_t seed, uint32_t t, uint32_t s, uint32_t b, float out[4])
{
  const uint32_t counter[4] = {t, s, b, MEXD_PHILOX_TAG};
  const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  uint32_t x[4];
  mexd_philox4x32_10(counter, key, x);
  for (int i = 0; i < 4; i += 2) {
    double r = sqrt(-2.0 * log(uniform(x[i])));
    double a = 2.0 * G_PI * uniform(x[i + 1]);
    out[i] = (float)(r * cos(a));
    out[i + 1] = (float)(r * sin(a));
  }
}

void mexd_philox_noise(uint64_t seed, uint32_t t, uint32_t n_chains, uint32_t n_classes, float *out)
{
  for (uint32_t s = 0; s < n_chains; s++)
    for (uint32_t b = 0; b * 4 < n_classes; b++) {
      float z[4];
      mexd_philox_normal4(seed, t, s, b, z);
      for (uint32_t j = 0; j < 4 && b * 4 + j < n_classes; j++)
        out[s * n_classes + b * 4 + j] = z[j];
    }
}
