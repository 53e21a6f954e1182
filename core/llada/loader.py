"""Load a diffusion LM checkpoint directory (config.json + safetensors shards) onto a device.

The family (LLaDA, iLLaDA, Dream; core.llada.families) comes from config.json and says how its
fields and tensor names map onto the one model class. Every tensor of the checkpoint is checked
against the model's names and shapes before anything is loaded, so a wrong or damaged checkpoint
fails with a message, not a traceback from deep inside torch.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import torch

from core.errors import UserError
from core.llada import families
from core.llada.model import LLaDA, LLaDAConfig
from core.llada.moe import MoELLaDA

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(UserError):
    """The checkpoint directory is missing, incomplete, or does not match the model."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 is what the checkpoints hold and what the GPU is fast at; CPUs get float32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_dir(name_or_path: str) -> Path:
    """A local directory as it is; a hub id from the local cache, or downloaded when online."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if not looks_like_hub_id(name_or_path):
        raise CheckpointError(f"Model directory not found: {name_or_path}")
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    target = Path(constants.HF_HUB_CACHE) / ("models--" + name_or_path.replace("/", "--"))
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(
            f"Model {name_or_path} is not downloaded and this machine is offline (HF_HUB_OFFLINE=1). "
            f"On a machine with network run `huggingface-cli download {name_or_path}` and copy the cache to "
            f"{target}, or download it to any directory and pass that directory instead of the id."
        )
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as exc:
        raise CheckpointError(
            f"Could not download {name_or_path} ({type(exc).__name__}: {exc}). Place the checkpoint in "
            f"{target} or pass a local directory."
        ) from exc


def available_locally(name_or_path: str) -> bool:
    """Whether a directory or hub id can be used without any download."""
    if Path(name_or_path).expanduser().is_dir():
        return True
    if not looks_like_hub_id(name_or_path):
        return False
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name_or_path, allow_patterns=["*.json"], local_files_only=True)
        return True
    except Exception:
        return False


def family_of(model_id: str) -> families.Family | None:
    """The diffusion family of a model without loading it: from its config.json when it is here, else from the
    published checkpoints' hub ids; None for anything else (a causal LM, an unknown model not downloaded)."""
    if available_locally(model_id):
        try:
            return families.detect(read_raw(resolve_model_dir(model_id)))
        except UserError:
            return None
    return families.BY_CHECKPOINT.get(model_id)


def read_config(model_dir: Path) -> LLaDAConfig:
    raw, family = read_family(model_dir)
    return model_config(model_dir, raw, family)


def read_raw(model_dir: Path) -> dict:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json: not a diffusion LM checkpoint directory")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} does not hold a JSON object")
    return raw


def read_family(model_dir: Path) -> tuple[dict, families.Family]:
    """config.json and the diffusion family it names; any other model is refused with the families we run."""
    raw = read_raw(model_dir)
    try:
        family = families.detect(raw)
    except UserError as exc:
        raise CheckpointError(f"{model_dir}: {exc}") from None
    if family is None:
        raise CheckpointError(f"{model_dir / 'config.json'} describes model_type {raw.get('model_type')!r}, no "
                              f"diffusion LM family. {families.SUPPORTED_TEXT}.")
    return raw, family


def model_config(model_dir: Path, raw: dict, family: families.Family) -> LLaDAConfig:
    try:
        cfg = families.llada_config(raw, family)
    except UserError as exc:
        raise CheckpointError(f"{model_dir / 'config.json'}: {exc}") from None
    if cfg.d_model % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise CheckpointError(f"{model_dir / 'config.json'}: the model width and the numbers of heads and of "
                              "key/value heads do not divide evenly")
    return cfg


def raw_config(model_dir: Path) -> dict:
    """A LLaDA-family config.json (the layout this project's own checkpoints are written in)."""
    raw, family = read_family(model_dir)
    if family is not families.LLADA:
        raise CheckpointError(f"{model_dir} is a {family.title} checkpoint; a LLaDA one is needed here")
    model_config(model_dir, raw, family)
    return raw


