"""Before and after, side by side: the PostgreSQL write path of another commit against this one.

    .venv/bin/python -m bench.postgres_ab BEFORE_COMMIT [--writers 1,8] [--rounds 3] [--seconds 4]

Starts a throwaway PostgreSQL cluster with fsync=on (bench/processes.py), and
in rotating order runs writer processes with this checkout's recorder or
with BEFORE_COMMIT's `adapters/postgres/recorder.py` (taken with `git show`
into a scratch module), each with psycopg's C implementation and with its
pure-Python one (`PSYCOPG_IMPL`). Every window gets a fresh database
bulk-loaded with 1,000 lifecycles. Prints lifecycles/s per window and the
medians. Not part of `make bench`; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.processes import REPO, _postgres_cluster
from bench.stats import percentile
from bench.workload import bulk_load
from trainledger.adapters.store import open_ledger

WRITER = """
import json, sys, time
variant, url, first, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if variant.startswith("before"):
    sys.path.insert(0, sys.argv[5])
    import before_recorder
    from trainledger.adapters.postgres import settings
    settings.LedgerPostgresFactory = before_recorder.LedgerPostgresFactory
from bench.workload import run_lifecycle
from trainledger.adapters.store import open_ledger
ledger = open_ledger(url)
n = first
run_lifecycle(ledger, n)
n += 1
print("ready", flush=True)
sys.stdin.readline()
latencies, done = [], 0
deadline = time.perf_counter() + seconds
while time.perf_counter() < deadline:
    run_lifecycle(ledger, n, latencies.append)
    n += 1
    if time.perf_counter() <= deadline:
        done += 1
ledger.close()
print(json.dumps({"lifecycles": done, "latencies": latencies}))
"""


def window(
    url: str, variant: str, writers: int, seconds: float, scratch: Path
) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PSYCOPG_IMPL": variant.split("-")[1]}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, variant, url, str(10_000_000 + w * 1_000_000),
             str(seconds), str(scratch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        for w in range(writers)
    ]  # fmt: skip
    for p in processes:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    for p in processes:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
    latencies = [t for r in reports for t in r["latencies"]]
    return sum(r["lifecycles"] for r in reports) / seconds, percentile(latencies, 99) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("--writers", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--variants", default="before-python,after-binary,before-binary,after-python"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="trainledger-pg-ab-"))
    source = subprocess.run(
        ["git", "show", f"{args.before}:adapters/postgres/recorder.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (scratch / "before_recorder.py").write_text(source)
    variants = args.variants.split(",")
    writer_counts = [int(w) for w in args.writers.split(",")]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with _postgres_cluster() as cluster:
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for writers in writer_counts:
                for variant in order:
                    url = cluster.url(cluster.create_database())
                    ledger = open_ledger(url)
                    bulk_load(ledger, range(1000))
                    ledger.close()
                    rate, p99 = window(url, variant, writers, args.seconds, scratch)
                    results.setdefault((variant, writers), []).append((rate, p99))
                    print(f"round {r + 1} {variant} x{writers}: {rate:.1f}/s p99 {p99:.1f} ms",
                          flush=True)  # fmt: skip
    for (variant, writers), values in sorted(results.items()):
        rates = sorted(v[0] for v in values)
        p99s = sorted(v[1] for v in values)
        runs = ", ".join(f"{x:.1f}" for x in rates)
        print(
            f"{variant:14} x{writers}: median {rates[len(rates) // 2]:.1f} lifecycles/s "
            f"(runs {runs}), p99 {p99s[len(p99s) // 2]:.1f} ms"
        )


if __name__ == "__main__":
    main()
