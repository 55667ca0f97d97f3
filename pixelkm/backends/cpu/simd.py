"""Explicit SIMD for the CPU kernels: the nearest-center scan of a group of points written as LLVM vector IR.

The scan of a group of points against every center is the whole cost of a small-``d`` pass (K multiply-adds per
point and feature). Written as a numba loop over a tile of points inside a loop over the centers, LLVM vectorises
the points but keeps the nearest distance and index of every point in memory: each (point, center) pair then costs
a load, a compare and two masked stores besides the arithmetic. :func:`scan_group` instead holds one vector of
``W`` points in registers for the whole loop over the centers: per center, ``d`` subtractions from the broadcast
coordinates (memory operands), one multiply, ``d - 1`` fused multiply-adds, a compare, a minimum, a masked index
move and the increment of the index vector; nothing goes to memory.

Measured (in-process A/B, min of 9, the 2-core AMD EPYC Zen 4 with AVX-512, 2^20 RGB pixels, one thread, the whole
small-d pass, against 7ead86b's numba loop in the same process, load 0.7-0.8): K = 256 39.5 -> 27.2 ms; K = 64
14.4 -> 10.3; K = 8 7.10 -> 5.36; two threads, K = 256 20.2 -> 14.1. Tried:
2 or 4 vectors per group (points held longer, centers loaded less often: 1.05-1.26x slower than one, as LLVM then
broadcasts into registers instead of folding the broadcast into the subtraction); the center index broadcast from an
integer register per center instead of a vector increment (1.15x slower at K = 256); without fused multiply-adds
(1.2x slower); the expansion ``|c|^2 - 2 x.c`` with a tracked second-nearest for a recheck of close calls (10%
faster at K = 256 before the rechecks, and inexact: not taken).

:func:`scan_pruned` scans, for a group of points, only the centers that can be nearest to some point of the
group's bounding box (the same results; from K = 64 on the small-d pass). :func:`dist_chunks` serves Yinyang's bounds
of large ``d``: the distances of ONE point to a few chunks of ``W`` centers (the centers as lanes, their
accumulators advancing together), the arithmetic below.

:func:`expansion_tile` is the large-``d`` pass's ranking: a GEMM microkernel (12 rows x 2 vectors of centers in 24
accumulators on AVX-512) that takes each row's nearest two from the registers, so no product tile goes to memory
before its argmin. Measured (n = 100,000, d = 128, K = 1024 float32, the 2-core Zen 4, 2026-12-03 09:20 UTC, load 0.3,
in one process): 138 ms per pass at 2 threads (190 GFLOP/s) against 152 ms for the single-threaded OpenBLAS tiles
that numba's ``np.dot`` gave the workers alone, 197 ms with the argmin sweep after them; 1 thread 268 against
301 / 392. 3 x 8, 4 x 6 and 1 x 24 accumulators measured within that run's noise (131-154 ms). It reads the rows of
X in place; :func:`rows_sq_norms` gives their ``|x|^2`` for the rounding bound.

These intrinsics are compiled into the kernels of :mod:`.kernels`, whose disk cache numba keys on the text of
kernels.py alone: kernels.py records this file's SHA-256 (``SIMD_SHA256``; a test checks it), so that a change here
changes that text too.

Arithmetic (the same in every kernel of the backend, so that every path finds the same distances bit for bit):
``dd = u_0 * u_0``, then ``dd = fma(u_f, u_f, dd)`` for the next features in order, with ``u_f = x_f - c_f`` in the
compute dtype; :func:`fma` is the same operation for scalar code (and for loops that LLVM vectorises itself). On a
host without fused multiply-add instructions both round the product and the sum separately instead (LLVM would
otherwise call a slow library routine): the results then differ from an FMA host's in the last bits, as any two
machines' may, and are still the same across this backend's paths.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _host_vectors() -> tuple[int, int, bool]:
    """(bits of the widest vector register, how many such registers, whether there are fused multiply-add
    instructions) of this host."""
    feats = llvm.get_host_cpu_features()
    if llvm.get_process_triple().startswith(("aarch64", "arm64")):
        return 128, 32, True
    if feats.get("avx512f"):
        return 512, 32, bool(feats.get("fma"))
    if feats.get("avx"):
        return 256, 16, bool(feats.get("fma"))
    return 128, 16, False


VECTOR_BITS, VECTOR_REGS, HAS_FMA = _host_vectors()
#: points per group at most (one vector of float32): the callers' tiles are multiples of it
GROUP_MAX = VECTOR_BITS // 32
#: :func:`expansion_tile`: chunks of ``W`` centers per panel, and rows per call; their product is the number of
#: accumulators held in vector registers (24 of 32, or 10 of 16), which leaves registers for the panel's chunks and
#: a broadcast row value
PANEL_CHUNKS = 2
PANEL_ROWS = 12 if VECTOR_REGS >= 32 else 5


def group_lanes(itemsize: int) -> int:
    """Points per :func:`scan_group` call: the lanes of one vector register of ``itemsize``-byte floats."""
    return VECTOR_BITS // (8 * itemsize)


def _fma_function(module: ir.Module, ty: ir.Type, name: str) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ty, [ty, ty, ty]), name)
    return fn


def _fused(builder: ir.IRBuilder, a, b, c, ty: ir.Type, suffix: str):
    """``a * b + c`` rounded once (llvm.fma) on an FMA host, else rounded after the product and after the sum."""
    if not HAS_FMA:
        return builder.fadd(builder.fmul(a, b), c)
    return builder.call(_fma_function(builder.module, ty, "llvm.fma." + suffix), [a, b, c])


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` in the floating type of the three (the arithmetic of :func:`scan_group`, for scalar code)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        ty = context.get_value_type(signature.args[0])
        return _fused(builder, *args, ty, "f32" if signature.args[0] == types.float32 else "f64")

    return a(a, b, c), codegen


@intrinsic
def group_points(typingctx, xt, dims):
    """The points of one :func:`scan_group` call for the tile ``xt`` and ``len(dims)`` features (a constant)."""
    if not (
        isinstance(xt, types.Array) and xt.dtype in (types.float32, types.float64) and isinstance(dims, types.UniTuple)
    ):
        return None
    W = group_lanes(xt.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, W)

    return types.intp(xt, dims), codegen


def _tile_args(xt, C, best, bidx, p0, dims) -> bool:
    """The argument types both scans take (the tile, the centers, the outputs, the group's start, ``dims``)."""
    return (
        isinstance(xt, types.Array)
        and xt.ndim == 2
        and xt.layout == "C"
        and xt.dtype in (types.float32, types.float64)
        and isinstance(C, types.Array)
        and C.ndim == 2
        and C.layout == "C"
        and C.dtype == xt.dtype
        and isinstance(best, types.Array)
        and best.dtype == xt.dtype
        and isinstance(bidx, types.Array)
        and bidx.dtype == types.int32
        and isinstance(p0, types.Integer)
        and isinstance(dims, types.UniTuple)
    )


class _Emit:
    """IR helpers of the scans: vectors of ``W`` lanes of the compute dtype (``f64`` or float32) and of int32."""

    def __init__(self, context, builder, f64: bool):
        self.b = builder
        self.W = W = group_lanes(8 if f64 else 4)
        self.lt = ir.DoubleType() if f64 else ir.FloatType()
        self.intp = context.get_value_type(types.intp)
        self.i32 = ir.IntType(32)
        self.vt = ir.VectorType(self.lt, W)
        self.vi = ir.VectorType(self.i32, W)
        self.suffix = f"v{W}f{64 if f64 else 32}"
        self.align = 8 if f64 else 4
        self.zeros = ir.Constant(self.vi, [ir.Constant(self.i32, 0)] * W)
        self.ones = ir.Constant(self.vi, [ir.Constant(self.i32, 1)] * W)
        self.inf = self.fsplat(float("inf"))

    def const(self, n: int):
        return ir.Constant(self.intp, n)

    def fsplat(self, value: float):
        return ir.Constant(self.vt, [ir.Constant(self.lt, value)] * self.W)

    def at(self, base, off, ty):
        """A pointer to ``ty`` at element ``off`` of ``base``."""
        return self.b.bitcast(self.b.gep(base, [off]), ty.as_pointer())

    def load(self, base, off):
        """The vector of ``W`` compute-dtype values at element ``off`` of ``base``."""
        return self.b.load(self.at(base, off, self.vt), align=self.align)

    def splat(self, val, ty):
        b = self.b
        v = b.insert_element(ir.Constant(ty, ir.Undefined), val, ir.Constant(self.i32, 0))
        return b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), self.zeros)

    def call(self, name: str, ret: ir.Type, args: list):
        fn = self.b.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.b.module, ir.FunctionType(ret, [a.type for a in args]), name)
        return self.b.call(fn, args)

    def minimum(self, a, bv):
        return self.b.select(self.b.fcmp_ordered("<", a, bv), a, bv)

    def maximum(self, a, bv):
        return self.b.select(self.b.fcmp_ordered(">", a, bv), a, bv)

    def across(self, v, pick):
        """``pick`` (:meth:`minimum` or :meth:`maximum`) over the lanes of ``v``, in every lane: log2(W) shuffles
        (a butterfly), no scalar chain."""
        step = self.W // 2
        while step:
            perm = ir.Constant(self.vi, [ir.Constant(self.i32, lane ^ step) for lane in range(self.W)])
            v = pick(v, self.b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), perm))
            step //= 2
        return v

    def sq_dist(self, xs, cb):
        """The squared distance of every lane to the center ``cb`` (one vector per feature): ``u_0 * u_0``, then
        fused multiply-adds, in feature order (the arithmetic of every kernel of the backend)."""
        b = self.b
        u = b.fsub(xs[0], cb[0])
        dd = b.fmul(u, u)
        for f in range(1, len(xs)):
            u = b.fsub(xs[f], cb[f])
            dd = _fused(b, u, u, dd, self.vt, self.suffix)
        return dd

    def loop(self, stop, step: int, inits: list, body):
        """``for i in range(0, stop, step)`` with loop-carried values (their start values ``inits``): ``body(i,
        values)`` emits one iteration and returns the next values; returns the values after the loop."""
        b = self.b
        fn = b.function
        head, blk, tail = (fn.append_basic_block(f"loop.{s}") for s in ("head", "body", "tail"))
        entry = b.block
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(self.intp)
        i.add_incoming(self.const(0), entry)
        phis = [b.phi(v.type) for v in inits]
        for phi, v in zip(phis, inits):
            phi.add_incoming(v, entry)
        b.cbranch(b.icmp_signed("<", i, stop), blk, tail)
        b.position_at_end(blk)
        nxt = body(i, phis)
        inext = b.add(i, self.const(step))
        latch = b.block
        b.branch(head)
        i.add_incoming(inext, latch)
        for phi, v in zip(phis, nxt):
            phi.add_incoming(v, latch)
        b.position_at_end(tail)
        return phis

    def group(self, context, ty, arr, p0v, D: int):
        """The group's coordinates from the transposed tile: one vector per feature, and the tile's row length."""
        X = context.make_array(ty)(context, self.b, arr)
        ncol = self.b.extract_value(X.shape, 1)
        return [self.load(X.data, self.b.add(self.b.mul(self.const(f), ncol), p0v)) for f in range(D)]


