/* parsers.c: the bad-input suite's in-process half.  `test-bad-parsers DIR` feeds every regular
 * file of DIR (recursively; written by `suite.py --emit-parsers DIR`: every bad model, backbone,
 * bag and slide the suite makes) to each parser of libmexd directly:
 *
 *   - mexd_safetensors_open, then its tensors, metadata keys, `mexd.format` and `mexd.config`,
 *     mexd_model_config_parse of the config, and the whole loaders mexd_model_load /
 *     mexd_backbone_load on the cpu backend;
 *   - mexd_bag_read (MEXD_BAG_AUTO), then mexd_bag_check_finite;
 *   - mexd_slide_open, then its geometry, a small region of the first and the last level, and the
 *     tissue at the segmentation level (the default preset).
 *
 * It asserts only that each call returns: with success, or with a GError that has a message.  A
 * crash (or, in CI's AddressSanitizer build, an invalid access or a leak) fails the test; the
 * file being read is printed before each call, so the log names the culprit.  Special files
 * (FIFOs, devices, links) are skipped: an open() of a FIFO blocks, which is the command-line
 * suite's business.
 *
 * Exit: 0 when every call returned properly, 1 when one returned FALSE/NULL without a message,
 * 77 (skip) when DIR holds no file. */
#include "mexd.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int n_calls, n_errors, n_bad;
static MexdBackend *cpu;

static void note(const char *path, const char *what)
{
  printf("%s: %s\n", what, path);
  fflush(stdout);
}

/* A call returned: TRUE, or FALSE with a GError that has a message. */
static void returned(const char *path, const char *what, gboolean ok, GError **error)
{
  n_calls++;
  if (ok) {
    g_clear_error(error);
    return;
  }
  n_errors++;
  if (!*error || !(*error)->message || !*(*error)->message) {
    printf("FAIL %s: %s failed without an error message\n", path, what);
    n_bad++;
  } else {
    printf("  %s: %s\n", what, (*error)->message);
  }
  g_clear_error(error);
}

static void try_safetensors(const char *path)
{
  GError *error = NULL;
  note(path, "safetensors");
  MexdSafetensors *st = mexd_safetensors_open(path, &error);
  returned(path, "mexd_safetensors_open", st != NULL, &error);
  if (!st)
    return;
  guint n = mexd_safetensors_n_tensors(st);
  for (guint i = 0; i < n; i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    if (!t || !t->name) {
      printf("FAIL %s: tensor %u of %u is NULL\n", path, i, n);
      n_bad++;
      continue;
    }
    if (mexd_safetensors_find(st, t->name) == NULL) {
      printf("FAIL %s: tensor \"%s\" is listed but not found by name\n", path, t->name);
      n_bad++;
    }
  }
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
  /* the metadata's strings live as long as st: a copy for the loaders below */
  g_autofree char *fmt = g_strdup(mexd_safetensors_metadata(st, "mexd.format"));
  const char *cfg = mexd_safetensors_metadata(st, "mexd.config");
  if (cfg) {
    note(path, "mexd_model_config_parse");
    MexdModelConfig c;
    memset(&c, 0, sizeof c);
    gboolean ok = mexd_model_config_parse(&c, cfg, path, &error);
    returned(path, "mexd_model_config_parse", ok, &error);
    mexd_model_config_clear(&c);
  }
  mexd_safetensors_free(st);
  if (!keys) {
    printf("FAIL %s: mexd_safetensors_metadata_keys returned NULL\n", path);
    n_bad++;
  }
  if (fmt && g_str_equal(fmt, "mexd-model/1")) {
    note(path, "mexd_model_load");
    MexdModel *m = mexd_model_load(path, cpu, &error);
    returned(path, "mexd_model_load", m != NULL, &error);
    if (m)
      mexd_model_free(m);
  }
  if (fmt && g_str_equal(fmt, MEXD_BACKBONE_FORMAT)) {
    note(path, "mexd_backbone_load");
    MexdBackbone *b = mexd_backbone_load(path, cpu, MEXD_DTYPE_F32, &error);
    returned(path, "mexd_backbone_load", b != NULL, &error);
    if (b)
      mexd_backbone_free(b);
  }
}

