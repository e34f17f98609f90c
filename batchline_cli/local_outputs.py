"""A job's outputs copied to this machine: the report beside them points at the copies, not the bucket.

Finalize draws report.html for the bucket it writes to, so its outputs section lists s3:// URLs;
once the files are in a local directory (`batchline local run --out`, `batchline results` against
the local stack) those URLs lead nowhere the user can go. The copy is rewritten to list, and link,
the files next to it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from batchline.presentation.report import REPORT_FILE, with_local_outputs


def local_outputs(summary: dict, out_dir: Path) -> dict[str, str]:
    """Each of the summary's outputs as the path of its copy in `out_dir` (same file name)."""
    folder = out_dir.resolve()
    return {name: str(folder / PurePosixPath(where).name) for name, where in (summary.get("outputs") or {}).items()}


def point_report_at_copies(out_dir: Path) -> Path | None:
    """Rewrite `out_dir`/report.html to list the files in `out_dir`; its path, or None when there is none."""
    report, summary_file = out_dir / REPORT_FILE, out_dir / "summary.json"
    if not report.is_file() or not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    page = report.read_text(encoding="utf-8")
    report.write_text(with_local_outputs(page, summary, local_outputs(summary, out_dir)), encoding="utf-8")
    return report
