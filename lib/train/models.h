/* models.h: the trainable models, written over the tape (autograd.h): TransMIL (adapters #1, #2
 * and the TransMIL baseline), the Dyn-MoE stage, the Diff-C denoiser and the ABMIL baseline
 * (docs/TRAINING.md).  Parameters live in a MexdParams under the names of docs/MODEL-FORMAT.md,
 * so a trained set is written straight into a model file.
 *
 * The forward passes compute what lib/nn's inference code computes (tests/test-train.c checks
 * it, and the losses and gradients against tests/reference/gen_train.py's PyTorch).  With a NULL
 * tape they are plain forward passes (no dropout, nothing recorded). */
#pragma once

#include "nn/model.h"
#include "nn/nn.h"
#include "nn/autograd.h"
#include "train/params.h"

G_BEGIN_DECLS

/* ---- TransMIL ---- */
typedef struct {
  int in_dim, classes;
  MexdAttnShape s;
  float dropout; /* after each attention's output (0.1 in training) */
  MexdVar *fc1_w, *fc1_b, *cls;
  MexdVar *ln_w[3], *ln_b[3]; /* layer1.norm, layer2.norm, norm */
  MexdVar *qkv_w[2], *out_w[2], *out_b[2], *res_w[2];
  MexdVar *conv_w[3], *conv_b[3]; /* PPEG 7, 5, 3 */
  MexdVar *head_w, *head_b;
} MexdTransMilT;

/* Adds the parameters `prefix`.* (initialised as docs/TRAINING.md says). */
gboolean mexd_transmil_t_init(MexdTransMilT *tm, MexdParams *ps, const char *prefix, int in_dim,
                              int classes, const MexdAttnShape *s, GError **error);
/* x [N, in] → logits [1, C] and (out != NULL) the final tokens [Np+1, W] (row 0 the class
 * token), both new. */
gboolean mexd_transmil_t_forward(MexdTransMilT *tm, MexdTape *t, MexdVar *x, MexdVar **logits,
                                 MexdVar **out, GError **error);

/* ---- Dyn-MoE (paper mode) with adapter #2 ---- */
typedef struct {
  int experts, classes, width;
  double alpha[MEXD_MAX_EXPERTS];
  int expert_of_class[MEXD_MAX_CLASSES];
  gboolean no_routing; /* the ablation: adapter #2 sees all rows, ungated */
  MexdVar *router[MEXD_MAX_EXPERTS];
  MexdVar *cls_w[MEXD_MAX_EXPERTS], *cls_b[MEXD_MAX_EXPERTS];
  MexdTransMilT a2;
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
/* P [N, W]: adapter #1's instance rows (data); label < 0: no loss. */
gboolean mexd_moe_t_forward(MexdMoeT *moe, MexdTape *t, MexdTensor *P, int label, MexdMoeOut *out,
                            GError **error);
void mexd_moe_out_clear(MexdMoeOut *out);
/* (the routing: mexd_moe_route_paper, nn/nn.h, the one inference runs) */

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
