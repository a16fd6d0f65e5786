"""Probe sampling with transformers (hf_generate.sample) and Best-of-N's reward model.

sample() keeps one log-probability per generated token, not the logits of every step,
and stops at the run's markers through transformers' stop strings; its numbers must be
the ones the earlier implementation (generate's full ``output_logits``) gave.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from overmem.evaluation.hf_generate import _logprob_recorder, _stop_options, sample, sample_batch
from overmem.probes import diversity
from tests.helpers import tiny_reward_model, word_tokenizer

TEMPERATURE = 0.7  # not 1, so a tempered log-probability would differ from the untempered one
CORPUS = ["### Instruction: add the apples and the pears", "### Response: she has 12 apples and 4 pears",
          "then 8 + 4 = 12 stickers in all", "#### 12"]


def bpe_tokenizer():
    """A byte-level BPE over ASCII (vocab about 150): a tokenizer whose vocabulary
    transformers' stop strings can read, unlike a word-level one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(vocab_size=160,
                                                            special_tokens=["<pad>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(tokenizer, seed: int = 0):
    from transformers import LlamaForCausalLM

    from overmem.models.tiny import tiny_config

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(tokenizer, hidden=64, layers=2)).eval()


@pytest.fixture(scope="module")
def bpe_model():
    tok = bpe_tokenizer()
    return tiny_llama(tok), tok


def _prompts(tok) -> list[list[int]]:
    """Three prompts of different lengths (left padding in one batch)."""
    return [tok(t).input_ids for t in ("### Instruction: add", "she has 12 apples", "then 8")]


