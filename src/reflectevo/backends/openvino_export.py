"""Export a transformers causal LM (or a base model + PEFT adapter, merged) to OpenVINO IR, once.

Route, chosen on measurements (docs/backends.md, "openvino"): trace the model with
`openvino.convert_model` in this environment, make its KV cache stateful the way optimum-intel's
`patch_stateful_decoder` does (a `beam_idx` input, then ReadValue/Assign pairs), and convert the
tokenizer with `openvino_tokenizers`. optimum-intel itself pins transformers<5.6 (and with `--no-deps`
it fails to import under 5.24), and OpenVINO's GGUF reader gives different, degraded text for the
embedded Q4_1 file, so neither is used. ContinuousBatchingPipeline turns the stateful SDPA graph into
PagedAttention itself.

The IR is cached under `home()/openvino/<fingerprint[:16]>/`, the fingerprint of the exported HF folder
and adapter.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from reflectevo.backends.models import ModelRef, fingerprint, hf_folder, home
from reflectevo.errors import BackendError
from reflectevo.runs import folder_bytes

MARKER = "reflectevo_export.json"  # written last: a folder without it is not a finished export


def ir_folder(ref: ModelRef) -> Path:
    """The OpenVINO IR folder for `ref`, exported on first use (atomic: staged, then renamed)."""
    # Keyed by what is exported (the HF folder, plus the adapter): a GGUF preset and its converted
    # folder given by path share one IR.
    source = hf_folder(ref)
    digest = fingerprint(ModelRef(ref.name, path=source, adapter=ref.adapter))
    target = home() / "openvino" / digest[:16]
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    what = f"{ref.name!r} ({source}" + (f" + adapter {ref.adapter})" if ref.adapter else ")")
    try:
        start = time.time()
        _export(source, ref.adapter, staging)
        info = {"fingerprint": digest, "source": str(source), "adapter": str(ref.adapter or ""),
                "route": "openvino.convert_model + stateful KV cache", "weights": "fp16",
                "openvino": _version(), "seconds": round(time.time() - start, 1)}
        (staging / MARKER).write_text(json.dumps(info, indent=1))
        os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if (target / MARKER).is_file():  # another process finished the same export first
            return target
        raise BackendError(f"cannot export model {what} to OpenVINO IR in {target}: "
                           f"{' '.join(str(exc).split())[:400]}") from exc
    except Exception as exc:  # conversion errors come from torch, transformers and OpenVINO alike
        shutil.rmtree(staging, ignore_errors=True)
        message = " ".join(str(exc).split())[:400]
        raise BackendError(f"cannot export model {what} to OpenVINO IR: {type(exc).__name__}: {message}") from exc
    return target


def remove_exports(source: Path) -> int:
    """Delete the cached IRs exported from the HF folder `source` (a trained model no later step reads:
    each 1.5B IR is ~3.4 GB). Returns the bytes freed."""
    freed, source = 0, Path(source).resolve()
    for marker in (home() / "openvino").glob(f"*/{MARKER}"):
        try:
            exported_from = Path(json.loads(marker.read_text())["source"]).resolve()
        except (OSError, ValueError, KeyError):
            continue  # unreadable marker: not ours to judge
        if exported_from == source:
            freed += folder_bytes(marker.parent)
            shutil.rmtree(marker.parent, ignore_errors=True)
    return freed


def _version() -> str:
    import openvino

    return openvino.__version__


def _load(source: Path, adapter: Path | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fp32 for tracing; the IR stores fp16 weights and the engine picks the compute precision.
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(source)


def _export(source: Path, adapter: Path | None, out: Path) -> None:
    import openvino as ov
    import torch
    from openvino_tokenizers import convert_tokenizer

    model, tokenizer = _load(source, adapter)
    config = model.config.get_text_config(decoder=True)
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    # Example shapes only fix ranks; a padded position in the mask keeps transformers on the masked
    # attention path (with an all-ones mask it would trace the mask away).
    batch, new, past = 2, 3, 5
    inputs = dict(input_ids=torch.randint(0, 100, (batch, new)),
                  attention_mask=torch.ones(batch, past + new, dtype=torch.int64),
                  position_ids=torch.arange(past, past + new).repeat(batch, 1))
    inputs["attention_mask"][0, 0] = 0
    cache = [torch.randn(batch, kv_heads, past, head_dim) for _ in range(2 * layers)]
    # Tracing warns about every Python branch on a shape; those branches are covered by the engine's
    # own attention (PagedAttention replaces the traced SDPA and mask), so the warnings are noise here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ov.convert_model(_flat(model), example_input=(*inputs.values(), *cache))
    kv_in = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    kv_out = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    for port, name in zip(graph.inputs, [*inputs, *kv_in]):
        port.get_tensor().set_names({name})
    for port, name in zip(graph.outputs, ["logits", *kv_out]):
        port.get_tensor().set_names({name})
    _make_stateful(graph, kv_in, kv_out)
    ov.save_model(graph, out / "openvino_model.xml", compress_to_fp16=True)
    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, out / "openvino_tokenizer.xml")
    ov.save_model(ov_detokenizer, out / "openvino_detokenizer.xml")
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)  # the engine reads eos ids from it
    tokenizer.save_pretrained(out)


def _flat(model):
    """The model as a function of flat tensors: (ids, mask, positions, k0, v0, k1, ...) -> (logits, k0', ...)."""
    import torch
    from transformers.cache_utils import DynamicCache

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=model.config)
            # Fill the layers directly: DynamicLayer.update() concatenates onto an empty 1-D tensor,
            # which the converter cannot type.
            for i, layer in enumerate(cache.layers):
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                layer.device, layer.is_initialized = past[0].device, True
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, **{cache_arg: cache})
            present = getattr(out, cache_arg)
            return (out.logits, *[t for layer in present.layers for t in (layer.keys, layer.values)])

    # transformers renamed `past_key_values` to `cache` (5.2x); the old name warns, later it goes.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return Flat()


def _make_stateful(graph, kv_in: list[str], kv_out: list[str]) -> None:
    """Hide the KV cache in the model as variables, with a beam_idx input that reorders them."""
    import numpy as np
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    batch = graph.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    graph.add_parameters([beam_idx])
    for name in kv_in:
        port = graph.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    graph.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(graph, dict(zip(kv_in, kv_out)))
    # Each state starts as zeros of shape [batch, heads, 0, head_dim], batch taken from input_ids.
    ids = graph.input("input_ids")
    rows = opset13.gather(opset13.shape_of(ids, output_type="i64"), opset13.constant([0]), opset13.constant(0))
    for op in graph.get_ops():
        if op.get_type_name() == "ReadValue":
            dims = [d.min_length for d in op.get_output_partial_shape(0)]
            parts = [rows] + [opset13.constant(np.array([d], dtype=np.int64)) for d in dims[1:]]
            zeros = opset13.broadcast(opset13.constant(0.0, dtype=op.get_output_element_type(0)),
                                      opset13.concat(parts, axis=0))
            op.set_arguments([zeros])
    graph.validate_nodes_and_infer_types()
