/* test-wsi.c: the slide-reading library (lib/wsi).
 *
 * /wsi/cv/ *: each OpenCV operation CLAM's segmentation uses against OpenCV's own results
 * (tests/fixtures/wsi/cv.json, made by tests/reference/gen_wsi_cv.py with Debian's OpenCV 4.6).
 * /wsi/segment/ *: the whole segmentation on drawn images (areas, holes, presets, errors).
 * /wsi/slide/ *: with MEXD_TEST_SLIDE set (tests/wsi-*.sh pass a generated slide): geometry, the
 * threaded reader against single reads, errors; MEXD_TEST_BAD_SLIDES: a folder of broken files. */
#include "fixture-dir.h"
#include "mexd.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static JsonArray *cases;

static guchar *b64(JsonObject *o, const char *key, gsize *len)
{
  return g_base64_decode(json_object_get_string_member(o, key), len);
}

static void test_saturation(void)
{
  int checked = 0;
  for (guint i = 0; i < json_array_get_length(cases); i++) {
    JsonObject *c = json_array_get_object_element(cases, i);
    if (strcmp(json_object_get_string_member(c, "kind"), "saturation"))
      continue;
    gsize n;
    g_autofree guchar *want = b64(c, "s", &n);
    g_assert_cmpuint(n, ==, 256 * 256);
    g_autofree uint8_t *rgba = g_malloc(256 * 256 * 4), *rgb = g_malloc(256 * 256 * 3);
    for (int y = 0; y < 256; y++)
      for (int x = 0; x < 256; x++) {
        uint8_t px[4] = {(uint8_t)x, (uint8_t)y, (uint8_t)MIN(x, y), 255};
        memcpy(rgba + 4 * (y * 256 + x), px, 4);
        memcpy(rgb + 3 * (y * 256 + x), px, 3);
      }
    g_autofree uint8_t *s3 = g_malloc(256 * 256), *s4 = g_malloc(256 * 256);
    mexd_cv_saturation(rgb, 256, 256, 256 * 3, 3, s3);
    mexd_cv_saturation(rgba, 256, 256, 256 * 4, 4, s4);
    for (int k = 0; k < 256 * 256; k++) {
      if (s3[k] != want[k] || s4[k] != want[k])
        g_error("saturation of (%d, %d, %d): ours %d / %d, OpenCV %d", k % 256, k / 256,
                MIN(k % 256, k / 256), s3[k], s4[k], want[k]);
    }
    checked++;
  }
  g_assert_cmpint(checked, ==, 1);
}

static void test_median_otsu_close(void)
{
  int counts[3] = {0};
  for (guint i = 0; i < json_array_get_length(cases); i++) {
    JsonObject *c = json_array_get_object_element(cases, i);
    const char *kind = json_object_get_string_member(c, "kind");
    if (strcmp(kind, "median") && strcmp(kind, "otsu") && strcmp(kind, "close"))
      continue;
    int w = (int)json_object_get_int_member(c, "w"), h = (int)json_object_get_int_member(c, "h");
    gsize n;
    g_autofree guchar *src = b64(c, "src", &n);
    g_assert_cmpuint(n, ==, (gsize)w * h);
    if (!strcmp(kind, "otsu")) {
      g_assert_cmpint(mexd_cv_otsu(src, n), ==, json_object_get_int_member(c, "t"));
      counts[1]++;
      continue;
    }
    int k = (int)json_object_get_int_member(c, "k");
    gsize nd;
    g_autofree guchar *want = b64(c, "dst", &nd);
    g_autofree uint8_t *got = g_malloc(n);
    if (!strcmp(kind, "median")) {
      mexd_cv_median(src, w, h, k, got);
      counts[0]++;
    } else {
      memcpy(got, src, n);
      mexd_cv_close(got, w, h, k);
      counts[2]++;
    }
    for (gsize p = 0; p < n; p++)
      if (got[p] != want[p])
        g_error("%s k=%d %dx%d: pixel (%d, %d) ours %d, OpenCV %d", kind, k, w, h,
                (int)(p % w), (int)(p / w), got[p], want[p]);
  }
  g_assert_cmpint(counts[0], >=, 5);
  g_assert_cmpint(counts[1], >=, 5);
  g_assert_cmpint(counts[2], >=, 4);
}

