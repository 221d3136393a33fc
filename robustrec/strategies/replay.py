"""Replaying a batch's model randomness, so a second pass on the same batch sees the same loss.

Strategies that evaluate the loss of one batch twice (SAM's second pass, AMR's adversarial pass)
rewind ``batch.generator`` -- the generator the model draws its own randomness from (dropout,
sampled graph edges) -- before the second pass. Both passes then draw identical masks, and the
generator ends where a single pass leaves it, so the trainer's random stream does not depend on
the strategy.
"""

from __future__ import annotations

from collections.abc import Callable

from robustrec.data.sampling import Batch


def rewinder(batch: Batch) -> Callable[[], None]:
    """Return a function that sets ``batch.generator`` back to its state now (no-op without one)."""
    generator = batch.generator
    if generator is None:
        return lambda: None
    state = generator.get_state()
    return lambda: generator.set_state(state)
