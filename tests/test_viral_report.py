"""The viral view of the run report (pipeline/report.py, pipeline/svgplot.py): the
minority-variant table, depth and coverage per sample, amplicon dropouts and the
allele-frequency heatmap, on call manifests, VCFs, consensus FASTAs and a primer BED
made here (no Snakemake), plus one real run through the `snakemake` command line
(lowfreq engine, a primer scheme) on the bundled test data."""

from __future__ import annotations

import base64
import csv
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from html import unescape
from pathlib import Path

import numpy as np
import pysam
import pytest
import yaml
from test_e2e import ROOT, make_workdir, snakemake

from functions.core.primers import parse_primer_bed
from pipeline import svgplot
from pipeline.config import load_settings, read_step_settings, step_settings
from pipeline.manifests import CallResults
from pipeline.report import (
    MINORITY_COLUMNS,
    NO_COVERAGE,
    Callset,
    ReportError,
    Run,
    amplicons_of,
    build_report,
    load_viral,
    minority_rows,
    normalise,
    read_allele_calls,
)

PRICES = {"currency": "USD", "source": "test", "function_memory_mb": 2048, "per_gb_second": 0.0000166667,
          "per_million_invocations": 0.2, "per_thousand_gets": 0.0004, "per_thousand_puts": 0.005}
CONTIGS = {"v": 1000, "w": 200}

VCF_HEAD = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=strand_bias,Description="strand bias">
##FILTER=<ID=low_depth,Description="DP < 100">
##contig=<ID=v,length=1000>
##contig=<ID=w,length=200>
##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">
##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
"""

# Two samples. A: an SNV (PASS), an MNP-like record that is one SNV (C>T at 301), a
# multi-allelic site; B: the same SNV at 100 filtered, the 301 SNV written plainly, and
# one on the second contig, where A has no region at all.
VCF_A = [("v", 100, "C", "T", "0.3", "PASS"), ("v", 250, "A", "G,T", "0.1,0.05", "PASS"),
         ("v", 300, "ACG", "ATG", "0.9", "PASS")]
VCF_B = [("v", 100, "C", "T", "0.02", "strand_bias"), ("v", 301, "C", "T", "0.85", "low_depth;strand_bias"),
         ("w", 5, "G", "A", "1", "PASS")]

# Amplicons (0-based primers): inserts [30,280), [270,560), [560,760), [760,980).
BED = """v\t10\t30\tT_1_LEFT\t1\t+
v\t280\t300\tT_1_RIGHT\t1\t-
v\t250\t270\tT_2_LEFT\t2\t+
v\t560\t580\tT_2_RIGHT\t2\t-
v\t540\t560\tT_3_LEFT\t1\t+
v\t760\t780\tT_3_RIGHT\t1\t-
v\t740\t760\tT_4_LEFT\t2\t+
v\t980\t1000\tT_4_RIGHT\t2\t-
"""


def depth_a() -> dict[str, np.ndarray]:
    v = np.full(1000, 1000, dtype=np.uint32)
    v[30:280] = 12  # amplicon 1: at least min_depth, but under 5 % of the sample's median amplicon: weak
    v[550:770] = 0  # amplicon 3 dropped out
    return {"v": v}  # no region on w


def depth_b() -> dict[str, np.ndarray]:
    v = np.full(1000, 200, dtype=np.uint32)
    v[270:560] = 5  # amplicon 2 below min_depth
    return {"v": v, "w": np.full(200, 80, dtype=np.uint32)}


def fragment(sample: str, i: int, chrom: str, start: int, depth: np.ndarray, **extra: object) -> dict[str, object]:
    """A region's stats as the lowfreq engine's function writes them (those the report reads)."""
    end = start + len(depth)
    return {"sample": sample, "out_key": f"svc/fragments/{sample}/{i:05d}", "region": i,
            "name": f"{chrom}:{start + 1}-{end}", "chrom": chrom, "start": start, "end": end, "records": 1,
            "seconds": 0.5, "started": 1000.0 + i, "submitted": 999.0, "attempts": 1, "gets": 4,
            "get_bytes": 1000, "bam_gets": 3, "bam_get_bytes": 900, "reads": [100], "usable_reads": [100],
            "depth": {"start": start, "end": end,
                      "zlib_u32": base64.b64encode(zlib.compress(depth.astype("<u4").tobytes())).decode()},
            **extra}


def write_vcf(path: Path, records: Sequence[tuple[str, int, str, str, str, str]]) -> Path:
    text = VCF_HEAD + "".join(f"{c}\t{p}\t.\t{r}\t{a}\t100\t{f}\tDP=100;AF={af}\n" for c, p, r, a, af, f in records)
    plain = path.with_suffix("")
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def make_callset(tmp: Path, name: str, records: Sequence[tuple[str, int, str, str, str, str]],
                 depth: Mapping[str, np.ndarray], cut: int = 400, trimmed: int = 7) -> Callset:
    """A sample's call manifest (its depth track cut into regions at ``cut`` on each contig) and VCF."""
    frags = []
    for chrom, track in depth.items():
        for lo, hi in ((0, min(cut, len(track))), (min(cut, len(track)), len(track))):
            if hi > lo:
                frags.append(fragment(name, len(frags), chrom, lo, track[lo:hi], primer_trimmed=trimmed,
                                      primer_dropped=1))
    manifest = CallResults.from_dict({"sample": name, "code": "test", "engine": "lowfreq", "params": {},
                                      "command": "lowfreq", "retries": 0, "fragments": frags})
    return Callset(name, manifest, write_vcf(tmp / f"{name}.vcf.gz", records), [name], 10_000, {})


