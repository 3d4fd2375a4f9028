/* module.h: models written once, for inference and training (issue 18).
 *
 * A model's definition (its parameters by name and shape, and its forward pass over MexdVar) is
 * written once in lib/nn and serves both: training runs it on a MexdTape (nn/autograd.h) and
 * backpropagates; inference runs the same function with tape = NULL, which records nothing and
 * costs the forward ops alone.  A definition asks for each parameter through a MexdParamSource:
 * training's source creates it with its initial values (lib/train/params.c,
 * MEXD_PARAMS_SOURCE), inference's takes it from the model file (mexd_param_source_weights,
 * which checks its shape and remembers it as taken).  Fused kernels that an inference path runs
 * instead (the samplers of diffc.c) are specialisations of a definition, tested against it.
 *
 * Defined here: TransMIL with its Nyström attention and PPEG (transmil.c; adapters #1, #2 and the
 * TransMIL baseline), Dyn-MoE's routers, blocks, centroids and expert classifiers (moe.c; the
 * paper routing itself is mexd_moe_route_paper, model.c), Diff-C's denoiser (diffc.c) and ABMIL
 * (abmil.c).  lib/train adds the losses, optimizers, data and the trainer, and no forward pass. */
#pragma once

#include "nn/autograd.h"
#include "nn/model.h"
#include "nn/nn.h"

G_BEGIN_DECLS

/* How a new parameter starts (training; a model file gives inference its values). */
typedef enum {
  MEXD_INIT_UNIFORM,   /* U(−a, a) */
  MEXD_INIT_UNIFORM01, /* U(0, 1) */
  MEXD_INIT_NORMAL,    /* N(0, a²) */
  MEXD_INIT_CONST,     /* every element a */
} MexdInit;

/* Where a definition's parameters come from: `get` returns a new reference to the Var of the
 * parameter `name` of that shape (created with `init`/`a`, or taken from a file), or NULL with
 * the error set. */
typedef struct {
  MexdVar *(*get)(gpointer ctx, const char *name, int ndim, const int64_t *shape, MexdInit init,
                  double a, GError **error);
  gpointer ctx;
} MexdParamSource;

/* The parameter `name` from `src` (a new reference). */
MexdVar *mexd_param(const MexdParamSource *src, const char *name, int ndim, const int64_t *shape,
                    MexdInit init, double a, GError **error);
/* A Linear's weight "<prefix>.weight" [out,in] and, with `bias`, "<prefix>.bias" [out]
 * (PyTorch's default start: U(±1/√in) for both); new references in *w and *b (b may be NULL
 * without bias). */
gboolean mexd_param_linear(const MexdParamSource *src, const char *prefix, int64_t out, int64_t in,
                           gboolean bias, MexdVar **w, MexdVar **b, GError **error);
/* Inference's source: each parameter is the model file's tensor of that name, which must have
 * that shape (mexd_weights_get); its Var takes no gradient.  `w` must outlive the source. */
MexdParamSource mexd_param_source_weights(MexdWeights *w);

/* ---- Diff-C's denoiser ε_θ (MEXD.md §3) ----
 * x = [f_t, ρ] [S, 2C]:  h1 = CL1(x, t) ⊙ LN_z(W_z·Z + b_z);  h2 = CL2(h1, t);  h3 = CL3(h2, t);
 * ε̂ = W_o·h3 + b_o, where CLi(x, t) = softplus(LN_i(emb_i[t] ⊙ (W_i·x + b_i))).  Parameters
 * diffc.cl{1,2,3}.{weight,bias,embed}, diffc.norm{1,2,3}.*, diffc.z.*, diffc.norm_z.*,
 * diffc.out.*. */
typedef struct _MexdDiffcNet {
  int classes, width, z_dim, T; /* C, F, W, T */
  MexdVar *w[3], *b[3], *emb[3], *ln_w[3], *ln_b[3];
  MexdVar *wz, *bz, *lnz_w, *lnz_b, *wo, *bo;
} MexdDiffcNet;

gboolean mexd_diffc_net_init(MexdDiffcNet *net, const MexdParamSource *src, int classes,
                             int z_dim, int width, int T, GError **error);
void mexd_diffc_net_clear(MexdDiffcNet *net);
/* ε̂ [S, C] for x [S, 2C], Z [1, W] and the step index of each row, ts (i32 [S], data), or with
 * ts NULL every row at `step` (a sampler's step: nothing is uploaded). */
MexdVar *mexd_diffc_net_eps(MexdDiffcNet *net, MexdTape *t, MexdVar *x, MexdVar *z,
                            MexdTensor *ts, int step, GError **error);
/* ---- ABMIL (Ilse et al. 2018, gated attention; CLAM's and the baseline of docs/RESULTS.md) ----
 * h = dropout(ReLU(W_fc·x + b)); A = softmax_N(w_cᵀ(tanh(W_a·h) ⊙ σ(W_b·h)) + c); M = A·h;
 * logits = W_cls·M + b.  Parameters abmil.fc, abmil.attn_a, abmil.attn_b, abmil.attn_c,
 * abmil.classifier (weight, bias each). */
typedef struct {
  int in_dim, width, attn_dim, classes;
  float dropout; /* 0.25 after fc in training (a tape that is not training: none) */
  MexdVar *fc_w, *fc_b, *a_w, *a_b, *b_w, *b_b, *c_w, *c_b, *cls_w, *cls_b;
} MexdAbmil;

gboolean mexd_abmil_init(MexdAbmil *ab, const MexdParamSource *src, int in_dim, int width,
                         int attn_dim, int classes, GError **error);
