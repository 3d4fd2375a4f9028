/* test-features.c: reading bags of features (CLAM HDF5, DSMIL/IBMIL CSV, NumPy .npy) and writing
 * the CLAM layout.
 *
 * The fixtures of tests/fixtures/features/ are written by the independent
 * tests/fixtures/features/make_features.py (h5py + numpy); every good one holds the bag
 * features[i, j] = i + j / 8, coords[i] = (256 i, 512 (i + 1)), N = 5, D = 3, which is recomputed
 * here.  Each bad fixture is checked for its error code, a phrase of its message and the message
 * starting with the file name.  Variants too small to deserve a fixture are written to a temporary
 * directory.  HDF5 tests skip when libmexd was built without HDF5. */
#include "mexd.h"
#include "fixture-dir.h"
#include "io/features.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#define N 5
#define D 3

static char *tmpdir;
static char *fixtures;

/* ---- helpers ---- */

static void expect_error(GError *error, int code, const char *must_contain, const char *what)
{
  if (!error)
    g_error("%s: expected an error", what);
  if (error->domain != MEXD_ERROR)
    g_error("%s: error in domain %s: %s", what, g_quark_to_string(error->domain), error->message);
  if (error->code != code)
    g_error("%s: expected code %d, got %d: %s", what, code, error->code, error->message);
  if (must_contain && !strstr(error->message, must_contain))
    g_error("%s: message \"%s\" does not contain \"%s\"", what, error->message, must_contain);
  g_test_message("%s: %s", what, error->message);
  g_error_free(error);
}

static char *fixture(const char *name)
{
  return g_build_filename(fixtures, name, NULL);
}

static char *tmp_path(const char *name)
{
  return g_build_filename(tmpdir, name, NULL);
}

static char *write_tmp(const char *name, const void *data, gssize len)
{
  char *path = tmp_path(name);
  GError *error = NULL;
  g_file_set_contents(path, data, len, &error);
  g_assert_no_error(error);
  return path;
}

static float want_feature(int64_t i, int64_t j)
{
  return (float)i + (float)j / 8.0f;
}

/* `bag` is the fixtures' bag: values exactly, coords when `with_coords`. */
static void check_bag(const MexdBag *bag, gboolean with_coords, const char *what)
{
  if (bag->n != N || bag->d != D)
    g_error("%s: shape %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT ", expected %d x %d", what, bag->n,
            bag->d, N, D);
  for (int64_t i = 0; i < N; i++)
    for (int64_t j = 0; j < D; j++)
      if (bag->features[i * D + j] != want_feature(i, j))
        g_error("%s: features[%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] = %g, expected %g", what,
                i, j, bag->features[i * D + j], want_feature(i, j));
  if (!with_coords) {
    if (bag->coords)
      g_error("%s: has coords, expected none", what);
    g_assert_cmpint(bag->patch_level, ==, -1);
    g_assert_cmpint(bag->patch_size, ==, -1);
    return;
  }
  if (!bag->coords)
    g_error("%s: has no coords", what);
  for (int i = 0; i < N; i++) {
    g_assert_cmpint(bag->coords[2 * i], ==, 256 * i);
    g_assert_cmpint(bag->coords[2 * i + 1], ==, 512 * (i + 1));
  }
}

/* Reads fixture `name` in `format` and in MEXD_BAG_AUTO and checks both. */
static MexdBag *read_good(const char *name, MexdBagFormat format, gboolean with_coords)
{
  g_autofree char *path = fixture(name);
  MexdBag *bag = NULL;
  MexdBagFormat formats[2] = {format, MEXD_BAG_AUTO};
  for (int k = 0; k < 2; k++) {
    GError *error = NULL;
    g_autofree char *what = g_strdup_printf("%s (%s)", name, mexd_bag_format_name(formats[k]));
    mexd_bag_free(bag);
    bag = mexd_bag_read(path, formats[k], &error);
    if (!bag)
      g_error("%s: %s", what, error->message);
    g_assert_no_error(error);
    check_bag(bag, with_coords, what);
  }
  return bag;
}

/* Reading `path` fails with `code`, a message containing `must_contain` and starting with the
 * file name. */
static void expect_bad_path(const char *path, MexdBagFormat format, int code,
                            const char *must_contain)
{
  GError *error = NULL;
  g_autofree char *base = g_path_get_basename(path);
  g_autofree char *what = g_strdup_printf("%s (%s)", base, mexd_bag_format_name(format));
  MexdBag *bag = mexd_bag_read(path, format, &error);
  if (bag)
    g_error("%s: read, but should have been rejected", what);
  g_assert_nonnull(error);
  if (!g_str_has_prefix(error->message, path))
    g_error("%s: message \"%s\" does not start with the file name", what, error->message);
  expect_error(error, code, must_contain, what);
}

