/* grad.h: the backward ops — the primitives a training tape (lib/nn/autograd.h) is built from.
 * Each lives beside its forward: unary.c, softmax.c, layernorm.c, conv2d.c (the depthwise
 * backward), gather.c (scatter_add_rows), concat.c (slice), reduce.c (sum_rows) and route.c
 * (abs_sum_max); the losses in loss.c, dropout in dropout.c; the shaders are
 * shaders/<op>_bwd.comp and friends.  Not installed: ops.h is the public API.
 *
 * The conventions of ops.h hold (output first, one backend, f32 or f16 with f32 arithmetic, checks
 * up front).  In addition:
 * - `accumulate`: FALSE writes the result (the output's old contents are ignored, NaN included);
 *   TRUE adds it to what the output holds (beta = 1), so contributions from several uses of a
 *   tensor sum without a temporary.  Parameter gradients that are reductions over rows (dgamma,
 *   dbeta of layernorm, dw and db of the depthwise conv) always accumulate: zero them once per
 *   step.
 * - backward ops recompute what they need from the forward inputs (a row's mean and variance, a
 *   softmax, a dropout mask) instead of taking saved statistics: the tape keeps only tensors that
 *   exist anyway.
 * - the cpu kernels accumulate in double and are the reference; the shaders accumulate in f32 and
 *   never use float atomics, so every result is deterministic (the same bits run to run).
 * - errors found on the device (a bad index or label on vulkan) are reported by the next
 *   mexd_backend_sync() or read, as for mexd_gather_rows.
 * - outputs may not overlap inputs, except where an op says so.
 *
 * How the files above build them:
 * - every op has a cpu kernel (the reference: f16 tensors widened to f32 on the way in,
 *   arithmetic and every sum in double, one rounding on the way out) and a vulkan dispatch of its
 *   shader (f32 arithmetic and sums, no float atomics, so the same bits run to run).
 * - `accumulate` FALSE never reads the output (old NaN contents do not leak); TRUE reads it once
 *   and adds (cpu: in double, then one rounding).
 * - Reductions whose length is data-dependent are cut so that no shader invocation loops more
 *   than a few thousand times: lavapipe silently ends every loop of an invocation after 65,535
 *   iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS; lib/ops/gemm.c).  Row reductions over one row
 *   per workgroup (softmax, layernorm, cross-entropy) loop D/256 times, fine for any row the
 *   models have; sums over many rows go through chunks and a second pass (sum_rows, dgamma/dbeta,
 *   conv dw/db, mse); scatter_add's index scan is split into dispatches of 16,384 indices on CPU
 *   devices (a f32 scratch carries the running sums between them).  Two passes are one
 *   workgroup over a data-dependent count — cross-entropy's mean over rows, abs_sum_max_bwd's
 *   maximum over lines — and refuse on CPU devices, with MEXD_ERROR_UNSUPPORTED, the sizes
 *   (~3.8 million rows or lines) where lavapipe would cut their loops short and give a wrong
 *   result (MEXD_OP_CPU_DEVICE_MAX_LOOP, ops-private.h).
 * - Scratch tensors (partial sums, statistics) are f32 on the op's backend, dropped at once: the
 *   vulkan backend keeps bound tensors alive until the recorded work has run.
 * - A bad index or label: cpu fails at once and writes nothing; vulkan records, the shader sets
 *   MEXD_VK_STATUS_INDEX_RANGE and the next sync fails with MEXD_ERROR_INDEX (gather.c). */
#pragma once

#include "core/tensor.h"
#include "ops/ops.h"

G_BEGIN_DECLS

/* dx = f'(x) ⊙ dy for the forward y = f(x) of mexd_unary: RELU (1 where x > 0, else 0), GELU
 * (Φ(x) + x·φ(x), the exact form), SOFTPLUS (sigmoid(x); 1 for x > 20, PyTorch's threshold), TANH
 * (1 − tanh²x), SIGMOID (σ(x)(1 − σ(x))).  SCALE and SCALE_EYE are linear: use mexd_lincomb (they
 * are refused here).  x is the forward *input* (tanh and sigmoid are recomputed from it).
 * Specials: RELU gives exactly 0 where x ≤ 0 or x is NaN, whatever dy holds there (not 0·dy);
 * at x = ±inf every f' is its limit (GELU 1 and 0: x·φ(x) is taken as 0 once φ(x) underflows);
 * a NaN x gives NaN for the others.  dx may be dy. */
