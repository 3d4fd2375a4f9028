/* backbone.c: backbone files and the ResNet-trunc family (backbone.h).
 *
 * ResNet-trunc as torchvision builds ResNet-50 (v1.5: the stride of a downsampling bottleneck is
 * on its 3×3 convolution): stem conv 7×7/2 + BN + ReLU, max-pool 3×3/2 (padding 1), layer1..3 of
 * bottlenecks (1×1 → 3×3 → 1×1, expansion 4, a 1×1 downsample with BN on the first block of a
 * layer), global average pooling.  Each convolution's batch norm (eval mode, ε = 1e-5,
 * torchvision's default) is folded at load: w' = w·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε), computed in
 * double and rounded once to the compute dtype.  The average pooling is a GEMM of the [B·C, H·W]
 * activations with a column of 1/(H·W). */
#include "nn/backbone.h"

#include "backend/dnnl.h"
#include "core/error.h"
#include "nn/backbone-dnnl.h"
#include "io/safetensors.h"
#include "nn/config-json.h"

#include <math.h>
#include <string.h>

#define BN_EPS 1e-5

typedef struct {
  MexdTensor *w, *b; /* [cout, cin, k, k], [cout] (batch norm folded in) */
  int cin, cout, k, stride, pad;
} Conv;

typedef struct {
  Conv c1, c2, c3, down;
  gboolean has_down;
} Bottleneck;

typedef struct {
  MexdTensor *n1w, *n1b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1;
  MexdTensor *n2w, *n2b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ls2;
  MexdDnnlLinear *dl[4]; /* oneDNN's qkv, proj, fc1 (+ GELU), fc2 when it runs them, else NULL */
  MexdDnnlBmm *bmm[2];   /* and the attention's q·kᵀ and att·v */
} VitBlock;

/* What a Swin block adds to a ViT block: its window, shift, relative position bias expanded to
 * [heads, N·N] (N = window²) and, for shifted windows, the −100 mask [nW, 1, N·N]. */
typedef struct {
  int ws, shift, res, heads;
  MexdTensor *bias, *mask;
} SwinBlockX;

struct _MexdBackbone {
  MexdBackboneConfig cfg;
  MexdBackend *be;
  MexdDType dtype;
  MexdPrecision precision;
  char *path;
#ifdef MEXD_HAVE_DNNL
  MexdResnetDnnl *dnnl; /* the ResNet trunk through oneDNN (cpu backend, f32 tensors) */
#endif
  /* resnet */
  Conv stem;
  Bottleneck *blocks; /* blocks[0] + blocks[1] + blocks[2] */
  int n_blocks;
  /* vit (and the blocks of ctranspath) */
  MexdTensor *patch_w, *patch_b, *cls, *pos, *norm_w, *norm_b;
  VitBlock *vit;
  /* ctranspath */
  Conv stem2[3]; /* conv 3×3/2 + BN + ReLU twice (folded), then the 1×1 projection */
  MexdTensor *stem_nw, *stem_nb;
  SwinBlockX *swin;     /* per block: bias, mask, window */
  MexdTensor *merge_nw[3], *merge_nb[3], *merge_w[3];
  MexdDnnlLinear *merge_dl[3];
  int n_swin;
  /* constants made before a batch is recorded (writes in the middle of recorded work would split
   * the batch into several submissions): resnet's pooling column; for batch size prep_b, vit's
   * class-token rows, swin's window permutations [stage][shifted][forward, inverse] and
   * patch-merging gathers */
  MexdTensor *pool_col;
  int64_t prep_b;
  MexdTensor *cls_idx, *win_idx[4][2][2], *merge_idx[3][4];
};

static void prep_clear(MexdBackbone *b)
{
  g_clear_pointer(&b->cls_idx, mexd_tensor_unref);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 2; k++)
        g_clear_pointer(&b->win_idx[i][j][k], mexd_tensor_unref);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++)
      g_clear_pointer(&b->merge_idx[i][j], mexd_tensor_unref);
  b->prep_b = 0;
}

static void conv_clear(Conv *c);

static void vit_clear(MexdBackbone *b)
{
  MexdTensor **top[] = {&b->patch_w, &b->patch_b, &b->cls, &b->pos, &b->norm_w, &b->norm_b};
  for (size_t i = 0; i < G_N_ELEMENTS(top); i++)
    g_clear_pointer(top[i], mexd_tensor_unref);
  for (int i = 0; b->vit && i < (b->cfg.is_swin ? b->n_swin : b->cfg.depth); i++) {
    VitBlock *v = &b->vit[i];
    MexdTensor **t[] = {&v->n1w, &v->n1b, &v->qkv_w, &v->qkv_b, &v->proj_w, &v->proj_b, &v->ls1,
                        &v->n2w, &v->n2b, &v->fc1_w, &v->fc1_b, &v->fc2_w, &v->fc2_b, &v->ls2};
    for (size_t j = 0; j < G_N_ELEMENTS(t); j++)
      g_clear_pointer(t[j], mexd_tensor_unref);
#ifdef MEXD_HAVE_DNNL
    for (int j = 0; j < 4; j++)
      g_clear_pointer(&v->dl[j], mexd_dnnl_linear_free);
    for (int j = 0; j < 2; j++)
      g_clear_pointer(&v->bmm[j], mexd_dnnl_bmm_free);
#endif
  }
  g_clear_pointer(&b->vit, g_free);
  for (int i = 0; i < 3; i++) {
    conv_clear(&b->stem2[i]);
    g_clear_pointer(&b->merge_nw[i], mexd_tensor_unref);
    g_clear_pointer(&b->merge_nb[i], mexd_tensor_unref);
    g_clear_pointer(&b->merge_w[i], mexd_tensor_unref);
#ifdef MEXD_HAVE_DNNL
    g_clear_pointer(&b->merge_dl[i], mexd_dnnl_linear_free);
#endif
  }
  g_clear_pointer(&b->stem_nw, mexd_tensor_unref);
  g_clear_pointer(&b->stem_nb, mexd_tensor_unref);
  for (int i = 0; b->swin && i < b->n_swin; i++) {
    g_clear_pointer(&b->swin[i].bias, mexd_tensor_unref);
    g_clear_pointer(&b->swin[i].mask, mexd_tensor_unref);
  }
  g_clear_pointer(&b->swin, g_free);
}

static void conv_clear(Conv *c)
{
  g_clear_pointer(&c->w, mexd_tensor_unref);
  g_clear_pointer(&c->b, mexd_tensor_unref);
}

void mexd_backbone_free(MexdBackbone *b)
{
  if (!b)
    return;
  conv_clear(&b->stem);
  for (int i = 0; i < b->n_blocks; i++) {
    conv_clear(&b->blocks[i].c1);
    conv_clear(&b->blocks[i].c2);
    conv_clear(&b->blocks[i].c3);
    conv_clear(&b->blocks[i].down);
  }
  g_free(b->blocks);
#ifdef MEXD_HAVE_DNNL
  mexd_resnet_dnnl_free(b->dnnl);
#endif
  vit_clear(b);
  prep_clear(b);
  g_clear_pointer(&b->pool_col, mexd_tensor_unref);
  g_free(b->cfg.arch);
  g_free(b->path);
  if (b->be)
    mexd_backend_unref(b->be);
  g_free(b);
}

const MexdBackboneConfig *mexd_backbone_config(const MexdBackbone *b)
{
  return &b->cfg;
}

MexdDType mexd_backbone_dtype(const MexdBackbone *b)
{
  return b->dtype;
}

MexdBackend *mexd_backbone_backend(const MexdBackbone *b)
{
  return b->be;
}

/* ---- configuration ---- */

static gboolean get_triple(JsonObject *o, const char *key, float out[3], gboolean positive,
                           const char *file, GError **error)
{
  JsonArray *a = mexd_cfg_get_array(o, key, 3, file, error);
  if (!a)
    return FALSE;
  for (guint i = 0; i < 3; i++) {
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_VALUE(n) || (json_node_get_value_type(n) != G_TYPE_DOUBLE &&
                                      json_node_get_value_type(n) != G_TYPE_INT64))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %s[%u] is not a number", file, key, i);
    out[i] = (float)json_node_get_double(n);
    if (!isfinite(out[i]) || (positive && !(out[i] > 0)))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %s[%u] = %g is not %s", file, key, i,
                       out[i], positive ? "a positive number" : "finite");
  }
  return TRUE;
}

