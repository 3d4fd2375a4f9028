/* op-grad.c: the backward ops of grad.h, each on its own.
 *
 * On cpu every op is held twice: to an analytic reference written here in double, and to a
 * central finite difference of a scalar functional L = Σ r ⊙ forward(x) (r random), the forward
 * computed here in double (so a wrong formula fails even where the reference shares it).  Other
 * backends are held to the cpu backend (NMSE, as the other op tests).  Throughout: accumulate
 * TRUE (the output holds random values that must be added to) and FALSE (the output holds NaN
 * that must be ignored); inputs as views at odd element offsets; outputs as views with sentinels
 * on both sides that must survive; edge sizes (1, 7, 255, 257, random); a row, a reduction or an
 * index list long enough that a shader looping naively would pass lavapipe's 65,535 loop
 * iterations per invocation (lib/ops/gemm.c); in place where grad.h allows it; the specials
 * grad.h names (NaN, ±inf, ties); the dropout mask, identical on every backend and at its rate;
 * bad labels and indices (cpu: an error at once, nothing written; vulkan: at the next sync); and
 * every op's argument errors. */
#include "harness.h"

#include "backend/vulkan.h"
#include "nn/philox.h"
#include "ops/grad.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---- */

/* NMSE allowed between the cpu kernel (double inside, one rounding) and a finite difference in
 * double of the same inputs: only the output's rounding and the difference's error remain. */
#define NMSE_FD_F32 1e-10

#define POST 2 /* sentinel elements after an output view */

static gboolean on_cpu(const HarnessCase *hc)
{
  return hc->be == hc->cpu;
}

static double thr_fd(const HarnessCase *hc)
{
  return harness_thr(hc, NMSE_FD_F32);
}

/* 0 (a plain tensor) or an odd element offset (1, 3 or 5) into a larger tensor. */
static int64_t rand_pad(void)
{
  return g_test_rand_bit() ? 0 : 2 * g_test_rand_int_range(0, 3) + 1;
}

/* A view `pad` elements into a larger tensor (harness_view_tensor), or NULL for no data. */
static MexdTensor *input(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape,
                         const float *data, int64_t pad)
{
  return harness_view_tensor(be, dt, ndim, shape, data, pad);
}

/* An output tensor: a view `pad` elements into storage whose other elements are sentinels. */
typedef struct {
  MexdTensor *base; /* [pad + n + POST] */
  MexdTensor *t;    /* the output the op sees */
  int64_t pad, n;
} OutBuf;

static float sentinel(int64_t k)
{
  return 1000.0f + (float)(k % 16); /* exact in f16 */
}

static void outbuf_clear(OutBuf *o)
{
  g_clear_pointer(&o->t, mexd_tensor_unref);
  g_clear_pointer(&o->base, mexd_tensor_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OutBuf, outbuf_clear)

/* o holds `init` (NULL: NaN everywhere, which an op writing without accumulate must ignore). */
static void outbuf_init(OutBuf *o, MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape,
                        const float *init, int64_t pad)
{
  g_autoptr(GError) error = NULL;
  o->n = harness_numel(ndim, shape);
  o->pad = pad;
  int64_t total = pad + o->n + POST;
  g_autofree float *buf = g_new(float, total);
  for (int64_t k = 0; k < total; k++)
    buf[k] = sentinel(k);
  for (int64_t k = 0; k < o->n; k++)
    buf[pad + k] = init ? init[k] : NAN;
  o->base = harness_tensor(be, dt, 1, &total, buf);
  g_autoptr(MexdTensor) rows = mexd_tensor_rows(o->base, pad, o->n, &error);
  g_assert_no_error(error);
  o->t = mexd_tensor_reshape(rows, ndim, shape, &error);
  g_assert_no_error(error);
}

/* The output's values (synced); asserts that the sentinels around it are unchanged. */
static float *outbuf_read(const OutBuf *o, const char *what)
{
  g_autofree float *all = harness_read(o->base);
  for (int64_t k = 0; k < o->pad + o->n + POST; k++)
    if ((k < o->pad || k >= o->pad + o->n) && all[k] != sentinel(k))
      g_error("%s: the element %" G_GINT64_FORMAT " %s the output was overwritten (%g)", what,
              k < o->pad ? o->pad - k : k - o->pad - o->n + 1, k < o->pad ? "before" : "after",
              all[k]);
  return g_memdup2(all + o->pad, sizeof(float) * (size_t)o->n);
}

/* The old contents of an output: random values with accumulate, NULL (NaN) without. */
static float *old_contents(int64_t n, gboolean acc, MexdDType dt)
{
  return acc ? harness_random(n, -1, 1, dt) : NULL;
}

/* g[i] += init[i] where there are old contents to add to. */
static void add_init(double *g, const float *init, int64_t n)
{
  for (int64_t i = 0; init && i < n; i++)
    g[i] += init[i];
}

static double *to_double(const float *v, int64_t n)
{
  double *d = g_new(double, n);
  for (int64_t i = 0; i < n; i++)
    d[i] = v[i];
  return d;
}

/* A random shape of 1..4 dims whose last is D and whose leading ones multiply to rows. */
static int rows_shape(int64_t rows, int64_t D, int64_t shape[4])
{
  int ndim = g_test_rand_int_range(1, 5);
  if (ndim == 1 && rows > 1)
    ndim = 2;
  shape[ndim - 1] = D;
  int64_t left = rows;
  for (int i = ndim - 2; i > 0; i--) {
    int64_t f = 1;
    for (int64_t d = 2; d <= 5; d++)
      if (left % d == 0 && g_test_rand_bit()) {
        f = d;
        break;
      }
    shape[i] = f;
    left /= f;
  }
  if (ndim > 1)
    shape[0] = left;
  return ndim;
}

/* A random shape of 1..4 dims with at most a few ten thousand elements. */
static int random_shape(int64_t shape[4])
{
  static const int64_t max_dim[5] = {0, 3000, 200, 30, 10};
  int ndim = g_test_rand_int_range(1, 5);
  for (int i = 0; i < ndim; i++)
    shape[i] = harness_size(max_dim[ndim]);
  return ndim;
}

static char *describe(const char *op, const HarnessCase *hc, int ndim, const int64_t *shape,
                      const char *fmt, ...) G_GNUC_PRINTF(5, 6);
static char *describe(const char *op, const HarnessCase *hc, int ndim, const int64_t *shape,
                      const char *fmt, ...)
{
  g_autofree char *ss = harness_shape_str(ndim, shape);
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *rest = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  return g_strdup_printf("%s %s %s %s %s", op, hc->spec, mexd_dtype_name(hc->dtype), ss, rest);
}

/* As harness_assert_close against the cpu result, where element i may also be off by about 1e-3
 * (f16: 3e-2) of its natural magnitude s_i (power = Σ s_i²): a result that cancels to nearly 0
 * everywhere (a nearly one-hot softmax row, layernorm rows of two elements, a confident
 * cross-entropy row) is held to an absolute error of the f32 rounding of its terms, not to a
 * relative one; elsewhere the Σ ref² term dominates and this is the plain NMSE. */
static void assert_close_floor(const HarnessCase *hc, const char *what, const float *out,
                               const float *ref, int64_t n, double power)
{
  double c = hc->dtype == MEXD_DTYPE_F16 ? 3e-2 : 1e-3;
  g_autofree float *o = g_new(float, n + 1), *r = g_new(float, n + 1);
  memcpy(o, out, sizeof(float) * (size_t)n);
  memcpy(r, ref, sizeof(float) * (size_t)n);
  o[n] = r[n] = (float)(c * sqrt(power)); /* adds c²·power to Σ ref², nothing to the error */
  harness_assert_close(what, o, r, n + 1, harness_thr(hc, NMSE_F32));
}

/* A scalar functional of n doubles. */
typedef double (*LossFn)(const double *v, const void *ctx);

/* Its gradient at v0 by central differences (steps of 1e-5 relative, in double). */
static double *fd_gradient(LossFn f, const void *ctx, const double *v0, int64_t n)
{
  double *v = g_memdup2(v0, sizeof(double) * (size_t)n), *g = g_new(double, n);
  for (int64_t i = 0; i < n; i++) {
    const double s = v[i], h = 1e-5 * MAX(1.0, fabs(s));
    v[i] = s + h;
    const double fp = f(v, ctx);
    v[i] = s - h;
    const double fm = f(v, ctx);
    v[i] = s;
    g[i] = (fp - fm) / (2 * h);
  }
  g_free(v);
  return g;
}

/* Asserts that the call failed with `code` (a shorthand for the error lists below). */
#define ASSERT_FAILS(call, code, what)                                                             \
  do {                                                                                             \
    GError *err_ = NULL;                                                                           \
    g_assert_false(call);                                                                          \
    harness_assert_error(err_, code, what);                                                        \
  } while (0)
#define ERR (&err_) /* the GError** of ASSERT_FAILS */
/* The same, and the message names `arg` ("argument dx"). */
#define ASSERT_FAILS_NAMING(call, code, what, arg)                                                 \
  do {                                                                                             \
    GError *err_ = NULL;                                                                           \
    g_assert_false(call);                                                                          \
    if (err_ && !strstr(err_->message, arg))                                                       \
      g_error("%s: \"%s\" does not name %s", what, err_->message, arg);                            \
    harness_assert_error(err_, code, what);                                                        \
  } while (0)

/* Tensors for the error checks: zeros of `dt` on `be`. */
static MexdTensor *zeros(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape)
{
  g_autoptr(GError) error = NULL;
  MexdTensor *t = mexd_tensor_new_zeros(be, dt, ndim, shape, &error);
  g_assert_no_error(error);
  return t;
}

/* A view of n elements starting `at` elements into the 1-D `base`, reshaped. */
static MexdTensor *sub(MexdTensor *base, int64_t at, int ndim, const int64_t *shape)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) r = mexd_tensor_rows(base, at, harness_numel(ndim, shape), &error);
  g_assert_no_error(error);
  MexdTensor *t = mexd_tensor_reshape(r, ndim, shape, &error);
  g_assert_no_error(error);
  return t;
}

static MexdDType other_float(MexdDType dt)
{
  return dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
}

static void assert_ok(gboolean ok, GError *error, const char *what)
{
  if (error)
    g_error("%s: %s", what, error->message);
  g_assert_true(ok);
}
/* The call (which sets the local `error`) succeeds. */
#define CHECK_OK(call, what)                                                                       \
  do {                                                                                             \
    gboolean ok_ = (call);                                                                         \
    assert_ok(ok_, error, what);                                                                   \
  } while (0)

/* ---- unary ---- */

static const char *unary_name(MexdUnaryOp op)
{
  switch (op) {
  case MEXD_UNARY_RELU: return "relu";
  case MEXD_UNARY_GELU: return "gelu";
  case MEXD_UNARY_SOFTPLUS: return "softplus";
  case MEXD_UNARY_TANH: return "tanh";
  case MEXD_UNARY_SIGMOID: return "sigmoid";
  default: return "?";
  }
}

static const MexdUnaryOp unary_ops[] = {MEXD_UNARY_RELU, MEXD_UNARY_GELU, MEXD_UNARY_SOFTPLUS,
                                        MEXD_UNARY_TANH, MEXD_UNARY_SIGMOID};

/* The forward, in double. */
static double unary_f(MexdUnaryOp op, double x)
{
  switch (op) {
  case MEXD_UNARY_RELU: return x > 0 ? x : 0;
  case MEXD_UNARY_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  case MEXD_UNARY_SOFTPLUS: return x > 20 ? x : log1p(exp(x));
  case MEXD_UNARY_TANH: return tanh(x);
  default: return 1 / (1 + exp(-x));
  }
}

/* Its derivative, worked out by hand. */
static double unary_df(MexdUnaryOp op, double x)
{
  switch (op) {
  case MEXD_UNARY_RELU: return x > 0 ? 1 : 0;
  case MEXD_UNARY_GELU: /* Φ(x) + x·φ(x) */
    return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * G_PI);
  case MEXD_UNARY_SOFTPLUS: return x > 20 ? 1 : 1 / (1 + exp(-x));
  case MEXD_UNARY_TANH: return 1 / (cosh(x) * cosh(x));
  default: return exp(-x) / ((1 + exp(-x)) * (1 + exp(-x)));
  }
}

/* The ranges random inputs are drawn from. */
static void unary_range(MexdUnaryOp op, float *lo, float *hi)
{
  static const float r[7][2] = {{-4, 4}, {-6, 6}, {-30, 30}, {0, 0}, {0, 0}, {-5, 5}, {-10, 10}};
  *lo = r[op][0];
  *hi = r[op][1];
}

typedef struct {
  MexdUnaryOp op;
  int ndim;
  int64_t shape[4];
  gboolean acc, in_place;
  int64_t pad_x, pad_dy, pad_dx;
} UnaryRun;

/* dx for `u` on be; `init` the old contents of dx (with in_place, dx is dy and init unused). */
static float *run_unary_bwd(MexdBackend *be, MexdDType dt, const UnaryRun *u, const float *x,
                            const float *dy, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tx = input(be, dt, u->ndim, u->shape, x, u->pad_x);
  g_auto(OutBuf) o = {0};
  g_autoptr(MexdTensor) tdy = NULL;
  if (u->in_place) {
    outbuf_init(&o, be, dt, u->ndim, u->shape, dy, u->pad_dx);
    tdy = mexd_tensor_ref(o.t);
  } else {
    outbuf_init(&o, be, dt, u->ndim, u->shape, init, u->pad_dx);
    tdy = input(be, dt, u->ndim, u->shape, dy, u->pad_dy);
  }
  CHECK_OK(mexd_unary_backward(o.t, tdy, tx, u->op, u->acc, &error), what);
  return outbuf_read(&o, what);
}

static void check_unary_bwd(const HarnessCase *hc, const UnaryRun *u, const float *x,
                            const float *dy, const char *label)
{
  int64_t n = harness_numel(u->ndim, u->shape);
  g_autofree float *init = u->in_place ? NULL : old_contents(n, u->acc, hc->dtype);
  g_autofree char *what = describe(
      unary_name(u->op), hc, u->ndim, u->shape, "backward acc %d in-place %d pads %d/%d/%d (%s)",
      u->acc, u->in_place, (int)u->pad_x, (int)u->pad_dy, (int)u->pad_dx, label);
  g_autofree float *out = run_unary_bwd(hc->be, hc->dtype, u, x, dy, init, what);
  if (on_cpu(hc)) {
    g_autofree double *ref = g_new(double, n);
    for (int64_t i = 0; i < n; i++)
      ref[i] = unary_df(u->op, x[i]) * dy[i] + (u->acc ? (u->in_place ? dy[i] : init[i]) : 0);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  } else {
    UnaryRun c = *u;
    c.pad_x = c.pad_dy = c.pad_dx = 0;
    g_autofree float *ref = run_unary_bwd(hc->cpu, hc->dtype, &c, x, dy, init, what);
    harness_assert_close(what, out, ref, n, harness_thr(hc, NMSE_F32));
  }
}

static void test_unary_bwd_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 4; iter++)
    for (guint k = 0; k < G_N_ELEMENTS(unary_ops); k++) {
      UnaryRun u = {.op = unary_ops[k]};
      u.ndim = random_shape(u.shape);
      u.acc = g_test_rand_bit();
      u.in_place = g_test_rand_int_range(0, 3) == 0;
      u.pad_x = rand_pad();
      u.pad_dy = rand_pad();
      u.pad_dx = rand_pad();
      int64_t n = harness_numel(u.ndim, u.shape);
      float lo, hi;
      unary_range(u.op, &lo, &hi);
      g_autofree float *x = harness_random(n, lo, hi, hc->dtype);
      g_autofree float *dy = harness_random(n, -2, 2, hc->dtype);
      check_unary_bwd(hc, &u, x, dy, "random");
    }
}

typedef struct {
  MexdUnaryOp op;
  const double *r;
} UnaryCtx;

static double unary_loss(const double *v, const void *ctx)
{
  const UnaryCtx *c = ctx;
  double L = 0;
  for (int64_t i = 0; i < 96; i++)
    L += c->r[i] * unary_f(c->op, v[i]);
  return L;
}

/* dx = ∂/∂x Σ r ⊙ f(x) by central differences, for 96 points of each op (away from relu's kink
 * and from softplus's threshold, where f jumps by e^−20), and the points where the formulas
 * change branch. */
static void test_unary_bwd_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  int64_t n = 96;
  for (guint k = 0; k < G_N_ELEMENTS(unary_ops); k++) {
    MexdUnaryOp op = unary_ops[k];
    float lo, hi;
    unary_range(op, &lo, &hi);
    g_autofree float *x = harness_random(n, lo, hi, hc->dtype);
    const float pts[] = {-1.5f, 0.5f, -0.5f, 1.0f, 4.0f, -4.0f, 0.25f, 19.0f, -7.0f};
    for (guint i = 0; i < G_N_ELEMENTS(pts); i++)
      x[i] = pts[i];
    for (int64_t i = 0; i < n; i++) {
      if (op == MEXD_UNARY_RELU && fabsf(x[i]) < 1e-3f)
        x[i] = 0.5f;
      if (op == MEXD_UNARY_SOFTPLUS && fabsf(x[i] - 20.0f) < 0.05f)
        x[i] = 21.0f;
    }
    g_autofree float *r = harness_random(n, -1, 1, hc->dtype);
    g_autofree double *xd = to_double(x, n), *rd = to_double(r, n);
    UnaryCtx c = {op, rd};
    g_autofree double *g = fd_gradient(unary_loss, &c, xd, n);
    UnaryRun u = {.op = op, .ndim = 1, .shape = {n}};
    g_autofree char *what = describe(unary_name(op), hc, 1, u.shape, "backward vs differences");
    g_autofree float *out = run_unary_bwd(hc->be, hc->dtype, &u, x, r, NULL, what);
    harness_assert_close_d(what, out, g, n, thr_fd(hc));
  }
}

/* grad.h's specials: relu gives exactly 0 where x ≤ 0 or is NaN whatever dy holds; at x = ±inf
 * each f' is its limit; a NaN x gives NaN for the others. */
static void test_unary_bwd_special(const HarnessCase *hc)
{
  const float x[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 2.0f, -2.0f, NAN, -1.0f, 0.0f, 3.0f};
  const float dy[] = {1.5f, 2.0f, 3.0f, INFINITY, NAN, NAN, -INFINITY, NAN, NAN, -INFINITY, 0.5f};
  int64_t n = G_N_ELEMENTS(x);
  for (guint k = 0; k < G_N_ELEMENTS(unary_ops); k++) {
    MexdUnaryOp op = unary_ops[k];
    for (int acc = 0; acc < 2; acc++) {
      UnaryRun u = {.op = op, .ndim = 1, .shape = {n}, .acc = acc, .pad_x = 1, .pad_dx = 3};
      g_autofree float *init = old_contents(n, acc, hc->dtype);
      g_autofree char *what = describe(unary_name(op), hc, 1, u.shape, "specials acc %d", acc);
      g_autofree float *out = run_unary_bwd(hc->be, hc->dtype, &u, x, dy, init, what);
      for (int64_t i = 0; i < n; i++) {
        float want;
        if (op == MEXD_UNARY_RELU)
          want = x[i] > 0 ? dy[i] : 0.0f;
        else if (isnan(x[i]))
          want = NAN;
        else if (isinf(x[i]))
          want = (x[i] > 0 && (op == MEXD_UNARY_GELU || op == MEXD_UNARY_SOFTPLUS) ? 1.0f : 0.0f) *
                 dy[i];
        else
          continue; /* finite x: the random tests cover it */
        if (acc)
          want += init[i];
        if (hc->dtype == MEXD_DTYPE_F16)
          want = harness_f16_round(want);
        gboolean ok = isnan(want) ? isnan(out[i]) : out[i] == want;
        if (!ok)
          g_error("%s: x = %g, dy = %g: dx = %g, want %g", what, x[i], dy[i], out[i], want);
      }
    }
  }
}

/* dx = dy in place over a long vector; the other checks run through check_unary_bwd. */
static void test_unary_bwd_long(const HarnessCase *hc)
{
  UnaryRun u = {.op = MEXD_UNARY_GELU,
                .ndim = 2,
                .shape = {3, 70001},
                .in_place = TRUE,
                .acc = TRUE,
                .pad_x = 1,
                .pad_dx = 1};
  int64_t n = 3 * 70001;
  g_autofree float *x = harness_random(n, -5, 5, hc->dtype);
  g_autofree float *dy = harness_random(n, -1, 1, hc->dtype);
  check_unary_bwd(hc, &u, x, dy, "long, in place");
}

