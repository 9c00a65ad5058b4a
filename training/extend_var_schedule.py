"""Run a trained VAR at a larger resolution without training: ``python training/extend_var_schedule.py
--model runs/shapes-var128-fp16 --vqvae runs/shapes256-vqvae --out runs/var256-from128``.

The transformer's weights are copied with its position and level tables adapted to the tokenizer's longer scale
schedule (:func:`genmodels.var.var.adapt_scale_schedule`: shared scales copied, new ones from the nearest old
scale); the tokenizer (``--vqvae``, e.g. the 64² one saved under a 256² config by ``train_vqvae.py --init
assets/shapes-vqvae --max-steps 0``) and the text encoder come with it. The pipeline is written atomically
(fp32; ``--fp16`` stores half precision). On the shapes world the 64² model extended to 128² scored 0.396 on
the oracle before any training there (BENCHMARKS.md, issue 7).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.io import replace_dir_atomic  # noqa: E402
from genmodels.loading import load_pipeline  # noqa: E402
from genmodels.pipelines.var import VARPipeline  # noqa: E402
from genmodels.var.var import VARTransformer  # noqa: E402
from genmodels.var.vqvae import MultiScaleVQVAE  # noqa: E402
from training.train_var import copy_weights  # noqa: E402


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained VARPipeline folder")
    p.add_argument("--vqvae", required=True, help="a MultiScaleVQVAE folder with the target schedule")
    p.add_argument("--out", required=True)
    p.add_argument("--fp16", action="store_true")
    args = p.parse_args(argv)
    try:
        pipe = load_pipeline(VARPipeline, args.model)
        vqvae = MultiScaleVQVAE.from_pretrained(args.vqvae, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot load {args.model} / {args.vqvae}: {err}") from err
    config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    codes, own = vqvae.quantize.embedding.weight, pipe.vqvae.quantize.embedding.weight
    if codes.shape != own.shape or not torch.allclose(codes.float(), own.float(), atol=1e-3):
        raise SystemExit(f"--vqvae {args.vqvae} does not hold the pipeline's codebook: the transformer's token ids "
                         "would mean other codes (make it with train_vqvae.py --init <the pipeline's tokenizer>)")
    model = VARTransformer(**{**config, "patch_nums": tuple(vqvae.patch_nums)})
    copy_weights(model, pipe.transformer, args.model)
    out = VARPipeline(transformer=model, vqvae=vqvae, text_encoder=pipe.text_encoder.float())
    if args.fp16:
        out = out.to(torch.float16)
    with replace_dir_atomic(args.out) as tmp:
        out.save_pretrained(tmp)
    print(f"wrote {args.out}: {vqvae.config.sample_size}², scales {list(vqvae.patch_nums)} ({model.seq_len} tokens)")
    return Path(args.out)


if __name__ == "__main__":
    main()
