/* metrics.c: ACC, one-vs-rest AUC, macro-F1, per-class table and confusion matrix of slide
 * predictions, matched to scikit-learn.  See metrics.h for the definitions. */
#include "train/metrics.h"

#include "core/error.h"
#include "nn/philox.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One slide as one class's AUC sees it. */
typedef struct {
  double score;
  gboolean positive;
} Scored;

static int scored_cmp(const void *pa, const void *pb)
{
  double a = ((const Scored *)pa)->score, b = ((const Scored *)pb)->score;
  return (a > b) - (a < b);
}

int mexd_metrics_argmax(const double *row, int n_classes)
{
  int best = 0;
  /* strictly greater: the first of equal maxima wins, as numpy argmax */
  for (int c = 1; c < n_classes; c++)
    if (row[c] > row[best])
      best = c;
  return best;
}

const char *mexd_auc_status_name(MexdAucStatus status)
{
  switch (status) {
  case MEXD_AUC_DEFINED: return "defined";
  case MEXD_AUC_PARTIAL: return "partial";
  case MEXD_AUC_UNDEFINED: return "undefined";
  }
  return "invalid";
}

void mexd_metrics_free(MexdMetrics *m)
{
  if (!m)
    return;
  g_free(m->class_auc);
  g_free(m->class_auc_defined);
  g_free(m->precision);
  g_free(m->recall);
  g_free(m->f1);
  g_free(m->support);
  g_free(m->predicted);
  g_free(m->confusion);
  g_free(m);
}

/* The AUC of class c (positives: label == c, score probs[:, c]), NaN when the class has no
 * positive or no negative.  `buf` has room for n entries.
 *
 * Mann-Whitney in integers: sorted by score, each group of tied scores with p positives and q
 * negatives, above `below` negatives with a lower score, adds p * (2 below + q) to twice the
 * statistic (a tie counts 1/2).  This is exactly the trapezoid area under sklearn's ROC curve,
 * whose thresholds are the distinct scores: a tie group is one straight segment.  The count stays
 * below 2^64 for n < 6e9 and is exact in double up to n ~ 1e8; one division rounds it. */
static double class_auc(const double *probs, const int *labels, int64_t n, int n_classes, int c,
                        Scored *buf)
{
  uint64_t n_pos = 0;
  for (int64_t i = 0; i < n; i++) {
    buf[i].score = probs[i * n_classes + c];
    buf[i].positive = labels[i] == c;
    n_pos += buf[i].positive;
  }
  uint64_t n_neg = (uint64_t)n - n_pos;
  if (n_pos == 0 || n_neg == 0)
    return NAN;
  qsort(buf, (size_t)n, sizeof *buf, scored_cmp);
  uint64_t twice_u = 0, below = 0;
  for (int64_t i = 0; i < n;) {
    uint64_t p = 0, q = 0;
    int64_t j = i;
    for (; j < n && buf[j].score == buf[i].score; j++) {
      if (buf[j].positive)
        p++;
      else
        q++;
    }
    twice_u += p * (2 * below + q);
    below += q;
    i = j;
  }
  return (double)twice_u / (2.0 * (double)n_pos * (double)n_neg);
}

