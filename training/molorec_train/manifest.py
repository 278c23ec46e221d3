"""``molorec.json``, typed: the Python mirror of packages/core/src/manifest.ts.

The exporter builds a :class:`PackManifest` and writes its JSON; the field names are the JSON's
(camelCase), so each class reads like the TypeScript interface it mirrors. docs/pack-format.md
describes every field. Runtimes validate what they read (manifest.ts); this side only writes
manifests it built and reads back its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .prompt import PromptSpec

PACK_FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    architecture: str
    numLayers: int
    numHeads: int
    numKvHeads: int
    headDim: int
    hiddenSize: int
    vocabSize: int
    maxPositions: int
    kvCache: str = "concat"  # "concat" | "grouped" (graph.GraphVariant)
    # Layers below the lowest LoRA target, run once per source row (graph.GraphVariant.fan_out);
    # 0: no fan-out (the key is left out of molorec.json).
    sharedLayers: int = 0


@dataclass
class PackFiles:
    model: str = "model.onnx"
    # External-data files of the graph, relative to the pack (one `model.onnx.data` for a large model).
    modelExternalData: list[str] = field(default_factory=list)
    tokenizer: str = "tokenizer.json"
    tokenizerConfig: str | None = None


@dataclass
class LoraTarget:
    module: str
    inFeatures: int
    outFeatures: int
    inputA: str
    inputB: str


@dataclass
class LoraSpec:
    targets: list[LoraTarget]
    scaleInput: str = "lora_scale"


@dataclass
class AdapterEntry:
    path: str
    rank: int
    alpha: float
    scaling: float
    targetModules: list[str]


@dataclass
class DomainEntry:
    adapter: str
    defaultLambda: float = 0.5
    calibratedLambda: float | None = None
    description: str | None = None


@dataclass
class PackLimits:
    maxCandidates: int = 100
    maxHistoryItems: int = 50


@dataclass
class PackManifest:
    name: str
    model: ModelConfig
    files: PackFiles
    lora: LoraSpec
    prompt: PromptSpec
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    generalAdapter: str | None = None
    domains: dict[str, DomainEntry] = field(default_factory=dict)
    defaultDomain: str | None = None
    limits: PackLimits = field(default_factory=PackLimits)
    dtype: str = "float32"  # of the graph's float inputs and outputs
    # How the graph was built (weights dtype, variant, source); informational, runtimes ignore it.
    export: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    format: str = "molorec-pack"
    formatVersion: int = PACK_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for d in out["domains"].values():
            for k in ("calibratedLambda", "description"):
                if d[k] is None:
                    del d[k]
        for k in ("export", "quantization"):
            if out[k] is None:
                del out[k]
        if not out["model"]["sharedLayers"]:
            del out["model"]["sharedLayers"]
        head = {"format": out.pop("format"), "formatVersion": out.pop("formatVersion"), "name": out.pop("name"), "dtype": out.pop("dtype")}
        return head | out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackManifest:
        return cls(
            name=d["name"],
            model=ModelConfig(**d["model"]),
            files=PackFiles(**d["files"]),
            lora=LoraSpec([LoraTarget(**t) for t in d["lora"]["targets"]], d["lora"].get("scaleInput", "lora_scale")),
            prompt=PromptSpec(**d["prompt"]),
            adapters={k: AdapterEntry(**v) for k, v in d.get("adapters", {}).items()},
            generalAdapter=d.get("generalAdapter"),
            domains={k: DomainEntry(**v) for k, v in d.get("domains", {}).items()},
            defaultDomain=d.get("defaultDomain"),
            limits=PackLimits(**d.get("limits", {})),
            dtype=d.get("dtype", "float32"),
            export=d.get("export"),
            quantization=d.get("quantization"),
            format=d.get("format", "molorec-pack"),
            formatVersion=d.get("formatVersion", PACK_FORMAT_VERSION),
        )


def load_manifest(pack_dir: str | Path) -> PackManifest:
    return PackManifest.from_json(json.loads(Path(pack_dir, "molorec.json").read_text()))


def save_manifest(pack_dir: str | Path, manifest: PackManifest) -> None:
    Path(pack_dir, "molorec.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
