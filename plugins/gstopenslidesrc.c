/**
 * SECTION:element-openslidesrc
 * @title: openslidesrc
 *
 * Reads whole-slide images with OpenSlide (Aperio .svs, generic tiled TIFF, NDPI, MRXS, ...),
 * finds the tissue as CLAM does (its presets) and sends the tiles over it as RGB video frames,
 * one buffer per tile, each with a #GstMexdTileMeta (slide id, level-0 x/y, size, mpp, index).
 * Around each slide it sends the serialized events `mexd/slide-start` (sticky: slide-id, path,
 * width, height, mpp, tile-size, tiles) and `mexd/slide-end` (slide-id, tiles).  `location`
 * may list several slides separated by ';': they are read one after the other in one stream;
 * `locations` takes the list as a string array (any path, with ';' in it too).  Every listed
 * file is checked when the element starts (a missing file, a folder or a FIFO fails the start
 * with a message naming it) and the first slide is opened there.
 * Tiles are read by a pool of threads from one OpenSlide handle, in CLAM's grid order.
 *
 * The grid: `magnification` or `mpp` (one of them; tiles are resized to that resolution), else
 * `level` (read as it is); `tile-size` pixels, neighbours overlapping by `overlap` (less than
 * the tile size).  Settings that contradict each other (both magnification and mpp, a level
 * with either, an overlap of a whole tile) and an unknown `preset` fail the start with a message
 * naming the properties.  `contour-fn` is four_pt (default), four_pt_hard or center.
 * A slide that cannot be read as one (not a slide, a corrupt tile) is a stream error naming it;
 * a missing or unreadable file a resource error.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 openslidesrc location=slide.svs magnification=20 ! videoconvert ! pngenc ! \
 *     multifilesink location=tile-%05d.png
 * ]|
 */
#include "gstopenslidesrc.h"

#include "gstmexdmeta.h"
#include "gstmexdutil.h"
#include "mexd.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(gst_openslide_src_debug);
#define GST_CAT_DEFAULT gst_openslide_src_debug

struct _GstOpenslideSrc {
  GstPushSrc parent;
  /* properties */
  gchar *location, *preset;
  GstMexdContourFn contour_fn;
  gchar **locations;
  gdouble magnification, mpp;
  gint level, tile_size, overlap, threads;
  /* streaming state */
  gchar **paths;
  guint next_path;
  MexdSlide *slide;
  MexdTileReader *reader;
  MexdGridSpec spec;
  int32_t *coords;
  gint64 n_tiles, sent;
  gboolean segment_sent;
  gboolean start_pending; /* the open slide's slide-start is not sent yet */
};

enum {
  PROP_0,
  PROP_LOCATION,
  PROP_LOCATIONS,
  PROP_MAGNIFICATION,
  PROP_MPP,
  PROP_LEVEL,
  PROP_TILE_SIZE,
  PROP_OVERLAP,
  PROP_PRESET,
  PROP_CONTOUR_FN,
  PROP_THREADS,
};

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS,
                            GST_STATIC_CAPS("video/x-raw, format = (string) RGB, "
                                            "width = (int) [ 1, 16384 ], "
                                            "height = (int) [ 1, 16384 ], "
                                            "framerate = (fraction) 0/1"));

G_DEFINE_TYPE(GstOpenslideSrc, gst_openslide_src, GST_TYPE_PUSH_SRC)
GST_ELEMENT_REGISTER_DEFINE(openslidesrc, "openslidesrc", GST_RANK_NONE, GST_TYPE_OPENSLIDE_SRC);

GType gst_mexd_contour_fn_get_type(void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_MEXD_CONTOUR_FN_FOUR_PT, "any of four points around the tile's centre on tissue",
       "four_pt"},
      {GST_MEXD_CONTOUR_FN_FOUR_PT_HARD, "all four points on tissue", "four_pt_hard"},
      {GST_MEXD_CONTOUR_FN_CENTER, "the tile's centre on tissue", "center"},
      {0, NULL, NULL},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstMexdContourFn", values));
  }
  return type;
}

