/* backbone-dnnl.c: the ResNet trunk as one oneDNN plan (backbone-dnnl.h).
 *
 * A plan is made per batch size (the first forward of a size; the two most recent sizes are
 * kept, so a slide's last partial batch does not cost two rebuilds): every
 * convolution with bias (the folded batch norm) and its ReLU as a post-op; a bottleneck's
 * residual add + ReLU fused into its last convolution (sum post-op: the downsample convolution,
 * or the block's input itself, is already in the output buffer); the stem's max-pool; the global
 * average pooling as a mean reduction straight into the caller's [B, C] features.  Activations
 * stay in the layout oneDNN chooses for the convolutions (dnnl_format_tag_any, nChw16c with
 * AVX-512) from the stem to the pooling: the input is reordered once from NCHW (and to bf16),
 * and a reorder is added only where a primitive asks for another layout.  Weights are reordered
 * into each convolution's own layout (and dtype) when the plan is made.
 *
 * Memory: activations live in five arenas reused through the trunk — the stem's input, two
 * ping-pong buffers for block inputs/outputs (a block without downsample adds its residual in
 * place), and one each for a bottleneck's two inner activations — each the size of its largest
 * use, plus one scratchpad shared by all primitives.  At batch 64 (f32, 224²) that is ~0.5 GB.
 *
 * Decisions: the bf16 plan keeps the activations in bf16 between layers (as PyTorch's autocast
 * does on the cpu) with f32 accumulation inside each convolution and the bias in f32; the
 * features come out as f32.  Measured against the fp32 fixture: within the 1e-2 normwise bound
 * the tests ask. */
#include "nn/backbone-dnnl.h"

#include "backend/dnnl.h"
#include "core/error.h"

#include <string.h>

#ifdef MEXD_HAVE_DNNL
/* (the whole file: without oneDNN backbone.c does not call it) */

enum { AR_IN, AR_A, AR_B, AR_T1, AR_T2, AR_TMP, N_AR };

typedef struct {
  dnnl_primitive_t prim;
  int nargs;
  dnnl_exec_arg_t args[6];
  const char *trace; /* a reorder to the NCHW f32 memory `tmem` run only with a trace */
  dnnl_memory_t tmem;
  int64_t tdims[4];
} Step;

typedef struct {
  dnnl_memory_t m;
  int arena;
} Bind;

typedef struct {
  dnnl_memory_t m;
  dnnl_memory_desc_t md;
  int arena; /* -1: not in an arena */
} Act;

typedef struct {
  MexdDnnlConvW stem, *blocks;
  int n_blocks, layer_blocks[3], input_size;
  gboolean bf16;
  /* the plan for batch size B (0: none yet) */
  int64_t B;
  GArray *steps, *binds;
  GPtrArray *prims, *mems;
  void *arena[N_AR];
  size_t arena_size[N_AR], scratch_size;
  void *scratch;
  dnnl_memory_t scratch_mem, in_user, out_user;
  guint64 used; /* when it last ran, for keeping the most recent plans */
} Trunk;

/* Plans for the two most recent batch sizes (a slide's last, partial batch would otherwise
 * rebuild the plan twice per slide: ~0.3 s of weight reorders each time). */
#define N_PLANS 2

struct _MexdResnetDnnl {
  Trunk plan[N_PLANS];
  guint64 clock;
};

static void plan_clear(Trunk *r)
{
  if (r->prims)
    for (guint i = 0; i < r->prims->len; i++)
      dnnl_primitive_destroy(g_ptr_array_index(r->prims, i));
  if (r->mems)
    for (guint i = 0; i < r->mems->len; i++)
      dnnl_memory_destroy(g_ptr_array_index(r->mems, i));
  g_clear_pointer(&r->prims, g_ptr_array_unref);
  g_clear_pointer(&r->mems, g_ptr_array_unref);
  g_clear_pointer(&r->steps, g_array_unref);
  g_clear_pointer(&r->binds, g_array_unref);
  for (int i = 0; i < N_AR; i++) {
    g_clear_pointer(&r->arena[i], g_free);
    r->arena_size[i] = 0;
  }
  g_clear_pointer(&r->scratch, g_free);
  r->scratch_size = 0;
  r->scratch_mem = r->in_user = r->out_user = NULL;
  r->B = 0;
}

static void trunk_free(Trunk *r)
{
  plan_clear(r);
  g_free(r->blocks);
}

static void trunk_init(Trunk *r, const MexdDnnlConvW *stem, const MexdDnnlConvW *blocks,
                       int n_blocks, const int layer_blocks[3], int input_size, gboolean bf16)
{
  r->stem = *stem;
  r->blocks = g_memdup2(blocks, sizeof *blocks * 4 * (gsize)n_blocks);
  r->n_blocks = n_blocks;
  memcpy(r->layer_blocks, layer_blocks, sizeof r->layer_blocks);
  r->input_size = input_size;
  r->bf16 = bf16;
}

