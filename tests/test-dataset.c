/* test-dataset.c: the training data set (lib/train/dataset.h).
 *
 * Every data set is built in a temporary directory: small bags written as .npy and CSV by hand
 * here, and as CLAM HDF5 by mexd_bag_write_h5 (the HDF5 parts are left out when libmexd was built
 * without HDF5).  A bag's features are base + i + j / 8 (instance i, feature j).
 *
 * /train/dataset/layouts      S.h5, S.csv, S.npy, h5_files/S.h5; unused files; coords dropped.
 * /train/dataset/csv          BOM, quotes, CRLF, blank lines, extra columns, header case, split
 *                             synonyms, multi-line quoted cells, line numbers.
 * /train/dataset/csv-errors   errors of the CSV as a whole (always errors, even with skip_bad).
 * /train/dataset/classes      numeric and strcmp orders, given names, presets and aliases.
 * /train/dataset/val          the stratified seeded val carving against the spec's algorithm.
 * /train/dataset/permutation  the epoch order: a permutation, against the spec's algorithm,
 *                             (seed, epoch) only, uniformity (chi-square).
 * /train/dataset/bad          every bad-data error: code, message naming slide / file / line;
 *                             skip_bad turns each into a warning and n_skipped.
 * /train/dataset/skip-d       skip_bad keeps the most common D (ties: the first slide's).
 * /train/dataset/max-bytes    the memory budget.
 * /train/dataset/presets      camelyon16 and bracs official splits on fake slides.
 * /train/dataset/misc         options, argument errors, summary, count, split names.
 * /train/dataset/quoted-ids   slide ids with commas, quotes and line breaks (RFC 4180 quoting).
 * /train/dataset/outputs      options.outputs: an output that is the labels CSV or a feature file
 *                             (same path, symbolic link, hard link) refused, also with skip_bad;
 *                             a FIFO as labels CSV or feature file refused without blocking. */
#include "mexd.h"
#include "nn/philox.h"
#include "train/dataset.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define D 4

static char *root;
static gboolean have_h5;
static int dir_counter;

/* ---- helpers ---- */

static void remove_tree(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d)
    return;
  for (const char *name; (name = g_dir_read_name(d));) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
      remove_tree(p);
    else
      g_unlink(p);
  }
  g_dir_close(d);
  g_rmdir(dir);
}

/* A new empty directory under the temporary root; g_free it. */
static char *new_dir(const char *name)
{
  char *dir = g_strdup_printf("%s/%02d-%s", root, dir_counter++, name);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  return dir;
}

static void put(const char *dir, const char *rel, const void *data, gssize len)
{
  g_autofree char *path = g_build_filename(dir, rel, NULL);
  g_autofree char *parent = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
  GError *error = NULL;
  g_file_set_contents(path, data, len, &error);
  g_assert_no_error(error);
}

static float feature(float base, int64_t i, int64_t j)
{
  return base + (float)i + (float)j / 8.0f;
}

/* A .npy (v1.0, '<f4') of n x d features; `nan_at` >= 0 puts `special` at that element. */
static void put_npy_special(const char *dir, const char *rel, int64_t n, int64_t d, float base,
                            int64_t at, float special)
{
  g_autofree char *header =
      g_strdup_printf("{'descr': '<f4', 'fortran_order': False, 'shape': (%" G_GINT64_FORMAT
                      ", %" G_GINT64_FORMAT "), }",
                      n, d);
  size_t hlen = strlen(header) + 1;
  hlen += (64 - (10 + hlen) % 64) % 64;
  size_t total = 10 + hlen + (size_t)(n * d) * 4;
  g_autofree guint8 *buf = g_malloc0(total);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  buf[8] = (guint8)(hlen & 0xff);
  buf[9] = (guint8)(hlen >> 8);
  memset(buf + 10, ' ', hlen);
  memcpy(buf + 10, header, strlen(header));
  buf[10 + hlen - 1] = '\n';
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) {
      float v = i * d + j == at ? special : feature(base, i, j);
      guint32 u;
      memcpy(&u, &v, 4);
      u = GUINT32_TO_LE(u);
      memcpy(buf + 10 + hlen + (size_t)(i * d + j) * 4, &u, 4);
    }
  put(dir, rel, buf, (gssize)total);
}

static void put_npy(const char *dir, const char *rel, int64_t n, int64_t d, float base)
{
  put_npy_special(dir, rel, n, d, base, -1, 0);
}

/* A DSMIL CSV bag with a header line. */
static void put_csv_bag(const char *dir, const char *rel, int64_t n, int64_t d, float base)
{
  GString *s = g_string_new(NULL);
  for (int64_t j = 0; j < d; j++)
    g_string_append_printf(s, "%sf%" G_GINT64_FORMAT, j ? "," : "", j);
  g_string_append_c(s, '\n');
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < d; j++)
      g_string_append_printf(s, "%s%.9g", j ? "," : "", (double)feature(base, i, j));
    g_string_append(s, "\r\n");
  }
  put(dir, rel, s->str, (gssize)s->len);
  g_string_free(s, TRUE);
}

/* A CLAM .h5 with coords (which the data set drops). */
static void put_h5(const char *dir, const char *rel, int64_t n, int64_t d, float base)
{
  g_assert_true(have_h5);
  g_autofree char *path = g_build_filename(dir, rel, NULL);
  g_autofree char *parent = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
  MexdBag bag = {.n = n, .d = d, .patch_level = 0, .patch_size = 256};
  bag.features = g_new(float, n *d);
  bag.coords = g_new0(int32_t, n * 2);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++)
      bag.features[i * d + j] = feature(base, i, j);
  GError *error = NULL;
  g_assert_true(mexd_bag_write_h5(path, &bag, &error));
  g_assert_no_error(error);
  g_free(bag.features);
  g_free(bag.coords);
}

static void check_bag(const MexdBag *bag, int64_t n, int64_t d, float base)
{
  g_assert_nonnull(bag);
  g_assert_cmpint(bag->n, ==, n);
  g_assert_cmpint(bag->d, ==, d);
  g_assert_null(bag->coords);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++)
      g_assert_cmpfloat(bag->features[i * d + j], ==, feature(base, i, j));
}

typedef struct {
  GPtrArray *slides;   /* char * */
  GPtrArray *messages; /* char * */
} Warned;

static void warned_init(Warned *w)
{
  w->slides = g_ptr_array_new_with_free_func(g_free);
  w->messages = g_ptr_array_new_with_free_func(g_free);
}

static void warned_clear(Warned *w)
{
  g_ptr_array_unref(w->slides);
  g_ptr_array_unref(w->messages);
}

static void collect_warning(const char *slide, const char *message, gpointer data)
{
  Warned *w = data;
  g_ptr_array_add(w->slides, g_strdup(slide));
  g_ptr_array_add(w->messages, g_strdup(message));
  g_test_message("warned: %s", message);
}

static MexdDataset *load_csv(const char *dir, const char *csv_text, gssize len,
                             const MexdDatasetOptions *o, GError **error)
{
  put(dir, "labels.csv", csv_text, len);
  g_autofree char *csv = g_build_filename(dir, "labels.csv", NULL);
  return mexd_dataset_load(dir, csv, o, error);
}

static MexdDatasetOptions quiet_options(void)
{
  MexdDatasetOptions o;
  mexd_dataset_options_init(&o);
  o.val_fraction = 0;
  return o;
}

/* Checks the error's domain, code and that its message holds each of the NULL-terminated
 * phrases; frees it. */
static void expect_error(GError **errorp, int code, const char *what, ...)
{
  GError *error = *errorp;
  *errorp = NULL;
  if (!error)
    g_error("%s: expected an error", what);
  if (error->domain != MEXD_ERROR || error->code != code)
    g_error("%s: expected code %d, got %s %d: %s", what, code, g_quark_to_string(error->domain),
            error->code, error->message);
  va_list ap;
  va_start(ap, what);
  for (const char *s; (s = va_arg(ap, const char *)) != NULL;)
    if (!strstr(error->message, s))
      g_error("%s: message \"%s\" lacks \"%s\"", what, error->message, s);
  va_end(ap);
  g_test_message("%s: %s", what, error->message);
  g_error_free(error);
}

static const MexdDatasetSlide *find_slide(const MexdDataset *ds, const char *id)
{
  for (int i = 0; i < ds->n_slides; i++)
    if (strcmp(ds->slides[i].slide_id, id) == 0)
      return &ds->slides[i];
  g_error("slide %s not in the data set", id);
}

