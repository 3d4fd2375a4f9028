/* heatmap.c: tile scores as a CLAM-style overlay, and over a thumbnail (heatmap.h). */
#include "pipeline/heatmap.h"

#include "core/error.h"
#include "io/png.h"
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIDE 65535
#define MAX_BYTES ((int64_t)1 << 30)

int mexd_heatmap_height(int64_t slide_w, int64_t slide_h, int width)
{
  const double scale = (double)width / (double)MAX(slide_w, (int64_t)1);
  return (int)CLAMP(ceil((double)slide_h * scale), 1, MAX_SIDE);
}

/* A blue → cyan → yellow → red map of v in [0, 1]. */
static void colour(double v, uint8_t rgb[3])
{
  double r = CLAMP(1.5 - fabs(4 * v - 3), 0, 1), g = CLAMP(1.5 - fabs(4 * v - 2), 0, 1),
         b = CLAMP(1.5 - fabs(4 * v - 1), 0, 1);
  rgb[0] = (uint8_t)lround(255 * r);
  rgb[1] = (uint8_t)lround(255 * g);
  rgb[2] = (uint8_t)lround(255 * b);
}

static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

uint8_t *mexd_heatmap_render(const int32_t *xy, const float *score, int64_t n,
                             int64_t tile_extent, int64_t slide_w, int64_t slide_h, int width,
                             double alpha, int *height_out, GError **error)
{
  if (width < 1 || width > MAX_SIDE)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "heatmap width %d outside 1..%d", width, MAX_SIDE);
  if (n < 0 || (n > 0 && (!xy || !score)))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "heatmap: no tiles given");
  const int64_t ext = MAX(tile_extent, (int64_t)1);
  int64_t sw = slide_w, sh = slide_h;
  if (sw <= 0 || sh <= 0) /* without the slide's size: the tiles' extent */
    for (int64_t i = 0; i < n; i++) {
      sw = MAX(sw, (int64_t)xy[2 * i] + ext);
      sh = MAX(sh, (int64_t)xy[2 * i + 1] + ext);
    }
  const int W = width, H = mexd_heatmap_height(sw, sh, width);
  if ((int64_t)W * H * 4 > MAX_BYTES)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "a %d × %d heatmap is larger than the 1 GiB allowed", W, H);
  const double scale = (double)W / (double)MAX(sw, (int64_t)1);
  uint8_t *img = g_try_malloc0((size_t)W * H * 4);
  float *sorted = g_try_new(float, MAX(n, (int64_t)1));
  if (!img || !sorted) {
    g_free(img);
    g_free(sorted);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "no memory for a %d × %d heatmap", W, H);
  }
  if (n > 0)
    memcpy(sorted, score, sizeof(float) * (size_t)n);
  qsort(sorted, (size_t)n, sizeof(float), cmp_float);
  const uint8_t a = (uint8_t)lround(255 * CLAMP(alpha, 0.0, 1.0));
  for (int64_t i = 0; i < n; i++) {
    if (xy[2 * i] < 0)
      continue;
    int64_t lo = 0, hi = n; /* the count of scores <= score[i]: its percentile */
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (sorted[mid] <= score[i])
        lo = mid + 1;
      else
        hi = mid;
    }
    uint8_t rgb[3];
    colour((double)lo / (double)n, rgb);
    int x0 = (int)floor(xy[2 * i] * scale), y0 = (int)floor(xy[2 * i + 1] * scale);
    int x1 = (int)ceil((xy[2 * i] + ext) * scale), y1 = (int)ceil((xy[2 * i + 1] + ext) * scale);
    for (int y = MAX(y0, 0); y < MIN(y1, H); y++)
      for (int x = MAX(x0, 0); x < MIN(x1, W); x++) {
        uint8_t *p = img + ((size_t)y * W + x) * 4;
        p[0] = rgb[0];
        p[1] = rgb[1];
        p[2] = rgb[2];
        p[3] = a;
      }
  }
  g_free(sorted);
  *height_out = H;
  return img;
}

uint8_t *mexd_heatmap_over_thumbnail(MexdSlide *s, const uint8_t *rgba, int w, int h,
                                     GError **error)
{
  if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE || !rgba)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "heatmap: no %d × %d overlay", w, h);
  int64_t W0, H0;
  mexd_slide_level_size(s, 0, &W0, &H0);
  int level = mexd_slide_best_level(s, (double)W0 / w);
  int64_t lw, lh;
  mexd_slide_level_size(s, level, &lw, &lh);
  if (lw > 16384 || lh > 16384 || lw * lh > ((int64_t)1 << 26))
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: no level small enough for a thumbnail (%" G_GINT64_FORMAT
                          " × %" G_GINT64_FORMAT " at level %d)",
                          mexd_slide_path(s), lw, lh, level);
  g_autofree uint8_t *lv = g_try_malloc((size_t)lw * lh * 3);
  g_autofree uint32_t *scratch = g_try_new(uint32_t, (size_t)lw * lh);
  uint8_t *thumb = g_try_malloc((size_t)w * h * 3);
  if (!lv || !scratch || !thumb) {
    g_free(thumb);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "%s: no memory for a thumbnail",
                          mexd_slide_path(s));
  }
  if (!mexd_slide_read_rgb(s, 0, 0, level, (int)lw, (int)lh, lv, scratch, error)) {
    g_free(thumb);
    return NULL;
  }
  mexd_image_resize_u8(lv, (int)lw, (int)lh, 3, thumb, w, h);
  for (int64_t i = 0; i < (int64_t)w * h; i++) {
    double a = rgba[i * 4 + 3] / 255.0;
    for (int c = 0; c < 3; c++)
      thumb[i * 3 + c] = (uint8_t)lround((1 - a) * thumb[i * 3 + c] + a * rgba[i * 4 + c]);
  }
  return thumb;
}

gboolean mexd_heatmap_write_png(const char *path, const uint8_t *rgba, int w, int h,
                                GError **error)
{
  if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE || !rgba)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "heatmap: no %d × %d frame", w, h);
  g_autofree uint8_t *rgb = g_try_malloc((size_t)w * h * 3);
  if (!rgb)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "no memory for a %d × %d heatmap", w, h);
  for (size_t i = 0; i < (size_t)w * h; i++)
    memcpy(rgb + i * 3, rgba + i * 4, 3);
  return mexd_png_write(path, rgb, w, h, 3, error);
}