MexdResnetDnnl *mexd_resnet_dnnl_new(const MexdDnnlConvW *stem, const MexdDnnlConvW *blocks,
                                     int n_blocks, const int layer_blocks[3], int input_size,
                                     gboolean bf16, GError **error)
{
  if (!mexd_dnnl_engine(error) || (bf16 && !mexd_dnnl_check_bf16(error)))
    return NULL;
  MexdResnetDnnl *rd = g_new0(MexdResnetDnnl, 1);
  for (int i = 0; i < N_PLANS; i++)
    trunk_init(&rd->plan[i], stem, blocks, n_blocks, layer_blocks, input_size, bf16);
  return rd;
}

void mexd_resnet_dnnl_free(MexdResnetDnnl *rd)
{
  if (!rd)
    return;
  for (int i = 0; i < N_PLANS; i++)
    trunk_free(&rd->plan[i]);
  g_free(rd);
}

/* ---- building a plan ---- */

static dnnl_memory_t new_mem(Trunk *r, const dnnl_memory_desc_t *md, void *handle,
                             GError **error)
{
  dnnl_memory_t m = NULL;
  if (!mexd_dnnl_ok(dnnl_memory_create(&m, md, mexd_dnnl_engine(NULL), handle), "memory", error))
    return NULL;
  g_ptr_array_add(r->mems, m);
  return m;
}

/* A memory of `md` in arena `arena` (its handle is set once the arenas are allocated). */
static gboolean arena_act(Trunk *r, const dnnl_memory_desc_t *md, int arena, Act *out,
                          GError **error)
{
  dnnl_memory_t m = new_mem(r, md, DNNL_MEMORY_NONE, error);
  if (!m)
    return FALSE;
  Bind b = {m, arena};
  g_array_append_val(r->binds, b);
  r->arena_size[arena] = MAX(r->arena_size[arena], dnnl_memory_desc_get_size(md));
  *out = (Act){m, *md, arena};
  return TRUE;
}

static void add_step(Trunk *r, dnnl_primitive_t prim, int nargs,
                     const dnnl_exec_arg_t *args)
{
  Step s = {.prim = prim, .nargs = nargs};
  memcpy(s.args, args, sizeof *args * nargs);
  g_array_append_val(r->steps, s);
}

static gboolean add_prim(Trunk *r, dnnl_primitive_t p)
{
  if (p)
    g_ptr_array_add(r->prims, p);
  return p != NULL;
}

/* x in layout `want` (a reorder into arena `arena` when it is not). */
static gboolean as_md(Trunk *r, const Act *x, const dnnl_memory_desc_t *want, int arena,
                      Act *out, GError **error)
{
  if (dnnl_memory_desc_equal(&x->md, want)) {
    *out = *x;
    return TRUE;
  }
  dnnl_primitive_t p = mexd_dnnl_reorder_new(&x->md, want, error);
  if (!add_prim(r, p) || !arena_act(r, want, arena, out, error))
    return FALSE;
  add_step(r, p, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, x->m}, {DNNL_ARG_TO, out->m}});
  return TRUE;
}

/* A convolution of x's shape; its primitive and weights (the step is added by emit_conv). */
typedef struct {
  MexdDnnlConv c;
  dnnl_memory_t wei, bias;
} PlanConv;

static gboolean init_conv(Trunk *r, PlanConv *pc, const MexdDnnlConvW *cw,
                          const dnnl_memory_desc_t *x, gboolean relu, gboolean sum,
                          const dnnl_memory_desc_t *dst, GError **error)
{
  const MexdDnnlConvDesc d = {
      .N = x->dims[0], .C = cw->cin, .H = x->dims[2], .W = x->dims[3],
      .O = cw->cout, .KH = cw->k, .KW = cw->k,
      .stride_h = cw->stride, .stride_w = cw->stride, .pad_h = cw->pad, .pad_w = cw->pad,
      .dil_h = 1, .dil_w = 1, .groups = 1,
      .relu = relu, .sum = sum, .dt = r->bf16 ? dnnl_bf16 : dnnl_f32,
  };
  memset(pc, 0, sizeof *pc);
  if (!mexd_dnnl_conv_init(&pc->c, &d, NULL, dst, error))
    return FALSE;
  g_ptr_array_add(r->prims, pc->c.prim);
  r->scratch_size = MAX(r->scratch_size, pc->c.scratch);
  if (!(pc->wei = mexd_dnnl_conv_weights(&pc->c, &d, cw->w, error)))
    return FALSE;
  g_ptr_array_add(r->mems, pc->wei);
  return (pc->bias = new_mem(r, &pc->c.bias_md, (void *)cw->b, error)) != NULL;
}

/* The step of pc: x (reordered to its layout in AR_TMP if needed) → y. */
static gboolean emit_conv(Trunk *r, PlanConv *pc, const Act *x, const Act *y,
                          GError **error)
{
  Act xs;
  if (!as_md(r, x, &pc->c.src_md, AR_TMP, &xs, error))
    return FALSE;
  add_step(r, pc->c.prim, 5,
           (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, xs.m},
                               {DNNL_ARG_WEIGHTS, pc->wei},
                               {DNNL_ARG_BIAS, pc->bias},
                               {DNNL_ARG_DST, y->m},
                               {DNNL_ARG_SCRATCHPAD, r->scratch_mem}});
  return TRUE;
}

