"""Load on the web app: concurrent gradio_client sessions sending piano-roll generate requests.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/app_load.py --json benchmarks/results/app_load.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/app_load.py --model DIR --clients 16 --requests 64

The app is launched in this process (so the server's resident memory is this process's RSS) with the shipped
model (``assets/pianoroll-hdit``, or ``--model``) and the app's default queue (one generation at a time,
the rest queued). Every client loads the Bach example once, then the clients send ``--requests`` generate
requests in all (``--bars`` 3-4 × ``--pitches`` 55-79 regenerated, ``--steps`` × ``--repaint``, ``--samples``
candidates). The first ``--warmup`` requests (one per client) are timed apart; RSS is read before any request, after the
warm-up and at the end. Reported: p50 / p95 latency as a client sees it (queueing included), throughput, errors
and RSS. ``tests/app/test_load.py`` runs the same load against a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXAMPLE = "Bach chorale BWV 263 (8 bars)"


def rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``; psutil elsewhere, if installed)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil  # not a dependency: only for systems without /proc

        return int(psutil.Process().memory_info().rss)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class LoadResult:
    """Latencies (seconds, one per successful request), error messages, wall time and RSS readings (bytes)."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_before: int = 0
    rss_warm: int = 0
    rss_after: int = 0

    def summary(self) -> dict:
        n = len(self.latencies)
        return {
            "requests_ok": n,
            "errors": len(self.errors),
            "p50_s": round(percentile(self.latencies, 50), 3),
            "p95_s": round(percentile(self.latencies, 95), 3),
            "max_s": round(max(self.latencies, default=float("nan")), 3),
            "throughput_rps": round(n / self.seconds, 3) if self.seconds else None,
            "wall_s": round(self.seconds, 2),
            "rss_before_mb": round(self.rss_before / 2**20, 1),
            "rss_after_warmup_mb": round(self.rss_warm / 2**20, 1),
            "rss_after_mb": round(self.rss_after / 2**20, 1),
            "rss_growth_after_warmup": round(self.rss_after / self.rss_warm - 1, 4) if self.rss_warm else None,
        }


def generate_request(client, seed: int, *, steps: int, repaint: int, samples: int, bars: str = "3-4",
                     pitches: str = "55-79") -> None:
    """One /generate call on a session that has a piece loaded; raises on any error."""
    _image, midi, audio, _stats = client.predict(None, "bars & pitches", bars, pitches, repaint, samples, 100,
                                                 steps, seed, api_name="/generate")
    if not (str(midi).endswith(".mid") and audio):
        raise RuntimeError(f"unexpected outputs: {midi!r}, {audio!r}")


def run_requests(clients: list, counts: list[int], request: Callable[[object, int], None], result: LoadResult,
                 first_seed: int = 0) -> None:
    """Each client sends ``counts[i]`` requests back to back, all clients at once; fills ``result``."""
    lock = threading.Lock()
    seeds = iter(range(first_seed, first_seed + sum(counts)))

    def worker(client, count: int) -> None:
        for _ in range(count):
            with lock:
                seed = next(seeds)
            t0 = time.perf_counter()
            try:
                request(client, seed)
            except Exception as err:  # every failure is reported, none stops the run
                with lock:
                    result.errors.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                result.latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(clients, counts) if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_load(url: str, *, clients: int = 16, requests: int = 64, warmup: int = 8, steps: int = 8, repaint: int = 1,
             samples: int = 1, bars: str = "3-4", pitches: str = "55-79", download_dir: str | None = None
             ) -> LoadResult:
    """``requests`` generate calls from ``clients`` concurrent sessions against the app at ``url``, each
    regenerating ``bars`` × ``pitches`` of the Bach example."""
    from gradio_client import Client

    if not 0 <= warmup <= min(clients, requests):
        raise ValueError(f"warmup must be in 0..{min(clients, requests)}, got {warmup}")
    result = LoadResult(rss_before=rss_bytes())
    kw = {"verbose": False, "analytics_enabled": False}
    if download_dir:
        kw["download_files"] = download_dir
    sessions = [Client(url, **kw) for _ in range(clients)]
    for client in sessions:
        client.predict(EXAMPLE, api_name="/load_example")

    def request(client, seed):
        generate_request(client, seed, steps=steps, repaint=repaint, samples=samples, bars=bars, pitches=pitches)

    t0 = time.perf_counter()
    run_requests(sessions, [1] * warmup + [0] * (clients - warmup), request, result)
    result.rss_warm = rss_bytes()
    rest = requests - warmup
    run_requests(sessions, [rest // clients + (i < rest % clients) for i in range(clients)], request, result,
                 first_seed=warmup)
    result.seconds = time.perf_counter() - t0
    result.rss_after = rss_bytes()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="pipeline folder (default: the shipped assets/pianoroll-hdit)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repaint", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--bars", default="3-4", help="bars to regenerate in the 8-bar Bach example")
    parser.add_argument("--pitches", default="55-79", help="MIDI pitches to regenerate")
    parser.add_argument("--concurrency", type=int, help="generations at once (default: the app's setting)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    from app.main import build_app, launch_kwargs
    from app.settings import Settings

    overrides = {"model_dirs": {"pianoroll": Path(args.model)}} if args.model else {}
    if args.concurrency:
        overrides["concurrency"] = args.concurrency
    settings = Settings.from_env(max_queue=max(32, 2 * args.clients), **overrides)
    if not (settings.model_dir("pianoroll") / "model_index.json").is_file():
        sys.exit(f"no pipeline at {settings.model_dir('pianoroll')}: run `make assets-pianoroll` or pass --model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(settings))
    try:
        result = run_load(url, clients=args.clients, requests=args.requests, warmup=args.warmup, steps=args.steps,
                          repaint=args.repaint, samples=args.samples, bars=args.bars, pitches=args.pitches)
    finally:
        demo.close()
    report = {
        "model": str(settings.model_dir("pianoroll")),
        "device": settings.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "clients": args.clients, "requests": args.requests, "warmup": args.warmup, "steps": args.steps,
        "repaint": args.repaint, "samples": args.samples, "bars": args.bars, "pitches": args.pitches,
        "concurrency": settings.concurrency,
        **result.summary(),
        "first_errors": result.errors[:5],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        from genmodels.io import write_text_atomic

        write_text_atomic(args.json, json.dumps({**report, "latencies_s": [round(x, 4) for x in result.latencies]},
                                                indent=2))
    sys.exit(1 if result.errors else 0)


if __name__ == "__main__":
    main()
