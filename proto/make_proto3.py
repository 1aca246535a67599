"""Writes proto/onnx.proto3 from the onnx Python package's onnx.in.proto, exactly as ONNX's own
gen_proto.py derives its proto3 variant (ONNX-ML sections dropped). Then run
`cargo run --manifest-path tools/gen-onnx-proto/Cargo.toml` to regenerate the Rust code."""
import os
import sys

import onnx

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.dirname(onnx.__file__)
sys.path.insert(0, src)
import gen_proto as g  # noqa: E402

lines = open(os.path.join(src, "onnx.in.proto"), encoding="utf-8").read().splitlines()
lines = g.convert_to_proto3(g.process_package_name(g.process_ifs(lines, False), "onnx"))
with open(os.path.join(here, "onnx.proto3"), "w", encoding="utf-8") as f:
    f.write(f"// Generated from onnx {onnx.__version__} onnx.in.proto by proto/make_proto3.py\n")
    f.write("\n".join(lines) + "\n")
