/* test-metrics.c: the evaluation metrics (lib/train/metrics.h) against scikit-learn.
 *
 * /train/metrics/sklearn: every case of tests/fixtures/metrics/cases.json (written by
 * tests/reference/gen_metrics.py with sklearn 1.2.1: ties, separated and constant scores, argmax
 * ties, absent and never-predicted classes, n = 1 and 2), every metric at 1e-12 absolute, counts
 * exactly, undefined AUCs where sklearn has none.
 * /train/metrics/brute-force: the sorted tie-group count against all pairs, on heavily tied
 * random scores (bit-equal: both count the same integer).
 * /train/metrics/errors: bad input gives MEXD_ERROR_INVALID_ARGUMENT naming what is wrong.
 * /train/metrics/format, /train/metrics/json: the report and the JSON object.
 * /train/metrics/uncertainty: risk–coverage, calibration, temperature scaling and the bootstrap
 * interval against tests/fixtures/metrics/uncertainty.json (tests/reference/gen_uncertainty.py:
 * risk–coverage averaged over every order of tied slides, numpy's ECE, scipy's temperature,
 * philox.py's resamples), and their errors. */
#include "fixture-dir.h"
#include "mexd.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#define TOL 1e-12

static JsonArray *cases;
static double worst_diff; /* the largest |ours - sklearn| seen */

/* ---- helpers ---- */

static void check_value(const char *name, const char *what, int c, double got, gboolean defined,
                        JsonNode *want)
{
  if (JSON_NODE_HOLDS_NULL(want)) {
    if (defined || !isnan(got))
      g_error("%s: %s[%d] = %.17g, sklearn has none (undefined)", name, what, c, got);
    return;
  }
  double w = json_node_get_double(want);
  if (!defined)
    g_error("%s: %s[%d] undefined, sklearn %.17g", name, what, c, w);
  worst_diff = MAX(worst_diff, fabs(got - w));
  if (!(fabs(got - w) <= TOL))
    g_error("%s: %s[%d] = %.17g, sklearn %.17g (diff %.3g)", name, what, c, got, w, got - w);
}

static void check_doubles(const char *name, const char *what, const double *got, JsonObject *o,
                          int n_classes)
{
  JsonArray *a = json_object_get_array_member(o, what);
  g_assert_cmpuint(json_array_get_length(a), ==, (guint)n_classes);
  for (int c = 0; c < n_classes; c++)
    check_value(name, what, c, got[c], TRUE, json_array_get_element(a, c));
}

/* The case's probabilities and labels, g_malloc'd. */
static void load_case(JsonObject *o, double **probs, int **labels, int64_t *n, int *n_classes)
{
  *n_classes = (int)json_object_get_int_member(o, "n_classes");
  JsonArray *rows = json_object_get_array_member(o, "probs");
  JsonArray *lab = json_object_get_array_member(o, "labels");
  *n = json_array_get_length(lab);
  g_assert_cmpint(*n, ==, json_array_get_length(rows));
  *probs = g_new(double, *n **n_classes);
  *labels = g_new(int, *n);
  for (int64_t i = 0; i < *n; i++) {
    JsonArray *row = json_array_get_array_element(rows, i);
    g_assert_cmpint(json_array_get_length(row), ==, *n_classes);
    for (int c = 0; c < *n_classes; c++)
      (*probs)[i * *n_classes + c] = json_array_get_double_element(row, c);
    (*labels)[i] = (int)json_array_get_int_element(lab, i);
  }
}

static JsonObject *find_case(const char *name)
{
  for (guint k = 0; k < json_array_get_length(cases); k++) {
    JsonObject *o = json_array_get_object_element(cases, k);
    if (!strcmp(json_object_get_string_member(o, "name"), name))
      return o;
  }
  g_error("case %s not in the fixture", name);
}

static MexdMetrics *compute_case(const char *name)
{
  g_autofree double *probs = NULL;
  g_autofree int *labels = NULL;
  int64_t n;
  int C;
  load_case(find_case(name), &probs, &labels, &n, &C);
  g_autoptr(GError) error = NULL;
  MexdMetrics *m = mexd_metrics_compute(probs, labels, n, C, &error);
  g_assert_no_error(error);
  return m;
}

