/* classify.c: `mexd classify` — whole slides through the GStreamer pipeline, one slide at a time,
 * every output of a slide written atomically so that an interrupted run resumes where it stopped.
 *
 *   mexd classify SLIDE… | --manifest CSV [--shard I/N]  --backbone B --model M [--out DIR]
 *        [--device D] [--precision fp32|fp16] [--batch N] [--mag M | --mpp U | --level L]
 *        [--size 256] [--preset P] [--threads N] [--seed S] [--chains N] [--sampler card|ddim]
 *        [--steps K] [--heatmap-width 1024] [--force] [--json] [--quiet]
 *   mexd classify --merge --manifest CSV --out DIR
 *
 * Per slide, in DIR/<slide id>/ (the id is the file name without its extension, as CLAM's):
 *   features.h5    the CLAM feature file (mexdfeaturesink)
 *   heatmap.png    the Dyn-MoE routing (mexdheatmap) over a thumbnail of the slide
 *   tiles.geojson  every tissue tile (level-0 polygon) with its score (adapter #1's attention),
 *                  its gate (the lesion experts' router gate) and the experts that selected it
 *   result.json    the mexd-result message (class, probabilities, spread, prior, tiles, times)
 *                  plus the slide's path and the model files — written last: a slide whose
 *                  result.json exists is finished and skipped (unless --force).
 * DIR/summary.csv: one row per slide of the run, in the order given (slide_id, path, class, one
 * probability column per class, tiles); nothing in it depends on timing, so a run over shards
 * merged with --merge gives the same file as one process over the whole manifest.
 *
 * Many machines: --manifest CSV (a header with a `path` column and optionally `slide_id`; or one
 * path per line) and --shard I/N: slide k of the manifest (0-based) belongs to shard k mod N, so
 * N shards cover the manifest exactly once (pipelines/slurm-classify.sh runs one per array task);
 * a shard writes no summary.csv, `mexd classify --merge` builds it when all are done.
 *
 * Progress: on a terminal a line per slide rewritten as its tiles go through (tiles/s, ETA);
 * otherwise one line per finished slide.  --json prints each slide's result as a JSON line on
 * stdout.  Exit 0 when every slide is done, 1 when a slide failed (the others are still
 * classified; its error is in DIR/<id>/error.txt), 2 on bad usage.
 *
 * MEXD_CLASSIFY_KILL_AFTER=K kills the process (SIGKILL) after its K-th classified slide: the
 * resume test's stand-in for an interruption. */
#include "mexd.h"

#include "../lib/mexd.h"
#include "../plugins/gstmexdmeta.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  char *path;
  char *id;
} Entry;

typedef struct {
  char *backbone, *model, *out, *device, *precision, *preset, *sampler, *manifest, *shard;
  double mag, mpp;
  int level, size, threads, batch, chains, steps, heatmap_width;
  gint64 seed;
  gboolean force, json, quiet, merge;
  /* run state */
  char **classes;
  int n_classes;
  gboolean tty;
} Opts;

/* ---- the plugin ---- */

/* GStreamer with the mexd plugin: from GST_PLUGIN_PATH or the registry, else the build tree's
 * plugins/ beside this program (an uninstalled run), else the installed plugin directory. */
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
#ifdef MEXD_PLUGIN_DIR
  cands[1] = MEXD_PLUGIN_DIR "/libgstmexd.so";
