/* conv2d.c: NCHW 2-D cross-correlation with stride, zero padding, dilation and groups, as
 * PyTorch's Conv2d (ops.h).
 *
 * cpu: f16 tensors are widened to f32 first.  When the build found a CBLAS and a group has at
 * least 16 output channels and a depth C/groups·KH·KW of at least 16: im2col in chunks of output
 * pixels and sgemm.  Otherwise (or with MEXD_CPU_NO_BLAS=1, which the tests use to check it)
 * a direct convolution, one output plane at a time: for every (input channel, kh, kw) the weight
 * is a scalar and the output columns it reaches are a contiguous range, so the inner loop is a
 * strided axpy along an input row; output planes are spread over the thread pool
 * (lib/core/parallel.h), each plane computed whole by one thread.
 * vulkan: shaders/conv2d.comp on a 1-D grid of workgroups (mexd_vk_grid): an implicit GEMM per
 * group (im2col gathered into shared memory tile by tile) when a group has at least 16 output
 * channels and a depth C/groups·KH·KW of at least 16; otherwise (depthwise, thin convolutions)
 * a direct convolution, one invocation per output element.
 *
 * The backward (grad.h) of the depthwise convolution only (groups = C, stride 1, dilation 1):
 * mexd_conv2d_backward_input and mexd_conv2d_backward_weight.  cpu in double, each tap's range of
 * rows and columns from tap_range; vulkan: shaders/conv2d_dw_bwd.comp — dx one invocation per
 * element, dw/db as partial sums over chunks of output positions, then the chunks in order. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>
#ifdef MEXD_HAVE_CBLAS
#include <cblas.h>
#endif

/* conv2d_dw_bwd weight sums: positions per chunk at least (a multiple of 256), chunks at most */
#define CONV_MIN_CHUNK  4096
#define CONV_MAX_CHUNKS 1024
/* conv2d_dw_bwd input gradient: taps per invocation at most on a CPU device (as conv2d_vulkan) */
#define CONV_CPU_DEVICE_MAX_TAPS 16384

typedef struct {
  int64_t N, C, H, W; /* x */
  int64_t O, KH, KW;  /* w is [O, C/groups, KH, KW] */
  int64_t OH, OW;     /* y is [N, O, OH, OW] */
  int64_t cpg, opg;   /* input / output channels per group */
  MexdConv2dParams p;
} ConvGeom;

/* The first output index `o` in [0, n_out) whose input index o·stride − pad + off is ≥ 0, and one
 * past the last whose input index is < n_in: the outputs a kernel tap (at offset `off`) reaches. */
static void tap_range(int64_t n_out, int64_t n_in, int64_t stride, int64_t pad, int64_t off,
                      int64_t *lo, int64_t *hi)
{
  int64_t s = off - pad; /* input index of output 0 */
  int64_t a = s >= 0 ? 0 : (-s + stride - 1) / stride;
  int64_t b = n_in - s <= 0 ? 0 : (n_in - s + stride - 1) / stride; /* o·stride + s < n_in */
  *lo = MIN(a, n_out);
  *hi = MAX(MIN(b, n_out), *lo);
}

static gboolean use_blas(const ConvGeom *g)
{
#ifdef MEXD_HAVE_CBLAS
  const char *v = g_getenv("MEXD_CPU_NO_BLAS");
  if (v && *v && strcmp(v, "0") != 0)
    return FALSE;
  /* as the shader's implicit GEMM: worth it when a group has some width and depth */
  int64_t K = g->cpg * g->KH * g->KW;
  return g->opg >= 16 && K >= 16 && g->opg <= G_MAXINT && K <= G_MAXINT &&
         g->OH * g->OW <= G_MAXINT; /* cblas takes int sizes */
#else
  (void)g;
  return FALSE;
#endif
}

#ifdef MEXD_HAVE_CBLAS
/* im2col + sgemm: per image and group, the columns of output pixels [p0, p1) of the im2col
 * matrix cols[K, p1 − p0] (K = cpg·KH·KW; taps in the padding are 0), then
 * Y[o0 .. o0+opg, p0 .. p1) += W_g[opg, K] · cols (Y holds the bias).  Pixels go in chunks so
 * that cols stays within 16 MiB. */
