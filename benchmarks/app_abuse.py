"""Load and abuse on the web app: 32 concurrent clients for minutes, a bounded queue, and hostile requests.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/app_abuse.py --json benchmarks/results/app_abuse.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/app_abuse.py --minutes 0.2   # a quick check

The app runs as its own process, ``python -m app`` exactly as a user starts it (its default bind address, its
malloc settings), with the shipped piano-roll model (or ``--model``) and the app's queue: one generation at a
time and at most ``--max-queue`` waiting (default 16, half the clients, so the bound is exercised). Resident
memory is the server process's (``/proc/<pid>/statm``), so the 32 clients of this process do not count in it. Each of
``--clients`` gradio_client sessions loads the Bach example and then sends small generate requests back to back
(``--steps`` × RePaint 1, one candidate, bars 3-3 × pitches 60-63) for ``--minutes``. A request refused because
the queue is full (HTTP 503, gradio_client's ``QueueError``: "Queue is full! Please try again.") is counted as
*told to retry*: the client waits 0.2-1 s and sends it again. Any other error is a *failure*.

Reported: requests, failures, told-to-retry refusals, latency p50 / p95 / max of the successful requests
(queueing included), throughput, RSS at the start, after the warm-up (the first minute, or a fifth of the run if
shorter) and at the end, sampled every 5 s. Then the abuse checks:

* uploads over the size limit: a raw upload over ``max_request_bytes`` (Gradio's ``max_file_size``) must get HTTP
  413, and a MIDI file over ``max_upload_bytes`` sent to ``/load_midi`` a readable error;
* a decompression bomb (a 10k × 10k PNG of about 100 kB) as the editor picture of ``/generate``: an error, the
  server still serving, and under 100 MB of RSS spent on it (decoding it would take ~400 MB and more);
* path traversal on the file routes (``/gradio_api/file=../../etc/passwd`` and variants, URL-encoded, absolute,
  through the output folder, the app's own source): never served; a file the app made is (control);
* the bind address: every listening socket of the server is on 127.0.0.1 (read from ``/proc/net/tcp*``).

Exit status 1 when a request failed, the RSS grew more than 20% after the warm-up, or an abuse check did not hold.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.app_load import EXAMPLE, generate_request, percentile, rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------
# Load


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: int = 0  # queue full: told to retry
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _retrying(call, tally: Tally, stop: threading.Event, rng: random.Random):
    """``call()``; on "queue full" count a retry, back off 0.2-1 s and call again (until ``stop``)."""
    from gradio_client.utils import QueueError

    while True:
        try:
            return call()
        except QueueError:
            with tally.lock:
                tally.retries += 1
            if stop.is_set():
                raise
            time.sleep(rng.uniform(0.2, 1.0))


def process_rss(pid: int) -> int:
    """Resident memory of process ``pid`` now, in bytes (Linux ``/proc/<pid>/statm``)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_clients(url: str, *, clients: int, seconds: float, steps: int, download_dir: str,
                rss_bytes=rss_bytes) -> tuple[Tally, float]:
    """``clients`` sessions sending generate requests back to back for ``seconds``; returns the tally and the
    wall time of the load phase. ``rss_bytes()`` reads the server's resident memory."""
    from gradio_client import Client

    tally = Tally()
    stop = threading.Event()
    t0 = time.perf_counter()
    tally.rss.append((0.0, rss_bytes()))
    kw = {"verbose": False, "analytics_enabled": False, "download_files": download_dir}
    sessions = [Client(url, **kw) for _ in range(clients)]
    seeds = iter(range(10**9))

    def worker(index: int, client) -> None:
        rng = random.Random(index)
        while True:  # a session needs its piece loaded; a failed load is counted and tried again
            try:
                _retrying(lambda: client.predict(EXAMPLE, api_name="/load_example"), tally, stop, rng)
                break
            except Exception as err:  # noqa: BLE001  (every failure is reported, none stops the run)
                if stop.is_set() and "Queue is full" in str(err):
                    return  # still being told to retry when the run ended: not a failure
                with tally.lock:
                    tally.failures.append(f"load_example: {type(err).__name__}: {err}")
                if stop.is_set():
                    return
                time.sleep(rng.uniform(0.2, 1.0))
        while not stop.is_set():
            with tally.lock:
                seed = next(seeds)
            start = time.perf_counter()
            try:
                _retrying(lambda s=seed: generate_request(client, s, steps=steps, repaint=1, samples=1, bars="3-3",
                                                          pitches="60-63"), tally, stop, rng)
            except Exception as err:  # noqa: BLE001
                if stop.is_set() and "Queue is full" in str(err):
                    return  # refused at the very end: the run is over, it is not retried
                with tally.lock:
                    tally.failures.append(f"generate: {type(err).__name__}: {err}")
                continue
            with tally.lock:
                tally.latencies.append(time.perf_counter() - start)

    def sample_rss() -> None:
        while not stop.wait(5.0):
            tally.rss.append((time.perf_counter() - t0, rss_bytes()))

    threads = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(sessions)]
    sampler = threading.Thread(target=sample_rss, daemon=True)
    t_load = time.perf_counter()
    for t in [*threads, sampler]:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=600)
    sampler.join()
    tally.rss.append((time.perf_counter() - t0, rss_bytes()))
    return tally, time.perf_counter() - t_load