@pytest.fixture
def two(tmp_path: Path) -> tuple[list[Callset], Path, list[Path]]:
    """Samples A and B, the primer BED and A's consensus FASTA (B has none)."""
    bed = tmp_path / "scheme.bed"
    bed.write_text(BED)
    fa = tmp_path / "A.consensus.fa"
    fa.write_text(">A|v\n" + "ACGTN" * 12 + "\nNNNN\n>A|w\nNNNNnACGT\n")
    return ([make_callset(tmp_path, "A", VCF_A, depth_a()), make_callset(tmp_path, "B", VCF_B, depth_b())],
            bed, [fa])


def run_of(callsets: list[Callset], viral: object) -> Run:
    settings = {"calling": {"engine": "lowfreq", "mode": "per_sample"}, "executor": {"runner": "serial"}}
    return Run(callsets, [], [], [], {}, [], settings, {}, viral)  # type: ignore[arg-type]


def svgs(page: str, title: str) -> list[str]:
    return [s for s in re.findall(r"<svg .*?</svg>", page, re.S) if f"<title>{title}" in s]


# -- alleles and the table -------------------------------------------------------------------
def test_alleles_are_keyed_in_their_shortest_form() -> None:
    assert normalise(300, "ACG", "ATG") == (301, "C", "T")
    assert normalise(642, "TGTAG", "T") == (642, "TGTAG", "T")
    assert normalise(10, "AGT", "AT") == (10, "AG", "A")  # a deletion of a multi-allelic record, split
    assert normalise(10, "A", "ATT") == (10, "A", "ATT")


def test_vcf_alleles_split_and_keep_their_filter(two: tuple[list[Callset], Path, list[Path]]) -> None:
    calls = read_allele_calls(two[0][1].vcf)
    assert {(a.chrom, a.pos, a.ref, a.alt): (round(c.af, 4), c.filter, c.passed) for a, c in calls.items()} == {
        ("v", 100, "C", "T"): (0.02, "strand_bias", False),
        ("v", 301, "C", "T"): (0.85, "low_depth;strand_bias", False),
        ("w", 5, "G", "A"): (1.0, "PASS", True)}
    assert len(read_allele_calls(two[0][0].vcf)) == 4  # 250 A>G and A>T are two alleles


def test_minority_table_rows(two: tuple[list[Callset], Path, list[Path]]) -> None:
    callsets, bed, fastas = two
    vr = load_viral(callsets, fastas, 10, str(bed))
    rows = [dict(zip(MINORITY_COLUMNS, r, strict=True)) for r in minority_rows(vr)]
    # The union of both samples' alleles, in reference order, each with every sample in the run's order.
    assert [(r["chrom"], r["pos"], r["ref"], r["alt"], r["sample"]) for r in rows] == [
        (c, p, ref, alt, s) for c, p, ref, alt in [("v", "100", "C", "T"), ("v", "250", "A", "G"),
                                                   ("v", "250", "A", "T"), ("v", "301", "C", "T"),
                                                   ("w", "5", "G", "A")] for s in ("A", "B")]
    by = {(r["sample"], r["chrom"], r["pos"], r["alt"]): r for r in rows}
    assert (by["A", "v", "100", "T"]["af"], by["A", "v", "100", "T"]["filter"]) == ("0.3", "PASS")
    assert (by["B", "v", "100", "T"]["af"], by["B", "v", "100", "T"]["filter"]) == ("0.02", "strand_bias")
    # The same SNV written as an MNP-like record in A and plainly in B is one allele.
    assert by["A", "v", "301", "T"]["af"] == "0.9" and by["B", "v", "301", "T"]["filter"] == "low_depth;strand_bias"
    # Not called: af 0 and not_called; the depth is always the sample's own, from its track.
    for key, depth in ((("B", "v", "250", "G"), "200"), (("A", "w", "5", "A"), "0")):
        assert (by[key]["af"], by[key]["filter"], by[key]["depth"]) == ("0", "not_called", depth)
    assert [by[s, "v", "100", "T"]["depth"] for s in "AB"] == ["12", "200"]  # A's amplicon 1 is at 12x
    assert by["B", "w", "5", "A"]["depth"] == "80"


