/* test-safetensors-fuzz.c: a seeded random-mutation fuzz test of the safetensors reader.
 *
 * Seed files (made here with the writer, plus the fixtures of tests/fixtures/safetensors/ when they
 * are found) are mutated at random: bit flips, bytes set to interesting values, truncation,
 * extension, a new header length, inserted/deleted bytes, numbers of the JSON replaced by huge or
 * negative ones, dtype strings swapped, chunks spliced in from other seeds.  Each mutant is parsed
 * from memory.  A rejected one must carry a GError in MEXD_ERROR naming the file; an accepted one
 * must be consistent (every tensor inside the data, nbytes matching its shape), load onto the cpu
 * backend, and survive a rewrite through the writer.  Nothing may crash or leak (run it under
 * ASan/UBSan too).
 *
 * FUZZ_ITERATIONS (a build option, default 100000) mutants are read; MEXD_FUZZ_ITERATIONS
 * overrides it at run time, MEXD_FUZZ_SEED the seed (printed at the start); MEXD_FUZZ_VERBOSE
 * prints every rejection's message. */
#include "mexd.h"
#include "fixture-dir.h"

#include <string.h>

#ifndef FUZZ_ITERATIONS
#define FUZZ_ITERATIONS 100000
#endif
#define DEFAULT_SEED 0x5afe7e45u
#define FNAME        "fuzz.safetensors"
#define MAX_FILE     (64 * 1024)        /* mutants are kept below this */
#define MAX_LOAD     (16 * 1024 * 1024) /* tensors larger than this are not loaded */

static MexdBackend *cpu;
static GPtrArray *seeds; /* GBytes */

typedef struct {
  guint64 parsed, rejected, loads, load_errors, rewrites;
  guint64 codes[MEXD_ERROR_NOT_FOUND + 1];
} Stats;

/* ---- seeds ---- */

static void add_seed_writer(MexdSafetensorsWriter *w)
{
  GError *error = NULL;
  GBytes *b = mexd_safetensors_writer_to_bytes(w, &error);
  g_assert_no_error(error);
  g_ptr_array_add(seeds, b);
}

static void add_seed_text(const char *json, size_t data_len)
{
  size_t n = strlen(json);
  guint8 *buf = g_malloc0(8 + n + data_len);
  for (int i = 0; i < 8; i++)
    buf[i] = (guint8)((uint64_t)n >> (8 * i));
  memcpy(buf + 8, json, n);
  for (size_t i = 0; i < data_len; i++)
    buf[8 + n + i] = (guint8)(i * 37 + 11);
  g_ptr_array_add(seeds, g_bytes_new_take(buf, 8 + n + data_len));
}

