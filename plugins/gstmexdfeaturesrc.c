/**
 * SECTION:element-mexdfeaturesrc
 * @title: mexdfeaturesrc
 *
 * Reads features extracted before — CLAM HDF5 (`features`, `coords`), DSMIL/IBMIL CSV or NumPy
 * `.npy` — and sends them as the feature stream `mexdembed` would: one float32 vector per
 * buffer with a #GstMexdTileMeta (level-0 coordinates when the file has them), between
 * `mexd/slide-start` and `mexd/slide-end`.  `location` may list several files separated by ';'
 * (one slide each, its id the file name without extension); all must have the same feature size.
 * Every listed file is checked when the element starts (a missing file, a folder or a FIFO fails
 * the start with a message naming it) and the first one is read there (it gives the caps; a
 * feature size the next element does not take fails the start too, naming the file and both
 * sizes).  A file that is not a feature file, holds a value that is not finite (NaN, Inf), or
 * whose feature size differs from the first's, is a stream error naming it.  The features are sent
 * without a copy (each buffer holds a reference to its file's features).
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m mexdfeaturesrc location="a.h5;b.h5" ! mexdmoe model=mexd.safetensors ! \
 *     mexddiffc model=mexd.safetensors ! fakesink
 * ]|
 */
#include "gstmexdfeaturesrc.h"

#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_feature_src_debug);
#define GST_CAT_DEFAULT gst_mexd_feature_src_debug

struct _GstMexdFeatureSrc {
  GstPushSrc parent;
  gchar *location;
  gchar **paths;
  guint next_path;
  struct BagRef *bag;     /* the current file's features (shared with the buffers sent) */
  gboolean start_pending; /* its slide-start is not sent yet */
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
GST_ELEMENT_REGISTER_DEFINE(mexdfeaturesrc, "mexdfeaturesrc", GST_RANK_NONE, GST_TYPE_MEXD_FEATURE_SRC);

/* A bag with a reference count: the buffers wrap its rows instead of copying them, so a file's
 * features are in memory once however many tiles are in flight. */
typedef struct BagRef {
  MexdBag *bag;
} BagRef;

static void bag_ref_clear(gpointer p)
{
  mexd_bag_free(((BagRef *)p)->bag);
}

static void bag_unref(gpointer p)
{
  g_atomic_rc_box_release_full(p, bag_ref_clear);
}

static BagRef *bag_ref_new(MexdBag *bag)
{
  BagRef *r = g_atomic_rc_box_new0(BagRef);
  r->bag = bag;
  return r;
}

static gchar *slide_id_of(const char *path)
{
  gchar *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return base;
}

static GstCaps *gst_mexd_feature_src_get_caps(GstBaseSrc *bs, GstCaps *filter);

/* A feature file's bag, its values checked: a NaN or Inf is the file's error (naming it, the
 * instance and the feature), before it reaches a model. */
static MexdBag *read_bag(const char *path, GError **error)
{
  g_autoptr(MexdBag) bag = mexd_bag_read(path, MEXD_BAG_AUTO, error);
  if (!bag)
    return NULL;
  g_autoptr(GError) e = NULL;
  if (!mexd_bag_check_finite(bag, &e)) {
    g_set_error(error, e->domain, e->code, "%s: %s", path, e->message);
    return NULL;
  }
  return g_steal_pointer(&bag);
}

/* The features do not fit the next element: names the file, its feature size and what the
 * next element takes (`peer`, NULL: asked here). */
static void post_no_fit(GstMexdFeatureSrc *self, const char *path, GstCaps *peer)
{
  GstCaps *p = peer ? gst_caps_ref(peer) : gst_pad_peer_query_caps(GST_BASE_SRC_PAD(self), NULL);
  g_autofree char *want = p ? gst_caps_to_string(p) : g_strdup("nothing");
  if (p)
    gst_caps_unref(p);
  GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                    ("%s: its %" G_GINT64_FORMAT "-dimensional float32 features do not fit the "
                     "next element, which takes %s (a model for another backbone, or an element "
                     "that takes no features).",
                     path, self->dim, want),
                    (NULL));
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
  /* every file is looked at before any is opened (a FIFO would block the open) */
  g_autoptr(GError) error = NULL;
  for (int i = 0; self->paths[i]; i++)
    if (!mexd_file_check_regular(self->paths[i], "feature file", &error)) {
      GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, "location");
      return FALSE;
    }
  /* the first file fixes the feature size of the caps; it is the first slide sent */
  MexdBag *first = read_bag(self->paths[0], &error);
  if (!first) {
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, NULL);
    return FALSE;
  }
  self->dim = first->d;
  /* the elements downstream have started: a feature size they do not take fails here, in
   * the state change, rather than at negotiation in the streaming thread (an application, and
   * gst-launch-1.0, learn of it as the start's failure) */
  GstCaps *ours = gst_mexd_feature_src_get_caps(bs, NULL);
  GstCaps *peer = gst_pad_peer_query_caps(GST_BASE_SRC_PAD(bs), NULL);
  const gboolean fits = !peer || gst_caps_can_intersect(ours, peer);
  if (!fits)
    post_no_fit(self, self->paths[0], peer);
  gst_caps_unref(ours);
  if (peer)
    gst_caps_unref(peer);
  if (!fits) {
    mexd_bag_free(first);
    self->dim = 0;
    return FALSE;
  }
  g_clear_pointer(&self->bag, bag_unref);
  self->bag = bag_ref_new(first);
  g_free(self->slide_id);
  self->slide_id = slide_id_of(self->paths[0]);
  self->next_row = 0;
  self->next_path = 1;
  self->start_pending = TRUE;
  return TRUE;
}

