"""Normalise a CuPy array or a PyTorch CUDA tensor in place, zero-copy.

numba_ln takes any object with ``__cuda_array_interface__`` (CuPy arrays,
PyTorch CUDA tensors, numba device arrays) without copying it: the kernels
read and write the object's own GPU memory.  ``out=x`` normalises in place.
``stream=`` takes the library's own stream object (anything with
``__cuda_stream__``), so the work is ordered with the library's.

    python examples/gpu_cuda_array_interface.py

On a machine without a usable GPU (or without CuPy and a CUDA build of
PyTorch) it says so and exits with status 0.
"""

import sys

import numpy as np

import numba_ln


def _gpu_reason():
    """None when numba can use a GPU here, else why not."""
    try:
        from numba import cuda
    except Exception as exc:
        return f"numba-cuda is not installed ({exc}); pip install 'numba-cuda[cu13]'"
    try:
        if not cuda.is_available():
            return "numba.cuda.is_available() is False: no NVIDIA GPU or driver here"
    except Exception as exc:
        return f"CUDA is not usable: {exc}"
    return None


def with_cupy():
    import cupy as cp

    x = cp.random.standard_normal((4, 1024), dtype=cp.float32) * 3 + 10
    w = cp.full(1024, 2.0, dtype=cp.float32)
    b = cp.zeros(1024, dtype=cp.float32)
    ptr = x.data.ptr
    stream = cp.cuda.get_current_stream()
    numba_ln.layer_norm(x, w, b, out=x, stream=stream)  # in place: x's own memory
    stream.synchronize()
    assert x.data.ptr == ptr
    rows = cp.asnumpy(x)
    print(f"CuPy  {x.shape} {x.dtype}: row means {np.round(rows.mean(axis=1), 4)}, "
          f"row stds {np.round(rows.std(axis=1), 3)} (weight 2: std 2)")


def with_torch():
    import torch

    t = torch.randn(4, 1024, device="cuda") * 3 + 10
    w = torch.full((1024,), 2.0, device="cuda")
    b = torch.zeros(1024, device="cuda")
    expect = torch.nn.functional.layer_norm(t, (1024,), w, b, 1e-5)
    stream = torch.cuda.current_stream()  # ordered after the ops above
    numba_ln.layer_norm(t, w, b, out=t, stream=stream)  # in place into the tensor
    stream.synchronize()
    err = (t - expect).abs().max().item()
    print(f"torch {tuple(t.shape)} {t.dtype}: max |numba_ln - torch.nn.functional.layer_norm| "
          f"= {err:.2e}")


def main():
    reason = _gpu_reason()
    if reason is not None:
        print("This example normalises a CuPy array or a PyTorch CUDA tensor in place on the GPU "
              "through __cuda_array_interface__.")
        print(f"Skipped: {reason}.")
        print("On the CPU the same call takes NumPy arrays:",
              np.round(numba_ln.layer_norm(np.array([[1.0, 2.0, 3.0]])), 4))
        return 0
    ran = False
    for name, fn in (("cupy", with_cupy), ("torch", with_torch)):
        try:
            __import__(name)
        except ImportError:
            print(f"{name} is not installed: skipped")
            continue
        if name == "torch":
            import torch

            if not torch.cuda.is_available():
                print("torch has no CUDA here: skipped")
                continue
        fn()
        ran = True
    if not ran:
        print("Neither CuPy nor a CUDA build of PyTorch is installed: nothing to normalise in "
              "place.  pip install cupy-cuda12x, or a CUDA build of torch.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
