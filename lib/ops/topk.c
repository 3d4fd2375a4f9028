/* topk.c: the k largest values of a vector, in descending order (mexd_topk, ops.h).
 *
 * The order: larger values first; equal values (−0 equals +0) by ascending index; NaN after
 * everything (−inf included), NaNs by ascending index.  Both kernels give each element a 32-bit
 * order key computed from its bits — NaN → 0, ±0 → the key of +0, else the sign-flip map that
 * makes keys increase with the value — and sort (key descending, index ascending), which is a
 * strict total order, so the result is exact and the same on every backend.
 * cpu: f16 inputs are widened to f32 (exact); a stable LSD radix sort (8-bit digits) of the
 * indices by key, over all n elements, then the first k.  O(n) whatever k is.
 * vulkan: shaders/topk.comp, a bitonic sort of (key, index) pairs over the next power of two
 * (at least one shared-memory block), in a temporary i32 tensor, then a pass writing the first k.
 * The sort is a sequence of dispatches recorded into the open command buffer (the backend puts a
 * barrier between dispatches): one shared-memory pass sorting each block, then for every larger
 * sequence size the global compare-exchange steps of distance ≥ the block and one shared-memory
 * pass for the smaller distances.  Blocks are 2048 pairs for 256 invocations (less where the
 * device has less shared memory); for n = 100,000, P = 2^17 and that is 1 + 21 + 6 + 1 = 29
 * dispatches. */
#include "backend/cpu.h"
#include "backend/vulkan.h"
#include "ops/ops-private.h"

#include <string.h>

#define TOPK_THREADS 256
#define TOPK_BLOCK   2048

/* Larger key = ranks earlier; see the file comment. */
static inline uint32_t order_key(float v)
{
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  uint32_t mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u)
    return 0; /* NaN */
  if (mag == 0)
    b = 0; /* −0 → +0 */
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* Sorts the n (key, index) pairs in key[]/idx[] by descending key, stably, so pairs with equal
 * keys keep their order (ascending index when idx holds 0..n−1).  LSD radix sort of ~key, one
 * byte at a time, ping-ponging with key2/idx2; a pass whose digit is the same for every pair
 * changes nothing and is skipped.  Returns the array of indices that holds the result (idx or
 * idx2). */
static int32_t *radix_sort_desc(uint32_t *key, int32_t *idx, uint32_t *key2, int32_t *idx2,
                                int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    key[i] = ~key[i];
  for (int shift = 0; shift < 32; shift += 8) {
    int64_t count[256] = {0};
    for (int64_t i = 0; i < n; i++)
      count[(key[i] >> shift) & 0xff]++;
    if (count[(key[0] >> shift) & 0xff] == n)
      continue;
    int64_t pos = 0;
    for (int d = 0; d < 256; d++) {
      int64_t c = count[d];
      count[d] = pos;
      pos += c;
    }
    for (int64_t i = 0; i < n; i++) {
      int64_t p = count[(key[i] >> shift) & 0xff]++;
      key2[p] = key[i];
      idx2[p] = idx[i];
    }
    uint32_t *tk = key;
    key = key2;
    key2 = tk;
    int32_t *ti = idx;
    idx = idx2;
    idx2 = ti;
  }
  return idx;
}

static void topk_cpu(MexdTensor *values, MexdTensor *indices, MexdTensor *x)
{
  const int64_t n = x->shape[0], k = indices->shape[0];
  gboolean owned;
  float *xf = mexd_cpu_f32_in(x, &owned);
  uint32_t *key = g_new(uint32_t, 2 * n);
  int32_t *idx = g_new(int32_t, 2 * n);
  for (int64_t i = 0; i < n; i++) {
    key[i] = order_key(xf[i]);
    idx[i] = (int32_t)i;
  }
  const int32_t *sorted = radix_sort_desc(key, idx, key + n, idx + n, n);
  int32_t *out = mexd_tensor_host_data(indices);
  memcpy(out, sorted, sizeof(int32_t) * (size_t)k);
  if (values) {
    /* copied in the storage type: exact in f16 too */
    const size_t es = mexd_dtype_size(x->dtype);
    const char *src = mexd_tensor_host_data(x);
    char *dst = mexd_tensor_host_data(values);
    for (int64_t i = 0; i < k; i++)
      memcpy(dst + (size_t)i * es, src + (size_t)out[i] * es, es);
  }
  g_free(key);
  g_free(idx);
  if (owned)
    g_free(xf);
}

enum {
  MODE_LOCAL_SORT = 0,
  MODE_GLOBAL = 1,
  MODE_LOCAL_MERGE = 2,
  MODE_OUTPUT = 3,
};

MEXD_VK_PUSH_STRUCT(TopkPush, MEXD_PUSH_TOPK);

