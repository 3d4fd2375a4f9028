/* cpu.c: the cpu backend.  Storage is 64-byte-aligned host memory; ops run at once, so sync has
 * nothing to wait for.  The kernels themselves live beside each op in lib/ops/.
 *
 * Freed blocks of 256 KiB and more are kept (up to CACHE_BYTES in all) and handed out again for
 * requests of nearly their size: a forward pass allocates the same big intermediates over and
 * over, and fresh memory from the kernel costs a page fault per 4 KiB on first touch (measured:
 * most of the time of a 100,000-instance bag went to faults and zeroing before this cache).
 * CACHE_BYTES is 1 GiB (measured 2026-12-03, adapter #1 at N = 100,000: 6.2 s with 1 GiB, 7.1 s
 * with 512 MiB; peak resident memory 2,544 and 2,341 MiB; a block larger than the cache is
 * freed without evicting the others, which a forward pass will ask for again).
 * Blocks of HUGE_MIN and more are 2 MiB-aligned and asked for as transparent huge pages: the
 * blocks of a 100,000-instance bag that outgrow the cache (A1 is 800 MiB) then fault once per
 * 2 MiB instead of once per 4 KiB (measured: 3 million faults per forward before). */
#include "backend/backend-private.h"
#include "backend/cpu.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CACHE_MIN   ((size_t)256 << 10)
#define CACHE_BYTES ((size_t)1024 << 20)
#define HUGE_MIN    ((size_t)8 << 20)
#define HUGE_ALIGN  ((size_t)2 << 20)

typedef struct {
  void *p;
  size_t size;
} CachedBlock;

typedef struct {
  MexdBackend base;
  GMutex lock;
  GArray *cache; /* CachedBlock, most recently freed last */
  size_t cached;
} CpuBackend;

static void cpu_destroy(MexdBackend *be)
{
  CpuBackend *cb = (CpuBackend *)be;
  for (guint i = 0; i < cb->cache->len; i++)
    free(g_array_index(cb->cache, CachedBlock, i).p);
  g_array_unref(cb->cache);
  g_mutex_clear(&cb->lock);
  g_free(cb);
}

/* A cached block of `size` to `size`·5/4 bytes (the smallest), or NULL; *got = its size. */
static void *cache_take(CpuBackend *cb, size_t size, size_t *got)
{
  if (size < CACHE_MIN)
    return NULL;
  void *p = NULL;
  g_mutex_lock(&cb->lock);
  guint best = G_MAXUINT;
  for (guint i = 0; i < cb->cache->len; i++) {
    CachedBlock *b = &g_array_index(cb->cache, CachedBlock, i);
    if (b->size >= size && b->size <= size + size / 4 &&
        (best == G_MAXUINT || b->size < g_array_index(cb->cache, CachedBlock, best).size))
      best = i;
  }
  if (best != G_MAXUINT) {
    CachedBlock b = g_array_index(cb->cache, CachedBlock, best);
    g_array_remove_index(cb->cache, best);
    cb->cached -= b.size;
    p = b.p;
    *got = b.size;
  }
  g_mutex_unlock(&cb->lock);
  return p;
}

static MexdStorage *cpu_storage_new(MexdBackend *be, size_t size, GError **error)
{
  void *p = NULL;
  size_t padded = (size + 63) & ~(size_t)63;
  if (!padded)
    padded = 64;
  size_t got = padded;
  p = cache_take((CpuBackend *)be, padded, &got);
  if (!p) {
    gboolean huge = padded >= HUGE_MIN;
    if (huge) /* whole huge pages: the tail of the last one would be wasted anyway */
      got = padded = (padded + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
    if (posix_memalign(&p, huge ? HUGE_ALIGN : 64, padded) != 0 || !p)
      return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                            "cannot allocate %zu bytes of host memory", size);
#ifdef MADV_HUGEPAGE
    if (huge)
      madvise(p, padded, MADV_HUGEPAGE); /* a hint: without THP it fails, harmlessly */
#endif
  }
  MexdStorage *s = g_new0(MexdStorage, 1);
  s->ref_count = 1;
  s->backend = be;
  s->size = size;
  s->host = p;
  s->priv = GSIZE_TO_POINTER(got); /* the block's own size, for the cache */
  return s;
}

