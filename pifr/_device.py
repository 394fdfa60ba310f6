"""Device selection: an explicit argument, never hidden global state."""
from __future__ import annotations

from typing import Any, Optional

from .errors import DeviceError


def resolve_device(device: Optional[Any] = None) -> Any:
    """``None``/``"auto"`` → CUDA if available else CPU; anything else → ``torch.device(device)``.

    Raises:
        DeviceError: not a device name torch knows, or a CUDA/MPS device this machine does not have
            (checked here, so the failure names the device instead of surfacing deep inside a model).
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise DeviceError(f"not a torch device: {device!r} ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but CUDA is not available here (use 'cpu' or None)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} asked for, but MPS is not available here")
    return dev
