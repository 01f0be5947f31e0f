"""The prepared-model cache: the scoring model as it is scored (GGUF de-quantized, adapter merged, in the scoring
dtype) saved once as safetensors beside ∇H, then memory-mapped on every later load.

Preparing the embedded model (parsing the GGUF three times, de-quantizing it, building its tokenizer, merging the
adapter) is most of what a one-row check costs. An entry is a folder `model-<key>/` in the cache directory:

    model.safetensors   the weights (tied duplicates left out), in the scoring dtype
    config.json         the model's configuration
    tokenizer files     the tokenizer's own save_pretrained output (tokenizer.json, chat template ...)
    manifest.json       written last: every file's size and CRC-32, the identity the model was loaded with

`<key>` hashes what the entry was made from (the source GGUF file's or local folder's digest;
the adapter's digest; the dtype; the transformers and gguf versions), so any change makes a new entry. The folder is
built under a temporary name and renamed into place, so no reader ever sees half of one; an entry whose files do
not match its manifest (truncated, corrupted, a file missing) is removed and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import mmap
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = 2
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class PreparedEntry:
    folder: Path
    key: str

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def entry_for(cache_dir: Path, source: dict[str, Any], dtype: str) -> PreparedEntry:
    """The entry for a model made from `source` (a JSON-able description of the inputs) in `dtype`."""
    parts = {
        "format": FORMAT,
        "source": source,
        "dtype": dtype,
        "transformers": _version("transformers"),
        "gguf": _version("gguf"),
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return PreparedEntry(Path(cache_dir) / f"model-{key}", key)


def _crc32(path: Path) -> str:
    """CRC-32 of a file, through a memory map. A checksum against accidents (a full disk, a killed copy, a flipped
    sector), not against an attacker who can write the user's own cache: several times faster than sha256, and
    reading the weights this way brings them into the page cache the model then maps."""
    if path.stat().st_size == 0:
        return f"{0:08x}"
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return f"{zlib.crc32(m):08x}"


def read_manifest(entry: PreparedEntry) -> dict[str, Any] | None:
    """The entry's manifest when it exists and is readable (files not checked: see `verify`), else None."""
    try:
        manifest = json.loads(entry.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("key") != entry.key:
        return None
    if not isinstance(manifest.get("files"), dict) or WEIGHTS not in manifest["files"]:
        return None
    return manifest


def verify(entry: PreparedEntry, manifest: dict[str, Any]) -> bool:
    """Every file of the manifest is there with its size and checksum."""
    for name, want in manifest["files"].items():
        path = entry.folder / name
        try:
            if path.stat().st_size != want["size"] or _crc32(path) != want["crc32"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def discard(entry: PreparedEntry) -> None:
    shutil.rmtree(entry.folder, ignore_errors=True)


def save(entry: PreparedEntry, model: Any, tokenizer: Any, meta: dict[str, Any]) -> bool:
    """Write the entry (False when the cache directory cannot be written: the model is then simply not cached).

    Built in a sibling temporary folder, manifest last, then renamed into place: a crash leaves only a temporary
    folder that no reader looks at, and two processes preparing the same model both end with one whole entry."""
    from safetensors.torch import save_file

    tmp = entry.folder.with_name(f".{entry.folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        tensors: dict[str, Any] = {}
        seen: set[int] = set()
        for name, t in model.state_dict().items():
            if t.device.type == "meta":
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:  # a tied weight: stored once, tied again on load
                continue
            seen.add(ptr)
            tensors[name] = t.detach().contiguous().cpu()
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config = model.config
        quant = getattr(config, "quantization_config", None)
        if quant is not None:  # the de-quantized weights are plain tensors: loading must not expect a quantizer
            del config.quantization_config
        try:
            config.save_pretrained(tmp)
        finally:
            if quant is not None:
                config.quantization_config = quant
        tokenizer.save_pretrained(tmp)
        files = {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"format": FORMAT, "key": entry.key, "files": files, **meta}
        with (tmp / MANIFEST).open("w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.rename(tmp, entry.folder)
        except OSError:
            if read_manifest(entry) is None:  # not another process's whole entry: a broken one, replaced
                discard(entry)
                os.rename(tmp, entry.folder)
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(entry: PreparedEntry, manifest: dict[str, Any], device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Model and tokenizer from a verified entry. The model is built with its parameters on the meta device (no
    random initialisation, no memory) and then given the memory-mapped tensors of the safetensors file as its
    parameters (assign=True): on a CPU the weights are never copied, the pages are read from the file on use."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = str(entry.folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies) are computed, not stored
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = load_file(str(entry.folder / WEIGHTS), device=str(device))
    _missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if unexpected or still_meta:
        raise ValueError(f"prepared model {folder}: unexpected {unexpected[:3]}, missing {still_meta[:3]}")
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer
