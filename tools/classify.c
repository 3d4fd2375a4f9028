/* classify.c: `mexd classify` — whole slides through the GStreamer pipeline, one slide at a time.
 * This file holds the options, the pipeline's wiring and the printing; what a result is, when
 * one can be reused, the GeoJSON, the heatmap, the manifest, shards and the summary are
 * libmexd's (lib/pipeline/).
 *
 *   mexd classify SLIDE… | --manifest CSV [--shard I/N]  --backbone B --model M [--out DIR]
 *        [--device D] [--precision fp32|fp16|bf16] [--batch N] [--mag M | --mpp U | --level L]
 *        [--size 256] [--preset P] [--threads N] [--seed S] [--chains N] [--sampler card|ddim]
 *        [--steps K] [--eta E] [--heatmap-width 1024] [--force] [--json] [--quiet]
 *   mexd classify --merge --manifest CSV --out DIR --model M [--backbone B]
 *
 * Per slide, in DIR/<slide id>/ (the id is the file name without its extension, as CLAM's):
 *   features.h5    the CLAM feature file (mexdfeaturesink)
 *   heatmap.png    the routing (mexdheatmap thumbnail=true) over a thumbnail of the slide
 *   tiles.geojson  every tissue tile (level-0 polygon) with its score (adapter #1's attention),
 *                  its gate (the lesion experts' router gate) and the experts that selected it
 *   result.json    the result (schema mexd-result/1, lib/pipeline/result.h) with its identity:
 *                  the slide's content (OpenSlide's quickhash-1 and size), the backbone's and
 *                  the model's SHA-256 and every setting that changes the answer (grid, tile
 *                  size, preset, precision, sampler, steps, chains, seed, eta, routing mode,
 *                  heatmap width and score) — written last.
 * A slide is skipped only when its result.json is valid, its identity equals this run's and the
 * other files exist; otherwise its outputs are removed and it is classified again, saying why
 * ("its result was made otherwise: seed 3 → 5").  --force classifies every slide again.
 * Decision: the device, --batch and --threads are not part of the identity (they change the
 * time, not the answer beyond float rounding); the result records the device.
 * DIR/summary.csv: one row per slide of the run, rebuilt from the results it lists (RFC 4180
 * quoting: ids and paths with commas, quotes or line breaks survive).
 *
 * Many machines: --manifest CSV and --shard I/N (slide k goes to shard k mod N); a shard writes
 * no summary.csv, `mexd classify --merge` builds it from the results when all are done, checking
 * that they were made with this model (and backbone, when given) and with one set of settings.
 *
 * Errors: a slide that fails (its file, its tiles, its data) is reported and the run goes on
 * (DIR/<id>/error.txt holds the message, exit 1 at the end); a failure that is not the slide's
 * (the backbone, the model, the device, writing the outputs) is printed once, with the failing
 * element's own message, and stops the run (exit 1).  Bad usage (an option outside its range,
 * read from the elements' own properties) exits 2 before any work.
 *
 * MEXD_CLASSIFY_KILL_AFTER=K kills the process (SIGKILL) after its K-th classified slide: the
 * resume test's stand-in for an interruption. */
#include "mexd.h"

#include "../lib/mexd.h"
#include "../lib/train/classifier.h"
#include "gstmexdmeta.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  char *backbone, *model, *out, *device, *precision, *preset, *sampler, *manifest, *shard;
  double mag, mpp, eta;
  gboolean mag_given, mpp_given;
  int level, size, threads, batch, chains, steps, heatmap_width; /* level, steps G_MININT: not given */
  gint64 seed;
  gboolean force, json, quiet, merge;
  /* the run */
  char **classes;
  int T; /* the model's diffusion steps (0: no Diff-C) */
  MexdClassifierCalibration cal; /* the model file's (mexd eval --calibrate), if any */
  MexdIdentity *run;
  gboolean tty;
} Opts;

/* the files beside result.json */
static const char *const slide_files[] = {"features.h5", "heatmap.png", "tiles.geojson", NULL};

/* ---- the plugin ---- */

/* GStreamer with the mexd plugin: from GST_PLUGIN_PATH or the registry, else the build tree's
 * plugins/ beside this program (an uninstalled run), else the plugin folder of the installed copy
 * this program belongs to (found relative to it), else the prefix's plugin folder. */
static gboolean ensure_plugin(GError **error)
{
  gst_init(NULL, NULL);
  g_autoptr(GstElementFactory) f = gst_element_factory_find("openslidesrc");
  if (f)
    return TRUE;
  g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
  g_autofree char *dir = exe ? g_path_get_dirname(exe) : NULL;
  const char *cands[3] = {NULL, NULL, NULL};
  g_autofree char *c0 = dir ? g_build_filename(dir, "..", "plugins", "libgstmexd.so", NULL) : NULL;
  cands[0] = c0;
#ifdef MEXD_REL_PLUGIN_DIR
  /* an installed copy, wherever it was moved: <bindir>/../<libdir>/gstreamer-1.0 */
  g_autofree char *c1 =
      dir ? g_build_filename(dir, MEXD_REL_PLUGIN_DIR, "libgstmexd.so", NULL) : NULL;
  cands[1] = c1;
#endif
#ifdef MEXD_PLUGIN_DIR
  cands[2] = MEXD_PLUGIN_DIR "/libgstmexd.so";
#endif
  for (int i = 0; i < 3; i++) {
    if (!cands[i] || !g_file_test(cands[i], G_FILE_TEST_EXISTS))
      continue;
    g_autoptr(GError) e = NULL;
    GstPlugin *p = gst_plugin_load_file(cands[i], &e);
    if (p) {
      gst_registry_add_plugin(gst_registry_get(), p);
      gst_object_unref(p);
      return TRUE;
    }
  }
  return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                   "the mexd GStreamer plugin (libgstmexd.so) is not found: set GST_PLUGIN_PATH "
                   "to the build's plugins/ or install it");
}

