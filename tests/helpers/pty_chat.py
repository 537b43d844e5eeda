#!/usr/bin/env python3
"""Drives `gemma4c chat` through a pseudo-terminal, as a person at a terminal would, for
tests/cli_chat.rs: the chat runs with its line editor, and Ctrl-C is the byte 0x03 typed
into the terminal (the terminal driver turns it into SIGINT for the chat's process group).

Usage: pty_chat.py MESSAGE GEMMA4C_BINARY ARGS...

1. waits for the prompt, types MESSAGE and Enter;
2. as soon as the reply starts to stream, types Ctrl-C;
3. waits for the prompt again, types Ctrl-C at the prompt (clears the line), types MESSAGE again
   and Enter, waits for the prompt after that whole reply;
4. types /exit and Enter.

Prints one JSON object: the child's exit code (or -signal), the text of the interrupted reply
and of the whole second reply (terminal CR LF turned back into LF, the echoed "^C" removed), and
the transcript.
Every wait is bounded; a timeout is reported in the JSON, not a hang.
"""
import json
import os
import pty
import select
import sys
import time

# rustyline clears the line (ESC [K) and writes the prompt: a reply's text cannot look like it.
PROMPT = b"\x1b[K> "
LIMIT_S = 60.0


def main():
    message, argv = sys.argv[1].encode(), sys.argv[2:]
    os.environ["TERM"] = "xterm"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out = bytearray()
    state = {"error": None}

    def read_until(pred):
        deadline = time.monotonic() + LIMIT_S
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {LIMIT_S} s; transcript so far: {bytes(out)!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    raise EOFError(f"the chat ended early; transcript: {bytes(out)!r}")
                if not chunk:
                    raise EOFError(f"the chat ended early; transcript: {bytes(out)!r}")
                out.extend(chunk)

    def prompts():
        return out.count(PROMPT)

    replies = []
    try:
        read_until(lambda: prompts() >= 1)
        for interrupt in [True, False]:
            n, before = prompts(), len(out)
            os.write(fd, message + b"\r")
            # The editor echoes the line and ends it with CR LF; the reply follows.
            def echoed():
                at = out.find(message, before)
                return -1 if at < 0 else out.find(b"\r\n", at + len(message))
            read_until(lambda: echoed() >= 0 and len(out) > echoed() + 2)
            start = echoed() + 2
            if interrupt:
                os.write(fd, b"\x03")
            read_until(lambda: prompts() > n)
            # The reply ends with a newline; the editor's escapes before its prompt follow.
            reply = bytes(out[start : out.rfind(b"\r\n", start, out.rfind(PROMPT))])
            # The terminal echoes a typed Ctrl-C as "^C" in the middle of the reply.
            replies.append(reply.replace(b"^C", b""))
            if interrupt:
                # Ctrl-C at the prompt clears the line; the chat goes on.
                m = prompts()
                os.write(fd, b"\x03")
                read_until(lambda: prompts() > m)
        os.write(fd, b"/exit\r")
    except (TimeoutError, EOFError) as e:
        state["error"] = str(e)
        os.kill(pid, 9)
    # Drain until the child closes the terminal.
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], LIMIT_S)
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out.extend(chunk)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)

    def text(b):
        return b.decode("utf-8", "replace").replace("\r\n", "\n")

    print(json.dumps({"exit": code, "error": state["error"], "replies": [text(r) for r in replies],
                      "transcript": text(bytes(out))}))


if __name__ == "__main__":
    main()
