"""Text generation with a language-model run: continue a prompt token by token.

Sampling is a pure function of the logits
(`pick_token`: temperature, top-k, top-p); the model supplies logits step by step, with its own
key/value cache (`model.generate_tokens`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from damoxing.core.console import warn
from damoxing.core.errors import UserError
from damoxing.models.protocols import LanguageModel


def check_sampling(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    if max_new_tokens < 0:
        raise UserError(f"--max-new-tokens is {max_new_tokens}; it must be 0 or more.")
    if not temperature >= 0 or temperature == float("inf"):  # NaN fails every comparison
        raise UserError(f"--temperature is {temperature}; it must be 0 (always the most likely token) or more (1 = the model's own distribution).")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k is {top_k}; it must be 1 or more (keep the k most likely tokens).")
    if top_p is not None and not 0 < top_p <= 1:  # NaN is refused here too
        raise UserError(f"--top-p is {top_p}; it must be in (0, 1] (keep the most likely tokens up to this probability mass).")


def pick_token(logits, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None, generator=None) -> int:
    """One token id from next-token logits (V,): greedy at temperature 0, else sampled from the
    temperature-scaled distribution restricted to the top_k tokens and to the smallest set whose
    probability reaches top_p (nucleus sampling)."""
    import torch

    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep tokens until the mass before them reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def generate_text(predictor, prompt: str = "", max_new_tokens: int = 100, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, seed: Optional[int] = None, on_text: Optional[Callable[[str], Any]] = None) -> str:
    """Continue `prompt` with a language-model run; returns the new text and streams it to `on_text`."""
    import torch

    check_sampling(max_new_tokens, temperature, top_k, top_p)
    if predictor.task_name != "language_modeling" or not isinstance(predictor.model, LanguageModel):
        raise UserError(f"'{predictor.path}' is not a language model (task '{predictor.task_name}', model '{predictor.config.model.type}'); "
                        "only language-model runs continue text.")
    codec = predictor.preprocessing.inputs
    unseen = codec.unseen_characters(prompt)
    if unseen:
        shown = " ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
        warn(f"the prompt holds {len(unseen)} character(s) never seen in the training text ({shown}); the model knows nothing about them.")
    ids = codec.encode([prompt])[0]
    if codec.unk_id_ is not None and codec.unk_id_ in ids:
        warn(f"{ids.count(codec.unk_id_)} prompt token(s) are unknown to the tokenizer and were read as <unk>.")
    start = [codec.eos_id_] if codec.eos_id_ is not None else []
    ids = start + ids  # training text starts after an end-of-text token; so does a prompt
    if not ids:
        raise UserError("The prompt is empty and the tokenizer has no end-of-text token to start from; give a --prompt.")
    context = predictor.model.context_length
    if len(ids) > context:
        warn(f"the prompt is {len(ids)} tokens; the model sees only its last {context} (its context length).")
    generator = torch.Generator(device=predictor.device)
    generator.manual_seed(seed if seed is not None else torch.seed())

    def pick(logits):
        return pick_token(logits, temperature, top_k, top_p, generator)

    def new_ids():
        for token in predictor.model.generate_tokens(ids, max_new_tokens, pick):
            if token == codec.eos_id_:
                return  # the model ended the text
            yield token

    pieces = []
    for piece in codec.stream_decode(new_ids()):
        pieces.append(piece)
        if on_text is not None:
            on_text(piece)
    return "".join(pieces)