void mexd_abmil_clear(MexdAbmil *ab);
/* x [N, D] → logits [1, C] (new); attention (optional) [1, N] (new). */
gboolean mexd_abmil_forward(MexdAbmil *ab, MexdTape *t, MexdVar *x, MexdVar **logits,
                            MexdVar **attention, GError **error);

/* ---- TransMIL (Shao et al. 2021; MEXD.md §1) ----
 * h = ReLU(fc1(x)); tokens [cls, h, h[0 : Np − N]] (Np = S², S = ceil √N); layer 1; PPEG; layer 2;
 * LayerNorm; head(token 0).  A layer is h + dropout(Nyström(LN(h))) (transmil.c has the
 * attention's formulas).  Parameters <prefix>.fc1, .cls_token [1,1,W], .layer{1,2}.norm,
 * .layer{1,2}.attn.{qkv (no bias), out, res_conv.weight [H,1,taps,1]}, .ppeg.conv{7,5,3},
 * .norm, .head. */
typedef struct {
  int in_dim, classes;
  MexdAttnShape s;
  float dropout; /* after each attention's output: 0.1 on a training tape (else none) */
  MexdVar *fc1_w, *fc1_b, *cls;
  MexdVar *ln_w[3], *ln_b[3]; /* layer1.norm, layer2.norm, norm */
  MexdVar *qkv_w[2], *out_w[2], *out_b[2], *res_w[2];
  MexdVar *conv_w[3], *conv_b[3]; /* PPEG 7, 5, 3: [W,1,k,k] */
  MexdVar *head_w, *head_b;
} MexdTransMil;

gboolean mexd_transmil_init(MexdTransMil *tm, const MexdParamSource *src, const char *prefix,
                            int in_dim, int classes, const MexdAttnShape *s, GError **error);
void mexd_transmil_clear(MexdTransMil *tm);
/* x [N, in] → logits [1, C] (new) and, when `out` is not NULL, the final tokens [Np+1, W] (new;
 * row 0 the class token); with `attention`, a new [N] tensor: the class token's attention over
 * the N instances in layer 1 (A1[0]·Z·A3, mean over the heads; no gradient).  Trace names:
 * <prefix>.h, .layer1, .attention, .ppeg, .layer2, .out, .logits. */
gboolean mexd_transmil_forward(MexdTransMil *tm, MexdTape *t, MexdVar *x, MexdVar **logits,
                               MexdVar **out, MexdTensor **attention, MexdTrace *trace,
                               const char *prefix, GError **error);
/* The same without a tape, on tensors (inference). */
gboolean mexd_transmil_run(MexdTransMil *tm, MexdTensor *x, MexdTensor **logits,
                           MexdTensor **out, MexdTensor **attention, MexdTrace *trace,
                           const char *prefix, GError **error);

/* ---- Dyn-MoE (MEXD.md §2) ----
 * probs [R, E, 2] = softmax over pairs of the E routers' [2, W] logits; each expert r gets a block
 * of rows of P (chosen by the routing: mexd_moe_route_paper, or the authors' rules in model.c),
 * gated by its gate p1 (paper) or not (official); its centroid c̄_r = Σ g·P / Σ g over the block
 * (the plain mean when ungated), u_r = classifier_r(c̄_r) [1, E], c_r = softmax(u_r)[r], and the
 * insight Z = Σ c_r·c̄_r.  Parameters moe.router.<r>.weight [2, W], moe.classifier.<r> [E, W]. */
typedef struct {
  int experts, width;
  MexdVar *router[MEXD_MAX_EXPERTS];
  MexdVar *cls_w[MEXD_MAX_EXPERTS], *cls_b[MEXD_MAX_EXPERTS];
} MexdMoe;

/* One expert's block: the i32 indices of its rows of P (data, n of them), or `zero_row`: one zero
 * row (the authors' official rule for an expert that keeps nothing; idx NULL). */
typedef struct {
  MexdTensor *idx;
  int64_t n;
  gboolean zero_row;
} MexdMoeBlock;

typedef struct {
  MexdVar *rows;                /* [M, W] the blocks in expert order (NULL unless asked for) */
  MexdVar *cent;                /* [E, W] the centroids */
  MexdVar *u[MEXD_MAX_EXPERTS]; /* [1, E] the expert classifiers' logits */
  MexdVar *c;                   /* [E, 1] the confidences */
  MexdVar *z;                   /* [1, W] the insight */
} MexdMoeHead;

gboolean mexd_moe_init(MexdMoe *moe, const MexdParamSource *src, int experts, int width,
                       GError **error);
void mexd_moe_clear(MexdMoe *moe);
/* probs [R, E, 2] for P [R, W]. */
MexdVar *mexd_moe_gates(MexdMoe *moe, MexdTape *t, MexdVar *P, GError **error);
/* The blocks, centroids, confidences and Z for the routed blocks blk[E] of P; `gated`: rows and
 * centroids weighted by the gates (paper mode); `rows`: also the blocks' rows (adapter #2's input). */
gboolean mexd_moe_head(MexdMoe *moe, MexdTape *t, MexdVar *P, MexdVar *probs,
                       const MexdMoeBlock *blk, gboolean gated, gboolean rows, MexdMoeHead *out,
                       GError **error);
void mexd_moe_head_clear(MexdMoeHead *out);

/* The noise schedule: β_t linear from beta_start to beta_end over t = 0..T−1 (beta_start alone
 * when T = 1), α_t = 1 − β_t, ᾱ_t = Π α (double); either array may be NULL. */
void mexd_diffc_schedule(int T, double beta_start, double beta_end, double *alpha, double *abar);

G_END_DECLS