static gboolean parse_config(MexdBackboneConfig *cfg, const char *json, const char *file,
                             GError **error)
{
  JsonObject *o;
  g_autoptr(JsonNode) parser = mexd_cfg_parse(json, file, &o, error);
  if (!parser)
    return FALSE;
  const char *arch = json_object_get_string_member_with_default(o, "arch", NULL);
  if (!arch)
    return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: the configuration has no \"arch\" string",
                     file);
  cfg->arch = g_strdup(arch);
  static const struct {
    const char *arch;
    int dim, depth, heads;
  } vits[] = {{"vit-s16", 384, 12, 6}, {"vit-b16", 768, 12, 12}, {"vit-l16", 1024, 24, 16}};
  for (size_t i = 0; i < G_N_ELEMENTS(vits); i++)
    if (g_str_equal(arch, vits[i].arch)) {
      static const char *const vkeys[] = {"arch", "input_size", "mean", "std", "output_dim",
                                          "dim", "depth", "heads", "patch", "mlp_ratio",
                                          "layer_scale", "ln_eps", NULL};
      cfg->is_vit = TRUE;
      if (!mexd_cfg_check_keys(o, vkeys, "configuration", file, error) ||
          !mexd_cfg_get_int(o, "input_size", 224, 16, 4096, &cfg->input_size, file, error) ||
          !mexd_cfg_get_int(o, "dim", vits[i].dim, 1, 1 << 14, &cfg->dim, file, error) ||
          !mexd_cfg_get_int(o, "depth", vits[i].depth, 1, 256, &cfg->depth, file, error) ||
          !mexd_cfg_get_int(o, "heads", vits[i].heads, 1, 256, &cfg->heads, file, error) ||
          !mexd_cfg_get_int(o, "patch", 16, 1, 1024, &cfg->patch, file, error) ||
          !mexd_cfg_get_int(o, "mlp_ratio", 4, 1, 64, &cfg->mlp_ratio, file, error) ||
          !mexd_cfg_get_num(o, "ln_eps", 1e-6, &cfg->ln_eps, file, error) ||
          !get_triple(o, "mean", cfg->mean, FALSE, file, error) ||
          !get_triple(o, "std", cfg->std, TRUE, file, error))
        return FALSE;
      JsonNode *ls = json_object_get_member(o, "layer_scale");
      if (ls && (!JSON_NODE_HOLDS_VALUE(ls) || json_node_get_value_type(ls) != G_TYPE_BOOLEAN))
        return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: layer_scale must be true or false", file);
      cfg->layer_scale = ls && json_node_get_boolean(ls);
      if (cfg->dim % cfg->heads || cfg->input_size % cfg->patch || !(cfg->ln_eps > 0))
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: dim %d must be a multiple of heads %d, input_size %d of patch %d, "
                         "and ln_eps positive",
                         file, cfg->dim, cfg->heads, cfg->input_size, cfg->patch);
      if (!mexd_cfg_get_int(o, "output_dim", cfg->dim, 1, 1 << 20, &cfg->output_dim, file,
                            error))
        return FALSE;
      if (cfg->output_dim != cfg->dim)
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: output_dim %d is not the ViT's dim %d (the class token)", file,
                         cfg->output_dim, cfg->dim);
      return TRUE;
    }
  if (g_str_equal(arch, "ctranspath")) {
    static const char *const ckeys[] = {"arch", "input_size", "mean", "std", "output_dim",
                                        "embed_dim", "depths", "heads", "window", "mlp_ratio",
                                        "ln_eps", NULL};
    static const int def_depths[4] = {2, 2, 6, 2}, def_heads[4] = {3, 6, 12, 24};
    cfg->is_swin = TRUE;
    if (!mexd_cfg_check_keys(o, ckeys, "configuration", file, error) ||
        !mexd_cfg_get_int(o, "input_size", 224, 16, 4096, &cfg->input_size, file, error) ||
        !mexd_cfg_get_int(o, "embed_dim", 96, 8, 4096, &cfg->embed_dim, file, error) ||
        !mexd_cfg_get_int(o, "window", 7, 1, 64, &cfg->window, file, error) ||
        !mexd_cfg_get_int(o, "mlp_ratio", 4, 1, 64, &cfg->mlp_ratio, file, error) ||
        !mexd_cfg_get_num(o, "ln_eps", 1e-5, &cfg->ln_eps, file, error) ||
        !get_triple(o, "mean", cfg->mean, FALSE, file, error) ||
        !get_triple(o, "std", cfg->std, TRUE, file, error))
      return FALSE;
    if (!mexd_cfg_get_int_array(o, "depths", 4, def_depths, 1, 64, cfg->depths, file, error) ||
        !mexd_cfg_get_int_array(o, "heads", 4, def_heads, 1, 64, cfg->stage_heads, file, error))
      return FALSE;
    int res = cfg->input_size / 4;
    if (cfg->input_size % 32 || cfg->embed_dim % 8 || !(cfg->ln_eps > 0))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: input_size %d must be a multiple of 32 and embed_dim %d of 8", file,
                       cfg->input_size, cfg->embed_dim);
    for (int i = 0; i < 4; i++, res /= 2) {
      int ws = MIN(cfg->window, res);
      if (res % ws || ((cfg->embed_dim << i) % cfg->stage_heads[i]))
        return mexd_fail(error, MEXD_ERROR_FORMAT,
                         "%s: stage %d: resolution %d is not a multiple of the window %d, or "
                         "width %d of heads %d",
                         file, i, res, ws, cfg->embed_dim << i, cfg->stage_heads[i]);
    }
    if (!mexd_cfg_get_int(o, "output_dim", cfg->embed_dim * 8, 1, 1 << 20, &cfg->output_dim,
                          file, error))
      return FALSE;
    if (cfg->output_dim != cfg->embed_dim * 8)
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: output_dim %d is not 8 · embed_dim (%d)",
                       file, cfg->output_dim, cfg->embed_dim * 8);
    return TRUE;
  }
  if (!g_str_equal(arch, "resnet50-trunc"))
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: backbone architecture \"%s\" is not supported by this build "
                     "(it runs resnet50-trunc, vit-s16, vit-b16, vit-l16, ctranspath)",
                     file, arch);
  static const char *const keys[] = {"arch", "input_size", "mean", "std", "output_dim",
                                     "blocks", "width", NULL};
  if (!mexd_cfg_check_keys(o, keys, "configuration", file, error) ||
      !mexd_cfg_get_int(o, "input_size", 224, 32, 4096, &cfg->input_size, file, error) ||
      !mexd_cfg_get_int(o, "width", 64, 1, 1024, &cfg->width, file, error) ||
      !get_triple(o, "mean", cfg->mean, FALSE, file, error) ||
      !get_triple(o, "std", cfg->std, TRUE, file, error))
    return FALSE;
  static const int def_blocks[3] = {3, 4, 6};
  if (!mexd_cfg_get_int_array(o, "blocks", 3, def_blocks, 1, 64, cfg->blocks, file, error))
    return FALSE;
  int expect = cfg->width * 16;
  if (!mexd_cfg_get_int(o, "output_dim", expect, 1, 1 << 20, &cfg->output_dim, file, error))
    return FALSE;
  if (cfg->output_dim != expect)
    return mexd_fail(error, MEXD_ERROR_FORMAT,
                     "%s: output_dim %d does not match a ResNet-trunc of width %d (%d)", file,
                     cfg->output_dim, cfg->width, expect);
  return TRUE;
}

/* ---- loading ---- */

static gboolean load_conv_bn(Conv *c, MexdBackbone *bb, MexdWeights *w, const char *conv,
                             const char *bn, int cin, int cout, int k, int stride, int pad,
                             GError **error)
{
  *c = (Conv){.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = pad};
  g_autofree char *nw = g_strdup_printf("%s.weight", conv);
  g_autofree char *ng = g_strdup_printf("%s.weight", bn), *nb = g_strdup_printf("%s.bias", bn);
  g_autofree char *nm = g_strdup_printf("%s.running_mean", bn);
  g_autofree char *nv = g_strdup_printf("%s.running_var", bn);
  const int64_t ws[4] = {cout, cin, k, k}, cs[1] = {cout};
  g_autofree float *W = mexd_weights_get_host(w, nw, 4, ws, error);
  g_autofree float *G = W ? mexd_weights_get_host(w, ng, 1, cs, error) : NULL;
  g_autofree float *B = G ? mexd_weights_get_host(w, nb, 1, cs, error) : NULL;
  g_autofree float *M = B ? mexd_weights_get_host(w, nm, 1, cs, error) : NULL;
  g_autofree float *V = M ? mexd_weights_get_host(w, nv, 1, cs, error) : NULL;
  if (!V)
    return FALSE;
  const int64_t per = (int64_t)cin * k * k;
  g_autofree float *bias = g_new(float, cout);
  for (int o = 0; o < cout; o++) {
    if (!(V[o] >= 0) || !isfinite(V[o]))
      return mexd_fail(error, MEXD_ERROR_FORMAT, "%s: %s[%d] = %g is not a variance",
                       bb->path, nv, o, V[o]);
    double s = (double)G[o] / sqrt((double)V[o] + BN_EPS);
    for (int64_t i = 0; i < per; i++)
      W[o * per + i] = (float)(W[o * per + i] * s);
    bias[o] = (float)(B[o] - M[o] * s);
  }
  c->w = mexd_tensor_new_from_f32(bb->be, bb->dtype, 4, ws, W, error);
  c->b = c->w ? mexd_tensor_new_from_f32(bb->be, bb->dtype, 1, cs, bias, error) : NULL;
  return c->b != NULL;
}

