/* tiles.c: the tile grid over the tissue (CLAM's rules) and the threads that read the tiles
 * (slide.h). */
#include "slide.h"

#include "../core/error.h"
#include "../ops/ops.h"
#include "wsi-private.h"

#include <math.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

gboolean mexd_contour_fn_parse(const char *name, MexdContourFn *out)
{
  static const char *names[] = {"four_pt", "four_pt_hard", "center"};
  for (int i = 0; name && i < 3; i++)
    if (strcmp(name, names[i]) == 0) {
      *out = (MexdContourFn)i;
      return TRUE;
    }
  return FALSE;
}

const char *mexd_contour_fn_name(MexdContourFn fn)
{
  switch (fn) {
  case MEXD_CONTOUR_FOUR_PT: return "four_pt";
  case MEXD_CONTOUR_FOUR_PT_HARD: return "four_pt_hard";
  case MEXD_CONTOUR_CENTER: return "center";
  }
  return "invalid";
}

/* The widest region read for one tile (a 4096² read takes 64 MiB of scratch per reader). */
#define MAX_READ 4096

static gboolean check_size(const MexdSlide *s, int size, int step, GError **error)
{
  if (size < 1 || size > 16384 || step < 1 || step > (1 << 20))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: tile size %d and step %d must lie in 1..16384 and 1..2^20", s->fname,
                     size, step);
  return TRUE;
}

gboolean mexd_grid_spec_level(const MexdSlide *s, int level, int size, int step,
                              MexdGridSpec *out, GError **error)
{
  if (!check_size(s, size, step, error))
    return FALSE;
  if (level < 0 || level >= s->n_levels)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "%s: no level %d (the slide has %d)",
                     s->fname, level, s->n_levels);
  double dx, dy;
  mexd_slide_level_downsample_xy(s, level, &dx, &dy);
  int64_t ix = (int64_t)dx, iy = (int64_t)dy; /* CLAM truncates the patch downsample */
  *out = (MexdGridSpec){
      .patch_size = size,
      .level = level,
      .read_size = size,
      .ref_w = size * MAX(ix, 1),
      .ref_h = size * MAX(iy, 1),
      .step_x = step * MAX(ix, 1),
      .step_y = step * MAX(iy, 1),
      .padding = TRUE,
      .contour_fn = MEXD_CONTOUR_FOUR_PT,
      .mpp = s->mpp_x > 0 ? s->mpp_x * dx : 0,
  };
  return TRUE;
}

