"""nDCG exactly as the official Kakao Arena evaluator (``evaluate.py``) computes it, with its checks.

Per playlist: ``DCG = sum over hits of 1/log(i + 2)`` (i = 0-based rank in the recommendation),
divided by the ideal DCG of ``len(gt)`` hits. Songs are scored on the first 100 recommendations, tags on
the first 10; each is averaged over the recommended playlists; ``score = 0.85 * music + 0.15 * tag``.

The official checks, each a :class:`InvalidResults` here: the result ids are exactly the answer ids,
every playlist has exactly 100 songs and 10 tags, none repeated. Cases the official script crashes on
(an answer with no songs or tags, or with more than 100 songs / 10 tags) are refused with a message.
Duplicate result ids, which the official script averages in silently, are refused too.
"""

from __future__ import annotations

import math
from collections import defaultdict

SONGS_PER_PLAYLIST = 100
TAGS_PER_PLAYLIST = 10
MUSIC_WEIGHT, TAG_WEIGHT = 0.85, 0.15

# The official table: _idcgs[n] = sum_{i<n} 1/ln(i+2), n = 0..100 (natural log; the base cancels).
IDCG = [sum(1.0 / math.log(i + 2) for i in range(n)) for n in range(SONGS_PER_PLAYLIST + 1)]

QUESTION_TYPES = ("songs-only", "songs+tags", "tags-only", "title-only", "empty")


class InvalidResults(ValueError):
    """A results file the official evaluator would reject (or crash on)."""


def ndcg(gt: list, rec: list) -> float:
    """One playlist's nDCG of ``rec`` against the relevant items ``gt`` (official formula)."""
    relevant = set(gt)
    dcg = sum(1.0 / math.log(i + 2) for i, item in enumerate(rec) if item in relevant)
    return dcg / IDCG[len(gt)]


def question_type(question: dict) -> str:
    """Which of QUESTION_TYPES a question is, from what it gives (songs, tags, a non-blank title)."""
    has_songs, has_tags = bool(question.get("songs")), bool(question.get("tags"))
    if has_songs and has_tags:
        return "songs+tags"
    if has_songs:
        return "songs-only"
    if has_tags:
        return "tags-only"
    if str(question.get("plylst_title", "")).strip():
        return "title-only"
    return "empty"


def check_results(answers: list[dict], results: list[dict]) -> None:
    """Raise InvalidResults unless ``results`` passes the official validity checks against ``answers``."""
    seen: set = set()
    for r in results:
        if r["id"] in seen:
            raise InvalidResults(f"playlist id {r['id']} appears more than once in the results")
        seen.add(r["id"])
    gt_ids = {a["id"] for a in answers}
    if gt_ids != seen:
        missing, extra = sorted(gt_ids - seen), sorted(seen - gt_ids)
        raise InvalidResults(
            f"result playlist ids differ from the answers: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(extra)} unexpected (e.g. {extra[:5]})"
        )
    for r in results:
        for field, want in (("songs", SONGS_PER_PLAYLIST), ("tags", TAGS_PER_PLAYLIST)):
            if len(r[field]) != want:
                raise InvalidResults(f"playlist id {r['id']}: {len(r[field])} {field}, exactly {want} required")
            if len(set(r[field])) != want:
                raise InvalidResults(f"playlist id {r['id']}: repeated {field} (each must be recommended once)")
    for a in answers:
        for field, limit in (("songs", SONGS_PER_PLAYLIST), ("tags", TAGS_PER_PLAYLIST)):
            if not a[field]:
                raise InvalidResults(f"answer id {a['id']} has no {field}: its nDCG is undefined (0/0)")
            if len(a[field]) > limit:
                raise InvalidResults(
                    f"answer id {a['id']} has {len(a[field])} {field}; answers hold at most {limit} (see data.split)"
                )


def evaluate(answers: list[dict], results: list[dict], questions: list[dict] | None = None) -> dict:
    """Scores of ``results`` against ``answers``: music_ndcg, tag_ndcg, score, n, and by_type with questions."""
    check_results(answers, results)
    gt = {a["id"]: a for a in answers}
    qtype = {}
    if questions is not None:
        qtype = {q["id"]: question_type(q) for q in questions}
        if set(qtype) != set(gt):
            raise InvalidResults("the questions file holds other playlist ids than the answers file")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in results:
        a = gt[r["id"]]
        music = ndcg(a["songs"], r["songs"][:SONGS_PER_PLAYLIST])
        tag = ndcg(a["tags"], r["tags"][:TAGS_PER_PLAYLIST])
        for key in ("all", qtype.get(r["id"])):
            if key is not None:
                sums[key][0] += music
                sums[key][1] += tag
                sums[key][2] += 1

    def summary(music: float, tag: float, n: int) -> dict:
        music, tag = music / n, tag / n
        return {"music_ndcg": music, "tag_ndcg": tag, "score": MUSIC_WEIGHT * music + TAG_WEIGHT * tag, "n": n}

    out = summary(*sums["all"])
    if questions is not None:
        out["by_type"] = {t: summary(*sums[t]) for t in QUESTION_TYPES if t in sums}
    return out