/* The split lists are the slides of each split, ascending, and the counts add up. */
static void check_split_lists(const MexdDataset *ds)
{
  int total = 0;
  for (int s = 0; s < MEXD_N_SPLITS; s++) {
    int k = 0;
    for (int i = 0; i < ds->n_slides; i++)
      if ((int)ds->slides[i].split == s) {
        g_assert_cmpint(k, <, ds->n_split[s]);
        g_assert_cmpint(ds->split_slides[s][k], ==, i);
        k++;
      }
    g_assert_cmpint(k, ==, ds->n_split[s]);
    total += k;
    int by_class = 0;
    for (int c = 0; c < ds->n_classes; c++)
      by_class += mexd_dataset_count(ds, (MexdSplit)s, c);
    g_assert_cmpint(by_class, ==, ds->n_split[s]);
    g_assert_cmpint(mexd_dataset_count(ds, (MexdSplit)s, -1), ==, ds->n_split[s]);
  }
  g_assert_cmpint(total, ==, ds->n_slides);
  int64_t inst = 0;
  for (int i = 0; i < ds->n_slides; i++) {
    g_assert_cmpint(ds->slides[i].bag->d, ==, ds->d);
    inst += ds->slides[i].bag->n;
    g_assert_cmpint(ds->slides[i].label, >=, 0);
    g_assert_cmpint(ds->slides[i].label, <, ds->n_classes);
  }
  g_assert_cmpint(inst, ==, ds->total_instances);
  g_assert_cmpuint(ds->total_bytes, ==, (size_t)inst * (size_t)ds->d * 4);
  g_assert_null(ds->classes[ds->n_classes]);
}

/* ---- the spec's shuffle, written out independently ---- */

static int ref_rejections; /* draws rejected by ref_below, to see the path taken */

static uint32_t ref_below(uint64_t seed, uint32_t i, uint32_t w1, uint32_t tag, uint32_t s)
{
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t attempt = 0;
  for (;;) {
    const uint32_t ctr[4] = {i, w1, attempt++, tag};
    uint32_t x[4];
    mexd_philox4x32_10(ctr, key, x);
    uint64_t m = (uint64_t)x[0] * (uint64_t)s;
    uint32_t l = (uint32_t)m;
    if (l >= s)
      return (uint32_t)(m >> 32);
    uint32_t t = (uint32_t)(((uint64_t)1 << 32) % s);
    if (l >= t)
      return (uint32_t)(m >> 32);
    ref_rejections++;
  }
}

static void ref_perm(uint64_t seed, uint32_t w1, uint32_t tag, uint32_t n, uint32_t *p)
{
  for (uint32_t i = 0; i < n; i++)
    p[i] = i;
  for (int64_t i = (int64_t)n - 1; i >= 1; i--) {
    uint32_t j = ref_below(seed, (uint32_t)i, w1, tag, (uint32_t)i + 1);
    uint32_t t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
}

#define TAG(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))

/* ---- tests ---- */

static void test_layouts(void)
{
  g_autofree char *dir = new_dir("layouts");
  if (have_h5) {
    put_h5(dir, "a.h5", 3, D, 10);
    put_h5(dir, "h5_files/d.h5", 1, D, 40);
    put_h5(dir, "h5_files/unused.h5", 1, D, 0); /* unused */
  } else {
    put_npy(dir, "a.npy", 3, D, 10);
    put_npy(dir, "d.npy", 1, D, 40);
    put_npy(dir, "h5_files/unused.npy", 1, D, 0); /* unused */
  }
  put_csv_bag(dir, "b.csv", 2, D, 20);
  put_npy(dir, "c.npy", 5, D, 30);
  put_npy(dir, "x.npy", 1, D, 0);              /* unused */
  put_csv_bag(dir, "y.csv", 1, D, 0);          /* unused */
  put_csv_bag(dir, "h5_files/b.csv", 1, D, 0); /* unused: h5_files/ holds only S.h5 */
  put(dir, "notes.txt", "x", 1);               /* not a feature file */
  g_autofree char *subdir = g_build_filename(dir, "sub.npy", NULL);
  g_assert_cmpint(g_mkdir(subdir, 0755), ==, 0);
  MexdDatasetOptions o = quiet_options();
  GError *error = NULL;
  g_autoptr(MexdDataset) ds = load_csv(dir, "slide_id,label\na,x\nb,y\nc,x\nd,y\n", -1, &o, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_slides, ==, 4);
  g_assert_cmpint(ds->d, ==, D);
  g_assert_cmpint(ds->n_classes, ==, 2);
  g_assert_cmpstr(ds->classes[0], ==, "x");
  g_assert_cmpstr(ds->classes[1], ==, "y");
  g_assert_cmpint(ds->n_unused_files, ==, 4);
  g_assert_cmpint(ds->n_skipped, ==, 0);
  g_assert_false(ds->val_carved);
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_TRAIN], ==, 4);
  const char *ids[] = {"a", "b", "c", "d"};
  const char *files[] = {have_h5 ? "/a.h5" : "/a.npy", "/b.csv", "/c.npy",
                         have_h5 ? "/h5_files/d.h5" : "/d.npy"};
  int64_t ns[] = {3, 2, 5, 1};
  for (int i = 0; i < 4; i++) {
    const MexdDatasetSlide *s = &ds->slides[i];
    g_assert_cmpstr(s->slide_id, ==, ids[i]);
    g_assert_true(g_str_has_suffix(s->path, files[i]));
    g_assert_cmpint(s->line, ==, i + 2);
    g_assert_cmpint(s->label, ==, i % 2);
    check_bag(s->bag, ns[i], D, 10.0f * (float)(i + 1));
  }
  g_assert_cmpint(ds->total_instances, ==, 11);
  g_assert_cmpuint(ds->total_bytes, ==, 11 * D * 4);
  check_split_lists(ds);
  if (have_h5)
    g_test_message("h5, h5_files/, csv and npy layouts read");
  else
    g_test_message("built without HDF5: the h5 layouts are not checked");
}

static void test_csv(void)
{
  g_autofree char *dir = new_dir("csv");
  const char *ids[] = {"s1", "s2", "s3", "s\"q", "s7", "s5"};
  for (size_t i = 0; i < G_N_ELEMENTS(ids); i++) {
    g_autofree char *name = g_strconcat(ids[i], ".npy", NULL);
    put_npy(dir, name, 2, D, (float)i);
  }
  static const char text[] = "\xef\xbb\xbf"
                             "Case_ID, SLIDE_ID ,Extra,\"Label\",Split\r\n"   /* 1 */
                             "\r\n"                                           /* 2 */
                             "p1, s1 ,\"a, b\", tumor ,Training\r\n"          /* 3 */
                             "  \r\n"                                         /* 4 */
                             "p2,\"s2\",x,normal,VALID\r\n"                   /* 5 */
                             ",,,,\r\n"                                       /* 6 */
                             "p3,s3,\"multi\nline\",normal,validation\r\n"    /* 7, 8 */
                             "p4,\"s\"\"q\",,tumor,Testing,extra1,extra2\r\n" /* 9 */
                             "p7,s7,\"\",\"normal\", val \n"                  /* 10 */
                             "p5,s5,y,normal,TEST";                           /* 11 */
  MexdDatasetOptions o = quiet_options();
  o.val_fraction = 0.5; /* val exists: nothing is carved */
  GError *error = NULL;
  g_autoptr(MexdDataset) ds = load_csv(dir, text, sizeof text - 1, &o, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_slides, ==, 6);
  g_assert_cmpint(ds->n_classes, ==, 2);
  g_assert_cmpstr(ds->classes[0], ==, "normal");
  g_assert_cmpstr(ds->classes[1], ==, "tumor");
  const int lines[] = {3, 5, 7, 9, 10, 11};
  const MexdSplit splits[] = {MEXD_SPLIT_TRAIN, MEXD_SPLIT_VAL, MEXD_SPLIT_VAL,
                              MEXD_SPLIT_TEST,  MEXD_SPLIT_VAL, MEXD_SPLIT_TEST};
  const int labels[] = {1, 0, 0, 1, 0, 0};
  for (int i = 0; i < 6; i++) {
    const MexdDatasetSlide *s = &ds->slides[i];
    g_assert_cmpstr(s->slide_id, ==, ids[i]);
    g_assert_cmpint(s->line, ==, lines[i]);
    g_assert_cmpint(s->split, ==, splits[i]);
    g_assert_cmpint(s->label, ==, labels[i]);
  }
  g_assert_false(ds->val_carved);
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_TRAIN], ==, 1);
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_VAL], ==, 3);
  g_assert_cmpint(ds->n_split[MEXD_SPLIT_TEST], ==, 2);
  check_split_lists(ds);
  /* the labels CSV itself is not an unused feature file */
  g_assert_cmpint(ds->n_unused_files, ==, 0);

  /* no split column: every slide trains */
  g_autoptr(MexdDataset) ds2 = load_csv(dir, "label,slide_id\nA,s1\nB,s2\n", -1, &o, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds2->n_split[MEXD_SPLIT_TRAIN], ==, 2);
  g_assert_cmpstr(ds2->slides[1].slide_id, ==, "s2");
  /* one slide per class: nothing to carve */
  g_assert_cmpint(ds2->n_split[MEXD_SPLIT_VAL], ==, 0);
  g_assert_false(ds2->val_carved);
}

