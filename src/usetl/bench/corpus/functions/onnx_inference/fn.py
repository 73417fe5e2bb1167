"""ML inference with onnxruntime: a small model built with onnx's helpers, saved to /tmp,
loaded into an InferenceSession and run on a batch."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def model(rng):
    w = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Softmax", ["z"], ["y"], axis=1)],
        "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    onnx.save(model(rng), "/tmp/corpus-model.onnx")
    onnx.checker.check_model("/tmp/corpus-model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = event["threads"]
    session = ort.InferenceSession("/tmp/corpus-model.onnx", options,
                                   providers=["CPUExecutionProvider"])
    x = rng.standard_normal((event["batch"], 16)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    return {"shape": list(y.shape), "rows_sum_to_one": bool(np.allclose(y.sum(axis=1), 1,
                                                                        atol=1e-5)),
            "classes": np.bincount(y.argmax(axis=1), minlength=4).tolist()}
