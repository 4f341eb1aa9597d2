"""CRAM input: planned by the ``.crai``'s containers, fetched as whole containers by
ranged GETs with the reference they need, and called with the same exactness as a
BAM: equal to one whole-genome run of the engine on the CRAM. A CRAM written against
another reference is refused before any function runs.

The CRAMs are the bundled BAMs converted with ``samtools view -C`` (through pysam):
with samtools' defaults (a few containers of 10,000 reads), with small slices
(``seqs_per_slice=500``), so that regions start and end inside containers, and with
small slices each holding reads of any contig (``multi_seq_per_slice=1``, what htslib
writes for GRCh38's small contigs), which give no MD5 of their reference."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pysam
import pytest
from conftest import ROOT, SAMPLES
from helpers import DATA, assert_same, run_core, serial, tricky_cuts, whole_genome

from bench.evaluation.vcfcompare import vcf_body
from functions.core.bai import coffset
from functions.core.crai import CramIndex, parse_crai
from functions.core.cram import EOF_CONTAINER, cram_header, is_cram
from functions.core.fai import parse_fai
from functions.core.storage import ObjectStore
from functions.core.tasks import BamSlice, ObjectRef, Span
from functions.lowfreq import LowfreqParams
from functions.slice import CramSliceError, fetch_cram_slice
from pipeline.plan import _byte_ranges
from pipeline.stage import stage_sample
from pipeline.validate import InputError

SMALL = ("--output-fmt-option", "seqs_per_slice=500")
MULTI = (*SMALL, "--output-fmt-option", "multi_seq_per_slice=1")


def to_cram(bam: Path, out: Path, reference: Path = DATA / "ref.fa", *options: str, index: bool = True) -> Path:
    """``samtools view -C`` of ``bam`` against ``reference`` (and ``samtools index``)."""
    pysam.view("-C", "-T", str(reference), *options, "-o", str(out), str(bam), catch_stdout=False)
    if index:
        pysam.index(str(out))
    return out


@pytest.fixture(scope="module")
def crams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sampleA and sampleB as CRAMs with samtools' defaults, and sampleA in small multi-reference slices."""
    d = tmp_path_factory.mktemp("crams")
    out = {s: to_cram(DATA / f"{s}.bam", d / f"{s}.cram") for s in SAMPLES}
    for name, options in (("small", SMALL), ("multi", MULTI)):
        (d / name).mkdir()
        out[name] = to_cram(DATA / "sampleA.bam", d / name / "sampleA.cram", DATA / "ref.fa", *options)
    return out


def _entries(cram: Path) -> list:
    return parse_crai(Path(f"{cram}.crai").read_bytes())


def test_the_header_and_index_read_as_htslib_reads_them(crams: dict[str, Path]) -> None:
    cram = crams["multi"]
    entries = _entries(cram)
    raw = cram.read_bytes()
    header = cram_header(raw[: min(e.container for e in entries)])
    with pysam.AlignmentFile(str(cram), "rc", reference_filename=str(DATA / "ref.fa")) as fh:
        assert header.text == str(fh.header) and header.contigs == tuple(zip(fh.references, fh.lengths, strict=True))
    assert header.sort_order == "coordinate" and header.sq_tag("chr1", "M5")
    assert raw[-len(EOF_CONTAINER):] == EOF_CONTAINER and is_cram("s3://b/x.CRAM") and not is_cram("x.bam")
    index = CramIndex(entries, 3, len(raw) - len(EOF_CONTAINER))
    containers = {}
    for e in entries:
        containers.setdefault(e.container, set()).add(e.tid)
    assert any(len(tids) > 1 for tids in containers.values()), "no container holds two contigs' reads"
    assert index.n_containers == len(containers) > 20
    # Every container of a query holds reads of the span; the runs are whole containers.
    chunks = index.query(0, 40_000, 41_000)
    assert len(chunks) == 1 and all(c.beg & 0xFFFF == 0 == c.end & 0xFFFF for c in chunks)
    assert [(r.start, r.end) for r in _byte_ranges(tuple(chunks))] == [(coffset(c.beg), coffset(c.end)) for c in chunks]
    weights = index.window_bytes(0, 151_000)
    # The containers' bytes spread over the windows; those of unmapped reads left out.
    spread = sum(index.window_bytes(t, n).sum() for t, (_, n) in enumerate(header.contigs))
    total = sum(index.container_end(c) - c for c in containers)
    unmapped = sum(index.container_end(c) - c for c in containers if -1 in containers[c])
    assert total - unmapped <= spread + 1e-6 <= total + 1e-3 and weights.min() > 0


