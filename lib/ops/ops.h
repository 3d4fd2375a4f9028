/* ops.h: the op library.  Each op is one C entry point with a cpu kernel and a shader
 * (lib/ops/<op>.c, shaders/<op>.comp).
 *
 * Conventions for every op:
 * - the output comes first, then the inputs; all tensors belong to one backend; the op runs on it
 *   (cpu: at once; vulkan: recorded, run at the next sync or read);
 * - float tensors of one call share one dtype, f32 or f16 (arithmetic and accumulation are f32 in
 *   both); index tensors are i32;
 * - shapes are checked up front: a NULL tensor, a wrong shape or dtype, a tensor of another
 *   backend, or a bad parameter gives a GError naming the op and the argument, and nothing runs;
 * - the output may not overlap an input unless the op says so (the elementwise ops and
 *   layernorm/softmax allow y == x exactly). */
#pragma once

#include "core/tensor.h"

G_BEGIN_DECLS

/* ---- gemm ---- */
typedef struct {
  gboolean trans_a; /* A is stored [K,M] (per batch) */
  gboolean trans_b; /* B is stored [N,K] (per batch) — the layout of a PyTorch Linear weight */
  float alpha;
  float beta;
} MexdGemmParams;
#define MEXD_GEMM_PARAMS_DEFAULT ((MexdGemmParams){FALSE, FALSE, 1.0f, 0.0f})

/* C = alpha·op(A)·op(B) + beta·C + bias, per batch.  C is [M,N] or [batch,M,N]; A and B are 2-D
 * (shared by every batch) or 3-D with the same batch; bias is NULL or [N], added to every row.
 * With beta = 0, C's old contents are ignored (NaN included). */
gboolean mexd_gemm(MexdTensor *c, MexdTensor *a, MexdTensor *b, MexdTensor *bias,
                   const MexdGemmParams *params, GError **error);

/* ---- vision (lib/ops/vision.c) ---- */
/* y [N,C,OH,OW] = max over k×k windows of x [N,C,H,W] with stride s and padding p (PyTorch's
 * MaxPool2d: OH = (H + 2p − k)/s + 1, padding never wins, NaN propagates). */
gboolean mexd_maxpool2d(MexdTensor *y, MexdTensor *x, int k, int stride, int pad, GError **error);
/* B tiles of h×w 8-bit RGB (row-major, 3 bytes a pixel, tile after tile) → y [B,3,OH,OW]:
 * bytes / 255, antialiased bilinear resize to OH×OW (torchvision's tensor resize with
 * antialias=True), then (v − mean[c]) / std[c].  `pixels` is an i32 tensor of ⌈B·h·w·3/4⌉ words
 * holding the bytes in memory order (mexd_image_pixels_new makes one). */
gboolean mexd_image_prep(MexdTensor *y, MexdTensor *pixels, int64_t h, int64_t w,
                         const float mean[3], const float std_[3], GError **error);
/* Resizes 8-bit interleaved pixels (w x h, `channels` per pixel) to ow x oh with the filter of
 * mexd_image_prep (antialiased bilinear, PyTorch's taps), on the host. */
void mexd_image_resize_u8(const uint8_t *src, int w, int h, int channels, uint8_t *dst, int ow,
                          int oh);
MexdTensor *mexd_image_pixels_new(MexdBackend *be, const uint8_t *rgb, int64_t n_bytes,
                                  GError **error);

/* ---- conv2d ---- */
typedef struct {
  int stride_h, stride_w;
  int pad_h, pad_w; /* zero padding on both sides */
  int dil_h, dil_w;
  int groups; /* C_in and C_out divisible by it; groups = C_in = C_out: depthwise */
} MexdConv2dParams;
#define MEXD_CONV2D_PARAMS_DEFAULT ((MexdConv2dParams){1, 1, 0, 0, 1, 1, 1})

/* NCHW cross-correlation as PyTorch's Conv2d: x [N,C,H,W], w [O,C/groups,KH,KW], bias [O] or NULL,
 * y [N,O,OH,OW] with OH = (H + 2·pad_h − dil_h·(KH−1) − 1)/stride_h + 1 (likewise OW). */
gboolean mexd_conv2d(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *bias,
                     const MexdConv2dParams *params, GError **error);

/* ---- normalisation ---- */
/* Over the last dimension: y = (x − mean)/sqrt(var + eps)·gamma + beta (biased variance, as
 * PyTorch).  gamma and beta are [D] or NULL (1 and 0).  y may be x. */
gboolean mexd_layernorm(MexdTensor *y, MexdTensor *x, MexdTensor *gamma, MexdTensor *beta,
                        float eps, GError **error);
/* Softmax over the last dimension (max-subtracted, f32 sums).  y may be x. */
gboolean mexd_softmax_rows(MexdTensor *y, MexdTensor *x, GError **error);

