"""Tests for alignkit.generation on a tiny random Llama and a BPE tokenizer trained here (no network).

Stop behaviour is tested with a "scripted" model: a forward hook overrides the logits of chosen prompts so
that greedy decoding emits an exact token sequence, whatever the random weights would have produced.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignkit import template
from alignkit.generation import (
    Generation,
    GenerationSettings,
    cut_at_stop,
    find_stop,
    generate,
    left_pad,
    length_sorted_batches,
)

WORDS = (
    "the cat dog sat on mat red blue green add two three five capital of france paris write a "
    "sentence about Dogs Done yes ok fish"
).split()


def _corpus() -> list[str]:
    rng = random.Random(0)
    docs = []
    for _ in range(300):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        docs.append(template.full_text(words, words[:12]))
    return docs


def _train_tokenizer() -> Tokenizer:
    # use_regex=False lets merges cross spaces and newlines, so "\nEND" gets tokens of its own ("ĊEND",
    # "sĊEND", ...) as a real tokenizer's might: the stop string is not always split the same way.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


@pytest.fixture(scope="module")
def backend() -> Tokenizer:
    return _train_tokenizer()


@pytest.fixture(scope="module")
def tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # Large init makes the next-token distribution peaked, so greedy argmax has clear winners and
        # batched vs unbatched floating-point noise cannot flip it.
        initializer_range=0.5,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def ids(tokenizer: PreTrainedTokenizerFast, *tokens: str) -> list[int]:
    """Token ids of byte-level token strings ("Ġ" is a space, "Ċ" a newline); fails if one is missing."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    assert not missing, f"test tokenizer lacks tokens {missing}; the training corpus changed"
    return [vocab[t] for t in tokens]


@contextlib.contextmanager
def scripted(model: LlamaForCausalLM, tokenizer, scripts: dict[str, list[int]]) -> Iterator[None]:
    """Force greedy decoding of each prompt in ``scripts`` to emit its token list, in order.

    Rows are identified on the prefill call (the whole prompt, more than one token) by their unpadded
    prompt ids; every later call is one decoding step for the same rows. Past the end of a script, or for
    prompts without one, the random model decides.
    """
    by_ids = {tuple(tokenizer(p)["input_ids"]): s for p, s in scripts.items()}
    state: dict[str, object] = {}

    def hook(module, args, kwargs, output):
        input_ids = kwargs["input_ids"]
        if input_ids.shape[1] > 1:
            # generate drops an all-ones mask (one unpadded row), so its absence means "no padding".
            mask = kwargs.get("attention_mask")
            mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
            state["rows"] = [by_ids.get(tuple(row[m].tolist())) for row, m in zip(input_ids, mask)]
            state["step"] = 0
        step = state["step"]
        for row, script in enumerate(state["rows"]):
            if script is not None and step < len(script):
                output.logits[row, -1, :] = -1e4
                output.logits[row, -1, script[step]] = 1e4
        state["step"] = step + 1
        return output

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


PROMPTS = [
    template.prompt("add two"),
    template.prompt("write a sentence about the red cat that sat on the mat"),
    template.prompt("capital of france"),
    "the cat",
    template.prompt("Dogs"),
    template.prompt("three five add"),
    "blue green red blue green red blue",
    template.prompt("write a sentence about paris"),
    template.prompt("ok"),
    template.prompt("the dog sat on the mat and the cat sat on the dog"),
    "fish",
    template.prompt("add five and two and three"),
]


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_to_dict() -> None:
    assert GenerationSettings().to_dict() == {
        "max_new_tokens": 64,
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "batch_size": 16,
        "stop_strings": ["\nEND"],
        "seed": 0,
    }


def test_config_accepts_list_of_stop_strings() -> None:
    config = GenerationSettings(stop_strings=["\nEND", "###"])
    assert config.stop_strings == ("\nEND", "###")
    assert hash(config) == hash(GenerationSettings(stop_strings=("\nEND", "###")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
        ({"max_new_tokens": 8.0}, "max_new_tokens must be a positive integer, got 8.0"),
        ({"batch_size": -2}, "batch_size must be a positive integer, got -2"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"top_k": -1}, r"top_k must be an integer >= 0, got -1"),
        ({"seed": -3}, r"seed must be an integer >= 0, got -3"),
        ({"temperature": 0}, r"temperature must be a number > 0, got 0"),
        ({"temperature": float("nan")}, r"temperature must be a number > 0, got nan"),
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\], got 1.5"),
        ({"do_sample": "yes"}, "do_sample must be true or false, got 'yes'"),
        ({"stop_strings": ()}, "stop_strings must be a non-empty list of strings, got ()"),
        ({"stop_strings": "\nEND"}, "got the single string '\\\\nEND'"),
        ({"stop_strings": ("\nEND", "")}, "stop_strings must hold non-empty strings, got ''"),
    ],
)
def test_config_validation_names_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**kwargs)