def shard_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> file that holds it, from the index json or the single file."""
    index_path = model_dir / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index_path} is not a safetensors index: {exc}") from exc
        files = {name: model_dir / fname for name, fname in weight_map.items()}
        absent = sorted({p.name for p in files.values() if not p.is_file()})
        if absent:
            raise CheckpointError(f"{model_dir} lacks shard file(s) named in its index: {', '.join(absent)}")
        return files
    single = model_dir / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{model_dir} has neither {INDEX_FILE} nor {SINGLE_FILE}")
    with _open_safetensors(single) as f:
        return {name: single for name in f.keys()}


def _open_safetensors(path: Path, device: str = "cpu"):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device=device)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc


def load_llada(model_dir: Path | str, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> LLaDA:
    model_dir = Path(model_dir)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    raw, family = read_family(model_dir)
    if family.architecture == "moe":
        return load_moe(model_dir, raw, family, device, dtype)
    cfg = model_config(model_dir, raw, family)
    with torch.device("meta"):
        model = LLaDA(cfg)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    if "base" in raw:
        state = {name: tensor.to(device=device, dtype=dtype) for name, tensor in
                 base_with_adapter(model_dir, raw, expected).items()}
        model.load_state_dict(state, assign=True)
        return model.eval()
    files = shard_files(model_dir)
    names = families.checkpoint_names(expected, family)  # ours -> the checkpoint's
    check_names(model_dir, family, set(names.values()), set(files) - (
        {families.TIED_HEAD_COPY} if cfg.weight_tying else set()))

    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, stored in names.items():
        by_file.setdefault(files[stored], []).append(name)
    for path, ours in sorted(by_file.items()):
        with _open_safetensors(path, read_device(device)) as f:
            for name in ours:
                stored = names[name]
                shape = tuple(f.get_slice(stored).get_shape())
                if shape != expected[name]:
                    raise CheckpointError(
                        f"Checkpoint tensor {stored} in {path.name} has shape {shape}, the config needs {expected[name]}"
                    )
                try:
                    state[name] = f.get_tensor(stored).to(device=device, dtype=dtype)
                except Exception as exc:
                    raise CheckpointError(f"Could not read {stored} from {path}: {exc}") from exc
    model.load_state_dict(state, assign=True)
    return model.eval()


def read_device(device: torch.device) -> str:
    """Where safetensors reads to: straight onto the GPU; on a CPU, tensors are cast as they arrive."""
    return str(device) if device.type == "cuda" else "cpu"


def check_names(model_dir: Path, family: families.Family, wanted: set[str], present: set[str]) -> None:
    """Refuse a checkpoint whose tensor names are not the ones its family's config needs, naming the difference."""
    missing, unexpected = sorted(wanted - present), sorted(present - wanted)
    if missing or unexpected:
        lines = [f"Checkpoint {model_dir} does not match the {family.title} config it ships:"]
        for what, names in (("missing", missing), ("unexpected", unexpected)):
            if names:
                lines.append(f"  {what} {len(names)} tensor(s): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
        raise CheckpointError("\n".join(lines))


def load_moe(model_dir: Path, raw: dict, family: families.Family, device: torch.device,
             dtype: torch.dtype) -> MoELLaDA:
    """A mixture-of-experts checkpoint, each tensor read straight to the device in ``dtype``: q, k and v fused, the
    experts stacked, every shape checked against the config first."""
    try:
        cfg = families.mixture_config(raw, family)
    except UserError as exc:
        raise CheckpointError(f"{model_dir / 'config.json'}: {exc}") from None
    with torch.device("meta"):
        model = MoELLaDA(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    sources = families.mixture_sources(expected, cfg.n_experts, family.name)
    files = shard_files(model_dir)
    check_names(model_dir, family, {name for _, names in sources.values() for name in names}, set(files))
    state = {}
    with ExitStack() as opened:
        handles = {path: opened.enter_context(_open_safetensors(path, read_device(device)))
                   for path in set(files.values())}
        for name, (how, names) in sources.items():
            # The router's expert bias stays float32, as its authors keep it: a bf16 bias would change which experts win.
            wanted = torch.float32 if name.endswith("expert_bias") else dtype
            parts = [handles[files[stored]].get_tensor(stored).to(device=device, dtype=wanted) for stored in names]
            tensor = parts[0] if how == "one" else torch.cat(parts) if how == "cat" else torch.stack(parts)
            if tuple(tensor.shape) != expected[name]:
                raise CheckpointError(f"Checkpoint tensor(s) {', '.join(names[:3])} make {name} of shape "
                                      f"{tuple(tensor.shape)}; the config needs {expected[name]}")
            state[name] = tensor
    model.load_state_dict(state, assign=True)
    return model.eval()


def base_with_adapter(model_dir: Path, raw: dict, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The float32 state of a model stored as an installed package's base weights plus a LoRA adapter.

    ``raw["base"]`` names the package, the file and its sha256; ``raw["adapter"]`` the adapter file,
    rank and alpha. Adapter tensors: ``KEY.lora_A`` (rank, in) and ``KEY.lora_B`` (out, rank) add
    ``alpha / rank * B @ A`` to the base tensor KEY; ``KEY`` alone replaces it whole; ``KEY.rows``
    with ``KEY.row_index`` replaces those rows.
    """
    from safetensors.torch import load_file

    from core.llada.gguf_llama import read_llama_gguf
    from core.paths import package_file, sha256

    base, adapter = raw["base"], raw.get("adapter") or {}
    base_path = package_file(base["package"], base["file"])
    if base.get("sha256") and sha256(base_path) != base["sha256"]:
        raise CheckpointError(f"{model_dir.name} was trained on another version of {base['file']} than the "
                              f"installed {base['package']} carries; install the version scripts/setup.sh pins.")
    _, state = read_llama_gguf(base_path)
    if set(state) != set(expected):
        raise CheckpointError(f"The base {base['file']} does not have the tensors {model_dir.name}'s config describes")
    adapter_path = model_dir / adapter.get("file", "adapter.safetensors")
    if not adapter_path.is_file():
        raise CheckpointError(f"{model_dir} lacks its adapter file {adapter_path.name}")
    try:
        tensors = load_file(str(adapter_path))
    except Exception as exc:
        raise CheckpointError(f"{adapter_path} is not a readable safetensors file ({exc})") from exc
    scale = float(adapter.get("alpha", 1)) / float(adapter.get("rank", 1))
    for name, tensor in tensors.items():
        if name.endswith(".row_index"):
            continue
        key = name.removesuffix(".lora_A").removesuffix(".lora_B").removesuffix(".rows")
        if key not in state:
            raise CheckpointError(f"Adapter tensor {name} in {adapter_path.name} matches no tensor of the base model: "
                                  "the adapter belongs to another model")
        base_shape = tuple(state[key].shape)
        if name.endswith(".lora_A"):
            up = tensors.get(key + ".lora_B")
            if up is None or up.shape[1] != tensor.shape[0] or (up.shape[0], tensor.shape[1]) != base_shape:
                raise CheckpointError(f"Adapter {adapter_path.name}: the LoRA factors of {key} do not fit its shape "
                                      f"{base_shape}: the adapter belongs to another model")
            state[key] = state[key] + scale * (up.float() @ tensor.float())
        elif name.endswith(".rows"):
            index = tensors.get(key + ".row_index")
            if index is None or tensor.shape[1:] != base_shape[1:] or len(index) != len(tensor):
                raise CheckpointError(f"Adapter {adapter_path.name}: replaced rows of {key} do not fit its shape {base_shape}")
            state[key][index.long()] = tensor.float()
        elif not name.endswith(".lora_B"):
            if tuple(tensor.shape) != base_shape:
                raise CheckpointError(f"Adapter tensor {name} has shape {tuple(tensor.shape)}, the base has {base_shape}: "
                                      "the adapter belongs to another model")
            state[key] = tensor.float()
    return state


def load_tokenizer(model_dir: Path | str):
    from transformers.utils import logging as hf_logging

    model_dir = Path(model_dir)
    try:
        declared = json.loads((model_dir / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, json.JSONDecodeError):
        declared = None
    if declared in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        # LLaDA's own class: loading it directly skips half a second of AutoTokenizer imports.
        from transformers import PreTrainedTokenizerFast as tokenizer_class
    else:
        from transformers import AutoTokenizer as tokenizer_class
    # AutoTokenizer peeks at config.json, whose model_type transformers does not know; that is expected.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return tokenizer_class.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"Could not load the tokenizer from {model_dir}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def save_llada(model: LLaDA, out_dir: Path, max_shard_bytes: int | None = None, extra_config: dict | None = None) -> None:
    """Write config.json and safetensors shards (with an index when sharded), as on the hub."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llada", "architectures": ["LLaDAModelLM"], **model.cfg.to_dict(), **(extra_config or {})}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if max_shard_bytes is None:
        save_file(state, str(out_dir / SINGLE_FILE), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
