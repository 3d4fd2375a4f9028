/* optim.c: Adam, RAdam and Lookahead on host float32 arrays, and clip_grad_norm_; see optim.h.
 *
 * Matching PyTorch: every tensor operation of torch's single-tensor code is one float32 operation
 * here, in torch's order, with its Python-float scalars rounded to float32 the way TensorIterator
 * does (a double scalar operand is cast to the tensor's dtype).  The scalar arithmetic (bias
 * corrections, rho_t, the rectification term) is in double like Python's.  Two details of torch
 * that change the rounding: `scalar / tensor` is Tensor.__rdiv__ = tensor.reciprocal() * scalar,
 * and addcdiv_(t1, t2, value) is self + (value * t1) / t2.  torch's vectorised CPU kernels use
 * FMA for `add(x, alpha)` where these lines round twice, so the two can differ by an ulp of an
 * intermediate; the test allows for that.  The library is built as ISO C11 (-std=c11), where GCC
 * does not contract a*b+c into an FMA, so the results here do not depend on the target. */
#include "train/optim.h"

#include "core/error.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

typedef struct {
  char *name;
  float *param;
  const float *grad;
  int64_t n;
  double weight_decay;
  float *exp_avg, *exp_avg_sq; /* Adam / RAdam */
  float *slow;                 /* Lookahead (the wrapper's own list) */
  char *key_a, *key_b;         /* the state names of exp_avg / exp_avg_sq, or of slow */
} Param;

struct _MexdOptim {
  MexdOptimKind kind;
  MexdAdamConfig cfg; /* Adam / RAdam */
  int64_t step;       /* Adam / RAdam: steps taken; Lookahead: lookahead_step */
  GPtrArray *params;  /* Param *, in registration order */
  GHashTable *by_name; /* name -> Param * (not owned) */
  /* Lookahead */
  MexdOptim *inner;
  double alpha;
  int k;
  MexdLookaheadInit init;
};

#define STEP_KEY "optim.step"
#define LOOKAHEAD_STEP_KEY "optim.lookahead.step"

static void param_free(gpointer p)
{
  Param *q = p;
  g_free(q->name);
  g_free(q->exp_avg);
  g_free(q->exp_avg_sq);
  g_free(q->slow);
  g_free(q->key_a);
  g_free(q->key_b);
  g_free(q);
}

void mexd_adam_config_init(MexdAdamConfig *cfg)
{
  g_return_if_fail(cfg);
  *cfg = (MexdAdamConfig){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

static MexdOptim *optim_alloc(MexdOptimKind kind)
{
  MexdOptim *o = g_new0(MexdOptim, 1);
  o->kind = kind;
  o->params = g_ptr_array_new_with_free_func(param_free);
  o->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  return o;
}

static MexdOptim *adam_like_new(MexdOptimKind kind, const MexdAdamConfig *cfg, GError **error)
{
  const char *what = kind == MEXD_OPTIM_ADAM ? "Adam" : "RAdam";
  if (!cfg)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: the configuration is NULL",
                          what);
  /* torch's checks, plus finiteness */
  if (!(cfg->lr >= 0 && isfinite(cfg->lr)))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: invalid learning rate %g",
                          what, cfg->lr);
  if (!(cfg->eps >= 0 && isfinite(cfg->eps)))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: invalid eps %g", what,
                          cfg->eps);
  if (!(cfg->beta1 >= 0 && cfg->beta1 < 1))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: invalid beta1 %g (must be in [0, 1))", what, cfg->beta1);
  if (!(cfg->beta2 >= 0 && cfg->beta2 < 1))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: invalid beta2 %g (must be in [0, 1))", what, cfg->beta2);
  if (!(cfg->weight_decay >= 0 && isfinite(cfg->weight_decay)))
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: invalid weight decay %g",
                          what, cfg->weight_decay);
  MexdOptim *o = optim_alloc(kind);
  o->cfg = *cfg;
  return o;
}

