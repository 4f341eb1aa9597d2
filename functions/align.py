"""The alignment function: one chunk of read pairs in, one coordinate-sorted BAM part out.

Contract: :func:`align_chunk` takes a :class:`~functions.core.tasks.ChunkTask` as a
plain dict (built by :func:`pipeline.align.make_tasks`) naming the store's bucket and prefix (no
credentials: the open ``storage`` comes from Lithops in the worker), the minimap2
index of the reference in the store, the chunk's byte range in each BGZF copy of
the sample's FASTQs (:mod:`pipeline.fastq`), the BAM header text and the read
group. It fetches the index (once per worker: kept on local disk by its
fingerprint) and the chunk with one ranged GET per FASTQ, maps each pair with
minimap2 through ``mappy`` (the index's preset, ``sr``, paired), sorts the records
by coordinate and, through :func:`functions.worker.run_task`, writes back to the store

* ``<out_key>.bam`` — the coordinate-sorted BAM part, and
* ``<out_key>.json`` — stats: pairs, reads, mapped and properly paired reads,
  supplementary records, bytes and GETs, seconds, the part's md5.

It returns the stats; any failure raises :class:`ChunkError` naming the sample and
chunk. Injected faults (tests only) wrap this function from the runner's side
(:func:`functions.faults.run_with_faults`), never from inside it.

The records follow ``minimap2 -ax sr -Y --secondary=no``, with what ``mappy`` does
not expose filled in the way samtools does (:func:`pair_records`):

* per read, the hits minimap2 marks primary-or-supplementary (``id == parent``)
  are kept; secondary hits are dropped. The primary of each read is the hit that
  pairs with a hit of its mate (FR, same contig, fragment at most ``max_insert``,
  minimap2's ``max_frag_len`` of the ``sr`` preset), else minimap2's first;
  the others are supplementary (0x800), soft-clipped, with ``SA:Z`` on every
  part of the read;
* 0x2 (proper pair): both primaries on one contig, facing each other, 5'-to-5'
  distance below ``max_insert``; TLEN is minimap2's, 5' end to 5' end;
* RNEXT/PNEXT and 0x20 point at the mate's primary; ``MC:Z`` holds its CIGAR;
  an unmapped read is placed at its mapped mate (flag 0x4, CIGAR ``*``); a pair
  with neither read mapped has no position (it sorts to the end);
* tags ``NM:i`` (minimap2's), ``RG:Z``; no ``MD`` (``samtools calmd`` adds it).

A record depends only on its pair, and parts are sorted with samtools' stable
coordinate order and merged in chunk order, so the merged BAM is the same for any
chunk size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

from functions.core.errors import SvcError
from functions.core.fastq import read_chunk
from functions.core.storage import ObjectStore
from functions.core.tasks import ChunkTask, IndexRef
from functions.worker import run_task

# samtools sort memory per part before it spills to temporary files.
SORT_MEMORY = "512M"
# Parts are read once, by the merge: fast compression is enough.
PART_LEVEL = "1"

_ALIGNERS: dict[tuple[str, str], Any] = {}  # (index fingerprint, preset) -> mappy.Aligner


class ChunkError(SvcError, RuntimeError):
    """Aligning one chunk failed."""


def align_chunk(task: dict[str, Any], storage: Any = None) -> dict[str, Any]:
    """Align one chunk (a :class:`~functions.core.tasks.ChunkTask` as a dict); ``storage`` is
    the worker's ``lithops.Storage`` (Lithops passes it)."""
    t = ChunkTask.from_dict(task)
    return run_task(f"sample {t.sample} chunk {t.chunk['index']}", t.store, storage, t.sample, t.key, t.out_key,
                    ".bam", lambda store, tmp: _align(t, store, tmp), ChunkError, prefix="svc-align-")


