/* op-elementwise.c: mexd_unary (relu, gelu, softplus, scale) and mexd_binary (add, sub, mul, div
 * with broadcasting) against naive double-precision references (cpu) and against cpu (others).
 * Inputs are often views at an odd element offset inside a larger tensor, so the shaders'
 * binding offsets are exercised too. */
#include "harness.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---- */

/* A tensor of `shape` holding `data`, as a view `pad` elements into a larger 1-D tensor (pad 0:
 * a plain tensor).  The elements before the view hold garbage. */
static int64_t random_pad(void)
{
  return g_test_rand_bit() ? 0 : g_test_rand_int_range(1, 4);
}

/* A random shape of 1..4 dims with at most a few ten thousand elements. */
static int random_shape(int64_t shape[4])
{
  static const int64_t max_dim[5] = {0, 3000, 200, 40, 12};
  int ndim = g_test_rand_int_range(1, 5);
  for (int i = 0; i < ndim; i++)
    shape[i] = harness_size(max_dim[ndim]);
  return ndim;
}

/* ---- unary ---- */

static const char *const unary_names[] = {"relu", "gelu", "softplus", "scale",
                                          "scale_eye", "tanh", "sigmoid"};

static double ref_unary1(MexdUnaryOp op, double x, double a, double b)
{
  switch (op) {
  case MEXD_UNARY_RELU: return x < 0 ? 0 : x;
  case MEXD_UNARY_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  case MEXD_UNARY_SOFTPLUS: return x > 20 ? x : log1p(exp(x));
  case MEXD_UNARY_TANH: return tanh(x);
  case MEXD_UNARY_SIGMOID: return 1 / (1 + exp(-x));
  case MEXD_UNARY_SCALE: break;
  case MEXD_UNARY_SCALE_EYE: break; /* tested in op-mexd.c (it needs the shape) */
  }
  return a * x + b;
}

