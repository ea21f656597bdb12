"""What the tests share: face sets, services of their own, processes, hand-built data.

A package, so that test modules import helpers from here rather than from each other or
from conftest.py (which keeps only pytest's hooks and the shared fixtures).
"""