MexdOptim *mexd_optim_adam_new(const MexdAdamConfig *cfg, GError **error)
{
  return adam_like_new(MEXD_OPTIM_ADAM, cfg, error);
}

MexdOptim *mexd_optim_radam_new(const MexdAdamConfig *cfg, GError **error)
{
  return adam_like_new(MEXD_OPTIM_RADAM, cfg, error);
}

/* The wrapper's record of an inner parameter: the slow weights, a copy of the values now. */
static Param *slow_param_new(const Param *in)
{
  Param *q = g_new0(Param, 1);
  q->name = g_strdup(in->name);
  q->param = in->param;
  q->grad = in->grad;
  q->n = in->n;
  q->slow = g_memdup2(in->param, (gsize)in->n * sizeof(float));
  q->key_a = g_strdup_printf("optim.%s.lookahead_slow", in->name);
  return q;
}

MexdOptim *mexd_optim_lookahead_new(MexdOptim *inner, double alpha, int k, MexdLookaheadInit init,
                                    GError **error)
{
  if (!inner)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "Lookahead: the inner optimizer is NULL");
  if (inner->kind == MEXD_OPTIM_LOOKAHEAD) {
    mexd_optim_free(inner);
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "Lookahead: the inner optimizer is already a Lookahead");
  }
  if (!(alpha >= 0 && alpha <= 1)) {
    mexd_optim_free(inner);
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "Lookahead: invalid slow update rate %g (must be in [0, 1])", alpha);
  }
  if (k < 1) {
    mexd_optim_free(inner);
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "Lookahead: invalid number of steps k = %d (must be >= 1)", k);
  }
  if (init != MEXD_LOOKAHEAD_TIMM && init != MEXD_LOOKAHEAD_INIT_AT_CREATION) {
    mexd_optim_free(inner);
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "Lookahead: invalid init mode %d",
                          (int)init);
  }
  MexdOptim *o = optim_alloc(MEXD_OPTIM_LOOKAHEAD);
  o->inner = inner;
  o->alpha = alpha;
  o->k = k;
  o->init = init;
  for (guint i = 0; i < inner->params->len; i++) {
    Param *q = slow_param_new(g_ptr_array_index(inner->params, i));
    g_ptr_array_add(o->params, q);
    g_hash_table_insert(o->by_name, q->name, q);
  }
  return o;
}

MexdOptim *mexd_optim_new_for_stage(int stage, GError **error)
{
  MexdAdamConfig cfg;
  mexd_adam_config_init(&cfg);
  switch (stage) {
  case 0:
  case 1: {
    cfg.lr = 2e-4;
    cfg.weight_decay = 1e-5;
    cfg.decoupled_weight_decay = TRUE;
    MexdOptim *inner = mexd_optim_radam_new(&cfg, error);
    return inner ? mexd_optim_lookahead_new(inner, 0.5, 6, MEXD_LOOKAHEAD_TIMM, error) : NULL;
  }
  case 2:
    cfg.lr = 1e-3;
    return mexd_optim_adam_new(&cfg, error);
  default:
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "no optimizer for training stage %d (stages are 0, 1 and 2)", stage);
  }
}

void mexd_optim_free(MexdOptim *opt)
{
  if (!opt)
    return;
  mexd_optim_free(opt->inner);
  g_hash_table_destroy(opt->by_name);
  g_ptr_array_free(opt->params, TRUE);
  g_free(opt);
}

MexdOptimKind mexd_optim_kind(const MexdOptim *opt)
{
  g_return_val_if_fail(opt, MEXD_OPTIM_ADAM);
  return opt->kind;
}

int mexd_optim_n_params(const MexdOptim *opt)
{
  g_return_val_if_fail(opt, 0);
  return (int)opt->params->len;
}

static const char *kind_name(const MexdOptim *opt)
{
  switch (opt->kind) {
  case MEXD_OPTIM_ADAM: return "Adam";
  case MEXD_OPTIM_RADAM: return "RAdam";
  case MEXD_OPTIM_LOOKAHEAD: return "Lookahead";
  }
  return "optimizer";
}

