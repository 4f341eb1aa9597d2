"""Unit tests of the benchmark harness' helpers (bench/harness.py) and its scaling model
(bench/scaling.py), on small hand-made inputs. Nothing here runs a caller or the pipeline."""

from __future__ import annotations

import gzip
import json
import math
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_cohort  # noqa: E402
import harness  # noqa: E402
import scaling  # noqa: E402

from bench.evaluation.vcfcompare import Accuracy  # noqa: E402

PRICES = {**scaling.DEFAULT_PRICES, "function_memory_mb": 1024, "per_gb_second": 1e-5,
          "per_million_invocations": 1.0, "per_thousand_gets": 0.5, "per_thousand_puts": 2.0}


# -- harness helpers ---------------------------------------------------------------------
def test_only_the_full_run_writes_the_committed_results_by_default(tmp_path: Path) -> None:
    full = harness.parse_args([])
    assert (full.json, full.markdown) == (ROOT / "bench" / "results.json", ROOT / "bench" / "RESULTS.md")
    for partial in (["--tools", "pipeline"], ["--no-ceph"], ["--regions", "200"], ["--genome-size", "20000000"]):
        args = harness.parse_args(partial)
        assert (args.json, args.markdown) == (None, None), partial
    args = harness.parse_args(["--tools", "pipeline", "--json", str(tmp_path / "r.json")])
    assert (args.json, args.markdown) == (tmp_path / "r.json", None)


def test_deep_merge_merges_nested_dicts_and_leaves_inputs_alone() -> None:
    base = {"plan": {"n_regions": 8, "padding": 1000}, "calling": {"engine": "bcftools"}, "x": 1}
    over = {"plan": {"n_regions": 4}, "calling": "replaced", "y": 2}
    out = bench_cohort.deep_merge(base, over)
    assert out == {"plan": {"n_regions": 4, "padding": 1000}, "calling": "replaced", "x": 1, "y": 2}
    assert base["plan"]["n_regions"] == 8


@pytest.mark.parametrize("n", [1, 3, 16, 17, 40])
def test_split_regions_covers_every_contig_in_n_pieces(n: int) -> None:
    contigs = [("chr1", 488_000), ("chr2", 312_000), ("chr3", 200_000)]
    regions = harness.split_regions(contigs, n)
    assert len(regions) == max(n, len(contigs))
    for chrom, length in contigs:
        mine = [(a, b) for c, a, b in regions if c == chrom]
        assert mine[0][0] == 0 and mine[-1][1] == length
        assert all(a < b for a, b in mine)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(mine, mine[1:], strict=False))  # no gap, no overlap
    assert [c for c, _, _ in regions] == sorted((c for c, _, _ in regions), key=[c for c, _ in contigs].index)


def test_region_strings_follow_each_tool_convention() -> None:
    r = ("chr2", 0, 1000)
    assert harness.bcftools_region(r) == "chr2:1-1000"  # 1-based, inclusive
    assert harness.freebayes_region(r) == "chr2:0-1000"  # 0-based, end excluded


def _rec(chrom: str, pos: int, ref: str, alt: str, qual: str = "50") -> str:
    return f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t{qual}\t.\tDP=10\tGT\t0/1\n"


