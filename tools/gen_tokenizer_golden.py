#!/usr/bin/env python3
"""Generate tests/fixtures/tokenizer_golden.json: GPT-2 token ids for hard strings.

This is a second, independent implementation of GPT-2's tokenizer, written plainly in
Python so that the C++ one can be checked against it: the pre-tokenizer is the real
pattern run by the `regex` module (pip install regex; needed only to regenerate), and
the BPE is the textbook loop (merge the best-ranked adjacent pair everywhere, repeat).
The literal "<|endoftext|>" in a text is the end-of-text token.

The output is a JSON list of {"text": ..., "ids": [...]}, written as ASCII with one
case per line. The tests read it; this script is not needed to run them.

Usage: python3 tools/gen_tokenizer_golden.py [--data-dir DIR] [--out FILE]
  DIR holds GPT-2's vocab.json and merges.txt (default: ../shared/data/gpt2-tokenizer
  beside the repository).
"""

import argparse
import json
import pathlib
import random
import sys
import unicodedata

import regex

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gpt2-tokenizer"
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tokenizer_golden.json"

END_OF_TEXT = "<|endoftext|>"
PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def byte_spelling():
    """GPT-2's table from byte value to the character that spells it in vocab.json."""
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


class Gpt2Reference:
    def __init__(self, data_dir):
        with open(data_dir / "vocab.json", encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.ranks = {}
        with open(data_dir / "merges.txt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        for line in lines:
            if line:
                left, right = line.split(" ")
                self.ranks.setdefault((left, right), len(self.ranks))
        self.spell = byte_spelling()

    def merge(self, symbols):
        """The textbook BPE loop over a list of vocab-spelled symbols."""
        while len(symbols) > 1:
            best = None
            for pair in zip(symbols, symbols[1:]):
                rank = self.ranks.get(pair)
                if rank is not None and (best is None or rank < best[0]):
                    best = (rank, pair)
            if best is None:
                break
            left, right = best[1]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode_ordinary(self, text):
        ids = []
        for piece in PATTERN.findall(text):
            symbols = [self.spell[b] for b in piece.encode("utf-8")]
            ids.extend(self.vocab[s] for s in self.merge(symbols))
        return ids

    def encode(self, text):
        parts = text.split(END_OF_TEXT)
        ids = self.encode_ordinary(parts[0])
        for part in parts[1:]:
            ids.append(self.vocab[END_OF_TEXT])
            ids.extend(self.encode_ordinary(part))
        return ids


HARD_STRINGS = [
    "",
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing spaces   ",
    "trailing newline\n",
    "two  spaces and three   spaces",
    "  \t\n  x",
    "line one\r\nline two\r\n",
    "\r\n\r\n",
    "tab\tseparated\tvalues\t",
    "\n\n\nthree newlines then text",
    "    indented code():\n        return 1",
    "   ",
    "\t",
    "it's they're we've I'm you'll he'd don't",
    "IT'S THEY'RE WE'VE I'M YOU'LL HE'D DON'T 'S",
    "'s't're've'm'll'd",
    "''s ' s 'x 'll' ''",
    "Digits 12345678 and 3.14159 and 1,000,000",
    "0123456789012345678901234567890",
    "mixed !!! ??? ... --- *** ::: ;;; ,,, @#$%^&*()_+-=[]{}|\\;:'\",.<>/?`~",
    "a<|endoftext|>b",
    "first document.<|endoftext|>Second document begins here.",
    "<|endoftext|>",
    "<|endoftext|><|endoftext|> <|endoftext|>",
    "<|endoftext|",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 u\u0308ber",
    "e\u0301\u0302\u0303\u0304 stacked marks",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\U0001F600\U0001F603\U0001F604 smile",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
    "\U0001F44D\U0001F3FB\U0001F44D\U0001F3FF thumbs",
    "\U0001F3F3\uFE0F\u200D\U0001F308 flag",
    "\u2764\ufe0f heart \U0001F1FA\U0001F1F8",
    "no\u00a0break\u00a0space and ideographic\u3000space",
    "en\u2002em\u2003thin\u2009hair\u200a line\u2028para\u2029",
    "next\u0085line and zero\u200bwidth",
    "file\x1cgroup\x1drecord\x1eunit\x1f",
    "ctrl\x00\x01\x07\x7f chars",
    "superscript x\u00b2 \u00bd \u2167 \u0663\u0664\u0665 \u0967\u0968",
    "\U00010400\U00010401 deseret \U0001D400\U0001D401 math",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "hahahahahahahahahahahahahaha",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "================================",
    "................................",
    "https://example.com/path?query=value&other=1#anchor",
    "snake_case_identifier camelCaseIdentifier SCREAMING_CASE",
    "\U0001F600" * 8,
    "\ufffd replacement and \ufeff bom",
]


def random_text(rng, length):
    """A long mixed-script string from a fixed seed, built only of code points that are
    assigned in this Python's Unicode (so both implementations classify them alike)."""
    pools = [
        (30, [chr(c) for c in range(0x20, 0x7F)]),
        (12, [" ", " ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000"]),
        (6, ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'"]),
        (6, [chr(c) for c in range(0xA0, 0x250)]),
        (4, [chr(c) for c in range(0x300, 0x370)]),
        (5, [chr(c) for c in range(0x370, 0x530)]),
        (4, [chr(c) for c in range(0x600, 0x700)]),
        (4, [chr(c) for c in range(0x900, 0x980)]),
        (6, [chr(c) for c in range(0x4E00, 0x9FA0)]),
        (3, [chr(c) for c in range(0xAC00, 0xD7A4)]),
        (3, [chr(c) for c in range(0x2000, 0x2070)]),
        (6, [chr(c) for c in range(0x1F300, 0x1F650)] + ["\u200d", "\ufe0f", "\U0001F3FD"]),
        (4, [chr(c) for c in range(0x10000, 0x30000)]),
        (3, [chr(c) for c in range(0x80, 0x110000)]),
    ]
    weights = [w for w, _ in pools]
    out = []
    while len(out) < length:
        _, pool = rng.choices(pools, weights)[0]
        s = rng.choice(pool)
        if all(unicodedata.category(ch) not in ("Cn", "Cs") for ch in s):
            out.append(s)
    return "".join(out)


def char_class_by_unicodedata(ch):
    cat = unicodedata.category(ch)
    if cat in ("Zs", "Zl", "Zp") or "\t" <= ch <= "\r" or ch == "\x85":
        return "S"
    return {"L": "L", "N": "N"}.get(cat[0], "O")


def char_class_by_regex(ch):
    for name, pat in (("S", r"\s"), ("L", r"\p{L}"), ("N", r"\p{N}")):
        if regex.fullmatch(pat, ch):
            return name
    return "O"


def check_classes(texts):
    """Every character must be classed alike by the regex module and by unicodedata
    (which strand's tables come from); otherwise the case would test the Unicode
    versions, not the tokenizer."""
    for text in texts:
        for ch in set(text):
            if char_class_by_regex(ch) != char_class_by_unicodedata(ch):
                sys.exit(f"gen_tokenizer_golden: U+{ord(ch):04X} is classed differently by regex "
                         f"and unicodedata {unicodedata.unidata_version}; drop it")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    gpt2 = Gpt2Reference(args.data_dir)
    rng = random.Random(20240611)
    texts = HARD_STRINGS + [random_text(rng, 3000), random_text(rng, 400)]
    check_classes(texts)

    cases = [{"text": t, "ids": gpt2.encode(t)} for t in texts]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="ascii") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=True) for c in cases) + "\n]\n")
    print(f"wrote {args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