@intrinsic
def scan_group(typingctx, xt, p0, C, best, sec, bidx, dims, mode):
    """The nearest center of every point of one group: points ``p0 .. p0 + W - 1`` of the transposed tile ``xt``
    (``d`` rows, C order, in the compute dtype) against every row of ``C`` (k, d), C order, same dtype. Writes
    ``best[p]`` (the smallest squared distance), ``bidx[p]`` (its center, int32; the lowest index on ties: strict
    <) and, when ``mode`` is 1, ``sec[p]`` (the second smallest: a center farther than the nearest, or at the same
    distance with a higher index), for the same ``p``. ``d`` is ``len(dims)`` (a tuple of that length: a
    compile-time constant). ``W`` is :func:`group_points`'s; the caller keeps ``p0 + W`` within ``xt``'s row.
    """
    if not (
        _tile_args(xt, C, best, bidx, p0, dims)
        and isinstance(sec, types.Array)
        and sec.dtype == xt.dtype
        and isinstance(mode, types.Integer)
    ):
        return None
    D = dims.count

    def codegen(context, builder, signature, args):
        xa, p0v, ca, ba, sa, ia, _dims, modev = args
        aty = signature.args
        e = _Emit(context, builder, xt.dtype == types.float64)
        Cm = context.make_array(aty[2])(context, builder, ca)
        out_best, out_sec, out_idx = (
            context.make_array(aty[i])(context, builder, v).data for i, v in ((3, ba), (4, sa), (5, ia))
        )
        k = builder.extract_value(Cm.shape, 0)
        p0v = context.cast(builder, p0v, aty[1], types.intp)
        xs = e.group(context, aty[0], xa, p0v, D)  # loaded once, held in registers
        fn = builder.function
        done = fn.append_basic_block("scan.done")
        bb = {m: fn.append_basic_block(f"scan.mode{m}") for m in (0, 1)}
        builder.cbranch(builder.icmp_signed("==", modev, ir.Constant(modev.type, 1)), bb[1], bb[0])
        for second in (False, True):
            builder.position_at_end(bb[int(second)])

            # the loop's state: the center index in every lane (a vector increment, not a broadcast from an
            # integer register per center, which costs 1.15x at K = 256), nearest, index, second-nearest
            def body(j, state, second=second):
                jv, bst, idx = state[:3]
                row = builder.mul(j, e.const(D))
                cb = [
                    e.splat(builder.load(builder.gep(Cm.data, [builder.add(row, e.const(f))])), e.vt) for f in range(D)
                ]
                dd = e.sq_dist(xs, cb)
                closer = builder.fcmp_ordered("<", dd, bst)
                nxt = [builder.add(jv, e.ones), builder.select(closer, dd, bst), builder.select(closer, jv, idx)]
                if second:
                    snd = state[3]
                    nearer2 = builder.fcmp_ordered("<", dd, snd)
                    nxt.append(builder.select(closer, bst, builder.select(nearer2, dd, snd)))
                return nxt

            inits = [e.zeros, e.inf, e.zeros] + ([e.inf] if second else [])
            state = e.loop(k, 1, inits, body)
            builder.store(state[1], e.at(out_best, p0v, e.vt), align=e.align)
            builder.store(state[2], e.at(out_idx, p0v, e.vi), align=4)
            if second:
                builder.store(state[3], e.at(out_sec, p0v, e.vt), align=e.align)
            builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return types.void(xt, p0, C, best, sec, bidx, dims, mode), codegen