static void expect_bad(const char *name, MexdBagFormat format, int code, const char *must_contain)
{
  g_autofree char *path = fixture(name);
  expect_bad_path(path, format, code, must_contain);
}

/* Whether libmexd reads HDF5 (else the test is skipped). */
static gboolean have_hdf5(void)
{
  g_autofree char *path = fixture("clam.h5");
  GError *error = NULL;
  g_autoptr(MexdBag) bag = mexd_bag_read(path, MEXD_BAG_H5, &error);
  if (bag)
    return TRUE;
  g_assert_nonnull(error);
  if (error->code == MEXD_ERROR_UNSUPPORTED && strstr(error->message, "built without HDF5")) {
    g_error_free(error);
    g_test_skip("libmexd was built without HDF5");
    return FALSE;
  }
  g_error("clam.h5: %s", error->message);
}

/* ---- CLAM HDF5 ---- */

static void test_h5_good(void)
{
  if (!have_hdf5())
    return;
  g_autoptr(MexdBag) clam = read_good("clam.h5", MEXD_BAG_H5, TRUE);
  g_assert_cmpint(clam->patch_level, ==, 1);
  g_assert_cmpint(clam->patch_size, ==, 256);
  g_autoptr(MexdBag) batch = read_good("clam_batch.h5", MEXD_BAG_H5, FALSE);
  g_autoptr(MexdBag) f64 = read_good("clam_f64.h5", MEXD_BAG_H5, TRUE);
  g_assert_cmpint(f64->patch_level, ==, -1);
  g_assert_cmpint(f64->patch_size, ==, -1);
  g_autoptr(MexdBag) f16 = read_good("clam_f16_gzip.h5", MEXD_BAG_H5, FALSE);

  /* an HDF5 file behind a 512-byte user block is still found by AUTO */
  g_autofree char *src = fixture("clam.h5");
  g_autofree char *contents = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(src, &contents, &len, NULL));
  g_autofree char *blocked = g_malloc0(512 + len);
  memcpy(blocked + 512, contents, len);
  /* HDF5 finds the superblock there and takes its addresses as relative to it */
  g_autofree char *path = write_tmp("userblock.h5", blocked, (gssize)(512 + len));
  GError *error = NULL;
  g_autoptr(MexdBag) ub = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  check_bag(ub, TRUE, "userblock.h5");
}