static void test_csv_errors(void)
{
  g_autofree char *dir = new_dir("csv-errors");
  put_npy(dir, "s1.npy", 2, D, 0);
  MexdDatasetOptions o = quiet_options();
  o.skip_bad = TRUE; /* these are errors all the same */
  Warned w;
  warned_init(&w);
  o.warn = collect_warning;
  o.warn_data = &w;
  GError *error = NULL;
  g_autofree char *missing = g_build_filename(dir, "no-such.csv", NULL);
  g_assert_null(mexd_dataset_load(dir, missing, &o, &error));
  expect_error(&error, MEXD_ERROR_IO, "no labels CSV", "no-such.csv", NULL);
  error = NULL;
  g_assert_null(mexd_dataset_load(dir, dir, &o, &error));
  expect_error(&error, MEXD_ERROR_IO, "a directory as CSV", NULL);

  static const struct {
    const char *text;
    gssize len;
    const char *phrase;
  } cases[] = {
      {"", 0, "no header"},
      {"\xef\xbb\xbf\r\n \n\n", -1, "no header"},
      {"id,label\ns1,x\n", -1, "'slide_id'"},
      {"slide_id,class\ns1,x\n", -1, "'label'"},
      {"slide_id,label,split\ns1,x,train\ns1\n", -1, "line 3"},
      {"slide_id,label\ns1,x\ns2,\"x\n", -1, "labels.csv:3: a quoted field is not closed"},
      {"slide_id,label\ns1,\"x\"y\n", -1, "labels.csv:2: text after"},
      {"slide_id,label,LABEL\ns1,x,x\n", -1, "two columns"},
      {"slide_id,label\ns1,x\0\n", 21, "NUL"},
      {"slide_id,label\n", -1, "no training slide"},
      {"slide_id,label,split\ns1,x,test\n", -1, "no training slide"},
      {"slide_id,label\ns1,Tumor\ns2,tumor\n", -1, "'Tumor' (line 2) and 'tumor' (line 3)"},
      {"slide_id,label\ns1,1\ns2,01\n", -1, "leading zeros"},
  };
  for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
    MexdDataset *ds = load_csv(dir, cases[k].text, cases[k].len, &o, &error);
    g_assert_null(ds);
    expect_error(&error, MEXD_ERROR_FORMAT, cases[k].text, cases[k].phrase, "labels.csv", NULL);
    error = NULL;
  }
  g_assert_cmpuint(w.slides->len, ==, 0);
  warned_clear(&w);
}

static void test_classes(void)
{
  g_autofree char *dir = new_dir("classes");
  for (int i = 0; i < 6; i++) {
    g_autofree char *name = g_strdup_printf("s%d.npy", i);
    put_npy(dir, name, 1, D, (float)i);
  }
  MexdDatasetOptions o = quiet_options();
  GError *error = NULL;
  {
    /* numeric: "2" before "10" */
    g_autoptr(MexdDataset) ds =
        load_csv(dir, "slide_id,label\ns0,10\ns1,2\ns2,0\ns3,2\ns4,007\n", -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_classes, ==, 4);
    const char *want[] = {"0", "2", "007", "10"};
    for (int c = 0; c < 4; c++)
      g_assert_cmpstr(ds->classes[c], ==, want[c]);
    const int labels[] = {3, 1, 0, 1, 2};
    for (int i = 0; i < 5; i++)
      g_assert_cmpint(ds->slides[i].label, ==, labels[i]);
  }
  {
    /* bytes: "B_x" < "a" < "b", and "10" < "9" when one label is not a number */
    g_autoptr(MexdDataset) ds =
        load_csv(dir, "slide_id,label\ns0,b\ns1,a\ns2,B_x\ns3,10\ns4,9\n", -1, &o, &error);
    g_assert_no_error(error);
    const char *want[] = {"10", "9", "B_x", "a", "b"};
    g_assert_cmpint(ds->n_classes, ==, 5);
    for (int c = 0; c < 5; c++)
      g_assert_cmpstr(ds->classes[c], ==, want[c]);
    g_assert_cmpint(ds->slides[0].label, ==, 4);
    g_assert_cmpint(ds->slides[2].label, ==, 2);
    /* the order does not depend on the rows' order */
    g_autoptr(MexdDataset) ds2 =
        load_csv(dir, "slide_id,label\ns4,9\ns2,B_x\ns3,10\ns0,b\ns1,a\n", -1, &o, &error);
    g_assert_no_error(error);
    for (int c = 0; c < 5; c++)
      g_assert_cmpstr(ds2->classes[c], ==, want[c]);
  }
  {
    /* given names, matched without regard to case, in the given order */
    const char *const names[] = {"tumor", "normal", "other", NULL};
    MexdDatasetOptions g = o;
    g.class_names = names;
    g_autoptr(MexdDataset) ds =
        load_csv(dir, "slide_id,label\ns0,NORMAL\ns1,Tumor\ns2,tumor\n", -1, &g, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_classes, ==, 3);
    g_assert_cmpstr(ds->classes[2], ==, "other");
    g_assert_cmpint(ds->slides[0].label, ==, 1);
    g_assert_cmpint(ds->slides[1].label, ==, 0);
    g_assert_cmpint(ds->slides[2].label, ==, 0);
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, 2), ==, 0);
  }
  {
    /* a preset's names and aliases */
    MexdDatasetOptions p = o;
    p.preset = "TCGA-NSCLC";
    g_autoptr(MexdDataset) ds = load_csv(dir,
                                         "slide_id,label,split\ns0,TCGA-LUAD,train\ns1,lusc,"
                                         "train\ns2,squamous,test\ns3,adenocarcinoma,val\n"
                                         "s4,LUAD,train\n",
                                         -1, &p, &error);
    g_assert_no_error(error);
    g_assert_nonnull(ds->preset);
    g_assert_cmpstr(ds->preset->name, ==, "tcga-nsclc");
    g_assert_cmpint(ds->n_classes, ==, 2);
    g_assert_cmpstr(ds->classes[0], ==, "LUAD");
    g_assert_cmpstr(ds->classes[1], ==, "LUSC");
    const int labels[] = {0, 1, 1, 0, 0};
    for (int i = 0; i < 5; i++)
      g_assert_cmpint(ds->slides[i].label, ==, labels[i]);
    g_assert_cmpint(ds->slides[2].split, ==, MEXD_SPLIT_TEST);
    g_assert_cmpint(ds->slides[3].split, ==, MEXD_SPLIT_VAL);
    /* BRACS's subtypes and group codes */
    MexdSplit split;
    int klass;
    const MexdPreset *bracs = mexd_preset_lookup("bracs", &error);
    g_assert_no_error(error);
    g_assert_cmpint(mexd_preset_class_of_label(bracs, "pb"), ==, 0);
    g_assert_cmpint(mexd_preset_class_of_label(bracs, "Group_AT"), ==, 1);
    g_assert_cmpint(mexd_preset_class_of_label(bracs, "IC"), ==, 2);
    g_assert_true(mexd_preset_official_split(bracs, "BRACS_264", &split, &klass, &error));
    g_assert_cmpint(split, ==, MEXD_SPLIT_TEST);
    g_assert_cmpint(klass, ==, 0);
  }
  /* option errors */
  {
    const char *const names[] = {"a", NULL};
    const char *const dup[] = {"a", "A", NULL};
    const char *const none[] = {NULL};
    MexdDatasetOptions bad = o;
    bad.preset = "bracs";
    bad.class_names = names;
    g_assert_null(load_csv(dir, "slide_id,label\ns0,a\n", -1, &bad, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "preset and names", "not both", NULL);
    error = NULL;
    bad.preset = NULL;
    bad.class_names = dup;
    g_assert_null(load_csv(dir, "slide_id,label\ns0,a\n", -1, &bad, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "duplicate names", "'a' and 'A'", NULL);
    error = NULL;
    bad.class_names = none;
    g_assert_null(load_csv(dir, "slide_id,label\ns0,a\n", -1, &bad, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "no names", "empty", NULL);
    error = NULL;
    bad.class_names = NULL;
    bad.preset = "camelyon17";
    g_assert_null(load_csv(dir, "slide_id,label\ns0,a\n", -1, &bad, &error));
    expect_error(&error, MEXD_ERROR_NOT_FOUND, "unknown preset", "camelyon17", NULL);
  }
}

/* The expected carving by the spec: per class, its training slides in CSV order, permuted with
 * counter (i, c, attempt, "mval"), the first k_c to val. */
static void check_carving(const MexdDataset *ds, double fraction, const int *label_of_row,
                          int n_rows)
{
  uint32_t perm[64];
  int members[64];
  for (int c = 0; c < ds->n_classes; c++) {
    int n_c = 0;
    for (int i = 0; i < n_rows; i++)
      if (label_of_row[i] == c)
        members[n_c++] = i;
    int k = 0;
    if (n_c >= 2) {
      k = (int)floor(fraction * n_c + 0.5);
      k = CLAMP(k, 1, n_c - 1);
      ref_perm(ds->seed, (uint32_t)c, TAG('m', 'v', 'a', 'l'), (uint32_t)n_c, perm);
    }
    for (int t = 0; t < n_c; t++) {
      int row = members[n_c >= 2 ? (int)perm[t] : t];
      MexdSplit want = t < k ? MEXD_SPLIT_VAL : MEXD_SPLIT_TRAIN;
      g_assert_cmpint(ds->slides[row].split, ==, want);
    }
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_VAL, c), ==, k);
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, c), ==, n_c - k);
    if (n_c > 0)
      g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, c), >=, 1);
  }
}