MexdMetrics *mexd_metrics_compute(const double *probs, const int *labels, int64_t n, int n_classes,
                                  GError **error)
{
  if (!probs || !labels)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "metrics: the %s are NULL",
                          !probs ? "probabilities" : "labels");
  if (n < 1)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "metrics: no slides (n = %" G_GINT64_FORMAT ")", n);
  if (n_classes < 2)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "metrics: %d classes, at least 2 are needed", n_classes);
  if ((uint64_t)n > SIZE_MAX / sizeof(Scored) || (uint64_t)n > SIZE_MAX / (size_t)n_classes)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                          "metrics: %" G_GINT64_FORMAT " slides do not fit in memory", n);
  for (int64_t i = 0; i < n; i++) {
    if (labels[i] < 0 || labels[i] >= n_classes)
      return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                            "metrics: slide %" G_GINT64_FORMAT " has label %d, outside 0..%d", i,
                            labels[i], n_classes - 1);
    for (int c = 0; c < n_classes; c++) {
      double v = probs[i * n_classes + c];
      if (!isfinite(v))
        return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                              "metrics: slide %" G_GINT64_FORMAT ", class %d: probability is %s", i,
                              c,
                              isnan(v) ? "NaN"
                              : v > 0  ? "+Inf"
                                       : "-Inf");
    }
  }

  const int C = n_classes;
  g_autoptr(MexdMetrics) m = g_new0(MexdMetrics, 1);
  m->n = n;
  m->n_classes = C;
  m->class_auc = g_new(double, C);
  m->class_auc_defined = g_new0(gboolean, C);
  m->precision = g_new0(double, C);
  m->recall = g_new0(double, C);
  m->f1 = g_new0(double, C);
  m->support = g_new0(int64_t, C);
  m->predicted = g_new0(int64_t, C);
  m->confusion = g_new0(int64_t, (size_t)C * (size_t)C);

  for (int64_t i = 0; i < n; i++) {
    int pred = mexd_metrics_argmax(probs + i * C, C);
    m->confusion[(size_t)labels[i] * C + pred]++;
    m->support[labels[i]]++;
    m->predicted[pred]++;
    m->n_correct += pred == labels[i];
  }
  m->accuracy = (double)m->n_correct / (double)n;

  /* sklearn's formulas in its order of operations (precision_recall_fscore_support with
   * zero_division=0: a 0/0 ratio is 0; F1 = (1 + β²)·P·R / (β²·P + R), denominator 0 → 1). */
  double f1_sum = 0.0;
  for (int c = 0; c < C; c++) {
    double tp = (double)m->confusion[(size_t)c * C + c];
    m->precision[c] = m->predicted[c] ? tp / (double)m->predicted[c] : 0.0;
    m->recall[c] = m->support[c] ? tp / (double)m->support[c] : 0.0;
    double denom = m->precision[c] + m->recall[c];
    m->f1[c] = 2.0 * m->precision[c] * m->recall[c] / (denom == 0.0 ? 1.0 : denom);
    f1_sum += m->f1[c];
  }
  m->macro_f1 = f1_sum / C;

  g_autofree Scored *buf = g_new(Scored, n);
  double auc_sum = 0.0;
  for (int c = 0; c < C; c++) {
    m->class_auc[c] = class_auc(probs, labels, n, C, c, buf);
    m->class_auc_defined[c] = !isnan(m->class_auc[c]);
    if (m->class_auc_defined[c]) {
      m->n_auc_classes++;
      auc_sum += m->class_auc[c];
    }
  }
  if (C == 2) {
    /* with two classes, one has positives and negatives exactly when the other does */
    m->auc = m->class_auc[1];
    m->auc_status = m->class_auc_defined[1] ? MEXD_AUC_DEFINED : MEXD_AUC_UNDEFINED;
  } else if (m->n_auc_classes == 0) {
    m->auc = NAN;
    m->auc_status = MEXD_AUC_UNDEFINED;
  } else {
    /* a plain sequential sum (numpy's mean sums fewer than 8 values the same way) */
    m->auc = auc_sum / m->n_auc_classes;
    m->auc_status = m->n_auc_classes == C ? MEXD_AUC_DEFINED : MEXD_AUC_PARTIAL;
  }
  return g_steal_pointer(&m);
}

/* ---- reports ---- */

static char *class_name(const char *const *class_names, int c)
{
  if (class_names && class_names[c])
    return g_strdup(class_names[c]);
  return g_strdup_printf("%d", c);
}

/* `str` padded with spaces to `width` characters (UTF-8 characters, not bytes), on the left
 * when `right` (right-aligned). */
static void append_padded(GString *s, const char *str, int width, gboolean right)
{
  int pad = width - (int)g_utf8_strlen(str, -1);
  if (!right)
    g_string_append(s, str);
  for (int k = 0; k < pad; k++)
    g_string_append_c(s, ' ');
  if (right)
    g_string_append(s, str);
}

/* "%*.4f", or "undefined" right-aligned in the same width. */
static void append_value(GString *s, int width, double v, gboolean defined)
{
  if (defined)
    g_string_append_printf(s, "%*.4f", width, v);
  else
    g_string_append_printf(s, "%*s", width, "undefined");
}