static void test_contours(void)
{
  int checked = 0, tests = 0;
  for (guint i = 0; i < json_array_get_length(cases); i++) {
    JsonObject *c = json_array_get_object_element(cases, i);
    if (strcmp(json_object_get_string_member(c, "kind"), "contours"))
      continue;
    int w = (int)json_object_get_int_member(c, "w"), h = (int)json_object_get_int_member(c, "h");
    gsize n;
    g_autofree guchar *src = b64(c, "src", &n);
    MexdRing *rings;
    int *parent;
    int nr = mexd_cv_find_contours(src, w, h, &rings, &parent);
    JsonArray *cont = json_object_get_array_member(c, "contours");
    JsonArray *par = json_object_get_array_member(c, "parent");
    JsonArray *area = json_object_get_array_member(c, "area");
    JsonArray *rect = json_object_get_array_member(c, "rect");
    if (nr != (int)json_array_get_length(cont))
      g_error("case %u (%dx%d): %d contours, OpenCV %u", i, w, h, nr, json_array_get_length(cont));
    for (int k = 0; k < nr; k++) {
      JsonArray *pts = json_array_get_array_element(cont, k);
      int np = (int)json_array_get_length(pts) / 2;
      if (np != rings[k].n)
        g_error("case %u contour %d: %d points, OpenCV %d", i, k, rings[k].n, np);
      for (int p = 0; p < np; p++) {
        int x = (int)json_array_get_int_element(pts, 2 * p),
            y = (int)json_array_get_int_element(pts, 2 * p + 1);
        if (rings[k].pts[p].x != x || rings[k].pts[p].y != y)
          g_error("case %u contour %d point %d: (%d, %d), OpenCV (%d, %d)", i, k, p,
                  rings[k].pts[p].x, rings[k].pts[p].y, x, y);
      }
      g_assert_cmpint(parent[k], ==, json_array_get_int_element(par, k));
      g_assert_cmpfloat(mexd_cv_contour_area(&rings[k]), ==,
                        json_array_get_double_element(area, k));
      int bx, by, bw, bh;
      mexd_cv_bounding_rect(&rings[k], &bx, &by, &bw, &bh);
      JsonArray *r = json_array_get_array_element(rect, k);
      g_assert_cmpint(bx, ==, json_array_get_int_element(r, 0));
      g_assert_cmpint(by, ==, json_array_get_int_element(r, 1));
      g_assert_cmpint(bw, ==, json_array_get_int_element(r, 2));
      g_assert_cmpint(bh, ==, json_array_get_int_element(r, 3));
    }
    JsonArray *t = json_object_get_array_member(c, "tests");
    for (guint k = 0; k < json_array_get_length(t); k++) {
      JsonArray *e = json_array_get_array_element(t, k);
      int ci = (int)json_array_get_int_element(e, 0);
      double px = json_array_get_double_element(e, 1), py = json_array_get_double_element(e, 2);
      int want = (int)json_array_get_int_element(e, 3);
      int got = mexd_cv_point_polygon_test(&rings[ci], px, py);
      if (got != want)
        g_error("case %u contour %d: pointPolygonTest(%g, %g) ours %d, OpenCV %d", i, ci, px, py,
                got, want);
      tests++;
    }
    mexd_rings_free(rings, nr);
    g_free(parent);
    checked++;
  }
  g_assert_cmpint(checked, >=, 15);
  g_test_message("%d contour images, %d point tests", checked, tests);
}

/* A drawn "slide" at the segmentation level: background 242, a saturated square 40×30 with a
 * 10×10 hole, a saturated speck too small to keep. */
