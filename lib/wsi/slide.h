/* slide.h: a whole-slide image opened with OpenSlide (3.4.1 on Debian 12), its geometry, the
 * tissue on it, the tile grid over the tissue, and a pool of threads reading the tiles.
 *
 * Facts this relies on (../shared/design/WSI.md): OpenSlide returns premultiplied ARGB with
 * transparent (A = 0) pixels outside the scanned area; every call but close is thread-safe, so one
 * handle serves all reading threads; 3.4.1 keeps a 32 MiB tile cache per handle, so tiles are
 * read in grid order.  Pixels given out here are 8-bit RGB, un-premultiplied, with transparent
 * pixels as white background.
 *
 * Errors are GErrors in MEXD_ERROR whose message starts with the slide's file name: IO for a
 * file that cannot be opened (missing, a directory, unreadable); UNSUPPORTED for a file that
 * OpenSlide does not recognise (the message gives what its vendor detection said: nothing, or a
 * vendor whose files it cannot read, such as a stripped TIFF); FORMAT for a recognised slide that
 * OpenSlide fails to read (truncated, corrupt: OpenSlide's own message follows).  After a read
 * error OpenSlide's handle stays failed: every later call fails the same way.
 *
 * Built without OpenSlide (meson -Dwsi=disabled), mexd_slide_open() fails with UNSUPPORTED. */
#pragma once

#include "tissue.h"

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct MexdSlide MexdSlide;

MexdSlide *mexd_slide_open(const char *path, GError **error);
void mexd_slide_free(MexdSlide *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdSlide, mexd_slide_free)

const char *mexd_slide_path(const MexdSlide *s);
/* What identifies the slide's content, for result identity (pipeline/result.h): OpenSlide's
 * openslide.quickhash-1 (a hash of the smallest level's pixels and the slide's properties) and
 * the file's size, "quickhash-1:<hex>/<bytes> bytes"; without a quickhash, the file's SHA-256.
 * g_free it; NULL with the error set. */
char *mexd_slide_identity(const MexdSlide *s, GError **error);
/* The file's base name without its last extension (CLAM's slide name). */
const char *mexd_slide_name(const MexdSlide *s);
/* OpenSlide's vendor ("aperio", "generic-tiff", ...). */
const char *mexd_slide_vendor(const MexdSlide *s);
int mexd_slide_level_count(const MexdSlide *s);
void mexd_slide_level_size(const MexdSlide *s, int level, int64_t *w, int64_t *h);
/* OpenSlide's downsample of the level. */
double mexd_slide_level_downsample(const MexdSlide *s, int level);
/* CLAM's per-axis downsample: level-0 size over the level's size. */
void mexd_slide_level_downsample_xy(const MexdSlide *s, int level, double *dx, double *dy);
/* OpenSlide's best level for a downsample (the largest level not above it). */
int mexd_slide_best_level(const MexdSlide *s, double downsample);
/* Microns per level-0 pixel: openslide.mpp-x/-y, else from tiff.XResolution/YResolution and
 * tiff.ResolutionUnit; 0 when the slide does not say. */
double mexd_slide_mpp_x(const MexdSlide *s);
double mexd_slide_mpp_y(const MexdSlide *s);
/* Where the mpp came from: "openslide.mpp-x", "tiff.XResolution" or "none". */
const char *mexd_slide_mpp_source(const MexdSlide *s);
/* openslide.objective-power, 0 when absent. */
double mexd_slide_objective(const MexdSlide *s);
/* A property's value, NULL when absent. */
const char *mexd_slide_property(const MexdSlide *s, const char *name);

/* OpenSlide's read_region as it is: premultiplied ARGB (w·h words) into `argb`. */
gboolean mexd_slide_read_argb(MexdSlide *s, int64_t x, int64_t y, int level, int w, int h,
                              uint32_t *argb, GError **error);
/* Reads the region whose top-left is (x, y) in level-0 pixels, w × h pixels at `level`, as RGB
 * (3 bytes a pixel, rows of 3w bytes) into `rgb`.  `scratch` (4wh bytes) may be NULL. */
gboolean mexd_slide_read_rgb(MexdSlide *s, int64_t x, int64_t y, int level, int w, int h,
                             uint8_t *rgb, uint32_t *scratch, GError **error);

