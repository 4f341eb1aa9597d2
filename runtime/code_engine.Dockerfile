# Lithops worker image for IBM Code Engine (config/lithops/ibm_code_engine.yaml).
#
# Build and push it from the repository root (Lithops builds with the current
# directory as the context and writes its handler, lithops_codeengine.zip, there
# before building); log in to the registry first (docker login):
#   lithops runtime build -c YOUR_IBM_CONFIG.yaml -b code_engine \
#     -f runtime/code_engine.Dockerfile docker.io/YOUR_REGISTRY_USER/svc-runtime:0.3.0
#
# The image holds only third-party code: the pipeline's own modules (functions/,
# pipeline/) travel with each job, serialised by Lithops. Not built or run in this
# project's CI (no container engine or cloud account there): see docs/cloud.md.
#
# The Python minor version must be the one that runs Snakemake: Lithops refuses a
# runtime with another one (and another Lithops version). Code Engine runs the jobs
# with /usr/local/bin/python /lithops/lithopsentry.py, as this base image has it.
FROM python:3.11-slim-bookworm

# htslib (inside the pysam wheel, which brings its own bzip2 and lzma) links zlib
# and loads libcurl and libcrypto from the system at run time;
# unzip unpacks the handler below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 zlib1g unzip \
    && rm -rf /var/lib/apt/lists/*

COPY runtime/requirements.txt /tmp/requirements.txt
# Lithops' Code Engine entry point (flask, gunicorn), its IBM COS storage backend
# (ibm-cos-sdk) and the Code Engine client (used if remote_invoker is turned on).
# mappy (minimap2) has no wheel: it is compiled here, and its compiler removed after.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
        flask==3.1.3 gunicorn==27.0.1 ibm-cos-sdk==2.16.2 ibm-cloud-sdk-core==3.28.0 ibm-code-engine-sdk==6.0.6 \
    && apt-get purge -y gcc libc6-dev zlib1g-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && rm /tmp/requirements.txt

ENV PYTHONUNBUFFERED=TRUE PORT=8080 CONCURRENCY=1 TIMEOUT=600

# Lithops' handler (lithopsentry.py and the lithops package), laid out as in
# Lithops' own default Code Engine runtime.
WORKDIR /lithops
COPY lithops_codeengine.zip .
RUN unzip lithops_codeengine.zip && rm lithops_codeengine.zip

# Code Engine jobs override this command; it serves the older Knative path.
CMD ["sh", "-c", "exec gunicorn --bind :$PORT --workers $CONCURRENCY --timeout $TIMEOUT lithopsentry:proxy"]