/* A new activation: conv(x) into arena `arena`. */
static gboolean conv_step(Trunk *r, const MexdDnnlConvW *cw, const Act *x,
                          gboolean relu, int arena, Act *y, GError **error)
{
  PlanConv pc;
  return init_conv(r, &pc, cw, &x->md, relu, FALSE, NULL, error) &&
         arena_act(r, &pc.c.dst_md, arena, y, error) && emit_conv(r, &pc, x, y, error);
}

/* A trace point: x as NCHW f32 under `name`. */
static gboolean trace_step(Trunk *r, const Act *x, const char *name, GError **error)
{
  dnnl_memory_desc_t md = mexd_dnnl_md(4, x->md.dims, dnnl_f32, dnnl_nchw);
  dnnl_primitive_t p = mexd_dnnl_reorder_new(&x->md, &md, error);
  dnnl_memory_t m = add_prim(r, p) ? new_mem(r, &md, DNNL_MEMORY_NONE, error) : NULL;
  if (!m)
    return FALSE;
  Step s = {.prim = p, .nargs = 2, .trace = name, .tmem = m};
  s.args[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, x->m};
  s.args[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, m};
  memcpy(s.tdims, x->md.dims, sizeof s.tdims);
  g_array_append_val(r->steps, s);
  return TRUE;
}

static gboolean bottleneck(Trunk *r, const MexdDnnlConvW *cw, Act *x, GError **error)
{
  Act t1, t2, y;
  if (!conv_step(r, &cw[0], x, TRUE, AR_T1, &t1, error) ||
      !conv_step(r, &cw[1], &t1, TRUE, AR_T2, &t2, error))
    return FALSE;
  PlanConv c3;
  if (!init_conv(r, &c3, &cw[2], &t2.md, TRUE, TRUE, NULL, error))
    return FALSE;
  if (cw[3].w) {
    /* the downsample writes the residual into the other ping-pong buffer, in c3's layout */
    PlanConv dn;
    if (!init_conv(r, &dn, &cw[3], &x->md, FALSE, FALSE, &c3.c.dst_md, error) ||
        !arena_act(r, &c3.c.dst_md, x->arena == AR_A ? AR_B : AR_A, &y, error) ||
        !emit_conv(r, &dn, x, &y, error))
      return FALSE;
  } else if (dnnl_memory_desc_equal(&x->md, &c3.c.dst_md)) {
    y = *x; /* the residual is the input itself: added in place */
  } else if (!as_md(r, x, &c3.c.dst_md, x->arena == AR_A ? AR_B : AR_A, &y, error)) {
    return FALSE;
  }
  if (!emit_conv(r, &c3, &t2, &y, error))
    return FALSE;
  *x = y;
  return TRUE;
}

