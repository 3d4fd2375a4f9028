/* mexd.c: the `mexd` command.  `mexd help` lists the subcommands; each takes --help.
 * Exit codes: 0 success, 1 a failure while running, 2 bad usage. */
#include "mexd.h"

#include "../lib/mexd.h"
#include "opts.h"

#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


static int cmd_devices(int argc, char **argv)
{
  gboolean json = FALSE;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("Usage: mexd devices [--json]\n\nThe compute devices that open here (cpu, "
             "vulkan:N) and the default choice\n(--device / MEXD_DEVICE, else the best GPU "
             "Vulkan shows, else the cpu backend;\na software Vulkan device such as lavapipe "
             "only when asked for).\n");
      return 0;
    }
    if (!strcmp(argv[i], "--json")) {
      json = TRUE;
      continue;
    }
    fprintf(stderr, "mexd devices: unexpected argument \"%s\"\n", argv[i]);
    return 2;
  }
  g_auto(GStrv) list = mexd_backend_list();
  if (json)
    printf("{\"devices\": [");
  for (int i = 0; list[i]; i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdBackend) be = mexd_backend_new(list[i], &error);
    if (json)
      printf("%s{\"spec\": \"%s\", \"name\": \"%s\", \"usable\": %s, \"f16\": %s}",
             i ? ", " : "", list[i], be ? mexd_backend_name(be) : "", be ? "true" : "false",
             be && mexd_backend_has_f16(be) ? "true" : "false");
    else if (be)
      printf("%-10s %s%s\n", list[i], mexd_backend_name(be),
             mexd_backend_has_f16(be) ? "" : " (no f16)");
    else
      printf("%-10s cannot be used: %s\n", list[i], error->message);
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) def = mexd_backend_new(NULL, &error);
  if (json)
    printf("], \"default\": \"%s\"}\n", def ? mexd_backend_name(def) : "");
  else
    printf("default: %s\n", def ? mexd_backend_name(def) : error->message);
  if (!def)
    fprintf(stderr, "mexd devices: %s\n", error->message);
  return def ? 0 : 1;
}

/* `mexd convert …`: tools/convert.py (PyTorch checkpoints → mexd files) under Debian's python,
 * which has torch (python3-torch); its exit code is ours. */