#: the relative margin by which a center's lower bound must exceed the group's upper bound to be skipped (the
#: rounding of either is below (d + 2) * 2^-24 relative in float32: orders of magnitude inside it)
PRUNE_MARGIN = 2.0**-10
#: plus this absolute margin, which covers rounding in the subnormal range (2^-149 or 2^-1074 per operation)
PRUNE_TINY = {4: 2.0**-120, 8: 2.0**-1000}


@intrinsic
def scan_pruned(typingctx, xt, p0, CT, C, cand, scratch, best, bidx, dims):
    """:func:`scan_group` (mode 0: nearest only) for the same group, scanning only the centers that can be nearest
    to some point of the group's bounding box; the same ``best`` and ``bidx`` bit for bit.

    The box ``[lo, hi]`` of the group's points (per feature, over its ``W`` lanes: a partial group's zero padding
    only widens it); for every center, ``maxd`` = the largest squared distance from the box, ``mind`` = the
    smallest. Every point of the box is within ``U = min maxd`` of some center, so a center with ``mind >
    U (1 + PRUNE_MARGIN) + PRUNE_TINY`` is strictly farther than that one from every point, in exact arithmetic and
    in the compute dtype's (the margin exceeds the rounding of the bounds and of the scanned distances): it can
    neither be nearest nor tie. The others, kept in index order in ``cand`` (a compressed store of the indices), are
    scanned as :func:`scan_group` scans every center, so the lowest index still wins ties.

    ``CT`` is ``C`` transposed, (d, kp) C order, with ``kp`` a multiple of ``W`` and the columns ``k .. kp - 1``
    +inf (padding: never a bound, and masked out by index); ``cand`` int32 and ``scratch`` (compute dtype) scratch
    of length ``kp``. Finite inputs: at least the center that gives ``U`` is kept. Cost per group: one sweep over the
    centers for both bounds (``W`` centers per vector; the lower bounds stored), one over the stored lower bounds
    for the candidates, and the scan of the candidates.
    """
    if not (
        _tile_args(xt, C, best, bidx, p0, dims)
        and isinstance(CT, types.Array)
        and CT.ndim == 2
        and CT.layout == "C"
        and CT.dtype == xt.dtype
        and isinstance(cand, types.Array)
        and cand.dtype == types.int32
        and isinstance(scratch, types.Array)
        and scratch.dtype == xt.dtype
    ):
        return None
    D = dims.count
    f64 = xt.dtype == types.float64
    tiny = PRUNE_TINY[8 if f64 else 4]

    def codegen(context, builder, signature, args):
        xa, p0v, cta, ca, cda, sca, ba, ia, _dims = args
        aty = signature.args
        e = _Emit(context, builder, f64)
        W, vt, vi, b = e.W, e.vt, e.vi, builder
        CTm = context.make_array(aty[2])(context, b, cta)
        Cm = context.make_array(aty[3])(context, b, ca)
        cands = context.make_array(aty[4])(context, b, cda).data
        scratch = context.make_array(aty[5])(context, b, sca).data
        out_best = context.make_array(aty[6])(context, b, ba).data
        out_idx = context.make_array(aty[7])(context, b, ia).data
        kp = b.extract_value(CTm.shape, 1)
        k = b.extract_value(Cm.shape, 0)
        p0v = context.cast(b, p0v, aty[1], types.intp)
        xs = e.group(context, aty[0], xa, p0v, D)
        lo = [e.across(x, e.minimum) for x in xs]
        hi = [e.across(x, e.maximum) for x in xs]

        def centers(c0):
            return [e.load(CTm.data, b.add(b.mul(e.const(f), kp), c0)) for f in range(D)]

        kv = e.splat(b.trunc(k, e.i32), vi)
        iota = ir.Constant(vi, [ir.Constant(e.i32, i) for i in range(W)])
        step = ir.Constant(vi, [ir.Constant(e.i32, W)] * W)
        zero = e.fsplat(0.0)

        def bounds(c0, state):  # per center: the smallest maxd so far (lane by lane), and mind into scratch
            maxd = mind = None
            for f, c in enumerate(centers(c0)):
                a, z = b.fsub(c, lo[f]), b.fsub(hi[f], c)  # c beyond hi: z < 0; below lo: a < 0
                far = e.maximum(a, z)
                near = e.minimum(e.minimum(a, z), zero)  # minus the distance to the box (or 0), squared below
                maxd = b.fmul(far, far) if maxd is None else _fused(b, far, far, maxd, vt, e.suffix)
                mind = b.fmul(near, near) if mind is None else _fused(b, near, near, mind, vt, e.suffix)
            b.store(mind, e.at(scratch, c0, vt), align=e.align)
            return [e.minimum(maxd, state[0])]  # (the padding's maxd is +inf: never below)

        (uv,) = e.loop(kp, W, [e.inf], bounds)
        thr = b.fadd(b.fmul(e.across(uv, e.minimum), e.fsplat(1.0 + PRUNE_MARGIN)), e.fsplat(tiny))

        def keep(c0, state):  # the candidates of this chunk of W centers, appended to cand in index order
            m, civ = state
            dd = b.load(e.at(scratch, c0, vt), align=e.align)
            mask = b.and_(b.fcmp_ordered("<=", dd, thr), b.icmp_signed("<", civ, kv))
            packed = e.call(
                "llvm.experimental.vector.compress." + f"v{W}i32", vi, [civ, mask, ir.Constant(vi, ir.Undefined)]
            )
            b.store(packed, e.at(cands, m, vi), align=4)
            got = e.call(f"llvm.vector.reduce.add.v{W}i32", e.i32, [b.zext(mask, vi)])
            return [b.add(m, b.sext(got, e.intp)), b.add(civ, step)]

        m, _ = e.loop(kp, W, [e.const(0), iota], keep)

        def scan(t, state):  # the candidates in order, their index broadcast from cand (a load, no remap after)
            bst, idx = state
            at = b.gep(cands, [t])
            row = b.mul(b.sext(b.load(at), e.intp), e.const(D))
            cb = [e.splat(b.load(b.gep(Cm.data, [b.add(row, e.const(f))])), vt) for f in range(D)]
            dd = e.sq_dist(xs, cb)
            closer = b.fcmp_ordered("<", dd, bst)
            return [b.select(closer, dd, bst), b.select(closer, e.splat(b.load(at), vi), idx)]

        bst, idx = e.loop(m, 1, [e.inf, e.zeros], scan)
        b.store(bst, e.at(out_best, p0v, vt), align=e.align)
        b.store(idx, e.at(out_idx, p0v, vi), align=4)
        return m

    return types.intp(xt, p0, CT, C, cand, scratch, best, bidx, dims), codegen