/* Runs the op through its wrapper (or mexd_unary) on `be`; in place when `inplace`. */
static float *run_unary(MexdBackend *be, MexdDType dt, MexdUnaryOp op, float a, float b, int ndim,
                        const int64_t *shape, const float *x, gboolean inplace, int64_t pad,
                        gboolean wrapper)
{
  g_autoptr(MexdTensor) tx = harness_view_tensor(be, dt, ndim, shape, x, pad);
  g_autoptr(MexdTensor) ty = NULL;
  g_autoptr(GError) error = NULL;
  ty = inplace ? mexd_tensor_ref(tx) : mexd_tensor_new(be, dt, ndim, shape, &error);
  g_assert_no_error(error);
  gboolean ok;
  if (!wrapper)
    ok = mexd_unary(ty, tx, op, a, b, &error);
  else if (op == MEXD_UNARY_RELU)
    ok = mexd_relu(ty, tx, &error);
  else if (op == MEXD_UNARY_GELU)
    ok = mexd_gelu(ty, tx, &error);
  else if (op == MEXD_UNARY_SOFTPLUS)
    ok = mexd_softplus(ty, tx, &error);
  else if (op == MEXD_UNARY_TANH)
    ok = mexd_tanh(ty, tx, &error);
  else if (op == MEXD_UNARY_SIGMOID)
    ok = mexd_sigmoid(ty, tx, &error);
  else
    ok = mexd_scale(ty, tx, a, b, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  return harness_read(ty);
}

/* Checks one unary run: against the double reference on cpu, against cpu elsewhere; with
 * `also_ref` other backends are held to the double reference as well. */
static void check_unary(const HarnessCase *hc, MexdUnaryOp op, float a, float b, int ndim,
                        const int64_t *shape, const float *x, gboolean also_ref, const char *label)
{
  int64_t n = harness_numel(ndim, shape);
  gboolean inplace = g_test_rand_bit(), wrapper = g_test_rand_bit();
  int64_t pad = random_pad();
  g_autofree char *ss = harness_shape_str(ndim, shape);
  g_autofree char *what = g_strdup_printf("%s %s %s %s a %g b %g%s pad %" G_GINT64_FORMAT " (%s)",
                                          unary_names[op], hc->spec, mexd_dtype_name(hc->dtype), ss,
                                          a, b, inplace ? " in place" : "", pad, label);
  g_autofree float *out =
      run_unary(hc->be, hc->dtype, op, a, b, ndim, shape, x, inplace, pad, wrapper);
  double thr = harness_thr(hc, NMSE_F32);
  if (hc->be == hc->cpu || also_ref) {
    g_autofree double *ref = g_new(double, n);
    for (int64_t i = 0; i < n; i++)
      ref[i] = ref_unary1(op, x[i], a, b);
    harness_assert_close_d(what, out, ref, n, thr);
  }
  if (hc->be != hc->cpu) {
    g_autofree float *ref =
        run_unary(hc->cpu, hc->dtype, op, a, b, ndim, shape, x, FALSE, 0, FALSE);
    harness_assert_close(what, out, ref, n, thr);
  }
}

/* Ranges where every result has full relative precision even alone (a shape can be [1]): gelu
 * stops at −3 (below, 1 + erf cancels: test_unary_tails and test_gelu_grid cover it), softplus
 * in f16 at −9.5 (below, e^x is no longer a normal f16). */
static void test_unary_random(const HarnessCase *hc)
{
  gboolean f16 = hc->dtype == MEXD_DTYPE_F16;
  /* tanh and sigmoid: both tails are tested in test_unary_tails */
  const float range[7][2] = {{-4, 4}, {-3, 8}, {f16 ? -9.5f : -30.0f, 30}, {-10, 10}, {0, 0},
                             {-4, 4}, {-8, 8}};
  for (int iter = 0; iter < 6; iter++)
    for (int op = MEXD_UNARY_RELU; op <= MEXD_UNARY_SIGMOID; op++) {
      if (op == MEXD_UNARY_SCALE_EYE)
        continue;
      int64_t shape[4];
      int ndim = random_shape(shape);
      int64_t n = harness_numel(ndim, shape);
      g_autofree float *x = harness_random(n, range[op][0], range[op][1], hc->dtype);
      float a = (float)g_test_rand_double_range(-3, 3), b = (float)g_test_rand_double_range(-3, 3);
      check_unary(hc, (MexdUnaryOp)op, a, b, ndim, shape, x, FALSE, "random");
    }
}

/* The ranges where the formulas change or lose precision, each on its own so that the small
 * values are not drowned in NMSE by large ones; every backend is also held to the double
 * reference here. */
static void test_unary_tails(const HarnessCase *hc)
{
  gboolean f16 = hc->dtype == MEXD_DTYPE_F16;
  struct {
    MexdUnaryOp op;
    float lo, hi;
    const char *label;
  } cases[] = {
      /* e^x is no normal f16 for x < −9.7: f16 tests the low range it can represent */
      {MEXD_UNARY_SOFTPLUS, f16 ? -9.5f : -40.0f, f16 ? -7.0f : -20.0f, "softplus x < -20"},
      {MEXD_UNARY_SOFTPLUS, 20.0f, 40.0f, "softplus x > 20"},
      {MEXD_UNARY_SOFTPLUS, 18.0f, 22.0f, "softplus around the threshold"},
      {MEXD_UNARY_SOFTPLUS, -1e-3f, 1e-3f, "softplus near 0"},
      /* 1 + erf(x/√2) cancels for x ≪ 0 (in PyTorch's f32 formula too): the error there is
       * absolute, ~1e-8·|x| (test_gelu_grid holds it to that); this range keeps enough values near
       * −2 for a relative measure */
      {MEXD_UNARY_GELU, -6.5f, -2.0f, "gelu large negative"},
      {MEXD_UNARY_GELU, 2.0f, 6.5f, "gelu large positive"},
      {MEXD_UNARY_GELU, -1e-3f, 1e-3f, "gelu near 0"},
      {MEXD_UNARY_GELU, -1.5f, 1.5f, "gelu across the erf branches"},
      {MEXD_UNARY_RELU, -1e-3f, 1e-3f, "relu near 0"},
      /* tanh near 0 is x − x³/3: no cancellation allowed; far out it saturates to ±1 */
      {MEXD_UNARY_TANH, -1e-3f, 1e-3f, "tanh near 0"},
      {MEXD_UNARY_TANH, -0.6f, 0.6f, "tanh across the branches"},
      {MEXD_UNARY_TANH, 4.0f, 12.0f, "tanh large"},
      /* sigmoid's lower tail e^x/(1 + e^x) keeps full relative precision */
      {MEXD_UNARY_SIGMOID, f16 ? -9.5f : -80.0f, f16 ? -7.0f : -20.0f, "sigmoid lower tail"},
      {MEXD_UNARY_SIGMOID, 5.0f, 40.0f, "sigmoid upper tail"},
      {MEXD_UNARY_SIGMOID, -1e-3f, 1e-3f, "sigmoid near 0"},
  };
  for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
    int64_t shape[1] = {256 + harness_size(5000)}; /* enough values to span each range */
    g_autofree float *x = harness_random(shape[0], cases[c].lo, cases[c].hi, hc->dtype);
    check_unary(hc, cases[c].op, 0, 0, 1, shape, x, TRUE, cases[c].label);
  }
  /* gelu at ±6 and the softplus threshold exactly */
  float pts[] = {-6, 6, -20, 20, -20.5f, 20.5f, -21, 21, 0, 1, -1, 4, -4};
  int64_t np = G_N_ELEMENTS(pts);
  check_unary(hc, MEXD_UNARY_GELU, 0, 0, 1, &np, pts, TRUE, "gelu points");
  check_unary(hc, MEXD_UNARY_SOFTPLUS, 0, 0, 1, &np, pts, TRUE, "softplus points");
}