static void test_unary_bwd_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {3, 4}, sht[2] = {4, 3}, twelve = 12, big = 20;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dx = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dx_t = zeros(be, dt, 2, sht);
  g_autoptr(MexdTensor) dx_flat = zeros(be, dt, 1, &twelve);
  g_autoptr(MexdTensor) dx_i = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) x_i = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) lo = sub(store, 0, 2, sh), hi = sub(store, 2, 2, sh);
  GError *error = NULL;
  /* the valid calls, dx = dy included, succeed */
  g_assert_true(mexd_unary_backward(dx, dy, x, MEXD_UNARY_TANH, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_unary_backward(dy, dy, x, MEXD_UNARY_RELU, TRUE, &error));
  g_assert_no_error(error);

  ASSERT_FAILS(mexd_unary_backward(NULL, dy, x, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward dx NULL");
  ASSERT_FAILS(mexd_unary_backward(dx, NULL, x, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward dy NULL");
  ASSERT_FAILS(mexd_unary_backward(dx, dy, NULL, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward x NULL");
  ASSERT_FAILS_NAMING(mexd_unary_backward(dx_t, dy, x, MEXD_UNARY_GELU, FALSE, ERR),
                      MEXD_ERROR_SHAPE, "unary_backward dx transposed", "argument dx");
  ASSERT_FAILS_NAMING(mexd_unary_backward(dx_flat, dy, x, MEXD_UNARY_GELU, FALSE, ERR),
                      MEXD_ERROR_SHAPE, "unary_backward dx same count, other shape", "argument dx");
  ASSERT_FAILS_NAMING(mexd_unary_backward(dx, dx_t, x, MEXD_UNARY_GELU, FALSE, ERR),
                      MEXD_ERROR_SHAPE, "unary_backward dy shape", "argument dy");
  ASSERT_FAILS(mexd_unary_backward(dx_i, dy, x, MEXD_UNARY_GELU, FALSE, ERR), MEXD_ERROR_DTYPE,
               "unary_backward i32 dx");
  ASSERT_FAILS(mexd_unary_backward(dx, dy, x_i, MEXD_UNARY_GELU, FALSE, ERR), MEXD_ERROR_DTYPE,
               "unary_backward i32 x");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, sh);
    ASSERT_FAILS(mexd_unary_backward(dx, xo, x, MEXD_UNARY_SIGMOID, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "unary_backward mixed float dy");
    ASSERT_FAILS(mexd_unary_backward(dx, dy, xo, MEXD_UNARY_SIGMOID, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "unary_backward mixed float x");
  }
  const int bad_ops[] = {MEXD_UNARY_SCALE, MEXD_UNARY_SCALE_EYE, 99, -1};
  for (guint i = 0; i < G_N_ELEMENTS(bad_ops); i++)
    ASSERT_FAILS(mexd_unary_backward(dx, dy, x, (MexdUnaryOp)bad_ops[i], FALSE, ERR),
                 MEXD_ERROR_INVALID_ARGUMENT, "unary_backward op without a backward");
  ASSERT_FAILS(mexd_unary_backward(x, dy, x, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward dx = x");
  ASSERT_FAILS(mexd_unary_backward(hi, lo, x, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward dx partly over dy");
  ASSERT_FAILS(mexd_unary_backward(hi, dy, lo, MEXD_UNARY_RELU, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "unary_backward dx partly over x");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, sh);
    ASSERT_FAILS(mexd_unary_backward(dx, dy, xc, MEXD_UNARY_RELU, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "unary_backward x on another backend");
    ASSERT_FAILS(mexd_unary_backward(dx, xc, x, MEXD_UNARY_RELU, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "unary_backward dy on another backend");
    ASSERT_FAILS(mexd_unary_backward(xc, dy, x, MEXD_UNARY_RELU, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "unary_backward dx on another backend");
  }
}

/* ---- softmax ---- */

/* y = softmax(z) over rows of D, in double (a row of all −inf: zeros). */
static void softmax_d(int64_t rows, int64_t D, const double *z, double *y)
{
  for (int64_t r = 0; r < rows; r++) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < D; i++)
      m = fmax(m, z[r * D + i]);
    for (int64_t i = 0; i < D; i++)
      s += m == -INFINITY ? 0 : exp(z[r * D + i] - m);
    for (int64_t i = 0; i < D; i++)
      y[r * D + i] = m == -INFINITY ? 0 : exp(z[r * D + i] - m) / s;
  }
}

/* The forward output the backward takes: softmax of random logits, rounded to dt. */
static float *softmax_output(int64_t rows, int64_t D, float scale, gboolean masked, MexdDType dt)
{
  int64_t n = rows * D;
  g_autofree float *z = harness_random(n, -scale, scale, dt);
  if (masked) /* −inf logits (masking), never a whole row */
    for (int64_t i = 0; i < n; i++)
      if (i % D != 0 && g_test_rand_int_range(0, 4) == 0)
        z[i] = -INFINITY;
  g_autofree double *zd = to_double(z, n), *yd = g_new(double, n);
  softmax_d(rows, D, zd, yd);
  float *y = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    y[i] = dt == MEXD_DTYPE_F16 ? harness_f16_round((float)yd[i]) : (float)yd[i];
  return y;
}

typedef struct {
  int ndim;
  int64_t shape[4];
  gboolean acc, in_place;
  int64_t pad_y, pad_dy, pad_dx;
} RowRun;

static float *run_softmax_bwd(MexdBackend *be, MexdDType dt, const RowRun *s, const float *y,
                              const float *dy, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) ty = input(be, dt, s->ndim, s->shape, y, s->pad_y);
  g_auto(OutBuf) o = {0};
  g_autoptr(MexdTensor) tdy = NULL;
  if (s->in_place) {
    outbuf_init(&o, be, dt, s->ndim, s->shape, dy, s->pad_dx);
    tdy = mexd_tensor_ref(o.t);
  } else {
    outbuf_init(&o, be, dt, s->ndim, s->shape, init, s->pad_dx);
    tdy = input(be, dt, s->ndim, s->shape, dy, s->pad_dy);
  }
  CHECK_OK(mexd_softmax_rows_backward(o.t, ty, tdy, s->acc, &error), what);
  return outbuf_read(&o, what);
}

static void ref_softmax_bwd(int64_t rows, int64_t D, const float *y, const float *dy, double *dx)
{
  for (int64_t r = 0; r < rows; r++) {
    double dot = 0;
    for (int64_t i = 0; i < D; i++)
      dot += (double)y[r * D + i] * dy[r * D + i];
    for (int64_t i = 0; i < D; i++)
      dx[r * D + i] = (double)y[r * D + i] * ((double)dy[r * D + i] - dot);
  }
}

static void check_softmax_bwd(const HarnessCase *hc, const RowRun *s, const float *y,
                              const float *dy, const char *label)
{
  int64_t n = harness_numel(s->ndim, s->shape), D = s->shape[s->ndim - 1];
  g_autofree float *init = s->in_place ? NULL : old_contents(n, s->acc, hc->dtype);
  g_autofree char *what = describe("softmax_rows_backward", hc, s->ndim, s->shape,
                                   "acc %d in-place %d pads %d/%d/%d (%s)", s->acc, s->in_place,
                                   (int)s->pad_y, (int)s->pad_dy, (int)s->pad_dx, label);
  g_autofree float *out = run_softmax_bwd(hc->be, hc->dtype, s, y, dy, init, what);
  if (on_cpu(hc)) {
    g_autofree double *ref = g_new(double, n);
    ref_softmax_bwd(n / D, D, y, dy, ref);
    if (s->acc)
      for (int64_t i = 0; i < n; i++)
        ref[i] += s->in_place ? dy[i] : init[i];
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  } else {
    RowRun c = *s;
    c.pad_y = c.pad_dy = c.pad_dx = 0;
    g_autofree float *ref = run_softmax_bwd(hc->cpu, hc->dtype, &c, y, dy, init, what);
    /* dx_i = y_i·(dy_i − Σ y·dy): its terms are of the row's max y times its max |dy| */
    double power = 0;
    for (int64_t r = 0; r < n / D; r++) {
      double my = 0, mg = 0;
      for (int64_t i = 0; i < D; i++) {
        my = fmax(my, y[r * D + i]);
        mg = fmax(mg, fabs(dy[r * D + i]));
      }
      power += (double)D * (my * mg) * (my * mg);
    }
    assert_close_floor(hc, what, out, ref, n, power);
  }
}

static void test_softmax_bwd_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 10; iter++) {
    int64_t D = harness_size(on_cpu(hc) ? 600 : 2000);
    int64_t rows = harness_size(MAX(1, 30000 / D));
    RowRun s = {0};
    s.ndim = rows_shape(rows, D, s.shape);
    s.acc = g_test_rand_bit();
    s.in_place = g_test_rand_int_range(0, 3) == 0;
    s.pad_y = rand_pad();
    s.pad_dy = rand_pad();
    s.pad_dx = rand_pad();
    float scale = g_test_rand_bit() ? 3.0f : (float)g_test_rand_double_range(0.1, 30);
    gboolean masked = D > 1 && g_test_rand_bit();
    g_autofree float *y = softmax_output(rows, D, scale, masked, hc->dtype);
    g_autofree float *dy = harness_random(rows * D, -2, 2, hc->dtype);
    g_autofree char *label = g_strdup_printf("logits ±%g masked %d", (double)scale, masked);
    check_softmax_bwd(hc, &s, y, dy, label);
  }
}

typedef struct {
  int64_t rows, D;
  const double *r;
} RowCtx;

static double softmax_loss(const double *z, const void *ctx)
{
  const RowCtx *c = ctx;
  int64_t n = c->rows * c->D;
  g_autofree double *y = g_new(double, n);
  softmax_d(c->rows, c->D, z, y);
  double L = 0;
  for (int64_t i = 0; i < n; i++)
    L += c->r[i] * y[i];
  return L;
}

/* ∂/∂z Σ r ⊙ softmax(z) by differences against the backward given y = softmax(z) and dy = r. */
static void test_softmax_bwd_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[][2] = {{1, 1}, {3, 7}, {2, 33}, {1, 129}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    int64_t rows = sizes[k][0], D = sizes[k][1], n = rows * D;
    g_autofree float *z = harness_random(n, -3, 3, hc->dtype);
    g_autofree float *r = harness_random(n, -1, 1, hc->dtype);
    g_autofree double *zd = to_double(z, n), *rd = to_double(r, n), *yd = g_new(double, n);
    softmax_d(rows, D, zd, yd);
    g_autofree float *y = g_new(float, n);
    for (int64_t i = 0; i < n; i++)
      y[i] = (float)yd[i];
    RowCtx c = {rows, D, rd};
    g_autofree double *g = fd_gradient(softmax_loss, &c, zd, n);
    RowRun s = {.ndim = 2, .shape = {rows, D}};
    g_autofree char *what = describe("softmax_rows_backward", hc, 2, s.shape, "vs differences");
    g_autofree float *out = run_softmax_bwd(hc->be, hc->dtype, &s, y, r, NULL, what);
    /* what is left is the rounding of y (to f32 or f16) and of the output */
    harness_assert_close_d(what, out, g, n, thr_fd(hc));
  }
}

/* A row longer than 256 threads × 256 iterations would allow a shader looping over a row alone,
 * and more rows than one grid dimension holds. */
static void test_softmax_bwd_long(const HarnessCase *hc)
{
  RowRun s = {.ndim = 2, .shape = {2, 70000}, .acc = TRUE, .pad_y = 1, .pad_dy = 3, .pad_dx = 5};
  g_autofree float *y = softmax_output(2, 70000, 5, FALSE, hc->dtype);
  g_autofree float *dy = harness_random(2 * 70000, -1, 1, hc->dtype);
  check_softmax_bwd(hc, &s, y, dy, "long row");
  if (hc->dtype == MEXD_DTYPE_F32) {
    RowRun g = {.ndim = 3, .shape = {7, 10001, 2}, .in_place = TRUE};
    g_autofree float *y2 = softmax_output(70007, 2, 3, FALSE, hc->dtype);
    g_autofree float *dy2 = harness_random(2 * 70007, -1, 1, hc->dtype);
    check_softmax_bwd(hc, &g, y2, dy2, "grid");
  }
}

static void test_softmax_bwd_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {4, 6}, shb[2] = {6, 4}, sh3[3] = {2, 2, 6}, big = 30;
  g_autoptr(MexdTensor) y = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dx = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) yb = zeros(be, dt, 2, shb);
  g_autoptr(MexdTensor) y3 = zeros(be, dt, 3, sh3);
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) lo = sub(store, 0, 2, sh), hi = sub(store, 5, 2, sh);
  GError *error = NULL;
  g_assert_true(mexd_softmax_rows_backward(dx, y, dy, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_softmax_rows_backward(dy, y, dy, TRUE, &error));
  g_assert_no_error(error);

  ASSERT_FAILS(mexd_softmax_rows_backward(NULL, y, dy, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward dx NULL");
  ASSERT_FAILS(mexd_softmax_rows_backward(dx, NULL, dy, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward y NULL");
  ASSERT_FAILS(mexd_softmax_rows_backward(dx, y, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward dy NULL");
  ASSERT_FAILS(mexd_softmax_rows_backward(dx, yb, dy, FALSE, ERR), MEXD_ERROR_SHAPE,
               "softmax_rows_backward y shape");
  ASSERT_FAILS(mexd_softmax_rows_backward(dx, y, y3, FALSE, ERR), MEXD_ERROR_SHAPE,
               "softmax_rows_backward dy rank");
  ASSERT_FAILS_NAMING(mexd_softmax_rows_backward(yb, y, dy, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "softmax_rows_backward dx shape", "argument dx");
  ASSERT_FAILS(mexd_softmax_rows_backward(dx, yi, dy, FALSE, ERR), MEXD_ERROR_DTYPE,
               "softmax_rows_backward i32 y");
  ASSERT_FAILS(mexd_softmax_rows_backward(yi, y, dy, FALSE, ERR), MEXD_ERROR_DTYPE,
               "softmax_rows_backward i32 dx");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) yo = zeros(be, other_float(dt), 2, sh);
    ASSERT_FAILS(mexd_softmax_rows_backward(dx, yo, dy, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "softmax_rows_backward mixed float y");
    ASSERT_FAILS(mexd_softmax_rows_backward(dx, y, yo, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "softmax_rows_backward mixed float dy");
  }
  ASSERT_FAILS(mexd_softmax_rows_backward(y, y, dy, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward dx = y");
  ASSERT_FAILS(mexd_softmax_rows_backward(hi, y, lo, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward dx partly over dy");
  ASSERT_FAILS(mexd_softmax_rows_backward(hi, lo, dy, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "softmax_rows_backward dx partly over y");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) yc = zeros(hc->cpu, dt, 2, sh);
    ASSERT_FAILS(mexd_softmax_rows_backward(dx, yc, dy, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "softmax_rows_backward y on another backend");
    ASSERT_FAILS(mexd_softmax_rows_backward(dx, y, yc, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "softmax_rows_backward dy on another backend");
  }
}

/* ---- layernorm ---- */

typedef struct {
  int ndim;
  int64_t shape[4];
  float eps;
  gboolean gamma, want_dx, want_dg, want_db; /* gamma given; the outputs asked for */
  gboolean acc;
  int64_t pad_x, pad_dy, pad_out;
} LnRun;

typedef struct {
  float *dx, *dg, *db;
} LnOut;

static void ln_out_clear(LnOut *o)
{
  g_clear_pointer(&o->dx, g_free);
  g_clear_pointer(&o->dg, g_free);
  g_clear_pointer(&o->db, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(LnOut, ln_out_clear)

/* dx (old contents init_dx), dgamma and dbeta (old contents init_dg, init_db: they always
 * accumulate). */
static void run_layernorm_bwd(MexdBackend *be, MexdDType dt, const LnRun *l, const float *x,
                              const float *gamma, const float *dy, const float *init_dx,
                              const float *init_dg, const float *init_db, LnOut *out,
                              const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t D = l->shape[l->ndim - 1];
  g_autoptr(MexdTensor) tx = input(be, dt, l->ndim, l->shape, x, l->pad_x);
  g_autoptr(MexdTensor) tdy = input(be, dt, l->ndim, l->shape, dy, l->pad_dy);
  g_autoptr(MexdTensor) tg = l->gamma ? input(be, dt, 1, &D, gamma, l->pad_x) : NULL;
  g_auto(OutBuf) odx = {0};
  g_auto(OutBuf) odg = {0};
  g_auto(OutBuf) odb = {0};
  if (l->want_dx)
    outbuf_init(&odx, be, dt, l->ndim, l->shape, init_dx, l->pad_out);
  if (l->want_dg)
    outbuf_init(&odg, be, dt, 1, &D, init_dg, l->pad_out);
  if (l->want_db)
    outbuf_init(&odb, be, dt, 1, &D, init_db, l->pad_out ? l->pad_out + 2 : 0);
  CHECK_OK(mexd_layernorm_backward(odx.t, odg.t, odb.t, tdy, tx, tg, l->eps, l->acc, &error), what);
  out->dx = l->want_dx ? outbuf_read(&odx, what) : NULL;
  out->dg = l->want_dg ? outbuf_read(&odg, what) : NULL;
  out->db = l->want_db ? outbuf_read(&odb, what) : NULL;
}

/* x̂ of each row, and rstd, in double (biased variance, as the forward). */
static void ln_stats(int64_t rows, int64_t D, const double *x, float eps, double *xh, double *rstd)
{
  for (int64_t r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < D; i++)
      mean += x[r * D + i];
    mean /= (double)D;
    for (int64_t i = 0; i < D; i++)
      var += (x[r * D + i] - mean) * (x[r * D + i] - mean);
    rstd[r] = 1 / sqrt(var / (double)D + (double)eps);
    for (int64_t i = 0; i < D; i++)
      xh[r * D + i] = (x[r * D + i] - mean) * rstd[r];
  }
}

/* The reference: dx (without old contents), dgamma = Σ dy·x̂, dbeta = Σ dy. */
static void ref_layernorm_bwd(int64_t rows, int64_t D, const float *x, const float *gamma,
                              const float *dy, float eps, double *dx, double *dg, double *db)
{
  int64_t n = rows * D;
  g_autofree double *xd = to_double(x, n), *xh = g_new(double, n), *rstd = g_new(double, rows);
  ln_stats(rows, D, xd, eps, xh, rstd);
  for (int64_t i = 0; i < D; i++)
    dg[i] = db[i] = 0;
  for (int64_t r = 0; r < rows; r++) {
    double mg = 0, mgx = 0;
    for (int64_t i = 0; i < D; i++) {
      double g = (double)dy[r * D + i] * (gamma ? gamma[i] : 1.0);
      mg += g / (double)D;
      mgx += g * xh[r * D + i] / (double)D;
      dg[i] += (double)dy[r * D + i] * xh[r * D + i];
      db[i] += dy[r * D + i];
    }
    for (int64_t i = 0; i < D; i++) {
      double g = (double)dy[r * D + i] * (gamma ? gamma[i] : 1.0);
      dx[r * D + i] = rstd[r] * (g - mg - xh[r * D + i] * mgx);
    }
  }
}

static void check_layernorm_bwd(const HarnessCase *hc, const LnRun *l, const float *x,
                                const float *gamma, const float *dy, const char *label)
{
  int64_t n = harness_numel(l->ndim, l->shape), D = l->shape[l->ndim - 1];
  g_autofree float *init_dx = old_contents(n, l->acc, hc->dtype);
  /* dgamma and dbeta always add: they start from random values */
  g_autofree float *init_dg = harness_random(D, -1, 1, hc->dtype);
  g_autofree float *init_db = harness_random(D, -1, 1, hc->dtype);
  g_autofree char *what =
      describe("layernorm_backward", hc, l->ndim, l->shape,
               "eps %g gamma %d dx %d dgamma %d dbeta %d acc %d pads %d/%d/%d (%s)", (double)l->eps,
               l->gamma, l->want_dx, l->want_dg, l->want_db, l->acc, (int)l->pad_x, (int)l->pad_dy,
               (int)l->pad_out, label);
  g_test_message("%s", what);
  g_auto(LnOut) out = {0};
  run_layernorm_bwd(hc->be, hc->dtype, l, x, gamma, dy, init_dx, init_dg, init_db, &out, what);
  double thr = harness_thr(hc, NMSE_F32);
  g_autofree char *wdx = g_strdup_printf("%s: dx", what),
                  *wdg = g_strdup_printf("%s: dgamma", what),
                  *wdb = g_strdup_printf("%s: dbeta", what);
  if (on_cpu(hc)) {
    g_autofree double *dx = g_new(double, n), *dg = g_new(double, D), *db = g_new(double, D);
    ref_layernorm_bwd(n / D, D, x, l->gamma ? gamma : NULL, dy, l->eps, dx, dg, db);
    add_init(dx, init_dx, n);
    add_init(dg, init_dg, D);
    add_init(db, init_db, D);
    if (out.dx)
      harness_assert_close_d(wdx, out.dx, dx, n, thr);
    if (out.dg)
      harness_assert_close_d(wdg, out.dg, dg, D, thr);
    if (out.db)
      harness_assert_close_d(wdb, out.db, db, D, thr);
  } else {
    LnRun c = *l;
    c.pad_x = c.pad_dy = c.pad_out = 0;
    g_auto(LnOut) ref = {0};
    run_layernorm_bwd(hc->cpu, hc->dtype, &c, x, gamma, dy, init_dx, init_dg, init_db, &ref, what);
    if (out.dx) {
      /* dx = rstd·(g − mean g − x̂·mean(g·x̂)): its terms are of rstd times the row's max |g| */
      int64_t rows = n / D;
      g_autofree double *xd = to_double(x, n), *xh = g_new(double, n), *rstd = g_new(double, rows);
      ln_stats(rows, D, xd, l->eps, xh, rstd);
      double power = 0;
      for (int64_t r = 0; r < rows; r++) {
        double mg = 0;
        for (int64_t i = 0; i < D; i++)
          mg = fmax(mg, fabs((double)dy[r * D + i] * (l->gamma ? gamma[i] : 1.0)));
        power += (double)D * (rstd[r] * mg) * (rstd[r] * mg);
      }
      assert_close_floor(hc, wdx, out.dx, ref.dx, n, power);
    }
    if (out.dg)
      harness_assert_close(wdg, out.dg, ref.dg, D, thr);
    if (out.db)
      harness_assert_close(wdb, out.db, ref.db, D, thr);
  }
}

static void random_ln_outputs(LnRun *l)
{
  do {
    l->want_dx = g_test_rand_int_range(0, 4) != 0;
    l->want_dg = g_test_rand_bit();
    l->want_db = g_test_rand_bit();
  } while (!l->want_dx && !l->want_dg && !l->want_db);
}

static void test_layernorm_bwd_random(const HarnessCase *hc)
{
  static const float eps_values[] = {1e-5f, 1e-6f, 1e-3f, 0.1f, 0.0f};
  for (int iter = 0; iter < 12; iter++) {
    int64_t D = harness_size(on_cpu(hc) ? 600 : 2000);
    int64_t rows = harness_size(MAX(1, 30000 / D));
    LnRun l = {0};
    l.ndim = rows_shape(rows, D, l.shape);
    /* eps 0 only where no row is constant (D > 1 and random values) */
    l.eps = eps_values[g_test_rand_int_range(0, D > 1 ? 5 : 4)];
    l.gamma = g_test_rand_bit();
    random_ln_outputs(&l);
    l.acc = g_test_rand_bit();
    l.pad_x = rand_pad();
    l.pad_dy = rand_pad();
    l.pad_out = rand_pad();
    float off = (float)g_test_rand_double_range(-10, 10);
    float sc = (float)g_test_rand_double_range(0.1, 5);
    int64_t n = rows * D;
    g_autofree float *x = harness_random(n, off - sc, off + sc, hc->dtype);
    g_autofree float *gamma = harness_random(D, -2, 2, hc->dtype);
    g_autofree float *dy = harness_random(n, -1, 1, hc->dtype);
    check_layernorm_bwd(hc, &l, x, gamma, dy, "random");
  }
}

typedef struct {
  int64_t rows, D;
  float eps;
  const double *r;
} LnCtx;

/* L(x, gamma, beta) = Σ r ⊙ (x̂·gamma + beta), v = [x (rows·D), gamma (D), beta (D)]. */
static double layernorm_loss(const double *v, const void *ctx)
{
  const LnCtx *c = ctx;
  int64_t n = c->rows * c->D;
  g_autofree double *xh = g_new(double, n), *rstd = g_new(double, c->rows);
  ln_stats(c->rows, c->D, v, c->eps, xh, rstd);
  double L = 0;
  for (int64_t i = 0; i < n; i++)
    L += c->r[i] * (xh[i] * v[n + i % c->D] + v[n + c->D + i % c->D]);
  return L;
}

/* dx, dgamma and dbeta against differences of L in x, gamma and beta, with gamma and without
 * (gamma = 1), and with dx NULL. */
static void test_layernorm_bwd_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[][2] = {{1, 1}, {3, 7}, {2, 33}, {4, 2}, {1, 64}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++)
    for (int with_gamma = 0; with_gamma < 2; with_gamma++) {
      int64_t rows = sizes[k][0], D = sizes[k][1], n = rows * D;
      g_autofree float *x = harness_random(n, -2, 3, hc->dtype);
      g_autofree float *gamma = harness_random(D, -2, 2, hc->dtype);
      g_autofree float *r = harness_random(n, -1, 1, hc->dtype);
      LnRun l = {.ndim = 2,
                 .shape = {rows, D},
                 .eps = 1e-3f,
                 .gamma = with_gamma,
                 .want_dx = k != 4,
                 .want_dg = TRUE,
                 .want_db = TRUE};
      g_autofree double *v = g_new(double, n + 2 * D), *rd = to_double(r, n);
      for (int64_t i = 0; i < n; i++)
        v[i] = x[i];
      for (int64_t i = 0; i < D; i++) {
        v[n + i] = with_gamma ? gamma[i] : 1.0;
        v[n + D + i] = 0.25 * (double)i;
      }
      LnCtx c = {rows, D, l.eps, rd};
      g_autofree double *g = fd_gradient(layernorm_loss, &c, v, n + 2 * D);
      g_autofree char *what = describe("layernorm_backward", hc, 2, l.shape,
                                       "gamma %d dx %d vs differences", with_gamma, l.want_dx);
      g_autofree float *zero = g_new0(float, D);
      g_auto(LnOut) out = {0};
      run_layernorm_bwd(hc->be, hc->dtype, &l, x, gamma, r, NULL, zero, zero, &out, what);
      if (out.dx)
        harness_assert_close_d(what, out.dx, g, n, thr_fd(hc));
      harness_assert_close_d(what, out.dg, g + n, D, thr_fd(hc));
      harness_assert_close_d(what, out.db, g + n + D, D, thr_fd(hc));
    }
}

/* Rows with a large mean against their spread; D = 1 (x̂ = 0: dx is exactly 0); constant rows;
 * a long row; more rows than a grid dimension and than the chunks of the parameter sums. */
static void test_layernorm_bwd_special(const HarnessCase *hc)
{
  MexdDType dt = hc->dtype;
  {
    LnRun l = {.ndim = 2,
               .shape = {3, 3000},
               .eps = 1e-5f,
               .gamma = TRUE,
               .want_dx = TRUE,
               .want_dg = TRUE,
               .want_db = TRUE,
               .acc = TRUE,
               .pad_x = 1};
    g_autofree float *x = harness_random(9000, 999, 1001, dt);
    g_autofree float *gamma = harness_random(3000, 0.5f, 1.5f, dt);
    g_autofree float *dy = harness_random(9000, -1, 1, dt);
    check_layernorm_bwd(hc, &l, x, gamma, dy, "large mean");
  }
  {
    LnRun l = {.ndim = 2,
               .shape = {9, 1},
               .eps = 1e-5f,
               .gamma = TRUE,
               .want_dx = TRUE,
               .want_dg = TRUE,
               .want_db = TRUE};
    float x[9], gamma[1] = {2.0f}, dy[9];
    for (int i = 0; i < 9; i++) {
      x[i] = (float)i - 4.0f;
      dy[i] = (float)i * 0.5f - 1.0f;
    }
    float dg0[1] = {0}, db0[1] = {0.5f};
    g_auto(LnOut) out = {0};
    run_layernorm_bwd(hc->be, dt, &l, x, gamma, dy, NULL, dg0, db0, &out, "layernorm D = 1");
    for (int i = 0; i < 9; i++)
      g_assert_cmpfloat(fabsf(out.dx[i]), <=, 1e-6f);
    g_assert_cmpfloat(fabsf(out.dg[0]), <=, 1e-6f);
    g_assert_cmpfloat_with_epsilon(out.db[0], 0.5f + 9.0f * 1.0f, 1e-3f); /* Σdy = 9 */
  }
  {
    /* constant rows: x̂ = 0, dx = rstd·(g − mean g) with rstd = 1/√eps */
    LnRun l = {.ndim = 2, .shape = {3, 5}, .eps = 1e-2f, .gamma = TRUE, .want_dx = TRUE};
    float x[15];
    for (int i = 0; i < 15; i++)
      x[i] = (float)(i / 5) * 3.0f - 2.0f;
    g_autofree float *gamma = harness_random(5, -2, 2, dt);
    g_autofree float *dy = harness_random(15, -1, 1, dt);
    check_layernorm_bwd(hc, &l, x, gamma, dy, "constant rows");
  }
  {
    LnRun l = {.ndim = 2,
               .shape = {2, 70000},
               .eps = 1e-5f,
               .gamma = TRUE,
               .want_dx = TRUE,
               .want_dg = TRUE,
               .want_db = TRUE,
               .pad_dy = 3,
               .pad_out = 1};
    g_autofree float *x = harness_random(140000, -3, 3, dt);
    g_autofree float *gamma = harness_random(70000, -2, 2, dt);
    g_autofree float *dy = harness_random(140000, -1, 1, dt);
    check_layernorm_bwd(hc, &l, x, gamma, dy, "long row");
  }
  if (dt == MEXD_DTYPE_F32) { /* (slow on lavapipe: a workgroup per row for the statistics) */
    LnRun l = {.ndim = 3,
               .shape = {7, 10001, 3},
               .eps = 1e-5f,
               .want_dx = TRUE,
               .want_dg = TRUE,
               .want_db = TRUE,
               .acc = TRUE};
    g_autofree float *x = harness_random(210021, -3, 3, dt);
    g_autofree float *dy = harness_random(210021, -1, 1, dt);
    check_layernorm_bwd(hc, &l, x, NULL, dy, "many rows");
  }
}

static void test_layernorm_bwd_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {4, 6}, shb[2] = {4, 5}, D = 6, five = 5, big = 40;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dx = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) gamma = zeros(be, dt, 1, &D);
  g_autoptr(MexdTensor) dg = zeros(be, dt, 1, &D);
  g_autoptr(MexdTensor) db = zeros(be, dt, 1, &D);
  g_autoptr(MexdTensor) xb = zeros(be, dt, 2, shb);
  g_autoptr(MexdTensor) g5 = zeros(be, dt, 1, &five);
  g_autoptr(MexdTensor) g2d = zeros(be, dt, 2, (int64_t[]){1, 6});
  g_autoptr(MexdTensor) xi = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) gi = zeros(be, MEXD_DTYPE_I32, 1, &D);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) p0 = sub(store, 0, 1, &D), p3 = sub(store, 3, 1, &D);
  g_autoptr(MexdTensor) m0 = sub(store, 0, 2, sh), m1 = sub(store, 1, 2, sh);
  g_autoptr(MexdTensor) pin = sub(store, 10, 1, &D); /* inside m0 */
  GError *error = NULL;
  g_assert_true(mexd_layernorm_backward(dx, dg, db, dy, x, gamma, 1e-5f, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_layernorm_backward(NULL, dg, NULL, dy, x, NULL, 1e-5f, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_layernorm_backward(dx, NULL, NULL, dy, x, NULL, 0.0f, TRUE, &error));
  g_assert_no_error(error);

  ASSERT_FAILS(mexd_layernorm_backward(NULL, NULL, NULL, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward nothing wanted");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, NULL, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dy NULL");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, NULL, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward x NULL");
  const float bad_eps[] = {-1e-5f, NAN, INFINITY};
  for (guint i = 0; i < G_N_ELEMENTS(bad_eps); i++)
    ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, x, gamma, bad_eps[i], FALSE, ERR),
                 MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward bad eps");
  ASSERT_FAILS_NAMING(mexd_layernorm_backward(dx, dg, db, dy, xb, gamma, 1e-5f, FALSE, ERR),
                      MEXD_ERROR_SHAPE, "layernorm_backward x shape", "argument x");
  ASSERT_FAILS_NAMING(mexd_layernorm_backward(xb, dg, db, dy, x, gamma, 1e-5f, FALSE, ERR),
                      MEXD_ERROR_SHAPE, "layernorm_backward dx shape", "argument dx");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, x, g5, 1e-5f, FALSE, ERR), MEXD_ERROR_SHAPE,
               "layernorm_backward gamma length");
  ASSERT_FAILS(mexd_layernorm_backward(dx, g5, db, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_SHAPE, "layernorm_backward dgamma length");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, g2d, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_SHAPE, "layernorm_backward dbeta 2-D");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, xi, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_DTYPE, "layernorm_backward i32 dy");
  ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, xi, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_DTYPE, "layernorm_backward i32 x");
  ASSERT_FAILS(mexd_layernorm_backward(dx, gi, db, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_DTYPE, "layernorm_backward i32 dgamma");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, sh);
    g_autoptr(MexdTensor) go = zeros(be, other_float(dt), 1, &D);
    ASSERT_FAILS(mexd_layernorm_backward(xo, dg, db, dy, x, gamma, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_DTYPE, "layernorm_backward mixed float dx");
    ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, x, go, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_DTYPE, "layernorm_backward mixed float gamma");
    ASSERT_FAILS(mexd_layernorm_backward(dx, dg, go, dy, x, gamma, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_DTYPE, "layernorm_backward mixed float dbeta");
  }
  /* no output over an input or another output, dx = dy included */
  ASSERT_FAILS(mexd_layernorm_backward(dy, dg, db, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dx = dy");
  ASSERT_FAILS(mexd_layernorm_backward(x, dg, db, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dx = x");
  ASSERT_FAILS(mexd_layernorm_backward(m1, NULL, NULL, dy, m0, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dx partly over x");
  ASSERT_FAILS(mexd_layernorm_backward(dx, p0, p3, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dgamma partly over dbeta");
  ASSERT_FAILS(mexd_layernorm_backward(dx, gamma, db, dy, x, gamma, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dgamma = gamma");
  ASSERT_FAILS(mexd_layernorm_backward(NULL, NULL, pin, m0, x, NULL, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dbeta inside dy");
  ASSERT_FAILS(mexd_layernorm_backward(m0, pin, NULL, dy, x, NULL, 1e-5f, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "layernorm_backward dgamma inside dx");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, sh);
    g_autoptr(MexdTensor) gc = zeros(hc->cpu, dt, 1, &D);
    ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, xc, gamma, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_BACKEND, "layernorm_backward x on another backend");
    ASSERT_FAILS(mexd_layernorm_backward(dx, dg, db, dy, x, gc, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_BACKEND, "layernorm_backward gamma on another backend");
    ASSERT_FAILS(mexd_layernorm_backward(dx, gc, db, dy, x, gamma, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_BACKEND, "layernorm_backward dgamma on another backend");
    ASSERT_FAILS(mexd_layernorm_backward(xc, dg, db, dy, x, gamma, 1e-5f, FALSE, ERR),
                 MEXD_ERROR_BACKEND, "layernorm_backward dx on another backend");
  }
}

/* ---- sum_rows ---- */

static float *run_sum_rows(MexdBackend *be, MexdDType dt, int ndim, const int64_t *shape,
                           const float *x, gboolean acc, const float *init, int64_t pad_x,
                           int64_t pad_y, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t N = shape[ndim - 1];
  g_autoptr(MexdTensor) tx = input(be, dt, ndim, shape, x, pad_x);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 1, &N, init, pad_y);
  CHECK_OK(mexd_sum_rows(o.t, tx, acc, &error), what);
  return outbuf_read(&o, what);
}

static void check_sum_rows(const HarnessCase *hc, int ndim, const int64_t *shape, const float *x,
                           gboolean acc, const char *label)
{
  int64_t N = shape[ndim - 1], M = harness_numel(ndim, shape) / N;
  int64_t pad_x = rand_pad(), pad_y = rand_pad();
  g_autofree float *init = old_contents(N, acc, hc->dtype);
  g_autofree char *what = describe("sum_rows", hc, ndim, shape, "acc %d pads %d/%d (%s)", acc,
                                   (int)pad_x, (int)pad_y, label);
  g_autofree float *out =
      run_sum_rows(hc->be, hc->dtype, ndim, shape, x, acc, init, pad_x, pad_y, what);
  if (on_cpu(hc)) {
    g_autofree double *ref = g_new0(double, N);
    for (int64_t r = 0; r < M; r++)
      for (int64_t j = 0; j < N; j++)
        ref[j] += x[r * N + j];
    add_init(ref, init, N);
    harness_assert_close_d(what, out, ref, N, harness_thr(hc, NMSE_F32));
  } else {
    g_autofree float *ref = run_sum_rows(hc->cpu, hc->dtype, ndim, shape, x, acc, init, 0, 0, what);
    harness_assert_close(what, out, ref, N, harness_thr(hc, NMSE_F32));
  }
}

static void test_sum_rows_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    int64_t N = harness_size(1000), M = harness_size(MAX(1, 40000 / N));
    int64_t shape[4];
    int ndim = rows_shape(M, N, shape);
    g_autofree float *x = harness_random(M * N, -1, 1, hc->dtype);
    check_sum_rows(hc, ndim, shape, x, g_test_rand_bit(), "random");
  }
}

typedef struct {
  int64_t M, N;
  const double *r;
} SumCtx;

/* The forward whose backward sum_rows is: b [N] broadcast over M rows; L = Σ r ⊙ b. */
static double broadcast_loss(const double *b, const void *ctx)
{
  const SumCtx *c = ctx;
  double L = 0;
  for (int64_t i = 0; i < c->M; i++)
    for (int64_t j = 0; j < c->N; j++)
      L += c->r[i * c->N + j] * b[j];
  return L;
}

static void test_sum_rows_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[][2] = {{1, 1}, {7, 3}, {65, 9}, {3, 257}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    int64_t M = sizes[k][0], N = sizes[k][1];
    g_autofree float *r = harness_random(M * N, -1, 1, hc->dtype);
    g_autofree float *b = harness_random(N, -1, 1, hc->dtype);
    g_autofree double *rd = to_double(r, M * N), *bd = to_double(b, N);
    SumCtx c = {M, N, rd};
    g_autofree double *g = fd_gradient(broadcast_loss, &c, bd, N);
    int64_t shape[2] = {M, N};
    g_autofree char *what = describe("sum_rows", hc, 2, shape, "vs differences of a broadcast");
    g_autofree float *out = run_sum_rows(hc->be, hc->dtype, 2, shape, r, FALSE, NULL, 0, 0, what);
    harness_assert_close_d(what, out, g, N, thr_fd(hc));
  }
}

/* Reductions a shader could not take in one loop per column: 70,000 and 300,000 rows (many
 * chunks, then a second pass), 64 rows (one chunk: straight to y), wide rows. */
static void test_sum_rows_long(const HarnessCase *hc)
{
  const int64_t sizes[][2] = {{70000, 3}, {300000, 1}, {64, 700}, {2, 70001}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    int64_t shape[2] = {sizes[k][0], sizes[k][1]};
    g_autofree float *x = harness_random(shape[0] * shape[1], -1, 1, hc->dtype);
    check_sum_rows(hc, 2, shape, x, k % 2 == 0, "long");
  }
}

static void test_sum_rows_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {4, 6}, N = 6, seven = 7, big = 30;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) y = zeros(be, dt, 1, &N);
  g_autoptr(MexdTensor) y7 = zeros(be, dt, 1, &seven);
  g_autoptr(MexdTensor) y2d = zeros(be, dt, 2, (int64_t[]){1, 6});
  g_autoptr(MexdTensor) xi = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 1, &N);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) xs = sub(store, 0, 2, sh), ys = sub(store, 20, 1, &N);
  GError *error = NULL;
  g_assert_true(mexd_sum_rows(y, x, TRUE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_sum_rows(NULL, x, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT, "sum_rows y NULL");
  ASSERT_FAILS(mexd_sum_rows(y, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT, "sum_rows x NULL");
  ASSERT_FAILS_NAMING(mexd_sum_rows(y7, x, FALSE, ERR), MEXD_ERROR_SHAPE, "sum_rows y length",
                      "argument y");
  ASSERT_FAILS(mexd_sum_rows(y2d, x, FALSE, ERR), MEXD_ERROR_SHAPE, "sum_rows y 2-D");
  ASSERT_FAILS(mexd_sum_rows(y, xi, FALSE, ERR), MEXD_ERROR_DTYPE, "sum_rows i32 x");
  ASSERT_FAILS(mexd_sum_rows(yi, x, FALSE, ERR), MEXD_ERROR_DTYPE, "sum_rows i32 y");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, sh);
    ASSERT_FAILS(mexd_sum_rows(y, xo, FALSE, ERR), MEXD_ERROR_DTYPE, "sum_rows mixed float x");
  }
  ASSERT_FAILS(mexd_sum_rows(ys, xs, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "sum_rows y inside x");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, sh);
    g_autoptr(MexdTensor) yc = zeros(hc->cpu, dt, 1, &N);
    ASSERT_FAILS(mexd_sum_rows(y, xc, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "sum_rows x on another backend");
    ASSERT_FAILS(mexd_sum_rows(yc, x, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "sum_rows y on another backend");
  }
}

/* ---- scatter_add_rows ---- */

/* An i32 tensor [n] holding `data`, as a view `pad` elements into a larger one. */
static MexdTensor *idx_tensor(MexdBackend *be, int64_t n, const int32_t *data, int64_t pad)
{
  g_autoptr(GError) error = NULL;
  int64_t total = n + pad;
  g_autofree int32_t *buf = g_new(int32_t, total);
  for (int64_t i = 0; i < pad; i++)
    buf[i] = -7; /* a bad index: were it read, the op would fail */
  memcpy(buf + pad, data, sizeof(int32_t) * (size_t)n);
  g_autoptr(MexdTensor) base = harness_tensor_i32(be, 1, &total, buf);
  MexdTensor *t = mexd_tensor_rows(base, pad, n, &error);
  g_assert_no_error(error);
  return t;
}

typedef struct {
  int64_t M, N, K;
  gboolean acc;
  int64_t pad_x, pad_i, pad_y;
} ScatterRun;

static float *run_scatter(MexdBackend *be, MexdDType dt, const ScatterRun *s, const float *x,
                          const int32_t *idx, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t xs[2] = {s->K, s->N}, ys[2] = {s->M, s->N};
  g_autoptr(MexdTensor) tx = input(be, dt, 2, xs, x, s->pad_x);
  g_autoptr(MexdTensor) ti = idx_tensor(be, s->K, idx, s->pad_i);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 2, ys, init, s->pad_y);
  CHECK_OK(mexd_scatter_add_rows(o.t, tx, ti, s->acc, &error), what);
  return outbuf_read(&o, what);
}

/* y (without old contents) = Σ over the good indices (bad ones dropped, as vulkan does). */
static void ref_scatter(const ScatterRun *s, const float *x, const int32_t *idx, double *y)
{
  for (int64_t i = 0; i < s->M * s->N; i++)
    y[i] = 0;
  for (int64_t i = 0; i < s->K; i++)
    if (idx[i] >= 0 && idx[i] < s->M)
      for (int64_t j = 0; j < s->N; j++)
        y[idx[i] * s->N + j] += x[i * s->N + j];
}

static void check_scatter(const HarnessCase *hc, const ScatterRun *s, const float *x,
                          const int32_t *idx, const char *label)
{
  int64_t ny = s->M * s->N;
  g_autofree float *init = old_contents(ny, s->acc, hc->dtype);
  g_autofree char *what = describe("scatter_add_rows", hc, 2, (int64_t[]){s->M, s->N},
                                   "K %" G_GINT64_FORMAT " acc %d pads %d/%d/%d (%s)", s->K, s->acc,
                                   (int)s->pad_x, (int)s->pad_i, (int)s->pad_y, label);
  g_autofree float *out = run_scatter(hc->be, hc->dtype, s, x, idx, init, what);
  if (on_cpu(hc)) {
    g_autofree double *ref = g_new(double, ny);
    ref_scatter(s, x, idx, ref);
    add_init(ref, init, ny);
    harness_assert_close_d(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  } else {
    ScatterRun c = *s;
    c.pad_x = c.pad_i = c.pad_y = 0;
    g_autofree float *ref = run_scatter(hc->cpu, hc->dtype, &c, x, idx, init, what);
    harness_assert_close(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  }
  if (!s->acc) /* rows no index names are exactly zero (the NaN that was there is gone) */
    for (int64_t m = 0; m < s->M; m++) {
      gboolean named = FALSE;
      for (int64_t i = 0; i < s->K && !named; i++)
        named = idx[i] == m;
      for (int64_t j = 0; !named && j < s->N; j++)
        if (out[m * s->N + j] != 0.0f)
          g_error("%s: row %" G_GINT64_FORMAT " is named by no index but holds %g", what, m,
                  out[m * s->N + j]);
    }
}

/* Indices in [0, M): uniform, or crowded onto a few rows (whole tiles of matches). */
static int32_t *random_indices(int64_t K, int64_t M)
{
  int32_t *idx = g_new(int32_t, K);
  int64_t few = g_test_rand_int_range(1, 4);
  int64_t spread = g_test_rand_bit() ? M : MIN(M, few);
  for (int64_t i = 0; i < K; i++)
    idx[i] = (int32_t)g_test_rand_int_range(0, (gint32)spread);
  return idx;
}

static void test_scatter_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    ScatterRun s = {.M = harness_size(300), .N = harness_size(600), .K = harness_size(600)};
    s.acc = g_test_rand_bit();
    s.pad_x = rand_pad();
    s.pad_i = rand_pad();
    s.pad_y = rand_pad();
    g_autofree float *x = harness_random(s.K * s.N, -1, 1, hc->dtype);
    g_autofree int32_t *idx = random_indices(s.K, s.M);
    check_scatter(hc, &s, x, idx, "random");
  }
}

typedef struct {
  const ScatterRun *s;
  const int32_t *idx;
  const double *r;
} ScatterCtx;

/* The forward whose backward scatter_add is: z = gather_rows(v, idx); L = Σ r ⊙ z. */
static double gather_loss(const double *v, const void *ctx)
{
  const ScatterCtx *c = ctx;
  double L = 0;
  for (int64_t i = 0; i < c->s->K; i++)
    for (int64_t j = 0; j < c->s->N; j++)
      L += c->r[i * c->s->N + j] * v[c->idx[i] * c->s->N + j];
  return L;
}

static void test_scatter_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[][3] = {{1, 1, 1}, {5, 3, 12}, {9, 7, 4}, {3, 257, 9}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    ScatterRun s = {.M = sizes[k][0], .N = sizes[k][1], .K = sizes[k][2]};
    g_autofree float *r = harness_random(s.K * s.N, -1, 1, hc->dtype);
    g_autofree float *v = harness_random(s.M * s.N, -1, 1, hc->dtype);
    g_autofree int32_t *idx = random_indices(s.K, s.M);
    g_autofree double *rd = to_double(r, s.K * s.N), *vd = to_double(v, s.M * s.N);
    ScatterCtx c = {&s, idx, rd};
    g_autofree double *g = fd_gradient(gather_loss, &c, vd, s.M * s.N);
    g_autofree char *what =
        describe("scatter_add_rows", hc, 2, (int64_t[]){s.M, s.N}, "vs differences of a gather");
    g_autofree float *out = run_scatter(hc->be, hc->dtype, &s, r, idx, NULL, what);
    harness_assert_close_d(what, out, g, s.M * s.N, thr_fd(hc));
  }
}

/* More indices than one dispatch takes on a CPU device (16,384: three dispatches carrying
 * running sums), all on a few rows; and more destination rows than a grid dimension. */
static void test_scatter_long(const HarnessCase *hc)
{
  for (int acc = 0; acc < 2; acc++) {
    ScatterRun s = {.M = 7, .N = 5, .K = 40000, .acc = acc, .pad_x = 1, .pad_i = 3, .pad_y = 1};
    g_autofree float *x = harness_random(s.K * s.N, -1, 1, hc->dtype);
    g_autofree int32_t *idx = g_new(int32_t, s.K);
    for (int64_t i = 0; i < s.K; i++)
      idx[i] = (int32_t)(i % 3 == 0 ? 6 : g_test_rand_int_range(0, 3));
    check_scatter(hc, &s, x, idx, "long index list");
  }
  if (hc->dtype == MEXD_DTYPE_F32) {
    ScatterRun s = {.M = 70001, .N = 1, .K = 300};
    g_autofree float *x = harness_random(s.K, -1, 1, hc->dtype);
    g_autofree int32_t *idx = g_new(int32_t, s.K);
    for (int64_t i = 0; i < s.K; i++)
      idx[i] = (int32_t)g_test_rand_int_range(0, 70001);
    idx[0] = 70000;
    check_scatter(hc, &s, x, idx, "grid");
  }
}

/* A bad index: cpu fails at once and writes nothing; vulkan fails at the next sync and drops
 * that contribution (also for one past the first dispatch of a CPU device); a good call after
 * it syncs cleanly. */
static void test_scatter_bad_index(const HarnessCase *hc)
{
  const struct {
    int64_t M, N, K, bad_at;
    int32_t bad;
  } cases[] = {{5, 3, 6, 2, 5}, {5, 300, 9, 8, -1}, {3, 1, 20000, 19000, 3}};
  for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
    ScatterRun s = {.M = cases[c].M, .N = cases[c].N, .K = cases[c].K, .acc = c == 1};
    g_autofree float *x = harness_random(s.K * s.N, -1, 1, hc->dtype);
    g_autofree float *init = harness_random(s.M * s.N, -1, 1, hc->dtype);
    g_autofree int32_t *idx = random_indices(s.K, s.M);
    idx[cases[c].bad_at] = cases[c].bad;
    int64_t xs[2] = {s.K, s.N}, ys[2] = {s.M, s.N};
    g_autoptr(MexdTensor) tx = harness_tensor(hc->be, hc->dtype, 2, xs, x);
    g_autoptr(MexdTensor) ti = harness_tensor_i32(hc->be, 1, &s.K, idx);
    g_autoptr(MexdTensor) ty = harness_tensor(hc->be, hc->dtype, 2, ys, init);
    GError *error = NULL;
    if (on_cpu(hc)) {
      g_assert_false(mexd_scatter_add_rows(ty, tx, ti, s.acc, &error));
      g_assert_nonnull(error);
      g_autofree char *want =
          g_strdup_printf("idx[%" G_GINT64_FORMAT "] = %d", cases[c].bad_at, (int)cases[c].bad);
      if (!strstr(error->message, want))
        g_error("scatter_add_rows bad index: \"%s\" does not name %s", error->message, want);
      harness_assert_error(error, MEXD_ERROR_INDEX, "scatter_add_rows bad index (cpu)");
      g_autofree float *out = harness_read(ty);
      g_assert_cmpmem(out, sizeof(float) * (size_t)(s.M * s.N), init,
                      sizeof(float) * (size_t)(s.M * s.N));
      continue;
    }
    g_assert_true(mexd_scatter_add_rows(ty, tx, ti, s.acc, &error));
    g_assert_no_error(error);
    g_assert_false(mexd_backend_sync(hc->be, &error));
    harness_assert_error(error, MEXD_ERROR_INDEX, "scatter_add_rows bad index (sync)");
    error = NULL;
    g_autofree float *out = harness_read(ty);
    g_autofree double *ref = g_new(double, s.M *s.N);
    ref_scatter(&s, x, idx, ref);
    if (s.acc)
      add_init(ref, init, s.M * s.N);
    harness_assert_close_d("scatter_add_rows bad index: the good contributions", out, ref,
                           s.M * s.N, harness_thr(hc, NMSE_F32));
    idx[cases[c].bad_at] = 0;
    g_autoptr(MexdTensor) tg = harness_tensor_i32(hc->be, 1, &s.K, idx);
    g_assert_true(mexd_scatter_add_rows(ty, tx, tg, s.acc, &error));
    g_assert_no_error(error);
    g_assert_true(mexd_backend_sync(hc->be, &error));
    g_assert_no_error(error);
  }
}

static void test_scatter_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t xs[2] = {4, 3}, ys[2] = {5, 3}, K = 4, five = 5, big = 40;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, xs);
  g_autoptr(MexdTensor) y = zeros(be, dt, 2, ys);
  g_autoptr(MexdTensor) idx = zeros(be, MEXD_DTYPE_I32, 1, &K);
  g_autoptr(MexdTensor) idx5 = zeros(be, MEXD_DTYPE_I32, 1, &five);
  g_autoptr(MexdTensor) idx2d = zeros(be, MEXD_DTYPE_I32, 2, (int64_t[]){4, 1});
  g_autoptr(MexdTensor) idxf = zeros(be, dt, 1, &K);
  g_autoptr(MexdTensor) x4 = zeros(be, dt, 2, (int64_t[]){4, 4});
  g_autoptr(MexdTensor) y1d = zeros(be, dt, 1, (int64_t[]){15});
  g_autoptr(MexdTensor) y3d = zeros(be, dt, 3, (int64_t[]){1, 5, 3});
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 2, ys);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) xs_ = sub(store, 0, 2, xs), ys_ = sub(store, 10, 2, ys);
  GError *error = NULL;
  g_assert_true(mexd_scatter_add_rows(y, x, idx, FALSE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_scatter_add_rows(NULL, x, idx, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "scatter_add_rows y NULL");
  ASSERT_FAILS(mexd_scatter_add_rows(y, NULL, idx, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "scatter_add_rows x NULL");
  ASSERT_FAILS(mexd_scatter_add_rows(y, x, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "scatter_add_rows idx NULL");
  ASSERT_FAILS(mexd_scatter_add_rows(y, x, idx5, FALSE, ERR), MEXD_ERROR_SHAPE,
               "scatter_add_rows idx longer than x");
  ASSERT_FAILS(mexd_scatter_add_rows(y, x, idx2d, FALSE, ERR), MEXD_ERROR_SHAPE,
               "scatter_add_rows idx 2-D");
  ASSERT_FAILS_NAMING(mexd_scatter_add_rows(y, x4, idx, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "scatter_add_rows x width", "argument x");
  ASSERT_FAILS(mexd_scatter_add_rows(y1d, x, idx, FALSE, ERR), MEXD_ERROR_SHAPE,
               "scatter_add_rows y 1-D");
  ASSERT_FAILS(mexd_scatter_add_rows(y3d, x, idx, FALSE, ERR), MEXD_ERROR_SHAPE,
               "scatter_add_rows y 3-D");
  ASSERT_FAILS(mexd_scatter_add_rows(y, x, idxf, FALSE, ERR), MEXD_ERROR_DTYPE,
               "scatter_add_rows float idx");
  ASSERT_FAILS(mexd_scatter_add_rows(yi, x, idx, FALSE, ERR), MEXD_ERROR_DTYPE,
               "scatter_add_rows i32 y");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, xs);
    ASSERT_FAILS(mexd_scatter_add_rows(y, xo, idx, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "scatter_add_rows mixed float x");
  }
  ASSERT_FAILS(mexd_scatter_add_rows(ys_, xs_, idx, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "scatter_add_rows y partly over x");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) ic = zeros(hc->cpu, MEXD_DTYPE_I32, 1, &K);
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, xs);
    ASSERT_FAILS(mexd_scatter_add_rows(y, x, ic, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "scatter_add_rows idx on another backend");
    ASSERT_FAILS(mexd_scatter_add_rows(y, xc, idx, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "scatter_add_rows x on another backend");
  }
}

/* ---- slice ---- */

typedef struct {
  int ndim, axis; /* axis as passed (may be negative) */
  int64_t xs[4], ys[4], start;
  gboolean acc;
  int64_t pad_x, pad_y;
} SliceRun;

static float *run_slice(MexdBackend *be, MexdDType dt, const SliceRun *s, const float *x,
                        const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) tx = input(be, dt, s->ndim, s->xs, x, s->pad_x);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, s->ndim, s->ys, init, s->pad_y);
  CHECK_OK(mexd_slice(o.t, tx, s->axis, s->start, s->acc, &error), what);
  return outbuf_read(&o, what);
}

/* Element e of y as an element of x. */
static int64_t slice_src(const SliceRun *s, int64_t e)
{
  int ax = s->axis < 0 ? s->axis + s->ndim : s->axis;
  int64_t inner = 1;
  for (int k = ax + 1; k < s->ndim; k++)
    inner *= s->xs[k];
  int64_t yrow = s->ys[ax] * inner, xrow = s->xs[ax] * inner;
  return (e / yrow) * xrow + s->start * inner + e % yrow;
}

static void check_slice(const HarnessCase *hc, const SliceRun *s, const float *x, const char *label)
{
  int64_t ny = harness_numel(s->ndim, s->ys);
  g_autofree float *init = old_contents(ny, s->acc, hc->dtype);
  g_autofree char *what =
      describe("slice", hc, s->ndim, s->xs,
               "axis %d start %" G_GINT64_FORMAT " len %" G_GINT64_FORMAT " acc %d pads %d/%d (%s)",
               s->axis, s->start, s->ys[s->axis < 0 ? s->axis + s->ndim : s->axis], s->acc,
               (int)s->pad_x, (int)s->pad_y, label);
  g_autofree float *out = run_slice(hc->be, hc->dtype, s, x, init, what);
  g_autofree double *ref = g_new(double, ny);
  for (int64_t e = 0; e < ny; e++)
    ref[e] = x[slice_src(s, e)];
  if (!s->acc) { /* a copy: exact on every backend */
    for (int64_t e = 0; e < ny; e++)
      if (out[e] != (float)ref[e])
        g_error("%s: y[%" G_GINT64_FORMAT "] = %g, want %g", what, e, out[e], ref[e]);
    return;
  }
  add_init(ref, init, ny);
  if (on_cpu(hc)) {
    harness_assert_close_d(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  } else {
    SliceRun c = *s;
    c.pad_x = c.pad_y = 0;
    g_autofree float *cref = run_slice(hc->cpu, hc->dtype, &c, x, init, what);
    harness_assert_close(what, out, cref, ny, harness_thr(hc, NMSE_F32));
  }
}

static void random_slice(SliceRun *s)
{
  s->ndim = random_shape(s->xs);
  int ax = g_test_rand_int_range(0, s->ndim);
  s->axis = g_test_rand_bit() ? ax : ax - s->ndim;
  memcpy(s->ys, s->xs, sizeof s->xs);
  s->ys[ax] = g_test_rand_int_range(1, (gint32)s->xs[ax] + 1);
  s->start = g_test_rand_int_range(0, (gint32)(s->xs[ax] - s->ys[ax]) + 1);
  s->acc = g_test_rand_bit();
  s->pad_x = rand_pad();
  s->pad_y = rand_pad();
}

static void test_slice_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 16; iter++) {
    SliceRun s = {0};
    random_slice(&s);
    int64_t nx = harness_numel(s.ndim, s.xs);
    g_autofree float *x = harness_random(nx, -4, 4, hc->dtype);
    check_slice(hc, &s, x, "random");
  }
  /* the whole of x, and one element at either end */
  SliceRun w = {.ndim = 2, .axis = -1, .xs = {3, 5}, .ys = {3, 5}, .pad_x = 1};
  float x[15];
  for (int i = 0; i < 15; i++)
    x[i] = (float)i;
  check_slice(hc, &w, x, "whole");
  SliceRun e = {.ndim = 2, .axis = 0, .xs = {3, 5}, .ys = {1, 5}, .start = 2, .pad_y = 3};
  check_slice(hc, &e, x, "last row");
  e.axis = 1;
  e.ys[0] = 3;
  e.ys[1] = 1;
  e.start = 0;
  check_slice(hc, &e, x, "first column");
}

typedef struct {
  const SliceRun *s;
  const double *r;
} SliceCtx;

/* The forward whose backward slice is: v placed into zeros of x's shape at [start, start + len)
 * along the axis (a concat with constant parts); L = Σ r ⊙ that. */
static double place_loss(const double *v, const void *ctx)
{
  const SliceCtx *c = ctx;
  double L = 0;
  for (int64_t e = 0; e < harness_numel(c->s->ndim, c->s->ys); e++)
    L += c->r[slice_src(c->s, e)] * v[e];
  return L;
}

static void test_slice_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  for (int iter = 0; iter < 4; iter++) {
    SliceRun s = {.ndim = 3, .xs = {3, 4, 5}};
    s.axis = iter - 3; /* −3, −2, −1, 0 */
    int ax = s.axis < 0 ? s.axis + 3 : s.axis;
    memcpy(s.ys, s.xs, sizeof s.xs);
    s.ys[ax] = 2;
    s.start = 1;
    int64_t nx = 60, ny = harness_numel(3, s.ys);
    g_autofree float *r = harness_random(nx, -1, 1, hc->dtype);
    g_autofree float *v = harness_random(ny, -1, 1, hc->dtype);
    g_autofree double *rd = to_double(r, nx), *vd = to_double(v, ny);
    SliceCtx c = {&s, rd};
    g_autofree double *g = fd_gradient(place_loss, &c, vd, ny);
    g_autofree char *what = describe("slice", hc, 3, s.xs, "axis %d vs differences", s.axis);
    g_autofree float *out = run_slice(hc->be, hc->dtype, &s, r, NULL, what);
    harness_assert_close_d(what, out, g, ny, thr_fd(hc));
  }
}

static void test_slice_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t xs[2] = {4, 6}, ys[2] = {4, 2}, big = 40;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, xs);
  g_autoptr(MexdTensor) y = zeros(be, dt, 2, ys);
  g_autoptr(MexdTensor) y_rows = zeros(be, dt, 2, (int64_t[]){3, 2});
  g_autoptr(MexdTensor) y3d = zeros(be, dt, 3, (int64_t[]){1, 4, 2});
  g_autoptr(MexdTensor) y_long = zeros(be, dt, 2, (int64_t[]){4, 7});
  g_autoptr(MexdTensor) xi = zeros(be, MEXD_DTYPE_I32, 2, xs);
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 2, ys);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) xs_ = sub(store, 0, 2, xs), ys_ = sub(store, 20, 2, ys);
  GError *error = NULL;
  g_assert_true(mexd_slice(y, x, -1, 4, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_slice(y, x, 1, 0, TRUE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_slice(NULL, x, 1, 0, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT, "slice y NULL");
  ASSERT_FAILS(mexd_slice(y, NULL, 1, 0, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT, "slice x NULL");
  const int bad_axes[] = {2, -3, 99};
  for (guint i = 0; i < G_N_ELEMENTS(bad_axes); i++)
    ASSERT_FAILS(mexd_slice(y, x, bad_axes[i], 0, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
                 "slice axis out of range");
  ASSERT_FAILS(mexd_slice(y, x, 1, 5, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "slice past the end");
  ASSERT_FAILS(mexd_slice(y, x, 1, -1, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "slice negative start");
  ASSERT_FAILS(mexd_slice(y_long, x, 1, 0, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "slice longer than x");
  ASSERT_FAILS_NAMING(mexd_slice(y_rows, x, 1, 0, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "slice other dimension differs", "argument y");
  ASSERT_FAILS(mexd_slice(y3d, x, 1, 0, FALSE, ERR), MEXD_ERROR_SHAPE, "slice rank differs");
  ASSERT_FAILS(mexd_slice(y, xi, 1, 0, FALSE, ERR), MEXD_ERROR_DTYPE, "slice i32 x");
  ASSERT_FAILS(mexd_slice(yi, x, 1, 0, FALSE, ERR), MEXD_ERROR_DTYPE, "slice i32 y");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, xs);
    ASSERT_FAILS(mexd_slice(y, xo, 1, 0, FALSE, ERR), MEXD_ERROR_DTYPE, "slice mixed float x");
  }
  ASSERT_FAILS(mexd_slice(ys_, xs_, 1, 0, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "slice y inside x");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, xs);
    ASSERT_FAILS(mexd_slice(y, xc, 1, 0, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "slice x on another backend");
  }
}

/* ---- cross-entropy ---- */

typedef struct {
  int64_t R, C;
  gboolean acc, has_dloss;
  float dloss;
  int64_t pad_l, pad_lab, pad_out;
} XentRun;

static float run_xent(MexdBackend *be, MexdDType dt, const XentRun *x, const float *logits,
                      const int32_t *labels, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t ls[2] = {x->R, x->C}, one = 1;
  g_autoptr(MexdTensor) tl = input(be, dt, 2, ls, logits, x->pad_l);
  g_autoptr(MexdTensor) tlab = idx_tensor(be, x->R, labels, x->pad_lab);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 1, &one, NULL, x->pad_out);
  CHECK_OK(mexd_cross_entropy(o.t, tl, tlab, &error), what);
  g_autofree float *v = outbuf_read(&o, what);
  return v[0];
}

static float *run_xent_bwd(MexdBackend *be, MexdDType dt, const XentRun *x, const float *logits,
                           const int32_t *labels, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t ls[2] = {x->R, x->C}, one = 1;
  g_autoptr(MexdTensor) tl = input(be, dt, 2, ls, logits, x->pad_l);
  g_autoptr(MexdTensor) tlab = idx_tensor(be, x->R, labels, x->pad_lab);
  g_autoptr(MexdTensor) td = x->has_dloss ? input(be, dt, 1, &one, &x->dloss, x->pad_l) : NULL;
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 2, ls, init, x->pad_out);
  CHECK_OK(mexd_cross_entropy_backward(o.t, tl, tlab, td, x->acc, &error), what);
  return outbuf_read(&o, what);
}

/* The mean loss, in double. */
static double ref_xent(int64_t R, int64_t C, const double *z, const int32_t *labels)
{
  double total = 0;
  for (int64_t r = 0; r < R; r++) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < C; i++)
      m = fmax(m, z[r * C + i]);
    for (int64_t i = 0; i < C; i++)
      s += exp(z[r * C + i] - m);
    total += m + log(s) - z[r * C + labels[r]];
  }
  return total / (double)R;
}

/* dlogits (without old contents) = dloss·(softmax − onehot)/R; a bad label has no one-hot. */
static void ref_xent_bwd(int64_t R, int64_t C, const float *z, const int32_t *labels, double dloss,
                         double *d)
{
  int64_t n = R * C;
  g_autofree double *zd = to_double(z, n);
  softmax_d(R, C, zd, d);
  for (int64_t r = 0; r < R; r++)
    for (int64_t i = 0; i < C; i++)
      d[r * C + i] = dloss * (d[r * C + i] - (i == labels[r] ? 1.0 : 0.0)) / (double)R;
}

static void check_xent(const HarnessCase *hc, const XentRun *x, const float *logits,
                       const int32_t *labels, const char *label)
{
  int64_t n = x->R * x->C;
  g_autofree float *init = old_contents(n, x->acc, hc->dtype);
  g_autofree char *what = describe("cross_entropy", hc, 2, (int64_t[]){x->R, x->C},
                                   "acc %d dloss %s%g pads %d/%d/%d (%s)", x->acc,
                                   x->has_dloss ? "" : "NULL = ", x->has_dloss ? x->dloss : 1.0,
                                   (int)x->pad_l, (int)x->pad_lab, (int)x->pad_out, label);
  g_autofree char *wb = g_strdup_printf("%s: backward", what);
  float loss = run_xent(hc->be, hc->dtype, x, logits, labels, what);
  g_autofree float *out = run_xent_bwd(hc->be, hc->dtype, x, logits, labels, init, wb);
  double thr = harness_thr(hc, NMSE_F32);
  if (on_cpu(hc)) {
    g_autofree double *zd = to_double(logits, n), *ref = g_new(double, n);
    double want = ref_xent(x->R, x->C, zd, labels);
    harness_assert_close_d(what, &loss, &want, 1, thr);
    ref_xent_bwd(x->R, x->C, logits, labels, x->has_dloss ? x->dloss : 1.0, ref);
    add_init(ref, init, n);
    harness_assert_close_d(wb, out, ref, n, thr);
  } else {
    XentRun c = *x;
    c.pad_l = c.pad_lab = c.pad_out = 0;
    float want = run_xent(hc->cpu, hc->dtype, &c, logits, labels, what);
    harness_assert_close(what, &loss, &want, 1, thr);
    g_autofree float *ref = run_xent_bwd(hc->cpu, hc->dtype, &c, logits, labels, init, wb);
    /* dloss·(p − onehot)/R: its terms are of |dloss|/R */
    double sc = (x->has_dloss ? x->dloss : 1.0) / (double)x->R;
    assert_close_floor(hc, wb, out, ref, n, (double)n * sc * sc);
  }
}

/* Random logits (spread `scale`), some −inf (never the label's, never a whole row). */
static float *xent_logits(int64_t R, int64_t C, float scale, gboolean masked, const int32_t *labels,
                          MexdDType dt)
{
  float *z = harness_random(R * C, -scale, scale, dt);
  for (int64_t r = 0; masked && r < R; r++)
    for (int64_t i = 0; i < C; i++)
      if (i != labels[r] && g_test_rand_int_range(0, 3) == 0)
        z[r * C + i] = -INFINITY;
  return z;
}

static int32_t *xent_labels(int64_t R, int64_t C)
{
  int32_t *lab = g_new(int32_t, R);
  for (int64_t r = 0; r < R; r++)
    lab[r] = (int32_t)g_test_rand_int_range(0, (gint32)C);
  return lab;
}

static void random_xent(XentRun *x)
{
  x->acc = g_test_rand_bit();
  x->has_dloss = g_test_rand_bit();
  x->dloss = harness_f16_round((float)g_test_rand_double_range(-3, 3));
  x->pad_l = rand_pad();
  x->pad_lab = rand_pad();
  x->pad_out = rand_pad();
}

static void test_xent_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 10; iter++) {
    XentRun x = {.C = harness_size(on_cpu(hc) ? 600 : 2000)};
    x.R = harness_size(MAX(1, 20000 / x.C));
    random_xent(&x);
    float scale = g_test_rand_bit() ? 4.0f : (float)g_test_rand_double_range(0.1, 1000);
    gboolean masked = g_test_rand_bit();
    g_autofree int32_t *lab = xent_labels(x.R, x.C);
    g_autofree float *z = xent_logits(x.R, x.C, scale, masked, lab, hc->dtype);
    g_autofree char *label = g_strdup_printf("logits ±%g masked %d", (double)scale, masked);
    check_xent(hc, &x, z, lab, label);
  }
}

typedef struct {
  int64_t R, C;
  const int32_t *labels;
  double dloss;
} XentCtx;

static double xent_loss(const double *z, const void *ctx)
{
  const XentCtx *c = ctx;
  return c->dloss * ref_xent(c->R, c->C, z, c->labels);
}

static void test_xent_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[][2] = {{1, 1}, {1, 7}, {5, 3}, {3, 64}};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    XentRun x = {.R = sizes[k][0], .C = sizes[k][1], .has_dloss = k % 2 == 1, .dloss = -1.5f};
    int64_t n = x.R * x.C;
    g_autofree int32_t *lab = xent_labels(x.R, x.C);
    g_autofree float *z = xent_logits(x.R, x.C, 3, FALSE, lab, hc->dtype);
    g_autofree double *zd = to_double(z, n);
    XentCtx c = {x.R, x.C, lab, x.has_dloss ? x.dloss : 1.0};
    g_autofree double *g = fd_gradient(xent_loss, &c, zd, n);
    g_autofree char *what =
        describe("cross_entropy_backward", hc, 2, (int64_t[]){x.R, x.C}, "vs differences");
    g_autofree float *out = run_xent_bwd(hc->be, hc->dtype, &x, z, lab, NULL, what);
    harness_assert_close_d(what, out, g, n, thr_fd(hc));
  }
}

/* Large logits (no overflow); a row of all −inf (NaN) and a label whose logit is −inf (inf); a
 * long row; more rows than a grid dimension (and than one pass of the loss's sum would take). */
static void test_xent_special(const HarnessCase *hc)
{
  {
    XentRun x = {.R = 3, .C = 4};
    const float z[12] = {1000, -1000, 999, 0, -1000, -1001, -999, -1000, 88, 89, 90, -88};
    const int32_t lab[3] = {1, 2, 0};
    check_xent(hc, &x, z, lab, "large logits");
  }
  {
    XentRun x = {.R = 2, .C = 3};
    const float ninf = -INFINITY;
    const float z1[6] = {ninf, ninf, ninf, 0, 1, 2};
    const int32_t lab1[2] = {1, 2};
    float l1 = run_xent(hc->be, hc->dtype, &x, z1, lab1, "cross_entropy all -inf row");
    if (!isnan(l1))
      g_error("cross_entropy %s: a row of all -inf gives %g, want NaN", hc->spec, l1);
    const float z2[6] = {0, ninf, 1, 0, 1, 2};
    float l2 = run_xent(hc->be, hc->dtype, &x, z2, lab1, "cross_entropy label at -inf");
    if (!(isinf(l2) && l2 > 0))
      g_error("cross_entropy %s: a label whose logit is -inf gives %g, want inf", hc->spec, l2);
  }
  {
    XentRun x = {.R = 2, .C = 70000, .acc = TRUE, .has_dloss = TRUE, .dloss = 2.0f, .pad_l = 1};
    g_autofree int32_t *lab = xent_labels(x.R, x.C);
    g_autofree float *z = xent_logits(x.R, x.C, 8, TRUE, lab, hc->dtype);
    check_xent(hc, &x, z, lab, "long row");
  }
  if (hc->dtype == MEXD_DTYPE_F32) {
    XentRun x = {.R = 70001, .C = 2, .pad_lab = 1};
    g_autofree int32_t *lab = xent_labels(x.R, x.C);
    g_autofree float *z = xent_logits(x.R, x.C, 3, FALSE, lab, hc->dtype);
    check_xent(hc, &x, z, lab, "many rows");
  }
}

/* A label outside [0,C): cpu fails at once and writes nothing; vulkan fails at the next sync,
 * the loss is NaN and the backward leaves that row's one-hot term out. */
static void test_xent_bad_label(const HarnessCase *hc)
{
  const int64_t R = 4, C = 5;
  const int32_t bad[2][4] = {{1, 5, 0, 2}, {3, 0, 4, -1}};
  for (int c = 0; c < 2; c++) {
    g_autofree float *z = harness_random(R * C, -2, 2, hc->dtype);
    g_autofree float *d0 = harness_random(R * C, -1, 1, hc->dtype);
    int64_t ls[2] = {R, C}, one = 1;
    float seven = 7.0f;
    g_autoptr(MexdTensor) tz = harness_tensor(hc->be, hc->dtype, 2, ls, z);
    g_autoptr(MexdTensor) tlab = harness_tensor_i32(hc->be, 1, &R, bad[c]);
    g_autoptr(MexdTensor) tloss = harness_tensor(hc->be, hc->dtype, 1, &one, &seven);
    g_autoptr(MexdTensor) td = harness_tensor(hc->be, hc->dtype, 2, ls, d0);
    GError *error = NULL;
    if (on_cpu(hc)) {
      g_autofree char *want = g_strdup_printf("labels[%d] = %d", c == 0 ? 1 : 3, c == 0 ? 5 : -1);
      g_assert_false(mexd_cross_entropy(tloss, tz, tlab, &error));
      g_assert_nonnull(error);
      if (!strstr(error->message, want))
        g_error("cross_entropy bad label: \"%s\" does not name %s", error->message, want);
      harness_assert_error(error, MEXD_ERROR_INDEX, "cross_entropy bad label (cpu)");
      error = NULL;
      g_assert_false(mexd_cross_entropy_backward(td, tz, tlab, NULL, c == 1, &error));
      harness_assert_error(error, MEXD_ERROR_INDEX, "cross_entropy_backward bad label (cpu)");
      g_autofree float *l = harness_read(tloss), *d = harness_read(td);
      g_assert_cmpfloat(l[0], ==, 7.0f);
      g_assert_cmpmem(d, sizeof(float) * (size_t)(R * C), d0, sizeof(float) * (size_t)(R * C));
      continue;
    }
    g_assert_true(mexd_cross_entropy(tloss, tz, tlab, &error));
    g_assert_no_error(error);
    g_assert_false(mexd_backend_sync(hc->be, &error));
    harness_assert_error(error, MEXD_ERROR_INDEX, "cross_entropy bad label (sync)");
    error = NULL;
    g_autofree float *l = harness_read(tloss);
    if (!isnan(l[0]))
      g_error("cross_entropy %s: a bad label gives the loss %g, want NaN", hc->spec, l[0]);
    g_assert_true(mexd_cross_entropy_backward(td, tz, tlab, NULL, c == 1, &error));
    g_assert_no_error(error);
    g_assert_false(mexd_backend_sync(hc->be, &error));
    harness_assert_error(error, MEXD_ERROR_INDEX, "cross_entropy_backward bad label (sync)");
    error = NULL;
    g_autofree float *d = harness_read(td);
    g_autofree double *ref = g_new(double, R *C);
    ref_xent_bwd(R, C, z, bad[c], 1.0, ref);
    if (c == 1)
      add_init(ref, d0, R * C);
    harness_assert_close_d("cross_entropy_backward bad label: softmax alone in that row", d, ref,
                           R * C, harness_thr(hc, NMSE_F32));
    /* good labels afterwards run and sync cleanly */
    const int32_t good[4] = {0, 1, 2, 3};
    g_autoptr(MexdTensor) tg = harness_tensor_i32(hc->be, 1, &R, good);
    g_assert_true(mexd_cross_entropy(tloss, tz, tg, &error));
    g_assert_no_error(error);
    g_assert_true(mexd_backend_sync(hc->be, &error));
    g_assert_no_error(error);
  }
}

static void test_xent_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t ls[2] = {4, 5}, R = 4, one = 1, two = 2, big = 40;
  g_autoptr(MexdTensor) z = zeros(be, dt, 2, ls);
  g_autoptr(MexdTensor) lab = zeros(be, MEXD_DTYPE_I32, 1, &R);
  g_autoptr(MexdTensor) loss = zeros(be, dt, 1, &one);
  g_autoptr(MexdTensor) dz = zeros(be, dt, 2, ls);
  g_autoptr(MexdTensor) dl = zeros(be, dt, 1, &one);
  g_autoptr(MexdTensor) z1d = zeros(be, dt, 1, (int64_t[]){20});
  g_autoptr(MexdTensor) z3d = zeros(be, dt, 3, (int64_t[]){1, 4, 5});
  g_autoptr(MexdTensor) lab5 = zeros(be, MEXD_DTYPE_I32, 1, (int64_t[]){5});
  g_autoptr(MexdTensor) labf = zeros(be, dt, 1, &R);
  g_autoptr(MexdTensor) loss2 = zeros(be, dt, 1, &two);
  g_autoptr(MexdTensor) lossi = zeros(be, MEXD_DTYPE_I32, 1, &one);
  g_autoptr(MexdTensor) dz_b = zeros(be, dt, 2, (int64_t[]){4, 6});
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) zs = sub(store, 0, 2, ls), in_z = sub(store, 7, 1, &one);
  g_autoptr(MexdTensor) dzs = sub(store, 20, 2, ls), in_dz = sub(store, 21, 1, &one);
  GError *error = NULL;
  g_assert_true(mexd_cross_entropy(loss, z, lab, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_cross_entropy_backward(dz, z, lab, dl, TRUE, &error));
  g_assert_no_error(error);

  ASSERT_FAILS(mexd_cross_entropy(NULL, z, lab, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "cross_entropy loss NULL");
  ASSERT_FAILS(mexd_cross_entropy(loss, NULL, lab, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "cross_entropy logits NULL");
  ASSERT_FAILS(mexd_cross_entropy(loss, z, NULL, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "cross_entropy labels NULL");
  ASSERT_FAILS(mexd_cross_entropy(loss, z1d, lab, ERR), MEXD_ERROR_SHAPE,
               "cross_entropy 1-D logits");
  ASSERT_FAILS(mexd_cross_entropy(loss, z3d, lab, ERR), MEXD_ERROR_SHAPE,
               "cross_entropy 3-D logits");
  ASSERT_FAILS(mexd_cross_entropy(loss, z, lab5, ERR), MEXD_ERROR_SHAPE,
               "cross_entropy labels length");
  ASSERT_FAILS(mexd_cross_entropy(loss, z, labf, ERR), MEXD_ERROR_DTYPE,
               "cross_entropy float labels");
  ASSERT_FAILS(mexd_cross_entropy(loss2, z, lab, ERR), MEXD_ERROR_SHAPE, "cross_entropy loss [2]");
  ASSERT_FAILS(mexd_cross_entropy(lossi, z, lab, ERR), MEXD_ERROR_DTYPE, "cross_entropy i32 loss");
  ASSERT_FAILS(mexd_cross_entropy(in_z, zs, lab, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "cross_entropy loss inside logits");
  ASSERT_FAILS(mexd_cross_entropy_backward(NULL, z, lab, dl, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "cross_entropy_backward dlogits NULL");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, NULL, lab, dl, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "cross_entropy_backward logits NULL");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, NULL, dl, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "cross_entropy_backward labels NULL");
  ASSERT_FAILS_NAMING(mexd_cross_entropy_backward(dz_b, z, lab, dl, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "cross_entropy_backward dlogits shape", "argument dlogits");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, lab5, dl, FALSE, ERR), MEXD_ERROR_SHAPE,
               "cross_entropy_backward labels length");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, lab, loss2, FALSE, ERR), MEXD_ERROR_SHAPE,
               "cross_entropy_backward dloss [2]");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, labf, dl, FALSE, ERR), MEXD_ERROR_DTYPE,
               "cross_entropy_backward float labels");
  ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, lab, lossi, FALSE, ERR), MEXD_ERROR_DTYPE,
               "cross_entropy_backward i32 dloss");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) zo = zeros(be, other_float(dt), 2, ls);
    g_autoptr(MexdTensor) dlo = zeros(be, other_float(dt), 1, &one);
    ASSERT_FAILS(mexd_cross_entropy(loss, zo, lab, ERR), MEXD_ERROR_DTYPE,
                 "cross_entropy mixed float logits");
    ASSERT_FAILS(mexd_cross_entropy_backward(dz, zo, lab, dl, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "cross_entropy_backward mixed float logits");
    ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, lab, dlo, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "cross_entropy_backward mixed float dloss");
  }
  ASSERT_FAILS(mexd_cross_entropy_backward(z, z, lab, dl, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "cross_entropy_backward dlogits = logits");
  ASSERT_FAILS(mexd_cross_entropy_backward(dzs, z, lab, in_dz, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "cross_entropy_backward dloss inside dlogits");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) labc = zeros(hc->cpu, MEXD_DTYPE_I32, 1, &R);
    g_autoptr(MexdTensor) dlc = zeros(hc->cpu, dt, 1, &one);
    g_autoptr(MexdTensor) zc = zeros(hc->cpu, dt, 2, ls);
    ASSERT_FAILS(mexd_cross_entropy(loss, z, labc, ERR), MEXD_ERROR_BACKEND,
                 "cross_entropy labels on another backend");
    ASSERT_FAILS(mexd_cross_entropy(loss, zc, lab, ERR), MEXD_ERROR_BACKEND,
                 "cross_entropy logits on another backend");
    ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, lab, dlc, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "cross_entropy_backward dloss on another backend");
    ASSERT_FAILS(mexd_cross_entropy_backward(dz, z, labc, dl, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "cross_entropy_backward labels on another backend");
  }
}

