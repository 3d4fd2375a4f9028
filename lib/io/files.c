/* files.c: checked inputs, guarded and atomic outputs, content hashes (files.h). */
#include "io/files.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEMP_TAG ".mexd-"

/* What a stat'ed thing is, for messages ("a FIFO (named pipe)"). */
static const char *kind_of(mode_t m)
{
  if (S_ISDIR(m))
    return "a directory";
  if (S_ISFIFO(m))
    return "a FIFO (named pipe)";
  if (S_ISCHR(m))
    return "a character device";
  if (S_ISBLK(m))
    return "a block device";
  if (S_ISSOCK(m))
    return "a socket";
  if (S_ISREG(m))
    return "a regular file";
  return "not a regular file";
}

/* stat() with a message that tells a dangling link from a missing file. */
static gboolean stat_checked(const char *path, const char *what, GStatBuf *st, GError **error)
{
  g_autofree char *name = g_filename_display_name(path);
  if (g_stat(path, st) == 0)
    return TRUE;
  int e = errno;
  GStatBuf lst;
  if (e == ENOENT && g_lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
    return mexd_fail(error, MEXD_ERROR_IO,
                     "%s: is a symbolic link to a file that does not exist (the %s)", name, what);
  if (e == ENOENT)
    return mexd_fail(error, MEXD_ERROR_IO, "%s: no such file (the %s)", name, what);
  return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot use it as the %s: %s", name, what,
                   g_strerror(e));
}

gboolean mexd_file_check_regular(const char *path, const char *what, GError **error)
{
  if (!what)
    what = "file";
  if (!path || !*path)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "no path given for the %s", what);
  GStatBuf st;
  if (!stat_checked(path, what, &st, error))
    return FALSE;
  if (S_ISREG(st.st_mode))
    return TRUE;
  g_autofree char *name = g_filename_display_name(path);
  return mexd_fail(error, MEXD_ERROR_IO, "%s: is %s, not a regular file (the %s)", name,
                   kind_of(st.st_mode), what);
}

gboolean mexd_file_check_dir(const char *path, const char *what, GError **error)
{
  if (!what)
    what = "folder";
  if (!path || !*path)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "no path given for the %s", what);
  GStatBuf st;
  if (!stat_checked(path, what, &st, error))
    return FALSE;
  if (S_ISDIR(st.st_mode))
    return TRUE;
  g_autofree char *name = g_filename_display_name(path);
  return mexd_fail(error, MEXD_ERROR_IO, "%s: is %s, not a folder (the %s)", name,
                   kind_of(st.st_mode), what);
}

gboolean mexd_file_same(const char *a, const char *b)
{
  GStatBuf sa, sb;
  if (!a || !b || g_stat(a, &sa) != 0 || g_stat(b, &sb) != 0)
    return FALSE;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static gboolean same_file_error(const char *out, const char *in, GError **error)
{
  g_autofree char *o = g_filename_display_name(out);
  g_autofree char *i = g_filename_display_name(in);
  if (g_str_equal(out, in))
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: the output is one of the inputs; it would be overwritten: choose "
                     "another output",
                     o);
  return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                   "%s: the output is the same file as the input %s (a link to it, or another "
                   "spelling of its path); it would be overwritten: choose another output",
                   o, i);
}

static gboolean check_output_dir(const char *out, GError **error)
{
  GStatBuf st;
  if (g_stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
    g_autofree char *o = g_filename_display_name(out);
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "%s: the output is an existing folder; give a file name", o);
  }
  return TRUE;
}

gboolean mexd_file_check_output(const char *out, const char *const *inputs, GError **error)
{
  if (!out || !*out)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "no output path given");
  if (!check_output_dir(out, error))
    return FALSE;
  for (int i = 0; inputs && inputs[i]; i++)
    if (mexd_file_same(out, inputs[i]))
      return same_file_error(out, inputs[i], error);
  return TRUE;
}

/* ---- sets of inputs ---- */

typedef struct {
  dev_t dev;
  ino_t ino;
} FileKey;

