/* test-gst.c: GstHarness tests of the mexd GStreamer elements (plugins/).
 *
 * Runs with GST_PLUGIN_PATH at the build's plugins/ (meson sets it).  Slide tests need
 * MEXD_TEST_SLIDE (tests/gst-check.sh passes a generated slide); the others run anywhere. */
#include "fixture-dir.h"
#include "mexd.h"

#include "gstmexdcontext.h"
#include "gstmexdmeta.h"

#include <glib/gstdio.h>
#include <gst/app/gstappsrc.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <math.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define MEXD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEXD_ASAN 1
#endif
#endif

static char *fixture(const char *sub, const char *name)
{
  g_autofree char *dir = mexd_test_fixture_dir(sub);
  g_assert_nonnull(dir);
  return g_build_filename(dir, name, NULL);
}

static void test_registry(void)
{
  const char *elements[] = {"openslidesrc", "mexdembed",  "mexdfeaturesink",
                            "mexdfeaturesrc", "mexdmoe", "mexddiffc", "mexdheatmap"};
  for (size_t i = 0; i < G_N_ELEMENTS(elements); i++) {
    g_autoptr(GstElementFactory) f = gst_element_factory_find(elements[i]);
    if (!f)
      g_error("element %s is not registered (GST_PLUGIN_PATH=%s)", elements[i],
              g_getenv("GST_PLUGIN_PATH"));
    g_assert_nonnull(gst_element_factory_get_metadata(f, GST_ELEMENT_METADATA_DESCRIPTION));
    g_autoptr(GstElement) e = gst_element_factory_create(f, NULL);
    guint n;
    g_autofree GParamSpec **props = g_object_class_list_properties(G_OBJECT_GET_CLASS(e), &n);
    for (guint k = 0; k < n; k++) /* every property documented */
      g_assert_true(g_param_spec_get_blurb(props[k]) && *g_param_spec_get_blurb(props[k]));
  }
}

/* Buffers and events of openslidesrc over `location`: counts slide starts/ends and tiles.  (The
 * harness keeps buffers and events in separate queues, so their interleaving is not seen here;
 * each tile's meta gives its slide and index, which restarts at 0 with each slide.) */
static void run_src(const char *location, int *starts, int *ends, int64_t *tiles)
{
  GstHarness *h = gst_harness_new("openslidesrc");
  g_object_set(h->element, "location", location, "preset", "bwh_biopsy", "tile-size", 128,
               "threads", 2, NULL);
  gst_harness_play(h);
  *starts = *ends = 0;
  *tiles = 0;
  GArray *per_slide = g_array_new(FALSE, TRUE, sizeof(int64_t));
  int64_t expect = 0;
  GstBuffer *buf = NULL;
  while (gst_harness_pull_until_eos(h, &buf) && buf) { /* NULL at EOS */
    GstMexdTileMeta *m = gst_buffer_get_mexd_tile_meta(buf);
    g_assert_nonnull(m);
    if (m->index == 0 && *tiles > 0) { /* a new slide */
      g_array_append_val(per_slide, expect);
      expect = 0;
    }
    g_assert_cmpint(m->index, ==, expect);
    g_assert_cmpint(m->tile_size, ==, 128);
    g_assert_cmpuint(gst_buffer_get_size(buf), ==, 128 * 128 * 3);
    expect++;
    (*tiles)++;
    gst_buffer_unref(buf);
  }
  g_array_append_val(per_slide, expect);
  GstEvent *ev;
  int64_t announced = -1;
  g_autofree char *slide = NULL;
  while ((ev = gst_harness_try_pull_event(h))) {
    const char *id;
    if (gst_mexd_event_is_slide_start(ev, &id)) {
      g_assert_true(GST_EVENT_IS_STICKY(ev));
      g_assert_true(gst_structure_get_int64(gst_event_get_structure(ev), "tiles", &announced));
      g_assert_cmpint(announced, ==, g_array_index(per_slide, int64_t, *starts));
      g_free(slide);
      slide = g_strdup(id);
      (*starts)++;
    } else if (gst_mexd_event_is_slide_end(ev, &id)) {
      int64_t n;
      g_assert_true(gst_structure_get_int64(gst_event_get_structure(ev), "tiles", &n));
      g_assert_cmpint(n, ==, announced);
      g_assert_cmpstr(id, ==, slide);
      (*ends)++;
    }
    gst_event_unref(ev);
  }
  g_array_unref(per_slide);
  gst_harness_teardown(h);
}

static void test_src(void)
{
  const char *path = g_getenv("MEXD_TEST_SLIDE");
  if (!path) {
    g_test_skip("MEXD_TEST_SLIDE is not set (tests/gst-check.sh sets it)");
    return;
  }
  int starts, ends;
  int64_t tiles;
  run_src(path, &starts, &ends, &tiles);
  g_assert_cmpint(starts, ==, 1);
  g_assert_cmpint(ends, ==, 1);
  g_assert_cmpint(tiles, >, 10);
  /* the tiles are those of mexd_tile_grid */
  g_autoptr(MexdSlide) s = mexd_slide_open(path, NULL);
  MexdTissueParams p;
  mexd_tissue_preset("bwh_biopsy", &p, NULL);
  g_autoptr(MexdTissue) t = mexd_slide_tissue(s, -1, &p, NULL);
  MexdGridSpec spec;
  g_assert_true(mexd_grid_spec_level(s, 0, 128, 128, &spec, NULL));
  g_autofree int32_t *coords = NULL;
  g_assert_cmpint(mexd_tile_grid(s, t, &spec, &coords), ==, tiles);
  /* three slides in a row, one stream */
  g_autofree char *three = g_strdup_printf("%s;%s;%s", path, path, path);
  int64_t tiles3;
  run_src(three, &starts, &ends, &tiles3);
  g_assert_cmpint(starts, ==, 3);
  g_assert_cmpint(ends, ==, 3);
  g_assert_cmpint(tiles3, ==, 3 * tiles);
}

/* Runs `desc` to the end (at most 60 s: no hang); returns the first error posted (a parse
 * or link error has the GST_PARSE_ERROR domain), or NULL at EOS. */
static GError *run_pipeline_error(const char *desc)
{
  GError *perr = NULL;
  GstElement *pipe = gst_parse_launch(desc, &perr);
  if (perr) { /* caps that do not fit fail at linking, bad property values at parsing */
    if (pipe)
      gst_object_unref(pipe);
    return perr;
  }
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *msg =
      gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND, GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  GError *out = NULL;
  if (!msg)
    g_error("%s: neither an error nor EOS within 60 s (a hang)", desc);
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR)
    gst_message_parse_error(msg, &out, NULL);
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(pipe);
  return out;
}

/* Runs `desc` to the end; returns the error message posted, or NULL. */
static char *run_pipeline(const char *desc)
{
  g_autoptr(GError) e = run_pipeline_error(desc);
  return e ? g_strdup(e->message) : NULL;
}

/* Expects `desc` to fail with an error holding `needle` (and of `domain` unless it is 0). */
static void expect_error(const char *desc, GQuark domain, const char *needle)
{
  gint64 t0 = g_get_monotonic_time();
  g_autoptr(GError) e = run_pipeline_error(desc);
  if (!e)
    g_error("%s: ended without an error", desc);
  g_test_message("%s\n    -> %s (%s %d, %.2f s)", desc, e->message, g_quark_to_string(e->domain),
                 e->code, (g_get_monotonic_time() - t0) / 1e6);
  if (!strstr(e->message, needle))
    g_error("%s: the error \"%s\" does not name %s", desc, e->message, needle);
  if (domain && e->domain != domain)
    g_error("%s: the error \"%s\" is %s, not %s", desc, e->message, g_quark_to_string(e->domain),
            g_quark_to_string(domain));
}

static void test_src_errors(void)
{
  g_autofree char *missing = run_pipeline("openslidesrc location=/nonexistent/slide.svs ! fakesink");
  g_assert_nonnull(missing);
  g_assert_nonnull(strstr(missing, "/nonexistent/slide.svs"));
  g_test_message("missing: %s", missing);
  g_autofree char *png = fixture("backbones", "odd-size.png");
  g_autofree char *desc = g_strdup_printf("openslidesrc location=%s ! fakesink", png);
  g_autofree char *notslide = run_pipeline(desc);
  g_assert_nonnull(notslide);
  g_assert_nonnull(strstr(notslide, "PNG image"));
  g_test_message("not a slide: %s", notslide);
  g_autofree char *nolocation = run_pipeline("openslidesrc ! fakesink");
  g_assert_nonnull(strstr(nolocation, "location"));
}

/* mexdembed: features equal the library's, batches of batch-size, the rest at slide end. */
static void test_embed(void)
{
  g_autofree char *model = fixture("backbones", "resnet-tiny.safetensors");
  /* properties in the description: gst_harness_new() would start the element before they are
   * set */
  g_autofree char *desc = g_strdup_printf("mexdembed model=%s device=cpu batch-size=4", model);
  GstHarness *h = gst_harness_new_parse(desc);
  gst_harness_set_src_caps_str(
      h, "video/x-raw,format=RGB,width=40,height=40,framerate=0/1");
  gst_harness_play(h);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  g_autoptr(MexdBackbone) bb = mexd_backbone_load(model, be, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  const int64_t D = mexd_backbone_config(bb)->output_dim;
  const int n = 10;
  g_autofree guint8 *px = g_malloc(n * 40 * 40 * 3);
  for (int i = 0; i < n * 40 * 40 * 3; i++)
    px[i] = (guint8)((i * 37 + i / 97) & 0xff);
  g_autofree float *want = g_new(float, n * D);
  g_assert_true(mexd_backbone_embed(bb, px, n, 40, 40, want, NULL, &error));
  gst_harness_push_event(h, gst_mexd_event_new_slide_start("s1", "x", 400, 400, 0.5, 40, n));
  for (int i = 0; i < n; i++) {
    GstBuffer *b = gst_buffer_new_allocate(NULL, 40 * 40 * 3, NULL);
    gst_buffer_fill(b, 0, px + (size_t)i * 40 * 40 * 3, 40 * 40 * 3);
    gst_buffer_add_mexd_tile_meta(b, "s1", 0, 40 * i, 7, 40, 40, 0.5, i);
    GST_BUFFER_PTS(b) = i * GST_SECOND;
    g_assert_cmpint(gst_harness_push(h, b), ==, GST_FLOW_OK);
    /* a full batch is submitted to the device; its features come out when the next batch is
     * submitted (two batches in flight) or at the slide end */
    g_assert_cmpuint(gst_harness_buffers_in_queue(h), ==, i < 7 ? 0 : 4);
  }
  gst_harness_push_event(h, gst_mexd_event_new_slide_end("s1", n));
  g_assert_cmpuint(gst_harness_buffers_in_queue(h), ==, n);
  for (int i = 0; i < n; i++) {
    GstBuffer *b = gst_harness_pull(h);
    g_assert_cmpuint(gst_buffer_n_memory(b), ==, 1);
    g_assert_cmpuint(gst_buffer_get_size(b), ==, D * sizeof(float));
    GstMexdTileMeta *m = gst_buffer_get_mexd_tile_meta(b);
    g_assert_nonnull(m);
    g_assert_cmpint(m->index, ==, i);
    g_assert_cmpint(m->x, ==, 40 * i);
    g_assert_cmpstr(m->slide_id, ==, "s1");
    g_assert_cmpuint(GST_BUFFER_PTS(b), ==, i * GST_SECOND);
    GstMapInfo map;
    gst_buffer_map(b, &map, GST_MAP_READ);
    g_assert_cmpmem(map.data, map.size, want + (size_t)i * D, D * sizeof(float));
    gst_buffer_unmap(b, &map);
    gst_buffer_unref(b);
  }
  /* the slide end comes after the features; the output caps say D */
  gboolean saw_end = FALSE;
  GstEvent *ev;
  while ((ev = gst_harness_try_pull_event(h))) {
    saw_end = saw_end || gst_mexd_event_is_slide_end(ev, NULL);
    gst_event_unref(ev);
  }
  g_assert_true(saw_end);
  g_autoptr(GstCaps) caps = gst_pad_get_current_caps(h->sinkpad);
  g_autofree char *dims = g_strdup_printf("%" G_GINT64_FORMAT, D);
  g_assert_cmpstr(gst_structure_get_string(gst_caps_get_structure(caps, 0), "dimensions"), ==,
                  dims);
  gst_harness_teardown(h);
}

static void test_embed_errors(void)
{
  g_autofree char *m1 = run_pipeline(
      "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! "
      "mexdembed model=/nonexistent/model.safetensors ! fakesink");
  g_assert_nonnull(m1);
  g_assert_nonnull(strstr(m1, "/nonexistent/model.safetensors"));
  g_test_message("missing model: %s", m1);
  g_autofree char *m2 = run_pipeline(
      "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! "
      "mexdembed ! fakesink");
  g_assert_nonnull(strstr(m2, "model"));
  /* a model file that is not a backbone (the MExD fixture model) */
  g_autofree char *dir = mexd_test_fixture_dir("backbones");
  g_autofree char *notbb = g_build_filename(dir, "prep.safetensors", NULL);
  g_autofree char *d3 = g_strdup_printf(
      "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! "
      "mexdembed model=%s ! fakesink", notbb);
  g_autofree char *m3 = run_pipeline(d3);
  g_assert_nonnull(m3);
  g_test_message("not a backbone: %s", m3);
  /* tiles of another format do not link */
  g_autofree char *model = fixture("backbones", "resnet-tiny.safetensors");
  g_autofree char *d4 = g_strdup_printf(
      "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=32,height=32 ! "
      "mexdembed model=%s device=cpu ! fakesink", model);
  g_autofree char *m4 = run_pipeline(d4);
  g_assert_nonnull(m4);
  g_test_message("GRAY8 tiles: %s", m4);
}

/* mexdfeaturesink: one CLAM file per slide, named by the slide id. */
static void test_featuresink(void)
{
  g_autofree char *dir = g_dir_make_tmp("mexd-gst-XXXXXX", NULL);
  g_autofree char *loc = g_build_filename(dir, "%s.h5", NULL);
  g_autofree char *desc = g_strdup_printf("mexdfeaturesink location=%s", loc);
  GstHarness *h = gst_harness_new_parse(desc);
  gst_harness_set_src_caps_str(h, "other/tensors,format=static,num_tensors=1,types=float32,"
                                  "dimensions=3,framerate=0/1");
  gst_harness_play(h);
  const char *ids[] = {"alpha", "beta"};
  for (int s = 0; s < 2; s++) {
    gst_harness_push_event(h, gst_mexd_event_new_slide_start(ids[s], "x", 1000, 1000, 0.5, 256,
                                                             2 + s));
    for (int i = 0; i < 2 + s; i++) {
      float v[3] = {(float)s, (float)i, 0.5f};
      GstBuffer *b = gst_buffer_new_allocate(NULL, sizeof v, NULL);
      gst_buffer_fill(b, 0, v, sizeof v);
      gst_buffer_add_mexd_tile_meta(b, ids[s], 1, 256 * i, 512, 256, 512, 1.0, i);
      g_assert_cmpint(gst_harness_push(h, b), ==, GST_FLOW_OK);
    }
    if (s == 0)
      gst_harness_push_event(h, gst_mexd_event_new_slide_end(ids[s], 2));
  }
  gst_harness_push_event(h, gst_event_new_eos()); /* EOS ends the second slide */
  gst_harness_teardown(h);
  for (int s = 0; s < 2; s++) {
    g_autofree char *path = g_strdup_printf("%s/%s.h5", dir, ids[s]);
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdBag) bag = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
    g_assert_no_error(error);
    g_assert_cmpint(bag->n, ==, 2 + s);
    g_assert_cmpint(bag->d, ==, 3);
    g_assert_cmpfloat(bag->features[3 * 1 + 1], ==, 1.0f);
    g_assert_cmpfloat(bag->features[0], ==, (float)s);
    g_assert_cmpint(bag->coords[2], ==, 256);
    g_assert_cmpint(bag->coords[3], ==, 512);
    g_assert_cmpint(bag->patch_level, ==, 1);
    g_assert_cmpint(bag->patch_size, ==, 256);
    g_remove(path);
  }
  g_rmdir(dir);
}

