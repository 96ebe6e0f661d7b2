"""A plain (not editable) install carries the email templates with it, and
its metadata says under which licence mailflow is distributed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_templates_and_uses_them(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("mailflow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("subject.txt", "body.txt", "body.html"):
        assert f"mailflow/templates/email/alert/{template}" in names
    assert "mailflow/db/migrations/versions/0001_initial.py" in names
    assert any(n.startswith("mailflow/templates/web/") for n in names)
    # The licence travels with every copy, as Apache-2.0 section 4 asks.
    [licence] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert b"Apache License" in zipfile.ZipFile(wheel).read(licence)

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    # Run from the unpacked wheel, away from the source tree: the templates
    # must be found inside the package.
    probe = "from mailflow.core.mail.templates import template_root;print(template_root())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()) == installed / "mailflow" / "templates"


def test_the_installed_package_names_its_licence_and_its_home() -> None:
    about = metadata("mailflow")
    assert about["License-Expression"] == "Apache-2.0"
    assert about.get_all("License-File") == ["LICENSE"]
    assert about["Author"] == "mailflow developers"
    assert "Homepage, https://github.com/mailflow/mailflow" in about.get_all("Project-URL", [])
    heading = (ROOT / "LICENSE").read_text().split()[:4]
    assert heading == ["Apache", "License", "Version", "2.0,"]
