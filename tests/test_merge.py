"""The merge streams: one fragment at a time, the records' BGZF blocks copied as the
functions wrote them (fragments of the old layout recompressed), a bad fragment anywhere
leaving no output. The merge-only benchmark (bench/bench_merge.py) measures it at 5
million records."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pysam
import pytest

from functions.call_region import keep_owned
from functions.core.bgzf import EOF_BLOCK
from functions.core.storage import ObjectStore
from pipeline.merge import MergeError, merge_sample

HEADER = (
    "##fileformat=VCFv4.2\n"
    '##FILTER=<ID=PASS,Description="All filters passed">\n'
    '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">\n'
    "##contig=<ID=chr1,length=100000>\n##contig=<ID=HLA-A*01:01:01:01,length=3000>\n"
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
REGIONS = [("chr1", 0, 40_000), ("chr1", 40_000, 100_000), ("HLA-A*01:01:01:01", 0, 3000)]


def records(chrom: str, start: int, end: int) -> list[str]:
    return [f"{chrom}\t{p}\t.\tA\tG\t{p % 200}.5\tPASS\tDP={p % 50}\n" for p in range(start + 1, end + 1, 7)]


def put_fragments(store: ObjectStore, tmp: Path, layout: str, bad: int | None = None) -> Path:
    """Fragments of REGIONS in the store (``function``: written by keep_owned, records in
    blocks of their own; ``mixed``: one BGZF stream, header and records sharing blocks)
    and their call manifest; ``bad``: that fragment holds a record past its region."""
    frags = []
    for i, (chrom, start, end) in enumerate(REGIONS):
        body = records(chrom, start, end)
        if i == bad:
            body.append(f"{chrom}\t{end + 5}\t.\tA\tG\t9\tPASS\tDP=1\n")
        path = tmp / f"frag{i}.vcf.gz"
        if layout == "function":
            (tmp / "raw.vcf").write_text(HEADER + "".join(body))
            keep_owned(str(tmp / "raw.vcf"), _Everything(), str(path))
        else:
            with pysam.BGZFile(str(path), "wb") as out:  # type: ignore[call-arg]
                out.write((HEADER + "".join(body)).encode())
        data = path.read_bytes()
        key = store.key("fragments", f"{i:05d}")
        store.put(key + ".vcf.gz", data)
        frags.append({"region": i, "name": f"{chrom}:{start + 1}-{end}", "chrom": chrom, "start": start,
                      "end": end, "out_key": key, "md5": hashlib.md5(data).hexdigest(), "size": len(data),
                      "records": len(body), "sample": "S1", "key": key, "reused": False})
    manifest = tmp / "calls.json"
    manifest.write_text(json.dumps({"sample": "S1", "code": "test", "engine": "bcftools", "params": {},
                                    "command": "test", "retries": 0, "fragments": frags}))
    return manifest


class _Everything:
    """A region owning every record (keep_owned's filter is not what is tested here)."""

    def owns(self, chrom: str, pos: int) -> bool:
        return True


def body_of(vcf: Path) -> list[str]:
    with gzip.open(vcf, "rt") as fh:
        return [ln for ln in fh if not ln.startswith("#")]


@pytest.mark.parametrize("layout", ["function", "mixed"])
def test_merge_writes_every_record_once_in_order(store: ObjectStore, tmp_path: Path, layout: str) -> None:
    manifest = put_fragments(store, tmp_path, layout)
    out = tmp_path / "S1.vcf.gz"
    n = merge_sample(store, manifest, "ref.fa", str(out), str(tmp_path / "S1.stats"))
    want = [r for region in REGIONS for r in records(*region)]
    assert n == len(want) and body_of(out) == want
    data = out.read_bytes()
    assert data.endswith(EOF_BLOCK) and data.count(EOF_BLOCK) == 1
    with pysam.TabixFile(str(out)) as tbx:  # indexed, and queried by a name holding ':'
        for chrom, lo, hi in [("HLA-A*01:01:01:01", 100, 200), ("chr1", 39_990, 40_010)]:
            got = [ln + "\n" for ln in tbx.fetch(chrom, lo, hi)]
            assert got == [r for r in want if r.startswith(chrom + "\t") and lo < int(r.split("\t")[1]) <= hi]
            assert len(got) >= 4
    stats = (tmp_path / "S1.stats").read_text()
    assert f"SN\t0\tnumber of records:\t{len(want)}" in stats
    if layout == "function":  # the records' blocks are the fragments' own, byte for byte
        frag = (tmp_path / "frag1.vcf.gz").read_bytes()
        records_start = frag.index(b"\x1f\x8b", 1)
        assert frag[records_start : -len(EOF_BLOCK)] in data


@pytest.mark.parametrize("layout", ["function", "mixed"])
def test_a_record_outside_its_region_stops_the_merge_with_no_output(store: ObjectStore, tmp_path: Path,
                                                                    layout: str) -> None:
    manifest = put_fragments(store, tmp_path, layout, bad=1)
    out = tmp_path / "S1.vcf.gz"
    with pytest.raises(MergeError, match=r"fragment of chr1:40001-100000 holds a record at chr1:100005 outside"):
        merge_sample(store, manifest, "ref.fa", str(out), str(tmp_path / "S1.stats"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("S1", ".S1"))) == []
