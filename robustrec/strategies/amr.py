"""Adversarial Multimedia Recommendation (Tang et al., TKDE 2019): AMR's objective.

On every batch the item features f (by modality, the tensors ``model.adversarial_inputs()``
returns; by default the image features only, as in the paper) get the fast-gradient perturbation

    delta_i = eps * s * g_i / ||g_i||,   g = dL_data(f) / df,

normalised per item (row) in L2 and detached (no gradient flows through delta), and the model
minimises

    L_data(f) + lambda * L_data(f + delta) + R,

where L_data is the model's data term and R its weight regulariser
(:meth:`~robustrec.models.base.Recommender.loss_terms`): the regulariser is counted once, as in the
paper (L_BPR(f) + lambda L_BPR(f + delta) + L2) and its reference code, so that with eps = 0 the
objective is (1 + lambda) L_data + R, not (1 + lambda) times the plain loss.

Only rows whose loss gradient is non-zero move (for VBPR: the items of the batch); rows with a zero
gradient get a zero perturbation. The clean and the adversarial pass draw the same model randomness
(dropout masks), see :mod:`robustrec.strategies.replay`.

Departures from and choices beside the paper:

- ``modalities``: the paper perturbs VBPR's image features (its only content features), and so do
  we by default (``modalities=("image",)``), whatever else the model reads (MMRec's VBPR
  concatenates text and image). ``modalities=("text",)`` or ``("image", "text")`` choose others
  (each modality is normalised on its own); ``None`` perturbs every modality the model exposes. A
  model without the chosen features (e.g. a text-only dataset under the default) is a ConfigError in
  :meth:`AMR.setup` that says which modalities it has (``--strategy-param modalities=text``): we do
  not fall back silently to another modality, since that would be another experiment.
- Scale of eps (``s`` above): the official code divides the features by their global maximum
  absolute value before training, so eps = 0.1 is measured in units of that maximum. We do not
  rescale the model's input; with ``eps_relative=True`` (default) ``s`` is the modality's global
  max |f|, which perturbs the features exactly as much, relative to their scale, as the paper
  does. ``eps_relative=False`` makes ``s = 1`` (eps in raw feature units). For raw (fixed) features
  -- VBPR, MMGCN, GRCN -- ``s`` is read once; for the learnable feature tables that BM3 and FREEDOM
  expose it is read at every step, so it follows them as they train (and a resume needs no state).
- The paper trains AMR from a pretrained VBPR; this objective starts from wherever the model is.
- The regulariser is the model's own (MMRec's, not necessarily an L2 norm of every parameter:
  e.g. VBPR's penalises the norms of the batch's rows), evaluated once at the clean features.
  The perturbation direction is the data term's gradient: a regulariser never sends gradient to
  the features (see ``LossTerms``).
"""

from __future__ import annotations

import torch

from robustrec import checks
from robustrec.data.dataset import MODALITIES
from robustrec.data.sampling import Batch
from robustrec.errors import ConfigError
from robustrec.strategies.base import Strategy
from robustrec.strategies.replay import rewinder


class AMR(Strategy):
    name = "amr"
    is_objective = True

    def __init__(
        self,
        eps: float = 0.1,
        amr_lambda: float = 1.0,
        modalities: tuple[str, ...] | None = ("image",),
        eps_relative: bool = True,
    ) -> None:
        eps = checks.non_negative(self.name, "eps", eps)
        amr_lambda = checks.non_negative(self.name, "amr_lambda", amr_lambda)
        eps_relative = checks.flag(self.name, "eps_relative", eps_relative)
        if modalities is not None:
            modalities = tuple(modalities)
            unknown = [m for m in modalities if m not in MODALITIES]
            if unknown or not modalities:
                raise ConfigError(
                    f"amr modalities must be a non-empty subset of {', '.join(MODALITIES)}, got {modalities}"
                )
        self.eps, self.amr_lambda = eps, amr_lambda
        self.modalities = modalities
        self.eps_relative = eps_relative
        self.perturbed: tuple[str, ...] = ()
        self._params: list[torch.nn.Parameter] = []
        self._fixed_scales: dict[str, float] = {}

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        inputs = model.adversarial_inputs()
        if not inputs:
            raise ConfigError(f"amr needs a model whose loss reads item features; {model.name!r} reads none")
        wanted = self.modalities if self.modalities is not None else tuple(inputs)
        missing = [m for m in wanted if m not in inputs]
        if missing:
            raise ConfigError(
                f"amr: model {model.name!r} has no {', '.join(missing)} features to perturb; "
                f"it exposes {', '.join(inputs)}: pass modalities={','.join(inputs)} "
                f"(--strategy-param modalities={','.join(inputs)})"
            )
        self.perturbed = wanted
        self._fixed_scales = {}
        self._params = [p for p in model.parameters() if p.requires_grad]

    def perturbation(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clean loss L_data(f) + R and the detached feature perturbations delta.

        One backward pass of the clean loss gives both its feature gradient (for delta) and its
        parameter gradient; the returned loss carries the latter (see :class:`CarryGradient`), so the
        objective's backward does not traverse the clean pass a second time."""
        inputs = self.model.adversarial_inputs()
        zeros = {m: torch.zeros_like(inputs[m], requires_grad=True) for m in self.perturbed}
        clean = self.model.loss(batch, perturb=zeros)
        grads = torch.autograd.grad(clean, [*zeros.values(), *self._params], allow_unused=True)
        deltas = {}
        for m, grad in zip(zeros, grads):
            if grad is None:
                raise RuntimeError(
                    f"{self.model.name}.loss ignores perturb[{m!r}] although it exposes {m} features"
                )
            with torch.no_grad():
                norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
                size = self.eps * self._scale(m, inputs[m])
                factor = torch.where(norms > 0, size / norms, 0.0)  # rows without a gradient stay put
                deltas[m] = grad * factor
        return CarryGradient.apply(clean.detach(), grads[len(zeros):], *self._params), deltas

    def _scale(self, modality: str, feature: torch.Tensor) -> float | torch.Tensor:
        """What eps is relative to: the global max |f| (read once for fixed features, per step for tables)."""
        if not self.eps_relative:
            return 1.0
        if feature.requires_grad:
            return feature.detach().abs().max()
        if modality not in self._fixed_scales:
            self._fixed_scales[modality] = float(feature.abs().max())
        return self._fixed_scales[modality]

    def objective(self, batch: Batch) -> torch.Tensor:
        rewind = rewinder(batch)
        clean, deltas = self.perturbation(batch)
        rewind()
        adversarial = self.model.loss_terms(batch, perturb=deltas).data  # the regulariser is in ``clean``
        return clean + self.amr_lambda * adversarial

    def label(self) -> str:
        return "AMR"


class CarryGradient(torch.autograd.Function):
    """``value`` unchanged, with the precomputed ``grads`` of ``params`` as its gradient.

    Back-propagating ``c * CarryGradient.apply(L.detach(), dL/dparams, *params)`` adds ``c * dL/dp`` to
    each parameter's gradient, as back-propagating ``c * L`` would, without the graph of ``L``."""

    @staticmethod
    def forward(ctx, value, grads, *params):
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, upstream):
        return (None, None, *(None if g is None else g * upstream for g in ctx.grads))
