"""Processes that run the image job are set up for it: one OpenCV thread, and freed image
memory kept for the next image instead of being page-faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: decode the portrait repeatedly (an engine's first step for `encoded` and
# `compact`); how many page faults each decode costs after a warm-up, and OpenCV's threads.
FAULTS_PER_DECODE = """
import resource, sys
from imgdist.codec import decode, read_file
from imgdist.tuning import tune_for_images
if sys.argv[1] == "tuned":
    assert tune_for_images() is True
import cv2
data = read_file(sys.argv[2])
for _ in range(10):
    decode(data, "portrait")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    decode(data, "portrait")
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print((after - before) / 50, cv2.getNumThreads())
"""


def faults_and_threads(mode: str, portrait_path) -> tuple[float, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_DECODE, mode, str(portrait_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    faults, threads = done.stdout.split()
    return float(faults), int(threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_a_tuned_process_takes_no_page_faults_per_image(portrait_path):
    """Untuned, glibc hands each decoded portrait's memory back, so the next decode page-faults
    it in again (~420 faults for 600x512); after tune_for_images() it takes (next to) none, and
    OpenCV runs on one thread."""
    untuned, _ = faults_and_threads("plain", portrait_path)
    if untuned < 50:
        pytest.skip(f"this C library does not hand decoded images back ({untuned} faults a decode)")
    tuned, threads = faults_and_threads("tuned", portrait_path)
    assert tuned < 5, f"{tuned} page faults per decode after tuning, {untuned} without"
    assert threads == 1