static gboolean add_param(MexdOptim *opt, const char *name, float *param, const float *grad,
                          int64_t n, gboolean own_wd, double weight_decay, GError **error)
{
  if (!opt)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the optimizer is NULL");
  if (!name || !*name)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: a parameter needs a non-empty name", kind_name(opt));
  if (!g_utf8_validate(name, -1, NULL))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: a parameter name is not UTF-8",
                     kind_name(opt));
  if (!param || !grad)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: parameter '%s': %s is NULL",
                     kind_name(opt), name, !param ? "the parameter array" : "the gradient array");
  if (n < 1 || (uint64_t)n > G_MAXSIZE / sizeof(float) / 2)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: parameter '%s': invalid element count %" PRId64, kind_name(opt), name,
                     n);
  if (own_wd && !(weight_decay >= 0 && isfinite(weight_decay)))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: parameter '%s': invalid weight decay %g", kind_name(opt), name,
                     weight_decay);
  if (g_hash_table_contains(opt->by_name, name))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: parameter '%s' is registered twice",
                     kind_name(opt), name);
  if (mexd_optim_get_step(opt) > 0 ||
      (opt->kind == MEXD_OPTIM_LOOKAHEAD && opt->step > 0))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: parameter '%s' added after the first step (all parameters must be "
                     "registered before training starts)",
                     kind_name(opt), name);

  if (opt->kind == MEXD_OPTIM_LOOKAHEAD) {
    if (!add_param(opt->inner, name, param, grad, n, own_wd, weight_decay, error))
      return FALSE;
    Param *q = slow_param_new(g_ptr_array_index(opt->inner->params, opt->inner->params->len - 1));
    g_ptr_array_add(opt->params, q);
    g_hash_table_insert(opt->by_name, q->name, q);
    return TRUE;
  }
  Param *q = g_new0(Param, 1);
  q->name = g_strdup(name);
  q->param = param;
  q->grad = grad;
  q->n = n;
  q->weight_decay = own_wd ? weight_decay : opt->cfg.weight_decay;
  q->exp_avg = g_try_new0(float, (gsize)n);
  q->exp_avg_sq = g_try_new0(float, (gsize)n);
  if (!q->exp_avg || !q->exp_avg_sq) {
    param_free(q);
    return mexd_fail(error, MEXD_ERROR_NO_MEMORY,
                     "%s: parameter '%s': cannot allocate the state of %" PRId64 " elements",
                     kind_name(opt), name, n);
  }
  q->key_a = g_strdup_printf("optim.%s.exp_avg", name);
  q->key_b = g_strdup_printf("optim.%s.exp_avg_sq", name);
  g_ptr_array_add(opt->params, q);
  g_hash_table_insert(opt->by_name, q->name, q);
  return TRUE;
}

gboolean mexd_optim_add_param(MexdOptim *opt, const char *name, float *param, const float *grad,
                              int64_t n, GError **error)
{
  return add_param(opt, name, param, grad, n, FALSE, 0, error);
}

gboolean mexd_optim_add_param_wd(MexdOptim *opt, const char *name, float *param,
                                 const float *grad, int64_t n, double weight_decay,
                                 GError **error)
{
  return add_param(opt, name, param, grad, n, TRUE, weight_decay, error);
}

/* ---- the steps ---- */

