/* test-backbone.c: backbones (lib/nn/backbone.h) against the PyTorch fixtures of
 * tests/reference/gen_backbones.py (tests/fixtures/backbones/), on every backend of
 * MEXD_TEST_BACKENDS (default: cpu and vulkan:0 when it opens), in fp32 and fp16.
 *
 * - preprocessing (mexd_image_prep) against torchvision's antialiased resize + normalisation:
 *   normwise relative error max|out − ref| / max|ref| ≤ 1e-5 (fp32), 2e-3 (fp16 storage);
 * - a narrow ResNet-trunc built from torchvision's Bottleneck, and a small ViT with layer scale
 *   written from timm's semantics: every traced intermediate (input, stem, layer1..3 / tokens,
 *   block0, block1) and the features ≤ 1e-4 (fp32; issue 4 asks 1e-3) and ≤ 1e-2 (fp16);
 * - bad input: a MExD model file, a file for another architecture, a missing tensor, a tensor of
 *   the wrong shape, an empty batch, an input of the wrong size. */
#include "mexd.h"
#include "backend/vulkan.h"
#include "fixture-dir.h"
#include "nn/backbone.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

#define TOL_F32      1e-4
#define TOL_F16      1e-2
#define TOL_BF16     1e-2
#define TOL_PREP_F32 1e-5
#define TOL_PREP_F16 2e-3

static char *fixture(const char *name)
{
  g_autofree char *dir = mexd_test_fixture_dir("backbones");
  if (!dir)
    g_error("tests/fixtures/backbones not found (set G_TEST_SRCDIR to the tests directory)");
  return g_build_filename(dir, name, NULL);
}

typedef struct {
  char *backend;
  MexdDType dtype;
  const char *net; /* "resnet", "vit" or "ctranspath" */
  const char *variant; /* NULL; "bf16" (cpu: oneDNN bf16); "nodnnl" (cpu: MEXD_CPU_NO_DNNL=1) */
} Case;

static void case_free(gpointer p)
{
  Case *c = p;
  g_free(c->backend);
  g_free(c);
}

static MexdBackend *open_backend(const Case *c)
{
  g_autoptr(GError) error = NULL;
  MexdBackend *be = mexd_backend_new(c->backend, &error);
  g_assert_no_error(error);
  if (c->dtype == MEXD_DTYPE_F16 && !mexd_backend_has_f16(be)) {
    g_test_skip("no 16-bit storage on this device");
    mexd_backend_unref(be);
    return NULL;
  }
  return be;
}

/* Byte values stored as I32 in a fixture → bytes. */
static uint8_t *st_bytes(MexdSafetensors *st, const char *name, int64_t *n)
{
  g_autofree float *v = mexd_test_st_floats(st, name, n);
  g_assert_nonnull(v);
  uint8_t *b = g_new(uint8_t, *n);
  for (int64_t i = 0; i < *n; i++)
    b[i] = (uint8_t)v[i];
  return b;
}

static void test_prep(gconstpointer data)
{
  const Case *c = data;
  g_autoptr(MexdBackend) be = open_backend(c);
  if (!be)
    return;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = fixture("prep.safetensors");
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_autoptr(JsonParser) jp = json_parser_new();
  g_assert_true(json_parser_load_from_data(jp, mexd_safetensors_metadata(st, "cases"), -1, NULL));
  JsonArray *cases = json_node_get_array(json_parser_get_root(jp));
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std_[3] = {0.229f, 0.224f, 0.225f};
  for (guint k = 0; k < json_array_get_length(cases); k++) {
    JsonArray *d = json_array_get_array_element(cases, k);
    int64_t B = json_array_get_int_element(d, 0), H = json_array_get_int_element(d, 1),
            W = json_array_get_int_element(d, 2), OH = json_array_get_int_element(d, 3),
            OW = json_array_get_int_element(d, 4);
    char nm[32];
    int64_t nb, ny;
    g_snprintf(nm, sizeof nm, "case%u.pixels", k);
    g_autofree uint8_t *px = st_bytes(st, nm, &nb);
    g_assert_cmpint(nb, ==, B * H * W * 3);
    g_snprintf(nm, sizeof nm, "case%u.y", k);
    g_autofree float *ref = mexd_test_st_floats(st, nm, &ny);
    g_autoptr(MexdTensor) t = mexd_image_pixels_new(be, px, nb, &error);
    g_autoptr(MexdTensor) y =
        mexd_tensor_new(be, c->dtype, 4, (int64_t[]){B, 3, OH, OW}, &error);
    g_assert_no_error(error);
    g_assert_true(mexd_image_prep(y, t, H, W, mean, std_, &error));
    g_assert_no_error(error);
    g_autofree float *out = mexd_tensor_dup_f32(y, &error);
    g_assert_no_error(error);
    g_autofree char *what = g_strdup_printf("prep %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                                            " -> %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT,
                                            H, W, OH, OW);
    mexd_test_assert_close(what, out, mexd_tensor_numel(y), ref, ny,
                           c->dtype == MEXD_DTYPE_F16 ? TOL_PREP_F16 : TOL_PREP_F32);
  }
}

