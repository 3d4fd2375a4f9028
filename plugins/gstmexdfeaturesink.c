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
 * Errors: a location that is a folder, in a folder that does not exist, or the slide's own file
 * fails the start (or that slide's write) with a resource error; a second slide when location
 * has no `%s` fails at that slide's start (its file would overwrite the first's); a slide with
 * more tiles than memory holds is a stream error naming it; a `mexd/slide-end` without a
 * `mexd/slide-start`, and a stream that ends before any slide, are errors too.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 openslidesrc location="a.svs;b.svs" ! mexdembed model=resnet50.safetensors ! \
 *     mexdfeaturesink location=features/%s.h5
 * ]|
 */
#include "gstmexdfeaturesink.h"

#include "gstmexdmeta.h"
#include "gstmexdutil.h"
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
  GstMexdArray features; /* float */
  GstMexdArray coords;   /* int32 pairs */
  gboolean have_coords;
  gint patch_size, patch_level;
  guint written;
  gchar *last_path;
  gboolean in_slide;  /* a mexd/slide-start came and its end did not yet */
  gboolean any_slide; /* a slide (its start or a feature) came in this stream */
  gboolean failed;    /* an error was posted: later buffers are refused */
};

enum { PROP_0, PROP_LOCATION, PROP_LAST_FILE };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32"));

G_DEFINE_TYPE(GstMexdFeatureSink, gst_mexd_feature_sink, GST_TYPE_BASE_SINK)
GST_ELEMENT_REGISTER_DEFINE(mexdfeaturesink, "mexdfeaturesink", GST_RANK_NONE, GST_TYPE_MEXD_FEATURE_SINK);

static void reset_slide(GstMexdFeatureSink *self)
{
  gst_mexd_array_reset(&self->features);
  gst_mexd_array_reset(&self->coords);
  self->have_coords = TRUE;
  self->patch_size = self->patch_level = -1;
  g_clear_pointer(&self->slide_id, g_free);
  g_clear_pointer(&self->slide_file, g_free);
}

/* Adds the files an element names: its model and location(s) (a ';' list split too). */
static void add_element_files(MexdInputSet *set, GstElement *e)
{
  static const char *const names[] = {"model", "location", "locations"};
  GObjectClass *klass = G_OBJECT_GET_CLASS(e);
  for (guint k = 0; k < G_N_ELEMENTS(names); k++) {
    GParamSpec *p = g_object_class_find_property(klass, names[k]);
    if (!p || !(p->flags & G_PARAM_READABLE))
      continue;
    if (p->value_type == G_TYPE_STRING) {
      g_autofree char *v = NULL;
      g_object_get(e, names[k], &v, NULL);
      if (!v || !*v)
        continue;
      mexd_input_set_add(set, v);
      g_auto(GStrv) parts = gst_mexd_split_locations(v);
      for (int i = 0; parts[i]; i++)
        mexd_input_set_add(set, parts[i]);
    } else if (p->value_type == G_TYPE_STRV) {
      g_auto(GStrv) v = NULL;
      g_object_get(e, names[k], &v, NULL);
      for (int i = 0; v && v[i]; i++)
        mexd_input_set_add(set, v[i]);
    }
  }
}

/* The files the pipeline reads (every other element's model and location: a backbone, a
 * model, slides, feature files; another sink's output too) and the current slide's file: no
 * feature file is written over one of them. */
static MexdInputSet *pipeline_files(GstMexdFeatureSink *self)
{
  MexdInputSet *set = mexd_input_set_new();
  if (self->slide_file)
    mexd_input_set_add(set, self->slide_file);
  GstObject *top = gst_object_ref(GST_OBJECT(self)), *up;
  while ((up = gst_object_get_parent(top))) {
    gst_object_unref(top);
    top = up;
  }
  if (GST_IS_BIN(top)) {
    GstIterator *it = gst_bin_iterate_recurse(GST_BIN(top));
    GValue item = G_VALUE_INIT;
    gboolean done = FALSE;
    while (!done) {
      switch (gst_iterator_next(it, &item)) {
      case GST_ITERATOR_OK: {
        GstElement *e = g_value_get_object(&item);
        if (e != GST_ELEMENT(self))
          add_element_files(set, e);
        g_value_reset(&item);
        break;
      }
      case GST_ITERATOR_RESYNC: gst_iterator_resync(it); break;
      default: done = TRUE; break;
      }
    }
    g_value_unset(&item);
    gst_iterator_free(it);
  }
  gst_object_unref(top);
  return set;
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
  /* the output is looked at before any slide is computed: not a folder, in one that exists */
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_path_get_dirname(self->location);
  g_autoptr(MexdInputSet) inputs = pipeline_files(self);
  if ((!strstr(self->location, "%s") && !mexd_input_set_check(inputs, self->location, &error)) ||
      (!strstr(dir, "%s") && !mexd_file_check_dir(dir, "folder of location", &error))) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE,
                      ("location %s: %s", self->location, error->message), (NULL));
    return FALSE;
  }
  gst_mexd_array_init(&self->features, sizeof(float));
  gst_mexd_array_init(&self->coords, sizeof(int32_t));
  self->written = 0;
  self->in_slide = self->any_slide = self->failed = FALSE;
  reset_slide(self);
  return TRUE;
}

