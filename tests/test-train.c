/* test-train.c: the autograd tape, the trainable models and their losses (lib/train).
 *
 * /train/autograd/<case>/<backend>: small graphs through every mexd_ag_* op; the tape's gradient
 *   of a random linear functional of the output is checked by central finite differences of the
 *   forward pass itself (cpu), and the vulkan tape against the cpu tape.
 * /train/models/<model>/<backend>: TransMIL, the Dyn-MoE stage, the Diff-C denoiser and ABMIL at
 *   tiny sizes, every parameter's gradient by finite differences on sampled elements (cpu) and
 *   vulkan against cpu.
 * /train/models/inference-equal: the training TransMIL, Dyn-MoE and denoiser with no tape give
 *   what lib/nn's inference code gives on the same weights (tests/fixtures/mexd/model-e2).
 * /train/fixtures/<file>: the PyTorch fixtures of tests/reference/gen_train.py (float64
 *   reference): loss and every gradient. */
#include "fixture-dir.h"
#include "mexd.h"

#include "backend/vulkan.h"
#include "nn/autograd.h"
#include "train/classifier.h"
#include "train/models.h"
#include "train/params.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- a scalar loss over a parameter set ---- */

typedef MexdVar *(*LossFn)(MexdTape *t, MexdParams *ps, gpointer data, GError **error);

/* loss with the current host values (uploaded) on a tape keyed by `seed` (so dropout masks are
 * the same every time) */
static double eval_loss(MexdParams *ps, LossFn fn, gpointer data, uint64_t seed)
{
  GError *error = NULL;
  g_assert_true(mexd_params_upload(ps, &error));
  g_autoptr(MexdTape) t = mexd_tape_new(NULL, TRUE, seed);
  g_autoptr(MexdVar) l = fn(t, ps, data, &error);
  g_assert_no_error(error);
  float v;
  g_assert_true(mexd_tensor_read_f32(mexd_var_value(l), &v, 1, &error));
  return v;
}

/* The tape's gradients (into each param's grad). */
static double tape_grads(MexdParams *ps, LossFn fn, gpointer data, uint64_t seed)
{
  GError *error = NULL;
  g_assert_true(mexd_params_upload(ps, &error));
  mexd_params_zero_grad(ps);
  g_autoptr(MexdTape) t = mexd_tape_new(NULL, TRUE, seed);
  g_autoptr(MexdVar) l = fn(t, ps, data, &error);
  g_assert_no_error(error);
  float v;
  g_assert_true(mexd_tensor_read_f32(mexd_var_value(l), &v, 1, &error));
  g_assert_true(mexd_tape_backward(t, l, &error));
  g_assert_true(mexd_params_read_grads(ps, &error));
  g_assert_no_error(error);
  return v;
}

/* Central differences on up to `samples` elements of every parameter; the error is measured
 * against the largest gradient of that parameter (a normwise measure: tiny entries are noisy in
 * f32 differences). */
static void check_fd(const char *what, MexdParams *ps, LossFn fn, gpointer data, int samples,
                     double h, double tol)
{
  tape_grads(ps, fn, data, 7);
  GRand *r = g_rand_new_with_seed(11);
  /* f32 differences carry an absolute noise of ~1e-7·|L|/h: a parameter whose gradient is tiny
   * is measured against a twentieth of the model's largest gradient instead (the PyTorch
   * fixtures check those exactly) */
  double gall = 0;
  for (guint i = 0; i < mexd_params_count(ps); i++) {
    MexdParam *p = mexd_params_index(ps, i);
    for (int64_t k = 0; !p->frozen && k < p->n; k++)
      gall = MAX(gall, fabs(p->grad[k]));
  }
  for (guint i = 0; i < mexd_params_count(ps); i++) {
    MexdParam *p = mexd_params_index(ps, i);
    if (p->frozen)
      continue;
    double gmax = 0.05 * gall;
    for (int64_t k = 0; k < p->n; k++)
      gmax = MAX(gmax, fabs(p->grad[k]));
    g_autofree float *analytic = g_memdup2(p->grad, sizeof(float) * p->n);
    double worst = 0;
    int64_t wk = 0;
    int ns = (int)MIN((int64_t)samples, p->n);
    for (int s = 0; s < ns; s++) {
      int64_t k = p->n <= samples ? s : g_rand_int_range(r, 0, (gint32)p->n);
      float x0 = p->host[k];
      double hk = h * MAX(1.0, fabs(x0));
      p->host[k] = (float)(x0 + hk);
      double lp = eval_loss(ps, fn, data, 7);
      p->host[k] = (float)(x0 - hk);
      double lm = eval_loss(ps, fn, data, 7);
      p->host[k] = x0;
      double fd = (lp - lm) / (2 * hk);
      double e = fabs(fd - analytic[k]) / MAX(gmax, 1e-6);
      if (e > worst) {
        worst = e;
        wk = k;
      }
    }
    g_test_message("%s: %s (%" G_GINT64_FORMAT "): worst %.2e of max |g| %.3g at %" G_GINT64_FORMAT,
                   what, p->name, p->n, worst, gmax, wk);
    if (!(worst <= tol))
      g_error("%s: gradient of %s[%" G_GINT64_FORMAT "] = %.6g, finite differences disagree by "
              "%.3g of max |g| %.3g",
              what, p->name, wk, analytic[wk], worst, gmax);
  }
  g_rand_free(r);
  GError *error = NULL;
  g_assert_true(mexd_params_upload(ps, &error));
}

/* The gradients of two parameter sets with the same names (cpu vs another backend): normwise
 * per parameter, against at least a thousandth of the model's largest gradient (a gradient that
 * is zero in exact arithmetic is rounding noise on both). */
