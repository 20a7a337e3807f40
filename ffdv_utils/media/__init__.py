"""Decoding: the one place that opens media containers (PyAV). ``probe_video``, ``load_audio``, ``load_frames``.
"""
