/* slide.c: opening a slide with OpenSlide, its geometry and resolution, reading regions as RGB,
 * and its tissue (slide.h). */
#include "slide.h"

#include "../core/error.h"
#include "../io/files.h"
#include "wsi-private.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#ifdef MEXD_HAVE_OPENSLIDE
#include <openslide.h>
#endif

void mexd_slide_free(MexdSlide *s)
{
  if (!s)
    return;
#ifdef MEXD_HAVE_OPENSLIDE
  if (s->osr)
    openslide_close(s->osr);
#endif
  g_free(s->levels);
  g_free(s->path);
  g_free(s->fname);
  g_free(s->name);
  g_free(s->vendor);
  g_free(s);
}

#ifdef MEXD_HAVE_OPENSLIDE
/* µm per pixel from a TIFF resolution and its unit ("centimeter" / "inch"). */
static double tiff_mpp(const char *res, const char *unit)
{
  if (!res || !unit)
    return 0;
  double r = g_ascii_strtod(res, NULL);
  if (!(r > 0) || !isfinite(r))
    return 0;
  if (g_ascii_strcasecmp(unit, "centimeter") == 0)
    return 10000.0 / r;
  if (g_ascii_strcasecmp(unit, "inch") == 0)
    return 25400.0 / r;
  return 0;
}

static double prop_double(openslide_t *osr, const char *name)
{
  const char *v = openslide_get_property_value(osr, name);
  if (!v)
    return 0;
  char *end = NULL;
  double d = g_ascii_strtod(v, &end);
  return end != v && isfinite(d) && d > 0 ? d : 0;
}
#endif

#ifdef MEXD_HAVE_OPENSLIDE
/* What the first bytes of a file OpenSlide refused say it is, for the error message. */
static const char *sniff_kind(const char *path)
{
  guint8 b[8] = {0};
  FILE *f = g_fopen(path, "rb");
  size_t n = f ? fread(b, 1, sizeof b, f) : 0;
  if (f)
    fclose(f);
  if (n >= 4 && ((b[0] == 'I' && b[1] == 'I' && (b[2] == 42 || b[2] == 43) && b[3] == 0) ||
                 (b[0] == 'M' && b[1] == 'M' && b[2] == 0 && (b[3] == 42 || b[3] == 43))))
    return ": it is a TIFF file, but not one OpenSlide can use: a stripped (untiled) TIFF, or a "
           "damaged or truncated one; convert a plain TIFF with `vips tiffsave IN OUT.tif --tile "
           "--pyramid --compression jpeg`";
  if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
    return ": it is a PNG image, not a whole-slide image";
  if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
    return ": it is a JPEG image, not a whole-slide image";
  return "; Olympus .vsi, Philips iSyntax and DICOM are not supported";
}
#endif

MexdSlide *mexd_slide_open(const char *path, GError **error)
{
  if (!path)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "slide: the path is NULL");
  g_autofree char *fname = g_filename_display_name(path);
  GStatBuf st;
  if (g_stat(path, &st) != 0) {
    int e = errno;
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot open the slide: %s", fname,
                          g_strerror(e));
  }
  if (S_ISDIR(st.st_mode))
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: is a directory, not a slide file", fname);
  if (!S_ISREG(st.st_mode))
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: is not a regular file", fname);
  if (st.st_size == 0)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: is empty (0 bytes), not a slide", fname);
  if (g_access(path, R_OK) != 0) {
    int e = errno;
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read the slide: %s", fname,
                          g_strerror(e));
  }
#ifndef MEXD_HAVE_OPENSLIDE
  return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                        "%s: cannot open slides: libmexd was built without OpenSlide", fname);
