/* geojson.h: the one GeoJSON writer of mexd — tissue outlines (`mexd tiles --geojson`) and tiles,
 * plain or scored (`mexd classify`'s tiles.geojson), as a FeatureCollection in level-0 pixels
 * that QuPath imports:
 *   tissue: Polygon (outline, then its holes), properties {objectType "annotation",
 *           classification {name "Tissue"}, contour}
 *   tile:   Polygon (a closed square), properties {objectType "tile", index} and, when scored,
 *           score (adapter #1's attention), gate (the lesion experts' largest router gate),
 *           experts (the experts that selected it) and measurements {attention, gate}. */
#pragma once

#include "wsi/tissue.h"

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct {
  double score, gate;
  guint32 experts; /* bit e: expert e selected the tile */
} MexdTileScore;

typedef struct _MexdGeoJson MexdGeoJson;
MexdGeoJson *mexd_geojson_new(void);
void mexd_geojson_free(MexdGeoJson *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdGeoJson, mexd_geojson_free)
void mexd_geojson_add_tissue(MexdGeoJson *g, const MexdTissue *t);
/* A tile: level-0 top-left (x, y), extent w × h; score may be NULL. */
void mexd_geojson_add_tile(MexdGeoJson *g, int64_t index, int64_t x, int64_t y, int64_t w,
                           int64_t h, const MexdTileScore *score);
/* n scored tiles at level-0 top-left xy[2i], xy[2i+1] (a tile with x < 0 is left out), each of
 * extent × extent, with score[i], gate[i] and experts[i]: `mexd classify`'s tiles.geojson. */
gboolean mexd_geojson_write_scored_tiles(const char *path, const int32_t *xy, const float *score,
                                         const float *gate, const guint32 *experts, int64_t n,
                                         int64_t extent, GError **error);
/* The collection's text (owned by g). */
const char *mexd_geojson_text(MexdGeoJson *g);
/* Writes it atomically. */
gboolean mexd_geojson_write(MexdGeoJson *g, const char *path, GError **error);

G_END_DECLS
