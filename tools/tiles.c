/* tiles.c: `mexd tiles` (tissue and the tile grid of a slide, CLAM's patch file, GeoJSON) and
 * `mexd bench read` (tiles per second read from a slide). */
#include "mexd.h"
#include "grid-opts.h"
#include "opts.h"

#include "../lib/mexd.h"

#include <stdio.h>
#include <string.h>

void grid_opts_init(GridOpts *o)
{
  *o = (GridOpts){.level = -1, .size = 256, .step = 0, .seg_level = -1, .sthresh = -1,
                  .mthresh = -1, .close = -1, .a_t = -1, .a_h = -1, .max_holes = -1};
}

void grid_opts_clear(GridOpts *o)
{
  g_free(o->preset);
  g_free(o->contour_fn);
}

/* The numeric grid options: parsed by one callback that records which were given, so that an
 * explicit value is never mistaken for "not given"; ranges in grid-opts.h. */
typedef struct {
  const char *name;
  guint bit;
  gboolean is_double;
  size_t offset;
  double lo, hi;
  gboolean lo_open;
} GridNumber;

static const GridNumber grid_numbers[] = {
    {"--mag", GRID_MAG, TRUE, G_STRUCT_OFFSET(GridOpts, mag), 0, 1000, TRUE},
    {"--mpp", GRID_MPP, TRUE, G_STRUCT_OFFSET(GridOpts, mpp), 0, 1000, TRUE},
    {"--level", GRID_LEVEL, FALSE, G_STRUCT_OFFSET(GridOpts, level), 0, 64, FALSE},
    {"--size", GRID_SIZE, FALSE, G_STRUCT_OFFSET(GridOpts, size), 1, 16384, FALSE},
    {"--step", GRID_STEP, FALSE, G_STRUCT_OFFSET(GridOpts, step), 1, 1 << 20, FALSE},
    {"--overlap", GRID_OVERLAP, FALSE, G_STRUCT_OFFSET(GridOpts, overlap), 0, 16383, FALSE},
    {"--seg-level", GRID_SEG_LEVEL, FALSE, G_STRUCT_OFFSET(GridOpts, seg_level), 0, 64, FALSE},
    {"--sthresh", GRID_STHRESH, FALSE, G_STRUCT_OFFSET(GridOpts, sthresh), 0, 255, FALSE},
    {"--mthresh", GRID_MTHRESH, FALSE, G_STRUCT_OFFSET(GridOpts, mthresh), 3, 255, FALSE},
    {"--close", GRID_CLOSE, FALSE, G_STRUCT_OFFSET(GridOpts, close), 0, 255, FALSE},
    {"--a-t", GRID_A_T, TRUE, G_STRUCT_OFFSET(GridOpts, a_t), 0, 1e9, FALSE},
    {"--a-h", GRID_A_H, TRUE, G_STRUCT_OFFSET(GridOpts, a_h), 0, 1e9, FALSE},
    {"--max-holes", GRID_MAX_HOLES, FALSE, G_STRUCT_OFFSET(GridOpts, max_holes), 0, 100000,
     FALSE},
};

static gboolean grid_number_cb(const char *name, const char *value, gpointer data, GError **error)
{
  GridOpts *o = data;
  for (size_t k = 0; k < G_N_ELEMENTS(grid_numbers); k++) {
    const GridNumber *g = &grid_numbers[k];
    if (!g_str_equal(name, g->name))
      continue;
    if (g->is_double) {
      char *end = NULL;
      double v = g_ascii_strtod(value, &end);
      if (!*value || !end || *end) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s takes a number, not \"%s\"", name, value);
        return FALSE;
      }
      G_STRUCT_MEMBER(double, o, g->offset) = v;
    } else {
      gint64 v;
      if (!g_ascii_string_to_signed(value, 10, G_MININT, G_MAXINT, &v, NULL)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s takes an integer, not \"%s\"", name, value);
        return FALSE;
      }
      G_STRUCT_MEMBER(int, o, g->offset) = (int)v;
    }
    o->given |= g->bit;
    return TRUE;
  }
  return FALSE;
}

