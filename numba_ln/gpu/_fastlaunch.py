"""Kernel launches without numba's per-call dispatch.

``kernel[grid, block, stream](*args)`` in numba-cuda types every argument,
looks the overload up, builds a launch configuration, converts each device
array to a memory view (flags, layout) and hands the flattened arguments to
``cuda.core.launch``: tens of microseconds of Python a launch, more than the
GPU time of a LayerNorm of a few million elements.  The GPU path's kernels
take arguments of fixed types per dtype (C-contiguous arrays, an ``int32``,
a float), so here the kernel is compiled once for its signature and each
launch packs the arguments itself, in numba's kernel ABI (an array is
``meminfo, parent, nitems, itemsize, data, shape..., strides...``, each a
64-bit parameter), and calls the driver's ``cuLaunchKernel``.  Host time
of one forward launch on the H200 machine measured
(``scripts/gpu_launch_cost.py``, two runs): numba 55-60 us, here 23-25 us,
of which the packing takes about 5 us (on a 2-core VM, with no GPU:
``scripts/gpu_host_overhead.py``) and the rest is the driver call.

Programmatic dependent launch (``pdl=True``, compute capability 9.0 and
later): a kernel that depends on the previous one of its stream only through
memory it reads after ``griddepcontrol.wait`` (the column sums after the
backward's row kernel, the split forward's second kernel, the backward after
its row sums; :data:`numba_ln.gpu._kernels._dep_wait`) is launched by
``cuLaunchKernelEx`` with the programmatic stream serialization attribute:
the GPU may start it as the previous grid's blocks exit, before that grid
has finished and flushed its writes, so that its launch latency overlaps
the previous kernel's tail.  On an H200 (session 11, ``scripts/gpu_tune.py``,
the same bits): the backward 63% -> 67% of copy bandwidth at 4096x1024, 25%
-> 27% at 32x65536, 78% -> 80% at 4096x4096 and 65536x128; the split forward
37% -> 41% at 32x65536.  Off with ``NUMBA_LN_PDL=0`` in the environment (or
:data:`PDL` set False); never on older GPUs nor where launches go through
numba.

Clusters (``cluster=n``, compute capability 9.0 and later): the grid is
launched in thread block clusters of ``n`` blocks (``cuLaunchKernelEx``
with the cluster dimension attribute), for a kernel whose blocks meet at
the cluster's barrier (:data:`numba_ln.gpu._kernels._cluster_sync`).  Such
a launch is never replaced by a plain one: there the barrier would hold
only the block, so a refusal is an error.

Safety: the packing is checked once per kernel against the parameter sizes
the driver reports for the compiled kernel (``cuFuncGetParamInfo``, through
``cuda.core``); a launch whose arrays are not C-contiguous, or of another
dtype, goes through numba's dispatcher instead, as does everything under
the simulator, with ``NUMBA_LN_FAST_LAUNCH=0`` in the environment, or when
any of the numba-cuda / cuda.core internals used here is missing.
"""

import ctypes
import os
import struct
import threading

import numpy as np

from . import _kernels as K

__all__ = ["launch", "launcher"]

#: Programmatic dependent launches where asked for (see the module's text).
PDL = os.environ.get("NUMBA_LN_PDL", "1") != "0"

#: ``{(id(dispatcher), dtype, kind): (dispatcher, Launcher or None)}``; the
#: entry keeps the dispatcher alive, so that its id is not reused.
_LAUNCHERS = {}
_LOCK = threading.Lock()


def _enabled():
    return not K.SIM and os.environ.get("NUMBA_LN_FAST_LAUNCH", "1") != "0"


def _parse(sig):
    """The argument kinds of a numba signature string like
    ``"void(float32[:, ::1], float32[::1], int32, float32)"``: for an array
    ``(ndim, dtype, itemsize)``, for a scalar its ``struct`` code."""
    inner = sig[sig.index("(") + 1:sig.rindex(")")]
    kinds = []
    depth = 0
    token = ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            token = token.strip()
            if "[" in token:
                dtype = np.dtype(token[:token.index("[")])
                ndim = token[token.index("["):].count(",") + 1
                if not token.endswith("::1]"):
                    raise ValueError(f"not a C-contiguous array type: {token}")
                kinds.append((ndim, dtype, dtype.itemsize))
            else:
                kinds.append({"int32": "i", "int64": "q", "float32": "f",
                              "float64": "d"}[token])
            token = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        token += ch
    return kinds


