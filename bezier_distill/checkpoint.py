"""Training checkpoints: tensors in safetensors, everything else in a JSON state, written crash-safely.

A run directory holds
    checkpoint-00001000.safetensors   model.<name> (weights), ema.<name> (EMA weights) and
                                      optimizer.<param index>.<key> (AdamW moments and step counts)
    checkpoint.json                   step; tensors (file name, sha256); optimizer param groups and
                                      non-tensor state; RNG states of torch (and CUDA), numpy and
                                      python; the data order; "run": what the model is (dim,
                                      architecture, target, stage, data) for the stages that load it;
                                      "previous": the same fields of the older kept checkpoints, newest first
The last K checkpoints are kept (TrainConfig.keep_checkpoints, default 2). The tensors go to a new
file first, then checkpoint.json is replaced atomically to point at it, and only then are tensor files
no kept checkpoint names removed: a kill at any moment leaves complete checkpoints. A resume verifies
the newest one's sha256 and falls back to the newest intact one, with a warning naming the damaged file.
"""
from __future__ import annotations

import base64
import hashlib
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor, nn

from .config import ModelConfig
from .errors import ConfigError, DamagedFileError, DamagedFileWarning, rerun_command
from .files import atomic_write, canonical_safetensors, remove_stale_temps, try_read_json, write_json
from .models import build_model

STATE = "checkpoint.json"


# ---------------------------------------------------------------- RNG states as JSON

