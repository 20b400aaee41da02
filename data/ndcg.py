"""nDCG exactly as the official Kakao Arena evaluator (``evaluate.py``) computes it, with its checks.

Per playlist: ``DCG = sum over hits of 1/log(i + 2)`` (i = 0-based rank in the recommendation),
divided by the ideal DCG of ``len(gt)`` hits. Songs are scored on the first 100 recommendations, tags on
the first 10; each is averaged over the recommended playlists; ``score = 0.85 * music + 0.15 * tag``.

The official checks, each a :class:`InvalidResults` here: the result ids are exactly the answer ids,
every playlist has exactly 100 songs and 10 tags, none repeated. Cases the official script crashes on
(an answer with no songs or tags, or with more than 100 songs / 10 tags) are refused with a message.
Duplicate result ids, which the official script averages in silently, are refused too.

:func:`evaluate` takes records as the readers of ``data.melon`` return them, and checks their shape
first, so that a malformed record (not an object, a field missing, ``songs`` not a list of integers,
``tags`` not a list of strings, a repeated answer item, a repeated answer/question id) is an
``InvalidResults`` naming the list (``answers``, ``results``, ``questions``), the record index and id, and
the field, never a ``KeyError`` or ``TypeError``. Integers may be Python or numpy integers (not bools).
Extra fields are ignored; recommended ids that exist nowhere simply score no hit. Nothing to score
(no answers) is an ``InvalidResults`` too, not a division by zero.
"""

from __future__ import annotations

from collections import defaultdict
from numbers import Integral
from typing import Any

from data.task import QUESTION_TYPES, SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST, InvalidResults, ndcg, question_type

MUSIC_WEIGHT, TAG_WEIGHT = 0.85, 0.15


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _int_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list, got {type(value).__name__}"
    for position, item in enumerate(value):
        if not _is_int(item):
            return f"item {position}: expected an integer, got {type(item).__name__} {item!r:.40}"
    return None


def _str_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list, got {type(value).__name__}"
    for position, item in enumerate(value):
        if not isinstance(item, str):
            return f"item {position}: expected a string, got {type(item).__name__} {item!r:.40}"
    return None


def _title(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {type(value).__name__} {value!r:.40}"


def _check_shape(name: str, records: Any, required: dict, optional: dict | None = None, unique_items: bool = False) -> None:
    """InvalidResults naming ``name``, the record and the field, unless every record has the fields' types."""
    optional = optional or {}
    if not isinstance(records, list):
        raise InvalidResults(f"{name}: expected a list of records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidResults(f"{name}: record {index}: expected an object, got {type(record).__name__}")
        rid = record.get("id")
        where = f"{name}: record {index}" + (f" (id={rid})" if _is_int(rid) else "")
        if not _is_int(rid):
            raise InvalidResults(f"{where}: field 'id': expected an integer, got {type(rid).__name__} {rid!r:.40}"
                                 if "id" in record else f"{where}: field 'id' is missing")
        for field, check in {**required, **optional}.items():
            if field not in record:
                if field in optional:
                    continue
                raise InvalidResults(f"{where}: field '{field}' is missing")
            problem = check(record[field])
            if problem is None and unique_items and field in ("songs", "tags") \
                    and len(set(record[field])) != len(record[field]):
                problem = "contains duplicates"
            if problem:
                raise InvalidResults(f"{where}: field '{field}': {problem}")


def _check_unique_ids(name: str, records: list[dict]) -> None:
    first: dict = {}
    for index, record in enumerate(records):
        if record["id"] in first:
            raise InvalidResults(f"{name}: record {index} (id={record['id']}): duplicate id "
                                 f"(first at record {first[record['id']]})")
        first[record["id"]] = index


def check_results(answers: list[dict], results: list[dict]) -> None:
    """Raise InvalidResults unless ``results`` passes the official validity checks against ``answers``."""
    _check_shape("answers", answers, {"songs": _int_list, "tags": _str_list}, unique_items=True)
    _check_shape("results", results, {"songs": _int_list, "tags": _str_list})
    _check_unique_ids("answers", answers)
    if not answers:
        raise InvalidResults("the answers hold no playlists: there is nothing to score")
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


def _question_ndcgs(gt: dict, results: list[dict]) -> dict:
    return {r["id"]: (ndcg(gt[r["id"]]["songs"], r["songs"][:SONGS_PER_PLAYLIST]),
                      ndcg(gt[r["id"]]["tags"], r["tags"][:TAGS_PER_PLAYLIST])) for r in results}


def question_scores(answers: list[dict], results: list[dict]) -> dict:
    """Each question's own score (0.85 music nDCG + 0.15 tag nDCG) by playlist id, after the same checks as
    ``evaluate``: for paired comparisons of two systems on the same questions."""
    check_results(answers, results)
    return {pid: MUSIC_WEIGHT * music + TAG_WEIGHT * tag
            for pid, (music, tag) in _question_ndcgs({a["id"]: a for a in answers}, results).items()}


def evaluate(answers: list[dict], results: list[dict], questions: list[dict] | None = None) -> dict:
    """Scores of ``results`` against ``answers``: music_ndcg, tag_ndcg, score, n, and by_type with questions."""
    check_results(answers, results)
    gt = {a["id"]: a for a in answers}
    qtype = {}
    if questions is not None:
        _check_shape("questions", questions, {}, {"songs": _int_list, "tags": _str_list, "plylst_title": _title})
        _check_unique_ids("questions", questions)
        qtype = {q["id"]: question_type(q) for q in questions}
        if set(qtype) != set(gt):
            raise InvalidResults("the questions file holds other playlist ids than the answers file")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for pid, (music, tag) in _question_ndcgs(gt, results).items():
        for key in ("all", qtype.get(pid)):
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