/* mexdmoe / mexddiffc errors: a message a user can act on, and a clean stop. */
static void test_moe_errors(void)
{
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *bag = fixture("mexd", "bag-n7.npy");
  g_autofree char *vit48 = fixture("backbones", "vit-tiny.safetensors");
  g_autofree char *d1 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=/nonexistent/mexd.safetensors ! fakesink", bag);
  g_autofree char *m1 = run_pipeline(d1);
  g_assert_nonnull(m1);
  g_assert_nonnull(strstr(m1, "/nonexistent/mexd.safetensors"));
  g_test_message("missing model: %s", m1);
  /* features of another backbone (48-d) into a 32-d model */
  g_autofree char *d2 = g_strdup_printf(
      "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=64,height=64 ! "
      "mexdembed model=%s device=cpu ! mexdmoe model=%s device=cpu ! fakesink",
      vit48, model);
  g_autofree char *m2 = run_pipeline(d2);
  g_assert_nonnull(m2);
  g_test_message("48-d features, 32-d model: %s", m2);
  g_assert_true(strstr(m2, "48") != NULL);
  /* a bad routing mode and sampler */
  g_autofree char *d3 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=%s mode=fancy ! fakesink", bag, model);
  g_autofree char *m3 = run_pipeline(d3);
  g_assert_nonnull(strstr(m3, "fancy"));
  g_autofree char *d4 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=%s device=cpu ! mexddiffc model=%s "
      "sampler=euler ! fakesink", bag, model, model);
  g_autofree char *m4 = run_pipeline(d4);
  g_assert_nonnull(strstr(m4, "euler"));
  /* a feature file that is not one */
  g_autofree char *d5 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=%s ! fakesink", model, model);
  g_autofree char *m5 = run_pipeline(d5);
  g_assert_nonnull(strstr(m5, "model-e2.safetensors"));
  g_test_message("not a feature file: %s", m5);
}

/* A scanner's program: tiles pushed through appsrc as they come off the device, slide events
 * around each slide, the results read from the bus; equal to the library on the same tiles. */
static void test_appsrc_scanner(void)
{
  g_autofree char *vit = fixture("gst", "vit-d32.safetensors");
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *desc = g_strdup_printf(
      "appsrc name=scanner format=time caps=video/x-raw,format=RGB,width=64,height=64,"
      "framerate=0/1 ! mexdembed name=e model=%s batch-size=3 ! mexdmoe name=m model=%s "
      "! mexddiffc name=d model=%s seed=4 chains=8 ! fakesink",
      vit, model, model);
  g_autoptr(GError) error = NULL;
  GstElement *pipe = gst_parse_launch(desc, &error);
  g_assert_no_error(error);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipe), "scanner");
  /* the application chooses the device of the whole pipeline: the cpu backend */
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  GstContext *ctx = gst_mexd_backend_context_new(be);
  gst_element_set_context(pipe, ctx);
  gst_context_unref(ctx);
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  const int tiles[2] = {5, 4};
  g_autoptr(MexdBackbone) bb = mexd_backbone_load(vit, be, MEXD_DTYPE_F32, &error);
  g_autoptr(MexdModel) m = mexd_model_load(model, be, &error);
  g_assert_no_error(error);
  float want[2][2];
  for (int sl = 0; sl < 2; sl++) {
    g_autofree char *id = g_strdup_printf("scan-%d", sl);
    g_assert_true(gst_element_send_event(
        src, gst_mexd_event_new_slide_start(id, "", 640, 640, 0.5, 64, tiles[sl])));
    g_autofree guint8 *px = g_malloc(tiles[sl] * 64 * 64 * 3);
    for (int i = 0; i < tiles[sl] * 64 * 64 * 3; i++)
      px[i] = (guint8)((i * (sl + 3) + i / 191) & 0xff);
    for (int t = 0; t < tiles[sl]; t++) {
      GstBuffer *b = gst_buffer_new_allocate(NULL, 64 * 64 * 3, NULL);
      gst_buffer_fill(b, 0, px + (size_t)t * 64 * 64 * 3, 64 * 64 * 3);
      gst_buffer_add_mexd_tile_meta(b, id, 0, 64 * t, 0, 64, 64, 0.5, t);
      g_assert_cmpint(gst_app_src_push_buffer(GST_APP_SRC(src), b), ==, GST_FLOW_OK);
    }
    g_assert_true(gst_element_send_event(src, gst_mexd_event_new_slide_end(id, tiles[sl])));
    /* the library on the same tiles */
    g_autofree float *f = g_new(float, tiles[sl] * 32);
    g_assert_true(mexd_backbone_embed(bb, px, tiles[sl], 64, 64, f, NULL, &error));
    MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
    opt.seed = 4;
    opt.chains = 8;
    g_autoptr(MexdResult) r = mexd_model_forward(m, f, tiles[sl], 32, &opt, NULL, &error);
    g_assert_no_error(error);
    want[sl][0] = r->probs[0];
    want[sl][1] = r->probs[1];
  }
  gst_app_src_end_of_stream(GST_APP_SRC(src));
  GstBus *bus = gst_element_get_bus(pipe);
  int results = 0;
  for (;;) {
    GstMessage *msg = gst_bus_timed_pop_filtered(
        bus, 60 * GST_SECOND, GST_MESSAGE_ELEMENT | GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    g_assert_nonnull(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      g_autoptr(GError) e = NULL;
      gst_message_parse_error(msg, &e, NULL);
      g_error("pipeline error: %s", e->message);
    }
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) {
      gst_message_unref(msg);
      break;
    }
    const GstStructure *s = gst_message_get_structure(msg);
    if (gst_structure_has_name(s, "mexd-result")) {
      g_autofree char *id = g_strdup_printf("scan-%d", results);
      g_assert_cmpstr(gst_structure_get_string(s, "slide-id"), ==, id);
      gint64 n;
      g_assert_true(gst_structure_get_int64(s, "tiles", &n));
      g_assert_cmpint(n, ==, tiles[results]);
      const GValue *probs = gst_structure_get_value(s, "probabilities");
      g_assert_cmpuint(gst_value_array_get_size(probs), ==, 2);
      for (int c = 0; c < 2; c++)
        g_assert_cmpfloat_with_epsilon(
            g_value_get_double(gst_value_array_get_value(probs, c)), want[results][c], 1e-6);
      /* the rest of the mexd-result/1 schema (lib/pipeline/result.h) */
      g_assert_cmpstr(gst_structure_get_string(s, "schema"), ==, MEXD_RESULT_SCHEMA);
      const GValue *classes = gst_structure_get_value(s, "classes");
      g_assert_cmpuint(gst_value_array_get_size(classes), ==, 2);
      gint ci, steps, chains;
      g_assert_true(gst_structure_get_int(s, "class-index", &ci));
      g_assert_cmpstr(gst_structure_get_string(s, "class"), ==,
                      g_value_get_string(gst_value_array_get_value(classes, (guint)ci)));
      g_assert_cmpstr(gst_structure_get_string(s, "sampler"), ==, "card");
      g_assert_true(gst_structure_get_int(s, "steps", &steps));
      g_assert_true(gst_structure_get_int(s, "chains", &chains));
      g_assert_cmpint(chains, ==, 8);
      guint64 seed;
      g_assert_true(gst_structure_get_uint64(s, "seed", &seed));
      g_assert_cmpuint(seed, ==, 4);
      gdouble eta;
      g_assert_true(gst_structure_get_double(s, "eta", &eta));
      g_assert_cmpfloat(eta, ==, 0.0);
      const char *mode = gst_structure_get_string(s, "mode");
      g_assert_true(!g_strcmp0(mode, "paper") || !g_strcmp0(mode, "official"));
      g_assert_nonnull(strstr(gst_structure_get_string(s, "device"), "cpu"));
      g_assert_false(gst_structure_has_field(s, "path")); /* the scanner's slides have no file */
      g_assert_true(gst_structure_has_field(s, "prior") && gst_structure_has_field(s, "spread"));
      /* and it reads back as a result */
      g_autoptr(GError) rerr = NULL;
      g_autoptr(MexdSlideResult) back = gst_mexd_result_from_structure(s, &rerr);
      g_assert_no_error(rerr);
      g_assert_cmpstr(back->slide_id, ==, id);
      g_assert_cmpfloat_with_epsilon(back->probabilities[0], want[results][0], 1e-6);
      results++;
    }
    gst_message_unref(msg);
  }
  g_assert_cmpint(results, ==, 2);
  /* every element ran on the application's backend */
  const char *names[] = {"e", "m", "d"};
  for (int k = 0; k < 3; k++) {
    g_autoptr(GstElement) e = gst_bin_get_by_name(GST_BIN(pipe), names[k]);
    g_assert_nonnull(e);
    GstContext *c = gst_element_get_context(e, GST_MEXD_BACKEND_CONTEXT);
    g_assert_nonnull(c);
    g_autoptr(MexdBackend) used = gst_mexd_backend_context_get(c);
    g_assert_true(used == be);
    gst_context_unref(c);
  }
  gst_object_unref(bus);
  gst_object_unref(src);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(pipe);
}

