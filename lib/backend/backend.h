/* backend.h: the compute backends behind one interface.
 *
 * `cpu` runs plain C kernels (GEMM through OpenBLAS when it was found at build time) and is the
 * reference every shader is tested against.  `vulkan` runs the shaders of shaders/ on a Vulkan 1.2+
 * device (any vendor's GPU, or Mesa's lavapipe on a CPU); ops are recorded into one command buffer
 * and submitted together by mexd_backend_sync() (reads of tensors sync implicitly).
 *
 * Choice: the spec string "cpu", "vulkan" (the default Vulkan device) or "vulkan:N" (device N in
 * the order the loader lists them).  NULL or "" reads MEXD_DEVICE; when that is unset too, the
 * best hardware GPU Vulkan shows (discrete, then integrated, then virtual), else the cpu backend.
 * A software Vulkan device (lavapipe) is used only when asked for ("vulkan", "vulkan:N"). */
#pragma once

#include "core/tensor.h"

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MEXD_BACKEND_CPU,
  MEXD_BACKEND_VULKAN,
} MexdBackendKind;

MexdBackend *mexd_backend_new(const char *spec, GError **error);
MexdBackend *mexd_backend_ref(MexdBackend *be);
void mexd_backend_unref(MexdBackend *be);

MexdBackendKind mexd_backend_kind(const MexdBackend *be);
/* A human-readable name, e.g. "cpu (OpenBLAS)" or "vulkan:0 NVIDIA H100 80GB HBM3". */
const char *mexd_backend_name(const MexdBackend *be);
/* Whether `be` is what the device spec asks for: NULL or "" anything, "cpu" the cpu backend,
 * "vulkan" any Vulkan device, "vulkan:N" Vulkan device N (ASCII case ignored).  Used to decide
 * whether a backend opened elsewhere (the GStreamer elements' shared device) may be used. */
gboolean mexd_backend_satisfies(const MexdBackend *be, const char *spec);
/* TRUE when the device supports f16 storage (the cpu backend always does). */
gboolean mexd_backend_has_f16(const MexdBackend *be);

/* Submits everything recorded so far and waits for it.  Errors found by the device while running
 * (an out-of-range index in a gather, a lost device, a timeout) are reported here. */
gboolean mexd_backend_sync(MexdBackend *be, GError **error);

/* Submits everything recorded so far without waiting for it: the device starts on it while the
 * caller goes on (records the next batch, reads tiles).  A later read of a tensor waits only for
 * the submissions that use it; writes never wait (they are ordered with the recorded work).  At
 * most two submissions are in flight: a third waits for the oldest.  Errors found by the device
 * come back from the read or sync that waits for that work.  The cpu backend runs ops at once
 * and has nothing to submit. */
gboolean mexd_backend_flush(MexdBackend *be, GError **error);

/* The spec strings of every backend that can be opened here: "cpu", then "vulkan:0", "vulkan:1"...
 * (NULL-terminated; g_strfreev it).  Used by the test harness and `mexd bench`. */
char **mexd_backend_list(void);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdBackend, mexd_backend_unref)

G_END_DECLS
