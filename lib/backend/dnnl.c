/* dnnl.c: the oneDNN engine, stream and helpers (dnnl.h).
 *
 * Decisions:
 * - One CPU engine and one in-order stream for the process, made on first use under g_once.
 *   oneDNN's primitives may run from several threads at once; the plans that use them (a
 *   backbone's) own their buffers and are used by one thread at a time, as a backbone is.
 * - Every primitive takes its scratchpad from the caller (dnnl_scratchpad_mode_user): a plan
 *   shares one scratchpad among all its primitives instead of oneDNN keeping one per primitive.
 * - The fused ReLU has a slope of 1e-20 below zero instead of 0: oneDNN's ReLU with slope 0 is
 *   max(x, 0), which turns NaN into 0, so a backbone whose activations overflow (inf − inf)
 *   would give finite, meaningless features; with a slope it is x > 0 ? x : slope·x, which
 *   keeps NaN as PyTorch's ReLU does, and the features' finiteness check (backbone.c) sees it
 *   (tests/tools-trust.sh).  Why 1e-20: a negative input's contribution downstream is 1e-20 of
 *   what it was, far below f32 rounding; and it stays a normal number (a slope of 1e-45 made
 *   nearly every negative activation a denormal, and the next convolutions ran 80× slower on
 *   denormal operands).
 * - bf16 needs AVX512-BF16 (or AMX): oneDNN would otherwise emulate it (slower than f32) or
 *   refuse; we refuse with a message instead. */
#include "backend/dnnl.h"

#include "backend/backend.h"

#include "core/error.h"

#include <string.h>

#ifdef MEXD_HAVE_DNNL

#define MEXD_DNNL_RELU_SLOPE 1e-20f

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static dnnl_status_t g_open_status;

static gpointer open_engine(gpointer data)
{
  (void)data;
  g_open_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
  if (g_open_status == dnnl_success)
    g_open_status = dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags);
  return NULL;
}

static gboolean open_once(GError **error)
{
  static GOnce once = G_ONCE_INIT;
  g_once(&once, open_engine, NULL);
  return mexd_dnnl_ok(g_open_status, "opening oneDNN's cpu engine", error);
}

dnnl_engine_t mexd_dnnl_engine(GError **error)
{
  return open_once(error) ? g_engine : NULL;
}

dnnl_stream_t mexd_dnnl_stream(GError **error)
{
  return open_once(error) ? g_stream : NULL;
}

static const char *status_name(dnnl_status_t st)
{
  switch (st) {
  case dnnl_success: return "success";
  case dnnl_out_of_memory: return "out of memory";
  case dnnl_invalid_arguments: return "invalid arguments";
  case dnnl_unimplemented: return "no implementation for these shapes/types";
  case dnnl_iterator_ends: return "iterator ends";
  case dnnl_runtime_error: return "runtime error";
  case dnnl_not_required: return "not required";
  default: return "unknown status";
  }
}

gboolean mexd_dnnl_ok(dnnl_status_t st, const char *what, GError **error)
{
  if (st == dnnl_success)
    return TRUE;
  return mexd_fail(error, st == dnnl_out_of_memory ? MEXD_ERROR_NO_MEMORY : MEXD_ERROR_BACKEND,
                   "oneDNN: %s: %s (status %d)", what, status_name(st), (int)st);
}

gboolean mexd_dnnl_available(void)
{
  return open_once(NULL);
}

const char *mexd_dnnl_isa_name(void)
{
  switch (dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "other";
  }
}

gboolean mexd_dnnl_check_bf16(GError **error)
{
  if (!open_once(error))
    return FALSE;
  /* the ISAs are ordered by bits: bf16 and AMX include avx512_core_bf16's bits */
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) !=
      (unsigned)dnnl_cpu_isa_avx512_core_bf16)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "bf16 needs a CPU with AVX512-BF16 or AMX; this one runs oneDNN's %s "
                     "kernels: use fp32",
                     mexd_dnnl_isa_name());
  return TRUE;
}

dnnl_memory_desc_t mexd_dnnl_md(int ndims, const int64_t *dims, dnnl_data_type_t dt,
                                dnnl_format_tag_t tag)
{
  dnnl_memory_desc_t md;
  dnnl_dims_t d;
  for (int i = 0; i < ndims; i++)
    d[i] = dims[i];
  /* only fails for bad ndims or tags, which callers do not pass */
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&md, ndims, d, dt, tag);
  g_assert(st == dnnl_success);
  return md;
}

