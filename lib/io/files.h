/* files.h: how libmexd and its users read and write files, so that
 *   - no open() blocks: an input that is not a regular file (a FIFO, a device, a socket, a
 *     directory) is refused by looking at it, before anything opens it;
 *   - no output destroys an input: an output that is the same file as an input (device and inode,
 *     so symbolic and hard links count) is refused before anything is written;
 *   - no output is left half-written: every output is written to a temporary file beside it and
 *     renamed over it when complete; a temporary file that a killed process left behind is
 *     removed by the next process that writes into that folder;
 *   - a result can name exactly what produced it: a content hash of a file (SHA-256).
 *
 * Temporary files are named ".<name>.mexd-<pid>-XXXXXX" (hidden; the name says whose they are and
 * which process wrote them).  A temporary file is stale when its process no longer runs on this
 * machine. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Refuses `path` unless it is (or links to) a regular file, without opening it: missing, a
 * directory, a FIFO, a device, a socket, a dangling or looping link — each with a message naming
 * the path, what it is and `what` the caller needed ("model file"; NULL: "file").  MEXD_ERROR_IO
 * (a missing file too, as the readers always reported it). */
gboolean mexd_file_check_regular(const char *path, const char *what, GError **error);

/* Refuses `path` unless it is (or links to) a directory (the same rules). */
gboolean mexd_file_check_dir(const char *path, const char *what, GError **error);

/* TRUE when both paths exist and are the same file (device and inode, links followed). */
gboolean mexd_file_same(const char *a, const char *b);

/* Refuses the output `out` when it is the same file as one of `inputs` (NULL-terminated; NULL
 * entries are not allowed — pass only set paths), or when it is an existing directory; the error
 * (MEXD_ERROR_INVALID_ARGUMENT) names both paths. */
gboolean mexd_file_check_output(const char *out, const char *const *inputs, GError **error);

/* A collection of a command's inputs, for checking its outputs against all of them. */
typedef struct _MexdInputSet MexdInputSet;
MexdInputSet *mexd_input_set_new(void);
void mexd_input_set_free(MexdInputSet *s);
/* Adds a file (or, with recursive, every file below a directory); paths that do not exist are
 * kept by name only (they cannot collide). */
void mexd_input_set_add(MexdInputSet *s, const char *path);
void mexd_input_set_add_tree(MexdInputSet *s, const char *dir);
/* Refuses `out` when it is one of the set's files (as mexd_file_check_output). */
gboolean mexd_input_set_check(const MexdInputSet *s, const char *out, GError **error);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdInputSet, mexd_input_set_free)

/* A file written atomically: mexd_atomic_file_new creates the temporary file beside `path`
 * (after removing the stale temporary files of that folder, once per folder and process);
 * write through its descriptor or its temporary path; commit flushes it to disk and renames it
 * over `path`; discard (also the autoptr cleanup) removes it.  Both free the object. */
typedef struct _MexdAtomicFile MexdAtomicFile;
MexdAtomicFile *mexd_atomic_file_new(const char *path, GError **error);
int mexd_atomic_file_fd(const MexdAtomicFile *f);
const char *mexd_atomic_file_temp_path(const MexdAtomicFile *f);
gboolean mexd_atomic_file_commit(MexdAtomicFile *f, GError **error);
void mexd_atomic_file_discard(MexdAtomicFile *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MexdAtomicFile, mexd_atomic_file_discard)

/* `len` bytes (len < 0: a NUL-terminated string) to `path`, atomically. */
gboolean mexd_file_write_atomic(const char *path, const void *data, gssize len, GError **error);

/* Removes the stale temporary files (see above) in `dir`; returns how many. */
guint mexd_file_remove_stale_temps(const char *dir);

/* "sha256:<64 hex digits>" of the file's bytes (g_free), or NULL with the error set.  Cached per
 * process by device, inode, size and modification time, so a model is hashed once per run. */
char *mexd_file_sha256(const char *path, GError **error);

/* The whole of a small regular file (checked with mexd_file_check_regular first), refusing one
 * larger than `max_bytes`; *len may be NULL.  The text is NUL-terminated. */
char *mexd_file_read_small(const char *path, const char *what, gsize max_bytes, gsize *len,
                           GError **error);

G_END_DECLS