/* A network fixture against its reference: "resnet", "vit" or "ctranspath" (<net>-tiny and
 * <net>-tiny-io; MEXD_TEST_<NET> / MEXD_TEST_<NET>_IO replace the files). */
static void test_net(gconstpointer data)
{
  const Case *c = data;
  g_autoptr(MexdBackend) be = open_backend(c);
  if (!be)
    return;
  g_autoptr(GError) error = NULL;
  g_autofree char *up = g_ascii_strup(c->net, -1);
  g_autofree char *ev = g_strdup_printf("MEXD_TEST_%s", up);
  g_autofree char *evio = g_strdup_printf("MEXD_TEST_%s_IO", up);
  g_autofree char *fm = g_strdup_printf("%s-tiny.safetensors", c->net);
  g_autofree char *fio = g_strdup_printf("%s-tiny-io.safetensors", c->net);
  const char *em = g_getenv(ev), *eio = g_getenv(evio);
  g_autofree char *mpath = em ? g_strdup(em) : fixture(fm);
  g_autofree char *iopath = eio ? g_strdup(eio) : fixture(fio);
  const gboolean bf16 = c->variant && g_str_equal(c->variant, "bf16");
  if (bf16 && !mexd_backbone_bf16_supported(&error)) {
    g_test_skip(error->message);
    return;
  }
  if (c->variant && g_str_equal(c->variant, "nodnnl"))
    g_setenv("MEXD_CPU_NO_DNNL", "1", TRUE);
  g_autoptr(MexdBackbone) bb =
      bf16 ? mexd_backbone_load_precision(mpath, be, MEXD_PRECISION_BF16, &error)
           : mexd_backbone_load(mpath, be, c->dtype, &error);
  g_unsetenv("MEXD_CPU_NO_DNNL");
  g_assert_no_error(error);
  if (bf16)
    g_assert_cmpint(mexd_backbone_precision(bb), ==, MEXD_PRECISION_BF16);
  const MexdBackboneConfig *cfg = mexd_backbone_config(bb);
  g_autoptr(MexdSafetensors) io = mexd_safetensors_open(iopath, &error);
  g_assert_no_error(error);
  int64_t nb;
  g_autofree uint8_t *px = st_bytes(io, "pixels", &nb);
  const int64_t B = g_ascii_strtoll(mexd_safetensors_metadata(io, "batch"), NULL, 10);
  const int64_t T = g_ascii_strtoll(mexd_safetensors_metadata(io, "tile"), NULL, 10);
  g_assert_cmpint(nb, ==, B * T * T * 3);
  g_autofree float *feats = g_new(float, B * cfg->output_dim);
  g_autoptr(MexdTrace) trace = mexd_trace_new();
  guint subs = mexd_vk_submissions();
  g_assert_true(mexd_backbone_embed(bb, px, B, T, T, feats, trace, &error));
  g_assert_no_error(error);
  /* the whole batch is one command buffer: one submission on a device with mapped memory (a
   * discrete GPU adds one per staged upload, all before the batch is recorded) */
  if (mexd_backend_kind(be) == MEXD_BACKEND_VULKAN && !mexd_vk_limits(be)->discrete)
    g_assert_cmpuint(mexd_vk_submissions() - subs, ==, 1);
  const double tol = bf16 ? TOL_BF16 : c->dtype == MEXD_DTYPE_F16 ? TOL_F16 : TOL_F32;
  guint n_cmp = 0;
  for (guint i = 0; i < mexd_safetensors_n_tensors(io); i++) {
    const char *name = mexd_safetensors_index(io, i)->name;
    if (g_str_equal(name, "pixels") || g_str_equal(name, "features"))
      continue;
    int64_t nr;
    g_autofree float *r = mexd_test_st_floats(io, name, &nr);
    MexdTensor *t = mexd_trace_get(trace, name);
    if (!t)
      g_error("the forward pass traced no %s", name);
    g_autofree float *o = mexd_tensor_dup_f32(t, &error);
    g_assert_no_error(error);
    mexd_test_assert_close(name, o, mexd_tensor_numel(t), r, nr, tol);
    n_cmp++;
  }
  g_assert_cmpuint(n_cmp, >=, 3);
  int64_t nf;
  g_autofree float *rf = mexd_test_st_floats(io, "features", &nf);
  mexd_test_assert_close("features", feats, B * cfg->output_dim, rf, nf, tol);

  /* Two batches in flight: three submissions before any is finished (the third waits for the
   * oldest), the pixel buffer overwritten right after each submission (its bytes are taken at
   * once), the middle batch with its tiles in reverse order.  Each job gives exactly the
   * features of the plain call. */
  const int64_t D = cfg->output_dim, tb = T * T * 3;
  g_autofree uint8_t *buf = g_memdup2(px, (gsize)nb);
  MexdEmbedJob *jobs[3];
  for (int j = 0; j < 3; j++) {
    for (int64_t k = 0; k < B; k++)
      memcpy(buf + k * tb, px + (j == 1 ? B - 1 - k : k) * tb, (size_t)tb);
    jobs[j] = mexd_backbone_embed_submit(bb, buf, B, T, T, NULL, &error);
    g_assert_no_error(error);
    memset(buf, 0x5a, (size_t)nb);
  }
  for (int j = 0; j < 3; j++) {
    g_autofree float *got = g_new(float, B * D);
    g_assert_true(mexd_embed_job_finish(jobs[j], got, &error));
    g_assert_no_error(error);
    for (int64_t k = 0; k < B; k++)
      if (memcmp(got + k * D, feats + (j == 1 ? B - 1 - k : k) * D, sizeof(float) * D) != 0)
        g_error("batch %d in flight: tile %" G_GINT64_FORMAT " differs from the plain call", j, k);
  }
  /* an unfinished job may be dropped; the backbone goes on */
  MexdEmbedJob *dropped = mexd_backbone_embed_submit(bb, px, B, T, T, NULL, &error);
  g_assert_no_error(error);
  mexd_embed_job_free(dropped);
  g_autofree float *again = g_new(float, B * D);
  g_assert_true(mexd_backbone_embed(bb, px, B, T, T, again, NULL, &error));
  g_assert_cmpmem(again, sizeof(float) * B * D, feats, sizeof(float) * B * D);
  /* other batch sizes in between (the cpu's oneDNN plans are made per batch size, the two most
   * recent kept): the first tile alone, the first B−1, then the whole batch again */
  g_autofree float *part = g_new(float, B * D);
  for (int64_t nb2 = 1; nb2 <= B; nb2 += MAX(B - 2, (int64_t)1)) {
    g_assert_true(mexd_backbone_embed(bb, px, nb2, T, T, part, NULL, &error));
    g_assert_no_error(error);
    g_autofree char *w2 = g_strdup_printf("features of the first %" G_GINT64_FORMAT " tiles", nb2);
    mexd_test_assert_close(w2, part, nb2 * D, feats, nb2 * D, tol);
  }
  /* a batch larger than the cpu backend's chunk of a transformer (16 images, backbone.c): 37
   * tiles, the fixture's cycled, each tile's features those of the reference */
  const int64_t NB = 37;
  g_autofree uint8_t *big = g_new(uint8_t, NB * tb);
  for (int64_t k = 0; k < NB; k++)
    memcpy(big + k * tb, px + (k % B) * tb, (size_t)tb);
  g_autofree float *bigf = g_new(float, NB * D);
  g_assert_true(mexd_backbone_embed(bb, big, NB, T, T, bigf, NULL, &error));
  g_assert_no_error(error);
  for (int64_t k = 0; k < NB; k++) {
    g_autofree char *w3 = g_strdup_printf("tile %" G_GINT64_FORMAT " of a batch of %" G_GINT64_FORMAT,
                                          k, NB);
    mexd_test_assert_close(w3, bigf + k * D, D, rf + (k % B) * D, D, tol);
  }
}

