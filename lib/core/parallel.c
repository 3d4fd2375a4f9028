/* parallel.c: the worker pool behind mexd_parallel_for (parallel.h).
 *
 * One job at a time: the caller publishes (fn, ctx, n, chunk), bumps a generation counter and
 * takes chunks itself; workers take chunks from the same atomic counter, so the split follows
 * load, not thread count (which chunk runs where never changes a result: chunks are disjoint).
 * The caller returns once every worker has seen the job and finished its chunks, so no worker
 * can still be inside a finished job's fn.
 *
 * Waiting: a forward pass runs hundreds of short kernels back to back (a diffusion step is tens
 * of microseconds), so workers and the caller spin for a short while (SPIN_US) before they sleep
 * on a condition variable; a condvar wake-up alone (~50 µs on a loaded VM) would cost more than
 * the kernels it serves.  The spin is short so that OpenBLAS's own threads, which run between
 * these kernels on the same cores, keep the cores.
 *
 * The pool is stopped and its threads joined by a destructor at exit (the tests run under LSan,
 * and a thread left inside a wait at exit is a leak report waiting to happen). */
#include "core/parallel.h"

#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#ifdef MEXD_HAVE_OPENBLAS_THREADS
#include <cblas.h>
#endif
#ifdef MEXD_HAVE_OPENMP
#include <omp.h>
#endif

#define MAX_THREADS 1024
#define SPIN_US     40

typedef struct {
  GMutex lock;
  GCond wake; /* a new job or stop, for sleeping workers */
  GCond done; /* the last worker finished a job, for a sleeping caller */
  GThread **threads;
  int n_workers;
  gint busy;       /* a job is running: other callers run inline */
  gint generation; /* bumped once per job */
  gint stop;
  /* the current job */
  MexdParallelFn fn;
  void *ctx;
  int64_t n, chunk, n_chunks;
  gintptr next;   /* the next chunk to take */
  gint remaining; /* workers that have not finished the current job */
} Pool;

static Pool pool;
static int n_threads; /* 0 until configured */
static gsize configured;
static gsize started;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int affinity_cpus(void)
{
#ifdef CPU_COUNT
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0)
      return c;
  }
#endif
  return (int)g_get_num_processors();
}

/* MEXD_THREADS when it is a whole number in 1..MAX_THREADS, else the affinity count (a bad value
 * is reported once, not fatal: a typo in an environment variable must not stop a pipeline). */
static int configured_threads(void)
{
  const char *v = g_getenv("MEXD_THREADS");
  int cpus = MIN(affinity_cpus(), MAX_THREADS);
  if (!v || !*v)
    return cpus;
  char *end = NULL;
  errno = 0;
  long t = strtol(v, &end, 10);
  if (errno || end == v || *end || t < 1 || t > MAX_THREADS) {
    mexd_warning("MEXD_THREADS is \"%s\", expected a whole number in 1..%d: using %d threads", v,
                 MAX_THREADS, cpus);
    return cpus;
  }
  return (int)t;
}

/* A forked child has only the thread that forked: neither our workers nor OpenMP's threads
 * (libgomp's team would wait for them forever), so the child runs every job on its own thread. */
static void after_fork_child(void)
{
  n_threads = 1;
}

int mexd_parallel_threads(void)
{
  if (g_once_init_enter(&configured)) {
    n_threads = configured_threads();
    pthread_atfork(NULL, NULL, after_fork_child);
#ifdef MEXD_HAVE_OPENBLAS_THREADS
    /* OpenBLAS runs on the caller's thread: the GEMMs are cut into tiles that this pool runs
     * (mexd_cpu_sgemm, gemm.c says why) */
    openblas_set_num_threads(1);
#endif
    mexd_debug("cpu kernels: %d thread%s", n_threads, n_threads == 1 ? "" : "s");
    g_once_init_leave(&configured, 1);
  }
  return n_threads;
}

/* Takes and runs chunks of the current job until none is left. */
static void run_chunks(void)
{
  for (;;) {
    int64_t c = (int64_t)g_atomic_pointer_add(&pool.next, 1);
    if (c >= pool.n_chunks)
      return;
    int64_t b = c * pool.chunk, e = MIN(pool.n, b + pool.chunk);
    pool.fn(b, e, pool.ctx);
  }
}

static gpointer worker_main(gpointer data)
{
  (void)data;
  gint seen = 0;
  for (;;) {
    gint64 until = g_get_monotonic_time() + SPIN_US;
    int spins = 0;
    while (g_atomic_int_get(&pool.generation) == seen && !g_atomic_int_get(&pool.stop)) {
      cpu_relax();
      if (++spins % 64 == 0 && g_get_monotonic_time() > until)
        break;
    }
    if (g_atomic_int_get(&pool.generation) == seen) {
      g_mutex_lock(&pool.lock);
      while (g_atomic_int_get(&pool.generation) == seen && !g_atomic_int_get(&pool.stop))
        g_cond_wait(&pool.wake, &pool.lock);
      g_mutex_unlock(&pool.lock);
    }
    if (g_atomic_int_get(&pool.stop))
      return NULL;
    seen = g_atomic_int_get(&pool.generation);
    run_chunks();
    if (g_atomic_int_dec_and_test(&pool.remaining)) {
      g_mutex_lock(&pool.lock);
      g_cond_signal(&pool.done);
      g_mutex_unlock(&pool.lock);
    }
  }
}

