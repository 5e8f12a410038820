#!/usr/bin/env node
// Writes tests/golden/tokenizer_cases.json: varied texts and the GPT-2 token ids that the npm package
// gpt-3-encoder@1.1.4 (data/gpt2/js, fetched by scripts/fetch_tokenizer.sh) gives them.
// tests/unit/test_tokenizer.c checks runtime/tokenizer.c against these ids exactly.
//   node tests/golden/make_tokenizer_goldens.js
//
// Known defect of that package, kept out of the goldens: it keys its merge ranks by the pair turned
// into a string, "a" + "," + "b", so a pair whose key equals another merge's key (possible only when a
// token holds a comma, e.g. ['",', '"'] vs ['"', ',"']) gets that merge's rank. OpenAI's encoder.py
// and tiktoken key by the pair itself; the runtime does too. A case that could reach such an aliased
// pair is refused below; test_tokenizer.c checks a few of those texts with ids from tiktoken instead.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const pkgDir = path.join(root, 'data', 'gpt2', 'js');
if (!fs.existsSync(path.join(pkgDir, 'Encoder.js'))) {
  console.error(`make_tokenizer_goldens: ${pkgDir}/Encoder.js is missing: run scripts/fetch_tokenizer.sh`);
  process.exit(1);
}
const { encode, decode } = require(path.join(pkgDir, 'Encoder.js'));

const cases = [
  ['empty', ''],
  ['single letter', 'a'],
  ['single space', ' '],
  ['hello', 'Hello, world!'],
  ['prose', 'The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times; ' +
    'everyone agreed that the weather, on the whole, had been remarkably pleasant.'],
  ['contractions lower', "I'm sure you don't know what they'll say, but we've done it and she'd agree it's fine; they're here."],
  ['contractions upper', "I'M SURE YOU DON'T KNOW. THEY'LL SAY WE'VE, SHE'D, IT'S, THEY'RE."],
  ['contractions mixed case', "they'RE they'Re They'rE it'S we'Ve I'M she'D you'Ll"],
  ['bare contractions', "'s 't 're 've 'm 'll 'd ' s''s 'sre 'tis"],
  ['apostrophes', "rock'n'roll o'clock ''quoted'' ma'am y'all'd've"],
  ['typographic apostrophe', 'don\u2019t it\u2019s \u201cquoted\u201d'],
  ['numbers', '12345 3.14 1,000,000 -42 +7 0x1F 2024-01-01 007 1e-9'],
  ['long digit run', '3141592653589793238462643383279502884197169399375105820974944592'],
  ['letters and digits', 'abc123def 4th 1st 2nd mp3 H2O x86_64 COVID19'],
  ['space runs', 'a  b   c    d     e'],
  ['trailing spaces', 'trailing   '],
  ['only spaces', '      '],
  ['leading spaces', '   leading spaces'],
  ['tabs', '\tindented\t\ttabs\t x\t'],
  ['newlines', 'line1\nline2\n\n\nline3\n'],
  ['three newlines', '\n\n\n'],
  ['space before newline', 'a \nb  \n\n  c \t\n d'],
  ['crlf', 'one\r\ntwo\r\n\r\nthree'],
  ['other js whitespace', 'vt\u000bff\u000cnel\u0085x bom\ufeffy ls\u2028ps\u2029z mvs\u180ew zwsp\u200bq'],
  // JavaScript's \s has U+FEFF and lacks U+0085; Unicode's White_Space (tiktoken, Hugging Face) is the
  // other way round. Only a space before them tells the two apart.
  ['space before U+FEFF and U+0085', ' \ufeffb x \u0085y \ufeff\ufeff z \u0085\u0085'],
  ['unicode spaces', 'em\u2003space thin\u2009space nnbsp\u202fx ideo\u205fmath ogham\u1680z'],
  ['no-break space', 'price:\u00a0100\u00a0\u20ac and a\u00a0 b \u00a0c\u00a0\u00a0'],
  ['ideographic space', '\u5168\u89d2\u3000\u30b9\u30da\u30fc\u30b9\u3000\u3000end\u3000'],
  ['accents', 'caf\u00e9 na\u00efve r\u00e9sum\u00e9 Z\u00fcrich fa\u00e7ade \u00c5ngstr\u00f6m \u00df'],
  ['combining marks', 'e\u0301 a\u0308 n\u0303 Zalgo: Z\u0351\u036b\u0343\u036a\u0302\u036b a\u0301\u0301b \u0301lead'],
  ['cjk', '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u4e2d\u6587\u6587\u672c\uff0c\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8'],
  ['scripts', '\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22'],
  ['arabic', '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0647\u0630\u0627 \u0627\u062e\u062a\u0628\u0627\u0631 \u0661\u0662\u0663'],
  ['emoji', 'I love \ud83c\udf55 and \ud83c\udf89! \ud83d\ude00\ud83d\ude00\ud83d\ude00'],
  ['emoji zwj sequences', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66 family, ' +
    '\ud83d\udc69\ud83c\udffd\u200d\ud83d\udcbb coder, \ud83c\udff3\ufe0f\u200d\ud83c\udf08 flag \u2764\ufe0f \ud83c\uddef\ud83c\uddf5'],
  ['astral letters', '\ud835\udd18\ud835\udd2b\ud835\udd26\ud835\udd20\ud835\udd2c\ud835\udd21\ud835\udd22 \ud840\udc0b\ud840\udc0c x\ud835\udfd9'],
  ['number categories', 'x\u00b2 + y\u00b3 \u00bd \u2166 \u2460 \u0663\u0664 \u0967 \u5341'],
  ['math symbols', '\u2211 x\u00b2 \u2264 \u221e, \u221a2 \u2248 1.414 \u00b1 \u03c0'],
  ['control characters', 'a\u0000b\u0001c\u007fd\u001be[0m'],
  ['end of text as text', '<|endoftext|>'],
  ['end of text inside', 'first document<|endoftext|>second document <|endoftext|> third'],
  ['punctuation runs', '!!!??? ... --- *** ((( ))) ?!?! \u2014\u2014 \u2026'],
  ['spaced punctuation', 'Hello ... world !? ( parens ) [ brackets ] { braces }'],
  ['url and email', 'https://example.com/path/to?q=1&r=two#frag mailto:someone@example.org'],
  ['c code', 'int main(void) {\n    for (int i = 0; i < 10; i++) printf("%d\\n", i);\n    return 0;\n}\n'],
  ['python code', 'def f(x):\n    # square it\n    return x ** 2  \n\n\nclass A:\n\tpass\n'],
  ['json', '{"name": "value", "list": [1, 2, 3], "nested": {"ok": true}}'],
  ['markdown', '# Title\n\n* item one\n* item two\n\n**bold** _italic_ `code`\n\n> quote\n'],
  ['repeats', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ======================== ............ ha ha ha ha ha'],
  ['long words', 'Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism'],
  ['fortune', 'A day without sunshine is like, you know, night.\n\t\t-- Steve Martin\n'],
  // Pieces longer than the runtime's cache limit (255 bytes) take its uncached path.
  ['long pieces', 'x'.repeat(300) + ' ' + '-'.repeat(260) + ' '.repeat(400) + 'y ' + 'abc'.repeat(100) + ' ' + '9'.repeat(270)],
];

// Pairs whose string key aliases another merge's key (see the top of this file), found from vocab.bpe.
function aliasedConcatenations() {
  const enc = JSON.parse(fs.readFileSync(path.join(pkgDir, 'encoder.json'), 'utf-8'));
  const lines = fs.readFileSync(path.join(pkgDir, 'vocab.bpe'), 'utf-8').split('\n');
  const merges = lines.slice(1, lines.length - 1).map(x => x.split(/\s+/).filter(e => e.length > 0));
  const out = [];
  for (const [a0, b0] of merges) {
    const key = a0 + ',' + b0;
    for (let j = 0; j < key.length; j++) {
      if (key[j] !== ',' || j === a0.length) continue;
      const a = key.slice(0, j), b = key.slice(j + 1);
      if (a.length && b.length && (a in enc) && (b in enc)) out.push(a + b);
    }
  }
  return out;
}

// GPT-2's byte -> unicode table, to compare pieces with token strings.
function byteToUnicode() {
  const t = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    t.push(String.fromCharCode(printable ? b : 256 + n++));
  }
  return t;
}

