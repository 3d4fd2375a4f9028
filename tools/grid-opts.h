/* grid-opts.h (tools): the options that choose a slide's tissue and tile grid, shared by
 * `mexd tiles`, `mexd bench read` and `mexd extract --slide` (tiles.c). */
#pragma once

#include "../lib/mexd.h"

typedef struct {
  char *preset, *contour_fn;
  double mag, mpp;
  int level, size, step, overlap, seg_level;
  int sthresh, mthresh, close;
  double a_t, a_h;
  int max_holes;
  gboolean otsu, no_padding;
} GridOpts;

void grid_opts_init(GridOpts *o);
void grid_opts_clear(GridOpts *o);
/* An option group filling `o` (--mag, --mpp, --level, --size, --step, --preset, ...). */
GOptionGroup *grid_opts_group(GridOpts *o);
/* The slide's tissue and grid as the options say; prints a summary to stderr unless quiet.
 * Returns the tile count (coords: 2 × count int32, g_free) or −1 with the error set. */
int64_t mexd_slide_grid(const GridOpts *o, MexdSlide *slide, MexdGridSpec *spec,
                        MexdTissue **tissue_out, int32_t **coords, gboolean quiet,
                        GError **error);