/* torch.optim.Adam / AdamW (1.13, _single_tensor_adam{,w}, not capturable, no amsgrad). */
static void adam_step(const MexdAdamConfig *c, int64_t step, Param *q)
{
  const double bc1 = 1.0 - pow(c->beta1, (double)step);
  const double bc2 = 1.0 - pow(c->beta2, (double)step);
  const double step_size = c->lr / bc1;
  const float b1 = (float)c->beta1, omb1 = (float)(1.0 - c->beta1);
  const float b2 = (float)c->beta2, omb2 = (float)(1.0 - c->beta2);
  const float bc2_sqrt = (float)sqrt(bc2);
  const float eps = (float)c->eps;
  const float neg_step_size = (float)-step_size;
  const gboolean coupled = !c->decoupled_weight_decay && q->weight_decay != 0;
  const gboolean decoupled = c->decoupled_weight_decay && q->weight_decay != 0;
  const float wd = (float)q->weight_decay;
  const float decay = (float)(1.0 - c->lr * q->weight_decay);
  float *restrict p = q->param, *restrict m = q->exp_avg, *restrict v = q->exp_avg_sq;
  const float *restrict g = q->grad;
  for (int64_t i = 0; i < q->n; i++) {
    float gi = g[i], pi = p[i];
    if (decoupled)
      pi = pi * decay; /* AdamW: param.mul_(1 - lr * weight_decay) */
    else if (coupled)
      gi = gi + wd * pi; /* grad.add(param, alpha=weight_decay) */
    float mi = m[i] * b1;
    mi = mi + omb1 * gi; /* exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1) */
    float vi = v[i] * b2;
    vi = vi + (omb2 * gi) * gi; /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) */
    float denom = sqrtf(vi) / bc2_sqrt;
    denom = denom + eps; /* (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps) */
    pi = pi + (neg_step_size * mi) / denom; /* param.addcdiv_(exp_avg, denom, value=-step_size) */
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

/* torch.optim.RAdam (1.13's _single_tensor_radam) with torch 2.x's decoupled weight decay. */
static void radam_step(const MexdAdamConfig *c, int64_t step, Param *q)
{
  const double t = (double)step;
  const double bc1 = 1.0 - pow(c->beta1, t);
  const double bc2 = 1.0 - pow(c->beta2, t);
  const double rho_inf = 2 / (1 - c->beta2) - 1;
  const double rho_t = rho_inf - 2 * t * pow(c->beta2, t) / bc2;
  const gboolean rectified = rho_t > 5.;
  const double rect =
    rectified ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
              : 0;
  const float b1 = (float)c->beta1, omb1 = (float)(1.0 - c->beta1);
  const float b2 = (float)c->beta2, omb2 = (float)(1.0 - c->beta2);
  const float bc1f = (float)bc1, lr = (float)c->lr, rectf = (float)rect;
  const float bc2_sqrt = (float)sqrt(bc2);
  const float eps = (float)c->eps;
  const gboolean coupled = !c->decoupled_weight_decay && q->weight_decay != 0;
  const gboolean decoupled = c->decoupled_weight_decay && q->weight_decay != 0;
  const float wd = (float)q->weight_decay;
  const float decay = (float)(1.0 - c->lr * q->weight_decay);
  float *restrict p = q->param, *restrict m = q->exp_avg, *restrict v = q->exp_avg_sq;
  const float *restrict g = q->grad;
  for (int64_t i = 0; i < q->n; i++) {
    float gi = g[i], pi = p[i];
    if (decoupled)
      pi = pi * decay; /* param.mul_(1 - lr * weight_decay), before the moments */
    else if (coupled)
      gi = gi + wd * pi;
    float mi = m[i] * b1;
    mi = mi + omb1 * gi;
    float vi = v[i] * b2;
    vi = vi + (omb2 * gi) * gi;
    const float mhat = mi / bc1f; /* exp_avg / bias_correction1 */
    if (rectified) {
      /* adaptive_lr = math.sqrt(bc2) / exp_avg_sq.sqrt().add_(eps), i.e. reciprocal() * scalar */
      float denom = sqrtf(vi) + eps;
      float adaptive_lr = (1.0f / denom) * bc2_sqrt;
      /* param.add_(bias_corrected_exp_avg * lr * adaptive_lr * rect, alpha=-1.0) */
      float u = mhat * lr;
      u = u * adaptive_lr;
      u = u * rectf;
      pi = pi - u;
    } else {
      pi = pi - mhat * lr; /* param.add_(bias_corrected_exp_avg * lr, alpha=-1.0) */
    }
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

/* timm's update_slow for one parameter: slow.add_(fast - slow, alpha=alpha); fast.copy_(slow). */
static void lookahead_sync(const MexdOptim *o, Param *q, gboolean first)
{
  float *restrict fast = q->param, *restrict slow = q->slow;
  const float a = (float)o->alpha;
  if (first && o->init == MEXD_LOOKAHEAD_TIMM)
    memcpy(slow, fast, (size_t)q->n * sizeof(float)); /* timm creates the buffer now */
  for (int64_t i = 0; i < q->n; i++) {
    float d = fast[i] - slow[i];
    float s = slow[i] + a * d;
    slow[i] = s;
    fast[i] = s;
  }
}

void mexd_optim_step(MexdOptim *opt)
{
  g_return_if_fail(opt);
  switch (opt->kind) {
  case MEXD_OPTIM_ADAM:
  case MEXD_OPTIM_RADAM:
    opt->step++;
    for (guint i = 0; i < opt->params->len; i++) {
      Param *q = g_ptr_array_index(opt->params, i);
      if (opt->kind == MEXD_OPTIM_ADAM)
        adam_step(&opt->cfg, opt->step, q);
      else
        radam_step(&opt->cfg, opt->step, q);
    }
    break;
  case MEXD_OPTIM_LOOKAHEAD:
    mexd_optim_step(opt->inner);
    opt->step++;
    if (opt->step % opt->k == 0) {
      gboolean first = opt->step == opt->k;
      for (guint i = 0; i < opt->params->len; i++)
        lookahead_sync(opt, g_ptr_array_index(opt->params, i), first);
    }
    break;
  }
}

int64_t mexd_optim_get_step(const MexdOptim *opt)
{
  g_return_val_if_fail(opt, 0);
  return opt->kind == MEXD_OPTIM_LOOKAHEAD ? opt->inner->step : opt->step;
}

double mexd_optim_get_lr(const MexdOptim *opt)
{
  g_return_val_if_fail(opt, 0);
  return opt->kind == MEXD_OPTIM_LOOKAHEAD ? opt->inner->cfg.lr : opt->cfg.lr;
}

void mexd_optim_set_lr(MexdOptim *opt, double lr)
{
  g_return_if_fail(opt);
  g_return_if_fail(lr >= 0 && isfinite(lr));
  if (opt->kind == MEXD_OPTIM_LOOKAHEAD)
    opt->inner->cfg.lr = lr;
  else
    opt->cfg.lr = lr;
}

/* ---- state ---- */

gboolean mexd_optim_state_foreach(MexdOptim *opt, MexdOptimStateFunc fn, gpointer user_data,
                                  GError **error)
{
  if (!opt || !fn)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the optimizer or the callback is NULL");
  if (opt->kind == MEXD_OPTIM_LOOKAHEAD) {
    if (!mexd_optim_state_foreach(opt->inner, fn, user_data, error))
      return FALSE;
    if (!fn(LOOKAHEAD_STEP_KEY, MEXD_ST_I64, &opt->step, 1, user_data, error))
      return FALSE;
    for (guint i = 0; i < opt->params->len; i++) {
      Param *q = g_ptr_array_index(opt->params, i);
      if (!fn(q->key_a, MEXD_ST_F32, q->slow, q->n, user_data, error))
        return FALSE;
    }
    return TRUE;
  }
  if (!fn(STEP_KEY, MEXD_ST_I64, &opt->step, 1, user_data, error))
    return FALSE;
  for (guint i = 0; i < opt->params->len; i++) {
    Param *q = g_ptr_array_index(opt->params, i);
    if (!fn(q->key_a, MEXD_ST_F32, q->exp_avg, q->n, user_data, error) ||
        !fn(q->key_b, MEXD_ST_F32, q->exp_avg_sq, q->n, user_data, error))
      return FALSE;
  }
  return TRUE;
}

/* The state array called `name` (its storage, dtype and count), or FALSE when there is none. */
static gboolean state_lookup(MexdOptim *opt, const char *name, void **data, MexdStDType *dtype,
                             int64_t *n)
{
  if (opt->kind == MEXD_OPTIM_LOOKAHEAD) {
    if (!strcmp(name, LOOKAHEAD_STEP_KEY)) {
      *data = &opt->step;
      *dtype = MEXD_ST_I64;
      *n = 1;
      return TRUE;
    }
    if (g_str_has_prefix(name, "optim.") && g_str_has_suffix(name, ".lookahead_slow")) {
      size_t len = strlen(name) - strlen("optim.") - strlen(".lookahead_slow");
      g_autofree char *pname = g_strndup(name + strlen("optim."), len);
      Param *q = g_hash_table_lookup(opt->by_name, pname);
      if (q) {
        *data = q->slow;
        *dtype = MEXD_ST_F32;
        *n = q->n;
        return TRUE;
      }
    }
    return state_lookup(opt->inner, name, data, dtype, n);
  }
  if (!strcmp(name, STEP_KEY)) {
    *data = &opt->step;
    *dtype = MEXD_ST_I64;
    *n = 1;
    return TRUE;
  }
  if (!g_str_has_prefix(name, "optim."))
    return FALSE;
  /* param names may hold dots: the suffix decides, the rest between "optim." and it is the name */
  static const char *const suffixes[] = {".exp_avg_sq", ".exp_avg"};
  for (int s = 0; s < 2; s++) {
    if (!g_str_has_suffix(name, suffixes[s]))
      continue;
    size_t len = strlen(name) - strlen("optim.") - strlen(suffixes[s]);
    g_autofree char *pname = g_strndup(name + strlen("optim."), len);
    Param *q = g_hash_table_lookup(opt->by_name, pname);
    if (!q)
      return FALSE;
    *data = s == 0 ? q->exp_avg_sq : q->exp_avg;
    *dtype = MEXD_ST_F32;
    *n = q->n;
    return TRUE;
  }
  return FALSE;
}

/* Checks `name` against this optimizer's state; on success *dst is its storage. */
static gboolean state_check(MexdOptim *opt, const char *name, MexdStDType dtype, const void *data,
                            int64_t n, void **dst, GError **error)
{
  MexdStDType want;
  int64_t want_n;
  if (!state_lookup(opt, name, dst, &want, &want_n))
    return mexd_fail(error, MEXD_ERROR_NOT_FOUND, "'%s' is not a state array of this %s", name,
                     kind_name(opt));
  if (dtype != want)
    return mexd_fail(error, MEXD_ERROR_DTYPE, "optimizer state '%s' is %s, expected %s", name,
                     mexd_st_dtype_name(dtype), mexd_st_dtype_name(want));
  if (n != want_n)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "optimizer state '%s' has %" PRId64 " elements, expected %" PRId64, name, n,
                     want_n);
  if (!data)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "optimizer state '%s': data is NULL",
                     name);
  if (dtype == MEXD_ST_I64) {
    int64_t v;
    memcpy(&v, data, sizeof v);
    if (v < 0)
      return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                       "optimizer state '%s' is a negative step count (%" PRId64 ")", name, v);
  }
  return TRUE;
}

