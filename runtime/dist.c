/* dist.c — see dist.h: the launchers' environment, the NCCL id exchange (file, MPI, TCP), the TCP
 * liveness star, the watchdog thread, and the `--gpus N` local launcher. */
#define _GNU_SOURCE
#include "dist.h"
#include "nccl_api.h"
#include "util.h"
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the environment */

/* A non-negative integer variable: 1 and *v when set, 0 when unset, -1 with a message when bad. */
static int env_long(const char *name, long *v, char *err, size_t errlen) {
  const char *s = getenv(name);
  if (!s) return 0;
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (!*s || *end || errno || x < 0 || x > 1000000) {
    snprintf(err, errlen, "%s=%s: expected a non-negative integer", name, s);
    return -1;
  }
  *v = x;
  return 1;
}

int dist_env_parse(DistEnv *e, char *err, size_t errlen) {
  static const struct { const char *launcher, *rank, *world, *local; } L[] = {
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"},
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
  };
  memset(e, 0, sizeof *e);
  e->world = 1;
  snprintf(e->launcher, sizeof e->launcher, "single");
  for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
    long rank = 0, world = 0, local = 0;
    int hr = env_long(L[i].rank, &rank, err, errlen), hw = env_long(L[i].world, &world, err, errlen);
    if (hr < 0 || hw < 0) return -1;
    if (!hr && !hw) continue;
    if (!hw) {
      /* a Slurm batch script (not an srun step) has SLURM_PROCID but no step size: not a world */
      if (!strcmp(L[i].launcher, "slurm")) continue;
      snprintf(err, errlen, "%s is set but %s is not (both are needed)", L[i].rank, L[i].world);
      return -1;
    }
    if (!hr) {
      snprintf(err, errlen, "%s is set but %s is not (both are needed)", L[i].world, L[i].rank);
      return -1;
    }
    if (world < 1 || rank >= world) {
      snprintf(err, errlen, "%s=%ld and %s=%ld: need 0 <= rank < world size", L[i].rank, rank, L[i].world, world);
      return -1;
    }
    int hl = env_long(L[i].local, &local, err, errlen);
    if (hl < 0) return -1;
    if (!hl) local = rank;
    e->rank = (int)rank;
    e->world = (int)world;
    e->local_rank = (int)local;
    snprintf(e->launcher, sizeof e->launcher, "%s", L[i].launcher);
    return 0;
  }
  return 0;
}

/* Seconds from an environment variable, or dflt. */
static double env_seconds(const char *name, double dflt) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  double x = strtod(s, &end);
  if (*end || !(x > 0) || x > 1e7) fatal("%s=%s: expected a positive number of seconds", name, s);
  return x;
}

double dist_init_timeout(void) { return env_seconds("MF_DIST_INIT_TIMEOUT", 60); }
double dist_slow_timeout(void) { return env_seconds("MF_DIST_SLOW_TIMEOUT", 1800); }
double dist_timeout(void) { return env_seconds("MF_DIST_TIMEOUT", 30); }

/* ---------------------------------------------------------------- process state */

static struct {
  DistEnv env;
  int inited, zero;
  char id_file[4096];
  int file_written;            /* rank 0 wrote id_file (removed by dist_bootstrap_done) */
  /* the TCP star: rank 0 holds fd[k] for each peer k, the others fd[0] (rank 0's); -1 when closed */
  int star, *fd;
  unsigned char *done;         /* rank 0: peer k said it finished */
  int root_done;               /* others: rank 0 said it finished */
  unsigned char rbuf[8];       /* others: a partial notice from rank 0 */
  int rlen;
  int lost;
  char lost_msg[256];
  double last_check;
  /* MPI, when it carried the id */
  int (*mpi_finalize)(void);
  /* steps */
  int first_step_taken, slow_next;
  long step;
} D;

static pthread_mutex_t peer_mu = PTHREAD_MUTEX_INITIALIZER;

const DistEnv *dist_env(void) { return &D.env; }
int dist_rank(void) { return D.env.rank; }
int dist_world(void) { return D.env.world > 0 ? D.env.world : 1; }
int dist_local_rank(void) { return D.env.local_rank; }
int dist_zero(void) { return D.zero && dist_world() > 1; }

double dist_step_timeout(int *ordinary) {
  *ordinary = 0;
  if (!D.first_step_taken) {
    D.first_step_taken = 1;
    D.slow_next = 0;
    double a = dist_init_timeout(), b = dist_timeout();
    return a > b ? a : b;
  }
  if (D.slow_next) {
    D.slow_next = 0;
    return dist_slow_timeout();
  }
  *ordinary = 1;
  return dist_timeout();
}
void dist_slow_next(void) { D.slow_next = 1; }
void dist_note_step(long step) { D.step = step; }
long dist_step(void) { return D.step; }

/* ---------------------------------------------------------------- watchdog thread */

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static int w_armed;
static double w_deadline, w_seconds;
static char w_what[256];