/* The range of an element's numeric property, the one definition an option's range is read
 * from. */
static gboolean prop_range(const char *factory, const char *prop, double *lo, double *hi)
{
  g_autoptr(GstElementFactory) f = gst_element_factory_find(factory);
  g_autoptr(GstPluginFeature) loaded = f ? gst_plugin_feature_load(GST_PLUGIN_FEATURE(f)) : NULL;
  GType t = loaded ? gst_element_factory_get_element_type(GST_ELEMENT_FACTORY(loaded)) : 0;
  if (!t)
    return FALSE;
  GObjectClass *klass = g_type_class_ref(t);
  GParamSpec *p = g_object_class_find_property(klass, prop);
  gboolean ok = TRUE;
  if (p && G_IS_PARAM_SPEC_INT(p)) {
    *lo = G_PARAM_SPEC_INT(p)->minimum;
    *hi = G_PARAM_SPEC_INT(p)->maximum;
  } else if (p && G_IS_PARAM_SPEC_UINT64(p)) {
    *lo = (double)G_PARAM_SPEC_UINT64(p)->minimum;
    *hi = (double)G_PARAM_SPEC_UINT64(p)->maximum;
  } else if (p && G_IS_PARAM_SPEC_DOUBLE(p)) {
    *lo = G_PARAM_SPEC_DOUBLE(p)->minimum;
    *hi = G_PARAM_SPEC_DOUBLE(p)->maximum;
  } else {
    ok = FALSE;
  }
  g_type_class_unref(klass);
  return ok;
}

typedef struct {
  const char *option, *factory, *prop;
  double value;
  gboolean given, positive; /* positive: 0 (the property's "unset") is not a value */
} RangeCheck;

/* Every numeric option against its element property's range; a usage error names the option,
 * its value and the range. */
static gboolean check_ranges(const Opts *o, GError **error)
{
  RangeCheck checks[] = {
      {"--size", "openslidesrc", "tile-size", o->size, TRUE, FALSE},
      {"--mag", "openslidesrc", "magnification", o->mag, o->mag_given, TRUE},
      {"--mpp", "openslidesrc", "mpp", o->mpp, o->mpp_given, TRUE},
      {"--level", "openslidesrc", "level", o->level, o->level != G_MININT, FALSE},
      {"--threads", "openslidesrc", "threads", o->threads, TRUE, FALSE},
      {"--batch", "mexdembed", "batch-size", o->batch, TRUE, FALSE},
      {"--chains", "mexddiffc", "chains", o->chains, o->chains != G_MININT, FALSE},
      {"--steps", "mexddiffc", "steps", o->steps, o->steps != G_MININT, FALSE},
      {"--seed", "mexddiffc", "seed", (double)o->seed, o->seed != G_MININT64, FALSE},
      {"--eta", "mexddiffc", "eta", o->eta, TRUE, FALSE},
      {"--heatmap-width", "mexdheatmap", "width", o->heatmap_width, TRUE, FALSE},
  };
  for (guint i = 0; i < G_N_ELEMENTS(checks); i++) {
    const RangeCheck *c = &checks[i];
    double lo, hi;
    if (!c->given || !prop_range(c->factory, c->prop, &lo, &hi))
      continue;
    if (c->positive && lo <= 0)
      lo = 0;
    gboolean bad = !isfinite(c->value) || c->value < lo || c->value > hi ||
                   (c->positive && c->value <= 0);
    if (bad)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s %g is outside %g..%g%s", c->option,
                       c->value, lo, hi, c->positive ? " (and must be above 0)" : "");
  }
  if (o->seed < 0 && o->seed != G_MININT64)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--seed %" G_GINT64_FORMAT
                     " is negative (0..2^63−1)", o->seed);
  /* a --steps given is checked against the model's T, also for CARD (which takes all T) */
  if (o->steps != G_MININT && o->T > 0 && (o->steps < 2 || o->steps > o->T))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "--steps %d is outside 2..%d (the model's T)",
                     o->steps, o->T);
  return TRUE;
}

/* A number option's text (NaN and the infinities parse, and are then out of range). */
static gboolean parse_number(const char *text, const char *option, double *out, GError **error)
{
  char *end = NULL;
  double v = g_ascii_strtod(text, &end);
  if (!*text || end == text || *end)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s takes a number, not \"%s\"", option,
                     text);
  *out = v;
  return TRUE;
}

/* ---- identity ---- */