def test_build_report_writes_the_table_atomically_with_the_page(two: tuple[list[Callset], Path, list[Path]],
                                                                tmp_path: Path) -> None:
    callsets, bed, fastas = two
    out = tmp_path / "results"
    out.mkdir()
    run = run_of(callsets, load_viral(callsets, fastas, 10, str(bed)))
    build_report(run, PRICES, out / "report.html", out / "run_metrics_mqc.tsv", out / "minority_variants.tsv")
    assert sorted(p.name for p in out.iterdir()) == ["minority_variants.tsv", "report.html", "run_metrics_mqc.tsv"]
    with open(out / "minority_variants.tsv") as fh:
        table = list(csv.reader(fh, delimiter="\t"))
    assert table[0] == list(MINORITY_COLUMNS) == ["sample", "chrom", "pos", "ref", "alt", "af", "depth", "filter"]
    assert len(table) == 1 + 5 * 2
    # Without the viral figures (another engine) the table cannot be asked for; nothing is written.
    with pytest.raises(ReportError, match="lowfreq"):
        build_report(run_of(callsets, None), PRICES, tmp_path / "r.html", tmp_path / "m.tsv", tmp_path / "x.tsv")
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob("*.tsv"))


# -- depth, coverage, amplicons --------------------------------------------------------------
def test_amplicon_inserts_lie_between_the_innermost_primers() -> None:
    scheme = parse_primer_bed(BED + "v\t12\t34\tT_1_LEFT_alt1\t1\t+\nv\t275\t295\tT_1_RIGHT_alt1\t1\t-\n")
    amps = {a.name: (a.chrom, a.start, a.end) for a in amplicons_of(scheme)}
    assert amps == {"T_1": ("v", 34, 275), "T_2": ("v", 270, 560), "T_3": ("v", 560, 760), "T_4": ("v", 760, 980)}


def test_depth_coverage_and_amplicon_figures(two: tuple[list[Callset], Path, list[Path]]) -> None:
    callsets, bed, fastas = two
    vr = load_viral(callsets, fastas, 10, str(bed))
    a, b = vr.samples
    assert list(vr.contigs) == ["v", "w"] and vr.offsets() == {"v": 0, "w": 1000}
    track_a = np.concatenate([depth_a()["v"], np.zeros(200)])
    assert a.mean_depth == pytest.approx(track_a.mean())
    assert a.breadth == {10: pytest.approx((track_a >= 10).mean()), 100: pytest.approx((track_a >= 100).mean())}
    assert a.below_min == 220 + 200 and b.below_min == 290
    assert (a.consensus_n, a.consensus_length) == (12 + 4 + 5, 60 + 4 + 9) and b.consensus_n is None
    assert (a.primer_trimmed, a.primer_dropped) == (7 * 2, 2)  # summed over its 2 regions
    # Amplicon 3 of A has no reads at all: dropped out, by name; amplicon 1 at 12x is weak.
    assert a.amplicon_depth == {"T_1": 12, "T_2": 1000, "T_3": 0, "T_4": 1000}
    assert (a.dropped, a.weak) == (["T_3"], ["T_1"])
    assert (b.dropped, b.weak) == (["T_2"], [])
    # The bins: about DEPTH_BINS over the genome, end to end, none across a contig's end.
    assert a.bins[0][:2] == (0, 3) and a.bins[-1][1] == 1200 and 300 <= len(a.bins) <= 500
    assert any(lo == 1000 for lo, _, _, _ in a.bins)
    assert all(low for lo, hi, _, low in a.bins if lo >= 1000)  # no region on w: below min_depth