/* ---- mse ---- */

typedef struct {
  int ndim;
  int64_t shape[4];
  gboolean acc, has_dloss;
  float dloss;
  int64_t pad_y, pad_t, pad_out;
} MseRun;

static float run_mse(MexdBackend *be, MexdDType dt, const MseRun *m, const float *y, const float *t,
                     const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t one = 1;
  g_autoptr(MexdTensor) ty = input(be, dt, m->ndim, m->shape, y, m->pad_y);
  g_autoptr(MexdTensor) tt = input(be, dt, m->ndim, m->shape, t, m->pad_t);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 1, &one, NULL, m->pad_out);
  CHECK_OK(mexd_mse(o.t, ty, tt, &error), what);
  g_autofree float *v = outbuf_read(&o, what);
  return v[0];
}

static float *run_mse_bwd(MexdBackend *be, MexdDType dt, const MseRun *m, const float *y,
                          const float *t, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t one = 1;
  g_autoptr(MexdTensor) ty = input(be, dt, m->ndim, m->shape, y, m->pad_y);
  g_autoptr(MexdTensor) tt = input(be, dt, m->ndim, m->shape, t, m->pad_t);
  g_autoptr(MexdTensor) td = m->has_dloss ? input(be, dt, 1, &one, &m->dloss, m->pad_t) : NULL;
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, m->ndim, m->shape, init, m->pad_out);
  CHECK_OK(mexd_mse_backward(o.t, ty, tt, td, m->acc, &error), what);
  return outbuf_read(&o, what);
}

