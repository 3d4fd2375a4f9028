/**
 * SECTION:element-mexdmoe
 * @title: mexdmoe
 *
 * Collects a slide's tile features (any number; one float32 vector per buffer, the feature size
 * of the model) and, at `mexd/slide-end` or EOS, runs MExD's adapter #1 (TransMIL), the Dynamic
 * Mixture-of-Experts and adapter #2 over them.  It sends one buffer per slide: `other/tensors`
 * with two float32 tensors, the prior ρ [classes] and the insight Z [width] (one memory each),
 * carrying a #GstMexdSlideMeta (slide id, tile count, time of each stage) and a
 * #GstMexdRoutingMeta (each tile's position and routing: which experts selected it, its
 * attention (adapter #1's class token: where the model looks) and its gate (the largest of the
 * lesion experts' router gates)) — what `mexddiffc` classifies and `mexdheatmap` draws.  The
 * slide end follows it downstream.  A slide without tiles gives no buffer (a
 * warning is posted).  `mode` chooses the routing: `auto` (the model file's), `paper` or
 * `official`.
 *
 * Errors: features that are not finite (NaN, Inf), or more tiles than memory holds, fail with a
 * stream error naming the slide (the slide's data: `mexd classify` goes on with the next); a
 * model file that cannot be loaded with a resource error; features of another size than the
 * model's, or a next element that does not take its prior and insight (mexddiffc with another
 * model), with a negotiation error naming both.  Events out of order — a `mexd/slide-end`
 * without a `mexd/slide-start`, or for another slide — are a core error; a stream that ends
 * before any slide (no slide-start and no tile) reached the element is a stream error.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m mexdfeaturesrc location=slide.h5 ! mexdmoe model=mexd.safetensors ! \
 *     mexddiffc model=mexd.safetensors ! fakesink
 * ]|
 */
#include "gstmexdmoe.h"

#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_moe_debug);
#define GST_CAT_DEFAULT gst_mexd_moe_debug

struct _GstMexdMoe {
  GstMexdFilter parent; /* the model and device properties, the device (gstmexdfilter.h) */
  GstMexdMoeMode mode;
  MexdModel *m;
  gint64 dim;
  GstMexdArray features; /* float: the current slide's */
  GstMexdArray xy;       /* int32 pairs: each tile's level-0 top-left (−1 without meta) */
  gint64 tile_extent, slide_w, slide_h;
  gchar *slide_id, *slide_path;
  GstClockTime pts;
  gboolean in_slide;  /* a mexd/slide-start came and its end did not yet */
  gboolean any_slide; /* a slide (its start or a tile) came in this stream */
  gboolean failed;    /* an error was posted: later buffers are refused */
};

GType gst_mexd_moe_mode_get_type(void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_MEXD_MOE_MODE_AUTO, "the model file's routing mode", "auto"},
      {GST_MEXD_MOE_MODE_PAPER, "the routing of the paper (MEXD.md)", "paper"},
      {GST_MEXD_MOE_MODE_OFFICIAL, "the routing of the authors' stage-1 code", "official"},
      {0, NULL, NULL},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstMexdMoeMode", values));
  }
  return type;
}

enum { PROP_0, PROP_MODE };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 2, "
                    "types = (string) \"float32,float32\""));

G_DEFINE_TYPE(GstMexdMoe, gst_mexd_moe, GST_TYPE_MEXD_FILTER)
GST_ELEMENT_REGISTER_DEFINE(mexdmoe, "mexdmoe", GST_RANK_NONE, GST_TYPE_MEXD_MOE);

static GstCaps *gst_mexd_moe_transform_caps(GstBaseTransform *bt, GstPadDirection direction,
                                            GstCaps *caps, GstCaps *filter);

