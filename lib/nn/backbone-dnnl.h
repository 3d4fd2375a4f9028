/* backbone-dnnl.h: the ResNet trunk of a backbone as one oneDNN plan (issue 17), private to
 * lib/nn/backbone.c.  Built only with oneDNN (MEXD_HAVE_DNNL). */
#pragma once

#include "nn/nn.h"

G_BEGIN_DECLS

/* One convolution's folded weights (host f32, [cout, cin, k, k]) and bias [cout]. */
typedef struct {
  const float *w, *b;
  int cin, cout, k, stride, pad;
} MexdDnnlConvW;

/* The trunk: stem, then per bottleneck 4 convolutions (c1, c2, c3, down; down.w NULL when the
 * block has no downsample); layer_blocks[3] blocks per layer.  The weights stay the caller's and
 * must outlive the trunk. */
typedef struct _MexdResnetDnnl MexdResnetDnnl;

MexdResnetDnnl *mexd_resnet_dnnl_new(const MexdDnnlConvW *stem, const MexdDnnlConvW *blocks,
                                     int n_blocks, const int layer_blocks[3], int input_size,
                                     gboolean bf16, GError **error);
void mexd_resnet_dnnl_free(MexdResnetDnnl *r);
/* x [B, 3, input_size, input_size] f32 NCHW → out [B, C] f32 (the pooled features).  "stem"
 * (after the max-pool) and "layer1".."layer3" go to `trace` as NCHW f32 tensors on `be`. */
gboolean mexd_resnet_dnnl_forward(MexdResnetDnnl *r, const float *x, int64_t B, float *out,
                                  MexdTrace *trace, MexdBackend *be, GError **error);

/* A linear layer y [M, N] = x [M, K] · wᵀ + b (w [N, K], PyTorch's layout; b [N] or NULL),
 * optionally followed by the exact GELU, through oneDNN's matmul: in bf16 (x rounded to bf16,
 * bf16 weights, f32 accumulation and output) or f32.  The primitive and the weights in its
 * layout are made for the first M (and again when M changes); the f32 weights stay the
 * caller's and must outlive the layer. */
typedef struct _MexdDnnlLinear MexdDnnlLinear;

MexdDnnlLinear *mexd_dnnl_linear_new(const float *w, const float *b, int64_t N, int64_t K,
                                     gboolean gelu, gboolean bf16, GError **error);
void mexd_dnnl_linear_free(MexdDnnlLinear *l);
gboolean mexd_dnnl_linear_run(MexdDnnlLinear *l, const float *x, int64_t M, float *y,
                              GError **error);

/* Batched products for the attention: c[i] = scale · a[i] · b[i] (b[i]ᵀ when trans_b) for i <
 * batch, a [M, K], b [K, N] ([N, K] when trans_b), c [M, N], all f32 and contiguous; computed
 * as mexd_dnnl_linear does (bf16 inputs, f32 accumulation, when bf16).  The primitive is kept
 * for the last shape. */
typedef struct _MexdDnnlBmm MexdDnnlBmm;

MexdDnnlBmm *mexd_dnnl_bmm_new(gboolean trans_b, gboolean bf16);
void mexd_dnnl_bmm_free(MexdDnnlBmm *m);
gboolean mexd_dnnl_bmm_run(MexdDnnlBmm *m, const float *a, const float *b, float *c,
                           int64_t batch, int64_t M, int64_t K, int64_t N, float scale,
                           GError **error);

G_END_DECLS
