/* backend.c: choosing a backend, reference counting, and storage lifetime. */
#include "backend/backend-private.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

MexdStorage *mexd_storage_ref(MexdStorage *s)
{
  g_atomic_int_inc(&s->ref_count);
  return s;
}

void mexd_storage_unref(MexdStorage *s)
{
  if (s && g_atomic_int_dec_and_test(&s->ref_count))
    s->backend->vt->storage_free(s->backend, s);
}

static MexdBackend *backend_from_spec(const char *spec, const char *origin, GError **error)
{
  if (g_ascii_strcasecmp(spec, "cpu") == 0)
    return mexd_cpu_backend_new(error);
  if (g_ascii_strncasecmp(spec, "vulkan", 6) == 0) {
    const char *rest = spec + 6;
    if (*rest == '\0')
      return mexd_vulkan_backend_new(-1, error);
    if (*rest == ':' && rest[1]) {
      char *end = NULL;
      long idx = strtol(rest + 1, &end, 10);
      if (end && *end == '\0' && idx >= 0 && idx < 1024)
        return mexd_vulkan_backend_new((int)idx, error);
    }
  }
  return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                        "%s \"%s\" is not a device; use cpu, vulkan or vulkan:N", origin, spec);
}

MexdBackend *mexd_backend_new(const char *spec, GError **error)
{
  if (spec && *spec)
    return backend_from_spec(spec, "device", error);
  const char *env = g_getenv("MEXD_DEVICE");
  if (env && *env)
    return backend_from_spec(env, "MEXD_DEVICE", error);
  /* automatic: a hardware GPU (discrete, integrated or virtual) when Vulkan shows one, else the
   * cpu backend.  A software Vulkan device (lavapipe) is never the default: on the same cores
   * the cpu backend is 10–40× faster (docs/PERFORMANCE.md); it is taken only when asked for
   * (--device vulkan, MEXD_DEVICE=vulkan). */
  int hw = mexd_vulkan_hardware_device();
  if (hw >= 0) {
    g_autoptr(GError) vk_error = NULL;
    MexdBackend *be = mexd_vulkan_backend_new(hw, &vk_error);
    if (be)
      return be;
    mexd_debug("vulkan:%d did not open (%s); using the cpu backend", hw, vk_error->message);
  } else {
    mexd_debug("Vulkan shows no GPU; using the cpu backend");
  }
  return mexd_cpu_backend_new(error);
}

gboolean mexd_backend_satisfies(const MexdBackend *be, const char *spec)
{
  if (!be)
    return FALSE;
  if (!spec || !*spec)
    return TRUE;
  if (g_ascii_strcasecmp(spec, "cpu") == 0)
    return be->kind == MEXD_BACKEND_CPU;
  if (g_ascii_strncasecmp(spec, "vulkan", 6) != 0 || be->kind != MEXD_BACKEND_VULKAN)
    return FALSE;
  if (spec[6] == '\0')
    return TRUE;
  /* the name starts with "vulkan:N " */
  size_t n = strlen(spec);
  return spec[6] == ':' && strncmp(be->name + 6, spec + 6, n - 6) == 0 && be->name[n] == ' ';
}

MexdBackend *mexd_backend_ref(MexdBackend *be)
{
  g_return_val_if_fail(be != NULL, NULL);
  g_atomic_int_inc(&be->ref_count);
  return be;
}

void mexd_backend_unref(MexdBackend *be)
{
  if (!be || !g_atomic_int_dec_and_test(&be->ref_count))
    return;
  char *name = be->name;
  be->vt->destroy(be);
  g_free(name);
}

MexdBackendKind mexd_backend_kind(const MexdBackend *be)
{
  return be->kind;
}

const char *mexd_backend_name(const MexdBackend *be)
{
  return be ? be->name : "(null)";
}

gboolean mexd_backend_has_f16(const MexdBackend *be)
{
  return be && be->has_f16;
}

gboolean mexd_backend_sync(MexdBackend *be, GError **error)
{
  if (!be)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_backend_sync: backend is NULL");
  return be->vt->sync(be, error);
}

gboolean mexd_backend_flush(MexdBackend *be, GError **error)
{
  if (!be)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_backend_flush: backend is NULL");
  return be->vt->flush ? be->vt->flush(be, error) : TRUE;
}

char **mexd_backend_list(void)
{
  GPtrArray *a = g_ptr_array_new();
  g_ptr_array_add(a, g_strdup("cpu"));
  int n = mexd_vulkan_device_count();
  for (int i = 0; i < n; i++)
    g_ptr_array_add(a, g_strdup_printf("vulkan:%d", i));
  g_ptr_array_add(a, NULL);
  return (char **)g_ptr_array_free(a, FALSE);
}
