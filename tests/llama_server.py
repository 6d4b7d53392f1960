"""A real llama.cpp OpenAI-compatible server (`llama-cpp-python[server]`) on a free loopback port, for tests.

`LlamaServer(model_path)` starts `python -m llama_cpp.server`, waits (bounded) until `/v1/models` answers,
and stops the process afterwards; a server that dies or never answers fails with the tail of its log, and
`death()` says whether (and how) a running server has died since.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

INSTALL_HINT = "pip install 'llama-cpp-python[server]' (builds llama.cpp from source, about 5 minutes)"


def llama_cpp_server_missing() -> str | None:
    """Why the server cannot run here (with how to install it), or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {INSTALL_HINT}"
    for extra in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(extra) is None:
            return f"llama-cpp-python's server extra is not installed ({extra} missing): {INSTALL_HINT}"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """One llama.cpp server process serving `model` on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        model: Path,
        *,
        chat_format: str | None = "chatml",
        startup_timeout_s: float = 120.0,
        extra_args: tuple[str, ...] = (),
    ):
        self.model = Path(model)
        self.chat_format = chat_format
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        if not self.model.is_file():
            raise FileNotFoundError(f"no model file at {self.model}")
        for _ in range(3):  # another process may take the free port between finding and binding it
            self.port = free_port()
            command = [
                sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                "--host", "127.0.0.1", "--port", str(self.port),
                # serve concurrent requests in turn, as serving engines do (llama-cpp-python's default
                # interrupts a running stream when a new request arrives)
                "--interrupt_requests", "False", *self.extra_args,
            ]  # fmt: skip
            if self.chat_format:
                command += ["--chat_format", self.chat_format]
            with self._log.open("wb") as log:
                self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_until_ready():
                return self
            if "address already in use" not in self.log_tail().lower():
                break
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(
            f"the llama.cpp server did not answer on {self.base_url} within {self.startup_timeout_s:.0f} s; "
            f"the end of its log:\n{tail}"
        )

    def _wait_until_ready(self) -> bool:
        """Poll /v1/models until it answers (True) or the process exits or the deadline passes (False)."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        return False

    def death(self) -> str | None:
        """How the server process ended (exit status or signal, with the end of its log), or None while it
        runs or after `stop()`."""
        process = self._process
        if process is None or process.poll() is None:
            return None
        code = process.returncode
        if code < 0:
            name = signal.Signals(-code).name
            how = f"was killed by signal {name}"
            if name == "SIGILL":
                how += (
                    " (an illegal instruction: llama.cpp was built for CPU features this machine does not "
                    "allow; scripts/setup builds it portably, so remove a hand-built llama-cpp-python)"
                )
        else:
            how = f"exited with status {code}"
        return f"the llama.cpp server on {self.base_url} {how}; the end of its log:\n{self.log_tail()}"

    def log_tail(self, lines: int = 30) -> str:
        text = self._log.read_text(errors="replace") if self._log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)
