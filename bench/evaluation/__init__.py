"""Evaluation helpers of the benchmarks and the tests (not part of the pipeline).

Contract: :mod:`bench.evaluation.vcfcompare` compares VCFs record for record and calls
against a germline truth set; :mod:`bench.evaluation.afeval` evaluates low-frequency
calls against a viral-mixture truth set. Import them as ``bench.evaluation.<module>``
with the repository's root on ``sys.path`` (``python -m pytest`` and the bench scripts
put it there); nothing in ``pipeline/`` or ``functions/`` imports them.
"""