#endif
  for (int i = 0; i < 2; i++) {
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

/* ---- slides ---- */

static void entry_clear(gpointer p)
{
  Entry *e = p;
  g_free(e->path);
  g_free(e->id);
}

static char *slide_id_of(const char *path)
{
  g_autofree char *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return g_strdup(base);
}

static gboolean valid_id(const char *id)
{
  return *id && !strchr(id, '/') && !g_str_equal(id, ".") && !g_str_equal(id, "..");
}

/* The slides of the manifest: `path` (and `slide_id`) columns of a CSV with a header, or one path
 * per line.  Relative paths are taken from the manifest's directory. */
static GArray *read_manifest(const char *file, GError **error)
{
  g_autofree char *text = NULL;
  g_autoptr(GError) e = NULL;
  if (!g_file_get_contents(file, &text, NULL, &e))
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read the manifest: %s", file,
                          e->message);
  g_autofree char *dir = g_path_get_dirname(file);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GArray *out = g_array_new(FALSE, TRUE, sizeof(Entry));
  g_array_set_clear_func(out, entry_clear);
  int col_path = -1, col_id = -1, first = 0;
  if (lines[0]) {
    g_auto(GStrv) h = g_strsplit(g_strstrip(lines[0]), ",", -1);
    for (int i = 0; h[i]; i++) {
      char *c = g_strstrip(h[i]);
      if (!g_ascii_strcasecmp(c, "path"))
        col_path = i;
      else if (!g_ascii_strcasecmp(c, "slide_id"))
        col_id = i;
    }
    if (col_path >= 0)
      first = 1;
    else if (col_id >= 0) {
      g_array_unref(out);
      return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                            "%s: the header has slide_id but no path column", file);
    }
  }
  for (int ln = first; lines[ln]; ln++) {
    char *l = g_strstrip(lines[ln]);
    if (!*l || *l == '#')
      continue;
    Entry en = {NULL, NULL};
    if (col_path >= 0) {
      g_auto(GStrv) cells = g_strsplit(l, ",", -1);
      guint n = g_strv_length(cells);
      if ((guint)col_path >= n || (col_id >= 0 && (guint)col_id >= n)) {
        g_array_unref(out);
        return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s:%d: too few cells", file, ln + 1);
      }
      en.path = g_strdup(g_strstrip(cells[col_path]));
      if (col_id >= 0)
        en.id = g_strdup(g_strstrip(cells[col_id]));
    } else {
      en.path = g_strdup(l);
    }
    if (!g_path_is_absolute(en.path)) {
      char *p = g_build_filename(dir, en.path, NULL);
      g_free(en.path);
      en.path = p;
    }
    if (!en.id)
      en.id = slide_id_of(en.path);
    g_array_append_val(out, en);
  }
  if (out->len == 0) {
    g_array_unref(out);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT, "%s: the manifest lists no slide", file);
  }
  return out;
}

static gboolean check_ids(GArray *slides, GError **error)
{
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < slides->len; i++) {
    Entry *e = &g_array_index(slides, Entry, i);
    if (!valid_id(e->id))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: \"%s\" is not a usable slide id",
                       e->path, e->id);
    const char *other = g_hash_table_lookup(seen, e->id);
    if (other)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "%s and %s have the same slide id \"%s\" (their outputs would collide)",
                       other, e->path, e->id);
    g_hash_table_insert(seen, e->id, e->path);
  }
  return TRUE;
}

/* ---- outputs ---- */

static gboolean write_png(const char *path, const guint8 *rgb, int w, int h, GError **error)
{
  g_autofree char *tmp = g_strdup_printf("%s.tmp%d", path, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f)
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write: %s", tmp, g_strerror(errno));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  volatile gboolean ok = FALSE;
  if (png && info && !setjmp(png_jmpbuf(png))) {
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
      png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, NULL);
    ok = TRUE;
  }
  png_destroy_write_struct(&png, &info);
  ok = fclose(f) == 0 && ok;
  if (!ok || g_rename(tmp, path) != 0) {
    g_unlink(tmp);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write the PNG", path);
  }
  return TRUE;
}