def test_page_sections(two: tuple[list[Callset], Path, list[Path]], tmp_path: Path) -> None:
    callsets, bed, fastas = two
    run = run_of(callsets, load_viral(callsets, fastas, 10, str(bed)))
    build_report(run, PRICES, tmp_path / "report.html", tmp_path / "m.tsv", tmp_path / "minority.tsv")
    page = (tmp_path / "report.html").read_text()
    for heading in ("Depth and coverage", "Amplicons (4, scheme", "Minority variants"):
        assert f"<h2>{heading}" in page or f"<h3>{heading}" in page, heading
    # The per-sample table: mean depth, breadth, consensus N, primer reads, amplicons dropped and weak.
    row_a = re.search(r"<tr><td>A</td>(.*?)</tr>", page.split("Depth and coverage")[1]).group(1)  # type: ignore
    cells = re.findall(r"<td>(.*?)</td>", row_a)
    # A: 250 positions at 12x, 220 at 0, the rest of v at 1000x; no reads on w (200 bp).
    assert cells == ["444", "65.00\u00a0%", "44.17\u00a0%", "21 (28.77\u00a0%)", "14", "2", "1 of 4", "1"]
    # The dropped amplicon is named, the weak one too.
    assert re.search(r"<tr><td>A</td><td>T_3</td><td>T_1</td></tr>", page)
    assert re.search(r"<tr><td>B</td><td>T_2</td><td>-</td></tr>", page)
    # Depth panels: one per sample, with the threshold.
    (panels,) = svgs(page, "Depth along the genome per sample")
    assert re.findall(r'font-weight="bold">([^<]*)</text>', panels) == ["A", "B"]
    # No script, every plot at most 900 px wide, no text under 13 px.
    assert "<script" not in page
    assert all(f'viewBox="0 0 {svgplot.WIDTH} ' in s for s in re.findall(r"<svg [^>]*>", page))
    assert min(int(s) for s in re.findall(r'font-size="(\d+)"', page)) >= svgplot.MIN_FONT


def test_a_run_without_variants_or_scheme(tmp_path: Path) -> None:
    """No allele in any sample: a table of its header only and no heatmap; no scheme: no amplicons."""
    callsets = [make_callset(tmp_path, name, [], depth_b()) for name in ("A", "B")]
    run = run_of(callsets, load_viral(callsets))
    build_report(run, PRICES, tmp_path / "report.html", tmp_path / "m.tsv", tmp_path / "minority.tsv")
    assert (tmp_path / "minority.tsv").read_text() == "\t".join(MINORITY_COLUMNS) + "\n"
    page = (tmp_path / "report.html").read_text()
    assert "0 alleles called in at least one of the 2 samples" in page
    assert not svgs(page, "Allele frequency per sample") and "Amplicons (" not in page
    assert len(svgs(page, "Depth along the genome per sample")) == 1


def heat_rows(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end" font-size="\d+"><title>([^<]*)</title>', svg)


def test_af_heatmap_one_row_per_sample_pass_and_filtered_apart(two: tuple[list[Callset], Path, list[Path]],
                                                               tmp_path: Path) -> None:
    callsets, bed, fastas = two
    run = run_of(callsets, load_viral(callsets, fastas, 10, str(bed)))
    build_report(run, PRICES, tmp_path / "report.html", tmp_path / "m.tsv", tmp_path / "minority.tsv")
    (heat,) = svgs((tmp_path / "report.html").read_text(), "Allele frequency per sample")
    assert heat_rows(heat) == ["A", "B"]
    cols = [unescape(c) for c in re.findall(r'rotate\(-90[^>]*>(?:<title>[^<]*</title>)?([^<]*)</text>', heat)]
    assert cols == ["v:100 C>T", "v:250 A>G", "v:250 A>T", "v:301 C>T", "w:5 G>A"]  # two contigs: named
    cells = {unescape(m[1]): (m[0], m[2]) for m in re.findall(
        r'<rect [^>]*fill="(#[0-9a-f]+)"><title>([^<]*)</title></rect>(\s*<path [^>]*stroke="#[0-9a-f]+")?', heat)}
    pass_cell = next(v for k, v in cells.items() if k.startswith("A v:100 C>T"))
    filtered = next(v for k, v in cells.items() if k.startswith("B v:100 C>T"))
    assert pass_cell[1] == "" and filtered[1]  # the filtered call is crossed, the PASS one is not
    assert pass_cell[0] == svgplot.VIRIDIS[4] and filtered[0] == svgplot.VIRIDIS[1]  # 20-50 %, 2-5 %
    # Not called where the sample has no reads: grey; not called where it has: left empty.
    assert cells[next(k for k in cells if k.startswith("A w:5 G>A"))][0] == NO_COVERAGE  # no reads on w
    assert not [k for k in cells if k.startswith("B v:250")]  # B at 200x without the alleles: white


def test_heatmap_of_96_samples_and_150_alleles_stays_readable() -> None:
    rows = [f"run42_sample_{i:02d}" for i in range(96)]
    cap = svgplot.heatmap_capacity(rows)
    cols = [f"{1000 + 37 * i:,} A>G" for i in range(150)]
    rng = np.random.default_rng(1)
    blocks = [cols[i : i + cap] for i in range(0, len(cols), cap)]
    assert len(blocks) == 3
    for block in blocks:
        cells = {(r, c): svgplot.Cell(svgplot.VIRIDIS[int(rng.integers(7))], "x", "#000000" if r % 3 else None)
                 for r in range(96) for c in range(len(block)) if rng.random() < 0.3}
        svg = svgplot.heatmap(rows, block, cells, "t", [("a", "#000000")])
        assert f'viewBox="0 0 {svgplot.WIDTH} ' in svg
        assert heat_rows(svg) == rows
        ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="end"', svg)]
        xs = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="start" font-size="13" '
                                           r'transform="rotate', svg)]
        assert len(xs) == len(block) and min(np.diff(xs)) >= svgplot.HEAT_CELL  # labels never overlap
        assert min(np.diff(ys)) >= svgplot.HEAT_CELL
        assert max(xs) < svgplot.WIDTH
        assert min(int(s) for s in re.findall(r'font-size="(\d+)"', svg)) >= svgplot.MIN_FONT


