"""experiments/_common.py: the benchmarks' HLO scanner (also the tests' ``hlo_copies``
fixture), paired ratios, argparse types, git state and JSON writing."""

import argparse
import json

import pytest

from experiments import _common as c

HLO = """HloModule jit_f, entry_computation_layout={(f32[1024,4]{1,0}, u8[16]{0})->(f32[1024,4]{1,0}, u8[16]{0})}

%fused_computation (param_0: f32[1024,4]) -> f32[1024,4] {
  %param_0 = f32[1024,4]{1,0} parameter(0)
  ROOT %copy.9 = f32[1024,4]{0,1} copy(f32[1024,4]{1,0} %param_0)
}

%body (p: (s32[], f32[1024,4])) -> (s32[], f32[1024,4]) {
  %p = (s32[], f32[1024,4]{1,0}) parameter(0)
  %gte = f32[1024,4]{1,0} get-tuple-element(%p), index=1
  %copy.2 = f32[1024,4]{1,0} copy(%gte)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[1024,4]{1,0}) tuple(%i, %copy.2)
}

%cond (p.1: (s32[], f32[1024,4])) -> pred[] {
  %p.1 = (s32[], f32[1024,4]{1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%p.1), index=0
  %c = s32[] constant(3)
  ROOT %lt = pred[] compare(%i.1, %c), direction=LT
}

ENTRY %main (x: f32[1024,4], y: u8[16]) -> (f32[1024,4], u8[16]) {
  %x = f32[1024,4]{1,0} parameter(0)
  %y = u8[16]{0} parameter(1)
  %copy = f32[1024,4]{1,0} copy(%x)
  %cs = (u8[16]{0}, u8[16]{0}, u32[]) copy-start(%y)
  %cd = u8[16]{0} copy-done(%cs)
  %fusion.1 = f32[1024,4]{0,1} fusion(%copy), kind=kLoop, calls=%fused_computation
  %zero = s32[] constant(0)
  %init = (s32[], f32[1024,4]{1,0}) tuple(%zero, %fusion.1)
  %while = (s32[], f32[1024,4]{1,0}) while(%init), condition=%cond, body=%body
  %out = f32[1024,4]{1,0} get-tuple-element(%while), index=1
  ROOT %r = (f32[1024,4]{1,0}, u8[16]{0}) tuple(%out, %cd)
}
"""


def test_hlo_copies_where_sizes_and_filters():
    kernel_level = c.hlo_copies(HLO)  # copies outside fusions, in text order
    assert [(x.where, x.nbytes, x.shape) for x in kernel_level] == [
        ("loop", 16384, "f32[1024,4]"),
        ("entry", 16384, "f32[1024,4]"),
    ]
    everywhere = c.hlo_copies(HLO, nested=True, ops=("copy", "copy-start"))
    assert [x.where for x in everywhere] == ["nested", "loop", "entry", "entry"]
    start = everywhere[-1]
    assert start.nbytes is None and start.shape is None and start.type.startswith("(u8[16]")
    assert start.line == "%cs = (u8[16]{0}, u8[16]{0}, u32[]) copy-start(%y)"
    assert [
        x.line
        for x in c.hlo_copies(HLO, shapes=[("u8", (16,))], nested=True, ops=("copy", "copy-start"))
    ] == [start.line]
    assert c.hlo_copies(HLO, shapes=[("f32", (1024, 5))], nested=True) == []
    assert c.hlo_copies(HLO, min_bytes=16385) == []


def test_hlo_copies_fixture_is_the_shared_scanner(hlo_copies):
    lines = hlo_copies(HLO, [("f32", (1024, 4))])
    assert lines == [
        "ROOT %copy.9 = f32[1024,4]{0,1} copy(f32[1024,4]{1,0} %param_0)",
        "%copy.2 = f32[1024,4]{1,0} copy(%gte)",
        "%copy = f32[1024,4]{1,0} copy(%x)",
    ]
    assert hlo_copies(HLO, [("u8", (16,))]) == [
        "%cs = (u8[16]{0}, u8[16]{0}, u32[]) copy-start(%y)"
    ]


def test_hlo_summary_counts_kernels_outside_fusions():
    s = c.hlo_summary(HLO)
    assert s["ops"] == {
        "compare": 1,
        "copy": 2,
        "copy-done": 1,
        "copy-start": 1,
        "fusion": 1,
        "while": 1,
    }
    assert s["kernels"] == 7 and s["fusions"] == {"fusion": 1}
    assert s["largest_copy_bytes_entry"] == s["largest_copy_bytes_in_loops"] == 16384


def test_paired_ratios_and_time_stats():
    num, den = [2.0, 3.0, 30.0], [1.0, 2.0, 10.0]
    assert c.paired_ratio(num, den) == 2.0  # the median of 2, 1.5, 3
    assert c.best_of({"a": [1.0, 5.0], "b": [2.0, 4.0]}, ("a", "b")) == [1.0, 4.0]
    assert c.best_of({"a": [1.0]}, "a") == [1.0]
    assert c.time_stats([1e-6, 3e-6, 2e-6]) == {
        "min_us": 1.0,
        "median_us": 2.0,
        "rounds_us": [1.0, 3.0, 2.0],
    }


def test_argparse_types():
    assert c.ints("1e4, 65536,10_000") == (10_000, 65536, 10_000)
    assert c.ints("0,1") == (0, 1)
    assert c.positive_ints("1,8") == (1, 8)
    assert c.shapes("4,10x10x4") == ((4,), (10, 10, 4))
    for fn, text in (
        (c.ints, "1.5"),
        (c.positive_ints, "0,8"),
        (c.positive_ints, ","),
        (c.shapes, "4xa"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


def test_git_state_and_write_json(tmp_path):
    state = c.git_state(short=True)
    assert set(state) == {"memjax_commit", "memjax_dirty", "memjax_uncommitted"}
    assert isinstance(state["memjax_uncommitted"], list)
    logged = []
    out = c.write_json({"a": 1, "wall_seconds": 2.5}, tmp_path / "x" / "doc.json", logged.append)
    assert json.loads(out.read_text()) == {"a": 1, "wall_seconds": 2.5}
    assert logged == [f"\nwrote {out} (2.5 s)"]
