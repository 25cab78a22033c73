"""Sample quality under a fixed CPU budget, as the README's budget table reports it: a thin call of
`ganforge compare` over the README's configurations (FID/KID of 10,000 EMA samples against all 60,000
Fashion-MNIST training images with fashion-mnist-cnn features; the 2,000- and 300-image runs use the same
reference, as in the ADA paper's limited-data experiments).

    python benchmarks/quality_budget.py --minutes 5 --out runs/quality [--seeds 0,1,2] [--only 'dcgan|progan']

is the same as

    ganforge compare fashion_mnist_dcgan ... --run 'stylegan2-2k=fashion_mnist32_stylegan2 data.limit=2000' ... \
        --minutes 5 --eval-n 10000 --out runs/quality

and writes OUT/report.html and OUT/report.md (the table, findings and limitations). Rerunning resumes.
Unlike the earlier version of this script (SIGINT after N minutes of wall time), `compare` gives each run the
trainer's own time budget (`train.max_seconds`: training wall-clock carried across resumes, evaluation excluded),
so runs are resumable and the budget is exact; the report shows each run's training time and images seen.
"""

from __future__ import annotations

import argparse

from ganforge.cli.common import parse_seeds
from ganforge.compare import Entry, compare

ADA = ("augment.name=ada", "augment.ada_speed=20000")
RUNS = [
    Entry("dcgan", "fashion_mnist_dcgan"),
    Entry("progan", "fashion_mnist32_progan"),
    Entry("stylegan2", "fashion_mnist32_stylegan2"),
    Entry("stylegan2-2k", "fashion_mnist32_stylegan2", ("data.limit=2000",)),
    Entry("stylegan2-ada-2k", "fashion_mnist32_stylegan2", ("data.limit=2000", *ADA)),
    # fewer images still, so that D overfits within a CPU budget and ADA has something to do
    Entry("stylegan2-300", "fashion_mnist32_stylegan2", ("data.limit=300",)),
    Entry("stylegan2-ada-300", "fashion_mnist32_stylegan2", ("data.limit=300", *ADA)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--eval-n", type=int, default=10000)
    ap.add_argument("--only", help="'|'-separated labels to run (default all), e.g. 'stylegan2|progan'")
    a = ap.parse_args()
    only = {x.strip() for x in a.only.split("|")} if a.only else None
    runs = [e for e in RUNS if only is None or e.label in only]
    compare(runs, a.out, minutes=a.minutes, seeds=parse_seeds(a.seeds, "--seeds"), eval_n=a.eval_n, quiet=False)


if __name__ == "__main__":
    main()