/* Write straight to fd 2: the main thread may be blocked anywhere, stdio locks included. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n >= (int)sizeof b) n = (int)sizeof b - 1;
  ssize_t w = write(2, b, (size_t)n);
  (void)w;
}

static void *watch_main(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&watch_mu);
    int armed = w_armed;
    double dl = w_deadline, secs = w_seconds;
    char what[256];
    memcpy(what, w_what, sizeof what);
    pthread_mutex_unlock(&watch_mu);
    if (!armed) continue;
    char msg[256];
    if (dist_peer_lost(msg, sizeof msg)) {
      say("runtime: rank %d: %s during %s; stopping\n", D.env.rank, msg, what);
      _exit(1);
    }
    if (now_sec() > dl) {
      say("runtime: rank %d: %s did not finish within %.0f s (a peer rank may have died or hung); stopping\n",
          D.env.rank, what, secs);
      _exit(1);
    }
  }
  return NULL;
}

void dist_watch_arm(double seconds, const char *what) {
  pthread_mutex_lock(&watch_mu);
  w_seconds = seconds;
  w_deadline = now_sec() + seconds;
  snprintf(w_what, sizeof w_what, "%s", what);
  w_armed = 1;
  pthread_mutex_unlock(&watch_mu);
}

void dist_watch_disarm(void) {
  pthread_mutex_lock(&watch_mu);
  w_armed = 0;
  pthread_mutex_unlock(&watch_mu);
}

static void init_common(const char *id_file, int zero, int quiet_others) {
  if (D.inited) return;
  char err[512];
  if (dist_env_parse(&D.env, err, sizeof err)) fatal("%s", err);
  D.inited = 1;
  D.zero = zero;
  if (id_file) snprintf(D.id_file, sizeof D.id_file, "%s", id_file);
  setenv("NCCL_NVLS_ENABLE", "0", 0); /* NVLink multicast stays off on these machines */
  if (D.env.world > 1) {
    pthread_t t;
    if (pthread_create(&t, NULL, watch_main, NULL)) fatal("cannot start the watchdog thread");
    pthread_detach(t);
    const char *all = getenv("MF_DIST_ALL_STDOUT");
    if (quiet_others && D.env.rank != 0 && !(all && *all && strcmp(all, "0"))) {
      fflush(stdout);
      if (!freopen("/dev/null", "w", stdout)) fatal("rank %d: cannot silence stdout: %s", D.env.rank, strerror(errno));
    }
  }
}

void dist_init(const char *id_file, int zero) { init_common(id_file, zero, 1); }

/* ---------------------------------------------------------------- sockets */

static uint32_t get_be32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}
static void put_be32(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16), b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

/* Read or write exactly n bytes before `deadline` (now_sec()); 0, or -1 with errno (ETIMEDOUT,
 * ECONNRESET for a peer that closed). */
static int io_full(int fd, void *buf, size_t n, double deadline, int writing) {
  unsigned char *p = buf;
  while (n) {
    double left = deadline - now_sec();
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    struct pollfd pf = {fd, (short)(writing ? POLLOUT : POLLIN), 0};
    int r = poll(&pf, 1, (int)(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) continue;
    ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (k < 0) return -1;
    if (k == 0) { errno = ECONNRESET; return -1; }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static void set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl >= 0) fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* The TCP port of the exchange: MF_DIST_PORT, else MASTER_PORT (+1 under torchrun). */
static int exchange_port(char *err, size_t errlen) {
  const char *s = getenv("MF_DIST_PORT"), *name = "MF_DIST_PORT";
  int plus = 0;
  if (!s || !*s) {
    s = getenv("MASTER_PORT"), name = "MASTER_PORT";
    const char *te = getenv("TORCHELASTIC_RUN_ID");
    plus = te && *te ? 1 : 0; /* torchrun's own store listens on MASTER_PORT */
  }
  char *end;
  long p = s ? strtol(s, &end, 10) : 0;
  if (!s || !*s || *end || p < 1 || p + plus > 65535) {
    snprintf(err, errlen, "%s=%s: expected a TCP port (1..65535)", name, s ? s : "");
    return -1;
  }
  return (int)(p + plus);
}

/* Hello from a peer: "MFD1" rank world (12 bytes); reply: "MFD1" status blob (136 bytes). */
enum { HELLO = 12, REPLY = 8 + DIST_BLOB_BYTES, ST_OK = 0, ST_WORLD = 1, ST_RANK = 2, ST_DUP = 3 };

static int tcp_listen(int port, char *err, size_t errlen) {
  int one = 1, zero = 0;
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) { /* dual stack: IPv4 peers arrive as mapped addresses */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 128) == 0) return fd;
    if (errno == EADDRINUSE) goto in_use;
    close(fd);
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a4;
  memset(&a4, 0, sizeof a4);
  a4.sin_family = AF_INET;
  a4.sin_addr.s_addr = htonl(INADDR_ANY);
  a4.sin_port = htons((uint16_t)port);
  if (bind(fd, (struct sockaddr *)&a4, sizeof a4) == 0 && listen(fd, 128) == 0) return fd;
in_use:;
  int e = errno;
  close(fd);
  snprintf(err, errlen, "cannot listen on TCP port %d: %s%s", port, strerror(e),
           e == EADDRINUSE ? " (another job uses this MASTER_PORT? choose a free one)" : "");
  return -1;
}

