/* vision.c: the image ops of the backbones (ops.h): max pooling and tile preprocessing.
 *
 * mexd_maxpool2d: PyTorch's MaxPool2d (dilation 1, floor mode): the window is clipped to the
 * image (padding never wins) and NaN propagates.
 * mexd_image_prep: 8-bit RGB tiles → float planes, the preprocessing of torchvision's
 * `normalize(resize(to_tensor(tile), size, bilinear, antialias=True), mean, std)`: bytes / 255,
 * an antialiased bilinear resize (PyTorch's separable triangle filter, its support widened by the
 * scale when shrinking; the taps and weights are computed here on the host exactly as
 * aten/src/ATen/native/cpu/UpSampleKernel.cpp does, in float), then (v − mean) / std.  The resize
 * runs on the float values (no rounding back to 8 bits between the steps).
 * cpu: the same sums in f32 (per output row: columns first, then rows, as PyTorch's two passes).
 * vulkan: shaders/maxpool.comp and shaders/image_prep.comp, one invocation per output element. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>
#include <string.h>

#define VISION_GROUP 256 /* local_size_x of both shaders */

/* ---- max pooling ---- */

static void maxpool_cpu(MexdTensor *y, MexdTensor *x, int k, int s, int p)
{
  const int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t OH = y->shape[2], OW = y->shape[3];
  gboolean ox, oy;
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *Y = mexd_cpu_f32_out(y, FALSE, &oy);
  for (int64_t pl = 0; pl < planes; pl++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        float m = -INFINITY;
        for (int64_t dy = 0; dy < k; dy++) {
          int64_t yy = i * s - p + dy;
          if (yy < 0 || yy >= H)
            continue;
          for (int64_t dx = 0; dx < k; dx++) {
            int64_t xx = j * s - p + dx;
            if (xx < 0 || xx >= W)
              continue;
            float v = X[(pl * H + yy) * W + xx];
            if (v > m || isnan(v))
              m = v;
          }
        }
        Y[(pl * OH + i) * OW + j] = m;
      }
  mexd_cpu_f32_done(y, Y, oy, TRUE);
  if (ox)
    g_free((float *)X);
}

MEXD_VK_PUSH_STRUCT(PoolPush, MEXD_PUSH_MAXPOOL);

gboolean mexd_maxpool2d(MexdTensor *y, MexdTensor *x, int k, int stride, int pad, GError **error)
{
  const char *op = "maxpool2d";
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error))
    return FALSE;
  if (x->ndim != 4)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: x must be [N,C,H,W]", op);
  if (k < 1 || stride < 1 || pad < 0 || pad > k / 2)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: kernel %d, stride %d, padding %d (PyTorch needs k ≥ 1, s ≥ 1, "
                     "0 ≤ p ≤ k/2)",
                     op, k, stride, pad);
  const int64_t H = x->shape[2], W = x->shape[3];
  const int64_t OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
  if (H + 2 * pad < k || W + 2 * pad < k)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: a %" G_GINT64_FORMAT "×%" G_GINT64_FORMAT " image is smaller than the "
                     "%d×%d window",
                     op, H, W, k, k);
  if (!mexd_op_check_shape(op, "y", y, 4, (int64_t[]){x->shape[0], x->shape[1], OH, OW}, error))
    return FALSE;
  if (!mexd_op_check_no_overlap(op, "y", y, "x", x, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    maxpool_cpu(y, x, k, stride, pad);
    return TRUE;
  }
  int64_t total = mexd_tensor_numel(y);
  if (!mexd_op_check_u32(op, "elements of x", mexd_tensor_numel(x), error))
    return FALSE;
  PoolPush pc = {.total = (uint32_t)total,
                 .H = (uint32_t)H,
                 .W = (uint32_t)W,
                 .OH = (uint32_t)OH,
                 .OW = (uint32_t)OW,
                 .k = (uint32_t)k,
                 .stride = (uint32_t)stride,
                 .pad = pad};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_MAXPOOL,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)((total + VISION_GROUP - 1) / VISION_GROUP), d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

/* ---- tile preprocessing ---- */

/* PyTorch's antialiased bilinear taps along one axis: for each output index, the first input
 * index and the count (taps[2o], taps[2o+1]) and `K` normalised weights (w[o·K …]). */