#else
  const char *vendor = openslide_detect_vendor(path);
  openslide_t *osr = openslide_open(path);
  if (!osr) {
    if (vendor)
      return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                            "%s: OpenSlide recognises a \"%s\" file but cannot read this one "
                            "(for a TIFF: an untiled (stripped) TIFF, or an unsupported "
                            "compression or layout)",
                            fname, vendor);
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: not a slide format OpenSlide %s reads (its vendor detection found "
                          "nothing%s)",
                          fname, openslide_get_version(), sniff_kind(path));
  }
  const char *oerr = openslide_get_error(osr);
  if (oerr) {
    g_autofree char *msg = g_strdup(oerr);
    openslide_close(osr);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: OpenSlide cannot read this %s slide: %s",
                          fname, vendor ? vendor : "", msg);
  }
  MexdSlide *s = g_new0(MexdSlide, 1);
  s->osr = osr;
  s->path = g_strdup(path);
  s->fname = g_steal_pointer(&fname);
  g_autofree char *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  s->name = g_strdup(base);
  s->vendor = g_strdup(vendor ? vendor : "unknown");
  s->n_levels = openslide_get_level_count(osr);
  if (s->n_levels < 1) {
    const char *e = openslide_get_error(osr);
    mexd_fail(error, MEXD_ERROR_FORMAT, "%s: OpenSlide reports no levels%s%s", s->fname,
              e ? ": " : "", e ? e : "");
    mexd_slide_free(s);
    return NULL;
  }
  s->levels = g_new0(MexdLevel, s->n_levels);
  for (int l = 0; l < s->n_levels; l++) {
    openslide_get_level_dimensions(osr, l, &s->levels[l].w, &s->levels[l].h);
    s->levels[l].ds = openslide_get_level_downsample(osr, l);
    if (s->levels[l].w < 1 || s->levels[l].h < 1 || !(s->levels[l].ds > 0)) {
      const char *e = openslide_get_error(osr);
      mexd_fail(error, MEXD_ERROR_FORMAT, "%s: level %d has no valid size (%" G_GINT64_FORMAT
                " x %" G_GINT64_FORMAT ")%s%s",
                s->fname, l, s->levels[l].w, s->levels[l].h, e ? ": " : "", e ? e : "");
      mexd_slide_free(s);
      return NULL;
    }
  }
  s->mpp_x = prop_double(osr, OPENSLIDE_PROPERTY_NAME_MPP_X);
  s->mpp_y = prop_double(osr, OPENSLIDE_PROPERTY_NAME_MPP_Y);
  s->mpp_source = "openslide.mpp-x";
  if (!(s->mpp_x > 0)) {
    const char *unit = openslide_get_property_value(osr, "tiff.ResolutionUnit");
    s->mpp_x = tiff_mpp(openslide_get_property_value(osr, "tiff.XResolution"), unit);
    s->mpp_y = tiff_mpp(openslide_get_property_value(osr, "tiff.YResolution"), unit);
    s->mpp_source = s->mpp_x > 0 ? "tiff.XResolution" : "none";
  }
  if (!(s->mpp_y > 0))
    s->mpp_y = s->mpp_x;
  s->objective = prop_double(osr, OPENSLIDE_PROPERTY_NAME_OBJECTIVE_POWER);
  return s;
#endif
}

const char *mexd_slide_path(const MexdSlide *s) { return s->path; }
const char *mexd_slide_name(const MexdSlide *s) { return s->name; }
const char *mexd_slide_vendor(const MexdSlide *s) { return s->vendor; }
int mexd_slide_level_count(const MexdSlide *s) { return s->n_levels; }
double mexd_slide_mpp_x(const MexdSlide *s) { return s->mpp_x; }
double mexd_slide_mpp_y(const MexdSlide *s) { return s->mpp_y; }
const char *mexd_slide_mpp_source(const MexdSlide *s) { return s->mpp_source; }
double mexd_slide_objective(const MexdSlide *s) { return s->objective; }

char *mexd_slide_identity(const MexdSlide *s, GError **error)
{
  GStatBuf st;
  if (g_stat(s->path, &st) != 0)
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: %s", s->fname, g_strerror(errno));
  const char *qh = mexd_slide_property(s, "openslide.quickhash-1");
  if (qh && *qh)
    return g_strdup_printf("quickhash-1:%s/%" G_GINT64_FORMAT " bytes", qh, (gint64)st.st_size);
  return mexd_file_sha256(s->path, error);
}

const char *mexd_slide_property(const MexdSlide *s, const char *name)
{
#ifdef MEXD_HAVE_OPENSLIDE
  return openslide_get_property_value(s->osr, name);
#else
  (void)s;
  (void)name;
  return NULL;
#endif
}

void mexd_slide_level_size(const MexdSlide *s, int level, int64_t *w, int64_t *h)
{
  level = CLAMP(level, 0, s->n_levels - 1);
  *w = s->levels[level].w;
  *h = s->levels[level].h;
}

double mexd_slide_level_downsample(const MexdSlide *s, int level)
{
  return s->levels[CLAMP(level, 0, s->n_levels - 1)].ds;
}

void mexd_slide_level_downsample_xy(const MexdSlide *s, int level, double *dx, double *dy)
{
  level = CLAMP(level, 0, s->n_levels - 1);
  *dx = (double)s->levels[0].w / (double)s->levels[level].w;
  *dy = (double)s->levels[0].h / (double)s->levels[level].h;
}

int mexd_slide_best_level(const MexdSlide *s, double downsample)
{
#ifdef MEXD_HAVE_OPENSLIDE
  int l = openslide_get_best_level_for_downsample(s->osr, downsample);
  return l < 0 ? 0 : l;
#else
  (void)s;
  (void)downsample;
  return 0;
#endif
}