static void test_val(void)
{
  g_autofree char *dir = new_dir("val");
  /* classes A 10, B 5, C 2, D 1 slides, interleaved */
  const char cls[] = "ABACABADABACABAAAB";
  int n = (int)strlen(cls);
  int label_of_row[64];
  GString *csv = g_string_new("slide_id,label\n");
  for (int i = 0; i < n; i++) {
    g_autofree char *name = g_strdup_printf("v%02d.npy", i);
    put_npy(dir, name, 1 + i % 3, D, (float)i);
    g_string_append_printf(csv, "v%02d,%c\n", i, cls[i]);
    label_of_row[i] = cls[i] - 'A';
  }
  MexdDatasetOptions o;
  mexd_dataset_options_init(&o);
  g_assert_cmpfloat(o.val_fraction, ==, 0.2);
  GError *error = NULL;
  g_autoptr(MexdDataset) ds = load_csv(dir, csv->str, -1, &o, &error);
  g_assert_no_error(error);
  g_assert_true(ds->val_carved);
  g_assert_cmpint(ds->n_classes, ==, 4);
  /* A (10 slides): round(2.0) = 2; B (5): round(1.0) = 1; checked by check_carving */
  check_carving(ds, 0.2, label_of_row, n);
  check_split_lists(ds);
  g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_VAL, 2), ==, 1); /* C: 2 slides, at least 1 */
  g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_VAL, 3), ==, 0); /* D: 1 slide, none */

  /* same seed, same split; other seeds give other splits */
  g_autoptr(MexdDataset) again = load_csv(dir, csv->str, -1, &o, &error);
  g_assert_no_error(error);
  for (int i = 0; i < n; i++)
    g_assert_cmpint(again->slides[i].split, ==, ds->slides[i].split);
  int differing = 0;
  for (uint64_t seed = 1; seed <= 6; seed++) {
    MexdDatasetOptions s = o;
    s.seed = seed | (seed << 40);
    g_autoptr(MexdDataset) other = load_csv(dir, csv->str, -1, &s, &error);
    g_assert_no_error(error);
    check_carving(other, 0.2, label_of_row, n);
    gboolean same = TRUE;
    for (int i = 0; i < n; i++)
      same = same && other->slides[i].split == ds->slides[i].split;
    differing += !same;
  }
  g_assert_cmpint(differing, >=, 5);

  /* rounding half away from zero and the n_c - 1 cap */
  MexdDatasetOptions half = o;
  half.val_fraction = 0.5;
  g_autoptr(MexdDataset) h = load_csv(dir, csv->str, -1, &half, &error);
  g_assert_no_error(error);
  check_carving(h, 0.5, label_of_row, n);
  g_assert_cmpint(mexd_dataset_count(h, MEXD_SPLIT_VAL, 1), ==,
                  3); /* B: 5 slides, round(2.5) = 3 */
  half.val_fraction = 1.0;
  g_autoptr(MexdDataset) all = load_csv(dir, csv->str, -1, &half, &error);
  g_assert_no_error(error);
  check_carving(all, 1.0, label_of_row, n);
  for (int c = 0; c < 4; c++)
    g_assert_cmpint(mexd_dataset_count(all, MEXD_SPLIT_TRAIN, c), ==, 1);

  /* no carving with val_fraction 0, or when the CSV has a val */
  MexdDatasetOptions none = o;
  none.val_fraction = 0;
  g_autoptr(MexdDataset) z = load_csv(dir, csv->str, -1, &none, &error);
  g_assert_no_error(error);
  g_assert_false(z->val_carved);
  g_assert_cmpint(z->n_split[MEXD_SPLIT_VAL], ==, 0);
  g_autoptr(MexdDataset) given =
      load_csv(dir, "slide_id,label,split\nv00,A,train\nv01,B,val\nv02,A,train\nv03,C,train\n", -1,
               &o, &error);
  g_assert_no_error(error);
  g_assert_false(given->val_carved);
  g_assert_cmpint(given->n_split[MEXD_SPLIT_VAL], ==, 1);
  g_assert_cmpint(given->n_split[MEXD_SPLIT_TRAIN], ==, 3);
  g_string_free(csv, TRUE);
}

static gboolean is_permutation(const uint32_t *p, uint32_t n)
{
  g_autofree gboolean *seen = g_new0(gboolean, MAX(n, 1));
  for (uint32_t i = 0; i < n; i++) {
    if (p[i] >= n || seen[p[i]])
      return FALSE;
    seen[p[i]] = TRUE;
  }
  return TRUE;
}

static void test_permutation(void)
{
  const uint32_t sizes[] = {0, 1, 2, 3, 7, 64, 1000, 100003};
  const uint64_t seeds[] = {0, 1, 0x123456789abcdefull, G_MAXUINT64};
  for (size_t a = 0; a < G_N_ELEMENTS(sizes); a++)
    for (size_t b = 0; b < G_N_ELEMENTS(seeds); b++)
      for (uint32_t e = 0; e < 3; e++) {
        uint32_t n = sizes[a];
        g_autofree uint32_t *p = g_new(uint32_t, MAX(n, 1));
        g_autofree uint32_t *q = g_new(uint32_t, MAX(n, 1));
        mexd_shuffle_permutation(seeds[b], e, n, p);
        g_assert_true(is_permutation(p, n));
        ref_perm(seeds[b], e, TAG('s', 'h', 'u', 'f'), n, q);
        g_assert_cmpmem(p, n * 4, q, n * 4);
      }
  /* the rejection of Lemire's method was taken (and agreed): about n²/2^33 per shuffle */
  g_test_message("%d draws rejected", ref_rejections);
  g_assert_cmpint(ref_rejections, >, 0);
  /* (seed, epoch) alone: the same after other calls; epochs differ; seeds differ, also in their
   * high 32 bits */
  uint32_t first[64], p[64];
  mexd_shuffle_permutation(7, 3, 64, first);
  mexd_shuffle_permutation(8, 3, 64, p);
  g_assert_true(memcmp(first, p, sizeof p) != 0);
  mexd_shuffle_permutation(7 | (1ull << 32), 3, 64, p);
  g_assert_true(memcmp(first, p, sizeof p) != 0);
  mexd_shuffle_permutation(7, 3, 64, p);
  g_assert_cmpmem(first, sizeof first, p, sizeof p);
  uint32_t epochs[10][64];
  for (int e = 0; e < 10; e++) {
    mexd_shuffle_permutation(7, (uint32_t)e, 64, epochs[e]);
    for (int f = 0; f < e; f++)
      g_assert_true(memcmp(epochs[e], epochs[f], sizeof epochs[e]) != 0);
  }

  /* uniformity: all 24 orders of 4 items over 24,000 epochs, chi-square with 23 degrees of
   * freedom (mean 23, sd 6.8); and item-by-position over 20,000 epochs of 5 items (16 dof) */
  int counts[24] = {0};
  const int trials = 24000;
  for (int e = 0; e < trials; e++) {
    uint32_t q[4];
    mexd_shuffle_permutation(42, (uint32_t)e, 4, q);
    /* the Lehmer code of q */
    int code = 0;
    for (int i = 0; i < 4; i++) {
      int smaller = 0;
      for (int j = i + 1; j < 4; j++)
        smaller += q[j] < q[i];
      code = code * (4 - i) + smaller;
    }
    counts[code]++;
  }
  double chi2 = 0;
  for (int k = 0; k < 24; k++)
    chi2 += (counts[k] - 1000.0) * (counts[k] - 1000.0) / 1000.0;
  g_test_message("chi-square of the 24 orders of 4: %.2f (23 dof)", chi2);
  g_assert_cmpfloat(chi2, <, 70.0);
  int pos[5][5] = {{0}};
  for (int e = 0; e < 20000; e++) {
    uint32_t q[5];
    mexd_shuffle_permutation(G_MAXUINT64 - 5, (uint32_t)e, 5, q);
    for (int i = 0; i < 5; i++)
      pos[i][q[i]]++;
  }
  chi2 = 0;
  for (int i = 0; i < 5; i++)
    for (int v = 0; v < 5; v++)
      chi2 += (pos[i][v] - 4000.0) * (pos[i][v] - 4000.0) / 4000.0;
  g_test_message("chi-square of item by position, 5 items: %.2f (16 dof)", chi2);
  g_assert_cmpfloat(chi2, <, 55.0);

  /* the data set's epoch order: its training slides permuted */
  g_autofree char *dir = new_dir("epochs");
  GString *csv = g_string_new("slide_id,label,split\n");
  for (int i = 0; i < 12; i++) {
    g_autofree char *name = g_strdup_printf("e%d.npy", i);
    put_npy(dir, name, 1, D, (float)i);
    g_string_append_printf(csv, "e%d,%s,%s\n", i, i % 2 ? "x" : "y", i % 4 == 3 ? "test" : "train");
  }
  MexdDatasetOptions o = quiet_options();
  o.seed = 99;
  GError *error = NULL;
  g_autoptr(MexdDataset) ds = load_csv(dir, csv->str, -1, &o, &error);
  g_assert_no_error(error);
  g_string_free(csv, TRUE);
  int n_train = ds->n_split[MEXD_SPLIT_TRAIN];
  g_assert_cmpint(n_train, ==, 9);
  for (uint32_t e = 0; e < 4; e++) {
    g_autofree int *order = mexd_dataset_epoch_order(ds, e);
    uint32_t q[9];
    mexd_shuffle_permutation(99, e, 9, q);
    for (int k = 0; k < n_train; k++) {
      g_assert_cmpint(order[k], ==, ds->split_slides[MEXD_SPLIT_TRAIN][q[k]]);
      g_assert_cmpint(ds->slides[order[k]].split, ==, MEXD_SPLIT_TRAIN);
    }
  }
  g_assert_null(mexd_dataset_epoch_order(NULL, 0));
}

