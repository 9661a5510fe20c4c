"""The build backend of agh_nb: setuptools, plus the data files in editable wheels.

``[tool.setuptools.data-files]`` (pyproject.toml) puts
``etc/jupyter/jupyter_server_config.d/agh_nb.json`` into ``<prefix>/etc/jupyter/...``, which is
how ``jupyter server`` finds and enables the agh_nb server extension with no manual step. Regular
wheels carry it; setuptools' editable wheels (PEP 660, ``pip install -e .``) silently do not:
``editable_wheel._run_install("data")`` asks the distribution for ``has_data``, a method that
does not exist (it is ``has_data_files``), so ``install_data`` never runs.

This backend is setuptools' own (every hook re-exported) except ``build_editable``, which adds
each missing data file under ``<name>.data/data/`` of the built wheel and rewrites its RECORD,
using nothing but the wheel format. When setuptools installs them itself, nothing is added.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tomllib
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  # every PEP 517/660 hook of setuptools

ROOT = Path(__file__).resolve().parent


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, object] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Build setuptools' editable wheel, then make sure it carries the data files."""
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_data_files(Path(wheel_directory) / name, data_files(ROOT / "pyproject.toml"))
    return name


def data_files(pyproject: Path) -> dict[str, list[str]]:
    """``[tool.setuptools.data-files]``: target directory -> source files (relative to the project)."""
    with pyproject.open("rb") as f:
        config = tomllib.load(f)
    table = config.get("tool", {}).get("setuptools", {}).get("data-files", {})
    return {str(target): [str(s) for s in sources] for target, sources in table.items()}


def add_data_files(wheel: Path, mapping: dict[str, list[str]]) -> None:
    """Add the files of ``mapping`` missing from ``wheel`` under ``<name>.data/data/``; rewrite RECORD."""
    with zipfile.ZipFile(wheel) as zf:
        entries = {info.filename: zf.read(info) for info in zf.infolist()}
        infos = {info.filename: info for info in zf.infolist()}
    record_name = next(n for n in entries if n.endswith(".dist-info/RECORD"))
    data_dir = record_name.split("/")[0][: -len(".dist-info")] + ".data/data"
    added: dict[str, bytes] = {}
    for target, sources in mapping.items():
        for source in sources:
            arcname = f"{data_dir}/{target.strip('/')}/{os.path.basename(source)}"
            if arcname not in entries:
                added[arcname] = (ROOT / source).read_bytes()
    if not added:
        return
    record = entries[record_name].decode("utf-8").splitlines()
    record = [line for line in record if line and not line.startswith(record_name + ",")]
    for arcname, content in added.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode("ascii")
        record.append(f"{arcname},sha256={digest},{len(content)}")
    record.append(f"{record_name},,")
    entries.update(added)
    entries[record_name] = ("\n".join(record) + "\n").encode("utf-8")
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, content in entries.items():
            if arcname == record_name:
                continue
            info = infos.get(arcname) or zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if arcname not in infos:
                info.external_attr = 0o644 << 16
            zf.writestr(info, content)
        info = infos[record_name]
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, entries[record_name])  # RECORD last, as the wheel format asks
    os.replace(tmp, wheel)
