"""Tests for alignkit.stages.pairs (stage 04): the chosen side, margin and defect statistics, building validated pairs,
reference log-probs and truncation.

- ``pick_chosen``: the SFT model's own answer that wrote END and passes every criterion, else the stage-01 response;
- ``margin_stats`` / ``defect_stats``: per negative type, hand-worked;
- ``build_pairs``: one pair per negative with ``rejected`` exactly as the negative (END-less for format/verbose),
  ``rejected_has_end`` and ``divergence_token``, checked by hand on a byte-level tokenizer (one token per
  character) trained here; drops counted by reason;
- ``alignkit.logprobs.completion_logprobs`` (the reference margin stage 04 stores) against a plain loop over each
  full sequence on a tiny random Llama, with BPE tokenizers trained here (one byte-level, one SentencePiece-style
  that prepends a BOS).
"""

from __future__ import annotations

import math

import pytest

from alignkit import logprobs, masks, schemas, template
from alignkit.stages import pairs

EOS, PAD = "</s>", "<pad>"


# --------------------------------------------------------------------------------------------------
# pick_chosen
# --------------------------------------------------------------------------------------------------

ROW = {"response": "Paris"}


def _answer(source: str, response: str, passes: bool, emitted_end: bool | None = None) -> dict:
    """An SFT answer as stage 03 scores it; ``emitted_end`` left out as older files do (then it counts as True)."""
    answer = {"source": source, "response": response, "overall": passes}
    if emitted_end is not None:
        answer["emitted_end"] = emitted_end
    return answer


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


def test_pick_chosen_needs_the_answer_to_have_written_end() -> None:
    # A chosen is always " {text}\nEND": an answer the model never ended is not taken, even when it passes.
    answers = [_answer("greedy", "Paris", True, emitted_end=False), _answer("sample0", "It is Paris.", True, True)]
    assert pairs.pick_chosen(ROW, answers) == ("It is Paris.", "sft_model_sample0")
    only_end_less = [_answer("greedy", "Paris", True, emitted_end=False)]
    assert pairs.pick_chosen(ROW, only_end_less) == ("Paris", "stage01_response")
    # A missing emitted_end counts as True.
    assert pairs.pick_chosen(ROW, [_answer("greedy", "It is Paris.", True)]) == ("It is Paris.", "sft_model_greedy")


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
    # refusal sorted: -1, 0, 2, 3 -> mean 1.0; inclusive quartiles at positions 0.75, 1.5, 2.25 of 0..3:
    # q25 = -1 + 0.75 x 1 = -0.25, median = 0 + 0.5 x 2 = 1.0, q75 = 2 + 0.25 x 1 = 2.25; positive 2 of 4 (0 is not).
    assert stats["refusal"] == {"n": 4, "mean": 1.0, "q25": -0.25, "median": 1.0, "q75": 2.25, "min": -1.0,
                                "max": 3.0, "share_positive": 0.5}
    # One margin: every quantile is that margin.
    assert stats["incorrect"] == {"n": 1, "mean": -0.5, "q25": -0.5, "median": -0.5, "q75": -0.5, "min": -0.5,
                                  "max": -0.5, "share_positive": 0.0}
    assert stats["verbose"]["share_positive"] == 1.0
    assert pairs.margin_stats([]) == {}


def test_margin_stats_rounds_to_four_places() -> None:
    # 1/3, 2/3, 1: q25 at position 0.5 = 1/3 + 1/6 = 0.5; q75 at 1.5 = 2/3 + 1/6 = 0.8333.
    stats = pairs.margin_stats([{"negative_type": "format", "margin": m} for m in (1 / 3, 2 / 3, 1.0)])
    assert stats["format"] == {"n": 3, "mean": 0.6667, "q25": 0.5, "median": 0.6667, "q75": 0.8333, "min": 0.3333,
                               "max": 1.0, "share_positive": 1.0}