static void make_seeds(void)
{
  GError *error = NULL;
  seeds = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);

  /* every dtype, metadata, a scalar and a 4-D tensor */
  {
    g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
    float f[24];
    uint16_t h[6];
    int64_t l[3] = {1, -7, 1LL << 33};
    int32_t i[2] = {-3, 4};
    for (int k = 0; k < 24; k++)
      f[k] = (float)k * 0.25f - 2.0f;
    for (int k = 0; k < 6; k++)
      h[k] = (uint16_t)(0x3c00 + k * 0x111);
    const int64_t s4[4] = {2, 3, 2, 2}, s6[2] = {2, 3}, s3[1] = {3}, s2[1] = {2};
    g_assert_true(mexd_safetensors_writer_add(w, "f32", MEXD_ST_F32, 4, s4, f, sizeof f, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "f16", MEXD_ST_F16, 2, s6, h, sizeof h, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "bf16", MEXD_ST_BF16, 2, s6, h, 12, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "i64", MEXD_ST_I64, 1, s3, l, sizeof l, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "i32", MEXD_ST_I32, 1, s2, i, sizeof i, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "s", MEXD_ST_F32, 0, NULL, f, 4, &error));
    mexd_safetensors_writer_set_metadata(w, "format", "pt");
    mexd_safetensors_writer_set_metadata(w, "version", "12");
    g_assert_no_error(error);
    add_seed_writer(w);
  }
  /* many small tensors */
  {
    g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
    for (int k = 0; k < 24; k++) {
      g_autofree char *name = g_strdup_printf("layer.%d.weight", k);
      float v[3] = {(float)k, -(float)k, 0.5f};
      const int64_t s[1] = {k % 3 + 1};
      g_assert_true(mexd_safetensors_writer_add(w, name, k % 2 ? MEXD_ST_F32 : MEXD_ST_I32, 1, s, v,
                                                (size_t)s[0] * 4, &error));
    }
    add_seed_writer(w);
  }
  /* empty tensors, an 8-D one */
  {
    g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
    const int64_t z[2] = {0, 4}, e8[8] = {1, 1, 2, 1, 1, 1, 1, 1}, one[1] = {1};
    const uint16_t v[2] = {0x7f80, 0xff80};
    g_assert_true(mexd_safetensors_writer_add(w, "z", MEXD_ST_F16, 2, z, NULL, 0, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "e8", MEXD_ST_BF16, 8, e8, v, 4, &error));
    g_assert_true(mexd_safetensors_writer_add(w, "one", MEXD_ST_BF16, 1, one, v, 2, &error));
    add_seed_writer(w);
  }
  /* no tensors; metadata only */
  {
    g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
    add_seed_writer(w);
    mexd_safetensors_writer_set_metadata(w, "k", "v");
    mexd_safetensors_writer_set_metadata(w, "\xc3\xa9\"\\", "x\ny");
    add_seed_writer(w);
  }
  /* hand-written headers: whitespace, unknown keys, unsorted offsets */
  add_seed_text(" { \"b\" : { \"dtype\" : \"F16\" , \"shape\" : [ 2 , 1 ] , \"data_offsets\" : "
                "[ 4 , 8 ] } ,\n \"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4],"
                "\"extra\":[1,{\"x\":null},true,-2.5e3]} }   ",
                8);
  add_seed_text(
      "{\"__metadata__\":{\"a\":\"\\u00e9\\n\\\"\"},\"t\":{\"dtype\":\"F32\",\"shape\":[],"
      "\"data_offsets\":[0,4]}}",
      4);

  g_autofree char *dir = mexd_test_fixture_dir("safetensors");
  const char *fixtures[] = {"mixed.safetensors", "four_d.safetensors", "metadata_only.safetensors"};
  int found = 0;
  for (guint k = 0; dir && k < G_N_ELEMENTS(fixtures); k++) {
    g_autofree char *path = g_build_filename(dir, fixtures[k], NULL);
    char *contents = NULL;
    gsize len = 0;
    if (g_file_get_contents(path, &contents, &len, NULL)) {
      g_ptr_array_add(seeds, g_bytes_new_take(contents, len));
      found++;
    }
  }
  if (found == 0)
    g_printerr("# fixtures not found: fuzzing the built-in seeds only\n");

  /* every seed parses */
  for (guint k = 0; k < seeds->len; k++) {
    MexdSafetensors *st =
        mexd_safetensors_new_from_bytes(g_ptr_array_index(seeds, k), "seed", &error);
    if (!st)
      g_error("seed %u does not parse: %s", k, error->message);
    mexd_safetensors_free(st);
  }
}

/* ---- mutations ---- */

static uint64_t get_hlen(const GByteArray *a)
{
  if (a->len < 8)
    return 0;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = (n << 8) | a->data[i];
  return n;
}

static void set_hlen(GByteArray *a, uint64_t n)
{
  if (a->len < 8)
    return;
  for (int i = 0; i < 8; i++)
    a->data[i] = (guint8)(n >> (8 * i));
}

/* The header region [8, 8+hlen) clamped to the array. */
static void header_region(const GByteArray *a, guint *start, guint *len)
{
  uint64_t h = get_hlen(a);
  *start = MIN(8u, a->len);
  *len = (guint)MIN(h, (uint64_t)(a->len - *start));
}