static int64_t conv_out(int64_t n, int k, int s, int p)
{
  return (n + 2 * p - k) / s + 1;
}

static gboolean load_resnet(MexdBackbone *bb, MexdWeights *w, GError **error)
{
  const MexdBackboneConfig *c = &bb->cfg;
  /* the pooling column: 1/(H·W) of layer3's output (stem /2, pool /2, layer2 /2, layer3 /2) */
  int64_t side = conv_out(conv_out(conv_out(conv_out(c->input_size, 7, 2, 3), 3, 2, 1), 3, 2, 1),
                          3, 2, 1);
  g_autofree float *col = g_new(float, side * side);
  for (int64_t i = 0; i < side * side; i++)
    col[i] = 1.0f / (float)(side * side);
  if (!(bb->pool_col = mexd_tensor_new_from_f32(bb->be, bb->dtype, 2,
                                                (int64_t[]){side * side, 1}, col, error)))
    return FALSE;
  if (!load_conv_bn(&bb->stem, bb, w, "conv1", "bn1", 3, c->width, 7, 2, 3, error))
    return FALSE;
  bb->n_blocks = c->blocks[0] + c->blocks[1] + c->blocks[2];
  bb->blocks = g_new0(Bottleneck, bb->n_blocks);
  int inplanes = c->width, bi = 0;
  for (int L = 0; L < 3; L++) {
    int planes = c->width << L, stride = L == 0 ? 1 : 2;
    for (int i = 0; i < c->blocks[L]; i++, bi++) {
      Bottleneck *bl = &bb->blocks[bi];
      int s = i == 0 ? stride : 1;
      char p[64], q[64];
#define NM(buf, fmt) (g_snprintf(buf, sizeof buf, "layer%d.%d." fmt, L + 1, i), buf)
      if (!load_conv_bn(&bl->c1, bb, w, NM(p, "conv1"), NM(q, "bn1"), inplanes, planes, 1, 1, 0,
                        error) ||
          !load_conv_bn(&bl->c2, bb, w, NM(p, "conv2"), NM(q, "bn2"), planes, planes, 3, s, 1,
                        error) ||
          !load_conv_bn(&bl->c3, bb, w, NM(p, "conv3"), NM(q, "bn3"), planes, planes * 4, 1, 1,
                        0, error))
        return FALSE;
      bl->has_down = i == 0 && (s != 1 || inplanes != planes * 4);
      if (bl->has_down && !load_conv_bn(&bl->down, bb, w, NM(p, "downsample.0"),
                                        NM(q, "downsample.1"), inplanes, planes * 4, 1, s, 0,
                                        error))
        return FALSE;
#undef NM
      inplanes = planes * 4;
    }
  }
  return TRUE;
}

/* Weight `name` of exactly `shape`, in the backbone's dtype. */
static MexdTensor *get_w(MexdBackbone *bb, MexdWeights *w, const char *name, int ndim,
                         const int64_t *shape, GError **error)
{
  g_autofree float *h = mexd_weights_get_host(w, name, ndim, shape, error);
  return h ? mexd_tensor_new_from_f32(bb->be, bb->dtype, ndim, shape, h, error) : NULL;
}

/* The ViT-like parts of a block (`blocks.j.*` names under `prefix`). */
static gboolean load_block(MexdBackbone *bb, MexdWeights *w, VitBlock *v, const char *prefix,
                           int64_t D, int64_t F, gboolean ls, GError **error)
{
  char nm[96];
#define NB(s) (g_snprintf(nm, sizeof nm, "%s." s, prefix), nm)
#define W1(field, name, ...)                                                                       \
  if (!(field = get_w(bb, w, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)),                        \
                      (int64_t[])__VA_ARGS__, error)))                                             \
  return FALSE
  W1(v->n1w, NB("norm1.weight"), {D});
  W1(v->n1b, NB("norm1.bias"), {D});
  W1(v->qkv_w, NB("attn.qkv.weight"), {3 * D, D});
  W1(v->qkv_b, NB("attn.qkv.bias"), {3 * D});
  W1(v->proj_w, NB("attn.proj.weight"), {D, D});
  W1(v->proj_b, NB("attn.proj.bias"), {D});
  W1(v->n2w, NB("norm2.weight"), {D});
  W1(v->n2b, NB("norm2.bias"), {D});
  W1(v->fc1_w, NB("mlp.fc1.weight"), {F, D});
  W1(v->fc1_b, NB("mlp.fc1.bias"), {F});
  W1(v->fc2_w, NB("mlp.fc2.weight"), {D, F});
  W1(v->fc2_b, NB("mlp.fc2.bias"), {D});
  if (ls) {
    W1(v->ls1, NB("ls1.gamma"), {D});
    W1(v->ls2, NB("ls2.gamma"), {D});
  }
#undef W1
#undef NB
  return TRUE;
}

static gboolean load_vit(MexdBackbone *bb, MexdWeights *w, GError **error)
{
  const MexdBackboneConfig *c = &bb->cfg;
  const int64_t D = c->dim, P = c->patch, T = 1 + (c->input_size / P) * (c->input_size / P);
  const int64_t F = D * c->mlp_ratio;
#define W1(field, name, ...)                                                                       \
  if (!(field = get_w(bb, w, name, G_N_ELEMENTS(((int64_t[])__VA_ARGS__)),                        \
                      (int64_t[])__VA_ARGS__, error)))                                             \
  return FALSE
  W1(bb->patch_w, "patch_embed.proj.weight", {D, 3, P, P});
  W1(bb->patch_b, "patch_embed.proj.bias", {D});
  W1(bb->cls, "cls_token", {1, 1, D});
  W1(bb->pos, "pos_embed", {1, T, D});
  W1(bb->norm_w, "norm.weight", {D});
  W1(bb->norm_b, "norm.bias", {D});
  bb->vit = g_new0(VitBlock, c->depth);
  for (int i = 0; i < c->depth; i++) {
    char p[32];
    g_snprintf(p, sizeof p, "blocks.%d", i);
    if (!load_block(bb, w, &bb->vit[i], p, D, F, c->layer_scale, error))
      return FALSE;
  }
#undef W1
  return TRUE;
}

/* CTransPath: the folded conv stem, the blocks (with their bias tables expanded and shift masks),
 * the patch-merging layers and the final norm. */
