/* vulkan.c: the vulkan backend.
 *
 * Owns its VkInstance / VkDevice and one compute queue (GStreamer's GstVulkanDevice cannot enable
 * the 16-bit storage features compute needs).  Pieces:
 * - device choice and a start-up log of the device, its limits and enabled features;
 * - a sub-allocator: device memory in blocks (256 MiB or maxMemoryAllocationSize if smaller), each
 *   with one VkBuffer over it; tensors are aligned ranges of a block (first fit, coalescing free
 *   list); a tensor larger than half a block gets a block of its own;
 * - tensors larger than maxStorageBufferRange (lavapipe: 128 MiB; a bag of 100,000 instances is
 *   more): where the device has bufferDeviceAddress (Vulkan 1.2), a dispatch that binds one runs
 *   the shader's MEXD_BDA build, which reaches every tensor through its 64-bit address in the push
 *   constants (shaders/common.glsl), so tensors may be as large as one allocation (at most 2 GiB);
 *   without it such a tensor is refused when it is created, since no shader could bind it;
 * - pipelines built on first use from the SPIR-V embedded in the library (a table indexed by shader
 *   id and build, shaders/embed.py), keyed by the build's name and the specialization constants,
 *   through a VkPipelineCache saved under the user's cache directory;
 * - a recorder: every dispatch goes into one open command buffer (push descriptors, push constants,
 *   a compute→compute memory barrier between dispatches) and is submitted once at sync;
 * - uploads and downloads: directly through the mapping when device memory is host-visible
 *   (lavapipe, integrated GPUs), through a staging buffer otherwise (discrete GPUs).
 * Device-side failures (lost device, timeouts, bad indices flagged by shaders) come back from
 * mexd_backend_sync() as GErrors. */
#include "backend/vulkan.h"

#include "core/log.h"
#include "shaders.h"

#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#define BLOCK_SIZE_DEFAULT ((VkDeviceSize)256 << 20)
#define ALLOC_ALIGN        256
#define STAGING_CHUNK      ((VkDeviceSize)64 << 20)

typedef struct {
  VkDeviceSize off, size;
} Range;

typedef struct {
  VkDeviceMemory mem;
  VkBuffer buf;
  VkDeviceAddress addr; /* of buf, when the device has bufferDeviceAddress */
  VkDeviceSize size;
  void *map;
  GArray *free; /* Range, sorted by offset */
  int live;     /* allocations in this block */
  gboolean dedicated;
} Block;

typedef struct {
  Block *block;
  VkDeviceSize off, size;
  uint64_t last_use; /* serial of the latest submission whose commands use it (0: none) */
} Alloc;

/* One submission's worth of commands.  N_SLOTS of them rotate, so that one can run on the device
 * while the next is recorded (two batches in flight): a slot is reused once its fence says its
 * work is done. */
typedef struct {
  VkCommandBuffer cmd;
  VkFence fence;
  GPtrArray *held;          /* MexdStorage* its commands use, kept alive until it completes */
  GPtrArray *uploads;       /* host-visible Block*: data of its staged uploads */
  VkDeviceSize upload_used; /* bytes taken in the last of `uploads` */
  uint64_t serial;          /* 1, 2, 3...: order of recording (= order of submission) */
  gboolean pending;         /* submitted and not yet seen complete */
} Slot;

#define N_SLOTS 2

typedef struct {
  MexdBackend base;
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkPhysicalDeviceProperties props;
  VkDevice device;
  VkQueue queue;
  uint32_t queue_family;
  uint32_t mem_type;
  gboolean mem_mappable;
  gboolean has_bda;   /* bufferDeviceAddress enabled: tensors beyond maxStorageBufferRange */
  gboolean force_bda; /* MEXD_VK_FORCE_BDA=1: every dispatch uses the MEXD_BDA shaders (tests) */
  uint32_t staging_type;
  VkDeviceSize block_size;
  VkDeviceSize offset_align;
  GPtrArray *blocks; /* Block* */
  GMutex lock;       /* guards the allocator and the recorder */

  VkDescriptorSetLayout set_layout;
  VkPipelineLayout pipe_layout;
  VkPipelineCache pipe_cache;
  char *pipe_cache_path;
  GHashTable *pipelines; /* "name|s0,s1.." → VkPipeline */
  GHashTable *modules;   /* "name.build" → VkShaderModule */
  PFN_vkCmdPushDescriptorSetKHR push_descriptor;

  VkCommandPool pool;
  Slot slots[N_SLOTS];
  int cur;            /* the slot being recorded (or to be recorded next) */
  VkCommandBuffer cmd; /* slots[cur].cmd */
  gboolean recording; /* slots[cur] is open */
  guint n_dispatch;   /* commands recorded since it was opened */
  uint64_t serial_last; /* the serial given to the latest opened slot */
  uint64_t done;        /* every submission up to this serial is known to be complete */
  GPtrArray *release;   /* MexdStorage* of completed work, unreferenced after unlocking */
  char *dead;       /* why the device takes no more work (timeout, lost device), or NULL */
  uint64_t timeout_ns;

  Block *status;  /* host-visible status word (binding 4) */
  Block *dummy;   /* bound where an op passes no tensor */
  Block *staging; /* host-visible, for discrete GPUs */

  MexdVkLimits limits;
} VkBackend;

static guint validation_count = 0;

static guint submission_count = 0; /* vkQueueSubmit calls of every vulkan backend (tests) */

guint mexd_vk_submissions(void)
{
  return g_atomic_int_get(&submission_count);
}

guint mexd_vk_validation_messages(void)
{
  return g_atomic_int_get(&validation_count);
}

static const char *vk_result_name(VkResult r)
{
  switch (r) {
  case VK_SUCCESS: return "VK_SUCCESS";
  case VK_TIMEOUT: return "VK_TIMEOUT";
  case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
  case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
  case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
  case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
  case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
  case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
  case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
  case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
  case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
  case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
  default: return "VkResult error";
  }
}

#define VK_FAIL(error, r, what)                                                                    \
  mexd_fail(error,                                                                                 \
            (r) == VK_ERROR_OUT_OF_DEVICE_MEMORY || (r) == VK_ERROR_OUT_OF_HOST_MEMORY             \
                ? MEXD_ERROR_NO_MEMORY                                                             \
                : MEXD_ERROR_DEVICE,                                                               \
            "Vulkan: %s failed: %s (%d)", what, vk_result_name(r), (int)(r))

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data,
                                               void *user)
{
  (void)types;
  (void)user;
  if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                  VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
    g_atomic_int_inc(&validation_count);
    g_printerr("mexd: Vulkan validation: %s\n", data->pMessage);
  }
  return VK_FALSE;
}

static gboolean want_validation(void)
{
  const char *v = g_getenv("MEXD_VK_VALIDATION");
  return v && *v && strcmp(v, "0") != 0;
}

static gboolean has_layer(const char *name)
{
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, NULL);
  g_autofree VkLayerProperties *p = g_new0(VkLayerProperties, n ? n : 1);
  vkEnumerateInstanceLayerProperties(&n, p);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(p[i].layerName, name) == 0)
      return TRUE;
  return FALSE;
}