static void conv2d_blas(const ConvGeom *g, const float *X, const float *Wt, float *Y)
{
  const MexdConv2dParams *p = &g->p;
  int64_t K = g->cpg * g->KH * g->KW, P = g->OH * g->OW;
  int64_t chunk = MAX(1, MIN(P, ((int64_t)4 << 20) / K));
  float *cols = g_new(float, K *chunk);
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t grp = 0; grp < p->groups; grp++) {
      const float *xg = X + (n * g->C + grp * g->cpg) * g->H * g->W;
      for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        int64_t np = MIN(chunk, P - p0);
        for (int64_t k = 0; k < K; k++) {
          int64_t ic = k / (g->KH * g->KW), r = k % (g->KH * g->KW);
          int64_t kh = r / g->KW, kw = r % g->KW;
          const float *xp = xg + ic * g->H * g->W;
          float *row = cols + k * np;
          int64_t oh = p0 / g->OW, ow = p0 % g->OW;
          for (int64_t q = 0; q < np; q++) {
            int64_t ih = oh * p->stride_h - p->pad_h + kh * p->dil_h;
            int64_t iw = ow * p->stride_w - p->pad_w + kw * p->dil_w;
            row[q] = (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) ? xp[ih * g->W + iw] : 0.0f;
            if (++ow == g->OW) {
              ow = 0;
              oh++;
            }
          }
        }
        mexd_cpu_sgemm(FALSE, FALSE, 1, g->opg, np, K, 1.0f, Wt + grp * g->opg * K, K, 0, cols,
                       np, 0, 1.0f, Y + (n * g->O + grp * g->opg) * P + p0, P, 0);
      }
    }
  g_free(cols);
}
#endif

typedef struct {
  const ConvGeom *g;
  const float *X, *Wt, *bv;
  float *Y;
  const int64_t *kw_lo, *kw_hi;
} ConvJob;

/* Direct: output planes [p0, p1) (plane = n·O + o), each its bias plus the convolution, one plane
 * per thread (the planes of PPEG's depthwise convs and of the Nyström residual are independent).
 * Row by row, every tap of an output row before the next row: the row stays in L1 (tap by tap
 * over the whole plane streamed a Nyström residual plane, 2.6 MB at 10,000 instances, 33 times
 * through the caches).  Each element still sums its taps in (ic, kh, kw) order from the bias. */
static void conv2d_direct_planes(int64_t p0, int64_t p1, void *ctx)
{
  const ConvJob *j = ctx;
  const ConvGeom *g = j->g;
  const MexdConv2dParams *p = &g->p;
  int64_t plane = g->OH * g->OW;
  for (int64_t no = p0; no < p1; no++) {
    int64_t n = no / g->O, o = no % g->O;
    float *out = j->Y + no * plane;
    float b0 = j->bv ? j->bv[o] : 0.0f;
    int64_t c0 = (o / g->opg) * g->cpg;
    for (int64_t oh = 0; oh < g->OH; oh++) {
      float *orow = out + oh * g->OW;
      for (int64_t i = 0; i < g->OW; i++)
        orow[i] = b0;
      for (int64_t ic = 0; ic < g->cpg; ic++) {
        const float *xp = j->X + (n * g->C + c0 + ic) * g->H * g->W;
        const float *wp = j->Wt + (o * g->cpg + ic) * g->KH * g->KW;
        if (g->KW == 1 && p->stride_w == 1) {
          /* a column of taps (the Nyström residual's 33×1): the valid ones in one call, in the
           * same order (5.4 million calls of 64 columns per 10,000-instance forward before) */
          int64_t kh0 = 0, kh1 = g->KH, ih0 = oh * p->stride_h - p->pad_h;
          while (kh0 < kh1 && ih0 + kh0 * p->dil_h < 0)
            kh0++;
          while (kh1 > kh0 && ih0 + (kh1 - 1) * p->dil_h >= g->H)
            kh1--;
          int64_t ow0 = j->kw_lo[0], ow1 = j->kw_hi[0];
          if (kh1 > kh0 && ow1 > ow0)
            mexd_cpu_axpy_taps(orow + ow0, xp + (ih0 + kh0 * p->dil_h) * g->W + ow0 - p->pad_w,
                               p->dil_h * g->W, wp + kh0, kh1 - kh0, ow1 - ow0);
          continue;
        }
        for (int64_t kh = 0; kh < g->KH; kh++) {
          int64_t ih = oh * p->stride_h - p->pad_h + kh * p->dil_h;
          if (ih < 0 || ih >= g->H)
            continue; /* zero padding: the tap reaches no input row */
          const float *xrow = xp + ih * g->W;
          for (int64_t kw = 0; kw < g->KW; kw++) {
            float wv = wp[kh * g->KW + kw];
            int64_t ow0 = j->kw_lo[kw], ow1 = j->kw_hi[kw];
            int64_t iw0 = kw * p->dil_w - p->pad_w; /* input column of output column 0 */
            if (p->stride_w == 1)
              mexd_cpu_axpy(orow + ow0, xrow + ow0 + iw0, wv, ow1 - ow0);
            else
              for (int64_t ow = ow0; ow < ow1; ow++)
                orow[ow] += wv * xrow[ow * p->stride_w + iw0];
          }
        }
      }
    }
  }
}