gboolean mexd_optim_state_set(MexdOptim *opt, const char *name, MexdStDType dtype,
                              const void *data, int64_t n, GError **error)
{
  if (!opt || !name)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the optimizer or the name is NULL");
  void *dst = NULL;
  if (!state_check(opt, name, dtype, data, n, &dst, error))
    return FALSE;
  memcpy(dst, data, (size_t)n * mexd_st_dtype_size(dtype));
  return TRUE;
}

static gboolean save_one(const char *name, MexdStDType dtype, const void *data, int64_t n,
                         gpointer user_data, GError **error)
{
  MexdSafetensorsWriter *w = user_data;
  int64_t shape[1] = {n};
  return mexd_safetensors_writer_add(w, name, dtype, dtype == MEXD_ST_I64 ? 0 : 1, shape, data,
                                     (size_t)n * mexd_st_dtype_size(dtype), error);
}

gboolean mexd_optim_state_save(MexdOptim *opt, MexdSafetensorsWriter *w, GError **error)
{
  if (!w)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the safetensors writer is NULL");
  return mexd_optim_state_foreach(opt, save_one, w, error);
}

typedef struct {
  MexdSafetensors *st;
  GHashTable *seen; /* names of this optimizer's state */
  gboolean apply;
} LoadCtx;

