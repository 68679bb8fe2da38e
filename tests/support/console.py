"""Talk to a guest's serial console the way a person at a terminal would.

The agent gives every guest a serial console that QEMU serves on a unix socket (libvirt
`<serial type='unix'><source mode='bind' .../>`) and that virtlogd also copies to a log
file (`<log file=... append='off'/>`). QEMU accepts one client at a time and drops output
while nobody is connected; the log file has everything since the domain started. So a
`SerialConsole` connects to the socket and, right after connecting, reads the log file
too: output the guest printed before the test connected (e.g. the boot markers) is seen.

    with SerialConsole(sock, log_path=log) as con:
        con.wait_for(r"CA-GUEST booted", timeout=120)
        con.login("root", password)
        code, out = con.run("cat /etc/motd")

Matching model: everything received goes into a buffer; `wait_for` searches the buffer
and consumes it up to the end of the match, so each call sees only what arrived since the
previous match. Text is decoded as UTF-8 (bad bytes replaced); nothing is printed, and
the password is redacted from error messages. Every wait has a bounded timeout.

Guest side (vm-images busybox-test image): busybox getty/login on ttyS0, an ash shell,
markers `CA-GUEST booted` and `CA-GUEST addr <ifname> <mac> <ip>/<prefix>` on the console.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import socket
import time
from pathlib import Path

_TAIL_CHARS = 2000
# ash's line editor keeps at most ~1024 chars per line; stay well below.
MAX_COMMAND_CHARS = 900

LOGIN_PROMPT = r"login: ?$"
PASSWORD_PROMPT = r"[Pp]assword: ?$"
LOGIN_FAILED = r"Login incorrect"
# busybox ash follows its prompt with a cursor-position query (ESC [6n) that nobody answers.
SHELL_PROMPT = r"[#$] ?(?:\x1b\[[0-9;?]*[A-Za-z])*$"


class ConsoleError(Exception):
    """Something went wrong on the console; `tail` is the last output seen."""

    def __init__(self, message: str, tail: str = "") -> None:
        self.tail = tail
        super().__init__(f"{message}\n--- last console output ---\n{tail}\n---" if tail
                         else message)


class ConsoleTimeout(ConsoleError, TimeoutError):
    """The expected output did not arrive in time."""


class ConsoleClosed(ConsoleError):
    """The socket reached EOF: QEMU went away (guest stopped) or dropped us."""


class LoginFailed(ConsoleError):
    """The guest said `Login incorrect`."""


class SerialConsole:
    """A guest's serial console on a QEMU unix socket, plus (optionally) its log file."""

    def __init__(self, socket_path: str | os.PathLike[str],
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.socket_path = str(socket_path)
        self.log_path = Path(log_path) if log_path is not None else None
        self.match: re.Match[str] | None = None  # the last successful wait_for match
        self._sock: socket.socket | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""  # received since the last match
        self._tail = ""  # last output, for error messages
        self._secrets: set[str] = set()
        self._eof = False

    # -- connection ------------------------------------------------------------------

    def connect(self, timeout: float = 30) -> SerialConsole:
        """Connect, retrying until the socket exists and accepts (QEMU creates it when the
        domain starts). Then read the log file so that earlier output is not missed; the
        socket is connected first, so nothing falls in between (a few lines may be seen
        twice, which is harmless for matching)."""
        self.close()
        deadline = time.monotonic() + timeout
        last_err: OSError | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                break
            except OSError as e:  # missing, refused (not listening yet), busy
                sock.close()
                last_err = e
            if time.monotonic() >= deadline:
                raise ConsoleTimeout(
                    f"cannot connect to console socket {self.socket_path} within "
                    f"{timeout:g}s: {last_err}")
            time.sleep(0.2)
        sock.setblocking(False)
        self._sock = sock
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._tail = ""
        if self.log_path is not None:
            try:
                earlier = self.log_path.read_bytes().decode("utf-8", "replace")
            except FileNotFoundError:
                earlier = ""
            self._add(earlier)
        return self

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> SerialConsole:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw I/O ---------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Type `text` as is (no newline added)."""
        if self._sock is None:
            raise ConsoleError("console not connected")
        data = text.encode()
        deadline = time.monotonic() + 10
        while data:
            _, writable, _ = select.select([], [self._sock], [], 0.5)
            if writable:
                try:
                    n = self._sock.send(data)
                except (BrokenPipeError, ConnectionResetError) as e:
                    self._eof = True
                    raise ConsoleClosed(f"console closed while sending: {e}",
                                        self.tail()) from e
                data = data[n:]
            elif time.monotonic() > deadline:
                raise ConsoleTimeout("console socket not writable for 10s", self.tail())

    def sendline(self, text: str = "") -> None:
        """Type `text` and press Enter (a carriage return, as a terminal sends)."""
        self.send(text + "\r")

    def tail(self, chars: int = _TAIL_CHARS) -> str:
        """The last `chars` characters of output (passwords redacted)."""
        text = self._tail[-chars:]
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def _add(self, text: str) -> None:
        if text:
            self._buf += text
            self._tail = (self._tail + text)[-4 * _TAIL_CHARS:]

    def _read(self, wait: float) -> None:
        """Read what is available, waiting up to `wait` seconds for something."""
        if self._sock is None:
            raise ConsoleError("console not connected", self.tail())
        if self._eof:
            raise ConsoleClosed("console closed (EOF)", self.tail())
        readable, _, _ = select.select([self._sock], [], [], max(wait, 0))
        if not readable:
            return
        while True:
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self._add(self._decoder.decode(b"", final=True))
                self._eof = True
                return
            self._add(self._decoder.decode(chunk))

    def drain(self) -> str:
        """Consume and return whatever has been received and not matched yet."""
        if self._sock is not None and not self._eof:
            self._read(0)
        text, self._buf = self._buf, ""
        return text

    # -- matching --------------------------------------------------------------------

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60) -> str:
        """Wait until `pattern` (a regex, searched with re.MULTILINE) matches the output
        received since the last match. Returns that output up to the end of the match
        (the match object is in `self.match`). Raises ConsoleTimeout, or ConsoleClosed if
        the guest went away first; both carry the last ~2000 characters of output."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self._buf)
            if m:
                self.match = m
                text, self._buf = self._buf[:m.end()], self._buf[m.end():]
                return text
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConsoleTimeout(
                    f"no {regex.pattern!r} on the console within {timeout:g}s", self.tail())
            try:
                self._read(min(remaining, 0.5))
            except ConsoleClosed:
                m = regex.search(self._buf)
                if m:
                    continue
                raise ConsoleClosed(
                    f"console closed while waiting for {regex.pattern!r}", self.tail()
                ) from None

    # -- user-level helpers ----------------------------------------------------------

    def login(self, user: str, password: str, timeout: float = 120) -> None:
        """Log in on the getty: press Enter until `login:` shows, give the user name and
        the password, and wait for a shell prompt. If a shell is already at its prompt
        (someone logged in before), log it out first. Raises LoginFailed on
        `Login incorrect`, ConsoleTimeout if the whole dance takes more than `timeout`."""
        self._secrets.add(password)
        deadline = time.monotonic() + timeout

        def left() -> float:
            r = deadline - time.monotonic()
            if r <= 0:
                raise ConsoleTimeout(f"login as {user} took more than {timeout:g}s",
                                     self.tail())
            return r

        either = re.compile(f"(?P<login>{LOGIN_PROMPT})|(?P<shell>{SHELL_PROMPT})",
                            re.MULTILINE)
        while True:
            try:
                self.wait_for(either, timeout=min(3, left()))
            except ConsoleTimeout:
                left()
                self.sendline()  # poke: getty reprints its prompt on an empty line
                continue
            if self.match and self.match.group("shell") is not None:
                # A prompt, but it could be stale text: only trust it if the buffer ends
                # there; then log that shell out and go on to the getty.
                if not self._buf:
                    self.sendline("exit")
                continue
            break
        self.sendline(user)
        self.wait_for(PASSWORD_PROMPT, timeout=min(30, left()))
        # busybox login prints "Password: " *before* it switches echo off: typing at once
        # would echo the password onto the console (and into the log). Give it a moment.
        time.sleep(min(1.0, left()))
        self.send(password + "\r")
        result = re.compile(f"(?P<bad>{LOGIN_FAILED})|{SHELL_PROMPT}", re.MULTILINE)
        self.wait_for(result, timeout=min(60, left()))
        if self.match and self.match.group("bad"):
            raise LoginFailed(f"login as {user} failed: Login incorrect", self.tail())
        # Make sure a shell really answers (and the buffer is in sync) before returning.
        code, _ = self.run("true", timeout=min(30, left()))
        if code != 0:
            raise ConsoleError(f"shell after login as {user} is not usable", self.tail())

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run a one-line shell command at the prompt (after `login`) and return
        (exit status, what it printed) with `\\r` removed.

        The line typed is `echo BEGIN-marker; COMMAND; echo "END-marker-$?"` with a fresh
        nonce. The markers are written so that the terminal's echo of the typed line can
        never match them (`__CA_BEG""IN_`, a literal `$?`), so prompts and the echo are
        ignored. The command must not read stdin (it would eat what we type), must fit on
        one line, and must not end in `&`."""
        if "\n" in command or "\r" in command:
            raise ValueError("run() takes a single-line command")
        if len(command) > MAX_COMMAND_CHARS:
            raise ValueError(f"command longer than {MAX_COMMAND_CHARS} characters")
        nonce = os.urandom(6).hex()
        begin = re.compile(rf"__CA_BEGIN_{nonce}__\r?\n")
        end = re.compile(rf"__CA_END_{nonce}_(\d+)__")
        self.drain()
        self.sendline(f'echo __CA_BEG""IN_{nonce}__; {command}; echo "__CA_END_{nonce}_$?__"')
        deadline = time.monotonic() + timeout
        self.wait_for(begin, timeout=timeout)
        out = self.wait_for(end, timeout=max(0.1, deadline - time.monotonic()))
        assert self.match is not None
        code = int(self.match.group(1))
        out = out[: self.match.start()]  # match offsets are relative to `out`
        return code, out.replace("\r", "")