gboolean mexd_grid_spec_resolution(const MexdSlide *s, double mpp, double mag, int size, int step,
                                   MexdGridSpec *out, GError **error)
{
  if (!check_size(s, size, step, error))
    return FALSE;
  if (!(mpp > 0) && !(mag > 0))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: give a resolution (mpp) or a magnification above 0", s->fname);
  double d; /* level-0 pixels per output pixel */
  if (mpp > 0) {
    if (!(s->mpp_x > 0))
      return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                       "%s: the slide does not record its resolution (no openslide.mpp-x, no "
                       "tiff.XResolution): tile it by level instead",
                       s->fname);
    d = mpp / s->mpp_x;
  } else if (s->objective > 0) {
    d = s->objective / mag;
  } else if (s->mpp_x > 0) {
    d = (10.0 / mag) / s->mpp_x; /* the usual convention: 20× ≈ 0.5 µm/px */
  } else {
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: the slide records neither its objective power nor its resolution: tile "
                     "it by level instead",
                     s->fname);
  }
  if (d < 0.99)
    return mexd_fail(error, MEXD_ERROR_UNSUPPORTED,
                     "%s: %s %g asks for %.3g× the slide's finest resolution (%g µm/px%s%g×); "
                     "tiles are not upsampled",
                     s->fname, mpp > 0 ? "mpp" : "magnification", mpp > 0 ? mpp : mag, 1 / d,
                     s->mpp_x, s->objective > 0 ? ", " : "", s->objective);
  if (fabs(d - 1) <= 0.01)
    d = 1;
  /* grids that would need absurd memory or cover more than the slide are refused here, before
   * any work (a tile read at the coarsest level is at most MAX_READ pixels wide) */
  const double extent = size * d, longest = (double)MAX(s->levels[0].w, s->levels[0].h);
  if (extent > longest)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: %s %g makes each %d-pixel tile cover %.0f level-0 pixels, more than the "
                     "slide (%" G_GINT64_FORMAT " × %" G_GINT64_FORMAT "): ask for a finer "
                     "resolution",
                     s->fname, mpp > 0 ? "mpp" : "magnification", mpp > 0 ? mpp : mag, size,
                     extent, s->levels[0].w, s->levels[0].h);
  int level = mexd_slide_best_level(s, d * 1.01);
  double lds = s->levels[level].ds;
  if (size * d / lds > MAX_READ)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: %s %g would read %.0f × %.0f pixels at level %d (the coarsest fitting "
                     "level) for each %d-pixel tile, more than the %d allowed: ask for a finer "
                     "resolution or a smaller tile",
                     s->fname, mpp > 0 ? "mpp" : "magnification", mpp > 0 ? mpp : mag,
                     size * d / lds, size * d / lds, level, size, MAX_READ);
  int read = (int)lround(size * d / lds);
  *out = (MexdGridSpec){
      .patch_size = size,
      .level = level,
      .read_size = MAX(read, 1),
      .ref_w = MAX((int64_t)1, (int64_t)llround(size * d)),
      .ref_h = MAX((int64_t)1, (int64_t)llround(size * d)),
      .step_x = MAX((int64_t)1, (int64_t)llround(step * d)),
      .step_y = MAX((int64_t)1, (int64_t)llround(step * d)),
      .padding = TRUE,
      .contour_fn = MEXD_CONTOUR_FOUR_PT,
      .mpp = s->mpp_x > 0 ? s->mpp_x * d : 0,
  };
  return TRUE;
}

gboolean mexd_grid_spec_choose(const MexdSlide *s, double mpp, double mag, int level, int size,
                               int step, MexdGridSpec *out, GError **error)
{
  if (mpp > 0 || mag > 0)
    return mexd_grid_spec_resolution(s, mpp, mag, size, step, out, error);
  return mexd_grid_spec_level(s, level, size, step, out, error);
}

/* CLAM's contour check of the tile at (x, y) with a level-0 extent `ps`. */
static gboolean in_contour(const MexdRing *c, MexdContourFn fn, int64_t x, int64_t y, int64_t ps)
{
  int64_t cx = x + ps / 2, cy = y + ps / 2;
  int64_t sh = (int64_t)((double)(ps / 2) * 0.5);
  if (fn == MEXD_CONTOUR_CENTER || sh == 0)
    return mexd_cv_point_polygon_test(c, (double)cx, (double)cy) >= 0;
  const int64_t px[4] = {cx - sh, cx + sh, cx + sh, cx - sh};
  const int64_t py[4] = {cy - sh, cy + sh, cy - sh, cy + sh};
  for (int i = 0; i < 4; i++) {
    gboolean in = mexd_cv_point_polygon_test(c, (double)px[i], (double)py[i]) >= 0;
    if (fn == MEXD_CONTOUR_FOUR_PT && in)
      return TRUE;
    if (fn == MEXD_CONTOUR_FOUR_PT_HARD && !in)
      return FALSE;
  }
  return fn == MEXD_CONTOUR_FOUR_PT_HARD;
}

int64_t mexd_tile_grid(const MexdSlide *s, const MexdTissue *t, const MexdGridSpec *spec,
                       int32_t **coords)
{
  GArray *out = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int64_t W0 = s->levels[0].w, H0 = s->levels[0].h;
  for (int c = 0; c < t->n; c++) {
    int x0, y0, w, h;
    mexd_cv_bounding_rect(&t->contours[c], &x0, &y0, &w, &h);
    int64_t stop_x = (int64_t)x0 + w, stop_y = (int64_t)y0 + h;
    if (!spec->padding) {
      stop_x = MIN(stop_x, W0 - spec->ref_w + 1);
      stop_y = MIN(stop_y, H0 - spec->ref_h + 1);
    }
    for (int64_t x = x0; x < stop_x; x += spec->step_x)
      for (int64_t y = y0; y < stop_y; y += spec->step_y) {
        if (!in_contour(&t->contours[c], spec->contour_fn, x, y, spec->ref_w))
          continue;
        gboolean in_hole = FALSE;
        for (int k = 0; k < t->n_holes[c] && !in_hole; k++)
          in_hole = mexd_cv_point_polygon_test(&t->holes[c][k], (double)x + spec->ref_w / 2.0,
                                               (double)y + spec->ref_w / 2.0) > 0;
        if (in_hole)
          continue;
        int32_t xy[2] = {(int32_t)x, (int32_t)y};
        g_array_append_vals(out, xy, 2);
      }
  }
  int64_t n = out->len / 2;
  *coords = (int32_t *)(void *)g_array_free(out, FALSE);
  return n;
}

