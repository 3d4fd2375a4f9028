/* classifier.h: any slide classifier this project trains, loaded from its file for evaluation:
 *   mexd-model/1     MExD (adapter #1, Dyn-MoE, adapter #2, and Diff-C when present)
 *   mexd-transmil/1  TransMIL alone (the baseline; also MExD's stage-0 adapter)
 *   mexd-abmil/1     gated-attention MIL (docs/MODEL-FORMAT.md)
 * and the writers of the TransMIL / ABMIL configurations, shared with the trainer. */
#pragma once

#include "nn/model.h"
#include "train/models.h"

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_CLASSIFIER_MEXD,
  MEXD_CLASSIFIER_TRANSMIL,
  MEXD_CLASSIFIER_ABMIL,
} MexdClassifierKind;

typedef struct _MexdClassifier MexdClassifier;

/* Loads the file (its mexd.format says which kind); errors name the file. */
MexdClassifier *mexd_classifier_load(const char *path, MexdBackend *be, GError **error);
void mexd_classifier_free(MexdClassifier *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdClassifier, mexd_classifier_free)

MexdClassifierKind mexd_classifier_kind(const MexdClassifier *c);
const char *mexd_classifier_kind_name(MexdClassifierKind kind); /* "mexd", "transmil", "abmil" */
int mexd_classifier_n_classes(const MexdClassifier *c);
const char *const *mexd_classifier_classes(const MexdClassifier *c); /* NULL-terminated */
int64_t mexd_classifier_feature_dim(const MexdClassifier *c);
gboolean mexd_classifier_has_diffusion(const MexdClassifier *c);
/* The MExD model (NULL for the other kinds; borrowed). */
MexdModel *mexd_classifier_model(MexdClassifier *c);

/* A classifier's calibration (issue 19), fitted on a validation split by `mexd eval --calibrate`
 * and stored in the model file's metadata as "mexd.calibration" (docs/MODEL-FORMAT.md):
 *   temperature   T of the calibrated probabilities p^(1/T) / Σ p^(1/T) (mexd_probs_temperature)
 *   refer_spread  for MExD with Diff-C: refer a slide to a pathologist when the spread of its
 *                 predicted class's chains exceeds this (chosen so that `coverage` of the fitting
 *                 split is kept); NaN when there is none
 * and what it was fitted on (split, slides; fitted_on is the JSON object as stored).  With a
 * referral, fitted_on's sampler settings are read too: the spread the threshold compares is a
 * function of the chains' noise (the same for every slide), their number and the sampler, so a
 * threshold means nothing under other settings (on the preset cohorts of docs/RESULTS.md the same
 * threshold referred 0 to 128 of 128 slides under five noise seeds). */
typedef struct {
  gboolean present;
  double temperature;
  double refer_spread, coverage;
  int64_t slides;
  /* with refer_spread: fitted_on's "sampler", "chains", "sample_seed" and "steps" (DDIM's; 50
   * when absent) */
  MexdSampler sampler;
  int chains, steps;
  uint64_t sample_seed;
} MexdClassifierCalibration;

/* The sampler settings a run must use with calibration `cal` (from model file `path`): without a
 * referral nothing changes; with one, each setting not given (its *_given FALSE) takes the
 * calibration's, and one given that differs is MEXD_ERROR_INVALID_ARGUMENT naming both (the
 * option names are --sampler, --chains, --steps and `seed_option`).  steps matters for DDIM
 * only. */
gboolean mexd_calibration_sampler(const MexdClassifierCalibration *cal, const char *path,
                                  const char *seed_option, MexdSampler *sampler,
                                  gboolean sampler_given, int *chains, gboolean chains_given,
                                  int *steps, gboolean steps_given, uint64_t *seed,
                                  gboolean seed_given, GError **error);

/* The file's calibration (present FALSE when it has none; checked on load: a bad one is an
 * error naming the file). */
const MexdClassifierCalibration *mexd_classifier_calibration(const MexdClassifier *c);
/* The same from an open model file `st` (path names it in the errors), without loading it. */
gboolean mexd_classifier_read_calibration(MexdSafetensors *st, const char *path,
                                          MexdClassifierCalibration *cal, GError **error);
/* Writes the model file `in` again at `out` (atomically; never over `in`: the caller checks)
 * with every tensor and metadata entry as they are, and "mexd.calibration" set to `json`. */
gboolean mexd_classifier_write_calibrated(const char *in, const char *out, const char *json,
                                          GError **error);

/* The class probabilities probs [C] of one bag x [n, d]: MExD → Diff-C's (opt's sampler, chains,
 * seed) when it has Diff-C and !prior_only, else ρ; TransMIL / ABMIL → the softmax of the
 * logits.  spread [C] (may be NULL): the population standard deviation of each class's f̂₀ over
 * Diff-C's chains, NaN where no chains ran. */
gboolean mexd_classifier_predict(MexdClassifier *c, const float *x, int64_t n, int64_t d,
                                 const MexdForwardOptions *opt, gboolean prior_only, float *probs,
                                 float *spread, GError **error);

/* The TransMIL-only configuration: feature_dim, width, heads, landmarks, pinv_iterations,
 * res_conv_taps, classes (g_free). */
char *mexd_transmil_config_json(int feature_dim, const MexdAttnShape *s,
                                const char *const *classes, int n_classes);
/* Parses it (file names the errors); classes is NULL-terminated (g_strfreev). */
gboolean mexd_transmil_config_parse(const char *json, const char *file, int *feature_dim,
                                    MexdAttnShape *s, char ***classes, GError **error);
/* The ABMIL configuration: arch "abmil", feature_dim, width, attn_dim, classes (g_free). */
char *mexd_abmil_config_json(int feature_dim, int width, int attn_dim, const char *const *classes,
                             int n_classes);

G_END_DECLS