static void check_mse(const HarnessCase *hc, const MseRun *m, const float *y, const float *t,
                      const char *label)
{
  int64_t n = harness_numel(m->ndim, m->shape);
  g_autofree float *init = old_contents(n, m->acc, hc->dtype);
  g_autofree char *what =
      describe("mse", hc, m->ndim, m->shape, "acc %d dloss %s%g pads %d/%d/%d (%s)", m->acc,
               m->has_dloss ? "" : "NULL = ", m->has_dloss ? m->dloss : 1.0, (int)m->pad_y,
               (int)m->pad_t, (int)m->pad_out, label);
  g_autofree char *wb = g_strdup_printf("%s: backward", what);
  float loss = run_mse(hc->be, hc->dtype, m, y, t, what);
  g_autofree float *out = run_mse_bwd(hc->be, hc->dtype, m, y, t, init, wb);
  double thr = harness_thr(hc, NMSE_F32);
  if (on_cpu(hc)) {
    double want = 0, d = m->has_dloss ? m->dloss : 1.0;
    g_autofree double *ref = g_new(double, n);
    for (int64_t i = 0; i < n; i++) {
      want += ((double)y[i] - t[i]) * ((double)y[i] - t[i]) / (double)n;
      ref[i] = d * 2 * ((double)y[i] - t[i]) / (double)n;
    }
    harness_assert_close_d(what, &loss, &want, 1, thr);
    add_init(ref, init, n);
    harness_assert_close_d(wb, out, ref, n, thr);
  } else {
    MseRun c = *m;
    c.pad_y = c.pad_t = c.pad_out = 0;
    float want = run_mse(hc->cpu, hc->dtype, &c, y, t, what);
    harness_assert_close(what, &loss, &want, 1, thr);
    g_autofree float *ref = run_mse_bwd(hc->cpu, hc->dtype, &c, y, t, init, wb);
    harness_assert_close(wb, out, ref, n, thr);
  }
}

