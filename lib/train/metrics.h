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

G_END_DECLS