static MexdContourFn contour_fn_of(GstMexdContourFn fn)
{
  switch (fn) {
  case GST_MEXD_CONTOUR_FN_FOUR_PT_HARD: return MEXD_CONTOUR_FOUR_PT_HARD;
  case GST_MEXD_CONTOUR_FN_CENTER: return MEXD_CONTOUR_CENTER;
  default: return MEXD_CONTOUR_FOUR_PT;
  }
}

static void close_slide(GstOpenslideSrc *self)
{
  g_clear_pointer(&self->reader, mexd_tile_reader_free);
  g_clear_pointer(&self->slide, mexd_slide_free);
  g_clear_pointer(&self->coords, g_free);
  self->n_tiles = self->sent = 0;
}

/* Opens the next slide, finds its tissue and grid and starts the reader. */
static gboolean open_slide(GstOpenslideSrc *self, const char *path, GError **error)
{
  MexdTissueParams tp;
  if (!mexd_tissue_preset(self->preset ? self->preset : "default", &tp, error))
    return FALSE;
  self->slide = mexd_slide_open(path, error);
  if (!self->slide)
    return FALSE;
  gboolean ok = mexd_grid_spec_choose(self->slide, self->mpp, self->magnification, self->level,
                                      self->tile_size, self->tile_size - self->overlap,
                                      &self->spec, error);
  if (!ok)
    return FALSE;
  self->spec.contour_fn = contour_fn_of(self->contour_fn);
  g_autoptr(MexdTissue) t = mexd_slide_tissue(self->slide, -1, &tp, error);
  if (!t)
    return FALSE;
  self->n_tiles = mexd_tile_grid(self->slide, t, &self->spec, &self->coords);
  int threads = self->threads > 0 ? self->threads : CLAMP((int)g_get_num_processors(), 1, 8);
  self->reader = mexd_tile_reader_new(self->slide, &self->spec, self->coords, self->n_tiles,
                                      threads, 0, error);
  GST_INFO_OBJECT(self, "%s: %d tissue contours, %" G_GINT64_FORMAT " tiles", path, t->n,
                  self->n_tiles);
  return self->reader != NULL;
}

/* Posts the error of a slide that cannot be opened or read (its message names the file): a
 * missing or unreadable file RESOURCE, a file that is no slide or a corrupt one STREAM. */
static void post_open_error(GstOpenslideSrc *self, const GError *error)
{
  GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error, NULL);
}

/* Settings that contradict each other are refused, never silently resolved. */
static gboolean check_settings(GstOpenslideSrc *self)
{
  if (!gst_mexd_check_ranges(GST_ELEMENT(self)))
    return FALSE;
  g_autoptr(GError) error = NULL;
  MexdTissueParams tp;
  if (!mexd_tissue_preset(self->preset ? self->preset : "default", &tp, &error)) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("preset: %s.", error->message), (NULL));
    return FALSE;
  }
  if (self->overlap < 0 || self->overlap >= self->tile_size) {
    GST_ELEMENT_ERROR(
        self, RESOURCE, SETTINGS,
        ("overlap %d must be below the tile size %d.", self->overlap, self->tile_size), (NULL));
    return FALSE;
  }
  if (self->mpp > 0 && self->magnification > 0) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                      ("Both mpp (%g) and magnification (%g) are set: set one of them.", self->mpp,
                       self->magnification),
                      (NULL));
    return FALSE;
  }
  if (self->level > 0 && (self->mpp > 0 || self->magnification > 0)) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                      ("level %d is read as it is, %s %g resizes tiles to a resolution: set one "
                       "of them.",
                       self->level, self->mpp > 0 ? "mpp" : "magnification",
                       self->mpp > 0 ? self->mpp : self->magnification),
                      (NULL));
    return FALSE;
  }
  return TRUE;
}