static gboolean run_identity(Opts *o, GError **error)
{
  o->run = mexd_identity_new();
  g_autofree char *mh = mexd_file_sha256(o->model, error);
  if (!mh)
    return FALSE;
  mexd_identity_set(o->run, "model", "%s", mh);
  if (o->backbone) {
    g_autofree char *bh = mexd_file_sha256(o->backbone, error);
    if (!bh)
      return FALSE;
    mexd_identity_set(o->run, "backbone", "%s", bh);
  }
  if (o->merge)
    return TRUE; /* --merge checks the files; the settings must agree among the results */
  mexd_identity_set(o->run, "precision", "%s", o->precision ? o->precision : "fp32");
  char v[G_ASCII_DTOSTR_BUF_SIZE];
  if (o->mag > 0)
    mexd_identity_set(o->run, "grid", "magnification %s", g_ascii_dtostr(v, sizeof v, o->mag));
  else if (o->mpp > 0)
    mexd_identity_set(o->run, "grid", "mpp %s", g_ascii_dtostr(v, sizeof v, o->mpp));
  else
    mexd_identity_set(o->run, "grid", "level %d", MAX(o->level, 0));
  mexd_identity_set(o->run, "tile_size", "%d", o->size);
  mexd_identity_set(o->run, "preset", "%s", o->preset ? o->preset : "default");
  gboolean ddim = o->sampler && g_str_equal(o->sampler, "ddim");
  mexd_identity_set(o->run, "sampler", "%s", ddim ? "ddim" : "card");
  if (ddim) {
    mexd_identity_set(o->run, "steps", "%d", o->steps);
    mexd_identity_set(o->run, "eta", "%s", g_ascii_dtostr(v, sizeof v, o->eta));
  }
  mexd_identity_set(o->run, "chains", "%d", o->chains);
  mexd_identity_set(o->run, "seed", "%" G_GINT64_FORMAT, o->seed);
  mexd_identity_set(o->run, "heatmap_width", "%d", o->heatmap_width);
  mexd_identity_set(o->run, "heatmap_score", "attention");
  return TRUE;
}

/* ---- one slide ---- */

typedef struct {
  const Opts *o;
  const MexdSlideEntry *e;
  int k, n;        /* this slide's number and the run's count */
  gint64 total;    /* tiles announced by slide-start */
  gint64 seen;     /* tiles into mexdembed */
  gint64 t0, last; /* µs */
} Progress;

static GstPadProbeReturn on_tile(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Progress *p = data;
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    GstEvent *ev = GST_PAD_PROBE_INFO_EVENT(info);
    if (gst_mexd_event_is_slide_start(ev, NULL))
      gst_structure_get_int64(gst_event_get_structure(ev), "tiles", &p->total);
    return GST_PAD_PROBE_OK;
  }
  p->seen++;
  gint64 now = g_get_monotonic_time();
  if (p->o->tty && !p->o->quiet && now - p->last > 250000) {
    p->last = now;
    double s = (now - p->t0) / 1e6, rate = p->seen / MAX(s, 1e-3);
    double eta = p->total > 0 && rate > 0 ? (p->total - p->seen) / rate : NAN;
    char etas[32] = "?";
    if (isfinite(eta))
      g_snprintf(etas, sizeof etas, "%.0f s", eta);
    fprintf(stderr, "\r\033[K[%d/%d] %s: %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT
                    " tiles, %.0f tiles/s, ETA %s",
            p->k, p->n, p->e->id, p->seen, p->total, rate, etas);
  }
  return GST_PAD_PROBE_OK;
}

static GstSample *last_sample(GstElement *pipe, const char *name)
{
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipe), name);
  GstSample *s = NULL, *x;
  while ((x = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 0))) {
    if (s)
      gst_sample_unref(s);
    s = x;
  }
  gst_object_unref(sink);
  return s;
}

typedef enum {
  SLIDE_OK,
  SLIDE_FAILED, /* the slide's own failure: report it and go on */
  RUN_FAILED,   /* not the slide's (backbone, model, device, outputs): stop the run */
} Outcome;

/* Whose failure an error message is: the source's (the slide's file and tiles) and any stream
 * error (the slide's data) are the slide's; the rest (a model that cannot be loaded, a device
 * that cannot be opened, an output that cannot be written) would fail every slide. */
static Outcome outcome_of(GstMessage *m, const GError *ge)
{
  const char *who = GST_MESSAGE_SRC(m) ? GST_OBJECT_NAME(GST_MESSAGE_SRC(m)) : "";
  /* a setting every slide shares (preset, overlap, eta without ddim): the run's, also from src */
  if (ge->domain == GST_RESOURCE_ERROR && ge->code == GST_RESOURCE_ERROR_SETTINGS)
    return RUN_FAILED;
  if (g_str_equal(who, "src") || ge->domain == GST_STREAM_ERROR)
    return SLIDE_FAILED;
  return RUN_FAILED;
}

static void set_props(GstElement *pipe, const char *el, const char *first, ...) G_GNUC_NULL_TERMINATED;

/* Sets properties of element `el` of the pipeline (g_object_set). */
static void set_props(GstElement *pipe, const char *el, const char *first, ...)
{
  GstElement *e = gst_bin_get_by_name(GST_BIN(pipe), el);
  va_list ap;
  va_start(ap, first);
  g_object_set_valist(G_OBJECT(e), first, ap);
  va_end(ap);
  gst_object_unref(e);
}

