# Lithops worker image for Kubernetes, Lithops' k8s backend
# (config/lithops/k8s_minio.yaml).
#
# Build and push it from the repository root (Lithops builds with the current
# directory as the context and writes its handler, lithops_k8s.zip, there before
# building); log in to the registry first (docker login):
#   lithops runtime build -c YOUR_K8S_CONFIG.yaml -b k8s \
#     -f runtime/k8s.Dockerfile docker.io/YOUR_REGISTRY_USER/svc-runtime:0.3.0
#
# The image holds only third-party code: the pipeline's own modules (functions/,
# pipeline/) travel with each job, serialised by Lithops. Not built or run in this
# project's CI (no container engine or cluster there): see docs/cloud.md.
#
# The Python minor version must be the one that runs Snakemake: Lithops refuses a
# runtime with another one (and another Lithops version). The Jobs Lithops creates
# run python3 /lithops/lithopsentry.py.
FROM python:3.11-slim-bookworm

# htslib (inside the pysam wheel, which brings its own bzip2 and lzma) links zlib
# and loads libcurl and libcrypto from the system at run time;
# unzip unpacks the handler below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 zlib1g unzip \
    && rm -rf /var/lib/apt/lists/*

COPY runtime/requirements.txt /tmp/requirements.txt
# Lithops' k8s entry point imports flask and its backend package (kubernetes).
# mappy (minimap2) has no wheel: it is compiled here, and its compiler removed after.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
    && pip install --no-cache-dir -r /tmp/requirements.txt flask==3.1.3 kubernetes==37.0.1 \
    && apt-get purge -y gcc libc6-dev zlib1g-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && rm /tmp/requirements.txt

ENV PYTHONUNBUFFERED=TRUE

# A user that is not root, as in Lithops' own default k8s runtime.
RUN groupadd -g 1000 lithops && useradd -m -u 1000 -g 1000 lithops

# Lithops' handler (lithopsentry.py and the lithops package).
WORKDIR /lithops
COPY lithops_k8s.zip .
RUN unzip lithops_k8s.zip && rm lithops_k8s.zip && chown -R lithops:lithops /lithops

USER 1000:1000
