/* backbone.h: tile feature extractors ("backbones") on a backend — issue 4.
 *
 * A backbone file is a safetensors file with `mexd.format` = "mexd-backbone/1" and its
 * configuration in `mexd.config` (docs/MODEL-FORMAT.md), made by tools/convert.py from the
 * user's PyTorch state dict; the tensors keep the PyTorch names.  Loading checks every tensor's
 * name, dtype and shape against the configuration and refuses tensors no layer takes.
 *
 * Architectures built so far: "resnet50-trunc" (torchvision's ResNet-50 through layer3, global
 * average pooling → 1024-d; batch norm folded into the convolutions at load; `blocks` and `width`
 * may describe narrower/shorter variants of the same family, which the tests use); "vit-s16",
 * "vit-b16", "vit-l16" (timm's VisionTransformer: 16×16 patch embedding, a class token, learned
 * position embedding, pre-norm blocks with optional layer scale as in UNI, final norm, the class
 * token as output: 384/768/1024-d; `dim`, `depth`, `heads` may describe smaller variants);
 * "ctranspath" (TransPath's Swin-T with a convolutional stem: window attention with relative
 * position bias, shifted windows, patch merging, the mean of the final tokens → 768-d; smaller
 * variants through `embed_dim`, `depths`, `heads`, `window`).
 *
 * Computation: the chosen dtype (f32, or f16 storage with f32 accumulation) for weights and
 * activations; tiles arrive as 8-bit RGB and are preprocessed on the device (mexd_image_prep:
 * bytes / 255, antialiased bilinear resize to input_size, mean/std from the file). */
#pragma once

#include "nn/nn.h"

G_BEGIN_DECLS

#define MEXD_BACKBONE_FORMAT "mexd-backbone/1"

typedef struct {
  char *arch;       /* "resnet50-trunc" */
  int input_size;   /* tiles are resized to input_size × input_size */
  float mean[3], std[3];
  int output_dim;   /* features per tile */
  int blocks[3];    /* resnet: bottleneck blocks in layer1..3 (3, 4, 6) */
  int width;        /* resnet: stem width (64); layer k has width·2^(k−1) planes, 4× out */
  gboolean is_vit;
  int dim, depth, heads, patch, mlp_ratio; /* vit: 384/768/1024, 12/12/24, 6/12/16, 16, 4 */
  gboolean layer_scale;                    /* vit: blocks have ls1.gamma / ls2.gamma */
  double ln_eps;                           /* vit: 1e-6 (timm); ctranspath: 1e-5 */
  gboolean is_swin;                        /* ctranspath */
  int embed_dim, depths[4], stage_heads[4], window; /* ctranspath: 96, 2 2 6 2, 3 6 12 24, 7 */
} MexdBackboneConfig;

typedef struct _MexdBackbone MexdBackbone;

/* What a backbone computes in.  fp32; fp16 (f16 weights and activations, f32 accumulation: the
 * Vulkan backends' fast path); bf16 (cpu backend only, through oneDNN: bf16 weights and
 * activations on AVX512-BF16/AMX, f32 accumulation; its tensors in and out stay f32). */
typedef enum {
  MEXD_PRECISION_FP32,
  MEXD_PRECISION_FP16,
  MEXD_PRECISION_BF16,
} MexdPrecision;

/* "fp32"/"f32", "fp16"/"f16", "bf16" → *out; FALSE for anything else. */
gboolean mexd_precision_parse(const char *name, MexdPrecision *out);
const char *mexd_precision_name(MexdPrecision p);

/* Loads a backbone in a precision, as the tools and elements ask for it: fp16 on the cpu backend
 * runs as bf16 (a one-line message says so; the cpu has no fast fp16); bf16 on a Vulkan device,
 * or on a cpu without AVX512-BF16/AMX or a build without oneDNN, is refused
 * (MEXD_ERROR_UNSUPPORTED, saying what to use instead). */
MexdBackbone *mexd_backbone_load_precision(const char *path, MexdBackend *be,
                                           MexdPrecision precision, GError **error);
MexdPrecision mexd_backbone_precision(const MexdBackbone *b);
/* TRUE when precision=bf16 runs here (a build with oneDNN on a CPU with AVX512-BF16 or AMX),
 * else FALSE with an error saying why. */
gboolean mexd_backbone_bf16_supported(GError **error);

/* Loads a backbone file onto `be` in `dtype` (MEXD_DTYPE_F32 or MEXD_DTYPE_F16; f16 needs a
 * backend with f16 storage; on the cpu backend f16 is the widening reference path). */
MexdBackbone *mexd_backbone_load(const char *path, MexdBackend *be, MexdDType dtype,
                                 GError **error);
void mexd_backbone_free(MexdBackbone *b);
const MexdBackboneConfig *mexd_backbone_config(const MexdBackbone *b);
MexdDType mexd_backbone_dtype(const MexdBackbone *b);
MexdBackend *mexd_backbone_backend(const MexdBackbone *b);

/* Features [B, output_dim] (in the backbone's dtype, on its backend) of preprocessed input
 * x [B, 3, input_size, input_size].  Intermediates go to `trace` (resnet: "stem",
 * "layer1".."layer3"; vit: "tokens" after the position embedding, "block0".."block{depth−1}";
 * ctranspath: "stem" after the stem's norm, "stage0".."stage3" after each stage's merging). */
MexdTensor *mexd_backbone_forward(MexdBackbone *b, MexdTensor *x, MexdTrace *trace,
                                  GError **error);
/* The whole path from bytes: B tiles of h×w 8-bit RGB (row-major, 3 bytes a pixel, tile after
 * tile) → features written to out [B·output_dim] as f32.  The input goes to `trace` as "input". */
gboolean mexd_backbone_embed(MexdBackbone *b, const uint8_t *rgb, int64_t batch, int64_t h,
                             int64_t w, float *out, MexdTrace *trace, GError **error);

/* The same in two halves, so that batches overlap: _submit records the batch and submits it
 * without waiting (the bytes are taken at once: `rgb` may be reused as soon as it returns);
 * mexd_embed_job_finish waits for that batch alone, writes its features to `out`
 * [batch·output_dim] and frees the job.  Submit batch i+1 before finishing batch i and the
 * device computes one batch while the caller reads the next one's tiles and uploads them (at
 * most two batches are in flight: a third submission waits for the oldest).  Jobs of one
 * backbone are finished in the order they were submitted; mexd_embed_job_free drops one
 * unfinished (e.g. after an error elsewhere). */
typedef struct _MexdEmbedJob MexdEmbedJob;
MexdEmbedJob *mexd_backbone_embed_submit(MexdBackbone *b, const uint8_t *rgb, int64_t batch,
                                         int64_t h, int64_t w, MexdTrace *trace, GError **error);
gboolean mexd_embed_job_finish(MexdEmbedJob *job, float *out, GError **error);
void mexd_embed_job_free(MexdEmbedJob *job);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdBackbone, mexd_backbone_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdEmbedJob, mexd_embed_job_free)

G_END_DECLS
