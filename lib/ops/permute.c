/* permute.c: dimension permutations — mexd_permute, mexd_transpose, mexd_copy (ops.h).
 *
 * permute: y.shape[i] = x.shape[perm[i]], perm a permutation of 0..ndim−1 (no negative entries).
 * transpose: the permutation swapping the last two dimensions (ndim ≥ 2).
 * copy: same shape and dtype; the identity permutation on x flattened to 1-D.
 * dtypes: f32, f16 and also i32 — the data is moved as raw words, never converted, so the copy is
 * bit-exact.
 * cpu: nested loops over y (4-D padded) reading x through permuted strides, or one memcpy when
 * the permutation keeps the element order.
 * vulkan: shaders/permute.comp, one invocation per element of y.
 * y must not overlap x. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>

#define PERMUTE_GROUP 256 /* local_size_x of permute.comp */

typedef struct {
  int64_t d[4]; /* y's shape padded to 4-D with leading 1s */
  int64_t s[4]; /* x's element stride along the source of each padded y dimension */
  int64_t n;
  gboolean identity; /* the element order is unchanged: a plain copy */
} PermuteGeom;

static void permute_geom(const MexdTensor *x, const int *perm, int ndim, PermuteGeom *g)
{
  int64_t xs[MEXD_MAX_DIMS];
  int64_t stride = 1;
  for (int k = ndim - 1; k >= 0; k--) {
    xs[k] = stride;
    stride *= x->shape[k];
  }
  int pad = 4 - ndim;
  /* the element order is unchanged when the dims of size > 1 keep their relative order */
  g->identity = TRUE;
  int last = -1;
  for (int p = 0; p < 4; p++) {
    if (p < pad) {
      g->d[p] = 1;
      g->s[p] = 0;
      continue;
    }
    int src = perm[p - pad];
    g->d[p] = x->shape[src];
    g->s[p] = xs[src];
    if (x->shape[src] > 1) {
      if (src < last)
        g->identity = FALSE;
      last = src;
    }
  }
  g->n = mexd_tensor_numel(x);
}

typedef struct {
  const PermuteGeom *g;
  const char *X;
  char *Y;
  size_t es;
} PermuteJob;

/* Identity: bytes of elements [i0, i1). */
static void permute_copy_range(int64_t i0, int64_t i1, void *ctx)
{
  const PermuteJob *j = ctx;
  memcpy(j->Y + (size_t)i0 * j->es, j->X + (size_t)i0 * j->es, (size_t)(i1 - i0) * j->es);
}

/* Rows [r0, r1) of y (4-D padded), a row being its last dimension. */
static void permute_rows_range(int64_t r0, int64_t r1, void *ctx)
{
  const PermuteJob *j = ctx;
  const PermuteGeom *g = j->g;
  for (int64_t r = r0; r < r1; r++) {
    int64_t i2 = r % g->d[2], i1 = r / g->d[2] % g->d[1], i0 = r / g->d[2] / g->d[1];
    int64_t base = i0 * g->s[0] + i1 * g->s[1] + i2 * g->s[2], i = r * g->d[3];
    if (j->es == 4) {
      const uint32_t *src = (const uint32_t *)j->X + base;
      uint32_t *dst = (uint32_t *)j->Y + i;
      if (g->s[3] == 1)
        memcpy(dst, src, (size_t)g->d[3] * 4);
      else
        for (int64_t i3 = 0; i3 < g->d[3]; i3++)
          dst[i3] = src[i3 * g->s[3]];
    } else {
      const uint16_t *src = (const uint16_t *)j->X + base;
      uint16_t *dst = (uint16_t *)j->Y + i;
      for (int64_t i3 = 0; i3 < g->d[3]; i3++)
        dst[i3] = src[i3 * g->s[3]];
    }
  }
}

/* A transpose of the last two dims of y ([.., R, Cc] from x [.., Cc, R]) in 32×32 tiles: the row
 * loop above reads x with a stride of R elements, a cache miss per element at R = 512 (PPEG's
 * [Np, 512] ↔ [512, Np] and the heads' permutes). */
typedef struct {
  const PermuteJob *pj;
  int64_t R, Cc, tiles_r, tiles_c;
} TransposeJob;

#define TILE 32

static void transpose_tiles_range(int64_t t0, int64_t t1, void *ctx)
{
  const TransposeJob *tj = ctx;
  const PermuteGeom *g = tj->pj->g;
  int64_t per_mat = tj->tiles_r * tj->tiles_c;
  for (int64_t t = t0; t < t1; t++) {
    int64_t mat = t / per_mat, tr = t % per_mat / tj->tiles_c, tc = t % tj->tiles_c;
    int64_t m1 = mat % g->d[1], m0 = mat / g->d[1];
    const uint32_t *src = (const uint32_t *)tj->pj->X + m0 * g->s[0] + m1 * g->s[1];
    uint32_t *dst = (uint32_t *)tj->pj->Y + mat * tj->R * tj->Cc;
    int64_t r1 = MIN(tj->R, (tr + 1) * TILE), c1 = MIN(tj->Cc, (tc + 1) * TILE);
    for (int64_t r = tr * TILE; r < r1; r++)
      for (int64_t c = tc * TILE; c < c1; c++)
        dst[r * tj->Cc + c] = src[r * g->s[2] + c * g->s[3]];
  }
}

