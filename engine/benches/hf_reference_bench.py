"""Speed of the Hugging Face reference (the oracle) on the bench16 model, for docs/benchmarks.md.

What it measures: transformers' Llama4ForCausalLM (float32, eager attention, CPU, eval, torch.inference_mode) on
the bench16 configuration (engine/benches/bench16/config.json: 16 experts, top-1, hidden 512, 8 layers, vocab
32000), with torch.set_num_threads(--threads):
  * prefill: one forward over a random --prompt-token prompt with use_cache (fresh DynamicCache);
    prefill_tokens_per_s = prompt_len / seconds;
  * decode: --new greedy single-token forward steps with the DynamicCache, in a manual loop (not
    model.generate, so only the model's time is counted); decode_tokens_per_s = new / seconds.
One untimed warm-up (a short prompt, a few decode steps) runs first. Note that the reference runs all experts on
every token (Llama4TextExperts is dense), so its MoE cost does not fall with top-1 routing.

Weights: random, torch.manual_seed(0), transformers' own normal init (initializer_range), every norm weight 1.0.
  --save DIR  also writes them with save_pretrained (one model.safetensors, float32) + config.json +
              generation_config.json + a copy of the source config (bench16.config.json) + reference_output.json
              (this run's JSON), so another engine (herd) can be timed on the same weights and checked for the
              same greedy tokens.
  --load DIR  times the model loaded from DIR (float32) instead of building one.

Prompt: ids drawn with torch.Generator().manual_seed(1) uniformly from [8, vocab). Printed as "prompt_ids".
Output: "output_ids" are all greedy tokens: output_ids[0] is the argmax of the prefill's last logits, and
output_ids[i] (i >= 1) the argmax of decode step i, whose input is output_ids[i-1] — new + 1 tokens in all,
i.e. what model.generate(prompt, max_new_tokens=new + 1, greedy) returns ("matches_generate" checks that, and
"min_top2_margin" is the smallest top-1/top-2 logit gap along that path, from an uncached forward; both untimed;
skip them with --no-check).

Run:
  /work/venv-fixtures/bin/python engine/benches/hf_reference_bench.py --save /work/bench16-ckpt --threads 2
  /work/venv-fixtures/bin/python engine/benches/hf_reference_bench.py --load /work/bench16-ckpt --threads 2
Prints one JSON object on stdout (progress goes to stderr).
"""
import argparse, json, os, shutil, sys, time

import torch
import transformers
from transformers import DynamicCache, Llama4ForCausalLM, Llama4TextConfig

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "bench16", "config.json")
ATTN = "eager"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(config_path):
    cfg = Llama4TextConfig.from_json_file(config_path)
    torch.manual_seed(0)
    model = Llama4ForCausalLM._from_config(cfg, attn_implementation=ATTN, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.fill_(1.0)
    return model


def load(d):
    return Llama4ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=ATTN)


def prefill(model, ids):
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, cache=cache, use_cache=True)
    return out.logits[:, -1].argmax(-1), out.cache


def decode(model, tok, cache, steps, pos):
    toks = []
    for i in range(steps):
        out = model(input_ids=tok.view(1, 1), cache=cache, use_cache=True,
                    cache_position=torch.tensor([pos + i]))
        cache = out.cache
        tok = out.logits[:, -1].argmax(-1)
        toks.append(int(tok))
    return toks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--save", metavar="DIR")
    g.add_argument("--load", metavar="DIR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--no-check", action="store_true", help="skip the untimed model.generate comparison")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = load(a.load) if a.load else build(a.config)
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model ready in {time.perf_counter() - t0:.1f}s: {n_params / 1e6:.1f}M params, "
        f"attn={model.config._attn_implementation}")

    if a.save:
        os.makedirs(a.save, exist_ok=True)
        t0 = time.perf_counter()
        model.save_pretrained(a.save, safe_serialization=True, max_shard_size="100GB")
        shutil.copyfile(a.config, os.path.join(a.save, "bench16.config.json"))
        log(f"saved to {a.save} in {time.perf_counter() - t0:.1f}s: {sorted(os.listdir(a.save))}")

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(8, vocab, (1, a.prompt), generator=gen)

    with torch.inference_mode():
        # warm-up: short prompt, a few decode steps (untimed)
        wtok, wcache = prefill(model, prompt[:, :8])
        decode(model, wtok, wcache, 4, 8)

        t0 = time.perf_counter()
        tok, cache = prefill(model, prompt)
        t_prefill = time.perf_counter() - t0

        t0 = time.perf_counter()
        toks = decode(model, tok, cache, a.new, a.prompt)
        t_decode = time.perf_counter() - t0
        output_ids = [int(tok)] + toks

        res = {
            "prefill_tokens_per_s": round(a.prompt / t_prefill, 2),
            "decode_tokens_per_s": round(a.new / t_decode, 2),
            "threads": a.threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "attn_implementation": model.config._attn_implementation,
            "prefill_s": round(t_prefill, 4),
            "decode_s": round(t_decode, 4),
            "prompt_len": a.prompt,
            "decode_steps": a.new,
            "weights": a.load or a.save or "built in memory (seed 0)",
        }
        if not a.no_check:
            ref = model.generate(prompt, max_new_tokens=a.new + 1, min_new_tokens=a.new + 1, do_sample=False,
                                 eos_token_id=None, pad_token_id=model.config.pad_token_id)
            res["matches_generate"] = ref[0, a.prompt:].tolist() == output_ids
            # smallest gap between the top two logits along the greedy path (uncached forward over the whole
            # sequence): another engine's tokens can only be expected to match where this is not tiny
            full = model(torch.cat([prompt, torch.tensor([output_ids[:-1]])], 1)).logits[0, a.prompt - 1:]
            top2 = full.topk(2, dim=-1)
            res["argmax_of_full_forward_matches"] = top2.indices[:, 0].tolist() == output_ids
            res["min_top2_margin"] = round(float((top2.values[:, 0] - top2.values[:, 1]).min()), 5)
        res["prompt_ids"] = prompt[0].tolist()
        res["output_ids"] = output_ids

    if a.save:
        with open(os.path.join(a.save, "reference_output.json"), "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
