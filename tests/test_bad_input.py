"""Bad input stops the run before any function runs, with one line naming the problem
and the fix, and leaves no VCF: end to end through the real ``snakemake`` command line
(one small run per case), plus unit tests of the checks in :mod:`pipeline.validate`."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pysam
import pytest
from helpers import DATA
from test_e2e import make_workdir, snakemake

from functions.core.bgzf import EOF_BLOCK
from pipeline.manifests import Contig, ManifestError, StagedReference, StoredFile
from pipeline.stage import check_local_bam, check_remote_bam, contigs_from_fai, local_index, stage_reference
from pipeline.validate import (
    InputError,
    check_contigs,
    check_eof,
    check_index_age,
    check_sort_order,
    fasta_contigs,
    sniff,
    sq_tags,
)

N_READS = 3000  # reads of sampleA (all on chr1) in each small BAM made here


# -- bad inputs, made from test_data/ ---------------------------------------------------
def _header(**change: object) -> dict:
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as bam:
        header = bam.header.to_dict()
    header.update(change)
    return header


def _reads() -> list[pysam.AlignedSegment]:
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as bam:
        return [r for _, r in zip(range(N_READS), bam, strict=False)]


def write_bam(path: Path, header: dict, reads: list[pysam.AlignedSegment], index: bool = True) -> Path:
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for r in reads:
            out.write(r)
    if index:
        pysam.index(str(path))
    return path


def write_reference(path: Path, edit: Callable[[str, str], tuple[str, str]]) -> Path:
    """A copy of test_data/ref.fa with each (name, sequence) passed through ``edit``."""
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa, open(path, "w") as out:
        for name in fa.references:
            new_name, seq = edit(name, fa.fetch(name))
            out.write(f">{new_name}\n" + "".join(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60)))
    pysam.faidx(str(path))
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every bad input once, in a scratch folder: name -> path."""
    d = tmp_path_factory.mktemp("bad")
    reads = _reads()
    header = _header()
    out = {
        "ref_renamed": write_reference(d / "renamed.fa", lambda n, s: ("2" if n == "chr2" else n, s)),
        "ref_shorter": write_reference(d / "shorter.fa", lambda n, s: (n, s[:96_000] if n == "chr2" else s)),
        "noindex": write_bam(d / "noindex.bam", header, reads, index=False),
        "header_only": write_bam(d / "empty.bam", header, []),
    }
    sq = [dict(x) for x in header["SQ"]]
    sq[1]["M5"] = "0123456789abcdef0123456789abcdef"
    out["wrong_m5"] = write_bam(d / "wrong_m5.bam", _header(SQ=sq), reads)
    backwards = reads[::-1]
    out["unsorted"] = write_bam(d / "unsorted.bam", _header(HD={"VN": "1.6", "SO": "unsorted"}), backwards,
                                index=False)
    out["unsorted_says_sorted"] = write_bam(d / "liar.bam", header, backwards, index=False)
    stale = write_bam(d / "stale.bam", header, reads)
    t = os.path.getmtime(stale)
    os.utime(f"{stale}.bai", (t - 3600, t - 3600))
    out["stale"] = stale
    full = (DATA / "sampleA.bam").read_bytes()
    (d / "truncated.bam").write_bytes(full[: 2 * len(full) // 3])
    shutil.copy(DATA / "sampleA.bam.bai", d / "truncated.bam.bai")
    out["truncated"] = d / "truncated.bam"
    shutil.copy(DATA / "ref.fa", d / "fasta.bam")
    out["fasta"] = d / "fasta.bam"
    # FASTQs: read 2 cut short mid-stream, read 2 with fewer reads, a FASTA named as a FASTQ.
    r2 = (DATA / "fastq" / "sampleA_R2.fastq.gz").read_bytes()
    (d / "cut_R2.fastq.gz").write_bytes(r2[: len(r2) // 2])
    out["fq_cut"] = d / "cut_R2.fastq.gz"
    lines = gzip.decompress(r2).split(b"\n")
    (d / "short_R2.fastq.gz").write_bytes(gzip.compress(b"\n".join(lines[: 4 * 20_000]) + b"\n"))
    out["fq_short"] = d / "short_R2.fastq.gz"
    shutil.copy(DATA / "ref.fa", d / "ref_R1.fastq")
    out["fq_fasta"] = d / "ref_R1.fastq"
    out["r1"] = DATA / "fastq" / "sampleA_R1.fastq.gz"
    out["r2"] = DATA / "fastq" / "sampleA_R2.fastq.gz"
    return out


# -- end to end: each case through snakemake ---------------------------------------------
@dataclass(frozen=True)
class Case:
    bam: str | None  # key in ``bad`` for sampleA's BAM; None: test_data/sampleA.bam
    error: str  # the one line, with {bam}, {ref} and {wd} filled in
    step: str | None  # the rule that fails; None: the workflow does not load
    reference: str | None = None  # key in ``bad``; None: test_data/ref.fa
    sheet: str | None = None  # the whole sample sheet instead of one row for sampleA ({name}: a path in ``bad``)


USE_REF = "use the reference the reads were aligned to"
SORT = "sort and index it with `samtools sort -o {name}.sorted.bam {bam} && samtools index {name}.sorted.bam` " \
       "and put {name}.sorted.bam in the sample sheet"
CASES = {
    "contig-renamed": Case(
        None, "error: contig 'chr2' of sample sampleA's BAM is not in reference {ref} (its contigs: chr1, 2, chr3): "
        + USE_REF, "plan", reference="ref_renamed"),
    "contig-length": Case(
        None, "error: contig 'chr2' is 97,000 bp in sample sampleA's BAM but 96,000 bp in reference {ref}: "
        + USE_REF, "plan", reference="ref_shorter"),
    "contig-md5": Case(
        "wrong_m5", "error: contig 'chr2' has MD5 0123456789abcdef0123456789abcdef in sample sampleA's BAM header "
        "(@SQ M5) but 9351011d72c46cd679ece9901d75b6fa in reference {ref}: " + USE_REF, "plan"),
    "unsorted": Case(
        "unsorted", "error: BAM {bam} of sample sampleA is not sorted by coordinate (its header says @HD "
        "SO:unsorted): " + SORT, "stage_sample"),
    "unsorted-no-index-can-be-built": Case(
        "unsorted_says_sorted", "error: BAM {bam} of sample sampleA has no index and cannot be indexed: it is not "
        "sorted by coordinate (Unsorted positions on sequence #1: 22647 followed by 22646): " + SORT, "stage_sample"),
    "index-older-than-bam": Case(
        "stale", "error: index {bam}.bai is older than its BAM {bam} (the BAM changed after it was indexed): "
        "rebuild the index with `samtools index {bam}`", "stage_sample"),
    "truncated": Case(
        "truncated", "error: BAM {bam} of sample sampleA is truncated (it does not end with the BGZF end-of-file "
        "block): copy it again from its source, or write it again with samtools", "stage_sample"),
    "not-a-bam": Case(
        "fasta", "error: BAM {bam} of sample sampleA is not a BAM file (it looks like a FASTA file): fix its path "
        "in the sample sheet (`samtools view -b` converts SAM or CRAM to BAM)", "stage_sample"),
    "no-reads": Case(
        "header_only", "error: BAM {bam} of sample sampleA has no aligned reads, so there is nothing to call: point "
        "the sample sheet at the BAM with the aligned reads, or remove the sample", "plan"),
    "sheet-missing-column": Case(
        None, "error: sample sheet config/samples.tsv: missing column 'bam' in the header line (found: sample, "
        "path): its first line must name the columns sample and bam (or sample, fastq_1 and fastq_2), separated "
        "by tabs", None,
        sheet="sample\tpath\nsampleA\ttest_data/sampleA.bam\n"),
    "sheet-missing-file": Case(
        None, "error: sample sheet config/samples.tsv row 2: BAM test_data/sampleX.bam of sample 'sampleA' not "
        "found: fix the path (a relative path starts from the folder Snakemake runs in, {wd})", None,
        sheet="sample\tbam\nsampleA\ttest_data/sampleX.bam\n"),
    "sheet-empty": Case(
        None, "error: sample sheet config/samples.tsv lists no samples: add one line per sample with its name and "
        "its BAM (or its two FASTQs), separated by tabs", None, sheet="sample\tbam\n"),
    "fastq-truncated": Case(
        None, "error: FASTQ {fq_cut} is truncated (the gzip stream ends early): copy it again from its source",
        "stage_fastq", sheet="sample\tfastq_1\tfastq_2\nsampleA\t{r1}\t{fq_cut}\n"),
    "fastq-pairs-differ": Case(
        None, "error: FASTQ {r1} has 20,667 reads but FASTQ {fq_short} has 20,000: give the two files of the same "
        "run (R1 and R2 of one library)", "stage_fastq", sheet="sample\tfastq_1\tfastq_2\nsampleA\t{r1}\t{fq_short}\n"),
    "fastq-not-fastq": Case(
        None, "error: FASTQ {fq_fasta} is not a FASTQ file (it looks like a FASTA file): give the sample's R1 and R2 "
        "FASTQ files (gzip-compressed or plain)", "stage_fastq",
        sheet="sample\tfastq_1\tfastq_2\nsampleA\t{fq_fasta}\t{r2}\n"),
    "sheet-bam-and-fastq": Case(
        None, "error: sample sheet config/samples.tsv row 2: sample 'sampleA' has both a BAM and FASTQs: give one or "
        "the other", None, sheet="sample\tbam\tfastq_1\tfastq_2\nsampleA\ttest_data/sampleA.bam\t{r1}\t{r2}\n"),
    "sheet-one-fastq": Case(
        None, "error: sample sheet config/samples.tsv row 2: sample 'sampleA' has only fastq_1: give its BAM, or both "
        "FASTQs of its read pairs (fastq_1 and fastq_2)", None,
        sheet="sample\tbam\tfastq_1\tfastq_2\nsampleA\t\t{r1}\t\n"),
    "sheet-read-group-of-a-bam": Case(
        None, "error: sample sheet config/samples.tsv row 2: sample 'sampleA' has a BAM: its read groups come from the "
        "BAM, so leave library empty", None, sheet="sample\tbam\tlibrary\nsampleA\ttest_data/sampleA.bam\tlib1\n"),
}
NAME_RULE = ("is not allowed: use only letters, digits, '.', '_' and '-', and do not start with '.' or '-' "
             "(the name becomes part of file names and object keys)")
for bad_name in ("../x", "a/b", "my sample"):
    CASES[f"sample-name-{bad_name}"] = Case(
        None, f"error: sample sheet config/samples.tsv row 2: sample {bad_name!r} {NAME_RULE}", None,
        sheet=f"sample\tbam\n{bad_name}\ttest_data/sampleA.bam\n")


def errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def assert_nothing_called(wd: Path) -> None:
    assert not list(wd.glob("results/*.vcf.gz")) and not list(wd.glob("results/*.bam"))
    assert not list(wd.glob("work/fastq/*")) and not list(wd.glob("work/staged/fastq/*"))
    assert not list(wd.glob("work/calls/*.json"))
    assert not list(wd.glob("tmp/**/fragments/**/*.vcf.gz"))


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_stops_the_run_with_one_line(bad: dict[str, Path], tmp_path: Path, case: Case) -> None:
    reference = str(bad[case.reference]) if case.reference else "test_data/ref.fa"
    wd = make_workdir(tmp_path / "wd", plan__n_regions=2, reference=reference)
    bam = str(bad[case.bam]) if case.bam else "test_data/sampleA.bam"
    paths = {k: str(v) for k, v in bad.items()}
    (wd / "config" / "samples.tsv").write_text((case.sheet or f"sample\tbam\nsampleA\t{bam}\n").format(**paths))
    res = snakemake(wd)
    assert res.returncode != 0
    name = os.path.basename(bam).removesuffix(".bam")
    ref = reference if os.path.isabs(reference) else str(wd.resolve() / reference)
    expected = case.error.format(bam=bam, name=name, ref=ref, wd=wd.resolve(), **paths)
    assert errors(res.stderr) == [expected], res.stderr[-3000:]
    assert not [ln for ln in res.stderr.splitlines() if ln.startswith(("Traceback", "[E::", "[W::"))], res.stderr
    if case.step is None:
        assert "Error in rule" not in res.stderr and not (wd / "work").exists()
    else:
        assert f"Error in rule {case.step}" in res.stderr
    assert_nothing_called(wd)


@pytest.mark.e2e
def test_missing_index_of_a_sorted_local_bam_is_built_while_staging(bad: dict[str, Path], tmp_path: Path) -> None:
    bam = tmp_path / "sorted.bam"
    shutil.copy(bad["noindex"], bam)
    wd = make_workdir(tmp_path / "wd", plan__n_regions=2)
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd, "--until", "plan")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "sorted.bam.bai").exists()
    assert f"BAM {bam} had no index: built {bam}.bai in" in res.stderr
    assert "#planning_gets=2\n" in (wd / "work" / "plans" / "sampleA.tsv").read_text()


# -- the checks themselves ------------------------------------------------------------
def test_missing_index_goes_to_the_work_folder_when_the_bam_folder_is_read_only(
    bad: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Tests run as root, for whom every folder is writable: pretend the BAM's is not.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    bam = tmp_path / "ro" / "x.bam"
    bam.parent.mkdir()
    shutil.copy(bad["noindex"], bam)
    caplog.set_level("INFO", logger="pipeline.stage")
    got = local_index("s1", str(bam), f"{bam}.bai", tmp_path / "work")
    assert got == str(tmp_path / "work" / "s1.bam.bai") and os.path.exists(got)
    assert not os.path.exists(f"{bam}.bai")
    assert "(the BAM's folder is not writable)" in caplog.text
    # The next run finds it there instead of building it again.
    caplog.clear()
    assert local_index("s1", str(bam), f"{bam}.bai", tmp_path / "work") == got
    assert "built by an earlier run" in caplog.text


def test_reference_md5s_are_those_of_the_sam_spec() -> None:
    # The test BAMs' @SQ M5 tags were written by samtools from the same reference.
    m5 = sq_tags(_header_text(), "M5")
    contigs = fasta_contigs(str(DATA / "ref.fa"))
    assert [(c.name, c.length) for c in contigs] == [("chr1", 151000), ("chr2", 97000), ("chr3", 62000)]
    assert {c.name: c.md5 for c in contigs} == m5


def test_reference_md5_ignores_case_and_line_length(tmp_path: Path) -> None:
    soft = write_reference(tmp_path / "soft.fa", lambda n, s: (n, s.lower()))
    assert fasta_contigs(str(soft)) == fasta_contigs(str(DATA / "ref.fa"))


def test_reference_manifest_lists_contigs(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = stage_reference(store, str(DATA / "ref.fa"), tmp_path / "ref.json")
    assert list(manifest.contigs) == fasta_contigs(str(DATA / "ref.fa"))
    assert StagedReference.read(tmp_path / "ref.json") == manifest
    # A reference used in place in object storage: names and lengths from its .fai, no MD5.
    assert contigs_from_fai(store, manifest.fai) == (
        Contig("chr1", 151000), Contig("chr2", 97000), Contig("chr3", 62000))


def test_manifest_that_cannot_be_read_is_one_line(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ref.json"
    stage_reference(store, str(DATA / "ref.fa"), path)
    fix = "run `snakemake --cores 2 --forcerun stage_reference` to write it again"
    data = json.loads(path.read_text())
    del data["contigs"]  # as staged by an older version
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as err:
        StagedReference.read(path)
    assert str(err.value) == f"staged-reference manifest {path} is not one this version writes " \
                             f"(it lacks 'contigs'); {fix}"
    path.write_text(path.read_text()[:20])  # cut short
    with pytest.raises(ManifestError, match=r"cannot be read \(.*\); " + re.escape(fix)):
        StagedReference.read(path)
    with pytest.raises(ManifestError, match=f"is missing; {re.escape(fix)}"):
        StagedReference.read(tmp_path / "gone.json")


def _header_text() -> str:
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as bam:
        return str(bam.header)


REF = [Contig("chr1", 100, "aa"), Contig("chr2", 50)]


@pytest.mark.parametrize(
    "bam, m5, problem",
    [
        ([("chr1", 100), ("chr2", 50)], {"chr1": "AA", "chr2": "bb"}, None),  # M5 case-insensitive; no MD5: skip
        ([("chr1", 100)], {}, None),  # the reference may have more contigs
        ([("1", 100)], {}, "contig '1' of sample s's BAM is not in reference r.fa (its contigs: chr1, chr2)"),
        ([("chr1", 1000)], {}, "contig 'chr1' is 1,000 bp in sample s's BAM but 100 bp in reference r.fa"),
        ([("chr1", 100)], {"chr1": "ab"}, "contig 'chr1' has MD5 ab in sample s's BAM header (@SQ M5) but aa"),
    ],
)
def test_check_contigs(bam: list[tuple[str, int]], m5: dict[str, str], problem: str | None) -> None:
    if problem is None:
        check_contigs("s", bam, m5, "r.fa", REF)
        return
    with pytest.raises(InputError) as err:
        check_contigs("s", bam, m5, "r.fa", REF)
    assert str(err.value).startswith(problem) and str(err.value).endswith(": " + USE_REF)


@pytest.mark.parametrize(
    "head, kind",
    [
        ((DATA / "sampleA.bam").read_bytes()[:65536], None),
        ((DATA / "ref.fa").read_bytes()[:100], "it looks like a FASTA file"),
        (b"@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:5\n", "it looks like a SAM file"),
        (b"@read1\nACGT\n+\nIIII\n", "it looks like a FASTQ file"),
        (b"CRAM\x03\x00", "it is a CRAM file"),
        ((DATA / "sampleA.bam.bai").read_bytes()[:100], "it is a BAM index"),
        ((DATA / "truth" / "sampleA.vcf.gz").read_bytes()[:65536], "it is a compressed VCF file"),
        (b"", "the file is empty"),
        (b"\x00\x01binary", "it does not start with the BAM magic bytes"),
    ],
)
def test_sniff_tells_what_a_file_is(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_eof_sort_order_and_index_age(tmp_path: Path) -> None:
    check_eof(EOF_BLOCK, "s", "x.bam")
    with pytest.raises(InputError, match="truncated"):
        check_eof(EOF_BLOCK[1:] + b"\0", "s", "x.bam")
    for so in ("coordinate", "unknown", None):
        check_sort_order(so, "s", "x.bam")
    with pytest.raises(InputError, match=r"SO:queryname\): sort and index it with `samtools sort -o x.sorted.bam"):
        check_sort_order("queryname", "s", "dir/x.bam")
    data, index = tmp_path / "ref.fa", tmp_path / "ref.fa.fai"
    data.write_text(">a\nA\n")
    index.write_text("a\t1\t3\t1\t2\n")
    check_index_age(str(index), str(data), "reference", "samtools faidx ref.fa")
    os.utime(index, (os.path.getmtime(data) - 10,) * 2)
    with pytest.raises(InputError, match=r"older than its reference .*: rebuild the index with `samtools faidx"):
        check_index_age(str(index), str(data), "reference", "samtools faidx ref.fa")


def test_bam_whose_header_is_corrupt(tmp_path: Path) -> None:
    from pysam.libcbgzf import BGZFile

    path = tmp_path / "corrupt.bam"
    with BGZFile(str(path), "wb") as out:  # BAM magic, then a header text said to be 1 GB long
        out.write(b"BAM\x01" + (10**9).to_bytes(4, "little") + b"@HD\tVN:1.6\n")
    with pytest.raises(InputError, match=r"the header of BAM .*corrupt.bam of sample s cannot be read \(BAM header"):
        check_local_bam("s", str(path))


class FakeStore:
    """Just the ranged GET of the store facade, over one local file."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        self.gets: list[tuple[int, int]] = []

    def get_range(self, key: str, start: int, end: int, bucket: str | None = None) -> bytes:
        self.gets.append((start, end))
        return self.data[start:end]


@pytest.mark.parametrize(
    "name, problem",
    [("good", None), ("truncated", "is truncated"), ("fasta", "is not a BAM file (it looks like a FASTA file)")],
)
def test_bam_in_object_storage_is_checked_with_one_ranged_get(bad: dict[str, Path], name: str,
                                                             problem: str | None) -> None:
    path = DATA / "sampleA.bam" if name == "good" else bad[name]
    store = FakeStore(path)
    obj = StoredFile("s3://b/k", "b", "k", len(store.data), "etag")
    if problem is None:
        check_remote_bam(store, "s", "s3://b/k", obj)  # type: ignore[arg-type]
        assert store.gets == [(len(store.data) - 28, len(store.data))]
        return
    with pytest.raises(InputError, match=f"BAM s3://b/k of sample s {problem}".replace("(", r"\(").replace(")", r"\)")):
        check_remote_bam(store, "s", "s3://b/k", obj)  # type: ignore[arg-type]
