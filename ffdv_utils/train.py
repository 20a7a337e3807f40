"""Entry point for ``torchrun --nproc_per_node=N -m ffdv_utils.train -f params/03_train.yaml ...`` (and
``python -m ffdv_utils.train``): the same as ``python -m ffdv_utils train``. The training code is in
``ffdv_utils.training``."""

import sys

from .cli.main import train_main

if __name__ == "__main__":
    train_main(sys.argv[1:])