/* ---- elementwise ---- */
typedef enum {
  MEXD_UNARY_RELU,
  MEXD_UNARY_GELU,      /* exact (erf) form, PyTorch's default */
  MEXD_UNARY_SOFTPLUS,  /* log(1 + e^x), x for x > 20 as PyTorch */
  MEXD_UNARY_SCALE,     /* a·x + b */
  MEXD_UNARY_SCALE_EYE, /* a·x + b·I over the last two dims, which must be equal */
  MEXD_UNARY_TANH,
  MEXD_UNARY_SIGMOID, /* 1/(1 + e^−x) */
} MexdUnaryOp;
/* y = f(x), same shape; y may be x.  `a` and `b` are used by MEXD_UNARY_SCALE(_EYE) only. */
gboolean mexd_unary(MexdTensor *y, MexdTensor *x, MexdUnaryOp op, float a, float b, GError **error);
gboolean mexd_relu(MexdTensor *y, MexdTensor *x, GError **error);
gboolean mexd_gelu(MexdTensor *y, MexdTensor *x, GError **error);
gboolean mexd_softplus(MexdTensor *y, MexdTensor *x, GError **error);
gboolean mexd_tanh(MexdTensor *y, MexdTensor *x, GError **error);
gboolean mexd_sigmoid(MexdTensor *y, MexdTensor *x, GError **error);
gboolean mexd_scale(MexdTensor *y, MexdTensor *x, float a, float b, GError **error);
/* y = a·x + b·I for x [..., m, m] (a batch of square matrices; the Nyström pseudo-inverse's
 * Newton–Schulz steps 7I − XZ, 15I − …, 13I − …).  y may be x. */
gboolean mexd_scale_eye(MexdTensor *y, MexdTensor *x, float a, float b, GError **error);

/* y = a0·x0 + a1·x1 + a2·x2 + beta·y, elementwise, summed left to right in f32.  Each x_k may be
 * NULL (no term) and otherwise has a shape that is a suffix of y's (it repeats: ρ [C] against
 * f [S,C]); x_k may be y itself.  With beta = 0, y's old contents are ignored (NaN included). */
gboolean mexd_lincomb(MexdTensor *y, float a0, MexdTensor *x0, float a1, MexdTensor *x1, float a2,
                      MexdTensor *x2, float beta, GError **error);

typedef enum {
  MEXD_BINARY_ADD,
  MEXD_BINARY_SUB,
  MEXD_BINARY_MUL,
  MEXD_BINARY_DIV,
} MexdBinaryOp;
/* y = a ∘ b with NumPy broadcasting (shapes aligned at the last dimension; a dimension of 1
 * stretches); y has the broadcast shape.  y may be a or b when it has that one's shape. */
gboolean mexd_binary(MexdTensor *y, MexdTensor *a, MexdTensor *b, MexdBinaryOp op, GError **error);
gboolean mexd_add(MexdTensor *y, MexdTensor *a, MexdTensor *b, GError **error);
gboolean mexd_mul(MexdTensor *y, MexdTensor *a, MexdTensor *b, GError **error);

/* ---- reductions ---- */
/* y[j] = mean over rows i of x[i,j]; x is [M,N] (leading dims count as rows), y is [N]. */
gboolean mexd_mean_rows(MexdTensor *y, MexdTensor *x, GError **error);
/* Means of consecutive groups of `seg_len` rows (Nyström landmarks): x [M,N], y
 * [ceil(M/seg_len),N]; y[s] = mean of rows s·seg_len … min((s+1)·seg_len, M)−1 (a last, shorter
 * group is averaged over the rows it has). */
gboolean mexd_segment_mean(MexdTensor *y, MexdTensor *x, int64_t seg_len, GError **error);

/* y [1] = the largest sum of absolute values along a line of x [..., R, C], over all lines of
 * all leading (batch) dims: axis −1 sums along rows (max row sum), −2 along columns (max column
 * sum).  NaN anywhere gives NaN.  (The Nyström pseudo-inverse's initial scale.) */
gboolean mexd_abs_sum_max(MexdTensor *y, MexdTensor *x, int axis, GError **error);

/* ---- routing ---- */
/* The Dyn-MoE keep sets.  probs [R,E,2]: per routed row i and router r the softmax (p0, p1).
 * gate [E,R] = p1; masked [E,R] = p1 where p1 > p0 (kept; a tie is not kept) and −inf elsewhere,
 * so mexd_topk over a row of masked ranks exactly the kept rows; counts i32 [E] = kept rows per
 * router. */
gboolean mexd_route_keep(MexdTensor *gate, MexdTensor *masked, MexdTensor *counts,
                         MexdTensor *probs, GError **error);

/* ---- indexing ---- */
/* y[i,:] = x[idx[i],:]: x [M,N], idx i32 [K], y [K,N].  An index outside [0,M) is an error: found
 * at once on cpu, at the next sync on vulkan (that row of y is then zero). */
gboolean mexd_gather_rows(MexdTensor *y, MexdTensor *x, MexdTensor *idx, GError **error);
/* The k largest values of x [n] in descending order, ties to the lower index; NaN ranks below
 * everything.  indices i32 [k] (required), values [k] of x's dtype or NULL; 1 ≤ k ≤ n. */
gboolean mexd_topk(MexdTensor *values, MexdTensor *indices, MexdTensor *x, GError **error);

/* ---- layout ---- */
/* Concatenates xs[0..n) along `axis` (negative counts from the end); every other dimension equal.
 */
gboolean mexd_concat(MexdTensor *y, MexdTensor *const *xs, int n, int axis, GError **error);
/* y = x with dimensions permuted: y.shape[i] = x.shape[perm[i]]; perm has x->ndim entries. */
gboolean mexd_permute(MexdTensor *y, MexdTensor *x, const int *perm, GError **error);
/* Swaps the last two dimensions (a batched matrix transpose). */
gboolean mexd_transpose(MexdTensor *y, MexdTensor *x, GError **error);
/* y = x (same shape and dtype). */
gboolean mexd_copy(MexdTensor *y, MexdTensor *x, GError **error);

G_END_DECLS
