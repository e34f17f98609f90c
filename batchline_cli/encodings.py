"""tiktoken's encoding files, from a package instead of the internet, checked byte for byte.

tiktoken downloads its BPE files on first use; these machines (and many locked-down VPCs) cannot
reach the blob store. The PyPI package ``bpe-openai`` carries byte-identical gzipped copies, which
the lock pins. They are unpacked into tiktoken's cache layout (file name = sha1 of the download
URL) and each is checked against the sha256 tiktoken itself expects, so a tampered or truncated
file fails loudly instead of silently miscounting tokens.

`make install` puts them in the checkout's ``.cache/tiktoken``; an installed ``batchline`` (``uv
tool install .``) puts them, on first use, in the user's cache directory; the Lambda layer carries
its own copy (infra/lambda_layer.py).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
CACHE_ENV = "TIKTOKEN_CACHE_DIR"
CHECKOUT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "tiktoken"

# sha256 of each encoding file, as pinned in tiktoken_ext/openai_public.py (tiktoken 0.14.0).
EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def cache_file_name(encoding: str) -> str:
    return hashlib.sha1(BLOB_URL.format(name=encoding).encode()).hexdigest()


def install(dest: Path) -> list[Path]:
    """Unpack every encoding into `dest` (a file already there with the right bytes is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for encoding, expected in EXPECTED_SHA256.items():
        target = dest / cache_file_name(encoding)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            written.append(target)
            continue
        packed = resources.files("bpe_openai").joinpath(f"data/{encoding}.tiktoken.gz").read_bytes()
        data = gzip.decompress(packed)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise SystemExit(
                f"encoding {encoding}: sha256 {actual} does not match the expected {expected}; refusing to install it"
            )
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # readers never see half a file
        written.append(target)
    return written


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchline" / "tiktoken"


def _complete(directory: Path) -> bool:
    return all((directory / cache_file_name(encoding)).is_file() for encoding in EXPECTED_SHA256)


def ensure_encodings() -> Path:
    """Point tiktoken (TIKTOKEN_CACHE_DIR) at the encodings, unpacking them first if need be.

    A TIKTOKEN_CACHE_DIR already set is the user's choice and is filled if it lacks them; else the
    checkout's cache (a source checkout after `make install`), else the user's cache directory.
    tiktoken then never reaches for the internet.
    """
    given = os.environ.get(CACHE_ENV)
    if given:
        directory = Path(given)
    elif _complete(CHECKOUT_CACHE):
        directory = CHECKOUT_CACHE
    else:
        directory = _user_cache()
    if not _complete(directory):
        install(directory)
    os.environ[CACHE_ENV] = str(directory)
    return directory