/* A random position, in the header three times out of four. */
static guint pick_pos(GRand *r, const GByteArray *a)
{
  guint hs, hl;
  header_region(a, &hs, &hl);
  if (hl > 0 && g_rand_int_range(r, 0, 4) != 0)
    return hs + (guint)g_rand_int_range(r, 0, (gint32)hl);
  return (guint)g_rand_int_range(r, 0, (gint32)a->len);
}

/* Replaces [pos, pos+len) by `text`; when the range is inside the header, the header length
 * follows (most of the time) so that the file stays framed. */
static void replace_range(GRand *r, GByteArray *a, guint pos, guint len, const char *text,
                          guint tlen)
{
  guint hs, hl;
  header_region(a, &hs, &hl);
  gboolean in_header = pos >= hs && pos + len <= hs + hl;
  g_byte_array_remove_range(a, pos, len);
  /* GByteArray has no insert: grow, then move the tail */
  guint old = a->len;
  g_byte_array_set_size(a, old + tlen);
  memmove(a->data + pos + tlen, a->data + pos, old - pos);
  memcpy(a->data + pos, text, tlen);
  if (in_header && g_rand_int_range(r, 0, 8) != 0)
    set_hlen(a, get_hlen(a) + tlen - len);
}

static const char *const interesting_numbers[] = {
    "0",
    "1",
    "-1",
    "-0",
    "7",
    "8",
    "255",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "999999999999999999",
    "-999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e400",
    "2.5",
    "0.0",
    "1E3",
    "0x10",
    "00",
    "-",
    "1.",
    ".5",
    "true",
    "null",
    "[]",
    "{}",
    "\"1\"",
};

static const char *const interesting_strings[] = {
    "\"F32\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I64\"",
    "\"I32\"",
    "\"F64\"",
    "\"U8\"",
    "\"BOOL\"",
    "\"\"",
    "\"__metadata__\"",
    "\"dtype\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"x\\udc00y\"",
    "\"\\ud83d\\ude00\"",
    "\"\\\"\"",
    "\"\xc3\xa9\"",
    "\"a\"",
};

static void mutate_number(GRand *r, GByteArray *a)
{
  guint hs, hl;
  header_region(a, &hs, &hl);
  /* collect the digit runs of the header (with a leading '-') */
  guint starts[256], lens[256], n = 0;
  for (guint i = hs; i < hs + hl && n < 256;) {
    if (a->data[i] >= '0' && a->data[i] <= '9') {
      guint s = i;
      if (s > hs && a->data[s - 1] == '-')
        s--;
      while (i < hs + hl && a->data[i] >= '0' && a->data[i] <= '9')
        i++;
      starts[n] = s;
      lens[n] = i - s;
      n++;
    } else {
      i++;
    }
  }
  if (n == 0)
    return;
  guint k = (guint)g_rand_int_range(r, 0, (gint32)n);
  char buf[32];
  const char *text;
  if (g_rand_boolean(r)) {
    text = interesting_numbers[g_rand_int_range(r, 0, G_N_ELEMENTS(interesting_numbers))];
  } else { /* the old value nudged */
    g_autofree char *old = g_strndup((const char *)a->data + starts[k], lens[k]);
    /* wrapping arithmetic: the old value may be INT64_MAX */
    gint64 v =
        (gint64)((guint64)g_ascii_strtoll(old, NULL, 10) + (guint64)g_rand_int_range(r, -9, 10));
    g_snprintf(buf, sizeof buf, "%" G_GINT64_FORMAT, v);
    text = buf;
  }
  replace_range(r, a, starts[k], lens[k], text, (guint)strlen(text));
}

