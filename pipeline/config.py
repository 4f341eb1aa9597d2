"""Load and validate the workflow configuration and the sample sheet.

Contract: :func:`load_settings` takes the config mapping Snakemake loaded (or any
dict), validates it against ``config/schemas/config.schema.yaml`` (defaults filled
in, unknown keys rejected), reads and validates the sample sheet row by row
against ``config/schemas/samples.schema.yaml``, reads the Lithops configuration
file, and returns :class:`Settings`. Every problem raises :class:`ConfigError`
whose message is one line naming the key or the row and how to fix it.

That happens once, when the workflow loads. Each step then gets only what it uses:
:func:`step_settings` cuts a :class:`StepSettings` out of the validated settings for
one step (a ``pipeline.cli`` subcommand; :data:`STEP_SECTIONS` says which sections),
the rule passes its :meth:`StepSettings.to_json` as a param, and the step rebuilds it
with :func:`read_step_settings`, which checks its shape only (no schema, no sample
sheet). The Lithops config travels as its path and a digest of its content, never its
keys: the step reads the file and refuses one whose content changed since.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from functions.core.cram import is_cram
from functions.core.errors import SvcError
from functions.core.storage import is_object_url

WORKFLOW_DIR = Path(__file__).resolve().parent.parent  # the workflow's own folder (Snakefile, config/)
SCHEMA_DIR = WORKFLOW_DIR / "config" / "schemas"


def workflow_file(path: str) -> str:
    """``path`` as the run should open it: as given when it is absolute or found from the
    folder the run is in; else, when the workflow's own folder has it (a built-in
    default such as ``config/lithops/localhost.yaml``, met by a run from the user's
    own folder), that file."""
    if os.path.isabs(path) or os.path.exists(path) or is_object_url(path):
        return path
    own = WORKFLOW_DIR / path
    return str(own) if own.exists() else path


class ConfigError(SvcError, ValueError):
    """The configuration or the sample sheet is wrong; the message says how."""


# Where the alignment of a sample given as FASTQs writes its BAM (then staged like any BAM).
ALIGNED_BAM = "results/{sample}.bam"


@dataclass(frozen=True)
class Sample:
    name: str
    bam: str  # as given in the sheet; for a FASTQ sample, the BAM its alignment writes
    fastq: tuple[str, str] | None = None  # (read 1, read 2) of a sample to align
    read_group: tuple[tuple[str, str], ...] = ()  # sheet columns read_group, library, platform, platform_unit

    @property
    def aligned(self) -> bool:
        """True for a sample given as FASTQs: the pipeline aligns it into :data:`ALIGNED_BAM`."""
        return self.fastq is not None

    def to_dict(self, *fields: str) -> dict[str, Any]:
        """The name and the given fields (bam, fastq, read_group) as JSON-able values."""
        out: dict[str, Any] = {"name": self.name}
        for f in fields:
            value = getattr(self, f)
            out[f] = [list(v) for v in value] if f == "read_group" else list(value) if f == "fastq" and value else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        """The inverse of :meth:`to_dict`; a missing ``bam`` is the one a FASTQ sample's alignment writes."""
        fastq = d.get("fastq")
        return cls(name=d["name"], bam=d.get("bam") or ALIGNED_BAM.format(sample=d["name"]),
                   fastq=(str(fastq[0]), str(fastq[1])) if fastq else None,
                   read_group=tuple((str(k), str(v)) for k, v in d.get("read_group", [])))

    def rg(self, key: str) -> str | None:
        """A read-group column of the sheet (read_group, library, platform, platform_unit), if given."""
        return dict(self.read_group).get(key)

    @property
    def remote(self) -> bool:
        return is_object_url(self.bam)

    @property
    def bai(self) -> str:
        """The index of the sample's BAM (its ``.bai``), or of its CRAM (``.crai``)."""
        suffix = ".crai" if is_cram(self.bam) else ".bai"
        if self.remote:
            return self.bam + suffix
        for cand in (self.bam + suffix, os.path.splitext(self.bam)[0] + suffix):
            if os.path.exists(cand):
                return cand
        return self.bam + suffix