static void try_bag(const char *path)
{
  GError *error = NULL;
  note(path, "mexd_bag_read");
  MexdBag *bag = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  returned(path, "mexd_bag_read", bag != NULL, &error);
  if (!bag)
    return;
  if (bag->n < 1 || bag->d < 1 || !bag->features) {
    printf("FAIL %s: a bag of %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT " was read\n", path,
           (gint64)bag->n, (gint64)bag->d);
    n_bad++;
  }
  returned(path, "mexd_bag_check_finite", mexd_bag_check_finite(bag, &error), &error);
  mexd_bag_free(bag);
}

static void try_slide(const char *path)
{
  GError *error = NULL;
  note(path, "mexd_slide_open");
  MexdSlide *s = mexd_slide_open(path, &error);
  returned(path, "mexd_slide_open", s != NULL, &error);
  if (!s)
    return;
  int levels = mexd_slide_level_count(s);
  for (int l = 0; l < levels; l++) {
    int64_t w = 0, h = 0;
    mexd_slide_level_size(s, l, &w, &h);
    (void)mexd_slide_level_downsample(s, l);
  }
  (void)mexd_slide_vendor(s);
  (void)mexd_slide_mpp_x(s);
  (void)mexd_slide_objective(s);
  /* a corner of the first and of the last level */
  uint8_t rgb[64 * 64 * 3];
  int ends[2] = {0, levels - 1};
  for (int k = 0; k < 2 && levels > 0; k++) {
    note(path, "mexd_slide_read_rgb");
    returned(path, "mexd_slide_read_rgb",
             mexd_slide_read_rgb(s, 0, 0, ends[k], 64, 64, rgb, NULL, &error), &error);
  }
  MexdTissueParams tp;
  if (mexd_tissue_preset("default", &tp, NULL)) {
    note(path, "mexd_slide_tissue");
    MexdTissue *t = mexd_slide_tissue(s, -1, &tp, &error);
    returned(path, "mexd_slide_tissue", t != NULL, &error);
    if (t)
      mexd_tissue_free(t);
  }
  mexd_slide_free(s);
}

static gint cmp_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *dir, int *n_files)
{
  GError *error = NULL;
  GDir *d = g_dir_open(dir, 0, &error);
  if (!d) {
    printf("FAIL %s: %s\n", dir, error->message);
    n_bad++;
    g_error_free(error);
    return;
  }
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (const char *n; (n = g_dir_read_name(d));)
    g_ptr_array_add(names, g_strdup(n));
  g_dir_close(d);
  g_ptr_array_sort(names, cmp_names);
  for (guint i = 0; i < names->len; i++) {
    g_autofree char *p = g_build_filename(dir, (char *)names->pdata[i], NULL);
    GStatBuf st;
    if (g_lstat(p, &st) != 0)
      continue;
    if (S_ISDIR(st.st_mode)) {
      walk(p, n_files);
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      printf("skipped (not a regular file): %s\n", p);
      continue;
    }
    (*n_files)++;
    try_safetensors(p);
    try_bag(p);
    try_slide(p);
  }
  g_ptr_array_unref(names);
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: test-bad-parsers DIR (suite.py --emit-parsers DIR writes it)\n");
    return 2;
  }
  GError *error = NULL;
  cpu = mexd_backend_new("cpu", &error);
  if (!cpu) {
    fprintf(stderr, "test-bad-parsers: %s\n", error->message);
    return 1;
  }
  int n_files = 0;
  walk(argv[1], &n_files);
  mexd_backend_unref(cpu);
  printf("%d files, %d calls, %d returned an error with a message, %d improperly\n", n_files,
         n_calls, n_errors, n_bad);
  if (n_files == 0)
    return 77;
  return n_bad ? 1 : 0;
}
