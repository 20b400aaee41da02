"""The real data set's mel-spectrograms: ``arena_mel_{0..39}.tar`` or an extracted ``arena_mel/`` folder.

Inside either, one ``arena_mel/{song_id // 1000}/{song_id}.npy`` per song: a float array of shape
[48, T], 48 mel bins by T frames (T up to 1,876; some songs are shorter). :class:`MelSource` finds every
file of a data folder (tars, a folder, or both) without reading them, and :meth:`MelSource.read` loads one
song's array, checked: a file that is not a valid npy (pickled objects are refused, ``allow_pickle=False``),
is cut short, has another rank or height than [48, T], T >= 1, or holds NaN/inf raises :class:`BadMel` with
the reason; :class:`MelReport` counts what was read and what was bad, and prints each bad file with its path
and one summary line. :func:`write_tars` writes arrays in the same layout (the synthetic generator, tests).

Nothing in the files stops a pass; each fault is logged as a warning with its path and counted:

- an archive that cannot be opened (not a tar, empty) or whose headers break off (a truncated download, a
  damaged header): ``MelSource.corrupt_archives``; the files listed before the fault are kept (each is still
  checked when read), the rest of that archive is skipped;
- a file that cannot be used (see above; a member whose data the archive's end cuts off is "unreadable"):
  :class:`BadMel` from :meth:`MelSource.read`, counted by reason in :class:`MelReport`;
- a song found twice: the first place is kept, in the order tars by sorted path (``sorted(root.glob(...))``,
  so ``arena_mel_10.tar`` comes before ``arena_mel_2.tar``; members in archive order), then the folder; each
  later copy is reported with the kept one's place, counted in ``MelSource.duplicates`` and never read.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("data.mel")

MEL_BINS = 48
TAR_PATTERN = "arena_mel_*.tar"
MEMBER = re.compile(r"(?:^|/)arena_mel/(\d+)/(\d+)\.npy$")


class BadMel(ValueError):
    """One song's file cannot be used; the message says why."""


@dataclass(frozen=True)
class Location:
    """Where a song's file is: ``path`` (a .npy file, or the tar holding it) and the tar ``member``."""
    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


def _song_id(name: str) -> int | None:
    match = MEMBER.search(name)
    if not match or int(match.group(2)) // 1000 != int(match.group(1)):
        return None
    return int(match.group(2))