@dataclass(frozen=True)
class Settings:
    raw: dict[str, Any]  # the validated config, defaults filled in
    samples: tuple[Sample, ...]
    lithops: dict[str, Any]

    @property
    def reference(self) -> str:
        return str(self.raw["reference"])

    @property
    def reference_is_remote(self) -> bool:
        return is_object_url(self.reference)

    @property
    def plan(self) -> dict[str, Any]:
        return dict(self.raw["plan"])

    @property
    def calling(self) -> dict[str, Any]:
        return dict(self.raw["calling"])

    @property
    def cohort(self) -> str | None:
        """The joint VCF's name in joint mode; None when samples are called one by one."""
        c = self.raw["calling"]
        return str(c["cohort"]) if c["mode"] == "joint" else None

    @property
    def storage(self) -> dict[str, Any]:
        return dict(self.raw["storage"])

    @property
    def align(self) -> dict[str, Any]:
        return dict(self.raw["align"])

    @property
    def executor(self) -> dict[str, Any]:
        return dict(self.raw["executor"])

    @property
    def report(self) -> dict[str, Any]:
        return dict(self.raw["report"])

    @property
    def faults(self) -> dict[str, Any]:
        return dict(self.raw["faults"])

    @property
    def consensus(self) -> dict[str, Any]:
        return dict(self.raw["consensus"])

    @property
    def consensus_wanted(self) -> bool:
        """Are consensus genomes written (results/<sample>.consensus.fa)? With the
        engine that keeps a depth track (lowfreq) and a reference on this machine."""
        from functions.engines import keeps_depth

        return keeps_depth(self.raw["calling"]["engine"]) and not self.reference_is_remote

    @cached_property
    def lithops_sha256(self) -> str:
        """The digest that names the Lithops config's content in a step's settings."""
        return lithops_digest(self.lithops)

    def sample(self, name: str) -> Sample:
        for s in self.samples:
            if s.name == name:
                return s
        raise KeyError(name)