/* The elements of a pipeline share one device: whichever starts first opens it and announces it
 * (HAVE_CONTEXT), the bin keeps it, the others find it through a context query or the bin; an
 * element whose device property asks for another kind opens its own. */
static void test_shared_device(void)
{
  g_autofree char *vit = fixture("gst", "vit-d32.safetensors");
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  for (int variant = 0; variant < 2; variant++) {
    /* variant 1: mexdembed asks for cpu; when the shared device is a Vulkan one it opens its
     * own and the other two still share */
    g_autofree char *desc = g_strdup_printf(
        "appsrc caps=video/x-raw,format=RGB,width=64,height=64,framerate=0/1 ! mexdembed "
        "name=e model=%s %s ! mexdmoe name=m model=%s ! mexddiffc name=d model=%s ! fakesink",
        vit, variant ? "device=cpu" : "", model, model);
    g_autoptr(GError) error = NULL;
    GstElement *pipe = gst_parse_launch(desc, &error);
    g_assert_no_error(error);
    g_assert_cmpint(gst_element_set_state(pipe, GST_STATE_PAUSED), !=, GST_STATE_CHANGE_FAILURE);
    MexdBackend *seen[3] = {NULL, NULL, NULL};
    const char *names[] = {"e", "m", "d"};
    for (int k = 0; k < 3; k++) {
      g_autoptr(GstElement) el = gst_bin_get_by_name(GST_BIN(pipe), names[k]);
      GstContext *c = gst_element_get_context(el, GST_MEXD_BACKEND_CONTEXT);
      g_assert_nonnull(c);
      seen[k] = gst_mexd_backend_context_get(c);
      g_assert_nonnull(seen[k]);
      gst_context_unref(c);
    }
    g_assert_true(seen[0] == seen[1] && seen[1] == seen[2]);
    GstContext *pc = gst_element_get_context(pipe, GST_MEXD_BACKEND_CONTEXT);
    g_assert_nonnull(pc);
    g_autoptr(MexdBackend) pb = gst_mexd_backend_context_get(pc);
    g_assert_true(pb == seen[0]);
    gst_context_unref(pc);
    g_test_message("variant %d: shared device %s", variant, mexd_backend_name(seen[0]));
    for (int k = 0; k < 3; k++)
      mexd_backend_unref(seen[k]);
    gst_element_set_state(pipe, GST_STATE_NULL);
    gst_object_unref(pipe);
  }
  /* the backend check itself */
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", NULL);
  g_assert_true(mexd_backend_satisfies(cpu, NULL) && mexd_backend_satisfies(cpu, "") &&
                mexd_backend_satisfies(cpu, "CPU"));
  g_assert_false(mexd_backend_satisfies(cpu, "vulkan") || mexd_backend_satisfies(cpu, "vulkan:0"));
  g_autoptr(MexdBackend) vk = mexd_backend_new("vulkan:0", NULL);
  if (vk) {
    g_assert_true(mexd_backend_satisfies(vk, "vulkan") && mexd_backend_satisfies(vk, "vulkan:0"));
    g_assert_false(mexd_backend_satisfies(vk, "vulkan:1") ||
                   mexd_backend_satisfies(vk, "vulkan:01") || mexd_backend_satisfies(vk, "cpu") ||
                   mexd_backend_satisfies(vk, "vulkan:"));
  }
  g_assert_false(mexd_backend_satisfies(NULL, NULL));
  GstContext *other = gst_context_new("something.else", TRUE);
  g_assert_null(gst_mexd_backend_context_get(other));
  gst_context_unref(other);
}

/* ---- bad input and misuse (issue 16): a clear error, no abort, no hang, no GLib warning ---- */

/* A .npy of n × d float32 values v[i] (NumPy format 1.0). */
static void write_npy(const char *path, int64_t n, int64_t d, const float *v)
{
  g_autofree char *dict =
      g_strdup_printf("{'descr': '<f4', 'fortran_order': False, 'shape': (%" G_GINT64_FORMAT
                      ", %" G_GINT64_FORMAT "), }",
                      n, d);
  size_t len = strlen(dict) + 1, total = 10 + len;
  size_t pad = (64 - total % 64) % 64;
  GString *h = g_string_new_len("\x93NUMPY\x01\x00", 8);
  guint16 hl = GUINT16_TO_LE((guint16)(len + pad));
  g_string_append_len(h, (const char *)&hl, 2);
  g_string_append(h, dict);
  for (size_t i = 0; i < pad; i++)
    g_string_append_c(h, ' ');
  g_string_append_c(h, '\n');
  g_string_append_len(h, (const char *)v, (gssize)(sizeof(float) * n * d));
  g_assert_true(g_file_set_contents(path, h->str, (gssize)h->len, NULL));
  g_string_free(h, TRUE);
}

/* Choice properties are registered enums: gst-inspect lists them, the old nicks still work
 * (gst_util_set_object_arg, as mexd classify sets them), GObject refuses anything else. */
