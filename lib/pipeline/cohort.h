/* cohort.h: many slides — the list of slides (given, or a manifest), their ids, shards over
 * machines, the state of each slide's outputs (done for exactly these inputs and settings, or
 * not) and the summary table rebuilt from the results.
 *
 * Manifest: a CSV (csv.h) with a header that has a `path` column (and optionally `slide_id`),
 * or one path per line without a header; '#' lines are comments.  Relative paths are taken
 * from the manifest's folder.  A slide's id is its `slide_id`, else its file name without the
 * extension (CLAM's); ids must be unique (their outputs would collide) and usable as a folder
 * name (no '/', not "." or "..", at most 200 bytes).
 *
 * Shards: slide k (0-based, in list order) belongs to shard k mod N, so N shards cover the list
 * exactly once.
 *
 * A slide's outputs live in OUT/<id>/: result.json (written last: the mark of a finished slide)
 * and the files beside it.  A slide is done only when result.json is a valid result whose
 * identity (result.h) equals the one wanted and every file beside it exists. */
#pragma once

#include "pipeline/result.h"

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  char *path, *id;
} MexdSlideEntry;

/* A GArray of MexdSlideEntry (cleared with the array). */
GArray *mexd_slide_list_new(void);
void mexd_slide_list_add(GArray *list, const char *path, const char *id);
GArray *mexd_slide_list_read_manifest(const char *file, GError **error);
/* Refuses unusable or repeated ids, naming the slides (MEXD_ERROR_INVALID_ARGUMENT). */
gboolean mexd_slide_list_check_ids(GArray *list, GError **error);
/* The file name without its extension (g_free). */
char *mexd_slide_id_of(const char *path);

/* "I/N" with 0 ≤ I < N; MEXD_ERROR_INVALID_ARGUMENT otherwise. */
gboolean mexd_shard_parse(const char *spec, int *index, int *count, GError **error);

typedef enum {
  MEXD_SLIDE_TODO,  /* never classified (or its outputs are gone) */
  MEXD_SLIDE_DONE,  /* finished, for exactly these inputs and settings */
  MEXD_SLIDE_STALE, /* finished for other inputs or settings */
  MEXD_SLIDE_BROKEN /* a result that cannot be read, or a missing file beside it */
} MexdSlideState;

/* The state of OUT/<id>/ for `want`; *why (g_free; may be NULL) says why it is not done. */
MexdSlideState mexd_slide_outputs_state(const char *slide_dir, const char *const *files,
                                        const MexdIdentity *want, char **why);
/* Removes a slide's outputs (result.json first, so no half set looks finished) and the stale
 * temporary files of its folder. */
void mexd_slide_outputs_remove(const char *slide_dir, const char *const *files);

/* OUT/summary.csv (slide_id, path, class, p_<class>…, tiles; RFC 4180), one row per slide of
 * `list` in order whose result has these classes and an identity that, less the "slide" key,
 * holds every key of `run` (NULL: none) with its value and equals the other rows' (so a merge
 * given only the model's hash still refuses results of other models or of mixed settings).  Written atomically
 * even when slides are missing; then FALSE (MEXD_ERROR_NOT_FOUND) naming how many and the
 * first.  *rows (may be NULL) gets the number of rows. */
gboolean mexd_summary_write(const char *out_dir, GArray *list, const char *const *classes,
                            const MexdIdentity *run, int *rows, GError **error);

G_END_DECLS