static void aa_taps(int64_t in, int64_t out, int K, int32_t *taps, float *w)
{
  const float scale = (float)in / (float)out;
  const float support = scale >= 1.0f ? scale : 1.0f;
  const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
  for (int64_t o = 0; o < out; o++) {
    const float center = scale * ((float)o + 0.5f);
    int64_t lo = (int64_t)(center - support + 0.5f);
    if (lo < 0)
      lo = 0;
    int64_t hi = (int64_t)(center + support + 0.5f);
    if (hi > in)
      hi = in;
    int64_t n = MIN(hi - lo, K);
    float total = 0.0f;
    float *wo = w + o * K;
    memset(wo, 0, sizeof(float) * K);
    for (int64_t j = 0; j < n; j++) {
      float t = fabsf(((float)(j + lo) - center + 0.5f) * invscale);
      wo[j] = t < 1.0f ? 1.0f - t : 0.0f;
      total += wo[j];
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < n; j++)
        wo[j] /= total;
    taps[2 * o] = (int32_t)lo;
    taps[2 * o + 1] = (int32_t)n;
  }
}

static int aa_width(int64_t in, int64_t out)
{
  const float scale = (float)in / (float)out;
  const float support = scale >= 1.0f ? scale : 1.0f;
  return (int)ceilf(support) * 2 + 1;
}

/* An antialiased bilinear resize of 8-bit interleaved pixels with PyTorch's taps (the filter of
 * mexd_image_prep), rounded to the nearest byte: separable, rows first. */
void mexd_image_resize_u8(const uint8_t *src, int w, int h, int channels, uint8_t *dst, int ow,
                          int oh)
{
  const int KY = aa_width(h, oh), KX = aa_width(w, ow);
  g_autofree int32_t *ty = g_new(int32_t, 2 * oh), *tx = g_new(int32_t, 2 * ow);
  g_autofree float *wy = g_new(float, (size_t)oh * KY), *wx = g_new(float, (size_t)ow * KX);
  aa_taps(h, oh, KY, ty, wy);
  aa_taps(w, ow, KX, tx, wx);
  g_autofree float *mid = g_new(float, (size_t)h * ow * channels);
  for (int y = 0; y < h; y++)
    for (int o = 0; o < ow; o++)
      for (int c = 0; c < channels; c++) {
        float acc = 0.0f;
        for (int j = 0; j < tx[2 * o + 1]; j++)
          acc += wx[(size_t)o * KX + j] * src[((size_t)y * w + tx[2 * o] + j) * channels + c];
        mid[((size_t)y * ow + o) * channels + c] = acc;
      }
  for (int o = 0; o < oh; o++)
    for (int x = 0; x < ow; x++)
      for (int c = 0; c < channels; c++) {
        float acc = 0.0f;
        for (int j = 0; j < ty[2 * o + 1]; j++)
          acc += wy[(size_t)o * KY + j] * mid[((size_t)(ty[2 * o] + j) * ow + x) * channels + c];
        long v = lroundf(acc);
        dst[((size_t)o * ow + x) * channels + c] = (uint8_t)CLAMP(v, 0, 255);
      }
}

static void image_prep_cpu(MexdTensor *y, const uint8_t *px, int64_t H, int64_t W,
                           const int32_t *taps, const float *wts, int KY, int KX,
                           const float mean[3], const float std_[3])
{
  const int64_t B = y->shape[0], OH = y->shape[2], OW = y->shape[3];
  const float *wy = wts, *wx = wts + OH * KY;
  const int32_t *ty = taps, *tx = taps + 2 * OH;
  gboolean oy;
  float *Y = mexd_cpu_f32_out(y, FALSE, &oy);
  for (int64_t b = 0; b < B; b++)
    for (int c = 0; c < 3; c++) {
      const float inv_std = 1.0f / std_[c];
      for (int64_t i = 0; i < OH; i++)
        for (int64_t j = 0; j < OW; j++) {
          float acc = 0.0f;
          for (int32_t r = 0; r < ty[2 * i + 1]; r++) {
            const uint8_t *row = px + ((b * H + ty[2 * i] + r) * W + tx[2 * j]) * 3 + c;
            float s = 0.0f;
            for (int32_t k = 0; k < tx[2 * j + 1]; k++)
              s += wx[j * KX + k] * (float)row[3 * k];
            acc += wy[i * KY + r] * s;
          }
          Y[((b * 3 + c) * OH + i) * OW + j] = (acc * (1.0f / 255.0f) - mean[c]) * inv_std;
        }
    }
  mexd_cpu_f32_done(y, Y, oy, TRUE);
}