gboolean mexd_unary_backward(MexdTensor *dx, MexdTensor *dy, MexdTensor *x, MexdUnaryOp op,
                             gboolean accumulate, GError **error);

/* Softmax over the last dimension, backward: dx = y ⊙ (dy − Σ_row dy ⊙ y), y the forward output.
 * dx may be dy (not y). */
gboolean mexd_softmax_rows_backward(MexdTensor *dx, MexdTensor *y, MexdTensor *dy,
                                    gboolean accumulate, GError **error);

/* Layernorm over the last dimension (mexd_layernorm), backward, from the forward input x:
 * with x̂ = (x − mean)·rstd and g = dy ⊙ gamma (gamma NULL: 1),
 *   dx = rstd·(g − mean_row(g) − x̂·mean_row(g ⊙ x̂))    (written, or added with accumulate);
 *   dgamma += Σ_rows dy ⊙ x̂,  dbeta += Σ_rows dy        (always added; NULL: not wanted).
 * dx may be NULL (only the parameter gradients wanted; all three NULL is an error); gamma is
 * needed for dx only.  No output may overlap an input or another output. */
gboolean mexd_layernorm_backward(MexdTensor *dx, MexdTensor *dgamma, MexdTensor *dbeta,
                                 MexdTensor *dy, MexdTensor *x, MexdTensor *gamma, float eps,
                                 gboolean accumulate, GError **error);

/* y [N] = Σ over rows of x [M,N] (leading dims count as rows; N its last dimension): the gradient
 * of a bias, or of any operand broadcast over rows. */
gboolean mexd_sum_rows(MexdTensor *y, MexdTensor *x, gboolean accumulate, GError **error);

/* The backward of mexd_gather_rows: y [M,N] (+)= Σ over i with idx[i] = m of x[i,:], for x [K,N]
 * and idx i32 [K]; repeated indices add up.  Without accumulate, rows no index names are zero.
 * vulkan: each destination row scans the index list (no float atomics, so sums are deterministic
 * and taken in index order, as on cpu); cost O(M·K·⌈N/256⌉) index tests (cheap: one per thread,
 * a shared counter skips tiles without a match) plus O(K·N) reads — fine for the model's sizes
 * (M, K ≤ ~100,000), quadratic beyond.  A bad index is an error at once on cpu (nothing is
 * written), at the next sync on vulkan (that contribution is dropped), as for mexd_gather_rows. */
gboolean mexd_scatter_add_rows(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean accumulate,
                               GError **error);

/* y = the slice [start, start + y.shape[axis]) of x along `axis` (negative counts from the end);
 * every other dimension equal.  The backward of mexd_concat, one input at a time. */
gboolean mexd_slice(MexdTensor *y, MexdTensor *x, int axis, int64_t start, gboolean accumulate,
                    GError **error);

/* ---- losses (reduction: mean, as PyTorch's default) ---- */
/* loss [1] = mean over rows r of −log softmax(logits[r])[labels[r]] for logits [R,C] and labels
 * i32 [R] in [0,C) (a bad label: an error at once on cpu, nothing written; at the next sync on
 * vulkan, and that row's loss is NaN).  Logits of −inf (masked classes) are allowed; a row of
 * all −inf, or whose label's logit is −inf, gives NaN / inf as PyTorch does.  On a CPU Vulkan
 * device (lavapipe) R is at most 60,000 times the row workgroup (64 for C ≤ 1024: ~3.8 million
 * rows; MEXD_ERROR_UNSUPPORTED beyond): one workgroup takes the mean. */
gboolean mexd_cross_entropy(MexdTensor *loss, MexdTensor *logits, MexdTensor *labels,
                            GError **error);
/* dlogits [R,C] = dloss·(softmax(logits) − onehot(labels))/R, dloss a [1] tensor (the upstream
 * gradient of the loss; NULL: 1).  Bad labels as for mexd_cross_entropy (vulkan: that row gets
 * no one-hot term). */
gboolean mexd_cross_entropy_backward(MexdTensor *dlogits, MexdTensor *logits, MexdTensor *labels,
                                     MexdTensor *dloss, gboolean accumulate, GError **error);
/* loss [1] = mean over all elements of (y − target)², y and target of one shape. */
gboolean mexd_mse(MexdTensor *loss, MexdTensor *y, MexdTensor *target, GError **error);
/* dy = dloss·2(y − target)/n (no gradient for the target: it is data). */
gboolean mexd_mse_backward(MexdTensor *dy, MexdTensor *y, MexdTensor *target, MexdTensor *dloss,
                           gboolean accumulate, GError **error);

