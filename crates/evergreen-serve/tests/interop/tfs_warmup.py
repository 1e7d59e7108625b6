"""Writes a SavedModel warm-up file the way TF Serving documents it (saved_model_warmup.md):
TensorFlow's own TFRecord writer, one tensorflow_serving PredictionLog per record.

Usage: tfs_warmup.py PATH good|bad
good: a predict log (inputs c, x for two instances), a classify log and a regress log (one
tf.Example each) for the test model (categorical c, numeric x); bad: a predict log whose x is
text, which the model cannot answer.
"""
import sys

import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from tfs_client import example  # the same test examples as the client's (same directory)


def main():
    path, mode = sys.argv[1], sys.argv[2]
    with tf.io.TFRecordWriter(path) as w:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "m"
        req.inputs["c"].CopyFrom(tf.make_tensor_proto(["a", "b"]))
        if mode == "good":
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
        else:
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(["not", "numbers"]))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=req)
        )
        w.write(log.SerializeToString())
        if mode == "good":
            creq = classification_pb2.ClassificationRequest()
            creq.model_spec.name = "m"
            creq.input.example_list.examples.append(example("a", 1.0))
            log = prediction_log_pb2.PredictionLog(
                classify_log=prediction_log_pb2.ClassifyLog(request=creq)
            )
            w.write(log.SerializeToString())
            rreq = regression_pb2.RegressionRequest()
            rreq.model_spec.name = "m"
            rreq.input.example_list.examples.append(example("b", 2.0))
            log = prediction_log_pb2.PredictionLog(
                regress_log=prediction_log_pb2.RegressLog(request=rreq)
            )
            w.write(log.SerializeToString())
    print("ok")


if __name__ == "__main__":
    main()