static void test_enums(void)
{
  static const struct {
    const char *element, *prop, *nicks[4], *bad;
  } cases[] = {
      {"mexdembed", "precision", {"fp32", "fp16"}, "fp64"},
      {"mexdmoe", "mode", {"auto", "paper", "official"}, "fancy"},
      {"mexddiffc", "sampler", {"card", "ddim"}, "euler"},
      {"openslidesrc", "contour-fn", {"four_pt", "four_pt_hard", "center"}, "five_pt"},
      {"mexdheatmap", "score", {"attention", "gate"}, "loudness"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GstElement) e = gst_element_factory_make(cases[i].element, NULL);
    g_assert_nonnull(e);
    GParamSpec *p = g_object_class_find_property(G_OBJECT_GET_CLASS(e), cases[i].prop);
    g_assert_nonnull(p);
    g_assert_true(G_IS_PARAM_SPEC_ENUM(p));
    GstPluginAPIFlags flags;
    g_assert_true(gst_type_is_plugin_api(p->value_type, &flags));
    for (int k = 0; cases[i].nicks[k]; k++) {
      gst_util_set_object_arg(G_OBJECT(e), cases[i].prop, cases[i].nicks[k]);
      GValue v = G_VALUE_INIT;
      g_value_init(&v, p->value_type);
      g_object_get_property(G_OBJECT(e), cases[i].prop, &v);
      GEnumValue *ev =
          g_enum_get_value(G_ENUM_CLASS(g_type_class_peek(p->value_type)), g_value_get_enum(&v));
      g_assert_cmpstr(ev->value_nick, ==, cases[i].nicks[k]);
      g_value_unset(&v);
    }
    /* a bad value: gst-launch's parser refuses it, naming it */
    const gboolean source = !strcmp(cases[i].element, "openslidesrc");
    g_autofree char *desc =
        g_strdup_printf("%s%s %s=%s ! fakesink", source ? "" : "fakesrc num-buffers=0 ! ",
                        cases[i].element, cases[i].prop, cases[i].bad);
    g_autoptr(GError) pe = NULL;
    GstElement *pipe = gst_parse_launch(desc, &pe);
    g_assert_nonnull(pe);
    g_assert_nonnull(strstr(pe->message, cases[i].bad));
    g_test_message("%s %s=%s: %s", cases[i].element, cases[i].prop, cases[i].bad, pe->message);
    if (pipe)
      gst_object_unref(pipe);
  }
  /* the preset stays a string (mexd classify sets it so): an unknown one fails the start */
  expect_error("openslidesrc location=/nonexistent/slide.svs preset=nope ! fakesink",
               GST_RESOURCE_ERROR, "preset");
}

/* Numeric properties out of range, and ranges that depend on another property: an element
 * error naming the property at start, no GLib warning (the elements' own range check). */
static void test_ranges(void)
{
  g_autofree char *bb = fixture("backbones", "resnet-tiny.safetensors");
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *bag = fixture("mexd", "bag-n7.npy");
  const char *slide = "/nonexistent/slide.svs"; /* the settings are checked first */
  static const char *const src_props[][2] = {
      {"tile-size=0", "tile-size"},
      {"tile-size=100000", "tile-size"},
      {"level=99", "level"},
      {"magnification=-1", "magnification"},
      {"threads=100000", "threads"},
      {"mpp=nan", "mpp"},
      {"overlap=256", "overlap"},
      {"tile-size=64 overlap=100", "overlap"},
      {"mpp=0.5 magnification=20", "mpp"},
      {"level=1 magnification=20", "level"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(src_props); i++) {
    g_autofree char *d =
        g_strdup_printf("openslidesrc location=%s %s ! fakesink", slide, src_props[i][0]);
    expect_error(d, GST_RESOURCE_ERROR, src_props[i][1]);
  }
  g_autofree char *e1 = g_strdup_printf(
      "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=32,height=32 ! mexdembed "
      "model=%s device=cpu batch-size=0 ! fakesink",
      bb);
  expect_error(e1, GST_RESOURCE_ERROR, "batch-size");
  static const char *const dc_props[][2] = {
      {"steps=0", "steps"},
      {"chains=0", "chains"},
      {"eta=2", "eta"},
      {"sampler=ddim steps=1", "steps"},      /* DDIM needs 2 steps */
      {"sampler=ddim steps=100000", "steps"}, /* more than the model's T */
      {"eta=0.5", "eta"},                     /* DDIM's only */
  };
  for (guint i = 0; i < G_N_ELEMENTS(dc_props); i++) {
    g_autofree char *d = g_strdup_printf("mexdfeaturesrc location=%s ! mexdmoe model=%s "
                                         "device=cpu ! mexddiffc model=%s device=cpu %s ! fakesink",
                                         bag, model, model, dc_props[i][0]);
    expect_error(d, GST_RESOURCE_ERROR, dc_props[i][1]);
  }
  g_autofree char *h1 = g_strdup_printf("mexdfeaturesrc location=%s ! mexdmoe model=%s device=cpu "
                                        "! mexdheatmap width=0 ! fakesink",
                                        bag, model);
  expect_error(h1, GST_RESOURCE_ERROR, "width");
  /* g_object_set out of range: no GLib warning, the value reaches the element's check */
  g_autoptr(GstElement) src = gst_element_factory_make("openslidesrc", NULL);
  g_object_set(src, "tile-size", 0, "magnification", -1.0, NULL);
  gint ts;
  g_object_get(src, "tile-size", &ts, NULL);
  g_assert_cmpint(ts, ==, 0);
  /* gst-inspect and mexd classify still read the range from the property */
  GParamSpec *p = g_object_class_find_property(G_OBJECT_GET_CLASS(src), "tile-size");
  g_assert_true(G_IS_PARAM_SPEC_INT(p));
  g_assert_cmpint(G_PARAM_SPEC_INT(p)->minimum, ==, 1);
  g_assert_cmpint(G_PARAM_SPEC_INT(p)->maximum, ==, 16384);
}

/* Files that are not regular files: refused at start, named, without blocking on them. */
static void test_special_files(void)
{
  g_autofree char *dir = g_dir_make_tmp("mexd-gst-XXXXXX", NULL);
  g_autofree char *fifo_svs = g_build_filename(dir, "fifo.svs", NULL);
  g_autofree char *fifo_h5 = g_build_filename(dir, "fifo.h5", NULL);
  g_assert_cmpint(mkfifo(fifo_svs, 0600), ==, 0);
  g_assert_cmpint(mkfifo(fifo_h5, 0600), ==, 0);
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *bag = fixture("mexd", "bag-n7.npy");
  g_autofree char *vit = fixture("gst", "vit-d32.safetensors");
  g_autofree char *d1 = g_strdup_printf(
      "openslidesrc location=%s ! mexdembed model=%s device=cpu ! fakesink", fifo_svs, vit);
  expect_error(d1, 0, "fifo.svs");
  /* the FIFO second in the list: refused at start too, before the first slide is read */
  g_autofree char *d2 =
      g_strdup_printf("mexdfeaturesrc location=\"%s;%s\" ! mexdmoe model=%s device=cpu ! fakesink",
                      bag, fifo_h5, model);
  expect_error(d2, 0, "fifo.h5");
  g_autofree char *d3 =
      g_strdup_printf("mexdfeaturesrc location=\"%s;%s\" ! mexdmoe model=%s device=cpu ! fakesink",
                      bag, dir, model);
  expect_error(d3, 0, dir);
  g_autofree char *d4 = g_strdup_printf(
      "mexdfeaturesrc location=\"%s;/nonexistent/missing.h5\" ! mexdmoe model=%s device=cpu ! "
      "fakesink",
      bag, model);
  expect_error(d4, GST_RESOURCE_ERROR, "missing.h5");
  /* model files: the loaders refuse special files, and the message names them */
  g_autofree char *d5 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=%s device=cpu ! fakesink", bag, fifo_h5);
  expect_error(d5, GST_RESOURCE_ERROR, "fifo.h5");
  g_autofree char *d6 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdmoe model=%s device=cpu ! mexddiffc model=%s device=cpu ! "
      "fakesink",
      bag, model, dir);
  expect_error(d6, GST_RESOURCE_ERROR, dir);
  g_autofree char *d7 = g_strdup_printf(
      "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=32,height=32 ! mexdembed "
      "model=%s device=cpu ! fakesink",
      fifo_svs);
  expect_error(d7, GST_RESOURCE_ERROR, "fifo.svs");
  /* outputs: a folder, a missing folder, a file of the pipeline (the backbone) */
  g_autofree char *d8 =
      g_strdup_printf("mexdfeaturesrc location=%s ! mexdfeaturesink location=%s", bag, dir);
  expect_error(d8, GST_RESOURCE_ERROR, dir);
  g_autofree char *d9 = g_strdup_printf(
      "mexdfeaturesrc location=%s ! mexdfeaturesink location=/nonexistent/dir/%%s.h5", bag);
  expect_error(d9, GST_RESOURCE_ERROR, "/nonexistent/dir");
  g_autofree char *vcopy = g_build_filename(dir, "bb.safetensors", NULL);
  g_autofree char *vbytes = NULL;
  gsize vlen;
  g_assert_true(g_file_get_contents(vit, &vbytes, &vlen, NULL));
  g_assert_true(g_file_set_contents(vcopy, vbytes, (gssize)vlen, NULL));
  g_autofree char *d10 = g_strdup_printf(
      "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! mexdembed "
      "model=%s device=cpu ! mexdfeaturesink location=%s",
      vcopy, vcopy);
  expect_error(d10, GST_RESOURCE_ERROR, "bb.safetensors");
  g_autofree char *after = NULL;
  gsize alen;
  g_assert_true(g_file_get_contents(vcopy, &after, &alen, NULL));
  g_assert_true(alen == vlen && memcmp(after, vbytes, vlen) == 0); /* untouched */
  g_remove(vcopy);
  g_remove(fifo_svs);
  g_remove(fifo_h5);
  g_rmdir(dir);
}