def _schema(name: str) -> dict[str, Any]:
    with open(SCHEMA_DIR / name) as fh:
        return dict(yaml.safe_load(fh))


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _fill_defaults(schema: dict[str, Any], data: dict[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in data and "default" in sub:
            data[key] = copy.deepcopy(sub["default"])
        if isinstance(data.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, data[key])


def validate(data: dict[str, Any], schema_name: str, what: str) -> dict[str, Any]:
    """Validated copy of ``data`` with defaults filled in, or ConfigError (one line)."""
    schema = _schema(schema_name)
    data = copy.deepcopy(dict(data))
    _fill_defaults(schema, data)
    import jsonschema  # here: a step given its settings never validates (a tenth of a second of imports)

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _where(err.absolute_path)
            raise ConfigError(
                f"{what}: unknown key {', '.join(repr(k) for k in extra)} in {where} "
                f"(allowed: {allowed}); fix the spelling or remove it"
            )
        if err.validator == "pattern" and "x-rule" in err.schema:
            # The schema says in words what its pattern allows: say that, not the regex.
            raise ConfigError(
                f"{what}: {_where(err.absolute_path)} {err.instance!r} is not allowed: {err.schema['x-rule']}"
            )
        raise ConfigError(f"{what}: {_where(err.absolute_path)}: {err.message}")
    return data


READ_GROUP_COLUMNS = ("read_group", "library", "platform", "platform_unit")


def read_sample_sheet(path: str) -> tuple[Sample, ...]:
    """The samples of a tab-separated sheet, each row validated (one-line ConfigError).

    Blank lines and lines starting with '#' are skipped; a UTF-8 byte-order mark (as
    spreadsheet programs write) is dropped, and empty fields after the last named
    column (a trailing tab) are ignored.
    """
    if not os.path.exists(path):
        raise ConfigError(f"sample sheet {path} not found; set 'samples' in the config")
    with open(path, "rb") as raw:
        data = raw.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"sample sheet {path} line {line} is not UTF-8 text "
                          f"({exc.reason}): save the sheet as UTF-8 (or plain ASCII) text, tab-separated") from exc
    numbered = [(n, ln) for n, ln in enumerate(io.StringIO(text, newline=""), start=1)
                if ln.strip() and not ln.startswith("#")]
    reader = csv.DictReader([ln for _, ln in numbered], delimiter="\t")
    header = list(reader.fieldnames or [])
    while header and not header[-1].strip():  # a trailing tab on the header line
        header.pop()
    reader.fieldnames = header
    has_fastq = "fastq_1" in header and "fastq_2" in header
    missing = [c for c in ("sample", "bam") if c not in header]
    if "sample" in missing or (missing and not has_fastq):
        col = "sample" if "sample" in missing else "bam"
        raise ConfigError(
            f"sample sheet {path}: missing column {col!r} in the header line "
            f"(found: {', '.join(header) or 'nothing'}): its first line must name the columns "
            "sample and bam (or sample, fastq_1 and fastq_2), separated by tabs"
        )
    samples: list[Sample] = []
    seen: dict[str, int] = {}  # sample name -> its line in the sheet
    for i, row in enumerate(reader, start=1):
        lineno = numbered[i][0]
        extra = [v for v in row.pop(None, None) or [] if v.strip()]  # non-empty fields past the header's
        if extra or any(v is None for v in row.values()):
            raise ConfigError(
                f"sample sheet {path} row {lineno}: expected {len(header)} tab-separated "
                f"fields, found {len([v for v in row.values() if v is not None]) + len(extra)}"
            )
        clean = {k: v.strip() for k, v in row.items() if v is not None and v.strip()}
        where = f"sample sheet {path} row {lineno}"
        validate(clean, "samples.schema.yaml", where)
        name = clean["sample"]
        if name in seen:
            raise ConfigError(
                f"{where}: duplicate sample {name!r} (also in row {seen[name]}): "
                "give each sample its own name, or remove the repeated row"
            )
        seen[name] = lineno
        samples.append(_sample(clean, where))
    if not samples:
        raise ConfigError(
            f"sample sheet {path} lists no samples: add one line per sample with its name and its BAM "
            "(or its two FASTQs), separated by tabs"
        )
    for s in samples:
        files = [("FASTQ", f) for f in s.fastq] if s.fastq else [("CRAM" if is_cram(s.bam) else "BAM", s.bam)]
        for kind, f in files:
            if not is_object_url(f) and not os.path.exists(f):
                raise ConfigError(
                    f"sample sheet {path} row {seen[s.name]}: {kind} {f} of sample {s.name!r} not found: fix the "
                    f"path (a relative path starts from the folder Snakemake runs in, {os.getcwd()})"
                )
    return tuple(samples)


def _sample(row: dict[str, str], where: str) -> Sample:
    """One validated sheet row as a Sample: a BAM, or a FASTQ pair to align (with its read group)."""
    name = row["sample"]
    fastqs = [row.get("fastq_1"), row.get("fastq_2")]
    rg = tuple((k, row[k]) for k in READ_GROUP_COLUMNS if k in row)
    if "bam" in row:
        if any(fastqs):
            raise ConfigError(f"{where}: sample {name!r} has both a BAM and FASTQs: give one or the other")
        if rg:
            raise ConfigError(f"{where}: sample {name!r} has a BAM: its read groups come from the BAM, so leave "
                              f"{', '.join(k for k, _ in rg)} empty")
        return Sample(name=name, bam=row["bam"])
    if not all(fastqs):
        have = "fastq_1" if fastqs[0] else "fastq_2" if fastqs[1] else None
        raise ConfigError(
            f"{where}: sample {name!r} has " + (f"only {have}" if have else "no BAM and no FASTQs")
            + ": give its BAM, or both FASTQs of its read pairs (fastq_1 and fastq_2)"
        )
    for f in fastqs:
        if is_object_url(str(f)):
            raise ConfigError(f"{where}: FASTQ {f} of sample {name!r} is in object storage; the pipeline reads "
                              "FASTQs from this machine (it cuts them into chunks as it stages them): download it")
    return Sample(name=name, bam=ALIGNED_BAM.format(sample=name), fastq=(str(fastqs[0]), str(fastqs[1])),
                  read_group=rg)


def load_lithops_config(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ConfigError(f"Lithops config {path} not found; set 'lithops_config' in the config")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict) or "lithops" not in data:
        raise ConfigError(f"Lithops config {path} has no 'lithops:' section")
    return data


def load_settings(config: dict[str, Any]) -> Settings:
    raw = validate(config, "config.schema.yaml", "config")
    if "reference" not in raw:
        raise ConfigError("config: 'reference' is not set; name the reference FASTA")
    if raw["plan"].get("target_bytes") is None and raw["plan"].get("n_regions") is None:
        raise ConfigError("config: plan: set n_regions or target_bytes")
    samples = read_sample_sheet(raw["samples"])
    if any(s.aligned for s in samples) and is_object_url(str(raw["reference"])):
        raise ConfigError(
            f"config: reference {raw['reference']} is in object storage, but samples given as FASTQs are aligned "
            "with a minimap2 index built on this machine from the FASTA: set 'reference' to a local copy"
        )
    calling = raw["calling"]
    if calling["mode"] == "joint":
        from functions.engines import joint_capable

        if not joint_capable(calling["engine"]):
            raise ConfigError(
                f"config: calling: engine {calling['engine']} calls one sample at a time; "
                "joint mode needs engine bcftools (or set mode: per_sample)"
            )
        if any(s.name == calling["cohort"] for s in samples):
            raise ConfigError(
                f"config: calling: cohort {calling['cohort']!r} is also a sample's name; "
                "give the joint VCF another name (calling.cohort)"
            )
    if calling.get("primers") is not None:
        from functions.core.primers import PrimerError, read_primer_bed
        from functions.engines import trims_primers

        if not trims_primers(calling["engine"]):
            raise ConfigError(f"config: calling: primers are trimmed by the lowfreq engine, not by "
                              f"{calling['engine']}: set engine: lowfreq, or trim the BAMs first (ivar trim)")
        try:
            read_primer_bed(str(calling["primers"]))
        except PrimerError as exc:
            raise ConfigError(f"config: calling: {exc}") from exc
    raw["lithops_config"] = workflow_file(str(raw["lithops_config"]))
    if calling.get("targets") is not None or calling.get("exclude") is not None:
        from functions.core.targets import TargetError, read_bed

        if calling["engine"] != "bcftools":
            raise ConfigError(f"config: calling: targets and exclude restrict the bcftools engine; the "
                              f"{calling['engine']} engine calls whole genomes (unset them, or use engine: bcftools)")
        for what in ("targets", "exclude"):
            if calling.get(what) is not None:
                try:
                    read_bed(str(calling[what]), what)
                except TargetError as exc:
                    raise ConfigError(f"config: calling: {exc}") from exc
    if calling.get("normalize") and calling["engine"] != "bcftools":
        raise ConfigError(f"config: calling: normalize applies to the bcftools engine, not to "
                          f"{calling['engine']} (unset it, or use engine: bcftools)")
    lithops = load_lithops_config(raw["lithops_config"])
    return Settings(raw=raw, samples=samples, lithops=lithops)


# -- what each step is given ----------------------------------------------------------
def lithops_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a Lithops config's content (its canonical JSON: comments and key order
    do not count). A step's settings carry it instead of the content, whose keys and
    secrets must not appear on a command line or in Snakemake's records."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# The sections each step (a pipeline.cli subcommand) is given, and no others. "storage"
