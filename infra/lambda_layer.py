"""The functions' third-party dependencies and tiktoken's encodings, as one Lambda layer.

Built on this machine, without Docker: the requirements are exported from uv.lock (the runtime
``[project]`` dependencies only, never the local/infra/dev groups), then pip fetches manylinux
CPython 3.12 wheels into ``python/``; the verified encodings go to ``tiktoken/``. In Lambda they
appear as /opt/python (on sys.path) and /opt/tiktoken.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from batchline_cli.encodings import EXPECTED_SHA256, cache_file_name
from infra.constants import ENCODINGS_CACHE, PYPROJECT, REPO_ROOT, TOOLS_BIN, UV_LOCK

PYTHON_VERSION = "3.12"
# Both tags are needed: with the first alone tiktoken has no wheel, with the second alone pip
# quietly falls back to an openai release built on pydantic 1.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
UV_EXPORT = (
    "export", "--frozen", "--only-group", "lambda", "--no-emit-project",
    "--no-hashes", "--no-annotate", "--no-header", "--format", "requirements.txt",
)  # fmt: skip
PIP_INSTALL = (
    "install", "--quiet", "--disable-pip-version-check", "--no-compile", "--only-binary=:all:",
    "--implementation", "cp", "--python-version", PYTHON_VERSION,
    *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
)  # fmt: skip
# Bump to rebuild the layer when the recipe (not the lock) changes.
RECIPE_VERSION = "2"
# What the functions never load, left out of the layer: Lambda's 250 MB (unzipped, with the function
# code) would be all but used up by pyarrow otherwise. Arrow Flight and pyarrow's S3 filesystem (boto3
# reads and writes the buckets), the C++ headers, the Cython sources and the tests; and the copies of
# libarrow_python that pip writes where the wheel had symlinks (the extensions load the .so.<version>).
# Checked: pyarrow.csv, pyarrow.parquet and pyarrow.fs import and read and write without them.
LAYER_PRUNED = (
    "pyarrow/include",
    "pyarrow/tests",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/libarrow_s3.so*",
    "pyarrow/_s3fs.*.so",
    "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*",
    "pyarrow/libarrow_python_parquet_encryption.so",
    "pyarrow/libarrow_python_parquet_encryption.so.*.*.*",
    "pyarrow/**/*.pyx",
    "pyarrow/**/*.pxd",
    "pyarrow/**/*.pxi",
)


def prune_layer(site: Path) -> int:
    """Remove LAYER_PRUNED under `site` (the layer's python/ folder); the bytes removed."""
    removed = 0
    for pattern in LAYER_PRUNED:
        for path in sorted(site.glob(pattern), reverse=True):
            if path.is_dir():
                removed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
            elif path.exists():
                removed += path.stat().st_size
                path.unlink()
    return removed


class LayerBuildError(RuntimeError):
    """The layer cannot be built on this machine; the message says what to run."""


def verified_encodings(cache_dir: Path = ENCODINGS_CACHE) -> list[Path]:
    """The encoding files tiktoken will look for, each checked against its pinned sha256."""
    files = []
    for encoding, expected in EXPECTED_SHA256.items():
        path = cache_dir / cache_file_name(encoding)
        if not path.is_file():
            raise LayerBuildError(
                f"tiktoken encoding {encoding} is missing from {cache_dir} (expected {path.name}); "
                "run `make install` to put the encodings in place, then synthesize again"
            )
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise LayerBuildError(
                f"tiktoken encoding {encoding} at {path} does not match its pinned sha256; "
                "delete it and run `make install` again"
            )
        files.append(path)
    return files


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT, **kwargs)
    except FileNotFoundError as exc:
        raise LayerBuildError(f"{command[0]} not found; run `make install` first") from exc
    except subprocess.CalledProcessError as exc:
        raise LayerBuildError(f"`{' '.join(command)}` failed ({exc.returncode}):\n{exc.stderr.strip()}") from exc


def runtime_requirements() -> str:
    """requirements.txt of the runtime dependencies, exactly as locked."""
    return _run([str(TOOLS_BIN / "uv"), *UV_EXPORT]).stdout


@jsii.implements(ILocalBundling)
class LocalLayerBundler:
    """Fills the layer's asset folder on this machine (no Docker here, and none needed)."""

    def try_bundle(self, output_dir: str, *_options: object, **_keyword_options: object) -> bool:
        out = Path(output_dir)
        encodings = verified_encodings()  # first: the cheapest failure, with the clearest fix
        with tempfile.TemporaryDirectory() as scratch:
            requirements = Path(scratch) / "requirements.txt"
            requirements.write_text(runtime_requirements())
            pip = [str(TOOLS_BIN / "python"), "-m", "pip"]
            _run([*pip, *PIP_INSTALL, "--target", str(out / "python"), "-r", str(requirements)])
        shutil.rmtree(out / "python" / "bin", ignore_errors=True)  # console scripts: of no use in a layer
        prune_layer(out / "python")
        (out / "tiktoken").mkdir()
        for path in encodings:
            shutil.copy2(path, out / "tiktoken" / path.name)
        return True


def layer_fingerprint() -> str:
    """Changes when the lock, the project's dependency list or the recipe does; nothing else."""
    digest = hashlib.sha256()
    for part in (UV_LOCK.read_bytes(), PYPROJECT.read_bytes(), repr((UV_EXPORT, PIP_INSTALL, RECIPE_VERSION)).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class DependenciesLayer(Construct):
    """One layer shared by every function: the locked runtime dependencies and the encodings."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        code = lambda_.Code.from_asset(
            str(REPO_ROOT),  # never read: the bundler works from uv.lock, and the hash below is custom
            asset_hash_type=AssetHashType.CUSTOM,
            asset_hash=layer_fingerprint(),
            bundling=BundlingOptions(
                # Required by the API and never pulled: the local bundler succeeds or fails loudly.
                image=DockerImage.from_registry("unused"),
                local=LocalLayerBundler(),
            ),
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=code,
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="batchline runtime dependencies (from uv.lock) and tiktoken encodings",
        )
