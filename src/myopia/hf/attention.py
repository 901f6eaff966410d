"""Myopic gradients for Hugging Face causal LMs, through transformers' public attention interface.

``apply(model, gradient="myopic")`` registers one attention function under the name ``"myopia"`` with
``transformers.AttentionInterface`` (and the matching mask builder with ``AttentionMaskInterface``) and switches
the model to it with ``model.set_attn_implementation("myopia")``. Every architecture whose attention layers
dispatch through ``ALL_ATTENTION_FUNCTIONS`` (GPT-2, GPT-NeoX/Pythia, Llama, Mistral, Qwen2, ...) is covered
without touching model code. The function receives the layer's post-RoPE ``query`` (B, H, T, D) and
``key``/``value`` (B, H_kv, T, D); grouped-query key/value heads go to :func:`myopia.attention.myopic_attention`'s
fused, memory-linear path unrepeated (the kernels share them between query heads; the baselines repeat them).

Gradient settings (the forward value equals the model's ordinary one except for ``bigram``):

- ``vanilla``: :func:`apply` restores the implementation the model had before (``sdpa``, ``eager``, ...).
- ``myopic`` (with ``beta``/``horizon``): strict myopia; query i reads earlier keys/values as constants.
- ``myopic-hidden``: the attention *input* (the normalised residual stream) of earlier positions is a
  constant, the projections are live. A forward pre-hook on each attention layer first runs the layer with its
  parameters detached (``torch.func.functional_call``) up to the attention function, which captures q, k, v
  (gradient into the input only) and stops the pass; the real pass then runs on the detached input (gradient
  into the parameters only). :func:`myopia.attention.myopic_attention_split` combines the two copies. Extra
  cost: the q/k/v projections (and RoPE) run twice in the forward pass.
- ``bigram``: earlier keys/values replaced by zeros (the transformer-bigram baseline; forward differs).

Padded batches, packed sequences (the block-diagonal masks transformers builds from ``position_ids``), sliding
windows shorter than the sequence (Mistral, Gemma 2's local layers), logit soft-capping (Gemma 2) and additive
position biases (``position_bias``) train in :mod:`myopia.masked_attention`'s exact masked path; plain causal
batches keep the fused path. Refused with a one-line :class:`MyopiaError` when a gradient is required: a
key/value cache longer than the query, attention dropout, attention sinks (``s_aux``), non-causal attention.
Without a gradient (evaluation, ``generate``) the layer runs ordinary (sdpa) attention, which gives the same
values (soft-capped layers, which sdpa cannot run, use the masked path's forward).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..arms import GRADIENTS, GradientSetting
from ..attention import attend
from ..errors import MyopiaError
from ..masked_attention import AttentionStructure

ATTN_NAME = "myopia"

__all__ = ["apply", "ATTN_NAME", "GRADIENTS", "MyopiaSettings", "attention_modules", "current_gradient"]


@dataclass
class MyopiaSettings:
    """What the registered attention function does; one object shared by all attention layers of a model.

    ``setting`` is the gradient setting (:class:`myopia.arms.GradientSetting`). ``past_kv`` (one (k, v) per
    layer, each (B, H_kv, T, D)) makes query i read positions j < i from it
    (the local-myopia-bonus trainee); ``kv_out`` collects each layer's (k, v). Both are set transiently by
    :class:`myopia.hf.model.HFCausalLM`.
    """

    setting: GradientSetting = GradientSetting("myopic")
    original: str = "sdpa"
    past_kv: list | None = None
    kv_out: list | None = None


class _Captured(Exception):
    """Raised by the attention function to end the capture pass of ``myopic-hidden``; ``args[0]`` holds the
    captured (q, k, v). (No ``__init__`` of its own: Dynamo traces raising and catching it.)"""


# --------------------------------------------------------------------------------------------------------------
# Registration and switching
# --------------------------------------------------------------------------------------------------------------


TRANSFORMERS_FLOOR = (5, 24)  # the oldest release the tests pass with (pyproject's range; .ci/run tests it)


def _check_transformers() -> None:
    """One clear line instead of a confusing failure deep inside transformers when it is older than the floor."""
    import transformers

    parts = []
    for piece in transformers.__version__.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < TRANSFORMERS_FLOOR:
        raise MyopiaError(f"myopia.hf needs transformers >= {'.'.join(map(str, TRANSFORMERS_FLOOR))} (installed "
                          f"{transformers.__version__}); pip install -e '.[hf]' installs a tested release")


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, myopia_attention_forward)
    # Same masks as sdpa: None for an unpadded causal batch, a boolean (B, 1, T, S) mask otherwise.
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention layers of a transformers model (modules named ``*Attention`` with a ``layer_idx``)."""
    return [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


def apply(model, gradient: str | GradientSetting = "myopic", beta: float = 0.0, horizon: int = 0):
    """Make a transformers causal LM train with the given gradient setting; returns ``model`` (changed in place).

    ``gradient="vanilla"`` restores the model's original attention implementation exactly. A PEFT-wrapped model
    (LoRA, ...) is switched through its base model and returned as it is. Raises :class:`MyopiaError` for models
    whose attention layers do not use transformers' attention interface.
    """
    setting = GradientSetting().switch(gradient, beta, horizon)
    if setting.kind == "vanilla":
        _uninstall(transformers_model(model))
        return model
    install(transformers_model(model), MyopiaSettings(setting))
    return model


def transformers_model(model):
    """The transformers model inside a PEFT wrapper (LoRA, prefix tuning, ...: ``model.get_base_model()``), or
    ``model`` itself. The adapters live inside the base model's layers, so they train under the same setting."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def current_gradient(model) -> str:
    """The gradient setting a transformers model currently trains with (``vanilla`` if never applied)."""
    model = transformers_model(model)
    settings = getattr(model, "_myopia", None)
    if settings is None or getattr(model.config, "_attn_implementation", None) != ATTN_NAME:
        return "vanilla"
    return settings.setting.kind


def install(model, settings: MyopiaSettings) -> MyopiaSettings:
    """Route ``model``'s attention through the myopia function with ``settings`` (``vanilla`` allowed here:
    it then runs ordinary sdpa attention, which lets :class:`HFCausalLM` collect or replace keys/values)."""
    from transformers import PreTrainedModel

    _check_transformers()
    if not isinstance(model, PreTrainedModel):
        raise MyopiaError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    settings.setting.validate()
    layers = attention_modules(model)
    if not layers:
        raise MyopiaError(f"{type(model).__name__}: found no attention layers (modules named *Attention)")
    for m in layers:
        if getattr(m, "is_cross_attention", False) or getattr(m, "is_causal", True) is False:
            raise MyopiaError(f"{type(model).__name__}: myopic attention supports causal self-attention only")
    _register()
    previous = getattr(model, "_myopia", None)
    current = model.config._attn_implementation
    settings.original = previous.original if previous is not None and current == ATTN_NAME else current
    if current != ATTN_NAME:
        model.set_attn_implementation(ATTN_NAME)
        if model.config._attn_implementation != ATTN_NAME:
            raise MyopiaError(
                f"{type(model).__name__} does not dispatch attention through transformers' AttentionInterface; "
                "myopic gradients are not available for it"
            )
    model._myopia = settings
    for m in layers:
        m._myopia = settings
        m._myopia_phase = None
        m._myopia_captured = None
        if not hasattr(m, "_myopia_hooks"):
            m._myopia_hooks = (
                m.register_forward_pre_hook(_hidden_pre_hook, with_kwargs=True),
                m.register_forward_hook(_hidden_post_hook, always_call=True),
            )
    return settings


def _uninstall(model) -> None:
    settings = getattr(model, "_myopia", None)
    if settings is None:
        return
    if model.config._attn_implementation == ATTN_NAME:
        model.set_attn_implementation(settings.original)
    for m in attention_modules(model):
        for h in getattr(m, "_myopia_hooks", ()):
            h.remove()
        for name in ("_myopia", "_myopia_hooks", "_myopia_phase", "_myopia_captured"):
            m.__dict__.pop(name, None)
    model.__dict__.pop("_myopia", None)


# --------------------------------------------------------------------------------------------------------------
# Hidden-state myopia: a capture pass with detached parameters, then the real pass on a detached input
# --------------------------------------------------------------------------------------------------------------


def _hidden_pre_hook(module, args, kwargs):
    settings = getattr(module, "_myopia", None)
    if settings is None or not settings.setting.hidden or settings.past_kv is not None:
        return None
    if module._myopia_phase is not None or not torch.is_grad_enabled():
        return None  # the capture pass itself (functional_call re-enters the hook), or evaluation
    from transformers.cache_utils import Cache

    in_kwargs = "hidden_states" in kwargs
    x = kwargs["hidden_states"] if in_kwargs else (args[0] if args else None)
    if not isinstance(x, torch.Tensor):
        raise MyopiaError(f"{type(module).__name__}: cannot find the attention input (hidden_states) for myopic-hidden")
    no_cache_args = tuple(None if isinstance(a, Cache) else a for a in args)
    no_cache_kwargs = {k: (None if isinstance(v, Cache) else v) for k, v in kwargs.items()}
    frozen = {name: t.detach() for name, t in module.named_parameters()}
    module._myopia_phase = "capture"
    try:
        torch.func.functional_call(module, frozen, no_cache_args, no_cache_kwargs, strict=False)
    except _Captured as captured:
        module._myopia_captured = captured.args[0]
    except BaseException:
        module._myopia_phase = None
        raise
    else:
        module._myopia_phase = None
        raise MyopiaError(f"{type(module).__name__}: its forward did not reach the attention function; "
                          "myopic-hidden is not available for this architecture")
    module._myopia_phase = "use"
    if in_kwargs:
        return args, {**kwargs, "hidden_states": x.detach()}
    return (x.detach(), *args[1:]), kwargs


def _hidden_post_hook(module, args, kwargs_or_output, output=None):
    if getattr(module, "_myopia_phase", None) == "use":
        module._myopia_phase = None
        module._myopia_captured = None


# --------------------------------------------------------------------------------------------------------------
# The registered attention function
# --------------------------------------------------------------------------------------------------------------


def _ordinary_attention(module, query, key, value, attention_mask, **kwargs):
    """Ordinary attention for the masks our mask builder makes (sdpa's: None = causal, else boolean)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _same_dtype(*tensors):
    """One dtype for q, k, v: the autocast dtype inside autocast (what sdpa would run in; RoPE can promote q, k
    to float32 while v stays bfloat16), else the query's."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = tensors[0].dtype
    return tuple(t.to(dtype) for t in tensors)


def _require_whole_causal_call(module, query, key, attention_mask, dropout, kwargs,
                               what: str) -> tuple[str, int, int]:
    """What every exact path needs of a call: the whole sequence at once, no dropout, causal. Returns (layer name,
    T, S)."""
    name = type(module).__name__
    T, S = query.shape[-2], key.shape[-2]
    if S != T:
        raise MyopiaError(f"{name}: {what} needs the whole sequence in one call (query length {T}, key length {S}); "
                          "call the model with use_cache=False and no past key values")
    if dropout and float(dropout) > 0:
        raise MyopiaError(f"{name}: attention dropout p={dropout} is not supported by {what}; set the config's "
                          "attention dropout (attn_pdrop / attention_dropout) to 0")
    if kwargs.get("is_causal") is False and not _mask_within_causal(attention_mask, T, S):
        raise MyopiaError(f"{name}: non-causal attention is not supported by {what}")
    return name, T, S


def _mask_within_causal(attention_mask, T: int, S: int) -> bool:
    """Whether ``attention_mask`` allows no key after its query (a causal mask, possibly padded or packed).

    Some transformers releases (4.55-4.57 for GPT-2) pass a causal boolean mask together with ``is_causal=False``;
    the mask, not the flag, says what the call attends to. No mask with ``is_causal=False`` is bidirectional.
    """
    if attention_mask is None:
        return False
    allowed = attention_mask if attention_mask.dtype == torch.bool else \
        attention_mask > torch.finfo(attention_mask.dtype).min / 2
    if allowed.shape[-2:] != (T, S):
        return False
    future = torch.ones(T, S, dtype=torch.bool, device=allowed.device).triu(S - T + 1)
    if torch.compiler.is_compiling():
        torch._assert_async(~(allowed & future).any(), "non-causal attention mask in myopic training")
        return True
    return not bool((allowed & future).any())


def _require_causal_batch(module, query, key, attention_mask, dropout, kwargs, what: str) -> None:
    name, T, S = _require_whole_causal_call(module, query, key, attention_mask, dropout, kwargs, what)
    for key_name in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(key_name) is not None:
            raise MyopiaError(f"{name}: attention with {key_name} is not supported by {what}")
    window = kwargs.get("sliding_window")
    if window is not None and T > int(window):
        raise MyopiaError(f"{name}: sequence length {T} exceeds the sliding window {window}; {what} supports full "
                          "causal attention only")
    if attention_mask is not None:
        message = (f"{name}: {what} needs unpadded causal batches; this batch has padding or a packed-sequence "
                   "mask (pack documents into full windows, or evaluate under no_grad)")
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        if allowed.shape[-2:] != (T, S):
            raise MyopiaError(message)
        causal = torch.ones(T, S, dtype=torch.bool, device=allowed.device).tril(S - T)
        if torch.compiler.is_compiling():  # inside a graph: the check runs on the device, no host sync
            torch._assert_async((allowed == causal).all(), message)
        elif not _mask_checked(attention_mask):  # all layers share one mask: one host sync per forward pass
            if not bool((allowed == causal).all()):
                raise MyopiaError(message)
            _mask_checked.last = weakref.ref(attention_mask)


def _mask_checked(mask: torch.Tensor) -> bool:
    last = _mask_checked.last
    return last is not None and last() is mask


_mask_checked.last = None


def _masked_structure(module, query, key, attention_mask, dropout, kwargs, what: str):
    """``(structure, bias)`` of this call for :mod:`myopia.masked_attention`, or ``(None, None)`` for a plain
    causal batch (the fused path). Refuses what no exact path covers, in one line naming the layer."""
    name, T, S = _require_whole_causal_call(module, query, key, attention_mask, dropout, kwargs, what)
    if kwargs.get("s_aux") is not None:
        raise MyopiaError(f"{name}: attention with sinks (s_aux) is not supported by {what}")
    softcap, bias = kwargs.get("softcap"), kwargs.get("position_bias")
    window = kwargs.get("sliding_window")
    window = int(window) if window is not None and T > int(window) else None
    mask = None
    if attention_mask is not None and torch.compiler.is_compiling():
        # inside a graph there is no data-dependent branch: compiled training takes unpadded causal batches
        # (checked on the device, no host sync); masks train eagerly (the masked path is not traceable)
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        causal = torch.ones(T, S, dtype=torch.bool, device=allowed.device).tril(S - T)
        torch._assert_async((allowed == causal).all(), f"{name}: compiled {what} needs unpadded causal batches")
    elif attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            allowed = attention_mask
        else:  # an additive float mask: -inf/min off the allowed edges, any other value a bias on them
            allowed = attention_mask > torch.finfo(attention_mask.dtype).min / 2
            extra = torch.where(allowed, attention_mask, torch.zeros_like(attention_mask))
            if bool(extra.ne(0).any()):
                bias = extra if bias is None else bias + extra
        if allowed.dim() != 4 or allowed.shape[-2:] != (T, S):
            raise MyopiaError(f"{name}: attention mask of shape {tuple(allowed.shape)} does not match the query and "
                              f"key lengths ({T}, {S})")
        if not _mask_checked(attention_mask):  # all layers share one mask: one host sync per forward pass
            causal = torch.ones(T, S, dtype=torch.bool, device=allowed.device).tril(S - T)
            if bool((allowed == causal).all()):
                _mask_checked.last = weakref.ref(attention_mask)
            else:
                mask = allowed
    if softcap is None and bias is None and window is None and mask is None:
        return None, None
    return AttentionStructure(window=window, mask=mask, softcap=softcap), bias


def myopia_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The function registered as ``"myopia"``: ``(B, H, T, D)`` inputs -> ``((B, T, H, D), None)``."""
    settings = getattr(module, "_myopia", None)
    if settings is None:
        raise MyopiaError(f"{type(module).__name__} uses attn_implementation='myopia' without settings; "
                          "call myopia.hf.apply(model, gradient=...) to switch it")
    phase = getattr(module, "_myopia_phase", None)
    if phase == "capture":
        raise _Captured((query, key, value))
    if settings.kv_out is not None:
        settings.kv_out.append((key.detach(), value.detach()))
    setting = settings.setting

    if settings.past_kv is not None or setting.kind == "bigram":
        what = "the bigram baseline" if settings.past_kv is None else "attention to a given past"
        _require_causal_batch(module, query, key, attention_mask, dropout, kwargs, what)
        query, key, value = _same_dtype(query, key, value)
        past = None if settings.past_kv is None else _given_past(module, settings, key, value, query.dtype)
        return attend(query, key, value, setting, past=past, scale=scaling).transpose(1, 2).contiguous(), None

    live = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if (setting.kind == "vanilla" or not live) and kwargs.get("softcap") is None:
        # same values: the ordinary (sdpa) attention on sdpa's masks
        return _ordinary_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                   **kwargs)

    structure, bias = _masked_structure(module, query, key, attention_mask, dropout, kwargs,
                                        f"{setting.kind} training")
    query, key, value = _same_dtype(query, key, value)
    if not live:  # a soft-capped layer without a gradient: the masked path's (vanilla) forward
        setting = GradientSetting()
    if bias is not None:
        bias = bias.to(query.dtype)
    split = None
    if setting.hidden:
        q_x, k_x, v_x = _take_captured(module, phase)
        query = query + (q_x - q_x.detach())  # value of the real pass; gradient into the input via q_x
        split = (k_x, v_x)
    # documents, padding, windows, soft-caps, biases go to the exact masked kernels; grouped-query heads unrepeated
    out = attend(query, key, value, setting, structure=structure, bias=bias, split=split, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _given_past(module, settings, key, value, dtype):
    """This layer's (past_k, past_v) from ``settings.past_kv``, checked against the live keys/values."""
    past_k, past_v = settings.past_kv[module.layer_idx]
    if past_k.shape != key.shape or past_v.shape != value.shape:
        raise MyopiaError(f"past keys/values of layer {module.layer_idx} have shape {tuple(past_k.shape)}, "
                          f"expected {tuple(key.shape)}")
    return past_k.to(dtype), past_v.to(dtype)


def _take_captured(module, phase):
    """The (q, k, v) of the ``myopic-hidden`` capture pass (gradient into the input only), used once."""
    if phase != "use" or module._myopia_captured is None:
        raise MyopiaError(f"{type(module).__name__}: the myopic-hidden capture pass did not run "
                          "(was the attention layer called through its module?)")
    captured = _same_dtype(*module._myopia_captured)
    module._myopia_captured = None
    return captured