# and "lithops" open the object store (and executors); "samples" are the sheet rows the
# step reads; "summary" is what the report's run table names (engine, mode, runner,
# Lithops backend and storage).
_STORE = frozenset({"storage", "lithops"})
STEP_SECTIONS: dict[str, frozenset[str]] = {
    "check-storage": _STORE,
    "stage-reference": _STORE | {"reference"},
    "stage-sample": _STORE | {"samples"},
    "index-reference": _STORE | {"reference"},
    "stage-fastq": _STORE | {"samples", "align", "executor"},
    "align": _STORE | {"samples", "align", "executor", "faults"},
    "merge-alignments": _STORE | {"align"},
    "plan": _STORE | {"plan"},
    "plan-joint": _STORE | {"plan"},
    "call": _STORE | {"calling", "executor", "faults"},
    "merge": _STORE | {"reference", "executor", "consensus"},
    "report": frozenset({"report", "summary"}),
}
_FANOUT_EXECUTOR = ("runner", "retries", "progress", "timeout")


def _pick(section: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: section[k] for k in keys if k in section}


def marks_duplicates(settings: Settings) -> bool:
    """align.mark_duplicates, null resolved: on for shotgun libraries, off with an amplicon
    scheme (calling.primers), whose reads of one amplicon all start at its primers."""
    chosen = settings.align.get("mark_duplicates")
    return not settings.calling.get("primers") if chosen is None else bool(chosen)


