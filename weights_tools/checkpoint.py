"""Reading PyTorch checkpoint files: the one state-dict loader of the tool set.

`read_state_dict(path)` accepts what training scripts commonly save:

* a plain state_dict (`torch.save(model.state_dict(), path)`);
* a dict holding one under "model" (this tool set's `weights_tools.train` checkpoints, which also
  carry "meta", "optimizer", ...) or "state_dict" (most other training scripts, Lightning);
* either of these saved from DistributedDataParallel, whose keys all start with "module.".

Files are read with `weights_only=True`: a checkpoint is data, never code to run.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

__all__ = ["read_checkpoint", "read_state_dict", "checkpoint_meta", "STATE_DICT_KEYS"]

# Where a checkpoint dict keeps the model's weights, in the order they are looked for.
STATE_DICT_KEYS = ("model", "state_dict")
_DDP_PREFIX = "module."


def read_checkpoint(path: str) -> Any:
    """The object saved in `path` (tensors, dicts, lists, numbers; no pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def state_dict_of(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint object (see the module docstring), with a
    DistributedDataParallel "module." prefix removed. `source` names it in errors."""
    state = obj
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if not _is_state_dict(state):
        raise ValueError(
            f"{source}: not a state_dict (a dict of tensors), nor a dict with one under "
            f"{' or '.join(repr(k) for k in STATE_DICT_KEYS)}"
        )
    if state and all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state_dict saved in the local file `path` (never a download)."""
    return state_dict_of(read_checkpoint(path), path)


def checkpoint_meta(path: str) -> dict:
    """The "meta" record of a checkpoint written by `weights_tools.train` ({} for other files)."""
    obj = read_checkpoint(path)
    meta = obj.get("meta") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}
