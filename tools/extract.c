/* extract.c: `mexd extract` — tile features with a backbone, written as a CLAM feature file; and
 * `mexd bench backbone` — images per second of a backbone on a device.
 *
 *   mexd extract --backbone B.safetensors (--tiles DIR | --slide FILE [grid options])
 *                --out FEATS.h5 [--batch 64] [--threads N] [--precision fp32|fp16|bf16] [--device D]
 *
 * DIR holds the tiles as PNG files (8-bit RGB or RGBA, any colour type libpng converts; alpha is
 * dropped; at most MAX_TILE_PIXELS each), all of one size, taken in file-name order.  Coordinates
 * (decision, issue 4: "PNG tiles get coords from their order"): when every name ends in _X_Y.png
 * (integers, the way CLAM- and TRIDENT-style tilers name their output) those are the tile's
 * level-0 (x, y); otherwise tile i gets (i·w, 0).  The file gets `features` [N,D], `coords` [N,2]
 * and patch_size = w.  A tile that cannot be read (a FIFO or a folder named *.png among them:
 * refused before any open), or of another size, stops the run with an error naming the file.
 * Features that are not finite (the library refuses them: fp16 overflow, weights that overflow
 * float32) stop the run with an error naming the tile's file (--tiles) or the slide and the
 * tile's level-0 position (--slide).  The output must be none of the inputs (the backbone, the
 * slide, a tile; links count), checked before any work; it is written atomically at the end, so
 * an interrupted run leaves no partial file (and the next run removes its temporary).  The next
 * batch's PNGs are decoded on a worker thread while the current batch runs on the device, and
 * two batches are in flight (mexd_backbone_embed_submit): the device starts on a batch while the
 * one before is read back.
 *
 * Options: --batch 1..4096 (and a batch's pixels at most MAX_BATCH_BYTES), --threads 0..1024
 * (0: the cores, at most 8; --slide only), the grid options of grid-opts.h (--slide only).
 *
 *   mexd bench backbone --backbone B.safetensors [--batch 32] [--precision fp32|fp16|bf16]
 *                       [--device D] [--reps 3] [--tile 256] [--json]
 * times mexd_backbone_embed on random tiles (upload, preprocessing and the network); --batch
 * 1..4096, --reps 1..10000, --tile 16..4096. */
#include "mexd.h"
#include "grid-opts.h"
#include "opts.h"

#include "../lib/io/features.h"
#include "../lib/mexd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest PNG tile read (a 4096² RGB tile is 48 MiB) and the most pixel bytes a batch may
 * hold (two batches are decoded or read ahead). */
#define MAX_TILE_PIXELS ((int64_t)4096 * 4096)
#define MAX_BATCH_BYTES ((int64_t)2 << 30)

/* FALSE (with a message) when `batch` tiles of w × h RGB pixels exceed MAX_BATCH_BYTES. */
static gboolean batch_fits(const char *cmd, int batch, int64_t w, int64_t h)
{
  int64_t bytes = (int64_t)batch * w * h * 3;
  if (bytes <= MAX_BATCH_BYTES)
    return TRUE;
  g_autofree char *b = g_format_size((guint64)bytes), *m = g_format_size(MAX_BATCH_BYTES);
  fprintf(stderr, "%s: a batch of %d tiles of %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                  " pixels needs %s, more than the %s allowed: give a smaller --batch\n",
          cmd, batch, w, h, b, m);
  return FALSE;
}

/* "…_X_Y.png" → x, y */
static gboolean coords_from_name(const char *name, int32_t *x, int32_t *y)
{
  g_autofree char *stem = g_strndup(name, strlen(name) - 4);
  char *u2 = strrchr(stem, '_');
  if (!u2 || u2 == stem)
    return FALSE;
  *u2 = '\0';
  char *u1 = strrchr(stem, '_');
  const char *sx = u1 ? u1 + 1 : stem, *sy = u2 + 1;
  char *end;
  gint64 vx = g_ascii_strtoll(sx, &end, 10);
  if (!*sx || *end || vx < 0 || vx > G_MAXINT32)
    return FALSE;
  gint64 vy = g_ascii_strtoll(sy, &end, 10);
  if (!*sy || *end || vy < 0 || vy > G_MAXINT32)
    return FALSE;
  *x = (int32_t)vx;
  *y = (int32_t)vy;
  return TRUE;
}