char *mexd_metrics_format(const MexdMetrics *m, const char *const *class_names)
{
  g_return_val_if_fail(m != NULL, NULL);
  const int C = m->n_classes;
  g_auto(GStrv) names = g_new0(char *, C + 1);
  int name_w = (int)strlen("true\\pred"); /* the corner of the confusion matrix */
  for (int c = 0; c < C; c++) {
    names[c] = class_name(class_names, c);
    name_w = MAX(name_w, (int)g_utf8_strlen(names[c], -1));
  }

  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "slides %" G_GINT64_FORMAT ", classes %d\n", m->n, C);
  g_string_append_printf(s, "ACC %.4f  AUC ", m->accuracy);
  if (m->auc_status == MEXD_AUC_UNDEFINED)
    g_string_append(s, "undefined");
  else
    g_string_append_printf(s, "%.4f", m->auc);
  if (C == 2)
    g_string_append_printf(s, " (positive class %s)", names[1]);
  else if (m->auc_status == MEXD_AUC_PARTIAL)
    g_string_append_printf(s, " (partial: mean over %d of %d classes; sklearn raises)",
                           m->n_auc_classes, C);
  g_string_append_printf(s, "  macro-F1 %.4f\n", m->macro_f1);

  append_padded(s, "class", name_w, FALSE);
  g_string_append_printf(s, "  %9s  %6s  %6s  %7s  %9s  %9s\n", "precision", "recall", "F1",
                         "support", "predicted", "AUC");
  for (int c = 0; c < C; c++) {
    append_padded(s, names[c], name_w, FALSE);
    g_string_append(s, "  ");
    append_value(s, 9, m->precision[c], TRUE);
    g_string_append(s, "  ");
    append_value(s, 6, m->recall[c], TRUE);
    g_string_append(s, "  ");
    append_value(s, 6, m->f1[c], TRUE);
    g_string_append_printf(s, "  %7" G_GINT64_FORMAT "  %9" G_GINT64_FORMAT "  ", m->support[c],
                           m->predicted[c]);
    append_value(s, 9, m->class_auc[c], m->class_auc_defined[c]);
    g_string_append_c(s, '\n');
  }

  g_string_append(s, "confusion matrix (rows = true class, columns = predicted class)\n");
  char digits[32];
  int cell_w = g_snprintf(digits, sizeof digits, "%" G_GINT64_FORMAT, m->n);
  for (int c = 0; c < C; c++)
    cell_w = MAX(cell_w, (int)g_utf8_strlen(names[c], -1));
  append_padded(s, "true\\pred", name_w, FALSE);
  for (int p = 0; p < C; p++) {
    g_string_append(s, "  ");
    append_padded(s, names[p], cell_w, TRUE);
  }
  g_string_append_c(s, '\n');
  for (int t = 0; t < C; t++) {
    append_padded(s, names[t], name_w, FALSE);
    for (int p = 0; p < C; p++)
      g_string_append_printf(s, "  %*" G_GINT64_FORMAT, cell_w, m->confusion[(size_t)t * C + p]);
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}