/* Rank 0: accept the world − 1 peers, check their hello, send each the blob; keep the sockets. */
static void tcp_serve(const unsigned char *blob, int port) {
  char err[512];
  int lfd = tcp_listen(port, err, sizeof err);
  if (lfd < 0) fatal("rank 0: %s", err);
  int W = D.env.world, got = 0;
  double t0 = now_sec(), limit = dist_init_timeout(), deadline = t0 + limit;
  while (got < W - 1) {
    double left = deadline - now_sec();
    if (left <= 0) {
      char miss[512] = "";
      size_t k = 0;
      for (int r = 1; r < W && k + 16 < sizeof miss; r++)
        if (D.fd[r] < 0) k += (size_t)snprintf(miss + k, sizeof miss - k, "%s%d", k ? ", " : "", r);
      fatal("rank 0: only %d of the %d other ranks connected to port %d within %.0f s (missing: %s) — did they start, "
            "with MASTER_ADDR pointing at this host and the same MASTER_PORT? (MF_DIST_INIT_TIMEOUT)",
            got, W - 1, port, limit, miss);
    }
    struct pollfd pf = {lfd, POLLIN, 0};
    int pr = poll(&pf, 1, (int)(left * 1000) + 1);
    if (pr <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue;
    unsigned char h[HELLO], rep[REPLY];
    if (io_full(fd, h, HELLO, now_sec() + 10, 0) || memcmp(h, "MFD1", 4)) {
      fprintf(stderr, "runtime: rank 0: ignoring a connection on port %d that is not a moonforge rank\n", port);
      close(fd);
      continue;
    }
    uint32_t r = get_be32(h + 4), w = get_be32(h + 8), st = ST_OK;
    if ((int)w != W) st = ST_WORLD;
    else if (r < 1 || (int)r >= W) st = ST_RANK;
    else if (D.fd[r] >= 0) st = ST_DUP;
    memcpy(rep, "MFD1", 4);
    put_be32(rep + 4, st);
    memcpy(rep + 8, blob, DIST_BLOB_BYTES);
    int wr = io_full(fd, rep, REPLY, now_sec() + 10, 1);
    if (st == ST_WORLD)
      fatal("rank 0: a process connected to port %d as rank %u of a world of %u, but this run has %d ranks — is another "
            "job using the same MASTER_PORT?", port, r, w, W);
    if (st == ST_RANK) fatal("rank 0: a process connected as rank %u, outside 1..%d: check RANK", r, W - 1);
    if (st == ST_DUP) fatal("rank 0: two processes connected as rank %u: check RANK", r);
    if (wr) {
      close(fd);
      continue; /* the peer went away before the reply: it will retry */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nonblock(fd, 1);
    D.fd[r] = fd;
    got++;
  }
  close(lfd);
}

/* One connection attempt to host:port with a timeout: a connected blocking socket, or -1. */
static int tcp_connect_once(const struct addrinfo *ai, double timeout, int *err_out) {
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) { *err_out = errno; return -1; }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) { set_nonblock(fd, 0); return fd; }
  if (errno != EINPROGRESS) { *err_out = errno; close(fd); return -1; }
  struct pollfd pf = {fd, POLLOUT, 0};
  int r = poll(&pf, 1, (int)(timeout * 1000) + 1);
  int e = 0;
  socklen_t el = sizeof e;
  if (r <= 0) { *err_out = ETIMEDOUT; close(fd); return -1; }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) || e) { *err_out = e ? e : errno; close(fd); return -1; }
  set_nonblock(fd, 0);
  return fd;
}

/* Ranks > 0: connect to rank 0 (retrying while it is not listening yet), receive the blob. */
static void tcp_fetch(unsigned char *blob, const char *host, int port) {
  int R = D.env.rank, W = D.env.world;
  double limit = dist_init_timeout(), deadline = now_sec() + limit;
  char ps[16], last[256] = "no attempt";
  snprintf(ps, sizeof ps, "%d", port);
  for (;;) {
    if (now_sec() > deadline)
      fatal("rank %d: cannot reach rank 0 at %s:%d within %.0f s (last error: %s) — is rank 0 running, and do all "
            "ranks have the same MASTER_ADDR and MASTER_PORT? (MF_DIST_INIT_TIMEOUT)", R, host, port, limit, last);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) snprintf(last, sizeof last, "MASTER_ADDR %s: %s", host, gai_strerror(g));
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      int e = 0;
      double left = deadline - now_sec();
      int fd = tcp_connect_once(ai, left < 2 ? (left > 0 ? left : 0.01) : 2, &e);
      if (fd < 0) {
        snprintf(last, sizeof last, "%s", strerror(e));
        continue;
      }
      unsigned char h[HELLO], rep[REPLY];
      memcpy(h, "MFD1", 4);
      put_be32(h + 4, (uint32_t)R);
      put_be32(h + 8, (uint32_t)W);
      if (io_full(fd, h, HELLO, deadline, 1) || io_full(fd, rep, REPLY, deadline, 0) || memcmp(rep, "MFD1", 4)) {
        snprintf(last, sizeof last, "connected, but no valid reply (%s)", strerror(errno));
        close(fd);
        continue;
      }
      uint32_t st = get_be32(rep + 4);
      if (st == ST_WORLD) fatal("rank %d: rank 0 at %s:%d runs a different world size (this rank says %d): check WORLD_SIZE", R, host, port, W);
      if (st != ST_OK) fatal("rank %d: rank 0 at %s:%d refused rank %d (out of range or already connected): check RANK", R, host, port, R);
      memcpy(blob, rep + 8, DIST_BLOB_BYTES);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      set_nonblock(fd, 1);
      D.fd[0] = fd;
      freeaddrinfo(res);
      return;
    }
    if (res) freeaddrinfo(res);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* ---------------------------------------------------------------- liveness */

