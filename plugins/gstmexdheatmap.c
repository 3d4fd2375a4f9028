/**
 * SECTION:element-mexdheatmap
 * @title: mexdheatmap
 *
 * Draws a slide's routing as an RGBA overlay image `width` pixels wide (the slide's aspect): each
 * tissue tile is a rectangle coloured by its score (`score=attention`, the default: adapter #1's
 * class-token attention, where the model looks; `score=gate`: the largest gate of the lesion
 * experts, how lesion-like the Dyn-MoE's routers find it; both from the #GstMexdRoutingMeta of
 * `mexdmoe`'s output, which `mexddiffc` passes through) turned into a percentile over the slide's
 * tiles, as CLAM's heatmaps do, with a blue → red colour map at opacity `alpha`; everything that is
 * not a tile stays transparent.  One `video/x-raw, format=RGBA` frame per slide, so `pngenc !
 * multifilesink` writes it; the caps follow each slide's aspect.  With `thumbnail=true` the overlay
 * is drawn over a thumbnail of the slide (read from the file its `mexd/slide-start` event names)
 * and the frame is opaque: the heatmap.png of `mexd classify`.  A buffer without routing (not
 * mexdmoe's or mexddiffc's output) and a thumbnail that cannot be read are stream errors naming the
 * slide; a `width` or `alpha` out of range is a settings error at the first slide.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 openslidesrc location=slide.svs ! mexdembed model=resnet50.safetensors ! \
 *     mexdmoe model=mexd.safetensors ! mexdheatmap width=2048 ! pngenc ! \
 *     multifilesink location=heatmap-%02d.png
 * ]|
 */
#include "gstmexdheatmap.h"

#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_heatmap_debug);
#define GST_CAT_DEFAULT gst_mexd_heatmap_debug

struct _GstMexdHeatmap {
  GstElement parent;
  GstPad *sinkpad, *srcpad;
  gint width;
  gdouble alpha;
  GstMexdHeatmapScore score;
  gboolean thumbnail; /* over the slide's thumbnail */
  gchar *slide_path;  /* the current slide's file (from mexd/slide-start) */
  gint out_w, out_h; /* the caps sent last */
  GstEvent *segment; /* held until the first caps: sticky events go caps, then segment */
};

enum { PROP_0, PROP_WIDTH, PROP_ALPHA, PROP_SCORE, PROP_THUMBNAIL };

GType gst_mexd_heatmap_score_get_type(void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_MEXD_HEATMAP_SCORE_ATTENTION, "adapter #1's class-token attention (where the model looks)",
       "attention"},
      {GST_MEXD_HEATMAP_SCORE_GATE, "the lesion experts' largest router gate", "gate"},
      {0, NULL, NULL},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstMexdHeatmapScore", values));
  }
  return type;
}

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS("other/tensors"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) RGBA, width = (int) [ 1, 65535 ], "
                    "height = (int) [ 1, 65535 ], framerate = (fraction) 0/1"));

G_DEFINE_TYPE(GstMexdHeatmap, gst_mexd_heatmap, GST_TYPE_ELEMENT)
GST_ELEMENT_REGISTER_DEFINE(mexdheatmap, "mexdheatmap", GST_RANK_NONE, GST_TYPE_MEXD_HEATMAP);

