/* unary.c: elementwise y = f(x) — relu, gelu (exact erf form), softplus, tanh, sigmoid, a·x + b
 * (ops.h).
 *
 * Semantics follow PyTorch: relu passes NaN through; gelu is 0.5·x·(1 + erf(x/√2)) computed as
 * written, in f32 (so for x ≪ 0, where 1 + erf cancels, the result carries an absolute error of
 * ~1e-8·|x|, as PyTorch's does); softplus (beta 1, threshold 20) is x for x > 20, else
 * log(1 + e^x), accurate to a few ulp relative also far below 0; tanh and sigmoid are accurate to
 * a few ulp relative everywhere (sigmoid as e^x/(1 + e^x) below 0, so its tail does not cancel).
 * cpu: libm's erff / log1pf / expf / tanhf in f32 (the reference the shader is tested against);
 * f16 tensors are widened to f32 and rounded once on the way out.
 * vulkan: shaders/unary.comp, one invocation per element, the op picked by a push constant; it
 * carries its own erf, log1p, tanh and sigmoid (shaders/mathfn.glsl).
 * y may be x exactly (in place); any other overlap is refused.
 *
 * mexd_unary_backward (grad.h), dx = f'(x) ⊙ dy for relu, gelu, softplus, tanh and sigmoid: the
 * cpu kernel in double (the reference); vulkan: shaders/unary_bwd.comp, one invocation per
 * element, the op picked by a push constant. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <math.h>

#define UNARY_GROUP 256 /* local_size_x of unary.comp */

static float sigmoid_f32(float v)
{
  float e = expf(-fabsf(v));
  float r = 1.0f / (1.0f + e);
  return v >= 0.0f ? r : e * r; /* NaN takes the second branch and stays NaN */
}

typedef struct {
  const float *X;
  float *Y;
  MexdUnaryOp op;
  float a, b;
  int64_t m; /* MEXD_UNARY_SCALE_EYE: the matrix size */
} UnaryJob;

/* Elements [i0, i1): each one depends on its own input only, so any split gives the same bits. */
static void unary_range(int64_t i0, int64_t i1, void *ctx)
{
  const UnaryJob *j = ctx;
  const float *X = j->X;
  float *Y = j->Y;
  float a = j->a, b = j->b;
  switch (j->op) {
  case MEXD_UNARY_RELU:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = X[i] < 0.0f ? 0.0f : X[i];
    break;
  case MEXD_UNARY_GELU:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = 0.5f * X[i] * (1.0f + erff(X[i] * (float)M_SQRT1_2));
    break;
  case MEXD_UNARY_SOFTPLUS:
    mexd_cpu_softplus_n(Y + i0, X + i0, i1 - i0);
    break;
  case MEXD_UNARY_SCALE:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = a * X[i] + b;
    break;
  case MEXD_UNARY_TANH:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = tanhf(X[i]);
    break;
  case MEXD_UNARY_SIGMOID:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = sigmoid_f32(X[i]);
    break;
  case MEXD_UNARY_SCALE_EYE: {
    /* a·x, plus b on the diagonal: element i is row i/m, column i%m of matrix i/m² (two
     * divisions per row, not per element) */
    int64_t m = j->m;
    for (int64_t i = i0; i < i1;) {
      int64_t row = i / m, end = MIN(i1, (row + 1) * m), diag = row * m + row % m;
      for (; i < end; i++)
        Y[i] = a * X[i] + (i == diag ? b : 0.0f);
    }
    break;
  }
  }
}

static void unary_cpu(MexdTensor *y, MexdTensor *x, MexdUnaryOp op, float a, float b)
{
  gboolean ox, oy;
  int64_t n = mexd_tensor_numel(x);
  /* in place in f32, X and Y are the same memory: each element is read before it is written */
  UnaryJob j = {.op = op, .a = a, .b = b, .m = x->shape[x->ndim - 1]};
  j.X = mexd_cpu_f32_in(x, &ox);
  j.Y = mexd_cpu_f32_out(y, FALSE, &oy);
  /* the transcendental ones cost ~10× a multiply-add per element: smaller pieces pay */
  gboolean cheap = op == MEXD_UNARY_RELU || op == MEXD_UNARY_SCALE || op == MEXD_UNARY_SCALE_EYE;
  mexd_parallel_for(n, cheap ? MEXD_PARALLEL_GRAIN_ELEMENTS : MEXD_PARALLEL_GRAIN_ELEMENTS / 8,
                    unary_range, &j);
  mexd_cpu_f32_done(y, j.Y, oy, TRUE);
  if (ox)
    g_free((float *)j.X);
}

MEXD_VK_PUSH_STRUCT(UnaryPush, MEXD_PUSH_UNARY);

static gboolean unary_vulkan(MexdTensor *y, MexdTensor *x, MexdUnaryOp op, float a, float b,
                             GError **error)
{
  MexdBackend *be = y->backend;
  int64_t n = mexd_tensor_numel(y);
  UnaryPush pc = {
      .n = (uint32_t)n, .op = (uint32_t)op, .a = a, .b = b, .m = (uint32_t)x->shape[x->ndim - 1]};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_UNARY,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, ((uint64_t)n + UNARY_GROUP - 1) / UNARY_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_unary(MexdTensor *y, MexdTensor *x, MexdUnaryOp op, float a, float b, GError **error)
{
  const char *name = "unary";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(name, "x", x, be, y->dtype, error))
    return FALSE;
  if ((int)op < MEXD_UNARY_RELU || (int)op > MEXD_UNARY_SIGMOID)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "unary: unknown op %d", (int)op);
  if (!mexd_op_check_shape(name, "y", y, x->ndim, x->shape, error))
    return FALSE;
  if (op == MEXD_UNARY_SCALE_EYE && (x->ndim < 2 || x->shape[x->ndim - 1] != x->shape[x->ndim - 2]))
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "scale_eye: argument x must be a batch of square matrices [..., m, m]");
  if (!mexd_tensor_same_data(y, x) && !mexd_op_check_no_overlap(name, "y", y, "x", x, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    unary_cpu(y, x, op, a, b);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return unary_vulkan(y, x, op, a, b, error);
}

gboolean mexd_relu(MexdTensor *y, MexdTensor *x, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_RELU, 0.0f, 0.0f, error);
}

