"""One JSON summary of deploy/gpu/check.sh's logs: python3 summary.py LOG_DIR SECONDS."""
import json
import re
import sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), int(sys.argv[2])


def text(name):
    p = out / f"{name}.log"
    return p.read_text(errors="replace") if p.exists() else ""


def rc(name):
    p = out / f"{name}.rc"
    return int(p.read_text().strip()) if p.exists() else None


def tests(group):
    """The GPU tests of one binary, each run in its own process (logs GROUP@TEST.log)."""
    passed, failed = [], {}
    for log in sorted(out.glob(f"{group}@*.log")):
        name = log.stem.split("@", 1)[1]
        t = log.read_text(errors="replace")
        if rc(log.stem) == 0 and re.search(r"test result: ok\. 1 passed", t):
            passed.append(name)
        else:
            why = re.findall(r"panicked at [^\n]*\n([^\n]*)", t) or t.strip().splitlines()[-2:]
            failed[name] = {"exit": rc(log.stem), "why": why[:2]}
    return {"passed": len(passed), "failed": len(failed), "failures": failed}


def sanitizer(name):
    t = text(name)
    if not t:
        return None
    return {"exit": rc(name), "summary": re.findall(r"=+ (ERROR SUMMARY: \d+ errors?|RACECHECK SUMMARY: [^\n]*)", t)[-3:]}


def json_doc(name):
    """The JSON document a bench printed (pretty-printed, last in its output)."""
    t = text(name)
    start = t.find("{")
    if start < 0:
        return {"exit": rc(name), "error": t.strip().splitlines()[-3:]}
    try:
        return json.loads(t[start:])
    except json.JSONDecodeError:
        return {"exit": rc(name), "error": t.strip().splitlines()[-3:]}


def bench(name):
    d = json_doc(name)
    if "results" not in d:
        return d
    keep = ["layers", "weight_bytes", "active_weight_bytes_per_token", "decode_weight_gb_per_s_at_batch_1", "device"]
    return {**{k: d.get(k) for k in keep}, "results": d["results"]}


def serving():
    runs = {c: json_doc(f"serving_c{c}") for c in (1, 16, 64)}
    rows = {}
    for c, d in runs.items():
        if "decode_tokens_per_s" in d:
            rows[c] = {k: d[k] for k in ("decode_tokens_per_s", "output_tokens_per_s", "itl_ms_p50", "ttft_ms_p50", "preemptions")}
        else:
            rows[c] = d
    outs = {c: d.get("outputs") for c, d in runs.items()}
    same = None
    if all(outs.values()):
        same = {f"c{c}_vs_c1": sum(a == b for a, b in zip(outs[c], outs[1])) for c in (16, 64)}
        same["requests"] = len(outs[1])
    one = rows.get(1, {}).get("decode_tokens_per_s")
    ratios = {f"c{c}_over_c1": rows[c]["decode_tokens_per_s"] / one for c in (16, 64) if one and "decode_tokens_per_s" in rows[c]}
    return {"runs": rows, "decode_ratio": ratios, "identical_greedy_outputs": same}


kbench = []
for line in text("kbench").splitlines():
    try:
        kbench.append(json.loads(line))
    except json.JSONDecodeError:
        pass

summary = {
    "seconds": seconds,
    "gpu": text("env").splitlines()[:1],
    "tests": {"kernels": tests("kernels"), "engine": tests("engine"), "worker": tests("worker")},
    "compute_sanitizer": {"memcheck": sanitizer("memcheck"), "racecheck": sanitizer("racecheck")},
    "kernels": kbench,
    "bench16": bench("bench16"),
    "bench16_serving": serving(),
    "scout_decode": bench("scout_decode"),
    "scout_prefill_2048": bench("scout_prefill"),
}
print(json.dumps(summary, separators=(",", ":")))
