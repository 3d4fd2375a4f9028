/* autograd.h: reverse-mode automatic differentiation over the op library (a tape).
 *
 * A MexdVar is a tensor (its value) that may take part in a gradient: a leaf (a parameter, with
 * requires_grad, or data, without), or the output of an op recorded on a MexdTape.  Each
 * mexd_ag_* function runs its forward op at once (on the value tensors' backend, like any op) and,
 * when a tape is given and some input requires a gradient, records a node whose backward the tape
 * runs in reverse order in mexd_tape_backward().  With tape = NULL nothing is recorded: the same
 * model code then is a plain forward pass (evaluation), at the cost of the forward ops alone.
 *
 * Gradients.  mexd_var_grad() gives a Var's gradient after backward (NULL when no gradient
 * reached it).  Gradients are f32 tensors on the value's backend, created as zeros the first
 * time something flows into them; every backward op adds to them (accumulate = TRUE), so a Var
 * used several times sums its contributions.  A view (mexd_ag_rows, mexd_ag_reshape) has no node:
 * its gradient is the same view of its parent's gradient, so what flows into the view lands in
 * the parent directly.
 *
 * Memory.  The tape holds every recorded node's inputs and outputs until backward, which drops
 * each node once it has run (intermediates and their gradients are freed on the way back);
 * mexd_tape_free() drops what is left.  Leaves keep their gradients until mexd_var_zero_grad().
 *
 * Rules.  The training code never writes into a Var's value after using it (no in-place ops):
 * backward reads the forward inputs.  All Vars of a tape are on one backend, f32.  The ops check
 * their arguments as the forward ops do (ops.h) and fail with a GError, recording nothing.
 *
 * Randomness (dropout) comes from the tape's seed and a per-tape counter of dropout calls, so the
 * same model code under the same seed draws the same masks on every backend. */
#pragma once

#include "ops/grad.h"
#include "ops/ops.h"

#include <glib.h>

G_BEGIN_DECLS

typedef struct _MexdVar MexdVar;
typedef struct _MexdTape MexdTape;

/* ---- Vars ---- */

/* A leaf holding a new reference to `value`. */
MexdVar *mexd_var_new(MexdTensor *value, gboolean requires_grad);
/* A leaf that takes over `value` (the caller's reference). */
MexdVar *mexd_var_take(MexdTensor *value, gboolean requires_grad);
MexdVar *mexd_var_ref(MexdVar *v);
void mexd_var_unref(MexdVar *v);
MexdTensor *mexd_var_value(const MexdVar *v); /* borrowed */
/* The gradient (borrowed), or NULL when none flowed into it (for a view: a view of its parent's,
 * held by the Var). */
MexdTensor *mexd_var_grad(MexdVar *v);
gboolean mexd_var_requires_grad(const MexdVar *v);
/* Sets a leaf's flag (freezing a parameter); the ops read it when they record. */
void mexd_var_set_requires_grad(MexdVar *v, gboolean requires_grad);
/* Drops the gradient (of a leaf, between steps). */
void mexd_var_zero_grad(MexdVar *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdVar, mexd_var_unref)

/* ---- the tape ---- */

/* A tape on `be`.  `training`: dropout is active (else it is the identity); `seed` keys its
 * masks. */
MexdTape *mexd_tape_new(MexdBackend *be, gboolean training, uint64_t seed);
void mexd_tape_free(MexdTape *tape);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdTape, mexd_tape_free)
gboolean mexd_tape_training(const MexdTape *tape); /* FALSE for NULL */
/* Runs the backward of every recorded node, newest first, from d loss = 1 (loss a one-element
 * Var).  The tape is spent afterwards (its nodes are dropped); free it. */
gboolean mexd_tape_backward(MexdTape *tape, MexdVar *loss, GError **error);
/* Number of nodes recorded (tests). */
guint mexd_tape_n_nodes(const MexdTape *tape);

/* ---- ops (each returns a new Var, or NULL with the error set) ---- */

/* y [M,out] = x [M,in] · wᵀ + b, w [out,in], b [out] or NULL. */
MexdVar *mexd_ag_linear(MexdTape *t, MexdVar *x, MexdVar *w, MexdVar *b, GError **error);
/* c = alpha·op(a)·op(b): both 2-D, or both 3-D with the same batch (mexd_gemm). */
MexdVar *mexd_ag_matmul(MexdTape *t, MexdVar *a, MexdVar *b, gboolean trans_a, gboolean trans_b,
                        float alpha, GError **error);
/* relu, gelu, softplus, tanh, sigmoid (mexd_unary). */
MexdVar *mexd_ag_unary(MexdTape *t, MexdVar *x, MexdUnaryOp op, GError **error);
/* a·x + b; with `eye`, a·x + b·I over the last two (square) dims (mexd_scale_eye). */
MexdVar *mexd_ag_scale(MexdTape *t, MexdVar *x, float a, float b, gboolean eye, GError **error);
/* a ∘ b with broadcasting where b's shape, aligned at the last dimension, is a's shape with some
 * dims set to 1 (or b has a's shape).  The backward sums the broadcast dims back. */