__attribute__((destructor)) static void pool_stop(void)
{
  if (!started || !pool.threads)
    return;
  g_mutex_lock(&pool.lock);
  g_atomic_int_set(&pool.stop, 1);
  g_cond_broadcast(&pool.wake);
  g_mutex_unlock(&pool.lock);
  for (int i = 0; i < pool.n_workers; i++)
    g_thread_join(pool.threads[i]);
  g_free(pool.threads);
  pool.threads = NULL;
  pool.n_workers = 0;
}

static void pool_start(int threads)
{
  if (!g_once_init_enter(&started))
    return;
  g_mutex_init(&pool.lock);
  g_cond_init(&pool.wake);
  g_cond_init(&pool.done);
  pool.threads = g_new0(GThread *, threads - 1);
  for (int i = 0; i < threads - 1; i++) {
    g_autoptr(GError) err = NULL;
    GThread *t = g_thread_try_new("mexd-worker", worker_main, NULL, &err);
    if (!t) { /* fewer workers is slower, not wrong */
      mexd_warning("cannot start a worker thread (%s): %d of %d threads", err->message,
                   pool.n_workers + 1, threads);
      break;
    }
    pool.threads[pool.n_workers++] = t;
  }
  g_once_init_leave(&started, 1);
}

#ifdef MEXD_HAVE_OPENMP
/* With oneDNN (built on OpenMP) the chunks run on OpenMP's threads, the ones oneDNN's primitives
 * run on.  Decision (issue 17, measured 2026-12-03 on 2 cores): with a pool of our own beside
 * them, OpenMP's threads spin between oneDNN calls on the cores our workers need (ViT-B/16
 * fp32, whose layer norms, softmax and permutes run here between oneDNN's matmuls: 7.5 images/s
 * with our pool, 8.2 with OpenMP's spin shortened); one set of threads takes turns instead.  The
 * chunks are the same either way (results do not depend on which thread runs a chunk).
 * MEXD_CPU_POOL=own keeps our pool (=openmp, the default, OpenMP's; anything else is reported once,
 * like a bad MEXD_THREADS). */
static gboolean use_openmp(void)
{
  static gsize once;
  static gboolean omp;
  if (g_once_init_enter(&once)) {
    const char *v = g_getenv("MEXD_CPU_POOL");
    omp = !(v && g_str_equal(v, "own"));
    if (v && *v && !g_str_equal(v, "own") && !g_str_equal(v, "openmp"))
      mexd_warning("MEXD_CPU_POOL is \"%s\", expected \"own\" or \"openmp\": using OpenMP's", v);
    g_once_init_leave(&once, 1);
  }
  return omp;
}

static void openmp_for(int64_t n, int64_t grain, int threads, MexdParallelFn fn, void *ctx)
{
  const int64_t parts = (int64_t)threads * 4;
  const int64_t chunk = MAX(grain, (n + parts - 1) / parts), n_chunks = (n + chunk - 1) / chunk;
  gintptr next = 0;
#pragma omp parallel num_threads(threads)
  for (;;) {
    int64_t c = (int64_t)g_atomic_pointer_add(&next, 1);
    if (c >= n_chunks)
      break;
    fn(c * chunk, MIN(n, (c + 1) * chunk), ctx);
  }
}
#endif

void mexd_parallel_for(int64_t n, int64_t grain, MexdParallelFn fn, void *ctx)
{
  if (n <= 0)
    return;
  if (grain < 1)
    grain = 1;
  int threads = mexd_parallel_threads();
#ifdef MEXD_HAVE_OPENMP
  if (use_openmp()) {
    if (threads == 1 || n < 2 * grain || omp_in_parallel())
      fn(0, n, ctx);
    else
      openmp_for(n, grain, threads, fn, ctx);
    return;
  }
#endif
  if (threads == 1 || n < 2 * grain || !g_atomic_int_compare_and_exchange(&pool.busy, 0, 1)) {
    fn(0, n, ctx);
    return;
  }
  pool_start(threads);
  if (pool.n_workers == 0) {
    g_atomic_int_set(&pool.busy, 0);
    fn(0, n, ctx);
    return;
  }
  /* a few chunks per thread, so a thread that starts late (or shares its core) takes fewer */
  int64_t parts = (int64_t)(pool.n_workers + 1) * 4;
  int64_t chunk = MAX(grain, (n + parts - 1) / parts);
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  pool.chunk = chunk;
  pool.n_chunks = (n + chunk - 1) / chunk;
  g_atomic_pointer_set(&pool.next, 0);
  g_atomic_int_set(&pool.remaining, pool.n_workers);
  g_mutex_lock(&pool.lock);
  g_atomic_int_inc(&pool.generation); /* publishes the job (a full barrier) */
  g_cond_broadcast(&pool.wake);
  g_mutex_unlock(&pool.lock);

  run_chunks();

  gint64 until = g_get_monotonic_time() + SPIN_US;
  int spins = 0;
  while (g_atomic_int_get(&pool.remaining) > 0) {
    cpu_relax();
    if (++spins % 64 == 0 && g_get_monotonic_time() > until)
      break;
  }
  if (g_atomic_int_get(&pool.remaining) > 0) {
    g_mutex_lock(&pool.lock);
    while (g_atomic_int_get(&pool.remaining) > 0)
      g_cond_wait(&pool.done, &pool.lock);
    g_mutex_unlock(&pool.lock);
  }
  g_atomic_int_set(&pool.busy, 0);
}
