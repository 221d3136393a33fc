"""The perturbation protocol.

A perturbation is applied to a trained model and its dataset at inference. ``apply`` returns a
:class:`PerturbedView` (a model and dataset to evaluate, plus details worth recording); it never
mutates its inputs, takes all randomness from the generator it is given, and severity 0 is the
identity. Perturbations compose with :class:`Compose`.

A suite is one :class:`Perturbation` subclass plus its line in :data:`PERTURBATIONS`. The class says
everything the audit and the CLI need to know about it, so neither switches on suite names:

- ``default_severity`` and ``severity_name`` (what the severity measures, recorded with each result);
- ``summary``: one line for ``robustrec audit --help`` and ``robustrec list suites``;
- its options: the typed keyword constructor parameters after ``severity``, each with a default
  (:meth:`Perturbation.options`; ``--suite-param KEY=VALUE`` parses them by their annotations);
- :meth:`Perturbation.prepare`: objects it needs that are not settings (a caption source, a text
  encoder), taken from the :class:`SuiteContext` the audit builds per dataset.

A new suite, e.g. in ``perturbations/dropout.py`` (imported by ``perturbations/__init__.py``)::

    @PERTURBATIONS.register("item-dropout")
    class ItemDropout(Perturbation):
        name = "item-dropout"
        severity_name = "prob"
        default_severity = 0.1
        summary = "zeroes each item's embedding row with probability p"

        def __init__(self, severity: float = 0.1, table: Literal["items", "all"] = "items") -> None: ...
        def apply(self, model, dataset, generator) -> PerturbedView: ...

``robustrec audit RUN --suite item-dropout --severity 0.1,0.3 --suite-param table=all`` then runs it;
tests/perturbations/test_audit_cli.py does exactly this with a suite defined in the test.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from robustrec.data.dataset import Dataset
from robustrec.errors import ConfigError
from robustrec.hparams import accepted
from robustrec.models.base import Recommender
from robustrec.registry import Registry

#: Returns the caption of each requested item index (an item it cannot caption may be left out).
CaptionSource = Callable[[Sequence[int]], dict[int, str]]


class SuiteContext:
    """What an audit hands every suite besides its options (see :meth:`Perturbation.prepare`).

    These are objects, not settings: they are neither CLI options nor part of the audit's config
    digest. The audit builds one context per dataset. ``captions_factory(dataset)`` is called only
    when a suite asks for captions, so a suite that needs none never builds a captioner.
    """

    def __init__(self, dataset: Dataset, captions_factory: Callable[[Dataset], CaptionSource] | None = None,
                 text_encoder: Any = None) -> None:
        self.dataset = dataset
        self.captions_factory = captions_factory
        self.text_encoder = text_encoder
        self._captions: CaptionSource | None = None

    def caption_source(self) -> CaptionSource:
        """The dataset's captions by item index; ConfigError when the audit was given no captioner."""
        if self._captions is None:
            if self.captions_factory is None:
                raise ConfigError("this suite needs a caption source (a captioner or a captions file)")
            self._captions = self.captions_factory(self.dataset)
        return self._captions


@dataclass(frozen=True)
class PerturbedView:
    model: Recommender
    dataset: Dataset
    details: dict[str, Any] = field(default_factory=dict)


class Perturbation:
    name: ClassVar[str] = ""
    #: What the severity measures, e.g. "sigma2", "scale" or "prob" (recorded with the results). An
    #: instance may set its own when an option changes the meaning (see :meth:`severity_name_for`).
    severity_name: str = "severity"
    #: The severity an audit uses when given none.
    default_severity: ClassVar[float] = 0.0
    #: One line for ``robustrec audit --help`` and ``robustrec list suites``.
    summary: ClassVar[str] = ""

    def __init__(self, severity: float) -> None:
        # NaN and infinity are refused: an infinite noise variance, say, yields NaN scores and so
        # made-up metrics, and records that JSON cannot hold
        if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not math.isfinite(severity):
            raise ConfigError(f"{self.name}: severity must be a finite number, got {severity!r}")
        self.severity = float(severity)

    # ---- what the suite declares (read without making one) ------------------------------------------------
    @classmethod
    def options(cls) -> dict[str, inspect.Parameter]:
        """The suite's options: its keyword constructor parameters after ``severity``."""
        return {name: p for name, p in accepted(cls).items() if name != "severity"}

    @classmethod
    def severity_name_for(cls, params: Mapping[str, Any]) -> str:
        """What the severity measures under the options ``params`` (most suites: always the same)."""
        return cls.severity_name

    @classmethod
    def default_severity_for(cls, params: Mapping[str, Any]) -> float:
        """The default severity under the options ``params``."""
        return cls.default_severity

    @classmethod
    def severity_names(cls) -> tuple[str, ...]:
        """Every name :meth:`severity_name_for` can give (the CLI makes a flag of each)."""
        return (cls.severity_name,)

    @classmethod
    def severity_help(cls) -> str:
        """What the severity is and its default, for ``--severity``'s help."""
        return f"{cls.severity_name} (default {cls.default_severity:g})"

    # ---- what an audit calls ----------------------------------------------------------------------------------
    def prepare(self, context: SuiteContext) -> Perturbation:
        """Take what the suite needs from ``context`` (before :meth:`check`); returns ``self``."""
        return self

    def check(self, model: Recommender, dataset: Dataset) -> None:
        """Raise ConfigError when this perturbation cannot apply to ``model`` (before any work)."""

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The settings recorded with every result."""
        return {"suite": self.name, self.severity_name: self.severity}


class Compose(Perturbation):
    """Apply perturbations in order; each sees the previous one's view."""

    name = "compose"

    def __init__(self, parts: list[Perturbation]) -> None:
        if not parts:
            raise ConfigError("compose needs at least one perturbation")
        super().__init__(max(p.severity for p in parts))
        self.parts = parts

    def prepare(self, context: SuiteContext) -> Compose:
        for part in self.parts:
            part.prepare(context)
        return self

    def check(self, model: Recommender, dataset: Dataset) -> None:
        for part in self.parts:
            part.check(model, dataset)

    def apply(self, model: Recommender, dataset: Dataset, generator: torch.Generator) -> PerturbedView:
        details: dict[str, Any] = {}
        for part in self.parts:
            view = part.apply(model, dataset, generator)
            model, dataset = view.model, view.dataset
            details[part.name] = view.details
        return PerturbedView(model, dataset, details)

    def describe(self) -> dict[str, Any]:
        return {"suite": "+".join(p.name for p in self.parts), "parts": [p.describe() for p in self.parts]}


PERTURBATIONS: Registry[Perturbation] = Registry("suite")