struct _MexdInputSet {
  GHashTable *by_key; /* FileKey → its path */
};

static guint key_hash(gconstpointer p)
{
  const FileKey *k = p;
  return (guint)(k->ino ^ (k->ino >> 32) ^ (k->dev * 2654435761u));
}

static gboolean key_equal(gconstpointer a, gconstpointer b)
{
  const FileKey *x = a, *y = b;
  return x->dev == y->dev && x->ino == y->ino;
}

MexdInputSet *mexd_input_set_new(void)
{
  MexdInputSet *s = g_new0(MexdInputSet, 1);
  s->by_key = g_hash_table_new_full(key_hash, key_equal, g_free, g_free);
  return s;
}

void mexd_input_set_free(MexdInputSet *s)
{
  if (!s)
    return;
  g_hash_table_unref(s->by_key);
  g_free(s);
}

static void add_stat(MexdInputSet *s, const char *path, const GStatBuf *st)
{
  FileKey *k = g_new(FileKey, 1);
  k->dev = st->st_dev;
  k->ino = st->st_ino;
  if (!g_hash_table_contains(s->by_key, k))
    g_hash_table_insert(s->by_key, k, g_strdup(path));
  else
    g_free(k);
}

void mexd_input_set_add(MexdInputSet *s, const char *path)
{
  GStatBuf st;
  if (s && path && g_stat(path, &st) == 0)
    add_stat(s, path, &st);
}

static void add_tree(MexdInputSet *s, const char *dir, int depth)
{
  GStatBuf st;
  if (depth > 16 || g_stat(dir, &st) != 0)
    return;
  add_stat(s, dir, &st);
  if (!S_ISDIR(st.st_mode))
    return;
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  for (const char *n; d && (n = g_dir_read_name(d));) {
    g_autofree char *p = g_build_filename(dir, n, NULL);
    GStatBuf lst;
    /* links inside the folder are followed for files, not for folders (no cycles) */
    if (g_lstat(p, &lst) == 0 && S_ISLNK(lst.st_mode)) {
      if (g_stat(p, &st) == 0 && !S_ISDIR(st.st_mode))
        add_stat(s, p, &st);
      continue;
    }
    add_tree(s, p, depth + 1);
  }
}

void mexd_input_set_add_tree(MexdInputSet *s, const char *dir)
{
  if (s && dir)
    add_tree(s, dir, 0);
}

gboolean mexd_input_set_check(const MexdInputSet *s, const char *out, GError **error)
{
  if (!out || !*out)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "no output path given");
  if (!check_output_dir(out, error))
    return FALSE;
  GStatBuf st;
  if (!s || g_stat(out, &st) != 0)
    return TRUE;
  FileKey k = {st.st_dev, st.st_ino};
  const char *in = g_hash_table_lookup(s->by_key, &k);
  return in ? same_file_error(out, in, error) : TRUE;
}

/* ---- atomic writes ---- */

struct _MexdAtomicFile {
  int fd;
  char *path, *tmp;
};

/* The pid in ".<name>.mexd-<pid>-XXXXXX", or 0 when `name` is not a temporary file's name. */
static pid_t temp_owner(const char *name)
{
  if (name[0] != '.')
    return 0;
  const char *tag = g_strrstr(name, TEMP_TAG);
  if (!tag)
    return 0;
  const char *p = tag + strlen(TEMP_TAG);
  char *end = NULL;
  gint64 pid = g_ascii_strtoll(p, &end, 10);
  if (end == p || *end != '-' || strlen(end + 1) != 6 || pid <= 0 || pid > G_MAXINT32)
    return 0;
  return (pid_t)pid;
}

static gboolean process_gone(pid_t pid)
{
  return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH;
}

guint mexd_file_remove_stale_temps(const char *dir)
{
  guint n = 0;
  g_autoptr(GDir) d = g_dir_open(dir && *dir ? dir : ".", 0, NULL);
  for (const char *name; d && (name = g_dir_read_name(d));) {
    pid_t pid = temp_owner(name);
    if (pid && process_gone(pid)) {
      g_autofree char *p = g_build_filename(dir, name, NULL);
      GStatBuf st;
      if (g_lstat(p, &st) == 0 && S_ISREG(st.st_mode) && g_unlink(p) == 0)
        n++;
    }
  }
  return n;
}

