"""Loss landscapes (Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018).

A random direction is drawn per parameter and *filter-normalised*: each row of a matrix (a user's or
an item's embedding, a linear layer's output unit) is rescaled to the norm of the same row of theta,
so a step of 1 along the direction moves every row by its own size, whatever the model's scale.
Vectors (biases) get a zero direction, as in the paper. The 1-D landscape is L(theta + a d), the 2-D
one L(theta + a d1 + b d2), on a grid of a, b in [-span, span]; the interpolation between two runs of
the same model is L((1 - t) theta_A + t theta_B).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from robustrec.diagnostics.objective import Tensors, TrainingLoss


def filter_normalised_direction(params: Sequence[torch.Tensor], generator: torch.Generator) -> Tensors:
    """A Gaussian direction with each row scaled to the norm of theta's row (zero for vectors)."""
    direction = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if p.dim() < 2:
            d.zero_()
        else:
            rows = d.reshape(p.shape[0], -1)
            target = p.detach().reshape(p.shape[0], -1).to("cpu", torch.float64).norm(dim=1, keepdim=True)
            rows.mul_(target / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))
        direction.append(d.to(p.device, p.dtype))
    return direction


def grid(points: int, span: float) -> list[float]:
    """``points`` evenly spaced values from -span to span (0 among them when ``points`` is odd)."""
    if points == 1:
        return [0.0]
    return [-span + 2 * span * i / (points - 1) for i in range(points)]


def landscape_1d(objective: TrainingLoss, direction: Sequence[torch.Tensor], points: int = 21,
                 span: float = 1.0, on_point: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """(a values, L(theta + a d) values)."""
    xs = grid(points, span)
    ys = []
    for a in xs:
        with objective.displaced(direction, a):
            ys.append(objective.value())
        if on_point:
            on_point()
    return xs, ys


def landscape_2d(objective: TrainingLoss, first: Sequence[torch.Tensor], second: Sequence[torch.Tensor],
                 points: int = 21, span: float = 1.0, on_point: Callable[[], None] | None = None,
                 ) -> tuple[list[float], list[float], list[list[float]]]:
    """(a values, b values, z) with z[j][i] = L(theta + a_i d1 + b_j d2)."""
    xs = grid(points, span)
    z = []
    for b in xs:
        row = []
        for a in xs:
            with objective.placed([p.detach() + a * d1 + b * d2 for p, d1, d2 in zip(objective.params, first, second)]):
                row.append(objective.value())
            if on_point:
                on_point()
        z.append(row)
    return xs, list(xs), z


def interpolation_grid(points: int, margin: float = 0.25) -> list[float]:
    """``points`` values from 0 to 1, extended at the same spacing by about ``margin`` on each side."""
    extra = round(margin * (points - 1))
    return [(i - extra) / (points - 1) for i in range(points + 2 * extra)]


def interpolation(objective: TrainingLoss, other: Sequence[torch.Tensor], points: int = 21, margin: float = 0.25,
                  on_point: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """(t values, L((1 - t) theta + t other)): ``points`` values of t from 0 (this run) to 1 (the other),
    extended at the same spacing by about ``margin`` on each side."""
    ts = interpolation_grid(points, margin)
    start = [p.detach().clone() for p in objective.params]
    ys = []
    for t in ts:
        with objective.placed([(1 - t) * a + t * b for a, b in zip(start, other)]):
            ys.append(objective.value())
        if on_point:
            on_point()
    return ts, ys
