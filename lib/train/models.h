/* models.h: the training stages over the models' one definitions (nn/module.h; docs/TRAINING.md):
 * what each stage adds to a definition — the Dyn-MoE stage's routing and losses, the diffusion
 * stage's noising, draws and loss.  TransMIL (adapters #1, #2 and the baseline) and ABMIL train
 * straight from their definitions (MexdTransMil, MexdAbmil).  Parameters live in a MexdParams
 * under the names of docs/MODEL-FORMAT.md, so a trained set is written straight into a model file.
 *
 * tests/test-train.c checks the losses and gradients against tests/reference/gen_train.py's
 * PyTorch.  With a NULL tape nothing is recorded (evaluation). */
#pragma once

#include "nn/model.h"
#include "nn/module.h"
#include "nn/nn.h"
#include "nn/autograd.h"
#include "train/params.h"

G_BEGIN_DECLS

/* ---- the Dyn-MoE stage (paper routing) with adapter #2 ---- */
typedef struct {
  int experts, classes;
  double alpha[MEXD_MAX_EXPERTS];
  int expert_of_class[MEXD_MAX_CLASSES];
  gboolean no_routing; /* the ablation: adapter #2 sees all rows, ungated */
  MexdMoe moe;
  MexdTransMil a2;
} MexdMoeT;

typedef struct {
  MexdVar *loss;    /* [1] (NULL without a label) */
  MexdVar *logits2; /* [1, C] */
  MexdVar *z;       /* [1, W] */
  float c[MEXD_MAX_EXPERTS];
  int64_t n_sel[MEXD_MAX_EXPERTS];
  int32_t *sel[MEXD_MAX_EXPERTS]; /* selected rows in block order (g_free) */
} MexdMoeOut;

gboolean mexd_moe_t_init(MexdMoeT *moe, MexdParams *ps, const MexdModelConfig *cfg,
                         gboolean no_routing, GError **error);
void mexd_moe_t_clear(MexdMoeT *moe);
/* P [N, W]: adapter #1's instance rows (data); label < 0: no loss.  The loss is adapter #2's
 * cross-entropy + expert 0's on class 0 + (label's expert ≥ 1) that expert's on its own index. */
gboolean mexd_moe_t_forward(MexdMoeT *moe, MexdTape *t, MexdTensor *P, int label, MexdMoeOut *out,
                            GError **error);
void mexd_moe_out_clear(MexdMoeOut *out);

/* ---- Diff-C denoiser ---- */
typedef struct {
  int classes, width, z_dim, T;
  gboolean prior_none;
  double *abar;     /* [T] */
  MexdDiffcNet net; /* the denoiser's one definition (nn/module.h) */
} MexdDiffcT;

gboolean mexd_diffc_t_init(MexdDiffcT *dc, MexdParams *ps, int classes, int z_dim, int width,
                           int T, double beta_start, double beta_end, gboolean prior_none,
                           GError **error);
void mexd_diffc_t_clear(MexdDiffcT *dc);
/* f_t [S, C] (host, row-major) from the one-hot label, ρ, ε and the row's t, in double rounded
 * to f32 (ρ taken as 0 with prior_none). */
void mexd_diffc_t_noised(const MexdDiffcT *dc, int label, const float *rho, const int32_t *t,
                         const float *eps, int S, float *f_t);
/* ε̂ [S, C] = ε_θ(Z, f_t, ρ, t) for host data f_t [S·C], z [W], rho [C] (ρ as given: the
 * caller passes zeros for prior_none), ts [S]. */
MexdVar *mexd_diffc_t_eps(MexdDiffcT *dc, MexdTape *t, const float *f_t, int S, const float *z,
                          const float *rho, const int32_t *ts, GError **error);
/* The stage-2 loss of one bag: mean (ε − ε̂)² over S rows (f_t computed here). */
MexdVar *mexd_diffc_t_loss(MexdDiffcT *dc, MexdTape *t, const float *z, const float *rho,
                           int label, const int32_t *ts, const float *eps, int S, GError **error);
/* The 64 t of a bag's step: 32 uniform draws in [0, T) and their antithetic partners T−1−t,
 * from Philox under (seed, epoch, bag); and ε [64·C] standard normals from the same key. */
void mexd_diffc_t_draw(const MexdDiffcT *dc, uint64_t seed, uint32_t epoch, uint32_t bag,
                       int32_t *ts, float *eps);

G_END_DECLS
