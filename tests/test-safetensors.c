/* test-safetensors.c: the safetensors reader and writer.
 *
 * Round trips writer -> reader for every dtype, scalars, 4-D, metadata and empty files; loading
 * onto the cpu backend with dtype conversion; the fixtures of tests/fixtures/safetensors/ (written
 * by the independent tests/fixtures/make_safetensors.py); one corrupt file per validation rule; and
 * the writer's errors. */
#include "mexd.h"
#include "fixture-dir.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static MexdBackend *cpu;
static char *tmpdir;

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

static char *tmp_path(const char *name)
{
  return g_build_filename(tmpdir, name, NULL);
}

/* A file of the header `json` (its length written as the first 8 bytes) and `data_len` bytes of
 * data (0, 1, 2... mod 256). */
static GBytes *make_file(const char *json, size_t json_len, size_t data_len)
{
  size_t total = 8 + json_len + data_len;
  guint8 *buf = g_malloc(total);
  for (int i = 0; i < 8; i++)
    buf[i] = (guint8)((uint64_t)json_len >> (8 * i));
  memcpy(buf + 8, json, json_len);
  for (size_t i = 0; i < data_len; i++)
    buf[8 + json_len + i] = (guint8)i;
  return g_bytes_new_take(buf, total);
}

/* Parses `json` + `data_len` data bytes under the name `what`.safetensors and expects `code`. */
static void expect_bad(const char *what, const char *json, size_t data_len, int code,
                       const char *must_contain)
{
  g_autofree char *fname = g_strdup_printf("%s.safetensors", what);
  g_autoptr(GBytes) b = make_file(json, strlen(json), data_len);
  GError *error = NULL;
  MexdSafetensors *st = mexd_safetensors_new_from_bytes(b, fname, &error);
  if (st)
    g_error("%s: parsed, but should have been rejected", what);
  g_assert_nonnull(error);
  g_assert_true(strstr(error->message, fname) != NULL);
  expect_error(error, code, must_contain, what);
}

static void expect_good(const char *what, const char *json, size_t data_len)
{
  g_autoptr(GBytes) b = make_file(json, strlen(json), data_len);
  GError *error = NULL;
  g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, what, &error);
  if (!st)
    g_error("%s: rejected: %s", what, error->message);
}

/* Bytes of a writer. */
static GBytes *writer_bytes(MexdSafetensorsWriter *w)
{
  GError *error = NULL;
  GBytes *b = mexd_safetensors_writer_to_bytes(w, &error);
  g_assert_no_error(error);
  return b;
}

static void assert_shape(const MexdStTensor *t, int ndim, const int64_t *shape)
{
  g_assert_nonnull(t);
  g_assert_cmpint(t->ndim, ==, ndim);
  for (int i = 0; i < ndim; i++)
    g_assert_cmpint(t->shape[i], ==, shape[i]);
}

static void assert_tensor_shape(const MexdTensor *t, int ndim, const int64_t *shape)
{
  g_assert_nonnull(t);
  g_assert_cmpint(t->ndim, ==, ndim);
  for (int i = 0; i < ndim; i++)
    g_assert_cmpint(t->shape[i], ==, shape[i]);
}

