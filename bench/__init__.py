"""Benchmarks: the agent's figures as ratios against raw limits measured in the same run.

Run ``python -m bench`` (``make bench``) or ``python -m bench --quick``; see README.md.
"""