static VkResult create_instance(VkInstance *inst, VkDebugUtilsMessengerEXT *messenger,
                                GError **error)
{
  VkApplicationInfo app = {
      .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
      .pApplicationName = "mexd",
      .pEngineName = "libmexd",
      .apiVersion = VK_API_VERSION_1_2,
  };
  const char *layers[1];
  const char *exts[1];
  uint32_t n_layers = 0, n_exts = 0;
  gboolean validate = want_validation();
  if (validate) {
    if (!has_layer("VK_LAYER_KHRONOS_validation")) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED,
                  "MEXD_VK_VALIDATION is set but VK_LAYER_KHRONOS_validation is not installed "
                  "(Debian: vulkan-validationlayers)");
      return VK_ERROR_LAYER_NOT_PRESENT;
    }
    layers[n_layers++] = "VK_LAYER_KHRONOS_validation";
    exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  }
  VkDebugUtilsMessengerCreateInfoEXT dbg = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                         VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = debug_cb,
  };
  VkInstanceCreateInfo ici = {
      .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
      .pNext = validate ? &dbg : NULL,
      .pApplicationInfo = &app,
      .enabledLayerCount = n_layers,
      .ppEnabledLayerNames = layers,
      .enabledExtensionCount = n_exts,
      .ppEnabledExtensionNames = exts,
  };
  VkResult r = vkCreateInstance(&ici, NULL, inst);
  if (r != VK_SUCCESS) {
    VK_FAIL(error, r,
            "vkCreateInstance (is a Vulkan driver installed? Debian: mesa-vulkan-drivers)");
    return r;
  }
  *messenger = VK_NULL_HANDLE;
  if (validate) {
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(*inst,
                                                                  "vkCreateDebugUtilsMessengerEXT");
    if (create)
      create(*inst, &dbg, NULL, messenger);
  }
  return VK_SUCCESS;
}

/* ---- device choice ---- */

static gboolean device_has_ext(VkPhysicalDevice pd, const char *name)
{
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
  g_autofree VkExtensionProperties *e = g_new0(VkExtensionProperties, n ? n : 1);
  vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(e[i].extensionName, name) == 0)
      return TRUE;
  return FALSE;
}

static int compute_queue_family(VkPhysicalDevice pd)
{
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
  g_autofree VkQueueFamilyProperties *q = g_new0(VkQueueFamilyProperties, n ? n : 1);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
  int any = -1;
  for (uint32_t i = 0; i < n; i++) {
    if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT))
      continue;
    if (!(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT))
      return (int)i; /* a compute-only family */
    if (any < 0)
      any = (int)i;
  }
  return any;
}

/* Why the device cannot be used, or NULL when it can. */
static const char *device_unsuitable(VkPhysicalDevice pd)
{
  VkPhysicalDeviceProperties p;
  vkGetPhysicalDeviceProperties(pd, &p);
  if (p.apiVersion < VK_API_VERSION_1_2)
    return "it supports Vulkan below 1.2";
  if (compute_queue_family(pd) < 0)
    return "it has no compute queue";
  if (!device_has_ext(pd, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME))
    return "it lacks VK_KHR_push_descriptor";
  return NULL;
}

static int type_rank(VkPhysicalDeviceType t)
{
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
  default: return 4;
  }
}

static const char *type_name(VkPhysicalDeviceType t)
{
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU (software)";
  default: return "other";
  }
}

/* Enumerates the physical devices without the validation layer (this only lists them) and returns
 * the number of positions up to the last usable one, and in *hw the position of the first
 * usable hardware device of the best type (discrete, then integrated, then virtual GPU), or -1. */
static int enumerate_usable(int *hw)
{
  VkInstance inst;
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                           .apiVersion = VK_API_VERSION_1_2};
  VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                              .pApplicationInfo = &app};
  *hw = -1;
  if (vkCreateInstance(&ici, NULL, &inst) != VK_SUCCESS)
    return 0;
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(inst, &n, NULL);
  g_autofree VkPhysicalDevice *pd = g_new0(VkPhysicalDevice, n ? n : 1);
  vkEnumeratePhysicalDevices(inst, &n, pd);
  int usable = 0, best_rank = 99;
  for (uint32_t i = 0; i < n; i++) {
    if (device_unsuitable(pd[i]))
      continue;
    usable = (int)i + 1; /* indices are positions in the loader's list */
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(pd[i], &p);
    int rank = type_rank(p.deviceType);
    if (rank <= 2 && rank < best_rank) {
      best_rank = rank;
      *hw = (int)i;
    }
  }
  vkDestroyInstance(inst, NULL);
  return usable;
}

int mexd_vulkan_device_count(void)
{
  int hw;
  return enumerate_usable(&hw);
}

int mexd_vulkan_hardware_device(void)
{
  int hw;
  enumerate_usable(&hw);
  return hw;
}

/* ---- memory ---- */

static gboolean find_mem_type(VkBackend *vk, uint32_t type_bits, VkMemoryPropertyFlags want,
                              VkMemoryPropertyFlags avoid, uint32_t *out)
{
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(vk->phys, &mp);
  for (uint32_t i = 0; i < mp.memoryTypeCount; i++) {
    VkMemoryPropertyFlags f = mp.memoryTypes[i].propertyFlags;
    if ((type_bits & (1u << i)) && (f & want) == want && !(f & avoid)) {
      *out = i;
      return TRUE;
    }
  }
  return FALSE;
}

static void block_free(VkBackend *vk, Block *b)
{
  if (!b)
    return;
  if (b->map)
    vkUnmapMemory(vk->device, b->mem);
  vkDestroyBuffer(vk->device, b->buf, NULL);
  vkFreeMemory(vk->device, b->mem, NULL);
  if (b->free)
    g_array_free(b->free, TRUE);
  g_free(b);
}

static Block *block_new(VkBackend *vk, VkDeviceSize size, gboolean host_visible, GError **error)
{
  Block *b = g_new0(Block, 1);
  b->size = size;
  VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = size,
      .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT |
               (vk->has_bda ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0),
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
  };
  VkResult r = vkCreateBuffer(vk->device, &bci, NULL, &b->buf);
  if (r != VK_SUCCESS) {
    g_free(b);
    VK_FAIL(error, r, "vkCreateBuffer");
    return NULL;
  }
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(vk->device, b->buf, &req);
  uint32_t type = vk->mem_type;
  if (host_visible) {
    type = vk->staging_type;
  } else if (!(req.memoryTypeBits & (1u << type))) {
    vkDestroyBuffer(vk->device, b->buf, NULL);
    g_free(b);
    return mexd_fail_null(error, MEXD_ERROR_DEVICE, "Vulkan: no memory type fits a storage buffer");
  }
  VkMemoryAllocateFlagsInfo flags = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
      .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
  };
  VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .pNext = vk->has_bda ? &flags : NULL,
      .allocationSize = req.size,
      .memoryTypeIndex = type,
  };
  r = vkAllocateMemory(vk->device, &mai, NULL, &b->mem);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(vk->device, b->buf, NULL);
    g_free(b);
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_NO_MEMORY,
                "Vulkan: cannot allocate %" G_GUINT64_FORMAT " MiB of device memory on %s: %s",
                (guint64)(req.size >> 20), vk->props.deviceName, vk_result_name(r));
    return NULL;
  }
  vkBindBufferMemory(vk->device, b->buf, b->mem, 0);
  if (vk->has_bda) {
    VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                    .buffer = b->buf};
    b->addr = vkGetBufferDeviceAddress(vk->device, &ai);
  }
  if (host_visible || vk->mem_mappable) {
    r = vkMapMemory(vk->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map);
    if (r != VK_SUCCESS) {
      block_free(vk, b);
      VK_FAIL(error, r, "vkMapMemory");
      return NULL;
    }
  }
  b->free = g_array_new(FALSE, FALSE, sizeof(Range));
  Range all = {0, size};
  g_array_append_val(b->free, all);
  return b;
}

static gboolean block_take(Block *b, VkDeviceSize size, VkDeviceSize *off)
{
  for (guint i = 0; i < b->free->len; i++) {
    Range *r = &g_array_index(b->free, Range, i);
    if (r->size >= size) {
      *off = r->off;
      r->off += size;
      r->size -= size;
      if (r->size == 0)
        g_array_remove_index(b->free, i);
      b->live++;
      return TRUE;
    }
  }
  return FALSE;
}