static gboolean load_one(const char *name, MexdStDType dtype, const void *data, int64_t n,
                         gpointer user_data, GError **error)
{
  LoadCtx *c = user_data;
  const MexdStTensor *t = mexd_safetensors_find(c->st, name);
  const char *file = mexd_safetensors_name(c->st);
  if (!t)
    return mexd_fail(error, MEXD_ERROR_NOT_FOUND, "%s: optimizer state '%s' is missing", file,
                     name);
  if (t->dtype != dtype)
    return mexd_fail(error, MEXD_ERROR_DTYPE, "%s: optimizer state '%s' is %s, expected %s", file,
                     name, mexd_st_dtype_name(t->dtype), mexd_st_dtype_name(dtype));
  int64_t numel = 1;
  for (int d = 0; d < t->ndim; d++)
    numel *= t->shape[d];
  if (numel != n)
    return mexd_fail(error, MEXD_ERROR_SHAPE,
                     "%s: optimizer state '%s' has %" PRId64 " elements, expected %" PRId64, file,
                     name, numel, n);
  if (dtype == MEXD_ST_I64) {
    int64_t v;
    memcpy(&v, t->data, sizeof v);
    if (v < 0)
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: optimizer state '%s' is a negative step count (%" PRId64 ")", file,
                       name, v);
  }
  g_hash_table_add(c->seen, (gpointer)name);
  if (c->apply) /* `data` is the optimizer's own storage */
    memcpy((void *)data, t->data, t->nbytes);
  return TRUE;
}