/* ---- against sklearn ---- */

static void test_sklearn(void)
{
  guint n_cases = json_array_get_length(cases);
  g_assert_cmpuint(n_cases, >=, 40);
  int n_ties = 0, n_partial = 0, n_undefined = 0;
  for (guint k = 0; k < n_cases; k++) {
    JsonObject *o = json_array_get_object_element(cases, k);
    const char *name = json_object_get_string_member(o, "name");
    g_autofree double *probs = NULL;
    g_autofree int *labels = NULL;
    int64_t n;
    int C;
    load_case(o, &probs, &labels, &n, &C);

    g_autoptr(GError) error = NULL;
    g_autoptr(MexdMetrics) m = mexd_metrics_compute(probs, labels, n, C, &error);
    g_assert_no_error(error);
    g_assert_nonnull(m);
    g_assert_cmpint(m->n, ==, n);
    g_assert_cmpint(m->n_classes, ==, C);

    /* argmax (numpy's, ties to the lowest index) */
    JsonArray *pred = json_object_get_array_member(o, "pred");
    for (int64_t i = 0; i < n; i++)
      if (mexd_metrics_argmax(probs + i * C, C) != json_array_get_int_element(pred, i))
        g_error("%s: argmax of slide %" G_GINT64_FORMAT " is %d, numpy %" G_GINT64_FORMAT, name, i,
                mexd_metrics_argmax(probs + i * C, C), json_array_get_int_element(pred, i));

    check_value(name, "accuracy", 0, m->accuracy, TRUE, json_object_get_member(o, "accuracy"));
    g_assert_cmpfloat(m->accuracy, ==, (double)m->n_correct / (double)n);
    check_value(name, "macro_f1", 0, m->macro_f1, TRUE, json_object_get_member(o, "macro_f1"));
    check_doubles(name, "precision", m->precision, o, C);
    check_doubles(name, "recall", m->recall, o, C);
    check_doubles(name, "f1", m->f1, o, C);

    JsonArray *sup = json_object_get_array_member(o, "support");
    JsonArray *cm = json_object_get_array_member(o, "confusion");
    for (int t = 0; t < C; t++) {
      if (m->support[t] != json_array_get_int_element(sup, t))
        g_error("%s: support[%d] = %" G_GINT64_FORMAT ", sklearn %" G_GINT64_FORMAT, name, t,
                m->support[t], json_array_get_int_element(sup, t));
      JsonArray *row = json_array_get_array_element(cm, t);
      int64_t col_sum = 0;
      for (int p = 0; p < C; p++) {
        if (m->confusion[t * C + p] != json_array_get_int_element(row, p))
          g_error("%s: confusion[%d][%d] = %" G_GINT64_FORMAT ", sklearn %" G_GINT64_FORMAT, name,
                  t, p, m->confusion[t * C + p], json_array_get_int_element(row, p));
        col_sum += m->confusion[p * C + t];
      }
      g_assert_cmpint(m->predicted[t], ==, col_sum);
    }

    JsonArray *cauc = json_object_get_array_member(o, "class_auc");
    for (int c = 0; c < C; c++)
      check_value(name, "class_auc", c, m->class_auc[c], m->class_auc_defined[c],
                  json_array_get_element(cauc, c));
    const char *status = json_object_get_string_member(o, "auc_status");
    if (strcmp(mexd_auc_status_name(m->auc_status), status))
      g_error("%s: AUC status %s, expected %s", name, mexd_auc_status_name(m->auc_status), status);
    g_assert_cmpint(m->n_auc_classes, ==, json_object_get_int_member(o, "n_auc_classes"));
    check_value(name, "auc", 0, m->auc, m->auc_status != MEXD_AUC_UNDEFINED,
                json_object_get_member(o, "auc"));
    /* sklearn raises exactly where the headline AUC is not a full one */
    g_assert_cmpint(json_object_get_boolean_member(o, "sklearn_auc_raises"), ==,
                    m->auc_status != MEXD_AUC_DEFINED);

    n_ties += g_str_has_prefix(name, "ties-");
    n_partial += m->auc_status == MEXD_AUC_PARTIAL;
    n_undefined += m->auc_status == MEXD_AUC_UNDEFINED;
  }
  g_test_message("%u cases (%d with rounded scores, %d partial AUC, %d undefined AUC), largest "
                 "difference from sklearn %.3g",
                 n_cases, n_ties, n_partial, n_undefined, worst_diff);
  g_assert_cmpint(n_ties, >=, 10);
  g_assert_cmpint(n_partial, >=, 3);
  g_assert_cmpint(n_undefined, >=, 3);
}

