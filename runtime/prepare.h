/* prepare.h — turn text files into token shards (llm.c format, see shards.h) for training.
 *
 * Each input is a text file, or a directory whose regular files are taken recursively in sorted
 * name order (entries starting with '.' and symbolic links inside it are skipped). Files with a NUL
 * byte in their first 8000 bytes are binary and skipped (counted in prepare.json). A whole file is
 * one document; with doc_sep non-NULL a line equal to doc_sep (a trailing "\r" ignored) ends a
 * document instead — e.g. "%" for the fortune files — and the separator line itself is dropped.
 * Empty documents are skipped. Each document is encoded with the GPT-2 tokenizer and preceded by
 * the end-of-text token (50256), as llm.c's and modded-nanogpt's scripts do.
 *
 * Split: a document goes to val when mix(seed ^ FNV-1a(document bytes)) / 2^64 < val_fraction
 * (seed PREPARE_SEED) — by content, so identical documents land in the same split and a document
 * keeps its split when the corpus grows. Both splits must end up non-empty.
 *
 * Output: outdir/train_000000.bin, train_000001.bin, ... and val_000000.bin, ..., shard_tokens
 * tokens a shard (the last of each split holds the rest; documents run on across shard ends,
 * which the loader's packing ignores anyway), plus outdir/prepare.json describing the run (inputs,
 * document and token counts, shard names, tokenizer, split rule and seed). Everything is written
 * into OUTDIR.tmp.PID and renamed to outdir at the end, so a failure leaves no outdir; outdir must
 * not exist yet (or be an empty directory). Progress lines (MB read, tokens, MB/s) go to stdout. */
#ifndef MF_PREPARE_H
#define MF_PREPARE_H
#include <stddef.h>

#define PREPARE_SHARD_TOKENS 100000000 /* 10^8, as FineWeb's shards */
#define PREPARE_SEED 1337

/* shard_tokens 0 means PREPARE_SHARD_TOKENS; 0 < val_fraction < 1. Returns 0, or -1 with a
 * one-line message in err naming the file or argument at fault. */
int prepare_corpus(const char *tokenizer_dir, const char **inputs, int ninputs, const char *doc_sep,
                   const char *outdir, double val_fraction, size_t shard_tokens, char *err, size_t errlen);
#endif
