/* op-conv2d.c: conv2d against a naive double-precision reference (cpu) and against cpu (others),
 * over random and hand-picked geometries (stride, padding, dilation, groups, depthwise), plus
 * its argument checks. */
#include "harness.h"

#include "backend/dnnl.h"

#include <math.h>
#include <string.h>

typedef struct {
  int64_t N, C, H, W;
  int64_t O, KH, KW;
  MexdConv2dParams p;
  gboolean bias;
} ConvShape;

static int64_t out_size(int64_t in, int pad, int dil, int64_t k, int stride)
{
  return (in + 2 * (int64_t)pad - (int64_t)dil * (k - 1) - 1) / stride + 1;
}

static int64_t conv_oh(const ConvShape *s)
{
  return out_size(s->H, s->p.pad_h, s->p.dil_h, s->KH, s->p.stride_h);
}

static int64_t conv_ow(const ConvShape *s)
{
  return out_size(s->W, s->p.pad_w, s->p.dil_w, s->KW, s->p.stride_w);
}

static int64_t conv_macs(const ConvShape *s)
{
  return s->N * s->O * conv_oh(s) * conv_ow(s) * (s->C / s->p.groups) * s->KH * s->KW;
}

static char *conv_describe(const HarnessCase *hc, const ConvShape *s)
{
  const MexdConv2dParams *p = &s->p;
  return g_strdup_printf("conv2d %s x [%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                         ",%" G_GINT64_FORMAT "] w [%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                         ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "] stride %dx%d pad %dx%d "
                         "dil %dx%d groups %d bias %d",
                         hc->spec, s->N, s->C, s->H, s->W, s->O, s->C / p->groups, s->KH, s->KW,
                         p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->dil_h, p->dil_w,
                         p->groups, s->bias);
}

static void ref_conv(const ConvShape *s, const float *x, const float *w, const float *bias,
                     double *out)
{
  const MexdConv2dParams *p = &s->p;
  int64_t OH = conv_oh(s), OW = conv_ow(s);
  int64_t cpg = s->C / p->groups, opg = s->O / p->groups;
  for (int64_t n = 0; n < s->N; n++)
    for (int64_t o = 0; o < s->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double acc = bias ? bias[o] : 0.0;
          for (int64_t ic = 0; ic < cpg; ic++) {
            int64_t c = (o / opg) * cpg + ic;
            for (int64_t kh = 0; kh < s->KH; kh++) {
              int64_t ih = oh * p->stride_h - p->pad_h + kh * p->dil_h;
              if (ih < 0 || ih >= s->H)
                continue;
              for (int64_t kw = 0; kw < s->KW; kw++) {
                int64_t iw = ow * p->stride_w - p->pad_w + kw * p->dil_w;
                if (iw < 0 || iw >= s->W)
                  continue;
                acc += (double)x[((n * s->C + c) * s->H + ih) * s->W + iw] *
                       (double)w[((o * cpg + ic) * s->KH + kh) * s->KW + kw];
              }
            }
          }
          out[((n * s->O + o) * OH + oh) * OW + ow] = acc;
        }
}

/* Runs one conv2d on `be` and returns y as f32.  With `views`, x and y are views at an offset
 * into larger tensors (an image of other data before them); with `null_params`, the params
 * argument is NULL (s->p must then be the default). */