/* ---- all pairs ---- */

static void test_brute_force(void)
{
  g_autoptr(GRand) rand = g_rand_new_with_seed(20240517);
  for (int trial = 0; trial < 40; trial++) {
    int C = 2 + trial % 3;
    int64_t n = 1 + g_rand_int_range(rand, 0, 150);
    int levels = 1 + trial % 7; /* few distinct scores: ties everywhere */
    g_autofree double *probs = g_new(double, n *C);
    g_autofree int *labels = g_new(int, n);
    for (int64_t i = 0; i < n; i++) {
      labels[i] = g_rand_int_range(rand, 0, C);
      for (int c = 0; c < C; c++)
        probs[i * C + c] = (double)g_rand_int_range(rand, 0, levels + 1) / levels;
      /* -0.0 ties with 0.0 (as in numpy) */
      if (probs[i * C] == 0.0 && g_rand_boolean(rand))
        probs[i * C] = -0.0;
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(MexdMetrics) m = mexd_metrics_compute(probs, labels, n, C, &error);
    g_assert_no_error(error);
    for (int c = 0; c < C; c++) {
      uint64_t twice = 0, pos = 0, neg = 0;
      for (int64_t i = 0; i < n; i++) {
        if (labels[i] != c)
          continue;
        pos++;
        for (int64_t j = 0; j < n; j++) {
          if (labels[j] == c)
            continue;
          double a = probs[i * C + c], b = probs[j * C + c];
          twice += a > b ? 2 : a == b ? 1 : 0;
        }
      }
      neg = (uint64_t)n - pos;
      if (pos == 0 || neg == 0) {
        g_assert_false(m->class_auc_defined[c]);
        g_assert_true(isnan(m->class_auc[c]));
        continue;
      }
      g_assert_true(m->class_auc_defined[c]);
      g_assert_cmpfloat(m->class_auc[c], ==, (double)twice / (2.0 * (double)pos * (double)neg));
    }
  }
}

/* ---- errors ---- */

static void expect_error(GError *error, const char *must_contain, const char *what)
{
  if (!error)
    g_error("%s: expected an error", what);
  g_assert_true(error->domain == MEXD_ERROR);
  if (error->code != MEXD_ERROR_INVALID_ARGUMENT)
    g_error("%s: code %d: %s", what, error->code, error->message);
  if (!strstr(error->message, must_contain))
    g_error("%s: message \"%s\" does not contain \"%s\"", what, error->message, must_contain);
  g_test_message("%s: %s", what, error->message);
  g_error_free(error);
}

static void test_errors(void)
{
  double probs[] = {0.2, 0.8, 0.6, 0.4, 0.5, 0.5};
  int labels[] = {1, 0, 1};
  GError *error = NULL;
  g_assert_null(mexd_metrics_compute(probs, labels, 0, 2, &error));
  expect_error(error, "no slides", "n = 0");
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, labels, -3, 2, &error));
  expect_error(error, "no slides", "n < 0");
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, labels, 3, 1, &error));
  expect_error(error, "1 classes, at least 2", "C = 1");
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, labels, 3, 0, &error));
  expect_error(error, "at least 2", "C = 0");
  error = NULL;
  g_assert_null(mexd_metrics_compute(NULL, labels, 3, 2, &error));
  expect_error(error, "probabilities are NULL", "NULL probs");
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, NULL, 3, 2, &error));
  expect_error(error, "labels are NULL", "NULL labels");

  int bad_hi[] = {1, 0, 2};
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, bad_hi, 3, 2, &error));
  expect_error(error, "slide 2 has label 2, outside 0..1", "label = C");
  int bad_lo[] = {1, -1, 0};
  error = NULL;
  g_assert_null(mexd_metrics_compute(probs, bad_lo, 3, 2, &error));
  expect_error(error, "slide 1 has label -1", "label < 0");

  double nan_probs[] = {0.2, 0.8, 0.6, 0.4, 0.5, NAN};
  error = NULL;
  g_assert_null(mexd_metrics_compute(nan_probs, labels, 3, 2, &error));
  expect_error(error, "slide 2, class 1: probability is NaN", "NaN");
  double inf_probs[] = {0.2, 0.8, -INFINITY, 0.4, 0.5, 0.5};
  error = NULL;
  g_assert_null(mexd_metrics_compute(inf_probs, labels, 3, 2, &error));
  expect_error(error, "slide 1, class 0: probability is -Inf", "-Inf");

  /* no error pointer: still NULL, no crash */
  g_assert_null(mexd_metrics_compute(nan_probs, labels, 3, 2, NULL));
  mexd_metrics_free(NULL);
}