static void test_h5_bad(void)
{
  if (!have_hdf5())
    return;
  expect_bad("clam_nofeatures.h5", MEXD_BAG_AUTO, MEXD_ERROR_FORMAT, "has no dataset \"features\"");
  expect_bad("clam_nofeatures.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "coords, embeddings");
  expect_bad("clam_rank1.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "has shape [15]");
  expect_bad("clam_zero.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "no instances");
  expect_bad("clam_badcoords.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT,
             "coords has shape [4, 2] but features has 5 rows");
  expect_bad("clam_strings.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "string type");
  expect_bad("clam_lzf.h5", MEXD_BAG_H5, MEXD_ERROR_FORMAT,
             "cannot read dataset features: required filter 'lzf' is not registered");
  /* not HDF5 at all */
  expect_bad("dsmil.csv", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "not an HDF5 file");
  expect_bad("f4.npy", MEXD_BAG_H5, MEXD_ERROR_FORMAT, "not an HDF5 file");
  /* the signature, then garbage */
  static const char sig[] = "\x89HDF\r\n\x1a\n and then nothing an HDF5 library can read";
  g_autofree char *path = write_tmp("sig-only.h5", sig, sizeof sig - 1);
  expect_bad_path(path, MEXD_BAG_AUTO, MEXD_ERROR_FORMAT, "cannot open as an HDF5 file");
}

/* ---- CSV ---- */

static void test_csv_good(void)
{
  g_autoptr(MexdBag) a = read_good("dsmil.csv", MEXD_BAG_CSV, FALSE);
  g_autoptr(MexdBag) b = read_good("noheader.csv", MEXD_BAG_CSV, FALSE);
  g_autoptr(MexdBag) c = read_good("named_header.csv", MEXD_BAG_CSV, FALSE);
  g_autoptr(MexdBag) d = read_good("pandas_index.csv", MEXD_BAG_CSV, FALSE);

  /* spaces, quotes, a BOM, blank lines, exponents, no final newline */
  static const char odd[] = "\xef\xbb\xbf\"a\", \"b\" ,c\n"
                            "0, 0.125 ,\"0.25\"\n"
                            "\n"
                            "1e0,1.125,125e-2\r\n"
                            "   \n"
                            "2,2.125,2.25\n"
                            "3,3.125,3.25\n"
                            "4,4.125,4.25";
  g_autofree char *path = write_tmp("odd.txt", odd, sizeof odd - 1);
  GError *error = NULL;
  g_autoptr(MexdBag) e = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  check_bag(e, FALSE, "odd.txt");

  /* a single line of numbers: one instance; a single column: D = 1 */
  g_autofree char *one = write_tmp("one.csv", "1.5,2.5,3.5\n", -1);
  g_autoptr(MexdBag) f = mexd_bag_read(one, MEXD_BAG_CSV, &error);
  g_assert_no_error(error);
  g_assert_cmpint(f->n, ==, 1);
  g_assert_cmpint(f->d, ==, 3);
  g_assert_cmpfloat(f->features[2], ==, 3.5f);
  g_autofree char *col = write_tmp("col.csv", "x\n1\n2\n3\n", -1);
  g_autoptr(MexdBag) g = mexd_bag_read(col, MEXD_BAG_CSV, &error);
  g_assert_no_error(error);
  g_assert_cmpint(g->n, ==, 3);
  g_assert_cmpint(g->d, ==, 1);
  g_assert_cmpfloat(g->features[2], ==, 3.0f);
  /* a first line 0,1,2 that is not the column names of a header: 0,1,2 in one row of 4 cells */
  g_autofree char *notheader = write_tmp("notheader.csv", "0,1,2,7\n3,4,5,6\n", -1);
  g_autoptr(MexdBag) h = mexd_bag_read(notheader, MEXD_BAG_CSV, &error);
  g_assert_no_error(error);
  g_assert_cmpint(h->n, ==, 2);
  /* through the project's CSV tokenizer (io/csv.h): quoted cells, spaces, CRLF, a pandas index */
  g_autofree char *quoted = write_tmp("quoted.csv", "\"\",\"a\", b \r\n0, \"1.5\" ,2\r\n\n1,3,\"-4\"\r\n", -1);
  g_autoptr(MexdBag) q = mexd_bag_read(quoted, MEXD_BAG_CSV, &error);
  g_assert_no_error(error);
  g_assert_cmpint(q->n, ==, 2);
  g_assert_cmpint(q->d, ==, 2);
  g_assert_cmpfloat(q->features[0], ==, 1.5f);
  g_assert_cmpfloat(q->features[3], ==, -4.0f);
  /* a quote inside an unclosed quoted cell: an error naming the line */
  g_autofree char *open_q = write_tmp("open-quote.csv", "a,b\n1,\"2\n", -1);
  expect_bad_path(open_q, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "csv:2: a quoted field is not closed");
}

static void test_csv_bad(void)
{
  expect_bad("ragged.csv", MEXD_BAG_AUTO, MEXD_ERROR_FORMAT, "line 4 has 2 values, expected 3");
  expect_bad("nonnumeric.csv", MEXD_BAG_CSV, MEXD_ERROR_FORMAT,
             "line 3, column 2 is not a number: \"abc\"");
  expect_bad("header_only.csv", MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "no data lines");
  expect_bad("empty.dat", MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "is empty");
  g_autofree char *blank = write_tmp("blank.csv", "\n  \r\n\n", -1);
  expect_bad_path(blank, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "no lines but blank ones");
  g_autofree char *empty_cell = write_tmp("empty-cell.csv", "0,1,2\n1,,3\n", -1);
  expect_bad_path(empty_cell, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "line 2, column 2 is empty");
  g_autofree char *longer = write_tmp("longer.csv", "a,b\n1,2\n3,4,5\n", -1);
  expect_bad_path(longer, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "line 3 has 3 values, expected 2");
  g_autofree char *nul = write_tmp("nul.csv", "a,b\n1,2\n3,\0004\n", 14);
  expect_bad_path(nul, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "csv:3: a field holds a NUL byte");
  /* a number followed by text is not a number */
  g_autofree char *trailing = write_tmp("trailing.csv", "a,b\n1.5x,2\n", -1);
  expect_bad_path(trailing, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, "line 2, column 1 is not a number");
  /* random bytes read as CSV: an error, never a crash */
  g_autofree char *rnd = fixture("random.dat");
  expect_bad_path(rnd, MEXD_BAG_CSV, MEXD_ERROR_FORMAT, NULL);
}

static void test_csv_nan(void)
{
  g_autofree char *path = fixture("nan.csv");
  GError *error = NULL;
  g_autoptr(MexdBag) bag = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  g_assert_cmpint(bag->n, ==, N);
  g_assert_true(isnan(bag->features[1 * D + 2]));
  g_assert_true(isinf(bag->features[3 * D + 0]) && bag->features[3 * D + 0] < 0);
  g_assert_false(mexd_bag_check_finite(bag, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "instance 1, feature 2 is NaN", "nan.csv");
  error = NULL;
  bag->features[1 * D + 2] = 0;
  g_assert_false(mexd_bag_check_finite(bag, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "instance 3, feature 0 is -Inf", "nan.csv -inf");
  error = NULL;
  bag->features[3 * D + 0] = 0;
  g_assert_true(mexd_bag_check_finite(bag, &error));
  g_assert_no_error(error);
  bag->features[4 * D + 1] = INFINITY;
  g_assert_false(mexd_bag_check_finite(bag, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "instance 4, feature 1 is +Inf", "nan.csv +inf");
  error = NULL;
  g_assert_false(mexd_bag_check_finite(NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL", "check_finite(NULL)");
}

/* ---- NumPy ---- */

static void test_npy_good(void)
{
  g_autoptr(MexdBag) a = read_good("f4.npy", MEXD_BAG_NPY, FALSE);
  g_autoptr(MexdBag) b = read_good("f8.npy", MEXD_BAG_NPY, FALSE);
  g_autoptr(MexdBag) c = read_good("f2_v2.npy", MEXD_BAG_NPY, FALSE);
  g_autoptr(MexdBag) d = read_good("be_f4_v3.npy", MEXD_BAG_NPY, FALSE);
}

/* A .npy file of `header` (the dict, padded to 64 bytes with '\n') and `data_len` data bytes. */
static char *write_npy(const char *name, int major, const char *header, size_t data_len)
{
  size_t pre = major == 1 ? 10 : 12;
  size_t hlen = strlen(header) + 1;
  hlen += (64 - (pre + hlen) % 64) % 64;
  size_t total = pre + hlen + data_len;
  g_autofree guint8 *buf = g_malloc0(total);
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (guint8)major;
  buf[7] = 0;
  for (size_t k = 0; k < pre - 8; k++)
    buf[8 + k] = (guint8)(hlen >> (8 * k));
  memset(buf + pre, ' ', hlen);
  memcpy(buf + pre, header, strlen(header));
  buf[pre + hlen - 1] = '\n';
  return write_tmp(name, buf, (gssize)total);
}

static void test_npy_bad(void)
{
  expect_bad("fortran.npy", MEXD_BAG_AUTO, MEXD_ERROR_UNSUPPORTED, "Fortran");
  expect_bad("three_d.npy", MEXD_BAG_NPY, MEXD_ERROR_FORMAT, "shape (2, 5, 3) (3-D)");
  expect_bad("truncated.npy", MEXD_BAG_AUTO, MEXD_ERROR_FORMAT,
             "is truncated: shape (5, 3) of '<f4' needs 60 bytes of data, the file has 50");
  expect_bad("i8.npy", MEXD_BAG_AUTO, MEXD_ERROR_UNSUPPORTED, "dtype '<i8' is not supported");
  expect_bad("dsmil.csv", MEXD_BAG_NPY, MEXD_ERROR_FORMAT, "not a NumPy .npy file");

  static const struct {
    const char *name;
    int major;
    const char *header;
    size_t data;
    int code;
    const char *msg;
  } cases[] = {
      {"extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }", 64,
       MEXD_ERROR_FORMAT, "has 4 bytes after the data"},
      {"one-d.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (15,), }", 60,
       MEXD_ERROR_FORMAT, "shape (15,) (1-D)"},
      {"zero.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0,
       MEXD_ERROR_FORMAT, "no instances"},
      {"version.npy", 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), }", 60,
       MEXD_ERROR_UNSUPPORTED, "version 4.0"},
      {"no-shape.npy", 1, "{'descr': '<f4', 'fortran_order': False, }", 60, MEXD_ERROR_FORMAT,
       "no 'shape' key"},
      {"not-dict.npy", 1, "['descr', '<f4']", 60, MEXD_ERROR_FORMAT, "not a dict"},
      {"struct.npy", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (5,), }", 20,
       MEXD_ERROR_UNSUPPORTED, "structured dtype"},
      {"bad-tuple.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, -3), }", 60,
       MEXD_ERROR_FORMAT, "not a tuple of non-negative integers"},
      {"huge.npy", 1,
       "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999, 99999), }", 60,
       MEXD_ERROR_FORMAT, "too large"},
      {"unterminated.npy", 1, "{'descr': '<f4, 'fortran_order': False, 'shape': (5, 3)", 60,
       MEXD_ERROR_FORMAT, "malformed .npy header"},
      {"f16-big-v2.npy", 2, "{'descr': '>f2', 'fortran_order': False, 'shape': (5, 3), }", 30, -1,
       NULL},
      {"fortran-vec.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3), }", 12, -1,
       NULL},
  };
  for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
    g_autofree char *path =
        write_npy(cases[k].name, cases[k].major, cases[k].header, cases[k].data);
    if (cases[k].code >= 0) {
      expect_bad_path(path, MEXD_BAG_AUTO, cases[k].code, cases[k].msg);
    } else {
      GError *error = NULL;
      g_autoptr(MexdBag) bag = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
      g_assert_no_error(error);
      g_assert_cmpfloat(bag->features[0], ==, 0.0f);
    }
  }
  /* a header length past the end of the file */
  static const char cut[] = "\x93NUMPY\x01\x00\xff\x00{'descr'";
  g_autofree char *path = write_tmp("cut.npy", cut, sizeof cut - 1);
  expect_bad_path(path, MEXD_BAG_AUTO, MEXD_ERROR_FORMAT, "truncated inside its .npy header");
}

/* ---- detection and file errors ---- */

static void test_files(void)
{
  expect_bad("empty.dat", MEXD_BAG_AUTO, MEXD_ERROR_FORMAT, "is empty");
  expect_bad("random.dat", MEXD_BAG_AUTO, MEXD_ERROR_FORMAT,
             "not HDF5, not NumPy .npy and not CSV text");
  expect_bad("does-not-exist.h5", MEXD_BAG_AUTO, MEXD_ERROR_IO, "no such file");
  expect_bad_path(tmpdir, MEXD_BAG_AUTO, MEXD_ERROR_IO, "is a directory");
  GError *error = NULL;
  g_assert_null(mexd_bag_read(NULL, MEXD_BAG_AUTO, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL", "read(NULL)");
  error = NULL;
  g_autofree char *f4 = fixture("f4.npy");
  g_assert_null(mexd_bag_read(f4, (MexdBagFormat)42, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "invalid format", "read(format 42)");
  g_assert_cmpstr(mexd_bag_format_name(MEXD_BAG_NPY), ==, "npy");
  g_assert_cmpstr(mexd_bag_format_name((MexdBagFormat)42), ==, "invalid");
  mexd_bag_free(NULL);
}

/* ---- the writer ---- */

static MexdBag *make_bag(int64_t n, int64_t d, gboolean coords)
{
  MexdBag *bag = g_new0(MexdBag, 1);
  bag->n = n;
  bag->d = d;
  bag->features = g_new(float, n *d);
  for (int64_t k = 0; k < n * d; k++)
    bag->features[k] = (float)k * 0.37f - 11.0f;
  bag->patch_level = bag->patch_size = -1;
  if (coords) {
    bag->coords = g_new(int32_t, n * 2);
    for (int64_t k = 0; k < n * 2; k++)
      bag->coords[k] = (int32_t)(k * 1000003 % 2000000000) - (k == 1 ? 5 : 0);
    bag->patch_level = 2;
    bag->patch_size = 512;
  }
  return bag;
}

static void check_same(const MexdBag *a, const MexdBag *b)
{
  g_assert_cmpint(a->n, ==, b->n);
  g_assert_cmpint(a->d, ==, b->d);
  g_assert_cmpmem(a->features, a->n * a->d * sizeof(float), b->features,
                  b->n * b->d * sizeof(float));
  g_assert_true((a->coords == NULL) == (b->coords == NULL));
  if (a->coords)
    g_assert_cmpmem(a->coords, a->n * 2 * sizeof(int32_t), b->coords, b->n * 2 * sizeof(int32_t));
  g_assert_cmpint(a->patch_level, ==, b->patch_level);
  g_assert_cmpint(a->patch_size, ==, b->patch_size);
}

static void test_write_roundtrip(void)
{
  g_autofree char *path = tmp_path("written.h5");
  GError *error = NULL;
  g_autoptr(MexdBag) with = make_bag(37, 19, TRUE);
  if (!mexd_bag_write_h5(path, with, &error)) {
    if (error->code == MEXD_ERROR_UNSUPPORTED && strstr(error->message, "built without HDF5")) {
      g_error_free(error);
      g_test_skip("libmexd was built without HDF5");
      return;
    }
    g_error("write: %s", error->message);
  }
  g_autoptr(MexdBag) back = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  check_same(with, back);

  /* over the existing file: no coords, so no attributes either */
  g_autoptr(MexdBag) without = make_bag(1, 4, FALSE);
  g_assert_true(mexd_bag_write_h5(path, without, &error));
  g_assert_no_error(error);
  g_autoptr(MexdBag) back2 = mexd_bag_read(path, MEXD_BAG_H5, &error);
  g_assert_no_error(error);
  check_same(without, back2);

  /* coords with one attribute absent */
  with->patch_size = -1;
  g_assert_true(mexd_bag_write_h5(path, with, &error));
  g_autoptr(MexdBag) back3 = mexd_bag_read(path, MEXD_BAG_H5, &error);
  g_assert_no_error(error);
  check_same(with, back3);

  /* a fixture through the writer and back */
  g_autofree char *src = fixture("clam.h5");
  g_autoptr(MexdBag) clam = mexd_bag_read(src, MEXD_BAG_H5, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_bag_write_h5(path, clam, &error));
  g_autoptr(MexdBag) back4 = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
  g_assert_no_error(error);
  check_bag(back4, TRUE, "clam.h5 rewritten");
  g_assert_cmpint(back4->patch_level, ==, 1);
  g_assert_cmpint(back4->patch_size, ==, 256);

  /* no temporary files are left behind */
  g_autoptr(GDir) dir = g_dir_open(tmpdir, 0, NULL);
  for (const char *name; (name = g_dir_read_name(dir));)
    if (name[0] == '.')
      g_error("temporary file %s left in %s", name, tmpdir);
}

static void test_write_errors(void)
{
  GError *error = NULL;
  g_autoptr(MexdBag) bag = make_bag(3, 2, FALSE);
  g_autofree char *nodir = tmp_path("no-such-dir/out.h5");
  g_assert_false(mexd_bag_write_h5(nodir, bag, &error));
  g_assert_nonnull(error);
  if (error->code == MEXD_ERROR_UNSUPPORTED) {
    g_error_free(error);
    g_test_skip("libmexd was built without HDF5");
    return;
  }
  g_assert_true(g_str_has_prefix(error->message, nodir));
  expect_error(error, MEXD_ERROR_IO, "temporary file", "write into a missing directory");
  error = NULL;
  g_assert_false(mexd_bag_write_h5(NULL, bag, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL", "write(NULL path)");
  error = NULL;
  g_autofree char *path = tmp_path("bad.h5");
  g_assert_false(mexd_bag_write_h5(path, NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "NULL", "write(NULL bag)");
  error = NULL;
  bag->n = 0;
  g_assert_false(mexd_bag_write_h5(path, bag, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "0 x 2", "write(empty bag)");
  g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
}

static void remove_tree(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d)
    return;
  for (const char *name; (name = g_dir_read_name(d));) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR))
      remove_tree(p);
    else
      g_unlink(p);
  }
  g_dir_close(d);
  g_rmdir(dir);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  fixtures = mexd_test_fixture_dir("features");
  if (!fixtures)
    g_error("tests/fixtures/features not found (set G_TEST_SRCDIR to the tests directory)");
  tmpdir = g_dir_make_tmp("mexd-test-features-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  g_test_add_func("/features/h5/good", test_h5_good);
  g_test_add_func("/features/h5/bad", test_h5_bad);
  g_test_add_func("/features/csv/good", test_csv_good);
  g_test_add_func("/features/csv/bad", test_csv_bad);
  g_test_add_func("/features/csv/nan", test_csv_nan);
  g_test_add_func("/features/npy/good", test_npy_good);
  g_test_add_func("/features/npy/bad", test_npy_bad);
  g_test_add_func("/features/files", test_files);
  g_test_add_func("/features/write/roundtrip", test_write_roundtrip);
  g_test_add_func("/features/write/errors", test_write_errors);
  int rc = g_test_run();
  remove_tree(tmpdir);
  g_free(tmpdir);
  g_free(fixtures);
  return rc;
}