/* Elements in the wrong order, or caps that do not fit: refused (at linking, or with a message
 * naming both sides), never a hang. */
static void test_wrong_order(void)
{
  g_autofree char *vit = fixture("gst", "vit-d32.safetensors");
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *bag = fixture("mexd", "bag-n7.npy");
  const char *slide = g_getenv("MEXD_TEST_SLIDE");
  const char *src = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=64";
  g_autofree char *vsrc =
      slide ? g_strdup_printf("openslidesrc location=%s preset=bwh_biopsy", slide) : g_strdup(src);
  g_autofree char *d1 = g_strdup_printf("%s ! mexdmoe model=%s device=cpu ! fakesink", vsrc, model);
  expect_error(d1, 0, "mexdmoe");
  g_autofree char *d2 = g_strdup_printf("%s ! mexdembed model=%s device=cpu ! mexddiffc model=%s "
                                        "device=cpu ! fakesink",
                                        vsrc, vit, model);
  expect_error(d2, 0, "mexddiffc");
  g_autofree char *d3 = g_strdup_printf("mexdfeaturesrc location=%s ! mexdembed model=%s "
                                        "device=cpu ! fakesink",
                                        bag, vit);
  expect_error(d3, 0, "mexdembed");
  g_autofree char *d4 = g_strdup_printf("mexdfeaturesrc location=%s ! mexddiffc model=%s "
                                        "device=cpu ! mexdmoe model=%s device=cpu ! fakesink",
                                        bag, model, model);
  expect_error(d4, 0, "mexddiffc");
  g_autofree char *d5 = g_strdup_printf("mexdfeaturesrc location=%s ! mexdheatmap ! fakesink", bag);
  expect_error(d5, GST_STREAM_ERROR, "routing");
  /* through a queue the link succeeds and negotiation fails at run time: still an error */
  g_autofree char *d6 = g_strdup_printf("mexdfeaturesrc location=%s ! queue ! mexddiffc model=%s "
                                        "device=cpu ! fakesink",
                                        bag, model);
  expect_error(d6, 0, "");
  /* features of another size (48-d) from a file: the message names the file and both sizes */
  g_autofree char *dir = g_dir_make_tmp("mexd-gst-XXXXXX", NULL);
  g_autofree char *f48 = g_build_filename(dir, "wrong-dim.npy", NULL);
  float v[3 * 48];
  for (int i = 0; i < 3 * 48; i++)
    v[i] = (float)(i % 7) * 0.1f;
  write_npy(f48, 3, 48, v);
  g_autofree char *d7 = g_strdup_printf("mexdfeaturesrc location=%s ! mexdmoe model=%s "
                                        "device=cpu ! fakesink",
                                        f48, model);
  expect_error(d7, GST_CORE_ERROR, "wrong-dim.npy");
  /* a feature file holding a NaN: the file's error (STREAM), at start, naming it */
  g_autofree char *fnan = g_build_filename(dir, "nan.npy", NULL);
  float w[3 * 32];
  for (int i = 0; i < 3 * 32; i++)
    w[i] = i == 40 ? NAN : 0.1f;
  write_npy(fnan, 3, 32, w);
  g_autofree char *d9 = g_strdup_printf("mexdfeaturesrc location=%s ! mexdmoe model=%s "
                                        "device=cpu ! fakesink",
                                        fnan, model);
  expect_error(d9, GST_STREAM_ERROR, "nan.npy");
  g_remove(fnan);
  /* rho and Z of another model: mexddiffc names both */
  g_autofree char *d8 = g_strdup_printf(
      "appsrc name=src "
      "caps=\"other/tensors,format=static,num_tensors=2,types=(string)\\\"float32,float32\\\","
      "dimensions=(string)\\\"3,16\\\",framerate=0/1\" ! mexddiffc model=%s device=cpu ! fakesink",
      model);
  g_autoptr(GError) pe = NULL;
  GstElement *pipe = gst_parse_launch(d8, &pe);
  g_assert_no_error(pe);
  GstElement *as = gst_bin_get_by_name(GST_BIN(pipe), "src");
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  GstBuffer *b = gst_buffer_new_allocate(NULL, sizeof(float) * 19, NULL);
  gst_buffer_memset(b, 0, 0, sizeof(float) * 19);
  gst_app_src_push_buffer(GST_APP_SRC(as), b);
  gst_app_src_end_of_stream(GST_APP_SRC(as));
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *m = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND, GST_MESSAGE_ERROR);
  g_assert_nonnull(m);
  g_autoptr(GError) e = NULL;
  gst_message_parse_error(m, &e, NULL);
  g_test_message("rho [3], Z [16] into a 2-class model: %s", e->message);
  g_assert_nonnull(strstr(e->message, "3,16"));
  gst_message_unref(m);
  gst_object_unref(bus);
  gst_object_unref(as);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(pipe);
  g_remove(f48);
  g_rmdir(dir);
}

/* An appsrc pipeline (`desc` holds "appsrc name=src"); `feed` pushes into it. */
typedef void (*Feed)(GstAppSrc *src, gpointer data);

/* Runs it to the end; returns the first error (NULL at EOS); *results counts mexd-result. */
static GError *run_appsrc(const char *desc, Feed feed, gpointer data, int *results)
{
  g_autoptr(GError) pe = NULL;
  GstElement *pipe = gst_parse_launch(desc, &pe);
  g_assert_no_error(pe);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipe), "src");
  g_assert_nonnull(src);
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  feed(GST_APP_SRC(src), data);
  GstBus *bus = gst_element_get_bus(pipe);
  GError *out = NULL;
  if (results)
    *results = 0;
  for (;;) {
    GstMessage *m = gst_bus_timed_pop_filtered(
        bus, 60 * GST_SECOND, GST_MESSAGE_ERROR | GST_MESSAGE_EOS | GST_MESSAGE_ELEMENT);
    if (!m)
      g_error("%s: neither an error nor EOS within 60 s (a hang)", desc);
    gboolean done = GST_MESSAGE_TYPE(m) != GST_MESSAGE_ELEMENT;
    if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR)
      gst_message_parse_error(m, &out, NULL);
    else if (results && gst_message_has_name(m, "mexd-result"))
      (*results)++;
    gst_message_unref(m);
    if (done)
      break;
  }
  gst_object_unref(bus);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(src);
  gst_object_unref(pipe);
  return out;
}

