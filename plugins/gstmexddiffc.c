/**
 * SECTION:element-mexddiffc
 * @title: mexddiffc
 *
 * MExD's diffusion classifier: for each slide's (ρ, Z) from `mexdmoe` it generates the label
 * from noise over `chains` chains (CARD's ancestral sampler over all steps, or DDIM with
 * `steps`), seeded by `seed` so that a result can be reproduced.  It outputs the class
 * probabilities as `other/tensors` (one float32 tensor, dimensions `C:1`, which NNStreamer's
 * image_labeling decoder reads) and posts the element message `mexd-result`, the result
 * schema of lib/pipeline/result.h ("mexd-result/1", the JSON of `mexd forward --json` and of
 * `mexd classify`'s result.json) field for field:
 *
 *   schema (string), slide-id, path (the slide's file, when known), class (string),
 *   class-index (int), classes (GstValueArray of string), probabilities, spread, prior
 *   (GstValueArray of double, one per class), tiles (int64), sampler (string), steps, chains
 *   (int), seed (uint64), eta (double), mode (string: the routing), ms-adapter1, ms-moe,
 *   ms-diffusion (double: the time of each stage on this slide), seconds, device (string).
 * A slide whose probabilities would not be finite (NaN or Inf weights or features) gets no
 * message but a stream error naming the slide.  `sampler` is `card` (default) or `ddim`; DDIM
 * takes 2 to T `steps` (T: the model's diffusion steps) and `eta` is DDIM's only: anything else
 * fails the start with a message naming the property.  Input that is not mexdmoe's (ρ, Z) of
 * this model (another model's class count or width, mexdembed's features) is refused at
 * negotiation with a message naming both sizes.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m openslidesrc location=slide.svs ! mexdembed model=resnet50.safetensors ! \
 *     mexdmoe model=mexd.safetensors ! mexddiffc model=mexd.safetensors chains=32 ! fakesink
 * ]|
 */
#include "gstmexddiffc.h"

#include "gstmexdcontext.h"
#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_diffc_debug);
#define GST_CAT_DEFAULT gst_mexd_diffc_debug

struct _GstMexdDiffc {
  GstMexdFilter parent; /* the model and device properties, the device (gstmexdfilter.h) */
  GstMexdSampler sampler;
  gint steps, chains;
  guint64 seed;
  gdouble eta;
  MexdModel *m;
  gint classes, width;
  gchar *slide_id; /* the current slide's (mexd/slide-start), for buffers without a slide meta */
};

enum { PROP_0, PROP_SAMPLER, PROP_STEPS, PROP_CHAINS, PROP_SEED, PROP_ETA };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 2, "
                    "types = (string) \"float32,float32\""));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32"));

G_DEFINE_TYPE(GstMexdDiffc, gst_mexd_diffc, GST_TYPE_MEXD_FILTER)
GST_ELEMENT_REGISTER_DEFINE(mexddiffc, "mexddiffc", GST_RANK_NONE, GST_TYPE_MEXD_DIFFC);

GType gst_mexd_sampler_get_type(void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_MEXD_SAMPLER_CARD, "CARD's ancestral sampler over all T steps", "card"},
      {GST_MEXD_SAMPLER_DDIM, "DDIM with the steps property's steps", "ddim"},
      {0, NULL, NULL},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstMexdSampler", values));
  }
  return type;
}

static gboolean gst_mexd_diffc_check(GstMexdFilter *f)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(f);
  if (!gst_mexd_check_ranges(GST_ELEMENT(self)))
    return FALSE;
  if (self->sampler != GST_MEXD_SAMPLER_DDIM && self->eta != 0) {
    GST_ELEMENT_ERROR(
        self, RESOURCE, SETTINGS,
        ("eta=%g is DDIM's: set sampler=ddim (the card sampler has no eta).", self->eta), (NULL));
    return FALSE;
  }
  return TRUE;
}