gboolean mexd_dnnl_conv_pad_degenerate(int pad_h, int pad_w, int64_t KH, int64_t KW, int dil_h,
                                       int dil_w)
{
  return pad_h >= dil_h * (KH - 1) + 1 || pad_w >= dil_w * (KW - 1) + 1;
}

gboolean mexd_dnnl_conv_init(MexdDnnlConv *c, const MexdDnnlConvDesc *d,
                             const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                             GError **error)
{
  memset(c, 0, sizeof *c);
  if (d->sum && mexd_dnnl_conv_pad_degenerate(d->pad_h, d->pad_w, d->KH, d->KW, d->dil_h, d->dil_w))
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "oneDNN: a fused residual on a convolution whose padding (%dx%d) reaches a "
                     "whole kernel (%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ")",
                     d->pad_h, d->pad_w, d->KH, d->KW);
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  if (!eng)
    return FALSE;
  const int64_t OH = (d->H + 2 * d->pad_h - (d->dil_h * (d->KH - 1) + 1)) / d->stride_h + 1;
  const int64_t OW = (d->W + 2 * d->pad_w - (d->dil_w * (d->KW - 1) + 1)) / d->stride_w + 1;
  dnnl_memory_desc_t smd = src ? *src
                               : mexd_dnnl_md(4, (int64_t[]){d->N, d->C, d->H, d->W}, d->dt,
                                              dnnl_format_tag_any);
  dnnl_memory_desc_t dmd =
      dst ? *dst : mexd_dnnl_md(4, (int64_t[]){d->N, d->O, OH, OW}, d->dt, dnnl_format_tag_any);
  dnnl_memory_desc_t wmd =
      d->groups > 1 ? mexd_dnnl_md(5,
                                   (int64_t[]){d->groups, d->O / d->groups, d->C / d->groups,
                                               d->KH, d->KW},
                                   d->dt, dnnl_format_tag_any)
                    : mexd_dnnl_md(4, (int64_t[]){d->O, d->C, d->KH, d->KW}, d->dt,
                                   dnnl_format_tag_any);
  dnnl_memory_desc_t bmd = mexd_dnnl_md(1, (int64_t[]){d->O}, dnnl_f32, dnnl_x);
  dnnl_convolution_desc_t cd;
  dnnl_dims_t strides = {d->stride_h, d->stride_w}, pl = {d->pad_h, d->pad_w};
  dnnl_dims_t dil = {d->dil_h - 1, d->dil_w - 1};
  /* padding on the right as PyTorch's: whatever the last window needs, at most pad */
  dnnl_dims_t pr = {(OH - 1) * d->stride_h + d->dil_h * (d->KH - 1) + 1 - d->H - d->pad_h,
                    (OW - 1) * d->stride_w + d->dil_w * (d->KW - 1) + 1 - d->W - d->pad_w};
  if (!mexd_dnnl_ok(dnnl_dilated_convolution_forward_desc_init(
                        &cd, dnnl_forward_inference, dnnl_convolution_direct, &smd, &wmd, &bmd,
                        &dmd, strides, dil, pl, pr),
                    "a convolution's descriptor", error))
    return FALSE;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  gboolean ok = mexd_dnnl_ok(dnnl_primitive_attr_create(&attr), "attributes", error) &&
                mexd_dnnl_ok(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                             "scratchpad mode", error) &&
                mexd_dnnl_ok(dnnl_post_ops_create(&po), "post-ops", error) &&
                (!d->sum || mexd_dnnl_ok(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op", error)) &&
                (!d->relu || mexd_dnnl_ok(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu,
                                                                       MEXD_DNNL_RELU_SLOPE, 0.0f),
                                          "ReLU post-op", error)) &&
                mexd_dnnl_ok(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops", error) &&
                mexd_dnnl_ok(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL),
                             "a convolution for these shapes", error);
  if (ok) {
    c->src_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    c->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    c->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    c->bias_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    c->scratch = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    ok = mexd_dnnl_ok(dnnl_primitive_create(&c->prim, pd), "creating a convolution", error);
  }
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (po)
    dnnl_post_ops_destroy(po);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  return ok;
}

void mexd_dnnl_conv_clear(MexdDnnlConv *c)
{
  if (c->prim)
    dnnl_primitive_destroy(c->prim);
  c->prim = NULL;
}