static void mutate_string(GRand *r, GByteArray *a)
{
  guint hs, hl;
  header_region(a, &hs, &hl);
  /* collect quoted strings of the header (naively: from a quote to the next quote) */
  guint starts[256], lens[256], n = 0;
  for (guint i = hs; i < hs + hl && n < 256; i++) {
    if (a->data[i] != '"')
      continue;
    guint j = i + 1;
    while (j < hs + hl && a->data[j] != '"')
      j += a->data[j] == '\\' ? 2 : 1;
    if (j >= hs + hl)
      break;
    starts[n] = i;
    lens[n] = j - i + 1;
    n++;
    i = j;
  }
  if (n == 0)
    return;
  guint k = (guint)g_rand_int_range(r, 0, (gint32)n);
  const char *text = interesting_strings[g_rand_int_range(r, 0, G_N_ELEMENTS(interesting_strings))];
  replace_range(r, a, starts[k], lens[k], text, (guint)strlen(text));
}

/* Moves the data_offsets pair of one tensor by the same amount (keeping its size), or gives it
 * another tensor's range: overlaps and holes. */
static void mutate_offsets(GRand *r, GByteArray *a)
{
  guint hs, hl;
  header_region(a, &hs, &hl);
  guint starts[64], lens[64], n = 0;
  int64_t begins[64];
  const char *key = "data_offsets";
  size_t klen = strlen(key);
  for (guint i = hs; i + klen < hs + hl && n < 64; i++) {
    if (memcmp(a->data + i, key, klen) != 0)
      continue;
    guint j = i + (guint)klen;
    while (j < hs + hl && a->data[j] != '[')
      j++;
    guint k = j;
    while (k < hs + hl && a->data[k] != ']')
      k++;
    if (k >= hs + hl)
      break;
    g_autofree char *text = g_strndup((const char *)a->data + j + 1, k - j - 1);
    char *end = NULL;
    begins[n] = g_ascii_strtoll(text, &end, 10);
    starts[n] = j;
    lens[n] = k - j + 1;
    n++;
    i = k;
  }
  if (n == 0)
    return;
  guint pick = (guint)g_rand_int_range(r, 0, (gint32)n);
  g_autofree char *text = g_strndup((const char *)a->data + starts[pick] + 1, lens[pick] - 2);
  char *comma = strchr(text, ',');
  if (!comma)
    return;
  int64_t b = g_ascii_strtoll(text, NULL, 10), e = g_ascii_strtoll(comma + 1, NULL, 10);
  /* wrapping arithmetic: the values may be anything a mutation left */
  uint64_t shift = g_rand_boolean(r)
                       ? (uint64_t)(int64_t)g_rand_int_range(r, -16, 17)
                       : (uint64_t)begins[g_rand_int_range(r, 0, (gint32)n)] - (uint64_t)b;
  char buf[64];
  g_snprintf(buf, sizeof buf, "[%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "]",
             (int64_t)((uint64_t)b + shift), (int64_t)((uint64_t)e + shift));
  replace_range(r, a, starts[pick], lens[pick], buf, (guint)strlen(buf));
}

