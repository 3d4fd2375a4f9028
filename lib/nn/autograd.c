/* autograd.c: the tape (autograd.h).
 *
 * Each op runs its forward op, then (when recorded) keeps a Node: the inputs, the output and what
 * the backward needs besides (index tensors, labels, the dropout stream).  Backward formulas, with
 * g = the output's gradient (every term is added to the inputs' gradients):
 *   linear      dx += g·w, dw += gᵀ·x, db += Σ_rows g
 *   matmul      c = α·op(a)·op(b): da += α·g·op(b)ᵀ (stored as op(a) is), db += α·op(a)ᵀ·g
 *   unary       dx += f'(x)⊙g (mexd_unary_backward); scale: dx += a·g
 *   binary      add: da += g, db += g; sub: db −= g; mul: da += g⊙b, db += g⊙a;
 *               div: da += g/b, db −= g⊙y/b; then summed over the dims that were broadcast
 *   layernorm, softmax, gather (scatter-add), concat (slices), cross-entropy, mse, dropout,
 *   depthwise conv2d, abs_sum_max: the backward ops of ops/grad.h
 *   permute     dx += permute(g, inverse); transpose likewise
 *   segment mean / mean rows / sum rows: g spread back over the rows of each group
 * Views (rows, reshape) have no node: a view's gradient is the same view of its parent's, so the
 * parent's producer sees everything that flowed into any of its views.
 *
 * Broadcast reductions (binary): the dims of the output are grouped into runs where the smaller
 * operand is broadcast (B) or kept (K).  "B K" (a bias over rows) is a sum over rows
 * (mexd_sum_rows); "K B" (a per-row scale) is a GEMM with a column of ones; "B K B" does both;
 * other patterns are refused (the models here do not need them). */
#include "nn/autograd.h"

#include "backend/backend.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

#define MAX_IN 3

struct _MexdVar {
  gint ref;
  MexdTensor *value;
  MexdTensor *grad;
  gboolean requires_grad;
  /* a view: the same view of parent's gradient is its gradient */
  MexdVar *parent;
  gboolean is_rows; /* rows [row0, row0 + n) of the parent; else a reshape to value's shape */
  int64_t row0, nrows;
};

typedef struct _Node Node;
typedef gboolean (*BackFn)(Node *n, GError **error);

struct _Node {
  BackFn fn;
  MexdVar *out;
  MexdVar *in[MAX_IN];
  MexdVar **parts; /* concat */
  int n_parts;
  MexdTensor *aux;   /* index / labels / target / per-row scale */
  MexdTensor *aux2;
  int ia[4];         /* op, axis, perm, flags */
  int64_t la[2];
  float fa[2];
  uint64_t stream;
};

struct _MexdTape {
  MexdBackend *be;
  gboolean training;
  uint64_t seed;
  uint64_t n_dropout;
  GPtrArray *nodes;
  gboolean spent;
};

/* ---- Vars ---- */

MexdVar *mexd_var_take(MexdTensor *value, gboolean requires_grad)
{
  g_return_val_if_fail(value != NULL, NULL);
  MexdVar *v = g_new0(MexdVar, 1);
  v->ref = 1;
  v->value = value;
  v->requires_grad = requires_grad;
  return v;
}

MexdVar *mexd_var_new(MexdTensor *value, gboolean requires_grad)
{
  g_return_val_if_fail(value != NULL, NULL);
  return mexd_var_take(mexd_tensor_ref(value), requires_grad);
}

MexdVar *mexd_var_ref(MexdVar *v)
{
  g_atomic_int_inc(&v->ref);
  return v;
}

void mexd_var_unref(MexdVar *v)
{
  if (!v || !g_atomic_int_dec_and_test(&v->ref))
    return;
  mexd_tensor_unref(v->value);
  if (v->grad)
    mexd_tensor_unref(v->grad);
  if (v->parent)
    mexd_var_unref(v->parent);
  g_free(v);
}

MexdTensor *mexd_var_value(const MexdVar *v)
{
  return v->value;
}

gboolean mexd_var_requires_grad(const MexdVar *v)
{
  return v && v->requires_grad;
}

void mexd_var_set_requires_grad(MexdVar *v, gboolean requires_grad)
{
  if (v && !v->parent)
    v->requires_grad = requires_grad;
}

void mexd_var_zero_grad(MexdVar *v)
{
  if (v)
    g_clear_pointer(&v->grad, mexd_tensor_unref);
}

/* v's view of a gradient tensor of its parent. */
static MexdTensor *view_of(MexdVar *v, MexdTensor *pg, GError **error)
{
  if (v->is_rows)
    return mexd_tensor_rows(pg, v->row0, v->nrows, error);
  return mexd_tensor_reshape(pg, v->value->ndim, v->value->shape, error);
}

MexdTensor *mexd_var_grad(MexdVar *v)
{
  if (!v)
    return NULL;
  if (v->grad || !v->parent)
    return v->grad;
  MexdTensor *pg = mexd_var_grad(v->parent);
  if (pg)
    v->grad = view_of(v, pg, NULL);
  return v->grad;
}

/* The gradient tensor to add into (zeros when new); NULL with the error set on failure. */
static MexdTensor *grad_for(MexdVar *v, GError **error)
{
  if (v->grad)
    return v->grad;
  if (v->parent) {
    MexdTensor *pg = grad_for(v->parent, error);
    if (!pg)
      return NULL;
    v->grad = view_of(v, pg, error);
    return v->grad;
  }
  v->grad = mexd_tensor_new_zeros(v->value->backend, MEXD_DTYPE_F32, v->value->ndim,
                                  v->value->shape, error);
  return v->grad;
}

/* ---- the tape ---- */

static void node_free(Node *n)
{
  if (!n)
    return;
  mexd_var_unref(n->out);
  for (int i = 0; i < MAX_IN; i++)
    if (n->in[i])
      mexd_var_unref(n->in[i]);
  for (int i = 0; i < n->n_parts; i++)
    mexd_var_unref(n->parts[i]);
  g_free(n->parts);
  if (n->aux)
    mexd_tensor_unref(n->aux);
  if (n->aux2)
    mexd_tensor_unref(n->aux2);
  g_free(n);
}

MexdTape *mexd_tape_new(MexdBackend *be, gboolean training, uint64_t seed)
{
  MexdTape *t = g_new0(MexdTape, 1);
  t->be = be ? mexd_backend_ref(be) : NULL;
  t->training = training;
  t->seed = seed;
  t->nodes = g_ptr_array_new_with_free_func((GDestroyNotify)node_free);
  return t;
}

void mexd_tape_free(MexdTape *t)
{
  if (!t)
    return;
  /* newest first, as backward drops them */
  while (t->nodes->len > 0)
    g_ptr_array_remove_index(t->nodes, t->nodes->len - 1);
  g_ptr_array_unref(t->nodes);
  if (t->be)
    mexd_backend_unref(t->be);
  g_free(t);
}

gboolean mexd_tape_training(const MexdTape *t)
{
  return t && t->training;
}

guint mexd_tape_n_nodes(const MexdTape *t)
{
  return t ? t->nodes->len : 0;
}

/* Records a node for `out` when some input requires a gradient (else marks out as constant and
 * returns NULL).  The inputs are referenced. */