@pytest.mark.parametrize("kind", ["small", "multi"])
def test_a_cram_slice_holds_exactly_the_reads_of_its_context(crams: dict[str, Path], store: ObjectStore,
                                                            tmp_path: Path, kind: str) -> None:
    """For contexts at contig ends, across containers and in containers of two contigs:
    the local BAM a function decodes holds the reads htslib returns from the whole CRAM,
    byte for byte, from the containers' bytes and a reference window only."""
    cram = crams[kind]
    size = cram.stat().st_size
    key = store.key("inputs", "sampleA.cram")
    store.put_file(key, str(cram))
    store.put_file(store.key("ref.fa"), str(DATA / "ref.fa"))
    fai = parse_fai((DATA / "ref.fa.fai").read_text())
    entries = _entries(cram)
    index = CramIndex(entries, 3, size - len(EOF_CONTAINER))
    header = (0, min(e.container for e in entries))
    rng = random.Random(7)
    spans = [("chr1", 0, 3_000), ("chr1", 148_000, 151_000), ("chr2", 0, 2_000), ("chr3", 61_000, 62_000),
             ("chr2", 95_500, 97_000)]
    spans += [(c, s, s + rng.randint(1, 20_000)) for c, n in (("chr1", 151_000), ("chr2", 97_000), ("chr3", 62_000))
              for s in rng.sample(range(n - 1), 4)]
    with pysam.AlignmentFile(str(cram), "rc", reference_filename=str(DATA / "ref.fa")) as whole:
        for i, (chrom, start, end) in enumerate(spans):
            end = min(end, fai[chrom].length)
            tid = whole.get_tid(chrom)
            ranges = _byte_ranges(tuple(index.query(tid, start, end)))
            task = BamSlice(ObjectRef(key), size, 3, header, tid, (), tuple((r.start, r.end, False) for r in ranges),
                            cram=True)
            got = fetch_cram_slice(store, task, ObjectRef(store.key("ref.fa")), fai[chrom], Span(chrom, start, end),
                                   str(tmp_path / f"s{i}"), 2000)
            with pysam.AlignmentFile(got.bam) as local:
                mine = [r.to_string() for r in local.fetch(chrom, start, end)]
            want = [r.to_string() for r in whole.fetch(chrom, start, end)]
            assert mine == want and want, (chrom, start, end, len(mine), len(want))
            assert got.window[0] <= max(0, start - 2000) and got.window[1] >= min(fai[chrom].length, end + 2000)


def test_a_slice_decoded_against_another_reference_is_one_line(crams: dict[str, Path], store: ObjectStore,
                                                                tmp_path: Path) -> None:
    """Where planning could not compare MD5s (a reference used in place in the bucket),
    the function still refuses to decode against the wrong bases (htslib would not:
    it checks no MD5 when it decodes a region)."""
    cram = crams["small"]
    store.put_file(store.key("x.cram"), str(cram))
    text = (DATA / "ref.fa").read_text().splitlines(keepends=True)
    text[5] = text[5].replace("A", "C").replace("G", "T")
    store.put(store.key("other.fa"), "".join(text).encode())
    fai = parse_fai((DATA / "ref.fa.fai").read_text())
    entries = _entries(cram)
    index = CramIndex(entries, 3, cram.stat().st_size - len(EOF_CONTAINER))
    ranges = _byte_ranges(tuple(index.query(0, 0, 2_000)))
    task = BamSlice(ObjectRef(store.key("x.cram")), cram.stat().st_size, 3, (0, min(e.container for e in entries)),
                    0, (), tuple((r.start, r.end, False) for r in ranges), cram=True)
    with pytest.raises(CramSliceError, match="was not written against reference .*other.fa: the MD5 of chr1:3-") as exc:
        fetch_cram_slice(store, task, ObjectRef(store.key("other.fa")), fai["chr1"], Span("chr1", 0, 2_000),
                         str(tmp_path / "s"), 2000)
    assert "\n" not in str(exc.value)


