/* binary.c: elementwise y = a ∘ b (add, sub, mul, div) with NumPy broadcasting (ops.h).
 *
 * Shapes are aligned at the last dimension; a missing or size-1 dimension stretches.  y must have
 * exactly the broadcast shape (its dimension count included).  Both inputs are addressed through
 * one element stride per output dimension (0 where broadcast), with the output padded to 4-D.
 * Division follows IEEE (x/0 is ±inf or NaN).
 * cpu: f32 arithmetic, f16 tensors widened first and rounded once at the end.
 * vulkan: shaders/binary.comp, one invocation per output element.
 * y may be a or b exactly (same storage bytes), which is only possible when that input has y's
 * element count and so is not broadcast; any other overlap between y and an input is refused. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#define BINARY_GROUP 256 /* local_size_x of binary.comp */

typedef struct {
  int64_t d[4];            /* y's shape padded to 4-D with leading 1s */
  int64_t sa[4], sb[4];    /* element strides of a and b per padded output dim (0: broadcast) */
  int64_t n;               /* elements of y */
  gboolean a_full, b_full; /* input has y's element count: read at y's index */
} BinaryGeom;

/* Strides of t per padded output dimension: its contiguous strides, 0 on dims it lacks or has
 * as 1 (stretched, or of size 1 in y too, where the stride never matters). */
static void broadcast_strides(const MexdTensor *t, int64_t s[4])
{
  int64_t stride = 1;
  for (int p = 3; p >= 0; p--) {
    int k = p - (4 - t->ndim);
    if (k < 0 || t->shape[k] == 1) {
      s[p] = 0;
    } else {
      s[p] = stride;
      stride *= t->shape[k];
    }
  }
}

static float binary_apply(MexdBinaryOp op, float u, float v)
{
  switch (op) {
  case MEXD_BINARY_ADD: return u + v;
  case MEXD_BINARY_SUB: return u - v;
  case MEXD_BINARY_MUL: return u * v;
  case MEXD_BINARY_DIV: break;
  }
  return u / v;
}

typedef struct {
  const BinaryGeom *g;
  const float *A, *B;
  float *Y;
  MexdBinaryOp op;
} BinaryJob;

/* Both inputs full: elements [i0, i1). */
static void binary_full_range(int64_t i0, int64_t i1, void *ctx)
{
  const BinaryJob *j = ctx;
  const float *A = j->A, *B = j->B;
  float *Y = j->Y;
  switch (j->op) { /* one loop per op, so each vectorizes */
  case MEXD_BINARY_ADD:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = A[i] + B[i];
    break;
  case MEXD_BINARY_SUB:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = A[i] - B[i];
    break;
  case MEXD_BINARY_MUL:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = A[i] * B[i];
    break;
  case MEXD_BINARY_DIV:
    for (int64_t i = i0; i < i1; i++)
      Y[i] = A[i] / B[i];
    break;
  }
}

/* Broadcast: rows [r0, r1) of the padded output, a row being its last dimension. */
static void binary_rows_range(int64_t r0, int64_t r1, void *ctx)
{
  const BinaryJob *j = ctx;
  const BinaryGeom *g = j->g;
  for (int64_t r = r0; r < r1; r++) {
    int64_t i2 = r % g->d[2], i1 = r / g->d[2] % g->d[1], i0 = r / g->d[2] / g->d[1];
    int64_t ba = i0 * g->sa[0] + i1 * g->sa[1] + i2 * g->sa[2];
    int64_t bb = i0 * g->sb[0] + i1 * g->sb[1] + i2 * g->sb[2];
    float *y = j->Y + r * g->d[3];
    for (int64_t i3 = 0; i3 < g->d[3]; i3++)
      y[i3] = binary_apply(j->op, j->A[ba + i3 * g->sa[3]], j->B[bb + i3 * g->sb[3]]);
  }
}

static void binary_cpu(const BinaryGeom *g, MexdTensor *y, MexdTensor *a, MexdTensor *b,
                       MexdBinaryOp op)
{
  gboolean oa, ob, oy;
  /* in place in f32, Y is A or B itself: a full input is read at y's index before the write */
  BinaryJob j = {.g = g, .op = op};
  j.A = mexd_cpu_f32_in(a, &oa);
  j.B = mexd_cpu_f32_in(b, &ob);
  j.Y = mexd_cpu_f32_out(y, FALSE, &oy);
  if (g->a_full && g->b_full)
    mexd_parallel_for(g->n, MEXD_PARALLEL_GRAIN_ELEMENTS, binary_full_range, &j);
  else
    mexd_parallel_for(g->d[0] * g->d[1] * g->d[2],
                      MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / MAX(g->d[3], 1)), binary_rows_range,
                      &j);
  mexd_cpu_f32_done(y, j.Y, oy, TRUE);
  if (oa)
    g_free((float *)j.A);
  if (ob)
    g_free((float *)j.B);
}