static void mutate(GRand *r, GByteArray *a)
{
  static const guint8 interesting[] = {0,   0xff, '"', '{',  '}',  '[',  ']', '9', '-',
                                       ',', ':',  ' ', '\\', 0x80, 0xc3, '0', 'e', '.'};
  int op = g_rand_int_range(r, 0, 13);
  if (a->len == 0 && op != 4)
    op = 4;
  switch (op) {
  case 0: { /* bit flip */
    guint p = pick_pos(r, a);
    a->data[p] ^= (guint8)(1u << g_rand_int_range(r, 0, 8));
    break;
  }
  case 1: /* an interesting byte */
    a->data[pick_pos(r, a)] = interesting[g_rand_int_range(r, 0, G_N_ELEMENTS(interesting))];
    break;
  case 2: /* a random byte */ a->data[pick_pos(r, a)] = (guint8)g_rand_int_range(r, 0, 256); break;
  case 3: /* truncate */
    g_byte_array_set_size(a, (guint)g_rand_int_range(r, 0, (gint32)a->len));
    break;
  case 4: { /* extend with zeros, spaces or random bytes */
    guint n = (guint)g_rand_int_range(r, 1, 65);
    int kind = g_rand_int_range(r, 0, 3);
    guint old = a->len;
    if (old + n > MAX_FILE)
      break;
    g_byte_array_set_size(a, old + n);
    for (guint i = 0; i < n; i++)
      a->data[old + i] = kind == 0 ? 0 : kind == 1 ? ' ' : (guint8)g_rand_int_range(r, 0, 256);
    break;
  }
  case 5: { /* a new header length */
    uint64_t h = get_hlen(a), len = a->len;
    const uint64_t choices[] = {0,
                                1,
                                len - 8,
                                len - 7,
                                len - 9,
                                h + 1,
                                h - 1,
                                h + 8,
                                h * 2,
                                1ull << 63,
                                ~0ull,
                                100ull << 20,
                                (100ull << 20) + 1,
                                (uint64_t)g_rand_int(r)};
    set_hlen(a, choices[g_rand_int_range(r, 0, G_N_ELEMENTS(choices))]);
    break;
  }
  case 6: { /* insert bytes */
    guint p = pick_pos(r, a);
    guint n = (guint)g_rand_int_range(r, 1, 9);
    char buf[8];
    for (guint i = 0; i < n; i++)
      buf[i] = (char)interesting[g_rand_int_range(r, 0, G_N_ELEMENTS(interesting))];
    if (a->len + n <= MAX_FILE)
      replace_range(r, a, p, 0, buf, n);
    break;
  }
  case 7: { /* delete bytes */
    guint p = pick_pos(r, a);
    guint n = (guint)g_rand_int_range(r, 1, 17);
    n = MIN(n, a->len - p);
    replace_range(r, a, p, n, "", 0);
    break;
  }
  case 8:
  case 9: mutate_number(r, a); break;
  case 10: mutate_string(r, a); break;
  case 11: { /* splice a chunk of another seed over or into this one */
    GBytes *other = g_ptr_array_index(seeds, g_rand_int_range(r, 0, (gint32)seeds->len));
    gsize olen;
    const guint8 *od = g_bytes_get_data(other, &olen);
    if (olen == 0)
      break;
    guint from = (guint)g_rand_int_range(r, 0, (gint32)olen);
    guint n = (guint)g_rand_int_range(r, 1, 65); /* not inside MIN(), which evaluates twice */
    n = MIN(n, (guint)olen - from);
    guint p = pick_pos(r, a);
    guint over = g_rand_boolean(r) ? MIN(n, a->len - p) : 0;
    if (a->len + n <= MAX_FILE)
      replace_range(r, a, p, over, (const char *)od + from, n);
    break;
  }
  case 12: mutate_offsets(r, a); break;
  }
}

/* ---- checks of one mutant ---- */

static gboolean load_code_ok(int code)
{
  return code == MEXD_ERROR_DTYPE || code == MEXD_ERROR_UNSUPPORTED ||
         code == MEXD_ERROR_NO_MEMORY || code == MEXD_ERROR_SHAPE;
}