/* The heatmap overlay (RGBA, w×h) composited over a thumbnail of the slide. */
static gboolean write_heatmap(const char *slide_path, const char *png_path, const guint8 *rgba,
                              int w, int h, GError **error)
{
  g_autoptr(MexdSlide) s = mexd_slide_open(slide_path, error);
  if (!s)
    return FALSE;
  int64_t W0, H0;
  mexd_slide_level_size(s, 0, &W0, &H0);
  int level = mexd_slide_best_level(s, (double)W0 / w);
  int64_t lw, lh;
  mexd_slide_level_size(s, level, &lw, &lh);
  if (lw > 16384 || lh > 16384 || lw * lh > ((int64_t)1 << 26))
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: no level small enough for a thumbnail (%" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                     " at level %d)",
                     slide_path, lw, lh, level);
  g_autofree guint8 *lv = g_new(guint8, (size_t)lw * lh * 3);
  g_autofree uint32_t *scratch = g_new(uint32_t, (size_t)lw * lh);
  if (!mexd_slide_read_rgb(s, 0, 0, level, (int)lw, (int)lh, lv, scratch, error))
    return FALSE;
  g_autofree guint8 *thumb = g_new(guint8, (size_t)w * h * 3);
  mexd_image_resize_u8(lv, (int)lw, (int)lh, 3, thumb, w, h);
  for (int64_t i = 0; i < (int64_t)w * h; i++) {
    double a = rgba[i * 4 + 3] / 255.0;
    for (int c = 0; c < 3; c++)
      thumb[i * 3 + c] = (guint8)lround((1 - a) * thumb[i * 3 + c] + a * rgba[i * 4 + c]);
  }
  return write_png(png_path, thumb, w, h, error);
}

static gboolean write_geojson(const char *path, const GstMexdRoutingMeta *rm, GError **error)
{
  GString *s = g_string_new("{\"type\": \"FeatureCollection\", \"features\": [");
  gboolean first = TRUE;
  for (gint64 i = 0; i < rm->n; i++) {
    if (rm->xy[2 * i] < 0)
      continue;
    gint64 x = rm->xy[2 * i], y = rm->xy[2 * i + 1], e = rm->tile_extent;
    char sc[G_ASCII_DTOSTR_BUF_SIZE], gt[G_ASCII_DTOSTR_BUF_SIZE];
    g_ascii_formatd(sc, sizeof sc, "%.6g", rm->score[i]);
    g_ascii_formatd(gt, sizeof gt, "%.6g", rm->gate[i]);
    g_string_append_printf(
        s,
        "%s\n{\"type\": \"Feature\", \"geometry\": {\"type\": \"Polygon\", \"coordinates\": "
        "[[[%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
        "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
        "], [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]]]}, \"properties\": {\"objectType\": "
        "\"tile\", \"index\": %" G_GINT64_FORMAT ", \"score\": %s, \"gate\": %s, \"experts\": [",
        first ? "" : ",", x, y, x + e, y, x + e, y + e, x, y + e, x, y, i, sc, gt);
    gboolean fe = TRUE;
    for (int k = 0; k < 32; k++)
      if (rm->experts[i] & (1u << k)) {
        g_string_append_printf(s, "%s%d", fe ? "" : ", ", k);
        fe = FALSE;
      }
    g_string_append_printf(s, "], \"measurements\": {\"attention\": %s, \"gate\": %s}}}", sc,
                           gt);
    first = FALSE;
  }
  g_string_append(s, "\n]}\n");
  gboolean ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
  g_string_free(s, TRUE);
  return ok;
}

static void add_doubles(JsonBuilder *b, const char *name, const GValue *arr)
{
  json_builder_set_member_name(b, name);
  json_builder_begin_array(b);
  for (guint i = 0; arr && i < gst_value_array_get_size(arr); i++)
    json_builder_add_double_value(b, g_value_get_double(gst_value_array_get_value(arr, i)));
  json_builder_end_array(b);
}

