/* dnnl.h: oneDNN (libdnnl) on the cpu backend — issue 17.
 *
 * oneDNN runs the parts of the cpu backend where its JIT kernels beat im2col + OpenBLAS: the
 * ResNet trunk of a backbone as one chain of primitives (lib/nn/backbone-dnnl.c) and bf16
 * compute (AVX512-BF16 / AMX) for precision=bf16.  One engine and one stream per process, made
 * on first use (thread-safe); a build without oneDNN (-Donednn=disabled) keeps the plain-C /
 * OpenBLAS kernels, and every function here then says so with MEXD_ERROR_UNSUPPORTED.
 *
 * Layouts: activations stay in the layout oneDNN picks (dnnl_format_tag_any: nChw16c or nhwc
 * for f32, depending on the ISA) from the first primitive to the last; weights are reordered
 * into the primitive's own layout once, when the primitive is made. */
#pragma once

#include "core/tensor.h"
#include "ops/ops.h"

G_BEGIN_DECLS

/* TRUE when this build has oneDNN and its engine opens. */
gboolean mexd_dnnl_available(void);
/* TRUE when oneDNN computes bf16 on this CPU (AVX512-BF16 or AMX); else FALSE with an error that
 * says what is missing (no oneDNN in this build, or the CPU's ISA). */
gboolean mexd_dnnl_check_bf16(GError **error);
/* The ISA oneDNN dispatches to ("avx512_core_amx", …) for logs and bench output. */
const char *mexd_dnnl_isa_name(void);

/* One convolution through oneDNN from and to plain NCHW f32 tensors on the cpu backend, with the
 * folded-batch-norm bias, and the post-ops the ResNet trunk fuses: y = relu?(conv(x) + bias +
 * residual?), `residual` (shape of y) as oneDNN's sum post-op.  `bf16` computes with bf16
 * weights and activations (f32 accumulation).  Reorders in and out every call: for tests and
 * one-off use (the trunk keeps its activations in oneDNN's layout). */
gboolean mexd_dnnl_conv2d(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *bias,
                          const MexdConv2dParams *p, gboolean relu, MexdTensor *residual,
                          gboolean bf16, GError **error);

#ifdef MEXD_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

/* The process's engine and stream (NULL with the error set when oneDNN cannot open one). */
dnnl_engine_t mexd_dnnl_engine(GError **error);
dnnl_stream_t mexd_dnnl_stream(GError **error);
/* FALSE with `what` and oneDNN's status in the error unless st is dnnl_success. */
gboolean mexd_dnnl_ok(dnnl_status_t st, const char *what, GError **error);

/* A convolution's shape and fused post-ops. */
typedef struct {
  int64_t N, C, H, W, O, KH, KW;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
  gboolean relu;      /* ReLU after everything */
  gboolean sum;       /* dst += before the ReLU: the residual, already in dst */
  dnnl_data_type_t dt; /* dnnl_f32 or dnnl_bf16 (bias stays f32) */
} MexdDnnlConvDesc;

/* A convolution primitive and the layouts it chose.  `src_md` is forced to `src` when given
 * (the previous primitive's output), else left to oneDNN; `dst` likewise. */
typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_desc_t src_md, wei_md, dst_md, bias_md;
  size_t scratch; /* bytes of user scratchpad */
} MexdDnnlConv;

/* TRUE when some outputs see nothing but padding (a padding ≥ the kernel's span), where
 * oneDNN 2.6 gets a sum post-op wrong: mexd_dnnl_conv_init refuses `sum` there. */
gboolean mexd_dnnl_conv_pad_degenerate(int pad_h, int pad_w, int64_t KH, int64_t KW, int dil_h,
                                       int dil_w);
gboolean mexd_dnnl_conv_init(MexdDnnlConv *c, const MexdDnnlConvDesc *d,
                             const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                             GError **error);
void mexd_dnnl_conv_clear(MexdDnnlConv *c);
/* Plain f32 weights [O, C/groups, KH, KW] → a new memory in c's weight layout (and dtype). */
dnnl_memory_t mexd_dnnl_conv_weights(const MexdDnnlConv *c, const MexdDnnlConvDesc *d,
                                     const float *w, GError **error);
/* One reorder from (src_md, src) to (dst_md, dst) at once. */
gboolean mexd_dnnl_reorder_now(const dnnl_memory_desc_t *src_md, void *src,
                               const dnnl_memory_desc_t *dst_md, void *dst, GError **error);
/* A reorder primitive from src_md to dst_md (for plans that run it often). */
dnnl_primitive_t mexd_dnnl_reorder_new(const dnnl_memory_desc_t *src_md,
                                       const dnnl_memory_desc_t *dst_md, GError **error);
/* A memory descriptor of plain dims in `tag`. */
dnnl_memory_desc_t mexd_dnnl_md(int ndims, const int64_t *dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag);
#endif

G_END_DECLS