static void set_enum(GstElement *pipe, const char *el, const char *prop, const char *value)
{
  GstElement *e = gst_bin_get_by_name(GST_BIN(pipe), el);
  gst_util_set_object_arg(G_OBJECT(e), prop, value);
  gst_object_unref(e);
}

/* Builds the pipeline for slide e; its outputs go to dir. */
static GstElement *build_pipeline(const Opts *o, const MexdSlideEntry *e, const char *dir,
                                  GError **error)
{
  const char *desc =
      "openslidesrc name=src ! mexdembed name=embed ! tee name=t "
      "t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! mexdfeaturesink name=fs "
      "t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! mexdmoe name=moe "
      "! mexddiffc name=dc ! tee name=r "
      "r. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 "
      "! appsink name=res sync=false max-buffers=0 drop=false wait-on-eos=false "
      "r. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 "
      "! mexdheatmap name=hm thumbnail=true "
      "! appsink name=heat sync=false max-buffers=0 drop=false wait-on-eos=false";
  g_autoptr(GError) perr = NULL;
  GstElement *pipe = gst_parse_launch(desc, &perr);
  if (!pipe)
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED, "cannot build the pipeline: %s",
                          perr->message);
  g_autofree char *feat = g_build_filename(dir, "features.h5", NULL);
  const char *locations[] = {e->path, NULL};
  set_props(pipe, "src", "locations", locations, "threads", o->threads, "tile-size", o->size,
            NULL);
  if (o->mag > 0)
    set_props(pipe, "src", "magnification", o->mag, NULL);
  if (o->mpp > 0)
    set_props(pipe, "src", "mpp", o->mpp, NULL);
  if (o->level >= 0)
    set_props(pipe, "src", "level", o->level, NULL);
  if (o->preset) /* by name: a string property now, an enum later */
    set_enum(pipe, "src", "preset", o->preset);
  set_props(pipe, "embed", "model", o->backbone, "batch-size", o->batch, NULL);
  if (o->precision)
    set_enum(pipe, "embed", "precision", o->precision);
  set_props(pipe, "fs", "location", feat, NULL);
  set_props(pipe, "moe", "model", o->model, NULL);
  set_props(pipe, "dc", "model", o->model, "seed", (guint64)o->seed, "chains", o->chains,
            "steps", o->steps, "eta", o->eta, NULL);
  if (o->sampler)
    set_enum(pipe, "dc", "sampler", o->sampler);
  set_props(pipe, "hm", "width", o->heatmap_width, NULL);
  if (o->device) {
    set_props(pipe, "embed", "device", o->device, NULL);
    set_props(pipe, "moe", "device", o->device, NULL);
    set_props(pipe, "dc", "device", o->device, NULL);
  }
  return pipe;
}

/* The heatmap frame (opaque: over the thumbnail) as a PNG. */
static gboolean write_heatmap(const char *path, GstSample *hs, GError **error)
{
  const GstStructure *cs = gst_caps_get_structure(gst_sample_get_caps(hs), 0);
  int w = 0, h = 0;
  gst_structure_get_int(cs, "width", &w);
  gst_structure_get_int(cs, "height", &h);
  GstBuffer *b = gst_sample_get_buffer(hs);
  GstMapInfo mi;
  if (w <= 0 || h <= 0 || !gst_buffer_map(b, &mi, GST_MAP_READ))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "no heatmap frame");
  gboolean ok = mi.size >= (gsize)w * h * 4
                    ? mexd_heatmap_write_png(path, mi.data, w, h, error)
                    : mexd_fail(error, MEXD_ERROR_FORMAT, "the heatmap frame is too small");
  gst_buffer_unmap(b, &mi);
  return ok;
}

