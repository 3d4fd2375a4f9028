/* gstmexdmeta.h: what travels with the tiles between the mexd elements.
 *
 * GstMexdTileMeta: where a tile comes from (slide id, level, level-0 x/y, tile size, level-0
 * extent, µm per pixel, index in its slide).  Registered without tags, so GstBaseTransform
 * subclasses (mexdembed, videoconvert...) copy it from tile to feature untouched.
 *
 * Slide boundaries are serialized custom downstream events:
 *   "mexd/slide-start" (sticky): slide-id, path, width, height (level 0), mpp, tile-size, tiles
 *   "mexd/slide-end": slide-id, tiles (how many were sent)
 * EOS ends a slide too. */
#pragma once

#include "pipeline/result.h"

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_MEXD_SLIDE_START "mexd/slide-start"
#define GST_MEXD_SLIDE_END "mexd/slide-end"

typedef struct {
  GstMeta meta;
  gchar *slide_id;
  gint level;
  gint64 x, y;     /* level-0 pixels of the tile's top-left corner */
  gint tile_size;  /* pixels of the tile as sent */
  gint64 ref_size; /* the tile's extent in level-0 pixels */
  gdouble mpp;     /* µm per tile pixel, 0 when unknown */
  gint64 index;    /* the tile's index in its slide */
} GstMexdTileMeta;

GType gst_mexd_tile_meta_api_get_type(void);
const GstMetaInfo *gst_mexd_tile_meta_get_info(void);
#define GST_MEXD_TILE_META_API_TYPE (gst_mexd_tile_meta_api_get_type())

GstMexdTileMeta *gst_buffer_add_mexd_tile_meta(GstBuffer *buf, const gchar *slide_id, gint level,
                                               gint64 x, gint64 y, gint tile_size,
                                               gint64 ref_size, gdouble mpp, gint64 index);
#define gst_buffer_get_mexd_tile_meta(b)                                                          \
  ((GstMexdTileMeta *)gst_buffer_get_meta((b), GST_MEXD_TILE_META_API_TYPE))

/* On mexdmoe's per-slide output (rho, Z): which slide (id and file, from its slide-start; NULL
 * when unknown), how many tiles, the routing mode used and the time of the stages so far
 * (mexddiffc reports them in its mexd-result message). */
typedef struct {
  GstMeta meta;
  gchar *slide_id, *path, *mode;
  gint64 tiles;
  gdouble ms_adapter1, ms_moe;
} GstMexdSlideMeta;

GType gst_mexd_slide_meta_api_get_type(void);
const GstMetaInfo *gst_mexd_slide_meta_get_info(void);
#define GST_MEXD_SLIDE_META_API_TYPE (gst_mexd_slide_meta_api_get_type())
GstMexdSlideMeta *gst_buffer_add_mexd_slide_meta(GstBuffer *buf, const gchar *slide_id,
                                                 const gchar *path, const gchar *mode,
                                                 gint64 tiles, gdouble ms_adapter1,
                                                 gdouble ms_moe);
#define gst_buffer_get_mexd_slide_meta(b)                                                         \
  ((GstMexdSlideMeta *)gst_buffer_get_meta((b), GST_MEXD_SLIDE_META_API_TYPE))

/* On mexdmoe's per-slide output: where each tile is and how the Dyn-MoE routed it, for
 * mexdheatmap.  score[i] = adapter #1's class-token attention on tile i (TransMIL's own heatmap:
 * where the model looks; the weights of a slide sum to ~1); gate[i] = max over the lesion experts
 * r ≥ 1 of router r's gate p_r(i)[1] (how lesion-like the Dyn-MoE's routers find the tile, in
 * [0, 1]); experts[i] has bit e set when expert e selected it. */
typedef struct {
  GstMeta meta;
  gint64 n;            /* tiles */
  gint32 *xy;          /* [2n] level-0 top-left (−1 when the tile had no meta) */
  gfloat *score;       /* [n] */
  gfloat *gate;        /* [n] */
  guint32 *experts;    /* [n] */
  gint64 tile_extent;  /* level-0 pixels of a tile */
  gint64 width, height; /* level-0 size of the slide (0 when unknown) */
} GstMexdRoutingMeta;

GType gst_mexd_routing_meta_api_get_type(void);
const GstMetaInfo *gst_mexd_routing_meta_get_info(void);
#define GST_MEXD_ROUTING_META_API_TYPE (gst_mexd_routing_meta_api_get_type())
/* Adds a meta for n tiles (arrays zeroed) to be filled by the caller; NULL (nothing added) when
 * the arrays cannot be allocated. */
GstMexdRoutingMeta *gst_buffer_add_mexd_routing_meta(GstBuffer *buf, gint64 n);
#define gst_buffer_get_mexd_routing_meta(b)                                                       \
  ((GstMexdRoutingMeta *)gst_buffer_get_meta((b), GST_MEXD_ROUTING_META_API_TYPE))

GstEvent *gst_mexd_event_new_slide_start(const gchar *slide_id, const gchar *path, gint64 width,
                                         gint64 height, gdouble mpp, gint tile_size,
                                         gint64 tiles);
GstEvent *gst_mexd_event_new_slide_end(const gchar *slide_id, gint64 tiles);
/* TRUE when the event is a slide start / end; *slide_id (not owned) when not NULL. */
gboolean gst_mexd_event_is_slide_start(GstEvent *ev, const gchar **slide_id);
gboolean gst_mexd_event_is_slide_end(GstEvent *ev, const gchar **slide_id);

/* The mexd-result message's structure: the result schema of lib/pipeline/result.h field for
 * field ('-' for '_'; ms becomes ms-adapter1, ms-moe, ms-diffusion; identity and detail are not
 * carried).  from_structure checks it as mexd_slide_result_from_json does. */
GstStructure *gst_mexd_result_to_structure(const MexdSlideResult *r);
MexdSlideResult *gst_mexd_result_from_structure(const GstStructure *s, GError **error);

/* A `location` property's files: split at ';', empty entries (";;", a leading or trailing ';')
 * dropped.  Shared by openslidesrc and mexdfeaturesrc.  g_strfreev it. */
gchar **gst_mexd_split_locations(const gchar *location);

G_END_DECLS
