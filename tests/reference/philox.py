#!/usr/bin/python3
"""Philox4x32-10 and the sampler's normal draws, exactly as lib/nn/philox.h lays them out.

key = (seed & 0xffffffff, seed >> 32); counter = (t, s, b, 0x6d657864); the four outputs x_i give
u_i = ((x_i >> 8) + 0.5) * 2^-24 (double); Box-Muller in double:
z0 = sqrt(-2 ln u0) cos(2 pi u1), z1 = sqrt(-2 ln u0) sin(2 pi u1), z2, z3 likewise from u2, u3;
class 4b + j of chain s at step index t takes z_j of counter (t, s, b), rounded to float32.
"""
import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF
TAG = 0x6D657864


def philox4x32_10(counter, key):
    """counter: 4 ints, key: 2 ints (uint32) -> 4 ints."""
    c0, c1, c2, c3 = (int(v) & MASK for v in counter)
    k0, k1 = (int(v) & MASK for v in key)
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + W0) & MASK
            k1 = (k1 + W1) & MASK
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
    return [c0, c1, c2, c3]


def _uniform(x):
    return ((x >> 8) + 0.5) * (1.0 / 16777216.0)


def normal4(seed, t, s, b):
    """The four float32 normals of counter (t, s, b, TAG) under seed (as a list of np.float32)."""
    key = (seed & MASK, (seed >> 32) & MASK)
    x = philox4x32_10((t, s, b, TAG), key)
    out = []
    for i in (0, 2):
        r = math.sqrt(-2.0 * math.log(_uniform(x[i])))
        a = 2.0 * math.pi * _uniform(x[i + 1])
        out.append(np.float32(r * math.cos(a)))
        out.append(np.float32(r * math.sin(a)))
    return out


def noise(seed, t, chains, classes):
    """[chains, classes] float32 noise of step index t."""
    out = np.zeros((chains, classes), dtype=np.float32)
    for s in range(chains):
        for b in range((classes + 3) // 4):
            z = normal4(seed, t, s, b)
            for j in range(4):
                if 4 * b + j < classes:
                    out[s, 4 * b + j] = z[j]
    return out