GOptionGroup *grid_opts_group(GridOpts *o)
{
  const GOptionFlags f = 0;
  GOptionEntry e[] = {
      {"mag", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "tiles at this magnification (20: 20×; above 0, at most 1000)", "M"},
      {"mpp", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "tiles at this resolution, µm per pixel (above 0, at most 1000)", "U"},
      {"level", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "tiles read at this level without resizing, as CLAM (default: level 0; 0..64)", "L"},
      {"size", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "tile side in pixels (256; 1..16384)", "N"},
      {"step", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "grid step in tile pixels (the tile size; 1..1048576)", "N"},
      {"overlap", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "overlap of neighbouring tiles in pixels (step = size - overlap; 0..size-1)", "N"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &o->preset,
       "CLAM's segmentation preset: default, tcga, bwh_biopsy, bwh_resection", "P"},
      {"seg-level", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "segment at this level (default: the level nearest 64× downsample; 0..64)", "L"},
      {"sthresh", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "saturation threshold (preset's; 0..255)", "T"},
      {"mthresh", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "median kernel (preset's; odd, 3..255)", "K"},
      {"close", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "closing kernel, 0: none (preset's; 0..255)", "K"},
      {"otsu", 0, 0, G_OPTION_ARG_NONE, &o->otsu, "Otsu's threshold instead of sthresh", NULL},
      {"a-t", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "minimum tissue area, reference patches (preset's; 0..1e9)", "A"},
      {"a-h", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "minimum hole area, reference patches (preset's; 0..1e9)", "A"},
      {"max-holes", 0, f, G_OPTION_ARG_CALLBACK, (gpointer)grid_number_cb,
       "holes kept per contour (preset's; 0..100000)", "N"},
      {"contour-fn", 0, 0, G_OPTION_ARG_STRING, &o->contour_fn,
       "tile test: four_pt (default), four_pt_hard, center", "F"},
      {"no-padding", 0, 0, G_OPTION_ARG_NONE, &o->no_padding,
       "no tiles running over the slide's edge", NULL},
      {NULL},
  };
  GOptionGroup *g = g_option_group_new("grid", "Tissue and tile grid (CLAM's rules):",
                                       "Show the tissue and grid options", o, NULL);
  g_option_group_add_entries(g, e);
  return g;
}

gboolean grid_opts_check(const GridOpts *o, const char *cmd)
{
  for (size_t k = 0; k < G_N_ELEMENTS(grid_numbers); k++) {
    const GridNumber *g = &grid_numbers[k];
    if (!(o->given & g->bit))
      continue;
    gboolean ok = g->is_double
                      ? mexd_opt_double(cmd, g->name, G_STRUCT_MEMBER(double, o, g->offset), g->lo,
                                        g->hi, g->lo_open)
                      : mexd_opt_int(cmd, g->name, G_STRUCT_MEMBER(int, o, g->offset),
                                     (gint64)g->lo, (gint64)g->hi);
    if (!ok)
      return FALSE;
  }
  if ((o->given & GRID_MTHRESH) && o->mthresh % 2 == 0) {
    fprintf(stderr, "%s: --mthresh %d must be odd (3..255)\n", cmd, o->mthresh);
    return FALSE;
  }
  if ((o->given & GRID_OVERLAP) && o->overlap >= o->size) {
    fprintf(stderr, "%s: --overlap %d is outside 0..%d (below --size %d)\n", cmd, o->overlap,
            o->size - 1, o->size);
    return FALSE;
  }
  if (!!(o->given & GRID_MAG) + !!(o->given & GRID_MPP) + !!(o->given & GRID_LEVEL) > 1) {
    fprintf(stderr, "%s: give one of --mag, --mpp and --level, not several\n", cmd);
    return FALSE;
  }
  if ((o->given & GRID_STEP) && (o->given & GRID_OVERLAP)) {
    fprintf(stderr, "%s: give --step or --overlap, not both\n", cmd);
    return FALSE;
  }
  MexdTissueParams tp;
  g_autoptr(GError) error = NULL;
  if (o->preset && !mexd_tissue_preset(o->preset, &tp, &error)) {
    fprintf(stderr, "%s: --preset: %s\n", cmd, error->message);
    return FALSE;
  }
  MexdContourFn fn;
  if (o->contour_fn && !mexd_contour_fn_parse(o->contour_fn, &fn)) {
    fprintf(stderr, "%s: --contour-fn is four_pt, four_pt_hard or center, not \"%s\"\n", cmd,
            o->contour_fn);
    return FALSE;
  }
  return TRUE;
}