def test_calls_on_a_cram_equal_one_whole_genome_run_on_it(crams: dict[str, Path], store: ObjectStore,
                                                         tmp_path: Path) -> None:
    """bcftools with cuts on a SNV and inside indels, and 9 regions; lowfreq (which reads
    BAM only: the functions hand it their decoded BAM) against its run on the CRAM
    decoded whole."""
    cram = crams["small"]
    whole = whole_genome("sampleA", tmp_path, bam=cram)
    (tmp_path / "bam").mkdir()
    assert vcf_body(whole) == vcf_body(whole_genome("sampleA", tmp_path / "bam"))  # the CRAM holds the BAM's reads
    cuts, kinds = tricky_cuts("sampleA", whole)
    assert {"snv", "deletion", "insertion"} <= set(kinds)
    vcf, plan, summary = run_core(store, "sampleA", tmp_path / "cuts", serial(store), cuts=cuts, bam=cram)
    assert_same(vcf, whole)
    assert plan.index.startswith("CRAI") and len(plan.regions) > 6
    vcf, plan, summary = run_core(store, "sampleA", tmp_path / "n9", serial(store), 9, bam=cram)
    assert_same(vcf, whole)
    # whole containers, each region's once or twice: little more than the CRAM
    assert summary.bam_read < 1.6 * cram.stat().st_size, summary
    decoded = tmp_path / "decoded.bam"
    pysam.view("-b", "-T", str(DATA / "ref.fa"), "-o", str(decoded), str(cram), catch_stdout=False)
    pysam.index(str(decoded))
    germline = LowfreqParams(min_depth=5)
    (tmp_path / "lf").mkdir()
    want = whole_genome("sampleA", tmp_path / "lf", germline, bam=decoded)
    vcf, _, _ = run_core(store, "sampleA", tmp_path / "lowfreq", serial(store), 7, params=germline, bam=cram)
    assert_same(vcf, want)


@pytest.mark.parametrize("n_regions", [4, 13])
def test_a_cram_and_a_bam_called_jointly_equal_one_whole_genome_joint_run(crams: dict[str, Path],
                                                                        store: ObjectStore, tmp_path: Path,
                                                                        n_regions: int) -> None:
    """Joint mode plans a CRAM (by its containers) and a BAM (by its BAI) over the same regions."""
    from test_cohort import call_jointly, whole_joint

    bams = {"sampleA": crams["small"], "sampleB": DATA / "sampleB.bam"}
    vcf, plans = call_jointly(store, bams, tmp_path, n_regions)
    assert [p.index.split(",")[0] for p in plans] == ["CRAI", "BAI"] and len(plans[0].regions) >= 3
    want = whole_joint(list(bams.values()), tmp_path)
    assert len(want) > 200 and vcf_body(vcf) == want