def _align(t: ChunkTask, store: ObjectStore, tmp: str) -> tuple[str, dict[str, Any]]:
    """The alignment function's own work in ``tmp``: the sorted part's path and its own stats."""
    t0 = time.monotonic()
    chunk, params = t.chunk, t.params
    aligner = load_aligner(store, t.index, params["preset"])
    t_index = time.monotonic() - t0
    data_1 = store.get_range(t.fastq_1.key, chunk["r1"][0], chunk["r1"][1], t.fastq_1.bucket)
    data_2 = store.get_range(t.fastq_2.key, chunk["r2"][0], chunk["r2"][1], t.fastq_2.bucket)
    pairs = read_chunk(data_1, data_2, f"sample {t.sample} chunk {chunk['index']}")
    del data_1, data_2
    if len(pairs) != chunk["pairs"]:
        raise ChunkError(
            f"sample {t.sample} chunk {chunk['index']}: {len(pairs)} pairs read where the staging "
            f"index says {chunk['pairs']}: stage the FASTQs again"
        )
    sam = os.path.join(tmp, "part.sam")
    t1 = time.monotonic()
    with open(sam, "w") as fh:
        # For fixmate the records are grouped by name (a pair's together); sort makes
        # the part coordinate-sorted again, under the task's header.
        fh.write(t.header.replace("\tSO:coordinate", "\tSO:unsorted\tGO:query", 1)
                 if params.get("fixmate") else t.header)
        counts = write_records(fh, aligner, pairs, t.read_group, params["max_insert"])
    t_map = time.monotonic() - t1
    del pairs
    part = os.path.join(tmp, "part.bam")
    if params.get("fixmate"):  # mate scores for the merge's markdup; each pair's records are together
        fixed = os.path.join(tmp, "fixed.bam")
        _samtools("fixmate", ["--no-PG", "-m", "-u", sam, fixed], "fixmate")
        os.remove(sam)
        sam = fixed
    _sort(sam, part, tmp)
    return part, {"chunk": chunk["index"], "pairs": chunk["pairs"], **counts,
                  "index_seconds": round(t_index, 3), "map_seconds": round(t_map, 3)}


def _sort(sam: str, out: str, tmp: str) -> None:
    _samtools("sort", ["--no-PG", "-l", PART_LEVEL, "-m", SORT_MEMORY, "-T", os.path.join(tmp, "sort"), "-o", out, sam],
              "sort")


def _samtools(tool: str, args: list[str], what: str) -> None:
    """``samtools <tool> <args>`` through pysam; a failure is a ChunkError with its stderr."""
    import pysam

    from functions.capture import stderr_into

    with tempfile.TemporaryFile() as err:
        try:
            with stderr_into(err):
                getattr(pysam, tool)(*args)
        except pysam.utils.SamtoolsError as exc:
            err.seek(0)
            said = " ".join(err.read().decode(errors="replace").split())
            raise ChunkError(f"samtools {what} failed on the chunk's records: {said or exc}") from exc


# -- the index -----------------------------------------------------------------------
def load_aligner(store: ObjectStore, index: IndexRef, preset: str) -> Any:
    """The ``mappy.Aligner`` of the index object ``index``.

    A worker that already loaded it (a warm container) reuses it; the file is copied
    to local disk with bounded ranged GETs, once per worker.
    """
    import mappy

    key, bucket, size = index.obj.key, index.obj.bucket, index.size
    cache = (index.fingerprint, preset)
    if cache in _ALIGNERS:
        return _ALIGNERS[cache]
    folder = os.path.join(tempfile.gettempdir(), "svc-mm2-index")
    os.makedirs(folder, exist_ok=True)
    safe = hashlib.sha256(f"{bucket}/{key}/{index.fingerprint}".encode()).hexdigest()[:20]
    path = os.path.join(folder, f"{safe}.mmi")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        part = f"{path}.tmp{os.getpid()}"
        with open(part, "wb") as fh:
            store.get_range_into(key, 0, size, fh, bucket)  # streamed, in parts of 64 MB
        os.replace(part, path)
    aligner = mappy.Aligner(path, preset=preset)
    if not aligner or not aligner.seq_names:  # an empty or damaged file loads as an index of nothing
        raise ChunkError(f"minimap2 cannot load its index {key}: build it again (rule index_reference)")
    _ALIGNERS.clear()  # one index per worker: a genome's index can take gigabytes
    _ALIGNERS[cache] = aligner
    return aligner


