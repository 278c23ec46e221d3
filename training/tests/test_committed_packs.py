"""The committed packs/demo-base is the base checkpoint packs/demo was exported from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from molorec_train.adapters import mixture_feeds
from molorec_train.export import load_model

REPO = Path(__file__).resolve().parents[2]


def test_demo_base_is_the_demo_packs_base_model():
    pack, base = REPO / "packs/demo", REPO / "packs/demo-base"
    manifest = json.loads((pack / "molorec.json").read_text())
    m = manifest["model"]
    session = ort.InferenceSession(str(pack / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[5, 17, 301, 42, 999, 7, 64, 1500]], np.int64)
    n = ids.shape[1]
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, n), np.int64), "position_ids": np.arange(n)[None]}
    for i in range(m["numLayers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, m["numKvHeads"], 0, m["headDim"]), np.float32)
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
    feeds |= mixture_feeds(targets, [], [[]])  # no adapter: the base model alone
    names = {i.name for i in session.get_inputs()}
    if "num_logits_to_keep" in names:
        feeds["num_logits_to_keep"] = np.array([0], np.int64)
    if "target_ids" in names:
        feeds["target_ids"] = np.zeros_like(ids)
    got = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        want = load_model(base)(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, float(np.max(np.abs(want))))