MexdVar *mexd_ag_binary(MexdTape *t, MexdVar *a, MexdVar *b, MexdBinaryOp op, GError **error);
MexdVar *mexd_ag_add(MexdTape *t, MexdVar *a, MexdVar *b, GError **error);
MexdVar *mexd_ag_mul(MexdTape *t, MexdVar *a, MexdVar *b, GError **error);
/* Layernorm over the last dim; gamma/beta [D] or NULL. */
MexdVar *mexd_ag_layernorm(MexdTape *t, MexdVar *x, MexdVar *gamma, MexdVar *beta, float eps,
                           GError **error);
MexdVar *mexd_ag_softmax(MexdTape *t, MexdVar *x, GError **error);
/* Views (no copy, no node). */
MexdVar *mexd_ag_rows(MexdTape *t, MexdVar *x, int64_t row0, int64_t n, GError **error);
MexdVar *mexd_ag_reshape(MexdTape *t, MexdVar *x, int ndim, const int64_t *shape, GError **error);
MexdVar *mexd_ag_permute(MexdTape *t, MexdVar *x, const int *perm, GError **error);
MexdVar *mexd_ag_transpose(MexdTape *t, MexdVar *x, GError **error);
/* Parts may be NULL-free Vars of which some require no gradient (constants). */
MexdVar *mexd_ag_concat(MexdTape *t, MexdVar *const *parts, int n, int axis, GError **error);
/* y[i] = x[idx[i]] (idx an i32 tensor, data). */
MexdVar *mexd_ag_gather_rows(MexdTape *t, MexdVar *x, MexdTensor *idx, GError **error);
/* Means of groups of seg_len rows (mexd_segment_mean). */
MexdVar *mexd_ag_segment_mean(MexdTape *t, MexdVar *x, int64_t seg_len, GError **error);
/* y [N] = Σ over rows of x [M,N] (leading dims count as rows). */
MexdVar *mexd_ag_sum_rows(MexdTape *t, MexdVar *x, GError **error);
/* y [N] = mean over rows. */
MexdVar *mexd_ag_mean_rows(MexdTape *t, MexdVar *x, GError **error);
/* Depthwise conv2d (groups = channels, stride 1, dilation 1); b may be NULL. */
MexdVar *mexd_ag_conv2d_depthwise(MexdTape *t, MexdVar *x, MexdVar *w, MexdVar *b, int pad_h,
                                  int pad_w, GError **error);
/* y [1] = max line sum of |x| (mexd_abs_sum_max). */
MexdVar *mexd_ag_abs_sum_max(MexdTape *t, MexdVar *x, int axis, GError **error);
/* Dropout with probability p on a training tape (identity otherwise, or with p = 0: x itself,
 * a new reference). */
MexdVar *mexd_ag_dropout(MexdTape *t, MexdVar *x, float p, GError **error);
/* loss [1] = mean cross-entropy of logits [R,C] against labels (i32 [R], data). */
MexdVar *mexd_ag_cross_entropy(MexdTape *t, MexdVar *logits, MexdTensor *labels, GError **error);
/* loss [1] = mean of (y − target)² (target data). */
MexdVar *mexd_ag_mse(MexdTape *t, MexdVar *y, MexdTensor *target, GError **error);

/* ---- attention (Nyström's pieces; autograd.c) ---- */

/* a + b, given up a (the caller's reference passes to the result): when nothing is recorded and
 * nobody else holds a, the sum is made in a's value (no new tensor) — the caller must not read
 * a's value afterwards. */
MexdVar *mexd_ag_add_consume(MexdTape *t, MexdVar *a, MexdVar *b, GError **error);
/* f(x), given up x, likewise (in x's value when nothing records it and nobody else holds it). */
MexdVar *mexd_ag_unary_consume(MexdTape *t, MexdVar *x, MexdUnaryOp op, GError **error);
/* y [B,M,D] = softmax(scale·a·bᵀ)·c for a [B,M,K], b [B,N,K], c [B,N,D], the softmax over N.
 * With w [B,1,M] (data), *wp gets a new [B,1,N] = w·softmax(scale·a·bᵀ) (no gradient).  On the
 * cpu backend, when nothing is recorded, large scores are made a piece of rows at a time and are
 * never whole (autograd.c: "Pieces"); otherwise (and on a tape, whose backward needs them) they
 * are one tensor. */
MexdVar *mexd_ag_attend(MexdTape *t, MexdVar *a, MexdVar *b, MexdVar *c, float scale,
                        MexdTensor *w, MexdTensor **wp, GError **error);
/* The size of a piece of scores (floats) for mexd_ag_attend; ≤ 0: the default.  For the tests:
 * not thread-safe. */
void mexd_ag_set_attend_piece(int64_t floats);
/* Nyström's q, k, v with the heads split: x [N,W] · w [3W,W]ᵀ below np − N zero rows, as
 * [3·H, np, W/H] (part j = q, k, v; head h within it).  One part at a time: the [np, 3W]
 * projection is never whole.  (Decision, issue 17: at N = 100,000 the scratch is a third,
 * 196 MB instead of 589 MB per layer.) */
MexdVar *mexd_ag_qkv_heads(MexdTape *t, MexdVar *x, MexdVar *w, int64_t np, int64_t H,
                           GError **error);

G_END_DECLS