static void block_give(Block *b, VkDeviceSize off, VkDeviceSize size)
{
  guint i = 0;
  while (i < b->free->len && g_array_index(b->free, Range, i).off < off)
    i++;
  Range r = {off, size};
  g_array_insert_val(b->free, i, r);
  /* merge with the next, then with the previous */
  if (i + 1 < b->free->len) {
    Range *a = &g_array_index(b->free, Range, i), *n = &g_array_index(b->free, Range, i + 1);
    if (a->off + a->size == n->off) {
      a->size += n->size;
      g_array_remove_index(b->free, i + 1);
    }
  }
  if (i > 0) {
    Range *p = &g_array_index(b->free, Range, i - 1), *a = &g_array_index(b->free, Range, i);
    if (p->off + p->size == a->off) {
      p->size += a->size;
      g_array_remove_index(b->free, i);
    }
  }
  b->live--;
}

static MexdStorage *vk_storage_new(MexdBackend *be, size_t size, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  VkDeviceSize want = (size + ALLOC_ALIGN - 1) & ~(VkDeviceSize)(ALLOC_ALIGN - 1);
  if (want == 0)
    want = ALLOC_ALIGN;
  Alloc *a = g_new0(Alloc, 1);
  a->size = want;
  g_mutex_lock(&vk->lock);
  if (want > vk->block_size / 2) {
    Block *b = block_new(vk, want, FALSE, error);
    if (!b) {
      g_mutex_unlock(&vk->lock);
      g_free(a);
      return NULL;
    }
    b->dedicated = TRUE;
    block_take(b, want, &a->off);
    g_ptr_array_add(vk->blocks, b);
    a->block = b;
  } else {
    for (guint i = 0; i < vk->blocks->len && !a->block; i++) {
      Block *b = g_ptr_array_index(vk->blocks, i);
      if (!b->dedicated && block_take(b, want, &a->off))
        a->block = b;
    }
    if (!a->block) {
      Block *b = block_new(vk, vk->block_size, FALSE, error);
      if (!b) {
        g_mutex_unlock(&vk->lock);
        g_free(a);
        return NULL;
      }
      block_take(b, want, &a->off);
      g_ptr_array_add(vk->blocks, b);
      a->block = b;
    }
  }
  g_mutex_unlock(&vk->lock);
  MexdStorage *s = g_new0(MexdStorage, 1);
  s->ref_count = 1;
  s->backend = be;
  s->size = size;
  s->priv = a;
  s->host = a->block->map ? (char *)a->block->map + a->off : NULL;
  return s;
}

/* Host-visible memory the host reads through its mapping (system memory on a discrete GPU; the
 * ordinary memory where device memory is host-visible already). */
static MexdStorage *vk_storage_new_host(MexdBackend *be, size_t size, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  if (vk->mem_mappable)
    return vk_storage_new(be, size, error);
  VkDeviceSize want = MAX((size + ALLOC_ALIGN - 1) & ~(VkDeviceSize)(ALLOC_ALIGN - 1),
                          (VkDeviceSize)ALLOC_ALIGN);
  Alloc *a = g_new0(Alloc, 1);
  a->size = want;
  g_mutex_lock(&vk->lock);
  Block *b = block_new(vk, want, TRUE, error);
  if (b) {
    b->dedicated = TRUE;
    block_take(b, want, &a->off);
    g_ptr_array_add(vk->blocks, b);
    a->block = b;
  }
  g_mutex_unlock(&vk->lock);
  if (!b) {
    g_free(a);
    return NULL;
  }
  MexdStorage *s = g_new0(MexdStorage, 1);
  s->ref_count = 1;
  s->backend = be;
  s->size = size;
  s->priv = a;
  s->host = (char *)b->map + a->off;
  return s;
}

static void vk_storage_free(MexdBackend *be, MexdStorage *s)
{
  VkBackend *vk = (VkBackend *)be;
  Alloc *a = s->priv;
  g_mutex_lock(&vk->lock);
  block_give(a->block, a->off, a->size);
  if (a->block->live == 0 && (a->block->dedicated || vk->blocks->len > 1)) {
    g_ptr_array_remove(vk->blocks, a->block);
    block_free(vk, a->block);
  }
  g_mutex_unlock(&vk->lock);
  g_free(a);
  g_free(s);
}

/* ---- recorder ----
 *
 * Commands go into the open slot's command buffer.  mexd_backend_flush() submits it without
 * waiting and moves on to the next slot (waiting, if that slot's earlier submission still runs);
 * mexd_backend_sync() submits and waits for everything.  Each storage remembers the serial of the
 * latest submission that uses it, so that a host access waits for just that work:
 * - a read waits for that submission (submitting the open one first if it is that one);
 * - a write to a storage no pending work uses is a plain copy through the mapping; otherwise (or
 *   when device memory is not host-visible) the data is copied into host-visible upload memory of
 *   the open slot and a copy command is recorded in order with the other commands, so a write
 *   never waits for the device.
 * The storages a submission uses stay referenced until it is seen complete, so memory freed by
 * the caller meanwhile is not handed out again while the device may still touch it. */

static Slot *cur_slot(VkBackend *vk)
{
  return &vk->slots[vk->cur];
}

/* After a timeout or a lost device the submitted work may still be running: the backend refuses
 * further work and keeps that work's memory (it is released with the process). */
static gboolean mark_dead(VkBackend *vk, GError **error)
{
  if (!vk->dead)
    vk->dead = g_strdup(error && *error ? (*error)->message : "the device stopped responding");
  return FALSE;
}

/* Waits for a submitted slot and recycles it.  Called with vk->lock held. */
static gboolean slot_complete(VkBackend *vk, Slot *s, GError **error)
{
  if (!s->pending)
    return TRUE;
  VkResult r = vkWaitForFences(vk->device, 1, &s->fence, VK_TRUE, vk->timeout_ns);
  if (r == VK_TIMEOUT) {
    mexd_fail(error, MEXD_ERROR_DEVICE,
              "Vulkan: %s did not finish the submitted work within %" G_GUINT64_FORMAT
              " s (MEXD_VK_TIMEOUT sets the limit); the device may be hung",
              vk->props.deviceName, (guint64)(vk->timeout_ns / 1000000000ull));
    return mark_dead(vk, error);
  }
  if (r != VK_SUCCESS) {
    VK_FAIL(error, r, "vkWaitForFences");
    return mark_dead(vk, error);
  }
  vkResetFences(vk->device, 1, &s->fence);
  vkResetCommandBuffer(s->cmd, 0);
  s->pending = FALSE;
  vk->done = MAX(vk->done, s->serial);
  for (guint i = 0; i < s->held->len; i++)
    g_ptr_array_add(vk->release, g_ptr_array_index(s->held, i));
  g_ptr_array_set_size(s->held, 0);
  /* keep the largest upload block for the next use of the slot */
  Block *keep = NULL;
  for (guint i = 0; i < s->uploads->len; i++) {
    Block *b = g_ptr_array_index(s->uploads, i);
    if (!keep || b->size > keep->size) {
      block_free(vk, keep);
      keep = b;
    } else {
      block_free(vk, b);
    }
  }
  g_ptr_array_set_size(s->uploads, 0);
  if (keep)
    g_ptr_array_add(s->uploads, keep);
  s->upload_used = 0;
  return TRUE;
}

/* The submitted slot with the lowest serial, or NULL when none is pending. */
static Slot *oldest_pending(VkBackend *vk)
{
  Slot *o = NULL;
  for (int k = 0; k < N_SLOTS; k++)
    if (vk->slots[k].pending && (!o || vk->slots[k].serial < o->serial))
      o = &vk->slots[k];
  return o;
}