static gboolean gst_mexd_feature_sink_stop(GstBaseSink *bs)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(bs);
  gst_mexd_array_clear(&self->features);
  gst_mexd_array_clear(&self->coords);
  g_clear_pointer(&self->slide_id, g_free);
  g_clear_pointer(&self->slide_file, g_free);
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
  if (self->features.len && d != self->dim) {
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

/* A second slide where location has no %s would overwrite the first's file. */
static gboolean check_second_slide(GstMexdFeatureSink *self, const char *id)
{
  if (self->written == 0 || strstr(self->location, "%s"))
    return TRUE;
  GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                    ("A second slide (%s) arrived but location \"%s\" has no %%s for the slide "
                     "id: its file would overwrite the first.",
                     id && *id ? id : "(unnamed)", self->location),
                    (NULL));
  return FALSE;
}

static gboolean write_slide(GstMexdFeatureSink *self)
{
  gint64 n = self->dim > 0 ? (gint64)(self->features.len / (gsize)self->dim) : 0;
  if (n == 0) {
    reset_slide(self);
    return TRUE;
  }
  if (!check_second_slide(self, self->slide_id))
    return FALSE;
  g_autofree gchar *path = slide_path(self);
  MexdBag bag = {.n = n,
                 .d = self->dim,
                 .features = (float *)(void *)self->features.data,
                 .coords = self->have_coords ? (int32_t *)(void *)self->coords.data : NULL,
                 .patch_level = self->patch_level,
                 .patch_size = self->patch_size};
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdInputSet) inputs = pipeline_files(self);
  if (!mexd_input_set_check(inputs, path, &error) || !mexd_bag_write_h5(path, &bag, &error)) {
    GST_ELEMENT_ERROR(self, RESOURCE, WRITE, ("%s", error->message), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT(self, "%s: %" G_GINT64_FORMAT " features", path, n);
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
  if (self->failed)
    return GST_FLOW_ERROR;
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
  self->any_slide = TRUE;
  GstMapInfo map;
  if (!gst_buffer_map(buf, &map, GST_MAP_READ)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("A feature buffer could not be read (mapped)."),
                      (NULL));
    return GST_FLOW_ERROR;
  }
  /* a slide has as many tiles as its data says: the arrays grow without aborting */
  g_autoptr(GError) error = NULL;
  int32_t xy[2] = {m ? (int32_t)m->x : -1, m ? (int32_t)m->y : -1};
  gboolean ok = gst_mexd_array_append(&self->features, map.data, (gsize)self->dim,
                                      "the slide's features", &error) &&
                gst_mexd_array_append(&self->coords, xy, 2, "the slide's tile positions", &error);
  gst_buffer_unmap(buf, &map);
  if (!ok) {
    g_autofree gchar *label = gst_mexd_slide_label(self->slide_id, self->slide_file);
    g_autofree char *prefix =
        g_strdup_printf("%s: tile %" G_GSIZE_FORMAT " of %" G_GINT64_FORMAT " float32 features",
                        label, self->features.len / (gsize)self->dim + 1, self->dim);
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, prefix);
    self->failed = TRUE;
    return GST_FLOW_ERROR;
  }
  if (m) {
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
  if (gst_mexd_drop_slide_event_after_error(self->failed, ev))
    return FALSE;
  if (gst_mexd_event_is_slide_start(ev, &id)) {
    if (self->features.len && !write_slide(self)) /* a slide without an end */
      return gst_mexd_refuse_event(&self->failed, ev);
    if (!check_second_slide(self, id))
      return gst_mexd_refuse_event(&self->failed, ev);
    g_free(self->slide_id);
    self->slide_id = g_strdup(id);
    g_free(self->slide_file);
    const char *path = gst_structure_get_string(gst_event_get_structure(ev), "path");
    self->slide_file = path && *path ? g_strdup(path) : NULL;
    self->in_slide = self->any_slide = TRUE;
  } else if (gst_mexd_event_is_slide_end(ev, &id)) {
    if (!self->in_slide) {
      GST_MEXD_POST_ORPHAN_SLIDE_END(self, id);
      return gst_mexd_refuse_event(&self->failed, ev);
    }
    self->in_slide = FALSE;
    if (!write_slide(self))
      return gst_mexd_refuse_event(&self->failed, ev);
  } else if (GST_EVENT_TYPE(ev) == GST_EVENT_EOS && !self->failed) {
    if (!self->any_slide && gst_pad_has_current_caps(GST_BASE_SINK_PAD(self))) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED,
                        ("The stream ended before any slide reached mexdfeaturesink (no "
                         "mexd/slide-start and no feature): no file written."),
                        (NULL));
      return gst_mexd_refuse_event(&self->failed, ev);
    }
    self->in_slide = FALSE;
    if (!write_slide(self))
      return gst_mexd_refuse_event(&self->failed, ev);
  }
  return GST_BASE_SINK_CLASS(gst_mexd_feature_sink_parent_class)->event(bs, ev);
}

static void gst_mexd_feature_sink_set_property(GObject *object, guint id, const GValue *value,
                                               GParamSpec *pspec)
{
  GstMexdFeatureSink *self = GST_MEXD_FEATURE_SINK(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION) {
    gst_mexd_replace_string(&self->location, value);
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
  g_free(self->slide_id);
  g_free(self->slide_file);
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
                                        "The mexd project");
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