/* The erf inside gelu: gelu(x) = 0.5·x·(1 + erf(x/√2)), so |Δgelu| / (0.5·|x|) is the error of
 * erf (plus f32 rounding of the result, < 2e-7 here); it must stay below 1e-6 on a dense grid
 * over [−8, 8] (f32 only: in f16 the rounding of the output dominates). */
static void test_gelu_grid(const HarnessCase *hc)
{
  int64_t n = 16 * 512 + 1;
  g_autofree float *x = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    x[i] = -8.0f + (float)i / 512.0f;
  g_autofree float *out =
      run_unary(hc->be, hc->dtype, MEXD_UNARY_GELU, 0, 0, 1, &n, x, FALSE, 1, TRUE);
  double worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < n; i++) {
    double ref = ref_unary1(MEXD_UNARY_GELU, x[i], 0, 0);
    double e = x[i] == 0 ? fabs(out[i]) : fabs(out[i] - ref) / (0.5 * fabs(x[i]));
    if (!(e <= worst)) {
      worst = e;
      wi = i;
    }
  }
  g_test_message("gelu %s: largest erf error %.3g at x = %g", hc->spec, worst, x[wi]);
  if (!(worst <= 1e-6))
    g_error("gelu %s: erf error %.3g at x = %g (gelu %.9g, want %.9g)", hc->spec, worst, x[wi],
            out[wi], ref_unary1(MEXD_UNARY_GELU, x[wi], 0, 0));
}