static int cmd_convert(int argc, char **argv)
{
  const char *py = g_getenv("MEXD_PYTHON") ? g_getenv("MEXD_PYTHON") : "/usr/bin/python3";
  g_autofree char *script = mexd_tool_data_file("convert.py", "tools/convert.py");
  if (!g_file_test(script, G_FILE_TEST_EXISTS)) {
    fprintf(stderr, "mexd convert: %s is missing\n", script);
    return 1;
  }
  if (!g_file_test(py, G_FILE_TEST_IS_EXECUTABLE)) {
    fprintf(stderr, "mexd convert: %s not found (Debian: apt-get install python3-torch; or set "
                    "MEXD_PYTHON)\n",
            py);
    return 1;
  }
  char **av = g_new0(char *, argc + 3);
  av[0] = (char *)py;
  av[1] = script;
  for (int i = 1; i < argc; i++)
    av[i + 1] = argv[i];
  execv(py, av);
  fprintf(stderr, "mexd convert: cannot run %s: %s\n", py, g_strerror(errno));
  g_free(av);
  return 1;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: mexd COMMAND [ARGS…]\n"
             "\n"
             "commands:\n"
             "  bench gemm M N K [--device D] [--dtype f32|f16] [--reps R] [--json]\n"
             "                 GEMM throughput (GFLOP/s, median of R runs)\n"
             "  bench read SLIDE [--threads 1,2]\n"
             "                 tiles per second read from a slide, beside OpenSlide alone\n"
             "  bench backbone|mexd|train …\n"
             "                 images/s of a backbone, ms per slide of MExD, s per training epoch\n"
             "  classify SLIDE… --backbone B --model M [--out DIR] [--manifest CSV --shard I/N]\n"
             "                 whole slides through the GStreamer pipeline: result, features,\n"
             "                 heatmap and scored tiles per slide, a summary CSV; resumable\n"
             "  convert resnet50|vit|ctranspath|mexd-official|transmil IN.pth OUT.safetensors\n"
             "                 PyTorch checkpoints → mexd files (tools/convert.py; python3-torch)\n"
             "  demo [--out DIR]\n"
             "                 the whole product on a synthetic cohort in a few minutes: slides,\n"
             "                 features, training, classification, heatmaps\n"
             "  devices [--json]\n"
             "                 list the compute devices and the default choice\n"
             "  eval --model M --data DIR --labels CSV [--split test] [--out preds.csv]\n"
             "                 ACC, AUC, F1, per-class table and confusion matrix of a trained model\n"
             "  extract --backbone B (--tiles DIR | --slide FILE [--mag 20]) --out FEATS.h5\n"
             "          [--batch N] [--precision fp16|bf16]\n"
             "                 tile features (CLAM .h5) with a backbone, from a folder of PNG tiles\n"
             "                 or from the tissue of a slide\n"
             "  forward --model M --features BAG [--compat official] [--seed S] [--json]\n"
             "                 classify one bag of features with a MExD model\n"
             "  help           this text\n"
             "  synth-bags --out DIR [--preset camelyon16-like|bracs-like] [--classes 2|3]\n"
             "             [--slides N] [--seed S]\n"
             "                 a synthetic MIL benchmark (CLAM .h5 bags, labels.csv)\n"
             "  train adapter|transmil|moe|diffusion|abmil --data DIR --labels CSV --out DIR\n"
             "                 train a stage of MExD or a baseline from feature files\n"
             "  tiles SLIDE [--mag M | --mpp U | --level L] [--size 256] [--preset P]\n"
             "                 [--out patches.h5] [--geojson tiles.geojson]\n"
             "                 the tissue of a slide and the tiles over it (CLAM's rules)\n"
             "\n"
             "Devices: --device cpu | vulkan | vulkan:N; default MEXD_DEVICE, else the best GPU\n"
             "Vulkan shows, else the cpu backend (lavapipe only when asked for: --device vulkan).\n"
             "MEXD_DEBUG=1 logs the device, its limits and features.\n");
}

int main(int argc, char **argv)
{
  /* The terminal's character set only (LC_CTYPE), so that GLib's option help and messages show
   * "Δ", "ρ" and "–" under a UTF-8 locale instead of "?"; numbers keep the C locale's format
   * (LC_NUMERIC stays "C": CSV, JSON and every printed figure use a decimal point). */
  setlocale(LC_CTYPE, "");
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("mexd 0.1.0\n");
    return 0;
  }
  if (strcmp(cmd, "bench") == 0)
    return mexd_cmd_bench(argc - 1, argv + 1);
  if (strcmp(cmd, "devices") == 0)
    return cmd_devices(argc - 1, argv + 1);
  if (strcmp(cmd, "convert") == 0)
    return cmd_convert(argc - 1, argv + 1);
  if (strcmp(cmd, "forward") == 0)
    return mexd_cmd_forward(argc - 1, argv + 1);
  if (strcmp(cmd, "extract") == 0)
    return mexd_cmd_extract(argc - 1, argv + 1);
  if (strcmp(cmd, "synth-bags") == 0)
    return mexd_cmd_synth_bags(argc - 1, argv + 1);
  if (strcmp(cmd, "tiles") == 0)
    return mexd_cmd_tiles(argc - 1, argv + 1);
  if (strcmp(cmd, "train") == 0)
    return mexd_cmd_train(argc - 1, argv + 1);
  if (strcmp(cmd, "demo") == 0) {
#ifdef MEXD_HAVE_GST
    return mexd_cmd_demo(argc - 1, argv + 1);
#else
    fprintf(stderr, "mexd demo: this build has no GStreamer (install its -dev packages)\n");
    return 1;
#endif
  }
  if (strcmp(cmd, "classify") == 0) {
#ifdef MEXD_HAVE_GST
    return mexd_cmd_classify(argc - 1, argv + 1);
#else
    fprintf(stderr, "mexd classify: this build has no GStreamer (install its -dev packages)\n");
    return 1;
#endif
  }
  if (strcmp(cmd, "eval") == 0)
    return mexd_cmd_eval(argc - 1, argv + 1);
  fprintf(stderr, "mexd: unknown command \"%s\" (mexd help lists them)\n", cmd);
  return 2;
}