class Launcher:
    """Launches of one compiled kernel (a numba ``_Kernel``) whose arguments
    have the kinds of :func:`_parse`."""

    def __init__(self, dispatcher, kernel, kinds):
        from cuda.bindings import driver as binding

        self._binding = binding
        self._dispatcher = dispatcher
        self._kernel = kernel
        self._kinds = kinds
        fmt, sizes = "=", []
        for k in kinds:
            if k.__class__ is tuple:
                ndim = k[0]
                fmt += "q" * (5 + 2 * ndim)
                sizes += [8] * (5 + 2 * ndim)
            else:
                size = struct.calcsize("=" + k)
                fmt += k + "x" * (8 - size)  # each parameter in its own 8 bytes
                sizes.append(size)
        self._struct = struct.Struct(fmt)
        self._sizes = tuple(sizes)
        self._funcs = {}  # {id(context): (context, CUfunction, programmatic launches)}
        self._no_pdl = False  # a programmatic launch was refused: none again
        self._tls = threading.local()

    def _buffers(self):
        """This thread's parameter buffer and the address of its array of
        pointers to each parameter (``kernelParams``), made once: the driver
        copies the parameters when the launch is enqueued, so the next launch
        may overwrite them."""
        try:
            return self._tls.buffers
        except AttributeError:
            buf = ctypes.create_string_buffer(self._struct.size)
            base = ctypes.addressof(buf)
            ptrs = (ctypes.c_void_p * len(self._sizes))(
                *[base + 8 * i for i in range(len(self._sizes))])
            self._tls.buffers = (buf, ctypes.addressof(ptrs), ptrs)
            return self._tls.buffers

    @property
    def sizes(self):
        """The byte sizes of the kernel parameters the arguments are packed into."""
        return self._sizes

    def check(self):
        """Raise unless the driver's parameter sizes of the compiled kernel
        are :attr:`sizes` (compiles and loads the kernel)."""
        info = self._kernel._codelibrary.get_cufunc().kernel.arguments_info
        sizes = tuple(int(p[1]) if isinstance(p, tuple) else int(p.size) for p in info)
        if sizes != self._sizes:
            raise RuntimeError(f"kernel parameters {sizes} are not the packed {self._sizes}")

    def _function(self):
        from numba.cuda.cudadrv import devices

        ctx = devices.get_context()
        entry = self._funcs.get(id(ctx))
        if entry is None or entry[0] is not ctx:
            cufunc = self._kernel._codelibrary.get_cufunc()
            handle = cufunc.handle
            binding = self._binding
            if isinstance(handle, binding.CUkernel):
                err, fn = binding.cuKernelGetFunction(handle)
                if err != binding.CUresult.CUDA_SUCCESS:
                    raise RuntimeError(f"cuKernelGetFunction failed: {err!r}")
            else:
                fn = binding.CUfunction(int(handle))
            entry = self._funcs[id(ctx)] = (ctx, fn, ctx.device.compute_capability >= (9, 0))
        return entry

    def pack(self, args):
        """The flattened parameter values of ``args``, or None when an array
        is not C-contiguous of the signature's dtype (numba's dispatcher
        then launches it, compiling for its layout)."""
        vals = []
        add = vals.extend
        for k, a in zip(self._kinds, args):
            if k.__class__ is tuple:
                ndim, dtype, item = k
                shape = a.shape
                if a.dtype != dtype or len(shape) != ndim:
                    return None
                strides = a.strides
                # C-contiguous (numpy's rule: extents of 1 have any stride)
                expect = item
                for n, s in zip(shape[::-1], strides[::-1]):
                    if n != 1 and s != expect:
                        return None
                    expect *= n
                mem = a.gpu_data  # None for an empty array
                add((0, 0, a.size, item, 0 if mem is None else int(mem.device_pointer)))
                add(shape)
                add(strides)
            else:
                vals.append(a)
        return vals

    def _config(self, pdl, cluster):
        """This thread's ``CUlaunchConfig`` with the programmatic stream
        serialization attribute (``pdl``) and the cluster dimension
        attribute (``cluster`` blocks a cluster, 0: none), made once for
        each pair; its grid, block and stream are set at each launch."""
        try:
            configs = self._tls.configs
        except AttributeError:
            configs = self._tls.configs = {}
        cfg = configs.get((pdl, cluster))
        if cfg is None:
            cfg = configs[pdl, cluster] = launch_config(self._binding, pdl, cluster)
        return cfg

    def __call__(self, grid, block, stream, args, pdl=False, cooperative=False, cluster=0):
        vals = self.pack(args)
        if vals is None:
            if cooperative or cluster:  # (numba's dispatcher would launch it plainly)
                what = "cooperative launch" if cooperative else "launch in clusters"
                raise ValueError(f"a {what} needs C-contiguous arrays of the kernel's dtype")
            self._dispatcher[grid, block, stream](*args)
            return
        buf, params, _ = self._buffers()
        self._struct.pack_into(buf, 0, *vals)
        gx, gy, gz = (grid + (1, 1))[:3] if isinstance(grid, tuple) else (int(grid), 1, 1)
        bx, by, bz = (block + (1, 1))[:3] if isinstance(block, tuple) else (int(block), 1, 1)
        handle = stream.handle if stream else 0
        _, fn, programmatic = self._function()
        err = None
        pdl = pdl and programmatic and PDL and not self._no_pdl
        if cooperative:  # every block resident at once, or an error
            err, = self._binding.cuLaunchCooperativeKernel(fn, gx, gy, gz, bx, by, bz, 0,
                                                           handle, params)
        elif pdl or cluster:
            b = self._binding
            if cluster and not programmatic:
                raise ValueError(f"a launch in clusters needs compute capability 9.0 or "
                                 f"later: {self._kernel} was asked for clusters of {cluster}")
            cfg = self._config(pdl, int(cluster))
            cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = gx, gy, gz
            cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = bx, by, bz
            cfg.hStream = handle if isinstance(handle, b.CUstream) else b.CUstream(
                int(getattr(handle, "value", handle) or 0))
            err, = b.cuLaunchKernelEx(cfg, fn, params, 0)
            if err != b.CUresult.CUDA_SUCCESS and not cluster:
                self._no_pdl = True  # (refused, not run: a plain launch from now on)
                err = None
        if err is None:
            err, = self._binding.cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, 0,
                                                handle, params, 0)
        if err != self._binding.CUresult.CUDA_SUCCESS:
            from numba.cuda.cudadrv.driver import CudaAPIError

            raise CudaAPIError(err, f"cuLaunchKernel of {self._kernel} failed: {err!r}")

    def max_active_clusters(self, cluster, threads):
        """How many clusters of ``cluster`` blocks of ``threads`` threads
        fit on the current GPU at once (``cuOccupancyMaxActiveClusters``;
        0 where none does, or the GPU has no clusters)."""
        _, fn, programmatic = self._function()
        if not programmatic:
            return 0
        cfg = launch_config(self._binding, False, int(cluster))
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = int(cluster), 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = int(threads), 1, 1
        err, n = self._binding.cuOccupancyMaxActiveClusters(fn, cfg)
        return int(n) if err == self._binding.CUresult.CUDA_SUCCESS else 0

    def __repr__(self):
        return f"<Launcher {self._dispatcher.py_func.__name__} {len(self._sizes)} parameters>"


