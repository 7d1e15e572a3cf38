#!/usr/bin/env python3
"""Safetensors reference fixture for chatforge-model's checkpoint I/O (TESTING.md families 7, 8).

Writes crates/model/tests/fixtures/dtypes.safetensors with the reference `safetensors` library
(torch backend), one small tensor per dtype our loader supports, with values a test can write
down by hand:

    f32   (2, 3)  float32   [0, 1.5, -2, 1e-3, inf, -0.0]
    f64   (3,)    float64   [1/3, -1e300, 2**-1074]
    bf16  (2, 2)  bfloat16  [1, -2.5, 3.140625, 65280]        (all exact in bf16)
    f16   (4,)    float16   [0.5, -65504, 6.1035156e-05, 1]   (max and smallest normal)
    u32   (2,)    uint32    [0, 4294967295]
    i64   (1, 2)  int64     [-9223372036854775808, 42]
    scalar ()     float32   7.25
    empty (0, 4)  float32   no elements
    __metadata__  {"source": "scripts/reference/safetensors_fixture.py"}

The reference library lays data out by dtype alignment and name, not by name alone, so the Rust
test checks values (bitwise), not byte equality with our writer, for this file.

Run from the repository root: python3 scripts/reference/safetensors_fixture.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path("crates/model/tests/fixtures/dtypes.safetensors")


def main() -> None:
    tensors = {
        "f32": torch.tensor([[0.0, 1.5, -2.0], [1e-3, float("inf"), -0.0]], dtype=torch.float32),
        "f64": torch.tensor([1.0 / 3.0, -1e300, 2.0**-1074], dtype=torch.float64),
        "bf16": torch.tensor([[1.0, -2.5], [3.140625, 65280.0]], dtype=torch.bfloat16),
        "f16": torch.tensor([0.5, -65504.0, 6.103515625e-05, 1.0], dtype=torch.float16),
        "u32": torch.tensor([0, 4294967295], dtype=torch.uint32),
        "i64": torch.tensor([[-(2**63), 42]], dtype=torch.int64),
        "scalar": torch.tensor(7.25, dtype=torch.float32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"source": "scripts/reference/safetensors_fixture.py"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
