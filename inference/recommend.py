"""Recommend for one playlist given on the command line, and print a readable table.

    python -m inference.recommend --work WORKDIR --dae RUNDIR --title RUNDIR [--word2vec RUNDIR] \
        [--neighbours RUNDIR ...] --title-text "새벽 감성 발라드" [--songs 1,2,3] [--tags 힐링,새벽] \
        --meta DATA/song_meta.json [--date 2020-04-01] [--top 20]

The same ensemble as ``python -m inference`` (inference/ensemble.py; its trained members' flags from
inference/members.py) on a single question, with the reference design's blend (no blend file); song names and
artists come from ``song_meta.json`` (the one the work directory was built from: its sha256 is checked).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from data.melon import MelonDataError, load_song_meta, song_meta_path
from data.workdir import WorkdirError, sha256_file
from inference import members as registry
from inference.display import cell
from inference.ensemble import DEFAULT_CONFIG, Ensemble, Settings
from inference.exports import ExportError


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated song ids, got {text!r}") from None


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).strftime("%Y-%m-%d 00:00:00.000")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def table(result: dict, song_meta: list[dict], top: int) -> str:
    lines = [f"{'rank':>4}  {cell('song', 40)}  {cell('artists', 28)}  {'score':>7}"]
    for rank, (song, score) in enumerate(zip(result["songs"][:top], result["song_scores"] + [0.0] * top), 1):
        meta = song_meta[song] if 0 <= song < len(song_meta) else {}
        name = f"{meta.get('song_name', '?')} ({song})"
        artists = ", ".join(meta.get("artist_name_basket", []))
        lines.append(f"{rank:>4}  {cell(name, 40)}  {cell(artists, 28)}  {score:7.4f}")
    lines.append("")
    lines.append(f"{'rank':>4}  {cell('tag', 40)}  {'score':>7}")
    for rank, (tag, score) in enumerate(zip(result["tags"], result["tag_scores"] + [0.0] * 10), 1):
        lines.append(f"{rank:>4}  {cell(tag, 40)}  {score:7.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.recommend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    registry.add_flags(parser)  # --dae, --title, --word2vec, --neighbours: inference/members.py
    parser.add_argument("--title-text", default="", help="the playlist's title")
    parser.add_argument("--songs", type=_ids, default=[], help="comma-separated song ids it holds")
    parser.add_argument("--tags", type=lambda t: [x.strip() for x in t.split(",") if x.strip()], default=[],
                        help="comma-separated tags it holds")
    parser.add_argument("--date", type=_date, default=None,
                        help="its update date YYYY-MM-DD (songs released later are not recommended; default today)")
    parser.add_argument("--meta", type=Path, required=True, help="the song_meta.json the work directory was built from, or its data folder")
    parser.add_argument("--top", type=int, default=20, help="songs to show (all 100 are computed)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    runs = registry.given_runs(parser, args)

    args.meta = song_meta_path(args.meta)
    args.date = args.date or dt.date.today().strftime("%Y-%m-%d 00:00:00.000")
    question = {"id": 0, "plylst_title": args.title_text, "songs": list(dict.fromkeys(args.songs)),
                "tags": list(dict.fromkeys(args.tags)), "like_cnt": 0, "updt_date": args.date}
    try:
        ensemble = Ensemble(args.work, runs, Settings.load(args.config), args.neighbours)
        if sha256_file(args.meta) != ensemble.manifest["inputs"]["song_meta"]["sha256"]:
            raise ValueError(f"{args.meta} is not the song_meta.json {args.work} was built from (sha256 differs)")
        song_meta = load_song_meta(args.meta)
        result = ensemble.recommend([question], progress=False, scores=True)[0]
    except (MelonDataError, WorkdirError, ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    given = ", ".join(filter(None, [f"title {args.title_text!r}" if args.title_text else "",
                                    f"{len(question['songs'])} songs" if question["songs"] else "",
                                    f"tags {question['tags']}" if question["tags"] else ""])) or "nothing"
    print(f"playlist: {given}; updated {args.date[:10]}\n")
    print(table(result, song_meta, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
