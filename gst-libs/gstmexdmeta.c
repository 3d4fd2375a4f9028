/* gstmexdmeta.c: the tile meta and the slide events (gstmexdmeta.h); part of libmexd-gst, the
 * one copy of these types in a process (the plugin, `mexd` and applications link it). */
#include "gstmexdmeta.h"

#include "core/error.h"

#include <string.h>

GType gst_mexd_tile_meta_api_get_type(void)
{
  static GType type = 0;
  static const gchar *tags[] = {NULL};
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, gst_meta_api_type_register("GstMexdTileMetaAPI", tags));
  }
  return type;
}

static gboolean tile_meta_init(GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  (void)params;
  (void)buffer;
  GstMexdTileMeta *m = (GstMexdTileMeta *)meta;
  m->slide_id = NULL;
  m->level = 0;
  m->x = m->y = m->ref_size = m->index = 0;
  m->tile_size = 0;
  m->mpp = 0;
  return TRUE;
}

static void tile_meta_free(GstMeta *meta, GstBuffer *buffer)
{
  (void)buffer;
  g_free(((GstMexdTileMeta *)meta)->slide_id);
}

static gboolean tile_meta_transform(GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
                                    GQuark type, gpointer data)
{
  (void)buffer;
  (void)type;
  (void)data;
  /* every transform keeps the tile's origin: the meta describes where it came from, not its
   * pixels (a converted, scaled or embedded tile still comes from there) */
  GstMexdTileMeta *m = (GstMexdTileMeta *)meta;
  return gst_buffer_add_mexd_tile_meta(dest, m->slide_id, m->level, m->x, m->y, m->tile_size,
                                       m->ref_size, m->mpp, m->index) != NULL;
}

const GstMetaInfo *gst_mexd_tile_meta_get_info(void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter((GstMetaInfo **)&info)) {
    const GstMetaInfo *mi = gst_meta_register(
        GST_MEXD_TILE_META_API_TYPE, "GstMexdTileMeta", sizeof(GstMexdTileMeta), tile_meta_init,
        tile_meta_free, tile_meta_transform);
    g_once_init_leave((GstMetaInfo **)&info, (GstMetaInfo *)mi);
  }
  return info;
}

GstMexdTileMeta *gst_buffer_add_mexd_tile_meta(GstBuffer *buf, const gchar *slide_id, gint level,
                                               gint64 x, gint64 y, gint tile_size,
                                               gint64 ref_size, gdouble mpp, gint64 index)
{
  GstMexdTileMeta *m =
      (GstMexdTileMeta *)gst_buffer_add_meta(buf, gst_mexd_tile_meta_get_info(), NULL);
  if (!m)
    return NULL;
  m->slide_id = g_strdup(slide_id);
  m->level = level;
  m->x = x;
  m->y = y;
  m->tile_size = tile_size;
  m->ref_size = ref_size;
  m->mpp = mpp;
  m->index = index;
  return m;
}

GType gst_mexd_slide_meta_api_get_type(void)
{
  static GType type = 0;
  static const gchar *tags[] = {NULL};
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, gst_meta_api_type_register("GstMexdSlideMetaAPI", tags));
  }
  return type;
}

static gboolean slide_meta_init(GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  (void)params;
  (void)buffer;
  GstMexdSlideMeta *m = (GstMexdSlideMeta *)meta;
  m->slide_id = m->path = m->mode = NULL;
  m->tiles = 0;
  m->ms_adapter1 = m->ms_moe = 0;
  return TRUE;
}

static void slide_meta_free(GstMeta *meta, GstBuffer *buffer)
{
  (void)buffer;
  GstMexdSlideMeta *m = (GstMexdSlideMeta *)meta;
  g_free(m->slide_id);
  g_free(m->path);
  g_free(m->mode);
}

static gboolean slide_meta_transform(GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
                                     GQuark type, gpointer data)
{
  (void)buffer;
  (void)type;
  (void)data;
  GstMexdSlideMeta *m = (GstMexdSlideMeta *)meta;
  return gst_buffer_add_mexd_slide_meta(dest, m->slide_id, m->path, m->mode, m->tiles,
                                        m->ms_adapter1, m->ms_moe) != NULL;
}