/* Notes submissions that have finished, without waiting. */
static void poll_slots(VkBackend *vk)
{
  Slot *s;
  while ((s = oldest_pending(vk)) && vkGetFenceStatus(vk->device, s->fence) == VK_SUCCESS)
    slot_complete(vk, s, NULL);
}

static gboolean begin_if_needed(VkBackend *vk, GError **error)
{
  if (vk->dead)
    return mexd_fail(error, MEXD_ERROR_DEVICE,
                     "Vulkan: %s failed earlier and takes no more work: %s", vk->props.deviceName,
                     vk->dead);
  if (vk->recording)
    return TRUE;
  Slot *s = cur_slot(vk);
  if (!slot_complete(vk, s, error)) /* its previous submission: at most N_SLOTS in flight */
    return FALSE;
  VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
  };
  VkResult r = vkBeginCommandBuffer(s->cmd, &bi);
  if (r != VK_SUCCESS)
    return VK_FAIL(error, r, "vkBeginCommandBuffer");
  s->serial = ++vk->serial_last;
  vk->cmd = s->cmd;
  vk->recording = TRUE;
  vk->n_dispatch = 0;
  return TRUE;
}

static void barrier(VkBackend *vk, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
  VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = src_access,
      .dstAccessMask = dst_access,
  };
  vkCmdPipelineBarrier(vk->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* The open slot's commands use storage s from here on. */
static void hold(VkBackend *vk, MexdStorage *s)
{
  g_ptr_array_add(cur_slot(vk)->held, mexd_storage_ref(s));
  ((Alloc *)s->priv)->last_use = cur_slot(vk)->serial;
}

/* Unlocks vk->lock and drops the storages of completed work.  Storages may be freed here, which
 * takes vk->lock again: they are dropped after unlocking. */
static void unlock_and_release(VkBackend *vk)
{
  GPtrArray *rel = NULL;
  if (vk->release->len > 0) {
    rel = vk->release;
    vk->release = g_ptr_array_new();
  }
  g_mutex_unlock(&vk->lock);
  if (!rel)
    return;
  for (guint i = 0; i < rel->len; i++)
    mexd_storage_unref(g_ptr_array_index(rel, i));
  g_ptr_array_free(rel, TRUE);
}

/* Submits the open slot without waiting.  Called with vk->lock held. */
static gboolean flush_locked(VkBackend *vk, GError **error)
{
  if (!vk->recording)
    return TRUE;
  Slot *s = cur_slot(vk);
  vk->recording = FALSE;
  VkResult r = vkEndCommandBuffer(s->cmd);
  if (r != VK_SUCCESS) {
    VK_FAIL(error, r, "vkEndCommandBuffer");
    return mark_dead(vk, error);
  }
  VkSubmitInfo si = {
      .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
      .commandBufferCount = 1,
      .pCommandBuffers = &s->cmd,
  };
  g_atomic_int_inc(&submission_count);
  r = vkQueueSubmit(vk->queue, 1, &si, s->fence);
  if (r != VK_SUCCESS) {
    VK_FAIL(error, r, "vkQueueSubmit");
    return mark_dead(vk, error);
  }
  s->pending = TRUE;
  vk->cur = (vk->cur + 1) % N_SLOTS;
  return TRUE;
}

/* Waits until every submission up to `serial` is complete, submitting the open slot first when
 * it is among them.  Called with vk->lock held. */
static gboolean wait_serial_locked(VkBackend *vk, uint64_t serial, GError **error)
{
  if (serial <= vk->done)
    return TRUE;
  if (vk->recording && cur_slot(vk)->serial <= serial && !flush_locked(vk, error))
    return FALSE;
  Slot *s;
  while ((s = oldest_pending(vk)) && s->serial <= serial)
    if (!slot_complete(vk, s, error))
      return FALSE;
  return TRUE;
}

/* Submits what is recorded and waits for everything.  Called with vk->lock held. */
static gboolean submit_and_wait(VkBackend *vk, GError **error)
{
  return wait_serial_locked(vk, vk->serial_last, error);
}

static gboolean check_status(VkBackend *vk, GError **error)
{
  volatile uint32_t *status = vk->status->map;
  uint32_t s = *status;
  if (s == 0)
    return TRUE;
  *status = 0;
  if (s & MEXD_VK_STATUS_INDEX_RANGE)
    return mexd_fail(error, MEXD_ERROR_INDEX,
                     "an index given to a gather op was outside the source tensor's rows "
                     "(found on the device; the output rows for such indices are zero)");
  return mexd_fail(error, MEXD_ERROR_DEVICE, "a shader reported status 0x%x", s);
}

static gboolean vk_sync_locked(VkBackend *vk, GError **error)
{
  gboolean ok = submit_and_wait(vk, error);
  if (ok)
    ok = check_status(vk, error);
  return ok;
}

static gboolean vk_sync(MexdBackend *be, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  g_mutex_lock(&vk->lock);
  gboolean ok = vk->dead ? begin_if_needed(vk, error) /* fails, saying why */
                         : vk_sync_locked(vk, error);
  unlock_and_release(vk);
  return ok;
}

static gboolean vk_flush(MexdBackend *be, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  g_mutex_lock(&vk->lock);
  gboolean ok = vk->dead ? begin_if_needed(vk, error) : flush_locked(vk, error);
  if (ok)
    poll_slots(vk);
  unlock_and_release(vk);
  return ok;
}

/* A transfer command after the commands recorded so far (a barrier orders it after them). */
static gboolean begin_transfer(VkBackend *vk, GError **error)
{
  if (!begin_if_needed(vk, error))
    return FALSE;
  if (vk->n_dispatch > 0)
    barrier(vk, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
  vk->n_dispatch++; /* the next dispatch puts a barrier after it */
  return TRUE;
}

static gboolean ensure_staging(VkBackend *vk, GError **error)
{
  if (vk->staging)
    return TRUE;
  vk->staging = block_new(vk, STAGING_CHUNK, TRUE, error);
  return vk->staging != NULL;
}

/* Records a copy of n bytes from `src` into storage s at `off`, in order with the recorded
 * commands; the bytes are taken now (into the open slot's upload memory). */
static gboolean record_upload(VkBackend *vk, MexdStorage *s, size_t off, const void *src,
                              size_t n, GError **error)
{
  if (!begin_if_needed(vk, error))
    return FALSE;
  Slot *sl = cur_slot(vk);
  Block *up = sl->uploads->len ? g_ptr_array_index(sl->uploads, sl->uploads->len - 1) : NULL;
  VkDeviceSize at = (sl->upload_used + 15) & ~(VkDeviceSize)15;
  if (!up || at + n > up->size) {
    up = block_new(vk, MAX((VkDeviceSize)n, (VkDeviceSize)4 << 20), TRUE, error);
    if (!up)
      return FALSE;
    g_ptr_array_add(sl->uploads, up);
    at = 0;
  }
  memcpy((char *)up->map + at, src, n);
  sl->upload_used = at + n;
  if (!begin_transfer(vk, error))
    return FALSE;
  Alloc *a = s->priv;
  VkBufferCopy c = {at, a->off + off, n};
  vkCmdCopyBuffer(vk->cmd, up->buf, a->block->buf, 1, &c);
  hold(vk, s);
  return TRUE;
}

static gboolean busy(VkBackend *vk, MexdStorage *s)
{
  poll_slots(vk);
  return ((Alloc *)s->priv)->last_use > vk->done;
}

static gboolean vk_write(MexdBackend *be, MexdStorage *s, size_t off, const void *src, size_t n,
                         GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  gboolean ok = TRUE;
  g_mutex_lock(&vk->lock);
  if (vk->dead)
    ok = begin_if_needed(vk, error); /* fails, saying why */
  else if (s->host && !busy(vk, s))
    memcpy((char *)s->host + off, src, n);
  else if (n > 0)
    ok = record_upload(vk, s, off, src, n, error);
  unlock_and_release(vk);
  return ok;
}

static gboolean vk_read(MexdBackend *be, MexdStorage *s, size_t off, void *dst, size_t n,
                        GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  Alloc *a = s->priv;
  gboolean ok = TRUE;
  g_mutex_lock(&vk->lock);
  if (vk->dead)
    ok = begin_if_needed(vk, error); /* fails, saying why */
  else
    ok = wait_serial_locked(vk, a->last_use, error) && check_status(vk, error);
  if (ok && s->host) {
    memcpy(dst, (const char *)s->host + off, n);
  } else if (ok) {
    ok = ensure_staging(vk, error);
    for (size_t done = 0; ok && done < n; done += STAGING_CHUNK) {
      size_t chunk = MIN((size_t)STAGING_CHUNK, n - done);
      ok = begin_transfer(vk, error);
      if (ok) {
        VkBufferCopy c = {a->off + off + done, 0, chunk};
        vkCmdCopyBuffer(vk->cmd, a->block->buf, vk->staging->buf, 1, &c);
        ok = submit_and_wait(vk, error);
      }
      if (ok)
        memcpy((char *)dst + done, vk->staging->map, chunk);
    }
  }
  unlock_and_release(vk);
  return ok;
}

static gboolean vk_fill_zero(MexdBackend *be, MexdStorage *s, size_t off, size_t n, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  Alloc *a = s->priv;
  gboolean ok = TRUE;
  g_mutex_lock(&vk->lock);
  if (vk->dead) {
    ok = begin_if_needed(vk, error); /* fails, saying why */
  } else if (s->host && !busy(vk, s)) {
    memset((char *)s->host + off, 0, n);
  } else if ((off % 4 == 0) && (n % 4 == 0)) {
    ok = begin_transfer(vk, error);
    if (ok) {
      vkCmdFillBuffer(vk->cmd, a->block->buf, a->off + off, n, 0);
      hold(vk, s);
    }
  } else {
    void *z = g_malloc0(n);
    ok = n == 0 || record_upload(vk, s, off, z, n, error);
    g_free(z);
  }
  unlock_and_release(vk);
  return ok;
}

/* ---- pipelines ---- */

static VkShaderModule get_module(VkBackend *vk, const MexdShaderBlob *blob, GError **error)
{
  VkShaderModule m = g_hash_table_lookup(vk->modules, blob->name);
  if (m)
    return m;
  VkShaderModuleCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
      .codeSize = blob->size,
      .pCode = blob->code,
  };
  VkResult r = vkCreateShaderModule(vk->device, &ci, NULL, &m);
  if (r != VK_SUCCESS) {
    VK_FAIL(error, r, "vkCreateShaderModule");
    return VK_NULL_HANDLE;
  }
  g_hash_table_insert(vk->modules, g_strdup(blob->name), m);
  return m;
}

static VkPipeline get_pipeline(VkBackend *vk, const MexdVkDispatch *d, gboolean bda,
                               GError **error)
{
  const gboolean f16 = d->variant == MEXD_DTYPE_F16;
  const MexdShaderBuild build = bda ? (f16 ? MEXD_SHADER_BUILD_F16_BDA : MEXD_SHADER_BUILD_F32_BDA)
                                    : (f16 ? MEXD_SHADER_BUILD_F16 : MEXD_SHADER_BUILD_F32);
  const MexdShaderBlob *blob = mexd_shader_blob(d->shader, build);
  if (!blob) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND, "no shader %d is built into libmexd",
                (int)d->shader);
    return VK_NULL_HANDLE;
  }
  GString *key = g_string_new(blob->name);
  g_string_append_c(key, '|');
  for (int i = 0; i < d->n_spec; i++)
    g_string_append_printf(key, "%u,", d->spec[i]);
  VkPipeline p = g_hash_table_lookup(vk->pipelines, key->str);
  if (p) {
    g_string_free(key, TRUE);
    return p;
  }
  VkShaderModule m = get_module(vk, blob, error);
  if (!m) {
    g_string_free(key, TRUE);
    return VK_NULL_HANDLE;
  }
  VkSpecializationMapEntry entries[8];
  for (int i = 0; i < d->n_spec; i++)
    entries[i] = (VkSpecializationMapEntry){(uint32_t)i, (uint32_t)(i * 4), 4};
  VkSpecializationInfo si = {(uint32_t)d->n_spec, entries, (size_t)d->n_spec * 4, d->spec};
  VkComputePipelineCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage =
          {
              .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
              .stage = VK_SHADER_STAGE_COMPUTE_BIT,
              .module = m,
              .pName = "main",
              .pSpecializationInfo = d->n_spec ? &si : NULL,
          },
      .layout = vk->pipe_layout,
  };
  VkResult r = vkCreateComputePipelines(vk->device, vk->pipe_cache, 1, &ci, NULL, &p);
  if (r != VK_SUCCESS) {
    g_string_free(key, TRUE);
    VK_FAIL(error, r, "vkCreateComputePipelines");
    return VK_NULL_HANDLE;
  }
  mexd_debug("vulkan: built pipeline %s", key->str);
  g_hash_table_insert(vk->pipelines, g_string_free(key, FALSE), p);
  return p;
}

