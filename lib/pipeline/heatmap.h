/* heatmap.h: a slide's tile scores drawn as CLAM draws its heatmaps — each score turned into its
 * percentile among the slide's tiles, a blue → cyan → yellow → red colour map, tiles only (the
 * rest transparent) — and the overlay composited over a thumbnail of the slide.  mexdheatmap
 * and `mexd classify` both draw with these. */
#pragma once

#include "wsi/slide.h"

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* The overlay's height for `width` over a slide of slide_w × slide_h level-0 pixels (the
 * aspect kept; 1..65535). */
int mexd_heatmap_height(int64_t slide_w, int64_t slide_h, int width);

/* An RGBA overlay (width × height × 4, g_free) of n tiles at level-0 top-left xy[2i], xy[2i+1]
 * (a tile with x < 0 is skipped) of extent `tile_extent`, coloured by score[i]'s percentile,
 * with opacity alpha (0..1).  When slide_w or slide_h is 0 the tiles' extent is used.  Sizes
 * are checked (width 1..65535); NULL with MEXD_ERROR_NO_MEMORY when the image cannot be had. */
uint8_t *mexd_heatmap_render(const int32_t *xy, const float *score, int64_t n,
                             int64_t tile_extent, int64_t slide_w, int64_t slide_h, int width,
                             double alpha, int *height_out, GError **error);

/* The overlay (w × h RGBA) over a thumbnail of the slide, as opaque RGB (w × h × 3, g_free). */
uint8_t *mexd_heatmap_over_thumbnail(MexdSlide *s, const uint8_t *rgba, int w, int h,
                                     GError **error);

/* An opaque RGBA frame (mexdheatmap thumbnail=true) as an RGB PNG, written atomically. */
gboolean mexd_heatmap_write_png(const char *path, const uint8_t *rgba, int w, int h,
                                GError **error);

G_END_DECLS