/* Direct: Y = bias + the convolution, planes spread over the pool. */
static void conv2d_direct(const ConvGeom *g, const float *X, const float *Wt, const float *bv,
                          float *Y)
{
  const MexdConv2dParams *p = &g->p;
  /* the output columns each kw tap reaches, the same for every row and channel */
  int64_t *kw_lo = g_new(int64_t, g->KW), *kw_hi = g_new(int64_t, g->KW);
  for (int64_t kw = 0; kw < g->KW; kw++)
    tap_range(g->OW, g->W, p->stride_w, p->pad_w, kw * p->dil_w, &kw_lo[kw], &kw_hi[kw]);
  ConvJob j = {.g = g, .X = X, .Wt = Wt, .bv = bv, .Y = Y, .kw_lo = kw_lo, .kw_hi = kw_hi};
  int64_t work = g->OH * g->OW * g->cpg * g->KH * g->KW; /* multiply-adds per plane */
  mexd_parallel_for(g->N * g->O, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS * 4 / MAX(work, 1)),
                    conv2d_direct_planes, &j);
  g_free(kw_lo);
  g_free(kw_hi);
}

static void conv2d_cpu(const ConvGeom *g, MexdTensor *y, MexdTensor *x, MexdTensor *w,
                       MexdTensor *bias)
{
  gboolean ox, ow_, oy, obias = FALSE;
  const float *X = mexd_cpu_f32_in(x, &ox);
  const float *Wt = mexd_cpu_f32_in(w, &ow_);
  float *Y = mexd_cpu_f32_out(y, FALSE, &oy);
  const float *bv = bias ? mexd_cpu_f32_in(bias, &obias) : NULL;
  if (use_blas(g)) {
#ifdef MEXD_HAVE_CBLAS
    int64_t plane = g->OH * g->OW;
    for (int64_t no = 0; no < g->N * g->O; no++) {
      float b0 = bv ? bv[no % g->O] : 0.0f;
      for (int64_t i = 0; i < plane; i++)
        Y[no * plane + i] = b0;
    }
    conv2d_blas(g, X, Wt, Y);
#endif
  } else {
    conv2d_direct(g, X, Wt, bv, Y);
  }
  mexd_cpu_f32_done(y, Y, oy, TRUE);
  if (ox)
    g_free((float *)X);
  if (ow_)
    g_free((float *)Wt);
  if (obias)
    g_free((float *)bv);
}

MEXD_VK_PUSH_STRUCT(ConvPush, MEXD_PUSH_CONV2D);