gboolean mexd_vk_grid(MexdBackend *be, uint64_t n_groups, uint32_t groups[3], GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  uint64_t mx = vk->limits.max_group_count[0];
  uint64_t my = vk->limits.max_group_count[1];
  if (n_groups == 0)
    n_groups = 1;
  if (n_groups <= mx) {
    groups[0] = (uint32_t)n_groups;
    groups[1] = 1;
  } else {
    uint64_t y = (n_groups + mx - 1) / mx;
    if (y > my)
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "%" G_GUINT64_FORMAT " workgroups exceed the device's dispatch limits",
                       n_groups);
    groups[0] = (uint32_t)((n_groups + y - 1) / y);
    groups[1] = (uint32_t)y;
  }
  groups[2] = 1;
  return TRUE;
}

const MexdVkLimits *mexd_vk_limits(MexdBackend *be)
{
  return &((VkBackend *)be)->limits;
}

gboolean mexd_vk_dispatch(MexdBackend *be, const MexdVkDispatch *d, GError **error)
{
  VkBackend *vk = (VkBackend *)be;
  if (be->kind != MEXD_BACKEND_VULKAN)
    return mexd_fail(error, MEXD_ERROR_BACKEND, "mexd_vk_dispatch on a %s backend", be->name);
  g_return_val_if_fail(d->n_bind <= MEXD_VK_MAX_BINDINGS && d->n_spec <= 8, FALSE);
  g_return_val_if_fail(d->push_size >= MEXD_VK_PUSH_HEADER && d->push_size <= MEXD_VK_MAX_PUSH,
                       FALSE);
  for (int i = 0; i < 3; i++)
    if (d->groups[i] == 0 || d->groups[i] > vk->limits.max_group_count[i])
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "%s: %u workgroups in dimension %d exceed the device limit %u",
                       mexd_shader_name(d->shader), d->groups[i], i, vk->limits.max_group_count[i]);

  /* Which build: descriptors, unless a bound tensor's range exceeds maxStorageBufferRange */
  gboolean bda = vk->force_bda;
  for (int i = 0; i < d->n_bind; i++) {
    MexdTensor *t = d->bind[i];
    if (t && t->backend != be)
      return mexd_fail(error, MEXD_ERROR_BACKEND, "%s: binding %d is a tensor of another backend",
                       mexd_shader_name(d->shader), i);
    if (t && !bda) {
      Alloc *a = t->storage->priv;
      VkDeviceSize start = a->off + t->offset;
      VkDeviceSize range = (start & (vk->offset_align - 1)) + mexd_tensor_nbytes(t);
      if (range > vk->limits.max_storage_range) {
        if (!vk->has_bda)
          return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                           "%s: a tensor of %zu bytes exceeds the device's maxStorageBufferRange "
                           "(%" G_GUINT64_FORMAT " bytes)",
                           mexd_shader_name(d->shader), mexd_tensor_nbytes(t),
                           vk->limits.max_storage_range);
        bda = TRUE;
      }
    }
  }

  uint8_t push[MEXD_VK_MAX_PUSH + MEXD_VK_PUSH_HEADER];
  size_t push_size = d->push_size;
  VkDescriptorBufferInfo infos[MEXD_VK_MAX_BINDINGS + 1];
  VkWriteDescriptorSet writes[MEXD_VK_MAX_BINDINGS + 1];
  int n_writes = 0;
  if (bda) {
    /* header: the 64-bit address of each tensor's first element; then the op's fields */
    uint64_t addr[MEXD_VK_MAX_BINDINGS] = {0};
    for (int i = 0; i < d->n_bind; i++) {
      MexdTensor *t = d->bind[i];
      Alloc *a = t ? t->storage->priv : NULL;
      addr[i] = a ? a->block->addr + a->off + t->offset : vk->dummy->addr;
    }
    push_size = d->push_size + MEXD_VK_PUSH_HEADER;
    if (push_size > vk->props.limits.maxPushConstantsSize || push_size > MEXD_VK_MAX_PUSH)
      return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                       "%s: %zu bytes of push constants with tensor addresses exceed the device's "
                       "limit of %u",
                       mexd_shader_name(d->shader), push_size,
                       MIN(vk->props.limits.maxPushConstantsSize, MEXD_VK_MAX_PUSH));
    memcpy(push, addr, sizeof addr);
    memcpy(push + sizeof addr, (const uint8_t *)d->push + MEXD_VK_PUSH_HEADER,
           d->push_size - MEXD_VK_PUSH_HEADER);
  } else {
    memcpy(push, d->push, d->push_size);
    uint32_t *offs = (uint32_t *)push;
    for (int i = 0; i < d->n_bind; i++) {
      MexdTensor *t = d->bind[i];
      if (t) {
        Alloc *a = t->storage->priv;
        VkDeviceSize start = a->off + t->offset;
        VkDeviceSize aligned = start & ~(vk->offset_align - 1);
        VkDeviceSize range = start - aligned + mexd_tensor_nbytes(t);
        infos[n_writes] = (VkDescriptorBufferInfo){a->block->buf, aligned, range};
        offs[i] = (uint32_t)((start - aligned) / mexd_dtype_size(t->dtype));
      } else {
        infos[n_writes] = (VkDescriptorBufferInfo){vk->dummy->buf, 0, vk->dummy->size};
        offs[i] = 0;
      }
      writes[n_writes] = (VkWriteDescriptorSet){
          .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
          .dstBinding = (uint32_t)i,
          .descriptorCount = 1,
          .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
          .pBufferInfo = &infos[n_writes],
      };
      n_writes++;
    }
  }
  if (d->bind_status) {
    infos[n_writes] = (VkDescriptorBufferInfo){vk->status->buf, 0, vk->status->size};
    writes[n_writes] = (VkWriteDescriptorSet){
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstBinding = MEXD_VK_STATUS_BINDING,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &infos[n_writes],
    };
    n_writes++;
  }

  g_mutex_lock(&vk->lock);
  VkPipeline p = get_pipeline(vk, d, bda, error);
  if (!p || !begin_if_needed(vk, error)) {
    g_mutex_unlock(&vk->lock);
    return FALSE;
  }
  if (vk->n_dispatch > 0)
    barrier(vk, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p);
  if (n_writes > 0)
    vk->push_descriptor(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->pipe_layout, 0,
                        (uint32_t)n_writes, writes);
  vkCmdPushConstants(vk->cmd, vk->pipe_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                     (uint32_t)((push_size + 3) & ~(size_t)3), push);
  vkCmdDispatch(vk->cmd, d->groups[0], d->groups[1], d->groups[2]);
  vk->n_dispatch++;
  for (int i = 0; i < d->n_bind; i++)
    if (d->bind[i])
      hold(vk, d->bind[i]->storage);
  g_mutex_unlock(&vk->lock);
  return TRUE;
}