static Node *record(MexdTape *t, BackFn fn, MexdVar *out, MexdVar *a, MexdVar *b, MexdVar *c)
{
  MexdVar *ins[MAX_IN] = {a, b, c};
  gboolean any = FALSE;
  for (int i = 0; i < MAX_IN; i++)
    any = any || (ins[i] && ins[i]->requires_grad);
  out->requires_grad = t && !t->spent && any;
  if (!out->requires_grad)
    return NULL;
  Node *n = g_new0(Node, 1);
  n->fn = fn;
  n->out = mexd_var_ref(out);
  for (int i = 0; i < MAX_IN; i++)
    n->in[i] = ins[i] ? mexd_var_ref(ins[i]) : NULL;
  g_ptr_array_add(t->nodes, n);
  return n;
}

gboolean mexd_tape_backward(MexdTape *t, MexdVar *loss, GError **error)
{
  if (!t || !loss)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_tape_backward: NULL %s",
                     t ? "loss" : "tape");
  if (t->spent)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "mexd_tape_backward: the tape has been run already");
  if (mexd_tensor_numel(loss->value) != 1)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "mexd_tape_backward: the loss must have one element, not %" G_GINT64_FORMAT,
                     mexd_tensor_numel(loss->value));
  t->spent = TRUE;
  if (!loss->requires_grad)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "mexd_tape_backward: the loss depends on no parameter");
  MexdTensor *g = grad_for(loss, error);
  float one = 1.0f;
  if (!g || !mexd_tensor_write_f32(g, &one, 1, error))
    return FALSE;
  while (t->nodes->len > 0) {
    Node *n = g_ptr_array_steal_index(t->nodes, t->nodes->len - 1);
    gboolean ok = TRUE;
    if (mexd_var_grad(n->out))
      ok = n->fn(n, error);
    node_free(n);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

/* ---- helpers ---- */

static MexdTensor *new_f32(MexdTensor *like, int ndim, const int64_t *shape, GError **error)
{
  return mexd_tensor_new(like->backend, MEXD_DTYPE_F32, ndim, shape, error);
}

/* dst += src (same number of elements; shapes may differ). */
static gboolean add_into(MexdTensor *dst, MexdTensor *src, float a, GError **error)
{
  if (!mexd_tensor_same_shape(dst, src)) {
    g_autoptr(MexdTensor) s = mexd_tensor_reshape(src, dst->ndim, dst->shape, error);
    return s && mexd_lincomb(dst, a, s, 0, NULL, 0, NULL, 1.0f, error);
  }
  return mexd_lincomb(dst, a, src, 0, NULL, 0, NULL, 1.0f, error);
}

static MexdTensor *ones(MexdTensor *like, int64_t n, GError **error)
{
  g_autofree float *v = g_new(float, n);
  for (int64_t i = 0; i < n; i++)
    v[i] = 1.0f;
  return mexd_tensor_new_from_f32(like->backend, MEXD_DTYPE_F32, 2, (int64_t[]){n, 1}, v, error);
}

/* dst (shape T, broadcast against src's shape Y) += Σ over the broadcast dims of src. */
static gboolean reduce_into(MexdTensor *dst, MexdTensor *src, GError **error)
{
  int yn = src->ndim;
  if (mexd_tensor_numel(dst) == mexd_tensor_numel(src))
    return add_into(dst, src, 1.0f, error);
  int64_t tshape[MEXD_MAX_DIMS];
  int off = yn - dst->ndim;
  for (int k = 0; k < yn; k++)
    tshape[k] = k < off ? 1 : dst->shape[k - off];
  /* runs of broadcast (B) and kept (K) dims */
  int64_t run[MEXD_MAX_DIMS];
  gboolean bc[MEXD_MAX_DIMS];
  int nr = 0;
  for (int k = 0; k < yn; k++) {
    gboolean b = tshape[k] == 1 && src->shape[k] != 1;
    if (src->shape[k] == 1)
      continue; /* a dim of 1 belongs to either */
    if (nr > 0 && bc[nr - 1] == b) {
      run[nr - 1] *= src->shape[k];
    } else {
      bc[nr] = b;
      run[nr] = src->shape[k];
      nr++;
    }
  }
  int64_t lead = 1, keep = 1, trail = 1;
  if (nr == 1 && bc[0]) {
    lead = run[0];
  } else if (nr == 2 && bc[0] && !bc[1]) {
    lead = run[0];
    keep = run[1];
  } else if (nr == 2 && !bc[0] && bc[1]) {
    keep = run[0];
    trail = run[1];
  } else if (nr == 3 && bc[0] && !bc[1] && bc[2]) {
    lead = run[0];
    keep = run[1];
    trail = run[2];
  } else {
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "autograd: this broadcast pattern has no backward here");
  }
  g_autoptr(MexdTensor) s = mexd_tensor_reshape(src, 2, (int64_t[]){lead * keep, trail}, error);
  if (!s)
    return FALSE;
  g_autoptr(MexdTensor) col = NULL; /* [lead·keep, 1] */
  if (trail > 1) {
    g_autoptr(MexdTensor) o = ones(src, trail, error);
    col = o ? new_f32(src, 2, (int64_t[]){lead * keep, 1}, error) : NULL;
    if (!col || !mexd_gemm(col, s, o, NULL, NULL, error))
      return FALSE;
  } else {
    col = g_steal_pointer(&s);
  }
  g_autoptr(MexdTensor) c2 = mexd_tensor_reshape(col, 2, (int64_t[]){lead, keep}, error);
  g_autoptr(MexdTensor) d1 = c2 ? mexd_tensor_reshape(dst, 1, (int64_t[]){keep}, error) : NULL;
  if (!d1)
    return FALSE;
  if (lead == 1)
    return add_into(d1, c2, 1.0f, error);
  return mexd_sum_rows(d1, c2, TRUE, error);
}

static MexdVar *out_var(MexdTensor *like, int ndim, const int64_t *shape, GError **error)
{
  MexdTensor *y = new_f32(like, ndim, shape, error);
  return y ? mexd_var_take(y, FALSE) : NULL;
}

static gboolean check_var(const char *op, MexdVar *v, GError **error)
{
  if (!v)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: an argument is NULL", op);
  if (v->value->dtype != MEXD_DTYPE_F32)
    return mexd_fail(error, MEXD_ERROR_DTYPE, "%s: training runs in f32, not %s", op,
                     mexd_dtype_name(v->value->dtype));
  return TRUE;
}

#define GRAD(v) ((v) && (v)->requires_grad ? grad_for((v), error) : NULL)
#define NEED(v) ((v) && (v)->requires_grad)

/* ---- linear ---- */

static gboolean linear_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out);
  MexdVar *x = n->in[0], *w = n->in[1], *b = n->in[2];
  if (NEED(x)) {
    MexdTensor *dx = GRAD(x);
    MexdGemmParams p = {FALSE, FALSE, 1.0f, 1.0f};
    if (!dx || !mexd_gemm(dx, g, w->value, NULL, &p, error))
      return FALSE;
  }
  if (NEED(w)) {
    MexdTensor *dw = GRAD(w);
    MexdGemmParams p = {TRUE, FALSE, 1.0f, 1.0f};
    if (!dw || !mexd_gemm(dw, g, x->value, NULL, &p, error))
      return FALSE;
  }
  if (NEED(b)) {
    MexdTensor *db = GRAD(b);
    if (!db || !mexd_sum_rows(db, g, TRUE, error))
      return FALSE;
  }
  return TRUE;
}