static gboolean build(Trunk *r, int64_t B, GError **error)
{
  plan_clear(r);
  r->prims = g_ptr_array_new();
  r->mems = g_ptr_array_new();
  r->steps = g_array_new(FALSE, FALSE, sizeof(Step));
  r->binds = g_array_new(FALSE, FALSE, sizeof(Bind));
  const int64_t S = r->input_size;
  dnnl_memory_desc_t umd = mexd_dnnl_md(4, (int64_t[]){B, 3, S, S}, dnnl_f32, dnnl_nchw);
  if (!(r->in_user = new_mem(r, &umd, DNNL_MEMORY_NONE, error)))
    return FALSE;
  /* stem: the input in the stem's layout (and dtype), conv + ReLU, max-pool 3×3/2 pad 1 */
  Act in = {r->in_user, umd, -1}, x, s, sx;
  PlanConv st;
  if (!init_conv(r, &st, &r->stem, &umd, TRUE, FALSE, NULL, error) ||
      !as_md(r, &in, &st.c.src_md, AR_IN, &sx, error) ||
      !arena_act(r, &st.c.dst_md, AR_A, &s, error) || !emit_conv(r, &st, &sx, &s, error))
    return FALSE;
  {
    const int64_t H = s.md.dims[2], W = s.md.dims[3], OH = (H - 1) / 2 + 1, OW = (W - 1) / 2 + 1;
    dnnl_memory_desc_t pmd = mexd_dnnl_md(4, (int64_t[]){B, s.md.dims[1], OH, OW},
                                          s.md.data_type, dnnl_format_tag_any);
    dnnl_pooling_desc_t pd;
    dnnl_dims_t strides = {2, 2}, kernel = {3, 3}, pl = {1, 1};
    dnnl_dims_t pr = {(OH - 1) * 2 + 3 - H - 1, (OW - 1) * 2 + 3 - W - 1};
    dnnl_primitive_desc_t ppd = NULL;
    dnnl_primitive_t p = NULL;
    gboolean ok = mexd_dnnl_ok(dnnl_pooling_forward_desc_init(&pd, dnnl_forward_inference,
                                                              dnnl_pooling_max, &s.md, &pmd,
                                                              strides, kernel, pl, pr),
                               "the max-pool's descriptor", error) &&
                  mexd_dnnl_ok(dnnl_primitive_desc_create(&ppd, &pd, NULL,
                                                          mexd_dnnl_engine(NULL), NULL),
                               "a max-pool for these shapes", error) &&
                  mexd_dnnl_ok(dnnl_primitive_create(&p, ppd), "creating the max-pool", error);
    if (ok) {
      pmd = *dnnl_primitive_desc_query_md(ppd, dnnl_query_dst_md, 0);
      ok = arena_act(r, &pmd, AR_B, &x, error);
    }
    if (ppd)
      dnnl_primitive_desc_destroy(ppd);
    if (!add_prim(r, p) || !ok)
      return FALSE;
    add_step(r, p, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, s.m}, {DNNL_ARG_DST, x.m}});
  }
  if (!trace_step(r, &x, "stem", error))
    return FALSE;
  static const char *const layer_names[3] = {"layer1", "layer2", "layer3"};
  for (int i = 0, L = 0, in_layer = 0; i < r->n_blocks; i++) {
    if (!bottleneck(r, &r->blocks[4 * i], &x, error))
      return FALSE;
    if (++in_layer == r->layer_blocks[L]) {
      if (!trace_step(r, &x, layer_names[L], error))
        return FALSE;
      L++;
      in_layer = 0;
    }
  }
  /* global average pooling: an average pool over the whole H×W (oneDNN's reduction is a
   * reference kernel here: 7% of the batch), its [B, C, 1, 1] reordered into the caller's
   * [B, C] f32 when it is not already that (bf16: oneDNN pools bf16 into bf16 only, with f32
   * accumulation; the one rounding of the mean to bf16 is well inside the bf16 bound) */
  {
    const int64_t H = x.md.dims[2], W = x.md.dims[3];
    dnnl_memory_desc_t omd =
        mexd_dnnl_md(4, (int64_t[]){B, x.md.dims[1], 1, 1}, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_t amd = mexd_dnnl_md(4, (int64_t[]){B, x.md.dims[1], 1, 1},
                                          x.md.data_type, dnnl_format_tag_any);
    dnnl_pooling_desc_t pd;
    dnnl_dims_t strides = {1, 1}, kernel = {H, W}, pz = {0, 0};
    dnnl_primitive_desc_t ppd = NULL;
    dnnl_primitive_t p = NULL;
    Act avg, o;
    gboolean ok = mexd_dnnl_ok(dnnl_pooling_forward_desc_init(
                                   &pd, dnnl_forward_inference, dnnl_pooling_avg_exclude_padding,
                                   &x.md, &amd, strides, kernel, pz, pz),
                               "the average pooling's descriptor", error) &&
                  mexd_dnnl_ok(dnnl_primitive_desc_create(&ppd, &pd, NULL,
                                                          mexd_dnnl_engine(NULL), NULL),
                               "an average pooling for these shapes", error) &&
                  mexd_dnnl_ok(dnnl_primitive_create(&p, ppd), "creating the average pooling",
                               error);
    if (ok)
      amd = *dnnl_primitive_desc_query_md(ppd, dnnl_query_dst_md, 0);
    if (ppd)
      dnnl_primitive_desc_destroy(ppd);
    if (!ok || !add_prim(r, p) || !(r->out_user = new_mem(r, &omd, DNNL_MEMORY_NONE, error)))
      return FALSE;
    if (dnnl_memory_desc_equal(&amd, &omd)) {
      o = (Act){r->out_user, omd, -1};
      avg = o;
    } else if (!arena_act(r, &amd, AR_T1, &avg, error)) {
      return FALSE;
    }
    add_step(r, p, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_SRC, x.m}, {DNNL_ARG_DST, avg.m}});
    if (avg.m != r->out_user) {
      dnnl_primitive_t rp = mexd_dnnl_reorder_new(&amd, &omd, error);
      if (!add_prim(r, rp))
        return FALSE;
      add_step(r, rp, 2, (dnnl_exec_arg_t[]){{DNNL_ARG_FROM, avg.m}, {DNNL_ARG_TO, r->out_user}});
    }
  }
  /* the arenas and the scratchpad, now that their sizes are known */
  for (int i = 0; i < N_AR; i++)
    if (r->arena_size[i] && !(r->arena[i] = g_try_malloc(r->arena_size[i])))
      return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                       "cannot allocate %zu bytes for the ResNet trunk's activations at batch %"
                       G_GINT64_FORMAT, r->arena_size[i], B);
  for (guint i = 0; i < r->binds->len; i++) {
    Bind *b = &g_array_index(r->binds, Bind, i);
    if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(b->m, r->arena[b->arena]), "memory", error))
      return FALSE;
  }
  dnnl_memory_desc_t smd =
      mexd_dnnl_md(1, (int64_t[]){(int64_t)MAX(r->scratch_size, 1)}, dnnl_u8, dnnl_x);
  if (!(r->scratch = g_try_malloc(MAX(r->scratch_size, 1))) ||
      !(r->scratch_mem = new_mem(r, &smd, r->scratch, error)))
    return r->scratch ? FALSE
                      : mexd_fail(error, MEXD_ERROR_NO_MEMORY, "cannot allocate %zu bytes",
                                  r->scratch_size);
  for (guint i = 0; i < r->steps->len; i++) {
    Step *st2 = &g_array_index(r->steps, Step, i);
    for (int a = 0; a < st2->nargs; a++)
      if (st2->args[a].arg == DNNL_ARG_SCRATCHPAD)
        st2->args[a].memory = r->scratch_mem;
  }
  r->B = B;
  return TRUE;
}

