/**
 * SECTION:element-mexdembed
 * @title: mexdembed
 *
 * Turns RGB tiles into feature vectors with a backbone (ResNet-50-trunc, ViT-S/B/L-16,
 * CTransPath: a model file made by tools/convert.py) on a Vulkan device or the cpu.  Tiles are
 * collected into batches of `batch-size` and run as one command buffer; a partial batch is run
 * at `mexd/slide-end` and at EOS, so every tile of a slide has its feature before the slide's end
 * goes downstream.  Each feature is an `other/tensors` buffer (one float32 tensor of the
 * backbone's output dimension, NNStreamer's caps) carrying the tile's #GstMexdTileMeta and
 * timestamps.  The tile may be any size: the backbone's preprocessing resizes it (antialiased
 * bilinear) to its input size and normalises it with the model file's mean and std.
 * `precision` is `fp32` (default), `fp16` (fp32 accumulation; on the cpu backend it runs as
 * bf16, as the cpu has no fast fp16) or `bf16` (cpu backend only: oneDNN with AVX512-BF16/AMX;
 * refused on a Vulkan device or a CPU without bf16).
 *
 * Errors: a backbone file that cannot be loaded, a batch that does not fit in memory (lower
 * `batch-size`) and a failing device are resource errors; a next element that does not take the
 * backbone's feature size (a model for another backbone) fails the start, naming both; a tile
 * buffer that does not match its caps, or features that are not finite (fp16 overflow), a stream
 * error naming the slide.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 openslidesrc location=slide.svs ! mexdembed model=resnet50.safetensors \
 *     precision=fp16 batch-size=64 ! mexdfeaturesink location=features/%s.h5
 * ]|
 */
#include "gstmexdembed.h"

#include "gstmexdcontext.h"
#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <gst/video/video.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_mexd_embed_debug);
#define GST_CAT_DEFAULT gst_mexd_embed_debug

struct _GstMexdEmbed {
  GstMexdFilter parent; /* the model and device properties, the device (gstmexdfilter.h) */
  GstMexdPrecision precision;
  gint batch_size;
  MexdBackbone *bb;
  gint64 dim;
  GstVideoInfo vinfo;
  gboolean have_info;
  GPtrArray *pending; /* input tiles of the next batch */
  MexdEmbedJob *job;  /* the batch running on the device, submitted but not finished */
  GPtrArray *running; /* its input tiles (their meta and timestamps go to the features) */
  GQueue outputs;     /* features not yet handed out */
  guint8 *pixels;     /* batch-size tiles of the current caps */
  float *feats;       /* batch-size features */
  gchar *slide_id;    /* the current slide's (mexd/slide-start or the tiles' meta) */
  gboolean failed;    /* an error was posted: later tiles are refused */
};

enum { PROP_0, PROP_PRECISION, PROP_BATCH_SIZE };

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) RGB, width = (int) [ 1, 16384 ], "
                    "height = (int) [ 1, 16384 ]"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("other/tensors, format = (string) static, num_tensors = (int) 1, "
                    "types = (string) float32"));

G_DEFINE_TYPE(GstMexdEmbed, gst_mexd_embed, GST_TYPE_MEXD_FILTER)
GST_ELEMENT_REGISTER_DEFINE(mexdembed, "mexdembed", GST_RANK_NONE, GST_TYPE_MEXD_EMBED);

GType gst_mexd_precision_get_type(void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_MEXD_PRECISION_FP32, "32-bit floats", "fp32"},
      {GST_MEXD_PRECISION_FP16, "16-bit floats (fp32 accumulation; bf16 on the cpu)", "fp16"},
      {GST_MEXD_PRECISION_BF16, "bfloat16 on the cpu (oneDNN, AVX512-BF16/AMX; fp32 accumulation)",
       "bf16"},
      {0, NULL, NULL},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstMexdPrecision", values));
  }
  return type;
}

