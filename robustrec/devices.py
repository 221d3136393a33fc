"""Device names, checked once for everything that runs on a device (training, audits, captioners).

``"meta"`` and the like parse as torch devices but cannot hold weights, so only ``cpu`` and
``cuda[:N]`` are accepted; a GPU that is absent is a ConfigError, not a torch traceback later.
Importing this module does not import torch (the captioning package stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustrec.errors import ConfigError

if TYPE_CHECKING:
    import torch

USAGE = "use cpu, cuda or cuda:N"


def parse_device(device: Any) -> torch.device:
    """``device`` as a torch device of a supported type (whether it exists is not checked)."""
    import torch

    if not isinstance(device, str):
        raise ConfigError(f"device must be a name such as cpu or cuda, got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; {USAGE}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; {USAGE}")
    return parsed


def resolve_device(device: Any) -> torch.device:
    """:func:`parse_device`, and the device must exist on this machine."""
    import torch

    parsed = parse_device(device)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was requested but CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return parsed
