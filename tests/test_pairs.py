"""Tests for alignkit.pairs: choosing the chosen side, margins, reference log-probs and truncation.

``completion_logprobs`` is checked against a plain loop over each full sequence on a tiny random Llama, with
BPE tokenizers trained here (one byte-level, one SentencePiece-style that prepends a BOS).
"""

from __future__ import annotations

import math

import pytest

from alignkit import masks, pairs, template

EOS, PAD = "</s>", "<pad>"


# --------------------------------------------------------------------------------------------------
# pick_chosen
# --------------------------------------------------------------------------------------------------

ROW = {"response": "Paris"}


def _answer(source: str, response: str, passes: bool) -> dict:
    return {"source": source, "response": response, "overall": passes}


def test_pick_chosen_prefers_a_passing_greedy_answer() -> None:
    answers = [_answer("sample0", "Paris.", True), _answer("greedy", "It is Paris.", True)]
    assert pairs.pick_chosen(ROW, answers) == ("It is Paris.", "sft_model_greedy")


def test_pick_chosen_takes_the_first_passing_sample_when_greedy_fails() -> None:
    answers = [_answer("greedy", "Madrid", False), _answer("sample0", "Lyon", False),
               _answer("sample1", "Paris", True), _answer("sample2", "The capital is Paris.", True)]
    assert pairs.pick_chosen(ROW, answers) == ("Paris", "sft_model_sample1")


def test_pick_chosen_falls_back_to_the_stage01_response() -> None:
    answers = [_answer("greedy", "Madrid", False), _answer("sample0", "Lyon", False)]
    assert pairs.pick_chosen(ROW, answers) == ("Paris", "stage01_response")
    assert pairs.pick_chosen(ROW, []) == ("Paris", "stage01_response")


def test_pick_chosen_skips_blank_passing_answers() -> None:
    answers = [_answer("greedy", "   ", True), _answer("sample0", "Paris!", True)]
    assert pairs.pick_chosen(ROW, answers) == ("Paris!", "sft_model_sample0")


# --------------------------------------------------------------------------------------------------
# margin_stats
# --------------------------------------------------------------------------------------------------


def test_margin_stats_hand_values() -> None:
    rows = [
        {"negative_type": "verbose", "margin": 1.0},
        {"negative_type": "refusal", "margin": 3.0},
        {"negative_type": "refusal", "margin": -1.0},
        {"negative_type": "refusal", "margin": 0.0},
        {"negative_type": "refusal", "margin": 2.0},
        {"negative_type": "format", "margin": None},   # not computed: left out
        {"negative_type": "incorrect", "margin": -0.5},
    ]
    stats = pairs.margin_stats(rows)
    # Ordered as NEGATIVE_TYPES, not as seen; a type with no margins is absent.
    assert list(stats) == ["refusal", "incorrect", "verbose"]
    # refusal: 3, -1, 0, 2 -> mean 1.0, median (0 + 2) / 2 = 1.0, positive 2 of 4 (0 is not positive).
    assert stats["refusal"] == {"n": 4, "mean": 1.0, "median": 1.0, "min": -1.0, "max": 3.0, "share_positive": 0.5}
    assert stats["incorrect"] == {"n": 1, "mean": -0.5, "median": -0.5, "min": -0.5, "max": -0.5,
                                  "share_positive": 0.0}
    assert stats["verbose"]["share_positive"] == 1.0
    assert pairs.margin_stats([]) == {}


def test_margin_stats_rounds_to_four_places() -> None:
    stats = pairs.margin_stats([{"negative_type": "format", "margin": m} for m in (1 / 3, 2 / 3, 1.0)])
    assert stats["format"] == {"n": 3, "mean": 0.6667, "median": 0.6667, "min": 0.3333, "max": 1.0,
                               "share_positive": 1.0}


# --------------------------------------------------------------------------------------------------
# Tokenizers and a tiny random model
# --------------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    texts = [template.full_text(f"Add {a} and {b}.", str(a + b)) for a in range(10) for b in range(10)]
    texts += ["The capital of France is Paris.", "Spell cat backwards: tac", "red, green and blue"] * 5
    return texts