dnnl_primitive_t mexd_dnnl_reorder_new(const dnnl_memory_desc_t *src_md,
                                       const dnnl_memory_desc_t *dst_md, GError **error)
{
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  if (!eng)
    return NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t r = NULL;
  if (mexd_dnnl_ok(dnnl_reorder_primitive_desc_create(&pd, src_md, eng, dst_md, eng, NULL),
                   "a reorder between these layouts", error))
    mexd_dnnl_ok(dnnl_primitive_create(&r, pd), "creating a reorder", error);
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  return r;
}

gboolean mexd_dnnl_reorder_now(const dnnl_memory_desc_t *src_md, void *src,
                               const dnnl_memory_desc_t *dst_md, void *dst, GError **error)
{
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  dnnl_stream_t s = eng ? mexd_dnnl_stream(error) : NULL;
  if (!s)
    return FALSE;
  dnnl_primitive_t r = mexd_dnnl_reorder_new(src_md, dst_md, error);
  if (!r)
    return FALSE;
  dnnl_memory_t ms = NULL, md = NULL;
  gboolean ok = mexd_dnnl_ok(dnnl_memory_create(&ms, src_md, eng, src), "memory", error) &&
                mexd_dnnl_ok(dnnl_memory_create(&md, dst_md, eng, dst), "memory", error);
  if (ok) {
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    ok = mexd_dnnl_ok(dnnl_primitive_execute(r, s, 2, args), "a reorder", error) &&
         mexd_dnnl_ok(dnnl_stream_wait(s), "a reorder", error);
  }
  if (ms)
    dnnl_memory_destroy(ms);
  if (md)
    dnnl_memory_destroy(md);
  dnnl_primitive_destroy(r);
  return ok;
}

dnnl_memory_t mexd_dnnl_conv_weights(const MexdDnnlConv *c, const MexdDnnlConvDesc *d,
                                     const float *w, GError **error)
{
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  if (!eng)
    return NULL;
  dnnl_memory_desc_t user =
      d->groups > 1 ? mexd_dnnl_md(5,
                                   (int64_t[]){d->groups, d->O / d->groups, d->C / d->groups,
                                               d->KH, d->KW},
                                   dnnl_f32, dnnl_goihw)
                    : mexd_dnnl_md(4, (int64_t[]){d->O, d->C, d->KH, d->KW}, dnnl_f32, dnnl_oihw);
  dnnl_memory_t m = NULL;
  if (!mexd_dnnl_ok(dnnl_memory_create(&m, &c->wei_md, eng, DNNL_MEMORY_ALLOCATE),
                    "weights memory", error))
    return NULL;
  void *h = NULL;
  dnnl_memory_get_data_handle(m, &h);
  if (!mexd_dnnl_reorder_now(&user, (void *)w, &c->wei_md, h, error)) {
    dnnl_memory_destroy(m);
    return NULL;
  }
  return m;
}