static float *run_conv(MexdBackend *be, MexdDType dt, const ConvShape *s, const float *x,
                       const float *w, const float *bias, gboolean views, gboolean null_params)
{
  int64_t xn = s->N * s->C * s->H * s->W;
  int64_t xsh[4] = {s->N + (views ? 1 : 0), s->C, s->H, s->W};
  int64_t wsh[4] = {s->O, s->C / s->p.groups, s->KH, s->KW};
  int64_t ysh[4] = {s->N + (views ? 1 : 0), s->O, conv_oh(s), conv_ow(s)};
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tx = NULL, ty = NULL;
  if (views) {
    int64_t img = xn / s->N;
    g_autofree float *xb = harness_random(xn + img, -1, 1, dt);
    memcpy(xb + img, x, sizeof(float) * (size_t)xn);
    g_autoptr(MexdTensor) xbig = harness_tensor(be, dt, 4, xsh, xb);
    g_autoptr(MexdTensor) ybig = mexd_tensor_new(be, dt, 4, ysh, &error);
    g_assert_no_error(error);
    tx = mexd_tensor_rows(xbig, 1, s->N, &error);
    g_assert_no_error(error);
    ty = mexd_tensor_rows(ybig, 1, s->N, &error);
    g_assert_no_error(error);
  } else {
    tx = harness_tensor(be, dt, 4, xsh, x);
    ty = mexd_tensor_new(be, dt, 4, ysh, &error);
    g_assert_no_error(error);
  }
  g_autoptr(MexdTensor) tw = harness_tensor(be, dt, 4, wsh, w);
  g_autoptr(MexdTensor) tb = NULL;
  if (bias) {
    int64_t o = s->O;
    tb = harness_tensor(be, dt, 1, &o, bias);
  }
  g_assert_true(mexd_conv2d(ty, tx, tw, tb, null_params ? NULL : &s->p, &error));
  g_assert_no_error(error);
  return harness_read(ty);
}

/* Random inputs for `s`, run on the case's backend, compared with the reference. */
static void check_conv(const HarnessCase *hc, const ConvShape *s, gboolean views,
                       gboolean null_params)
{
  int64_t xn = s->N * s->C * s->H * s->W;
  int64_t wn = s->O * (s->C / s->p.groups) * s->KH * s->KW;
  int64_t yn = s->N * s->O * conv_oh(s) * conv_ow(s);
  g_autofree float *x = harness_random(xn, -1, 1, hc->dtype);
  g_autofree float *w = harness_random(wn, -1, 1, hc->dtype);
  g_autofree float *bias = harness_random(s->O, -1, 1, hc->dtype);
  g_autofree char *what = conv_describe(hc, s);
  g_test_message("%s", what);
  float *b = s->bias ? bias : NULL;
  g_autofree float *out = run_conv(hc->be, hc->dtype, s, x, w, b, views, null_params);
  if (hc->be == hc->cpu) {
    g_autofree double *ref = g_new(double, yn);
    ref_conv(s, x, w, b, ref);
    harness_assert_close_d(what, out, ref, yn, harness_thr(hc, NMSE_F32_GEMM));
  } else {
    g_autofree float *ref = run_conv(hc->cpu, hc->dtype, s, x, w, b, FALSE, FALSE);
    harness_assert_close(what, out, ref, yn, harness_thr(hc, NMSE_F32_GEMM));
  }
}

