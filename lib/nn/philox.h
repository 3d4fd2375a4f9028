/* philox.h: the counter-based noise of the diffusion sampler (Philox4x32-10).
 *
 * A sampler draws its Gaussian noise from counters, not from a stream, so the cpu and vulkan
 * backends (and the PyTorch reference in tests/reference/) draw identical noise, and any step of
 * any chain can be reproduced alone.  The layout (a project decision, MEXD.md being silent):
 * - key = (seed & 0xffffffff, seed >> 32);
 * - counter = (t, s, b, 0x6d657864 "mexd"): t the sampler step index (the start noise uses index
 *   T for the ancestral sampler and K for DDIM; the noise added on the step from index t uses t),
 *   s the chain, b the block of four classes (classes 4b … 4b+3);
 * - the four 32-bit outputs x_i → uniforms u_i = ((x_i >> 8) + 0.5)·2^-24 in (0,1), in double;
 * - Box–Muller in double: z0 = √(−2 ln u0)·cos(2π u1), z1 = √(−2 ln u0)·sin(2π u1), z2 and z3 the
 *   same from u2, u3; class 4b+j takes z_j, rounded to float. */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define MEXD_PHILOX_TAG 0x6d657864u

/* Philox4x32 with 10 rounds: out = philox(counter, key). */
void mexd_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* The four normals of counter (t, s, b, MEXD_PHILOX_TAG) under `seed`. */
void mexd_philox_normal4(uint64_t seed, uint32_t t, uint32_t s, uint32_t b, float out[4]);

/* Noise for `n_chains` chains × `n_classes` classes at step index t: out[s·C + c]. */
void mexd_philox_noise(uint64_t seed, uint32_t t, uint32_t n_chains, uint32_t n_classes,
                       float *out);

G_END_DECLS
