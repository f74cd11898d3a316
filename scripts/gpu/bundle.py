"""`make gpu-bundle`: what `scripts/gpu/run_checks.sh` needs on a GPU machine that has no network, in one
git-ignored folder to copy beside the repository.

    python scripts/gpu/bundle.py [--out .gpu_bundle] [--carry NAME ...] [--limit-mib 62]

    .gpu_bundle/wheels/                  Python 3.12 manylinux x86_64 wheels, at the versions this venv has, of
                                         the packages hf_dpo needs (pyproject's dependencies and its bench extra,
                                         then what those need in turn) that the GPU machine lacks (DEVICE below)
    .gpu_bundle/smollm2-135m-instruct/   SmolLM2-135M-Instruct's config and tokenizer files, no weights: every
                                         random-weight model of the checks takes this tokenizer
    .gpu_bundle/versions.txt             name==version of each wheel

run_checks.sh installs the wheels with `pip install --no-index --no-deps --target /tmp/site` and puts /tmp/site and
the repository on PYTHONPATH: nothing is installed from an index there, and hf_dpo runs from the checkout.
Idempotent: a wheel already there is kept, one no longer wanted is removed. Fails (exit 1) when the bundle and
the files the copy takes along (tracked + untracked, not ignored) exceed --limit-mib (the copy's limit is 64 MiB).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.12"  # the GPU machine's interpreter (3.12.3)
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# What the GPU machine has installed (Python 3.12.3, /opt/torch/.venv): name -> version (None: not known).
DEVICE = {
    "torch": "2.11.0+cu130",
    "triton": "3.6",
    "transformers": "5.17.0",
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "peft": None,
    "tokenizers": "0.23.2",
    "safetensors": "0.8.0",
    "numpy": None,
    "pandas": None,
    "pyarrow": None,
    "xxhash": None,
    "pyyaml": None,
    "matplotlib": None,
    "tqdm": None,
    "requests": None,
    "httpx": None,
    "jinja2": None,
    "sentencepiece": None,
}
# Installed there as dependencies of those (torch, transformers, accelerate, huggingface_hub 1.x, httpx, pandas):
# a bundled package that needs one of them finds it.
DEVICE_DEPENDENCIES = {
    "filelock",
    "fsspec",
    "typing-extensions",
    "packaging",
    "psutil",
    "regex",
    "typer",
    "anyio",
    "idna",
    "certifi",
    "h11",
    "httpcore",
    "sympy",
    "networkx",
    "markupsafe",
    "python-dateutil",
    "tzdata",
    "urllib3",
    "charset-normalizer",
}
# Carried although the machine has a version: peft's there is unknown, and hf_dpo is tested with this one.
# transformers stays out: hf_dpo's checks pass with the machine's 5.17.0 (a CPU rehearsal with exactly that
# version), and its wheel is 13.5 MB of the 64 MiB. `--carry transformers` takes it along anyway.
CARRY_ANYWAY = ("peft",)


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """pyproject's dependencies and its bench extra (TRL: the bench's baseline)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["bench"]]]


MARKER_ENV = {
    "python_version": PYTHON_VERSION,
    "python_full_version": PYTHON_VERSION + ".3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "extra": "",
}


def requirements_of(name: str) -> list[Requirement]:
    """The installed distribution's own requirements (extras and other platforms' left out)."""
    reqs = [Requirement(r) for r in md.distribution(name).requires or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(MARKER_ENV)]


def bundle_packages(carry: tuple[str, ...] = ()) -> dict[str, str]:
    """{name: this venv's version} of every package to carry: the closure of the runtime requirements over
    packages the GPU machine lacks, plus CARRY_ANYWAY and `carry`."""
    provided = set(DEVICE) | DEVICE_DEPENDENCIES
    forced = {canonicalize_name(n) for n in (*CARRY_ANYWAY, *carry)}
    todo = [canonicalize_name(r.name) for r in runtime_requirements()] + sorted(forced)
    found: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in found or (name in provided and name not in forced):
            continue
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            sys.exit(f"error: {name} is not installed in {sys.prefix}; run `make install` first.")
        todo += [canonicalize_name(r.name) for r in requirements_of(name)]
    return dict(sorted(found.items()))


def download(packages: dict[str, str], wheels: Path) -> None:
    """One wheel per package into `wheels` (kept when already there); other wheels removed."""
    wheels.mkdir(parents=True, exist_ok=True)
    have = {}
    for whl in wheels.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(whl.name)
        if packages.get(name) == str(version):
            have[name] = whl
        else:
            print(f"removing {whl.name} (not in the bundle any more)")
            whl.unlink()
    for name, version in packages.items():
        if name in have:
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
        cmd += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        cmd += ["-d", str(wheels), f"{name}=={version}"]
        print(f"downloading {name}=={version}", flush=True)
        subprocess.run(cmd, check=True)


def copy_tokenizer(dst: Path) -> None:
    """SmolLM2-135M-Instruct's config and tokenizer files (no weights) from the demo alias's cache."""
    from hf_dpo.model.loading import resolve_model_path

    src = Path(resolve_model_path("smollm2-135m-instruct"))
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy2(f, dst / f.name)


def size_of(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def copied_files() -> list[Path]:
    """The files the device copy takes along besides the bundle: tracked, and untracked but not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".gpu_bundle"))
    parser.add_argument("--carry", nargs="*", default=[], help="carry these too, e.g. transformers")
    parser.add_argument("--limit-mib", type=float, default=62.0, help="bundle + repository files, at most")
    args = parser.parse_args()
    out = Path(args.out)
    packages = bundle_packages(tuple(args.carry))
    download(packages, out / "wheels")
    copy_tokenizer(out / "smollm2-135m-instruct")
    (out / "versions.txt").write_text("".join(f"{n}=={v}\n" for n, v in packages.items()))
    bundle = size_of(out.rglob("*"))
    repo = size_of(copied_files())
    total = (bundle + repo) / 2**20
    print(f"{out}: {len(packages)} wheels ({', '.join(f'{n}=={v}' for n, v in packages.items())})")
    print(
        f"size: bundle {bundle / 2**20:.1f} MiB + repository files {repo / 2**20:.1f} MiB = {total:.1f} MiB"
    )
    if total > args.limit_mib:
        print(
            f"error: {total:.1f} MiB is over {args.limit_mib:g} MiB (the device copy takes 64 MiB at most): "
            "leave a package out or clean untracked files.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
