"""Does any RePaint variant make the shipped piano-roll model fill more notes as r grows? (issue 3)

    python benchmarks/repaint_variants.py --json benchmarks/results/repaint_variants.json

Pictures of MIDI reports that more RePaint resampling gives more notes in the mask. The shipped sampler
(`genmodels.diffusion.sampling.sample_inpaint`: Euler, jump length 1, variance-correct re-noising) does not
show it (BENCHMARKS.md). This script tries the other readings of "repainted with extra noise" on the same
held-out windows (``pianoroll_eval.heldout_windows``, bars 3–6 masked over all pitches, 24 steps, seed 0) and
prints the mean notes in the mask for r = 1..4 next to the ground truth's:

  * the library sampler with Karras churn (``s_churn``) and with Heun steps;
  * RePaint with jump length j (j steps down, then one re-noise back up over the j steps, as in Lugmayr et
    al.; j = 1 is the library sampler), written out here because the library has no jumps;
  * jump length 1 with the re-noise's standard deviation scaled by f > 1 ("extra noise").

``--mask`` changes the mask's shape (PoM's users draw shapes, often on blank roll): ``band`` (16 pitches around
the window's median note), ``above`` (12 pitches above its highest note: blank in the truth), ``rising`` (an
8-pitch stroke rising over the four bars); ``--only NAME ...`` runs some variants.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pianoroll_eval import heldout_windows  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from genmodels.diffusion.edm import KarrasDenoiser  # noqa: E402
from genmodels.diffusion.sampling import get_sigmas_karras, sample_inpaint  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.music.roll import STEPS_PER_BAR  # noqa: E402
from genmodels.pipelines import PianoRollInpaintPipeline  # noqa: E402
from genmodels.pipelines.pianoroll import clean_generated  # noqa: E402


def jump_inpaint(denoise, x_known, mask, *, num_steps, repaint, jump, renoise, sigmas, generator):
    """RePaint with jump length ``jump``: Euler over ``jump`` levels, re-noise back up to the first of them
    (std √(σ_i² − σ_{i+j}²) × ``renoise``), ``repaint`` times per block; the known region re-imposed at
    every level. ``jump = 1, renoise = 1`` is exactly the library's Euler ``sample_inpaint``."""
    x = torch.randn(x_known.shape, generator=generator) * sigmas[0]

    def step(x, i):
        known = x_known + torch.randn(x.shape, generator=generator) * sigmas[i]
        x = torch.lerp(known, x, mask)
        d = (x - denoise(x, sigmas[i])) / sigmas[i]
        return x + d * (sigmas[i + 1] - sigmas[i])

    i = 0
    while i < num_steps:
        j = min(jump, num_steps - i)
        for rep in range(repaint):
            for s in range(j):
                x = step(x, i + s)
            if rep == repaint - 1:
                break
            x = x + torch.randn(x.shape, generator=generator) * (sigmas[i] ** 2 - sigmas[i + j] ** 2).sqrt() * renoise
        i += j
    return torch.lerp(x_known, x, mask)


MASKS = ("bars", "band", "above", "rising")