static void check_same_grads(const char *what, MexdParams *a, MexdParams *b, double tol)
{
  double gall = 0;
  for (guint i = 0; i < mexd_params_count(a); i++) {
    MexdParam *p = mexd_params_index(a, i);
    for (int64_t k = 0; !p->frozen && k < p->n; k++)
      gall = MAX(gall, fabs(p->grad[k]));
  }
  for (guint i = 0; i < mexd_params_count(a); i++) {
    MexdParam *p = mexd_params_index(a, i);
    MexdParam *q = mexd_params_find(b, p->name);
    g_assert_nonnull(q);
    g_assert_cmpint(p->n, ==, q->n);
    if (p->frozen)
      continue;
    double ref = 1e-3 * gall, diff = 0;
    int64_t wk = 0;
    for (int64_t k = 0; k < p->n; k++) {
      ref = MAX(ref, fabs(p->grad[k]));
      if (fabs(p->grad[k] - q->grad[k]) > diff) {
        diff = fabs(p->grad[k] - q->grad[k]);
        wk = k;
      }
    }
    if (!(diff <= tol * ref))
      g_error("%s: %s[%" G_GINT64_FORMAT "] = %.8g here, %.8g on cpu (%.3g of %.3g)", what,
              p->name, wk, q->grad[wk], p->grad[wk], diff / ref, ref);
  }
}

/* ---- autograd cases: each builds its params and a loss ---- */

typedef struct {
  const char *name;
  void (*build)(MexdParams *ps);
  LossFn loss;
} AgCase;

static MexdTensor *data_tensor(MexdBackend *be, int ndim, const int64_t *shape, uint32_t seed,
                               double scale)
{
  int64_t n = 1;
  for (int k = 0; k < ndim; k++)
    n *= shape[k];
  g_autofree float *v = g_new(float, n);
  GRand *r = g_rand_new_with_seed(seed);
  for (int64_t i = 0; i < n; i++)
    v[i] = (float)(scale * g_rand_double_range(r, -1, 1));
  g_rand_free(r);
  MexdTensor *t = mexd_tensor_new_from_f32(be, MEXD_DTYPE_F32, ndim, shape, v, NULL);
  g_assert_nonnull(t);
  return t;
}

/* Σ r ⊙ y as a loss: mse(y, target) = mean (y − target)², whose gradient is linear in y for a
 * fixed target: a random target makes a non-degenerate functional. */
static MexdVar *readout(MexdTape *t, MexdVar *y, uint32_t seed, GError **error)
{
  MexdTensor *v = mexd_var_value(y);
  g_autoptr(MexdTensor) target = data_tensor(v->backend, v->ndim, v->shape, seed, 2.0);
  return mexd_ag_mse(t, y, target, error);
}

static MexdBackend *ps_backend(MexdParams *ps)
{
  return mexd_var_value(mexd_params_index(ps, 0)->var)->backend;
}

#define P(name) mexd_params_get(ps, name)

