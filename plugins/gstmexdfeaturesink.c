/**
 * SECTION:element-mexdfeaturesink
 * @title: mexdfeaturesink
 *
 * Writes each slide's features as a CLAM-layout HDF5 file: dataset `features` (N × D float32)
 * and `coords` (N × 2, level-0 x, y from the tiles' #GstMexdTileMeta, with patch_size and
 * patch_level attributes).  A slide ends at `mexd/slide-end` or EOS; its file is written then
 * (atomically: a file is never left half-written).  `location` names the file; a `%s` in it is
 * replaced by the slide id, which is needed when the stream carries several slides.  The files
 * are what `mexd forward --features`, `mexdfeaturesrc` and CLAM-style training read.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 openslidesrc location="a.svs;b.svs" ! mexdembed model=resnet50.safetensors ! \
 *     mexdfeaturesink location=features/%s.h5
 * ]|
 */
#include "gstmexdfeaturesink.h"

#include "gstmexdmeta.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_feature_sink_debug);
#define GST_CAT_DEFAULT gst_mexd_feature_sink_debug

struct _GstMexdFeatureSink {
  GstBaseSink parent;
  gchar *location;
  gint64 dim;
  gchar *slide_id;   /* the current slide (from slide-start or the first tile's meta) */
  gchar *slide_file; /* its file (from slide-start), never to be overwritten */
  GArray *features;  /* float */
  GArray *coords;    /* int32 pairs */
  gboolean have_coords;
  gint patch_size, patch_level;
  guint written;
  gchar *last_path;
};

enum { PROP_0, PROP_LOCATION, PROP_LAST_FILE };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32"));

G_DEFINE_TYPE(GstMexdFeatureSink, gst_mexd_feature_sink, GST_TYPE_BASE_SINK)

static void reset_slide(GstMexdFeatureSink *self)
{
  g_array_set_size(self->features, 0);
  g_array_set_size(self->coords, 0);
  self->have_coords = TRUE;
  self->patch_size = self->patch_level = -1;
  g_clear_pointer(&self->slide_id, g_free);
  g_clear_pointer(&self->slide_file, g_free);
}

static gboolean gst_mexd_feature_sink_start(GstBaseSink *bs)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  if (!self->location || !*self->location) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                      ("No output file given: set location (a %%s in it becomes the slide id)."),
                      (NULL));
    return FALSE;
  }
  self->features = g_array_new(FALSE, FALSE, sizeof(float));
  self->coords = g_array_new(FALSE, FALSE, sizeof(int32_t));
  self->written = 0;
  reset_slide(self);
  return TRUE;
}

static gboolean gst_mexd_feature_sink_stop(GstBaseSink *bs)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  g_clear_pointer(&self->features, g_array_unref);
  g_clear_pointer(&self->coords, g_array_unref);
  g_clear_pointer(&self->slide_id, g_free);
  return TRUE;
}

static gboolean gst_mexd_feature_sink_set_caps(GstBaseSink *bs, GstCaps *caps)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  const GstStructure *s = gst_caps_get_structure(caps, 0);
  const char *dims = gst_structure_get_string(s, "dimensions");
  gint di;
  g_autofree char *dims_int = NULL;
  if (!dims && gst_structure_get_int(s, "dimensions", &di)) /* "dimensions=3" parses as an int */
    dims = dims_int = g_strdup_printf("%d", di);
  gint64 d = dims ? g_ascii_strtoll(dims, NULL, 10) : 0;
  if (!dims || d < 1 || strchr(dims, ':') || strchr(dims, ',')) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                      ("mexdfeaturesink takes one float32 vector per tile (dimensions=D), not "
                       "dimensions=%s.",
                       dims ? dims : "(none)"),
                      (NULL));
    return FALSE;
  }
  if (self->features && self->features->len && d != self->dim) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                      ("The feature size changed from %" G_GINT64_FORMAT " to %" G_GINT64_FORMAT
                       " within a slide.",
                       self->dim, d),
                      (NULL));
    return FALSE;
  }
  self->dim = d;
  return TRUE;
}

/* The output file of the current slide. */
static gchar *slide_path(GstMexdFeatureSink *self)
{
  const char *id = self->slide_id ? self->slide_id : "slide";
  if (!strstr(self->location, "%s"))
    return g_strdup(self->location);
  g_auto(GStrv) parts = g_strsplit(self->location, "%s", -1);
  return g_strjoinv(id, parts);
}

