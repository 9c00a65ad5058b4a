"""Evaluate piano-roll inpainting on held-out pieces (issue figures for BENCHMARKS.md).

    python benchmarks/pianoroll_eval.py --model assets/pianoroll-hdit --json benchmarks/results/pianoroll_eval.json

For ``--windows`` fixed 8-bar windows of the held-out split (pieces never trained on), bars 3–6 are masked
over the whole pitch range and filled. Reported, for the trained model and the baselines from the same run
(random notes at the ground truth's density in the mask with durations uniform in 1–16 sixteenths; the same
architecture untrained; and, as a stronger reference, random notes whose durations and velocities are drawn
from the notes outside the mask):
  * pitch-class and note-duration histogram overlap of the filled region with the ground truth (1 = same),
    in-key ratio and onset-grid alignment of the filled notes;
  * the share of pixels and notes outside the mask left unchanged (must be 100%);
  * mean notes generated in the mask for RePaint r = 1..4 (Pictures of MIDI claims more resampling, more notes);
  * wall time to inpaint 4 bars of a 16-bar roll with default steps, r = 2, one sample.
Everything is seeded; the same command gives the same figures on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genmodels.data.pianoroll import PianoRollDataset, crop_levels  # noqa: E402
from genmodels.eval import music_metrics as mm  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.music.roll import PNG_LEVELS, STEPS_PER_BAR, roll_notes  # noqa: E402
from genmodels.pipelines import PianoRollInpaintPipeline  # noqa: E402


def heldout_windows(n: int, width: int = 128, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` held-out windows [n, 2, 64, width] (rolls in [0, 1]) with enough notes, picked by a fixed seed."""
    ds = PianoRollDataset(split="val", width=width, progress=False)
    by_id = {p.piece_id: p for p in ds.pieces}
    windows = [(pid, s) for pid, s in ds.val_windows(width)
               if (by_id[pid].roll[0, :, s + 2 * STEPS_PER_BAR: s + 6 * STEPS_PER_BAR] > 0).sum() >= 8]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(windows), size=min(n, len(windows)), replace=False)
    rolls = [crop_levels(by_id[windows[i][0]].roll, windows[i][1], width).astype(np.float32) / PNG_LEVELS
             for i in sorted(pick)]
    return np.stack(rolls), [f"{windows[i][0]}@{windows[i][1]}" for i in sorted(pick)]


def region_scores(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    return {
        "pitch_class_overlap": mm.histogram_overlap(mm.pitch_class_histogram(result, mask),
                                                    mm.pitch_class_histogram(truth, mask)),
        "duration_overlap": mm.histogram_overlap(mm.duration_histogram(result, mask),
                                                 mm.duration_histogram(truth, mask)),
        "in_key": mm.in_key_ratio(result, mask),
        "grid": mm.onset_grid_alignment(result, mask),
        "notes": mm.notes_in_mask(result, mask),
    }


def unchanged_outside(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Share of pixels and of notes (onset outside the mask) identical to the input."""
    keep = ~mask
    pixels = float((result[:, keep] == truth[:, keep]).mean())
    a, b = roll_notes(truth), roll_notes(result)

    def outside(notes):
        return {(int(p), int(s), int(e), int(v)) for p, s, e, v in zip(*notes)
                if not mask[91 - p, s] and (e <= 32 or s >= 96)}
    ref = outside(a)
    notes = len(ref & outside(b)) / max(len(ref), 1)
    return pixels, notes


def mean_scores(rows: list[dict]) -> dict:
    return {k: round(statistics.fmean(r[k] for r in rows), 4) for k in rows[0]}


def run_model(pipe, rolls, mask, steps, repaint, seed, batch):
    out = []
    for i in range(0, len(rolls), batch):
        chunk = rolls[i: i + batch]
        res, _ = pipe.inpaint_batch(chunk, np.broadcast_to(mask, (len(chunk), *mask.shape)),
                                    num_inference_steps=steps, repaint=repaint,
                                    generator=torch.Generator().manual_seed(seed + i))
        out.append(res)
    return np.concatenate(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/pianoroll-hdit")
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--repaint", type=int, default=2)
    p.add_argument("--r-windows", type=int, default=12, help="windows for the r = 1..4 sweep")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    pipe = load_pipeline(PianoRollInpaintPipeline, args.model)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(args.seed)
    untrained = PianoRollInpaintPipeline(transformer=type(pipe.transformer).from_config(pipe.transformer.config).eval(),
                                         scheduler=pipe.scheduler)
    rolls, ids = heldout_windows(args.windows, seed=args.seed)
    mask = np.zeros(rolls.shape[2:], dtype=bool)
    mask[:, 2 * STEPS_PER_BAR: 6 * STEPS_PER_BAR] = True
    report = {"model": args.model, "windows": len(rolls), "window_ids": ids, "mask": "bars 3-6, all pitches",
              "steps": args.steps, "repaint": args.repaint}

    results = {}
    t0 = time.perf_counter()
    trained = run_model(pipe, rolls, mask, args.steps, args.repaint, args.seed, args.batch)
    results["trained HDiT"] = trained
    results["untrained HDiT"] = run_model(untrained, rolls, mask, args.steps, args.repaint, args.seed, args.batch)
    for name, durations in (("random notes (same density)", "uniform"),
                            ("random notes, durations from the context", "context")):
        rng = np.random.default_rng(args.seed)
        results[name] = np.stack([mm.random_fill(r, mask, rng, density=mm.note_density(r, mask), durations=durations)
                                  for r in rolls])
    report["scores"] = {name: mean_scores([region_scores(res, truth, mask) for res, truth in zip(out, rolls)])
                        for name, out in results.items()}
    report["scores"]["ground truth"] = mean_scores([region_scores(t, t, mask) for t in rolls])
    kept = [unchanged_outside(res, truth, mask) for res, truth in zip(trained, rolls)]
    report["unchanged_outside_mask"] = {"pixels": min(k[0] for k in kept), "notes": min(k[1] for k in kept)}
    report["eval_seconds"] = round(time.perf_counter() - t0, 1)

    sweep = {}
    for r in (1, 2, 3, 4):
        out = run_model(pipe, rolls[: args.r_windows], mask, args.steps, r, args.seed, args.batch)
        sweep[r] = round(statistics.fmean(mm.notes_in_mask(o, mask) for o in out), 2)
    report["mean_notes_in_mask_by_r"] = sweep

    if not args.skip_speed:
        ds = PianoRollDataset(split="val", width=256, progress=False)
        piece = max(ds.pieces, key=lambda pc: pc.roll.shape[2])
        roll16 = crop_levels(piece.roll, 0, 256).astype(np.float32) / PNG_LEVELS
        m16 = np.zeros((64, 256), dtype=bool)
        m16[:, 4 * STEPS_PER_BAR: 8 * STEPS_PER_BAR] = True
        times = []
        for k in range(3):
            t = time.perf_counter()
            pipe(roll16, m16, repaint=2, num_samples=1, generator=torch.Generator().manual_seed(k))
            times.append(time.perf_counter() - t)
        report["speed_16bar_4bars_r2_seconds"] = {"median": round(statistics.median(times), 2),
                                                  "runs": [round(t, 2) for t in times],
                                                  "threads": torch.get_num_threads()}
    print(json.dumps({k: v for k, v in report.items() if k != "window_ids"}, indent=2))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