static gboolean gst_mexd_moe_open(GstMexdFilter *f, MexdBackend *be, const char *model,
                                  GError **error)
{
  GstMexdMoe *self = GST_MEXD_MOE(f);
  GstBaseTransform *bt = GST_BASE_TRANSFORM(f);
  if (!(self->m = mexd_model_load(model, be, error)))
    return FALSE;
  /* the routing mode: the model file's unless the property says */
  g_autoptr(GError) e = NULL;
  if (self->mode != GST_MEXD_MOE_MODE_AUTO &&
      !mexd_model_set_mode(self->m,
                           self->mode == GST_MEXD_MOE_MODE_OFFICIAL ? MEXD_ROUTE_OFFICIAL
                                                                    : MEXD_ROUTE_PAPER,
                           &e)) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                      ("mode=%s with %s: %s",
                       self->mode == GST_MEXD_MOE_MODE_OFFICIAL ? "official" : "paper", model,
                       e->message),
                      (NULL));
    return FALSE;
  }
  const MexdModelConfig *cfg = mexd_model_config(self->m);
  self->dim = cfg->feature_dim;
  g_autofree char *what = g_strdup_printf(
      "The model %s gives a prior of %d classes and an insight of %d (dimensions %d,%d; "
      "mexddiffc needs the same model)",
      model, cfg->n_classes, cfg->width, cfg->n_classes, cfg->width);
  GstCaps *features = gst_static_pad_template_get_caps(&sink_template);
  GstCaps *out = gst_mexd_moe_transform_caps(bt, GST_PAD_SINK, features, NULL);
  gst_caps_unref(features);
  if (!gst_mexd_check_downstream(GST_ELEMENT(self), GST_BASE_TRANSFORM_SRC_PAD(self), out, what))
    return FALSE;
  gst_mexd_array_init(&self->features, sizeof(float));
  gst_mexd_array_init(&self->xy, sizeof(gint32));
  self->tile_extent = self->slide_w = self->slide_h = 0;
  self->pts = GST_CLOCK_TIME_NONE;
  self->in_slide = self->any_slide = self->failed = FALSE;
  return TRUE;
}

static void gst_mexd_moe_close(GstMexdFilter *f)
{
  GstMexdMoe *self = GST_MEXD_MOE(f);
  gst_mexd_array_clear(&self->features);
  gst_mexd_array_clear(&self->xy);
  g_clear_pointer(&self->slide_id, g_free);
  g_clear_pointer(&self->slide_path, g_free);
  g_clear_pointer(&self->m, mexd_model_free);
}

static GstCaps *gst_mexd_moe_transform_caps(GstBaseTransform *bt, GstPadDirection direction,
                                            GstCaps *caps, GstCaps *filter)
{
  GstMexdMoe *self = GST_MEXD_MOE(bt);
  (void)caps;
  GstCaps *out = gst_static_pad_template_get_caps(direction == GST_PAD_SINK ? &src_template
                                                                            : &sink_template);
  if (self->m) {
    const MexdModelConfig *cfg = mexd_model_config(self->m);
    out = gst_caps_make_writable(out);
    g_autofree char *d = direction == GST_PAD_SINK
                             ? g_strdup_printf("%d,%d", cfg->n_classes, cfg->width)
                             : g_strdup_printf("%d", cfg->feature_dim);
    gst_caps_set_simple(out, "dimensions", G_TYPE_STRING, d, NULL);
    if (direction == GST_PAD_SINK)
      gst_caps_set_simple(out, "framerate", GST_TYPE_FRACTION, 0, 1, NULL);
  }
  if (filter) {
    GstCaps *c = gst_caps_intersect_full(filter, out, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(out);
    out = c;
  }
  return out;
}

static gboolean gst_mexd_moe_accept_caps(GstBaseTransform *bt, GstPadDirection dir,
                                         GstCaps *caps)
{
  GstMexdMoe *self = GST_MEXD_MOE(bt);
  if (dir == GST_PAD_SINK && self->m && gst_caps_get_size(caps) > 0) {
    const GstStructure *s = gst_caps_get_structure(caps, 0);
    const char *dims = gst_structure_get_string(s, "dimensions");
    gint di = 0;
    gint64 d = dims ? g_ascii_strtoll(dims, NULL, 10)
                    : (gst_structure_get_int(s, "dimensions", &di) ? di : 0);
    if (d > 0 && d != self->dim) {
      GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                        ("The features are %" G_GINT64_FORMAT "-dimensional but the model %s "
                         "takes %" G_GINT64_FORMAT ": use the backbone the model was trained on.",
                         d, gst_mexd_filter_model(GST_MEXD_FILTER(self)), self->dim),
                        (NULL));
      return FALSE;
    }
  }
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_moe_parent_class)->accept_caps(bt, dir, caps);
}