#: chunks of centers per :func:`dist_chunks` call: independent accumulators, so that the fused multiply-adds of
#: one chunk wait for the previous feature's no longer than the others take (the latency of an FMA is 4 cycles)
CHUNKS = 4


@intrinsic
def dist_chunks(typingctx, CT, offs, x, mins, lanes):
    """The nearest two of each of :data:`CHUNKS` chunks of ``W`` centers to ONE point ``x`` (d,): the chunks are
    the columns ``offs[q] .. offs[q] + W - 1`` (int64 ``offs``) of ``CT``, the centers transposed ((d, kp), C order,
    ``W`` the lanes of one vector of the compute dtype, :func:`group_lanes`). Writes ``mins[2 q]`` (the smallest
    squared distance of chunk q), ``lanes[q]`` (the first lane that has it) and ``mins[2 q + 1]`` (the smallest of the
    other lanes). The chunks' accumulators advance together, feature after feature, with the arithmetic of every
    kernel (``u_0^2``, then ``fma(u_f, u_f, dd)``); a chunk given twice costs its time twice, the same values."""
    floats = (types.float32, types.float64)
    ok = isinstance(CT, types.Array) and CT.ndim == 2 and CT.layout == "C" and CT.dtype in floats
    if not (ok and all(isinstance(a, types.Array) for a in (offs, x, mins, lanes))):
        return None
    if not (offs.dtype == lanes.dtype == types.int64 and x.dtype == mins.dtype == CT.dtype):
        return None
    f64 = CT.dtype == types.float64

    def codegen(context, builder, signature, args):
        cta, oa, xa, ma, la = args
        aty = signature.args
        e = _Emit(context, builder, f64)
        b, vt, W = builder, e.vt, e.W
        CTm = context.make_array(aty[0])(context, b, cta)
        om = context.make_array(aty[1])(context, b, oa)
        xm = context.make_array(aty[2])(context, b, xa)
        out = context.make_array(aty[3])(context, b, ma).data
        out_lane = context.make_array(aty[4])(context, b, la).data
        kp = b.extract_value(CTm.shape, 1)
        d = b.extract_value(CTm.shape, 0)
        offs = [b.load(b.gep(om.data, [e.const(q)])) for q in range(CHUNKS)]

        def square(f, q, acc=None):
            xv = e.splat(b.load(b.gep(xm.data, [f])), vt)
            u = b.fsub(xv, e.load(CTm.data, b.add(b.mul(f, kp), offs[q])))
            return b.fmul(u, u) if acc is None else _fused(b, u, u, acc, vt, e.suffix)

        first = [square(e.const(0), q) for q in range(CHUNKS)]
        last = e.loop(
            b.sub(d, e.const(1)),
            1,
            first,
            lambda f, accs: [square(b.add(f, e.const(1)), q, accs[q]) for q in range(CHUNKS)],
        )
        iota = ir.Constant(e.vi, [ir.Constant(e.i32, i) for i in range(W)])
        mask_t = ir.IntType(W)
        zero32 = ir.Constant(e.i32, 0)
        for q, acc in enumerate(last):
            low = e.across(acc, e.minimum)  # the smallest, in every lane
            hit = b.bitcast(b.fcmp_ordered("==", acc, low), mask_t)
            lane = e.call(f"llvm.cttz.i{W}", mask_t, [hit, ir.Constant(ir.IntType(1), 1)])
            lane32 = b.trunc(lane, e.i32) if W > 32 else b.zext(lane, e.i32) if W < 32 else lane
            rest = b.select(b.icmp_signed("==", iota, e.splat(lane32, e.vi)), e.inf, acc)
            second = e.across(rest, e.minimum)
            b.store(b.extract_element(low, zero32), b.gep(out, [e.const(2 * q)]))
            b.store(b.extract_element(second, zero32), b.gep(out, [e.const(2 * q + 1)]))
            b.store(b.sext(lane32, e.intp), b.gep(out_lane, [e.const(q)]))
        return context.get_dummy_value()

    return types.void(CT, offs, x, mins, lanes), codegen