/* The slide of a tile, for messages. */
static const char *tile_slide(GstMexdEmbed *self, GstBuffer *tile)
{
  GstMexdTileMeta *m = tile ? gst_buffer_get_mexd_tile_meta(tile) : NULL;
  if (m && m->slide_id && *m->slide_id)
    return m->slide_id;
  return self->slide_id && *self->slide_id ? self->slide_id : "(unnamed)";
}

static GstCaps *gst_mexd_embed_transform_caps(GstBaseTransform *bt, GstPadDirection direction,
                                              GstCaps *caps, GstCaps *filter);

static gboolean gst_mexd_embed_check(GstMexdFilter *f)
{
  return gst_mexd_check_ranges(GST_ELEMENT(f));
}

static gboolean gst_mexd_embed_open(GstMexdFilter *f, MexdBackend *be, const char *model,
                                    GError **error)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(f);
  GstBaseTransform *bt = GST_BASE_TRANSFORM(f);
  const MexdPrecision prec = self->precision == GST_MEXD_PRECISION_FP16   ? MEXD_PRECISION_FP16
                             : self->precision == GST_MEXD_PRECISION_BF16 ? MEXD_PRECISION_BF16
                                                                          : MEXD_PRECISION_FP32;
  if (!(self->bb = mexd_backbone_load_precision(model, be, prec, error)))
    return FALSE;
  self->dim = mexd_backbone_config(self->bb)->output_dim;
  g_autofree char *what = g_strdup_printf(
      "The backbone %s gives %" G_GINT64_FORMAT "-dimensional features", model, self->dim);
  GstCaps *tiles = gst_static_pad_template_get_caps(&sink_template);
  GstCaps *features = gst_mexd_embed_transform_caps(bt, GST_PAD_SINK, tiles, NULL);
  gst_caps_unref(tiles);
  if (!gst_mexd_check_downstream(GST_ELEMENT(self), GST_BASE_TRANSFORM_SRC_PAD(self), features,
                                 what))
    return FALSE;
  self->pending = g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref);
  self->running = g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref);
  g_queue_init(&self->outputs);
  self->have_info = FALSE;
  self->failed = FALSE;
  GST_INFO_OBJECT(self, "%s on %s: %" G_GINT64_FORMAT "-d features", model,
                  mexd_backend_name(be), self->dim);
  return TRUE;
}

static void gst_mexd_embed_close(GstMexdFilter *f)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(f);
  g_clear_pointer(&self->pending, g_ptr_array_unref);
  g_clear_pointer(&self->job, mexd_embed_job_free);
  g_clear_pointer(&self->running, g_ptr_array_unref);
  g_queue_clear_full(&self->outputs, (GDestroyNotify)gst_buffer_unref);
  g_clear_pointer(&self->bb, mexd_backbone_free);
  g_clear_pointer(&self->pixels, g_free);
  g_clear_pointer(&self->feats, g_free);
  g_clear_pointer(&self->slide_id, g_free);
}

static GstCaps *gst_mexd_embed_transform_caps(GstBaseTransform *bt, GstPadDirection direction,
                                              GstCaps *caps, GstCaps *filter)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(bt);
  (void)caps;
  GstCaps *out;
  if (direction == GST_PAD_SINK) {
    out = gst_static_pad_template_get_caps(&src_template);
    out = gst_caps_make_writable(out);
    if (self->dim > 0) {
      g_autofree char *d = g_strdup_printf("%" G_GINT64_FORMAT, self->dim);
      gst_caps_set_simple(out, "dimensions", G_TYPE_STRING, d, NULL);
    }
    /* the tiles' framerate goes through (openslidesrc: 0/1) */
    const GstStructure *s = gst_caps_get_size(caps) ? gst_caps_get_structure(caps, 0) : NULL;
    const GValue *fr = s ? gst_structure_get_value(s, "framerate") : NULL;
    if (fr && GST_VALUE_HOLDS_FRACTION(fr))
      gst_caps_set_value(out, "framerate", fr);
    else
      gst_caps_set_simple(out, "framerate", GST_TYPE_FRACTION, 0, 1, NULL);
  } else {
    out = gst_static_pad_template_get_caps(&sink_template);
  }
  if (filter) {
    GstCaps *c = gst_caps_intersect_full(filter, out, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(out);
    out = c;
  }
  return out;
}

