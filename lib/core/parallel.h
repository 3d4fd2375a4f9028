/* parallel.h: one pool of worker threads for the cpu kernels that are not BLAS.
 *
 * mexd_parallel_for(n, grain, fn, ctx) calls fn(begin, end, ctx) over disjoint ranges that cover
 * [0, n) exactly once, on the calling thread and the pool's workers, and returns when all are done.
 * A kernel stays deterministic when every output element is computed by exactly one call in an
 * order that does not depend on the range it falls in (no reductions across ranges): then its
 * results do not change with the number of threads.
 *
 * Threads: the CPUs this process may run on (sched_getaffinity), or MEXD_THREADS (1..1024); the
 * workers are created on first use and stopped at exit.  OpenBLAS is told the same count, so BLAS
 * calls and these kernels do not oversubscribe the machine.  Work runs inline on the caller when
 * there is one thread, when n < 2·grain, when the pool is busy (a second caller thread, or a call
 * from inside fn) — so nested or concurrent use is safe, only not parallel. */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef void (*MexdParallelFn)(int64_t begin, int64_t end, void *ctx);

void mexd_parallel_for(int64_t n, int64_t grain, MexdParallelFn fn, void *ctx);

/* The pool's thread count (the caller included); creates nothing. */
int mexd_parallel_threads(void);

/* Elements of cheap elementwise work worth a thread (a few microseconds of it). */
#define MEXD_PARALLEL_GRAIN_ELEMENTS ((int64_t)16384)

G_END_DECLS