static void random_mse(MseRun *m)
{
  m->acc = g_test_rand_bit();
  m->has_dloss = g_test_rand_bit();
  m->dloss = harness_f16_round((float)g_test_rand_double_range(-3, 3));
  m->pad_y = rand_pad();
  m->pad_t = rand_pad();
  m->pad_out = rand_pad();
}

static void test_mse_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 10; iter++) {
    MseRun m = {0};
    m.ndim = random_shape(m.shape);
    random_mse(&m);
    int64_t n = harness_numel(m.ndim, m.shape);
    g_autofree float *y = harness_random(n, -2, 2, hc->dtype);
    g_autofree float *t = harness_random(n, -2, 2, hc->dtype);
    check_mse(hc, &m, y, t, "random");
  }
  /* one element; and more than one workgroup's share many times over (the partial sums) */
  const int64_t sizes[] = {1, 300001};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    MseRun m = {.ndim = 1, .shape = {sizes[k]}};
    random_mse(&m);
    g_autofree float *y = harness_random(sizes[k], -2, 2, hc->dtype);
    g_autofree float *t = harness_random(sizes[k], -1, 1, hc->dtype);
    check_mse(hc, &m, y, t, "long");
  }
}

typedef struct {
  int64_t n;
  const double *t;
  double dloss;
} MseCtx;

static double mse_loss(const double *y, const void *ctx)
{
  const MseCtx *c = ctx;
  double s = 0;
  for (int64_t i = 0; i < c->n; i++)
    s += (y[i] - c->t[i]) * (y[i] - c->t[i]);
  return c->dloss * s / (double)c->n;
}

static void test_mse_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t sizes[] = {1, 7, 129};
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    MseRun m = {.ndim = 1, .shape = {sizes[k]}, .has_dloss = k != 1, .dloss = 0.75f};
    int64_t n = sizes[k];
    g_autofree float *y = harness_random(n, -2, 2, hc->dtype);
    g_autofree float *t = harness_random(n, -2, 2, hc->dtype);
    g_autofree double *yd = to_double(y, n), *td = to_double(t, n);
    MseCtx c = {n, td, m.has_dloss ? m.dloss : 1.0};
    g_autofree double *g = fd_gradient(mse_loss, &c, yd, n);
    g_autofree char *what = describe("mse_backward", hc, 1, m.shape, "vs differences");
    g_autofree float *out = run_mse_bwd(hc->be, hc->dtype, &m, y, t, NULL, what);
    harness_assert_close_d(what, out, g, n, thr_fd(hc));
  }
}