gboolean grid_opts_any(const GridOpts *o)
{
  return o->given || o->preset || o->contour_fn || o->otsu || o->no_padding;
}

/* Opens nothing: turns the options into tissue parameters and a grid spec for `slide`. */
static gboolean grid_opts_resolve(const GridOpts *o, MexdSlide *slide, MexdTissueParams *tp,
                                  MexdGridSpec *spec, GError **error)
{
  if (!mexd_tissue_preset(o->preset ? o->preset : "default", tp, error))
    return FALSE;
  if (o->given & GRID_STHRESH)
    tp->sthresh = o->sthresh;
  if (o->given & GRID_MTHRESH)
    tp->mthresh = o->mthresh;
  if (o->given & GRID_CLOSE)
    tp->close = o->close;
  if (o->given & GRID_A_T)
    tp->a_t = o->a_t;
  if (o->given & GRID_A_H)
    tp->a_h = o->a_h;
  if (o->given & GRID_MAX_HOLES)
    tp->max_n_holes = o->max_holes;
  if (o->otsu)
    tp->use_otsu = TRUE;
  if (!mexd_tissue_params_check(tp, error))
    return FALSE;
  const double mag = o->given & GRID_MAG ? o->mag : 0, mpp = o->given & GRID_MPP ? o->mpp : 0;
  const int level = o->given & GRID_LEVEL ? o->level : 0;
  const int step = o->given & GRID_STEP ? o->step : o->size - o->overlap;
  int chosen = !!(o->given & GRID_MAG) + !!(o->given & GRID_MPP) + !!(o->given & GRID_LEVEL);
  if (chosen > 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "give one of --mag, --mpp and --level, not several");
  if ((o->given & GRID_STEP) && (o->given & GRID_OVERLAP))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "give --step or --overlap, not both");
  if (o->overlap < 0 || o->overlap >= o->size)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "--overlap %d must lie in 0..%d (below the tile size)", o->overlap,
                     o->size - 1);
  gboolean ok = mexd_grid_spec_choose(slide, mpp, mag, level, o->size, step, spec, error);
  if (!ok)
    return FALSE;
  if (o->contour_fn && !mexd_contour_fn_parse(o->contour_fn, &spec->contour_fn))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "unknown --contour-fn \"%s\" (four_pt, four_pt_hard, center)", o->contour_fn);
  spec->padding = !o->no_padding;
  return TRUE;
}