/* Runs slide e; on success *result holds its result (identity, path and time set). */
static Outcome classify_one(const Opts *o, const MexdSlideEntry *e, const MexdIdentity *want,
                            const char *dir, int k, int n, MexdSlideResult **result,
                            GError **error)
{
  GstElement *pipe = build_pipeline(o, e, dir, error);
  if (!pipe)
    return RUN_FAILED;
  Progress pr = {o, e, k, n, -1, 0, g_get_monotonic_time(), 0};
  GstElement *embed = gst_bin_get_by_name(GST_BIN(pipe), "embed");
  GstPad *sink = gst_element_get_static_pad(embed, "sink");
  gst_pad_add_probe(sink, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, on_tile,
                    &pr, NULL);
  gst_object_unref(sink);
  gst_object_unref(embed);

  Outcome out = SLIDE_OK;
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipe);
  GstStructure *msg = NULL;
  for (gboolean done = FALSE; !done;) {
    /* a failed start posts its error on the bus too: the first error is what is reported */
    GstMessage *m = gst_bus_timed_pop_filtered(
        bus, GST_CLOCK_TIME_NONE, GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    switch (GST_MESSAGE_TYPE(m)) {
    case GST_MESSAGE_ERROR: {
      g_autoptr(GError) ge = NULL;
      g_autofree char *dbg = NULL;
      gst_message_parse_error(m, &ge, &dbg);
      out = outcome_of(m, ge);
      const char *who = GST_MESSAGE_SRC(m) ? GST_OBJECT_NAME(GST_MESSAGE_SRC(m)) : "?";
      GstElement *el = GST_IS_ELEMENT(GST_MESSAGE_SRC(m)) ? GST_ELEMENT(GST_MESSAGE_SRC(m)) : NULL;
      GstElementFactory *f = el ? gst_element_get_factory(el) : NULL;
      const char *kind = f ? gst_plugin_feature_get_name(GST_PLUGIN_FEATURE(f)) : who;
      if (out == SLIDE_FAILED)
        g_set_error(error, MEXD_ERROR, MEXD_ERROR_IO, "%s", ge->message);
      else
        g_set_error(error, MEXD_ERROR, MEXD_ERROR_IO, "%s: %s", kind, ge->message);
      done = TRUE;
      break;
    }
    case GST_MESSAGE_EOS: done = TRUE; break;
    default: {
      const GstStructure *s = gst_message_get_structure(m);
      if (s && gst_structure_has_name(s, "mexd-result")) {
        if (msg)
          gst_structure_free(msg);
        msg = gst_structure_copy(s);
      }
      break;
    }
    }
    gst_message_unref(m);
  }
  double seconds = (g_get_monotonic_time() - pr.t0) / 1e6;
  GstSample *rs = out == SLIDE_OK ? last_sample(pipe, "res") : NULL;
  GstSample *hs = out == SLIDE_OK ? last_sample(pipe, "heat") : NULL;
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(pipe);
  if (o->tty && !o->quiet)
    fprintf(stderr, "\r\033[K");
  g_autoptr(MexdSlideResult) r = NULL;
  if (out == SLIDE_OK && (!msg || !rs || !hs)) {
    mexd_fail(error, MEXD_ERROR_FORMAT,
              "%s: the pipeline ended without a result (no tissue tile in the slide? try "
              "another --preset, or look at it with mexd tiles --geojson)",
              e->path);
    out = SLIDE_FAILED;
  }
  if (out == SLIDE_OK) {
    r = gst_mexd_result_from_structure(msg, error);
    out = r ? SLIDE_OK : SLIDE_FAILED;
  }
  if (out == SLIDE_OK) {
    GstMexdRoutingMeta *rm = gst_buffer_get_mexd_routing_meta(gst_sample_get_buffer(rs));
    g_autofree char *gj = g_build_filename(dir, "tiles.geojson", NULL);
    g_autofree char *png = g_build_filename(dir, "heatmap.png", NULL);
    if (!rm) {
      mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the result has no routing", e->path);
      out = SLIDE_FAILED;
    } else if (!mexd_geojson_write_scored_tiles(gj, rm->xy, rm->score, rm->gate, rm->experts,
                                                rm->n, rm->tile_extent, error) ||
               !write_heatmap(png, hs, error))
      out = RUN_FAILED; /* writing outputs failed: the disk, not the slide */
  }
  if (out == SLIDE_OK) {
    g_free(r->slide_id);
    r->slide_id = g_strdup(e->id);
    g_free(r->path);
    r->path = g_strdup(e->path);
    r->seconds = seconds;
    r->identity = mexd_identity_copy(want);
    if (o->cal.present) { /* the model's calibration: tempered probabilities, the referral */
      g_autofree double *p = g_new(double, r->n_classes);
      mexd_probs_temperature(r->probabilities ? r->probabilities : r->prior, 1, r->n_classes,
                             o->cal.temperature, p);
      mexd_slide_result_set_calibration(r, o->cal.temperature, p, o->cal.refer_spread);
    }
    *result = g_steal_pointer(&r);
  }
  if (rs)
    gst_sample_unref(rs);
  if (hs)
    gst_sample_unref(hs);
  if (msg)
    gst_structure_free(msg);
  return out;
}

/* The classes of the model file (for the summary's columns). */
static gboolean model_classes(Opts *o, GError **error)
{
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(o->model, error);
  if (!st)
    return FALSE;
  const char *fmt = mexd_safetensors_metadata(st, "mexd.format");
  const char *json = mexd_safetensors_metadata(st, "mexd.config");
  if (!fmt || !json || !g_str_equal(fmt, "mexd-model/1"))
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: not a MExD model file (mexd-model/1)",
                     o->model);
  MexdModelConfig cfg;
  if (!mexd_model_config_parse(&cfg, json, o->model, error))
    return FALSE;
  o->classes = g_strdupv(cfg.classes);
  o->T = cfg.has_diffusion ? cfg.T : 0;
  mexd_model_config_clear(&cfg);
  return mexd_classifier_read_calibration(st, o->model, &o->cal, error);
}