static gboolean conv2d_vulkan(const ConvGeom *g, MexdTensor *y, MexdTensor *x, MexdTensor *w,
                              MexdTensor *bias, GError **error)
{
  MexdBackend *be = y->backend;
  const MexdVkLimits *lim = mexd_vk_limits(be);
  int64_t K = g->cpg * g->KH * g->KW, P = g->OH * g->OW, ncols = g->N * P;
  ConvPush pc = {
      .C = (uint32_t)g->C,
      .H = (uint32_t)g->H,
      .W = (uint32_t)g->W,
      .O = (uint32_t)g->O,
      .OH = (uint32_t)g->OH,
      .OW = (uint32_t)g->OW,
      .KH = (uint32_t)g->KH,
      .KW = (uint32_t)g->KW,
      .cpg = (uint32_t)g->cpg,
      .opg = (uint32_t)g->opg,
      .stride_h = g->p.stride_h,
      .stride_w = g->p.stride_w,
      .pad_h = g->p.pad_h,
      .pad_w = g->p.pad_w,
      .dil_h = g->p.dil_h,
      .dil_w = g->p.dil_w,
      .has_bias = bias != NULL,
      .ncols = (uint32_t)ncols,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_CONV2D,
      .variant = y->dtype,
      .bind = {x, w, bias, y},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  /* lavapipe ends a shader invocation's loops silently after 65,535 iterations in all (gemm.c):
   * the depth loop of either mode (K/BK tiles of ~100 iterations, or K taps directly) must stay
   * well inside that; every backbone and MExD convolution does (at most 3·3·512 = 4,608) */
  if (!lim->is_gpu && K > 16384)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "conv2d: a depth of %" G_GINT64_FORMAT " (channels per group × kernel) is more "
                     "than %s can run correctly (16,384 at most on a CPU Vulkan device)",
                     K, mexd_backend_name(be));
  uint64_t n_groups;
  if (g->opg >= 16 && K >= 16) {
    /* implicit GEMM per group: tiles as gemm.c (128×128 with 8×8 per thread on GPUs with room,
     * else 64×64 with 4×4), 32 rows when a group has few output channels */
    uint32_t bm = 64, bn = 64, bk = 16, tm = 4, tn = 4;
    if (lim->is_gpu && g->opg >= 128 && ncols >= 128 &&
        lim->max_shared_memory >= 2 * 16 * 128 * 4) {
      bm = bn = 128;
      tm = tn = 8;
    } else if (g->opg <= 32) {
      bm = 32;
    }
    uint32_t threads = (bm / tm) * (bn / tn); /* a multiple of bn, as the shader needs */
    uint64_t mtiles = (uint64_t)(g->opg + bm - 1) / bm, ntiles = (uint64_t)(ncols + bn - 1) / bn;
    n_groups = (uint64_t)g->p.groups * mtiles * ntiles;
    if (!mexd_op_check_u32("conv2d", "workgroup tiles", (int64_t)n_groups, error))
      return FALSE;
    pc.total = (uint32_t)n_groups;
    pc.mtiles = (uint32_t)mtiles;
    pc.ntiles = (uint32_t)ntiles;
    uint32_t spec[] = {1, bm, bn, bk, tm, tn, threads};
    memcpy(d.spec, spec, sizeof spec);
  } else {
    /* direct, one invocation per output; lavapipe runs a workgroup per CPU thread: smaller
     * groups spread small outputs better */
    uint32_t wg = lim->is_gpu ? 256 : 64;
    pc.total = (uint32_t)mexd_tensor_numel(y);
    n_groups = ((uint64_t)pc.total + wg - 1) / wg;
    uint32_t spec[] = {0, 1, 1, 1, 1, 1, wg};
    memcpy(d.spec, spec, sizeof spec);
  }
  d.n_spec = 7;
  if (!mexd_vk_grid(be, n_groups, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_conv2d(MexdTensor *y, MexdTensor *x, MexdTensor *w, MexdTensor *bias,
                     const MexdConv2dParams *params, GError **error)
{
  const char *op = "conv2d";
  MexdConv2dParams p = params ? *params : MEXD_CONV2D_PARAMS_DEFAULT;
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error) ||
      !mexd_op_check_dtype(op, "w", w, be, y->dtype, error) ||
      (bias && !mexd_op_check_dtype(op, "bias", bias, be, y->dtype, error)))
    return FALSE;
  if (y->ndim != 4 || x->ndim != 4 || w->ndim != 4) {
    g_autofree char *dy = mexd_tensor_describe(y), *dx = mexd_tensor_describe(x),
                    *dw = mexd_tensor_describe(w);
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "conv2d: y, x and w must be 4-D ([N,O,OH,OW], [N,C,H,W], [O,C/groups,KH,KW]);"
                     " got y %s, x %s, w %s",
                     dy, dx, dw);
  }
  if (p.stride_h < 1 || p.stride_w < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d: stride %dx%d, expected >= 1",
                     p.stride_h, p.stride_w);
  if (p.dil_h < 1 || p.dil_w < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d: dilation %dx%d, expected >= 1",
                     p.dil_h, p.dil_w);
  if (p.pad_h < 0 || p.pad_w < 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d: padding %dx%d, expected >= 0",
                     p.pad_h, p.pad_w);
  ConvGeom g = {.p = p};
  g.N = x->shape[0];
  g.C = x->shape[1];
  g.H = x->shape[2];
  g.W = x->shape[3];
  g.O = w->shape[0];
  g.KH = w->shape[2];
  g.KW = w->shape[3];
  if (p.groups < 1 || g.C % p.groups != 0 || g.O % p.groups != 0) {
    g_autofree char *dx = mexd_tensor_describe(x), *dw = mexd_tensor_describe(w);
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "conv2d: groups %d must be >= 1 and divide the channels of x %s and w %s",
                     p.groups, dx, dw);
  }
  g.cpg = g.C / p.groups;
  g.opg = g.O / p.groups;
  if (!mexd_op_check_shape(op, "w", w, 4, (int64_t[]){-1, g.cpg, -1, -1}, error))
    return FALSE;
  /* padded extents and kernel spans in int64: no overflow for any int parameters */
  int64_t hp = g.H + 2 * (int64_t)p.pad_h, wp = g.W + 2 * (int64_t)p.pad_w;
  int64_t span_h = (int64_t)p.dil_h * (g.KH - 1) + 1, span_w = (int64_t)p.dil_w * (g.KW - 1) + 1;
  if (span_h > hp || span_w > wp) {
    g_autofree char *dx = mexd_tensor_describe(x), *dw = mexd_tensor_describe(w);
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "conv2d: the kernel of w %s (dilation %dx%d) is larger than x %s with "
                     "padding %dx%d: the output would be empty",
                     dw, p.dil_h, p.dil_w, dx, p.pad_h, p.pad_w);
  }
  g.OH = (hp - span_h) / p.stride_h + 1;
  g.OW = (wp - span_w) / p.stride_w + 1;
  if (!mexd_op_check_shape(op, "y", y, 4, (int64_t[]){g.N, g.O, g.OH, g.OW}, error))
    return FALSE;
  if (bias && !mexd_op_check_shape(op, "bias", bias, 1, (int64_t[]){g.O}, error))
    return FALSE;
  if (!mexd_op_check_no_overlap(op, "y", y, "x", x, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "w", w, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "bias", bias, error))
    return FALSE;

  if (be->kind == MEXD_BACKEND_CPU) {
    conv2d_cpu(&g, y, x, w, bias);
    return TRUE;
  }
  /* the shader indexes in uint32 and computes input rows/columns (and their bounds) in int32 */
  if (!mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error) ||
      !mexd_op_check_u32(op, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(op, "elements of w", mexd_tensor_numel(w), error))
    return FALSE;
  if (hp + p.dil_h > G_MAXINT32 || wp + p.dil_w > G_MAXINT32)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                     "conv2d: padded input %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " is too large",
                     hp, wp);
  return conv2d_vulkan(&g, y, x, w, bias, error);
}

