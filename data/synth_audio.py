"""Synthetic mel-spectrograms for the synthetic data set (``python -m data.synth --mel played|all``).

Each song gets a log-mel array [48, T] (float16, roughly dB: -80 .. 0) in the real layout
(``arena_mel_{i}.tar`` holding ``arena_mel/{song_id // 1000}/{song_id}.npy``, data/mel.py), made from what
the generator knows about the song, so that audio carries a real but noisy signal about its tags:

    level[b] = -38 + 6 x (1.0 genre[b] + 0.8 theme[b] + 0.5 artist[b] + 0.8 own[b]) + loudness
    mel[b, t] = level[b] + 9 x onset[t] x low[b] + 4 x noise[b, t],    clipped to [-80, 0]

* ``genre``: the mean of smooth spectral envelopes (random over 6 knots across the 48 bins, unit
  variance), one per major genre of the song;
* ``theme``: the envelope of the song's theme (tags come from themes, data/synth.py, so this is the
  part of the audio that says most about its tags), and the theme's tempo, 70-160 bpm;
* ``artist``: the envelope of its main artist (a timbre shared by the artist's songs), and a tempo offset
  (N(0, 8) bpm);
* ``own``: an envelope of the song's own, unrelated to anything else (the noise that no amount of
  listening removes), a loudness offset N(0, 3);
* ``onset``: a decaying pulse every 60 / bpm seconds at 62.5 frames per second (the real arrays' 1,876
  frames are 30 s), weighted towards the low bins (``low``);
* ``noise``: i.i.d. N(0, 1) per bin and frame.

T is ``frames`` for 95% of the songs and uniform in [frames / 4, frames) for the rest (the real data has
shorter songs). The songs are ``played`` (every song of a playlist of train, val or test, answers included)
or ``all`` (the whole catalogue, unplayed songs too). Everything is drawn from a stream of its own,
seeded by the generator's seed: the playlists are the same with or without audio, and the same seed gives
byte-identical tars.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from data.mel import MEL_BINS, write_tars

FRAMES_PER_SECOND = 62.5
BLOCK = 1024  # songs generated at once
SONG_CHOICES = ("played", "all")


def envelopes(rng: np.random.Generator, n: int, knots: int = 6) -> np.ndarray:
    """[n, 48] smooth random spectral envelopes: N(0, 1) at ``knots`` points across the bins, linearly
    interpolated, each row scaled to unit standard deviation."""
    at = np.linspace(0, MEL_BINS - 1, knots)
    values = rng.standard_normal((n, knots))
    bins = np.arange(MEL_BINS)
    rows = np.stack([np.interp(bins, at, v) for v in values]) if n else np.zeros((0, MEL_BINS))
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(rows.std(axis=1, keepdims=True), 1e-6)


class AudioModel:
    """The per-genre, per-theme and per-artist parts of every song's spectrogram (see the module docstring)."""

    def __init__(self, gen, seed: int, frames: int):
        rng = np.random.default_rng([seed, 0x6D656C])  # "mel": a stream of its own
        self.rng, self.frames = rng, frames
        self.genre = envelopes(rng, len(gen.majors))
        self.theme = envelopes(rng, gen.K)
        self.theme_bpm = rng.uniform(70, 160, gen.K)
        n_artists = len(gen.artist_theme)
        self.artist = envelopes(rng, n_artists)
        self.artist_bpm = rng.normal(0, 8, n_artists)
        self.low = np.linspace(1.0, 0.0, MEL_BINS) ** 2  # onsets weigh on the low bins
        self.song_theme, self.song_artist, self.song_majors = gen.song_theme, gen.song_artist, gen.song_majors

    def block(self, songs: np.ndarray) -> list[np.ndarray]:
        """The arrays [48, T] (float16) of ``songs`` (ids, ascending), drawn in that order."""
        rng, n, frames = self.rng, len(songs), self.frames
        genre = np.stack([self.genre[self.song_majors[s]].mean(axis=0) for s in songs])
        theme, artist = self.theme[self.song_theme[songs]], self.artist[self.song_artist[songs]]
        level = -38 + 6 * (genre + 0.8 * theme + 0.5 * artist + 0.8 * envelopes(rng, n)) + rng.normal(0, 3, (n, 1))
        bpm = np.clip(self.theme_bpm[self.song_theme[songs]] + self.artist_bpm[self.song_artist[songs]], 50, 200)
        period = FRAMES_PER_SECOND * 60 / bpm  # frames between onsets
        phase = rng.uniform(0, 1, n) * period
        t = np.arange(frames)
        onset = np.exp(-((t[None, :] + phase[:, None]) % period[:, None]) / 4.0)  # [n, frames]
        mel = level[:, :, None] + 9 * onset[:, None, :] * self.low[None, :, None]
        mel += 4 * rng.standard_normal((n, MEL_BINS, frames))
        mel = np.clip(mel, -80, 0).astype(np.float16)
        short = rng.random(n) < 0.05
        lengths = np.where(short, rng.integers(max(1, frames // 4), frames, n), frames)
        return [mel[i, :, : lengths[i]] for i in range(n)]


def audio_songs(gen, files: dict, which: str) -> np.ndarray:
    """The song ids that get audio: ``played`` (in any playlist of ``files``, answers included) or ``all``."""
    if which == "all":
        return np.arange(len(gen.song_artist))
    lists = [p["songs"] for name in ("train", "val", "test", "answers/val", "answers/test") for p in files[name]]
    return np.unique(np.fromiter((s for songs in lists for s in songs), dtype=np.int64))


def write_synthetic_mel(gen, files: dict, out: Path, which: str, frames: int) -> dict:
    """Write the arrays of ``audio_songs(gen, files, which)`` as ``out/arena_mel_*.tar``; returns what
    ``synth_info.json`` records about them."""
    if which not in SONG_CHOICES:
        raise ValueError(f"mel songs must be one of {SONG_CHOICES}, got {which!r}")
    if frames < 4:
        raise ValueError("mel frames must be at least 4")
    started = time.perf_counter()
    model, songs = AudioModel(gen, gen.seed, frames), audio_songs(gen, files, which)

    def arrays():
        for start in range(0, len(songs), BLOCK):
            ids = songs[start:start + BLOCK]
            yield from zip(ids.tolist(), model.block(ids))

    tars = write_tars(arrays(), out)
    return {"songs": which, "frames": frames, "count": int(len(songs)), "tars": len(tars),
            "bytes": int(sum(t.stat().st_size for t in tars)), "seconds": round(time.perf_counter() - started, 1)}