/* Each folder is cleaned once per process (the first time something is written into it). */
static void clean_once(const char *dir)
{
  static GMutex lock;
  static GHashTable *done;
  g_autofree char *key = g_canonicalize_filename(dir, NULL);
  g_mutex_lock(&lock);
  if (!done)
    done = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gboolean first = g_hash_table_add(done, g_strdup(key));
  g_mutex_unlock(&lock);
  if (first)
    mexd_file_remove_stale_temps(dir);
}

MexdAtomicFile *mexd_atomic_file_new(const char *path, GError **error)
{
  if (!path || !*path)
    return mexd_fail_null(error, MEXD_ERROR_INVALID_ARGUMENT, "no output path given");
  g_autofree char *display = g_filename_display_name(path);
  g_autofree char *dir = g_path_get_dirname(path);
  g_autofree char *base = g_path_get_basename(path);
  GStatBuf st;
  if (g_stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot write it: it is a folder", display);
  if (strlen(base) > 200) /* room for the temporary name's tag within NAME_MAX */
    base[200] = '\0';
  clean_once(dir);
  g_autofree char *tmpl =
      g_strdup_printf(".%s" TEMP_TAG "%d-XXXXXX", base, (int)getpid());
  char *tmp = g_build_filename(dir, tmpl, NULL);
  int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666);
  if (fd < 0) {
    int e = errno;
    g_free(tmp);
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot write it (a temporary file beside it: %s)",
                          display, g_strerror(e));
  }
  /* mkstemp makes the file 0600; outputs get the usual mode (0666 less the umask) */
  mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, 0666 & ~mask) != 0) {
    /* not fatal: the file stays private */
  }
  MexdAtomicFile *f = g_new0(MexdAtomicFile, 1);
  f->fd = fd;
  f->path = g_strdup(path);
  f->tmp = tmp;
  return f;
}

int mexd_atomic_file_fd(const MexdAtomicFile *f)
{
  return f ? f->fd : -1;
}

const char *mexd_atomic_file_temp_path(const MexdAtomicFile *f)
{
  return f ? f->tmp : NULL;
}

static void atomic_free(MexdAtomicFile *f)
{
  if (f->fd >= 0)
    close(f->fd);
  g_free(f->path);
  g_free(f->tmp);
  g_free(f);
}

void mexd_atomic_file_discard(MexdAtomicFile *f)
{
  if (!f)
    return;
  if (f->tmp)
    g_unlink(f->tmp);
  atomic_free(f);
}

gboolean mexd_atomic_file_commit(MexdAtomicFile *f, GError **error)
{
  if (!f)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT, "mexd_atomic_file_commit: NULL");
  g_autofree char *display = g_filename_display_name(f->path);
  int e = 0;
  const char *step = NULL;
  if (fsync(f->fd) != 0) {
    e = errno;
    step = "flush it to disk";
  } else if (close(f->fd) != 0) {
    e = errno;
    step = "close it";
  }
  if (!step)
    f->fd = -1;
  if (!step && g_rename(f->tmp, f->path) != 0) {
    e = errno;
    step = "rename the temporary file over it";
  }
  if (step) {
    mexd_atomic_file_discard(f);
    return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write it: failed to %s: %s", display, step,
                     g_strerror(e));
  }
  g_clear_pointer(&f->tmp, g_free);
  atomic_free(f);
  return TRUE;
}