static char *result_json(const Opts *o, const Entry *e, const GstStructure *r, double seconds)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "slide_id");
  json_builder_add_string_value(b, e->id);
  json_builder_set_member_name(b, "path");
  json_builder_add_string_value(b, e->path);
  json_builder_set_member_name(b, "class");
  json_builder_add_string_value(b, gst_structure_get_string(r, "class"));
  gint ci = 0;
  gst_structure_get_int(r, "class-index", &ci);
  json_builder_set_member_name(b, "class_index");
  json_builder_add_int_value(b, ci);
  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (int c = 0; c < o->n_classes; c++)
    json_builder_add_string_value(b, o->classes[c]);
  json_builder_end_array(b);
  add_doubles(b, "probabilities", gst_structure_get_value(r, "probabilities"));
  add_doubles(b, "spread", gst_structure_get_value(r, "spread"));
  add_doubles(b, "prior", gst_structure_get_value(r, "prior"));
  gint64 tiles = -1;
  gst_structure_get_int64(r, "tiles", &tiles);
  json_builder_set_member_name(b, "tiles");
  json_builder_add_int_value(b, tiles);
  gint chains = 0;
  gst_structure_get_int(r, "chains", &chains);
  json_builder_set_member_name(b, "chains");
  json_builder_add_int_value(b, chains);
  json_builder_set_member_name(b, "seed");
  json_builder_add_int_value(b, o->seed);
  json_builder_set_member_name(b, "backbone");
  json_builder_add_string_value(b, o->backbone);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, o->model);
  const char *ms[3] = {"ms-adapter1", "ms-moe", "ms-diffusion"};
  json_builder_set_member_name(b, "ms");
  json_builder_begin_object(b);
  for (int k = 0; k < 3; k++) {
    double v = 0;
    gst_structure_get_double(r, ms[k], &v);
    json_builder_set_member_name(b, ms[k] + 3);
    json_builder_add_double_value(b, v);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "seconds");
  json_builder_add_double_value(b, seconds);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  char *txt = json_generator_to_data(gen, NULL);
  g_object_unref(b);
  return txt;
}

/* ---- one slide ---- */