def _bytelevel():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=320, special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def _metaspace_bos():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", EOS, PAD],
                                                           show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token=PAD,
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


@pytest.fixture(scope="module", params=["bytelevel", "metaspace_bos"])
def tokenizer(request):
    return {"bytelevel": _bytelevel, "metaspace_bos": _metaspace_bos}[request.param]()


@pytest.fixture(scope="module")
def model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


PROMPTS = [template.prompt("Add 2 and 3."), template.prompt("What is the capital of France?"),
           template.prompt("Spell cat backwards."), template.prompt("Name three colors.")]
COMPLETIONS = [template.completion("5"), template.completion("The capital of France is Paris, a big old city."),
               template.completion("tac"), template.completion("red, green and blue")]


def _reference_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum over trained positions t of log softmax(logits[t - 1])[ids[t]], one unpadded sequence at a time."""
    import torch

    ids, mask = masks.tokenize_example(tokenizer, prompt, completion)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(1, len(ids)):
        if mask[t]:
            total += (logits[t - 1] - torch.logsumexp(logits[t - 1], dim=-1))[ids[t]].item()
    return total


def test_completion_logprobs_equals_a_hand_computation(model, tokenizer) -> None:
    expected = [_reference_logprob(model, tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    got = pairs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=1)
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(math.isfinite(v) and v < 0 for v in got)


def test_completion_logprobs_counts_completion_tokens_only(model, tokenizer) -> None:
    # The same completion after two different prompts scores differently only through the context: the prompt's
    # own tokens are never summed. A longer completion collects more (negative) terms.
    ids, mask = masks.tokenize_example(tokenizer, PROMPTS[0], COMPLETIONS[0])
    trained = sum(mask)
    assert 0 < trained < len(ids)
    assert ids[-1] == tokenizer.eos_token_id and mask[-1] == 1
    short, longer = pairs.completion_logprobs(model, tokenizer, [PROMPTS[0]] * 2,
                                              [template.completion("5"), template.completion("5 5 5 5 5 5")], 2)
    assert longer < short


@pytest.mark.parametrize("batch_size", [3, 4])
def test_completion_logprobs_do_not_depend_on_batching_or_padding(model, tokenizer, batch_size: int) -> None:
    one = pairs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=1)
    batched = pairs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert len(batched) == len(PROMPTS)
    assert batched == pytest.approx(one, abs=1e-4)


def test_completion_logprobs_margin_sign(model, tokenizer) -> None:
    chosen = pairs.completion_logprobs(model, tokenizer, PROMPTS[:1], [template.completion("5")], 1)[0]
    rejected = pairs.completion_logprobs(model, tokenizer, PROMPTS[:1], [template.completion("5 5 5 5 5 5 5 5")], 1)[0]
    assert chosen - rejected > 0  # the margin stored is chosen - rejected, signed
    assert pairs.completion_logprobs(model, tokenizer, [], [], 4) == []


# --------------------------------------------------------------------------------------------------
# truncated_ids
# --------------------------------------------------------------------------------------------------


def test_truncated_ids_is_the_training_sequence_cut_at_max_length(tokenizer) -> None:
    prompt, completion = PROMPTS[1], COMPLETIONS[1]
    full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    assert full[-1] == tokenizer.eos_token_id
    assert pairs.truncated_ids(tokenizer, prompt, completion, 10_000) == full
    assert pairs.truncated_ids(tokenizer, prompt, completion, 7) == full[:7]
    assert len(pairs.truncated_ids(tokenizer, prompt, completion, 7)) == 7
    # Same ids as the masks module trains on.
    assert full == masks.tokenize_example(tokenizer, prompt, completion)[0]


def test_completions_differing_after_max_length_become_identical(tokenizer) -> None:
    prompt = PROMPTS[0]
    a, b = template.completion("5 and more words here"), template.completion("5 and more words there")
    n_prompt = len(tokenizer(prompt)["input_ids"])
    assert pairs.truncated_ids(tokenizer, prompt, a, n_prompt + 1) == pairs.truncated_ids(tokenizer, prompt, b,
                                                                                         n_prompt + 1)
    assert pairs.truncated_ids(tokenizer, prompt, a, 128) != pairs.truncated_ids(tokenizer, prompt, b, 128)
