"""The ensemble's neighbour member: item-item CF over the work directory's training playlists.

    python -m inference.neighbours --work WORKDIR --out RUNDIR [--kind item_cf|playlist_cf|ease]
                                   [--beta 0.25] [--k 400] [--power 1.0] [--title-weight 1.0]
                                   [--items 10000] [--lam 300]

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

from inference.blend import Candidates
from inference.exports import load_export

KINDS = ("item_cf", "playlist_cf", "ease")


def training_matrix(workdir: Path, n_songs: int, n_tags: int, n_pieces: int):
    """CSR [training playlists, n_songs + n_tags + n_pieces] float32, 1 per song, tag and title piece."""
    import scipy.sparse as sp
    import tensorflow as tf

    from data.pipeline import shard_files
    from data.records import decode

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
        from models.ranking import top_rows

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
    parser.add_argument("--beta", type=float, default=0.25, help="item_cf: the target popularity exponent")
    parser.add_argument("--k", type=int, default=400, help="playlist_cf: the neighbour playlists that vote")
    parser.add_argument("--power", type=float, default=1.0, help="playlist_cf: the similarity exponent of a vote")
    parser.add_argument("--title-weight", type=float, default=1.0, help="a title piece's weight next to an item")
    parser.add_argument("--items", type=int, default=10000, help="ease: the most frequent items kept")
    parser.add_argument("--lam", type=float, default=300.0, help="ease: the L2 penalty")
    args = parser.parse_args(argv)

    from data.melon import write_json
    from data.workdir import WorkdirError, verify_workdir
    from data.title import TitleTokenizer
    from models.export import write_export

    started = time.perf_counter()
    try:
        manifest = verify_workdir(args.work)
    except WorkdirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = manifest["sizes"]
    pieces = TitleTokenizer(args.work / "title.model").size
    x = training_matrix(args.work, sizes["songs"], sizes["tags"], pieces)
    settings = {"kind": args.kind, "beta": args.beta, "k": args.k, "power": args.power,
                "title_weight": args.title_weight, "items": args.items, "lam": args.lam}
    config = {"model": "neighbours", "settings": settings, "sizes": {"songs": sizes["songs"], "tags": sizes["tags"],
              "pieces": pieces}, "playlists": x.shape[0],
              "vocab_sha256": manifest["files"]["vocab.json"]["sha256"],
              "tokenizer_sha256": manifest["files"]["title.model"]["sha256"]}
    write_export(args.out / "export", {"data": x.data, "indices": x.indices, "indptr": x.indptr,
                                       "shape": np.array(x.shape)}, config)
    write_json(settings, args.out / "config.json")
    print(f"[neighbours] {args.kind} over {x.shape[0]} training playlists x {x.shape[1]} items "
          f"({x.nnz} entries) -> {args.out / 'export'} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