static void permute_cpu(const PermuteGeom *g, MexdTensor *y, MexdTensor *x)
{
  PermuteJob j = {.g = g, .X = mexd_tensor_host_data(x), .Y = mexd_tensor_host_data(y),
                  .es = mexd_dtype_size(x->dtype)};
  if (g->identity) {
    mexd_parallel_for(g->n, MEXD_PARALLEL_GRAIN_ELEMENTS * 4, permute_copy_range, &j);
    return;
  }
  /* the last dim of y strided in x and y's rows long: tiles */
  if (j.es == 4 && g->s[3] != 1 && g->d[3] >= TILE && g->d[2] >= TILE) {
    TransposeJob tj = {.pj = &j, .R = g->d[2], .Cc = g->d[3]};
    tj.tiles_r = (tj.R + TILE - 1) / TILE;
    tj.tiles_c = (tj.Cc + TILE - 1) / TILE;
    mexd_parallel_for(g->d[0] * g->d[1] * tj.tiles_r * tj.tiles_c,
                      MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / (TILE * TILE)), transpose_tiles_range,
                      &tj);
    return;
  }
  mexd_parallel_for(g->d[0] * g->d[1] * g->d[2],
                    MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / MAX(g->d[3], 1)), permute_rows_range,
                    &j);
}

MEXD_VK_PUSH_STRUCT(PermutePush, MEXD_PUSH_PERMUTE);

static gboolean permute_vulkan(const PermuteGeom *g, MexdTensor *y, MexdTensor *x, GError **error)
{
  MexdBackend *be = y->backend;
  PermutePush pc = {.n = (uint32_t)g->n};
  if (g->identity) { /* flat: y[i] = x[i] */
    pc.d1 = pc.d2 = 1;
    pc.d3 = (uint32_t)g->n;
    pc.s[3] = 1;
  } else {
    pc.d1 = (uint32_t)g->d[1];
    pc.d2 = (uint32_t)g->d[2];
    pc.d3 = (uint32_t)g->d[3];
    for (int p = 0; p < 4; p++)
      pc.s[p] = (uint32_t)g->s[p];
  }
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_PERMUTE,
      /* 32-bit words for f32 and i32, 16-bit ones for f16 */
      .variant = y->dtype == MEXD_DTYPE_F16 ? MEXD_DTYPE_F16 : MEXD_DTYPE_F32,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, ((uint64_t)g->n + PERMUTE_GROUP - 1) / PERMUTE_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

/* Validates and runs; `op` names the public entry point in messages. */
static gboolean permute_run(const char *op, MexdTensor *y, MexdTensor *x, const int *perm,
                            GError **error)
{
  MexdBackend *be = y->backend;
  int ndim = x->ndim;
  int64_t shape[MEXD_MAX_DIMS];
  for (int i = 0; i < ndim; i++)
    shape[i] = x->shape[perm[i]];
  if (!mexd_op_check_shape(op, "y", y, ndim, shape, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "x", x, error))
    return FALSE;
  PermuteGeom g;
  permute_geom(x, perm, ndim, &g);
  if (be->kind == MEXD_BACKEND_CPU) {
    permute_cpu(&g, y, x);
    return TRUE;
  }
  if (!mexd_op_check_u32(op, "elements of y", g.n, error))
    return FALSE;
  return permute_vulkan(&g, y, x, error);
}

/* y and x present, on one backend, with one dtype. */
static gboolean check_pair(const char *op, MexdTensor *y, MexdTensor *x, GError **error)
{
  if (!mexd_op_check_tensor(op, "y", y, NULL, error))
    return FALSE;
  return mexd_op_check_dtype(op, "x", x, y->backend, y->dtype, error);
}

gboolean mexd_permute(MexdTensor *y, MexdTensor *x, const int *perm, GError **error)
{
  const char *op = "permute";
  if (!check_pair(op, y, x, error))
    return FALSE;
  if (!perm)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "permute: argument perm is NULL");
  gboolean seen[MEXD_MAX_DIMS] = {FALSE};
  for (int i = 0; i < x->ndim; i++) {
    if (perm[i] < 0 || perm[i] >= x->ndim)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "permute: perm[%d] = %d is not a dimension of a %d-D x (0..%d)", i, perm[i],
                       x->ndim, x->ndim - 1);
    if (seen[perm[i]])
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "permute: perm repeats dimension %d (perm[%d]); it must be a permutation",
                       perm[i], i);
    seen[perm[i]] = TRUE;
  }
  return permute_run(op, y, x, perm, error);
}

gboolean mexd_transpose(MexdTensor *y, MexdTensor *x, GError **error)
{
  const char *op = "transpose";
  if (!check_pair(op, y, x, error))
    return FALSE;
  if (x->ndim < 2) {
    g_autofree char *d = mexd_tensor_describe(x);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "transpose: x is %s, needs at least 2 dimensions", d);
  }
  int perm[MEXD_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++)
    perm[i] = i;
  perm[x->ndim - 2] = x->ndim - 1;
  perm[x->ndim - 1] = x->ndim - 2;
  return permute_run(op, y, x, perm, error);
}

gboolean mexd_copy(MexdTensor *y, MexdTensor *x, GError **error)
{
  const char *op = "copy";
  if (!check_pair(op, y, x, error))
    return FALSE;
  int perm[MEXD_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++)
    perm[i] = i;
  return permute_run(op, y, x, perm, error);
}
