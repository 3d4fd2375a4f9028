/* test-gst.c: GstHarness tests of the mexd GStreamer elements (plugins/).
 *
 * Runs with GST_PLUGIN_PATH at the build's plugins/ (meson sets it).  Slide tests need
 * MEXD_TEST_SLIDE (tests/gst-check.sh passes a generated slide); the others run anywhere. */
#include "fixture-dir.h"
#include "mexd.h"

#include "../plugins/gstmexdcontext.h"
#include "../plugins/gstmexdmeta.h"

#include <glib/gstdio.h>
#include <gst/app/gstappsrc.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <string.h>

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

/* Runs `desc` to the end; returns the error message posted, or NULL. */
static char *run_pipeline(const char *desc)
{
  g_autoptr(GError) perr = NULL;
  GstElement *pipe = gst_parse_launch(desc, &perr);
  if (perr) { /* caps that do not fit fail at linking */
    if (pipe)
      gst_object_unref(pipe);
    return g_strdup(perr->message);
  }
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 120 * GST_SECOND,
                                               GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  char *out = NULL;
  g_assert_nonnull(msg);
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    g_autoptr(GError) e = NULL;
    gst_message_parse_error(msg, &e, NULL);
    out = g_strdup(e->message);
  }
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(pipe);
  return out;
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

int main(int argc, char **argv)
{
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/gst/registry", test_registry);
  g_test_add_func("/gst/openslidesrc/slides", test_src);
  g_test_add_func("/gst/openslidesrc/errors", test_src_errors);
  g_test_add_func("/gst/mexdembed/batches", test_embed);
  g_test_add_func("/gst/mexdembed/errors", test_embed_errors);
  g_test_add_func("/gst/mexdfeaturesink/files", test_featuresink);
  g_test_add_func("/gst/appsrc-scanner", test_appsrc_scanner);
  g_test_add_func("/gst/shared-device", test_shared_device);
  g_test_add_func("/gst/mexdmoe/errors", test_moe_errors);
  return g_test_run();
}
