"""Contig names as GRCh38's analysis set writes them, through the real ``snakemake``.

GRCh38 carries some 3,000 alt, decoy, EBV and HLA contigs whose names hold ``:``, ``*``
and ``-`` (``HLA-A*01:01:01:01``, ``chrUn_JTFH01000001v1_decoy``). htslib region strings
split at ``:``, so every step that names a region must do it without one: here the
bundled data's three contigs are renamed that way (the reads are the same), and a run
cut into several regions per contig must still equal one whole-genome run of the
engine on the renamed files, record for record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pysam
import pytest
from helpers import DATA, whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.core.crai import parse_crai
from functions.core.tasks import Span, region_name
from functions.lowfreq import LowfreqParams

pytestmark = pytest.mark.e2e

# One SAM-legal name per kind that broke or could break a region string.
NAMES = {
    "chr1": "HLA-A*01:01:01:01",  # ':' and '*': the HLA contigs
    "chr2": "chr3:1-5000",  # a name that reads as a region of another contig
    "chr3": "chrUn_JTFH01000001v1_decoy",
}


def renamed_copy(out: Path, sample: str = "sampleA") -> tuple[Path, Path]:
    """The bundled reference and one BAM with their contigs renamed (same reads)."""
    ref = out / "ref.fa"
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa, open(ref, "w") as fh:
        for name in fa.references:
            seq = fa.fetch(name)
            fh.write(f">{NAMES[name]}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(ref))
    bam = out / f"{sample}.bam"
    with pysam.AlignmentFile(str(DATA / f"{sample}.bam")) as src:
        header = src.header.to_dict()
        for sq in header["SQ"]:
            sq["SN"] = NAMES[sq["SN"]]
        with pysam.AlignmentFile(str(bam), "wb", header=header) as dst:
            for read in src:
                dst.write(read)
    pysam.index(str(bam))
    return ref, bam


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return renamed_copy(tmp_path_factory.mktemp("names"))


def test_region_names_brace_a_name_holding_a_colon() -> None:
    assert region_name("chr1", 0, 100) == "chr1:1-100"
    assert region_name("HLA-A*01:01:01:01", 9, 20) == "{HLA-A*01:01:01:01}:10-20"
    assert Span("chr3:1-5000", 0, 5).name == "{chr3:1-5000}:1-5"


@pytest.mark.parametrize("engine", ["bcftools", "lowfreq"])
def test_grch38_style_names_run_end_to_end(engine: str, renamed: tuple[Path, Path], tmp_path: Path) -> None:
    ref, bam = renamed
    wd = make_workdir(tmp_path / "wd", plan__n_regions=9, calling__engine=engine, reference=str(ref))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]

    params = LowfreqParams(min_depth=100) if engine == "lowfreq" else None
    want = vcf_body(whole_genome("sampleA", tmp_path, params, bam=bam, reference=ref))
    got = vcf_body(str(wd / "results" / "sampleA.vcf.gz"))
    assert got == want
    assert {line.split("\t")[0] for line in got} == set(NAMES.values())  # calls on every contig

    calls = json.loads((wd / "work" / "calls" / "sampleA.json").read_text())
    names = [f["name"] for f in calls["fragments"]]
    assert len(names) >= 9 and all(n.startswith(("{HLA-A*01:01:01:01}:", "{chr3:1-5000}:", "chrUn_")) for n in names)
    with pysam.VariantFile(str(wd / "results" / "sampleA.vcf.gz")) as vcf:
        assert list(vcf.header.contigs) == list(NAMES.values())
    if engine == "lowfreq":
        fasta = (wd / "results" / "sampleA.consensus.fa").read_text().splitlines()
        headers = [ln[1:] for ln in fasta if ln.startswith(">")]
        assert headers == [f"sampleA|{n}" for n in NAMES.values()]


def many_contigs_copy(out: Path, n_small: int = 150) -> tuple[Path, Path]:
    """The bundled reference and sampleA with ``n_small`` small contigs added, shaped as
    GRCh38's alt, decoy and HLA contigs (names with ``:``, ``*`` and ``|``), each 1.5 kb
    copied from chr2 and carrying chr2's reads that lie wholly in that copy (unpaired)."""
    names = [
        f"HLA-B*07:02:{i:02d}" if i % 3 == 0 else f"chrUn_KI2707{i:02d}v1_decoy|x" if i % 3 == 1
        else f"chr1_KI27{i:04d}v1_alt" for i in range(n_small)
    ]
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa:
        seqs = {name: fa.fetch(name) for name in fa.references}
    windows = {name: (i * 600, i * 600 + 1500) for i, name in enumerate(names)}
    ref = out / "ref.fa"
    with open(ref, "w") as fh:
        for name, seq in [*seqs.items(), *((n, seqs["chr2"][a:b]) for n, (a, b) in windows.items())]:
            fh.write(f">{name}\n" + "".join(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60)))
    pysam.faidx(str(ref))
    bam = out / "sampleA.bam"
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src:
        header = src.header.to_dict()
        header["SQ"] += [{"SN": n, "LN": b - a} for n, (a, b) in windows.items()]
        reads = list(src)
        tmp = out / "unsorted.bam"
        with pysam.AlignmentFile(str(tmp), "wb", header=header) as dst:
            for read in reads:
                dst.write(read)
            for tid, (a, b) in enumerate(windows.values(), start=len(seqs)):
                for read in reads:
                    if (read.reference_name == "chr2" and not read.is_unmapped and a <= read.reference_start
                            and (read.reference_end or b + 1) <= b):
                        copy = pysam.AlignedSegment.from_dict(read.to_dict(), dst.header)
                        copy.reference_id, copy.reference_start = tid, read.reference_start - a
                        copy.flag &= ~(0x1 | 0x2 | 0x8 | 0x20 | 0x40 | 0x80)
                        copy.next_reference_id, copy.next_reference_start, copy.template_length = -1, -1, 0
                        dst.write(copy)
    pysam.sort("-o", str(bam), str(tmp))
    pysam.index(str(bam))
    return ref, bam


