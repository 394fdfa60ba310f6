"""Run a script with the 3D fit's regressor (``tddfa_mb05``) replaced by another weights file.

    python research/with_fit.py /work/fit/run1/best.safetensors research/partial_turn.py --turn-to 45

Research only: it swaps the weights of the network that both ``pifr.estimate_yaw`` and the 3D fit
read, so a candidate fit can be scored by any benchmark before it is registered.
"""
import functools
import runpy
import sys

from safetensors.torch import load_file

import pifr.pose as pose

weights, sys.argv = sys.argv[1], sys.argv[2:]
_original = pose.pose_network


@functools.lru_cache(maxsize=4)
def _swapped(device=None):
    net = _original(device)
    net.load_state_dict(load_file(weights))
    return net


pose.pose_network = _swapped
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).resolve().parent))
runpy.run_path(sys.argv[0], run_name="__main__")
