/* demo.c: `mexd demo` — the whole product in a few minutes, from nothing downloaded.
 *
 *   mexd demo [--out DIR] [--train-slides N] [--test-slides N] [--seed S] [--device D] [--quiet]
 *
 * 1. A cohort of synthetic slides (tests/data/make-slide.sh: OpenSlide-readable pyramidal TIFFs
 *    of a real IHC texture): half "tumor" with a lesion rectangle of another texture at a seeded
 *    place, half "normal" without; train and held-out test slides.
 * 2. A backbone with seeded random weights (a small ResNet-trunc, no download) extracts the
 *    tiles' features (`mexd extract --slide`, CLAM's tissue tiles).
 * 3. A small MExD is trained on the training slides: adapter, Dyn-MoE, Diff-C (`mexd train`;
 *    selection on a validation split carved from them).
 * 4. The held-out slides go through the GStreamer pipeline (`mexd classify`): a result, features,
 *    a heatmap over a thumbnail and scored tiles for each; a table of the predictions.
 * Everything lands in DIR (mexd-demo): slides/, backbone.safetensors, features/, labels.csv,
 * train/{adapter,moe,diffusion}/, classify/ (per slide and summary.csv), demo.json (the lesion
 * rectangles, for checking the heatmaps).  Needs vips and tiffset (make-slide.sh) and the mexd
 * GStreamer plugin.  Every file is written atomically.  Exit 0 done, 1 a failure, 2 bad usage
 * (--train-slides 6..198, --test-slides 2..194, 200 in all at most; --seed 0..1000000). */
#include "mexd.h"
#include "opts.h"

#include "../lib/mexd.h"
#include "../lib/train/dataset.h"
#include "../lib/train/trainer.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


/* ---- a backbone with random weights ---- */

static void normal_fill(GRand *r, float *v, int64_t n, double std)
{
  for (int64_t i = 0; i < n; i += 2) {
    double u0 = g_rand_double(r), u1 = g_rand_double(r);
    double m = sqrt(-2.0 * log(u0 > 0 ? u0 : 1e-300));
    v[i] = (float)(std * m * cos(2 * G_PI * u1));
    if (i + 1 < n)
      v[i + 1] = (float)(std * m * sin(2 * G_PI * u1));
  }
}

static gboolean add_conv_bn(MexdSafetensorsWriter *w, GRand *r, const char *conv, const char *bn,
                            int cin, int cout, int k, GError **error)
{
  int64_t n = (int64_t)cout * cin * k * k;
  g_autofree float *wt = g_new(float, n);
  normal_fill(r, wt, n, sqrt(2.0 / (cout * k * k))); /* torchvision: kaiming_normal, fan_out */
  g_autofree char *nw = g_strdup_printf("%s.weight", conv);
  if (!mexd_safetensors_writer_add(w, nw, MEXD_ST_F32, 4, (int64_t[]){cout, cin, k, k}, wt,
                                   sizeof(float) * n, error))
    return FALSE;
  g_autofree float *one = g_new(float, cout), *zero = g_new0(float, cout);
  for (int c = 0; c < cout; c++)
    one[c] = 1.0f;
  const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
  const float *vals[4] = {one, zero, zero, one};
  for (int p = 0; p < 4; p++) {
    g_autofree char *nm = g_strdup_printf("%s.%s", bn, parts[p]);
    if (!mexd_safetensors_writer_add(w, nm, MEXD_ST_F32, 1, (int64_t[]){cout}, vals[p],
                                     sizeof(float) * cout, error))
      return FALSE;
  }
  return TRUE;
}

/* torchvision's ResNet-50 layout through layer3, width `width`, `blocks` bottlenecks per layer,
 * with torchvision's initialisation (batch norm as the identity), seeded. */
