/* test-synth.c: the synthetic MIL benchmark (lib/train/synth.h).
 *
 * The generative model is specified exactly in synth.h; this file re-derives it from the header
 * (Philox words, Marsaglia pairs with libm's log, Fisher–Yates, the split, the sizes, the region,
 * the mixture) and compares, and checks the model's properties without the re-derivation too
 * (class balance, stratification, ranges, sphere distances, compactness, the noise's chi-square).
 *
 * /train/synth/options   defaults for 2 and 3 classes; every option out of range (and the valid
 *                        edges) through mexd_synth_options_check, mexd_synth_new and
 *                        mexd_synth_write; class names.
 * /train/synth/plan      classes, stratified split, N, m, names; against the header's algorithm.
 * /train/synth/centres   the spheres, the distance Δ to the parent j mod K, distinct classes;
 *                        against the header's algorithm.
 * /train/synth/bags      layout, labels, the compact lesion region, clusters, features (exact
 *                        and chi-square), a slide alone equals the slide in a whole run, a golden
 *                        digest of the bytes (the header promises the same values everywhere).
 * /train/synth/write     byte-identical runs, another seed, labels.csv, synth.json, read back by
 *                        mexd_bag_read, the dtypes and the ground truth datasets (with HDF5's
 *                        headers), non-empty directories and --force, argument errors. */
#include "mexd.h"
#include "nn/philox.h"
#include "train/synth.h"

#include <float.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#ifdef TEST_HAVE_HDF5
#include <hdf5.h>
#endif

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