gboolean mexd_resnet_dnnl_forward(MexdResnetDnnl *rd, const float *x, int64_t B, float *out,
                                  MexdTrace *trace, MexdBackend *be, GError **error)
{
  /* the plan for B, else the least recently used one rebuilt for B */
  Trunk *r = &rd->plan[0];
  for (int i = 0; i < N_PLANS; i++)
    if (rd->plan[i].B == B || (r->B != B && rd->plan[i].used < r->used))
      r = &rd->plan[i];
  r->used = ++rd->clock;
  if (r->B != B && !build(r, B, error)) {
    plan_clear(r);
    return FALSE;
  }
  dnnl_stream_t s = mexd_dnnl_stream(error);
  if (!s || !mexd_dnnl_ok(dnnl_memory_set_data_handle(r->in_user, (void *)x), "memory", error) ||
      !mexd_dnnl_ok(dnnl_memory_set_data_handle(r->out_user, out), "memory", error))
    return FALSE;
  for (guint i = 0; i < r->steps->len; i++) {
    Step *st = &g_array_index(r->steps, Step, i);
    g_autoptr(MexdTensor) t = NULL;
    if (st->trace) {
      if (!trace)
        continue;
      if (!(t = mexd_tensor_new(be, MEXD_DTYPE_F32, 4, st->tdims, error)) ||
          !mexd_dnnl_ok(dnnl_memory_set_data_handle(st->tmem, mexd_tensor_host_data(t)),
                        "memory", error))
        return FALSE;
    }
    if (!mexd_dnnl_ok(dnnl_primitive_execute(st->prim, s, st->nargs, st->args),
                      "the ResNet trunk", error))
      return FALSE;
    if (t && (!mexd_dnnl_ok(dnnl_stream_wait(s), "the ResNet trunk", error) ||
              !mexd_trace_put(trace, NULL, st->trace, t, error)))
      return FALSE;
  }
  return mexd_dnnl_ok(dnnl_stream_wait(s), "the ResNet trunk", error);
}

/* ---- linear layers (ViT, CTransPath) ---- */

/* The bf16 copies of the inputs and the scratchpads of the linear layers and batched products
 * live in one growable buffer per thread, shared by all layers (each run waits for its
 * primitive): kept per layer they were 3 GB for a ViT-B/16 at batch 64. */
typedef struct {
  void *p;
  size_t size;
} Stage;

static void stage_free(gpointer data)
{
  Stage *st = data;
  g_free(st->p);
  g_free(st);
}

static GPrivate stage_key = G_PRIVATE_INIT(stage_free);

#define ALIGN64(n) (((n) + 63) & ~(size_t)63)

/* The thread's staging buffer, at least n bytes. */
static char *stage_get(size_t n, GError **error)
{
  Stage *st = g_private_get(&stage_key);
  if (!st) {
    st = g_new0(Stage, 1);
    g_private_set(&stage_key, st);
  }
  if (st->size < n) {
    g_free(st->p);
    st->size = 0;
    if (!(st->p = g_try_malloc(n)))
      return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY,
                            "cannot allocate %zu bytes of oneDNN staging memory", n);
    st->size = n;
  }
  return st->p;
}

struct _MexdDnnlLinear {
  const float *w, *b;
  int64_t N, K;
  gboolean gelu, bf16;
  /* for M rows */
  int64_t M;
  dnnl_primitive_t prim, to_bf16;
  dnnl_memory_t wei, bias, src, dst, src_f32, scratch_mem;
  size_t src_size, scratch_size; /* bytes of the staging buffer: bf16 input, scratchpad */
};

static void linear_clear(MexdDnnlLinear *l)
{
  if (l->prim)
    dnnl_primitive_destroy(l->prim);
  if (l->to_bf16)
    dnnl_primitive_destroy(l->to_bf16);
  dnnl_memory_t ms[] = {l->wei, l->bias, l->src, l->dst, l->src_f32, l->scratch_mem};
  for (size_t i = 0; i < G_N_ELEMENTS(ms); i++)
    if (ms[i])
      dnnl_memory_destroy(ms[i]);
  l->prim = l->to_bf16 = NULL;
  l->wei = l->bias = l->src = l->dst = l->src_f32 = l->scratch_mem = NULL;
  l->src_size = l->scratch_size = 0;
  l->M = 0;
}