def test_depth_panels_of_96_samples() -> None:
    profiles = [svgplot.DepthProfile(f"s{i}", [(b * 60, (b + 1) * 60, 10.0 ** (b % 5), b % 5 == 0)
                                               for b in range(500)]) for i in range(96)]
    svg = svgplot.depth_panels(profiles, 30_000, "Depth", 10)
    assert len(re.findall(r'font-weight="bold">', svg)) == 96
    height = int(re.search(r'viewBox="0 0 900 (\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert height < 2200  # 4 columns of 24 panels
    assert min(int(s) for s in re.findall(r'font-size="(\d+)"', svg)) >= svgplot.MIN_FONT


# -- settings --------------------------------------------------------------------------------
def test_the_report_step_gets_the_depth_threshold_and_the_scheme(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    bed = tmp_path / "scheme.bed"
    bed.write_text(BED.replace("v\t", "chr1\t"))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    lowfreq = load_settings({**config, "calling": {**config["calling"], "engine": "lowfreq", "primers": str(bed)},
                             "consensus": {"min_depth": 20}})
    st = read_step_settings(step_settings(lowfreq, "report").to_json(), "report")
    assert st.viral_report == {"min_depth": 20, "primers": str(bed)}
    assert json.loads(st.to_json())["report"]["cost"] == config["report"]["cost"]
    assert step_settings(load_settings(config), "report").viral_report is None  # bcftools: no viral view


# -- a real run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lowfreq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sampleA of the bundled data called with the lowfreq engine, with a primer scheme of
    2 amplicons on chr1."""
    wd = make_workdir(tmp_path_factory.mktemp("viral-report"), plan__n_regions=2, calling__engine="lowfreq",
                      calling__primers="config/scheme.bed")
    with pysam.FastaFile(str(ROOT / "test_data" / "ref.fa")) as fa:
        chrom = fa.references[0]
    (wd / "config" / "scheme.bed").write_text(
        f"{chrom}\t1000\t1025\tX_1_LEFT\t1\t+\n{chrom}\t1375\t1400\tX_1_RIGHT\t1\t-\n"
        f"{chrom}\t1350\t1375\tX_2_LEFT\t2\t+\n{chrom}\t1725\t1750\tX_2_RIGHT\t2\t-\n")
    (wd / "config" / "samples.tsv").write_text("sample\tbam\nsampleA\ttest_data/sampleA.bam\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def test_real_run_writes_the_table_and_the_sections(lowfreq_run: Path) -> None:
    results = lowfreq_run / "results"
    with open(results / "minority_variants.tsv") as fh:
        table = list(csv.DictReader(fh, delimiter="\t"))
    with pysam.VariantFile(str(results / "sampleA.vcf.gz")) as fh:
        n_alleles = sum(len(r.alts or ()) for r in fh)
    assert len(table) == n_alleles > 0 and {r["sample"] for r in table} == {"sampleA"}
    assert all(int(r["depth"]) > 0 and float(r["af"]) > 0 and r["filter"] != "not_called" for r in table)
    page = (results / "report.html").read_text()
    assert "<h2>Depth and coverage</h2>" in page and "<h2>Minority variants</h2>" in page
    assert "Amplicons (2, scheme config/scheme.bed)" in page
    assert len(svgs(page, "Depth along the genome per sample")) == 1
    assert heat_rows(svgs(page, "Allele frequency per sample")[0]) == ["sampleA"]