/* One bad-data case: without skip_bad the load fails with `code` and a message holding the
 * phrases; with skip_bad it loads `n_slides` slides, skipping `n_skipped` rows with as many
 * warnings, each naming the skipped slide (`warned_id`, or any when NULL), one of them the strict
 * load's message unless `other_row` (the strict load fails on another row than the one skipped). */
static void bad_case(const char *what, const char *dir, const char *csv, MexdDatasetOptions o,
                     int code, int n_slides, int n_skipped, gboolean other_row,
                     const char *warned_id, ...)
{
  GError *error = NULL;
  o.skip_bad = FALSE;
  g_assert_null(load_csv(dir, csv, -1, &o, &error));
  g_assert_nonnull(error);
  if (error->code != code)
    g_error("%s: expected code %d, got %d: %s", what, code, error->code, error->message);
  va_list ap;
  va_start(ap, warned_id);
  for (const char *s; (s = va_arg(ap, const char *)) != NULL;)
    if (!strstr(error->message, s))
      g_error("%s: message \"%s\" lacks \"%s\"", what, error->message, s);
  va_end(ap);
  g_assert_true(strstr(error->message, "labels.csv line "));
  g_test_message("%s: %s", what, error->message);
  g_autofree char *first_message = g_strdup(error->message);
  g_clear_error(&error);

  Warned w;
  warned_init(&w);
  o.skip_bad = TRUE;
  o.warn = collect_warning;
  o.warn_data = &w;
  MexdDataset *ds = load_csv(dir, csv, -1, &o, &error);
  if (!ds)
    g_error("%s with skip_bad: %s", what, error->message);
  g_assert_cmpint(ds->n_slides, ==, n_slides);
  g_assert_cmpint(ds->n_skipped, ==, n_skipped);
  g_assert_cmpuint(w.slides->len, ==, (guint)n_skipped);
  gboolean first_seen = FALSE;
  for (guint k = 0; k < w.slides->len; k++) {
    const char *id = g_ptr_array_index(w.slides, k);
    const char *msg = g_ptr_array_index(w.messages, k);
    if (warned_id)
      g_assert_cmpstr(id, ==, warned_id);
    g_autofree char *quoted = g_strdup_printf("slide '%s'", id);
    g_assert_nonnull(strstr(msg, quoted));
    first_seen = first_seen || strcmp(msg, first_message) == 0;
  }
  /* the warning of the row that failed the strict load is the same message */
  g_assert_true(first_seen || other_row);
  check_split_lists(ds);
  mexd_dataset_free(ds);
  warned_clear(&w);
}

