/* test-trust.c: the pieces that keep outputs trustworthy (issue 16): files.h (special files
 * refused before any open, outputs that are inputs refused through links, atomic writes and
 * the removal of stale temporaries, SHA-256), json.h (nesting bound), csv.h (RFC 4180 against
 * Python's csv module: tests/fixtures/csv/gen_csv.py) and pipeline/result.h + cohort.h (the
 * result schema's round trip and checks, identity differences, manifests, the summary). */
#include "mexd.h"
#include "fixture-dir.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmpdir;

static char *tmp_path(const char *name)
{
  return g_build_filename(tmpdir, name, NULL);
}

static void write_file(const char *path, const char *text)
{
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void expect_error(GError *error, const char *must_contain)
{
  g_assert_nonnull(error);
  if (must_contain && !strstr(error->message, must_contain))
    g_error("message \"%s\" does not contain \"%s\"", error->message, must_contain);
  g_test_message("%s", error->message);
  g_error_free(error);
}

/* ---- files.h ---- */

static void test_regular(void)
{
  g_autofree char *f = tmp_path("regular"), *d = tmp_path("dir"), *fifo = tmp_path("fifo");
  g_autofree char *dangling = tmp_path("dangling"), *loop = tmp_path("loop");
  write_file(f, "x");
  g_mkdir(d, 0755);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  g_assert_cmpint(symlink("/nonexistent/target", dangling), ==, 0);
  g_assert_cmpint(symlink(loop, loop), ==, 0);
  GError *e = NULL;
  g_assert_true(mexd_file_check_regular(f, "model file", &e));
  g_assert_false(mexd_file_check_regular(d, "model file", &e));
  expect_error(e, "is a directory, not a regular file (the model file)");
  e = NULL;
  /* a FIFO nobody writes to: refused without opening it (an open would block) */
  g_assert_false(mexd_file_check_regular(fifo, "feature file", &e));
  expect_error(e, "FIFO");
  e = NULL;
  g_assert_false(mexd_file_check_regular("/dev/zero", NULL, &e));
  expect_error(e, "character device");
  e = NULL;
  g_assert_false(mexd_file_check_regular(dangling, "slide", &e));
  expect_error(e, "symbolic link to a file that does not exist");
  e = NULL;
  g_assert_false(mexd_file_check_regular(loop, "slide", &e));
  expect_error(e, "loop");
  e = NULL;
  g_assert_false(mexd_file_check_regular("/nonexistent/x", "slide", &e));
  g_assert_true(g_error_matches(e, MEXD_ERROR, MEXD_ERROR_IO));
  expect_error(e, "no such file (the slide)");
  e = NULL;
  g_assert_true(mexd_file_check_dir(d, NULL, &e));
  g_assert_false(mexd_file_check_dir(f, "data folder", &e));
  expect_error(e, "not a folder");
  /* the readers that use it do not block on a FIFO either */
  e = NULL;
  g_assert_null(mexd_safetensors_open(fifo, &e));
  expect_error(e, "FIFO");
  e = NULL;
  g_assert_null(mexd_bag_read(fifo, MEXD_BAG_AUTO, &e));
  expect_error(e, "FIFO");
  e = NULL;
  g_assert_null(mexd_csv_read_file(fifo, 0, &e));
  expect_error(e, "FIFO");
  e = NULL;
  g_assert_null(mexd_json_parse_file(fifo, 1024, &e));
  expect_error(e, "FIFO");
}

static void test_same_and_outputs(void)
{
  g_autofree char *in = tmp_path("input.svs"), *sym = tmp_path("sym.svs");
  g_autofree char *hard = tmp_path("hard.svs"), *other = tmp_path("other.h5");
  g_autofree char *spelled = g_strdup_printf("%s/./x/../input.svs", tmpdir);
  g_autofree char *x = tmp_path("x");
  write_file(in, "slide bytes");
  g_mkdir(x, 0755);
  g_assert_cmpint(symlink(in, sym), ==, 0);
  g_assert_cmpint(link(in, hard), ==, 0);
  g_assert_true(mexd_file_same(in, sym));
  g_assert_true(mexd_file_same(in, hard));
  g_assert_true(mexd_file_same(in, spelled));
  g_assert_false(mexd_file_same(in, other)); /* does not exist */
  const char *inputs[] = {in, NULL};
  GError *e = NULL;
  g_assert_true(mexd_file_check_output(other, inputs, &e));
  g_assert_false(mexd_file_check_output(in, inputs, &e));
  expect_error(e, "the output is one of the inputs");
  e = NULL;
  g_assert_false(mexd_file_check_output(sym, inputs, &e));
  expect_error(e, "the output is the same file as the input");
  e = NULL;
  g_assert_false(mexd_file_check_output(hard, inputs, &e));
  expect_error(e, "input.svs");
  e = NULL;
  g_assert_false(mexd_file_check_output(spelled, inputs, &e));
  expect_error(e, "same file");
  e = NULL;
  g_assert_false(mexd_file_check_output(tmpdir, inputs, &e));
  expect_error(e, "existing folder");
  /* a set of inputs, a folder's files among them */
  g_autofree char *tiles = tmp_path("tiles"), *t0 = NULL, *t1 = NULL;
  g_mkdir(tiles, 0755);
  t0 = g_build_filename(tiles, "t0.png", NULL);
  t1 = g_build_filename(tiles, "t1.png", NULL);
  write_file(t0, "0");
  write_file(t1, "1");
  g_autoptr(MexdInputSet) s = mexd_input_set_new();
  mexd_input_set_add(s, in);
  mexd_input_set_add_tree(s, tiles);
  e = NULL;
  g_assert_true(mexd_input_set_check(s, other, &e));
  g_assert_false(mexd_input_set_check(s, t1, &e));
  expect_error(e, "t1.png");
  e = NULL;
  g_assert_false(mexd_input_set_check(s, hard, &e));
  expect_error(e, "same file");
  g_autofree char *bytes = NULL;
  g_assert_true(g_file_get_contents(in, &bytes, NULL, NULL));
  g_assert_cmpstr(bytes, ==, "slide bytes");
}

static void test_atomic(void)
{
  g_autofree char *d = tmp_path("atomic");
  g_mkdir(d, 0755);
  /* a stale temporary of a process that no longer runs, and one of a live process (ours) */
  pid_t dead = fork();
  if (dead == 0)
    _exit(0);
  waitpid(dead, NULL, 0);
  g_autofree char *stale_name = g_strdup_printf(".out.h5.mexd-%d-abcdef", (int)dead);
  g_autofree char *live_name = g_strdup_printf(".out.h5.mexd-%d-abcdef", (int)getpid());
  g_autofree char *stale = g_build_filename(d, stale_name, NULL);
  g_autofree char *live = g_build_filename(d, live_name, NULL);
  g_autofree char *lookalike = g_build_filename(d, ".notes.mexd-12-x", NULL);
  write_file(stale, "half");
  write_file(live, "writing");
  write_file(lookalike, "keep");
  g_autofree char *out = g_build_filename(d, "out.h5", NULL);
  GError *e = NULL;
  g_assert_true(mexd_file_write_atomic(out, "complete", -1, &e));
  g_assert_no_error(e);
  g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS)); /* removed by the first write */
  g_assert_true(g_file_test(live, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(lookalike, G_FILE_TEST_EXISTS));
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(out, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "complete");
  /* discarded: the old file stays, nothing beside it */
  MexdAtomicFile *f = mexd_atomic_file_new(out, &e);
  g_assert_no_error(e);
  g_assert_cmpint(write(mexd_atomic_file_fd(f), "partial", 7), ==, 7);
  g_autofree char *tp = g_strdup(mexd_atomic_file_temp_path(f));
  g_assert_true(g_file_test(tp, G_FILE_TEST_EXISTS));
  mexd_atomic_file_discard(f);
  g_assert_false(g_file_test(tp, G_FILE_TEST_EXISTS));
  g_clear_pointer(&text, g_free);
  g_assert_true(g_file_get_contents(out, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "complete");
  /* the usual mode (0666 less the umask), not mkstemp's 0600 */
  mode_t mask = umask(022);
  g_assert_true(mexd_file_write_atomic(out, "again", -1, &e));
  umask(mask);
  GStatBuf st;
  g_assert_cmpint(g_stat(out, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0644);
  /* into a folder that does not exist, or over a folder */
  g_autofree char *bad = g_build_filename(d, "no", "such", "out.json", NULL);
  g_assert_false(mexd_file_write_atomic(bad, "x", -1, &e));
  expect_error(e, "out.json");
  e = NULL;
  g_assert_false(mexd_file_write_atomic(d, "x", -1, &e));
  expect_error(e, "folder");
  g_unlink(live);
}

static void test_sha256(void)
{
  g_autofree char *f = tmp_path("abc");
  write_file(f, "abc");
  GError *e = NULL;
  g_autofree char *h = mexd_file_sha256(f, &e);
  g_assert_no_error(e);
  /* FIPS 180-2's example */
  g_assert_cmpstr(h, ==,
                  "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  /* changed bytes (another size and time): not the cached value */
  write_file(f, "abcd");
  g_autofree char *h2 = mexd_file_sha256(f, &e);
  g_assert_cmpstr(h2, ==,
                  "sha256:88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589");
}

/* ---- json.h ---- */

static void test_json_depth(void)
{
  GString *s = g_string_new(NULL);
  for (int i = 0; i < MEXD_JSON_MAX_DEPTH; i++)
    g_string_append_c(s, '[');
  for (int i = 0; i < MEXD_JSON_MAX_DEPTH; i++)
    g_string_append_c(s, ']');
  GError *e = NULL;
  JsonNode *n = mexd_json_parse(s->str, -1, "ok.json", &e);
  g_assert_no_error(e);
  json_node_unref(n);
  g_string_truncate(s, 0);
  for (int i = 0; i < 100000; i++) /* json-glib alone overflows its stack on this */
    g_string_append(s, "[{\"a\":");
  g_assert_null(mexd_json_parse(s->str, -1, "deep.json", &e));
  expect_error(e, "deep.json: the JSON nests");
  /* brackets inside strings do not count */
  e = NULL;
  g_string_assign(s, "{\"k\": \"");
  for (int i = 0; i < 1000; i++)
    g_string_append(s, "[[\\\"");
  g_string_append(s, "\"}");
  n = mexd_json_parse(s->str, -1, "strings.json", &e);
  g_assert_no_error(e);
  json_node_unref(n);
  g_string_free(s, TRUE);
  /* a model whose mexd.config nests deeply: an error, not a crash */
  g_autoptr(GString) cfg = g_string_new("{\"a\":");
  for (int i = 0; i < 50000; i++)
    g_string_append_c(cfg, '[');
  MexdModelConfig mc;
  e = NULL;
  g_assert_false(mexd_model_config_parse(&mc, cfg->str, "deep.safetensors", &e));
  expect_error(e, "deep.safetensors");
}

/* ---- csv.h ---- */

static void expect_rows(const char *text, MexdCsvFlags flags, const char *const *const *rows)
{
  GError *e = NULL;
  g_autoptr(MexdCsv) c = mexd_csv_parse(text, -1, "t.csv", flags, &e);
  g_assert_no_error(e);
  guint n = 0;
  while (rows[n])
    n++;
  g_assert_cmpuint(mexd_csv_n_rows(c), ==, n);
  for (guint i = 0; i < n; i++) {
    const char *const *got = mexd_csv_row(c, i);
    guint k = 0;
    for (; rows[i][k]; k++)
      g_assert_cmpstr(got[k], ==, rows[i][k]);
    g_assert_null(got[k]);
  }
}

static void test_csv_cases(void)
{
  expect_rows("a,b\n1,2\n", 0,
              (const char *const *const[]){(const char *[]){"a", "b", NULL},
                                           (const char *[]){"1", "2", NULL}, NULL});
  /* quotes, doubled quotes, a line break and a comma inside, CRLF, a BOM, blank lines */
  expect_rows("\xef\xbb\xbfpath,slide_id\r\n\"a,b.svs\",\"say \"\"hi\"\"\"\r\n\r\n\"two\nlines\",x",
              0,
              (const char *const *const[]){(const char *[]){"path", "slide_id", NULL},
                                           (const char *[]){"a,b.svs", "say \"hi\"", NULL},
                                           (const char *[]){"two\nlines", "x", NULL}, NULL});
  /* trimming touches unquoted fields only; comments */
  expect_rows("# a comment\n  a , \" b \" \n", MEXD_CSV_TRIM | MEXD_CSV_COMMENTS,
              (const char *const *const[]){(const char *[]){"a", " b ", NULL}, NULL});
  expect_rows("x,\n,\n", 0,
              (const char *const *const[]){(const char *[]){"x", "", NULL},
                                           (const char *[]){"", "", NULL}, NULL});
  GError *e = NULL;
  g_assert_null(mexd_csv_parse("a\n\"open,b\n", -1, "bad.csv", 0, &e));
  expect_error(e, "bad.csv:2: a quoted field is not closed");
  e = NULL;
  g_assert_null(mexd_csv_parse("a\nb\n\"x\"y,1\n", -1, "bad.csv", 0, &e));
  expect_error(e, "bad.csv:3: text after a quoted field");
  e = NULL;
  g_assert_null(mexd_csv_parse("a,b\0c\n", 6, "nul.csv", 0, &e));
  expect_error(e, "NUL");
  e = NULL;
  /* columns and lines */
  g_autoptr(MexdCsv) c = mexd_csv_parse("Slide_ID , Path\n\"a\nb\",p\nq,r\n", -1, "c", 0, &e);
  g_assert_no_error(e);
  g_assert_cmpint(mexd_csv_column(c, "path"), ==, 1);
  g_assert_cmpint(mexd_csv_column(c, "slide_id"), ==, 0);
  g_assert_cmpint(mexd_csv_column(c, "label"), ==, -1);
  g_assert_cmpuint(mexd_csv_row_line(c, 2), ==, 4);
  g_assert_null(mexd_csv_field(c, 1, 5));
}

/* Every table Python's csv module wrote reads back as Python reads it; written by us, it reads
 * back the same. */
static void test_csv_python(void)
{
  g_autofree char *dir = mexd_test_fixture_dir("csv");
  g_assert_nonnull(dir);
  g_autofree char *jp = g_build_filename(dir, "tables.json", NULL);
  GError *e = NULL;
  g_autoptr(JsonNode) root = mexd_json_parse_file(jp, 1 << 20, &e);
  g_assert_no_error(e);
  JsonObject *o = json_node_get_object(root);
  g_autoptr(GList) names = json_object_get_members(o);
  g_assert_cmpuint(g_list_length(names), >=, 10);
  for (GList *l = names; l; l = l->next) {
    g_autofree char *p = g_build_filename(dir, l->data, NULL);
    g_autoptr(MexdCsv) c = mexd_csv_read_file(p, 0, &e);
    g_assert_no_error(e);
    JsonArray *rows = json_object_get_array_member(o, l->data);
    g_assert_cmpuint(mexd_csv_n_rows(c), ==, json_array_get_length(rows));
    GString *w = g_string_new(NULL);
    for (guint i = 0; i < json_array_get_length(rows); i++) {
      JsonArray *r = json_array_get_array_element(rows, i);
      g_assert_cmpuint(mexd_csv_row_len(c, i), ==, json_array_get_length(r));
      g_autoptr(GPtrArray) f = g_ptr_array_new();
      for (guint k = 0; k < json_array_get_length(r); k++) {
        g_assert_cmpstr(mexd_csv_row(c, i)[k], ==, json_array_get_string_element(r, k));
        g_ptr_array_add(f, (gpointer)json_array_get_string_element(r, k));
      }
      mexd_csv_append_row(w, (const char *const *)f->pdata, (int)f->len);
    }
    /* our writing of the same rows reads back identically */
    g_autoptr(MexdCsv) c2 = mexd_csv_parse(w->str, (gssize)w->len, "ours", 0, &e);
    g_assert_no_error(e);
    g_assert_cmpuint(mexd_csv_n_rows(c2), ==, mexd_csv_n_rows(c));
    for (guint i = 0; i < mexd_csv_n_rows(c); i++)
      for (guint k = 0; k < mexd_csv_row_len(c, i); k++)
        g_assert_cmpstr(mexd_csv_row(c2, i)[k], ==, mexd_csv_row(c, i)[k]);
    g_string_free(w, TRUE);
  }
}

/* ---- result.h, cohort.h ---- */

static MexdSlideResult *sample_result(void)
{
  MexdSlideResult *r = g_new0(MexdSlideResult, 1);
  r->slide_id = g_strdup("a,\"b\"\nc");
  r->path = g_strdup("/slides/a,\"b\"\nc.svs");
  r->n_classes = 2;
  r->classes = g_strsplit("normal,tumor", ",", -1);
  r->class_index = 1;
  r->probabilities = g_new(double, 2);
  r->spread = g_new(double, 2);
  r->prior = g_new(double, 2);
  r->probabilities[0] = 0.25;
  r->probabilities[1] = 0.75;
  r->spread[0] = r->spread[1] = 0.1;
  r->prior[0] = 1.0 / 3;
  r->prior[1] = 2.0 / 3;
  r->tiles = 77;
  r->sampler = g_strdup("ddim");
  r->steps = 20;
  r->chains = 8;
  r->seed = 3;
  r->eta = 0.5;
  r->mode = g_strdup("paper");
  r->identity = mexd_identity_new();
  mexd_identity_set(r->identity, "model", "sha256:%064d", 1);
  mexd_identity_set(r->identity, "seed", "3");
  mexd_identity_set(r->identity, "slide", "quickhash-1:ab/10 bytes");
  return r;
}

static void test_result_json(void)
{
  g_autoptr(MexdSlideResult) r = sample_result();
  g_autofree char *js = mexd_slide_result_to_json(r, TRUE);
  GError *e = NULL;
  g_autoptr(MexdSlideResult) b = mexd_slide_result_from_json(js, -1, "r.json", &e);
  g_assert_no_error(e);
  g_assert_cmpstr(b->slide_id, ==, r->slide_id);
  g_assert_cmpstr(b->path, ==, r->path);
  g_assert_cmpint(b->class_index, ==, 1);
  g_assert_cmpfloat(b->prior[0], ==, r->prior[0]); /* exact: 17 digits */
  g_assert_cmpfloat(b->probabilities[1], ==, 0.75);
  g_assert_cmpint(b->steps, ==, 20);
  g_assert_cmpfloat(b->eta, ==, 0.5);
  g_assert_null(mexd_identity_diff(b->identity, r->identity));
  /* a result without diffusion: nulls */
  g_clear_pointer(&r->probabilities, g_free);
  g_clear_pointer(&r->spread, g_free);
  g_autofree char *js2 = mexd_slide_result_to_json(r, FALSE);
  g_assert_nonnull(strstr(js2, "\"probabilities\":null"));
  g_autoptr(MexdSlideResult) c = mexd_slide_result_from_json(js2, -1, "r2.json", &e);
  g_assert_no_error(e);
  g_assert_null(c->probabilities);
  /* what must be refused */
  const char *bad[][2] = {
      {"{\"schema\": \"mexd-result/2\"}", "schema"},
      {"[1]", "not a JSON object"},
      {"{\"schema\": \"mexd-result/1\"", "not JSON"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_assert_null(mexd_slide_result_from_json(bad[i][0], -1, "bad.json", &e));
    expect_error(e, bad[i][1]);
    e = NULL;
  }
  /* edits of a good result */
  const char *edits[][3] = {
      {"\"class_index\":1", "\"class_index\":2", "class_index"},
      {"\"class\":\"tumor\"", "\"class\":\"normal\"", "classes[class_index]"},
      {"\"tiles\":77", "\"tiles\":-1", "tiles"},
      {"\"prior\":[", "\"prior\":[1,", "3 entries for 2 classes"},
      {"\"prior\":[", "\"prior\":[\"x\",\"y\"],\"ignored\":[", "array of numbers"},
      {"\"seed\":3", "\"seed\":\"3\"", "seed"},
      {"\"identity\":{", "\"identity\":{\"x\":1,", "identity key"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(edits); i++) {
    g_autofree char *t = g_strdup(js2);
    char *at = strstr(t, edits[i][0]);
    g_assert_nonnull(at);
    g_autofree char *edited = g_strdup_printf("%.*s%s%s", (int)(at - t), t, edits[i][1],
                                              at + strlen(edits[i][0]));
    g_assert_null(mexd_slide_result_from_json(edited, -1, "edited.json", &e));
    expect_error(e, edits[i][2]);
    e = NULL;
  }
  /* a non-finite number cannot be written or read back */
  r->prior[0] = NAN;
  g_assert_false(mexd_slide_result_check(r, &e));
  expect_error(e, "not finite");
  e = NULL;
  g_autofree char *wp = tmp_path("nan.json");
  g_assert_false(mexd_slide_result_write(r, wp, &e));
  expect_error(e, "prior");
  g_assert_false(g_file_test(wp, G_FILE_TEST_EXISTS));
}

static void test_identity(void)
{
  g_autoptr(MexdIdentity) a = mexd_identity_new(), b = NULL;
  mexd_identity_set(a, "model", "sha256:%s", "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d");
  mexd_identity_set(a, "seed", "3");
  mexd_identity_set(a, "chains", "8");
  b = mexd_identity_copy(a);
  g_assert_null(mexd_identity_diff(a, b));
  mexd_identity_set(b, "seed", "5");
  mexd_identity_set(b, "model", "sha256:%s", "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc");
  mexd_identity_remove(b, "chains");
  mexd_identity_set(b, "steps", "20");
  g_autofree char *d = mexd_identity_diff(a, b);
  g_assert_cmpstr(d, ==,
                  "model sha256:1a2b3c4d… → sha256:9f8e7d6c…; seed 3 → 5; steps (none) → 20; "
                  "chains 8 → (none)");
}

static void test_manifest(void)
{
  g_autofree char *m = tmp_path("manifest.csv"), *m2 = tmp_path("plain.txt");
  g_autofree char *m3 = tmp_path("ambiguous.txt"), *m4 = tmp_path("dup.csv");
  write_file(m, "# slides\nslide_id,path\n\"x,1\",\"a,b.svs\"\n,rel/c.svs\n\n\"q\"\"\",/abs/d.svs\n");
  write_file(m2, "a.svs\n\"b,c.svs\"\n");
  write_file(m3, "a.svs,b.svs\n");
  write_file(m4, "path\n/a/s.svs\n/b/s.tif\n");
  GError *e = NULL;
  g_autoptr(GArray) l = mexd_slide_list_read_manifest(m, &e);
  g_assert_no_error(e);
  g_assert_cmpuint(l->len, ==, 3);
  MexdSlideEntry *s = (MexdSlideEntry *)(void *)l->data;
  g_autofree char *p0 = g_build_filename(tmpdir, "a,b.svs", NULL);
  g_autofree char *p1 = g_build_filename(tmpdir, "rel/c.svs", NULL);
  g_assert_cmpstr(s[0].path, ==, p0);
  g_assert_cmpstr(s[0].id, ==, "x,1");
  g_assert_cmpstr(s[1].path, ==, p1);
  g_assert_cmpstr(s[1].id, ==, "c");
  g_assert_cmpstr(s[2].id, ==, "q\"");
  g_assert_true(mexd_slide_list_check_ids(l, &e));
  g_autoptr(GArray) l2 = mexd_slide_list_read_manifest(m2, &e);
  g_assert_no_error(e);
  g_assert_cmpuint(l2->len, ==, 2);
  g_assert_cmpstr(g_array_index(l2, MexdSlideEntry, 1).id, ==, "b,c");
  g_assert_null(mexd_slide_list_read_manifest(m3, &e));
  expect_error(e, "quote a path that holds a comma");
  e = NULL;
  g_autoptr(GArray) l4 = mexd_slide_list_read_manifest(m4, &e);
  g_assert_no_error(e);
  g_assert_false(mexd_slide_list_check_ids(l4, &e));
  expect_error(e, "same slide id \"s\"");
  e = NULL;
  int i = -1, n = -1;
  g_assert_true(mexd_shard_parse("1/3", &i, &n, &e));
  g_assert_cmpint(i, ==, 1);
  g_assert_cmpint(n, ==, 3);
  const char *bad[] = {"3/3", "-1/2", "1/0", "1/2x", "x", ""};
  for (guint k = 0; k < G_N_ELEMENTS(bad); k++) {
    g_assert_false(mexd_shard_parse(bad[k], &i, &n, &e));
    expect_error(e, "--shard is I/N");
    e = NULL;
  }
}

static void test_summary(void)
{
  g_autofree char *out = tmp_path("classify");
  g_autoptr(GArray) l = mexd_slide_list_new();
  mexd_slide_list_add(l, "/s/a,\"b\"\nc.svs", "a,\"b\"\nc");
  mexd_slide_list_add(l, "/s/second.svs", NULL);
  mexd_slide_list_add(l, "/s/third.svs", NULL);
  g_autoptr(MexdSlideResult) r = sample_result();
  GError *e = NULL;
  for (guint i = 0; i < 2; i++) {
    MexdSlideEntry *s = &g_array_index(l, MexdSlideEntry, i);
    g_autofree char *d = g_build_filename(out, s->id, NULL);
    g_autofree char *rp = g_build_filename(d, "result.json", NULL);
    g_mkdir_with_parents(d, 0755);
    mexd_identity_set(r->identity, "slide", "quickhash-1:%u/1 bytes", i);
    g_assert_true(mexd_slide_result_write(r, rp, &e));
    g_assert_no_error(e);
  }
  const char *classes[] = {"normal", "tumor", NULL};
  g_autoptr(MexdIdentity) run = mexd_identity_new();
  mexd_identity_set(run, "model", "sha256:%064d", 1);
  int rows = -1;
  /* the third slide has no result: the summary lists two and says so */
  g_assert_false(mexd_summary_write(out, l, classes, run, &rows, &e));
  expect_error(e, "1 of 3 slides have no result yet (third");
  e = NULL;
  g_assert_cmpint(rows, ==, 2);
  g_autofree char *sp = g_build_filename(out, "summary.csv", NULL);
  g_autoptr(MexdCsv) c = mexd_csv_read_file(sp, 0, &e);
  g_assert_no_error(e);
  g_assert_cmpuint(mexd_csv_n_rows(c), ==, 3);
  g_assert_cmpstr(mexd_csv_field(c, 0, 3), ==, "p_normal");
  g_assert_cmpstr(mexd_csv_field(c, 1, 0), ==, "a,\"b\"\nc");
  g_assert_cmpstr(mexd_csv_field(c, 1, 1), ==, "/s/a,\"b\"\nc.svs");
  g_assert_cmpstr(mexd_csv_field(c, 1, 4), ==, "0.750000");
  /* another model's results are left out */
  mexd_identity_set(run, "model", "sha256:%064d", 2);
  g_assert_false(mexd_summary_write(out, l, classes, run, &rows, &e));
  expect_error(e, "other inputs or settings");
  e = NULL;
  g_assert_cmpint(rows, ==, 0);
  /* results of mixed settings: only those agreeing with the first */
  mexd_identity_set(run, "model", "sha256:%064d", 1);
  MexdSlideEntry *s2 = &g_array_index(l, MexdSlideEntry, 1);
  g_autofree char *rp2 = g_build_filename(out, s2->id, "result.json", NULL);
  mexd_identity_set(r->identity, "seed", "4");
  g_assert_true(mexd_slide_result_write(r, rp2, &e));
  g_assert_false(mexd_summary_write(out, l, classes, run, &rows, &e));
  expect_error(e, "second: seed 3 → 4");
  g_assert_cmpint(rows, ==, 1);
  /* the state of a slide's outputs */
  const char *files[] = {"heatmap.png", NULL};
  g_autofree char *d2 = g_build_filename(out, s2->id, NULL);
  g_autoptr(MexdIdentity) want = mexd_identity_copy(r->identity);
  g_autofree char *why = NULL;
  g_assert_cmpint(mexd_slide_outputs_state(d2, files, want, &why), ==, MEXD_SLIDE_BROKEN);
  g_assert_cmpstr(why, ==, "heatmap.png is missing");
  g_clear_pointer(&why, g_free);
  g_autofree char *hp = g_build_filename(d2, "heatmap.png", NULL);
  write_file(hp, "png");
  g_assert_cmpint(mexd_slide_outputs_state(d2, files, want, NULL), ==, MEXD_SLIDE_DONE);
  mexd_identity_set(want, "chains", "9");
  g_assert_cmpint(mexd_slide_outputs_state(d2, files, want, &why), ==, MEXD_SLIDE_STALE);
  g_assert_nonnull(strstr(why, "chains (none) → 9"));
  mexd_slide_outputs_remove(d2, files);
  g_assert_false(g_file_test(hp, G_FILE_TEST_EXISTS));
  g_assert_cmpint(mexd_slide_outputs_state(d2, files, want, NULL), ==, MEXD_SLIDE_TODO);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("mexd-trust-XXXXXX", NULL);
  g_test_add_func("/trust/files/regular", test_regular);
  g_test_add_func("/trust/files/outputs", test_same_and_outputs);
  g_test_add_func("/trust/files/atomic", test_atomic);
  g_test_add_func("/trust/files/sha256", test_sha256);
  g_test_add_func("/trust/json/depth", test_json_depth);
  g_test_add_func("/trust/csv/cases", test_csv_cases);
  g_test_add_func("/trust/csv/python", test_csv_python);
  g_test_add_func("/trust/result/json", test_result_json);
  g_test_add_func("/trust/result/identity", test_identity);
  g_test_add_func("/trust/cohort/manifest", test_manifest);
  g_test_add_func("/trust/cohort/summary", test_summary);
  int rc = g_test_run();
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    g_printerr("could not remove %s\n", tmpdir);
  g_free(tmpdir);
  return rc;
}
