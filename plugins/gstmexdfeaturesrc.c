/**
 * SECTION:element-mexdfeaturesrc
 * @title: mexdfeaturesrc
 *
 * Reads features extracted before — CLAM HDF5 (`features`, `coords`), DSMIL/IBMIL CSV or NumPy
 * `.npy` — and sends them as the feature stream `mexdembed` would: one float32 vector per
 * buffer with a #GstMexdTileMeta (level-0 coordinates when the file has them), between
 * `mexd/slide-start` and `mexd/slide-end`.  `location` may list several files separated by ';'
 * (one slide each, its id the file name without extension); all must have the same feature size.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m mexdfeaturesrc location="a.h5;b.h5" ! mexdmoe model=mexd.safetensors ! \
 *     mexddiffc model=mexd.safetensors ! fakesink
 * ]|
 */
#include "gstmexdfeaturesrc.h"

#include "gstmexdmeta.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_feature_src_debug);
#define GST_CAT_DEFAULT gst_mexd_feature_src_debug

struct _GstMexdFeatureSrc {
  GstPushSrc parent;
  gchar *location;
  gchar **paths;
  guint next_path;
  MexdBag *bag; /* the current file's */
  gchar *slide_id;
  gint64 next_row;
  gint64 dim;
  gboolean segment_sent;
};

enum { PROP_0, PROP_LOCATION };

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32, framerate = (fraction) 0/1"));

G_DEFINE_TYPE(GstMexdFeatureSrc, gst_mexd_feature_src, GST_TYPE_PUSH_SRC)

static gchar *slide_id_of(const char *path)
{
  gchar *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return base;
}

static gboolean gst_mexd_feature_src_start(GstBaseSrc *bs)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(bs);
  g_strfreev(self->paths);
  self->paths = gst_mexd_split_locations(self->location);
  if (!self->paths[0]) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                      ("No feature file given: set location (several: separated by ';')."),
                      (NULL));
    return FALSE;
  }
  self->next_path = 0;
  self->segment_sent = FALSE;
  /* the first file fixes the feature size of the caps */
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBag) first = mexd_bag_read(self->paths[0], MEXD_BAG_AUTO, &error);
  if (!first) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("%s", error->message), (NULL));
    return FALSE;
  }
  self->dim = first->d;
  return TRUE;
}

static gboolean gst_mexd_feature_src_stop(GstBaseSrc *bs)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(bs);
  g_clear_pointer(&self->bag, mexd_bag_free);
  g_clear_pointer(&self->slide_id, g_free);
  g_clear_pointer(&self->paths, g_strfreev);
  self->dim = 0;
  return TRUE;
}

static GstCaps *gst_mexd_feature_src_get_caps(GstBaseSrc *bs, GstCaps *filter)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(bs);
  GstCaps *caps = gst_static_pad_template_get_caps(&src_template);
  if (self->dim > 0) {
    caps = gst_caps_make_writable(caps);
    g_autofree char *d = g_strdup_printf("%" G_GINT64_FORMAT, self->dim);
    gst_caps_set_simple(caps, "dimensions", G_TYPE_STRING, d, NULL);
  }
  if (filter) {
    GstCaps *c = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(caps);
    caps = c;
  }
  return caps;
}

static GstFlowReturn gst_mexd_feature_src_create(GstPushSrc *ps, GstBuffer **out)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(ps);
  GstPad *pad = GST_BASE_SRC_PAD(ps);
  for (;;) {
    if (!self->bag) {
      const char *path = self->paths[self->next_path];
      if (!path)
        return GST_FLOW_EOS;
      self->next_path++;
      g_autoptr(GError) error = NULL;
      self->bag = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
      if (!self->bag) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("%s", error->message), (NULL));
        return GST_FLOW_ERROR;
      }
      if (self->bag->d != self->dim) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("%s has %" G_GINT64_FORMAT "-dimensional features, the files before "
                           "it %" G_GINT64_FORMAT ": one stream takes one feature size.",
                           path, self->bag->d, self->dim),
                          (NULL));
        return GST_FLOW_ERROR;
      }
      g_free(self->slide_id);
      self->slide_id = slide_id_of(path);
      self->next_row = 0;
      if (!self->segment_sent) {
        gst_pad_push_event(pad, gst_event_new_segment(&GST_BASE_SRC(ps)->segment));
        self->segment_sent = TRUE;
      }
      gst_pad_push_event(pad, gst_mexd_event_new_slide_start(self->slide_id, path, 0, 0, 0,
                                                             self->bag->patch_size,
                                                             self->bag->n));
    }
    if (self->next_row < self->bag->n) {
      gint64 i = self->next_row++;
      gsize nb = sizeof(float) * self->dim;
      GstBuffer *buf = gst_buffer_new_allocate(NULL, nb, NULL);
      gst_buffer_fill(buf, 0, self->bag->features + i * self->dim, nb);
      const int32_t *c = self->bag->coords ? self->bag->coords + 2 * i : NULL;
      gst_buffer_add_mexd_tile_meta(buf, self->slide_id, MAX(self->bag->patch_level, 0),
                                    c ? c[0] : -1, c ? c[1] : -1, MAX(self->bag->patch_size, 0),
                                    0, 0, i);
      GST_BUFFER_OFFSET(buf) = (guint64)i;
      *out = buf;
      return GST_FLOW_OK;
    }
    gst_pad_push_event(pad, gst_mexd_event_new_slide_end(self->slide_id, self->bag->n));
    g_clear_pointer(&self->bag, mexd_bag_free);
  }
}

static void gst_mexd_feature_src_set_property(GObject *object, guint id, const GValue *value,
                                              GParamSpec *pspec)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION) {
    g_free(self->location);
    self->location = g_value_dup_string(value);
  } else {
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_feature_src_get_property(GObject *object, guint id, GValue *value,
                                              GParamSpec *pspec)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION)
    g_value_set_string(value, self->location);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_feature_src_finalize(GObject *object)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(object);
  g_free(self->location);
  g_strfreev(self->paths);
  g_free(self->slide_id);
  mexd_bag_free(self->bag);
  G_OBJECT_CLASS(gst_mexd_feature_src_parent_class)->finalize(object);
}

static void gst_mexd_feature_src_class_init(GstMexdFeatureSrcClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseSrcClass *bc = GST_BASE_SRC_CLASS(klass);
  GstPushSrcClass *pc = GST_PUSH_SRC_CLASS(klass);
  oc->set_property = gst_mexd_feature_src_set_property;
  oc->get_property = gst_mexd_feature_src_get_property;
  oc->finalize = gst_mexd_feature_src_finalize;
  g_object_class_install_property(
      oc, PROP_LOCATION,
      g_param_spec_string("location", "Location",
                          "Feature files (CLAM .h5, DSMIL .csv, .npy), several separated by ';'",
                          NULL,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(ec, "MExD feature file source", "Source/File",
                                        "Reads slides' tile features extracted before (CLAM "
                                        "HDF5, DSMIL CSV, NumPy)",
                                        "mexd developers");
  bc->start = gst_mexd_feature_src_start;
  bc->stop = gst_mexd_feature_src_stop;
  bc->get_caps = gst_mexd_feature_src_get_caps;
  pc->create = gst_mexd_feature_src_create;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_feature_src_debug, "mexdfeaturesrc", 0,
                          "MExD feature file source");
}

static void gst_mexd_feature_src_init(GstMexdFeatureSrc *self)
{
  gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
}