static void test_bad(void)
{
  g_autofree char *dir = new_dir("bad");
  put_npy(dir, "g1.npy", 3, D, 1);
  put_npy(dir, "g2.npy", 2, D, 2);
  MexdDatasetOptions o = quiet_options();
  const char *good = "slide_id,label\ng1,x\ng2,x\n";
#define CSV(rows) g_strconcat(good, rows, NULL)
  g_autofree char *c_missing = CSV("m1,x\n");
  bad_case("missing file", dir, c_missing, o, MEXD_ERROR_NOT_FOUND, 2, 1, FALSE, "m1", "'m1'",
           "line 4", "m1.h5", "m1.csv", "m1.npy", "h5_files/m1.h5", NULL);

  put_npy(dir, "t1.npy", 1, D, 0);
  put_csv_bag(dir, "t1.csv", 1, D, 0);
  g_autofree char *c_two = CSV("t1,x\n");
  bad_case("two files", dir, c_two, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "t1", "'t1'", "line 4",
           "t1.npy", "t1.csv", NULL);

  g_autofree char *udir = g_build_filename(dir, "u1.npy", NULL);
  g_assert_cmpint(g_mkdir(udir, 0755), ==, 0);
  g_autofree char *c_unreadable = CSV("u1,x\n");
  bad_case("unreadable", dir, c_unreadable, o, MEXD_ERROR_IO, 2, 1, FALSE, "u1", "'u1'", "line 4",
           "u1.npy", "directory", NULL);

  put(dir, "c1.npy", "\x93NUMPY\x01\x00\x10\x00{'descr': '<f4',", 26);
  g_autofree char *c_corrupt = CSV("c1,x\n");
  bad_case("corrupt npy", dir, c_corrupt, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "c1", "'c1'", "line 4",
           "c1.npy", NULL);

  put(dir, "h1.h5", "\x89HDF\r\n\x1a\n and then nothing an HDF5 library can read", -1);
  g_autofree char *c_h5 = CSV("h1,x\n");
  bad_case("corrupt h5", dir, c_h5, o, have_h5 ? MEXD_ERROR_FORMAT : MEXD_ERROR_UNSUPPORTED, 2, 1,
           FALSE, "h1", "'h1'", "line 4", "h1.h5", NULL);

  put(dir, "k1.csv", "not,numbers\n1,x\n", -1);
  g_autofree char *c_csvbag = CSV("k1,x\n");
  bad_case("bad csv bag", dir, c_csvbag, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "k1", "'k1'", "k1.csv",
           "line 2", NULL);

  put_npy(dir, "e1.npy", 0, D, 0);
  g_autofree char *c_empty = CSV("e1,x\n");
  bad_case("empty npy bag", dir, c_empty, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "e1", "'e1'", "line 4",
           "e1.npy", NULL);
  put(dir, "e2.csv", "f0,f1,f2,f3\n", -1);
  g_autofree char *c_empty2 = CSV("e2,x\n");
  bad_case("empty csv bag", dir, c_empty2, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "e2", "'e2'",
           "e2.csv", NULL);

  put_npy_special(dir, "n1.npy", 2, D, 0, 5, NAN);
  g_autofree char *c_nan = CSV("n1,x\n");
  bad_case("NaN", dir, c_nan, o, MEXD_ERROR_INVALID_ARGUMENT, 2, 1, FALSE, "n1", "'n1'", "line 4",
           "n1.npy", "instance 1, feature 1 is NaN", NULL);
  put(dir, "i1.csv", "1,2,3,4\n1,-inf,3,4\n", -1);
  g_autofree char *c_inf = CSV("i1,x\n");
  bad_case("-Inf", dir, c_inf, o, MEXD_ERROR_INVALID_ARGUMENT, 2, 1, FALSE, "i1", "'i1'", "i1.csv",
           "-Inf", NULL);

  put_npy(dir, "d1.npy", 2, D + 1, 0);
  g_autofree char *c_dim = CSV("d1,x\n");
  bad_case("D mismatch", dir, c_dim, o, MEXD_ERROR_SHAPE, 2, 1, TRUE, "d1", "'d1'", "line 4",
           "d1.npy", "D = 5", "'g1' (line 2) has 4", NULL);
  MexdDatasetOptions want5 = o;
  want5.expected_dim = D + 1;
  bad_case("expected_dim", dir, c_dim, want5, MEXD_ERROR_SHAPE, 1, 2, TRUE, NULL, "'g1'", "line 2",
           "g1.npy", "expected 5", NULL);

  const char *const names[] = {"x", NULL};
  MexdDatasetOptions named = o;
  named.class_names = names;
  g_autofree char *c_label = CSV("g3,zz\n");
  put_npy(dir, "g3.npy", 1, D, 3);
  bad_case("unknown label", dir, c_label, named, MEXD_ERROR_FORMAT, 2, 1, FALSE, "g3", "'g3'",
           "line 4", "'zz'", NULL);
  g_autofree char *c_nolabel = CSV("g3,\n");
  bad_case("empty label", dir, c_nolabel, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, "g3", "'g3'", "line 4",
           "empty", NULL);

  bad_case("bad split", dir, "slide_id,label,split\ng1,x,train\ng2,x,train\ng3,x,holdout\n", o,
           MEXD_ERROR_FORMAT, 2, 1, FALSE, "g3", "'g3'", "line 4", "'holdout'", NULL);
  bad_case("empty split", dir, "slide_id,label,split\ng1,x,train\ng2,x,train\ng3,x, \n", o,
           MEXD_ERROR_FORMAT, 2, 1, FALSE, "g3", "'g3'", "line 4", "split is empty", NULL);

  const char *bad_ids[] = {"a/b", "a\\b", ".", "..", "\"\""};
  const char *shown_ids[] = {"a/b", "a\\b", ".", "..", ""};
  for (size_t k = 0; k < G_N_ELEMENTS(bad_ids); k++) {
    g_autofree char *rows = g_strdup_printf("%s,x\n", bad_ids[k]);
    g_autofree char *c_id = CSV(rows);
    g_autofree char *quoted = g_strdup_printf("slide '%s'", shown_ids[k]);
    bad_case("bad slide id", dir, c_id, o, MEXD_ERROR_FORMAT, 2, 1, FALSE, shown_ids[k], quoted,
             "line 4", "slide id", NULL);
  }

  /* duplicates: the same row (with a split synonym) keeps its first; different ones lose all */
  bad_case("duplicate, same", dir, "slide_id,label,split\ng1,x,val\ng2,x,train\ng1,x,validation\n",
           o, MEXD_ERROR_FORMAT, 2, 1, TRUE, "g1", "'g1'", "lines 2, 4", NULL);
  bad_case("duplicate, different", dir, "slide_id,label\ng1,x\ng2,x\ng1,y\n", o, MEXD_ERROR_FORMAT,
           1, 2, FALSE, "g1", "'g1'", "line 2", "lines 2, 4", "different", NULL);

  /* a preset's official split */
  put_npy(dir, "normal_001.npy", 2, D, 0);
  put_npy(dir, "tumor_002.npy", 2, D, 0);
  put_npy(dir, "normal_086.npy", 2, D, 0);
  put_npy(dir, "test_001.npy", 2, D, 0);
  put_npy(dir, "foo.npy", 2, D, 0);
  MexdDatasetOptions c16 = o;
  c16.preset = "camelyon16";
  const char *c16_good = "slide_id,label,split\nnormal_001,normal,train\ntumor_002,tumor,train\n";
  g_autofree char *c_086 = g_strconcat(c16_good, "normal_086,normal,train\n", NULL);
  bad_case("camelyon16 removed slide", dir, c_086, c16, MEXD_ERROR_FORMAT, 2, 1, FALSE,
           "normal_086", "'normal_086'", "line 4", "camelyon16", "tumor_111", NULL);
  g_autofree char *c_foo = g_strconcat(c16_good, "foo,normal,train\n", NULL);
  bad_case("camelyon16 stranger", dir, c_foo, c16, MEXD_ERROR_FORMAT, 2, 1, FALSE, "foo", "'foo'",
           "line 4", "not a CAMELYON16 slide", NULL);
  bad_case("camelyon16 label", dir,
           "slide_id,label,split\nnormal_001,normal,train\ntest_001,tumor,test\n"
           "tumor_002,Negative,train\n",
           c16, MEXD_ERROR_FORMAT, 2, 1, FALSE, "tumor_002", "'tumor_002'", "line 4", "contradicts",
           "official class tumor", NULL);
  bad_case("camelyon16 split", dir,
           "slide_id,label,split\nnormal_001,normal,train\ntumor_002,tumor,train\n"
           "test_001,tumor,train\n",
           c16, MEXD_ERROR_FORMAT, 2, 1, FALSE, "test_001", "'test_001'", "line 4",
           "official split (test)", NULL);
  put_npy(dir, "BRACS_745.npy", 2, D, 0);
  put_npy(dir, "BRACS_264.npy", 2, D, 0);
  put_npy(dir, "BRACS_280.npy", 2, D, 0);
  MexdDatasetOptions bracs = o;
  bracs.preset = "bracs";
  bad_case("bracs split", dir,
           "slide_id,label,split\nBRACS_745,N,train\nBRACS_280,IC,train\nBRACS_264,BT,val\n", bracs,
           MEXD_ERROR_FORMAT, 2, 1, FALSE, "BRACS_264", "'BRACS_264'", "line 4",
           "official split (test)", NULL);
  bad_case("bracs label", dir, "slide_id,label\nBRACS_264,BT\nBRACS_280,IC\nBRACS_745,DCIS\n",
           bracs, MEXD_ERROR_FORMAT, 2, 1, FALSE, "BRACS_745", "'BRACS_745'", "line 4", "'DCIS'",
           "official class benign", NULL);

  /* g_warning in the "mexd" domain without a callback */
  {
    MexdDatasetOptions dflt = o;
    dflt.skip_bad = TRUE;
    GError *error = NULL;
    g_test_expect_message("mexd", G_LOG_LEVEL_WARNING, "*line 4: slide 'm1'*skipped*");
    g_autoptr(MexdDataset) ds = load_csv(dir, c_missing, -1, &dflt, &error);
    g_test_assert_expected_messages();
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_skipped, ==, 1);
  }
  /* skipping everything leaves no training slide */
  {
    MexdDatasetOptions all = o;
    all.skip_bad = TRUE;
    Warned w;
    warned_init(&w);
    all.warn = collect_warning;
    all.warn_data = &w;
    GError *error = NULL;
    g_assert_null(load_csv(dir, "slide_id,label\nm1,x\nm2,x\n", -1, &all, &error));
    expect_error(&error, MEXD_ERROR_FORMAT, "all skipped", "no training slide", "2 skipped", NULL);
    g_assert_cmpuint(w.slides->len, ==, 2);
    warned_clear(&w);
  }
#undef CSV
}

static void test_skip_d(void)
{
  g_autofree char *dir = new_dir("skip-d");
  put_npy(dir, "p.npy", 1, 5, 0);
  put_npy(dir, "q.npy", 1, 4, 0);
  put_npy(dir, "r.npy", 1, 4, 0);
  put_npy(dir, "s.npy", 1, 5, 0);
  put_npy(dir, "t.npy", 1, 4, 0);
  MexdDatasetOptions o = quiet_options();
  o.skip_bad = TRUE;
  Warned w;
  warned_init(&w);
  o.warn = collect_warning;
  o.warn_data = &w;
  GError *error = NULL;
  {
    g_autoptr(MexdDataset) ds =
        load_csv(dir, "slide_id,label\np,a\nq,a\nr,a\ns,a\nt,a\n", -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->d, ==, 4);
    g_assert_cmpint(ds->n_slides, ==, 3);
    g_assert_cmpint(ds->n_skipped, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(w.slides, 0), ==, "p");
    g_assert_cmpstr(g_ptr_array_index(w.slides, 1), ==, "s");
    g_assert_nonnull(strstr(g_ptr_array_index(w.messages, 0), "p.npy"));
    g_assert_cmpuint(ds->total_bytes, ==, 3 * 4 * 4);
  }
  {
    /* a tie: the first slide's D */
    g_ptr_array_set_size(w.slides, 0);
    g_autoptr(MexdDataset) ds =
        load_csv(dir, "slide_id,label\np,a\nq,a\nr,a\ns,a\n", -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->d, ==, 5);
    g_assert_cmpint(ds->n_slides, ==, 2);
    g_assert_cmpstr(ds->slides[0].slide_id, ==, "p");
    g_assert_cmpstr(ds->slides[1].slide_id, ==, "s");
  }
  warned_clear(&w);
}

