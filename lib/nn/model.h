/* model.h: the whole MExD model — adapter #1 → Dyn-MoE → adapter #2 → Diff-C (MEXD.md), loaded
 * from one model file (docs/MODEL-FORMAT.md) onto a backend.
 *
 * A loaded model is read-only during forward passes but not thread-safe (passes record on the
 * model's backend); use one model per thread. */
#pragma once

#include "backend/backend.h"
#include "core/tensor.h"

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_ROUTE_PAPER,    /* the paper's Dyn-MoE (MEXD.md §2) */
  MEXD_ROUTE_OFFICIAL, /* the authors' released stage 1, so their checkpoints give their logits */
} MexdRouteMode;

#define MEXD_MAX_EXPERTS 16
#define MEXD_MAX_CLASSES 256

typedef struct {
  int feature_dim, width, heads, landmarks, pinv_iterations, res_conv_taps;
  int n_classes;
  char **classes; /* NULL-terminated */
  int experts;
  double alpha[MEXD_MAX_EXPERTS];
  int expert_of_class[MEXD_MAX_CLASSES];
  MexdRouteMode mode;
  gboolean has_diffusion;
  int T, diffusion_width;
  double beta_start, beta_end;
  gboolean prior_none; /* diffusion.prior "none": ρ replaced by 0 in the sampler (an ablation) */
} MexdModelConfig;

typedef struct _MexdModel MexdModel;

/* Parses and checks a configuration (the JSON of `mexd.config`); `file` names it in errors. */
gboolean mexd_model_config_parse(MexdModelConfig *cfg, const char *json, const char *file,
                                 GError **error);
void mexd_model_config_clear(MexdModelConfig *cfg);
/* The configuration as JSON (the same keys). */
char *mexd_model_config_to_json(const MexdModelConfig *cfg);

/* Loads a model file onto `be`; every tensor's name, dtype and shape is checked against the
 * configuration, and the first mismatch is reported by name. */
MexdModel *mexd_model_load(const char *path, MexdBackend *be, GError **error);
void mexd_model_free(MexdModel *m);
const MexdModelConfig *mexd_model_config(const MexdModel *m);
MexdBackend *mexd_model_backend(const MexdModel *m);
/* Switches the routing mode (official needs E ∈ {2, 3, 4}: the authors' three files). */
gboolean mexd_model_set_mode(MexdModel *m, MexdRouteMode mode, GError **error);

typedef enum {
  MEXD_SAMPLER_CARD, /* ancestral over all T indices */
  MEXD_SAMPLER_DDIM, /* DDIM with `steps` indices */
} MexdSampler;

typedef struct {
  gboolean diffusion; /* run Diff-C when the model has it */
  MexdSampler sampler;
  int steps;  /* DDIM only */
  double eta; /* DDIM only */
  int chains;
  uint64_t seed;
} MexdForwardOptions;
#define MEXD_FORWARD_OPTIONS_DEFAULT ((MexdForwardOptions){TRUE, MEXD_SAMPLER_CARD, 50, 0.0, 32, 0})

typedef struct {
  int n_classes, experts, width, chains;
  int64_t n_instances;
  float *logits1;      /* [C] adapter #1 */
  float *attention;    /* [n] adapter #1's class-token attention over the instances (first
                        * Nyström layer, mean over heads): where the model looks */
  int64_t *n_selected; /* [E] */
  int32_t **selected;  /* [E][n_selected]: instance indices in block order (see below) */
  gboolean *zero_row;  /* [E] official: the expert was empty and fed one zero row */
  int64_t n_routed;    /* R: the rows the routers saw (n in paper mode, Np in official) */
  float *gates;        /* [E·R] gates[r·R + i] = p_r(i)[1], router r's gate of routed row i */
  float *c;            /* [E] */
  float *z;            /* [W] */
  float *logits2;      /* [C] adapter #2 */
  float *rho;          /* [C] */
  gboolean has_probs;
  float *probs, *spread; /* [C] */
  float *f0;             /* [chains·C] */
  int predicted;         /* argmax of probs (of rho without diffusion) */
  double ms_adapter1, ms_moe, ms_diffusion;
} MexdResult;

/* One bag x [n, d] (host memory, row-major).  The selected indices are rows of the adapter's
 * instance features P = out[1..Np]: below n they are the bag's instances, from n on the square
 * padding's copies of instances 0.. (official mode only routes them).  `trace` (nn.h) may be
 * NULL. */
typedef struct _MexdTrace MexdTrace;
MexdResult *mexd_model_forward(MexdModel *m, const float *x, int64_t n, int64_t d,
                               const MexdForwardOptions *opt, MexdTrace *trace, GError **error);
void mexd_result_free(MexdResult *r);
/* Diff-C alone, conditioned on a slide's insight z [width] and prior rho [n_classes] (what
 * mexd_model_forward computes before it): the result's probs, spread, f0, chains and predicted
 * equal those of mexd_model_forward with the same options; rho and z are copied into it.
 * UNSUPPORTED when the model has no Diff-C. */
MexdResult *mexd_model_diffuse(MexdModel *m, const float *z, const float *rho,
                               const MexdForwardOptions *opt, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdModel, mexd_model_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdResult, mexd_result_free)

G_END_DECLS