gboolean mexd_optim_state_load(MexdOptim *opt, MexdSafetensors *st, GError **error)
{
  if (!opt || !st)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "the optimizer or the checkpoint is NULL");
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  LoadCtx c = {st, seen, FALSE};
  if (!mexd_optim_state_foreach(opt, load_one, &c, error))
    return FALSE;
  for (guint i = 0; i < mexd_safetensors_n_tensors(st); i++) {
    const MexdStTensor *t = mexd_safetensors_index(st, i);
    if (g_str_has_prefix(t->name, "optim.") && !g_hash_table_contains(seen, t->name))
      return mexd_fail(error, MEXD_ERROR_FORMAT,
                       "%s: '%s' is not state of this %s (was the checkpoint written by another "
                       "optimizer or for other parameters?)",
                       mexd_safetensors_name(st), t->name, kind_name(opt));
  }
  c.apply = TRUE;
  return mexd_optim_state_foreach(opt, load_one, &c, error);
}

/* ---- clip_grad_norm_ ---- */

double mexd_clip_grad_norm(float *const *grads, const int64_t *n, int count, double max_norm)
{
  g_return_val_if_fail(count >= 0, 0);
  g_return_val_if_fail(count == 0 || (grads && n), 0);
  double sum = 0;
  for (int j = 0; j < count; j++) {
    g_return_val_if_fail(n[j] >= 0 && (n[j] == 0 || grads[j]), 0);
    const float *g = grads[j];
    for (int64_t i = 0; i < n[j]; i++)
      sum += (double)g[i] * (double)g[i];
  }
  double norm = sqrt(sum);
  if (!isfinite(norm))
    return norm;
  /* torch: clip_coef = max_norm / (total_norm + 1e-6) on a float32 tensor, which is
   * (total_norm + 1e-6).reciprocal() * max_norm; clamp(max=1.0); grads *= it. */
  float coef = (1.0f / ((float)norm + 1e-6f)) * (float)max_norm;
  if (coef < 1.0f) {
    for (int j = 0; j < count; j++) {
      float *g = grads[j];
      for (int64_t i = 0; i < n[j]; i++)
        g[i] = g[i] * coef;
    }
  }
  return norm;
}
