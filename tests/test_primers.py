"""Primer schemes: parsing, the one-line refusals of a bad BED, and trimming as ivar trim.

* :func:`parse_primer_bed` reads ARTIC BEDs (alt primers too) and refuses, in one line
  naming the file, the line and the fix: too few columns, an end before the start, a
  name that is no primer's, an amplicon with one side only;
* through the real ``snakemake`` command line, a bad BED (unpaired primer, end before
  start, contigs of another reference) stops the run before any function runs and
  leaves no VCF; a scheme with the lowfreq engine's rival (bcftools) is refused;
* :meth:`PrimerScheme.trim_bounds` trims what ``ivar trim`` trims: a forward read
  starting inside a primer from the primer's end, a reverse read ending inside one up
  to the primer's start, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_e2e import make_workdir, snakemake

from functions.core.primers import PrimerError, PrimerScheme, parse_primer_bed

GOOD = ("MN908947.3\t30\t54\tnCoV-2019_1_LEFT\t1\t+\n"
        "MN908947.3\t385\t410\tnCoV-2019_1_RIGHT\t1\t-\n"
        "MN908947.3\t320\t342\tnCoV-2019_2_LEFT\t2\t+\n"
        "MN908947.3\t340\t362\tnCoV-2019_2_LEFT_alt1\t2\t+\n"
        "MN908947.3\t704\t726\tnCoV-2019_2_RIGHT\t2\t-\n")


def test_artic_bed_parses_with_alt_primers() -> None:
    scheme = parse_primer_bed("# a comment\n" + GOOD, "scheme.bed")
    assert [p.amplicon for p in scheme.primers] == ["nCoV-2019_1"] * 2 + ["nCoV-2019_2"] * 3
    assert [p.side for p in scheme.primers] == ["LEFT", "RIGHT", "LEFT", "LEFT", "RIGHT"]
    assert scheme.on("MN908947.3", 400, 500).primers == (scheme.primers[1],)
    assert PrimerScheme.from_rows(scheme.to_rows()) == PrimerScheme(scheme.primers)


@pytest.mark.parametrize("text, message", [
    ("v\t30\t54\tx_1_LEFT\n", "primer BED line 1: 4 tab-separated columns, need at least 5"),
    ("v\t54\t30\tx_1_LEFT\t1\nv\t300\t324\tx_1_RIGHT\t1\n",
     "primer BED line 1: primer x_1_LEFT ends (30) before it starts (54)"),
    ("v\tthirty\t54\tx_1_LEFT\t1\n", "primer BED line 1: start and end ('thirty', '54') are not whole numbers"),
    ("v\t30\t54\tx_1_FWD\t1\n", "primer BED line 1: primer name 'x_1_FWD' does not end in _LEFT or _RIGHT"),
    ("v\t30\t54\tx_1_LEFT\t1\nv\t300\t324\tx_2_RIGHT\t1\n",
     "primer BED: amplicon x_1 has no _RIGHT primer (only x_1_LEFT)"),
    ("v\t330\t354\tx_1_LEFT\t1\nv\t30\t54\tx_1_RIGHT\t1\n",
     "primer BED: amplicon x_1's LEFT primer starts at 330, not before its RIGHT primer's end (54)"),
    ("# only a comment\n", "primer BED: no primers in it"),
])
def test_bad_bed_is_one_line(text: str, message: str) -> None:
    with pytest.raises(PrimerError) as err:
        parse_primer_bed(text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_scheme_on_another_reference_is_refused() -> None:
    scheme = parse_primer_bed(GOOD, "primer BED s.bed")
    with pytest.raises(PrimerError, match=r"primer nCoV-2019_1_LEFT is on contig 'MN908947.3', which is not in the "
                                          r"reference \(its contigs: virus\)"):
        scheme.check({"virus": 30_000})
    with pytest.raises(PrimerError, match="ends at 726, beyond the end of MN908947.3 .700 bp."):
        scheme.check({"MN908947.3": 700})


def test_trim_bounds_are_ivar_trims() -> None:
    scheme = parse_primer_bed(GOOD)
    start = np.array([30, 35, 29, 100, 260, 300, 341])
    end = np.array([180, 185, 179, 250, 410, 400, 470])
    reverse = np.array([False, False, False, True, True, True, False])
    lo, hi = scheme.trim_bounds("MN908947.3", start, end, reverse)
    # forward at the primer's start, inside it, just before it; reverse ending in no primer,
    # in 1_RIGHT (its last base at 409), at 400 (last base 399, in 1_RIGHT); forward in two
    # overlapping LEFT primers (2 and its alt): trimmed to the further end.
    assert lo.tolist() == [54, 54, 29, 100, 260, 300, 362]
    assert hi.tolist() == [180, 185, 179, 250, 385, 385, 470]
    assert scheme.trim_bounds("other", start, end, reverse)[0].tolist() == start.tolist()


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["unpaired", "end_before_start", "other_reference", "bcftools"])
def test_bad_scheme_stops_the_run_in_one_line(case: str, tmp_path: Path) -> None:
    bed = {
        "unpaired": "chr1\t1000\t1024\ta_1_LEFT\t1\nchr1\t1300\t1324\ta_1_RIGHT\t1\nchr2\t500\t524\ta_2_LEFT\t2\n",
        "end_before_start": "chr1\t1024\t1000\ta_1_LEFT\t1\nchr1\t1300\t1324\ta_1_RIGHT\t1\n",
        "other_reference": GOOD,
        "bcftools": "chr1\t1000\t1024\ta_1_LEFT\t1\nchr1\t1300\t1324\ta_1_RIGHT\t1\n",
    }[case]
    path = _write(tmp_path / "scheme.bed", bed)
    engine = "bcftools" if case == "bcftools" else "lowfreq"
    wd = make_workdir(tmp_path / "wd", calling__engine=engine, calling__primers=path, plan__n_regions=3)
    res = snakemake(wd)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    expected = {
        "unpaired": f"error: config: calling: primer BED {path}: amplicon a_2 has no _RIGHT primer (only a_2_LEFT)",
        "end_before_start": f"error: config: calling: primer BED {path} line 1: primer a_1_LEFT ends (1000) "
                            "before it starts (1024)",
        "other_reference": f"error: primer BED {path}: primer nCoV-2019_1_LEFT is on contig 'MN908947.3', which "
                           "is not in the reference",
        "bcftools": "error: config: calling: primers are trimmed by the lowfreq engine, not by bcftools",
    }[case]
    assert len(lines) == 1 and lines[0].startswith(expected), res.stderr[-3000:]
    assert not list(wd.glob("results/*.vcf.gz")) and not list(wd.glob("work/calls/*.json"))
    assert not list(wd.glob("tmp/**/fragments/**/*.vcf.gz")), "no function may run"


def test_trim_bounds_equal_a_loop_over_primers_with_overlaps() -> None:
    """The step-function lookup gives what testing every primer gives, overlapping
    primers (alt primers, neighbouring amplicons) and reads outside any primer included."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(300):
        start = int(rng.integers(0, 20_000))
        side = "LEFT" if i % 2 == 0 else "RIGHT"
        rows.append(["virus", start, start + int(rng.integers(18, 30)), f"s_{i // 2}_{side}", "1"])
    scheme = PrimerScheme.from_rows(rows)
    start = rng.integers(0, 20_100, 50_000)
    end = start + rng.integers(50, 300, start.size)
    reverse = rng.random(start.size) < 0.5
    lo, hi = scheme.trim_bounds("virus", start, end, reverse)
    want_lo, want_hi = start.copy(), end.copy()
    for _, ps, pe, *_ in rows:
        fwd = ~reverse & (start >= ps) & (start < pe)
        want_lo = np.where(fwd, np.maximum(want_lo, pe), want_lo)
        rev = reverse & (end - 1 >= ps) & (end - 1 < pe)
        want_hi = np.where(rev, np.minimum(want_hi, ps), want_hi)
    np.testing.assert_array_equal(lo, want_lo)
    np.testing.assert_array_equal(hi, want_hi)
    assert (lo != start).sum() > 100 and (hi != end).sum() > 100
    same_lo, same_hi = scheme.trim_bounds("other", start, end, reverse)
    assert (same_lo == start).all() and (same_hi == end).all()