static float bits_f32(uint32_t x)
{
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static uint32_t f32_bits(float f)
{
  uint32_t x;
  memcpy(&x, &f, 4);
  return x;
}

/* ---- round trips ---- */

static void test_roundtrip_dtypes(void)
{
  GError *error = NULL;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  const float f32[6] = {1.0f, -2.5f, 0.1f, 1e30f, -0.0f, 3.0f};
  const uint16_t f16[3] = {0x3c00, 0xfbff, 0x0001};
  const uint16_t bf16[5] = {0x3f80, 0xc020, 0x7f7f, 0x0001, 0x8000};
  const int64_t i64[4] = {0, -1, INT64_MAX, INT64_MIN};
  const int32_t i32[2] = {INT32_MIN, 42};
  const float scalar = 6.5f;
  float four[2 * 3 * 4 * 5];
  for (int i = 0; i < 120; i++)
    four[i] = (float)i - 60.0f;
  const int64_t s_f32[2] = {2, 3}, s_f16[1] = {3}, s_bf16[1] = {5}, s_i64[2] = {2, 2},
                s_i32[1] = {2}, s_four[4] = {2, 3, 4, 5}, s_empty[2] = {0, 7};
  const int64_t s_eight[8] = {1, 2, 1, 1, 1, 1, 1, 1};
  g_assert_true(
      mexd_safetensors_writer_add(w, "f32", MEXD_ST_F32, 2, s_f32, f32, sizeof f32, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "f16", MEXD_ST_F16, 1, s_f16, f16, sizeof f16, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "bf16", MEXD_ST_BF16, 1, s_bf16, bf16, sizeof bf16, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "i64", MEXD_ST_I64, 2, s_i64, i64, sizeof i64, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "i32", MEXD_ST_I32, 1, s_i32, i32, sizeof i32, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "scalar", MEXD_ST_F32, 0, NULL, &scalar, 4, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "four", MEXD_ST_F32, 4, s_four, four, sizeof four, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "empty", MEXD_ST_F16, 2, s_empty, NULL, 0, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "eight", MEXD_ST_I32, 8, s_eight, i32, sizeof i32, &error));
  g_assert_no_error(error);
  mexd_safetensors_writer_set_metadata(w, "format", "pt");
  mexd_safetensors_writer_set_metadata(w, "removed", "x");
  mexd_safetensors_writer_set_metadata(w, "removed", NULL);
  mexd_safetensors_writer_set_metadata(w, "a key", "first");
  mexd_safetensors_writer_set_metadata(w, "a key", "second");

  g_autofree char *path = tmp_path("roundtrip.safetensors");
  g_assert_true(mexd_safetensors_writer_write(w, path, &error));
  g_assert_no_error(error);

  /* the file is what to_bytes gives, its data starts at a multiple of 8 */
  g_autoptr(GBytes) mem = writer_bytes(w);
  g_autofree char *contents = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
  g_assert_cmpuint(len, ==, g_bytes_get_size(mem));
  g_assert_true(memcmp(contents, g_bytes_get_data(mem, NULL), len) == 0);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | (guint8)contents[i];
  g_assert_cmpuint(hlen % 8, ==, 0);
  g_assert_cmpuint(8 + hlen + sizeof f32 + sizeof f16 + sizeof bf16 + sizeof i64 + sizeof i32 + 4 +
                       sizeof four + sizeof i32,
                   ==, len);

  for (int pass = 0; pass < 2; pass++) {
    g_autoptr(MexdSafetensors) st = pass == 0 ? mexd_safetensors_open(path, &error)
                                              : mexd_safetensors_new_from_bytes(mem, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, 9);
    /* index is in data order, which is the order added */
    const char *order[] = {"f32", "f16", "bf16", "i64", "i32", "scalar", "four", "empty", "eight"};
    const char *prev_end = NULL;
    for (guint i = 0; i < 9; i++) {
      const MexdStTensor *t = mexd_safetensors_index(st, i);
      g_assert_cmpstr(t->name, ==, order[i]);
      g_assert_true(mexd_safetensors_find(st, order[i]) == t);
      if (prev_end) /* back to back, no gaps */
        g_assert_true((const char *)t->data == prev_end);
      prev_end = (const char *)t->data + t->nbytes;
    }
    g_assert_null(mexd_safetensors_index(st, 9));
    g_assert_null(mexd_safetensors_find(st, "nope"));

    const MexdStTensor *t = mexd_safetensors_find(st, "f32");
    g_assert_cmpint(t->dtype, ==, MEXD_ST_F32);
    assert_shape(t, 2, s_f32);
    g_assert_cmpuint(t->nbytes, ==, sizeof f32);
    g_assert_true(memcmp(t->data, f32, sizeof f32) == 0);
    t = mexd_safetensors_find(st, "f16");
    g_assert_cmpint(t->dtype, ==, MEXD_ST_F16);
    assert_shape(t, 1, s_f16);
    g_assert_true(memcmp(t->data, f16, sizeof f16) == 0);
    t = mexd_safetensors_find(st, "bf16");
    g_assert_cmpint(t->dtype, ==, MEXD_ST_BF16);
    assert_shape(t, 1, s_bf16);
    g_assert_true(memcmp(t->data, bf16, sizeof bf16) == 0);
    t = mexd_safetensors_find(st, "i64");
    g_assert_cmpint(t->dtype, ==, MEXD_ST_I64);
    assert_shape(t, 2, s_i64);
    g_assert_true(memcmp(t->data, i64, sizeof i64) == 0);
    t = mexd_safetensors_find(st, "i32");
    g_assert_cmpint(t->dtype, ==, MEXD_ST_I32);
    g_assert_true(memcmp(t->data, i32, sizeof i32) == 0);
    t = mexd_safetensors_find(st, "scalar");
    g_assert_cmpint(t->ndim, ==, 0);
    g_assert_cmpuint(t->nbytes, ==, 4);
    g_assert_true(memcmp(t->data, &scalar, 4) == 0);
    t = mexd_safetensors_find(st, "four");
    assert_shape(t, 4, s_four);
    g_assert_true(memcmp(t->data, four, sizeof four) == 0);
    t = mexd_safetensors_find(st, "empty");
    assert_shape(t, 2, s_empty);
    g_assert_cmpuint(t->nbytes, ==, 0);
    t = mexd_safetensors_find(st, "eight");
    assert_shape(t, 8, s_eight);

    g_assert_cmpstr(mexd_safetensors_metadata(st, "format"), ==, "pt");
    g_assert_cmpstr(mexd_safetensors_metadata(st, "a key"), ==, "second");
    g_assert_null(mexd_safetensors_metadata(st, "removed"));
    g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
    g_assert_cmpuint(g_strv_length(keys), ==, 2);
    g_assert_cmpstr(keys[0], ==, "a key");
    g_assert_cmpstr(keys[1], ==, "format");
  }
}

static void test_roundtrip_empty(void)
{
  GError *error = NULL;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  g_autoptr(GBytes) b = writer_bytes(w);
  /* "{}" padded to 8 bytes */
  g_assert_cmpuint(g_bytes_get_size(b), ==, 16);
  g_assert_true(memcmp((const char *)g_bytes_get_data(b, NULL) + 8, "{}      ", 8) == 0);
  g_autofree char *path = tmp_path("empty.safetensors");
  g_assert_true(mexd_safetensors_writer_write(w, path, &error));
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, 0);
  g_assert_null(mexd_safetensors_index(st, 0));
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
  g_assert_nonnull(keys);
  g_assert_null(keys[0]);
  g_assert_null(mexd_safetensors_metadata(st, "format"));
  g_assert_cmpstr(mexd_safetensors_name(st), ==, path);

  /* metadata only */
  mexd_safetensors_writer_set_metadata(w, "k", "v");
  g_autoptr(GBytes) b2 = writer_bytes(w);
  g_autoptr(MexdSafetensors) st2 = mexd_safetensors_new_from_bytes(b2, "m", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(mexd_safetensors_n_tensors(st2), ==, 0);
  g_assert_cmpstr(mexd_safetensors_metadata(st2, "k"), ==, "v");
}

/* Names and metadata that need escaping in JSON survive. */
static void test_roundtrip_names(void)
{
  GError *error = NULL;
  const char *names[] = {"a\"b",
                         "back\\slash",
                         "new\nline",
                         "tab\there",
                         "\xc3\xa9t\xc3\xa9",
                         "\xf0\x9f\x98\x80",
                         "",
                         "ctl\x01",
                         "slash/",
                         "__metadata",
                         " "};
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    int32_t v = (int32_t)i;
    g_assert_true(mexd_safetensors_writer_add(w, names[i], MEXD_ST_I32, 0, NULL, &v, 4, &error));
    mexd_safetensors_writer_set_metadata(w, names[i], names[(i + 1) % G_N_ELEMENTS(names)]);
  }
  g_autoptr(GBytes) b = writer_bytes(w);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, "names", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, G_N_ELEMENTS(names));
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    const MexdStTensor *t = mexd_safetensors_find(st, names[i]);
    g_assert_nonnull(t);
    int32_t v;
    memcpy(&v, t->data, 4);
    g_assert_cmpint(v, ==, (int32_t)i);
    g_assert_cmpstr(mexd_safetensors_metadata(st, names[i]), ==,
                    names[(i + 1) % G_N_ELEMENTS(names)]);
  }
}