static void random_shape(ConvShape *s, int64_t budget)
{
  static const int64_t kernels[][2] = {{1, 1}, {3, 3}, {3, 3}, {5, 5}, {7, 7},
                                       {1, 3}, {3, 1}, {2, 5}, {4, 2}};
  int k = g_test_rand_int_range(0, G_N_ELEMENTS(kernels));
  s->KH = kernels[k][0];
  s->KW = kernels[k][1];
  s->N = g_test_rand_int_range(0, 3) == 0 ? g_test_rand_int_range(2, 4) : 1;
  MexdConv2dParams *p = &s->p;
  p->stride_h = g_test_rand_int_range(1, 3);
  p->stride_w = g_test_rand_bit() ? p->stride_h : g_test_rand_int_range(1, 3);
  p->dil_h = g_test_rand_int_range(0, 3) == 0 ? 2 : 1;
  p->dil_w = g_test_rand_bit() ? p->dil_h : g_test_rand_int_range(1, 3);
  p->pad_h = g_test_rand_int_range(0, 4);
  p->pad_w = g_test_rand_bit() ? p->pad_h : g_test_rand_int_range(0, 4);
  int64_t hw_max = g_test_rand_int_range(0, 3) == 0 ? 300 : 40;
  s->H = harness_size(hw_max);
  s->W = harness_size(hw_max);
  /* a kernel wider than the padded input: pad just enough (so KH > H with padding comes up) */
  int64_t span_h = (int64_t)p->dil_h * (s->KH - 1) + 1;
  int64_t span_w = (int64_t)p->dil_w * (s->KW - 1) + 1;
  if (span_h > s->H + 2 * p->pad_h)
    p->pad_h = (int)((span_h - s->H + 1) / 2);
  if (span_w > s->W + 2 * p->pad_w)
    p->pad_w = (int)((span_w - s->W + 1) / 2);
  /* channels: groups 1, groups 2, or depthwise (groups = C, O = C or 2C) */
  int mode = g_test_rand_int_range(0, 3);
  int64_t mult = 1;
  if (mode == 0) {
    p->groups = 1;
    s->C = harness_size(16);
    s->O = harness_size(48);
  } else if (mode == 1) {
    p->groups = 2;
    s->C = 2 * g_test_rand_int_range(1, 9);
    s->O = 2 * g_test_rand_int_range(1, 25);
  } else {
    s->C = harness_size(32);
    mult = g_test_rand_int_range(1, 3);
    s->O = s->C * mult;
    p->groups = (int)s->C;
  }
  s->bias = g_test_rand_bit();
  /* keep the work (and the reference's time) bounded: shrink channels, then batch, then space */
  while (conv_macs(s) > budget) {
    if (mode != 2 && s->C > p->groups && s->C >= s->O)
      s->C = MAX(p->groups, (s->C / p->groups + 1) / 2 * p->groups);
    else if (mode != 2 && s->O > p->groups)
      s->O = MAX(p->groups, (s->O / p->groups + 1) / 2 * p->groups);
    else if (mode == 2 && s->C > 1) {
      s->C = (s->C + 1) / 2;
      s->O = s->C * mult;
      p->groups = (int)s->C;
    } else if (s->N > 1)
      s->N--;
    else {
      s->H = MAX(1, s->H / 2);
      s->W = MAX(1, s->W / 2);
      if (span_h > s->H + 2 * p->pad_h)
        p->pad_h = (int)((span_h - s->H + 1) / 2);
      if (span_w > s->W + 2 * p->pad_w)
        p->pad_w = (int)((span_w - s->W + 1) / 2);
    }
  }
}

static void test_conv2d_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 16; iter++) {
    ConvShape s = {0};
    random_shape(&s, hc->be == hc->cpu ? 1500000 : 3000000);
    check_conv(hc, &s, FALSE, FALSE);
  }
}

