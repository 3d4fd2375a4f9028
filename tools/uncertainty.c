/* uncertainty.c: what `mexd eval` reports beside the metrics about how far a model's confidence
 * can be trusted (issue 19; the definitions are lib/train/metrics.h's):
 *
 *   selective classification  the risk–coverage of the slides ranked by the top-class
 *                             probability and, for MExD with Diff-C, by the spread of the chains
 *                             (the predicted class's f̂₀ standard deviation, smaller = more
 *                             certain): AURC, the accuracy on the most certain 80 % and 90 %;
 *   calibration               the top-label ECE over 15 equal-width bins;
 * each with a 95 % interval from 1,000 bootstrap resamples of the slides (seed 19: the same
 * resamples for every model evaluated on the same slides, so two reports compare pairwise), and
 * on request the reliability diagram as a PNG. */
#include "uncertainty.h"

#include "../lib/mexd.h"
#include "io/png.h"
#include "train/metrics.h"

#include <math.h>
#include <string.h>

#define BOOT 1000
#define BOOT_SEED 19
#define BINS 15

typedef struct {
  const double *conf;
  const gboolean *right;
  const double *probs;
  const int *labels;
  int C;
} Slides;

static double aurc_stat(const int64_t *idx, int64_t n, gpointer data)
{
  const Slides *s = data;
  g_autofree double *c = g_new(double, n);
  g_autofree gboolean *r = g_new(gboolean, n);
  for (int64_t j = 0; j < n; j++) {
    c[j] = s->conf[idx[j]];
    r[j] = s->right[idx[j]];
  }
  MexdRiskCoverage rc;
  return mexd_risk_coverage(c, r, n, &rc, NULL) ? rc.aurc : NAN;
}

static double ece_stat(const int64_t *idx, int64_t n, gpointer data)
{
  const Slides *s = data;
  g_autofree double *p = g_new(double, n * s->C);
  g_autofree int *y = g_new(int, n);
  for (int64_t j = 0; j < n; j++) {
    memcpy(p + j * s->C, s->probs + idx[j] * s->C, sizeof(double) * s->C);
    y[j] = s->labels[idx[j]];
  }
  g_autoptr(MexdCalibration) cal = mexd_calibration_compute(p, y, n, s->C, BINS, NULL);
  return cal ? cal->ece : NAN;
}

static void json_interval(JsonBuilder *b, const char *name, double lo, double hi)
{
  json_builder_set_member_name(b, name);
  json_builder_begin_array(b);
  json_builder_add_double_value(b, lo);
  json_builder_add_double_value(b, hi);
  json_builder_end_array(b);
}

static void json_double(JsonBuilder *b, const char *name, double v)
{
  json_builder_set_member_name(b, name);
  if (isfinite(v))
    json_builder_add_double_value(b, v);
  else
    json_builder_add_null_value(b);
}

/* One 480 × 480 panel at x offset `ox` of an image `width` wide: the accuracy of each confidence
 * bin as a bar (blue), the gap between it and the bin's mean confidence hatched in red (above
 * the bar when the bin is over-confident, over its top when under-confident, so that the bar's
 * top is the accuracy either way), the diagonal of perfect calibration in grey, and the share of
 * slides per bin as a strip at the bottom. */
enum { PANEL = 480 };