static void test_mse_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {3, 4}, one = 1, two = 2, big = 40;
  g_autoptr(MexdTensor) y = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) t = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) loss = zeros(be, dt, 1, &one);
  g_autoptr(MexdTensor) loss2 = zeros(be, dt, 1, &two);
  g_autoptr(MexdTensor) t_b = zeros(be, dt, 2, (int64_t[]){4, 3});
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) ys = sub(store, 0, 2, sh), in_y = sub(store, 11, 1, &one);
  g_autoptr(MexdTensor) dys = sub(store, 20, 2, sh), dys2 = sub(store, 22, 2, sh);
  g_autoptr(MexdTensor) in_dy = sub(store, 25, 1, &one);
  GError *error = NULL;
  g_assert_true(mexd_mse(loss, y, t, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_mse_backward(dy, y, t, loss, TRUE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_mse(NULL, y, t, ERR), MEXD_ERROR_INVALID_ARGUMENT, "mse loss NULL");
  ASSERT_FAILS(mexd_mse(loss, NULL, t, ERR), MEXD_ERROR_INVALID_ARGUMENT, "mse y NULL");
  ASSERT_FAILS(mexd_mse(loss, y, NULL, ERR), MEXD_ERROR_INVALID_ARGUMENT, "mse target NULL");
  ASSERT_FAILS(mexd_mse(loss, y, t_b, ERR), MEXD_ERROR_SHAPE, "mse target shape");
  ASSERT_FAILS(mexd_mse(loss2, y, t, ERR), MEXD_ERROR_SHAPE, "mse loss [2]");
  ASSERT_FAILS(mexd_mse(loss, yi, t, ERR), MEXD_ERROR_DTYPE, "mse i32 y");
  ASSERT_FAILS(mexd_mse(in_y, ys, t, ERR), MEXD_ERROR_INVALID_ARGUMENT, "mse loss inside y");
  ASSERT_FAILS(mexd_mse_backward(NULL, y, t, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward dy NULL");
  ASSERT_FAILS(mexd_mse_backward(dy, NULL, t, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward y NULL");
  ASSERT_FAILS(mexd_mse_backward(dy, y, NULL, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward target NULL");
  ASSERT_FAILS_NAMING(mexd_mse_backward(dy, y, t_b, NULL, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "mse_backward target shape", "argument target");
  ASSERT_FAILS_NAMING(mexd_mse_backward(t_b, y, t, NULL, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "mse_backward dy shape", "argument dy");
  ASSERT_FAILS(mexd_mse_backward(dy, y, t, loss2, FALSE, ERR), MEXD_ERROR_SHAPE,
               "mse_backward dloss [2]");
  ASSERT_FAILS(mexd_mse_backward(dy, yi, t, NULL, FALSE, ERR), MEXD_ERROR_DTYPE,
               "mse_backward i32 y");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) to = zeros(be, other_float(dt), 2, sh);
    g_autoptr(MexdTensor) lo = zeros(be, other_float(dt), 1, &one);
    ASSERT_FAILS(mexd_mse(loss, y, to, ERR), MEXD_ERROR_DTYPE, "mse mixed float target");
    ASSERT_FAILS(mexd_mse(lo, y, t, ERR), MEXD_ERROR_DTYPE, "mse mixed float loss");
    ASSERT_FAILS(mexd_mse_backward(dy, y, t, lo, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "mse_backward mixed float dloss");
  }
  ASSERT_FAILS(mexd_mse_backward(y, y, t, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward dy = y");
  ASSERT_FAILS(mexd_mse_backward(dys2, y, dys, NULL, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward dy partly over target");
  ASSERT_FAILS(mexd_mse_backward(dys, y, t, in_dy, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "mse_backward dloss inside dy");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) tc = zeros(hc->cpu, dt, 2, sh);
    g_autoptr(MexdTensor) lc = zeros(hc->cpu, dt, 1, &one);
    ASSERT_FAILS(mexd_mse(loss, y, tc, ERR), MEXD_ERROR_BACKEND, "mse target on another backend");
    ASSERT_FAILS(mexd_mse_backward(dy, y, t, lc, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "mse_backward dloss on another backend");
  }
}

/* ---- dropout ---- */

typedef struct {
  int ndim;
  int64_t shape[4];
  float p;
  uint64_t seed, stream;
  gboolean acc, in_place;
  int64_t pad_x, pad_y;
} DropRun;

/* y for `d`; with in_place, y is x (init unused). */
static float *run_dropout(MexdBackend *be, MexdDType dt, const DropRun *d, const float *x,
                          const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  g_auto(OutBuf) o = {0};
  g_autoptr(MexdTensor) tx = NULL;
  if (d->in_place) {
    outbuf_init(&o, be, dt, d->ndim, d->shape, x, d->pad_y);
    tx = mexd_tensor_ref(o.t);
  } else {
    outbuf_init(&o, be, dt, d->ndim, d->shape, init, d->pad_y);
    tx = input(be, dt, d->ndim, d->shape, x, d->pad_x);
  }
  CHECK_OK(mexd_dropout(o.t, tx, d->p, d->seed, d->stream, d->acc, &error), what);
  return outbuf_read(&o, what);
}

/* The scale of kept elements as grad.h fixes it: 1/(1 − p) rounded to f32 once. */
static float drop_scale(float p)
{
  return p < 1 ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

/* Every backend against grad.h's definition: kept elements are x·scale (one f32 product), dropped
 * ones exactly 0 (also for inf and NaN x), the mask that of mexd_dropout_keep.  Returns the
 * number kept. */
static int64_t check_dropout(const HarnessCase *hc, const DropRun *d, const float *x,
                             const char *label)
{
  int64_t n = harness_numel(d->ndim, d->shape);
  g_autofree float *init = d->in_place ? NULL : old_contents(n, d->acc, hc->dtype);
  g_autofree char *what = describe("dropout", hc, d->ndim, d->shape,
                                   "p %g seed %" G_GINT64_MODIFIER "x stream %" G_GINT64_MODIFIER
                                   "x acc %d in-place %d pads %d/%d (%s)",
                                   (double)d->p, d->seed, d->stream, d->acc, d->in_place,
                                   (int)d->pad_x, (int)d->pad_y, label);
  g_autofree float *out = run_dropout(hc->be, hc->dtype, d, x, init, what);
  const float scale = drop_scale(d->p);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    gboolean keep = mexd_dropout_keep(d->p, d->seed, d->stream, (uint64_t)i);
    kept += keep;
    float v = keep ? x[i] * scale : 0.0f;
    float old = d->acc ? (d->in_place ? x[i] : init[i]) : 0.0f;
    float want = d->acc ? old + v : v;
    if (hc->dtype == MEXD_DTYPE_F16)
      want = harness_f16_round(want);
    gboolean ok;
    if (isnan(want))
      ok = isnan(out[i]);
    else if (!keep || !d->acc || isinf(want))
      ok = out[i] == want; /* exact: a product, or the old value plus an exact 0 */
    else                   /* old + x·scale may be fused on a device: one rounding apart */
      ok = fabsf(out[i] - want) <=
           (hc->dtype == MEXD_DTYPE_F16 ? 1e-3f : 1e-6f) * (fabsf(want) + fabsf(old) + fabsf(v));
    if (!ok)
      g_error("%s: y[%" G_GINT64_FORMAT "] = %.9g, want %.9g (x %g, kept %d)", what, i, out[i],
              want, x[i], keep);
  }
  return kept;
}

static void random_drop(DropRun *d)
{
  static const float ps[] = {0.1f, 0.5f, 0.25f, 0.9f, 0.0f, 1.0f, 0.999f};
  d->p = ps[g_test_rand_int_range(0, G_N_ELEMENTS(ps))];
  d->seed = ((uint64_t)g_test_rand_int() << 32) | (uint32_t)g_test_rand_int();
  d->stream = g_test_rand_bit() ? (uint64_t)g_test_rand_int_range(0, 100)
                                : ((uint64_t)g_test_rand_int() << 32) | (uint32_t)g_test_rand_int();
  d->acc = g_test_rand_bit();
  d->in_place = g_test_rand_int_range(0, 3) == 0;
  d->pad_x = rand_pad();
  d->pad_y = rand_pad();
}

static void test_dropout_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    DropRun d = {0};
    d.ndim = random_shape(d.shape);
    random_drop(&d);
    int64_t n = harness_numel(d.ndim, d.shape);
    g_autofree float *x = harness_random(n, -3, 3, hc->dtype);
    check_dropout(hc, &d, x, "random");
  }
}

/* The keep rate is within 5σ of 1 − p (p = 0: all kept, y = x exactly; p = 1: none, y = 0
 * exactly; p near 1); dropped infinities and NaN give 0, kept ones stay; another stream or seed
 * gives another mask; the mask is the one the layout of grad.h gives through the Philox of
 * lib/nn/philox.h. */
static void test_dropout_mask(const HarnessCase *hc)
{
  const int64_t n = 100000;
  g_autofree float *x = harness_random(n, 1, 2, hc->dtype);
  const float ps[] = {0.0f, 0.1f, 0.5f, 0.9f, 0.999f, 1.0f};
  for (guint k = 0; k < G_N_ELEMENTS(ps); k++) {
    DropRun d = {.ndim = 1,
                 .shape = {n},
                 .p = ps[k],
                 .seed = 0x0123456789abcdefull + k,
                 .stream = 0xfedcba9876543210ull,
                 .pad_x = 1,
                 .pad_y = 3};
    int64_t kept = check_dropout(hc, &d, x, "rate");
    double q = 1.0 - ps[k], sigma = sqrt(q * (1 - q) / (double)n);
    double rate = (double)kept / (double)n;
    g_test_message("dropout p %g: kept %.5f (want %.5f ± %.5f)", (double)ps[k], rate, q, sigma);
    if (q == 0 || q == 1)
      g_assert_cmpint(kept, ==, (int64_t)(q * (double)n));
    else if (fabs(rate - q) > 5 * sigma)
      g_error("dropout p %g: keep rate %.5f, want %.5f ± 5·%.5f", (double)ps[k], rate, q, sigma);
  }
  float special[64];
  for (int i = 0; i < 64; i++)
    special[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY;
  for (int acc = 0; acc < 2; acc++) {
    DropRun d = {.ndim = 2, .shape = {8, 8}, .p = 0.5f, .seed = 7, .stream = 3, .acc = acc};
    int64_t kept = check_dropout(hc, &d, special, "inf and NaN");
    g_assert_cmpint(kept, >, 0);
    g_assert_cmpint(kept, <, 64);
  }
  if (!on_cpu(hc))
    return;
  /* host checks (once, on the cpu cases) */
  int64_t differ_stream = 0, differ_seed = 0;
  for (uint64_t i = 0; i < 4096; i++) {
    differ_stream +=
        mexd_dropout_keep(0.5f, 11, 5, i) != mexd_dropout_keep(0.5f, 11, 5 | 1ull << 40, i);
    differ_seed +=
        mexd_dropout_keep(0.5f, 11, 5, i) != mexd_dropout_keep(0.5f, 11 | 1ull << 33, 5, i);
  }
  g_assert_cmpint(differ_stream, >, 1500);
  g_assert_cmpint(differ_seed, >, 1500);
  for (int k = 0; k < 2000; k++) {
    uint64_t seed = ((uint64_t)g_test_rand_int() << 32) | (uint32_t)g_test_rand_int();
    uint64_t stream = ((uint64_t)g_test_rand_int() << 32) | (uint32_t)g_test_rand_int();
    uint64_t i = (uint32_t)g_test_rand_int();
    float p = (float)g_test_rand_double_range(0, 1);
    const uint32_t counter[4] = {(uint32_t)(i / 4), (uint32_t)stream, (uint32_t)(stream >> 32),
                                 MEXD_DROPOUT_TAG};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t w[4];
    mexd_philox4x32_10(counter, key, w);
    gboolean want = (w[i % 4] >> 8) >= (uint32_t)llround((double)p * 16777216.0);
    if (mexd_dropout_keep(p, seed, stream, i) != want)
      g_error("mexd_dropout_keep(%g, %" G_GINT64_MODIFIER "x, %" G_GINT64_MODIFIER
              "x, %" G_GINT64_MODIFIER "u) disagrees with grad.h's layout",
              (double)p, seed, stream, i);
  }
}

typedef struct {
  const DropRun *d;
  const double *r;
} DropCtx;

/* The forward in double: y = x·keep/(1 − p); L = Σ r ⊙ y. */
static double dropout_loss(const double *x, const void *ctx)
{
  const DropCtx *c = ctx;
  double L = 0;
  for (int64_t i = 0; i < c->d->shape[0]; i++)
    if (mexd_dropout_keep(c->d->p, c->d->seed, c->d->stream, (uint64_t)i))
      L += c->r[i] * x[i] / (1.0 - (double)c->d->p);
  return L;
}

/* The backward is the same call on dy: against differences of the forward. */
static void test_dropout_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  DropRun d = {.ndim = 1, .shape = {300}, .p = 0.3f, .seed = 99, .stream = 1};
  g_autofree float *x = harness_random(300, -1, 1, hc->dtype);
  g_autofree float *r = harness_random(300, -1, 1, hc->dtype);
  g_autofree double *xd = to_double(x, 300), *rd = to_double(r, 300);
  DropCtx c = {&d, rd};
  g_autofree double *g = fd_gradient(dropout_loss, &c, xd, 300);
  g_autofree float *out = run_dropout(hc->be, hc->dtype, &d, r, NULL, "dropout backward");
  harness_assert_close_d("dropout backward vs differences", out, g, 300, thr_fd(hc));
}

/* More than 65535 workgroups of 256 (the grid spreads over y; the Philox counter comes from the
 * flattened index): every backend against the cpu backend, bit for bit, in place. */
static void test_dropout_grid(const HarnessCase *hc)
{
  if (on_cpu(hc)) {
    g_test_skip("the grid is a vulkan matter (cpu is the reference)");
    return;
  }
  int64_t n = 65536 * 256 + 300;
  g_autofree float *x = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)(i % 7) - 3.0f;
  DropRun d = {.ndim = 1, .shape = {n}, .p = 0.5f, .seed = 5, .stream = 9, .in_place = TRUE};
  g_autofree float *out = run_dropout(hc->be, hc->dtype, &d, x, NULL, "dropout grid");
  g_autofree float *ref = run_dropout(hc->cpu, hc->dtype, &d, x, NULL, "dropout grid (cpu)");
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&out[i], &ref[i], sizeof(float)) != 0)
      g_error("dropout grid %s: y[%" G_GINT64_FORMAT "] = %g, cpu %g", hc->spec, i, out[i], ref[i]);
}

static void test_dropout_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {3, 4}, big = 20;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) y = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) y_t = zeros(be, dt, 2, (int64_t[]){4, 3});
  g_autoptr(MexdTensor) yi = zeros(be, MEXD_DTYPE_I32, 2, sh);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) lo = sub(store, 0, 2, sh), hi = sub(store, 1, 2, sh);
  GError *error = NULL;
  g_assert_true(mexd_dropout(y, x, 0.5f, 1, 2, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_dropout(x, x, 1.0f, 1, 2, TRUE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_dropout(NULL, x, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "dropout y NULL");
  ASSERT_FAILS(mexd_dropout(y, NULL, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "dropout x NULL");
  const float bad_p[] = {-0.1f, 1.01f, NAN, INFINITY, -INFINITY};
  for (guint i = 0; i < G_N_ELEMENTS(bad_p); i++)
    ASSERT_FAILS(mexd_dropout(y, x, bad_p[i], 1, 2, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
                 "dropout bad p");
  ASSERT_FAILS_NAMING(mexd_dropout(y_t, x, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "dropout y shape", "argument y");
  ASSERT_FAILS(mexd_dropout(yi, x, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_DTYPE, "dropout i32 y");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, sh);
    ASSERT_FAILS(mexd_dropout(y, xo, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "dropout mixed float x");
  }
  ASSERT_FAILS(mexd_dropout(hi, lo, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "dropout y partly over x");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) xc = zeros(hc->cpu, dt, 2, sh);
    ASSERT_FAILS(mexd_dropout(y, xc, 0.5f, 1, 2, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "dropout x on another backend");
  }
}

/* ---- depthwise conv2d ---- */

typedef struct {
  int64_t N, C, H, W, KH, KW, ph, pw, OH, OW;
} DwShape;

static DwShape dw_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                        int64_t ph, int64_t pw)
{
  return (DwShape){N, C, H, W, KH, KW, ph, pw, H + 2 * ph - KH + 1, W + 2 * pw - KW + 1};
}

static MexdConv2dParams dw_params(const DwShape *s)
{
  MexdConv2dParams p = MEXD_CONV2D_PARAMS_DEFAULT;
  p.pad_h = (int)s->ph;
  p.pad_w = (int)s->pw;
  p.groups = (int)s->C;
  return p;
}

static char *dw_describe(const char *op, const HarnessCase *hc, const DwShape *s, const char *rest)
{
  return g_strdup_printf("%s %s %s x [%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
                         ",%" G_GINT64_FORMAT "] k %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                         " pad %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " %s",
                         op, hc->spec, mexd_dtype_name(hc->dtype), s->N, s->C, s->H, s->W, s->KH,
                         s->KW, s->ph, s->pw, rest);
}

typedef struct {
  gboolean acc, null_params, with_db;
  int64_t pad_a, pad_b, pad_out;
} DwRun;

static float *run_dw_input(MexdBackend *be, MexdDType dt, const DwShape *s, const DwRun *r,
                           const float *dy, const float *w, const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t xs[4] = {s->N, s->C, s->H, s->W}, ys[4] = {s->N, s->C, s->OH, s->OW},
          ws[4] = {s->C, 1, s->KH, s->KW};
  g_autoptr(MexdTensor) tdy = input(be, dt, 4, ys, dy, r->pad_a);
  g_autoptr(MexdTensor) tw = input(be, dt, 4, ws, w, r->pad_b);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, 4, xs, init, r->pad_out);
  MexdConv2dParams p = dw_params(s);
  CHECK_OK(mexd_conv2d_backward_input(o.t, tdy, tw, r->null_params ? NULL : &p, r->acc, &error),
           what);
  return outbuf_read(&o, what);
}

/* dw (old contents init_dw) and, with r->with_db, db (init_db) into *dw, *db. */
static void run_dw_weight(MexdBackend *be, MexdDType dt, const DwShape *s, const DwRun *r,
                          const float *dy, const float *x, const float *init_dw,
                          const float *init_db, float **dw, float **db, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t xs[4] = {s->N, s->C, s->H, s->W}, ys[4] = {s->N, s->C, s->OH, s->OW},
          ws[4] = {s->C, 1, s->KH, s->KW};
  g_autoptr(MexdTensor) tdy = input(be, dt, 4, ys, dy, r->pad_a);
  g_autoptr(MexdTensor) tx = input(be, dt, 4, xs, x, r->pad_b);
  g_auto(OutBuf) ow = {0};
  g_auto(OutBuf) ob = {0};
  outbuf_init(&ow, be, dt, 4, ws, init_dw, r->pad_out);
  if (r->with_db)
    outbuf_init(&ob, be, dt, 1, &s->C, init_db, r->pad_out ? r->pad_out + 2 : 0);
  MexdConv2dParams p = dw_params(s);
  CHECK_OK(mexd_conv2d_backward_weight(ow.t, ob.t, tdy, tx, r->null_params ? NULL : &p, &error),
           what);
  *dw = outbuf_read(&ow, what);
  *db = r->with_db ? outbuf_read(&ob, what) : NULL;
}

/* The forward in double: y = conv(x, w) + b, depthwise, stride 1 (b may be NULL). */
static void dw_forward(const DwShape *s, const double *x, const double *w, const double *b,
                       double *y)
{
  for (int64_t nc = 0; nc < s->N * s->C; nc++) {
    int64_t c = nc % s->C;
    for (int64_t a = 0; a < s->OH; a++)
      for (int64_t bb = 0; bb < s->OW; bb++) {
        double acc = b ? b[c] : 0;
        for (int64_t u = 0; u < s->KH; u++)
          for (int64_t v = 0; v < s->KW; v++) {
            int64_t i = a + u - s->ph, j = bb + v - s->pw;
            if (i >= 0 && i < s->H && j >= 0 && j < s->W)
              acc += x[(nc * s->H + i) * s->W + j] * w[(c * s->KH + u) * s->KW + v];
          }
        y[(nc * s->OH + a) * s->OW + bb] = acc;
      }
  }
}

/* The references, by running the forward's loops and sending each product's gradient back:
 * dx (without old contents), dw and db (likewise). */
static void ref_dw_bwd(const DwShape *s, const float *x, const float *w, const float *dy,
                       double *dx, double *dw, double *db)
{
  int64_t nx = s->N * s->C * s->H * s->W;
  for (int64_t k = 0; k < nx; k++)
    dx[k] = 0;
  for (int64_t k = 0; k < s->C * s->KH * s->KW; k++)
    dw[k] = 0;
  for (int64_t c = 0; c < s->C; c++)
    db[c] = 0;
  for (int64_t nc = 0; nc < s->N * s->C; nc++) {
    int64_t c = nc % s->C;
    for (int64_t a = 0; a < s->OH; a++)
      for (int64_t bb = 0; bb < s->OW; bb++) {
        double g = dy[(nc * s->OH + a) * s->OW + bb];
        db[c] += g;
        for (int64_t u = 0; u < s->KH; u++)
          for (int64_t v = 0; v < s->KW; v++) {
            int64_t i = a + u - s->ph, j = bb + v - s->pw;
            if (i < 0 || i >= s->H || j < 0 || j >= s->W)
              continue;
            dx[(nc * s->H + i) * s->W + j] += g * w[(c * s->KH + u) * s->KW + v];
            dw[(c * s->KH + u) * s->KW + v] += g * x[(nc * s->H + i) * s->W + j];
          }
      }
  }
}

static void check_dw(const HarnessCase *hc, const DwShape *s, const DwRun *r, const char *label)
{
  MexdDType dt = hc->dtype;
  int64_t nx = s->N * s->C * s->H * s->W, ny = s->N * s->C * s->OH * s->OW,
          nw = s->C * s->KH * s->KW;
  g_autofree float *x = harness_random(nx, -1, 1, dt);
  g_autofree float *w = harness_random(nw, -1, 1, dt);
  g_autofree float *dy = harness_random(ny, -1, 1, dt);
  g_autofree float *init_dx = old_contents(nx, r->acc, dt);
  /* dw and db always add: they start from random values */
  g_autofree float *init_dw = harness_random(nw, -1, 1, dt);
  g_autofree float *init_db = harness_random(s->C, -1, 1, dt);
  g_autofree char *rest = g_strdup_printf("acc %d params %s db %d pads %d/%d/%d (%s)", r->acc,
                                          r->null_params ? "NULL" : "given", r->with_db,
                                          (int)r->pad_a, (int)r->pad_b, (int)r->pad_out, label);
  g_autofree char *wi = dw_describe("conv2d_backward_input", hc, s, rest);
  g_autofree char *ww = dw_describe("conv2d_backward_weight", hc, s, rest);
  g_autofree char *wb = g_strdup_printf("%s: db", ww);
  g_test_message("%s", wi);
  g_autofree float *dx = run_dw_input(hc->be, dt, s, r, dy, w, init_dx, wi);
  float *dw0 = NULL, *db0 = NULL;
  run_dw_weight(hc->be, dt, s, r, dy, x, init_dw, init_db, &dw0, &db0, ww);
  g_autofree float *dw = dw0, *db = db0;
  double thr = harness_thr(hc, NMSE_F32);
  if (on_cpu(hc)) {
    g_autofree double *rx = g_new(double, nx), *rw = g_new(double, nw), *rb = g_new(double, s->C);
    ref_dw_bwd(s, x, w, dy, rx, rw, rb);
    add_init(rx, init_dx, nx);
    add_init(rw, init_dw, nw);
    add_init(rb, init_db, s->C);
    harness_assert_close_d(wi, dx, rx, nx, thr);
    harness_assert_close_d(ww, dw, rw, nw, thr);
    if (db)
      harness_assert_close_d(wb, db, rb, s->C, thr);
  } else {
    DwRun c = *r;
    c.pad_a = c.pad_b = c.pad_out = 0;
    g_autofree float *cx = run_dw_input(hc->cpu, dt, s, &c, dy, w, init_dx, wi);
    float *cw0 = NULL, *cb0 = NULL;
    run_dw_weight(hc->cpu, dt, s, &c, dy, x, init_dw, init_db, &cw0, &cb0, ww);
    g_autofree float *cw = cw0, *cb = cb0;
    harness_assert_close(wi, dx, cx, nx, thr);
    harness_assert_close(ww, dw, cw, nw, thr);
    if (db)
      harness_assert_close(wb, db, cb, s->C, thr);
  }
}

static void random_dw_run(DwRun *r)
{
  r->acc = g_test_rand_bit();
  r->with_db = g_test_rand_bit();
  r->pad_a = rand_pad();
  r->pad_b = rand_pad();
  r->pad_out = rand_pad();
}

static void test_dw_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    int64_t KH = 2 * g_test_rand_int_range(0, 4) + 1,
            KW = g_test_rand_bit() ? KH : 2 * g_test_rand_int_range(0, 4) + 1;
    if (g_test_rand_int_range(0, 4) == 0) { /* even kernels */
      KH++;
      KW = g_test_rand_bit() ? KW : KW + 1;
    }
    /* padding up to the kernel size and past it (whole rows of dy then see only padding) */
    int64_t ph = g_test_rand_int_range(0, (gint32)KH + 2),
            pw = g_test_rand_int_range(0, (gint32)KW + 2);
    int64_t H = harness_size(40), W = harness_size(40);
    H = MAX(H, KH - 2 * ph); /* at least one output position */
    W = MAX(W, KW - 2 * pw);
    int64_t C = harness_size(12), N = g_test_rand_int_range(1, 3);
    DwShape s = dw_shape(N, C, H, W, KH, KW, ph, pw);
    DwRun r = {0};
    random_dw_run(&r);
    check_dw(hc, &s, &r, "random");
  }
}

/* The model's uses (PPEG 7×7/5×5/3×3 "same"; the Nyström residual conv 33×1, pad 16×0), the
 * defaults (params NULL: C = 1), kernels as large as the padded input (one output position), and
 * a weight reduction over 90,000 output positions (chunks, then a second pass). */
static void test_dw_cases(const HarnessCase *hc)
{
  const int64_t cases[][8] = {
      {1, 16, 12, 12, 7, 7, 3, 3},  {1, 16, 12, 12, 5, 5, 2, 2}, {1, 16, 12, 12, 3, 3, 1, 1},
      {1, 4, 300, 8, 33, 1, 16, 0}, {2, 1, 9, 11, 3, 2, 0, 0},   {1, 3, 5, 4, 7, 6, 1, 1},
      {1, 2, 1, 1, 1, 1, 0, 0},     {1, 2, 1, 1, 3, 3, 2, 2},    {1, 2, 300, 300, 3, 3, 1, 1},
  };
  for (guint k = 0; k < G_N_ELEMENTS(cases); k++) {
    const int64_t *c = cases[k];
    DwShape s = dw_shape(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    DwRun r = {.acc = k % 2 == 1, .with_db = k % 3 != 0, .pad_a = k % 2, .pad_out = 3};
    check_dw(hc, &s, &r, "case");
  }
  DwShape s = dw_shape(2, 1, 6, 7, 3, 3, 0, 0); /* the defaults: no padding, groups 1 */
  DwRun r = {.null_params = TRUE, .with_db = TRUE, .acc = TRUE};
  check_dw(hc, &s, &r, "default params");
}

typedef struct {
  const DwShape *s;
  const double *r;
} DwCtx;

/* L(x, w, b) = Σ r ⊙ (conv(x, w) + b), v = [x, w, b]. */
static double dw_loss(const double *v, const void *ctx)
{
  const DwCtx *c = ctx;
  const DwShape *s = c->s;
  int64_t nx = s->N * s->C * s->H * s->W, ny = s->N * s->C * s->OH * s->OW,
          nw = s->C * s->KH * s->KW;
  g_autofree double *y = g_new(double, ny);
  dw_forward(s, v, v + nx, v + nx + nw, y);
  double L = 0;
  for (int64_t i = 0; i < ny; i++)
    L += c->r[i] * y[i];
  return L;
}

static void test_dw_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t cases[][8] = {
      {1, 1, 1, 1, 1, 1, 0, 0}, {2, 2, 5, 6, 3, 3, 1, 1}, {1, 3, 4, 7, 2, 5, 0, 2},
      {1, 2, 3, 3, 3, 3, 3, 3}, {1, 1, 9, 2, 5, 1, 2, 0},
  };
  for (guint k = 0; k < G_N_ELEMENTS(cases); k++) {
    const int64_t *c = cases[k];
    DwShape s = dw_shape(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    int64_t nx = s.N * s.C * s.H * s.W, ny = s.N * s.C * s.OH * s.OW, nw = s.C * s.KH * s.KW;
    g_autofree float *x = harness_random(nx, -1, 1, hc->dtype);
    g_autofree float *w = harness_random(nw, -1, 1, hc->dtype);
    g_autofree float *b = harness_random(s.C, -1, 1, hc->dtype);
    g_autofree float *r = harness_random(ny, -1, 1, hc->dtype);
    g_autofree double *v = g_new(double, nx + nw + s.C), *rd = to_double(r, ny);
    for (int64_t i = 0; i < nx; i++)
      v[i] = x[i];
    for (int64_t i = 0; i < nw; i++)
      v[nx + i] = w[i];
    for (int64_t i = 0; i < s.C; i++)
      v[nx + nw + i] = b[i];
    DwCtx ctx = {&s, rd};
    g_autofree double *g = fd_gradient(dw_loss, &ctx, v, nx + nw + s.C);
    DwRun run = {.with_db = TRUE};
    g_autofree char *what = dw_describe("conv2d backward", hc, &s, "vs differences");
    g_autofree float *dx = run_dw_input(hc->be, hc->dtype, &s, &run, r, w, NULL, what);
    g_autofree float *zw = g_new0(float, nw), *zb = g_new0(float, s.C);
    float *dw0 = NULL, *db0 = NULL;
    run_dw_weight(hc->be, hc->dtype, &s, &run, r, x, zw, zb, &dw0, &db0, what);
    g_autofree float *dw = dw0, *db = db0;
    harness_assert_close_d(what, dx, g, nx, thr_fd(hc));
    harness_assert_close_d(what, dw, g + nx, nw, thr_fd(hc));
    harness_assert_close_d(what, db, g + nx + nw, s.C, thr_fd(hc));
  }
}

/* More kernel taps than an invocation of the input gradient may loop over on a CPU device
 * (16,384): refused there with MEXD_ERROR_UNSUPPORTED; computed on cpu and on GPUs. */
static void test_dw_taps(const HarnessCase *hc)
{
  DwShape s = dw_shape(1, 1, 1, 16385, 1, 16385, 0, 0);
  int64_t xs[4] = {1, 1, 1, 16385}, ys[4] = {1, 1, 1, 1}, ws[4] = {1, 1, 1, 16385};
  g_autofree float *w = harness_random(16385, -1, 1, hc->dtype);
  float dy[1] = {0.5f};
  DwRun r = {0};
  if (!on_cpu(hc) && !mexd_vk_limits(hc->be)->is_gpu) {
    g_autoptr(MexdTensor) tdx = zeros(hc->be, hc->dtype, 4, xs);
    g_autoptr(MexdTensor) tdy = harness_tensor(hc->be, hc->dtype, 4, ys, dy);
    g_autoptr(MexdTensor) tw = harness_tensor(hc->be, hc->dtype, 4, ws, w);
    MexdConv2dParams p = dw_params(&s);
    ASSERT_FAILS(mexd_conv2d_backward_input(tdx, tdy, tw, &p, FALSE, ERR), MEXD_ERROR_UNSUPPORTED,
                 "conv2d_backward_input too many taps on a CPU device");
    return;
  }
  g_autofree float *dx = run_dw_input(hc->be, hc->dtype, &s, &r, dy, w, NULL, "many taps");
  for (int64_t j = 0; j < 16385; j++) /* dx[j] = dy·w[j]: one product each */
    if (dx[j] != (hc->dtype == MEXD_DTYPE_F16 ? harness_f16_round(0.5f * w[j]) : 0.5f * w[j]))
      g_error("conv2d_backward_input %s many taps: dx[%" G_GINT64_FORMAT "] = %g, want %g",
              hc->spec, j, dx[j], 0.5f * w[j]);
}

static void test_dw_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t xs[4] = {1, 2, 5, 5}, ys[4] = {1, 2, 5, 5}, ws[4] = {2, 1, 3, 3}, C = 2, big = 200;
  MexdConv2dParams p = MEXD_CONV2D_PARAMS_DEFAULT;
  p.pad_h = p.pad_w = 1;
  p.groups = 2;
  g_autoptr(MexdTensor) x = zeros(be, dt, 4, xs);
  g_autoptr(MexdTensor) dx = zeros(be, dt, 4, xs);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 4, ys);
  g_autoptr(MexdTensor) w = zeros(be, dt, 4, ws);
  g_autoptr(MexdTensor) dw = zeros(be, dt, 4, ws);
  g_autoptr(MexdTensor) db = zeros(be, dt, 1, &C);
  g_autoptr(MexdTensor) dy_b = zeros(be, dt, 4, (int64_t[]){1, 2, 3, 3});
  g_autoptr(MexdTensor) w_b = zeros(be, dt, 4, (int64_t[]){2, 2, 3, 3});
  g_autoptr(MexdTensor) w_c = zeros(be, dt, 4, (int64_t[]){3, 1, 3, 3});
  g_autoptr(MexdTensor) w_big = zeros(be, dt, 4, (int64_t[]){2, 1, 9, 3});
  g_autoptr(MexdTensor) x3 = zeros(be, dt, 3, (int64_t[]){2, 5, 5});
  g_autoptr(MexdTensor) db3 = zeros(be, dt, 1, (int64_t[]){3});
  g_autoptr(MexdTensor) xi = zeros(be, MEXD_DTYPE_I32, 4, xs);
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) s_dy = sub(store, 0, 4, ys), s_dx = sub(store, 40, 4, xs);
  g_autoptr(MexdTensor) s_in = sub(store, 45, 4, ws), s_db = sub(store, 50, 1, &C);
  GError *error = NULL;
  g_assert_true(mexd_conv2d_backward_input(dx, dy, w, &p, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_conv2d_backward_weight(dw, db, dy, x, &p, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_conv2d_backward_weight(dw, NULL, dy, x, &p, &error));
  g_assert_no_error(error);

  ASSERT_FAILS(mexd_conv2d_backward_input(NULL, dy, w, &p, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_input dx NULL");
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, NULL, w, &p, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_input dy NULL");
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, NULL, &p, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "conv2d_backward_input w NULL");
  ASSERT_FAILS(mexd_conv2d_backward_weight(NULL, db, dy, x, &p, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight dw NULL");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, NULL, x, &p, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight dy NULL");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, NULL, &p, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight x NULL");
  /* what the forward takes but the backward does not */
  MexdConv2dParams q = p;
  q.stride_h = 2;
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, w, &q, FALSE, ERR), MEXD_ERROR_UNSUPPORTED,
               "conv2d_backward_input stride 2");
  q = p;
  q.dil_w = 2;
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, x, &q, ERR), MEXD_ERROR_UNSUPPORTED,
               "conv2d_backward_weight dilation 2");
  q = p;
  q.groups = 1;
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, w, &q, FALSE, ERR), MEXD_ERROR_UNSUPPORTED,
               "conv2d_backward_input not depthwise");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, x, NULL, ERR), MEXD_ERROR_UNSUPPORTED,
               "conv2d_backward_weight params NULL with C = 2");
  q.groups = 0;
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, x, &q, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight groups 0");
  q = p;
  q.pad_h = -1;
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, w, &q, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_input negative padding");
  ASSERT_FAILS_NAMING(mexd_conv2d_backward_input(dx, dy_b, w, &p, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "conv2d_backward_input dy shape", "argument dy");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy_b, x, &p, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_weight dy shape");
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, w_b, &p, FALSE, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_input w [C,2,KH,KW]");
  ASSERT_FAILS_NAMING(mexd_conv2d_backward_weight(w_c, db, dy, x, &p, ERR), MEXD_ERROR_SHAPE,
                      "conv2d_backward_weight dw channels", "argument dw");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db3, dy, x, &p, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_weight db length");
  ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, w_big, &p, FALSE, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_input kernel larger than the padded input");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, x3, &p, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_weight 3-D x");
  ASSERT_FAILS(mexd_conv2d_backward_input(x3, dy, w, &p, FALSE, ERR), MEXD_ERROR_SHAPE,
               "conv2d_backward_input 3-D dx");
  ASSERT_FAILS(mexd_conv2d_backward_input(xi, dy, w, &p, FALSE, ERR), MEXD_ERROR_DTYPE,
               "conv2d_backward_input i32 dx");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, db, dy, xi, &p, ERR), MEXD_ERROR_DTYPE,
               "conv2d_backward_weight i32 x");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) wo = zeros(be, other_float(dt), 4, ws);
    g_autoptr(MexdTensor) dbo = zeros(be, other_float(dt), 1, &C);
    ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, wo, &p, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "conv2d_backward_input mixed float w");
    ASSERT_FAILS(mexd_conv2d_backward_weight(dw, dbo, dy, x, &p, ERR), MEXD_ERROR_DTYPE,
                 "conv2d_backward_weight mixed float db");
  }
  ASSERT_FAILS(mexd_conv2d_backward_input(s_dx, s_dy, w, &p, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "conv2d_backward_input dx partly over dy");
  ASSERT_FAILS(mexd_conv2d_backward_input(s_dx, dy, s_in, &p, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "conv2d_backward_input dx over w");
  ASSERT_FAILS(mexd_conv2d_backward_weight(s_in, db, dy, s_dx, &p, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "conv2d_backward_weight dw inside x");
  ASSERT_FAILS(mexd_conv2d_backward_weight(s_in, s_db, dy, x, &p, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight db inside dw");
  ASSERT_FAILS(mexd_conv2d_backward_weight(dw, s_db, s_dx, x, &p, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "conv2d_backward_weight db inside dy");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) wc = zeros(hc->cpu, dt, 4, ws);
    g_autoptr(MexdTensor) dbc = zeros(hc->cpu, dt, 1, &C);
    ASSERT_FAILS(mexd_conv2d_backward_input(dx, dy, wc, &p, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "conv2d_backward_input w on another backend");
    ASSERT_FAILS(mexd_conv2d_backward_weight(dw, dbc, dy, x, &p, ERR), MEXD_ERROR_BACKEND,
                 "conv2d_backward_weight db on another backend");
  }
}

/* ---- abs_sum_max ---- */

typedef struct {
  int ndim, axis;
  int64_t shape[4];
  float dy;
  gboolean acc;
  int64_t pad_x, pad_out;
} AsmRun;

static float *run_asm_bwd(MexdBackend *be, MexdDType dt, const AsmRun *a, const float *x,
                          const float *init, const char *what)
{
  g_autoptr(GError) error = NULL;
  int64_t one = 1;
  g_autoptr(MexdTensor) tx = input(be, dt, a->ndim, a->shape, x, a->pad_x);
  g_autoptr(MexdTensor) tdy = input(be, dt, 1, &one, &a->dy, a->pad_x);
  g_auto(OutBuf) o = {0};
  outbuf_init(&o, be, dt, a->ndim, a->shape, init, a->pad_out);
  CHECK_OK(mexd_abs_sum_max_backward(o.t, tx, tdy, a->axis, a->acc, &error), what);
  return outbuf_read(&o, what);
}

/* The lines of x [B,R,C]: their count, length, and element j of line l. */
static void asm_geom(const AsmRun *a, int64_t *L, int64_t *len)
{
  int64_t R = a->shape[a->ndim - 2], C = a->shape[a->ndim - 1];
  int64_t B = harness_numel(a->ndim, a->shape) / (R * C);
  *L = B * (a->axis == -1 ? R : C);
  *len = a->axis == -1 ? C : R;
}

static int64_t asm_elem(const AsmRun *a, int64_t l, int64_t j)
{
  int64_t R = a->shape[a->ndim - 2], C = a->shape[a->ndim - 1];
  if (a->axis == -1)
    return l * C + j; /* lines are the rows, batch after batch */
  int64_t b = l / C, c = l % C;
  return b * R * C + j * C + c;
}

/* Σ|x| of each line: in double (cpu's forward), or in f32 in element order (vulkan's). */
static double *asm_sums(const AsmRun *a, const float *x, gboolean f32_order)
{
  int64_t L, len;
  asm_geom(a, &L, &len);
  double *s = g_new(double, L);
  for (int64_t l = 0; l < L; l++) {
    double d = 0;
    float f = 0;
    for (int64_t j = 0; j < len; j++) {
      d += fabs((double)x[asm_elem(a, l, j)]);
      f += fabsf(x[asm_elem(a, l, j)]);
    }
    s[l] = f32_order ? f : d;
  }
  return s;
}

/* dx (without old contents) = dy·sign(x)/n on the n lines whose sum is the maximum of `sums`
 * (the NaN lines when there is one). */
static double *ref_asm_bwd(const AsmRun *a, const float *x, const double *sums, int64_t *n_max)
{
  int64_t L, len, n = harness_numel(a->ndim, a->shape);
  asm_geom(a, &L, &len);
  double best = 0;
  gboolean nan_seen = FALSE;
  for (int64_t l = 0; l < L; l++) {
    if (isnan(sums[l]))
      nan_seen = TRUE;
    else
      best = MAX(best, sums[l]);
  }
  int64_t count = 0;
  for (int64_t l = 0; l < L; l++)
    count += nan_seen ? isnan(sums[l]) != 0 : sums[l] == best;
  double *dx = g_new0(double, n);
  for (int64_t l = 0; l < L; l++) {
    if (nan_seen ? !isnan(sums[l]) : sums[l] != best)
      continue;
    for (int64_t j = 0; j < len; j++) {
      int64_t e = asm_elem(a, l, j);
      double sg = x[e] > 0 ? 1 : x[e] < 0 ? -1 : x[e] == 0 ? 0 : NAN;
      dx[e] = (double)a->dy * sg / (double)count;
    }
  }
  *n_max = count;
  return dx;
}

static void check_asm(const HarnessCase *hc, const AsmRun *a, const float *x, const char *label)
{
  int64_t n = harness_numel(a->ndim, a->shape), n_max;
  g_autofree float *init = old_contents(n, a->acc, hc->dtype);
  g_autofree char *what = describe("abs_sum_max_backward", hc, a->ndim, a->shape,
                                   "axis %d dy %g acc %d pads %d/%d (%s)", a->axis, (double)a->dy,
                                   a->acc, (int)a->pad_x, (int)a->pad_out, label);
  g_autofree float *out = run_asm_bwd(hc->be, hc->dtype, a, x, init, what);
  if (on_cpu(hc)) {
    g_autofree double *sums = asm_sums(a, x, FALSE);
    g_autofree double *ref = ref_asm_bwd(a, x, sums, &n_max);
    add_init(ref, init, n);
    harness_assert_close_d(what, out, ref, n, harness_thr(hc, NMSE_F32));
  } else {
    AsmRun c = *a;
    c.pad_x = c.pad_out = 0;
    g_autofree float *ref = run_asm_bwd(hc->cpu, hc->dtype, &c, x, init, what);
    harness_assert_close(what, out, ref, n, harness_thr(hc, NMSE_F32));
  }
}

/* Random x [..., R, C] with one line made the clear maximum (so that no near-tie can resolve
 * differently under f32 and double sums). */
static float *asm_input(const AsmRun *a, MexdDType dt)
{
  int64_t n = harness_numel(a->ndim, a->shape), L, len;
  asm_geom(a, &L, &len);
  float *x = harness_random(n, -1, 1, dt);
  int64_t top = g_test_rand_int_range(0, (gint32)L);
  for (int64_t j = 0; j < len; j++) {
    int64_t e = asm_elem(a, top, j);
    x[e] = x[e] < 0 ? x[e] - 1.0f : x[e] + 1.0f;
    if (dt == MEXD_DTYPE_F16)
      x[e] = harness_f16_round(x[e]);
  }
  return x;
}

static void test_asm_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 12; iter++) {
    AsmRun a = {.ndim = g_test_rand_int_range(2, 5), .axis = iter % 2 ? -1 : -2};
    for (int i = 0; i < a.ndim - 2; i++)
      a.shape[i] = g_test_rand_int_range(1, 4);
    a.shape[a.ndim - 2] = harness_size(200);
    a.shape[a.ndim - 1] = harness_size(200);
    a.dy = harness_f16_round((float)g_test_rand_double_range(-3, 3));
    a.acc = g_test_rand_bit();
    a.pad_x = rand_pad();
    a.pad_out = rand_pad();
    g_autofree float *x = asm_input(&a, hc->dtype);
    check_asm(hc, &a, x, "random");
  }
}

typedef struct {
  const AsmRun *a;
} AsmCtx;

static double asm_loss(const double *v, const void *ctx)
{
  const AsmCtx *c = ctx;
  int64_t L, len;
  asm_geom(c->a, &L, &len);
  double best = 0;
  for (int64_t l = 0; l < L; l++) {
    double s = 0;
    for (int64_t j = 0; j < len; j++)
      s += fabs(v[asm_elem(c->a, l, j)]);
    best = MAX(best, s);
  }
  return c->a->dy * best;
}

/* L = dy·max Σ|x| by differences, away from ties and from x = 0. */
static void test_asm_fd(const HarnessCase *hc)
{
  if (!on_cpu(hc)) {
    g_test_skip("finite differences run on cpu (other backends are held to cpu)");
    return;
  }
  const int64_t shapes[][3] = {{1, 1, 1}, {1, 5, 7}, {3, 4, 2}, {2, 1, 9}};
  for (guint k = 0; k < G_N_ELEMENTS(shapes); k++)
    for (int axis = -2; axis <= -1; axis++) {
      AsmRun a = {.ndim = 3, .axis = axis, .dy = 1.25f};
      memcpy(a.shape, shapes[k], sizeof shapes[k]);
      int64_t n = harness_numel(3, a.shape);
      g_autofree float *x = asm_input(&a, hc->dtype);
      for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) < 0.05f)
          x[i] = x[i] < 0 ? -0.5f : 0.5f;
      g_autofree double *xd = to_double(x, n);
      AsmCtx c = {&a};
      g_autofree double *g = fd_gradient(asm_loss, &c, xd, n);
      g_autofree char *what =
          describe("abs_sum_max_backward", hc, 3, a.shape, "axis %d vs differences", axis);
      g_autofree float *out = run_asm_bwd(hc->be, hc->dtype, &a, x, NULL, what);
      harness_assert_close_d(what, out, g, n, thr_fd(hc));
    }
}