static gboolean load_swin(MexdBackbone *bb, MexdWeights *w, GError **error)
{
  const MexdBackboneConfig *c = &bb->cfg;
  const int64_t E = c->embed_dim, e8 = E / 8;
  if (!load_conv_bn(&bb->stem2[0], bb, w, "patch_embed.proj.0", "patch_embed.proj.1", 3, (int)e8,
                    3, 2, 1, error) ||
      !load_conv_bn(&bb->stem2[1], bb, w, "patch_embed.proj.3", "patch_embed.proj.4", (int)e8,
                    (int)(2 * e8), 3, 2, 1, error))
    return FALSE;
  bb->stem2[2] = (Conv){.cin = (int)(2 * e8), .cout = (int)E, .k = 1, .stride = 1, .pad = 0};
  if (!(bb->stem2[2].w = get_w(bb, w, "patch_embed.proj.6.weight", 4,
                               (int64_t[]){E, 2 * e8, 1, 1}, error)) ||
      !(bb->stem2[2].b = get_w(bb, w, "patch_embed.proj.6.bias", 1, (int64_t[]){E}, error)) ||
      !(bb->stem_nw = get_w(bb, w, "patch_embed.norm.weight", 1, (int64_t[]){E}, error)) ||
      !(bb->stem_nb = get_w(bb, w, "patch_embed.norm.bias", 1, (int64_t[]){E}, error)))
    return FALSE;
  bb->n_swin = c->depths[0] + c->depths[1] + c->depths[2] + c->depths[3];
  bb->vit = g_new0(VitBlock, bb->n_swin);
  bb->swin = g_new0(SwinBlockX, bb->n_swin);
  int res = c->input_size / 4, bi = 0;
  for (int st = 0; st < 4; st++, res /= 2) {
    const int64_t D = E << st, nh = c->stage_heads[st];
    for (int j = 0; j < c->depths[st]; j++, bi++) {
      SwinBlockX *x = &bb->swin[bi];
      x->res = res;
      x->heads = (int)nh;
      x->ws = MIN(c->window, res);
      x->shift = (j % 2 == 1 && res > c->window) ? c->window / 2 : 0;
      char p[64];
      g_snprintf(p, sizeof p, "layers.%d.blocks.%d", st, j);
      if (!load_block(bb, w, &bb->vit[bi], p, D, D * c->mlp_ratio, FALSE, error))
        return FALSE;
      /* relative position bias [heads, N·N] from the table [(2ws−1)², heads] */
      const int ws = x->ws, N = ws * ws, span = 2 * ws - 1;
      char tn[96];
      g_snprintf(tn, sizeof tn, "%s.attn.relative_position_bias_table", p);
      g_autofree float *tab =
          mexd_weights_get_host(w, tn, 2, (int64_t[]){(int64_t)span * span, nh}, error);
      if (!tab)
        return FALSE;
      g_autofree float *bias = g_new(float, nh * N * N);
      for (int a = 0; a < N; a++)
        for (int bq = 0; bq < N; bq++) {
          int dy = a / ws - bq / ws + ws - 1, dx = a % ws - bq % ws + ws - 1;
          for (int h = 0; h < nh; h++)
            bias[(h * N + a) * N + bq] = tab[(dy * span + dx) * nh + h];
        }
      if (!(x->bias = mexd_tensor_new_from_f32(bb->be, bb->dtype, 2, (int64_t[]){nh, N * N}, bias,
                                               error)))
        return FALSE;
      if (x->shift) {
        /* regions of the shifted image (Swin's three slices per axis), −100 across regions */
        const int nwin = (res / ws) * (res / ws), s = x->shift;
        g_autofree float *mask = g_new(float, nwin * N * N);
        for (int wdx = 0; wdx < nwin; wdx++) {
          int wy = wdx / (res / ws), wx = wdx % (res / ws);
          int lab[4096];
          for (int a = 0; a < N; a++) {
            int yy = wy * ws + a / ws, xx = wx * ws + a % ws;
            int ry = yy < res - ws ? 0 : yy < res - s ? 1 : 2;
            int rx = xx < res - ws ? 0 : xx < res - s ? 1 : 2;
            lab[a] = ry * 3 + rx;
          }
          for (int a = 0; a < N; a++)
            for (int bq = 0; bq < N; bq++)
              mask[((int64_t)wdx * N + a) * N + bq] = lab[a] == lab[bq] ? 0.0f : -100.0f;
        }
        if (!(x->mask = mexd_tensor_new_from_f32(bb->be, bb->dtype, 3,
                                                 (int64_t[]){nwin, 1, N * N}, mask, error)))
          return FALSE;
      }
    }
    if (st < 3) {
      char nm[64];
      g_snprintf(nm, sizeof nm, "layers.%d.downsample.norm.weight", st);
      if (!(bb->merge_nw[st] = get_w(bb, w, nm, 1, (int64_t[]){4 * D}, error)))
        return FALSE;
      g_snprintf(nm, sizeof nm, "layers.%d.downsample.norm.bias", st);
      if (!(bb->merge_nb[st] = get_w(bb, w, nm, 1, (int64_t[]){4 * D}, error)))
        return FALSE;
      g_snprintf(nm, sizeof nm, "layers.%d.downsample.reduction.weight", st);
      if (!(bb->merge_w[st] = get_w(bb, w, nm, 2, (int64_t[]){2 * D, 4 * D}, error)))
        return FALSE;
    }
  }
  return (bb->norm_w = get_w(bb, w, "norm.weight", 1, (int64_t[]){E * 8}, error)) &&
         (bb->norm_b = get_w(bb, w, "norm.bias", 1, (int64_t[]){E * 8}, error));
}

#ifdef MEXD_HAVE_DNNL
static MexdDnnlConvW conv_w(const Conv *c)
{
  return (MexdDnnlConvW){c->w ? mexd_tensor_host_data(c->w) : NULL,
                         c->b ? mexd_tensor_host_data(c->b) : NULL,
                         c->cin, c->cout, c->k, c->stride, c->pad};
}

/* The ResNet trunk through oneDNN: always for bf16; for f32 unless MEXD_CPU_NO_DNNL=1 (the
 * tests' way to run the op-by-op path, which is the reference). */
static gboolean dnnl_f32_off(void)
{
  const char *v = g_getenv("MEXD_CPU_NO_DNNL");
  return (v && *v && strcmp(v, "0") != 0) || !mexd_dnnl_available();
}

static gboolean setup_dnnl(MexdBackbone *bb, GError **error)
{
  if (bb->precision != MEXD_PRECISION_BF16 && dnnl_f32_off())
    return TRUE;
  g_autofree MexdDnnlConvW *cw = g_new0(MexdDnnlConvW, 4 * (gsize)bb->n_blocks);
  for (int i = 0; i < bb->n_blocks; i++) {
    cw[4 * i] = conv_w(&bb->blocks[i].c1);
    cw[4 * i + 1] = conv_w(&bb->blocks[i].c2);
    cw[4 * i + 2] = conv_w(&bb->blocks[i].c3);
    cw[4 * i + 3] = conv_w(&bb->blocks[i].down); /* .w NULL without a downsample */
  }
  MexdDnnlConvW stem = conv_w(&bb->stem);
  bb->dnnl = mexd_resnet_dnnl_new(&stem, cw, bb->n_blocks, bb->cfg.blocks, bb->cfg.input_size,
                                  bb->precision == MEXD_PRECISION_BF16, error);
  return bb->dnnl != NULL;
}

static void *host_or_null(MexdTensor *t)
{
  return t ? mexd_tensor_host_data(t) : NULL;
}

/* The ViT / CTransPath linear layers (96% of a ViT-B/16's work) and the attention's batched
 * products through oneDNN's matmul: always for bf16; for f32 unless MEXD_CPU_NO_DNNL=1, as for
 * the ResNet trunk (measured 2026-12-03, chunks of 16 images: ViT-B/16 5.3 images/s against 4.5
 * with OpenBLAS's sgemm, CTransPath 10.3 against 8.9). */
static gboolean setup_dnnl_linears(MexdBackbone *bb, GError **error)
{
  const gboolean bf16 = bb->precision == MEXD_PRECISION_BF16;
  if (!bf16 && dnnl_f32_off())
    return TRUE;
  const int n = bb->cfg.is_swin ? bb->n_swin : bb->cfg.depth;
  for (int i = 0; i < n; i++) {
    VitBlock *vb = &bb->vit[i];
    MexdTensor *w[4] = {vb->qkv_w, vb->proj_w, vb->fc1_w, vb->fc2_w};
    MexdTensor *b[4] = {vb->qkv_b, vb->proj_b, vb->fc1_b, vb->fc2_b};
    vb->bmm[0] = mexd_dnnl_bmm_new(TRUE, bf16);
    vb->bmm[1] = mexd_dnnl_bmm_new(FALSE, bf16);
    for (int j = 0; j < 4; j++)
      if (!(vb->dl[j] = mexd_dnnl_linear_new(mexd_tensor_host_data(w[j]), host_or_null(b[j]),
                                             w[j]->shape[0], w[j]->shape[1], j == 2, bf16,
                                             error)))
        return FALSE;
  }
  for (int i = 0; bb->cfg.is_swin && i < 3; i++)
    if (!(bb->merge_dl[i] = mexd_dnnl_linear_new(mexd_tensor_host_data(bb->merge_w[i]), NULL,
                                                 bb->merge_w[i]->shape[0],
                                                 bb->merge_w[i]->shape[1], FALSE, bf16, error)))
      return FALSE;
  return TRUE;
}
#endif

static MexdBackbone *load_impl(const char *path, MexdBackend *be, MexdDType dtype,
                               MexdPrecision precision, GError **error)
{
  const char *json;
  g_autoptr(MexdSafetensors) st = mexd_cfg_open(path, MEXD_BACKBONE_FORMAT, "backbone", &json, error);
  if (!st)
    return NULL;
  MexdBackbone *bb = g_new0(MexdBackbone, 1);
  bb->be = mexd_backend_ref(be);
  bb->dtype = dtype;
  bb->precision = precision;
  bb->path = g_strdup(path);
  MexdWeights w;
  mexd_weights_init(&w, st, be);
  gboolean ok = parse_config(&bb->cfg, json, path, error) &&
                (bb->cfg.is_vit    ? load_vit(bb, &w, error)
                 : bb->cfg.is_swin ? load_swin(bb, &w, error)
                                   : load_resnet(bb, &w, error)) &&
                mexd_weights_check_all_taken(&w, error);
  mexd_weights_clear(&w);
#ifdef MEXD_HAVE_DNNL
  if (ok && mexd_backend_kind(be) == MEXD_BACKEND_CPU && dtype == MEXD_DTYPE_F32)
    ok = bb->cfg.is_vit || bb->cfg.is_swin ? setup_dnnl_linears(bb, error) : setup_dnnl(bb, error);
#endif
  if (!ok) {
    mexd_backbone_free(bb);
    return NULL;
  }
  return bb;
}