/* Record the first lost peer (caller holds peer_mu). */
static void mark_lost(const char *fmt, int rank) {
  if (D.lost) return;
  D.lost = 1;
  snprintf(D.lost_msg, sizeof D.lost_msg, fmt, rank);
}

/* Drain what a connection has; returns 1 when it closed (EOF or error). bytes go to take(). */
static int drain(int fd, void (*take)(int who, const unsigned char *b, size_t n), int who) {
  for (;;) {
    unsigned char b[256];
    ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
    if (r > 0) { take(who, b, (size_t)r); continue; }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return 1;
  }
}

static void take_at_root(int who, const unsigned char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i] == 'F') D.done[who] = 1;
}

/* Rank 0's notices to the others: 'F' (finished) or 'D' + 4 bytes (rank that died). */
static void take_at_peer(int who, const unsigned char *b, size_t n) {
  (void)who;
  for (size_t i = 0; i < n; i++) {
    if (D.rlen < (int)sizeof D.rbuf) D.rbuf[D.rlen++] = b[i];
    while (D.rlen > 0) {
      if (D.rbuf[0] == 'F') {
        D.root_done = 1;
      } else if (D.rbuf[0] == 'D') {
        if (D.rlen < 5) break;
        mark_lost("rank %d exited or was killed (reported by rank 0)", (int)get_be32(D.rbuf + 1));
        memmove(D.rbuf, D.rbuf + 5, (size_t)(D.rlen - 5));
        D.rlen -= 5;
        continue;
      }
      memmove(D.rbuf, D.rbuf + 1, (size_t)(D.rlen - 1));
      D.rlen--;
    }
  }
}