/* NaN stays NaN through every op; infinities where the result is defined. */
static void test_unary_special(const HarnessCase *hc)
{
  float x[] = {NAN, INFINITY, -INFINITY, 0.0f, 2.0f};
  int64_t n = G_N_ELEMENTS(x);
  struct {
    MexdUnaryOp op;
    float want[5];
  } cases[] = {
      {MEXD_UNARY_RELU, {NAN, INFINITY, 0.0f, 0.0f, 2.0f}},
      {MEXD_UNARY_GELU, {NAN, INFINITY, NAN /* not checked */, 0.0f, 1.95449972f}},
      {MEXD_UNARY_SOFTPLUS, {NAN, INFINITY, 0.0f, 0.693147181f, 2.12692801f}},
      {MEXD_UNARY_SCALE, {NAN, INFINITY, -INFINITY, 1.0f, 5.0f}}, /* 2x + 1 */
      {MEXD_UNARY_TANH, {NAN, 1.0f, -1.0f, 0.0f, 0.96402758f}},
      {MEXD_UNARY_SIGMOID, {NAN, 1.0f, 0.0f, 0.5f, 0.88079708f}},
  };
  for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
    MexdUnaryOp op = cases[c].op;
    g_autofree float *out = run_unary(hc->be, hc->dtype, op, 2.0f, 1.0f, 1, &n, x, FALSE, 0, FALSE);
    for (int64_t i = 0; i < n; i++) {
      float w = cases[c].want[i];
      if (op == MEXD_UNARY_GELU && i == 2)
        continue; /* gelu(−inf) is −inf·0: left unspecified */
      gboolean ok = isnan(w)   ? isnan(out[i])
                    : isinf(w) ? out[i] == w
                               : fabsf(out[i] - w) <= 2e-3f * (1 + fabsf(w));
      if (!ok)
        g_error("%s %s %s: f(%g) = %g, want %g", unary_names[op], hc->spec,
                mexd_dtype_name(hc->dtype), x[i], out[i], w);
    }
  }
}