static gboolean gst_mexd_feature_src_stop(GstBaseSrc *bs)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(bs);
  g_clear_pointer(&self->bag, bag_unref);
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

/* Features that do not fit downstream (another model's feature size): the message names the
 * file and both sizes, before GstBaseSrc's "not-negotiated". */
static gboolean gst_mexd_feature_src_negotiate(GstBaseSrc *bs)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(bs);
  if (GST_BASE_SRC_CLASS(gst_mexd_feature_src_parent_class)->negotiate(bs))
    return TRUE;
  post_no_fit(self, self->paths && self->next_path > 0 ? self->paths[self->next_path - 1] : "",
              NULL);
  return FALSE;
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
      MexdBag *bag = read_bag(path, &error);
      if (!bag) {
        GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, NULL);
        return GST_FLOW_ERROR;
      }
      if (bag->d != self->dim) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("%s has %" G_GINT64_FORMAT "-dimensional features, the files before "
                           "it %" G_GINT64_FORMAT ": one stream takes one feature size.",
                           path, bag->d, self->dim),
                          (NULL));
        mexd_bag_free(bag);
        return GST_FLOW_ERROR;
      }
      self->bag = bag_ref_new(bag);
      g_free(self->slide_id);
      self->slide_id = slide_id_of(path);
      self->next_row = 0;
      self->start_pending = TRUE;
    }
    const MexdBag *bag = self->bag->bag;
    if (self->start_pending) {
      self->start_pending = FALSE;
      if (!self->segment_sent) {
        gst_pad_push_event(pad, gst_event_new_segment(&GST_BASE_SRC(ps)->segment));
        self->segment_sent = TRUE;
      }
      gst_pad_push_event(pad, gst_mexd_event_new_slide_start(self->slide_id,
                                                             self->paths[self->next_path - 1], 0, 0,
                                                             0, bag->patch_size, bag->n));
    }
    if (self->next_row < bag->n) {
      gint64 i = self->next_row++;
      gsize nb = sizeof(float) * self->dim;
      /* the row itself, read-only, holding a reference to its file's features */
      GstBuffer *buf =
          gst_buffer_new_wrapped_full(GST_MEMORY_FLAG_READONLY, bag->features + i * self->dim, nb,
                                      0, nb, g_atomic_rc_box_acquire(self->bag), bag_unref);
      const int32_t *c = bag->coords ? bag->coords + 2 * i : NULL;
      gst_buffer_add_mexd_tile_meta(buf, self->slide_id, MAX(bag->patch_level, 0), c ? c[0] : -1,
                                    c ? c[1] : -1, MAX(bag->patch_size, 0), 0, 0, i);
      GST_BUFFER_OFFSET(buf) = (guint64)i;
      *out = buf;
      return GST_FLOW_OK;
    }
    gst_pad_push_event(pad, gst_mexd_event_new_slide_end(self->slide_id, bag->n));
    g_clear_pointer(&self->bag, bag_unref);
  }
}

static void gst_mexd_feature_src_set_property(GObject *object, guint id, const GValue *value,
                                              GParamSpec *pspec)
{
  GstMexdFeatureSrc *self = GST_MEXD_FEATURE_SRC(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_LOCATION) {
    gst_mexd_replace_string(&self->location, value);
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
  g_clear_pointer(&self->bag, bag_unref);
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
                                        "The mexd project");
  bc->start = gst_mexd_feature_src_start;
  bc->stop = gst_mexd_feature_src_stop;
  bc->get_caps = gst_mexd_feature_src_get_caps;
  bc->negotiate = gst_mexd_feature_src_negotiate;
  pc->create = gst_mexd_feature_src_create;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_feature_src_debug, "mexdfeaturesrc", 0,
                          "MExD feature file source");
}

static void gst_mexd_feature_src_init(GstMexdFeatureSrc *self)
{
  gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
}
