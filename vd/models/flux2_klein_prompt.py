"""FLUX.2 [klein]'s prompt embedding, computed once per prompt and text encoder, then cached.

The Qwen3-4B text encoder (~8 GB in bf16) is as large as the klein transformer, so it never
shares the device with it: the embedding is read from vd's content-addressed cache, and only on a
miss is the encoder loaded, run once, deleted and its memory returned, before the caller loads
the transformer. Peak memory is the larger of the two models, not their sum.

Keys (stage "flux2-klein-prompt"):
- exact: the prompt, the encoder's settings and `weights_id("flux2-klein-text")` (the hashes of
  the encoder files); used whenever those files are installed;
- any-encoder: the same without the hashes, written beside every exact record. It is read only
  when the encoder files are absent, which is what lets a warm cache run without them
  (`vd fetch flux2-klein-text` is needed only for a prompt never embedded before).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from vd import console
from vd.cache import Cache, codecs, stage_key
from vd.errors import MissingWeightsError
from vd.models.flux2_klein_loading import MAX_PROMPT_TOKENS, TEXT_LAYERS, encode_prompt, load_text_encoder
from vd.models.memory import release_torch_memory

log = logging.getLogger(__name__)

STAGE = "flux2-klein-prompt"
VERSION = 1
TEXT_MODEL = "flux2-klein-text"
ARTIFACT = "prompt_embeds.safetensors"
ENCODER_LOADS = [0]  # how many times this process loaded the text encoder (reported by benches and tests)


def embedding_key(prompt: str, encoder_id: Optional[str]) -> str:
    """The cache key of a prompt's embedding; `encoder_id` None is the any-encoder key."""
    return stage_key(
        stage=STAGE,
        version=VERSION,
        params={"prompt": prompt, "max_tokens": MAX_PROMPT_TOKENS, "layers": list(TEXT_LAYERS)},
        models={TEXT_MODEL: encoder_id or "any"},
        dtype="float32",
    )


def _decode(record):
    import torch

    arrays = codecs.decode_tensors(record.read(ARTIFACT))
    return torch.from_numpy(arrays["prompt_embeds"].copy())


def _encode_with(folder: Path, prompt: str, device: str) -> dict:
    """Load the encoder, embed `prompt`, free the encoder; the artifact bytes for the cache."""
    import torch

    dt = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    with console.status(f"embedding the prompt with FLUX.2 [klein]'s text encoder (Qwen3) on {device}"):
        ENCODER_LOADS[0] += 1
        text_encoder, tokenizer = load_text_encoder(folder, device=device, dtype=dt)
        try:
            emb = encode_prompt(text_encoder, tokenizer, prompt, device=device, dtype=torch.float32).cpu()
        finally:
            del text_encoder, tokenizer
            release_torch_memory()
    return {ARTIFACT: codecs.encode_tensors({"prompt_embeds": emb})}


def _installed_encoder(auto_fetch: Optional[bool]):
    """(folder, weights id) of the installed text encoder, or None when its files are absent."""
    from vd.fetch.registry import model_dir, require, weights_id

    try:
        require(TEXT_MODEL, auto_fetch=auto_fetch)
    except MissingWeightsError:
        return None
    return model_dir(TEXT_MODEL), weights_id(TEXT_MODEL)


def prompt_embedding(
    prompt: str = "", *, device: str = "cpu", auto_fetch: Optional[bool] = None, text_dir=None, cache=None
):
    """The prompt embedding [1, 512, 3 x hidden] (float32, CPU) for `prompt`.

    `text_dir` (a folder holding the encoder files) overrides the registry (tests use tiny models);
    `cache` overrides `Cache.open()`. MissingWeightsError (exit 3) naming `vd fetch flux2-klein-text`
    when the embedding is not cached and the encoder is not installed.
    """
    from vd.cache import file_hash

    cache = cache if cache is not None else Cache.open()
    if text_dir is not None:
        folder = Path(text_dir)
        ids = ",".join(f"{p.name}={file_hash(p)[:16]}" for p in sorted(folder.iterdir()) if p.is_file())
        found: Optional[tuple] = (folder, f"{TEXT_MODEL}:{ids}")
    else:
        found = _installed_encoder(auto_fetch=False)
    if found is None:
        record = cache.lookup(embedding_key(prompt, None))
        if record is not None:
            log.info("FLUX.2 [klein] prompt embedding from the cache (no text encoder needed)")
            return _decode(record)
        found = _installed_encoder(auto_fetch=auto_fetch)  # downloads when asked to
        if found is None:
            raise MissingWeightsError(
                f"the FLUX.2 [klein] embedding of the prompt {prompt!r} is not cached and its text encoder "
                "is not installed; run: vd fetch flux2-klein-text"
            )
    folder, encoder_id = found
    record, hit = cache.memoise(
        embedding_key(prompt, encoder_id), lambda: _encode_with(folder, prompt, device), stage=STAGE
    )
    if not hit or cache.lookup(embedding_key(prompt, None)) is None:
        cache.put(
            embedding_key(prompt, None),
            {ARTIFACT: record.read(ARTIFACT)},
            stage=STAGE,
            meta={"encoder": encoder_id},
        )
    return _decode(record)


__all__ = ["prompt_embedding", "embedding_key", "ENCODER_LOADS", "STAGE"]