def test_merge_region_vcfs_keeps_first_header_sorts_and_drops_edge_duplicates() -> None:
    header = ["##fileformat=VCFv4.2\n", "##contig=<ID=chrB,length=100>\n", "##contig=<ID=chrA,length=100>\n",
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts\n"]
    part1 = header + [_rec("chrB", 10, "A", "G"), _rec("chrB", 50, "C", "T")]
    part2 = header + [_rec("chrB", 50, "C", "T", qual="49"), _rec("chrB", 50, "C", "A"), _rec("chrB", 40, "G", "A")]
    part3 = header + [_rec("chrA", 5, "T", "TA")]
    empty = header  # a region without records
    out = list(harness.merge_region_vcfs(empty + part1 + part2 + empty + part3))
    assert out[:4] == header
    body = [tuple(line.split("\t")[:6]) for line in out[4:]]
    assert body == [("chrB", "10", ".", "A", "G", "50"), ("chrB", "40", ".", "G", "A", "50"),
                    ("chrB", "50", ".", "C", "T", "50"), ("chrB", "50", ".", "C", "A", "50"),
                    ("chrA", "5", ".", "T", "TA", "50")]


def test_merge_region_vcfs_without_contig_lines_keeps_first_seen_order() -> None:
    head = ["#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"]
    records = [_rec("z", 3, "A", "C"), _rec("a", 1, "A", "C"), _rec("z", 2, "A", "C")]
    out = list(harness.merge_region_vcfs(head + records))
    assert [(ln.split("\t")[0], ln.split("\t")[1]) for ln in out[1:]] == [("z", "2"), ("z", "3"), ("a", "1")]


def test_scores_combine_classes_and_say_none_when_nothing_called() -> None:
    acc = {"snv": Accuracy("snv", 90, 10, 0), "indel": Accuracy("indel", 10, 0, 10)}
    a = harness.combined(acc)
    assert (a.tp, a.fp, a.fn) == (100, 10, 10)
    p, r, f1 = harness.prf(100, 10, 10)
    assert p == pytest.approx(100 / 110) and r == pytest.approx(100 / 110) and f1 == pytest.approx(100 / 110)
    assert harness.prf(0, 0, 216) == (None, 0.0, 0.0)


def test_tables_show_ratio_scores_and_failures() -> None:
    ok = harness.Row("germline", "bcftools", "bcftools, one process", walls=[10.0, 12.0, 11.0], cpus=[9.0],
                     rsss=[30.0, 35.0], tp=9, fp=1, fn=0, ratio=1.0)
    bad = harness.Row("viral", "viral-ivar", "ivar | pipe", failed="exited with 1")
    text = harness.text_table([ok, bad])
    assert "11.0" in text and "35" in text and "0.9000" in text and "FAILED: exited with 1" in text
    md = harness.markdown_table([ok, bad]).splitlines()
    assert md[0].startswith("| dataset | tool | wall s |")
    assert "ivar \\| pipe (**failed**: exited with 1)" in md[3]
    assert md[2].split(" | ")[2:6] == ["11.0", "9.0", "35", "1.00"]


def test_busy_ports_sees_a_listening_socket() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert harness.busy_ports([port]) == [port]
    assert harness.busy_ports([port]) == []


# -- the scaling model -------------------------------------------------------------------
def _measured(**kw: object) -> scaling.Measured:
    base = dict(function_seconds=(1.0, 2.0, 2.0, 4.0), bam_read_bytes=110_000_000, bam_size=100_000_000,
                gets_per_function=4, genome_length=10_000_000, records=5000, before_s=3.0, merge_s=1.0,
                exit_s=1.0, merge_records_per_s=100_000.0, cpu="test CPU")
    return scaling.Measured(**{**base, **kw})  # type: ignore[arg-type]


def test_measured_rates() -> None:
    m = _measured()
    assert m.functions == 4
    assert m.seconds_per_byte == pytest.approx(9.0 / 110e6)
    assert m.read_factor == pytest.approx(1.1)
    assert m.straggler == pytest.approx(2.0)  # 4 / median(1, 2, 2, 4)


def test_model_arithmetic_by_hand() -> None:
    m = _measured()
    a = scaling.Assumptions(bam_bytes=1e9, records=1e6, overhead_s=1.0, bandwidth_mb_s=100.0, concurrency=10,
                            planning_s=0.5, lithops_gets=2, lithops_puts=2, function_puts=2)
    s = scaling.model(m, a, PRICES, 20)
    per_fn = 1e9 * 1.1 / 20
    assert s.bytes_per_function == pytest.approx(per_fn)
    assert s.fetch_s == pytest.approx(per_fn / 100e6)
    assert s.compute_s == pytest.approx(per_fn * 9.0 / 110e6)
    assert s.waves == 2
    assert s.slowest_s == pytest.approx(1.0 + (s.fetch_s + s.compute_s) * 2.0)
    assert s.fanout_s == pytest.approx(2 * s.slowest_s)
    merge = 1.0 + 1e6 / 100_000
    assert s.local_s == pytest.approx(3.0 + 0.5 + merge + 1.0)
    assert s.wall_s == pytest.approx(s.fanout_s + s.local_s)
    gb_s = 1.0 * (20 * 1.0 + 1.1e9 / 100e6 + 1.1e9 * 9.0 / 110e6)
    assert s.gb_seconds == pytest.approx(gb_s)
    assert (s.invocations, s.gets, s.puts) == (20, 20 * (4 + 2) + 20 + 2, 20 * 4)
    cost = gb_s * 1e-5 + 20 * 1.0 / 1e6 + s.gets * 0.5 / 1e3 + s.puts * 2.0 / 1e3
    assert s.cost["total"] == pytest.approx(cost)
    assert s.limits == []


def test_a_fixed_cost_per_function_is_fitted_and_paid_by_every_function() -> None:
    # seconds = 0.5 + 1 s per MB, exactly: the fit finds both
    nbytes = [1_000_000, 2_000_000, 4_000_000, 8_000_000]
    seconds = [0.5 + b / 1e6 for b in nbytes]
    assert scaling.fit_fixed(seconds, nbytes) == pytest.approx(0.5)
    assert scaling.fit_fixed([1.0, 0.2], [1, 2]) == pytest.approx(0.2)  # never above the fastest function
    m = _measured(function_seconds=tuple(seconds), bam_read_bytes=sum(nbytes), fixed_s=0.5)
    assert m.seconds_per_byte == pytest.approx(1e-6)
    a = scaling.Assumptions(bam_bytes=1e9, overhead_s=1.0, bandwidth_mb_s=100.0)
    s10, s1000 = scaling.model(m, a, PRICES, 10), scaling.model(m, a, PRICES, 1000)
    per_fn = 1e9 * m.read_factor / 10
    assert s10.compute_s == pytest.approx(0.5 + per_fn * 1e-6)
    assert s1000.gb_seconds - s10.gb_seconds == pytest.approx(1.0 * 990 * (1.0 + 0.5))


def test_model_flags_what_a_function_cannot_do() -> None:
    a = scaling.Assumptions(bam_bytes=100e9)
    few = scaling.model(_measured(), a, PRICES, 10)
    # too long, and a slice larger than /tmp (memory is no limit: slices stream to disk)
    assert len(few.limits) == 2 and "> Lambda's 900 s" in few.limits[0] and "/tmp" in few.limits[1]
    many = scaling.model(_measured(), a, PRICES, 100_000)
    assert many.limits == [] and many.waves == math.ceil(100_000 / a.concurrency)
    assert scaling.human_merge_s(_measured(merge_records_per_s=None), a) == 1.0  # not calibrated: as measured


def test_load_prices_reads_the_config_and_fills_gaps(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("report:\n  cost:\n    per_gb_second: 0.5\n    currency: EUR\n")
    prices, where = scaling.load_prices(cfg)
    assert prices["per_gb_second"] == 0.5 and prices["currency"] == "EUR"
    assert prices["per_thousand_puts"] == scaling.DEFAULT_PRICES["per_thousand_puts"]
    assert "report.cost" in where
    cfg.write_text("plan: {}\n")
    assert scaling.load_prices(cfg) == (scaling.DEFAULT_PRICES, "built-in defaults (no report.cost in the config)")


def test_measure_run_reads_manifest_and_plan(tmp_path: Path) -> None:
    (tmp_path / "work" / "calls").mkdir(parents=True)
    (tmp_path / "work" / "plans").mkdir(parents=True)
    frags = [{"seconds": s, "bam_get_bytes": b, "gets": g} for s, b, g in ((1.0, 600, 4), (3.0, 500, 3), (2.0, 100, 4))]
    (tmp_path / "work" / "calls" / "s.json").write_text(json.dumps(
        {"sample": "s", "code": "c", "engine": "bcftools", "params": {}, "command": "x", "retries": 0,
         "fragments": [{**f, "out_key": f"k{i}"} for i, f in enumerate(frags)]}))
    (tmp_path / "work" / "plans" / "s.tsv").write_text(
        "# comment\n#sample=s\n#bam_size=1000\n#contigs=c1:300,c2:700\nregion\tchrom\n")
    m = scaling.measure_run(tmp_path, "s", {"before_call": 2.0, "after_call": 1.5, "exit": 0.5}, 42, 1000.0, "cpu")
    assert m.function_seconds == (1.0, 3.0, 2.0) and m.bam_read_bytes == 1200 and m.bam_size == 1000
    assert m.genome_length == 1000 and m.gets_per_function == 4 and m.records == 42
    assert (m.before_s, m.merge_s, m.exit_s) == (2.0, 1.5, 0.5)
    assert m.straggler == pytest.approx(1.5)


def test_calibrate_merge_merges_the_records_it_made(tmp_path: Path) -> None:
    vcf = tmp_path / "t.vcf.gz"
    with gzip.open(vcf, "wt") as fh:
        fh.write("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=100000000>\n"
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        fh.write("chr1\t5\t.\tA\tG\t50\t.\t.\n")
    manifest = tmp_path / "calls.json"
    manifest.write_text(json.dumps({"sample": "t", "code": "c", "engine": "bcftools", "params": {}, "command": "x",
                                    "retries": 0, "fragments": []}))
    rate = scaling.calibrate_merge(vcf, ROOT / "test_data" / "ref.fa", manifest, records=400, fragments=4)
    assert rate > 0


def test_scenario_table_and_durations() -> None:
    s = scaling.model(_measured(), scaling.Assumptions(), PRICES, 1000)
    text = scaling.scenario_table([s], "USD")
    assert "cost USD" in text and text.splitlines()[2].split()[0] == "1000"
    assert [scaling.fmt_duration(x) for x in (5, 95, 4000)] == ["5s", "1m35s", "1h06m"]
    lines = scaling.assumption_lines(_measured(), scaling.Assumptions(), PRICES, "test")
    assert any("invocation overhead" in ln for ln in lines) and any("straggler factor" in ln for ln in lines)