/* Refuses, before any work, an output of the run that is one of its inputs (links count). */
static gboolean check_outputs(const Opts *o, GArray *slides, int shard_i, int shard_n,
                              GError **error)
{
  g_autoptr(MexdInputSet) in = mexd_input_set_new();
  for (guint i = 0; i < slides->len; i++)
    mexd_input_set_add(in, g_array_index(slides, MexdSlideEntry, i).path);
  mexd_input_set_add(in, o->model);
  if (o->backbone)
    mexd_input_set_add(in, o->backbone);
  if (o->manifest)
    mexd_input_set_add(in, o->manifest);
  /* --out names a folder: an existing file there is refused (and named when it is an input) */
  if (g_file_test(o->out, G_FILE_TEST_EXISTS) && !g_file_test(o->out, G_FILE_TEST_IS_DIR)) {
    if (!mexd_input_set_check(in, o->out, error))
      return FALSE;
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: --out names a file, not a folder",
                     o->out);
  }
  g_autofree char *summary = g_build_filename(o->out, "summary.csv", NULL);
  if (!mexd_input_set_check(in, summary, error))
    return FALSE;
  for (guint i = 0; !o->merge && i < slides->len; i++) {
    if ((int)(i % (guint)shard_n) != shard_i)
      continue;
    const MexdSlideEntry *e = &g_array_index(slides, MexdSlideEntry, i);
    const char *names[] = {"result.json", "error.txt", slide_files[0], slide_files[1],
                           slide_files[2]};
    for (guint k = 0; k < G_N_ELEMENTS(names); k++) {
      g_autofree char *p = g_build_filename(o->out, e->id, names[k], NULL);
      if (!mexd_input_set_check(in, p, error))
        return FALSE;
    }
  }
  return TRUE;
}

static void print_json_line(const MexdSlideResult *r)
{
  g_autofree char *line = mexd_slide_result_to_json(r, FALSE);
  printf("%s\n", line);
  fflush(stdout);
}

static void opts_clear(Opts *o)
{
  g_free(o->backbone);
  g_free(o->model);
  g_free(o->out);
  g_free(o->device);
  g_free(o->precision);
  g_free(o->preset);
  g_free(o->sampler);
  g_free(o->manifest);
  g_free(o->shard);
  g_strfreev(o->classes);
  mexd_identity_free(o->run);
}

/* A slide's failure: said, its outputs removed, its message kept in DIR/<id>/error.txt. */
static void slide_failed(const char *dir, const GError *e)
{
  fprintf(stderr, "mexd classify: %s\n", e->message);
  mexd_slide_outputs_remove(dir, slide_files);
  g_autofree char *errp = g_build_filename(dir, "error.txt", NULL);
  g_autofree char *msg = g_strdup_printf("%s\n", e->message);
  mexd_file_write_atomic(errp, msg, -1, NULL);
}

/* Classifies the slides of shard shard_i/shard_n; returns the exit code (0, or 1 when a slide
 * failed or the run stopped: then *stopped is set). */
static int classify_all(Opts *o, GArray *slides, int shard_i, int shard_n, gboolean *stopped)
{
  const char *cmd = "mexd classify";
  int failed = 0, done = 0, skipped = 0, mine = 0, k = 0;
  for (guint i = 0; i < slides->len; i++)
    mine += (int)(i % (guint)shard_n) == shard_i;
  for (guint i = 0; i < slides->len; i++) {
    if ((int)(i % (guint)shard_n) != shard_i)
      continue;
    const MexdSlideEntry *e = &g_array_index(slides, MexdSlideEntry, i);
    k++;
    g_autofree char *dir = g_build_filename(o->out, e->id, NULL);
    g_autofree char *errp = g_build_filename(dir, "error.txt", NULL);
    g_autoptr(GError) se = NULL;
    /* the slide's identity: its content */
    g_autoptr(MexdSlide) slide = mexd_file_check_regular(e->path, "slide", &se)
                                     ? mexd_slide_open(e->path, &se)
                                     : NULL;
    g_autofree char *sid = slide ? mexd_slide_identity(slide, &se) : NULL;
    g_clear_pointer(&slide, mexd_slide_free);
    if (g_mkdir_with_parents(dir, 0755) != 0) {
      fprintf(stderr, "%s: %s: cannot create the folder: %s\n", cmd, dir, g_strerror(errno));
      *stopped = TRUE;
      return 1;
    }
    if (!sid) {
      failed++;
      slide_failed(dir, se);
      continue;
    }
    g_autoptr(MexdIdentity) want = mexd_identity_copy(o->run);
    mexd_identity_set(want, "slide", "%s", sid);
    g_autofree char *why = NULL;
    MexdSlideState st = mexd_slide_outputs_state(dir, slide_files, want, &why);
    if (st == MEXD_SLIDE_DONE && !o->force) {
      skipped++;
      if (!o->quiet)
        fprintf(stderr, "[%d/%d] %s: done before, skipped\n", k, mine, e->id);
      if (o->json) {
        g_autofree char *rp = g_build_filename(dir, "result.json", NULL);
        g_autoptr(MexdSlideResult) r = mexd_slide_result_read(rp, NULL);
        if (r)
          print_json_line(r);
      }
      continue;
    }
    if (!o->quiet && st != MEXD_SLIDE_TODO)
      fprintf(stderr, "[%d/%d] %s: classified again: %s\n", k, mine, e->id,
              st == MEXD_SLIDE_DONE ? "--force" : why);
    mexd_slide_outputs_remove(dir, slide_files);
    g_unlink(errp);
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(MexdSlideResult) r = NULL;
    Outcome out = classify_one(o, e, want, dir, k, mine, &r, &se);
    g_autofree char *rp = g_build_filename(dir, "result.json", NULL);
    if (out == SLIDE_OK && !mexd_slide_result_write(r, rp, &se))
      out = RUN_FAILED;
    if (out == RUN_FAILED) {
      fprintf(stderr, "%s: %s\n", cmd, se->message);
      fprintf(stderr, "%s: stopped: this failure is not the slide's; %d classified, %d done "
                      "before\n",
              cmd, done, skipped);
      mexd_slide_outputs_remove(dir, slide_files);
      *stopped = TRUE;
      return 1;
    }
    if (out == SLIDE_FAILED) {
      failed++;
      slide_failed(dir, se);
      continue;
    }
    done++;
    /* fault injection for the resume test: killed as an OOM kill or a power cut would */
    const char *kill_after = g_getenv("MEXD_CLASSIFY_KILL_AFTER");
    if (kill_after && done == atoi(kill_after))
      raise(SIGKILL);
    if (o->json)
      print_json_line(r);
    if (!o->quiet) {
      double s = (g_get_monotonic_time() - t0) / 1e6;
      fprintf(stderr, "[%d/%d] %s: %s (%" G_GINT64_FORMAT " tiles in %.1f s, %.0f tiles/s)%s\n",
              k, mine, e->id, r->classes[r->class_index], r->tiles, s, r->tiles / MAX(s, 1e-3),
              r->calibrated && r->refer == 1
                  ? "; REFER: the chains disagree more than the model's referral threshold"
                  : "");
    }
  }
  if (!o->quiet)
    fprintf(stderr, "%s: %d classified, %d done before, %d failed; results in %s\n", cmd, done,
            skipped, failed, o->out);
  return failed ? 1 : 0;
}