typedef struct {
  const Opts *o;
  const Entry *e;
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

static void set_if(GstElement *pipe, const char *el, const char *prop, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* Sets property `prop` of element `el` from a string (gst_util_set_object_arg). */
static void set_if(GstElement *pipe, const char *el, const char *prop, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *v = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  GstElement *e = gst_bin_get_by_name(GST_BIN(pipe), el);
  gst_util_set_object_arg(G_OBJECT(e), prop, v);
  gst_object_unref(e);
}

static gboolean classify_one(const Opts *o, const Entry *e, int k, int n, char **json_out,
                             GError **error)
{
  g_autofree char *dir = g_build_filename(o->out, e->id, NULL);
  if (g_mkdir_with_parents(dir, 0755) != 0)
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot create: %s", dir, g_strerror(errno));
  if (!g_file_test(e->path, G_FILE_TEST_EXISTS))
    return mexd_fail(error, MEXD_ERROR_NOT_FOUND, "%s: no such slide", e->path);
  const char *desc =
      "openslidesrc name=src ! mexdembed name=embed ! tee name=t "
      "t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! mexdfeaturesink name=fs "
      "t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! mexdmoe name=moe "
      "! mexddiffc name=dc ! tee name=r "
      "r. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 "
      "! appsink name=res sync=false max-buffers=0 drop=false wait-on-eos=false "
      "r. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! mexdheatmap name=hm "
      "! appsink name=heat sync=false max-buffers=0 drop=false wait-on-eos=false";
  g_autoptr(GError) perr = NULL;
  GstElement *pipe = gst_parse_launch(desc, &perr);
  if (!pipe)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED, "cannot build the pipeline: %s",
                     perr->message);
  g_autofree char *feat = g_build_filename(dir, "features.h5", NULL);
  set_if(pipe, "src", "location", "%s", e->path);
  set_if(pipe, "src", "threads", "%d", o->threads);
  set_if(pipe, "src", "tile-size", "%d", o->size);
  if (o->mag > 0)
    set_if(pipe, "src", "magnification", "%g", o->mag);
  if (o->mpp > 0)
    set_if(pipe, "src", "mpp", "%g", o->mpp);
  if (o->level >= 0)
    set_if(pipe, "src", "level", "%d", o->level);
  if (o->preset)
    set_if(pipe, "src", "preset", "%s", o->preset);
  set_if(pipe, "embed", "model", "%s", o->backbone);
  set_if(pipe, "embed", "batch-size", "%d", o->batch);
  if (o->precision)
    set_if(pipe, "embed", "precision", "%s", o->precision);
  set_if(pipe, "fs", "location", "%s", feat);
  set_if(pipe, "moe", "model", "%s", o->model);
  set_if(pipe, "dc", "model", "%s", o->model);
  set_if(pipe, "dc", "seed", "%" G_GINT64_FORMAT, o->seed);
  set_if(pipe, "dc", "chains", "%d", o->chains);
  if (o->sampler)
    set_if(pipe, "dc", "sampler", "%s", o->sampler);
  set_if(pipe, "dc", "steps", "%d", o->steps);
  set_if(pipe, "hm", "width", "%d", o->heatmap_width);
  if (o->device) {
    set_if(pipe, "embed", "device", "%s", o->device);
    set_if(pipe, "moe", "device", "%s", o->device);
    set_if(pipe, "dc", "device", "%s", o->device);
  }
  Progress pr = {o, e, k, n, -1, 0, g_get_monotonic_time(), 0};
  GstElement *embed = gst_bin_get_by_name(GST_BIN(pipe), "embed");
  GstPad *sink = gst_element_get_static_pad(embed, "sink");
  gst_pad_add_probe(sink, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, on_tile,
                    &pr, NULL);
  gst_object_unref(sink);
  gst_object_unref(embed);

  gboolean ok = gst_element_set_state(pipe, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE;
  GstBus *bus = gst_element_get_bus(pipe);
  GstStructure *result = NULL;
  for (gboolean done = FALSE; !done;) {
    GstMessage *m = gst_bus_timed_pop_filtered(
        bus, GST_CLOCK_TIME_NONE, GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    switch (GST_MESSAGE_TYPE(m)) {
    case GST_MESSAGE_ERROR: {
      g_autoptr(GError) ge = NULL;
      g_autofree char *dbg = NULL;
      gst_message_parse_error(m, &ge, &dbg);
      if (ok)
        g_set_error(error, MEXD_ERROR, MEXD_ERROR_IO, "%s: %s", e->path, ge->message);
      ok = FALSE;
      done = TRUE;
      break;
    }
    case GST_MESSAGE_EOS: done = TRUE; break;
    default: {
      const GstStructure *s = gst_message_get_structure(m);
      if (s && gst_structure_has_name(s, "mexd-result")) {
        if (result)
          gst_structure_free(result);
        result = gst_structure_copy(s);
      }
      break;
    }
    }
    gst_message_unref(m);
  }
  if (!ok && error && !*error)
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_IO, "%s: the pipeline did not start", e->path);
  double seconds = (g_get_monotonic_time() - pr.t0) / 1e6;
  GstSample *rs = ok ? last_sample(pipe, "res") : NULL;
  GstSample *hs = ok ? last_sample(pipe, "heat") : NULL;
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(pipe);
  if (o->tty && !o->quiet)
    fprintf(stderr, "\r\033[K");
  if (ok && (!result || !rs || !hs)) {
    ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                   "%s: the pipeline ended without a result (no tissue tile in the slide?)",
                   e->path);
  }
  if (ok) {
    GstMexdRoutingMeta *rm = gst_buffer_get_mexd_routing_meta(gst_sample_get_buffer(rs));
    g_autofree char *gj = g_build_filename(dir, "tiles.geojson", NULL);
    ok = rm ? write_geojson(gj, rm, error)
            : mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the result has no routing", e->path);
  }
  if (ok) {
    GstCaps *caps = gst_sample_get_caps(hs);
    GstStructure *cs = gst_caps_get_structure(caps, 0);
    int w = 0, h = 0;
    gst_structure_get_int(cs, "width", &w);
    gst_structure_get_int(cs, "height", &h);
    GstMapInfo mi;
    GstBuffer *b = gst_sample_get_buffer(hs);
    g_autofree char *png = g_build_filename(dir, "heatmap.png", NULL);
    if (w > 0 && h > 0 && gst_buffer_map(b, &mi, GST_MAP_READ)) {
      ok = mi.size >= (gsize)w * h * 4 ? write_heatmap(e->path, png, mi.data, w, h, error)
                                       : mexd_fail(error, MEXD_ERROR_FORMAT, "heatmap too small");
      gst_buffer_unmap(b, &mi);
    } else {
      ok = mexd_fail(error, MEXD_ERROR_FORMAT, "%s: no heatmap frame", e->path);
    }
  }
  if (ok) {
    g_autofree char *js = result_json(o, e, result, seconds);
    g_autofree char *rp = g_build_filename(dir, "result.json", NULL);
    ok = g_file_set_contents(rp, js, -1, error);
    if (ok && json_out)
      *json_out = g_steal_pointer(&js);
  }
  if (rs)
    gst_sample_unref(rs);
  if (hs)
    gst_sample_unref(hs);
  if (result)
    gst_structure_free(result);
  return ok;
}

/* ---- the summary ---- */

static gboolean summary_row(const Opts *o, const Entry *e, GString *s, GError **error)
{
  g_autofree char *rp = g_build_filename(o->out, e->id, "result.json", NULL);
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) je = NULL;
  if (!json_parser_load_from_file(p, rp, &je))
    return mexd_fail(error, MEXD_ERROR_NOT_FOUND, "%s: not classified yet (%s)", e->id,
                     je->message);
  JsonObject *r = json_node_get_object(json_parser_get_root(p));
  JsonArray *probs = json_object_get_array_member(r, "probabilities");
  if (!probs || (int)json_array_get_length(probs) != o->n_classes)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: its probabilities do not fit the model", rp);
  g_string_append_printf(s, "%s,%s,%s", e->id, e->path,
                         json_object_get_string_member(r, "class"));
  for (int c = 0; c < o->n_classes; c++)
    g_string_append_printf(s, ",%.6f", json_array_get_double_element(probs, c));
  g_string_append_printf(s, ",%" G_GINT64_FORMAT "\n", json_object_get_int_member(r, "tiles"));
  return TRUE;
}

