/* test-philox.c: Philox4x32-10 against the known-answer vectors published with Random123
 * (kat_vectors: philox4x32 10 rounds), and the normals' layout and statistics. */
#include "nn/philox.h"

#include <math.h>

static void test_kat(void)
{
  static const struct {
    uint32_t ctr[4], key[2], out[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(kat); i++) {
    uint32_t out[4];
    mexd_philox4x32_10(kat[i].ctr, kat[i].key, out);
    for (int j = 0; j < 4; j++)
      if (out[j] != kat[i].out[j])
        g_error("vector %zu word %d: got 0x%08x, want 0x%08x", i, j, out[j], kat[i].out[j]);
  }
}

static void test_normals(void)
{
  /* layout: class 4b+j of chain s at step t is word j of counter (t, s, b) */
  float z[4], noise[3 * 6];
  mexd_philox_noise(42, 7, 3, 6, noise);
  mexd_philox_normal4(42, 7, 2, 1, z);
  g_assert_cmpfloat(noise[2 * 6 + 4], ==, z[0]);
  g_assert_cmpfloat(noise[2 * 6 + 5], ==, z[1]);
  /* moments over many counters */
  double sum = 0, sq = 0;
  int n = 0;
  for (uint32_t t = 0; t < 50000; t++) {
    mexd_philox_normal4(0x123456789abcdefull, t, 0, 0, z);
    for (int j = 0; j < 4; j++, n++) {
      g_assert_true(isfinite(z[j]));
      sum += z[j];
      sq += (double)z[j] * z[j];
    }
  }
  double mean = sum / n, var = sq / n - mean * mean;
  g_assert_cmpfloat(fabs(mean), <, 0.01);
  g_assert_cmpfloat(fabs(var - 1.0), <, 0.02);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/philox/known-answers", test_kat);
  g_test_add_func("/philox/normals", test_normals);
  return g_test_run();
}