MEXD_VK_PUSH_STRUCT(PrepPush, MEXD_PUSH_IMAGE_PREP);

gboolean mexd_image_prep(MexdTensor *y, MexdTensor *pixels, int64_t h, int64_t w,
                         const float mean[3], const float std_[3], GError **error)
{
  const char *op = "image_prep";
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "pixels", pixels, be, MEXD_DTYPE_I32, error))
    return FALSE;
  if (y->ndim != 4 || y->shape[1] != 3)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: y must be [B,3,H,W]", op);
  if (h < 1 || w < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: tiles of %" G_GINT64_FORMAT
                     "×%" G_GINT64_FORMAT " pixels", op, w, h);
  for (int c = 0; c < 3; c++)
    if (!(std_[c] > 0.0f) || !isfinite(mean[c]))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "%s: channel %d has mean %g and std %g (std must be positive)", op, c,
                       mean[c], std_[c]);
  const int64_t B = y->shape[0], OH = y->shape[2], OW = y->shape[3];
  const int64_t bytes = B * h * w * 3;
  if (!mexd_op_check_shape(op, "pixels", pixels, 1, (int64_t[]){(bytes + 3) / 4}, error))
    return FALSE;
  const int KY = aa_width(h, OH), KX = aa_width(w, OW);
  g_autofree int32_t *taps = g_new(int32_t, 2 * (OH + OW));
  g_autofree float *wts = g_new(float, OH * KY + OW * KX);
  aa_taps(h, OH, KY, taps, wts);
  aa_taps(w, OW, KX, taps + 2 * OH, wts + OH * KY);

  if (be->kind == MEXD_BACKEND_CPU) {
    image_prep_cpu(y, mexd_tensor_host_data(pixels), h, w, taps, wts, KY, KX, mean, std_);
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "bytes of the tiles", bytes, error) ||
      !mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  g_autoptr(MexdTensor) t_taps =
      mexd_tensor_new(be, MEXD_DTYPE_I32, 1, (int64_t[]){2 * (OH + OW)}, error);
  g_autoptr(MexdTensor) t_wts = t_taps ? mexd_tensor_new_from_f32(
                                             be, MEXD_DTYPE_F32, 1,
                                             (int64_t[]){OH * KY + OW * KX}, wts, error)
                                       : NULL;
  if (!t_wts || !mexd_tensor_write(t_taps, taps, sizeof(int32_t) * 2 * (OH + OW), error))
    return FALSE;
  PrepPush pc = {.total = (uint32_t)mexd_tensor_numel(y),
                 .H = (uint32_t)h,
                 .W = (uint32_t)w,
                 .OH = (uint32_t)OH,
                 .OW = (uint32_t)OW,
                 .KY = (uint32_t)KY,
                 .KX = (uint32_t)KX};
  for (int c = 0; c < 3; c++) {
    pc.mean[c] = mean[c];
    pc.inv_std[c] = 1.0f / std_[c];
  }
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_IMAGE_PREP,
      .variant = y->dtype,
      .bind = {pixels, t_taps, t_wts, y},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (pc.total + VISION_GROUP - 1) / VISION_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

MexdTensor *mexd_image_pixels_new(MexdBackend *be, const uint8_t *rgb, int64_t n_bytes,
                                  GError **error)
{
  int64_t words = (n_bytes + 3) / 4;
  MexdTensor *t = mexd_tensor_new(be, MEXD_DTYPE_I32, 1, (int64_t[]){words}, error);
  if (!t)
    return NULL;
  g_autofree uint8_t *buf = g_malloc0(words * 4);
  memcpy(buf, rgb, n_bytes);
  if (!mexd_tensor_write(t, buf, words * 4, error)) {
    mexd_tensor_unref(t);
    return NULL;
  }
  return t;
}