/* ---- reports ---- */

static void test_format(void)
{
  /* partial AUC, named classes (one NULL: printed as its index) */
  g_autoptr(MexdMetrics) m = compute_case("absent-c3-class1");
  const char *names[] = {"normal", NULL, "tumor"};
  g_autofree char *s = mexd_metrics_format(m, names);
  g_test_message("\n%s", s);
  g_assert_true(g_str_has_prefix(s, "slides 30, classes 3\nACC "));
  g_assert_nonnull(strstr(s, "(partial: mean over 2 of 3 classes; sklearn raises)"));
  g_assert_nonnull(strstr(s, "\nnormal "));
  g_assert_nonnull(strstr(s, "\ntumor "));
  g_assert_nonnull(strstr(s, "\n1 "));
  g_assert_nonnull(strstr(s, "undefined\n")); /* class 1's AUC */
  g_assert_nonnull(strstr(s, "confusion matrix (rows = true class"));
  g_assert_true(g_str_has_suffix(s, "\n"));
  g_autofree char *acc = g_strdup_printf("ACC %.4f  AUC %.4f (partial", m->accuracy, m->auc);
  g_assert_nonnull(strstr(s, acc));
  /* the confusion matrix: header plus C rows after its title, each row's counts */
  const char *cm = strstr(s, "confusion matrix");
  g_auto(GStrv) lines = g_strsplit(cm, "\n", -1);
  g_assert_cmpuint(g_strv_length(lines), ==, 2 + 3 + 1); /* title, header, 3 rows, "" */
  g_assert_true(g_str_has_prefix(lines[1], "true\\pred"));
  for (int t = 0; t < 3; t++) {
    g_auto(GStrv) cells = g_strsplit_set(lines[2 + t], " ", -1);
    int k = 0;
    for (int j = 1; cells[j]; j++)
      if (*cells[j]) {
        g_assert_cmpint(k, <, 3);
        g_assert_cmpint(g_ascii_strtoll(cells[j], NULL, 10), ==, m->confusion[t * 3 + k]);
        k++;
      }
    g_assert_cmpint(k, ==, 3);
  }

  /* undefined binary AUC, default names */
  g_autoptr(MexdMetrics) u = compute_case("single-class-binary");
  g_autofree char *su = mexd_metrics_format(u, NULL);
  g_test_message("\n%s", su);
  g_assert_nonnull(strstr(su, "AUC undefined (positive class 1)  macro-F1 "));

  /* defined binary */
  g_autoptr(MexdMetrics) d = compute_case("n2-binary");
  const char *bn[] = {"benign", "malignant"};
  g_autofree char *sd = mexd_metrics_format(d, bn);
  g_assert_nonnull(
      strstr(sd, "ACC 1.0000  AUC 1.0000 (positive class malignant)  macro-F1 1.0000"));
  g_assert_null(strstr(sd, "undefined"));
}