/* Tissue and grid of `slide`; prints what it found unless quiet. */
int64_t mexd_slide_grid(const GridOpts *o, MexdSlide *slide, MexdGridSpec *spec,
                          MexdTissue **tissue_out, int32_t **coords, gboolean quiet,
                          GError **error)
{
  MexdTissueParams tp;
  if (!grid_opts_resolve(o, slide, &tp, spec, error))
    return -1;
  gint64 t0 = g_get_monotonic_time();
  MexdTissue *t =
      mexd_slide_tissue(slide, o->given & GRID_SEG_LEVEL ? o->seg_level : -1, &tp, error);
  if (!t)
    return -1;
  int64_t n = mexd_tile_grid(slide, t, spec, coords);
  if (!quiet) {
    int64_t w, h;
    mexd_slide_level_size(slide, 0, &w, &h);
    fprintf(stderr,
            "%s: %s, %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT ", %d levels, %.4g µm/px (%s)%s"
            "\n  tissue at level %d (%d x %d, threshold %d): %d contours, %.1f %% of the slide"
            "\n  %" G_GINT64_FORMAT " tiles of %d px read at level %d (%d px, %" G_GINT64_FORMAT
            " level-0 px%s%.3g µm/px), %s, %.2f s\n",
            mexd_slide_path(slide), mexd_slide_vendor(slide), w, h,
            mexd_slide_level_count(slide), mexd_slide_mpp_x(slide), mexd_slide_mpp_source(slide),
            mexd_slide_objective(slide) > 0 ? "" : ", no objective power", t->level, t->width,
            t->height, t->threshold, t->n, 100 * t->tissue_fraction, n, spec->patch_size,
            spec->level, spec->read_size, spec->ref_w, spec->mpp > 0 ? ", " : "", spec->mpp,
            mexd_contour_fn_name(spec->contour_fn), (g_get_monotonic_time() - t0) / 1e6);
  }
  *tissue_out = t;
  return n;
}

int mexd_cmd_tiles(int argc, char **argv)
{
  GridOpts o;
  grid_opts_init(&o);
  g_autofree char *out = NULL, *geojson = NULL;
  gboolean quiet = FALSE, no_tiles_json = FALSE;
  GOptionEntry entries[] = {
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "CLAM patch file to write (.h5)", "H5"},
      {"geojson", 0, 0, G_OPTION_ARG_FILENAME, &geojson,
       "GeoJSON of the tissue outlines and the tiles (level-0 pixels, for QuPath)", "FILE"},
      {"tissue-only", 0, 0, G_OPTION_ARG_NONE, &no_tiles_json, "GeoJSON without the tiles",
       NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "print nothing but errors", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new(
      "SLIDE - find the tissue of a slide and the tiles over it, as CLAM does");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_group(ctx, grid_opts_group(&o));
  g_autoptr(GError) error = NULL;
  int rc = 0;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd tiles: %s\n", error->message);
    rc = 2;
    goto done;
  }
  if (argc != 2) {
    fprintf(stderr, "mexd tiles: give one slide (mexd tiles --help)\n");
    rc = 2;
    goto done;
  }
  if (!grid_opts_check(&o, "mexd tiles")) {
    rc = 2;
    goto done;
  }
  {
    /* outputs are checked against the input before anything is read or written */
    const char *inputs[] = {argv[1], NULL};
    if ((out && !mexd_file_check_output(out, inputs, &error)) ||
        (geojson && !mexd_file_check_output(geojson, inputs, &error))) {
      fprintf(stderr, "mexd tiles: %s\n", error->message);
      rc = 1;
      goto done;
    }
    if (out && geojson && (g_str_equal(out, geojson) || mexd_file_same(out, geojson))) {
      fprintf(stderr, "mexd tiles: --out and --geojson name the same file (%s)\n", out);
      rc = 2;
      goto done;
    }
    g_autoptr(MexdSlide) slide = mexd_slide_open(argv[1], &error);
    MexdGridSpec spec;
    g_autoptr(MexdTissue) t = NULL;
    g_autofree int32_t *coords = NULL;
    int64_t n = slide ? mexd_slide_grid(&o, slide, &spec, &t, &coords, quiet, &error) : -1;
    if (n < 0) {
      fprintf(stderr, "mexd tiles: %s\n", error->message);
      rc = error->code == MEXD_ERROR_INVALID_ARGUMENT ? 2 : 1;
      goto done;
    }
    if (out) {
      double dx, dy;
      mexd_slide_level_downsample_xy(slide, spec.level, &dx, &dy);
      int64_t lw, lh;
      mexd_slide_level_size(slide, spec.level, &lw, &lh);
      MexdPatchFile pf = {.n = n, .coords = coords, .patch_size = spec.patch_size,
                          .patch_level = spec.level, .downsample = {dx, dy},
                          .level_dim = {lw, lh}, .name = mexd_slide_name(slide),
                          .patch_size_level0 = spec.ref_w, .mpp = spec.mpp};
      if (!mexd_patches_write_h5(out, &pf, &error)) {
        fprintf(stderr, "mexd tiles: %s\n", error->message);
        rc = 1;
        goto done;
      }
    }
    if (geojson) {
      g_autoptr(MexdGeoJson) g = mexd_geojson_new();
      mexd_geojson_add_tissue(g, t);
      for (int64_t i = 0; !no_tiles_json && i < n; i++)
        mexd_geojson_add_tile(g, i, coords[2 * i], coords[2 * i + 1], spec.ref_w, spec.ref_h,
                              NULL);
      if (!mexd_geojson_write(g, geojson, &error)) {
        fprintf(stderr, "mexd tiles: %s\n", error->message);
        rc = 1;
        goto done;
      }
    }
    if (n == 0 && !quiet)
      fprintf(stderr, "  no tissue tiles: the area filter (a tissue piece must exceed a_t "
                      "reference patches of 512² level-0 pixels) may be too strict for this "
                      "slide: try --a-t 1 or less; --geojson shows the tissue\n");
    if (!out && !geojson && !quiet)
      fprintf(stderr, "(nothing written: give --out and/or --geojson)\n");
  }
done:
  grid_opts_clear(&o);
  return rc;
}