@intrinsic
def expansion_tile(typingctx, X, t0, CP, csq, G, m1, i1, m2, chunks):
    """The expansion ``v_j = |c_j|^2 - 2 x.c_j`` of the :data:`PANEL_ROWS` rows ``t0, t0 + 1, ...`` of ``X`` against
    every center, with each row's nearest two kept lane by lane: a register-blocked GEMM whose products never leave
    the registers before their minimum is taken.

    ``X`` (n, d) in the compute dtype, read in place (rows past the last are read as the last row: their results
    are not to be read); ``CP`` (panels, d, PW): the centers in panels of ``PW = NC * W`` (``W`` the lanes of one
    vector of the compute dtype; ``NC = len(chunks)``, a tuple whose length is a compile-time constant:
    :data:`PANEL_CHUNKS`, or 1 for at most ``W`` centers, whose second chunk would be padding only), transposed
    within a panel (``CP[q, f, c]`` = feature f of center ``q * PW + c``; padding centers are zero); ``csq``
    (panels * PW,) their squared norms (padding +inf, so that a padding ``v`` is +inf). All C order, one compute
    dtype.

    Per panel, ``PANEL_ROWS * NC`` accumulators advance feature after feature (per feature: the panel's chunks
    loaded, each row's value broadcast from its place in ``X``, one fused multiply-add per accumulator), then ``v =
    fma(acc, -2, |c|^2)`` (the rounding of ``|c|^2 - 2 g`` with ``g`` the dot product: ``2 g`` is exact) is stored
    in ``G[p, j]`` ((PANEL_ROWS, panels * PW)) and folded into row p's lanes: ``m1[p * W + l]`` the smallest ``v``
    of the centers ``j = l (mod W)``, ``i1`` its center (int32, the lowest on ties: strict <), ``m2`` the second
    smallest of those lanes (a tie with m1 included). The dot products are summed in feature order with one rounding
    per step, so ``|v_j - exact|`` is within the bound of any order (``rounding_slack``).

    The rows are read where they lie (the tile's rows stay in L1 across the features and the panels): a transposed
    copy of each tile, which this read before 2026-12-03, cost as much as the multiply-adds at few centers.
    """
    floats = (types.float32, types.float64)
    arrays = (X, CP, csq, G, m1, i1, m2)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays):
        return None
    if not (isinstance(chunks, types.UniTuple) and 1 <= len(chunks) <= PANEL_CHUNKS and isinstance(t0, types.Integer)):
        return None
    if not (X.dtype in floats and X.ndim == 2 and CP.ndim == 3 and G.ndim == 2 and i1.dtype == types.int32):
        return None
    if not all(a.dtype == X.dtype for a in (CP, csq, G, m1, m2)):
        return None
    f64 = X.dtype == types.float64
    R, NC = PANEL_ROWS, len(chunks)

    def codegen(context, builder, signature, args):
        aty = signature.args
        Xm = context.make_array(aty[0])(context, builder, args[0])
        start = context.cast(builder, args[1], aty[1], types.intp)
        CPm, csm, Gm, M1m, I1m, M2m = (context.make_array(t)(context, builder, v) for t, v in zip(aty[2:8], args[2:8]))
        e = _Emit(context, builder, f64)
        b, vt, vi, W = builder, e.vt, e.vi, e.W
        M1, I1, M2 = M1m.data, I1m.data, M2m.data
        n = b.extract_value(Xm.shape, 0)
        d = b.extract_value(Xm.shape, 1)
        last = b.sub(n, e.const(1))
        rows = []  # a pointer to each row of the tile (the last row of X for rows past it)
        for p in range(R):
            r = b.add(start, e.const(p))
            rows.append(b.gep(Xm.data, [b.mul(b.select(b.icmp_signed("<", r, n), r, last), d)]))
        panels = b.extract_value(CPm.shape, 0)
        kp = b.extract_value(Gm.shape, 1)
        PW = NC * W
        for p in range(R):
            o = e.const(p * W)
            b.store(e.inf, e.at(M1, o, vt), align=e.align)
            b.store(e.inf, e.at(M2, o, vt), align=e.align)
            b.store(e.zeros, e.at(I1, o, vi), align=4)
        minus2 = e.fsplat(-2.0)
        lanes = [ir.Constant(vi, [ir.Constant(e.i32, c * W + i) for i in range(W)]) for c in range(NC)]

        def panel(q, _state):
            base = b.mul(q, b.mul(d, e.const(PW)))

            def feature(f, accs):
                row = b.add(base, b.mul(f, e.const(PW)))
                cv = [e.load(CPm.data, b.add(row, e.const(c * W))) for c in range(NC)]
                nxt = []
                for p in range(R):
                    xs = e.splat(b.load(b.gep(rows[p], [f])), vt)
                    nxt.extend(_fused(b, xs, cv[c], accs[p * NC + c], vt, e.suffix) for c in range(NC))
                return nxt

            accs = e.loop(d, 1, [e.fsplat(0.0)] * (R * NC), feature)
            j0 = b.mul(q, e.const(PW))
            norms = [e.load(csm.data, b.add(j0, e.const(c * W))) for c in range(NC)]
            jv = e.splat(b.trunc(j0, e.i32), vi)
            for p in range(R):
                o = e.const(p * W)
                s1 = b.load(e.at(M1, o, vt), align=e.align)
                s2 = b.load(e.at(M2, o, vt), align=e.align)
                si = b.load(e.at(I1, o, vi), align=4)
                grow = b.add(b.mul(e.const(p), kp), j0)
                for c in range(NC):
                    v = _fused(b, accs[p * NC + c], minus2, norms[c], vt, e.suffix)
                    b.store(v, e.at(Gm.data, b.add(grow, e.const(c * W)), vt), align=e.align)
                    closer = b.fcmp_ordered("<", v, s1)
                    s2 = b.select(closer, s1, e.minimum(v, s2))
                    s1 = b.select(closer, v, s1)
                    si = b.select(closer, b.add(jv, lanes[c]), si)
                b.store(s1, e.at(M1, o, vt), align=e.align)
                b.store(s2, e.at(M2, o, vt), align=e.align)
                b.store(si, e.at(I1, o, vi), align=4)
            return []

        e.loop(panels, 1, [], panel)
        return context.get_dummy_value()

    return types.void(X, t0, CP, csq, G, m1, i1, m2, chunks), codegen


