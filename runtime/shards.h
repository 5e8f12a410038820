/* shards.h — token shards in the llm.c / modded-nanogpt format, and the training data loader.
 *
 * A shard is a 1024-byte header of 256 little-endian int32 — header[0] magic, header[1] version,
 * header[2] token count — then the tokens: uint16 for magic 20240520 / version 1 (GPT-2
 * vocabularies), uint32 for magic 20240801 / version 7 (larger vocabularies). */
#ifndef MF_SHARDS_H
#define MF_SHARDS_H
#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC_U16 20240520
#define SHARD_MAGIC_U32 20240801

/* Write ntok tokens atomically (tmp + fsync + rename). Chooses uint16 when every id < 65536 and
 * force_u32 is 0. Returns 0, or -1 with a message in err. */
int shard_write(const char *path, const int32_t *tokens, size_t ntok, int force_u32, char *err, size_t errlen);

/* Read and validate a whole shard (magic, version, size against the header, ids < vocab when
 * vocab > 0). Returns a malloc'd int32 array and *ntok, or NULL with "PATH: what is wrong". */
int32_t *shard_read(const char *path, int vocab, size_t *ntok, char *err, size_t errlen);

/* The loader: a glob of shards, shuffled by seed, each rank reading its own part, yielding
 * [B, T] inputs and [B, T] next-token targets. The position (epoch, shard, offset) is part of the
 * resume state.
 * A batch is one window of B·T+1 consecutive tokens of one shard (windows start at multiples of
 * B·T, so neighbours share one token): tokens = window[0..B·T), targets = window[1..B·T]. Epoch e
 * visits the shards in an order shuffled by (seed, e) and each shard's windows in an order shuffled
 * by (seed, e, shard); rank r of `world` reads windows r, r+world, r+2·world, ... of that endless
 * stream, so the ranks together read every window once an epoch. The state is where the next
 * group of `world` windows starts and is the same on every rank: `shard` is the position in the
 * epoch's shard order, `offset` the window index in that shard's shuffled window order. */
typedef struct Loader Loader;
typedef struct {
  uint64_t seed;
  int64_t epoch, shard, offset; /* where the next batch starts in the (shuffled) order */
} LoaderState;

Loader *loader_open(const char *glob, int B, int T, int vocab, int rank, int world, uint64_t seed,
                    char *err, size_t errlen);
/* Next batch of this rank: tokens and targets, B*T int32 each. Wraps to a new epoch (reshuffled) at
 * the end of the data. Returns 0, or -1 with a message (e.g. a shard that became unreadable). */
int loader_next(Loader *l, int32_t *tokens, int32_t *targets, char *err, size_t errlen);
LoaderState loader_state(const Loader *l);
/* Continue exactly where the state was taken (on any rank: the state is rank-independent); the
 * loader adopts the state's seed. Refuses a position outside the data (shard or offset out of
 * range: the data or B·T changed) and then leaves the loader as it was. */
int loader_restore(Loader *l, const LoaderState *s, char *err, size_t errlen);
size_t loader_total_tokens(const Loader *l);
void loader_close(Loader *l);
#endif