/* Hand-picked geometries, so every feature is covered whatever the seed. */
static void test_conv2d_cases(const HarnessCase *hc)
{
  typedef struct {
    int64_t N, C, H, W, O, KH, KW;
    MexdConv2dParams p;
    gboolean bias;
  } Case;
  static const Case cases[] = {
      /* 1×1, batch 2, bias */
      {2, 5, 9, 7, 6, 1, 1, {1, 1, 0, 0, 1, 1, 1}, TRUE},
      /* 3×3 stride 2 pad 1, no bias */
      {1, 4, 17, 16, 8, 3, 3, {2, 2, 1, 1, 1, 1, 1}, FALSE},
      /* depthwise 7×7 pad 3 (the ConvNeXt-style block) */
      {1, 16, 24, 24, 16, 7, 7, {1, 1, 3, 3, 1, 1, 16}, TRUE},
      /* depthwise 5×5 dilation 2 pad 4, batch 3 */
      {3, 8, 13, 11, 8, 5, 5, {1, 1, 4, 4, 2, 2, 8}, FALSE},
      /* depthwise 3×3 stride 2, channel multiplier 2 */
      {1, 6, 10, 9, 12, 3, 3, {2, 2, 1, 1, 1, 1, 6}, TRUE},
      /* groups 2, 3×3 dilation 2 pad 2 stride 2 */
      {2, 6, 15, 14, 4, 3, 3, {2, 2, 2, 2, 2, 2, 2}, TRUE},
      /* non-square kernel with different strides, paddings and dilations per axis */
      {1, 3, 12, 19, 5, 3, 5, {2, 1, 1, 2, 1, 2, 1}, TRUE},
      /* the kernel is larger than the input: only the padding makes room */
      {2, 3, 2, 3, 4, 5, 5, {1, 1, 2, 2, 1, 1, 1}, TRUE},
      {1, 2, 1, 1, 3, 7, 3, {1, 1, 3, 1, 1, 1, 1}, FALSE},
      /* a 1×1 kernel with padding 3 (a border of bias), and a stride larger than the kernel */
      {1, 2, 5, 6, 3, 1, 1, {1, 1, 3, 3, 1, 1, 1}, TRUE},
      {1, 3, 16, 17, 2, 2, 2, {3, 3, 0, 1, 1, 1, 1}, FALSE},
      /* an edge size */
      {1, 2, 257, 7, 2, 3, 3, {1, 2, 1, 0, 1, 1, 2}, TRUE},
      /* the vulkan implicit-GEMM path (a group has >= 16 output channels and a depth
       * C/groups·KH·KW >= 16): partial tiles in every direction, batch, padding, stride, dilation
       */
      {2, 5, 13, 11, 24, 3, 3, {1, 1, 1, 1, 1, 1, 1}, TRUE},
      {1, 7, 20, 18, 70, 3, 5, {2, 1, 2, 1, 2, 1, 1}, FALSE},
      {3, 16, 9, 9, 17, 1, 1, {1, 1, 0, 0, 1, 1, 1}, TRUE},
      {1, 3, 3, 2, 16, 7, 7, {1, 1, 3, 3, 1, 1, 1}, TRUE},     /* kernel larger than the input */
      {2, 8, 10, 12, 40, 3, 3, {1, 2, 2, 1, 2, 1, 2}, TRUE},   /* groups 2, 20 outputs each */
      {1, 130, 6, 5, 130, 1, 1, {1, 1, 0, 0, 1, 1, 1}, FALSE}, /* many channels, 129+ rows */
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    const Case *c = &cases[i];
    ConvShape s = {c->N, c->C, c->H, c->W, c->O, c->KH, c->KW, c->p, c->bias};
    check_conv(hc, &s, FALSE, FALSE);
  }
  /* NULL params are the defaults */
  ConvShape d = {2, 3, 8, 9, 4, 3, 2, MEXD_CONV2D_PARAMS_DEFAULT, TRUE};
  check_conv(hc, &d, FALSE, TRUE);
}

/* x and y as views at an offset into their storage (the shader's binding offsets). */
static void test_conv2d_views(const HarnessCase *hc)
{
  ConvShape a = {2, 3, 9, 8, 5, 3, 3, {1, 1, 1, 1, 1, 1, 1}, TRUE};
  check_conv(hc, &a, TRUE, FALSE);
  ConvShape b = {1, 7, 11, 11, 7, 7, 7, {1, 1, 3, 3, 1, 1, 7}, TRUE};
  check_conv(hc, &b, TRUE, FALSE);
  ConvShape c = {2, 4, 9, 10, 20, 3, 3, {1, 1, 1, 1, 1, 1, 1}, TRUE}; /* implicit GEMM */
  check_conv(hc, &c, TRUE, FALSE);
}

/* More than 65535 workgroups of output: the grid is spread over two dimensions. */
static void test_conv2d_large_grid(const HarnessCase *hc)
{
  ConvShape s = {1, 2, 1500, 1500, 2, 3, 3, {1, 1, 1, 1, 1, 1, 2}, TRUE};
  check_conv(hc, &s, FALSE, FALSE);
}