/* Every slide is looked at (a missing file, a FIFO or a folder is refused before anything
 * blocks on it) and the first one is opened here, so that a pipeline with a bad slide fails
 * to start with the slide's own message instead of failing in the streaming thread. */
static gboolean gst_openslide_src_start(GstBaseSrc *src)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(src);
  g_strfreev(self->paths);
  GST_OBJECT_LOCK(self);
  self->paths = self->locations && self->locations[0] ? g_strdupv(self->locations)
                                                      : gst_mexd_split_locations(self->location);
  GST_OBJECT_UNLOCK(self);
  if (!self->paths[0]) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                      ("No slide given: set the location (or locations) property."), (NULL));
    return FALSE;
  }
  if (!check_settings(self))
    return FALSE;
  g_autoptr(GError) error = NULL;
  for (int i = 0; self->paths[i]; i++)
    if (!mexd_file_check_regular(self->paths[i], "slide", &error)) {
      GST_MEXD_POST_ERROR(self, GST_MEXD_FAULT_SLIDE, error,
                          self->locations && self->locations[0] ? "locations" : "location");
      return FALSE;
    }
  self->next_path = 0;
  self->segment_sent = FALSE;
  if (!open_slide(self, self->paths[0], &error)) {
    close_slide(self);
    post_open_error(self, error);
    return FALSE;
  }
  self->next_path = 1;
  self->start_pending = TRUE;
  return TRUE;
}

static gboolean gst_openslide_src_stop(GstBaseSrc *src)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(src);
  close_slide(self);
  g_clear_pointer(&self->paths, g_strfreev);
  return TRUE;
}

static GstCaps *gst_openslide_src_get_caps(GstBaseSrc *src, GstCaps *filter)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(src);
  GST_OBJECT_LOCK(self);
  const gint size = self->tile_size;
  GST_OBJECT_UNLOCK(self);
  /* a tile size out of range fails the start with its own message (gst_mexd_check_ranges),
   * not a link that does not fit */
  GstCaps *caps = size >= 1 && size <= 16384
                      ? gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGB", "width",
                                            G_TYPE_INT, size, "height", G_TYPE_INT, size,
                                            "framerate", GST_TYPE_FRACTION, 0, 1, NULL)
                      : gst_static_pad_template_get_caps(&src_template);
  if (filter) {
    GstCaps *c = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(caps);
    caps = c;
  }
  return caps;
}

static GstFlowReturn gst_openslide_src_create(GstPushSrc *src, GstBuffer **out)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(src);
  GstPad *pad = GST_BASE_SRC_PAD(src);
  for (;;) {
    if (!self->reader) {
      const char *path = self->paths ? self->paths[self->next_path] : NULL;
      if (!path)
        return GST_FLOW_EOS;
      self->next_path++;
      g_autoptr(GError) error = NULL;
      if (!open_slide(self, path, &error)) {
        close_slide(self);
        post_open_error(self, error);
        return GST_FLOW_ERROR;
      }
      self->start_pending = TRUE;
    }
    if (self->start_pending) {
      self->start_pending = FALSE;
      int64_t w, h;
      mexd_slide_level_size(self->slide, 0, &w, &h);
      if (!self->segment_sent) { /* the segment goes before the first slide's start */
        /* (GstBaseSrc sends its own after create(): an identical second segment) */
        gst_pad_push_event(pad, gst_event_new_segment(&GST_BASE_SRC(src)->segment));
        self->segment_sent = TRUE;
      }
      gst_pad_push_event(pad, gst_mexd_event_new_slide_start(
                                  mexd_slide_name(self->slide), mexd_slide_path(self->slide), w,
                                  h, self->spec.mpp, self->spec.patch_size, self->n_tiles));
    }
    const uint8_t *rgb;
    int64_t idx;
    g_autoptr(GError) error = NULL;
    if (mexd_tile_reader_next(self->reader, &rgb, &idx, &error)) {
      gsize n = (gsize)self->spec.patch_size * self->spec.patch_size * 3;
      /* tile-size² × 3 bytes (up to 768 MiB): had without aborting */
      guint8 *px = gst_mexd_try_alloc(n, "a tile", &error);
      if (!px) {
        GST_ELEMENT_ERROR(self, RESOURCE, NO_SPACE_LEFT,
                          ("%s: %s (tile-size %d): lower tile-size.", mexd_slide_name(self->slide),
                           error->message, self->spec.patch_size),
                          (NULL));
        return GST_FLOW_ERROR;
      }
      memcpy(px, rgb, n);
      GstBuffer *buf = gst_buffer_new_wrapped(px, n);
      gst_buffer_add_mexd_tile_meta(buf, mexd_slide_name(self->slide), self->spec.level,
                                    self->coords[2 * idx], self->coords[2 * idx + 1],
                                    self->spec.patch_size, self->spec.ref_w, self->spec.mpp,
                                    idx);
      GST_BUFFER_OFFSET(buf) = (guint64)idx;
      self->sent++;
      *out = buf;
      return GST_FLOW_OK;
    }
    if (error) {
      post_open_error(self, error);
      return GST_FLOW_ERROR;
    }
    gst_pad_push_event(pad,
                       gst_mexd_event_new_slide_end(mexd_slide_name(self->slide), self->sent));
    close_slide(self);
  }
}