def launch_config(binding, pdl, cluster):
    """A ``CUlaunchConfig`` (no dynamic shared memory) with the
    programmatic stream serialization attribute where ``pdl`` and the
    cluster dimension attribute (``cluster`` x 1 x 1 blocks) where
    ``cluster``; its grid, block and stream to be set."""
    attrs = []
    if pdl:
        attr = binding.CUlaunchAttribute()
        attr.id = binding.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        attrs.append(attr)
    if cluster:
        attr = binding.CUlaunchAttribute()
        attr.id = binding.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        dim = attr.value.clusterDim
        dim.x, dim.y, dim.z = int(cluster), 1, 1
        attrs.append(attr)
    cfg = binding.CUlaunchConfig()
    cfg.attrs = attrs
    cfg.numAttrs = len(attrs)
    cfg.sharedMemBytes = 0
    return cfg


def launcher(dispatcher, dtype, kind):
    """The :class:`Launcher` of ``dispatcher`` compiled for the ``kind``
    signature of ``dtype`` (names; :func:`numba_ln.gpu._kernels.signatures`),
    or None where launches must go through numba (see the module's text).
    Compiles the kernel if needed."""
    if not _enabled():
        return None
    key = (id(dispatcher), dtype, kind)
    entry = _LAUNCHERS.get(key)
    if entry is None:
        with _LOCK:
            entry = _LAUNCHERS.get(key)
            if entry is None:
                sig = K.signatures(dtype)[kind]
                try:
                    fast = Launcher(dispatcher, dispatcher.compile(sig), _parse(sig))
                    fast.check()
                except Exception:  # noqa: BLE001 -- numba/cuda.core internals moved
                    fast = None
                entry = _LAUNCHERS[key] = (dispatcher, fast)
    return entry[1]


def launch(dispatcher, dtype, kind, grid, block, stream, *args, pdl=False, cooperative=False,
           cluster=0):
    """``dispatcher[grid, block, stream](*args)``, through a
    :class:`Launcher` where one is available; ``pdl``: a programmatic
    dependent launch where the GPU has them (see the module's text);
    ``cooperative``: by ``cuLaunchCooperativeKernel`` (all blocks resident
    at once, or an error); ``cluster``: in clusters of that many blocks (see
    the module's text).  The last two need a :class:`Launcher`."""
    fast = launcher(dispatcher, dtype, kind)
    if fast is None:
        if cooperative or cluster:
            what = "cooperative launch" if cooperative else "launch in clusters"
            raise RuntimeError(f"a {what} of {kind} needs numba_ln's own launcher, "
                               "which is off here (NUMBA_LN_FAST_LAUNCH=0, the simulator, or "
                               "numba-cuda internals it needs are missing)")
        dispatcher[grid, block, stream](*args)
    else:
        fast(grid, block, stream, args, pdl, cooperative, cluster)