const GstMetaInfo *gst_mexd_slide_meta_get_info(void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter((GstMetaInfo **)&info)) {
    const GstMetaInfo *mi = gst_meta_register(GST_MEXD_SLIDE_META_API_TYPE, "GstMexdSlideMeta",
                             sizeof(GstMexdSlideMeta), slide_meta_init, slide_meta_free,
                             slide_meta_transform);
    g_once_init_leave((GstMetaInfo **)&info, (GstMetaInfo *)mi);
  }
  return info;
}

GstMexdSlideMeta *gst_buffer_add_mexd_slide_meta(GstBuffer *buf, const gchar *slide_id,
                                                 const gchar *path, const gchar *mode,
                                                 gint64 tiles, gdouble ms_adapter1,
                                                 gdouble ms_moe)
{
  GstMexdSlideMeta *m =
      (GstMexdSlideMeta *)gst_buffer_add_meta(buf, gst_mexd_slide_meta_get_info(), NULL);
  if (!m)
    return NULL;
  m->slide_id = g_strdup(slide_id);
  m->path = g_strdup(path);
  m->mode = g_strdup(mode);
  m->tiles = tiles;
  m->ms_adapter1 = ms_adapter1;
  m->ms_moe = ms_moe;
  return m;
}

GType gst_mexd_routing_meta_api_get_type(void)
{
  static GType type = 0;
  static const gchar *tags[] = {NULL};
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, gst_meta_api_type_register("GstMexdRoutingMetaAPI", tags));
  }
  return type;
}

static gboolean routing_meta_init(GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  (void)params;
  (void)buffer;
  GstMexdRoutingMeta *m = (GstMexdRoutingMeta *)meta;
  m->n = 0;
  m->xy = NULL;
  m->score = NULL;
  m->gate = NULL;
  m->experts = NULL;
  m->tile_extent = m->width = m->height = 0;
  return TRUE;
}

static void routing_meta_free(GstMeta *meta, GstBuffer *buffer)
{
  (void)buffer;
  GstMexdRoutingMeta *m = (GstMexdRoutingMeta *)meta;
  g_free(m->xy);
  g_free(m->score);
  g_free(m->gate);
  g_free(m->experts);
}

static gboolean routing_meta_transform(GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
                                       GQuark type, gpointer data)
{
  (void)buffer;
  (void)type;
  (void)data;
  GstMexdRoutingMeta *m = (GstMexdRoutingMeta *)meta;
  GstMexdRoutingMeta *d = gst_buffer_add_mexd_routing_meta(dest, m->n);
  if (!d)
    return FALSE;
  memcpy(d->xy, m->xy, sizeof(gint32) * 2 * m->n);
  memcpy(d->score, m->score, sizeof(gfloat) * m->n);
  memcpy(d->gate, m->gate, sizeof(gfloat) * m->n);
  memcpy(d->experts, m->experts, sizeof(guint32) * m->n);
  d->tile_extent = m->tile_extent;
  d->width = m->width;
  d->height = m->height;
  return TRUE;
}

const GstMetaInfo *gst_mexd_routing_meta_get_info(void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter((GstMetaInfo **)&info)) {
    const GstMetaInfo *mi = gst_meta_register(GST_MEXD_ROUTING_META_API_TYPE, "GstMexdRoutingMeta",
                             sizeof(GstMexdRoutingMeta), routing_meta_init, routing_meta_free,
                             routing_meta_transform);
    g_once_init_leave((GstMetaInfo **)&info, (GstMetaInfo *)mi);
  }
  return info;
}

GstMexdRoutingMeta *gst_buffer_add_mexd_routing_meta(GstBuffer *buf, gint64 n)
{
  /* n comes from the data (a slide's tiles): the arrays are had first, without aborting, and
   * the meta is added only when they all were */
  const gsize k = (gsize)MAX(n, 1);
  if (n < 0 || (guint64)n > G_MAXSIZE / (2 * sizeof(gint32)))
    return NULL;
  gint32 *xy = g_try_new0(gint32, 2 * k);
  gfloat *score = g_try_new0(gfloat, k), *gate = g_try_new0(gfloat, k);
  guint32 *experts = g_try_new0(guint32, k);
  GstMexdRoutingMeta *m =
      xy && score && gate && experts
          ? (GstMexdRoutingMeta *)gst_buffer_add_meta(buf, gst_mexd_routing_meta_get_info(), NULL)
          : NULL;
  if (!m) {
    g_free(xy);
    g_free(score);
    g_free(gate);
    g_free(experts);
    return NULL;
  }
  m->n = n;
  m->xy = xy;
  m->score = score;
  m->gate = gate;
  m->experts = experts;
  return m;
}