static void gst_openslide_src_set_property(GObject *object, guint id, const GValue *value,
                                           GParamSpec *pspec)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_LOCATION:
    gst_mexd_replace_string(&self->location, value);
    break;
  case PROP_LOCATIONS:
    g_strfreev(self->locations);
    self->locations = g_value_dup_boxed(value);
    break;
  case PROP_MAGNIFICATION: self->magnification = g_value_get_double(value); break;
  case PROP_MPP: self->mpp = g_value_get_double(value); break;
  case PROP_LEVEL: self->level = g_value_get_int(value); break;
  case PROP_TILE_SIZE: self->tile_size = g_value_get_int(value); break;
  case PROP_OVERLAP: self->overlap = g_value_get_int(value); break;
  case PROP_PRESET:
    gst_mexd_replace_string(&self->preset, value);
    break;
  case PROP_CONTOUR_FN: self->contour_fn = (GstMexdContourFn)g_value_get_enum(value); break;
  case PROP_THREADS: self->threads = g_value_get_int(value); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_openslide_src_get_property(GObject *object, guint id, GValue *value,
                                           GParamSpec *pspec)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
  case PROP_LOCATION: g_value_set_string(value, self->location); break;
  case PROP_LOCATIONS: g_value_set_boxed(value, self->locations); break;
  case PROP_MAGNIFICATION: g_value_set_double(value, self->magnification); break;
  case PROP_MPP: g_value_set_double(value, self->mpp); break;
  case PROP_LEVEL: g_value_set_int(value, self->level); break;
  case PROP_TILE_SIZE: g_value_set_int(value, self->tile_size); break;
  case PROP_OVERLAP: g_value_set_int(value, self->overlap); break;
  case PROP_PRESET: g_value_set_string(value, self->preset); break;
  case PROP_CONTOUR_FN: g_value_set_enum(value, self->contour_fn); break;
  case PROP_THREADS: g_value_set_int(value, self->threads); break;
  default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_openslide_src_finalize(GObject *object)
{
  GstOpenslideSrc *self = GST_OPENSLIDE_SRC(object);
  close_slide(self);
  g_strfreev(self->paths);
  g_free(self->location);
  g_strfreev(self->locations);
  g_free(self->preset);
  G_OBJECT_CLASS(gst_openslide_src_parent_class)->finalize(object);
}