static void test_add_tensor(void)
{
  GError *error = NULL;
  const int64_t shape[3] = {2, 1, 3};
  const float v[6] = {0.5f, -1.0f, 2.0f, 65504.0f, 1e-4f, -3.0f};
  g_autoptr(MexdTensor) a = mexd_tensor_new_from_f32(cpu, MEXD_DTYPE_F32, 3, shape, v, &error);
  g_autoptr(MexdTensor) h = mexd_tensor_new_from_f32(cpu, MEXD_DTYPE_F16, 3, shape, v, &error);
  g_autoptr(MexdTensor) ix = mexd_tensor_new(cpu, MEXD_DTYPE_I32, 3, shape, &error);
  const int32_t iv[6] = {1, -2, 3, INT32_MAX, INT32_MIN, 0};
  g_assert_true(mexd_tensor_write(ix, iv, sizeof iv, &error));
  g_assert_no_error(error);

  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  g_assert_true(mexd_safetensors_writer_add_tensor(w, "a", a, &error));
  g_assert_true(mexd_safetensors_writer_add_tensor(w, "h", h, &error));
  g_assert_true(mexd_safetensors_writer_add_tensor(w, "ix", ix, &error));
  g_assert_no_error(error);
  g_assert_false(mexd_safetensors_writer_add_tensor(w, "a", a, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "'a'", "add_tensor duplicate");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add_tensor(w, "null", NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "null", "add_tensor NULL");
  error = NULL;

  g_autoptr(GBytes) b = writer_bytes(w);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, "t", &error);
  g_assert_no_error(error);
  g_assert_cmpint(mexd_safetensors_find(st, "a")->dtype, ==, MEXD_ST_F32);
  g_assert_cmpint(mexd_safetensors_find(st, "h")->dtype, ==, MEXD_ST_F16);
  g_assert_cmpint(mexd_safetensors_find(st, "ix")->dtype, ==, MEXD_ST_I32);
  assert_shape(mexd_safetensors_find(st, "h"), 3, shape);

  g_autoptr(MexdTensor) a2 = mexd_safetensors_load(st, "a", cpu, MEXD_DTYPE_F32, &error);
  g_autoptr(MexdTensor) h2 = mexd_safetensors_load(st, "h", cpu, MEXD_DTYPE_F16, &error);
  g_autoptr(MexdTensor) ix2 = mexd_safetensors_load(st, "ix", cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(a2, 3, shape);
  g_assert_true(memcmp(mexd_tensor_host_data(a2), mexd_tensor_host_data(a), 24) == 0);
  g_assert_true(memcmp(mexd_tensor_host_data(h2), mexd_tensor_host_data(h), 12) == 0);
  g_assert_true(memcmp(mexd_tensor_host_data(ix2), iv, 24) == 0);
}

/* ---- loading ---- */

static void test_load_conversions(void)
{
  GError *error = NULL;
  /* every bf16 and f16 bit pattern */
  uint16_t *all = g_new(uint16_t, 65536);
  for (int i = 0; i < 65536; i++)
    all[i] = (uint16_t)i;
  const int64_t s_all[2] = {256, 256};
  const float f32[5] = {1.0f, 1.00048828125f, 65520.0f, -1e-8f, 0.1f};
  const int64_t s5[1] = {5};
  const int64_t i64[5] = {0, -1, INT32_MAX, INT32_MIN, 12345};
  const int64_t i64_hi[2] = {1, (int64_t)INT32_MAX + 1};
  const int64_t i64_lo[3] = {1, 2, (int64_t)INT32_MIN - 1};
  const int32_t i32[5] = {5, 4, 3, 2, 1};
  const int64_t s2[1] = {2}, s3[1] = {3};
  const int64_t s5d[5] = {1, 2, 1, 1, 1};
  const float s_val = -7.25f;
  const uint16_t bf_scalar = 0x4049; /* 3.140625 */

  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  g_assert_true(
      mexd_safetensors_writer_add(w, "bf16", MEXD_ST_BF16, 2, s_all, all, 131072, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "f16", MEXD_ST_F16, 2, s_all, all, 131072, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "f32", MEXD_ST_F32, 1, s5, f32, sizeof f32, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "i64", MEXD_ST_I64, 1, s5, i64, sizeof i64, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "i64hi", MEXD_ST_I64, 1, s2, i64_hi, 16, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "i64lo", MEXD_ST_I64, 1, s3, i64_lo, 24, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "i32", MEXD_ST_I32, 1, s5, i32, sizeof i32, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "five", MEXD_ST_F32, 5, s5d, f32, 8, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "empty", MEXD_ST_F32, 1, (int64_t[]){0}, NULL, 0, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "scalar", MEXD_ST_F32, 0, NULL, &s_val, 4, &error));
  g_assert_true(
      mexd_safetensors_writer_add(w, "bfscalar", MEXD_ST_BF16, 0, NULL, &bf_scalar, 2, &error));
  g_assert_no_error(error);
  g_autoptr(GBytes) b = writer_bytes(w);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, "conv.safetensors", &error);
  g_assert_no_error(error);

  /* BF16 -> f32 exact: the bits move up 16 */
  g_autoptr(MexdTensor) t = mexd_safetensors_load(st, "bf16", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(t, 2, s_all);
  const float *got = mexd_tensor_host_data(t);
  for (int i = 0; i < 65536; i++)
    if (f32_bits(got[i]) != (uint32_t)i << 16)
      g_error("bf16 0x%04x -> 0x%08x", i, f32_bits(got[i]));
  g_clear_pointer(&t, mexd_tensor_unref);

  /* BF16 -> f16: through f32, rounded */
  t = mexd_safetensors_load(st, "bf16", cpu, MEXD_DTYPE_F16, &error);
  g_assert_no_error(error);
  const uint16_t *goth = mexd_tensor_host_data(t);
  for (int i = 0; i < 65536; i++)
    g_assert_cmpuint(goth[i], ==, mexd_f32_to_f16(bits_f32((uint32_t)i << 16)));
  g_clear_pointer(&t, mexd_tensor_unref);

  /* F16 -> f32 exact (NaNs compared by bits) */
  t = mexd_safetensors_load(st, "f16", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  got = mexd_tensor_host_data(t);
  for (int i = 0; i < 65536; i++)
    g_assert_cmpuint(f32_bits(got[i]), ==, f32_bits(mexd_f16_to_f32((uint16_t)i)));
  g_assert_cmpfloat(got[0x3c00], ==, 1.0f);
  g_assert_cmpfloat(got[0x7bff], ==, 65504.0f);
  g_assert_cmpfloat(got[0x0001], ==, 0x1p-24f);
  g_assert_true(isinf(got[0xfc00]) && got[0xfc00] < 0);
  g_clear_pointer(&t, mexd_tensor_unref);

  /* F16 -> f16 is a copy */
  t = mexd_safetensors_load(st, "f16", cpu, MEXD_DTYPE_F16, &error);
  g_assert_no_error(error);
  g_assert_true(memcmp(mexd_tensor_host_data(t), all, 131072) == 0);
  g_clear_pointer(&t, mexd_tensor_unref);

  /* F32 -> f32 copy, F32 -> f16 rounded */
  t = mexd_safetensors_load(st, "f32", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  g_assert_true(memcmp(mexd_tensor_host_data(t), f32, sizeof f32) == 0);
  g_clear_pointer(&t, mexd_tensor_unref);
  t = mexd_safetensors_load(st, "f32", cpu, MEXD_DTYPE_F16, &error);
  g_assert_no_error(error);
  goth = mexd_tensor_host_data(t);
  g_assert_cmpuint(goth[0], ==, 0x3c00);
  g_assert_cmpuint(goth[1], ==, 0x3c00); /* a tie, to even */
  g_assert_cmpuint(goth[2], ==, 0x7c00); /* overflow to inf */
  for (int i = 0; i < 5; i++)
    g_assert_cmpuint(goth[i], ==, mexd_f32_to_f16(f32[i]));
  g_clear_pointer(&t, mexd_tensor_unref);

  /* I64 -> i32 in range, I32 -> i32 */
  t = mexd_safetensors_load(st, "i64", cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  const int32_t *goti = mexd_tensor_host_data(t);
  for (int i = 0; i < 5; i++)
    g_assert_cmpint(goti[i], ==, i64[i]);
  g_clear_pointer(&t, mexd_tensor_unref);
  t = mexd_safetensors_load(st, "i32", cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  g_assert_true(memcmp(mexd_tensor_host_data(t), i32, sizeof i32) == 0);
  g_clear_pointer(&t, mexd_tensor_unref);

  /* scalars load as [1] */
  const int64_t one[1] = {1};
  t = mexd_safetensors_load(st, "scalar", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(t, 1, one);
  g_assert_cmpfloat(*(float *)mexd_tensor_host_data(t), ==, -7.25f);
  g_clear_pointer(&t, mexd_tensor_unref);
  t = mexd_safetensors_load(st, "bfscalar", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(t, 1, one);
  g_assert_cmpfloat(*(float *)mexd_tensor_host_data(t), ==, 3.140625f);
  g_clear_pointer(&t, mexd_tensor_unref);

  /* errors */
  struct {
    const char *name;
    MexdDType want;
    int code;
    const char *contains;
  } bad[] = {
      {"i64hi", MEXD_DTYPE_I32, MEXD_ERROR_DTYPE, "2147483648"},
      {"i64lo", MEXD_DTYPE_I32, MEXD_ERROR_DTYPE, "-2147483649"},
      {"f32", MEXD_DTYPE_I32, MEXD_ERROR_DTYPE, "'f32'"},
      {"i64", MEXD_DTYPE_F32, MEXD_ERROR_DTYPE, "'i64'"},
      {"i32", MEXD_DTYPE_F16, MEXD_ERROR_DTYPE, "'i32'"},
      {"five", MEXD_DTYPE_F32, MEXD_ERROR_UNSUPPORTED, "'five'"},
      {"empty", MEXD_DTYPE_F32, MEXD_ERROR_UNSUPPORTED, "'empty'"},
      {"absent", MEXD_DTYPE_F32, MEXD_ERROR_NOT_FOUND, "'absent'"},
      {"f32", (MexdDType)17, MEXD_ERROR_DTYPE, "'f32'"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    t = mexd_safetensors_load(st, bad[i].name, cpu, bad[i].want, &error);
    g_assert_null(t);
    g_assert_nonnull(error);
    g_assert_true(strstr(error->message, "conv.safetensors") != NULL);
    expect_error(error, bad[i].code, bad[i].contains, bad[i].name);
    error = NULL;
  }
  t = mexd_safetensors_load(st, "f32", NULL, MEXD_DTYPE_F32, &error);
  g_assert_null(t);
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "backend", "NULL backend");
  error = NULL;
  t = mexd_safetensors_load(NULL, "f32", cpu, MEXD_DTYPE_F32, &error);
  g_assert_null(t);
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL file");
  g_free(all);
}

/* Loading onto a vulkan device too, when there is one (the paths without host data). */
static void test_load_other_backends(void)
{
  g_auto(GStrv) specs = mexd_backend_list();
  GError *error = NULL;
  const float f32[4] = {1.0f, -2.0f, 0.5f, 3.0f};
  const uint16_t bf[4] = {0x3f80, 0xc000, 0x3f00, 0x4040};
  const int64_t i64[4] = {1, -2, 3, -4};
  const int64_t s[2] = {2, 2};
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  g_assert_true(mexd_safetensors_writer_add(w, "f32", MEXD_ST_F32, 2, s, f32, 16, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "bf", MEXD_ST_BF16, 2, s, bf, 8, &error));
  g_assert_true(mexd_safetensors_writer_add(w, "i64", MEXD_ST_I64, 2, s, i64, 32, &error));
  g_autoptr(GBytes) b = writer_bytes(w);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, "dev", &error);
  g_assert_no_error(error);
  int n = 0;
  for (char **sp = specs; *sp; sp++) {
    if (strcmp(*sp, "cpu") == 0)
      continue;
    g_autoptr(MexdBackend) be = mexd_backend_new(*sp, &error);
    if (!be) {
      g_test_message("%s: %s", *sp, error->message);
      g_clear_error(&error);
      continue;
    }
    for (int k = 0; k < 3; k++) {
      const char *name = k == 0 ? "f32" : k == 1 ? "bf" : "i64";
      MexdDType want = k == 2 ? MEXD_DTYPE_I32 : MEXD_DTYPE_F32;
      g_autoptr(MexdTensor) t = mexd_safetensors_load(st, name, be, want, &error);
      g_assert_no_error(error);
      int32_t out[4];
      g_assert_true(mexd_tensor_read(t, out, 16, &error));
      for (int i = 0; i < 4; i++) {
        if (k == 2)
          g_assert_cmpint(out[i], ==, i64[i]);
        else
          g_assert_cmpfloat(bits_f32((uint32_t)out[i]), ==, f32[i]);
      }
      /* and back through the writer */
      g_autoptr(MexdSafetensorsWriter) w2 = mexd_safetensors_writer_new();
      g_assert_true(mexd_safetensors_writer_add_tensor(w2, "x", t, &error));
      g_assert_no_error(error);
    }
    n++;
  }
  if (n == 0)
    g_test_skip("no backend besides cpu");
}

/* ---- fixtures from make_safetensors.py ---- */

static MexdSafetensors *open_fixture(const char *name)
{
  g_autofree char *dir = mexd_test_fixture_dir("safetensors");
  if (!dir)
    g_error("tests/fixtures/safetensors not found (set G_TEST_SRCDIR to the tests directory)");
  g_autofree char *path = g_build_filename(dir, name, NULL);
  GError *error = NULL;
  MexdSafetensors *st = mexd_safetensors_open(path, &error);
  g_assert_no_error(error);
  return st;
}

static void test_fixture_mixed(void)
{
  GError *error = NULL;
  g_autoptr(MexdSafetensors) st = open_fixture("mixed.safetensors");
  const char *quoted = "x.y/z \"q\" \xc3\xa9";
  const char *order[] = {"half", "weight", "bf", "idx", "scalar", "big", quoted};
  g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, G_N_ELEMENTS(order));
  for (guint i = 0; i < G_N_ELEMENTS(order); i++)
    g_assert_cmpstr(mexd_safetensors_index(st, i)->name, ==, order[i]);

  /* the data buffer starts at an odd address, so "weight" is misaligned for floats */
  const MexdStTensor *wt = mexd_safetensors_find(st, "weight");
  g_assert_cmpint(wt->dtype, ==, MEXD_ST_F32);
  g_assert_cmpuint((guintptr)wt->data % 4, !=, 0);

  const int64_t s3[1] = {3}, s22[2] = {2, 2}, s23[2] = {2, 3}, s4[1] = {4}, s12[2] = {1, 2},
                one[1] = {1};
  g_autoptr(MexdTensor) half = mexd_safetensors_load(st, "half", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(half, 1, s3);
  const float *f = mexd_tensor_host_data(half);
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_cmpfloat(f[1], ==, 65504.0f);
  g_assert_cmpfloat(f[2], ==, 0x1p-24f);

  g_autoptr(MexdTensor) weight = mexd_safetensors_load(st, "weight", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(weight, 2, s22);
  f = mexd_tensor_host_data(weight);
  g_assert_cmpfloat(f[0], ==, 1.5f);
  g_assert_cmpfloat(f[1], ==, -2.0f);
  g_assert_cmpfloat(f[2], ==, 0.1f);
  g_assert_cmpfloat(f[3], ==, 1e-3f);

  g_autoptr(MexdTensor) bf = mexd_safetensors_load(st, "bf", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(bf, 2, s23);
  f = mexd_tensor_host_data(bf);
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_cmpfloat(f[1], ==, -2.5f);
  g_assert_cmpfloat(f[2], ==, 0.15625f);
  g_assert_cmpfloat(f[3], ==, 0.333984375f);
  g_assert_cmpuint(f32_bits(f[4]), ==, 0x80000000u); /* -0 */
  g_assert_cmpfloat(f[5], ==, 0x1.fep+127f);

  g_autoptr(MexdTensor) bfh = mexd_safetensors_load(st, "bf", cpu, MEXD_DTYPE_F16, &error);
  g_assert_no_error(error);
  const uint16_t *h = mexd_tensor_host_data(bfh);
  g_assert_cmpuint(h[0], ==, 0x3c00);
  g_assert_cmpuint(h[1], ==, 0xc100);
  g_assert_cmpuint(h[5], ==, 0x7c00); /* beyond f16: inf */

  g_autoptr(MexdTensor) idx = mexd_safetensors_load(st, "idx", cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(idx, 1, s4);
  const int32_t *ix = mexd_tensor_host_data(idx);
  g_assert_cmpint(ix[0], ==, 0);
  g_assert_cmpint(ix[1], ==, -1);
  g_assert_cmpint(ix[2], ==, INT32_MAX);
  g_assert_cmpint(ix[3], ==, INT32_MIN);

  g_autoptr(MexdTensor) sc = mexd_safetensors_load(st, "scalar", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(sc, 1, one);
  g_assert_cmpfloat(*(const float *)mexd_tensor_host_data(sc), ==, 3.25f);

  g_autoptr(MexdTensor) q = mexd_safetensors_load(st, quoted, cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(q, 2, s12);
  ix = mexd_tensor_host_data(q);
  g_assert_cmpint(ix[0], ==, 7);
  g_assert_cmpint(ix[1], ==, -8);

  /* "big" holds 2^40 */
  MexdTensor *big = mexd_safetensors_load(st, "big", cpu, MEXD_DTYPE_I32, &error);
  g_assert_null(big);
  g_assert_nonnull(error);
  g_assert_true(strstr(error->message, "mixed.safetensors") != NULL);
  expect_error(error, MEXD_ERROR_DTYPE, "1099511627776", "fixture big");
  error = NULL;

  g_assert_cmpstr(mexd_safetensors_metadata(st, "format"), ==, "pt");
  g_assert_cmpstr(mexd_safetensors_metadata(st, "note"), ==, "made by make_safetensors.py");
  g_assert_cmpstr(mexd_safetensors_metadata(st, "emoji"), ==, "\xe2\x9c\x93");
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
  g_assert_cmpuint(g_strv_length(keys), ==, 3);
  g_assert_cmpstr(keys[0], ==, "emoji");
  g_assert_cmpstr(keys[1], ==, "format");
  g_assert_cmpstr(keys[2], ==, "note");
}

static void test_fixture_four_d(void)
{
  GError *error = NULL;
  g_autoptr(MexdSafetensors) st = open_fixture("four_d.safetensors");
  g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, 3);
  g_assert_cmpstr(mexd_safetensors_index(st, 0)->name, ==, "t4");
  g_assert_cmpstr(mexd_safetensors_index(st, 1)->name, ==, "empty");
  g_assert_cmpstr(mexd_safetensors_index(st, 2)->name, ==, "ints");
  const int64_t s4[4] = {2, 3, 2, 2}, s03[2] = {0, 3}, s3[1] = {3};
  assert_shape(mexd_safetensors_find(st, "empty"), 2, s03);
  g_assert_cmpuint(mexd_safetensors_find(st, "empty")->nbytes, ==, 0);

  g_autoptr(MexdTensor) t4 = mexd_safetensors_load(st, "t4", cpu, MEXD_DTYPE_F32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(t4, 4, s4);
  const float *f = mexd_tensor_host_data(t4);
  for (int i = 0; i < 24; i++)
    g_assert_cmpfloat(f[i], ==, (float)i * 0.5f - 3.0f);
  g_autoptr(MexdTensor) ints = mexd_safetensors_load(st, "ints", cpu, MEXD_DTYPE_I32, &error);
  g_assert_no_error(error);
  assert_tensor_shape(ints, 1, s3);
  const int32_t *ix = mexd_tensor_host_data(ints);
  g_assert_cmpint(ix[0], ==, 1);
  g_assert_cmpint(ix[1], ==, -2);
  g_assert_cmpint(ix[2], ==, INT32_MAX);
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(st);
  g_assert_null(keys[0]);
}

static void test_fixture_metadata_only(void)
{
  g_autoptr(MexdSafetensors) st = open_fixture("metadata_only.safetensors");
  g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, 0);
  g_assert_cmpstr(mexd_safetensors_metadata(st, "format"), ==, "pt");
}

/* ---- validation: one corrupt file per rule ---- */

#define E(n) "{\"t\":{\"dtype\":\"F32\",\"shape\":[" n "],\"data_offsets\":[0,8]}}"

static void test_bad_length(void)
{
  GError *error = NULL;
  /* shorter than 8 bytes */
  for (gsize n = 0; n < 8; n++) {
    g_autoptr(GBytes) b = g_bytes_new("\x02\0\0\0\0\0\0\0", n);
    MexdSafetensors *st = mexd_safetensors_new_from_bytes(b, "short.safetensors", &error);
    g_assert_null(st);
    expect_error(error, MEXD_ERROR_FORMAT, "short.safetensors", "shorter than 8 bytes");
    error = NULL;
  }
  /* header length beyond the file */
  {
    g_autoptr(GBytes) b = g_bytes_new("\x09\0\0\0\0\0\0\0{}      ", 16);
    g_assert_null(mexd_safetensors_new_from_bytes(b, "long.safetensors", &error));
    expect_error(error, MEXD_ERROR_FORMAT, "long.safetensors", "header length beyond the file");
    error = NULL;
  }
  /* absurd header lengths */
  const char *absurd[] = {"\x01\0\0\0\0\0\0\x80{}", "\xff\xff\xff\xff\xff\xff\xff\xff{}",
                          "\x01\0\x40\x06\0\0\0\0{}"};
  for (guint i = 0; i < G_N_ELEMENTS(absurd); i++) {
    g_autoptr(GBytes) b = g_bytes_new(absurd[i], 10);
    g_assert_null(mexd_safetensors_new_from_bytes(b, "absurd.safetensors", &error));
    expect_error(error, MEXD_ERROR_FORMAT, "absurd", "absurd header length");
    error = NULL;
  }
  /* an empty header */
  expect_bad("empty-header", "", 0, MEXD_ERROR_FORMAT, "empty");
  expect_bad("blank-header", "        ", 0, MEXD_ERROR_FORMAT, "empty");
}

static void test_bad_json(void)
{
  expect_bad("not-utf8", "{\"t\xff\":{}}", 0, MEXD_ERROR_FORMAT, "UTF-8");
  expect_bad("overlong-utf8", "{\"\xc0\xaf\":{}}", 0, MEXD_ERROR_FORMAT, "UTF-8");
  expect_bad("not-json", "{\"t\":", 0, MEXD_ERROR_FORMAT, "JSON");
  expect_bad("not-json2", "{\"t\" {}}", 0, MEXD_ERROR_FORMAT, "JSON");
  expect_bad("trailing-comma", "{\"a\":{},}", 0, MEXD_ERROR_FORMAT, "JSON");
  expect_bad("array-root", "[1,2]", 0, MEXD_ERROR_FORMAT, "not a JSON object");
  expect_bad("string-root", "\"x\"", 0, MEXD_ERROR_FORMAT, "not a JSON object");
  expect_bad("number-root", "5", 0, MEXD_ERROR_FORMAT, "not a JSON object");
  expect_bad("unclosed", "{\"a\":{\"b\":{}}", 0, MEXD_ERROR_FORMAT, "not closed");
  expect_bad("unterminated-string", "{\"a", 0, MEXD_ERROR_FORMAT, "unterminated");
  expect_bad("text-after", "{}{}", 0, MEXD_ERROR_FORMAT, "after the end");
  expect_bad("text-after2", "{} x", 0, MEXD_ERROR_FORMAT, "after the end");
  expect_bad("assignment", "var x = {}", 0, MEXD_ERROR_FORMAT, "not a JSON object");
  expect_bad("comment", "{/* c */}", 0, MEXD_ERROR_FORMAT, "unexpected character");
  expect_bad("single-quotes", "{'a':{}}", 0, MEXD_ERROR_FORMAT, "unexpected character");
  expect_bad("control-char", "{\"a\tb\":{}}", 0, MEXD_ERROR_FORMAT, "control character");
  expect_bad("nul-escape", "{\"a\\u0000b\":{}}", 0, MEXD_ERROR_FORMAT, "NUL");
  expect_bad("bad-escape", "{\"a\\xb\":{}}", 0, MEXD_ERROR_FORMAT, "escape");
  expect_bad("bad-u-escape", "{\"a\\u12g4\":{}}", 0, MEXD_ERROR_FORMAT, "escape");
  expect_bad("lone-surrogate", "{\"a\\ud800\":{}}", 0, MEXD_ERROR_FORMAT, "surrogate");
  expect_bad("lone-low-surrogate", "{\"__metadata__\":{\"a\":\"x\\udc00y\"}}", 0, MEXD_ERROR_FORMAT,
             "surrogate");
  expect_bad("high-high-surrogate", "{\"a\\ud800\\ud800\":{}}", 0, MEXD_ERROR_FORMAT, "surrogate");
  expect_bad("high-then-text", "{\"a\\ud800x\":{}}", 0, MEXD_ERROR_FORMAT, "surrogate");
  expect_bad("high-at-end", "{\"a\\ud800", 0, MEXD_ERROR_FORMAT, "surrogate");
  {
    /* a NUL byte in the header (after the object, where padding would be) */
    GError *error = NULL;
    g_autoptr(GBytes) b = make_file("{}\0     ", 8, 0);
    g_assert_null(mexd_safetensors_new_from_bytes(b, "nul-byte.safetensors", &error));
    expect_error(error, MEXD_ERROR_FORMAT, "nul-byte.safetensors", "nul-byte");
  }
  expect_bad("bare-word", "{\"a\":nope}", 0, MEXD_ERROR_FORMAT, "JSON");
  {
    /* deep nesting is refused before json-glib recurses */
    GString *s = g_string_new("{\"a\":");
    for (int i = 0; i < 100000; i++)
      g_string_append_c(s, '[');
    for (int i = 0; i < 100000; i++)
      g_string_append_c(s, ']');
    g_string_append_c(s, '}');
    expect_bad("deep", s->str, 0, MEXD_ERROR_FORMAT, "nests");
    g_string_free(s, TRUE);
  }
  /* a valid header, for contrast: whitespace around the object, escapes */
  expect_good("whitespace",
              " \n{ \"a\\n\\u00e9\\ud83d\\ude00\" : {\"dtype\":\"F32\", \"shape\" : [],"
              " \"data_offsets\":[0,4]} }\r\n\t   ",
              4);
}

static void test_bad_entries(void)
{
  expect_bad("entry-number", "{\"t\":5}", 0, MEXD_ERROR_FORMAT, "'t' is not a JSON object");
  expect_bad("entry-array", "{\"t\":[]}", 0, MEXD_ERROR_FORMAT, "'t' is not a JSON object");
  expect_bad("entry-null", "{\"t\":null}", 0, MEXD_ERROR_FORMAT, "'t'");
  /* dtype */
  expect_bad("no-dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MEXD_ERROR_FORMAT,
             "has no dtype");
  expect_bad("dtype-number", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
             MEXD_ERROR_FORMAT, "not a string");
  expect_bad("dtype-unknown", "{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
             MEXD_ERROR_FORMAT, "F33");
  expect_bad("dtype-lower", "{\"t\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
             MEXD_ERROR_FORMAT, "unknown dtype");
  const char *unsupported[] = {"F64", "U8", "BOOL", "I8", "F8_E4M3"};
  for (guint i = 0; i < G_N_ELEMENTS(unsupported); i++) {
    g_autofree char *json =
        g_strdup_printf("{\"tensor_%s\":{\"dtype\":\"%s\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                        unsupported[i], unsupported[i]);
    g_autofree char *name = g_strdup_printf("tensor_%s", unsupported[i]);
    expect_bad("unsupported", json, 8, MEXD_ERROR_UNSUPPORTED, name);
    expect_bad("unsupported", json, 8, MEXD_ERROR_UNSUPPORTED, unsupported[i]);
  }
  /* shape */
  expect_bad("no-shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, MEXD_ERROR_FORMAT,
             "has no shape");
  expect_bad("shape-string", "{\"t\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}",
             8, MEXD_ERROR_FORMAT, "not an array");
  expect_bad("shape-object", "{\"t\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,8]}}", 8,
             MEXD_ERROR_FORMAT, "not an array");
  expect_bad("dim-negative", E("-2"), 8, MEXD_ERROR_FORMAT, "negative");
  expect_bad("dim-negative2", E("2,-1"), 8, MEXD_ERROR_FORMAT, "negative");
  expect_bad("dim-fraction", E("2.0"), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-exponent", E("2e0"), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-string", E("\"2\""), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-bool", E("true"), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-null", E("null"), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-array", E("[2]"), 8, MEXD_ERROR_FORMAT, "not an integer");
  expect_bad("dim-huge", E("9999999999999999999"), 8, MEXD_ERROR_FORMAT, "digits");
  expect_bad("dim-huge-negative", E("-18446744073709551617"), 8, MEXD_ERROR_FORMAT, "digits");
  expect_bad("nine-dims", E("1,1,1,1,1,1,1,1,2"), 8, MEXD_ERROR_FORMAT, "9 dimensions");
  expect_good("eight-dims", E("1,1,1,1,1,1,1,2"), 8);
  expect_bad("shape-overflow", E("4294967296,4294967296,4294967296"), 8, MEXD_ERROR_FORMAT,
             "overflows");
  expect_bad("shape-overflow2", E("999999999999999999,16"), 8, MEXD_ERROR_FORMAT, "overflows");
  expect_bad("shape-big", E("999999999999999999,999999999999999999"), 8, MEXD_ERROR_FORMAT,
             "overflows");
  expect_bad("shape-mismatch", E("3"), 8, MEXD_ERROR_FORMAT, "need 12");
  expect_bad("shape-zero", E("0,5"), 8, MEXD_ERROR_FORMAT, "need 0");
  /* data_offsets */
  expect_bad("no-offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, MEXD_ERROR_FORMAT,
             "no data_offsets");
  const char *offsets[] = {"[0]",     "[0,8,8]", "[]",        "8",        "\"0,8\"",
                           "[0,8.0]", "[0.0,8]", "[\"0\",8]", "[0,null]", "{\"0\":8}"};
  for (guint i = 0; i < G_N_ELEMENTS(offsets); i++) {
    g_autofree char *json = g_strdup_printf(
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":%s}}", offsets[i]);
    expect_bad("offsets-shape", json, 8, MEXD_ERROR_FORMAT, "not two integers");
  }
  expect_bad("offsets-negative",
             "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-1,-1]}}", 8,
             MEXD_ERROR_FORMAT, "negative");
  expect_bad("offsets-reversed", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
             8, MEXD_ERROR_FORMAT, "end before they begin");
  expect_bad("offsets-beyond", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             7, MEXD_ERROR_FORMAT, "beyond its end");
  expect_bad("offsets-far",
             "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":"
             "[999999999999999990,999999999999999998]}}",
             8, MEXD_ERROR_FORMAT, "beyond its end");
  expect_bad("offsets-huge",
             "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551624]}}",
             8, MEXD_ERROR_FORMAT, "digits");
  expect_bad("nbytes-mismatch", "{\"t\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, MEXD_ERROR_FORMAT, "need 4");
  /* extra keys in an entry are ignored */
  expect_good("extra-key",
              "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":[1,{}]}}", 8);
}

static void test_bad_layout(void)
{
  expect_bad("overlap",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             12, MEXD_ERROR_FORMAT, "overlap");
  expect_bad("same-range",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, MEXD_ERROR_FORMAT, "overlap");
  expect_bad("inside",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
             16, MEXD_ERROR_FORMAT, "overlap");
  expect_bad("empty-inside",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"b\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4]}}",
             16, MEXD_ERROR_FORMAT, "overlap");
  expect_bad("hole",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
             20, MEXD_ERROR_FORMAT, "hole before 'b'");
  expect_bad("hole-first", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
             MEXD_ERROR_FORMAT, "hole before 'a'");
  expect_bad("trailing-bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             9, MEXD_ERROR_FORMAT, "last 1 bytes");
  expect_bad("no-tensors-but-data", "{}", 3, MEXD_ERROR_FORMAT, "last 3 bytes");
  expect_good("no-tensors", "{}", 0);
  /* zero-sized tensors at the boundaries are fine */
  expect_good("empty-tensors",
              "{\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"e2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[8,8]},"
              "\"e3\":{\"dtype\":\"I64\",\"shape\":[0,99999999999],\"data_offsets\":[8,8]},"
              "\"b\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]}}",
              12);
}

static void test_bad_metadata_and_duplicates(void)
{
  expect_bad("metadata-string", "{\"__metadata__\":\"x\"}", 0, MEXD_ERROR_FORMAT,
             "__metadata__ is not a JSON object");
  expect_bad("metadata-array", "{\"__metadata__\":[]}", 0, MEXD_ERROR_FORMAT,
             "__metadata__ is not a JSON object");
  expect_bad("metadata-number", "{\"__metadata__\":{\"k\":1}}", 0, MEXD_ERROR_FORMAT,
             "entry 'k' is not a string");
  expect_bad("metadata-null", "{\"__metadata__\":{\"k\":null}}", 0, MEXD_ERROR_FORMAT, "entry 'k'");
  expect_bad("metadata-object", "{\"__metadata__\":{\"k\":{}}}", 0, MEXD_ERROR_FORMAT, "entry 'k'");
  expect_bad("metadata-bool", "{\"__metadata__\":{\"k\":true}}", 0, MEXD_ERROR_FORMAT, "entry 'k'");
  expect_good("metadata-empty", "{\"__metadata__\":{}}", 0);

  expect_bad("duplicate-tensor",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             16, MEXD_ERROR_FORMAT, "names 'a' twice");
  expect_bad("duplicate-metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
             MEXD_ERROR_FORMAT, "'__metadata__' twice");
  expect_bad("duplicate-key",
             "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, MEXD_ERROR_FORMAT, "key 'dtype' twice");
  expect_bad("duplicate-metadata-key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
             MEXD_ERROR_FORMAT, "key 'k' twice");
  expect_bad("duplicate-nested",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
             "\"x\":{\"y\":1,\"y\":2}}}",
             8, MEXD_ERROR_FORMAT, "twice");
  /* duplicates spelled differently are duplicates too */
  expect_bad("duplicate-escaped",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             16, MEXD_ERROR_FORMAT, "twice");
}

static void test_open_errors(void)
{
  GError *error = NULL;
  g_autofree char *missing = tmp_path("missing.safetensors");
  g_assert_null(mexd_safetensors_open(missing, &error));
  expect_error(error, MEXD_ERROR_IO, missing, "missing file");
  error = NULL;
  g_assert_null(mexd_safetensors_open(tmpdir, &error));
  expect_error(error, MEXD_ERROR_IO, tmpdir, "directory");
  error = NULL;
  g_assert_null(mexd_safetensors_open(NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL path");
  error = NULL;
  g_assert_null(mexd_safetensors_new_from_bytes(NULL, "x", &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL bytes");
  error = NULL;

  /* corrupt files on disk name their path */
  g_autofree char *empty = tmp_path("zero-length.safetensors");
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  g_assert_null(mexd_safetensors_open(empty, &error));
  expect_error(error, MEXD_ERROR_FORMAT, empty, "zero-length file");
  error = NULL;
  g_autofree char *trunc = tmp_path("truncated.safetensors");
  const char tdata[] = "\x40\0\0\0\0\0\0\0{\"a\":{\"dtype\":\"F32\",\"shape\":[2],";
  g_assert_true(g_file_set_contents(trunc, tdata, sizeof tdata - 1, NULL));
  g_assert_null(mexd_safetensors_open(trunc, &error));
  expect_error(error, MEXD_ERROR_FORMAT, trunc, "truncated file");
  error = NULL;
  /* the error is optional */
  g_assert_null(mexd_safetensors_open(trunc, NULL));
  g_assert_null(mexd_safetensors_open(missing, NULL));

  /* NULL-safe accessors */
  mexd_safetensors_free(NULL);
  g_assert_cmpuint(mexd_safetensors_n_tensors(NULL), ==, 0);
  g_assert_null(mexd_safetensors_find(NULL, "x"));
  g_assert_null(mexd_safetensors_index(NULL, 0));
  g_assert_null(mexd_safetensors_metadata(NULL, "x"));
  g_auto(GStrv) keys = mexd_safetensors_metadata_keys(NULL);
  g_assert_null(keys[0]);
}

/* ---- writer errors ---- */

static void test_writer_errors(void)
{
  GError *error = NULL;
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  const float v[4] = {1, 2, 3, 4};
  const int64_t s4[1] = {4}, s2[2] = {2, 2}, neg[1] = {-4};
  const int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
  g_assert_true(mexd_safetensors_writer_add(w, "a", MEXD_ST_F32, 1, s4, v, 16, &error));
  g_assert_no_error(error);

  g_assert_false(mexd_safetensors_writer_add(w, "b", MEXD_ST_F32, 1, s4, v, 12, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "'b'", "nbytes too small");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "b", MEXD_ST_F16, 2, s2, v, 16, &error));
  expect_error(error, MEXD_ERROR_SHAPE, "need 8", "nbytes too large");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "a", MEXD_ST_F32, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "'a'", "duplicate name");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "__metadata__", MEXD_ST_F32, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "__metadata__", "reserved name");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, NULL, MEXD_ST_F32, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL name");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "bad\xff", MEXD_ST_F32, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "UTF-8", "non-UTF-8 name");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", (MexdStDType)9, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "dtype", "bad dtype");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, 9, s9, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "9 dimensions", "9 dims");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, -1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "dimensions", "negative ndim");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, 1, neg, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "negative", "negative dim");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, 1, NULL, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "shape", "NULL shape");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, 1, s4, NULL, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "data", "NULL data");
  error = NULL;
  const int64_t huge[3] = {INT64_MAX, INT64_MAX, 2};
  g_assert_false(mexd_safetensors_writer_add(w, "c", MEXD_ST_F32, 3, huge, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "overflows", "shape overflow");
  error = NULL;
  g_assert_false(mexd_safetensors_writer_add(NULL, "c", MEXD_ST_F32, 1, s4, v, 16, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL writer");
  error = NULL;
  /* failed adds left nothing behind */
  {
    g_autoptr(GBytes) b = writer_bytes(w);
    g_autoptr(MexdSafetensors) st = mexd_safetensors_new_from_bytes(b, "w", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(mexd_safetensors_n_tensors(st), ==, 1);
  }

  /* unwritable destinations */
  g_autofree char *nodir = g_build_filename(tmpdir, "no-such-dir", "x.safetensors", NULL);
  g_assert_false(mexd_safetensors_writer_write(w, nodir, &error));
  expect_error(error, MEXD_ERROR_IO, nodir, "missing directory");
  error = NULL;
  g_autofree char *isdir = tmp_path("a-directory");
  g_assert_cmpint(g_mkdir(isdir, 0755), ==, 0);
  g_assert_false(mexd_safetensors_writer_write(w, isdir, &error));
  expect_error(error, MEXD_ERROR_IO, isdir, "path is a directory");
  error = NULL;
  if (geteuid() != 0) { /* root writes anywhere */
    g_autofree char *ro = tmp_path("read-only");
    g_assert_cmpint(g_mkdir(ro, 0555), ==, 0);
    g_autofree char *in_ro = g_build_filename(ro, "x.safetensors", NULL);
    g_assert_false(mexd_safetensors_writer_write(w, in_ro, &error));
    expect_error(error, MEXD_ERROR_IO, in_ro, "read-only directory");
    error = NULL;
    g_rmdir(ro);
  }
  g_assert_false(mexd_safetensors_writer_write(w, NULL, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, NULL, "NULL path");
  error = NULL;

  /* non-UTF-8 metadata is reported at write time, and the target is left alone */
  g_autofree char *target = tmp_path("keep.safetensors");
  g_assert_true(g_file_set_contents(target, "old", 3, NULL));
  mexd_safetensors_writer_set_metadata(w, "k", "bad\xfe");
  g_assert_false(mexd_safetensors_writer_write(w, target, &error));
  expect_error(error, MEXD_ERROR_INVALID_ARGUMENT, "UTF-8", "non-UTF-8 metadata");
  error = NULL;
  g_autofree char *old = NULL;
  g_assert_true(g_file_get_contents(target, &old, NULL, NULL));
  g_assert_cmpstr(old, ==, "old");
  /* replacing an existing file works */
  mexd_safetensors_writer_set_metadata(w, "k", "good");
  mexd_safetensors_writer_set_metadata(NULL, "k", "v");
  mexd_safetensors_writer_set_metadata(w, NULL, "v");
  g_assert_true(mexd_safetensors_writer_write(w, target, &error));
  g_assert_no_error(error);
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(target, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(mexd_safetensors_metadata(st, "k"), ==, "good");

  /* no temporary files are left in the directory */
  g_autoptr(GDir) d = g_dir_open(tmpdir, 0, NULL);
  const char *entry;
  while ((entry = g_dir_read_name(d)))
    if (entry[0] == '.')
      g_error("temporary file %s left behind", entry);
  mexd_safetensors_writer_free(NULL);
}

/* ---- main ---- */

static void remove_tree(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (!d)
    return;
  const char *name;
  while ((name = g_dir_read_name(d))) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
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
  cpu = mexd_backend_new("cpu", NULL);
  tmpdir = g_dir_make_tmp("mexd-test-st-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  g_test_add_func("/safetensors/roundtrip/dtypes", test_roundtrip_dtypes);
  g_test_add_func("/safetensors/roundtrip/empty", test_roundtrip_empty);
  g_test_add_func("/safetensors/roundtrip/names", test_roundtrip_names);
  g_test_add_func("/safetensors/roundtrip/add-tensor", test_add_tensor);
  g_test_add_func("/safetensors/load/conversions", test_load_conversions);
  g_test_add_func("/safetensors/load/other-backends", test_load_other_backends);
  g_test_add_func("/safetensors/fixture/mixed", test_fixture_mixed);
  g_test_add_func("/safetensors/fixture/four-d", test_fixture_four_d);
  g_test_add_func("/safetensors/fixture/metadata-only", test_fixture_metadata_only);
  g_test_add_func("/safetensors/bad/length", test_bad_length);
  g_test_add_func("/safetensors/bad/json", test_bad_json);
  g_test_add_func("/safetensors/bad/entries", test_bad_entries);
  g_test_add_func("/safetensors/bad/layout", test_bad_layout);
  g_test_add_func("/safetensors/bad/metadata-and-duplicates", test_bad_metadata_and_duplicates);
  g_test_add_func("/safetensors/bad/open", test_open_errors);
  g_test_add_func("/safetensors/writer/errors", test_writer_errors);
  int rc = g_test_run();
  remove_tree(tmpdir);
  g_free(tmpdir);
  mexd_backend_unref(cpu);
  return rc;
}