MexdBackbone *mexd_backbone_load(const char *path, MexdBackend *be, MexdDType dtype,
                                 GError **error)
{
  if (!path || !be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_backbone_load: NULL %s",
                          path ? "backend" : "path");
  if (dtype != MEXD_DTYPE_F32 && dtype != MEXD_DTYPE_F16)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_backbone_load: the dtype must be f32 or f16");
  if (dtype == MEXD_DTYPE_F16 && !mexd_backend_has_f16(be))
    return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                          "%s: the device %s has no 16-bit storage; use fp32", path,
                          mexd_backend_name(be));
  return load_impl(path, be, dtype,
                   dtype == MEXD_DTYPE_F16 ? MEXD_PRECISION_FP16 : MEXD_PRECISION_FP32, error);
}

MexdBackbone *mexd_backbone_load_precision(const char *path, MexdBackend *be,
                                           MexdPrecision precision, GError **error)
{
  if (!path || !be)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "mexd_backbone_load_precision: NULL %s", path ? "backend" : "path");
  const gboolean cpu = mexd_backend_kind(be) == MEXD_BACKEND_CPU;
  switch (precision) {
  case MEXD_PRECISION_FP32:
    return load_impl(path, be, MEXD_DTYPE_F32, precision, error);
  case MEXD_PRECISION_FP16:
    if (!cpu)
      return mexd_backbone_load(path, be, MEXD_DTYPE_F16, error);
    /* Decision: fp16 on the cpu backend runs as bf16.  The cpu has no fp16 arithmetic worth
     * the name (every op would widen to f32 and round back: measured 7× slower than fp32);
     * what a user asking for 16 bits on a cpu wants is the fast 16-bit path, which is bf16. */
    {
      g_autoptr(GError) e = NULL;
      if (!mexd_dnnl_check_bf16(&e))
        return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                              "fp16 on the cpu backend runs as bf16, and %s", e->message);
    }
    g_message("fp16 on the cpu backend runs as bf16 (16-bit weights and activations, fp32 "
              "accumulation)");
    return load_impl(path, be, MEXD_DTYPE_F32, MEXD_PRECISION_BF16, error);
  case MEXD_PRECISION_BF16:
    if (!cpu)
      return mexd_fail_null(error, MEXD_ERROR_UNSUPPORTED,
                            "%s: bf16 is a cpu-backend precision (oneDNN); on %s use fp16 or "
                            "fp32",
                            path, mexd_backend_name(be));
    if (!mexd_dnnl_check_bf16(error))
      return NULL;
    return load_impl(path, be, MEXD_DTYPE_F32, precision, error);
  }
  return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: unknown precision %d", path,
                        (int)precision);
}

MexdPrecision mexd_backbone_precision(const MexdBackbone *b)
{
  return b->precision;
}

gboolean mexd_backbone_bf16_supported(GError **error)
{
  return mexd_dnnl_check_bf16(error);
}

gboolean mexd_precision_parse(const char *name, MexdPrecision *out)
{
  static const struct {
    const char *name;
    MexdPrecision p;
  } names[] = {{"fp32", MEXD_PRECISION_FP32}, {"f32", MEXD_PRECISION_FP32},
               {"fp16", MEXD_PRECISION_FP16}, {"f16", MEXD_PRECISION_FP16},
               {"bf16", MEXD_PRECISION_BF16}};
  for (size_t i = 0; name && i < G_N_ELEMENTS(names); i++)
    if (g_str_equal(name, names[i].name)) {
      *out = names[i].p;
      return TRUE;
    }
  return FALSE;
}

const char *mexd_precision_name(MexdPrecision p)
{
  return p == MEXD_PRECISION_BF16 ? "bf16" : p == MEXD_PRECISION_FP16 ? "fp16" : "fp32";
}

/* ---- forward ---- */

static MexdTensor *conv_fwd(const Conv *c, MexdTensor *x, gboolean relu, GError **error)
{
  const int64_t H = x->shape[2], W = x->shape[3];
  const int64_t OH = (H + 2 * c->pad - c->k) / c->stride + 1;
  const int64_t OW = (W + 2 * c->pad - c->k) / c->stride + 1;
  MexdTensor *y = mexd_tensor_new(x->backend, x->dtype, 4,
                                  (int64_t[]){x->shape[0], c->cout, OH, OW}, error);
  if (!y)
    return NULL;
  MexdConv2dParams p = {c->stride, c->stride, c->pad, c->pad, 1, 1, 1};
  if (!mexd_conv2d(y, x, c->w, c->b, &p, error) || (relu && !mexd_relu(y, y, error))) {
    mexd_tensor_unref(y);
    return NULL;
  }
  return y;
}

static MexdTensor *bottleneck_fwd(const Bottleneck *bl, MexdTensor *x, GError **error)
{
  g_autoptr(MexdTensor) h1 = conv_fwd(&bl->c1, x, TRUE, error);
  g_autoptr(MexdTensor) h2 = h1 ? conv_fwd(&bl->c2, h1, TRUE, error) : NULL;
  g_clear_pointer(&h1, mexd_tensor_unref);
  g_autoptr(MexdTensor) h3 = h2 ? conv_fwd(&bl->c3, h2, FALSE, error) : NULL;
  g_clear_pointer(&h2, mexd_tensor_unref);
  if (!h3)
    return NULL;
  g_autoptr(MexdTensor) id = bl->has_down ? conv_fwd(&bl->down, x, FALSE, error) : mexd_tensor_ref(x);
  if (!id || !mexd_add(h3, h3, id, error) || !mexd_relu(h3, h3, error))
    return NULL;
  return g_steal_pointer(&h3);
}

static MexdTensor *new_as(MexdTensor *like, int ndim, const int64_t *shape, GError **error)
{
  return mexd_tensor_new(like->backend, like->dtype, ndim, shape, error);
}

/* y = x·wᵀ + b, then the exact GELU when `gelu`: through oneDNN's matmul when the layer has one
 * (dl), else the ops. */
static MexdTensor *linear(MexdTensor *x, MexdTensor *w, MexdTensor *bias, MexdDnnlLinear *dl,
                          gboolean gelu, GError **error)
{
#ifdef MEXD_HAVE_DNNL
  if (dl) {
    MexdTensor *y = new_as(x, 2, (int64_t[]){x->shape[0], w->shape[0]}, error);
    if (y && !mexd_dnnl_linear_run(dl, mexd_tensor_host_data(x), x->shape[0],
                                   mexd_tensor_host_data(y), error))
      g_clear_pointer(&y, mexd_tensor_unref);
    return y;
  }
#endif
  MexdTensor *y = mexd_linear_new(x, w, bias, error);
  if (y && gelu && !mexd_gelu(y, y, error))
    g_clear_pointer(&y, mexd_tensor_unref);
  return y;
}

/* The attention's batched products c = a·b (gp: bᵀ, scale): through oneDNN when the block has
 * its matmuls (v->bmm[which]), else mexd_gemm. */
static gboolean bmm(const VitBlock *v, int which, MexdTensor *c, MexdTensor *a, MexdTensor *b,
                    const MexdGemmParams *gp, GError **error)
{
#ifdef MEXD_HAVE_DNNL
  if (v->bmm[which])
    return mexd_dnnl_bmm_run(v->bmm[which], mexd_tensor_host_data(a), mexd_tensor_host_data(b),
                             mexd_tensor_host_data(c), a->shape[0], a->shape[1], a->shape[2],
                             c->shape[2], gp ? gp->alpha : 1.0f, error);
#endif
  return mexd_gemm(c, a, b, NULL, gp, error);
}

/* Multi-head self-attention over `nb` sequences of T tokens, x [nb·T, D] → a new [nb·T, D]
 * (after the output projection): qkv, the scaled scores (+ bias [H, T·T] and + mask [nw, 1, T·T]
 * over groups of nw sequences, when given), softmax, the weighted values. */