static void reliability_panel(uint8_t *px, int width, int ox, const MexdCalibration *cal)
{
  enum { S = PANEL, M = 40, P = S - 2 * M, STRIP = 30 };
#define PUT(x, y, r, g, b)                                                                         \
  do {                                                                                             \
    int x_ = (x), y_ = (y);                                                                        \
    if (x_ >= 0 && x_ < S && y_ >= 0 && y_ < S) {                                                  \
      uint8_t *q_ = px + ((size_t)y_ * (size_t)width + (size_t)(ox + x_)) * 3;                     \
      q_[0] = (r), q_[1] = (g), q_[2] = (b);                                                       \
    }                                                                                              \
  } while (0)
  const int y0 = S - M - STRIP; /* the plot's bottom (value 0) */
  const int h = y0 - M;         /* the plot's height (value 1) */
  int64_t most = 1;
  for (int b = 0; b < cal->bins; b++)
    most = MAX(most, cal->count[b]);
  for (int b = 0; b < cal->bins; b++) {
    const int xa = M + b * P / cal->bins + 1, xb = M + (b + 1) * P / cal->bins - 1;
    if (cal->count[b] > 0) {
      const int ya = y0 - (int)lround(cal->bin_accuracy[b] * h);
      const int yc = y0 - (int)lround(cal->bin_confidence[b] * h);
      for (int x = xa; x <= xb; x++) {
        for (int y = ya; y < y0; y++)
          PUT(x, y, 70, 110, 200);
        for (int y = MIN(ya, yc); y < MAX(ya, yc); y++)
          if ((x + y) % 6 < 3)
            PUT(x, y, 220, 80, 70);
      }
      for (int x = xa; x <= xb; x++) /* the accuracy: a dark line on the bar's top */
        PUT(x, ya, 30, 50, 120);
    }
    const int sh = (int)lround((double)cal->count[b] / (double)most * (STRIP - 6));
    for (int x = xa; x <= xb; x++)
      for (int y = S - M - sh; y < S - M; y++)
        PUT(x, y, 120, 120, 120);
  }
  for (int t = 0; t <= P; t++) { /* the diagonal, then the axes */
    PUT(M + t, y0 - (int)lround((double)t / P * h), 150, 150, 150);
    PUT(M + t, y0, 0, 0, 0);
    PUT(M + t, M, 200, 200, 200);
  }
  for (int y = M; y <= y0; y++) {
    PUT(M, y, 0, 0, 0);
    PUT(M + P, y, 200, 200, 200);
  }
#undef PUT
}

/* The diagram of `cal`; with `tcal` (the model's calibration) a second panel on its right: the
 * same slides' calibrated probabilities. */
static gboolean reliability_png(const char *path, const MexdCalibration *cal,
                                const MexdCalibration *tcal, GError **error)
{
  const int width = PANEL * (tcal ? 2 : 1);
  g_autofree uint8_t *px = g_malloc((size_t)width * PANEL * 3);
  memset(px, 255, (size_t)width * PANEL * 3);
  reliability_panel(px, width, 0, cal);
  if (tcal) {
    reliability_panel(px, width, PANEL, tcal);
    for (int y = 0; y < PANEL; y++) /* a separator */
      memset(px + ((size_t)y * (size_t)width + PANEL) * 3, 0, 3);
  }
  return mexd_png_write(path, px, width, PANEL, 3, error);
}

static void json_reliability(JsonBuilder *json, const char *name, const MexdCalibration *cal)
{
  json_builder_set_member_name(json, name);
  json_builder_begin_array(json);
  for (int b = 0; b < cal->bins; b++) {
    json_builder_begin_object(json);
    json_double(json, "lo", (double)b / cal->bins);
    json_double(json, "hi", (double)(b + 1) / cal->bins);
    json_builder_set_member_name(json, "count");
    json_builder_add_int_value(json, cal->count[b]);
    json_double(json, "confidence", cal->bin_confidence[b]);
    json_double(json, "accuracy", cal->bin_accuracy[b]);
    json_builder_end_object(json);
  }
  json_builder_end_array(json);
}