/* Tiles per second: `threads` readers over the first `max` tiles of the grid, on a handle of its
 * own (OpenSlide's tile cache starts cold); threads 0 is OpenSlide's read_region alone on one
 * thread, ARGB as it comes. */
static double read_rate(const char *path, const MexdGridSpec *spec, const int32_t *coords,
                        int64_t n, int threads, GError **error)
{
  g_autoptr(MexdSlide) s = mexd_slide_open(path, error);
  if (!s)
    return -1;
  gint64 t0 = g_get_monotonic_time();
  if (threads == 0) {
    g_autofree uint32_t *buf = g_malloc((size_t)spec->read_size * spec->read_size * 4);
    for (int64_t i = 0; i < n; i++)
      if (!mexd_slide_read_argb(s, coords[2 * i], coords[2 * i + 1], spec->level,
                                spec->read_size, spec->read_size, buf, error))
        return -1;
  } else {
    g_autoptr(MexdTileReader) r = mexd_tile_reader_new(s, spec, coords, n, threads, 0, error);
    if (!r)
      return -1;
    const uint8_t *rgb;
    int64_t k = 0;
    while (mexd_tile_reader_next(r, &rgb, NULL, error))
      k++;
    if (k != n)
      return -1;
  }
  return (double)n / ((g_get_monotonic_time() - t0) / 1e6);
}

