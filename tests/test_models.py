"""The embedded SmolLM2 folder and the real tokenizers (prepared by `python -m sensecf.models setup`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensecf import models


@pytest.fixture(scope="module")
def embedded():
    return models.load_embedded_model()


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SENSECF_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SENSECF_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "sensecf"


def test_converted_folder_is_plain_safetensors():
    folder = models.embedded_model_dir()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "config.json").is_file()
    assert not list(folder.glob("*.gguf")) and not list(folder.glob("*.bin"))


def test_embedded_model_parameters_and_special_tokens(embedded):
    model, tok = embedded
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.vocab_size == 49_152 == len(tok)
    # eos must be <|im_end|> (id 2): the GGUF conversion names <|im_start|> otherwise.
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 == model.generation_config.eos_token_id


def test_chat_template_renders_system_user_and_generation_prompt(embedded):
    _, tok = embedded
    text = tok.apply_chat_template(
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


def test_embedded_model_is_a_working_instruct_model(embedded):
    model, tok = embedded
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1] :])


def test_adapter_is_applied(tmp_path, embedded):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, _ = embedded
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.unload()  # give the shared fixture model back unwrapped
    loaded, tok = models.load_embedded_model(adapter=tmp_path / "adapter")
    assert isinstance(loaded, PeftModel)
    assert len(tok) == 49_152
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        models.load_embedded_model(adapter=tmp_path)


@pytest.mark.parametrize(("name", "size"), [("llama3_1", 128_256), ("mistral_v1", 32_000), ("smollm2", 49_152)])
def test_real_tokenizer_vocab_sizes(name, size):
    assert len(models.load_tokenizer(name)) == size


def test_llama31_special_tokens():
    tok = models.load_tokenizer("llama3_1")
    assert tok("Hello")["input_ids"] == [128_000, 9906]  # <|begin_of_text|> Hello
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 128_009


def test_mistral_v1_splits_digits_one_per_token():
    tok = models.load_tokenizer("mistral_v1")
    assert tok.tokenize("2024.5") == ["▁", "2", "0", "2", "4", ".", "5"]
    assert tok("hi")["input_ids"] == [1, 12014]  # <s> prepended like BioMistral's tokenizer


def test_mistral_v1_equals_sentencepiece():
    import sentencepiece as spm

    spm_path = models._package_dir("mistral_common") / "data" / models.MISTRAL_V1_SPM
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    tok = models.load_tokenizer("mistral_v1")
    # Code, punctuation, unicode, newlines; without literal special tokens, which a HF tokenizer
    # (like BioMistral's own) reads as specials while sentencepiece reads them as text.
    text = Path(__file__).read_text().replace("<s>", "").replace("</s>", "")
    assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
    assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text))


def test_unknown_tokenizer_name():
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2'"):
        models.load_tokenizer("gpt2")
