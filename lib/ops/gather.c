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
 * reports as a MEXD_ERROR_INDEX; the status word is cleared then, so later syncs succeed again.
 *
 * Its backward, mexd_scatter_add_rows (grad.h): cpu sums each destination row's sources in index
 * order in double (a stable counting sort); vulkan: shaders/scatter_add.comp, each destination
 * row scanning the index list (no float atomics), cut into dispatches of
 * SCATTER_CPU_DEVICE_INDICES indices on a CPU device (a f32 scratch carries the running sums);
 * a bad index as for gather. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>

/* scatter_add on a CPU device: indices per dispatch (each invocation loops about that often) */
#define SCATTER_CPU_DEVICE_INDICES 16384

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

MEXD_VK_PUSH_STRUCT(GatherPush, MEXD_PUSH_GATHER);

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
      .shader = MEXD_SHADER_GATHER,
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

/* ---- backward: scatter_add_rows (grad.h) ---- */

static gboolean scatter_add_cpu(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean acc,
                                GError **error)
{
  const int64_t M = y->shape[0], N = y->shape[1], K = idx->shape[0];
  const int32_t *ix = mexd_tensor_host_data(idx);
  for (int64_t i = 0; i < K; i++)
    if (ix[i] < 0 || ix[i] >= M)
      return mexd_fail(error, MEXD_ERROR_INDEX,
                       "scatter_add_rows: idx[%" G_GINT64_FORMAT
                       "] = %d is outside the %" G_GINT64_FORMAT " rows of y",
                       i, (int)ix[i], M);
  /* the sources of each destination row in index order (a stable counting sort), so that each
   * row is summed in one double accumulator without an M×N double buffer */
  int64_t *start = g_new0(int64_t, M + 1), *order = g_new(int64_t, MAX(K, 1));
  for (int64_t i = 0; i < K; i++)
    start[ix[i] + 1]++;
  for (int64_t m = 0; m < M; m++)
    start[m + 1] += start[m];
  int64_t *fill = g_memdup2(start, sizeof(int64_t) * (size_t)M);
  for (int64_t i = 0; i < K; i++)
    order[fill[ix[i]]++] = i;
  gboolean ox, oy;
  const float *X = mexd_cpu_f32_in(x, &ox);
  float *Y = mexd_cpu_f32_out(y, acc, &oy);
  double *s = g_new(double, N);
  for (int64_t m = 0; m < M; m++) {
    for (int64_t j = 0; j < N; j++)
      s[j] = 0;
    for (int64_t q = start[m]; q < start[m + 1]; q++) {
      const float *xr = X + order[q] * N;
      for (int64_t j = 0; j < N; j++)
        s[j] += xr[j];
    }
    for (int64_t j = 0; j < N; j++)
      Y[m * N + j] = mexd_op_acc_store(Y[m * N + j], s[j], acc);
  }
  mexd_cpu_f32_done(y, Y, oy, TRUE);
  mexd_op_free_in(X, ox);
  g_free(s);
  g_free(start);
  g_free(fill);
  g_free(order);
  return TRUE;
}

MEXD_VK_PUSH_STRUCT(ScatterPush, MEXD_PUSH_SCATTER_ADD);

static gboolean scatter_add_vulkan(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean acc,
                                   GError **error)
{
  const char *name = "scatter_add_rows";
  MexdBackend *be = y->backend;
  const int64_t M = y->shape[0], N = y->shape[1], K = idx->shape[0];
  const int64_t n_colblk = (N + 255) / 256;
  const int64_t step = mexd_vk_limits(be)->is_gpu ? K : SCATTER_CPU_DEVICE_INDICES;
  if (!mexd_op_check_u32(name, "workgroups", M * n_colblk, error))
    return FALSE;
  g_autoptr(MexdTensor) run = NULL; /* running sums between dispatches */
  if (K > step && !(run = mexd_op_scratch_new(name, be, M * N, error)))
    return FALSE;
  ScatterPush pc = {.M = (uint32_t)M, .N = (uint32_t)N, .n_colblk = (uint32_t)n_colblk};
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_SCATTER_ADD,
      .variant = y->dtype,
      .bind = {x, idx, y, run},
      .n_bind = 4,
      .bind_status = TRUE,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)(M * n_colblk), d.groups, error))
    return FALSE;
  for (int64_t k0 = 0; k0 < K; k0 += step) {
    int64_t k1 = MIN(K, k0 + step);
    pc.k0 = (uint32_t)k0;
    pc.k1 = (uint32_t)k1;
    pc.flags = (k0 == 0 ? 1u : 0u) | (k1 == K ? 2u : 0u) | (acc ? 4u : 0u);
    if (!mexd_vk_dispatch(be, &d, error))
      return FALSE;
  }
  return TRUE;
}

gboolean mexd_scatter_add_rows(MexdTensor *y, MexdTensor *x, MexdTensor *idx, gboolean accumulate,
                               GError **error)
{
  const char *name = "scatter_add_rows";
  if (!mexd_op_check_float(name, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(name, "x", x, be, y->dtype, error) ||
      !mexd_op_check_dtype(name, "idx", idx, be, MEXD_DTYPE_I32, error))
    return FALSE;
  if (y->ndim != 2) {
    g_autofree char *dsc = mexd_tensor_describe(y);
    return mexd_fail(error, MEXD_ERROR_SHAPE, "scatter_add_rows: argument y is %s, expected [M,N]",
                     dsc);
  }
  const int64_t idx_shape[1] = {-1};
  if (!mexd_op_check_shape(name, "idx", idx, 1, idx_shape, error))
    return FALSE;
  const int64_t x_shape[2] = {idx->shape[0], y->shape[1]};
  if (!mexd_op_check_shape(name, "x", x, 2, x_shape, error) ||
      !mexd_op_check_no_overlap(name, "y", y, "x", x, error) ||
      !mexd_op_check_no_overlap(name, "y", y, "idx", idx, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU)
    return scatter_add_cpu(y, x, idx, accumulate, error);
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(name, "elements of y", mexd_tensor_numel(y), error))
    return FALSE;
  return scatter_add_vulkan(y, x, idx, accumulate, error);
}