#define FEATURE_CAPS                                                                               \
  "other/tensors,format=static,num_tensors=1,types=float32,dimensions=32,framerate=0/1"

typedef struct {
  const char *script; /* S: slide-start, E: slide-end, f: a feature, n: a NaN feature */
  const char *id;
} Script;

static void feed_script(GstAppSrc *src, gpointer data)
{
  const Script *sc = data;
  int k = 0;
  for (const char *c = sc->script; *c; c++) {
    if (*c == 'S') {
      gst_element_send_event(GST_ELEMENT(src),
                             gst_mexd_event_new_slide_start(sc->id, "", 1000, 1000, 0.5, 256, 0));
    } else if (*c == 'E') {
      gst_element_send_event(GST_ELEMENT(src), gst_mexd_event_new_slide_end(sc->id, k));
      k = 0;
    } else {
      float v[32];
      for (int i = 0; i < 32; i++)
        v[i] = *c == 'n' && i == 5 ? NAN : 0.01f * (float)((i * 7 + k) % 13);
      GstBuffer *b = gst_buffer_new_allocate(NULL, sizeof v, NULL);
      gst_buffer_fill(b, 0, v, sizeof v);
      gst_buffer_add_mexd_tile_meta(b, sc->id, 0, 256 * k, 0, 256, 256, 0.5, k);
      gst_app_src_push_buffer(src, b);
      k++;
    }
  }
  gst_app_src_end_of_stream(src);
}

/* Events out of order, a stream without a slide, NaN features: each a clear error. */
static void test_misuse(void)
{
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *moe = g_strdup_printf("appsrc name=src format=time caps=" FEATURE_CAPS
                                         " ! mexdmoe model=%s device=cpu ! mexddiffc model=%s "
                                         "device=cpu chains=2 ! fakesink",
                                         model, model);
  int results;
  /* the right order first: one result per slide */
  Script ok = {"SfffESffE", "good"};
  g_autoptr(GError) e0 = run_appsrc(moe, feed_script, &ok, &results);
  g_assert_no_error(e0);
  g_assert_cmpint(results, ==, 2);
  /* EOS before any slide */
  Script none = {"", "none"};
  g_autoptr(GError) e1 = run_appsrc(moe, feed_script, &none, NULL);
  g_assert_nonnull(e1);
  g_test_message("EOS without a slide: %s", e1->message);
  g_assert_nonnull(strstr(e1->message, "slide"));
  /* a slide end without a start */
  Script nostart = {"ffE", "orphan"};
  g_autoptr(GError) e2 = run_appsrc(moe, feed_script, &nostart, NULL);
  g_assert_nonnull(e2);
  g_test_message("slide-end without slide-start: %s", e2->message);
  g_assert_true(e2->domain == GST_CORE_ERROR);
  g_assert_nonnull(strstr(e2->message, "slide-start"));
  g_assert_nonnull(strstr(e2->message, "orphan"));
  /* NaN features: the library's message with the slide, in the STREAM domain (mexd classify
   * goes on with the next slide) */
  Script nan = {"SffnfE", "nan-slide"};
  g_autoptr(GError) e3 = run_appsrc(moe, feed_script, &nan, &results);
  g_assert_nonnull(e3);
  g_test_message("NaN features: %s", e3->message);
  g_assert_true(e3->domain == GST_STREAM_ERROR);
  g_assert_nonnull(strstr(e3->message, "nan-slide"));
  g_assert_nonnull(strstr(e3->message, "NaN"));
  g_assert_cmpint(results, ==, 0);
  /* two slides into one file (no %s in location): the second is refused, the first kept */
  g_autofree char *dir = g_dir_make_tmp("mexd-gst-XXXXXX", NULL);
  g_autofree char *out = g_build_filename(dir, "features.h5", NULL);
  g_autofree char *sink = g_strdup_printf(
      "appsrc name=src format=time caps=" FEATURE_CAPS " ! mexdfeaturesink location=%s", out);
  Script two = {"SffESfffE", "same"};
  g_autoptr(GError) e4 = run_appsrc(sink, feed_script, &two, NULL);
  g_assert_nonnull(e4);
  g_test_message("two slides, no %%s: %s", e4->message);
  g_assert_nonnull(strstr(e4->message, "%s"));
  g_autoptr(MexdBag) first = mexd_bag_read(out, MEXD_BAG_AUTO, NULL);
  g_assert_nonnull(first);
  g_assert_cmpint(first->n, ==, 2);
  g_remove(out);
  /* the sink: a slide end without a start, and EOS before any slide */
  g_autoptr(GError) e5 = run_appsrc(sink, feed_script, &nostart, NULL);
  g_assert_nonnull(e5);
  g_assert_nonnull(strstr(e5->message, "slide-start"));
  g_autoptr(GError) e6 = run_appsrc(sink, feed_script, &none, NULL);
  g_assert_nonnull(e6);
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  g_rmdir(dir);
}

typedef struct {
  const char *id;
  gboolean nan;
  int classes, width;
} DiffcInput;

static void feed_diffc(GstAppSrc *src, gpointer data)
{
  const DiffcInput *in = data;
  gst_element_send_event(GST_ELEMENT(src),
                         gst_mexd_event_new_slide_start(in->id, "", 0, 0, 0, 0, 1));
  GstBuffer *b = gst_buffer_new();
  float *rho = g_new0(float, in->classes), *z = g_new0(float, in->width);
  if (in->nan)
    z[3] = NAN;
  const gsize nr = sizeof(float) * in->classes, nz = sizeof(float) * in->width;
  gst_buffer_append_memory(b, gst_memory_new_wrapped(0, rho, nr, 0, nr, rho, g_free));
  gst_buffer_append_memory(b, gst_memory_new_wrapped(0, z, nz, 0, nz, z, g_free));
  gst_app_src_push_buffer(src, b);
  gst_element_send_event(GST_ELEMENT(src), gst_mexd_event_new_slide_end(in->id, 1));
  gst_app_src_end_of_stream(src);
}

/* A prior or insight that is not finite reaching mexddiffc: a STREAM error naming the slide. */
static void test_diffc_nan(void)
{
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", NULL);
  g_autoptr(MexdModel) m = mexd_model_load(model, be, NULL);
  g_assert_nonnull(m);
  const MexdModelConfig *cfg = mexd_model_config(m);
  g_autofree char *desc = g_strdup_printf(
      "appsrc name=src format=time caps=\"other/tensors,format=static,num_tensors=2,"
      "types=(string)\\\"float32,float32\\\",dimensions=(string)\\\"%d,%d\\\",framerate=0/1\" "
      "! mexddiffc model=%s device=cpu chains=2 ! fakesink",
      cfg->n_classes, cfg->width, model);
  int results;
  DiffcInput good = {"finite", FALSE, cfg->n_classes, cfg->width};
  g_autoptr(GError) e0 = run_appsrc(desc, feed_diffc, &good, &results);
  g_assert_no_error(e0);
  g_assert_cmpint(results, ==, 1);
  DiffcInput bad = {"nan-insight", TRUE, cfg->n_classes, cfg->width};
  g_autoptr(GError) e1 = run_appsrc(desc, feed_diffc, &bad, &results);
  g_assert_nonnull(e1);
  g_test_message("NaN insight: %s", e1->message);
  g_assert_true(e1->domain == GST_STREAM_ERROR);
  g_assert_nonnull(strstr(e1->message, "nan-insight"));
  g_assert_cmpint(results, ==, 0);
}

/* ---- memory that runs out (under an address-space limit, in a child process) ---- */

static gsize vm_size(void)
{
  g_autofree char *st = NULL;
  if (!g_file_get_contents("/proc/self/status", &st, NULL, NULL))
    return 0;
  const char *p = strstr(st, "VmSize:");
  return p ? (gsize)g_ascii_strtoull(p + 7, NULL, 10) * 1024 : 0;
}