gboolean mexd_eval_uncertainty(const double *probs, const int *labels, const double *spread,
                               int64_t n, int C, double temperature, double refer_spread,
                               JsonBuilder *json, GString *text, const char *png, GError **error)
{
  g_autofree double *conf = g_new(double, n), *neg_spread = spread ? g_new(double, n) : NULL;
  g_autofree gboolean *right = g_new(gboolean, n);
  for (int64_t i = 0; i < n; i++) {
    const int p = mexd_metrics_argmax(probs + i * C, C);
    conf[i] = probs[i * C + p];
    right[i] = p == labels[i];
    if (spread)
      neg_spread[i] = -spread[i];
  }
  struct {
    const char *name, *title;
    const double *score;
  } rankings[2] = {{"confidence", "top-class probability", conf},
                   {"spread", "spread of the chains", neg_spread}};
  if (text)
    g_string_append_printf(text,
                           "selective classification: slides ranked by certainty (95 %% intervals "
                           "over %d bootstrap resamples)\n  %-22s %-26s %8s %8s\n",
                           BOOT, "ranked by", "AURC (lower is better)", "ACC@80%", "ACC@90%");
  if (json) {
    json_builder_set_member_name(json, "selective");
    json_builder_begin_array(json);
  }
  for (int k = 0; k < 2; k++) {
    if (!rankings[k].score)
      continue;
    MexdRiskCoverage rc;
    if (!mexd_risk_coverage(rankings[k].score, right, n, &rc, error))
      return FALSE;
    Slides s = {rankings[k].score, right, probs, labels, C};
    double lo, hi;
    mexd_bootstrap_interval(n, BOOT, BOOT_SEED, aurc_stat, &s, &lo, &hi);
    if (text)
      g_string_append_printf(text, "  %-22s %.4f [%.4f, %.4f]   %8.4f %8.4f\n", rankings[k].title,
                             rc.aurc, lo, hi, rc.acc_at_80, rc.acc_at_90);
    if (json) {
      json_builder_begin_object(json);
      json_builder_set_member_name(json, "ranked_by");
      json_builder_add_string_value(json, rankings[k].name);
      json_double(json, "aurc", rc.aurc);
      json_interval(json, "aurc_interval", lo, hi);
      json_double(json, "accuracy_at_80", rc.acc_at_80);
      json_double(json, "accuracy_at_90", rc.acc_at_90);
      json_double(json, "accuracy", rc.accuracy);
      json_builder_end_object(json);
    }
  }
  if (json)
    json_builder_end_array(json);
  g_autoptr(MexdCalibration) cal = mexd_calibration_compute(probs, labels, n, C, BINS, error);
  if (!cal)
    return FALSE;
  Slides s = {conf, right, probs, labels, C};
  double lo, hi;
  mexd_bootstrap_interval(n, BOOT, BOOT_SEED, ece_stat, &s, &lo, &hi);
  if (text)
    g_string_append_printf(text,
                           "calibration: ECE %.4f [%.4f, %.4f] (top class, %d bins; mean "
                           "confidence %.4f, accuracy %.4f)\n",
                           cal->ece, lo, hi, BINS, cal->confidence, cal->accuracy);
  /* the model's own calibration (mexd eval --calibrate): the tempered probabilities' ECE */
  g_autoptr(MexdCalibration) tcal = NULL;
  double tlo = NAN, thi = NAN;
  if (isfinite(temperature)) {
    g_autofree double *pt = g_new(double, n * C);
    mexd_probs_temperature(probs, n, C, temperature, pt);
    if (!(tcal = mexd_calibration_compute(pt, labels, n, C, BINS, error)))
      return FALSE;
    Slides st = {conf, right, pt, labels, C};
    mexd_bootstrap_interval(n, BOOT, BOOT_SEED, ece_stat, &st, &tlo, &thi);
    if (text)
      g_string_append_printf(text,
                             "calibrated (the model's temperature T = %.4f): ECE %.4f [%.4f, "
                             "%.4f] (mean confidence %.4f)\n",
                             temperature, tcal->ece, tlo, thi, tcal->confidence);
  }
  /* the model's referral rule: slides whose spread exceeds refer_spread go to a pathologist */
  int64_t referred = 0, kept_right = 0;
  if (spread && isfinite(refer_spread)) {
    for (int64_t i = 0; i < n; i++) {
      if (spread[i] > refer_spread)
        referred++;
      else
        kept_right += right[i];
    }
    if (text)
      g_string_append_printf(text,
                             "referral (spread above %.4g): %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT
                             " slides referred (%.1f %%); accuracy on the others %.4f (on all "
                             "%.4f)\n",
                             refer_spread, referred, n, 100.0 * (double)referred / (double)n,
                             n > referred ? (double)kept_right / (double)(n - referred) : NAN,
                             cal->accuracy);
  }
  if (json && spread && isfinite(refer_spread)) {
    json_builder_set_member_name(json, "referral");
    json_builder_begin_object(json);
    json_double(json, "refer_spread", refer_spread);
    json_builder_set_member_name(json, "referred");
    json_builder_add_int_value(json, referred);
    json_double(json, "kept_accuracy",
                n > referred ? (double)kept_right / (double)(n - referred) : NAN);
    json_builder_end_object(json);
  }
  if (json) {
    json_builder_set_member_name(json, "calibration");
    json_builder_begin_object(json);
    json_double(json, "ece", cal->ece);
    json_interval(json, "ece_interval", lo, hi);
    if (tcal) {
      json_double(json, "temperature", temperature);
      json_double(json, "ece_calibrated", tcal->ece);
      json_interval(json, "ece_calibrated_interval", tlo, thi);
    }
    json_builder_set_member_name(json, "bins");
    json_builder_add_int_value(json, BINS);
    json_double(json, "mean_confidence", cal->confidence);
    json_reliability(json, "reliability", cal);
    if (tcal)
      json_reliability(json, "reliability_calibrated", tcal);
    json_builder_end_object(json);
  }
  return !png || reliability_png(png, cal, tcal, error);
}