int mexd_bench_read(int argc, char **argv)
{
  GridOpts o;
  grid_opts_init(&o);
  g_autofree char *threads_s = NULL;
  int max = 2000, reps = 3;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"threads", 't', 0, G_OPTION_ARG_STRING, &threads_s,
       "reader threads, a comma-separated list (1,2; each 1..1024)", "N,M"},
      {"max-tiles", 0, 0, G_OPTION_ARG_INT, &max, "tiles read per run (2000; 1..10000000)", "N"},
      {"reps", 0, 0, G_OPTION_ARG_INT, &reps,
       "runs per setting; the median is reported (3; 1..1000)", "R"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON line per setting", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new(
      "SLIDE - tiles per second read from a slide: OpenSlide alone, then the threaded reader");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_group(ctx, grid_opts_group(&o));
  g_autoptr(GError) error = NULL;
  int rc = 0;
  g_auto(GStrv) tl = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 2) {
    fprintf(stderr, "mexd bench read: %s (mexd bench read --help)\n",
                    error ? error->message : "give one slide");
    rc = 2;
    goto done;
  }
  if (!mexd_opt_int("mexd bench read", "--max-tiles", max, 1, 10000000) ||
      !mexd_opt_int("mexd bench read", "--reps", reps, 1, 1000) ||
      !grid_opts_check(&o, "mexd bench read")) {
    rc = 2;
    goto done;
  }
  tl = g_strsplit(threads_s ? threads_s : "1,2", ",", -1);
  if (!tl[0]) {
    fprintf(stderr, "mexd bench read: --threads takes integers separated by commas, not "
                    "\"\"\n");
    rc = 2;
    goto done;
  }
  for (int k = 0; tl[k]; k++) {
    gint64 v;
    if (!g_ascii_string_to_signed(g_strstrip(tl[k]), 10, G_MININT64, G_MAXINT64, &v, NULL)) {
      fprintf(stderr, "mexd bench read: --threads takes integers separated by commas, not "
                      "\"%s\"\n", threads_s);
      rc = 2;
      goto done;
    }
    if (!mexd_opt_int("mexd bench read", "--threads", v, 1, 1024)) {
      rc = 2;
      goto done;
    }
  }
  {
    g_autoptr(MexdSlide) slide = mexd_slide_open(argv[1], &error);
    MexdGridSpec spec;
    g_autoptr(MexdTissue) t = NULL;
    g_autofree int32_t *coords = NULL;
    int64_t n = slide ? mexd_slide_grid(&o, slide, &spec, &t, &coords, json, &error) : -1;
    if (n < 0) {
      fprintf(stderr, "mexd bench read: %s\n", error->message);
      rc = 1;
      goto done;
    }
    if (n == 0) {
      fprintf(stderr, "mexd bench read: %s has no tissue tiles\n", argv[1]);
      rc = 1;
      goto done;
    }
    n = MIN(n, (int64_t)max);
    /* a first pass puts the file in the page cache, so every setting reads from memory */
    if (read_rate(argv[1], &spec, coords, n, 0, &error) < 0) {
      fprintf(stderr, "mexd bench read: %s\n", error->message);
      rc = 1;
      goto done;
    }
    int nt = 1 + (int)g_strv_length(tl);
    for (int k = 0; k < nt; k++) {
      int threads = k == 0 ? 0 : (int)g_ascii_strtoll(tl[k - 1], NULL, 10); /* checked above */
      g_autofree double *v = g_new(double, reps);
      for (int r = 0; r < reps; r++)
        if ((v[r] = read_rate(argv[1], &spec, coords, n, threads, &error)) < 0) {
          fprintf(stderr, "mexd bench read: %s\n", error->message);
          rc = 1;
          goto done;
        }
      double med = mexd_median(v, reps);
      const char *what = threads ? "mexd reader (RGB)" : "openslide_read_region (ARGB)";
      if (json)
        printf("{\"slide\":\"%s\",\"reader\":\"%s\",\"threads\":%d,\"tiles\":%" G_GINT64_FORMAT
               ",\"size\":%d,\"level\":%d,\"tiles_per_s\":%.1f}\n",
               mexd_slide_name(slide), threads ? "mexd" : "openslide", MAX(threads, 1), n,
               spec.read_size, spec.level, med);
      else
        printf("%-30s %2d thread%s  %7.1f tiles/s  (%" G_GINT64_FORMAT " tiles of %d px, level "
               "%d, median of %d)\n",
               what, MAX(threads, 1), threads > 1 ? "s" : " ", med, n, spec.read_size,
               spec.level, reps);
    }
  }
done:
  grid_opts_clear(&o);
  return rc;
}