int mexd_slide_seg_level(const MexdSlide *s)
{
  return s->n_levels == 1 ? 0 : mexd_slide_best_level(s, 64);
}

/* OpenSlide's premultiplied ARGB → RGB: un-premultiplied (truncating, as openslide-python does)
 * where 0 < A < 255, white where A = 0. */
void mexd_wsi_argb_to_rgb(const uint32_t *argb, size_t n, uint8_t *rgb)
{
  for (size_t i = 0; i < n; i++) {
    uint32_t v = argb[i];
    uint32_t a = v >> 24, r = (v >> 16) & 0xff, g = (v >> 8) & 0xff, b = v & 0xff;
    if (a == 0) {
      r = g = b = 255;
    } else if (a != 255) {
      r = MIN(255u, 255u * r / a);
      g = MIN(255u, 255u * g / a);
      b = MIN(255u, 255u * b / a);
    }
    rgb[3 * i] = (uint8_t)r;
    rgb[3 * i + 1] = (uint8_t)g;
    rgb[3 * i + 2] = (uint8_t)b;
  }
}

gboolean mexd_slide_read_argb(MexdSlide *s, int64_t x, int64_t y, int level, int w, int h,
                              uint32_t *argb, GError **error)
{
  if (level < 0 || level >= s->n_levels || w < 1 || h < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: cannot read a %d x %d region at level %d (the slide has %d levels)",
                     s->fname, w, h, level, s->n_levels);
#ifndef MEXD_HAVE_OPENSLIDE
  (void)x;
  (void)y;
  (void)argb;
  return mexd_fail(error, MEXD_ERROR_UNSUPPORTED, "%s: built without OpenSlide", s->fname);
#else
  openslide_read_region(s->osr, argb, x, y, level, w, h);
  const char *e = openslide_get_error(s->osr);
  if (e)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: OpenSlide failed to read the region at (%" G_GINT64_FORMAT
                     ", %" G_GINT64_FORMAT ") level %d: %s",
                     s->fname, x, y, level, e);
  return TRUE;
#endif
}

gboolean mexd_slide_read_rgb(MexdSlide *s, int64_t x, int64_t y, int level, int w, int h,
                             uint8_t *rgb, uint32_t *scratch, GError **error)
{
  if (w < 1 || h < 1)
    return mexd_slide_read_argb(s, x, y, level, w, h, scratch, error);
  uint32_t *buf = scratch ? scratch : g_try_malloc((size_t)w * h * 4);
  if (!buf)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: no memory to read a %d x %d region",
                     s->fname, w, h);
  gboolean ok = mexd_slide_read_argb(s, x, y, level, w, h, buf, error);
  if (ok)
    mexd_wsi_argb_to_rgb(buf, (size_t)w * h, rgb);
  if (!scratch)
    g_free(buf);
  return ok;
}

MexdTissue *mexd_slide_tissue(MexdSlide *s, int level, const MexdTissueParams *params,
                              GError **error)
{
  if (level < 0)
    level = mexd_slide_seg_level(s);
  if (level >= s->n_levels)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: no level %d for segmentation (the slide has %d)", s->fname, level,
                          s->n_levels);
  if (!mexd_tissue_params_check(params, error))
    return NULL;
  int64_t w = s->levels[level].w, h = s->levels[level].h;
  if ((double)w * (double)h > 1e8)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: the segmentation level %d is %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
                          " pixels, over the 1e8 that CLAM segments; choose a coarser level (--seg-level)",
                          s->fname, level, w, h);
  uint8_t *rgb = g_try_malloc((size_t)w * h * 3);
  if (!rgb)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "%s: no memory for the segmentation level (%" G_GINT64_FORMAT
                          " x %" G_GINT64_FORMAT ")",
                          s->fname, w, h);
  /* one read of the whole level, as CLAM does (under its 1e8-pixel limit: at most 400 MB ARGB) */
  uint32_t *scratch = g_try_malloc((size_t)(w * h * 4));
  gboolean ok = scratch != NULL;
  if (!ok)
    mexd_fail(error, MEXD_ERROR_NO_MEMORY, "%s: no memory to read the segmentation level",
              s->fname);
  else
    ok = mexd_slide_read_rgb(s, 0, 0, level, (int)w, (int)h, rgb, scratch, error);
  g_free(scratch);
  MexdTissue *t = NULL;
  if (ok) {
    double dx, dy;
    mexd_slide_level_downsample_xy(s, level, &dx, &dy);
    t = mexd_tissue_segment(rgb, (int)w, (int)h, (size_t)w * 3, 3, dx, dy, params, error);
    if (t)
      t->level = level;
  }
  g_free(rgb);
  return t;
}
