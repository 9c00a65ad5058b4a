"""VAR: next-scale prediction over a multi-scale residual VQ-VAE (``vqvae``, ``quant``) with a scale-causal
transformer (``var``) on softmax or the core's block-causal linear attention."""
