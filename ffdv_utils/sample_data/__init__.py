"""The embedded sample dataset (synthetic talking faces with lip-synced speech, FFDV layout, with answers) and
the one mp4 writer the project uses for generated clips (tests and benchmarks too).
"""