# ------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 5\nEND", ("5", True, "\nEND")),
        (" 5\nEND\nInstruction: next", ("5", True, "\nEND")),
        (" 5\nENDING", ("5", True, "\nEND")),
        ("\nEND", ("", True, "\nEND")),
        (" ENDING soon\n", ("ENDING soon", False, None)),
        (" 5 END", ("5 END", False, None)),
        ("", ("", False, None)),
    ],
)
def test_cut_at_stop(text: str, expected: tuple) -> None:
    assert cut_at_stop(text, ["\nEND"]) == expected


def test_find_stop_earliest_then_longest() -> None:
    assert find_stop("ab\nEND.\nEND", ["\nEND", "\nEND."]) == (2, "\nEND.")
    assert find_stop("x###y\nEND", ["\nEND", "###"]) == (1, "###")
    assert find_stop("nothing here", ["\nEND"]) is None


def test_length_sorted_batches_and_left_pad() -> None:
    assert length_sorted_batches([2, 5, 5, 1, 3], 2) == [[1, 2], [4, 0], [3]]
    assert length_sorted_batches([4], 16) == [[0]]
    assert left_pad([[1], [2, 3, 4]], pad_id=9) == ([[9, 9, 1], [2, 3, 4]], [[0, 0, 1], [1, 1, 1]])


# --------------------------------------------------------------------------------- model generation


