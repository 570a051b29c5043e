"""fetch-real's resume bookkeeping at D3 size (issue 12): peak RSS and seconds over 2.3 M synthetic ids.

No images and no network: a ``status.jsonl`` of N ids (every one a permanent failure, so a resumed
run skips them all) is written once, then each measurement runs in a fresh process and prints its
peak RSS (VmHWM) and seconds:

* before issue 12: the whole JSONL read into a dict, ids de-duplicated in a set (the old path);
* ``Fetcher.run`` over all N ids, first run: the SQLite index is built from the JSONL, streaming;
* ``Fetcher.run`` again: the index is current, only looked up.

    python benchmarks/bench_status.py            # 2.3 M ids (a few minutes, ~400 MB of disk)
    python benchmarks/bench_status.py --n 200000 # quicker
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD = """
from deepsift.data.fetch import load_status_dict, needs_fetch
status = load_status_dict(root)
seen, pending = set(), 0
for i in range(n):
    rid = f"d3-{i:09d}"
    if rid in seen:
        continue
    seen.add(rid)
    pending += needs_fetch(status.get(rid), root, False)
assert pending == 0, pending
"""

NEW = """
from deepsift.data.fetch import Fetcher, FetchConfig
summary = Fetcher(root, FetchConfig()).run(((f"d3-{i:09d}", f"http://x.invalid/{i}.jpg") for i in range(n)),
                                           total=n, progress=False)
assert summary.skipped == n and summary.fetched == 0, summary.line()
"""


def measure(code: str, root: Path, n: int) -> tuple[float, float]:
    """Run ``code`` in a fresh process; (peak RSS MiB, seconds)."""
    script = (f"import time\nfrom pathlib import Path\nroot, n = Path({str(root)!r}), {n}\nt0 = time.perf_counter()\n"
              f"{code}\nsecs = time.perf_counter() - t0\n"
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
              "print('RESULT', hwm, secs)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if not line:
        raise RuntimeError(proc.stderr[-2000:])
    _, kib, secs = line[0].split()
    return int(kib) / 1024, float(secs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_300_000, help="synthetic ids (D3 has 2.3 M training records)")
    ap.add_argument("--workdir", help="keep the status folder here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        root = Path(args.workdir or tmp) / "real"
        root.mkdir(parents=True, exist_ok=True)
        (root / "status.sqlite").unlink(missing_ok=True)
        t0 = time.perf_counter()
        with open(root / "status.jsonl", "w") as fh:
            for i in range(args.n):
                fh.write(json.dumps({"id": f"d3-{i:09d}", "url": f"http://x.invalid/{i}.jpg", "status": "http_404",
                                     "http_status": 404, "path": None, "bytes": None, "width": None, "height": None,
                                     "attempts": 1, "error": None}) + "\n")
        size = (root / "status.jsonl").stat().st_size
        print(f"setup: status.jsonl of {args.n:,} ids ({size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s")
        baseline, _ = measure("pass", root, 0)
        print(f"python + imports alone: peak RSS {baseline:7.0f} MiB")
        for label, code in (("before: dict of every line + set of ids", OLD),
                            ("Fetcher.run, first run (index built)", NEW),
                            ("Fetcher.run, resumed (index current)", NEW)):
            mib, secs = measure(code, root, args.n)
            print(f"{label:>42}: peak RSS {mib:7.0f} MiB | {secs:6.1f} s | {args.n / secs:9.0f} ids/s")
        print(f"index file: {(root / 'status.sqlite').stat().st_size / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