/* ---- the reader ----
 *
 * Workers claim tile indices in order (so reads walk the grid as OpenSlide's tile cache likes)
 * and decode into slot index % depth; a worker waits while its index is `depth` or more ahead of
 * the consumer.  The consumer takes the tiles in order. */

struct MexdTileReader {
  MexdSlide *slide;
  MexdGridSpec spec;
  int32_t *coords;
  int64_t n;
  int depth;
  uint8_t *slots;    /* depth × tile bytes */
  int64_t *slot_idx; /* the tile a slot holds, −1 when empty */
  size_t tile_bytes;
  GMutex lock;
  GCond cond;
  int64_t next_claim; /* tiles claimed by workers */
  int64_t handed;     /* tiles handed to the consumer */
  int64_t released;   /* tiles whose slots may be reused: all but the one the consumer holds */
  gboolean stop;
  GError *error;  /* the first read error */
  int64_t err_at; /* its tile index */
  GThread **threads;
  int n_threads;
};

static gpointer reader_worker(gpointer data)
{
  MexdTileReader *r = data;
  const MexdGridSpec *sp = &r->spec;
  size_t rb = (size_t)sp->read_size * sp->read_size;
  uint32_t *scratch = g_try_malloc(rb * 4);
  uint8_t *raw = sp->read_size != sp->patch_size ? g_try_malloc(rb * 3) : NULL;
  if (!scratch || (sp->read_size != sp->patch_size && !raw)) {
    g_mutex_lock(&r->lock);
    if (!r->error) {
      r->error = g_error_new(MEXD_ERROR, MEXD_ERROR_NO_MEMORY,
                             "%s: no memory to read %d × %d pixels per tile", r->slide->fname,
                             sp->read_size, sp->read_size);
      r->err_at = 0;
    }
    r->stop = TRUE;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    g_free(scratch);
    g_free(raw);
    return NULL;
  }
  for (;;) {
    g_mutex_lock(&r->lock);
    while (!r->stop && r->next_claim < r->n && r->next_claim >= r->released + r->depth)
      g_cond_wait(&r->cond, &r->lock);
    if (r->stop || r->next_claim >= r->n) {
      g_mutex_unlock(&r->lock);
      break;
    }
    int64_t i = r->next_claim++;
    g_mutex_unlock(&r->lock);
    uint8_t *dst = r->slots + (size_t)(i % r->depth) * r->tile_bytes;
    GError *err = NULL;
    gboolean ok = mexd_slide_read_rgb(r->slide, r->coords[2 * i], r->coords[2 * i + 1], sp->level,
                                      sp->read_size, sp->read_size, raw ? raw : dst, scratch,
                                      &err);
    if (ok && raw)
      mexd_image_resize_u8(raw, sp->read_size, sp->read_size, 3, dst, sp->patch_size,
                           sp->patch_size);
    g_mutex_lock(&r->lock);
    if (ok) {
      r->slot_idx[i % r->depth] = i;
    } else {
      if (!r->error || i < r->err_at) {
        g_clear_error(&r->error);
        r->error = err;
        r->err_at = i;
      } else {
        g_error_free(err);
      }
      r->stop = TRUE;
    }
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
  }
  g_free(scratch);
  g_free(raw);
  return NULL;
}