static gboolean gst_mexd_embed_set_caps(GstBaseTransform *bt, GstCaps *in, GstCaps *out)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(bt);
  (void)out;
  if (!gst_video_info_from_caps(&self->vinfo, in)) {
    g_autofree char *c = gst_caps_to_string(in);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                      ("mexdembed takes RGB tiles (video/x-raw, format=RGB), not %s.", c), (NULL));
    return FALSE;
  }
  self->have_info = TRUE;
  g_clear_pointer(&self->pixels, g_free);
  return TRUE;
}

/* Waits for the batch on the device; its features join the output queue. */
static GstFlowReturn finish_running(GstMexdEmbed *self)
{
  if (!self->job)
    return GST_FLOW_OK;
  g_autoptr(GError) error = NULL;
  MexdEmbedJob *job = g_steal_pointer(&self->job);
  const guint n = self->running->len;
  if (!mexd_embed_job_finish(job, self->feats, &error)) {
    g_autofree char *prefix = g_strdup_printf(
        "Slide %s", tile_slide(self, n ? g_ptr_array_index(self->running, 0) : NULL));
    g_ptr_array_set_size(self->running, 0);
    /* the device's memory for a batch is every slide's need; non-finite features the slide's */
    GST_MEXD_POST_ERROR(
        self, error->code == MEXD_ERROR_NO_MEMORY ? GST_MEXD_FAULT_RESOURCE : GST_MEXD_FAULT_SLIDE,
        error, prefix);
    return GST_FLOW_ERROR;
  }
  for (guint i = 0; i < n; i++) {
    GstBuffer *in = g_ptr_array_index(self->running, i);
    GstBuffer *out = gst_buffer_new_allocate(NULL, sizeof(float) * self->dim, NULL);
    gst_buffer_fill(out, 0, self->feats + (size_t)i * self->dim, sizeof(float) * self->dim);
    gst_buffer_copy_into(out, in, GST_BUFFER_COPY_METADATA, 0, (gsize)-1);
    g_queue_push_tail(&self->outputs, out);
  }
  g_ptr_array_set_size(self->running, 0);
  return GST_FLOW_OK;
}

