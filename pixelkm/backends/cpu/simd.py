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


def _host_vectors() -> tuple[int, bool]:
    """(bits of the widest vector register, whether there are fused multiply-add instructions) of this host."""
    feats = llvm.get_host_cpu_features()
    if llvm.get_process_triple().startswith(("aarch64", "arm64")):
        return 128, True
    if feats.get("avx512f"):
        return 512, bool(feats.get("fma"))
    if feats.get("avx"):
        return 256, bool(feats.get("fma"))
    return 128, False


VECTOR_BITS, HAS_FMA = _host_vectors()
#: points per group at most (one vector of float32): the callers' tiles are multiples of it
GROUP_MAX = VECTOR_BITS // 32


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
        and isinstance(sec, types.Array)
        and sec.dtype == xt.dtype
        and isinstance(bidx, types.Array)
        and bidx.dtype == types.int32
        and isinstance(p0, types.Integer)
        and isinstance(mode, types.Integer)
        and isinstance(dims, types.UniTuple)
    ):
        return None
    D = dims.count
    f64 = xt.dtype == types.float64
    W = group_lanes(8 if f64 else 4)

    def codegen(context, builder, signature, args):
        xa, p0v, ca, ba, sa, ia, _dims, modev = args
        aty = signature.args
        lt = context.get_value_type(aty[0].dtype)
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        vt = ir.VectorType(lt, W)
        vi = ir.VectorType(i32, W)
        suffix = f"v{W}f{64 if f64 else 32}"
        align = 8 if f64 else 4
        X = context.make_array(aty[0])(context, builder, xa)
        Cm = context.make_array(aty[2])(context, builder, ca)
        out_best, out_sec, out_idx = (
            context.make_array(aty[i])(context, builder, v).data for i, v in ((3, ba), (4, sa), (5, ia))
        )
        ncol = builder.extract_value(X.shape, 1)
        k = builder.extract_value(Cm.shape, 0)
        p0v = context.cast(builder, p0v, aty[1], types.intp)

        def at(base, off, ty):
            return builder.bitcast(builder.gep(base, [off]), ty.as_pointer())

        def const(n):
            return ir.Constant(intp, n)

        def splat(val, ty):
            v = builder.insert_element(ir.Constant(ty, ir.Undefined), val, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(ty, ir.Undefined), zeros)

        zeros = ir.Constant(vi, [ir.Constant(i32, 0)] * W)
        ones = ir.Constant(vi, [ir.Constant(i32, 1)] * W)
        inf = ir.Constant(vt, [ir.Constant(lt, float("inf"))] * W)
        # the group's coordinates: one vector per feature, loaded once
        xs = [
            builder.load(at(X.data, builder.add(builder.mul(const(f), ncol), p0v), vt), align=align) for f in range(D)
        ]
        fn = builder.function
        done = fn.append_basic_block("scan.done")
        bb = {m: fn.append_basic_block(f"scan.mode{m}") for m in (0, 1)}
        builder.cbranch(builder.icmp_signed("==", modev, ir.Constant(modev.type, 1)), bb[1], bb[0])
        for second in (False, True):
            builder.position_at_end(bb[int(second)])
            head = fn.append_basic_block("scan.head")
            body = fn.append_basic_block("scan.body")
            tail = fn.append_basic_block("scan.tail")
            entry = builder.block
            builder.branch(head)
            builder.position_at_end(head)
            # the loop's state: the center j (as an integer, and in every lane: a vector increment, not a broadcast
            # from an integer register per center, which costs 1.15x at K = 256), nearest, index, second-nearest
            j = builder.phi(intp)
            jv = builder.phi(vi)
            bst = builder.phi(vt)
            idx = builder.phi(vi)
            snd = builder.phi(vt) if second else None
            for phi, start in ((j, const(0)), (jv, zeros), (bst, inf), (idx, zeros), (snd, inf)):
                if phi is not None:
                    phi.add_incoming(start, entry)
            builder.cbranch(builder.icmp_signed("<", j, k), body, tail)
            builder.position_at_end(body)
            row = builder.mul(j, const(D))
            cb = [splat(builder.load(builder.gep(Cm.data, [builder.add(row, const(f))])), vt) for f in range(D)]
            u = builder.fsub(xs[0], cb[0])
            dd = builder.fmul(u, u)
            for f in range(1, D):
                u = builder.fsub(xs[f], cb[f])
                dd = _fused(builder, u, u, dd, vt, suffix)
            closer = builder.fcmp_ordered("<", dd, bst)
            steps = [(j, builder.add(j, const(1))), (jv, builder.add(jv, ones))]
            if second:
                nearer2 = builder.fcmp_ordered("<", dd, snd)
                steps.append((snd, builder.select(closer, bst, builder.select(nearer2, dd, snd))))
            steps += [(bst, builder.select(closer, dd, bst)), (idx, builder.select(closer, jv, idx))]
            latch = builder.block
            builder.branch(head)
            for phi, nxt in steps:
                phi.add_incoming(nxt, latch)
            builder.position_at_end(tail)
            builder.store(bst, at(out_best, p0v, vt), align=align)
            builder.store(idx, at(out_idx, p0v, vi), align=4)
            if second:
                builder.store(snd, at(out_sec, p0v, vt), align=align)
            builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return types.void(xt, p0, C, best, sec, bidx, dims, mode), codegen
