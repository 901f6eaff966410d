"""The gradient settings a model trains with, and the arms every result reports side by side (one home for both).

- ``vanilla``: ordinary training; every position's loss reaches the computation at every earlier position.
- ``myopic`` (strict): to query *i*, the keys and values of every earlier position are constants, so no loss
  reaches an earlier position's computation, and W_K, W_V learn only from each position's own key and value.
- ``myopic-hidden``: to query *i*, the attention *input* (the normalised residual stream) of earlier positions is
  a constant, while W_K, W_V act on it live: they still learn to read the past. The primary measure of
  pre-caching.
- ``bigram``: keys and values of earlier positions are zeros, the past cannot be read (a no-context baseline;
  its forward pass differs by design).

The forward pass of ``vanilla``, ``myopic`` and ``myopic-hidden`` is the same; only the gradient differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MyopiaError

GRADIENTS = ("vanilla", "myopic", "myopic-hidden", "bigram")
REFERENCE = "vanilla"  # every gap is an arm's loss minus this arm's loss
MYOPIC_ARMS = ("myopic", "myopic-hidden")  # every myopic number is reported beside its hidden-state twin
PAIR_ARMS = (REFERENCE, *MYOPIC_ARMS)  # the arms of a pair / finetune directory
PRIMARY_FIRST = ("myopic-hidden", "myopic")  # display order where one is read first: the primary measure first

__all__ = ["GRADIENTS", "REFERENCE", "MYOPIC_ARMS", "PAIR_ARMS", "PRIMARY_FIRST", "GradientSetting"]

_NAME = re.compile(r"^(myopic-hidden|myopic)(?:-horizon(\d+))?(?:-beta(\d+(?:\.\d+)?))?$")
_NAMES_HELP = "vanilla, myopic, myopic-hidden, bigram, myopic-beta0.5, myopic-horizon8 or myopic-hidden-horizon8"


@dataclass(frozen=True)
class GradientSetting:
    """One gradient setting: ``kind`` (one of :data:`GRADIENTS`), ``beta`` in [0, 1] (weight of the off-band
    past's gradient) and ``horizon`` >= 0 (earlier positions that get the full gradient); see the module doc.

    The one home of their validation (at construction, so a setting in hand is valid) and of their names:
    ``GradientSetting.parse("myopic-hidden-horizon8").name == "myopic-hidden-horizon8"``. Configs keep the
    three as flat fields ``gradient``, ``beta``, ``horizon`` (:meth:`to_dict`, :meth:`from_dict`).
    """

    kind: str = REFERENCE
    beta: float = 0.0
    horizon: int = 0

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "beta", float(self.beta))

    def validate(self) -> "GradientSetting":
        """Refuse a kind outside :data:`GRADIENTS`, ``beta`` outside [0, 1] or a negative ``horizon`` with one
        :class:`MyopiaError` line naming the field; returns the setting."""
        if self.kind not in GRADIENTS:
            raise MyopiaError(f"gradient must be one of {', '.join(GRADIENTS)}; got {self.kind!r}")
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= float(beta) <= 1.0:
            raise MyopiaError(f"beta must lie in [0, 1], got {beta!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 0:
            raise MyopiaError(f"horizon must be an integer >= 0, got {self.horizon!r}")
        return self

    @classmethod
    def parse(cls, name: str) -> "GradientSetting":
        """The setting a run/arm name stands for: ``vanilla``, ``bigram``, ``myopic`` or ``myopic-hidden``, the
        myopic ones with an optional ``-horizonN`` and/or ``-betaX`` (in that order)."""
        name = str(name).strip()
        if name in (REFERENCE, "bigram"):
            return cls(name)
        m = _NAME.match(name)
        if not m:
            raise MyopiaError(f"unknown arm {name!r}: use {_NAMES_HELP}")
        kind, horizon, beta = m.groups()
        return cls(kind, beta=float(beta) if beta is not None else 0.0,
                   horizon=int(horizon) if horizon is not None else 0)

    @property
    def name(self) -> str:
        """The run/arm name of this setting (inverse of :meth:`parse`): ``vanilla``, ``myopic-beta0.5``, ..."""
        if self.kind not in MYOPIC_ARMS:
            return self.kind
        return (self.kind + (f"-horizon{self.horizon}" if self.horizon else "")
                + (f"-beta{self.beta:g}" if self.beta else ""))

    @property
    def hidden(self) -> bool:
        """True for ``myopic-hidden``: the attention input, not the keys/values, is constant to later queries."""
        return self.kind == "myopic-hidden"

    def switch(self, kind: "str | GradientSetting", beta: float | None = None,
               horizon: int | None = None) -> "GradientSetting":
        """The setting ``set_gradient(kind, beta, horizon)`` asks for: ``kind`` itself when it is a setting, else
        this one with ``kind`` and whichever of ``beta``/``horizon`` is given."""
        if isinstance(kind, GradientSetting):
            return kind
        return GradientSetting(kind, self.beta if beta is None else beta,
                               self.horizon if horizon is None else horizon)

    def to_dict(self) -> dict:
        """The flat fields configs and result files store: ``{"gradient", "beta", "horizon"}``."""
        return {"gradient": self.kind, "beta": self.beta, "horizon": self.horizon}

    @classmethod
    def from_dict(cls, d: dict) -> "GradientSetting":
        """The setting of a dict with the flat fields ``gradient``, ``beta``, ``horizon`` (missing ones default)."""
        return cls(d.get("gradient", REFERENCE), d.get("beta", 0.0), d.get("horizon", 0))