int mexd_cmd_classify(int argc, char **argv)
{
  const char *cmd = "mexd classify";
  Opts o;
  memset(&o, 0, sizeof o);
  o.level = G_MININT;
  o.steps = G_MININT;
  o.mag = o.mpp = 0;
  o.size = 256;
  o.threads = 2;
  o.batch = 64;
  o.chains = G_MININT; /* not given: 32, or a calibrated model's own (and the seed: 0) */
  o.seed = G_MININT64;
  o.heatmap_width = 1024;
  g_auto(GStrv) rest = NULL;
  g_autofree char *mag_s = NULL, *mpp_s = NULL; /* parsed below: a given NaN is not "not given" */
  GOptionEntry entries[] = {
      {"backbone", 'b', 0, G_OPTION_ARG_FILENAME, &o.backbone, "the backbone file", "B"},
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &o.model, "the MExD model file", "M"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &o.out, "output directory (mexd-classify)", "DIR"},
      {"manifest", 0, 0, G_OPTION_ARG_FILENAME, &o.manifest,
       "the slides: a CSV with a path column (and slide_id), or one path per line", "CSV"},
      {"shard", 0, 0, G_OPTION_ARG_STRING, &o.shard,
       "classify shard I of N of the manifest (slide k goes to shard k mod N)", "I/N"},
      {"merge", 0, 0, G_OPTION_ARG_NONE, &o.merge,
       "only build DIR/summary.csv from the results of the manifest's slides", NULL},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &o.device, "cpu | vulkan | vulkan:N", "D"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &o.precision, "backbone fp32 (default), fp16 or bf16 (cpu)",
       "P"},
      {"batch", 0, 0, G_OPTION_ARG_INT, &o.batch, "tiles per backbone batch (64; 1..4096)", "N"},
      {"mag", 0, 0, G_OPTION_ARG_STRING, &mag_s, "tiles at this magnification (e.g. 20)", "M"},
      {"mpp", 0, 0, G_OPTION_ARG_STRING, &mpp_s, "tiles at this resolution (µm per pixel)", "U"},
      {"level", 0, 0, G_OPTION_ARG_INT, &o.level, "tiles at this pyramid level (CLAM's; 0)", "L"},
      {"size", 0, 0, G_OPTION_ARG_INT, &o.size, "tile side in pixels (256)", "S"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &o.preset,
       "CLAM's segmentation preset: default, tcga, bwh_biopsy, bwh_resection", "P"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &o.threads, "slide reading threads (2; 0: the cores)",
       "N"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &o.seed,
       "noise seed of the diffusion chains (0; a model calibrated with a referral: its own)", "S"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &o.chains, "diffusion chains (32; calibrated: its own)",
       "N"},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &o.sampler,
       "card (default) or ddim (calibrated: its own)", "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &o.steps, "DDIM steps (50; calibrated: its own)", "K"},
      {"eta", 0, 0, G_OPTION_ARG_DOUBLE, &o.eta, "DDIM's eta (0: deterministic)", "E"},
      {"heatmap-width", 0, 0, G_OPTION_ARG_INT, &o.heatmap_width, "heatmap width (1024)", "W"},
      {"force", 0, 0, G_OPTION_ARG_NONE, &o.force, "classify finished slides again", NULL},
      {"json", 0, 0, G_OPTION_ARG_NONE, &o.json, "each slide's result as a JSON line on stdout",
       NULL},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &o.quiet, "no progress", NULL},
      {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL, "SLIDE…"},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("SLIDE… - classify whole slides");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "Each slide goes through openslidesrc ! mexdembed ! mexdmoe ! mexddiffc (and\n"
           "mexdfeaturesink, mexdheatmap); DIR/<slide id>/ gets result.json, features.h5,\n"
           "heatmap.png and tiles.geojson, DIR/summary.csv a row per slide.  A slide whose\n"
           "result was made from the same files with the same settings is skipped, so an\n"
           "interrupted run resumes; any change (model, backbone, slide, grid, sampler, seed…)\n"
           "classifies it again.");
  g_autoptr(GError) error = NULL;
  int rc = 0;
  int shard_i = 0, shard_n = 1;
  GArray *slides = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 2;
    goto out;
  }
  o.mag_given = mag_s != NULL;
  o.mpp_given = mpp_s != NULL;
  if ((mag_s && !parse_number(mag_s, "--mag", &o.mag, &error)) ||
      (mpp_s && !parse_number(mpp_s, "--mpp", &o.mpp, &error))) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 2;
    goto out;
  }
  if (!o.out)
    o.out = g_strdup("mexd-classify");
  if (o.shard && !mexd_shard_parse(o.shard, &shard_i, &shard_n, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 2;
    goto out;
  }
  const char *usage = NULL;
  if (o.shard && !o.manifest)
    usage = "--shard needs --manifest";
  else if (o.manifest && rest)
    usage = "give slides or --manifest, not both";
  else if (!o.manifest && !rest)
    usage = "give the slides (or --manifest CSV) (mexd classify --help)";
  else if (o.merge && !o.manifest)
    usage = "--merge needs --manifest";
  else if (!o.model || (!o.merge && !o.backbone))
    usage = "give --backbone B and --model M";
  else if (o.sampler && !g_str_equal(o.sampler, "card") && !g_str_equal(o.sampler, "ddim"))
    usage = "--sampler is card or ddim";
  else if (o.precision && !g_str_equal(o.precision, "fp32") && !g_str_equal(o.precision, "fp16") &&
           !g_str_equal(o.precision, "bf16"))
    usage = "--precision is fp32, fp16 or bf16";
  else if ((mag_s != NULL) + (mpp_s != NULL) + (o.level != G_MININT) > 1)
    usage = "give one of --mag, --mpp and --level";
  else if (o.preset && !mexd_tissue_preset(o.preset, &(MexdTissueParams){0}, NULL))
    usage = "--preset is default, tcga, bwh_biopsy or bwh_resection";
  else if (o.eta != 0 && !(o.sampler && g_str_equal(o.sampler, "ddim")))
    usage = "--eta is DDIM's: give --sampler ddim";
  if (usage) {
    fprintf(stderr, "%s: %s\n", cmd, usage);
    rc = 2;
    goto out;
  }
  if (o.manifest) {
    slides = mexd_slide_list_read_manifest(o.manifest, &error);
  } else {
    slides = mexd_slide_list_new();
    for (int i = 0; rest[i]; i++)
      mexd_slide_list_add(slides, rest[i], NULL);
  }
  if (!slides || !mexd_slide_list_check_ids(slides, &error) ||
      !mexd_file_check_regular(o.model, "model file", &error) ||
      (o.backbone && !mexd_file_check_regular(o.backbone, "backbone file", &error)) ||
      !model_classes(&o, &error) || (!o.merge && !ensure_plugin(&error))) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 1;
    goto out;
  }
  if (!o.merge && !check_ranges(&o, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 2;
    goto out;
  }
  /* a calibration's referral threshold holds for the sampler settings it was fitted with only
   * (lib/train/classifier.h): they are the defaults, and another one given is refused */
  if (o.T > 0) {
    MexdSampler smp = o.sampler && g_str_equal(o.sampler, "ddim") ? MEXD_SAMPLER_DDIM
                                                                   : MEXD_SAMPLER_CARD;
    int chains = o.chains == G_MININT ? 32 : o.chains, steps = o.steps == G_MININT ? 50 : o.steps;
    uint64_t seed = o.seed == G_MININT64 ? 0 : (uint64_t)o.seed;
    if (!mexd_calibration_sampler(&o.cal, o.model, "--seed", &smp, o.sampler != NULL, &chains,
                                  o.chains != G_MININT, &steps, o.steps != G_MININT, &seed,
                                  o.seed != G_MININT64, &error)) {
      fprintf(stderr, "%s: %s\n", cmd, error->message);
      rc = 2;
      goto out;
    }
    if (isfinite(o.cal.refer_spread)) {
      g_free(o.sampler);
      o.sampler = g_strdup(smp == MEXD_SAMPLER_DDIM ? "ddim" : "card");
      o.chains = chains;
      o.seed = (gint64)seed;
      o.steps = steps;
    }
  }
  if (o.chains == G_MININT)
    o.chains = 32;
  if (o.seed == G_MININT64)
    o.seed = 0;
  if (o.steps == G_MININT)
    o.steps = 50;
  if (!run_identity(&o, &error) || !check_outputs(&o, slides, shard_i, shard_n, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 1;
    goto out;
  }
  if (g_mkdir_with_parents(o.out, 0755) != 0) {
    fprintf(stderr, "%s: %s: cannot create: %s\n", cmd, o.out, g_strerror(errno));
    rc = 1;
    goto out;
  }
  o.tty = isatty(2);
  gboolean stopped = FALSE;
  if (!o.merge)
    rc = classify_all(&o, slides, shard_i, shard_n, &stopped);
  /* the summary: every slide of the run (a shard writes none: --merge builds it) */
  if (!stopped && (!o.shard || shard_n == 1) &&
      !mexd_summary_write(o.out, slides, (const char *const *)o.classes, o.run, NULL, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 1;
  }
out:
  if (slides)
    g_array_unref(slides);
  opts_clear(&o);
  return rc;
}
