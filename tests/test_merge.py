"""Exact merging: every input kind, both output forms, refusals, against independent computations."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from overmem.errors import CorruptFile, MergeError, OutputExists, UsageError
from overmem.merging.merge import plan_merge, run_merge
from overmem.rundir import CheckpointInfo, RunDir, RunInfo, load_run
from overmem_tui.cli import app
from tests.helpers import make_tiny_llama, word_tokenizer


def _materialize(path):
    """Full weights of a checkpoint folder (full model, or adapter applied to the base by PEFT)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if (path / "adapter_config.json").is_file():
        base = AutoModelForCausalLM.from_pretrained(json.loads((path / "adapter_config.json").read_text())
                                                    ["base_model_name_or_path"])
        return {k: v.detach().clone() for k, v in PeftModel.from_pretrained(base, str(path))
                .merge_and_unload().state_dict().items()}
    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


@pytest.fixture(scope="module")
def merge_source(tmp_path_factory):
    """A run whose base is a tiny random Llama, with full, LoRA, rsLoRA, PiSSA and MiLoRA checkpoints."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from overmem.training.finetuning import MethodConfig, adapter_tensors, apply_method, save_adapter

    root = tmp_path_factory.mktemp("merge")
    base_dir = make_tiny_llama(root / "base", word_tokenizer(), seed=1)
    rd = RunDir(root / "run")
    rd.create(RunInfo(status="finished", base_model={"id": str(base_dir), "path": str(base_dir)}))

    def stage(name, kind, epoch, writer):
        with rd.stage_checkpoint(CheckpointInfo(name, kind, epoch=epoch, step=epoch)) as folder:
            writer(folder)

    for i, name in enumerate(["full1", "full2"]):
        torch.manual_seed(10 + i)
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        stage(name, "full", i + 1, lambda f, m=model: m.save_pretrained(f))

    def lora(name, epoch, seed, **kw):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                               LoraConfig(target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                                          **kw))
        stage(name, "adapter", epoch, lambda f: model.save_pretrained(f))

    lora("lora1", 3, 1, r=4, lora_alpha=8)
    lora("lora2", 4, 2, r=8, lora_alpha=8)
    lora("rslora", 5, 3, r=4, lora_alpha=8, use_rslora=True)
    truth = {}
    for k, method in enumerate(["pissa", "milora"]):
        torch.manual_seed(20 + k)
        model = apply_method(AutoModelForCausalLM.from_pretrained(base_dir),
                             MethodConfig(method, r=4, alpha=4, dropout=0.0, targets=("q_proj", "up_proj")))
        initial = adapter_tensors(model)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n and p.requires_grad:  # training moves the trainable adapter only
                    p.add_(torch.randn_like(p) * 0.05)
        # the truth: effective weights of the trained model (residual base + s B A)
        stage(method, "adapter", 6 + k,
              lambda f, m=model, i=initial: save_adapter(m, MethodConfig(method, r=4, alpha=4, dropout=0.0,
                                                                          targets=("q_proj", "up_proj")), f, i))
        truth[method] = {k2: v.detach().clone() for k2, v in model.merge_and_unload().state_dict().items()}
    return rd.path, base_dir, truth


@pytest.fixture
def merge_run(merge_source, tmp_path):
    """A private copy of the run: merges register themselves in it."""
    run_path, base_dir, truth = merge_source
    work = tmp_path / "work"
    shutil.copytree(run_path, work)
    return work, base_dir, truth


def _expected(run_path, base_dir, names, weights, truth=None):
    base = _materialize(base_dir)
    out = {k: v.clone().float() for k, v in base.items()}
    for name, w in zip(names, weights):
        weights_k = (truth or {}).get(name) or _materialize(run_path / "checkpoints" / name)
        for k in out:
            out[k] += w * (weights_k[k].float() - base[k].float())
    return out


def _merged_full(folder):
    out = {}
    for f in folder.glob("*.safetensors"):
        out.update(load_file(str(f)))
    return out


CASES = [("full1", "full2"), ("lora1", "lora2"), ("lora1", "rslora"), ("pissa", "milora"), ("full1", "lora2", "pissa")]


@pytest.mark.parametrize("names", CASES)
def test_full_output_is_exact(merge_run, names, tmp_path):
    run_path, base_dir, truth = merge_run
    weights = [0.5, 0.5] if len(names) == 2 else [0.2, 0.3, 0.5]
    plan = plan_merge(run_path, list(names), weights=weights, form="full", out=tmp_path / "m",
                      max_shard_bytes=40_000)
    run_merge(plan)
    merged = _merged_full(tmp_path / "m")
    expected = _expected(run_path, base_dir, names, weights, truth)
    assert merged and merged.keys() == expected.keys()  # every tensor of the model, none dropped or added
    assert (tmp_path / "m" / "model.safetensors.index.json").is_file()  # sharded
    for k, v in merged.items():
        assert torch.allclose(v.float(), expected[k], atol=1e-6), k


@pytest.mark.parametrize("names", [("lora1", "lora2"), ("lora1", "rslora"), ("pissa", "milora"), ("lora1", "pissa")])
def test_adapter_output_is_exact_and_matches_full(merge_run, names, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_path, base_dir, truth = merge_run
    weights = [0.3, 0.7]
    run_merge(plan_merge(run_path, list(names), weights=weights, form="adapter", out=tmp_path / "a"))
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    ranks = {"lora1": 4, "lora2": 8, "rslora": 4, "pissa": 8, "milora": 8}
    assert cfg["r"] == sum(ranks[n] for n in names)
    materialized = _materialize(tmp_path / "a")
    expected = _expected(run_path, base_dir, names, weights, truth)
    assert materialized and materialized.keys() == expected.keys()
    for k, v in materialized.items():
        assert torch.allclose(v.float(), expected[k], atol=1e-6), k
    run_merge(plan_merge(run_path, list(names), weights=weights, form="full", out=tmp_path / "f"))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "f")(input_ids=ids).logits
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(tmp_path / "a"))
    assert torch.allclose(adapter(input_ids=ids).logits, full, atol=1e-5)
    size = sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    assert size < sum(p.stat().st_size for p in (tmp_path / "f").iterdir()) / 3


def test_weights_one_zero_reproduce_the_first(merge_run, tmp_path):
    run_path, base_dir, _ = merge_run
    run_merge(plan_merge(run_path, ["full1", "full2"], weights=[1.0, 0.0], out=tmp_path / "m"))
    first = load_file(str(run_path / "checkpoints" / "full1" / "model.safetensors"))
    merged = _merged_full(tmp_path / "m")
    assert first and merged.keys() == first.keys()
    for k in first:
        assert torch.equal(merged[k], first[k]), k


def test_registered_and_merged_again(merge_run):
    run_path, base_dir, truth = merge_run
    work = run_path.parent / "run_again"
    shutil.copytree(run_path, work)
    info = run_merge(plan_merge(work, ["lora1", "lora2"]))
    assert info.name == "merge-lora1+lora2"
    run = load_run(work, strict=True)
    ckpt = run.checkpoint("merge-lora1+lora2")
    assert ckpt.kind == "merge" and ckpt.parents == ("lora1", "lora2") and ckpt.weights == (0.5, 0.5)
    assert ckpt.extra["format"] == "adapter" and not ckpt.on_trajectory
    second = run_merge(plan_merge(work, ["merge-lora1+lora2", "full1"], weights=[0.5, 0.5]))
    merged = _merged_full(work / "checkpoints" / second.name)
    expected = _expected(work, base_dir, ["lora1", "lora2", "full1"], [0.25, 0.25, 0.5])
    assert merged and merged.keys() == expected.keys()
    for k, v in merged.items():
        assert torch.allclose(v.float(), expected[k], atol=1e-6), k
    outside = run_merge(plan_merge(work, ["lora1", "full2"], out=work.parent / "elsewhere"))
    assert load_run(work).checkpoint(outside.name).path == work.parent / "elsewhere"


def test_refusals_write_nothing(merge_run, tmp_path):
    from transformers import AutoModelForCausalLM

    run_path, base_dir, _ = merge_run
    work = tmp_path / "run"
    shutil.copytree(run_path, work)
    before = sorted(p.name for p in (work / "checkpoints").iterdir())

    def refuse(exc, match, *refs, **kw):
        with pytest.raises(exc, match=match):
            run_merge(plan_merge(work, list(refs), **kw))
        assert sorted(p.name for p in (work / "checkpoints").iterdir()) == before

    refuse(UsageError, "3 weights for 2", "full1", "full2", weights=[0.2, 0.3, 0.5])
    refuse(UsageError, "finite", "full1", "full2", weights=[float("nan"), 1.0])
    refuse(UsageError, "at least two", "full1")
    refuse(MergeError, "no such checkpoint", "full1", "ep99")
    other = make_tiny_llama(tmp_path / "other", word_tokenizer(), seed=5, hidden=96)
    refuse(MergeError, "hidden_size=96", "full1", str(other))
    # an adapter trained on another base
    alien = tmp_path / "alien"
    shutil.copytree(work / "checkpoints" / "lora1", alien)
    cfg = json.loads((alien / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someone/else"
    (alien / "adapter_config.json").write_text(json.dumps(cfg))
    refuse(MergeError, "trained on someone/else", "lora1", str(alien))
    # a corrupt weights file
    broken = tmp_path / "broken"
    shutil.copytree(work / "checkpoints" / "full2", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 4)
    refuse(CorruptFile, "not a readable safetensors", "full1", str(broken))
    # renamed tensors
    renamed = tmp_path / "renamed"
    shutil.copytree(work / "checkpoints" / "full2", renamed)
    weights = load_file(str(renamed / "model.safetensors"))
    weights["model.extra.weight"] = weights.pop("model.norm.weight")
    save_file(weights, str(renamed / "model.safetensors"))
    refuse(MergeError, "tensor names differ", "full1", str(renamed))
    # pickle only
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(work / "checkpoints" / "full2" / "config.json", pickled)
    torch.save({}, pickled / "pytorch_model.bin")
    refuse(MergeError, "pickle files are not read", "full1", str(pickled))
    # output exists
    run_merge(plan_merge(work, ["full1", "full2"]))
    with pytest.raises(OutputExists):
        plan_merge(work, ["full1", "full2"])
    run_merge(plan_merge(work, ["full1", "full2"], weights=[0.5, 0.5], force=True))
    before = sorted(p.name for p in (work / "checkpoints").iterdir())
    refuse(UsageError, "no exact adapter form", "lora1", "lora2", method="ties", form="adapter")
    refuse(UsageError, "needs every input to be a LoRA", "lora1", "full1", form="adapter")


def test_ties_is_available_for_full_outputs(merge_run, tmp_path):
    run_path, _, _ = merge_run
    run_merge(plan_merge(run_path, ["full1", "full2"], method="ties", out=tmp_path / "t"))
    merged = _merged_full(tmp_path / "t")
    first = load_file(str(run_path / "checkpoints" / "full1" / "model.safetensors"))
    assert first and merged.keys() == first.keys()


def test_cli_merge_one_line_errors(merge_run, tmp_path):
    run_path, _, _ = merge_run
    work = tmp_path / "run"
    shutil.copytree(run_path, work)
    runner = CliRunner()
    result = runner.invoke(app, ["merge", "lora1", "lora2", "--run", str(work)])
    assert result.exit_code == 0, result.output
    assert "registered as checkpoint merge-lora1+lora2" in result.output
    result = runner.invoke(app, ["merge", "lora1", "lora2", "--run", str(work), "--weights", "a,b"])
    assert result.exit_code == 2 and result.stderr.strip().startswith("overmem: error: --weights must be numbers")
    result = runner.invoke(app, ["merge", "lora1", "nope", "--run", str(work)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_every_safetensors_dtype_reads_and_quantized_weights_are_refused(tmp_path):
    """FP8, unsigned and packed sub-byte tensors read by name; a merge that would have to
    average them is refused with one line, nothing written; unchanged ones are carried over."""
    import struct

    from overmem.merging.format import DTYPE_BITS, nbytes
    from overmem.merging.safetensors_io import TensorReader

    tensors = {"f8": torch.randn(4, 4).to(torch.float8_e4m3fn), "u16": torch.tensor([1, 2, 65535], dtype=torch.int32).to(torch.uint16),
               "u32": torch.tensor([7, 8], dtype=torch.int64).to(torch.uint32),
               "u64": torch.tensor([9, 10], dtype=torch.int64).to(torch.uint64),
               "bf16": torch.randn(3, dtype=torch.bfloat16), "flag": torch.tensor([True, False])}
    save_file(tensors, str(tmp_path / "a.safetensors"))
    reader = TensorReader(tmp_path, "a.safetensors")
    for name, value in tensors.items():
        assert torch.equal(reader.get(name).view(torch.uint8), value.contiguous().view(torch.uint8)), name
    # a packed FP4 tensor (no torch dtype): its size and raw bytes
    header = json.dumps({"q": {"dtype": "F4", "shape": [3, 4], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "f4.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(range(6)))
    packed = TensorReader(tmp_path, "f4.safetensors")
    assert nbytes("F4", (3, 4)) == 6 and packed.get("q").tolist() == list(range(6))
    assert {"F4", "F6_E2M3", "F8_E8M0", "U64", "C64"} <= set(DTYPE_BITS)

    base = make_tiny_llama(tmp_path / "base", word_tokenizer())
    from transformers import AutoModelForCausalLM

    rd = RunDir(tmp_path / "run")
    rd.create(RunInfo(status="finished", base_model={"id": str(base), "path": str(base)}))
    for i, scale in ((1, 0.1), (2, 0.2)):
        with rd.stage_checkpoint(CheckpointInfo(f"ep{i}", "full", epoch=float(i), step=i)) as folder:
            model = AutoModelForCausalLM.from_pretrained(base)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            state["model.layers.0.mlp.up_proj.weight"] = (state["model.layers.0.mlp.up_proj.weight"] * scale).to(
                torch.float8_e4m3fn)
            save_file(state, str(folder / "model.safetensors"))
            shutil.copy(base / "config.json", folder / "config.json")
    base_state = load_file(str(base / "model.safetensors"))
    base_state["model.layers.0.mlp.up_proj.weight"] = base_state["model.layers.0.mlp.up_proj.weight"].to(
        torch.float8_e4m3fn)
    save_file(base_state, str(base / "model.safetensors"))
    result = CliRunner().invoke(app, ["merge", "ep1", "ep2", "--run", str(rd.path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "F8_E4M3" in result.stderr and "cannot be averaged" in result.stderr
    assert not (rd.path / "checkpoints" / "merge-ep1+ep2").exists()
    # the same FP8 tensor unchanged in both inputs is carried over byte for byte
    for i in (1, 2):
        state = load_file(str(rd.checkpoint(f"ep{i}") / "model.safetensors"))
        state["model.layers.0.mlp.up_proj.weight"] = base_state["model.layers.0.mlp.up_proj.weight"]
        save_file(state, str(rd.checkpoint(f"ep{i}") / "model.safetensors"))
    run_merge(plan_merge(rd.path, ["ep1", "ep2"]))
    merged = load_file(str(rd.checkpoint("merge-ep1+ep2") / "model.safetensors"))
    assert merged["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    assert torch.equal(merged["model.layers.0.mlp.up_proj.weight"].view(torch.uint8),
                       base_state["model.layers.0.mlp.up_proj.weight"].view(torch.uint8))