JsonNode *mexd_metrics_to_json(const MexdMetrics *m, const char *const *class_names)
{
  g_return_val_if_fail(m != NULL, NULL);
  const int C = m->n_classes;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "n");
  json_builder_add_int_value(b, m->n);
  json_builder_set_member_name(b, "n_classes");
  json_builder_add_int_value(b, C);
  json_builder_set_member_name(b, "n_correct");
  json_builder_add_int_value(b, m->n_correct);
  json_builder_set_member_name(b, "accuracy");
  json_builder_add_double_value(b, m->accuracy);
  json_builder_set_member_name(b, "auc");
  if (m->auc_status == MEXD_AUC_UNDEFINED)
    json_builder_add_null_value(b);
  else
    json_builder_add_double_value(b, m->auc);
  json_builder_set_member_name(b, "auc_status");
  json_builder_add_string_value(b, mexd_auc_status_name(m->auc_status));
  json_builder_set_member_name(b, "n_auc_classes");
  json_builder_add_int_value(b, m->n_auc_classes);
  json_builder_set_member_name(b, "macro_f1");
  json_builder_add_double_value(b, m->macro_f1);

  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (int c = 0; c < C; c++) {
    g_autofree char *name = class_name(class_names, c);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "index");
    json_builder_add_int_value(b, c);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, name);
    json_builder_set_member_name(b, "precision");
    json_builder_add_double_value(b, m->precision[c]);
    json_builder_set_member_name(b, "recall");
    json_builder_add_double_value(b, m->recall[c]);
    json_builder_set_member_name(b, "f1");
    json_builder_add_double_value(b, m->f1[c]);
    json_builder_set_member_name(b, "support");
    json_builder_add_int_value(b, m->support[c]);
    json_builder_set_member_name(b, "predicted");
    json_builder_add_int_value(b, m->predicted[c]);
    json_builder_set_member_name(b, "auc");
    if (m->class_auc_defined[c])
      json_builder_add_double_value(b, m->class_auc[c]);
    else
      json_builder_add_null_value(b);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);

  json_builder_set_member_name(b, "confusion_matrix");
  json_builder_begin_array(b);
  for (int t = 0; t < C; t++) {
    json_builder_begin_array(b);
    for (int p = 0; p < C; p++)
      json_builder_add_int_value(b, m->confusion[(size_t)t * C + p]);
    json_builder_end_array(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

/* ---- risk–coverage ---- */

typedef struct {
  double conf;
  gboolean correct;
} Ranked;

static int ranked_desc(const void *pa, const void *pb)
{
  double a = ((const Ranked *)pa)->conf, b = ((const Ranked *)pb)->conf;
  return (a < b) - (a > b);
}

gboolean mexd_risk_coverage(const double *confidence, const gboolean *correct, int64_t n,
                            MexdRiskCoverage *out, GError **error)
{
  if (!confidence || !correct || !out || n < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "risk–coverage: NULL arguments or no slide (n = %" PRId64 ")", n);
  g_autofree Ranked *r = g_try_new(Ranked, n);
  if (!r)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY, "risk–coverage: %" PRId64 " slides", n);
  for (int64_t i = 0; i < n; i++) {
    if (isnan(confidence[i]))
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "risk–coverage: the confidence of slide %" PRId64 " is NaN", i);
    r[i] = (Ranked){confidence[i], correct[i] != FALSE};
  }
  qsort(r, (size_t)n, sizeof *r, ranked_desc);
  const int64_t k80 = (8 * n + 9) / 10, k90 = (9 * n + 9) / 10;
  double area = 0, errors_before = 0;
  for (int64_t a = 0; a < n;) {
    int64_t b = a + 1;
    while (b < n && r[b].conf == r[a].conf)
      b++;
    double e = 0;
    for (int64_t j = a; j < b; j++)
      e += !r[j].correct;
    const double rate = e / (double)(b - a);
    for (int64_t k = a + 1; k <= b; k++) {
      const double risk = (errors_before + (double)(k - a) * rate) / (double)k;
      area += risk;
      if (k == k80)
        out->acc_at_80 = 1.0 - risk;
      if (k == k90)
        out->acc_at_90 = 1.0 - risk;
      if (k == n)
        out->accuracy = 1.0 - risk;
    }
    errors_before += e;
    a = b;
  }
  out->aurc = area / (double)n;
  return TRUE;
}

/* ---- calibration ---- */

void mexd_calibration_free(MexdCalibration *cal)
{
  if (!cal)
    return;
  g_free(cal->count);
  g_free(cal->bin_confidence);
  g_free(cal->bin_accuracy);
  g_free(cal);
}

MexdCalibration *mexd_calibration_compute(const double *probs, const int *labels, int64_t n,
                                          int n_classes, int bins, GError **error)
{
  g_autoptr(MexdMetrics) m = mexd_metrics_compute(probs, labels, n, n_classes, error);
  if (!m)
    return NULL;
  if (bins < 1 || bins > 1000)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "calibration: bins must be 1..1000, not %d", bins);
  for (int64_t i = 0; i < n * n_classes; i++)
    if (probs[i] < 0.0 || probs[i] > 1.0)
      return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                            "calibration: probability %g of slide %" PRId64 " is outside [0, 1]",
                            probs[i], i / n_classes);
  MexdCalibration *cal = g_new0(MexdCalibration, 1);
  cal->bins = bins;
  cal->n = n;
  cal->count = g_new0(int64_t, bins);
  cal->bin_confidence = g_new0(double, bins);
  cal->bin_accuracy = g_new0(double, bins);
  double conf_all = 0, right_all = 0;
  for (int64_t i = 0; i < n; i++) {
    const double *row = probs + i * n_classes;
    const int p = mexd_metrics_argmax(row, n_classes);
    const double conf = row[p];
    int b = (int)ceil(conf * bins) - 1;
    b = CLAMP(b, 0, bins - 1);
    cal->count[b]++;
    cal->bin_confidence[b] += conf;
    cal->bin_accuracy[b] += p == labels[i];
    conf_all += conf;
    right_all += p == labels[i];
  }
  double ece = 0;
  for (int b = 0; b < bins; b++) {
    if (cal->count[b] == 0) {
      cal->bin_confidence[b] = cal->bin_accuracy[b] = NAN;
      continue;
    }
    ece += fabs(cal->bin_accuracy[b] - cal->bin_confidence[b]) / (double)n;
    cal->bin_confidence[b] /= (double)cal->count[b];
    cal->bin_accuracy[b] /= (double)cal->count[b];
  }
  cal->ece = ece;
  cal->accuracy = right_all / (double)n;
  cal->confidence = conf_all / (double)n;
  return cal;
}