static void test_unary_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype, other_dt = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) x = mexd_tensor_new_2d(be, dt, 3, 4, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new_2d(be, dt, 3, 4, NULL);
  g_autoptr(MexdTensor) y_t = mexd_tensor_new_2d(be, dt, 4, 3, NULL);
  g_autoptr(MexdTensor) y_flat = mexd_tensor_new_1d(be, dt, 12, NULL);
  g_autoptr(MexdTensor) y_dt = mexd_tensor_new_2d(be, other_dt, 3, 4, NULL);
  g_autoptr(MexdTensor) y_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 4, NULL);
  g_autoptr(MexdTensor) x_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 4, NULL);
  g_autoptr(MexdTensor) base = mexd_tensor_new_1d(be, dt, 10, NULL);
  g_autoptr(MexdTensor) lo = mexd_tensor_rows(base, 0, 6, NULL);
  g_autoptr(MexdTensor) hi = mexd_tensor_rows(base, 2, 6, NULL);
  g_autoptr(MexdTensor) x_view = mexd_tensor_reshape(x, 1, (int64_t[]){12}, NULL);

  g_assert_false(mexd_unary(NULL, x, MEXD_UNARY_RELU, 0, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "unary y NULL");
  error = NULL;
  g_assert_false(mexd_unary(y, NULL, MEXD_UNARY_RELU, 0, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "unary x NULL");
  error = NULL;
  g_assert_false(mexd_relu(y_t, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "relu transposed shape");
  error = NULL;
  g_assert_false(mexd_gelu(y_flat, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "gelu same count, other shape");
  error = NULL;
  g_assert_false(mexd_softplus(y_dt, x, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "softplus dtype mismatch");
  error = NULL;
  g_assert_false(mexd_scale(y_i32, x_i32, 1, 0, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "scale i32");
  error = NULL;
  g_assert_false(mexd_scale(y, x_i32, 1, 0, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "scale i32 x");
  error = NULL;
  g_assert_false(mexd_unary(y, x, (MexdUnaryOp)99, 0, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "unary unknown op");
  error = NULL;
  g_assert_false(mexd_unary(y, x, (MexdUnaryOp)-1, 0, 0, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "unary negative op");
  error = NULL;
  g_assert_false(mexd_relu(hi, lo, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "relu partial overlap");
  error = NULL;
  g_assert_false(mexd_relu(x_view, x, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "relu same data, other shape");
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) other = mexd_tensor_new_2d(hc->cpu, dt, 3, 4, NULL);
    error = NULL;
    g_assert_false(mexd_gelu(y, other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "gelu mixed backends");
    error = NULL;
    g_assert_false(mexd_gelu(other, x, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "gelu mixed backends (y on cpu)");
  }
}

/* ---- binary ---- */

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

typedef struct {
  int nda, ndb, ndy;
  int64_t sa[4], sb[4], sy[4];
} BinShape;

/* y's shape from a's and b's by the NumPy rule (the test's own version); FALSE if they clash. */
static gboolean broadcast(BinShape *s)
{
  s->ndy = MAX(s->nda, s->ndb);
  for (int k = 0; k < s->ndy; k++) {
    int ka = k - (s->ndy - s->nda), kb = k - (s->ndy - s->ndb);
    int64_t da = ka >= 0 ? s->sa[ka] : 1, db = kb >= 0 ? s->sb[kb] : 1;
    if (da != db && da != 1 && db != 1)
      return FALSE;
    s->sy[k] = MAX(da, db);
  }
  return TRUE;
}

/* Index into t (shape sh, nd dims) of y's element with coordinates c (ndy dims). */
static int64_t bcast_index(const int64_t *sh, int nd, const int64_t *c, int ndy)
{
  int64_t idx = 0;
  for (int k = 0; k < nd; k++) {
    int64_t ck = sh[k] == 1 ? 0 : c[k + ndy - nd];
    idx = idx * sh[k] + ck;
  }
  return idx;
}

static double ref_binary1(MexdBinaryOp op, double u, double v)
{
  switch (op) {
  case MEXD_BINARY_ADD: return u + v;
  case MEXD_BINARY_SUB: return u - v;
  case MEXD_BINARY_MUL: return u * v;
  case MEXD_BINARY_DIV: break;
  }
  return u / v;
}

static void ref_binary(const BinShape *s, MexdBinaryOp op, const float *a, const float *b,
                       double *out)
{
  int64_t n = harness_numel(s->ndy, s->sy);
  for (int64_t i = 0; i < n; i++) {
    int64_t c[4], r = i;
    for (int k = s->ndy - 1; k >= 0; k--) {
      c[k] = r % s->sy[k];
      r /= s->sy[k];
    }
    out[i] = ref_binary1(op, a[bcast_index(s->sa, s->nda, c, s->ndy)],
                         b[bcast_index(s->sb, s->ndb, c, s->ndy)]);
  }
}

/* inplace: 0 a new y, 1 y = a, 2 y = b (that input must have y's shape). */
static float *run_binary(MexdBackend *be, MexdDType dt, const BinShape *s, MexdBinaryOp op,
                         const float *a, const float *b, int inplace, int64_t pad)
{
  g_autoptr(MexdTensor) ta = harness_view_tensor(be, dt, s->nda, s->sa, a, pad);
  g_autoptr(MexdTensor) tb = harness_view_tensor(be, dt, s->ndb, s->sb, b, pad ? pad + 1 : 0);
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdTensor) ty = inplace == 1   ? mexd_tensor_ref(ta)
                             : inplace == 2 ? mexd_tensor_ref(tb)
                                            : mexd_tensor_new(be, dt, s->ndy, s->sy, &error);
  g_assert_no_error(error);
  gboolean ok;
  if (op == MEXD_BINARY_ADD && g_test_rand_bit())
    ok = mexd_add(ty, ta, tb, &error);
  else if (op == MEXD_BINARY_MUL && g_test_rand_bit())
    ok = mexd_mul(ty, ta, tb, &error);
  else
    ok = mexd_binary(ty, ta, tb, op, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  return harness_read(ty);
}

static void check_binary(const HarnessCase *hc, const BinShape *s, MexdBinaryOp op)
{
  int64_t na = harness_numel(s->nda, s->sa), nb = harness_numel(s->ndb, s->sb),
          ny = harness_numel(s->ndy, s->sy);
  g_autofree float *a = harness_random(na, -2, 2, hc->dtype);
  g_autofree float *b = harness_random(nb, -2, 2, hc->dtype);
  if (op == MEXD_BINARY_DIV) /* keep divisors away from 0: |b| in [0.5, 2] */
    for (int64_t i = 0; i < nb; i++)
      b[i] = b[i] < 0 ? MIN(b[i], -0.5f) : MAX(b[i], 0.5f);
  /* in place on an input that has y's exact shape */
  gboolean a_is_y = s->nda == s->ndy && memcmp(s->sa, s->sy, sizeof(int64_t) * s->ndy) == 0;
  gboolean b_is_y = s->ndb == s->ndy && memcmp(s->sb, s->sy, sizeof(int64_t) * s->ndy) == 0;
  int inplace = 0;
  if (g_test_rand_bit()) {
    if (a_is_y && (!b_is_y || g_test_rand_bit()))
      inplace = 1;
    else if (b_is_y)
      inplace = 2;
  }
  int64_t pad = random_pad();
  g_autofree char *sa = harness_shape_str(s->nda, s->sa), *sb = harness_shape_str(s->ndb, s->sb),
                  *sy = harness_shape_str(s->ndy, s->sy);
  g_autofree char *what =
      g_strdup_printf("%s %s %s: a %s, b %s -> y %s%s pad %" G_GINT64_FORMAT, binary_names[op],
                      hc->spec, mexd_dtype_name(hc->dtype), sa, sb, sy,
                      inplace == 1   ? " (y = a)"
                      : inplace == 2 ? " (y = b)"
                                     : "",
                      pad);
  g_autofree float *out = run_binary(hc->be, hc->dtype, s, op, a, b, inplace, pad);
  if (hc->be == hc->cpu) {
    g_autofree double *ref = g_new(double, ny);
    ref_binary(s, op, a, b, ref);
    harness_assert_close_d(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  } else {
    g_autofree float *ref = run_binary(hc->cpu, hc->dtype, s, op, a, b, 0, 0);
    harness_assert_close(what, out, ref, ny, harness_thr(hc, NMSE_F32));
  }
}

/* The named broadcast patterns, with random sizes, for every op. */
static void test_binary_patterns(const HarnessCase *hc)
{
  /* symbolic shapes: 'M','N','B','C' are sizes, '1' is 1; right-aligned as NumPy */
  static const char *const pats[][2] = {
      {"MN", "MN"},  {"MN", "1"},     {"1", "MN"},     {"MN", "N"},      {"N", "MN"},
      {"MN", "M1"},  {"M1", "MN"},    {"M1", "N"},     {"N", "M1"},      {"1N", "M1"},
      {"BMN", "N"},  {"BMN", "M1"},   {"BMN", "B11"},  {"B1N", "MN"},    {"BMN", "BMN"},
      {"CBMN", "N"}, {"CBMN", "B1N"}, {"C1M1", "BMN"}, {"CBMN", "C111"}, {"1", "1"},
      {"N", "N"},    {"N", "1"},      {"CBMN", "1"},   {"11N", "M1"},
  };
  for (guint p = 0; p < G_N_ELEMENTS(pats); p++) {
    int64_t M = harness_size(64), N = harness_size(300), B = harness_size(5), C = harness_size(4);
    for (int op = MEXD_BINARY_ADD; op <= MEXD_BINARY_DIV; op++) {
      BinShape s = {0};
      for (int side = 0; side < 2; side++) {
        const char *pat = pats[p][side];
        int64_t *sh = side ? s.sb : s.sa;
        int nd = (int)strlen(pat);
        for (int k = 0; k < nd; k++)
          sh[k] = pat[k] == 'M' ? M : pat[k] == 'N' ? N : pat[k] == 'B' ? B : pat[k] == 'C' ? C : 1;
        if (side)
          s.ndb = nd;
        else
          s.nda = nd;
      }
      g_assert_true(broadcast(&s));
      check_binary(hc, &s, (MexdBinaryOp)op);
    }
  }
}

/* Random shapes where each input drops leading dims and/or sets dims to 1 at random. */
static void test_binary_random(const HarnessCase *hc)
{
  for (int iter = 0; iter < 16; iter++) {
    int64_t full[4];
    int nd = random_shape(full);
    BinShape s = {0};
    for (int side = 0; side < 2; side++) {
      int64_t *sh = side ? s.sb : s.sa;
      int ndi = g_test_rand_int_range(1, nd + 1);
      for (int k = 0; k < ndi; k++) {
        int64_t d = full[k + nd - ndi];
        sh[k] = g_test_rand_int_range(0, 3) == 0 ? 1 : d;
      }
      if (side)
        s.ndb = ndi;
      else
        s.nda = ndi;
    }
    g_assert_true(broadcast(&s));
    check_binary(hc, &s, (MexdBinaryOp)g_test_rand_int_range(0, 4));
  }
}

/* More than 65535 workgroups of 256, so that the grid spreads over y on vulkan: an add with a
 * broadcast scalar and a scale, checked exactly on integer-valued data (on cpu the same checks
 * run without a grid). */
static void test_elementwise_large(const HarnessCase *hc)
{
  BinShape s = {.nda = 1, .ndb = 1, .sa = {65536 * 256 + 300}, .sb = {1}};
  g_assert_true(broadcast(&s));
  int64_t n = s.sa[0];
  g_autofree float *a = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    a[i] = (float)(i % 1000);
  float b = 0.5f;
  g_autofree float *sum = run_binary(hc->be, hc->dtype, &s, MEXD_BINARY_ADD, a, &b, 0, 0);
  for (int64_t i = 0; i < n; i++)
    if (sum[i] != a[i] + 0.5f)
      g_error("large add %s: y[%" G_GINT64_FORMAT "] = %g, want %g", hc->spec, i, sum[i],
              a[i] + 0.5f);
  g_autofree float *scaled =
      run_unary(hc->be, hc->dtype, MEXD_UNARY_SCALE, 2.0f, 1.0f, 1, &n, a, FALSE, 0, TRUE);
  for (int64_t i = 0; i < n; i++)
    if (scaled[i] != 2.0f * a[i] + 1.0f)
      g_error("large scale %s: y[%" G_GINT64_FORMAT "] = %g, want %g", hc->spec, i, scaled[i],
              2.0f * a[i] + 1.0f);
}

static void test_binary_errors(const HarnessCase *hc)
{
  MexdBackend *be = hc->be;
  MexdDType dt = hc->dtype, other_dt = dt == MEXD_DTYPE_F32 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32;
  GError *error = NULL;
  g_autoptr(MexdTensor) a = mexd_tensor_new_2d(be, dt, 3, 4, NULL);
  g_autoptr(MexdTensor) row = mexd_tensor_new_1d(be, dt, 4, NULL);
  g_autoptr(MexdTensor) bad = mexd_tensor_new_1d(be, dt, 3, NULL);
  g_autoptr(MexdTensor) y = mexd_tensor_new_2d(be, dt, 3, 4, NULL);
  g_autoptr(MexdTensor) y_t = mexd_tensor_new_2d(be, dt, 4, 3, NULL);
  g_autoptr(MexdTensor) y_3d = mexd_tensor_new(be, dt, 3, (int64_t[]){1, 3, 4}, NULL);
  g_autoptr(MexdTensor) y_dt = mexd_tensor_new_2d(be, other_dt, 3, 4, NULL);
  g_autoptr(MexdTensor) a_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 4, NULL);
  g_autoptr(MexdTensor) y_i32 = mexd_tensor_new_2d(be, MEXD_DTYPE_I32, 3, 4, NULL);
  /* y is [3,4] over a 12-element storage whose first 4 elements are also `head` [4] */
  g_autoptr(MexdTensor) base = mexd_tensor_new_1d(be, dt, 16, NULL);
  g_autoptr(MexdTensor) y_view0 = mexd_tensor_rows(base, 0, 12, NULL);
  g_autoptr(MexdTensor) y_view = mexd_tensor_reshape(y_view0, 2, (int64_t[]){3, 4}, NULL);
  g_autoptr(MexdTensor) head = mexd_tensor_rows(base, 0, 4, NULL);
  g_autoptr(MexdTensor) shifted0 = mexd_tensor_rows(base, 2, 12, NULL);
  g_autoptr(MexdTensor) shifted = mexd_tensor_reshape(shifted0, 2, (int64_t[]){3, 4}, NULL);

  g_assert_false(mexd_binary(NULL, a, row, MEXD_BINARY_ADD, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "binary y NULL");
  error = NULL;
  g_assert_false(mexd_add(y, NULL, row, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "add a NULL");
  error = NULL;
  g_assert_false(mexd_mul(y, a, NULL, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "mul b NULL");
  error = NULL;
  g_assert_false(mexd_add(y, a, bad, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "add [3,4] + [3] do not broadcast");
  error = NULL;
  g_assert_false(mexd_add(y_t, a, row, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "add y transposed");
  error = NULL;
  g_assert_false(mexd_add(y_3d, a, row, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "add y with an extra leading 1");
  error = NULL;
  g_assert_false(mexd_add(row, a, row, &error));
  harness_assert_error(error, MEXD_ERROR_SHAPE, "add y = the broadcast input");
  error = NULL;
  g_assert_false(mexd_add(y_dt, a, row, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "add y dtype");
  error = NULL;
  g_assert_false(mexd_add(y, a_i32, row, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "add a i32");
  error = NULL;
  g_assert_false(mexd_add(y_i32, a_i32, a_i32, &error));
  harness_assert_error(error, MEXD_ERROR_DTYPE, "add all i32");
  error = NULL;
  g_assert_false(mexd_binary(y, a, row, (MexdBinaryOp)4, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "binary unknown op");
  error = NULL;
  g_assert_false(mexd_add(y_view, a, head, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "add y overlaps the broadcast b");
  error = NULL;
  g_assert_false(mexd_add(y_view, shifted, row, &error));
  harness_assert_error(error, MEXD_ERROR_INVALID_ARGUMENT, "add y partly overlaps a");
  /* exactly y = a is fine */
  error = NULL;
  g_assert_true(mexd_add(y_view, y_view, row, &error));
  g_assert_no_error(error);
  if (hc->be != hc->cpu) {
    g_autoptr(MexdTensor) other = mexd_tensor_new_1d(hc->cpu, dt, 4, NULL);
    error = NULL;
    g_assert_false(mexd_add(y, a, other, &error));
    harness_assert_error(error, MEXD_ERROR_BACKEND, "add mixed backends");
  }
}

void register_elementwise_tests(void)
{
  harness_add("unary/random", HARNESS_BOTH, test_unary_random);
  harness_add("unary/tails", HARNESS_BOTH, test_unary_tails);
  harness_add("unary/gelu-grid", HARNESS_F32, test_gelu_grid);
  harness_add("unary/special", HARNESS_BOTH, test_unary_special);
  harness_add("unary/errors", HARNESS_BOTH, test_unary_errors);
  harness_add("binary/patterns", HARNESS_BOTH, test_binary_patterns);
  harness_add("binary/random", HARNESS_BOTH, test_binary_random);
  harness_add("elementwise/large", HARNESS_F32, test_elementwise_large);
  harness_add("binary/errors", HARNESS_BOTH, test_binary_errors);
}
