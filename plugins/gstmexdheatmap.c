/**
 * SECTION:element-mexdheatmap
 * @title: mexdheatmap
 *
 * Draws a slide's routing as an RGBA overlay image `width` pixels wide (the slide's aspect): each
 * tissue tile is a rectangle coloured by its score (`score=attention`, the default: adapter #1's
 * class-token attention, where the model looks; `score=gate`: the largest gate of the lesion
 * experts, how lesion-like the Dyn-MoE's routers find it; both from the #GstMexdRoutingMeta of
 * `mexdmoe`'s output, which `mexddiffc` passes through) turned into a percentile over the slide's tiles, as CLAM's heatmaps do, with a
 * blue → red colour map at opacity `alpha`; everything that is not a tile stays transparent.  One
 * `video/x-raw, format=RGBA` frame per slide, so `pngenc ! multifilesink` writes it; the caps
 * follow each slide's aspect.
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
  gboolean use_gate; /* score=gate: the routers' gates instead of the attention */
  gint out_w, out_h; /* the caps sent last */
  GstEvent *segment; /* held until the first caps: sticky events go caps, then segment */
};

enum { PROP_0, PROP_WIDTH, PROP_ALPHA, PROP_SCORE };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS("other/tensors"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) RGBA, width = (int) [ 1, 65535 ], "
                    "height = (int) [ 1, 65535 ], framerate = (fraction) 0/1"));

G_DEFINE_TYPE(GstMexdHeatmap, gst_mexd_heatmap, GST_TYPE_ELEMENT)

/* A blue → cyan → yellow → red map of v in [0, 1]. */
static void colour(double v, guint8 rgb[3])
{
  double r = CLAMP(1.5 - fabs(4 * v - 3), 0, 1), g = CLAMP(1.5 - fabs(4 * v - 2), 0, 1),
         b = CLAMP(1.5 - fabs(4 * v - 1), 0, 1);
  rgb[0] = (guint8)lround(255 * r);
  rgb[1] = (guint8)lround(255 * g);
  rgb[2] = (guint8)lround(255 * b);
}

static int cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

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
  gint64 sw = rm->width, sh = rm->height, ext = MAX(rm->tile_extent, (gint64)1);
  if (sw <= 0 || sh <= 0) /* without the slide's size: the tiles' extent */
    for (gint64 i = 0; i < rm->n; i++) {
      sw = MAX(sw, (gint64)rm->xy[2 * i] + ext);
      sh = MAX(sh, (gint64)rm->xy[2 * i + 1] + ext);
    }
  const int W = self->width;
  const double scale = (double)W / (double)MAX(sw, (gint64)1);
  const int H = (int)CLAMP(ceil(sh * scale), 1, 65535);
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
  /* percentile of each score among the slide's tiles (the fraction at or below it) */
  const gfloat *sc = self->use_gate ? rm->gate : rm->score;
  float *sorted = g_memdup2(sc, sizeof(float) * MAX(rm->n, (gint64)1));
  qsort(sorted, (size_t)rm->n, sizeof(float), cmp_float);
  GstBuffer *out = gst_buffer_new_allocate(NULL, (gsize)W * H * 4, NULL);
  GstMapInfo map;
  gst_buffer_map(out, &map, GST_MAP_WRITE);
  memset(map.data, 0, map.size);
  const guint8 a = (guint8)lround(255 * self->alpha);
  for (gint64 i = 0; i < rm->n; i++) {
    if (rm->xy[2 * i] < 0)
      continue;
    gint64 lo = 0, hi = rm->n; /* count of scores <= score[i] */
    while (lo < hi) {
      gint64 mid = (lo + hi) / 2;
      if (sorted[mid] <= sc[i])
        lo = mid + 1;
      else
        hi = mid;
    }
    guint8 rgb[3];
    colour((double)lo / (double)rm->n, rgb);
    int x0 = (int)floor(rm->xy[2 * i] * scale), y0 = (int)floor(rm->xy[2 * i + 1] * scale);
    int x1 = (int)ceil((rm->xy[2 * i] + ext) * scale), y1 = (int)ceil((rm->xy[2 * i + 1] + ext) * scale);
    for (int y = MAX(y0, 0); y < MIN(y1, H); y++)
      for (int x = MAX(x0, 0); x < MIN(x1, W); x++) {
        guint8 *p = map.data + ((size_t)y * W + x) * 4;
        p[0] = rgb[0];
        p[1] = rgb[1];
        p[2] = rgb[2];
        p[3] = a;
      }
  }
  gst_buffer_unmap(out, &map);
  g_free(sorted);
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
  else if (id == PROP_SCORE) {
    const char *v = g_value_get_string(value);
    if (v && !strcmp(v, "gate"))
      self->use_gate = TRUE;
    else if (!v || !strcmp(v, "attention"))
      self->use_gate = FALSE;
    else
      g_warning("mexdheatmap: score must be attention or gate, not \"%s\"", v);
  } else
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
    g_value_set_string(value, self->use_gate ? "gate" : "attention");
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_heatmap_finalize(GObject *object)
{
  GstMexdHeatmap *self = GST_MEXD_HEATMAP(object);
  gst_event_replace(&self->segment, NULL);
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
      g_param_spec_int("width", "Width", "Width of the overlay image in pixels (the height "
                       "follows the slide's aspect)", 1, 65535, 1024, rw));
  g_object_class_install_property(
      oc, PROP_ALPHA,
      g_param_spec_double("alpha", "Alpha", "Opacity of the tiles (CLAM: 0.4)", 0, 1, 0.4, rw));
  g_object_class_install_property(
      oc, PROP_SCORE,
      g_param_spec_string("score", "Score",
                          "What colours a tile: attention (adapter #1's class-token attention, "
                          "default) or gate (the lesion experts' largest router gate)",
                          "attention", rw));
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(ec, "MExD routing heatmap", "Filter/Analyzer/Video",
                                        "A slide's Dyn-MoE routing per tile as an RGBA overlay",
                                        "mexd developers");
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