static void cpu_storage_free(MexdBackend *be, MexdStorage *s)
{
  CpuBackend *cb = (CpuBackend *)be;
  size_t padded = GPOINTER_TO_SIZE(s->priv);
  gboolean kept = FALSE;
  if (padded >= CACHE_MIN && padded <= CACHE_BYTES) { /* a block larger than the cache evicts nothing */
    g_mutex_lock(&cb->lock);
    /* oldest blocks make room for newer ones */
    while (cb->cached + padded > CACHE_BYTES && cb->cache->len > 0) {
      CachedBlock old = g_array_index(cb->cache, CachedBlock, 0);
      g_array_remove_index(cb->cache, 0);
      cb->cached -= old.size;
      free(old.p);
    }
    if (cb->cached + padded <= CACHE_BYTES) {
      CachedBlock b = {s->host, padded};
      g_array_append_val(cb->cache, b);
      cb->cached += padded;
      kept = TRUE;
    }
    g_mutex_unlock(&cb->lock);
  }
  if (!kept)
    free(s->host);
  g_free(s);
}

static gboolean cpu_write(MexdBackend *be, MexdStorage *s, size_t off, const void *src, size_t n,
                          GError **error)
{
  (void)be;
  (void)error;
  memcpy((char *)s->host + off, src, n);
  return TRUE;
}

static gboolean cpu_read(MexdBackend *be, MexdStorage *s, size_t off, void *dst, size_t n,
                         GError **error)
{
  (void)be;
  (void)error;
  memcpy(dst, (const char *)s->host + off, n);
  return TRUE;
}

static gboolean cpu_fill_zero(MexdBackend *be, MexdStorage *s, size_t off, size_t n, GError **error)
{
  (void)be;
  (void)error;
  memset((char *)s->host + off, 0, n);
  return TRUE;
}

static gboolean cpu_sync(MexdBackend *be, GError **error)
{
  (void)be;
  (void)error;
  return TRUE;
}

static const MexdBackendVTable cpu_vtable = {
    .destroy = cpu_destroy,
    .storage_new = cpu_storage_new,
    .storage_free = cpu_storage_free,
    .write = cpu_write,
    .read = cpu_read,
    .fill_zero = cpu_fill_zero,
    .sync = cpu_sync,
};

MexdBackend *mexd_cpu_backend_new(GError **error)
{
  (void)error;
  CpuBackend *cb = g_new0(CpuBackend, 1);
  g_mutex_init(&cb->lock);
  cb->cache = g_array_new(FALSE, FALSE, sizeof(CachedBlock));
  MexdBackend *be = &cb->base;
  be->vt = &cpu_vtable;
  be->kind = MEXD_BACKEND_CPU;
  be->ref_count = 1;
#ifdef MEXD_HAVE_CBLAS
  be->name = g_strdup("cpu (OpenBLAS)");
#else
  be->name = g_strdup("cpu (plain C)");
#endif
  be->has_f16 = TRUE;
  be->max_tensor_bytes = (size_t)1 << 40;
  /* fixes the thread count now, before the first BLAS call, so OpenBLAS uses it too */
  mexd_parallel_threads();
  return be;
}

/* ---- helpers for the cpu kernels ---- */

float *mexd_cpu_f32_in(const MexdTensor *t, gboolean *owned)
{
  if (t->dtype == MEXD_DTYPE_F32) {
    *owned = FALSE;
    return (float *)mexd_tensor_host_data(t);
  }
  int64_t n = mexd_tensor_numel(t);
  float *f = g_new(float, n);
  mexd_f16_to_f32_n((const uint16_t *)mexd_tensor_host_data(t), f, (size_t)n);
  *owned = TRUE;
  return f;
}

float *mexd_cpu_f32_out(MexdTensor *t, gboolean load, gboolean *owned)
{
  if (t->dtype == MEXD_DTYPE_F32) {
    *owned = FALSE;
    return (float *)mexd_tensor_host_data(t);
  }
  *owned = TRUE;
  int64_t n = mexd_tensor_numel(t);
  if (!load)
    return g_new0(float, n);
  float *f = g_new(float, n);
  mexd_f16_to_f32_n((const uint16_t *)mexd_tensor_host_data(t), f, (size_t)n);
  return f;
}

void mexd_cpu_f32_done(MexdTensor *t, float *f, gboolean owned, gboolean store)
{
  if (!owned)
    return;
  if (store)
    mexd_f32_to_f16_n(f, (uint16_t *)mexd_tensor_host_data(t), (size_t)mexd_tensor_numel(t));
  g_free(f);
}