static double scaled_log(double p, double T)
{
  return log(MAX(p, 1e-12)) / T;
}

void mexd_probs_temperature(const double *probs, int64_t n, int n_classes, double T, double *out)
{
  for (int64_t i = 0; i < n; i++) {
    const double *row = probs + i * n_classes;
    double *o = out + i * n_classes, mx = -INFINITY, s = 0;
    for (int c = 0; c < n_classes; c++)
      mx = MAX(mx, scaled_log(row[c], T));
    for (int c = 0; c < n_classes; c++)
      s += (o[c] = exp(scaled_log(row[c], T) - mx));
    for (int c = 0; c < n_classes; c++)
      o[c] /= s;
  }
}

static double temperature_nll(const double *probs, const int *labels, int64_t n, int n_classes,
                              double T)
{
  double nll = 0;
  for (int64_t i = 0; i < n; i++) {
    const double *row = probs + i * n_classes;
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < n_classes; c++)
      mx = MAX(mx, scaled_log(row[c], T));
    for (int c = 0; c < n_classes; c++)
      s += exp(scaled_log(row[c], T) - mx);
    nll += mx + log(s) - scaled_log(row[labels[i]], T);
  }
  return nll / (double)n;
}

double mexd_fit_temperature(const double *probs, const int *labels, int64_t n, int n_classes)
{
  /* golden-section search on u = log T */
  const double g = (sqrt(5.0) - 1.0) / 2.0;
  double a = log(0.05), b = log(20.0);
  double x1 = b - g * (b - a), x2 = a + g * (b - a);
  double f1 = temperature_nll(probs, labels, n, n_classes, exp(x1));
  double f2 = temperature_nll(probs, labels, n, n_classes, exp(x2));
  while (b - a > 1e-6) {
    if (f1 <= f2) {
      b = x2;
      x2 = x1;
      f2 = f1;
      x1 = b - g * (b - a);
      f1 = temperature_nll(probs, labels, n, n_classes, exp(x1));
    } else {
      a = x1;
      x1 = x2;
      f1 = f2;
      x2 = a + g * (b - a);
      f2 = temperature_nll(probs, labels, n, n_classes, exp(x2));
    }
  }
  return exp((a + b) / 2.0);
}

/* ---- bootstrap ---- */

#define BOOT_TAG 0x626f6f74u /* "boot" */

static int double_cmp(const void *pa, const void *pb)
{
  double a = *(const double *)pa, b = *(const double *)pb;
  return (a > b) - (a < b);
}

static double percentile(const double *sorted, int B, double q)
{
  double pos = q * (B - 1);
  int lo = (int)floor(pos);
  int hi = MIN(lo + 1, B - 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

gboolean mexd_bootstrap_interval(int64_t n, int B, uint64_t seed, MexdSlideStat stat,
                                 gpointer data, double *lo, double *hi)
{
  *lo = *hi = NAN;
  if (n < 1 || B < 1 || !stat)
    return FALSE;
  g_autofree int64_t *idx = g_try_new(int64_t, n);
  g_autofree double *v = g_try_new(double, B);
  if (!idx || !v)
    return FALSE;
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  int64_t draws = 0;
  for (int r = 0; r < B; r++) {
    double x = NAN;
    for (uint32_t attempt = 0; isnan(x); attempt++) {
      if (++draws > (int64_t)100 * B)
        return FALSE;
      uint32_t w[4];
      for (int64_t j = 0; j < n; j++) {
        if (j % 4 == 0) {
          const uint32_t ctr[4] = {(uint32_t)(j / 4), (uint32_t)r, attempt, BOOT_TAG};
          mexd_philox4x32_10(ctr, key, w);
        }
        idx[j] = (int64_t)(((uint64_t)w[j % 4] * (uint64_t)n) >> 32);
      }
      x = stat(idx, n, data);
    }
    v[r] = x;
  }
  qsort(v, (size_t)B, sizeof *v, double_cmp);
  *lo = percentile(v, B, 0.025);
  *hi = percentile(v, B, 0.975);
  return TRUE;
}
