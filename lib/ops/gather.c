/* gather.c: y[i,:] = x[idx[i],:] (mexd_gather_rows, ops.h).
 *
 * x [M,N] and y [K,N] are f32 or f16 (the same), idx is i32 [K].  Rows are copied in their storage
 * type, so the result is exact in both dtypes.
 * cpu: every index is checked first; an index outside [0,M) is a MEXD_ERROR_INDEX naming its
 * position and value, and nothing is written.  Then rows are copied with memcpy (rows spread
 * over the thread pool).
 * vulkan: shaders/gather.comp, one invocation per element of y.  The indices live on the device,
 * so the op cannot check them when it records: a row with a bad index is written as zeros and the
 * shader sets MEXD_VK_STATUS_INDEX_RANGE, which the next mexd_backend_sync() (or tensor read)
 * reports as a MEXD_ERROR_INDEX; the status word is cleared then, so later syncs succeed again. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>

#define GATHER_THREADS 256

typedef struct {
  const int32_t *ix;
  const char *src;
  char *dst;
  size_t row_bytes;
} GatherJob;

static void gather_range(int64_t i0, int64_t i1, void *ctx)
{
  const GatherJob *j = ctx;
  for (int64_t i = i0; i < i1; i++)
    memcpy(j->dst + (size_t)i * j->row_bytes, j->src + (size_t)j->ix[i] * j->row_bytes,
           j->row_bytes);
}

static gboolean gather_cpu(MexdTensor *y, MexdTensor *x, MexdTensor *idx, GError **error)
{
  const int64_t M = x->shape[0], N = x->shape[1], K = idx->shape[0];
  const int32_t *ix = mexd_tensor_host_data(idx);
  for (int64_t i = 0; i < K; i++)
    if (ix[i] < 0 || ix[i] >= M)
      return mexd_fail(error, MEXD_ERROR_INDEX,
                       "gather_rows: idx[%" G_GINT64_FORMAT
                       "] = %d is outside the %" G_GINT64_FORMAT " rows of x",
                       i, (int)ix[i], M);
  GatherJob j = {.ix = ix, .src = mexd_tensor_host_data(x), .dst = mexd_tensor_host_data(y),
                 .row_bytes = (size_t)N * mexd_dtype_size(x->dtype)};
  mexd_parallel_for(K, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS * 4 / MAX(N, 1)), gather_range, &j);
  return TRUE;
}

typedef struct {
  uint32_t off[4];
  uint32_t M, N;
  uint32_t total;
  uint32_t n_groups;
} GatherPush;

static gboolean gather_vulkan(MexdTensor *y, MexdTensor *x, MexdTensor *idx, GError **error)
{
  MexdBackend *be = y->backend;
  const MexdVkLimits *lim = mexd_vk_limits(be);
  uint32_t threads = MIN(GATHER_THREADS, lim->max_group_invocations);
  uint64_t total = (uint64_t)mexd_tensor_numel(y);
  uint64_t n_groups = (total + threads - 1) / threads;
  GatherPush pc = {
      .M = (uint32_t)x->shape[0],
      .N = (uint32_t)x->shape[1],
      .total = (uint32_t)total,
      .n_groups = (uint32_t)n_groups,
  };
  MexdVkDispatch d = {
      .shader = "gather",
      .variant = y->dtype,
      .spec = {threads},
      .n_spec = 1,
      .bind = {x, idx, y},
      .n_bind = 3,
      .bind_status = TRUE,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, n_groups, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

gboolean mexd_gather_rows(MexdTensor *y, MexdTensor *x, MexdTensor *idx, GError **error)
{
  const char *op = "gather_rows";
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error) ||
      !mexd_op_check_dtype(op, "idx", idx, be, MEXD_DTYPE_I32, error))
    return FALSE;
  if (x->ndim != 2) {
    g_autofree char *d = mexd_tensor_describe(x);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "gather_rows: argument x is %s, expected [M,N]", d);
  }
  const int64_t idx_shape[1] = {-1};
  if (!mexd_op_check_shape(op, "idx", idx, 1, idx_shape, error))
    return FALSE;
  const int64_t y_shape[2] = {idx->shape[0], x->shape[1]};
  if (!mexd_op_check_shape(op, "y", y, 2, y_shape, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "x", x, error) ||
      !mexd_op_check_no_overlap(op, "y", y, "idx", idx, error))
    return FALSE;

  if (be->kind == MEXD_BACKEND_CPU)
    return gather_cpu(y, x, idx, error);
  if (!mexd_op_check_u32(op, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(op, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return gather_vulkan(y, x, idx, error);
}
