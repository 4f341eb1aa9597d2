# Lithops worker image for Knative Serving, Lithops' knative backend (the
# k8s_minio.yaml example with "backend: knative" and a "knative:" section).
#
# Build and push it from the repository root (Lithops builds with the current
# directory as the context and writes its handler, lithops_knative.zip, there
# before building); log in to the registry first (docker login):
#   lithops runtime build -c YOUR_KNATIVE_CONFIG.yaml -b knative \
#     -f runtime/knative.Dockerfile docker.io/YOUR_REGISTRY_USER/svc-runtime-kn:0.1.0
#
# The image holds only third-party code: the pipeline's own modules (functions/,
# pipeline/) travel with each job, serialised by Lithops. Not built or run in this
# project's CI (no container engine or cluster there): see docs/cloud.md.
#
# The Python minor version must be the one that runs Snakemake: Lithops refuses a
# runtime with another one (and another Lithops version).
FROM python:3.11-slim-bookworm

# htslib (inside the pysam wheel, which brings its own bzip2 and lzma) links zlib
# and loads libcurl and libcrypto from the system at run time;
# unzip unpacks the handler below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 zlib1g unzip \
    && rm -rf /var/lib/apt/lists/*

COPY runtime/requirements.txt /tmp/requirements.txt
# Lithops' Knative proxy is a flask app served by gunicorn; kubernetes is its
# backend's client (used if remote_invoker is turned on).
# mappy (minimap2) has no wheel: it is compiled here, and its compiler removed after.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
    && pip install --no-cache-dir -r /tmp/requirements.txt flask==3.1.3 gunicorn==27.0.1 kubernetes==37.0.1 \
    && apt-get purge -y gcc libc6-dev zlib1g-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && rm /tmp/requirements.txt

ENV PYTHONUNBUFFERED=TRUE PORT=8080 CONCURRENCY=1 TIMEOUT=600

# Lithops' handler (lithopsproxy.py and the lithops package).
WORKDIR /lithops
COPY lithops_knative.zip .
RUN unzip lithops_knative.zip && rm lithops_knative.zip

CMD ["sh", "-c", "exec gunicorn --bind :$PORT --workers $CONCURRENCY --timeout $TIMEOUT lithopsproxy:proxy"]