static void check_accepted(MexdSafetensors *st, GBytes *b, Stats *stats)
{
  GError *error = NULL;
  gsize blen;
  const guint8 *bd = g_bytes_get_data(b, &blen);
  guint n = mexd_safetensors_n_tensors(st);
  g_autoptr(MexdSafetensorsWriter) w = mexd_safetensors_writer_new();
  const guint8 *prev_end = NULL;
  for (guint i = 0; i < n; i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    g_assert_nonnull(t);
    g_assert_nonnull(t->name);
    g_assert_true(g_utf8_validate(t->name, -1, NULL));
    g_assert_true(mexd_safetensors_find(st, t->name) == t);
    g_assert_cmpint(t->ndim, >=, 0);
    g_assert_cmpint(t->ndim, <=, MEXD_ST_MAX_DIMS);
    /* inside the file, back to back, nbytes from the shape */
    const guint8 *p = t->data;
    g_assert_true(p >= bd + 8 && p + t->nbytes <= bd + blen);
    if (prev_end)
      g_assert_true(p == prev_end);
    prev_end = p + t->nbytes;
    guint64 numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      g_assert_cmpint(t->shape[d], >=, 0);
      numel *= (guint64)t->shape[d]; /* may wrap for empty tensors; only compared when nbytes > 0 */
    }
    if (t->nbytes > 0)
      g_assert_cmpuint(numel * mexd_st_dtype_size(t->dtype), ==, t->nbytes);

    if (t->nbytes <= MAX_LOAD) {
      gboolean is_float =
          t->dtype == MEXD_ST_F32 || t->dtype == MEXD_ST_F16 || t->dtype == MEXD_ST_BF16;
      MexdDType want = !is_float ? MEXD_DTYPE_I32 : (i % 3 == 2) ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
      MexdTensor *x = mexd_safetensors_load(st, t->name, cpu, want, &error);
      stats->loads++;
      if (x) {
        g_assert_no_error(error);
        g_assert_cmpint(mexd_tensor_numel(x), ==, t->ndim == 0 ? 1 : (int64_t)numel);
        if (want == MEXD_DTYPE_F32 && t->dtype == MEXD_ST_F32)
          g_assert_true(memcmp(mexd_tensor_host_data(x), t->data, t->nbytes) == 0);
        mexd_tensor_unref(x);
      } else {
        g_assert_nonnull(error);
        g_assert_true(error->domain == MEXD_ERROR);
        if (!load_code_ok(error->code))
          g_error("unexpected load error %d: %s", error->code, error->message);
        g_assert_nonnull(strstr(error->message, FNAME));
        stats->load_errors++;
        g_clear_error(&error);
      }
    }
    if (!mexd_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                     &error))
      g_error("rewriting '%s': %s", t->name, error->message);
  }
  g_assert_null(mexd_safetensors_index(st, n));
  MexdTensor *none = mexd_safetensors_load(st, "\x01no such tensor", cpu, MEXD_DTYPE_F32, &error);
  g_assert_null(none);
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND);
  g_clear_error(&error);

  char **keys = mexd_safetensors_metadata_keys(st);
  g_assert_nonnull(keys);
  for (char **k = keys; *k; k++) {
    const char *v = mexd_safetensors_metadata(st, *k);
    g_assert_nonnull(v);
    g_assert_true(g_utf8_validate(*k, -1, NULL));
    g_assert_true(g_utf8_validate(v, -1, NULL));
    mexd_safetensors_writer_set_metadata(w, *k, v);
  }

  /* what was accepted survives a rewrite */
  GBytes *again = mexd_safetensors_writer_to_bytes(w, &error);
  g_assert_no_error(error);
  MexdSafetensors *st2 = mexd_safetensors_new_from_bytes(again, "rewrite", &error);
  if (!st2)
    g_error("a rewritten file does not parse: %s", error->message);
  g_assert_cmpuint(mexd_safetensors_n_tensors(st2), ==, n);
  for (guint i = 0; i < n; i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    const MexdStTensor *t2 = mexd_safetensors_find(st2, t->name);
    g_assert_nonnull(t2);
    g_assert_cmpuint(t2->nbytes, ==, t->nbytes);
    g_assert_true(t->nbytes == 0 || memcmp(t2->data, t->data, t->nbytes) == 0);
  }
  char **keys2 = mexd_safetensors_metadata_keys(st2);
  g_assert_cmpuint(g_strv_length(keys2), ==, g_strv_length(keys));
  g_strfreev(keys2);
  mexd_safetensors_free(st2);
  g_bytes_unref(again);
  g_strfreev(keys);
  stats->rewrites++;
}

