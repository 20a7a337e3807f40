"""Packaging for Kaggle (``python -m ffdv_utils kaggle stage|check|push``): the kernel folder, the offline wheel
dataset with a run's weights, and the CLI round trip. Nothing in the pipeline imports it.
"""