static uint8_t *drawn(int w, int h)
{
  uint8_t *img = g_malloc((size_t)w * h * 3);
  memset(img, 242, (size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean obj = (x >= 10 && x < 50 && y >= 10 && y < 40) && !(x >= 25 && x < 35 && y >= 20 && y < 30);
      obj = obj || (x >= 70 && x < 72 && y >= 5 && y < 7);
      if (obj) {
        uint8_t *p = img + 3 * ((size_t)y * w + x);
        p[0] = 200;
        p[1] = 120;
        p[2] = 160;
      }
    }
  return img;
}

static void test_segment(void)
{
  const int w = 80, h = 60;
  g_autofree uint8_t *img = drawn(w, h);
  /* median 3 and no closing keep the drawing's shapes (less their corners); at downsample 32 a
   * reference patch is int(512² / 32²) = 256 pixels.  The square's contour encloses about
   * 39 × 29 pixels, its hole's about 11 × 11, so the net area is about 1,010. */
  MexdTissueParams p = {.sthresh = 20, .sthresh_up = 255, .mthresh = 3, .close = 0,
                        .a_t = 3, .a_h = 0.25, .max_n_holes = 8, .ref_patch_size = 512};
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTissue) t = mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &p, &error);
  g_assert_no_error(error);
  g_assert_cmpint(t->n, ==, 1); /* the speck is gone (median), the square kept (1,010 > 768) */
  g_assert_cmpint(t->n_holes[0], ==, 1); /* its hole (~117 > 64) too */
  int bx, by, bw, bh;
  mexd_cv_bounding_rect(&t->contours[0], &bx, &by, &bw, &bh);
  g_assert_cmpint(bx, ==, 10 * 32);
  g_assert_cmpint(by, ==, 10 * 32);
  g_assert_cmpint(bw, ==, 39 * 32 + 1);
  g_assert_cmpfloat(t->tissue_fraction, >, 900.0 / (w * h));
  g_assert_cmpfloat(t->tissue_fraction, <, 1100.0 / (w * h));
  /* a hole of ~117 pixels is dropped at a_h = 1 patch (256), the square at a_t = 5 (1,280) */
  p.a_h = 1;
  g_autoptr(MexdTissue) t2 = mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &p, &error);
  g_assert_cmpint(t2->n, ==, 1);
  g_assert_cmpint(t2->n_holes[0], ==, 0);
  p.max_n_holes = 0;
  p.a_h = 0;
  g_autoptr(MexdTissue) t3 = mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &p, &error);
  g_assert_cmpint(t3->n_holes[0], ==, 0);
  p.a_t = 5;
  g_autoptr(MexdTissue) t4 = mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &p, &error);
  g_assert_cmpint(t4->n, ==, 0);
  /* Otsu finds a threshold between the background's 0 and the tissue's saturation (102) */
  p.a_t = 3;
  p.use_otsu = TRUE;
  g_autoptr(MexdTissue) t5 = mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &p, &error);
  g_assert_no_error(error);
  g_assert_cmpint(t5->n, ==, 1);
  g_assert_cmpint(t5->threshold, <, 102);
  /* bad parameters and images */
  const char *bad[] = {"mthresh", "close", "sthresh"};
  for (int i = 0; i < 3; i++) {
    MexdTissueParams q;
    g_assert_true(mexd_tissue_preset("default", &q, NULL));
    if (i == 0)
      q.mthresh = 6;
    else if (i == 1)
      q.close = -1;
    else
      q.sthresh = 300;
    g_autoptr(GError) e = NULL;
    g_assert_null(mexd_tissue_segment(img, w, h, (size_t)w * 3, 3, 32, 32, &q, &e));
    g_assert_error(e, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT);
    g_test_message("%s: %s", bad[i], e->message);
  }
  g_autoptr(GError) e2 = NULL;
  g_assert_false(mexd_tissue_preset("tcgaa", &p, &e2));
  g_assert_nonnull(strstr(e2->message, "bwh_biopsy"));
}

/* The tile resize (mexd_image_resize_u8) is mexd_image_prep's filter on bytes: the same as the
 * cpu op (checked against torchvision in test-backbone) with mean 0, std 1/255, rounded. */
static void test_resize(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  g_assert_no_error(error);
  const int sizes[][4] = {{384, 384, 256, 256}, {100, 60, 37, 80}, {256, 256, 256, 256}};
  for (int c = 0; c < 3; c++) {
    int w = sizes[c][0], h = sizes[c][1], ow = sizes[c][2], oh = sizes[c][3];
    g_autofree uint8_t *src = g_malloc((size_t)w * h * 3), *dst = g_malloc((size_t)ow * oh * 3);
    for (int i = 0; i < w * h * 3; i++)
      src[i] = (uint8_t)(((unsigned)i * 7919u + (unsigned)(i / (3 * w)) * 31u) % 256u);
    mexd_image_resize_u8(src, w, h, 3, dst, ow, oh);
    g_autoptr(MexdTensor) px = mexd_image_pixels_new(be, src, (int64_t)w * h * 3, &error);
    g_autoptr(MexdTensor) y =
        mexd_tensor_new(be, MEXD_DTYPE_F32, 4, (int64_t[]){1, 3, oh, ow}, &error);
    const float mean[3] = {0, 0, 0}, sd[3] = {1 / 255.0f, 1 / 255.0f, 1 / 255.0f};
    g_assert_true(mexd_image_prep(y, px, h, w, mean, sd, &error));
    g_autofree float *ref = g_new(float, (size_t)3 * oh * ow);
    g_assert_true(mexd_tensor_read_f32(y, ref, (int64_t)3 * oh * ow, &error));
    for (int ch = 0; ch < 3; ch++)
      for (int i = 0; i < oh * ow; i++) {
        float r = ref[(size_t)ch * oh * ow + i];
        int got = dst[(size_t)i * 3 + ch];
        if (fabsf((float)got - r) > 0.5f + 1e-3f)
          g_error("resize %dx%d -> %dx%d: pixel %d channel %d is %d, the op gives %g", w, h, ow,
                  oh, i, ch, got, r);
      }
  }
}

