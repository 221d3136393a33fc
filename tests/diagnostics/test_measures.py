"""Flatness measures against analytic values on a known quadratic loss, and landscape invariants."""

from __future__ import annotations

import pytest
import torch

from robustrec.diagnostics import (
    TrainingLoss,
    barrier,
    filter_normalised_direction,
    hessian_trace,
    interpolation,
    landscape_1d,
    landscape_2d,
    sharpness,
    top_eigenvalues,
)
from robustrec.diagnostics.landscape import grid, interpolation_grid
from tests.diagnostics.toy import Quadratic, spd_matrix

SPECTRUM = [6.0, 3.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001]


def quadratic(tiny, eigenvalues=SPECTRUM, linear=None, start=None):
    hessian = spd_matrix(eigenvalues, seed=4)
    b = torch.linspace(-1, 1, len(eigenvalues), dtype=torch.float64) if linear is None else linear
    model = Quadratic(tiny, hessian, b, rows=3, start=start)
    return TrainingLoss(model, tiny, batch_size=64, seed=1), hessian, b


def analytic_loss(hessian, b, x):
    return float(0.5 * x @ hessian @ x + b @ x)


def test_top_eigenvalues_match_the_analytic_ones(tiny):
    objective, _, _ = quadratic(tiny)
    found = top_eigenvalues(objective, k=3, steps=12, generator=torch.Generator().manual_seed(0))
    assert found == pytest.approx(SPECTRUM[:3], rel=1e-4)
    assert objective.hvp_method == "double-backward"


def test_a_few_lanczos_steps_already_find_the_top_eigenvalue(tiny):
    objective, _, _ = quadratic(tiny)
    found = top_eigenvalues(objective, k=1, steps=8, generator=torch.Generator().manual_seed(0))
    assert found[0] == pytest.approx(SPECTRUM[0], rel=1e-4)


def test_negative_curvature_is_reported_as_it_is(tiny):
    spectrum = [-2.0, -1.0, 0.5, 0.25, 0.1, 0.05]
    objective, _, _ = quadratic(tiny, spectrum)
    assert top_eigenvalues(objective, k=2, steps=6) == pytest.approx([0.5, 0.25], rel=1e-4)


def test_hutchinson_is_exact_on_a_diagonal_hessian_and_unbiased_otherwise(tiny):
    diagonal = torch.diag(torch.tensor(SPECTRUM, dtype=torch.float64))
    model = Quadratic(tiny, diagonal, torch.zeros(12, dtype=torch.float64))
    exact = hessian_trace(TrainingLoss(model, tiny, batch_size=64), samples=5)
    assert exact.value == pytest.approx(sum(SPECTRUM), rel=1e-12) and exact.stderr == pytest.approx(0.0, abs=1e-12)
    objective, hessian, _ = quadratic(tiny)
    estimate = hessian_trace(objective, samples=400, generator=torch.Generator().manual_seed(2))
    assert estimate.samples == 400 and estimate.stderr > 0
    assert abs(estimate.value - float(torch.trace(hessian))) < 4 * estimate.stderr


def test_sharpness_lies_between_sams_first_order_step_and_the_quadratic_bound(tiny):
    objective, hessian, b = quadratic(tiny)
    x = objective.params[0].detach().reshape(-1).clone()
    g = hessian @ x + b
    rho = 0.1
    first_order = analytic_loss(hessian, b, x + rho * g / g.norm()) - analytic_loss(hessian, b, x)
    bound = rho * float(g.norm()) + 0.5 * rho**2 * SPECTRUM[0]
    found = sharpness(objective, rho=rho, steps=5)
    assert first_order - 1e-12 <= found <= bound + 1e-12
    assert objective.params[0].detach().reshape(-1).equal(x)  # theta restored exactly


def test_the_gradient_and_value_are_the_analytic_ones(tiny):
    objective, hessian, b = quadratic(tiny)
    x = objective.params[0].detach().reshape(-1)
    loss, (grad,) = objective.gradient()
    assert loss == pytest.approx(analytic_loss(hessian, b, x), rel=1e-12)
    assert objective.value() == pytest.approx(loss, rel=1e-12)
    assert torch.allclose(grad.reshape(-1), hessian @ x + b, rtol=1e-12)


