"""Code that runs inside serverless workers: pure functions of their arguments.

Nothing here imports Snakemake or keeps global state; every entry point can be
called directly in a test or by the serial runner, and through Lithops by
:mod:`pipeline.executor`.
"""