static void test_fuzz(void)
{
  guint32 seed = DEFAULT_SEED;
  const char *env = g_getenv("MEXD_FUZZ_SEED");
  if (env && *env)
    seed = (guint32)g_ascii_strtoull(env, NULL, 0);
  guint64 iterations = FUZZ_ITERATIONS;
  env = g_getenv("MEXD_FUZZ_ITERATIONS");
  if (env && *env)
    iterations = g_ascii_strtoull(env, NULL, 0);
  g_printerr("# safetensors fuzz: seed 0x%08x (MEXD_FUZZ_SEED), %" G_GUINT64_FORMAT
             " mutants, %u seeds\n",
             seed, iterations, seeds->len);

  gboolean verbose = g_getenv("MEXD_FUZZ_VERBOSE") != NULL; /* print every rejection */
  GRand *r = g_rand_new_with_seed(seed);
  Stats stats = {0};
  gint64 t0 = g_get_monotonic_time();
  for (guint64 it = 0; it < iterations; it++) {
    GBytes *seed_bytes = g_ptr_array_index(seeds, g_rand_int_range(r, 0, (gint32)seeds->len));
    gsize slen;
    const guint8 *sd = g_bytes_get_data(seed_bytes, &slen);
    GByteArray *a = g_byte_array_sized_new((guint)slen + 64);
    g_byte_array_append(a, sd, (guint)slen);
    int n_mut = g_rand_int_range(r, 1, 5);
    for (int m = 0; m < n_mut; m++)
      mutate(r, a);
    GBytes *b = g_byte_array_free_to_bytes(a);

    GError *error = NULL;
    MexdSafetensors *st = mexd_safetensors_new_from_bytes(b, FNAME, &error);
    if (st) {
      g_assert_no_error(error);
      stats.parsed++;
      check_accepted(st, b, &stats);
      mexd_safetensors_free(st);
    } else {
      if (!error)
        g_error("mutant %" G_GUINT64_FORMAT ": rejected without an error", it);
      if (error->domain != MEXD_ERROR)
        g_error("mutant %" G_GUINT64_FORMAT ": error outside MEXD_ERROR: %s", it, error->message);
      if (error->code != MEXD_ERROR_FORMAT && error->code != MEXD_ERROR_UNSUPPORTED)
        g_error("mutant %" G_GUINT64_FORMAT ": unexpected code %d: %s", it, error->code,
                error->message);
      if (!strstr(error->message, FNAME))
        g_error("mutant %" G_GUINT64_FORMAT ": message does not name the file: %s", it,
                error->message);
      stats.rejected++;
      stats.codes[error->code]++;
      if (verbose)
        g_printerr("%s\n", error->message);
      g_error_free(error);
    }
    g_bytes_unref(b);
  }
  double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
  g_rand_free(r);
  g_printerr("# safetensors fuzz: %" G_GUINT64_FORMAT " parsed, %" G_GUINT64_FORMAT
             " rejected (%" G_GUINT64_FORMAT " format, %" G_GUINT64_FORMAT
             " unsupported); %" G_GUINT64_FORMAT " loads (%" G_GUINT64_FORMAT
             " refused), %" G_GUINT64_FORMAT " rewrites; %.1f s\n",
             stats.parsed, stats.rejected, stats.codes[MEXD_ERROR_FORMAT],
             stats.codes[MEXD_ERROR_UNSUPPORTED], stats.loads, stats.load_errors, stats.rewrites,
             secs);
  g_test_message("seed 0x%08x: %" G_GUINT64_FORMAT " parsed, %" G_GUINT64_FORMAT " rejected", seed,
                 stats.parsed, stats.rejected);
  g_assert_cmpuint(stats.parsed + stats.rejected, ==, iterations);
  /* the mutations must leave some files valid and break most */
  if (iterations >= 1000) {
    g_assert_cmpuint(stats.parsed, >, iterations / 100);
    g_assert_cmpuint(stats.rejected, >, iterations / 2);
  }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  cpu = mexd_backend_new("cpu", NULL);
  make_seeds();
  g_test_add_func("/safetensors/fuzz", test_fuzz);
  int rc = g_test_run();
  g_ptr_array_unref(seeds);
  mexd_backend_unref(cpu);
  return rc;
}