static void expect_error(GError *error, int code, const char *needle, const char *what)
{
  if (!error)
    g_error("%s: expected an error", what);
  g_test_message("%s: %s", what, error->message);
  if (code >= 0 && error->code != code)
    g_error("%s: expected code %d, got %d: %s", what, code, error->code, error->message);
  if (needle && !strstr(error->message, needle))
    g_error("%s: the message \"%s\" does not mention \"%s\"", what, error->message, needle);
  g_error_free(error);
}

/* A copy of the tiny ResNet file with tensor `drop` left out, `reshape` given one row less, and
 * the configuration replaced by `config` (each when not NULL). */
static char *variant(const char *dir, const char *drop, const char *reshape, const char *config)
{
  GError *error = NULL;
  g_autofree char *src = fixture("resnet-tiny.safetensors");
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(src, &error);
  g_assert_no_error(error);
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  mexd_safetensors_writer_set_metadata(w, "mexd.format", MEXD_BACKBONE_FORMAT);
  mexd_safetensors_writer_set_metadata(w, "mexd.config",
                                       config ? config : mexd_safetensors_metadata(st, "mexd.config"));
  for (guint i = 0; i < mexd_safetensors_n_tensors(st); i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    if (drop && g_str_equal(t->name, drop))
      continue;
    int64_t shape[MEXD_ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    size_t bytes = t->nbytes;
    if (reshape && g_str_equal(t->name, reshape)) {
      bytes = bytes / shape[0] * (shape[0] - 1);
      shape[0]--;
    }
    g_assert_true(mexd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, shape, t->data,
                                              bytes, &error));
  }
  char *out = g_build_filename(dir, "variant.safetensors", NULL);
  g_assert_true(mexd_safetensors_writer_write(w, out, &error));
  g_assert_no_error(error);
  return out;
}

