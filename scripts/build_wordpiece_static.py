"""Build `spendgate/data/static_wordpiece.npz`: the 64-d static model (`tokenlearn-static-model`,
distilled from bge-small) re-keyed to the cross-encoder's WordPiece vocabulary, so retrieval
for the cross-encoder verifier needs only the small WordPiece tokenizer.

Why: the static model's own tokenizer is a 276k-piece multilingual Unigram model whose trie
holds ~314 MB in `tokenizers` — more than the whole budget of a gateway with the semantic
tier on. Each WordPiece token's row is the static model's weighted sum over the Unigram
pieces of that token's text (a `##` continuation without the word-start marker), with the
piece count, so a text's vector is the same weighted mean the static model computes, up to
where the two tokenizers split words. On the held-out QQP pairs this retrieves duplicate
partners as well as the original (top-1 0.498 vs 0.492, top-4 0.684 vs 0.681).

    .venv/bin/python scripts/build_wordpiece_static.py   # ~5 s; deterministic
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "spendgate" / "data" / "static_wordpiece.npz"
TOKENIZER = ROOT / "src" / "spendgate" / "data" / "minilm_tokenizer.json"


def main() -> int:
    from tokenizers import Tokenizer

    from spendgate.cache.embedder import StaticEmbedder

    static = StaticEmbedder()
    wp = Tokenizer.from_file(str(TOKENIZER))
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    words = [w[2:] if w.startswith("##") else w for w, _ in vocab]
    encs = static.tokenizer.encode_batch_fast(words, add_special_tokens=False)
    marker = static.tokenizer.token_to_id("▁")
    sums = np.zeros((len(vocab), static.dim), np.float32)
    counts = np.zeros(len(vocab), np.float32)
    for i, (enc, (word, _)) in enumerate(zip(encs, vocab, strict=True)):
        if word.startswith("[") and word.endswith("]"):
            continue  # [CLS], [SEP], [PAD], [UNK], [MASK], [unused…]: no text
        ids = np.asarray(enc.ids, np.int64)
        ids = ids[ids != static.unk_id]
        if word.startswith("##") and ids.size and int(ids[0]) == marker:
            ids = ids[1:]  # a continuation does not start a word
        if ids.size == 0:
            continue
        sums[i] = (static.rows[static.mapping[ids]] * static.weights[ids][:, None]).sum(0)
        counts[i] = ids.size
    np.savez_compressed(OUT, sums=sums.astype(np.float16), counts=counts.astype(np.uint8))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {int((counts > 0).sum())} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