static gboolean write_slide(GstMexdFeatureSink *self)
{
  guint n = self->dim > 0 ? self->features->len / (guint)self->dim : 0;
  if (n == 0) {
    reset_slide(self);
    return TRUE;
  }
  if (self->written > 0 && !strstr(self->location, "%s")) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                      ("A second slide arrived but location \"%s\" has no %%s for the slide id: "
                       "its file would overwrite the first.",
                       self->location),
                      (NULL));
    return FALSE;
  }
  g_autofree gchar *path = slide_path(self);
  MexdBag bag = {.n = n, .d = self->dim, .features = (float *)(void *)self->features->data,
                 .coords = self->have_coords ? (int32_t *)(void *)self->coords->data : NULL,
                 .patch_level = self->patch_level, .patch_size = self->patch_size};
  g_autoptr(GError) error = NULL;
  const char *inputs[] = {self->slide_file, NULL};
  if (!mexd_file_check_output(path, self->slide_file ? inputs : NULL, &error) ||
      !mexd_bag_write_h5(path, &bag, &error)) {
    GST_ELEMENT_ERROR(self, RESOURCE, WRITE, ("%s", error->message), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT(self, "%s: %u features", path, n);
  self->written++;
  GST_OBJECT_LOCK(self);
  g_free(self->last_path);
  self->last_path = g_steal_pointer(&path);
  GST_OBJECT_UNLOCK(self);
  reset_slide(self);
  return TRUE;
}

static GstFlowReturn gst_mexd_feature_sink_render(GstBaseSink *bs, GstBuffer *buf)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  if (gst_buffer_n_memory(buf) != 1 || gst_buffer_get_size(buf) != sizeof(float) * self->dim) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                      ("A feature buffer of %" G_GSIZE_FORMAT " bytes in %u memories; expected "
                       "one of %" G_GINT64_FORMAT " float32.",
                       gst_buffer_get_size(buf), gst_buffer_n_memory(buf), self->dim),
                      (NULL));
    return GST_FLOW_ERROR;
  }
  GstMexdTileMeta *m = gst_buffer_get_mexd_tile_meta(buf);
  if (m && !self->slide_id)
    self->slide_id = g_strdup(m->slide_id);
  GstMapInfo map;
  if (!gst_buffer_map(buf, &map, GST_MAP_READ))
    return GST_FLOW_ERROR;
  g_array_append_vals(self->features, map.data, (guint)self->dim);
  gst_buffer_unmap(buf, &map);
  if (m) {
    int32_t xy[2] = {(int32_t)m->x, (int32_t)m->y};
    g_array_append_vals(self->coords, xy, 2);
    self->patch_size = m->tile_size;
    self->patch_level = m->level;
  } else {
    self->have_coords = FALSE;
  }
  return GST_FLOW_OK;
}

static gboolean gst_mexd_feature_sink_event(GstBaseSink *bs, GstEvent *ev)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  const gchar *id = NULL;
  if (gst_mexd_event_is_slide_start(ev, &id)) {
    if (self->features->len && !write_slide(self)) { /* a slide without an end */
      gst_event_unref(ev);
      return FALSE;
    }
    g_free(self->slide_id);
    self->slide_id = g_strdup(id);
    g_free(self->slide_file);
    self->slide_file = g_strdup(gst_structure_get_string(gst_event_get_structure(ev), "path"));
  } else if (gst_mexd_event_is_slide_end(ev, NULL) || GST_EVENT_TYPE(ev) == GST_EVENT_EOS) {
    if (!write_slide(self)) {
      gst_event_unref(ev);
      return FALSE;
    }
  }
  return GST_BASE_SINK_CLASS(gst_mexd_feature_sink_parent_class)->event(bs, ev);
}

static void gst_mexd_feature_sink_set_property(GObject *object, guint id, const GValue *value,
                                               GParamSpec *pspec)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION) {
    g_free(self->location);
    self->location = g_value_dup_string(value);
  } else {
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_feature_sink_get_property(GObject *object, guint id, GValue *value,
                                               GParamSpec *pspec)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION)
    g_value_set_string(value, self->location);
  else if (id == PROP_LAST_FILE)
    g_value_set_string(value, self->last_path);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_feature_sink_finalize(GObject *object)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(object);
  g_free(self->location);
  g_free(self->last_path);
  G_OBJECT_CLASS(gst_mexd_feature_sink_parent_class)->finalize(object);
}

static void gst_mexd_feature_sink_class_init(GstMexdFeatureSinkClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseSinkClass *bc = GST_BASE_SINK_CLASS(klass);
  oc->set_property = gst_mexd_feature_sink_set_property;
  oc->get_property = gst_mexd_feature_sink_get_property;
  oc->finalize = gst_mexd_feature_sink_finalize;
  g_object_class_install_property(
      oc, PROP_LOCATION,
      g_param_spec_string("location", "Location",
                          "The HDF5 file to write; %s becomes the slide id", NULL,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property(
      oc, PROP_LAST_FILE,
      g_param_spec_string("last-file", "Last file", "The file written last", NULL,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_set_static_metadata(ec, "MExD feature file sink", "Sink/File",
                                        "Writes each slide's tile features as a CLAM HDF5 file",
                                        "mexd developers");
  bc->start = gst_mexd_feature_sink_start;
  bc->stop = gst_mexd_feature_sink_stop;
  bc->set_caps = gst_mexd_feature_sink_set_caps;
  bc->render = gst_mexd_feature_sink_render;
  bc->event = gst_mexd_feature_sink_event;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_feature_sink_debug, "mexdfeaturesink", 0,
                          "MExD feature file sink");
}

static void gst_mexd_feature_sink_init(GstMexdFeatureSink *self)
{
  gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
  gst_base_sink_set_qos_enabled(GST_BASE_SINK(self), FALSE);
}
