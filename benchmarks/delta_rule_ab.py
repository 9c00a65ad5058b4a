"""The delta rule's torch path now against the same path at an earlier git revision, in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/delta_rule_ab.py --against 5cee797 [--lengths 1024 4096 16384 65536]

Timing the two in separate runs mixes the change with the machine's drift (this 2-core machine's speed moves by
±30 % between hours), so both are timed here alternately on the same inputs (B = 1, H = 8, D = 64, fp32, the
inputs of ``kernels.bench``): the old ``kernels`` package is extracted with ``git archive`` into a temporary
folder and imported under another name. Prints the medians of both rounds and the speed-up per length.
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.hdit_speed import median_time  # noqa: E402
from kernels.delta_rule import chunk as current  # noqa: E402


def load_old_chunk(revision: str, folder: Path):
    """``kernels.delta_rule.chunk`` as of ``revision``, imported as ``kernels_then.delta_rule.chunk``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "kernels"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (folder / "kernels").rename(folder / "kernels_then")
    sys.path.insert(0, str(folder))
    return importlib.import_module("kernels_then.delta_rule.chunk")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", required=True, help="git revision to compare with")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old_chunk(args.against, Path(tmp))
        print(f"delta rule torch path: {args.against} vs the working tree, {torch.get_num_threads()} threads")
        for t in args.lengths:
            g = torch.Generator().manual_seed(t)
            q, k, v = (torch.randn(1, 8, t, 64, generator=g) for _ in range(3))
            kappa = F.normalize(torch.randn(1, 8, t, 64, generator=g), dim=-1)
            x = [q, -0.6 * torch.rand(1, 8, t, 64, generator=g), k * 0.1, v, -kappa, kappa * 0.5]
            repeats = 9 if t <= 4096 else 3
            then, now = [], []
            for _ in range(2):  # alternate, so drift hits both
                then.append(median_time(lambda x=x: old.delta_rule_torch(*x, initial_state=None), repeats))
                now.append(median_time(lambda x=x: current.delta_rule_torch(*x, initial_state=None), repeats))
            print(f"T = {t:6d}: {args.against} {then[0] * 1e3:8.1f} / {then[1] * 1e3:8.1f} ms, now "
                  f"{now[0] * 1e3:8.1f} / {now[1] * 1e3:8.1f} ms, speed-up {sum(then) / sum(now):.2f}×", flush=True)


if __name__ == "__main__":
    main()
