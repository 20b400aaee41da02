"""The audio path: the arena_mel reader on real-format files (tars and a folder, bad files among them; corrupt
and cut-off archives, cut-off, non-finite and empty members, songs found twice), the
synthetic audio's determinism, mel shards from data.preprocess, and the CNN trained with two real Horovod
ranks (equal weights, resume, better than genre popularity on songs it never trained on)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from data.mel import BadMel, MelReport, MelSource, check_mel, write_tars
from tests.conftest import REPO, load, mpirun, run_module

FRAMES = 32


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def object_npy() -> bytes:
    """An npy file of a pickled object array (its header says so; the payload is never read)."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\x80\x04N."


def write_bad_files(root: Path, ids: list[int]) -> dict[int, str]:
    """An arena_mel/ folder under ``root`` with one bad file per kind of fault, for the 5 song ``ids``; returns
    {song id: the reason's first word}."""
    faults = [npy(np.zeros((48, 10, 2), np.float32)), npy(np.zeros((40, 10), np.float32)),
              npy(np.full((48, 10), np.nan, np.float32)), b"not an npy file at all",
              object_npy()]
    bad = dict(zip(ids, faults))
    for song, raw in bad.items():
        path = root / "arena_mel" / str(song // 1000) / f"{song}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    return dict(zip(ids, ("rank", "shape", "holds", "not", "not")))


def test_reader_finds_tars_and_folder_and_names_every_bad_file(tmp_path, caplog):
    good = {s: np.random.default_rng(s).normal(size=(48, 5 + s)).astype(np.float16) for s in (3, 1500, 2999)}
    write_tars(sorted(good.items()), tmp_path, n_tars=2)
    reasons = write_bad_files(tmp_path, list(range(5000, 5005)))
    (tmp_path / "arena_mel" / "7").mkdir()
    (tmp_path / "arena_mel" / "7" / "123.npy").write_bytes(npy(np.zeros((48, 3), np.float32)))  # not in folder 0
    source = MelSource(tmp_path)
    assert sorted(source.locations) == sorted(good) + sorted(reasons)
    assert source.unexpected == 1
    assert {p.name for p in tmp_path.glob("arena_mel_*.tar")} == {"arena_mel_0.tar", "arena_mel_1.tar"}
    for song, array in good.items():
        assert np.array_equal(source.read(song), array.astype(np.float32))
    report = MelReport()
    for song, word in reasons.items():
        with pytest.raises(BadMel) as e:
            source.read(song)
        assert str(e.value).startswith(word)
        report.bad_file(source.locations[song], str(e.value))
    assert report.as_dict()["bad"] == {"holds NaN or inf": 1, "not a valid npy file": 2, "rank": 1, "shape": 1}
    assert "5003.npy" in caplog.text and "5 bad" in report.summary()


def test_check_mel_refuses_pickles_and_integers():
    with pytest.raises(BadMel, match="not a valid npy"):
        check_mel(object_npy())
    with pytest.raises(BadMel, match="dtype"):
        check_mel(npy(np.zeros((48, 4), np.int32)))
    assert check_mel(npy(np.zeros((48, 4), np.float64))).dtype == np.float32


def test_no_mel_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no arena_mel"):
        MelSource(tmp_path)


# ------------------------------------------------------------------ damaged archives and members
def mel(song: int, frames: int = 6) -> np.ndarray:
    """A good [48, frames] float32 spectrogram, different for every song."""
    return np.random.default_rng(song).normal(size=(48, frames)).astype(np.float32)


def member(song: int) -> str:
    return f"arena_mel/{song // 1000}/{song}.npy"


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> dict[str, tarfile.TarInfo]:
    """A real uncompressed tar at ``path`` holding the (name, bytes) ``members`` in order; returns each member's
    header as written ({name: TarInfo}: its ``offset`` and ``offset_data``, to damage the file at a known place)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    with tarfile.open(path, "r:") as archive:
        return {m.name: m for m in archive.getmembers()}


def read_pass(root: Path) -> tuple[MelSource, dict[int, np.ndarray], MelReport]:
    """Scan ``root`` and read every song found the way data.preprocess does: the scan's locations as plain values
    (what rank 0 sends), one archive cache for all reads, a bad file reported and skipped (mel_records.write_shards).
    Returns (the scanned source, {song: array} of the songs read, the report)."""
    scanned = MelSource(root)
    source = MelSource.from_locations({s: (str(w.path), w.member) for s, w in scanned.locations.items()})
    arrays, report, archives = {}, MelReport(), {}
    try:
        for song in sorted(source.locations):
            try:
                arrays[song] = source.read(song, archives)
            except BadMel as e:
                report.bad_file(source.locations[song], str(e))
                continue
            report.ok += 1
    finally:
        for archive in archives.values():
            archive.close()
    return scanned, arrays, report


def assert_arrays(arrays: dict[int, np.ndarray], expected: dict[int, np.ndarray]) -> None:
    assert sorted(arrays) == sorted(expected)
    for song, array in expected.items():
        assert arrays[song].dtype == np.float32 and np.array_equal(arrays[song], array), song


def good_tars(root: Path) -> dict[int, np.ndarray]:
    """Two good archives (arena_mel_0.tar: songs 1, 2; arena_mel_1.tar: song 1001) beside the damaged one."""
    good = {s: mel(s) for s in (1, 2, 1001)}
    write_tars(sorted(good.items()), root, n_tars=2)
    return good


def _cut_header(raw: bytes, headers: dict) -> bytes:
    return raw[:headers[member(5002)].offset + 100]


def _damaged_header(raw: bytes, headers: dict) -> bytes:
    start = headers[member(5002)].offset
    return raw[:start] + np.random.default_rng(1).bytes(512) + raw[start + 512:]


@pytest.mark.parametrize("damage, kept", [
    (lambda raw, headers: np.random.default_rng(0).bytes(3000), []),  # not a tar at all
    (_damaged_header, [5001]),  # the 2nd header garbled: tarfile alone would end the listing quietly there
    (_cut_header, [5001]),  # the file ends inside the 2nd header: tarfile alone would end quietly too
], ids=["random bytes", "damaged header", "cut inside a header"])
def test_corrupt_archive_is_reported_counted_and_the_rest_read(tmp_path, caplog, damage, kept):
    good = good_tars(tmp_path)
    tar = tmp_path / "arena_mel_5.tar"
    songs = {s: mel(s) for s in (5001, 5002, 5003)}
    headers = write_tar(tar, [(member(s), npy(a)) for s, a in songs.items()])
    tar.write_bytes(damage(tar.read_bytes(), headers))
    scanned, arrays, report = read_pass(tmp_path)
    assert scanned.corrupt_archives == 1 and scanned.found()["corrupt_archives"] == 1
    assert f"corrupt mel archive {tar}: " in caplog.text
    if kept:
        assert f"kept the 1 files listed before the fault (the last {member(5001)})" in caplog.text
    assert_arrays(arrays, {**good, **{s: songs[s] for s in kept}})
    assert report.ok == len(good) + len(kept) and not report.bad


@pytest.mark.parametrize("cut", ["archive ends inside the member", "npy shorter than its header says"])
def test_truncated_member_is_reported_counted_and_the_rest_read(tmp_path, caplog, cut):
    good = good_tars(tmp_path)
    tar = tmp_path / "arena_mel_5.tar"
    songs = {s: mel(s) for s in (5001, 5002, 5003)}
    bad = 5003 if cut.startswith("archive") else 5002
    raws = {s: npy(a) for s, a in songs.items()}
    if bad == 5002:
        raws[bad] = raws[bad][:-100]
    headers = write_tar(tar, [(member(s), raw) for s, raw in raws.items()])
    if bad == 5003:
        tar.write_bytes(tar.read_bytes()[:headers[member(5003)].offset_data + 100])
    scanned, arrays, report = read_pass(tmp_path)
    reason = "unreadable" if bad == 5003 else "not a valid npy file"
    assert report.as_dict()["bad"] == {reason: 1} and "1 bad" in report.summary()
    assert f"bad mel-spectrogram {tar}:{member(bad)}: {reason} (" in caplog.text
    # the members before the cut are read whole, from the same cached archive as the cut one
    assert_arrays(arrays, {**good, **{s: a for s, a in songs.items() if s != bad}})
    assert report.ok == len(good) + 2
    assert scanned.corrupt_archives == (1 if bad == 5003 else 0)  # the cut archive is reported as well


def _with_value(value):
    array = mel(5002)
    array[17, 3] = value
    return array


@pytest.mark.parametrize("bad_array, reason, said", [
    (_with_value(np.inf), "holds NaN or inf", "holds NaN or inf"),
    (_with_value(-np.inf), "holds NaN or inf", "holds NaN or inf"),
    (_with_value(np.nan), "holds NaN or inf", "holds NaN or inf"),
    (np.zeros((48, 0), np.float32), "shape", "shape (48, 0), expected [48, T] with T >= 1"),  # T = 0
], ids=["inf", "-inf", "nan", "no frames"])
def test_member_with_inf_nan_or_no_frames_is_reported_counted_and_the_rest_read(tmp_path, caplog, bad_array, reason,
                                                                                  said):
    good = good_tars(tmp_path)
    tar = tmp_path / "arena_mel_5.tar"
    songs = {5001: mel(5001), 5002: bad_array, 5003: mel(5003, frames=1)}
    write_tar(tar, [(member(s), npy(a)) for s, a in songs.items()])
    scanned, arrays, report = read_pass(tmp_path)
    assert report.as_dict()["bad"] == {reason: 1} and "1 bad" in report.summary()
    assert f"bad mel-spectrogram {tar}:{member(5002)}: {said}" in caplog.text
    assert_arrays(arrays, {**good, 5001: songs[5001], 5003: songs[5003]})
    assert report.ok == len(good) + 2 and scanned.corrupt_archives == 0


def test_song_in_two_tars_keeps_the_first_by_sorted_path_and_reports_the_others(tmp_path, caplog):
    first, second, third = mel(5), mel(5) + 1, mel(5) + 2
    later, earlier = tmp_path / "arena_mel_7.tar", tmp_path / "arena_mel_3.tar"
    write_tar(later, [(member(1005), npy(mel(1005))), (member(5), npy(second))])  # written first, sorted last
    write_tar(earlier, [(member(5), npy(first)), (member(6), npy(mel(6)))])
    folder_copy = tmp_path / "arena_mel" / "0" / "5.npy"  # and a third copy in the folder, after every tar
    folder_copy.parent.mkdir(parents=True)
    folder_copy.write_bytes(npy(third))
    scanned, arrays, report = read_pass(tmp_path)
    assert scanned.duplicates == 2 and scanned.found()["duplicates"] == 2
    kept = f"{earlier}:{member(5)} kept"
    assert f"duplicate mel-spectrogram of song 5: {later}:{member(5)}; skipped, {kept}" in caplog.text
    assert f"duplicate mel-spectrogram of song 5: {folder_copy}; skipped, {kept}" in caplog.text
    assert_arrays(arrays, {5: first, 6: mel(6), 1005: mel(1005)})
    assert report.ok == 3 and not report.bad


def test_synthetic_audio_is_deterministic_and_carries_the_theme(tmp_path):
    from data.synth import Generator
    from data.synth_audio import AudioModel

    gen = Generator("tiny", seed=5)
    gen._themes()
    gen._catalogue()
    songs = np.arange(0, 3000, 7)
    first, second = AudioModel(gen, 5, FRAMES).block(songs), AudioModel(gen, 5, FRAMES).block(songs)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], AudioModel(gen, 6, FRAMES).block(songs)[0])
    assert all(a.shape[0] == 48 and 1 <= a.shape[1] <= FRAMES and a.dtype == np.float16 for a in first)
    # songs of one theme are nearer each other than songs of different themes (mean spectra, centred)
    spectra = np.stack([a.astype(np.float32).mean(axis=1) for a in first])
    spectra -= spectra.mean(axis=0)
    spectra /= np.linalg.norm(spectra, axis=1, keepdims=True)
    cosine, theme = spectra @ spectra.T, gen.song_theme[songs]
    same = theme[:, None] == theme[None, :]
    np.fill_diagonal(same, False)
    different = theme[:, None] != theme[None, :]
    assert cosine[same].mean() > cosine[different].mean() + 0.2


# ------------------------------------------------------------------ mel shards and the CNN
@pytest.fixture(scope="module")
def mel_work(tmp_path_factory):
    """A tiny data set with audio (32 frames a song) and bad files, its split, and work directories written with
    1 and 2 ranks; returns (data, np1 work, np2 work, the bad files' reasons)."""
    root = tmp_path_factory.mktemp("mel")
    data, split = root / "data", root / "split"
    run_module("data.synth", "--scale", "tiny", "--seed", "4", "--out", data, "--mel", "played", "--mel-frames", FRAMES)
    run_module("data.split", data / "train.json", "--out", split, "--seed", "777")
    meta_ids = len(load(data / "song_meta.json"))
    have = set(MelSource(data).locations)  # the bad files go to songs without audio
    reasons = write_bad_files(data, [s for s in range(meta_ids) if s not in have][-5:])
    config = yaml.safe_load((REPO / "configs/data.yaml").read_text(encoding="utf-8"))
    config["mel"]["frames"] = FRAMES
    (root / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    works = []
    for n in (1, 2):
        proc = mpirun(n, "--split", split, "--meta", data, "--out", root / f"np{n}", "--mel", data, "--config",
                      root / "data.yaml")
        works.append(root / f"np{n}")
    return data, works[0], works[1], reasons, proc.stderr


@pytest.mark.slow  # preprocessing with spectrograms at 1 and 2 ranks (26 s): kept out of the fast tier
def test_mel_shards_are_the_same_for_any_rank_count_and_report_bad_files(mel_work):
    data, np1, np2, reasons, log = mel_work
    m1, m2 = load(np1 / "manifest.json"), load(np2 / "manifest.json")
    for kind in ("mel_train", "mel_holdout", "mel_rest"):
        assert [s["sha256"] for s in m1["shards"][kind]] == [s["sha256"] for s in m2["shards"][kind]]
    assert m1["mel"]["report"]["bad"] == {"holds NaN or inf": 1, "not a valid npy file": 2, "rank": 1, "shape": 1}
    assert m1["mel"]["report"]["ok"] == load(data / "synth_info.json")["mel"]["count"]
    assert "5 bad" in log and all(f"{song}.npy" in log for song in reasons)
    records = {k: sum(s["records"] for s in m1["shards"][k]) for k in ("mel_train", "mel_holdout", "mel_rest")}
    assert records["mel_holdout"] > 0.02 * records["mel_train"] and records["mel_rest"] > 0


@pytest.mark.slow  # preprocessing with spectrograms at 1 and 2 ranks (26 s): kept out of the fast tier
def test_mel_records_hold_the_song_its_labels_and_fixed_frames(mel_work):
    from data.mel_records import song_labels
    from data.pipeline import mel_dataset

    data, np1 = mel_work[0], mel_work[1]
    manifest, vocab = load(np1 / "manifest.json"), load(np1 / "vocab.json")
    train = load(np1.parent / "split/orig/train.json")
    tags, genres, codes = song_labels(train, load(data / "song_meta.json"), {t: i for i, (t, _) in
                                                                           enumerate(vocab["tags"])}, 5)
    assert codes == manifest["mel"]["genres"]
    batch = next(iter(mel_dataset(np1, "mel_holdout", 16)))
    source = MelSource(data)
    for i, song in enumerate(batch["id"].numpy().tolist()):
        own = source.read(song)
        stored = batch["mel"].numpy()[i]
        assert stored.shape == (48, FRAMES)
        assert np.array_equal(stored[:, :own.shape[1]], own[:, :FRAMES])
        assert [t for t in batch["tags"].numpy()[i] if t >= 0] == tags[song] and tags[song]
        assert [g for g in batch["genres"].numpy()[i] if g >= 0] == genres[song]


def train_cnn(work, out, *extra, np_=2):
    cmd = ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/cnn.py"), "--work", str(work), "--out",
           str(out), "--set", "model.crop_frames=24", "--set", "train.warmup_steps=50",
           "--set", "train.lr_multiplier=0.5", *map(str, extra)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def rank_checksums(output):
    """The list of the closing checksum line; another rank's output can share the line after it."""
    return re.search(r"weight checksums by rank: \[([^\]]+)\]", output).group(1).split(", ")


def assert_cold_start_reads_results_files(work, index, tmp_path):
    """bench.cnn's cold-start recall over a results file that holds each question's answer songs (recall 1) and
    one that holds none of them (recall 0), beside the audio rule's."""
    from bench.cnn import cold_start

    answers = load(work / "eval/answers.json")
    oracle = [{"id": a["id"], "songs": a["songs"][:100], "tags": a["tags"][:10]} for a in answers]
    empty = [{"id": a["id"], "songs": [], "tags": []} for a in answers]
    files = {"oracle": tmp_path / "oracle.json", "empty": tmp_path / "empty.json"}
    for name, records in (("oracle", oracle), ("empty", empty)):
        files[name].write_text(json.dumps(records), encoding="utf-8")
    measured = cold_start(work, index, work.parent / "split", files)
    recall = measured["recall_at_100"]
    assert measured["questions"] > 0 and recall["empty"] == 0.0 and 0.0 <= recall["audio"] <= 1.0
    assert recall["oracle"] > 0.9  # below 1 only where a question holds more than 100 answer songs


@pytest.mark.slow
def test_cnn_two_ranks_equal_weights_resume_and_beats_genre_popularity(mel_work, tmp_path):
    from bench.cnn import tag_quality
    from inference.audio import build_index

    work = mel_work[1]
    whole = train_cnn(work, tmp_path / "whole", "--set", "train.epochs=8", "--set", "model.dropout=0.0")
    checksums = rank_checksums(whole)
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    quality = tag_quality(work, build_index(work, tmp_path / "whole", kinds=("mel_holdout",)))
    # on songs it never trained on, better than the tags most popular in the song's genres: the genre prior
    # (model.genre_input) gives it what genre popularity knows, the audio what it does not
    assert quality["ndcg_at_10"]["cnn"] > quality["ndcg_at_10"]["genre_popularity"] > quality["ndcg_at_10"]["popularity"]
    assert_cold_start_reads_results_files(work, build_index(work, tmp_path / "whole"), tmp_path)
    # resumed after 2 epochs: the same weights as the run trained in one go to 3
    train_cnn(work, tmp_path / "resumed", "--set", "train.epochs=2", "--set", "model.dropout=0.0")
    resumed = train_cnn(work, tmp_path / "resumed", "--set", "train.epochs=3", "--set", "model.dropout=0.0")
    assert "resum" in resumed.lower()
    straight = train_cnn(work, tmp_path / "straight", "--set", "train.epochs=3", "--set", "model.dropout=0.0")
    assert rank_checksums(resumed) == rank_checksums(straight)


@pytest.mark.slow  # a horovodrun start (15 s): kept out of the fast tier
def test_cnn_refuses_a_work_directory_without_mel_shards(workdirs, tmp_path):
    proc = subprocess.run(["horovodrun", "-np", "1", sys.executable, str(REPO / "hvd_train/cnn.py"), "--work",
                           str(workdirs[0]), "--out", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no mel-spectrogram shards" in proc.stdout + proc.stderr