# -- records -------------------------------------------------------------------------
def write_records(fh: Any, aligner: Any, pairs: Sequence[tuple[str, str, str, str, str]], read_group: str,
                  max_insert: int) -> dict[str, int]:
    """Map every pair and write its SAM records to ``fh``; counts of what was written."""
    import mappy

    buf = mappy.ThreadBuffer()
    amap = aligner.map
    reads = mapped = proper = supplementary = 0
    for name, s1, q1, s2, q2 in pairs:
        lines, n_mapped, is_proper = pair_records(name, s1, q1, s2, q2, amap(s1, s2, buf=buf), read_group,
                                                  max_insert)
        fh.write(lines)
        reads += 2
        mapped += n_mapped
        proper += 2 * is_proper
        supplementary += lines.count("\n") - 2
    return {"reads": reads, "mapped": mapped, "properly_paired": proper, "supplementary": supplementary}


def _pos5(h: Any) -> int:
    return int(h.r_en - 1 if h.strand < 0 else h.r_st)


def _pairs_up(a: Any, b: Any, max_insert: int) -> bool:
    """Same contig, facing each other (FR), 5'-to-5' distance below ``max_insert``."""
    if a.ctg != b.ctg or a.strand == b.strand:
        return False
    f, r = (b, a) if a.strand < 0 else (a, b)
    return bool(f.r_st <= r.r_en and _pos5(r) - _pos5(f) < max_insert)


def _clipped_cigar(h: Any, qlen: int) -> str:
    """The hit's CIGAR with its soft clips, in reference orientation.

    mappy maps read 2 as its reverse complement and flips only the strand, not
    ``q_st``/``q_en``: those are mirrored back for read 2.
    """
    q_st, q_en = (qlen - h.q_en, qlen - h.q_st) if h.read_num == 2 else (h.q_st, h.q_en)
    left, right = (qlen - q_en, q_st) if h.strand < 0 else (q_st, qlen - q_en)
    return f"{f'{left}S' if left else ''}{h.cigar_str}{f'{right}S' if right else ''}"


def _simple_pair(name: str, s1: str, q1: str, s2: str, q2: str, h1: Any, h2: Any, read_group: str,
                 max_insert: int) -> tuple[str, int, bool]:
    """:func:`pair_records` for a pair whose reads have one hit each (no supplementary):
    the same records, written without the general case's lists (the hot path)."""
    import mappy

    rev1, rev2 = h1.strand < 0, h2.strand < 0
    c1, c2 = _clipped_cigar(h1, len(s1)), _clipped_cigar(h2, len(s2))
    p1, p2 = h1.r_st + 1, h2.r_st + 1
    if h1.ctg == h2.ctg:
        e1 = h1.r_en - 1 if rev1 else h1.r_st  # 5' ends
        e2 = h2.r_en - 1 if rev2 else h2.r_st
        d = e2 - e1
        tlen = d + 1 if d > 0 else d - 1 if d < 0 else 0
        if rev1 == rev2:
            proper = False
        elif rev2:  # read 1 forward, read 2 reverse
            proper = h1.r_st <= h2.r_en and e2 - e1 < max_insert
        else:
            proper = h2.r_st <= h1.r_en and e1 - e2 < max_insert
        rn1 = rn2 = "="
    else:
        tlen, proper, rn1, rn2 = 0, False, h2.ctg, h1.ctg
    f1 = 0x41 | (0x2 if proper else 0) | (0x10 if rev1 else 0) | (0x20 if rev2 else 0)
    f2 = 0x81 | (0x2 if proper else 0) | (0x10 if rev2 else 0) | (0x20 if rev1 else 0)
    if rev1:
        s1, q1 = mappy.revcomp(s1), q1[::-1]
    if rev2:
        s2, q2 = mappy.revcomp(s2), q2[::-1]
    return (f"{name}\t{f1}\t{h1.ctg}\t{p1}\t{h1.mapq}\t{c1}\t{rn1}\t{p2}\t{tlen}\t{s1}\t{q1}\t"
            f"NM:i:{h1.NM}\tMC:Z:{c2}\tRG:Z:{read_group}\n"
            f"{name}\t{f2}\t{h2.ctg}\t{p2}\t{h2.mapq}\t{c2}\t{rn2}\t{p1}\t{-tlen}\t{s2}\t{q2}\t"
            f"NM:i:{h2.NM}\tMC:Z:{c1}\tRG:Z:{read_group}\n"), 2, proper


