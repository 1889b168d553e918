"""Gallery search at scale: FAISS (exact and IVF) against brute-force numpy, 1k to 1M entries.

    .venv/bin/python benchmarks/gallery.py                         # 1k, 100k, 1M; 200 queries
    .venv/bin/python benchmarks/gallery.py --real runs/eval-others/cache/dlib/unmasked.npz
    .venv/bin/python benchmarks/gallery.py --sizes 1000,10000 --queries 50   # to check it runs

For each gallery size it builds every index `fmr.gallery.index` offers (the one `fmr gallery`
would choose is marked) and measures, in one process:
  build       seconds to build the index from the (N, 128) float32 unit vectors (IVF: k-means
              training included)
  memory      MiB the index holds (its serialized size) and the growth of the process's
              resident memory while building it
  search      milliseconds for one probe searched alone (median and 95th percentile over the
              queries), as `fmr gallery search` does, and queries per second in one batch
  recall@1    how often the index's best entry is the exact search's best entry, for mated
              probes (a photo of an enrolled person) and non-mated ones (someone else)

The vectors: with --real (an `fmr embed` .npz, or an `fmr eval` cache file, of photos kept in
one folder per person) the galleries are drawn from a Gaussian fitted to those embeddings:
people around the mean with the real between-person covariance, probes around their person
with the real within-person covariance, so similarities spread as real ones do. Without
--real: isotropic random unit vectors and mated probes at a fixed angle (--mated-angle) from
their entry. Accuracy on real photos is measured by `fmr eval` (identification), not here.
Goal: one search in a 1M-entry gallery under 10 ms on 2 CPU cores, recall@1 >= 0.99.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_MS = 10.0
TARGET_RECALL = 0.99


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _unit(rows):
    import numpy as np

    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class VectorModel:
    """Where gallery entries and probes come from: isotropic, or fitted to real embeddings."""

    def __init__(self, dim: int, mated_angle_deg: float, real: Path | None, seed: int):
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.mated_angle = np.radians(mated_angle_deg)
        self.fitted = None
        self.description = (f"isotropic random unit vectors ({dim}-d), mated probes "
                            f"{mated_angle_deg:g} deg from their entry")
        if real is not None:
            self._fit(real)

    def _fit(self, path: Path) -> None:
        import numpy as np

        data = np.load(path, allow_pickle=False)
        # fmr embed's .npz and fmr eval's cache files both hold paths, embeddings and ok.
        vectors, ok, paths = data["embeddings"], data["ok"], data["paths"]
        vectors, paths = vectors[ok.astype(bool)], paths[ok.astype(bool)]
        people = np.array([Path(str(p)).parent.name for p in paths])
        names, inverse, counts = np.unique(people, return_inverse=True, return_counts=True)
        means = np.zeros((names.size, vectors.shape[1]))
        np.add.at(means, inverse, vectors)
        means /= counts[:, None]
        several = counts[inverse] >= 2
        within = vectors[several] - means[inverse][several]
        self.dim = vectors.shape[1]
        self.mean = means.mean(axis=0)
        self.between = np.linalg.cholesky(np.cov(means.T) + 1e-9 * np.eye(self.dim))
        # Residuals of people with n photos shrink by (n-1)/n: scale them back.
        scale = np.sqrt(counts[inverse][several] / (counts[inverse][several] - 1.0))
        self.within = np.linalg.cholesky(np.cov((within * scale[:, None]).T)
                                         + 1e-9 * np.eye(self.dim))
        self.fitted = path
        self.description = (f"Gaussian fitted to {len(vectors):,} real embeddings of "
                            f"{names.size:,} people ({path.name}, {self.dim}-d): between- and "
                            f"within-person covariance")

    def people(self, count: int):
        """(count, D) person centres, float64 (before normalisation)."""
        z = self.rng.standard_normal((count, self.dim))
        if self.fitted is None:
            return z
        return self.mean + z @ self.between.T

    def entries(self, centres):
        """One enrolled photo per person: (N, D) float32 unit rows."""
        if self.fitted is None:
            return _unit(centres)
        return _unit(centres + self.rng.standard_normal(centres.shape) @ self.within.T)

    def mated_probes(self, centres, entries):
        """Another photo of each person: (Q, D) float32 unit rows."""
        import numpy as np

        if self.fitted is None:
            noise = self.rng.standard_normal(entries.shape)
            noise -= (noise * entries).sum(axis=1, keepdims=True) * entries
            noise = _unit(noise)
            return _unit(np.cos(self.mated_angle) * entries + np.sin(self.mated_angle) * noise)
        return _unit(centres + self.rng.standard_normal(centres.shape) @ self.within.T)


def _time_single(search, queries) -> tuple[float, float]:
    import numpy as np

    times = []
    for row in range(queries.shape[0]):
        start = time.perf_counter()
        search(queries[row : row + 1])
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), float(np.percentile(times, 95))


def _time_batch(search, queries) -> float:
    start = time.perf_counter()
    search(queries)
    return queries.shape[0] / (time.perf_counter() - start)


def bench_size(size: int, model: VectorModel, queries: int, nprobes: list[int], seed: int,
               chunk: int = 100_000) -> list[dict]:
    import numpy as np

    from fmr.gallery.index import build_index, choose_index, search_index

    centres_needed = min(queries, size)
    rows = []
    # The gallery, generated in chunks; the first rows' people are the mated probes' people.
    parts, probe_centres = [], None
    for start in range(0, size, chunk):
        centres = model.people(min(chunk, size - start))
        if probe_centres is None:
            probe_centres = centres[:centres_needed]
        parts.append(model.entries(centres))
    gallery = np.concatenate(parts)
    del parts
    pick = np.arange(centres_needed)
    mated = model.mated_probes(probe_centres, gallery[pick])
    nonmated = model.entries(model.people(queries))
    ids = np.arange(size, dtype=np.int64)

    # Brute force in numpy: the reference for recall, and a baseline for speed.
    def numpy_search(q):
        return np.argmax(q @ gallery.T, axis=1)

    exact_mated, exact_nonmated = numpy_search(mated), numpy_search(nonmated)
    median, p95 = _time_single(numpy_search, mated)
    rows.append({"size": size, "method": "numpy brute force", "build_s": 0.0,
                 "index_mib": gallery.nbytes / 2**20, "rss_mib": 0.0, "median_ms": median,
                 "p95_ms": p95, "qps": _time_batch(numpy_search, mated), "recall_mated": 1.0,
                 "recall_nonmated": 1.0, "chosen": False})
    chosen = choose_index(size)
    kinds = ["exact", "ivf"] if size >= 10_000 else ["exact"]
    for kind in kinds:
        choice = choose_index(size, kind)
        rss = _rss_mib()
        start = time.perf_counter()
        index = build_index(gallery, ids, choice, seed=seed)
        build = time.perf_counter() - start
        grown = _rss_mib() - rss
        import faiss

        mib = faiss.serialize_index(index).nbytes / 2**20
        probes = [choice.nprobe] if kind == "exact" else sorted(
            {p for p in [*nprobes, choice.nprobe] if p <= choice.nlist})
        for nprobe in probes:
            if kind == "ivf":
                index.nprobe = nprobe

            def faiss_search(q, index=index):
                return search_index(index, q, 1)[1][:, 0]

            median, p95 = _time_single(faiss_search, mated)
            rows.append({
                "size": size,
                "method": "exact (Flat IP)" if kind == "exact"
                else f"IVF-Flat {choice.nlist} lists, nprobe {nprobe}",
                "build_s": build, "index_mib": mib, "rss_mib": grown,
                "median_ms": median, "p95_ms": p95, "qps": _time_batch(faiss_search, mated),
                "recall_mated": float((faiss_search(mated) == exact_mated).mean()),
                "recall_nonmated": float((faiss_search(nonmated) == exact_nonmated).mean()),
                "chosen": kind == chosen.kind and (kind == "exact" or nprobe == chosen.nprobe),
            })
        del index
    return rows


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000",
                        help="gallery sizes, comma-separated (default 1000,100000,1000000)")
    parser.add_argument("--queries", type=int, default=200,
                        help="mated and non-mated probes each (default 200)")
    parser.add_argument("--real", type=Path, metavar="NPZ",
                        help="real embeddings to fit the vector model to (fmr embed .npz or an "
                        "fmr eval cache file, photos in one folder per person)")
    parser.add_argument("--mated-angle", type=float, default=35.0,
                        help="isotropic model: angle of a mated probe to its entry (default 35)")
    parser.add_argument("--nprobe", default="8,16,32,64,128,256",
                        help="IVF lists searched, comma-separated (default 8,16,32,64,128,256)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for FAISS and numpy (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    model = VectorModel(128, args.mated_angle, args.real, args.seed)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    nprobes = [int(p) for p in args.nprobe.split(",")]
    print(f"gallery search: {_machine()}, {args.threads} threads, faiss {faiss.__version__}; "
          f"{model.description}; {args.queries} mated and {args.queries} non-mated probes",
          file=sys.stderr)
    rows = []
    for size in sizes:
        print(f"  {size:,} entries ...", file=sys.stderr, flush=True)
        rows += bench_size(size, model, args.queries, nprobes, args.seed)
    print()
    print(f"machine: {_machine()}; {args.threads} threads; faiss {faiss.__version__}")
    print(f"vectors: {model.description}")
    print("`*`: the index `fmr gallery` chooses at that size. Search: one probe at a time.")
    print()
    print("| entries | method | build (s) | index (MiB) | RSS growth (MiB) | search median (ms) "
          "| p95 (ms) | batch (queries/s) | recall@1 mated | recall@1 non-mated |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = " *" if r["chosen"] else ""
        print(f"| {r['size']:,} | {r['method']}{mark} | {r['build_s']:.2f} | "
              f"{r['index_mib']:.1f} | {r['rss_mib']:.0f} | {r['median_ms']:.3f} | "
              f"{r['p95_ms']:.3f} | {r['qps']:,.0f} | {r['recall_mated']:.3f} | "
              f"{r['recall_nonmated']:.3f} |")
    largest = [r for r in rows if r["size"] == max(sizes) and r["chosen"]]
    if largest:
        r = largest[0]
        ok = r["median_ms"] < TARGET_MS and r["recall_mated"] >= TARGET_RECALL
        print(f"\n{max(sizes):,} entries, {r['method']}: {r['median_ms']:.2f} ms a search, "
              f"recall@1 {r['recall_mated']:.3f} mated / {r['recall_nonmated']:.3f} non-mated: "
              f"goal (< {TARGET_MS:g} ms, >= {TARGET_RECALL}) {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