MexdVar *mexd_ag_linear(MexdTape *t, MexdVar *x, MexdVar *w, MexdVar *b, GError **error)
{
  if (!check_var("linear", x, error) || !check_var("linear", w, error) ||
      (b && !check_var("linear", b, error)))
    return NULL;
  if (x->value->ndim != 2 || w->value->ndim != 2)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "linear: x and w must be 2-D");
  g_autoptr(MexdVar) y =
      out_var(x->value, 2, (int64_t[]){x->value->shape[0], w->value->shape[0]}, error);
  MexdGemmParams p = MEXD_GEMM_PARAMS_DEFAULT;
  p.trans_b = TRUE;
  if (!y || !mexd_gemm(y->value, x->value, w->value, b ? b->value : NULL, &p, error))
    return NULL;
  record(t, linear_back, y, x, w, b);
  return g_steal_pointer(&y);
}

/* ---- matmul ---- */

static gboolean matmul_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out);
  MexdVar *a = n->in[0], *b = n->in[1];
  gboolean ta = n->ia[0], tb = n->ia[1];
  float alpha = n->fa[0];
  if (NEED(a)) {
    MexdTensor *da = GRAD(a);
    /* !ta: da = α·g·op(b)ᵀ; ta: da = α·op(b)·gᵀ */
    MexdGemmParams p = ta ? (MexdGemmParams){tb, TRUE, alpha, 1.0f}
                          : (MexdGemmParams){FALSE, !tb, alpha, 1.0f};
    if (!da || !(ta ? mexd_gemm(da, b->value, g, NULL, &p, error)
                    : mexd_gemm(da, g, b->value, NULL, &p, error)))
      return FALSE;
  }
  if (NEED(b)) {
    MexdTensor *db = GRAD(b);
    /* !tb: db = α·op(a)ᵀ·g; tb: db = α·gᵀ·op(a) */
    MexdGemmParams p = tb ? (MexdGemmParams){TRUE, ta, alpha, 1.0f}
                          : (MexdGemmParams){!ta, FALSE, alpha, 1.0f};
    if (!db || !(tb ? mexd_gemm(db, g, a->value, NULL, &p, error)
                    : mexd_gemm(db, a->value, g, NULL, &p, error)))
      return FALSE;
  }
  return TRUE;
}

MexdVar *mexd_ag_matmul(MexdTape *t, MexdVar *a, MexdVar *b, gboolean trans_a, gboolean trans_b,
                        float alpha, GError **error)
{
  if (!check_var("matmul", a, error) || !check_var("matmul", b, error))
    return NULL;
  MexdTensor *A = a->value, *B = b->value;
  if (A->ndim != B->ndim || A->ndim < 2 || A->ndim > 3 ||
      (A->ndim == 3 && A->shape[0] != B->shape[0]))
    return mexd_fail_null(error, MEXD_ERROR_SHAPE,
                          "matmul: a and b must both be 2-D, or 3-D with one batch");
  int o = A->ndim - 2;
  int64_t M = trans_a ? A->shape[o + 1] : A->shape[o];
  int64_t N = trans_b ? B->shape[o] : B->shape[o + 1];
  int64_t shape[3] = {A->shape[0], M, N};
  g_autoptr(MexdVar) y = o ? out_var(A, 3, shape, error) : out_var(A, 2, shape + 1, error);
  MexdGemmParams p = {trans_a, trans_b, alpha, 0.0f};
  if (!y || !mexd_gemm(y->value, A, B, NULL, &p, error))
    return NULL;
  Node *n = record(t, matmul_back, y, a, b, NULL);
  if (n) {
    n->ia[0] = trans_a;
    n->ia[1] = trans_b;
    n->fa[0] = alpha;
  }
  return g_steal_pointer(&y);
}

/* ---- elementwise ---- */

static gboolean unary_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx && mexd_unary_backward(dx, mexd_var_grad(n->out), n->in[0]->value,
                                   (MexdUnaryOp)n->ia[0], TRUE, error);
}

MexdVar *mexd_ag_unary(MexdTape *t, MexdVar *x, MexdUnaryOp op, GError **error)
{
  if (!check_var("unary", x, error))
    return NULL;
  if (op == MEXD_UNARY_SCALE || op == MEXD_UNARY_SCALE_EYE)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_ag_unary: use mexd_ag_scale for a·x + b");
  g_autoptr(MexdVar) y = out_var(x->value, x->value->ndim, x->value->shape, error);
  if (!y || !mexd_unary(y->value, x->value, op, 0, 0, error))
    return NULL;
  Node *n = record(t, unary_back, y, x, NULL, NULL);
  if (n)
    n->ia[0] = op;
  return g_steal_pointer(&y);
}

static gboolean scale_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx && add_into(dx, mexd_var_grad(n->out), n->fa[0], error);
}

MexdVar *mexd_ag_scale(MexdTape *t, MexdVar *x, float a, float b, gboolean eye, GError **error)
{
  if (!check_var("scale", x, error))
    return NULL;
  g_autoptr(MexdVar) y = out_var(x->value, x->value->ndim, x->value->shape, error);
  if (!y || !mexd_unary(y->value, x->value, eye ? MEXD_UNARY_SCALE_EYE : MEXD_UNARY_SCALE, a, b,
                        error))
    return NULL;
  Node *n = record(t, scale_back, y, x, NULL, NULL);
  if (n)
    n->fa[0] = a;
  return g_steal_pointer(&y);
}

/* The contribution `c` (of the output's shape) reduced into operand v's gradient. */
static gboolean give(MexdVar *v, MexdTensor *c, GError **error)
{
  MexdTensor *dv = GRAD(v);
  return dv && reduce_into(dv, c, error);
}

static gboolean binary_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out);
  MexdVar *a = n->in[0], *b = n->in[1];
  MexdBinaryOp op = (MexdBinaryOp)n->ia[0];
  MexdTensor *Y = n->out->value;
  if (NEED(a)) {
    if (op == MEXD_BINARY_ADD || op == MEXD_BINARY_SUB) {
      if (!give(a, g, error))
        return FALSE;
    } else {
      g_autoptr(MexdTensor) c = new_f32(Y, Y->ndim, Y->shape, error);
      if (!c || !mexd_binary(c, g, b->value, op, error) || !give(a, c, error))
        return FALSE;
    }
  }
  if (NEED(b)) {
    g_autoptr(MexdTensor) c = NULL;
    if (op == MEXD_BINARY_ADD) {
      c = mexd_tensor_ref(g);
    } else {
      c = new_f32(Y, Y->ndim, Y->shape, error);
      if (!c)
        return FALSE;
      gboolean ok;
      if (op == MEXD_BINARY_SUB)
        ok = mexd_unary(c, g, MEXD_UNARY_SCALE, -1.0f, 0.0f, error);
      else if (op == MEXD_BINARY_MUL)
        ok = mexd_binary(c, g, a->value, MEXD_BINARY_MUL, error);
      else /* −g⊙y/b */
        ok = mexd_binary(c, g, Y, MEXD_BINARY_MUL, error) &&
             mexd_binary(c, c, b->value, MEXD_BINARY_DIV, error) &&
             mexd_unary(c, c, MEXD_UNARY_SCALE, -1.0f, 0.0f, error);
      if (!ok)
        return FALSE;
    }
    if (!give(b, c, error))
      return FALSE;
  }
  return TRUE;
}

