# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write one docsite page per playbook in PLAYBOOKS_DIR (antsibull-docs documents plugins and roles, not playbooks).

Usage: playbooks.py PLAYBOOKS_DIR OUT_DIR. Each page has the playbook's leading comment as its description, a
table of its plays, and the playbook itself."""

from __future__ import annotations

import pathlib
import re
import shutil
import sys

import yaml


def leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.strip() == "---":
            continue
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    # Comments use Markdown's `code`; reStructuredText wants ``code`` (one backtick would be a reference).
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", " ".join(lines))


def cell(value: object) -> str:
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|") or "--"


def role_names(play: dict) -> list[str]:
    names = []
    for role in play.get("roles") or []:
        names.append(role if isinstance(role, str) else role.get("role") or role.get("name", "?"))
    for task in (play.get("tasks") or []) + (play.get("pre_tasks") or []) + (play.get("post_tasks") or []):
        for key in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
            if isinstance(task, dict) and isinstance(task.get(key), dict):
                names.append(task[key].get("name", "?"))
    return names


def page(path: pathlib.Path) -> str:
    text = path.read_text()
    plays = [play for play in yaml.safe_load(text) or [] if isinstance(play, dict)]
    name = path.stem
    title = f"immutable.root.{name} playbook"
    out = [f".. _playbook_immutable.root.{name}:", "", title, "=" * len(title), ""]
    description = leading_comment(text)
    if description:
        out += [description, ""]
    out += ["Run it with the collection installed::", "", f"    ansible-playbook immutable.root.{name} -i INVENTORY", ""]
    out += [".. list-table:: Plays", "   :header-rows: 1", "", "   * - Play", "     - Hosts", "     - Roles", "     - Tasks",
            "     - Variables"]
    for play in plays:
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
            out += [f"   * - imports ``{target}``", "     - --", "     - --", "     - --", "     - --"]
            continue
        tasks = sum(len(play.get(key) or []) for key in ("pre_tasks", "tasks", "post_tasks", "handlers"))
        variables = sorted((play.get("vars") or {}).keys())
        out += [f"   * - {cell(play.get('name', '(unnamed)'))}", f"     - ``{cell(play.get('hosts', ''))}``",
                f"     - {cell(role_names(play))}", f"     - {tasks}", f"     - {cell(variables)}"]
    out += ["", "The playbook", "------------", "", f".. literalinclude:: {path.name}", "   :language: yaml", ""]
    return "\n".join(out)


def main() -> None:
    source, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    books = sorted(source.glob("*.yml"))
    for path in books:
        shutil.copy2(path, dest / path.name)
        (dest / f"{path.stem}.rst").write_text(page(path))
    index = ["Playbooks", "=========", "",
             "Playbooks shipped with the collection, runnable as ``ansible-playbook immutable.root.NAME``.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {path.stem}" for path in books]
    (dest / "index.rst").write_text("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
