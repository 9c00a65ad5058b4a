"""Generator-style training pairs for a verifier: shapes-world renders redrawn by a text-to-image model (SDEdit).

    python training/make_verifier_data.py --model assets/shapes-sana --out runs/verifier-pairs.npz \\
        [--count 2400] [--split train] [--seed 11] [--strength 0.3 0.85] [--steps 20] [--guidance 4]

Why: a CLIP trained on clean renders does not rank a small model's samples (they are ragged blob fields, far
from the renders; BENCHMARKS.md, issue 8), so best-of-N with it is no better than a random pick. Here every
render of ``ShapesDataset(split, seed)`` is moved to noise level t₀ ~ U(strength) along its own straight path
and integrated back to t = 0 by the model, conditioned on the render's caption
(:func:`genmodels.diffusion.flow.sample_flow_img2img`): the result has the generator's texture and artefacts,
and keeps the render's layout the more, the lower t₀. Its label is the **render's** caption and spec, from the
data, never from the oracle; ``train_clip.py --extra-pairs`` mixes these pairs into CLIP training.

The oracle is run only as a diagnostic of label noise (how often the redrawn image still satisfies its
caption, per strength bin); it is printed and stored, never used to select or weight pairs.

Output (``np.savez``, written atomically; nothing in it is pickled): ``images`` uint8 ``[N, S, S, 3]``,
``captions`` and ``specs`` (str; specs as JSON), ``strengths`` float32, ``oracle`` bool (the diagnostic), and
``meta`` (JSON text: the arguments and the diagnostic summary).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.data.shapes import ShapesDataset  # noqa: E402
from genmodels.diffusion.flow import sample_flow_img2img  # noqa: E402
from genmodels.io import write_bytes_atomic  # noqa: E402

PAIR_KEYS = ("images", "captions", "specs")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a TextToImagePipeline folder (e.g. assets/shapes-sana)")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--count", type=int, default=2400)
    p.add_argument("--split", default="train", choices=("train", "val"))
    p.add_argument("--seed", type=int, default=11, help="ShapesDataset seed and the noise seeds")
    p.add_argument("--strength", type=float, nargs=2, default=(0.3, 0.85), metavar=("LO", "HI"),
                   help="t₀ is drawn uniformly from [LO, HI] per image")
    p.add_argument("--steps", type=int, default=20, help="the grid from t = 1; strength · steps of it are run")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    lo, hi = args.strength
    if not 0 < lo <= hi <= 1:
        p.error(f"--strength needs 0 < LO <= HI <= 1, got {lo} {hi}")
    if args.count < 1 or args.batch < 1 or args.steps < 1:
        p.error("--count, --batch and --steps must be positive")
    return args


def load_pairs(path: str | Path) -> dict:
    """Read a file written by this script: images uint8 [N, S, S, 3], captions, specs (JSON text), strengths.
    Raises ``ValueError`` naming the file when it is not one (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a verifier-pairs .npz ({err})") from err
    missing = [key for key in PAIR_KEYS if key not in out]
    images = out.get("images")
    if missing or images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 \
            or not len(out["captions"]) == len(out["specs"]) == len(images):
        raise ValueError(f"{path}: not a verifier-pairs .npz (needs {PAIR_KEYS}: uint8 images [N, S, S, 3] "
                         f"and one caption and spec per image; missing {missing})")
    return out


def main(argv=None) -> dict:
    from genmodels.eval.shapes_oracle import score
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_image import TextToImagePipeline, to_images

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(TextToImagePipeline, args.model)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.default_size
    data = ShapesDataset(args.split, size=size, length=args.count, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    strengths = np.empty(args.count, np.float32)
    images = np.empty((args.count, size, size, 3), np.uint8)
    captions, specs, oracle = [], [], np.zeros(args.count, bool)
    start, nfe = time.monotonic(), 0
    bar = tqdm(total=args.count, desc="sdedit", unit="img")
    for lo in range(0, args.count, args.batch):
        items = [data[i] for i in range(lo, min(lo + args.batch, args.count))]
        hi = lo + len(items)
        strengths[lo:hi] = rng.uniform(*args.strength)  # one t₀ per batch: the batch shares the time grid
        prompts = [it["caption"] for it in items]
        gens = [torch.Generator().manual_seed(args.seed * 1_000_003 + i) for i in range(lo, hi)]
        with torch.no_grad():
            out = sample_flow_img2img(pipe.velocity_fn(prompts, args.guidance),
                                      torch.stack([it["pixel_values"] for it in items]), float(strengths[lo]),
                                      args.steps, generator=gens)
        nfe += out.nfe * len(items)
        images[lo:hi] = to_images(out.sample, None, None, "np")
        captions += prompts
        specs += [it["spec"] for it in items]
        oracle[lo:hi] = [score(images[i], json.loads(it["spec"])) for i, it in zip(range(lo, hi), items)]
        bar.update(len(items))
    bar.close()
    bins = np.linspace(*args.strength, 5)
    which = np.clip(np.digitize(strengths, bins[1:-1]), 0, 3)
    by_strength = {f"{bins[b]:.2f}-{bins[b + 1]:.2f}": float(oracle[which == b].mean())
                   for b in range(4) if (which == b).any()}
    summary = {"count": args.count, "minutes": (time.monotonic() - start) / 60, "nfe": nfe,
               "oracle_still_true": float(oracle.mean()), "oracle_still_true_by_strength": by_strength}
    meta = {**vars(args), "size": size, "summary": summary}
    buffer = io.BytesIO()
    np.savez(buffer, images=images, captions=np.array(captions), specs=np.array(specs), strengths=strengths,
             oracle=oracle, meta=np.array(json.dumps(meta)))
    write_bytes_atomic(args.out, buffer.getvalue())
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