/* The direct cpu kernel, used where BLAS is not (or the convolution is thin), against the
 * reference on the shapes that would otherwise go through im2col + sgemm. */
static void test_conv2d_plain_c(const HarnessCase *hc)
{
  if (hc->be != hc->cpu)
    return;
  g_setenv("MEXD_CPU_NO_BLAS", "1", TRUE);
  test_conv2d_random(hc);
  test_conv2d_cases(hc);
  g_unsetenv("MEXD_CPU_NO_BLAS");
}

/* oneDNN's convolution (lib/backend/dnnl.c: the primitive the ResNet trunk chains, here from and
 * to NCHW) against the double-precision reference, with its fused post-ops y = relu?(conv(x) +
 * bias + residual?), in f32 (NMSE 1e-6) and bf16 (bf16 inputs: NMSE 1e-4; skipped on a CPU
 * without bf16).  Shapes: the ResNet trunk's (7×7/2 stem on 3 channels, 1×1, 3×3 stride 2, 1×1
 * stride-2 downsample), the hand-picked cases' (groups, depthwise, dilation, kernels larger
 * than the input), and random ones; batch > 1 among them. */
static void check_dnnl(const ConvShape *s, gboolean relu, gboolean residual, gboolean bf16)
{
  const int64_t xn = s->N * s->C * s->H * s->W;
  const int64_t wn = s->O * (s->C / s->p.groups) * s->KH * s->KW;
  const int64_t ysh[4] = {s->N, s->O, conv_oh(s), conv_ow(s)};
  const int64_t yn = ysh[0] * ysh[1] * ysh[2] * ysh[3];
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  g_assert_no_error(error);
  g_autofree float *x = harness_random(xn, -1, 1, MEXD_DTYPE_F32);
  g_autofree float *w = harness_random(wn, -1, 1, MEXD_DTYPE_F32);
  g_autofree float *bias = harness_random(s->O, -1, 1, MEXD_DTYPE_F32);
  g_autofree float *res = harness_random(yn, -2, 2, MEXD_DTYPE_F32);
  const int64_t wsh[4] = {s->O, s->C / s->p.groups, s->KH, s->KW};
  g_autoptr(MexdTensor) tx = harness_tensor(be, MEXD_DTYPE_F32, 4, (int64_t[]){s->N, s->C, s->H, s->W}, x);
  g_autoptr(MexdTensor) tw = harness_tensor(be, MEXD_DTYPE_F32, 4, wsh, w);
  g_autoptr(MexdTensor) tb = s->bias ? harness_tensor(be, MEXD_DTYPE_F32, 1, &s->O, bias) : NULL;
  g_autoptr(MexdTensor) tr = residual ? harness_tensor(be, MEXD_DTYPE_F32, 4, ysh, res) : NULL;
  g_autoptr(MexdTensor) ty = mexd_tensor_new(be, MEXD_DTYPE_F32, 4, ysh, &error);
  g_assert_no_error(error);
  g_assert_true(mexd_dnnl_conv2d(ty, tx, tw, tb, &s->p, relu, tr, bf16, &error));
  g_assert_no_error(error);
  g_autofree float *out = harness_read(ty);
  g_autofree double *ref = g_new(double, yn);
  ref_conv(s, x, w, s->bias ? bias : NULL, ref);
  for (int64_t i = 0; i < yn; i++) {
    if (residual)
      ref[i] += res[i];
    if (relu && ref[i] < 0)
      ref[i] = 0;
  }
  HarnessCase hc = {.dtype = MEXD_DTYPE_F32};
  g_autofree char *shape = conv_describe(&hc, s);
  g_autofree char *what = g_strdup_printf("oneDNN %s %s%s%s", bf16 ? "bf16" : "f32", shape,
                                          relu ? " +relu" : "", residual ? " +residual" : "");
  g_test_message("%s", what);
  harness_assert_close_d(what, out, ref, yn, bf16 ? 1e-4 : NMSE_F32_GEMM);
}