static MexdTensor *mha(MexdTensor *x, const VitBlock *v, int64_t nb, int64_t T, int64_t H,
                       MexdTensor *bias, MexdTensor *mask, int64_t nw, GError **error)
{
  const int64_t D = x->shape[1], dh = D / H;
  const float scale = (float)(1.0 / sqrt((double)dh));
  g_autoptr(MexdTensor) qkv = linear(x, v->qkv_w, v->qkv_b, v->dl[0], FALSE, error);
  /* [nb, T, 3, D] → [3, nb, T, D]; then each of q, k, v [nb, T, H, dh] → [nb, H, T, dh] */
  g_autoptr(MexdTensor) qkv4 =
      qkv ? mexd_tensor_reshape(qkv, 4, (int64_t[]){nb, T, 3, D}, error) : NULL;
  g_autoptr(MexdTensor) s3 = qkv4 ? new_as(x, 4, (int64_t[]){3, nb, T, D}, error) : NULL;
  if (!s3 || !mexd_permute(s3, qkv4, (int[]){2, 0, 1, 3}, error))
    return NULL;
  g_clear_pointer(&qkv4, mexd_tensor_unref);
  g_clear_pointer(&qkv, mexd_tensor_unref);
  g_autoptr(MexdTensor) flat = mexd_tensor_reshape(s3, 2, (int64_t[]){3 * nb * T, D}, error);
  MexdTensor *qkvh[3] = {NULL, NULL, NULL};
  gboolean ok = flat != NULL;
  for (int j = 0; ok && j < 3; j++) {
    g_autoptr(MexdTensor) part = mexd_tensor_rows(flat, j * nb * T, nb * T, error);
    g_autoptr(MexdTensor) p4 =
        part ? mexd_tensor_reshape(part, 4, (int64_t[]){nb, T, H, dh}, error) : NULL;
    qkvh[j] = p4 ? new_as(x, 3, (int64_t[]){nb * H, T, dh}, error) : NULL;
    g_autoptr(MexdTensor) dst =
        qkvh[j] ? mexd_tensor_reshape(qkvh[j], 4, (int64_t[]){nb, H, T, dh}, error) : NULL;
    ok = dst && mexd_permute(dst, p4, (int[]){0, 2, 1, 3}, error);
  }
  g_autoptr(MexdTensor) q = qkvh[0], k = qkvh[1], vv = qkvh[2];
  if (!ok)
    return NULL;
  g_clear_pointer(&flat, mexd_tensor_unref);
  g_clear_pointer(&s3, mexd_tensor_unref);
  g_autoptr(MexdTensor) att = new_as(x, 3, (int64_t[]){nb * H, T, T}, error);
  MexdGemmParams gp = {FALSE, TRUE, scale, 0.0f};
  if (!att || !bmm(v, 0, att, q, k, &gp, error))
    return NULL;
  if (bias || mask) {
    g_autoptr(MexdTensor) a4 =
        mexd_tensor_reshape(att, 4, (int64_t[]){nb / nw, nw, H, T * T}, error);
    if (!a4 || (bias && !mexd_add(a4, a4, bias, error)) || (mask && !mexd_add(a4, a4, mask, error)))
      return NULL;
  }
  if (!mexd_softmax_rows(att, att, error))
    return NULL;
  g_autoptr(MexdTensor) o = new_as(x, 4, (int64_t[]){nb, H, T, dh}, error);
  g_autoptr(MexdTensor) o3 = o ? mexd_tensor_reshape(o, 3, (int64_t[]){nb * H, T, dh}, error) : NULL;
  if (!o3 || !bmm(v, 1, o3, att, vv, NULL, error))
    return NULL;
  g_autoptr(MexdTensor) m4 = new_as(x, 4, (int64_t[]){nb, T, H, dh}, error);
  if (!m4 || !mexd_permute(m4, o, (int[]){0, 2, 1, 3}, error))
    return NULL;
  g_autoptr(MexdTensor) m2 = mexd_tensor_reshape(m4, 2, (int64_t[]){nb * T, D}, error);
  return m2 ? linear(m2, v->proj_w, v->proj_b, v->dl[1], FALSE, error) : NULL;
}

/* h += ls1 · attention(norm1(h)) for a ViT block (whole sequences of T tokens, no bias/mask). */
static gboolean attn_block(MexdTensor *h, const VitBlock *v, int64_t nb, int64_t T, int64_t H,
                           float eps, MexdTensor *bias, MexdTensor *mask, int64_t nw,
                           GError **error)
{
  g_autoptr(MexdTensor) n1 = new_as(h, 2, h->shape, error);
  if (!n1 || !mexd_layernorm(n1, h, v->n1w, v->n1b, eps, error))
    return FALSE;
  g_autoptr(MexdTensor) pr = mha(n1, v, nb, T, H, bias, mask, nw, error);
  return pr && (!v->ls1 || mexd_mul(pr, pr, v->ls1, error)) && mexd_add(h, h, pr, error);
}

/* h += ls2 · fc2(gelu(fc1(norm2(h)))) */
static gboolean mlp_block(MexdTensor *h, const VitBlock *v, float eps, GError **error)
{
  g_autoptr(MexdTensor) n2 = new_as(h, 2, h->shape, error);
  if (!n2 || !mexd_layernorm(n2, h, v->n2w, v->n2b, eps, error))
    return FALSE;
  g_autoptr(MexdTensor) f1 = linear(n2, v->fc1_w, v->fc1_b, v->dl[2], TRUE, error);
  if (!f1)
    return FALSE;
  g_clear_pointer(&n2, mexd_tensor_unref);
  g_autoptr(MexdTensor) f2 = linear(f1, v->fc2_w, v->fc2_b, v->dl[3], FALSE, error);
  return f2 && (!v->ls2 || mexd_mul(f2, f2, v->ls2, error)) && mexd_add(h, h, f2, error);
}

/* ViT: tokens [B·T, D] through the blocks (timm's pre-norm residual blocks). */
static MexdTensor *vit_forward(MexdBackbone *b, MexdTensor *x, MexdTrace *trace, GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  const int64_t B = x->shape[0], D = c->dim, H = c->heads, G = c->input_size / c->patch;
  const int64_t N = G * G, T = N + 1;
  const float eps = (float)c->ln_eps;
  /* patch embedding: a stride-P convolution → [B, D, N] → [B, N, D]; the class token in front;
   * the position embedding added */
  g_autoptr(MexdTensor) tok = NULL;
  {
    g_autoptr(MexdTensor) pe = new_as(x, 4, (int64_t[]){B, D, G, G}, error);
    MexdConv2dParams cp = {c->patch, c->patch, 0, 0, 1, 1, 1};
    if (!pe || !mexd_conv2d(pe, x, b->patch_w, b->patch_b, &cp, error))
      return NULL;
    g_autoptr(MexdTensor) pe3 = mexd_tensor_reshape(pe, 3, (int64_t[]){B, D, N}, error);
    g_autoptr(MexdTensor) pt = pe3 ? new_as(x, 3, (int64_t[]){B, N, D}, error) : NULL;
    if (!pt || !mexd_permute(pt, pe3, (int[]){0, 2, 1}, error))
      return NULL;
    g_autoptr(MexdTensor) cls = new_as(x, 3, (int64_t[]){B, 1, D}, error);
    g_autoptr(MexdTensor) cls2 = cls ? mexd_tensor_reshape(b->cls, 2, (int64_t[]){1, D}, error)
                                     : NULL;
    if (!cls2 || !mexd_lincomb(cls, 1.0f, cls2, 0, NULL, 0, NULL, 0.0f, error))
      return NULL;
    tok = new_as(x, 3, (int64_t[]){B, T, D}, error);
    MexdTensor *parts[2] = {cls, pt};
    g_autoptr(MexdTensor) pos = tok ? mexd_tensor_reshape(b->pos, 2, (int64_t[]){T, D}, error)
                                    : NULL;
    if (!pos || !mexd_concat(tok, parts, 2, 1, error) ||
        !mexd_lincomb(tok, 1.0f, pos, 0, NULL, 0, NULL, 1.0f, error) ||
        !mexd_trace_put(trace, NULL, "tokens", tok, error))
      return NULL;
  }
  g_autoptr(MexdTensor) h = mexd_tensor_reshape(tok, 2, (int64_t[]){B * T, D}, error);
  if (!h)
    return NULL;
  g_clear_pointer(&tok, mexd_tensor_unref);
  for (int i = 0; i < c->depth; i++) {
    const VitBlock *v = &b->vit[i];
    if (!attn_block(h, v, B, T, H, eps, NULL, NULL, 1, error) || !mlp_block(h, v, eps, error))
      return NULL;
    char nm[24];
    g_snprintf(nm, sizeof nm, "block%d", i);
    if (!mexd_trace_put(trace, NULL, nm, h, error))
      return NULL;
  }
  /* the class tokens (row b·T of every image: b->cls_idx), then the final norm */
  g_autoptr(MexdTensor) clsr = new_as(h, 2, (int64_t[]){B, D}, error);
  if (!clsr || !mexd_gather_rows(clsr, h, b->cls_idx, error))
    return NULL;
  MexdTensor *out = new_as(h, 2, (int64_t[]){B, D}, error);
  if (out && !mexd_layernorm(out, clsr, b->norm_w, b->norm_b, eps, error))
    g_clear_pointer(&out, mexd_tensor_unref);
  return out;
}

/* An i32 tensor of the n row indices in idx. */
static MexdTensor *index_tensor(MexdBackend *be, const int32_t *idx, int64_t n, GError **error)
{
  MexdTensor *t = mexd_tensor_new(be, MEXD_DTYPE_I32, 1, (int64_t[]){n}, error);
  if (t && !mexd_tensor_write(t, idx, sizeof(int32_t) * n, error))
    g_clear_pointer(&t, mexd_tensor_unref);
  return t;
}

/* A new tensor of the rows idx of x [M, C]. */
static MexdTensor *gather_new(MexdTensor *x, MexdTensor *idx, GError **error)
{
  MexdTensor *y = new_as(x, 2, (int64_t[]){idx->shape[0], x->shape[1]}, error);
  if (y && !mexd_gather_rows(y, x, idx, error))
    g_clear_pointer(&y, mexd_tensor_unref);
  return y;
}