static void b_linear(MexdParams *ps)
{
  mexd_params_add_linear(ps, "l1", 6, 5, TRUE, NULL, NULL, NULL);
  mexd_params_add(ps, "x", 2, (int64_t[]){7, 5}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_linear(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  g_autoptr(MexdVar) y = mexd_ag_linear(t, P("x"), P("l1.weight"), P("l1.bias"), error);
  g_autoptr(MexdVar) z = y ? mexd_ag_unary(t, y, MEXD_UNARY_GELU, error) : NULL;
  return z ? readout(t, z, 1, error) : NULL;
}

static void b_matmul(MexdParams *ps)
{
  mexd_params_add(ps, "a", 3, (int64_t[]){2, 4, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "b", 3, (int64_t[]){2, 3, 5}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "at", 2, (int64_t[]){3, 4}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "bt", 2, (int64_t[]){5, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_matmul(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  /* 3-D plain; 2-D with both transposed; 2-D a plain, b transposed; a transposed, b plain */
  g_autoptr(MexdVar) c1 = mexd_ag_matmul(t, P("a"), P("b"), FALSE, FALSE, 0.5f, error);
  g_autoptr(MexdVar) c2 = c1 ? mexd_ag_matmul(t, P("at"), P("bt"), TRUE, TRUE, 1.5f, error) : NULL;
  g_autoptr(MexdVar) a0 = c2 ? mexd_ag_rows(t, P("a"), 0, 1, error) : NULL;
  g_autoptr(MexdVar) a02 = a0 ? mexd_ag_reshape(t, a0, 2, (int64_t[]){4, 3}, error) : NULL;
  g_autoptr(MexdVar) c3 = a02 ? mexd_ag_matmul(t, a02, P("bt"), FALSE, TRUE, 1.0f, error) : NULL;
  g_autoptr(MexdVar) b0 = c3 ? mexd_ag_rows(t, P("b"), 1, 1, error) : NULL;
  g_autoptr(MexdVar) b02 = b0 ? mexd_ag_reshape(t, b0, 2, (int64_t[]){3, 5}, error) : NULL;
  g_autoptr(MexdVar) c4 = b02 ? mexd_ag_matmul(t, P("at"), b02, TRUE, FALSE, 1.0f, error) : NULL;
  if (!c4)
    return NULL;
  g_autoptr(MexdVar) s23 = mexd_ag_add(t, c2, c3, error);
  g_autoptr(MexdVar) s = s23 ? mexd_ag_add(t, s23, c4, error) : NULL;
  g_autoptr(MexdVar) c1r = s ? mexd_ag_reshape(t, c1, 2, (int64_t[]){8, 5}, error) : NULL;
  g_autoptr(MexdVar) l1 = c1r ? readout(t, c1r, 2, error) : NULL;
  g_autoptr(MexdVar) l2 = l1 ? readout(t, s, 3, error) : NULL;
  return l2 ? mexd_ag_add(t, l1, l2, error) : NULL;
}

static void b_elementwise(MexdParams *ps)
{
  mexd_params_add(ps, "x", 2, (int64_t[]){6, 5}, MEXD_INIT_UNIFORM, 2.0, NULL);
  mexd_params_add(ps, "row", 1, (int64_t[]){5}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "col", 2, (int64_t[]){6, 1}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "s", 1, (int64_t[]){1}, MEXD_INIT_CONST, 1.7, NULL);
  mexd_params_add(ps, "m3", 3, (int64_t[]){2, 3, 5}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "mid", 3, (int64_t[]){1, 3, 1}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_elementwise(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  static const MexdUnaryOp ops[] = {MEXD_UNARY_SOFTPLUS, MEXD_UNARY_TANH, MEXD_UNARY_SIGMOID,
                                    MEXD_UNARY_RELU};
  g_autoptr(MexdVar) y = mexd_var_ref(P("x"));
  for (guint k = 0; k < G_N_ELEMENTS(ops); k++) {
    MexdVar *n = mexd_ag_unary(t, y, ops[k], error);
    mexd_var_unref(y);
    y = n;
    if (!y)
      return NULL;
    /* each op composed with a broadcast binary, so every pattern meets every op */
    MexdVar *other = k == 0 ? P("row") : k == 1 ? P("col") : k == 2 ? P("s") : P("x");
    MexdBinaryOp bop = (MexdBinaryOp)(k % 4);
    if (bop == MEXD_BINARY_DIV)
      other = P("s");
    n = mexd_ag_binary(t, y, other, bop, error);
    mexd_var_unref(y);
    y = n;
    if (!y)
      return NULL;
  }
  g_autoptr(MexdVar) d1 = mexd_ag_binary(t, P("row"), P("x"), MEXD_BINARY_SUB, error);
  g_autoptr(MexdVar) d2 = d1 ? mexd_ag_binary(t, P("x"), P("col"), MEXD_BINARY_DIV, error) : NULL;
  g_autoptr(MexdVar) sc = d2 ? mexd_ag_scale(t, d2, -0.7f, 0.2f, FALSE, error) : NULL;
  g_autoptr(MexdVar) m = sc ? mexd_ag_mul(t, P("m3"), P("mid"), error) : NULL;
  g_autoptr(MexdVar) m2 = m ? mexd_ag_reshape(t, m, 2, (int64_t[]){6, 5}, error) : NULL;
  if (!m2)
    return NULL;
  MexdVar *all[4] = {y, d1, sc, m2};
  g_autoptr(MexdVar) cat = mexd_ag_concat(t, all, 4, 1, error);
  return cat ? readout(t, cat, 4, error) : NULL;
}

static void b_norm(MexdParams *ps)
{
  mexd_params_add(ps, "x", 2, (int64_t[]){5, 9}, MEXD_INIT_UNIFORM, 2.0, NULL);
  mexd_params_add(ps, "g", 1, (int64_t[]){9}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "b", 1, (int64_t[]){9}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "sq", 3, (int64_t[]){2, 4, 4}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_norm(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  g_autoptr(MexdVar) y = mexd_ag_layernorm(t, P("x"), P("g"), P("b"), 1e-5f, error);
  g_autoptr(MexdVar) s = y ? mexd_ag_softmax(t, y, error) : NULL;
  g_autoptr(MexdVar) e = s ? mexd_ag_scale(t, P("sq"), 0.5f, 2.0f, TRUE, error) : NULL;
  g_autoptr(MexdVar) es = e ? mexd_ag_softmax(t, e, error) : NULL;
  g_autoptr(MexdVar) r1 = es ? mexd_ag_abs_sum_max(t, P("sq"), -1, error) : NULL;
  g_autoptr(MexdVar) r2 = r1 ? mexd_ag_abs_sum_max(t, P("sq"), -2, error) : NULL;
  g_autoptr(MexdVar) rr = r2 ? mexd_ag_mul(t, r1, r2, error) : NULL;
  g_autoptr(MexdVar) es2 = rr ? mexd_ag_binary(t, es, rr, MEXD_BINARY_DIV, error) : NULL;
  g_autoptr(MexdVar) es3 = es2 ? mexd_ag_reshape(t, es2, 2, (int64_t[]){8, 4}, error) : NULL;
  g_autoptr(MexdVar) l1 = es3 ? readout(t, s, 5, error) : NULL;
  g_autoptr(MexdVar) l2 = l1 ? readout(t, es3, 6, error) : NULL;
  return l2 ? mexd_ag_add(t, l1, l2, error) : NULL;
}

static void b_layout(MexdParams *ps)
{
  mexd_params_add(ps, "x", 3, (int64_t[]){3, 4, 2}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "y", 2, (int64_t[]){10, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_layout(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  MexdBackend *be = ps_backend(ps);
  g_autoptr(MexdVar) p = mexd_ag_permute(t, P("x"), (int[]){2, 0, 1}, error); /* [2,3,4] */
  g_autoptr(MexdVar) tr = p ? mexd_ag_transpose(t, p, error) : NULL;           /* [2,4,3] */
  g_autoptr(MexdVar) f = tr ? mexd_ag_reshape(t, tr, 2, (int64_t[]){8, 3}, error) : NULL;
  /* y used whole and through a view of its first rows (as TransMIL's square padding) */
  g_autoptr(MexdVar) dup = f ? mexd_ag_rows(t, P("y"), 0, 4, error) : NULL;
  MexdVar *parts[3] = {f, P("y"), dup};
  g_autoptr(MexdVar) cat = dup ? mexd_ag_concat(t, parts, 3, 0, error) : NULL; /* [22,3] */
  int32_t idx[6] = {0, 21, 5, 5, 13, 0};
  g_autoptr(MexdTensor) ti = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 6, NULL);
  g_assert_true(mexd_tensor_write(ti, idx, sizeof idx, NULL));
  g_autoptr(MexdVar) g = cat ? mexd_ag_gather_rows(t, cat, ti, error) : NULL;
  g_autoptr(MexdVar) sm = g ? mexd_ag_segment_mean(t, cat, 4, error) : NULL; /* 6 groups, last 2 */
  g_autoptr(MexdVar) sr = sm ? mexd_ag_sum_rows(t, g, error) : NULL;
  g_autoptr(MexdVar) mr = sr ? mexd_ag_mean_rows(t, P("x"), error) : NULL;
  if (!mr)
    return NULL;
  g_autoptr(MexdVar) l1 = readout(t, g, 7, error);
  g_autoptr(MexdVar) l2 = l1 ? readout(t, sm, 8, error) : NULL;
  g_autoptr(MexdVar) l3 = l2 ? readout(t, sr, 9, error) : NULL;
  g_autoptr(MexdVar) l4 = l3 ? readout(t, mr, 10, error) : NULL;
  g_autoptr(MexdVar) a = l4 ? mexd_ag_add(t, l1, l2, error) : NULL;
  g_autoptr(MexdVar) b = a ? mexd_ag_add(t, l3, l4, error) : NULL;
  return b ? mexd_ag_add(t, a, b, error) : NULL;
}

static void b_conv(MexdParams *ps)
{
  mexd_params_add(ps, "x", 4, (int64_t[]){1, 3, 6, 5}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "w", 4, (int64_t[]){3, 1, 3, 3}, MEXD_INIT_UNIFORM, 0.5, NULL);
  mexd_params_add(ps, "b", 1, (int64_t[]){3}, MEXD_INIT_UNIFORM, 0.5, NULL);
  mexd_params_add(ps, "w2", 4, (int64_t[]){3, 1, 5, 1}, MEXD_INIT_UNIFORM, 0.5, NULL);
}

static MexdVar *l_conv(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  g_autoptr(MexdVar) y = mexd_ag_conv2d_depthwise(t, P("x"), P("w"), P("b"), 1, 1, error);
  g_autoptr(MexdVar) y2 = y ? mexd_ag_conv2d_depthwise(t, y, P("w2"), NULL, 2, 0, error) : NULL;
  return y2 ? readout(t, y2, 11, error) : NULL;
}

static void b_losses(MexdParams *ps)
{
  mexd_params_add(ps, "logits", 2, (int64_t[]){4, 3}, MEXD_INIT_UNIFORM, 2.0, NULL);
  mexd_params_add(ps, "x", 2, (int64_t[]){6, 7}, MEXD_INIT_UNIFORM, 1.0, NULL);
}

static MexdVar *l_losses(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  MexdBackend *be = ps_backend(ps);
  int32_t lab[4] = {2, 0, 1, 2};
  g_autoptr(MexdTensor) tl = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, 4, NULL);
  g_assert_true(mexd_tensor_write(tl, lab, sizeof lab, NULL));
  g_autoptr(MexdVar) ce = mexd_ag_cross_entropy(t, P("logits"), tl, error);
  /* dropout on a training tape: the same mask in every evaluation of the same seed */
  g_autoptr(MexdVar) dr = ce ? mexd_ag_dropout(t, P("x"), 0.3f, error) : NULL;
  g_autoptr(MexdVar) l2 = dr ? readout(t, dr, 12, error) : NULL;
  return l2 ? mexd_ag_add(t, ce, l2, error) : NULL;
}

static void b_attention(MexdParams *ps)
{
  mexd_params_add(ps, "a", 3, (int64_t[]){2, 5, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "b", 3, (int64_t[]){2, 7, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "c", 3, (int64_t[]){2, 7, 4}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "x", 2, (int64_t[]){5, 6}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "w", 2, (int64_t[]){18, 6}, MEXD_INIT_UNIFORM, 0.5, NULL);
}

/* mexd_ag_attend (twice, the second summed into the first by mexd_ag_add_consume, which on a
 * tape must not write in place) and mexd_ag_qkv_heads with 3 zero rows in front */
static MexdVar *l_attention(MexdTape *t, MexdParams *ps, gpointer d, GError **error)
{
  MexdVar *y = mexd_ag_attend(t, P("a"), P("b"), P("c"), 0.7f, NULL, NULL, error);
  g_autoptr(MexdVar) y2 = y ? mexd_ag_attend(t, P("a"), P("b"), P("c"), -1.3f, NULL, NULL, error)
                            : NULL;
  g_autoptr(MexdVar) s = y2 ? mexd_ag_add_consume(t, y, y2, error) : NULL;
  if (!y2 && y)
    mexd_var_unref(y);
  g_autoptr(MexdVar) h = s ? mexd_ag_qkv_heads(t, P("x"), P("w"), 8, 2, error) : NULL;
  if (!h)
    return NULL;
  g_assert_cmpint(mexd_var_value(h)->shape[0], ==, 6);
  g_assert_cmpint(mexd_var_value(h)->shape[1], ==, 8);
  g_assert_cmpint(mexd_var_value(h)->shape[2], ==, 3);
  g_autoptr(MexdVar) l1 = readout(t, s, 13, error);
  g_autoptr(MexdVar) l2 = l1 ? readout(t, h, 14, error) : NULL;
  return l2 ? mexd_ag_add(t, l1, l2, error) : NULL;
}

static const AgCase ag_cases[] = {
    {"linear", b_linear, l_linear},     {"matmul", b_matmul, l_matmul},
    {"elementwise", b_elementwise, l_elementwise}, {"norm", b_norm, l_norm},
    {"layout", b_layout, l_layout},     {"conv", b_conv, l_conv},
    {"losses", b_losses, l_losses},     {"attention", b_attention, l_attention},
};

/* mexd_ag_attend without a tape: whole, and in pieces of 4 scores (rows of 1 for the long rows
 * of b, M < N, and of 2 otherwise), with the left weights w, against the values a tape records
 * (and, for qkv_heads, against linear + zero rows + heads split by hand). */
static void test_attend_pieces(void)
{
  GError *error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  g_assert_no_error(error);
  g_autoptr(MexdParams) ps = mexd_params_new(be, 5);
  b_attention(ps);
  mexd_params_add(ps, "b2", 3, (int64_t[]){2, 3, 3}, MEXD_INIT_UNIFORM, 1.0, NULL);
  mexd_params_add(ps, "c2", 3, (int64_t[]){2, 3, 4}, MEXD_INIT_UNIFORM, 1.0, NULL);
  g_assert_true(mexd_params_upload(ps, &error));
  g_autoptr(MexdTensor) w = data_tensor(be, 3, (int64_t[]){2, 1, 5}, 41, 1.0);
  for (int k = 0; k < 2; k++) { /* long rows (N = 7 > M = 5), short rows (N = 3) */
    MexdVar *b = P(k ? "b2" : "b"), *c = P(k ? "c2" : "c");
    g_autoptr(MexdTape) t = mexd_tape_new(be, FALSE, 1);
    g_autoptr(MexdTensor) wp_ref = NULL, wp_whole = NULL, wp_piece = NULL;
    g_autoptr(MexdVar) ref = mexd_ag_attend(t, P("a"), b, c, 0.7f, w, &wp_ref, &error);
    g_assert_cmpuint(mexd_tape_n_nodes(t), ==, 1);
    g_autoptr(MexdVar) whole = mexd_ag_attend(NULL, P("a"), b, c, 0.7f, w, &wp_whole, &error);
    mexd_ag_set_attend_piece(4);
    g_autoptr(MexdVar) piece = mexd_ag_attend(NULL, P("a"), b, c, 0.7f, w, &wp_piece, &error);
    mexd_ag_set_attend_piece(0);
    g_assert_no_error(error);
    MexdTensor *got[4] = {mexd_var_value(whole), mexd_var_value(piece), wp_whole, wp_piece};
    MexdTensor *want[4] = {mexd_var_value(ref), mexd_var_value(ref), wp_ref, wp_ref};
    for (int i = 0; i < 4; i++) {
      g_autofree float *g = mexd_tensor_dup_f32(got[i], NULL);
      g_autofree float *r = mexd_tensor_dup_f32(want[i], NULL);
      mexd_test_assert_close(i < 2 ? "attend" : "attend w", g, mexd_tensor_numel(got[i]), r,
                             mexd_tensor_numel(want[i]), 1e-6);
    }
  }
  /* qkv_heads: part j, head h, row r ≥ 3 is x[r − 3]·w[jW + h·dh + i] */
  g_autoptr(MexdVar) h = mexd_ag_qkv_heads(NULL, P("x"), P("w"), 8, 2, &error);
  g_assert_no_error(error);
  g_autofree float *hv = mexd_tensor_dup_f32(mexd_var_value(h), NULL);
  MexdParam *x = mexd_params_find(ps, "x"), *wq = mexd_params_find(ps, "w");
  double worst = 0;
  for (int j = 0; j < 3; j++)
    for (int hd = 0; hd < 2; hd++)
      for (int r = 0; r < 8; r++)
        for (int i = 0; i < 3; i++) {
          double want = 0;
          for (int e = 0; r >= 3 && e < 6; e++)
            want += (double)x->host[(r - 3) * 6 + e] * wq->host[(j * 6 + hd * 3 + i) * 6 + e];
          worst = MAX(worst, fabs(want - hv[((j * 2 + hd) * 8 + r) * 3 + i]));
        }
  g_assert_cmpfloat(worst, <=, 1e-6);
}

typedef struct {
  const AgCase *c;
  char *spec;
} AgData;

static void ag_free(gpointer p)
{
  AgData *d = p;
  g_free(d->spec);
  g_free(d);
}

static void test_ag(gconstpointer data)
{
  const AgData *d = data;
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", NULL);
  g_autoptr(MexdParams) pc = mexd_params_new(cpu, 3);
  d->c->build(pc);
  g_assert_cmpuint(mexd_params_count(pc), >, 0);
  if (g_str_equal(d->spec, "cpu")) {
    check_fd(d->c->name, pc, d->c->loss, NULL, 40, 1e-2, 2e-2);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new(d->spec, &error);
  if (!be) {
    g_test_skip(error->message);
    return;
  }
  g_autoptr(MexdParams) pv = mexd_params_new(be, 3);
  d->c->build(pv);
  double lc = tape_grads(pc, d->c->loss, NULL, 7), lv = tape_grads(pv, d->c->loss, NULL, 7);
  g_assert_cmpfloat(fabs(lc - lv), <=, 1e-4 * MAX(1.0, fabs(lc)));
  check_same_grads(d->c->name, pc, pv, 1e-4);
}

/* ---- models ---- */

typedef struct {
  MexdTransMil tm;
  MexdMoeT moe;
  MexdDiffcT dc;
  MexdAbmil ab;
  MexdTensor *x, *P;
  int label;
  MexdModelConfig cfg;
  float z[64], rho[4];
} ModelData;

static MexdVar *l_transmil(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  ModelData *md = data;
  g_autoptr(MexdVar) x = mexd_var_new(md->x, FALSE);
  g_autoptr(MexdVar) logits = NULL, out = NULL;
  if (!mexd_transmil_forward(&md->tm, t, x, &logits, &out, NULL, NULL, "adapter1", error))
    return NULL;
  /* the loss of the class token and (through a readout) of the instance tokens */
  g_autoptr(MexdTensor) lab = mexd_tensor_new_1d(md->x->backend, MEXD_DTYPE_I32, 1, NULL);
  int32_t v = md->label;
  g_assert_true(mexd_tensor_write(lab, &v, 4, NULL));
  g_autoptr(MexdVar) ce = mexd_ag_cross_entropy(t, logits, lab, error);
  g_autoptr(MexdVar) r = ce ? readout(t, out, 21, error) : NULL;
  return r ? mexd_ag_add(t, ce, r, error) : NULL;
}

static MexdVar *l_transmil_ce(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  ModelData *md = data;
  g_autoptr(MexdVar) x = mexd_var_new(md->x, FALSE);
  g_autoptr(MexdVar) logits = NULL;
  if (!mexd_transmil_forward(&md->tm, t, x, &logits, NULL, NULL, NULL, "adapter1", error))
    return NULL;
  g_autoptr(MexdTensor) lab = mexd_tensor_new_1d(md->x->backend, MEXD_DTYPE_I32, 1, NULL);
  int32_t v = md->label;
  g_assert_true(mexd_tensor_write(lab, &v, 4, NULL));
  return mexd_ag_cross_entropy(t, logits, lab, error);
}

static MexdVar *l_moe(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  ModelData *md = data;
  MexdMoeOut out;
  if (!mexd_moe_t_forward(&md->moe, t, md->P, md->label, &out, error))
    return NULL;
  MexdVar *l = mexd_var_ref(out.loss);
  mexd_moe_out_clear(&out);
  return l;
}

static MexdVar *l_diffc(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  ModelData *md = data;
  int32_t ts[64];
  float eps[64 * 4];
  mexd_diffc_t_draw(&md->dc, 5, 1, 2, ts, eps);
  return mexd_diffc_t_loss(&md->dc, t, md->z, md->rho, md->label, ts, eps, 64, error);
}

static MexdVar *l_abmil(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  ModelData *md = data;
  g_autoptr(MexdVar) x = mexd_var_new(md->x, FALSE);
  g_autoptr(MexdVar) logits = NULL;
  if (!mexd_abmil_forward(&md->ab, t, x, &logits, NULL, error))
    return NULL;
  g_autoptr(MexdTensor) lab = mexd_tensor_new_1d(md->x->backend, MEXD_DTYPE_I32, 1, NULL);
  int32_t v = md->label;
  g_assert_true(mexd_tensor_write(lab, &v, 4, NULL));
  return mexd_ag_cross_entropy(t, logits, lab, error);
}

static const char *model_names[] = {"transmil", "moe", "diffc", "abmil"};

/* Builds model `k` on `be` (the same values on every backend). */
static LossFn build_model(int k, MexdBackend *be, MexdParams *ps, ModelData *md)
{
  GError *error = NULL;
  memset(md, 0, sizeof *md);
  /* small but with every case of the padding: N = 11 → S = 4 (5 duplicates), landmarks 4 →
   * n = 17 tokens, 3 zero rows in front, groups of l = 5 */
  MexdAttnShape s = {8, 2, 4, 3, 3};
  md->label = 1;
  switch (k) {
  case 0:
    md->x = data_tensor(be, 2, (int64_t[]){11, 6}, 31, 1.0);
    g_assert_true(mexd_transmil_init(&md->tm, MEXD_PARAMS_SOURCE(ps), "adapter1", 6, 3, &s, &error));
    md->tm.dropout = 0.1f;
    return l_transmil;
  case 1: {
    md->P = data_tensor(be, 2, (int64_t[]){13, 8}, 32, 1.5);
    MexdModelConfig *c = &md->cfg;
    c->width = 8;
    c->heads = 2;
    c->landmarks = 4;
    c->pinv_iterations = 3;
    c->res_conv_taps = 3;
    c->n_classes = 2;
    c->experts = 3;
    c->alpha[0] = 0.25;
    c->alpha[1] = c->alpha[2] = 0.5;
    c->expert_of_class[0] = 1;
    c->expert_of_class[1] = 2;
    g_assert_true(mexd_moe_t_init(&md->moe, ps, c, FALSE, &error));
    md->moe.a2.dropout = 0.0f;
    return l_moe;
  }
  case 2:
    for (int i = 0; i < 16; i++)
      md->z[i] = (float)sin(i * 1.3);
    md->rho[0] = 0.3f;
    md->rho[1] = 0.6f;
    md->rho[2] = 0.1f;
    g_assert_true(mexd_diffc_t_init(&md->dc, ps, 3, 16, 12, 1000, 1e-4, 0.02, FALSE, &error));
    return l_diffc;
  default:
    md->x = data_tensor(be, 2, (int64_t[]){9, 6}, 33, 1.0);
    g_assert_true(mexd_abmil_init(&md->ab, MEXD_PARAMS_SOURCE(ps), 6, 10, 5, 3, &error));
    return l_abmil;
  }
}

static void model_data_clear(ModelData *md)
{
  g_clear_pointer(&md->x, mexd_tensor_unref);
  g_clear_pointer(&md->P, mexd_tensor_unref);
  mexd_diffc_t_clear(&md->dc);
  mexd_abmil_clear(&md->ab);
  mexd_transmil_clear(&md->tm);
  mexd_moe_t_clear(&md->moe);
}

typedef struct {
  int model;
  char *spec;
} ModelCase;

static void model_case_free(gpointer p)
{
  ModelCase *c = p;
  g_free(c->spec);
  g_free(c);
}

static void test_model(gconstpointer data)
{
  const ModelCase *mc = data;
  g_autoptr(MexdBackend) cpu = mexd_backend_new("cpu", NULL);
  g_autoptr(MexdParams) pc = mexd_params_new(cpu, 9);
  ModelData dc;
  LossFn fn = build_model(mc->model, cpu, pc, &dc);
  if (g_str_equal(mc->spec, "cpu")) {
    /* the routing selection is discontinuous: a perturbation must not change it (the gates
     * here are far from ties: checked by the selection being the same at every probe) */
    check_fd(model_names[mc->model], pc, fn, &dc, 12, mc->model == 1 ? 2e-4 : 3e-3, 3e-2);
    model_data_clear(&dc);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new(mc->spec, &error);
  if (!be) {
    g_test_skip(error->message);
    model_data_clear(&dc);
    return;
  }
  g_autoptr(MexdParams) pv = mexd_params_new(be, 9);
  ModelData dv;
  LossFn fv = build_model(mc->model, be, pv, &dv);
  double lc = tape_grads(pc, fn, &dc, 7), lv = tape_grads(pv, fv, &dv, 7);
  g_test_message("%s: loss cpu %.8g, %s %.8g", model_names[mc->model], lc, mc->spec, lv);
  g_assert_cmpfloat(fabs(lc - lv), <=, 1e-4 * MAX(1.0, fabs(lc)));
  check_same_grads(model_names[mc->model], pc, pv, 2e-4);
  model_data_clear(&dc);
  model_data_clear(&dv);
}


/* ---- the PyTorch fixtures (tests/reference/gen_train.py) ---- */

typedef struct {
  char *path;
  char *spec;
} FixtureCase;

static void fixture_case_free(gpointer p)
{
  FixtureCase *c = p;
  g_free(c->path);
  g_free(c->spec);
  g_free(c);
}

static MexdTensor *st_tensor(MexdSafetensors *st, const char *name, MexdBackend *be, MexdDType dt)
{
  GError *error = NULL;
  MexdTensor *t = mexd_safetensors_load(st, name, be, dt, &error);
  g_assert_no_error(error);
  return t;
}

static int meta_int(MexdSafetensors *st, const char *key)
{
  const char *v = mexd_safetensors_metadata(st, key);
  g_assert_nonnull(v);
  return atoi(v);
}

typedef struct {
  ModelData md;
  MexdSafetensors *st;
  int32_t ts[64];
  float *eps;
} FixData;

static MexdVar *l_fix_diffc(MexdTape *t, MexdParams *ps, gpointer data, GError **error)
{
  FixData *f = data;
  return mexd_diffc_t_loss(&f->md.dc, t, f->md.z, f->md.rho, f->md.label, f->ts, f->eps, 64,
                           error);
}

static void test_fixture(gconstpointer data)
{
  const FixtureCase *fc = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(MexdBackend) be = mexd_backend_new(fc->spec, &error);
  if (!be) {
    g_test_skip(error->message);
    return;
  }
  g_autoptr(MexdSafetensors) st = mexd_safetensors_open(fc->path, &error);
  g_assert_no_error(error);
  const char *stage = mexd_safetensors_metadata(st, "stage");
  const char *json = mexd_safetensors_metadata(st, "mexd.config");
  g_assert_nonnull(stage);
  g_assert_nonnull(json);
  g_autoptr(MexdParams) ps = mexd_params_new(be, 0);
  FixData fd;
  memset(&fd, 0, sizeof fd);
  ModelData *md = &fd.md;
  md->label = meta_int(st, "label");
  LossFn fn = NULL;
  MexdModelConfig cfg;
  gboolean have_cfg = FALSE;
  if (g_str_equal(stage, "0")) {
    int D;
    MexdAttnShape s;
    g_auto(GStrv) classes = NULL;
    g_assert_true(mexd_transmil_config_parse(json, fc->path, &D, &s, &classes, &error));
    g_assert_true(mexd_transmil_init(&md->tm, MEXD_PARAMS_SOURCE(ps), "adapter1", D,
                                     (int)g_strv_length(classes), &s, &error));
    md->tm.dropout = 0;
    md->x = st_tensor(st, "x", be, MEXD_DTYPE_F32);
  } else if (g_str_equal(stage, "1") || g_str_equal(stage, "2")) {
    g_assert_true(mexd_model_config_parse(&cfg, json, fc->path, &error));
    have_cfg = TRUE;
    if (g_str_equal(stage, "1")) {
      const char *routing = mexd_safetensors_metadata(st, "routing");
      g_assert_true(mexd_moe_t_init(&md->moe, ps, &cfg, routing && g_str_equal(routing, "none"),
                                    &error));
      md->moe.a2.dropout = 0;
      md->P = st_tensor(st, "P", be, MEXD_DTYPE_F32);
      fn = l_moe;
    } else {
      g_assert_true(mexd_diffc_t_init(&md->dc, ps, cfg.n_classes, cfg.width, cfg.diffusion_width,
                                      cfg.T, cfg.beta_start, cfg.beta_end, cfg.prior_none,
                                      &error));
      int64_t n;
      g_autofree float *z = mexd_test_st_floats(st, "z", &n);
      g_assert_cmpint(n, <=, 64);
      memcpy(md->z, z, sizeof(float) * n);
      g_autofree float *rho = mexd_test_st_floats(st, "rho", &n);
      memcpy(md->rho, rho, sizeof(float) * n);
      g_autofree float *tf = mexd_test_st_floats(st, "t", &n);
      g_assert_cmpint(n, ==, 64);
      for (int i = 0; i < 64; i++)
        fd.ts[i] = (int32_t)tf[i];
      fd.eps = mexd_test_st_floats(st, "eps", &n);
      /* f_t as the fixture computes it */
      g_autofree float *ft = g_new(float, n);
      mexd_diffc_t_noised(&md->dc, md->label, md->rho, fd.ts, fd.eps, 64, ft);
      int64_t nf;
      g_autofree float *ft_ref = mexd_test_st_floats(st, "f_t", &nf);
      mexd_test_assert_close("f_t", ft, n, ft_ref, nf, 1e-6);
      fn = l_fix_diffc;
    }
  } else {
    JsonObject *o;
    g_autoptr(JsonParser) jp = json_parser_new();
    g_assert_true(json_parser_load_from_data(jp, json, -1, NULL));
    o = json_node_get_object(json_parser_get_root(jp));
    g_assert_true(mexd_abmil_init(&md->ab, MEXD_PARAMS_SOURCE(ps), (int)json_object_get_int_member(o, "feature_dim"),
                                    (int)json_object_get_int_member(o, "width"),
                                    (int)json_object_get_int_member(o, "attn_dim"),
                                    (int)json_array_get_length(
                                        json_object_get_array_member(o, "classes")),
                                    &error));
    md->ab.dropout = 0;
    md->x = st_tensor(st, "x", be, MEXD_DTYPE_F32);
    fn = l_abmil;
  }
  if (!fn)
    fn = l_transmil_ce;
  g_assert_true(mexd_params_load(ps, st, NULL, &error));
  double loss = tape_grads(ps, fn, &fd, 0);
  int64_t n;
  g_autofree float *lref = mexd_test_st_floats(st, "loss", &n);
  g_test_message("%s on %s: loss %.8g, PyTorch float64 %.8g", fc->path, fc->spec, loss,
                 (double)lref[0]);
  g_assert_cmpfloat(fabs(loss - lref[0]), <=, 2e-5 * MAX(1.0, fabs(lref[0])));
  guint checked = 0;
  for (guint i = 0; i < mexd_params_count(ps); i++) {
    MexdParam *p = mexd_params_index(ps, i);
    g_autofree char *gname = g_strdup_printf("grad.%s", p->name);
    g_autofree float *g = mexd_test_st_floats(st, gname, &n);
    if (!g)
      g_error("%s: no %s", fc->path, gname);
    /* normwise against the largest gradient of the whole model (some tensors' gradients are
     * zero in exact arithmetic and tiny rounding noise in both) */
    double gmax = 0, worst = 0;
    for (int64_t k = 0; k < n; k++)
      gmax = MAX(gmax, fabs(g[k]));
    for (guint j = 0; j < mexd_params_count(ps); j++) {
      MexdParam *q = mexd_params_index(ps, j);
      g_autofree char *qn = g_strdup_printf("grad.%s", q->name);
      int64_t m;
      g_autofree float *gq = mexd_test_st_floats(st, qn, &m);
      for (int64_t k = 0; gq && k < m; k++)
        gmax = MAX(gmax, 1e-3 * fabs(gq[k]));
    }
    g_assert_cmpint(n, ==, p->n);
    for (int64_t k = 0; k < n; k++)
      worst = MAX(worst, fabs(p->grad[k] - g[k]));
    double rel = gmax > 0 ? worst / gmax : worst;
    if (!(rel <= 2e-4))
      g_error("%s on %s: %s differs from PyTorch by %.3g (normwise; max |g| %.3g)", fc->path,
              fc->spec, gname, rel, gmax);
    checked++;
  }
  g_assert_cmpuint(checked, ==, mexd_params_count(ps));
  g_free(fd.eps);
  model_data_clear(md);
  if (have_cfg)
    mexd_model_config_clear(&cfg);
}

static gint cmp_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_auto(GStrv) specs = mexd_test_backends();
  g_test_add_func("/train/autograd/attend-pieces", test_attend_pieces);
  for (int b = 0; specs[b]; b++) {
    for (guint k = 0; k < G_N_ELEMENTS(ag_cases); k++) {
      AgData *d = g_new0(AgData, 1);
      d->c = &ag_cases[k];
      d->spec = g_strdup(specs[b]);
      g_autofree char *p = g_strdup_printf("/train/autograd/%s/%s", ag_cases[k].name, specs[b]);
      g_test_add_data_func_full(p, d, test_ag, ag_free);
    }
    for (int k = 0; k < 4; k++) {
      ModelCase *c = g_new0(ModelCase, 1);
      c->model = k;
      c->spec = g_strdup(specs[b]);
      g_autofree char *p = g_strdup_printf("/train/models/%s/%s", model_names[k], specs[b]);
      g_test_add_data_func_full(p, c, test_model, model_case_free);
    }
    g_autofree char *dir = mexd_test_fixture_dir("train");
    g_autoptr(GDir) d = dir ? g_dir_open(dir, 0, NULL) : NULL;
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while (d && (name = g_dir_read_name(d)))
      if (g_str_has_suffix(name, ".safetensors"))
        g_ptr_array_add(files, g_strdup(name));
    g_ptr_array_sort(files, cmp_names);
    for (guint i = 0; i < files->len; i++) {
      const char *f = g_ptr_array_index(files, i);
      FixtureCase *c = g_new0(FixtureCase, 1);
      c->path = g_build_filename(dir, f, NULL);
      c->spec = g_strdup(specs[b]);
      g_autofree char *base = g_strndup(f, strlen(f) - strlen(".safetensors"));
      g_autofree char *p = g_strdup_printf("/train/fixtures/%s/%s", base, specs[b]);
      g_test_add_data_func_full(p, c, test_fixture, fixture_case_free);
    }
  }
  int rc = g_test_run();
  if (g_getenv("MEXD_VK_VALIDATION") && mexd_vk_validation_messages() > 0) {
    g_printerr("the Vulkan validation layer reported %u messages\n", mexd_vk_validation_messages());
    return 1;
  }
  return rc;
}
