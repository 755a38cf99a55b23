"""Runs an ONNX model with onnxruntime on images given as raw little-endian float32.

Usage: python3 scripts/onnx_predict.py MODEL.onnx IMAGES.f32 N C H W LOGITS.f32
Writes the logits [N, classes] as raw little-endian float32. Used by the tests and the benchmark
to check sgsc's ONNX export against the pure-Rust runtime.
"""
import sys
import time

import numpy as np
import onnxruntime


def main() -> None:
    model, images, n, c, h, w, out = sys.argv[1:8]
    shape = (int(n), int(c), int(h), int(w))
    inputs = np.fromfile(images, dtype="<f4").reshape(shape)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": inputs})[0]
    logits.astype("<f4").tofile(out)
    if len(sys.argv) > 8:
        # Throughput: median images per second at each batch size given after the outputs.
        for batch in map(int, sys.argv[8:]):
            x = inputs[:batch] if batch <= len(inputs) else np.resize(inputs, (batch, *shape[1:]))
            times = []
            for _ in range(23):
                start = time.perf_counter()
                session.run(["logits"], {"input": x})
                times.append(time.perf_counter() - start)
            median = sorted(times[3:])[10]
            print(f"onnxruntime (its ONNX export, median of 20) batch {batch}: {batch / median:.0f} images/s")


if __name__ == "__main__":
    main()
