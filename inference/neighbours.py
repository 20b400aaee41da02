"""The ensemble's neighbour member: item-item CF over the work directory's training playlists.

    python -m inference.neighbours --work WORKDIR --out RUNDIR [--kind item_cf|playlist_cf|ease]
                                   [--config configs/neighbours.yaml] [--beta B] [--k K] [--power P]
                                   [--title-weight W] [--items N] [--lam L]

The settings come from configs/neighbours.yaml (shared with bench.peers' peers of the same names); a flag
overrides its value.

Items are the work directory's vocabulary songs and tags and the title tokenizer's pieces (input only: a
question's title pieces find neighbours, they are never recommended). ``X`` is the binary playlists x
items matrix of the training records. Three kinds (the same as bench/peers.py's ``item_cf``,
``playlist_cf`` and ``ease`` peers, on the vocabulary's items); the ensemble names the member by its kind:

* ``item_cf``: ``X``'s columns L2-normalised, so ``Xᵀ X`` is the item-item cosine; a question's score of
  item j is ``n_j ** beta * sum_i w_i cos(i, j)`` over its songs and tags (w = 1) and title pieces
  (w = title_weight, 1 for a title-only question), computed as ``(q Xnᵀ) Xn`` with no item-item matrix;
* ``playlist_cf``: the 2nd-place recipe's playlist neighbours: every playlist (training and question) a
  BM25-idf weighted, L2-normalised vector (title pieces weighted by title_weight); the ``k`` most similar
  training playlists vote ``sim ** power`` for their songs and tags;
* ``ease``: EASE (models/ease.py) over the ``items`` most frequent columns with penalty ``lam``, scores
  ``q @ B``; B is computed when the member is loaded (about ``items³`` flops).

RUNDIR/export holds ``weights.npz`` (X as CSR arrays; no pickle) and ``config.json`` (kind, settings, the
work directory's hashes). The member proposes the best unblocked candidates with a positive score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from data.melon import write_json
from data.records import decode
from data.workdir import WorkdirError, export_identity, verify_workdir
from inference.blend import Candidates
from inference.exports import load_export
from models.export import write_export
from models.ranking import top_rows

KINDS = ("item_cf", "playlist_cf", "ease")
SETTINGS_FILE = Path(__file__).resolve().parent.parent / "configs" / "neighbours.yaml"
SETTINGS_KEYS = {"item_cf": ("alpha", "beta", "title_weight"), "playlist_cf": ("k", "power", "title_weight"),
                 "ease": ("n_items", "lam", "title_weight"),
                 "als": ("factors", "regularization", "alpha", "iterations")}


class SettingsError(ValueError):
    """configs/neighbours.yaml (or a file in its place) is missing a method or a key, or has one too many."""


def neighbour_settings(path: Path = SETTINGS_FILE) -> dict:
    """{method: {key: number}} of configs/neighbours.yaml: every method of SETTINGS_KEYS with exactly its keys."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SettingsError(f"cannot read the neighbour settings {path}: {e}") from None
    if not isinstance(raw, dict) or set(raw) != set(SETTINGS_KEYS):
        raise SettingsError(f"{path}: expected the methods {sorted(SETTINGS_KEYS)}, found {sorted(raw)}")
    for method, keys in SETTINGS_KEYS.items():
        section = raw[method] or {}
        if set(section) != set(keys) or not all(isinstance(v, (int, float)) for v in section.values()):
            raise SettingsError(f"{path}: {method} needs exactly the numbers {list(keys)}, found {section}")
    return raw


def training_matrix(workdir: Path, n_songs: int, n_tags: int, n_pieces: int):
    """CSR [training playlists, n_songs + n_tags + n_pieces] float32, 1 per song, tag and title piece."""
    import scipy.sparse as sp
    import tensorflow as tf

    from data.pipeline import shard_files

    rows, cols = [], []
    files = shard_files(workdir, "train")
    for r, record in enumerate(tf.data.TFRecordDataset(files).map(decode).as_numpy_iterator()):
        items = np.concatenate([record["songs"], n_songs + record["tags"], n_songs + n_tags + record["title"]])
        items = np.unique(items)
        rows.append(np.full(len(items), r)), cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                         shape=(int(rows.max()) + 1, n_songs + n_tags + n_pieces))


