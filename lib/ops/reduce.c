/* reduce.c: column means over rows — mexd_mean_rows and mexd_segment_mean (ops.h) — and column
 * sums, mexd_sum_rows (grad.h: the gradient of a bias, or of any operand broadcast over rows).
 *
 * x is read as [M,N]: N its last dimension, M every leading dimension multiplied.
 * mean_rows: y [N] is the mean of all M rows.  segment_mean: y [ceil(M/seg_len),N], row s the mean
 * of rows s·seg_len … min((s+1)·seg_len, M)−1 (a seg_len beyond M gives one segment of all rows).
 *
 * cpu: sums in double per column, f16 tensors widened first; (segment, 64-column block) items
 * spread over the thread pool.
 * vulkan (sums in f32):
 * - segments of at most SHORT_SEG rows (segment_mean only): shaders/segment_mean.comp, one
 *   invocation per output element looping over its segment's rows;
 * - longer ones, and mean_rows (one segment of M rows): shaders/mean_rows.comp.  Each segment is
 *   cut into chunks of ≥ 64 rows (at most MAX_CHUNKS per segment); pass 1 sums every (chunk,
 *   64-column block) in its own workgroup into an f32 scratch tensor, pass 2 adds the chunk sums
 *   of each output and divides.  A segment that fits in one chunk is done in pass 1 alone.
 *   So 100,000 × 512 runs as ~4,000 workgroups of 256 invocations, not 512 serial loops.
 * sum_rows: cpu in double; vulkan: shaders/sum_rows.comp, chunks of rows as mean_rows.comp
 *   (MIN_CHUNK, MAX_CHUNKS), the chunk sums added in order by a second pass.
 * y must not overlap x. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#define SHORT_SEG       64  /* segments up to this many rows go to segment_mean.comp */
#define MIN_CHUNK       64  /* rows per chunk in mean_rows.comp and sum_rows.comp, at least */
#define MAX_CHUNKS      512 /* chunks per segment in mean_rows.comp and sum_rows.comp, at most */
#define COLS_PER_GROUP  64  /* mean_rows.comp: local_size_x (columns) */
#define ELEMS_PER_GROUP 256 /* invocations per workgroup of both shaders */

typedef struct {
  const float *X;
  float *Y;
  int64_t M, N, seg_len, n_cb;
} SegMeanJob;

#define MEAN_COLS 64 /* columns per work item */

/* Work items [i0, i1): item = (segment, block of MEAN_COLS columns), summed row by row in double
 * exactly as before, so the split over threads never changes a bit. */