/* ---- with a slide ---- */

static void test_slide_reader(void)
{
  const char *path = g_getenv("MEXD_TEST_SLIDE");
  if (!path) {
    g_test_skip("MEXD_TEST_SLIDE is not set (tests/wsi-clam-check.sh sets it)");
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdSlide) s = mexd_slide_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpint(mexd_slide_level_count(s), >=, 2);
  g_assert_cmpfloat(mexd_slide_mpp_x(s), >, 0);
  MexdTissueParams p;
  g_assert_true(mexd_tissue_preset("tcga", &p, NULL));
  g_autoptr(MexdTissue) t = mexd_slide_tissue(s, -1, &p, &error);
  g_assert_no_error(error);
  g_assert_cmpint(t->n, >, 0);
  MexdGridSpec spec;
  g_assert_true(mexd_grid_spec_level(s, 0, 224, 224, &spec, &error));
  g_autofree int32_t *coords = NULL;
  int64_t n = mexd_tile_grid(s, t, &spec, &coords);
  g_assert_cmpint(n, >, 8);
  n = MIN(n, 48);
  /* the threaded reader delivers, in order, what single reads give */
  int threads[] = {1, 3};
  for (int ti = 0; ti < 2; ti++) {
    g_autoptr(MexdTileReader) r =
        mexd_tile_reader_new(s, &spec, coords, n, threads[ti], ti ? 2 : 0, &error);
    g_assert_no_error(error);
    const uint8_t *rgb;
    int64_t idx, count = 0;
    g_autofree uint8_t *want = g_malloc(224 * 224 * 3);
    while (mexd_tile_reader_next(r, &rgb, &idx, &error)) {
      g_assert_cmpint(idx, ==, count);
      g_assert_true(mexd_slide_read_rgb(s, coords[2 * idx], coords[2 * idx + 1], 0, 224, 224,
                                        want, NULL, &error));
      g_assert_cmpmem(rgb, 224 * 224 * 3, want, 224 * 224 * 3);
      count++;
    }
    g_assert_no_error(error);
    g_assert_cmpint(count, ==, n);
  }
  /* a reader given up early stops its threads */
  {
    g_autoptr(MexdTileReader) r = mexd_tile_reader_new(s, &spec, coords, n, 4, 0, &error);
    const uint8_t *rgb;
    g_assert_true(mexd_tile_reader_next(r, &rgb, NULL, &error));
  }
  /* a resolution grid: half the slide's resolution reads level 1 (downsample 2) unresized */
  double mpp = mexd_slide_mpp_x(s);
  g_assert_true(mexd_grid_spec_resolution(s, 2 * mpp, 0, 256, 256, &spec, &error));
  g_assert_cmpint(spec.level, ==, 1);
  g_assert_cmpint(spec.read_size, ==, 256);
  g_assert_cmpint(spec.ref_w, ==, 512);
  /* 1.5× the slide's mpp reads level 0 and resizes 384 → 256 */
  g_assert_true(mexd_grid_spec_resolution(s, 1.5 * mpp, 0, 256, 256, &spec, &error));
  g_assert_cmpint(spec.level, ==, 0);
  g_assert_cmpint(spec.read_size, ==, 384);
  {
    g_autoptr(MexdTileReader) r = mexd_tile_reader_new(s, &spec, coords, 4, 2, 0, &error);
    const uint8_t *rgb;
    int64_t k = 0;
    while (mexd_tile_reader_next(r, &rgb, NULL, &error))
      k++;
    g_assert_no_error(error);
    g_assert_cmpint(k, ==, 4);
  }
  /* finer than the slide: refused */
  g_assert_false(mexd_grid_spec_resolution(s, mpp / 2, 0, 256, 256, &spec, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED);
  g_clear_error(&error);
  /* outside the slide: white */
  g_autofree uint8_t *px = g_malloc(16 * 16 * 3);
  int64_t W, H;
  mexd_slide_level_size(s, 0, &W, &H);
  g_assert_true(mexd_slide_read_rgb(s, W + 100, H + 100, 0, 16, 16, px, NULL, &error));
  for (int i = 0; i < 16 * 16 * 3; i++)
    g_assert_cmpint(px[i], ==, 255);
}

static void test_bad_slides(void)
{
  const char *dir = g_getenv("MEXD_TEST_BAD_SLIDES");
  if (!dir) {
    g_test_skip("MEXD_TEST_BAD_SLIDES is not set (tests/wsi-bad-slides.sh sets it)");
    return;
  }
  const char *names[] = {"truncated.svs", "stripped.tif", "png-renamed.svs", "empty.svs",
                         "dir.svs", "missing.svs", "corrupt-tiles.svs"};
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *path = g_build_filename(dir, names[i], NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdSlide) s = mexd_slide_open(path, &error);
    if (s) { /* opened: reading must fail with an error, not crash */
      MexdTissueParams p;
      g_assert_true(mexd_tissue_preset("bwh_biopsy", &p, NULL));
      g_autoptr(MexdTissue) t = mexd_slide_tissue(s, -1, &p, &error);
      if (t) {
        MexdGridSpec spec;
        g_assert_true(mexd_grid_spec_level(s, 0, 256, 256, &spec, &error));
        g_autofree int32_t *coords = NULL;
        int64_t n = mexd_tile_grid(s, t, &spec, &coords);
        g_autoptr(MexdTileReader) r = mexd_tile_reader_new(s, &spec, coords, n, 2, 0, &error);
        const uint8_t *rgb;
        while (mexd_tile_reader_next(r, &rgb, NULL, &error))
          ;
      }
    }
    if (!error)
      g_error("%s: read without an error", names[i]);
    g_test_message("%s: %s", names[i], error->message);
    g_assert_nonnull(strstr(error->message, names[i]));
  }
}

