"""What the workers and the local side share, and nothing else.

Contract: the formats (BGZF, BAI, the BAM header, the FASTA index, the worker-side
FASTQ chunk reader), the object-store facade, atomic file writes, the code version
and the error base. Modules here import only the standard library, numpy and (lazily)
Lithops; never :mod:`pipeline` and never the rest of :mod:`functions`, so a worker
image needs nothing the functions do not use.
"""
