# CompressLens on a CUDA machine: docker build -t compresslens . && docker run --gpus all -p 8501:8501 \
#   -v ~/.cache/huggingface:/root/.cache/huggingface -v compresslens:/root/.compresslens compresslens
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
# The CUDA wheel of the same pinned torch, from PyTorch's index, installed with everything else.
RUN python3 -m venv /venv \
    && /venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cu128 -r requirements.txt \
    && /venv/bin/pip install --no-deps -r requirements-nodeps.txt
COPY . .

ENV PATH=/venv/bin:$PATH COMPRESSLENS_MODEL=GSAI-ML/LLaDA-8B-Instruct
EXPOSE 8501
# It listens beyond localhost, so people sign in (README, "Reviewers and annotators on a shared server"):
# create the first reviewer with `docker exec -it CONTAINER python -m core users add NAME --role reviewer`.
CMD ["python", "scripts/serve.py", "run", "app.py", "--server.address=0.0.0.0", "--server.headless=true", \
     "--browser.gatherUsageStats=false"]