def load_summary(tally: Tally, wall: float, warmup_s: float) -> dict:
    warm = [b for t, b in tally.rss if t >= warmup_s] or [tally.rss[-1][1]]
    rss_warm, rss_end = warm[0], tally.rss[-1][1]
    n = len(tally.latencies)
    return {
        "requests_ok": n,
        "failures": len(tally.failures),
        "told_to_retry": tally.retries,
        "p50_s": round(percentile(tally.latencies, 50), 3),
        "p95_s": round(percentile(tally.latencies, 95), 3),
        "max_s": round(max(tally.latencies, default=float("nan")), 3),
        "throughput_rps": round(n / wall, 3) if wall else None,
        "load_wall_s": round(wall, 1),
        "rss_start_mb": round(tally.rss[0][1] / 2**20, 1),
        "rss_after_warmup_mb": round(rss_warm / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_max_mb": round(max(b for _, b in tally.rss) / 2**20, 1),
        "rss_growth_after_warmup": round(rss_end / rss_warm - 1, 4),
        "rss_series_mb": [(round(t, 1), round(b / 2**20, 1)) for t, b in tally.rss],
        "first_failures": tally.failures[:5],
    }


# ---------------------------------------------------------------------------------------------------------
# Abuse


def raw_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """``GET path`` sent byte for byte (no client-side normalisation of ``..``); returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def check_path_traversal(port: int, settings, served: Path | None) -> dict:
    """Files outside the app's output folder are never served; a file the app made is (the control)."""
    secret_dir = Path(tempfile.mkdtemp(prefix="lingen-secret-", dir=Path(settings.output_dir).parent))
    token = f"SECRET-{random.getrandbits(64):016x}"
    secret = secret_dir / "secret.txt"
    secret.write_text(token)
    out = Path(settings.output_dir).resolve()
    up = "../" * 12
    rel_secret = os.path.relpath(secret, out)
    paths = [
        f"/gradio_api/file={up}etc/passwd",
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/gradio_api/file=..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        f"/gradio_api/file={out}/{up}etc/passwd",
        f"/gradio_api/file={out}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={out}/{rel_secret}",
        f"/gradio_api/file={out}/..%2f{secret_dir.name}%2fsecret.txt",
        f"/gradio_api/file={secret}",
        f"/gradio_api/file={ROOT}/app/main.py",
        f"/gradio_api/file={ROOT}/assets/pianoroll-hdit/model_index.json",
        "/gradio_api/file=/proc/self/environ",
        f"/file={up}etc/passwd",
        f"/file={secret}",
        f"/gradio_api/static/{up}etc/passwd",
        "/gradio_api/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        f"/static/{up}etc/passwd",
        f"/assets/{up}etc/passwd",
        f"/gradio_api/file=file://{secret}",
    ]
    results, leaks = [], []
    for path in paths:
        try:
            status, body = raw_get(port, path)
        except OSError as err:
            results.append({"path": path, "status": f"connection error: {err}"})
            continue
        leaked = token.encode() in body or b"root:x:0:0" in body
        if leaked or (status == 200 and path.endswith(("main.py", "model_index.json", "environ"))):
            leaks.append(path)
        results.append({"path": path, "status": status, "leaked": leaked})
    control = None
    if served is not None:
        status, body = raw_get(port, f"/gradio_api/file={served}")
        control = {"path": str(served), "status": status, "bytes": len(body)}
    return {"requests": len(paths), "served_outside_output_dir": leaks, "results": results,
            "control_own_file": control, "ok": not leaks and (control is None or control["status"] == 200)}


def check_oversized_uploads(url: str, settings, download_dir: str) -> dict:
    import httpx
    from gradio_client import Client, handle_file

    limit = settings.max_request_bytes
    blob = os.urandom(limit + 1024 * 1024)
    t0 = time.perf_counter()
    resp = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": ("big.mid", blob)}, timeout=120)
    raw = {"bytes": len(blob), "status": resp.status_code, "detail": resp.text[:200],
           "seconds": round(time.perf_counter() - t0, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "big.mid"
        midi.write_bytes(b"MThd" + os.urandom(settings.max_upload_bytes + 1024))
        client = Client(url, verbose=False, analytics_enabled=False, download_files=download_dir)
        try:
            client.predict(handle_file(str(midi)), api_name="/load_midi")
            handler = {"bytes": midi.stat().st_size, "refused": False}
        except Exception as err:  # noqa: BLE001
            handler = {"bytes": midi.stat().st_size, "refused": True, "message": str(err)[:300]}
    ok = raw["status"] == 413 and handler["refused"] and "MB" in handler.get("message", "")
    return {"raw_upload_over_max_file_size": raw, "midi_over_max_upload_bytes": handler, "ok": ok}


def _png(width: int, height: int, rows: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw = rows if rows is not None else b"\0" * ((width + 1) * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def check_image_bomb(url: str, download_dir: str, side: int = 10_000, rss_bytes=rss_bytes) -> dict:
    """A valid ``side × side`` black PNG (about 100 kB, 100 M pixels) as the piano-roll editor's picture."""
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.png"
        path.write_bytes(_png(side, side))
        client = Client(url, verbose=False, analytics_enabled=False, download_files=download_dir)
        client.predict(EXAMPLE, api_name="/load_example")
        editor = {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path)),
                  "id": None}
        rss0, t0 = rss_bytes(), time.perf_counter()
        try:
            client.predict(editor, "painting", "", "", 1, 1, 100, 8, 0, api_name="/generate")
            outcome = {"refused": False}
        except Exception as err:  # noqa: BLE001
            outcome = {"refused": True, "message": str(err)[:300]}
        outcome.update(png_bytes=path.stat().st_size, pixels=side * side, seconds=round(time.perf_counter() - t0, 2),
                       rss_before_mb=round(rss0 / 2**20, 1), rss_after_mb=round(rss_bytes() / 2**20, 1))
    # still serving?
    client = Client(url, verbose=False, analytics_enabled=False, download_files=download_dir)
    _, info = client.predict(EXAMPLE, api_name="/load_example")
    outcome["still_serving"] = "bars" in str(info)
    outcome["rss_cost_mb"] = round(outcome["rss_after_mb"] - outcome["rss_before_mb"], 1)
    # refused before decoding: an error, the server up, and not the ~400 MB+ that decoding 100 M pixels costs
    outcome["ok"] = outcome["refused"] and outcome["still_serving"] and outcome["rss_cost_mb"] < 100
    return outcome


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` (Linux ``/proc/net/tcp`` and ``tcp6``)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def check_bind(port: int) -> dict:
    from app.__main__ import parse_args

    default_host = parse_args([]).host
    addresses = listening_addresses(port)
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    return {"default_host": default_host, "listening_on": addresses,
            "ok": default_host == "127.0.0.1" and bool(addresses) and set(addresses) <= loopback}


# ---------------------------------------------------------------------------------------------------------


def warm_up(url: str, steps: int) -> None:
    """One session loads the example and generates once, so the model is loaded before the clock starts."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as downloads:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=downloads)
        client.predict(EXAMPLE, api_name="/load_example")
        generate_request(client, 0, steps=steps, repaint=1, samples=1, bars="3-3", pitches="60-63")


def wait_for_port(host: str, port: int, server: subprocess.Popen, timeout: float) -> None:
    """Until the server accepts connections; exits if it died or took longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the app exited with status {server.returncode} before serving")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    server.kill()
    sys.exit(f"the app did not serve on {host}:{port} within {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="piano-roll pipeline folder (default: the shipped assets/pianoroll-hdit)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=8, help="sampler steps per request (the app's minimum)")
    parser.add_argument("--max-queue", type=int, default=16, help="the app's queue bound (default: half the clients)")
    parser.add_argument("--skip-bomb", action="store_true", help="skip the decompression-bomb upload")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()

    from app.__main__ import parse_args as app_args
    from app.settings import Settings

    out_dir = tempfile.mkdtemp(prefix="lingen-abuse-out-")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "LINGEN_APP_MAX_QUEUE": str(args.max_queue),
           "LINGEN_APP_OUTPUT_DIR": out_dir, "OMP_WAIT_POLICY": "PASSIVE"}
    if args.model:
        env["LINGEN_PIANOROLL_MODEL"] = str(Path(args.model).resolve())
    settings = Settings.from_env(env)
    if not (settings.model_dir("pianoroll") / "model_index.json").is_file():
        sys.exit(f"no pipeline at {settings.model_dir('pianoroll')}: run `make assets-pianoroll` or pass --model")
    host = app_args([]).host  # the address `python -m app` binds by default
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    log = open(Path(out_dir).parent / f"lingen-abuse-server-{port}.log", "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}/"
    wait_for_port(host, port, server, timeout=300)
    server_rss = functools.partial(process_rss, server.pid)
    warm_up(url, args.steps)  # the model loads on the first request: not part of the measured load
    seconds = args.minutes * 60
    report: dict = {"clients": args.clients, "minutes": args.minutes, "steps": args.steps, "repaint": 1,
                    "samples": 1, "mask": "bars 3-3 × pitches 60-63", "max_queue": settings.max_queue,
                    "concurrency": settings.concurrency, "device": settings.device,
                    "model": str(settings.model_dir("pianoroll")), "server": "python -m app (own process)",
                    "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory() as downloads:
            report["bind"] = check_bind(port)
            tally, wall = run_clients(url, clients=args.clients, seconds=seconds, steps=args.steps,
                                      download_dir=downloads, rss_bytes=server_rss)
            report["load"] = load_summary(tally, wall, warmup_s=min(60.0, seconds / 5))
            served = next(Path(settings.output_dir).rglob("*.mid"), None)
            report["path_traversal"] = check_path_traversal(port, settings, served)
            report["oversized_uploads"] = check_oversized_uploads(url, settings, downloads)
            if not args.skip_bomb:
                report["image_bomb"] = check_image_bomb(url, downloads, rss_bytes=server_rss)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(out_dir, ignore_errors=True)
    load = report["load"]
    problems = []
    if load["failures"]:
        problems.append(f"{load['failures']} failed requests")
    if load["requests_ok"] == 0:
        problems.append("no request succeeded")
    if load["rss_growth_after_warmup"] > 0.2:
        problems.append(f"RSS grew {100 * load['rss_growth_after_warmup']:.0f}% after the warm-up")
    for name in ("bind", "path_traversal", "oversized_uploads", "image_bomb"):
        if name in report and not report[name]["ok"]:
            problems.append(f"{name} check did not hold")
    report["problems"] = problems
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        from genmodels.io import write_text_atomic

        write_text_atomic(args.json, text + "\n")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