static void test_json(void)
{
  g_autoptr(MexdMetrics) m = compute_case("absent-c4-class2");
  const char *names[] = {"a", "b", "c", "d"};
  JsonNode *node = mexd_metrics_to_json(m, names);
  g_assert_true(JSON_NODE_HOLDS_OBJECT(node));
  /* through text and back: doubles round-trip exactly */
  g_autofree char *text = json_to_string(node, FALSE);
  json_node_unref(node);
  g_test_message("%s", text);
  g_autoptr(JsonParser) jp = json_parser_new();
  g_autoptr(GError) error = NULL;
  g_assert_true(json_parser_load_from_data(jp, text, -1, &error));
  g_assert_no_error(error);
  JsonObject *o = json_node_get_object(json_parser_get_root(jp));
  g_assert_cmpint(json_object_get_int_member(o, "n"), ==, m->n);
  g_assert_cmpint(json_object_get_int_member(o, "n_classes"), ==, 4);
  g_assert_cmpint(json_object_get_int_member(o, "n_correct"), ==, m->n_correct);
  g_assert_cmpfloat(json_object_get_double_member(o, "accuracy"), ==, m->accuracy);
  g_assert_cmpfloat(json_object_get_double_member(o, "auc"), ==, m->auc);
  g_assert_cmpstr(json_object_get_string_member(o, "auc_status"), ==, "partial");
  g_assert_cmpint(json_object_get_int_member(o, "n_auc_classes"), ==, 3);
  g_assert_cmpfloat(json_object_get_double_member(o, "macro_f1"), ==, m->macro_f1);
  JsonArray *classes = json_object_get_array_member(o, "classes");
  g_assert_cmpuint(json_array_get_length(classes), ==, 4);
  JsonArray *cm = json_object_get_array_member(o, "confusion_matrix");
  g_assert_cmpuint(json_array_get_length(cm), ==, 4);
  for (int c = 0; c < 4; c++) {
    JsonObject *k = json_array_get_object_element(classes, c);
    g_assert_cmpint(json_object_get_int_member(k, "index"), ==, c);
    g_assert_cmpstr(json_object_get_string_member(k, "name"), ==, names[c]);
    g_assert_cmpfloat(json_object_get_double_member(k, "precision"), ==, m->precision[c]);
    g_assert_cmpfloat(json_object_get_double_member(k, "recall"), ==, m->recall[c]);
    g_assert_cmpfloat(json_object_get_double_member(k, "f1"), ==, m->f1[c]);
    g_assert_cmpint(json_object_get_int_member(k, "support"), ==, m->support[c]);
    g_assert_cmpint(json_object_get_int_member(k, "predicted"), ==, m->predicted[c]);
    if (c == 2)
      g_assert_true(json_object_get_null_member(k, "auc"));
    else
      g_assert_cmpfloat(json_object_get_double_member(k, "auc"), ==, m->class_auc[c]);
    JsonArray *row = json_array_get_array_element(cm, c);
    for (int p = 0; p < 4; p++)
      g_assert_cmpint(json_array_get_int_element(row, p), ==, m->confusion[c * 4 + p]);
  }

  /* undefined headline AUC is null; default names are the indices */
  g_autoptr(MexdMetrics) u = compute_case("single-class-c3");
  JsonNode *un = mexd_metrics_to_json(u, NULL);
  JsonObject *uo = json_node_get_object(un);
  g_assert_true(json_object_get_null_member(uo, "auc"));
  g_assert_cmpstr(json_object_get_string_member(uo, "auc_status"), ==, "undefined");
  JsonArray *uc = json_object_get_array_member(uo, "classes");
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(uc, 2), "name"), ==,
                  "2");
  for (int c = 0; c < 3; c++)
    g_assert_true(json_object_get_null_member(json_array_get_object_element(uc, c), "auc"));
  json_node_unref(un);
}

/* ---- uncertainty ---- */

static double jd(JsonObject *o, const char *k)
{
  return json_object_get_double_member(o, k);
}