MexdVar *mexd_ag_binary(MexdTape *t, MexdVar *a, MexdVar *b, MexdBinaryOp op, GError **error)
{
  if (!check_var("binary", a, error) || !check_var("binary", b, error))
    return NULL;
  MexdTensor *A = a->value, *B = b->value;
  /* the output takes the larger operand's shape */
  MexdTensor *big = mexd_tensor_numel(A) >= mexd_tensor_numel(B) ? A : B;
  g_autoptr(MexdVar) y = out_var(big, big->ndim, big->shape, error);
  if (!y || !mexd_binary(y->value, A, B, op, error))
    return NULL;
  Node *n = record(t, binary_back, y, a, b, NULL);
  if (n)
    n->ia[0] = op;
  return g_steal_pointer(&y);
}

MexdVar *mexd_ag_add(MexdTape *t, MexdVar *a, MexdVar *b, GError **error)
{
  return mexd_ag_binary(t, a, b, MEXD_BINARY_ADD, error);
}

MexdVar *mexd_ag_mul(MexdTape *t, MexdVar *a, MexdVar *b, GError **error)
{
  return mexd_ag_binary(t, a, b, MEXD_BINARY_MUL, error);
}

/* ---- normalisation ---- */

static gboolean layernorm_back(Node *n, GError **error)
{
  MexdVar *x = n->in[0], *ga = n->in[1], *be = n->in[2];
  MexdTensor *dx = NEED(x) ? GRAD(x) : NULL;
  MexdTensor *dg = NEED(ga) ? GRAD(ga) : NULL;
  MexdTensor *db = NEED(be) ? GRAD(be) : NULL;
  if ((NEED(x) && !dx) || (NEED(ga) && !dg) || (NEED(be) && !db))
    return FALSE;
  return mexd_layernorm_backward(dx, dg, db, mexd_var_grad(n->out), x->value,
                                 ga ? ga->value : NULL, n->fa[0], TRUE, error);
}

MexdVar *mexd_ag_layernorm(MexdTape *t, MexdVar *x, MexdVar *gamma, MexdVar *beta, float eps,
                           GError **error)
{
  if (!check_var("layernorm", x, error))
    return NULL;
  g_autoptr(MexdVar) y = out_var(x->value, x->value->ndim, x->value->shape, error);
  if (!y || !mexd_layernorm(y->value, x->value, gamma ? gamma->value : NULL,
                            beta ? beta->value : NULL, eps, error))
    return NULL;
  Node *n = record(t, layernorm_back, y, x, gamma, beta);
  if (n)
    n->fa[0] = eps;
  return g_steal_pointer(&y);
}

static gboolean softmax_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx &&
         mexd_softmax_rows_backward(dx, n->out->value, mexd_var_grad(n->out), TRUE, error);
}

MexdVar *mexd_ag_softmax(MexdTape *t, MexdVar *x, GError **error)
{
  if (!check_var("softmax", x, error))
    return NULL;
  g_autoptr(MexdVar) y = out_var(x->value, x->value->ndim, x->value->shape, error);
  if (!y || !mexd_softmax_rows(y->value, x->value, error))
    return NULL;
  record(t, softmax_back, y, x, NULL, NULL);
  return g_steal_pointer(&y);
}

/* ---- views ---- */

static MexdVar *view_var(MexdTape *t, MexdVar *x, MexdTensor *view, gboolean is_rows,
                         int64_t row0, int64_t n)
{
  MexdVar *v = mexd_var_take(view, FALSE);
  v->parent = mexd_var_ref(x);
  v->is_rows = is_rows;
  v->row0 = row0;
  v->nrows = n;
  v->requires_grad = x->requires_grad && (t == NULL || !t->spent);
  return v;
}

MexdVar *mexd_ag_rows(MexdTape *t, MexdVar *x, int64_t row0, int64_t n, GError **error)
{
  if (!check_var("rows", x, error))
    return NULL;
  MexdTensor *v = mexd_tensor_rows(x->value, row0, n, error);
  return v ? view_var(t, x, v, TRUE, row0, n) : NULL;
}

MexdVar *mexd_ag_reshape(MexdTape *t, MexdVar *x, int ndim, const int64_t *shape, GError **error)
{
  if (!check_var("reshape", x, error))
    return NULL;
  MexdTensor *v = mexd_tensor_reshape(x->value, ndim, shape, error);
  return v ? view_var(t, x, v, FALSE, 0, 0) : NULL;
}

static gboolean permute_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  MexdTensor *x = n->in[0]->value;
  int inv[MEXD_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++)
    inv[n->ia[i]] = i;
  g_autoptr(MexdTensor) tmp = dx ? new_f32(x, x->ndim, x->shape, error) : NULL;
  return tmp && mexd_permute(tmp, mexd_var_grad(n->out), inv, error) &&
         add_into(dx, tmp, 1.0f, error);
}

MexdVar *mexd_ag_permute(MexdTape *t, MexdVar *x, const int *perm, GError **error)
{
  if (!check_var("permute", x, error))
    return NULL;
  MexdTensor *X = x->value;
  int64_t shape[MEXD_MAX_DIMS];
  for (int i = 0; i < X->ndim; i++) {
    if (perm[i] < 0 || perm[i] >= X->ndim)
      return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "permute: bad permutation");
    shape[i] = X->shape[perm[i]];
  }
  g_autoptr(MexdVar) y = out_var(X, X->ndim, shape, error);
  if (!y || !mexd_permute(y->value, X, perm, error))
    return NULL;
  Node *n = record(t, permute_back, y, x, NULL, NULL);
  if (n)
    for (int i = 0; i < X->ndim; i++)
      n->ia[i] = perm[i];
  return g_steal_pointer(&y);
}

static gboolean transpose_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  MexdTensor *x = n->in[0]->value;
  g_autoptr(MexdTensor) tmp = dx ? new_f32(x, x->ndim, x->shape, error) : NULL;
  return tmp && mexd_transpose(tmp, mexd_var_grad(n->out), error) &&
         add_into(dx, tmp, 1.0f, error);
}

MexdVar *mexd_ag_transpose(MexdTape *t, MexdVar *x, GError **error)
{
  if (!check_var("transpose", x, error))
    return NULL;
  MexdTensor *X = x->value;
  if (X->ndim < 2)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "transpose: x must have 2 dims or more");
  int64_t shape[MEXD_MAX_DIMS];
  memcpy(shape, X->shape, sizeof shape);
  shape[X->ndim - 1] = X->shape[X->ndim - 2];
  shape[X->ndim - 2] = X->shape[X->ndim - 1];
  g_autoptr(MexdVar) y = out_var(X, X->ndim, shape, error);
  if (!y || !mexd_transpose(y->value, X, error))
    return NULL;
  record(t, transpose_back, y, x, NULL, NULL);
  return g_steal_pointer(&y);
}

static gboolean concat_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out);
  int axis = n->ia[0];
  int64_t start = 0;
  for (int i = 0; i < n->n_parts; i++) {
    MexdVar *p = n->parts[i];
    if (NEED(p)) {
      MexdTensor *dp = GRAD(p);
      if (!dp || !mexd_slice(dp, g, axis, start, TRUE, error))
        return FALSE;
    }
    start += p->value->shape[axis];
  }
  return TRUE;
}

