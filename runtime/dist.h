/* dist.h — several processes training together (one per GPU): who this process is, how the
 * processes find each other, how they notice that one of them died, and the `--gpus N` launcher.
 * No GPU and no NCCL here: gpu.c owns the NCCL communicator and the collectives; this file hands it
 * the 128-byte NCCL id from rank 0 and bounds every wait on the others.
 *
 * Rank, world size and local rank come from the launcher's environment, first match wins:
 *   mpirun (OpenMPI)   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
 *   srun (Slurm)       SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID   (only inside an srun step:
 *                      a batch script's own SLURM_NTASKS is not a world size)
 *   torchrun-style     RANK, WORLD_SIZE, LOCAL_RANK (default RANK)
 *   none of these      rank 0 of 1 (LOCAL_RANK alone still picks the GPU, see gpu.c)
 *
 * The NCCL id goes from rank 0 to the others, first possible way wins:
 *   --nccl-id-file PATH  rank 0 writes PATH atomically on a shared filesystem, the others poll it;
 *   mpirun               MPI_Bcast through OpenMPI's libmpi.so.40, loaded with dlopen at run time
 *                        (nothing of MPI is needed to build); MF_MPI_LIB names the library;
 *   MASTER_ADDR + MASTER_PORT  TCP: rank 0 listens on MASTER_PORT (MASTER_PORT + 1 under torchrun,
 *                        whose own store holds MASTER_PORT; MF_DIST_PORT overrides both), the others
 *                        connect, retrying while rank 0 is not listening yet, and receive the id.
 * The TCP connections stay open: rank 0 sees a rank's connection close when it dies and tells the
 * others, so a death is reported by rank number within a fraction of a second (dist_peer_lost).
 *
 * Time limits (seconds, environment): MF_DIST_INIT_TIMEOUT (60) for the start-up — the id exchange,
 * the NCCL communicator and the first step; MF_DIST_TIMEOUT (30) for every later step (gpu.c
 * raises it to 5× the slowest step so far when that is longer);
 * MF_DIST_SLOW_TIMEOUT (1800) for waits that follow rank 0's own work (evaluation, checkpoint,
 * sampling), which the other ranks sit out. */
#ifndef MF_DIST_H
#define MF_DIST_H
#include <stddef.h>

#define DIST_BLOB_BYTES 128 /* the NCCL unique id */

typedef struct {
  int rank, world, local_rank;
  char launcher[16]; /* "single", "mpirun", "slurm", "torchrun" (RANK/WORLD_SIZE set by anyone) */
} DistEnv;

/* Read the launcher's variables (above). Returns 0, or -1 with "VAR=value: what is wrong". */
int dist_env_parse(DistEnv *e, char *err, size_t errlen);

/* Set up this process: parse the environment (exits with a message on bad values), remember the
 * options, set NCCL_NVLS_ENABLE=0 unless set, and with world > 1 start the watchdog thread and
 * send the standard output of ranks other than 0 to /dev/null (only rank 0 logs; errors still go
 * to stderr; MF_DIST_ALL_STDOUT=1 keeps every rank's). id_file may be NULL. */
void dist_init(const char *id_file, int zero);
const DistEnv *dist_env(void);
int dist_rank(void);
int dist_world(void);
int dist_local_rank(void);
int dist_zero(void); /* --zero 1 with world > 1: ZeRO-1 sharding */

/* Give every rank rank 0's blob: rank 0 calls make(blob, ctx) first. Exits with a clear message
 * when the exchange fails or times out. Returns how: "none" (world 1), "file", "mpi" or "tcp". */
typedef void (*DistMakeBlob)(unsigned char blob[DIST_BLOB_BYTES], void *ctx);
const char *dist_bootstrap(unsigned char blob[DIST_BLOB_BYTES], DistMakeBlob make, void *ctx);
/* Every rank holds the blob (the NCCL communicator is up): rank 0 removes the id file. */
void dist_bootstrap_done(void);

/* Non-blocking: 1 and a message naming the rank when a peer process is known to have died (its
 * TCP connection closed without the "finished" notice), else 0. Always 0 without the TCP star. */
int dist_peer_lost(char *msg, size_t n);

/* The watchdog thread: after `seconds`, or as soon as a peer is lost, print
 * "runtime: rank R: <what> ..." to stderr and _exit(1). For calls that block inside NCCL or MPI
 * (communicator init, abort, teardown) where the caller cannot poll. */
void dist_watch_arm(double seconds, const char *what);
void dist_watch_disarm(void);

/* Time limits (above). dist_step_timeout() is the limit for the step about to be launched: the
 * start-up limit for the first one, the slow limit right after dist_slow_next(), else the step
 * limit (then *ordinary = 1: the caller may raise it to a multiple of its slowest ordinary step);
 * it consumes the slow flag. */
double dist_init_timeout(void);
double dist_slow_timeout(void);
double dist_timeout(void); /* MF_DIST_TIMEOUT: a step, and any other wait on the stream */
double dist_step_timeout(int *ordinary);
void dist_slow_next(void);
/* The training step being run (for messages). */
void dist_note_step(long step);
long dist_step(void);

/* Normal end of this rank: tell the peers (so that closing the connection is not a death), and
 * MPI_Finalize when MPI was used. */
void dist_finish(void);

/* `--gpus N`: start N copies of this program (argv without --gpus N) on this host, one per GPU, as
 * ranks 0..N-1 with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR=127.0.0.1/MASTER_PORT=<a free port>;
 * rank 0 prints as usual, the others' lines get a "[rank R] " prefix. If a rank exits with an
 * error or is killed, stop the others and return 1 naming it; 0 when all succeed. */
int dist_launch_local(int n, int argc, char **argv);

/* Hidden test modes (`--dist-selftest MODE`), no GPU: "env" prints the parsed environment;
 * "exchange" bootstraps like a real run but exchanges a random blob instead of an NCCL id and
 * prints its hash ("nccl-id": a real ncclGetUniqueId, which needs NCCL but no GPU) — then with MF_DIST_SELFTEST_FAIL=R rank R exits with status 3 on purpose and
 * the others wait up to MF_DIST_SELFTEST_HOLD seconds (default 30 then, else 0) watching for a
 * lost peer, which they report and exit 1. */
int dist_selftest(const char *mode, const char *id_file);
#endif