/* The batch-size-dependent index tensors (vit, swin) for B images, made once per batch size and
 * before anything of the batch is recorded. */
static gboolean prepare(MexdBackbone *b, int64_t B, GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  if (b->prep_b == B || (!c->is_vit && !c->is_swin))
    return TRUE;
  prep_clear(b);
  if (c->is_vit) {
    const int64_t T = 1 + (c->input_size / c->patch) * (c->input_size / c->patch);
    g_autofree int32_t *rows = g_new(int32_t, B);
    for (int64_t i = 0; i < B; i++)
      rows[i] = (int32_t)(i * T);
    if (!(b->cls_idx = index_tensor(b->be, rows, B, error)))
      return FALSE;
  } else {
    int64_t res = c->input_size / 4;
    for (int st = 0; st < 4; st++, res /= 2) {
      const int64_t L = res * res, ws = MIN(c->window, res), N = ws * ws, nwr = res / ws;
      const int64_t nw = nwr * nwr;
      g_autofree int32_t *fwd = g_new(int32_t, B * L), *inv = g_new(int32_t, B * L);
      for (int shifted = 0; shifted < 2; shifted++) {
        const int64_t sh = shifted && res > c->window ? c->window / 2 : 0;
        /* windowed position ((img·nW + window)·N + in-window) ← row of the shifted image */
        for (int64_t im = 0; im < B; im++)
          for (int64_t wdx = 0; wdx < nw; wdx++)
            for (int64_t a = 0; a < N; a++) {
              int64_t yy = (wdx / nwr) * ws + a / ws, xx = (wdx % nwr) * ws + a % ws;
              int64_t src = (im * res + (yy + sh) % res) * res + (xx + sh) % res;
              int64_t pos = (im * nw + wdx) * N + a;
              fwd[pos] = (int32_t)src;
              inv[src] = (int32_t)pos;
            }
        if (!(b->win_idx[st][shifted][0] = index_tensor(b->be, fwd, B * L, error)) ||
            !(b->win_idx[st][shifted][1] = index_tensor(b->be, inv, B * L, error)))
          return FALSE;
      }
      if (st == 3)
        break;
      /* patch merging: rows (2i+dy, 2j+dx) for (dy, dx) = (0,0), (1,0), (0,1), (1,1) */
      const int64_t r2 = res / 2, M = B * r2 * r2;
      for (int q = 0; q < 4; q++) {
        int dy = q & 1, dx = q >> 1;
        for (int64_t im = 0; im < B; im++)
          for (int64_t i = 0; i < r2; i++)
            for (int64_t jj = 0; jj < r2; jj++)
              fwd[(im * r2 + i) * r2 + jj] = (int32_t)((im * res + 2 * i + dy) * res + 2 * jj + dx);
        if (!(b->merge_idx[st][q] = index_tensor(b->be, fwd, M, error)))
          return FALSE;
      }
    }
  }
  b->prep_b = B;
  return TRUE;
}

/* CTransPath / Swin: tokens [B·res², C] in (image, row, column) order.  A block's windows (after
 * the cyclic shift) are a permutation of the rows, so the shift + window partition is one row
 * gather and its inverse another; the attention then runs over B·nW sequences of ws² tokens. */
static MexdTensor *swin_forward(MexdBackbone *b, MexdTensor *x, MexdTrace *trace, GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  const int64_t B = x->shape[0];
  const float eps = (float)c->ln_eps;
  g_autoptr(MexdTensor) s1 = conv_fwd(&b->stem2[0], x, TRUE, error);
  g_autoptr(MexdTensor) s2 = s1 ? conv_fwd(&b->stem2[1], s1, TRUE, error) : NULL;
  g_autoptr(MexdTensor) s3 = s2 ? conv_fwd(&b->stem2[2], s2, FALSE, error) : NULL;
  if (!s3)
    return NULL;
  int64_t res = s3->shape[2], C = c->embed_dim;
  g_autoptr(MexdTensor) s3v = mexd_tensor_reshape(s3, 3, (int64_t[]){B, C, res * res}, error);
  g_autoptr(MexdTensor) tk = s3v ? new_as(x, 3, (int64_t[]){B, res * res, C}, error) : NULL;
  if (!tk || !mexd_permute(tk, s3v, (int[]){0, 2, 1}, error))
    return NULL;
  g_autoptr(MexdTensor) tk2 = mexd_tensor_reshape(tk, 2, (int64_t[]){B * res * res, C}, error);
  g_autoptr(MexdTensor) h = tk2 ? new_as(x, 2, tk2->shape, error) : NULL;
  if (!h || !mexd_layernorm(h, tk2, b->stem_nw, b->stem_nb, eps, error) ||
      !mexd_trace_put(trace, NULL, "stem", h, error))
    return NULL;
  g_clear_pointer(&s1, mexd_tensor_unref);
  g_clear_pointer(&s2, mexd_tensor_unref);
  int bi = 0;
  for (int st = 0; st < 4; st++) {
    for (int j = 0; j < c->depths[st]; j++, bi++) {
      const SwinBlockX *sx = &b->swin[bi];
      const int64_t ws = sx->ws, N = ws * ws, nwr = res / ws, nw = nwr * nwr;
      MexdTensor *tf = b->win_idx[st][sx->shift > 0][0], *ti = b->win_idx[st][sx->shift > 0][1];
      g_autoptr(MexdTensor) n1 = ti ? new_as(h, 2, h->shape, error) : NULL;
      if (!n1 || !mexd_layernorm(n1, h, b->vit[bi].n1w, b->vit[bi].n1b, eps, error))
        return NULL;
      g_autoptr(MexdTensor) win = gather_new(n1, tf, error);
      g_clear_pointer(&n1, mexd_tensor_unref);
      g_autoptr(MexdTensor) o =
          win ? mha(win, &b->vit[bi], B * nw, N, sx->heads, sx->bias, sx->mask, nw, error) : NULL;
      g_autoptr(MexdTensor) back = o ? gather_new(o, ti, error) : NULL;
      if (!back || !mexd_add(h, h, back, error) || !mlp_block(h, &b->vit[bi], eps, error))
        return NULL;
    }
    if (st < 3) {
      /* patch merging: rows (2i+dy, 2j+dx) for (dy, dx) = (0,0), (1,0), (0,1), (1,1), side by
       * side → [B·(res/2)², 4C] → LayerNorm → the reduction to 2C */
      const int64_t r2 = res / 2, M = B * r2 * r2;
      MexdTensor *parts[4] = {NULL, NULL, NULL, NULL};
      gboolean ok = TRUE;
      for (int q = 0; q < 4 && ok; q++)
        ok = (parts[q] = gather_new(h, b->merge_idx[st][q], error)) != NULL;
      g_autoptr(MexdTensor) cat = ok ? new_as(h, 2, (int64_t[]){M, 4 * C}, error) : NULL;
      ok = cat && mexd_concat(cat, parts, 4, 1, error);
      for (int q = 0; q < 4; q++)
        if (parts[q])
          mexd_tensor_unref(parts[q]);
      g_autoptr(MexdTensor) nrm = ok ? new_as(h, 2, cat->shape, error) : NULL;
      if (!nrm || !mexd_layernorm(nrm, cat, b->merge_nw[st], b->merge_nb[st], eps, error))
        return NULL;
      MexdTensor *next = linear(nrm, b->merge_w[st], NULL, b->merge_dl[st], FALSE, error);
      if (!next)
        return NULL;
      mexd_tensor_unref(h);
      h = next;
      res = r2;
      C *= 2;
    }
    char nm[16];
    g_snprintf(nm, sizeof nm, "stage%d", st);
    if (!mexd_trace_put(trace, NULL, nm, h, error))
      return NULL;
  }
  /* final norm, then the mean of each image's tokens */
  g_autoptr(MexdTensor) fn = new_as(h, 2, h->shape, error);
  MexdTensor *out = fn ? new_as(h, 2, (int64_t[]){B, C}, error) : NULL;
  if (out && (!mexd_layernorm(fn, h, b->norm_w, b->norm_b, eps, error) ||
              !mexd_segment_mean(out, fn, res * res, error)))
    g_clear_pointer(&out, mexd_tensor_unref);
  return out;
}

/* On the cpu backend a transformer runs a batch in chunks of CPU_CHUNK images.  Decision
 * (measured 2026-12-03 on the 2-core machine, fp32): a whole batch of 64 has intermediates that
 * outgrow the caches and the cpu backend's block cache (the attention scores of ViT-B/16 alone are
 * 119 MB), and fresh memory costs the kernel a page clear per page: a fifth of the time went
 * there.  ViT-B/16 ran 3.8 images/s at batch 64 in one piece, 5.3 in chunks of 16 (4.9 in chunks
 * of 4); CTransPath 7.6 against 10.3.  Images are independent, so the features are those of one
 * piece up to rounding.  With a trace (tests, `mexd forward --dump`) the batch stays one piece, so
 * that every traced intermediate is the whole batch's. */