/* ---- creation ---- */

static void save_pipeline_cache(VkBackend *vk)
{
  if (!vk->pipe_cache || !vk->pipe_cache_path)
    return;
  size_t size = 0;
  if (vkGetPipelineCacheData(vk->device, vk->pipe_cache, &size, NULL) != VK_SUCCESS || !size)
    return;
  g_autofree void *data = g_malloc(size);
  if (vkGetPipelineCacheData(vk->device, vk->pipe_cache, &size, data) != VK_SUCCESS)
    return;
  g_autofree char *dir = g_path_get_dirname(vk->pipe_cache_path);
  g_mkdir_with_parents(dir, 0755);
  g_file_set_contents(vk->pipe_cache_path, data, (gssize)size, NULL); /* a cache: best effort */
}

static void vk_destroy(MexdBackend *be)
{
  VkBackend *vk = (VkBackend *)be;
  if (vk->device) {
    if (!vk->dead && (vk->recording || oldest_pending(vk))) {
      g_autoptr(GError) e = NULL;
      if (!vk_sync_locked(vk, &e))
        mexd_warning("vulkan: work pending at close failed: %s", e->message);
    }
    /* after this nothing runs any more, even on a device that timed out: its memory can go */
    if (vkDeviceWaitIdle(vk->device) == VK_SUCCESS) {
      g_clear_pointer(&vk->dead, g_free);
      for (int k = 0; k < N_SLOTS; k++) {
        Slot *sl = &vk->slots[k];
        for (guint i = 0; sl->held && i < sl->held->len; i++)
          g_ptr_array_add(vk->release, g_ptr_array_index(sl->held, i));
        if (sl->held)
          g_ptr_array_set_size(sl->held, 0);
      }
    }
  }
  if (vk->release) {
    g_mutex_lock(&vk->lock);
    unlock_and_release(vk);
  }
  if (vk->device) {
    save_pipeline_cache(vk);
    if (vk->pipelines) {
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init(&it, vk->pipelines);
      while (g_hash_table_iter_next(&it, &k, &v))
        vkDestroyPipeline(vk->device, v, NULL);
      g_hash_table_destroy(vk->pipelines);
    }
    if (vk->modules) {
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init(&it, vk->modules);
      while (g_hash_table_iter_next(&it, &k, &v))
        vkDestroyShaderModule(vk->device, v, NULL);
      g_hash_table_destroy(vk->modules);
    }
    vkDestroyPipelineCache(vk->device, vk->pipe_cache, NULL);
    vkDestroyPipelineLayout(vk->device, vk->pipe_layout, NULL);
    vkDestroyDescriptorSetLayout(vk->device, vk->set_layout, NULL);
    for (int k = 0; k < N_SLOTS; k++) {
      Slot *sl = &vk->slots[k];
      if (sl->fence)
        vkDestroyFence(vk->device, sl->fence, NULL);
      for (guint i = 0; sl->uploads && i < sl->uploads->len; i++)
        block_free(vk, g_ptr_array_index(sl->uploads, i));
    }
    vkDestroyCommandPool(vk->device, vk->pool, NULL);
    block_free(vk, vk->status);
    block_free(vk, vk->dummy);
    block_free(vk, vk->staging);
    if (vk->blocks) {
      for (guint i = 0; i < vk->blocks->len; i++)
        block_free(vk, g_ptr_array_index(vk->blocks, i));
      g_ptr_array_free(vk->blocks, TRUE);
    }
    vkDestroyDevice(vk->device, NULL);
  }
  for (int k = 0; k < N_SLOTS; k++) {
    if (vk->slots[k].held)
      g_ptr_array_free(vk->slots[k].held, TRUE); /* what a dead device may still use is kept */
    if (vk->slots[k].uploads)
      g_ptr_array_free(vk->slots[k].uploads, TRUE);
  }
  if (vk->release)
    g_ptr_array_free(vk->release, TRUE);
  if (vk->messenger) {
    PFN_vkDestroyDebugUtilsMessengerEXT destroy =
        (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            vk->instance, "vkDestroyDebugUtilsMessengerEXT");
    if (destroy)
      destroy(vk->instance, vk->messenger, NULL);
  }
  if (vk->instance)
    vkDestroyInstance(vk->instance, NULL);
  g_free(vk->pipe_cache_path);
  g_free(vk->dead);
  g_mutex_clear(&vk->lock);
  g_free(vk);
}