def test_a_cram_in_the_bucket_is_called_in_place_through_the_gateway(crams: dict[str, Path], ceph_s3: dict,
                                                                    tmp_path: Path) -> None:
    """Ceph's S3 gateway as the store, the CRAM and its .crai already in a bucket of the
    lab's (used in place, never copied): the VCF equals the whole-genome run on the CRAM."""
    import boto3
    from conftest import ceph_lithops_config

    from functions.bcftools_engine import BcftoolsParams
    from pipeline.call import CallInputs, call_samples
    from pipeline.merge import merge_sample
    from pipeline.plan import PlanSettings, plan_from_store
    from pipeline.stage import stage_reference

    cram = crams["small"]
    s3 = boto3.client("s3", endpoint_url=ceph_s3["endpoint"], aws_access_key_id=ceph_s3["access_key"],
                      aws_secret_access_key=ceph_s3["secret_key"], region_name="us-east-1")
    s3.create_bucket(Bucket="lab-crams")
    for name in ("sampleA.cram", "sampleA.cram.crai"):
        s3.upload_file(str(cram.parent / name), "lab-crams", f"run1/{name}")
    store = ObjectStore(ceph_lithops_config(ceph_s3), ceph_s3["bucket"], prefix="cram")
    url = "s3://lab-crams/run1/sampleA.cram"
    ref = stage_reference(store, str(DATA / "ref.fa"), tmp_path / "ref.json")
    man = stage_sample(store, "sampleA", url, url + ".crai", tmp_path / "sampleA.json")
    assert (man.bam.bucket, man.bam.key, man.bai.key) == ("lab-crams", "run1/sampleA.cram", "run1/sampleA.cram.crai")
    plan = plan_from_store(store, "sampleA", man, PlanSettings(n_regions=7), reference=ref)
    calls = tmp_path / "calls.json"
    summary = call_samples(CallInputs(store, [plan], {"sampleA": man}, ref, BcftoolsParams()), serial(store),
                           {"sampleA": calls})
    assert summary.computed == len(plan.regions) >= 5
    vcf = tmp_path / "sampleA.vcf.gz"
    merge_sample(store, calls, str(DATA / "ref.fa"), str(vcf), str(tmp_path / "stats.txt"))
    assert_same(str(vcf), whole_genome("sampleA", tmp_path, bam=cram))
    assert not [k for k in store.list("cram/") if k.startswith("cram/inputs/")]


@pytest.mark.parametrize("case, message", [
    ("truncated", "is truncated (it does not end with the CRAM end-of-file container)"),
    ("version2", "is CRAM version 2.1, which is not read (only 3.0 and 3.1)"),
    ("bam", "is not a CRAM file (it is a BAM file)"),
    ("named_bam", "is not a BAM file (it is a CRAM file): name it .cram in the sample sheet, with its .crai beside it"),
    ("unsorted", "has no index and cannot be indexed: it is not sorted by coordinate (CRAM file is not sorted by "
                 "chromosome / position): sort and index it with `samtools sort -O cram --reference <reference>"),
], ids=["truncated", "version2", "bam", "named_bam", "unsorted"])
def test_a_bad_cram_is_refused_at_staging_in_one_line(crams: dict[str, Path], store: ObjectStore, tmp_path: Path,
                                                       case: str, message: str) -> None:
    bad = tmp_path / ("bad.bam" if case == "named_bam" else "bad.cram")
    if case == "named_bam":
        shutil.copy(crams["sampleA"], bad)
    elif case == "unsorted":  # reads out of order, and a header that does not say so
        with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src:
            header = src.header.to_dict()
            header["HD"]["SO"] = "unknown"
            reads = [r.to_dict() for r in src]
        random.Random(1).shuffle(reads)
        with pysam.AlignmentFile(str(bad), "wc", header=header, reference_filename=str(DATA / "ref.fa")) as out:
            for read in reads:
                out.write(pysam.AlignedSegment.from_dict(read, out.header))
    elif case == "truncated":
        bad.write_bytes(crams["sampleA"].read_bytes()[:-1000])
    elif case == "version2":
        to_cram(DATA / "sampleA.bam", bad, DATA / "ref.fa", "--output-fmt-option", "version=2.1", index=False)
    else:
        shutil.copy(DATA / "sampleA.bam", bad)
    with pytest.raises(InputError, match=re.escape(message)) as exc:
        stage_sample(store, "sampleA", str(bad), f"{bad}.crai", tmp_path / "m.json")
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no manifest, no index left behind