GstEvent *gst_mexd_event_new_slide_start(const gchar *slide_id, const gchar *path, gint64 width,
                                         gint64 height, gdouble mpp, gint tile_size,
                                         gint64 tiles)
{
  GstStructure *s = gst_structure_new(GST_MEXD_SLIDE_START, "slide-id", G_TYPE_STRING, slide_id,
                                      "path", G_TYPE_STRING, path ? path : "", "width",
                                      G_TYPE_INT64, width, "height", G_TYPE_INT64, height, "mpp",
                                      G_TYPE_DOUBLE, mpp, "tile-size", G_TYPE_INT, tile_size,
                                      "tiles", G_TYPE_INT64, tiles, NULL);
  return gst_event_new_custom(GST_EVENT_CUSTOM_DOWNSTREAM_STICKY, s);
}

GstEvent *gst_mexd_event_new_slide_end(const gchar *slide_id, gint64 tiles)
{
  GstStructure *s = gst_structure_new(GST_MEXD_SLIDE_END, "slide-id", G_TYPE_STRING, slide_id,
                                      "tiles", G_TYPE_INT64, tiles, NULL);
  return gst_event_new_custom(GST_EVENT_CUSTOM_DOWNSTREAM, s);
}

static gboolean event_is(GstEvent *ev, const gchar *name, const gchar **slide_id)
{
  if (GST_EVENT_TYPE(ev) != GST_EVENT_CUSTOM_DOWNSTREAM &&
      GST_EVENT_TYPE(ev) != GST_EVENT_CUSTOM_DOWNSTREAM_STICKY)
    return FALSE;
  const GstStructure *s = gst_event_get_structure(ev);
  if (!s || !gst_structure_has_name(s, name))
    return FALSE;
  if (slide_id)
    *slide_id = gst_structure_get_string(s, "slide-id");
  return TRUE;
}

gboolean gst_mexd_event_is_slide_start(GstEvent *ev, const gchar **slide_id)
{
  return event_is(ev, GST_MEXD_SLIDE_START, slide_id);
}

gboolean gst_mexd_event_is_slide_end(GstEvent *ev, const gchar **slide_id)
{
  return event_is(ev, GST_MEXD_SLIDE_END, slide_id);
}

gchar **gst_mexd_split_locations(const gchar *location)
{
  g_auto(GStrv) parts = g_strsplit(location ? location : "", ";", -1);
  GStrvBuilder *b = g_strv_builder_new();
  for (int i = 0; parts[i]; i++)
    if (*parts[i])
      g_strv_builder_add(b, parts[i]);
  gchar **out = g_strv_builder_end(b);
  g_strv_builder_unref(b);
  return out;
}

/* ---- the mexd-result message ---- */

static void set_doubles(GstStructure *s, const char *name, const double *v, int n)
{
  if (!v)
    return; /* absent: no diffusion */
  GValue arr = G_VALUE_INIT;
  g_value_init(&arr, GST_TYPE_ARRAY);
  for (int i = 0; i < n; i++) {
    GValue d = G_VALUE_INIT;
    g_value_init(&d, G_TYPE_DOUBLE);
    g_value_set_double(&d, v[i]);
    gst_value_array_append_and_take_value(&arr, &d);
  }
  gst_structure_take_value(s, name, &arr);
}