/* The current slide for messages: "Slide ID (PATH)" (g_free). */
static gchar *slide_label(GstMexdMoe *self)
{
  return gst_mexd_slide_label(self->slide_id, self->slide_path);
}

/* Takes one tile's feature into the current slide. */
static GstFlowReturn collect(GstMexdMoe *self, GstBuffer *in)
{
  if (gst_buffer_get_size(in) != sizeof(float) * self->dim) {
    g_autofree gchar *label = slide_label(self);
    GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                      ("%s: a feature of %" G_GSIZE_FORMAT
                       " bytes; the model takes %" G_GINT64_FORMAT " float32.",
                       label, gst_buffer_get_size(in), self->dim),
                      (NULL));
    return GST_FLOW_ERROR;
  }
  GstMexdTileMeta *m = gst_buffer_get_mexd_tile_meta(in);
  if (m && !self->slide_id)
    self->slide_id = g_strdup(m->slide_id);
  self->any_slide = TRUE;
  gint32 xy[2] = {m ? (gint32)m->x : -1, m ? (gint32)m->y : -1};
  g_autoptr(GError) error = NULL;
  GstMapInfo map;
  if (!gst_buffer_map(in, &map, GST_MAP_READ)) {
    g_autofree gchar *label = slide_label(self);
    GST_ELEMENT_ERROR(self, STREAM, FAILED,
                      ("%s: a feature buffer could not be read (mapped).", label), (NULL));
    return GST_FLOW_ERROR;
  }
  /* a slide has as many tiles as its data says: the arrays grow without aborting */
  gboolean ok = gst_mexd_array_append(&self->features, map.data, (gsize)self->dim,
                                      "the slide's features", &error) &&
                gst_mexd_array_append(&self->xy, xy, 2, "the slide's tile positions", &error);
  gst_buffer_unmap(in, &map);
  if (!ok) {
    g_autofree gchar *label = slide_label(self);
    g_autofree char *prefix =
        g_strdup_printf("%s: tile %" G_GSIZE_FORMAT " of %" G_GINT64_FORMAT " float32 features",
                        label, self->features.len / (gsize)self->dim + 1, self->dim);
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, prefix);
    return GST_FLOW_ERROR;
  }
  if (m)
    self->tile_extent = m->ref_size > 0 ? m->ref_size : m->tile_size;
  if (!GST_CLOCK_TIME_IS_VALID(self->pts))
    self->pts = GST_BUFFER_PTS(in);
  return GST_FLOW_OK;
}

static GstFlowReturn gst_mexd_moe_submit(GstBaseTransform *bt, gboolean discont, GstBuffer *in)
{
  GstMexdMoe *self = GST_MEXD_MOE(bt);
  (void)discont;
  GstFlowReturn ret = self->failed ? GST_FLOW_ERROR : collect(self, in);
  if (ret != GST_FLOW_OK)
    self->failed = TRUE;
  gst_buffer_unref(in);
  return ret;
}

static GstFlowReturn gst_mexd_moe_generate(GstBaseTransform *bt, GstBuffer **out)
{
  (void)bt;
  *out = NULL;
  return GST_FLOW_OK;
}

static GstMemory *floats_memory(const float *v, gsize n)
{
  GstMemory *mem = gst_allocator_alloc(NULL, n * sizeof(float), NULL);
  GstMapInfo map;
  gst_memory_map(mem, &map, GST_MAP_WRITE);
  memcpy(map.data, v, n * sizeof(float));
  gst_memory_unmap(mem, &map);
  return mem;
}