@pytest.mark.e2e
def test_the_call_summary_names_what_it_read() -> None:
    from pipeline.call import CallSummary

    summary = CallSummary(samples=2, regions=4, computed=4, reused=0, get_bytes=3_000_000, gets=12,
                          bam_bytes=2_000_000, seconds=1.0, bam_read=2_100_000, inputs="BAM and CRAM")
    assert summary.line() == ("called 2 sample(s) in 4 regions: 4 functions run, 0 fragments reused; read 3.00 MB in "
                              "12 GETs (BAM and CRAM 1.05 x their sizes, and the reference) in 1.0 s")


def test_crams_through_snakemake_equal_whole_genome_runs_on_them(crams: dict[str, Path], tmp_path: Path) -> None:
    """From a lab's own folder: sampleA's CRAM with its .crai, sampleB's without one
    (staging builds it); each VCF equals bcftools on the CRAM."""
    from test_anywhere import _snakemake

    lab = tmp_path / "lab"
    (lab / "tmp").mkdir(parents=True)
    for s in SAMPLES:
        shutil.copy(crams[s], lab / f"{s}.cram")
    shutil.copy(f"{crams['sampleA']}.crai", lab / "sampleA.cram.crai")
    (lab / "samples.tsv").write_text("sample\tbam\n" + "".join(f"{s}\t{s}.cram\n" for s in SAMPLES))
    (lab / "config.yaml").write_text(f"samples: samples.tsv\nreference: {DATA / 'ref.fa'}\nplan:\n  n_regions: 6\n")
    res = _snakemake(lab, "-s", str(ROOT / "Snakefile"), "--configfile", "config.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    # The call step's summary names what it read.
    assert re.search(r"GETs \(CRAM \d+\.\d\d x its size, and the reference\)", res.stderr), res.stderr[-3000:]
    for s in SAMPLES:
        want = vcf_body(whole_genome(s, tmp_path, bam=lab / f"{s}.cram"))
        assert vcf_body(str(lab / "results" / f"{s}.vcf.gz")) == want
        plan = (lab / "work" / "plans" / f"{s}.tsv").read_text()
        assert "#index=CRAI" in plan
    assert (lab / "sampleB.cram.crai").exists()
    # nothing written outside the lab's folder: the decoding reference never looked up by MD5
    assert not (Path.home() / ".cache" / "hts-ref").exists() or not any((Path.home() / ".cache" / "hts-ref").iterdir())


@pytest.mark.e2e
def test_a_cram_of_another_reference_stops_the_run_before_any_function(crams: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """A CRAM written against a reference whose chr2 differs by a few bases (same
    names and lengths): its @SQ M5 is not the run's reference's, one line, no function."""
    from test_anywhere import _snakemake

    lab = tmp_path / "lab"
    (lab / "tmp").mkdir(parents=True)
    lines = (DATA / "ref.fa").read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ln.startswith(">chr2")) + 10
    lines[at] = lines[at].rstrip("\n")[::-1] + "\n"
    other = lab / "other.fa"
    other.write_text("".join(lines))
    pysam.faidx(str(other))
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src:
        header = src.header.to_dict()
        for sq in header["SQ"]:  # the reads as if aligned to other.fa: its MD5s go into the CRAM
            sq.pop("M5", None)
        with pysam.AlignmentFile(str(lab / "sampleA.cram"), "wc", header=header, reference_filename=str(other)) as out:
            for read in src:
                out.write(read)
    pysam.index(str(lab / "sampleA.cram"))
    (lab / "samples.tsv").write_text("sample\tbam\nsampleA\tsampleA.cram\n")
    (lab / "config.yaml").write_text(f"samples: samples.tsv\nreference: {DATA / 'ref.fa'}\n")
    res = _snakemake(lab, "-s", str(ROOT / "Snakefile"), "--configfile", "config.yaml")
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "contig 'chr2' has MD5" in errors[0], res.stderr[-3000:]
    assert "sample sampleA's CRAM header (@SQ M5)" in errors[0]
    assert errors[0].endswith("use the reference the CRAM was written against")
    assert not (lab / "work" / "calls").exists() and not (lab / "results" / "sampleA.vcf.gz").exists()