@intrinsic
def rows_sq_norms(typingctx, X, t0, t1, xsq):
    """``xsq[p]`` = ``|x|^2`` in float64 of row ``t0 + p`` of ``X`` (n, d) for ``p < t1 - t0`` (the rounding bound
    of :func:`expansion_tile`'s callers): per row, the features ``W`` at a time squared and added lane by lane into
    ``W`` float64 sums, the lanes summed by a fixed halving tree, then the last ``d mod W`` features added one by one.
    A fixed order (the same bits run to run, whatever the threads), and no dependent chain of ``d`` additions: 0.3
    cycles a feature (0.8 ms of a pass at d = 100, n = 200,000, 2 threads) against 1.1 with the rows of a transposed
    tile as lanes, which kept the sums in memory."""
    if not (
        isinstance(X, types.Array)
        and X.layout == "C"
        and X.ndim == 2
        and X.dtype in (types.float32, types.float64)
        and isinstance(xsq, types.Array)
        and xsq.dtype == types.float64
        and isinstance(t0, types.Integer)
        and isinstance(t1, types.Integer)
    ):
        return None
    f64 = X.dtype == types.float64

    def codegen(context, builder, signature, args):
        aty = signature.args
        Xm = context.make_array(aty[0])(context, builder, args[0])
        Sm = context.make_array(aty[3])(context, builder, args[3])
        start = context.cast(builder, args[1], aty[1], types.intp)
        stop = context.cast(builder, args[2], aty[2], types.intp)
        e = _Emit(context, builder, f64)
        b, W = builder, e.W
        dt = ir.DoubleType()
        v64 = ir.VectorType(dt, W)
        d = b.extract_value(Xm.shape, 1)
        full = b.mul(b.sdiv(d, e.const(W)), e.const(W))
        undef = ir.Constant(v64, ir.Undefined)

        def half(v, lo, step):
            idx = [ir.Constant(e.i32, lo + i) for i in range(step)] + [ir.Constant(e.i32, 0)] * (W - step)
            return b.shuffle_vector(v, undef, ir.Constant(e.vi, idx))

        def row(p, _state):
            ptr = b.gep(Xm.data, [b.mul(b.add(start, p), d)])

            def chunk(f, accs):
                x = b.load(e.at(ptr, f, e.vt), align=e.align)
                x = x if f64 else b.fpext(x, v64)
                return [b.fadd(accs[0], b.fmul(x, x))]

            acc = e.loop(full, W, [ir.Constant(v64, [ir.Constant(dt, 0.0)] * W)], chunk)[0]
            step = W // 2
            while step:
                acc = b.fadd(half(acc, 0, step), half(acc, step, step))
                step //= 2
            s = b.extract_element(acc, ir.Constant(e.i32, 0))

            def tail(j, ss):
                x = b.load(b.gep(ptr, [b.add(full, j)]))
                x = x if f64 else b.fpext(x, dt)
                return [b.fadd(ss[0], b.fmul(x, x))]

            s = e.loop(b.sub(d, full), 1, [s], tail)[0]
            b.store(s, b.gep(Sm.data, [p]))
            return []

        e.loop(b.sub(stop, start), 1, [], row)
        return context.get_dummy_value()

    return types.void(X, t0, t1, xsq), codegen