gboolean mexd_dnnl_conv2d(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *bias,
                          const MexdConv2dParams *p, gboolean relu, MexdTensor *residual,
                          gboolean bf16, GError **error)
{
  if (mexd_backend_kind(y->backend) != MEXD_BACKEND_CPU || y->dtype != MEXD_DTYPE_F32 ||
      x->dtype != MEXD_DTYPE_F32 || w->dtype != MEXD_DTYPE_F32 ||
      (bias && bias->dtype != MEXD_DTYPE_F32) || (residual && residual->dtype != MEXD_DTYPE_F32))
    return mexd_fail(error, MEXD_ERROR_BACKEND,
                     "mexd_dnnl_conv2d: f32 tensors on the cpu backend only");
  if (bf16 && !mexd_dnnl_check_bf16(error))
    return FALSE;
  /* oneDNN 2.6's brgconv gets the sum post-op wrong on output rows/columns that lie wholly in
   * the padding (padding ≥ the kernel's span; found by tests/ops/op-conv2d.c): there the
   * residual and the ReLU are applied here after the convolution instead.  The ResNet trunk
   * (padding k/2) never has such rows; mexd_dnnl_conv_init refuses them. */
  if (residual && mexd_dnnl_conv_pad_degenerate(p->pad_h, p->pad_w, w->shape[2], w->shape[3],
                                                p->dil_h, p->dil_w)) {
    if (!mexd_dnnl_conv2d(y, x, w, bias, p, FALSE, NULL, bf16, error))
      return FALSE;
    float *Y = mexd_tensor_host_data(y);
    const float *R = mexd_tensor_host_data(residual);
    for (int64_t i = 0, n = mexd_tensor_numel(y); i < n; i++) {
      float v = Y[i] + R[i];
      Y[i] = relu && v < 0 ? 0.0f : v;
    }
    return TRUE;
  }
  MexdDnnlConvDesc d = {
      .N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
      .O = w->shape[0], .KH = w->shape[2], .KW = w->shape[3],
      .stride_h = p->stride_h, .stride_w = p->stride_w, .pad_h = p->pad_h, .pad_w = p->pad_w,
      .dil_h = p->dil_h, .dil_w = p->dil_w, .groups = p->groups,
      .relu = relu, .sum = residual != NULL, .dt = bf16 ? dnnl_bf16 : dnnl_f32,
  };
  MexdDnnlConv c;
  if (!mexd_dnnl_conv_init(&c, &d, NULL, NULL, error))
    return FALSE;
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  dnnl_stream_t s = mexd_dnnl_stream(error);
  dnnl_memory_desc_t xu = mexd_dnnl_md(4, x->shape, dnnl_f32, dnnl_nchw);
  dnnl_memory_desc_t yu = mexd_dnnl_md(4, y->shape, dnnl_f32, dnnl_nchw);
  g_autofree float *zeros = bias ? NULL : g_new0(float, d.O);
  void *xs = g_malloc(MAX(dnnl_memory_desc_get_size(&c.src_md), 1));
  void *ys = g_malloc(MAX(dnnl_memory_desc_get_size(&c.dst_md), 1));
  void *sp = g_malloc(MAX(c.scratch, 1));
  dnnl_memory_t wm = mexd_dnnl_conv_weights(&c, &d, mexd_tensor_host_data(w), error);
  dnnl_memory_t ms = NULL, mb = NULL, md = NULL, msp = NULL;
  dnnl_memory_desc_t spmd = mexd_dnnl_md(1, (int64_t[]){(int64_t)MAX(c.scratch, 1)}, dnnl_u8, dnnl_x);
  gboolean ok =
      wm && mexd_dnnl_reorder_now(&xu, mexd_tensor_host_data(x), &c.src_md, xs, error) &&
      (!residual || mexd_dnnl_reorder_now(&yu, mexd_tensor_host_data(residual), &c.dst_md, ys,
                                          error)) &&
      mexd_dnnl_ok(dnnl_memory_create(&ms, &c.src_md, eng, xs), "memory", error) &&
      mexd_dnnl_ok(dnnl_memory_create(&md, &c.dst_md, eng, ys), "memory", error) &&
      mexd_dnnl_ok(dnnl_memory_create(&mb, &c.bias_md, eng,
                                      bias ? mexd_tensor_host_data(bias) : zeros),
                   "memory", error) &&
      mexd_dnnl_ok(dnnl_memory_create(&msp, &spmd, eng, sp), "memory", error);
  if (ok) {
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, ms},  {DNNL_ARG_WEIGHTS, wm},
                              {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md},
                              {DNNL_ARG_SCRATCHPAD, msp}};
    ok = mexd_dnnl_ok(dnnl_primitive_execute(c.prim, s, G_N_ELEMENTS(args), args),
                      "a convolution", error) &&
         mexd_dnnl_ok(dnnl_stream_wait(s), "a convolution", error) &&
         mexd_dnnl_reorder_now(&c.dst_md, ys, &yu, mexd_tensor_host_data(y), error);
  }
  dnnl_memory_t mems[] = {ms, mb, md, msp, wm};
  for (size_t i = 0; i < G_N_ELEMENTS(mems); i++)
    if (mems[i])
      dnnl_memory_destroy(mems[i]);
  g_free(xs);
  g_free(ys);
  g_free(sp);
  mexd_dnnl_conv_clear(&c);
  return ok;
}

#else /* no oneDNN in this build */

gboolean mexd_dnnl_available(void)
{
  return FALSE;
}

const char *mexd_dnnl_isa_name(void)
{
  return "none";
}

gboolean mexd_dnnl_check_bf16(GError **error)
{
  return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                   "bf16 on the cpu needs oneDNN, which this build does not have (meson "
                   "-Donednn=enabled with libdnnl-dev installed): use fp32");
}

gboolean mexd_dnnl_conv2d(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *bias,
                          const MexdConv2dParams *p, gboolean relu, MexdTensor *residual,
                          gboolean bf16, GError **error)
{
  return mexd_fail(error, MEXD_ERROR_UNSUPPORTED, "this build has no oneDNN");
}

#endif