gboolean mexd_file_write_atomic(const char *path, const void *data, gssize len, GError **error)
{
  if (len < 0)
    len = data ? (gssize)strlen(data) : 0;
  MexdAtomicFile *f = mexd_atomic_file_new(path, error);
  if (!f)
    return FALSE;
  const char *p = data;
  for (gssize done = 0; done < len;) {
    ssize_t w = write(f->fd, p + done, (size_t)(len - done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : ENOSPC;
      g_autofree char *display = g_filename_display_name(path);
      mexd_atomic_file_discard(f);
      return mexd_fail(error, MEXD_ERROR_IO, "%s: cannot write it: %s", display, g_strerror(e));
    }
    done += w;
  }
  return mexd_atomic_file_commit(f, error);
}

/* ---- content hashes ---- */

typedef struct {
  dev_t dev;
  ino_t ino;
  gint64 size, mtime_ns;
} HashKey;

static guint hkey_hash(gconstpointer p)
{
  const HashKey *k = p;
  return (guint)(k->ino ^ (guint64)k->size ^ (guint64)k->mtime_ns);
}

static gboolean hkey_equal(gconstpointer a, gconstpointer b)
{
  return memcmp(a, b, sizeof(HashKey)) == 0;
}

char *mexd_file_sha256(const char *path, GError **error)
{
  static GMutex lock;
  static GHashTable *cache;
  if (!mexd_file_check_regular(path, "file to hash", error))
    return NULL;
  struct stat st;
  if (stat(path, &st) != 0) {
    g_autofree char *display = g_filename_display_name(path);
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: %s", display, g_strerror(errno));
  }
  HashKey key;
  memset(&key, 0, sizeof key);
  key.dev = st.st_dev;
  key.ino = st.st_ino;
  key.size = st.st_size;
  key.mtime_ns = (gint64)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  g_mutex_lock(&lock);
  if (!cache)
    cache = g_hash_table_new_full(hkey_hash, hkey_equal, g_free, g_free);
  const char *hit = g_hash_table_lookup(cache, &key);
  char *res = hit ? g_strdup(hit) : NULL;
  g_mutex_unlock(&lock);
  if (res)
    return res;
  int fd = g_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) {
    int e = errno;
    g_autofree char *display = g_filename_display_name(path);
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read it: %s", display, g_strerror(e));
  }
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  g_autofree guchar *buf = g_malloc(1 << 20);
  for (;;) {
    ssize_t n = read(fd, buf, 1 << 20);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      g_autofree char *display = g_filename_display_name(path);
      return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read it: %s", display,
                            g_strerror(e));
    }
    if (n == 0)
      break;
    g_checksum_update(sum, buf, (gssize)n);
  }
  close(fd);
  res = g_strconcat("sha256:", g_checksum_get_string(sum), NULL);
  g_mutex_lock(&lock);
  g_hash_table_replace(cache, g_memdup2(&key, sizeof key), g_strdup(res));
  g_mutex_unlock(&lock);
  return res;
}

char *mexd_file_read_small(const char *path, const char *what, gsize max_bytes, gsize *len,
                           GError **error)
{
  if (!mexd_file_check_regular(path, what, error))
    return NULL;
  g_autofree char *display = g_filename_display_name(path);
  int fd = g_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read the %s: %s", display,
                          what ? what : "file", e ? g_strerror(e) : "not a regular file");
  }
  if ((guint64)st.st_size > max_bytes) {
    close(fd);
    return mexd_fail_null(error, MEXD_ERROR_FORMAT,
                          "%s: the %s is %" G_GINT64_FORMAT " bytes, more than the %" G_GSIZE_FORMAT
                          " this reader takes",
                          display, what ? what : "file", (gint64)st.st_size, max_bytes);
  }
  gsize cap = (gsize)st.st_size;
  char *text = g_try_malloc(cap + 1);
  if (!text) {
    close(fd);
    return mexd_fail_null(error, MEXD_ERROR_NO_MEMORY, "%s: no memory to read it", display);
  }
  gsize got = 0;
  while (got < cap) {
    ssize_t n = read(fd, text + got, cap - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      g_free(text);
      return mexd_fail_null(error, MEXD_ERROR_IO, "%s: cannot read the %s: %s", display,
                            what ? what : "file", g_strerror(e));
    }
    if (n == 0)
      break; /* shrank while reading: take what is there */
    got += (gsize)n;
  }
  close(fd);
  text[got] = '\0';
  if (len)
    *len = got;
  return text;
}