static gboolean topk_pass(MexdBackend *be, MexdVkDispatch *d, TopkPush *pc, uint32_t mode,
                          uint64_t n_groups, GError **error)
{
  pc->mode = mode;
  pc->n_groups = (uint32_t)n_groups;
  if (!mexd_vk_grid(be, n_groups, d->groups, error))
    return FALSE;
  return mexd_vk_dispatch(be, d, error);
}

static gboolean topk_vulkan(MexdTensor *values, MexdTensor *indices, MexdTensor *x, GError **error)
{
  const char *op = "topk";
  MexdBackend *be = indices->backend;
  const MexdVkLimits *lim = mexd_vk_limits(be);
  /* powers of two that the device takes: threads per workgroup, and pairs per shared-memory
   * block (2 uints each) — larger blocks leave fewer global steps */
  uint32_t threads = TOPK_THREADS, block = TOPK_BLOCK;
  while (threads > 32 && threads > lim->max_group_invocations)
    threads >>= 1;
  while (block > 2 * threads && block * 2 * sizeof(uint32_t) > lim->max_shared_memory)
    block >>= 1;
  const uint64_t n = (uint64_t)x->shape[0], k = (uint64_t)indices->shape[0];
  uint64_t P = block;
  while (P < n)
    P <<= 1;
  if (!mexd_op_check_u32(op, "2 * the padded length", (int64_t)(2 * P), error))
    return FALSE;
  g_autoptr(MexdTensor) tmp = mexd_tensor_new_1d(be, MEXD_DTYPE_I32, (int64_t)(2 * P), error);
  if (!tmp) {
    g_prefix_error(error, "topk: sort buffer for %" G_GUINT64_FORMAT " elements: ", P);
    return FALSE;
  }
  TopkPush pc = {
      .n = (uint32_t)n,
      .P = (uint32_t)P,
      .k = (uint32_t)k,
      .has_values = values != NULL,
  };
  MexdVkDispatch d = {
      .shader = MEXD_SHADER_TOPK,
      .variant = x->dtype,
      .spec = {threads, block},
      .n_spec = 2,
      .bind = {x, tmp, indices, values},
      .n_bind = 4,
      .push = &pc,
      .push_size = sizeof pc,
  };
  const uint64_t blocks = P / block, pair_groups = P / 2 / threads;
  if (!topk_pass(be, &d, &pc, MODE_LOCAL_SORT, blocks, error))
    return FALSE;
  for (uint64_t size = 2 * block; size <= P; size <<= 1) {
    pc.size = (uint32_t)size;
    for (uint64_t stride = size / 2; stride >= block; stride >>= 1) {
      pc.stride = (uint32_t)stride;
      if (!topk_pass(be, &d, &pc, MODE_GLOBAL, pair_groups, error))
        return FALSE;
    }
    if (!topk_pass(be, &d, &pc, MODE_LOCAL_MERGE, blocks, error))
      return FALSE;
  }
  return topk_pass(be, &d, &pc, MODE_OUTPUT, (k + threads - 1) / threads, error);
}

gboolean mexd_topk(MexdTensor *values, MexdTensor *indices, MexdTensor *x, GError **error)
{
  const char *op = "topk";
  /* the op runs on the backend of indices, the one required output */
  if (!mexd_op_check_dtype(op, "indices", indices, NULL, MEXD_DTYPE_I32, error))
    return FALSE;
  MexdBackend *be = indices->backend;
  if (!mexd_op_check_tensor(op, "x", x, be, error) || !mexd_op_check_float(op, "x", x, error) ||
      (values && !mexd_op_check_dtype(op, "values", values, be, x->dtype, error)))
    return FALSE;
  const int64_t any[1] = {-1};
  if (!mexd_op_check_shape(op, "x", x, 1, any, error) ||
      !mexd_op_check_shape(op, "indices", indices, 1, any, error))
    return FALSE;
  const int64_t n = x->shape[0], k = indices->shape[0];
  if (k > n)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "topk: k = %" G_GINT64_FORMAT
                     " (the length of indices) exceeds n = %" G_GINT64_FORMAT " (the length of x)",
                     k, n);
  if (n > G_MAXINT32)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "topk: x has %" G_GINT64_FORMAT " elements; i32 indices reach 2^31 - 1", n);
  const int64_t kshape[1] = {k};
  if ((values && !mexd_op_check_shape(op, "values", values, 1, kshape, error)) ||
      !mexd_op_check_no_overlap(op, "indices", indices, "x", x, error) ||
      !mexd_op_check_no_overlap(op, "values", values, "x", x, error) ||
      !mexd_op_check_no_overlap(op, "values", values, "indices", indices, error))
    return FALSE;

  if (be->kind == MEXD_BACKEND_CPU) {
    topk_cpu(values, indices, x);
    return TRUE;
  }
  return topk_vulkan(values, indices, x, error);
}