/* ---- backward of the depthwise convolution (grad.h) ---- */

typedef struct {
  int64_t N, C, H, W, KH, KW, OH, OW;
  int64_t ph, pw;
} DwGeom;

/* The parameters the backward supports: depthwise (groups = C), stride 1, dilation 1. */
static gboolean dw_params(const char *name, const MexdConv2dParams *params, int64_t C,
                          MexdConv2dParams *p, GError **error)
{
  *p = params ? *params : MEXD_CONV2D_PARAMS_DEFAULT;
  if (p->groups < 1)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: groups is %d, expected >= 1", name,
                     p->groups);
  if (p->groups != C)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only depthwise convolutions are supported (groups = C_in = C_out = %"
                     G_GINT64_FORMAT "), not groups = %d",
                     name, C, p->groups);
  if (p->stride_h != 1 || p->stride_w != 1)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only stride 1 is supported, not %dx%d", name, p->stride_h, p->stride_w);
  if (p->dil_h != 1 || p->dil_w != 1)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: only dilation 1 is supported, not %dx%d", name, p->dil_h, p->dil_w);
  if (p->pad_h < 0 || p->pad_w < 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: padding %dx%d, expected >= 0", name,
                     p->pad_h, p->pad_w);
  return TRUE;
}

/* Fills g from x's shape [N,C,H,W] (xs), the kernel size and the padding, and checks dy. */
static gboolean dw_geom(const char *name, const int64_t *xs, int64_t KH, int64_t KW,
                        const MexdConv2dParams *p, MexdTensor *dy, DwGeom *g, GError **error)
{
  *g = (DwGeom){.N = xs[0], .C = xs[1], .H = xs[2], .W = xs[3], .KH = KH, .KW = KW,
                .ph = p->pad_h, .pw = p->pad_w};
  g->OH = g->H + 2 * g->ph - KH + 1;
  g->OW = g->W + 2 * g->pw - KW + 1;
  if (g->OH < 1 || g->OW < 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "%s: the kernel %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                     " is larger than the input %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                     " with padding %dx%d: the output would be empty",
                     name, KH, KW, g->H, g->W, p->pad_h, p->pad_w);
  if (!mexd_op_check_shape(name, "dy", dy, 4, (int64_t[]){g->N, g->C, g->OH, g->OW}, error))
    return FALSE;
  /* the shader forms rows and columns plus padding in int32 */
  if (g->H + 2 * g->ph + 1 > G_MAXINT32 || g->W + 2 * g->pw + 1 > G_MAXINT32)
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                     "%s: padded input %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " is too large",
                     name, g->H + 2 * g->ph, g->W + 2 * g->pw);
  return TRUE;
}

