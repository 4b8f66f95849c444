"""Base-model detection (:func:`alignkit.modeling.check_base_model`) on checkpoint files shaped like the real ones.

Each folder below holds the ``tokenizer_config.json``, ``generation_config.json`` and ``config.json`` fields that
the public Qwen2.5, Llama 3.1 and Mistral checkpoints ship (trimmed to what detection reads), saved under the
neutral folder name ``checkpoint`` so that only the files can decide. Qwen2.5 and Llama 3.1 *base* checkpoints
carry a chat template; they must be accepted. The instruct ones end turns with ``<|im_end|>`` / ``<|eot_id|>``
and must be refused with the fix in the message.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from alignkit.config import ConfigError, ModelSettings, resolve
from alignkit.modeling import check_base_model, instruct_signals

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                   "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}")


def _added(tokens: dict[int, str]) -> dict[str, dict]:
    return {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True} for i, t in tokens.items()}


QWEN_ADDED = _added({151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"})
LLAMA3_ADDED = _added({128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128008: "<|eom_id|>",
                       128009: "<|eot_id|>"})
QWEN_TOKENIZER = {"add_bos_token": False, "added_tokens_decoder": QWEN_ADDED, "bos_token": None,
                  "chat_template": CHATML, "clean_up_tokenization_spaces": False, "errors": "replace",
                  "model_max_length": 131072,
                  "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
                  "unk_token": None}
LLAMA3_TOKENIZER = {"added_tokens_decoder": LLAMA3_ADDED, "bos_token": "<|begin_of_text|>",
                    "chat_template": LLAMA3_TEMPLATE, "clean_up_tokenization_spaces": True,
                    "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}

#: name -> (tokenizer_config.json, generation_config.json, config.json), as the public checkpoints ship them.
SHAPES: dict[str, tuple[dict, dict, dict]] = {
    "Qwen2.5-7B": (
        {**QWEN_TOKENIZER, "eos_token": "<|endoftext|>"},
        {"bos_token_id": 151643, "do_sample": False, "eos_token_id": 151643, "max_new_tokens": 2048},
        {"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "model_type": "qwen2"}),
    "Qwen2.5-7B-Instruct": (
        {**QWEN_TOKENIZER, "eos_token": "<|im_end|>"},
        {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
         "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
        {"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645, "model_type": "qwen2"}),
    "Llama-3.1-8B": (
        {**LLAMA3_TOKENIZER, "eos_token": "<|end_of_text|>"},
        # The Llama 3.1 base generation config samples by default: sampling alone is no chat signal.
        {"bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001, "temperature": 0.6, "top_p": 0.9},
        {"architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001, "model_type": "llama"}),
    "Llama-3.1-8B-Instruct": (
        {**LLAMA3_TOKENIZER, "eos_token": "<|eot_id|>"},
        {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6,
         "top_p": 0.9},
        {"architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
         "model_type": "llama"}),
    "Mistral-7B-v0.1": (
        {"add_bos_token": True, "add_eos_token": False,
         "added_tokens_decoder": _added({0: "<unk>", 1: "<s>", 2: "</s>"}),
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "legacy": True,
         "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": False},
        {"bos_token_id": 1, "eos_token_id": 2},
        {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "model_type": "mistral"}),
}


def checkpoint(root: Path, shape: str, **replace: dict) -> Path:
    """A folder named ``checkpoint`` with the three JSON files of ``shape`` (``replace`` swaps whole files)."""
    folder = root / shape / "checkpoint"
    folder.mkdir(parents=True)
    files = dict(zip(("tokenizer_config.json", "generation_config.json", "config.json"), SHAPES[shape]))
    files.update({name.replace("_json", ".json"): value for name, value in replace.items()})
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value), encoding="utf-8")
    return folder


def _cfg(base: str | Path, allow: bool = False) -> ModelSettings:
    return ModelSettings(base=str(base), allow_instruct=allow)


@pytest.mark.parametrize("shape,template", [("Qwen2.5-7B", True), ("Llama-3.1-8B", True), ("Mistral-7B-v0.1", False)])
def test_base_checkpoints_are_accepted_with_or_without_a_chat_template(tmp_path, caplog, shape, template):
    folder = checkpoint(tmp_path, shape)
    with caplog.at_level(logging.INFO, logger="alignkit.modeling"):
        found = check_base_model(str(folder), _cfg(folder))
    assert found.signals == () and not found.instruct
    assert found.chat_template is template
    logged = "carries a chat template; alignkit never applies it" in caplog.text
    assert logged is template


@pytest.mark.parametrize("shape,token", [("Qwen2.5-7B-Instruct", "<|im_end|>"),
                                         ("Llama-3.1-8B-Instruct", "<|eot_id|>")])
def test_instruct_checkpoints_are_refused_by_their_own_files(tmp_path, shape, token):
    folder = checkpoint(tmp_path, shape)
    with pytest.raises(ConfigError) as refused:
        check_base_model(str(folder), _cfg(folder))
    message = str(refused.value)
    assert message.startswith(f"model.base: '{folder}' looks like an instruction-tuned or chat model: ")
    assert f"EOS token is '{token}', which closes a chat turn" in message
    assert re.search(rf"generation_config.json stops generation at [^;]*{re.escape(repr(token))}", message)
    assert "Use a base (pretrained-only) checkpoint, or set model.allow_instruct=true" in message


def test_the_generation_config_alone_marks_a_chat_checkpoint(tmp_path):
    # A base-looking tokenizer (EOS <|endoftext|>) on weights whose generation config stops at <|im_end|>.
    base_tokenizer, _, base_config = SHAPES["Qwen2.5-7B"]
    instruct_generation = SHAPES["Qwen2.5-7B-Instruct"][1]
    folder = checkpoint(tmp_path, "Qwen2.5-7B", generation_config_json=instruct_generation)
    with pytest.raises(ConfigError, match=r"generation_config.json stops generation at '<\|im_end\|>'") as refused:
        check_base_model(str(folder), _cfg(folder))
    assert "EOS token" not in str(refused.value)
    assert instruct_signals("ckpt", tokenizer_config=base_tokenizer, generation_config={"eos_token_id": 151643},
                            model_config=base_config) == []


@pytest.mark.parametrize("name,fix", [
    ("Qwen/Qwen2.5-7B-Instruct", "model.base=Qwen/Qwen2.5-7B"),
    ("meta-llama/Llama-3.1-8B-Instruct", "model.base=meta-llama/Llama-3.1-8B"),
    ("google/gemma-2-9b-it", "model.base=google/gemma-2-9b"),
    ("mistralai/Mistral-7B-Instruct-v0.2", "model.base=mistralai/Mistral-7B-v0.2"),
])
def test_hub_names_of_instruct_variants_are_refused_with_the_base_name(name, fix):
    with pytest.raises(ConfigError) as refused:
        check_base_model(name, _cfg(name))
    assert f"the name {name.split('/')[1]!r} marks an instruction-tuned/chat variant" in str(refused.value)
    assert f"Use its base checkpoint (e.g. {fix}), or set model.allow_instruct=true" in str(refused.value)


def test_hub_names_of_base_models_pass_before_any_download():
    for name in ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-32B", "meta-llama/Llama-3.1-8B",
                 "mistralai/Mistral-7B-v0.1"):
        assert check_base_model(name, _cfg(name)).signals == ()


def test_the_original_name_in_config_json_counts(tmp_path):
    # A local copy of an instruct model under a neutral folder name still says where it came from.
    folder = checkpoint(tmp_path, "Mistral-7B-v0.1", config_json={"_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
                                                                    "architectures": ["MistralForCausalLM"]})
    with pytest.raises(ConfigError, match="the name 'Mistral-7B-Instruct-v0.2' marks an instruction-tuned"):
        check_base_model(str(folder), _cfg(folder))


def _tokenizer(eos: str, template: str | None):
    """A loaded fast tokenizer with ChatML specials, its EOS and (optionally) a chat template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "hello": 3}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="hello")),
                                        eos_token=eos, pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    return tokenizer