static void test_conv2d_onednn(const HarnessCase *hc)
{
  if (hc->be != hc->cpu)
    return;
  if (!mexd_dnnl_available()) {
    g_test_skip("this build has no oneDNN");
    return;
  }
  g_autoptr(GError) e16 = NULL;
  const gboolean has_bf16 = mexd_dnnl_check_bf16(&e16);
  if (!has_bf16)
    g_test_message("bf16 cases skipped: %s", e16->message);
  static const ConvShape resnet[] = {
      {2, 3, 40, 38, 16, 7, 7, {2, 2, 3, 3, 1, 1, 1}, TRUE},  /* stem */
      {2, 32, 14, 14, 16, 1, 1, {1, 1, 0, 0, 1, 1, 1}, TRUE}, /* conv1 */
      {2, 16, 14, 14, 16, 3, 3, {2, 2, 1, 1, 1, 1, 1}, TRUE}, /* conv2, stride 2 */
      {3, 16, 7, 7, 64, 1, 1, {1, 1, 0, 0, 1, 1, 1}, TRUE},   /* conv3 (+ residual) */
      {2, 32, 14, 13, 64, 1, 1, {2, 2, 0, 0, 1, 1, 1}, TRUE}, /* downsample 1×1/2 */
      {1, 20, 9, 9, 36, 3, 3, {1, 1, 1, 1, 1, 1, 1}, FALSE},  /* channels not a multiple of 16 */
  };
  static const ConvShape other[] = {
      {1, 16, 24, 24, 16, 7, 7, {1, 1, 3, 3, 1, 1, 16}, TRUE}, /* depthwise */
      {3, 8, 13, 11, 8, 5, 5, {1, 1, 4, 4, 2, 2, 8}, FALSE},   /* depthwise, dilation 2 */
      {2, 6, 15, 14, 4, 3, 3, {2, 2, 2, 2, 2, 2, 2}, TRUE},    /* groups 2 */
      {1, 3, 12, 19, 5, 3, 5, {2, 1, 1, 2, 1, 2, 1}, TRUE},    /* per-axis parameters */
      {2, 3, 2, 3, 4, 5, 5, {1, 1, 2, 2, 1, 1, 1}, TRUE},      /* kernel larger than input */
      {1, 3, 16, 17, 2, 2, 2, {3, 3, 0, 1, 1, 1, 1}, FALSE},   /* stride larger than kernel */
  };
  for (int bf = 0; bf < 2; bf++) {
    if (bf && !has_bf16)
      break;
    for (guint i = 0; i < G_N_ELEMENTS(resnet); i++)
      for (int f = 0; f < 4; f++)
        check_dnnl(&resnet[i], f & 1, (f >> 1) & 1, bf);
    for (guint i = 0; i < G_N_ELEMENTS(other); i++)
      check_dnnl(&other[i], i % 2, i % 3 == 0, bf);
    for (int iter = 0; iter < 8; iter++) {
      ConvShape s = {0};
      random_shape(&s, 500000);
      check_dnnl(&s, iter % 2, iter % 3 == 0, bf);
    }
  }
}