static void check_peers(void) {
  int W = D.env.world;
  if (D.env.rank == 0) {
    int dead = -1;
    for (int k = 1; k < W; k++) {
      if (D.fd[k] < 0) continue;
      if (drain(D.fd[k], take_at_root, k)) {
        close(D.fd[k]);
        D.fd[k] = -1;
        if (!D.done[k] && dead < 0) dead = k;
      }
    }
    if (dead >= 0 && !D.lost) {
      mark_lost("rank %d exited or was killed (its connection to rank 0 closed)", dead);
      unsigned char m[5] = {'D'};
      put_be32(m + 1, (uint32_t)dead);
      for (int k = 1; k < W; k++)
        if (D.fd[k] >= 0) {
          ssize_t w = send(D.fd[k], m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
          (void)w;
        }
    }
  } else if (D.fd[0] >= 0) {
    if (drain(D.fd[0], take_at_peer, 0)) {
      close(D.fd[0]);
      D.fd[0] = -1;
      if (!D.root_done) mark_lost("rank %d exited or was killed (its connection closed)", 0);
    }
  }
}

int dist_peer_lost(char *msg, size_t n) {
  pthread_mutex_lock(&peer_mu);
  double t = now_sec();
  if (D.star && !D.lost && t - D.last_check >= 0.02) { /* at most 50 checks a second */
    D.last_check = t;
    check_peers();
  }
  int lost = D.lost;
  if (lost && msg && n) snprintf(msg, n, "%s", D.lost_msg);
  pthread_mutex_unlock(&peer_mu);
  return lost;
}

/* ---------------------------------------------------------------- id file */

/* What ties an id file to this run: the launcher's job id where there is one. */
static void run_key(char *k, size_t n) {
  const char *sj = getenv("SLURM_JOB_ID"), *ss = getenv("SLURM_STEP_ID");
  const char *alt[] = {"OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "TORCHELASTIC_RUN_ID", "MF_DIST_RUN_ID"};
  if (sj && *sj) { snprintf(k, n, "slurm:%s.%s", sj, ss ? ss : ""); return; }
  for (size_t i = 0; i < sizeof alt / sizeof alt[0]; i++) {
    const char *v = getenv(alt[i]);
    if (v && *v) { snprintf(k, n, "%s:%s", alt[i], v); return; }
  }
  k[0] = 0;
}

/* "MFNCCLID" world keylen key blob */
static void file_write(const unsigned char *blob) {
  char key[256], tmp[4200];
  run_key(key, sizeof key);
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", D.id_file, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) fatal("rank 0: --nccl-id-file %s: cannot write %s: %s", D.id_file, tmp, strerror(errno));
  unsigned char h[16];
  memcpy(h, "MFNCCLID", 8);
  put_be32(h + 8, (uint32_t)D.env.world);
  put_be32(h + 12, (uint32_t)strlen(key));
  int ok = fwrite(h, 1, 16, f) == 16 && fwrite(key, 1, strlen(key), f) == strlen(key) &&
           fwrite(blob, 1, DIST_BLOB_BYTES, f) == DIST_BLOB_BYTES && fflush(f) == 0 && fsync(fileno(f)) == 0;
  if (fclose(f) || !ok || rename(tmp, D.id_file)) {
    int e = errno;
    unlink(tmp);
    fatal("rank 0: --nccl-id-file %s: write failed: %s", D.id_file, strerror(e));
  }
  D.file_written = 1;
}

/* 1 and the blob when the file holds this run's id; 0 (why in note) when absent or stale. */
static int file_try(unsigned char *blob, char *note, size_t nn) {
  size_t len;
  char *b = read_file(D.id_file, &len);
  if (!b) { snprintf(note, nn, "it does not exist"); return 0; }
  char key[256];
  run_key(key, sizeof key);
  const unsigned char *u = (const unsigned char *)b;
  int ok = 0;
  if (len >= 16 && !memcmp(u, "MFNCCLID", 8)) {
    uint32_t w = get_be32(u + 8), kl = get_be32(u + 12);
    if (len == 16 + (size_t)kl + DIST_BLOB_BYTES) {
      if ((int)w != D.env.world)
        snprintf(note, nn, "it holds the id of a run of %u ranks, not %d (left over from another run? remove it)", w, D.env.world);
      else if (kl != strlen(key) || memcmp(u + 16, key, kl))
        snprintf(note, nn, "it holds the id of another job (%.*s%s; this is %s)", (int)kl, (const char *)u + 16,
                 kl ? "" : "no job id", key[0] ? key : "no job id");
      else {
        memcpy(blob, u + 16 + kl, DIST_BLOB_BYTES);
        ok = 1;
      }
    } else {
      snprintf(note, nn, "it has the wrong size (%zu bytes)", len);
    }
  } else {
    snprintf(note, nn, "it is not an id file written by moonforge");
  }
  free(b);
  return ok;
}

static void file_fetch(unsigned char *blob) {
  double limit = dist_init_timeout(), deadline = now_sec() + limit;
  char note[512];
  while (!file_try(blob, note, sizeof note)) {
    if (now_sec() > deadline)
      fatal("rank %d: --nccl-id-file %s: no id from this run's rank 0 within %.0f s: %s — is rank 0 running, with the same "
            "path on a filesystem every rank sees? (MF_DIST_INIT_TIMEOUT)", D.env.rank, D.id_file, limit, note);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* ---------------------------------------------------------------- MPI (OpenMPI, dlopen) */

/* OpenMPI's libmpi.so.40: MF_MPI_LIB, the loader's path, next to an `mpirun` on PATH, then the
 * usual install places. RTLD_GLOBAL: OpenMPI's plugins resolve symbols of libmpi. */
static void *mpi_open(char *tried, size_t tn) {
  const char *env = getenv("MF_MPI_LIB");
  size_t k = 0;
  tried[0] = 0;
#define TRY(path)                                                                              \
  do {                                                                                         \
    void *h_ = dlopen(path, RTLD_NOW | RTLD_GLOBAL);                                           \
    if (h_) return h_;                                                                         \
    if (k + 4 < tn) k += (size_t)snprintf(tried + k, tn - k, "%s%s", k ? ", " : "", path);     \
  } while (0)
  if (env && *env) {
    TRY(env);
    return NULL;
  }
  TRY("libmpi.so.40");
  const char *path = getenv("PATH"), *op = getenv("OPAL_PREFIX");
  char buf[4200];
  if (op && *op) {
    snprintf(buf, sizeof buf, "%s/lib/libmpi.so.40", op);
    TRY(buf);
  }
  while (path && *path) {
    const char *c = strchr(path, ':');
    size_t n = c ? (size_t)(c - path) : strlen(path);
    snprintf(buf, sizeof buf, "%.*s/mpirun", (int)n, path);
    if (n && access(buf, X_OK) == 0) {
      snprintf(buf, sizeof buf, "%.*s/../lib/libmpi.so.40", (int)n, path);
      TRY(buf);
      snprintf(buf, sizeof buf, "%.*s/../lib64/libmpi.so.40", (int)n, path);
      TRY(buf);
    }
    path = c ? c + 1 : NULL;
  }
  static const char *fixed[] = {"/usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so.40", "/usr/local/mpi/lib/libmpi.so.40",
                                "/opt/hpcx/ompi/lib/libmpi.so.40", "/usr/lib64/openmpi/lib/libmpi.so.40",
                                "/usr/local/lib/libmpi.so.40"};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) TRY(fixed[i]);
#undef TRY
  return NULL;
}

/* MPI_Init, check MPI's rank and size against the environment, MPI_Bcast the blob from rank 0.
 * Returns 0, or -1 when no OpenMPI library could be loaded (why in err). */
static int mpi_bcast(unsigned char *blob, DistMakeBlob make, void *ctx, char *err, size_t errlen) {
  char tried[2048];
  void *h = mpi_open(tried, sizeof tried);
  if (!h) {
    snprintf(err, errlen, "cannot load OpenMPI's libmpi.so.40 (tried %s)", tried);
    return -1;
  }
  int (*init)(int *, char ***), (*initialized)(int *), (*bcast)(void *, int, void *, int, void *);
  int (*crank)(void *, int *), (*csize)(void *, int *), (*fin)(void);
  void *p[6], *world = dlsym(h, "ompi_mpi_comm_world"), *byte = dlsym(h, "ompi_mpi_byte");
  const char *names[6] = {"MPI_Init", "MPI_Initialized", "MPI_Bcast", "MPI_Comm_rank", "MPI_Comm_size", "MPI_Finalize"};
  for (int i = 0; i < 6; i++)
    if (!(p[i] = dlsym(h, names[i]))) fatal("rank %d: the MPI library has no %s", D.env.rank, names[i]);
  /* OpenMPI's MPI_COMM_WORLD and MPI_BYTE are the addresses of these two objects */
  if (!world || !byte) fatal("rank %d: the MPI library is not OpenMPI (no ompi_mpi_comm_world); use MASTER_ADDR/MASTER_PORT", D.env.rank);
  memcpy(&init, &p[0], sizeof p[0]);
  memcpy(&initialized, &p[1], sizeof p[1]);
  memcpy(&bcast, &p[2], sizeof p[2]);
  memcpy(&crank, &p[3], sizeof p[3]);
  memcpy(&csize, &p[4], sizeof p[4]);
  memcpy(&fin, &p[5], sizeof p[5]);
  dist_watch_arm(dist_init_timeout(), "MPI_Init and MPI_Bcast of the NCCL id");
  int done = 0;
  if (initialized(&done) || (!done && init(NULL, NULL))) fatal("rank %d: MPI_Init failed", D.env.rank);
  int r = -1, s = -1;
  crank(world, &r);
  csize(world, &s);
  if (r != D.env.rank || s != D.env.world)
    fatal("rank %d of %d by the environment, but MPI says rank %d of %d", D.env.rank, D.env.world, r, s);
  if (D.env.rank == 0) make(blob, ctx);
  if (bcast(blob, DIST_BLOB_BYTES, byte, 0, world)) fatal("rank %d: MPI_Bcast of the NCCL id failed", D.env.rank);
  dist_watch_disarm();
  D.mpi_finalize = fin;
  return 0;
}

/* ---------------------------------------------------------------- the exchange */

const char *dist_bootstrap(unsigned char blob[DIST_BLOB_BYTES], DistMakeBlob make, void *ctx) {
  if (!D.inited) fatal("dist_bootstrap before dist_init");
  int R = D.env.rank, W = D.env.world;
  if (W == 1) {
    make(blob, ctx);
    return "none";
  }
  if (D.id_file[0]) {
    if (R == 0) {
      make(blob, ctx);
      file_write(blob);
    } else {
      file_fetch(blob);
    }
    return "file";
  }
  const char *ma = getenv("MASTER_ADDR"), *mp = getenv("MASTER_PORT"), *dp = getenv("MF_DIST_PORT");
  int have_tcp = ma && *ma && ((mp && *mp) || (dp && *dp));
  char err[2300];
  if (!strcmp(D.env.launcher, "mpirun")) {
    if (mpi_bcast(blob, make, ctx, err, sizeof err) == 0) return "mpi";
    if (!have_tcp)
      fatal("rank %d: started by mpirun but %s: set MF_MPI_LIB=/path/to/libmpi.so.40, or MASTER_ADDR and MASTER_PORT, or "
            "pass --nccl-id-file PATH", R, err);
    fprintf(stderr, "runtime: rank %d: %s; exchanging the NCCL id over TCP (MASTER_ADDR/MASTER_PORT)\n", R, err);
  }
  if (!have_tcp)
    fatal("rank %d of %d (%s): no way to hand out the NCCL id: set MASTER_ADDR and MASTER_PORT (rank 0's host and a free "
          "port), or pass --nccl-id-file PATH on a filesystem every rank sees, or launch with mpirun", R, W, D.env.launcher);
  int port = exchange_port(err, sizeof err);
  if (port < 0) fatal("rank %d: %s", R, err);
  D.fd = xmalloc((size_t)W * sizeof *D.fd);
  D.done = xcalloc((size_t)W, 1);
  for (int k = 0; k < W; k++) D.fd[k] = -1;
  if (R == 0) {
    make(blob, ctx);
    tcp_serve(blob, port);
  } else {
    tcp_fetch(blob, ma, port);
  }
  pthread_mutex_lock(&peer_mu);
  D.star = 1;
  pthread_mutex_unlock(&peer_mu);
  return "tcp";
}

void dist_bootstrap_done(void) {
  if (D.file_written && D.env.rank == 0) {
    unlink(D.id_file);
    D.file_written = 0;
  }
}

void dist_finish(void) {
  pthread_mutex_lock(&peer_mu);
  if (D.star) {
    unsigned char f = 'F';
    for (int k = 0; k < D.env.world; k++)
      if (D.fd[k] >= 0) {
        ssize_t w = send(D.fd[k], &f, 1, MSG_NOSIGNAL);
        (void)w;
        shutdown(D.fd[k], SHUT_WR);
        close(D.fd[k]);
        D.fd[k] = -1;
      }
    D.star = 0;
  }
  pthread_mutex_unlock(&peer_mu);
  if (D.mpi_finalize) {
    D.mpi_finalize();
    D.mpi_finalize = NULL;
  }
}

/* ---------------------------------------------------------------- --gpus N */

static volatile sig_atomic_t g_stop_sig;
static void on_stop(int sig) { g_stop_sig = sig; }
static void on_child(int sig) { (void)sig; } /* only to interrupt poll() */

/* A TCP port nobody listens on right now (the kernel's pick). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fatal("--gpus: socket: %s", strerror(errno));
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &al))
    fatal("--gpus: cannot find a free TCP port: %s", strerror(errno));
  close(fd);
  return ntohs(a.sin_port);
}

typedef struct {
  pid_t pid;
  int fd[2];           /* stdout, stderr pipes (ranks > 0); -1 when closed */
  char *buf[2];        /* partial line */
  size_t len[2];
  int alive, status;
} Child;

/* Write every complete line of what arrived, prefixed; with flush, the rest too. */
static void emit_lines(int rank, int s, Child *c, int flush) {
  FILE *out = s ? stderr : stdout;
  size_t start = 0;
  for (size_t i = 0; i < c->len[s]; i++)
    if (c->buf[s][i] == '\n') {
      fprintf(out, "[rank %d] %.*s\n", rank, (int)(i - start), c->buf[s] + start);
      start = i + 1;
    }
  if (flush && start < c->len[s]) {
    fprintf(out, "[rank %d] %.*s\n", rank, (int)(c->len[s] - start), c->buf[s] + start);
    start = c->len[s];
  }
  if (start) memmove(c->buf[s], c->buf[s] + start, c->len[s] - start);
  c->len[s] -= start;
  fflush(out);
}

int dist_launch_local(int n, int argc, char **argv) {
  DistEnv e;
  char err[512];
  if (dist_env_parse(&e, err, sizeof err)) fatal("%s", err);
  if (e.world > 1)
    fatal("--gpus %d starts the ranks of one host itself; it cannot run inside a %s world of %d ranks", n, e.launcher, e.world);
  if (n < 1 || n > 1024) fatal("--gpus needs a number of GPUs from 1 to 1024 (got %d)", n);
  int port = free_port();
  char **cargv = xmalloc((size_t)(argc + 1) * sizeof *cargv);
  int cn = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--gpus")) { i++; continue; }
    cargv[cn++] = argv[i];
  }
  cargv[cn] = NULL;
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_child;
  sigaction(SIGCHLD, &sa, NULL);
  Child *ch = xcalloc((size_t)n, sizeof *ch);
  pid_t parent = getpid();
  for (int r = 0; r < n; r++) {
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    if (r > 0 && (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC))) fatal("--gpus: pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) fatal("--gpus: fork: %s", strerror(errno));
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL); /* the ranks die with the launcher */
      if (getppid() != parent) _exit(1);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      signal(SIGCHLD, SIG_DFL);
      if (r > 0 && (dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)) _exit(127);
      char v[32];
      static const char *outer[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                                    "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "TORCHELASTIC_RUN_ID",
                                    "MF_DIST_PORT"};
      for (size_t i = 0; i < sizeof outer / sizeof outer[0]; i++) unsetenv(outer[i]);
      snprintf(v, sizeof v, "%d", r);
      setenv("RANK", v, 1);
      setenv("LOCAL_RANK", v, 1);
      snprintf(v, sizeof v, "%d", n);
      setenv("WORLD_SIZE", v, 1);
      setenv("LOCAL_WORLD_SIZE", v, 1);
      snprintf(v, sizeof v, "%d", port);
      setenv("MASTER_PORT", v, 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      execv("/proc/self/exe", cargv);
      fprintf(stderr, "runtime --gpus: cannot start rank %d: exec /proc/self/exe: %s\n", r, strerror(errno));
      _exit(127);
    }
    ch[r].pid = pid;
    ch[r].alive = 1;
    ch[r].fd[0] = po[0];
    ch[r].fd[1] = pe[0];
    if (r > 0) {
      close(po[1]);
      close(pe[1]);
    }
  }
  int failed = -1, alive = n, forwarded = 0;
  double kill_at = 0;
  struct pollfd *pf = xmalloc((size_t)(2 * n) * sizeof *pf);
  int *who = xmalloc((size_t)(2 * n) * sizeof *who);
  for (;;) {
    int np = 0;
    for (int r = 1; r < n; r++)
      for (int s = 0; s < 2; s++)
        if (ch[r].fd[s] >= 0) {
          pf[np] = (struct pollfd){ch[r].fd[s], POLLIN, 0};
          who[np++] = r * 2 + s;
        }
    if (!alive && !np) break;
    int pr = poll(pf, (nfds_t)np, 100);
    for (int i = 0; pr > 0 && i < np; i++) {
      if (!pf[i].revents) continue;
      Child *c = &ch[who[i] / 2];
      int s = who[i] % 2;
      char b[4096];
      ssize_t k = read(c->fd[s], b, sizeof b);
      if (k > 0) {
        c->buf[s] = xrealloc(c->buf[s], c->len[s] + (size_t)k);
        memcpy(c->buf[s] + c->len[s], b, (size_t)k);
        c->len[s] += (size_t)k;
        emit_lines(who[i] / 2, s, c, 0);
      } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
        emit_lines(who[i] / 2, s, c, 1);
        close(c->fd[s]);
        c->fd[s] = -1;
      }
    }
    int st;
    pid_t w;
    while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
      int r = 0;
      while (r < n && ch[r].pid != w) r++;
      if (r == n) continue;
      ch[r].alive = 0;
      ch[r].status = st;
      alive--;
      int bad = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
      if (bad && failed < 0 && !g_stop_sig) {
        failed = r;
        fflush(stdout);
        if (WIFSIGNALED(st))
          fprintf(stderr, "runtime --gpus: rank %d (pid %d) was killed by signal %d (%s); stopping the other ranks\n", r,
                  (int)w, WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
          fprintf(stderr, "runtime --gpus: rank %d (pid %d) exited with status %d; stopping the other ranks\n", r, (int)w,
                  WEXITSTATUS(st));
      }
    }
    if ((failed >= 0 || g_stop_sig) && !forwarded) {
      for (int r = 0; r < n; r++)
        if (ch[r].alive) kill(ch[r].pid, SIGTERM);
      forwarded = 1;
      kill_at = now_sec() + 5;
    }
    if (forwarded && alive && now_sec() > kill_at) {
      for (int r = 0; r < n; r++)
        if (ch[r].alive) kill(ch[r].pid, SIGKILL);
      kill_at = now_sec() + 1e9;
    }
  }
  for (int r = 0; r < n; r++) {
    free(ch[r].buf[0]);
    free(ch[r].buf[1]);
  }
  free(ch);
  free(pf);
  free(who);
  free(cargv);
  if (failed >= 0) return 1;
  if (g_stop_sig) {
    fprintf(stderr, "runtime --gpus: stopped by signal %d\n", (int)g_stop_sig);
    return 128 + (int)g_stop_sig;
  }
  return 0;
}

