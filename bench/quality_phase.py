"""The quality phase of a run: bits per byte and perplexity per model variant and language,
and, for quantization ladders, KL divergence and top-1 agreement against the reference.

Quality depends on the model file, not on threads or prompt lengths, so it is measured once per
model variant (with the load settings of its first cell), after the speed sweep: it never
competes with a timed trial for the machine. The reference of a ladder is evaluated once and its
logits kept on disk (bench.quality.reference_logits) while every level is compared with it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.backends.base import BackendError
from bench.config import Config
from bench.models import ModelError, fetch
from bench.run.events import Message, Rows
from bench.sweep import Cell, ModelVariant

LOAD_KEYS = ("n_threads", "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "flash_attn")


def quality_texts(config: Config) -> dict[str, tuple[str, str]]:
    """text_id -> (lang, text) for the configured quality texts."""
    from bench.workload.packs import load_heldout

    q = config.quality
    if q.texts == "none":
        return {}
    langs = q.languages or config.workload.languages or ["en"]
    return {f"heldout-{lang}": (lang, load_heldout(lang)) for lang in langs}


def _variants(cells: list[Cell]) -> dict[str, list[tuple[ModelVariant, dict[str, Any]]]]:
    """Per model id, its variants in sweep order with the load settings of their first cell."""
    out: dict[str, list[tuple[ModelVariant, dict[str, Any]]]] = {}
    seen: set[str] = set()
    for c in cells:
        if c.backend != "llama-cpp" or c.variant.key in seen:
            continue
        seen.add(c.variant.key)
        settings = {k: v for k, v in c.setting.items() if k in LOAD_KEYS}
        out.setdefault(c.variant.spec.id, []).append((c.variant, settings))
    return out


def run_quality(
    config: Config, cells: list[Cell], run_id: str, emit: Callable[..., None],
    store_dir: Path | None = None,
) -> None:
    from bench.quality import QualityError, quality_rows, reference_logits
    from bench.quantize import gguf_facts

    texts = quality_texts(config)
    if not texts:
        return
    plain = {tid: text for tid, (_, text) in texts.items()}
    lang_of = {tid: lang for tid, (lang, _) in texts.items()}
    window = {"window": config.quality.window} if config.quality.window else {}
    for model_id, variants in _variants(cells).items():
        spec = variants[0][0].spec
        if spec.synthetic is not None:
            from bench.synthetic import QUALITY_REFUSAL

            emit(Message(QUALITY_REFUSAL.format(model=model_id)))
            continue
        paths: list[tuple[str, Path, dict[str, Any]]] = []
        for variant, settings in variants:
            try:
                path = fetch(variant)
            except ModelError as e:
                emit(Message(f"quality: {model_id} {variant.quant} skipped: {e}"))
                continue
            if path is not None:
                paths.append((variant.quant, path, {**settings, **window}))
        if not paths:
            continue
        ladder = spec.quantize_from is not None or len(paths) > 1
        ref_label, ref_path = None, None
        if config.quality.reference == "auto" and ladder:
            if spec.quantize_from is not None:
                ref_path = Path(spec.quantize_from).expanduser()
                ref_label = gguf_facts(ref_path).get("file_type") or "source"
                paths.insert(0, (ref_label, ref_path, paths[0][2]))
            else:
                ref_label, ref_path, _ = max(
                    paths, key=lambda p: gguf_facts(p[1])["bits_per_weight"] or 0.0
                )
        emit(Message(f"quality: {model_id} on {', '.join(plain)}"
             + (f" (reference {ref_label})" if ref_label else "")))
        ref = None
        try:
            if ref_path is not None:
                ref = reference_logits(ref_path, plain, paths[0][2], store_dir=None)
            for quant, path, settings in paths:
                facts = gguf_facts(path)
                for row in quality_rows(path, plain, ref, settings):
                    emit(Rows("quality", [{
                        "run_id": run_id,
                        "model": model_id,
                        "quant": quant,
                        "reference": ref_label,
                        "is_reference": quant == ref_label,
                        "lang": lang_of[row["text_id"]],
                        "size_bytes": facts.get("size_bytes"),
                        "bits_per_weight": facts.get("bits_per_weight"),
                        **row,
                    }]))
        except (QualityError, BackendError, OSError) as e:
            emit(Message(f"quality: {model_id} failed: {e}"))
        finally:
            if ref is not None:
                ref.close()