static void test_conv2d_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  GError *error = NULL;
  int64_t xsh[4] = {1, 4, 6, 6}, wsh[4] = {2, 4, 3, 3}, ysh[4] = {1, 2, 4, 4};
  g_autoptr(MexdTensor) x = mexd_tensor_new_zeros(be, dt, 4, xsh, NULL);
  g_autoptr(MexdTensor) w = mexd_tensor_new_zeros(be, dt, 4, wsh, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new(be, dt, 4, ysh, NULL);
  g_autoptr(MexdTensor) bias = mexd_tensor_new_zeros(be, dt, 1, (int64_t[]){2}, NULL);
  g_assert_nonnull(x);
  g_assert_nonnull(y);
  /* the valid call succeeds, so each failure below is down to the one thing changed */
  g_assert_true(mexd_conv2d(y, x, w, bias, NULL, &error));
  g_assert_no_error(error);

  g_assert_false(mexd_conv2d(NULL, x, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d y NULL");
  error = NULL;
  g_assert_false(mexd_conv2d(y, NULL, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d x NULL");
  error = NULL;
  g_assert_false(mexd_conv2d(y, x, NULL, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d w NULL");

  /* dtypes: i32, and the other float type mixed in */
  g_autoptr(MexdTensor) xi = mexd_tensor_new(be, MEXD_DTYPE_I32, 4, xsh, NULL);
  g_autoptr(MexdTensor) yi = mexd_tensor_new(be, MEXD_DTYPE_I32, 4, ysh, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(y, xi, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "conv2d i32 x");
  error = NULL;
  g_assert_false(mexd_conv2d(yi, x, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "conv2d i32 y");
  if (mexd_backend_has_f16(be)) {
    MexdDType other = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
    g_autoptr(MexdTensor) wo = mexd_tensor_new(be, other, 4, wsh, NULL);
    g_autoptr(MexdTensor) bo = mexd_tensor_new_1d(be, other, 2, NULL);
    error = NULL;
    g_assert_false(mexd_conv2d(y, x, wo, bias, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "conv2d mixed float w");
    error = NULL;
    g_assert_false(mexd_conv2d(y, x, w, bo, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_DTYPE, "conv2d mixed float bias");
  }

  /* shapes */
  g_autoptr(MexdTensor) x3 = mexd_tensor_new(be, dt, 3, xsh + 1, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(y, x3, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d 3-D x");
  int64_t ybad[4] = {1, 2, 4, 5};
  g_autoptr(MexdTensor) yb = mexd_tensor_new(be, dt, 4, ybad, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(yb, x, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d wrong y width");
  int64_t ybad2[4] = {1, 3, 4, 4};
  g_autoptr(MexdTensor) yb2 = mexd_tensor_new(be, dt, 4, ybad2, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(yb2, x, w, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d wrong y channels");
  int64_t wbad[4] = {2, 3, 3, 3};
  g_autoptr(MexdTensor) wb = mexd_tensor_new(be, dt, 4, wbad, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(y, x, wb, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d w input channels");
  g_autoptr(MexdTensor) bb = mexd_tensor_new_1d(be, dt, 3, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(y, x, w, bb, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d bias length");
  int64_t wbig[4] = {2, 4, 7, 3};
  g_autoptr(MexdTensor) wk = mexd_tensor_new(be, dt, 4, wbig, NULL);
  error = NULL;
  g_assert_false(mexd_conv2d(y, x, wk, bias, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "conv2d kernel larger than the input");

  /* parameters */
  const struct {
    MexdConv2dParams p;
    const char *what;
  } bad[] = {
      {{0, 1, 0, 0, 1, 1, 1}, "conv2d stride_h 0"},
      {{1, 0, 0, 0, 1, 1, 1}, "conv2d stride_w 0"},
      {{1, 1, -1, 0, 1, 1, 1}, "conv2d pad_h -1"},
      {{1, 1, 0, -2, 1, 1, 1}, "conv2d pad_w -2"},
      {{1, 1, 0, 0, 0, 1, 1}, "conv2d dil_h 0"},
      {{1, 1, 0, 0, 1, -1, 1}, "conv2d dil_w -1"},
      {{1, 1, 0, 0, 1, 1, 0}, "conv2d groups 0"},
      {{1, 1, 0, 0, 1, 1, -2}, "conv2d groups -2"},
      {{1, 1, 0, 0, 1, 1, 3}, "conv2d groups 3 not dividing C 4"},
      {{1, 1, 0, 0, 1, 1, 4}, "conv2d groups 4 not dividing O 2"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    error = NULL;
    g_assert_false(mexd_conv2d(y, x, w, bias, &bad[i].p, &error));
    harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, bad[i].what);
  }

  /* y overlapping an input.  3×3 with padding 1 keeps the shape, so y = x type-checks. */
  MexdConv2dParams same = {1, 1, 1, 1, 1, 1, 1};
  int64_t sq[4] = {1, 2, 5, 5}, sqw[4] = {2, 2, 3, 3}, two[4] = {2, 2, 5, 5}, flat = 100;
  g_autoptr(MexdTensor) xs = mexd_tensor_new_zeros(be, dt, 4, sq, NULL);
  g_autoptr(MexdTensor) ws = mexd_tensor_new_zeros(be, dt, 4, sqw, NULL);
  g_autoptr(MexdTensor) pair = mexd_tensor_new_zeros(be, dt, 4, two, NULL);
  g_autoptr(MexdTensor) pair1 = mexd_tensor_reshape(pair, 1, &flat, NULL);
  g_autoptr(MexdTensor) first = mexd_tensor_rows(pair, 0, 1, NULL);   /* elements 0..49 */
  g_autoptr(MexdTensor) second = mexd_tensor_rows(pair, 1, 1, NULL);  /* elements 50..99 */
  g_autoptr(MexdTensor) mid1 = mexd_tensor_rows(pair1, 25, 50, NULL); /* elements 25..74 */
  g_autoptr(MexdTensor) mid = mexd_tensor_reshape(mid1, 4, sq, NULL);
  g_autoptr(MexdTensor) w_in1 = mexd_tensor_rows(pair1, 50, 36, NULL); /* inside `second` */
  g_autoptr(MexdTensor) w_in = mexd_tensor_reshape(w_in1, 4, sqw, NULL);
  g_autoptr(MexdTensor) b_in = mexd_tensor_rows(pair1, 60, 2, NULL);
  g_assert_nonnull(mid);
  g_assert_nonnull(w_in);
  g_assert_nonnull(b_in);
  error = NULL;
  g_assert_true(mexd_conv2d(second, first, ws, NULL, &same, &error)); /* disjoint views: fine */
  g_assert_no_error(error);
  error = NULL;
  g_assert_false(mexd_conv2d(xs, xs, ws, NULL, &same, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d y is x");
  error = NULL;
  g_assert_false(mexd_conv2d(mid, first, ws, NULL, &same, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d y partly over x");
  error = NULL;
  g_assert_false(mexd_conv2d(second, first, w_in, NULL, &same, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d y over w");
  error = NULL;
  g_assert_false(mexd_conv2d(second, first, ws, b_in, &same, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "conv2d y over bias");

  /* tensors of another backend */
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) xc = mexd_tensor_new_zeros(hc->cpu, dt, 4, xsh, NULL);
    g_autoptr(MexdTensor) wc = mexd_tensor_new_zeros(hc->cpu, dt, 4, wsh, NULL);
    g_autoptr(MexdTensor) bc = mexd_tensor_new_zeros(hc->cpu, dt, 1, (int64_t[]){2}, NULL);
    error = NULL;
    g_assert_false(mexd_conv2d(y, xc, w, bias, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "conv2d x on another backend");
    error = NULL;
    g_assert_false(mexd_conv2d(y, x, wc, bias, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "conv2d w on another backend");
    error = NULL;
    g_assert_false(mexd_conv2d(y, x, w, bc, NULL, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "conv2d bias on another backend");
  }
}

void register_conv2d_tests(void)
{
  harness_add("conv2d/random", HARNESS_BOTH, test_conv2d_random);
  harness_add("conv2d/cases", HARNESS_BOTH, test_conv2d_cases);
  harness_add("conv2d/views", HARNESS_BOTH, test_conv2d_views);
  harness_add("conv2d/large-grid", HARNESS_F32, test_conv2d_large_grid);
  harness_add("conv2d/plain-c", HARNESS_BOTH, test_conv2d_plain_c);
  harness_add("conv2d/errors", HARNESS_BOTH, test_conv2d_errors);
  harness_add("conv2d/onednn", HARNESS_F32, test_conv2d_onednn);
}