/* OpenSlide allocates and frees a buffer per decoded tile (256 KiB for a 256² tile).  glibc
 * serves such blocks with mmap until its dynamic threshold has risen, and in reader threads'
 * arenas it kept mapping, faulting in and unmapping them: one reader thread ran at 55 % of the
 * speed of the same reads on the main thread, and two threads were no faster than one
 * (measured with `mexd bench read` on a 8192² Aperio test slide).  A fixed 4 MiB mmap threshold
 * and a 64 MiB trim threshold keep those blocks in the heap; this is process-wide and set once,
 * when the first reader starts. */
static void malloc_for_tiles(void)
{
#ifdef __GLIBC__
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    g_once_init_leave(&once, 1);
  }
#endif
}

MexdTileReader *mexd_tile_reader_new(MexdSlide *s, const MexdGridSpec *spec,
                                     const int32_t *coords, int64_t n, int threads, int depth,
                                     GError **error)
{
  if (!s || !spec || (n > 0 && !coords) || n < 0 || threads < 1 || threads > 1024 || depth < 0)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "tile reader: bad arguments (%" G_GINT64_FORMAT " tiles, %d threads)", n,
                          threads);
  if (spec->level < 0 || spec->level >= s->n_levels || spec->patch_size < 1 ||
      spec->read_size < 1)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT,
                          "%s: bad tile grid (level %d, size %d, read size %d)", s->fname,
                          spec->level, spec->patch_size, spec->read_size);
  malloc_for_tiles();
  MexdTileReader *r = g_new0(MexdTileReader, 1);
  r->slide = s;
  r->spec = *spec;
  r->n = n;
  r->coords = g_memdup2(coords, (gsize)MAX(n, 1) * 2 * sizeof(int32_t));
  r->depth = depth > 0 ? depth : 4 * threads;
  r->tile_bytes = (size_t)spec->patch_size * spec->patch_size * 3;
  r->slots = g_try_malloc(r->tile_bytes * r->depth);
  if (!r->slots) {
    const int d = r->depth;
    g_free(r->coords);
    g_free(r);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "%s: no memory for %d tiles in flight",
                          s->fname, d);
  }
  r->slot_idx = g_new(int64_t, r->depth);
  for (int i = 0; i < r->depth; i++)
    r->slot_idx[i] = -1;
  g_mutex_init(&r->lock);
  g_cond_init(&r->cond);
  r->n_threads = (int)MIN((int64_t)threads, MAX(n, (int64_t)1));
  r->threads = g_new0(GThread *, r->n_threads);
  for (int i = 0; i < r->n_threads; i++)
    r->threads[i] = g_thread_new("mexd-read", reader_worker, r);
  return r;
}

gboolean mexd_tile_reader_next(MexdTileReader *r, const uint8_t **rgb, int64_t *index,
                               GError **error)
{
  g_mutex_lock(&r->lock);
  /* the tile handed out last is given back by asking for the next one */
  int64_t want = r->handed;
  r->released = want;
  g_cond_broadcast(&r->cond);
  while (want < r->n && r->slot_idx[want % r->depth] != want &&
         !(r->error && r->err_at <= want))
    g_cond_wait(&r->cond, &r->lock);
  gboolean ok = FALSE;
  if (want >= r->n) {
    ok = FALSE;
  } else if (r->slot_idx[want % r->depth] == want) {
    *rgb = r->slots + (size_t)(want % r->depth) * r->tile_bytes;
    if (index)
      *index = want;
    r->handed = want + 1;
    ok = TRUE;
  } else {
    g_propagate_error(error, g_error_copy(r->error));
  }
  g_mutex_unlock(&r->lock);
  return ok;
}

void mexd_tile_reader_free(MexdTileReader *r)
{
  if (!r)
    return;
  g_mutex_lock(&r->lock);
  r->stop = TRUE;
  g_cond_broadcast(&r->cond);
  g_mutex_unlock(&r->lock);
  for (int i = 0; i < r->n_threads; i++)
    g_thread_join(r->threads[i]);
  g_free(r->threads);
  g_clear_error(&r->error);
  g_mutex_clear(&r->lock);
  g_cond_clear(&r->cond);
  g_free(r->slots);
  g_free(r->slot_idx);
  g_free(r->coords);
  g_free(r);
}