MEXD_VK_PUSH_STRUCT(BinaryPush, MEXD_PUSH_BINARY);

static gboolean binary_vulkan(const BinaryGeom *g, MexdTensor *y, MexdTensor *a, MexdTensor *b,
                              MexdBinaryOp op, GError **error)
{
  MexdBackend *be = y->backend;
  BinaryPush pc = {
      .n = (uint32_t)g->n,
      .op = (uint32_t)op,
      .flags = (g->a_full ? 1u : 0u) | (g->b_full ? 2u : 0u),
      .d1 = (uint32_t)g->d[1],
      .d2 = (uint32_t)g->d[2],
      .d3 = (uint32_t)g->d[3],
  };
  for (int p = 0; p < 4; p++) {
    pc.sa[p] = (uint32_t)g->sa[p];
    pc.sb[p] = (uint32_t)g->sb[p];
  }
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_BINARY,
      .variant = y->dtype,
      .bind = {a, b, y},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, ((uint64_t)g->n + BINARY_GROUP - 1) / BINARY_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_binary(MexdTensor *y, MexdTensor *a, MexdTensor *b, MexdBinaryOp op, GError **error)
{
  const char *name = "binary";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(name, "a", a, be, y->dtype, error) ||
      !mexd_op_check_dtype(name, "b", b, be, y->dtype, error))
    return FALSE;
  if ((int)op < MEXD_BINARY_ADD || (int)op > MEXD_BINARY_DIV)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "binary: unknown op %d", (int)op);

  /* the broadcast shape, aligned at the last dimension */
  int nd = MAX(a->ndim, b->ndim);
  int64_t shape[MEXD_MAX_DIMS];
  for (int k = 0; k < nd; k++) {
    int ka = k - (nd - a->ndim), kb = k - (nd - b->ndim);
    int64_t da = ka >= 0 ? a->shape[ka] : 1, db = kb >= 0 ? b->shape[kb] : 1;
    if (da != db && da != 1 && db != 1) {
      g_autofree char *sa = mexd_tensor_describe(a), *sb = mexd_tensor_describe(b);
      return mexd_fail(
          error, MEXD_ERROR_SHAPE,
          "binary: shapes of a %s and b %s do not broadcast (dimension %d: %" G_GINT64_FORMAT
          " vs %" G_GINT64_FORMAT ")",
          sa, sb, k - nd, da, db);
    }
    shape[k] = da == 1 ? db : da;
  }
  if (!mexd_op_check_shape(name, "y", y, nd, shape, error))
    return FALSE;
  if ((!mexd_tensor_same_data(y, a) && !mexd_op_check_no_overlap(name, "y", y, "a", a, error)) ||
      (!mexd_tensor_same_data(y, b) && !mexd_op_check_no_overlap(name, "y", y, "b", b, error)))
    return FALSE;

  BinaryGeom g = {0};
  for (int p = 0; p < 4; p++)
    g.d[p] = p < 4 - nd ? 1 : shape[p - (4 - nd)];
  broadcast_strides(a, g.sa);
  broadcast_strides(b, g.sb);
  g.n = mexd_tensor_numel(y);
  g.a_full = mexd_tensor_numel(a) == g.n;
  g.b_full = mexd_tensor_numel(b) == g.n;

  if (be->kind == MEXD_BACKEND_CPU) {
    binary_cpu(&g, y, a, b, op);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of y", g.n, error))
    return FALSE;
  return binary_vulkan(&g, y, a, b, op, error);
}

gboolean mexd_add(MexdTensor *y, MexdTensor *a, MexdTensor *b, GError **error)
{
  return mexd_binary(y, a, b, MEXD_BINARY_ADD, error);
}

gboolean mexd_mul(MexdTensor *y, MexdTensor *a, MexdTensor *b, GError **error)
{
  return mexd_binary(y, a, b, MEXD_BINARY_MUL, error);
}