static void segment_mean_range(int64_t i0, int64_t i1, void *ctx)
{
  const SegMeanJob *j = ctx;
  double acc[MEAN_COLS];
  for (int64_t it = i0; it < i1; it++) {
    int64_t s = it / j->n_cb, c0 = it % j->n_cb * MEAN_COLS, c1 = MIN(j->N, c0 + MEAN_COLS);
    int64_t r0 = s * j->seg_len, r1 = MIN(r0 + j->seg_len, j->M);
    for (int64_t c = c0; c < c1; c++)
      acc[c - c0] = 0;
    for (int64_t r = r0; r < r1; r++) {
      const float *row = j->X + r * j->N;
      for (int64_t c = c0; c < c1; c++)
        acc[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; c++)
      j->Y[s * j->N + c] = (float)(acc[c - c0] / (double)(r1 - r0));
  }
}

static void segment_mean_cpu(MexdTensor *y, MexdTensor *x, int64_t M, int64_t N, int64_t seg_len)
{
  gboolean ox, oy;
  SegMeanJob j = {.M = M, .N = N, .seg_len = seg_len, .n_cb = (N + MEAN_COLS - 1) / MEAN_COLS};
  j.X = mexd_cpu_f32_in(x, &ox);
  j.Y = mexd_cpu_f32_out(y, FALSE, &oy);
  int64_t n_seg = (M + seg_len - 1) / seg_len;
  int64_t per_item = MIN(seg_len, M) * MIN(N, MEAN_COLS);
  mexd_parallel_for(n_seg * j.n_cb, MAX(1, MEXD_PARALLEL_GRAIN_ELEMENTS / MAX(per_item, 1)),
                    segment_mean_range, &j);
  mexd_cpu_f32_done(y, j.Y, oy, TRUE);
  if (ox)
    g_free((float *)j.X);
}

MEXD_VK_PUSH_STRUCT(MeanRowsPush, MEXD_PUSH_MEAN_ROWS);

MEXD_VK_PUSH_STRUCT(SegmentMeanPush, MEXD_PUSH_SEGMENT_MEAN);

/* shaders/mean_rows.comp: pass 1 over (chunk, column block) workgroups, pass 2 when a segment
 * has more than one chunk. */
static gboolean mean_rows_vulkan(const char *op, MexdTensor *y, MexdTensor *x, int64_t M, int64_t N,
                                 int64_t seg_len, int64_t n_seg, GError **error)
{
  MexdBackend *be = y->backend;
  int64_t chunk = MAX(MIN_CHUNK, (seg_len + MAX_CHUNKS - 1) / MAX_CHUNKS);
  int64_t kpc = (seg_len + chunk - 1) / chunk;
  int64_t n_colblk = (N + COLS_PER_GROUP - 1) / COLS_PER_GROUP;
  int64_t n_groups = n_colblk * n_seg * kpc;
  if (!mexd_op_check_u32(op, "workgroups", n_groups, error))
    return FALSE;
  g_autoptr(MexdTensor) part = NULL;
  if (kpc > 1) {
    int64_t shape[2] = {n_seg * kpc, N};
    if (!mexd_op_check_u32(op, "partial sums", shape[0] * N, error))
      return FALSE;
    part = mexd_tensor_new(be, MEXD_DTYPE_F32, 2, shape, error);
    if (!part)
      return FALSE;
  }
  MeanRowsPush pc = {
      .mode = 0,
      .M = (uint32_t)M,
      .N = (uint32_t)N,
      .seg_len = (uint32_t)seg_len,
      .n_seg = (uint32_t)n_seg,
      .chunk = (uint32_t)chunk,
      .kpc = (uint32_t)kpc,
      .n_colblk = (uint32_t)n_colblk,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_MEAN_ROWS,
      .variant = y->dtype,
      .bind = {x, y, part},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, (uint64_t)n_groups, d.groups, error) || !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  if (kpc == 1)
    return TRUE;
  pc.mode = 1;
  uint64_t n_out = (uint64_t)(n_seg * N);
  if (!mexd_vk_grid(be, (n_out + ELEMS_PER_GROUP - 1) / ELEMS_PER_GROUP, d.groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error); /* part stays alive until the work has run */
}

/* shaders/segment_mean.comp: one invocation per output element. */
static gboolean segment_mean_short_vulkan(MexdTensor *y, MexdTensor *x, int64_t M, int64_t N,
                                          int64_t seg_len, int64_t n_seg, GError **error)
{
  MexdBackend *be = y->backend;
  SegmentMeanPush pc = {
      .M = (uint32_t)M,
      .N = (uint32_t)N,
      .seg_len = (uint32_t)seg_len,
      .n_out = (uint32_t)(n_seg * N),
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_SEGMENT_MEAN,
      .variant = y->dtype,
      .bind = {x, y},
      .n_bind = 2,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_vk_grid(be, ((uint64_t)pc.n_out + ELEMS_PER_GROUP - 1) / ELEMS_PER_GROUP, d.groups,
                    error))
    return FALSE;
  return mexd_vk_dispatch(be, &d, error);
}

/* Both ops: one_row (mean_rows) takes all rows as one segment and y as [N]. */
static gboolean segment_mean_run(const char *op, MexdTensor *y, MexdTensor *x, int64_t seg_len,
                                 gboolean one_row, GError **error)
{
  if (!mexd_op_check_float(op, "y", y, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (!mexd_op_check_dtype(op, "x", x, be, y->dtype, error))
    return FALSE;
  if (!one_row && seg_len <= 0)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: seg_len is %" G_GINT64_FORMAT ", must be positive", op, seg_len);
  int64_t M = mexd_tensor_rows_count(x), N = mexd_tensor_row_len(x);
  seg_len = one_row ? M : MIN(seg_len, M);
  int64_t n_seg = (M + seg_len - 1) / seg_len;
  if (one_row) {
    if (!mexd_op_check_shape(op, "y", y, 1, &N, error))
      return FALSE;
  } else {
    int64_t shape[2] = {n_seg, N};
    if (!mexd_op_check_shape(op, "y", y, 2, shape, error))
      return FALSE;
  }
  if (!mexd_op_check_no_overlap(op, "y", y, "x", x, error))
    return FALSE;
  if (be->kind == MEXD_BACKEND_CPU) {
    segment_mean_cpu(y, x, M, N, seg_len);
    return TRUE;
  }
  /* the shaders also form row + seg_len in uint32 */
  if (!mexd_op_check_u32(op, "elements of x", mexd_tensor_numel(x), error) ||
      !mexd_op_check_u32(op, "rows of x plus seg_len", M + seg_len, error))
    return FALSE;
  if (seg_len <= SHORT_SEG && !one_row)
    return segment_mean_short_vulkan(y, x, M, N, seg_len, n_seg, error);
  return mean_rows_vulkan(op, y, x, M, N, seg_len, n_seg, error);
}

gboolean mexd_mean_rows(MexdTensor *y, MexdTensor *x, GError **error)
{
  return segment_mean_run("mean_rows", y, x, 0, TRUE, error);
}

gboolean mexd_segment_mean(MexdTensor *y, MexdTensor *x, int64_t seg_len, GError **error)
{
  return segment_mean_run("segment_mean", y, x, seg_len, FALSE, error);
}

/* ---- sum_rows (grad.h) ---- */

MEXD_VK_PUSH_STRUCT(SumRowsPush, MEXD_PUSH_SUM_ROWS);

gboolean mexd_sum_rows(MexdTensor *y, MexdTensor *x, gboolean accumulate, GError **error)
{
  const char *name = "sum_rows";
  if (!mexd_op_check_float(name, "y", y, error) ||
      !mexd_op_check_dtype(name, "x", x, y->backend, y->dtype, error))
    return FALSE;
  int64_t M = mexd_tensor_rows_count(x), N = mexd_tensor_row_len(x);
  if (!mexd_op_check_shape(name, "y", y, 1, &N, error) ||
      !mexd_op_check_no_overlap(name, "y", y, "x", x, error))
    return FALSE;
  MexdBackend *be = y->backend;
  if (be->kind == MEXD_BACKEND_CPU) {
    gboolean ox, oy;
    const float *X = mexd_cpu_f32_in(x, &ox);
    float *Y = mexd_cpu_f32_out(y, accumulate, &oy);
    double *s = g_new0(double, N);
    for (int64_t r = 0; r < M; r++)
      for (int64_t j = 0; j < N; j++)
        s[j] += X[r * N + j];
    for (int64_t j = 0; j < N; j++)
      Y[j] = mexd_op_acc_store(Y[j], s[j], accumulate);
    g_free(s);
    mexd_cpu_f32_done(y, Y, oy, TRUE);
    mexd_op_free_in(X, ox);
    return TRUE;
  }
  if (!mexd_op_check_u32(name, "elements of x", mexd_tensor_numel(x), error))
    return FALSE;
  int64_t chunk = MAX(MIN_CHUNK, (M + MAX_CHUNKS - 1) / MAX_CHUNKS);
  int64_t kpc = (M + chunk - 1) / chunk, n_colblk = (N + 63) / 64;
  g_autoptr(MexdTensor) part = NULL;
  if (kpc > 1 && !(part = mexd_op_scratch_new(name, be, kpc * N, error)))
    return FALSE;
  SumRowsPush pc = {
      .M = (uint32_t)M,
      .N = (uint32_t)N,
      .chunk = (uint32_t)chunk,
      .kpc = (uint32_t)kpc,
      .n_colblk = (uint32_t)n_colblk,
      .acc = accumulate != 0,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_SUM_ROWS,
      .variant = y->dtype,
      .bind = {x, y, part},
      .n_bind = 3,
      .push = &pc,
      .push_size = sizeof pc,
  };
  if (!mexd_op_check_u32(name, "workgroups", n_colblk * kpc, error) ||
      !mexd_vk_grid(be, (uint64_t)(n_colblk * kpc), d.groups, error) ||
      !mexd_vk_dispatch(be, &d, error))
    return FALSE;
  if (kpc == 1) /* one chunk: the sums went to y directly */
    return TRUE;
  pc.mode = 1;
  return mexd_op_elem_grid(be, N, d.groups, error) && mexd_vk_dispatch(be, &d, error);
}
