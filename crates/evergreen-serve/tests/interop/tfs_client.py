"""TensorFlow Serving's own Python gRPC client (tensorflow-serving-api) against evergreen.

Usage: tfs_client.py HOST:PORT MODEL
Prints one JSON object with what each RPC returned; the Rust test (tests/tfs_python.rs) checks
the numbers against the models it published.
"""
import json
import sys

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)


def example(c, x):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "c": tf.train.Feature(bytes_list=tf.train.BytesList(value=[c.encode()])),
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
            }
        )
    )


def main():
    target, model = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    out = {}

    # Predict, as the TF Serving docs do it: tf.make_tensor_proto (floats go in tensor_content).
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = "serving_default"
    req.inputs["c"].CopyFrom(tf.make_tensor_proto(["a", "b"]))
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    resp = stub.Predict(req, 10.0)
    out["predict"] = {
        "version": resp.model_spec.version.value,
        "probabilities": tf.make_ndarray(resp.outputs["probabilities"]).tolist(),
    }
    req.model_spec.version.value = 1
    resp = stub.Predict(req, 10.0)
    out["predict_v1"] = {
        "version": resp.model_spec.version.value,
        "probabilities": list(resp.outputs["probabilities"].float_val),
    }
    req.model_spec.version_label = "stable"
    try:
        stub.Predict(req, 10.0)
        out["label_error"] = None
    except grpc.RpcError as e:
        out["label_error"] = e.code().name

    # Classify and Regress on tf.Examples.
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.name = model
    creq.input.example_list.examples.extend([example("a", 1.0), example("b", 2.0)])
    cresp = stub.Classify(creq, 10.0)
    out["classify"] = [
        {c.label: c.score for c in cl.classes} for cl in cresp.result.classifications
    ]
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name = model
    rreq.input.CopyFrom(
        input_pb2.Input(
            example_list_with_context=input_pb2.ExampleListWithContext(
                examples=[
                    tf.train.Example(
                        features=tf.train.Features(
                            feature={
                                "c": tf.train.Feature(
                                    bytes_list=tf.train.BytesList(value=[b"a"])
                                )
                            }
                        )
                    )
                ],
                context=tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "x": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))
                        }
                    )
                ),
            )
        )
    )
    rresp = stub.Regress(rreq, 10.0)
    out["regress"] = [r.value for r in rresp.result.regressions]

    # Metadata: unpack the SignatureDefMap as TF Serving's clients do.
    mreq = get_model_metadata_pb2.GetModelMetadataRequest()
    mreq.model_spec.name = model
    mreq.metadata_field.append("signature_def")
    mresp = stub.GetModelMetadata(mreq, 10.0)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    mresp.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    out["metadata"] = {
        "inputs": {k: tf.dtypes.as_dtype(v.dtype).name for k, v in sig.inputs.items()},
        "outputs": sorted(sig.outputs.keys()),
        "method_name": sig.method_name,
    }

    # Status.
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = model
    sresp = models.GetModelStatus(sreq, 10.0)
    out["status"] = [
        {
            "version": s.version,
            "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
            "error_code": s.status.error_code,
        }
        for s in sresp.model_version_status
    ]

    # Errors come back as gRPC status codes.
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "no_such_model"
    bad.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0]))
    try:
        stub.Predict(bad, 10.0)
        out["missing_model"] = None
    except grpc.RpcError as e:
        out["missing_model"] = e.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