gboolean mexd_gelu(MexdTensor *y, MexdTensor *x, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_GELU, 0.0f, 0.0f, error);
}

gboolean mexd_softplus(MexdTensor *y, MexdTensor *x, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_SOFTPLUS, 0.0f, 0.0f, error);
}

gboolean mexd_tanh(MexdTensor *y, MexdTensor *x, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_TANH, 0.0f, 0.0f, error);
}

gboolean mexd_sigmoid(MexdTensor *y, MexdTensor *x, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_SIGMOID, 0.0f, 0.0f, error);
}

gboolean mexd_scale(MexdTensor *y, MexdTensor *x, float a, float b, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_SCALE, a, b, error);
}

gboolean mexd_scale_eye(MexdTensor *y, MexdTensor *x, float a, float b, GError **error)
{
  return mexd_unary(y, x, MEXD_UNARY_SCALE_EYE, a, b, error);
}

/* ---- backward (grad.h) ---- */

static double sigmoid_d(double v)
{
  double e = exp(-fabs(v));
  double r = 1.0 / (1.0 + e);
  return v >= 0.0 ? r : e * r; /* NaN takes the second branch and stays NaN */
}

/* f'(v) for the non-linear unary ops other than relu */
static double unary_deriv(MexdUnaryOp op, double v)
{
  switch (op) {
  case MEXD_UNARY_GELU: {
    /* x·φ(x) is 0 where φ underflows, so f'(±inf) = 1, 0 and not inf·0 (unary_bwd.comp too) */
    double pdf = exp(-0.5 * v * v) * 0.39894228040143268;
    return 0.5 * (1.0 + erf(v * M_SQRT1_2)) + (pdf == 0.0 ? 0.0 : v * pdf);
  }
  case MEXD_UNARY_SOFTPLUS:
    return v > 20.0 ? 1.0 : sigmoid_d(v);
  case MEXD_UNARY_TANH: {
    double t = tanh(v);
    return 1.0 - t * t;
  }
  default: { /* MEXD_UNARY_SIGMOID */
    double s = sigmoid_d(v);
    return s * (1.0 - s);
  }
  }
}

static void unary_bwd_cpu(MexdTensor *dx, MexdTensor *dy, MexdTensor *x, MexdUnaryOp op,
                          gboolean acc)
{
  gboolean ody, ox, odx;
  int64_t n = mexd_tensor_numel(dx);
  /* dx may be dy: in f32 they are the same memory, and each element is read before it is
   * written */
  const float *DY = mexd_cpu_f32_in(dy, &ody);
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *DX = mexd_cpu_f32_out(dx, acc, &odx);
  for (int64_t i = 0; i < n; i++) {
    double v;
    if (op == MEXD_UNARY_RELU)
      v = X[i] > 0.0f ? (double)DY[i] : 0.0; /* exactly 0, not 0·dy (NaN for an infinite dy) */
    else
      v = (double)DY[i] * unary_deriv(op, X[i]);
    DX[i] = mexd_op_acc_store(DX[i], v, acc);
  }
  mexd_cpu_f32_done(dx, DX, odx, TRUE);
  mexd_op_free_in(DY, ody);
  mexd_op_free_in(X, ox);
}

MEXD_VK_PUSH_STRUCT(UnaryBwdPush, MEXD_PUSH_UNARY_BWD);

gboolean mexd_unary_backward(MexdTensor *dx, MexdTensor *dy, MexdTensor *x, MexdUnaryOp op,
                             gboolean accumulate, GError **error)
{
  const char *name = "unary_backward";
  if (!mexd_op_check_float(name, "dx", dx, error) ||
      !mexd_op_check_out_like(name, "dx", dx, "x", x, error) ||
      !mexd_op_check_like(name, "dy", dy, x, error))
    return FALSE;
  if (op != MEXD_UNARY_RELU && op != MEXD_UNARY_GELU && op != MEXD_UNARY_SOFTPLUS &&
      op != MEXD_UNARY_TANH && op != MEXD_UNARY_SIGMOID)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "unary_backward: op %d has no backward here (relu, gelu, softplus, tanh and "
                     "sigmoid do; scale and scale_eye are linear: use mexd_lincomb)",
                     (int)op);
  if ((!mexd_tensor_same_data(dx, dy) &&
       !mexd_op_check_no_overlap(name, "dx", dx, "dy", dy, error)) ||
      !mexd_op_check_no_overlap(name, "dx", dx, "x", x, error))
    return FALSE;
  MexdBackend *be = dx->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    unary_bwd_cpu(dx, dy, x, op, accumulate);
    return TRUE;
  }
  int64_t n = mexd_tensor_numel(dx);
  if (!mexd_op_check_u32(name, "elements of dx", n, error))
    return FALSE;
  UnaryBwdPush pc = {.n = (uint32_t)n, .op = (uint32_t)op, .acc = accumulate != 0};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_UNARY_BWD,
      .variant = dx->dtype,
      .bind = {x, dy, dx},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  return mexd_op_elem_grid(be, n, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