def test_batched_greedy_equals_one_at_a_time(model, tokenizer) -> None:
    config = GenerationSettings(max_new_tokens=12, batch_size=5)
    batched = generate(model, tokenizer, PROMPTS, config, progress=False)
    single = [
        generate(model, tokenizer, [p], GenerationSettings(max_new_tokens=12, batch_size=1), progress=False)[0]
        for p in PROMPTS
    ]
    assert batched == single
    # Results come back in input order, with the prompt exactly as sent.
    assert [g.prompt for g in batched] == PROMPTS
    assert [g.prompt_tokens for g in batched] == [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    # Greedy is deterministic.
    assert generate(model, tokenizer, PROMPTS, config, progress=False) == batched


def test_without_pad_token_uses_eos_and_leaves_tokenizer_alone(model, tokenizer, backend) -> None:
    no_pad = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    assert no_pad.pad_token is None
    side = no_pad.padding_side
    config = GenerationSettings(max_new_tokens=8, batch_size=4)
    got = generate(model, no_pad, PROMPTS[:6], config, progress=False)
    assert got == generate(model, tokenizer, PROMPTS[:6], config, progress=False)
    assert no_pad.pad_token is None
    assert no_pad.padding_side == side


def test_the_cpu_load_is_measured_every_generation_step(model, tokenizer, monkeypatch) -> None:
    # The thread count follows other processes' load (alignkit.threads): a neighbour that starts mid-batch must be
    # seen within a step, not at the next batch.
    from alignkit import threads

    calls = []
    monkeypatch.setattr(threads, "follow_load", lambda: calls.append(1))
    out = generate(model, tokenizer, PROMPTS[:2], GenerationSettings(max_new_tokens=5, batch_size=2), progress=False)
    assert len(calls) >= max(g.output_tokens for g in out) >= 1


def test_restores_training_mode(model, tokenizer) -> None:
    model.train()
    try:
        generate(model, tokenizer, PROMPTS[:2], GenerationSettings(max_new_tokens=2), progress=False)
        assert model.training
    finally:
        model.eval()


def test_stop_split_over_single_characters_cuts_after_completing_token(model, tokenizer) -> None:
    prompt = template.prompt("the cat")
    # " yes\nEND more": the stop is completed by the 8th token, "D"; " more" must not appear.
    script = ids(tokenizer, "Ġ", "y", "e", "s", "Ċ", "E", "N", "D", "Ġ", "m", "o", "r", "e")
    with scripted(model, tokenizer, {prompt: script}):
        [gen] = generate(model, tokenizer, [prompt], GenerationSettings(max_new_tokens=20), progress=False)
    assert gen == Generation(
        prompt=prompt,
        raw_output=" yes\nEND",
        response="yes",
        stopped=True,
        stop="\nEND",
        prompt_tokens=len(tokenizer(prompt)["input_ids"]),
        output_tokens=8,
    )


def test_stop_in_merged_tokens_and_trailing_characters(model, tokenizer) -> None:
    merged = template.prompt("the cat")
    trailing = template.prompt("the dog")
    inside = template.prompt("the fish")
    scripts = {
        # One token holds the whole stop.
        merged: ids(tokenizer, "yes", "ĊEND", "Ġ", "m"),
        # The completing token runs on past the stop: its extra characters stay in raw_output.
        trailing: ids(tokenizer, "Ġ", "o", "k", "Ċ", "E", "N", "Dog", "Ġ", "m"),
        # One token ends the response and starts the stop.
        inside: ids(tokenizer, "Ġ", "b", "l", "u", "eĊEND", "Ġ", "m"),
    }
    with scripted(model, tokenizer, scripts):
        got = generate(
            model, tokenizer, [merged, trailing, inside], GenerationSettings(max_new_tokens=20), progress=False
        )
    assert [(g.raw_output, g.response, g.stopped, g.stop, g.output_tokens) for g in got] == [
        ("yes\nEND", "yes", True, "\nEND", 2),
        (" ok\nENDog", "ok", True, "\nEND", 7),
        (" blue\nEND", "blue", True, "\nEND", 5),
    ]


def test_rows_stop_at_different_steps_in_one_batch(model, tokenizer) -> None:
    short = template.prompt("add two")
    long = template.prompt("capital of france")
    loops = template.prompt("fish")
    scripts = {
        short: ids(tokenizer, "Ġ", "5", "Ċ", "E", "N", "D"),
        long: ids(tokenizer, "Ġ", "p", "a", "r", "i", "s", "Ċ", "E", "N", "D"),
        loops: ids(tokenizer, *(["Ġ", "f"] * 5)),
    }
    prompts = [short, long, loops, PROMPTS[1]]
    config = GenerationSettings(max_new_tokens=10, batch_size=4)
    with scripted(model, tokenizer, scripts):
        batched = generate(model, tokenizer, prompts, config, progress=False)
        single = [generate(model, tokenizer, [p], config, progress=False)[0] for p in prompts]
    assert batched == single
    assert [(g.raw_output, g.stopped, g.output_tokens) for g in batched[:3]] == [
        (" 5\nEND", True, 6),
        (" paris\nEND", True, 10),
        (" f f f f f", False, 10),  # hit max_new_tokens: no stop, every token kept
    ]
    assert batched[2].response == "f f f f f"
    assert batched[2].stop is None


def test_eos_ends_a_sequence_and_is_not_output(model, tokenizer) -> None:
    prompt = template.prompt("ok")
    script = ids(tokenizer, "Ġ", "o", "k") + [tokenizer.eos_token_id] + ids(tokenizer, "Ġ", "m")
    with scripted(model, tokenizer, {prompt: script}):
        [gen] = generate(model, tokenizer, [prompt], GenerationSettings(max_new_tokens=20), progress=False)
    assert (gen.raw_output, gen.response, gen.stopped, gen.stop, gen.output_tokens) == (" ok", "ok", False, None, 3)


def test_custom_stop_string(model, tokenizer) -> None:
    prompt = template.prompt("ok")
    script = ids(tokenizer, "Ġ", "o", "k", "Ġ", "#", "#", "Ġ", "m")
    config = GenerationSettings(max_new_tokens=20, stop_strings=("\nEND", "##"))
    with scripted(model, tokenizer, {prompt: script}):
        [gen] = generate(model, tokenizer, [prompt], config, progress=False)
    assert (gen.raw_output, gen.response, gen.stop, gen.output_tokens) == (" ok ##", "ok", "##", 6)


def test_sampling_reproducible_by_seed_and_leaves_global_rng(model, tokenizer) -> None:
    prompts = PROMPTS[:6]

    def sample(seed: int) -> list[str]:
        config = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=3.0, batch_size=4, seed=seed)
        return [g.raw_output for g in generate(model, tokenizer, prompts, config, progress=False)]

    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    first = sample(7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert sample(7) == first
    assert sample(8) != first


def test_empty_and_bad_prompts(model, tokenizer) -> None:
    assert generate(model, tokenizer, [], GenerationSettings(), progress=False) == []
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a string, got int"):
        generate(model, tokenizer, ["a b", 3], GenerationSettings(), progress=False)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got a single string"):
        generate(model, tokenizer, "a b", GenerationSettings(), progress=False)
    with pytest.raises(ValueError, match=r"prompts\[0\] tokenizes to no tokens"):
        generate(model, tokenizer, [""], GenerationSettings(), progress=False)


def test_generation_to_dict() -> None:
    gen = Generation("p", " a\nEND", "a", True, "\nEND", 3, 4)
    assert gen.to_dict() == {
        "prompt": "p",
        "raw_output": " a\nEND",
        "response": "a",
        "stopped": True,
        "stop": "\nEND",
        "prompt_tokens": 3,
        "output_tokens": 4,
    }