/* Submits the pending tiles to the backbone and finishes the batch before them. */
static GstFlowReturn run_batch(GstMexdEmbed *self)
{
  guint n = self->pending ? self->pending->len : 0;
  if (n == 0)
    return GST_FLOW_OK;
  if (!self->have_info) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Tiles arrived before their caps."), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  const int w = GST_VIDEO_INFO_WIDTH(&self->vinfo), h = GST_VIDEO_INFO_HEIGHT(&self->vinfo);
  const size_t tile = (size_t)w * h * 3;
  if (!self->pixels) {
    /* a batch's memory comes from the caps and batch-size: had without aborting */
    g_autoptr(GError) error = NULL;
    const gsize bs = (gsize)self->batch_size;
    g_autofree char *what =
        g_strdup_printf("a batch of %d tiles of %d x %d pixels", self->batch_size, w, h);
    g_clear_pointer(&self->feats, g_free);
    if (tile <= G_MAXSIZE / bs && (gsize)self->dim <= G_MAXSIZE / sizeof(float) / bs)
      self->pixels = gst_mexd_try_alloc(tile * bs, what, &error);
    else
      g_set_error(&error, MEXD_ERROR, MEXD_ERROR_NO_MEMORY, "%s is larger than the address space",
                  what);
    if (self->pixels)
      self->feats = gst_mexd_try_alloc(sizeof(float) * (gsize)self->dim * bs, what, &error);
    if (!self->feats) {
      g_clear_pointer(&self->pixels, g_free);
      GST_ELEMENT_ERROR(self, RESOURCE, NO_SPACE_LEFT, ("%s: lower batch-size.", error->message),
                        (NULL));
      return GST_FLOW_ERROR;
    }
  }
  for (guint i = 0; i < n; i++) {
    GstVideoFrame f;
    GstBuffer *b = g_ptr_array_index(self->pending, i);
    if (!gst_video_frame_map(&f, &self->vinfo, b, GST_MAP_READ)) {
      GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                        ("Slide %s: a tile buffer of %" G_GSIZE_FORMAT " bytes does not hold the "
                         "%d x %d RGB tile its caps say.",
                         tile_slide(self, b), gst_buffer_get_size(b), w, h),
                        (NULL));
      return GST_FLOW_ERROR;
    }
    const guint8 *src = GST_VIDEO_FRAME_PLANE_DATA(&f, 0);
    int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&f, 0);
    for (int y = 0; y < h; y++)
      memcpy(self->pixels + i * tile + (size_t)y * w * 3, src + (size_t)y * stride,
             (size_t)w * 3);
    gst_video_frame_unmap(&f);
  }
  /* two batches in flight: this one is submitted, then the one before is finished, so the
   * device computes while upstream reads the next tiles */
  g_autoptr(GError) error = NULL;
  MexdEmbedJob *job = mexd_backbone_embed_submit(self->bb, self->pixels, n, h, w, NULL, &error);
  if (!job) {
    g_autofree char *prefix =
        g_strdup_printf("Slide %s", tile_slide(self, g_ptr_array_index(self->pending, 0)));
    GST_MEXD_POST_ERROR(
        self, error->code == MEXD_ERROR_NO_MEMORY ? GST_MEXD_FAULT_RESOURCE : GST_MEXD_FAULT_SLIDE,
        error, prefix);
    return GST_FLOW_ERROR;
  }
  GstFlowReturn ret = finish_running(self);
  self->job = job;
  GPtrArray *t = self->running;
  self->running = self->pending;
  self->pending = t;
  return ret;
}

static GstFlowReturn gst_mexd_embed_submit(GstBaseTransform *bt, gboolean discont, GstBuffer *in)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(bt);
  (void)discont;
  if (self->failed) {
    gst_buffer_unref(in);
    return GST_FLOW_ERROR;
  }
  g_ptr_array_add(self->pending, in);
  GstFlowReturn ret = GST_FLOW_OK;
  if ((gint)self->pending->len >= self->batch_size)
    ret = run_batch(self);
  if (ret == GST_FLOW_ERROR || ret == GST_FLOW_NOT_NEGOTIATED)
    self->failed = TRUE;
  return ret;
}

static GstFlowReturn gst_mexd_embed_generate(GstBaseTransform *bt, GstBuffer **out)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(bt);
  *out = g_queue_pop_head(&self->outputs);
  return GST_FLOW_OK;
}

/* Runs a partial batch and pushes every queued feature (before a slide end or EOS). */
static GstFlowReturn drain(GstMexdEmbed *self)
{
  if (self->failed)
    return GST_FLOW_ERROR;
  GstFlowReturn ret = run_batch(self);
  if (ret == GST_FLOW_OK)
    ret = finish_running(self);
  GstBuffer *b;
  while (ret == GST_FLOW_OK && (b = g_queue_pop_head(&self->outputs)))
    ret = gst_pad_push(GST_BASE_TRANSFORM_SRC_PAD(self), b);
  return ret;
}