def test_a_loaded_tokenizer_is_judged_by_its_eos_not_its_template():
    name = "org/some-model"
    found = check_base_model(name, _cfg(name), _tokenizer("<|endoftext|>", CHATML))
    assert found.signals == () and found.chat_template
    with pytest.raises(ConfigError, match=r"EOS token is '<\|im_end\|>'"):
        check_base_model(name, _cfg(name), _tokenizer("<|im_end|>", None))
    # Stop ids are mapped to tokens through the loaded tokenizer when the files have no added_tokens_decoder.
    assert instruct_signals(name, _tokenizer("<|endoftext|>", None), generation_config={"eos_token_id": [2, 0]}) == \
        ["generation_config.json stops generation at '<|im_end|>', which closes a chat turn"]


def test_allow_instruct_uses_the_checkpoint_and_says_why_it_looks_tuned(tmp_path, caplog):
    folder = checkpoint(tmp_path, "Qwen2.5-7B-Instruct")
    with caplog.at_level(logging.WARNING, logger="alignkit.modeling"):
        found = check_base_model(str(folder), _cfg(folder, allow=True))
    assert found.instruct and len(found.signals) == 3  # EOS, generation_config.json, config.json
    assert "used anyway because model.allow_instruct=true" in caplog.text


def test_external_base_checks_a_local_folder_before_any_stage(tmp_path):
    from alignkit.world.tinybase import external_base

    base = checkpoint(tmp_path, "Qwen2.5-7B")
    assert external_base(resolve("smoke", overrides=[f"model.base={base}"])) == base.resolve()
    instruct = checkpoint(tmp_path, "Qwen2.5-7B-Instruct")
    with pytest.raises(ConfigError, match=r"EOS token is '<\|im_end\|>'"):
        external_base(resolve("smoke", overrides=[f"model.base={instruct}"]))