MexdVar *mexd_ag_concat(MexdTape *t, MexdVar *const *parts, int n, int axis, GError **error)
{
  if (n < 1)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "concat: no parts");
  g_autofree MexdTensor **xs = g_new(MexdTensor *, n);
  gboolean any = FALSE;
  for (int i = 0; i < n; i++) {
    if (!check_var("concat", parts[i], error))
      return NULL;
    xs[i] = parts[i]->value;
    any = any || parts[i]->requires_grad;
  }
  MexdTensor *X = xs[0];
  int ax = axis < 0 ? axis + X->ndim : axis;
  if (ax < 0 || ax >= X->ndim)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "concat: bad axis %d", axis);
  int64_t shape[MEXD_MAX_DIMS];
  memcpy(shape, X->shape, sizeof shape);
  shape[ax] = 0;
  for (int i = 0; i < n; i++)
    shape[ax] += xs[i]->shape[ax];
  g_autoptr(MexdVar) y = out_var(X, X->ndim, shape, error);
  if (!y || !mexd_concat(y->value, xs, n, ax, error))
    return NULL;
  y->requires_grad = t && !t->spent && any;
  if (y->requires_grad) {
    Node *nd = g_new0(Node, 1);
    nd->fn = concat_back;
    nd->out = mexd_var_ref(y);
    nd->parts = g_new(MexdVar *, n);
    nd->n_parts = n;
    for (int i = 0; i < n; i++)
      nd->parts[i] = mexd_var_ref(parts[i]);
    nd->ia[0] = ax;
    g_ptr_array_add(t->nodes, nd);
  }
  return g_steal_pointer(&y);
}

/* ---- indexing and reductions ---- */

static gboolean gather_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx && mexd_scatter_add_rows(dx, mexd_var_grad(n->out), n->aux, TRUE, error);
}

MexdVar *mexd_ag_gather_rows(MexdTape *t, MexdVar *x, MexdTensor *idx, GError **error)
{
  if (!check_var("gather_rows", x, error))
    return NULL;
  if (!idx || x->value->ndim != 2)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "gather_rows: x must be 2-D and idx given");
  g_autoptr(MexdVar) y =
      out_var(x->value, 2, (int64_t[]){mexd_tensor_numel(idx), x->value->shape[1]}, error);
  if (!y || !mexd_gather_rows(y->value, x->value, idx, error))
    return NULL;
  Node *n = record(t, gather_back, y, x, NULL, NULL);
  if (n)
    n->aux = mexd_tensor_ref(idx);
  return g_steal_pointer(&y);
}

/* dx [M,N] += g[row's group] · (1/its size): the group index per row in aux, the per-row factor
 * in aux2 (NULL when every group has seg_len rows: the factor is 1/seg_len). */
static gboolean segment_back(Node *n, GError **error)
{
  MexdVar *x = n->in[0];
  MexdTensor *dx = GRAD(x);
  MexdTensor *X = x->value;
  g_autoptr(MexdTensor) tmp = dx ? new_f32(X, 2, X->shape, error) : NULL;
  if (!tmp || !mexd_gather_rows(tmp, mexd_var_grad(n->out), n->aux, error))
    return FALSE;
  if (!n->aux2)
    return add_into(dx, tmp, 1.0f / (float)n->la[0], error);
  return mexd_binary(tmp, tmp, n->aux2, MEXD_BINARY_MUL, error) && add_into(dx, tmp, 1.0f, error);
}

MexdVar *mexd_ag_segment_mean(MexdTape *t, MexdVar *x, int64_t seg_len, GError **error)
{
  if (!check_var("segment_mean", x, error))
    return NULL;
  MexdTensor *X = x->value;
  if (X->ndim != 2 || seg_len < 1)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "segment_mean: x must be 2-D, seg_len ≥ 1");
  int64_t M = X->shape[0], S = (M + seg_len - 1) / seg_len;
  g_autoptr(MexdVar) y = out_var(X, 2, (int64_t[]){S, X->shape[1]}, error);
  if (!y || !mexd_segment_mean(y->value, X, seg_len, error))
    return NULL;
  Node *n = record(t, segment_back, y, x, NULL, NULL);
  if (n) {
    n->la[0] = seg_len;
    g_autofree int32_t *grp = g_new(int32_t, M);
    for (int64_t i = 0; i < M; i++)
      grp[i] = (int32_t)(i / seg_len);
    n->aux = mexd_tensor_new_1d(X->backend, MEXD_DTYPE_I32, M, error);
    if (!n->aux || !mexd_tensor_write(n->aux, grp, sizeof(int32_t) * M, error))
      return NULL;
    if (M % seg_len) {
      g_autofree float *f = g_new(float, M);
      int64_t last = M - (S - 1) * seg_len;
      for (int64_t i = 0; i < M; i++)
        f[i] = 1.0f / (float)(i / seg_len == S - 1 ? last : seg_len);
      n->aux2 = mexd_tensor_new_from_f32(X->backend, MEXD_DTYPE_F32, 2, (int64_t[]){M, 1}, f,
                                         error);
      if (!n->aux2)
        return NULL;
    }
  }
  return g_steal_pointer(&y);
}

/* dx [M,N] += factor·g [N] over every row */
static gboolean rows_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  if (!dx)
    return FALSE;
  MexdTensor *g = mexd_var_grad(n->out);
  g_autoptr(MexdTensor) d2 = mexd_tensor_reshape(
      dx, 2, (int64_t[]){mexd_tensor_numel(dx) / mexd_tensor_numel(g), mexd_tensor_numel(g)},
      error);
  return d2 && mexd_lincomb(d2, n->fa[0], g, 0, NULL, 0, NULL, 1.0f, error);
}

static MexdVar *reduce_rows(MexdTape *t, MexdVar *x, gboolean mean, GError **error)
{
  if (!check_var(mean ? "mean_rows" : "sum_rows", x, error))
    return NULL;
  MexdTensor *X = x->value;
  int64_t N = X->shape[X->ndim - 1], M = mexd_tensor_numel(X) / N;
  g_autoptr(MexdVar) y = out_var(X, 1, (int64_t[]){N}, error);
  if (!y || !(mean ? mexd_mean_rows(y->value, X, error) : mexd_sum_rows(y->value, X, FALSE, error)))
    return NULL;
  Node *n = record(t, rows_back, y, x, NULL, NULL);
  if (n)
    n->fa[0] = mean ? 1.0f / (float)M : 1.0f;
  return g_steal_pointer(&y);
}

MexdVar *mexd_ag_sum_rows(MexdTape *t, MexdVar *x, GError **error)
{
  return reduce_rows(t, x, FALSE, error);
}

MexdVar *mexd_ag_mean_rows(MexdTape *t, MexdVar *x, GError **error)
{
  return reduce_rows(t, x, TRUE, error);
}

/* ---- convolution ---- */

static gboolean conv_back(Node *n, GError **error)
{
  MexdVar *x = n->in[0], *w = n->in[1], *b = n->in[2];
  MexdTensor *g = mexd_var_grad(n->out);
  MexdConv2dParams p = MEXD_CONV2D_PARAMS_DEFAULT;
  p.pad_h = n->ia[0];
  p.pad_w = n->ia[1];
  p.groups = (int)x->value->shape[1];
  if (NEED(x)) {
    MexdTensor *dx = GRAD(x);
    if (!dx || !mexd_conv2d_backward_input(dx, g, w->value, &p, TRUE, error))
      return FALSE;
  }
  if (NEED(w) || NEED(b)) {
    MexdTensor *dw = NEED(w) ? GRAD(w) : NULL;
    MexdTensor *db = NEED(b) ? GRAD(b) : NULL;
    if ((NEED(w) && !dw) || (NEED(b) && !db))
      return FALSE;
    g_autoptr(MexdTensor) dw_tmp = NULL;
    if (!dw) { /* only the bias trains: the weight gradient goes to a scratch tensor */
      dw_tmp = mexd_tensor_new_zeros(w->value->backend, MEXD_DTYPE_F32, w->value->ndim,
                                     w->value->shape, error);
      if (!dw_tmp)
        return FALSE;
    }
    if (!mexd_conv2d_backward_weight(dw ? dw : dw_tmp, db, g, x->value, &p, error))
      return FALSE;
  }
  return TRUE;
}