static gboolean gst_mexd_diffc_open(GstMexdFilter *f, MexdBackend *be, const char *model,
                                    GError **error)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(f);
  if (!(self->m = mexd_model_load(model, be, error)))
    return FALSE;
  if (!mexd_model_get_diffc(self->m)) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED,
                "%s has no diffusion classifier (Diff-C weights): mexdmoe's prior is its only "
                "prediction",
                model);
    return FALSE;
  }
  const MexdModelConfig *cfg = mexd_model_config(self->m);
  if (self->sampler == GST_MEXD_SAMPLER_DDIM && (self->steps < 2 || self->steps > cfg->T)) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                      ("steps=%d: the ddim sampler takes 2 to %d steps with %s (its diffusion has "
                       "T = %d).",
                       self->steps, cfg->T, model, cfg->T),
                      (NULL));
    return FALSE;
  }
  self->classes = cfg->n_classes;
  self->width = cfg->width;
  return TRUE;
}

static void gst_mexd_diffc_close(GstMexdFilter *f)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(f);
  g_clear_pointer(&self->m, mexd_model_free);
  g_clear_pointer(&self->slide_id, g_free);
}

static GstCaps *gst_mexd_diffc_transform_caps(GstBaseTransform *bt, GstPadDirection direction,
                                              GstCaps *caps, GstCaps *filter)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(bt);
  (void)caps;
  GstCaps *out = gst_static_pad_template_get_caps(direction == GST_PAD_SINK ? &src_template
                                                                            : &sink_template);
  if (self->m) {
    out = gst_caps_make_writable(out);
    g_autofree char *d = direction == GST_PAD_SINK
                             ? g_strdup_printf("%d:1", self->classes)
                             : g_strdup_printf("%d,%d", self->classes, self->width);
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

/* The element counts of the tensors of an NNStreamer "dimensions" string ("2,512",
 * "2:1,512:1:1"); FALSE when it is not n tensors of positive sizes. */
static gboolean tensor_sizes(const char *dims, gint64 *sizes, guint n)
{
  g_auto(GStrv) t = g_strsplit(dims, ",", -1);
  if (g_strv_length(t) != n)
    return FALSE;
  for (guint i = 0; i < n; i++) {
    g_auto(GStrv) d = g_strsplit(t[i], ":", -1);
    sizes[i] = 1;
    for (guint k = 0; d[k]; k++) {
      gchar *end = NULL;
      gint64 v = g_ascii_strtoll(g_strstrip(d[k]), &end, 10);
      if (!end || *end || v < 1 || v > G_MAXINT32 || sizes[i] > G_MAXINT32 / v)
        return FALSE;
      sizes[i] *= v;
    }
  }
  return TRUE;
}

/* (ρ, Z) of another model (its class count or width) is refused with both sizes named. */
static gboolean gst_mexd_diffc_accept_caps(GstBaseTransform *bt, GstPadDirection dir, GstCaps *caps)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(bt);
  if (dir == GST_PAD_SINK && self->m && gst_caps_is_fixed(caps)) {
    const char *dims = gst_structure_get_string(gst_caps_get_structure(caps, 0), "dimensions");
    g_autofree char *want = g_strdup_printf("%d,%d", self->classes, self->width);
    gint64 sz[2];
    if (dims && (!tensor_sizes(dims, sz, 2) || sz[0] != self->classes || sz[1] != self->width)) {
      GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                        ("mexddiffc takes mexdmoe's prior and insight of %s (dimensions %s: %d "
                         "classes, width %d), not dimensions %s: give mexdmoe and mexddiffc the "
                         "same model.",
                         gst_mexd_filter_model(GST_MEXD_FILTER(self)), want, self->classes, self->width, dims),
                        (NULL));
      return FALSE;
    }
  }
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_diffc_parent_class)->accept_caps(bt, dir, caps);
}

