"""Benchmarks (``python -m ffdv_utils bench extraction|train``); nothing else imports them.
"""
