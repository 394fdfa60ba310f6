"""Device selection: an explicit argument, never hidden global state."""
from __future__ import annotations

from typing import Any, Optional


def resolve_device(device: Optional[Any] = None) -> Any:
    """``None``/``"auto"`` → CUDA if available else CPU; anything else → ``torch.device(device)``."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