static GstFlowReturn gst_mexd_heatmap_chain(GstPad *pad, GstObject *parent, GstBuffer *in)
{
  (void)pad;
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(parent);
  GstMexdRoutingMeta *rm = gst_buffer_get_mexd_routing_meta(in);
  if (!rm) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                      ("No routing on the buffer: mexdheatmap takes mexdmoe's output (or "
                       "mexddiffc's, which keeps it)."),
                      (NULL));
    gst_buffer_unref(in);
    return GST_FLOW_ERROR;
  }
  if (!gst_mexd_check_ranges(GST_ELEMENT(self))) {
    gst_buffer_unref(in);
    return GST_FLOW_ERROR;
  }
  GST_OBJECT_LOCK(self);
  const int W = self->width;
  const double alpha = self->alpha;
  const gboolean use_gate = self->score == GST_MEXD_HEATMAP_SCORE_GATE;
  const gboolean thumbnail = self->thumbnail;
  g_autofree char *slide = g_strdup(self->slide_path);
  GST_OBJECT_UNLOCK(self);
  g_autoptr(GError) error = NULL;
  int H = 0;
  g_autofree guint8 *rgba =
      mexd_heatmap_render(rm->xy, use_gate ? rm->gate : rm->score, rm->n, rm->tile_extent,
                          rm->width, rm->height, W, alpha, &H, &error);
  if (rgba && thumbnail) {
    /* over the slide's thumbnail (lib/pipeline/heatmap.h), opaque */
    g_autoptr(MexdSlide) s = slide ? mexd_slide_open(slide, &error) : NULL;
    if (!slide)
      g_set_error(&error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND,
                  "thumbnail=true needs the slide's file: no mexd/slide-start event named it");
    g_autofree guint8 *rgb = s ? mexd_heatmap_over_thumbnail(s, rgba, W, H, &error) : NULL;
    if (!rgb)
      g_clear_pointer(&rgba, g_free);
    for (gint64 i = 0; rgb && i < (gint64)W * H; i++) {
      memcpy(rgba + i * 4, rgb + i * 3, 3);
      rgba[i * 4 + 3] = 255;
    }
  }
  if (!rgba) {
    /* an image too large for memory comes from width: a setting; a thumbnail that cannot be
     * read is the slide's */
    GstMexdSlideMeta *sm = gst_buffer_get_mexd_slide_meta(in);
    g_autofree char *prefix =
        g_strdup_printf("Slide %s: cannot draw the heatmap",
                        sm && sm->slide_id && *sm->slide_id ? sm->slide_id : "(unnamed)");
    GST_MEXD_POST_ERROR(
        self, error->code == MEXD_ERROR_NO_MEMORY ? GST_MEXD_FAULT_RESOURCE : GST_MEXD_FAULT_SLIDE,
        error, prefix);
    gst_buffer_unref(in);
    return GST_FLOW_ERROR;
  }
  if (W != self->out_w || H != self->out_h) {
    GstCaps *caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGBA", "width",
                                        G_TYPE_INT, W, "height", G_TYPE_INT, H, "framerate",
                                        GST_TYPE_FRACTION, 0, 1, NULL);
    gboolean ok = gst_pad_push_event(self->srcpad, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    if (!ok) {
      gst_buffer_unref(in);
      return GST_FLOW_NOT_NEGOTIATED;
    }
    self->out_w = W;
    self->out_h = H;
    if (self->segment) {
      gst_pad_push_event(self->srcpad, self->segment);
      self->segment = NULL;
    }
  }
  const gsize size = (gsize)W * H * 4;
  GstBuffer *out = gst_buffer_new_wrapped(g_steal_pointer(&rgba), size);
  gst_buffer_copy_into(out, in, GST_BUFFER_COPY_FLAGS | GST_BUFFER_COPY_TIMESTAMPS, 0, (gsize)-1);
  gst_buffer_unref(in);
  return gst_pad_push(self->srcpad, out);
}

static gboolean gst_mexd_heatmap_sink_event(GstPad *pad, GstObject *parent, GstEvent *ev)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(parent);
  if (GST_EVENT_TYPE(ev) == GST_EVENT_CAPS) { /* ours follow each slide's aspect */
    gst_event_unref(ev);
    return TRUE;
  }
  if (GST_EVENT_TYPE(ev) == GST_EVENT_SEGMENT && self->out_w == 0) {
    gst_event_replace(&self->segment, ev);
    gst_event_unref(ev);
    return TRUE;
  }
  if (GST_EVENT_TYPE(ev) == GST_EVENT_FLUSH_STOP || GST_EVENT_TYPE(ev) == GST_EVENT_STREAM_START)
    self->out_w = self->out_h = 0;
  if (gst_mexd_event_is_slide_start(ev, NULL)) {
    GST_OBJECT_LOCK(self);
    g_free(self->slide_path);
    self->slide_path = g_strdup(gst_structure_get_string(gst_event_get_structure(ev), "path"));
    GST_OBJECT_UNLOCK(self);
  }
  return gst_pad_event_default(pad, GST_OBJECT(self), ev);
}