def make_mask(roll: np.ndarray, kind: str) -> np.ndarray:
    """A [64, width] boolean mask over bars 3-6 of one window ``roll`` [2, 64, width], shaped by ``kind``."""
    pitches, width = roll.shape[1:]
    mask = np.zeros((pitches, width), bool)
    lo, hi = 2 * STEPS_PER_BAR, 6 * STEPS_PER_BAR
    rows = np.nonzero((roll[1] > 0).any(axis=1))[0]
    centre = int(np.median(np.repeat(np.arange(pitches), (roll[1] > 0).sum(axis=1)))) if len(rows) else pitches // 2
    if kind == "bars":
        mask[:, lo:hi] = True
    elif kind == "band":
        a = int(np.clip(centre - 8, 0, pitches - 16))
        mask[a:a + 16, lo:hi] = True
    elif kind == "above":  # row 0 is the highest pitch
        a = int(max((rows.min() if len(rows) else pitches) - 12, 0))
        mask[a:a + 12, lo:hi] = True
    elif kind == "rising":
        for c in range(lo, hi):
            a = int(np.clip(centre - 4 - round(16 * (c - lo) / (hi - lo)), 0, pitches - 8))
            mask[a:a + 8, c] = True
    else:
        raise ValueError(f"unknown mask {kind!r}; choose from {MASKS}")
    return mask


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/pianoroll-hdit")
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mask", choices=MASKS, default="bars",
                   help="bars: bars 3-6 over all pitches; band: bars 3-6 over the 16 pitches around the window's "
                        "median note; above: bars 3-6 over the 12 pitches above its highest note (empty in the "
                        "truth: a shape drawn on blank roll, PoM's use); rising: a stroke 8 pitches thick rising "
                        "over bars 3-6 from the window's median pitch")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    variants = {"library sampler (Euler, j = 1)": dict(lib={}),
                "churn 5": dict(lib={"s_churn": 5.0}), "churn 20": dict(lib={"s_churn": 20.0}),
                "Heun steps": dict(lib={"method": "heun"}),
                "jump 4": dict(jump=4, renoise=1.0), "jump 8": dict(jump=8, renoise=1.0),
                "extra noise ×1.5": dict(jump=1, renoise=1.5), "extra noise ×2": dict(jump=1, renoise=2.0),
                "extra noise ×3": dict(jump=1, renoise=3.0)}
    unknown = sorted(set(args.only or ()) - set(variants))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(variants)}")
    variants = {k: v for k, v in variants.items() if not args.only or k in args.only}
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(PianoRollInpaintPipeline, args.model)
    rolls, ids = heldout_windows(args.windows)
    masks = np.stack([make_mask(r, args.mask) for r in rolls])
    known = torch.from_numpy(rolls * 2 - 1)
    m = torch.from_numpy(np.ascontiguousarray(masks[:, None].repeat(2, axis=1)).astype(np.float32))
    denoise = KarrasDenoiser(pipe.transformer).denoise
    cfg = pipe.scheduler.config
    sigmas = get_sigmas_karras(args.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)

    def notes(sample: torch.Tensor) -> float:
        x = ((sample.float().numpy() + 1) / 2).clip(0, 1)
        filled = [np.where(masks[i][None], clean_generated(x[i], masks[i]), rolls[i]) for i in range(len(rolls))]
        return float(np.mean([((f[0] > 0) & masks[i]).sum() for i, f in enumerate(filled)]))

    truth = float(np.mean([((r[0] > 0) & masks[i]).sum() for i, r in enumerate(rolls)]))
    results = {"windows": ids, "steps": args.steps, "mask": args.mask, "ground_truth_notes": truth, "variants": {}}
    print(f"ground truth: {truth:.1f} notes in the mask per window")
    bar = tqdm(total=len(variants) * 4, desc="variants × r")
    for name, spec in variants.items():
        row = {}
        for r in (1, 2, 3, 4):
            gen = torch.Generator().manual_seed(args.seed)
            t0 = time.perf_counter()
            with torch.no_grad():
                if "lib" in spec:
                    sample = sample_inpaint(denoise, known, m, num_steps=args.steps, repaint=r, sigma_min=cfg.sigma_min,
                                            sigma_max=cfg.sigma_max, rho=cfg.rho, generator=gen, **spec["lib"]).sample
                else:
                    sample = jump_inpaint(denoise, known, m, num_steps=args.steps, repaint=r, sigmas=sigmas,
                                          generator=gen, jump=spec["jump"], renoise=spec["renoise"])
            row[str(r)] = round(notes(sample), 2)
            bar.update()
            bar.set_postfix_str(f"{name} r={r}: {row[str(r)]:.1f} ({time.perf_counter() - t0:.0f} s)")
        results["variants"][name] = row
        tqdm.write(f"{name:32s} " + "  ".join(f"r={r}: {v:7.1f}" for r, v in row.items()))
    bar.close()
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
