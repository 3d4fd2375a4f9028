/* test-threads.c: cpu results do not depend on the number of threads (lib/core/parallel.h).
 *
 * The same process cannot run with two thread counts (the pool is configured once), so the test
 * runs itself as a child three times, with MEXD_THREADS = 1, 2 and 3, each child doing a whole
 * MExD forward on the cpu backend (adapter #1 with Nyström attention and PPEG, Dyn-MoE, adapter #2
 * and the fused CARD sampler) over a 4,096-instance fixture bag with a trace of every
 * intermediate, and writing all of it; the three files must be equal byte for byte.  The bag is
 * large enough that every parallel kernel splits its work (and 3 threads split it unevenly). */
#include "mexd.h"
#include "fixture-dir.h"
#include "nn/nn.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "core/parallel.h"

static void put(GString *out, const char *name, const void *data, size_t bytes)
{
  g_string_append_printf(out, "%s %zu\n", name, bytes);
  g_string_append_len(out, data, (gssize)bytes);
}

/* The child: the forward, its trace and its result into `path`. */
static int child(const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = mexd_test_fixture_dir("mexd");
  g_assert_nonnull(dir);
  g_autofree char *mpath = g_build_filename(dir, "model-e2.safetensors", NULL);
  g_autofree char *bpath = g_build_filename(dir, "bag-n4096.safetensors", NULL);
  g_autoptr(MexdBackend) be = mexd_backend_new("cpu", &error);
  g_assert_no_error(error);
  g_autoptr(MexdModel) m = mexd_model_load(mpath, be, &error);
  g_assert_no_error(error);
  g_autoptr(MexdSafetensors) bag = mexd_safetensors_open(bpath, &error);
  g_assert_no_error(error);
  int64_t nx;
  g_autofree float *x = mexd_test_st_floats(bag, "x", &nx);
  g_assert_nonnull(x);
  const MexdModelConfig *cfg = mexd_model_config(m);
  int64_t n = nx / cfg->feature_dim;
  g_autoptr(MexdTrace) trace = mexd_trace_new();
  MexdForwardOptions opt = MEXD_FORWARD_OPTIONS_DEFAULT;
  opt.chains = 8;
  MexdResult *r = mexd_model_forward(m, x, n, cfg->feature_dim, &opt, trace, &error);
  g_assert_no_error(error);
  g_assert_nonnull(r);
  GString *out = g_string_new(NULL);
  g_autoptr(GList) keys = g_hash_table_get_keys(trace->tensors);
  keys = g_list_sort(keys, (GCompareFunc)strcmp);
  for (GList *l = keys; l; l = l->next) {
    MexdTensor *t = g_hash_table_lookup(trace->tensors, l->data);
    g_autofree float *v = mexd_tensor_dup_f32(t, &error);
    g_assert_no_error(error);
    put(out, l->data, v, sizeof(float) * (size_t)mexd_tensor_numel(t));
  }
  put(out, "logits1", r->logits1, sizeof(float) * r->n_classes);
  put(out, "attention", r->attention, sizeof(float) * (size_t)r->n_instances);
  put(out, "z", r->z, sizeof(float) * r->width);
  put(out, "rho", r->rho, sizeof(float) * r->n_classes);
  g_assert_true(r->has_probs);
  put(out, "probs", r->probs, sizeof(float) * r->n_classes);
  put(out, "f0", r->f0, sizeof(float) * r->chains * r->n_classes);
  mexd_result_free(r);
  g_assert_true(g_file_set_contents(path, out->str, (gssize)out->len, &error));
  g_assert_no_error(error);
  g_string_free(out, TRUE);
  return 0;
}

static void test_threads(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *tmp = g_dir_make_tmp("mexd-threads-XXXXXX", &error);
  g_assert_no_error(error);
  g_autofree char *self = g_file_read_link("/proc/self/exe", &error);
  g_assert_no_error(error);
  /* "2own": two threads on the pool of our own (MEXD_CPU_POOL=own) instead of OpenMP's */
  static const char *const counts[] = {"1", "2", "3", "2own"};
  g_autofree char *first = NULL;
  gsize first_len = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(counts); i++) {
    g_autofree char *path = g_strdup_printf("%s/out-%s", tmp, counts[i]);
    char *argv[] = {self, (char *)"--child", path, NULL};
    g_auto(GStrv) env = g_get_environ();
    const gboolean own = g_str_has_suffix(counts[i], "own");
    env = g_environ_setenv(env, "MEXD_THREADS", own ? "2" : counts[i], TRUE);
    if (own)
      env = g_environ_setenv(env, "MEXD_CPU_POOL", "own", TRUE);
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, argv, env, G_SPAWN_DEFAULT, NULL, NULL, NULL, NULL, &status,
                               &error));
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(status, &error));
    g_assert_no_error(error);
    g_autofree char *data = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &data, &len, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(len, >, 0);
    g_unlink(path);
    if (!first) {
      first = g_steal_pointer(&data);
      first_len = len;
    } else if (len != first_len || memcmp(first, data, len) != 0) {
      g_error("MEXD_THREADS=%s gives other bits than MEXD_THREADS=1", counts[i]);
    }
  }
  g_rmdir(tmp);
}

static void sum_range(int64_t b, int64_t e, void *ctx)
{
  for (int64_t i = b; i < e; i++)
    g_atomic_pointer_add((gintptr *)ctx, i);
}

static gboolean sums_right(void)
{
  gintptr s = 0;
  mexd_parallel_for(100000, 1, sum_range, &s);
  return s == (gintptr)100000 * 99999 / 2;
}

/* A process that forks after the threads have run: the child's jobs finish (on its one thread)
 * instead of waiting for threads the child does not have. */
static void test_fork(void)
{
  g_assert_true(sums_right());
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0)
    _exit(sums_right() ? 0 : 1);
  int status = 0;
  for (int k = 0; k < 400; k++) { /* 20 s */
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    if (k == 399) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      g_error("the forked child's parallel job did not finish in 20 s");
    }
    g_usleep(50000);
  }
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
  g_assert_true(sums_right());
}

/* A bad MEXD_THREADS or MEXD_CPU_POOL is said once on stderr and the work still runs, on the
 * defaults (a typo in an environment variable must not stop a pipeline). */
static void test_bad_env(void)
{
  if (g_test_subprocess()) {
    g_log_set_always_fatal(G_LOG_FATAL_MASK); /* the warnings are what is tested */
    g_setenv("MEXD_THREADS", "two", TRUE);
    g_setenv("MEXD_CPU_POOL", "bogus", TRUE);
    g_assert_true(sums_right());
    g_assert_true(sums_right());
    return;
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*MEXD_THREADS is \"two\", expected a whole number*");
#ifdef MEXD_HAVE_OPENMP
  g_test_trap_assert_stderr("*MEXD_CPU_POOL is \"bogus\", expected \"own\" or \"openmp\"*");
#endif
}

int main(int argc, char **argv)
{
  if (argc == 3 && strcmp(argv[1], "--child") == 0)
    return child(argv[2]);
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/threads/bitwise-identical", test_threads);
  g_test_add_func("/threads/fork", test_fork);
  g_test_add_func("/threads/bad-env", test_bad_env);
  return g_test_run();
}
