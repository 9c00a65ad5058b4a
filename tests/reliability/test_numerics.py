"""Numerics under stress (issue 11, part 4).

1. Linear attention (SANA's ReLU-normalised form, non-causal and causal) and the delta rule at 65,536 tokens in
   bfloat16 and float16 with large-magnitude inputs give finite outputs close to a float32 run: the operator
   core accumulates in float32, so half-precision activations do not overflow (the fp16 overflow SANA users
   reported in LiteLA). ``LinearSelfAttention``, the SANA layer itself, is checked the same way.
2. NaN / Inf coming out of a model while sampling is detected and reported (``FloatingPointError``), never
   written out: pipelines raise, the CLI exits 2 with nothing in its output folder, the app shows a message
   and serves no file.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels import delta_rule, linear_attention
from tests.reliability.fuzzing import ROOT, record

T = 65_536
D = 32
H = 2
TIME_LIMIT_S = 20.0  # per op and dtype, on one busy CPU core
HALF = [torch.bfloat16, torch.float16]


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------
# 1. Long sequences in half precision


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [1e3, "max"])
def test_linear_attention_relu_normalised_64k_tokens_half_precision(dtype, causal, scale):
    """SANA's form, φ = ReLU with the normaliser. ``scale="max"``: values near the dtype's largest finite number
    (float16: ±65504; bfloat16: 1e4, whose products would already overflow a half-precision accumulator)."""
    gen = torch.Generator().manual_seed(0)
    amplitude = (torch.finfo(dtype).max * 0.99 if dtype == torch.float16 else 1e4) if scale == "max" else scale
    q, k, v = ((torch.rand(1, H, T, D, generator=gen) * 2 - 1) * amplitude for _ in range(3))
    q, k, v = (x.to(dtype) for x in (q, k, v))
    out, seconds = timed(linear_attention, q, k, v, causal=causal, feature_map="relu", normalize=True)
    assert out.dtype == dtype and out.shape == v.shape
    assert torch.isfinite(out).all(), f"{dtype} causal={causal}: non-finite output"
    assert seconds < TIME_LIMIT_S, f"{seconds:.1f} s"
    ref = linear_attention(q.float(), k.float(), v.float(), causal=causal, feature_map="relu", normalize=True)
    # rows whose ReLU(q)·ReLU(k) sum is 0 are 0 in both; everything else must agree to half precision
    assert rel_err(ref, out.float()) < 2e-2
    record(f"numerics/linear-attention-{dtype}".replace("torch.", ""), "ok")


@pytest.mark.parametrize("dtype", HALF)
def test_linear_attention_causal_unnormalised_64k_tokens(dtype):
    """The causal running sum without a normaliser grows with T; float32 accumulation keeps it exact as long as
    the *result* fits the output dtype (inputs scaled so it does for float16 too)."""
    gen = torch.Generator().manual_seed(1)
    amplitude = 1e3 if dtype == torch.bfloat16 else 2.0
    q, k, v = ((torch.randn(1, H, T, D, generator=gen) * amplitude).to(dtype) for _ in range(3))
    log_decay = -torch.rand(1, H, T, generator=gen) * 0.1
    out, seconds = timed(linear_attention, q, k, v, causal=True, log_decay=log_decay)
    ref = linear_attention(q.float(), k.float(), v.float(), causal=True, log_decay=log_decay)
    assert ref.abs().max() < torch.finfo(dtype).max / 2  # the test's premise: the true result is representable
    assert torch.isfinite(out).all() and seconds < TIME_LIMIT_S
    assert rel_err(ref, out.float()) < 2e-2
    record(f"numerics/linear-attention-causal-{dtype}".replace("torch.", ""), "ok")


def _delta_inputs(dtype, r_scale: float, v_scale: float, seed: int = 0):
    """RWKV-7-style inputs as CrossWKV builds them: κ̂ unit-norm (a = −κ̂, b = κ̂ ⊙ α, α ∈ [0, 1]), so the state
    transition is a contraction; the write key k normalised too; r and v large."""
    gen = torch.Generator().manual_seed(seed)
    shape = (1, H, T, D)
    r = torch.randn(shape, generator=gen) * r_scale
    k = F.normalize(torch.randn(shape, generator=gen), dim=-1)
    v = torch.randn(1, H, T, D, generator=gen) * v_scale
    kappa = F.normalize(torch.randn(shape, generator=gen), dim=-1)
    iclr = torch.rand(shape, generator=gen)
    log_w = -0.6065 * torch.rand(shape, generator=gen)
    return [x.to(dtype) for x in (r, log_w, k, v, -kappa, kappa * iclr)]


@pytest.mark.parametrize("dtype", HALF)
def test_delta_rule_64k_tokens_half_precision(dtype):
    # bfloat16: r and v at 1e3 (outputs ~1e7); float16: v at 1e3 with the output kept inside float16's range
    inputs = _delta_inputs(dtype, r_scale=1e3 if dtype == torch.bfloat16 else 1.0, v_scale=1e3)
    (out, state), seconds = timed(delta_rule, *inputs, return_state=True)
    ref, ref_state = delta_rule(*(x.float() for x in inputs), return_state=True)
    assert ref.abs().max() < torch.finfo(dtype).max / 2
    assert out.dtype == dtype and torch.isfinite(out).all() and torch.isfinite(state).all()
    assert seconds < TIME_LIMIT_S, f"{seconds:.1f} s"
    assert rel_err(ref, out.float()) < 2e-2 and rel_err(ref_state, state) < 1e-4
    record(f"numerics/delta-rule-{dtype}".replace("torch.", ""), "ok")


@pytest.mark.parametrize("dtype", HALF)
def test_sana_linear_self_attention_layer_64k_tokens(dtype):
    """The SANA layer (qkv projection → float32 ReLU linear attention → projection) on 64k tokens of large
    activations, the whole layer in half precision."""
    from genmodels.sana import LinearSelfAttention

    torch.manual_seed(0)
    layer = LinearSelfAttention(64, head_dim=D).eval()
    x = torch.randn(1, T, 64, generator=torch.Generator().manual_seed(2)) * 1e3
    with torch.no_grad():
        ref = layer(x.to(dtype).float())
        out, seconds = timed(layer.to(dtype), x.to(dtype))
    assert torch.isfinite(out).all() and seconds < TIME_LIMIT_S
    assert rel_err(ref, out.float()) < 5e-2
    record(f"numerics/sana-layer-{dtype}".replace("torch.", ""), "ok")


# ---------------------------------------------------------------------------------------------------------
# 2. NaN / Inf from the model during sampling


def _poisoned(value: float):
    """A forward that returns ``value`` everywhere, shaped like its input (the models predict in input shape)."""

    def forward(self, x, *args, **kwargs):
        return torch.full_like(x, value)

    return forward


@pytest.fixture(scope="module")
def t2i_dir(tmp_path_factory) -> Path:
    from tests.search.helpers import tiny_text_to_image_pipeline

    folder = tmp_path_factory.mktemp("t2i") / "model"
    tiny_text_to_image_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pianoroll_dir(tmp_path_factory) -> Path:
    from genmodels.diffusion.sampling import make_edm_scheduler
    from genmodels.hdit import HDiT
    from genmodels.pipelines import PianoRollInpaintPipeline

    torch.manual_seed(0)
    model = HDiT(**{**HDiT.tiny_config(), "sample_size": [64, 32]}).eval()
    folder = tmp_path_factory.mktemp("pianoroll") / "model"
    PianoRollInpaintPipeline(transformer=model, scheduler=make_edm_scheduler("euler")).save_pretrained(folder)
    return folder


def _cli(argv) -> tuple[int, str]:
    from genmodels.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_text_to_image_pipeline_reports_nan_and_makes_no_image(value, monkeypatch):
    from genmodels.sana import SanaDiT
    from tests.search.helpers import tiny_text_to_image_pipeline

    pipe = tiny_text_to_image_pipeline()
    monkeypatch.setattr(SanaDiT, "forward", _poisoned(value))
    for kwargs in ({}, {"image": np.zeros((32, 32, 3), np.uint8), "mask": np.ones((32, 32), bool)}):
        with pytest.raises(FloatingPointError, match="NaN or infinite"):
            pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), **kwargs)
        record("numerics/nan-from-model", "rejected")


@pytest.mark.parametrize("search", ["none", "best-of-n"])
def test_cli_generate_reports_nan_and_writes_nothing(t2i_dir, tmp_path, monkeypatch, search):
    from genmodels.sana import SanaDiT

    monkeypatch.setattr(SanaDiT, "forward", _poisoned(float("nan")))
    out = tmp_path / "out"
    argv = ["generate", "--model", t2i_dir, "--prompt", "a red circle", "--prompt", "a blue square", "--steps", 2,
            "--out", out, "--search", search]
    if search != "none":
        argv += ["--n", 2, "--verifier", "oracle"]
    code, err = _cli(argv)
    assert code == 2 and "lingen: error:" in err and "NaN" in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    record("numerics/nan-from-model", "rejected")


def test_pianoroll_pipeline_and_cli_report_nan_and_write_nothing(pianoroll_dir, tmp_path, monkeypatch):
    from genmodels.hdit import HDiT
    from genmodels.loading import load_pipeline
    from genmodels.pipelines import PianoRollInpaintPipeline
    from genmodels.pipelines.pianoroll_io import load_roll, rect_mask

    midi = ROOT / "assets" / "examples" / "bach_bwv263.mid"
    pipe = load_pipeline(PianoRollInpaintPipeline, pianoroll_dir)
    monkeypatch.setattr(HDiT, "forward", _poisoned(float("nan")))
    roll, _ = load_roll(midi)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        pipe(roll, rect_mask(roll.shape[2], (2, 3), (55, 79)), num_inference_steps=2, repaint=1)
    record("numerics/nan-from-model", "rejected")

    out = tmp_path / "out"
    code, err = _cli(["pianoroll", "inpaint", "--midi", midi, "--bars", "2-3", "--model", pianoroll_dir,
                      "--steps", 2, "--repaint", 1, "--out", out])
    assert code == 2 and "NaN" in err, err
    assert not out.exists()
    record("numerics/nan-from-model", "rejected")


def test_app_reports_nan_and_serves_no_file(pianoroll_dir, tmp_path, monkeypatch):
    import gradio as gr

    from app.registry import ModelRegistry
    from app.settings import Settings
    from app.tabs.pianoroll import MASK_FROM_RANGES, PianoRollTab
    from genmodels.hdit import HDiT

    settings = Settings(assets_dir=tmp_path / "assets", model_dirs={"pianoroll": pianoroll_dir},
                        output_dir=tmp_path / "served", device="cpu", max_samples=2, min_steps=2)
    tab = PianoRollTab(settings, ModelRegistry(settings))
    _, _, piece = tab.load_example(next(iter(tab.examples)))
    monkeypatch.setattr(HDiT, "forward", _poisoned(float("inf")))
    with pytest.raises(gr.Error) as info:
        tab.generate(None, piece, MASK_FROM_RANGES, "2-3", "55-79", 1, 1, 100, 2, 0)
    assert "NaN or infinite" in str(info.value.message) and not str(info.value.message).startswith("internal")
    assert not [p for p in Path(settings.output_dir).rglob("*") if p.is_file()]
    record("numerics/nan-from-model", "rejected")