/* The slide's features through adapter #1, Dyn-MoE and adapter #2; pushes (rho, Z). */
static GstFlowReturn finish_slide(GstMexdMoe *self)
{
  gint64 n = (gint64)(self->features.len / (gsize)self->dim);
  g_autofree char *id = g_steal_pointer(&self->slide_id);
  GstClockTime pts = self->pts;
  self->pts = GST_CLOCK_TIME_NONE;
  if (n == 0) {
    gst_mexd_array_reset(&self->xy);
    if (id)
      GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Slide %s has no tiles: nothing to classify.", id),
                          (NULL));
    return GST_FLOW_OK;
  }
  g_autofree gchar *label = gst_mexd_slide_label(id, self->slide_path);
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
  opt.diffusion = FALSE;
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdResult) r = mexd_model_forward(self->m, (const float *)(void *)self->features.data,
                                               n, self->dim, &opt, NULL, &error);
  gst_mexd_array_reset(&self->features);
  if (!r) {
    /* features that are not finite: the library's message, with the slide */
    gst_mexd_array_reset(&self->xy);
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, label);
    return GST_FLOW_ERROR;
  }
  GstBuffer *out = gst_buffer_new();
  gst_buffer_append_memory(out, floats_memory(r->rho, (gsize)r->n_classes));
  gst_buffer_append_memory(out, floats_memory(r->z, (gsize)r->width));
  gst_buffer_add_mexd_slide_meta(
      out, id ? id : "", self->slide_path,
      mexd_model_config(self->m)->mode == MEXD_ROUTE_OFFICIAL ? "official" : "paper", n,
      r->ms_adapter1, r->ms_moe);
  /* routing per tile; selected rows from n on are the padding's copies of instances 0, 1, … */
  GstMexdRoutingMeta *rm = gst_buffer_add_mexd_routing_meta(out, n);
  if (!rm) {
    gst_buffer_unref(out);
    gst_mexd_array_reset(&self->xy);
    GST_ELEMENT_ERROR(
        self, STREAM, FAILED,
        ("%s: out of memory for the routing of its %" G_GINT64_FORMAT " tiles.", label, n), (NULL));
    return GST_FLOW_ERROR;
  }
  memcpy(rm->xy, self->xy.data, sizeof(gint32) * 2 * n);
  gst_mexd_array_reset(&self->xy);
  for (int e = 0; e < r->experts; e++)
    for (int64_t k = 0; k < r->n_selected[e]; k++)
      rm->experts[r->selected[e][k] % n] |= 1u << e;
  /* Per tile, two scores (decisions, MEXD.md being silent):
   * - score: adapter #1's class-token attention (first Nyström layer): TransMIL's own heatmap,
   *   where the model looks.  The default heatmap: on the demo cohort it finds the lesion (AUC of
   *   lesion vs other tiles 0.67–1.0 per slide) where the gates below do not (≈ 0.5: the tokens
   *   the routers see carry the whole slide's context after two attention layers);
   * - gate: how lesion-like the routers find the tile, the largest gate p_r(i)[1] of the lesion
   *   experts r ≥ 1 (expert 0 is the background's): what the Dyn-MoE ranks instances by. */
  for (int64_t i = 0; i < n; i++) {
    float best = 0.0f;
    for (int e = 1; e < r->experts; e++)
      best = MAX(best, r->gates[(size_t)e * r->n_routed + i]);
    rm->gate[i] = best;
    rm->score[i] = r->attention[i];
  }
  rm->tile_extent = self->tile_extent;
  rm->width = self->slide_w;
  rm->height = self->slide_h;
  GST_BUFFER_PTS(out) = pts;
  GST_INFO_OBJECT(self, "slide %s: %" G_GINT64_FORMAT " tiles, adapter #1 %.1f ms, Dyn-MoE %.1f ms",
                  id, n, r->ms_adapter1, r->ms_moe);
  return gst_pad_push(GST_BASE_TRANSFORM_SRC_PAD(self), out);
}