static gboolean random_resnet(const char *path, int width, const int blocks[3], int input,
                              uint32_t seed, GError **error)
{
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  GRand *r = g_rand_new_with_seed(seed);
  gboolean ok = add_conv_bn(w, r, "conv1", "bn1", 3, width, 7, error);
  int inplanes = width;
  for (int L = 0; ok && L < 3; L++) {
    int planes = width << L;
    for (int i = 0; ok && i < blocks[L]; i++) {
      char c[64], b[64];
#define NM(buf, fmt) (g_snprintf(buf, sizeof buf, "layer%d.%d." fmt, L + 1, i), buf)
      ok = add_conv_bn(w, r, NM(c, "conv1"), NM(b, "bn1"), inplanes, planes, 1, error) &&
           add_conv_bn(w, r, NM(c, "conv2"), NM(b, "bn2"), planes, planes, 3, error) &&
           add_conv_bn(w, r, NM(c, "conv3"), NM(b, "bn3"), planes, planes * 4, 1, error);
      if (ok && i == 0 && (L > 0 || inplanes != planes * 4))
        ok = add_conv_bn(w, r, NM(c, "downsample.0"), NM(b, "downsample.1"), inplanes,
                         planes * 4, 1, error);
#undef NM
      inplanes = planes * 4;
    }
  }
  g_rand_free(r);
  if (!ok)
    return FALSE;
  g_autofree char *cfg = g_strdup_printf(
      "{\"arch\": \"resnet50-trunc\", \"input_size\": %d, \"mean\": [0.485, 0.456, 0.406], "
      "\"std\": [0.229, 0.224, 0.225], \"output_dim\": %d, \"blocks\": [%d, %d, %d], "
      "\"width\": %d}",
      input, 16 * width, blocks[0], blocks[1], blocks[2], width);
  mexd_safetensors_writer_set_metadata(w, "mexd.format", MEXD_BACKBONE_FORMAT);
  mexd_safetensors_writer_set_metadata(w, "mexd.config", cfg);
  return mexd_safetensors_writer_write(w, path, error);
}

/* ---- steps ---- */

typedef struct {
  char *id, *path;
  gboolean tumor, test;
  int lesion[4]; /* x, y, w, h (level 0) */
} DemoSlide;

/* Runs a mexd subcommand in this process with the given arguments. */
static int run_cmd(int (*fn)(int, char **), const char *first, ...)
{
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s; s = va_arg(ap, const char *))
    g_ptr_array_add(a, g_strdup(s));
  va_end(ap);
  /* GOption may reorder/remove entries of argv: give it a copy of the pointers */
  int argc = (int)a->len;
  char **argv = g_new0(char *, argc + 1);
  memcpy(argv, a->pdata, sizeof(char *) * argc);
  int rc = fn(argc, argv);
  g_free(argv);
  g_ptr_array_unref(a);
  return rc;
}

static gboolean make_slide(const char *out_dir, DemoSlide *s, int seed, GError **error)
{
  g_autofree char *script = mexd_tool_data_file("make-slide.sh", "tests/data/make-slide.sh");
  if (!g_file_test(script, G_FILE_TEST_EXISTS))
    return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                     "%s is missing: mexd demo makes its slides with that script (installed "
                     "with mexd; MEXD_DATA_DIR overrides its folder)",
                     script);
  g_autofree char *dir = g_build_filename(out_dir, "tmp", s->id, NULL);
  g_autofree char *seed_s = g_strdup_printf("%d", seed);
  g_autofree char *lesion = s->tumor ? g_strdup_printf("%d,%d,%d,%d", s->lesion[0], s->lesion[1],
                                                       s->lesion[2], s->lesion[3])
                                     : NULL;
  const char *argv[16] = {"sh", script, dir, "--seed", seed_s, "--width", "4096", "--height",
                          "3072", "--coverage", "0.55", "--flavour", "aperio", NULL, NULL, NULL};
  if (lesion) {
    argv[13] = "--lesion";
    argv[14] = lesion;
  }
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  g_autoptr(GError) e = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                    &status, &e))
    return mexd_fail(error, MEXD_ERROR_IO, "make-slide.sh: %s", e->message);
  if (!g_spawn_check_wait_status(status, NULL))
    return mexd_fail(error, MEXD_ERROR_IO,
                     "make-slide.sh failed (it needs vips and tiffset: Debian's libvips-tools "
                     "and libtiff-tools): %s",
                     err ? g_strstrip(err) : "");
  g_autofree char *made = g_build_filename(dir, "synth.svs", NULL);
  if (g_rename(made, s->path) != 0)
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot move to %s", made, s->path);
  g_autofree char *mask = g_build_filename(dir, "truth-mask.png", NULL);
  g_autofree char *truth = g_build_filename(dir, "truth.json", NULL);
  g_unlink(mask);
  g_unlink(truth);
  g_rmdir(dir);
  return TRUE;
}

/* The number of tissue tiles CLAM's tcga preset finds (the demo's tiling). */
static int64_t tissue_tiles(const char *path)
{
  g_autoptr(MexdSlide) s = mexd_slide_open(path, NULL);
  if (!s)
    return -1;
  MexdTissueParams tp;
  if (!mexd_tissue_preset("bwh_biopsy", &tp, NULL))
    return -1;
  g_autoptr(MexdTissue) t = mexd_slide_tissue(s, mexd_slide_seg_level(s), &tp, NULL);
  MexdGridSpec spec;
  if (!t || !mexd_grid_spec_level(s, 0, 256, 256, &spec, NULL))
    return -1;
  g_autofree int32_t *coords = NULL;
  return mexd_tile_grid(s, t, &spec, &coords);
}