def pair_records(name: str, s1: str, q1: str, s2: str, q2: str, hits: Iterable[Any], read_group: str,
                 max_insert: int) -> tuple[str, int, bool]:
    """SAM lines of one pair (primaries, then supplementaries, read 1 first), the number of
    reads mapped, and whether the pair is proper. ``hits``: mappy's hits of the pair."""
    import mappy

    per: tuple[list[Any], list[Any]] = ([], [])
    for h in hits:
        if h.is_primary:  # id == parent: primary or supplementary
            per[h.read_num - 1].append(h)
    if len(per[0]) == 1 and len(per[1]) == 1:  # nearly every pair: one hit per read
        return _simple_pair(name, s1, q1, s2, q2, per[0][0], per[1][0], read_group, max_insert)
    if len(per[0]) > 1 or len(per[1]) > 1:
        # mappy does not expose minimap2's sam_pri: the primary of each read is the hit
        # that pairs with a hit of the mate, else minimap2's first.
        for i, a in enumerate(per[0]):
            j = next((j for j, b in enumerate(per[1]) if _pairs_up(a, b, max_insert)), None)
            if j is not None:
                per[0].insert(0, per[0].pop(i))
                per[1].insert(0, per[1].pop(j))
                break
    prim = (per[0][0] if per[0] else None, per[1][0] if per[1] else None)
    proper = prim[0] is not None and prim[1] is not None and _pairs_up(prim[0], prim[1], max_insert)
    seqs, quals = (s1, s2), (q1, q2)
    out: list[str] = []
    supp: list[str] = []
    for k in (0, 1):
        seq, qual, mate = seqs[k], quals[k], prim[1 - k]
        flag = 0x1 | (0x40, 0x80)[k] | (0x2 if proper else 0)
        if mate is None:
            flag |= 0x8
        elif mate.strand < 0:
            flag |= 0x20
        hs = per[k]
        if not hs:
            if mate is None:
                out.append(f"{name}\t{flag | 0x4}\t*\t0\t0\t*\t*\t0\t0\t{seq}\t{qual}\tRG:Z:{read_group}\n")
            else:
                p = mate.r_st + 1
                out.append(f"{name}\t{flag | 0x4}\t{mate.ctg}\t{p}\t0\t*\t=\t{p}\t0\t{seq}\t{qual}\t"
                           f"MC:Z:{_clipped_cigar(mate, len(seqs[1 - k]))}\tRG:Z:{read_group}\n")
            continue
        qlen = len(seq)
        cigars = [_clipped_cigar(h, qlen) for h in hs]
        mate_tags = "" if mate is None else f"\tMC:Z:{_clipped_cigar(mate, len(seqs[1 - k]))}"
        sa = [f"{h.ctg},{h.r_st + 1},{'-' if h.strand < 0 else '+'},{c},{h.mapq},{h.NM};"
              for h, c in zip(hs, cigars, strict=True)] if len(hs) > 1 else []
        for j, h in enumerate(hs):
            f = flag if j == 0 else (flag & ~0x2) | 0x800
            if h.strand < 0:
                f |= 0x10
                s, q = mappy.revcomp(seq), qual[::-1]
            else:
                s, q = seq, qual
            if mate is None:  # the unmapped mate takes this read's primary coordinates
                pnext, tlen, rn = hs[0].r_st + 1, 0, "=" if hs[0].ctg == h.ctg else hs[0].ctg
            else:
                pnext, rn = mate.r_st + 1, "=" if mate.ctg == h.ctg else mate.ctg
                if mate.ctg == h.ctg:
                    d = _pos5(mate) - _pos5(h)
                    tlen = d + 1 if d > 0 else d - 1 if d < 0 else 0
                else:
                    tlen = 0
            tags = f"\tNM:i:{h.NM}{mate_tags}"
            if sa:
                tags += "\tSA:Z:" + "".join(x for i, x in enumerate(sa) if i != j)
            line = (f"{name}\t{f}\t{h.ctg}\t{h.r_st + 1}\t{h.mapq}\t{cigars[j]}\t{rn}\t{pnext}\t{tlen}\t"
                    f"{s}\t{q}{tags}\tRG:Z:{read_group}\n")
            (out if j == 0 else supp).append(line)
    return "".join(out + supp), bool(per[0]) + bool(per[1]), proper
