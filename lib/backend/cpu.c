/* cpu.c: the cpu backend.  Storage is 64-byte-aligned host memory; ops run at once, so sync has
 * nothing to wait for.  The kernels themselves live beside each op in lib/ops/. */
#include "backend/backend-private.h"
#include "backend/cpu.h"

#include <stdlib.h>
#include <string.h>

static void cpu_destroy(MexdBackend *be)
{
  g_free(be);
}

static MexdStorage *cpu_storage_new(MexdBackend *be, size_t size, GError **error)
{
  void *p = NULL;
  size_t padded = (size + 63) & ~(size_t)63;
  if (posix_memalign(&p, 64, padded ? padded : 64) != 0 || !p)
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "cannot allocate %zu bytes of host memory",
                          size);
  MexdStorage *s = g_new0(MexdStorage, 1);
  s->ref_count = 1;
  s->backend = be;
  s->size = size;
  s->host = p;
  return s;
}

static void cpu_storage_free(MexdBackend *be, MexdStorage *s)
{
  (void)be;
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
  MexdBackend *be = g_new0(MexdBackend, 1);
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