static void test_max_bytes(void)
{
  g_autofree char *dir = new_dir("max-bytes");
  put_npy(dir, "b1.npy", 10, D, 0);
  put_npy(dir, "b2.npy", 10, D, 0);
  put_npy(dir, "b3.npy", 10, D, 0);
  const char *csv = "slide_id,label\nb1,x\nb2,x\nb3,x\n";
  MexdDatasetOptions o = quiet_options();
  o.max_bytes = 3 * 10 * D * 4;
  GError *error = NULL;
  {
    g_autoptr(MexdDataset) ds = load_csv(dir, csv, -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(ds->total_bytes, ==, o.max_bytes);
  }
  o.max_bytes--;
  o.skip_bad = TRUE; /* over the budget is an error all the same */
  g_assert_null(load_csv(dir, csv, -1, &o, &error));
  expect_error(&error, MEXD_ERROR_NO_MEMORY, "over budget", "slide 'b3'", "line 4", "b3.npy",
               "max_bytes 479", NULL);
  error = NULL;
  o.max_bytes = 100;
  g_assert_null(load_csv(dir, csv, -1, &o, &error));
  expect_error(&error, MEXD_ERROR_NO_MEMORY, "first bag over budget", "slide 'b1'", NULL);
}

static void test_presets(void)
{
  g_autofree char *dir = new_dir("presets");
  const char *c16[] = {"normal_001", "normal_002", "normal_160", "tumor_001", "tumor_111",
                       "tumor_050",  "test_001",   "test_130",   "test_049"};
  for (size_t i = 0; i < G_N_ELEMENTS(c16); i++) {
    g_autofree char *name = g_strconcat(c16[i], i % 2 ? ".csv" : ".npy", NULL);
    if (i % 2)
      put_csv_bag(dir, name, 2, D, (float)i);
    else
      put_npy(dir, name, 2, D, (float)i);
  }
  const char *csv = "slide_id,label\n"
                    "normal_001,normal\nnormal_002,Negative\nnormal_160,NORMAL\n"
                    "tumor_001,tumor\ntumor_111,metastasis\ntumor_050,Tumor\n"
                    "test_001,tumor\ntest_130,normal\ntest_049,normal\n";
  MexdDatasetOptions o;
  mexd_dataset_options_init(&o);
  o.preset = "camelyon16";
  o.val_fraction = 0.5;
  GError *error = NULL;
  g_assert_null(load_csv(dir, csv, -1, &o, &error));
  expect_error(&error, MEXD_ERROR_FORMAT, "test_049", "slide 'test_049'", "line 10", "duplicate",
               NULL);
  error = NULL;
  Warned w;
  warned_init(&w);
  o.skip_bad = TRUE;
  o.warn = collect_warning;
  o.warn_data = &w;
  {
    g_autoptr(MexdDataset) ds = load_csv(dir, csv, -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_skipped, ==, 1);
    g_assert_cmpstr(g_ptr_array_index(w.slides, 0), ==, "test_049");
    g_assert_cmpint(ds->n_slides, ==, 8);
    g_assert_true(ds->preset == mexd_preset_lookup("camelyon16", NULL));
    g_assert_cmpint(ds->preset->experts, ==, 2);
    g_assert_cmpstr(ds->classes[0], ==, "normal");
    g_assert_cmpstr(ds->classes[1], ==, "tumor");
    for (int i = 0; i < 6; i++) {
      g_assert_cmpint(ds->slides[i].label, ==, i / 3);
      g_assert_cmpint(ds->slides[i].split, !=, MEXD_SPLIT_TEST);
    }
    g_assert_cmpint(find_slide(ds, "test_001")->split, ==, MEXD_SPLIT_TEST);
    g_assert_cmpint(find_slide(ds, "test_001")->label, ==, 1);
    g_assert_cmpint(find_slide(ds, "test_130")->split, ==, MEXD_SPLIT_TEST);
    g_assert_cmpint(find_slide(ds, "test_130")->label, ==, 0);
    g_assert_true(ds->val_carved);
    /* 3 per class at 0.5: round(1.5) = 2 to val */
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_VAL, 0), ==, 2);
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_VAL, 1), ==, 2);
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, 0), ==, 1);
    g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, 1), ==, 1);
    check_split_lists(ds);
    g_autofree char *summary = mexd_dataset_summary(ds);
    g_test_message("%s", summary);
    g_assert_nonnull(strstr(summary, "camelyon16: 8 slides, 2 classes, D = 4"));
    g_assert_nonnull(strstr(summary, "val 4 carved from train (normal 2, tumor 2)"));
    g_assert_nonnull(strstr(summary, "test 2 (normal 1, tumor 1)"));
    g_assert_nonnull(strstr(summary, "1 row skipped"));
  }
  {
    /* a CSV val for an official train slide (Camelyon16 has no official val): no carving */
    g_autoptr(MexdDataset) ds = load_csv(dir,
                                         "slide_id,label,split\nnormal_001,normal,val\n"
                                         "normal_002,normal,train\ntumor_001,tumor,Train\n"
                                         "test_001,tumor,test\n",
                                         -1, &o, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_skipped, ==, 0);
    g_assert_false(ds->val_carved);
    g_assert_cmpint(ds->slides[0].split, ==, MEXD_SPLIT_VAL);
    g_assert_cmpint(ds->n_split[MEXD_SPLIT_TRAIN], ==, 2);
    g_assert_cmpint(ds->n_unused_files, ==, 5);
  }

  /* BRACS: the release's split and groups, labels as subtypes, group codes, names */
  static const struct {
    const char *id, *label;
    MexdSplit split;
    int klass;
  } bracs[] = {
      {"BRACS_745", "N", MEXD_SPLIT_TRAIN, 0},        {"BRACS_743", "FEA", MEXD_SPLIT_TRAIN, 1},
      {"BRACS_280", "IC", MEXD_SPLIT_TRAIN, 2},       {"BRACS_1240", "pb", MEXD_SPLIT_TRAIN, 0},
      {"BRACS_265", "benign", MEXD_SPLIT_VAL, 0},     {"BRACS_1271", "Group_AT", MEXD_SPLIT_VAL, 1},
      {"BRACS_264", "BT", MEXD_SPLIT_TEST, 0},        {"BRACS_300", "AT", MEXD_SPLIT_TEST, 1},
      {"BRACS_286", "malignant", MEXD_SPLIT_TEST, 2}, {"BRACS_1003734", "UDH", MEXD_SPLIT_TRAIN, 0},
  };
  g_autofree char *bdir = new_dir("bracs");
  GString *bcsv = g_string_new("slide_id,label\n");
  for (size_t i = 0; i < G_N_ELEMENTS(bracs); i++) {
    g_autofree char *name = g_strconcat("h5_files/", bracs[i].id, have_h5 ? ".h5" : ".npy", NULL);
    if (have_h5)
      put_h5(bdir, name, 1 + (int64_t)i, D, (float)i);
    else
      put_npy(bdir, name + 9, 1 + (int64_t)i, D, (float)i);
    g_string_append_printf(bcsv, "%s,%s\n", bracs[i].id, bracs[i].label);
  }
  g_string_append(bcsv, "BRACS_0264,BT\n"); /* not the release's name */
  MexdDatasetOptions b;
  mexd_dataset_options_init(&b);
  b.preset = "bracs";
  g_assert_null(load_csv(bdir, bcsv->str, -1, &b, &error));
  expect_error(&error, MEXD_ERROR_FORMAT, "BRACS_0264", "slide 'BRACS_0264'", "line 12", NULL);
  error = NULL;
  b.skip_bad = TRUE;
  b.warn = collect_warning;
  b.warn_data = &w;
  {
    g_autoptr(MexdDataset) ds = load_csv(bdir, bcsv->str, -1, &b, &error);
    g_assert_no_error(error);
    g_assert_cmpint(ds->n_slides, ==, (int)G_N_ELEMENTS(bracs));
    g_assert_cmpint(ds->n_skipped, ==, 1);
    g_assert_false(ds->val_carved); /* the official val */
    g_assert_cmpint(ds->n_classes, ==, 3);
    g_assert_cmpint(ds->preset->experts, ==, 4);
    for (size_t i = 0; i < G_N_ELEMENTS(bracs); i++) {
      const MexdDatasetSlide *s = find_slide(ds, bracs[i].id);
      g_assert_cmpint(s->split, ==, bracs[i].split);
      g_assert_cmpint(s->label, ==, bracs[i].klass);
      check_bag(s->bag, 1 + (int64_t)i, D, (float)i);
    }
    check_split_lists(ds);
  }
  g_string_free(bcsv, TRUE);
  warned_clear(&w);
}

