/* op-vision.c: mexd_maxpool2d against a naive reference written here (cpu) and against cpu
 * (others), random shapes, kernels, strides and paddings, with NaNs and -inf in the input; and
 * mexd_image_prep on every backend against cpu (the cpu path is checked against torchvision's
 * own resize by tests/test-backbone.c). */
#include "harness.h"

#include <math.h>
#include <string.h>

static void ref_maxpool(const float *x, int64_t planes, int64_t H, int64_t W, int k, int s, int p,
                        int64_t OH, int64_t OW, double *y)
{
  for (int64_t pl = 0; pl < planes; pl++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        double m = -INFINITY;
        gboolean nan = FALSE;
        for (int64_t a = i * s - p; a < i * s - p + k; a++)
          for (int64_t b = j * s - p; b < j * s - p + k; b++)
            if (a >= 0 && a < H && b >= 0 && b < W) {
              double v = x[(pl * H + a) * W + b];
              nan = nan || isnan(v);
              m = v > m ? v : m;
            }
        y[(pl * OH + i) * OW + j] = nan ? NAN : m;
      }
}

static float *run_maxpool(MexdBackend *be, MexdDType dt, const int64_t *xs, const float *x, int k,
                          int s, int p, const int64_t *ys)
{
  g_autoptr(MexdTensor) tx = harness_tensor(be, dt, 4, xs, x);
  g_autoptr(MexdTensor) ty = mexd_tensor_new(be, dt, 4, ys, NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(mexd_maxpool2d(ty, tx, k, s, p, &error));
  g_assert_no_error(error);
  return harness_read(ty);
}

static void test_maxpool(const HarnessCase *hc)
{
  for (int iter = 0; iter < 10; iter++) {
    int k = g_test_rand_int_range(1, 6), s = g_test_rand_int_range(1, 4);
    int p = g_test_rand_int_range(0, k / 2 + 1);
    int64_t xs[4] = {g_test_rand_int_range(1, 4), g_test_rand_int_range(1, 9),
                     g_test_rand_int_range(k, 70), g_test_rand_int_range(k, 70)};
    if (iter == 0) { /* ResNet's stem pooling on an odd size */
      k = 3, s = 2, p = 1;
      xs[2] = 57, xs[3] = 31;
    }
    int64_t ys[4] = {xs[0], xs[1], (xs[2] + 2 * p - k) / s + 1, (xs[3] + 2 * p - k) / s + 1};
    int64_t nx = harness_numel(4, xs), ny = harness_numel(4, ys);
    g_autofree float *x = harness_random(nx, -3, 3, hc->dtype);
    for (int i = 0; i < 3; i++) {
      x[g_test_rand_int_range(0, (int)nx)] = NAN;
      x[g_test_rand_int_range(0, (int)nx)] = -INFINITY;
    }
    g_autofree float *out = run_maxpool(hc->be, hc->dtype, xs, x, k, s, p, ys);
    g_autofree char *what = g_strdup_printf("maxpool %s x [%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                                            ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "] k %d s %d p %d",
                                            hc->spec, xs[0], xs[1], xs[2], xs[3], k, s, p);
    g_autofree double *ref = g_new(double, ny);
    ref_maxpool(x, xs[0] * xs[1], xs[2], xs[3], k, s, p, ys[2], ys[3], ref);
    /* NaN positions must agree; the rest exactly (a max copies an input; ±inf included) */
    for (int64_t i = 0; i < ny; i++) {
      if (isnan(ref[i]) != isnan(out[i]))
        g_error("%s: element %" G_GINT64_FORMAT " is %g, the reference %g", what, i, out[i], ref[i]);
      if (isinf(ref[i]) && out[i] != ref[i])
        g_error("%s: element %" G_GINT64_FORMAT " is %g, the reference %g", what, i, out[i], ref[i]);
      if (isnan(ref[i]) || isinf(ref[i]))
        out[i] = 0, ref[i] = 0;
    }
    harness_assert_close_d(what, out, ref, ny, 0);
  }
}

static void test_maxpool_errors(const HarnessCase *hc)
{
  g_autoptr(MexdTensor) x = mexd_tensor_new(hc->be, hc->dtype, 4, (int64_t[]){1, 2, 5, 5}, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new(hc->be, hc->dtype, 4, (int64_t[]){1, 2, 3, 3}, NULL);
  GError *error = NULL;
  g_assert_false(mexd_maxpool2d(y, x, 3, 2, 2, &error)); /* padding over k/2 */
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "maxpool padding 2 with k 3");
  error = NULL;
  g_assert_false(mexd_maxpool2d(y, x, 3, 1, 1, &error)); /* y should be 5×5 */
  harness_assert_error(error, -1, "maxpool output of the wrong size");
  error = NULL;
  g_assert_false(mexd_maxpool2d(y, x, 7, 1, 0, &error)); /* window larger than the image */
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "maxpool window over the image");
}

static void test_image_prep(const HarnessCase *hc)
{
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std_[3] = {0.229f, 0.224f, 0.225f};
  for (int iter = 0; iter < 6; iter++) {
    int64_t B = g_test_rand_int_range(1, 4), h = g_test_rand_int_range(1, 90),
            w = g_test_rand_int_range(1, 90), oh = g_test_rand_int_range(1, 70),
            ow = g_test_rand_int_range(1, 70);
    int64_t nb = B * h * w * 3, ny = B * 3 * oh * ow;
    g_autofree uint8_t *px = g_new(uint8_t, nb);
    for (int64_t i = 0; i < nb; i++)
      px[i] = (uint8_t)g_test_rand_int_range(0, 256);
    float *outs[2];
    MexdBackend *bes[2] = {hc->be, hc->cpu};
    for (int b = 0; b < 2; b++) {
      g_autoptr(GError) error = NULL;
      g_autoptr(MexdTensor) t = mexd_image_pixels_new(bes[b], px, nb, &error);
      g_autoptr(MexdTensor) y =
          mexd_tensor_new(bes[b], hc->dtype, 4, (int64_t[]){B, 3, oh, ow}, &error);
      g_assert_no_error(error);
      g_assert_true(mexd_image_prep(y, t, h, w, mean, std_, &error));
      g_assert_no_error(error);
      outs[b] = harness_read(y);
    }
    g_autofree char *what = g_strdup_printf("image_prep %s %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                                            "x%" G_GINT64_FORMAT " → %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT,
                                            hc->spec, B, h, w, oh, ow);
    harness_assert_close(what, outs[0], outs[1], ny, harness_thr(hc, NMSE_F32));
    g_free(outs[0]);
    g_free(outs[1]);
  }
}

void register_vision_tests(void)
{
  harness_add("maxpool/random", HARNESS_BOTH, test_maxpool);
  harness_add("maxpool/errors", HARNESS_F32, test_maxpool_errors);
  harness_add("image-prep/random", HARNESS_BOTH, test_image_prep);
}