static void close_to(const char *what, int k, double got, double want, double tol)
{
  if (!(fabs(got - want) <= tol))
    g_error("case %d: %s = %.17g, the reference %.17g (diff %.3g)", k, what, got, want,
            got - want);
}

typedef struct {
  const gboolean *right;
} AccData;

static double acc_stat(const int64_t *idx, int64_t n, gpointer data)
{
  const AccData *a = data;
  double s = 0;
  for (int64_t j = 0; j < n; j++)
    s += a->right[idx[j]];
  return s / (double)n;
}

static double nan_stat(const int64_t *idx, int64_t n, gpointer data)
{
  (void)idx;
  (void)n;
  (void)data;
  return NAN;
}

static void test_uncertainty(void)
{
  g_autofree char *dir = mexd_test_fixture_dir("metrics");
  g_autofree char *path = g_build_filename(dir, "uncertainty.json", NULL);
  g_autoptr(JsonParser) jp = json_parser_new();
  g_autoptr(GError) error = NULL;
  if (!json_parser_load_from_file(jp, path, &error))
    g_error("%s: %s", path, error->message);
  JsonArray *uc =
      json_object_get_array_member(json_node_get_object(json_parser_get_root(jp)), "cases");
  g_assert_cmpuint(json_array_get_length(uc), >=, 6);
  for (guint k = 0; k < json_array_get_length(uc); k++) {
    JsonObject *o = json_array_get_object_element(uc, k);
    const int64_t n = json_object_get_int_member(o, "n");
    const int C = (int)json_object_get_int_member(o, "C");
    JsonArray *rows = json_object_get_array_member(o, "probs");
    JsonArray *lab = json_object_get_array_member(o, "labels");
    JsonArray *sc = json_object_get_array_member(o, "score");
    g_autofree double *p = g_new(double, n * C), *conf = g_new(double, n),
                      *score = g_new(double, n), *pt = g_new(double, n * C);
    g_autofree int *y = g_new(int, n);
    g_autofree gboolean *right = g_new(gboolean, n);
    for (int64_t i = 0; i < n; i++) {
      JsonArray *r = json_array_get_array_element(rows, (guint)i);
      for (int c = 0; c < C; c++)
        p[i * C + c] = json_array_get_double_element(r, c);
      y[i] = (int)json_array_get_int_element(lab, (guint)i);
      score[i] = json_array_get_double_element(sc, (guint)i);
      int a = mexd_metrics_argmax(p + i * C, C);
      conf[i] = p[i * C + a];
      right[i] = a == y[i];
    }
    const char *which[2] = {"rc_confidence", "rc_score"};
    for (int w = 0; w < 2; w++) {
      MexdRiskCoverage rc;
      g_assert_true(mexd_risk_coverage(w ? score : conf, right, n, &rc, &error));
      JsonObject *want = json_object_get_object_member(o, which[w]);
      close_to("aurc", (int)k, rc.aurc, jd(want, "aurc"), 1e-12);
      close_to("acc_at_80", (int)k, rc.acc_at_80, jd(want, "acc_at_80"), 1e-12);
      close_to("acc_at_90", (int)k, rc.acc_at_90, jd(want, "acc_at_90"), 1e-12);
      close_to("accuracy", (int)k, rc.accuracy, jd(want, "accuracy"), 1e-12);
    }
    g_autoptr(MexdCalibration) cal = mexd_calibration_compute(p, y, n, C, 15, &error);
    g_assert_no_error(error);
    close_to("ece", (int)k, cal->ece, jd(o, "ece"), 1e-12);
    JsonArray *cnt = json_object_get_array_member(o, "bin_count");
    JsonArray *bc = json_object_get_array_member(o, "bin_confidence");
    JsonArray *ba = json_object_get_array_member(o, "bin_accuracy");
    for (int b = 0; b < 15; b++) {
      g_assert_cmpint(cal->count[b], ==, json_array_get_int_element(cnt, b));
      if (cal->count[b] == 0) {
        g_assert_true(isnan(cal->bin_confidence[b]) && isnan(cal->bin_accuracy[b]));
        continue;
      }
      close_to("bin confidence", (int)k, cal->bin_confidence[b],
               json_array_get_double_element(bc, b), 1e-12);
      close_to("bin accuracy", (int)k, cal->bin_accuracy[b], json_array_get_double_element(ba, b),
               1e-12);
    }
    const double T = mexd_fit_temperature(p, y, n, C), Tw = jd(o, "temperature");
    if (json_object_get_boolean_member(o, "flat")) { /* no unique minimiser: the NLL reached */
      mexd_probs_temperature(p, n, C, T, pt);
      double nll = 0;
      for (int64_t i = 0; i < n; i++)
        nll -= log(pt[i * C + y[i]]) / (double)n;
      g_assert_cmpfloat(nll, <=, jd(o, "nll") + 1e-9);
    } else {
      close_to("temperature", (int)k, T, Tw, 1e-5 * Tw);
    }
    mexd_probs_temperature(p, n, C, Tw, pt);
    JsonArray *tw = json_object_get_array_member(o, "tempered");
    for (int64_t i = 0; i < n; i++)
      for (int c = 0; c < C; c++)
        close_to("tempered", (int)k, pt[i * C + c],
                 json_array_get_double_element(json_array_get_array_element(tw, (guint)i), c),
                 1e-12);
    double lo, hi;
    AccData ad = {right};
    g_assert_true(mexd_bootstrap_interval(n, 200, 7, acc_stat, &ad, &lo, &hi));
    JsonArray *bi = json_object_get_array_member(o, "boot_acc");
    close_to("bootstrap lo", (int)k, lo, json_array_get_double_element(bi, 0), 1e-12);
    close_to("bootstrap hi", (int)k, hi, json_array_get_double_element(bi, 1), 1e-12);
    g_test_message("case %u: n %" G_GINT64_FORMAT " C %d: ECE %.4f T %.4f boot [%.3f, %.3f]", k,
                   n, C, cal->ece, T, lo, hi);
  }
  /* errors */
  double c1[2] = {0.5, NAN};
  gboolean r1[2] = {TRUE, FALSE};
  MexdRiskCoverage rc;
  g_assert_false(mexd_risk_coverage(c1, r1, 2, &rc, &error));
  g_assert_error(error, MEXD_ERROR, MEXD_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(error->message, "NaN"));
  g_clear_error(&error);
  g_assert_false(mexd_risk_coverage(c1, r1, 0, &rc, &error));
  g_clear_error(&error);
  double pbad[2] = {1.5, -0.5};
  int ybad[1] = {0};
  g_assert_null(mexd_calibration_compute(pbad, ybad, 1, 2, 15, &error));
  g_assert_nonnull(strstr(error->message, "outside [0, 1]"));
  g_clear_error(&error);
  double pok[2] = {0.3, 0.7};
  g_assert_null(mexd_calibration_compute(pok, ybad, 1, 2, 0, &error));
  g_assert_nonnull(strstr(error->message, "bins"));
  g_clear_error(&error);
  double lo, hi;
  g_assert_false(mexd_bootstrap_interval(5, 10, 1, nan_stat, NULL, &lo, &hi));
  g_assert_true(isnan(lo) && isnan(hi));
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_autofree char *dir = mexd_test_fixture_dir("metrics");
  if (!dir)
    g_error("tests/fixtures/metrics not found");
  g_autofree char *path = g_build_filename(dir, "cases.json", NULL);
  g_autoptr(JsonParser) jp = json_parser_new();
  g_autoptr(GError) error = NULL;
  if (!json_parser_load_from_file(jp, path, &error))
    g_error("%s: %s", path, error->message);
  cases = json_object_get_array_member(json_node_get_object(json_parser_get_root(jp)), "cases");
  g_test_add_func("/train/metrics/sklearn", test_sklearn);
  g_test_add_func("/train/metrics/brute-force", test_brute_force);
  g_test_add_func("/train/metrics/errors", test_errors);
  g_test_add_func("/train/metrics/format", test_format);
  g_test_add_func("/train/metrics/json", test_json);
  g_test_add_func("/train/metrics/uncertainty", test_uncertainty);
  return g_test_run();
}