static gboolean gst_mexd_diffc_sink_event(GstBaseTransform *bt, GstEvent *ev)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(bt);
  const gchar *id = NULL;
  if (gst_mexd_event_is_slide_start(ev, &id)) {
    g_free(self->slide_id);
    self->slide_id = g_strdup(id);
  }
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_diffc_parent_class)->sink_event(bt, ev);
}

static gboolean gst_mexd_diffc_transform_size(GstBaseTransform *bt, GstPadDirection dir,
                                              GstCaps *caps, gsize size, GstCaps *othercaps,
                                              gsize *othersize)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(bt);
  (void)caps;
  (void)size;
  (void)othercaps;
  *othersize = dir == GST_PAD_SINK ? sizeof(float) * self->classes
                                   : sizeof(float) * (self->classes + self->width);
  return TRUE;
}

static GstFlowReturn gst_mexd_diffc_transform(GstBaseTransform *bt, GstBuffer *in,
                                              GstBuffer *out)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(bt);
  const int C = self->classes, W = self->width;
  GstMexdSlideMeta *sm = gst_buffer_get_mexd_slide_meta(in);
  /* the slide's id ("" when nothing named it: tiles from stock elements) and its name in
   * messages */
  const char *sid = sm && sm->slide_id ? sm->slide_id : self->slide_id ? self->slide_id : "";
  g_autofree gchar *label = gst_mexd_slide_label(sid, sm ? sm->path : NULL);
  if (gst_buffer_n_memory(in) != 2 || gst_buffer_get_size(in) != sizeof(float) * (C + W)) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                      ("%s: expected rho [%d] and Z [%d] as two float32 tensors (mexdmoe's "
                       "output), got %" G_GSIZE_FORMAT " bytes in %u memories.",
                       label, C, W, gst_buffer_get_size(in), gst_buffer_n_memory(in)),
                      (NULL));
    return GST_FLOW_ERROR;
  }
  g_autofree float *rho = g_new(float, C), *z = g_new(float, W);
  gst_buffer_extract(in, 0, rho, sizeof(float) * C);
  gst_buffer_extract(in, sizeof(float) * C, z, sizeof(float) * W);
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
  opt.sampler = self->sampler == GST_MEXD_SAMPLER_DDIM ? MEXD_SAMPLER_DDIM : MEXD_SAMPLER_CARD;
  opt.steps = self->steps;
  opt.eta = self->eta;
  opt.chains = self->chains;
  opt.seed = self->seed;
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdResult) r = mexd_model_diffuse(self->m, z, rho, &opt, &error);
  if (!r) { /* a prior or insight that is not finite: the slide's */
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, label);
    return GST_FLOW_ERROR;
  }
  const MexdModelConfig *cfg = mexd_model_config(self->m);
  /* the result in the one schema (lib/pipeline/result.h); a NaN or Inf is refused there */
  g_autoptr(MexdSlideResult) sr =
      mexd_slide_result_new_from_model(r, cfg, &opt, sid, sm ? sm->path : NULL, FALSE, &error);
  if (!sr) {
    GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, label);
    return GST_FLOW_ERROR;
  }
  sr->tiles = sm ? MAX(sm->tiles, (gint64)0) : 0;
  sr->ms_adapter1 = sm ? sm->ms_adapter1 : 0.0;
  sr->ms_moe = sm ? sm->ms_moe : 0.0;
  if (sm && sm->mode) {
    g_free(sr->mode);
    sr->mode = g_strdup(sm->mode);
  }
  sr->device = g_strdup(mexd_backend_name(gst_mexd_filter_device(GST_MEXD_FILTER(self))));
  gst_buffer_fill(out, 0, r->probs, sizeof(float) * C);
  gst_element_post_message(GST_ELEMENT(self),
                           gst_message_new_element(GST_OBJECT(self),
                                                   gst_mexd_result_to_structure(sr)));
  return GST_FLOW_OK;
}