/* ---------------------------------------------------------------- self-test modes */

static void make_random(unsigned char blob[DIST_BLOB_BYTES], void *ctx) {
  (void)ctx;
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(blob, 1, DIST_BLOB_BYTES, f) : 0;
  if (f) fclose(f);
  uint64_t x = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(now_sec() * 1e9);
  for (size_t i = got; i < DIST_BLOB_BYTES; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    blob[i] = (unsigned char)x;
  }
}

/* The real thing for mode nccl-id: an NCCL unique id (needs NCCL, no GPU). */
static void make_nccl_id_test(unsigned char blob[DIST_BLOB_BYTES], void *ctx) {
  (void)ctx;
  char b[512];
  int r = nccl.GetUniqueId((MfNcclId *)(void *)blob);
  if (r != MF_NCCL_SUCCESS) fatal("rank 0: ncclGetUniqueId failed: %s", nccl_result_str(r, NULL, b, sizeof b));
}

int dist_selftest(const char *mode, const char *id_file) {
  if (!strcmp(mode, "env")) {
    DistEnv e;
    char err[512];
    if (dist_env_parse(&e, err, sizeof err)) fatal("%s", err);
    printf("dist-env: rank %d world %d local %d launcher %s\n", e.rank, e.world, e.local_rank, e.launcher);
    return 0;
  }
  int real = !strcmp(mode, "nccl-id");
  if (strcmp(mode, "exchange") && !real) fatal("--dist-selftest: unknown mode '%s' (env, exchange or nccl-id)", mode);
  init_common(id_file, 0, 0);
  char err[1024];
  if (real && nccl_load(err, sizeof err)) fatal("rank %d: %s", D.env.rank, err);
  if (real) printf("nccl: rank %d loaded NCCL %d\n", D.env.rank, nccl.version);
  unsigned char blob[DIST_BLOB_BYTES];
  const char *how = dist_bootstrap(blob, real ? make_nccl_id_test : make_random, NULL);
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (int i = 0; i < DIST_BLOB_BYTES; i++) h = (h ^ blob[i]) * 1099511628211ull;
  printf("dist-selftest: rank %d of %d (local %d, %s): id via %s, blob %016llx\n", D.env.rank, D.env.world,
         D.env.local_rank, D.env.launcher, how, (unsigned long long)h);
  fflush(stdout);
  const char *fs = getenv("MF_DIST_SELFTEST_FAIL");
  int fail = fs && *fs ? atoi(fs) : -1;
  if (fail == D.env.rank) {
    fprintf(stderr, "runtime: rank %d: failing on purpose (MF_DIST_SELFTEST_FAIL)\n", D.env.rank);
    exit(3);
  }
  double hold = env_seconds("MF_DIST_SELFTEST_HOLD", fail >= 0 ? 30 : 0), t0 = now_sec();
  char msg[256];
  while (now_sec() - t0 < hold) {
    if (dist_peer_lost(msg, sizeof msg)) {
      fprintf(stderr, "runtime: rank %d: %s; stopping\n", D.env.rank, msg);
      return 1;
    }
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  dist_finish();
  return 0;
}