// Keep visible characters as they are; escape invisible ones (controls, spaces other than ' ',
// format characters, combining marks) so that the file shows them.
function jsonString(s) {
  return JSON.stringify(s).replace(/[^\x20-\x7e\p{L}\p{N}\p{P}\p{S}]/gu, ch =>
    Array.from({ length: ch.length }, (_, i) => '\\u' + ch.charCodeAt(i).toString(16).padStart(4, '0')).join(''));
}

const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu; // Encoder.js's
const aliases = aliasedConcatenations();
const b2u = byteToUnicode();
const utf8 = new TextEncoder();
const names = new Set();
const rows = [];
for (const [name, text] of cases) {
  if (names.has(name)) throw new Error(`duplicate case name '${name}'`);
  names.add(name);
  for (const m of text.matchAll(pat)) {
    const piece = Array.from(utf8.encode(m[0])).map(b => b2u[b]).join('');
    const hit = aliases.find(a => piece.includes(a));
    if (hit) throw new Error(`case '${name}': piece ${JSON.stringify(m[0])} may reach gpt-3-encoder's comma-key defect (${JSON.stringify(hit)})`);
  }
  const ids = encode(text);
  if (ids.some(x => !Number.isInteger(x))) throw new Error(`case '${name}': encoder gave a non-integer id`);
  if (decode(ids) !== text) throw new Error(`case '${name}': decode(encode(text)) differs from the text`);
  rows.push(`  {"name": ${jsonString(name)}, "text": ${jsonString(text)},\n   "ids": [${ids.join(', ')}]}`);
}
const out = '{"generator": "tests/golden/make_tokenizer_goldens.js", "encoder": "gpt-3-encoder@1.1.4",\n' +
  ' "cases": [\n' + rows.join(',\n') + '\n]}\n';
JSON.parse(out); // the file must be valid JSON
const dest = path.join(__dirname, 'tokenizer_cases.json');
fs.writeFileSync(dest + '.tmp', out);
fs.renameSync(dest + '.tmp', dest);
console.log(`make_tokenizer_goldens: wrote ${rows.length} cases to ${path.relative(root, dest)}`);