def _old_sample(model, tok, prompts, n, seed, max_new_tokens):
    """The earlier implementation: full logits of every step from generate, then log-softmax."""
    from overmem.evaluation.hf_generate import _batches, _strip

    torch.manual_seed(seed)
    out = [None] * len(prompts)
    with torch.inference_mode():
        for batch, ids, mask in _batches(prompts, 8, tok.pad_token_id, "cpu"):
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=TEMPERATURE,
                                 top_p=1.0, top_k=0, num_return_sequences=n, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id],
                                 output_logits=True, return_dict_in_generate=True)
            logps = torch.stack(gen.logits, dim=1).float().log_softmax(-1)
            for row in range(len(batch) * n):
                tokens = _strip(gen.sequences[row, ids.shape[1]:].tolist(), tok.pad_token_id, [tok.eos_token_id])
                slot = batch[row // n]
                out[slot] = (out[slot] or []) + [(tokens, [float(logps[row, t, x]) for t, x in enumerate(tokens)])]
    return out


def _by_hand(model, prompt: list[int], tokens: list[int], temperature: float = 1.0) -> list[float]:
    """log_softmax(logits / temperature) of one forward pass over prompt + tokens, at the tokens."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1: -1].float()
    return (logits / temperature).log_softmax(-1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1).tolist()


def test_sample_keeps_the_tokens_and_log_probabilities_of_the_full_logits(bpe_model):
    model, tok = bpe_model
    prompts = _prompts(tok)
    got = sample(model, tok, prompts, 3, TEMPERATURE, 12, "cpu", seed=7)
    old = _old_sample(model, tok, prompts, 3, seed=7, max_new_tokens=12)
    assert [[ids for ids, _ in row] for row in got] == [[ids for ids, _ in row] for row in old]
    assert sum(len(ids) for row in got for ids, _ in row) >= 3 * 3 * 6  # real samples, not empty ones
    for prompt, row, old_row in zip(prompts, got, old):
        assert len(row) == 3
        for (ids, lps), (_, old_lps) in zip(row, old_row):
            assert len(lps) == len(ids)
            assert lps == pytest.approx(old_lps, abs=1e-6)
            assert lps == pytest.approx(_by_hand(model, prompt, ids), abs=1e-5)
            # the definition is the model's own (untempered) distribution, not the sampling one
            if ids:
                tempered = _by_hand(model, prompt, ids, TEMPERATURE)
                assert max(abs(a - b) for a, b in zip(lps, tempered)) > 1e-3


def test_sample_is_reproducible_with_its_seed(bpe_model):
    model, tok = bpe_model
    first = sample(model, tok, _prompts(tok), 2, TEMPERATURE, 10, "cpu", seed=3)
    assert sample(model, tok, _prompts(tok), 2, TEMPERATURE, 10, "cpu", seed=3) == first
    assert sample(model, tok, _prompts(tok), 2, TEMPERATURE, 10, "cpu", seed=4) != first


def test_sampled_state_has_no_vocabulary_dimension(bpe_model):
    from overmem.evaluation.hf_generate import _batches
    from transformers import LogitsProcessorList

    model, tok = bpe_model
    _, ids, mask = next(_batches(_prompts(tok), 8, tok.pad_token_id, "cpu"))
    torch.manual_seed(0)
    with torch.inference_mode():
        sequences, logps = sample_batch(model, tok, ids, mask, 2, TEMPERATURE, 9, (), [tok.eos_token_id])
    assert logps.shape == (3 * 2, sequences.shape[1] - ids.shape[1])  # rows x steps, no vocabulary axis
    # the processor holds one (rows,) value per step; the last step's full distribution only until finish
    recorder = _logprob_recorder()
    with torch.inference_mode():
        sequences = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=TEMPERATURE,
                                   top_k=0, max_new_tokens=9, pad_token_id=tok.pad_token_id,
                                   logits_processor=LogitsProcessorList([recorder]))
    assert [t.shape for t in recorder.taken] == [(3,)] * (sequences.shape[1] - ids.shape[1] - 1)
    assert recorder.pending.shape == (3, len(tok))  # one step's, while generation runs
    assert recorder.finish(sequences, ids.shape[1]).shape == (3, sequences.shape[1] - ids.shape[1])
    assert recorder.pending is None


def test_hf_stop_strings_read_a_bpe_vocabulary_and_word_level_ones_decode():
    bpe = bpe_tokenizer()
    assert _stop_options(bpe, 4, ("###",)) == {"stop_strings": ["###"], "tokenizer": bpe}
    assert set(_stop_options(word_tokenizer(), 4, ("w5 w6",))) == {"stopping_criteria"}  # decoded per step
    assert _stop_options(bpe, 4, ()) == {}


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_a_stop_string_ends_a_sample_at_the_marker(kind):
    """The marker is text the first sample writes anyway (a random model follows no template):
    with it as a stop string, that sample is the same up to the token completing it, then ends."""
    tok = bpe_tokenizer() if kind == "bpe" else word_tokenizer()
    model = tiny_llama(tok, seed=1)
    prompts = [tok("she has 12 apples" if kind == "bpe" else "w1 w2 w3").input_ids]
    free = sample(model, tok, prompts, 2, 1.0, 16, "cpu", seed=11)[0][0][0]
    assert len(free) == 16  # no end-of-sequence token in the way
    marker = tok.decode(free[5:7]).strip()
    assert marker and marker not in tok.decode(free[:5])
    end = next(k for k in range(1, len(free) + 1) if marker in tok.decode(free[:k]))
    stopped, lps = sample(model, tok, prompts, 2, 1.0, 16, "cpu", seed=11, stops=(marker,))[0][0]
    assert stopped == free[:end] and len(lps) == end and end < len(free)


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_greedy_generation_stops_at_the_same_markers(kind):
    from overmem.evaluation.hf_generate import generate

    tok = bpe_tokenizer() if kind == "bpe" else word_tokenizer()
    model = tiny_llama(tok, seed=2)
    prompts = [tok("then 8" if kind == "bpe" else "w4 w5").input_ids]
    free = generate(model, tok, prompts, 16)[0]
    marker = tok.decode(free[4:6]).strip()
    assert len(free) == 16 and marker
    end = next(k for k in range(1, len(free) + 1) if marker in tok.decode(free[:k]))  # its first occurrence
    assert generate(model, tok, prompts, 16, stops=(marker,))[0] == free[:end] and end < len(free)


# -- Best-of-N's reward model -------------------------------------------------------------

CHAT_TEMPLATE = ("{% for m in messages %}<s> {{ 'a' if m['role'] == 'user' else 'b' }} {{ m['content'] }} "
                 "</s> {% endfor %}")


def _reward_model(path, chat: bool):
    """A tiny random Llama reward model (one score) with a word tokenizer, with or without a chat template."""
    tok = word_tokenizer()
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tiny_reward_model(path, tok)


def _best_of_n(monkeypatch, path, rows, side):
    """best_of_n with the reward model's inputs and device recorded."""
    fed, devices = [], []

    def load(p, device):
        rm, rm_tok = load_reward_model(p, device)
        devices.append((device, next(rm.parameters()).device))
        rm.register_forward_hook(lambda mod, args, kwargs, out: fed.append(kwargs["input_ids"].tolist()),
                                 with_kwargs=True)
        return rm, rm_tok

    load_reward_model = diversity.load_reward_model
    monkeypatch.setattr(diversity, "load_reward_model", load)
    ctx = SimpleNamespace(options=SimpleNamespace(reward_model=str(path)), rows=rows, device="cpu")
    return diversity.best_of_n(ctx, side), fed, devices


def _scores(path, texts, special):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    rm = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return rm(**tok(texts, return_tensors="pt", padding=True, add_special_tokens=special)).logits[:, 0].tolist()


GENERATIONS = ["w7 w8 w9", "w10 w11", "w12 w13 w14 w15"]


def test_the_reward_model_reads_its_chat_template_on_the_models_device(monkeypatch, tmp_path):
    path = _reward_model(tmp_path / "rm", chat=True)
    rows = [{"query": "w1 w2 w3", "answer": "1"}]
    rendered = [f"<s> a w1 w2 w3 </s> <s> b {g} </s> " for g in GENERATIONS]
    scores = _scores(path, rendered, special=False)
    best = max(range(3), key=scores.__getitem__)
    for correct_one in range(3):
        correct = [k == correct_one for k in range(3)]
        hits, fed, devices = _best_of_n(monkeypatch, path, rows, [{"generations": GENERATIONS, "correct": correct}])
        assert hits == [correct_one == best]
    tok = word_tokenizer()
    expected = tok(rendered, padding=True, add_special_tokens=False).input_ids
    assert fed == [expected]  # the chat-template rendering, its <s> and </s> once each
    assert devices == [("cpu", torch.device("cpu"))]  # ctx.device, where the evaluated model is


def test_a_reward_tokenizer_without_a_chat_template_reads_query_and_sample_joined(monkeypatch, tmp_path):
    path = _reward_model(tmp_path / "rm", chat=False)
    rows = [{"query": [{"role": "user", "content": "w1 w2"}], "answer": "1"}]  # chat turns: their text
    hits, fed, _ = _best_of_n(monkeypatch, path, rows, [{"generations": GENERATIONS, "correct": [True] * 3}])
    assert hits == [True]
    assert fed == [word_tokenizer()([f"w1 w2 {g}" for g in GENERATIONS], padding=True).input_ids]


def test_chat_turns_are_the_conversation_before_the_sample():
    tok = word_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    turns = [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}, {"role": "user", "content": "w3"}]
    texts, special = diversity.reward_texts(tok, turns, ["w4"])
    assert texts == ["<s> a w1 </s> <s> b w2 </s> <s> a w3 </s> <s> b w4 </s> "] and special is False


def test_the_reward_model_is_loaded_on_the_device_asked_for(tmp_path):
    path = _reward_model(tmp_path / "rm", chat=True)
    rm, _ = diversity.load_reward_model(str(path), "meta")  # a device other than the CPU, without a GPU
    assert {p.device.type for p in rm.parameters()} == {"meta"} and not rm.training
