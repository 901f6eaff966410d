"""Hugging Face models: myopic gradients for transformers causal LMs, a GPT-like wrapper, run loading, export.

- :func:`apply` (``myopia.hf.apply(model, gradient="myopic", beta=0.0, horizon=0)``): switch a transformers
  model's attention to myopic gradients (``"vanilla"`` restores the original attention).
- :class:`HFCausalLM`: a transformers model with the interface of :class:`myopia.model.GPT`.
- Run folders of either kind (ours, ``myopia finetune``) load with :func:`myopia.rundir.load_run`.
- :func:`myopia.hf.export.export_run`: our GPT runs as transformers GPT-NeoX models.

Importing this package does not import transformers; the functions do when called.
"""

from .attention import apply, current_gradient
from .model import HFCausalLM, load_hf_model

__all__ = ["apply", "current_gradient", "HFCausalLM", "load_hf_model"]