static void test_misc(void)
{
  g_assert_cmpstr(mexd_split_name(MEXD_SPLIT_TRAIN), ==, "train");
  g_assert_cmpstr(mexd_split_name(MEXD_SPLIT_VAL), ==, "val");
  g_assert_cmpstr(mexd_split_name(MEXD_SPLIT_TEST), ==, "test");
  g_assert_cmpstr(mexd_split_name((MexdSplit)7), ==, "invalid");
  MexdDatasetOptions o;
  memset(&o, 0x5a, sizeof o);
  mexd_dataset_options_init(&o);
  g_assert_null(o.preset);
  g_assert_null(o.class_names);
  g_assert_cmpfloat(o.val_fraction, ==, 0.2);
  g_assert_cmpuint(o.seed, ==, 0);
  g_assert_false(o.skip_bad);
  g_assert_cmpint(o.expected_dim, ==, 0);
  g_assert_cmpuint(o.max_bytes, ==, 0);
  g_assert_null(o.warn);
  g_assert_null(o.warn_data);

  g_autofree char *dir = new_dir("misc");
  put_npy(dir, "a.npy", 2, D, 0);
  put_npy(dir, "b.npy", 3, D, 0);
  GError *error = NULL;
  put(dir, "labels.csv", "slide_id,label\na,x\nb,y\n", -1);
  g_autofree char *csv = g_build_filename(dir, "labels.csv", NULL);
  g_assert_null(mexd_dataset_load(NULL, csv, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL dir", NULL);
  error = NULL;
  g_assert_null(mexd_dataset_load(dir, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL csv", NULL);
  error = NULL;
  g_autofree char *nodir = g_build_filename(dir, "nowhere", NULL);
  g_assert_null(mexd_dataset_load(nodir, csv, NULL, &error));
  expect_error(&error, MEXD_ERROR_IO, "missing dir", "nowhere", "does not exist", NULL);
  error = NULL;
  g_assert_null(mexd_dataset_load(csv, csv, NULL, &error));
  expect_error(&error, MEXD_ERROR_IO, "file as dir", "not a directory", NULL);
  error = NULL;
  const double bad_fractions[] = {-0.1, 1.5, NAN};
  for (size_t k = 0; k < G_N_ELEMENTS(bad_fractions); k++) {
    mexd_dataset_options_init(&o);
    o.val_fraction = bad_fractions[k];
    g_assert_null(mexd_dataset_load(dir, csv, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "val_fraction", "val_fraction", NULL);
    error = NULL;
  }
  mexd_dataset_options_init(&o);
  o.expected_dim = -1;
  g_assert_null(mexd_dataset_load(dir, csv, &o, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "expected_dim", "expected_dim", NULL);
  error = NULL;

  /* NULL options: the defaults (val 0.2 of 1 slide per class: nothing carved) */
  g_autoptr(MexdDataset) ds = mexd_dataset_load(dir, csv, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_slides, ==, 2);
  g_assert_false(ds->val_carved);
  g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, 1), ==, 1);
  g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, -1), ==, 2);
  g_assert_cmpint(mexd_dataset_count(ds, MEXD_SPLIT_TRAIN, 2), ==, 0);
  g_assert_cmpint(mexd_dataset_count(ds, (MexdSplit)3, 0), ==, 0);
  g_assert_cmpint(mexd_dataset_count(NULL, MEXD_SPLIT_TRAIN, 0), ==, 0);
  g_autofree char *summary = mexd_dataset_summary(ds);
  g_test_message("%s", summary);
  g_assert_nonnull(strstr(summary, "2 slides, 2 classes, D = 4: train 2 (x 1, y 1); val 0"));
  g_assert_nonnull(strstr(summary, "5 instances"));
  g_assert_nonnull(strstr(summary, "0 feature files not in the CSV; 0 rows skipped."));
  mexd_dataset_free(NULL);
}

static void test_quoted_ids(void)
{
  g_autofree char *dir = new_dir("quoted-ids");
  static const char *const ids[] = {"s, \"q\"", "multi\nline", " lead", "#hash"};
  for (int i = 0; i < 4; i++) {
    g_autofree char *name = g_strconcat(ids[i], ".npy", NULL);
    put_npy(dir, name, 2, D, (float)i);
  }
  /* written by the one writer (csv.h), read back by the data set */
  GString *text = g_string_new(NULL);
  mexd_csv_append_row(text, (const char *const[]){"slide_id", "label", NULL}, -1);
  for (int i = 0; i < 4; i++)
    mexd_csv_append_row(text, (const char *const[]){ids[i], i % 2 ? "b" : "a", NULL}, -1);
  g_test_message("%s", text->str);
  g_assert_nonnull(strstr(text->str, "\"s, \"\"q\"\"\",a\n"));
  MexdDatasetOptions o = quiet_options();
  GError *error = NULL;
  g_autoptr(MexdDataset) ds = load_csv(dir, text->str, (gssize)text->len, &o, &error);
  g_string_free(text, TRUE);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_slides, ==, 4);
  for (int i = 0; i < 4; i++) {
    g_assert_cmpstr(ds->slides[i].slide_id, ==, ids[i]);
    g_assert_cmpfloat(ds->slides[i].bag->features[0], ==, (float)i);
  }
  g_assert_cmpint(ds->slides[1].line, ==, 3);
  g_assert_cmpint(ds->slides[2].line, ==, 5); /* after the quoted line break */
}

static void test_outputs(void)
{
  g_autofree char *dir = new_dir("outputs");
  put_npy(dir, "s1.npy", 2, D, 0);
  put_npy(dir, "s2.npy", 2, D, 1);
  static const char text[] = "slide_id,label\ns1,a\ns2,b\n";
  g_autofree char *csv = g_build_filename(dir, "labels.csv", NULL);
  g_autofree char *s2 = g_build_filename(dir, "s2.npy", NULL);
  g_autofree char *sym = g_build_filename(dir, "out-link.csv", NULL);
  g_autofree char *hard = g_build_filename(dir, "out-hard.csv", NULL);
  g_autofree char *fine = g_build_filename(dir, "predictions.csv", NULL);
  g_assert_cmpint(symlink("labels.csv", sym), ==, 0);
  g_assert_cmpint(link(s2, hard), ==, 0);
  MexdDatasetOptions o = quiet_options();
  GError *error = NULL;
  for (int skip = 0; skip < 2; skip++) {
    o.skip_bad = skip; /* never a slide's fault: an error all the same */
    const char *same[] = {csv, NULL}, *link1[] = {sym, NULL}, *link2[] = {hard, NULL};
    const char *feature[] = {fine, s2, NULL}, *folder[] = {dir, NULL};
    o.outputs = same;
    g_assert_null(load_csv(dir, text, -1, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "output = labels", "labels.csv",
                 "one of the inputs", NULL);
    o.outputs = link1;
    g_assert_null(load_csv(dir, text, -1, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "output links to labels", "out-link.csv",
                 "labels.csv", "same file", NULL);
    o.outputs = link2;
    g_assert_null(load_csv(dir, text, -1, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "output hard-links a feature file",
                 "slide 's2'", "out-hard.csv", "s2.npy", "line 3", NULL);
    o.outputs = feature;
    g_assert_null(load_csv(dir, text, -1, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "output = a feature file", "s2.npy", NULL);
    o.outputs = folder;
    g_assert_null(load_csv(dir, text, -1, &o, &error));
    expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "output = a folder", "existing folder",
                 NULL);
  }
  /* outputs that are no input load */
  const char *outs[] = {fine, NULL};
  o.outputs = outs;
  o.skip_bad = FALSE;
  g_autoptr(MexdDataset) ds = load_csv(dir, text, -1, &o, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds->n_slides, ==, 2);

  /* FIFOs: refused by looking at them, never opened (an open would block) */
  g_autofree char *fifo = g_build_filename(dir, "fifo.csv", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  o.outputs = NULL;
  g_assert_null(mexd_dataset_load(dir, fifo, &o, &error));
  expect_error(&error, MEXD_ERROR_IO, "FIFO labels", "fifo.csv", "FIFO", NULL);
  g_autofree char *ffeat = g_build_filename(dir, "s3.npy", NULL);
  g_assert_cmpint(mkfifo(ffeat, 0600), ==, 0);
  g_assert_null(load_csv(dir, "slide_id,label\ns1,a\ns2,b\ns3,a\n", -1, &o, &error));
  expect_error(&error, MEXD_ERROR_IO, "FIFO feature file", "slide 's3'", "s3.npy", "FIFO", NULL);
  o.skip_bad = TRUE;
  Warned w;
  warned_init(&w);
  o.warn = collect_warning;
  o.warn_data = &w;
  g_autoptr(MexdDataset) ds2 = load_csv(dir, "slide_id,label\ns1,a\ns2,b\ns3,a\n", -1, &o, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ds2->n_slides, ==, 2);
  g_assert_cmpint(ds2->n_skipped, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(w.slides, 0), ==, "s3");
  warned_clear(&w);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  root = g_dir_make_tmp("mexd-test-dataset-XXXXXX", NULL);
  g_assert_nonnull(root);
  {
    MexdBag probe = {.n = 1, .d = 1, .patch_level = -1, .patch_size = -1};
    float f = 0;
    probe.features = &f;
    g_autofree char *path = g_build_filename(root, "probe.h5", NULL);
    GError *error = NULL;
    have_h5 = mexd_bag_write_h5(path, &probe, &error);
    if (!have_h5) {
      g_assert_cmpint(error->code, ==, MEXD_ERROR_UNSUPPORTED);
      g_error_free(error);
    }
    g_unlink(path);
  }
  g_test_add_func("/train/dataset/layouts", test_layouts);
  g_test_add_func("/train/dataset/csv", test_csv);
  g_test_add_func("/train/dataset/csv-errors", test_csv_errors);
  g_test_add_func("/train/dataset/classes", test_classes);
  g_test_add_func("/train/dataset/val", test_val);
  g_test_add_func("/train/dataset/permutation", test_permutation);
  g_test_add_func("/train/dataset/bad", test_bad);
  g_test_add_func("/train/dataset/skip-d", test_skip_d);
  g_test_add_func("/train/dataset/max-bytes", test_max_bytes);
  g_test_add_func("/train/dataset/presets", test_presets);
  g_test_add_func("/train/dataset/misc", test_misc);
  g_test_add_func("/train/dataset/quoted-ids", test_quoted_ids);
  g_test_add_func("/train/dataset/outputs", test_outputs);
  int rc = g_test_run();
  remove_tree(root);
  g_free(root);
  return rc;
}