def test_margin_stats_two_margins() -> None:
    # Inclusive quartiles of two values interpolate between them: -2 + 0.25 x 6 = -0.5, 1.0, -2 + 0.75 x 6 = 2.5.
    stats = pairs.margin_stats([{"negative_type": "off_topic", "margin": m} for m in (4.0, -2.0)])
    assert stats == {"off_topic": {"n": 2, "mean": 1.0, "q25": -0.5, "median": 1.0, "q75": 2.5, "min": -2.0,
                                   "max": 4.0, "share_positive": 0.5}}


# --------------------------------------------------------------------------------------------------
# defect_stats
# --------------------------------------------------------------------------------------------------


def _pair(negative_type: str, has_end: bool, divergence: int, method: str) -> dict:
    return {"negative_type": negative_type, "rejected_has_end": has_end, "divergence_token": divergence,
            "method": method}


def test_defect_stats_hand_values() -> None:
    rows = [
        _pair("verbose", True, 0, "rule_elaboration"),
        _pair("format", False, 2, "sft_sample"),
        _pair("format", False, 0, "base_continuation"),
        _pair("format", True, 5, "sft_greedy"),
        _pair("format", False, 1, "rule_template_leak"),
        _pair("incorrect", True, 1, "sft_sample"),
    ]
    stats = pairs.defect_stats(rows)
    # Ordered as NEGATIVE_TYPES; types without pairs are absent.
    assert list(stats) == ["format", "incorrect", "verbose"]
    # format: divergence 2, 0, 5, 1 -> 3 share a prefix, median (1 + 2) / 2 = 1.5, max 5; on-policy: the sample
    # and the greedy answer (not the base continuation, not the rule); 3 of 4 rejected lack END.
    assert stats["format"] == {"n": 4, "rejected_without_end": 3, "shared_prefix": 3, "divergence_token_median": 1.5,
                               "divergence_token_max": 5, "on_policy": 2}
    assert stats["incorrect"] == {"n": 1, "rejected_without_end": 0, "shared_prefix": 1,
                                  "divergence_token_median": 1, "divergence_token_max": 1, "on_policy": 1}
    assert stats["verbose"] == {"n": 1, "rejected_without_end": 0, "shared_prefix": 0, "divergence_token_median": 0,
                                "divergence_token_max": 0, "on_policy": 0}
    assert pairs.defect_stats([]) == {}