/* CLAM's segmentation level: 0 for a one-level slide, else the best level for 64×. */
int mexd_slide_seg_level(const MexdSlide *s);
/* Tissue on the slide (tissue.h) at `level` (−1: mexd_slide_seg_level()).  The whole level is
 * read; a level over 1e8 pixels is refused with UNSUPPORTED, as CLAM refuses it. */
MexdTissue *mexd_slide_tissue(MexdSlide *s, int level, const MexdTissueParams *params,
                              GError **error);

/* ---- the tile grid ---- */

typedef enum {
  MEXD_CONTOUR_FOUR_PT,      /* any of four points at centre ± patch/4 inside the contour */
  MEXD_CONTOUR_FOUR_PT_HARD, /* all four */
  MEXD_CONTOUR_CENTER,       /* the centre */
} MexdContourFn;

/* "four_pt", "four_pt_hard", "center" → the enum; FALSE for another name. */
gboolean mexd_contour_fn_parse(const char *name, MexdContourFn *out);
const char *mexd_contour_fn_name(MexdContourFn fn);

typedef struct {
  int patch_size;       /* tile side in output pixels */
  int level;            /* the level tiles are read from */
  int read_size;        /* tile side read at `level` (resized to patch_size when different) */
  int64_t ref_w, ref_h; /* a tile's extent in level-0 pixels */
  int64_t step_x, step_y; /* grid step in level-0 pixels */
  gboolean padding;     /* CLAM's use_padding: tiles may run over the slide's edge */
  MexdContourFn contour_fn;
  double mpp;           /* microns per output pixel (0 when the slide has no mpp) */
} MexdGridSpec;

/* CLAM's grid: tiles of `size` pixels read at `level` without resizing, `step` pixels apart at
 * that level (level-0 extent size × int(downsample), as CLAM). */
gboolean mexd_grid_spec_level(const MexdSlide *s, int level, int size, int step,
                              MexdGridSpec *out, GError **error);
/* A grid at a resolution: `mpp` microns per pixel (or, when mpp <= 0, magnification `mag`,
 * converted with the slide's objective power, else with mpp 10/mag).  The level read is the
 * best level for the downsample (1 % tolerance), tiles are read at the size that covers the
 * same area and resized.  UNSUPPORTED when the slide has no mpp, or the resolution asked for is
 * finer than the slide's by more than 1 %. */
gboolean mexd_grid_spec_resolution(const MexdSlide *s, double mpp, double mag, int size, int step,
                                   MexdGridSpec *out, GError **error);

/* The grid a user asks for: at a resolution when mpp > 0 or mag > 0 (both: mpp wins), else at
 * `level` as CLAM. */
gboolean mexd_grid_spec_choose(const MexdSlide *s, double mpp, double mag, int level, int size,
                               int step, MexdGridSpec *out, GError **error);

/* The tiles over the tissue: level-0 (x, y) pairs in CLAM's order (contour after contour, each
 * box column-major), contour_fn applied, tiles whose centre lies inside a kept hole dropped.
 * Returns the count; *coords gets 2 × count int32 (g_free). */
int64_t mexd_tile_grid(const MexdSlide *s, const MexdTissue *t, const MexdGridSpec *spec,
                       int32_t **coords);


/* ---- reading tiles with threads ---- */

typedef struct MexdTileReader MexdTileReader;

/* Reads the tiles at `coords` (n level-0 pairs) as spec says, with `threads` threads (>= 1), at
 * most `depth` tiles ahead of the consumer (0: 4 per thread).  Tiles come out in order. */
MexdTileReader *mexd_tile_reader_new(MexdSlide *s, const MexdGridSpec *spec,
                                     const int32_t *coords, int64_t n, int threads, int depth,
                                     GError **error);
/* The next tile: *rgb (patch_size² × 3 bytes, valid until the next call) and its index.  FALSE
 * at the end (error unset) or on a read error (error set: the rest of the slide is not read). */
gboolean mexd_tile_reader_next(MexdTileReader *r, const uint8_t **rgb, int64_t *index,
                               GError **error);
void mexd_tile_reader_free(MexdTileReader *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdTileReader, mexd_tile_reader_free)

G_END_DECLS