static gboolean dw_4d(const char *name, const char *arg, const MexdTensor *t, GError **error)
{
  if (t->ndim == 4)
    return TRUE;
  g_autofree char *dsc = mexd_tensor_describe(t);
  return mexd_fail(error, MEXD_ERROR_SHAPE, "%s: argument %s is %s, expected a 4-D tensor", name,
                   arg, dsc);
}

static void dw_input_cpu(const DwGeom *g, MexdTensor *dx, MexdTensor *dy, MexdTensor *w,
                         gboolean acc)
{
  gboolean ody, ow, odx;
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *Wt = mexd_cpu_f32_in(w, &ow);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  const int64_t plane = g->H * g->W, oplane = g->OH * g->OW;
  double *s = g_new(double, plane);
  for (int64_t nc = 0; nc < g->N * g->C; nc++) {
    const int64_t c = nc % g->C;
    const float *dyp = DY + nc * oplane;
    for (int64_t k = 0; k < plane; k++)
      s[k] = 0;
    /* each tap (u,v) scatters the dy plane into dx shifted by (u − pad_h, v − pad_w) */
    for (int64_t u = 0; u < g->KH; u++) {
      int64_t a0, a1;
      tap_range(g->OH, g->H, 1, g->ph, u, &a0, &a1);
      for (int64_t v = 0; v < g->KW; v++) {
        int64_t b0, b1;
        tap_range(g->OW, g->W, 1, g->pw, v, &b0, &b1);
        const double wv = Wt[(c * g->KH + u) * g->KW + v];
        for (int64_t a = a0; a < a1; a++) {
          const float *drow = dyp + a * g->OW;
          double *srow = s + (a + u - g->ph) * g->W;
          for (int64_t b = b0; b < b1; b++)
            srow[b + v - g->pw] += wv * drow[b];
        }
      }
    }
    float *out = DX + nc * plane;
    for (int64_t k = 0; k < plane; k++)
      out[k] = mexd_op_acc_store(out[k], s[k], acc);
  }
  g_free(s);
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  mexd_op_free_in(DY, ody);
  mexd_op_free_in(Wt, ow);
}

MEXD_VK_PUSH_STRUCT(DwPush, MEXD_PUSH_CONV2D_DW_BWD);

static DwPush dw_push(const DwGeom *g)
{
  return (DwPush){
      .N = (uint32_t)g->N,
      .C = (uint32_t)g->C,
      .H = (uint32_t)g->H,
      .W = (uint32_t)g->W,
      .OH = (uint32_t)g->OH,
      .OW = (uint32_t)g->OW,
      .KH = (uint32_t)g->KH,
      .KW = (uint32_t)g->KW,
      .pad_h = (int32_t)g->ph,
      .pad_w = (int32_t)g->pw,
  };
}