MexdVar *mexd_ag_conv2d_depthwise(MexdTape *t, MexdVar *x, MexdVar *w, MexdVar *b, int pad_h,
                                  int pad_w, GError **error)
{
  if (!check_var("conv2d", x, error) || !check_var("conv2d", w, error) ||
      (b && !check_var("conv2d", b, error)))
    return NULL;
  MexdTensor *X = x->value, *Wt = w->value;
  if (X->ndim != 4 || Wt->ndim != 4)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "conv2d: x and w must be 4-D");
  int64_t OH = X->shape[2] + 2 * pad_h - Wt->shape[2] + 1;
  int64_t OW = X->shape[3] + 2 * pad_w - Wt->shape[3] + 1;
  if (OH < 1 || OW < 1)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "conv2d: the kernel is larger than the input");
  g_autoptr(MexdVar) y =
      out_var(X, 4, (int64_t[]){X->shape[0], Wt->shape[0], OH, OW}, error);
  MexdConv2dParams p = MEXD_CONV2D_PARAMS_DEFAULT;
  p.pad_h = pad_h;
  p.pad_w = pad_w;
  p.groups = (int)X->shape[1];
  if (!y || !mexd_conv2d(y->value, X, Wt, b ? b->value : NULL, &p, error))
    return NULL;
  Node *n = record(t, conv_back, y, x, w, b);
  if (n) {
    n->ia[0] = pad_h;
    n->ia[1] = pad_w;
  }
  return g_steal_pointer(&y);
}

/* ---- the pinv scale ---- */

static gboolean asm_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx && mexd_abs_sum_max_backward(dx, n->in[0]->value, mexd_var_grad(n->out), n->ia[0],
                                         TRUE, error);
}

MexdVar *mexd_ag_abs_sum_max(MexdTape *t, MexdVar *x, int axis, GError **error)
{
  if (!check_var("abs_sum_max", x, error))
    return NULL;
  g_autoptr(MexdVar) y = out_var(x->value, 1, (int64_t[]){1}, error);
  if (!y || !mexd_abs_sum_max(y->value, x->value, axis, error))
    return NULL;
  Node *n = record(t, asm_back, y, x, NULL, NULL);
  if (n)
    n->ia[0] = axis;
  return g_steal_pointer(&y);
}

/* ---- dropout ---- */

static gboolean dropout_back(Node *n, GError **error)
{
  MexdTensor *dx = GRAD(n->in[0]);
  return dx && mexd_dropout(dx, mexd_var_grad(n->out), n->fa[0], (uint64_t)n->la[0], n->stream,
                            TRUE, error);
}

MexdVar *mexd_ag_dropout(MexdTape *t, MexdVar *x, float p, GError **error)
{
  if (!check_var("dropout", x, error))
    return NULL;
  if (!(p >= 0.0f && p < 1.0f))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "dropout: p must be in [0, 1), not %g", (double)p);
  if (!mexd_tape_training(t) || p == 0.0f)
    return mexd_var_ref(x);
  uint64_t stream = t->n_dropout++;
  g_autoptr(MexdVar) y = out_var(x->value, x->value->ndim, x->value->shape, error);
  if (!y || !mexd_dropout(y->value, x->value, p, t->seed, stream, FALSE, error))
    return NULL;
  Node *n = record(t, dropout_back, y, x, NULL, NULL);
  if (n) {
    n->fa[0] = p;
    n->la[0] = (int64_t)t->seed;
    n->stream = stream;
  }
  return g_steal_pointer(&y);
}

/* ---- losses ---- */

static gboolean xent_back(Node *n, GError **error)
{
  MexdTensor *dl = GRAD(n->in[0]);
  return dl && mexd_cross_entropy_backward(dl, n->in[0]->value, n->aux, mexd_var_grad(n->out),
                                           TRUE, error);
}

MexdVar *mexd_ag_cross_entropy(MexdTape *t, MexdVar *logits, MexdTensor *labels, GError **error)
{
  if (!check_var("cross_entropy", logits, error))
    return NULL;
  g_autoptr(MexdVar) y = out_var(logits->value, 1, (int64_t[]){1}, error);
  if (!y || !mexd_cross_entropy(y->value, logits->value, labels, error))
    return NULL;
  Node *n = record(t, xent_back, y, logits, NULL, NULL);
  if (n)
    n->aux = mexd_tensor_ref(labels);
  return g_steal_pointer(&y);
}

static gboolean mse_back(Node *n, GError **error)
{
  MexdTensor *dy = GRAD(n->in[0]);
  return dy && mexd_mse_backward(dy, n->in[0]->value, n->aux, mexd_var_grad(n->out), TRUE, error);
}

MexdVar *mexd_ag_mse(MexdTape *t, MexdVar *y, MexdTensor *target, GError **error)
{
  if (!check_var("mse", y, error))
    return NULL;
  g_autoptr(MexdVar) l = out_var(y->value, 1, (int64_t[]){1}, error);
  if (!l || !mexd_mse(l->value, y->value, target, error))
    return NULL;
  Node *n = record(t, mse_back, l, y, NULL, NULL);
  if (n)
    n->aux = mexd_tensor_ref(target);
  return g_steal_pointer(&l);
}

/* ---- attention ---- */

/* a's value may be overwritten: nothing would record an op on a and b, and only the caller holds
 * a (not a view, whose parent someone else may read). */
static gboolean overwritable(MexdTape *t, MexdVar *a, MexdVar *b)
{
  gboolean records = t && !t->spent && (a->requires_grad || (b && b->requires_grad));
  return !records && a->ref == 1 && !a->parent;
}

MexdVar *mexd_ag_unary_consume(MexdTape *t, MexdVar *x, MexdUnaryOp op, GError **error)
{
  if (!check_var("unary", x, error)) {
    mexd_var_unref(x);
    return NULL;
  }
  if (overwritable(t, x, NULL) && op != MEXD_UNARY_SCALE && op != MEXD_UNARY_SCALE_EYE) {
    if (!mexd_unary(x->value, x->value, op, 0, 0, error)) {
      mexd_var_unref(x);
      return NULL;
    }
    return x;
  }
  MexdVar *y = mexd_ag_unary(t, x, op, error);
  mexd_var_unref(x);
  return y;
}

MexdVar *mexd_ag_add_consume(MexdTape *t, MexdVar *a, MexdVar *b, GError **error)
{
  if (!check_var("add", a, error) || !check_var("add", b, error)) {
    mexd_var_unref(a);
    return NULL;
  }
  if (overwritable(t, a, b) && mexd_tensor_same_shape(a->value, b->value)) {
    if (!mexd_add(a->value, a->value, b->value, error)) {
      mexd_var_unref(a);
      return NULL;
    }
    return a;
  }
  MexdVar *y = mexd_ag_add(t, a, b, error);
  mexd_var_unref(a);
  return y;
}

