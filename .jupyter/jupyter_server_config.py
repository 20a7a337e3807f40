# JupyterLab started with `make lab` (JUPYTER_CONFIG_PATH=.jupyter) reads this file: saving one of the tracked
# notebooks (notebooks/NN_*.ipynb) writes it without outputs, so the repository stays clean; what it showed stays on
# screen, and the runner keeps executed copies in the run folder (outputs/<run>/notebooks/).
c = get_config()  # noqa: F821 - provided by traitlets when it loads this file
c.ContentsManager.pre_save_hook = "ffdv_utils.core.runner.strip_tracked_outputs"