gboolean mexd_conv2d_backward_input(MexdTensor *dx, MexdTensor *dy, MexdTensor *w,
                                    const MexdConv2dParams *params, gboolean accumulate,
                                    GError **error)
{
  const char *name = "conv2d_backward_input";
  if (!mexd_op_check_float(name, "dx", dx, error))
    return FALSE;
  MexdBackend *be = dx->backend;
  if (!mexd_op_check_dtype(name, "dy", dy, be, dx->dtype, error) ||
      !mexd_op_check_dtype(name, "w", w, be, dx->dtype, error) ||
      !dw_4d(name, "dx", dx, error) || !dw_4d(name, "dy", dy, error) ||
      !dw_4d(name, "w", w, error))
    return FALSE;
  MexdConv2dParams p;
  DwGeom g;
  if (!dw_params(name, params, dx->shape[1], &p, error) ||
      !mexd_op_check_shape(name, "w", w, 4, (int64_t[]){dx->shape[1], 1, -1, -1}, error) ||
      !dw_geom(name, dx->shape, w->shape[2], w->shape[3], &p, dy, &g, error))
    return FALSE;
  if (!mexd_op_check_no_overlap(name, "dx", dx, "dy", dy, error) ||
      !mexd_op_check_no_overlap(name, "dx", dx, "w", w, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    dw_input_cpu(&g, dx, dy, w, accumulate);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of dx", mexd_tensor_numel(dx), error) ||
      !mexd_op_check_u32(name, "elements of dy", mexd_tensor_numel(dy), error) ||
      !mexd_op_check_u32(name, "elements of w", mexd_tensor_numel(w), error))
    return FALSE;
  /* each invocation loops over the taps: keep that inside lavapipe's loop limit (conv2d.c) */
  if (!mexd_vk_limits(be)->is_gpu && g.KH * g.KW > CONV_CPU_DEVICE_MAX_TAPS)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: a %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " kernel is more than %s can "
                     "run correctly (%d taps at most on a CPU Vulkan device)",
                     name, g.KH, g.KW, mexd_backend_name(be), CONV_CPU_DEVICE_MAX_TAPS);
  DwPush pc = dw_push(&g);
  pc.mode = 0;
  pc.total = (uint32_t)mexd_tensor_numel(dx);
  pc.acc = accumulate != 0;
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_CONV2D_DW_BWD,
      .variant = dx->dtype,
      .bind = {dy, w, dx},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_op_elem_grid(be, pc.total, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

static void dw_weight_cpu(const DwGeom *g, MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                          MexdTensor *x)
{
  gboolean ody, ox, odw, odb = FALSE;
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DW = mexd_cpu_f32_out(dw, TRUE, &odw);
  float *DB = db ? mexd_cpu_f32_out(db, TRUE, &odb) : NULL;
  const int64_t plane = g->H * g->W, oplane = g->OH * g->OW;
  for (int64_t c = 0; c < g->C; c++) {
    for (int64_t u = 0; u < g->KH; u++) {
      int64_t a0, a1;
      tap_range(g->OH, g->H, 1, g->ph, u, &a0, &a1);
      for (int64_t v = 0; v < g->KW; v++) {
        int64_t b0, b1;
        tap_range(g->OW, g->W, 1, g->pw, v, &b0, &b1);
        double s = 0;
        for (int64_t n = 0; n < g->N; n++) {
          const float *dyp = DY + (n * g->C + c) * oplane, *xp = X + (n * g->C + c) * plane;
          for (int64_t a = a0; a < a1; a++) {
            const float *drow = dyp + a * g->OW, *xrow = xp + (a + u - g->ph) * g->W;
            for (int64_t b = b0; b < b1; b++)
              s += (double)drow[b] * xrow[b + v - g->pw];
          }
        }
        float *o = DW + (c * g->KH + u) * g->KW + v;
        *o = mexd_op_acc_store(*o, s, TRUE);
      }
    }
    if (DB) {
      double s = 0;
      for (int64_t n = 0; n < g->N; n++) {
        const float *dyp = DY + (n * g->C + c) * oplane;
        for (int64_t k = 0; k < oplane; k++)
          s += dyp[k];
      }
      DB[c] = mexd_op_acc_store(DB[c], s, TRUE);
    }
  }
  mexd_cpu_f32_done(dw, DW, odw, TRUE);
  if (DB)
    mexd_cpu_f32_done(db, DB, odb, TRUE);
  mexd_op_free_in(DY, ody);
  mexd_op_free_in(X, ox);
}

/* vulkan: partial sums per (tap, chunk of output positions), then the chunks in order. */
static gboolean dw_weight_vulkan(const DwGeom *g, MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                                 MexdTensor *x, GError **error)
{
  const char *name = "conv2d_backward_weight";
  MexdBackend *be = dw->backend;
  const int64_t P = g->N * g->OH * g->OW;
  const int64_t taps = g->C * g->KH * g->KW + (db ? g->C : 0);
  int64_t chunk = MAX(CONV_MIN_CHUNK, (P + CONV_MAX_CHUNKS - 1) / CONV_MAX_CHUNKS);
  chunk = (chunk + 255) / 256 * 256;
  const int64_t nchunks = (P + chunk - 1) / chunk;
  if (!mexd_op_check_u32(name, "workgroups", taps * nchunks, error))
    return FALSE;
  g_autoptr(MexdTensor) part = mexd_op_scratch_new(name, be, taps * nchunks, error);
  if (!part)
    return FALSE;
  DwPush pc = dw_push(g);
  pc.mode = 1;
  pc.total = (uint32_t)(taps * nchunks);
  pc.taps = (uint32_t)taps;
  pc.chunk = (uint32_t)chunk;
  pc.nchunks = (uint32_t)nchunks;
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_CONV2D_DW_BWD,
      .variant = dw->dtype,
      .bind = {dy, x, NULL, part},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)pc.total, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  pc.mode = 2;
  pc.total = (uint32_t)taps;
  d.bind[0] = db; /* NULL binds a dummy: without db there are no bias taps to write */
  d.bind[1] = NULL;
  d.bind[2] = dw;
  return mexd_op_elem_grid(be, taps, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_conv2d_backward_weight(MexdTensor *dw, MexdTensor *db, MexdTensor *dy,
                                     MexdTensor *x, const MexdConv2dParams *params,
                                     GError **error)
{
  const char *name = "conv2d_backward_weight";
  if (!mexd_op_check_float(name, "dw", dw, error))
    return FALSE;
  MexdBackend *be = dw->backend;
  if (!mexd_op_check_dtype(name, "dy", dy, be, dw->dtype, error) ||
      !mexd_op_check_dtype(name, "x", x, be, dw->dtype, error) ||
      (db && !mexd_op_check_dtype(name, "db", db, be, dw->dtype, error)) ||
      !dw_4d(name, "dw", dw, error) || !dw_4d(name, "dy", dy, error) ||
      !dw_4d(name, "x", x, error))
    return FALSE;
  MexdConv2dParams p;
  DwGeom g;
  if (!dw_params(name, params, x->shape[1], &p, error) ||
      !mexd_op_check_shape(name, "dw", dw, 4, (int64_t[]){x->shape[1], 1, -1, -1}, error) ||
      (db && !mexd_op_check_shape(name, "db", db, 1, &x->shape[1], error)) ||
      !dw_geom(name, x->shape, dw->shape[2], dw->shape[3], &p, dy, &g, error))
    return FALSE;
  if (!mexd_op_check_no_overlap(name, "dw", dw, "dy", dy, error) ||
      !mexd_op_check_no_overlap(name, "dw", dw, "x", x, error) ||
      !mexd_op_check_no_overlap(name, "db", db, "dy", dy, error) ||
      !mexd_op_check_no_overlap(name, "db", db, "x", x, error) ||
      !mexd_op_check_no_overlap(name, "dw", dw, "db", db, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    dw_weight_cpu(&g, dw, db, dy, x);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(name, "elements of dy", mexd_tensor_numel(dy), error))
    return FALSE;
  return dw_weight_vulkan(&g, dw, db, dy, x, error);
}
