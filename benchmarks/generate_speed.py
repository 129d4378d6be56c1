"""GPT text generation with and without the KV-cache decode step, tokens per second on ORT and TVM.

    python benchmarks/generate_speed.py [--out benchmarks/results/MACHINE] [--rounds 3]

The zoo's GPT at its full size (context 64; untrained weights: speed does not depend on them) is
exported (gpt.onnx and gpt.decode.onnx), both compiled for this CPU (shipped tuning records apply),
and asked for 63 characters after a one-character prompt, filling the 64-position context:
without the cache each character runs the full graph over 64 positions, with it one decode step.
Each configuration runs in its own block, rounds alternating, so a load change hits both; the
median round is reported. Greedy decoding; cached and uncached texts are checked to be equal.
Writes generate.md and generate.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.compile import compile_model  # noqa: E402
from toolkit.export import export_model  # noqa: E402
from toolkit.generate import Sampler  # noqa: E402

PROMPT = "\n"
NEW_TOKENS = 63  # the prompt's one character and these fill the 64-position context


def measure(workdir: Path, rounds: int, log) -> dict:
    export_model("gpt", workdir / "gpt.onnx")
    compile_model(workdir / "gpt.onnx", workdir / "gpt.tvm", choose_engine=False, log=log)
    compile_model(workdir / "gpt.decode.onnx", workdir / "gpt.decode.tvm", choose_engine=False, log=log)
    samplers = {(backend, cached): Sampler(workdir / "gpt.tvm", backend=backend, cache=cached)
                for backend in ("ort", "tvm") for cached in (False, True)}
    texts, seconds = {}, {key: [] for key in samplers}
    for key, sampler in samplers.items():  # warm-up, and the texts to compare
        texts[key] = sampler.text(PROMPT, length=NEW_TOKENS, temperature=0)
    for round_ in range(rounds):
        for key, sampler in samplers.items():
            start = time.perf_counter()
            sampler.text(PROMPT, length=NEW_TOKENS, temperature=0)
            seconds[key].append(time.perf_counter() - start)
        log(f"round {round_ + 1}/{rounds}: " + ", ".join(f"{b}{' cached' if c else ''} {s[-1]:.3f} s" for (b, c), s in seconds.items()))
    rows = []
    for backend in ("ort", "tvm"):
        before, after = (statistics.median(seconds[(backend, c)]) for c in (False, True))
        rows.append({
            "backend": backend,
            "uncached_tokens_per_s": NEW_TOKENS / before,
            "cached_tokens_per_s": NEW_TOKENS / after,
            "speedup": before / after,
            "same_text": texts[(backend, False)] == texts[(backend, True)],
        })
    return {"rows": rows, "rounds": rounds, "new_tokens": NEW_TOKENS, "context": 64}


def machine() -> dict:
    import tvm

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"cpu": model, "llvm_cpu": tvm.target.codegen.llvm_get_system_cpu(), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(result: dict, host: dict) -> str:
    lines = [
        "# GPT generation: KV-cache decode step against the full graph",
        "",
        f"Measured by `benchmarks/generate_speed.py` on {host['cpu']} ({host['llvm_cpu']}, {host['cores']} cores), "
        f"{host['date']}, load average {host['load_average'][0]:.1f} at the end (a shared machine: the ratio, "
        "measured in alternating blocks, is the figure to read).",
        "",
        f"The zoo's GPT (4 layers, d=128, context {result['context']}), greedy, {result['new_tokens']} characters after a "
        "one-character prompt, filling the context; median of "
        f"{result['rounds']} rounds. Batch 1. Untuned TVM except the shipped records.",
        "",
        "| engine | tokens/s without cache | tokens/s with cache | speed-up | same text |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['backend']} | {r['uncached_tokens_per_s']:.1f} | {r['cached_tokens_per_s']:.1f} | "
                     f"{r['speedup']:.1f}x | {'yes' if r['same_text'] else 'NO'} |")
    lines += ["", "Past the context the window slides, every position changes, and each character needs the full "
              "graph again, with or without the cache (the GPT has learned absolute position embeddings)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "amd-epyc-2c")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), args.rounds, log=lambda line: print(line, file=sys.stderr))
    host = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generate.json").write_text(json.dumps({**result, "machine": host}, indent=2) + "\n")
    (args.out / "generate.md").write_text(markdown(result, host))
    print(markdown(result, host))


if __name__ == "__main__":
    main()
