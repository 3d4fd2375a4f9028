/* result.h: a slide's result, in one schema for every way mexd reports it — `mexd forward
 * --json`, `mexd classify`'s result.json and (field for field, '-' for '_') the mexd-result bus
 * message of mexddiffc — and the identity of what produced it.
 *
 * The JSON (schema "mexd-result/1"):
 *   schema        "mexd-result/1"
 *   slide_id      the slide (or bag) id: its file name without the extension
 *   path          the slide or feature file it was computed from
 *   class, class_index, classes
 *   probabilities Diff-C's class probabilities [C] (null without a diffusion classifier)
 *   spread        their spread over the chains [C] (null likewise)
 *   prior         the Dyn-MoE's prior ρ [C]
 *   tiles         instances in the bag (tissue tiles of the slide)
 *   sampler, steps, chains, seed, eta, mode   how it was computed
 *   ms            {adapter1, moe, diffusion}: milliseconds of each stage
 *   seconds       wall time of the whole slide (classify; 0 elsewhere)
 *   device        the compute device (information only)
 *   calibration   (optional; classify, with a model file holding "mexd.calibration") {
 *                 temperature, probabilities: the calibrated ones [C] (of `probabilities`, or of
 *                 `prior` without Diff-C), refer: true when the predicted class's spread exceeds
 *                 refer_spread (the slide should go to a pathologist; null without a rule),
 *                 refer_spread: the rule's threshold or null}
 *   identity      {key: string}: what produced it (result identity, below)
 *   detail        (forward only) adapter logits, the experts' selections, Z
 * Every number in probabilities, spread and prior is finite: a result with NaN or Inf is not a
 * result (reading one is an error, and mexd_slide_result_new_from_model refuses to make one).
 *
 * Result identity: a flat map of strings, one key per input or setting that changes the answer
 * (the slide's content, the backbone's and model's SHA-256, grid, precision, sampler, steps,
 * chains, seed, eta, mode, heatmap width).  A stored result is reused only when its identity
 * equals the current one; mexd_identity_diff says which keys differ, for the message. */
#pragma once

#include "nn/model.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define MEXD_RESULT_SCHEMA "mexd-result/1"

/* ---- identity ---- */

typedef struct _MexdIdentity MexdIdentity;
MexdIdentity *mexd_identity_new(void);
MexdIdentity *mexd_identity_copy(const MexdIdentity *id);
void mexd_identity_free(MexdIdentity *id);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdIdentity, mexd_identity_free)
/* Sets (or replaces) key to the printf-formatted value. */
void mexd_identity_set(MexdIdentity *id, const char *key, const char *format, ...)
    G_GNUC_PRINTF(3, 4);
const char *mexd_identity_get(const MexdIdentity *id, const char *key);
guint mexd_identity_n_keys(const MexdIdentity *id);
/* The i-th key, in insertion order. */
const char *mexd_identity_key(const MexdIdentity *id, guint i);
/* Removes key (when present). */
void mexd_identity_remove(MexdIdentity *id, const char *key);
/* NULL when both hold the same keys and values; else a description of the differences,
 * "seed 3 → 5; model sha256:1a2b3c4d… → sha256:9f8e7d6c…" (g_free). */
char *mexd_identity_diff(const MexdIdentity *was, const MexdIdentity *now);
void mexd_identity_to_json(const MexdIdentity *id, JsonBuilder *b);
MexdIdentity *mexd_identity_from_json(JsonNode *node, const char *display, GError **error);

/* ---- results ---- */

typedef struct {
  char *slide_id, *path;
  int n_classes;
  char **classes; /* NULL-terminated */
  int class_index;
  double *probabilities, *spread; /* [C], NULL without diffusion */
  double *prior;                  /* [C] */
  gint64 tiles;
  char *sampler; /* "card", "ddim", NULL without diffusion */
  int steps, chains;
  guint64 seed;
  double eta;
  char *mode; /* "paper" or "official" */
  double ms_adapter1, ms_moe, ms_diffusion, seconds;
  char *device;
  MexdIdentity *identity; /* may be NULL */
  JsonNode *detail;       /* may be NULL */
  /* calibration (NULL calibrated: none) */
  double *calibrated; /* [C] */
  double temperature, refer_spread; /* refer_spread NaN: no referral rule */
  int refer;                        /* 1 referred, 0 not, -1 no rule */
} MexdSlideResult;

/* Sets r's calibration: the model's temperature, the calibrated probabilities [C] (copied) and
 * its referral spread (NaN: no rule; then refer is -1); refer is 1 when the predicted class's
 * spread exceeds it, 0 when not. */
void mexd_slide_result_set_calibration(MexdSlideResult *r, double temperature,
                                       const double *calibrated, double refer_spread);

void mexd_slide_result_free(MexdSlideResult *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdSlideResult, mexd_slide_result_free)

/* The result of a forward pass: refuses (MEXD_ERROR_FORMAT, naming `slide_id`) a result whose
 * probabilities or prior are not finite.  `with_detail` adds forward's detail. */
MexdSlideResult *mexd_slide_result_new_from_model(const MexdResult *r, const MexdModelConfig *cfg,
                                                  const MexdForwardOptions *opt,
                                                  const char *slide_id, const char *path,
                                                  gboolean with_detail, GError **error);
/* Checks the class index and that every number is finite; the error names the slide. */
gboolean mexd_slide_result_check(const MexdSlideResult *r, GError **error);

char *mexd_slide_result_to_json(const MexdSlideResult *r, gboolean pretty);
/* Parses and checks a result (schema, types, lengths, finite numbers). */
MexdSlideResult *mexd_slide_result_from_json(const char *text, gssize len, const char *display,
                                             GError **error);
MexdSlideResult *mexd_slide_result_read(const char *path, GError **error);
/* Writes it atomically (io/files.h). */
gboolean mexd_slide_result_write(const MexdSlideResult *r, const char *path, GError **error);

G_END_DECLS
