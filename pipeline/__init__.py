"""The local side of serverless-variant-calling: config, storage, index parsing,
planning, execution, merging and reporting. Importable without Snakemake."""

__version__ = "0.1.0"