def _bytes_to_text(state: Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def _text_to_bytes(text: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict:
    """The global RNG states of torch (CPU and every CUDA device), numpy and python, JSON-ready."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": _bytes_to_text(torch.get_rng_state()),
             "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = [_bytes_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(_text_to_bytes(state["torch"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_text_to_bytes(s) for s in state["cuda"]])


# ---------------------------------------------------------------- optimizer state split

def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Optimizer state as (tensors named optimizer.<param>.<key>, JSON-ready rest)."""
    full = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in full["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": full["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entries in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    start = len(prefix) + 1
    return {name[start:]: value for name, value in tensors.items() if name.startswith(prefix + ".")}


# ---------------------------------------------------------------- save / load

def run_dir_problem(path: str) -> str | None:
    """None when path is a training run directory (it has checkpoint.json), else the problem."""
    if not path:
        return "needs the run directory of a trained model"
    if not (Path(path) / STATE).is_file():
        return f"'{path}' is not a training run (no {STATE})"
    return None


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STATE).is_file()


def kept_checkpoints(state: dict) -> list[dict]:
    """The checkpoints a state file lists, newest first: its own fields, then "previous"."""
    return [{k: v for k, v in state.items() if k != "previous"}, *state.get("previous", [])]


def _entry_ok(entry: Any) -> bool:
    tensors = entry.get("tensors") if isinstance(entry, dict) else None
    return (isinstance(tensors, dict) and all(isinstance(tensors.get(key), str) for key in ("file", "sha256"))
            and isinstance(entry.get("step"), int) and all(key in entry for key in ("optimizer", "rng", "run")))


def _state_problem(state: Any) -> str | None:
    """None when state has the fields of a checkpoint.json, else what is wrong."""
    if not isinstance(state, dict):
        return "not a JSON object"
    previous = state.get("previous", [])
    if not (isinstance(previous, list) and all(_entry_ok(e) for e in [state, *previous])):
        return "a checkpoint in it lacks its step, tensors (file, sha256), optimizer, rng or run"
    return None


def read_state(run_dir: str | Path) -> dict:
    """The run's checkpoint.json; DamagedFileError naming it when it is unreadable."""
    path = Path(run_dir) / STATE
    state, problem = try_read_json(path)
    problem = problem or _state_problem(state)
    if problem:
        raise DamagedFileError(f"checkpoint state '{path}' is unreadable ({problem}); the run cannot resume: delete "
                               f"'{run_dir}' to train it again from the start, or use a new --out directory")
    return state


def _read_tensors(run_dir: Path, entry: dict) -> tuple[dict[str, Tensor] | None, str]:
    """(The tensors of a checkpoint entry, "") when its file is intact, else (None, what is wrong)."""
    path = run_dir / entry["tensors"]["file"]
    if not path.is_file():
        return None, "missing"
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["tensors"]["sha256"]:
        return None, f"damaged (its sha256 differs from the one in {STATE})"
    try:
        return load_tensors(data), ""
    except SafetensorError as error:
        return None, f"damaged (not a safetensors file: {error})"


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int = 2) -> None:
    """Writes the checkpoint of `step`: weights, EMA weights, optimizer, global RNG states, and `state`
    (JSON-ready: data order, run description, ...); keeps the `keep` newest checkpoints (older ones of
    steps before `step`), and deletes the tensor files no kept checkpoint names."""
    run_dir = Path(run_dir)
    optim_tensors, optim_rest = _split_optimizer(optimizer)
    tensors = {**_prefixed("model", model.state_dict()), **_prefixed("ema", ema.state_dict()), **optim_tensors}
    data = canonical_safetensors(save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                              metadata={"step": str(step)}))
    name = f"checkpoint-{step:08d}.safetensors"
    older = [e for e in kept_checkpoints(read_state(run_dir)) if e["step"] < step] if has_checkpoint(run_dir) else []
    remove_stale_temps(run_dir, "checkpoint*")
    atomic_write(run_dir / name, data)
    write_json(run_dir / STATE, {**state, "step": step,
                                 "tensors": {"file": name, "sha256": hashlib.sha256(data).hexdigest()},
                                 "optimizer": optim_rest, "rng": rng_state(), "previous": older[:keep - 1]})
    kept = {name, *(e["tensors"]["file"] for e in older[:keep - 1])}
    for old in run_dir.glob("checkpoint-*.safetensors"):
        if old.name not in kept:
            old.unlink()


def intact_checkpoint(run_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(JSON state, every tensor) of the newest kept checkpoint whose tensor file matches its sha256, with a
    DamagedFileWarning naming each damaged newer one; DamagedFileError when none is intact."""
    run_dir = Path(run_dir)
    damaged = []
    for entry in kept_checkpoints(read_state(run_dir)):
        tensors, problem = _read_tensors(run_dir, entry)
        if tensors is not None:
            for path, why in damaged:
                warnings.warn(f"checkpoint '{path}' is {why}; resuming from the older "
                              f"'{run_dir / entry['tensors']['file']}' (step {entry['step']})", DamagedFileWarning)
            return entry, tensors
        damaged.append((run_dir / entry["tensors"]["file"], problem))
    listed = ", ".join(f"'{path}' is {why}" for path, why in damaged)
    raise DamagedFileError(f"no intact checkpoint in '{run_dir}': {listed}; delete '{run_dir}' to train it "
                           f"again from the start, or use a new --out directory")


def load_checkpoint(run_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(JSON state, every tensor) of the run's newest checkpoint, with the tensors' sha256 verified;
    DamagedFileError naming the file and the command that repairs it when it is damaged."""
    run_dir = Path(run_dir)
    state = kept_checkpoints(read_state(run_dir))[0]
    tensors, problem = _read_tensors(run_dir, state)
    if tensors is None:
        raise DamagedFileError(f"checkpoint '{run_dir / state['tensors']['file']}' is {problem}; "
                               f"{rerun_command(state['run'].get('stage'), str(run_dir))} to redo it from an "
                               f"older checkpoint")
    return state, tensors


def restore(run_dir: str | Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Loads weights, EMA weights, optimizer state and the global RNG states; returns the JSON state."""
    state, tensors = intact_checkpoint(run_dir)
    model.load_state_dict(_unprefixed("model", tensors))
    ema.load_state_dict(_unprefixed("ema", tensors))
    optimizer.load_state_dict(_join_optimizer(tensors, state["optimizer"]))
    set_rng_state(state["rng"])
    return state


def model_weights(run_dir: str | Path, ema: bool = True) -> tuple[dict[str, Tensor], dict]:
    """The (EMA or raw) weights of a run's checkpoint, and its JSON state (state["run"] describes the model)."""
    state, tensors = load_checkpoint(run_dir)
    return _unprefixed("ema" if ema else "model", tensors), state


def load_model(run_dir: str | Path, device: torch.device | str = "cpu", ema: bool = True) -> tuple[nn.Module, dict]:
    """The trained network of a run (EMA weights by default) in eval mode on device, and its JSON state."""
    weights, state = model_weights(run_dir, ema)
    run = state["run"]
    if "module" in run["model"]:
        raise ConfigError(f"'{run_dir}' was trained from Python on a network passed in ({run['model']['module']}); "
                          "load it with bezier_distill.load_student(run_dir, network)")
    model = build_model(ModelConfig(**run["model"]), run.get("shape", run["dim"]))
    model.load_state_dict(weights)
    return model.to(device).eval().requires_grad_(False), state
