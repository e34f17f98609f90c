"""Put tiktoken's encoding files in place without internet, and prove they are the right bytes.

tiktoken downloads its BPE files on first use; these machines (and many locked-down VPCs) cannot
reach the blob store. The PyPI package ``bpe-openai`` carries byte-identical gzipped copies, which
the lock pins. This script unpacks them into tiktoken's cache layout (file name = sha1 of the
download URL) and checks each against the sha256 tiktoken itself expects, so a tampered or
truncated file fails the install instead of silently miscounting tokens.

Usage: python scripts/install_encodings.py DEST_DIR
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from importlib import resources
from pathlib import Path

BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# sha256 of each encoding file, as pinned in tiktoken_ext/openai_public.py (tiktoken 0.14.0).
EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def cache_file_name(encoding: str) -> str:
    return hashlib.sha1(BLOB_URL.format(name=encoding).encode()).hexdigest()


def install(dest: Path) -> list[Path]:
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
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in install(Path(sys.argv[1])):
        print(f"tiktoken encoding ready: {path}")