#define CPU_CHUNK 16

static gboolean chunked(const MexdBackbone *b, int64_t B, const MexdTrace *trace)
{
  return (b->cfg.is_vit || b->cfg.is_swin) && !trace && B > CPU_CHUNK &&
         mexd_backend_kind(b->be) == MEXD_BACKEND_CPU;
}

static MexdTensor *forward_chunked(MexdBackbone *b, MexdTensor *x, GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  const int64_t B = x->shape[0], px = 3 * (int64_t)c->input_size * c->input_size;
  g_autoptr(MexdTensor) flat = mexd_tensor_reshape(x, 2, (int64_t[]){B, px}, error);
  g_autoptr(MexdTensor) out =
      flat ? new_as(x, 2, (int64_t[]){B, c->output_dim}, error) : NULL;
  if (!out)
    return NULL;
  for (int64_t i = 0; i < B; i += CPU_CHUNK) {
    const int64_t n = MIN((int64_t)CPU_CHUNK, B - i);
    g_autoptr(MexdTensor) rows = mexd_tensor_rows(flat, i, n, error);
    g_autoptr(MexdTensor) xi =
        rows ? mexd_tensor_reshape(rows, 4, (int64_t[]){n, 3, c->input_size, c->input_size}, error)
             : NULL;
    g_autoptr(MexdTensor) fi = xi ? mexd_backbone_forward(b, xi, NULL, error) : NULL;
    g_autoptr(MexdTensor) dst = fi ? mexd_tensor_rows(out, i, n, error) : NULL;
    if (!dst || !mexd_copy(dst, fi, error))
      return NULL;
  }
  return g_steal_pointer(&out);
}

MexdTensor *mexd_backbone_forward(MexdBackbone *b, MexdTensor *x, MexdTrace *trace,
                                  GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  if (!x || x->backend != b->be || x->dtype != b->dtype || x->ndim != 4 || x->shape[1] != 3 ||
      x->shape[2] != c->input_size || x->shape[3] != c->input_size) {
    g_autofree char *d = x ? mexd_tensor_describe(x) : g_strdup("NULL");
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: the input is %s, expected %s[B,3,%d,%d] on %s", b->path, d,
                          mexd_dtype_name(b->dtype), c->input_size, c->input_size, mexd_backend_name(b->be));
  }
  if (chunked(b, x->shape[0], trace))
    return forward_chunked(b, x, error);
  if (!prepare(b, x->shape[0], error))
    return NULL;
  if (c->is_vit)
    return vit_forward(b, x, trace, error);
  if (c->is_swin)
    return swin_forward(b, x, trace, error);
#ifdef MEXD_HAVE_DNNL
  if (b->dnnl) {
    /* tensors are contiguous (views are rows and reshapes) */
    MexdTensor *f =
        mexd_tensor_new(b->be, MEXD_DTYPE_F32, 2, (int64_t[]){x->shape[0], c->output_dim}, error);
    if (f && !mexd_resnet_dnnl_forward(b->dnnl, mexd_tensor_host_data(x), x->shape[0],
                                       mexd_tensor_host_data(f), trace, b->be, error))
      g_clear_pointer(&f, mexd_tensor_unref);
    return f;
  }
#endif
  g_autoptr(MexdTensor) s = conv_fwd(&b->stem, x, TRUE, error);
  if (!s)
    return NULL;
  const int64_t H = s->shape[2], W = s->shape[3];
  g_autoptr(MexdTensor) h = mexd_tensor_new(
      b->be, b->dtype, 4, (int64_t[]){x->shape[0], s->shape[1], (H - 1) / 2 + 1, (W - 1) / 2 + 1},
      error);
  if (!h || !mexd_maxpool2d(h, s, 3, 2, 1, error) ||
      !mexd_trace_put(trace, NULL, "stem", h, error))
    return NULL;
  g_clear_pointer(&s, mexd_tensor_unref);
  for (int i = 0, L = 0, in_layer = 0; i < b->n_blocks; i++) {
    MexdTensor *next = bottleneck_fwd(&b->blocks[i], h, error);
    if (!next)
      return NULL;
    mexd_tensor_unref(h);
    h = next;
    if (++in_layer == c->blocks[L]) {
      char nm[16];
      g_snprintf(nm, sizeof nm, "layer%d", L + 1);
      if (!mexd_trace_put(trace, NULL, nm, h, error))
        return NULL;
      L++;
      in_layer = 0;
    }
  }
  /* global average pooling: [B·C, H·W] · the column of 1/(H·W) made at load */
  const int64_t B = h->shape[0], C = h->shape[1], P = h->shape[2] * h->shape[3];
  g_return_val_if_fail(b->pool_col->shape[0] == P, NULL);
  g_autoptr(MexdTensor) flat = mexd_tensor_reshape(h, 2, (int64_t[]){B * C, P}, error);
  MexdTensor *f = flat ? mexd_tensor_new(b->be, b->dtype, 2, (int64_t[]){B * C, 1}, error) : NULL;
  if (!f || !mexd_gemm(f, flat, b->pool_col, NULL, NULL, error)) {
    if (f)
      mexd_tensor_unref(f);
    return NULL;
  }
  MexdTensor *out = mexd_tensor_reshape(f, 2, (int64_t[]){B, C}, error);
  mexd_tensor_unref(f);
  return out;
}

struct _MexdEmbedJob {
  MexdTensor *out; /* [B, output_dim] in host-readable memory */
};

MexdEmbedJob *mexd_backbone_embed_submit(MexdBackbone *b, const uint8_t *rgb, int64_t batch,
                                         int64_t h, int64_t w, MexdTrace *trace, GError **error)
{
  const MexdBackboneConfig *c = &b->cfg;
  if (batch < 1 || h < 1 || w < 1 || !rgb)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: a batch of %" G_GINT64_FORMAT " tiles of %" G_GINT64_FORMAT
                          "×%" G_GINT64_FORMAT " pixels",
                          b->path, batch, w, h);
  /* every upload before the first recorded op: the batch is then one submission */
  if (!chunked(b, batch, trace) && !prepare(b, batch, error))
    return NULL;
  g_autoptr(MexdTensor) px = mexd_image_pixels_new(b->be, rgb, batch * h * w * 3, error);
  g_autoptr(MexdTensor) x =
      px ? mexd_tensor_new(b->be, b->dtype, 4,
                           (int64_t[]){batch, 3, c->input_size, c->input_size}, error)
         : NULL;
  if (!x || !mexd_image_prep(x, px, h, w, c->mean, c->std, error) ||
      !mexd_trace_put(trace, NULL, "input", x, error))
    return NULL;
  g_clear_pointer(&px, mexd_tensor_unref);
  g_autoptr(MexdTensor) f = mexd_backbone_forward(b, x, trace, error);
  g_clear_pointer(&x, mexd_tensor_unref);
  g_autoptr(MexdTensor) out =
      f ? mexd_tensor_new_host(b->be, b->dtype, 2, (int64_t[]){batch, c->output_dim}, error)
        : NULL;
  if (!out || !mexd_copy(out, f, error) || !mexd_backend_flush(b->be, error))
    return NULL;
  MexdEmbedJob *job = g_new0(MexdEmbedJob, 1);
  job->out = g_steal_pointer(&out);
  return job;
}

gboolean mexd_embed_job_finish(MexdEmbedJob *job, float *out, GError **error)
{
  const int64_t n = mexd_tensor_numel(job->out);
  gboolean ok = out ? mexd_tensor_read_f32(job->out, out, n, error)
                    : mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                                "mexd_embed_job_finish: no output array");
  /* features that are not finite are no features (fp16 overflow, a damaged tile path) */
  const int64_t D = job->out->ndim > 1 ? job->out->shape[job->out->ndim - 1] : 1;
  for (int64_t i = 0; ok && i < n; i++)
    if (!isfinite(out[i]))
      ok = mexd_fail(error, MEXD_ERROR_FORMAT,
                     "the backbone's features are not finite (tile %" G_GINT64_FORMAT
                     " of the batch, feature %" G_GINT64_FORMAT " = %g)%s",
                     i / MAX(D, (int64_t)1), i % MAX(D, (int64_t)1), (double)out[i],
                     job->out->dtype == MEXD_DTYPE_F16 ? ": fp16 overflowed; use fp32" : "");
  mexd_embed_job_free(job);
  return ok;
}

void mexd_embed_job_free(MexdEmbedJob *job)
{
  if (!job)
    return;
  mexd_tensor_unref(job->out);
  g_free(job);
}

gboolean mexd_backbone_embed(MexdBackbone *b, const uint8_t *rgb, int64_t batch, int64_t h,
                             int64_t w, float *out, MexdTrace *trace, GError **error)
{
  if (!out)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: no output array", b->path);
  MexdEmbedJob *job = mexd_backbone_embed_submit(b, rgb, batch, h, w, trace, error);
  return job && mexd_embed_job_finish(job, out, error);
}
