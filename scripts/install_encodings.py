"""Put tiktoken's encoding files in place without internet (see batchline_cli/encodings.py).

Usage: python scripts/install_encodings.py DEST_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchline_cli.encodings import install

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for path in install(Path(sys.argv[1])):
        print(f"tiktoken encoding ready: {path}")