def step_settings(settings: Settings, step: str, sample: str | None = None) -> StepSettings:
    """What ``step`` uses of the validated ``settings``, and nothing more: so that, as a
    rule's param, a changed key reruns exactly the steps that read it. ``sample`` names
    the sheet row of the per-sample steps (stage-sample, stage-fastq). KeyError for an
    unknown step or sample."""
    wanted = STEP_SECTIONS[step]
    out: dict[str, Any] = {}
    if "storage" in wanted:
        out["storage"] = settings.storage
        out["lithops"] = {"path": settings.raw["lithops_config"], "sha256": settings.lithops_sha256}
    if "reference" in wanted:
        out["reference"] = settings.reference
    if "plan" in wanted:
        out["plan"] = settings.plan
        beds = {k: v for k, v in _pick(settings.calling, "targets", "exclude").items() if v is not None}
        if beds:  # the BEDs' paths (the rules have the files as inputs, so a changed BED replans too)
            out["plan"]["targets"] = beds
        if out["plan"].get("padding") is None:  # the engine's own (resolved here: a step gets a number)
            from functions.engines import context_padding

            engine = settings.calling["engine"]
            out["plan"]["padding"] = context_padding(engine, settings.calling[engine])
    calling = settings.calling
    if "calling" in wanted:
        engine = calling["engine"]
        # calling.normalize travels as a parameter of the engine (it enters the fragment keys).
        params = {**calling[engine], **({"normalize": True} if calling.get("normalize") else {})}
        out["calling"] = {"engine": engine, engine: params, "cohort": settings.cohort,
                          "primers": calling.get("primers"),
                          **{k: calling[k] for k in ("targets", "exclude") if calling.get(k) is not None}}
    executor = settings.executor
    if step == "stage-fastq":
        out["executor"] = _pick(executor, "progress")
        out["align"] = _pick(settings.align, "chunk_pairs")
        out["samples"] = [settings.sample(str(sample)).to_dict("fastq")]
    elif step == "align":
        out["executor"] = _pick(executor, *_FANOUT_EXECUTOR)
        out["align"] = {**_pick(settings.align, "chunk_pairs", "max_insert"),
                        "mark_duplicates": marks_duplicates(settings)}
        out["samples"] = [s.to_dict("read_group") for s in settings.samples if s.aligned]
    elif step == "merge-alignments":
        out["align"] = {**_pick(settings.align, "compression_level"), "mark_duplicates": marks_duplicates(settings)}
    elif step == "stage-sample":
        out["samples"] = [settings.sample(str(sample)).to_dict("bam")]
    elif step == "call":
        out["executor"] = _pick(executor, *_FANOUT_EXECUTOR, *(["jobs"] if executor["runner"] == "snakemake" else []))
    elif step == "merge":
        out["executor"] = _pick(executor, "runner")
        # null when no consensus is written (bcftools, or a reference in object storage)
        out["consensus"] = settings.consensus if settings.consensus_wanted else None
    elif step == "report":
        out["report"] = _pick(settings.report, "cost")
        from functions.engines import keeps_depth

        if keeps_depth(calling["engine"]):
            # The viral view (depth, amplicons, minority variants): the consensus' depth
            # threshold and the primer scheme (the BED is also the rule's input).
            out["report"]["viral"] = {"min_depth": settings.consensus["min_depth"],
                                      "primers": calling.get("primers")}
        lt = settings.lithops.get("lithops") or {}
        out["summary"] = {
            "calling": _pick(calling, "engine", "mode"),
            "executor": _pick(executor, "runner"),
            "lithops": {"backend": lt.get("backend", "?"), "storage": lt.get("storage", "?")} if lt else {},
        }
    if "faults" in wanted:
        # Off unless probability > 0: then the other keys change nothing, and rerun nothing.
        out["faults"] = settings.faults if settings.faults.get("probability") else {}
    return StepSettings(step, out)


