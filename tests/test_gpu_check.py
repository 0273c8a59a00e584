"""launch/gpu_check.sh without a GPU: its syntax, --help, the commands --dry-run prints, the 8B
stand-in's config, the figures and the JSON assembly; the step loop with a stand-in Python.

The check itself (installs, QLoRA on the 8B architecture, hf and vLLM generation) needs a CUDA box
and is not run here."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from launch import gpu_check
from launch.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "gpu_check.sh"
PY = REPO / ".venv" / "bin" / "python"
STEPS = ["install_torch_cuda", "install_gpu_extra", "install_vllm", "setup_run", "model_8b", "train_qlora",
         "generate_hf", "generate_vllm"]


def sh(*args, env=None, cwd=REPO, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def dry_run(*args) -> dict[str, list[list[str]]]:
    """{step: [command words, ...]} from --dry-run's `== step` headers and `+ ` lines."""
    proc = sh("--dry-run", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps: dict[str, list[list[str]]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("== "):
            current = line[3:].split()[0].rstrip(":")
            steps[current] = [] if "skipped" not in line else None
        elif line.startswith("+ "):
            words = shlex.split(line[2:])
            steps[current].append(words)
    return steps


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def sets(words: list[str]) -> dict[str, str]:
    return dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--set")


# --- the script --------------------------------------------------------------------------------
def test_syntax_and_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    proc = sh("--help")
    assert proc.returncode == 0
    for word in ["--out", "--skip-install", "--dry-run", "--budget", "--max-steps", "--only", *STEPS,
                 "gpu_check.json", "$OUT", "runs/gpu_check"]:
        assert word in proc.stdout, word
    bad = sh("--no-such-option")
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    assert sh("--only", "nope").returncode == 2


def test_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    out = tmp_path / "check"
    steps = dry_run("--out", out)
    assert list(steps) == STEPS and all(steps.values())
    assert not out.exists()  # nothing written


def test_dry_run_install_steps_follow_the_documented_recipe(tmp_path):
    steps = dry_run("--out", tmp_path)
    pins = (REPO / "requirements.txt").read_text().splitlines()
    torch_pin = next(line for line in pins if line.startswith("torch=="))
    assert torch_pin == "torch==2.13.0"
    assert any(torch_pin in words and "-c" in words for words in steps["install_torch_cuda"])
    extra = gpu_check.extra_requirements("gpu")
    assert {r.split("==")[0] for r in extra} == {"flash-attn", "deepspeed"}
    [install] = [w for w in steps["install_gpu_extra"] if "--no-build-isolation" in w]
    assert set(extra) <= set(install) and option(install, "-c") == str(tmp_path / "constraints.txt")
    vllm_pin = "vllm==0.33.0"
    assert vllm_pin in (REPO / "requirements-gpu.txt").read_text()
    venv, install_vllm, version = steps["install_vllm"]
    assert venv[1:3] == ["-m", "venv"] and vllm_pin in install_vllm and version[-1] == "--version"
    assert str(Path(venv[-1])) in install_vllm[install_vllm.index("--python") + 1]
    skipped = dry_run("--out", tmp_path, "--skip-install")
    assert [s for s, cmds in skipped.items() if cmds is None] == STEPS[:3]


def test_dry_run_setup_is_demo_ymls_first_stages(tmp_path):
    steps = dry_run("--out", tmp_path)
    run = tmp_path / "run"
    demo = {s.name: s.cmd for s in load_experiment(REPO / "recipes" / "experiments" / "demo.yml").stages}
    expected = [shlex.split(demo[name].replace("{python}", str(PY)).replace("{run}", str(run)))
                for name in ("release", "cohort", "classifier", "sft_pairs")]
    assert steps["setup_run"] == [["rm", "-rf", str(run)], *expected]


def test_dry_run_trains_the_llama31_recipe_in_nf4_on_the_8b_stand_in(tmp_path):
    steps = dry_run("--out", tmp_path, "--max-steps", "7")
    [[model_cmd], [train]] = steps["model_8b"], steps["train_qlora"]
    model = tmp_path / "models" / "llama31-8b"
    assert model_cmd[1:4] == ["-m", "launch.gpu_check", "model"] and option(model_cmd, "--out") == str(model)
    assert train[1:4] == ["-m", "launch.train", "recipes/llama31.yml"]
    assert option(train, "--run") == str(tmp_path / "run") and option(train, "--max-steps") == "7"
    assert option(train, "--accelerate-config") == "launch/accelerate/single_gpu.yaml"
    overrides = sets(train)
    assert overrides["base_model"] == str(model)  # the 8B architecture: the folder model_8b writes
    assert overrides["adapter"] == "qlora" and overrides["load_in_4bit"] == "true"
    assert "nf4" in overrides["bnb_config_kwargs"] and overrides["logging_steps"] == "1"
    # the CPU stand-in overrides of paper-smoke.yml are not here: this is the GPU recipe as written
    assert not {"fp16", "bf16", "attn_implementation", "optimizer", "micro_batch_size"} & set(overrides)


def test_the_train_overrides_resolve_to_qlora_nf4(tmp_path):
    from launch.recipe_check import load_recipe
    from launch.train import _parse_sets, resolve_recipe
    from sensecf.rundir import RunDir

    [train] = dry_run("--out", tmp_path)["train_qlora"]
    run = RunDir(tmp_path / "run")
    run.sft.mkdir(parents=True)
    (run.sft / "train.jsonl").write_text('{"messages": []}\n')
    (run.sft / "val.jsonl").write_text('{"messages": []}\n')
    values = [train[i + 1] for i, w in enumerate(train) if w == "--set"]
    cfg, _ = resolve_recipe(load_recipe(REPO / "recipes" / "llama31.yml"), "llama31", run, max_steps=10,
                            overrides=_parse_sets(values))
    assert cfg["base_model"] == str(tmp_path / "models" / "llama31-8b")
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True and cfg["load_in_8bit"] is False
    assert cfg["bnb_config_kwargs"] == {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
    assert cfg["max_steps"] == 10 and cfg["save_steps"] == 10 and cfg["logging_steps"] == 1
    assert cfg["attn_implementation"] == "flash_attention_2" and cfg["fp16"] is True  # the GPU recipe's
    assert cfg["output_dir"] == str(run.checkpoints / "llama31")


def test_dry_run_generates_n_cfs_through_hf_and_vllm(tmp_path):
    steps = dry_run("--out", tmp_path)
    run, model, adapter = tmp_path / "run", tmp_path / "models" / "llama31-8b", tmp_path / "run/checkpoints/llama31"
    [hf] = steps["generate_hf"]
    assert hf[1:3] == ["-m", "eval.generate"] and option(hf, "--backend") == "hf" and option(hf, "--n") == "50"
    assert option(hf, "--device") == "cuda" and option(hf, "--run") == str(run)
    assert option(hf, "--model") == str(model) and option(hf, "--adapter") == str(adapter)
    server, wait, client = steps["generate_vllm"]
    serve = server.index("launch/vllm_serve.sh")
    assert server[serve + 1 : serve + 3] == [str(model), str(adapter)] and "--host" in server
    assert any(w.startswith("VLLM_BIN=") and w.endswith(".venv-vllm/bin/vllm") for w in server)
    assert wait[1:4] == ["-m", "launch.gpu_check", "wait-http"]
    assert option(client, "--backend") == "openai" and option(client, "--n") == "50"
    assert option(client, "--base-url") == "http://127.0.0.1:PORT/v1" and option(client, "--constraint") == "regex"
    assert option(client, "--api-model") == "sensecf" and option(client, "--api-key-env") == "VLLM_API_KEY"
    assert option(hf, "--method") != option(client, "--method")  # two CF files, both kept
    assert option(dry_run("--out", tmp_path, "--n", "20")["generate_hf"][0], "--n") == "20"


# --- the 8B stand-in ---------------------------------------------------------------------------
def test_the_stand_in_has_the_llama31_8b_architecture(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    facts = gpu_check.write_llama31_8b(tmp_path / "m", config_only=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    real = {  # meta-llama/Llama-3.1-8B-Instruct config.json
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "dtype": "bfloat16",
    }
    assert {k: config[k] for k in real} == real
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert config["rope_parameters"] == rope
    assert config.get("head_dim", 128) == 128
    assert facts["parameters"] == gpu_check.LLAMA31_8B_PARAMETERS == 8_030_261_248
    loaded = AutoConfig.from_pretrained(tmp_path / "m")
    assert loaded.rope_parameters["rope_theta"] == 500000.0 and loaded.num_key_value_heads == 8
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert len(tokenizer) == 128256 and tokenizer.convert_tokens_to_ids("<|eot_id|>") == 128009
    assert json.loads((tmp_path / "m" / "sensecf_tiny.json").read_text())["random_init"] is True
    assert gpu_check.write_llama31_8b(tmp_path / "m", config_only=True)["reused"] is True


# --- figures and the JSON ----------------------------------------------------------------------
def _train_dir(root: Path) -> Path:
    out = root / "checkpoints" / "llama31"
    ckpt = out / "checkpoint-10"
    ckpt.mkdir(parents=True)
    history = [{"step": s, "loss": 12.0 - s / 10, "memory/max_allocated (GiB)": 9.0 + (s == 4),
                "memory/max_active (GiB)": 9.5, "memory/device_reserved (GiB)": 12.0} for s in range(1, 11)]
    history.append({"step": 10, "eval_loss": 11.0})
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": history}))
    (ckpt / "tokens_state.json").write_text(json.dumps({"total": 122_880, "trainable": 40_000}))
    (out / "debug.log").write_text("{'train_runtime': '40.0', 'train_samples_per_second': '4'}\n")
    (out / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    return out


def test_train_figures_state_units_and_denominators(tmp_path):
    figs = gpu_check.train_figures(_train_dir(tmp_path))
    assert figs["global_step"]["value"] == 10
    assert figs["tokens_per_second_all"] == {"value": 3072.0, "unit": "tokens/s",
                                             "note": figs["tokens_per_second_all"]["note"]}
    assert "padding included" in figs["tokens_per_second_all"]["note"]
    assert figs["tokens_per_second_trained"]["value"] == 1000.0
    assert "labels != -100" in figs["tokens_per_second_trained"]["note"]
    assert figs["peak_gpu_memory_allocated"]["value"] == 10.0 and figs["peak_gpu_memory_allocated"]["unit"] == "GiB"
    assert "max_memory_allocated" in figs["peak_gpu_memory_allocated"]["note"]
    assert figs["peak_gpu_memory_reserved"]["value"] == 12.0
    assert figs["loss_first"]["value"] == 11.9 and figs["loss_last"]["value"] == 11.0
    assert figs["train_runtime"] == {"value": 40.0, "unit": "s", "note": figs["train_runtime"]["note"]}
    assert gpu_check.train_figures(tmp_path / "nothing")["train_summary_error"]["unit"] == "text"


def _records(path: Path, statuses: list[tuple[str, int | None]]) -> Path:
    from sensecf.records import CFRecord

    lines = []
    for i, (status, cf_pred) in enumerate(statuses):
        lines.append(CFRecord(
            window_id=f"w{i}", participant_id="p", method="llama31_ft_hf+grammar", factual={"x": 1}, factual_pred=0,
            desired_class=1, cf={"x": 2} if status == "ok" else None, parse_status=status,
            immutables_ok=True if status == "ok" else None, cf_pred=cf_pred, seconds=0.5 + i, completion_tokens=100,
        ).model_dump_json())
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generate_figures(tmp_path):
    cfs = _records(tmp_path / "cfs.jsonl", [("ok", 1), ("ok", 0), ("ok", 1), ("parse_error", None)])
    figs = gpu_check.generate_figures(cfs, command_seconds=20.0)
    assert figs["records"]["value"] == 4
    assert figs["parse_rate"]["value"] == 0.75 and figs["parse_rate"]["unit"] == "fraction"
    assert figs["validity"]["value"] == 0.5
    assert figs["seconds_per_cf_records"]["value"] == 2.0 and figs["seconds_per_cf_records"]["unit"] == "s/CF"
    assert figs["seconds_per_cf_wall"]["value"] == 5.0
    assert gpu_check.generate_figures(tmp_path / "none.jsonl", None) == {
        "records": {"value": 0, "unit": "CFs", "note": f"no records in {tmp_path / 'none.jsonl'}"}}


def test_smi_figures(tmp_path):
    csv = tmp_path / "smi.csv"
    csv.write_text("0, 1200\n0, 15000\n0, 9000\nnot a sample\n")
    figs = gpu_check.smi_figures(csv)
    assert figs["gpu_memory_used_peak"]["value"] == 15000 and figs["gpu_memory_used_peak"]["unit"] == "MiB"
    assert figs["gpu_memory_used_at_start"]["value"] == 1200
    assert gpu_check.smi_figures(tmp_path / "missing.csv") == {}


def test_json_assembly_of_hand_made_steps(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("+ python -m launch.train recipes/llama31.yml --run R\n" + "".join(f"line {i}\n" for i in range(100))
                   + "torch.OutOfMemoryError: CUDA out of memory\n")
    steps = [
        gpu_check.step_record("install_torch_cuda", "skipped", reason="--skip-install", installed={"torch": "2.13.0"}),
        gpu_check.step_record("setup_run", "ok", 12.5, 0, figures={"x": gpu_check.figure(1, "CFs")}),
        gpu_check.step_record("train_qlora", "failed", 80.0, 1, log),
        gpu_check.step_record("generate_hf", "failed", 300.0, 124, limit_seconds=300),
        gpu_check.step_record("generate_vllm", "skipped", reason="needs step train_qlora, which failed"),
    ]
    summary = gpu_check.assemble(steps, started="2026-01-01T00:00:00Z", options={"n": "50"}, environment={"gpus": []},
                                 wall_seconds=400.0)
    finished = summary.pop("finished")
    assert finished.endswith("Z")
    assert summary == {
        "schema": "sensecf.gpu_check/1",
        "ok": False,
        "failed": ["train_qlora", "generate_hf"],
        "skipped": ["install_torch_cuda", "generate_vllm"],
        "passed": ["setup_run"],
        "started": "2026-01-01T00:00:00Z",
        "seconds": 400.0,
        "options": {"n": "50"},
        "environment": {"gpus": []},
        "note": summary["note"],
        "steps": [
            {"name": "install_torch_cuda", "status": "skipped", "seconds": None, "exit_code": None, "commands": [],
             "reason": "--skip-install", "installed": {"torch": "2.13.0"}, "figures": {}},
            {"name": "setup_run", "status": "ok", "seconds": 12.5, "exit_code": 0, "commands": [],
             "figures": {"x": {"value": 1, "unit": "CFs"}}},
            {"name": "train_qlora", "status": "failed", "seconds": 80.0, "exit_code": 1,
             "commands": ["python -m launch.train recipes/llama31.yml --run R"], "log": str(log),
             "error_tail": "\n".join([*(f"line {i}" for i in range(61, 100)),
                                      "torch.OutOfMemoryError: CUDA out of memory"]),
             "figures": {}},
            {"name": "generate_hf", "status": "failed", "seconds": 300.0, "exit_code": 124, "limit_seconds": 300,
             "commands": [], "reason": "timed out after 300 s", "error_tail": None, "figures": {}},
            {"name": "generate_vllm", "status": "skipped", "seconds": None, "exit_code": None, "commands": [],
             "reason": "needs step train_qlora, which failed", "figures": {}},
        ],
    }
    assert "meaningless" in summary["note"]
    assert gpu_check.assemble(steps[:2])["ok"] is True
    with pytest.raises(gpu_check.CheckError):
        gpu_check.step_record("x", "passed")


def test_record_and_summary_cli(tmp_path):
    out = tmp_path / "check"
    run = tmp_path / "run"
    train_dir = _train_dir(run)
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "generate_hf.phases").write_text("generate_command 20.0\n")
    cfs = _records(tmp_path / "cfs.jsonl", [("ok", 1), ("ok", 1), ("parse_error", None), ("ok", 0)])

    def cli(*args):
        return subprocess.run([str(PY), "-m", "launch.gpu_check", *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=300)

    assert cli("record", "--out", out, "--step", "train_qlora", "--status", "ok", "--seconds", "95.5",
               "--exit-code", "0", "--train-dir", train_dir).returncode == 0
    assert cli("record", "--out", out, "--step", "generate_hf", "--status", "ok", "--seconds", "30", "--exit-code", "0",
               "--cfs", cfs, "--phases", out / "logs" / "generate_hf.phases").returncode == 0
    ok = cli("summary", "--out", out, "--steps", "train_qlora,generate_hf", "--option", "n=4")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True and summary["options"] == {"n": "4"}
    train, hf = summary["steps"]
    assert train["figures"]["tokens_per_second_trained"]["value"] == 1000.0
    assert hf["figures"]["parse_rate"]["value"] == 0.75 and hf["figures"]["seconds_per_cf_wall"]["value"] == 5.0
    assert hf["figures"]["generate_command_seconds"] == {"value": 20.0, "unit": "s",
                                                         "note": gpu_check.PHASES["generate_command"]}
    failed = cli("summary", "--out", out, "--steps", "train_qlora,generate_hf,generate_vllm")
    assert failed.returncode == 1 and "generate_vllm" in failed.stdout
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["failed"] == ["generate_vllm"] and "left no record" in summary["steps"][2]["reason"]


# --- the step loop, with a stand-in Python for the data stages ---------------------------------
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
  *"-m dataset_builders"*|*"-m eval.classifier"*)
    echo "stand-in: $*"
    if [[ -n ${FAIL_ON:-} && "$*" == *"$FAIL_ON"* ]]; then echo "boom: $FAIL_ON failed" >&2; exit 3; fi
    exit 0 ;;
esac
exec %s "$@"
"""


@pytest.mark.parametrize("fail_on", [None, "eval.classifier"])
def test_the_step_loop_records_every_step_and_keeps_going(tmp_path, fail_on):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON % shlex.quote(str(PY)))
    fake.chmod(0o755)
    out = tmp_path / "check"
    env = {"PYTHON": str(fake), "FAIL_ON": fail_on or ""}
    # with the failure, train_qlora is selected too: it is skipped for its failed input
    only = "install_vllm,setup_run,train_qlora" if fail_on else "install_vllm,setup_run"
    proc = sh("--out", out, "--only", only, "--skip-install", env=env, cwd=tmp_path)
    assert proc.returncode == (1 if fail_on else 0), proc.stdout + proc.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert list(status) == STEPS
    setup = summary["steps"][3]
    assert setup["commands"][1].startswith(f"{fake} -m dataset_builders synth --participants 160")
    assert len(setup["commands"]) == (4 if fail_on else 5) and setup["seconds"] > 0 and setup["limit_seconds"] == 120
    reasons = {s["name"]: s.get("reason") for s in summary["steps"]}
    assert reasons["install_vllm"] == "--skip-install" and reasons["model_8b"] == "not in --only"
    if fail_on:
        assert status["setup_run"] == "failed" and summary["failed"] == ["setup_run"]
        assert setup["exit_code"] == 3 and "boom: eval.classifier failed" in setup["error_tail"]
        assert "pairs" not in setup["error_tail"]  # set -e: the step stopped at its failing command
        assert reasons["train_qlora"] == "needs step setup_run, which failed"
    else:
        assert status["setup_run"] == "ok" and summary["ok"] is True and "error_tail" not in setup
        assert summary["passed"] == ["setup_run"] and reasons["train_qlora"] == "not in --only"
    assert (out / "steps" / "setup_run.json").is_file() and (out / "logs" / "setup_run.log").is_file()


# --- the vLLM step against a stand-in `vllm serve` ---------------------------------------------
FAKE_VLLM_SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path[:0] = [{tests!r}, {repo!r}]
from test_openai_backend import CF, SPEC, completion  # noqa: E402
from sensecf.cfblock import render_block  # noqa: E402

log = open({log!r}, "a")
log.write(json.dumps({{"argv": sys.argv[1:], "pid": os.getpid()}}) + "\\n")
log.flush()
port = int(sys.argv[sys.argv.index("--port") + 1])
key = "Bearer " + os.environ["VLLM_API_KEY"]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the test reads the requests logged below, not the access log
        return None

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Authorization") != key:
            return self._send(401, {{"error": "bad key"}})
        self._send(200, {{"object": "list", "data": [{{"id": "sensecf", "object": "model"}}]}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != key:
            return self._send(401, {{"error": {{"message": "bad key", "type": "x", "code": None}}}})
        log.write(json.dumps({{"model": body["model"], "keys": sorted(body)}}) + "\\n")
        log.flush()
        self._send(200, completion(body["model"], render_block(SPEC, {{**CF, "rem_pct": 25.0}})))


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.mark.slow
def test_the_vllm_step_serves_generates_and_stops_the_server(trained_run, tmp_path):
    out = tmp_path  # the run dir of the check is OUT/run: trained_run's folder
    assert trained_run.root == out / "run"
    adapter = trained_run.checkpoints / "llama31"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "chat_template.jinja").write_text("{{ messages }}")
    log = tmp_path / "fake_vllm.jsonl"
    server = tmp_path / "fake_vllm_server.py"
    server.write_text(FAKE_VLLM_SERVER.format(tests=str(REPO / "tests"), repo=str(REPO), log=str(log)))
    venv = tmp_path / "venv-vllm"
    (venv / "bin").mkdir(parents=True)
    exe = f"exec {shlex.quote(str(PY))} {shlex.quote(str(server))}"
    (venv / "bin" / "vllm").write_text(f'#!/usr/bin/env bash\n{exe} "$@"\n')
    (venv / "bin" / "vllm").chmod(0o755)

    proc = sh("--out", out, "--only", "generate_vllm", "--vllm-venv", venv, "--n", "6", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out / "logs" / "generate_vllm.log").read_text()
    summary = json.loads((out / "gpu_check.json").read_text())
    [step] = [s for s in summary["steps"] if s["name"] == "generate_vllm"]
    assert step["status"] == "ok" and summary["ok"] is True
    figs = step["figures"]
    assert figs["records"]["value"] == 6 and 0 <= figs["parse_rate"]["value"] <= 1
    assert 0 <= figs["validity"]["value"] <= 1 and figs["seconds_per_cf_wall"]["unit"] == "s/CF"
    assert figs["vllm_server_start_seconds"]["value"] > 0 and figs["generate_command_seconds"]["value"] > 0
    assert step["commands"][0].startswith("setsid env VLLM_BIN=")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    argv, requests = lines[0]["argv"], lines[1:]
    assert argv[:2] == ["serve", str(out / "models" / "llama31-8b")]
    assert f"sensecf={adapter}" in argv and option(argv, "--chat-template") == str(adapter / "chat_template.jinja")
    assert option(argv, "--host") == "127.0.0.1" and "--enforce-eager" in argv
    assert len(requests) == 6 and all(r["model"] == "sensecf" for r in requests)
    assert all("structured_outputs" in r["keys"] for r in requests)  # --constraint regex, as vLLM takes it
    assert not gpu_check._alive(lines[0]["pid"])  # stopped with the step
    assert not (out / "logs" / "vllm_server.pgid").exists()


@pytest.mark.slow
def test_the_train_command_passes_axolotls_schema(tmp_path):
    """launch.train --dry-run on the printed command: Axolotl's validation and the unknown-key check."""
    [train] = dry_run("--out", tmp_path)["train_qlora"]
    gpu_check.write_llama31_8b(tmp_path / "models" / "llama31-8b", config_only=True)
    sft = tmp_path / "run" / "sft"
    sft.mkdir(parents=True)
    for name in ("train.jsonl", "val.jsonl"):
        (sft / name).write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    proc = subprocess.run([*train, "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import yaml

    resolved = yaml.safe_load((tmp_path / "run" / "checkpoints" / "llama31" / "recipe.yml").read_text())
    assert resolved["adapter"] == "qlora" and resolved["load_in_4bit"] is True and resolved["max_steps"] == 10
    assert resolved["bnb_config_kwargs"]["bnb_4bit_quant_type"] == "nf4"
    assert "accelerate launch --config_file launch/accelerate/single_gpu.yaml" in proc.stdout


def test_constraints_are_the_pins_without_extras(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# a comment\ntorch==2.13.0\nllama-cpp-python[server]==0.3.36  # why\n\nruff==0.17.5\n")
    assert gpu_check.constraints(reqs) == ["torch==2.13.0", "llama-cpp-python==0.3.36", "ruff==0.17.5"]
    assert "llama-cpp-python==0.3.36" in gpu_check.constraints()  # the real file has an extra to strip