static void gst_mexd_diffc_set_property(GObject *object, guint id, const GValue *value,
                                        GParamSpec *pspec)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_SAMPLER: self->sampler = (GstMexdSampler)g_value_get_enum(value); break;
  case PROP_STEPS: self->steps = g_value_get_int(value); break;
  case PROP_CHAINS: self->chains = g_value_get_int(value); break;
  case PROP_SEED: self->seed = g_value_get_uint64(value); break;
  case PROP_ETA: self->eta = g_value_get_double(value); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_diffc_get_property(GObject *object, guint id, GValue *value,
                                        GParamSpec *pspec)
{
  GstMexdDiffc *self = GST_MEXD_DIFFC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_SAMPLER: g_value_set_enum(value, self->sampler); break;
  case PROP_STEPS: g_value_set_int(value, self->steps); break;
  case PROP_CHAINS: g_value_set_int(value, self->chains); break;
  case PROP_SEED: g_value_set_uint64(value, self->seed); break;
  case PROP_ETA: g_value_set_double(value, self->eta); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_diffc_finalize(GObject *object)
{
  g_free(GST_MEXD_DIFFC(object)->slide_id);
  G_OBJECT_CLASS(gst_mexd_diffc_parent_class)->finalize(object);
}

static void gst_mexd_diffc_class_init(GstMexdDiffcClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *bc = GST_BASE_TRANSFORM_CLASS(klass);
  oc->set_property = gst_mexd_diffc_set_property;
  oc->get_property = gst_mexd_diffc_get_property;
  oc->finalize = gst_mexd_diffc_finalize;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  g_object_class_install_property(
      oc, PROP_SAMPLER,
      g_param_spec_enum("sampler", "Sampler", "card (ancestral over all T steps) or ddim (steps)",
                        GST_TYPE_MEXD_SAMPLER, GST_MEXD_SAMPLER_CARD, rw));
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_SAMPLER, 0);
  g_object_class_install_property(
      oc, PROP_STEPS,
      gst_mexd_param_spec_int("steps", "Steps",
                              "DDIM steps (the ddim sampler only; 2 to the model's T)", 1, 100000,
                              50, rw));
  g_object_class_install_property(
      oc, PROP_CHAINS,
      gst_mexd_param_spec_int("chains", "Chains",
                              "Chains sampled per slide (their spread is the uncertainty)", 1, 4096,
                              32, rw));
  g_object_class_install_property(
      oc, PROP_SEED,
      g_param_spec_uint64("seed", "Seed", "Seed of the sampling noise (same seed, same result)",
                          0, G_MAXUINT64, 0, rw));
  g_object_class_install_property(
      oc, PROP_ETA,
      gst_mexd_param_spec_double("eta", "Eta",
                                 "DDIM's eta (0: deterministic; above 0 with sampler=ddim only)", 0,
                                 1, 0, rw));
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(
      ec, "MExD diffusion classifier", "Filter/Analyzer",
      "A slide's prior and insight → class probabilities by diffusion; posts mexd-result",
      "The mexd project");
  GstMexdFilterClass *fc = GST_MEXD_FILTER_CLASS(klass);
  fc->model_name = "MExD model";
  fc->model_hint = "the file mexdmoe uses";
  fc->check = gst_mexd_diffc_check;
  fc->open = gst_mexd_diffc_open;
  fc->close = gst_mexd_diffc_close;
  bc->transform_caps = gst_mexd_diffc_transform_caps;
  bc->transform_size = gst_mexd_diffc_transform_size;
  bc->accept_caps = gst_mexd_diffc_accept_caps;
  bc->sink_event = gst_mexd_diffc_sink_event;
  bc->transform = gst_mexd_diffc_transform;
  bc->passthrough_on_same_caps = FALSE;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_diffc_debug, "mexddiffc", 0, "MExD diffusion classifier");
}

static void gst_mexd_diffc_init(GstMexdDiffc *self)
{
  self->sampler = GST_MEXD_SAMPLER_CARD;
  self->steps = 50;
  self->chains = 32;
  gst_base_transform_set_qos_enabled(GST_BASE_TRANSFORM(self), FALSE);
}
