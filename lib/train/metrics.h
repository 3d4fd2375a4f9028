/* metrics.h: the evaluation metrics of slide classification (MEXD.md §4), matched to scikit-learn.
 *
 * Input: n slides, C >= 2 classes, probs[n*C] row-major (row i = the class probabilities of slide
 * i, rows summing to ~1: not checked, see below) and labels[n] in 0..C-1.  Computed:
 *
 *   ACC: the fraction of slides whose argmax class is the label.  Argmax ties go to the lowest
 *   class index (numpy argmax).
 *
 *   AUC, per class c (every C, binary included): the ROC AUC of "label == c" scored by probs[:, c]
 *   (= sklearn roc_auc_score(labels == c, probs[:, c])).  Computed exactly as the Mann-Whitney
 *   statistic: over all (positive, negative) pairs, 1 when the positive scores higher, 1/2 on a
 *   tie, counted in integers and divided once; that is the trapezoid area under sklearn's ROC
 *   curve (tied scores form one diagonal segment).  Scores compare as doubles (-0.0 ties 0.0).
 *   A class with no positive (it does not occur in labels) or no negative (every label is it) has
 *   no AUC: class_auc[c] is NaN and class_auc_defined[c] FALSE; this is not an error.
 *
 *   AUC, headline (`auc`):
 *     C == 2: the AUC of the positive class 1 from probs[:, 1] (= sklearn roc_auc_score(labels,
 *       probs[:, 1])); MEXD_AUC_UNDEFINED when only one class occurs.
 *     C > 2: the macro mean of the one-vs-rest per-class AUCs (= sklearn roc_auc_score(labels,
 *       probs, multi_class='ovr', average='macro')) when every class occurs (MEXD_AUC_DEFINED).
 *       When some classes do not occur, sklearn raises a ValueError; here the mean is over the
 *       classes whose AUC is defined (n_auc_classes of them), flagged MEXD_AUC_PARTIAL: it is NOT
 *       comparable with a full macro AUC.  When no class is defined (a single class occurs),
 *       MEXD_AUC_UNDEFINED and auc is NaN.
 *     sklearn's multiclass AUC also raises when a row does not sum to 1 (np.allclose); that is
 *     not checked here (the AUC is rank-based: any finite scores give a well-defined number).
 *
 *   Per class from the argmax predictions (= sklearn precision_recall_fscore_support(labels,
 *   argmax, labels=range(C), zero_division=0)): precision tp/(tp+fp), recall tp/(tp+fn), F1 =
 *   2PR/(P+R), each 0 where its denominator is 0 (a class never predicted has precision 0, a class
 *   absent from labels recall 0); support = the number of slides of the class.  macro_f1 is the
 *   plain mean of the C F1s, absent classes included (= sklearn f1_score(labels, argmax,
 *   average='macro', labels=range(C), zero_division=0)).
 *
 *   Confusion matrix confusion[t*C + p]: the slides of true class t predicted as p (rows = true
 *   class, the order of sklearn confusion_matrix(labels, argmax, labels=range(C))).
 *
 * Errors (MEXD_ERROR_INVALID_ARGUMENT): NULL probs or labels, n < 1, C < 2, a label outside
 * 0..C-1 (naming the row), a NaN or infinite probability (naming the row and class). */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_AUC_DEFINED,   /* binary: both classes occur; C > 2: every class occurs */
  MEXD_AUC_PARTIAL,   /* C > 2 only: the macro mean over the defined classes only */
  MEXD_AUC_UNDEFINED, /* no class has a defined AUC; auc is NaN */
} MexdAucStatus;

/* Everything is owned by the struct and freed by mexd_metrics_free(). */
typedef struct {
  int64_t n;     /* slides */
  int n_classes; /* C */
  int64_t n_correct;
  double accuracy; /* n_correct / n */
  double auc;      /* headline AUC (above); NaN when auc_status is MEXD_AUC_UNDEFINED */
  MexdAucStatus auc_status;
  int n_auc_classes; /* classes with a defined AUC (averaged into auc when C > 2) */
  double macro_f1;
  /* per class, [C] each */
  double *class_auc;           /* NaN where undefined */
  gboolean *class_auc_defined; /* the class has at least one positive and one negative */
  double *precision, *recall, *f1;
  int64_t *support;   /* slides whose label is the class (confusion row sum) */
  int64_t *predicted; /* slides predicted as the class (confusion column sum) */
  int64_t *confusion; /* [C*C], rows = true class, columns = predicted class */
} MexdMetrics;

/* The metrics of probs[n*C] (row-major) against labels[n] (see above).  NULL with the error set
 * on bad input.  Free with mexd_metrics_free(). */
MexdMetrics *mexd_metrics_compute(const double *probs, const int *labels, int64_t n, int n_classes,
                                  GError **error);
void mexd_metrics_free(MexdMetrics *metrics);

/* The argmax of each row (ties: the lowest class index), as the metrics use it. */
int mexd_metrics_argmax(const double *row, int n_classes);

/* "defined", "partial", "undefined" ("invalid" outside the enum). */
const char *mexd_auc_status_name(MexdAucStatus status);