static gboolean gst_mexd_embed_sink_event(GstBaseTransform *bt, GstEvent *ev)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(bt);
  const gchar *id = NULL;
  if (gst_mexd_event_is_slide_end(ev, NULL) || GST_EVENT_TYPE(ev) == GST_EVENT_EOS ||
      GST_EVENT_TYPE(ev) == GST_EVENT_CAPS) {
    /* every tile before a slide end, EOS or new caps (another tile size) is run first */
    GstFlowReturn ret = drain(self);
    if (ret == GST_FLOW_ERROR || ret == GST_FLOW_NOT_NEGOTIATED)
      self->failed = TRUE;
    if (ret != GST_FLOW_OK && ret != GST_FLOW_FLUSHING)
      GST_DEBUG_OBJECT(self, "draining before %s: %s", GST_EVENT_TYPE_NAME(ev),
                       gst_flow_get_name(ret));
  } else if (gst_mexd_event_is_slide_start(ev, &id)) {
    g_free(self->slide_id);
    self->slide_id = g_strdup(id);
  } else if (GST_EVENT_TYPE(ev) == GST_EVENT_FLUSH_STOP) {
    if (self->pending)
      g_ptr_array_set_size(self->pending, 0);
    g_clear_pointer(&self->job, mexd_embed_job_free);
    if (self->running)
      g_ptr_array_set_size(self->running, 0);
    g_queue_clear_full(&self->outputs, (GDestroyNotify)gst_buffer_unref);
  }
  return GST_BASE_TRANSFORM_CLASS(gst_mexd_embed_parent_class)->sink_event(bt, ev);
}

static void gst_mexd_embed_set_property(GObject *object, guint id, const GValue *value,
                                        GParamSpec *pspec)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_PRECISION: self->precision = (GstMexdPrecision)g_value_get_enum(value); break;
  case PROP_BATCH_SIZE: self->batch_size = g_value_get_int(value); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_embed_get_property(GObject *object, guint id, GValue *value,
                                        GParamSpec *pspec)
{
  GstMexdEmbed *self = GST_MEXD_EMBED(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_PRECISION: g_value_set_enum(value, self->precision); break;
  case PROP_BATCH_SIZE: g_value_set_int(value, self->batch_size); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_mexd_embed_class_init(GstMexdEmbedClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *bc = GST_BASE_TRANSFORM_CLASS(klass);
  oc->set_property = gst_mexd_embed_set_property;
  oc->get_property = gst_mexd_embed_get_property;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  g_object_class_install_property(
      oc, PROP_PRECISION,
      g_param_spec_enum("precision", "Precision",
                        "fp32, fp16 (fp32 accumulation; runs as bf16 on the cpu backend) or bf16 "
                        "(cpu backend only)",
                        GST_TYPE_MEXD_PRECISION, GST_MEXD_PRECISION_FP32, rw));
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_PRECISION, 0);
  g_object_class_install_property(oc, PROP_BATCH_SIZE,
                                  gst_mexd_param_spec_int("batch-size", "Batch size",
                                                          "Tiles per batch (one command buffer)", 1,
                                                          4096, 16, rw));
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(ec, "MExD tile embedder", "Filter/Converter/Video",
                                        "Tile features with a backbone (ResNet-50-trunc, ViT, "
                                        "CTransPath) on Vulkan or the cpu",
                                        "The mexd project");
  GstMexdFilterClass *fc = GST_MEXD_FILTER_CLASS(klass);
  fc->model_name = "backbone";
  fc->model_hint = "a file made by tools/convert.py";
  fc->check = gst_mexd_embed_check;
  fc->open = gst_mexd_embed_open;
  fc->close = gst_mexd_embed_close;
  bc->transform_caps = gst_mexd_embed_transform_caps;
  bc->set_caps = gst_mexd_embed_set_caps;
  bc->submit_input_buffer = gst_mexd_embed_submit;
  bc->generate_output = gst_mexd_embed_generate;
  bc->sink_event = gst_mexd_embed_sink_event;
  bc->passthrough_on_same_caps = FALSE;
  GST_DEBUG_CATEGORY_INIT(gst_mexd_embed_debug, "mexdembed", 0, "MExD tile embedder");
}

static void gst_mexd_embed_init(GstMexdEmbed *self)
{
  self->batch_size = 16;
  self->precision = GST_MEXD_PRECISION_FP32;
  gst_base_transform_set_qos_enabled(GST_BASE_TRANSFORM(self), FALSE);
}
