"""The optional real-model path, exercised offline on a tiny GPT-2 written by ``make_tiny_gpt2``.

Checks what the chapters rely on when a student swaps in a real model: the bridge loads from a local folder with no
network (the conftest guard fails any connection), the hook names exist, the bridge's logits are Hugging Face's, and
editing ``hook_pattern`` ablates a head.
"""

from __future__ import annotations

import pytest
import torch

from mechinterp_course import real_models

HOOKS_THE_COURSE_USES = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_post",
    "blocks.1.attn.hook_pattern",
]
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return real_models.make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), seed=0)


@pytest.fixture(scope="module")
def bridge(tiny_folder):
    return real_models.load_pretrained(tiny_folder, device="cpu")


@pytest.fixture()
def tokens():
    return torch.randint(0, real_models.TINY_VOCAB_SIZE, (3, 12), generator=torch.Generator().manual_seed(0))


def test_folder_holds_a_model_and_a_tokenizer(tiny_folder):
    names = {p.name for p in tiny_folder.iterdir()}
    assert {"config.json", "tokenizer.json"} <= names
    assert any(name.endswith(".safetensors") for name in names)


def test_tiny_tokenizer_round_trips_any_text():
    tokenizer = real_models.tiny_tokenizer()
    text = "When Mary and John went to the store, John gave a drink to Mary. ✓ ü"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte
    assert ids[:4] == list(b"When")
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids(real_models.END_OF_TEXT) == real_models.TINY_VOCAB_SIZE - 1


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = GPT2LMHeadModel.from_pretrained(real_models.make_tiny_gpt2(tmp_path / "a", seed=5))
    assert torch.equal(torch.rand(3), expected_next), "make_tiny_gpt2 must not move the global RNG"
    b = GPT2LMHeadModel.from_pretrained(real_models.make_tiny_gpt2(tmp_path / "b", seed=5))
    c = GPT2LMHeadModel.from_pretrained(real_models.make_tiny_gpt2(tmp_path / "c", seed=6))
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_bridge_config_matches_the_tiny_model(bridge):
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_model) == (
        real_models.TINY_N_LAYER,
        real_models.TINY_N_HEAD,
        real_models.TINY_N_EMBD,
    )
    assert bridge.cfg.d_vocab == real_models.TINY_VOCAB_SIZE
    assert not bridge.training
    assert bridge.to_str_tokens("hi")[1:] == ["h", "i"]  # BOS first, then one token per byte


def test_cache_has_the_hooks_the_course_uses(bridge, tokens):
    logits, cache = bridge.run_with_cache(tokens)
    assert logits.shape == (3, 12, real_models.TINY_VOCAB_SIZE)
    missing = [name for name in HOOKS_THE_COURSE_USES if name not in cache.keys()]
    assert not missing, f"missing hooks: {missing}"
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (3, real_models.TINY_N_HEAD, 12, 12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, real_models.TINY_N_HEAD, 12))
    assert torch.all(pattern.triu(1) == 0), "causal attention puts no weight on later positions"
    assert cache["blocks.0.hook_resid_pre"].shape == (3, 12, real_models.TINY_N_EMBD)


def test_bridge_logits_equal_hugging_face_logits(bridge, tiny_folder, tokens):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tiny_folder, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = hf(tokens).logits
        got = bridge(tokens)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_ablating_a_head_through_hook_pattern_changes_the_output(bridge, tokens):
    head = 1

    def ablate(pattern, hook):  # [batch, head, query, key]
        pattern = pattern.clone()
        pattern[:, head] = 0.0
        return pattern

    with torch.no_grad():
        clean = bridge(tokens)
        ablated = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", ablate)])
        again = bridge(tokens)
    assert (ablated - clean).abs().max() > 1e-3
    torch.testing.assert_close(again, clean)  # the hook was removed after the run


def test_missing_local_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(real_models.PretrainedUnavailableError, match="no such folder"):
        real_models.load_pretrained(tmp_path / "nowhere")


def test_hub_name_offline_gives_the_hint(monkeypatch):
    """With HF_HUB_OFFLINE set (conftest) and no cache, a Hub name fails fast with the course's hint."""
    from transformer_lens.model_bridge import TransformerBridge

    def offline_boot(name, **kwargs):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}")

    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(offline_boot))
    with pytest.raises(OSError, match="needs the network or a Hugging Face cache") as info:
        real_models.load_pretrained("gpt2")
    assert "mechinterp_course.models.load" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_hub_name_really_offline_fails_fast_with_the_hint():
    """The real thing, no monkeypatch: the conftest sets HF_HUB_OFFLINE, so nothing is attempted over the network."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported")
    if isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
        pytest.skip("this machine's Hugging Face cache holds gpt2")
    with pytest.raises(real_models.PretrainedUnavailableError, match="needs the network or a Hugging Face cache"):
        real_models.load_pretrained("gpt2", device="cpu")


def test_should_load_never_surprises_a_laptop_with_a_download(monkeypatch):
    assert real_models.should_load("gpt2", True)[0] and not real_models.should_load("gpt2", False)[0]
    monkeypatch.setattr(real_models, "is_cached", lambda name: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    load, why = real_models.should_load("gpt2")
    assert not load and "550 MB" in why
    monkeypatch.setattr(real_models, "is_cached", lambda name: True)
    assert real_models.should_load("gpt2") == (True, "gpt2 is in the Hugging Face cache")
    with pytest.raises(ValueError, match="auto"):
        real_models.should_load("gpt2", "yes")


def test_backup_measurement_runs_on_the_tiny_gpt2(bridge):
    """Chapter 03's GPT-2 section (ARENA's hydra measurement) on the offline tiny GPT-2: the code path runs, and its
    identities hold: predicted = clean - direct effect; ablating with the prompts' own mean changes nothing."""
    from mechinterp_course.backup import language

    names = ["A", "B", "C", "D", "E", "F"]  # one byte each: one token in the tiny byte-level tokenizer
    prompts = language.ioi_prompts(bridge.tokenizer, n_per_template=4, names=names)
    for group in prompts.values():
        assert group.tokens.shape == group.abc_tokens.shape and len(group.io) == 4
        assert (group.io != group.s).all()
    result = language.backup_measurement(bridge, prompts, layer=1, head=0)
    assert set(result) == set(language.ARENA_BACKUP)
    assert result["predicted_after_ablation"] == pytest.approx(result["logit_diff"] - result["direct_effect"])
    # One prompt per template whose ABC twin is itself: the mean is the head's own value, the ablation a no-op.
    same = {
        k: language.IOIPrompts(g.tokens[:1], g.io[:1], g.s[:1], g.template[:1], g.tokens[:1])
        for k, g in prompts.items()
    }
    noop = language.backup_measurement(bridge, same, layer=1, head=0)
    assert noop["direct_effect"] == pytest.approx(0, abs=1e-5)
    assert noop["measured_after_ablation"] == pytest.approx(noop["logit_diff"], abs=1e-5)
    assert noop["ln_scale_ratio"] == pytest.approx(1, abs=1e-5)
