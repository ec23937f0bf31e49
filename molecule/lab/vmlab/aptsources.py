# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host's apt sources, read at run time: the lab never names a mirror itself.

mmdebstrap gets the host's source files as its MIRROR arguments (it pastes a file's contents into the tree),
debootstrap gets the URI of the first host source that serves the suite's `main` component.  A suite the host does
not list (trixie on a bookworm host) comes from the mirrors of the host's own release: a Debian archive serves every
release, and debian-archive-keyring holds the keys of the next one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vmlab.errors import LabError


@dataclasses.dataclass(frozen=True)
class AptSource:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    enabled: bool = True
    signed_by: str = ""  # a keyring path; an inline key block is not kept

    def serves(self, suite: str, component: str = "main") -> bool:
        return self.enabled and "deb" in self.types and suite in self.suites and component in self.components


def parse_deb822(text: str) -> list[AptSource]:
    """Parse a deb822 `.sources` file (stanzas separated by blank lines, `#` comments, folded lines)."""
    sources = []
    for stanza in _stanzas(text):
        fields = {key.lower(): value.split() for key, value in stanza.items()}
        enabled = (stanza.get("Enabled", "yes").strip().lower() != "no")
        signed_by = stanza.get("Signed-By", "").strip()
        sources.append(AptSource(tuple(fields.get("types", [])), tuple(fields.get("uris", [])),
                                 tuple(fields.get("suites", [])), tuple(fields.get("components", [])), enabled,
                                 signed_by if signed_by.startswith("/") and " " not in signed_by else ""))
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, last_key = {}, ""
            continue
        if raw[0] in " \t" and last_key:
            current[last_key] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if sep:
            last_key = key.strip()
            current[last_key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_one_line(text: str) -> list[AptSource]:
    """Parse one-line-style `sources.list` entries: `deb [options] URI SUITE COMPONENT...`."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        if "[" in line and "]" in line:
            for option in line[line.index("[") + 1:line.index("]")].split():
                key, _sep, value = option.partition("=")
                options[key.lower()] = value
            line = line[:line.index("[")] + line[line.index("]") + 1:]
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        sources.append(AptSource((words[0],), (words[1],), (words[2],), tuple(words[3:]),
                                 signed_by=options.get("signed-by", "")))
    return sources


def source_files(root: Path = Path("/")) -> list[Path]:
    """The files apt itself reads, in apt's order (sources.list first, then sources.list.d sorted)."""
    etc = root / "etc" / "apt"
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    directory = etc / "sources.list.d"
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    return files


def parse_file(path: Path) -> list[AptSource]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)


def _files_serving(suite: str, root: Path) -> list[Path]:
    return [path for path in source_files(root) if any(src.serves(suite) for src in parse_file(path))]


def files_serving(suite: str, root: Path = Path("/")) -> list[Path]:
    """Host source files with an enabled `deb` entry for `suite` main: mmdebstrap's MIRROR arguments."""
    found = _files_serving(suite, root)
    if not found:
        raise LabError(f"no apt source for '{suite}' main in {root / 'etc/apt/sources.list'} or sources.list.d/; "
                       "the lab builds Debian trees from the host's configured apt sources")
    return found


def mirror_uri(suite: str, root: Path = Path("/")) -> str:
    """URI of the first host source serving `suite` main: debootstrap's MIRROR argument."""
    for path in source_files(root):
        for src in parse_file(path):
            if src.serves(suite) and src.uris:
                return src.uris[0]
    raise LabError(f"no apt source for '{suite}' main in {root / 'etc/apt'}; debootstrap needs the host's mirror")


def host_codename(root: Path = Path("/")) -> str:
    """VERSION_CODENAME of the host's os-release ("" when it has none)."""
    for relative in ("etc/os-release", "usr/lib/os-release"):
        path = root / relative
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() == "VERSION_CODENAME":
                    return value.strip().strip("\"'")
            return ""
    return ""


def renamed_suite(suite: str, codename: str, target: str) -> str | None:
    """`codename` -> `target` and `codename-X` -> `target-X` (updates, security); None for any other suite."""
    if suite == codename:
        return target
    if suite.startswith(codename + "-"):
        return target + suite[len(codename):]
    return None


def derived_sources(suite: str, root: Path = Path("/")) -> str:
    """A deb822 sources file for `suite` on the mirrors that serve the host's own release, main only.

    Every enabled `deb` source serving the host's codename becomes a stanza with the same URIs and Signed-By,
    its suites renamed (bookworm-updates -> trixie-updates, bookworm-security -> trixie-security).
    """
    codename = host_codename(root)
    stanzas = []
    serves_suite = False
    if codename and codename != suite:
        for path in source_files(root):
            for src in parse_file(path):
                if not (src.enabled and "deb" in src.types and "main" in src.components and src.uris):
                    continue
                suites = [renamed for renamed in (renamed_suite(s, codename, suite) for s in src.suites) if renamed]
                if not suites:
                    continue
                serves_suite = serves_suite or suite in suites
                stanza = ["Types: deb", f"URIs: {' '.join(src.uris)}", f"Suites: {' '.join(suites)}", "Components: main"]
                if src.signed_by:
                    stanza.append(f"Signed-By: {src.signed_by}")
                stanzas.append("\n".join(stanza) + "\n")
    if not serves_suite:
        raise LabError(f"no apt source for '{suite}' main in {root / 'etc/apt'}, and none serving the host's own release "
                       f"({codename or 'no VERSION_CODENAME in os-release'}) to take it from; the lab builds Debian trees "
                       "from the host's configured apt sources")
    return "\n".join(stanzas)


def mmdebstrap_mirrors(suite: str, scratch: Path, root: Path = Path("/")) -> list[Path]:
    """mmdebstrap's MIRROR arguments for `suite`: the host's own source files when they serve it, else one file
    written into `scratch` by `derived_sources`."""
    found = _files_serving(suite, root)
    if found:
        return found
    text = derived_sources(suite, root)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{suite}.sources"
    path.write_text(text)
    return [path]
