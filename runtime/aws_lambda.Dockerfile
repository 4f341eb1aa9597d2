# Lithops worker image for AWS Lambda (config/lithops/aws_lambda.yaml).
#
# Build and push it to ECR from the repository root (Lithops builds with the
# current directory as the context and writes its handler, lithops_lambda.zip,
# there before building):
#   lithops runtime build -c config/lithops/aws_lambda.yaml -b aws_lambda \
#     -f runtime/aws_lambda.Dockerfile svc-runtime:0.3.0
#
# The image holds only third-party code: the pipeline's own modules (functions/,
# pipeline/) travel with each job, serialised by Lithops. Not built or run in this
# project's CI (no container engine or cloud account there): see docs/cloud.md.
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
# awslambdaric: the runtime interface client that runs the handler in Lambda.
# mappy (minimap2) has no wheel: it is compiled here, and its compiler removed after.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
    && pip install --no-cache-dir -r /tmp/requirements.txt awslambdaric==4.2.2 \
    && apt-get purge -y gcc libc6-dev zlib1g-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && rm /tmp/requirements.txt

# Lithops' Lambda handler (its entry point and the lithops package), laid out as
# in Lithops' own runtime/aws_lambda/Dockerfile.
ARG FUNCTION_DIR=/function
WORKDIR ${FUNCTION_DIR}
COPY lithops_lambda.zip .
RUN unzip lithops_lambda.zip \
    && rm lithops_lambda.zip \
    && mkdir handler \
    && touch handler/__init__.py \
    && mv entry_point.py handler/

ENTRYPOINT ["/usr/local/bin/python", "-m", "awslambdaric"]
CMD ["handler.entry_point.lambda_handler"]
