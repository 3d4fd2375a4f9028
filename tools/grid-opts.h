/* grid-opts.h (tools): the options that choose a slide's tissue and tile grid, shared by
 * `mexd tiles`, `mexd bench read` and `mexd extract --slide` (tiles.c).
 *
 * Every numeric option is range-checked by grid_opts_check (a usage error: exit 2, naming the
 * option and its range in tools/opts.h's words); an option given is used as given (an explicit
 * value is never taken for "not given"), so the ranges below are the whole story:
 *   --mag above 0, at most 1000      --mpp above 0, at most 1000      --level 0..64
 *   --size 1..16384                  --step 1..1048576                --overlap 0..16383, < --size
 *   --seg-level 0..64                --sthresh 0..255                 --mthresh 3..255, odd
 *   --close 0..255                   --a-t, --a-h 0..1e9              --max-holes 0..100000
 * (the ranges of openslidesrc's properties where it has the same one, and of lib/wsi's checks). */
#pragma once

#include "../lib/mexd.h"

/* which numeric options were given (GridOpts.given) */
enum {
  GRID_MAG = 1 << 0,
  GRID_MPP = 1 << 1,
  GRID_LEVEL = 1 << 2,
  GRID_SIZE = 1 << 3,
  GRID_STEP = 1 << 4,
  GRID_OVERLAP = 1 << 5,
  GRID_SEG_LEVEL = 1 << 6,
  GRID_STHRESH = 1 << 7,
  GRID_MTHRESH = 1 << 8,
  GRID_CLOSE = 1 << 9,
  GRID_A_T = 1 << 10,
  GRID_A_H = 1 << 11,
  GRID_MAX_HOLES = 1 << 12,
};

typedef struct {
  char *preset, *contour_fn;
  double mag, mpp;
  int level, size, step, overlap, seg_level;
  int sthresh, mthresh, close;
  double a_t, a_h;
  int max_holes;
  gboolean otsu, no_padding;
  guint given; /* GRID_* of the numeric options given */
} GridOpts;

void grid_opts_init(GridOpts *o);
void grid_opts_clear(GridOpts *o);
/* An option group filling `o` (--mag, --mpp, --level, --size, --step, --preset, ...). */
GOptionGroup *grid_opts_group(GridOpts *o);
/* Every option given within its range (above), one of --mag/--mpp/--level, not both --step and
 * --overlap, a known --preset and --contour-fn.  Prints "CMD: …" and returns FALSE otherwise
 * (the caller exits 2). */
gboolean grid_opts_check(const GridOpts *o, const char *cmd);
/* Whether any grid option was given (for commands where they do not apply). */
gboolean grid_opts_any(const GridOpts *o);
/* The slide's tissue and grid as the options say; prints a summary to stderr unless quiet.
 * Returns the tile count (coords: 2 × count int32, g_free) or −1 with the error set. */
int64_t mexd_slide_grid(const GridOpts *o, MexdSlide *slide, MexdGridSpec *spec,
                        MexdTissue **tissue_out, int32_t **coords, gboolean quiet,
                        GError **error);