/* Pieces (cpu backend, nothing recorded).  Decision (issue 17): when the scores S [B,M,N] are
 * larger than a piece they are never whole: per batch, a piece of rows of S is made, soft-maxed
 * and multiplied on while it is in the cache.  Each score is the same sum as in the whole tensor;
 * only the GEMMs' blocking differs.  Measured before (2026-12-03, 2 cores): at N = 100,000 each
 * of Nyström's A1 and A3 is 820 MB per layer, and a third of adapter #1's time went to the kernel
 * clearing their fresh pages.  The Vulkan backend keeps the whole tensors (one recorded command
 * buffer; pieces would not free memory before it is submitted); a tape keeps S for backward. */
#define PIECE_FLOATS ((int64_t)1 << 18) /* 1 MiB of scores */
/* Long rows (N > M: Nyström's A3, [m, np]) take pieces 128 times larger (128 MiB): every piece
 * reads all of b and c of its batch again (measured at N = 100,000: whole heads of A3, 102 MB
 * each, 6.3 s for adapter #1; pieces of 4 MiB 20 s; of 32 MiB 6.4 s). */
#define LONG_PIECES 128
static int64_t piece_floats = PIECE_FLOATS;

void mexd_ag_set_attend_piece(int64_t floats)
{
  piece_floats = floats > 0 ? floats : PIECE_FLOATS;
}

/* One piece: rows [r0, r0 + nr) of a (2-D) give s = softmax(scale·a·bᵀ) in the first nr rows of
 * sc, then the same rows of y = s·c.  Returns s (a view of sc). */
static MexdTensor *attend_piece(MexdTensor *sc, MexdTensor *a, MexdTensor *b, MexdTensor *c,
                                MexdTensor *y, int64_t r0, int64_t nr, float scale,
                                GError **error)
{
  MexdGemmParams pq = {FALSE, TRUE, scale, 0.0f};
  g_autoptr(MexdTensor) ap = mexd_tensor_rows(a, r0, nr, error);
  g_autoptr(MexdTensor) sp = ap ? mexd_tensor_rows(sc, 0, nr, error) : NULL;
  g_autoptr(MexdTensor) yp = sp ? mexd_tensor_rows(y, r0, nr, error) : NULL;
  if (!yp || !mexd_gemm(sp, ap, b, NULL, &pq, error) || !mexd_softmax_rows(sp, sp, error) ||
      !mexd_gemm(yp, sp, c, NULL, NULL, error))
    return NULL;
  return g_steal_pointer(&sp);
}

static gboolean attend_pieces(MexdTensor *y, MexdTensor *wp, MexdTensor *a, MexdTensor *b,
                              MexdTensor *c, MexdTensor *w, float scale, GError **error)
{
  const int64_t B = a->shape[0], M = a->shape[1], K = a->shape[2], N = b->shape[1],
                D = c->shape[2];
  const int64_t rows = N > M ? CLAMP(piece_floats * LONG_PIECES / N, 1, M)
                             : CLAMP(piece_floats / N, 1, M);
  g_autoptr(MexdTensor) a2 = mexd_tensor_reshape(a, 2, (int64_t[]){B * M, K}, error);
  g_autoptr(MexdTensor) b2 = a2 ? mexd_tensor_reshape(b, 2, (int64_t[]){B * N, K}, error) : NULL;
  g_autoptr(MexdTensor) c2 = b2 ? mexd_tensor_reshape(c, 2, (int64_t[]){B * N, D}, error) : NULL;
  g_autoptr(MexdTensor) y2 = c2 ? mexd_tensor_reshape(y, 2, (int64_t[]){B * M, D}, error) : NULL;
  g_autoptr(MexdTensor) sc = y2 ? new_f32(a, 2, (int64_t[]){rows, N}, error) : NULL;
  /* w as a column [B·M, 1], so that a piece of it is a piece of rows */
  g_autoptr(MexdTensor) wc = sc && w ? mexd_tensor_reshape(w, 2, (int64_t[]){B * M, 1}, error)
                                     : NULL;
  g_autoptr(MexdTensor) wp2 = wc ? mexd_tensor_reshape(wp, 2, (int64_t[]){B, N}, error) : NULL;
  if (!sc || (w && !wp2))
    return FALSE;
  MexdGemmParams acc = {TRUE, FALSE, 1.0f, 1.0f};
  for (int64_t h = 0; h < B; h++) {
    g_autoptr(MexdTensor) bh = mexd_tensor_rows(b2, h * N, N, error);
    g_autoptr(MexdTensor) ch = bh ? mexd_tensor_rows(c2, h * N, N, error) : NULL;
    g_autoptr(MexdTensor) wph = ch && wp2 ? mexd_tensor_rows(wp2, h, 1, error) : NULL;
    if (!ch || (wp2 && (!wph || !mexd_tensor_fill_zero(wph, error))))
      return FALSE;
    for (int64_t r = 0; r < M; r += rows) {
      const int64_t nr = MIN(rows, M - r);
      g_autoptr(MexdTensor) sp = attend_piece(sc, a2, bh, ch, y2, h * M + r, nr, scale, error);
      if (!sp)
        return FALSE;
      if (wph) {
        g_autoptr(MexdTensor) wpc = mexd_tensor_rows(wc, h * M + r, nr, error);
        if (!wpc || !mexd_gemm(wph, wpc, sp, NULL, &acc, error))
          return FALSE;
      }
    }
  }
  return TRUE;
}

/* y = S·c with S = softmax(scale·a·bᵀ) kept in aux: dc += Sᵀ·g; dS = g·cᵀ; dL = softmax'(dS);
 * da += scale·dL·b; db += scale·dLᵀ·a. */
static gboolean attend_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out), *S = n->aux;
  MexdVar *a = n->in[0], *b = n->in[1], *c = n->in[2];
  float scale = n->fa[0];
  if (NEED(c)) {
    MexdTensor *dc = GRAD(c);
    if (!dc || !mexd_gemm(dc, S, g, NULL, &(MexdGemmParams){TRUE, FALSE, 1.0f, 1.0f}, error))
      return FALSE;
  }
  if (!NEED(a) && !NEED(b))
    return TRUE;
  g_autoptr(MexdTensor) dS = new_f32(S, 3, S->shape, error);
  g_autoptr(MexdTensor) dL = dS ? new_f32(S, 3, S->shape, error) : NULL;
  if (!dL || !mexd_gemm(dS, g, c->value, NULL, &(MexdGemmParams){FALSE, TRUE, 1.0f, 0.0f}, error) ||
      !mexd_softmax_rows_backward(dL, S, dS, FALSE, error))
    return FALSE;
  if (NEED(a)) {
    MexdTensor *da = GRAD(a);
    if (!da ||
        !mexd_gemm(da, dL, b->value, NULL, &(MexdGemmParams){FALSE, FALSE, scale, 1.0f}, error))
      return FALSE;
  }
  if (NEED(b)) {
    MexdTensor *db = GRAD(b);
    if (!db ||
        !mexd_gemm(db, dL, a->value, NULL, &(MexdGemmParams){TRUE, FALSE, scale, 1.0f}, error))
      return FALSE;
  }
  return TRUE;
}

