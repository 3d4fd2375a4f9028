/* backend-private.h: what a backend implements, and the storage it hands out. */
#pragma once

#include "backend/backend.h"
#include "core/error.h"

G_BEGIN_DECLS

struct _MexdStorage {
  gint ref_count;
  MexdBackend *backend; /* not a reference: a backend outlives its storages via the tensors */
  size_t size;
  void *host;    /* cpu: the data; vulkan: the persistent mapping when the memory is host-visible */
  gpointer priv; /* backend data (vulkan: the sub-allocation) */
};

typedef struct {
  void (*destroy)(MexdBackend *be);
  MexdStorage *(*storage_new)(MexdBackend *be, size_t size, GError **error);
  void (*storage_free)(MexdBackend *be, MexdStorage *s);
  gboolean (*write)(MexdBackend *be, MexdStorage *s, size_t off, const void *src, size_t n,
                    GError **error);
  gboolean (*read)(MexdBackend *be, MexdStorage *s, size_t off, void *dst, size_t n,
                   GError **error);
  gboolean (*fill_zero)(MexdBackend *be, MexdStorage *s, size_t off, size_t n, GError **error);
  gboolean (*sync)(MexdBackend *be, GError **error);
  /* optional: submit without waiting (NULL: nothing to do, ops run at once) */
  gboolean (*flush)(MexdBackend *be, GError **error);
  /* optional: storage the host reads through a mapping (NULL: storage_new) */
  MexdStorage *(*storage_new_host)(MexdBackend *be, size_t size, GError **error);
} MexdBackendVTable;

struct _MexdBackend {
  const MexdBackendVTable *vt;
  MexdBackendKind kind;
  gint ref_count;
  char *name;
  gboolean has_f16;
  size_t max_tensor_bytes; /* largest single tensor the backend can bind */
};

MexdStorage *mexd_storage_ref(MexdStorage *s);
void mexd_storage_unref(MexdStorage *s);

MexdBackend *mexd_cpu_backend_new(GError **error);
/* index < 0: the best usable device (discrete, integrated, virtual GPU, then software). */
MexdBackend *mexd_vulkan_backend_new(int index, GError **error);
int mexd_vulkan_device_count(void);
/* The index of the best usable hardware device (discrete, then integrated, then virtual GPU), or
 * −1 when Vulkan shows none (only software devices such as lavapipe, or nothing). */
int mexd_vulkan_hardware_device(void);

G_END_DECLS