# --------------------------------------------------------------------------------------------------
# build_pairs, on a byte-level tokenizer without merges: one token per (ASCII) character, so token counts are
# character counts and can be checked by hand.
# --------------------------------------------------------------------------------------------------


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # 256 byte symbols + 2 special tokens = 258: the vocabulary leaves no room for a single merge.
    backend.train_from_iterator([template.full_text("Calculate 2 plus 3.", "5")] * 10, trainers.BpeTrainer(
        vocab_size=258, special_tokens=["<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def byte_tokenizer():
    return _byte_tokenizer()


INSTRUCTION = "Calculate 2 plus 3."
SFT_ROWS = {"s1": {"id": "s1", "family": "arithmetic", "instruction": INSTRUCTION, "response": "5"}}
SFT_ANSWERS = {"s1": [{"sft_id": "s1", "source": "greedy", "response": "5", "emitted_end": True, "overall": True}]}


def _negative(negative_id: str, negative_type: str, method: str, response: str, emitted_end: bool,
              sft_id: str = "s1", instruction: str = INSTRUCTION) -> dict:
    return {"id": negative_id, "sft_id": sft_id, "family": "arithmetic", "instruction": instruction,
            "prompt": template.prompt(instruction), "type": negative_type, "method": method,
            "emitted_end": emitted_end, "response": response,
            "completion": template.completion(response) if emitted_end else " " + response,
            "failed_criteria": ["factually_correct"]}


def test_byte_tokenizer_is_one_token_per_character(byte_tokenizer) -> None:
    prompt = template.prompt(INSTRUCTION)
    assert len(byte_tokenizer(prompt)["input_ids"]) == len(prompt) == 42
    ids, mask = masks.tokenize_example(byte_tokenizer, prompt, " 5\nEND")
    assert byte_tokenizer.convert_ids_to_tokens([i for i, m in zip(ids, mask) if m]) == [
        "\u0120", "5", "\u010a", "E", "N", "D", "<eos>"]


def test_build_pairs_divergence_token_and_end_less_rejected(byte_tokenizer) -> None:
    negatives = [
        # format, END-less, as generated: " 5 plus 3 is 8 and" vs chosen " 5\nEND": " " and "5" shared, then
        # " " vs "\n": divergence 2.
        _negative("neg-0", "format", "sft_sample", "5 plus 3 is 8 and", False),
        # incorrect: " 7\nEND" vs " 5\nEND": only the leading space is shared.
        _negative("neg-1", "incorrect", "sft_sample", "7", True),
        # verbose, END-less, "55..." shares " 5" then "5" vs "\n": 2.
        _negative("neg-2", "verbose", "base_continuation", "55555 55555 55555", False),
        # refusal: " I ..." differs right after the space: 1.
        _negative("neg-3", "refusal", "rule_refusal", "I cannot help.", True),
    ]
    built, dropped, sources = pairs.build_pairs(byte_tokenizer, negatives, SFT_ROWS, SFT_ANSWERS, 128, "pair")
    assert dropped == {}
    assert sources == {"sft_model_greedy": 4}
    assert [p["id"] for p in built] == ["pair-00000", "pair-00001", "pair-00002", "pair-00003"]
    assert [p["negative_id"] for p in built] == ["neg-0", "neg-1", "neg-2", "neg-3"]
    assert [p["divergence_token"] for p in built] == [2, 1, 2, 1]
    assert [p["rejected_has_end"] for p in built] == [False, True, False, True]
    for pair, negative in zip(built, negatives):
        assert pair["prompt"] == "Instruction: Calculate 2 plus 3.\nResponse:"
        assert pair["chosen"] == " 5\nEND"
        assert pair["rejected"] == negative["completion"]  # exactly as the negative, never repaired
        assert pair["negative_type"] == negative["type"] and pair["method"] == negative["method"]
        assert pair["chosen_source"] == "sft_model_greedy" and pair["margin"] is None
        assert schemas.check_record("pairs", pair) == []
    assert built[0]["rejected"] == " 5 plus 3 is 8 and"
    assert "\nEND" not in built[0]["rejected"] and "\nEND" not in built[2]["rejected"]
    stats = pairs.defect_stats(built)
    assert stats["format"]["rejected_without_end"] == 1 and stats["format"]["on_policy"] == 1
    assert stats["verbose"]["on_policy"] == 0


def test_build_pairs_counts_every_drop_by_reason(byte_tokenizer) -> None:
    negatives = [
        _negative("neg-0", "incorrect", "sft_sample", "7", True, sft_id="unknown"),
        _negative("neg-1", "incorrect", "sft_sample", "7", True, instruction="Calculate 2 plus 4."),
        # An incorrect negative must end with END: the pair schema refuses its END-less rejected.
        _negative("neg-2", "incorrect", "sft_sample", "7", False),
        _negative("neg-3", "off_topic", "swap_other_family", "Paris", True),
    ]
    built, dropped, _ = pairs.build_pairs(byte_tokenizer, negatives, SFT_ROWS, SFT_ANSWERS, 128, "dev-pair")
    assert dropped == {"unknown_sft_id": 1, "prompt_mismatch": 1, "invalid:rejected": 1}
    assert [(p["id"], p["negative_id"], p["divergence_token"]) for p in built] == [("dev-pair-00000", "neg-3", 1)]


def test_build_pairs_drops_pairs_identical_after_truncation(byte_tokenizer) -> None:
    # 42 prompt tokens; cut at 44 both sides are the prompt + " 5": identical, dropped. At 45 "\n" vs " " differ.
    negative = _negative("neg-0", "format", "sft_sample", "5 plus 3 is 8 and", False)
    built, dropped, _ = pairs.build_pairs(byte_tokenizer, [negative], SFT_ROWS, SFT_ANSWERS, 44, "pair")
    assert built == [] and dropped == {"identical_after_truncation": 1}
    built, dropped, _ = pairs.build_pairs(byte_tokenizer, [negative], SFT_ROWS, SFT_ANSWERS, 45, "pair")
    assert len(built) == 1 and dropped == {}


def test_build_pairs_takes_a_passing_sample_or_the_stage01_response(byte_tokenizer) -> None:
    negative = _negative("neg-0", "incorrect", "sft_sample", "7", True)
    answers = {"s1": [{"source": "greedy", "response": "5 and more", "emitted_end": False, "overall": False},
                      {"source": "sample0", "response": "It is 5.", "emitted_end": True, "overall": True}]}
    built, _, sources = pairs.build_pairs(byte_tokenizer, [negative], SFT_ROWS, answers, 128, "pair")
    assert built[0]["chosen"] == " It is 5.\nEND" and sources == {"sft_model_sample0": 1}
    assert built[0]["divergence_token"] == 1
    built, _, sources = pairs.build_pairs(byte_tokenizer, [negative], SFT_ROWS, {"s1": []}, 128, "pair")
    assert built[0]["chosen"] == " 5\nEND" and sources == {"stage01_response": 1}


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
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
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
    got = logprobs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=1)
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(math.isfinite(v) and v < 0 for v in got)


def test_completion_logprobs_counts_completion_tokens_only(model, tokenizer) -> None:
    # The same completion after two different prompts scores differently only through the context: the prompt's
    # own tokens are never summed. A longer completion collects more (negative) terms.
    ids, mask = masks.tokenize_example(tokenizer, PROMPTS[0], COMPLETIONS[0])
    trained = sum(mask)
    assert 0 < trained < len(ids)
    assert ids[-1] == tokenizer.eos_token_id and mask[-1] == 1
    short, longer = logprobs.completion_logprobs(model, tokenizer, [PROMPTS[0]] * 2,
                                              [template.completion("5"), template.completion("5 5 5 5 5 5")], 2)
    assert longer < short


@pytest.mark.parametrize("batch_size", [3, 4])
def test_completion_logprobs_do_not_depend_on_batching_or_padding(model, tokenizer, batch_size: int) -> None:
    one = logprobs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=1)
    batched = logprobs.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert len(batched) == len(PROMPTS)
    assert batched == pytest.approx(one, abs=1e-4)


def test_completion_logprobs_margin_sign(model, tokenizer) -> None:
    chosen = logprobs.completion_logprobs(model, tokenizer, PROMPTS[:1], [template.completion("5")], 1)[0]
    rejected = logprobs.completion_logprobs(model, tokenizer, PROMPTS[:1],
                                            [template.completion("5 5 5 5 5 5 5 5")], 1)[0]
    assert chosen - rejected > 0  # the margin stored is chosen - rejected, signed
    assert logprobs.completion_logprobs(model, tokenizer, [], [], 4) == []


def test_completion_logprobs_of_an_end_less_rejected(model, tokenizer) -> None:
    # An END-less format rejected is scored as the trainer sees it: its text, then EOS (no END in between).
    end_less = " 5 5 and then Instruction: Add 1 and 1."
    ids, mask = masks.tokenize_example(tokenizer, PROMPTS[0], end_less)
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained.endswith(EOS) and "END" not in trained
    expected = _reference_logprob(model, tokenizer, PROMPTS[0], end_less)
    got = logprobs.completion_logprobs(model, tokenizer, PROMPTS[:2], [end_less, COMPLETIONS[1]], batch_size=2)
    assert got[0] == pytest.approx(expected, abs=1e-4)


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
