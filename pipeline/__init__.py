"""The local side of serverless-variant-calling: config, staging, planning, the
resumable fan-out, execution, merging and reporting. Importable without Snakemake."""

from functions.core.version import __version__

__all__ = ["__version__"]