static gboolean gst_mexd_moe_sink_event(GstBaseTransform *bt, GstEvent *ev)
{
  GstMexdMoe *self = GST_MEXD_MOE(bt);
  const gchar *id = NULL;
  if (gst_mexd_drop_slide_event_after_error(self->failed, ev))
    return FALSE;
  if (gst_mexd_event_is_slide_start(ev, &id)) {
    /* the previous slide had no end: it ends here */
    if (self->features.len && finish_slide(self) == GST_FLOW_ERROR)
      return gst_mexd_refuse_event(&self->failed, ev);
    g_free(self->slide_id);
    self->slide_id = g_strdup(id);
    self->in_slide = self->any_slide = TRUE;
    const GstStructure *st = gst_event_get_structure(ev);
    g_free(self->slide_path);
    const char *path = gst_structure_get_string(st, "path");
    self->slide_path = path && *path ? g_strdup(path) : NULL; /* "": a slide without a file */
    if (!gst_structure_get_int64(st, "width", &self->slide_w) ||
        !gst_structure_get_int64(st, "height", &self->slide_h))
      self->slide_w = self->slide_h = 0;
  } else if (gst_mexd_event_is_slide_end(ev, &id)) {
    if (!self->in_slide) {
      GST_MEXD_POST_ORPHAN_SLIDE_END(self, id);
      return gst_mexd_refuse_event(&self->failed, ev);
    }
    if (g_strcmp0(id, self->slide_id) && id && self->slide_id) {
      GST_ELEMENT_ERROR(self, CORE, EVENT,
                        ("A mexd/slide-end for slide %s while slide %s is open: the source "
                         "mixed up its slides.",
                         id, self->slide_id),
                        (NULL));
      return gst_mexd_refuse_event(&self->failed, ev);
    }
    self->in_slide = FALSE;
    if (finish_slide(self) == GST_FLOW_ERROR)
      return gst_mexd_refuse_event(&self->failed, ev);
  } else if (GST_EVENT_TYPE(ev) == GST_EVENT_EOS) {
    /* (no caps: upstream failed before sending anything, and said so) */
    if (!self->failed && !self->any_slide &&
        gst_pad_has_current_caps(GST_BASE_TRANSFORM_SINK_PAD(self))) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED,
                        ("The stream ended before any slide reached mexdmoe (no mexd/slide-start "
                         "and no tile feature): nothing to classify."),
                        (NULL));
      return gst_mexd_refuse_event(&self->failed, ev);
    }
    self->in_slide = FALSE;
    if (!self->failed && finish_slide(self) == GST_FLOW_ERROR)
      return gst_mexd_refuse_event(&self->failed, ev);
  } else if (GST_EVENT_TYPE(ev) == GST_EVENT_FLUSH_STOP) {
    gst_mexd_array_reset(&self->features);
    gst_mexd_array_reset(&self->xy);
  }
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_moe_parent_class)->sink_event(bt, ev);
}

static void gst_mexd_moe_set_property(GObject *object, guint id, const GValue *value,
                                      GParamSpec *pspec)
{
  GstMexdMoe *self = GST_MEXD_MOE(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_MODE)
    self->mode = (GstMexdMoeMode)g_value_get_enum(value);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_moe_get_property(GObject *object, guint id, GValue *value,
                                      GParamSpec *pspec)
{
  GstMexdMoe *self = GST_MEXD_MOE(object);
  GST_OBJECT_LOCK(self);
  if (id == PROP_MODE)
    g_value_set_enum(value, self->mode);
  else
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_moe_class_init(GstMexdMoeClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *bc = GST_BASE_TRANSFORM_CLASS(klass);
  oc->set_property = gst_mexd_moe_set_property;
  oc->get_property = gst_mexd_moe_get_property;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  g_object_class_install_property(
      oc, PROP_MODE,
      g_param_spec_enum("mode", "Routing mode",
                        "auto (the model file's, default), paper (MEXD.md) or official (the "
                        "authors' stage-1 code)",
                        GST_TYPE_MEXD_MOE_MODE, GST_MEXD_MOE_MODE_AUTO, rw));
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_MOE_MODE, 0);
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(
      ec, "MExD Dyn-MoE aggregator", "Filter/Analyzer",
      "A slide's tile features → prior and insight (TransMIL adapters and the Dynamic "
      "Mixture-of-Experts)",
      "The mexd project");
  GstMexdFilterClass *fc = GST_MEXD_FILTER_CLASS(klass);
  fc->model_name = "MExD model";
  fc->model_hint = "tools/convert.py makes one, or mexd train";
  fc->open = gst_mexd_moe_open;
  fc->close = gst_mexd_moe_close;
  bc->transform_caps = gst_mexd_moe_transform_caps;
  bc->accept_caps = gst_mexd_moe_accept_caps;
  bc->submit_input_buffer = gst_mexd_moe_submit;
  bc->generate_output = gst_mexd_moe_generate;
  bc->sink_event = gst_mexd_moe_sink_event;
  bc->passthrough_on_same_caps = FALSE;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_moe_debug, "mexdmoe", 0, "MExD Dyn-MoE aggregator");
}

static void gst_mexd_moe_init(GstMexdMoe *self)
{
  gst_base_transform_set_qos_enabled(GST_BASE_TRANSFORM(self), FALSE);
}
