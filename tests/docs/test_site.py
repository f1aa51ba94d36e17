"""The documentation site builds strictly, its generated tables come from the code, and the README's links land.

`mkdocs build --strict` with mkdocs.yml's `validation:` makes a link to a missing page or file, or to a
missing anchor, an error: the build below must pass, and a copy of the docs with one broken anchor must not.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from server.errors import ServerError
from server.http.defaults import DIALECTS, SHOWN
from server.http.errors import HTTP_ERROR_TYPES
from server.http.respond_schema import FIELDS
from server.settings import Settings, env_name
from tests.docs.examples import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_site_builds_strictly_with_the_tables_made_from_the_code(tmp_path):
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    settings_page = html.unescape((tmp_path / "site" / "settings" / "index.html").read_text())
    for f in fields(Settings):
        name = env_name(f.name).removeprefix("LLAMA_SERVER_")
        assert f"<code>{name}</code>" in settings_page and f'id="{f.name.replace("_", "-")}"' in settings_page
        assert f.metadata["help"][:30] in settings_page
    respond_page = (tmp_path / "site" / "api-respond" / "index.html").read_text()
    assert all(f"<td><code>{name}</code></td>" in respond_page for name in FIELDS)
    defaults = respond_page[respond_page.index('id="sampling-defaults"') :]
    for name in SHOWN:  # every dialect's default, in the table's order of dialects
        row = re.search(rf"<tr>\s*<td><code>{name}</code></td>(.*?)</tr>", defaults, re.S)
        cells = re.findall(r"<td>(.*?)</td>", row.group(1) if row else "")
        values = [d[name] for d in DIALECTS.values()]
        assert cells == ["random" if v is None else f"<code>{json.dumps(v)}</code>" for v in values], name
    assert (tmp_path / "site" / "bench" / "results" / "conversion.json").is_file()  # published with the site


def test_a_broken_anchor_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    page = docs / "safety.md"
    page.write_text(page.read_text() + "\nSee [nowhere](benchmarks.md#no-such-section).\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(docs), hooks=[str(ROOT / "docs" / "hooks" / "docs_hooks.py")])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no-such-section" in done.stderr, done.stderr[-3000:]


def test_the_readmes_links_land(tmp_path):
    """Relative links in the README name files that exist; those into docs/ name anchors the built page has."""
    assert build(ROOT / "mkdocs.yml", tmp_path / "site").returncode == 0
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "the README is for a newcomer's two minutes"
    links = [link for link in LINK.findall(readme) if not link.startswith(("http://", "https://"))]
    assert links
    for link in links:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).exists(), link
        if path.startswith("docs/") and anchor:
            page = Path(path).relative_to("docs").with_suffix("")
            built = (tmp_path / "site" / ("" if page.name == "index" else page) / "index.html").read_text()
            assert f'id="{anchor}"' in built, link
    # Every figure the README quotes comes with the committed result behind it.
    assert len([link for link in links if link.startswith("bench/results/")]) >= 5


def test_every_error_type_is_in_the_reference():
    """A new error type in the code (a ServerError subclass, a Werkzeug status) must be documented."""
    types = {cls.type for cls in all_subclasses(ServerError)} | set(HTTP_ERROR_TYPES.values()) | {"request_timeout"}
    page = (ROOT / "docs" / "api-respond.md").read_text()
    missing = sorted(t for t in types if f"`{t}`" not in page)
    assert not missing, f"docs/api-respond.md#errors does not name: {missing}"


def all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct} | all_subclasses(direct)}