class MelSource:
    """Every song's spectrogram file under ``root``: ``root/arena_mel_*.tar``, ``root/arena_mel/``, or
    ``root`` itself being the ``arena_mel`` folder. ``locations`` maps song id -> :class:`Location`; a song
    found twice keeps its first place (tars in sorted path order, then the folder) and the later one is
    logged and counted in ``duplicates``; names that do not follow ``arena_mel/{id // 1000}/{id}.npy`` are
    counted in ``unexpected``; an archive that cannot be opened or whose headers break off is logged and
    counted in ``corrupt_archives`` (the files listed before the fault kept)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.locations: dict[int, Location] = {}
        self.duplicates, self.unexpected, self.corrupt_archives = 0, 0, 0
        tars = sorted(self.root.glob(TAR_PATTERN))
        for tar in tars:
            self._scan_tar(tar)
        folder = self.root if self.root.name == "arena_mel" else self.root / "arena_mel"
        if folder.is_dir():
            for path in sorted(folder.glob("*/*.npy")):
                self._add(str(path.relative_to(folder.parent)), Location(path))
        if not tars and not folder.is_dir():
            raise FileNotFoundError(f"{self.root}: no {TAR_PATTERN} and no arena_mel/ folder")

    @classmethod
    def from_locations(cls, locations: dict) -> "MelSource":
        """A source over known files, {song id: (path, member or None)}, without scanning anything."""
        source = cls.__new__(cls)
        source.root, source.duplicates, source.unexpected, source.corrupt_archives = None, 0, 0, 0
        source.locations = {int(s): Location(Path(path), member) for s, (path, member) in locations.items()}
        return source

    def found(self) -> dict:
        """What the scan found: {files, duplicates, unexpected, corrupt_archives} (counts)."""
        return {"files": len(self.locations), "duplicates": self.duplicates, "unexpected": self.unexpected,
                "corrupt_archives": self.corrupt_archives}

    def _scan_tar(self, tar: Path) -> None:
        """Add the files of one archive, reading its headers only (uncompressed: the data are skipped); a fault
        keeps the files listed before it and skips the rest of the archive."""
        listed, last = 0, None
        try:
            with tarfile.open(tar, "r:") as archive:
                for member in archive:
                    if member.isfile():
                        self._add(member.name, Location(tar, member.name))
                        listed, last = listed + 1, member.name
                _check_end(archive)
        except (OSError, EOFError, tarfile.TarError) as e:
            self.corrupt_archives += 1
            kept = f"kept the {listed} files listed before the fault (the last {last}), " if listed else ""
            log.warning("corrupt mel archive %s: %s; %sskipped the rest of the archive", tar, e, kept)

    def _add(self, name: str, location: Location) -> None:
        song = _song_id(name)
        if song is None:
            self.unexpected += 1
        elif song in self.locations:
            self.duplicates += 1
            log.warning("duplicate mel-spectrogram of song %d: %s; skipped, %s kept", song, location,
                        self.locations[song])
        else:
            self.locations[song] = location

    def read(self, song_id: int, archives: dict | None = None) -> np.ndarray:
        """Song ``song_id``'s array [48, T] as float32; :class:`BadMel` when it cannot be used. ``archives``
        (tar path -> open TarFile) is a cache the caller keeps across reads."""
        location = self.locations[song_id]
        try:
            if location.member is None:
                raw = location.path.read_bytes()
            else:
                archive = archives.get(location.path) if archives is not None else None
                if archive is None:
                    archive = tarfile.open(location.path, "r:")
                    if archives is not None:
                        archives[location.path] = archive
                raw = archive.extractfile(_member(archive, location.member)).read()
        except (OSError, EOFError, KeyError, tarfile.TarError) as e:
            raise BadMel(f"unreadable ({e})") from None
        return check_mel(raw)


def _check_end(archive: tarfile.TarFile) -> None:
    """Raise :class:`tarfile.HeaderError` unless a listing that has ended stopped at the archive's end (a zero
    block, or the end of the file): ``tarfile`` ends a listing quietly at a damaged or cut-off header after the
    first one, which would drop the rest of the archive unreported."""
    archive.fileobj.seek(archive.offset)
    if archive.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
        raise tarfile.HeaderError(f"damaged or cut-off header at byte {archive.offset}")


def _member(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """The first member of ``archive`` called ``name`` (the one the scan kept), reading headers only as far as
    it: an archive that breaks off further on still gives the members before the fault, where
    ``getmember`` reads every header first and fails. KeyError when there is none."""
    for member in archive.members:  # the headers read so far, in archive order
        if member.name == name:
            return member
    while (member := archive.next()) is not None:
        if member.name == name:
            return member
    raise KeyError(f"no member {name}")


def check_mel(raw: bytes) -> np.ndarray:
    """An npy file's bytes -> its [48, T] float32 array, or :class:`BadMel` naming what is wrong."""
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadMel(f"not a valid npy file ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        raise BadMel(f"dtype {getattr(array, 'dtype', type(array).__name__)}, expected a float array")
    if array.ndim != 2:
        raise BadMel(f"rank {array.ndim} (shape {array.shape}), expected [48, T]")
    if array.shape[0] != MEL_BINS or array.shape[1] < 1:
        raise BadMel(f"shape {array.shape}, expected [48, T] with T >= 1")
    if not np.isfinite(array).all():
        raise BadMel("holds NaN or inf")
    return array.astype(np.float32, copy=False)


@dataclass
class MelReport:
    """What a pass over the spectrograms read: ``ok`` songs, ``bad`` ones by reason, ``missing`` songs that
    were asked for and have no file."""
    ok: int = 0
    missing: int = 0
    bad: Counter = field(default_factory=Counter)

    def bad_file(self, location: Location, reason: str) -> None:
        kind = reason.split(" (")[0].split(",")[0]
        kind = "rank" if kind.startswith("rank") else "shape" if kind.startswith("shape") else kind
        self.bad[kind] += 1
        log.warning("bad mel-spectrogram %s: %s; skipped", location, reason)

    def merge(self, other: "MelReport") -> None:
        self.ok, self.missing = self.ok + other.ok, self.missing + other.missing
        self.bad.update(other.bad)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "missing": self.missing, "bad": dict(sorted(self.bad.items()))}

    def summary(self) -> str:
        bad = ", ".join(f"{n} {kind}" for kind, n in sorted(self.bad.items())) or "none"
        return f"mel-spectrograms: {self.ok} read, {sum(self.bad.values())} bad ({bad}), {self.missing} missing"


def write_tars(arrays, out: Path, n_tars: int = 40) -> list[Path]:
    """Write ``arrays`` (an iterable of (song_id, array)) as ``out/arena_mel_{i}.tar`` in the real layout:
    folder ``song_id // 1000`` goes to tar ``(song_id // 1000) % n_tars``. Returns the tars written."""
    out.mkdir(parents=True, exist_ok=True)
    archives: dict[int, tarfile.TarFile] = {}
    try:
        for song_id, array in arrays:
            folder = song_id // 1000
            index = folder % n_tars
            if index not in archives:
                archives[index] = tarfile.open(out / f"arena_mel_{index}.tar", "w", format=tarfile.USTAR_FORMAT)
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            info = tarfile.TarInfo(f"arena_mel/{folder}/{song_id}.npy")
            info.size = buffer.tell()
            buffer.seek(0)
            archives[index].addfile(info, buffer)
    finally:
        for archive in archives.values():
            archive.close()
    return [out / f"arena_mel_{i}.tar" for i in sorted(archives)]
