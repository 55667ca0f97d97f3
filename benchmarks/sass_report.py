"""Compile the Triton kernels for sm_90 (H100/H200) without a GPU and read what the compiler made of them.

    python benchmarks/sass_report.py          # the roofline cases: a table
    python benchmarks/sass_report.py --json   # the same as a JSON list
    python benchmarks/sass_report.py --all    # every launch configuration (kernels/assign_update.all_configs)

Per case: the launch configuration the launcher picks for the case's Lloyd step (labels in the narrowest dtype,
no distances), compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)``; registers and shared memory
from ``cuobjdump --dump-resource-usage`` (it ships in the triton wheel); spills: the stack frame of a cubin
whose SASS stores to or loads from local memory (STL/LDL); SASS instructions per (point, center) in the innermost
loop of the distances (instructions between a backward branch and its target, divided by the pairs one thread
handles per trip).

The estimate is a model, not a measurement: the instructions of the hot loops at the issue rate of an H100 SXM
(132 SMs x 4 schedulers x 1.98 GHz, 32 lanes: 33.4 T lane-instructions/s), the tensor-core time of the large-d
product at its dense data-sheet rate, the bytes at the HBM rate, and for k > 16 on small d the atomic adds at an
assumed one per clock per SM, whichever is largest (they overlap), plus the passes after the kernel (sort and
sorted sums for large d). For a loop over feature tiles (d above the resident limit) SASS per pair is the inner
loop times the number of tiles. Floors: bytes / 3.35 TB/s (H100 SXM HBM3; the
H200 has 4.8 TB/s) and 2 n k d operations / 66.9 TFLOP/s (float32 non-tensor, H100 SXM: 132 SMs x 128 lanes x 2
x 1.98 GHz) for small d, / 494.7 TFLOP/s (TF32 dense), 989 (float16 dense) or 165 (3-pass TF32) for large d.
Targets are those of issue 13 (image cases) and flash-kmeans' measured H200 times (embeddings).

Exit status 1 when a configuration spills or exceeds an sm_90 limit (tests/test_sass.py runs ``--all``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, never the interpreter (before triton is imported)

import torch  # noqa: E402
import triton  # noqa: E402
from pixelkm._kernels import assign_update as au  # noqa: E402
from pixelkm._kernels import cluster_sums as cs  # noqa: E402
from pixelkm._kernels import small_d, sorted_sums  # noqa: E402

TARGET = ("cuda", 90, 32)
HBM = 3.35e12  # bytes/s, H100 SXM (H200: 4.8e12)
ISSUE = 132 * 4 * 32 * 1.98e9  # lane-instructions/s, H100 SXM
FP32 = 132 * 128 * 2 * 1.98e9  # 66.9 TFLOP/s
ATOMICS = 132 * 1.98e9  # atomic adds/s into L2: an assumption (one per clock per SM), to be checked on a GPU
TENSOR = {"tf32": 494.7e12, "tf32x3": 494.7e12 / 3, "fp16": 989.4e12, "ieee": FP32}
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
TL = {
    torch.uint8: "u8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}

IMAGE_N = 4096 * 4096
EMB_N = 1 << 20
#: (case, n, d, k, dtype, target ms)
CASES = [
    ("image 4096x4096 uint8 RGB K=8", IMAGE_N, 3, 8, torch.uint8, 0.15),
    ("image 4096x4096 uint8 RGB K=64", IMAGE_N, 3, 64, torch.uint8, 0.4),
    ("image 4096x4096 uint8 RGB K=256", IMAGE_N, 3, 256, torch.uint8, 1.5),
    ("x,y,R,G,B 4096x4096 float32 K=64", IMAGE_N, 5, 64, torch.float32, None),
    ("embeddings n=2^20 d=128 float32 K=1024", EMB_N, 128, 1024, torch.float32, 1.93),
    ("embeddings n=2^20 d=128 bfloat16 K=1024", EMB_N, 128, 1024, torch.bfloat16, 1.32),
]


def backend_missing() -> str | None:
    """Why sm_90 code cannot be compiled here, or None when it can."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError as exc:
        return f"triton's nvidia backend is not installed ({exc})"
    for tool in ("cuobjdump",):
        if not (BIN / tool).exists():
            return f"{BIN / tool} is missing from the triton wheel"
    return None