MexdDnnlLinear *mexd_dnnl_linear_new(const float *w, const float *b, int64_t N, int64_t K,
                                     gboolean gelu, gboolean bf16, GError **error)
{
  if (!mexd_dnnl_engine(error) || (bf16 && !mexd_dnnl_check_bf16(error)))
    return NULL;
  MexdDnnlLinear *l = g_new0(MexdDnnlLinear, 1);
  *l = (MexdDnnlLinear){.w = w, .b = b, .N = N, .K = K, .gelu = gelu, .bf16 = bf16};
  return l;
}

void mexd_dnnl_linear_free(MexdDnnlLinear *l)
{
  if (!l)
    return;
  linear_clear(l);
  g_free(l);
}

static gboolean linear_build(MexdDnnlLinear *l, int64_t M, GError **error)
{
  linear_clear(l);
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  if (!eng)
    return FALSE;
  const dnnl_data_type_t dt = l->bf16 ? dnnl_bf16 : dnnl_f32;
  dnnl_memory_desc_t smd = mexd_dnnl_md(2, (int64_t[]){M, l->K}, dt, dnnl_ab);
  dnnl_memory_desc_t wmd = mexd_dnnl_md(2, (int64_t[]){l->K, l->N}, dt, dnnl_format_tag_any);
  dnnl_memory_desc_t wu = mexd_dnnl_md(2, (int64_t[]){l->K, l->N}, dnnl_f32, dnnl_ba);
  dnnl_memory_desc_t bmd = mexd_dnnl_md(2, (int64_t[]){1, l->N}, dnnl_f32, dnnl_ab);
  dnnl_memory_desc_t dmd = mexd_dnnl_md(2, (int64_t[]){M, l->N}, dnnl_f32, dnnl_ab);
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  size_t scratch = 0;
  gboolean ok =
      mexd_dnnl_ok(dnnl_matmul_desc_init(&md, &smd, &wmd, l->b ? &bmd : NULL, &dmd),
                   "a matmul's descriptor", error) &&
      mexd_dnnl_ok(dnnl_primitive_attr_create(&attr), "attributes", error) &&
      mexd_dnnl_ok(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                   "scratchpad mode", error) &&
      mexd_dnnl_ok(dnnl_post_ops_create(&po), "post-ops", error) &&
      (!l->gelu || mexd_dnnl_ok(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf,
                                                             0.0f, 0.0f),
                                "GELU post-op", error)) &&
      mexd_dnnl_ok(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops", error) &&
      mexd_dnnl_ok(dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL),
                   "a matmul for these shapes", error);
  if (ok) {
    wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    scratch = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    ok = mexd_dnnl_ok(dnnl_primitive_create(&l->prim, pd), "creating a matmul", error);
  }
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (po)
    dnnl_post_ops_destroy(po);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  dnnl_memory_desc_t spmd = mexd_dnnl_md(1, (int64_t[]){(int64_t)MAX(scratch, 1)}, dnnl_u8, dnnl_x);
  void *wh = NULL;
  ok = ok &&
       mexd_dnnl_ok(dnnl_memory_create(&l->wei, &wmd, eng, DNNL_MEMORY_ALLOCATE), "memory",
                    error) &&
       mexd_dnnl_ok(dnnl_memory_get_data_handle(l->wei, &wh), "memory", error) &&
       mexd_dnnl_reorder_now(&wu, (void *)l->w, &wmd, wh, error) &&
       (!l->b || mexd_dnnl_ok(dnnl_memory_create(&l->bias, &bmd, eng, (void *)l->b), "memory",
                              error)) &&
       mexd_dnnl_ok(dnnl_memory_create(&l->dst, &dmd, eng, DNNL_MEMORY_NONE), "memory", error) &&
       mexd_dnnl_ok(dnnl_memory_create(&l->scratch_mem, &spmd, eng, DNNL_MEMORY_NONE), "memory",
                    error);
  l->scratch_size = ALIGN64(MAX(scratch, 1));
  if (ok && l->bf16) {
    /* x → bf16 in a buffer of the layer's own */
    dnnl_memory_desc_t fmd = mexd_dnnl_md(2, (int64_t[]){M, l->K}, dnnl_f32, dnnl_ab);
    l->src_size = ALIGN64(dnnl_memory_desc_get_size(&smd));
    ok = mexd_dnnl_ok(dnnl_memory_create(&l->src, &smd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         mexd_dnnl_ok(dnnl_memory_create(&l->src_f32, &fmd, eng, DNNL_MEMORY_NONE), "memory",
                      error) &&
         (l->to_bf16 = mexd_dnnl_reorder_new(&fmd, &smd, error)) != NULL;
  } else if (ok) {
    ok = mexd_dnnl_ok(dnnl_memory_create(&l->src, &smd, eng, DNNL_MEMORY_NONE), "memory", error);
  }
  if (!ok) {
    if (error && !*error)
      mexd_fail(error, MEXD_ERROR_NO_MEMORY, "no memory for a %" G_GINT64_FORMAT "x%"
                G_GINT64_FORMAT " linear layer at %" G_GINT64_FORMAT " rows", l->N, l->K, M);
    linear_clear(l);
    return FALSE;
  }
  l->M = M;
  return TRUE;
}

gboolean mexd_dnnl_linear_run(MexdDnnlLinear *l, const float *x, int64_t M, float *y,
                              GError **error)
{
  if (l->M != M && !linear_build(l, M, error))
    return FALSE;
  dnnl_stream_t s = mexd_dnnl_stream(error);
  char *stage = s ? stage_get(l->src_size + l->scratch_size, error) : NULL;
  if (!stage || !mexd_dnnl_ok(dnnl_memory_set_data_handle(l->dst, y), "memory", error) ||
      !mexd_dnnl_ok(dnnl_memory_set_data_handle(l->scratch_mem, stage + l->src_size), "memory",
                    error) ||
      (l->bf16 && !mexd_dnnl_ok(dnnl_memory_set_data_handle(l->src, stage), "memory", error)))
    return FALSE;
  if (l->bf16) {
    dnnl_exec_arg_t ra[] = {{DNNL_ARG_FROM, l->src_f32}, {DNNL_ARG_TO, l->src}};
    if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(l->src_f32, (void *)x), "memory", error) ||
        !mexd_dnnl_ok(dnnl_primitive_execute(l->to_bf16, s, 2, ra), "a reorder to bf16", error))
      return FALSE;
  } else if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(l->src, (void *)x), "memory", error)) {
    return FALSE;
  }
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, l->src},
                             {DNNL_ARG_WEIGHTS, l->wei},
                             {DNNL_ARG_DST, l->dst},
                             {DNNL_ARG_SCRATCHPAD, l->scratch_mem},
                             {DNNL_ARG_BIAS, l->bias}};
  return mexd_dnnl_ok(dnnl_primitive_execute(l->prim, s, l->bias ? 5 : 4, args), "a matmul",
                      error) &&
         mexd_dnnl_ok(dnnl_stream_wait(s), "a matmul", error);
}