class Neighbours:
    """Item-item scores for questions given as work-directory records (see the module docstring)."""

    def __init__(self, x, n_songs: int, n_tags: int, config: dict):
        import scipy.sparse as sp

        self.n_songs, self.n_tags, self.config = n_songs, n_tags, config
        self.width = x.shape[1]
        self.counts = np.asarray((x > 0).sum(axis=0), dtype=np.float64).ravel()
        if config["kind"] == "ease":
            from models.ease import EASE

            self.ease = EASE.fit(x, int(config["items"]), float(config["lam"]))
            self.target_of = np.flatnonzero(self.ease.columns < n_songs + n_tags)
        elif config["kind"] == "playlist_cf":
            self.idf = np.log1p((x.shape[0] - self.counts + 0.5) / (self.counts + 0.5)).astype(np.float32)
            self.idf[n_songs + n_tags:] *= float(config["title_weight"])
            self.train_t = self._bm25(x).T.tocsr()  # items x playlists
            self.targets = x[:, :n_songs + n_tags].tocsr()  # playlists x targets
        else:
            norms = np.sqrt(self.counts)
            norms[norms == 0] = 1.0
            xn = (x @ sp.diags((1.0 / norms).astype(np.float32))).tocsr()
            self.xn_t = xn.T.tocsr()  # items x playlists
            self.targets_t = self.xn_t[:n_songs + n_tags]

    def _query(self, records: list[dict]):
        """CSR [questions, items]: 1 per given song and tag, the title weight per title piece."""
        import scipy.sparse as sp

        weight = float(self.config["title_weight"])
        rows, cols, vals = [], [], []
        for r, rec in enumerate(records):
            items = list(rec["songs"]) + [self.n_songs + t for t in rec["tags"]]
            pieces = sorted({self.n_songs + self.n_tags + p for p in rec["title"]} - set(items))
            w = weight if items else 1.0
            for c, v in [(c, 1.0) for c in items] + [(c, w) for c in pieces]:
                rows.append(r), cols.append(c), vals.append(v)
        return sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(len(records), self.width))

    def _bm25(self, x):
        """[rows, items] CSR: binary rows weighted by idf and L2-normalised (an empty row stays empty)."""
        import scipy.sparse as sp

        w = (sp.csr_matrix(x > 0, dtype=np.float32) @ sp.diags(self.idf)).tocsr()
        norms = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags((1.0 / norms).astype(np.float32)) @ w).tocsr()

    def _votes(self, q) -> np.ndarray:
        """[Q, targets]: the k most similar training playlists' items, each playlist voting sim ** power."""
        import scipy.sparse as sp

        sim = (self._bm25(q) @ self.train_t).toarray()  # Q x playlists
        k = min(int(self.config["k"]), sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        values = np.power(np.maximum(np.take_along_axis(sim, top, axis=1), 0.0), float(self.config["power"]),
                          dtype=np.float32)
        neighbours = sp.csr_matrix((values.ravel(), top.ravel(), np.arange(0, top.size + 1, k)), shape=sim.shape)
        return (neighbours @ self.targets).toarray()

    def scores(self, records: list[dict]) -> np.ndarray:
        """[questions, n_songs + n_tags] float32 scores (0 where the model has nothing to say)."""
        q = self._query(records)
        if self.config["kind"] == "playlist_cf":
            return self._votes(q)
        if self.config["kind"] == "ease":
            out = np.zeros((len(records), self.n_songs + self.n_tags), np.float32)
            out[:, self.ease.columns[self.target_of]] = self.ease.scores(q)[:, self.target_of]
            return out
        playlists = (q @ self.xn_t).T.toarray()  # playlists x questions
        out = np.ascontiguousarray((self.targets_t @ playlists).T)
        beta = float(self.config["beta"])
        if beta:
            out *= np.power(self.counts[:out.shape[1]], beta, dtype=np.float32)[None, :]
        return out

    def candidates(self, records: list[dict], blocked_songs: np.ndarray, blocked_tags: np.ndarray, k_songs: int,
                   k_tags: int) -> Candidates:
        """Each question's best unblocked songs and tags with a positive score (-1 / 0 past them)."""
        scores = self.scores(records)
        out = []
        for part, blocked, k in ((scores[:, :self.n_songs], blocked_songs, k_songs),
                                 (scores[:, self.n_songs:], blocked_tags, k_tags)):
            part = np.where(blocked, 0.0, np.maximum(part, 0.0))
            top = top_rows(part, k)
            values = np.take_along_axis(part, top, axis=1)
            out += [np.where(values > 0, top, -1), np.where(values > 0, values, 0.0)]
        return Candidates(*out)


def load_neighbours(rundir: Path, manifest: dict, workdir: Path) -> Neighbours:
    """RUNDIR's neighbour member (its export checked by inference/exports.py against this work directory)."""
    import scipy.sparse as sp

    f, config = load_export(rundir, ("neighbours",), manifest, workdir, made_by="python -m inference.neighbours")
    x = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
    return Neighbours(x, config["sizes"]["songs"], config["sizes"]["tags"], config["settings"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.neighbours", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the work directory (data.preprocess)")
    parser.add_argument("--out", type=Path, required=True, help="run directory; the export goes to OUT/export")
    parser.add_argument("--kind", choices=KINDS, default="item_cf")
    parser.add_argument("--config", type=Path, default=SETTINGS_FILE,
                        help="the methods' settings (default configs/neighbours.yaml); the flags below override it")
    parser.add_argument("--beta", type=float, help="item_cf: the target popularity exponent")
    parser.add_argument("--k", type=int, help="playlist_cf: the neighbour playlists that vote")
    parser.add_argument("--power", type=float, help="playlist_cf: the similarity exponent of a vote")
    parser.add_argument("--title-weight", type=float, help="a title piece's weight next to an item")
    parser.add_argument("--items", type=int, help="ease: the most frequent items kept (the YAML's n_items)")
    parser.add_argument("--lam", type=float, help="ease: the L2 penalty")
    args = parser.parse_args(argv)
    try:
        settings = member_settings(args)
    except SettingsError as e:
        parser.error(str(e))

    from data.title import TitleTokenizer

    started = time.perf_counter()
    try:
        manifest = verify_workdir(args.work)
    except WorkdirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = manifest["sizes"]
    pieces = TitleTokenizer(args.work / "title.model").size
    x = training_matrix(args.work, sizes["songs"], sizes["tags"], pieces)
    config = {"model": "neighbours", "settings": settings, "sizes": {"songs": sizes["songs"], "tags": sizes["tags"],
              "pieces": pieces}, "playlists": x.shape[0],
              **export_identity(manifest)}
    write_export(args.out / "export", {"data": x.data, "indices": x.indices, "indptr": x.indptr,
                                       "shape": np.array(x.shape)}, config)
    write_json(settings, args.out / "config.json")
    print(f"[neighbours] {args.kind} over {x.shape[0]} training playlists x {x.shape[1]} items "
          f"({x.nnz} entries) -> {args.out / 'export'} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def member_settings(args) -> dict:
    """The export's settings: --config's values for every kind (the member reads its own kind's), the flags
    given on the command line in their place."""
    methods = neighbour_settings(args.config)
    if methods["item_cf"]["alpha"] != 1.0:
        raise SettingsError(f"{args.config}: the item_cf member computes plain cosine (alpha 1.0), "
                            f"not alpha {methods['item_cf']['alpha']} (that is bench.peers' item_cf only)")
    own = methods[args.kind]
    settings = {"kind": args.kind, "beta": methods["item_cf"]["beta"], "k": methods["playlist_cf"]["k"],
                "power": methods["playlist_cf"]["power"], "title_weight": own["title_weight"],
                "items": methods["ease"]["n_items"], "lam": methods["ease"]["lam"]}
    given = {"beta": args.beta, "k": args.k, "power": args.power, "title_weight": args.title_weight,
             "items": args.items, "lam": args.lam}
    return {**settings, **{key: value for key, value in given.items() if value is not None}}


if __name__ == "__main__":
    sys.exit(main())