@intrinsic
def lanes_nearest_two(typingctx, m1, i1, m2, p):
    """Row ``p``'s nearest two from the lanes :func:`expansion_tile` leaves (``m1``, ``i1``, ``m2`` at ``p * W``):
    the smallest value, its center (the lowest index on ties) and the second smallest (a tie with the smallest
    included), as ``(value, int32 center, value)``. Three butterflies over one vector each (no branch, no scalar
    chain): the smallest ``b1``; the lowest center among the lanes that hold ``b1``; the smallest of ``m2`` and of
    ``m1`` in the lanes of other centers. The lanes hold distinct centers (lane ``l`` the centers ``j = l mod W``)
    or none (``m1`` +inf)."""
    floats = (types.float32, types.float64)
    if not (
        all(isinstance(a, types.Array) and a.layout == "C" and a.ndim == 1 for a in (m1, i1, m2))
        and m1.dtype in floats
        and m2.dtype == m1.dtype
        and i1.dtype == types.int32
        and isinstance(p, types.Integer)
    ):
        return None
    f64 = m1.dtype == types.float64
    ret = types.Tuple((m1.dtype, types.int32, m1.dtype))

    def codegen(context, builder, signature, args):
        aty = signature.args
        M1m, I1m, M2m = (context.make_array(t)(context, builder, v) for t, v in zip(aty[:3], args[:3]))
        e = _Emit(context, builder, f64)
        b, vt, vi, W = builder, e.vt, e.vi, e.W
        o = b.mul(context.cast(builder, args[3], aty[3], types.intp), e.const(W))
        s1 = b.load(e.at(M1m.data, o, vt), align=e.align)
        si = b.load(e.at(I1m.data, o, vi), align=4)
        s2 = b.load(e.at(M2m.data, o, vt), align=e.align)
        b1 = e.across(s1, e.minimum)
        big = ir.Constant(vi, [ir.Constant(e.i32, 2**31 - 1)] * W)
        held = b.select(b.fcmp_ordered("==", s1, b1), si, big)
        j1 = e.across(held, lambda u, v: b.select(b.icmp_signed("<", u, v), u, v))
        other = b.select(b.icmp_signed("!=", si, j1), s1, e.inf)
        b2 = e.across(e.minimum(s2, other), e.minimum)
        lane0 = ir.Constant(e.i32, 0)
        vals = [b.extract_element(v, lane0) for v in (b1, j1, b2)]
        return context.make_tuple(builder, ret, vals)

    return ret(m1, i1, m2, p), codegen
