"""Credentials out of URLs and free text, in one place.

``redact_url(url)`` replaces the password of a URL's userinfo with ``***``
(``rtsp://admin:secret@host/x`` -> ``rtsp://admin:***@host/x``); a userinfo without a colon
is a token and is replaced whole (``rtsp://token@host`` -> ``rtsp://***@host``). Query and
fragment parameters whose names look secret (password, passwd, pwd, token, key, secret,
auth, signature, credential; any case, anywhere in the name: ``api_key``,
``X-Amz-Signature``, ``accessToken``) get ``***`` values. Everything else is kept byte
for byte (nothing is decoded or re-encoded), so the result still names the host, port and
path an operator needs.

``redact_text(text)`` does the same for every URL found in free text (log messages,
FFmpeg errors that quote the URL, exception strings), and for scheme-less
``user:password@host``.

When a URL cannot be split cleanly, redaction hides more rather than less:

- a ``/``, ``?`` or ``#`` left unencoded in a password ends the authority early, so its
  host:port looks like ``admin:pa`` (a port that is not a number); when an ``@`` follows
  later, everything up to the last ``@`` is taken as the userinfo;
- a port that is not a number is replaced too (``rtsp://admin:secret`` with the host
  missing becomes ``rtsp://admin:***``).

The username is kept: it is needed to tell accounts apart and is not a secret by itself.

This module must import only the standard library: logging set-up, the control API and
the metrics all use it, in every process.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["MASK", "redact_text", "redact_url"]

#: What a secret is replaced with.
MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_NAME = re.compile(
    # "key" and "auth" only where they end a word, so keyframe= and author= stay readable.
    r"pass|pwd|token|secret|key(?![a-z])|auth(?!or)|signature|credential|^sig$|^session(_?id)?$",
    re.IGNORECASE,
)
# A URL in free text: a scheme, then characters that may appear in a URL, stopping before
# the next scheme (two URLs written without a space between them are two URLs).
_URL_IN_TEXT = r"[A-Za-z][A-Za-z0-9+.\-]*://(?:(?![A-Za-z][A-Za-z0-9+.\-]*://)[^\s\"<>`\\])*"
# ``user:password@host`` without a scheme, starting at a word boundary.
_BARE_IN_TEXT = (
    r"(?<![\w/:@%.+~\-])[^\s\"'<>`/:@()\[\]{},;=\\]+:[^\s\"'<>`/@\\]*@[\w\[][^\s\"'<>`\\]*"
)
_IN_TEXT = re.compile(f"(?P<url>{_URL_IN_TEXT})|(?P<bare>{_BARE_IN_TEXT})")
# Punctuation that ends a sentence or closes a quote rather than belonging to the URL.
_TRAILING = ".,;:!?'\")]}"


def _authority_end(rest: str) -> int:
    """Index where the authority of ``rest`` (the text after ``//``) ends."""
    for i, ch in enumerate(rest):
        if ch in "/?#":
            return i
    return len(rest)


def _bad_port(hostport: str) -> bool:
    """True when ``hostport`` has a port that is not a number (so it is something else)."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return False
        after = hostport[close + 1 :]
        return after not in ("", ":") and not (
            after.startswith(":") and after[1:].isascii() and after[1:].isdigit()
        )
    if ":" not in hostport:
        return False
    port = hostport.rsplit(":", 1)[1]
    return port != "" and not (port.isascii() and port.isdigit())


def _redact_userinfo(userinfo: str) -> str:
    if ":" not in userinfo:
        return MASK
    user, _, password = userinfo.partition(":")
    return f"{user}:{MASK}" if password else f"{user}:"


def _redact_params(params: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***`` (``&`` and ``;`` separate parameters)."""
    parts = re.split(r"([&;])", params)
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if eq and value and _SECRET_NAME.search(unquote_plus(name)):
            parts[i] = f"{name}={MASK}"
    return "".join(parts)


def _redact_tail(tail: str) -> str:
    """Path, query and fragment: secret-looking parameters of the query and fragment."""
    hash_at = tail.find("#")
    before, fragment = (tail, "") if hash_at < 0 else (tail[:hash_at], tail[hash_at:])
    q = before.find("?")
    if q >= 0:
        before = before[: q + 1] + _redact_params(before[q + 1 :])
    if "=" in fragment:
        fragment = "#" + _redact_params(fragment[1:])
    return before + fragment


def _redact_network(rest: str) -> str:
    """Redact ``rest``, the part of a URL after ``//``: userinfo, odd port, parameters."""
    end = _authority_end(rest)
    authority = rest[:end]
    at = authority.rfind("@")
    if at < 0 and "@" in rest[end:] and _bad_port(authority):
        # An unencoded '/', '?' or '#' in the password: the userinfo runs to the last '@'.
        at = rest.rfind("@")
        after = rest[at + 1 :]
        end2 = _authority_end(after)
        userinfo, hostport, tail = rest[:at], after[:end2], after[end2:]
    elif at >= 0:
        userinfo, hostport, tail = authority[:at], authority[at + 1 :], rest[end:]
    else:
        userinfo, hostport, tail = None, authority, rest[end:]
    if _bad_port(hostport):
        hostport = f"{hostport.rsplit(':', 1)[0]}:{MASK}"
    head = "" if userinfo is None else f"{_redact_userinfo(userinfo)}@"
    return f"{head}{hostport}{_redact_tail(tail)}"


def redact_url(url: str) -> str:
    """``url`` with its password, token and secret-looking parameters replaced by ``***``.

    Works on URLs with a scheme (``rtsp://admin:secret@host``), network-path references
    (``//admin:secret@host``) and scheme-less ``admin:secret@host/x``; any other string
    (a file path, ``sample:bikes``) only has its query parameters looked at.
    """
    m = _SCHEME.match(url)
    if m:
        return url[: m.end()] + _redact_network(url[m.end() :])
    if url.startswith("//"):
        return "//" + _redact_network(url[2:])
    if "@" in url[: _authority_end(url)]:
        return _redact_network(url)
    return _redact_tail(url)


def _redact_match(m: re.Match[str]) -> str:
    token = m.group(0)
    stripped = token.rstrip(_TRAILING)
    return redact_url(stripped) + token[len(stripped) :]


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "@" not in text and "=" not in text and "://" not in text:
        return text  # the common case of a log line: nothing that could carry a secret
    return _IN_TEXT.sub(_redact_match, text)