/* Exact ties share the gradient evenly; sign(0) = 0; NaN lines attain a NaN maximum; all zeros;
 * long lines (many segments) and many lines; and lines that tie only in f32 in element order: the
 * backward picks the lines the forward's sum picks on the same backend. */
static void test_asm_special(const HarnessCase *hc)
{
  MexdDType dt = hc->dtype;
  /* three rows (and, transposed, columns) that are permutations of one another: exact sums */
  for (int axis = -2; axis <= -1; axis++) {
    AsmRun a = {.ndim = 3, .axis = axis, .shape = {2, 5, 6}, .dy = 3.0f, .pad_x = 1};
    if (axis == -2) {
      a.shape[1] = 6;
      a.shape[2] = 5;
    }
    int64_t n = 60, L, len;
    asm_geom(&a, &L, &len);
    g_autofree float *x = g_new(float, n);
    const float vals[6] = {0.5f, -1.0f, 1.5f, -2.0f, 0.0f, 1.0f};
    for (int64_t l = 0; l < L; l++)
      for (int64_t j = 0; j < len; j++) /* lines 1, 4 and 7 tie; the others are smaller */
        x[asm_elem(&a, l, j)] = l % 3 == 1 ? vals[(j + l) % 6] : 0.25f * vals[j % 6];
    for (int acc = 0; acc < 2; acc++) {
      a.acc = acc;
      int64_t n_max;
      g_autofree double *sums = asm_sums(&a, x, FALSE);
      g_autofree double *ref = ref_asm_bwd(&a, x, sums, &n_max);
      g_assert_cmpint(n_max, ==, 3);
      g_autofree float *init = old_contents(n, acc, dt);
      g_autofree float *out = run_asm_bwd(hc->be, dt, &a, x, init, "abs_sum_max_backward ties");
      add_init(ref, init, n);
      harness_assert_close_d("abs_sum_max_backward ties", out, ref, n, harness_thr(hc, NMSE_F32));
      for (int64_t e = 0; !acc && e < n; e++) /* dy·sign/3 exactly where sign is 0 */
        if (x[e] == 0)
          g_assert_cmpfloat(out[e], ==, 0.0f);
    }
  }
  /* NaN: the lines whose sum is NaN attain the (NaN) maximum */
  for (int n_nan = 1; n_nan <= 2; n_nan++) {
    AsmRun a = {.ndim = 2, .axis = -1, .shape = {4, 3}, .dy = 2.0f};
    float x[12] = {1, -2, 3, 9, 9, 9, -1, 0, 4, 1, 1, 1};
    x[1] = NAN;
    if (n_nan == 2)
      x[8] = NAN;
    g_autofree float *out = run_asm_bwd(hc->be, dt, &a, x, NULL, "abs_sum_max_backward NaN");
    for (int e = 0; e < 12; e++) {
      int line = e / 3;
      gboolean on = line == 0 || (n_nan == 2 && line == 2);
      float want = !on           ? 0.0f
                   : isnan(x[e]) ? NAN
                   : x[e] > 0    ? 2.0f / n_nan
                   : x[e] < 0    ? -2.0f / n_nan
                                 : 0.0f;
      if (isnan(want) ? !isnan(out[e]) : out[e] != want)
        g_error("abs_sum_max_backward %s NaN x %d: dx[%d] = %g, want %g", hc->spec, n_nan, e,
                out[e], want);
    }
  }
  {
    /* all zeros: every line attains 0, and every sign is 0 */
    AsmRun a = {.ndim = 2, .axis = -2, .shape = {3, 4}, .dy = 1.0f};
    float x[12] = {0};
    g_autofree float *out = run_asm_bwd(hc->be, dt, &a, x, NULL, "abs_sum_max_backward zeros");
    for (int e = 0; e < 12; e++)
      g_assert_cmpfloat(out[e], ==, 0.0f);
  }
  /* two long lines (many segments) that are reverses of one another tie exactly (multiples of
   * 1/4: every partial sum is exact), a third is smaller: a segment summed wrong breaks the tie */
  for (int axis = -2; axis <= -1; axis++) {
    AsmRun a = {.ndim = 2, .axis = axis, .shape = {3, 70000}, .dy = 2.0f, .pad_x = 1};
    if (axis == -2) {
      a.shape[0] = 70000;
      a.shape[1] = 3;
    }
    g_autofree float *x = g_new(float, 210000);
    for (int64_t j = 0; j < 70000; j++) {
      float v = 0.25f * (float)((j * 7919) % 5) * (j % 2 ? 1.0f : -1.0f);
      x[asm_elem(&a, 0, j)] = v;
      x[asm_elem(&a, 1, j)] = 0.5f * v;
      x[asm_elem(&a, 2, 69999 - j)] = v;
    }
    int64_t n_max;
    g_autofree double *sums = asm_sums(&a, x, FALSE);
    g_autofree double *ref = ref_asm_bwd(&a, x, sums, &n_max);
    g_assert_cmpint(n_max, ==, 2);
    g_autofree float *out = run_asm_bwd(hc->be, dt, &a, x, NULL, "abs_sum_max_backward long tie");
    harness_assert_close_d("abs_sum_max_backward long tie", out, ref, 210000, harness_thr(hc, 0));
  }
  const int64_t longs[][3] = {{-1, 2, 70000}, {-2, 70000, 2}, {-1, 70000, 3}, {-2, 3, 70000}};
  for (guint k = 0; k < G_N_ELEMENTS(longs); k++) {
    AsmRun a = {.ndim = 2,
                .axis = (int)longs[k][0],
                .shape = {longs[k][1], longs[k][2]},
                .dy = -1.5f,
                .acc = k % 2,
                .pad_x = 3,
                .pad_out = 1};
    g_autofree float *x = asm_input(&a, dt);
    check_asm(hc, &a, x, k < 2 ? "long lines" : "many lines");
  }
  {
    /* row 0 = [1, 2^-24 × 8] sums to 1 in f32 in order (each addition rounds to even) but to
     * 1 + 2^-21 in double; row 1 = [1, 0 …]; row 2 smaller */
    AsmRun a = {.ndim = 2, .axis = -1, .shape = {3, 9}, .dy = 1.0f};
    float x[27] = {0};
    x[0] = x[9] = 1.0f;
    for (int j = 1; j < 9; j++)
      x[j] = ldexpf(1.0f, -24);
    x[18] = 0.5f;
    g_autofree double *sums = asm_sums(&a, x, !on_cpu(hc));
    int64_t n_max;
    g_autofree double *ref = ref_asm_bwd(&a, x, sums, &n_max);
    g_assert_cmpint(n_max, ==, on_cpu(hc) ? 1 : 2);
    /* the forward on this backend takes the same sums */
    g_autoptr(GError) error = NULL;
    int64_t one = 1;
    g_autoptr(MexdTensor) tx = harness_tensor(hc->be, dt, 2, a.shape, x);
    g_autoptr(MexdTensor) ty = zeros(hc->be, dt, 1, &one);
    CHECK_OK(mexd_abs_sum_max(ty, tx, -1, &error), "abs_sum_max f32 tie");
    g_autofree float *y = harness_read(ty);
    float best = on_cpu(hc) ? (float)sums[0] : 1.0f;
    g_assert_cmpfloat(y[0], ==, dt == MEXD_DTYPE_F16 ? harness_f16_round(best) : best);
    g_autofree float *out = run_asm_bwd(hc->be, dt, &a, x, NULL, "abs_sum_max_backward f32 tie");
    harness_assert_close_d("abs_sum_max_backward f32 tie", out, ref, 27, harness_thr(hc, 0));
  }
}

