#!/usr/bin/env python
"""Merge-only benchmark: the merge of a human genome's worth of VCF fragments.

Writes ``--records`` synthetic germline records (bcftools' INFO and FORMAT, one sample)
as ``--fragments`` bgzipped fragments in a local object store under ``--workdir``, with
the call manifest the ``call`` step would write, then runs the merge
(:func:`pipeline.merge.merge_sample`: checks, bgzipped VCF, ``.tbi`` and ``bcftools
stats``) in a process of its own and prints its wall time, records per second and
peak RSS. A 30x human genome has about 4.5 million records.

    python bench/bench_merge.py                      # 5,000,000 records, 1,000 fragments
    python bench/bench_merge.py --records 1000000    # a smaller run

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LITHOPS = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"}}
CONTIGS = [(f"chr{i}", 250_000_000 - 8_000_000 * (i - 1)) for i in range(1, 23)]

HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##INFO=<ID=DP,Number=1,Type=Integer,Description="Raw read depth">
##INFO=<ID=MQ,Number=1,Type=Integer,Description="Average mapping quality">
##INFO=<ID=VDB,Number=1,Type=Float,Description="Variant Distance Bias">
##INFO=<ID=SGB,Number=1,Type=Float,Description="Segregation based metric">
##INFO=<ID=RPBZ,Number=1,Type=Float,Description="Read position bias">
##INFO=<ID=MQBZ,Number=1,Type=Float,Description="Mapping quality bias">
##INFO=<ID=BQBZ,Number=1,Type=Float,Description="Base quality bias">
##INFO=<ID=SCBZ,Number=1,Type=Float,Description="Soft-clip length bias">
##INFO=<ID=FS,Number=1,Type=Float,Description="Fisher strand bias">
##INFO=<ID=MQ0F,Number=1,Type=Float,Description="Fraction of MQ0 reads">
##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count in genotypes">
##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">
##INFO=<ID=DP4,Number=4,Type=Integer,Description="Read depths by strand">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled genotype likelihoods">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Number of high-quality bases">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
"""


def bgzf(data: bytes) -> bytes:
    from functions.core.bgzf import deflate_blocks

    return b"".join(block for block, _ in deflate_blocks(data))


def make_fragments(workdir: Path, records: int, fragments: int) -> Path:
    """The fragments in a local store under ``workdir`` and the call manifest; its path."""
    from functions.core.bgzf import EOF_BLOCK
    from functions.core.storage import ObjectStore

    store = ObjectStore(LITHOPS, prefix="bench-merge")
    contigs = "".join(f"##contig=<ID={c},length={n}>\n" for c, n in CONTIGS)
    header = HEADER + contigs + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
    genome = sum(n for _, n in CONTIGS)
    per = records // fragments
    frags = []
    bounds = []  # regions of equal length along the concatenated contigs, cut at contig ends
    step = genome // fragments
    for c, n in CONTIGS:
        for start in range(0, n, step):
            bounds.append((c, start, min(n, start + step)))
    per = max(1, records // len(bounds))
    for i, (c, start, end) in enumerate(bounds):
        gap = (end - start) // (per + 1)
        rng = random.Random(i)
        lines = []
        for j in range(per):  # bcftools' INFO as a 30x germline call has it (about 230 bytes a record)
            dp = rng.randint(12, 45)
            ref, alt = rng.sample("ACGT", 2)
            lines.append(
                f"{c}\t{start + (j + 1) * gap}\t.\t{ref}\t{alt}\t{rng.uniform(20, 228):.4g}\t.\tDP={dp};"
                f"VDB={rng.random():.6g};SGB={-rng.uniform(0.3, 0.7):.6g};RPBZ={rng.gauss(0, 1):.6g};MQBZ=0;"
                f"BQBZ={rng.gauss(0, 1):.6g};SCBZ={rng.gauss(0, 1):.6g};FS=0;MQ0F=0;AC=1;AN=2;"
                f"DP4={rng.randint(1, 9)},{rng.randint(1, 9)},{rng.randint(1, 9)},{rng.randint(1, 9)};MQ=60"
                f"\tGT:PL:DP:AD\t0/1:{rng.randint(30, 255)},0,{rng.randint(30, 255)}:{dp - 1}:"
                f"{dp // 2},{dp - 1 - dp // 2}\n"
            )
        data = bgzf(header.encode()) + bgzf("".join(lines).encode()) + EOF_BLOCK  # as functions lay them out
        key = store.key("fragments", f"{i:05d}")
        store.put(key + ".vcf.gz", data)
        frags.append({"region": i, "name": f"{c}:{start + 1}-{end}", "chrom": c, "start": start, "end": end,
                      "out_key": key, "md5": hashlib.md5(data).hexdigest(), "size": len(data), "records": per,
                      "sample": "S1", "seconds": 0.0, "started": 0.0, "submitted": 0.0, "gets": 1,
                      "get_bytes": 0, "bam_gets": 1, "bam_get_bytes": 0, "reads": [0], "usable_reads": [0],
                      "key": key, "attempts": 1, "reused": False})
    manifest = {"sample": "S1", "code": "bench", "engine": "bcftools", "params": {}, "command": "bench",
                "retries": 0, "fragments": frags}
    path = workdir / "calls.json"
    path.write_text(json.dumps(manifest))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--fragments", type=int, default=1000)
    ap.add_argument("--workdir", default="/tmp/svc-bench-merge")
    args = ap.parse_args(argv)
    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TMPDIR", str(wd))
    t = time.time()
    manifest = make_fragments(wd, args.records, args.fragments)
    print(f"fragments written in {time.time() - t:.1f} s", file=sys.stderr)
    code = (
        "import sys; from functions.core.storage import ObjectStore; from pipeline.merge import merge_sample;"
        f"s = ObjectStore({LITHOPS!r}, prefix='bench-merge');"
        f"print(merge_sample(s, {str(manifest)!r}, 'ref.fa', {str(wd / 'S1.vcf.gz')!r}, {str(wd / 'S1.stats')!r}))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.time() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    n = int(out.stdout.strip().splitlines()[-1])
    print(f"merge of {n:,} records from {args.fragments:,} fragments: {wall:.1f} s, {n / wall:,.0f} records/s, "
          f"peak RSS {max(rss, before) / 1024:.0f} MB; VCF {os.path.getsize(wd / 'S1.vcf.gz') / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