/* A fresh path (not created) under the temporary root; g_free it. */
static char *new_path(const char *name)
{
  return g_strdup_printf("%s/%02d-%s", root, dir_counter++, name);
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

/* The names in `dir` (NULL-terminated; g_strfreev it). */
static char **list_dir(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  GPtrArray *a = g_ptr_array_new();
  for (const char *name; (name = g_dir_read_name(d));)
    g_ptr_array_add(a, g_strdup(name));
  g_dir_close(d);
  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}

static int cmp_names(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **list_sorted(const char *dir)
{
  char **v = list_dir(dir);
  qsort(v, g_strv_length(v), sizeof *v, cmp_names);
  return v;
}

static void assert_same_file(const char *a, const char *b)
{
  g_autofree char *ca = NULL, *cb = NULL;
  gsize la = 0, lb = 0;
  g_assert_true(g_file_get_contents(a, &ca, &la, NULL));
  g_assert_true(g_file_get_contents(b, &cb, &lb, NULL));
  if (la != lb || memcmp(ca, cb, la) != 0)
    g_error("%s and %s differ (%" G_GSIZE_FORMAT " and %" G_GSIZE_FORMAT " bytes)", a, b, la, lb);
}

/* The options of the tests: 12 slides, D = 16, N in 20 … 300. */
static MexdSynthOptions small_options(int n_classes, uint64_t seed)
{
  MexdSynthOptions o;
  mexd_synth_options_init(&o, n_classes);
  o.n_slides = 12;
  o.dim = 16;
  o.min_instances = 20;
  o.max_instances = 300;
  o.seed = seed;
  return o;
}

/* The configurations the plan, centres and bags are checked on. */
static int n_configs(void)
{
  return 4;
}

static MexdSynthOptions config(int which)
{
  MexdSynthOptions o;
  switch (which) {
  case 0:
    /* two classes, the default fractions, σ = 1 */
    o = small_options(2, 1);
    break;
  case 1: /* three classes, large regions, L > K (parents j mod K repeat), other constants */
    o = small_options(3, 2);
    o.min_fraction = 0.05;
    o.max_fraction = 0.6;
    o.noise = 0.7;
    o.background_clusters = 3;
    o.lesion_clusters = 4;
    o.radius = 5.0;
    o.lesion_distance = 2.0;
    o.test_fraction = 0.5;
    break;
  case 2: /* the key's high word, odd D, tiny bags (N = 1 among them), fractions up to 1 */
    o = small_options(3, 0xdeadbeef12345678ull);
    o.dim = 17;
    o.min_instances = 1;
    o.max_instances = 40;
    o.min_fraction = 0.5;
    o.max_fraction = 1.0;
    o.test_fraction = 0.0;
    o.n_slides = 15;
    break;
  default: /* no noise: the features are the centres */
    o = small_options(2, 3);
    o.noise = 0.0;
    o.min_fraction = 0.1;
    o.max_fraction = 0.3;
    break;
  }
  return o;
}

/* ---- the header's model, re-derived ---- */

static void ref_words(uint64_t seed, uint32_t purpose, uint32_t c0, uint32_t c1, uint32_t c2,
                      uint32_t k, uint32_t out[4])
{
  const uint32_t counter[4] = {c0, c1, c2, 0x73790000u | purpose << 8 | k};
  const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  mexd_philox4x32_10(counter, key, out);
}

static double ref_u(uint32_t x)
{
  return ((double)x + 0.5) / 4294967296.0;
}

static int64_t ref_int(uint32_t x, int64_t n)
{
  return (int64_t)(((uint64_t)x * (uint64_t)n) >> 32);
}

/* Marsaglia's polar method as the header gives it (libm's log: the last bits may differ). */
static void ref_pair(uint64_t seed, uint32_t purpose, uint32_t c0, uint32_t c1, uint32_t c2,
                     double *z0, double *z1)
{
  for (uint32_t k = 0; k < 256; k++) {
    uint32_t x[4];
    ref_words(seed, purpose, c0, c1, c2, k, x);
    for (int h = 0; h < 4; h += 2) {
      double a = 2 * ref_u(x[h]) - 1, b = 2 * ref_u(x[h + 1]) - 1, q = a * a + b * b;
      if (q < 1) {
        *z0 = a * sqrt(-2 * log(q) / q);
        *z1 = b * sqrt(-2 * log(q) / q);
        return;
      }
    }
  }
  *z0 = *z1 = 0;
}

static void ref_vector(uint64_t seed, uint32_t purpose, uint32_t c0, uint32_t c1, int d, double *v)
{
  for (int c2 = 0; c2 < (d + 1) / 2; c2++) {
    double z[2];
    ref_pair(seed, purpose, c0, c1, (uint32_t)c2, &z[0], &z[1]);
    for (int j = 0; j < 2 && 2 * c2 + j < d; j++)
      v[2 * c2 + j] = z[j];
  }
}

static double ref_dot(const double *a, const double *b, int d)
{
  double s = 0;
  for (int i = 0; i < d; i++)
    s += a[i] * b[i];
  return s;
}

static double ref_dist(const double *a, const double *b, int d)
{
  double s = 0;
  for (int i = 0; i < d; i++)
    s += (a[i] - b[i]) * (a[i] - b[i]);
  return sqrt(s);
}

typedef struct {
  int label;
  gboolean test;
  int64_t n, m, centre;
} RefSlide;

/* The plan of the header: Fisher–Yates, classes r mod C, the split, N, f, m, the centre cell. */
static RefSlide *ref_plan(const MexdSynthOptions *o)
{
  const int S = o->n_slides, C = o->n_classes;
  RefSlide *p = g_new0(RefSlide, S);
  g_autofree int *perm = g_new(int, S);
  for (int r = 0; r < S; r++)
    perm[r] = r;
  for (int r = S - 1; r >= 1; r--) {
    uint32_t x[4];
    ref_words(o->seed, 3, (uint32_t)r, 0, 0, 0, x);
    int j = (int)ref_int(x[0], r + 1), t = perm[r];
    perm[r] = perm[j];
    perm[j] = t;
  }
  /* the class sequence of the ratio: c_r maximises a_c·(r+1) − A·k_c(r), ties to the lower c */
  int count[3] = {0, 0, 0}, A = 0;
  g_autofree int *cls = g_new(int, S), *nth = g_new(int, S);
  for (int c = 0; c < C; c++)
    A += o->class_ratio[c];
  for (int r = 0; r < S; r++) {
    int best = -1;
    double bv = 0;
    for (int c = 0; c < C; c++) {
      double v = (double)o->class_ratio[c] * (r + 1) - (double)A * count[c];
      if (best < 0 || v > bv)
        best = c, bv = v;
    }
    cls[r] = best;
    nth[r] = count[best]++;
  }
  for (int r = 0; r < S; r++) {
    int c = cls[r];
    int t = MIN((int)floor(o->test_fraction * count[c] + 0.5), count[c] - 1);
    p[perm[r]].label = c;
    p[perm[r]].test = nth[r] < t;
  }
  for (int i = 0; i < S; i++) {
    uint32_t x[4];
    ref_words(o->seed, 2, (uint32_t)i, 0, 0, 0, x);
    p[i].n = o->min_instances + ref_int(x[0], (int64_t)o->max_instances - o->min_instances + 1);
    double f = o->min_fraction + (o->max_fraction - o->min_fraction) * ref_u(x[1]);
    if (p[i].label == 0)
      p[i].m = 0;
    else
      p[i].m = MIN(MAX((int64_t)floor(f * (double)p[i].n + 0.5), 1), p[i].n);
    p[i].centre = ref_int(x[2], p[i].n);
  }
  return p;
}

static int ref_n_clusters(const MexdSynthOptions *o)
{
  return o->background_clusters + (o->n_classes - 1) * o->lesion_clusters;
}

/* The centres of the header ([clusters·D]). */
static double *ref_centres(const MexdSynthOptions *o)
{
  const int D = o->dim, K = o->background_clusters, L = o->lesion_clusters;
  const double R = o->radius, delta = o->lesion_distance;
  double *c = g_new(double, (size_t)ref_n_clusters(o) * D);
  for (int k = 0; k < K; k++) {
    double *b = c + (size_t)k * D;
    ref_vector(o->seed, 1, (uint32_t)k, 0, D, b);
    double n = sqrt(ref_dot(b, b, D));
    for (int i = 0; i < D; i++)
      b[i] = R * b[i] / n;
  }
  double cos_t = 1 - delta * delta / (2 * R * R), sin_t = sqrt(1 - cos_t * cos_t);
  g_autofree double *bh = g_new(double, D);
  for (int cl = 1; cl < o->n_classes; cl++)
    for (int j = 0; j < L; j++) {
      int g = K + (cl - 1) * L + j;
      for (int i = 0; i < D; i++)
        bh[i] = c[(size_t)(j % K) * D + i] / R;
      double *v = c + (size_t)g * D;
      ref_vector(o->seed, 1, (uint32_t)g, 1, D, v);
      double hb = ref_dot(v, bh, D);
      for (int i = 0; i < D; i++)
        v[i] -= hb * bh[i];
      double n = sqrt(ref_dot(v, v, D));
      for (int i = 0; i < D; i++)
        v[i] = R * (cos_t * bh[i] + sin_t * v[i] / n);
    }
  return c;
}

/* ---- options ---- */

typedef struct {
  const char *what;
  void (*edit)(MexdSynthOptions *o);
  const char *flag; /* the phrase the message must hold */
} BadCase;

#define EDIT(name, body)                                                                           \
  static void name(MexdSynthOptions *o)                                                            \
  {                                                                                                \
    body;                                                                                          \
  }
EDIT(classes_1, o->n_classes = 1)
EDIT(classes_4, o->n_classes = 4)
EDIT(slides_few, o->n_slides = o->n_classes - 1)
EDIT(slides_many, o->n_slides = MEXD_SYNTH_MAX_SLIDES + 1)
EDIT(tau_neg, o->test_fraction = -0.01)
EDIT(tau_1, o->test_fraction = 1.0)
EDIT(tau_nan, o->test_fraction = NAN)
EDIT(dim_1, o->dim = 1)
EDIT(dim_big, o->dim = MEXD_SYNTH_MAX_DIM + 1)
EDIT(nmin_0, o->min_instances = 0)
EDIT(nmax_big, o->max_instances = MEXD_SYNTH_MAX_INSTANCES + 1)
EDIT(nmin_gt_nmax, (o->min_instances = 10, o->max_instances = 9))
EDIT(nmax_0, (o->min_instances = 1, o->max_instances = 0))
EDIT(fmin_0, o->min_fraction = 0.0)
EDIT(fmin_nan, o->min_fraction = NAN)
EDIT(fmax_big, o->max_fraction = 1.0000001)
EDIT(fmax_nan, o->max_fraction = NAN)
EDIT(fmin_gt_fmax, (o->min_fraction = 0.2, o->max_fraction = 0.1))
EDIT(k_0, o->background_clusters = 0)
EDIT(k_65, o->background_clusters = 65)
EDIT(l_0, o->lesion_clusters = 0)
EDIT(l_17, o->lesion_clusters = 17)
EDIT(r_0, o->radius = 0.0)
EDIT(r_neg, o->radius = -1.0)
EDIT(r_nan, o->radius = NAN)
EDIT(r_big, (o->radius = 1e6, o->lesion_distance = 1.0))
EDIT(delta_0, o->lesion_distance = 0.0)
EDIT(delta_big, o->lesion_distance = 2.0 * o->radius * (1 + 1e-12))
EDIT(delta_nan, o->lesion_distance = NAN)
EDIT(noise_neg, o->noise = -1e-9)
EDIT(noise_nan, o->noise = NAN)
EDIT(noise_big, o->noise = 1e6)
EDIT(ratio_0, o->class_ratio[1] = 0)
EDIT(ratio_big, o->class_ratio[0] = 1001)
EDIT(dim_and_noise, (o->dim = 1, o->noise = -1.0))

static const BadCase bad_cases[] = {
    {"1 class", classes_1, "--classes"},
    {"4 classes", classes_4, "--classes"},
    {"fewer slides than classes", slides_few, "--slides"},
    {"too many slides", slides_many, "--slides"},
    {"negative test fraction", tau_neg, "--test-fraction"},
    {"test fraction 1", tau_1, "--test-fraction"},
    {"NaN test fraction", tau_nan, "--test-fraction"},
    {"dim 1", dim_1, "--dim"},
    {"dim too large", dim_big, "--dim"},
    {"min-instances 0", nmin_0, "--min-instances"},
    {"max-instances too large", nmax_big, "--max-instances"},
    {"min-instances > max-instances", nmin_gt_nmax, "--max-instances"},
    {"max-instances 0", nmax_0, "--max-instances"},
    {"min-fraction 0", fmin_0, "--min-fraction"},
    {"NaN min-fraction", fmin_nan, "--min-fraction"},
    {"max-fraction over 1", fmax_big, "--max-fraction"},
    {"NaN max-fraction", fmax_nan, "--max-fraction"},
    {"min-fraction > max-fraction", fmin_gt_fmax, "--min-fraction must not exceed --max-fraction"},
    {"no background clusters", k_0, "background clusters"},
    {"65 background clusters", k_65, "background clusters"},
    {"no lesion clusters", l_0, "lesion clusters"},
    {"17 lesion clusters", l_17, "lesion clusters"},
    {"radius 0", r_0, "radius"},
    {"negative radius", r_neg, "radius"},
    {"NaN radius", r_nan, "radius"},
    {"radius 1e6", r_big, "the centre radius must be in (0, 1e6)"},
    {"lesion distance 0", delta_0, "--lesion-distance"},
    {"lesion distance over 2R", delta_big, "--lesion-distance"},
    {"NaN lesion distance", delta_nan, "--lesion-distance"},
    {"negative noise", noise_neg, "noise"},
    {"NaN noise", noise_nan, "noise"},
    {"noise 1e6", noise_big, "--noise must be in [0, 1e6)"},
    {"class ratio 0", ratio_0, "--class-ratio"},
    {"class ratio 1001", ratio_big, "--class-ratio"},
    {"the first bad option", dim_and_noise, "--dim"},
};

EDIT(ok_slides_c, o->n_slides = o->n_classes)
EDIT(ok_tau_0, o->test_fraction = 0.0)
EDIT(ok_tau_high, o->test_fraction = 0.999)
EDIT(ok_dim_2, o->dim = 2)
EDIT(ok_dim_max, o->dim = MEXD_SYNTH_MAX_DIM)
EDIT(ok_n_1, (o->min_instances = 1, o->max_instances = 1))
EDIT(ok_n_max,
     (o->min_instances = MEXD_SYNTH_MAX_INSTANCES, o->max_instances = MEXD_SYNTH_MAX_INSTANCES))
EDIT(ok_f_1, (o->min_fraction = 1.0, o->max_fraction = 1.0))
EDIT(ok_f_tiny, (o->min_fraction = 1e-300, o->max_fraction = 1e-300))
EDIT(ok_k_1, o->background_clusters = 1)
EDIT(ok_k_64, o->background_clusters = 64)
EDIT(ok_l_1, o->lesion_clusters = 1)
EDIT(ok_l_16, o->lesion_clusters = 16)
EDIT(ok_delta_2r, o->lesion_distance = 2.0 * o->radius)
EDIT(ok_noise_0, o->noise = 0.0)
EDIT(ok_noise_big, o->noise = 999999.0)
EDIT(ok_r_big, o->radius = 999999.0)
EDIT(ok_seed_max, o->seed = UINT64_MAX)
EDIT(ok_slides_max, o->n_slides = MEXD_SYNTH_MAX_SLIDES)
EDIT(ok_ratio, (o->class_ratio[0] = 1000, o->class_ratio[1] = 1, o->class_ratio[2] = 7))

static void (*const good_edits[])(MexdSynthOptions *) = {
    ok_slides_c, ok_tau_0,     ok_tau_high, ok_dim_2,    ok_dim_max,    ok_n_1,  ok_n_max,
    ok_f_1,      ok_f_tiny,    ok_k_1,      ok_k_64,     ok_l_1,        ok_l_16, ok_delta_2r,
    ok_noise_0,  ok_noise_big, ok_r_big,    ok_seed_max, ok_slides_max, ok_ratio,
};

static void test_options(void)
{
  for (int C = 2; C <= 3; C++) {
    MexdSynthOptions o;
    memset(&o, 0xa5, sizeof o);
    mexd_synth_options_init(&o, C);
    g_assert_cmpint(o.n_classes, ==, C);
    g_assert_cmpint(o.n_slides, ==, C == 2 ? 60 : 90);
    g_assert_cmpfloat(o.test_fraction, ==, 0.3);
    g_assert_cmpint(o.dim, ==, 384);
    g_assert_cmpint(o.min_instances, ==, 200);
    g_assert_cmpint(o.max_instances, ==, 5000);
    g_assert_cmpfloat(o.min_fraction, ==, 0.005);
    g_assert_cmpfloat(o.max_fraction, ==, 0.10);
    g_assert_cmpuint(o.seed, ==, 0);
    g_assert_cmpint(o.background_clusters, ==, 8);
    g_assert_cmpint(o.lesion_clusters, ==, 2);
    g_assert_cmpfloat(o.radius, ==, 6.0);
    g_assert_cmpfloat(o.lesion_distance, ==, 3.5);
    g_assert_cmpfloat(o.noise, ==, 1.0);
    GError *error = NULL;
    g_assert_true(mexd_synth_options_check(&o, &error));
    g_assert_no_error(error);

    for (size_t k = 0; k < G_N_ELEMENTS(good_edits); k++) {
      MexdSynthOptions g = o;
      good_edits[k](&g);
      if (!mexd_synth_options_check(&g, &error))
        g_error("valid edge %zu (%d classes) refused: %s", k, C, error->message);
    }

    for (size_t k = 0; k < G_N_ELEMENTS(bad_cases); k++) {
      const BadCase *b = &bad_cases[k];
      MexdSynthOptions bad = o;
      b->edit(&bad);
      g_autofree char *what = g_strdup_printf("%s (%d classes)", b->what, C);
      g_assert_false(mexd_synth_options_check(&bad, &error));
      expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, what, "synthetic bags: ", b->flag, NULL);
      g_assert_null(mexd_synth_new(&bad, &error));
      expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, what, b->flag, NULL);
      /* a bad option creates nothing */
      g_autofree char *dir = new_path("bad-options");
      g_assert_false(mexd_synth_write(&bad, dir, FALSE, NULL, NULL, &error));
      expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, what, b->flag, NULL);
      g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
    }
    /* the first option out of range is named, not a later one */
    {
      MexdSynthOptions bad = o;
      dim_and_noise(&bad);
      g_assert_false(mexd_synth_options_check(&bad, &error));
      g_assert_null(strstr(error->message, "noise"));
      g_clear_error(&error);
    }
  }
  GError *error = NULL;
  g_assert_false(mexd_synth_options_check(NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL options", NULL);
  g_assert_null(mexd_synth_new(NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL options", NULL);

  g_assert_cmpstr(mexd_synth_class_name(2, 0), ==, "normal");
  g_assert_cmpstr(mexd_synth_class_name(2, 1), ==, "tumor");
  g_assert_null(mexd_synth_class_name(2, 2));
  g_assert_null(mexd_synth_class_name(2, -1));
  g_assert_cmpstr(mexd_synth_class_name(3, 0), ==, "benign");
  g_assert_cmpstr(mexd_synth_class_name(3, 1), ==, "atypical");
  g_assert_cmpstr(mexd_synth_class_name(3, 2), ==, "malignant");
  g_assert_null(mexd_synth_class_name(3, 3));

  mexd_synth_free(NULL);
  g_assert_cmpint(mexd_synth_n_slides(NULL), ==, 0);
  g_assert_cmpint(mexd_synth_n_clusters(NULL), ==, 0);
  g_assert_null(mexd_synth_slide(NULL, 0));
  g_assert_null(mexd_synth_centre(NULL, 0));
}

/* ---- the plan ---- */

/* The plan's properties, without the re-derivation. */
static void check_plan_properties(const MexdSynth *s, const MexdSynthOptions *o)
{
  const int S = o->n_slides, C = o->n_classes;
  g_assert_cmpint(mexd_synth_n_slides(s), ==, S);
  g_assert_null(mexd_synth_slide(s, -1));
  g_assert_null(mexd_synth_slide(s, S));
  int n_c[3] = {0, 0, 0}, test_c[3] = {0, 0, 0};
  int width = 3;
  for (int v = S - 1; v >= 1000; v /= 10)
    width++;
  for (int i = 0; i < S; i++) {
    const MexdSynthSlide *sl = mexd_synth_slide(s, i);
    g_assert_nonnull(sl);
    g_assert_cmpint(sl->index, ==, i);
    g_autofree char *id = g_strdup_printf("slide_%0*d", width, i);
    g_assert_cmpstr(sl->id, ==, id);
    g_assert_cmpint(sl->label, >=, 0);
    g_assert_cmpint(sl->label, <, C);
    n_c[sl->label]++;
    test_c[sl->label] += sl->test ? 1 : 0;
    g_assert_true(sl->test == TRUE || sl->test == FALSE);
    const int64_t N = sl->n_instances, m = sl->n_lesion;
    g_assert_cmpint(N, >=, o->min_instances);
    g_assert_cmpint(N, <=, o->max_instances);
    if (sl->label == 0) {
      g_assert_cmpint(m, ==, 0);
    } else {
      /* m = clamp(⌊f·N + 0.5⌋, 1, N) is monotone in f: f in [fmin, fmax] puts m between the
       * values at the ends (m/N within the range up to the rounding allowance 0.5/N) */
      int64_t lo = MIN(MAX((int64_t)floor(o->min_fraction * (double)N + 0.5), 1), N);
      int64_t hi = MIN(MAX((int64_t)floor(o->max_fraction * (double)N + 0.5), 1), N);
      g_assert_cmpint(m, >=, lo);
      g_assert_cmpint(m, <=, hi);
      g_assert_cmpint(m, >=, 1);
      g_assert_cmpint(m, <=, N);
      double frac = (double)m / (double)N;
      g_assert_cmpfloat(frac, <=, o->max_fraction + 0.5 / (double)N + 1e-12);
      g_assert_true(m == 1 || frac >= o->min_fraction - 0.5 / (double)N - 1e-12);
    }
  }
  int lo = S, hi = 0, A = 0;
  gboolean even = TRUE;
  for (int c = 0; c < C; c++) {
    A += o->class_ratio[c];
    even = even && o->class_ratio[c] == o->class_ratio[0];
  }
  for (int c = 0; c < C; c++) {
    lo = MIN(lo, n_c[c]);
    hi = MAX(hi, n_c[c]);
    int t = MIN((int)floor(o->test_fraction * n_c[c] + 0.5), n_c[c] - 1);
    g_assert_cmpint(test_c[c], ==, t);
    if (n_c[c] > 0)
      g_assert_cmpint(n_c[c] - test_c[c], >=, 1); /* every class has a train slide */
    /* the ratio's share, within one slide */
    g_assert_cmpfloat(fabs((double)n_c[c] - (double)S * o->class_ratio[c] / A), <, 1.0);
  }
  if (even) {
    g_assert_cmpint(hi - lo, <=, 1);
    g_assert_cmpint(lo, >=, 1);
  }
}

static void check_plan(const MexdSynthOptions *o)
{
  GError *error = NULL;
  g_autoptr(MexdSynth) s = mexd_synth_new(o, &error);
  g_assert_no_error(error);
  g_assert_nonnull(s);
  check_plan_properties(s, o);
  g_autofree RefSlide *ref = ref_plan(o);
  for (int i = 0; i < o->n_slides; i++) {
    const MexdSynthSlide *sl = mexd_synth_slide(s, i);
    if (sl->label != ref[i].label || sl->test != ref[i].test || sl->n_instances != ref[i].n ||
        sl->n_lesion != ref[i].m)
      g_error("seed %" G_GUINT64_FORMAT " slide %d: class %d test %d N %" G_GINT64_FORMAT
              " m %" G_GINT64_FORMAT ", the header gives %d %d %" G_GINT64_FORMAT
              " %" G_GINT64_FORMAT,
              o->seed, i, sl->label, sl->test, sl->n_instances, sl->n_lesion, ref[i].label,
              ref[i].test, ref[i].n, ref[i].m);
  }
}

/* The presets set what synth.c says, keep the seed, and are valid; an unknown name is refused. */
static void test_presets(void)
{
  const char *const *names = mexd_synth_preset_names();
  g_assert_cmpstr(names[0], ==, "camelyon16-like");
  g_assert_cmpstr(names[1], ==, "bracs-like");
  g_assert_null(names[2]);
  static const struct {
    int classes, slides, train_min, ratio[3];
  } want[] = {{2, 400, 270, {3, 2, 1}}, {3, 450, 270, {3, 1, 2}}};
  for (int k = 0; names[k]; k++) {
    MexdSynthOptions o;
    mexd_synth_options_init(&o, 2);
    o.seed = 77;
    GError *error = NULL;
    g_assert_true(mexd_synth_options_preset(&o, names[k], &error));
    g_assert_no_error(error);
    g_assert_cmpuint(o.seed, ==, 77);
    g_assert_cmpint(o.n_classes, ==, want[k].classes);
    g_assert_cmpint(o.n_slides, ==, want[k].slides);
    for (int c = 0; c < o.n_classes; c++)
      g_assert_cmpint(o.class_ratio[c], ==, want[k].ratio[c]);
    g_assert_true(mexd_synth_options_check(&o, &error));
    g_autoptr(MexdSynth) s = mexd_synth_new(&o, &error);
    g_assert_no_error(error);
    check_plan(&o);
    int train = 0;
    for (int i = 0; i < o.n_slides; i++)
      train += !mexd_synth_slide(s, i)->test;
    g_test_message("%s: %d slides, %d train", names[k], o.n_slides, train);
    g_assert_cmpint(train, >=, want[k].train_min); /* the issue: ≥ 400 slides, ≥ 270 train */
  }
  MexdSynthOptions o;
  mexd_synth_options_init(&o, 2);
  GError *error = NULL;
  g_assert_false(mexd_synth_options_preset(&o, "camelyon17", &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "unknown preset", "--preset", "camelyon17",
               NULL);
}

static void test_plan(void)
{
  for (int k = 0; k < n_configs(); k++) {
    MexdSynthOptions o = config(k);
    check_plan(&o);
  }
  /* the defaults (the benchmark as shipped), a few seeds */
  for (int C = 2; C <= 3; C++)
    for (uint64_t seed = 0; seed < 4; seed++) {
      MexdSynthOptions o;
      mexd_synth_options_init(&o, C);
      o.seed = seed * 0x9e3779b97f4a7c15ull;
      check_plan(&o);
    }
  /* uneven class counts, a 4-digit name, high test fractions (t_c = n_c − 1) */
  MexdSynthOptions o = small_options(3, 11);
  o.n_slides = 1001;
  o.test_fraction = 0.999;
  check_plan(&o);
  {
    g_autoptr(MexdSynth) s = mexd_synth_new(&o, NULL);
    g_assert_cmpstr(mexd_synth_slide(s, 0)->id, ==, "slide_0000");
    g_assert_cmpstr(mexd_synth_slide(s, 1000)->id, ==, "slide_1000");
  }
  o.n_slides = 3; /* one slide per class: no test slide */
  o.test_fraction = 0.9;
  check_plan(&o);
  o.n_slides = 14;
  o.test_fraction = 0.25; /* n_c = 5, 5, 4: t_c = 1, 1, 1 (⌊1.25 + 0.5⌋, ⌊1.0 + 0.5⌋) */
  check_plan(&o);
  o.test_fraction = 0.3; /* t_c = 2, 2, 1 */
  check_plan(&o);
  o.n_classes = 2;
  o.n_slides = 7;
  o.test_fraction = 0.5; /* n_c = 4, 3: t_c = 2, 2 */
  check_plan(&o);
  o.min_instances = o.max_instances = 77;
  check_plan(&o);
  {
    g_autoptr(MexdSynth) s = mexd_synth_new(&o, NULL);
    for (int i = 0; i < 7; i++)
      g_assert_cmpint(mexd_synth_slide(s, i)->n_instances, ==, 77);
  }

  /* class ratios: the presets' (exact counts) and a lopsided one */
  {
    MexdSynthOptions r = small_options(2, 5);
    r.n_slides = 400;
    r.test_fraction = 0.32;
    r.class_ratio[0] = 3;
    r.class_ratio[1] = 2;
    check_plan(&r);
    g_autoptr(MexdSynth) s = mexd_synth_new(&r, NULL);
    int n[2] = {0, 0}, t[2] = {0, 0};
    for (int i = 0; i < 400; i++) {
      n[mexd_synth_slide(s, i)->label]++;
      t[mexd_synth_slide(s, i)->label] += mexd_synth_slide(s, i)->test;
    }
    g_assert_cmpint(n[0], ==, 240);
    g_assert_cmpint(n[1], ==, 160);
    g_assert_cmpint(t[0], ==, 77); /* ⌊0.32·240 + 0.5⌋ */
    g_assert_cmpint(t[1], ==, 51); /* ⌊0.32·160 + 0.5⌋ */
    MexdSynthOptions b3 = small_options(3, 6);
    b3.n_slides = 450;
    b3.test_fraction = 0.2;
    b3.class_ratio[0] = 3;
    b3.class_ratio[1] = 1;
    b3.class_ratio[2] = 2;
    check_plan(&b3);
    b3.n_slides = 23;
    b3.class_ratio[0] = 1;
    b3.class_ratio[1] = 20;
    b3.class_ratio[2] = 1; /* 1 slide of class 0 and of class 2: no test slide of theirs */
    check_plan(&b3);
  }

  /* the classes are shuffled: not every seed gives the same labels */
  MexdSynthOptions a = small_options(2, 1), b = small_options(2, 2);
  g_autoptr(MexdSynth) sa = mexd_synth_new(&a, NULL);
  g_autoptr(MexdSynth) sb = mexd_synth_new(&b, NULL);
  gboolean differ = FALSE, sizes_differ = FALSE;
  for (int i = 0; i < a.n_slides; i++) {
    differ = differ || mexd_synth_slide(sa, i)->label != mexd_synth_slide(sb, i)->label;
    sizes_differ = sizes_differ ||
                   mexd_synth_slide(sa, i)->n_instances != mexd_synth_slide(sb, i)->n_instances;
  }
  g_assert_true(differ);
  g_assert_true(sizes_differ);
}

/* ---- the centres ---- */

static void check_centres(const MexdSynthOptions *o)
{
  GError *error = NULL;
  g_autoptr(MexdSynth) s = mexd_synth_new(o, &error);
  g_assert_no_error(error);
  const int D = o->dim, K = o->background_clusters, L = o->lesion_clusters;
  const double R = o->radius, delta = o->lesion_distance;
  g_assert_cmpint(mexd_synth_n_clusters(s), ==, ref_n_clusters(o));
  g_assert_null(mexd_synth_centre(s, -1));
  g_assert_null(mexd_synth_centre(s, ref_n_clusters(o)));
  g_autofree double *ref = ref_centres(o);
  for (int k = 0; k < ref_n_clusters(o); k++) {
    const double *c = mexd_synth_centre(s, k);
    g_assert_nonnull(c);
    for (int i = 0; i < D; i++)
      if (fabs(c[i] - ref[(size_t)k * D + i]) > 1e-12 * R)
        g_error("seed %" G_GUINT64_FORMAT " centre %d [%d] = %.17g, the header gives %.17g",
                o->seed, k, i, c[i], ref[(size_t)k * D + i]);
    /* every centre on the sphere of radius R */
    g_assert_cmpfloat(fabs(sqrt(ref_dot(c, c, D)) - R), <=, 1e-9);
  }
  const double cos_t = 1 - delta * delta / (2 * R * R);
  for (int cl = 1; cl < o->n_classes; cl++)
    for (int j = 0; j < L; j++) {
      const double *l = mexd_synth_centre(s, K + (cl - 1) * L + j);
      const double *p = mexd_synth_centre(s, j % K);
      g_assert_cmpfloat(fabs(ref_dist(l, p, D) - delta), <=, 1e-9);
      g_assert_cmpfloat(fabs(ref_dot(l, p, D) / (R * R) - cos_t), <=, 1e-12);
      /* the classes' clusters of one parent differ (at Δ = 2R all are −b_p; at D = 2 the one
       * direction orthogonal to b̂_p leaves the same centre or its mirror image, 2R·sin θ away) */
      for (int c2 = cl + 1; c2 < o->n_classes && delta < 2 * R; c2++) {
        const double *l2 = mexd_synth_centre(s, K + (c2 - 1) * L + j);
        double d = ref_dist(l, l2, D);
        if (D > 2)
          g_assert_cmpfloat(d, >, 0.05 * delta);
        else
          g_assert_true(d < 1e-9 || fabs(d - 2 * R * sqrt(1 - cos_t * cos_t)) < 1e-9);
      }
      /* the clusters of one class differ too */
      for (int j2 = j + 1; j2 < L; j2++)
        g_assert_cmpfloat(ref_dist(l, mexd_synth_centre(s, K + (cl - 1) * L + j2), D), >,
                          0.05 * delta);
    }
}

static void test_centres(void)
{
  for (int k = 0; k < n_configs(); k++) {
    MexdSynthOptions o = config(k);
    check_centres(&o);
  }
  MexdSynthOptions o = small_options(3, 5);
  o.lesion_distance = 2 * o.radius; /* the antipode */
  check_centres(&o);
  o.dim = 2; /* v is then ± the one direction orthogonal to b̂_p */
  o.lesion_distance = 1.0;
  check_centres(&o);

  /* in high D (the defaults' D = 384) the background centres are nearly orthogonal, each lesion
   * centre's nearest centre is its parent, and the classes' clusters of one parent are about
   * Δ·√2 apart */
  mexd_synth_options_init(&o, 3);
  o.seed = 9;
  check_centres(&o);
  g_autoptr(MexdSynth) s = mexd_synth_new(&o, NULL);
  const int D = o.dim, K = o.background_clusters, L = o.lesion_clusters;
  const int n = mexd_synth_n_clusters(s);
  for (int a = 0; a < K; a++)
    for (int b = a + 1; b < K; b++) {
      double d = ref_dist(mexd_synth_centre(s, a), mexd_synth_centre(s, b), D);
      g_assert_cmpfloat(fabs(d / (o.radius * G_SQRT2) - 1), <, 0.15);
    }
  for (int g = K; g < n; g++) {
    int parent = ((g - K) % L) % K, nearest = -1;
    double best = INFINITY;
    for (int k = 0; k < n; k++) {
      double d = k == g ? INFINITY : ref_dist(mexd_synth_centre(s, g), mexd_synth_centre(s, k), D);
      if (d < best) {
        best = d;
        nearest = k;
      }
    }
    g_assert_cmpint(nearest, ==, parent);
  }
  for (int j = 0; j < L; j++) {
    double d = ref_dist(mexd_synth_centre(s, K + j), mexd_synth_centre(s, K + L + j), D);
    g_assert_cmpfloat(fabs(d / (o.lesion_distance * G_SQRT2) - 1), <, 0.15);
  }

  /* another seed, other centres */
  MexdSynthOptions o2 = o;
  o2.seed = 10;
  g_autoptr(MexdSynth) s2 = mexd_synth_new(&o2, NULL);
  g_assert_cmpfloat(ref_dist(mexd_synth_centre(s, 0), mexd_synth_centre(s2, 0), D), >, 1.0);
}

/* ---- the bags ---- */

static void float_le(GChecksum *sum, const float *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    g_checksum_update(sum, b, 4);
  }
}

typedef struct {
  double sum_sq; /* Σ |x − μ|² over the instances */
  int64_t n;
} NoiseStats;

/* Checks slide i's bag against the header; returns its bag (with the truth in *label, *cluster). */
static MexdBag *check_bag(const MexdSynth *s, const MexdSynthOptions *o, const RefSlide *ref,
                          const double *centres, int i, int8_t **label_out, int8_t **cluster_out,
                          NoiseStats *noise)
{
  const int D = o->dim, K = o->background_clusters, L = o->lesion_clusters;
  const MexdSynthSlide *sl = mexd_synth_slide(s, i);
  const int64_t N = sl->n_instances, m = sl->n_lesion;
  const int c = sl->label;
  GError *error = NULL;
  int8_t *label = NULL, *cluster = NULL;
  MexdBag *bag = mexd_synth_bag(s, i, &label, &cluster, &error);
  g_assert_no_error(error);
  g_assert_nonnull(bag);
  g_assert_nonnull(label);
  g_assert_nonnull(cluster);
  g_assert_cmpint(bag->n, ==, N);
  g_assert_cmpint(bag->d, ==, D);
  g_assert_cmpint(bag->patch_size, ==, 256);
  g_assert_cmpint(bag->patch_level, ==, 0);
  g_assert_nonnull(bag->coords);

  /* layout: cell (n mod W, ⌊n / W⌋), W = ⌈√N⌉ */
  int64_t W = (int64_t)ceil(sqrt((double)N));
  g_assert_cmpint((W - 1) * (W - 1), <, N);
  g_assert_cmpint(W * W, >=, N);
  for (int64_t n = 0; n < N; n++) {
    g_assert_cmpint(bag->coords[2 * n], ==, 256 * (n % W));
    g_assert_cmpint(bag->coords[2 * n + 1], ==, 256 * (n / W));
  }

  /* labels: 0 or the class, m of them the class */
  int64_t n_lesion = 0;
  for (int64_t n = 0; n < N; n++) {
    g_assert_true(label[n] == 0 || label[n] == c);
    n_lesion += label[n] != 0;
  }
  g_assert_cmpint(n_lesion, ==, m);
  if (c == 0)
    g_assert_cmpint(n_lesion, ==, 0);

  /* the region: the m cells nearest the centre cell (squared distances in cells, ties to the
   * lower index) — the centre cell itself among them, nothing outside nearer than anything in */
  if (m > 0) {
    const int64_t q = ref->centre, qc = q % W, qr = q / W;
    g_assert_cmpint(label[q], ==, c);
    int64_t in_max = -1, in_max_n = -1, out_min = INT64_MAX, out_min_n = -1;
    for (int64_t n = 0; n < N; n++) {
      int64_t dc = n % W - qc, dr = n / W - qr, d2 = dc * dc + dr * dr;
      if (label[n] && (d2 > in_max || (d2 == in_max && n > in_max_n))) {
        in_max = d2;
        in_max_n = n;
      }
      if (!label[n] && (d2 < out_min || (d2 == out_min && n < out_min_n))) {
        out_min = d2;
        out_min_n = n;
      }
    }
    if (m < N)
      g_assert_true(in_max < out_min || (in_max == out_min && in_max_n < out_min_n));
  }

  /* clusters: background 0 … K−1, lesion K + (c−1)·L … K + c·L − 1; exactly the header's draws */
  double w[64], cum[64], total = 0;
  for (int k = 0; k < K; k++) {
    uint32_t x[4];
    ref_words(o->seed, 4, (uint32_t)i, (uint32_t)k, 0, 0, x);
    w[k] = -log(ref_u(x[0]));
    total += w[k];
    cum[k] = total;
  }
  g_autofree double *z = g_new(double, D);
  double bag_sq = 0;
  for (int64_t n = 0; n < N; n++) {
    int g = cluster[n];
    if (label[n] == 0) {
      g_assert_cmpint(g, >=, 0);
      g_assert_cmpint(g, <, K);
    } else {
      g_assert_cmpint(g, >=, K + (c - 1) * L);
      g_assert_cmpint(g, <, K + c * L);
    }
    uint32_t y[4];
    ref_words(o->seed, 5, (uint32_t)i, (uint32_t)n, 0, 0, y);
    int want = K - 1;
    if (label[n] == 0) {
      for (int k = 0; k < K; k++)
        if (ref_u(y[0]) * total < cum[k]) {
          want = k;
          break;
        }
    } else {
      want = K + (c - 1) * L + (int)ref_int(y[1], L);
    }
    if (g != want)
      g_error("seed %" G_GUINT64_FORMAT " slide %d instance %" G_GINT64_FORMAT
              ": cluster %d, the header gives %d",
              o->seed, i, n, g, want);
    const double *mu = centres + (size_t)g * D;
    ref_vector(o->seed, 6, (uint32_t)i, (uint32_t)n, D, z);
    const float *x = bag->features + (size_t)n * D;
    double sq = 0;
    for (int d = 0; d < D; d++) {
      double v = mu[d] + o->noise * z[d];
      /* the float of the header's double; libm's log may move the double's last bits, and so
       * the rounding by one float step */
      if (fabs((double)x[d] - v) > 1.5 * FLT_EPSILON * fabs(v) + 1e-12)
        g_error("seed %" G_GUINT64_FORMAT " slide %d instance %" G_GINT64_FORMAT
                " feature %d = %.9g, the header gives %.9g",
                o->seed, i, n, d, (double)x[d], v);
      double r = (double)x[d] - mu[d];
      sq += r * r;
    }
    bag_sq += sq;
  }
  /* the noise: |x − μ|² / σ² is chi-square with D degrees of freedom (mean D, variance 2D); the
   * bag's mean within 5 standard errors (plus the float rounding when σ = 0) */
  double s2 = o->noise * o->noise, mean = bag_sq / (double)N;
  double se = s2 * sqrt(2.0 * D / (double)N);
  if (fabs(mean - s2 * D) > 5 * se + 1e-9)
    g_error("seed %" G_GUINT64_FORMAT " slide %d: mean |x − μ|² = %g, σ²·D = %g (se %g)", o->seed,
            i, mean, s2 * D, se);
  noise->sum_sq += bag_sq;
  noise->n += N;
  *label_out = label;
  *cluster_out = cluster;
  return bag;
}

static void check_bags(const MexdSynthOptions *o, GChecksum *digest)
{
  GError *error = NULL;
  g_autoptr(MexdSynth) s = mexd_synth_new(o, &error);
  g_assert_no_error(error);
  /* the centres' doubles first: their last bits show any change of the arithmetic (the float32
   * features rarely do) */
  for (int k = 0; digest && k < mexd_synth_n_clusters(s); k++)
    for (int d = 0; d < o->dim; d++) {
      uint64_t u;
      memcpy(&u, &mexd_synth_centre(s, k)[d], 8);
      uint8_t b[8];
      for (int j = 0; j < 8; j++)
        b[j] = (uint8_t)(u >> (8 * j));
      g_checksum_update(digest, b, 8);
    }
  const int S = o->n_slides;
  g_autofree RefSlide *ref = ref_plan(o);
  g_autofree double *centres = ref_centres(o);
  MexdBag **bags = g_new0(MexdBag *, S);
  int8_t **labels = g_new0(int8_t *, S), **clusters = g_new0(int8_t *, S);
  NoiseStats noise = {0, 0};
  for (int i = 0; i < S; i++) {
    bags[i] = check_bag(s, o, &ref[i], centres, i, &labels[i], &clusters[i], &noise);
    if (digest) {
      const int64_t N = bags[i]->n;
      float_le(digest, bags[i]->features, (size_t)N * o->dim);
      g_checksum_update(digest, (const guchar *)labels[i], (gssize)N);
      g_checksum_update(digest, (const guchar *)clusters[i], (gssize)N);
    }
  }
  /* over all slides: the mean within 4 standard errors */
  double s2 = o->noise * o->noise, mean = noise.sum_sq / (double)noise.n;
  g_assert_cmpfloat(fabs(mean - s2 * o->dim), <=,
                    4 * s2 * sqrt(2.0 * o->dim / (double)noise.n) + 1e-9);

  /* any slide alone (another data set object, the slides backwards, without the truth) gives the
   * same values as in the whole run */
  g_autoptr(MexdSynth) s2n = mexd_synth_new(o, &error);
  g_assert_no_error(error);
  for (int i = S - 1; i >= 0; i--) {
    g_autoptr(MexdBag) alone = mexd_synth_bag(s2n, i, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(alone->n, ==, bags[i]->n);
    g_assert_cmpint(alone->d, ==, bags[i]->d);
    g_assert_cmpmem(alone->features, (gsize)alone->n * alone->d * sizeof(float), bags[i]->features,
                    (gsize)bags[i]->n * bags[i]->d * sizeof(float));
    g_assert_cmpmem(alone->coords, (gsize)alone->n * 2 * sizeof(int32_t), bags[i]->coords,
                    (gsize)bags[i]->n * 2 * sizeof(int32_t));
    int8_t *label = NULL;
    g_autoptr(MexdBag) again = mexd_synth_bag(s, i, &label, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(label, (gsize)again->n, labels[i], (gsize)bags[i]->n);
    g_free(label);
    int8_t *cluster = NULL;
    g_autoptr(MexdBag) again2 = mexd_synth_bag(s2n, i, NULL, &cluster, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(cluster, (gsize)again2->n, clusters[i], (gsize)bags[i]->n);
    g_free(cluster);
  }
  g_assert_null(mexd_synth_bag(s, -1, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "slide -1", NULL);
  g_assert_null(mexd_synth_bag(s, S, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "slide S", NULL);
  g_assert_null(mexd_synth_bag(NULL, 0, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "no data set", NULL);

  for (int i = 0; i < S; i++) {
    mexd_bag_free(bags[i]);
    g_free(labels[i]);
    g_free(clusters[i]);
  }
  g_free(bags);
  g_free(labels);
  g_free(clusters);
}

/* The digest of config(0)'s and config(1)'s centres (float64 little-endian), then slide after
 * slide their features (float32 little-endian), labels and clusters: the header promises these
 * values on every IEEE-754 machine (a change of the model must bump its version and this
 * digest). */
#define GOLDEN_DIGEST "716379924af55128e8bcffb0ed33709a48f20760cec1afcb633757c7d63d6de7"

static void test_bags(void)
{
  g_autoptr(GChecksum) digest = g_checksum_new(G_CHECKSUM_SHA256);
  for (int k = 0; k < n_configs(); k++) {
    MexdSynthOptions o = config(k);
    check_bags(&o, k < 2 ? digest : NULL);
  }
  g_test_message("digest %s", g_checksum_get_string(digest));
  g_assert_cmpstr(g_checksum_get_string(digest), ==, GOLDEN_DIGEST);

  /* with σ = 0 a feature is its centre rounded to float32 */
  MexdSynthOptions o = config(3);
  g_autoptr(MexdSynth) s = mexd_synth_new(&o, NULL);
  int8_t *cluster = NULL;
  g_autoptr(MexdBag) bag = mexd_synth_bag(s, 0, NULL, &cluster, NULL);
  for (int64_t n = 0; n < bag->n; n++)
    for (int d = 0; d < o.dim; d++)
      g_assert_cmpfloat(bag->features[n * o.dim + d], ==,
                        (float)mexd_synth_centre(s, cluster[n])[d]);
  g_free(cluster);
}

/* ---- writing ---- */

typedef struct {
  int calls;
  const MexdSynth *plan;
  int n;
} Progress;

static void on_progress(const MexdSynthSlide *slide, int done, int n, gpointer user_data)
{
  Progress *p = user_data;
  p->calls++;
  g_assert_cmpint(done, ==, p->calls);
  g_assert_cmpint(n, ==, p->n);
  g_assert_nonnull(slide);
  const MexdSynthSlide *want = mexd_synth_slide(p->plan, done - 1);
  g_assert_cmpint(slide->index, ==, done - 1);
  g_assert_cmpstr(slide->id, ==, want->id);
  g_assert_cmpint(slide->label, ==, want->label);
  g_assert_cmpint(slide->test, ==, want->test);
  g_assert_cmpint(slide->n_instances, ==, want->n_instances);
  g_assert_cmpint(slide->n_lesion, ==, want->n_lesion);
}

static void write_ok(const MexdSynthOptions *o, const char *dir, gboolean force)
{
  g_autoptr(MexdSynth) plan = mexd_synth_new(o, NULL);
  Progress p = {0, plan, o->n_slides};
  GError *error = NULL;
  gboolean ok = mexd_synth_write(o, dir, force, on_progress, &p, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  g_assert_cmpint(p.calls, ==, o->n_slides);
}

/* The files of a written data set, relative to it ("h5_files/…", "labels.csv", "synth.json"),
 * checked to be exactly these. */
static char **expected_files(const MexdSynth *s)
{
  int S = mexd_synth_n_slides(s);
  char **v = g_new0(char *, S + 3);
  for (int i = 0; i < S; i++)
    v[i] = g_strdup_printf("h5_files/%s.h5", mexd_synth_slide(s, i)->id);
  v[S] = g_strdup("labels.csv");
  v[S + 1] = g_strdup("synth.json");
  return v;
}

static void assert_listing(const char *dir, const MexdSynth *s, const char *extra)
{
  g_autofree char *h5dir = g_build_filename(dir, "h5_files", NULL);
  g_auto(GStrv) h5 = list_sorted(h5dir);
  int S = mexd_synth_n_slides(s);
  g_assert_cmpint(g_strv_length(h5), ==, S); /* no temporary file left */
  for (int i = 0; i < S; i++) {
    g_autofree char *name = g_strconcat(mexd_synth_slide(s, i)->id, ".h5", NULL);
    g_assert_cmpstr(h5[i], ==, name);
  }
  g_auto(GStrv) top = list_sorted(dir);
  g_assert_cmpint(g_strv_length(top), ==, extra ? 4 : 3);
  g_assert_true(g_strv_contains((const char *const *)top, "h5_files"));
  g_assert_true(g_strv_contains((const char *const *)top, "labels.csv"));
  g_assert_true(g_strv_contains((const char *const *)top, "synth.json"));
  if (extra)
    g_assert_true(g_strv_contains((const char *const *)top, extra));
}

static void assert_same_tree(const char *a, const char *b, const MexdSynth *s)
{
  g_auto(GStrv) files = expected_files(s);
  for (int k = 0; files[k]; k++) {
    g_autofree char *pa = g_build_filename(a, files[k], NULL);
    g_autofree char *pb = g_build_filename(b, files[k], NULL);
    assert_same_file(pa, pb);
  }
}

static double json_number(const char *json, const char *key)
{
  g_autofree char *k = g_strdup_printf("\"%s\": ", key);
  const char *p = strstr(json, k);
  if (!p)
    g_error("synth.json lacks %s:\n%s", key, json);
  char *end = NULL;
  double v = g_ascii_strtod(p + strlen(k), &end);
  g_assert_true(end != p + strlen(k));
  return v;
}

#ifdef TEST_HAVE_HDF5
/* Dataset `name` of `path`'s file: its file type is `type`, its shape `rank` dims `dims`; read as
 * `mem_type` into `out`. */
static void h5_check_dataset(hid_t file, const char *name, hid_t type, int rank,
                             const hsize_t *dims, hid_t mem_type, void *out)
{
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  if (d < 0)
    g_error("no dataset %s", name);
  hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
  g_assert_cmpint(H5Tequal(t, type), >, 0);
  g_assert_cmpint(H5Sget_simple_extent_ndims(sp), ==, rank);
  hsize_t got[2] = {0, 0};
  H5Sget_simple_extent_dims(sp, got, NULL);
  for (int k = 0; k < rank; k++)
    g_assert_cmpuint(got[k], ==, dims[k]);
  g_assert_cmpint(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), >=, 0);
  /* no modification times: they would break the byte-identical output */
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  g_assert_cmpint(H5Oget_info3(d, &info, H5O_INFO_TIME), >=, 0);
#elif H5_VERSION_GE(1, 10, 3)
  H5O_info_t info;
  g_assert_cmpint(H5Oget_info2(d, &info, H5O_INFO_TIME), >=, 0);
#endif
#if H5_VERSION_GE(1, 10, 3)
  g_assert_cmpint(info.mtime, ==, 0);
  g_assert_cmpint(info.ctime, ==, 0);
  g_assert_cmpint(info.atime, ==, 0);
#endif
  H5Sclose(sp);
  H5Tclose(t);
  H5Dclose(d);
}

static int64_t h5_i64_attr(hid_t obj, const char *name)
{
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  g_assert_cmpint(a, >=, 0);
  hid_t t = H5Aget_type(a);
  g_assert_cmpint(H5Tequal(t, H5T_STD_I64LE), >, 0);
  int64_t v = -1;
  g_assert_cmpint(H5Aread(a, H5T_NATIVE_INT64, &v), >=, 0);
  H5Tclose(t);
  H5Aclose(a);
  return v;
}

/* The file's layout and its ground truth (which mexd_bag_read ignores) against the bag. */
static void check_h5_truth(const char *path, const MexdBag *bag, const int8_t *label,
                           const int8_t *cluster)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  g_assert_cmpint(f, >=, 0);
  const hsize_t nd[2] = {(hsize_t)bag->n, (hsize_t)bag->d}, n2[2] = {(hsize_t)bag->n, 2};
  g_autofree float *features = g_new(float, (size_t)bag->n * bag->d);
  h5_check_dataset(f, "features", H5T_IEEE_F32LE, 2, nd, H5T_NATIVE_FLOAT, features);
  g_assert_cmpmem(features, (gsize)bag->n * bag->d * sizeof(float), bag->features,
                  (gsize)bag->n * bag->d * sizeof(float));
  g_autofree int64_t *coords = g_new(int64_t, (size_t)bag->n * 2);
  h5_check_dataset(f, "coords", H5T_STD_I64LE, 2, n2, H5T_NATIVE_INT64, coords);
  for (int64_t k = 0; k < 2 * bag->n; k++)
    g_assert_cmpint(coords[k], ==, bag->coords[k]);
  hid_t c = H5Dopen2(f, "coords", H5P_DEFAULT);
  g_assert_cmpint(h5_i64_attr(c, "patch_level"), ==, 0);
  g_assert_cmpint(h5_i64_attr(c, "patch_size"), ==, 256);
  H5Dclose(c);
  g_autofree int8_t *v = g_new(int8_t, bag->n);
  h5_check_dataset(f, "instance_label", H5T_STD_I8LE, 1, nd, H5T_NATIVE_INT8, v);
  g_assert_cmpmem(v, (gsize)bag->n, label, (gsize)bag->n);
  h5_check_dataset(f, "instance_cluster", H5T_STD_I8LE, 1, nd, H5T_NATIVE_INT8, v);
  g_assert_cmpmem(v, (gsize)bag->n, cluster, (gsize)bag->n);
  g_assert_cmpint(H5Fclose(f), >=, 0);
}
#endif

static void test_write(void)
{
  MexdSynthOptions o = small_options(3, 1);
  o.n_slides = 6; /* each file is flushed to disk: few of them */
  o.min_fraction = 0.05;
  o.max_fraction = 0.3;
  GError *error = NULL;
  if (!have_h5) {
    g_autofree char *dir = new_path("no-h5");
    g_assert_false(mexd_synth_write(&o, dir, FALSE, NULL, NULL, &error));
    expect_error(&error, MEXD_ERROR_UNSUPPORTED, "without HDF5", "HDF5", NULL);
    g_test_skip("libmexd built without HDF5");
    return;
  }
  g_autoptr(MexdSynth) s = mexd_synth_new(&o, NULL);
  const int S = o.n_slides;

  /* two runs, one into a missing nested directory and one into an existing empty one */
  g_autofree char *parent = new_path("a");
  g_autofree char *a = g_build_filename(parent, "deeper", NULL);
  g_autofree char *b = new_path("b");
  g_assert_cmpint(g_mkdir(b, 0755), ==, 0);
  write_ok(&o, a, FALSE);
  write_ok(&o, b, FALSE);
  assert_listing(a, s, NULL);
  assert_listing(b, s, NULL);
  assert_same_tree(a, b, s);

  /* labels.csv: the plan, slide by slide */
  {
    g_autoptr(GString) want = g_string_new("slide_id,label,split\n");
    for (int i = 0; i < S; i++) {
      const MexdSynthSlide *sl = mexd_synth_slide(s, i);
      g_string_append_printf(want, "%s,%s,%s\n", sl->id, mexd_synth_class_name(3, sl->label),
                             sl->test ? "test" : "train");
    }
    g_autofree char *path = g_build_filename(a, "labels.csv", NULL);
    g_autofree char *got = NULL;
    g_assert_true(g_file_get_contents(path, &got, NULL, NULL));
    g_assert_cmpstr(got, ==, want->str);
  }
  /* synth.json: the options and cos θ */
  {
    g_autofree char *path = g_build_filename(a, "synth.json", NULL);
    g_autofree char *json = NULL;
    g_assert_true(g_file_get_contents(path, &json, NULL, NULL));
    g_assert_nonnull(strstr(json, "\"classes\": [\"benign\", \"atypical\", \"malignant\"]"));
    g_assert_cmpfloat(json_number(json, "model_version"), ==, 1);
    g_assert_cmpfloat(json_number(json, "seed"), ==, 1);
    g_assert_cmpfloat(json_number(json, "slides"), ==, S);
    g_assert_cmpfloat(json_number(json, "dim"), ==, o.dim);
    g_assert_cmpfloat(json_number(json, "min_instances"), ==, o.min_instances);
    g_assert_cmpfloat(json_number(json, "max_instances"), ==, o.max_instances);
    g_assert_cmpfloat(json_number(json, "min_fraction"), ==, o.min_fraction);
    g_assert_cmpfloat(json_number(json, "max_fraction"), ==, o.max_fraction);
    g_assert_cmpfloat(json_number(json, "test_fraction"), ==, o.test_fraction);
    g_assert_cmpfloat(json_number(json, "background_clusters"), ==, o.background_clusters);
    g_assert_cmpfloat(json_number(json, "lesion_clusters"), ==, o.lesion_clusters);
    g_assert_cmpfloat(json_number(json, "radius"), ==, o.radius);
    g_assert_cmpfloat(json_number(json, "lesion_distance"), ==, o.lesion_distance);
    g_assert_cmpfloat(json_number(json, "noise"), ==, o.noise);
    g_assert_cmpfloat(json_number(json, "lesion_cos_angle"), ==,
                      1 - o.lesion_distance * o.lesion_distance / (2 * o.radius * o.radius));
    g_assert_cmpfloat(json_number(json, "patch_size"), ==, 256);
    g_assert_cmpfloat(json_number(json, "patch_level"), ==, 0);
  }
  /* the h5 files read back as the bags */
  for (int i = 0; i < S; i++) {
    const MexdSynthSlide *sl = mexd_synth_slide(s, i);
    g_autofree char *name = g_strconcat(sl->id, ".h5", NULL);
    g_autofree char *path = g_build_filename(a, "h5_files", name, NULL);
    g_autoptr(MexdBag) got = mexd_bag_read(path, MEXD_BAG_AUTO, &error);
    g_assert_no_error(error);
    g_autoptr(MexdBag) want = mexd_synth_bag(s, i, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(got->n, ==, want->n);
    g_assert_cmpint(got->d, ==, want->d);
    g_assert_cmpmem(got->features, (gsize)got->n * got->d * sizeof(float), want->features,
                    (gsize)want->n * want->d * sizeof(float));
    g_assert_nonnull(got->coords);
    g_assert_cmpmem(got->coords, (gsize)got->n * 2 * sizeof(int32_t), want->coords,
                    (gsize)want->n * 2 * sizeof(int32_t));
    g_assert_cmpint(got->patch_size, ==, 256);
    g_assert_cmpint(got->patch_level, ==, 0);
#ifdef TEST_HAVE_HDF5
    /* the dtypes CLAM writes, and the ground truth */
    g_autofree int8_t *label = NULL, *cluster = NULL;
    g_autoptr(MexdBag) truth = mexd_synth_bag(s, i, &label, &cluster, &error);
    g_assert_no_error(error);
    check_h5_truth(path, truth, label, cluster);
#endif
  }

  /* another seed: other features (and so other files) */
  MexdSynthOptions o2 = o;
  o2.seed = 2;
  g_autoptr(MexdSynth) s2 = mexd_synth_new(&o2, NULL);
  g_autofree char *c = new_path("c");
  write_ok(&o2, c, FALSE);
  assert_listing(c, s2, NULL);
  for (int i = 0; i < S; i++) {
    g_autofree char *name = g_strconcat(mexd_synth_slide(s, i)->id, ".h5", NULL);
    g_autofree char *pa = g_build_filename(a, "h5_files", name, NULL);
    g_autofree char *pc = g_build_filename(c, "h5_files", name, NULL);
    g_autoptr(MexdBag) ba = mexd_bag_read(pa, MEXD_BAG_H5, &error);
    g_assert_no_error(error);
    g_autoptr(MexdBag) bc = mexd_bag_read(pc, MEXD_BAG_H5, &error);
    g_assert_no_error(error);
    int64_t n = MIN(ba->n, bc->n) * o.dim, same = 0;
    for (int64_t k = 0; k < n; k++)
      same += ba->features[k] == bc->features[k];
    g_assert_cmpint(same, ==, 0);
  }

  /* a non-empty directory is refused without force, and nothing is written into it */
  g_assert_false(mexd_synth_write(&o, a, FALSE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "non-empty", "not empty", "--force", NULL);
  assert_listing(a, s, NULL);
  g_autofree char *d = new_path("d");
  g_assert_cmpint(g_mkdir(d, 0755), ==, 0);
  g_autofree char *notes = g_build_filename(d, "notes.txt", NULL);
  g_assert_true(g_file_set_contents(notes, "mine\n", -1, NULL));
  g_assert_false(mexd_synth_write(&o, d, FALSE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "non-empty", "not empty", NULL);
  {
    g_auto(GStrv) top = list_sorted(d);
    g_assert_cmpint(g_strv_length(top), ==, 1);
  }
  /* with force: written, other files left alone */
  write_ok(&o, d, TRUE);
  assert_listing(d, s, "notes.txt");
  assert_same_tree(a, d, s);
  {
    g_autofree char *got = NULL;
    g_assert_true(g_file_get_contents(notes, &got, NULL, NULL));
    g_assert_cmpstr(got, ==, "mine\n");
  }
  /* with force over another seed's data set: every file replaced */
  write_ok(&o, c, TRUE);
  assert_listing(c, s, NULL);
  assert_same_tree(a, c, s);
  /* and over itself: the same bytes */
  write_ok(&o, a, TRUE);
  assert_same_tree(a, b, s);

  /* argument errors */
  g_assert_false(mexd_synth_write(&o, notes, TRUE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "a file", "not a directory", NULL);
  g_assert_false(mexd_synth_write(&o, NULL, FALSE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL dir", NULL);
  g_assert_false(mexd_synth_write(&o, "", FALSE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "empty dir", NULL);
  g_assert_false(mexd_synth_write(NULL, a, TRUE, NULL, NULL, &error));
  expect_error(&error, MEXD_ERROR_INVALID_ARGUMENT, "NULL options", NULL);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  root = g_dir_make_tmp("mexd-test-synth-XXXXXX", NULL);
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
  g_test_add_func("/train/synth/options", test_options);
  g_test_add_func("/train/synth/plan", test_plan);
  g_test_add_func("/train/synth/presets", test_presets);
  g_test_add_func("/train/synth/centres", test_centres);
  g_test_add_func("/train/synth/bags", test_bags);
  g_test_add_func("/train/synth/write", test_write);
  int rc = g_test_run();
  remove_tree(root);
  g_free(root);
  return rc;
}