@dataclass(frozen=True)
class StepSettings:
    """The settings one step was given (see :data:`STEP_SECTIONS`), validated when the
    workflow loaded. Each section reads like :class:`Settings`'; asking for a section
    the step was not given is a bug of the pipeline (KeyError)."""

    step: str
    sections: dict[str, Any]

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same settings give the same string (a rule's param)."""
        return json.dumps({"step": self.step, **self.sections}, sort_keys=True, separators=(",", ":"))

    def _get(self, name: str) -> Any:
        if name not in self.sections:
            raise KeyError(f"step {self.step} was not given the settings section {name!r} "
                           f"(it has: {', '.join(sorted(self.sections))})")
        return self.sections[name]

    @property
    def storage(self) -> dict[str, Any]:
        return dict(self._get("storage"))

    @cached_property
    def lithops(self) -> dict[str, Any]:
        """The Lithops config, read from its file; ConfigError when its content is not the
        one the workflow was started with (the digest in the settings)."""
        ref = self._get("lithops")
        data = load_lithops_config(ref["path"])
        if lithops_digest(data) != ref["sha256"]:
            raise ConfigError(
                f"Lithops config {ref['path']} changed after the workflow started: run snakemake again "
                "(it reruns every step that uses the Lithops config)"
            )
        return data

    @property
    def reference(self) -> str:
        return str(self._get("reference"))

    @property
    def reference_is_remote(self) -> bool:
        return is_object_url(self.reference)

    @property
    def plan(self) -> dict[str, Any]:
        return dict(self._get("plan"))

    @property
    def calling(self) -> dict[str, Any]:
        """The engine, its parameters (under its name) and the cohort (None: per sample)."""
        return dict(self._get("calling"))

    @property
    def cohort(self) -> str | None:
        """The joint VCF's name in joint mode; None when samples are called one by one."""
        c = self._get("calling")["cohort"]
        return None if c is None else str(c)

    @property
    def align(self) -> dict[str, Any]:
        return dict(self._get("align"))

    @property
    def executor(self) -> dict[str, Any]:
        return dict(self._get("executor"))

    @property
    def report(self) -> dict[str, Any]:
        return dict(self._get("report"))

    @property
    def faults(self) -> dict[str, Any]:
        """The fault injection (tests only); empty when off."""
        return dict(self._get("faults"))

    @property
    def consensus(self) -> dict[str, Any] | None:
        """The consensus settings of the merge; None when no consensus is written."""
        c = self.sections.get("consensus")
        return None if c is None else dict(c)

    @property
    def viral_report(self) -> dict[str, Any] | None:
        """The report's viral settings (``min_depth``: consensus.min_depth, ``primers``: the
        primer BED or None), given with an engine that keeps a depth track; else None."""
        v = self._get("report").get("viral")
        return None if v is None else dict(v)

    @property
    def summary(self) -> dict[str, Any]:
        """What the report's run table names: ``calling`` (engine, mode), ``executor``
        (runner) and ``lithops`` (backend, storage; empty without a Lithops section)."""
        return dict(self._get("summary"))

    @property
    def samples(self) -> tuple[Sample, ...]:
        return tuple(Sample.from_dict(d) for d in self._get("samples"))

    def sample(self, name: str) -> Sample:
        for s in self.samples:
            if s.name == name:
                return s
        raise KeyError(f"step {self.step} was not given the sheet row of sample {name!r}")


def _shape_error(step: str, problem: str) -> ConfigError:
    return ConfigError(f"settings of step {step}: {problem}; pass what the workflow's rule passes "
                       "(rules/common.smk: get_step_settings), or the whole workflow config")


def _check_shape(step: str, data: dict[str, Any]) -> None:
    """A cheap structural check of a step's settings (no schema: they were validated at load)."""
    got = set(data) - {"step"}
    if data.get("step") != step:
        raise _shape_error(step, f"they are the settings of step {data.get('step')!r}")
    if got != STEP_SECTIONS[step]:
        missing, extra = sorted(STEP_SECTIONS[step] - got), sorted(got - STEP_SECTIONS[step])
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise _shape_error(step, "; ".join(problems))
    for name in got:
        value = data[name]
        if name == "reference":
            ok = isinstance(value, str)
        elif name == "samples":
            ok = isinstance(value, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in value)
        elif name == "lithops":
            ok = isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ("path", "sha256"))
        elif name == "consensus":
            ok = value is None or isinstance(value, dict)
        else:
            ok = isinstance(value, dict)
        if not ok:
            raise _shape_error(step, f"section {name!r} is malformed")


def read_step_settings(text: str, step: str, sample: str | None = None) -> StepSettings:
    """The settings of ``step`` from the JSON a rule passes (:meth:`StepSettings.to_json`),
    checked for shape only. Given a whole workflow config instead (no ``step`` key; for
    running a step by hand), it is validated in full, sample sheet included, and cut down
    to the step's (``sample``: the per-sample steps' row). ConfigError (one line) when
    either is wrong."""
    if step not in STEP_SECTIONS:
        raise ConfigError(f"no step {step!r} (steps: {', '.join(STEP_SECTIONS)})")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _shape_error(step, f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _shape_error(step, "not a JSON object")
    if "step" not in data:
        settings = load_settings(data)
        try:
            return step_settings(settings, step, sample)
        except KeyError as exc:
            raise ConfigError(f"config: no sample {sample!r} in the sample sheet {settings.raw['samples']}") from exc
    _check_shape(step, data)
    return StepSettings(step, {k: v for k, v in data.items() if k != "step"})