def compile_sm90(fn, types: dict, constexprs: dict, num_warps: int, num_stages: int = 3):
    """triton.compile of ``fn`` for sm_90: ``types`` maps each runtime argument to a type string."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {name: ("constexpr" if name in constexprs else types[name]) for name in fn.arg_names}
    src = ASTSource(fn, sig, constexprs=constexprs)
    opts = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    return triton.compile(src, target=GPUTarget(*TARGET), options=opts)


def resources(ck) -> dict:
    """Registers, shared bytes (static + dynamic), spill bytes and the SASS text of a compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(ck.asm["cubin"])
        usage = subprocess.run(
            [BIN / "cuobjdump", "--dump-resource-usage", cubin], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([BIN / "cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True).stdout
    regs = int(re.search(r"REG:(\d+)", usage).group(1))
    static_shared = int(re.search(r"SHARED:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    # spills: the stack frame of a cubin that stores to / loads from local memory (what runs, not a re-run of ptxas)
    spills = stack if re.search(r"\b(STL|LDL)\b", sass) else 0
    return {
        "registers": regs,
        "shared_bytes": static_shared + int(ck.metadata.shared),
        "spill_bytes": spills,
        "stack_bytes": stack,
        "sass": sass,
    }


def loops(sass: str) -> list[list[str]]:
    """The loops of a SASS listing (cuobjdump -sass): the opcodes between each backward branch and its target."""
    instr = []
    for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass):
        instr.append((int(m.group(1), 16), m.group(2).strip()))
    out = []
    for addr, text in instr:
        br = re.search(r"\bBRA\s+(?:`\()?0x([0-9a-f]+)", text)
        if br and int(br.group(1), 16) <= addr:
            lo = int(br.group(1), 16)
            out.append([t for a, t in instr if lo <= a <= addr])
    return out


def hot_loop(sass: str, marker: str) -> list[str]:
    """The smallest loop that contains ``marker`` (a regular expression of opcodes such as FSETP or HGMMA)."""
    found = [lp for lp in loops(sass) if any(re.search(rf"(^|\s){marker}", t) for t in lp)]
    if not found:
        raise RuntimeError(f"no loop with {marker} in the SASS")
    return min(found, key=len)


# ----------------------------------------------------------------------------------------- variants


def small_variant(dtype, d, k, *, labels=torch.uint8, write_dist=False, weighted=True):
    """Compile the small-d kernel as the launcher configures it for (dtype, d, k)."""
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    cfg = au.small_config(d, k, cdt)
    update = 1 if k <= small_d.REDUCE_MAX_K else 2
    slot = torch.float64 if update == 1 else cdt
    types = {
        "x_ptr": "*" + TL[dtype],
        "c_ptr": "*" + TL[cdt],
        "w_ptr": "*" + TL[cdt],
        "labels_ptr": "*" + TL[labels],
        "min_sq_ptr": "*" + TL[cdt],
        "part_ptr": "*" + TL[slot],
        **{a: "i32" for a in ("n", "k", "k_pad", "blocks_per_prog", "stride_xb", "stride_xn", "stride_xd")},
        "stride_wb": "i32",
        "stride_wn": "i32",
    }
    const = {
        "D": d,
        "BLOCK_N": cfg["block_n"],
        "UNROLL": cfg["unroll"],
        "HAS_W": weighted,
        "WRITE_LABELS": True,
        "WRITE_DIST": write_dist,
        "UPDATE": update,
    }
    ck = compile_sm90(small_d._small_d_kernel, types, const, cfg["num_warps"])
    res = resources(ck)
    loop = hot_loop(res["sass"], "FSETP" if cdt == torch.float32 else "DSETP")
    points = cfg["block_n"] // (32 * cfg["num_warps"])  # per thread
    res["sass_per_pair"] = len(loop) / (points * cfg["unroll"])
    if update == 1:  # the loop over clusters of the update: reductions (shuffles) and atomics, per point
        res["update_per_pair"] = len(hot_loop(res["sass"], "SHFL")) / points
    else:  # the atomic adds of the update: d + 1 per point, and their address arithmetic
        res["update_per_point"] = (
            len([t for t in res["sass"].splitlines() if re.search(r"\bRED|\bATOM", t)]) * 3 / points
        )
    res["config"] = {**cfg, "update": update}
    return res


def large_variant(dtype, d, k, precision):
    """Compile the large-d kernel as the launcher configures it (with the distances written: the heaviest)."""
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    cfg = au.large_config(d, k, cdt, precision, dtype)
    odt = au.PRECISIONS[precision][0] or cdt
    types = {
        "x_ptr": "*" + TL[dtype],
        "c_ptr": "*" + TL[odt],
        "cx_ptr": "*" + TL[cdt],
        "csq_ptr": "*" + TL[cdt],
        "shift_ptr": "*" + TL[cdt],
        "labels_ptr": "*i32",
        "min_sq_ptr": "*" + TL[cdt],
        **{a: "i32" for a in ("n", "k", "d", "stride_xb", "stride_xn", "stride_xd")},
    }
    const = {
        "BLOCK_N": cfg["block_n"],
        "BLOCK_K": cfg["block_k"],
        "BLOCK_D": cfg["block_d"],
        "RESIDENT": cfg["resident"],
        "WRITE_DIST": True,
        "DOT_PRECISION": au.PRECISIONS[precision][1],
        "DIST_D": au.DIST_TILE,
    }
    ck = compile_sm90(au._large_d_kernel, types, const, cfg["num_warps"], cfg["num_stages"])
    res = resources(ck)
    mma = "DMMA" if cdt == torch.float64 else ("(HMMA|HGMMA)" if precision != "ieee" else "FFMA")
    loop = hot_loop(res["sass"], mma)  # with RESIDENT the loop over centers; else the inner loop over features
    trips = 1 if cfg["resident"] else triton.cdiv(d, cfg["block_d"])
    res["sass_per_pair"] = len(loop) * trips / (cfg["block_n"] * cfg["block_k"] / (32 * cfg["num_warps"]))
    res["config"] = cfg
    return res


def helper_variants():
    """The two passes after the large-d kernel: sorted sums (fast) and cluster sums (deterministic)."""
    out = []
    for dtype in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        wdt = torch.float64 if dtype == torch.float64 else torch.float32
        types = {
            "x_ptr": "*" + TL[dtype],
            "keys_ptr": "*i32",
            "order_ptr": "*i64",
            "w_ptr": "*" + TL[wdt],
            "sums_ptr": "*fp64",
            "counts_ptr": "*fp64",
            **{a: "i32" for a in ("total", "n", "d", "stride_xb", "stride_xn", "stride_xd", "stride_wb", "stride_wn")},
        }
        block_d = 32 if dtype == torch.float64 else 64  # as sorted_sums() picks for d >= 64
        const = {"PIECE": sorted_sums.PIECE, "BLOCK_D": block_d, "HAS_W": True, "F64": dtype == torch.float64}
        ck = compile_sm90(sorted_sums._sorted_sums_kernel, types, const, 4)
        out.append((f"sorted_sums {TL[dtype]}", resources(ck)))
        types = {
            "x_ptr": "*" + TL[dtype],
            "labels_ptr": "*i32",
            "w_ptr": "*" + TL[wdt],
            "psums_ptr": "*fp64",
            "pcounts_ptr": "*fp64",
            **{a: "i32" for a in ("n", "k", "d", "rows_per_prog", "stride_xb", "stride_xn", "stride_xd")},
            "stride_wb": "i32",
            "stride_wn": "i32",
        }
        const = {"BLOCK_N": 64, "BLOCK_K": 32, "BLOCK_D": 16, "HAS_W": True, "F64": dtype == torch.float64}
        ck = compile_sm90(cs._cluster_sums_kernel, types, const, 4)
        out.append((f"cluster_sums {TL[dtype]}", resources(ck)))
    return out


# ----------------------------------------------------------------------------------------- the model


def case_row(case, n, d, k, dtype, target):
    """Compile one roofline case and model its time per Lloyd step."""
    label_dt = torch.uint8 if k <= 256 else torch.int16
    if d <= small_d.D_MAX:
        res = small_variant(dtype, d, k, labels=label_dt, weighted=False)
        bytes_ = n * d * dtype.itemsize + n * label_dt.itemsize
        floor = max(bytes_ / HBM, 2 * n * k * d / FP32)
        if res["config"]["update"] == 1:  # per point: the cluster loop of the update, k trips
            update, atomics = k * res["update_per_pair"], 0.0
        else:  # per point: d + 1 atomic adds (x3 for their addresses), at an assumed 1 per clock per SM
            update, atomics = res["update_per_point"], n * (d + 1) / ATOMICS
        issue = n * (k * res["sass_per_pair"] + update) / ISSUE
        estimate = max(issue, bytes_ / HBM, atomics)
    else:
        prec = au.default_precision(dtype)
        res = large_variant(dtype, d, k, prec)
        bytes_ = n * d * dtype.itemsize + n * label_dt.itemsize
        rate = TENSOR[prec]
        floor = max(bytes_ / HBM, 2 * n * k * d / rate)
        issue = n * k * res["sass_per_pair"] / ISSUE
        mma = 2 * n * k * d / rate
        # after the kernel: sort n int32 keys with their index (~4 passes of 12 bytes), gather X in sorted order
        after = (4 * n * 12 + n * d * dtype.itemsize + n * 12) / HBM
        estimate = max(issue, mma, bytes_ / HBM) + after
    return {
        "case": case,
        "triton": triton.__version__,
        "k": k,
        "d": d,
        "dtype": str(dtype).replace("torch.", ""),
        "registers": res["registers"],
        "spill_bytes": res["spill_bytes"],
        "shared_bytes": res["shared_bytes"],
        "sass_per_pair": round(res["sass_per_pair"], 2),
        "estimate_ms": round(estimate * 1e3, 4),
        "floor_ms": round(floor * 1e3, 4),
        "target_ms": target,
    }


def all_rows() -> list[dict]:
    """Every launch configuration of all_configs() plus the helper kernels, with the sm_90 limits checked."""
    rows = []
    for cfg in au.all_configs():
        dt = cfg["dtype"]
        if cfg["path"] == "small":
            res = small_variant(dt, cfg["d"], cfg["k"], labels=torch.int64, write_dist=True)
            name = f"small {TL[dt]} d={cfg['d']} k={cfg['k']}"
        else:
            res = large_variant(dt, cfg["d"], cfg["k"], cfg["precision"])
            name = f"large {TL[dt]} d={cfg['d']} k={cfg['k']} {cfg['precision']}"
        rows.append((name, res))
    rows += helper_variants()
    out = []
    for name, res in rows:
        ok = res["spill_bytes"] == 0 and res["shared_bytes"] <= au.SM90_SHARED_BYTES and res["registers"] <= 255
        out.append(
            {
                "case": name,
                "triton": triton.__version__,
                "registers": res["registers"],
                "spill_bytes": res["spill_bytes"],
                "shared_bytes": res["shared_bytes"],
                "sass_per_pair": round(res["sass_per_pair"], 2) if "sass_per_pair" in res else None,
                "ok": ok,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="every launch configuration, with the sm_90 limits")
    args = p.parse_args(argv)
    why = backend_missing()
    if why:
        print(f"sass_report: cannot compile for sm_90: {why}", file=sys.stderr)
        return 2
    rows = all_rows() if args.all else [case_row(*c) for c in CASES]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        keys = list(rows[0])
        print(" | ".join(keys))
        for r in rows:
            print(" | ".join(str(r[kk]) for kk in keys))
    bad = [r for r in rows if r["spill_bytes"] or r["shared_bytes"] > au.SM90_SHARED_BYTES or r["registers"] > 255]
    for r in bad:
        print(f"sass_report: {r['case']} breaks an sm_90 limit or spills: {r}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