static void test_errors(void)
{
  g_autoptr(GError) e0 = NULL;
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", &e0);
  g_assert_no_error(e0);
  GError *error = NULL;
  g_autofree char *dir = g_dir_make_tmp("mexd-backbone-XXXXXX", NULL);
  g_autofree char *mexd_dir = mexd_test_fixture_dir("mexd");
  g_autofree char *model = g_build_filename(mexd_dir, "model-e2.safetensors", NULL);
  g_assert_null(mexd_backbone_load(model, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_UNSUPPORTED, "MExD model file", "a MExD model file");
  error = NULL;

  g_autofree char *v1 = variant(dir, "layer2.0.bn2.running_var", NULL, NULL);
  g_assert_null(mexd_backbone_load(v1, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_FORMAT, "layer2.0.bn2.running_var", "a missing tensor");
  error = NULL;
  g_autofree char *v2 = variant(dir, NULL, "layer3.1.conv2.weight", NULL);
  g_assert_null(mexd_backbone_load(v2, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_FORMAT, "layer3.1.conv2.weight", "a tensor of the wrong shape");
  error = NULL;
  g_autofree char *v3 = variant(dir, NULL, NULL, "{\"arch\": \"vit-h14\", \"mean\": [0,0,0], "
                                                 "\"std\": [1,1,1]}");
  g_assert_null(mexd_backbone_load(v3, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_UNSUPPORTED, "vit-h14", "an architecture not built");
  error = NULL;
  g_autofree char *v3b = variant(dir, NULL, NULL, "{\"arch\": \"vit-b16\", \"mean\": [0,0,0], "
                                                  "\"std\": [1,1,1]}");
  g_assert_null(mexd_backbone_load(v3b, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_FORMAT, "patch_embed.proj.weight", "a file for another arch");
  error = NULL;
  g_autofree char *v4 = variant(dir, NULL, NULL,
                                "{\"arch\": \"resnet50-trunc\", \"blocks\": [2, 1, 1], "
                                "\"width\": 16, \"input_size\": 64, \"mean\": [0,0,0], "
                                "\"std\": [1,1,1]}");
  g_assert_null(mexd_backbone_load(v4, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_FORMAT, "layer3.1", "tensors no layer takes");
  error = NULL;
  g_autofree char *v5 = variant(dir, NULL, NULL,
                                "{\"arch\": \"resnet50-trunc\", \"blocks\": [2, 1, 2], "
                                "\"width\": 16, \"input_size\": 64, \"mean\": [0,0,0], "
                                "\"std\": [1,0,1]}");
  g_assert_null(mexd_backbone_load(v5, cpu, MEXD_DTYPE_F32, &error));
  expect_error(error, MEXD_ERROR_FORMAT, "std[1]", "a zero std");
  error = NULL;
  g_unlink(v1);
  g_rmdir(dir);

  g_autofree char *ok = fixture("resnet-tiny.safetensors");
  g_autoptr(MexdBackbone) bb = mexd_backbone_load(ok, cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  float out[256];
  uint8_t px[3] = {0};
  g_assert_false(mexd_backbone_embed(bb, px, 0, 1, 1, out, NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "batch of 0 tiles", "an empty batch");
  error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new(cpu, MEXD_DTYPE_F32, 4, (int64_t[]){1, 3, 32, 32},
                                            &error);
  g_assert_null(mexd_backbone_forward(bb, x, NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "[B,3,64,64]", "an input of the wrong size");
}

/* `mexd extract` on the PNG copies of the fixture tiles: the CLAM file it writes holds the
 * reference features and the coordinates in the tiles' names; a folder where a file is not a
 * PNG fails naming it.  (MEXD_EXE: the mexd program, set by meson.) */
static void test_extract(void)
{
  const char *exe = g_getenv("MEXD_EXE");
  if (!exe) {
    g_test_skip("MEXD_EXE is not set");
    return;
  }
#ifndef MEXD_HAVE_HDF5
  g_test_skip("built without HDF5");
  return;
#endif
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("mexd-extract-XXXXXX", &error);
  g_autofree char *out = g_build_filename(dir, "feats.h5", NULL);
  g_autofree char *tiles = fixture("tiles"), *model = fixture("resnet-tiny.safetensors");
  const char *argv[] = {exe, "extract", "--backbone", model, "--tiles", tiles, "--out", out,
                        "--device", "cpu", "--batch", "2", NULL};
  int status;
  g_autofree char *so = NULL, *se = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &so, &se,
                             &status, &error));
  g_test_message("mexd extract: %s%s", so, se);
  g_assert_true(g_spawn_check_wait_status(status, &error));
  MexdBag *bag = mexd_bag_read(out, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  g_assert_cmpint(bag->n, ==, 3);
  g_assert_cmpint(bag->d, ==, 256);
  g_autofree char *iopath = fixture("resnet-tiny-io.safetensors");
  g_autoptr(MexdSafetensors) io = mexd_safetensors_open(iopath, &error);
  int64_t nf;
  g_autofree float *rf = mexd_test_st_floats(io, "features", &nf);
  mexd_test_assert_close("extract features", bag->features, bag->n * bag->d, rf, nf, TOL_F32);
  const int32_t want[6] = {0, 0, 72, 0, 0, 72};
  g_assert_nonnull(bag->coords);
  g_assert_cmpmem(bag->coords, sizeof want, want, sizeof want);
  g_assert_cmpint(bag->patch_size, ==, 72);
  mexd_bag_free(bag);
  g_unlink(out);

  /* a folder where a tile is not a PNG file: an error naming it, and no output file */
  g_autofree char *bad = g_build_filename(dir, "tiles", NULL);
  g_mkdir(bad, 0755);
  for (int i = 0; i < 2; i++) {
    g_autofree char *src = g_build_filename(tiles, i ? "t1_72_0.png" : "t0_0_0.png", NULL);
    g_autofree char *dst = g_build_filename(bad, i ? "b.png" : "a.png", NULL);
    gchar *data;
    gsize len;
    g_assert_true(g_file_get_contents(i ? src : model, &data, &len, NULL));
    g_assert_true(g_file_set_contents(dst, data, i ? (gssize)len : 100, NULL));
    g_free(data);
  }
  const char *argv2[] = {exe, "extract", "--backbone", model, "--tiles", bad, "--out", out,
                         "--device", "cpu", NULL};
  g_clear_pointer(&so, g_free);
  g_clear_pointer(&se, g_free);
  g_assert_true(g_spawn_sync(NULL, (char **)argv2, NULL, G_SPAWN_DEFAULT, NULL, NULL, &so, &se,
                             &status, &error));
  g_test_message("mexd extract (a file that is no PNG): %s", se);
  g_assert_false(g_spawn_check_wait_status(status, NULL));
  g_assert_nonnull(strstr(se, "a.png: not a readable PNG file"));
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  g_autofree char *pa = g_build_filename(bad, "a.png", NULL);
  g_autofree char *pb = g_build_filename(bad, "b.png", NULL);

  /* a tile of another size (odd-size.png is 56×40) after a 72×72 one */
  g_autofree char *odd = fixture("odd-size.png");
  gchar *data;
  gsize len;
  g_assert_true(g_file_get_contents(odd, &data, &len, NULL));
  g_assert_true(g_file_set_contents(pa, data, (gssize)len, NULL));
  g_free(data);
  g_autofree char *pz = g_build_filename(bad, "z.png", NULL);
  g_assert_true(g_rename(pa, pz) == 0);
  g_clear_pointer(&so, g_free);
  g_clear_pointer(&se, g_free);
  g_assert_true(g_spawn_sync(NULL, (char **)argv2, NULL, G_SPAWN_DEFAULT, NULL, NULL, &so, &se,
                             &status, &error));
  g_test_message("mexd extract (tiles of two sizes): %s", se);
  g_assert_false(g_spawn_check_wait_status(status, NULL));
  g_assert_nonnull(strstr(se, "z.png is 56x40, the tiles before it 72x72"));
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  g_unlink(pz);
  g_unlink(pb);
  g_rmdir(bad);
  g_rmdir(dir);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_auto(GStrv) backends = mexd_test_backends();
  static const MexdDType dtypes[] = {MEXD_DTYPE_F32, MEXD_DTYPE_F16};
  static const char *const nets[] = {"resnet", "vit", "ctranspath"};
  for (int b = 0; backends[b]; b++)
    for (int d = 0; d < 2; d++) {
      const char *dn = mexd_dtype_name(dtypes[d]);
      for (int k = 0; k < 4; k++) {
        Case *c = g_new0(Case, 1);
        c->backend = g_strdup(backends[b]);
        c->dtype = dtypes[d];
        c->net = k < 3 ? nets[k] : NULL;
        g_autofree char *p =
            k == 3 ? g_strdup_printf("/backbone/prep/%s/%s", backends[b], dn)
                   : g_strdup_printf("/backbone/%s-tiny/%s/%s", nets[k], backends[b], dn);
        g_test_add_data_func_full(p, c, k == 3 ? test_prep : test_net, case_free);
      }
    }
  /* the cpu backend's variants: bf16 (oneDNN; skipped on a CPU without AVX512-BF16/AMX or a
   * build without oneDNN) and the op-by-op f32 path that oneDNN's trunk replaces */
  for (int b = 0; backends[b]; b++) {
    if (!g_str_has_prefix(backends[b], "cpu"))
      continue;
    static const char *const variants[] = {"bf16", "nodnnl"};
    for (int v = 0; v < 2; v++)
      for (int k = 0; k < 3; k++) {
        Case *c = g_new0(Case, 1);
        c->backend = g_strdup(backends[b]);
        c->dtype = MEXD_DTYPE_F32;
        c->net = nets[k];
        c->variant = variants[v];
        g_autofree char *p =
            g_strdup_printf("/backbone/%s-tiny/%s/%s", nets[k], backends[b], variants[v]);
        g_test_add_data_func_full(p, c, test_net, case_free);
      }
  }
  g_test_add_func("/backbone/errors", test_errors);
  g_test_add_func("/backbone/extract", test_extract);
  int rc = g_test_run();
  if (g_getenv("MEXD_VK_VALIDATION") && mexd_vk_validation_messages() > 0) {
    g_printerr("the Vulkan validation layer reported %u messages\n", mexd_vk_validation_messages());
    rc = 1;
  }
  return rc;
}