/* One batch of tiles decoded into buf (on a worker thread while the previous batch computes). */
typedef struct {
  const char *dir;
  GPtrArray *names;
  int64_t i0, nb, tw, th;
  uint8_t *buf;
  GError *error;
} LoadJob;

static gpointer load_batch(gpointer data)
{
  LoadJob *j = data;
  for (int64_t k = 0; k < j->nb; k++) {
    g_autofree char *path = g_build_filename(j->dir, (char *)j->names->pdata[j->i0 + k], NULL);
    int64_t w, h;
    g_autofree uint8_t *px = mexd_png_read_rgb(path, MAX_TILE_PIXELS, &w, &h, &j->error);
    if (!px)
      return NULL;
    if (w != j->tw || h != j->th) {
      g_set_error(&j->error, MEXD_ERROR, MEXD_ERROR_SHAPE,
                  "%s is %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ", the tiles before it %" G_GINT64_FORMAT
                  "x%" G_GINT64_FORMAT " (all tiles must have one size)",
                  path, w, h, j->tw, j->th);
      return NULL;
    }
    memcpy(j->buf + k * j->tw * j->th * 3, px, (size_t)j->tw * j->th * 3);
  }
  return NULL;
}

/* Two batches in flight: a batch is submitted to the device, then the one before it is finished
 * (its features written), so the device computes while the next tiles are read.  When a batch's
 * features are not finite, `bad` is the run's index of the first tile with such a feature. */
typedef struct {
  MexdEmbedJob *job;
  float *dst;     /* where the running batch's features go */
  int64_t i0, n;  /* the running batch's first tile and count */
  int64_t d;      /* features per tile */
  int64_t bad;    /* −1, or the first tile whose features are not finite */
} EmbedPipe;

static gboolean pipe_finish(EmbedPipe *p, GError **error)
{
  MexdEmbedJob *job = g_steal_pointer(&p->job);
  if (!job || mexd_embed_job_finish(job, p->dst, error))
    return TRUE;
  /* the features were read back before they were judged: find the tile */
  for (int64_t k = 0; p->bad < 0 && k < p->n * p->d; k++)
    if (!isfinite(p->dst[k]))
      p->bad = p->i0 + k / p->d;
  return FALSE;
}

static gboolean pipe_push(EmbedPipe *p, MexdBackbone *bb, const uint8_t *px, int64_t n,
                          int64_t h, int64_t w, float *dst, int64_t i0, GError **error)
{
  MexdEmbedJob *job = mexd_backbone_embed_submit(bb, px, n, h, w, NULL, error);
  if (!job)
    return FALSE;
  gboolean ok = pipe_finish(p, error);
  p->job = job;
  p->dst = dst;
  p->i0 = i0;
  p->n = n;
  return ok;
}

