"""The run report (pipeline/report.py, pipeline/svgplot.py): its figures checked against
bcftools stats and hand-made stats, and a real run's page rendered in headless Chromium
(Debian ``chromium``), read by MultiQC and embedded by ``snakemake --report``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pysam
import pytest
from conftest import DATA, SAMPLES
from PIL import Image
from test_e2e import make_workdir, snakemake

from pipeline import svgplot
from pipeline.report import (
    STRAGGLER_FACTOR,
    Attempt,
    CallsetDepth,
    SampleVariants,
    StatsFileError,
    estimate_cost,
    read_stats,
    stats_text,
    stragglers,
)

PRICES = {"currency": "USD", "source": "test", "function_memory_mb": 2048, "per_gb_second": 0.0000166667,
          "per_million_invocations": 0.2, "per_thousand_gets": 0.0004, "per_thousand_puts": 0.005}


def bcftools_sn(vcf: str) -> dict[str, float]:
    """The SN and TSTV figures of ``bcftools stats``."""
    out: dict[str, float] = {}
    for line in str(pysam.bcftools.stats(vcf)).splitlines():
        f = line.split("\t")
        if f[0] == "SN":
            out[f[2].rstrip(":")] = float(f[3])
        elif f[0] == "TSTV":
            out["ts"], out["tv"] = float(f[2]), float(f[3])
    return out


def report_figures(vcf: str, callset: str, tmp_path: Path) -> tuple[list[SampleVariants], CallsetDepth]:
    """The report's figures of ``vcf``, read from a stats file written as the merge writes
    it; the VCF itself is not handed to the report (a path that does not exist)."""
    stats = tmp_path / f"{callset}.stats.txt"
    stats.write_text("# svc merge: 1 fragments read from object storage in 1 GETs\n" + stats_text(vcf))
    return read_stats(stats, tmp_path / "not-there.vcf.gz", callset)


def genotype_counts(vcf: str) -> dict[str, dict[str, int]]:
    """Per sample, counted from the records (biallelic SNVs and indels only): sites carried,
    het, hom-alt, Ts, Tv, indels."""
    out: dict[str, dict[str, int]] = {}
    with pysam.VariantFile(vcf) as fh:
        for rec in fh:
            ref, (alt,) = rec.ref or "", rec.alts or ()
            for name, call in rec.samples.items():
                gt = [a for a in call["GT"] if a is not None]
                c = out.setdefault(name, dict.fromkeys(("records", "het", "hom", "ts", "tv", "indel"), 0))
                if 1 not in gt:
                    continue
                c["records"] += 1
                c["het" if 0 in gt else "hom"] += 1
                if len(ref) != len(alt):
                    c["indel"] += 1
                else:
                    c["ts" if {ref, alt} in ({"A", "G"}, {"C", "T"}) else "tv"] += 1
    return out


@pytest.mark.parametrize("sample", SAMPLES)
def test_variant_counts_equal_bcftools_stats(sample: str, tmp_path: Path) -> None:
    vcf = str(DATA / "truth" / f"{sample}.vcf.gz")
    (sv,), depth = report_figures(vcf, sample, tmp_path)
    sn = bcftools_sn(vcf)
    assert sv.records == sn["number of records"] > 100
    assert (sv.types["snv"], sv.types["indel"], sv.types["mnp"], sv.types["other"]) == (
        sn["number of SNPs"], sn["number of indels"], sn["number of MNPs"], sn["number of others"])
    assert (sv.ts, sv.tv) == (sn["ts"], sn["tv"])
    counted = genotype_counts(vcf)[sample]
    assert (sv.het, sv.hom_alt, sv.passed) == (counted["het"], counted["hom"], sv.records)  # all PASS
    assert sv.label == sample and depth.depth == {}  # the truth VCFs carry no depth


def test_per_sample_counts_of_a_multisample_vcf_equal_bcftools_per_sample_stats(tmp_path: Path) -> None:
    both, snvs = str(tmp_path / "both.vcf.gz"), str(tmp_path / "snvs.vcf.gz")
    pysam.bcftools.merge("-Oz", "-o", both, *(str(DATA / "truth" / f"{s}.vcf.gz") for s in SAMPLES), catch_stdout=False)
    pysam.bcftools.view("-v", "snps", "-Oz", "-o", snvs, both, catch_stdout=False)

    def psc(vcf: str) -> dict[str, list[str]]:
        return {f[2]: f for f in (ln.split("\t") for ln in str(pysam.bcftools.stats("-s", "-", vcf)).splitlines())
                if f[0] == "PSC"}

    got = {sv.sample: sv for sv in report_figures(both, "cohort", tmp_path)[0]}
    got_snvs = {sv.sample: sv for sv in report_figures(snvs, "cohort", tmp_path)[0]}
    counted = genotype_counts(both)
    assert list(got) == list(SAMPLES)
    for s in SAMPLES:
        _, _, _, _, _, _, ts, tv, indels, *_ = psc(both)[s]
        sv = got[s]
        assert (sv.ts, sv.tv, sv.types["indel"]) == (int(ts), int(tv), int(indels))
        assert sv.het is not None and sv.hom_alt is not None
        assert sv.het + sv.hom_alt == sv.records == sv.passed and sv.callset == "cohort"
        assert (sv.records, sv.het, sv.hom_alt, sv.ts, sv.tv, sv.types["indel"]) == tuple(
            counted[s][k] for k in ("records", "het", "hom", "ts", "tv", "indel"))
        assert sv.types["mnp"] is None and sv.label == f"{s} (cohort)"  # not counted per sample
        # bcftools counts genotypes of SNV sites only in PSC.
        _, _, _, _, hom, het, *_ = psc(snvs)[s]
        assert (got_snvs[s].hom_alt, got_snvs[s].het) == (int(hom), int(het))


HAND_MADE = """##fileformat=VCFv4.2
##contig=<ID=c1,length=1000>
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=lowq,Description="low quality">
##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="depth">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2
c1\t10\t.\tA\tG\t50\tPASS\tDP=10\tGT:DP\t0/1:9\t0/0:8
c1\t20\t.\tC\tA\t50\tlowq\tDP=20\tGT:DP\t1/1:18\t0/1:17
c1\t30\t.\tACT\tA\t50\t.\tDP=1300\tGT:DP\t0/1:650\t1/1:640
c1\t40\t.\tG\tGTT\t50\tPASS\tDP=30\tGT:DP\t1/1:29\t./.:.
c1\t50\t.\tT\tC,G\t50\tPASS\tDP=40\tGT:DP\t1/2:39\t0/2:38
c1\t60\t.\tAC\tGT\t50\tPASS\tDP=44\tGT:DP\t0/1:43\t0/0:42
"""


def test_figures_of_a_hand_made_vcf(tmp_path: Path) -> None:
    """PASS (FILTER PASS or empty), depths beyond bcftools' default 500, a multi-allelic
    SNV site, an MNP; with two samples, one and none."""
    text = tmp_path / "hand.vcf"
    text.write_text(HAND_MADE)
    vcfs = {}
    for name, opts in (("two", []), ("one", ["-s", "s1"]), ("none", ["-G"])):
        vcfs[name] = str(tmp_path / f"{name}.vcf.gz")
        pysam.bcftools.view(*opts, "-Oz", "-o", vcfs[name], str(text), catch_stdout=False)
        pysam.tabix_index(vcfs[name], preset="vcf", force=True)

    def row(sv: SampleVariants) -> tuple[object, ...]:
        return sv.label, sv.records, tuple(sv.types.values()), sv.ts, sv.tv, sv.het, sv.hom_alt, sv.passed

    # One sample: SN's records and types (SNV records: 3; TSTV counts alleles: 2 + 2),
    # genotypes at SNVs and indels (not the MNP's); PASS: 5 records (not lowq).
    (one,), depth = report_figures(vcfs["one"], "one", tmp_path)
    assert row(one) == ("s1 (one)", 6, (3, 2, 1, 0), 2, 2, 3, 2, 5)
    assert (depth.source, depth.depth) == ("FORMAT/DP", {9: 1, 18: 1, 29: 1, 39: 1, 43: 1, 650: 1})
    # No samples: every record and ALT; no genotypes; the sites' INFO/DP.
    (none,), depth = report_figures(vcfs["none"], "none", tmp_path)
    assert row(none) == ("none", 6, (3, 2, 1, 0), 2, 2, None, None, 5)
    assert (depth.label, depth.source, depth.depth) == (
        "none", "INFO/DP", {10: 1, 20: 1, 30: 1, 40: 1, 44: 1, 1300: 1})
    # Two samples: the genotypes each carries (SNV alleles: 1/2 counts both), no MNPs or
    # others per sample; the depth of every genotype of both samples (0/0 included).
    (s1, s2), depth = report_figures(vcfs["two"], "two", tmp_path)
    assert row(s1) == ("s1 (two)", 5, (4, 2, None, None), 2, 2, 3, 2, 4)
    assert row(s2) == ("s2 (two)", 3, (2, 1, None, None), 0, 2, 2, 1, 2)
    assert (depth.label, depth.samples, sum(depth.depth.values()), max(depth.depth)) == (
        "two (all 2 samples)", 2, 11, 650)


def test_a_stats_file_of_an_earlier_merge_is_recomputed_from_the_vcf(tmp_path: Path) -> None:
    """A plain ``bcftools stats`` (no PASS lines, no -s) gives the same figures, from the VCF."""
    vcf = str(DATA / "truth" / "sampleA.vcf.gz")
    old = tmp_path / "old.stats.txt"
    old.write_text(str(pysam.bcftools.stats(vcf)))
    assert read_stats(old, vcf, "sampleA") == report_figures(vcf, "sampleA", tmp_path)


def test_an_unreadable_stats_file_is_one_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "x.stats.txt"
    bad.write_text("not the output of bcftools stats\n")
    for path in (bad, tmp_path / "missing.stats.txt"):
        with pytest.raises(StatsFileError, match=rf"stats of x in {re.escape(str(path))} .*--forcerun merge"):
            read_stats(path, tmp_path / "x.vcf.gz", "x")


def test_cost_counts_every_attempt_and_two_puts_per_function() -> None:
    functions = [
        {"seconds": 2.0, "gets": 4, "attempts": 1},
        {"seconds": 1.0, "gets": 4, "attempts": 3,
         "failed_attempts": [{"started": 0, "seconds": 0.5, "error": "x"},
                             {"started": 1, "seconds": 1.5, "error": "y"}]},
    ]
    cost = estimate_cost(functions, PRICES)
    assert cost.gb_seconds == pytest.approx((2.0 + 1.0 + 0.5 + 1.5) * 2)
    assert (cost.invocations, cost.gets, cost.puts) == (4, 8, 4)
    assert cost.total == pytest.approx(10 * 0.0000166667 + 4 * 0.2e-6 + 8 * 0.4e-6 + 4 * 5e-6)


def test_stragglers_are_the_functions_beyond_the_factor_times_the_median() -> None:
    def a(label: str, seconds: float, stage: str = "call", ok: bool = True) -> Attempt:
        return Attempt(stage, label, 0.0, seconds, ok)

    runs = [a("r1", 1.0), a("r2", 1.1), a("r3", 0.9), a("slow", 1.0 * STRAGGLER_FACTOR + 0.2),
            a("failed", 9.0, ok=False), a("c1", 5.0, "align"), a("c2", 5.0, "align")]
    limits, slow = stragglers(runs)
    assert limits == {"align": pytest.approx(5.0 * STRAGGLER_FACTOR), "call": pytest.approx(1.05 * STRAGGLER_FACTOR)}
    assert [s.label for s in slow] == ["slow"]


def test_ticks_are_round_and_cover_the_range() -> None:
    assert svgplot.nice_ticks(0, 9.3) == [0, 2, 4, 6, 8, 10]
    assert svgplot.nice_ticks(0.27, 0.53) == pytest.approx([0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55])
    assert svgplot.nice_ticks(0, 3, integer=True) == [0, 1, 2, 3]


# -- a real run's report --------------------------------------------------------------
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = make_workdir(tmp_path_factory.mktemp("report"))
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def render(page: Path, out: Path) -> tuple[Image.Image, list[str]]:
    """Screenshot ``page`` in headless Chromium (1280 px wide); the image and the page's
    console messages (Chromium logs each one as a CONSOLE line)."""
    assert CHROMIUM, "chromium is not installed: run `bash tests/install.sh`"
    png = out / f"{page.stem}.png"
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={out / 'profile'}", "--enable-logging=stderr", "--log-level=0",
         "--window-size=1280,3000", f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0 and png.exists(), res.stderr[-2000:]
    return Image.open(png).convert("RGB"), [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]


def painted(img: Image.Image) -> tuple[float, int]:
    """The share of pixels that are not white, and how many distinct colours there are."""
    colours = img.getcolors(maxcolors=1 << 20) or []
    white = sum(n for n, c in colours if c == (255, 255, 255))
    return 1 - white / (img.width * img.height), len(colours)


def test_report_renders_in_chromium_without_console_errors(run: Path, tmp_path: Path) -> None:
    img, console = render(run / "results" / "report.html", tmp_path)
    assert console == []
    share, n_colours = painted(img)
    assert share > 0.03 and n_colours > 50, (share, n_colours)
    # The plots were drawn: the palette's blue (bars, timeline) is on the page.
    assert img.getcolors(maxcolors=1 << 20) and any(c == (0, 0x72, 0xB2) for _, c in img.getcolors(maxcolors=1 << 20))


def test_the_chromium_checks_can_fail(tmp_path: Path) -> None:
    """The two checks above see a blank page and a page that logs errors."""
    blank, bad = tmp_path / "blank.html", tmp_path / "bad.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    bad.write_text('<!DOCTYPE html><html><body><p>x</p>'
                   '<script>console.error("boom"); nothere();</script></body></html>')
    img, console = render(blank, tmp_path)
    assert painted(img)[0] == 0 and console == []
    _, console = render(bad, tmp_path)
    assert len(console) == 2 and "boom" in console[0] and "nothere is not defined" in console[1]


def test_report_is_self_contained_and_readable(run: Path) -> None:
    page = (run / "results" / "report.html").read_text()
    # Nothing to fetch: no script, stylesheet link, image source or URL but the SVG namespace.
    assert not re.search(r"<script|<link|<img|<iframe|src=|url\(", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    svgs = re.findall(r"<svg [^>]*>", page)
    assert len(svgs) >= 5  # variant types, depth, timeline, durations, bytes
    for svg in svgs:
        # Drawn in a 900-unit box shown at most 900 px wide: at full width, 1 unit = 1 px.
        assert f'viewBox="0 0 {svgplot.WIDTH} ' in svg and f"max-width:{svgplot.WIDTH}px" in svg
    sizes = [int(s) for s in re.findall(r'font-size="(\d+)"', page)]
    assert sizes and min(sizes) >= svgplot.MIN_FONT >= 13


def test_report_figures_match_the_run(run: Path) -> None:
    page = (run / "results" / "report.html").read_text()
    for s in SAMPLES:
        sn = bcftools_sn(str(run / "results" / f"{s}.vcf.gz"))
        row = re.search(rf"<tr><td>{s}</td><td>([\d,]+)</td><td>([\d,]+)</td><td>([\d,]+)</td>", page)
        assert row, s
        assert [int(x.replace(",", "")) for x in row.groups()] == [
            sn["number of records"], sn["number of SNPs"], sn["number of indels"]]
    frags = [f for s in SAMPLES for f in json.loads((run / "work" / "calls" / f"{s}.json").read_text())["fragments"]]
    assert len(frags) == 16 and all(f["started"] >= f["submitted"] - 5 for f in frags)
    timeline = next(svg for svg in re.findall(r"<svg .*?</svg>", page, re.S) if "Fan-out timeline" in svg)
    bars = re.findall(r"<title>call (sample[AB] chr\d:\d+-\d+): ", timeline)
    assert sorted(bars) == sorted(f"{s} {f['name']}" for s in SAMPLES
                                  for f in json.loads((run / "work" / "calls" / f"{s}.json").read_text())["fragments"])
    cost = estimate_cost(frags, PRICES)
    assert f"{cost.total:,.6f} USD" in page
    assert "AWS Lambda (x86, us-east-1) and S3 Standard list prices" in page  # the config's price table, stated


def test_multiqc_reads_the_stats_and_the_run_metrics(run: Path, tmp_path: Path) -> None:
    res = subprocess.run(["multiqc", "--quiet", "--force", "--outdir", str(tmp_path), str(run / "results")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = tmp_path / "multiqc_data"
    stats = [ln.split("\t") for ln in (data / "multiqc_bcftools_stats.txt").read_text().splitlines()]
    col = stats[0].index("number_of_records")
    assert {r[0]: int(float(r[col])) for r in stats[1:]} == {
        s: int(bcftools_sn(str(run / "results" / f"{s}.vcf.gz"))["number of records"]) for s in SAMPLES}
    metrics = [ln.split("\t") for ln in (data / "multiqc_svc_run_metrics_table.txt").read_text().splitlines()]
    by_sample = {r[0]: dict(zip(metrics[0], r, strict=True)) for r in metrics[1:]}
    assert set(by_sample) == set(SAMPLES)
    assert all(float(r["Functions run"]) == 8 for r in by_sample.values())


def test_snakemake_report_embeds_the_run_report(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "snakemake_report.zip"
    res = snakemake(run, "--report", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    with zipfile.ZipFile(out) as z:
        embedded = [n for n in z.namelist() if n.endswith("/report.html") and "/data/" in n]
        assert len(embedded) == 1
        assert z.read(embedded[0]) == (run / "results" / "report.html").read_bytes()


def test_versions_of_the_functions_beside_the_local_steps() -> None:
    """results/versions.tsv: a function that ran another release (a stale runtime image)
    shows as a second row and a warning; another Python patch release is no warning."""
    from pipeline.provenance import version_mismatches, versions_tsv

    local = {"serverless-variant-calling": "0.3.0", "python": "3.11.7", "pysam": "0.24.1"}
    same = versions_tsv(local, [{"versions": dict(local)}, {"versions": dict(local)}, {}])
    assert same.splitlines()[0] == "component\tversion\twhere"
    assert "serverless-variant-calling\t0.3.0\tfunctions" in same and version_mismatches(same) == []
    stale = versions_tsv(local, [{"versions": {**local, "python": "3.11.9"}},
                                 {"versions": {**local, "serverless-variant-calling": "0.2.0"}}])
    warnings = version_mismatches(stale)
    assert len(warnings) == 1 and "serverless-variant-calling 0.2.0" in warnings[0] and "0.3.0" in warnings[0]
    assert "python\t3.11.9\tfunctions" in stale