def test_directions_are_filter_normalised_and_the_same_for_the_same_seed(tiny):
    params = [torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), torch.ones(4)]
    first = filter_normalised_direction(params, torch.Generator().manual_seed(7))
    again = filter_normalised_direction(params, torch.Generator().manual_seed(7))
    other = filter_normalised_direction(params, torch.Generator().manual_seed(8))
    assert all(a.equal(b) for a, b in zip(first, again))
    assert not first[0].equal(other[0])
    assert torch.allclose(first[0].norm(dim=1), params[0].norm(dim=1), rtol=1e-6)
    assert first[1].eq(0).all()  # vectors (biases) do not move


def test_the_landscape_at_the_origin_is_the_loss_and_theta_is_left_alone(tiny):
    objective, hessian, b = quadratic(tiny)
    before = objective.params[0].detach().clone()
    d1 = filter_normalised_direction(objective.params, torch.Generator().manual_seed(0))
    d2 = filter_normalised_direction(objective.params, torch.Generator().manual_seed(1))
    xs, ys = landscape_1d(objective, d1, points=5, span=0.5)
    assert xs == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert ys[2] == objective.value()
    x = before.reshape(-1)
    assert ys[4] == pytest.approx(analytic_loss(hessian, b, x + 0.5 * d1[0].reshape(-1)), rel=1e-12)
    ax, by, z = landscape_2d(objective, d1, d2, points=3, span=1.0)
    assert ax == by == [-1.0, 0.0, 1.0] and z[1][1] == objective.value()
    point = x + 1.0 * d1[0].reshape(-1) - 1.0 * d2[0].reshape(-1)
    assert z[0][2] == pytest.approx(analytic_loss(hessian, b, point), rel=1e-12)  # z[row b][column a]
    assert objective.params[0].detach().equal(before)


def test_interpolation_passes_through_both_runs(tiny):
    objective, hessian, b = quadratic(tiny)
    other = torch.full((3, 4), -0.5, dtype=torch.float64)
    ts, ys = interpolation(objective, [other], points=5, margin=0.25)
    assert ts == interpolation_grid(5, 0.25) == [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert ys[1] == pytest.approx(objective.value(), rel=1e-12)
    assert ys[5] == pytest.approx(analytic_loss(hessian, b, other.reshape(-1)), rel=1e-12)


def test_barrier_is_the_excess_over_the_chord():
    assert barrier([-0.5, 0.0, 0.5, 1.0, 1.5], [9.0, 1.0, 4.0, 3.0, 9.0]) == pytest.approx(2.0)
    assert barrier([0.0, 0.5, 1.0], [1.0, 0.0, 1.0]) == 0.0  # below the chord: no barrier (the ends count)


def test_grid_is_symmetric_with_zero_in_the_middle():
    assert grid(1, 3.0) == [0.0]
    assert grid(21, 1.0)[10] == 0.0 and grid(21, 1.0)[0] == -1.0 and grid(21, 1.0)[-1] == 1.0


class OnceDifferentiable(torch.autograd.Function):
    """x -> 1/2 x^T A x with a hand-written backward that double backward cannot see through (the
    product is computed from a detached copy), as in a fused loss written for speed."""

    @staticmethod
    def forward(ctx, x, hessian):
        ctx.save_for_backward(hessian @ x.detach())
        return 0.5 * x @ hessian @ x

    @staticmethod
    def backward(ctx, grad):
        (hx,) = ctx.saved_tensors
        return grad * hx, None


class FusedQuadratic(Quadratic):
    name = "fused-quadratic"

    def loss_terms(self, batch, perturb=None):
        from robustrec.models.base import LossTerms

        x = self.theta.reshape(-1)
        loss = OnceDifferentiable.apply(x, self.hessian) + self.linear @ x
        return LossTerms(loss, loss.new_zeros(()))


def test_a_wrong_double_backward_is_detected_and_replaced_by_differences(tiny):
    hessian = spd_matrix(SPECTRUM, seed=4)
    model = FusedQuadratic(tiny, hessian, torch.zeros(12, dtype=torch.float64))
    objective = TrainingLoss(model, tiny, batch_size=64)
    assert objective._hvp_autograd([torch.ones(3, 4, dtype=torch.float64)])[0].abs().max() == 0  # silently wrong
    found = top_eigenvalues(objective, k=2, steps=12)
    assert objective.hvp_method == "finite-difference"
    assert found == pytest.approx(SPECTRUM[:2], rel=1e-4)