/* ---- batched products (attention) ---- */

struct _MexdDnnlBmm {
  gboolean trans_b, bf16;
  int64_t batch, M, K, N;
  float scale;
  dnnl_primitive_t prim, ra, rb;
  dnnl_memory_t a, b, c, af, bf, sp;
  size_t asize, bsize, spsize; /* bytes of the staging buffer: bf16 a, bf16 b, scratchpad */
};

static void bmm_clear(MexdDnnlBmm *m)
{
  dnnl_primitive_t ps[] = {m->prim, m->ra, m->rb};
  for (size_t i = 0; i < G_N_ELEMENTS(ps); i++)
    if (ps[i])
      dnnl_primitive_destroy(ps[i]);
  dnnl_memory_t ms[] = {m->a, m->b, m->c, m->af, m->bf, m->sp};
  for (size_t i = 0; i < G_N_ELEMENTS(ms); i++)
    if (ms[i])
      dnnl_memory_destroy(ms[i]);
  gboolean t = m->trans_b, bf = m->bf16;
  memset(m, 0, sizeof *m);
  m->trans_b = t;
  m->bf16 = bf;
}

MexdDnnlBmm *mexd_dnnl_bmm_new(gboolean trans_b, gboolean bf16)
{
  MexdDnnlBmm *m = g_new0(MexdDnnlBmm, 1);
  m->trans_b = trans_b;
  m->bf16 = bf16;
  return m;
}

void mexd_dnnl_bmm_free(MexdDnnlBmm *m)
{
  if (!m)
    return;
  bmm_clear(m);
  g_free(m);
}