static void pipe_clear(EmbedPipe *p)
{
  g_clear_pointer(&p->job, mexd_embed_job_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(EmbedPipe, pipe_clear)

static gint cmp_str(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static MexdPrecision parse_precision(const char *p, const char *cmd, gboolean *ok)
{
  MexdPrecision r = MEXD_PRECISION_FP32;
  *ok = !p || mexd_precision_parse(p, &r);
  if (!*ok)
    fprintf(stderr, "mexd %s: --precision is fp32, fp16 or bf16, not \"%s\"\n", cmd, p);
  return r;
}

/* The backbone in `prec` on `be`; bf16 on a Vulkan device is a usage error (exit 2: bf16 is the
 * cpu backend's 16-bit precision, fp16 the GPU's), anything else that fails exits 1. */
static MexdBackbone *load_backbone(const char *cmd, const char *path, MexdBackend *be,
                                   MexdPrecision prec, int *rc)
{
  g_autoptr(GError) error = NULL;
  if (prec == MEXD_PRECISION_BF16 && mexd_backend_kind(be) != MEXD_BACKEND_CPU) {
    fprintf(stderr, "%s: --precision bf16 runs on the cpu backend only (--device cpu); on %s "
                    "use fp16 or fp32\n", cmd, mexd_backend_name(be));
    *rc = 2;
    return NULL;
  }
  MexdBackbone *bb = mexd_backbone_load_precision(path, be, prec, &error);
  if (!bb) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    *rc = 1;
  }
  return bb;
}

/* Features of the tiles of a slide: the tissue grid (grid-opts.h), read by `threads` threads at
 * most two batches ahead of the backbone, which runs on the calling thread. */
static int extract_slide(const char *path, const GridOpts *go, MexdBackbone *bb, int batch,
                         int threads, const char *out, gboolean quiet)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdSlide) slide = mexd_slide_open(path, &error);
  MexdGridSpec spec;
  g_autoptr(MexdTissue) t = NULL;
  g_autofree int32_t *coords = NULL;
  int64_t N = slide ? mexd_slide_grid(go, slide, &spec, &t, &coords, quiet, &error) : -1;
  if (N < 0) {
    fprintf(stderr, "mexd extract: %s\n", error->message);
    return error->code == MEXD_ERROR_INVALID_ARGUMENT ? 2 : 1;
  }
  if (N == 0) {
    fprintf(stderr, "mexd extract: %s: no tissue tiles were found (try another --preset, or "
                    "mexd tiles --geojson to look at the tissue)\n", path);
    return 1;
  }
  const int64_t D = mexd_backbone_config(bb)->output_dim;
  const int S = spec.patch_size;
  if (!batch_fits("mexd extract", batch, S, S))
    return 1;
  MexdBag bag = {.n = N, .d = D, .patch_level = spec.level, .patch_size = S, .coords = coords};
  g_autofree float *feats = bag.features = g_try_new(float, N * D);
  g_autofree uint8_t *buf = g_try_malloc((size_t)batch * S * S * 3);
  if (!feats || !buf) {
    fprintf(stderr, "mexd extract: no memory for %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                    " features and a batch of %d tiles\n", N, D, batch);
    return 1;
  }
  g_autoptr(MexdTileReader) rd =
      mexd_tile_reader_new(slide, &spec, coords, N, threads, 2 * batch, &error);
  if (!rd) {
    fprintf(stderr, "mexd extract: %s\n", error->message);
    return 1;
  }
  gint64 t0 = g_get_monotonic_time(), last = t0;
  g_auto(EmbedPipe) pipe = {.d = D, .bad = -1};
  for (int64_t i0 = 0; i0 < N; i0 += batch) {
    int64_t nb = MIN((int64_t)batch, N - i0);
    for (int64_t k = 0; k < nb; k++) {
      const uint8_t *rgb;
      if (!mexd_tile_reader_next(rd, &rgb, NULL, &error)) {
        fprintf(stderr, "mexd extract: %s\n",
                error ? error->message : "the tile reader ended early");
        return 1;
      }
      memcpy(buf + (size_t)k * S * S * 3, rgb, (size_t)S * S * 3);
    }
    if (!pipe_push(&pipe, bb, buf, nb, S, S, feats + i0 * D, i0, &error) ||
        (i0 + nb == N && !pipe_finish(&pipe, &error))) {
      if (pipe.bad >= 0)
        fprintf(stderr, "mexd extract: %s: the tile at level-0 (%d, %d) (tile %" G_GINT64_FORMAT
                        " of %" G_GINT64_FORMAT "): %s\n",
                path, coords[2 * pipe.bad], coords[2 * pipe.bad + 1], pipe.bad + 1, N,
                error->message);
      else
        fprintf(stderr, "mexd extract: %s: %s\n", path, error->message);
      return 1;
    }
    gint64 now = g_get_monotonic_time();
    if (!quiet && (now - last > 2000000 || i0 + nb == N)) {
      fprintf(stderr, "mexd extract: %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " tiles, %.1f tiles/s\n",
              i0 + nb, N, (double)(i0 + nb) / ((double)(now - t0) / 1e6));
      last = now;
    }
  }
  if (!mexd_bag_write_h5(out, &bag, &error)) {
    fprintf(stderr, "mexd extract: %s\n", error->message);
    return 1;
  }
  if (!quiet)
    printf("%s: %" G_GINT64_FORMAT " tiles × %" G_GINT64_FORMAT " features (level-0 coordinates "
           "of %s)\n", out, N, D, path);
  return 0;
}

/* The PNG tiles of `dir` (names ending .png / .PNG), sorted by name; NULL with the error set. */
static GPtrArray *list_tiles(const char *dir, GError **error)
{
  if (!mexd_file_check_dir(dir, "folder of tiles", error))
    return NULL;
  g_autoptr(GDir) d = g_dir_open(dir, 0, error);
  if (!d)
    return NULL;
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  for (const char *n; (n = g_dir_read_name(d));)
    if (g_str_has_suffix(n, ".png") || g_str_has_suffix(n, ".PNG"))
      g_ptr_array_add(names, g_strdup(n));
  if (names->len == 0) {
    g_autofree char *shown = g_filename_display_name(dir);
    return mexd_fail_null(error, MEXD_ERROR_NOT_FOUND, "%s has no .png tiles", shown);
  }
  g_ptr_array_sort(names, cmp_str);
  /* every tile a regular file before any is opened (a FIFO would block the reader) */
  for (guint i = 0; i < names->len; i++) {
    g_autofree char *path = g_build_filename(dir, (char *)names->pdata[i], NULL);
    if (!mexd_file_check_regular(path, "PNG tile", error))
      return NULL;
  }
  return g_steal_pointer(&names);
}

static int extract_tiles(const char *tiles, GPtrArray *names, MexdBackbone *bb, int batch,
                         const char *out, gboolean quiet)
{
  g_autoptr(GError) error = NULL;
  const int64_t N = names->len;
  const int64_t D = mexd_backbone_config(bb)->output_dim;
  MexdBag bag = {.n = N, .d = D, .patch_level = 0};
  g_autofree float *feats = bag.features = g_try_new(float, N * D);
  g_autofree int32_t *coords = bag.coords = g_try_new(int32_t, N * 2);
  if (!feats || !coords) {
    fprintf(stderr, "mexd extract: no memory for %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT
                    " features\n", N, D);
    return 1;
  }
  gboolean named = TRUE;
  for (int64_t i = 0; i < N; i++)
    named = named && coords_from_name(names->pdata[i], &coords[2 * i], &coords[2 * i + 1]);
  /* the tile size from the first tile; then two buffers: the next batch is decoded on a worker
   * thread while the current one runs on the device (decoding is what limits a fast device) */
  int64_t tw = 0, th = 0;
  {
    g_autofree char *path = g_build_filename(tiles, (char *)names->pdata[0], NULL);
    g_autofree uint8_t *px = mexd_png_read_rgb(path, MAX_TILE_PIXELS, &tw, &th, &error);
    if (!px) {
      fprintf(stderr, "mexd extract: %s\n", error->message);
      return 1;
    }
  }
  if (!batch_fits("mexd extract", (int)MIN((int64_t)batch, N), tw, th))
    return 1;
  const size_t batch_bytes = (size_t)MIN((int64_t)batch, N) * (size_t)tw * (size_t)th * 3;
  g_autofree uint8_t *buf = g_try_malloc(batch_bytes);
  g_autofree uint8_t *buf2 = buf ? g_try_malloc(batch_bytes) : NULL;
  if (!buf2) {
    fprintf(stderr, "mexd extract: no memory for two batches of %d tiles\n", batch);
    return 1;
  }
  LoadJob job = {tiles, names, 0, MIN(batch, N), tw, th, buf, NULL};
  load_batch(&job);
  gint64 t0 = g_get_monotonic_time(), last = t0;
  g_auto(EmbedPipe) pipe = {.d = D, .bad = -1};
  for (int64_t i0 = 0; i0 < N; i0 += batch) {
    if (job.error) {
      fprintf(stderr, "mexd extract: %s\n", job.error->message);
      g_error_free(job.error);
      return 1;
    }
    int64_t nb = job.nb;
    uint8_t *cur = job.buf;
    GThread *worker = NULL;
    if (i0 + nb < N) {
      job = (LoadJob){tiles, names, i0 + nb, MIN(batch, N - i0 - nb), tw, th,
                      cur == buf ? buf2 : buf, NULL};
      worker = g_thread_new("mexd-png", load_batch, &job);
    }
    gboolean embedded = pipe_push(&pipe, bb, cur, nb, th, tw, feats + i0 * D, i0, &error) &&
                        (i0 + nb < N || pipe_finish(&pipe, &error));
    if (worker)
      g_thread_join(worker);
    if (!embedded) {
      if (pipe.bad >= 0) {
        g_autofree char *path = g_build_filename(tiles, (char *)names->pdata[pipe.bad], NULL);
        g_autofree char *shown = g_filename_display_name(path);
        fprintf(stderr, "mexd extract: %s: %s\n", shown, error->message);
      } else {
        fprintf(stderr, "mexd extract: %s\n", error->message);
      }
      g_clear_error(&job.error);
      return 1;
    }
    gint64 now = g_get_monotonic_time();
    if (!quiet && (now - last > 2000000 || i0 + nb == N)) {
      fprintf(stderr, "mexd extract: %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " tiles, %.1f tiles/s\n",
              i0 + nb, N, (double)(i0 + nb) / ((double)(now - t0) / 1e6));
      last = now;
    }
  }
  if (!named)
    for (int64_t i = 0; i < N; i++) {
      coords[2 * i] = (int32_t)(i * tw);
      coords[2 * i + 1] = 0;
    }
  bag.patch_size = (int)tw;
  if (!mexd_bag_write_h5(out, &bag, &error)) {
    fprintf(stderr, "mexd extract: %s\n", error->message);
    return 1;
  }
  if (!quiet)
    printf("%s: %" G_GINT64_FORMAT " tiles × %" G_GINT64_FORMAT " features (%s coordinates)\n",
           out, N, D, named ? "file-name" : "order");
  return 0;
}

int mexd_cmd_extract(int argc, char **argv)
{
  const char *cmd = "mexd extract";
  g_autofree char *backbone = NULL, *tiles = NULL, *out = NULL, *device = NULL, *prec = NULL;
  g_autofree char *slide = NULL;
  int batch = 64, threads = 0;
  GridOpts go;
  grid_opts_init(&go);
  gboolean quiet = FALSE;
  GOptionEntry entries[] = {
      {"backbone", 'b', 0, G_OPTION_ARG_FILENAME, &backbone, "the backbone file", "B"},
      {"tiles", 't', 0, G_OPTION_ARG_FILENAME, &tiles, "a directory of PNG tiles", "DIR"},
      {"slide", 's', 0, G_OPTION_ARG_FILENAME, &slide,
       "a slide: its tissue tiles (see the grid options)", "FILE"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads,
       "threads reading the slide (0: the cores, at most 8; 0..1024)", "N"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
       "the CLAM feature file to write (.h5; never one of the inputs)", "H5"},
      {"batch", 0, 0, G_OPTION_ARG_INT, &batch, "tiles per batch (64; 1..4096)", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &prec, "fp32 (default), fp16 (GPU; runs as bf16 on the cpu) or bf16 (cpu)", "P"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- tile features with a backbone");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_group(ctx, grid_opts_group(&go));
  g_option_context_set_summary(
      ctx, "Exit 0 done, 1 a failure (a tile that cannot be read, features that are not finite,\n"
           "an output that is an input), 2 bad usage (an option outside its range among them).");
  g_autoptr(GError) error = NULL;
  int rc = 2;
  gboolean ok;
  MexdPrecision dtype;
  g_autoptr(GPtrArray) names = NULL;
  g_autoptr(MexdInputSet) inputs = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    goto done;
  }
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    goto done;
  }
  if (!backbone || !tiles == !slide || !out) {
    fprintf(stderr, "%s: give --backbone B, one of --tiles DIR and --slide FILE, and --out "
                    "FEATS.h5; mexd extract --help\n", cmd);
    goto done;
  }
  if (!mexd_opt_int(cmd, "--batch", batch, 1, 4096) ||
      !mexd_opt_int(cmd, "--threads", threads, 0, 1024) ||
      (slide && !grid_opts_check(&go, cmd)))
    goto done;
  if (tiles && (grid_opts_any(&go) || threads)) {
    fprintf(stderr, "%s: the grid options and --threads are --slide's; --tiles takes the PNG "
                    "files as they are\n", cmd);
    goto done;
  }
  dtype = parse_precision(prec, "extract", &ok);
  if (!ok)
    goto done;
  /* the inputs are files (a FIFO is refused before any open) and the output is none of them */
  rc = 1;
  inputs = mexd_input_set_new();
  if (!mexd_file_check_regular(backbone, "backbone file", &error) ||
      (slide && !mexd_file_check_regular(slide, "slide", &error)) ||
      (tiles && !(names = list_tiles(tiles, &error)))) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    goto done;
  }
  mexd_input_set_add(inputs, backbone);
  if (slide)
    mexd_input_set_add(inputs, slide);
  for (guint i = 0; names && i < names->len; i++) {
    g_autofree char *path = g_build_filename(tiles, (char *)names->pdata[i], NULL);
    mexd_input_set_add(inputs, path);
  }
  if (!mexd_input_set_check(inputs, out, &error)) {
    fprintf(stderr, "%s: %s\n", cmd, error->message);
    goto done;
  }
  {
    g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
    if (!be) {
      fprintf(stderr, "%s: %s\n", cmd, error->message);
      goto done;
    }
    g_autoptr(MexdBackbone) bb = load_backbone(cmd, backbone, be, dtype, &rc);
    if (!bb)
      goto done;
    if (slide) {
      if (threads == 0)
        threads = CLAMP((int)g_get_num_processors(), 1, 8);
      rc = extract_slide(slide, &go, bb, batch, threads, out, quiet);
    } else {
      rc = extract_tiles(tiles, names, bb, batch, out, quiet);
    }
  }
done:
  grid_opts_clear(&go);
  return rc;
}