/* Pushes buffers of `bytes` until the pipeline posts an error; returns it. */
static GError *push_until_error(const char *desc, gsize bytes, const char *id, gsize headroom)
{
  g_autoptr(GError) pe = NULL;
  GstElement *pipe = gst_parse_launch(desc, &pe);
  g_assert_no_error(pe);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipe), "src");
  /* the elements start (models loaded, threads made) within set_state */
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  gst_element_send_event(src, gst_mexd_event_new_slide_start(id, "", 0, 0, 0, 256, 0));
  GstBus *bus = gst_element_get_bus(pipe);
  /* from here on the address space is limited: the slide's arrays run out of it */
  struct rlimit rl = {vm_size() + headroom, RLIM_INFINITY};
  g_assert_cmpint(setrlimit(RLIMIT_AS, &rl), ==, 0);
  GstBuffer *tile = gst_buffer_new_allocate(NULL, bytes, NULL);
  gst_buffer_memset(tile, 0, 1, bytes);
  GError *out = NULL;
  gint64 t0 = g_get_monotonic_time();
  guint64 i = 0;
  for (; !out && i < 100000000; i++) {
    gst_app_src_push_buffer(GST_APP_SRC(src), gst_buffer_ref(tile));
    /* the queue is kept short (no unbounded growth of its own, no blocking push) */
    while (!out && gst_app_src_get_current_level_bytes(GST_APP_SRC(src)) >
                       MAX(64 * bytes, (gsize)1 << 18)) {
      GstMessage *m = gst_bus_timed_pop_filtered(bus, 200 * GST_USECOND, GST_MESSAGE_ERROR);
      if (m) {
        gst_message_parse_error(m, &out, NULL);
        gst_message_unref(m);
      }
    }
  }
  gst_buffer_unref(tile);
  g_print("%s: %" G_GUINT64_FORMAT " buffers of %" G_GSIZE_FORMAT " bytes in %.1f s\n", id, i,
          bytes, (g_get_monotonic_time() - t0) / 1e6);
  rl.rlim_cur = RLIM_INFINITY;
  setrlimit(RLIMIT_AS, &rl);
  gst_object_unref(bus);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(src);
  gst_object_unref(pipe);
  return out;
}

static void oom_child(void)
{
#if defined(__GLIBC__)
  mallopt(M_ARENA_MAX, 1); /* no 64 MiB arena per thread inside the limit */
#endif
  g_autofree char *model = fixture("mexd", "model-e2.safetensors");
  g_autofree char *bb = fixture("backbones", "resnet-tiny.safetensors");
  /* mexdmoe: a slide of 32-d features */
  g_autofree char *d1 = g_strdup_printf("appsrc name=src format=time caps=" FEATURE_CAPS
                                        " ! mexdmoe model=%s device=cpu ! fakesink",
                                        model);
  g_autoptr(GError) e1 = push_until_error(d1, 32 * sizeof(float), "huge-slide", 24 << 20);
  g_assert_nonnull(e1);
  g_print("mexdmoe: %s\n", e1->message);
  g_assert_true(e1->domain == GST_STREAM_ERROR);
  g_assert_nonnull(strstr(e1->message, "huge-slide"));
  g_assert_nonnull(strstr(e1->message, "out of memory"));
  /* mexdfeaturesink: 64 KiB features */
  g_autofree char *dir = g_dir_make_tmp("mexd-gst-XXXXXX", NULL);
  g_autofree char *d2 = g_strdup_printf(
      "appsrc name=src format=time caps=other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=16384,framerate=0/1 ! mexdfeaturesink location=%s/%%s.h5",
      dir);
  g_autoptr(GError) e2 = push_until_error(d2, 16384 * sizeof(float), "wide-slide", 96 << 20);
  g_assert_nonnull(e2);
  g_print("mexdfeaturesink: %s\n", e2->message);
  g_assert_true(e2->domain == GST_STREAM_ERROR);
  g_assert_nonnull(strstr(e2->message, "wide-slide"));
  g_rmdir(dir);
  /* mexdembed: a batch that does not fit (4096 tiles of 512 x 512) */
  g_autofree char *d3 = g_strdup_printf(
      "appsrc name=src format=time caps=video/x-raw,format=RGB,width=512,height=512,"
      "framerate=0/1 ! mexdembed model=%s device=cpu batch-size=4096 ! fakesink",
      bb);
  g_autoptr(GError) pe = NULL;
  GstElement *pipe = gst_parse_launch(d3, &pe);
  g_assert_no_error(pe);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipe), "src");
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  struct rlimit rl = {vm_size() + (256 << 20), RLIM_INFINITY};
  g_assert_cmpint(setrlimit(RLIMIT_AS, &rl), ==, 0);
  GstBuffer *b = gst_buffer_new_allocate(NULL, 512 * 512 * 3, NULL);
  gst_buffer_memset(b, 0, 100, 512 * 512 * 3);
  gst_app_src_push_buffer(GST_APP_SRC(src), b);
  gst_app_src_end_of_stream(GST_APP_SRC(src)); /* the partial batch runs at EOS */
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *m =
      gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND, GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  g_assert_nonnull(m);
  g_assert_true(GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR);
  g_autoptr(GError) e3 = NULL;
  gst_message_parse_error(m, &e3, NULL);
  g_print("mexdembed: %s\n", e3->message);
  g_assert_true(e3->domain == GST_RESOURCE_ERROR && e3->code == GST_RESOURCE_ERROR_NO_SPACE_LEFT);
  g_assert_nonnull(strstr(e3->message, "batch-size"));
  gst_message_unref(m);
  gst_object_unref(bus);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(src);
  gst_object_unref(pipe);
}

/* Allocations sized by the data never abort: out of memory is an element error naming the
 * slide and the size.  Skipped under AddressSanitizer (its shadow memory cannot live under an
 * address-space limit). */
static void test_out_of_memory(void)
{
#ifdef MEXD_ASAN
  g_test_skip("AddressSanitizer: no address-space limit possible");
  return;
#endif
  if (g_test_subprocess()) {
    oom_child();
    return;
  }
  g_test_trap_subprocess(NULL, 300 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed();
  g_test_trap_assert_stdout("*mexdmoe: *huge-slide*out of memory*");
  g_test_trap_assert_stdout("*mexdembed: *batch-size*");
}

int main(int argc, char **argv)
{
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  /* GLib warnings abort the test too (G_DEBUG=fatal-criticals makes only criticals fatal): the
   * elements print none, on bad input either */
  g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
  g_test_add_func("/gst/registry", test_registry);
  g_test_add_func("/gst/openslidesrc/slides", test_src);
  g_test_add_func("/gst/openslidesrc/errors", test_src_errors);
  g_test_add_func("/gst/mexdembed/batches", test_embed);
  g_test_add_func("/gst/mexdembed/errors", test_embed_errors);
  g_test_add_func("/gst/mexdfeaturesink/files", test_featuresink);
  g_test_add_func("/gst/appsrc-scanner", test_appsrc_scanner);
  g_test_add_func("/gst/shared-device", test_shared_device);
  g_test_add_func("/gst/mexdmoe/errors", test_moe_errors);
  g_test_add_func("/gst/bad-input/enums", test_enums);
  g_test_add_func("/gst/bad-input/ranges", test_ranges);
  g_test_add_func("/gst/bad-input/special-files", test_special_files);
  g_test_add_func("/gst/bad-input/wrong-order", test_wrong_order);
  g_test_add_func("/gst/bad-input/misuse", test_misuse);
  g_test_add_func("/gst/bad-input/diffc-nan", test_diffc_nan);
  g_test_add_func("/gst/bad-input/out-of-memory", test_out_of_memory);
  return g_test_run();
}