static gboolean bmm_build(MexdDnnlBmm *m, int64_t batch, int64_t M, int64_t K, int64_t N,
                          float scale, GError **error)
{
  bmm_clear(m);
  dnnl_engine_t eng = mexd_dnnl_engine(error);
  if (!eng)
    return FALSE;
  const dnnl_data_type_t dt = m->bf16 ? dnnl_bf16 : dnnl_f32;
  const dnnl_format_tag_t btag = m->trans_b ? dnnl_acb : dnnl_abc;
  dnnl_memory_desc_t amd = mexd_dnnl_md(3, (int64_t[]){batch, M, K}, dt, dnnl_abc);
  dnnl_memory_desc_t bmd = mexd_dnnl_md(3, (int64_t[]){batch, K, N}, dt, btag);
  dnnl_memory_desc_t cmd = mexd_dnnl_md(3, (int64_t[]){batch, M, N}, dnnl_f32, dnnl_abc);
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  size_t scratch = 0;
  gboolean ok =
      mexd_dnnl_ok(dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd), "a matmul's descriptor",
                   error) &&
      mexd_dnnl_ok(dnnl_primitive_attr_create(&attr), "attributes", error) &&
      mexd_dnnl_ok(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                   "scratchpad mode", error) &&
      (scale == 1.0f ||
       mexd_dnnl_ok(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "output scale",
                    error)) &&
      mexd_dnnl_ok(dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL),
                   "a batched matmul for these shapes", error);
  if (ok) {
    scratch = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    ok = mexd_dnnl_ok(dnnl_primitive_create(&m->prim, pd), "creating a matmul", error);
  }
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  dnnl_memory_desc_t spmd = mexd_dnnl_md(1, (int64_t[]){(int64_t)MAX(scratch, 1)}, dnnl_u8, dnnl_x);
  m->spsize = ALIGN64(MAX(scratch, 1));
  ok = ok && mexd_dnnl_ok(dnnl_memory_create(&m->sp, &spmd, eng, DNNL_MEMORY_NONE), "memory", error) &&
       mexd_dnnl_ok(dnnl_memory_create(&m->c, &cmd, eng, DNNL_MEMORY_NONE), "memory", error);
  if (ok && m->bf16) {
    dnnl_memory_desc_t afmd = mexd_dnnl_md(3, (int64_t[]){batch, M, K}, dnnl_f32, dnnl_abc);
    dnnl_memory_desc_t bfmd = mexd_dnnl_md(3, (int64_t[]){batch, K, N}, dnnl_f32, btag);
    m->asize = ALIGN64(dnnl_memory_desc_get_size(&amd));
    m->bsize = ALIGN64(dnnl_memory_desc_get_size(&bmd));
    ok = mexd_dnnl_ok(dnnl_memory_create(&m->a, &amd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         mexd_dnnl_ok(dnnl_memory_create(&m->b, &bmd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         mexd_dnnl_ok(dnnl_memory_create(&m->af, &afmd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         mexd_dnnl_ok(dnnl_memory_create(&m->bf, &bfmd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         (m->ra = mexd_dnnl_reorder_new(&afmd, &amd, error)) &&
         (m->rb = mexd_dnnl_reorder_new(&bfmd, &bmd, error));
  } else if (ok) {
    ok = mexd_dnnl_ok(dnnl_memory_create(&m->a, &amd, eng, DNNL_MEMORY_NONE), "memory", error) &&
         mexd_dnnl_ok(dnnl_memory_create(&m->b, &bmd, eng, DNNL_MEMORY_NONE), "memory", error);
  }
  if (!ok) {
    if (error && !*error)
      mexd_fail(error, MEXD_ERROR_NO_MEMORY, "no memory for a batched matmul");
    bmm_clear(m);
    return FALSE;
  }
  m->batch = batch;
  m->M = M;
  m->K = K;
  m->N = N;
  m->scale = scale;
  return TRUE;
}

gboolean mexd_dnnl_bmm_run(MexdDnnlBmm *m, const float *a, const float *b, float *c,
                           int64_t batch, int64_t M, int64_t K, int64_t N, float scale,
                           GError **error)
{
  if ((m->batch != batch || m->M != M || m->K != K || m->N != N || m->scale != scale) &&
      !bmm_build(m, batch, M, K, N, scale, error))
    return FALSE;
  dnnl_stream_t s = mexd_dnnl_stream(error);
  char *stage = s ? stage_get(m->asize + m->bsize + m->spsize, error) : NULL;
  if (!stage || !mexd_dnnl_ok(dnnl_memory_set_data_handle(m->c, c), "memory", error) ||
      !mexd_dnnl_ok(dnnl_memory_set_data_handle(m->sp, stage + m->asize + m->bsize), "memory",
                    error))
    return FALSE;
  if (m->bf16) {
    if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(m->a, stage), "memory", error) ||
        !mexd_dnnl_ok(dnnl_memory_set_data_handle(m->b, stage + m->asize), "memory", error))
      return FALSE;
    dnnl_exec_arg_t ra[] = {{DNNL_ARG_FROM, m->af}, {DNNL_ARG_TO, m->a}};
    dnnl_exec_arg_t rb[] = {{DNNL_ARG_FROM, m->bf}, {DNNL_ARG_TO, m->b}};
    if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(m->af, (void *)a), "memory", error) ||
        !mexd_dnnl_ok(dnnl_memory_set_data_handle(m->bf, (void *)b), "memory", error) ||
        !mexd_dnnl_ok(dnnl_primitive_execute(m->ra, s, 2, ra), "a reorder to bf16", error) ||
        !mexd_dnnl_ok(dnnl_primitive_execute(m->rb, s, 2, rb), "a reorder to bf16", error))
      return FALSE;
  } else if (!mexd_dnnl_ok(dnnl_memory_set_data_handle(m->a, (void *)a), "memory", error) ||
             !mexd_dnnl_ok(dnnl_memory_set_data_handle(m->b, (void *)b), "memory", error)) {
    return FALSE;
  }
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, m->a},
                            {DNNL_ARG_WEIGHTS, m->b},
                            {DNNL_ARG_DST, m->c},
                            {DNNL_ARG_SCRATCHPAD, m->sp}};
  return mexd_dnnl_ok(dnnl_primitive_execute(m->prim, s, 4, args), "a batched matmul", error) &&
         mexd_dnnl_ok(dnnl_stream_wait(s), "a batched matmul", error);
}

#endif