/* OpenSlide 3.4.1's Aperio parser calls g_strstrip() on the missing value of a description
 * field without "=" (a GLib critical that returns NULL, harmless outside tests, where criticals
 * are fatal): those are counted, anything else stays fatal. */
static int openslide_criticals;

static gboolean fuzz_fatal_handler(const char *domain, GLogLevelFlags level, const char *msg,
                                   gpointer data)
{
  (void)level;
  (void)data;
  if (domain && strcmp(domain, "GLib") == 0 && msg &&
      (strstr(msg, "g_strchug") || strstr(msg, "g_strchomp"))) {
    openslide_criticals++;
    return FALSE;
  }
  return TRUE;
}

/* Mutation fuzzing: a small slide with bytes flipped, runs overwritten, the file cut or a block
 * repeated, most mutations near the start and the end (TIFF headers and directories), opened,
 * segmented and partly read.  Anything but a crash passes: errors are expected. */
static void test_fuzz(void)
{
  const char *path = g_getenv("MEXD_TEST_FUZZ_SLIDE");
  if (!path) {
    g_test_skip("MEXD_TEST_FUZZ_SLIDE is not set (tests/wsi-bad-slides.sh sets it)");
    return;
  }
  int iters = g_getenv("MEXD_FUZZ_ITERATIONS") ? atoi(g_getenv("MEXD_FUZZ_ITERATIONS")) : 200;
  gchar *data;
  gsize len;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  g_autofree char *tmpdir = g_dir_make_tmp("mexd-fuzz-XXXXXX", NULL);
  g_autofree char *mut = g_build_filename(tmpdir, "fuzz.svs", NULL);
  GRand *rng = g_rand_new_with_seed(20261125);
  g_test_log_set_fatal_handler(fuzz_fatal_handler, NULL);
  int opened = 0, segmented = 0, errors = 0;
  guint8 *buf = g_malloc(len * 2);
  for (int it = 0; it < iters; it++) {
    memcpy(buf, data, len);
    gsize n = len;
    int kind = g_rand_int_range(rng, 0, 10);
    int edits = g_rand_int_range(rng, 1, 9);
    for (int e = 0; e < edits; e++) {
      gsize region = MIN(len, (gsize)4096);
      gsize pos = g_rand_boolean(rng) ? (gsize)g_rand_int_range(rng, 0, (gint32)region)
                                      : len - 1 - (gsize)g_rand_int_range(rng, 0, (gint32)region);
      if (g_rand_int_range(rng, 0, 4) == 0)
        pos = (gsize)g_rand_int_range(rng, 0, (gint32)len);
      if (kind < 6) { /* flip or set bytes */
        buf[pos] = g_rand_boolean(rng) ? (guint8)(buf[pos] ^ (1u << g_rand_int_range(rng, 0, 8)))
                                       : (guint8)g_rand_int_range(rng, 0, 256);
      } else if (kind < 8) { /* an interesting value over 4 bytes */
        const guint32 vals[] = {0, 0xffffffffu, 0x7fffffffu, 0x80000000u, 1, 0xffffu, 65536};
        guint32 v = vals[g_rand_int_range(rng, 0, G_N_ELEMENTS(vals))];
        memcpy(buf + MIN(pos, len - 4), &v, 4);
      }
    }
    if (kind == 8) /* cut */
      n = (gsize)g_rand_int_range(rng, 1, (gint32)len);
    if (kind == 9) { /* a block repeated in the middle */
      gsize at = (gsize)g_rand_int_range(rng, 0, (gint32)len), bl = MIN(len - at, (gsize)512);
      memmove(buf + at + bl, buf + at, len - at);
      n = len + bl;
    }
    g_assert_true(g_file_set_contents(mut, (const char *)buf, (gssize)n, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdSlide) s = mexd_slide_open(mut, &error);
    if (!s) {
      errors++;
      g_assert_nonnull(strstr(error->message, "fuzz.svs"));
      continue;
    }
    opened++;
    MexdTissueParams p;
    g_assert_true(mexd_tissue_preset("bwh_biopsy", &p, NULL));
    g_autoptr(MexdTissue) t = mexd_slide_tissue(s, -1, &p, &error);
    if (!t) {
      errors++;
      continue;
    }
    segmented++;
    MexdGridSpec spec;
    if (!mexd_grid_spec_level(s, 0, 128, 128, &spec, &error)) {
      errors++;
      continue;
    }
    g_autofree int32_t *coords = NULL;
    int64_t nt = MIN(mexd_tile_grid(s, t, &spec, &coords), 6);
    g_autoptr(MexdTileReader) r = mexd_tile_reader_new(s, &spec, coords, nt, 2, 0, &error);
    const uint8_t *rgb;
    while (r && mexd_tile_reader_next(r, &rgb, NULL, &error))
      ;
    if (error)
      errors++;
  }
  g_test_message("%d mutations: %d opened, %d segmented, %d errors (%d GLib criticals from "
                 "OpenSlide's Aperio parser)",
                 iters, opened, segmented, errors, openslide_criticals);
  g_test_log_set_fatal_handler(NULL, NULL);
  g_remove(mut);
  g_rmdir(tmpdir);
  g_free(buf);
  g_free(data);
  g_rand_free(rng);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_autofree char *dir = mexd_test_fixture_dir("wsi");
  if (!dir)
    g_error("tests/fixtures/wsi not found");
  g_autofree char *path = g_build_filename(dir, "cv.json", NULL);
  g_autoptr(JsonParser) jp = json_parser_new();
  g_autoptr(GError) error = NULL;
  if (!json_parser_load_from_file(jp, path, &error))
    g_error("%s: %s", path, error->message);
  cases = json_object_get_array_member(json_node_get_object(json_parser_get_root(jp)), "cases");
  g_test_add_func("/wsi/cv/saturation", test_saturation);
  g_test_add_func("/wsi/cv/median-otsu-close", test_median_otsu_close);
  g_test_add_func("/wsi/cv/contours", test_contours);
  g_test_add_func("/wsi/segment/drawn", test_segment);
  g_test_add_func("/wsi/resize", test_resize);
  g_test_add_func("/wsi/slide/reader", test_slide_reader);
  g_test_add_func("/wsi/slide/bad", test_bad_slides);
  g_test_add_func("/wsi/slide/fuzz", test_fuzz);
  return g_test_run();
}
