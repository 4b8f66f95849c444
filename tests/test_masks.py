"""Tests for alignkit.masks with tokenizers trained inside the test.

Three real tokenizers, each trained here in well under a second:

* ``bytelevel``: byte-level BPE with the GPT-2 regex pre-tokenizer (as alignkit's tiny base model uses). Words,
  punctuation runs and " word"/" 42" are separate pre-tokens, so no merge can cross "Response:" | " 5".
* ``metaspace_bos``: SentencePiece/Llama-2 style (Metaspace "▁", a BOS prepended by the post-processor).
* ``merging``: byte-level BPE *without* the regex split, so merges run across spaces and colons. Trained on
  template text, it learns tokens such as "\\nResponse: " that swallow the boundary between prompt and
  completion: exactly the failure the mask check exists to catch.
"""

from __future__ import annotations

import ast
import random
import re

import pytest
import torch

from alignkit import masks, template

EOS, PAD = "</s>", "<pad>"

WORDS = ("add the numbers what is capital of france paris reverse word list three colors red green blue answer "
         "city name first letter of upper case sentence about rivers compare larger smaller").split()


def _corpus(n: int = 600, seed: int = 0) -> list[str]:
    """Template documents in which "Response: ", leading-space digits and punctuation answers are frequent."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        instruction = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) + rng.choice([".", "?", ""])
        response = rng.choice([
            str(rng.randint(0, 999)),
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))),
            "...", "42", "(yes)", "- red, green",
        ])
        texts.append(template.full_text(instruction, response))
    return texts


def _wrap(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **special)


def _bytelevel(use_regex: bool = True, trim_offsets: bool | None = None, vocab_size: int = 500):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    if trim_offsets is not None:
        # processors.ByteLevel() defaults to trim_offsets=True: offsets then exclude a token's leading space.
        tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    return _wrap(tok, eos_token=EOS, pad_token=PAD)


def _metaspace_bos():
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", EOS, PAD], show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return _wrap(tok, bos_token="<s>", eos_token=EOS, pad_token=PAD, unk_token="<unk>")


def _trailing_sep():
    """A tokenizer whose post-processor appends a special token after every text (after EOS, too)."""
    from tokenizers import processors

    wrapped = _bytelevel()
    backend = wrapped.backend_tokenizer
    backend.add_special_tokens(["<sep>"])
    backend.post_processor = processors.TemplateProcessing(
        single="$A <sep>", special_tokens=[("<sep>", backend.token_to_id("<sep>"))])
    return _wrap(backend, eos_token=EOS, pad_token=PAD)


@pytest.fixture(scope="module")
def tok():
    return _bytelevel()


@pytest.fixture(scope="module")
def merging():
    return _bytelevel(use_regex=False, vocab_size=600)


def _pc(instruction: str, response: str) -> tuple[str, str]:
    return template.prompt(instruction), template.completion(response)


EXAMPLES = [("add 2 and 3.", "5"), ("what is 40 plus 2?", "42"), ("say the dots", "..."),
            ("list three colors", "red, green, blue"), ("capital of france?", "Paris"),
            ("answer yes", "(yes)"), ("write a sentence about rivers", "Rivers flow to the sea.")]


# ---------------------------------------------------------------------------------------------- helpers
def test_common_prefix_length():
    assert masks.common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert masks.common_prefix_length([], [1]) == 0
    assert masks.common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert masks.common_prefix_length([1, 2, 3], [1, 2]) == 2
    assert masks.common_prefix_length([9], [1]) == 0


def test_tokenize_example_appends_eos_once(tok):
    prompt, completion = _pc("add 2 and 3.", "5")
    ids, mask = masks.tokenize_example(tok, prompt, completion)
    assert ids == tok(prompt + completion + EOS)["input_ids"]
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    # A completion that already ends with EOS is not given a second one.
    assert masks.tokenize_example(tok, prompt, completion + EOS) == (ids, mask)
    # Mask: zeros over the prompt tokens, ones after them.
    n_prompt = len(tok(prompt)["input_ids"])
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)


# ---------------------------------------------------------------------------------------------- (1) good tokenizers
@pytest.mark.parametrize("instruction, response", EXAMPLES)
def test_check_example_ok_for_bytelevel_bpe(tok, instruction, response):
    prompt, completion = _pc(instruction, response)
    check = masks.check_example(tok, prompt, completion)
    assert check.ok, check.problem
    assert check.problem == ""
    assert check.text == prompt + completion + EOS
    assert check.prompt_chars == len(prompt)
    # The first trained token starts exactly where the completion does.
    first = check.mask.index(1)
    assert check.offsets[first][0] == len(prompt)
    assert tok.decode(check.input_ids[first:]) == completion + EOS
    assert tok.decode(check.input_ids[:first]) == prompt


@pytest.mark.parametrize("response", ["...", "42"])
def test_response_starting_with_punctuation_or_digit_keeps_its_space(tok, response):
    # " ..." / " 42": the leading space belongs to the completion token, and ":" stays in the prompt.
    prompt, completion = _pc("x", response)
    check = masks.check_example(tok, prompt, completion)
    assert check.ok, check.problem
    first = check.mask.index(1)
    assert tok.decode([check.input_ids[first]]).startswith(" ")
    assert tok.decode([check.input_ids[first - 1]]).endswith(":")


@pytest.mark.parametrize("instruction, response", EXAMPLES[:4])
def test_check_example_ok_for_metaspace_with_bos(instruction, response):
    sp = _metaspace_bos()
    prompt, completion = _pc(instruction, response)
    check = masks.check_example(sp, prompt, completion)
    assert check.input_ids[0] == sp.bos_token_id and check.mask[0] == 0
    assert check.ok, check.problem


def test_check_dataset_ids_and_results(tok):
    rows = [{"id": f"r{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(_pc(*e) for e in EXAMPLES)]
    results = masks.check_dataset(tok, rows)
    assert [row_id for row_id, _ in results] == [f"r{i}" for i in range(len(EXAMPLES))]
    assert all(check.ok for _, check in results)
    # Rows without an id are numbered by position.
    assert [row_id for row_id, _ in masks.check_dataset(tok, [{"prompt": "a", "completion": " b\nEND"}])] == ["0"]


def test_check_example_ok_with_trimmed_offsets():
    trimming = _bytelevel(trim_offsets=True)
    prompt, completion = _pc("add 2 and 3.", "5")
    ids, mask = masks.tokenize_example(trimming, prompt, completion)
    # The mask itself is right: the trained tokens decode to exactly the completion + EOS.
    first = mask.index(1)
    assert trimming.decode(ids[first:]) == completion + EOS
    check = masks.check_example(trimming, prompt, completion)
    assert check.ok, check.problem


def test_check_example_ok_with_untrimmed_bytelevel_post_processor():
    untrimmed = _bytelevel(trim_offsets=False)
    prompt, completion = _pc("add 2 and 3.", "5")
    check = masks.check_example(untrimmed, prompt, completion)
    assert check.ok, check.problem


# ---------------------------------------------------------------------------------------------- (2) real merges
def _boundary_tokens(tokenizer, prompt: str, completion: str) -> list[str]:
    """Tokens of prompt + completion + EOS whose characters straddle the prompt/completion boundary."""
    encoded = tokenizer(prompt + completion + EOS, return_offsets_mapping=True)
    cut = len(prompt)
    return [tokenizer.decode([i]) for i, (s, e) in zip(encoded["input_ids"], encoded["offset_mapping"])
            if s < cut < e]


@pytest.mark.parametrize("instruction, response", EXAMPLES[:4])
def test_cross_boundary_merge_is_detected(merging, instruction, response):
    prompt, completion = _pc(instruction, response)
    # The construction is real: some token spans "...Response:" | " ..." in the full text ...
    crossing = _boundary_tokens(merging, prompt, completion)
    assert crossing, "the merging tokenizer did not merge across the boundary; the test would prove nothing"
    assert any(":" in piece and " " in piece for piece in crossing)
    # ... so the prompt alone is not a prefix of the full tokenisation (TRL's symptom) ...
    prompt_ids = merging(prompt)["input_ids"]
    ids, mask = masks.tokenize_example(merging, prompt, completion)
    assert masks.common_prefix_length(prompt_ids, ids) < len(prompt_ids)
    # ... and the check refuses the mask TRL would train with, naming the prompt text it would train on.
    check = masks.check_example(merging, prompt, completion)
    assert (check.input_ids, check.mask) == (ids, mask)
    assert not check.ok
    assert check.problem.startswith("trained tokens start inside the prompt: ")
    assert "a BPE merge across the prompt/completion boundary" in check.problem
    leaked = re.search(r"start inside the prompt: (.*) is trained", check.problem).group(1)
    assert prompt.endswith(ast.literal_eval(leaked))  # the quoted text is the trained tail of the prompt


def test_check_dataset_reports_merges(merging):
    rows = [{"id": "m1", "prompt": template.prompt("add 2 and 3."), "completion": template.completion("5")}]
    [(row_id, check)] = masks.check_dataset(merging, rows)
    assert row_id == "m1" and not check.ok and "prompt" in check.problem


# ---------------------------------------------------------------------------------------------- (3) bad masks
@pytest.fixture(scope="module")
def example(tok):
    """'add 2 and 3.' -> '5': ids, mask and index of the first completion token."""
    prompt, completion = _pc("add 2 and 3.", "5")
    ids, mask = masks.tokenize_example(tok, prompt, completion)
    first = mask.index(1)
    # " 5", "\n", "END", "</s>": four trained tokens, so the variants below keep some trained.
    assert [tok.decode([i]) for i in ids[first:]] == [" 5", "\n", "END", EOS]
    return prompt, completion, ids, mask, first


def _check(tok, example, mask):
    prompt, completion, ids, _mask, _first = example
    return masks.check_example(tok, prompt, completion, ids, mask)


def test_hand_mask_correct(tok, example):
    assert _check(tok, example, example[3]).ok


def test_hand_mask_trains_a_prompt_token(tok, example):
    mask = list(example[3])
    mask[example[4] - 1] = 1  # also train ":" of "Response:"
    check = _check(tok, example, mask)
    assert not check.ok
    assert check.problem == ("trained tokens start inside the prompt: ':' is trained "
                             "(a BPE merge across the prompt/completion boundary)")


def test_hand_mask_trains_everything(tok, example):
    check = _check(tok, example, [1] * len(example[2]))
    assert not check.ok and check.problem.startswith("trained tokens start inside the prompt: 'Instruction")


def test_hand_mask_trains_first_prompt_token_too(tok, example):
    mask = list(example[3])
    mask[0] = 1
    assert _check(tok, example, mask).problem == "trained tokens are not one span at the end of the sequence"


def test_hand_mask_misses_the_eos(tok, example):
    mask = list(example[3])
    mask[-1] = 0
    check = _check(tok, example, mask)
    assert not check.ok
    assert check.problem == "trained tokens are not one span at the end of the sequence"


def test_hand_mask_leaves_first_completion_token_untrained(tok, example):
    mask = list(example[3])
    mask[example[4]] = 0  # " 5" not trained: the model would never learn the answer itself
    check = _check(tok, example, mask)
    assert not check.ok
    assert check.problem == "completion characters ' 5' are not trained"


def test_hand_mask_leaves_a_middle_completion_token_untrained(tok, example):
    mask = list(example[3])
    mask[example[4] + 2] = 0  # "END"
    assert _check(tok, example, mask).problem == "trained tokens are not one span at the end of the sequence"


def test_hand_mask_trains_nothing(tok, example):
    assert _check(tok, example, [0] * len(example[2])).problem == "no token is trained"


def test_ids_without_eos_are_refused(tok, example):
    prompt, completion, _ids, _mask, first = example
    ids = tok(prompt + completion)["input_ids"]  # no EOS: the model would never learn to stop
    mask = [0] * first + [1] * (len(ids) - first)
    check = masks.check_example(tok, prompt, completion, ids, mask)
    assert not check.ok
    assert check.problem.startswith("training ids differ from the full text's tokenisation")


def test_last_trained_token_not_eos():
    sep = _trailing_sep()
    prompt, completion = _pc("add 2 and 3.", "5")
    ids, mask = masks.tokenize_example(sep, prompt, completion)
    assert sep.convert_ids_to_tokens(ids[-2:]) == [EOS, "<sep>"]
    check = masks.check_example(sep, prompt, completion)
    assert not check.ok and check.problem == "the last trained token is not EOS"


def _collate(tok, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-pad (ids, mask) pairs into a batch the way TRL's collator does (labels -100 where not trained)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids, labels, attention = [], [], []
    for ids, mask in examples:
        pad = width - len(ids)
        input_ids.append(ids + [tok.pad_token_id] * pad)
        labels.append([i if m else -100 for i, m in zip(ids, mask)] + [-100] * pad)
        attention.append([1] * len(ids) + [0] * pad)
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(attention)}


@pytest.fixture(scope="module")
def batch_rows():
    return [{"id": "short", "prompt": template.prompt("x"), "completion": template.completion("5")},
            {"id": "long", "prompt": template.prompt("list three colors please"),
             "completion": template.completion("red, green, blue")}]


def test_check_batch_correct(tok, batch_rows):
    batch = _collate(tok, [masks.tokenize_example(tok, r["prompt"], r["completion"]) for r in batch_rows])
    assert (batch["attention_mask"][0] == 0).any()  # the short row really is padded
    assert masks.check_batch(tok, batch, batch_rows) == []


def test_check_batch_trained_padding(tok, batch_rows):
    batch = _collate(tok, [masks.tokenize_example(tok, r["prompt"], r["completion"]) for r in batch_rows])
    padded = (batch["attention_mask"][0] == 0).nonzero()[0, 0]
    batch["labels"][0, padded] = tok.pad_token_id
    assert masks.check_batch(tok, batch, batch_rows) == ["short: padding tokens are trained"]


def test_check_batch_trained_prompt_token(tok, batch_rows):
    pairs = [masks.tokenize_example(tok, r["prompt"], r["completion"]) for r in batch_rows]
    ids, mask = pairs[1]
    mask = list(mask)
    mask[mask.index(1) - 1] = 1
    problems = masks.check_batch(tok, _collate(tok, [pairs[0], (ids, mask)]), batch_rows)
    assert problems == ["long: trained tokens start inside the prompt: ':' is trained "
                        "(a BPE merge across the prompt/completion boundary)"]


def test_check_batch_rows_in_the_wrong_order(tok, batch_rows):
    batch = _collate(tok, [masks.tokenize_example(tok, r["prompt"], r["completion"]) for r in batch_rows])
    problems = masks.check_batch(tok, batch, batch_rows[::-1])
    assert len(problems) == 2 and all("training ids differ" in p for p in problems)


def _trained_everywhere(batch: dict) -> dict:
    """The batch with every real token trained on its own id, as the unmasked ablation (sft.loss_on=all) wants."""
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


def test_check_batch_loss_on_all_wants_every_real_token_and_no_padding(tok, batch_rows):
    masked = _collate(tok, [masks.tokenize_example(tok, r["prompt"], r["completion"]) for r in batch_rows])
    everything = _trained_everywhere(masked)
    assert masks.check_batch(tok, everything, batch_rows, loss_on="all") == []
    # the study's own mask is not what the ablation trains on, and the ablation's is not the study's
    assert masks.check_batch(tok, masked, batch_rows, loss_on="all") == [
        "short: loss_on=all but some real tokens are not trained on their own id",
        "long: loss_on=all but some real tokens are not trained on their own id"]
    assert all("start inside the prompt" in p for p in masks.check_batch(tok, everything, batch_rows))
    padded = (everything["attention_mask"][0] == 0).nonzero()[0, 0]
    everything["labels"][0, padded] = tok.pad_token_id
    assert masks.check_batch(tok, everything, batch_rows, loss_on="all") == ["short: padding tokens are trained"]


def test_check_batch_merging_tokenizer(merging, batch_rows):
    batch = _collate(merging, [masks.tokenize_example(merging, r["prompt"], r["completion"]) for r in batch_rows])
    problems = masks.check_batch(merging, batch, batch_rows)
    assert [p.split(":")[0] for p in problems] == ["short", "long"]
    assert all("start inside the prompt" in p for p in problems)


# ---------------------------------------------------------------------------------------------- (4) marked
def _marked_parts(marked: str) -> tuple[str, str, str]:
    """(text before the first mark, concatenation of the marked pieces, text with the marks removed)."""
    before = marked.split("[[", 1)[0]
    inside = "".join(re.findall(r"\[\[(.*?)\]\]", marked, flags=re.S))
    return before, inside, marked.replace("[[", "").replace("]]", "")


@pytest.mark.parametrize("instruction, response", EXAMPLES)
def test_marked_marks_exactly_the_completion(tok, instruction, response):
    prompt, completion = _pc(instruction, response)
    marked = masks.check_example(tok, prompt, completion).marked(tok)
    before, inside, plain = _marked_parts(marked)
    assert before == prompt
    assert inside == completion + EOS
    assert plain == prompt + completion + EOS
    assert marked.endswith("]]")


def test_marked_exact_string(tok):
    prompt, completion = _pc("add 2 and 3.", "5")
    marked = masks.check_example(tok, prompt, completion).marked(tok)
    assert marked == "Instruction: add 2 and 3.\nResponse:[[ 5]][[\n]][[END]][[</s>]]"


def test_marked_shows_the_leaked_prompt_text(merging):
    prompt, completion = _pc("add 2 and 3.", "5")
    marked = masks.check_example(merging, prompt, completion).marked(merging)
    before, inside, plain = _marked_parts(marked)
    assert plain == prompt + completion + EOS
    assert len(before) < len(prompt)  # marks begin inside the prompt
    assert inside.endswith(completion + EOS) and inside != completion + EOS


# ---------------------------------------------------------------------------------------------- (5) TRL
def _trl_trainer(tokenizer, rows, output_dir, **extra_args):
    import datasets
    import trl
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id))
    args = trl.SFTConfig(**{"output_dir": str(output_dir), "completion_only_loss": True, "max_length": 64,
                            "per_device_train_batch_size": 2, "use_cpu": True, "report_to": [], **extra_args})
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def _trl_rows():
    pairs = [("add 2 and 3.", "5"), ("say the dots", "..."), ("what is 40 plus 2?", "42"),
             ("list three colors", "red, green, blue")]
    return [{"id": f"r{i}", "prompt": template.prompt(a), "completion": template.completion(b)}
            for i, (a, b) in enumerate(pairs)]


def _trainer_mask(example: dict) -> list[int]:
    # TRL 1.16 folds `completion_mask` into `labels` (-100 = not trained) during dataset preparation.
    if "completion_mask" in example:
        return list(example["completion_mask"])
    return [int(label != -100) for label in example["labels"]]


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace_bos", "merging"])
def test_tokenisation_equals_trl_sft_trainer(tok, merging, kind, tmp_path):
    tokenizer = {"bytelevel": tok, "metaspace_bos": _metaspace_bos(), "merging": merging}[kind]
    rows = _trl_rows()
    trainer = _trl_trainer(tokenizer, rows, tmp_path)
    dataset = trainer.train_dataset
    assert len(dataset) == len(rows)
    for i, row in enumerate(rows):
        ids, mask = masks.tokenize_example(tokenizer, row["prompt"], row["completion"])
        assert dataset[i]["input_ids"] == ids, row["id"]
        assert _trainer_mask(dataset[i]) == mask, row["id"]
    batch = trainer.data_collator([dataset[i] for i in range(len(rows))])
    problems = masks.check_batch(tokenizer, batch, rows)
    if kind == "merging":
        # TRL trains the merged boundary token; alignkit's check catches it on the trainer's own batch.
        assert len(problems) == len(rows)
        assert all("start inside the prompt" in p for p in problems)
    else:
        assert problems == []


def test_sft_loss_on_all_trains_the_prompt_in_the_trainers_own_batches(tok, tmp_path):
    """sft.loss_on=all turns TRL's completion-only loss off: the trainer's collated batches train the prompt too,
    which the stage's check accepts under loss_on=all and refuses under the study's completion-only rule."""
    from alignkit.stages import sft

    rows = _trl_rows()
    trainer = _trl_trainer(tok, rows, tmp_path, completion_only_loss=False)
    assert sft.verify_trainer_batches(trainer, tok, rows, loss_on="all") == len(rows)
    with pytest.raises(sft.MaskError, match="start inside the prompt"):
        sft.verify_trainer_batches(trainer, tok, rows, loss_on="completion")


def test_sft_verify_trainer_batches_with_shuffled_dataset(tok, tmp_path):
    from alignkit.stages import sft

    rows = _trl_rows() + [{"id": f"s{i}", "prompt": template.prompt(f"word {w}"), "completion": template.completion(w)}
                          for i, w in enumerate(["red", "green", "blue", "paris"])]
    shuffled = _trl_trainer(tok, rows, tmp_path, shuffle_dataset=True)
    # The precondition of the bug: the prepared dataset is no longer in input order.
    assert [r["prompt"] for r in shuffled.train_dataset] != [r["prompt"] for r in rows]
    assert sft.verify_trainer_batches(shuffled, tok, rows, n_batches=4) == len(rows)