MexdVar *mexd_ag_attend(MexdTape *t, MexdVar *a, MexdVar *b, MexdVar *c, float scale,
                        MexdTensor *w, MexdTensor **wp, GError **error)
{
  if (!check_var("attend", a, error) || !check_var("attend", b, error) ||
      !check_var("attend", c, error))
    return NULL;
  MexdTensor *A = a->value, *Bt = b->value, *Cv = c->value;
  if (A->ndim != 3 || Bt->ndim != 3 || Cv->ndim != 3 || Bt->shape[0] != A->shape[0] ||
      Cv->shape[0] != A->shape[0] || Bt->shape[2] != A->shape[2] || Cv->shape[1] != Bt->shape[1])
    return mexd_fail_null(error, MEXD_ERROR_SHAPE,
                          "attend: a [B,M,K], b [B,N,K] and c [B,N,D] must agree");
  const int64_t B = A->shape[0], M = A->shape[1], N = Bt->shape[1];
  if (w && (w->ndim != 3 || w->shape[0] != B || w->shape[1] != 1 || w->shape[2] != M))
    return mexd_fail_null(error, MEXD_ERROR_SHAPE, "attend: w must be [%" G_GINT64_FORMAT
                          ", 1, %" G_GINT64_FORMAT "]", B, M);
  gboolean records = t && !t->spent && (a->requires_grad || b->requires_grad || c->requires_grad);
  g_autoptr(MexdVar) y = out_var(A, 3, (int64_t[]){B, M, Cv->shape[2]}, error);
  g_autoptr(MexdTensor) wpt = y && w ? new_f32(A, 3, (int64_t[]){B, 1, N}, error) : NULL;
  if (!y || (w && !wpt))
    return NULL;
  g_autoptr(MexdTensor) S = NULL;
  if (!records && mexd_backend_kind(A->backend) == MEXD_BACKEND_CPU && B * M * N > piece_floats) {
    if (!attend_pieces(y->value, wpt, A, Bt, Cv, w, scale, error))
      return NULL;
  } else {
    S = new_f32(A, 3, (int64_t[]){B, M, N}, error);
    if (!S || !mexd_gemm(S, A, Bt, NULL, &(MexdGemmParams){FALSE, TRUE, scale, 0.0f}, error) ||
        !mexd_softmax_rows(S, S, error) || (w && !mexd_gemm(wpt, w, S, NULL, NULL, error)) ||
        !mexd_gemm(y->value, S, Cv, NULL, NULL, error))
      return NULL;
  }
  Node *n = record(t, attend_back, y, a, b, c);
  if (n) {
    n->aux = g_steal_pointer(&S);
    n->fa[0] = scale;
  }
  if (wp)
    *wp = g_steal_pointer(&wpt);
  return g_steal_pointer(&y);
}

/* dY_j = the last n rows of g's part j with the heads merged back; dx += dY_j·w_j,
 * dw_j += dY_jᵀ·x. */
static gboolean qkv_back(Node *n, GError **error)
{
  MexdTensor *g = mexd_var_grad(n->out);
  MexdVar *x = n->in[0], *w = n->in[1];
  const int64_t H = n->la[0], np = g->shape[1], dh = g->shape[2], W = H * dh,
                N = x->value->shape[0];
  MexdTensor *dx = NEED(x) ? GRAD(x) : NULL;
  MexdTensor *dw = NEED(w) ? GRAD(w) : NULL;
  if ((NEED(x) && !dx) || (NEED(w) && !dw))
    return FALSE;
  g_autoptr(MexdTensor) gf = mexd_tensor_reshape(g, 2, (int64_t[]){3 * H * np, dh}, error);
  g_autoptr(MexdTensor) tmp = gf ? new_f32(g, 3, (int64_t[]){np, H, dh}, error) : NULL;
  g_autoptr(MexdTensor) tmp2 = tmp ? mexd_tensor_reshape(tmp, 2, (int64_t[]){np, W}, error) : NULL;
  g_autoptr(MexdTensor) last = tmp2 ? mexd_tensor_rows(tmp2, np - N, N, error) : NULL;
  if (!last)
    return FALSE;
  for (int64_t j = 0; j < 3; j++) {
    g_autoptr(MexdTensor) gj = mexd_tensor_rows(gf, j * H * np, H * np, error);
    g_autoptr(MexdTensor) g3 = gj ? mexd_tensor_reshape(gj, 3, (int64_t[]){H, np, dh}, error)
                                  : NULL;
    g_autoptr(MexdTensor) wj = g3 ? mexd_tensor_rows(w->value, j * W, W, error) : NULL;
    if (!wj || !mexd_permute(tmp, g3, (int[]){1, 0, 2}, error))
      return FALSE;
    if (dx && !mexd_gemm(dx, last, wj, NULL, &(MexdGemmParams){FALSE, FALSE, 1.0f, 1.0f}, error))
      return FALSE;
    if (dw) {
      g_autoptr(MexdTensor) dwj = mexd_tensor_rows(dw, j * W, W, error);
      if (!dwj ||
          !mexd_gemm(dwj, last, x->value, NULL, &(MexdGemmParams){TRUE, FALSE, 1.0f, 1.0f}, error))
        return FALSE;
    }
  }
  return TRUE;
}

MexdVar *mexd_ag_qkv_heads(MexdTape *t, MexdVar *x, MexdVar *w, int64_t np, int64_t H,
                           GError **error)
{
  if (!check_var("qkv_heads", x, error) || !check_var("qkv_heads", w, error))
    return NULL;
  MexdTensor *X = x->value;
  const int64_t N = X->shape[0], W = X->ndim == 2 ? X->shape[1] : 0;
  if (X->ndim != 2 || H < 1 || W % H != 0 || np < N || w->value->ndim != 2 ||
      w->value->shape[0] != 3 * W || w->value->shape[1] != W)
    return mexd_fail_null(error, MEXD_ERROR_SHAPE,
                          "qkv_heads: x [N,W], w [3W,W], np ≥ N and heads dividing W");
  const int64_t dh = W / H;
  g_autoptr(MexdVar) y = out_var(X, 3, (int64_t[]){3 * H, np, dh}, error);
  g_autoptr(MexdTensor) hf =
      y ? mexd_tensor_reshape(y->value, 2, (int64_t[]){3 * H * np, dh}, error) : NULL;
  g_autoptr(MexdTensor) part = hf ? new_f32(X, 2, (int64_t[]){np, W}, error) : NULL;
  g_autoptr(MexdTensor) pad = part && np > N ? mexd_tensor_rows(part, 0, np - N, error) : NULL;
  g_autoptr(MexdTensor) rows = part ? mexd_tensor_rows(part, np - N, N, error) : NULL;
  g_autoptr(MexdTensor) p3 = rows ? mexd_tensor_reshape(part, 3, (int64_t[]){np, H, dh}, error)
                                  : NULL;
  /* only the pad rows need zeros (the GEMMs write the rest) */
  if (!p3 || (np > N && (!pad || !mexd_tensor_fill_zero(pad, error))))
    return NULL;
  for (int64_t j = 0; j < 3; j++) {
    g_autoptr(MexdTensor) wj = mexd_tensor_rows(w->value, j * W, W, error);
    g_autoptr(MexdTensor) dj = wj ? mexd_tensor_rows(hf, j * H * np, H * np, error) : NULL;
    g_autoptr(MexdTensor) d3 = dj ? mexd_tensor_reshape(dj, 3, (int64_t[]){H, np, dh}, error)
                                  : NULL;
    MexdGemmParams p = {FALSE, TRUE, 1.0f, 0.0f};
    if (!d3 || !mexd_gemm(rows, X, wj, NULL, &p, error) ||
        !mexd_permute(d3, p3, (int[]){1, 0, 2}, error))
      return NULL;
  }
  Node *n = record(t, qkv_back, y, x, w, NULL);
  if (n)
    n->la[0] = H;
  return g_steal_pointer(&y);
}