GstStructure *gst_mexd_result_to_structure(const MexdSlideResult *r)
{
  GstStructure *s = gst_structure_new(
      "mexd-result", "slide-id", G_TYPE_STRING, r->slide_id ? r->slide_id : "", "schema",
      G_TYPE_STRING, MEXD_RESULT_SCHEMA, "class", G_TYPE_STRING, r->classes[r->class_index],
      "class-index", G_TYPE_INT, r->class_index, "tiles", G_TYPE_INT64, r->tiles, "steps",
      G_TYPE_INT, r->steps, "chains", G_TYPE_INT, r->chains, "seed", G_TYPE_UINT64, r->seed,
      "eta", G_TYPE_DOUBLE, r->eta, "ms-adapter1", G_TYPE_DOUBLE, r->ms_adapter1, "ms-moe",
      G_TYPE_DOUBLE, r->ms_moe, "ms-diffusion", G_TYPE_DOUBLE, r->ms_diffusion, "seconds",
      G_TYPE_DOUBLE, r->seconds, NULL);
  if (r->path)
    gst_structure_set(s, "path", G_TYPE_STRING, r->path, NULL);
  if (r->sampler)
    gst_structure_set(s, "sampler", G_TYPE_STRING, r->sampler, NULL);
  if (r->mode)
    gst_structure_set(s, "mode", G_TYPE_STRING, r->mode, NULL);
  if (r->device)
    gst_structure_set(s, "device", G_TYPE_STRING, r->device, NULL);
  GValue classes = G_VALUE_INIT;
  g_value_init(&classes, GST_TYPE_ARRAY);
  for (int c = 0; c < r->n_classes; c++) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_STRING);
    g_value_set_string(&v, r->classes[c]);
    gst_value_array_append_and_take_value(&classes, &v);
  }
  gst_structure_take_value(s, "classes", &classes);
  set_doubles(s, "probabilities", r->probabilities, r->n_classes);
  set_doubles(s, "spread", r->spread, r->n_classes);
  set_doubles(s, "prior", r->prior, r->n_classes);
  return s;
}

static double *get_doubles(const GstStructure *s, const char *name, int n, gboolean *ok)
{
  const GValue *v = gst_structure_get_value(s, name);
  if (!v)
    return NULL;
  if (!GST_VALUE_HOLDS_ARRAY(v) || (int)gst_value_array_get_size(v) != n) {
    *ok = FALSE;
    return NULL;
  }
  double *d = g_new(double, MAX(n, 1));
  for (int i = 0; i < n; i++) {
    const GValue *e = gst_value_array_get_value(v, (guint)i);
    if (!G_VALUE_HOLDS_DOUBLE(e)) {
      *ok = FALSE;
      g_free(d);
      return NULL;
    }
    d[i] = g_value_get_double(e);
  }
  return d;
}

MexdSlideResult *gst_mexd_result_from_structure(const GstStructure *s, GError **error)
{
  if (!s || !gst_structure_has_name(s, "mexd-result"))
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "not a mexd-result message");
  g_autoptr(MexdSlideResult) r = g_new0(MexdSlideResult, 1);
  r->slide_id = g_strdup(gst_structure_get_string(s, "slide-id"));
  r->path = g_strdup(gst_structure_get_string(s, "path"));
  r->sampler = g_strdup(gst_structure_get_string(s, "sampler"));
  r->mode = g_strdup(gst_structure_get_string(s, "mode"));
  r->device = g_strdup(gst_structure_get_string(s, "device"));
  const GValue *cv = gst_structure_get_value(s, "classes");
  gboolean ok = cv && GST_VALUE_HOLDS_ARRAY(cv) && gst_value_array_get_size(cv) > 0;
  if (ok) {
    r->n_classes = (int)gst_value_array_get_size(cv);
    r->classes = g_new0(char *, r->n_classes + 1);
    for (int c = 0; ok && c < r->n_classes; c++) {
      const GValue *e = gst_value_array_get_value(cv, (guint)c);
      ok = G_VALUE_HOLDS_STRING(e) && g_value_get_string(e);
      if (ok)
        r->classes[c] = g_value_dup_string(e);
    }
  }
  ok = ok && gst_structure_get_int(s, "class-index", &r->class_index) &&
       gst_structure_get_int64(s, "tiles", &r->tiles) &&
       gst_structure_get_int(s, "steps", &r->steps) &&
       gst_structure_get_int(s, "chains", &r->chains) &&
       gst_structure_get_uint64(s, "seed", &r->seed) &&
       gst_structure_get_double(s, "eta", &r->eta) &&
       gst_structure_get_double(s, "ms-adapter1", &r->ms_adapter1) &&
       gst_structure_get_double(s, "ms-moe", &r->ms_moe) &&
       gst_structure_get_double(s, "ms-diffusion", &r->ms_diffusion);
  gst_structure_get_double(s, "seconds", &r->seconds);
  if (ok) {
    r->probabilities = get_doubles(s, "probabilities", r->n_classes, &ok);
    r->spread = get_doubles(s, "spread", r->n_classes, &ok);
    r->prior = get_doubles(s, "prior", r->n_classes, &ok);
  }
  if (!ok)
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "slide %s: an incomplete mexd-result message",
                          r->slide_id ? r->slide_id : "?");
  if (!mexd_slide_result_check(r, error))
    return NULL;
  return g_steal_pointer(&r);
}