int mexd_bench_backbone(int argc, char **argv)
{
  g_autofree char *backbone = NULL, *device = NULL, *prec = NULL;
  int batch = 32, reps = 3, tile = 256;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"backbone", 'b', 0, G_OPTION_ARG_FILENAME, &backbone, "the backbone file", "B"},
      {"batch", 0, 0, G_OPTION_ARG_INT, &batch, "tiles per batch (32; 1..4096)", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &prec, "fp32 (default), fp16 (GPU; runs as bf16 on the cpu) or bf16 (cpu)", "P"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "cpu | vulkan | vulkan:N", "D"},
      {"reps", 0, 0, G_OPTION_ARG_INT, &reps, "timed batches after one warm-up (3; 1..10000)",
       "R"},
      {"tile", 0, 0, G_OPTION_ARG_INT, &tile,
       "tile side in pixels before the resize (256; 16..4096)", "S"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON line", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new("- images per second of a backbone");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "mexd bench backbone: %s\n", error->message);
    return 2;
  }
  const char *cmd = "mexd bench backbone";
  if (argc > 1) {
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[1]);
    return 2;
  }
  gboolean ok;
  MexdPrecision dtype = parse_precision(prec, "bench backbone", &ok);
  if (!ok)
    return 2;
  if (!backbone) {
    fprintf(stderr, "%s: give --backbone B (mexd bench backbone --help)\n", cmd);
    return 2;
  }
  if (!mexd_opt_int(cmd, "--batch", batch, 1, 4096) ||
      !mexd_opt_int(cmd, "--reps", reps, 1, 10000) ||
      !mexd_opt_int(cmd, "--tile", tile, 16, 4096))
    return 2;
  if (!batch_fits(cmd, batch, tile, tile))
    return 1;
  g_autoptr(MexdBackend) be = mexd_backend_new(device, &error);
  if (!be) {
    fprintf(stderr, "mexd bench backbone: %s\n", error->message);
    return 1;
  }
  int lrc = 1;
  g_autoptr(MexdBackbone) bb = load_backbone(cmd, backbone, be, dtype, &lrc);
  if (!bb)
    return lrc;
  const MexdBackboneConfig *cfg = mexd_backbone_config(bb);
  size_t nbytes = (size_t)batch * tile * tile * 3;
  g_autofree uint8_t *px = g_try_malloc(nbytes);
  g_autofree float *out = g_try_new(float, (int64_t)batch * cfg->output_dim);
  g_autofree double *t = g_new(double, reps);
  if (!px || !out) {
    fprintf(stderr, "%s: no memory for a batch of %d tiles of %d² pixels\n", cmd, batch, tile);
    return 1;
  }
  GRand *rng = g_rand_new_with_seed(3);
  for (size_t i = 0; i < nbytes; i++)
    px[i] = (uint8_t)g_rand_int_range(rng, 0, 256);
  g_rand_free(rng);
  for (int r = -1; r < reps; r++) {
    gint64 t0 = g_get_monotonic_time();
    if (!mexd_backbone_embed(bb, px, batch, tile, tile, out, NULL, &error)) {
      fprintf(stderr, "mexd bench backbone: %s\n", error->message);
      return 1;
    }
    if (r >= 0)
      t[r] = (double)(g_get_monotonic_time() - t0) / 1e3;
  }
  double ms = mexd_median(t, reps), ips = batch / (ms / 1e3);
  /* the same batches with two in flight (as mexd extract runs them): throughput over all */
  gint64 tp = g_get_monotonic_time();
  {
    g_auto(EmbedPipe) pipe = {.d = cfg->output_dim, .bad = -1};
    for (int r = 0; r < reps; r++)
      if (!pipe_push(&pipe, bb, px, batch, tile, tile, out, 0, &error) ||
          (r == reps - 1 && !pipe_finish(&pipe, &error))) {
        fprintf(stderr, "mexd bench backbone: %s\n", error->message);
        return 1;
      }
  }
  double ips2 = (double)batch * reps / ((double)(g_get_monotonic_time() - tp) / 1e6);
  if (json)
    printf("{\"bench\": \"backbone\", \"arch\": \"%s\", \"device\": \"%s\", \"precision\": \"%s\", "
           "\"batch\": %d, \"tile\": %d, \"input\": %d, \"ms_per_batch\": %.2f, "
           "\"images_per_s\": %.1f, \"images_per_s_two_in_flight\": %.1f, \"reps\": %d}\n",
           cfg->arch, mexd_backend_name(be), mexd_precision_name(mexd_backbone_precision(bb)), batch,
           tile, cfg->input_size, ms, ips, ips2, reps);
  else
    printf("mexd bench backbone %s on %s (%s): batch %d of %d² tiles → %d²: %.1f ms per batch, "
           "%.1f images/s (median of %d); two batches in flight: %.1f images/s\n",
           cfg->arch, mexd_backend_name(be), mexd_precision_name(mexd_backbone_precision(bb)), batch,
           tile, cfg->input_size, ms, ips, reps, ips2);
  return 0;
}