static void test_asm_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype;
  int64_t sh[2] = {3, 4}, one = 1, two = 2, big = 30;
  g_autoptr(MexdTensor) x = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dx = zeros(be, dt, 2, sh);
  g_autoptr(MexdTensor) dy = zeros(be, dt, 1, &one);
  g_autoptr(MexdTensor) dy2 = zeros(be, dt, 1, &two);
  g_autoptr(MexdTensor) dyi = zeros(be, MEXD_DTYPE_I32, 1, &one);
  g_autoptr(MexdTensor) x1 = zeros(be, dt, 1, (int64_t[]){12});
  g_autoptr(MexdTensor) dx1 = zeros(be, dt, 1, (int64_t[]){12});
  g_autoptr(MexdTensor) dx_t = zeros(be, dt, 2, (int64_t[]){4, 3});
  g_autoptr(MexdTensor) store = zeros(be, dt, 1, &big);
  g_autoptr(MexdTensor) s_x = sub(store, 0, 2, sh), s_dx = sub(store, 6, 2, sh);
  g_autoptr(MexdTensor) s_dy = sub(store, 10, 1, &one); /* inside s_dx */
  GError *error = NULL;
  g_assert_true(mexd_abs_sum_max_backward(dx, x, dy, -1, FALSE, &error));
  g_assert_no_error(error);
  g_assert_true(mexd_abs_sum_max_backward(dx, x, dy, -2, TRUE, &error));
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_abs_sum_max_backward(NULL, x, dy, -1, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "abs_sum_max_backward dx NULL");
  ASSERT_FAILS(mexd_abs_sum_max_backward(dx, NULL, dy, -1, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "abs_sum_max_backward x NULL");
  ASSERT_FAILS(mexd_abs_sum_max_backward(dx, x, NULL, -1, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "abs_sum_max_backward dy NULL");
  const int bad_axes[] = {0, 1, -3};
  for (guint i = 0; i < G_N_ELEMENTS(bad_axes); i++)
    ASSERT_FAILS(mexd_abs_sum_max_backward(dx, x, dy, bad_axes[i], FALSE, ERR),
                 MEXD_ERROR_INVALID_ARGUMENT, "abs_sum_max_backward bad axis");
  ASSERT_FAILS(mexd_abs_sum_max_backward(dx1, x1, dy, -1, FALSE, ERR), MEXD_ERROR_SHAPE,
               "abs_sum_max_backward 1-D x");
  ASSERT_FAILS_NAMING(mexd_abs_sum_max_backward(dx_t, x, dy, -1, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "abs_sum_max_backward dx shape", "argument dx");
  ASSERT_FAILS_NAMING(mexd_abs_sum_max_backward(dx, x, dy2, -1, FALSE, ERR), MEXD_ERROR_SHAPE,
                      "abs_sum_max_backward dy [2]", "argument dy");
  ASSERT_FAILS(mexd_abs_sum_max_backward(dx, x, dyi, -1, FALSE, ERR), MEXD_ERROR_DTYPE,
               "abs_sum_max_backward i32 dy");
  if (mexd_backend_has_f16(be)) {
    g_autoptr(MexdTensor) xo = zeros(be, other_float(dt), 2, sh);
    ASSERT_FAILS(mexd_abs_sum_max_backward(dx, xo, dy, -1, FALSE, ERR), MEXD_ERROR_DTYPE,
                 "abs_sum_max_backward mixed float x");
  }
  ASSERT_FAILS(mexd_abs_sum_max_backward(x, x, dy, -1, FALSE, ERR), MEXD_ERROR_INVALID_ARGUMENT,
               "abs_sum_max_backward dx = x");
  ASSERT_FAILS(mexd_abs_sum_max_backward(s_dx, s_x, dy, -1, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "abs_sum_max_backward dx partly over x");
  ASSERT_FAILS(mexd_abs_sum_max_backward(s_dx, x, s_dy, -1, FALSE, ERR),
               MEXD_ERROR_INVALID_ARGUMENT, "abs_sum_max_backward dy inside dx");
  if (!on_cpu(hc)) {
    g_autoptr(MexdTensor) dyc = zeros(hc->cpu, dt, 1, &one);
    ASSERT_FAILS(mexd_abs_sum_max_backward(dx, x, dyc, -1, FALSE, ERR), MEXD_ERROR_BACKEND,
                 "abs_sum_max_backward dy on another backend");
  }
}

/* ---- limits of CPU devices ---- */

/* The single-workgroup passes refuse, on a CPU Vulkan device, sizes at which lavapipe would cut
 * their loops short (grad.c's CPU_DEVICE_MAX_LOOP): cross-entropy over 3.9 million rows of one
 * class, abs_sum_max_backward over 3.9 million lines of one element.  Nothing is read: the
 * tensors stay uninitialised. */
static void test_grad_cpu_device_limits(const HarnessCase *hc)
{
  if (on_cpu(hc) || mexd_vk_limits(hc->be)->is_gpu) {
    g_test_skip("a limit of CPU Vulkan devices only");
    return;
  }
  g_autoptr(GError) error = NULL;
  int64_t rows = 3900000, ls[2] = {rows, 1}, xs[2] = {1, rows}, one = 1;
  g_autoptr(MexdTensor) z = mexd_tensor_new(hc->be, hc->dtype, 2, ls, &error);
  g_assert_no_error(error);
  g_autoptr(MexdTensor) lab = mexd_tensor_new(hc->be, MEXD_DTYPE_I32, 1, &rows, &error);
  g_assert_no_error(error);
  g_autoptr(MexdTensor) loss = zeros(hc->be, hc->dtype, 1, &one);
  ASSERT_FAILS(mexd_cross_entropy(loss, z, lab, ERR), MEXD_ERROR_UNSUPPORTED,
               "cross_entropy over too many rows for a CPU device");
  g_autoptr(MexdTensor) x = mexd_tensor_reshape(z, 2, xs, &error);
  g_assert_no_error(error);
  g_autoptr(MexdTensor) dx = mexd_tensor_new(hc->be, hc->dtype, 2, xs, &error);
  g_assert_no_error(error);
  ASSERT_FAILS(mexd_abs_sum_max_backward(dx, x, loss, -2, FALSE, ERR), MEXD_ERROR_UNSUPPORTED,
               "abs_sum_max_backward over too many lines for a CPU device");
}

/* ---- determinism ---- */

static void assert_same_bits(const char *what, const float *a, const float *b, int64_t n)
{
  if (memcmp(a, b, sizeof(float) * (size_t)n) != 0)
    g_error("%s: two runs differ", what);
}

/* grad.h: no float atomics, so every result is the same bits run to run; the ops that sum many
 * contributions, twice each. */
static void test_grad_deterministic(const HarnessCase *hc)
{
  MexdDType dt = hc->dtype;
  {
    ScatterRun s = {.M = 7, .N = 300, .K = 20000, .pad_x = 1};
    g_autofree float *x = harness_random(s.K * s.N, -1, 1, dt);
    g_autofree int32_t *idx = random_indices(s.K, s.M);
    g_autofree float *a = run_scatter(hc->be, dt, &s, x, idx, NULL, "scatter_add_rows twice");
    g_autofree float *b = run_scatter(hc->be, dt, &s, x, idx, NULL, "scatter_add_rows twice");
    assert_same_bits("scatter_add_rows", a, b, s.M * s.N);
  }
  {
    int64_t shape[2] = {70000, 3};
    g_autofree float *x = harness_random(210000, -1, 1, dt);
    g_autofree float *a = run_sum_rows(hc->be, dt, 2, shape, x, FALSE, NULL, 0, 0, "sum_rows");
    g_autofree float *b = run_sum_rows(hc->be, dt, 2, shape, x, FALSE, NULL, 0, 0, "sum_rows");
    assert_same_bits("sum_rows", a, b, 3);
  }
  {
    LnRun l = {.ndim = 2, .shape = {3000, 64}, .eps = 1e-5f, .want_dg = TRUE, .want_db = TRUE};
    g_autofree float *x = harness_random(3000 * 64, -2, 2, dt);
    g_autofree float *dy = harness_random(3000 * 64, -1, 1, dt);
    g_autofree float *z = g_new0(float, 64);
    g_auto(LnOut) a = {0};
    g_auto(LnOut) b = {0};
    run_layernorm_bwd(hc->be, dt, &l, x, NULL, dy, NULL, z, z, &a, "layernorm_backward");
    run_layernorm_bwd(hc->be, dt, &l, x, NULL, dy, NULL, z, z, &b, "layernorm_backward");
    assert_same_bits("layernorm_backward dgamma", a.dg, b.dg, 64);
    assert_same_bits("layernorm_backward dbeta", a.db, b.db, 64);
  }
  {
    DwShape s = dw_shape(2, 3, 120, 120, 3, 3, 1, 1);
    DwRun r = {.with_db = TRUE};
    int64_t nx = 2 * 3 * 120 * 120;
    g_autofree float *x = harness_random(nx, -1, 1, dt);
    g_autofree float *dy = harness_random(nx, -1, 1, dt);
    g_autofree float *zw = g_new0(float, 27), *zb = g_new0(float, 3);
    float *wa = NULL, *ba = NULL, *wb = NULL, *bb = NULL;
    run_dw_weight(hc->be, dt, &s, &r, dy, x, zw, zb, &wa, &ba, "conv2d_backward_weight");
    run_dw_weight(hc->be, dt, &s, &r, dy, x, zw, zb, &wb, &bb, "conv2d_backward_weight");
    assert_same_bits("conv2d_backward_weight dw", wa, wb, 27);
    assert_same_bits("conv2d_backward_weight db", ba, bb, 3);
    g_free(wa);
    g_free(ba);
    g_free(wb);
    g_free(bb);
  }
  {
    XentRun x = {.R = 5000, .C = 10};
    g_autofree int32_t *lab = xent_labels(x.R, x.C);
    g_autofree float *z = xent_logits(x.R, x.C, 3, FALSE, lab, dt);
    float a = run_xent(hc->be, dt, &x, z, lab, "cross_entropy");
    float b = run_xent(hc->be, dt, &x, z, lab, "cross_entropy");
    assert_same_bits("cross_entropy", &a, &b, 1);
    MseRun m = {.ndim = 1, .shape = {300001}};
    g_autofree float *y = harness_random(300001, -1, 1, dt);
    g_autofree float *t = harness_random(300001, -1, 1, dt);
    float c = run_mse(hc->be, dt, &m, y, t, "mse"), d = run_mse(hc->be, dt, &m, y, t, "mse");
    assert_same_bits("mse", &c, &d, 1);
  }
}

void register_grad_tests(void)
{
  harness_add("grad/unary/random", HARNESS_BOTH, test_unary_bwd_random);
  harness_add("grad/unary/fd", HARNESS_BOTH, test_unary_bwd_fd);
  harness_add("grad/unary/special", HARNESS_BOTH, test_unary_bwd_special);
  harness_add("grad/unary/long", HARNESS_BOTH, test_unary_bwd_long);
  harness_add("grad/unary/errors", HARNESS_BOTH, test_unary_bwd_errors);
  harness_add("grad/softmax/random", HARNESS_BOTH, test_softmax_bwd_random);
  harness_add("grad/softmax/fd", HARNESS_BOTH, test_softmax_bwd_fd);
  harness_add("grad/softmax/long", HARNESS_BOTH, test_softmax_bwd_long);
  harness_add("grad/softmax/errors", HARNESS_BOTH, test_softmax_bwd_errors);
  harness_add("grad/layernorm/random", HARNESS_BOTH, test_layernorm_bwd_random);
  harness_add("grad/layernorm/fd", HARNESS_BOTH, test_layernorm_bwd_fd);
  harness_add("grad/layernorm/special", HARNESS_BOTH, test_layernorm_bwd_special);
  harness_add("grad/layernorm/errors", HARNESS_BOTH, test_layernorm_bwd_errors);
  harness_add("grad/sum_rows/random", HARNESS_BOTH, test_sum_rows_random);
  harness_add("grad/sum_rows/fd", HARNESS_BOTH, test_sum_rows_fd);
  harness_add("grad/sum_rows/long", HARNESS_BOTH, test_sum_rows_long);
  harness_add("grad/sum_rows/errors", HARNESS_BOTH, test_sum_rows_errors);
  harness_add("grad/scatter_add/random", HARNESS_BOTH, test_scatter_random);
  harness_add("grad/scatter_add/fd", HARNESS_BOTH, test_scatter_fd);
  harness_add("grad/scatter_add/long", HARNESS_BOTH, test_scatter_long);
  harness_add("grad/scatter_add/bad-index", HARNESS_BOTH, test_scatter_bad_index);
  harness_add("grad/scatter_add/errors", HARNESS_BOTH, test_scatter_errors);
  harness_add("grad/slice/random", HARNESS_BOTH, test_slice_random);
  harness_add("grad/slice/fd", HARNESS_BOTH, test_slice_fd);
  harness_add("grad/slice/errors", HARNESS_BOTH, test_slice_errors);
  harness_add("grad/cross_entropy/random", HARNESS_BOTH, test_xent_random);
  harness_add("grad/cross_entropy/fd", HARNESS_BOTH, test_xent_fd);
  harness_add("grad/cross_entropy/special", HARNESS_BOTH, test_xent_special);
  harness_add("grad/cross_entropy/bad-label", HARNESS_BOTH, test_xent_bad_label);
  harness_add("grad/cross_entropy/errors", HARNESS_BOTH, test_xent_errors);
  harness_add("grad/mse/random", HARNESS_BOTH, test_mse_random);
  harness_add("grad/mse/fd", HARNESS_BOTH, test_mse_fd);
  harness_add("grad/mse/errors", HARNESS_BOTH, test_mse_errors);
  harness_add("grad/dropout/random", HARNESS_BOTH, test_dropout_random);
  harness_add("grad/dropout/mask", HARNESS_BOTH, test_dropout_mask);
  harness_add("grad/dropout/fd", HARNESS_BOTH, test_dropout_fd);
  harness_add("grad/dropout/grid", HARNESS_F32, test_dropout_grid);
  harness_add("grad/dropout/errors", HARNESS_BOTH, test_dropout_errors);
  harness_add("grad/conv2d_dw/random", HARNESS_BOTH, test_dw_random);
  harness_add("grad/conv2d_dw/cases", HARNESS_BOTH, test_dw_cases);
  harness_add("grad/conv2d_dw/fd", HARNESS_BOTH, test_dw_fd);
  harness_add("grad/conv2d_dw/taps", HARNESS_BOTH, test_dw_taps);
  harness_add("grad/conv2d_dw/errors", HARNESS_BOTH, test_dw_errors);
  harness_add("grad/abs_sum_max/random", HARNESS_BOTH, test_asm_random);
  harness_add("grad/abs_sum_max/fd", HARNESS_BOTH, test_asm_fd);
  harness_add("grad/abs_sum_max/special", HARNESS_BOTH, test_asm_special);
  harness_add("grad/abs_sum_max/errors", HARNESS_BOTH, test_asm_errors);
  harness_add("grad/deterministic", HARNESS_BOTH, test_grad_deterministic);
  harness_add("grad/cpu-device-limits", HARNESS_F32, test_grad_cpu_device_limits);
}