/* DIR/summary.csv over the slides of the run that are finished; FALSE (the file still written)
 * naming how many are not. */
static gboolean write_summary(const Opts *o, GArray *slides, GError **error)
{
  GString *s = g_string_new("slide_id,path,class");
  for (int c = 0; c < o->n_classes; c++)
    g_string_append_printf(s, ",p_%s", o->classes[c]);
  g_string_append(s, ",tiles\n");
  int missing = 0;
  const char *first = NULL;
  for (guint i = 0; i < slides->len; i++) {
    Entry *e = &g_array_index(slides, Entry, i);
    g_autoptr(GError) re = NULL;
    if (!summary_row(o, e, s, &re)) {
      if (!missing++)
        first = e->id;
    }
  }
  g_autofree char *path = g_build_filename(o->out, "summary.csv", NULL);
  gboolean ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
  g_string_free(s, TRUE);
  if (ok && missing)
    ok = mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                   "%s: %d of %u slides have no result yet (%s…): the summary lists the others",
                   path, missing, slides->len, first);
  return ok;
}

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
  o->n_classes = cfg.n_classes;
  mexd_model_config_clear(&cfg);
  return TRUE;
}

int mexd_cmd_classify(int argc, char **argv)
{
  const char *cmd = "mexd classify";
  Opts o;
  memset(&o, 0, sizeof o);
  o.level = -1;
  o.size = 256;
  o.threads = 2;
  o.batch = 64;
  o.chains = 32;
  o.steps = 50;
  o.heatmap_width = 1024;
  g_auto(GStrv) rest = NULL;
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
      {"precision", 0, 0, G_OPTION_ARG_STRING, &o.precision, "backbone fp32 (default) or fp16",
       "P"},
      {"batch", 0, 0, G_OPTION_ARG_INT, &o.batch, "tiles per backbone batch (64)", "N"},
      {"mag", 0, 0, G_OPTION_ARG_DOUBLE, &o.mag, "tiles at this magnification (e.g. 20)", "M"},
      {"mpp", 0, 0, G_OPTION_ARG_DOUBLE, &o.mpp, "tiles at this resolution (µm per pixel)", "U"},
      {"level", 0, 0, G_OPTION_ARG_INT, &o.level, "tiles at this pyramid level (CLAM's; 0)", "L"},
      {"size", 0, 0, G_OPTION_ARG_INT, &o.size, "tile side in pixels (256)", "S"},
      {"preset", 0, 0, G_OPTION_ARG_STRING, &o.preset,
       "CLAM's segmentation preset: default, tcga, bwh_biopsy, bwh_resection", "P"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &o.threads, "slide reading threads (2)", "N"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &o.seed, "noise seed of the diffusion chains (0)", "S"},
      {"chains", 0, 0, G_OPTION_ARG_INT, &o.chains, "diffusion chains (32)", "N"},
      {"sampler", 0, 0, G_OPTION_ARG_STRING, &o.sampler, "card (default) or ddim", "NAME"},
      {"steps", 0, 0, G_OPTION_ARG_INT, &o.steps, "DDIM steps (50)", "K"},
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
           "heatmap.png and tiles.geojson, DIR/summary.csv a row per slide.  Finished slides\n"
           "are skipped, so an interrupted run resumes.");
  g_autoptr(GError) error = NULL;
  int rc = 0;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    rc = 2;
    goto out;
  }
  if (!o.out)
    o.out = g_strdup("mexd-classify");
  int shard_i = 0, shard_n = 1;
  if (o.shard && (sscanf(o.shard, "%d/%d", &shard_i, &shard_n) != 2 || shard_n < 1 ||
                  shard_i < 0 || shard_i >= shard_n)) {
    fprintf(stderr, "%s: --shard is I/N with 0 ≤ I < N, not \"%s\"\n", cmd, o.shard);
    rc = 2;
    goto out;
  }
  if (o.shard && !o.manifest) {
    fprintf(stderr, "%s: --shard needs --manifest\n", cmd);
    rc = 2;
    goto out;
  }
  if (o.manifest && rest) {
    fprintf(stderr, "%s: give slides or --manifest, not both\n", cmd);
    rc = 2;
    goto out;
  }
  if (!o.manifest && !rest) {
    fprintf(stderr, "%s: give the slides (or --manifest CSV) (mexd classify --help)\n", cmd);
    rc = 2;
    goto out;
  }
  if (!o.model || (!o.merge && !o.backbone)) {
    fprintf(stderr, "%s: give --backbone B and --model M\n", cmd);
    rc = 2;
    goto out;
  }
  if (o.sampler && !g_str_equal(o.sampler, "card") && !g_str_equal(o.sampler, "ddim")) {
    fprintf(stderr, "%s: --sampler is card or ddim, not \"%s\"\n", cmd, o.sampler);
    rc = 2;
    goto out;
  }
  if (o.precision && !g_str_equal(o.precision, "fp32") && !g_str_equal(o.precision, "fp16")) {
    fprintf(stderr, "%s: --precision is fp32 or fp16, not \"%s\"\n", cmd, o.precision);
    rc = 2;
    goto out;
  }
  if ((o.mag > 0) + (o.mpp > 0) + (o.level >= 0) > 1) {
    fprintf(stderr, "%s: give one of --mag, --mpp and --level\n", cmd);
    rc = 2;
    goto out;
  }
  if (o.batch < 1 || o.threads < 1 || o.size < 16 || o.chains < 1 || o.heatmap_width < 16) {
    fprintf(stderr, "%s: --batch, --threads, --chains must be ≥ 1, --size and --heatmap-width "
                    "≥ 16\n",
            cmd);
    rc = 2;
    goto out;
  }
  GArray *slides = NULL;
  if (o.manifest) {
    slides = read_manifest(o.manifest, &error);
  } else {
    slides = g_array_new(FALSE, TRUE, sizeof(Entry));
    g_array_set_clear_func(slides, entry_clear);
    for (int i = 0; rest[i]; i++) {
      Entry en = {g_strdup(rest[i]), slide_id_of(rest[i])};
      g_array_append_val(slides, en);
    }
  }
  if (!slides || !check_ids(slides, &error) || !model_classes(&o, &error) ||
      (!o.merge && !ensure_plugin(&error))) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    if (slides)
      g_array_unref(slides);
    rc = 1;
    goto out;
  }
  if (g_mkdir_with_parents(o.out, 0755) != 0) {
    fprintf(stderr, "%s: %s: cannot create: %s\n", cmd, o.out, g_strerror(errno));
    g_array_unref(slides);
    rc = 1;
    goto out;
  }
  o.tty = isatty(2);
  int failed = 0, done = 0, skipped = 0;
  if (!o.merge) {
    int mine = 0, k = 0;
    for (guint i = 0; i < slides->len; i++)
      mine += (int)(i % (guint)shard_n) == shard_i;
    for (guint i = 0; i < slides->len; i++) {
      if ((int)(i % (guint)shard_n) != shard_i)
        continue;
      Entry *e = &g_array_index(slides, Entry, i);
      k++;
      g_autofree char *rp = g_build_filename(o.out, e->id, "result.json", NULL);
      if (!o.force && g_file_test(rp, G_FILE_TEST_EXISTS)) {
        skipped++;
        if (!o.quiet)
          fprintf(stderr, "[%d/%d] %s: done before, skipped\n", k, mine, e->id);
        continue;
      }
      g_autoptr(GError) se = NULL;
      g_autofree char *js = NULL;
      gint64 t0 = g_get_monotonic_time();
      g_autofree char *errp = g_build_filename(o.out, e->id, "error.txt", NULL);
      if (!classify_one(&o, e, k, mine, &js, &se)) {
        failed++;
        fprintf(stderr, "%s: %s\n", cmd, se->message);
        g_autofree char *msg = g_strdup_printf("%s\n", se->message);
        g_file_set_contents(errp, msg, -1, NULL);
        continue;
      }
      g_unlink(errp);
      done++;
      /* fault injection for the resume test: killed as an OOM kill or a power cut would */
      const char *kill_after = g_getenv("MEXD_CLASSIFY_KILL_AFTER");
      if (kill_after && done == atoi(kill_after))
        raise(SIGKILL);
      if (o.json) {
        g_autoptr(JsonParser) p = json_parser_new();
        if (json_parser_load_from_data(p, js, -1, NULL)) {
          g_autoptr(JsonGenerator) g = json_generator_new();
          json_generator_set_root(g, json_parser_get_root(p));
          g_autofree char *line = json_generator_to_data(g, NULL);
          printf("%s\n", line);
          fflush(stdout);
        }
      }
      if (!o.quiet) {
        g_autofree char *rpath = g_build_filename(o.out, e->id, "result.json", NULL);
        g_autoptr(JsonParser) p = json_parser_new();
        const char *cls = "?";
        gint64 tiles = 0;
        if (json_parser_load_from_file(p, rpath, NULL)) {
          JsonObject *r = json_node_get_object(json_parser_get_root(p));
          cls = json_object_get_string_member(r, "class");
          tiles = json_object_get_int_member(r, "tiles");
        }
        double s = (g_get_monotonic_time() - t0) / 1e6;
        fprintf(stderr, "[%d/%d] %s: %s (%" G_GINT64_FORMAT " tiles in %.1f s, %.0f tiles/s)\n",
                k, mine, e->id, cls, tiles, s, tiles / MAX(s, 1e-3));
      }
    }
  }
  /* the summary: every slide of the run (a shard writes none: --merge builds it) */
  if (!o.shard || shard_n == 1) {
    if (!write_summary(&o, slides, &error)) {
      fprintf(stderr, "%s: %s\n", cmd, error->message);
      rc = 1;
    }
  }
  if (failed)
    rc = 1;
  if (!o.quiet && !o.merge)
    fprintf(stderr, "%s: %d classified, %d done before, %d failed; results in %s\n", cmd, done,
            skipped, failed, o.out);
  g_array_unref(slides);
out:
  g_free(o.backbone);
  g_free(o.model);
  g_free(o.out);
  g_free(o.device);
  g_free(o.precision);
  g_free(o.preset);
  g_free(o.sampler);
  g_free(o.manifest);
  g_free(o.shard);
  g_strfreev(o.classes);
  return rc;
}
