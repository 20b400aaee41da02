"""The audio member: songs that no vocabulary member can propose, by how they sound, in the tail of each list.

Every other member of the ensemble ranks the DAE's song vocabulary (songs of enough training playlists);
an answer song outside it can only come from its content. This member ranks the songs that have a
mel-spectrogram in the work directory and lie outside the vocabulary (songs of no training playlist
included), per question, by

    score(song) = cos(e_song, mean of e_given) + sum over the song's predicted tags that the question gives of
                  their predicted probability

``e``: the song's audio embedding (inference/audio.py's index: centred, unit length); the first term
needs given songs with audio, the second given tags (a title-only question gets nothing). Never a given
song, never one released after the question's update date.

Its proposals replace the last ``slots[type]`` songs of the ensemble's 100, question type by type.
``fit_slots`` chooses each type's number from :data:`SLOTS` on the protocol's tuning questions (the mean
song nDCG@100 with the tail replaced, 0 allowed: a member that does not help there is left out), stored
in the blend file under ``audio`` with the CNN export's hash (inference/fit_blend.py ``--audio``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.task import QUESTION_TYPES, ndcg, question_type
from inference.audio import INDEX_FILE, AudioError, export_hash, read_index
from inference.exports import load_export
from models.ranking import top_rows

SLOTS = (0, 2, 5, 10, 20, 40)


class AudioMember:
    """The index of a CNN run (RUNDIR/audio_index.npz, ``python -m inference.audio index``) restricted to the
    songs outside the vocabulary ``vocab_songs`` (song ids)."""

    def __init__(self, rundir: Path, workdir: Path, manifest: dict, vocab_songs: np.ndarray, n_tags: int):
        from scipy import sparse

        rundir = Path(rundir)
        load_export(rundir, ("cnn",), manifest, workdir)  # trained on this work directory, or ExportError
        path = rundir / INDEX_FILE
        if not path.is_file():
            raise AudioError(f"{path} is missing: build it with python -m inference.audio index --work {workdir} "
                             f"--model {rundir}")
        index = read_index(path, rundir)
        self.weights_sha256 = export_hash(rundir)
        self.all_ids, self.all_vectors = index["song_ids"], index["embeddings"]
        self.row_of = {s: i for i, s in enumerate(self.all_ids.tolist())}  # song id -> its row in the index
        outside = ~np.isin(self.all_ids, vocab_songs)
        self.ids, self.vectors = self.all_ids[outside], self.all_vectors[outside]
        tags, probabilities = index["tags"][outside], index["tag_scores"][outside]
        rows = np.repeat(np.arange(len(self.ids)), tags.shape[1])
        # [n_outside, n_tags]: each song's predicted probability of its top predicted tags, 0 elsewhere
        self.predicted = sparse.csr_matrix((probabilities.reshape(-1).astype(np.float32), (rows, tags.reshape(-1))),
                                           shape=(len(self.ids), n_tags))

    def propose(self, questions: list[dict], tag_index: dict, days: np.ndarray, release_dates: np.ndarray,
                k: int, batch: int = 256) -> list[list[int]]:
        """Each question's best ``k`` songs outside the vocabulary (song ids, best first; [] when the question
        gives neither songs with audio nor tags). ``tag_index``: tag -> vocabulary index; ``days``: [Q] update
        days; ``release_dates``: by song id. Scored ``batch`` questions at a time ([batch, n_outside] floats)."""
        if not len(self.ids) or k <= 0:
            return [[] for _ in questions]
        return [songs for start in range(0, len(questions), batch)
                for songs in self._propose(questions[start:start + batch], tag_index, days[start:start + batch],
                                           release_dates, k)]

    def _propose(self, questions: list[dict], tag_index: dict, days: np.ndarray, release_dates: np.ndarray,
                 k: int) -> list[list[int]]:
        query = np.zeros((len(questions), self.vectors.shape[1]), dtype=np.float32)
        usable = np.zeros(len(questions), dtype=bool)
        for i, q in enumerate(questions):
            mine = [self.row_of[s] for s in q["songs"] if s in self.row_of]
            if mine:
                query[i], usable[i] = self.all_vectors[mine].mean(axis=0), True
        given_tags = np.zeros((len(questions), self.predicted.shape[1]), dtype=np.float32)
        for i, q in enumerate(questions):
            for t in q["tags"]:
                if t in tag_index:
                    given_tags[i, tag_index[t]], usable[i] = 1.0, True
        scores = query @ self.vectors.T + (self.predicted @ given_tags.T).T  # [Q, n_outside]
        scores[release_dates[self.ids][None, :] > days[:, None]] = -np.inf
        for i, q in enumerate(questions):
            scores[i, np.isin(self.ids, q["songs"])] = -np.inf
        best = top_rows(scores, k)
        finite = np.isfinite(np.take_along_axis(scores, best, axis=1))
        return [self.ids[row[keep]].tolist() if ok else [] for row, keep, ok in zip(best, finite, usable)]


def with_tail(songs: list[int], proposed: list[int], slots: int) -> list[int]:
    """``songs`` (the ensemble's 100) with its last ``slots`` replaced by the first of ``proposed`` that it
    does not already hold (fewer when fewer are proposed); still 100 unique songs."""
    held = set(songs)
    fresh = [s for s in proposed if s not in held][:slots]
    if not fresh:
        return songs
    keep = songs[: len(songs) - len(fresh)]
    return keep + fresh


def fit_slots(questions: list[dict], songs: list[list[int]], proposed: list[list[int]],
              answers: dict[int, list[int]]) -> tuple[dict, dict]:
    """Per question type, the number of tail slots from :data:`SLOTS` that maximises the mean song nDCG@100 of
    ``questions`` (the tuning questions; ``songs``: the ensemble's lists for them, ``proposed``: this member's
    proposals, ``answers``: id -> answer songs), the smallest on a tie; and the table {type: {slots: nDCG}}."""
    table: dict[str, dict[int, list[float]]] = {}
    for q, mine, extra in zip(questions, songs, proposed):
        truth = answers[q["id"]]
        if not truth:
            continue
        cells = table.setdefault(question_type(q), {m: [] for m in SLOTS})
        for m in SLOTS:
            cells[m].append(ndcg(truth, with_tail(mine, extra, m)))
    means = {t: {m: float(np.mean(v)) for m, v in cells.items()} for t, cells in table.items()}
    slots = {t: 0 for t in QUESTION_TYPES}
    for t, cells in means.items():
        slots[t] = max(SLOTS, key=lambda m: (cells[m], -m))
    return slots, means