static const MexdBackendVTable vk_vtable = {
    .destroy = vk_destroy,
    .storage_new = vk_storage_new,
    .storage_new_host = vk_storage_new_host,
    .storage_free = vk_storage_free,
    .write = vk_write,
    .read = vk_read,
    .fill_zero = vk_fill_zero,
    .sync = vk_sync,
    .flush = vk_flush,
};

static void log_device(VkBackend *vk, gboolean f16_storage, gboolean f16_arith)
{
  VkPhysicalDeviceLimits *l = &vk->props.limits;
  uint32_t v = vk->props.apiVersion;
  mexd_debug("vulkan: using %s (%s), Vulkan %u.%u.%u, driver version 0x%x", vk->props.deviceName,
             type_name(vk->props.deviceType), VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
             VK_API_VERSION_PATCH(v), vk->props.driverVersion);
  mexd_debug("vulkan: limits: maxStorageBufferRange %u, maxMemoryAllocationSize %" G_GUINT64_FORMAT
             ", maxComputeSharedMemorySize %u, maxComputeWorkGroupCount %ux%ux%u, "
             "maxComputeWorkGroupInvocations %u, subgroup size %u, "
             "minStorageBufferOffsetAlignment %" G_GUINT64_FORMAT ", maxPushConstantsSize %u",
             l->maxStorageBufferRange, (guint64)vk->block_size, l->maxComputeSharedMemorySize,
             l->maxComputeWorkGroupCount[0], l->maxComputeWorkGroupCount[1],
             l->maxComputeWorkGroupCount[2], l->maxComputeWorkGroupInvocations,
             vk->limits.subgroup_size, (guint64)l->minStorageBufferOffsetAlignment,
             l->maxPushConstantsSize);
  mexd_debug("vulkan: features: storageBuffer16BitAccess %s, shaderFloat16 %s, "
             "bufferDeviceAddress %s, memory %s",
             f16_storage ? "on" : "off", f16_arith ? "available" : "absent",
             vk->has_bda ? (vk->force_bda ? "on (forced for every dispatch)" : "on") : "off",
             vk->mem_mappable ? "host-visible (direct copies)" : "device-local (staged copies)");
}