/* ---- dropout ---- */
/* y = x ⊙ keep / (1 − p) (added to y with accumulate), keep drawn from Philox4x32-10
 * (lib/nn/philox.h) so that cpu and vulkan masks are identical: key = (seed & 0xffffffff,
 * seed >> 32), element i uses the counter (i / 4, stream & 0xffffffff, stream >> 32,
 * MEXD_DROPOUT_TAG) and its output word w = out[i % 4]; the element is kept when
 * (w >> 8) ≥ round(p·2^24).  p in [0,1] (1: all zero); 1/(1 − p) is rounded to f32 once.
 * A dropped element is exactly 0, also where x is inf or NaN (PyTorch's x·0 would give NaN):
 * it is the derivative of the mask, and keeps a dropped non-finite gradient from spreading.
 * The backward is the same call on dy with the same seed and stream (the mask is recomputed).
 * y may be x. */
#define MEXD_DROPOUT_TAG 0x64726f70u /* "drop" */
gboolean mexd_dropout(MexdTensor *y, MexdTensor *x, float p, uint64_t seed, uint64_t stream,
                      gboolean accumulate, GError **error);
/* Whether element i is kept (the mask of mexd_dropout, on the host; tests). */
gboolean mexd_dropout_keep(float p, uint64_t seed, uint64_t stream, uint64_t i);

/* ---- depthwise conv2d ---- */
/* The backward of mexd_conv2d for a depthwise convolution only: groups = C_in = C_out = C (one
 * input channel per group, w [C,1,KH,KW]), stride 1, dilation 1, any zero padding (p NULL: the
 * defaults, so only C = 1).  Anything else the forward takes is refused with
 * MEXD_ERROR_UNSUPPORTED.  x [N,C,H,W], dy [N,C,OH,OW] with OH = H + 2·pad_h − KH + 1 (likewise
 * OW).  (The uses: PPEG, x [1,512,S,S] with 7×7, 5×5 and 3×3 kernels and "same" padding; the
 * Nyström residual conv, x [1,H,n,dh] with w [H,1,33,1], pad 16×0.)
 *   dx[n,c,i,j] = Σ_{u,v} dy[n,c, i−u+pad_h, j−v+pad_w]·w[c,0,u,v]   (dy zero outside), written
 * or added with accumulate.  dx must not overlap dy or w. */
gboolean mexd_conv2d_backward_input(MexdTensor *dx, MexdTensor *dy, MexdTensor *w,
                                    const MexdConv2dParams *p, gboolean accumulate,
                                    GError **error);
/*   dw[c,0,u,v] += Σ_{n,i,j} dy[n,c,i,j]·x[n,c, i+u−pad_h, j+v−pad_w]   (x zero outside),
 *   db[c] += Σ_{n,i,j} dy[n,c,i,j]   (db NULL: not wanted).
 * Always added (a parameter gradient, like layernorm's dgamma).  vulkan: a workgroup per
 * (weight, chunk of output positions) reduces through shared memory, then the chunks are added
 * in order (no float atomics).  dw and db must not overlap dy, x or each other. */
gboolean mexd_conv2d_backward_weight(MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                                     MexdTensor *x, const MexdConv2dParams *p, GError **error);

/* ---- abs_sum_max ---- */
/* The backward of y = mexd_abs_sum_max(x, axis) (the largest Σ|x| along a line of x [..., R, C];
 * axis −1: rows, −2: columns) for dy [1]:
 *   dx = dy·sign(x)/n on the n lines whose sum equals the maximum, 0 elsewhere
 * (written, or added with accumulate): exact ties share the gradient evenly, as PyTorch's full
 * torch.max reduction does in backward.  sign(0) = 0 and sign(NaN) = NaN; when x holds a NaN the
 * maximum is NaN and the lines whose sum is NaN are the ones that attain it.  The line sums are
 * recomputed as the forward takes them on the same backend (cpu: double; vulkan: f32 in element
 * order, the same bits as the forward shader for lines of up to 4,096 elements), so near-ties
 * resolve as the forward's maximum did.  dx must not overlap x or dy.  On a CPU Vulkan device
 * (lavapipe) the lines are at most ~3.8 million (fewer for lines over 4,096 elements;
 * MEXD_ERROR_UNSUPPORTED beyond): one workgroup takes the maximum. */
gboolean mexd_abs_sum_max_backward(MexdTensor *dx, MexdTensor *x, MexdTensor *dy, int axis,
                                   gboolean accumulate, GError **error);

G_END_DECLS
