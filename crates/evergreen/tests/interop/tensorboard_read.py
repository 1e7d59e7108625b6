"""Reads a directory of TensorBoard event files with TensorBoard's own reader (the `tensorboard`
package's EventAccumulator, what `tensorboard --logdir` uses) and prints what it found as JSON:
{"scalars": {tag: [[step, value], ...]}, "text": {tag: [[step, text], ...]},
 "histograms": {tag: [[step, num, min, max, sum, bucket_count_total], ...]}}.
Used by crates/evergreen/tests/tensorboard.rs."""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea

acc = ea.EventAccumulator(
    sys.argv[1], size_guidance={ea.SCALARS: 0, ea.TENSORS: 0, ea.HISTOGRAMS: 0}
)
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "text": {}, "histograms": {}, "file_version": acc.file_version}
for tag in tags["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
for tag in tags["tensors"]:
    out["text"][tag] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(tag)]
for tag in tags["histograms"]:
    out["histograms"][tag] = [
        [e.step, h.num, h.min, h.max, h.sum, sum(h.bucket)]
        for e in acc.Histograms(tag)
        for h in [e.histogram_value]
    ]
print(json.dumps(out))