@pytest.mark.parametrize("fmt", ["bam", "cram"])
def test_small_contigs_share_functions_and_the_vcf_is_unchanged(tmp_path: Path, fmt: str) -> None:
    """150 small contigs carrying reads beside three large ones: the plan has a region per
    contig, but the functions follow plan.n_regions (light regions packed into a function
    no heavier than the heaviest region), and the VCF equals a whole-genome run. Also as
    a CRAM, where htslib puts the small contigs' reads in slices of several contigs."""
    ref, bam = many_contigs_copy(tmp_path)
    if fmt == "cram":
        from test_cram import to_cram

        bam = to_cram(bam, tmp_path / "sampleA.cram", ref)
        multi = [e.container for e in parse_crai(Path(f"{bam}.crai").read_bytes())]
        assert len(multi) > len(set(multi)), "no CRAM container holds several contigs' reads"
    wd = make_workdir(tmp_path / "wd", plan__n_regions=12, reference=str(ref))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    got = vcf_body(str(wd / "results" / "sampleA.vcf.gz"))
    want = vcf_body(whole_genome("sampleA", tmp_path, bam=bam, reference=ref))
    # bcftools carries state from one contig to the next: in a whole-genome run the first
    # indel of a contig can take an INFO/BQBZ left by the contig before, which a run of
    # that contig alone never sees (README "Limits today").
    assert _first_indels_masked(got) == _first_indels_masked(want)
    assert any(line.startswith("HLA-B*07:02:") for line in got) and any("|x\t" in line for line in got)
    calls = json.loads((wd / "work" / "calls" / "sampleA.json").read_text())
    assert len(calls["fragments"]) > 150  # a fragment per region, as planned
    assert all(0 < f["disk_bytes"] < 10 << 20 for f in calls["fragments"])  # each region's own local disk
    log = (wd / "work" / "logs" / "call.log").read_text()
    functions = int(log.split(" regions in ", 1)[1].split(" functions", 1)[0])
    assert functions <= 1.1 * 12, log[-2000:]


def _first_indels_masked(records: list[str]) -> list[str]:
    """The records with the INFO/BQBZ of each contig's first indel masked."""
    out, seen = [], set()
    for record in records:
        f = record.split("\t")
        if "INDEL;" in f[7] and f[0] not in seen:
            seen.add(f[0])
            f[7] = re.sub(r"BQBZ=[^;\t]*", "BQBZ=.", f[7])
        out.append("\t".join(f))
    return out


def test_pack_tasks_fills_functions_up_to_the_heaviest_region_or_the_asked_share() -> None:
    from pipeline.call import pack_tasks
    from pipeline.plan import REGION_OVERHEAD_BYTES

    def task(i: int, size: int) -> dict:
        return {"key": f"k{i}", "out_key": f"o{i}", "sample": "s", "region": {"est_bytes": size, "name": f"c{i}:1-9"}}

    def weight(t: dict) -> int:
        return sum(x["region"]["est_bytes"] + REGION_OVERHEAD_BYTES for x in t.get("tasks", [t]))

    heavy = [task(i, 1 << 30) for i in range(100)]  # a 100 GB BAM planned into 100 regions
    light = [task(100 + i, 50_000) for i in range(3000)]  # GRCh38's small contigs
    tasks = heavy + light
    items = pack_tasks(tasks, tasks, functions=100)
    assert sorted(t["key"] for i in items for t in i.get("tasks", [i])) == sorted(t["key"] for t in tasks)
    share = sum(weight(t) for t in tasks) // 100
    assert max(weight(i) for i in items) <= 1.05 * max((1 << 30) + REGION_OVERHEAD_BYTES, share)
    assert len(items) <= 1.1 * 100
    assert pack_tasks(tasks, tasks, functions=0)[:100] == heavy  # nothing asked: heavy regions alone
    assert len(pack_tasks(light, light, functions=10)) == 10  # only small contigs: as many as asked
    lumpy = [task(i, 170_000) for i in range(177)]  # 177 regions of equal weight into 100 functions
    assert len(pack_tasks(lumpy, lumpy, functions=100)) <= 100
    # regions of 0.6 and 0.4 of a function's bytes go together (as cutting contigs of
    # 1.6 functions' bytes into two regions makes them)
    mixed = [task(i, 600 << 20) for i in range(50)] + [task(50 + i, 400 << 20) for i in range(50)]
    assert len(pack_tasks(mixed, mixed, functions=50)) == 50
    faulty = [{**t, "faults": {"x": 1}} for t in light[:5]]
    assert pack_tasks(faulty, faulty, functions=1) == faulty  # injected faults: never packed