MexdBackend *mexd_vulkan_backend_new(int index, GError **error)
{
  VkBackend *vk = g_new0(VkBackend, 1);
  MexdBackend *be = &vk->base;
  g_autofree VkPhysicalDevice *pds = NULL;
  be->vt = &vk_vtable;
  be->kind = MEXD_BACKEND_VULKAN;
  be->ref_count = 1;
  g_mutex_init(&vk->lock);
  vk->release = g_ptr_array_new();
  for (int k = 0; k < N_SLOTS; k++) {
    vk->slots[k].held = g_ptr_array_new();
    vk->slots[k].uploads = g_ptr_array_new();
  }

  if (create_instance(&vk->instance, &vk->messenger, error) != VK_SUCCESS) {
    vk->instance = VK_NULL_HANDLE;
    goto fail;
  }
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(vk->instance, &n, NULL);
  if (n == 0) {
    g_set_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND,
                "no Vulkan device found (install a driver; Debian: mesa-vulkan-drivers gives "
                "lavapipe)");
    goto fail;
  }
  pds = g_new0(VkPhysicalDevice, n);
  vkEnumeratePhysicalDevices(vk->instance, &n, pds);
  if (index >= 0) {
    if ((uint32_t)index >= n) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_NOT_FOUND,
                  "vulkan:%d does not exist: this machine has %u Vulkan device(s)", index, n);
      goto fail;
    }
    const char *why = device_unsuitable(pds[index]);
    if (why) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(pds[index], &p);
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED, "vulkan:%d (%s) cannot be used: %s",
                  index, p.deviceName, why);
      goto fail;
    }
  } else {
    int best_rank = 99;
    for (uint32_t i = 0; i < n; i++) {
      if (device_unsuitable(pds[i]))
        continue;
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(pds[i], &p);
      if (type_rank(p.deviceType) < best_rank) {
        best_rank = type_rank(p.deviceType);
        index = (int)i;
      }
    }
    if (index < 0) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED,
                  "none of the %u Vulkan device(s) supports Vulkan 1.2 compute with "
                  "VK_KHR_push_descriptor",
                  n);
      goto fail;
    }
  }
  vk->phys = pds[index];
  vkGetPhysicalDeviceProperties(vk->phys, &vk->props);
  vk->queue_family = (uint32_t)compute_queue_family(vk->phys);

  /* features: 16-bit storage when present */
  VkPhysicalDeviceVulkan12Features f12 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceVulkan11Features f11 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                  .pNext = &f11};
  vkGetPhysicalDeviceFeatures2(vk->phys, &f2);
  gboolean f16_storage = f11.storageBuffer16BitAccess;
  gboolean f16_arith = f12.shaderFloat16;
  vk->has_bda = f12.bufferDeviceAddress && f2.features.shaderInt64 && !g_getenv("MEXD_VK_NO_BDA");
  VkPhysicalDeviceVulkan12Features e12 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
      .shaderFloat16 = f16_arith,
      .bufferDeviceAddress = vk->has_bda};
  VkPhysicalDeviceVulkan11Features e11 = {.sType =
                                              VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                          .pNext = &e12,
                                          .storageBuffer16BitAccess = f16_storage};
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
      .queueFamilyIndex = vk->queue_family,
      .queueCount = 1,
      .pQueuePriorities = &prio,
  };
  const char *exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  VkPhysicalDeviceFeatures ef = {.shaderInt64 = vk->has_bda};
  VkDeviceCreateInfo dci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
      .pNext = &e11,
      .pEnabledFeatures = &ef,
      .queueCreateInfoCount = 1,
      .pQueueCreateInfos = &qci,
      .enabledExtensionCount = 1,
      .ppEnabledExtensionNames = exts,
  };
  VkResult r = vkCreateDevice(vk->phys, &dci, NULL, &vk->device);
  if (r != VK_SUCCESS) {
    vk->device = VK_NULL_HANDLE;
    VK_FAIL(error, r, "vkCreateDevice");
    goto fail;
  }
  vkGetDeviceQueue(vk->device, vk->queue_family, 0, &vk->queue);
  vk->push_descriptor =
      (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(vk->device, "vkCmdPushDescriptorSetKHR");

  /* limits */
  VkPhysicalDeviceMaintenance3Properties m3 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceSubgroupProperties sg = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &m3};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                    .pNext = &sg};
  vkGetPhysicalDeviceProperties2(vk->phys, &p2);
  VkPhysicalDeviceLimits *l = &vk->props.limits;
  vk->limits.subgroup_size = sg.subgroupSize;
  vk->limits.max_shared_memory = l->maxComputeSharedMemorySize;
  memcpy(vk->limits.max_group_count, l->maxComputeWorkGroupCount, sizeof(uint32_t) * 3);
  vk->limits.max_group_invocations = l->maxComputeWorkGroupInvocations;
  vk->limits.max_storage_range = l->maxStorageBufferRange;
  vk->limits.discrete = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU;
  vk->limits.is_gpu =
      vk->limits.discrete || vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
  if (g_getenv("MEXD_VK_EMULATE_DISCRETE")) {
    /* test aid: take the discrete-GPU paths (staged copies, large GEMM tiles) on any device */
    vk->limits.discrete = TRUE;
    vk->limits.is_gpu = TRUE;
  }
  vk->offset_align = MAX(l->minStorageBufferOffsetAlignment, 4);
  vk->block_size = MIN(BLOCK_SIZE_DEFAULT, m3.maxMemoryAllocationSize);
  /* with buffer device addresses a tensor may fill one allocation; 2 GiB keeps every element
   * index (and the index arithmetic of the shaders) inside 32 bits */
  be->max_tensor_bytes = vk->has_bda ? MIN((size_t)2 << 30, (size_t)m3.maxMemoryAllocationSize)
                                     : MIN((size_t)l->maxStorageBufferRange,
                                           (size_t)m3.maxMemoryAllocationSize);
  vk->force_bda = vk->has_bda && g_strcmp0(g_getenv("MEXD_VK_FORCE_BDA"), "1") == 0;
  be->has_f16 = f16_storage;

  /* memory types: device-local for tensors (mapped directly unless on a discrete GPU) */
  {
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = 4096,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    VkBuffer probe;
    vkCreateBuffer(vk->device, &bci, NULL, &probe);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->device, probe, &req);
    vkDestroyBuffer(vk->device, probe, NULL);
    const VkMemoryPropertyFlags hv =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    gboolean found = FALSE;
    if (!vk->limits.discrete &&
        find_mem_type(vk, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv, 0,
                      &vk->mem_type)) {
      vk->mem_mappable = TRUE;
      found = TRUE;
    }
    if (!found)
      found = find_mem_type(vk, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0,
                            &vk->mem_type);
    if (!found && find_mem_type(vk, req.memoryTypeBits, hv, 0, &vk->mem_type)) {
      vk->mem_mappable = TRUE;
      found = TRUE;
    }
    if (!find_mem_type(vk, req.memoryTypeBits, hv | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0,
                       &vk->staging_type) &&
        !find_mem_type(vk, req.memoryTypeBits, hv, 0, &vk->staging_type))
      found = FALSE;
    if (!found) {
      g_set_error(error, MEXD_ERROR, MEXD_ERROR_UNSUPPORTED,
                  "%s has no usable memory type for storage buffers", vk->props.deviceName);
      goto fail;
    }
    if (vk->mem_mappable) {
      /* a mapped type that is not coherent would need flushes: refuse it up front */
      VkPhysicalDeviceMemoryProperties mp;
      vkGetPhysicalDeviceMemoryProperties(vk->phys, &mp);
      if (!(mp.memoryTypes[vk->mem_type].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT))
        vk->mem_mappable = FALSE;
    }
  }
  vk->blocks = g_ptr_array_new();

  /* layouts, cache, commands */
  {
    VkDescriptorSetLayoutBinding b[MEXD_VK_MAX_BINDINGS + 1];
    for (int i = 0; i <= MEXD_VK_MAX_BINDINGS; i++)
      b[i] = (VkDescriptorSetLayoutBinding){(uint32_t)i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1,
                                            VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
        .bindingCount = MEXD_VK_MAX_BINDINGS + 1,
        .pBindings = b,
    };
    r = vkCreateDescriptorSetLayout(vk->device, &lci, NULL, &vk->set_layout);
    if (r != VK_SUCCESS) {
      VK_FAIL(error, r, "vkCreateDescriptorSetLayout");
      goto fail;
    }
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0,
                               MIN(MEXD_VK_MAX_PUSH, l->maxPushConstantsSize)};
    VkPipelineLayoutCreateInfo plci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &vk->set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pcr,
    };
    r = vkCreatePipelineLayout(vk->device, &plci, NULL, &vk->pipe_layout);
    if (r != VK_SUCCESS) {
      VK_FAIL(error, r, "vkCreatePipelineLayout");
      goto fail;
    }
  }
  {
    GString *uuid = g_string_new(NULL);
    for (int i = 0; i < (int)VK_UUID_SIZE; i++)
      g_string_append_printf(uuid, "%02x", vk->props.pipelineCacheUUID[i]);
    vk->pipe_cache_path =
        g_build_filename(g_get_user_cache_dir(), "mexd", "pipelines", uuid->str, NULL);
    g_string_free(uuid, TRUE);
    g_autofree char *data = NULL;
    gsize len = 0;
    if (g_getenv("MEXD_NO_PIPELINE_CACHE") ||
        !g_file_get_contents(vk->pipe_cache_path, &data, &len, NULL))
      len = 0;
    VkPipelineCacheCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = len,
        .pInitialData = len ? data : NULL,
    };
    if (vkCreatePipelineCache(vk->device, &pci, NULL, &vk->pipe_cache) != VK_SUCCESS) {
      pci.initialDataSize = 0; /* a stale or corrupt cache file: start empty */
      pci.pInitialData = NULL;
      vkCreatePipelineCache(vk->device, &pci, NULL, &vk->pipe_cache);
    }
    if (g_getenv("MEXD_NO_PIPELINE_CACHE"))
      g_clear_pointer(&vk->pipe_cache_path, g_free);
  }
  vk->pipelines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  vk->modules = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  {
    VkCommandPoolCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = vk->queue_family,
    };
    r = vkCreateCommandPool(vk->device, &cpci, NULL, &vk->pool);
    if (r != VK_SUCCESS) {
      VK_FAIL(error, r, "vkCreateCommandPool");
      goto fail;
    }
    for (int k = 0; k < N_SLOTS; k++) {
      VkCommandBufferAllocateInfo cai = {
          .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
          .commandPool = vk->pool,
          .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
          .commandBufferCount = 1,
      };
      r = vkAllocateCommandBuffers(vk->device, &cai, &vk->slots[k].cmd);
      if (r != VK_SUCCESS) {
        VK_FAIL(error, r, "vkAllocateCommandBuffers");
        goto fail;
      }
      VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      r = vkCreateFence(vk->device, &fci, NULL, &vk->slots[k].fence);
      if (r != VK_SUCCESS) {
        VK_FAIL(error, r, "vkCreateFence");
        goto fail;
      }
    }
  }
  vk->status = block_new(vk, 256, TRUE, error);
  if (!vk->status)
    goto fail;
  memset(vk->status->map, 0, 256);
  vk->dummy = block_new(vk, 256, FALSE, error);
  if (!vk->dummy)
    goto fail;
  {
    const char *t = g_getenv("MEXD_VK_TIMEOUT");
    guint64 secs = t ? g_ascii_strtoull(t, NULL, 10) : 0;
    vk->timeout_ns = (secs ? secs : 600) * 1000000000ull;
  }
  be->name = g_strdup_printf("vulkan:%d %s", index, vk->props.deviceName);
  log_device(vk, f16_storage, f16_arith);
  return be;

fail:
  vk_destroy(be);
  return NULL;
}