static void gst_openslide_src_class_init(GstOpenslideSrcClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS(klass);
  GstElementClass *ec = GST_ELEMENT_CLASS(klass);
  GstBaseSrcClass *bc = GST_BASE_SRC_CLASS(klass);
  GstPushSrcClass *pc = GST_PUSH_SRC_CLASS(klass);
  oc->set_property = gst_openslide_src_set_property;
  oc->get_property = gst_openslide_src_get_property;
  oc->finalize = gst_openslide_src_finalize;
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  g_object_class_install_property(
      oc, PROP_LOCATION,
      g_param_spec_string("location", "Location",
                          "The slide file, or several separated by ';' (read one after another)",
                          NULL, rw));
  g_object_class_install_property(
      oc, PROP_LOCATIONS,
      g_param_spec_boxed("locations", "Locations",
                         "The slide files as a list (any path, ';' and ',' included; "
                         "gst-launch: locations=\"<a.svs,b.svs>\"); used instead of location "
                         "when set",
                         G_TYPE_STRV, rw));
  g_object_class_install_property(
      oc, PROP_MAGNIFICATION,
      gst_mexd_param_spec_double(
          "magnification", "Magnification",
          "Tiles at this magnification (20 = 20x; from the slide's objective "
          "power, else from its mpp); 0: use level",
          0, 1000, 0, rw));
  g_object_class_install_property(
      oc, PROP_MPP,
      gst_mexd_param_spec_double(
          "mpp", "Microns per pixel",
          "Tiles at this resolution (µm per pixel); 0: use magnification or level", 0, 1000, 0,
          rw));
  g_object_class_install_property(
      oc, PROP_LEVEL,
      gst_mexd_param_spec_int(
          "level", "Level",
          "Tiles read at this slide level without resizing (CLAM's patch_level), "
          "when neither magnification nor mpp is set",
          0, 64, 0, rw));
  g_object_class_install_property(
      oc, PROP_TILE_SIZE,
      gst_mexd_param_spec_int("tile-size", "Tile size", "Tile side in pixels", 1, 16384, 256, rw));
  g_object_class_install_property(oc, PROP_OVERLAP,
                                  gst_mexd_param_spec_int("overlap", "Overlap",
                                                          "Overlap of neighbouring tiles in pixels",
                                                          0, 16383, 0, rw));
  g_object_class_install_property(
      oc, PROP_PRESET,
      g_param_spec_string("preset", "Tissue preset",
                          "CLAM's segmentation preset: default, tcga, bwh_biopsy, bwh_resection "
                          "(another name fails the start)",
                          "default", rw));
  g_object_class_install_property(
      oc, PROP_CONTOUR_FN,
      g_param_spec_enum("contour-fn", "Tile test",
                        "Which tiles count as tissue: four_pt, four_pt_hard, center",
                        GST_TYPE_MEXD_CONTOUR_FN, GST_MEXD_CONTOUR_FN_FOUR_PT, rw));
  gst_type_mark_as_plugin_api(GST_TYPE_MEXD_CONTOUR_FN, 0);
  g_object_class_install_property(
      oc, PROP_THREADS,
      gst_mexd_param_spec_int("threads", "Threads",
                              "Threads reading tiles (0: the number of cores, at most 8)", 0, 1024,
                              0, rw));
  gst_element_class_add_static_pad_template(ec, &src_template);
  gst_element_class_set_static_metadata(
      ec, "OpenSlide tile source", "Source/Video",
      "Reads the tissue tiles of whole-slide images (OpenSlide), as CLAM cuts them",
      "The mexd project");
  bc->start = gst_openslide_src_start;
  bc->stop = gst_openslide_src_stop;
  bc->get_caps = gst_openslide_src_get_caps;
  pc->create = gst_openslide_src_create;
  GST_DEBUG_CATEGORY_INIT(gst_openslide_src_debug, "openslidesrc", 0, "OpenSlide tile source");
}

static void gst_openslide_src_init(GstOpenslideSrc *self)
{
  self->tile_size = 256;
  self->preset = g_strdup("default");
  self->contour_fn = GST_MEXD_CONTOUR_FN_FOUR_PT;
  gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
}