/* A text report for `mexd eval`:
 *
 *   slides 40, classes 3
 *   ACC 0.8250  AUC 0.9123  macro-F1 0.8011
 *   class     precision  recall      F1  support  predicted      AUC
 *   normal       0.9000  0.8182  0.8571       11         10   0.9412
 *   ...
 *   confusion matrix (rows = true class, columns = predicted class)
 *   ...
 *
 * Numbers to 4 decimals; an undefined AUC prints "undefined"; a partial macro AUC is followed by
 * "(partial: mean over k of C classes; sklearn raises)"; the binary headline AUC names its
 * positive class.  class_names: NULL, or at least C entries (a NULL entry prints the index).  The
 * string ends with a newline; g_free it. */
char *mexd_metrics_format(const MexdMetrics *metrics, const char *const *class_names);

/* The metrics as a JSON object (a new JsonNode, json_node_unref it):
 *   { "n", "n_classes", "n_correct", "accuracy", "auc" (null when undefined), "auc_status"
 *     ("defined" | "partial" | "undefined"), "n_auc_classes", "macro_f1",
 *     "classes": [ { "index", "name" (class_names[c], or the index as a string), "precision",
 *                    "recall", "f1", "support", "predicted", "auc" (null when undefined) } ...],
 *     "confusion_matrix": [[...] per true class] }
 * class_names as for mexd_metrics_format(). */
JsonNode *mexd_metrics_to_json(const MexdMetrics *metrics, const char *const *class_names);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdMetrics, mexd_metrics_free)

/* ---- uncertainty a user can act on (issue 19) ----
 *
 * Selective classification (risk–coverage).  The n slides are ranked by a confidence score
 * (higher: more certain; e.g. the top-class probability, or minus the spread of Diff-C's chains);
 * the risk at coverage k/n is the error rate of the k most confident.  Slides of equal confidence
 * enter together: within a tied group, risk(k) counts the group's errors pro rata (the expected
 * risk over the group's orders), so the result does not depend on the slides' order.
 *   aurc       (1/n) Σ_{k=1..n} risk(k): the area under the risk–coverage curve (Geifman et al.),
 *              lower is better; 0 when every slide is right, the error rate when the ranking is
 *              no better than chance (in expectation)
 *   acc_at_80  1 − risk(⌈0.8·n⌉): the accuracy on the most confident 80 % (acc_at_90: 90 %)
 *   accuracy   1 − risk(n)
 * Errors (MEXD_ERROR_INVALID_ARGUMENT): NULL arguments, n < 1, a confidence that is NaN. */
typedef struct {
  double aurc, acc_at_80, acc_at_90, accuracy;
} MexdRiskCoverage;

gboolean mexd_risk_coverage(const double *confidence, const gboolean *correct, int64_t n,
                            MexdRiskCoverage *out, GError **error);

/* Calibration of the top-class probability (Guo et al. 2017): confidence = max_c probs[i, c]
 * (the argmax as mexd_metrics_argmax), correct = that class is the label; `bins` equal-width bins
 * (b/B, (b+1)/B] (a confidence of 0 in the first); ECE = Σ_b (n_b / n)·|acc_b − conf_b|. */
typedef struct {
  int bins;
  int64_t n;
  double ece;
  double accuracy, confidence; /* over all slides */
  int64_t *count;              /* [bins] */
  double *bin_confidence;      /* [bins], the mean confidence (NaN in an empty bin) */
  double *bin_accuracy;        /* [bins], NaN in an empty bin */
} MexdCalibration;

/* bins 1..1000; errors as mexd_metrics_compute (and a probability outside [0, 1]). */
MexdCalibration *mexd_calibration_compute(const double *probs, const int *labels, int64_t n,
                                          int n_classes, int bins, GError **error);
void mexd_calibration_free(MexdCalibration *cal);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdCalibration, mexd_calibration_free)

/* Temperature scaling of probabilities: p_T[c] = p[c]^(1/T) / Σ_k p[k]^(1/T) (softmax of log p / T;
 * a probability below 1e-12 counts as 1e-12).  `out` may be `probs`. */
void mexd_probs_temperature(const double *probs, int64_t n, int n_classes, double T, double *out);
/* The T in [0.05, 20] that minimises the mean negative log-likelihood of the labels under
 * p_T (golden-section search on log T to 1e-6; the NLL is convex in 1/T). */
double mexd_fit_temperature(const double *probs, const int *labels, int64_t n, int n_classes);

/* A statistic of the slides idx[0 … n−1] (a bootstrap resample: indices may repeat); NaN when it
 * is undefined on that resample (such resamples are drawn again, at most 100·B draws). */
typedef double (*MexdSlideStat)(const int64_t *idx, int64_t n, gpointer data);
/* The 95 % percentile interval of stat over B resamples of the n slides (numpy's percentile,
 * linear interpolation, of the B values at 2.5 and 97.5).  Resample r takes slide j's place from
 * word j % 4 of Philox4x32-10 under key (seed) at counter (j / 4, r, attempt, 0x626f6f74 "boot"),
 * ⌊w·n / 2^32⌋.  FALSE (lo = hi = NaN) when fewer than B resamples were defined. */
gboolean mexd_bootstrap_interval(int64_t n, int B, uint64_t seed, MexdSlideStat stat,
                                 gpointer data, double *lo, double *hi);

G_END_DECLS