static gboolean gst_mexd_heatmap_src_query(GstPad *pad, GstObject *parent, GstQuery *q)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(parent);
  if (GST_QUERY_TYPE(q) == GST_QUERY_CAPS) {
    GstCaps *filter, *caps = gst_pad_get_pad_template_caps(pad);
    gst_query_parse_caps(q, &filter);
    if (filter) {
      GstCaps *c = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
      gst_caps_unref(caps);
      caps = c;
    }
    gst_query_set_caps_result(q, caps);
    gst_caps_unref(caps);
    return TRUE;
  }
  return gst_pad_query_default(pad, GST_OBJECT(self), q);
}

static void gst_mexd_heatmap_set_property(GObject *object, guint id, const GValue *value,
                                          GParamSpec *pspec)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_WIDTH)
    self->width = g_value_get_int(value);
  else if (id == PROP_ALPHA)
    self->alpha = g_value_get_double(value);
  else if (id == PROP_SCORE)
    self->score = (GstMexdHeatmapScore)g_value_get_enum(value);
  else if (id == PROP_THUMBNAIL)
    self->thumbnail = g_value_get_boolean(value);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_heatmap_get_property(GObject *object, guint id, GValue *value,
                                          GParamSpec *pspec)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_WIDTH)
    g_value_set_int(value, self->width);
  else if (id == PROP_ALPHA)
    g_value_set_double(value, self->alpha);
  else if (id == PROP_SCORE)
    g_value_set_enum(value, self->score);
  else if (id == PROP_THUMBNAIL)
    g_value_set_boolean(value, self->thumbnail);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_heatmap_finalize(GObject *object)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(object);
  gst_event_replace(&self->segment, NULL);
  g_free(self->slide_path);
  G_OBJECT_CLASS(gst_mexd_heatmap_parent_class)->finalize(object);
}

static void gst_mexd_heatmap_class_init(GstMexdHeatmapClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  oc->finalize = gst_mexd_heatmap_finalize;
  oc->set_property = gst_mexd_heatmap_set_property;
  oc->get_property = gst_mexd_heatmap_get_property;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING;
  g_object_class_install_property(
      oc, PROP_WIDTH,
      gst_mexd_param_spec_int("width", "Width",
                              "Width of the overlay image in pixels (the height "
                              "follows the slide's aspect)",
                              1, 65535, 1024, rw));
  g_object_class_install_property(oc, PROP_ALPHA,
                                  gst_mexd_param_spec_double("alpha", "Alpha",
                                                             "Opacity of the tiles (CLAM: 0.4)", 0,
                                                             1, 0.4, rw));
  g_object_class_install_property(
      oc, PROP_SCORE,
      g_param_spec_enum("score", "Score",
                        "What colours a tile: attention (adapter #1's class-token attention, "
                        "default) or gate (the lesion experts' largest router gate)",
                        GST_TYPE_MEXD_HEATMAP_SCORE, GST_MEXD_HEATMAP_SCORE_ATTENTION, rw));
  g_object_class_install_property(
      oc, PROP_THUMBNAIL,
      g_param_spec_boolean("thumbnail", "Over a thumbnail",
                           "Draw the overlay over a thumbnail of the slide (its file from the "
                           "mexd/slide-start event), opaque: the picture mexd classify saves as "
                           "heatmap.png",
                           FALSE, rw));
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_HEATMAP_SCORE, 0);
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(ec, "MExD routing heatmap", "Filter/Analyzer/Video",
                                        "A slide's Dyn-MoE routing per tile as an RGBA overlay",
                                        "The mexd project");
  GST_DEBUG_CATEGORY_INIT(gst_mexd_heatmap_debug, "mexdheatmap", 0, "MExD routing heatmap");
}

static void gst_mexd_heatmap_init(GstMexdHeatmap *self)
{
  self->width = 1024;
  self->alpha = 0.4;
  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, gst_mexd_heatmap_chain);
  gst_pad_set_event_function(self->sinkpad, gst_mexd_heatmap_sink_event);
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);
  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_query_function(self->srcpad, gst_mexd_heatmap_src_query);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}
