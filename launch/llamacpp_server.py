"""llama.cpp's OpenAI-compatible server on loopback, serving the embedded SmolLM2 GGUF: the real
server the tests and `bench_generate` send requests to.

    python -m launch.llamacpp_server [--port 8080] [--threads 1]    # serve until Ctrl-C
    python -m eval.generate --run RUN --backend openai --base-url http://127.0.0.1:8080/v1 \
        --api-model smollm2 --protocol sensecf --constraint json_object_schema --repeat-penalty 1.0

llama.cpp takes a JSON schema only as `response_format={"type": "json_object", "schema": ...}`
(hence the backend's json_object_schema constraint), and its default repeat_penalty is 1.1: pass
1.0 to decode greedily as the hf backend does. Needs `llama-cpp-python[server]` (a dev pin).
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

from sensecf.cli import run_cli
from sensecf.models import smollm2_gguf

LLAMACPP_MODEL = "smollm2"  # the server's --model_alias, the requests' model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """`python -m llama_cpp.server` serving the embedded SmolLM2 GGUF on 127.0.0.1:PORT.

    It renders prompts with the GGUF's own chat template (tokenizer.chat_template, the one the hf
    engine's converted tokenizer carries; llama-cpp-python picks it when no --chat_format is
    given). start() returns once GET /v1/models answers; kill() is SIGKILL (the server gone
    mid-run), stop() a clean shutdown; start() again serves on the same port. One thread by
    default: llama.cpp's threads spin-wait for each other, and on a shared 2-core CPU two threads
    decoded at 3-8 tokens/s where one thread decoded at 75-125 (SmolLM2 Q4_1, measured)."""

    def __init__(self, port: int | None = None, threads: int = 1, n_ctx: int = 2048, log: Path | None = None):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.threads, self.n_ctx, self.log = threads, n_ctx, log
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
                "--model_alias", LLAMACPP_MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                "--verbose", "False"]  # fmt: skip

    def start(self, timeout: float = 120.0) -> LlamaCppServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama.cpp server: llama-cpp-python[server] is not installed (pip install "
                               "'llama-cpp-python[server]'), or leave the llamacpp_* configurations out")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        if self.log:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode} before serving; "
                                   f"see {self.log or 'its output'}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama.cpp server at {self.base_url} did not answer /v1/models within {timeout:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(
    port: int = typer.Option(8080, help="loopback port"),
    threads: int = typer.Option(1, help="llama.cpp threads (1 is fastest on a shared 2-core CPU)"),
    n_ctx: int = typer.Option(2048, help="context length"),
) -> None:
    """Serve the embedded SmolLM2 on 127.0.0.1:PORT until interrupted."""
    server = LlamaCppServer(port=port, threads=threads, n_ctx=n_ctx).start()
    typer.echo(f"serving {LLAMACPP_MODEL} at {server.base_url} (Ctrl-C stops it)")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    run_cli(main)