static void progress(MexdTrainStage stage, int epoch, int done, int n, const MexdEpochReport *r,
                     gpointer data)
{
  const gboolean *quiet = data;
  if (r && !*quiet)
    fprintf(stderr, "  %s epoch %d/%d: loss %.4f, val AUC %.3f%s\n", mexd_train_stage_name(stage),
            r->epoch, r->epochs, r->train_loss, r->val_auc, r->best ? " *" : "");
}

int mexd_cmd_demo(int argc, char **argv)
{
  const char *cmd = "mexd demo";
  g_autofree char *out = NULL, *device = NULL;
  int n_train = 20, n_test = 6;
  gint64 seed = 1;
  gboolean quiet = FALSE;
  GOptionEntry entries[] = {
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "where everything goes (mexd-demo)", "DIR"},
      {"train-slides", 0, 0, G_OPTION_ARG_INT, &n_train, "training slides (20; 6..198)", "N"},
      {"test-slides", 0, 0, G_OPTION_ARG_INT, &n_test, "held-out slides (6; 2..194)", "N"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed,
       "seed of the cohort and the training (1; 0..1000000)", "S"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "only the table", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- the whole product on a synthetic cohort");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_summary(
      ctx, "Makes synthetic slides (with and without a lesion), extracts features with a\n"
           "random-weight backbone, trains a small MExD on some, classifies the others through\n"
           "the GStreamer pipeline and prints a table; heatmaps in DIR/classify/<slide>/.");
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 2;
  }
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  if (!mexd_opt_int(cmd, "--train-slides", n_train, 6, 198) ||
      !mexd_opt_int(cmd, "--test-slides", n_test, 2, 194) ||
      !mexd_opt_int(cmd, "--seed", seed, 0, 1000000))
    return 2;
  if (n_train + n_test > 200) {
    fprintf(stderr, "%s: --train-slides %d and --test-slides %d make %d slides, more than 200\n",
            cmd, n_train, n_test, n_train + n_test);
    return 2;
  }
  if (!out)
    out = g_strdup("mexd-demo");
  gint64 t0 = g_get_monotonic_time();
  g_autofree char *slides_dir = g_build_filename(out, "slides", NULL);
  g_autofree char *feat_dir = g_build_filename(out, "features", NULL);
  if (g_mkdir_with_parents(slides_dir, 0755) || g_mkdir_with_parents(feat_dir, 0755)) {
    fprintf(stderr, "%s: %s: cannot create: %s\n", cmd, out, g_strerror(errno));
    return 1;
  }
  const int n = n_train + n_test;
  g_autofree DemoSlide *sl = g_new0(DemoSlide, n);
  GRand *r = g_rand_new_with_seed((guint32)seed);
  /* 1. slides: half tumor, alternating, the test slides last */
  if (!quiet)
    fprintf(stderr, "%s: 1/4 making %d synthetic slides in %s\n", cmd, n, slides_dir);
  int next_seed = (int)(seed * 1000);
  for (int i = 0; i < n; i++) {
    DemoSlide *s = &sl[i];
    s->test = i >= n_train;
    s->tumor = i % 2 == 1;
    s->id = g_strdup_printf("%s_%02d", s->test ? "test" : "train", s->test ? i - n_train : i);
    g_autofree char *fn = g_strdup_printf("%s.svs", s->id);
    s->path = g_build_filename(slides_dir, fn, NULL);
    if (s->tumor) {
      s->lesion[2] = g_rand_int_range(r, 1000, 1600);
      s->lesion[3] = g_rand_int_range(r, 800, 1200);
      s->lesion[0] = g_rand_int_range(r, 200, 4096 - 200 - s->lesion[2]);
      s->lesion[1] = g_rand_int_range(r, 200, 3072 - 200 - s->lesion[3]);
    }
    if (g_file_test(s->path, G_FILE_TEST_EXISTS) && tissue_tiles(s->path) > 0)
      continue; /* made by an earlier run */
    for (int tries = 0;; tries++) {
      if (!make_slide(out, s, next_seed++, &error)) {
        fprintf(stderr, "%s: %s\n", cmd, error->message);
        g_rand_free(r);
        return 1;
      }
      if (tissue_tiles(s->path) > 0)
        break;
      if (tries > 20) {
        fprintf(stderr, "%s: no slide with tissue tiles after 20 seeds\n", cmd);
        g_rand_free(r);
        return 1;
      }
    }
  }
  g_rand_free(r);
  /* 2. backbone, features */
  g_autofree char *bb = g_build_filename(out, "backbone.safetensors", NULL);
  const int blocks[3] = {1, 1, 1};
  if (!random_resnet(bb, 16, blocks, 64, (uint32_t)seed, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (!quiet)
    fprintf(stderr, "%s: 2/4 features of every tissue tile with a random-weight ResNet-trunc "
                    "(%s, 256-d)\n",
            cmd, bb);
  const char *dev = device ? device : "";
  for (int i = 0; i < n; i++) {
    g_autofree char *fn = g_strdup_printf("%s.h5", sl[i].id);
    g_autofree char *h5 = g_build_filename(feat_dir, fn, NULL);
    if (g_file_test(h5, G_FILE_TEST_EXISTS))
      continue;
    int rc = device ? run_cmd(mexd_cmd_extract, "extract", "--backbone", bb, "--slide",
                              sl[i].path, "--preset", "bwh_biopsy", "--out", h5, "-q", "--device", dev,
                              NULL)
                    : run_cmd(mexd_cmd_extract, "extract", "--backbone", bb, "--slide",
                              sl[i].path, "--preset", "bwh_biopsy", "--out", h5, "-q", NULL);
    if (rc != 0) {
      fprintf(stderr, "%s: feature extraction of %s failed\n", cmd, sl[i].path);
      return 1;
    }
  }
  /* labels (lib/io/csv.h), written atomically as every output */
  GString *csv = g_string_new(NULL);
  mexd_csv_append_row(csv, (const char *const[]){"slide_id", "label", "split", NULL}, -1);
  for (int i = 0; i < n; i++)
    mexd_csv_append_row(csv,
                        (const char *const[]){sl[i].id, sl[i].tumor ? "tumor" : "normal",
                                              sl[i].test ? "test" : "train", NULL},
                        -1);
  g_autofree char *labels = g_build_filename(out, "labels.csv", NULL);
  gboolean ok = mexd_file_write_atomic(labels, csv->str, (gssize)csv->len, &error);
  g_string_free(csv, TRUE);
  /* demo.json: the lesions */
  GString *dj = g_string_new("{\"slides\": [");
  for (int i = 0; i < n; i++)
    g_string_append_printf(dj,
                           "%s\n  {\"slide_id\": \"%s\", \"label\": \"%s\", \"split\": \"%s\", "
                           "\"lesion\": [%d, %d, %d, %d]}",
                           i ? "," : "", sl[i].id, sl[i].tumor ? "tumor" : "normal",
                           sl[i].test ? "test" : "train", sl[i].lesion[0], sl[i].lesion[1],
                           sl[i].lesion[2], sl[i].lesion[3]);
  g_string_append(dj, "\n]}\n");
  g_autofree char *djp = g_build_filename(out, "demo.json", NULL);
  ok = ok && mexd_file_write_atomic(djp, dj->str, (gssize)dj->len, &error);
  g_string_free(dj, TRUE);
  if (!ok) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  /* 3. training */
  if (!quiet)
    fprintf(stderr, "%s: 3/4 training a small MExD on the %d training slides\n", cmd, n_train);
  MexdDatasetOptions dopt;
  mexd_dataset_options_init(&dopt);
  dopt.val_fraction = 0.25;
  dopt.seed = (uint64_t)seed;
  g_autoptr(MexdDataset) ds = mexd_dataset_load(feat_dir, labels, &dopt, &error);
  g_autoptr(MexdBackend) be = ds ? mexd_backend_new(device, &error) : NULL;
  if (!be) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    return 1;
  }
  if (!quiet)
    fprintf(stderr, "%s: on %s%s\n", cmd, mexd_backend_name(be),
            device ? "" : " (the default: --device chooses another)");
  const char *stages[3] = {"adapter", "moe", "diffusion"};
  g_autofree char *model = NULL;
  for (int k = 0; k < 3; k++) {
    g_autofree char *sdir = g_build_filename(out, "train", stages[k], NULL);
    g_autofree char *done = g_build_filename(sdir, "model.safetensors", NULL);
    g_autofree char *prev = k ? g_build_filename(out, "train", stages[k - 1],
                                                 "model.safetensors", NULL)
                              : NULL;
    if (g_file_test(done, G_FILE_TEST_EXISTS)) {
      g_free(model);
      model = g_strdup(done);
      continue;
    }
    MexdTrainOptions to;
    mexd_train_options_init(&to, k == 0 ? MEXD_TRAIN_ADAPTER : k == 1 ? MEXD_TRAIN_MOE
                                                                      : MEXD_TRAIN_DIFFUSION);
    to.out_dir = sdir;
    to.init = prev;
    to.seed = (uint64_t)seed;
    to.width = 64;
    to.heads = 2;
    to.landmarks = 32;
    to.epochs = k == 2 ? 60 : 40;
    to.patience = k == 2 ? 20 : 15;
    to.lr = k == 2 ? 0 : 1e-3; /* a short schedule: a larger step than the paper's 2e-4 */
    to.experts = 2;
    to.alpha[0] = 0.25;
    to.alpha[1] = 0.5;
    to.expert_of_class[0] = 0; /* normal: the background expert; tumor: expert 1 */
    to.expert_of_class[1] = 1;
    to.diffusion_width = 64;
    to.val_steps = 10;
    to.val_chains = 4;
    to.resume = g_file_test(sdir, G_FILE_TEST_EXISTS);
    to.progress = progress;
    to.progress_data = &quiet;
    if (!quiet)
      fprintf(stderr, "%s: stage %s\n", cmd, stages[k]);
    if (!mexd_train_run(&to, ds, be, &error)) {
      fprintf(stderr, "%s: training (%s): %s\n", cmd, stages[k], error->message);
      return 1;
    }
    g_free(model);
    model = g_strdup(done);
  }
  /* 4. classification of the held-out slides through the pipeline */
  if (!quiet)
    fprintf(stderr, "%s: 4/4 classifying the %d held-out slides with the GStreamer pipeline\n",
            cmd, n_test);
  g_autofree char *cdir = g_build_filename(out, "classify", NULL);
  GPtrArray *args = g_ptr_array_new();
  const char *pre[] = {"classify", "--backbone", bb, "--model", model, "--out", cdir,
                       "--preset", "bwh_biopsy", "--heatmap-width", "1024", "--seed", "0", "--quiet"};
  for (size_t k = 0; k < G_N_ELEMENTS(pre); k++)
    g_ptr_array_add(args, (gpointer)pre[k]);
  if (device) {
    g_ptr_array_add(args, "--device");
    g_ptr_array_add(args, device);
  }
  for (int i = n_train; i < n; i++)
    g_ptr_array_add(args, sl[i].path);
  g_ptr_array_add(args, NULL);
  int argc2 = (int)args->len - 1;
  g_autofree char **argv2 = g_memdup2(args->pdata, sizeof(char *) * args->len);
  g_ptr_array_unref(args);
  if (mexd_cmd_classify(argc2, argv2) != 0) {
    fprintf(stderr, "%s: classification failed\n", cmd);
    return 1;
  }
  /* the table */
  printf("\n%-9s %-7s %-9s %8s  %s\n", "slide", "truth", "predicted", "p(tumor)", "heatmap");
  int right = 0;
  for (int i = n_train; i < n; i++) {
    g_autofree char *rp = g_build_filename(cdir, sl[i].id, "result.json", NULL);
    g_autoptr(JsonNode) root = mexd_json_parse_file(rp, 16 << 20, &error);
    JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
    JsonNode *pn = o ? json_object_get_member(o, "probabilities") : NULL;
    JsonArray *pa = pn && JSON_NODE_HOLDS_ARRAY(pn) ? json_node_get_array(pn) : NULL;
    const char *cls = o ? json_object_get_string_member_with_default(o, "class", NULL) : NULL;
    if (!cls || !pa || json_array_get_length(pa) < 2) {
      if (error)
        fprintf(stderr, "%s: %s\n", cmd, error->message);
      else
        fprintf(stderr, "%s: %s: no class and probabilities\n", cmd, rp);
      return 1;
    }
    double pt = json_array_get_double_element(pa, 1);
    gboolean good = g_str_equal(cls, sl[i].tumor ? "tumor" : "normal");
    right += good;
    g_autofree char *hm = g_build_filename(cdir, sl[i].id, "heatmap.png", NULL);
    printf("%-9s %-7s %-9s %8.3f  %s%s\n", sl[i].id, sl[i].tumor ? "tumor" : "normal", cls, pt, hm,
           good ? "" : "  (wrong)");
  }
  printf("\n%d of %d held-out slides right; %.0f s in all.  Everything is in %s/ (demo.json has "
         "the lesion rectangles).\n",
         right, n_test, (g_get_monotonic_time() - t0) / 1e6, out);
  for (int i = 0; i < n; i++) {
    g_free(sl[i].id);
    g_free(sl[i].path);
  }
  g_autofree char *tmpd = g_build_filename(out, "tmp", NULL);
  g_rmdir(tmpd);
  return 0;
}
